//! alpaca_eval's official annotator, `weighted_alpaca_eval_gpt4_turbo`, reproduced from its
//! raw completions: on every row of the oracle files (`shared/data/oracle`) that keeps its
//! `raw_completion`, herd's reading of the top log-probabilities (`m` over `m`, `M`,
//! weighted), mapped back to file order with alpaca_eval's output-order switch, equals the
//! preference alpaca_eval stored (to the 10 decimals its files keep). The binarised reading
//! (`alpaca_eval_clf_gpt4_turbo`) falls on the same side of 1.5.

mod common;

use common::{oracle_annotations as oracle, ORACLE_MODELS};
use herd_core::formats::read_annotations;
use herd_core::judge::{SwapDecision, TokenLogprobParser};

#[test]
fn the_official_annotators_preferences_follow_from_its_raw_completions() {
    let weighted = TokenLogprobParser::weighted_m_over_m_or_capital_m();
    let binarised = TokenLogprobParser::binarised_m_over_m_or_capital_m();
    let (mut checked, mut identical_outputs, mut no_verdict) = (0, 0, 0);
    for model in ORACLE_MODELS {
        for (row, a) in read_annotations(oracle(model)).unwrap().iter().enumerate() {
            let Some(raw) = a.raw_completion.as_ref().filter(|r| r.is_object()) else { continue };
            if a.output_1 == a.output_2 {
                // alpaca_eval does not ask the judge: the preference is 1.5.
                identical_outputs += 1;
                continue;
            }
            let swap = SwapDecision::for_instruction(&a.instruction);
            let shown = weighted.parse(raw).unwrap_or_else(|e| panic!("{model} row {row}: {e}"));
            let ours = swap.unswap_preference(shown[0]);
            match (ours, a.preference) {
                (Some(p), Some(stored)) => {
                    assert!(
                        (p - stored).abs() < 1e-9,
                        "{model} row {row}: herd {p}, alpaca_eval {stored}"
                    );
                    let binary = swap.unswap_preference(binarised.parse(raw).unwrap()[0]).unwrap();
                    if p != 1.5 {
                        assert_eq!(
                            binary < 1.5,
                            p < 1.5,
                            "{model} row {row}: binarised {binary}, weighted {p}"
                        );
                    }
                }
                (None, None) => no_verdict += 1,
                (ours, stored) => {
                    panic!("{model} row {row}: herd {ours:?}, alpaca_eval {stored:?}")
                }
            }
            checked += 1;
        }
    }
    // Eleven of the twelve files keep their raw completions (FuseChat's does not).
    assert!(checked > 8000, "{checked} rows checked");
    eprintln!("{checked} rows checked ({no_verdict} without a verdict), {identical_outputs} with identical outputs");
}
