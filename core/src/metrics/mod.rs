//! alpaca_eval 0.6.6's leaderboard metrics for one annotations file: the head-to-head
//! win rate (`get_winrate`), the average output length, and the length-controlled win
//! rate (`get_length_controlled_winrate` with the `length_controlled_v1` GLM), computed
//! to the same numbers.
//!
//! [`compute_metrics`] returns the ten leaderboard numbers ([`Metrics`]) together with
//! what a user needs to trust them ([`MetricsDiagnostics`]): which preferences were
//! dropped, which calibration and difficulty lookup the LC metric used, the chosen L1
//! strength and the GLM's weights, or why LC could not be computed.

mod cross_validation;
mod l1_logistic;
pub mod length_controlled;
mod mersenne_twister;
mod numeric;
pub mod preferences;
pub mod win_rate;

use serde::Serialize;

use crate::calibration::Calibration;
use crate::eval_set::EvalSet;
use crate::formats::annotations::Annotation;
pub use cross_validation::{default_cs, group_k_fold};
pub use length_controlled::{DifficultyLookup, GlmVariant, GlmWeights, LengthControlledFit, LengthControlledGlm};
pub use preferences::{DroppedPreference, PreferenceScreening};
pub use win_rate::{head_to_head, HeadToHead};

/// The leaderboard numbers, serialised with alpaca_eval's names in its order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub win_rate: f64,
    pub standard_error: f64,
    pub n_wins: usize,
    pub n_wins_base: usize,
    pub n_draws: usize,
    pub n_total: usize,
    pub discrete_win_rate: f64,
    /// `int(mean(len(output_2)))`, lengths in Unicode code points.
    pub avg_length: u64,
    /// `None` when the LC metric cannot be computed (the diagnostics say why).
    pub length_controlled_winrate: Option<f64>,
    pub lc_standard_error: Option<f64>,
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
        Self { calibration: Calibration::embedded(), difficulty_lookup: DifficultyLookup::default(), glm: GlmVariant::default() }
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
pub fn compute_metrics(annotations: &[Annotation], options: &MetricsOptions) -> Result<MetricsReport, MetricsError> {
    if annotations.is_empty() {
        return Err(MetricsError::NoAnnotations);
    }
    let preferences: Vec<Option<f64>> = annotations.iter().map(|a| a.preference).collect();
    let stats = head_to_head(&preferences);
    let glm = LengthControlledGlm { calibration: &options.calibration, lookup: options.difficulty_lookup, variant: options.glm };
    let length_controlled = glm.evaluate(annotations);
    let metrics = Metrics {
        win_rate: stats.win_rate,
        standard_error: stats.standard_error,
        n_wins: stats.n_wins,
        n_wins_base: stats.n_wins_base,
        n_draws: stats.n_draws,
        n_total: stats.n_total,
        discrete_win_rate: stats.discrete_win_rate,
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
    annotations.iter().enumerate().position(|(row, a)| eval_set.index_of(&a.instruction) != Some(row))
}

/// `int(mean(len(output_2)))` over all rows, lengths in Unicode code points.
fn average_length(annotations: &[Annotation]) -> u64 {
    let lengths: Vec<f64> = annotations.iter().map(|a| a.output_2.chars().count() as f64).collect();
    numeric::mean(&lengths) as u64
}
