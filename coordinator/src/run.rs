//! The coordinator's loop: publish what is missing, follow the store, stop on dead letters.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

use herd_core::eval_set::EvalSet;
use herd_core::jobs::{GenerationJob, GenerationResult, JudgeJob};
use herd_queue::{JobQueue, QueueName};
use herd_store::{keys, ResultStore};
use herd_telemetry::Metrics;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::{CoordinatorError, GeneratorProgress, RunPlan, RunProgress, RunSummary};

/// Drives one run. Generic over the queue; the store is its memory.
pub struct Coordinator<Q> {
    queue: Q,
    store: ResultStore,
    metrics: Metrics,
    plan: RunPlan,
    eval_set: EvalSet,
    /// How often the store is listed while the run is under way.
    pub poll_interval: Duration,
    /// Judge jobs this coordinator published, by (generator position, index).
    judge_published: HashSet<(usize, usize)>,
    progress: RunProgress,
}

/// What the store holds for one generator.
struct Stored {
    outputs: BTreeSet<usize>,
    annotations: BTreeSet<usize>,
}

impl<Q: JobQueue> Coordinator<Q> {
    pub fn new(queue: Q, store: ResultStore, metrics: Metrics, plan: RunPlan) -> Result<Self, CoordinatorError> {
        let eval_set = EvalSet::embedded();
        plan.validate(&eval_set)?;
        Ok(Self {
            queue,
            store,
            metrics,
            plan,
            eval_set,
            poll_interval: Duration::from_millis(250),
            judge_published: HashSet::new(),
            progress: RunProgress::default(),
        })
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
    pub async fn start(&mut self) -> Result<RunProgress, CoordinatorError> {
        self.check_plan().await?;
        let run = self.plan.run_id.clone();
        let judge_queue = self.judge_queue();
        self.queue.declare(&judge_queue).await?;
        let mut progress = RunProgress::default();
        for (position, generator) in self.plan.generators.clone().iter().enumerate() {
            let stored = self.stored(position).await?;
            let missing: Vec<usize> =
                generator.indices.iter().copied().filter(|i| !stored.outputs.contains(i)).collect();
            match &generator.spec {
                Some(spec) => {
                    let queue = self.generation_queue(&generator.name);
                    self.queue.declare(&queue).await?;
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
                        return Err(CoordinatorError::MissingOutput { run, generator: generator.name.clone(), index });
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
    pub async fn watch(&mut self, progress: &watch::Sender<RunProgress>) -> Result<RunProgress, CoordinatorError> {
        let mut dead_letters = self.dead_letters().await?;
        loop {
            let mut now = RunProgress::default();
            for position in 0..self.plan.generators.len() {
                let stored = self.stored(position).await?;
                self.publish_judge_jobs(position, &stored).await?;
                let mut generator = self.progress.generators[position].clone();
                generator.outputs = stored.outputs.len();
                generator.annotations = stored.annotations.len();
                now.generators.push(generator);
            }
            self.set_progress(now);
            progress.send_replace(self.progress.clone());
            if self.progress.is_complete() {
                return Ok(self.progress.clone());
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll_interval) => {}
                Some(dead) = dead_letters.recv() => return Err(dead),
            }
        }
    }

    /// Reads every answer and verdict back and writes the run folder under `out`.
    pub async fn finish(&self, out: &Path) -> Result<RunSummary, CoordinatorError> {
        crate::folder::write_run_folder(&self.store, &self.plan, &self.eval_set, out).await
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

    async fn publish<T: Serialize + Sync>(&self, queue: &QueueName, jobs: &[T]) -> Result<(), CoordinatorError> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.queue.publish(queue, jobs).await?;
        self.metrics.jobs_published.with_label_values(&[&self.plan.run_id, queue.as_str()]).inc_by(jobs.len() as u64);
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
        let annotations =
            indices(self.store.list(&keys::annotations_prefix(run, &self.plan.judge.name, &generator.name)).await?);
        Ok(Stored { outputs, annotations })
    }

    /// Publishes a judge job for every stored answer without a verdict that this
    /// coordinator has not published yet.
    async fn publish_judge_jobs(&mut self, position: usize, stored: &Stored) -> Result<(), CoordinatorError> {
        let generator = self.plan.generators[position].name.clone();
        let mut jobs = Vec::new();
        for &index in stored.outputs.difference(&stored.annotations) {
            if self.judge_published.contains(&(position, index)) {
                continue;
            }
            let key = keys::output(&self.plan.run_id, &generator, index);
            let Some(output) = self.store.get_json::<GenerationResult>(&key).await? else { continue };
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
            documents.push((format!("generator-{}", g.name), format!("generator {}", g.name), value));
        }
        let judge = serde_json::to_value(&self.plan.judge).expect("specs serialise");
        documents.push((format!("judge-{}", self.plan.judge.name), format!("judge {}", self.plan.judge.name), judge));
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

    /// Dead letters of this run, as errors, from a background consumer.
    async fn dead_letters(&self) -> Result<mpsc::UnboundedReceiver<CoordinatorError>, CoordinatorError> {
        let dlq = QueueName::dead_letters(&self.plan.run_id);
        self.queue.declare(&dlq).await?;
        let mut consumer = self.queue.consume::<serde_json::Value>(&dlq, 16).await?;
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // Held unsettled: when the coordinator stops, they go back for inspection.
            let mut held = Vec::new();
            while let Some(next) = consumer.next().await {
                let Ok(delivery) = next else { continue };
                let info = delivery.dead_letter_info.clone();
                let job = &delivery.job;
                let describe = |field: &str| job.get(field).map(|v| v.to_string()).unwrap_or_default();
                let generator = job
                    .get("generator")
                    .and_then(|g| g.get("name").or(Some(g)))
                    .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                    .unwrap_or_default();
                let error = CoordinatorError::DeadLettered {
                    queue: info.as_ref().map(|i| i.queue.clone()).unwrap_or_else(|| dlq.to_string()),
                    job: format!("generator {generator}, eval-set instruction {}", describe("index")),
                    reason: info.map(|i| i.reason).unwrap_or_else(|| "unknown".into()),
                };
                held.push(delivery);
                if sender.send(error).is_err() {
                    break;
                }
            }
        });
        Ok(receiver)
    }
}
