//! The OpenAI request bodies herd serves, checked field by field into engine requests, and
//! the response bodies built from engine outputs.

use herd_engine::{ChatMessage, FinishReason, GenerationOutput, Sampling, TokenLogprob};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// Text, or several texts where the API allows one only with `n` = 1.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// A prompt: text or token ids (one of either).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling and stopping fields both endpoints share.
#[derive(Debug, Default, Deserialize)]
pub struct CommonFields {
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<OneOrMany<String>>,
    pub n: Option<usize>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<Map<String, Value>>,
}

/// `POST /v1/completions` (besides [`CommonFields`], read from the same body: serde's
/// `flatten` would lose the path of a bad field)
#[derive(Debug, Deserialize)]
pub struct CompletionBody {
    pub prompt: PromptInput,
    /// The number of most likely tokens to list per position (0: the chosen token's only).
    pub logprobs: Option<usize>,
    #[serde(default)]
    pub echo: bool,
    pub best_of: Option<usize>,
    pub suffix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct MessageIn {
    pub role: String,
    pub content: Option<MessageContent>,
}

/// `POST /v1/chat/completions` (besides [`CommonFields`])
#[derive(Debug, Deserialize)]
pub struct ChatBody {
    pub messages: Vec<MessageIn>,
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<usize>,
    pub tools: Option<Vec<Value>>,
    /// vLLM's extension: the last message is an assistant turn to continue, not close (its
    /// text is the start of the answer). Needs `add_generation_prompt: false`.
    #[serde(default)]
    pub continue_final_message: bool,
    /// vLLM's extension (default true): end the prompt with the assistant turn's header.
    pub add_generation_prompt: Option<bool>,
}

/// How the chat messages become the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatPrompt {
    /// The messages, then the assistant turn's header (OpenAI's behaviour).
    GenerationPrompt,
    /// The messages with the last (an assistant turn) left open: the answer continues it.
    ContinueFinal,
}

/// What a request asks of the engine, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    pub max_tokens: Option<usize>,
    pub sampling: Sampling,
    pub stop: Vec<String>,
    pub top_logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Most alternatives listed per position (OpenAI's limit for chat).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// OpenAI's limit on stop strings.
const MAX_STOPS: usize = 4;

impl CommonFields {
    /// The checked sampling and stopping settings; `default_temperature` is the API's (1).
    fn asked(self, top_logprobs: Option<usize>) -> Result<Asked, ApiError> {
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::invalid(
                "n",
                format!("n = {n}: herd serve returns one choice per request (n = 1)"),
            ));
        }
        for (name, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(ApiError::invalid(name, format!("{name} is not supported (only 0)")));
            }
        }
        if self.logit_bias.as_ref().is_some_and(|bias| !bias.is_empty()) {
            return Err(ApiError::invalid("logit_bias", "logit_bias is not supported".into()));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature {temperature} is not in [0, 2]"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid("top_p", format!("top_p {top_p} is not in (0, 1]")));
        }
        let stop = self.stop.map(OneOrMany::into_vec).unwrap_or_default();
        if stop.len() > MAX_STOPS {
            return Err(ApiError::invalid(
                "stop",
                format!("{} stop strings; at most {MAX_STOPS}", stop.len()),
            ));
        }
        if self.max_tokens == Some(0) {
            return Err(ApiError::invalid("max_tokens", "max_tokens must be at least 1".into()));
        }
        Ok(Asked {
            max_tokens: self.max_tokens,
            sampling: Sampling { temperature, top_p, seed: self.seed.unwrap_or(0) },
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            top_logprobs,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

/// The prompt of a completion request.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionPrompt {
    Text(String),
    Tokens(Vec<u32>),
}

impl CompletionBody {
    pub fn into_parts(
        self,
        common: CommonFields,
    ) -> Result<(Option<String>, CompletionPrompt, Asked), ApiError> {
        if self.echo {
            return Err(ApiError::invalid("echo", "echo is not supported".into()));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(ApiError::invalid("best_of", "best_of is not supported (only 1)".into()));
        }
        if self.suffix.is_some() {
            return Err(ApiError::invalid("suffix", "suffix is not supported".into()));
        }
        let prompt = match self.prompt {
            PromptInput::Text(text) => CompletionPrompt::Text(text),
            PromptInput::Tokens(tokens) => CompletionPrompt::Tokens(tokens),
            PromptInput::Texts(mut texts) if texts.len() == 1 => {
                CompletionPrompt::Text(texts.remove(0))
            }
            PromptInput::TokenLists(mut lists) if lists.len() == 1 => {
                CompletionPrompt::Tokens(lists.remove(0))
            }
            _ => {
                return Err(ApiError::invalid(
                    "prompt",
                    "one prompt per request (a list of several is not supported)".into(),
                ))
            }
        };
        if matches!(&prompt, CompletionPrompt::Text(t) if t.is_empty())
            || matches!(&prompt, CompletionPrompt::Tokens(t) if t.is_empty())
        {
            return Err(ApiError::invalid("prompt", "the prompt is empty".into()));
        }
        if let Some(k) = self.logprobs.filter(|&k| k > MAX_TOP_LOGPROBS) {
            return Err(ApiError::invalid(
                "logprobs",
                format!("logprobs {k}: at most {MAX_TOP_LOGPROBS}"),
            ));
        }
        let model = common.model.clone();
        let asked = common.asked(self.logprobs)?;
        Ok((model, prompt, asked))
    }
}

impl ChatBody {
    /// How the messages are rendered, checked against the messages.
    pub fn chat_prompt(&self) -> Result<ChatPrompt, ApiError> {
        match (self.continue_final_message, self.add_generation_prompt.unwrap_or(true)) {
            (false, true) => Ok(ChatPrompt::GenerationPrompt),
            (true, false) => match self.messages.last() {
                Some(last) if last.role == "assistant" => Ok(ChatPrompt::ContinueFinal),
                _ => Err(ApiError::invalid(
                    "continue_final_message",
                    "continue_final_message needs an assistant message last".into(),
                )),
            },
            (true, true) => Err(ApiError::invalid(
                "add_generation_prompt",
                "continue_final_message needs add_generation_prompt: false".into(),
            )),
            (false, false) => Err(ApiError::invalid(
                "add_generation_prompt",
                "add_generation_prompt: false is supported only with continue_final_message: true"
                    .into(),
            )),
        }
    }

    pub fn into_parts(
        self,
        mut common: CommonFields,
    ) -> Result<(Option<String>, Vec<ChatMessage>, Asked), ApiError> {
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::invalid("tools", "tool calls are not supported".into()));
        }
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages", "no messages".into()));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, message) in self.messages.into_iter().enumerate() {
            if !matches!(message.role.as_str(), "system" | "developer" | "user" | "assistant") {
                let reason = format!(
                    "role {:?} is not one of system, developer, user, assistant",
                    message.role
                );
                return Err(ApiError::invalid(&format!("messages[{i}].role"), reason));
            }
            let content = match message.content {
                None => String::new(),
                Some(MessageContent::Text(text)) => text,
                Some(MessageContent::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.into_iter().enumerate() {
                        match (part.kind.as_str(), part.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                let field = format!("messages[{i}].content[{j}]");
                                return Err(ApiError::invalid(
                                    &field,
                                    format!(
                                        "content of type {kind:?} is not supported (text only)"
                                    ),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            // OpenAI's "developer" role is the system prompt of newer models.
            let role = if message.role == "developer" { "system".into() } else { message.role };
            messages.push(ChatMessage::new(role, content));
        }
        let top_logprobs = match (self.logprobs, self.top_logprobs) {
            (false, Some(k)) if k > 0 => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "top_logprobs needs logprobs: true".into(),
                ))
            }
            (false, _) => None,
            (true, k) => Some(k.unwrap_or(0)),
        };
        if let Some(k) = top_logprobs.filter(|&k| k > MAX_TOP_LOGPROBS) {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("top_logprobs {k}: at most {MAX_TOP_LOGPROBS}"),
            ));
        }
        if let Some(max) = self.max_completion_tokens {
            common.max_tokens = Some(max);
        }
        let model = common.model.clone();
        Ok((model, messages, common.asked(top_logprobs)?))
    }
}

/// OpenAI's name for why a choice ended.
pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Eos | FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

pub fn usage(output: &GenerationOutput) -> Value {
    json!({
        "prompt_tokens": output.prompt_tokens,
        "completion_tokens": output.output_tokens,
        "total_tokens": output.prompt_tokens + output.output_tokens,
    })
}

/// How token ids become the strings of a logprobs listing.
pub trait TokenNames {
    fn token_name(&self, token: u32) -> String;
}

/// A chat choice's `logprobs.content` entries.
pub fn chat_logprobs(names: &impl TokenNames, logprobs: &[TokenLogprob]) -> Value {
    let entry = |token: u32, logprob: f32| {
        let name = names.token_name(token);
        json!({ "token": name, "logprob": logprob, "bytes": name.as_bytes() })
    };
    let content: Vec<Value> = logprobs
        .iter()
        .map(|lp| {
            let mut item = entry(lp.token, lp.logprob);
            let top: Vec<Value> = lp.top.iter().map(|&(t, l)| entry(t, l)).collect();
            item["top_logprobs"] = Value::Array(top);
            item
        })
        .collect();
    json!({ "content": content })
}

/// A completion choice's `logprobs` (tokens, token_logprobs, top_logprobs, text_offset),
/// offsets counted from `offset`.
pub fn completion_logprobs(
    names: &impl TokenNames,
    logprobs: &[TokenLogprob],
    mut offset: usize,
) -> Value {
    let (mut tokens, mut token_logprobs, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for lp in logprobs {
        let name = names.token_name(lp.token);
        offsets.push(offset);
        offset += name.len();
        tokens.push(name);
        token_logprobs.push(lp.logprob);
        let top: Map<String, Value> =
            lp.top.iter().map(|&(t, l)| (names.token_name(t), json!(l))).collect();
        tops.push(Value::Object(top));
    }
    json!({
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Result<(Option<String>, Vec<ChatMessage>, Asked), ApiError> {
        let common = serde_json::from_value::<CommonFields>(body.clone()).unwrap();
        serde_json::from_value::<ChatBody>(body).unwrap().into_parts(common)
    }

    #[test]
    fn a_chat_body_becomes_messages_and_checked_settings() {
        let (model, messages, asked) = chat(json!({
            "model": "m", "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}]}
            ],
            "temperature": 0, "max_completion_tokens": 7, "stop": "###", "logprobs": true,
            "top_logprobs": 5, "seed": 3, "stream": true, "stream_options": {"include_usage": true},
            "user": "ignored"
        }))
        .unwrap();
        assert_eq!(model.as_deref(), Some("m"));
        assert_eq!(
            messages,
            vec![ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi!")]
        );
        assert_eq!(asked.max_tokens, Some(7));
        assert!(asked.sampling.is_greedy());
        assert_eq!(asked.sampling.seed, 3);
        assert_eq!(asked.stop, vec!["###"]);
        assert_eq!(asked.top_logprobs, Some(5));
        assert!(asked.stream && asked.include_usage);
    }

    #[test]
    fn openai_defaults_apply_when_fields_are_absent() {
        let (_, _, asked) = chat(json!({"messages": [{"role": "user", "content": "Hi"}]})).unwrap();
        assert_eq!(asked.sampling.temperature, 1.0, "OpenAI's default temperature");
        assert_eq!(asked.top_logprobs, None);
        assert_eq!(asked.max_tokens, None);
        assert!(!asked.stream);
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (json!({"messages": [{"role": "user", "content": "x"}], "n": 2}), "n"),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "temperature": 3}),
                "temperature",
            ),
            (json!({"messages": [{"role": "user", "content": "x"}], "top_p": 0}), "top_p"),
            (json!({"messages": [{"role": "robot", "content": "x"}]}), "messages[0].role"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}),
                "top_logprobs",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}),
                "top_logprobs",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "presence_penalty": 0.5}),
                "presence_penalty",
            ),
            (json!({"messages": [], "max_tokens": 3}), "messages"),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}),
                "stop",
            ),
        ];
        for (body, field) in cases {
            let error = chat(body.clone()).unwrap_err();
            assert_eq!(error.param.as_deref(), Some(field), "{body}: {error:?}");
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn completion_prompts_are_text_or_tokens_one_at_a_time() {
        let parts = |body: Value| {
            let common = serde_json::from_value::<CommonFields>(body.clone()).unwrap();
            serde_json::from_value::<CompletionBody>(body).unwrap().into_parts(common)
        };
        let (_, prompt, asked) =
            parts(json!({"prompt": "Once", "logprobs": 2, "max_tokens": 5})).unwrap();
        assert_eq!(prompt, CompletionPrompt::Text("Once".into()));
        assert_eq!(asked.top_logprobs, Some(2));
        let (_, prompt, _) = parts(json!({"prompt": [[1, 2, 3]]})).unwrap();
        assert_eq!(prompt, CompletionPrompt::Tokens(vec![1, 2, 3]));
        assert_eq!(
            parts(json!({"prompt": ["a", "b"]})).unwrap_err().param.as_deref(),
            Some("prompt")
        );
        assert_eq!(parts(json!({"prompt": ""})).unwrap_err().param.as_deref(), Some("prompt"));
        assert_eq!(
            parts(json!({"prompt": "a", "echo": true})).unwrap_err().param.as_deref(),
            Some("echo")
        );
    }

    struct Letters;
    impl TokenNames for Letters {
        fn token_name(&self, token: u32) -> String {
            char::from(b'a' + token as u8).to_string()
        }
    }

    #[test]
    fn logprobs_listings_have_openais_shapes() {
        let lps = vec![
            TokenLogprob { token: 0, logprob: -0.5, top: vec![(0, -0.5), (1, -1.0)] },
            TokenLogprob { token: 2, logprob: -2.0, top: vec![(1, -0.1), (2, -2.0)] },
        ];
        let chat = chat_logprobs(&Letters, &lps);
        assert_eq!(chat["content"][1]["token"], "c");
        assert_eq!(chat["content"][1]["top_logprobs"][0]["token"], "b");
        assert_eq!(chat["content"][0]["bytes"], json!([97]));
        let completion = completion_logprobs(&Letters, &lps, 10);
        assert_eq!(completion["tokens"], json!(["a", "c"]));
        assert_eq!(completion["text_offset"], json!([10, 11]));
        assert_eq!(completion["top_logprobs"][1]["b"], json!(-0.1f32));
    }
}
