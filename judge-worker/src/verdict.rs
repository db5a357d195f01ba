//! Judging a batch on the engine thread: prepare each job, then a prefill per logprob job
//! and one continuous-batching generation for the ranking jobs.

use herd_core::jobs::{JudgeJob, JudgeMode};
use herd_core::judge::{
    logprob_raw_completion, preference_from_first_rank_logits, PreparedJudgment,
};
use herd_engine::{BatchOptions, EngineError, GenerationRequest, Model, ScoringOptions};

use crate::{JudgeModel, LogprobCandidates};

/// The judge's answer to one job, in alpaca_eval's orientation.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub prepared: PreparedJudgment,
    /// `None`: the ranking could not be parsed, or the logprob reading gave no verdict.
    pub preference: Option<f64>,
    /// The judge's text (ranking) or the two probabilities as JSON (logprob).
    pub raw_completion: String,
    pub seconds: f64,
}

/// Judges `jobs` with `model`, calling `on_verdict(position, outcome)` as each verdict is
/// ready; an `Err` outcome is a job this judge can never answer (its prompt cannot be built,
/// or the tokenizer does not fit logprob mode). `Err` from the function is an engine failure
/// of the batch: jobs without a verdict yet may succeed on another try.
pub fn judge_batch(
    model: &Model,
    jobs: &[JudgeJob],
    batch: &BatchOptions,
    candidates: Result<&LogprobCandidates, &str>,
    mut on_verdict: impl FnMut(usize, Result<Verdict, String>),
) -> Result<(), EngineError> {
    let judge = JudgeModel::new(model);
    let mut logprob: Vec<(usize, PreparedJudgment, Vec<u32>)> = Vec::new();
    let mut ranking: Vec<(usize, PreparedJudgment, Vec<u32>)> = Vec::new();
    for (position, job) in jobs.iter().enumerate() {
        let mut fitted = job.clone();
        fitted.judge.max_context_tokens =
            job.judge.max_context_tokens.min(judge.max_context_tokens());
        let prepared = PreparedJudgment::prepare(&fitted, &judge);
        let tokens = match judge.prompt_tokens(&prepared.prompt) {
            Ok(tokens) => tokens,
            Err(e) => {
                on_verdict(position, Err(format!("cannot build the judge prompt: {e}")));
                continue;
            }
        };
        match job.judge.mode {
            JudgeMode::Logprob => match candidates {
                Ok(c) => logprob.push((position, prepared, [tokens, c.prefix.clone()].concat())),
                Err(reason) => on_verdict(position, Err(reason.to_string())),
            },
            JudgeMode::Ranking => ranking.push((position, prepared, tokens)),
            JudgeMode::WeightedClassification | JudgeMode::Classification => on_verdict(
                position,
                Err(format!(
                    "judge mode {} reads top log-probabilities from an OpenAI-compatible API: give the judge an endpoint (--judge-endpoint)",
                    job.judge.mode.as_str()
                )),
            ),
        }
    }

    if let (false, Ok(c)) = (logprob.is_empty(), candidates) {
        // One prompt per call: packing several prompts into a forward pass changes the
        // floating-point sums (by ~1e-7), so the verdict would depend on which jobs happened
        // to share a batch. Alone, a prompt is always cut into the same chunks and its
        // verdict is reproducible to the bit.
        let options = ScoringOptions { max_step_tokens: batch.max_step_tokens };
        for (position, prepared, tokens) in logprob {
            let score = model.next_token_logprobs(&[tokens], &c.candidates, &options)?.remove(0);
            let (l1, l2) =
                (f64::from(score.candidate_logprobs[0]), f64::from(score.candidate_logprobs[1]));
            let shown = Some(preference_from_first_rank_logits(l1, l2)).filter(|p| !p.is_nan());
            let verdict = Verdict {
                preference: prepared.swap.unswap_preference(shown),
                raw_completion: logprob_raw_completion(l1.exp(), l2.exp()),
                seconds: score.seconds,
                prepared,
            };
            on_verdict(position, Ok(verdict));
        }
    }

    if !ranking.is_empty() {
        let requests: Vec<GenerationRequest> = ranking
            .iter()
            .enumerate()
            .map(|(id, (position, _, tokens))| GenerationRequest {
                id,
                prompt_tokens: tokens.clone(),
                max_new_tokens: jobs[*position].judge.max_new_tokens,
                stop: Vec::new(),
                ..Default::default()
            })
            .collect();
        let mut prepared: Vec<Option<(usize, PreparedJudgment)>> =
            ranking.into_iter().map(|(position, p, _)| Some((position, p))).collect();
        model.generate(requests, batch, |output| {
            let Some((position, prepared)) = prepared.get_mut(output.id).and_then(Option::take)
            else {
                return;
            };
            let verdict = Verdict {
                preference: prepared.preference_from_completion(&output.text).ok(),
                raw_completion: output.text,
                seconds: output.seconds,
                prepared,
            };
            on_verdict(position, Ok(verdict));
        })?;
    }
    Ok(())
}
