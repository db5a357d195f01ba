//! The judge worker loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herd_core::eval_set::EvalSet;
use herd_core::jobs::{
    check_judge_job, check_judged_answer, GenerationResult, JudgeJob, JudgeResult, Phase,
    PlanMismatch, Stored,
};
use herd_core::judge::{ServedJudgment, SwapDecision};
use herd_engine::{BatchOptions, Model};
use herd_openai::{ChatMessage, CompletionRequest, Prompt};
use herd_queue::{Delivery, JobQueue, QueueName};
use herd_runtime::{
    run_jobs, Clients, JobHandler, LoopSettings, ModelCache, Pass, RemoteSettings, Role,
    RuntimeError, NOOP_BENCHMARK_MODEL,
};
use herd_store::{keys, ResultStore};
use herd_telemetry::Metrics;
use tokio::sync::mpsc;

use crate::{
    judge_batch, CachedJudgement, JudgeCache, JudgeCacheKey, LogprobCandidates, ModelIdentities,
    Verdict,
};

const ROLE: Role =
    Role { label: "judge-worker", phase: Phase::Judging, job: "judge", work: "judging" };

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
    /// How judges served elsewhere (`JudgeSpec::endpoint`) are called.
    pub remote: RemoteSettings,
}

/// The variables holding the key a served judge is sent, in order (each `NAME_FILE`, a
/// file's path, before `NAME`).
pub const JUDGE_API_KEY_VARIABLES: [&str; 2] = ["HERD_JUDGE_API_KEY", "OPENAI_API_KEY"];

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
            remote: RemoteSettings::default(),
        }
    }

    pub fn queue_name(&self) -> QueueName {
        QueueName::judge(&self.run_id, &self.judge)
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
    ) -> Result<JudgeWorkerStats, RuntimeError> {
        let mut judging = Judging {
            worker: self,
            cache,
            identities: ModelIdentities::default(),
            candidates: HashMap::new(),
            stats: JudgeWorkerStats::default(),
            clients: Clients::default(),
        };
        let counts = run_jobs(&mut judging, queue, store, models, metrics, shutdown).await?;
        Ok(JudgeWorkerStats {
            already_stored: counts.already_stored,
            dead_lettered: counts.dead_lettered,
            given_back: counts.given_back,
            ..judging.stats
        })
    }
}

/// A job that missed the cache, on its way to the judge model.
struct Miss {
    delivery: Delivery<JudgeJob>,
    /// The cache key and model identity of a local judge; a served judge's verdicts are
    /// not cached (the run's store keeps them).
    cached_as: Option<(JudgeCacheKey, String)>,
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
        stored: None,
        price: None,
    }
}

/// The judge handler of one run of the loop: the worker's settings, the verdict cache and
/// what it did.
struct Judging<'a> {
    worker: &'a JudgeWorker,
    cache: &'a JudgeCache,
    identities: ModelIdentities,
    /// Logprob candidates per judge model, checked once.
    candidates: HashMap<String, Result<LogprobCandidates, String>>,
    stats: JudgeWorkerStats,
    clients: Clients,
}

impl JobHandler for Judging<'_> {
    type Job = JudgeJob;
    type Admitted = Miss;

    const ROLE: Role = ROLE;

    fn settings(&self) -> LoopSettings {
        let worker = self.worker;
        LoopSettings {
            run_id: worker.run_id.clone(),
            name: worker.judge.clone(),
            queue: worker.queue_name(),
            engine_thread: format!("engine-judge-{}", worker.judge),
            worker: worker.worker.clone(),
            prefetch: worker.prefetch,
            linger: worker.linger,
            model: worker.model.clone(),
        }
    }

    fn init_metrics(&self, metrics: &Metrics) {
        metrics.judge_prompt_tokens.with_label_values(&[&self.worker.run_id, &self.worker.judge]);
    }

    fn model(job: &JudgeJob) -> &str {
        &job.judge.model
    }

    fn loads_model(job: &JudgeJob) -> bool {
        job.judge.endpoint.is_none()
    }

    fn index(job: &JudgeJob) -> usize {
        job.index
    }

    fn result_key(job: &JudgeJob) -> String {
        keys::annotation(&job.run_id, &job.judge.name, &job.generator, job.index)
    }

    fn check(&self, job: &JudgeJob) -> Result<(), PlanMismatch> {
        check_judge_job(job, EvalSet::shared(), &self.worker.run_id, &self.worker.judge)
    }

    fn refusal(&self, asked: &str, serves: &str) -> String {
        format!(
            "the job asks for judge model {asked} but this worker of judge {} serves {serves}",
            self.worker.judge
        )
    }

    /// The benchmark-only judge's tie and a cached verdict are stored at once; a cache miss
    /// goes on to the judge model.
    async fn admit(
        &mut self,
        pass: &mut Pass<'_, Self>,
        delivery: Delivery<JudgeJob>,
    ) -> Result<Option<Miss>, RuntimeError> {
        let job = &delivery.job;
        // The answer judged must be the one stored for (run, generator, index): a job
        // carrying another answer would store a verdict on text the run never produced.
        let answer = keys::output(&job.run_id, &job.generator, job.index);
        let stored: Option<GenerationResult> = pass.store.get_json(&answer).await?;
        if let Err(mismatch) = check_judged_answer(job, stored.as_ref()) {
            let reason = format!("the job is not one of the run's plan: {mismatch}");
            pass.dead_letter(delivery, &reason).await?;
            return Ok(None);
        }
        if job.judge.model == NOOP_BENCHMARK_MODEL {
            let result = noop_verdict(job, pass.worker());
            self.store(pass, delivery, result, false).await?;
            return Ok(None);
        }
        if job.judge.endpoint.is_some() {
            return Ok(Some(Miss { delivery, cached_as: None }));
        }
        let identity = match self.identities.get(&job.judge.model).await {
            Ok(identity) => identity,
            Err(unavailable) => {
                pass.dead_letter(delivery, &unavailable.to_string()).await?;
                return Ok(None);
            }
        };
        let key = JudgeCacheKey::new(job, &identity);
        if let Some(cached) = self.cache.get(&key).await? {
            let result = cached.result(job, pass.worker());
            self.store(pass, delivery, result, true).await?;
            return Ok(None);
        }
        Ok(Some(Miss { delivery, cached_as: Some((key, identity)) }))
    }

    fn delivery(miss: Miss) -> Delivery<JudgeJob> {
        miss.delivery
    }

    async fn handle(
        &mut self,
        pass: &mut Pass<'_, Self>,
        model_name: &str,
        model: Option<Arc<Model>>,
        group: Vec<Miss>,
    ) -> Result<(), RuntimeError> {
        match model {
            Some(model) => self.judge(pass, model_name, model, group).await,
            None if group.iter().any(|m| m.delivery.job.judge.endpoint.is_some()) => {
                self.judge_served(pass, model_name, group).await
            }
            // `admit` answers the benchmark-only judge's jobs itself; none come here.
            None => {
                for miss in group {
                    let result = noop_verdict(&miss.delivery.job, pass.worker());
                    self.store(pass, miss.delivery, result, false).await?;
                }
                Ok(())
            }
        }
    }
}

impl Judging<'_> {
    /// Stores a verdict, then acknowledges its job.
    async fn store(
        &mut self,
        pass: &mut Pass<'_, Self>,
        delivery: Delivery<JudgeJob>,
        mut result: JudgeResult,
        cached: bool,
    ) -> Result<(), RuntimeError> {
        result.stored = Some(Stored::now(pass.batch_started, cached));
        pass.store.put_annotation(&result).await?;
        pass.metrics.record_annotation(&result);
        let tokens = if cached { 0 } else { result.prompt_tokens as u64 };
        let batch_started = pass.batch_started;
        pass.activity.record(&result.generator, batch_started, tokens, cached);
        if cached {
            self.stats.cached += 1;
        } else {
            self.stats.judged += 1;
            self.stats.prompt_tokens += tokens;
            self.stats.unparsed += usize::from(result.preference.is_none());
        }
        pass.complete(delivery).await
    }

    async fn judge(
        &mut self,
        pass: &mut Pass<'_, Self>,
        model_name: &str,
        model: Arc<Model>,
        group: Vec<Miss>,
    ) -> Result<(), RuntimeError> {
        if !self.candidates.contains_key(model_name) {
            let checked = model.clone();
            let candidates =
                pass.engine.submit(move || LogprobCandidates::for_model(&checked)).await?;
            self.candidates.insert(model_name.to_string(), candidates);
        }
        let candidates = self.candidates[model_name].clone();
        pass.metrics
            .batch_size
            .with_label_values(&[ROLE.label, model_name])
            .observe(group.len() as f64);

        let jobs: Vec<JudgeJob> = group.iter().map(|m| m.delivery.job.clone()).collect();
        let mut pending: Vec<Option<Miss>> = group.into_iter().map(Some).collect();
        let (sender, mut verdicts) = mpsc::unbounded_channel::<(usize, Result<Verdict, String>)>();
        let options = self.worker.batch.clone();
        let done = pass.engine.submit(move || {
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
                    pass.dead_letter(miss.delivery, &reason).await?;
                    continue;
                }
            };
            let job = &miss.delivery.job;
            let result = verdict.prepared.result(
                job,
                verdict.preference,
                verdict.raw_completion,
                verdict.seconds,
                pass.worker(),
            );
            if let Some((key, identity)) = &miss.cached_as {
                if let Some(cached) =
                    CachedJudgement::from_result(&result, identity, job.judge.mode)
                {
                    self.cache.put(key, &cached).await?;
                }
            }
            self.store(pass, miss.delivery, result, false).await?;
        }
        let failure = match done.await {
            Ok(Ok(())) => None,
            Ok(Err(engine_error)) => Some(engine_error.to_string()),
            Err(gone) => Some(gone.to_string()),
        };
        if let Some(reason) = failure {
            let left: Vec<Delivery<JudgeJob>> =
                pending.into_iter().flatten().map(|miss| miss.delivery).collect();
            pass.give_back(left, &reason).await?;
        }
        Ok(())
    }

    /// Jobs of a judge served elsewhere: one request each (at most the endpoint's
    /// concurrency in flight), each verdict stored (then acknowledged) as it lands. A
    /// refused request is dead-lettered; one that exhausted its retries goes back.
    async fn judge_served(
        &mut self,
        pass: &mut Pass<'_, Self>,
        model_name: &str,
        group: Vec<Miss>,
    ) -> Result<(), RuntimeError> {
        pass.metrics
            .batch_size
            .with_label_values(&[ROLE.label, model_name])
            .observe(group.len() as f64);
        let mut pending: HashMap<usize, (Miss, ServedJudgment)> = HashMap::new();
        let mut in_flight = tokio::task::JoinSet::new();
        for (id, miss) in group.into_iter().enumerate() {
            let job = &miss.delivery.job;
            let url = job.judge.endpoint.clone().unwrap_or_default();
            let prepared = ServedJudgment::prepare(job);
            let client = self.clients.get(&self.worker.remote, &url, &JUDGE_API_KEY_VARIABLES);
            let (prepared, client) = match (prepared, client) {
                (Ok(prepared), Ok(client)) => (prepared, client),
                (Err(reason), _) => {
                    pass.dead_letter(miss.delivery, &reason).await?;
                    continue;
                }
                (_, Err(error)) => {
                    pass.dead_letter(miss.delivery, &error.to_string()).await?;
                    continue;
                }
            };
            let request = CompletionRequest {
                model: job.judge.model.clone(),
                prompt: Prompt::Chat(
                    prepared
                        .messages
                        .iter()
                        .map(|(role, content)| ChatMessage::new(role, content))
                        .collect(),
                ),
                max_tokens: prepared.max_tokens,
                temperature: prepared.temperature,
                top_p: 1.0,
                seed: None,
                stop: Vec::new(),
                top_logprobs: prepared.top_logprobs,
                continue_final_message: prepared.continue_final_message,
            };
            in_flight.spawn(async move { (id, client.complete(&request).await) });
            pending.insert(id, (miss, prepared));
        }
        while let Some(joined) = in_flight.join_next().await {
            let Ok((id, answer)) = joined else {
                tracing::error!("a served-judge request task failed");
                continue;
            };
            let Some((miss, prepared)) = pending.remove(&id) else { continue };
            let completion = match answer {
                Ok(completion) => completion,
                Err(error) if error.is_permanent() => {
                    pass.dead_letter(miss.delivery, &error.to_string()).await?;
                    continue;
                }
                Err(error) => {
                    pass.give_back(vec![miss.delivery], &error.to_string()).await?;
                    continue;
                }
            };
            let choice = completion.raw["choices"][0].clone();
            let verdict = prepared.verdict(&completion.text, &choice);
            let tokens =
                (completion.prompt_tokens.unwrap_or(0), completion.completion_tokens.unwrap_or(0));
            let result = prepared.result(
                &miss.delivery.job,
                verdict,
                tokens,
                completion.seconds,
                pass.worker(),
            );
            self.store(pass, miss.delivery, result, false).await?;
        }
        if !pending.is_empty() {
            let left = pending.into_values().map(|(miss, _)| miss.delivery).collect();
            pass.give_back(left, "a served-judge request task failed").await?;
        }
        Ok(())
    }
}
