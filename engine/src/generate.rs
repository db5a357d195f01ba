//! Greedy generation with continuous batching.
//!
//! Every step is one forward pass over a packed batch: one token for each sequence that is
//! decoding, plus prompt chunks of newly admitted sequences up to a token budget. When a
//! sequence ends, the next waiting request is admitted and its prefill rides along with the
//! next step's decodes.

use std::collections::VecDeque;
use std::time::Instant;

use crate::error::{EngineError, Result};
use crate::kv_cache::SequenceCache;
use crate::llama::Llama;
use crate::model::Model;
use crate::token_codec::TokenCodec;
use crate::transformer::Transformer;

/// Why generation of one sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// The model produced an end-of-generation token (the last of the output's tokens).
    Eos,
    /// A stop string appeared; the text is cut before it.
    Stop,
    /// `max_new_tokens` were generated.
    Length,
}

/// One sequence to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// The caller's key for the request; echoed in the output.
    pub id: usize,
    pub prompt_tokens: Vec<u32>,
    pub max_new_tokens: usize,
    /// Generation stops before the first occurrence of any of these.
    pub stop: Vec<String>,
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    pub id: usize,
    /// The answer, special tokens left out and cut before a stop string.
    pub text: String,
    /// Every token generated, including a final end-of-generation token.
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub finish_reason: FinishReason,
    /// From admission to the last token.
    pub seconds: f64,
    /// From admission to the first generated token (prefill).
    pub first_token_seconds: f64,
}

/// Scheduling limits of [`Model::generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOptions {
    /// Sequences in flight at once.
    pub max_batch_size: usize,
    /// New tokens per forward pass: decode tokens plus prompt chunks.
    pub max_step_tokens: usize,
    /// Keep generating past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self { max_batch_size: 16, max_step_tokens: 512, ignore_eos: false }
    }
}

/// Totals of one [`Model::generate`] call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationStats {
    pub sequences: usize,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub forward_passes: usize,
    pub seconds: f64,
}

struct ActiveSequence {
    request: GenerationRequest,
    cache: SequenceCache,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    output: Vec<u32>,
    text: IncrementalText,
    admitted: Instant,
    first_token_seconds: f64,
    finished: Option<(FinishReason, Option<usize>)>,
}

impl Model {
    /// Generates greedily for every request and hands each output to `on_finished` as soon
    /// as it is done (in completion order).
    pub fn generate(
        &self,
        requests: Vec<GenerationRequest>,
        options: &BatchOptions,
        mut on_finished: impl FnMut(GenerationOutput),
    ) -> Result<GenerationStats> {
        for r in &requests {
            if r.prompt_tokens.is_empty() {
                return Err(EngineError::BadRequest {
                    request: r.id,
                    reason: "empty prompt".into(),
                });
            }
            if let Some(&bad) =
                r.prompt_tokens.iter().find(|&&t| t as usize >= self.config().vocab_size)
            {
                return Err(EngineError::BadRequest {
                    request: r.id,
                    reason: format!("token id {bad} is outside the vocabulary"),
                });
            }
            if let Some(capacity) = self.transformer.kv_capacity() {
                let needed = r.prompt_tokens.len() + r.max_new_tokens;
                if needed > capacity {
                    let reason = format!("{needed} positions (prompt and max_new_tokens) exceed the key/value cache ({capacity})");
                    return Err(EngineError::BadRequest { request: r.id, reason });
                }
            }
        }
        let started = Instant::now();
        let max_batch = options.max_batch_size.max(1);
        let step_budget = options.max_step_tokens.max(max_batch + 1);
        let eog: &[u32] =
            if options.ignore_eos { &[] } else { self.tokenizer.end_of_generation_ids() };
        let mut stats = GenerationStats { sequences: requests.len(), ..Default::default() };
        let mut waiting: VecDeque<GenerationRequest> = requests.into();
        let mut active: Vec<ActiveSequence> = Vec::with_capacity(max_batch);

        loop {
            while active.len() < max_batch {
                let Some(request) = waiting.front() else { break };
                // Paged caches reserve the whole length now; while the cache is full the
                // request waits for running sequences to end.
                let prompt = request.prompt_tokens.len();
                let Some(cache) = self.transformer.new_cache(
                    prompt + request.max_new_tokens,
                    prompt + request.max_new_tokens.min(512),
                ) else {
                    if active.is_empty() {
                        // Another caller holds the cache; its sequences will end.
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        continue;
                    }
                    break;
                };
                let request = waiting.pop_front().expect("peeked above");
                stats.prompt_tokens += request.prompt_tokens.len();
                let mut seq = ActiveSequence {
                    text: IncrementalText::new(&request.stop),
                    request,
                    cache,
                    prefilled: 0,
                    output: Vec::new(),
                    admitted: Instant::now(),
                    first_token_seconds: 0.0,
                    finished: None,
                };
                if seq.request.max_new_tokens == 0 {
                    seq.finished = Some((FinishReason::Length, None));
                    on_finished(seq.into_output(&self.tokenizer)?);
                    continue;
                }
                active.push(seq);
            }
            if active.is_empty() {
                break;
            }

            // Decoding sequences first (one token each), then prompt chunks in admission order.
            let mut budget = step_budget;
            let mut fed: Vec<(usize, usize)> = Vec::with_capacity(active.len()); // (index, tokens)
            for (i, seq) in active.iter().enumerate() {
                if seq.prefilled == seq.request.prompt_tokens.len() {
                    fed.push((i, 1));
                    budget -= 1;
                }
            }
            for (i, seq) in active.iter().enumerate() {
                let remaining = seq.request.prompt_tokens.len() - seq.prefilled;
                if remaining > 0 && budget > 0 {
                    let n = remaining.min(budget);
                    fed.push((i, n));
                    budget -= n;
                }
            }
            fed.sort_unstable();
            let next = forward_step(&self.transformer, &mut active, &fed)?;
            stats.forward_passes += 1;

            for (&(i, n), &token) in fed.iter().zip(&next) {
                let seq = &mut active[i];
                let prompt_len = seq.request.prompt_tokens.len();
                if seq.prefilled < prompt_len {
                    seq.prefilled += n;
                    if seq.prefilled < prompt_len {
                        continue; // more prompt to go; these logits are not a prediction
                    }
                    seq.first_token_seconds = seq.admitted.elapsed().as_secs_f64();
                }
                seq.output.push(token);
                if eog.contains(&token) {
                    seq.finished = Some((FinishReason::Eos, None));
                    continue;
                }
                let delta_from = seq.text.push(&self.tokenizer, &seq.output)?;
                if let Some(at) = seq.text.find_stop(delta_from) {
                    seq.finished = Some((FinishReason::Stop, Some(at)));
                } else if seq.output.len() >= seq.request.max_new_tokens {
                    seq.finished = Some((FinishReason::Length, None));
                }
            }

            let mut i = 0;
            while i < active.len() {
                if active[i].finished.is_some() {
                    let seq = active.remove(i);
                    stats.output_tokens += seq.output.len();
                    on_finished(seq.into_output(&self.tokenizer)?);
                } else {
                    i += 1;
                }
            }
        }
        stats.seconds = started.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// [`Model::generate`], outputs returned in request order.
    pub fn generate_all(
        &self,
        requests: Vec<GenerationRequest>,
        options: &BatchOptions,
    ) -> Result<Vec<GenerationOutput>> {
        let order: Vec<usize> = requests.iter().map(|r| r.id).collect();
        let mut outputs = Vec::with_capacity(requests.len());
        self.generate(requests, options, |o| outputs.push(o))?;
        let mut by_order = Vec::with_capacity(outputs.len());
        for id in order {
            if let Some(pos) = outputs.iter().position(|o: &GenerationOutput| o.id == id) {
                by_order.push(outputs.swap_remove(pos));
            }
        }
        Ok(by_order)
    }
}

/// One forward pass over the fed sequences; returns the greedy next token of each.
fn forward_step(
    transformer: &Transformer,
    active: &mut [ActiveSequence],
    fed: &[(usize, usize)],
) -> Result<Vec<u32>> {
    let mut tokens: Vec<&[u32]> = Vec::with_capacity(fed.len());
    let mut caches: Vec<&mut SequenceCache> = Vec::with_capacity(fed.len());
    let mut fed_iter = fed.iter().peekable();
    for (i, seq) in active.iter_mut().enumerate() {
        let Some(&&(j, n)) = fed_iter.peek() else { break };
        if i != j {
            continue;
        }
        fed_iter.next();
        let ActiveSequence { request, cache, prefilled, output, .. } = seq;
        let prompt = &request.prompt_tokens;
        tokens.push(if *prefilled < prompt.len() {
            &prompt[*prefilled..*prefilled + n]
        } else {
            std::slice::from_ref(output.last().expect("a decoding sequence has a token"))
        });
        caches.push(cache);
    }
    let logits = transformer.forward(&tokens, &mut caches)?;
    Llama::argmax(&logits)
}

impl ActiveSequence {
    fn into_output(self, tokenizer: &TokenCodec) -> Result<GenerationOutput> {
        let (finish_reason, stop_at) = self.finished.unwrap_or((FinishReason::Length, None));
        let text = match finish_reason {
            FinishReason::Eos => tokenizer.decode(&self.output[..self.output.len() - 1])?,
            FinishReason::Length => tokenizer.decode(&self.output)?,
            FinishReason::Stop => {
                // The full decoding is authoritative; cut it at the earliest stop string.
                let full = tokenizer.decode(&self.output)?;
                match earliest_stop(&full, &self.request.stop, 0) {
                    Some(at) => full[..at].to_string(),
                    None => self.text.text[..stop_at.unwrap_or(self.text.text.len())].to_string(),
                }
            }
        };
        Ok(GenerationOutput {
            id: self.request.id,
            text,
            prompt_tokens: self.request.prompt_tokens.len(),
            output_tokens: self.output.len(),
            tokens: self.output,
            finish_reason,
            seconds: self.admitted.elapsed().as_secs_f64(),
            first_token_seconds: self.first_token_seconds,
        })
    }
}

/// Detokenizes a growing token list a few tokens at a time (decoding a window that starts
/// a little before the new token, so byte-level pieces and leading spaces come out right)
/// and looks for stop strings, including ones spanning token boundaries.
#[derive(Debug)]
struct IncrementalText {
    text: String,
    prefix_offset: usize,
    read_offset: usize,
    stops: Vec<String>,
    longest_stop: usize,
}

impl IncrementalText {
    fn new(stops: &[String]) -> Self {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        let longest_stop = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        Self { text: String::new(), prefix_offset: 0, read_offset: 0, stops, longest_stop }
    }

    /// Takes in the newest token of `tokens`; returns the byte offset in `text` from which
    /// a stop string could newly appear.
    fn push(&mut self, tokenizer: &TokenCodec, tokens: &[u32]) -> Result<usize> {
        let before = self.text.len();
        if self.stops.is_empty() {
            return Ok(before);
        }
        let prefix = tokenizer.decode(&tokens[self.prefix_offset..self.read_offset])?;
        let window = tokenizer.decode(&tokens[self.prefix_offset..])?;
        if window.len() > prefix.len()
            && !window.ends_with('\u{FFFD}')
            && window.is_char_boundary(prefix.len())
        {
            self.text.push_str(&window[prefix.len()..]);
            self.prefix_offset = self.read_offset;
            self.read_offset = tokens.len();
        }
        let mut from = before.saturating_sub(self.longest_stop.saturating_sub(1));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        Ok(from)
    }

    fn find_stop(&self, from: usize) -> Option<usize> {
        earliest_stop(&self.text, &self.stops, from)
    }
}

fn earliest_stop(text: &str, stops: &[String], from: usize) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text[from..].find(s.as_str()).map(|p| p + from))
        .min()
}

#[cfg(test)]
mod tests {
    use super::earliest_stop;

    #[test]
    fn earliest_of_several_stop_strings_wins() {
        let stops = vec!["###".to_string(), "\n\n".to_string(), String::new()];
        assert_eq!(earliest_stop("abc\n\nde###", &stops, 0), Some(3));
        assert_eq!(earliest_stop("abc###\n\n", &stops, 0), Some(3));
        assert_eq!(earliest_stop("abc", &stops, 0), None);
        assert_eq!(earliest_stop("ab###", &stops, 3), None);
    }
}
