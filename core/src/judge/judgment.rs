//! One judge job made ready for an engine, and its verdict mapped back: the step every judge
//! worker (in-process or distributed) shares, so they all decide order, fit and parse alike.

use crate::jobs::{JudgeJob, JudgeMode, JudgeResult, JudgeSpec};

use super::logprob::{preference_from_first_rank_probs, LOGPROB_ANSWER_PREFIX};
use super::prompt::{fit_prompt, JudgePrompt, JudgeTemplate, JudgeTokenizer};
use super::ranking_parser::{ranking_parser, RankingParseError};
use super::swap::SwapDecision;

/// A judge job with its output order decided (alpaca_eval's swap, seed 0) and its prompt
/// fitted to the judge's context.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedJudgment {
    pub swap: SwapDecision,
    /// The prompt with the outputs in the order shown; render `prompt.messages()` with the
    /// judge's chat template (logprob mode: then append `LOGPROB_ANSWER_PREFIX`).
    pub prompt: JudgePrompt,
    /// Whether the reference output (`output_1` of the annotation) was cut to fit.
    pub truncated_reference: bool,
    /// Whether the model's output (`output_2` of the annotation) was cut to fit.
    pub truncated_model: bool,
    /// Tokens of the rendered prompt, as the tokenizer's `count_prompt` counted them.
    pub prompt_tokens: usize,
}

impl PreparedJudgment {
    /// Decides the order, fills alpaca_eval's template and cuts outputs until the prompt
    /// leaves room for the answer.
    pub fn prepare(job: &JudgeJob, tokenizer: &dyn JudgeTokenizer) -> Self {
        let swap = SwapDecision::for_instruction(&job.instruction);
        let (shown_1, shown_2) =
            swap.order(job.reference_output.as_str(), job.model_output.as_str());
        let fitted = fit_prompt(
            JudgeTemplate::alpaca_eval_fn(),
            &job.instruction,
            (shown_1, shown_2),
            max_prompt_tokens(&job.judge, tokenizer),
            tokenizer,
        );
        let (truncated_reference, truncated_model) = if swap.is_switched() {
            (fitted.truncated_2, fitted.truncated_1)
        } else {
            (fitted.truncated_1, fitted.truncated_2)
        };
        Self {
            swap,
            prompt: fitted.prompt,
            truncated_reference,
            truncated_model,
            prompt_tokens: fitted.prompt_tokens,
        }
    }

    pub fn truncated(&self) -> bool {
        self.truncated_reference || self.truncated_model
    }

    /// Ranking mode: alpaca_eval's `ranking_parser` on the judge's answer, mapped back to
    /// alpaca_eval's orientation (1.0 = reference wins, 2.0 = model wins).
    pub fn preference_from_completion(&self, completion: &str) -> Result<f64, RankingParseError> {
        let shown = ranking_parser(completion)?;
        Ok(self.swap.unswap_preference(Some(shown)).unwrap_or(shown))
    }

    /// Logprob mode: the probabilities that the judge names the first / second output shown
    /// as rank 1, as a preference in alpaca_eval's orientation; `None` without a verdict.
    pub fn preference_from_first_rank_probs(
        &self,
        p_model_1_first: f64,
        p_model_2_first: f64,
    ) -> Option<f64> {
        let shown = preference_from_first_rank_probs(p_model_1_first, p_model_2_first);
        self.swap.unswap_preference(Some(shown).filter(|p| !p.is_nan()))
    }

    /// The result row for `job`, with `preference` already in alpaca_eval's orientation.
    pub fn result(
        &self,
        job: &JudgeJob,
        preference: Option<f64>,
        raw_completion: String,
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
            truncated: self.truncated(),
            prompt_tokens: self.prompt_tokens,
            seconds,
            worker: worker.to_string(),
            stored: None,
            price: None,
        }
    }
}

/// The most tokens the rendered prompt may take: the context minus the answer's room
/// (`max_new_tokens` in ranking mode; the answer prefix in logprob mode, which reads one
/// position and generates nothing).
pub fn max_prompt_tokens(judge: &JudgeSpec, tokenizer: &dyn JudgeTokenizer) -> usize {
    let answer = match judge.mode {
        JudgeMode::Ranking => judge.max_new_tokens,
        JudgeMode::Logprob => tokenizer.count_tokens(LOGPROB_ANSWER_PREFIX),
        JudgeMode::WeightedClassification | JudgeMode::Classification => 1,
    };
    judge.max_context_tokens.saturating_sub(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval_set::EvalSet;
    use crate::judge::prompt::tests::Words;
    use crate::judge::prompt::TRUNCATION_MARKER;

    const WORDS: Words = Words { lumpy: false };

    fn job(
        index: usize,
        model_output: &str,
        mode: JudgeMode,
        max_context_tokens: usize,
    ) -> JudgeJob {
        let set = EvalSet::embedded();
        let row = set.get(index).expect("an eval-set row");
        JudgeJob {
            run_id: "run".into(),
            judge: JudgeSpec {
                name: "judge".into(),
                model: "m".into(),
                mode,
                max_new_tokens: 100,
                max_context_tokens,
                endpoint: None,
                price: None,
                config: None,
            },
            generator: "gen".into(),
            index,
            instruction: row.instruction.clone(),
            dataset: row.dataset.clone(),
            reference_output: row.output.clone(),
            model_output: model_output.into(),
        }
    }

    /// The first eval-set rows that alpaca_eval shows unswapped and swapped (seed 0).
    fn rows_by_swap() -> (usize, usize) {
        let set = EvalSet::embedded();
        let is_switched =
            |i: usize| SwapDecision::for_instruction(&set.rows()[i].instruction).is_switched();
        let kept = (0..set.len()).find(|&i| !is_switched(i)).expect("an unswapped row");
        let switched = (0..set.len()).find(|&i| is_switched(i)).expect("a swapped row");
        (kept, switched)
    }

    #[test]
    fn the_judge_sees_the_outputs_in_alpaca_evals_order_and_the_verdict_is_mapped_back() {
        let (kept, switched) = rows_by_swap();
        for (index, is_switched) in [(kept, false), (switched, true)] {
            let job = job(index, "MODEL ANSWER", JudgeMode::Ranking, 100_000);
            let prepared = PreparedJudgment::prepare(&job, &WORDS);
            assert_eq!(prepared.swap.is_switched(), is_switched);
            let model_position =
                prepared.prompt.user().find("MODEL ANSWER").expect("model output in prompt");
            let reference_position =
                prepared.prompt.user().find(&job.reference_output).expect("reference in prompt");
            assert_eq!(model_position < reference_position, is_switched);
            // The judge prefers the second output shown.
            let answer = "[{'model': 'model_2', 'rank': 1}, {'model': 'model_1', 'rank': 2}]";
            let model_wins = if is_switched { 1.0 } else { 2.0 };
            assert_eq!(prepared.preference_from_completion(answer), Ok(model_wins));
            assert_eq!(prepared.preference_from_first_rank_probs(0.0, 1.0), Some(model_wins));
            assert_eq!(prepared.preference_from_first_rank_probs(0.0, 0.0), None);
            assert!(prepared.preference_from_completion("no idea").is_err());
            let result = prepared.result(&job, Some(model_wins), answer.into(), 0.5, "w1");
            assert_eq!(
                (result.is_switched, result.truncated, result.index),
                (is_switched, false, index)
            );
        }
    }

    #[test]
    fn a_long_model_output_is_cut_and_reported_in_alpaca_evals_orientation() {
        let (_, switched) = rows_by_swap();
        let long = (0..20_000).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let job = job(switched, &long, JudgeMode::Ranking, 3_000);
        let prepared = PreparedJudgment::prepare(&job, &WORDS);
        assert!(prepared.truncated_model && !prepared.truncated_reference);
        assert!(prepared.prompt_tokens <= 3_000 - 100);
        assert!(prepared.prompt.user().contains(TRUNCATION_MARKER));
    }

    #[test]
    fn logprob_mode_reserves_only_the_answer_prefix() {
        let ranking = job(0, "x", JudgeMode::Ranking, 7_000);
        let logprob = job(0, "x", JudgeMode::Logprob, 7_000);
        assert_eq!(max_prompt_tokens(&ranking.judge, &WORDS), 6_900);
        assert_eq!(
            max_prompt_tokens(&logprob.judge, &WORDS),
            7_000 - WORDS.count_tokens(LOGPROB_ANSWER_PREFIX)
        );
    }
}
