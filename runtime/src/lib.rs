//! The worker runtime: what a generation worker and a judge worker share. Both roles run
//! the same job loop ([`run_jobs`]) and differ only in what a batch of one model's jobs
//! does, which a [`JobHandler`] says.
//!
//! The loop declares the role's queue, sets its metric series to 0, pulls deliveries in the
//! background ([`spawn_feeder`]) and gathers them into batches ([`next_batch`]). Per
//! delivery it counts redeliveries, acknowledges a job whose result is already stored,
//! dead-letters a job naming another model than the one a pinned worker serves, and lets
//! the handler look at it ([`JobHandler::admit`]); what the handler keeps is grouped by
//! model, the model comes from the [`ModelCache`] (a load failure dead-letters the group)
//! and the handler runs the group ([`JobHandler::handle`]) on the loop's [`EngineThread`].
//! After each batch the loop's [`ActivityRecorder`] is flushed. The handler settles jobs
//! through the loop's [`Pass`]: store then [`Pass::complete`], [`Pass::dead_letter`],
//! [`Pass::give_back`] after an engine failure.
//!
//! Everything a loop needs is passed in — a [`JobQueue`], a [`ResultStore`], a
//! [`ModelCache`], a [`Metrics`] handle and a shutdown future — so `herd run` (in-process
//! queue, local folder) and the distributed roles (RabbitMQ, S3) run the same loop.
//!
//! [`JobQueue`]: herd_queue::JobQueue
//! [`ResultStore`]: herd_store::ResultStore
//! [`Metrics`]: herd_telemetry::Metrics

mod activity;
mod batching;
mod engine_thread;
mod error;
mod job_loop;
pub mod model_files;
mod models;
mod remote;

pub use activity::{unix_now, ActivityRecorder};
pub use batching::{next_batch, spawn_feeder, Feed};
pub use engine_thread::{EngineThread, EngineThreadGone};
pub use error::RuntimeError;
pub use job_loop::{run_jobs, JobCounts, JobHandler, LoopSettings, Pass, Role};
pub use model_files::DEFAULT_MODEL;
pub use models::{ModelCache, ModelUnavailable};
pub use remote::{Clients, RemoteSettings};

/// A benchmark-only model name: a worker answers its jobs at once with an empty answer
/// (a judge worker with a tie), without loading anything, so that a run measures what the
/// queue, the store and the loops cost per job (`bench/scale`). Never a default.
pub const NOOP_BENCHMARK_MODEL: &str = "bench-noop";

/// This process's name in results and activity records: host, process id and start time,
/// so a restarted worker is told apart from its previous life.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{host}-{}-{started}", std::process::id())
}

/// A settlement that could not reach the broker because the delivery's channel closed is
/// harmless (the job comes back, its result is already stored); anything else is not.
pub fn settle(outcome: Result<(), herd_queue::QueueError>) -> Result<(), RuntimeError> {
    match outcome {
        Err(e) if !e.is_fatal() => {
            tracing::warn!(error = %e, "could not settle a delivery");
            Ok(())
        }
        other => Ok(other?),
    }
}
