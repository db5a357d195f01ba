//! Tensor parallelism on the CPU: the model sharded over ranks (threads, in-process
//! all-reduce, paged cache) computes what the unsharded model computes.

mod common;

use common::{temp_dir, TinyLlama};
use herd_engine::{
    BatchOptions, EngineError, GenerationRequest, LoadOptions, Model, Placement, ScoringOptions,
};

const PROMPT: [u32; 9] = [1, 5, 17, 3, 40, 22, 9, 31, 12];

fn sharded(degree: usize, kv_cache_tokens: Option<usize>) -> Placement {
    Placement { tensor_parallel: degree, kv_cache_tokens, ..Placement::default() }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn tp2_logits_equal_tp1() {
    let dir = temp_dir("tp2-logits");
    TinyLlama { llama3_rope: true, seed: 13, ..Default::default() }.write(&dir);
    let spec = dir.to_str().unwrap();
    let one = Model::load(spec, &LoadOptions::default()).unwrap();
    let two = Model::load_on(spec, &LoadOptions::default(), &sharded(2, None)).unwrap();
    let prompts: Vec<Vec<u32>> = (2..=PROMPT.len()).map(|k| PROMPT[..k].to_vec()).collect();
    // A small budget splits prompts into chunks, so later chunks attend to cached blocks.
    for budget in [3, 512] {
        let options = ScoringOptions { max_step_tokens: budget };
        let expected = one.next_token_logits(&prompts, &options).unwrap();
        let got = two.next_token_logits(&prompts, &options).unwrap();
        for (p, (e, g)) in prompts.iter().zip(expected.iter().zip(&got)) {
            let diff = max_abs_diff(e, g);
            assert!(
                diff < 1e-4,
                "prompt of {} tokens, budget {budget}: max |diff| {diff}",
                p.len()
            );
        }
    }
}

#[test]
fn tp2_greedy_generation_equals_tp1_with_a_cache_that_admits_two_sequences_at_a_time() {
    let dir = temp_dir("tp2-generate");
    TinyLlama { seed: 21, ..Default::default() }.write(&dir);
    let spec = dir.to_str().unwrap();
    let one = Model::load(spec, &LoadOptions::default()).unwrap();
    // 48 positions: three blocks of 16; each request below needs 2 blocks at most, so
    // admission waits for a running sequence to end.
    let two = Model::load_on(spec, &LoadOptions::default(), &sharded(2, Some(48))).unwrap();
    let prompts: Vec<Vec<u32>> = vec![
        PROMPT.to_vec(),
        PROMPT[..3].to_vec(),
        PROMPT[2..].to_vec(),
        vec![1, 44],
        PROMPT[1..6].to_vec(),
    ];
    let requests = || -> Vec<GenerationRequest> {
        prompts
            .iter()
            .enumerate()
            .map(|(id, p)| GenerationRequest {
                id,
                prompt_tokens: p.clone(),
                max_new_tokens: 10,
                stop: vec![],
                ..Default::default()
            })
            .collect()
    };
    let options = BatchOptions { max_batch_size: 4, max_step_tokens: 6, ignore_eos: true };
    let expected = one.generate_all(requests(), &options).unwrap();
    let got = two.generate_all(requests(), &options).unwrap();
    for (e, g) in expected.iter().zip(&got) {
        assert_eq!(e.tokens, g.tokens, "request {}", e.id);
        assert_eq!(g.output_tokens, 10);
    }
}

#[test]
fn a_degree_that_does_not_divide_the_heads_is_rejected_before_loading() {
    let dir = temp_dir("tp3");
    TinyLlama::default().write(&dir);
    let spec = dir.to_str().unwrap();
    for (degree, what) in [(3, "attention heads"), (4, "key/value heads")] {
        let err =
            Model::load_on(spec, &LoadOptions::default(), &sharded(degree, None)).unwrap_err();
        match &err {
            EngineError::TensorParallel { degree: d, reason, .. } => {
                assert_eq!(*d, degree);
                assert!(reason.contains(what), "{reason}");
            }
            other => panic!("expected TensorParallel, got {other}"),
        }
    }
}

#[test]
fn a_request_longer_than_the_whole_cache_is_a_bad_request() {
    let dir = temp_dir("tp2-too-long");
    TinyLlama::default().write(&dir);
    let model =
        Model::load_on(dir.to_str().unwrap(), &LoadOptions::default(), &sharded(2, Some(32)))
            .unwrap();
    let request = GenerationRequest {
        id: 7,
        prompt_tokens: PROMPT.to_vec(),
        max_new_tokens: 30,
        stop: vec![],
        ..Default::default()
    };
    let err = model.generate_all(vec![request], &BatchOptions::default()).unwrap_err();
    match &err {
        EngineError::BadRequest { request, reason } => {
            assert_eq!(*request, 7);
            assert!(reason.contains("key/value cache"), "{reason}");
        }
        other => panic!("expected BadRequest, got {other}"),
    }
}
