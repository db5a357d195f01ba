//! The generation worker: consumes one generator's [`GenerationJob`]s, runs the engine's
//! batched greedy generation on the loop's engine thread, stores each [`GenerationResult`]
//! and acknowledges the job only once its result is stored.
//!
//! The loop itself — batching, the engine thread, the model cache, the already-stored,
//! pinned-model and dead-letter rules, activity records — is [`herd_runtime`]'s, shared with
//! the judge worker; this crate is the generation [`JobHandler`]: what a batch of one
//! model's jobs does.
//!
//! [`GenerationJob`]: herd_core::jobs::GenerationJob
//! [`GenerationResult`]: herd_core::jobs::GenerationResult
//! [`JobHandler`]: herd_runtime::JobHandler

mod generation;
mod prompt;
pub mod remote;

pub use generation::{GenerationWorker, GenerationWorkerStats};
pub use prompt::prompt_tokens;
