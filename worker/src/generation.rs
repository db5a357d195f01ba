//! The generation worker loop.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herd_core::jobs::{FinishReason, GenerationJob, GenerationResult, Phase};
use herd_engine::{BatchOptions, GenerationRequest, Model};
use herd_queue::{Delivery, JobQueue, QueueName};
use herd_store::{keys, ResultStore};
use herd_telemetry::Metrics;
use tokio::sync::mpsc;

use crate::prompt::prompt_tokens;
use crate::{
    next_batch, settle, spawn_feeder, unix_now, ActivityRecorder, EngineThread, ModelCache,
    WorkerError, NOOP_BENCHMARK_MODEL,
};

const ROLE: &str = "worker";

/// A worker for one generator's queue (`herd.<run>.gen.<generator>`).
#[derive(Debug, Clone)]
pub struct GenerationWorker {
    pub run_id: String,
    pub generator: String,
    /// Sequences decoding at once in the engine, and new tokens per forward pass.
    pub batch: BatchOptions,
    /// Jobs held unacknowledged at once, and the most handed to one engine call. Keep it
    /// above `batch.max_batch_size`: the engine admits the extra jobs as sequences finish,
    /// so its batch stays full until the call's last few sequences.
    pub prefetch: u16,
    /// How long a batch waits to fill once its first job arrived.
    pub linger: Duration,
    /// This process's name in results (see [`crate::worker_id`]).
    pub worker: String,
    /// The one model this worker serves (`herd worker --model`); `None`: whatever model
    /// the jobs name. A job naming another model is dead-lettered with both names: the
    /// coordinator's plan and this worker's deployment disagree, and retrying cannot help.
    pub model: Option<String>,
}

/// What one run of the loop did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationWorkerStats {
    /// Answers generated and stored.
    pub generated: usize,
    pub output_tokens: u64,
    /// Jobs whose answer was already in the store (a redelivery or a duplicate job).
    pub already_stored: usize,
    pub dead_lettered: usize,
    /// Jobs given back after an engine error.
    pub given_back: usize,
    /// Seconds the engine spent in generation calls.
    pub engine_seconds: f64,
}

impl GenerationWorker {
    /// A worker with the engine's default batch (16 sequences, 512 tokens per step) and
    /// twice that many jobs prefetched.
    pub fn new(run_id: &str, generator: &str, worker: &str) -> Self {
        let batch = BatchOptions::default();
        let prefetch = u16::try_from(batch.max_batch_size * 2).unwrap_or(u16::MAX);
        Self {
            run_id: run_id.into(),
            generator: generator.into(),
            batch,
            prefetch,
            linger: Duration::from_millis(20),
            worker: worker.into(),
            model: None,
        }
    }

    pub fn queue_name(&self) -> QueueName {
        QueueName::generation(&self.run_id, &self.generator)
    }

    /// Why a job naming `model` is not this worker's to run, if it is not.
    fn refuses(&self, model: &str) -> Option<String> {
        let serves = self.model.as_deref()?;
        (model != serves).then(|| {
            format!(
                "the job asks for model {model} but this worker of generator {} serves {serves}",
                self.generator
            )
        })
    }

    /// Consumes the generator's queue until `shutdown` completes or the queue closes.
    /// On shutdown the batch in the engine is finished and stored; jobs not started go back.
    pub async fn run<Q: JobQueue>(
        &self,
        queue: &Q,
        store: &ResultStore,
        models: &ModelCache,
        metrics: &Metrics,
        shutdown: impl Future<Output = ()>,
    ) -> Result<GenerationWorkerStats, WorkerError> {
        let name = self.queue_name();
        queue.declare(&name).await?;
        metrics.set_worker_info(ROLE, &self.generator, &self.worker);
        // At 0 from the start, so that dashboards show a series before the first failure.
        metrics.init_job_counters(&self.run_id, ROLE, name.as_str());
        metrics.init_generation_counters(&self.run_id, &self.generator);
        let mut feed =
            spawn_feeder(queue.consume::<GenerationJob>(&name, self.prefetch.max(1)).await?);
        let engine = EngineThread::spawn(&format!("engine-{}", self.generator));
        let mut pass = Pass {
            worker: self,
            queue: name.to_string(),
            store,
            models,
            metrics,
            engine: &engine,
            activity: ActivityRecorder::open(
                store.clone(),
                &self.run_id,
                Phase::Generation,
                &self.worker,
                name.as_str(),
            )
            .await?,
            stats: GenerationWorkerStats::default(),
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

/// One loop's state: the handles it works with and what it has done.
struct Pass<'a> {
    worker: &'a GenerationWorker,
    queue: String,
    store: &'a ResultStore,
    models: &'a ModelCache,
    metrics: &'a Metrics,
    engine: &'a EngineThread,
    activity: ActivityRecorder,
    stats: GenerationWorkerStats,
}

impl Pass<'_> {
    fn labels(&self) -> [&str; 3] {
        [self.worker.run_id.as_str(), ROLE, self.queue.as_str()]
    }

    async fn process(
        &mut self,
        deliveries: Vec<Delivery<GenerationJob>>,
    ) -> Result<(), WorkerError> {
        let mut by_model: BTreeMap<String, Vec<Delivery<GenerationJob>>> = BTreeMap::new();
        for delivery in deliveries {
            if delivery.redelivered {
                self.metrics.jobs_redelivered.with_label_values(&self.labels()).inc();
            }
            let job = &delivery.job;
            if self.store.exists(&keys::output(&job.run_id, &job.generator.name, job.index)).await?
            {
                self.stats.already_stored += 1;
                self.metrics.jobs_completed.with_label_values(&self.labels()).inc();
                settle(delivery.ack().await)?;
                continue;
            }
            if let Some(reason) = self.worker.refuses(&job.generator.model) {
                self.dead_letter(delivery, &reason).await?;
                continue;
            }
            by_model.entry(job.generator.model.clone()).or_default().push(delivery);
        }
        for (model, group) in by_model {
            if model == NOOP_BENCHMARK_MODEL {
                self.answer_empty(group).await?;
                continue;
            }
            match self.models.get(&model).await {
                Ok(loaded) => self.generate(&model, loaded, group).await?,
                Err(unavailable) => {
                    for delivery in group {
                        self.dead_letter(delivery, &unavailable.to_string()).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The benchmark-only model: an empty answer per job, stored and acked like any other.
    async fn answer_empty(
        &mut self,
        group: Vec<Delivery<GenerationJob>>,
    ) -> Result<(), WorkerError> {
        let batch_started = unix_now();
        self.metrics
            .batch_size
            .with_label_values(&[ROLE, NOOP_BENCHMARK_MODEL])
            .observe(group.len() as f64);
        for delivery in group {
            let job = &delivery.job;
            let result = GenerationResult {
                run_id: job.run_id.clone(),
                generator: job.generator.name.clone(),
                index: job.index,
                instruction: job.instruction.clone(),
                dataset: job.dataset.clone(),
                output: String::new(),
                prompt_tokens: 0,
                output_tokens: 0,
                seconds: 0.0,
                finish_reason: FinishReason::Eos,
                worker: self.worker.worker.clone(),
            };
            self.store.put_output(&result).await?;
            self.metrics.record_output(&result);
            self.metrics.jobs_completed.with_label_values(&self.labels()).inc();
            self.activity.record(&result.generator, batch_started, 0, false);
            self.stats.generated += 1;
            settle(delivery.ack().await)?;
        }
        Ok(())
    }

    async fn dead_letter(
        &mut self,
        delivery: Delivery<GenerationJob>,
        reason: &str,
    ) -> Result<(), WorkerError> {
        tracing::warn!(queue = %self.queue, index = delivery.job.index, reason, "dead-lettering a generation job");
        self.stats.dead_lettered += 1;
        self.metrics.jobs_dead_lettered.with_label_values(&self.labels()).inc();
        settle(delivery.dead_letter(reason).await)
    }

    async fn generate(
        &mut self,
        model_name: &str,
        model: Arc<Model>,
        group: Vec<Delivery<GenerationJob>>,
    ) -> Result<(), WorkerError> {
        let batch_started = unix_now();
        let jobs: Vec<GenerationJob> = group.iter().map(|d| d.job.clone()).collect();
        let tokenizer = model.clone();
        let prompts = self
            .engine
            .submit(move || {
                jobs.iter()
                    .map(|job| {
                        prompt_tokens(&tokenizer, job.generator.template, &job.instruction)
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Vec<_>>()
            })
            .await?;

        let mut pending: HashMap<usize, Delivery<GenerationJob>> = HashMap::new();
        let mut requests = Vec::new();
        for (id, (delivery, prompt)) in group.into_iter().zip(prompts).enumerate() {
            match prompt {
                Ok(prompt_tokens) => {
                    requests.push(GenerationRequest {
                        id,
                        prompt_tokens,
                        max_new_tokens: delivery.job.generator.max_new_tokens,
                        stop: delivery.job.generator.stop.clone(),
                    });
                    pending.insert(id, delivery);
                }
                Err(reason) => {
                    self.dead_letter(delivery, &format!("cannot build the prompt: {reason}"))
                        .await?
                }
            }
        }
        if requests.is_empty() {
            return Ok(());
        }
        self.metrics
            .batch_size
            .with_label_values(&[ROLE, model_name])
            .observe(requests.len() as f64);

        let (finished, mut outputs) = mpsc::unbounded_channel();
        let options = self.worker.batch.clone();
        let done = self.engine.submit(move || {
            model.generate(requests, &options, |output| {
                let _ = finished.send(output);
            })
        });
        while let Some(output) = outputs.recv().await {
            let Some(delivery) = pending.remove(&output.id) else { continue };
            let job = &delivery.job;
            let result = GenerationResult {
                run_id: job.run_id.clone(),
                generator: job.generator.name.clone(),
                index: job.index,
                instruction: job.instruction.clone(),
                dataset: job.dataset.clone(),
                output: output.text,
                prompt_tokens: output.prompt_tokens,
                output_tokens: output.output_tokens,
                seconds: output.seconds,
                finish_reason: finish_reason(output.finish_reason),
                worker: self.worker.worker.clone(),
            };
            self.store.put_output(&result).await?;
            self.metrics.record_output(&result);
            self.metrics.jobs_completed.with_label_values(&self.labels()).inc();
            self.activity.record(
                &result.generator,
                batch_started,
                result.output_tokens as u64,
                false,
            );
            self.stats.generated += 1;
            self.stats.output_tokens += result.output_tokens as u64;
            settle(delivery.ack().await)?;
        }
        let failure = match done.await {
            Ok(Ok(engine_stats)) => {
                self.stats.engine_seconds += engine_stats.seconds;
                None
            }
            Ok(Err(engine_error)) => Some(engine_error.to_string()),
            Err(gone) => Some(gone.to_string()),
        };
        if let Some(reason) = failure {
            tracing::error!(queue = %self.queue, jobs = pending.len(), reason, "generation failed; giving the jobs back");
            for (_, delivery) in pending {
                self.stats.given_back += 1;
                self.metrics.jobs_failed.with_label_values(&self.labels()).inc();
                settle(delivery.nack().await)?;
            }
        }
        Ok(())
    }
}

/// The engine's reason as the domain records it.
fn finish_reason(reason: herd_engine::FinishReason) -> FinishReason {
    match reason {
        herd_engine::FinishReason::Eos => FinishReason::Eos,
        herd_engine::FinishReason::Stop => FinishReason::Stop,
        herd_engine::FinishReason::Length => FinishReason::Length,
    }
}
