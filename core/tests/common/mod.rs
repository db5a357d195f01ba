//! The alpaca_eval oracle files the core tests read (`shared/data/oracle`, see its README;
//! `HERD_SHARED_DIR` moves `shared`).

use std::path::PathBuf;

/// The 12 models of the oracle, in the sorted path order alpaca_eval's side read them.
#[allow(dead_code)] // not every test binary uses every item
pub const ORACLE_MODELS: [&str; 12] = [
    "FuseChat-Gemma-2-9B-Instruct",
    "NullModel",
    "alpaca-7b",
    "claude-2.1",
    "falcon-7b-instruct",
    "gemma-7b-it",
    "gpt-3.5-turbo-1106",
    "gpt4_1106_preview",
    "gpt4_gamed",
    "humpback-llama2-70b",
    "phi-2",
    "vicuna-13b",
];

/// `shared/data/oracle`.
pub fn oracle_dir() -> PathBuf {
    std::env::var_os("HERD_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("data/oracle")
}

/// `model`'s `weighted_alpaca_eval_gpt4_turbo` annotations file.
#[allow(dead_code)]
pub fn oracle_annotations(model: &str) -> PathBuf {
    oracle_dir()
        .join("results")
        .join(model)
        .join("weighted_alpaca_eval_gpt4_turbo/annotations.json.gz")
}
