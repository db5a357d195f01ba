//! `leaderboard.csv`, the self-contained HTML report and each generator's `errors.md`,
//! from herd run folders or alpaca_eval annotations files.
//!
//! ```no_run
//! let report = herd_report::build_report(&["runs/today".into()], &Default::default())?;
//! report.files().write_to("runs/today")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A run folder is `<run>/<generator>/{model_outputs.json, annotations.json,
//! throughput.json?}`; the files written beside them are `<run>/leaderboard.csv`,
//! `<run>/report.html` and `<run>/<generator>/errors.md`.
//!
//! `examples/alpaca_eval_interop.rs` with `tools/check_alpaca_eval_loads.py` checks that
//! alpaca_eval 0.6.6 itself loads the files herd writes and recomputes the same metrics.

mod caveats;
mod cells;
mod escape;
pub mod html;
mod inputs;
mod markdown;
mod rows;
pub mod standing;
mod summary_md;
mod svg;

use std::path::{Path, PathBuf};

use herd_core::error_analysis::{self, ErrorSample};
use herd_core::eval_set::EvalSet;
use herd_core::formats::leaderboard::{render_leaderboard, sort_like_alpaca_eval, DEFAULT_MODE};
use herd_core::formats::{
    read_annotations, validate_annotations, Annotation, FormatError, LeaderboardRow,
};
use herd_core::metrics::paired::DEFAULT_RESAMPLES;
use herd_core::metrics::{
    compare_paired, compute_metrics, head_to_head, JudgeBias, MetricsError, MetricsOptions,
    MetricsReport, PairedComparison, PairedSide,
};
use herd_core::throughput::{read_throughput, GeneratorThroughput, ThroughputFileError};

pub use caveats::{caveats, SMALL_SAMPLE};
pub use cells::{lc_win_rate_cell, paired_cell, win_rate_cell};
pub use inputs::{find_generators, GeneratorSource};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Throughput(#[from] ThroughputFileError),
    #[error("{}: metrics of `{generator}`: {source}", path.display())]
    Metrics { path: PathBuf, generator: String, source: MetricsError },
    #[error("{}: no annotations.json or annotations.json.gz here or in its sub-folders", path.display())]
    NoAnnotations { path: PathBuf },
    #[error("{}: cannot {action}: {source}", path.display())]
    Io { path: PathBuf, action: &'static str, source: std::io::Error },
    #[error("nothing to report: give at least one run folder or annotations file")]
    NoInputs,
}

/// How to build the report.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Dispreferred examples shown per generator.
    pub error_samples: usize,
    /// Seed of the error sample (same seed, same examples).
    pub seed: u64,
    /// The leaderboard's `mode` column for every row.
    pub mode: String,
    pub metrics: MetricsOptions,
    /// The generator every other one is compared with, pair by pair; `None`: every two.
    pub baseline: Option<String>,
    /// Resamples of the paired bootstrap (seeded with `seed`).
    pub resamples: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            error_samples: 10,
            seed: 0,
            mode: DEFAULT_MODE.to_string(),
            metrics: MetricsOptions::default(),
            baseline: None,
            resamples: DEFAULT_RESAMPLES,
        }
    }
}

/// The win rate on the instructions of one `dataset` of the eval set.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetWinRate {
    pub dataset: String,
    pub n_total: u64,
    pub win_rate: f64,
    pub standard_error: f64,
}

/// Everything the report says about one generator.
#[derive(Debug, Clone)]
pub struct GeneratorReport {
    /// Unique within the report (a suffix is added when two inputs share a name).
    pub name: String,
    pub annotations_path: PathBuf,
    /// The generator's folder when it came from a run folder.
    pub run_folder_name: Option<String>,
    pub annotations: Vec<Annotation>,
    pub metrics: MetricsReport,
    pub throughput: Option<GeneratorThroughput>,
    pub datasets: Vec<DatasetWinRate>,
    pub errors: ErrorSample,
    /// Validation against the AlpacaEval 2 eval set, as sentences (warnings, or the
    /// error that makes the file not an AlpacaEval 2 file).
    pub warnings: Vec<String>,
    /// How the judge leaned on this generator's rows.
    pub bias: JudgeBias,
    /// What a reader must know before quoting the figures ([`caveats`]): few rows, empty
    /// answers, unparsed verdicts.
    pub caveats: Vec<String>,
}

impl GeneratorReport {
    pub fn leaderboard_row(&self, mode: &str) -> LeaderboardRow {
        LeaderboardRow {
            generator: self.name.clone(),
            metrics: self.metrics.metrics.clone(),
            mode: mode.to_string(),
        }
    }

    /// Where `errors.md` goes, relative to the output folder: the generator's folder of
    /// the run, or a folder named after the generator.
    pub fn errors_path(&self) -> PathBuf {
        self.folder().join("errors.md")
    }

    /// The generator's folder, relative to the output folder.
    pub fn folder(&self) -> PathBuf {
        // A run's generator keeps its folder unless its name had to be made unique.
        let folder = match &self.run_folder_name {
            Some(folder) if *folder == self.name => folder.clone(),
            _ => folder_name(&self.name),
        };
        PathBuf::from(folder)
    }

    /// `errors.md`: the sampled dispreferred examples.
    pub fn errors_markdown(&self) -> String {
        let source = self.annotations_path.display().to_string();
        error_analysis::render_markdown(&source, &self.annotations, &self.errors)
    }
}

/// The generators, in leaderboard order, and their leaderboard.
#[derive(Debug, Clone)]
pub struct Report {
    pub generators: Vec<GeneratorReport>,
    pub leaderboard: Vec<LeaderboardRow>,
    pub seed: u64,
    /// The baseline's name, when one was named and is among the generators.
    pub baseline: Option<String>,
    /// Generator pairs judged on shared instructions: each generator against the
    /// baseline, or every two in leaderboard order.
    pub paired: Vec<PairedComparison>,
}

/// The files of a report, by path relative to the output folder.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub files: Vec<(PathBuf, String)>,
}

impl ReportFiles {
    /// Writes every file under `dir`, creating folders as needed. Returns the paths written.
    pub fn write_to(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, ReportError> {
        let mut written = Vec::new();
        for (relative, text) in &self.files {
            let path = dir.as_ref().join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| ReportError::Io {
                    path: parent.to_path_buf(),
                    action: "create",
                    source,
                })?;
            }
            std::fs::write(&path, text).map_err(|source| ReportError::Io {
                path: path.clone(),
                action: "write",
                source,
            })?;
            written.push(path);
        }
        Ok(written)
    }
}

impl Report {
    pub fn leaderboard_csv(&self) -> String {
        render_leaderboard(&self.leaderboard)
    }

    pub fn html(&self) -> String {
        html::render(self)
    }

    /// `summary.md`: the figures a write-up quotes ([`summary_md`]).
    pub fn summary_markdown(&self) -> String {
        summary_md::render(self)
    }

    /// `leaderboard.csv`, `report.html`, `summary.md` and `<generator>/errors.md` for each
    /// generator.
    pub fn files(&self) -> ReportFiles {
        let mut files = vec![
            (PathBuf::from("leaderboard.csv"), self.leaderboard_csv()),
            (PathBuf::from("report.html"), self.html()),
            (PathBuf::from("summary.md"), self.summary_markdown()),
        ];
        for generator in &self.generators {
            files.push((generator.errors_path(), generator.errors_markdown()));
        }
        ReportFiles { files }
    }
}

/// A generator's name as a folder name: path separators and other troublesome characters
/// become `_`, so a name cannot climb out of the output folder.
pub fn folder_name(generator: &str) -> String {
    let cleaned: String = generator
        .chars()
        .map(|c| if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '+') { c } else { '_' })
        .collect();
    match cleaned.trim_matches('.') {
        "" => "_".to_string(),
        _ => cleaned,
    }
}

/// Loads every generator of the inputs (run folders, generator folders or annotations
/// files), computes its metrics, samples its errors and sorts them as alpaca_eval does.
pub fn build_report(inputs: &[PathBuf], options: &ReportOptions) -> Result<Report, ReportError> {
    if inputs.is_empty() {
        return Err(ReportError::NoInputs);
    }
    let mut sources = Vec::new();
    for input in inputs {
        sources.extend(find_generators(input)?);
    }
    let eval_set = EvalSet::embedded();
    let mut generators = Vec::new();
    for source in &sources {
        generators.push(load_generator(source, &eval_set, options)?);
    }
    make_names_unique(&mut generators);

    let mut leaderboard: Vec<LeaderboardRow> =
        generators.iter().map(|g| g.leaderboard_row(&options.mode)).collect();
    sort_like_alpaca_eval(&mut leaderboard);
    generators.sort_by_key(|g| leaderboard.iter().position(|row| row.generator == g.name));
    let baseline = options.baseline.clone().filter(|b| generators.iter().any(|g| g.name == *b));
    let paired = paired_comparisons(&generators, baseline.as_deref(), options);
    Ok(Report { generators, leaderboard, seed: options.seed, baseline, paired })
}

/// Each generator against `baseline`, or every two (the higher-ranked first).
fn paired_comparisons(
    generators: &[GeneratorReport],
    baseline: Option<&str>,
    options: &ReportOptions,
) -> Vec<PairedComparison> {
    let mut pairs = Vec::new();
    for (i, a) in generators.iter().enumerate() {
        for b in &generators[i + 1..] {
            let (a, b) = match baseline {
                None => (a, b),
                Some(name) if b.name == name => (a, b),
                Some(name) if a.name == name => (b, a),
                Some(_) => continue,
            };
            pairs.push(compare_paired(side(a), side(b), options.resamples, options.seed));
        }
    }
    pairs
}

/// A generator's side of a paired comparison.
fn side(g: &GeneratorReport) -> PairedSide<'_> {
    PairedSide {
        name: &g.name,
        annotations: &g.annotations,
        lc_per_row: g
            .metrics
            .diagnostics
            .length_controlled
            .as_ref()
            .map(|fit| fit.per_row.as_slice()),
    }
}

/// One generator: its annotations, metrics, throughput (when the run recorded it),
/// per-dataset win rates and error sample.
pub fn load_generator(
    source: &GeneratorSource,
    eval_set: &EvalSet,
    options: &ReportOptions,
) -> Result<GeneratorReport, ReportError> {
    let path = &source.annotations;
    let annotations = read_annotations(path)?;
    let warnings = match validate_annotations(path, &annotations, eval_set) {
        Ok(warnings) => warnings.iter().map(ToString::to_string).collect(),
        Err(not_alpaca_eval_2) => {
            vec![format!("not checked against the AlpacaEval 2 eval set: {not_alpaca_eval_2}")]
        }
    };
    // In a run, the folder is the generator's name; a file speaks for itself. A folder
    // named after the file's annotator is alpaca_eval's `results/<model>/<annotator>/`, not
    // a run's generator folder.
    let mut source = source.clone();
    let annotator = annotations.first().map(|a| a.annotator.as_str());
    if source.run_folder_name.is_some() && source.run_folder_name.as_deref() == annotator {
        source.run_folder_name = None;
        if let Some(model) = path.parent().and_then(Path::parent).and_then(Path::file_name) {
            source.fallback_name = model.to_string_lossy().into_owned();
        }
    }
    let source = &source;
    let name = source.run_folder_name.clone().unwrap_or_else(|| {
        annotations
            .iter()
            .map(|a| a.generator_2.as_str())
            .find(|g| !g.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| source.fallback_name.clone())
    });
    let metrics = compute_metrics(&annotations, &options.metrics).map_err(|source| {
        ReportError::Metrics { path: path.clone(), generator: name.clone(), source }
    })?;
    let throughput = source.throughput.as_ref().map(read_throughput).transpose()?;
    let bias = JudgeBias::of(&annotations);
    Ok(GeneratorReport {
        caveats: caveats(&metrics, &bias),
        bias,
        datasets: dataset_win_rates(&annotations),
        errors: error_analysis::sample_dispreferred(
            &annotations,
            options.error_samples,
            options.seed,
        ),
        name,
        annotations_path: path.clone(),
        run_folder_name: source.run_folder_name.clone(),
        annotations,
        metrics,
        throughput,
        warnings,
    })
}

/// alpaca_eval's head-to-head win rate within each `dataset`, datasets in name order.
pub fn dataset_win_rates(annotations: &[Annotation]) -> Vec<DatasetWinRate> {
    let mut datasets: Vec<&str> = annotations.iter().map(|a| a.dataset.as_str()).collect();
    datasets.sort_unstable();
    datasets.dedup();
    datasets
        .into_iter()
        .map(|dataset| {
            let preferences: Vec<Option<f64>> =
                annotations.iter().filter(|a| a.dataset == dataset).map(|a| a.preference).collect();
            let stats = head_to_head(&preferences);
            DatasetWinRate {
                dataset: dataset.to_string(),
                n_total: stats.n_total,
                win_rate: stats.win_rate,
                standard_error: stats.standard_error,
            }
        })
        .collect()
}

fn make_names_unique(generators: &mut [GeneratorReport]) {
    let mut seen: Vec<String> = Vec::new();
    for generator in generators.iter_mut() {
        let base = generator.name.clone();
        let mut n = 1;
        while seen.contains(&generator.name) {
            n += 1;
            generator.name = format!("{base} ({n})");
        }
        seen.push(generator.name.clone());
    }
}

#[cfg(test)]
mod tests;
