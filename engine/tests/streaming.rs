//! The scheduler fed while it runs (a server's shape): requests arriving mid-generation,
//! tokens streamed as they come, cancellation, sampling and log-probabilities, on the
//! default model.

mod common;

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::OnceLock;

use common::smollm2_gguf;
use herd_engine::{
    BatchOptions, ChatMessage, EngineError, GeneratedToken, GenerationEvents, GenerationOutput,
    GenerationRequest, LoadOptions, Model, Sampling, ScoringOptions,
};

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        Model::load(smollm2_gguf(), &LoadOptions::default()).expect("default model loads")
    })
}

const INSTRUCTIONS: [&str; 4] = [
    "How did US states get their names?",
    "What is some cool music from the 1920s?",
    "How do I wrap a present neatly?",
    "Give three tips for staying healthy.",
];

fn request(id: usize, max_new_tokens: usize) -> GenerationRequest {
    let instruction = INSTRUCTIONS[id % INSTRUCTIONS.len()];
    GenerationRequest {
        id,
        prompt_tokens: model().chat_prompt(&[ChatMessage::new("user", instruction)]).unwrap(),
        max_new_tokens,
        ..Default::default()
    }
}

/// Records every event; cancels the sequences in `cancel` after `cancel_after` tokens.
#[derive(Default)]
struct Recorder {
    outputs: HashMap<usize, GenerationOutput>,
    settled: HashMap<usize, Vec<String>>,
    streamed_tokens: HashMap<usize, Vec<u32>>,
    refused: Vec<(usize, String)>,
    cancel: Vec<usize>,
    cancel_after: usize,
    /// Requests sent to the scheduler once the first token of any sequence has come.
    late: Vec<GenerationRequest>,
    sender: Option<mpsc::Sender<GenerationRequest>>,
}

impl GenerationEvents for Recorder {
    fn streams_text(&self) -> bool {
        true
    }

    fn token(&mut self, token: &GeneratedToken<'_>) -> bool {
        self.settled.entry(token.id).or_default().push(token.settled_text.to_string());
        self.streamed_tokens.entry(token.id).or_default().push(token.token);
        if let Some(sender) = &self.sender {
            for late in self.late.drain(..) {
                sender.send(late).unwrap();
            }
        }
        if token.generated == 1 && self.late.is_empty() {
            self.sender = None; // no more requests: the source ends once it drains
        }
        !(self.cancel.contains(&token.id) && token.generated >= self.cancel_after)
    }

    fn finished(&mut self, output: GenerationOutput) {
        self.outputs.insert(output.id, output);
    }

    fn refused(&mut self, id: usize, error: EngineError) {
        self.refused.push((id, error.to_string()));
    }
}

fn options() -> BatchOptions {
    BatchOptions { max_batch_size: 4, max_step_tokens: 64, ..Default::default() }
}

#[test]
fn requests_arriving_while_the_engine_runs_get_the_answers_of_a_fixed_batch() {
    let expected = model().generate_all((0..4).map(|i| request(i, 24)).collect(), &options());
    let expected = expected.unwrap();

    let (sender, mut receiver) = mpsc::channel();
    sender.send(request(0, 24)).unwrap();
    let mut recorder = Recorder {
        late: (1..4).map(|i| request(i, 24)).collect(),
        sender: Some(sender),
        ..Default::default()
    };
    let stats = model().run_generation(&mut receiver, &options(), &mut recorder).unwrap();
    assert_eq!(stats.sequences, 4);
    for want in &expected {
        let got = &recorder.outputs[&want.id];
        assert_eq!(got.tokens, want.tokens, "request {}", want.id);
        assert_eq!(got.text, want.text);
        assert_eq!(recorder.streamed_tokens[&want.id], want.tokens, "streamed = output tokens");
        // The settled text only grows, and each value starts the final text.
        let settled = &recorder.settled[&want.id];
        for pair in settled.windows(2) {
            assert!(pair[1].starts_with(pair[0].as_str()));
        }
        assert!(got.text.starts_with(settled.last().unwrap().as_str()));
    }
}

#[test]
fn a_stop_string_is_never_streamed() {
    let baseline = model().generate_all(vec![request(0, 40)], &options()).unwrap();
    let text = &baseline[0].text;
    // A stop string made of text the answer reaches mid-way, so it spans tokens.
    let cut = text.char_indices().nth(text.chars().count() / 2).unwrap().0;
    let stop: String = text[cut..].chars().take(6).collect();
    let mut with_stop = request(0, 40);
    with_stop.stop = vec![stop.clone()];
    let mut source = std::collections::VecDeque::from(vec![with_stop]);
    let mut recorder = Recorder::default();
    model().run_generation(&mut source, &options(), &mut recorder).unwrap();
    let output = &recorder.outputs[&0];
    assert_eq!(output.text, text[..text.find(&stop).unwrap()]);
    for settled in &recorder.settled[&0] {
        assert!(!settled.contains(&stop), "{settled:?} streams the stop string {stop:?}");
        assert!(output.text.starts_with(settled.as_str()));
    }
}

#[test]
fn a_cancelled_sequence_ends_without_output_and_the_others_are_unchanged() {
    let expected = model().generate_all((0..3).map(|i| request(i, 16)).collect(), &options());
    let expected = expected.unwrap();
    let mut source: std::collections::VecDeque<_> = (0..3).map(|i| request(i, 16)).collect();
    let mut recorder = Recorder { cancel: vec![1], cancel_after: 3, ..Default::default() };
    model().run_generation(&mut source, &options(), &mut recorder).unwrap();
    assert!(!recorder.outputs.contains_key(&1));
    assert_eq!(recorder.streamed_tokens[&1].len(), 3);
    assert_eq!(recorder.outputs[&0].tokens, expected[0].tokens);
    assert_eq!(recorder.outputs[&2].tokens, expected[2].tokens);
}

#[test]
fn a_bad_request_is_refused_alone() {
    let mut empty = request(7, 4);
    empty.prompt_tokens.clear();
    let mut bad_top_p = request(8, 4);
    bad_top_p.sampling = Sampling { temperature: 1.0, top_p: 0.0, seed: 1 };
    let mut source = std::collections::VecDeque::from(vec![empty, request(0, 4), bad_top_p]);
    let mut recorder = Recorder::default();
    model().run_generation(&mut source, &options(), &mut recorder).unwrap();
    assert_eq!(recorder.outputs.len(), 1);
    let refused: Vec<usize> = recorder.refused.iter().map(|(id, _)| *id).collect();
    assert_eq!(refused, vec![7, 8]);
    assert!(recorder.refused[0].1.contains("empty prompt"));
    assert!(recorder.refused[1].1.contains("top_p"), "{}", recorder.refused[1].1);
}

#[test]
fn greedy_logprobs_rank_the_chosen_token_first_and_match_prefill_scoring() {
    let mut asked = request(0, 8);
    asked.top_logprobs = Some(5);
    let output = model().generate_all(vec![asked.clone()], &options()).unwrap().remove(0);
    assert_eq!(output.logprobs.len(), output.tokens.len());
    for (lp, &token) in output.logprobs.iter().zip(&output.tokens) {
        assert_eq!(lp.token, token);
        assert_eq!(lp.top.len(), 5);
        assert_eq!(lp.top[0].0, token, "greedy picks the most likely token");
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(lp.logprob <= 0.0);
    }
    // The first token's log-probability is the prompt's next-token score.
    let scores = model()
        .next_token_logprobs(
            &[asked.prompt_tokens],
            &[output.tokens[0]],
            &ScoringOptions::default(),
        )
        .unwrap();
    let scored = scores[0].candidate_logprobs[0];
    assert!(
        (scored - output.logprobs[0].logprob).abs() < 1e-4,
        "{scored} vs {}",
        output.logprobs[0].logprob
    );
}

#[test]
fn sampling_is_reproducible_by_seed_whatever_the_batch() {
    let sampled = |id: usize, seed: u64| GenerationRequest {
        sampling: Sampling { temperature: 0.9, top_p: 0.95, seed },
        ..request(id, 20)
    };
    let alone = model().generate_all(vec![sampled(0, 11)], &options()).unwrap();
    let batched = model()
        .generate_all(vec![request(1, 20), sampled(0, 11), sampled(2, 5)], &options())
        .unwrap();
    assert_eq!(alone[0].tokens, batched[1].tokens, "same seed, same tokens, other batch");
    let seeds: Vec<Vec<u32>> = (0..4)
        .map(|seed| {
            model().generate_all(vec![sampled(0, seed)], &options()).unwrap()[0].tokens.clone()
        })
        .collect();
    assert!(
        seeds.iter().any(|t| *t != seeds[0]),
        "four seeds at temperature 0.9 all gave the same 20 tokens"
    );
    let greedy = model().generate_all(vec![request(0, 20)], &options()).unwrap();
    assert!(seeds.iter().any(|t| *t != greedy[0].tokens), "sampling differs from greedy");
}
