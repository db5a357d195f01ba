//! Gemma 3 270M (base, Q4_K_M GGUF: Q4_K, Q6_K, Q5_0 and Q8_0 blocks, a SentencePiece
//! vocabulary of 262,144 pieces) against two implementations no one here wrote, on the same
//! file and the same token ids (the first 60 AlpacaEval instructions, BOS, no template):
//!
//! - Hugging Face transformers, which dequantises the GGUF to f32 (`transformers_greedy.json`,
//!   `scripts/make_gemma3_transformers_reference.py`): the model's exact arithmetic, what
//!   herd computes with dense weights. Greedy tokens must be equal except at its near-ties.
//! - llama.cpp (`llama_cpp_greedy.json`, `scripts/make_gemma3_reference.py`, llama-cpp-python
//!   0.3.36), which multiplies quantised weights by quantised activations, as herd's packed
//!   kernels do, each in its own way. Their greedy tokens part at small logit gaps (both
//!   round); the test asserts herd's quantised logits are no further from the exact model's
//!   than llama.cpp's, and reports where the two greedy continuations part.
//!
//! The model comes from `scripts/fetch-gemma3-270m.sh`, which checks its SHA-256; the
//! fixtures record the same.

mod common;

use herd_engine::{
    Architecture, BatchOptions, GenerationRequest, LoadOptions, Model, ScoringOptions, WeightFormat,
};
use serde::Deserialize;

/// A step where the reference's two best logits are closer than this is a near-tie: either
/// token is a faithful greedy choice, and the sequences are not compared past it.
const NEAR_TIE: f32 = 1e-3;

#[derive(Deserialize)]
struct Reference {
    model: ReferenceModel,
    examples: Vec<Example>,
}

#[derive(Deserialize)]
struct ReferenceModel {
    sha256: String,
}

#[derive(Deserialize)]
struct Example {
    index: usize,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    top2_gaps: Vec<f32>,
    first_step_top5: Option<Top5>,
}

#[derive(Deserialize)]
struct Top5 {
    ids: Vec<u32>,
    logits: Vec<f32>,
}

fn reference(name: &str) -> Reference {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sha256_hex(path: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn load(weight_format: WeightFormat) -> Model {
    let path = common::gemma3_gguf();
    let model = Model::load(&path, &LoadOptions { weight_format }).unwrap();
    assert_eq!(model.transformer.config().architecture, Architecture::Gemma3);
    model
}

/// herd's greedy continuations of the reference's prompts.
fn greedy(model: &Model, reference: &Reference) -> Vec<Vec<u32>> {
    let requests = reference
        .examples
        .iter()
        .enumerate()
        .map(|(id, e)| GenerationRequest {
            id,
            prompt_tokens: e.prompt_ids.clone(),
            max_new_tokens: e.greedy_ids.len().max(1),
            ..Default::default()
        })
        .collect();
    let mut outputs = vec![Vec::new(); reference.examples.len()];
    let options = BatchOptions { max_batch_size: 20, ..Default::default() };
    model.generate(requests, &options, |o| outputs[o.id] = o.tokens).unwrap();
    outputs
}

/// How herd's continuations compare with the reference's: the instructions identical to
/// the end, those that part at a near-tie of the reference (instruction, step, gap), and
/// those that part elsewhere (instruction, step, gap).
struct Agreement {
    whole: usize,
    near_ties: Vec<(usize, usize, f32)>,
    parted: Vec<(usize, usize, f32)>,
}

fn agreement(model: &Model, reference: &Reference, herd: &[Vec<u32>]) -> Agreement {
    let mut result = Agreement { whole: 0, near_ties: Vec::new(), parted: Vec::new() };
    let stops = model.tokenizer.end_of_generation_ids();
    for (example, herd) in reference.examples.iter().zip(herd) {
        let want = &example.greedy_ids;
        match herd.iter().zip(want).position(|(a, b)| a != b) {
            // herd may stop at an end-of-turn token where the reference stopped only at EOS.
            None if herd.len() == want.len() || herd.last().is_some_and(|t| stops.contains(t)) => {
                result.whole += 1
            }
            None => result.parted.push((example.index, herd.len(), f32::NAN)),
            Some(step) if example.top2_gaps[step] < NEAR_TIE => {
                result.near_ties.push((example.index, step, example.top2_gaps[step]))
            }
            Some(step) => result.parted.push((example.index, step, example.top2_gaps[step])),
        }
    }
    result
}

/// With dense weights herd computes the model as transformers does: the same greedy tokens
/// for every instruction, up to a near-tie of transformers' (reported).
#[test]
fn dense_greedy_tokens_equal_transformers_except_at_its_near_ties() {
    let reference = reference("transformers_greedy.json");
    let path = common::gemma3_gguf();
    assert_eq!(
        sha256_hex(&path),
        reference.model.sha256,
        "{} is not the file the references ran",
        path.display()
    );
    let model = load(WeightFormat::Dense);
    let herd = greedy(&model, &reference);
    let found = agreement(&model, &reference, &herd);
    eprintln!(
        "dense herd against transformers (f32): {} of {} instructions identical for 64 tokens; \
         near-ties (instruction, step, gap): {:?}",
        found.whole,
        reference.examples.len(),
        found.near_ties
    );
    assert!(
        found.parted.is_empty(),
        "parted from transformers (instruction, step, gap): {:?}",
        found.parted
    );
    assert!(found.whole >= 50, "only {} instructions agree on every token", found.whole);
}

/// The first step's top-5 logits: dense herd within 1e-3 of transformers for every prompt;
/// herd's quantised kernels no further from those exact values than llama.cpp's kernels.
#[test]
fn quantised_logits_are_as_close_to_the_exact_model_as_llama_cpps() {
    let exact = reference("transformers_greedy.json");
    let llama_cpp = reference("llama_cpp_greedy.json");
    let prompts: Vec<Vec<u32>> = exact.examples.iter().map(|e| e.prompt_ids.clone()).collect();
    let options = ScoringOptions::default();
    let dense = load(WeightFormat::Dense).next_token_logits(&prompts, &options).unwrap();
    let mut worst = 0f32;
    for (example, row) in exact.examples.iter().zip(&dense) {
        let top5 = example.first_step_top5.as_ref().unwrap();
        for (&id, &want) in top5.ids.iter().zip(&top5.logits) {
            worst = worst.max((row[id as usize] - want).abs());
        }
    }
    eprintln!("dense herd against transformers, first-step top-5 logits: largest |diff| {worst}");
    assert!(worst < 1e-3, "dense logits differ from transformers' by up to {worst}");

    let quantised = load(WeightFormat::Auto).next_token_logits(&prompts, &options).unwrap();
    let (mut herd_error, mut llama_cpp_error, mut n) = (0f32, 0f32, 0);
    for (((example, row), exact_row), theirs) in
        exact.examples.iter().zip(&quantised).zip(&dense).zip(&llama_cpp.examples)
    {
        let Some(theirs) = &theirs.first_step_top5 else { continue };
        assert_eq!(theirs.ids[0], example.first_step_top5.as_ref().unwrap().ids[0]);
        for (&id, &value) in theirs.ids.iter().zip(&theirs.logits) {
            herd_error += (row[id as usize] - exact_row[id as usize]).abs();
            llama_cpp_error += (value - exact_row[id as usize]).abs();
            n += 1;
        }
    }
    let (herd_error, llama_cpp_error) = (herd_error / n as f32, llama_cpp_error / n as f32);
    eprintln!(
        "first-step top-5 logits, mean |diff| from the exact model over {n}: herd's kernels \
         {herd_error:.4}, llama.cpp's {llama_cpp_error:.4}"
    );
    assert!(
        herd_error <= llama_cpp_error,
        "herd's quantised logits are further from the exact model ({herd_error}) than llama.cpp's ({llama_cpp_error})"
    );
}

/// herd's quantised greedy continuations beside llama.cpp's: reported, and checked to agree
/// at the first token wherever llama.cpp's first choice is clear.
#[test]
fn quantised_greedy_tokens_beside_llama_cpps() {
    let reference = reference("llama_cpp_greedy.json");
    let model = load(WeightFormat::Auto);
    let herd = greedy(&model, &reference);
    let found = agreement(&model, &reference, &herd);
    let mut steps: Vec<usize> = found.parted.iter().map(|p| p.1).collect();
    steps.sort_unstable();
    eprintln!(
        "herd's kernels against llama.cpp's: {} of {} identical for 64 tokens, {} part at \
         llama.cpp near-ties, {} elsewhere (median step {:?}, smallest gap there {:?})",
        found.whole,
        reference.examples.len(),
        found.near_ties.len(),
        found.parted.len(),
        steps.get(steps.len() / 2),
        found.parted.iter().map(|p| p.2).fold(f32::INFINITY, f32::min)
    );
    for (example, herd) in reference.examples.iter().zip(&herd) {
        if example.top2_gaps[0] > 0.5 {
            assert_eq!(
                herd[0], example.greedy_ids[0],
                "instruction {}: the first token",
                example.index
            );
        }
    }
}
