//! alpaca_eval 0.6.6's leaderboard metrics for one annotations file: the head-to-head
//! win rate (`get_winrate`), the average output length, and the length-controlled win
//! rate (`get_length_controlled_winrate` with the `length_controlled_v1` GLM), computed
//! to the same numbers.
//!
//! [`compute_metrics`] returns the ten leaderboard numbers ([`Metrics`]) together with
//! what a user needs to trust them ([`MetricsDiagnostics`]): which preferences were
//! dropped, which calibration and difficulty lookup the LC metric used, the chosen L1
//! strength and the GLM's weights, or why LC could not be computed.

pub mod agreement;
mod cross_validation;
pub mod judge_bias;
mod l1_logistic;
pub mod length_controlled;
mod numeric;
pub mod paired;
pub mod preferences;
pub mod win_rate;

use serde::{Deserialize, Serialize};

use crate::calibration::Calibration;
use crate::eval_set::EvalSet;
use crate::formats::annotations::Annotation;
pub use agreement::{agreement, Agreement};
pub use cross_validation::{default_cs, group_k_fold};
pub use judge_bias::{JudgeBias, Share};
pub use length_controlled::{
    DifficultyLookup, GlmVariant, GlmWeights, LengthControlledFit, LengthControlledGlm,
};
pub use paired::{compare_paired, PairedComparison, PairedDifference, PairedSide};
pub use preferences::{DroppedPreference, PreferenceScreening};
pub use win_rate::{head_to_head, HeadToHead};

/// The ten leaderboard numbers, serialised with alpaca_eval's names in its order: the
/// head-to-head seven, the average length and the LC win rate with its standard error.
/// The one declaration of these fields: the leaderboard row
/// ([`crate::formats::LeaderboardRow`]) is a generator's name, its `Metrics` and a `mode`.
///
/// Reads as its [`HeadToHead`] (`metrics.n_wins`), through `Deref`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(flatten)]
    pub head_to_head: HeadToHead,
    /// `int(mean(len(output_2)))`, lengths in Unicode code points.
    pub avg_length: u64,
    /// `None` when the LC metric cannot be computed (the diagnostics say why).
    pub length_controlled_winrate: Option<f64>,
    pub lc_standard_error: Option<f64>,
}

impl std::ops::Deref for Metrics {
    type Target = HeadToHead;

    fn deref(&self) -> &HeadToHead {
        &self.head_to_head
    }
}

/// How to compute the metrics.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    pub calibration: Calibration,
    pub difficulty_lookup: DifficultyLookup,
    pub glm: GlmVariant,
}

impl Default for MetricsOptions {
    /// The embedded calibration, difficulty by instruction, `length_controlled_v1`.
    fn default() -> Self {
        Self {
            calibration: Calibration::embedded(),
            difficulty_lookup: DifficultyLookup::default(),
            glm: GlmVariant::default(),
        }
    }
}

/// What stands behind the numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsDiagnostics {
    /// Rows the win rate drops: unparsed (null) preferences and out-of-range ones.
    pub preferences: PreferenceScreening,
    /// Where the LC calibration came from, in words.
    pub calibration_source: String,
    pub difficulty_lookup: DifficultyLookup,
    pub glm: &'static str,
    /// The LC fit, when there was one.
    pub length_controlled: Option<LengthControlledFit>,
    /// Why there is no LC figure, when there is none.
    pub length_controlled_unavailable: Option<String>,
    /// The first row whose instruction is not the eval-set instruction at that position
    /// (a file with gaps or in another order). From there on alpaca_eval's positional
    /// lookup gives rows another instruction's difficulty.
    pub first_row_out_of_eval_order: Option<usize>,
}

impl MetricsDiagnostics {
    pub fn chosen_c(&self) -> Option<f64> {
        self.length_controlled.as_ref().and_then(|fit| fit.chosen_c)
    }

    pub fn glm_weights(&self) -> Option<GlmWeights> {
        self.length_controlled.as_ref().map(|fit| fit.weights)
    }
}

/// The metrics of one annotations file and their diagnostics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsReport {
    pub metrics: Metrics,
    pub diagnostics: MetricsDiagnostics,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("no annotations: there is nothing to compute metrics of")]
    NoAnnotations,
}

/// alpaca_eval's metrics of one model's annotations, row `i` being the `i`-th judged pair.
pub fn compute_metrics(
    annotations: &[Annotation],
    options: &MetricsOptions,
) -> Result<MetricsReport, MetricsError> {
    if annotations.is_empty() {
        return Err(MetricsError::NoAnnotations);
    }
    let preferences: Vec<Option<f64>> = annotations.iter().map(|a| a.preference).collect();
    let stats = head_to_head(&preferences);
    let glm = LengthControlledGlm {
        calibration: &options.calibration,
        lookup: options.difficulty_lookup,
        variant: options.glm,
    };
    let length_controlled = glm.evaluate(annotations);
    let metrics = Metrics {
        head_to_head: stats,
        avg_length: average_length(annotations),
        length_controlled_winrate: length_controlled.as_ref().ok().map(|fit| fit.winrate),
        lc_standard_error: length_controlled.as_ref().ok().map(|fit| fit.standard_error),
    };
    let diagnostics = MetricsDiagnostics {
        preferences: PreferenceScreening::of(&preferences),
        calibration_source: options.calibration.source().to_string(),
        difficulty_lookup: options.difficulty_lookup,
        glm: options.glm.name(),
        length_controlled_unavailable: length_controlled.as_ref().err().map(|why| why.to_string()),
        length_controlled: length_controlled.ok(),
        first_row_out_of_eval_order: first_row_out_of_eval_order(annotations),
    };
    Ok(MetricsReport { metrics, diagnostics })
}

fn first_row_out_of_eval_order(annotations: &[Annotation]) -> Option<usize> {
    let eval_set = EvalSet::embedded();
    annotations
        .iter()
        .enumerate()
        .position(|(row, a)| eval_set.index_of(&a.instruction) != Some(row))
}

/// `int(mean(len(output_2)))` over all rows, lengths in Unicode code points.
fn average_length(annotations: &[Annotation]) -> u64 {
    let lengths: Vec<f64> = annotations.iter().map(|a| a.output_2.chars().count() as f64).collect();
    numeric::mean(&lengths) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The eval set judged against a model that answers with a prefix of the reference:
    /// the shorter the prefix, the more the judge prefers the reference.
    fn truncating_model() -> Vec<Annotation> {
        EvalSet::embedded()
            .rows()
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let keep = [0.2, 0.5, 0.9, 1.0][i % 4];
                let n = (row.output.chars().count() as f64 * keep) as usize;
                Annotation {
                    instruction: row.instruction.clone(),
                    output_1: row.output.clone(),
                    generator_1: row.generator.clone(),
                    dataset: row.dataset.clone(),
                    output_2: row.output.chars().take(n).collect(),
                    generator_2: "truncator".into(),
                    annotator: "test".into(),
                    preference: Some(1.0 + keep * 0.6 + if i % 7 == 0 { 0.3 } else { 0.0 }),
                    raw_completion: None,
                    time_per_example: None,
                    price_per_example: None,
                    extra: Default::default(),
                }
            })
            .collect()
    }

    #[test]
    fn unparsed_and_out_of_range_preferences_are_reported_and_never_fatal() {
        let mut rows = truncating_model();
        rows[3].preference = None;
        rows[10].preference = None;
        rows[20].preference = Some(2.5);
        rows[30].preference = Some(0.0);
        let report = compute_metrics(&rows, &MetricsOptions::default()).unwrap();
        let screening = &report.diagnostics.preferences;
        assert_eq!(screening.unparsed_rows, vec![3, 10]);
        assert_eq!(
            screening.out_of_range,
            vec![DroppedPreference { row: 20, preference: Some(2.5) }]
        );
        assert_eq!(report.metrics.n_total, 805 - 3);
        assert!(report.metrics.n_draws >= 1, "0 counts as a draw");
        let lc = report.metrics.length_controlled_winrate.expect("LC despite the bad rows");
        // Controlling for length credits the truncating model with more than its raw wins.
        assert!(lc > report.metrics.win_rate, "LC {lc} vs win rate {}", report.metrics.win_rate);
        assert!(report.diagnostics.chosen_c().is_some());
    }

    #[test]
    fn an_instruction_outside_the_eval_set_costs_the_lc_figure_only() {
        let mut rows = truncating_model();
        rows[5].instruction.push_str(" (edited)");
        let report = compute_metrics(&rows, &MetricsOptions::default()).unwrap();
        assert_eq!(report.metrics.length_controlled_winrate, None);
        assert_eq!(report.metrics.lc_standard_error, None);
        let why = report.diagnostics.length_controlled_unavailable.as_deref().unwrap();
        assert!(why.contains("row 5"), "{why}");
        assert!(report.metrics.win_rate.is_finite());
        assert_eq!(report.diagnostics.first_row_out_of_eval_order, Some(5));
        // alpaca_eval's positional lookup does not look at the instruction.
        let positional = MetricsOptions {
            difficulty_lookup: DifficultyLookup::Positional,
            ..Default::default()
        };
        assert!(compute_metrics(&rows, &positional)
            .unwrap()
            .metrics
            .length_controlled_winrate
            .is_some());
    }

    #[test]
    fn a_file_mixing_models_gets_a_win_rate_but_no_lc() {
        let mut rows = truncating_model();
        rows[0].generator_2 = "another".into();
        let report = compute_metrics(&rows, &MetricsOptions::default()).unwrap();
        assert!(report
            .diagnostics
            .length_controlled_unavailable
            .as_deref()
            .unwrap()
            .contains("another, truncator"));
        assert_eq!(report.metrics.n_total, 805);
    }

    #[test]
    fn a_file_with_no_parsed_preference_has_no_rates_but_is_not_an_error() {
        let mut rows = truncating_model();
        for row in &mut rows {
            row.preference = None;
        }
        let report = compute_metrics(&rows, &MetricsOptions::default()).unwrap();
        assert_eq!(report.diagnostics.preferences.n_unparsed(), 805);
        assert_eq!(report.metrics.n_total, 0);
        assert!(report.metrics.win_rate.is_nan());
        assert_eq!(report.metrics.length_controlled_winrate, None);
        assert!(report
            .diagnostics
            .length_controlled_unavailable
            .as_deref()
            .unwrap()
            .contains("no row has a parsed preference"));
        assert!(report.metrics.avg_length > 0);
        let json = serde_json::to_value(&report.metrics).unwrap();
        assert!(json["win_rate"].is_null() && json["length_controlled_winrate"].is_null());
    }

    #[test]
    fn no_annotations_is_an_error() {
        assert_eq!(
            compute_metrics(&[], &MetricsOptions::default()),
            Err(MetricsError::NoAnnotations)
        );
    }

    #[test]
    fn metrics_serialise_as_the_ten_leaderboard_keys_in_order() {
        let report = compute_metrics(&truncating_model(), &MetricsOptions::default()).unwrap();
        let json = serde_json::to_value(&report.metrics).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "win_rate",
                "standard_error",
                "n_wins",
                "n_wins_base",
                "n_draws",
                "n_total",
                "discrete_win_rate",
                "avg_length",
                "length_controlled_winrate",
                "lc_standard_error"
            ]
        );
        assert!(json["n_wins"].is_u64() && json["avg_length"].is_u64());
    }
}
