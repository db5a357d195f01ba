//! The spans a worker spends on each generator's jobs, kept in the store so the coordinator
//! can compute wall times per phase across restarts and machines (see
//! [`herd_core::jobs::WorkerActivity`]).

use std::collections::BTreeMap;

use herd_core::jobs::{ActivitySpan, Phase, WorkerActivity};
use herd_store::{keys, ResultStore, StoreError};

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// One worker loop's activity in one run and phase, written to the store after each batch
/// under `runs/<run>/activity/<phase>/<worker>.<queue>.json`.
#[derive(Debug)]
pub struct ActivityRecorder {
    store: ResultStore,
    key: String,
    doc: WorkerActivity,
    dirty: bool,
}

impl ActivityRecorder {
    /// The record of `worker`'s loop on `queue`, continuing what an earlier loop of the same
    /// process on the same queue stored.
    pub async fn open(
        store: ResultStore,
        run_id: &str,
        phase: Phase,
        worker: &str,
        queue: &str,
    ) -> Result<Self, StoreError> {
        let key = keys::activity(run_id, phase.as_str(), &format!("{worker}.{queue}"));
        let doc = match store.get_json::<WorkerActivity>(&key).await? {
            Some(doc) => doc,
            None => WorkerActivity {
                run_id: run_id.into(),
                phase,
                worker: worker.into(),
                generators: BTreeMap::new(),
            },
        };
        Ok(Self { store, key, doc, dirty: false })
    }

    /// One stored result of `generator`, from a batch that started at `batch_started`
    /// (Unix seconds).
    pub fn record(&mut self, generator: &str, batch_started: f64, tokens: u64, cached: bool) {
        let now = unix_now();
        let span = self.doc.generators.entry(generator.to_string()).or_insert(ActivitySpan {
            started_at: batch_started,
            finished_at: now,
            jobs: 0,
            cached: 0,
            tokens: 0,
        });
        span.started_at = span.started_at.min(batch_started);
        span.finished_at = span.finished_at.max(now);
        span.jobs += 1;
        span.cached += usize::from(cached);
        span.tokens += tokens;
        self.dirty = true;
    }

    pub fn activity(&self) -> &WorkerActivity {
        &self.doc
    }

    /// Writes the record when it changed since the last flush.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        self.store.put_json(&self.key, &self.doc).await?;
        self.dirty = false;
        Ok(())
    }
}
