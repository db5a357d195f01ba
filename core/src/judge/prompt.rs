//! The judge's ranking prompt: alpaca_eval's `alpaca_eval_fn` template (the course's judge
//! config, written in Llama-3 chat headers), filled the way alpaca_eval fills templates, and
//! split into chat messages so that an engine can render them in the judge model's own chat
//! format.
//!
//! alpaca_eval (`utils.make_prompts`) finds the placeholders with the regex `{([^ \s]+?)}`
//! and, for each distinct one in order of first appearance, replaces only its *first*
//! occurrence in the prompt built so far with the value, verbatim (`str.replace(…, 1)`, not
//! `str.format`): braces in outputs need no escaping, and a value that itself contains a
//! later placeholder (an instruction quoting `{output_1}`) receives that later value.

use std::sync::OnceLock;

/// The annotator prompt of alpaca_eval's Llama-3 judge config, as shipped in
/// `data/prompts/alpaca_eval_fn.txt` (alpaca_eval reads the file with `f.read()`, so the
/// final newline is part of the prompt).
pub const ALPACA_EVAL_FN_TEMPLATE: &str = include_str!("../../../data/prompts/alpaca_eval_fn.txt");

/// The placeholders the ranking template must have, once each, in alpaca_eval's names.
pub const PLACEHOLDERS: [&str; 3] = ["instruction", "output_1", "output_2"];

/// Appended to an output that was cut to fit the judge's context.
pub const TRUNCATION_MARKER: &str = " [… truncated by herd]";

const BEGIN_OF_TEXT: &str = "<|begin_of_text|>";
const START_HEADER: &str = "<|start_header_id|>";
const END_HEADER: &str = "<|end_header_id|>";
const END_OF_TURN: &str = "<|eot_id|>";
/// Llama-3 separates a header from its message with a blank line.
const HEADER_SEPARATOR: &str = "\n\n";

/// What is wrong with a judge template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The Llama-3 header structure is broken at this byte.
    #[error("judge template is not Llama-3 chat text at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    /// A required placeholder is missing or repeated (alpaca_eval needs each exactly once).
    #[error("judge template has placeholder {{{name}}} {count} times; it needs it once")]
    Placeholder { name: String, count: usize },
    /// A placeholder herd cannot fill (alpaca_eval would look up a missing column).
    #[error("judge template has placeholder {{{name}}}, which is not one of {PLACEHOLDERS:?}")]
    UnknownPlaceholder { name: String },
}

/// One chat message of the judge prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system` or `user` (whatever the template's headers name).
    pub role: String,
    pub content: String,
}

/// A Llama-3 chat template with alpaca_eval placeholders, parsed once.
///
/// Kept as the literal text around each message's content, so that filling it and putting
/// the pieces back gives exactly the string alpaca_eval sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeTemplate {
    /// `glue[i]` precedes `messages[i].content`; the last one follows the last message.
    glue: Vec<String>,
    messages: Vec<ChatMessage>,
}

impl JudgeTemplate {
    /// The embedded `alpaca_eval_fn` template.
    pub fn alpaca_eval_fn() -> &'static JudgeTemplate {
        static TEMPLATE: OnceLock<JudgeTemplate> = OnceLock::new();
        TEMPLATE.get_or_init(|| {
            JudgeTemplate::parse(ALPACA_EVAL_FN_TEMPLATE)
                .expect("the embedded judge template is valid")
        })
    }

    /// Parses `[<|begin_of_text|>] (<|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>)+`
    /// followed by the assistant header that opens the judge's answer.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let malformed = |offset: usize, reason| TemplateError::Malformed { offset, reason };
        let mut glue = Vec::new();
        let mut messages = Vec::new();
        let mut glue_start = 0;
        let mut pos = if text.starts_with(BEGIN_OF_TEXT) { BEGIN_OF_TEXT.len() } else { 0 };
        loop {
            if !text[pos..].starts_with(START_HEADER) {
                return Err(malformed(pos, "expected <|start_header_id|>"));
            }
            let role_start = pos + START_HEADER.len();
            let role_end = role_start
                + text[role_start..]
                    .find(END_HEADER)
                    .ok_or(malformed(role_start, "header is never closed"))?;
            let role = &text[role_start..role_end];
            pos = role_end + END_HEADER.len();
            if role == "assistant" {
                if !text[pos..].trim().is_empty() {
                    return Err(malformed(pos, "text after the assistant header"));
                }
                break;
            }
            if !text[pos..].starts_with(HEADER_SEPARATOR) {
                return Err(malformed(pos, "expected a blank line after the header"));
            }
            let content_start = pos + HEADER_SEPARATOR.len();
            let content_end = content_start
                + text[content_start..]
                    .find(END_OF_TURN)
                    .ok_or(malformed(content_start, "message never ends"))?;
            glue.push(text[glue_start..content_start].to_string());
            messages.push(ChatMessage {
                role: role.to_string(),
                content: text[content_start..content_end].to_string(),
            });
            glue_start = content_end;
            pos = content_end + END_OF_TURN.len();
        }
        glue.push(text[glue_start..].to_string());
        if messages.is_empty() {
            return Err(malformed(0, "no message before the assistant header"));
        }
        let template = Self { glue, messages };
        template.check_placeholders()?;
        Ok(template)
    }

    fn check_placeholders(&self) -> Result<(), TemplateError> {
        let found: Vec<String> =
            self.messages.iter().flat_map(|m| find_placeholders(&m.content)).collect();
        if let Some(unknown) = found.iter().find(|name| !PLACEHOLDERS.contains(&name.as_str())) {
            return Err(TemplateError::UnknownPlaceholder { name: unknown.clone() });
        }
        for name in PLACEHOLDERS {
            let count = found.iter().filter(|f| *f == name).count();
            if count != 1 {
                return Err(TemplateError::Placeholder { name: name.to_string(), count });
            }
        }
        Ok(())
    }

    /// The template's messages with placeholders filled, as alpaca_eval fills them.
    /// `output_1` and `output_2` are in the order the judge sees them (after any swap).
    pub fn fill(&self, instruction: &str, output_1: &str, output_2: &str) -> JudgePrompt {
        let mut contents: Vec<String> = self.messages.iter().map(|m| m.content.clone()).collect();
        // Placeholders in order of first appearance; each replaces its first occurrence in
        // the prompt built so far. The headers between messages contain no placeholder, so
        // "first occurrence in the whole prompt" is the first in the first message having one.
        let mut order: Vec<String> = Vec::new();
        for name in self.messages.iter().flat_map(|m| find_placeholders(&m.content)) {
            if !order.contains(&name) {
                order.push(name);
            }
        }
        for name in order {
            let value = match name.as_str() {
                "instruction" => instruction,
                "output_1" => output_1,
                _ => output_2,
            };
            let needle = format!("{{{name}}}");
            if let Some(content) = contents.iter_mut().find(|c| c.contains(&needle)) {
                *content = content.replacen(&needle, value, 1);
            }
        }
        JudgePrompt {
            template: self.clone(),
            messages: self
                .messages
                .iter()
                .zip(contents)
                .map(|(m, content)| ChatMessage { role: m.role.clone(), content })
                .collect(),
        }
    }
}

/// `re.findall(r"{([^ \s]+?)}", text)`: the shortest non-blank name between braces,
/// scanning left to right without overlaps.
pub(crate) fn find_placeholders(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name_len = after.find(|c: char| c == '}' || is_python_space(c));
        match name_len {
            Some(len) if len > 0 && after[len..].starts_with('}') => {
                found.push(after[..len].to_string());
                rest = &after[len + 1..];
            }
            _ => rest = after,
        }
    }
    found
}

/// Python's `\s` in a str pattern (`str.isspace`).
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// The filled ranking prompt for one pair of outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgePrompt {
    template: JudgeTemplate,
    messages: Vec<ChatMessage>,
}

impl JudgePrompt {
    /// alpaca_eval's prompt from the embedded template; outputs in the order shown.
    pub fn new(instruction: &str, output_1: &str, output_2: &str) -> Self {
        JudgeTemplate::alpaca_eval_fn().fill(instruction, output_1, output_2)
    }

    /// The system and user messages, to be rendered with the judge model's chat template
    /// (with its generation prompt); the judge's answer follows.
    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// The system message (empty if the template has none).
    pub fn system(&self) -> &str {
        self.messages.iter().find(|m| m.role == "system").map_or("", |m| &m.content)
    }

    /// The user message: the ranking request with the instruction and both outputs.
    pub fn user(&self) -> &str {
        self.messages.iter().find(|m| m.role == "user").map_or("", |m| &m.content)
    }

    /// Exactly the string alpaca_eval sends with this template: Llama-3 headers verbatim,
    /// starting with `<|begin_of_text|>` and ending with the assistant header and the file's
    /// final newline. Tokenize it without adding another BOS token.
    pub fn llama3_verbatim(&self) -> String {
        let mut out = String::new();
        for (glue, message) in self.template.glue.iter().zip(&self.messages) {
            out.push_str(glue);
            out.push_str(&message.content);
        }
        out.push_str(self.template.glue.last().map_or("", String::as_str));
        out
    }
}

/// The judge model's tokenizer and chat template, as the prompt fitting needs them; the
/// engine implements it, so core stays tokenizer-free.
pub trait JudgeTokenizer {
    /// Tokens of `text` on its own.
    fn count_tokens(&self, text: &str) -> usize;
    /// The first `max_tokens` tokens of `text`, decoded back to text.
    fn truncate_to_tokens(&self, text: &str, max_tokens: usize) -> String;
    /// Tokens of the prompt rendered with the judge's chat template, generation prompt
    /// included (in logprob mode without the answer prefix).
    fn count_prompt(&self, prompt: &JudgePrompt) -> usize;
}

/// The two outputs after fitting them into a token budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FittedOutputs {
    pub output_1: String,
    pub output_2: String,
    pub truncated_1: bool,
    pub truncated_2: bool,
}

impl FittedOutputs {
    pub fn any_truncated(&self) -> bool {
        self.truncated_1 || self.truncated_2
    }
}

/// Fits two outputs into `budget` tokens together, keeping as much of each as possible:
/// the shorter keeps its length when it needs no more than half, the longer gets the rest;
/// otherwise each gets half. A cut output ends with [`TRUNCATION_MARKER`], counted in its
/// share.
///
/// Token counts need not be additive: each cut is re-counted and shortened until it fits.
/// A share smaller than the marker gives the marker alone.
pub fn fit_outputs(
    output_1: &str,
    output_2: &str,
    budget: usize,
    tokenizer: &dyn JudgeTokenizer,
) -> FittedOutputs {
    let (n1, n2) = (tokenizer.count_tokens(output_1), tokenizer.count_tokens(output_2));
    if n1 + n2 <= budget {
        return FittedOutputs {
            output_1: output_1.to_string(),
            output_2: output_2.to_string(),
            truncated_1: false,
            truncated_2: false,
        };
    }
    let (share_1, share_2) = shares(n1, n2, budget);
    let fit = |text: &str, tokens: usize, share: usize| -> (String, bool) {
        if tokens <= share {
            return (text.to_string(), false);
        }
        (truncate_with_marker(text, share, tokenizer), true)
    };
    let (output_1, truncated_1) = fit(output_1, n1, share_1);
    let (output_2, truncated_2) = fit(output_2, n2, share_2);
    FittedOutputs { output_1, output_2, truncated_1, truncated_2 }
}

/// Each output's share of `budget` (water-filling: a short output keeps its length). The
/// odd token goes to the longer output, so the split does not depend on the order shown.
fn shares(n1: usize, n2: usize, budget: usize) -> (usize, usize) {
    let half = budget / 2;
    if n1 <= half {
        (n1, budget - n1)
    } else if n2 <= half {
        (budget - n2, n2)
    } else if n1 >= n2 {
        (budget - half, half)
    } else {
        (half, budget - half)
    }
}

fn truncate_with_marker(text: &str, share: usize, tokenizer: &dyn JudgeTokenizer) -> String {
    let mut keep = share.saturating_sub(tokenizer.count_tokens(TRUNCATION_MARKER));
    for _ in 0..8 {
        if keep == 0 {
            break;
        }
        let candidate = format!("{}{TRUNCATION_MARKER}", tokenizer.truncate_to_tokens(text, keep));
        let tokens = tokenizer.count_tokens(&candidate);
        if tokens <= share {
            return candidate;
        }
        keep = keep.saturating_sub(tokens - share);
    }
    TRUNCATION_MARKER.trim_start().to_string()
}

/// A prompt that fits the judge's context, and what had to be cut for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FittedPrompt {
    pub prompt: JudgePrompt,
    pub truncated_1: bool,
    pub truncated_2: bool,
    /// `count_prompt(&prompt)`: more than the limit only when the prompt cannot fit even
    /// with both outputs cut to their markers (an instruction longer than the context).
    pub prompt_tokens: usize,
}

/// Fills `template`, cutting the outputs (see [`fit_outputs`]) until the prompt rendered in
/// the judge's format takes at most `max_prompt_tokens` (the judge's context minus the
/// tokens its answer needs).
pub fn fit_prompt(
    template: &JudgeTemplate,
    instruction: &str,
    (output_1, output_2): (&str, &str),
    max_prompt_tokens: usize,
    tokenizer: &dyn JudgeTokenizer,
) -> FittedPrompt {
    let whole = template.fill(instruction, output_1, output_2);
    let whole_tokens = tokenizer.count_prompt(&whole);
    if whole_tokens <= max_prompt_tokens {
        return FittedPrompt {
            prompt: whole,
            truncated_1: false,
            truncated_2: false,
            prompt_tokens: whole_tokens,
        };
    }
    let overhead = tokenizer.count_prompt(&template.fill(instruction, "", ""));
    let mut budget = max_prompt_tokens.saturating_sub(overhead);
    let mut last = None;
    for _ in 0..4 {
        let fitted = fit_outputs(output_1, output_2, budget, tokenizer);
        let prompt = template.fill(instruction, &fitted.output_1, &fitted.output_2);
        let tokens = tokenizer.count_prompt(&prompt);
        let done = tokens <= max_prompt_tokens || budget == 0;
        last = Some(FittedPrompt {
            prompt,
            truncated_1: fitted.truncated_1,
            truncated_2: fitted.truncated_2,
            prompt_tokens: tokens,
        });
        if done {
            break;
        }
        budget = budget.saturating_sub((tokens - max_prompt_tokens).max(1));
    }
    last.expect("the loop runs at least once")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A whitespace tokenizer: one token per word (plus, when `lumpy`, one per ten words, as
    /// if merges at the joins made counts non-additive); prompts are counted verbatim.
    pub(crate) struct Words {
        pub lumpy: bool,
    }

    impl JudgeTokenizer for Words {
        fn count_tokens(&self, text: &str) -> usize {
            let n = words(text);
            if self.lumpy {
                n + n / 10
            } else {
                n
            }
        }
        fn truncate_to_tokens(&self, text: &str, max_tokens: usize) -> String {
            text.split_whitespace().take(max_tokens).collect::<Vec<_>>().join(" ")
        }
        fn count_prompt(&self, prompt: &JudgePrompt) -> usize {
            self.count_tokens(&prompt.llama3_verbatim())
        }
    }

    const WORDS: Words = Words { lumpy: false };

    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    fn numbered(prefix: &str, n: usize) -> String {
        (0..n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn the_embedded_template_splits_into_system_and_user_messages() {
        let template = JudgeTemplate::alpaca_eval_fn();
        let prompt = template.fill("{instruction}", "{output_1}", "{output_2}");
        let roles: Vec<&str> = prompt.messages().iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user"]);
        assert_eq!(
            prompt.system(),
            "You are a helpful assistant that ranks models by the quality of their answers."
        );
        assert!(prompt.user().starts_with("I want you to create a leaderboard"));
        assert!(prompt
            .user()
            .ends_with("Please provide the ranking that the majority of humans would give."));
        assert!(!prompt.user().contains("<|"));
        // Filling the placeholders with themselves gives the file back, byte for byte.
        assert_eq!(prompt.llama3_verbatim(), ALPACA_EVAL_FN_TEMPLATE);
    }

    #[test]
    fn values_are_inserted_verbatim_braces_and_all() {
        let prompt = JudgePrompt::new("Print {x}", "def f(): return {'a': 1}", "{}");
        assert!(prompt.user().contains("\"instruction\": \"\"\"Print {x}\"\"\""));
        assert!(prompt.user().contains("\"answer\": \"\"\"def f(): return {'a': 1}\"\"\""));
        assert!(prompt.user().contains("\"answer\": \"\"\"{}\"\"\""));
    }

    #[test]
    fn a_placeholder_inside_an_earlier_value_is_filled_first_as_in_alpaca_eval() {
        // alpaca_eval replaces the first "{output_1}" of the prompt built so far: the one the
        // instruction brought in, leaving the template's own placeholder in place.
        let prompt = JudgePrompt::new("Repeat {output_1}", "ONE", "TWO");
        assert!(prompt.user().contains("\"instruction\": \"\"\"Repeat ONE\"\"\""));
        assert!(prompt.user().contains("\"answer\": \"\"\"{output_1}\"\"\""));
        assert!(prompt.user().contains("\"answer\": \"\"\"TWO\"\"\""));
    }

    /// Prompts built by alpaca_eval 0.6.6's own `utils.make_prompts` with this template
    /// (scripts/judge_prompt_reference.py), compared byte for byte.
    #[test]
    fn verbatim_prompts_equal_alpaca_evals_make_prompts() {
        let fixture = include_str!("../../tests/fixtures/judge_prompts.jsonl");
        let mut checked = 0;
        for line in fixture.lines().filter(|l| !l.trim().is_empty()) {
            let case: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let field = |name: &str| case[name].as_str().expect(name).to_string();
            let prompt =
                JudgePrompt::new(&field("instruction"), &field("output_1"), &field("output_2"));
            assert_eq!(prompt.llama3_verbatim(), field("prompt"), "case {checked}");
            checked += 1;
        }
        assert!(checked >= 5);
    }

    #[test]
    fn malformed_templates_are_rejected_with_the_reason() {
        assert!(matches!(JudgeTemplate::parse("no headers"), Err(TemplateError::Malformed { .. })));
        let missing = ALPACA_EVAL_FN_TEMPLATE.replace("{output_2}", "");
        assert_eq!(
            JudgeTemplate::parse(&missing),
            Err(TemplateError::Placeholder { name: "output_2".into(), count: 0 })
        );
        let unknown = ALPACA_EVAL_FN_TEMPLATE.replace("{output_2}", "{output_2} {score}");
        assert_eq!(
            JudgeTemplate::parse(&unknown),
            Err(TemplateError::UnknownPlaceholder { name: "score".into() })
        );
    }

    #[test]
    fn outputs_that_fit_are_left_alone() {
        let fitted = fit_outputs("a b c", "d e", 5, &WORDS);
        assert_eq!((fitted.output_1.as_str(), fitted.output_2.as_str()), ("a b c", "d e"));
        assert!(!fitted.any_truncated());
    }

    #[test]
    fn only_the_longer_output_is_cut_when_the_shorter_needs_less_than_half() {
        let long = numbered("w", 100);
        let fitted = fit_outputs("short answer", &long, 30, &WORDS);
        assert_eq!(fitted.output_1, "short answer");
        assert!(!fitted.truncated_1 && fitted.truncated_2);
        assert!(fitted.output_2.ends_with(TRUNCATION_MARKER));
        assert!(fitted.output_2.starts_with("w0 w1 w2"));
        assert_eq!(words(&fitted.output_2), 28);
    }

    #[test]
    fn both_outputs_are_cut_to_half_when_both_are_long() {
        let (a, b) = (numbered("a", 80), numbered("b", 50));
        let fitted = fit_outputs(&a, &b, 41, &WORDS);
        assert!(fitted.truncated_1 && fitted.truncated_2);
        // The odd token goes to the longer output.
        assert_eq!((words(&fitted.output_1), words(&fitted.output_2)), (21, 20));
        // The split does not depend on which output is shown first.
        let swapped = fit_outputs(&b, &a, 41, &WORDS);
        assert_eq!((swapped.output_1, swapped.output_2), (fitted.output_2, fitted.output_1));
    }

    #[test]
    fn a_non_additive_tokenizer_is_recounted_until_the_cut_fits() {
        let lumpy = Words { lumpy: true };
        let fitted = fit_outputs(&numbered("x", 200), "", 50, &lumpy);
        assert!(fitted.truncated_1);
        let tokens = lumpy.count_tokens(&fitted.output_1);
        assert!((45..=50).contains(&tokens), "{tokens}");
    }

    #[test]
    fn fit_prompt_cuts_outputs_until_the_rendered_prompt_fits() {
        let template = JudgeTemplate::alpaca_eval_fn();
        let overhead = WORDS.count_prompt(&template.fill("What is up?", "", ""));
        let (a, b) = (numbered("a", 500), numbered("b", 20));
        let limit = overhead + 100;
        let fitted = fit_prompt(template, "What is up?", (&a, &b), limit, &WORDS);
        assert!(fitted.truncated_1 && !fitted.truncated_2);
        assert!(fitted.prompt_tokens <= limit);
        assert_eq!(fitted.prompt_tokens, WORDS.count_prompt(&fitted.prompt));
        assert!(fitted.prompt.user().contains(TRUNCATION_MARKER));

        let roomy = fit_prompt(template, "What is up?", (&a, &b), 10_000, &WORDS);
        assert!(!roomy.truncated_1 && !roomy.truncated_2);
        assert_eq!(roomy.prompt, JudgePrompt::new("What is up?", &a, &b));
    }
}
