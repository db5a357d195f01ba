//! The coordinator's loop: publish what is missing, follow the store, stop on dead letters.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use herd_core::eval_set::EvalSet;
use herd_core::jobs::{
    check_generation_result, check_judge_job, check_judge_result, GenerationJob, GenerationResult,
    GeneratorSpec, JudgeJob, JudgeResult,
};
use herd_queue::{JobQueue, QueueError, QueueName};
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

/// One message seen in the run's dead-letter queue: the queue it was dead-lettered from,
/// why, and the job (its text as a JSON string when it is not JSON at all). Listed in the
/// coordinator's summary and in the run folder's `dead_letters.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub queue: String,
    pub reason: String,
    pub job: serde_json::Value,
}

/// A stored result that did not match the run's plan: its key, where it was moved (the key
/// is then free for the real result, whose job is published again) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedResult {
    pub key: String,
    pub moved_to: String,
    pub reason: String,
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
    /// Every dead letter seen, once each, in arrival order.
    dead_letters: Vec<DeadLetter>,
    /// Answers checked against the plan, by (generator position, index): their text.
    answers: HashMap<(usize, usize), String>,
    /// Verdicts checked against the plan, by (generator position, index).
    verdicts_checked: HashSet<(usize, usize)>,
    /// Stored results moved aside because they did not match the plan.
    rejected: Vec<RejectedResult>,
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
            dead_letters: Vec::new(),
            answers: HashMap::new(),
            verdicts_checked: HashSet::new(),
            rejected: Vec::new(),
        })
    }

    /// Generators left out of the run because a job of theirs was dead-lettered
    /// ([`DeadLetterPolicy::DropGenerator`]), by name.
    pub fn dropped(&self) -> &BTreeMap<String, DroppedGenerator> {
        &self.dropped
    }

    /// Every message seen in the run's dead-letter queue, once each, in arrival order.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    /// Stored results that did not match the plan and were moved aside (their jobs were
    /// published again).
    pub fn rejected(&self) -> &[RejectedResult] {
        &self.rejected
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
            let mut stored = self.stored(position).await?;
            self.check_results(position, &mut stored, false).await?;
            let missing: Vec<usize> =
                generator.indices.iter().copied().filter(|i| !stored.outputs.contains(i)).collect();
            match &generator.spec {
                Some(_) => {
                    let queue = self.generation_queue(&generator.name);
                    self.queue.declare(&queue).await?;
                    self.purge(&queue).await?;
                    let jobs: Vec<GenerationJob> =
                        missing.iter().map(|&index| self.generation_job(position, index)).collect();
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
        let mut dead_letters = self.consume_dead_letters().await?;
        loop {
            let mut now = RunProgress::default();
            for position in 0..self.plan.generators.len() {
                let mut stored = self.stored(position).await?;
                self.check_results(position, &mut stored, true).await?;
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
            tracing::warn!(queue = %dead.queue, reason = %dead.reason, job = %dead.job, "dead letter");
            self.dead_letters.push(dead.clone());
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
            let planned = self.plan.generators[position].indices.binary_search(&job.index).is_ok()
                && check_judge_job(&job, &self.eval_set, run, &self.plan.judge.name).is_ok();
            if !planned {
                return Ok(None);
            }
            // Ours only if it carries the answer stored for it (a forged job does not).
            let answer = keys::output(run, &job.generator, job.index);
            let stored: Option<GenerationResult> =
                self.store.get_json(&answer).await.ok().flatten();
            if stored.is_none_or(|a| a.output != job.model_output) {
                return Ok(None);
            }
            let key = keys::annotation(run, &self.plan.judge.name, &job.generator, job.index);
            return Ok((!self.store.exists(&key).await?).then_some(position));
        }
        if let Ok(job) = serde_json::from_value::<GenerationJob>(dead.job.clone()) {
            let ours = |spec: &Option<GeneratorSpec>| spec.as_ref() == Some(&job.generator);
            let position = self.plan.generators.iter().position(|g| ours(&g.spec));
            let Some(position) = position.filter(|_| job.run_id == run) else { return Ok(None) };
            let planned = self.plan.generators[position].indices.binary_search(&job.index).is_ok()
                && job == self.generation_job(position, job.index);
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
        let mut summary =
            crate::folder::write_run_folder(&self.store, &plan, &self.eval_set, out).await?;
        crate::folder::write_rejections(&mut summary, &self.dead_letters, &self.rejected)?;
        Ok(summary)
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
    /// shows a 0 before the first dead letter instead of "no data". The same for the
    /// results it rejects, of either kind.
    fn init_counters(&self) {
        let run = self.plan.run_id.as_str();
        for kind in ["output", "annotation"] {
            self.metrics.results_rejected.with_label_values(&[run, kind]);
        }
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

    /// The generation job this plan publishes for generator `position` at `index` (a
    /// generated generator's).
    fn generation_job(&self, position: usize, index: usize) -> GenerationJob {
        let generator = &self.plan.generators[position];
        let row = &self.eval_set.rows()[index];
        GenerationJob {
            run_id: self.plan.run_id.clone(),
            generator: generator.spec.clone().expect("a generated generator"),
            index,
            instruction: row.instruction.clone(),
            dataset: row.dataset.clone(),
        }
    }

    /// Reads each answer and verdict in `stored` not checked yet and checks it against the
    /// plan (`herd_core::jobs::check_*_result`): one that does not match is moved aside
    /// ([`reject`](Self::reject)) and left out of `stored`, with the verdict on a rejected
    /// answer. With `republish`, the generation jobs of rejected answers are published
    /// again; a rejected verdict's judge job is published again by `publish_judge_jobs`.
    async fn check_results(
        &mut self,
        position: usize,
        stored: &mut Stored,
        republish: bool,
    ) -> Result<(), CoordinatorError> {
        let run = self.plan.run_id.clone();
        let judge = self.plan.judge.name.clone();
        let generator = self.plan.generators[position].clone();
        let name = generator.name.as_str();
        let new_answers: Vec<usize> = stored
            .outputs
            .iter()
            .copied()
            .filter(|&i| !self.answers.contains_key(&(position, i)))
            .collect();
        let new_verdicts: Vec<usize> = stored
            .annotations
            .iter()
            .copied()
            .filter(|&i| !self.verdicts_checked.contains(&(position, i)))
            .collect();
        // One GET per result, once per coordinator life, several at once (each is a round
        // trip on S3).
        let answers = self
            .read_all(new_answers.iter().map(|&i| keys::output(&run, name, i)).collect())
            .await?;
        let mut rejected_answers = Vec::new();
        for (index, bytes) in new_answers.into_iter().zip(answers) {
            let Some(bytes) = bytes else { continue };
            let checked = serde_json::from_slice::<GenerationResult>(&bytes)
                .map_err(|e| format!("not an answer: {e}"))
                .and_then(|answer| {
                    check_generation_result(&answer, &self.eval_set, &run, name, index)
                        .map(|()| answer.output)
                        .map_err(|m| m.to_string())
                });
            match checked {
                Ok(output) => {
                    self.answers.insert((position, index), output);
                }
                Err(reason) => {
                    self.reject(&keys::output(&run, name, index), "output", &reason).await?;
                    let verdict = keys::annotation(&run, &judge, name, index);
                    if self.store.exists(&verdict).await? {
                        let why = format!("the verdict on a rejected answer ({reason})");
                        self.reject(&verdict, "annotation", &why).await?;
                    }
                    stored.outputs.remove(&index);
                    stored.annotations.remove(&index);
                    self.verdicts_checked.remove(&(position, index));
                    self.judge_published.remove(&(position, index));
                    rejected_answers.push(index);
                }
            }
        }
        let verdicts = self
            .read_all(
                new_verdicts.iter().map(|&i| keys::annotation(&run, &judge, name, i)).collect(),
            )
            .await?;
        for (index, bytes) in new_verdicts.into_iter().zip(verdicts) {
            let Some(bytes) = bytes else { continue };
            if !stored.annotations.contains(&index) {
                continue;
            }
            let checked = serde_json::from_slice::<JudgeResult>(&bytes)
                .map_err(|e| format!("not a verdict: {e}"))
                .and_then(|verdict| {
                    check_judge_result(&verdict, &run, &judge, name, index)
                        .map_err(|m| m.to_string())
                });
            match checked {
                Ok(()) => {
                    self.verdicts_checked.insert((position, index));
                }
                Err(reason) => {
                    let key = keys::annotation(&run, &judge, name, index);
                    self.reject(&key, "annotation", &reason).await?;
                    stored.annotations.remove(&index);
                    self.judge_published.remove(&(position, index));
                }
            }
        }
        if rejected_answers.is_empty() {
            return Ok(());
        }
        if generator.spec.is_none() {
            return Err(CoordinatorError::MissingOutput {
                run,
                generator: generator.name.clone(),
                index: rejected_answers[0],
            });
        }
        if republish {
            let jobs: Vec<GenerationJob> =
                rejected_answers.iter().map(|&i| self.generation_job(position, i)).collect();
            self.publish(&self.generation_queue(name), &jobs).await?;
        }
        Ok(())
    }

    /// The documents under `keys`, in order (`None`: gone).
    async fn read_all(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, CoordinatorError> {
        let store = &self.store;
        let read: Vec<Option<Vec<u8>>> = futures::stream::iter(keys)
            .map(|key| async move { store.get_bytes(&key).await })
            .buffered(crate::READ_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(read)
    }

    /// Moves the stored result under `key` (`kind`: `output` or `annotation`) that does not
    /// match the plan to `runs/<run>/rejected/…`, freeing its key for the real result:
    /// logged, counted (`herd_results_rejected_total`) and listed in the run's summary.
    async fn reject(
        &mut self,
        key: &str,
        kind: &str,
        reason: &str,
    ) -> Result<(), CoordinatorError> {
        let run = self.plan.run_id.as_str();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let moved_to = keys::rejected(run, key, stamp);
        if let Some(bytes) = self.store.get_bytes(key).await? {
            self.store.put_bytes(&moved_to, bytes).await?;
        }
        self.store.delete(key).await?;
        tracing::error!(%key, %moved_to, %reason, "a stored result does not match the run's plan; moved aside, its job is published again");
        self.metrics.results_rejected.with_label_values(&[run, kind]).inc();
        self.rejected.push(RejectedResult {
            key: key.to_string(),
            moved_to,
            reason: reason.to_string(),
        });
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
        // The answers were read and checked by `check_results`, in index order.
        let mut jobs = Vec::new();
        for index in new {
            let Some(output) = self.answers.get(&(position, index)).cloned() else { continue };
            let row = &self.eval_set.rows()[index];
            jobs.push(JudgeJob {
                run_id: self.plan.run_id.clone(),
                judge: self.plan.judge.clone(),
                generator: generator.clone(),
                index,
                instruction: row.instruction.clone(),
                dataset: row.dataset.clone(),
                reference_output: row.output.clone(),
                model_output: output,
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
    async fn consume_dead_letters(
        &self,
    ) -> Result<mpsc::UnboundedReceiver<DeadLetter>, CoordinatorError> {
        let dlq = QueueName::dead_letters(&self.plan.run_id);
        self.queue.declare(&dlq).await?;
        let mut consumer =
            self.queue.consume::<serde_json::Value>(&dlq, DEAD_LETTER_PREFETCH).await?;
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // Held unsettled: when the coordinator stops, they go back for inspection.
            let mut held = Vec::new();
            while let Some(next) = consumer.next().await {
                let delivery = match next {
                    Ok(delivery) => delivery,
                    // Not JSON at all: the consumer keeps it in the queue; list it anyway.
                    Err(QueueError::MalformedDeadLetter {
                        reason,
                        payload,
                        dead_letter_info,
                        ..
                    }) => {
                        let (queue, why) = match dead_letter_info {
                            Some(info) => (info.queue, info.reason),
                            None => (dlq.to_string(), "unknown".to_string()),
                        };
                        let dead = DeadLetter {
                            queue,
                            reason: format!("{why} (and the dead letter itself: {reason})"),
                            job: serde_json::Value::String(payload),
                        };
                        if sender.send(dead).is_err() {
                            break;
                        }
                        continue;
                    }
                    Err(_) => continue,
                };
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
