//! The judge's domain logic: alpaca_eval's output-order swap, the ranking prompt and its
//! fitting into the judge's context, alpaca_eval's `ranking_parser` (with the Python literal
//! reader it needs), the logprob-mode reading, and the annotation row built from a verdict.
//!
//! A judge worker: `PreparedJudgment::prepare(job, &tokenizer)` → render `prompt.messages()` with the
//! judge's chat template → generate (ranking) or read the logits after
//! `LOGPROB_ANSWER_PREFIX` (logprob) → `preference_from_completion` /
//! `preference_from_first_rank_probs` → `result(…)` → `annotation_from(job, &result)`.

pub mod annotation;
pub mod annotator_config;
pub mod chatml;
pub mod judgment;
pub mod logprob;
pub mod prompt;
pub mod python_literal;
pub mod ranking_parser;
pub mod served;
pub mod swap;
pub mod token_logprobs;

pub use annotation::annotation_from;
pub use annotator_config::{AnnotatorConfig, CompletionParser, UnsupportedConfig};
pub use judgment::{max_prompt_tokens, PreparedJudgment};
pub use logprob::{
    logprob_raw_completion, preference_from_first_rank_logits, preference_from_first_rank_probs,
    LOGPROB_ANSWER_PREFIX, LOGPROB_CANDIDATES,
};
pub use prompt::{
    fit_outputs, fit_prompt, ChatMessage, FittedOutputs, FittedPrompt, JudgePrompt, JudgeTemplate,
    JudgeTokenizer, TRUNCATION_MARKER,
};
pub use ranking_parser::{ranking_parser, RankingParseError};
pub use served::ServedJudgment;
pub use swap::SwapDecision;
pub use token_logprobs::{TokenLogprobError, TokenLogprobParser};
