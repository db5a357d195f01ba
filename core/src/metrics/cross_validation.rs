//! Choosing the L1 strength of the LC GLM as alpaca_eval's `fit_LogisticRegressionCV`
//! does with scikit-learn's `LogisticRegressionCV(Cs=10, penalty="l1",
//! solver="liblinear", fit_intercept=False, random_state=123, cv=GroupKFold(5))`:
//!
//! - every soft-labelled row `(x, p, w)` becomes two weighted instances, `(x, y=1)` with
//!   weight `p·w` and `(x, y=0)` with weight `(1−p)·w`, both in the row's group;
//! - for each of the 5 group folds and each C of `logspace(-4, 4, 10)` a liblinear fit on
//!   the other folds is scored on the fold with alpaca_eval's weighted soft log loss;
//! - the C with the highest score summed over folds wins (the first one on ties) and the
//!   model is refit on all rows with it.

use super::l1_logistic::{Instance, L1LogisticProblem};
use super::numeric::{expit, mean};
use crate::mersenne_twister::LiblinearSeeds;

/// scikit-learn's defaults that the LC fit keeps.
const N_CS: usize = 10;
const TOLERANCE: f64 = 1e-4;
const MAX_NEWTON_STEPS: usize = 100;
/// alpaca_eval's `random_state`.
const RANDOM_STATE: u32 = 123;
/// Probabilities are clipped this far from 0 and 1 before the log loss.
const LOG_LOSS_EPSILON: f64 = 1e-15;

/// One training row of the GLM: features, soft label in [0, 1], weight.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftLabelRow {
    pub features: Vec<f64>,
    pub probability: f64,
    pub weight: f64,
}

/// `np.logspace(-4, 4, n)`, as numpy computes it (start + i·step, the last one exact).
pub fn default_cs(n: usize) -> Vec<f64> {
    let step = 8.0 / (n - 1) as f64;
    (0..n)
        .map(|i| if i + 1 == n { 4.0 } else { i as f64 * step + -4.0 })
        .map(|e| 10f64.powf(e))
        .collect()
}

/// scikit-learn ≥ 1.6 `GroupKFold(n_splits).split`: the test indices of each fold.
/// Groups, sorted by label, are taken largest first (a stable sort, reversed, so equal
/// sizes come last label first) and each goes to the fold holding fewest samples so far.
pub fn group_k_fold(groups: &[usize], n_splits: usize) -> Vec<Vec<usize>> {
    let mut labels: Vec<usize> = groups.to_vec();
    labels.sort_unstable();
    labels.dedup();
    let group_of = |label: usize| labels.binary_search(&label).expect("label comes from groups");
    let mut sizes = vec![0usize; labels.len()];
    for &g in groups {
        sizes[group_of(g)] += 1;
    }
    let mut by_size: Vec<usize> = (0..labels.len()).collect();
    by_size.sort_by_key(|&g| sizes[g]); // stable
    by_size.reverse();
    let mut fold_sizes = vec![0usize; n_splits];
    let mut fold_of_group = vec![0usize; labels.len()];
    for &g in &by_size {
        let lightest = (0..n_splits).min_by_key(|&f| (fold_sizes[f], f)).expect("n_splits > 0");
        fold_sizes[lightest] += sizes[g];
        fold_of_group[g] = lightest;
    }
    (0..n_splits)
        .map(|fold| {
            (0..groups.len()).filter(|&i| fold_of_group[group_of(groups[i])] == fold).collect()
        })
        .collect()
}

/// Why the cross-validated fit could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CrossValidationError {
    #[error("{groups} rows with a preference are fewer than the {splits} folds")]
    TooFewGroups { groups: usize, splits: usize },
}

/// The outcome of the cross-validated fit.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossValidatedFit {
    pub cs: Vec<f64>,
    /// `scores[fold][c]`: minus the weighted soft log loss on the fold (higher is better).
    pub scores: Vec<Vec<f64>>,
    pub chosen_c: f64,
    /// The refit model's weights, one per feature.
    pub weights: Vec<f64>,
}

/// The rows duplicated into hard-labelled weighted instances, in alpaca_eval's order
/// (all `y = 1` copies, then all `y = 0` copies).
struct DuplicatedRows<'a> {
    rows: &'a [SoftLabelRow],
}

impl<'a> DuplicatedRows<'a> {
    fn len(&self) -> usize {
        2 * self.rows.len()
    }

    fn row(&self, k: usize) -> &'a SoftLabelRow {
        &self.rows[k % self.rows.len()]
    }

    fn positive(&self, k: usize) -> bool {
        k < self.rows.len()
    }

    /// The label probability of copy `k`: `p` for the positive copy, `1 − p` for the other.
    fn true_probability(&self, k: usize) -> f64 {
        let p = self.row(k).probability;
        if self.positive(k) {
            p
        } else {
            1.0 - p
        }
    }

    fn instance(&self, k: usize) -> Instance<'a> {
        let row = self.row(k);
        Instance {
            features: &row.features,
            positive: self.positive(k),
            weight: self.true_probability(k) * row.weight,
        }
    }

    fn groups(&self) -> Vec<usize> {
        (0..self.len()).map(|k| k % self.rows.len()).collect()
    }

    /// The scorer's value on the copies `test` for weights `w`: minus alpaca_eval's
    /// `logloss_continuous`, i.e. the mean weighted soft log-likelihood.
    fn score(&self, test: &[usize], w: &[f64]) -> f64 {
        let log_likelihoods: Vec<f64> = test
            .iter()
            .map(|&k| {
                let row = self.row(k);
                let margin = row.features.iter().zip(w).fold(0.0, |acc, (x, wj)| acc + x * wj);
                let predicted = expit(margin).clamp(LOG_LOSS_EPSILON, 1.0 - LOG_LOSS_EPSILON);
                let truth = if self.positive(k) {
                    self.true_probability(k)
                } else {
                    1.0 - self.true_probability(k)
                };
                (truth * predicted.ln() + (1.0 - truth) * (1.0 - predicted).ln()) * row.weight
            })
            .collect();
        mean(&log_likelihoods)
    }

    fn fit(
        &self,
        indices: impl Iterator<Item = usize>,
        n_features: usize,
        c: f64,
        seed: u32,
    ) -> Vec<f64> {
        let problem = L1LogisticProblem::new(indices.map(|k| self.instance(k)), n_features, c);
        problem.solve(TOLERANCE, MAX_NEWTON_STEPS, seed).weights
    }
}

/// alpaca_eval's `fit_LogisticRegressionCV(..., is_ytrue_proba=True, n_splits)`.
pub fn fit_soft_label_logistic_cv(
    rows: &[SoftLabelRow],
    n_splits: usize,
) -> Result<CrossValidatedFit, CrossValidationError> {
    if rows.len() < n_splits {
        return Err(CrossValidationError::TooFewGroups { groups: rows.len(), splits: n_splits });
    }
    let n_features = rows[0].features.len();
    let data = DuplicatedRows { rows };
    let cs = default_cs(N_CS);
    let folds = group_k_fold(&data.groups(), n_splits);

    let scores: Vec<Vec<f64>> = folds
        .iter()
        .map(|test| {
            let mut in_test = vec![false; data.len()];
            for &k in test {
                in_test[k] = true;
            }
            // Each fold's path starts a fresh RandomState(123): C number i gets draw i.
            let mut seeds = LiblinearSeeds::new(RANDOM_STATE);
            cs.iter()
                .map(|&c| {
                    let train = (0..data.len()).filter(|&k| !in_test[k]);
                    let w = data.fit(train, n_features, c, seeds.next_seed());
                    data.score(test, &w)
                })
                .collect()
        })
        .collect();

    let summed: Vec<f64> = (0..cs.len())
        .map(|ci| scores.iter().fold(0.0, |acc, fold_scores| acc + fold_scores[ci]))
        .collect();
    let best = first_argmax(&summed);
    let chosen_c = cs[best];
    let weights = data.fit(
        0..data.len(),
        n_features,
        chosen_c,
        LiblinearSeeds::new(RANDOM_STATE).next_seed(),
    );
    Ok(CrossValidatedFit { cs, scores, chosen_c, weights })
}

/// `np.argmax`: the first maximum (a NaN counts as the maximum, as in numpy).
fn first_argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            return i;
        }
        if v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_k_fold_gives_equal_groups_to_folds_from_the_last_group_backwards() {
        // 12 groups of two samples each (a row and its duplicate), as the LC GLM has them.
        let groups: Vec<usize> = (0..12).chain(0..12).collect();
        let folds = group_k_fold(&groups, 5);
        assert_eq!(folds.len(), 5);
        // Group 11 goes to fold 0, 10 to fold 1, ..., 7 to fold 4, 6 to fold 0, ...
        let fold_of = |g: usize| folds.iter().position(|f| f.contains(&g)).unwrap();
        for g in 0..12 {
            assert_eq!(fold_of(g), (11 - g) % 5, "group {g}");
            assert_eq!(fold_of(g + 12), fold_of(g), "both copies of group {g} share a fold");
        }
        // Every sample is tested exactly once, indices ascending within a fold.
        let mut all: Vec<usize> = folds.concat();
        assert!(folds.iter().all(|f| f.windows(2).all(|w| w[0] < w[1])));
        all.sort_unstable();
        assert_eq!(all, (0..24).collect::<Vec<_>>());
    }

    #[test]
    fn group_k_fold_puts_large_groups_first_into_the_lightest_fold() {
        // Group sizes 5, 1, 3, 1 are taken in the order 0, 2, 3, 1. Group 0 goes to
        // fold 0 (both empty, the first wins); fold 1 is then the lighter one for group 2
        // (0 < 5), group 3 (3 < 5) and group 1 (4 < 5).
        let groups = [0, 0, 0, 0, 0, 1, 2, 2, 2, 3];
        let folds = group_k_fold(&groups, 2);
        assert_eq!(folds[0], vec![0, 1, 2, 3, 4]);
        assert_eq!(folds[1], vec![5, 6, 7, 8, 9]);
    }

    #[test]
    fn default_cs_is_logspace_minus_4_to_4() {
        let cs = default_cs(10);
        assert_eq!(cs.len(), 10);
        assert_eq!(cs[0], 1e-4);
        assert_eq!(cs[9], 1e4);
        for pair in cs.windows(2) {
            assert!((pair[1] / pair[0] - 10f64.powf(8.0 / 9.0)).abs() < 1e-12);
        }
    }

    #[test]
    fn first_argmax_prefers_the_earliest_tie() {
        assert_eq!(first_argmax(&[-3.0, -1.0, -1.0, -2.0]), 1);
        assert_eq!(first_argmax(&[-3.0, f64::NAN, 0.0]), 1);
    }

    #[test]
    fn cross_validation_picks_weak_regularisation_for_a_clear_signal() {
        let rows: Vec<SoftLabelRow> = (0..200)
            .map(|i| {
                let x = (i as f64 / 100.0) - 1.0;
                SoftLabelRow { features: vec![x, 1.0], probability: expit(3.0 * x), weight: 1.0 }
            })
            .collect();
        let fit = fit_soft_label_logistic_cv(&rows, 5).unwrap();
        assert!(fit.chosen_c >= 1.0, "chose C = {}", fit.chosen_c);
        assert!((fit.weights[0] - 3.0).abs() < 0.1, "slope {}", fit.weights[0]);
        assert!(fit.weights[1].abs() < 0.1, "intercept {}", fit.weights[1]);
        // The strongest penalty zeroes the model: log loss of p = 0.5 on every fold.
        for fold in &fit.scores {
            assert!(fold[0] < fold[fit.cs.iter().position(|&c| c == fit.chosen_c).unwrap()]);
        }
    }

    #[test]
    fn too_few_rows_for_the_folds_is_an_error() {
        let rows = vec![SoftLabelRow { features: vec![1.0], probability: 0.5, weight: 1.0 }; 3];
        assert_eq!(
            fit_soft_label_logistic_cv(&rows, 5),
            Err(CrossValidationError::TooFewGroups { groups: 3, splits: 5 })
        );
    }
}
