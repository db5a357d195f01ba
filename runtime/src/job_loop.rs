//! The job loop both worker roles run, generic over what a batch of one model's jobs does.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use herd_core::jobs::{Phase, PlanMismatch};
use herd_engine::Model;
use herd_queue::{Delivery, JobQueue, QueueName};
use herd_store::ResultStore;
use herd_telemetry::Metrics;
use serde::de::DeserializeOwned;

use crate::{
    next_batch, settle, spawn_feeder, unix_now, ActivityRecorder, EngineThread, ModelCache,
    RuntimeError, NOOP_BENCHMARK_MODEL,
};

/// What a worker role is called in metrics, activity records and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// The `role` label of the job counters, `herd_batch_size` and `herd_worker_info`
    /// (`worker`, `judge-worker`).
    pub label: &'static str,
    /// The phase its activity records count towards.
    pub phase: Phase,
    /// Its jobs in logs: "dead-lettering a {job} job".
    pub job: &'static str,
    /// Its engine work in logs: "{work} failed; giving the jobs back".
    pub work: &'static str,
}

/// How one loop runs, read from its handler when the loop starts.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub run_id: String,
    /// What the loop serves, the `model` label of `herd_worker_info`: the generator's or
    /// the judge's name.
    pub name: String,
    pub queue: QueueName,
    /// The name of the loop's engine thread.
    pub engine_thread: String,
    /// This process's name in results and activity records (see [`crate::worker_id`]).
    pub worker: String,
    /// Jobs held unacknowledged at once, and the most taken into one batch.
    pub prefetch: u16,
    /// How long a batch waits to fill once its first job arrived.
    pub linger: Duration,
    /// The one model this worker serves; `None`: whatever model the jobs name. A job naming
    /// another model is dead-lettered with [`JobHandler::refusal`]: the coordinator's plan
    /// and this worker's deployment disagree, and retrying cannot help.
    pub model: Option<String>,
}

/// What the loop did with jobs itself or through its [`Pass`]; the handler counts the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Jobs whose result was already in the store (a redelivery or a duplicate job).
    pub already_stored: usize,
    pub dead_lettered: usize,
    /// Jobs given back after an engine error.
    pub given_back: usize,
}

/// What a role does with its jobs. The loop ([`run_jobs`]) calls [`admit`](Self::admit) for
/// each job that passed the common checks, in delivery order, then
/// [`handle`](Self::handle) once per model named in the batch with what `admit` kept.
pub trait JobHandler: Send + Sized {
    /// The job this role's queue carries.
    type Job: DeserializeOwned + Send + Sync + 'static;
    /// A job on its way from `admit` to `handle`: its delivery and what `admit` found out.
    type Admitted: Send;

    const ROLE: Role;

    /// How the loop runs; called once, when it starts.
    fn settings(&self) -> LoopSettings;

    /// Sets the role's own metric series to 0 (after the job counters, which the loop sets).
    fn init_metrics(&self, _metrics: &Metrics) {}

    /// The model `job` names.
    fn model(job: &Self::Job) -> &str;

    /// Whether `job`'s model is one this process loads; `false` for a model served
    /// elsewhere (over HTTP), whose group [`handle`](Self::handle) gets with no model.
    fn loads_model(_job: &Self::Job) -> bool {
        true
    }

    /// `job`'s position in the eval set (logs).
    fn index(job: &Self::Job) -> usize;

    /// The store key of `job`'s result: a job whose result exists is acknowledged at once.
    fn result_key(job: &Self::Job) -> String;

    /// Whether `job` is one the run's plan makes for this worker's queue (run, generator or
    /// judge, eval-set index, instruction, …: `herd_core::jobs::check_*`). Checked first,
    /// before any work: a job that is not is dead-lettered with the mismatch.
    fn check(&self, job: &Self::Job) -> Result<(), PlanMismatch>;

    /// The dead-letter reason for a job asking for model `asked` when this worker serves
    /// only `serves`.
    fn refusal(&self, asked: &str, serves: &str) -> String;

    /// A job not yet stored and this worker's to run. Returns what `handle` needs of it, or
    /// `None` when `admit` settled the job itself (through `pass`).
    fn admit(
        &mut self,
        pass: &mut Pass<'_, Self>,
        delivery: Delivery<Self::Job>,
    ) -> impl Future<Output = Result<Option<Self::Admitted>, RuntimeError>> + Send;

    /// The delivery of an admitted job (dead-lettered when its model cannot load).
    fn delivery(admitted: Self::Admitted) -> Delivery<Self::Job>;

    /// Runs `group`, admitted jobs naming `model_name`, on `model` (`None` for
    /// [`NOOP_BENCHMARK_MODEL`] and for models served elsewhere ([`loads_model`](Self::loads_model)):
    /// nothing is loaded), and settles every one of them: stores
    /// a result then [`Pass::complete`], or [`Pass::dead_letter`], or [`Pass::give_back`].
    fn handle(
        &mut self,
        pass: &mut Pass<'_, Self>,
        model_name: &str,
        model: Option<Arc<Model>>,
        group: Vec<Self::Admitted>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}

/// One loop's state, lent to its handler: the store, metrics, engine thread and activity
/// record it works with, and the settling of jobs with their metrics.
pub struct Pass<'a, H> {
    pub store: &'a ResultStore,
    pub metrics: &'a Metrics,
    /// The loop's engine thread: inference runs here, never on tokio's workers.
    pub engine: &'a EngineThread,
    pub activity: ActivityRecorder,
    /// When the batch being processed started (Unix seconds).
    pub batch_started: f64,
    settings: LoopSettings,
    queue: String,
    counts: JobCounts,
    handler: PhantomData<fn() -> H>,
}

impl<H: JobHandler> Pass<'_, H> {
    /// The job counters' labels: run, role, queue.
    pub fn labels(&self) -> [&str; 3] {
        [self.settings.run_id.as_str(), H::ROLE.label, self.queue.as_str()]
    }

    pub fn settings(&self) -> &LoopSettings {
        &self.settings
    }

    /// This process's name in results.
    pub fn worker(&self) -> &str {
        &self.settings.worker
    }

    pub fn counts(&self) -> JobCounts {
        self.counts
    }

    /// Acknowledges a job whose result is stored, and counts it completed.
    pub async fn complete(&mut self, delivery: Delivery<H::Job>) -> Result<(), RuntimeError> {
        self.metrics.jobs_completed.with_label_values(&self.labels()).inc();
        settle(delivery.ack().await)
    }

    /// Moves a job that can never succeed to the run's dead-letter queue with `reason`.
    pub async fn dead_letter(
        &mut self,
        delivery: Delivery<H::Job>,
        reason: &str,
    ) -> Result<(), RuntimeError> {
        let index = H::index(&delivery.job);
        tracing::warn!(queue = %self.queue, index, reason, "dead-lettering a {} job", H::ROLE.job);
        self.counts.dead_lettered += 1;
        self.metrics.jobs_dead_lettered.with_label_values(&self.labels()).inc();
        settle(delivery.dead_letter(reason).await)
    }

    /// Gives back the jobs an engine failure (`reason`) left unsettled, for another attempt.
    pub async fn give_back(
        &mut self,
        deliveries: Vec<Delivery<H::Job>>,
        reason: &str,
    ) -> Result<(), RuntimeError> {
        tracing::error!(queue = %self.queue, jobs = deliveries.len(), reason, "{} failed; giving the jobs back", H::ROLE.work);
        for delivery in deliveries {
            self.counts.given_back += 1;
            self.metrics.jobs_failed.with_label_values(&self.labels()).inc();
            settle(delivery.nack().await)?;
        }
        Ok(())
    }

    /// Why a job naming `model` is not this worker's to run, if it is not.
    fn refuses(&self, handler: &H, model: &str) -> Option<String> {
        let serves = self.settings.model.as_deref()?;
        (model != serves).then(|| handler.refusal(model, serves))
    }

    async fn process(
        &mut self,
        handler: &mut H,
        models: &ModelCache,
        deliveries: Vec<Delivery<H::Job>>,
    ) -> Result<(), RuntimeError> {
        self.batch_started = unix_now();
        // (model, whether this process loads it) → its jobs
        let mut by_model: BTreeMap<(String, bool), Vec<H::Admitted>> = BTreeMap::new();
        for delivery in deliveries {
            if delivery.redelivered {
                self.metrics.jobs_redelivered.with_label_values(&self.labels()).inc();
            }
            if let Err(mismatch) = handler.check(&delivery.job) {
                let reason = format!("the job is not one of the run's plan: {mismatch}");
                self.dead_letter(delivery, &reason).await?;
                continue;
            }
            if self.store.exists(&H::result_key(&delivery.job)).await? {
                self.counts.already_stored += 1;
                self.metrics.jobs_completed.with_label_values(&self.labels()).inc();
                settle(delivery.ack().await)?;
                continue;
            }
            let model = H::model(&delivery.job).to_string();
            if let Some(reason) = self.refuses(handler, &model) {
                self.dead_letter(delivery, &reason).await?;
                continue;
            }
            let loads = H::loads_model(&delivery.job);
            if let Some(admitted) = handler.admit(self, delivery).await? {
                by_model.entry((model, loads)).or_default().push(admitted);
            }
        }
        for ((model, loads), group) in by_model {
            let loaded = if model == NOOP_BENCHMARK_MODEL || !loads {
                None
            } else {
                match models.get(&model).await {
                    Ok(loaded) => Some(loaded),
                    Err(unavailable) => {
                        for admitted in group {
                            self.dead_letter(H::delivery(admitted), &unavailable.to_string())
                                .await?;
                        }
                        continue;
                    }
                }
            };
            handler.handle(self, &model, loaded, group).await?;
        }
        Ok(())
    }
}

/// Consumes `handler`'s queue until `shutdown` completes or the queue closes. On shutdown
/// the batch in the engine is finished and stored; jobs not started go back. Returns what
/// the loop counted; the handler keeps its own counts.
pub async fn run_jobs<H: JobHandler, Q: JobQueue>(
    handler: &mut H,
    queue: &Q,
    store: &ResultStore,
    models: &ModelCache,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<JobCounts, RuntimeError> {
    let settings = handler.settings();
    let role = H::ROLE;
    let name = settings.queue.clone();
    queue.declare(&name).await?;
    metrics.set_worker_info(role.label, &settings.name, &settings.worker);
    // At 0 from the start, so that dashboards show a series before the first failure.
    metrics.init_job_counters(&settings.run_id, role.label, name.as_str());
    handler.init_metrics(metrics);
    let mut feed = spawn_feeder(queue.consume::<H::Job>(&name, settings.prefetch.max(1)).await?);
    let engine = EngineThread::spawn(&settings.engine_thread);
    let activity = ActivityRecorder::open(
        store.clone(),
        &settings.run_id,
        role.phase,
        &settings.worker,
        name.as_str(),
    )
    .await?;
    let (max, linger) = (usize::from(settings.prefetch), settings.linger);
    let mut pass = Pass {
        store,
        metrics,
        engine: &engine,
        activity,
        batch_started: unix_now(),
        settings,
        queue: name.to_string(),
        counts: JobCounts::default(),
        handler: PhantomData,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    while let Some(batch) = next_batch(&mut feed, max, linger, &mut shutdown).await {
        pass.process(handler, models, batch?).await?;
        pass.activity.flush().await?;
    }
    Ok(pass.counts)
}
