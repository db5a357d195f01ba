//! The in-process run (`herd run`, `herd evaluate`): the coordinator and the workers of the
//! distributed roles, wired to one in-process queue, a local folder as the store, one
//! metrics registry and one model cache.

mod progress;
mod summary;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_coordinator::{Coordinator, FolderClaim, RunPlan, RunProgress, RunSummary};
use herd_core::jobs::JudgeSpec;
use herd_engine::BatchOptions;
use herd_judge_worker::{JudgeCache, JudgeWorker, JudgeWorkerStats};
use herd_queue::MemoryQueue;
use herd_runtime::RemoteSettings;
use herd_runtime::{ModelCache, NOOP_BENCHMARK_MODEL};
use herd_store::ResultStore;
use herd_telemetry::Metrics;
use herd_worker::{GenerationWorker, GenerationWorkerStats};
use tokio::sync::watch;

use crate::args::{JudgeCacheArgs, LocalArgs, STORE_FOLDER};
use crate::process::{stop_signal, Interrupted, StopSignal};
use progress::Bars;

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
    remote: RemoteSettings,
    pipeline: bool,
    force: bool,
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
            remote: local.remote.settings()?,
            pipeline: local.pipeline,
            force: local.force,
            worker: herd_runtime::worker_id(),
        })
    }

    pub fn store(&self) -> &ResultStore {
        &self.store
    }

    fn store_dir(&self) -> PathBuf {
        self.out.join(STORE_FOLDER)
    }

    /// Runs `plan` to completion: the coordinator publishes what the store lacks, the
    /// generation workers run one generator at a time (each model loaded once), the judge
    /// worker after them (or alongside with --pipeline), then the run folder is written.
    pub async fn execute(&self, plan: RunPlan) -> anyhow::Result<RunOutcome> {
        let claimed = FolderClaim::of(&plan).claim(&self.out, self.force)?;
        if let Some(message) = claimed.message(&self.out) {
            eprintln!("{message}");
        }
        self.check_models(&plan).await?;
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
        // SIGTERM or SIGINT: the workers finish the batch in their engine, store it and give
        // back what they had not started; the store keeps everything for a re-run.
        let (stop_sender, stopped) = watch::channel(None::<StopSignal>);
        let signals = tokio::spawn({
            let failed_sender = failed_sender.clone();
            async move {
                let signal = stop_signal().await;
                stop_sender.send_replace(Some(signal));
                failed_sender.send_replace(true);
            }
        });
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
        signals.abort();
        if let Some(signal) = *stopped.borrow() {
            watcher.abort();
            return Err(Interrupted {
                signal,
                what_is_kept: format!(
                    "every answer and verdict made so far is in {}; run the same command again \
                     to go on from there",
                    self.store_dir().display()
                ),
            }
            .into());
        }
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

    /// Every model the plan names (generators and judge) can load here, checked before any
    /// job runs: a judge that cannot load is found before the answers are generated, not
    /// after.
    async fn check_models(&self, plan: &RunPlan) -> anyhow::Result<()> {
        let models: BTreeSet<&str> = plan
            .generators
            .iter()
            .filter_map(|g| g.spec.as_ref().filter(|s| s.endpoint.is_none()))
            .map(|s| s.model.as_str())
            .chain(plan.judge.endpoint.is_none().then_some(plan.judge.model.as_str()))
            .filter(|&model| model != NOOP_BENCHMARK_MODEL)
            .collect();
        for model in models {
            self.models.check_loadable(model).await?;
        }
        if let Some(url) = &plan.judge.endpoint {
            let client = self.remote.client(url, &herd_judge_worker::JUDGE_API_KEY_VARIABLES)?;
            client.check().await.with_context(|| format!("judge {}", plan.judge.name))?;
        }
        for spec in plan.generators.iter().filter_map(|g| g.spec.as_ref()) {
            if let Some(endpoint) = &spec.endpoint {
                herd_worker::remote::check_endpoint(endpoint, &spec.model)
                    .await
                    .with_context(|| format!("generator {}", spec.name))?;
            }
        }
        Ok(())
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
                .filter_map(|g| g.spec.as_ref().filter(|s| s.endpoint.is_none()))
                .map(|s| s.model.as_str())
                .chain(plan.judge.endpoint.is_none().then_some(plan.judge.model.as_str()))
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
            if spec.endpoint.is_none() {
                bar.set_message(format!("loading {}", spec.model));
                models.get(&spec.model).await?;
                bar.set_message(String::new());
            }
            bar.reset_elapsed();
            let worker = GenerationWorker {
                run_id: plan.run_id.clone(),
                generator: generator.name.clone(),
                batch: self.batch.clone(),
                prefetch: self.prefetch,
                linger: Duration::from_millis(20),
                worker: self.worker.clone(),
                model: None,
                remote: self.remote.clone(),
            };
            let name = generator.name.clone();
            let complete =
                move |p: &RunProgress| p.generator(&name).is_some_and(|g| g.generation_complete());
            let shutdown = wait_for(progress.clone(), failed.clone(), complete);
            let stats =
                worker.run(&self.queue, &self.store, models, &self.metrics, shutdown).await?;
            all.push((generator.name.clone(), stats));
            let needed_later = (plan.judge.endpoint.is_none() && plan.judge.model == spec.model)
                || plan.generators[position + 1..]
                    .iter()
                    .any(|later| later.spec.as_ref().is_some_and(|s| s.model == spec.model));
            let loaded_here = spec.endpoint.is_none();
            if loaded_here && !self.pipeline && !needed_later && models.release(&spec.model).await {
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
            remote: self.remote.clone(),
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
