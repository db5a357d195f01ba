//! The in-process queue of `herd run`: the same semantics as the RabbitMQ queues
//! (prefetch, redelivery on nack or drop with the redelivered flag and delivery count,
//! delivery limit, dead-letter queue with reasons), held in memory.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::{
    Acker, AckerInner, ConsumerInner, DeadLetterInfo, JobConsumer, JobQueue, QueueError, QueueName,
    QueueStats, RawDelivery, DEFAULT_DELIVERY_LIMIT, DELIVERY_LIMIT_REASON,
};

/// An in-process job queue; clones share the same queues.
#[derive(Clone)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue")
            .field("delivery_limit", &self.shared.delivery_limit)
            .finish_non_exhaustive()
    }
}

struct Shared {
    delivery_limit: u32,
    state: Mutex<State>,
    /// Woken whenever a message is added anywhere or the queue closes.
    changed: Notify,
}

#[derive(Default)]
struct State {
    queues: HashMap<QueueName, Queue>,
    closed: bool,
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Message>,
    consumers: u32,
}

#[derive(Debug, Clone)]
struct Message {
    payload: Vec<u8>,
    delivery_count: u32,
    redelivered: bool,
    dead_letter_info: Option<DeadLetterInfo>,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new(DEFAULT_DELIVERY_LIMIT)
    }
}

impl MemoryQueue {
    /// A job given back more than `delivery_limit` times goes to the dead-letter queue.
    pub fn new(delivery_limit: u32) -> Self {
        Self {
            shared: Arc::new(Shared {
                delivery_limit,
                state: Mutex::default(),
                changed: Notify::new(),
            }),
        }
    }

    /// Ends every consumer's stream (`next` returns `None`); publishing fails afterwards.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_waiters();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, queue: &QueueName, message: Message) {
        self.lock().queues.entry(queue.clone()).or_default().ready.push_back(message);
        self.changed.notify_waiters();
    }

    /// A delivery came back unacknowledged: requeue it, or dead-letter it past the limit.
    fn give_back(&self, queue: &QueueName, mut message: Message) {
        message.delivery_count += 1;
        message.redelivered = true;
        if message.delivery_count > self.delivery_limit && !queue.is_dead_letter_queue() {
            self.dead_letter(queue, message, DELIVERY_LIMIT_REASON);
        } else {
            self.push(queue, message);
        }
    }

    fn dead_letter(&self, queue: &QueueName, message: Message, reason: &str) {
        let dead = Message {
            payload: message.payload,
            delivery_count: 0,
            redelivered: false,
            dead_letter_info: Some(DeadLetterInfo {
                reason: reason.to_string(),
                queue: queue.to_string(),
            }),
        };
        self.push(&queue.dead_letter_queue(), dead);
    }
}

impl JobQueue for MemoryQueue {
    async fn declare(&self, queue: &QueueName) -> Result<(), QueueError> {
        let mut state = self.shared.lock();
        state.queues.entry(queue.clone()).or_default();
        state.queues.entry(queue.dead_letter_queue()).or_default();
        Ok(())
    }

    async fn publish<T: Serialize + Sync>(
        &self,
        queue: &QueueName,
        jobs: &[T],
    ) -> Result<(), QueueError> {
        let payloads = crate::serialize_jobs(queue, jobs)?;
        let mut state = self.shared.lock();
        if state.closed {
            return Err(QueueError::Closed);
        }
        let ready = &mut state.queues.entry(queue.clone()).or_default().ready;
        ready.extend(payloads.into_iter().map(|payload| Message {
            payload,
            delivery_count: 0,
            redelivered: false,
            dead_letter_info: None,
        }));
        drop(state);
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn consume<T: DeserializeOwned + Send + 'static>(
        &self,
        queue: &QueueName,
        prefetch: u16,
    ) -> Result<JobConsumer<T>, QueueError> {
        self.shared.lock().queues.entry(queue.clone()).or_default().consumers += 1;
        let consumer = MemoryConsumer {
            shared: self.shared.clone(),
            queue: queue.clone(),
            permits: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
        };
        Ok(JobConsumer {
            queue: queue.clone(),
            inner: ConsumerInner::Memory(consumer),
            held: Vec::new(),
            _job: PhantomData,
        })
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError> {
        let state = self.shared.lock();
        let q = state
            .queues
            .get(queue)
            .ok_or_else(|| QueueError::NotFound { queue: queue.to_string() })?;
        Ok(QueueStats {
            messages: u32::try_from(q.ready.len()).unwrap_or(u32::MAX),
            consumers: q.consumers,
        })
    }

    async fn delete(&self, queue: &QueueName) -> Result<(), QueueError> {
        self.shared.lock().queues.remove(queue);
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn purge(&self, queue: &QueueName) -> Result<u32, QueueError> {
        let mut state = self.shared.lock();
        let q = state
            .queues
            .get_mut(queue)
            .ok_or_else(|| QueueError::NotFound { queue: queue.to_string() })?;
        let purged = u32::try_from(q.ready.len()).unwrap_or(u32::MAX);
        q.ready.clear();
        Ok(purged)
    }
}

pub(crate) struct MemoryConsumer {
    shared: Arc<Shared>,
    queue: QueueName,
    /// One permit per unsettled delivery: the prefetch bound.
    permits: Arc<Semaphore>,
}

impl MemoryConsumer {
    pub(crate) async fn next(&mut self) -> Option<RawDelivery> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        loop {
            // Register for wake-ups before looking, so a push in between is not missed.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.shared.lock();
                // Closed, or the queue was deleted under the consumer (as RabbitMQ cancels it).
                let closed = state.closed;
                let queue = state.queues.get_mut(&self.queue).filter(|_| !closed)?;
                let message = queue.ready.pop_front();
                if let Some(message) = message {
                    return Some(RawDelivery {
                        payload: message.payload.clone(),
                        redelivered: message.redelivered,
                        delivery_count: message.delivery_count,
                        dead_letter_info: message.dead_letter_info.clone(),
                        acker: Acker {
                            inner: AckerInner::Memory(MemoryAcker {
                                shared: self.shared.clone(),
                                queue: self.queue.clone(),
                                message: Some(message),
                                _permit: permit,
                            }),
                        },
                    });
                }
            }
            changed.await;
        }
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        if let Some(q) = self.shared.lock().queues.get_mut(&self.queue) {
            q.consumers = q.consumers.saturating_sub(1);
        }
    }
}

pub(crate) struct MemoryAcker {
    shared: Arc<Shared>,
    queue: QueueName,
    /// `None` once settled.
    message: Option<Message>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for MemoryAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAcker").field("queue", &self.queue).finish_non_exhaustive()
    }
}

impl MemoryAcker {
    pub(crate) fn ack(mut self) -> Result<(), QueueError> {
        self.message = None;
        Ok(())
    }

    pub(crate) fn nack(mut self) -> Result<(), QueueError> {
        if let Some(message) = self.message.take() {
            self.shared.give_back(&self.queue, message);
        }
        Ok(())
    }

    pub(crate) fn dead_letter(mut self, reason: &str) -> Result<(), QueueError> {
        if let Some(message) = self.message.take() {
            self.shared.dead_letter(&self.queue, message, reason);
        }
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        // Unsettled: the worker died or forgot the job; it comes back like after a nack.
        if let Some(message) = self.message.take() {
            self.shared.give_back(&self.queue, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn q() -> QueueName {
        QueueName::generation("unit", "m")
    }

    async fn next_within<T: DeserializeOwned>(
        c: &mut JobConsumer<T>,
    ) -> Option<crate::Delivery<T>> {
        tokio::time::timeout(Duration::from_millis(200), c.next())
            .await
            .ok()
            .flatten()
            .map(|r| r.unwrap())
    }

    #[tokio::test]
    async fn acked_job_is_gone_and_nacked_job_returns_marked_redelivered() {
        let queue = MemoryQueue::new(3);
        queue.publish(&q(), &[1u32, 2]).await.unwrap();
        let mut c = queue.consume::<u32>(&q(), 10).await.unwrap();
        let first = next_within(&mut c).await.unwrap();
        assert_eq!((first.job, first.redelivered, first.delivery_count), (1, false, 0));
        first.ack().await.unwrap();
        let second = next_within(&mut c).await.unwrap();
        assert_eq!(second.job, 2);
        second.nack().await.unwrap();
        let again = next_within(&mut c).await.unwrap();
        assert_eq!((again.job, again.redelivered, again.delivery_count), (2, true, 1));
        again.ack().await.unwrap();
        assert!(next_within(&mut c).await.is_none());
        assert_eq!(queue.stats(&q()).await.unwrap(), QueueStats { messages: 0, consumers: 1 });
    }

    #[tokio::test]
    async fn prefetch_bounds_unsettled_deliveries() {
        let queue = MemoryQueue::default();
        queue.publish(&q(), &[1u32, 2, 3]).await.unwrap();
        let mut c = queue.consume::<u32>(&q(), 2).await.unwrap();
        let a = next_within(&mut c).await.unwrap();
        let _b = next_within(&mut c).await.unwrap();
        assert!(next_within(&mut c).await.is_none(), "a third delivery exceeded prefetch 2");
        a.ack().await.unwrap();
        assert_eq!(next_within(&mut c).await.unwrap().job, 3);
    }

    #[tokio::test]
    async fn dropped_delivery_comes_back() {
        let queue = MemoryQueue::default();
        queue.publish(&q(), &["x"]).await.unwrap();
        let mut c = queue.consume::<String>(&q(), 1).await.unwrap();
        drop(next_within(&mut c).await.unwrap());
        let again = next_within(&mut c).await.unwrap();
        assert!(again.redelivered);
    }

    #[tokio::test]
    async fn job_over_the_delivery_limit_lands_in_the_dead_letter_queue() {
        let queue = MemoryQueue::new(2);
        queue.publish(&q(), &[7u32]).await.unwrap();
        let mut c = queue.consume::<u32>(&q(), 1).await.unwrap();
        let mut deliveries = 0;
        while let Some(d) = next_within(&mut c).await {
            deliveries += 1;
            d.nack().await.unwrap();
        }
        assert_eq!(deliveries, 3, "limit 2 allows the first delivery and two redeliveries");
        let mut dlq = queue.consume::<u32>(&q().dead_letter_queue(), 1).await.unwrap();
        let dead = next_within(&mut dlq).await.unwrap();
        assert_eq!(dead.job, 7);
        let info = dead.dead_letter_info.unwrap();
        assert_eq!(
            (info.reason.as_str(), info.queue.as_str()),
            (DELIVERY_LIMIT_REASON, q().as_str())
        );
    }

    #[tokio::test]
    async fn a_malformed_dead_letter_is_reported_with_its_text_and_kept() {
        let queue = MemoryQueue::default();
        let dlq = q().dead_letter_queue();
        queue.publish(&dlq, &["not a number"]).await.unwrap();
        let mut c = queue.consume::<u32>(&dlq, 1).await.unwrap();
        let err = tokio::time::timeout(Duration::from_millis(200), c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        let QueueError::MalformedDeadLetter { payload, .. } = &err else { panic!("{err}") };
        assert_eq!(payload, "\"not a number\"");
        assert!(!err.is_fatal());
        assert_eq!(c.held.len(), 1, "held unsettled, never acknowledged");
    }

    #[tokio::test]
    async fn malformed_job_is_dead_lettered_with_its_reason() {
        let queue = MemoryQueue::default();
        queue.publish(&q(), &["not a number"]).await.unwrap();
        let mut c = queue.consume::<u32>(&q(), 1).await.unwrap();
        let err = tokio::time::timeout(Duration::from_millis(200), c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, QueueError::Malformed { .. }) && !err.is_fatal(), "{err}");
        let mut dlq = queue.consume::<String>(&q().dead_letter_queue(), 1).await.unwrap();
        let dead = next_within(&mut dlq).await.unwrap();
        assert_eq!(dead.job, "not a number");
        assert!(dead.dead_letter_info.unwrap().reason.starts_with("malformed message"));
    }

    #[tokio::test]
    async fn deleting_a_queue_ends_its_consumers() {
        let queue = MemoryQueue::default();
        let mut c = queue.consume::<u32>(&q(), 1).await.unwrap();
        let waiter = tokio::spawn(async move { c.next().await.is_none() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.delete(&q()).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap());
        assert!(matches!(queue.stats(&q()).await, Err(QueueError::NotFound { .. })));
    }

    #[tokio::test]
    async fn purge_drops_waiting_jobs_but_not_delivered_ones() {
        let queue = MemoryQueue::default();
        queue.publish(&q(), &[1u32, 2, 3]).await.unwrap();
        let mut c = queue.consume::<u32>(&q(), 1).await.unwrap();
        let held = next_within(&mut c).await.unwrap();
        assert_eq!(queue.purge(&q()).await.unwrap(), 2);
        assert_eq!(queue.stats(&q()).await.unwrap().messages, 0);
        drop(held);
        assert_eq!(
            next_within(&mut c).await.unwrap().job,
            1,
            "the delivered job comes back after a purge"
        );
        assert!(matches!(
            queue.purge(&QueueName::generation("r", "none")).await,
            Err(QueueError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn close_ends_waiting_consumers() {
        let queue = MemoryQueue::default();
        let mut c = queue.consume::<u32>(&q(), 1).await.unwrap();
        let waiter = tokio::spawn(async move { c.next().await.is_none() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.close();
        assert!(tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap());
    }
}
