//! The coordinator against the in-process queue and an in-memory store, with the workers'
//! part played by hand: what it publishes, how it follows the store, when it fails.

use std::time::Duration;

use herd_coordinator::{Coordinator, CoordinatorError, DeadLetterPolicy, RunPlan, RunProgress};
use herd_core::eval_set::EvalSet;
use herd_core::formats::{read_annotations, read_model_outputs};
use herd_core::jobs::{
    FinishReason, GenerationJob, GenerationResult, GeneratorSpec, JudgeJob, JudgeMode, JudgeResult,
    JudgeSpec, PromptTemplate,
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
        endpoint: None,
        sampling: None,
    }
}

fn judge() -> JudgeSpec {
    JudgeSpec {
        name: "judge".into(),
        model: "j".into(),
        mode: JudgeMode::Logprob,
        max_new_tokens: 100,
        max_context_tokens: 7000,
        endpoint: None,
        price: None,
        config: None,
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
        stored: None,
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
        stored: None,
        price: None,
    };
    store.put_annotation(&result).await.unwrap();
}

async fn ready(queue: &MemoryQueue, name: &QueueName) -> u32 {
    queue.stats(name).await.unwrap().messages
}

#[tokio::test]
async fn a_restarted_coordinator_publishes_only_what_the_store_lacks_and_judges_answers_as_they_land(
) {
    let (queue, store) = (MemoryQueue::default(), memory_store());
    put_output(&store, 0).await;
    put_output(&store, 1).await;
    put_verdict(&store, 0, Some(1.2)).await;

    let mut coordinator =
        Coordinator::new(queue.clone(), store.clone(), Metrics::new().unwrap(), plan(4, 8))
            .unwrap();
    coordinator.poll_interval = Duration::from_millis(10);
    let progress = coordinator.start().await.unwrap();
    let generator = progress.generator("gen").unwrap();
    assert_eq!(
        (generator.outputs_at_start, generator.annotations_at_start, generator.expected),
        (2, 1, 4)
    );
    let (gen_queue, judge_queue) =
        (QueueName::generation("r", "gen"), QueueName::judge("r", "judge"));
    assert_eq!(ready(&queue, &gen_queue).await, 2, "answers 2 and 3");
    assert_eq!(ready(&queue, &judge_queue).await, 1, "the verdict on answer 1");

    let mut jobs = queue.consume::<GenerationJob>(&gen_queue, 8).await.unwrap();
    let first = jobs.next().await.unwrap().unwrap();
    assert_eq!((first.job.index, first.job.generator.max_new_tokens), (2, 8));

    let (sender, mut receiver) = watch::channel(RunProgress::default());
    let watching =
        tokio::spawn(async move { coordinator.watch(&sender).await.map(|p| (p, coordinator)) });
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
        put_verdict(
            &store,
            delivery.job.index,
            if delivery.job.index == 3 { None } else { Some(1.9) },
        )
        .await;
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
    assert!(
        dir.path().join("leaderboard.csv").is_file() && dir.path().join("gen/errors.md").is_file()
    );
    assert!(dir.path().join("gen/throughput.json").is_file());
}

#[tokio::test]
async fn a_dead_lettered_job_fails_the_run_with_the_job_and_the_reason() {
    let (queue, store) = (MemoryQueue::default(), memory_store());
    let mut coordinator =
        Coordinator::new(queue.clone(), store, Metrics::new().unwrap(), plan(2, 8)).unwrap();
    coordinator.poll_interval = Duration::from_millis(10);
    coordinator.start().await.unwrap();
    let mut jobs =
        queue.consume::<GenerationJob>(&QueueName::generation("r", "gen"), 1).await.unwrap();
    let delivery = jobs.next().await.unwrap().unwrap();
    delivery.dead_letter("model m cannot be loaded: no such file").await.unwrap();
    let (sender, _receiver) = watch::channel(RunProgress::default());
    let err = tokio::time::timeout(Duration::from_secs(5), coordinator.watch(&sender))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, CoordinatorError::DeadLettered { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("herd.r.gen.gen")
            && text.contains("instruction 0")
            && text.contains("cannot be loaded"),
        "{text}"
    );
}

#[tokio::test]
async fn a_run_continued_with_other_settings_is_refused() {
    let (queue, store) = (MemoryQueue::default(), memory_store());
    let mut first =
        Coordinator::new(queue.clone(), store.clone(), Metrics::new().unwrap(), plan(2, 8))
            .unwrap();
    first.start().await.unwrap();
    let mut same =
        Coordinator::new(queue.clone(), store.clone(), Metrics::new().unwrap(), plan(3, 8))
            .unwrap();
    same.start().await.expect("more instructions, same settings: fine");
    let mut other = Coordinator::new(queue, store, Metrics::new().unwrap(), plan(2, 64)).unwrap();
    let err = other.start().await.unwrap_err().to_string();
    assert!(
        err.contains("generator gen") && err.contains("\"max_new_tokens\":8") && err.contains("64"),
        "{err}"
    );
}

#[tokio::test]
async fn a_restarted_coordinator_purges_the_jobs_its_previous_life_queued() {
    let (queue, store) = (MemoryQueue::default(), memory_store());
    let mut first =
        Coordinator::new(queue.clone(), store.clone(), Metrics::new().unwrap(), plan(4, 8))
            .unwrap();
    first.start().await.unwrap();
    let gen_queue = QueueName::generation("r", "gen");
    assert_eq!(ready(&queue, &gen_queue).await, 4);
    put_output(&store, 0).await;
    let mut second =
        Coordinator::new(queue.clone(), store.clone(), Metrics::new().unwrap(), plan(4, 8))
            .unwrap();
    second.start().await.unwrap();
    assert_eq!(ready(&queue, &gen_queue).await, 3, "the three missing answers, each queued once");
    assert_eq!(
        ready(&queue, &QueueName::judge("r", "judge")).await,
        1,
        "the verdict on answer 0, once"
    );
}

#[tokio::test]
async fn with_drop_generator_a_dead_lettered_job_drops_its_generator_and_the_others_finish() {
    let (queue, store) = (MemoryQueue::default(), memory_store());
    let bad = GeneratorSpec { name: "bad".into(), model: "/no/such.gguf".into(), ..spec(8) };
    let plan = RunPlan::first_n("r", vec![spec(8), bad], judge(), Some(2), &EvalSet::embedded());
    let metrics = Metrics::new().unwrap();
    let mut coordinator =
        Coordinator::new(queue.clone(), store.clone(), metrics.clone(), plan).unwrap();
    coordinator.poll_interval = Duration::from_millis(10);
    coordinator.dead_letter_policy = DeadLetterPolicy::DropGenerator;
    coordinator.start().await.unwrap();

    // Not jobs of this run's plan: a malformed message and a job of another spec.
    let gen_queue = QueueName::generation("r", "gen");
    queue.publish(&gen_queue, &[serde_json::json!({"not": "a job"})]).await.unwrap();
    let mut gen_jobs = queue.consume::<serde_json::Value>(&gen_queue, 8).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(gen_jobs.next().await.unwrap().unwrap());
    }
    let malformed = seen.pop().unwrap();
    malformed.dead_letter("malformed message: missing field `run_id`").await.unwrap();
    let mut stray: GenerationJob = serde_json::from_value(seen[0].job.clone()).unwrap();
    stray.generator.model = "/elsewhere.gguf".into();
    queue.publish(&gen_queue, &[stray]).await.unwrap();
    let stray = gen_jobs.next().await.unwrap().unwrap();
    stray.dead_letter("model /elsewhere.gguf cannot be loaded: no such file").await.unwrap();
    drop(seen);
    // A job of the plan that can never succeed.
    let mut bad_jobs =
        queue.consume::<GenerationJob>(&QueueName::generation("r", "bad"), 8).await.unwrap();
    let poisoned = bad_jobs.next().await.unwrap().unwrap();
    poisoned.dead_letter("model /no/such.gguf cannot be loaded: no such file").await.unwrap();

    let (sender, _receiver) = watch::channel(RunProgress::default());
    let watching =
        tokio::spawn(async move { coordinator.watch(&sender).await.map(|p| (p, coordinator)) });
    for index in 0..2 {
        put_output(&store, index).await;
        put_verdict(&store, index, Some(1.5)).await;
    }
    let (progress, coordinator) = tokio::time::timeout(Duration::from_secs(5), watching)
        .await
        .expect("the run ends")
        .unwrap()
        .unwrap();
    assert!(progress.generator("gen").unwrap().is_complete());
    let dropped = coordinator.dropped();
    assert_eq!(
        dropped.keys().collect::<Vec<_>>(),
        vec!["bad"],
        "only the plan's own job drops a generator"
    );
    assert!(
        dropped["bad"].first.contains("cannot be loaded")
            && dropped["bad"].first.contains("herd.r.gen.bad")
    );
    let counted = |queue: &str| {
        metrics.jobs_dead_lettered.with_label_values(&["r", "coordinator", queue]).get()
    };
    assert_eq!(counted("herd.r.gen.gen"), 2, "the two stray messages are counted");
    assert_eq!(counted("herd.r.gen.bad"), 1);

    let dir = tempfile::tempdir().unwrap();
    let summary = coordinator.finish(dir.path()).await.unwrap();
    assert_eq!(summary.generators.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), vec!["gen"]);
    assert!(!dir.path().join("bad").exists());
}

#[tokio::test]
async fn with_drop_generator_a_run_whose_every_generator_is_dropped_fails() {
    let (queue, store) = (MemoryQueue::default(), memory_store());
    let mut coordinator =
        Coordinator::new(queue.clone(), store, Metrics::new().unwrap(), plan(1, 8)).unwrap();
    coordinator.poll_interval = Duration::from_millis(10);
    coordinator.dead_letter_policy = DeadLetterPolicy::DropGenerator;
    coordinator.start().await.unwrap();
    let mut jobs =
        queue.consume::<GenerationJob>(&QueueName::generation("r", "gen"), 1).await.unwrap();
    jobs.next().await.unwrap().unwrap().dead_letter("model m cannot be loaded").await.unwrap();
    let (sender, _receiver) = watch::channel(RunProgress::default());
    let err = tokio::time::timeout(Duration::from_secs(5), coordinator.watch(&sender))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, CoordinatorError::EveryGeneratorDropped { .. }), "{err}");
    assert!(err.to_string().contains("cannot be loaded"), "{err}");
}

#[tokio::test]
async fn the_run_folder_is_copied_into_the_store_byte_for_byte() {
    let (queue, store) = (MemoryQueue::default(), memory_store());
    for index in 0..3 {
        put_output(&store, index).await;
        put_verdict(&store, index, Some(1.0 + index as f64 / 2.0)).await;
    }
    let mut coordinator =
        Coordinator::new(queue, store.clone(), Metrics::new().unwrap(), plan(3, 8)).unwrap();
    assert!(coordinator.start().await.unwrap().is_complete());
    let dir = tempfile::tempdir().unwrap();
    let summary = coordinator.finish(dir.path()).await.unwrap();
    for expected in [
        "leaderboard.csv",
        "report.html",
        "gen/model_outputs.json",
        "gen/annotations.json",
        "gen/errors.md",
    ] {
        assert!(
            summary.files.iter().any(|f| f == expected),
            "{expected} not in {:?}",
            summary.files
        );
    }
    assert_eq!(coordinator.store_report(&summary).await.unwrap(), summary.files.len());
    for file in &summary.files {
        let stored = store.get_bytes(&herd_store::keys::report_file("r", file)).await.unwrap();
        assert_eq!(stored, Some(std::fs::read(dir.path().join(file)).unwrap()), "{file}");
    }
    let listed = store.list(&herd_store::keys::report_prefix("r")).await.unwrap();
    assert_eq!(listed.len(), summary.files.len(), "{listed:?}");
}

#[tokio::test]
async fn a_started_coordinator_exports_its_job_counters_at_zero_for_each_queue_of_the_plan() {
    let (queue, store) = (MemoryQueue::default(), memory_store());
    let metrics = Metrics::new().unwrap();
    let mut coordinator = Coordinator::new(queue, store, metrics.clone(), plan(2, 8)).unwrap();
    coordinator.start().await.unwrap();
    let text = metrics.render();
    for line in [
        "herd_jobs_published_total{queue=\"herd.r.gen.gen\",run=\"r\"} 2",
        "herd_jobs_published_total{queue=\"herd.r.judge.judge\",run=\"r\"} 0",
        "herd_jobs_dead_lettered_total{queue=\"herd.r.gen.gen\",role=\"coordinator\",run=\"r\"} 0",
        "herd_jobs_dead_lettered_total{queue=\"herd.r.judge.judge\",role=\"coordinator\",run=\"r\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
}

#[tokio::test]
async fn while_watching_the_coordinator_reports_each_queues_depth_and_consumers() {
    let (queue, store) = (MemoryQueue::default(), memory_store());
    let metrics = Metrics::new().unwrap();
    let mut coordinator =
        Coordinator::new(queue.clone(), store, metrics.clone(), plan(3, 8)).unwrap();
    coordinator.poll_interval = Duration::from_millis(10);
    coordinator.start().await.unwrap();
    let _consumer = queue.consume::<JudgeJob>(&QueueName::judge("r", "judge"), 1).await.unwrap();
    let (sender, _receiver) = watch::channel(RunProgress::default());
    let watching = tokio::spawn(async move { coordinator.watch(&sender).await });
    let gauge = |queue: &str| {
        let labels = ["r", queue];
        (
            metrics.queue_depth.with_label_values(&labels).get(),
            metrics.queue_consumers.with_label_values(&labels).get(),
        )
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        while gauge("herd.r.gen.gen") != (3, 0) || gauge("herd.r.judge.judge") != (0, 1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the gauges show the three generation jobs and the judge queue's consumer");
    watching.abort();
}

#[tokio::test]
async fn stored_results_that_do_not_match_the_plan_are_moved_aside_and_their_jobs_published_again()
{
    let (queue, store) = (MemoryQueue::default(), memory_store());
    let set = EvalSet::embedded();
    put_output(&store, 0).await;
    // Index 1's key, another instruction (the issue's case).
    let forged = GenerationResult {
        run_id: "r".into(),
        generator: "gen".into(),
        index: 1,
        instruction: set.rows()[5].instruction.clone(),
        dataset: set.rows()[5].dataset.clone(),
        output: "forged".into(),
        prompt_tokens: 1,
        output_tokens: 1,
        seconds: 0.0,
        finish_reason: FinishReason::Eos,
        worker: "forger".into(),
        stored: None,
    };
    store.put_output(&forged).await.unwrap();
    // Index 0's key, a verdict that says it is index 7's.
    let verdict = JudgeResult {
        run_id: "r".into(),
        judge: "judge".into(),
        generator: "gen".into(),
        index: 7,
        preference: Some(2.0),
        raw_completion: "{}".into(),
        is_switched: false,
        truncated: false,
        prompt_tokens: 1,
        seconds: 0.0,
        worker: "forger".into(),
        stored: None,
        price: None,
    };
    let verdict_key = herd_store::keys::annotation("r", "judge", "gen", 0);
    store.put_json(&verdict_key, &verdict).await.unwrap();

    let metrics = Metrics::new().unwrap();
    let mut coordinator =
        Coordinator::new(queue.clone(), store.clone(), metrics.clone(), plan(2, 8)).unwrap();
    coordinator.poll_interval = Duration::from_millis(10);
    coordinator.start().await.unwrap();
    let rejected: Vec<&str> = coordinator.rejected().iter().map(|r| r.key.as_str()).collect();
    let answer_key = herd_store::keys::output("r", "gen", 1);
    assert_eq!(rejected, vec![answer_key.as_str(), verdict_key.as_str()]);
    assert!(coordinator.rejected()[0].reason.starts_with("instruction is "));
    assert_eq!(coordinator.rejected()[1].reason, "index is 7, expected 0");
    assert!(
        !store.exists(&answer_key).await.unwrap() && !store.exists(&verdict_key).await.unwrap()
    );
    assert_eq!(store.list("runs/r/rejected/").await.unwrap().len(), 2);
    assert_eq!(metrics.results_rejected.with_label_values(&["r", "output"]).get(), 1);
    let (gen_queue, judge_queue) =
        (QueueName::generation("r", "gen"), QueueName::judge("r", "judge"));
    let mut jobs = queue.consume::<GenerationJob>(&gen_queue, 8).await.unwrap();
    let job = jobs.next().await.unwrap().unwrap();
    assert_eq!(
        (job.job.index, job.job.instruction.as_str()),
        (1, set.rows()[1].instruction.as_str())
    );

    let (sender, _receiver) = watch::channel(RunProgress::default());
    let watching =
        tokio::spawn(async move { coordinator.watch(&sender).await.map(|_| coordinator) });
    put_output(&store, 1).await;
    job.ack().await.unwrap();
    let mut judge_jobs = queue.consume::<JudgeJob>(&judge_queue, 8).await.unwrap();
    for _ in 0..2 {
        let delivery = judge_jobs.next().await.unwrap().unwrap();
        assert_eq!(delivery.job.model_output, format!("answer {}", delivery.job.index));
        put_verdict(&store, delivery.job.index, Some(1.5)).await;
        delivery.ack().await.unwrap();
    }
    let coordinator =
        tokio::time::timeout(Duration::from_secs(10), watching).await.unwrap().unwrap().unwrap();
    let out = tempfile::tempdir().unwrap();
    let summary = coordinator.finish(out.path()).await.unwrap();
    assert_eq!(summary.rejected.len(), 2);
    let outputs = read_model_outputs(out.path().join("gen").join("model_outputs.json")).unwrap();
    for (index, row) in outputs.iter().enumerate() {
        assert_eq!(row.instruction, set.rows()[index].instruction);
    }
    let listed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join(herd_coordinator::DEAD_LETTERS_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(listed["rejected_results"].as_array().unwrap().len(), 2);
    assert_eq!(listed["dead_letters"].as_array().unwrap().len(), 0);
}
