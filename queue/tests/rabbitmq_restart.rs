//! A consumer and a publisher outlive a RabbitMQ restart (`rabbitmqctl stop_app` /
//! `start_app`). Its own test binary, so no other test of this crate runs while the broker
//! is down.

mod support;

use std::process::Command;
use std::time::Duration;

use herd_core::jobs::GenerationJob;
use herd_queue::{JobQueue, QueueName};
use support::*;

fn rabbitmqctl(args: &[&str]) {
    let output =
        Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl (run as root)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts the broker's app again even if the test fails midway.
struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_publisher_survive_a_broker_restart() {
    let queue = connect(5).await;
    let run = unique_run("restart");
    let q = QueueName::generation(&run, "smol");
    queue.publish(&q, &[job(&run, "smol", 0), job(&run, "smol", 1)]).await.unwrap();

    let mut consumer = queue.consume::<GenerationJob>(&q, 1).await.unwrap();
    let first = next_within(&mut consumer, Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.job.index, 0);
    first.ack().await.unwrap();
    // Held, unacknowledged, across the restart: the broker must redeliver it.
    let held = next_within(&mut consumer, Duration::from_secs(5)).await.unwrap();
    assert_eq!(held.job.index, 1);

    let guard = RestartGuard;
    rabbitmqctl(&["stop_app"]);
    assert!(held.ack().await.is_err(), "an ack across the restart cannot reach the broker");

    // A publish while the broker is away waits for it instead of failing.
    let publisher = {
        let (queue, q, run) = (queue.clone(), q.clone(), run.clone());
        tokio::spawn(async move { queue.publish(&q, &[job(&run, "smol", 2)]).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!publisher.is_finished(), "the publish finished while the broker was down");
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    drop(guard);
    tokio::time::timeout(Duration::from_secs(60), publisher)
        .await
        .expect("the publish completes after the restart")
        .unwrap()
        .expect("publish");

    let mut seen = Vec::new();
    while let Some(delivery) = next_within(&mut consumer, Duration::from_secs(30)).await {
        seen.push((delivery.job.index, delivery.redelivered));
        delivery.ack().await.unwrap();
        if seen.len() == 2 {
            break;
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![(1, true), (2, false)],
        "the held job comes back redelivered, and the new one arrives"
    );
    assert!(next_within(&mut consumer, Duration::from_millis(700)).await.is_none());
    consumer.close().await;
    cleanup(&queue, &[q]).await;
}
