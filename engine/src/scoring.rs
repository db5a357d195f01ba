//! Next-token scores without generation, for the judge's logprob mode: prompts are prefilled
//! in packed batches bounded by a token budget (long prompts in chunks), and only the last
//! position's logits leave the model.

use std::time::Instant;

use crate::error::{EngineError, Result};
use crate::kv_cache::SequenceCache;
use crate::model::Model;

/// Limits of one scoring call.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringOptions {
    /// Prompt tokens per forward pass.
    pub max_step_tokens: usize,
}

impl Default for ScoringOptions {
    fn default() -> Self {
        Self { max_step_tokens: 512 }
    }
}

/// The scores of one prompt's next token.
#[derive(Debug, Clone, PartialEq)]
pub struct NextTokenScores {
    /// Index of the prompt in the call.
    pub index: usize,
    pub prompt_tokens: usize,
    /// Log-probabilities (natural log, full-vocabulary softmax) of the candidates, in the
    /// order asked for.
    pub candidate_logprobs: Vec<f32>,
    /// The most likely next token and its log-probability.
    pub top_token: u32,
    pub top_logprob: f32,
    /// From the prompt's first forward pass to its last.
    pub seconds: f64,
}

impl Model {
    /// Raw next-token logits (`vocab` values) after each prompt, in prompt order.
    pub fn next_token_logits(
        &self,
        prompts: &[Vec<u32>],
        options: &ScoringOptions,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); prompts.len()];
        self.prefill_last_logits(prompts, options, |i, logits, _| {
            out[i] = logits.to_vec();
        })?;
        Ok(out)
    }

    /// Log-probabilities of `candidates` as the token after each prompt, in prompt order.
    pub fn next_token_logprobs(
        &self,
        prompts: &[Vec<u32>],
        candidates: &[u32],
        options: &ScoringOptions,
    ) -> Result<Vec<NextTokenScores>> {
        let vocab = self.config().vocab_size;
        if let Some(&bad) = candidates.iter().find(|&&c| c as usize >= vocab) {
            return Err(EngineError::BadRequest {
                request: 0,
                reason: format!("candidate token {bad} is outside the vocabulary ({vocab})"),
            });
        }
        let mut out: Vec<Option<NextTokenScores>> = vec![None; prompts.len()];
        self.prefill_last_logits(prompts, options, |i, logits, seconds| {
            let (top_token, log_z) = log_normalizer(logits);
            out[i] = Some(NextTokenScores {
                index: i,
                prompt_tokens: prompts[i].len(),
                candidate_logprobs: candidates
                    .iter()
                    .map(|&c| (logits[c as usize] as f64 - log_z) as f32)
                    .collect(),
                top_token,
                top_logprob: (logits[top_token as usize] as f64 - log_z) as f32,
                seconds,
            });
        })?;
        Ok(out.into_iter().map(|s| s.expect("every prompt is scored")).collect())
    }

    /// Prefills every prompt and calls `on_done(index, last_logits, seconds)` once per prompt.
    fn prefill_last_logits(
        &self,
        prompts: &[Vec<u32>],
        options: &ScoringOptions,
        mut on_done: impl FnMut(usize, &[f32], f64),
    ) -> Result<()> {
        let vocab = self.config().vocab_size;
        let capacity = self.transformer.kv_capacity();
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(EngineError::BadRequest { request: i, reason: "empty prompt".into() });
            }
            if let Some(&bad) = p.iter().find(|&&t| t as usize >= vocab) {
                return Err(EngineError::BadRequest {
                    request: i,
                    reason: format!("token id {bad} is outside the vocabulary"),
                });
            }
            if let Some(capacity) = capacity.filter(|&c| p.len() > c) {
                let reason =
                    format!("{} prompt tokens exceed the key/value cache ({capacity})", p.len());
                return Err(EngineError::BadRequest { request: i, reason });
            }
        }
        let budget = options.max_step_tokens.max(1);
        // (prompt index, tokens done, cache, first pass time)
        let mut in_flight: Vec<(usize, usize, SequenceCache, Instant)> = Vec::new();
        let mut next_prompt = 0;
        while next_prompt < prompts.len() || !in_flight.is_empty() {
            // Admit prompts while the budget has room for their next chunk (and, paged, the
            // cache for the whole prompt).
            let mut planned: usize =
                in_flight.iter().map(|(i, done, ..)| prompts[*i].len() - done).sum();
            while next_prompt < prompts.len() && planned < budget {
                let len = prompts[next_prompt].len();
                let Some(cache) = self.transformer.new_cache(len, len) else {
                    if in_flight.is_empty() {
                        // Another caller holds the cache; its sequences will end.
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        continue;
                    }
                    break;
                };
                in_flight.push((next_prompt, 0, cache, Instant::now()));
                planned += prompts[next_prompt].len();
                next_prompt += 1;
            }
            let mut left = budget;
            let mut tokens: Vec<&[u32]> = Vec::new();
            let mut caches: Vec<&mut SequenceCache> = Vec::new();
            let mut fed: Vec<(usize, usize)> = Vec::new(); // (slot in in_flight, tokens)
            for (slot, (i, done, cache, _)) in in_flight.iter_mut().enumerate() {
                if left == 0 {
                    break;
                }
                let n = (prompts[*i].len() - *done).min(left);
                tokens.push(&prompts[*i][*done..*done + n]);
                caches.push(cache);
                fed.push((slot, n));
                left -= n;
            }
            let logits = self.transformer.forward(&tokens, &mut caches)?;
            drop(caches);
            let logits = logits.to_vec2::<f32>()?;
            for (&(slot, n), row) in fed.iter().zip(&logits) {
                let entry = &mut in_flight[slot];
                entry.1 += n;
                if entry.1 == prompts[entry.0].len() {
                    on_done(entry.0, row, entry.3.elapsed().as_secs_f64());
                }
            }
            in_flight.retain(|(i, done, ..)| *done < prompts[*i].len());
        }
        Ok(())
    }
}

/// The argmax and log-sum-exp of a logit row (in f64, so the probabilities of near-tied
/// candidates are not rounded together).
pub(crate) fn log_normalizer(logits: &[f32]) -> (u32, f64) {
    let (mut top, mut max) = (0usize, f32::NEG_INFINITY);
    for (i, &l) in logits.iter().enumerate() {
        if l > max {
            max = l;
            top = i;
        }
    }
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    (top as u32, max as f64 + sum.ln())
}

#[cfg(test)]
mod tests {
    use super::log_normalizer;

    #[test]
    fn log_normalizer_is_log_sum_exp() {
        let (top, z) = log_normalizer(&[1.0, 3.0, 2.0]);
        assert_eq!(top, 1);
        let expected = (1f64.exp() + 3f64.exp() + 2f64.exp()).ln();
        assert!((z - expected).abs() < 1e-9);
    }
}
