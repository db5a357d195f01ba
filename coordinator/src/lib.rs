//! The coordinator: plans a run, publishes a job for every result missing from the store,
//! publishes a judge job as each answer lands, and, once every verdict is stored, writes the
//! run folder.
//!
//! The store is the source of truth: the coordinator keeps no state that a restart would
//! lose. [`Coordinator::start`] lists what the store already holds and publishes only what
//! is missing; [`Coordinator::watch`] polls the store's listings (robust to restarts of any
//! process) and fails the run when a job lands in the dead-letter queue;
//! [`Coordinator::finish`] reads everything back and writes, per generator,
//! `model_outputs.json`, `annotations.json`, `throughput.json` and `errors.md`, and for the
//! run `leaderboard.csv` and `report.html` ([`folder`] has the layout).
//!
//! It imports no worker and no engine: `herd coordinator` runs without a model.

mod claim;
mod error;
pub mod folder;
mod plan;
mod progress;
mod run;
pub mod throughput;

pub use claim::{ClaimOutcome, FolderClaim, CLAIM_FILE};
pub use error::CoordinatorError;
pub use folder::DEAD_LETTERS_FILE;
pub use folder::{GeneratorSummary, RunSummary};
pub use plan::{PlannedGenerator, RunPlan};
pub use progress::{GeneratorProgress, RunProgress};
pub use run::{Coordinator, DeadLetter, DeadLetterPolicy, DroppedGenerator, RejectedResult};
pub use throughput::{PhaseTimes, RunThroughput};

/// Documents the coordinator reads from the store at once where it needs many (new answers
/// for their judge jobs, the run folder, activity records): each GET is a round trip, about
/// 20 ms on S3, so one at a time caps a run at a few dozen documents per second.
const READ_CONCURRENCY: usize = 32;
