//! `herd metrics`: alpaca_eval 0.6.6's leaderboard metrics of one annotations file.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use herd_core::calibration::Calibration;
use herd_core::formats::read_annotations;
use herd_core::metrics::{
    compute_metrics, DifficultyLookup, GlmVariant, MetricsOptions, MetricsReport,
};

/// How many dropped rows the diagnostics list by number.
const LISTED_ROWS: usize = 20;

#[derive(clap::Args)]
pub struct Args {
    /// alpaca_eval annotations file (`annotations.json` or `.json.gz`, herd's or alpaca_eval's).
    #[arg(long, env = "HERD_ANNOTATIONS")]
    pub annotations: PathBuf,
    /// Folder with alpaca_eval's official `df_gamed.csv` and `instruction_difficulty.csv`;
    /// herd's embedded reconstructions when absent.
    #[arg(long, env = "HERD_CALIBRATION")]
    pub calibration: Option<PathBuf>,
    /// Read each row's instruction difficulty by its position in the file, as alpaca_eval
    /// does, instead of by its instruction (they differ for files with missing rows).
    #[arg(long, env = "HERD_POSITIONAL_DIFFICULTY")]
    pub positional_difficulty: bool,
    /// The LC GLM: alpaca_eval's `length_controlled_v1` (the leaderboard's) or
    /// `length_controlled_noreg` (no gamed-baseline rows).
    #[arg(long, env = "HERD_GLM", default_value = "length_controlled_v1",
          value_parser = ["length_controlled_v1", "length_controlled_noreg"])]
    pub glm: String,
    /// Print only the ten leaderboard numbers as one JSON object (diagnostics go to stderr).
    #[arg(long, env = "HERD_JSON")]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let annotations = read_annotations(&args.annotations)?;
    let calibration = match &args.calibration {
        Some(dir) => Calibration::from_dir(dir).context("reading the LC calibration")?,
        None => Calibration::embedded(),
    };
    let options = MetricsOptions {
        calibration,
        difficulty_lookup: if args.positional_difficulty {
            DifficultyLookup::Positional
        } else {
            DifficultyLookup::ByInstruction
        },
        glm: if args.glm == "length_controlled_noreg" {
            GlmVariant::LengthControlledNoreg
        } else {
            GlmVariant::LengthControlledV1
        },
    };
    let report = compute_metrics(&annotations, &options)
        .with_context(|| args.annotations.display().to_string())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.metrics)?);
        eprint!("{}", diagnostics(&report));
    } else {
        print!("{}", summary(&args, &report));
    }
    Ok(())
}

fn percent(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.2}"),
        _ => "n/a".into(),
    }
}

fn summary(args: &Args, report: &MetricsReport) -> String {
    let m = &report.metrics;
    let mut out = String::new();
    let _ = writeln!(out, "{}", args.annotations.display());
    let _ = writeln!(
        out,
        "  length-controlled win rate  {} ± {}",
        percent(m.length_controlled_winrate),
        percent(m.lc_standard_error)
    );
    let _ = writeln!(
        out,
        "  win rate                    {} ± {}",
        percent(Some(m.win_rate)),
        percent(Some(m.standard_error))
    );
    let _ = writeln!(out, "  discrete win rate           {}", percent(Some(m.discrete_win_rate)));
    let _ = writeln!(
        out,
        "  wins / losses / draws       {} / {} / {} of {} counted",
        m.n_wins, m.n_wins_base, m.n_draws, m.n_total
    );
    let _ = writeln!(out, "  average length              {} characters", m.avg_length);
    out.push_str(&diagnostics(report));
    out
}

fn diagnostics(report: &MetricsReport) -> String {
    let d = &report.diagnostics;
    let mut out = String::new();
    let _ = writeln!(out, "herd metrics: LC calibration: {}", d.calibration_source);
    let _ = writeln!(
        out,
        "herd metrics: LC GLM: {}, instruction difficulty looked up {}",
        d.glm, d.difficulty_lookup
    );
    match (&d.length_controlled, &d.length_controlled_unavailable) {
        (Some(fit), _) => {
            let w = fit.weights;
            let c = fit
                .chosen_c
                .map(|c| format!("{c:.6}"))
                .unwrap_or_else(|| "none (baseline against itself)".into());
            let _ = writeln!(
                out,
                "herd metrics: chosen C {c}; weights: tanh(std_delta_len) {:.6}, instruction_difficulty {:.6}, not_gamed_baseline {:.6}",
                w.tanh_std_delta_len, w.instruction_difficulty, w.not_gamed_baseline
            );
        }
        (None, Some(why)) => {
            let _ = writeln!(out, "herd metrics: no length-controlled win rate: {why}");
        }
        (None, None) => {}
    }
    let screening = &d.preferences;
    if screening.n_dropped() > 0 {
        let rows: Vec<String> = screening
            .unparsed_rows
            .iter()
            .map(|r| format!("{r} (null)"))
            .chain(
                screening
                    .out_of_range
                    .iter()
                    .map(|p| format!("{} ({})", p.row, p.preference.unwrap_or(f64::NAN))),
            )
            .collect();
        let more = rows.len().saturating_sub(LISTED_ROWS);
        let _ = writeln!(
            out,
            "herd metrics: {} rows not counted in the win rate: {} unparsed (null), {} out of range; rows {}{}",
            screening.n_dropped(),
            screening.n_unparsed(),
            screening.out_of_range.len(),
            rows.iter().take(LISTED_ROWS).cloned().collect::<Vec<_>>().join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        );
    }
    if let Some(row) = d.first_row_out_of_eval_order {
        let note = match d.difficulty_lookup {
            DifficultyLookup::Positional => {
                "from there on rows get another instruction's difficulty, as in alpaca_eval"
            }
            DifficultyLookup::ByInstruction => {
                "alpaca_eval's positional lookup would misalign difficulties from there on"
            }
        };
        let _ = writeln!(
            out,
            "herd metrics: row {row} is not the eval-set instruction at that position; {note}"
        );
    }
    out
}
