//! The judge worker on the default model (SmolLM2-135M-Instruct as judge): its verdicts are
//! poor but real. Rows with short reference answers keep the prompts (and CI time) small.

use std::time::Duration;

use herd_core::eval_set::EvalSet;
use herd_core::jobs::{
    FinishReason, GenerationResult, JudgeJob, JudgeMode, JudgeResult, JudgeSpec,
};
use herd_core::judge::{JudgeTokenizer, PreparedJudgment, SwapDecision, LOGPROB_ANSWER_PREFIX};
use herd_judge_worker::{
    JudgeCache, JudgeCacheKey, JudgeFormat, JudgeModel, JudgeWorker, LogprobCandidates,
};
use herd_queue::{JobQueue, MemoryQueue};
use herd_runtime::{ModelCache, DEFAULT_MODEL};
use herd_store::{keys, ResultStore};
use herd_telemetry::Metrics;

/// Judge jobs on eval-set rows (199, 370, 597 and 662 have references of a few words).
fn jobs(run: &str, mode: JudgeMode, max_new_tokens: usize, indices: &[usize]) -> Vec<JudgeJob> {
    let set = EvalSet::embedded();
    let judge = JudgeSpec {
        name: format!("smol-{}", mode.as_str()),
        model: DEFAULT_MODEL.into(),
        mode,
        max_new_tokens,
        max_context_tokens: 7000,
        endpoint: None,
        price: None,
        config: None,
    };
    indices
        .iter()
        .map(|&index| {
            let row = &set.rows()[index];
            JudgeJob {
                run_id: run.into(),
                judge: judge.clone(),
                generator: "gen".into(),
                index,
                instruction: row.instruction.clone(),
                dataset: row.dataset.clone(),
                reference_output: row.output.clone(),
                model_output: format!("A short answer to: {}", row.instruction),
            }
        })
        .collect()
}

async fn judge_all(
    run: &str,
    jobs: &[JudgeJob],
    store: &ResultStore,
    cache: &JudgeCache,
    models: &ModelCache,
) -> herd_judge_worker::JudgeWorkerStats {
    // A judge job judges the answer stored for it: store them first, as a generator would.
    for job in jobs {
        let answer = GenerationResult {
            run_id: job.run_id.clone(),
            generator: job.generator.clone(),
            index: job.index,
            instruction: job.instruction.clone(),
            dataset: job.dataset.clone(),
            output: job.model_output.clone(),
            prompt_tokens: 0,
            output_tokens: 0,
            seconds: 0.0,
            finish_reason: FinishReason::Eos,
            worker: "test-generator".into(),
            stored: None,
        };
        store.put_output(&answer).await.unwrap();
    }
    let queue = MemoryQueue::default();
    let worker = JudgeWorker::new(run, &jobs[0].judge.name, "test-judge");
    queue.publish(&worker.queue_name(), jobs).await.unwrap();
    let prefix = keys::annotations_prefix(run, &jobs[0].judge.name, "gen");
    let (n, watched) = (jobs.len(), store.clone());
    let done = async move {
        while watched.list(&prefix).await.unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let metrics = Metrics::new().unwrap();
    let stats = tokio::time::timeout(
        Duration::from_secs(240),
        worker.run(&queue, store, cache, models, &metrics, done),
    )
    .await
    .expect("the judge finishes")
    .unwrap();
    assert_eq!(queue.stats(&worker.queue_name()).await.unwrap().messages, 0);
    stats
}

#[tokio::test]
async fn the_default_model_judges_in_its_chat_format_and_logprob_mode_fits_its_tokenizer() {
    let models = ModelCache::default();
    let model = models.get(DEFAULT_MODEL).await.unwrap();
    let judge = JudgeModel::new(&model);
    assert_eq!(judge.format, JudgeFormat::ChatTemplate);
    let candidates = LogprobCandidates::for_model(&model).unwrap();
    assert_eq!(candidates.prefix, model.tokenizer.encode(LOGPROB_ANSWER_PREFIX, false).unwrap());
    assert_ne!(candidates.candidates[0], candidates.candidates[1]);

    let job = &jobs("p", JudgeMode::Logprob, 100, &[0])[0];
    let prepared = PreparedJudgment::prepare(job, &judge);
    let tokens = judge.prompt_tokens(&prepared.prompt).unwrap();
    assert_eq!(prepared.prompt_tokens, tokens.len());
    let text = model.tokenizer.decode(&tokens).unwrap();
    assert!(text.contains("You are a helpful assistant that ranks models"), "{text}");
    assert!(text.ends_with("assistant\n"), "the answer follows the generation prompt: {text:?}");
    assert_eq!(judge.truncate_to_tokens("one two three four", 2), "one two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprob_verdicts_are_stored_in_alpaca_evals_orientation_and_cached() {
    let (dir, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = ResultStore::local(dir.path()).unwrap();
    let cache = JudgeCache::new(ResultStore::local(cache_dir.path()).unwrap());
    let models = ModelCache::default();
    let first_jobs = jobs("r1", JudgeMode::Logprob, 100, &[199, 370, 597]);
    let stats = judge_all("r1", &first_jobs, &store, &cache, &models).await;
    assert_eq!((stats.judged, stats.cached, stats.unparsed), (3, 0, 0));

    for job in &first_jobs {
        let result: JudgeResult = store
            .get_json(&keys::annotation("r1", &job.judge.name, "gen", job.index))
            .await
            .unwrap()
            .unwrap();
        let p = result.preference.expect("logprob mode always gives a verdict");
        assert!((1.0..=2.0).contains(&p), "{p}");
        assert_eq!(
            result.is_switched,
            SwapDecision::for_instruction(&job.instruction).is_switched()
        );
        let raw: serde_json::Value = serde_json::from_str(&result.raw_completion).unwrap();
        let (p1, p2) =
            (raw["p_model_1_first"].as_f64().unwrap(), raw["p_model_2_first"].as_f64().unwrap());
        // The raw probabilities are in the order shown; the preference is mapped back.
        let shown = 1.0 + p2 / (p1 + p2);
        let expected = if result.is_switched { 3.0 - shown } else { shown };
        assert!((p - expected).abs() < 1e-9, "{p} vs {expected}");
    }
    assert_eq!(std::fs::read_dir(cache_dir.path().join("cache/judgements")).unwrap().count(), 3);

    // Another run with the same cache: no judge call, and the judge model is never loaded.
    let fresh_models = ModelCache::default();
    let again_dir = tempfile::tempdir().unwrap();
    let again_store = ResultStore::local(again_dir.path()).unwrap();
    let again = judge_all(
        "r2",
        &jobs("r2", JudgeMode::Logprob, 100, &[199, 370, 597]),
        &again_store,
        &cache,
        &fresh_models,
    )
    .await;
    assert_eq!((again.judged, again.cached), (0, 3));
    assert!(!fresh_models.is_loaded(DEFAULT_MODEL));
    for job in &first_jobs {
        let first: JudgeResult = store
            .get_json(&keys::annotation("r1", &job.judge.name, "gen", job.index))
            .await
            .unwrap()
            .unwrap();
        let second: JudgeResult = again_store
            .get_json(&keys::annotation("r2", &job.judge.name, "gen", job.index))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (first.preference, &first.raw_completion),
            (second.preference, &second.raw_completion)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_ranking_is_stored_as_null_with_its_text_and_not_cached() {
    let (dir, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = ResultStore::local(dir.path()).unwrap();
    let cache = JudgeCache::new(ResultStore::local(cache_dir.path()).unwrap());
    let models = ModelCache::default();
    // Three new tokens cannot hold a whole ranking list: the parser must fail.
    let ranking = jobs("r3", JudgeMode::Ranking, 3, &[662]);
    let stats = judge_all("r3", &ranking, &store, &cache, &models).await;
    assert_eq!((stats.judged, stats.unparsed, stats.cached), (1, 1, 0));
    let result: JudgeResult = store
        .get_json(&keys::annotation("r3", &ranking[0].judge.name, "gen", 662))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.preference, None);
    assert!(!result.raw_completion.is_empty(), "the judge's text is kept");
    assert!(store.list("cache/").await.unwrap().is_empty());
    let key =
        JudgeCacheKey::new(&ranking[0], &herd_judge_worker::model_identity(DEFAULT_MODEL).unwrap());
    assert_eq!(cache.get(&key).await.unwrap(), None, "a failed verdict is not cached");

    // Judged again next time.
    let again_dir = tempfile::tempdir().unwrap();
    let again_store = ResultStore::local(again_dir.path()).unwrap();
    let again =
        judge_all("r4", &jobs("r4", JudgeMode::Ranking, 3, &[662]), &again_store, &cache, &models)
            .await;
    assert_eq!((again.judged, again.cached), (1, 0));
}

#[tokio::test]
async fn a_started_judge_worker_exports_its_failure_counters_at_zero() {
    let store = ResultStore::open(&herd_store::StoreConfig::new("memory://")).unwrap();
    let cache = JudgeCache::new(store.clone());
    let metrics = Metrics::new().unwrap();
    let worker = JudgeWorker::new("r-zero", "judge", "test-worker");
    // No job, and told to stop at once: what a judge worker exports before its first job.
    let queue = MemoryQueue::default();
    let models = ModelCache::default();
    worker.run(&queue, &store, &cache, &models, &metrics, std::future::ready(())).await.unwrap();
    let text = metrics.render();
    for family in ["completed", "failed", "redelivered", "dead_lettered"] {
        let line = format!(
            "herd_jobs_{family}_total{{queue=\"herd.r-zero.judge.judge\",role=\"judge-worker\",run=\"r-zero\"}} 0"
        );
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l == "herd_judge_prompt_tokens_total{judge=\"judge\",run=\"r-zero\"} 0"),
        "{text}"
    );
}

#[tokio::test]
async fn the_benchmark_noop_judge_ties_at_once_without_a_model_or_the_cache() {
    let store = ResultStore::open(&herd_store::StoreConfig::new("memory://")).unwrap();
    let cache = JudgeCache::new(store.clone());
    let models = ModelCache::default();
    let mut noop = jobs("r-noop", JudgeMode::Logprob, 100, &[0, 1, 2]);
    for job in &mut noop {
        job.judge.model = herd_runtime::NOOP_BENCHMARK_MODEL.into();
    }
    let stats = judge_all("r-noop", &noop, &store, &cache, &models).await;
    assert_eq!((stats.judged, stats.cached), (3, 0));
    assert!(!models.is_loaded(herd_runtime::NOOP_BENCHMARK_MODEL));
    assert!(store.list("cache/").await.unwrap().is_empty(), "noop verdicts are never cached");
    let key = keys::annotation("r-noop", &noop[1].judge.name, "gen", 1);
    let verdict: JudgeResult = store.get_json(&key).await.unwrap().unwrap();
    assert_eq!(verdict.preference, Some(1.5));
    assert_eq!(
        verdict.is_switched,
        SwapDecision::for_instruction(&noop[1].instruction).is_switched()
    );
}

#[tokio::test]
async fn a_judge_job_for_an_answer_not_stored_or_a_forged_reference_is_dead_lettered() {
    let store = ResultStore::open(&herd_store::StoreConfig::new("memory://")).unwrap();
    let cache = JudgeCache::new(store.clone());
    let models = ModelCache::default();
    let mut honest = jobs("r-forged", JudgeMode::Logprob, 100, &[0]);
    honest[0].judge.model = herd_runtime::NOOP_BENCHMARK_MODEL.into();
    // Stores the answer of index 0 and judges it: the honest job goes through.
    judge_all("r-forged", &honest, &store, &cache, &models).await;
    let mut other_answer = honest[0].clone();
    other_answer.index = 1;
    let set = EvalSet::embedded();
    other_answer.instruction = set.rows()[1].instruction.clone();
    other_answer.dataset = set.rows()[1].dataset.clone();
    other_answer.reference_output = set.rows()[1].output.clone();
    let mut worse_reference = honest[0].clone();
    worse_reference.generator = "gen2".into();
    worse_reference.reference_output = "a worse reference".into();

    let queue = MemoryQueue::default();
    let worker = JudgeWorker::new("r-forged", &honest[0].judge.name, "test-judge");
    queue.publish(&worker.queue_name(), &[other_answer, worse_reference]).await.unwrap();
    let dlq = herd_queue::QueueName::dead_letters("r-forged");
    let watched = queue.clone();
    let done = async move {
        while watched.stats(&dlq).await.map(|s| s.messages).unwrap_or(0) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let metrics = Metrics::new().unwrap();
    let stats = worker.run(&queue, &store, &cache, &models, &metrics, done).await.unwrap();
    assert_eq!(stats.dead_lettered, 2);
    let mut dead = queue
        .consume::<JudgeJob>(&herd_queue::QueueName::dead_letters("r-forged"), 8)
        .await
        .unwrap();
    let mut reasons = Vec::new();
    for _ in 0..2 {
        reasons.push(dead.next().await.unwrap().unwrap().dead_letter_info.unwrap().reason);
    }
    reasons.sort();
    assert!(reasons[0].contains("model_output is "), "{reasons:?}");
    assert!(reasons[0].contains("there is none"), "{reasons:?}");
    assert!(reasons[1].contains("reference_output is \"a worse reference\""), "{reasons:?}");
    for (generator, index) in [("gen", 1), ("gen2", 0)] {
        let key = keys::annotation("r-forged", &honest[0].judge.name, generator, index);
        assert!(!store.exists(&key).await.unwrap(), "{key}");
    }
}
