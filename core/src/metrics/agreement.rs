//! Two annotators on the same pairs: how often they agree and how each leans, computed as
//! alpaca_eval 0.6.6's evaluator analysis (`analyze.py`, the "evaluators leaderboard")
//! computes them for one annotation per pair, plus Cohen's kappa (which alpaca_eval does
//! not compute).
//!
//! - Pairs are keyed by (instruction, output_1, output_2); within each side the first row of
//!   a key is kept. Only keys both sides have are compared.
//! - Agreement (alpaca_eval's "Human agreement" with its default `absolute` scoring rule):
//!   100 · (1 − mean |p_A − p_B|) over the compared keys where both preferences are numbers,
//!   after the legacy draw 0 is read as 1.5; its standard error is that of the per-key scores.
//! - Spearman and Pearson correlations of the per-generator win rates (`generator_2`;
//!   alpaca_eval's `generalized_win_rate`: 100 · mean(p − 1) over preferences in [1, 2]),
//!   over generators both sides judged; Spearman with average ranks for ties.
//! - Each side's leanings over its compared rows: "Proba. prefer 1", "Proba. prefer longer"
//!   and "Proba. prefer lists" ([`super::judge_bias`] for the first two), "# parsed".
//! - Cohen's kappa over the discrete verdicts (< 1.5: output_1, 1.5: draw, > 1.5: output_2)
//!   of keys both sides parsed.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::judge_bias::{best_and_worse, first_of_each_pair, prefers_longer, Share};
use super::numeric::{mean, standard_error_of_mean};
use super::preferences::{counted_preference, draw_as_one_and_a_half};
use crate::formats::annotations::Annotation;

/// One annotator's leanings over the compared pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnnotatorLeanings {
    /// Preferences that are numbers ("# parsed").
    pub n_parsed: usize,
    /// "Proba. prefer 1": 2 − mean(preference).
    pub prefers_output_1: f64,
    /// "Proba. prefer longer".
    pub prefers_longer: Share,
    /// "Proba. prefer lists": of the pairs where exactly one answer contains a list, those
    /// where that one is preferred.
    pub prefers_lists: Share,
}

/// One generator's win rate under each annotator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratorWinRates {
    pub generator: String,
    pub win_rate_a: f64,
    pub win_rate_b: f64,
}

/// Annotator A against annotator B.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    /// Keys both sides annotated.
    pub n_pairs: usize,
    /// Keys where both preferences are numbers (what the agreement averages over).
    pub n_scored: usize,
    /// Percent.
    pub agreement: f64,
    pub standard_error: f64,
    pub cohen_kappa: f64,
    /// NaN with fewer than two generators.
    pub spearman: f64,
    pub pearson: f64,
    pub generators: Vec<GeneratorWinRates>,
    pub a: AnnotatorLeanings,
    pub b: AnnotatorLeanings,
}

type Key<'a> = (&'a str, &'a str, &'a str);

fn key(a: &Annotation) -> Key<'_> {
    (&a.instruction, &a.output_1, &a.output_2)
}

/// Compares annotator `a` with annotator `b` on the pairs both annotated.
pub fn agreement(a: &[Annotation], b: &[Annotation]) -> Agreement {
    let (a, b): (Vec<&Annotation>, Vec<&Annotation>) = (a.iter().collect(), b.iter().collect());
    let b_by_key: HashMap<Key<'_>, &Annotation> =
        first_of_each_pair(&b).into_iter().map(|row| (key(row), row)).collect();
    let pairs: Vec<(&Annotation, &Annotation)> = first_of_each_pair(&a)
        .into_iter()
        .filter_map(|row| b_by_key.get(&key(row)).map(|&other| (row, other)))
        .collect();

    let number = |p: Option<f64>| draw_as_one_and_a_half(p);
    let scores: Vec<f64> = pairs
        .iter()
        .filter_map(|(x, y)| Some(1.0 - (number(x.preference)? - number(y.preference)?).abs()))
        .collect();

    let (side_a, side_b): (Vec<&Annotation>, Vec<&Annotation>) = pairs.iter().copied().unzip();
    let generators = generator_win_rates(&pairs);
    let (xs, ys): (Vec<f64>, Vec<f64>) =
        generators.iter().map(|g| (g.win_rate_b, g.win_rate_a)).unzip();
    Agreement {
        n_pairs: pairs.len(),
        n_scored: scores.len(),
        agreement: mean(&scores) * 100.0,
        standard_error: standard_error_of_mean(&scores) * 100.0,
        cohen_kappa: cohen_kappa(&pairs),
        spearman: pearson(&average_ranks(&xs), &average_ranks(&ys)),
        pearson: pearson(&xs, &ys),
        generators,
        a: leanings(&side_a),
        b: leanings(&side_b),
    }
}

/// One side's leanings over the compared rows (one per pair already).
fn leanings(rows: &[&Annotation]) -> AnnotatorLeanings {
    let parsed: Vec<f64> =
        rows.iter().filter_map(|a| a.preference.filter(|p| !p.is_nan())).collect();
    AnnotatorLeanings {
        n_parsed: parsed.len(),
        prefers_output_1: 2.0 - mean(&parsed),
        prefers_longer: prefers_longer(rows),
        prefers_lists: prefers_lists(rows),
    }
}

/// Per generator (`generator_2`, first-seen order), each side's generalized win rate.
fn generator_win_rates(pairs: &[(&Annotation, &Annotation)]) -> Vec<GeneratorWinRates> {
    let mut by_generator: BTreeMap<&str, (usize, Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let counted = |p: Option<f64>| counted_preference(p).map(|p| p - 1.0);
    for (order, (x, y)) in pairs.iter().enumerate() {
        let entry = by_generator.entry(x.generator_2.as_str()).or_insert((order, vec![], vec![]));
        entry.1.extend(counted(x.preference));
        entry.2.extend(counted(y.preference));
    }
    let mut rows: Vec<(usize, GeneratorWinRates)> = by_generator
        .into_iter()
        .filter(|(_, (_, wa, wb))| !wa.is_empty() && !wb.is_empty())
        .map(|(generator, (order, wa, wb))| {
            (
                order,
                GeneratorWinRates {
                    generator: generator.to_string(),
                    win_rate_a: mean(&wa) * 100.0,
                    win_rate_b: mean(&wb) * 100.0,
                },
            )
        })
        .collect();
    rows.sort_by_key(|(order, _)| *order);
    rows.into_iter().map(|(_, g)| g).collect()
}

/// The discrete verdict: 0 for output_1, 1 for a draw, 2 for output_2.
fn verdict(p: Option<f64>) -> Option<usize> {
    let p = counted_preference(p)?;
    Some(if p < 1.5 {
        0
    } else if p == 1.5 {
        1
    } else {
        2
    })
}

/// Cohen's kappa of the discrete verdicts both sides have: (p_o − p_e) / (1 − p_e).
fn cohen_kappa(pairs: &[(&Annotation, &Annotation)]) -> f64 {
    let mut table = [[0usize; 3]; 3];
    let mut n = 0usize;
    for (x, y) in pairs {
        if let (Some(i), Some(j)) = (verdict(x.preference), verdict(y.preference)) {
            table[i][j] += 1;
            n += 1;
        }
    }
    if n == 0 {
        return f64::NAN;
    }
    let n = n as f64;
    let observed = (0..3).map(|i| table[i][i] as f64).sum::<f64>() / n;
    let expected = (0..3)
        .map(|i| {
            let row: usize = table[i].iter().sum();
            let column: usize = table.iter().map(|r| r[i]).sum();
            row as f64 * column as f64
        })
        .sum::<f64>()
        / (n * n);
    if expected == 1.0 {
        return f64::NAN;
    }
    (observed - expected) / (1.0 - expected)
}

/// scipy's `pearsonr`; NaN with fewer than two points or no spread.
fn pearson(xs: &[f64], ys: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (mean(xs), mean(ys));
    let dx: Vec<f64> = xs.iter().map(|x| x - mx).collect();
    let dy: Vec<f64> = ys.iter().map(|y| y - my).collect();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (nx, ny) = (norm(&dx), norm(&dy));
    if nx == 0.0 || ny == 0.0 {
        return f64::NAN;
    }
    let r = dx.iter().zip(&dy).map(|(a, b)| (a / nx) * (b / ny)).sum::<f64>();
    r.clamp(-1.0, 1.0)
}

/// Ranks from 1, ties given the average of the ranks they span (scipy's `rankdata`).
fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// alpaca_eval's "Proba. prefer lists" over the rows (one per pair).
fn prefers_lists(rows: &[&Annotation]) -> Share {
    let (mut preferred, mut decided) = (0, 0);
    for a in rows {
        let (best, worse) = best_and_worse(a);
        let (best_has, worse_has) = (contains_list(best), contains_list(worse));
        if best_has != worse_has {
            decided += 1;
            if best_has {
                preferred += 1;
            }
        }
    }
    Share { count: preferred, of: decided }
}

/// Whether `text` has a list item as alpaca_eval's `contains_list` finds one: at the start
/// of a line, after any whitespace, a bullet (`*`, `•`, `-`), a number with `.` or `)`, or a
/// letter with `.` or `)` and a space; and after it, a word character somewhere (its
/// patterns let the non-word run before that word span lines).
pub fn contains_list(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    // word_from[i]: a word character (`\w`) at or after position i.
    let mut word_from = vec![false; chars.len() + 1];
    for i in (0..chars.len()).rev() {
        word_from[i] = word_from[i + 1] || chars[i].is_alphanumeric() || chars[i] == '_';
    }
    let word_after = |from: usize| word_from[from.min(chars.len())];
    let mut line_start = true;
    for i in 0..chars.len() {
        let at_line_start = line_start;
        line_start = chars[i] == '\n';
        if !at_line_start {
            continue;
        }
        // `^\s*`: skip whitespace (newlines included).
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        let Some(&c) = chars.get(j) else { continue };
        if matches!(c, '*' | '•' | '-') && word_after(j + 1) {
            return true;
        }
        if c.is_numeric() {
            let mut k = j;
            while k < chars.len() && chars[k].is_numeric() {
                k += 1;
            }
            if matches!(chars.get(k), Some('.' | ')')) && word_after(k + 1) {
                return true;
            }
        }
        if c.is_ascii_alphabetic()
            && matches!(chars.get(j + 1), Some('.' | ')'))
            && chars.get(j + 2).is_some_and(|c| c.is_whitespace())
            && word_after(j + 3)
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_found_as_alpaca_eval_finds_them() {
        assert!(contains_list("Steps:\n- cut the paper"));
        assert!(contains_list("  * one"));
        assert!(contains_list("1. First\n2. Second"));
        assert!(contains_list("Intro\n  3) item"));
        assert!(contains_list("a) apples"));
        assert!(contains_list("-\n\n  word")); // the non-word run spans lines
        assert!(!contains_list("a)apples")); // a letter item needs a space
        assert!(!contains_list("The 3 rules - none here"));
        assert!(!contains_list("- ... !!!"));
        assert!(!contains_list("2024"));
    }

    #[test]
    fn ranks_average_ties_and_correlations_match_known_values() {
        assert_eq!(average_ranks(&[10.0, 20.0, 20.0, 5.0]), [2.0, 3.5, 3.5, 1.0]);
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 7.0]) - 0.9933992677987828).abs() < 1e-12);
        assert!(pearson(&[1.0], &[1.0]).is_nan());
    }
}
