//! Generation with continuous batching.
//!
//! Every step is one forward pass over a packed batch: one token for each sequence that is
//! decoding, plus prompt chunks of newly admitted sequences up to a token budget. When a
//! sequence ends, the next waiting request is admitted and its prefill rides along with the
//! next step's decodes. Requests come from a [`RequestSource`]: a fixed list
//! ([`Model::generate`]) or a channel that keeps delivering while the engine runs (a server),
//! and what happens reaches the caller through [`GenerationEvents`] as it happens.
//!
//! Tokens are chosen greedily unless a request asks for sampling ([`Sampling`]); a sampled
//! sequence draws from its own seeded generator, so its tokens do not depend on which other
//! sequences shared its batches.

use std::collections::VecDeque;
use std::time::Instant;

use candle_core::{DType, Tensor};

use crate::error::{EngineError, Result};
use crate::kv_cache::SequenceCache;
use crate::llama::Llama;
use crate::model::Model;
use crate::scoring::log_normalizer;
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

/// How a sequence's next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 (or less): greedy, the most likely token. Otherwise the logits are divided by it
    /// before the softmax.
    pub temperature: f32,
    /// Nucleus sampling: draw among the most likely tokens whose probabilities (after the
    /// temperature) first add up to at least this; 1 keeps every token.
    pub top_p: f32,
    /// Seeds the sequence's own random generator.
    pub seed: u64,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling { temperature: 0.0, top_p: 1.0, seed: 0 };

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Self::GREEDY
    }
}

/// One sequence to generate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerationRequest {
    /// The caller's key for the request; echoed in the output.
    pub id: usize,
    pub prompt_tokens: Vec<u32>,
    pub max_new_tokens: usize,
    /// Generation stops before the first occurrence of any of these.
    pub stop: Vec<String>,
    pub sampling: Sampling,
    /// `Some(k)`: record each generated token's log-probability and the `k` most likely
    /// tokens at its position ([`TokenLogprob`]).
    pub top_logprobs: Option<usize>,
}

/// A generated token's log-probability under the model (the full-vocabulary softmax of the
/// raw logits, whatever the sampling), with the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// The `top_logprobs` most likely tokens, most likely first (ties: lower id first).
    pub top: Vec<(u32, f32)>,
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    pub id: usize,
    /// The answer, special tokens left out and cut before a stop string.
    pub text: String,
    /// Every token generated, including a final end-of-generation token.
    pub tokens: Vec<u32>,
    /// One per token of `tokens` when the request asked for log-probabilities.
    pub logprobs: Vec<TokenLogprob>,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub finish_reason: FinishReason,
    /// From admission to the last token.
    pub seconds: f64,
    /// From admission to the first generated token (prefill).
    pub first_token_seconds: f64,
}

/// A token as it is generated, for callers that stream.
#[derive(Debug)]
pub struct GeneratedToken<'a> {
    /// The request's id.
    pub id: usize,
    pub token: u32,
    /// Tokens generated so far by this sequence, this one included.
    pub generated: usize,
    /// The answer's text so far that no later token can change: a stop string that may
    /// still complete is held back, and so is the end-of-generation token. Every later
    /// value (and the output's text) starts with this one.
    pub settled_text: &'a str,
    /// Present when the request asked for log-probabilities.
    pub logprob: Option<&'a TokenLogprob>,
}

/// Where requests come from.
pub trait RequestSource {
    /// The next request, if one is there. `wait`: nothing is running, so block until one
    /// comes; `None` then means no request will ever come and the call returns.
    fn next_request(&mut self, wait: bool) -> Option<GenerationRequest>;
}

impl RequestSource for VecDeque<GenerationRequest> {
    fn next_request(&mut self, _wait: bool) -> Option<GenerationRequest> {
        self.pop_front()
    }
}

impl RequestSource for std::sync::mpsc::Receiver<GenerationRequest> {
    fn next_request(&mut self, wait: bool) -> Option<GenerationRequest> {
        if wait {
            self.recv().ok()
        } else {
            self.try_recv().ok()
        }
    }
}

/// What the scheduler tells its caller, as it happens.
pub trait GenerationEvents {
    /// A sequence generated a token. Returning `false` cancels the sequence: its cache is
    /// freed and no output follows.
    fn token(&mut self, _token: &GeneratedToken<'_>) -> bool {
        true
    }

    /// A sequence ended.
    fn finished(&mut self, output: GenerationOutput);

    /// A request was refused on arrival ([`Model::check_request`]'s error).
    fn refused(&mut self, _id: usize, _error: EngineError) {}

    /// Whether [`GeneratedToken::settled_text`] is read. Without stop strings the text is
    /// decoded as tokens come only for callers that say so (a server that streams); the
    /// others get the output's text at the end.
    fn streams_text(&self) -> bool {
        false
    }
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
    logprobs: Vec<TokenLogprob>,
    text: IncrementalText,
    random: SplitMix64,
    admitted: Instant,
    first_token_seconds: f64,
    finished: Option<(FinishReason, Option<usize>)>,
    cancelled: bool,
}

/// Collects outputs through a closure ([`Model::generate`]).
struct OnFinished<F>(F);

impl<F: FnMut(GenerationOutput)> GenerationEvents for OnFinished<F> {
    fn finished(&mut self, output: GenerationOutput) {
        (self.0)(output)
    }
}

impl Model {
    /// Why the engine cannot run `request`, if it cannot: an empty prompt, a token outside
    /// the vocabulary, more positions than the key/value cache holds, a bad sampling value.
    pub fn check_request(&self, request: &GenerationRequest) -> Result<()> {
        let refuse = |reason: String| Err(EngineError::BadRequest { request: request.id, reason });
        if request.prompt_tokens.is_empty() {
            return refuse("empty prompt".into());
        }
        let vocab = self.config().vocab_size;
        if let Some(&bad) = request.prompt_tokens.iter().find(|&&t| t as usize >= vocab) {
            return refuse(format!("token id {bad} is outside the vocabulary"));
        }
        if let Some(capacity) = self.transformer.kv_capacity() {
            let needed = request.prompt_tokens.len() + request.max_new_tokens;
            if needed > capacity {
                return refuse(format!("{needed} positions (prompt and max_new_tokens) exceed the key/value cache ({capacity})"));
            }
        }
        let sampling = &request.sampling;
        if !sampling.temperature.is_finite() {
            return refuse(format!("temperature {} is not a number", sampling.temperature));
        }
        if !(sampling.top_p > 0.0 && sampling.top_p <= 1.0) {
            return refuse(format!("top_p {} is not in (0, 1]", sampling.top_p));
        }
        if request.top_logprobs.is_some_and(|k| k > vocab) {
            return refuse(format!("top_logprobs exceeds the vocabulary ({vocab})"));
        }
        Ok(())
    }

    /// The most positions (prompt and generated tokens) one sequence can hold: the model's
    /// trained context, or the paged key/value cache where that is smaller.
    pub fn context_length(&self) -> usize {
        let trained = self.config().max_position_embeddings;
        self.transformer.kv_capacity().map_or(trained, |kv| kv.min(trained))
    }

    /// The share of the paged key/value cache in use, 0 to 1 (`None` without a paged cache).
    pub fn kv_cache_usage(&self) -> Option<f64> {
        self.transformer.kv_cache_usage()
    }

    /// Generates for every request and hands each output to `on_finished` as soon as it is
    /// done (in completion order). Every request is checked first: one the engine cannot run
    /// fails the call before any work.
    pub fn generate(
        &self,
        requests: Vec<GenerationRequest>,
        options: &BatchOptions,
        on_finished: impl FnMut(GenerationOutput),
    ) -> Result<GenerationStats> {
        for r in &requests {
            self.check_request(r)?;
        }
        let mut source: VecDeque<GenerationRequest> = requests.into();
        self.run_generation(&mut source, options, &mut OnFinished(on_finished))
    }

    /// Runs requests from `source` until it has no more and every sequence ended, telling
    /// `events` of each token, output and refused request.
    pub fn run_generation(
        &self,
        source: &mut impl RequestSource,
        options: &BatchOptions,
        events: &mut impl GenerationEvents,
    ) -> Result<GenerationStats> {
        let started = Instant::now();
        let max_batch = options.max_batch_size.max(1);
        let step_budget = options.max_step_tokens.max(max_batch + 1);
        let eog: &[u32] =
            if options.ignore_eos { &[] } else { self.tokenizer.end_of_generation_ids() };
        let mut stats = GenerationStats::default();
        let mut waiting: VecDeque<GenerationRequest> = VecDeque::new();
        let mut active: Vec<ActiveSequence> = Vec::with_capacity(max_batch);
        let mut exhausted = false;
        let track_text = events.streams_text();

        loop {
            while active.len() < max_batch {
                let Some(request) = waiting.front() else {
                    if exhausted {
                        break;
                    }
                    match source.next_request(active.is_empty()) {
                        Some(request) => match self.check_request(&request) {
                            Ok(()) => waiting.push_back(request),
                            Err(error) => events.refused(request.id, error),
                        },
                        None => {
                            exhausted = active.is_empty();
                            break;
                        }
                    }
                    continue;
                };
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
                stats.sequences += 1;
                stats.prompt_tokens += request.prompt_tokens.len();
                let mut seq = ActiveSequence {
                    text: IncrementalText::new(&request.stop, track_text),
                    random: SplitMix64(request.sampling.seed),
                    request,
                    cache,
                    prefilled: 0,
                    output: Vec::new(),
                    logprobs: Vec::new(),
                    admitted: Instant::now(),
                    first_token_seconds: 0.0,
                    finished: None,
                    cancelled: false,
                };
                if seq.request.max_new_tokens == 0 {
                    seq.finished = Some((FinishReason::Length, None));
                    events.finished(seq.into_output(&self.tokenizer)?);
                    continue;
                }
                active.push(seq);
            }
            if active.is_empty() {
                if exhausted && waiting.is_empty() {
                    break;
                }
                continue;
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
            let logits = forward_step(&self.transformer, &mut active, &fed)?;
            let greedy = Llama::argmax(&logits)?;
            stats.forward_passes += 1;

            for (row, (&(i, n), &greedy_token)) in fed.iter().zip(&greedy).enumerate() {
                let seq = &mut active[i];
                let prompt_len = seq.request.prompt_tokens.len();
                if seq.prefilled < prompt_len {
                    seq.prefilled += n;
                    if seq.prefilled < prompt_len {
                        continue; // more prompt to go; these logits are not a prediction
                    }
                    seq.first_token_seconds = seq.admitted.elapsed().as_secs_f64();
                }
                let token = seq.choose_token(&logits, row, greedy_token)?;
                seq.output.push(token);
                if eog.contains(&token) {
                    seq.finished = Some((FinishReason::Eos, None));
                } else {
                    let delta_from = seq.text.push(&self.tokenizer, &seq.output)?;
                    if let Some(at) = seq.text.find_stop(delta_from) {
                        seq.finished = Some((FinishReason::Stop, Some(at)));
                    } else if seq.output.len() >= seq.request.max_new_tokens {
                        seq.finished = Some((FinishReason::Length, None));
                    }
                }
                let event = GeneratedToken {
                    id: seq.request.id,
                    token,
                    generated: seq.output.len(),
                    settled_text: match seq.finished {
                        Some((FinishReason::Stop, Some(at))) => &seq.text.text[..at],
                        _ => seq.text.settled(),
                    },
                    logprob: seq.logprobs.last(),
                };
                if !events.token(&event) {
                    seq.cancelled = true;
                }
            }

            let mut i = 0;
            while i < active.len() {
                if active[i].cancelled {
                    let seq = active.remove(i);
                    stats.output_tokens += seq.output.len();
                } else if active[i].finished.is_some() {
                    let seq = active.remove(i);
                    stats.output_tokens += seq.output.len();
                    events.finished(seq.into_output(&self.tokenizer)?);
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

    /// The text of one token, as a client shows it (special tokens included).
    pub fn token_text(&self, token: u32) -> Result<String> {
        self.tokenizer.decode_with_special(&[token])
    }
}

/// One forward pass over the fed sequences; returns one row of logits per fed sequence.
fn forward_step(
    transformer: &Transformer,
    active: &mut [ActiveSequence],
    fed: &[(usize, usize)],
) -> Result<Tensor> {
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
    transformer.forward(&tokens, &mut caches)
}

impl ActiveSequence {
    /// The next token from row `row` of `logits` (`greedy` is its argmax), recording its
    /// log-probability when the request asked for it.
    fn choose_token(&mut self, logits: &Tensor, row: usize, greedy: u32) -> Result<u32> {
        let sampling = self.request.sampling;
        if sampling.is_greedy() && self.request.top_logprobs.is_none() {
            return Ok(greedy);
        }
        let row: Vec<f32> = logits.get(row)?.to_dtype(DType::F32)?.to_vec1()?;
        let token = if sampling.is_greedy() {
            greedy
        } else {
            sample(&row, sampling.temperature, sampling.top_p, self.random.next_unit())
        };
        if let Some(k) = self.request.top_logprobs {
            self.logprobs.push(token_logprob(&row, token, k));
        }
        Ok(token)
    }

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
            logprobs: self.logprobs,
            finish_reason,
            seconds: self.admitted.elapsed().as_secs_f64(),
            first_token_seconds: self.first_token_seconds,
        })
    }
}

/// The log-softmax value of `token` in `logits`, and the `k` most likely tokens with theirs
/// (in f64, so near-tied candidates are not rounded together).
fn token_logprob(logits: &[f32], token: u32, k: usize) -> TokenLogprob {
    let (_, log_z) = log_normalizer(logits);
    let logprob = |t: u32| (logits[t as usize] as f64 - log_z) as f32;
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    let by_rank =
        |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    let k = k.min(ids.len());
    if k > 0 && k < ids.len() {
        ids.select_nth_unstable_by(k - 1, by_rank);
    }
    ids.truncate(k);
    ids.sort_unstable_by(by_rank);
    TokenLogprob {
        token,
        logprob: logprob(token),
        top: ids.into_iter().map(|t| (t, logprob(t))).collect(),
    }
}

/// Draws a token from `softmax(logits / temperature)` restricted to its top-`top_p` nucleus,
/// with `unit` a uniform draw in [0, 1).
fn sample(logits: &[f32], temperature: f32, top_p: f32, unit: f64) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> =
        logits.iter().map(|&l| (((l - max) / temperature) as f64).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let mut mass = total;
    if top_p < 1.0 {
        // The nucleus: most likely first (ties: lower id), cut once the mass reaches top_p.
        order.sort_unstable_by(|a, b| {
            weights[*b as usize].total_cmp(&weights[*a as usize]).then(a.cmp(b))
        });
        let (mut kept, mut cumulative) = (0, 0.0);
        for &t in &order {
            cumulative += weights[t as usize];
            kept += 1;
            if cumulative >= top_p as f64 * total {
                break;
            }
        }
        order.truncate(kept);
        mass = cumulative;
    }
    let mut target = unit * mass;
    for &t in &order {
        target -= weights[t as usize];
        if target < 0.0 {
            return t;
        }
    }
    *order.last().expect("a vocabulary has tokens")
}

/// A small, fast, seedable generator (SplitMix64); each sampled sequence has its own.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
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
    /// Decode even without stop strings (the caller streams the text).
    track: bool,
}

impl IncrementalText {
    fn new(stops: &[String], track: bool) -> Self {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        let longest_stop = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        let text = String::new();
        Self { text, prefix_offset: 0, read_offset: 0, stops, longest_stop, track }
    }

    /// Takes in the newest token of `tokens`; returns the byte offset in `text` from which
    /// a stop string could newly appear.
    fn push(&mut self, tokenizer: &TokenCodec, tokens: &[u32]) -> Result<usize> {
        let before = self.text.len();
        if self.stops.is_empty() && !self.track {
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

    /// The text no later token can take back: all but the tail a stop string could still
    /// begin in.
    fn settled(&self) -> &str {
        let mut end = self.text.len().saturating_sub(self.longest_stop.saturating_sub(1));
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        &self.text[..end]
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
    use super::{earliest_stop, sample, token_logprob, SplitMix64};

    #[test]
    fn earliest_of_several_stop_strings_wins() {
        let stops = vec!["###".to_string(), "\n\n".to_string(), String::new()];
        assert_eq!(earliest_stop("abc\n\nde###", &stops, 0), Some(3));
        assert_eq!(earliest_stop("abc###\n\n", &stops, 0), Some(3));
        assert_eq!(earliest_stop("abc", &stops, 0), None);
        assert_eq!(earliest_stop("ab###", &stops, 3), None);
    }

    #[test]
    fn token_logprobs_are_the_log_softmax_and_the_top_k_in_order() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let z = (1f64.exp() + 2.0 * 3f64.exp() + 2f64.exp()).ln();
        let lp = token_logprob(&logits, 2, 3);
        assert!((lp.logprob as f64 - (2.0 - z)).abs() < 1e-6);
        let top: Vec<u32> = lp.top.iter().map(|(t, _)| *t).collect();
        assert_eq!(top, vec![1, 3, 2], "most likely first, ties to the lower id");
        assert!((lp.top[0].1 as f64 - (3.0 - z)).abs() < 1e-6);
        assert!(token_logprob(&logits, 0, 0).top.is_empty());
    }

    #[test]
    fn sampling_follows_the_tempered_distribution_and_the_nucleus() {
        let logits = [0.0f32, (3f32).ln(), f32::NEG_INFINITY, 0.0];
        // Probabilities 0.2, 0.6, 0, 0.2 at temperature 1.
        let mut random = SplitMix64(7);
        let mut counts = [0usize; 4];
        for _ in 0..20_000 {
            counts[sample(&logits, 1.0, 1.0, random.next_unit()) as usize] += 1;
        }
        assert_eq!(counts[2], 0, "a token of probability 0 is never drawn");
        let share = counts[1] as f64 / 20_000.0;
        assert!((share - 0.6).abs() < 0.02, "token 1 drawn {share} of the time, expected 0.6");
        // top_p 0.5: the nucleus is token 1 alone.
        for _ in 0..100 {
            assert_eq!(sample(&logits, 1.0, 0.5, random.next_unit()), 1);
        }
        // A low temperature sharpens towards the argmax.
        let cold = (0..1000).filter(|_| sample(&logits, 0.05, 1.0, random.next_unit()) == 1);
        assert_eq!(cold.count(), 1000);
    }

    #[test]
    fn the_generator_is_seeded_and_uniform() {
        let (mut a, mut b) = (SplitMix64(42), SplitMix64(42));
        let draws: Vec<f64> = (0..1000).map(|_| a.next_unit()).collect();
        assert!(draws.iter().all(|&u| (0.0..1.0).contains(&u)));
        assert_eq!(draws[..5], (0..5).map(|_| b.next_unit()).collect::<Vec<_>>()[..]);
        let mean = draws.iter().sum::<f64>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05);
    }
}
