//! alpaca_eval's length-controlled win rate (`get_length_controlled_winrate`, GLM
//! `length_controlled_v1`): a logistic model of each preference on
//!
//! ```text
//! tanh(std_delta_len) + instruction_difficulty + not_gamed_baseline   (no intercept)
//! ```
//!
//! where `std_delta_len` is (len(reference) − len(output)) over the file's sample standard
//! deviation of that difference, fitted with an L1 penalty chosen by cross-validation
//! together with the gamed-baseline rows of `df_gamed.csv` (weight 0.2 / 2 each), and then
//! asked what the model would win with no length difference: LC = 100 · mean(p̂).

use std::fmt;

use serde::Serialize;

use super::cross_validation::{fit_soft_label_logistic_cv, CrossValidationError, SoftLabelRow};
use super::numeric::{expit, mean, sample_std, standard_error_of_mean};
use super::preferences::draw_as_one_and_a_half;
use crate::calibration::Calibration;
use crate::eval_set::EvalSet;
use crate::formats::annotations::Annotation;

/// alpaca_eval's `regularize_to_baseline_lambda`, shared between its two gamed models.
const GAMED_BASELINE_LAMBDA: f64 = 0.2;
const N_GAMED_MODELS: f64 = 2.0;
const N_SPLITS: usize = 5;

/// How a row of the annotations file finds its instruction difficulty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifficultyLookup {
    /// By the row's instruction, through its eval-set position (herd's default).
    #[default]
    ByInstruction,
    /// By the row's position in the file, as alpaca_eval does: right only for files
    /// holding every eval-set instruction in eval-set order.
    Positional,
}

impl fmt::Display for DifficultyLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DifficultyLookup::ByInstruction => "by instruction",
            DifficultyLookup::Positional => "by row position (alpaca_eval)",
        })
    }
}

/// alpaca_eval's GLMs for the length-controlled win rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GlmVariant {
    /// `length_controlled_v1`, the leaderboard's: regularised towards the gamed baselines.
    #[default]
    LengthControlledV1,
    /// `length_controlled_noreg`: the same formula fitted on the model's rows alone.
    LengthControlledNoreg,
}

impl GlmVariant {
    pub fn name(self) -> &'static str {
        match self {
            GlmVariant::LengthControlledV1 => "length_controlled_v1",
            GlmVariant::LengthControlledNoreg => "length_controlled_noreg",
        }
    }
}

/// The fitted coefficients, named as in alpaca_eval's weights csv.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GlmWeights {
    /// `np.tanh(std_delta_len)`
    pub tanh_std_delta_len: f64,
    /// `instruction_difficulty`
    pub instruction_difficulty: f64,
    /// `not_gamed_baseline.astype(float)`
    pub not_gamed_baseline: f64,
}

/// The length-controlled win rate and how it was obtained.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LengthControlledFit {
    /// Percent.
    pub winrate: f64,
    pub standard_error: f64,
    pub weights: GlmWeights,
    /// The chosen L1 strength; `None` for the baseline judged against itself (no fit).
    pub chosen_c: Option<f64>,
    /// Rows the GLM was trained on (gamed rows included), before duplication.
    pub n_train_rows: usize,
    /// Each annotation row's predicted preference with the length term switched off
    /// (0..1, file order; the win rate is their mean, in percent). For the baseline against
    /// itself, 0.5 for every row. Not serialised: the paired comparisons read it.
    #[serde(skip)]
    pub per_row: Vec<f64>,
}

/// Why the length-controlled win rate cannot be computed for a file. Never fatal for
/// the other metrics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LengthControlledUnavailable {
    #[error("the file has no rows")]
    NoRows,
    #[error("no row has a parsed preference, so there is nothing to fit")]
    NoJudgedRows,
    #[error("the file mixes models under evaluation ({0}); the GLM fits one model")]
    SeveralModels(String),
    #[error(
        "row {row}: instruction is not in the eval set, so it has no difficulty \
         (--positional-difficulty reads it by row position, as alpaca_eval does)"
    )]
    InstructionNotInEvalSet { row: usize },
    #[error("row {row}: the calibration has no difficulty for this {key}")]
    NoDifficulty { row: usize, key: &'static str },
    #[error("the length difference between the outputs has no spread (sample std {0}), so it cannot be standardised")]
    NoLengthSpread(f64),
    #[error("cross-validation: {0}")]
    CrossValidation(#[from] CrossValidationError),
}

/// The GLM with its calibration and lookup choices.
pub struct LengthControlledGlm<'a> {
    pub calibration: &'a Calibration,
    pub lookup: DifficultyLookup,
    pub variant: GlmVariant,
}

impl LengthControlledGlm<'_> {
    /// The LC win rate of the file's model against its reference.
    pub fn evaluate(
        &self,
        annotations: &[Annotation],
    ) -> Result<LengthControlledFit, LengthControlledUnavailable> {
        let first = annotations.first().ok_or(LengthControlledUnavailable::NoRows)?;
        let mut models: Vec<&str> = annotations.iter().map(|a| a.generator_2.as_str()).collect();
        models.sort_unstable();
        models.dedup();
        if models.len() > 1 {
            return Err(LengthControlledUnavailable::SeveralModels(models.join(", ")));
        }
        // alpaca_eval compares with the first reference generator it meets.
        if first.generator_2 == first.generator_1 {
            return Ok(baseline_against_itself(annotations));
        }

        // alpaca_eval would fit the gamed rows alone and report their model; herd
        // reports nothing rather than a number that says nothing about this model.
        if annotations.iter().all(|a| draw_as_one_and_a_half(a.preference).is_none()) {
            return Err(LengthControlledUnavailable::NoJudgedRows);
        }
        let difficulties = self.difficulties(annotations)?;
        let std_delta_len = standardised_length_differences(annotations)?;
        let rows = self.training_rows(annotations, &difficulties, &std_delta_len);
        let fit = fit_soft_label_logistic_cv(&rows, N_SPLITS)?;
        let weights = GlmWeights {
            tanh_std_delta_len: fit.weights[0],
            instruction_difficulty: fit.weights[1],
            not_gamed_baseline: fit.weights[2],
        };

        // The model's predicted preference with the length term switched off.
        let predicted: Vec<f64> = difficulties
            .iter()
            .map(|&difficulty| {
                let features = [0.0f64.tanh(), difficulty, 1.0];
                expit(features.iter().zip(&fit.weights).fold(0.0, |acc, (x, w)| acc + x * w))
            })
            .collect();
        Ok(LengthControlledFit {
            winrate: mean(&predicted) * 100.0,
            standard_error: standard_error_of_mean(&predicted) * 100.0,
            weights,
            chosen_c: Some(fit.chosen_c),
            n_train_rows: rows.len(),
            per_row: predicted,
        })
    }

    /// The instruction difficulty of every row of the file.
    fn difficulties(
        &self,
        annotations: &[Annotation],
    ) -> Result<Vec<f64>, LengthControlledUnavailable> {
        match self.lookup {
            DifficultyLookup::Positional => (0..annotations.len())
                .map(|row| {
                    self.calibration.difficulty_at_row(row).ok_or(
                        LengthControlledUnavailable::NoDifficulty { row, key: "row position" },
                    )
                })
                .collect(),
            DifficultyLookup::ByInstruction => {
                let eval_set = EvalSet::embedded();
                annotations
                    .iter()
                    .enumerate()
                    .map(|(row, annotation)| {
                        let index = eval_set
                            .index_of(&annotation.instruction)
                            .ok_or(LengthControlledUnavailable::InstructionNotInEvalSet { row })?;
                        self.calibration.difficulty_of_instruction(index).ok_or(
                            LengthControlledUnavailable::NoDifficulty { row, key: "instruction" },
                        )
                    })
                    .collect()
            }
        }
    }

    /// The gamed-baseline rows (for `length_controlled_v1`), then the file's rows; rows
    /// without a preference are left out, as alpaca_eval drops NaN preferences before
    /// fitting. (Out-of-range preferences stay in, as they do in alpaca_eval.)
    fn training_rows(
        &self,
        annotations: &[Annotation],
        difficulties: &[f64],
        std_delta_len: &[f64],
    ) -> Vec<SoftLabelRow> {
        let gamed: &[_] = match self.variant {
            GlmVariant::LengthControlledV1 => self.calibration.gamed_rows(),
            GlmVariant::LengthControlledNoreg => &[],
        };
        let gamed_weight = GAMED_BASELINE_LAMBDA / N_GAMED_MODELS;
        let gamed_rows = gamed.iter().filter_map(|g| {
            let probability = g.preference?;
            let weight = if g.not_gamed_baseline { 1.0 } else { gamed_weight };
            let features = vec![
                g.std_delta_len.tanh(),
                g.instruction_difficulty,
                if g.not_gamed_baseline { 1.0 } else { 0.0 },
            ];
            Some(SoftLabelRow { features, probability, weight })
        });
        let own_rows = annotations.iter().zip(difficulties).zip(std_delta_len).filter_map(
            |((annotation, &difficulty), &s)| {
                let probability = draw_as_one_and_a_half(annotation.preference)? - 1.0;
                Some(SoftLabelRow {
                    features: vec![s.tanh(), difficulty, 1.0],
                    probability,
                    weight: 1.0,
                })
            },
        );
        gamed_rows.chain(own_rows).collect()
    }
}

/// (len(output_1) − len(output_2)) / sample std, lengths in Unicode code points.
fn standardised_length_differences(
    annotations: &[Annotation],
) -> Result<Vec<f64>, LengthControlledUnavailable> {
    let deltas: Vec<f64> = annotations
        .iter()
        .map(|a| a.output_1.chars().count() as f64 - a.output_2.chars().count() as f64)
        .collect();
    let spread = sample_std(&deltas);
    if !(spread.is_finite() && spread > 0.0) {
        return Err(LengthControlledUnavailable::NoLengthSpread(spread));
    }
    Ok(deltas.iter().map(|d| d / spread).collect())
}

/// alpaca_eval's special case: every judged row predicts 0.5, all weights are zero.
fn baseline_against_itself(annotations: &[Annotation]) -> LengthControlledFit {
    let predicted: Vec<f64> = annotations
        .iter()
        .filter(|a| draw_as_one_and_a_half(a.preference).is_some())
        .map(|_| 0.5)
        .collect();
    LengthControlledFit {
        winrate: mean(&predicted) * 100.0,
        standard_error: standard_error_of_mean(&predicted) * 100.0,
        weights: GlmWeights {
            tanh_std_delta_len: 0.0,
            instruction_difficulty: 0.0,
            not_gamed_baseline: 0.0,
        },
        chosen_c: None,
        n_train_rows: 0,
        per_row: vec![0.5; annotations.len()],
    }
}
