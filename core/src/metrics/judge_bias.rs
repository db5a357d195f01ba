//! How a judge leans, read from one annotations file: towards the answer it was shown
//! first, towards the longer answer, towards `output_1`; and how empty answers fared.
//!
//! Two of the measures are alpaca_eval 0.6.6's own (its evaluators leaderboard, `analyze.py`):
//! "Proba. prefer longer" and "Proba. prefer 1", computed as it computes them. The position
//! bias uses the order the judge really saw: alpaca_eval swaps the outputs of some rows
//! before judging (`is_switched_outputs`) and maps the preference back, so "prefer 1" in
//! file order mixes both orders; herd undoes that with the row's switch decision.

use std::collections::HashSet;

use serde::Serialize;

use super::numeric::mean;
use super::preferences::counted_preference;
use crate::formats::annotations::Annotation;
use crate::judge::SwapDecision;

/// alpaca_eval's `significant_delta_length`: length gaps up to this many characters do
/// not count as one answer being longer.
pub const SIGNIFICANT_LENGTH_GAP: usize = 30;

/// A share: `count` of `of`, and their ratio (NaN when `of` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Share {
    pub count: usize,
    pub of: usize,
}

impl Share {
    pub fn ratio(self) -> f64 {
        if self.of == 0 {
            f64::NAN
        } else {
            self.count as f64 / self.of as f64
        }
    }
}

/// A judge's leanings on one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeBias {
    pub n_rows: usize,
    /// Preferences that are numbers (alpaca_eval's "# parsed").
    pub n_parsed: usize,
    pub n_unparsed: usize,
    /// Mean probability that the answer shown first won, over counted preferences (soft:
    /// a weighted judge's 1.3 counts 0.7 for the first-shown reference). 0.5 is no bias.
    pub prefers_first_shown: f64,
    /// alpaca_eval's "Proba. prefer 1": 2 − mean(preference), file order.
    pub prefers_output_1: f64,
    /// alpaca_eval's "Proba. prefer longer": of the rows (first of each instruction /
    /// output pair) whose answers differ by more than [`SIGNIFICANT_LENGTH_GAP`]
    /// characters, those where the preferred one is the longer (draws are not counted).
    pub prefers_longer: Share,
    /// Model answers that are empty or whitespace.
    pub empty_answers: usize,
    /// Empty answers whose counted preference is above 1.5 (the judge preferred nothing
    /// to the reference), and the soft win rate of the empty answers in percent (NaN when
    /// none is counted).
    pub empty_answers_won: usize,
    pub empty_answers_win_rate: f64,
}

impl JudgeBias {
    pub fn of<'a>(rows: impl IntoIterator<Item = &'a Annotation>) -> Self {
        let annotations: Vec<&Annotation> = rows.into_iter().collect();
        let parsed: Vec<f64> =
            annotations.iter().filter_map(|a| a.preference.filter(|p| !p.is_nan())).collect();
        let mut first_shown = Vec::new();
        for a in &annotations {
            let Some(p) = counted_preference(a.preference) else { continue };
            first_shown.push(if is_switched(a) { p - 1.0 } else { 2.0 - p });
        }
        let empty: Vec<&&Annotation> =
            annotations.iter().filter(|a| a.output_2.trim().is_empty()).collect();
        let empty_wins: Vec<f64> = empty
            .iter()
            .filter_map(|a| counted_preference(a.preference))
            .map(|p| p - 1.0)
            .collect();
        Self {
            n_rows: annotations.len(),
            n_parsed: parsed.len(),
            n_unparsed: annotations.len() - parsed.len(),
            prefers_first_shown: mean(&first_shown),
            prefers_output_1: 2.0 - mean(&parsed),
            prefers_longer: prefers_longer(&annotations),
            empty_answers: empty.len(),
            empty_answers_won: empty_wins.iter().filter(|&&w| w > 0.5).count(),
            empty_answers_win_rate: mean(&empty_wins) * 100.0,
        }
    }
}

/// The row's `is_switched_outputs` when the file keeps it, else alpaca_eval's decision for
/// its instruction under the default seed (what herd and alpaca_eval's annotators use).
fn is_switched(a: &Annotation) -> bool {
    match a.extra.get("is_switched_outputs").and_then(|v| v.as_bool()) {
        Some(switched) => switched,
        None => SwapDecision::for_instruction(&a.instruction).is_switched(),
    }
}

/// The preferred answer and the other, as alpaca_eval's bias measures read a row:
/// `output_1` is best when 1 ≤ p < 1.5 and worse when 1.5 < p ≤ 2; otherwise (a draw,
/// unparsed, 0, out of range) both are `output_2`, so the row never counts.
pub(crate) fn best_and_worse(a: &Annotation) -> (&str, &str) {
    match a.preference.filter(|p| !p.is_nan()) {
        Some(p) if (1.0..1.5).contains(&p) => (&a.output_1, &a.output_2),
        Some(p) if p > 1.5 && p <= 2.0 => (&a.output_2, &a.output_1),
        _ => (&a.output_2, &a.output_2),
    }
}

/// The first row of every (instruction, output_1, output_2), in order (alpaca_eval's
/// `drop_duplicates` on its keys).
pub(crate) fn first_of_each_pair<'a>(rows: &[&'a Annotation]) -> Vec<&'a Annotation> {
    let mut seen = HashSet::new();
    rows.iter()
        .copied()
        .filter(|a| seen.insert((&a.instruction, &a.output_1, &a.output_2)))
        .collect()
}

pub(crate) fn prefers_longer(annotations: &[&Annotation]) -> Share {
    let (mut longer, mut decided) = (0, 0);
    for a in first_of_each_pair(annotations) {
        let (best, worse) = best_and_worse(a);
        let (best, worse) = (best.chars().count(), worse.chars().count());
        if best.abs_diff(worse) > SIGNIFICANT_LENGTH_GAP {
            decided += 1;
            if best > worse {
                longer += 1;
            }
        }
    }
    Share { count: longer, of: decided }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        instruction: &str,
        reference: &str,
        answer: &str,
        preference: Option<f64>,
    ) -> Annotation {
        Annotation {
            instruction: instruction.into(),
            output_1: reference.into(),
            generator_1: "ref".into(),
            dataset: "d".into(),
            output_2: answer.into(),
            generator_2: "model".into(),
            annotator: "judge".into(),
            preference,
            raw_completion: None,
            time_per_example: None,
            price_per_example: None,
            extra: Default::default(),
        }
    }

    fn switched(mut a: Annotation, is_switched: bool) -> Annotation {
        a.extra.insert("is_switched_outputs".into(), is_switched.into());
        a
    }

    #[test]
    fn position_bias_follows_the_order_the_judge_saw() {
        // The judge always picks what it saw first: the reference when not switched
        // (preference 1), the model when switched (preference 2).
        let rows = vec![
            switched(row("a", "r", "m", Some(1.0)), false),
            switched(row("b", "r", "m", Some(2.0)), true),
            switched(row("c", "r", "m", Some(1.25)), false),
            switched(row("d", "r", "m", None), true),
        ];
        let bias = JudgeBias::of(&rows);
        assert!((bias.prefers_first_shown - (1.0 + 1.0 + 0.75) / 3.0).abs() < 1e-12);
        assert!((bias.prefers_output_1 - (2.0 - (1.0 + 2.0 + 1.25) / 3.0)).abs() < 1e-12);
        assert_eq!((bias.n_parsed, bias.n_unparsed), (3, 1));
    }

    #[test]
    fn without_the_column_the_switch_is_alpaca_evals_decision() {
        let instruction = "How do I wrap a present neatly?";
        let shown_first_won =
            if SwapDecision::for_instruction(instruction).is_switched() { 2.0 } else { 1.0 };
        let bias = JudgeBias::of(&[row(instruction, "r", "m", Some(shown_first_won))]);
        assert_eq!(bias.prefers_first_shown, 1.0);
    }

    #[test]
    fn prefer_longer_counts_gaps_over_thirty_characters_as_alpaca_eval_does() {
        let long = "x".repeat(100);
        let rows = vec![
            row("a", "short", &long, Some(2.0)),  // longer won
            row("b", "short", &long, Some(1.9)),  // longer won
            row("b", "short", &long, Some(1.0)),  // duplicate of the pair before: skipped
            row("f", "short", &long, Some(1.5)),  // a draw: not counted
            row("c", "short", &long, Some(1.2)),  // shorter won
            row("d", "short", "tiny", Some(1.0)), // gap of 1: not counted
            row("e", "short", &long, None),       // unparsed: not counted
            row("a", "short", &long, Some(1.0)),  // duplicate of the first pair: skipped
        ];
        let bias = JudgeBias::of(&rows);
        assert_eq!(bias.prefers_longer, Share { count: 2, of: 3 });
    }

    #[test]
    fn empty_answers_that_won_are_counted() {
        let rows = vec![
            row("a", "r", "", Some(2.0)),
            row("b", "r", "  \n", Some(1.5)),
            row("c", "r", "", Some(1.0)),
            row("d", "r", "", None),
            row("e", "r", "fine", Some(2.0)),
        ];
        let bias = JudgeBias::of(&rows);
        assert_eq!((bias.empty_answers, bias.empty_answers_won), (4, 1));
        assert!((bias.empty_answers_win_rate - 50.0).abs() < 1e-12);
    }
}
