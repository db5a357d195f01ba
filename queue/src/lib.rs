//! Job transport: an in-process queue and RabbitMQ behind one small trait.
//!
//! The coordinator publishes jobs ([`herd_core::jobs::GenerationJob`],
//! [`herd_core::jobs::JudgeJob`]); workers consume them with a bounded prefetch and settle each
//! delivery explicitly:
//! - [`Delivery::ack`] only after the job's result is durably stored (the store's keys are
//!   idempotent, so a job that is delivered twice is harmless);
//! - [`Delivery::nack`] to give the job back (a transient failure); it counts towards the
//!   queue's delivery limit, past which the job goes to the run's dead-letter queue;
//! - [`Delivery::dead_letter`] for a job that can never succeed (the model cannot load, the
//!   job is malformed): it goes to the dead-letter queue at once, with the reason.
//!
//! A delivery that is dropped unsettled is given back like a nack, in both implementations,
//! so a worker that crashes mid-job (or a bug that forgets a delivery) loses nothing.
//!
//! Both implementations carry jobs as JSON, so `herd run` (in-process) and the distributed
//! roles (RabbitMQ) see exactly the same bytes and the same semantics.

mod backoff;
mod error;
mod memory;
mod names;
mod rabbit;

use std::future::Future;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::QueueError;
pub use memory::MemoryQueue;
pub use names::QueueName;
pub use rabbit::{RabbitConfig, RabbitQueue};

/// Header that carries why a worker dead-lettered a job.
pub const REASON_HEADER: &str = "x-herd-reason";
/// Header that carries the queue a dead-lettered job came from.
pub const SOURCE_QUEUE_HEADER: &str = "x-herd-queue";
/// The reason recorded for a job that exceeded the delivery limit (RabbitMQ's own word).
pub const DELIVERY_LIMIT_REASON: &str = "delivery_limit";
/// Delivery limit used when none is configured: a job may be given back this many times.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 5;

/// Publishing and consuming jobs with explicit acknowledgement.
///
/// Implementations are cheap to clone handles. Every method declares what it touches
/// (idempotently), so the coordinator and the workers may start in any order.
pub trait JobQueue: Clone + Send + Sync + 'static {
    /// Creates `queue` and its run's dead-letter queue when missing.
    fn declare(&self, queue: &QueueName) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Publishes `jobs` in order and returns once the broker has durably accepted every one
    /// (publisher confirms). Across a reconnection, jobs not yet confirmed are published
    /// again, so a job may exist twice; consumers must be idempotent.
    fn publish<T: Serialize + Sync>(
        &self,
        queue: &QueueName,
        jobs: &[T],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Starts consuming `queue` with at most `prefetch` unsettled deliveries at a time
    /// (what the worker can batch). Consuming a run's dead-letter queue yields the
    /// dead-lettered jobs with [`Delivery::dead_letter_info`] set.
    fn consume<T: DeserializeOwned + Send + 'static>(
        &self,
        queue: &QueueName,
        prefetch: u16,
    ) -> impl Future<Output = Result<JobConsumer<T>, QueueError>> + Send;

    /// Jobs waiting (ready, not counting unacknowledged deliveries) and consumers attached.
    fn stats(
        &self,
        queue: &QueueName,
    ) -> impl Future<Output = Result<QueueStats, QueueError>> + Send;

    /// Deletes `queue` with whatever it holds (cleanup after a run).
    fn delete(&self, queue: &QueueName) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Drops the jobs waiting in `queue` (not those delivered and unsettled) and returns how
    /// many. A restarting coordinator purges before it publishes what the store lacks, so
    /// the jobs its previous life published are not queued twice.
    fn purge(&self, queue: &QueueName) -> impl Future<Output = Result<u32, QueueError>> + Send;
}

/// What a queue holds, as a passive declare reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Ready jobs; jobs delivered and not yet acknowledged are not counted.
    pub messages: u32,
    pub consumers: u32,
}

/// Why a job is in a dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterInfo {
    /// The worker's reason ([`REASON_HEADER`]), or the broker's (`delivery_limit`, `rejected`).
    pub reason: String,
    /// The queue the job was taken from.
    pub queue: String,
}

/// One delivered job and the means to settle it.
#[derive(Debug)]
pub struct Delivery<T> {
    pub job: T,
    /// The broker delivered this job before without it being acknowledged (AMQP's
    /// `redelivered` flag): the result may already be stored.
    pub redelivered: bool,
    /// How many times the job was given back before this delivery (`x-delivery-count`);
    /// 0 on a first delivery.
    pub delivery_count: u32,
    /// Set on deliveries from a dead-letter queue.
    pub dead_letter_info: Option<DeadLetterInfo>,
    pub acker: Acker,
}

impl<T> Delivery<T> {
    /// Acknowledges: the job is done and its result durably stored.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.acker.ack().await
    }

    /// Gives the job back for another attempt (counts towards the delivery limit).
    pub async fn nack(self) -> Result<(), QueueError> {
        self.acker.nack().await
    }

    /// Moves the job to its run's dead-letter queue with `reason`, then acknowledges it.
    pub async fn dead_letter(self, reason: &str) -> Result<(), QueueError> {
        self.acker.dead_letter(reason).await
    }
}

/// Settles one delivery. Dropping it unsettled gives the job back (like [`Acker::nack`]).
#[derive(Debug)]
pub struct Acker {
    inner: AckerInner,
}

#[derive(Debug)]
enum AckerInner {
    Memory(memory::MemoryAcker),
    Rabbit(rabbit::RabbitAcker),
}

impl Acker {
    pub async fn ack(self) -> Result<(), QueueError> {
        match self.inner {
            AckerInner::Memory(a) => a.ack(),
            AckerInner::Rabbit(a) => a.ack().await,
        }
    }

    pub async fn nack(self) -> Result<(), QueueError> {
        match self.inner {
            AckerInner::Memory(a) => a.nack(),
            AckerInner::Rabbit(a) => a.nack().await,
        }
    }

    /// Publishes the job to the dead-letter queue with [`REASON_HEADER`] = `reason` and,
    /// once the broker confirmed that, acknowledges it. If the publish fails the job stays
    /// unacknowledged and comes back, so it is never lost.
    pub async fn dead_letter(self, reason: &str) -> Result<(), QueueError> {
        match self.inner {
            AckerInner::Memory(a) => a.dead_letter(reason),
            AckerInner::Rabbit(a) => a.dead_letter(reason).await,
        }
    }
}

/// A delivery before its payload is decoded.
struct RawDelivery {
    payload: Vec<u8>,
    redelivered: bool,
    delivery_count: u32,
    dead_letter_info: Option<DeadLetterInfo>,
    acker: Acker,
}

/// A stream of jobs from one queue.
pub struct JobConsumer<T> {
    queue: QueueName,
    inner: ConsumerInner,
    /// Malformed dead letters, held unsettled: they go back to the dead-letter queue for
    /// inspection when the consumer stops.
    held: Vec<Acker>,
    _job: PhantomData<fn() -> T>,
}

enum ConsumerInner {
    Memory(memory::MemoryConsumer),
    // Boxed: a RabbitMQ consumer is several hundred bytes, a memory one a few dozen.
    Rabbit(Box<rabbit::RabbitConsumer>),
}

impl<T: DeserializeOwned> JobConsumer<T> {
    /// The next delivery. `None` when the queue was closed or deleted.
    ///
    /// `Some(Err(e))` with `!e.is_fatal()` is a report (a malformed message, already moved
    /// to the dead-letter queue): keep calling `next`. A fatal error (the broker stayed
    /// away past the reconnect deadline, the credentials were refused) ends the stream.
    pub async fn next(&mut self) -> Option<Result<Delivery<T>, QueueError>> {
        let raw = match &mut self.inner {
            ConsumerInner::Memory(c) => c.next().await?,
            ConsumerInner::Rabbit(c) => match c.next().await? {
                Ok(raw) => raw,
                Err(e) => return Some(Err(e)),
            },
        };
        match serde_json::from_slice::<T>(&raw.payload) {
            Ok(job) => Some(Ok(Delivery {
                job,
                redelivered: raw.redelivered,
                delivery_count: raw.delivery_count,
                dead_letter_info: raw.dead_letter_info,
                acker: raw.acker,
            })),
            Err(e) => {
                let reason = format!("malformed message: {e}");
                if self.queue.is_dead_letter_queue() {
                    // Dead-lettering into the same queue would loop, and dropping it would
                    // lose what someone must inspect: hold it unsettled and report it.
                    tracing::warn!(queue = %self.queue, %reason, "a malformed dead letter; kept in the queue");
                    self.held.push(raw.acker);
                    return Some(Err(QueueError::MalformedDeadLetter {
                        queue: self.queue.to_string(),
                        reason,
                        payload: String::from_utf8_lossy(&raw.payload).into_owned(),
                        dead_letter_info: raw.dead_letter_info,
                    }));
                }
                let settled = raw.acker.dead_letter(&reason).await;
                Some(Err(settled
                    .err()
                    .unwrap_or(QueueError::Malformed { queue: self.queue.to_string(), reason })))
            }
        }
    }

    /// The queue this consumer reads.
    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    /// Stops consuming; unsettled deliveries go back to the queue.
    pub async fn close(self) {
        match self.inner {
            ConsumerInner::Memory(_) => {}
            ConsumerInner::Rabbit(c) => c.close().await,
        }
    }
}

/// Either implementation, chosen at run time (`herd run` vs the distributed roles).
#[derive(Clone, Debug)]
pub enum AnyQueue {
    Memory(MemoryQueue),
    Rabbit(RabbitQueue),
}

impl JobQueue for AnyQueue {
    async fn declare(&self, queue: &QueueName) -> Result<(), QueueError> {
        match self {
            AnyQueue::Memory(q) => q.declare(queue).await,
            AnyQueue::Rabbit(q) => q.declare(queue).await,
        }
    }

    async fn publish<T: Serialize + Sync>(
        &self,
        queue: &QueueName,
        jobs: &[T],
    ) -> Result<(), QueueError> {
        match self {
            AnyQueue::Memory(q) => q.publish(queue, jobs).await,
            AnyQueue::Rabbit(q) => q.publish(queue, jobs).await,
        }
    }

    async fn consume<T: DeserializeOwned + Send + 'static>(
        &self,
        queue: &QueueName,
        prefetch: u16,
    ) -> Result<JobConsumer<T>, QueueError> {
        match self {
            AnyQueue::Memory(q) => q.consume(queue, prefetch).await,
            AnyQueue::Rabbit(q) => q.consume(queue, prefetch).await,
        }
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError> {
        match self {
            AnyQueue::Memory(q) => q.stats(queue).await,
            AnyQueue::Rabbit(q) => q.stats(queue).await,
        }
    }

    async fn delete(&self, queue: &QueueName) -> Result<(), QueueError> {
        match self {
            AnyQueue::Memory(q) => q.delete(queue).await,
            AnyQueue::Rabbit(q) => q.delete(queue).await,
        }
    }

    async fn purge(&self, queue: &QueueName) -> Result<u32, QueueError> {
        match self {
            AnyQueue::Memory(q) => q.purge(queue).await,
            AnyQueue::Rabbit(q) => q.purge(queue).await,
        }
    }
}

fn serialize_jobs<T: Serialize>(queue: &QueueName, jobs: &[T]) -> Result<Vec<Vec<u8>>, QueueError> {
    jobs.iter()
        .map(|job| {
            serde_json::to_vec(job)
                .map_err(|source| QueueError::Serialize { queue: queue.to_string(), source })
        })
        .collect()
}
