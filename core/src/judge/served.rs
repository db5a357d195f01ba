//! A judge reached over an OpenAI-compatible API: the chat messages to send and how the
//! answer becomes a verdict, for the ranking prompt (alpaca_eval's `ranking_parser`), herd's
//! logprob mode (the ranking prompt with the answer prefix as an assistant turn to continue,
//! `continue_final_message`, and the candidates' log-probabilities among the top 20) and
//! alpaca_eval's classification annotators (the `alpaca_eval_clf` prompt, `logprob_parser`
//! over the answer token's top log-probabilities).
//!
//! No tokenizer is at hand: the ranking prompt is fitted into the judge's context with an
//! estimate of 3 bytes per token (cautious for English with BPE vocabularies); the
//! classification prompt is sent whole, as alpaca_eval sends it.

use serde_json::Value;

use crate::jobs::{JudgeJob, JudgeMode, JudgeResult};

use super::annotator_config::CompletionParser;
use super::chatml::{chatml_messages, fill_template};
use super::judgment::PreparedJudgment;
use super::logprob::{
    logprob_raw_completion, preference_from_first_rank_logits, LOGPROB_ANSWER_PREFIX,
    LOGPROB_CANDIDATES,
};
use super::prompt::{JudgePrompt, JudgeTokenizer};
use super::swap::SwapDecision;
use super::token_logprobs::TokenLogprobParser;

/// alpaca_eval 0.6.6's classification prompt (ChatML: a system and a user message).
pub const ALPACA_EVAL_CLF_TEMPLATE: &str = include_str!(
    "../../../data/prompts/alpaca_eval_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt"
);

/// Log-probabilities listed per answer token (the classification annotators' setting).
pub const CLASSIFICATION_TOP_LOGPROBS: usize = 5;

/// A judge job made ready for a served judge.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedJudgment {
    mode: JudgeMode,
    swap: SwapDecision,
    /// (role, content) in order.
    pub messages: Vec<(String, String)>,
    pub max_tokens: usize,
    /// The sampling temperature the annotator's config asks for.
    pub temperature: f32,
    /// `Some(k)`: ask for the answer tokens' top-k log-probabilities.
    pub top_logprobs: Option<usize>,
    /// The last message is the start of the judge's answer, to be continued (logprob mode).
    pub continue_final_message: bool,
    truncated: bool,
    /// An annotator config's parser, in place of the mode's.
    parser: Option<CompletionParser>,
}

/// Alternatives listed after the answer prefix in logprob mode: the two candidates are
/// nearly always the top two; past 20, a candidate counts as probability 0.
pub const LOGPROB_MODE_TOP_LOGPROBS: usize = 20;

impl ServedJudgment {
    pub fn prepare(job: &JudgeJob) -> Result<Self, String> {
        let judge = &job.judge;
        if let Some(config) = &judge.config {
            let swap = SwapDecision::for_instruction(&job.instruction);
            return Ok(Self {
                messages: clf_style_messages(&config.prompt_template, job, swap)?,
                mode: judge.mode,
                swap,
                max_tokens: config.max_tokens,
                temperature: config.temperature,
                top_logprobs: config.top_logprobs,
                continue_final_message: false,
                truncated: false,
                parser: Some(config.parser.clone()),
            });
        }
        match judge.mode {
            JudgeMode::Ranking => {
                let prepared = PreparedJudgment::prepare(job, &ByteEstimate);
                let messages = prepared
                    .prompt
                    .messages()
                    .iter()
                    .map(|m| (m.role.clone(), m.content.clone()))
                    .collect();
                Ok(Self {
                    mode: judge.mode,
                    swap: prepared.swap,
                    messages,
                    max_tokens: judge.max_new_tokens,
                    temperature: 0.0,
                    top_logprobs: None,
                    continue_final_message: false,
                    truncated: prepared.truncated(),
                    parser: None,
                })
            }
            JudgeMode::Logprob => {
                let prepared = PreparedJudgment::prepare(job, &ByteEstimate);
                let mut messages: Vec<(String, String)> = prepared
                    .prompt
                    .messages()
                    .iter()
                    .map(|m| (m.role.clone(), m.content.clone()))
                    .collect();
                messages.push(("assistant".into(), LOGPROB_ANSWER_PREFIX.into()));
                Ok(Self {
                    mode: judge.mode,
                    swap: prepared.swap,
                    messages,
                    max_tokens: 1,
                    temperature: 0.0,
                    top_logprobs: Some(LOGPROB_MODE_TOP_LOGPROBS),
                    continue_final_message: true,
                    truncated: prepared.truncated(),
                    parser: None,
                })
            }
            JudgeMode::WeightedClassification | JudgeMode::Classification => {
                let swap = SwapDecision::for_instruction(&job.instruction);
                let messages = clf_style_messages(ALPACA_EVAL_CLF_TEMPLATE, job, swap)?;
                Ok(Self {
                    mode: judge.mode,
                    swap,
                    messages,
                    max_tokens: 1,
                    temperature: 1.0,
                    top_logprobs: Some(CLASSIFICATION_TOP_LOGPROBS),
                    continue_final_message: false,
                    truncated: false,
                    parser: None,
                })
            }
        }
    }

    /// The verdict in alpaca_eval's orientation, from the answer's text (ranking) or its
    /// first choice as the API sent it (classification: `{"logprobs": {"content": …}}`),
    /// and what is kept as `raw_completion`.
    pub fn verdict(&self, text: &str, choice: &Value) -> (Option<f64>, String) {
        if let Some(parser) = &self.parser {
            return match parser.token_logprob_parser() {
                Some(tokens) => {
                    let shown =
                        tokens.parse(choice).ok().and_then(|p| p.first().copied().flatten());
                    (self.swap.unswap_preference(shown), choice.to_string())
                }
                None => {
                    let shown = super::ranking_parser::ranking_parser(text).ok();
                    (self.swap.unswap_preference(shown), text.to_string())
                }
            };
        }
        match self.mode {
            JudgeMode::WeightedClassification | JudgeMode::Classification => {
                let parser = if self.mode == JudgeMode::Classification {
                    TokenLogprobParser::binarised_m_over_m_or_capital_m()
                } else {
                    TokenLogprobParser::weighted_m_over_m_or_capital_m()
                };
                let shown = parser.parse(choice).ok().and_then(|p| p.first().copied().flatten());
                (self.swap.unswap_preference(shown), choice.to_string())
            }
            JudgeMode::Logprob => {
                // The candidates' log-probabilities among the first answer token's top list
                // (a candidate not listed: probability 0).
                let listed = |candidate: &str| {
                    choice["logprobs"]["content"][0]["top_logprobs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|e| e["token"].as_str() == Some(candidate))
                        .filter_map(|e| e["logprob"].as_f64())
                        .fold(f64::NEG_INFINITY, f64::max)
                };
                let (l1, l2) = (listed(LOGPROB_CANDIDATES[0]), listed(LOGPROB_CANDIDATES[1]));
                let shown = Some(preference_from_first_rank_logits(l1, l2)).filter(|p| !p.is_nan());
                (self.swap.unswap_preference(shown), logprob_raw_completion(l1.exp(), l2.exp()))
            }
            JudgeMode::Ranking => {
                let shown = super::ranking_parser::ranking_parser(text).ok();
                (self.swap.unswap_preference(shown), text.to_string())
            }
        }
    }

    /// The result row for `job`; its price from the judge's and the API's token counts.
    pub fn result(
        &self,
        job: &JudgeJob,
        (preference, raw_completion): (Option<f64>, String),
        (prompt_tokens, completion_tokens): (usize, usize),
        seconds: f64,
        worker: &str,
    ) -> JudgeResult {
        JudgeResult {
            run_id: job.run_id.clone(),
            judge: job.judge.name.clone(),
            generator: job.generator.clone(),
            index: job.index,
            preference,
            raw_completion,
            is_switched: self.swap.is_switched(),
            truncated: self.truncated,
            prompt_tokens,
            seconds,
            worker: worker.to_string(),
            stored: None,
            price: job.judge.price.map(|p| p.of(prompt_tokens, completion_tokens)),
        }
    }
}

/// A ChatML template filled as alpaca_eval fills it (outputs in the order shown), as chat
/// messages.
fn clf_style_messages(
    template: &str,
    job: &JudgeJob,
    swap: SwapDecision,
) -> Result<Vec<(String, String)>, String> {
    let (shown_1, shown_2) = swap.order(job.reference_output.as_str(), job.model_output.as_str());
    let prompt = fill_template(template, |name| match name {
        "instruction" => Some(job.instruction.as_str()),
        "output_1" => Some(shown_1),
        "output_2" => Some(shown_2),
        _ => None,
    });
    Ok(chatml_messages(&prompt)
        .map_err(|e| format!("the annotator's prompt: {e}"))?
        .into_iter()
        .map(|m| (m.role, m.content))
        .collect())
}

/// Token counts estimated from bytes, for fitting a prompt with no tokenizer at hand.
struct ByteEstimate;

const BYTES_PER_TOKEN: usize = 3;

impl JudgeTokenizer for ByteEstimate {
    fn count_tokens(&self, text: &str) -> usize {
        text.len().div_ceil(BYTES_PER_TOKEN)
    }

    fn truncate_to_tokens(&self, text: &str, max_tokens: usize) -> String {
        let mut end = (max_tokens * BYTES_PER_TOKEN).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_string()
    }

    fn count_prompt(&self, prompt: &JudgePrompt) -> usize {
        // The messages plus a few tokens of chat formatting each.
        prompt.messages().iter().map(|m| self.count_tokens(&m.content) + 8).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval_set::EvalSet;
    use crate::jobs::JudgeSpec;
    use serde_json::json;

    fn job(mode: JudgeMode, index: usize) -> JudgeJob {
        let eval = EvalSet::shared();
        let example = eval.get(index).unwrap();
        JudgeJob {
            run_id: "r".into(),
            judge: JudgeSpec {
                name: "j".into(),
                model: "m".into(),
                mode,
                max_new_tokens: 100,
                max_context_tokens: 7000,
                endpoint: Some("http://h/v1".into()),
                price: None,
                config: None,
            },
            generator: "g".into(),
            index,
            instruction: example.instruction.clone(),
            dataset: example.dataset.clone(),
            reference_output: example.output.clone(),
            model_output: "A short answer.".into(),
        }
    }

    #[test]
    fn the_classification_prompt_shows_the_outputs_in_alpaca_evals_order() {
        for index in 0..6 {
            let job = job(JudgeMode::WeightedClassification, index);
            let served = ServedJudgment::prepare(&job).unwrap();
            assert_eq!(served.messages[0].0, "system");
            assert_eq!(served.messages[1].0, "user");
            let user = &served.messages[1].1;
            let (first, second) =
                (user.find(&job.reference_output).unwrap(), user.find(&job.model_output).unwrap());
            assert_eq!(first > second, served.swap.is_switched(), "row {index}");
            assert_eq!((served.max_tokens, served.top_logprobs), (1, Some(5)));
        }
    }

    #[test]
    fn a_classification_verdict_is_read_from_top_logprobs_and_unswapped() {
        let job = job(JudgeMode::WeightedClassification, 0);
        let served = ServedJudgment::prepare(&job).unwrap();
        let choice = json!({"logprobs": {"content": [{"token": "m", "logprob": -0.1,
            "top_logprobs": [{"token": "m", "logprob": (0.75f64).ln()}, {"token": "M", "logprob": (0.25f64).ln()}]}]}});
        let (preference, raw) = served.verdict("m", &choice);
        let shown = 2.0 - 0.75;
        let expected = if served.swap.is_switched() { 3.0 - shown } else { shown };
        assert!((preference.unwrap() - expected).abs() < 1e-12);
        assert!(raw.contains("top_logprobs"));
        let none = served.verdict("x", &json!({"logprobs": {"content": [{"token": "x", "logprob": 0.0, "top_logprobs": [{"token": "x", "logprob": 0.0}]}]}}));
        assert_eq!(none.0, None, "neither m nor M listed: no verdict");
        let binarised = ServedJudgment::prepare(&JudgeJob {
            judge: JudgeSpec { mode: JudgeMode::Classification, ..job.judge.clone() },
            ..job.clone()
        })
        .unwrap();
        let shown = 1.0;
        let expected = if binarised.swap.is_switched() { 2.0 } else { shown };
        assert_eq!(binarised.verdict("m", &choice).0, Some(expected));
    }

    #[test]
    fn the_ranking_prompt_is_parsed_as_alpaca_eval_does_and_logprob_mode_is_refused() {
        let job = job(JudgeMode::Ranking, 1);
        let served = ServedJudgment::prepare(&job).unwrap();
        assert_eq!(served.top_logprobs, None);
        let answer = "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]";
        let (preference, raw) = served.verdict(answer, &Value::Null);
        assert_eq!(preference, Some(if served.swap.is_switched() { 2.0 } else { 1.0 }));
        assert_eq!(raw, answer);
        assert_eq!(served.verdict("no idea", &Value::Null).0, None);
    }

    #[test]
    fn logprob_mode_continues_the_answer_prefix_and_reads_the_candidates() {
        let served = ServedJudgment::prepare(&job(JudgeMode::Logprob, 2)).unwrap();
        let last = served.messages.last().unwrap();
        assert_eq!((last.0.as_str(), last.1.as_str()), ("assistant", LOGPROB_ANSWER_PREFIX));
        assert!(served.continue_final_message);
        assert_eq!((served.max_tokens, served.top_logprobs), (1, Some(20)));
        let choice = json!({"logprobs": {"content": [{"token": "1", "logprob": (0.6f64).ln(),
            "top_logprobs": [{"token": "1", "logprob": (0.6f64).ln()}, {"token": "2", "logprob": (0.2f64).ln()}, {"token": "x", "logprob": -3.0}]}]}});
        let (preference, raw) = served.verdict("1", &choice);
        let shown = 1.0 + 0.2 / 0.8;
        let expected = if served.swap.is_switched() { 3.0 - shown } else { shown };
        assert!((preference.unwrap() - expected).abs() < 1e-12);
        assert_eq!(raw, logprob_raw_completion(0.6f64.ln().exp(), 0.2f64.ln().exp()));
        let neither =
            json!({"logprobs": {"content": [{"token": "x", "logprob": 0.0, "top_logprobs": []}]}});
        assert_eq!(served.verdict("x", &neither).0, None);
    }
}
