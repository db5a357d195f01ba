//! Wall times per phase: the figures of the `throughput.json` a run writes per generated
//! generator (alpaca_eval-free numbers herd adds: examples/s, output tokens/s, wall time per
//! phase and per judge). The file itself, its types and its writing are herd-core's
//! ([`herd_core::throughput`]).
//!
//! The figures come from the planned results in the store, never from a process's memory
//! or from what a worker had flushed before it was killed: counts and tokens are those of
//! the stored answers and verdicts of the plan's instructions (and of one judge), and the
//! wall time is computed from each result's [`Stored`] timing — per worker process, from
//! the start of the batch of its first such result to the storing of its last, then the
//! union over processes ([`busy_seconds`]). So a kill loses nothing that was stored, a
//! smaller `--limit` counts only its instructions' results, and two judges of one run
//! have figures each. Results of a herd from before results carried their timing fall back
//! to the workers' activity records ([`read_activity`], [`merge_activity`]).

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use herd_core::jobs::{GenerationResult, JudgeResult, Phase, Stored, WorkerActivity};
pub use herd_core::throughput::{JudgeTimes, PhaseTimes, RunThroughput};
use herd_store::{keys, ResultStore, StoreError};
use serde::{Deserialize, Serialize};

/// The seconds covered by the union of `[start, end]` spans: parallel workers count once,
/// the gap between an interrupted run and its resumption not at all.
pub fn union_seconds(mut spans: Vec<(f64, f64)>) -> f64 {
    spans.retain(|(start, end)| end >= start);
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (start, end) in spans {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    total + current.map_or(0.0, |(s, e)| e - s)
}

/// The seconds the worker processes spent on the results with `timings` (worker, timing):
/// each process from the batch start of its first result to the storing of its last, then
/// [`union_seconds`] over processes. `None` when no result carries a timing.
pub fn busy_seconds<'a>(timings: impl IntoIterator<Item = (&'a str, Stored)>) -> Option<f64> {
    let mut per_worker: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (worker, t) in timings {
        let span = per_worker.entry(worker).or_insert((t.batch_started, t.stored_at));
        span.0 = span.0.min(t.batch_started);
        span.1 = span.1.max(t.stored_at);
    }
    (!per_worker.is_empty()).then(|| union_seconds(per_worker.into_values().collect()))
}

/// The generation phase of `outputs` (one generator's planned answers in the store); the
/// wall time is `None` when none carries its timing.
pub fn generation_activity(outputs: &[GenerationResult]) -> (PhaseActivity, Option<f64>) {
    let wall = busy_seconds(outputs.iter().filter_map(|o| Some((o.worker.as_str(), o.stored?))));
    let activity = PhaseActivity {
        wall_seconds: wall.unwrap_or_default(),
        jobs: outputs.len(),
        cached: 0,
        tokens: outputs.iter().map(|o| o.output_tokens as u64).sum(),
    };
    (activity, wall)
}

/// The judging phase of `verdicts` (one judge's verdicts on planned answers in the store):
/// prompt tokens of the verdicts judged, not of those from the cache; the wall time is
/// `None` when none carries its timing.
pub fn judging_activity(verdicts: &[JudgeResult]) -> (PhaseActivity, Option<f64>) {
    let wall = busy_seconds(verdicts.iter().filter_map(|v| Some((v.worker.as_str(), v.stored?))));
    let from_cache = |v: &JudgeResult| v.stored.is_some_and(|s| s.from_cache);
    let activity = PhaseActivity {
        wall_seconds: wall.unwrap_or_default(),
        jobs: verdicts.len(),
        cached: verdicts.iter().filter(|v| from_cache(v)).count(),
        tokens: verdicts.iter().filter(|v| !from_cache(v)).map(|v| v.prompt_tokens as u64).sum(),
    };
    (activity, wall)
}

/// A judge's figures on one generator's answers.
pub fn judge_times(judging: PhaseActivity) -> JudgeTimes {
    phase_times(PhaseActivity::default(), judging).judge_times()
}

/// Wall time and work of one generator in one phase, merged over every worker's record.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PhaseActivity {
    pub wall_seconds: f64,
    pub jobs: usize,
    pub cached: usize,
    pub tokens: u64,
}

/// Every worker's records of `phase` in `run`.
pub async fn read_activity(
    store: &ResultStore,
    run: &str,
    phase: Phase,
) -> Result<Vec<WorkerActivity>, StoreError> {
    let keys = store.list(&keys::activity_prefix(run, phase.as_str())).await?;
    let records: Vec<Option<WorkerActivity>> = futures::stream::iter(keys)
        .map(|key| async move { store.get_json::<WorkerActivity>(&key).await })
        .buffered(crate::READ_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(records.into_iter().flatten().collect())
}

/// `generator`'s share of `records` (`None` for every generator together).
pub fn merge_activity(records: &[WorkerActivity], generator: Option<&str>) -> PhaseActivity {
    let spans: Vec<_> = records
        .iter()
        .flat_map(|r| r.generators.iter())
        .filter(|(name, _)| generator.is_none_or(|g| g == name.as_str()))
        .map(|(_, span)| span)
        .collect();
    PhaseActivity {
        wall_seconds: union_seconds(spans.iter().map(|s| (s.started_at, s.finished_at)).collect()),
        jobs: spans.iter().map(|s| s.jobs).sum(),
        cached: spans.iter().map(|s| s.cached).sum(),
        tokens: spans.iter().map(|s| s.tokens).sum(),
    }
}

/// The `phases` of `throughput.json`, from one generator's merged activity per phase.
pub fn phase_times(generation: PhaseActivity, judging: PhaseActivity) -> PhaseTimes {
    PhaseTimes {
        generation_seconds: generation.wall_seconds,
        judging_seconds: judging.wall_seconds,
        verdicts: judging.jobs,
        verdicts_from_cache: judging.cached,
        judge_prompt_tokens: judging.tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_core::jobs::ActivitySpan;
    use std::collections::BTreeMap;

    #[test]
    fn overlapping_spans_count_once_and_gaps_not_at_all() {
        assert_eq!(union_seconds(vec![]), 0.0);
        assert_eq!(union_seconds(vec![(10.0, 20.0), (15.0, 25.0), (30.0, 31.0)]), 16.0);
        assert_eq!(union_seconds(vec![(30.0, 31.0), (10.0, 20.0), (12.0, 13.0)]), 11.0);
    }

    fn span(started_at: f64, finished_at: f64, jobs: usize, cached: usize) -> ActivitySpan {
        ActivitySpan { started_at, finished_at, jobs, cached, tokens: 10 * jobs as u64 }
    }

    #[test]
    fn activity_merges_over_workers_per_generator() {
        let record = |worker: &str, spans: Vec<(&str, ActivitySpan)>| WorkerActivity {
            run_id: "r".into(),
            phase: Phase::Judging,
            worker: worker.into(),
            generators: spans
                .into_iter()
                .map(|(g, s)| (g.to_string(), s))
                .collect::<BTreeMap<_, _>>(),
        };
        let records = vec![
            record("w1", vec![("a", span(0.0, 10.0, 5, 1)), ("b", span(10.0, 12.0, 2, 0))]),
            record("w2", vec![("a", span(5.0, 15.0, 4, 4))]),
        ];
        let a = merge_activity(&records, Some("a"));
        assert_eq!((a.wall_seconds, a.jobs, a.cached, a.tokens), (15.0, 9, 5, 90));
        let all = merge_activity(&records, None);
        assert_eq!((all.wall_seconds, all.jobs), (15.0, 11));
    }

    fn timed(worker: &str, batch_started: f64, stored_at: f64) -> (&str, Stored) {
        (worker, Stored { batch_started, stored_at, from_cache: false })
    }

    #[test]
    fn busy_seconds_span_each_process_and_count_overlaps_once() {
        assert_eq!(busy_seconds([]), None);
        // Process a: 10..14 (a gap between its batches counts, as in one session);
        // b overlaps it from 13 to 16; c is a later resumption, 30..31.
        let timings = [
            timed("a", 10.0, 11.0),
            timed("a", 12.0, 14.0),
            timed("b", 13.0, 16.0),
            timed("c", 30.0, 31.0),
        ];
        assert_eq!(busy_seconds(timings), Some(7.0));
    }

    fn verdict(judge: &str, index: usize, stored: Option<Stored>) -> JudgeResult {
        JudgeResult {
            run_id: "r".into(),
            judge: judge.into(),
            generator: "g".into(),
            index,
            preference: Some(1.5),
            raw_completion: String::new(),
            is_switched: false,
            truncated: false,
            prompt_tokens: 100,
            seconds: 0.1,
            worker: "w".into(),
            stored,
            price: None,
        }
    }

    #[test]
    fn judging_figures_come_from_the_verdicts_themselves() {
        let at = |from_cache| Some(Stored { batch_started: 1.0, stored_at: 3.0, from_cache });
        let verdicts = [verdict("j", 0, at(false)), verdict("j", 1, at(true))];
        let (judging, wall) = judging_activity(&verdicts);
        assert_eq!(wall, Some(2.0));
        assert_eq!((judging.jobs, judging.cached, judging.tokens), (2, 1, 100));
        let times = judge_times(judging);
        assert_eq!((times.judging_seconds, times.verdicts, times.verdicts_from_cache), (2.0, 2, 1));
        // Verdicts of an older herd carry no timing: the caller falls back to the records.
        assert_eq!(judging_activity(&[verdict("j", 0, None)]).1, None);
    }

    #[test]
    fn the_file_is_read_back_by_the_report_as_generator_throughput() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("throughput.json");
        let t = RunThroughput::new(
            "g",
            &[],
            phase_times(
                PhaseActivity { wall_seconds: 2.0, ..Default::default() },
                PhaseActivity { wall_seconds: 3.0, jobs: 4, cached: 1, tokens: 50 },
            ),
        );
        herd_core::throughput::write_throughput(&path, &t).unwrap();
        let back = herd_core::throughput::read_throughput(&path).unwrap();
        assert_eq!(back, t.generation);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["phases"]["generation_seconds"], 2.0);
        assert_eq!(json["wall_seconds"], 2.0);
        assert_eq!(json["phases"]["judging_seconds"], 3.0);
        assert_eq!(
            (&json["phases"]["verdicts"], &json["phases"]["verdicts_from_cache"]),
            (&serde_json::json!(4), &serde_json::json!(1))
        );
        assert_eq!(json["phases"]["judge_prompt_tokens"], 50);
    }
}
