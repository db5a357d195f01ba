//! Writes herd's versions of alpaca_eval's files into a folder, for
//! `report/tools/check_alpaca_eval_loads.py` to load with alpaca_eval 0.6.6 itself:
//!
//! ```text
//! cargo run --release -p herd-report --example alpaca_eval_interop -- OUT_DIR [SHARED_DATA_DIR]
//! python report/tools/check_alpaca_eval_loads.py OUT_DIR [SHARED_DATA_DIR]
//! ```
//!
//! OUT_DIR gets `model_outputs.json` (claude-2.1's answers, with herd's extra fields),
//! `reference_outputs.json` (the eval set's reference), `weighted_alpaca_eval_gpt4_turbo/
//! annotations.json` (claude-2.1's judged pairs as herd writes them, with a few values the
//! oracle file lacks) and `leaderboard.csv` (herd's metrics of those annotations).

use std::path::PathBuf;

use herd_core::formats::{read_annotations, write_annotations, write_model_outputs, ModelOutput};
use herd_report::{build_report, ReportOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out =
        PathBuf::from(args.next().ok_or("usage: alpaca_eval_interop OUT_DIR [SHARED_DATA_DIR]")?);
    let shared = args.next().map(PathBuf::from).unwrap_or_else(|| "../shared/data".into());
    let annotator = "weighted_alpaca_eval_gpt4_turbo";

    let mut annotations = read_annotations(
        shared.join(format!("oracle/results/claude-2.1/{annotator}/annotations.json.gz")),
    )?;
    // What herd's own judge writes and the oracle file does not have: a string raw
    // completion, and text outside ASCII and the BMP (lengths count code points in both).
    annotations[0].raw_completion =
        Some(serde_json::Value::String("(b) </raw> \"quoted\" \\ é".into()));
    annotations[1].output_2.push_str(" — ünïcödé 😀 / done");

    let model_outputs: Vec<ModelOutput> = annotations
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut extra = serde_json::Map::new();
            extra.insert("output_tokens".into(), serde_json::json!(a.output_2.len() / 4));
            extra.insert("seconds".into(), serde_json::json!(0.125 * i as f64));
            ModelOutput {
                instruction: a.instruction.clone(),
                output: a.output_2.clone(),
                generator: a.generator_2.clone(),
                dataset: a.dataset.clone(),
                extra,
            }
        })
        .collect();
    let reference: Vec<ModelOutput> = annotations
        .iter()
        .map(|a| ModelOutput {
            instruction: a.instruction.clone(),
            output: a.output_1.clone(),
            generator: a.generator_1.clone(),
            dataset: a.dataset.clone(),
            extra: Default::default(),
        })
        .collect();

    std::fs::create_dir_all(out.join(annotator))?;
    write_model_outputs(out.join("model_outputs.json"), &model_outputs)?;
    write_model_outputs(out.join("reference_outputs.json"), &reference)?;
    let annotations_path = out.join(annotator).join("annotations.json");
    write_annotations(&annotations_path, &annotations)?;

    let report = build_report(
        &[annotations_path],
        &ReportOptions { error_samples: 0, ..ReportOptions::default() },
    )?;
    std::fs::write(out.join("leaderboard.csv"), report.leaderboard_csv())?;
    println!("wrote herd's files under {}", out.display());
    Ok(())
}
