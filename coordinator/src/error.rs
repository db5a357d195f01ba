use std::path::PathBuf;

use herd_core::formats::FormatError;
use herd_core::throughput::ThroughputFileError;
use herd_queue::QueueError;
use herd_report::ReportError;
use herd_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid run plan: {0}")]
    Plan(String),
    /// The run id already holds results made with other settings.
    #[error(
        "run {run} already has {what} with other settings (stored: {stored}; asked for: {requested}); \
         use another run id / output folder, or the same settings"
    )]
    PlanConflict { run: String, what: String, stored: String, requested: String },
    /// A job can never succeed, so the run cannot complete.
    #[error("a job was dead-lettered from {queue} ({job}): {reason}")]
    DeadLettered { queue: String, job: String, reason: String },
    /// Every generator was dropped from the run because jobs of each were dead-lettered
    /// (`DeadLetterPolicy::DropGenerator`).
    #[error("every generator was dropped from the run because of dead-lettered jobs; the first: {first}")]
    EveryGeneratorDropped { first: String },
    /// An imported generator (herd evaluate) lacks an answer the plan expects.
    #[error("the result stored under {key} does not match the run's plan: {reason}")]
    ResultMismatch { key: String, reason: String },
    #[error("generator {generator} has no answer for eval-set instruction {index} in run {run}")]
    MissingOutput { run: String, generator: String, index: usize },
    /// `--out` names the folder of another run.
    #[error(
        "{} holds {theirs}; this is {ours}. Use another --out, or --force to write this run's \
         files over it (the store keeps both runs' results)",
        folder.display()
    )]
    FolderOfAnotherRun { folder: PathBuf, theirs: String, ours: String },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Throughput(#[from] ThroughputFileError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("{}: cannot {action}: {source}", path.display())]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
}
