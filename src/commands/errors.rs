//! `herd errors`: a reproducible sample of the examples the judge held against the model,
//! as Markdown.

use std::path::PathBuf;

use anyhow::Context;
use herd_core::error_analysis::{render_markdown, sample_dispreferred};
use herd_core::formats::read_annotations;

#[derive(clap::Args)]
pub struct Args {
    /// alpaca_eval annotations file (`annotations.json` or `.json.gz`, herd's or alpaca_eval's).
    #[arg(long, env = "HERD_ANNOTATIONS")]
    pub annotations: PathBuf,
    /// How many dispreferred examples to show (all of them when fewer exist).
    #[arg(long, env = "HERD_ERROR_SAMPLES", default_value_t = 10)]
    pub n: usize,
    /// Seed of the sample: the same seed picks the same examples on any machine.
    #[arg(long, env = "HERD_SEED", default_value_t = 0)]
    pub seed: u64,
    /// Markdown file to write; standard output when absent.
    #[arg(long, env = "HERD_ERRORS_OUT")]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let annotations = read_annotations(&args.annotations)?;
    let sample = sample_dispreferred(&annotations, args.n, args.seed);
    let markdown = render_markdown(&args.annotations.display().to_string(), &annotations, &sample);
    match &args.out {
        Some(path) => {
            std::fs::write(path, &markdown)
                .with_context(|| format!("{}: cannot write", path.display()))?;
            eprintln!(
                "herd errors: {} of {} dispreferred rows (of {}) → {}",
                sample.rows.len(),
                sample.dispreferred,
                annotations.len(),
                path.display()
            );
        }
        None => print!("{markdown}"),
    }
    Ok(())
}
