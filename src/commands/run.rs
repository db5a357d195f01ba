//! `herd run`: generate answers to the AlpacaEval instructions with one or more models,
//! judge them against GPT-4 Turbo's references, and write the run folder — all in one
//! process, with the same coordinator and worker loops as the distributed roles (an
//! in-process queue, and a local folder as the store).
//!
//! Where things live:
//! - `<out>/store/`: the run's results (answers, verdicts, activity), one JSON file each.
//!   A re-run with the same `--out` reads them and does only what is missing, so an
//!   interrupted run resumes and a finished one is not redone.
//! - `<judge-cache>/cache/judgements/`: verdicts by content, shared by every run on this
//!   machine (`~/.cache/herd` unless `--judge-cache`).
//! - the run folder's files: see `herd_coordinator::folder`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_coordinator::{Coordinator, RunPlan, RunProgress, RunSummary};
use herd_core::eval_set::EvalSet;
use herd_core::jobs::{GeneratorSpec, JudgeMode, JudgeSpec, PromptTemplate};
use herd_engine::{BatchOptions, DeviceSpec, LoadOptions, Placement, DEFAULT_MODEL};
use herd_judge_worker::{JudgeCache, JudgeWorker, JudgeWorkerStats};
use herd_queue::MemoryQueue;
use herd_runtime::ModelCache;
use herd_store::ResultStore;
use herd_telemetry::Metrics;
use herd_worker::{GenerationWorker, GenerationWorkerStats};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::watch;

/// The folder inside `--out` that holds the run's results.
pub const STORE_FOLDER: &str = "store";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub plan: PlanArgs,
    #[command(flatten)]
    pub judge: JudgeArgs,
    #[command(flatten)]
    pub judge_cache: JudgeCacheArgs,
    #[command(flatten)]
    pub local: LocalArgs,
}

/// The models to evaluate and on how many instructions (shared with `herd coordinator`).
#[derive(clap::Args)]
pub struct PlanArgs {
    /// A model to evaluate, as `key=value` pairs separated by commas:
    /// `name=NAME,model=PATH_OR_BUILTIN,template=chat|raw|alpaca_sft|zero_shot_system,max_new_tokens=N,stop=TEXT`.
    /// Every key is optional (`stop` may repeat; `\n`, `\t`, `\,` and `\\` are escapes).
    /// Repeat the flag for several models (`;` separates them in HERD_GENERATORS).
    /// Default: the built-in smollm2-135m-instruct with its chat template.
    #[arg(long = "generator", env = "HERD_GENERATORS", value_delimiter = ';', value_name = "SPEC")]
    pub generators: Vec<String>,
    /// Also evaluate a baseline: the first generator with these settings changed (same
    /// syntax as --generator). Alone, `--baseline` means `template=raw`: the same model
    /// prompted with the bare instruction.
    #[arg(long, env = "HERD_BASELINE", num_args = 0..=1, default_missing_value = "template=raw", value_name = "SPEC")]
    pub baseline: Option<String>,
    /// Only the first N instructions of the eval set (all 805 by default).
    #[arg(long, env = "HERD_LIMIT")]
    pub limit: Option<usize>,
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
            generator_specs(&self.generators, self.baseline.as_deref(), self.max_new_tokens)?;
        Ok(RunPlan::first_n(run_id, generators, judge, self.limit, eval_set))
    }
}

/// The judge's settings (shared with `herd evaluate`).
#[derive(clap::Args)]
pub struct JudgeArgs {
    /// The annotator model (built-in name, .gguf file or Hugging Face folder).
    #[arg(long, env = "HERD_JUDGE_MODEL", default_value = DEFAULT_MODEL)]
    pub judge_model: String,
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
    /// The run's id in the store (default: the --out folder's name, else a UTC timestamp).
    #[arg(long, env = "HERD_RUN_ID")]
    pub run_id: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Judge answers while others are still being generated (faster end to end on a GPU;
    /// on a CPU the two phases then share cores and their throughput figures mix).
    #[arg(long, env = "HERD_PIPELINE")]
    pub pipeline: bool,
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
    /// CPU threads for inference (default: all cores).
    #[arg(long, env = "HERD_THREADS")]
    pub threads: Option<usize>,
    /// Share of each GPU's memory the engine may fill with weights, key/value cache and
    /// activations; models held at once in one process split it.
    #[arg(long, env = "HERD_GPU_MEMORY_FRACTION", default_value_t = 0.9)]
    pub gpu_memory_fraction: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    args.local.engine.apply_threads();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<()> {
    let eval_set = EvalSet::embedded();
    let judge = args.judge.spec()?;
    let (run_id, out) = args.local.run_id_and_out("run")?;
    let plan = args.plan.plan(&run_id, judge, &eval_set)?;
    let local = LocalRun::open(&args.local, &args.judge_cache, &out)?;
    let outcome = local.execute(plan).await?;
    outcome.print();
    Ok(())
}

/// The generator specs from the flags: the default model when none is given, then the
/// baseline when asked for.
pub fn generator_specs(
    specs: &[String],
    baseline: Option<&str>,
    max_new_tokens: usize,
) -> anyhow::Result<Vec<GeneratorSpec>> {
    let defaults = GeneratorSpec {
        name: String::new(),
        model: DEFAULT_MODEL.into(),
        template: PromptTemplate::Chat,
        max_new_tokens,
        stop: Vec::new(),
    };
    let mut generators = Vec::new();
    for spec in specs.iter().filter(|s| !s.trim().is_empty()) {
        generators.push(
            parse_generator(spec, &defaults).with_context(|| format!("--generator {spec:?}"))?,
        );
    }
    if generators.is_empty() {
        generators.push(parse_generator("", &defaults)?);
    }
    if let Some(baseline) = baseline {
        let first = GeneratorSpec { name: String::new(), ..generators[0].clone() };
        let spec = parse_generator(baseline, &first)
            .with_context(|| format!("--baseline {baseline:?}"))?;
        generators.push(spec);
    }
    let mut names = BTreeSet::new();
    for g in &generators {
        if !names.insert(g.name.clone()) {
            bail!("two generators are named {:?}; give one of them name=…", g.name);
        }
        if herd_report::folder_name(&g.name) == STORE_FOLDER {
            bail!("a generator cannot be named {STORE_FOLDER:?}: the run folder keeps its results there");
        }
    }
    Ok(generators)
}

/// One `--generator` value over `defaults`; an empty name is derived from the model (and
/// the template, when it is not the chat template).
pub fn parse_generator(text: &str, defaults: &GeneratorSpec) -> anyhow::Result<GeneratorSpec> {
    let mut spec = defaults.clone();
    let mut stops_given = false;
    for pair in split_unescaped(text, ',') {
        if pair.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = pair.split_once('=') else {
            bail!("{pair:?} is not key=value");
        };
        let value = unescape(value);
        match key.trim() {
            "name" => spec.name = value,
            "model" => spec.model = value,
            "template" => {
                spec.template = PromptTemplate::parse(&value).with_context(|| {
                    let names: Vec<&str> = PromptTemplate::ALL.iter().map(|t| t.as_str()).collect();
                    format!("template {value:?} is not one of {}", names.join(", "))
                })?
            }
            "max_new_tokens" => {
                spec.max_new_tokens = value
                    .parse()
                    .with_context(|| format!("max_new_tokens {value:?} is not a count"))?
            }
            "stop" => {
                if !stops_given {
                    spec.stop.clear();
                    stops_given = true;
                }
                spec.stop.push(value);
            }
            other => bail!("unknown key {other:?} (name, model, template, max_new_tokens, stop)"),
        }
    }
    if spec.model.trim().is_empty() {
        bail!("model is empty");
    }
    if spec.name.is_empty() {
        spec.name = default_name(&spec);
    }
    Ok(spec)
}

fn default_name(spec: &GeneratorSpec) -> String {
    let path = Path::new(&spec.model);
    let base = if spec.model.eq_ignore_ascii_case(DEFAULT_MODEL) {
        DEFAULT_MODEL.to_string()
    } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.model.clone())
    } else {
        path.file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.model.clone())
    };
    match spec.template {
        PromptTemplate::Chat => base,
        other => format!("{base}-{}", other.as_str()),
    }
}

fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                // Keep the escape for `unescape`; only an escaped separator stays in the part.
                let last = parts.last_mut().expect("one part");
                last.push('\\');
                if let Some(next) = chars.next() {
                    last.push(next);
                }
            }
            c if c == separator => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    parts
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

impl JudgeArgs {
    pub fn spec(&self) -> anyhow::Result<JudgeSpec> {
        let mode = match self.judge_mode.as_str() {
            "ranking" => JudgeMode::Ranking,
            "logprob" => JudgeMode::Logprob,
            other => bail!("--judge-mode {other:?}: expected ranking or logprob"),
        };
        let model_name = default_name(&GeneratorSpec {
            name: String::new(),
            model: self.judge_model.clone(),
            template: PromptTemplate::Chat,
            max_new_tokens: 0,
            stop: Vec::new(),
        });
        Ok(JudgeSpec {
            name: self
                .judge_name
                .clone()
                .unwrap_or_else(|| format!("{model_name}_{}", mode.as_str())),
            model: self.judge_model.clone(),
            mode,
            max_new_tokens: self.judge_max_new_tokens,
            max_context_tokens: self.judge_max_context,
        })
    }
}

impl JudgeCacheArgs {
    fn cache(&self) -> anyhow::Result<JudgeCache> {
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
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The in-process wiring of a run: one queue, one store, one metrics registry and one model
/// cache shared by the coordinator and the workers.
pub struct LocalRun {
    out: PathBuf,
    store: ResultStore,
    cache: JudgeCache,
    queue: MemoryQueue,
    metrics: Metrics,
    models: ModelCache,
    batch: BatchOptions,
    prefetch: u16,
    pipeline: bool,
    worker: String,
}

/// What a local run did and wrote.
pub struct RunOutcome {
    pub run_id: String,
    pub judge: JudgeSpec,
    pub instructions: usize,
    pub summary: RunSummary,
    pub generation: Vec<(String, GenerationWorkerStats)>,
    pub judging: JudgeWorkerStats,
    /// This session's wall time per phase (model loading included).
    pub generation_seconds: f64,
    pub judging_seconds: f64,
    pub already: RunProgress,
}

impl LocalRun {
    pub fn open(
        local: &LocalArgs,
        judge_cache: &JudgeCacheArgs,
        out: &Path,
    ) -> anyhow::Result<Self> {
        let store_dir = out.join(STORE_FOLDER);
        let store = ResultStore::local(&store_dir)
            .with_context(|| format!("run store {}", store_dir.display()))?;
        Ok(Self {
            out: out.to_path_buf(),
            store,
            cache: judge_cache.cache()?,
            queue: MemoryQueue::default(),
            metrics: Metrics::new()?,
            models: local.engine.models()?,
            batch: local.engine.batch(),
            prefetch: local.engine.prefetch(),
            pipeline: local.pipeline,
            worker: herd_runtime::worker_id(),
        })
    }

    pub fn store(&self) -> &ResultStore {
        &self.store
    }

    /// Runs `plan` to completion: the coordinator publishes what the store lacks, the
    /// generation workers run one generator at a time (each model loaded once), the judge
    /// worker after them (or alongside with --pipeline), then the run folder is written.
    pub async fn execute(&self, plan: RunPlan) -> anyhow::Result<RunOutcome> {
        let mut coordinator = Coordinator::new(
            self.queue.clone(),
            self.store.clone(),
            self.metrics.clone(),
            plan.clone(),
        )?;
        coordinator.poll_interval = Duration::from_millis(100);
        let already = coordinator.start().await?;
        let (progress_sender, progress) = watch::channel(already.clone());
        // Set when the coordinator or a worker failed: everyone else stops.
        let (failed_sender, failed) = watch::channel(false);
        let failed_sender = Arc::new(failed_sender);
        let watcher = tokio::spawn({
            let failed_sender = failed_sender.clone();
            async move {
                let outcome = coordinator.watch(&progress_sender).await;
                if outcome.is_err() {
                    failed_sender.send_replace(true);
                }
                outcome.map(|_| coordinator)
            }
        });

        let models = self.models_for(&plan);
        let bars = Bars::new(&plan, &already);
        let bar_updates = tokio::spawn(bars.clone().follow(progress.clone()));
        let judge_phase = async {
            if !self.pipeline {
                wait_for(progress.clone(), failed.clone(), RunProgress::generation_complete).await;
            }
            let started = Instant::now();
            let stats = self.judge(&plan, &models, &bars, progress.clone(), failed.clone()).await;
            if stats.is_err() {
                failed_sender.send_replace(true);
            }
            (stats, started.elapsed().as_secs_f64())
        };
        let generation_phase = async {
            let started = Instant::now();
            let stats = self
                .generate(&plan, &models, &bars, &already, progress.clone(), failed.clone())
                .await;
            if stats.is_err() {
                failed_sender.send_replace(true);
            }
            (stats, started.elapsed().as_secs_f64())
        };
        // Without --pipeline the judge starts once the generation phase has returned, after
        // it released the models the judge does not use.
        let ((generation, generation_seconds), (judging, judging_seconds)) = if self.pipeline {
            tokio::join!(generation_phase, judge_phase)
        } else {
            (generation_phase.await, judge_phase.await)
        };
        bar_updates.abort();
        bars.finish();
        if let Err(worker_error) = generation.as_ref().map(|_| ()).and(judging.as_ref().map(|_| ()))
        {
            if watcher.is_finished() {
                // The coordinator's error (a dead-lettered job) explains the stop best.
                watcher.await.context("the coordinator task failed")??;
            } else {
                watcher.abort();
            }
            bail!("{worker_error:#}");
        }
        let coordinator = watcher.await.context("the coordinator task failed")??;
        let (generation, judging) = (generation?, judging?);

        let summary = coordinator.finish(&self.out).await?;
        Ok(RunOutcome {
            run_id: plan.run_id.clone(),
            judge: plan.judge.clone(),
            instructions: plan.generators.iter().map(|g| g.indices.len()).max().unwrap_or(0),
            summary,
            generation,
            judging,
            generation_seconds,
            judging_seconds,
            already,
        })
    }

    /// The model cache for `plan`. With --pipeline every distinct model (generators and the
    /// judge) may be resident at once, and they split the GPU memory; otherwise the phases
    /// take turns and `generate` releases a model as soon as nothing later needs it, so each
    /// gets the whole fraction.
    fn models_for(&self, plan: &RunPlan) -> ModelCache {
        let at_once = if self.pipeline {
            let distinct: BTreeSet<&str> = plan
                .generators
                .iter()
                .filter_map(|g| g.spec.as_ref().map(|s| s.model.as_str()))
                .chain([plan.judge.model.as_str()])
                .collect();
            distinct.len()
        } else {
            1
        };
        self.models.clone().sharing_memory_among(at_once)
    }

    async fn generate(
        &self,
        plan: &RunPlan,
        models: &ModelCache,
        bars: &Bars,
        already: &RunProgress,
        progress: watch::Receiver<RunProgress>,
        failed: watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<(String, GenerationWorkerStats)>> {
        let mut all = Vec::new();
        for (position, generator) in plan.generators.iter().enumerate() {
            let Some(spec) = &generator.spec else { continue };
            let done = already.generator(&generator.name).is_some_and(|g| g.generation_complete());
            if done || *failed.borrow() {
                continue;
            }
            let bar = bars.generation(&generator.name);
            bar.set_message(format!("loading {}", spec.model));
            models.get(&spec.model).await?;
            bar.set_message(String::new());
            bar.reset_elapsed();
            let worker = GenerationWorker {
                run_id: plan.run_id.clone(),
                generator: generator.name.clone(),
                batch: self.batch.clone(),
                prefetch: self.prefetch,
                linger: Duration::from_millis(20),
                worker: self.worker.clone(),
                model: None,
            };
            let name = generator.name.clone();
            let complete =
                move |p: &RunProgress| p.generator(&name).is_some_and(|g| g.generation_complete());
            let shutdown = wait_for(progress.clone(), failed.clone(), complete);
            let stats =
                worker.run(&self.queue, &self.store, models, &self.metrics, shutdown).await?;
            all.push((generator.name.clone(), stats));
            let needed_later = plan.judge.model == spec.model
                || plan.generators[position + 1..]
                    .iter()
                    .any(|later| later.spec.as_ref().is_some_and(|s| s.model == spec.model));
            if !self.pipeline && !needed_later && models.release(&spec.model).await {
                tracing::info!(model = %spec.model, "model released: nothing later in this run uses it");
            }
        }
        Ok(all)
    }

    async fn judge(
        &self,
        plan: &RunPlan,
        models: &ModelCache,
        bars: &Bars,
        progress: watch::Receiver<RunProgress>,
        failed: watch::Receiver<bool>,
    ) -> anyhow::Result<JudgeWorkerStats> {
        if progress.borrow().is_complete() || *failed.borrow() {
            return Ok(JudgeWorkerStats::default());
        }
        bars.judging.reset_elapsed();
        let worker = JudgeWorker {
            run_id: plan.run_id.clone(),
            judge: plan.judge.name.clone(),
            batch: self.batch.clone(),
            prefetch: self.prefetch,
            linger: Duration::from_millis(20),
            worker: self.worker.clone(),
            model: None,
        };
        let shutdown = wait_for(progress, failed, RunProgress::is_complete);
        Ok(worker
            .run(&self.queue, &self.store, &self.cache, models, &self.metrics, shutdown)
            .await?)
    }
}

/// Resolves when the progress satisfies `done`, or when the coordinator failed.
async fn wait_for(
    mut progress: watch::Receiver<RunProgress>,
    mut failed: watch::Receiver<bool>,
    done: impl Fn(&RunProgress) -> bool,
) {
    tokio::select! {
        _ = progress.wait_for(|p| done(p)) => {}
        _ = failed.wait_for(|f| *f) => {}
    }
}

/// The progress bars: one per generated generator, one for the judge.
#[derive(Clone)]
struct Bars {
    _multi: Arc<MultiProgress>,
    generation: Vec<(String, ProgressBar)>,
    judging: ProgressBar,
}

impl Bars {
    fn new(plan: &RunPlan, already: &RunProgress) -> Self {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{prefix:>34} [{bar:30}] {pos}/{len} {per_sec:>10} eta {eta:>4} {wide_msg}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        let bar = |prefix: String, len: usize, pos: usize| {
            let bar = multi.add(ProgressBar::new(len as u64));
            bar.set_style(style.clone());
            bar.set_prefix(prefix);
            bar.set_position(pos as u64);
            bar
        };
        let generation = already
            .generators
            .iter()
            .filter(|g| g.generated)
            .map(|g| (g.name.clone(), bar(format!("generate {}", g.name), g.expected, g.outputs)))
            .collect();
        let (done, total) = already.annotations();
        let judging = bar(format!("judge ({})", plan.judge.name), total, done);
        Self { _multi: Arc::new(multi), generation, judging }
    }

    fn generation(&self, name: &str) -> ProgressBar {
        self.generation
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(ProgressBar::hidden)
    }

    async fn follow(self, mut progress: watch::Receiver<RunProgress>) {
        while progress.changed().await.is_ok() {
            let now = progress.borrow_and_update().clone();
            for g in &now.generators {
                self.generation(&g.name).set_position(g.outputs as u64);
            }
            self.judging.set_position(now.annotations().0 as u64);
        }
    }

    fn finish(&self) {
        for (_, bar) in &self.generation {
            bar.finish();
        }
        self.judging.finish();
    }
}

impl RunOutcome {
    /// The one-screen summary.
    pub fn print(&self) {
        let s = &self.summary;
        let generated: usize = self.generation.iter().map(|(_, g)| g.generated).sum();
        let (stored_outputs, _) = self.already.outputs();
        let (stored_verdicts, _) = self.already.annotations();
        println!();
        println!(
            "herd run {}: {} generator(s) × {} instruction(s), judge {} ({} mode)",
            self.run_id,
            s.generators.len(),
            self.instructions,
            self.judge.name,
            self.judge.mode.as_str()
        );
        println!(
            "this session: generated {generated} answers ({stored_outputs} already stored) in {:.1} s; \
             judged {} verdicts ({} from the judge cache, {stored_verdicts} already stored) in {:.1} s",
            self.generation_seconds, self.judging.judged, self.judging.cached, self.judging_seconds
        );
        println!();
        println!(
            "{:<30} {:>10} {:>10} {:>9} {:>9} {:>15} {:>15} {:>8}",
            "generator",
            "examples/s",
            "out tok/s",
            "gen wall",
            "judge",
            "win rate",
            "LC win rate",
            "unparsed"
        );
        for g in &s.generators {
            let (eps, tps, gen_wall, judge_wall) = match &g.throughput {
                Some(t) => (
                    format!("{:.2}", t.generation.examples_per_second),
                    format!("{:.1}", t.generation.output_tokens_per_second),
                    format!("{:.1} s", t.phases.generation_seconds),
                    format!("{:.1} s", t.phases.judging_seconds),
                ),
                None => ("—".into(), "—".into(), "—".into(), "—".into()),
            };
            let (win, lc) = match &g.leaderboard {
                Some(row) => (
                    format!("{:.2} ± {:.2}", row.win_rate, row.standard_error),
                    match (row.length_controlled_winrate, row.lc_standard_error) {
                        (Some(lc), Some(se)) => format!("{lc:.2} ± {se:.2}"),
                        (Some(lc), None) => format!("{lc:.2}"),
                        _ => "—".into(),
                    },
                ),
                None => ("—".into(), "—".into()),
            };
            println!(
                "{:<30} {eps:>10} {tps:>10} {gen_wall:>9} {judge_wall:>9} {win:>15} {lc:>15} {:>8}",
                g.name, g.unparsed
            );
        }
        println!();
        println!("report: {}", s.report.display());
        println!("leaderboard: {}", s.leaderboard.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> GeneratorSpec {
        GeneratorSpec {
            name: String::new(),
            model: DEFAULT_MODEL.into(),
            template: PromptTemplate::Chat,
            max_new_tokens: 512,
            stop: vec![],
        }
    }

    #[test]
    fn a_generator_spec_overrides_the_defaults_key_by_key() {
        let spec = parse_generator(
            r"model=/m/My-Model.Q4.gguf,template=alpaca_sft,stop=###,stop=\n\n,stop=a\,b",
            &defaults(),
        )
        .unwrap();
        assert_eq!(spec.name, "My-Model.Q4-alpaca_sft");
        assert_eq!(spec.template, PromptTemplate::AlpacaSft);
        assert_eq!(spec.stop, vec!["###".to_string(), "\n\n".into(), "a,b".into()]);
        assert_eq!(spec.max_new_tokens, 512);
        assert_eq!(parse_generator("", &defaults()).unwrap().name, DEFAULT_MODEL);
        assert!(parse_generator("template=fancy", &defaults())
            .unwrap_err()
            .to_string()
            .contains("not one of"));
        assert!(parse_generator("colour=red", &defaults()).is_err());
        assert!(parse_generator("max_new_tokens=many", &defaults()).is_err());
    }

    #[test]
    fn the_baseline_is_the_first_generator_without_its_chat_template() {
        let specs = generator_specs(&[], Some("template=raw"), 64).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            (specs[0].name.as_str(), specs[1].name.as_str()),
            (DEFAULT_MODEL, "smollm2-135m-instruct-raw")
        );
        assert_eq!((specs[1].template, specs[1].max_new_tokens), (PromptTemplate::Raw, 64));
        let same = generator_specs(&["name=a".into()], Some("name=a"), 64).unwrap_err();
        assert!(same.to_string().contains("two generators"), "{same}");
    }

    #[test]
    fn the_run_id_follows_the_out_folder() {
        let local = |out: Option<&str>, id: Option<&str>| LocalArgs {
            out: out.map(PathBuf::from),
            run_id: id.map(String::from),
            engine: EngineArgs {
                device: DeviceSpec::Cpu,
                tensor_parallel: 1,
                batch_size: 1,
                step_tokens: 1,
                threads: None,
                gpu_memory_fraction: 0.9,
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
}
