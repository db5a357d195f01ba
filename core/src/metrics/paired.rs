//! Two generators judged on the same instructions, compared instruction by instruction:
//! the difference of their win rates and of their length-controlled win rates, each with
//! a 95 % paired bootstrap interval, and where they disagree.
//!
//! Pairing removes what both share (how hard an instruction is, how the judge reads its
//! reference), so the interval of the difference is much narrower than two independent
//! "± SE" figures suggest. Instructions are matched by their text.
//!
//! The win-rate difference resamples instructions both generators have a counted
//! preference for (alpaca_eval's soft wins, `p − 1`). The LC difference resamples each
//! instruction's length-controlled prediction of the two fitted GLMs (the values whose mean
//! is the LC win rate), without refitting the GLMs per resample: like alpaca_eval's LC
//! standard error, it leaves out the uncertainty of the fit itself.

use std::collections::HashMap;

use serde::Serialize;

use super::numeric::mean;
use super::preferences::counted_preference;
use crate::error_analysis::SplitMix64;
use crate::formats::annotations::Annotation;

/// Resamples of the bootstrap unless asked otherwise.
pub const DEFAULT_RESAMPLES: usize = 2000;
/// Instructions listed as the two generators' largest disagreements.
const DISAGREEMENTS_LISTED: usize = 5;

/// One generator's side of a comparison.
#[derive(Debug, Clone, Copy)]
pub struct PairedSide<'a> {
    pub name: &'a str,
    pub annotations: &'a [Annotation],
    /// Each row's LC prediction ([`super::LengthControlledFit::per_row`]), when LC exists.
    pub lc_per_row: Option<&'a [f64]>,
}

/// A difference, A − B in percentage points, with its 95 % paired bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedDifference {
    /// Instructions the difference is over.
    pub n: usize,
    pub difference: f64,
    pub low: f64,
    pub high: f64,
}

impl PairedDifference {
    /// Whether 0 lies outside the interval.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// An instruction on which the two generators' preferences differ most.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disagreement {
    pub instruction: String,
    pub dataset: String,
    /// Rows in each generator's annotations.
    pub row_a: usize,
    pub row_b: usize,
    pub preference_a: f64,
    pub preference_b: f64,
}

/// Generator A against generator B on the instructions both were judged on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedComparison {
    pub a: String,
    pub b: String,
    /// `None` when no instruction has a counted preference on both sides.
    pub win_rate: Option<PairedDifference>,
    /// `None` when either side has no LC win rate or they share no instruction.
    pub length_controlled: Option<PairedDifference>,
    /// Instructions where A's preference is higher than B's, lower, or equal.
    pub a_better: usize,
    pub b_better: usize,
    pub same: usize,
    /// The largest |preference A − preference B|, largest first (ties in A's row order).
    pub largest_disagreements: Vec<Disagreement>,
    pub resamples: usize,
    pub seed: u64,
}

/// Compares `a` with `b`; the same seed gives the same intervals.
pub fn compare_paired(
    a: PairedSide<'_>,
    b: PairedSide<'_>,
    resamples: usize,
    seed: u64,
) -> PairedComparison {
    let b_rows: HashMap<&str, usize> = b
        .annotations
        .iter()
        .enumerate()
        .map(|(row, x)| (x.instruction.as_str(), row))
        .rev() // the first row of an instruction wins, as in the pairing of `a`
        .collect();
    let shared: Vec<(usize, usize)> = a
        .annotations
        .iter()
        .enumerate()
        .filter_map(|(row_a, x)| b_rows.get(x.instruction.as_str()).map(|&row_b| (row_a, row_b)))
        .collect();

    let soft_win = |p: Option<f64>| counted_preference(p).map(|p| p - 1.0);
    let mut judged = Vec::new();
    for &(row_a, row_b) in &shared {
        let (pa, pb) = (a.annotations[row_a].preference, b.annotations[row_b].preference);
        if let (Some(wa), Some(wb)) = (soft_win(pa), soft_win(pb)) {
            judged.push((row_a, row_b, wa, wb));
        }
    }
    let (mut a_better, mut b_better, mut same) = (0, 0, 0);
    for &(_, _, wa, wb) in &judged {
        match wa.partial_cmp(&wb) {
            Some(std::cmp::Ordering::Greater) => a_better += 1,
            Some(std::cmp::Ordering::Less) => b_better += 1,
            _ => same += 1,
        }
    }
    let mut by_gap: Vec<&(usize, usize, f64, f64)> =
        judged.iter().filter(|(_, _, wa, wb)| wa != wb).collect();
    by_gap.sort_by(|x, y| (y.3 - y.2).abs().total_cmp(&(x.3 - x.2).abs()));
    let largest_disagreements = by_gap
        .into_iter()
        .take(DISAGREEMENTS_LISTED)
        .map(|&(row_a, row_b, wa, wb)| Disagreement {
            instruction: a.annotations[row_a].instruction.clone(),
            dataset: a.annotations[row_a].dataset.clone(),
            row_a,
            row_b,
            preference_a: wa + 1.0,
            preference_b: wb + 1.0,
        })
        .collect();

    let mut rng = SplitMix64::new(seed);
    let win_differences: Vec<f64> = judged.iter().map(|&(_, _, wa, wb)| wa - wb).collect();
    let win_rate = paired_difference(&win_differences, resamples, &mut rng);
    let length_controlled = match (a.lc_per_row, b.lc_per_row) {
        (Some(lc_a), Some(lc_b)) => {
            let differences: Vec<f64> =
                shared.iter().filter_map(|&(ra, rb)| Some(lc_a.get(ra)? - lc_b.get(rb)?)).collect();
            paired_difference(&differences, resamples, &mut rng)
        }
        _ => None,
    };
    PairedComparison {
        a: a.name.to_string(),
        b: b.name.to_string(),
        win_rate,
        length_controlled,
        a_better,
        b_better,
        same,
        largest_disagreements,
        resamples,
        seed,
    }
}

/// The mean of per-instruction differences (in percentage points) and the 2.5th and
/// 97.5th percentiles of its bootstrap distribution.
fn paired_difference(
    differences: &[f64],
    resamples: usize,
    rng: &mut SplitMix64,
) -> Option<PairedDifference> {
    let n = differences.len();
    if n == 0 {
        return None;
    }
    let mut means = Vec::with_capacity(resamples);
    let mut sample = vec![0.0; n];
    for _ in 0..resamples {
        for x in sample.iter_mut() {
            *x = differences[rng.below(n as u64) as usize];
        }
        means.push(mean(&sample) * 100.0);
    }
    means.sort_by(f64::total_cmp);
    Some(PairedDifference {
        n,
        difference: mean(differences) * 100.0,
        low: percentile(&means, 2.5),
        high: percentile(&means, 97.5),
    })
}

/// numpy's default (linear) percentile of sorted values; NaN for none.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let position = q / 100.0 * (sorted.len() - 1) as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    let fraction = position - below as f64;
    sorted[below] + (sorted[above] - sorted[below]) * fraction
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval_set::EvalSet;

    /// The first `n` instructions of the eval set with the given preferences.
    fn judged(name: &str, preferences: &[Option<f64>]) -> Vec<Annotation> {
        EvalSet::embedded()
            .rows()
            .iter()
            .zip(preferences)
            .map(|(row, &preference)| Annotation {
                instruction: row.instruction.clone(),
                output_1: row.output.clone(),
                generator_1: "gpt4_1106_preview".into(),
                dataset: row.dataset.clone(),
                output_2: format!("{name} answers"),
                generator_2: name.into(),
                annotator: "judge".into(),
                preference,
                raw_completion: None,
                time_per_example: None,
                price_per_example: None,
                extra: Default::default(),
            })
            .collect()
    }

    fn side<'a>(name: &'a str, annotations: &'a [Annotation]) -> PairedSide<'a> {
        PairedSide { name, annotations, lc_per_row: None }
    }

    #[test]
    fn the_difference_is_the_difference_of_win_rates_on_shared_judged_instructions() {
        let a = judged("a", &[Some(2.0), Some(2.0), Some(1.0), Some(1.5), None, Some(1.75)]);
        let b = judged("b", &[Some(1.0), Some(2.0), Some(1.0), Some(1.0), Some(2.0), Some(1.25)]);
        let c = compare_paired(side("a", &a), side("b", &b), 500, 7);
        // Row 4 is unparsed for a: left out. a: 1, 1, 0, .5, .75 → b: 0, 1, 0, 0, .25.
        let d = c.win_rate.as_ref().unwrap();
        assert_eq!(d.n, 5);
        assert!((d.difference - 100.0 * (3.25 - 1.25) / 5.0).abs() < 1e-9, "{d:?}");
        assert!(d.low <= d.difference && d.difference <= d.high);
        assert_eq!((c.a_better, c.b_better, c.same), (3, 0, 2));
        assert_eq!(c.largest_disagreements[0].row_a, 0);
        assert_eq!(c.largest_disagreements.len(), 3);
        assert_eq!(c.length_controlled, None);
        // Seeded: the same interval again.
        assert_eq!(compare_paired(side("a", &a), side("b", &b), 500, 7), c);
    }

    #[test]
    fn the_interval_is_the_seeds() {
        let pa: Vec<Option<f64>> =
            (0..60).map(|i| Some(1.0 + (i * 7 % 11) as f64 / 10.0)).collect();
        let pb: Vec<Option<f64>> =
            (0..60).map(|i| Some(1.0 + (i * 5 % 11) as f64 / 10.0)).collect();
        let (a, b) = (judged("a", &pa), judged("b", &pb));
        let first = compare_paired(side("a", &a), side("b", &b), 500, 1).win_rate;
        assert_eq!(compare_paired(side("a", &a), side("b", &b), 500, 1).win_rate, first);
        assert_ne!(compare_paired(side("a", &a), side("b", &b), 500, 2).win_rate, first);
    }

    #[test]
    fn pairing_narrows_the_interval_when_both_follow_the_instruction() {
        // Both win on the same instructions, b slightly less: a large spread across
        // instructions, a small and steady difference within each.
        let n = 400;
        let pa: Vec<Option<f64>> =
            (0..n).map(|i| Some(if i % 2 == 0 { 1.9 } else { 1.1 })).collect();
        let pb: Vec<Option<f64>> = pa.iter().map(|p| p.map(|p| p - 0.05)).collect();
        let (a, b) = (judged("a", &pa), judged("b", &pb));
        let d = compare_paired(side("a", &a), side("b", &b), 1000, 1).win_rate.unwrap();
        assert!((d.difference - 5.0).abs() < 1e-9);
        assert!((d.high - d.low) < 0.01, "{d:?}");
        assert!(d.excludes_zero());
    }

    #[test]
    fn instructions_are_matched_by_text_and_lc_uses_each_rows_prediction() {
        let a = judged("a", &[Some(2.0), Some(1.0), Some(2.0)]);
        let mut b = judged("b", &[Some(1.0), Some(1.0), Some(1.0)]);
        b.reverse();
        let (lc_a, lc_b) = ([0.9, 0.2, 0.7], [0.1, 0.2, 0.3]); // b's rows reversed
        let c = compare_paired(
            PairedSide { lc_per_row: Some(&lc_a), ..side("a", &a) },
            PairedSide { lc_per_row: Some(&lc_b), ..side("b", &b) },
            200,
            3,
        );
        assert!((c.win_rate.unwrap().difference - 200.0 / 3.0).abs() < 1e-9);
        // a's row 0 pairs with b's row 2 (0.3), row 1 with row 1, row 2 with row 0.
        let lc = c.length_controlled.unwrap();
        assert!((lc.difference - 100.0 * (0.6 + 0.0 + 0.6) / 3.0).abs() < 1e-9, "{lc:?}");
    }

    #[test]
    fn percentiles_interpolate_as_numpy_does() {
        let values = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&values, 50.0), 2.5);
        assert!((percentile(&values, 2.5) - 1.075).abs() < 1e-12);
        assert_eq!(percentile(&values, 100.0), 4.0);
    }
}
