//! A model's chat template (Jinja), rendered with minijinja the way Hugging Face's
//! `apply_chat_template` does.

use std::collections::BTreeMap;

use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};

use crate::error::ChatTemplateError;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// A model's chat template, compiled once.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const TEMPLATE_NAME: &str = "chat";

impl ChatTemplate {
    /// Compiles `source` and renders it once with a single user message, so a template that
    /// cannot render fails here rather than on the first job.
    pub fn new(
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        // As transformers' ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build();
        env.set_syntax(syntax.map_err(|e| ChatTemplateError::Compile(describe(&e)))?);
        env.set_unknown_method_callback(python_string_and_dict_methods);
        env.add_function("raise_exception", |message: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_function("strftime_now", |format: String| -> Result<Value, Error> {
            Ok(Value::from(strftime_now(&format)))
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| ChatTemplateError::Compile(describe(&e)))?;
        let template = Self {
            env,
            bos_token: bos_token.unwrap_or_default().into(),
            eos_token: eos_token.unwrap_or_default().into(),
        };
        template.render(&[ChatMessage::new("user", "Hello")], true).map_err(|e| match e {
            ChatTemplateError::Render(reason) => ChatTemplateError::TestRender(reason),
            other => other,
        })?;
        Ok(template)
    }

    /// The conversation in the model's format; with `add_generation_prompt` it ends where the
    /// assistant's answer starts.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                let map: BTreeMap<String, Value> = [
                    ("role".to_string(), Value::from(m.role.as_str())),
                    ("content".to_string(), Value::from(m.content.as_str())),
                ]
                .into();
                Value::from_object(map)
            })
            .collect();
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatTemplateError::Compile(describe(&e)))?;
        template.render(ctx).map_err(|e| ChatTemplateError::Render(describe(&e)))
    }
}

fn describe(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The Python `str` and `dict` methods that chat templates call (`.strip()`, `.items()`…),
/// which Jinja2 gets from Python and minijinja does not have.
fn python_string_and_dict_methods(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    let arg = |i: usize| args.get(i).and_then(|v| v.as_str()).map(str::to_string);
    if let Some(s) = value.as_str() {
        let out = match method {
            "strip" => Value::from(match arg(0) {
                Some(c) => s.trim_matches(|ch| c.contains(ch)).to_string(),
                None => s.trim().to_string(),
            }),
            "lstrip" => Value::from(match arg(0) {
                Some(c) => s.trim_start_matches(|ch| c.contains(ch)).to_string(),
                None => s.trim_start().to_string(),
            }),
            "rstrip" => Value::from(match arg(0) {
                Some(c) => s.trim_end_matches(|ch| c.contains(ch)).to_string(),
                None => s.trim_end().to_string(),
            }),
            "upper" => Value::from(s.to_uppercase()),
            "lower" => Value::from(s.to_lowercase()),
            "title" => return state.apply_filter("title", std::slice::from_ref(value)),
            "capitalize" => return state.apply_filter("capitalize", std::slice::from_ref(value)),
            "startswith" => Value::from(arg(0).is_some_and(|p| s.starts_with(&p))),
            "endswith" => Value::from(arg(0).is_some_and(|p| s.ends_with(&p))),
            "replace" => match (arg(0), arg(1)) {
                (Some(from), Some(to)) => Value::from(s.replace(&from, &to)),
                _ => return Err(Error::new(ErrorKind::MissingArgument, "replace(old, new)")),
            },
            "split" => match arg(0) {
                Some(sep) => s.split(sep.as_str()).map(Value::from).collect(),
                None => s.split_whitespace().map(Value::from).collect(),
            },
            "count" => Value::from(arg(0).map_or(0, |p| {
                if p.is_empty() {
                    0
                } else {
                    s.matches(p.as_str()).count()
                }
            })),
            "find" => Value::from(
                arg(0).and_then(|p| s.find(&p)).map_or(-1, |i| s[..i].chars().count() as i64),
            ),
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        };
        return Ok(out);
    }
    if value.kind() == ValueKind::Map {
        return match method {
            "items" => state.apply_filter("items", std::slice::from_ref(value)),
            "keys" => Ok(value.try_iter()?.collect()),
            "values" => {
                Ok(value.try_iter()?.map(|k| value.get_item(&k).unwrap_or_default()).collect())
            }
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                let found = value.get_item(&key).ok().filter(|v| !v.is_undefined());
                Ok(found.unwrap_or_else(|| args.get(1).cloned().unwrap_or(Value::from(()))))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        };
    }
    Err(Error::from(ErrorKind::UnknownMethod))
}

/// Python's `strftime` for the directives chat templates use, on today's UTC date.
fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs, format)
}

fn format_utc(secs: u64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut it = format.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA3_LIKE: &str = "{{- bos_token }}{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}{%- else %}{%- set system_message = \"Today Date: \" + strftime_now(\"%d %b %Y\") %}{%- endif %}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- system_message }}{{- \"<|eot_id|>\" }}\n{%- for message in messages %}\n    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n";

    #[test]
    fn llama3_style_template_renders_system_and_user_turns() {
        let t =
            ChatTemplate::new(LLAMA3_LIKE, Some("<|begin_of_text|>"), Some("<|eot_id|>")).unwrap();
        let text = t
            .render(
                &[ChatMessage::new("system", " Be brief. "), ChatMessage::new("user", "Hi\n")],
                true,
            )
            .unwrap();
        assert_eq!(
            text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let no_system = t.render(&[ChatMessage::new("user", "Hi")], false).unwrap();
        assert!(no_system.contains("Today Date: "), "{no_system}");
        assert!(!no_system.ends_with("assistant<|end_header_id|>\n\n"));
    }

    #[test]
    fn python_methods_work_in_templates() {
        let src = "{% for m in messages %}{{ m.content.strip().upper() }}|{{ m['role'].startswith('us') }}|{{ m.get('name', 'anon') }}{% endfor %}";
        let t = ChatTemplate::new(src, None, None).unwrap();
        assert_eq!(t.render(&[ChatMessage::new("user", "  hi ")], true).unwrap(), "HI|True|anon");
    }

    #[test]
    fn template_that_raises_is_rejected_when_loaded() {
        let src = "{% if messages[0]['role'] == 'user' %}{{ raise_exception('Conversation roles must alternate system/user') }}{% endif %}";
        let err = ChatTemplate::new(src, None, None).unwrap_err();
        assert!(matches!(err, ChatTemplateError::TestRender(_)), "{err:?}");
        assert!(err.to_string().contains("Conversation roles must alternate"), "{err}");
    }

    #[test]
    fn template_with_a_syntax_error_is_rejected() {
        let err =
            ChatTemplate::new("{% for m in messages %}{{ m.content }}", None, None).unwrap_err();
        assert!(matches!(err, ChatTemplateError::Compile(_)), "{err:?}");
    }

    #[test]
    fn dates_format_like_python_strftime() {
        // 2024-07-23 13:05:09 UTC
        assert_eq!(format_utc(1_721_739_909, "%d %b %Y %H:%M:%S"), "23 Jul 2024 13:05:09");
        assert_eq!(format_utc(0, "%Y-%m-%d %B"), "1970-01-01 January");
    }
}
