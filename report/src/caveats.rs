//! What a reader must know before quoting a generator's figures, as sentences: too few
//! judged instructions for the figures to mean much, empty answers (and whether the judge
//! let them win), unparsed verdicts.

use herd_core::metrics::{JudgeBias, MetricsReport};

/// Below this many judged instructions the win rate's interval is wide and the LC GLM has
/// little of the model to fit: the figures are flagged.
pub const SMALL_SAMPLE: u64 = 200;

/// The caveats of one generator's figures, most serious first; empty when there is none.
pub fn caveats(metrics: &MetricsReport, bias: &JudgeBias) -> Vec<String> {
    let mut notes = Vec::new();
    let n = bias.n_rows;
    if n > 0 && bias.empty_answers * 2 > n {
        notes.push(format!(
            "mostly empty answers: {} of {n} are empty; check the generator's template and \
             stop settings before reading its win rate",
            bias.empty_answers
        ));
    }
    let judged = metrics.metrics.n_total;
    if judged < SMALL_SAMPLE {
        let se = metrics.metrics.standard_error;
        let spread = if se.is_finite() && se > 0.0 {
            format!(" (its 95 % interval is about ±{:.1} points)", 1.96 * se)
        } else {
            String::new()
        };
        notes.push(format!(
            "small sample: {judged} judged instruction{} (fewer than {SMALL_SAMPLE}): the win \
             rate{spread} and above all the length-controlled win rate, whose GLM has little \
             of this model to fit, are not comparable with full 805-instruction figures",
            if judged == 1 { "" } else { "s" }
        ));
    }
    if bias.empty_answers > 0 && bias.empty_answers * 2 <= n {
        notes.push(format!("{} of {n} answers are empty", bias.empty_answers));
    }
    if bias.empty_answers_won > 0 {
        notes.push(format!(
            "the judge preferred an empty answer to the reference {} time{} (soft win rate of \
             the empty answers: {:.1} %)",
            bias.empty_answers_won,
            if bias.empty_answers_won == 1 { "" } else { "s" },
            bias.empty_answers_win_rate
        ));
    }
    if bias.n_unparsed > 0 {
        notes.push(format!(
            "{} of {n} verdicts could not be parsed and are left out of the win rate",
            bias.n_unparsed
        ));
    }
    notes
}
