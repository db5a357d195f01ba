//! Logprob mode: read the verdict from one forward pass instead of generating it.
//!
//! The ranking the judge writes starts with the first-ranked model's name. Append
//! [`LOGPROB_ANSWER_PREFIX`] to the rendered prompt (after the chat template's generation
//! prompt, so it reads as the start of the judge's answer), run one forward pass, and compare
//! the logits at the last position for the tokens "1" and "2": the judge is about to name
//! model_1 or model_2 as rank 1. Tokenizers that split digits (Llama 3, Qwen, SmolLM, …)
//! encode `prefix + "1"` as the prefix's tokens plus the single token "1"; an engine should
//! check that once per tokenizer, and encode the prefix without a BOS token.
//!
//! The preference is 1 + P(model_2 first), normalised over the two names, in the order
//! shown; map it back with [`SwapDecision::unswap_preference`](super::swap::SwapDecision).

/// The judge's answer up to the first-ranked model's number, in the format the prompt asks
/// for (`[\n    {'model': <model-name>, 'rank': <model-rank>},…`).
pub const LOGPROB_ANSWER_PREFIX: &str = "[\n    {'model': 'model_";

/// The token texts that complete [`LOGPROB_ANSWER_PREFIX`] for the first and second output.
pub const LOGPROB_CANDIDATES: [&str; 2] = ["1", "2"];

/// 1 + P(model_2 first) / (P(model_1 first) + P(model_2 first)), in [1, 2], in the order
/// shown. NaN when neither name has positive probability (or an input is NaN): no verdict.
pub fn preference_from_first_rank_probs(p_model_1_first: f64, p_model_2_first: f64) -> f64 {
    let total = p_model_1_first + p_model_2_first;
    if total.is_nan() || total <= 0.0 || p_model_1_first < 0.0 || p_model_2_first < 0.0 {
        return f64::NAN;
    }
    1.0 + p_model_2_first / total
}

/// The same from the two logits (or log-probabilities): 1 + sigmoid(logit_2 − logit_1),
/// which stays exact where the probabilities would underflow. NaN for NaN inputs.
pub fn preference_from_first_rank_logits(
    logit_model_1_first: f64,
    logit_model_2_first: f64,
) -> f64 {
    let d = logit_model_2_first - logit_model_1_first;
    if d.is_nan() {
        return f64::NAN;
    }
    // sigmoid(d), computed on the side where exp cannot overflow.
    let p2 = if d >= 0.0 { 1.0 / (1.0 + (-d).exp()) } else { d.exp() / (1.0 + d.exp()) };
    1.0 + p2
}

/// What herd records as `raw_completion` in logprob mode: the two probabilities as JSON.
pub fn logprob_raw_completion(p_model_1_first: f64, p_model_2_first: f64) -> String {
    serde_json::json!({ "p_model_1_first": p_model_1_first, "p_model_2_first": p_model_2_first })
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preference_is_one_plus_the_normalised_probability_of_model_2() {
        assert_eq!(preference_from_first_rank_probs(1.0, 0.0), 1.0);
        assert_eq!(preference_from_first_rank_probs(0.0, 0.5), 2.0);
        assert_eq!(preference_from_first_rank_probs(0.2, 0.6), 1.75);
        assert_eq!(preference_from_first_rank_probs(0.3, 0.3), 1.5);
        assert!(preference_from_first_rank_probs(0.0, 0.0).is_nan());
        assert!(preference_from_first_rank_probs(f64::NAN, 0.5).is_nan());
    }

    #[test]
    fn logits_give_the_same_preference_and_survive_underflow() {
        let (l1, l2) = (0.2f64.ln(), 0.6f64.ln());
        assert!((preference_from_first_rank_logits(l1, l2) - 1.75).abs() < 1e-12);
        assert!(
            (preference_from_first_rank_logits(-2000.0, -2001.0)
                - (1.0 + 1.0 / (1.0 + 1f64.exp())))
            .abs()
                < 1e-12
        );
        assert_eq!(preference_from_first_rank_logits(0.0, 1000.0), 2.0);
        assert_eq!(preference_from_first_rank_logits(1000.0, 0.0), 1.0);
    }

    #[test]
    fn the_prefix_is_how_the_prompt_asks_the_ranking_to_start() {
        let prompt = super::super::prompt::JudgePrompt::new("i", "a", "b");
        assert!(prompt.user().contains("[\n    {'model': <model-name>, 'rank': <model-rank>},"));
        for candidate in LOGPROB_CANDIDATES {
            let answer = format!("{LOGPROB_ANSWER_PREFIX}{candidate}', 'rank': 1}}]");
            assert_eq!(
                super::super::ranking_parser::ranking_parser(&answer).is_ok(),
                candidate == "1"
            );
        }
    }

    #[test]
    fn raw_completion_records_both_probabilities() {
        let raw: serde_json::Value =
            serde_json::from_str(&logprob_raw_completion(0.25, 0.5)).unwrap();
        assert_eq!(raw["p_model_1_first"], 0.25);
        assert_eq!(raw["p_model_2_first"], 0.5);
    }
}
