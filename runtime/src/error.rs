use herd_queue::QueueError;
use herd_store::StoreError;

use crate::EngineThreadGone;

/// Why a worker loop stopped. Job-level failures (a model that cannot load, an engine
/// error on one batch) do not stop it: those jobs are dead-lettered or given back.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineThreadGone),
}
