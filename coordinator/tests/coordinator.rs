//! The coordinator against the in-process queue and an in-memory store, with the workers'
//! part played by hand: what it publishes, how it follows the store, when it fails.

use std::time::Duration;

use herd_coordinator::{Coordinator, CoordinatorError, RunPlan, RunProgress};
use herd_core::eval_set::EvalSet;
use herd_core::formats::{read_annotations, read_model_outputs};
use herd_core::jobs::{
    FinishReason, GenerationJob, GenerationResult, GeneratorSpec, JudgeJob, JudgeMode, JudgeResult, JudgeSpec,
    PromptTemplate,
};
use herd_queue::{JobQueue, MemoryQueue, QueueName};
use herd_store::{ResultStore, StoreConfig};
use herd_telemetry::Metrics;
use tokio::sync::watch;

fn spec(max_new_tokens: usize) -> GeneratorSpec {
    GeneratorSpec {
        name: "gen".into(),
        model: "m".into(),
        template: PromptTemplate::Chat,
        max_new_tokens,
        stop: vec![],
    }
}

fn judge() -> JudgeSpec {
    JudgeSpec {
        name: "judge".into(),
        model: "j".into(),
        mode: JudgeMode::Logprob,
        max_new_tokens: 100,
        max_context_tokens: 7000,
    }
}

fn plan(limit: usize, max_new_tokens: usize) -> RunPlan {
    RunPlan::first_n("r", vec![spec(max_new_tokens)], judge(), Some(limit), &EvalSet::embedded())
}

fn memory_store() -> ResultStore {
    ResultStore::open(&StoreConfig::new("memory://")).unwrap()
}

async fn put_output(store: &ResultStore, index: usize) {
    let set = EvalSet::embedded();
    let row = &set.rows()[index];
    let result = GenerationResult {
        run_id: "r".into(),
        generator: "gen".into(),
        index,
        instruction: row.instruction.clone(),
        dataset: row.dataset.clone(),
        output: format!("answer {index}"),
        prompt_tokens: 10,
        output_tokens: 3,
        seconds: 0.1,
        finish_reason: FinishReason::Eos,
        worker: "w".into(),
    };
    store.put_output(&result).await.unwrap();
}

async fn put_verdict(store: &ResultStore, index: usize, preference: Option<f64>) {
    let result = JudgeResult {
        run_id: "r".into(),
        judge: "judge".into(),
        generator: "gen".into(),
        index,
        preference,
        raw_completion: "{}".into(),
        is_switched: false,
        truncated: false,
        prompt_tokens: 100,
        seconds: 0.2,
        worker: "w".into(),
    };
    store.put_annotation(&result).await.unwrap();
}

async fn ready(queue: &MemoryQueue, name: &QueueName) -> u32 {
    queue.stats(name).await.unwrap().messages
}

#[tokio::test]
async fn a_restarted_coordinator_publishes_only_what_the_store_lacks_and_judges_answers_as_they_land() {
    let (queue, store) = (MemoryQueue::default(), memory_store());
    put_output(&store, 0).await;
    put_output(&store, 1).await;
    put_verdict(&store, 0, Some(1.2)).await;

    let mut coordinator = Coordinator::new(queue.clone(), store.clone(), Metrics::new().unwrap(), plan(4, 8)).unwrap();
    coordinator.poll_interval = Duration::from_millis(10);
    let progress = coordinator.start().await.unwrap();
    let generator = progress.generator("gen").unwrap();
    assert_eq!((generator.outputs_at_start, generator.annotations_at_start, generator.expected), (2, 1, 4));
    let (gen_queue, judge_queue) = (QueueName::generation("r", "gen"), QueueName::judge("r", "judge"));
    assert_eq!(ready(&queue, &gen_queue).await, 2, "answers 2 and 3");
    assert_eq!(ready(&queue, &judge_queue).await, 1, "the verdict on answer 1");

    let mut jobs = queue.consume::<GenerationJob>(&gen_queue, 8).await.unwrap();
    let first = jobs.next().await.unwrap().unwrap();
    assert_eq!((first.job.index, first.job.generator.max_new_tokens), (2, 8));

    let (sender, mut receiver) = watch::channel(RunProgress::default());
    let watching = tokio::spawn(async move { coordinator.watch(&sender).await.map(|p| (p, coordinator)) });
    // The workers' part: answers land, verdicts follow the judge jobs the coordinator sends.
    put_output(&store, 2).await;
    put_output(&store, 3).await;
    first.ack().await.unwrap();
    let mut judge_jobs = queue.consume::<JudgeJob>(&judge_queue, 8).await.unwrap();
    let mut judged = Vec::new();
    while judged.len() < 3 {
        let delivery = judge_jobs.next().await.unwrap().unwrap();
        let set = EvalSet::embedded();
        let row = &set.rows()[delivery.job.index];
        assert_eq!(delivery.job.reference_output, row.output);
        assert_eq!(delivery.job.model_output, format!("answer {}", delivery.job.index));
        put_verdict(&store, delivery.job.index, if delivery.job.index == 3 { None } else { Some(1.9) }).await;
        judged.push(delivery.job.index);
        delivery.ack().await.unwrap();
    }
    judged.sort();
    assert_eq!(judged, vec![1, 2, 3]);
    let (done, coordinator) = watching.await.unwrap().unwrap();
    assert!(done.is_complete());
    assert!(receiver.borrow_and_update().is_complete());

    let dir = tempfile::tempdir().unwrap();
    let summary = coordinator.finish(dir.path()).await.unwrap();
    assert_eq!((summary.generators[0].examples, summary.generators[0].unparsed), (4, 1));
    let outputs = read_model_outputs(dir.path().join("gen/model_outputs.json")).unwrap();
    let answers: Vec<&str> = outputs.iter().map(|o| o.output.as_str()).collect();
    assert_eq!(answers, vec!["answer 0", "answer 1", "answer 2", "answer 3"]);
    let annotations = read_annotations(dir.path().join("gen/annotations.json")).unwrap();
    assert_eq!(
        annotations.iter().map(|a| a.preference).collect::<Vec<_>>(),
        vec![Some(1.2), Some(1.9), Some(1.9), None]
    );
    assert!(dir.path().join("leaderboard.csv").is_file() && dir.path().join("gen/errors.md").is_file());
    assert!(dir.path().join("gen/throughput.json").is_file());
}

#[tokio::test]
async fn a_dead_lettered_job_fails_the_run_with_the_job_and_the_reason() {
    let (queue, store) = (MemoryQueue::default(), memory_store());
    let mut coordinator = Coordinator::new(queue.clone(), store, Metrics::new().unwrap(), plan(2, 8)).unwrap();
    coordinator.poll_interval = Duration::from_millis(10);
    coordinator.start().await.unwrap();
    let mut jobs = queue.consume::<GenerationJob>(&QueueName::generation("r", "gen"), 1).await.unwrap();
    let delivery = jobs.next().await.unwrap().unwrap();
    delivery.dead_letter("model m cannot be loaded: no such file").await.unwrap();
    let (sender, _receiver) = watch::channel(RunProgress::default());
    let err = tokio::time::timeout(Duration::from_secs(5), coordinator.watch(&sender)).await.unwrap().unwrap_err();
    assert!(matches!(err, CoordinatorError::DeadLettered { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("herd.r.gen.gen") && text.contains("instruction 0") && text.contains("cannot be loaded"),
        "{text}"
    );
}

#[tokio::test]
async fn a_run_continued_with_other_settings_is_refused() {
    let (queue, store) = (MemoryQueue::default(), memory_store());
    let mut first = Coordinator::new(queue.clone(), store.clone(), Metrics::new().unwrap(), plan(2, 8)).unwrap();
    first.start().await.unwrap();
    let mut same = Coordinator::new(queue.clone(), store.clone(), Metrics::new().unwrap(), plan(3, 8)).unwrap();
    same.start().await.expect("more instructions, same settings: fine");
    let mut other = Coordinator::new(queue, store, Metrics::new().unwrap(), plan(2, 64)).unwrap();
    let err = other.start().await.unwrap_err().to_string();
    assert!(err.contains("generator gen") && err.contains("\"max_new_tokens\":8") && err.contains("64"), "{err}");
}
