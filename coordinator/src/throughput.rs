//! Wall times per phase from the workers' activity records: the figures of the
//! `throughput.json` a run writes per generated generator (alpaca_eval-free numbers herd adds:
//! examples/s, output tokens/s, wall time per phase). The file itself, its types and its
//! writing are herd-core's ([`herd_core::throughput`]).

use futures::{StreamExt, TryStreamExt};
use herd_core::jobs::{Phase, WorkerActivity};
pub use herd_core::throughput::{PhaseTimes, RunThroughput};
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
