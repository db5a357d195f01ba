//! alpaca_eval's `logprob_parser`: the verdict of a classification annotator
//! (`weighted_alpaca_eval_gpt4_turbo`, `alpaca_eval_clf_gpt4_turbo`, …) read from the
//! top log-probabilities of the one token it answers with, in an OpenAI chat completion
//! (`logprobs.content[i].top_logprobs`).
//!
//! The annotator is asked for the identifier of the better output: the numerator token
//! (`m`, the first output shown) or another denominator token (`M`). Of the top
//! log-probabilities, only those tokens count (a token listed twice: the last listing
//! counts); a candidate not listed has probability 0. With none listed there is no verdict.
//! - Weighted: 2 − P(numerator) / P(any denominator token), from the log-probabilities
//!   (log-sum-exp with the largest factored out, as scipy computes it).
//! - Binarised: 1 if the numerator's log-probability is strictly above every other
//!   denominator token's, else 2 (a tie gives 2).
//!
//! The result is in the order shown to the judge; alpaca_eval maps a switched row back
//! with 3 − p ([`super::SwapDecision::unswap_preference`]).

use serde_json::Value;

/// How an annotator's answer token is read.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobParser {
    /// The token that says the first output shown is better.
    pub numerator: String,
    /// Every valid answer token (the numerator among them).
    pub denominators: Vec<String>,
    pub binarize: bool,
}

/// Why a completion holds no log-probabilities to read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenLogprobError {
    #[error("the completion has no `logprobs.content` list")]
    NoContent,
    #[error("`logprobs.content[{0}]` has no `top_logprobs` list")]
    NoTopLogprobs(usize),
    #[error("`logprobs.content[{position}].top_logprobs[{entry}]` is not {{token, logprob}}")]
    BadEntry { position: usize, entry: usize },
}

impl TokenLogprobParser {
    /// `weighted_alpaca_eval_gpt4_turbo`'s parser (`m` over `m`, `M`; weighted).
    pub fn weighted_m_over_m_or_capital_m() -> Self {
        Self { numerator: "m".into(), denominators: vec!["m".into(), "M".into()], binarize: false }
    }

    /// `alpaca_eval_clf_gpt4_turbo`'s: the same, binarised.
    pub fn binarised_m_over_m_or_capital_m() -> Self {
        Self { binarize: true, ..Self::weighted_m_over_m_or_capital_m() }
    }

    /// The preference (order shown) of every answer position of `completion` (an OpenAI
    /// chat completion choice: `{"logprobs": {"content": [...]}, ...}`); `None` where no
    /// candidate token is among the top log-probabilities.
    pub fn parse(&self, completion: &Value) -> Result<Vec<Option<f64>>, TokenLogprobError> {
        let content = completion
            .get("logprobs")
            .and_then(|l| l.get("content"))
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
            .ok_or(TokenLogprobError::NoContent)?;
        content
            .iter()
            .enumerate()
            .map(|(position, answer)| {
                let top = answer
                    .get("top_logprobs")
                    .and_then(Value::as_array)
                    .ok_or(TokenLogprobError::NoTopLogprobs(position))?;
                let mut listed: Vec<(&str, f64)> = Vec::new();
                for (entry, t) in top.iter().enumerate() {
                    let bad = || TokenLogprobError::BadEntry { position, entry };
                    let token = t.get("token").and_then(Value::as_str).ok_or_else(bad)?;
                    let logprob = t.get("logprob").and_then(Value::as_f64).ok_or_else(bad)?;
                    if self.is_candidate(token) {
                        listed.retain(|(seen, _)| *seen != token);
                        listed.push((token, logprob));
                    }
                }
                Ok(self.preference(&listed))
            })
            .collect()
    }

    fn is_candidate(&self, token: &str) -> bool {
        token == self.numerator || self.denominators.iter().any(|d| d == token)
    }

    fn preference(&self, listed: &[(&str, f64)]) -> Option<f64> {
        if listed.is_empty() {
            return None;
        }
        let logprob = |token: &str| {
            listed.iter().find(|(t, _)| *t == token).map_or(f64::NEG_INFINITY, |(_, lp)| *lp)
        };
        let numerator = logprob(&self.numerator);
        if self.binarize {
            let best = self
                .denominators
                .iter()
                .filter(|d| **d != self.numerator)
                .all(|d| numerator > logprob(d));
            return Some(if best { 1.0 } else { 2.0 });
        }
        let logprobs: Vec<f64> = self.denominators.iter().map(|d| logprob(d)).collect();
        let probability = (numerator - log_sum_exp(&logprobs)).exp();
        Some(2.0 - probability)
    }
}

/// scipy's `logsumexp`: the largest finite value factored out (0 when none is finite).
fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let shift = if max.is_finite() { max } else { 0.0 };
    let sum: f64 = values.iter().map(|v| (v - shift).exp()).sum();
    sum.ln() + shift
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn completion(top: Value) -> Value {
        json!({"logprobs": {"content": [{"token": "M", "logprob": -0.1, "top_logprobs": top}]}})
    }

    #[test]
    fn weighted_and_binarised_readings() {
        let weighted = TokenLogprobParser::weighted_m_over_m_or_capital_m();
        let binarised = TokenLogprobParser::binarised_m_over_m_or_capital_m();
        let c = completion(json!([
            {"token": "M", "logprob": (0.75f64).ln()},
            {"token": "The", "logprob": -3.0},
            {"token": "m", "logprob": (0.25f64).ln()}
        ]));
        let p = weighted.parse(&c).unwrap()[0].unwrap();
        assert!((p - 1.75).abs() < 1e-12, "{p}");
        assert_eq!(binarised.parse(&c).unwrap(), [Some(2.0)]);
        // Only `m` listed: P(m) = 1; only `M`: P(m) = 0.
        let only_m = completion(json!([{"token": "m", "logprob": -2.0}]));
        assert_eq!(weighted.parse(&only_m).unwrap(), [Some(1.0)]);
        assert_eq!(binarised.parse(&only_m).unwrap(), [Some(1.0)]);
        let only_capital = completion(json!([{"token": "M", "logprob": -2.0}]));
        assert_eq!(weighted.parse(&only_capital).unwrap(), [Some(2.0)]);
        // Neither: no verdict. A tie: binarised says 2.
        let neither = completion(json!([{"token": "Both", "logprob": -0.1}]));
        assert_eq!(weighted.parse(&neither).unwrap(), [None]);
        let tie =
            completion(json!([{"token": "m", "logprob": -0.7}, {"token": "M", "logprob": -0.7}]));
        assert_eq!(binarised.parse(&tie).unwrap(), [Some(2.0)]);
        assert_eq!(weighted.parse(&tie).unwrap(), [Some(1.5)]);
    }

    #[test]
    fn malformed_completions_say_what_is_missing() {
        let weighted = TokenLogprobParser::weighted_m_over_m_or_capital_m();
        assert_eq!(weighted.parse(&json!({"text": "m"})), Err(TokenLogprobError::NoContent));
        let no_top = json!({"logprobs": {"content": [{"token": "m"}]}});
        assert_eq!(weighted.parse(&no_top), Err(TokenLogprobError::NoTopLogprobs(0)));
        let bad = completion(json!([{"token": "m"}]));
        assert_eq!(
            weighted.parse(&bad),
            Err(TokenLogprobError::BadEntry { position: 0, entry: 0 })
        );
    }
}
