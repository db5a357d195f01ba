//! The progress bars of an in-process run.

use std::sync::Arc;

use herd_coordinator::{RunPlan, RunProgress};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::watch;

/// The progress bars: one per generated generator, one for the judge.
#[derive(Clone)]
pub(super) struct Bars {
    _multi: Arc<MultiProgress>,
    generation: Vec<(String, ProgressBar)>,
    pub(super) judging: ProgressBar,
}

impl Bars {
    pub(super) fn new(plan: &RunPlan, already: &RunProgress) -> Self {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{prefix:>34} [{bar:30}] {pos}/{len} {per_sec:>10} eta {eta:>4} {wide_msg}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        let bar = |prefix: String, len: usize, pos: usize| {
            let bar = multi.add(ProgressBar::new(len as u64));
            bar.set_style(style.clone());
            bar.set_prefix(prefix);
            bar.set_position(pos as u64);
            bar
        };
        let generation = already
            .generators
            .iter()
            .filter(|g| g.generated)
            .map(|g| (g.name.clone(), bar(format!("generate {}", g.name), g.expected, g.outputs)))
            .collect();
        let (done, total) = already.annotations();
        let judging = bar(format!("judge ({})", plan.judge.name), total, done);
        Self { _multi: Arc::new(multi), generation, judging }
    }

    pub(super) fn generation(&self, name: &str) -> ProgressBar {
        self.generation
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(ProgressBar::hidden)
    }

    pub(super) async fn follow(self, mut progress: watch::Receiver<RunProgress>) {
        while progress.changed().await.is_ok() {
            let now = progress.borrow_and_update().clone();
            for g in &now.generators {
                self.generation(&g.name).set_position(g.outputs as u64);
            }
            self.judging.set_position(now.annotations().0 as u64);
        }
    }

    pub(super) fn finish(&self) {
        for (_, bar) in &self.generation {
            bar.finish();
        }
        self.judging.finish();
    }
}
