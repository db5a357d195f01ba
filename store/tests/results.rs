//! herd-store on a local folder and on a real S3-protocol server (s3s-fs, started per test on
//! a free port).

mod support;

use std::time::{Duration, Instant};

use herd_core::jobs::{FinishReason, GenerationResult, JudgeResult};
use herd_store::{keys, ResultStore, StoreConfig, StoreError, Stored};
use support::*;

fn output(run: &str, generator: &str, index: usize, text: &str) -> GenerationResult {
    GenerationResult {
        run_id: run.into(),
        generator: generator.into(),
        index,
        instruction: format!("instruction {index}"),
        dataset: "helpful_base".into(),
        output: text.into(),
        prompt_tokens: 12,
        output_tokens: 34,
        seconds: 0.5,
        finish_reason: FinishReason::Eos,
        worker: "test".into(),
        stored: None,
    }
}

fn verdict(run: &str, judge: &str, generator: &str, index: usize) -> JudgeResult {
    JudgeResult {
        run_id: run.into(),
        judge: judge.into(),
        generator: generator.into(),
        index,
        preference: Some(1.75),
        raw_completion: "m".into(),
        is_switched: true,
        truncated: false,
        prompt_tokens: 900,
        seconds: 0.2,
        worker: "test".into(),
        stored: None,
        price: None,
    }
}

/// The same checks on every backend: round trip, listing, exists, idempotent result puts.
async fn exercise(store: &ResultStore) {
    let first = output("r1", "smol", 3, "first answer");
    assert_eq!(store.put_output(&first).await.unwrap(), Stored::New);
    let again = output("r1", "smol", 3, "a second delivery's answer");
    assert_eq!(store.put_output(&again).await.unwrap(), Stored::AlreadyThere);
    let key = keys::output("r1", "smol", 3);
    assert_eq!(
        store.get_json::<GenerationResult>(&key).await.unwrap(),
        Some(first),
        "the first write stays"
    );
    assert!(store.exists(&key).await.unwrap());
    assert!(!store.exists(&keys::output("r1", "smol", 4)).await.unwrap());
    assert_eq!(
        store.get_json::<GenerationResult>(&keys::output("r1", "smol", 4)).await.unwrap(),
        None
    );

    store.put_output(&output("r1", "smol", 10, "x")).await.unwrap();
    store.put_output(&output("r1", "other", 1, "y")).await.unwrap();
    store.put_output(&output("r2", "smol", 1, "z")).await.unwrap();
    store.put_annotation(&verdict("r1", "llama", "smol", 3)).await.unwrap();
    assert_eq!(
        store.list(&keys::outputs_prefix("r1", "smol")).await.unwrap(),
        vec!["runs/r1/outputs/smol/10.json", "runs/r1/outputs/smol/3.json"]
    );
    let annotations = store.list(&keys::annotations_prefix("r1", "llama", "smol")).await.unwrap();
    assert_eq!(annotations, vec![keys::annotation("r1", "llama", "smol", 3)]);
    let back: JudgeResult = store.get_json(&annotations[0]).await.unwrap().unwrap();
    assert_eq!(back, verdict("r1", "llama", "smol", 3));
    assert!(store.list("runs/nothing-here/").await.unwrap().is_empty());

    // Plain puts overwrite (for documents that are meant to change, like a run's manifest).
    store.put_json("runs/r1/manifest.json", &serde_json::json!({"v": 1})).await.unwrap();
    store.put_json("runs/r1/manifest.json", &serde_json::json!({"v": 2})).await.unwrap();
    let manifest: serde_json::Value =
        store.get_json("runs/r1/manifest.json").await.unwrap().unwrap();
    assert_eq!(manifest["v"], 2);

    // A document of the wrong shape is a typed error naming the key.
    let err = store.get_json::<JudgeResult>(&key).await.unwrap_err();
    assert!(matches!(err, StoreError::Decode { .. }) && err.to_string().contains(&key), "{err}");

    store.delete("runs/r1/manifest.json").await.unwrap();
    assert!(!store.exists("runs/r1/manifest.json").await.unwrap());
}

#[tokio::test]
async fn local_folder_round_trip_through_a_file_url() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        ResultStore::open(&StoreConfig::new(format!("file://{}/results", dir.path().display())))
            .unwrap();
    exercise(&store).await;
    let on_disk = dir.path().join("results/runs/r1/outputs/smol/3.json");
    let text = std::fs::read_to_string(&on_disk).expect("results are plain files");
    assert!(text.contains("first answer"));
}

#[tokio::test]
async fn local_folder_round_trip_through_a_plain_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = ResultStore::local(dir.path().join("nested/out")).unwrap();
    exercise(&store).await;
    assert!(store.description().starts_with("file://"));
}

#[tokio::test]
async fn s3_round_trip_on_s3s_fs() {
    let server = S3Server::start();
    let store = ResultStore::open(&server.config("herd/prefix")).unwrap();
    exercise(&store).await;
    // The prefix from the URL is where the objects are.
    assert!(server
        .data_dir()
        .join(BUCKET)
        .join("herd/prefix/runs/r1/outputs/smol/3.json")
        .is_file());
    assert!(store.description().contains(&server.endpoint()));
}

#[tokio::test]
async fn put_while_the_s3_server_is_down_waits_and_succeeds_after_it_returns() {
    let mut server = S3Server::start();
    let store = ResultStore::open(&server.config("outage")).unwrap();
    store.put_output(&output("r", "smol", 0, "before")).await.unwrap();

    server.stop();
    let pending = {
        let store = store.clone();
        tokio::spawn(
            async move { store.put_output(&output("r", "smol", 1, "during the outage")).await },
        )
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !pending.is_finished(),
        "the put gave up (or claimed success) while the store was down"
    );
    server.restart();
    let stored = tokio::time::timeout(Duration::from_secs(45), pending)
        .await
        .expect("the put finishes once the store is back")
        .unwrap()
        .expect("put");
    assert_eq!(stored, Stored::New);
    let back: GenerationResult =
        store.get_json(&keys::output("r", "smol", 1)).await.unwrap().unwrap();
    assert_eq!(back.output, "during the outage");
}

#[tokio::test]
async fn put_gives_up_after_the_deadline_with_an_error_naming_key_and_store_but_no_secret() {
    let mut server = S3Server::start();
    let config =
        StoreConfig { retry_deadline: Duration::from_secs(2), ..server.config("deadline") };
    let store = ResultStore::open(&config).unwrap();
    server.stop();
    let started = Instant::now();
    let err = store.put_output(&output("r", "smol", 5, "lost?")).await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_secs(2), "gave up before the deadline");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("runs/r/outputs/smol/5.json") && message.contains(&server.endpoint()),
        "{message}"
    );
    assert!(!message.contains(SECRET_KEY) && !format!("{err:?}").contains(SECRET_KEY));
}

#[tokio::test]
async fn wrong_secret_fails_without_waiting_for_the_deadline() {
    let server = S3Server::start();
    let config = StoreConfig {
        s3_secret_access_key: Some("not-the-secret".into()),
        ..server.config("auth")
    };
    let store = ResultStore::open(&config).unwrap();
    let started = Instant::now();
    let err = store.put_output(&output("r", "smol", 1, "x")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20), "a refused signature is not transient");
    assert!(matches!(err, StoreError::Operation { .. }), "{err:?}");
    assert!(!err.to_string().contains("not-the-secret"));
}
