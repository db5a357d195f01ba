//! `herd agreement`: two annotators on the same pairs, as alpaca_eval's evaluator analysis
//! compares them (agreement, per-generator win-rate correlations, each annotator's
//! leanings), plus Cohen's kappa.

use std::path::{Path, PathBuf};

use anyhow::Context;
use herd_core::formats::{read_annotations, Annotation};
use herd_core::metrics::{agreement, Agreement};

#[derive(clap::Args)]
pub struct Args {
    /// Annotator A: an annotations file, or a folder (run folder, alpaca_eval `results/`
    /// tree) whose annotations files are pooled in path order.
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// Annotator B, the same way; pairs are matched on (instruction, output_1, output_2).
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Print the figures as one JSON object (NaN as null).
    #[arg(long, env = "HERD_JSON")]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (a, files_a) = pooled(&args.a)?;
    let (b, files_b) = pooled(&args.b)?;
    let found = agreement(&a, &b);
    if found.n_pairs == 0 {
        anyhow::bail!(
            "{} and {} share no (instruction, output_1, output_2) pair: nothing to compare",
            args.a.display(),
            args.b.display()
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(());
    }
    print(&found, (&a, files_a), (&b, files_b));
    Ok(())
}

/// Every annotations file under `input`, read and concatenated; and how many files.
fn pooled(input: &Path) -> anyhow::Result<(Vec<Annotation>, usize)> {
    let mut files: Vec<PathBuf> =
        herd_report::find_generators(input)?.into_iter().map(|g| g.annotations).collect();
    files.sort();
    let mut rows = Vec::new();
    for file in &files {
        rows.extend(
            read_annotations(file).with_context(|| format!("annotator {}", input.display()))?,
        );
    }
    Ok((rows, files.len()))
}

fn annotators(rows: &[Annotation]) -> String {
    let mut names: Vec<&str> = rows.iter().map(|a| a.annotator.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

fn print(
    found: &Agreement,
    (a, files_a): (&[Annotation], usize),
    (b, files_b): (&[Annotation], usize),
) {
    let ratio = |x: f64| if x.is_finite() { format!("{x:.4}") } else { "—".into() };
    println!("A: {} ({} rows from {files_a} file(s))", annotators(a), a.len());
    println!("B: {} ({} rows from {files_b} file(s))", annotators(b), b.len());
    println!(
        "pairs compared: {} ({} with a preference on both sides)",
        found.n_pairs, found.n_scored
    );
    println!(
        "agreement: {:.2} ± {:.2} %  (alpaca_eval's \"Human agreement\": 100 · (1 − mean |p_A − p_B|))",
        found.agreement, found.standard_error
    );
    println!("Cohen's kappa (verdicts output_1 / draw / output_2): {}", ratio(found.cohen_kappa));
    println!(
        "win rates across {} generator(s): Spearman {}, Pearson {}",
        found.generators.len(),
        ratio(found.spearman),
        ratio(found.pearson)
    );
    println!();
    println!("{:<22} {:>10} {:>10}", "", "A", "B");
    println!("{:<22} {:>10} {:>10}", "# parsed", found.a.n_parsed, found.b.n_parsed);
    println!(
        "{:<22} {:>10} {:>10}",
        "prefers output_1",
        ratio(found.a.prefers_output_1),
        ratio(found.b.prefers_output_1)
    );
    println!(
        "{:<22} {:>10} {:>10}",
        "prefers longer",
        ratio(found.a.prefers_longer.ratio()),
        ratio(found.b.prefers_longer.ratio())
    );
    println!(
        "{:<22} {:>10} {:>10}",
        "prefers lists",
        ratio(found.a.prefers_lists.ratio()),
        ratio(found.b.prefers_lists.ratio())
    );
    if found.generators.len() > 1 {
        println!();
        println!("{:<40} {:>10} {:>10}", "generator: win rate", "A", "B");
        for g in &found.generators {
            println!("{:<40} {:>10.2} {:>10.2}", g.generator, g.win_rate_a, g.win_rate_b);
        }
    }
}
