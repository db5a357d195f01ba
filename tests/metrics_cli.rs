//! `herd metrics` end to end on an oracle file (`shared/data/oracle`): the JSON output,
//! the diagnostics on stderr, the calibration folder and the positional lookup.

use std::path::PathBuf;
use std::process::{Command, Output};

const KEYS: [&str; 10] = [
    "win_rate",
    "standard_error",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_total",
    "discrete_win_rate",
    "avg_length",
    "length_controlled_winrate",
    "lc_standard_error",
];

fn shared_dir() -> PathBuf {
    std::env::var_os("HERD_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn annotations(model: &str) -> PathBuf {
    shared_dir()
        .join("data/oracle/results")
        .join(model)
        .join("weighted_alpaca_eval_gpt4_turbo/annotations.json.gz")
}

/// alpaca_eval's figure for `model` from `expected_metrics.csv` (no quoted fields there).
fn expected(model: &str, column: &str) -> f64 {
    let text =
        std::fs::read_to_string(shared_dir().join("data/oracle/expected_metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == column).unwrap();
    let row = lines.find(|l| l.split(',').next() == Some(model)).unwrap();
    row.split(',').nth(at).unwrap().parse().unwrap()
}

fn herd_metrics(args: &[&str]) -> Output {
    let output =
        Command::new(env!("CARGO_BIN_EXE_herd")).arg("metrics").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "herd metrics failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn json_output_is_the_ten_leaderboard_numbers_and_diagnostics_go_to_stderr() {
    let file = annotations("phi-2");
    let output = herd_metrics(&[
        "--annotations",
        file.to_str().unwrap(),
        "--positional-difficulty",
        "--json",
    ]);
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    let object = json.as_object().unwrap();
    assert_eq!(object.keys().map(String::as_str).collect::<Vec<_>>(), KEYS);
    assert_eq!(json["n_total"].as_u64(), Some(803));
    for key in ["win_rate", "discrete_win_rate"] {
        assert!((json[key].as_f64().unwrap() - expected("phi-2", key)).abs() < 1e-6, "{key}");
    }
    let lc = json["length_controlled_winrate"].as_f64().unwrap();
    assert!((lc - expected("phi-2", "length_controlled_winrate")).abs() < 0.05, "LC {lc}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("embedded reconstruction"), "{stderr}");
    assert!(stderr.contains("by row position"), "{stderr}");
    assert!(stderr.contains("row 131"), "the gap is pointed out: {stderr}");
}

#[test]
fn a_calibration_folder_is_used_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let reconstructed = shared_dir().join("data/alpaca_eval");
    std::fs::copy(
        reconstructed.join("df_gamed_reconstructed.csv"),
        dir.path().join("df_gamed.csv"),
    )
    .unwrap();
    std::fs::copy(
        reconstructed.join("instruction_difficulty_reconstructed.csv"),
        dir.path().join("instruction_difficulty.csv"),
    )
    .unwrap();
    let file = annotations("falcon-7b-instruct");
    let embedded = herd_metrics(&["--annotations", file.to_str().unwrap(), "--json"]);
    let official = herd_metrics(&[
        "--annotations",
        file.to_str().unwrap(),
        "--calibration",
        dir.path().to_str().unwrap(),
    ]);
    let summary = String::from_utf8(official.stdout).unwrap();
    assert!(
        summary.contains(&format!("official files from {}", dir.path().display())),
        "{summary}"
    );
    let json: serde_json::Value = serde_json::from_slice(&embedded.stdout).unwrap();
    let lc = format!("{:.2}", json["length_controlled_winrate"].as_f64().unwrap());
    assert!(summary.contains(&lc), "same calibration, same LC {lc}: {summary}");
}

#[test]
fn a_missing_calibration_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = annotations("falcon-7b-instruct");
    let output = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args([
            "metrics",
            "--annotations",
            file.to_str().unwrap(),
            "--calibration",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("df_gamed.csv"));
}
