//! alpaca_eval's annotator prompts for chat APIs: a template written in ChatML
//! (`<|im_start|>role\n…<|im_end|>`, e.g. the classification prompt of
//! `weighted_alpaca_eval_gpt4_turbo`), filled and turned into chat messages exactly as
//! alpaca_eval 0.6.6 does before it calls an OpenAI-compatible server:
//! 1. [`fill_template`] (`utils.make_prompts`): each distinct placeholder, in order of first
//!    appearance in the template, replaces its first occurrence in the text built so far;
//! 2. [`chatml_messages`] (`utils.prompt_to_chatml`) on the filled text: the text is
//!    stripped, split at every `<|im_start|>`; a part's first line is its role, the rest up
//!    to the first `<|im_end|>` (stripped) its content; `system name=… key=…` roles become
//!    `system` with those fields.
//!
//! Both steps run on the filled text, as alpaca_eval runs them: an output that contains
//! `<|im_end|>` or `<|im_start|>` cuts or splits its message there, and herd sends what
//! alpaca_eval would send.

use serde::{Deserialize, Serialize};

use super::prompt::find_placeholders;

/// The ChatML markers alpaca_eval splits on.
pub const START: &str = "<|im_start|>";
pub const END: &str = "<|im_end|>";

/// One message of an OpenAI chat request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRequestMessage {
    pub role: String,
    pub content: String,
    /// Set by a `system name=…` role line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Why a filled prompt is not ChatML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatmlError {
    #[error("the prompt does not start with {START} (after stripping whitespace)")]
    NoStart,
    #[error("the prompt does not end with {END} (after stripping whitespace)")]
    NoEnd,
    #[error("message {0} has no line break after its role")]
    NoRoleLine(usize),
    #[error("message {index}'s role line has {field:?}, which is not key=value")]
    BadRoleField { index: usize, field: String },
}

/// `template` with each placeholder (`{name}`) replaced as alpaca_eval's `make_prompts`
/// replaces it; `value(name)` gives the value (a placeholder without one is left as is).
pub fn fill_template<'a>(template: &str, value: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut order: Vec<String> = Vec::new();
    for name in find_placeholders(template) {
        if !order.contains(&name) {
            order.push(name);
        }
    }
    let mut prompt = template.to_string();
    for name in order {
        if let Some(v) = value(&name) {
            prompt = prompt.replacen(&format!("{{{name}}}"), v, 1);
        }
    }
    prompt
}

/// The chat messages alpaca_eval sends for a filled ChatML prompt.
pub fn chatml_messages(prompt: &str) -> Result<Vec<ChatRequestMessage>, ChatmlError> {
    let prompt = prompt.trim_matches(is_python_space);
    if !prompt.starts_with(START) {
        return Err(ChatmlError::NoStart);
    }
    if !prompt.ends_with(END) {
        return Err(ChatmlError::NoEnd);
    }
    let mut messages = Vec::new();
    for (index, part) in prompt.split(START).skip(1).enumerate() {
        let (role_line, rest) = part.split_once('\n').ok_or(ChatmlError::NoRoleLine(index))?;
        let role = role_line.trim_matches(is_python_space);
        let content = rest.split(END).next().unwrap_or("").trim_matches(is_python_space);
        let (role, name) = match role.strip_prefix("system") {
            Some(fields) if role != "system" => ("system", role_fields(index, fields)?),
            _ => (role, None),
        };
        messages.push(ChatRequestMessage {
            role: role.to_string(),
            content: content.to_string(),
            name,
        });
    }
    Ok(messages)
}

/// The `name` of a `system key=value …` role line (alpaca_eval allows other keys; herd
/// keeps `name`, the one OpenAI's API takes).
fn role_fields(index: usize, fields: &str) -> Result<Option<String>, ChatmlError> {
    let mut name = None;
    for field in fields.split(is_python_space).filter(|f| !f.is_empty()) {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| ChatmlError::BadRoleField { index, field: field.to_string() })?;
        if key == "name" {
            name = Some(value.to_string());
        }
    }
    Ok(name)
}

/// Python's `str.isspace`, which `str.strip()` strips.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_names_and_stripping() {
        let prompt = "\n<|im_start|>system\nBe brief.\n<|im_end|>\n<|im_start|>system name=example_user\n Hi \n<|im_end|>\n<|im_start|>user\n{x}<|im_end|>\n";
        let messages = chatml_messages(prompt).unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(
            (messages[0].role.as_str(), messages[0].content.as_str()),
            ("system", "Be brief.")
        );
        assert_eq!(messages[1].name.as_deref(), Some("example_user"));
        assert_eq!(messages[1].content, "Hi");
        assert_eq!(chatml_messages("no markers"), Err(ChatmlError::NoStart));
        assert_eq!(chatml_messages("<|im_start|>user\nx"), Err(ChatmlError::NoEnd));
    }

    #[test]
    fn placeholders_fill_their_first_occurrence_in_order_of_appearance() {
        let filled = fill_template("Q: {instruction}\nA: {output_1}", |name| match name {
            "instruction" => Some("quote {output_1}"),
            "output_1" => Some("O"),
            _ => None,
        });
        // The instruction goes in first; the first {output_1} is then the one it brought.
        assert_eq!(filled, "Q: quote O\nA: {output_1}");
    }
}
