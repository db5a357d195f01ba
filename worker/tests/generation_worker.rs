//! The generation worker on the default model (SmolLM2-135M-Instruct), with the in-process
//! queue and a local store.

use std::time::Duration;

use herd_core::eval_set::EvalSet;
use herd_core::jobs::{
    FinishReason, GenerationJob, GenerationResult, GeneratorSpec, Phase, PromptTemplate,
    WorkerActivity,
};
use herd_queue::{JobQueue, MemoryQueue, QueueName};
use herd_runtime::{ModelCache, DEFAULT_MODEL};
use herd_store::{keys, ResultStore};
use herd_telemetry::Metrics;
use herd_worker::GenerationWorker;

fn jobs(run: &str, model: &str, n: usize, max_new_tokens: usize) -> Vec<GenerationJob> {
    let set = EvalSet::embedded();
    let spec = GeneratorSpec {
        name: "smol".into(),
        model: model.into(),
        template: PromptTemplate::Chat,
        max_new_tokens,
        stop: vec![],
        endpoint: None,
        sampling: None,
    };
    (0..n)
        .map(|index| GenerationJob {
            run_id: run.into(),
            generator: spec.clone(),
            index,
            instruction: set.rows()[index].instruction.clone(),
            dataset: set.rows()[index].dataset.clone(),
        })
        .collect()
}

/// Resolves once `prefix` holds `n` documents.
async fn stored(store: ResultStore, prefix: String, n: usize) {
    while store.list(&prefix).await.unwrap().len() < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_stored_then_acknowledged_and_match_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let store = ResultStore::local(dir.path()).unwrap();
    let queue = MemoryQueue::default();
    let metrics = Metrics::new().unwrap();
    let models = ModelCache::default();
    let mut worker = GenerationWorker::new("r1", "smol", "test-worker");
    worker.batch.max_batch_size = 2; // three jobs: the engine admits the third as one ends
    let name = worker.queue_name();
    queue.publish(&name, &jobs("r1", DEFAULT_MODEL, 3, 12)).await.unwrap();

    let done = stored(store.clone(), keys::outputs_prefix("r1", "smol"), 3);
    let stats = tokio::time::timeout(
        Duration::from_secs(120),
        worker.run(&queue, &store, &models, &metrics, done),
    )
    .await
    .expect("the worker finishes")
    .unwrap();
    assert_eq!((stats.generated, stats.dead_lettered, stats.already_stored), (3, 0, 0));
    assert_eq!(queue.stats(&name).await.unwrap().messages, 0, "every job acknowledged");

    let model = models.get(DEFAULT_MODEL).await.unwrap();
    for job in jobs("r1", DEFAULT_MODEL, 3, 12) {
        let result: GenerationResult =
            store.get_json(&keys::output("r1", "smol", job.index)).await.unwrap().unwrap();
        assert_eq!(
            (result.index, result.instruction.as_str()),
            (job.index, job.instruction.as_str())
        );
        assert!(result.output_tokens <= 12 && result.output_tokens > 0);
        assert!(
            result.finish_reason == FinishReason::Length
                || result.finish_reason == FinishReason::Eos
        );
        // The same answer as the engine gives for this prompt alone.
        let prompt =
            herd_worker::prompt_tokens(&model, PromptTemplate::Chat, &job.instruction).unwrap();
        let request = herd_engine::GenerationRequest {
            id: 0,
            prompt_tokens: prompt,
            max_new_tokens: 12,
            stop: vec![],
            ..Default::default()
        };
        let alone = model.generate_all(vec![request], &Default::default()).unwrap();
        assert_eq!(result.output, alone[0].text, "instruction {}", job.index);
    }
    assert_eq!(metrics.examples_generated.with_label_values(&["r1", "smol"]).get(), 3);
    let completed =
        metrics.jobs_completed.with_label_values(&["r1", "worker", name.as_str()]).get();
    assert_eq!(completed, 3);

    let activity: WorkerActivity = store
        .get_json(&keys::activity("r1", "generation", &format!("test-worker.{name}")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(activity.phase, Phase::Generation);
    let span = activity.generators["smol"];
    assert_eq!(span.jobs, 3);
    assert!(span.finished_at > span.started_at);

    // The same jobs again (a duplicate publish): nothing is generated twice.
    queue.publish(&name, &jobs("r1", DEFAULT_MODEL, 3, 12)).await.unwrap();
    let drained = {
        let queue = queue.clone();
        let name = name.clone();
        async move {
            while queue.stats(&name).await.unwrap().messages > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let again = worker.run(&queue, &store, &models, &metrics, drained).await.unwrap();
    assert_eq!((again.generated, again.already_stored), (0, 3));
}

#[tokio::test]
async fn a_job_whose_model_cannot_load_is_dead_lettered_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = ResultStore::local(dir.path()).unwrap();
    let queue = MemoryQueue::default();
    let metrics = Metrics::new().unwrap();
    let worker = GenerationWorker::new("r2", "smol", "test-worker");
    queue.publish(&worker.queue_name(), &jobs("r2", "/nowhere/model.gguf", 2, 4)).await.unwrap();

    let mut dlq = queue.consume::<GenerationJob>(&QueueName::dead_letters("r2"), 4).await.unwrap();
    let models = ModelCache::default();
    let worker_run = worker.run(&queue, &store, &models, &metrics, async {
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let (stats, first) = tokio::join!(worker_run, dlq.next());
    let stats = stats.unwrap();
    assert_eq!((stats.generated, stats.dead_lettered), (0, 2));
    let dead = first.unwrap().unwrap();
    let info = dead.dead_letter_info.unwrap();
    assert!(
        info.reason.contains("/nowhere/model.gguf") && info.reason.contains("no such file"),
        "{}",
        info.reason
    );
    assert_eq!(info.queue, worker.queue_name().as_str());
    assert!(store.list("runs/r2/outputs/").await.unwrap().is_empty());
}

#[tokio::test]
async fn the_benchmark_noop_model_answers_empty_at_once_without_loading_a_model() {
    let store = ResultStore::open(&herd_store::StoreConfig::new("memory://")).unwrap();
    let queue = MemoryQueue::default();
    let metrics = Metrics::new().unwrap();
    let models = ModelCache::default();
    let worker = GenerationWorker::new("r-noop", "smol", "test-worker");
    queue
        .publish(&worker.queue_name(), &jobs("r-noop", herd_runtime::NOOP_BENCHMARK_MODEL, 5, 12))
        .await
        .unwrap();
    let done = stored(store.clone(), keys::outputs_prefix("r-noop", "smol"), 5);
    let stats = tokio::time::timeout(
        Duration::from_secs(10),
        worker.run(&queue, &store, &models, &metrics, done),
    )
    .await
    .expect("the worker finishes")
    .unwrap();
    assert_eq!(stats.generated, 5);
    assert!(!models.is_loaded(herd_runtime::NOOP_BENCHMARK_MODEL));
    let result: GenerationResult =
        store.get_json(&keys::output("r-noop", "smol", 4)).await.unwrap().unwrap();
    assert_eq!((result.output.as_str(), result.output_tokens), ("", 0));
}

#[tokio::test]
async fn a_started_worker_exports_its_failure_counters_at_zero() {
    let store = ResultStore::open(&herd_store::StoreConfig::new("memory://")).unwrap();
    let queue = MemoryQueue::default();
    let metrics = Metrics::new().unwrap();
    let worker = GenerationWorker::new("r-zero", "smol", "test-worker");
    // No job, and told to stop at once: what a worker exports before its first job.
    let stats = worker
        .run(&queue, &store, &ModelCache::default(), &metrics, std::future::ready(()))
        .await
        .unwrap();
    assert_eq!(stats, Default::default());
    let text = metrics.render();
    for family in ["completed", "failed", "redelivered", "dead_lettered"] {
        let line = format!("herd_jobs_{family}_total{{queue=\"herd.r-zero.gen.smol\",role=\"worker\",run=\"r-zero\"}} 0");
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    for name in ["examples_generated", "output_tokens", "prompt_tokens"] {
        let line = format!("herd_{name}_total{{generator=\"smol\",run=\"r-zero\"}} 0");
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
}

#[tokio::test]
async fn a_worker_serving_one_model_dead_letters_a_job_naming_another_with_both_names() {
    let store = ResultStore::open(&herd_store::StoreConfig::new("memory://")).unwrap();
    let queue = MemoryQueue::default();
    let metrics = Metrics::new().unwrap();
    let models = ModelCache::default();
    let worker = GenerationWorker {
        model: Some("/models/mine.gguf".into()),
        ..GenerationWorker::new("r3", "smol", "w")
    };
    queue.publish(&worker.queue_name(), &jobs("r3", "/models/other.gguf", 1, 4)).await.unwrap();
    let mut dlq = queue.consume::<GenerationJob>(&QueueName::dead_letters("r3"), 4).await.unwrap();
    let worker_run = worker.run(&queue, &store, &models, &metrics, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    let (stats, first) = tokio::join!(worker_run, dlq.next());
    assert_eq!(stats.unwrap().dead_lettered, 1);
    let reason = first.unwrap().unwrap().dead_letter_info.unwrap().reason;
    assert!(
        reason.contains("/models/other.gguf") && reason.contains("serves /models/mine.gguf"),
        "{reason}"
    );
    assert!(!models.is_loaded("/models/other.gguf"), "the other model was not loaded");
}
