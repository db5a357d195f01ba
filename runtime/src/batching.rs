//! Deliveries gathered into engine batches. A feeder task pulls deliveries off the queue (the
//! queue's prefetch bounds how many are unsettled), and [`next_batch`] takes what is ready,
//! up to the batch size, so that the engine gets full batches without waiting for stragglers.

use std::future::Future;
use std::time::Duration;

use herd_queue::{Delivery, JobConsumer, QueueError};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Deliveries from one queue. Dropping it stops the feeder; deliveries not yet taken go
/// back to the queue.
pub struct Feed<T> {
    deliveries: mpsc::UnboundedReceiver<Result<Delivery<T>, QueueError>>,
    feeder: JoinHandle<()>,
}

impl<T> Drop for Feed<T> {
    fn drop(&mut self) {
        self.feeder.abort();
    }
}

/// Starts pulling `consumer`'s deliveries in the background. Malformed messages (already
/// dead-lettered by the queue) are logged and skipped; a fatal queue error ends the feed
/// after being handed on.
pub fn spawn_feeder<T: DeserializeOwned + Send + 'static>(mut consumer: JobConsumer<T>) -> Feed<T> {
    let (sender, deliveries) = mpsc::unbounded_channel();
    let feeder = tokio::spawn(async move {
        while let Some(next) = consumer.next().await {
            match next {
                Ok(delivery) => {
                    if sender.send(Ok(delivery)).is_err() {
                        break;
                    }
                }
                Err(e) if !e.is_fatal() => {
                    tracing::warn!(queue = %consumer.queue(), error = %e, "skipped a message")
                }
                Err(e) => {
                    let _ = sender.send(Err(e));
                    break;
                }
            }
        }
        consumer.close().await;
    });
    Feed { deliveries, feeder }
}

/// Waits for the first delivery (or `shutdown`), then takes what else arrives within
/// `linger`, up to `max` deliveries. `None` when shutdown came first or the queue closed.
pub async fn next_batch<T, S>(
    feed: &mut Feed<T>,
    max: usize,
    linger: Duration,
    shutdown: &mut S,
) -> Option<Result<Vec<Delivery<T>>, QueueError>>
where
    S: Future<Output = ()> + Unpin,
{
    let first = tokio::select! {
        biased;
        _ = shutdown => return None,
        first = feed.deliveries.recv() => first?,
    };
    let mut batch = match first {
        Ok(delivery) => vec![delivery],
        Err(e) => return Some(Err(e)),
    };
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max.max(1) {
        let next = match feed.deliveries.try_recv() {
            Ok(next) => next,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(deadline, feed.deliveries.recv()).await {
                    Ok(Some(next)) => next,
                    Ok(None) | Err(_) => break,
                }
            }
        };
        match next {
            Ok(delivery) => batch.push(delivery),
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(batch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_queue::{JobQueue, MemoryQueue, QueueName};

    #[tokio::test]
    async fn a_batch_takes_what_is_ready_up_to_its_size_and_shutdown_ends_the_wait() {
        let queue = MemoryQueue::default();
        let name = QueueName::generation("unit", "g");
        queue.publish(&name, &[1u32, 2, 3, 4, 5]).await.unwrap();
        let mut feed = spawn_feeder(queue.consume::<u32>(&name, 8).await.unwrap());
        let never = std::future::pending::<()>();
        let mut never = std::pin::pin!(never);
        let batch =
            next_batch(&mut feed, 3, Duration::from_millis(50), &mut never).await.unwrap().unwrap();
        assert_eq!(batch.iter().map(|d| d.job).collect::<Vec<_>>(), vec![1, 2, 3]);
        let rest =
            next_batch(&mut feed, 3, Duration::from_millis(50), &mut never).await.unwrap().unwrap();
        assert_eq!(rest.iter().map(|d| d.job).collect::<Vec<_>>(), vec![4, 5]);
        let mut now = std::pin::pin!(async {});
        assert!(next_batch(&mut feed, 3, Duration::from_millis(50), &mut now).await.is_none());
        // Deliveries dropped unsettled go back to the queue.
        drop((batch, rest));
        drop(feed);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(queue.stats(&name).await.unwrap().messages, 5);
    }
}
