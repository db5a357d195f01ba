//! herd-queue against the real RabbitMQ (scripts/test-services.sh). Every test uses its own
//! run id, so its queues are its own, and deletes them at the end.

mod support;

use std::time::{Duration, Instant};

use herd_core::jobs::GenerationJob;
use herd_queue::{
    JobQueue, QueueError, QueueName, QueueStats, RabbitConfig, RabbitQueue, DELIVERY_LIMIT_REASON,
};
use support::*;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(700);

#[tokio::test]
async fn published_jobs_arrive_in_order_and_acked_jobs_are_gone() {
    let queue = connect(5).await;
    let run = unique_run("roundtrip");
    let q = QueueName::generation(&run, "smol");
    let jobs: Vec<GenerationJob> = (0..3).map(|i| job(&run, "smol", i)).collect();
    queue.publish(&q, &jobs).await.unwrap();
    assert_eq!(queue.stats(&q).await.unwrap(), QueueStats { messages: 3, consumers: 0 });

    let mut consumer = queue.consume::<GenerationJob>(&q, 2).await.unwrap();
    for expected in &jobs {
        let delivery = next_within(&mut consumer, WAIT).await.expect("a job");
        assert_eq!(&delivery.job, expected);
        assert!(!delivery.redelivered);
        assert_eq!(delivery.delivery_count, 0);
        assert!(delivery.dead_letter_info.is_none());
        delivery.ack().await.unwrap();
    }
    assert!(next_within(&mut consumer, QUIET).await.is_none(), "an acked job came back");
    consumer.close().await;

    let mut again = queue.consume::<GenerationJob>(&q, 2).await.unwrap();
    assert!(next_within(&mut again, QUIET).await.is_none(), "an acked job survived its consumer");
    again.close().await;
    cleanup(&queue, &[q]).await;
}

#[tokio::test]
async fn prefetch_bounds_the_unacknowledged_deliveries() {
    let queue = connect(5).await;
    let run = unique_run("prefetch");
    let q = QueueName::generation(&run, "smol");
    queue.publish(&q, &(0..5).map(|i| job(&run, "smol", i)).collect::<Vec<_>>()).await.unwrap();
    let mut consumer = queue.consume::<GenerationJob>(&q, 2).await.unwrap();
    let first = next_within(&mut consumer, WAIT).await.unwrap();
    let _second = next_within(&mut consumer, WAIT).await.unwrap();
    assert!(
        next_within(&mut consumer, QUIET).await.is_none(),
        "a third job arrived with prefetch 2"
    );
    first.ack().await.unwrap();
    assert_eq!(next_within(&mut consumer, WAIT).await.unwrap().job.index, 2);
    consumer.close().await;
    cleanup(&queue, &[q]).await;
}

#[tokio::test]
async fn nacked_job_is_redelivered_with_the_flag_and_its_count() {
    let queue = connect(5).await;
    let run = unique_run("nack");
    let q = QueueName::generation(&run, "smol");
    queue.publish(&q, &[job(&run, "smol", 7)]).await.unwrap();
    let mut consumer = queue.consume::<GenerationJob>(&q, 1).await.unwrap();

    let first = next_within(&mut consumer, WAIT).await.unwrap();
    assert!(!first.redelivered);
    first.nack().await.unwrap();

    let second = next_within(&mut consumer, WAIT).await.expect("the nacked job comes back");
    assert_eq!(second.job.index, 7);
    assert!(second.redelivered, "redelivered flag");
    assert_eq!(second.delivery_count, 1, "x-delivery-count");
    drop(second); // dropped unsettled: given back like a nack

    let third = next_within(&mut consumer, WAIT).await.expect("the dropped job comes back");
    assert_eq!(third.delivery_count, 2);
    third.ack().await.unwrap();
    consumer.close().await;
    cleanup(&queue, &[q]).await;
}

#[tokio::test]
async fn job_over_the_delivery_limit_lands_in_the_dead_letter_queue_with_its_reason() {
    let limit = 2;
    let queue = connect(limit).await;
    let run = unique_run("limit");
    let q = QueueName::generation(&run, "smol");
    queue.publish(&q, &[job(&run, "smol", 3)]).await.unwrap();

    let mut consumer = queue.consume::<GenerationJob>(&q, 1).await.unwrap();
    let mut deliveries = 0;
    while let Some(delivery) = next_within(&mut consumer, Duration::from_secs(2)).await {
        deliveries += 1;
        assert!(deliveries <= 10, "the delivery limit never took effect");
        delivery.nack().await.unwrap();
    }
    assert_eq!(deliveries, limit + 1, "first delivery plus `limit` redeliveries");

    let mut dead = queue.consume::<GenerationJob>(&q.dead_letter_queue(), 1).await.unwrap();
    let letter = next_within(&mut dead, WAIT).await.expect("the job is in the dead-letter queue");
    assert_eq!(letter.job.index, 3);
    let info = letter.dead_letter_info.clone().expect("dead-letter reason");
    assert_eq!(info.reason, DELIVERY_LIMIT_REASON);
    assert_eq!(info.queue, q.as_str());
    letter.ack().await.unwrap();
    dead.close().await;
    consumer.close().await;
    cleanup(&queue, &[q]).await;
}

#[tokio::test]
async fn job_a_worker_refuses_lands_in_the_dead_letter_queue_with_the_workers_reason() {
    let queue = connect(5).await;
    let run = unique_run("refuse");
    let q = QueueName::generation(&run, "broken-model");
    queue.publish(&q, &[job(&run, "broken-model", 1)]).await.unwrap();
    let mut consumer = queue.consume::<GenerationJob>(&q, 1).await.unwrap();
    let delivery = next_within(&mut consumer, WAIT).await.unwrap();
    delivery.dead_letter("model cannot load: no such file model.gguf").await.unwrap();
    assert!(next_within(&mut consumer, QUIET).await.is_none(), "a dead-lettered job came back");

    let mut dead = queue.consume::<GenerationJob>(&q.dead_letter_queue(), 1).await.unwrap();
    let letter =
        next_within(&mut dead, WAIT).await.expect("the refused job is in the dead-letter queue");
    let info = letter.dead_letter_info.clone().unwrap();
    assert_eq!(info.reason, "model cannot load: no such file model.gguf");
    assert_eq!(info.queue, q.as_str());
    letter.ack().await.unwrap();
    dead.close().await;
    consumer.close().await;
    cleanup(&queue, &[q]).await;
}

#[tokio::test]
async fn malformed_message_is_dead_lettered_and_the_consumer_goes_on() {
    let queue = connect(5).await;
    let run = unique_run("malformed");
    let q = QueueName::generation(&run, "smol");
    queue.publish(&q, &[serde_json::json!({"not": "a job"})]).await.unwrap();
    queue.publish(&q, &[job(&run, "smol", 2)]).await.unwrap();

    let mut consumer = queue.consume::<GenerationJob>(&q, 1).await.unwrap();
    let report = tokio::time::timeout(WAIT, consumer.next()).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(report, QueueError::Malformed { .. }), "{report}");
    assert!(!report.is_fatal());
    let good = next_within(&mut consumer, WAIT)
        .await
        .expect("the consumer goes on after a malformed message");
    assert_eq!(good.job.index, 2);
    good.ack().await.unwrap();

    let mut dead = queue.consume::<serde_json::Value>(&q.dead_letter_queue(), 1).await.unwrap();
    let letter = next_within(&mut dead, WAIT).await.unwrap();
    assert_eq!(letter.job, serde_json::json!({"not": "a job"}));
    assert!(letter.dead_letter_info.as_ref().unwrap().reason.starts_with("malformed message"));
    letter.ack().await.unwrap();
    dead.close().await;
    consumer.close().await;
    cleanup(&queue, &[q]).await;
}

#[tokio::test]
async fn two_runs_on_one_broker_do_not_see_each_others_jobs() {
    let queue = connect(5).await;
    let (run_a, run_b) = (unique_run("iso-a"), unique_run("iso-b"));
    let (qa, qb) = (QueueName::generation(&run_a, "smol"), QueueName::generation(&run_b, "smol"));
    assert_ne!(qa, qb);
    queue.publish(&qa, &[job(&run_a, "smol", 1), job(&run_a, "smol", 2)]).await.unwrap();
    queue.publish(&qb, &[job(&run_b, "smol", 9)]).await.unwrap();

    let mut consumer_b = queue.consume::<GenerationJob>(&qb, 10).await.unwrap();
    let only = next_within(&mut consumer_b, WAIT).await.unwrap();
    assert_eq!((only.job.run_id.as_str(), only.job.index), (run_b.as_str(), 9));
    only.ack().await.unwrap();
    assert!(next_within(&mut consumer_b, QUIET).await.is_none(), "run B saw a job of run A");
    assert_eq!(queue.stats(&qa).await.unwrap().messages, 2, "run A's jobs are untouched");
    consumer_b.close().await;
    cleanup(&queue, &[qa, qb]).await;
}

#[tokio::test]
async fn stats_count_ready_jobs_and_consumers_and_missing_queues_are_named() {
    let queue = connect(5).await;
    let run = unique_run("stats");
    let q = QueueName::judge(&run, "judge");
    let missing = queue.stats(&q).await.unwrap_err();
    assert!(
        matches!(missing, QueueError::NotFound { .. }) && missing.to_string().contains(q.as_str()),
        "{missing}"
    );

    queue.declare(&q).await.unwrap();
    assert_eq!(queue.stats(&q).await.unwrap(), QueueStats { messages: 0, consumers: 0 });
    assert_eq!(
        queue.stats(&q.dead_letter_queue()).await.unwrap().messages,
        0,
        "declare makes the DLQ too"
    );
    queue.publish(&q, &[1u32, 2, 3, 4]).await.unwrap();
    let mut consumer = queue.consume::<u32>(&q, 1).await.unwrap();
    let held = next_within(&mut consumer, WAIT).await.unwrap();
    // Let the broker register the delivery before asking.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(queue.stats(&q).await.unwrap(), QueueStats { messages: 3, consumers: 1 });
    held.ack().await.unwrap();
    consumer.close().await;
    cleanup(&queue, &[q]).await;
}

#[tokio::test]
async fn purge_drops_ready_jobs_and_a_held_one_comes_back() {
    let queue = connect(5).await;
    let run = unique_run("purge");
    let q = QueueName::generation(&run, "smol");
    queue.publish(&q, &[1u32, 2, 3]).await.unwrap();
    let mut consumer = queue.consume::<u32>(&q, 1).await.unwrap();
    let held = next_within(&mut consumer, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(queue.purge(&q).await.unwrap(), 2);
    assert_eq!(queue.stats(&q).await.unwrap().messages, 0);
    held.nack().await.unwrap();
    let back = next_within(&mut consumer, WAIT).await.unwrap();
    assert_eq!((back.job, back.redelivered), (1, true), "the delivered job survives the purge");
    back.ack().await.unwrap();
    consumer.close().await;
    cleanup(&queue, &[q]).await;
}

#[tokio::test]
async fn wrong_password_fails_fast_with_a_clear_message_without_the_password() {
    require_rabbitmq();
    let started = Instant::now();
    let config = RabbitConfig {
        password: Some("definitely-not-the-password".into()),
        reconnect_deadline: Duration::from_secs(60),
        ..RabbitConfig::new("amqp://guest@127.0.0.1:5672/%2f")
    };
    let err = RabbitQueue::connect(config).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}: refused credentials must not be retried",
        started.elapsed()
    );
    assert!(matches!(err, QueueError::AccessRefused { .. }), "{err:?}");
    let message = err.to_string();
    assert_eq!(message, "RabbitMQ refused the credentials for user guest at 127.0.0.1:5672");
    assert!(!format!("{err:?}").contains("definitely-not-the-password"));
}

#[tokio::test]
async fn unreachable_broker_is_reported_after_the_reconnect_deadline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = RabbitConfig {
        reconnect_deadline: Duration::from_millis(800),
        ..RabbitConfig::new(format!("amqp://guest:secret-pw@127.0.0.1:{port}/%2f"))
    };
    let err = RabbitQueue::connect(config).await.unwrap_err();
    assert!(matches!(err, QueueError::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")) && !message.contains("secret-pw"),
        "{message}"
    );
}
