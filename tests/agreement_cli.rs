//! `herd agreement` end to end: two annotators over the oracle files (`shared/data/oracle`),
//! as a table and as JSON; folders pooled; nothing shared is an error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use herd_core::formats::{read_annotations, write_annotations};

fn results_dir() -> PathBuf {
    std::env::var_os("HERD_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join("data/oracle/results")
}

fn annotations(model: &str) -> PathBuf {
    results_dir().join(model).join("weighted_alpaca_eval_gpt4_turbo/annotations.json.gz")
}

fn herd(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herd")).arg("agreement").args(args).output().unwrap()
}

/// `model`'s file with every weighted preference rounded to a verdict (ties to 2), written
/// under `dir`.
fn rounded(model: &str, dir: &Path) -> PathBuf {
    let mut rows = read_annotations(annotations(model)).unwrap();
    for row in &mut rows {
        row.preference = row.preference.map(|p| if p < 1.5 { 1.0 } else { 2.0 });
        row.annotator = "rounded".into();
    }
    let path = dir.join(model).join("annotations.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_annotations(&path, &rows).unwrap();
    path
}

#[test]
fn two_annotators_on_one_model_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let b = rounded("gpt-3.5-turbo-1106", dir.path());
    let out = herd(&[&annotations("gpt-3.5-turbo-1106"), &b]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("A: weighted_alpaca_eval_gpt4_turbo (805 rows from 1 file(s))"),
        "{table}"
    );
    assert!(table.contains("B: rounded (805 rows"), "{table}");
    assert!(table.contains("pairs compared: 805 (805 with a preference on both sides)"), "{table}");

    let json = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["agreement", "--json"])
        .arg(annotations("gpt-3.5-turbo-1106"))
        .arg(&b)
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let agreement = value["agreement"].as_f64().unwrap();
    assert!(table.contains(&format!("agreement: {agreement:.2} ± ")), "{table}");
    assert!(agreement > 95.0 && agreement < 100.0, "{value}");
    assert_eq!(value["n_pairs"], 805);
    assert!(value["spearman"].is_null(), "one generator: no correlation");
}

#[test]
fn folders_are_pooled_and_win_rates_correlate_across_generators() {
    let dir = tempfile::tempdir().unwrap();
    let models = ["alpaca-7b", "claude-2.1", "gpt-3.5-turbo-1106", "vicuna-13b"];
    let weighted = dir.path().join("weighted");
    for model in models {
        let to = weighted.join(model).join("annotations.json.gz");
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(annotations(model), to).unwrap();
        rounded(model, &dir.path().join("rounded"));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["agreement", "--json"])
        .arg(&weighted)
        .arg(dir.path().join("rounded"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Pairs are distinct (instruction, output_1, output_2): a few answers repeat across models.
    let mut keys = std::collections::HashSet::new();
    for model in models {
        for row in read_annotations(annotations(model)).unwrap() {
            keys.insert((row.instruction, row.output_1, row.output_2));
        }
    }
    assert_eq!(value["n_pairs"], keys.len());
    assert_eq!(value["generators"].as_array().unwrap().len(), 4);
    // Rounding keeps the order of these four models.
    assert_eq!(value["spearman"].as_f64(), Some(1.0), "{value}");
}

#[test]
fn annotators_on_different_pairs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = read_annotations(annotations("alpaca-7b")).unwrap();
    for row in &mut rows {
        row.output_2.push_str(" (edited)");
    }
    let edited = dir.path().join("annotations.json");
    write_annotations(&edited, &rows).unwrap();
    let out = herd(&[&annotations("alpaca-7b"), &edited]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("share no (instruction, output_1, output_2) pair"), "{stderr}");
}
