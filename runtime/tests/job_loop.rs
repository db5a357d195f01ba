//! The job loop with a toy handler on the in-process queue and a local store: what the
//! runtime does for every role (already stored, pinned model, model load failure, the
//! benchmark-only model, give-back after an engine failure), without loading a model.

use std::sync::Arc;
use std::time::Duration;

use herd_core::jobs::{Phase, PlanMismatch};
use herd_engine::Model;
use herd_queue::{Delivery, JobQueue, MemoryQueue, QueueName};
use herd_runtime::{
    run_jobs, JobCounts, JobHandler, LoopSettings, ModelCache, Pass, Role, RuntimeError,
    NOOP_BENCHMARK_MODEL,
};
use herd_store::ResultStore;
use herd_telemetry::Metrics;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    index: usize,
    model: String,
    /// The toy engine fails on this job.
    fails: bool,
}

fn key(index: usize) -> String {
    format!("runs/r/toy/{index}.json")
}

struct Toy {
    pinned: Option<String>,
    admitted: Vec<usize>,
    handled: Vec<(String, bool, usize)>,
}

impl JobHandler for Toy {
    type Job = Job;
    type Admitted = Delivery<Job>;

    const ROLE: Role =
        Role { label: "toy", phase: Phase::Generation, job: "toy", work: "toy work" };

    fn settings(&self) -> LoopSettings {
        LoopSettings {
            run_id: "r".into(),
            name: "g".into(),
            queue: QueueName::generation("r", "g"),
            engine_thread: "engine-toy".into(),
            worker: "test-worker".into(),
            prefetch: 8,
            linger: Duration::from_millis(20),
            model: self.pinned.clone(),
        }
    }

    fn model(job: &Job) -> &str {
        &job.model
    }

    fn index(job: &Job) -> usize {
        job.index
    }

    fn result_key(job: &Job) -> String {
        key(job.index)
    }

    /// The toy plan has 100 indices.
    fn check(&self, job: &Job) -> Result<(), PlanMismatch> {
        if job.index < 100 {
            return Ok(());
        }
        Err(PlanMismatch { field: "index", found: job.index.to_string(), expected: "< 100".into() })
    }

    fn refusal(&self, asked: &str, serves: &str) -> String {
        format!("asks for {asked}, serves {serves}")
    }

    async fn admit(
        &mut self,
        _pass: &mut Pass<'_, Self>,
        delivery: Delivery<Job>,
    ) -> Result<Option<Delivery<Job>>, RuntimeError> {
        self.admitted.push(delivery.job.index);
        Ok(Some(delivery))
    }

    fn delivery(admitted: Delivery<Job>) -> Delivery<Job> {
        admitted
    }

    async fn handle(
        &mut self,
        pass: &mut Pass<'_, Self>,
        model_name: &str,
        model: Option<Arc<Model>>,
        group: Vec<Delivery<Job>>,
    ) -> Result<(), RuntimeError> {
        self.handled.push((model_name.to_string(), model.is_some(), group.len()));
        let ran = pass.engine.submit(|| std::thread::current().name().map(str::to_string)).await?;
        assert_eq!(ran.as_deref(), Some("engine-toy"));
        let (failed, ok): (Vec<_>, Vec<_>) = group.into_iter().partition(|d| d.job.fails);
        for delivery in ok {
            pass.store.put_json(&key(delivery.job.index), &delivery.job).await?;
            let started = pass.batch_started;
            pass.activity.record("g", started, 1, false);
            pass.complete(delivery).await?;
        }
        if !failed.is_empty() {
            pass.give_back(failed, "the toy engine failed").await?;
        }
        Ok(())
    }
}

fn job(index: usize, model: &str, fails: bool) -> Job {
    Job { index, model: model.into(), fails }
}

/// Runs the loop until its queue is empty and the dead-letter queue holds `dead` jobs.
async fn run(
    queue: &MemoryQueue,
    store: &ResultStore,
    toy: &mut Toy,
    metrics: &Metrics,
    dead: u32,
) -> JobCounts {
    let (watched, dead_letters) = (queue.clone(), QueueName::dead_letters("r"));
    let name = QueueName::generation("r", "g");
    let done = async move {
        loop {
            let waiting = watched.stats(&name).await.unwrap().messages;
            let dead_now = watched.stats(&dead_letters).await.map(|s| s.messages).unwrap_or(0);
            if waiting == 0 && dead_now >= dead {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the last batch settle.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        run_jobs(toy, queue, store, &ModelCache::default(), metrics, done),
    )
    .await
    .expect("the loop finishes")
    .unwrap()
}

/// The dead-letter queue's jobs by index, with their reasons.
async fn dead_letters(queue: &MemoryQueue, n: usize) -> Vec<(usize, String)> {
    let mut dead = queue.consume::<Job>(&QueueName::dead_letters("r"), 8).await.unwrap();
    let mut reasons = Vec::new();
    for _ in 0..n {
        let delivery = dead.next().await.unwrap().unwrap();
        reasons.push((delivery.job.index, delivery.dead_letter_info.unwrap().reason));
    }
    reasons.sort();
    reasons
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_settles_every_job_the_way_both_roles_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = ResultStore::local(dir.path()).unwrap();
    // A job given back more than once goes to the dead-letter queue.
    let queue = MemoryQueue::new(1);
    let metrics = Metrics::new().unwrap();
    let name = QueueName::generation("r", "g");
    queue.declare(&name).await.unwrap();
    store.put_json(&key(0), &job(0, NOOP_BENCHMARK_MODEL, false)).await.unwrap();
    let jobs = vec![
        job(0, NOOP_BENCHMARK_MODEL, false), // already stored
        job(1, NOOP_BENCHMARK_MODEL, false),
        job(2, "/no/such/model.gguf", false), // cannot load
        job(3, NOOP_BENCHMARK_MODEL, true),   // given back until the queue dead-letters it
        job(4, NOOP_BENCHMARK_MODEL, false),
    ];
    queue.publish(&name, &jobs).await.unwrap();
    let mut toy = Toy { pinned: None, admitted: vec![], handled: vec![] };
    let counts = run(&queue, &store, &mut toy, &metrics, 2).await;

    assert_eq!(counts, JobCounts { already_stored: 1, dead_lettered: 1, given_back: 2 });
    assert!(!toy.admitted.contains(&0), "{:?}", toy.admitted);
    assert!(
        toy.handled.iter().all(|(model, loaded, _)| model == NOOP_BENCHMARK_MODEL && !loaded),
        "a failed load never reaches the handler; the benchmark model loads nothing: {:?}",
        toy.handled
    );
    for index in [1, 4] {
        assert!(store.exists(&key(index)).await.unwrap(), "job {index} stored");
    }

    let labels = ["r", "toy", name.as_str()];
    assert_eq!(metrics.jobs_completed.with_label_values(&labels).get(), 3);
    assert_eq!(metrics.jobs_dead_lettered.with_label_values(&labels).get(), 1);
    assert_eq!(metrics.jobs_failed.with_label_values(&labels).get(), 2);
    assert_eq!(metrics.jobs_redelivered.with_label_values(&labels).get(), 1);

    let reasons = dead_letters(&queue, 2).await;
    assert_eq!((reasons[0].0, reasons[1].0), (2, 3));
    assert!(
        reasons[0].1.starts_with("model /no/such/model.gguf cannot be loaded: "),
        "{reasons:?}"
    );

    let activity: herd_core::jobs::WorkerActivity = store
        .get_json(&herd_store::keys::activity("r", "generation", &format!("test-worker.{name}")))
        .await
        .unwrap()
        .expect("the activity record is flushed");
    assert_eq!(activity.generators["g"].jobs, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_worker_dead_letters_jobs_naming_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = ResultStore::local(dir.path()).unwrap();
    let queue = MemoryQueue::default();
    let metrics = Metrics::new().unwrap();
    let name = QueueName::generation("r", "g");
    queue.declare(&name).await.unwrap();
    let jobs = [job(0, "other", false), job(1, NOOP_BENCHMARK_MODEL, false)];
    queue.publish(&name, &jobs).await.unwrap();
    let mut toy =
        Toy { pinned: Some(NOOP_BENCHMARK_MODEL.into()), admitted: vec![], handled: vec![] };
    let counts = run(&queue, &store, &mut toy, &metrics, 1).await;
    assert_eq!(counts, JobCounts { already_stored: 0, dead_lettered: 1, given_back: 0 });
    assert_eq!(toy.admitted, vec![1]);
    assert_eq!(
        dead_letters(&queue, 1).await,
        vec![(0, "asks for other, serves bench-noop".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_plan_does_not_make_is_dead_lettered_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = ResultStore::local(dir.path()).unwrap();
    let queue = MemoryQueue::default();
    let metrics = Metrics::new().unwrap();
    let name = QueueName::generation("r", "g");
    queue.declare(&name).await.unwrap();
    // Even a result stored under its key does not let a job outside the plan through.
    store.put_json(&key(500), &job(500, NOOP_BENCHMARK_MODEL, false)).await.unwrap();
    let jobs = [job(99_999, NOOP_BENCHMARK_MODEL, false), job(500, NOOP_BENCHMARK_MODEL, false)];
    queue.publish(&name, &jobs).await.unwrap();
    let mut toy = Toy { pinned: None, admitted: vec![], handled: vec![] };
    let counts = run(&queue, &store, &mut toy, &metrics, 2).await;
    assert_eq!(counts, JobCounts { already_stored: 0, dead_lettered: 2, given_back: 0 });
    assert!(toy.admitted.is_empty(), "{:?}", toy.admitted);
    assert!(!store.exists(&key(99_999)).await.unwrap());
    assert_eq!(
        dead_letters(&queue, 2).await,
        vec![
            (500, "the job is not one of the run's plan: index is 500, expected < 100".into()),
            (99_999, "the job is not one of the run's plan: index is 99999, expected < 100".into()),
        ]
    );
}
