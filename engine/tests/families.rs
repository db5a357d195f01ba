//! Every model family herd runs, against Hugging Face transformers on the same checkpoints.
//!
//! `tests/fixtures/families/<family>/` holds a tiny random checkpoint of each family and
//! transformers' own outputs on it (`reference.json`), both written by
//! `scripts/make_tiny_checkpoints.py` (transformers, f32, eager attention). Each family has its
//! particulars switched on and exercised by the prompts: sliding windows narrower than the
//! prompts, soft-capping that bites, Q/K norms, Gemma's `1 + w` norms with weights away
//! from neutral, partial and scaled rotary embeddings, fused projections.

use std::path::PathBuf;

use herd_engine::{LoadOptions, Model, Placement, ScoringOptions};
use serde::Deserialize;

const FAMILIES: [&str; 7] = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"];

/// Largest |herd − transformers| over a position's logits, relative to the largest |logit|.
const LOGIT_TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Reference {
    family: String,
    prompts: Vec<Vec<u32>>,
    /// Per prompt, per position: the logits after that position.
    logits: Vec<Vec<Vec<f32>>>,
    greedy: Vec<Greedy>,
    suppressed_token_ids: Vec<u32>,
    versions: serde_json::Value,
}

#[derive(Deserialize)]
struct Greedy {
    /// transformers' greedy search with a full pass per step (no cache to be wrong).
    no_cache_tokens: Vec<u32>,
    top2_gap: Vec<f32>,
}

fn fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families").join(family)
}

fn reference(family: &str) -> Reference {
    let path = fixture(family).join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(family: &str, placement: &Placement) -> Model {
    Model::load_on(fixture(family), &LoadOptions::default(), placement)
        .unwrap_or_else(|e| panic!("{family}: {e}"))
}

/// Relative difference of two logit rows.
fn relative_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
}

fn argmax_except(logits: &[f32], suppressed: &[u32]) -> u32 {
    let mut best = (f32::NEG_INFINITY, 0u32);
    for (i, &x) in logits.iter().enumerate() {
        if !suppressed.contains(&(i as u32)) && x > best.0 {
            best = (x, i as u32);
        }
    }
    best.1
}

/// herd's logits after every position of every prompt (each prefix scored as its own
/// request, prefilled in chunks of `chunk` tokens) against transformers'; returns the
/// largest relative difference.
fn worst_logit_diff(model: &Model, reference: &Reference, chunk: usize) -> f32 {
    let mut worst = 0f32;
    for (prompt, want) in reference.prompts.iter().zip(&reference.logits) {
        let prefixes: Vec<Vec<u32>> = (1..=prompt.len()).map(|n| prompt[..n].to_vec()).collect();
        let got = model
            .next_token_logits(&prefixes, &ScoringOptions { max_step_tokens: chunk })
            .unwrap_or_else(|e| panic!("{}: {e}", reference.family));
        for (position, (g, w)) in got.iter().zip(want).enumerate() {
            let diff = relative_diff(g, w);
            assert!(
                diff <= LOGIT_TOLERANCE,
                "{} (transformers {}): prompt of {} tokens, position {position}: logits differ by \
                 {diff:e} of their largest value",
                reference.family,
                reference.versions,
                prompt.len()
            );
            worst = worst.max(diff);
        }
    }
    worst
}

#[test]
fn logits_at_every_position_equal_transformers() {
    for family in FAMILIES {
        let reference = reference(family);
        let model = load(family, &Placement::default());
        assert_eq!(model.transformer.config().architecture.as_str(), family);
        let whole = worst_logit_diff(&model, &reference, 512);
        let chunked = worst_logit_diff(&model, &reference, 7);
        eprintln!("{family}: worst relative logit difference {whole:e} (chunks of 7: {chunked:e})");
    }
}

/// Greedy decoding through the key/value cache, one token per pass (the decode kernel, with
/// windows sliding as the sequence grows), equals transformers' greedy tokens.
#[test]
fn greedy_tokens_through_the_cache_equal_transformers() {
    for family in FAMILIES {
        let reference = reference(family);
        let model = load(family, &Placement::default());
        let transformer = &model.transformer;
        for (prompt, want) in reference.prompts.iter().zip(&reference.greedy) {
            let steps = want.no_cache_tokens.len();
            let mut cache =
                transformer.new_cache(prompt.len() + steps, prompt.len() + steps).unwrap();
            let mut logits = transformer.forward(&[prompt], &mut [&mut cache]).unwrap();
            let mut tokens = Vec::with_capacity(steps);
            for _ in 0..steps {
                let row: Vec<f32> = logits.squeeze(0).unwrap().to_vec1().unwrap();
                let next = argmax_except(&row, &reference.suppressed_token_ids);
                tokens.push(next);
                logits = transformer.forward(&[&[next]], &mut [&mut cache]).unwrap();
            }
            if let Some(step) = tokens.iter().zip(&want.no_cache_tokens).position(|(a, b)| a != b) {
                panic!(
                    "{family}: prompt of {} tokens: greedy token {step} is {} where transformers \
                     chose {} (its top-2 gap there {}); herd {tokens:?}, transformers {:?}",
                    prompt.len(),
                    tokens[step],
                    want.no_cache_tokens[step],
                    want.top2_gap[step],
                    want.no_cache_tokens
                );
            }
        }
    }
}

/// The families the paged path takes (no windows, soft-caps or partial rotation), sharded
/// over two ranks on the CPU: the same logits as transformers.
#[test]
fn tensor_parallel_ranks_equal_transformers() {
    let sharded = Placement { tensor_parallel: 2, ..Placement::default() };
    for family in ["llama", "qwen2", "qwen3"] {
        let reference = reference(family);
        let model = load(family, &sharded);
        let worst = worst_logit_diff(&model, &reference, 5);
        eprintln!("{family} over 2 ranks: worst relative logit difference {worst:e}");
    }
}

/// What the paged path cannot do yet is refused at load, naming the family and the feature.
#[test]
fn the_paged_path_refuses_what_it_cannot_do_naming_the_family() {
    let sharded = Placement { tensor_parallel: 2, ..Placement::default() };
    for (family, what) in [
        ("mistral", "sliding-window attention"),
        ("gemma2", "soft-capped attention"),
        ("gemma3", "sliding-window attention"),
        ("phi3", "rotary embeddings over 8 of 16"),
    ] {
        let err = Model::load_on(fixture(family), &LoadOptions::default(), &sharded)
            .map(|_| ())
            .expect_err(family)
            .to_string();
        assert!(err.contains(family) && err.contains(what), "{family}: {err}");
    }
}
