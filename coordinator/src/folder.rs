//! The run folder, written from the store once every verdict is in:
//!
//! ```text
//! <out>/
//!   leaderboard.csv            alpaca_eval's leaderboard, one row per generator
//!   report.html                the self-contained report
//!   <generator>/
//!     model_outputs.json       alpaca_eval format, eval-set order (+ token counts, finish reason)
//!     annotations.json         alpaca_eval format: output_1 = reference, output_2 = the model
//!     throughput.json          examples/s, output tokens/s, wall time per phase (generated only)
//!     errors.md                10 dispreferred examples, seed 0
//!   dead_letters.json          only when the run saw any: every dead letter (queue, reason,
//!                              job) and every stored result rejected for not matching the plan
//! ```
//!
//! Everything but `throughput.json` depends only on the answers and verdicts: no timestamps,
//! no worker names, no per-example timings (alpaca_eval's `time_per_example` is left out),
//! so the same models and settings give byte-identical files. Timings are in
//! `throughput.json`, computed from the timings of the planned results in the store (see
//! [`crate::throughput`]), so writing the folder again without new work gives the same
//! bytes there too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use herd_core::eval_set::EvalSet;
use herd_core::formats::{
    write_annotations, write_model_outputs, Annotation, LeaderboardRow, ModelOutput,
};
use herd_core::jobs::{
    check_generation_result, check_judge_result, GenerationResult, JudgeJob, JudgeResult, Phase,
    SamplingSpec,
};
use herd_core::judge::annotation_from;
use herd_core::metrics::PairedComparison;
use herd_core::throughput::{write_throughput, RunThroughput, Timeline};
use herd_report::{build_report, folder_name, ReportOptions};
use herd_store::{keys, ResultStore, StoreError};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::run::{DeadLetter, RejectedResult};
use crate::throughput::{
    generation_activity, judge_times, judging_activity, merge_activity, phase_times, read_activity,
    PhaseActivity,
};
use crate::{CoordinatorError, RunPlan};

/// The run folder's list of dead letters and rejected results.
pub const DEAD_LETTERS_FILE: &str = "dead_letters.json";

/// One generator's results, as the run's summary shows them.
#[derive(Debug, Clone)]
pub struct GeneratorSummary {
    pub name: String,
    pub folder: PathBuf,
    pub examples: usize,
    /// Verdicts without a preference (unparsable rankings), not counted by the win rate.
    pub unparsed: usize,
    /// Its leaderboard row: win rate ± SE, LC win rate ± SE.
    pub leaderboard: Option<LeaderboardRow>,
    /// For generators this run generated.
    pub throughput: Option<RunThroughput>,
    /// What a reader must know before quoting its figures (`herd_report::caveats`).
    pub caveats: Vec<String>,
}

/// What a finished run wrote.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub out: PathBuf,
    pub report: PathBuf,
    pub leaderboard: PathBuf,
    /// In plan order.
    pub generators: Vec<GeneratorSummary>,
    /// The judge phase over all generators.
    pub judging: PhaseActivity,
    /// Every file written, relative to `out` (`/` between parts), in writing order.
    pub files: Vec<String>,
    /// Every message the run's dead-letter queue held (see [`DEAD_LETTERS_FILE`]).
    pub dead_letters: Vec<DeadLetter>,
    /// Stored results moved aside for not matching the plan.
    pub rejected: Vec<RejectedResult>,
    /// The report's paired comparisons (each generator against the baseline, or every two).
    pub paired: Vec<PairedComparison>,
}

/// Writes the run folder (see the module docs) from the store.
pub async fn write_run_folder(
    store: &ResultStore,
    plan: &RunPlan,
    eval_set: &EvalSet,
    out: &Path,
) -> Result<RunSummary, CoordinatorError> {
    let run = plan.run_id.as_str();
    let generation_records = read_activity(store, run, Phase::Generation).await?;
    let judging_records = read_activity(store, run, Phase::Judging).await?;
    // Every judge's verdicts, for the per-judge figures of a run judged more than once.
    let every_verdict_key = store.list(&keys::annotations_root(run)).await?;
    let mut all_verdicts = Vec::new();
    let mut generators = Vec::new();
    let mut files = Vec::new();
    for generator in &plan.generators {
        let folder_part = folder_name(&generator.name);
        let folder = out.join(&folder_part);
        std::fs::create_dir_all(&folder).map_err(|source| CoordinatorError::Io {
            path: folder.clone(),
            action: "create",
            source,
        })?;
        let output_keys = generator.indices.iter().map(|&i| keys::output(run, &generator.name, i));
        let outputs: Vec<GenerationResult> = read_all(store, output_keys).await?;
        let verdict_keys = generator
            .indices
            .iter()
            .map(|&i| keys::annotation(run, &plan.judge.name, &generator.name, i));
        let verdicts: Vec<JudgeResult> = read_all(store, verdict_keys).await?;
        // The coordinator checked and moved aside what did not match while it followed the
        // run; a result put since then must not reach the folder either.
        for (&index, (output, verdict)) in
            generator.indices.iter().zip(outputs.iter().zip(&verdicts))
        {
            let mismatch = check_generation_result(output, eval_set, run, &generator.name, index)
                .map_err(|m| (keys::output(run, &generator.name, index), m))
                .and_then(|()| {
                    check_judge_result(verdict, run, &plan.judge.name, &generator.name, index)
                        .map_err(|m| {
                            (keys::annotation(run, &plan.judge.name, &generator.name, index), m)
                        })
                });
            if let Err((key, mismatch)) = mismatch {
                return Err(CoordinatorError::ResultMismatch { key, reason: mismatch.to_string() });
            }
        }

        let rows: Vec<ModelOutput> = outputs
            .iter()
            .map(|o| {
                let sampling = generator.spec.as_ref().and_then(|s| s.sampling.as_ref());
                model_output_row(o, &generator.name, generator.spec.is_some(), sampling)
            })
            .collect();
        write_model_outputs(folder.join("model_outputs.json"), &rows)?;
        files.push(format!("{folder_part}/model_outputs.json"));

        let annotations: Vec<Annotation> = outputs
            .iter()
            .zip(&verdicts)
            .map(|(output, verdict)| {
                let row = &eval_set.rows()[output.index];
                let job = JudgeJob {
                    run_id: run.to_string(),
                    judge: plan.judge.clone(),
                    generator: generator.name.clone(),
                    index: output.index,
                    instruction: row.instruction.clone(),
                    dataset: row.dataset.clone(),
                    reference_output: row.output.clone(),
                    model_output: output.output.clone(),
                };
                let mut annotation = annotation_from(&job, verdict);
                // A timing: it would make the file differ between identical runs.
                annotation.time_per_example = None;
                annotation
            })
            .collect();
        write_annotations(folder.join("annotations.json"), &annotations)?;
        files.push(format!("{folder_part}/annotations.json"));

        let throughput = match generator.spec {
            Some(_) => {
                let (mut generation, timed) = generation_activity(&outputs);
                if timed.is_none() {
                    // Answers of a herd from before they carried their timing.
                    generation.wall_seconds =
                        merge_activity(&generation_records, Some(&generator.name)).wall_seconds;
                }
                let (mut judging, timed) = judging_activity(&verdicts);
                if timed.is_none() {
                    let recorded = merge_activity(&judging_records, Some(&generator.name));
                    judging = PhaseActivity { jobs: judging.jobs, ..recorded };
                }
                let phases = phase_times(generation, judging);
                let mut judges = BTreeMap::from([(plan.judge.name.clone(), phases.judge_times())]);
                for (judge, verdicts) in other_judges(
                    store,
                    plan,
                    &generator.name,
                    &generator.indices,
                    &every_verdict_key,
                )
                .await?
                {
                    judges.insert(judge, judge_times(judging_activity(&verdicts).0));
                }
                let mut t =
                    RunThroughput::new(&generator.name, &outputs, phases).with_judges(judges);
                t.generation.timeline = Timeline {
                    generation: Timeline::points(outputs.iter().filter_map(|o| o.stored)),
                    judging: Timeline::points(verdicts.iter().filter_map(|v| v.stored)),
                };
                write_throughput(folder.join("throughput.json"), &t)?;
                files.push(format!("{folder_part}/throughput.json"));
                Some(t)
            }
            None => None,
        };
        all_verdicts.extend(verdicts);
        generators.push(GeneratorSummary {
            name: generator.name.clone(),
            folder,
            examples: annotations.len(),
            unparsed: annotations.iter().filter(|a| a.preference.is_none()).count(),
            leaderboard: None,
            throughput,
            caveats: Vec::new(),
        });
    }

    let folders: Vec<PathBuf> = generators.iter().map(|g| g.folder.clone()).collect();
    let options = ReportOptions { baseline: plan.baseline.clone(), ..ReportOptions::default() };
    let mut report = build_report(&folders, &options)?;
    // The report names each generator's annotations file (a row's title, errors.md's
    // source, the input warnings): relative to the run folder, so that its bytes do not
    // depend on where the folder was written (herd run's --out, the coordinator's scratch).
    for generator in &mut report.generators {
        if let Ok(relative) = generator.annotations_path.strip_prefix(out) {
            let absolute = generator.annotations_path.display().to_string();
            let relative = relative.to_path_buf();
            for warning in &mut generator.warnings {
                *warning = warning.replace(&absolute, &relative.display().to_string());
            }
            generator.annotations_path = relative;
        }
    }
    let report_files = report.files();
    report_files.write_to(out)?;
    files.extend(report_files.files.iter().map(|(relative, _)| slash_path(relative)));
    for summary in &mut generators {
        summary.leaderboard =
            report.leaderboard.iter().find(|row| row.generator == summary.name).cloned();
        if let Some(g) = report.generators.iter().find(|g| g.name == summary.name) {
            summary.caveats = g.caveats.clone();
        }
    }
    Ok(RunSummary {
        out: out.to_path_buf(),
        report: out.join("report.html"),
        leaderboard: out.join("leaderboard.csv"),
        generators,
        judging: match judging_activity(&all_verdicts) {
            (judging, Some(_)) => judging,
            (judging, None) => {
                PhaseActivity { jobs: judging.jobs, ..merge_activity(&judging_records, None) }
            }
        },
        files,
        dead_letters: Vec::new(),
        rejected: Vec::new(),
        paired: report.paired,
    })
}

impl RunSummary {
    /// What the CLI prints after its table: the paired differences (A − B, points, 95 %
    /// bootstrap interval) and each generator's caveats, one line each.
    pub fn findings(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.paired.is_empty() {
            lines.push(
                "paired (A − B, points, 95 % bootstrap interval over shared instructions):".into(),
            );
        }
        for p in &self.paired {
            lines.push(format!(
                "  {} − {}: win rate {}, LC win rate {}; A better on {}, B better on {}, same on {}",
                p.a,
                p.b,
                herd_report::paired_cell(p.win_rate.as_ref()),
                herd_report::paired_cell(p.length_controlled.as_ref()),
                p.a_better,
                p.b_better,
                p.same
            ));
        }
        for g in &self.generators {
            lines.extend(g.caveats.iter().map(|c| format!("caveat: {}: {c}", g.name)));
        }
        lines
    }
}

/// The verdicts of judges other than the plan's on `generator`'s answers at `indices`, by
/// judge name, from `verdict_keys` (every verdict key of the run).
async fn other_judges(
    store: &ResultStore,
    plan: &RunPlan,
    generator: &str,
    indices: &[usize],
    verdict_keys: &[String],
) -> Result<BTreeMap<String, Vec<JudgeResult>>, CoordinatorError> {
    let (ours, generator_part) = (keys::segment(&plan.judge.name), keys::segment(generator));
    let planned: BTreeSet<usize> = indices.iter().copied().collect();
    // `…/annotations/<judge>/<generator>/<index>.json`
    let theirs = verdict_keys.iter().filter(|key| {
        let mut parts = key.rsplit('/').skip(1);
        let (g, judge) = (parts.next(), parts.next());
        judge.is_some_and(|j| j != ours)
            && g == Some(generator_part.as_str())
            && keys::index_of(key).is_some_and(|i| planned.contains(&i))
    });
    let verdicts: Vec<JudgeResult> = read_all(store, theirs.cloned()).await?;
    let mut by_judge: BTreeMap<String, Vec<JudgeResult>> = BTreeMap::new();
    for verdict in verdicts.into_iter().filter(|v| v.generator == generator) {
        by_judge.entry(verdict.judge.clone()).or_default().push(verdict);
    }
    Ok(by_judge)
}

/// Writes [`DEAD_LETTERS_FILE`] when the run saw dead letters or rejected results (and
/// removes an earlier one otherwise, so an honest run's folder is what it always was), and
/// keeps both lists in `summary`.
pub fn write_rejections(
    summary: &mut RunSummary,
    dead_letters: &[DeadLetter],
    rejected: &[RejectedResult],
) -> Result<(), CoordinatorError> {
    summary.dead_letters = dead_letters.to_vec();
    summary.rejected = rejected.to_vec();
    let path = summary.out.join(DEAD_LETTERS_FILE);
    if dead_letters.is_empty() && rejected.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CoordinatorError::Io { path, action: "remove", source: e })
            }
            _ => Ok(()),
        };
    }
    let document = serde_json::json!({
        "dead_letters": dead_letters,
        "rejected_results": rejected,
    });
    let mut text = serde_json::to_string_pretty(&document).expect("JSON values serialise");
    text.push('\n');
    std::fs::write(&path, text).map_err(|source| CoordinatorError::Io {
        path,
        action: "write",
        source,
    })?;
    summary.files.push(DEAD_LETTERS_FILE.to_string());
    Ok(())
}

/// Copies the files of a written run folder into the store under `runs/<run>/report/`
/// (same relative paths, same bytes), so that a distributed run's results live where its
/// answers and verdicts do. Returns how many files were stored.
pub async fn store_run_folder(
    store: &ResultStore,
    run: &str,
    summary: &RunSummary,
) -> Result<usize, CoordinatorError> {
    for file in &summary.files {
        let path = summary.out.join(file);
        let bytes = std::fs::read(&path).map_err(|source| CoordinatorError::Io {
            path,
            action: "read",
            source,
        })?;
        store.put_bytes(&keys::report_file(run, file), bytes).await?;
    }
    Ok(summary.files.len())
}

/// A relative path with `/` between its parts, whatever the platform.
fn slash_path(relative: &Path) -> String {
    relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// A stored answer as a `model_outputs.json` row; generated answers carry their token
/// counts and finish reason after alpaca_eval's four columns, and sampled ones the
/// temperature, top-p and the answer's own seed.
fn model_output_row(
    output: &GenerationResult,
    generator: &str,
    generated: bool,
    sampling: Option<&SamplingSpec>,
) -> ModelOutput {
    let mut extra = Map::new();
    if generated {
        extra.insert("prompt_tokens".into(), Value::from(output.prompt_tokens));
        extra.insert("output_tokens".into(), Value::from(output.output_tokens));
        extra.insert(
            "finish_reason".into(),
            serde_json::to_value(output.finish_reason).expect("serialises"),
        );
    }
    if let Some(sampling) = sampling {
        extra.insert("temperature".into(), Value::from(sampling.temperature));
        extra.insert("top_p".into(), Value::from(sampling.top_p));
        extra.insert("seed".into(), Value::from(sampling.seed_for(output.index)));
    }
    ModelOutput {
        instruction: output.instruction.clone(),
        output: output.output.clone(),
        generator: generator.to_string(),
        dataset: output.dataset.clone(),
        extra,
    }
}

/// Every document at `keys`, in order; a missing one is an error naming its key.
async fn read_all<T: DeserializeOwned>(
    store: &ResultStore,
    keys: impl Iterator<Item = String>,
) -> Result<Vec<T>, CoordinatorError> {
    futures::stream::iter(keys)
        .map(|key| async move {
            match store.get_json::<T>(&key).await {
                Ok(Some(doc)) => Ok(doc),
                Ok(None) => Err(CoordinatorError::Store(StoreError::Operation {
                    store: store.description().to_string(),
                    key,
                    operation: "get",
                    message: "missing: the run is not complete".into(),
                })),
                Err(e) => Err(e.into()),
            }
        })
        .buffered(crate::READ_CONCURRENCY)
        .try_collect()
        .await
}
