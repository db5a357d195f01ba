//! `herd report`: `leaderboard.csv`, `report.html` and `<generator>/errors.md` from run
//! folders or annotations files.

use std::path::PathBuf;

use herd_report::{build_report, ReportOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Run folders (`<run>/<generator>/annotations.json`), generator folders or
    /// annotations files (`.json` or `.json.gz`).
    #[arg(required = true, value_name = "RUN_OR_FILE")]
    pub inputs: Vec<PathBuf>,
    /// Where to write; default: the run folder when exactly one folder is given, else `herd-report`.
    #[arg(long, env = "HERD_REPORT_OUT")]
    pub out: Option<PathBuf>,
    /// Dispreferred examples shown per generator.
    #[arg(long, env = "HERD_ERROR_SAMPLES", default_value_t = 10)]
    pub n: usize,
    /// Seed of the error samples.
    #[arg(long, env = "HERD_SEED", default_value_t = 0)]
    pub seed: u64,
    /// The leaderboard's `mode` column (alpaca_eval: minimal, verified, community, dev).
    #[arg(long, env = "HERD_LEADERBOARD_MODE", default_value = "community")]
    pub mode: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let out = match (&args.out, args.inputs.as_slice()) {
        (Some(out), _) => out.clone(),
        (None, [single]) if single.is_dir() => single.clone(),
        (None, _) => PathBuf::from("herd-report"),
    };
    let options = ReportOptions {
        error_samples: args.n,
        seed: args.seed,
        mode: args.mode,
        ..ReportOptions::default()
    };
    let report = build_report(&args.inputs, &options)?;
    let written = report.files().write_to(&out)?;

    println!("{:<32} {:>14} {:>14} {:>10}", "generator", "LC win rate", "win rate", "avg len");
    for row in &report.leaderboard {
        let lc = herd_report::lc_win_rate_cell(row);
        let win_rate = herd_report::win_rate_cell(row);
        println!("{:<32} {lc:>14} {win_rate:>14} {:>10}", row.generator, row.avg_length);
    }
    const WARNINGS_SHOWN: usize = 3;
    for generator in &report.generators {
        for warning in generator.warnings.iter().take(WARNINGS_SHOWN) {
            eprintln!("warning: {warning}");
        }
        if generator.warnings.len() > WARNINGS_SHOWN {
            eprintln!(
                "warning: … and {} more for {} (see report.html)",
                generator.warnings.len() - WARNINGS_SHOWN,
                generator.name
            );
        }
    }
    println!("wrote {} files under {}", written.len(), out.display());
    Ok(())
}
