//! Verdicts by content, in the store under `cache/judgements/<hash>.json`, so they are
//! shared by every run and every worker using that store.
//!
//! The key is the SHA-256 of: the instruction; the two outputs in the order the judge sees
//! them (alpaca_eval's swap applied); the judge model's identity ([`model_identity`]: which
//! file, which tokenizer and chat template); the prompt template's text; the mode;
//! `max_new_tokens` (ranking mode only: a logprob verdict does not depend on it) and the
//! context limit. The outputs enter the key before they are cut to fit the context: the cut
//! is a function of the outputs, the context limit and the judge's tokenizer, all of which
//! are in the key, so the key names exactly the text the judge reads — and a cache hit needs
//! no tokenizer, so a fully cached run never loads the judge model.
//!
//! Only parsed verdicts are cached: an unparsable ranking or a logprob reading without a
//! verdict is judged again next time (alpaca_eval's cache keeps failures: its issues #340,
//! #419).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use herd_core::jobs::{JudgeJob, JudgeMode, JudgeResult};
use herd_core::judge::prompt::ALPACA_EVAL_FN_TEMPLATE;
use herd_core::judge::SwapDecision;
use herd_engine::ModelSource;
use herd_runtime::{model_files, ModelUnavailable};
use herd_store::{keys, ResultStore, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bump when the meaning of a cached verdict changes (the engine's scoring, the key's parts).
const KEY_VERSION: u32 = 1;

/// How much of a GGUF file is hashed: its header (metadata, tokenizer, chat template) fits.
const GGUF_HASHED_BYTES: u64 = 16 << 20;

/// A verdict's content hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JudgeCacheKey {
    pub hash: String,
}

#[derive(Serialize)]
struct KeyParts<'a> {
    version: u32,
    instruction: &'a str,
    shown_output_1: &'a str,
    shown_output_2: &'a str,
    judge_model: &'a str,
    prompt_template: &'a str,
    mode: JudgeMode,
    max_new_tokens: Option<usize>,
    max_context_tokens: usize,
}

impl JudgeCacheKey {
    /// The key of `job` judged by the model whose identity is `judge_model`.
    pub fn new(job: &JudgeJob, judge_model: &str) -> Self {
        let swap = SwapDecision::for_instruction(&job.instruction);
        let (shown_1, shown_2) =
            swap.order(job.reference_output.as_str(), job.model_output.as_str());
        let parts = KeyParts {
            version: KEY_VERSION,
            instruction: &job.instruction,
            shown_output_1: shown_1,
            shown_output_2: shown_2,
            judge_model,
            prompt_template: ALPACA_EVAL_FN_TEMPLATE,
            mode: job.judge.mode,
            max_new_tokens: (job.judge.mode == JudgeMode::Ranking)
                .then_some(job.judge.max_new_tokens),
            max_context_tokens: job.judge.max_context_tokens,
        };
        let json = serde_json::to_vec(&parts).expect("key parts serialise");
        Self { hash: hex(&Sha256::digest(&json)) }
    }

    pub fn store_key(&self) -> String {
        keys::judge_cache(&self.hash)
    }
}

/// A cached verdict: what a [`JudgeResult`] needs besides the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedJudgement {
    /// In alpaca_eval's orientation (1.0 = reference wins, 2.0 = model wins).
    pub preference: f64,
    pub raw_completion: String,
    pub is_switched: bool,
    pub truncated: bool,
    pub prompt_tokens: usize,
    /// How long the judge took when it was computed.
    pub seconds: f64,
    /// For people reading the cache: the judge's identity and mode.
    pub judge_model: String,
    pub mode: JudgeMode,
}

impl CachedJudgement {
    pub fn from_result(result: &JudgeResult, judge_model: &str, mode: JudgeMode) -> Option<Self> {
        Some(Self {
            preference: result.preference?,
            raw_completion: result.raw_completion.clone(),
            is_switched: result.is_switched,
            truncated: result.truncated,
            prompt_tokens: result.prompt_tokens,
            seconds: result.seconds,
            judge_model: judge_model.to_string(),
            mode,
        })
    }

    /// The result row for `job`, as if the judge had just said it.
    pub fn result(&self, job: &JudgeJob, worker: &str) -> JudgeResult {
        JudgeResult {
            run_id: job.run_id.clone(),
            judge: job.judge.name.clone(),
            generator: job.generator.clone(),
            index: job.index,
            preference: Some(self.preference),
            raw_completion: self.raw_completion.clone(),
            is_switched: self.is_switched,
            truncated: self.truncated,
            prompt_tokens: self.prompt_tokens,
            seconds: self.seconds,
            worker: worker.to_string(),
            stored: None,
            price: None,
        }
    }
}

/// The verdict cache in a store, or no cache at all.
#[derive(Debug, Clone)]
pub struct JudgeCache {
    store: Option<ResultStore>,
}

impl JudgeCache {
    pub fn new(store: ResultStore) -> Self {
        Self { store: Some(store) }
    }

    /// Every job goes to the judge; nothing is written.
    pub fn disabled() -> Self {
        Self { store: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.store.is_some()
    }

    pub async fn get(&self, key: &JudgeCacheKey) -> Result<Option<CachedJudgement>, StoreError> {
        match &self.store {
            Some(store) => store.get_json(&key.store_key()).await,
            None => Ok(None),
        }
    }

    /// Stores a parsed verdict (first write wins: the same key means the same judgement).
    pub async fn put(
        &self,
        key: &JudgeCacheKey,
        verdict: &CachedJudgement,
    ) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            store.put_json_once(&key.store_key(), verdict).await?;
        }
        Ok(())
    }
}

/// A model's identity for the cache, computed once per process and spec.
#[derive(Debug, Clone, Default)]
pub struct ModelIdentities {
    known: Arc<Mutex<HashMap<String, Result<String, ModelUnavailable>>>>,
}

impl ModelIdentities {
    pub async fn get(&self, spec: &str) -> Result<String, ModelUnavailable> {
        if let Some(known) = self.known.lock().unwrap_or_else(|p| p.into_inner()).get(spec) {
            return known.clone();
        }
        let owned = spec.to_string();
        let identity = tokio::task::spawn_blocking(move || model_identity(&owned))
            .await
            .unwrap_or_else(|join| Err(format!("hashing panicked: {join}")))
            .map_err(|reason| ModelUnavailable { model: spec.to_string(), reason });
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.to_string(), identity.clone());
        identity
    }
}

/// What makes a judge model the same model on another machine, where it may sit at another
/// path: for a GGUF file its name, size and the hash of its first 16 MiB (the header with
/// the tokenizer and chat template); for a Hugging Face folder its name, the hash of its
/// config, tokenizer and chat-template files, and the names and sizes of its weight files.
pub fn model_identity(spec: &str) -> Result<String, String> {
    let path = model_files::resolve(spec).map_err(|e| e.to_string())?;
    let source = ModelSource::from_path(path).map_err(|e| e.to_string())?;
    let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    match source {
        ModelSource::Gguf(path) => {
            let file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
            let len = file.metadata().map_err(|e| io(&path, e))?.len();
            let mut head = Vec::new();
            file.take(GGUF_HASHED_BYTES).read_to_end(&mut head).map_err(|e| io(&path, e))?;
            Ok(format!("gguf:{}:{len}:{}", file_name(&path), hex(&Sha256::digest(&head))))
        }
        ModelSource::HuggingFaceFolder(dir) => {
            let mut hasher = Sha256::new();
            for name in
                ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
            {
                let path = dir.join(name);
                if path.is_file() {
                    hasher.update(name.as_bytes());
                    hasher.update(std::fs::read(&path).map_err(|e| io(&path, e))?);
                }
            }
            let mut weights: Vec<(String, u64)> = std::fs::read_dir(&dir)
                .map_err(|e| io(&dir, e))?
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect();
            weights.sort();
            for (name, len) in weights {
                hasher.update(format!("{name}:{len}").as_bytes());
            }
            Ok(format!("hf:{}:{}", file_name(&dir), hex(&hasher.finalize())))
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_core::eval_set::EvalSet;
    use herd_core::jobs::JudgeSpec;

    fn job(index: usize, model_output: &str, mode: JudgeMode, max_new_tokens: usize) -> JudgeJob {
        let set = EvalSet::embedded();
        let row = set.get(index).unwrap();
        JudgeJob {
            run_id: "run-a".into(),
            judge: JudgeSpec {
                name: "j".into(),
                model: "m".into(),
                mode,
                max_new_tokens,
                max_context_tokens: 7000,
                endpoint: None,
                price: None,
                config: None,
            },
            generator: "gen-a".into(),
            index,
            instruction: row.instruction.clone(),
            dataset: row.dataset.clone(),
            reference_output: row.output.clone(),
            model_output: model_output.into(),
        }
    }

    #[test]
    fn the_key_depends_on_what_the_judge_reads_and_not_on_the_run() {
        let base = JudgeCacheKey::new(&job(0, "answer", JudgeMode::Ranking, 100), "id-1");
        let mut other_run = job(0, "answer", JudgeMode::Ranking, 100);
        other_run.run_id = "run-b".into();
        other_run.generator = "gen-b".into();
        other_run.judge.name = "another-name".into();
        assert_eq!(
            JudgeCacheKey::new(&other_run, "id-1"),
            base,
            "run, generator and judge name are not content"
        );
        assert_ne!(JudgeCacheKey::new(&job(0, "answer!", JudgeMode::Ranking, 100), "id-1"), base);
        assert_ne!(JudgeCacheKey::new(&job(1, "answer", JudgeMode::Ranking, 100), "id-1"), base);
        assert_ne!(JudgeCacheKey::new(&job(0, "answer", JudgeMode::Ranking, 100), "id-2"), base);
        assert_ne!(JudgeCacheKey::new(&job(0, "answer", JudgeMode::Ranking, 50), "id-1"), base);
        assert_ne!(JudgeCacheKey::new(&job(0, "answer", JudgeMode::Logprob, 100), "id-1"), base);
        let logprob = JudgeCacheKey::new(&job(0, "answer", JudgeMode::Logprob, 100), "id-1");
        assert_eq!(JudgeCacheKey::new(&job(0, "answer", JudgeMode::Logprob, 7), "id-1"), logprob);
        assert_eq!(base.hash.len(), 64);
        assert_eq!(base.store_key(), format!("cache/judgements/{}.json", base.hash));
    }

    #[test]
    fn a_gguf_identity_names_the_file_its_size_and_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("judge.gguf");
        std::fs::write(&path, b"GGUF header and weights").unwrap();
        let spec = path.to_string_lossy().into_owned();
        let first = model_identity(&spec).unwrap();
        assert!(first.starts_with("gguf:judge.gguf:23:"), "{first}");
        std::fs::write(&path, b"GGUF header and weightz").unwrap();
        assert_ne!(model_identity(&spec).unwrap(), first);
        assert!(model_identity("/no/such/judge.gguf").unwrap_err().contains("no such file"));
    }

    #[tokio::test]
    async fn only_what_was_put_comes_back_and_a_disabled_cache_keeps_nothing() {
        let store = ResultStore::open(&herd_store::StoreConfig::new("memory://")).unwrap();
        let cache = JudgeCache::new(store);
        let job = job(3, "x", JudgeMode::Logprob, 100);
        let key = JudgeCacheKey::new(&job, "id");
        assert_eq!(cache.get(&key).await.unwrap(), None);
        let verdict = CachedJudgement {
            preference: 1.25,
            raw_completion: "{}".into(),
            is_switched: true,
            truncated: false,
            prompt_tokens: 900,
            seconds: 0.5,
            judge_model: "id".into(),
            mode: JudgeMode::Logprob,
        };
        cache.put(&key, &verdict).await.unwrap();
        let back = cache.get(&key).await.unwrap().unwrap();
        assert_eq!(back, verdict);
        let result = back.result(&job, "w");
        assert_eq!(
            (result.preference, result.index, result.generator.as_str()),
            (Some(1.25), 3, "gen-a")
        );

        let disabled = JudgeCache::disabled();
        disabled.put(&key, &verdict).await.unwrap();
        assert_eq!(disabled.get(&key).await.unwrap(), None);
    }
}
