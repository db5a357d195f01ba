//! The judge worker loop.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herd_core::jobs::{JudgeJob, JudgeResult, Phase};
use herd_core::judge::SwapDecision;
use herd_engine::{BatchOptions, Model};
use herd_queue::{Delivery, JobQueue, QueueName};
use herd_store::{keys, ResultStore};
use herd_telemetry::Metrics;
use herd_worker::{
    next_batch, settle, spawn_feeder, unix_now, ActivityRecorder, EngineThread, ModelCache,
    WorkerError, NOOP_BENCHMARK_MODEL,
};
use tokio::sync::mpsc;

use crate::{
    judge_batch, CachedJudgement, JudgeCache, JudgeCacheKey, LogprobCandidates, ModelIdentities,
    Verdict,
};

const ROLE: &str = "judge-worker";

/// A worker for one judge's queue (`herd.<run>.judge.<judge>`).
#[derive(Debug, Clone)]
pub struct JudgeWorker {
    pub run_id: String,
    /// The judge's name (`JudgeSpec::name`), which names its queue.
    pub judge: String,
    /// Sequences in flight (ranking mode) and tokens per forward pass (both modes).
    pub batch: BatchOptions,
    /// Jobs held unacknowledged at once, and the most judged in one engine call.
    pub prefetch: u16,
    /// How long a batch waits to fill once its first job arrived.
    pub linger: Duration,
    pub worker: String,
    /// The one judge model this worker serves (`herd judge-worker --judge-model`); `None`:
    /// whatever model the jobs name. A job naming another model is dead-lettered.
    pub model: Option<String>,
}

/// What one run of the loop did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JudgeWorkerStats {
    /// Verdicts the judge model computed (parsed or not).
    pub judged: usize,
    /// Verdicts taken from the cache.
    pub cached: usize,
    /// Of `judged`, verdicts without a preference (stored as null, not cached).
    pub unparsed: usize,
    /// Jobs whose verdict was already in the store.
    pub already_stored: usize,
    pub dead_lettered: usize,
    pub given_back: usize,
    /// Prompt tokens the judge model read.
    pub prompt_tokens: u64,
}

impl JudgeWorker {
    /// A worker with the engine's default batch (16 sequences, 512 tokens per step) and
    /// twice that many jobs prefetched.
    pub fn new(run_id: &str, judge: &str, worker: &str) -> Self {
        let batch = BatchOptions::default();
        let prefetch = u16::try_from(batch.max_batch_size * 2).unwrap_or(u16::MAX);
        Self {
            run_id: run_id.into(),
            judge: judge.into(),
            batch,
            prefetch,
            linger: Duration::from_millis(20),
            worker: worker.into(),
            model: None,
        }
    }

    pub fn queue_name(&self) -> QueueName {
        QueueName::judge(&self.run_id, &self.judge)
    }

    /// Why a job naming judge model `model` is not this worker's to run, if it is not.
    fn refuses(&self, model: &str) -> Option<String> {
        let serves = self.model.as_deref()?;
        (model != serves).then(|| {
            format!(
                "the job asks for judge model {model} but this worker of judge {} serves {serves}",
                self.judge
            )
        })
    }

    /// Consumes the judge's queue until `shutdown` completes or the queue closes. The judge
    /// model is loaded (through `models`) only when a job misses the cache.
    pub async fn run<Q: JobQueue>(
        &self,
        queue: &Q,
        store: &ResultStore,
        cache: &JudgeCache,
        models: &ModelCache,
        metrics: &Metrics,
        shutdown: impl Future<Output = ()>,
    ) -> Result<JudgeWorkerStats, WorkerError> {
        let name = self.queue_name();
        queue.declare(&name).await?;
        metrics.set_worker_info(ROLE, &self.judge, &self.worker);
        // At 0 from the start, so that dashboards show a series before the first failure.
        metrics.init_job_counters(&self.run_id, ROLE, name.as_str());
        metrics.judge_prompt_tokens.with_label_values(&[&self.run_id, &self.judge]);
        let mut feed = spawn_feeder(queue.consume::<JudgeJob>(&name, self.prefetch.max(1)).await?);
        let engine = EngineThread::spawn(&format!("engine-judge-{}", self.judge));
        let mut pass = Pass {
            worker: self,
            queue: name.to_string(),
            store,
            cache,
            models,
            metrics,
            engine: &engine,
            identities: ModelIdentities::default(),
            candidates: HashMap::new(),
            activity: ActivityRecorder::open(
                store.clone(),
                &self.run_id,
                Phase::Judging,
                &self.worker,
                name.as_str(),
            )
            .await?,
            stats: JudgeWorkerStats::default(),
        };
        let mut shutdown = std::pin::pin!(shutdown);
        while let Some(batch) =
            next_batch(&mut feed, usize::from(self.prefetch), self.linger, &mut shutdown).await
        {
            pass.process(batch?).await?;
            pass.activity.flush().await?;
        }
        Ok(pass.stats)
    }
}

/// A job that missed the cache, on its way to the judge model.
struct Miss {
    delivery: Delivery<JudgeJob>,
    key: JudgeCacheKey,
    identity: String,
}

/// The benchmark-only judge's verdict: a tie, at once, never cached.
fn noop_verdict(job: &JudgeJob, worker: &str) -> JudgeResult {
    JudgeResult {
        run_id: job.run_id.clone(),
        judge: job.judge.name.clone(),
        generator: job.generator.clone(),
        index: job.index,
        preference: Some(1.5),
        raw_completion: NOOP_BENCHMARK_MODEL.to_string(),
        is_switched: SwapDecision::for_instruction(&job.instruction).is_switched(),
        truncated: false,
        prompt_tokens: 0,
        seconds: 0.0,
        worker: worker.to_string(),
    }
}

struct Pass<'a> {
    worker: &'a JudgeWorker,
    queue: String,
    store: &'a ResultStore,
    cache: &'a JudgeCache,
    models: &'a ModelCache,
    metrics: &'a Metrics,
    engine: &'a EngineThread,
    identities: ModelIdentities,
    /// Logprob candidates per judge model, checked once.
    candidates: HashMap<String, Result<LogprobCandidates, String>>,
    activity: ActivityRecorder,
    stats: JudgeWorkerStats,
}

impl Pass<'_> {
    fn labels(&self) -> [&str; 3] {
        [self.worker.run_id.as_str(), ROLE, self.queue.as_str()]
    }

    async fn process(&mut self, deliveries: Vec<Delivery<JudgeJob>>) -> Result<(), WorkerError> {
        let batch_started = unix_now();
        let mut misses: BTreeMap<String, Vec<Miss>> = BTreeMap::new();
        for delivery in deliveries {
            if delivery.redelivered {
                self.metrics.jobs_redelivered.with_label_values(&self.labels()).inc();
            }
            let job = &delivery.job;
            if self
                .store
                .exists(&keys::annotation(&job.run_id, &job.judge.name, &job.generator, job.index))
                .await?
            {
                self.stats.already_stored += 1;
                self.metrics.jobs_completed.with_label_values(&self.labels()).inc();
                settle(delivery.ack().await)?;
                continue;
            }
            if let Some(reason) = self.worker.refuses(&job.judge.model) {
                self.dead_letter(delivery, &reason).await?;
                continue;
            }
            if job.judge.model == NOOP_BENCHMARK_MODEL {
                let result = noop_verdict(job, &self.worker.worker);
                self.store(delivery, result, batch_started, false).await?;
                continue;
            }
            let identity = match self.identities.get(&job.judge.model).await {
                Ok(identity) => identity,
                Err(unavailable) => {
                    self.dead_letter(delivery, &unavailable.to_string()).await?;
                    continue;
                }
            };
            let key = JudgeCacheKey::new(job, &identity);
            if let Some(cached) = self.cache.get(&key).await? {
                let result = cached.result(job, &self.worker.worker);
                self.store(delivery, result, batch_started, true).await?;
                continue;
            }
            misses.entry(job.judge.model.clone()).or_default().push(Miss {
                delivery,
                key,
                identity,
            });
        }
        for (model, group) in misses {
            match self.models.get(&model).await {
                Ok(loaded) => self.judge(&model, loaded, group, batch_started).await?,
                Err(unavailable) => {
                    for miss in group {
                        self.dead_letter(miss.delivery, &unavailable.to_string()).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Stores a verdict, then acknowledges its job.
    async fn store(
        &mut self,
        delivery: Delivery<JudgeJob>,
        result: JudgeResult,
        batch_started: f64,
        cached: bool,
    ) -> Result<(), WorkerError> {
        self.store.put_annotation(&result).await?;
        self.metrics.record_annotation(&result);
        self.metrics.jobs_completed.with_label_values(&self.labels()).inc();
        let tokens = if cached { 0 } else { result.prompt_tokens as u64 };
        self.activity.record(&result.generator, batch_started, tokens, cached);
        if cached {
            self.stats.cached += 1;
        } else {
            self.stats.judged += 1;
            self.stats.prompt_tokens += tokens;
            self.stats.unparsed += usize::from(result.preference.is_none());
        }
        settle(delivery.ack().await)
    }

    async fn dead_letter(
        &mut self,
        delivery: Delivery<JudgeJob>,
        reason: &str,
    ) -> Result<(), WorkerError> {
        tracing::warn!(queue = %self.queue, index = delivery.job.index, reason, "dead-lettering a judge job");
        self.stats.dead_lettered += 1;
        self.metrics.jobs_dead_lettered.with_label_values(&self.labels()).inc();
        settle(delivery.dead_letter(reason).await)
    }

    async fn judge(
        &mut self,
        model_name: &str,
        model: Arc<Model>,
        group: Vec<Miss>,
        batch_started: f64,
    ) -> Result<(), WorkerError> {
        if !self.candidates.contains_key(model_name) {
            let checked = model.clone();
            let candidates =
                self.engine.submit(move || LogprobCandidates::for_model(&checked)).await?;
            self.candidates.insert(model_name.to_string(), candidates);
        }
        let candidates = self.candidates[model_name].clone();
        self.metrics.batch_size.with_label_values(&[ROLE, model_name]).observe(group.len() as f64);

        let jobs: Vec<JudgeJob> = group.iter().map(|m| m.delivery.job.clone()).collect();
        let mut pending: Vec<Option<Miss>> = group.into_iter().map(Some).collect();
        let (sender, mut verdicts) = mpsc::unbounded_channel::<(usize, Result<Verdict, String>)>();
        let options = self.worker.batch.clone();
        let done = self.engine.submit(move || {
            judge_batch(
                &model,
                &jobs,
                &options,
                candidates.as_ref().map_err(String::as_str),
                |position, outcome| {
                    let _ = sender.send((position, outcome));
                },
            )
        });
        while let Some((position, outcome)) = verdicts.recv().await {
            let Some(miss) = pending.get_mut(position).and_then(Option::take) else { continue };
            let verdict = match outcome {
                Ok(verdict) => verdict,
                Err(reason) => {
                    self.dead_letter(miss.delivery, &reason).await?;
                    continue;
                }
            };
            let job = &miss.delivery.job;
            let result = verdict.prepared.result(
                job,
                verdict.preference,
                verdict.raw_completion,
                verdict.seconds,
                &self.worker.worker,
            );
            if let Some(cached) =
                CachedJudgement::from_result(&result, &miss.identity, job.judge.mode)
            {
                self.cache.put(&miss.key, &cached).await?;
            }
            self.store(miss.delivery, result, batch_started, false).await?;
        }
        let failure = match done.await {
            Ok(Ok(())) => None,
            Ok(Err(engine_error)) => Some(engine_error.to_string()),
            Err(gone) => Some(gone.to_string()),
        };
        if let Some(reason) = failure {
            let left: Vec<Miss> = pending.into_iter().flatten().collect();
            tracing::error!(queue = %self.queue, jobs = left.len(), reason, "judging failed; giving the jobs back");
            for miss in left {
                self.stats.given_back += 1;
                self.metrics.jobs_failed.with_label_values(&self.labels()).inc();
                settle(miss.delivery.nack().await)?;
            }
        }
        Ok(())
    }
}
