//! The generation worker: consumes one generator's [`GenerationJob`]s, runs the engine's
//! batched greedy generation on a dedicated thread, stores each [`GenerationResult`] and
//! acknowledges the job only once its result is stored.
//!
//! Everything a worker process needs is passed in — a [`JobQueue`], a [`ResultStore`], a
//! [`ModelCache`], a [`Metrics`] handle and a shutdown future — so `herd run` (in-process
//! queue, local folder) and `herd worker` (RabbitMQ, S3) run this same loop. The pieces the
//! judge worker shares with it live here too: [`ModelCache`] (each model loaded once per
//! process, load failures remembered), [`EngineThread`] (the one thread that runs candle),
//! [`ActivityRecorder`] (the spans the coordinator turns into wall times) and
//! [`worker_id`].
//!
//! [`GenerationJob`]: herd_core::jobs::GenerationJob
//! [`GenerationResult`]: herd_core::jobs::GenerationResult
//! [`JobQueue`]: herd_queue::JobQueue
//! [`ResultStore`]: herd_store::ResultStore
//! [`Metrics`]: herd_telemetry::Metrics

mod activity;
mod batching;
mod engine_thread;
mod error;
mod generation;
mod models;
mod prompt;

pub use activity::{unix_now, ActivityRecorder};
pub use batching::{next_batch, spawn_feeder, Feed};
pub use engine_thread::{EngineThread, EngineThreadGone};
pub use error::WorkerError;
pub use generation::{GenerationWorker, GenerationWorkerStats};
pub use models::{ModelCache, ModelUnavailable};
pub use prompt::prompt_tokens;

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
pub fn settle(outcome: Result<(), herd_queue::QueueError>) -> Result<(), WorkerError> {
    match outcome {
        Err(e) if !e.is_fatal() => {
            tracing::warn!(error = %e, "could not settle a delivery");
            Ok(())
        }
        other => Ok(other?),
    }
}
