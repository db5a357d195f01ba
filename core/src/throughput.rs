//! How fast one generator produced its answers: the `throughput.json` a run writes beside
//! each generator's `model_outputs.json` ([`RunThroughput`], written by [`write_throughput`]),
//! and the report reads ([`GeneratorThroughput`], read by [`read_throughput`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::jobs::{FinishReason, GenerationResult, Stored};

/// One generator's throughput over a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorThroughput {
    pub generator: String,
    /// Answers generated.
    pub examples: usize,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    /// From the first job's start to the last answer, across all workers.
    pub wall_seconds: f64,
    pub examples_per_second: f64,
    pub output_tokens_per_second: f64,
    /// Mean over answers of each answer's own time (admission to last token).
    pub mean_seconds_per_example: f64,
    /// Answers that ended because they reached `max_new_tokens`.
    pub stopped_at_max_tokens: usize,
    /// Distinct workers that produced answers.
    pub workers: usize,
    /// Progress over time, for the report's chart (absent in files of older herds).
    #[serde(default, skip_serializing_if = "Timeline::is_empty")]
    pub timeline: Timeline,
}

/// Results stored over time, per phase: points (seconds since the phase's first batch
/// started, results stored by then), at most [`Timeline::MAX_POINTS`] per phase, the last
/// one the phase's end. A pause between an interrupted run and its resumption shows as a
/// flat stretch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generation: Vec<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub judging: Vec<[f64; 2]>,
}

impl Timeline {
    pub const MAX_POINTS: usize = 60;

    pub fn is_empty(&self) -> bool {
        self.generation.is_empty() && self.judging.is_empty()
    }

    /// The points of one phase from its results' timings (results without one are left
    /// out); seconds rounded to milliseconds.
    pub fn points(timings: impl IntoIterator<Item = Stored>) -> Vec<[f64; 2]> {
        let timings: Vec<Stored> = timings.into_iter().collect();
        let Some(start) = timings.iter().map(|t| t.batch_started).min_by(f64::total_cmp) else {
            return Vec::new();
        };
        let mut stored: Vec<f64> = timings.iter().map(|t| t.stored_at - start).collect();
        stored.sort_by(f64::total_cmp);
        let n = stored.len();
        let points = n.min(Self::MAX_POINTS);
        let mut out = vec![[0.0, 0.0]];
        for k in 1..=points {
            let count = (k * n).div_ceil(points);
            out.push([(stored[count - 1] * 1000.0).round() / 1000.0, count as f64]);
        }
        out
    }
}

impl GeneratorThroughput {
    /// Summarises the results of one generator, given the wall time they took together.
    pub fn from_results(generator: &str, results: &[GenerationResult], wall_seconds: f64) -> Self {
        let examples = results.len();
        let prompt_tokens = results.iter().map(|r| r.prompt_tokens as u64).sum();
        let output_tokens: u64 = results.iter().map(|r| r.output_tokens as u64).sum();
        let total_seconds: f64 = results.iter().map(|r| r.seconds).sum();
        let mut workers: Vec<&str> = results.iter().map(|r| r.worker.as_str()).collect();
        workers.sort_unstable();
        workers.dedup();
        let per_second = |count: f64| if wall_seconds > 0.0 { count / wall_seconds } else { 0.0 };
        Self {
            generator: generator.to_string(),
            examples,
            prompt_tokens,
            output_tokens,
            wall_seconds,
            examples_per_second: per_second(examples as f64),
            output_tokens_per_second: per_second(output_tokens as f64),
            mean_seconds_per_example: if examples > 0 {
                total_seconds / examples as f64
            } else {
                0.0
            },
            stopped_at_max_tokens: results
                .iter()
                .filter(|r| r.finish_reason == FinishReason::Length)
                .count(),
            workers: workers.len(),
            timeline: Timeline::default(),
        }
    }
}

/// Wall time per phase of one generator, over the results of the run's plan (its
/// instructions, its judge) that are in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTimes {
    /// Seconds from the first generation batch to the last answer stored, per worker
    /// process; overlapping processes count once, the gaps between an interrupted run and
    /// its resumption not at all.
    pub generation_seconds: f64,
    /// The same for the run's judge's verdicts on this generator's answers.
    pub judging_seconds: f64,
    /// The run's judge's verdicts stored, and how many came from the judge cache.
    pub verdicts: usize,
    pub verdicts_from_cache: usize,
    /// Prompt tokens the judge model read for them.
    pub judge_prompt_tokens: u64,
}

/// One judge's verdicts on one generator's answers (the judging figures of [`PhaseTimes`],
/// for any judge whose verdicts on the planned answers are in the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeTimes {
    pub judging_seconds: f64,
    pub verdicts: usize,
    pub verdicts_from_cache: usize,
    pub judge_prompt_tokens: u64,
}

/// `throughput.json`: [`GeneratorThroughput`] (what `herd report` reads) plus a `phases`
/// object, plus `judges`: the judging figures per judge name, every judge that judged the
/// planned answers (the run's own judge too, whose figures are also in `phases`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunThroughput {
    #[serde(flatten)]
    pub generation: GeneratorThroughput,
    pub phases: PhaseTimes,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub judges: BTreeMap<String, JudgeTimes>,
}

impl RunThroughput {
    /// Summarises `results` over the generation phase's wall time.
    pub fn new(generator: &str, results: &[GenerationResult], phases: PhaseTimes) -> Self {
        Self {
            generation: GeneratorThroughput::from_results(
                generator,
                results,
                phases.generation_seconds,
            ),
            phases,
            judges: BTreeMap::new(),
        }
    }

    /// With each judge's figures (by judge name).
    pub fn with_judges(mut self, judges: BTreeMap<String, JudgeTimes>) -> Self {
        self.judges = judges;
        self
    }
}

impl PhaseTimes {
    /// This run's judge's part.
    pub fn judge_times(&self) -> JudgeTimes {
        JudgeTimes {
            judging_seconds: self.judging_seconds,
            verdicts: self.verdicts,
            verdicts_from_cache: self.verdicts_from_cache,
            judge_prompt_tokens: self.judge_prompt_tokens,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ThroughputFileError {
    #[error("{}: cannot {action}: {source}", path.display())]
    Io { path: std::path::PathBuf, action: &'static str, source: std::io::Error },
    #[error("{}: not a throughput summary: {source}", path.display())]
    Json { path: std::path::PathBuf, source: serde_json::Error },
}

/// Reads the [`GeneratorThroughput`] part of a `throughput.json` (other keys are ignored).
pub fn read_throughput(path: impl AsRef<Path>) -> Result<GeneratorThroughput, ThroughputFileError> {
    let path = path.as_ref();
    let text = std::fs::read(path).map_err(|source| ThroughputFileError::Io {
        path: path.to_path_buf(),
        action: "read",
        source,
    })?;
    serde_json::from_slice(&text)
        .map_err(|source| ThroughputFileError::Json { path: path.to_path_buf(), source })
}

/// Writes `throughput.json`: pretty JSON, one trailing newline.
pub fn write_throughput(
    path: impl AsRef<Path>,
    throughput: &RunThroughput,
) -> Result<(), ThroughputFileError> {
    let path = path.as_ref();
    let mut text =
        serde_json::to_string_pretty(throughput).expect("a throughput summary serialises");
    text.push('\n');
    std::fs::write(path, text).map_err(|source| ThroughputFileError::Io {
        path: path.to_path_buf(),
        action: "write",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_counts_results_stored_by_each_point() {
        let at = |started: f64, stored_at: f64| Stored {
            batch_started: started,
            stored_at,
            from_cache: false,
        };
        let points = Timeline::points([at(100.0, 103.0), at(100.0, 101.5), at(102.0, 110.25)]);
        assert_eq!(points, [[0.0, 0.0], [1.5, 1.0], [3.0, 2.0], [10.25, 3.0]]);
        let many = Timeline::points((0..1000).map(|i| at(0.0, i as f64)));
        assert_eq!(many.len(), Timeline::MAX_POINTS + 1);
        assert_eq!(many.last(), Some(&[999.0, 1000.0]));
        assert!(Timeline::points([]).is_empty());
    }

    fn result(
        index: usize,
        output_tokens: usize,
        seconds: f64,
        finish_reason: FinishReason,
        worker: &str,
    ) -> GenerationResult {
        GenerationResult {
            run_id: "r".into(),
            generator: "g".into(),
            index,
            instruction: format!("i{index}"),
            dataset: "d".into(),
            output: "o".into(),
            prompt_tokens: 10,
            output_tokens,
            seconds,
            finish_reason,
            worker: worker.into(),
            stored: None,
        }
    }

    #[test]
    fn summary_divides_totals_by_wall_time_and_counts_length_stops() {
        let results = [
            result(0, 100, 2.0, FinishReason::Eos, "w1"),
            result(1, 300, 4.0, FinishReason::Length, "w2"),
            result(2, 200, 3.0, FinishReason::Stop, "w1"),
        ];
        let t = GeneratorThroughput::from_results("g", &results, 4.0);
        assert_eq!((t.examples, t.prompt_tokens, t.output_tokens), (3, 30, 600));
        assert_eq!(t.examples_per_second, 0.75);
        assert_eq!(t.output_tokens_per_second, 150.0);
        assert_eq!(t.mean_seconds_per_example, 3.0);
        assert_eq!((t.stopped_at_max_tokens, t.workers), (1, 2));
    }

    fn phases(generation_seconds: f64) -> PhaseTimes {
        PhaseTimes {
            generation_seconds,
            judging_seconds: 1.5,
            verdicts: 1,
            verdicts_from_cache: 0,
            judge_prompt_tokens: 300,
        }
    }

    #[test]
    fn throughput_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("throughput.json");
        let t = RunThroughput::new("g", &[result(0, 7, 0.5, FinishReason::Eos, "w")], phases(0.5));
        assert_eq!(t.generation.wall_seconds, 0.5);
        write_throughput(&path, &t).unwrap();
        assert_eq!(read_throughput(&path).unwrap(), t.generation);
        let back: RunThroughput =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn the_file_is_flat_generator_figures_then_phases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("throughput.json");
        let t = RunThroughput::new("g", &[result(0, 7, 0.5, FinishReason::Eos, "w")], phases(2.0));
        write_throughput(&path, &t).unwrap();
        let expected = r#"{
  "generator": "g",
  "examples": 1,
  "prompt_tokens": 10,
  "output_tokens": 7,
  "wall_seconds": 2.0,
  "examples_per_second": 0.5,
  "output_tokens_per_second": 3.5,
  "mean_seconds_per_example": 0.5,
  "stopped_at_max_tokens": 0,
  "workers": 1,
  "phases": {
    "generation_seconds": 2.0,
    "judging_seconds": 1.5,
    "verdicts": 1,
    "verdicts_from_cache": 0,
    "judge_prompt_tokens": 300
  }
}
"#;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
    }
}
