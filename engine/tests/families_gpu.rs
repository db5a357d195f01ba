//! The families the paged path takes, on a GPU in bf16, against transformers in bf16 on the
//! same tiny checkpoints (`tests/fixtures/families/`; transformers' GPU outputs are in
//! `bench/gpu/results/2026-12-06-tiny-families/bf16_cuda_references.json`). Needs
//! `--features cuda` and a GPU; run on the device (bench/gpu/README.md).
#![cfg(feature = "cuda")]

use std::path::PathBuf;

use herd_engine::{DeviceSpec, LoadOptions, Model, Placement, ScoringOptions};
use serde_json::Value;

#[test]
fn paged_families_on_a_gpu_equal_transformers_bf16() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(
        root.join("../bench/gpu/results/2026-12-06-tiny-families/bf16_cuda_references.json"),
    )
    .unwrap();
    let references: Value = serde_json::from_str(&text).unwrap();
    let placement = Placement {
        device: DeviceSpec::Cuda(0),
        kv_cache_tokens: Some(4096),
        ..Placement::default()
    };
    for family in ["llama", "qwen2", "qwen3"] {
        let dir = root.join("tests/fixtures/families").join(family);
        let model = Model::load_on(&dir, &LoadOptions::default(), &placement).unwrap();
        let fixture: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let prompts: Vec<Vec<u32>> = serde_json::from_value(fixture["prompts"].clone()).unwrap();
        let got = model.next_token_logits(&prompts, &ScoringOptions::default()).unwrap();
        let bf16 = &references[family]["bf16_cuda"]["last_logits"];
        let f32_logits = &fixture["logits"];
        for (p, row) in got.iter().enumerate() {
            let want: Vec<f32> = serde_json::from_value(bf16[p].clone()).unwrap();
            let exact: Vec<f32> =
                serde_json::from_value(f32_logits[p][prompts[p].len() - 1].clone()).unwrap();
            let diff = |a: &[f32], b: &[f32]| {
                a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
            };
            let (herd_vs_bf16, herd_vs_f32, bf16_vs_f32) =
                (diff(row, &want), diff(row, &exact), diff(&want, &exact));
            eprintln!(
                "{family} prompt {p}: herd bf16 GPU vs transformers bf16 {herd_vs_bf16:.4}, vs f32 \
                 {herd_vs_f32:.4}; transformers bf16 vs f32 {bf16_vs_f32:.4}"
            );
            assert!(
                herd_vs_f32 <= 2.0 * bf16_vs_f32 + 0.02,
                "{family} prompt {p}: herd's bf16 logits are {herd_vs_f32} from f32, transformers' bf16 {bf16_vs_f32}"
            );
        }
    }
    for family in ["gemma2", "gemma3", "mistral", "phi3"] {
        let dir = root.join("tests/fixtures/families").join(family);
        let err =
            Model::load_on(&dir, &LoadOptions::default(), &placement).map(|_| ()).unwrap_err();
        eprintln!("{family}: {err}");
        assert!(err.to_string().contains(family));
    }
}
