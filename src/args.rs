//! The argument groups several subcommands share: which models to evaluate (`PlanArgs`), the
//! judge (`JudgeArgs`), the in-process run's judge cache and folder (`JudgeCacheArgs`,
//! `LocalArgs`), where the engine runs (`EngineArgs`) and how remote generators are called
//! (`RemoteArgs`). Every option is a flag with an
//! environment variable of the same name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use herd_coordinator::RunPlan;
use herd_core::eval_set::EvalSet;
use herd_core::jobs::{JudgeMode, JudgeSpec, TokenPrice};
use herd_core::judge::CompletionParser;
use herd_engine::{BatchOptions, DeviceSpec, LoadOptions, Placement};
use herd_judge_worker::JudgeCache;
use herd_runtime::RemoteSettings;
use herd_runtime::{ModelCache, DEFAULT_MODEL};
use herd_store::ResultStore;

use crate::generator_spec::{generator_specs, model_display_name, GeneratorSettings};

/// The folder inside `--out` that holds the run's results.
pub const STORE_FOLDER: &str = "store";

/// The models to evaluate and on how many instructions (shared with `herd coordinator`).
#[derive(clap::Args)]
pub struct PlanArgs {
    /// A model to evaluate, as `key=value` pairs separated by commas:
    /// `name=NAME,model=PATH_OR_BUILTIN,template=chat|raw|alpaca_sft|zero_shot_system,max_new_tokens=N,stop=TEXT`,
    /// and for a served model `endpoint=URL,api=chat|completions` (`model` is then its
    /// name there), for sampling `temperature=T,top_p=P,seed=N`.
    /// Every key is optional; only `stop` may repeat (`\n`, `\t`, `\,` and `\\` are escapes).
    /// Repeat the flag for several models (`;` separates them in HERD_GENERATORS).
    /// Default: the built-in smollm2-135m-instruct with its chat template.
    #[arg(long = "generator", env = "HERD_GENERATORS", value_delimiter = ';', value_name = "SPEC")]
    pub generators: Vec<GeneratorSettings>,
    /// Also evaluate a baseline: the first generator with these settings changed (same
    /// syntax as --generator). Alone, `--baseline` means `template=zero_shot_system`: the
    /// same model prompted with the course's zero-shot prompt, no chat template (the bare
    /// instruction, `template=raw`, leaves most of the default model's answers empty).
    /// For a fine-tune, name its base model: `--baseline model=PATH,template=zero_shot_system`.
    #[arg(long, env = "HERD_BASELINE", num_args = 0..=1, default_missing_value = "template=zero_shot_system", value_name = "SPEC")]
    pub baseline: Option<GeneratorSettings>,
    /// Only the first N instructions of the eval set (all 805 by default), or of the
    /// subset --dataset and --instructions select.
    #[arg(long, env = "HERD_LIMIT")]
    pub limit: Option<usize>,
    /// Only the instructions of this eval-set dataset (helpful_base, koala, oasst,
    /// selfinstruct, vicuna); repeat for several.
    #[arg(long = "dataset", env = "HERD_DATASETS", value_delimiter = ',', value_name = "NAME")]
    pub datasets: Vec<String>,
    /// Only these eval-set positions (0-based): ranges and single indices, `0-99,200,310-319`.
    #[arg(long, env = "HERD_INSTRUCTIONS", value_name = "RANGES")]
    pub instructions: Option<String>,
    /// New tokens per answer, for generators that do not set max_new_tokens.
    #[arg(long, env = "HERD_MAX_NEW_TOKENS", default_value_t = 512)]
    pub max_new_tokens: usize,
}

impl PlanArgs {
    /// The run's plan: every generator × the first `--limit` instructions, one judge.
    pub fn plan(
        &self,
        run_id: &str,
        judge: JudgeSpec,
        eval_set: &EvalSet,
    ) -> anyhow::Result<RunPlan> {
        let generators =
            generator_specs(&self.generators, self.baseline.as_ref(), self.max_new_tokens)?;
        // The baseline is the last generator (see `generator_specs`).
        let baseline = self.baseline.as_ref().and(generators.last()).map(|g| g.name.clone());
        let plan = RunPlan::on_indices(run_id, generators, judge, self.selected(eval_set)?);
        Ok(RunPlan { baseline, ..plan })
    }

    /// The eval-set positions the run covers: --dataset and --instructions filter, in
    /// eval-set order, then --limit keeps the first N.
    pub fn selected(&self, eval_set: &EvalSet) -> anyhow::Result<Vec<usize>> {
        let known: std::collections::BTreeSet<&str> =
            eval_set.rows().iter().map(|r| r.dataset.as_str()).collect();
        for dataset in &self.datasets {
            if !known.contains(dataset.as_str()) {
                let names: Vec<&str> = known.iter().copied().collect();
                bail!("--dataset {dataset:?} is not one of the eval set's: {}", names.join(", "));
            }
        }
        let positions = match &self.instructions {
            Some(ranges) => Some(parse_ranges(ranges, eval_set.len())?),
            None => None,
        };
        let selected: Vec<usize> = (0..eval_set.len())
            .filter(|&i| {
                let row = &eval_set.rows()[i];
                (self.datasets.is_empty() || self.datasets.contains(&row.dataset))
                    && positions.as_ref().is_none_or(|p| p.contains(&i))
            })
            .take(self.limit.unwrap_or(usize::MAX))
            .collect();
        if selected.is_empty() {
            bail!("--limit, --dataset and --instructions select no instruction");
        }
        Ok(selected)
    }
}

/// `0-99,200,310-319` as eval-set positions below `len`.
fn parse_ranges(text: &str, len: usize) -> anyhow::Result<std::collections::BTreeSet<usize>> {
    let mut positions = std::collections::BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
            None => (part.parse::<usize>(), part.parse::<usize>()),
        };
        let (Ok(first), Ok(last)) = (first, last) else {
            bail!("--instructions {part:?}: expected N or N-M");
        };
        if first > last || last >= len {
            bail!("--instructions {part:?}: positions run from 0 to {}", len - 1);
        }
        positions.extend(first..=last);
    }
    Ok(positions)
}

/// The judge's settings (shared with `herd evaluate`).
#[derive(clap::Args)]
pub struct JudgeArgs {
    /// The annotator model (built-in name, .gguf file or Hugging Face folder; with
    /// --judge-endpoint, the name the server knows it by). Default: the built-in
    /// smollm2-135m-instruct, or the model an --annotator's config names when served.
    #[arg(long, env = "HERD_JUDGE_MODEL")]
    pub judge_model: Option<String>,
    /// `logprob`: one forward pass, the verdict read from the probabilities of naming
    /// model_1 or model_2 first (never unparsable, continuous like alpaca_eval's weighted
    /// annotators). `ranking`: alpaca_eval's config (greedy answer, `ranking_parser`).
    #[arg(long, env = "HERD_JUDGE_MODE", default_value = "logprob", value_parser = ["logprob", "ranking"])]
    pub judge_mode: String,
    /// The `annotator` name in annotations.json (default: `<judge model>_<mode>`).
    #[arg(long, env = "HERD_JUDGE_NAME")]
    pub judge_name: Option<String>,
    /// New tokens for the judge's ranking (ranking mode; alpaca_eval's config: 100).
    #[arg(long, env = "HERD_JUDGE_MAX_NEW_TOKENS", default_value_t = 100)]
    pub judge_max_new_tokens: usize,
    /// The judge's context: outputs are cut (with a marker) so the prompt and its answer
    /// fit (alpaca_eval's config: 7000; never more than the model's own).
    #[arg(long, env = "HERD_JUDGE_MAX_CONTEXT", default_value_t = 7000)]
    pub judge_max_context: usize,
    /// An OpenAI-compatible API serving the judge (`http://host:8000/v1`); --judge-model is
    /// then the name it serves it by. Its key: HERD_JUDGE_API_KEY, else OPENAI_API_KEY (or
    /// their `_FILE` variants).
    #[arg(long, env = "HERD_JUDGE_ENDPOINT", value_name = "URL")]
    pub judge_endpoint: Option<String>,
    /// One of alpaca_eval's annotators by its config name, which sets the prompt, the
    /// parser and the annotator's name: `weighted_alpaca_eval_gpt4_turbo` (AlpacaEval 2.0's
    /// official one), `alpaca_eval_clf_gpt4_turbo`, `alpaca_eval_vllm_llama3_3_70b_fn`
    /// (ranking). The GPT-4 Turbo ones need --judge-endpoint.
    #[arg(long, env = "HERD_ANNOTATOR", value_name = "NAME")]
    pub annotator: Option<String>,
    /// What a served judge charges, `PROMPT,COMPLETION` in US dollars per million tokens,
    /// for each verdict's `price_per_example` (default: OpenAI's list price for the GPT
    /// models alpaca_eval uses; none for others).
    #[arg(long, env = "HERD_JUDGE_PRICE", value_name = "PROMPT,COMPLETION")]
    pub judge_price: Option<String>,
    /// An alpaca_eval annotator config folder (`configs.yaml` and its prompt): its prompt,
    /// sampling settings and parser (ranking_parser or logprob_parser) through
    /// --judge-endpoint; what herd does not support is named.
    #[arg(long, env = "HERD_ANNOTATOR_CONFIG", value_name = "DIR", conflicts_with = "annotator")]
    pub annotator_config: Option<PathBuf>,
}

/// `--judge-price PROMPT,COMPLETION` (US dollars per million tokens).
fn parse_price(text: &str) -> anyhow::Result<TokenPrice> {
    let parsed: Option<Vec<f64>> = text.split(',').map(|p| p.trim().parse().ok()).collect();
    match parsed.as_deref() {
        Some(&[prompt, completion])
            if prompt.is_finite() && completion.is_finite() && prompt >= 0.0 && completion >= 0.0 =>
        {
            Ok(TokenPrice { prompt_per_million: prompt, completion_per_million: completion })
        }
        _ => bail!("--judge-price {text:?}: expected PROMPT,COMPLETION in US dollars per million tokens, e.g. 10,30"),
    }
}

/// The model alpaca_eval's GPT-4 Turbo annotators ask for.
const GPT4_TURBO: &str = "gpt-4-1106-preview";

/// What `--annotator NAME` sets: the judge's mode, and the model its config names (when
/// --judge-model is left at its default).
fn annotator(name: &str) -> anyhow::Result<(JudgeMode, Option<&'static str>)> {
    Ok(match name {
        "weighted_alpaca_eval_gpt4_turbo" => (JudgeMode::WeightedClassification, Some(GPT4_TURBO)),
        "alpaca_eval_clf_gpt4_turbo" => (JudgeMode::Classification, Some(GPT4_TURBO)),
        "alpaca_eval_vllm_llama3_3_70b_fn" | "alpaca_eval_vllm_llama3_70b_fn" => {
            (JudgeMode::Ranking, None)
        }
        "alpaca_eval_gpt4_turbo_fn" => bail!(
            "--annotator alpaca_eval_gpt4_turbo_fn answers through OpenAI function calling, which herd does not send yet; weighted_alpaca_eval_gpt4_turbo is AlpacaEval 2.0's official annotator"
        ),
        other => bail!(
            "--annotator {other:?} is not one herd supports: weighted_alpaca_eval_gpt4_turbo, alpaca_eval_clf_gpt4_turbo, alpaca_eval_vllm_llama3_3_70b_fn"
        ),
    })
}

/// Where the in-process run keeps verdicts by content (shared with `herd evaluate`).
#[derive(clap::Args)]
pub struct JudgeCacheArgs {
    /// Store of the judge cache: verdicts by content under `cache/judgements/`, reused by
    /// every run that points here.
    #[arg(long, env = "HERD_JUDGE_CACHE", value_name = "DIR")]
    pub judge_cache: Option<PathBuf>,
    /// Judge everything again; read and write no cache.
    #[arg(long, env = "HERD_NO_JUDGE_CACHE")]
    pub no_judge_cache: bool,
}

/// How the in-process run executes (shared with `herd evaluate`).
#[derive(clap::Args)]
pub struct LocalArgs {
    /// The run folder (default: runs/<run-id>). Its `store/` keeps the results, so running
    /// again with the same folder resumes instead of starting over.
    #[arg(long, env = "HERD_OUT")]
    pub out: Option<PathBuf>,
    /// Write this run's files over the --out folder of another run (another run id, other
    /// generators or another judge); without it such a folder is refused.
    #[arg(long, env = "HERD_FORCE")]
    pub force: bool,
    /// The run's id in the store (default: the --out folder's name, else a UTC timestamp).
    #[arg(long, env = "HERD_RUN_ID")]
    pub run_id: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Judge answers while others are still being generated (faster end to end on a GPU;
    /// on a CPU the two phases then share cores and their throughput figures mix).
    #[arg(long, env = "HERD_PIPELINE")]
    pub pipeline: bool,
}

/// How generators served elsewhere (`--generator endpoint=…`) are called (shared with
/// `herd worker`). Their key comes from OPENAI_API_KEY, or the file OPENAI_API_KEY_FILE
/// names; it is never a flag, and never logged.
#[derive(clap::Args, Clone)]
pub struct RemoteArgs {
    /// Seconds one request may take; past it the request is retried.
    #[arg(long, env = "HERD_REMOTE_TIMEOUT", default_value_t = 600.0)]
    pub remote_timeout: f64,
    /// Tries per answer: 429, 5xx, timeouts and broken connections are retried, a refused
    /// key or request is not.
    #[arg(long, env = "HERD_REMOTE_MAX_ATTEMPTS", default_value_t = 8)]
    pub remote_max_attempts: u32,
    /// Requests in flight per endpoint.
    #[arg(long, env = "HERD_REMOTE_CONCURRENCY", default_value_t = 16)]
    pub remote_concurrency: usize,
    /// Seconds the first retry waits; each next one waits about twice as long (with
    /// jitter, up to a minute). A server's Retry-After is honoured instead.
    #[arg(long, env = "HERD_REMOTE_BACKOFF", default_value_t = 1.0)]
    pub remote_backoff: f64,
    /// (Worker roles) an endpoint jobs may name; repeat for several. A distributed worker
    /// calls no other: a forged job cannot send the run's data or the key elsewhere.
    #[arg(long, env = "HERD_ALLOW_ENDPOINTS", value_delimiter = ',', value_name = "URL")]
    pub allow_endpoint: Vec<String>,
}

impl RemoteArgs {
    pub fn settings(&self) -> anyhow::Result<RemoteSettings> {
        let seconds = |flag: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero() || flag == "--remote-backoff")
                .with_context(|| format!("{flag} {value}: expected a positive number of seconds"))
        };
        Ok(RemoteSettings {
            timeout: seconds("--remote-timeout", self.remote_timeout)?,
            max_attempts: self.remote_max_attempts.max(1),
            concurrency: self.remote_concurrency.max(1),
            backoff_initial: seconds("--remote-backoff", self.remote_backoff)?,
            allowed_endpoints: None,
        })
    }

    /// The settings of a distributed worker: only the --allow-endpoint URLs.
    pub fn worker_settings(&self) -> anyhow::Result<RemoteSettings> {
        Ok(RemoteSettings {
            allowed_endpoints: Some(self.allow_endpoint.clone()),
            ..self.settings()?
        })
    }
}

/// Where and how the engine runs models (shared with `herd evaluate`, `herd worker` and
/// `herd judge-worker`).
#[derive(clap::Args, Clone)]
pub struct EngineArgs {
    /// `cpu`, `cuda` (GPU 0) or `cuda:N` (the first GPU of the model's ranks).
    #[arg(long, env = "HERD_DEVICE", default_value = "cpu")]
    pub device: DeviceSpec,
    /// Ranks a model is sharded over (GPUs from --device on, or CPU threads on the CPU).
    #[arg(long, env = "HERD_TENSOR_PARALLEL", default_value_t = 1)]
    pub tensor_parallel: usize,
    /// Sequences the engine decodes at once.
    #[arg(long, env = "HERD_BATCH_SIZE", default_value_t = 16)]
    pub batch_size: usize,
    /// Tokens per forward pass (decode tokens plus prompt chunks).
    #[arg(long, env = "HERD_STEP_TOKENS", default_value_t = 512)]
    pub step_tokens: usize,
    /// Key/value cache size in tokens, every sequence in flight (default: on a GPU, what
    /// --gpu-memory-fraction leaves after the weights; on the CPU, grown as needed).
    #[arg(long, env = "HERD_KV_CACHE_TOKENS")]
    pub kv_cache_tokens: Option<usize>,
    /// CPU threads for inference (default: all cores).
    #[arg(long, env = "HERD_THREADS")]
    pub threads: Option<usize>,
    /// Share of each GPU's memory the engine may fill with weights, key/value cache and
    /// activations; models held at once in one process split it.
    #[arg(long, env = "HERD_GPU_MEMORY_FRACTION", default_value_t = 0.9)]
    pub gpu_memory_fraction: f64,
}

impl JudgeArgs {
    pub fn spec(&self) -> anyhow::Result<JudgeSpec> {
        let config =
            self.annotator_config.as_deref().map(crate::annotator_config::read).transpose()?;
        let (mode, annotator_model) = match (&self.annotator, &config) {
            (_, Some(config)) => {
                let mode = match config.parser {
                    CompletionParser::Ranking => JudgeMode::Ranking,
                    CompletionParser::Logprob { binarize: true, .. } => JudgeMode::Classification,
                    CompletionParser::Logprob { binarize: false, .. } => {
                        JudgeMode::WeightedClassification
                    }
                };
                (mode, None)
            }
            (Some(name), None) => annotator(name)?,
            (None, None) => match self.judge_mode.as_str() {
                "ranking" => (JudgeMode::Ranking, None),
                "logprob" => (JudgeMode::Logprob, None),
                other => bail!("--judge-mode {other:?}: expected ranking or logprob"),
            },
        };
        let endpoint = match &self.judge_endpoint {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(url.trim_end_matches('/').to_string())
            }
            Some(url) => bail!("--judge-endpoint {url:?} is not an http:// or https:// URL"),
            None => None,
        };
        if endpoint.is_none()
            && matches!(mode, JudgeMode::WeightedClassification | JudgeMode::Classification)
        {
            bail!("--annotator {} reads the judge's top log-probabilities from an OpenAI-compatible API: give --judge-endpoint", self.annotator.as_deref().unwrap_or_default());
        }
        if config.is_some() && endpoint.is_none() {
            bail!("--annotator-config runs the annotator through a served judge: give --judge-endpoint");
        }
        let configured_model = annotator_model
            .map(str::to_string)
            .or_else(|| config.as_ref().and_then(|c| c.model.clone()));
        let model = match (&self.judge_model, configured_model) {
            (Some(model), _) => model.clone(),
            (None, Some(configured)) if endpoint.is_some() => configured,
            (None, _) => DEFAULT_MODEL.to_string(),
        };
        let name = match (&self.judge_name, &self.annotator, &config) {
            (Some(name), _, _) => name.clone(),
            (None, _, Some(config)) => config.name.clone(),
            (None, Some(annotator), None) => annotator.clone(),
            (None, None, None) => format!("{}_{}", model_display_name(&model), mode.as_str()),
        };
        let price = match &self.judge_price {
            Some(text) => Some(parse_price(text)?),
            None if endpoint.is_some() => TokenPrice::list_price(&model),
            None => None,
        };
        Ok(JudgeSpec {
            name,
            model,
            mode,
            max_new_tokens: self.judge_max_new_tokens,
            max_context_tokens: self.judge_max_context,
            endpoint,
            price,
            config,
        })
    }
}

impl JudgeCacheArgs {
    pub fn cache(&self) -> anyhow::Result<JudgeCache> {
        if self.no_judge_cache {
            return Ok(JudgeCache::disabled());
        }
        let dir = match &self.judge_cache {
            Some(dir) => dir.clone(),
            None => home_cache_dir(),
        };
        Ok(JudgeCache::new(
            ResultStore::local(&dir).with_context(|| format!("judge cache {}", dir.display()))?,
        ))
    }
}

/// `~/.cache/herd`, where the built-in models live too.
fn home_cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("herd")
}

impl EngineArgs {
    /// Candle's CPU kernels size their thread pools from RAYON_NUM_THREADS; it must be set
    /// before the first one starts.
    pub fn apply_threads(&self) {
        if let Some(threads) = self.threads.filter(|&t| t > 0) {
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        }
    }

    pub fn batch(&self) -> BatchOptions {
        BatchOptions {
            max_batch_size: self.batch_size.max(1),
            max_step_tokens: self.step_tokens.max(1),
            ignore_eos: false,
        }
    }

    /// Jobs a worker holds at once: twice the engine batch, so the engine admits new
    /// sequences as others finish.
    pub fn prefetch(&self) -> u16 {
        u16::try_from(self.batch_size.max(1) * 2).unwrap_or(u16::MAX)
    }

    /// Where models load, checked now (a GPU build, enough GPUs) so that a wrong
    /// --device or --tensor-parallel fails before any work is taken.
    pub fn placement(&self) -> anyhow::Result<Placement> {
        let placement = Placement {
            device: self.device,
            tensor_parallel: self.tensor_parallel,
            kv_cache_tokens: self.kv_cache_tokens,
            gpu_memory_fraction: self.gpu_memory_fraction,
            ..Placement::default()
        };
        placement.check().with_context(|| {
            format!(
                "--device {} --tensor-parallel {} --gpu-memory-fraction {}",
                self.device, self.tensor_parallel, self.gpu_memory_fraction
            )
        })?;
        Ok(placement)
    }

    /// A model cache that loads onto this placement.
    pub fn models(&self) -> anyhow::Result<ModelCache> {
        Ok(ModelCache::on(LoadOptions::default(), self.placement()?))
    }
}

impl LocalArgs {
    /// The run id and folder: `--run-id` and `--out` as given; a missing id is the folder's
    /// name, a missing folder is `runs/<id>`, and without either the id is
    /// `<prefix>-<UTC timestamp>`.
    pub fn run_id_and_out(&self, prefix: &str) -> anyhow::Result<(String, PathBuf)> {
        let from_out =
            self.out.as_ref().and_then(|o| o.file_name()).map(|n| n.to_string_lossy().into_owned());
        let run_id = match (&self.run_id, from_out) {
            (Some(id), _) => id.clone(),
            (None, Some(name)) => name,
            (None, None) => format!("{prefix}-{}", utc_timestamp()),
        };
        if run_id.trim().is_empty() {
            bail!("the run id is empty");
        }
        let out = self.out.clone().unwrap_or_else(|| Path::new("runs").join(&run_id));
        Ok((run_id, out))
    }
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn utc_timestamp() -> String {
    chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_id_follows_the_out_folder() {
        let local = |out: Option<&str>, id: Option<&str>| LocalArgs {
            out: out.map(PathBuf::from),
            run_id: id.map(String::from),
            force: false,
            engine: EngineArgs {
                device: DeviceSpec::Cpu,
                tensor_parallel: 1,
                batch_size: 1,
                step_tokens: 1,
                kv_cache_tokens: None,
                threads: None,
                gpu_memory_fraction: 0.9,
            },
            remote: RemoteArgs {
                remote_timeout: 600.0,
                remote_max_attempts: 8,
                remote_concurrency: 16,
                remote_backoff: 1.0,
                allow_endpoint: vec![],
            },
            pipeline: false,
        };
        assert_eq!(
            local(Some("x/today"), None).run_id_and_out("run").unwrap(),
            ("today".into(), "x/today".into())
        );
        assert_eq!(
            local(None, Some("r1")).run_id_and_out("run").unwrap(),
            ("r1".into(), "runs/r1".into())
        );
        let (id, out) = local(None, None).run_id_and_out("run").unwrap();
        assert!(id.starts_with("run-20") && id.len() == "run-20260101-000000".len(), "{id}");
        assert_eq!(out, Path::new("runs").join(&id));
    }

    #[test]
    fn remote_settings_refuse_a_timeout_that_is_not_a_positive_duration() {
        let remote = |timeout: f64, backoff: f64| RemoteArgs {
            remote_timeout: timeout,
            remote_max_attempts: 0,
            remote_concurrency: 0,
            remote_backoff: backoff,
            allow_endpoint: vec![],
        };
        let settings = remote(2.5, 0.0).settings().unwrap();
        assert_eq!(settings.timeout, Duration::from_millis(2500));
        assert_eq!((settings.max_attempts, settings.concurrency), (1, 1), "at least one");
        assert!(remote(0.0, 1.0).settings().unwrap_err().to_string().contains("--remote-timeout"));
        assert!(remote(-1.0, 1.0).settings().is_err());
        assert!(remote(1.0, f64::NAN)
            .settings()
            .unwrap_err()
            .to_string()
            .contains("--remote-backoff"));
    }

    #[test]
    fn a_subset_is_filtered_by_dataset_and_positions_then_limited() {
        let eval_set = EvalSet::shared();
        let plan = |datasets: &[&str], instructions: Option<&str>, limit: Option<usize>| PlanArgs {
            generators: vec![],
            baseline: None,
            limit,
            datasets: datasets.iter().map(|d| d.to_string()).collect(),
            instructions: instructions.map(str::to_string),
            max_new_tokens: 8,
        };
        assert_eq!(plan(&[], None, Some(3)).selected(eval_set).unwrap(), vec![0, 1, 2]);
        assert_eq!(plan(&[], Some("5-7, 2"), None).selected(eval_set).unwrap(), vec![2, 5, 6, 7]);
        let koala = plan(&["koala"], None, None).selected(eval_set).unwrap();
        assert!(!koala.is_empty() && koala.iter().all(|&i| eval_set.rows()[i].dataset == "koala"));
        assert_eq!(plan(&["koala"], None, Some(2)).selected(eval_set).unwrap(), koala[..2]);
        assert!(plan(&["reddit"], None, None)
            .selected(eval_set)
            .unwrap_err()
            .to_string()
            .contains("koala"));
        assert!(plan(&[], Some("800-805"), None).selected(eval_set).is_err());
        assert!(plan(&[], Some("9-3"), None).selected(eval_set).is_err());
        assert!(plan(&[], Some("x"), None).selected(eval_set).is_err());
    }

    #[test]
    fn a_judge_price_is_two_non_negative_numbers() {
        let price = parse_price("10, 30").unwrap();
        assert_eq!((price.prompt_per_million, price.completion_per_million), (10.0, 30.0));
        assert!((price.of(1500, 1) - 0.01503).abs() < 1e-12);
        for bad in ["10", "10,30,1", "-1,2", "a,b", "inf,1"] {
            assert!(parse_price(bad).is_err(), "{bad}");
        }
        assert_eq!(TokenPrice::list_price("gpt-4-1106-preview").unwrap().prompt_per_million, 10.0);
        assert!(TokenPrice::list_price("my-local-judge").is_none());
    }
}
