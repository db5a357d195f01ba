//! The generation worker loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herd_core::eval_set::EvalSet;
use herd_core::jobs::{
    check_generation_job, FinishReason, GenerationJob, GenerationResult, Phase, PlanMismatch,
    Stored,
};
use herd_engine::{BatchOptions, GenerationRequest, Model, Sampling};
use herd_queue::{Delivery, JobQueue, QueueName};
use herd_runtime::{
    run_jobs, unix_now, Clients, JobHandler, LoopSettings, ModelCache, Pass, RemoteSettings, Role,
    RuntimeError, NOOP_BENCHMARK_MODEL,
};
use herd_store::{keys, ResultStore};
use herd_telemetry::Metrics;
use tokio::sync::mpsc;

const ROLE: Role =
    Role { label: "worker", phase: Phase::Generation, job: "generation", work: "generation" };

use crate::prompt::prompt_tokens;
use crate::remote::{self, API_KEY_VARIABLE};

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
    /// This process's name in results (see [`herd_runtime::worker_id`]).
    pub worker: String,
    /// The one model this worker serves (`herd worker --model`); `None`: whatever model
    /// the jobs name. A job naming another model is dead-lettered with both names: the
    /// coordinator's plan and this worker's deployment disagree, and retrying cannot help.
    pub model: Option<String>,
    /// How generators served elsewhere (`endpoint=`) are called.
    pub remote: RemoteSettings,
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
            remote: RemoteSettings::default(),
        }
    }

    pub fn queue_name(&self) -> QueueName {
        QueueName::generation(&self.run_id, &self.generator)
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
    ) -> Result<GenerationWorkerStats, RuntimeError> {
        let mut generation = Generation {
            worker: self,
            stats: GenerationWorkerStats::default(),
            clients: Clients::default(),
        };
        let counts = run_jobs(&mut generation, queue, store, models, metrics, shutdown).await?;
        Ok(GenerationWorkerStats {
            already_stored: counts.already_stored,
            dead_lettered: counts.dead_lettered,
            given_back: counts.given_back,
            ..generation.stats
        })
    }
}

/// The generation handler of one run of the loop: the worker's settings and what it did.
struct Generation<'a> {
    worker: &'a GenerationWorker,
    stats: GenerationWorkerStats,
    clients: Clients,
}

impl JobHandler for Generation<'_> {
    type Job = GenerationJob;
    type Admitted = Delivery<GenerationJob>;

    const ROLE: Role = ROLE;

    fn settings(&self) -> LoopSettings {
        let worker = self.worker;
        LoopSettings {
            run_id: worker.run_id.clone(),
            name: worker.generator.clone(),
            queue: worker.queue_name(),
            engine_thread: format!("engine-{}", worker.generator),
            worker: worker.worker.clone(),
            prefetch: worker.prefetch,
            linger: worker.linger,
            model: worker.model.clone(),
        }
    }

    fn init_metrics(&self, metrics: &Metrics) {
        metrics.init_generation_counters(&self.worker.run_id, &self.worker.generator);
    }

    fn model(job: &GenerationJob) -> &str {
        &job.generator.model
    }

    fn loads_model(job: &GenerationJob) -> bool {
        job.generator.endpoint.is_none()
    }

    fn index(job: &GenerationJob) -> usize {
        job.index
    }

    fn result_key(job: &GenerationJob) -> String {
        keys::output(&job.run_id, &job.generator.name, job.index)
    }

    fn check(&self, job: &GenerationJob) -> Result<(), PlanMismatch> {
        let worker = self.worker;
        check_generation_job(job, EvalSet::shared(), &worker.run_id, &worker.generator)
    }

    fn refusal(&self, asked: &str, serves: &str) -> String {
        format!(
            "the job asks for model {asked} but this worker of generator {} serves {serves}",
            self.worker.generator
        )
    }

    async fn admit(
        &mut self,
        _pass: &mut Pass<'_, Self>,
        delivery: Delivery<GenerationJob>,
    ) -> Result<Option<Delivery<GenerationJob>>, RuntimeError> {
        Ok(Some(delivery))
    }

    fn delivery(admitted: Delivery<GenerationJob>) -> Delivery<GenerationJob> {
        admitted
    }

    async fn handle(
        &mut self,
        pass: &mut Pass<'_, Self>,
        model_name: &str,
        model: Option<Arc<Model>>,
        group: Vec<Delivery<GenerationJob>>,
    ) -> Result<(), RuntimeError> {
        match model {
            Some(model) => self.generate(pass, model_name, model, group).await,
            None if group.iter().any(|d| d.job.generator.endpoint.is_some()) => {
                self.generate_remote(pass, model_name, group).await
            }
            None => self.answer_empty(pass, group).await,
        }
    }
}

impl Generation<'_> {
    /// The benchmark-only model: an empty answer per job, stored and acked like any other.
    async fn answer_empty(
        &mut self,
        pass: &mut Pass<'_, Self>,
        group: Vec<Delivery<GenerationJob>>,
    ) -> Result<(), RuntimeError> {
        let batch_started = unix_now();
        pass.metrics
            .batch_size
            .with_label_values(&[ROLE.label, NOOP_BENCHMARK_MODEL])
            .observe(group.len() as f64);
        for delivery in group {
            let answer = Answer {
                text: String::new(),
                prompt_tokens: 0,
                output_tokens: 0,
                seconds: 0.0,
                finish_reason: FinishReason::Eos,
            };
            self.store(pass, delivery, answer, batch_started).await?;
        }
        Ok(())
    }

    async fn generate(
        &mut self,
        pass: &mut Pass<'_, Self>,
        model_name: &str,
        model: Arc<Model>,
        group: Vec<Delivery<GenerationJob>>,
    ) -> Result<(), RuntimeError> {
        let batch_started = unix_now();
        let jobs: Vec<GenerationJob> = group.iter().map(|d| d.job.clone()).collect();
        let tokenizer = model.clone();
        let prompts = pass
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
                        sampling: match &delivery.job.generator.sampling {
                            Some(s) => Sampling {
                                temperature: s.temperature as f32,
                                top_p: s.top_p as f32,
                                seed: s.seed_for(delivery.job.index),
                            },
                            None => Sampling::GREEDY,
                        },
                        ..Default::default()
                    });
                    pending.insert(id, delivery);
                }
                Err(reason) => {
                    pass.dead_letter(delivery, &format!("cannot build the prompt: {reason}"))
                        .await?
                }
            }
        }
        if requests.is_empty() {
            return Ok(());
        }
        pass.metrics
            .batch_size
            .with_label_values(&[ROLE.label, model_name])
            .observe(requests.len() as f64);

        let (finished, mut outputs) = mpsc::unbounded_channel();
        let options = self.worker.batch.clone();
        let done = pass.engine.submit(move || {
            model.generate(requests, &options, |output| {
                let _ = finished.send(output);
            })
        });
        while let Some(output) = outputs.recv().await {
            let Some(delivery) = pending.remove(&output.id) else { continue };
            let answer = Answer {
                text: output.text,
                prompt_tokens: output.prompt_tokens,
                output_tokens: output.output_tokens,
                seconds: output.seconds,
                finish_reason: finish_reason(output.finish_reason),
            };
            self.store(pass, delivery, answer, batch_started).await?;
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
            pass.give_back(pending.into_values().collect(), &reason).await?;
        }
        Ok(())
    }
}

impl Generation<'_> {
    /// Jobs of a generator served elsewhere: one request each, at most the endpoint's
    /// concurrency in flight, each answer stored (then acknowledged) as it lands. A refused
    /// request is dead-lettered; one that exhausted its retries goes back to the queue.
    async fn generate_remote(
        &mut self,
        pass: &mut Pass<'_, Self>,
        model_name: &str,
        group: Vec<Delivery<GenerationJob>>,
    ) -> Result<(), RuntimeError> {
        let batch_started = unix_now();
        let mut pending: HashMap<usize, Delivery<GenerationJob>> = HashMap::new();
        let mut in_flight = tokio::task::JoinSet::new();
        for (id, delivery) in group.into_iter().enumerate() {
            let Some(endpoint) = delivery.job.generator.endpoint.clone() else {
                let reason = "a local job in a remote group".to_string();
                pass.dead_letter(delivery, &reason).await?;
                continue;
            };
            let client =
                match self.clients.get(&self.worker.remote, &endpoint.url, &[API_KEY_VARIABLE]) {
                    Ok(client) => client,
                    Err(error) => {
                        pass.dead_letter(delivery, &error.to_string()).await?;
                        continue;
                    }
                };
            let request = match remote::request(&delivery.job, endpoint.api) {
                Ok(request) => request,
                Err(reason) => {
                    pass.dead_letter(delivery, &reason).await?;
                    continue;
                }
            };
            in_flight.spawn(async move { (id, client.complete(&request).await) });
            pending.insert(id, delivery);
        }
        pass.metrics
            .batch_size
            .with_label_values(&[ROLE.label, model_name])
            .observe(pending.len() as f64);
        while let Some(joined) = in_flight.join_next().await {
            let (id, answer) = match joined {
                Ok(done) => done,
                Err(task) => {
                    // A request task panicked: its job cannot be told apart; give back what
                    // is left once the others land.
                    tracing::error!(%task, "a remote request task failed");
                    continue;
                }
            };
            let Some(delivery) = pending.remove(&id) else { continue };
            let completion = match answer {
                Ok(completion) => completion,
                Err(error) if error.is_permanent() => {
                    pass.dead_letter(delivery, &error.to_string()).await?;
                    continue;
                }
                Err(error) => {
                    pass.give_back(vec![delivery], &error.to_string()).await?;
                    continue;
                }
            };
            let answer = Answer {
                finish_reason: remote::finish_reason(&completion, &delivery.job),
                text: completion.text,
                prompt_tokens: completion.prompt_tokens.unwrap_or(0),
                output_tokens: completion.completion_tokens.unwrap_or(0),
                seconds: completion.seconds,
            };
            self.store(pass, delivery, answer, batch_started).await?;
        }
        if !pending.is_empty() {
            let left: Vec<_> = pending.into_values().collect();
            pass.give_back(left, "a remote request task failed").await?;
        }
        Ok(())
    }
}

/// One generated answer, from the engine or a served model.
struct Answer {
    text: String,
    prompt_tokens: usize,
    output_tokens: usize,
    seconds: f64,
    finish_reason: FinishReason,
}

impl Generation<'_> {
    /// Stores `answer` as `delivery`'s result, counts it, then acknowledges the job.
    async fn store(
        &mut self,
        pass: &mut Pass<'_, Self>,
        delivery: Delivery<GenerationJob>,
        answer: Answer,
        batch_started: f64,
    ) -> Result<(), RuntimeError> {
        let job = &delivery.job;
        let result = GenerationResult {
            run_id: job.run_id.clone(),
            generator: job.generator.name.clone(),
            index: job.index,
            instruction: job.instruction.clone(),
            dataset: job.dataset.clone(),
            output: answer.text,
            prompt_tokens: answer.prompt_tokens,
            output_tokens: answer.output_tokens,
            seconds: answer.seconds,
            finish_reason: answer.finish_reason,
            worker: self.worker.worker.clone(),
            stored: Some(Stored::now(batch_started, false)),
        };
        pass.store.put_output(&result).await?;
        pass.metrics.record_output(&result);
        let tokens = result.output_tokens as u64;
        pass.activity.record(&result.generator, batch_started, tokens, false);
        self.stats.generated += 1;
        self.stats.output_tokens += tokens;
        pass.complete(delivery).await
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
