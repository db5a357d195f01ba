//! `herd report`: `leaderboard.csv`, `report.html`, `summary.md` and
//! `<generator>/errors.md` from run folders or annotations files.

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
    /// Compare every other generator with this one (paired differences with bootstrap
    /// intervals); without it, every two generators are compared.
    #[arg(long, env = "HERD_REPORT_BASELINE", value_name = "GENERATOR")]
    pub baseline: Option<String>,
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
        baseline: args.baseline.clone(),
        ..ReportOptions::default()
    };
    let report = build_report(&args.inputs, &options)?;
    if let Some(baseline) = &args.baseline {
        if report.baseline.is_none() {
            let names: Vec<&str> = report.generators.iter().map(|g| g.name.as_str()).collect();
            anyhow::bail!("--baseline {baseline:?} is not among the generators: {names:?}");
        }
    }
    let written = report.files().write_to(&out)?;

    println!("{:<32} {:>14} {:>14} {:>10}", "generator", "LC win rate", "win rate", "avg len");
    for row in &report.leaderboard {
        let lc = herd_report::lc_win_rate_cell(row);
        let win_rate = herd_report::win_rate_cell(row);
        println!("{:<32} {lc:>14} {win_rate:>14} {:>10}", row.generator, row.avg_length);
    }
    for p in &report.paired {
        println!(
            "paired {} − {}: win rate {}, LC win rate {} (points, 95 % bootstrap interval)",
            p.a,
            p.b,
            herd_report::paired_cell(p.win_rate.as_ref()),
            herd_report::paired_cell(p.length_controlled.as_ref())
        );
    }
    for generator in &report.generators {
        for caveat in &generator.caveats {
            println!("caveat: {}: {caveat}", generator.name);
        }
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
