//! A leaderboard row's figures as the CLI's tables print them: `value ± standard error`
//! with two decimals, and a dash where there is no figure (no parsed verdict, no LC fit).

use herd_core::formats::LeaderboardRow;
use herd_core::metrics::PairedDifference;

/// The win rate with its standard error; "— (no verdict)" when no preference was parsed.
pub fn win_rate_cell(row: &LeaderboardRow) -> String {
    let head_to_head = &row.metrics.head_to_head;
    if head_to_head.n_total == 0 || !head_to_head.win_rate.is_finite() {
        return "— (no verdict)".into();
    }
    plus_minus(head_to_head.win_rate, Some(head_to_head.standard_error).filter(|se| se.is_finite()))
}

/// The length-controlled win rate with its standard error, or "—".
pub fn lc_win_rate_cell(row: &LeaderboardRow) -> String {
    let metrics = &row.metrics;
    match metrics.length_controlled_winrate.filter(|lc| lc.is_finite()) {
        Some(lc) => plus_minus(lc, metrics.lc_standard_error.filter(|se| se.is_finite())),
        None => "—".into(),
    }
}

/// A paired difference in points with its 95 % interval (`+3.10 [+0.52, +5.61]`), or "—".
pub fn paired_cell(difference: Option<&PairedDifference>) -> String {
    match difference {
        Some(d) if d.difference.is_finite() => {
            format!("{:+.2} [{:+.2}, {:+.2}]", d.difference, d.low, d.high)
        }
        _ => "—".into(),
    }
}

fn plus_minus(value: f64, standard_error: Option<f64>) -> String {
    match standard_error {
        Some(se) => format!("{value:.2} ± {se:.2}"),
        None => format!("{value:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_without_verdicts_shows_a_dash_not_nan() {
        let mut row = LeaderboardRow::default();
        row.metrics.head_to_head.win_rate = f64::NAN;
        row.metrics.head_to_head.standard_error = f64::NAN;
        assert_eq!(win_rate_cell(&row), "— (no verdict)");
        assert_eq!(lc_win_rate_cell(&row), "—");
        row.metrics.head_to_head.n_total = 20;
        row.metrics.head_to_head.win_rate = 49.371;
        row.metrics.head_to_head.standard_error = 18.466;
        row.metrics.length_controlled_winrate = Some(81.566);
        row.metrics.lc_standard_error = Some(1.774);
        assert_eq!(win_rate_cell(&row), "49.37 ± 18.47");
        assert_eq!(lc_win_rate_cell(&row), "81.57 ± 1.77");
    }
}
