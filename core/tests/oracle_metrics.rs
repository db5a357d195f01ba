//! herd's metrics against what alpaca_eval 0.6.6 computes on 12 real annotation files
//! (`shared/data/oracle`, see its README): the win-rate figures to 1e-6, the
//! length-controlled ones to 0.05 points, the GLM's weights, and the difficulty lookups.

mod common;

use std::collections::HashMap;
use std::io::Read;

use common::oracle_dir;
use herd_core::calibration::Calibration;
use herd_core::formats::annotations::Annotation;
use herd_core::metrics::{
    compute_metrics, DifficultyLookup, GlmVariant, MetricsOptions, MetricsReport,
};

const NON_LC_TOLERANCE: f64 = 1e-6;
const LC_TOLERANCE: f64 = 0.05;
/// herd follows liblinear's iterations, so its weights agree far below the solver's
/// stopping tolerance; a looser match would mean another stopping point.
const WEIGHT_TOLERANCE: f64 = 1e-9;
/// The oracle file that lacks eval positions 131 and 209.
const FILE_WITH_GAPS: &str = "phi-2";

/// One row of `expected_metrics.csv`, by column name.
struct Expected(HashMap<String, String>);

impl Expected {
    fn float(&self, column: &str) -> f64 {
        self.0[column].parse().unwrap_or_else(|_| panic!("{column}: {:?}", self.0[column]))
    }

    fn count(&self, column: &str) -> u64 {
        self.0[column].parse().unwrap_or_else(|_| panic!("{column}: {:?}", self.0[column]))
    }

    fn model(&self) -> &str {
        &self.0["model"]
    }
}

fn expected_rows() -> Vec<Expected> {
    let mut reader = csv::Reader::from_path(oracle_dir().join("expected_metrics.csv"))
        .expect("expected_metrics.csv");
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<Expected> = reader
        .records()
        .map(|r| {
            Expected(
                headers.iter().map(String::from).zip(r.unwrap().iter().map(String::from)).collect(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 12, "the oracle has 12 models");
    rows
}

fn annotations(model: &str) -> Vec<Annotation> {
    let path = oracle_dir()
        .join("results")
        .join(model)
        .join("weighted_alpaca_eval_gpt4_turbo/annotations.json.gz");
    let mut json = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .read_to_string(&mut json)
    .unwrap();
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn reconstructed_calibration() -> Calibration {
    let dir = oracle_dir().join("../alpaca_eval");
    Calibration::from_files(
        dir.join("df_gamed_reconstructed.csv"),
        dir.join("instruction_difficulty_reconstructed.csv"),
    )
    .expect("the reconstructed calibration in shared/")
}

fn metrics(
    model: &str,
    rows: &[Annotation],
    lookup: DifficultyLookup,
    glm: GlmVariant,
) -> MetricsReport {
    let options =
        MetricsOptions { calibration: Calibration::embedded(), difficulty_lookup: lookup, glm };
    compute_metrics(rows, &options).unwrap_or_else(|e| panic!("{model}: {e}"))
}

/// The lookup that reproduces alpaca_eval: by instruction works for full files, a file
/// with gaps needs alpaca_eval's positional lookup.
fn alpaca_eval_lookup(model: &str) -> DifficultyLookup {
    if model == FILE_WITH_GAPS {
        DifficultyLookup::Positional
    } else {
        DifficultyLookup::ByInstruction
    }
}

fn assert_close(model: &str, what: &str, ours: f64, expected: f64, tolerance: f64) {
    assert!(
        (ours - expected).abs() <= tolerance,
        "{model}: {what} = {ours}, alpaca_eval {expected} (|Δ| > {tolerance})"
    );
}

#[test]
fn win_rate_counts_and_avg_length_match_alpaca_eval_on_every_oracle_file() {
    for expected in expected_rows() {
        let model = expected.model();
        let rows = annotations(model);
        assert_eq!(rows.len() as u64, expected.count("n_rows"), "{model}");
        let report =
            metrics(model, &rows, alpaca_eval_lookup(model), GlmVariant::LengthControlledV1);
        let m = &report.metrics;
        for (what, ours) in [
            ("win_rate", m.win_rate),
            ("standard_error", m.standard_error),
            ("discrete_win_rate", m.discrete_win_rate),
        ] {
            assert_close(model, what, ours, expected.float(what), NON_LC_TOLERANCE);
        }
        assert_eq!(m.n_wins, expected.count("n_wins"), "{model}: n_wins");
        assert_eq!(m.n_wins_base, expected.count("n_wins_base"), "{model}: n_wins_base");
        assert_eq!(m.n_draws, expected.count("n_draws"), "{model}: n_draws");
        assert_eq!(m.n_total, expected.count("n_total"), "{model}: n_total");
        assert_eq!(m.avg_length, expected.count("avg_length"), "{model}: avg_length");
        assert_eq!(
            report.diagnostics.preferences.n_dropped(),
            0,
            "{model}: the oracle files have no bad preference"
        );
    }
}

#[test]
fn length_controlled_win_rate_matches_alpaca_eval_on_every_oracle_file() {
    let mut worst = (String::new(), 0.0f64);
    for expected in expected_rows() {
        let model = expected.model();
        let report = metrics(
            model,
            &annotations(model),
            alpaca_eval_lookup(model),
            GlmVariant::LengthControlledV1,
        );
        let lc = report.metrics.length_controlled_winrate.unwrap_or_else(|| {
            panic!("{model}: no LC: {:?}", report.diagnostics.length_controlled_unavailable)
        });
        let se = report.metrics.lc_standard_error.unwrap();
        assert_close(
            model,
            "length_controlled_winrate",
            lc,
            expected.float("length_controlled_winrate"),
            LC_TOLERANCE,
        );
        assert_close(
            model,
            "lc_standard_error",
            se,
            expected.float("lc_standard_error"),
            LC_TOLERANCE,
        );
        let delta = (lc - expected.float("length_controlled_winrate")).abs();
        if delta >= worst.1 {
            worst = (model.to_string(), delta);
        }
    }
    eprintln!("largest |ΔLC| against alpaca_eval: {} ({:.2e})", worst.0, worst.1);
}

#[test]
fn glm_weights_match_alpaca_evals_fitted_coefficients() {
    for expected in expected_rows() {
        let model = expected.model();
        let report = metrics(
            model,
            &annotations(model),
            alpaca_eval_lookup(model),
            GlmVariant::LengthControlledV1,
        );
        let weights = report.diagnostics.glm_weights().expect("a fit");
        for (what, ours) in [
            ("glm_w_tanh_std_delta_len", weights.tanh_std_delta_len),
            ("glm_w_instruction_difficulty", weights.instruction_difficulty),
            ("glm_w_not_gamed_baseline", weights.not_gamed_baseline),
        ] {
            assert_close(model, what, ours, expected.float(what), WEIGHT_TOLERANCE);
        }
    }
}

#[test]
fn baseline_against_itself_is_fifty_with_no_error_and_no_fit() {
    let report = metrics(
        "gpt4_1106_preview",
        &annotations("gpt4_1106_preview"),
        DifficultyLookup::ByInstruction,
        GlmVariant::LengthControlledV1,
    );
    assert_eq!(report.metrics.length_controlled_winrate, Some(50.0));
    assert_eq!(report.metrics.lc_standard_error, Some(0.0));
    assert_eq!(report.diagnostics.chosen_c(), None);
}

#[test]
fn unregularised_glm_matches_alpaca_evals_noreg_variant() {
    for expected in expected_rows() {
        let model = expected.model();
        let report = metrics(
            model,
            &annotations(model),
            alpaca_eval_lookup(model),
            GlmVariant::LengthControlledNoreg,
        );
        let lc = report.metrics.length_controlled_winrate.expect("an LC figure");
        assert_close(
            model,
            "length_controlled_winrate_noreg",
            lc,
            expected.float("length_controlled_winrate_noreg"),
            LC_TOLERANCE,
        );
        let se = report.metrics.lc_standard_error.unwrap();
        assert_close(
            model,
            "lc_standard_error_noreg",
            se,
            expected.float("lc_standard_error_noreg"),
            LC_TOLERANCE,
        );
    }
}

#[test]
fn difficulty_by_instruction_equals_positional_for_full_files_and_differs_for_phi_2() {
    for expected in expected_rows() {
        let model = expected.model();
        let rows = annotations(model);
        let by_instruction =
            metrics(model, &rows, DifficultyLookup::ByInstruction, GlmVariant::LengthControlledV1);
        let positional =
            metrics(model, &rows, DifficultyLookup::Positional, GlmVariant::LengthControlledV1);
        if model == FILE_WITH_GAPS {
            let (a, b) = (
                by_instruction.metrics.length_controlled_winrate.unwrap(),
                positional.metrics.length_controlled_winrate.unwrap(),
            );
            assert!(
                (a - b).abs() > 1e-9,
                "{model}: the lookups should disagree after the gap ({a} vs {b})"
            );
            // And only the positional one is alpaca_eval's.
            assert!(
                (b - expected.float("length_controlled_winrate")).abs()
                    < (a - expected.float("length_controlled_winrate")).abs()
            );
        } else {
            assert_eq!(rows.len(), 805);
            assert_eq!(
                by_instruction.metrics, positional.metrics,
                "{model}: full files in eval order"
            );
        }
    }
}

#[test]
fn the_embedded_calibration_is_the_oracles_reconstruction() {
    let shipped = Calibration::embedded();
    let oracle = reconstructed_calibration();
    assert_eq!(shipped.gamed_rows(), oracle.gamed_rows());
    assert_eq!(shipped.instruction_difficulty(), oracle.instruction_difficulty());
}
