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

mod error;
pub mod folder;
mod plan;
mod progress;
mod run;
pub mod throughput;

pub use error::CoordinatorError;
pub use folder::{GeneratorSummary, RunSummary};
pub use plan::{PlannedGenerator, RunPlan};
pub use progress::{GeneratorProgress, RunProgress};
pub use run::{Coordinator, DeadLetterPolicy, DroppedGenerator};
pub use throughput::{PhaseTimes, RunThroughput};
