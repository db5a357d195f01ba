//! An alpaca_eval annotator config (`configs.yaml` and its prompt) as herd runs it through a
//! served judge: what is supported is taken, what is not is named.
//!
//! Supported: one annotator per file; a ChatML prompt template with `{instruction}`,
//! `{output_1}`, `{output_2}`; `completions_kwargs` `model_name`, `max_tokens` /
//! `max_new_tokens`, `temperature`, `logprobs` + `top_logprobs` (and the server-side
//! settings `model_kwargs`, `batch_size`, `is_chatml_prompt`, `requires_chatml`, `top_p` = 1,
//! which describe alpaca_eval's own serving and are not needed here); parsers
//! `ranking_parser` and `logprob_parser` (any numerator and denominator tokens, binarised or
//! weighted); `batch_size` 1. Anything else (tools, function calling, several examples per
//! prompt, other parsers) is refused with the key named.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::token_logprobs::TokenLogprobParser;

/// How the served judge's answer becomes a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompletionParser {
    /// alpaca_eval's `ranking_parser` on the answer's text.
    Ranking,
    /// alpaca_eval's `logprob_parser` on the first answer token's top log-probabilities.
    Logprob { numerator: String, denominators: Vec<String>, binarize: bool },
}

impl CompletionParser {
    pub fn token_logprob_parser(&self) -> Option<TokenLogprobParser> {
        match self {
            CompletionParser::Ranking => None,
            CompletionParser::Logprob { numerator, denominators, binarize } => {
                Some(TokenLogprobParser {
                    numerator: numerator.clone(),
                    denominators: denominators.clone(),
                    binarize: *binarize,
                })
            }
        }
    }
}

/// An annotator read from alpaca_eval's config, carried with the judge to every worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnnotatorConfig {
    /// The config's name (its top-level key).
    pub name: String,
    /// `completions_kwargs.model_name`.
    pub model: Option<String>,
    /// The ChatML prompt template.
    pub prompt_template: String,
    pub max_tokens: usize,
    pub temperature: f32,
    /// `Some(k)` when the config asks for log-probabilities.
    pub top_logprobs: Option<usize>,
    pub parser: CompletionParser,
}

// By bits, as a plan's identity (see `jobs::SamplingSpec`).
impl PartialEq for AnnotatorConfig {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.model == other.model
            && self.prompt_template == other.prompt_template
            && self.max_tokens == other.max_tokens
            && self.temperature.to_bits() == other.temperature.to_bits()
            && self.top_logprobs == other.top_logprobs
            && self.parser == other.parser
    }
}

impl Eq for AnnotatorConfig {}

impl std::hash::Hash for AnnotatorConfig {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.model.hash(state);
        self.prompt_template.hash(state);
        self.max_tokens.hash(state);
        self.temperature.to_bits().hash(state);
        self.top_logprobs.hash(state);
        self.parser.hash(state);
    }
}

/// What in a config herd cannot run, by key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct UnsupportedConfig {
    pub key: String,
    pub reason: String,
}

fn unsupported(key: &str, reason: impl Into<String>) -> UnsupportedConfig {
    UnsupportedConfig { key: key.to_string(), reason: reason.into() }
}

/// Settings of `completions_kwargs` that describe alpaca_eval's own serving of the model.
const SERVING_KEYS: [&str; 5] =
    ["model_kwargs", "batch_size", "is_chatml_prompt", "requires_chatml", "top_p"];

impl AnnotatorConfig {
    /// The prompt template's path as the config names it (relative to alpaca_eval's
    /// `evaluators_configs` folder), for the caller to read.
    pub fn prompt_path(configs: &Value) -> Result<(String, String), UnsupportedConfig> {
        let (name, config) = single_annotator(configs)?;
        let path = config["prompt_template"]
            .as_str()
            .ok_or_else(|| unsupported(&format!("{name}.prompt_template"), "missing"))?;
        Ok((name.to_string(), path.to_string()))
    }

    /// The annotator of `configs` (configs.yaml as JSON values) with its prompt's text.
    pub fn from_alpaca_eval(configs: &Value, prompt: &str) -> Result<Self, UnsupportedConfig> {
        let (name, config) = single_annotator(configs)?;
        let key = |k: &str| format!("{name}.{k}");
        if let Some(batch) = config.get("batch_size") {
            if batch.as_u64() != Some(1) {
                return Err(unsupported(
                    &key("batch_size"),
                    format!("{batch}: herd asks about one pair per prompt (batch_size 1)"),
                ));
            }
        }
        let kwargs = config.get("completions_kwargs").cloned().unwrap_or(Value::Null);
        let empty = serde_json::Map::new();
        let kwargs_map = kwargs.as_object().unwrap_or(&empty);
        for (k, v) in kwargs_map {
            let known = matches!(
                k.as_str(),
                "model_name"
                    | "max_tokens"
                    | "max_new_tokens"
                    | "temperature"
                    | "logprobs"
                    | "top_logprobs"
            );
            if known || SERVING_KEYS.contains(&k.as_str()) {
                if k == "top_p" && v.as_f64() != Some(1.0) {
                    return Err(unsupported(
                        &key("completions_kwargs.top_p"),
                        format!("{v}: only 1"),
                    ));
                }
                continue;
            }
            return Err(unsupported(
                &key(&format!("completions_kwargs.{k}")),
                "not supported (tools and function calling are not sent)",
            ));
        }
        let max_tokens = kwargs_map
            .get("max_tokens")
            .or_else(|| kwargs_map.get("max_new_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(100) as usize;
        let temperature =
            kwargs_map.get("temperature").and_then(Value::as_f64).unwrap_or(0.0) as f32;
        let logprobs = kwargs_map.get("logprobs").and_then(Value::as_bool).unwrap_or(false);
        let top_logprobs = logprobs
            .then(|| kwargs_map.get("top_logprobs").and_then(Value::as_u64).unwrap_or(5) as usize);
        let parser = match config["fn_completion_parser"].as_str() {
            Some("ranking_parser") => CompletionParser::Ranking,
            Some("logprob_parser") => {
                let kw = &config["completion_parser_kwargs"];
                let numerator = kw["numerator_token"].as_str().ok_or_else(|| {
                    unsupported(&key("completion_parser_kwargs.numerator_token"), "missing")
                })?;
                let denominators: Vec<String> = kw["denominator_tokens"]
                    .as_array()
                    .map(|d| d.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
                    .unwrap_or_else(|| vec![numerator.to_string()]);
                if top_logprobs.is_none() {
                    return Err(unsupported(
                        &key("completions_kwargs.logprobs"),
                        "logprob_parser needs logprobs: true",
                    ));
                }
                CompletionParser::Logprob {
                    numerator: numerator.to_string(),
                    denominators,
                    binarize: kw["is_binarize"].as_bool().unwrap_or(false),
                }
            }
            Some(other) => {
                return Err(unsupported(
                    &key("fn_completion_parser"),
                    format!("{other} (herd runs ranking_parser and logprob_parser)"),
                ))
            }
            None => return Err(unsupported(&key("fn_completion_parser"), "missing")),
        };
        if let Some(completion_key) = config.get("completion_key").and_then(Value::as_str) {
            let fits = completion_key == "completions_all" || parser == CompletionParser::Ranking;
            if !fits {
                return Err(unsupported(&key("completion_key"), completion_key.to_string()));
            }
        }
        for placeholder in ["{instruction}", "{output_1}", "{output_2}"] {
            if !prompt.contains(placeholder) {
                return Err(unsupported(
                    &key("prompt_template"),
                    format!("the prompt has no {placeholder}"),
                ));
            }
        }
        super::chatml::chatml_messages(prompt).map_err(|e| {
            unsupported(&key("prompt_template"), format!("not a ChatML prompt: {e}"))
        })?;
        Ok(Self {
            name: name.to_string(),
            model: kwargs_map.get("model_name").and_then(Value::as_str).map(str::to_string),
            prompt_template: prompt.to_string(),
            max_tokens,
            temperature,
            top_logprobs,
            parser,
        })
    }
}

fn single_annotator(configs: &Value) -> Result<(&str, &Value), UnsupportedConfig> {
    let map = configs
        .as_object()
        .ok_or_else(|| unsupported("configs.yaml", "not a mapping of annotator names"))?;
    match map.iter().next() {
        Some((name, config)) if map.len() == 1 => Ok((name.as_str(), config)),
        _ => Err(unsupported(
            "configs.yaml",
            format!("{} annotators; herd reads files with one", map.len()),
        )),
    }
}
