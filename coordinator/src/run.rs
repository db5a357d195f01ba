//! The coordinator's loop: publish what is missing, follow the store, stop on dead letters.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use herd_core::eval_set::EvalSet;
use herd_core::jobs::{GenerationJob, GenerationResult, GeneratorSpec, JudgeJob};
use herd_queue::{JobQueue, QueueName};
use herd_store::{keys, ResultStore};
use herd_telemetry::Metrics;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::{CoordinatorError, GeneratorProgress, RunPlan, RunProgress, RunSummary};

/// Unsettled dead letters the coordinator holds at once. They stay unacknowledged so that
/// they go back to the dead-letter queue for inspection when the coordinator stops; the
/// bound is high so that a run with many dead letters never hides the later ones.
const DEAD_LETTER_PREFETCH: u16 = u16::MAX;

/// What the coordinator does when a message lands in the run's dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeadLetterPolicy {
    /// Any dead letter fails the run at once (`herd run`: one process, someone watching).
    #[default]
    FailRun,
    /// A job of the plan whose result is missing drops its generator from the run: the
    /// other generators are finished and written, and [`Coordinator::dropped`] says why
    /// the dropped ones are missing. Messages that are not jobs of this plan (malformed,
    /// another run's or another spec's) and jobs whose result was stored anyway (a
    /// duplicate) are counted and logged only. `herd coordinator` uses this.
    DropGenerator,
}

/// A generator left out of the run because one of its jobs was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedGenerator {
    /// The first dead letter's queue, job and reason.
    pub first: String,
    /// Dead-lettered jobs of this generator seen so far.
    pub jobs: usize,
}

/// One message seen in the dead-letter queue.
struct DeadLetter {
    queue: String,
    reason: String,
    job: serde_json::Value,
}

impl DeadLetter {
    fn generator(&self) -> String {
        self.job
            .get("generator")
            .and_then(|g| g.get("name").or(Some(g)))
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
            .unwrap_or_default()
    }

    fn into_error(self) -> CoordinatorError {
        let index = self.job.get("index").map(|v| v.to_string()).unwrap_or_default();
        CoordinatorError::DeadLettered {
            job: format!("generator {}, eval-set instruction {index}", self.generator()),
            queue: self.queue,
            reason: self.reason,
        }
    }
}

/// Drives one run. Generic over the queue; the store is its memory.
pub struct Coordinator<Q> {
    queue: Q,
    store: ResultStore,
    metrics: Metrics,
    plan: RunPlan,
    eval_set: EvalSet,
    /// How often the store is listed while the run is under way.
    pub poll_interval: Duration,
    /// What a dead letter does to the run.
    pub dead_letter_policy: DeadLetterPolicy,
    /// Judge jobs this coordinator published, by (generator position, index).
    judge_published: HashSet<(usize, usize)>,
    progress: RunProgress,
    /// Generators dropped by [`DeadLetterPolicy::DropGenerator`], by name.
    dropped: BTreeMap<String, DroppedGenerator>,
    /// Dead letters already counted, so a redelivered one is not counted twice.
    dead_letters_seen: HashSet<String>,
}

/// What the store holds for one generator.
struct Stored {
    outputs: BTreeSet<usize>,
    annotations: BTreeSet<usize>,
}

impl<Q: JobQueue> Coordinator<Q> {
    pub fn new(
        queue: Q,
        store: ResultStore,
        metrics: Metrics,
        plan: RunPlan,
    ) -> Result<Self, CoordinatorError> {
        let eval_set = EvalSet::embedded();
        plan.validate(&eval_set)?;
        Ok(Self {
            queue,
            store,
            metrics,
            plan,
            eval_set,
            poll_interval: Duration::from_millis(250),
            dead_letter_policy: DeadLetterPolicy::default(),
            judge_published: HashSet::new(),
            progress: RunProgress::default(),
            dropped: BTreeMap::new(),
            dead_letters_seen: HashSet::new(),
        })
    }

    /// Generators left out of the run because a job of theirs was dead-lettered
    /// ([`DeadLetterPolicy::DropGenerator`]), by name.
    pub fn dropped(&self) -> &BTreeMap<String, DroppedGenerator> {
        &self.dropped
    }

    /// The queues of the run: each generated generator's, the judge's and the dead letters'.
    pub fn queues(&self) -> Vec<QueueName> {
        let mut queues: Vec<QueueName> = self
            .plan
            .generators
            .iter()
            .filter(|g| g.spec.is_some())
            .map(|g| self.generation_queue(&g.name))
            .collect();
        queues.push(self.judge_queue());
        queues.push(QueueName::dead_letters(&self.plan.run_id));
        queues
    }

    pub fn plan(&self) -> &RunPlan {
        &self.plan
    }

    pub fn progress(&self) -> &RunProgress {
        &self.progress
    }

    fn generation_queue(&self, generator: &str) -> QueueName {
        QueueName::generation(&self.plan.run_id, generator)
    }

    fn judge_queue(&self) -> QueueName {
        QueueName::judge(&self.plan.run_id, &self.plan.judge.name)
    }

    /// Records the plan (refusing settings that differ from what the run was started with),
    /// declares the queues, and publishes a job for every answer and verdict missing from the
    /// store. Returns the progress as found.
    ///
    /// Jobs still waiting in the run's queues (published by an earlier life of the
    /// coordinator) are purged first, so a restarted coordinator queues exactly what the
    /// store lacks; jobs a worker holds at that moment may still be done twice, which the
    /// write-once result keys make harmless.
    pub async fn start(&mut self) -> Result<RunProgress, CoordinatorError> {
        self.check_plan().await?;
        let run = self.plan.run_id.clone();
        let judge_queue = self.judge_queue();
        self.queue.declare(&judge_queue).await?;
        self.purge(&judge_queue).await?;
        let mut progress = RunProgress::default();
        for (position, generator) in self.plan.generators.clone().iter().enumerate() {
            let stored = self.stored(position).await?;
            let missing: Vec<usize> =
                generator.indices.iter().copied().filter(|i| !stored.outputs.contains(i)).collect();
            match &generator.spec {
                Some(spec) => {
                    let queue = self.generation_queue(&generator.name);
                    self.queue.declare(&queue).await?;
                    self.purge(&queue).await?;
                    let jobs: Vec<GenerationJob> = missing
                        .iter()
                        .map(|&index| {
                            let row = &self.eval_set.rows()[index];
                            GenerationJob {
                                run_id: run.clone(),
                                generator: spec.clone(),
                                index,
                                instruction: row.instruction.clone(),
                                dataset: row.dataset.clone(),
                            }
                        })
                        .collect();
                    self.publish(&queue, &jobs).await?;
                }
                None => {
                    if let Some(&index) = missing.first() {
                        return Err(CoordinatorError::MissingOutput {
                            run,
                            generator: generator.name.clone(),
                            index,
                        });
                    }
                }
            }
            progress.generators.push(GeneratorProgress {
                name: generator.name.clone(),
                expected: generator.indices.len(),
                outputs: generator.indices.len() - missing.len(),
                annotations: stored.annotations.len(),
                outputs_at_start: generator.indices.len() - missing.len(),
                annotations_at_start: stored.annotations.len(),
                generated: generator.spec.is_some(),
            });
            self.publish_judge_jobs(position, &stored).await?;
        }
        self.init_counters();
        let (_, expected) = progress.outputs();
        for phase in ["generation", "judging"] {
            self.metrics.run_jobs_expected.with_label_values(&[&run, phase]).set(expected as i64);
        }
        self.set_progress(progress);
        Ok(self.progress.clone())
    }

    /// Follows the store until every verdict is stored, publishing a judge job as each
    /// answer lands and sending the progress on `progress` after each look. Fails when a job
    /// of the run is dead-lettered.
    ///
    /// With [`DeadLetterPolicy::DropGenerator`] the run is over when every generator is
    /// complete or dropped; it fails only when every generator was dropped.
    pub async fn watch(
        &mut self,
        progress: &watch::Sender<RunProgress>,
    ) -> Result<RunProgress, CoordinatorError> {
        let mut dead_letters = self.dead_letters().await?;
        loop {
            let mut now = RunProgress::default();
            for position in 0..self.plan.generators.len() {
                let stored = self.stored(position).await?;
                if !self.dropped.contains_key(&self.plan.generators[position].name) {
                    self.publish_judge_jobs(position, &stored).await?;
                }
                let mut generator = self.progress.generators[position].clone();
                generator.outputs = stored.outputs.len();
                generator.annotations = stored.annotations.len();
                now.generators.push(generator);
            }
            self.set_progress(now);
            progress.send_replace(self.progress.clone());
            self.record_queue_depths().await;
            if self
                .progress
                .generators
                .iter()
                .all(|g| g.is_complete() || self.dropped.contains_key(&g.name))
            {
                if self.dropped.len() == self.plan.generators.len() {
                    let first =
                        self.dropped.values().next().map(|d| d.first.clone()).unwrap_or_default();
                    return Err(CoordinatorError::EveryGeneratorDropped { first });
                }
                return Ok(self.progress.clone());
            }
            let wait = tokio::time::sleep(self.poll_interval);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    Some(dead) = dead_letters.recv() => self.on_dead_letter(dead).await?,
                }
            }
        }
    }

    /// Applies the dead-letter policy to one dead letter.
    async fn on_dead_letter(&mut self, dead: DeadLetter) -> Result<(), CoordinatorError> {
        let identity = format!("{}|{}", dead.queue, dead.job);
        if self.dead_letters_seen.insert(identity) {
            let labels = [self.plan.run_id.as_str(), "coordinator", dead.queue.as_str()];
            self.metrics.jobs_dead_lettered.with_label_values(&labels).inc();
        }
        if self.dead_letter_policy == DeadLetterPolicy::FailRun {
            return Err(dead.into_error());
        }
        let Some(position) = self.blocking_position(&dead).await? else {
            tracing::warn!(queue = %dead.queue, reason = %dead.reason, "a message that is no missing job of this run was dead-lettered; the run goes on");
            return Ok(());
        };
        let name = self.plan.generators[position].name.clone();
        let error = dead.into_error().to_string();
        let entry = self.dropped.entry(name.clone()).or_insert_with(|| {
            tracing::error!(generator = %name, %error, "dropping the generator from the run");
            DroppedGenerator { first: error, jobs: 0 }
        });
        entry.jobs += 1;
        Ok(())
    }

    /// The plan position of the generator a dead letter blocks: a job this plan publishes
    /// (same run, generator, spec or judge, and a planned index) whose result is not stored.
    async fn blocking_position(
        &self,
        dead: &DeadLetter,
    ) -> Result<Option<usize>, CoordinatorError> {
        let run = self.plan.run_id.as_str();
        if let Ok(job) = serde_json::from_value::<JudgeJob>(dead.job.clone()) {
            let position = self.plan.generators.iter().position(|g| g.name == job.generator);
            let Some(position) =
                position.filter(|_| job.run_id == run && job.judge == self.plan.judge)
            else {
                return Ok(None);
            };
            let planned = self.plan.generators[position].indices.binary_search(&job.index).is_ok();
            let key = keys::annotation(run, &self.plan.judge.name, &job.generator, job.index);
            return Ok((planned && !self.store.exists(&key).await?).then_some(position));
        }
        if let Ok(job) = serde_json::from_value::<GenerationJob>(dead.job.clone()) {
            let ours = |spec: &Option<GeneratorSpec>| spec.as_ref() == Some(&job.generator);
            let position = self.plan.generators.iter().position(|g| ours(&g.spec));
            let Some(position) = position.filter(|_| job.run_id == run) else { return Ok(None) };
            let planned = self.plan.generators[position].indices.binary_search(&job.index).is_ok();
            let key = keys::output(run, &job.generator.name, job.index);
            return Ok((planned && !self.store.exists(&key).await?).then_some(position));
        }
        Ok(None)
    }

    /// Reads every answer and verdict back and writes the run folder under `out` (without
    /// the generators that were dropped).
    pub async fn finish(&self, out: &Path) -> Result<RunSummary, CoordinatorError> {
        let mut plan = self.plan.clone();
        plan.generators.retain(|g| !self.dropped.contains_key(&g.name));
        crate::folder::write_run_folder(&self.store, &plan, &self.eval_set, out).await
    }

    /// Copies the run folder [`finish`](Self::finish) wrote into the store, under
    /// `runs/<run>/report/`. Returns how many files were stored.
    pub async fn store_report(&self, summary: &RunSummary) -> Result<usize, CoordinatorError> {
        crate::folder::store_run_folder(&self.store, &self.plan.run_id, summary).await
    }

    /// [`start`](Self::start), [`watch`](Self::watch) and [`finish`](Self::finish).
    pub async fn run(
        &mut self,
        out: &Path,
        progress: &watch::Sender<RunProgress>,
    ) -> Result<RunSummary, CoordinatorError> {
        self.start().await?;
        self.watch(progress).await?;
        self.finish(out).await
    }

    fn set_progress(&mut self, progress: RunProgress) {
        let run = self.plan.run_id.as_str();
        let (outputs, _) = progress.outputs();
        let (annotations, _) = progress.annotations();
        self.metrics.run_jobs_done.with_label_values(&[run, "generation"]).set(outputs as i64);
        self.metrics.run_jobs_done.with_label_values(&[run, "judging"]).set(annotations as i64);
        self.progress = progress;
    }

    /// Exports the counters the coordinator keeps per job queue of the plan at 0: the jobs
    /// it published there and the ones it saw dead-lettered from there. A dashboard then
    /// shows a 0 before the first dead letter instead of "no data".
    fn init_counters(&self) {
        let run = self.plan.run_id.as_str();
        let dead_letters = QueueName::dead_letters(run);
        for queue in self.queues().iter().filter(|q| **q != dead_letters) {
            self.metrics.jobs_published.with_label_values(&[run, queue.as_str()]);
            self.metrics.jobs_dead_lettered.with_label_values(&[
                run,
                "coordinator",
                queue.as_str(),
            ]);
        }
    }

    /// Sets `herd_queue_depth` and `herd_queue_consumers` for the run's queues; a queue the
    /// broker cannot describe right now keeps its last figures.
    async fn record_queue_depths(&self) {
        for queue in self.queues() {
            match self.queue.stats(&queue).await {
                Ok(stats) => {
                    let labels = [self.plan.run_id.as_str(), queue.as_str()];
                    self.metrics
                        .queue_depth
                        .with_label_values(&labels)
                        .set(i64::from(stats.messages));
                    self.metrics
                        .queue_consumers
                        .with_label_values(&labels)
                        .set(i64::from(stats.consumers));
                }
                Err(e) => tracing::debug!(queue = %queue, error = %e, "no figures for the queue"),
            }
        }
    }

    async fn purge(&self, queue: &QueueName) -> Result<(), CoordinatorError> {
        let purged = self.queue.purge(queue).await?;
        if purged > 0 {
            tracing::info!(queue = %queue, jobs = purged, "purged jobs an earlier coordinator published");
        }
        Ok(())
    }

    async fn publish<T: Serialize + Sync>(
        &self,
        queue: &QueueName,
        jobs: &[T],
    ) -> Result<(), CoordinatorError> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.queue.publish(queue, jobs).await?;
        self.metrics
            .jobs_published
            .with_label_values(&[&self.plan.run_id, queue.as_str()])
            .inc_by(jobs.len() as u64);
        tracing::info!(queue = %queue, jobs = jobs.len(), "published");
        Ok(())
    }

    /// The indices of the plan that have an answer / a verdict in the store.
    async fn stored(&self, position: usize) -> Result<Stored, CoordinatorError> {
        let generator = &self.plan.generators[position];
        let planned: BTreeSet<usize> = generator.indices.iter().copied().collect();
        let run = &self.plan.run_id;
        let indices = |keys: Vec<String>| -> BTreeSet<usize> {
            keys.iter().filter_map(|k| keys::index_of(k)).filter(|i| planned.contains(i)).collect()
        };
        let outputs = indices(self.store.list(&keys::outputs_prefix(run, &generator.name)).await?);
        let annotations = indices(
            self.store
                .list(&keys::annotations_prefix(run, &self.plan.judge.name, &generator.name))
                .await?,
        );
        Ok(Stored { outputs, annotations })
    }

    /// Publishes a judge job for every stored answer without a verdict that this
    /// coordinator has not published yet.
    async fn publish_judge_jobs(
        &mut self,
        position: usize,
        stored: &Stored,
    ) -> Result<(), CoordinatorError> {
        let generator = self.plan.generators[position].name.clone();
        let new: Vec<usize> = stored
            .outputs
            .difference(&stored.annotations)
            .copied()
            .filter(|&index| !self.judge_published.contains(&(position, index)))
            .collect();
        // One GET per answer, several at once (each is a round trip on S3); `buffered`
        // yields them in index order, so the jobs are published in the same order as before.
        let store = &self.store;
        let run = self.plan.run_id.as_str();
        let generator_name = generator.as_str();
        let answers: Vec<(usize, Option<GenerationResult>)> = futures::stream::iter(new)
            .map(|index| async move {
                let key = keys::output(run, generator_name, index);
                store.get_json::<GenerationResult>(&key).await.map(|output| (index, output))
            })
            .buffered(crate::READ_CONCURRENCY)
            .try_collect()
            .await?;
        let mut jobs = Vec::new();
        for (index, output) in answers {
            let Some(output) = output else { continue };
            let row = &self.eval_set.rows()[index];
            jobs.push(JudgeJob {
                run_id: self.plan.run_id.clone(),
                judge: self.plan.judge.clone(),
                generator: generator.clone(),
                index,
                instruction: row.instruction.clone(),
                dataset: row.dataset.clone(),
                reference_output: row.output.clone(),
                model_output: output.output,
            });
        }
        let queue = self.judge_queue();
        self.publish(&queue, &jobs).await?;
        self.judge_published.extend(jobs.iter().map(|j| (position, j.index)));
        Ok(())
    }

    /// Stores each generator's spec and the judge's spec on first start; refuses a start
    /// whose settings differ from the stored ones (the stored results were made with those).
    async fn check_plan(&self) -> Result<(), CoordinatorError> {
        let run = &self.plan.run_id;
        let mut documents: Vec<(String, String, serde_json::Value)> = Vec::new();
        for g in &self.plan.generators {
            let value = match &g.spec {
                Some(spec) => serde_json::to_value(spec),
                None => serde_json::to_value(serde_json::json!({ "imported": g.name })),
            }
            .expect("specs serialise");
            documents.push((
                format!("generator-{}", g.name),
                format!("generator {}", g.name),
                value,
            ));
        }
        let judge = serde_json::to_value(&self.plan.judge).expect("specs serialise");
        documents.push((
            format!("judge-{}", self.plan.judge.name),
            format!("judge {}", self.plan.judge.name),
            judge,
        ));
        for (name, what, requested) in documents {
            let key = keys::plan(run, &name);
            self.store.put_json_once(&key, &requested).await?;
            let stored: Option<serde_json::Value> = self.store.get_json(&key).await?;
            if let Some(stored) = stored.filter(|s| *s != requested) {
                return Err(CoordinatorError::PlanConflict {
                    run: run.clone(),
                    what,
                    stored: stored.to_string(),
                    requested: requested.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Dead letters of this run, from a background consumer.
    async fn dead_letters(&self) -> Result<mpsc::UnboundedReceiver<DeadLetter>, CoordinatorError> {
        let dlq = QueueName::dead_letters(&self.plan.run_id);
        self.queue.declare(&dlq).await?;
        let mut consumer =
            self.queue.consume::<serde_json::Value>(&dlq, DEAD_LETTER_PREFETCH).await?;
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // Held unsettled: when the coordinator stops, they go back for inspection.
            let mut held = Vec::new();
            while let Some(next) = consumer.next().await {
                let Ok(delivery) = next else { continue };
                let info = delivery.dead_letter_info.clone();
                let dead = DeadLetter {
                    queue: info
                        .as_ref()
                        .map(|i| i.queue.clone())
                        .unwrap_or_else(|| dlq.to_string()),
                    reason: info.map(|i| i.reason).unwrap_or_else(|| "unknown".into()),
                    job: delivery.job.clone(),
                };
                held.push(delivery);
                if sender.send(dead).is_err() {
                    break;
                }
            }
        });
        Ok(receiver)
    }
}
