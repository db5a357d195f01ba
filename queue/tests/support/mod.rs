//! Shared by the RabbitMQ tests: where the broker is, unique names, cleanup.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_core::jobs::{GenerationJob, GeneratorSpec, PromptTemplate};
use herd_queue::{Delivery, JobConsumer, JobQueue, QueueName, RabbitConfig, RabbitQueue};
use serde::de::DeserializeOwned;

/// The test broker (scripts/test-services.sh starts it); HERD_TEST_AMQP_URL overrides.
pub fn amqp_url() -> String {
    std::env::var("HERD_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// Fails (never skips) when the broker is not there: the tests exist to talk to it.
pub fn require_rabbitmq() {
    if std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5672".parse().unwrap(),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!("RabbitMQ is not answering on 127.0.0.1:5672; run scripts/test-services.sh");
    }
}

/// A run id no other test (or other session on the same broker) uses.
pub fn unique_run(label: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("test-{label}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub fn config(delivery_limit: u32) -> RabbitConfig {
    RabbitConfig {
        delivery_limit,
        reconnect_deadline: Duration::from_secs(60),
        connection_name: "herd-queue tests".into(),
        ..RabbitConfig::new(amqp_url())
    }
}

pub async fn connect(delivery_limit: u32) -> RabbitQueue {
    require_rabbitmq();
    RabbitQueue::connect(config(delivery_limit)).await.expect("connect to the test broker")
}

pub fn job(run: &str, generator: &str, index: usize) -> GenerationJob {
    GenerationJob {
        run_id: run.to_string(),
        generator: GeneratorSpec {
            name: generator.to_string(),
            model: "SmolLM2-135M-Instruct".to_string(),
            template: PromptTemplate::Chat,
            max_new_tokens: 64,
            stop: vec![],
            endpoint: None,
            sampling: None,
        },
        index,
        instruction: format!("instruction {index}"),
        dataset: "helpful_base".to_string(),
    }
}

/// The next delivery within `wait`, or `None`; a queue error fails the test.
pub async fn next_within<T: DeserializeOwned>(
    consumer: &mut JobConsumer<T>,
    wait: Duration,
) -> Option<Delivery<T>> {
    match tokio::time::timeout(wait, consumer.next()).await {
        Err(_) | Ok(None) => None,
        Ok(Some(Ok(delivery))) => Some(delivery),
        Ok(Some(Err(e))) => panic!("queue error: {e}"),
    }
}

/// Deletes the run's queues (and its dead-letter queue).
pub async fn cleanup(queue: &RabbitQueue, queues: &[QueueName]) {
    for q in queues {
        queue.delete(q).await.expect("delete test queue");
        queue.delete(&q.dead_letter_queue()).await.expect("delete test dead-letter queue");
    }
}
