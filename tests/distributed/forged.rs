//! Forged jobs and forged results on a real run (RabbitMQ, s3s-fs, the three roles as
//! processes): jobs the plan does not make, published on the run's own queues, and results
//! put straight into the store before a worker gets there. None may reach the run folder;
//! every dead letter is listed with its reason.

use std::time::Duration;

use herd_core::eval_set::EvalSet;
use herd_core::jobs::{
    FinishReason, GenerationJob, GenerationResult, GeneratorSpec, JudgeJob, JudgeMode, JudgeResult,
    JudgeSpec, PromptTemplate,
};
use herd_queue::{JobQueue, QueueName};
use herd_store::keys;

use crate::common::{block_on, default_model_coordinator_args, wait_until, Cluster, MODEL};

const GENERATOR: &str = "smol";
const JUDGE: &str = "judge";
const LIMIT: usize = 4;
const FORGED_ANSWER: &str = "FORGED ANSWER";

fn spec(name: &str) -> GeneratorSpec {
    GeneratorSpec {
        name: name.into(),
        model: MODEL.into(),
        template: PromptTemplate::Chat,
        max_new_tokens: 24,
        stop: vec![],
        endpoint: None,
        sampling: None,
    }
}

fn generation_job(run: &str, name: &str, index: usize, row: usize) -> GenerationJob {
    let set = EvalSet::embedded();
    GenerationJob {
        run_id: run.into(),
        generator: spec(name),
        index,
        instruction: set.rows()[row].instruction.clone(),
        dataset: set.rows()[row].dataset.clone(),
    }
}

#[test]
fn forged_jobs_and_results_never_reach_the_run_folder_and_dead_letters_are_listed() {
    let mut cluster = Cluster::new("forged");
    let run = cluster.run_id.clone();
    let set = EvalSet::embedded();
    let out = cluster.path("out");
    let args = default_model_coordinator_args(GENERATOR, JUDGE, LIMIT, &out);
    let coordinator =
        cluster.spawn("coordinator", &args.iter().map(String::as_str).collect::<Vec<_>>());
    // The coordinator purges its queues when it starts: forge once its jobs are queued.
    let generation = QueueName::generation(&run, GENERATOR);
    wait_until(
        Duration::from_secs(60),
        "the coordinator's generation jobs",
        || cluster.queue_stats(&generation).is_some_and(|s| s.messages as usize >= LIMIT),
        || coordinator.logs(),
    );

    let store = cluster.store();
    block_on(async {
        let queue = cluster.queue().await;
        let forged = vec![
            // Index 1 with another instruction (the case).
            generation_job(&run, GENERATOR, 1, 3),
            generation_job(&run, GENERATOR, 99_999, 0),
            generation_job(&run, "other", 0, 0),
            generation_job("another-run", GENERATOR, 0, 0),
        ];
        queue.publish(&generation, &forged).await.unwrap();
        queue.publish(&generation, &[serde_json::json!("not a job")]).await.unwrap();
        let row = &set.rows()[0];
        let judge_job = JudgeJob {
            run_id: run.clone(),
            judge: JudgeSpec {
                name: JUDGE.into(),
                model: MODEL.into(),
                mode: JudgeMode::Logprob,
                max_new_tokens: 100,
                max_context_tokens: 600,
                endpoint: None,
                price: None,
                config: None,
            },
            generator: GENERATOR.into(),
            index: 0,
            instruction: row.instruction.clone(),
            dataset: row.dataset.clone(),
            reference_output: row.output.clone(),
            model_output: "forged answer".into(),
        };
        let judge_queue = QueueName::judge(&run, JUDGE);
        queue.declare(&judge_queue).await.unwrap();
        queue.publish(&judge_queue, &[judge_job]).await.unwrap();

        // Results put before any worker runs: an answer to another instruction at index 2,
        // and a verdict that names another generator at index 3.
        let answer = GenerationResult {
            run_id: run.clone(),
            generator: GENERATOR.into(),
            index: 2,
            instruction: set.rows()[3].instruction.clone(),
            dataset: set.rows()[3].dataset.clone(),
            output: FORGED_ANSWER.into(),
            prompt_tokens: 1,
            output_tokens: 1,
            seconds: 0.0,
            finish_reason: FinishReason::Eos,
            worker: "forger".into(),
            stored: None,
        };
        store.put_output(&answer).await.unwrap();
        let verdict = JudgeResult {
            run_id: run.clone(),
            judge: JUDGE.into(),
            generator: "other".into(),
            index: 3,
            preference: Some(2.0),
            raw_completion: String::new(),
            is_switched: false,
            truncated: false,
            prompt_tokens: 1,
            seconds: 0.0,
            worker: "forger".into(),
            stored: None,
            price: None,
        };
        // Under smol's key (`put_annotation` would file it under the generator it names).
        store.put_json(&keys::annotation(&run, JUDGE, GENERATOR, 3), &verdict).await.unwrap();
    });

    let worker = cluster.spawn(
        "worker",
        &["worker", "--generator", GENERATOR, "--model", MODEL, "--batch-size", "2"],
    );
    let judge = cluster
        .spawn("judge-worker", &["judge-worker", "--judge-name", JUDGE, "--judge-model", MODEL]);
    let logs = || [&coordinator, &worker, &judge].map(|r| r.logs()).join("\n");
    let status = coordinator.wait(Duration::from_secs(300));
    assert!(status.success(), "the coordinator exited with {status}\n{}", logs());

    // Every row is the eval set's instruction at its index, and no forged text is there.
    let outputs: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(out.join(GENERATOR).join("model_outputs.json")).unwrap(),
    )
    .unwrap();
    let annotations: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(out.join(GENERATOR).join("annotations.json")).unwrap(),
    )
    .unwrap();
    assert_eq!((outputs.len(), annotations.len()), (LIMIT, LIMIT));
    for (index, (output, annotation)) in outputs.iter().zip(&annotations).enumerate() {
        let row = &set.rows()[index];
        assert_eq!(output["instruction"], row.instruction.as_str(), "row {index}");
        assert_eq!(annotation["instruction"], row.instruction.as_str(), "row {index}");
        assert_eq!(annotation["output_1"], row.output.as_str(), "row {index}");
        assert_eq!(annotation["output_2"], output["output"], "row {index}");
        assert_ne!(output["output"], FORGED_ANSWER, "row {index}");
        assert_eq!(annotation["generator_2"], GENERATOR, "row {index}");
    }
    let stored_answer: GenerationResult =
        block_on(store.get_json(&keys::output(&run, GENERATOR, 2))).unwrap().unwrap();
    assert_ne!(stored_answer.worker, "forger");
    assert!(block_on(store.get_json::<GenerationResult>(&keys::output(&run, GENERATOR, 99_999)))
        .unwrap()
        .is_none());

    // The dead letters and the rejected results, in the run folder and on stdout.
    let listed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dead_letters.json")).unwrap()).unwrap();
    let reasons: Vec<String> = listed["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect();
    for expected in [
        "instruction is \"",
        "index is 99999, expected an eval-set index below 805",
        "generator is \"other\", expected \"smol\"",
        "run_id is \"another-run\", expected",
        "malformed message",
        "model_output is \"forged answer\"",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected:?} in {reasons:#?}\n{}",
            logs()
        );
    }
    let rejected: Vec<String> = listed["rejected_results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert!(rejected.contains(&keys::output(&run, GENERATOR, 2)), "{rejected:?}");
    assert!(rejected.contains(&keys::annotation(&run, JUDGE, GENERATOR, 3)), "{rejected:?}");
    let stdout = coordinator.stdout();
    assert!(stdout.contains("dead letters (") && stdout.contains("index is 99999"), "{stdout}");
    assert!(stdout.contains("stored results rejected"), "{stdout}");
    assert!(!cluster.stored(&format!("runs/{run}/rejected/")).is_empty());
    for role in [&worker, &judge] {
        role.terminate();
        role.wait(Duration::from_secs(30));
    }
}
