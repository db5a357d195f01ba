//! `metrics::agreement` against alpaca_eval 0.6.6's own evaluator analysis (`analyze.py`:
//! `Analyzer`, `get_metrics_evaluator`, `get_length_biases`, `get_list_biases`,
//! `estimate_correlations`), run on the oracle files (`shared/data/oracle`).
//!
//! Annotator A is the file's `weighted_alpaca_eval_gpt4_turbo`; annotator B is what
//! `alpaca_eval_clf_gpt4_turbo` gives on the same completions (the binarised logprob
//! parser, un-switched; identical outputs 1.5): from A's weighted preference, below 1.5
//! → 1, above → 2, an exact 1.5 → 2 if the row was shown in order and 1 if switched.
//! The expected figures were printed by alpaca_eval 0.6.6 (PyPI; pandas 3.1.1, numpy
//! 2.4.6), with A as the judge's single annotation per pair and B as the gold annotations:
//! `Analyzer(gold_crossannotations=B, gold_annotations=B, n_annotators=1)`, then
//! `get_metrics_evaluator(analyzer, A)` and the bias helpers on A and on B.

mod common;

use common::{oracle_annotations as oracle, ORACLE_MODELS};
use herd_core::formats::annotations::Annotation;
use herd_core::formats::read_annotations;
use herd_core::judge::SwapDecision;
use herd_core::metrics::agreement;

const TOLERANCE: f64 = 1e-9;

/// What the binarised annotator says on A's rows.
fn binarised(rows: &[Annotation]) -> Vec<Annotation> {
    rows.iter()
        .map(|a| {
            let switched = SwapDecision::for_instruction(&a.instruction).is_switched();
            let preference = if a.output_1 == a.output_2 {
                Some(1.5)
            } else {
                a.preference.filter(|p| !p.is_nan()).map(|w| {
                    if w < 1.5 {
                        1.0
                    } else if w > 1.5 {
                        2.0
                    } else if switched {
                        1.0
                    } else {
                        2.0
                    }
                })
            };
            Annotation { preference, annotator: "clf_binarised".into(), ..a.clone() }
        })
        .collect()
}

fn close(got: f64, expected: f64, what: &str) {
    assert!((got - expected).abs() < TOLERANCE, "{what}: herd {got:?}, alpaca_eval {expected:?}");
}

#[test]
fn one_model_weighted_against_binarised_as_alpaca_eval_computes_it() {
    let a = read_annotations(oracle("gpt-3.5-turbo-1106")).unwrap();
    let b = binarised(&a);
    let found = agreement(&a, &b);
    assert_eq!((found.n_pairs, found.n_scored, found.a.n_parsed), (805, 805, 805));
    close(found.agreement, 97.51547216183852, "human agreement");
    close(found.standard_error, 100.0 * 0.0026992408288169715, "its standard error");
    close(found.a.prefers_longer.ratio(), 0.9290322580645162, "A prefers longer");
    close(found.b.prefers_longer.ratio(), 0.9290322580645162, "B prefers longer");
    close(found.a.prefers_lists.ratio(), 0.9531914893617022, "A prefers lists");
    close(found.a.prefers_output_1, 0.9082203543803726, "A prefers output_1");
    close(found.b.prefers_output_1, 0.9180124223602484, "B prefers output_1");
    close(found.generators[0].win_rate_a, 9.177964561962735, "A's win rate");
    close(found.generators[0].win_rate_b, 8.198757763975156, "B's win rate");
    assert!(found.spearman.is_nan() && found.pearson.is_nan(), "one generator: no correlation");
    // Binarising moves no verdict across 1.5 here: the discrete verdicts agree but for
    // the rows A calls a draw.
    assert!(found.cohen_kappa > 0.95, "{}", found.cohen_kappa);
}

#[test]
fn a_model_with_an_exact_tie_as_alpaca_eval_computes_it() {
    let a = read_annotations(oracle("humpback-llama2-70b")).unwrap();
    let found = agreement(&a, &binarised(&a));
    close(found.agreement, 97.29261507563976, "human agreement");
    close(found.a.prefers_longer.ratio(), 0.8746770025839793, "A prefers longer");
    close(found.b.prefers_longer.ratio(), 0.8735483870967742, "B prefers longer");
    close(found.a.prefers_lists.ratio(), 0.9407114624505929, "A prefers lists");
    close(found.b.prefers_lists.ratio(), 0.9409448818897638, "B prefers lists");
    close(found.a.prefers_output_1, 0.8987822849735403, "A prefers output_1");
    close(found.generators[0].win_rate_a, 10.121771502645965, "A's win rate");
    close(found.generators[0].win_rate_b, 9.565217391304348, "B's win rate");
}

#[test]
fn twelve_models_pooled_correlate_as_alpaca_eval_computes_it() {
    // alpaca_eval's side read the files in sorted path order and kept the first row of
    // each (instruction, output_1, output_2): 9658 rows, 9598 pairs.
    let a: Vec<Annotation> =
        ORACLE_MODELS.iter().flat_map(|m| read_annotations(oracle(m)).unwrap()).collect();
    assert_eq!(a.len(), 9658);
    let found = agreement(&a, &binarised(&a));
    assert_eq!((found.n_pairs, found.a.n_parsed), (9598, 9598));
    close(found.agreement, 96.67976288639925, "human agreement");
    close(found.standard_error, 100.0 * 0.0009254367551574199, "its standard error");
    close(found.spearman, 0.9930069930069931, "Spearman");
    close(found.pearson, 0.9987240641450092, "Pearson");
    close(found.a.prefers_longer.ratio(), 0.8476346989083225, "A prefers longer");
    close(found.b.prefers_longer.ratio(), 0.8475531040957635, "B prefers longer");
    close(found.a.prefers_lists.ratio(), 0.7749186631174209, "A prefers lists");
    close(found.b.prefers_lists.ratio(), 0.7750517292344073, "B prefers lists");
    close(found.a.prefers_output_1, 0.7872566473064804, "A prefers output_1");
    close(found.b.prefers_output_1, 0.7836528443425714, "B prefers output_1");
}
