//! The head-to-head statistics of alpaca_eval's `get_winrate`: the win rate of the
//! absolute scoring rule (preferences as soft wins), its standard error, the win / loss /
//! draw counts, and the discrete win rate of the zero-one rule (each preference rounded
//! to a win, a loss or a draw first).

use serde::{Deserialize, Serialize};

use super::numeric::{mean, standard_error_of_mean};
use super::preferences::{draw_as_one_and_a_half, is_alpaca_eval_preference};

/// `get_winrate`'s numbers, the first seven of the leaderboard (serialised with
/// alpaca_eval's names in its order). Rates are in percent; NaN where no preference counts.
/// Counts are `u64` wherever they appear (here, [`super::Metrics`], the leaderboard row).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeadToHead {
    pub win_rate: f64,
    pub standard_error: f64,
    /// Preferences above 1.5.
    pub n_wins: u64,
    /// Preferences below 1.5.
    pub n_wins_base: u64,
    /// Preferences equal to 1.5 or 0, counted before any row is dropped.
    pub n_draws: u64,
    /// Preferences that count (in [1, 2] after 0 → 1.5).
    pub n_total: u64,
    pub discrete_win_rate: f64,
}

pub fn head_to_head(preferences: &[Option<f64>]) -> HeadToHead {
    let n_draws =
        count(preferences.iter().filter(|p| matches!(p, Some(v) if *v == 1.5 || *v == 0.0)));
    let soft_wins: Vec<f64> = preferences
        .iter()
        .filter_map(|&p| draw_as_one_and_a_half(p))
        .filter(|&p| is_alpaca_eval_preference(p))
        .map(|p| p - 1.0)
        .collect();
    let discrete_wins: Vec<f64> = preferences
        .iter()
        .filter_map(|&p| discrete_preference(p))
        .filter(|&p| is_alpaca_eval_preference(p))
        .map(|p| p - 1.0)
        .collect();
    HeadToHead {
        win_rate: mean(&soft_wins) * 100.0,
        standard_error: standard_error_of_mean(&soft_wins) * 100.0,
        n_wins: count(soft_wins.iter().filter(|&&p| p > 0.5)),
        n_wins_base: count(soft_wins.iter().filter(|&&p| p < 0.5)),
        n_draws,
        n_total: soft_wins.len() as u64,
        discrete_win_rate: mean(&discrete_wins) * 100.0,
    }
}

fn count<T>(items: impl Iterator<Item = T>) -> u64 {
    items.count() as u64
}

/// The zero-one rule's reading of a preference: 1.5 becomes the draw code 0, the rest
/// is rounded half to even (numpy's `round`), and the draw code is read back as 1.5.
/// Note that rounding happens before the range check, as in alpaca_eval: 0.7 counts as
/// a loss and 0.4 as a draw.
fn discrete_preference(preference: Option<f64>) -> Option<f64> {
    let p = preference.filter(|p| !p.is_nan())?;
    let rounded = if p == 1.5 { 0.0 } else { p.round_ties_even() };
    Some(if rounded == 0.0 { 1.5 } else { rounded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_and_discrete_win_rates_differ_as_alpaca_eval_defines_them() {
        let stats = head_to_head(&[Some(1.9), Some(1.2), Some(1.5), Some(0.0), None, Some(2.6)]);
        // Soft: 0.9, 0.2, 0.5, 0.5 (2.6 and null dropped).
        assert_eq!(stats.n_total, 4);
        assert!((stats.win_rate - 52.5).abs() < 1e-12);
        assert_eq!((stats.n_wins, stats.n_wins_base, stats.n_draws), (1, 1, 2));
        // Discrete: 2, 1, draw, draw → (1 + 0 + 0.5 + 0.5) / 4; 2.6 rounds to 3, dropped.
        assert!((stats.discrete_win_rate - 50.0).abs() < 1e-12);
        let sem = (((0.9f64 - 0.525).powi(2)
            + (0.2f64 - 0.525).powi(2)
            + 2.0 * (0.5f64 - 0.525).powi(2))
            / 3.0)
            .sqrt()
            / 2.0;
        assert!((stats.standard_error - 100.0 * sem).abs() < 1e-12);
    }

    #[test]
    fn discrete_rule_rounds_before_checking_the_range() {
        assert_eq!(discrete_preference(Some(0.7)), Some(1.0));
        assert_eq!(discrete_preference(Some(0.4)), Some(1.5));
        assert_eq!(discrete_preference(Some(1.5)), Some(1.5));
        assert_eq!(discrete_preference(Some(1.500001)), Some(2.0));
        assert_eq!(discrete_preference(Some(2.5)), Some(2.0), "half to even");
        assert_eq!(discrete_preference(None), None);
    }

    #[test]
    fn no_counting_preference_gives_nan_rates_and_zero_counts() {
        let stats = head_to_head(&[None, Some(3.0)]);
        assert!(
            stats.win_rate.is_nan()
                && stats.discrete_win_rate.is_nan()
                && stats.standard_error.is_nan()
        );
        assert_eq!(stats.n_total, 0);
    }
}
