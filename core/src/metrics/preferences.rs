//! Which judge preferences count, as alpaca_eval decides it. A preference is 1 (the
//! reference wins), 2 (the model wins), anything between (a weighted judge), 1.5 or the
//! legacy 0 for a draw; null means the judge's answer could not be parsed. The win rate
//! drops nulls and values outside [1, 2] (after 0 → 1.5); nothing here is ever fatal.

use serde::Serialize;

/// A preference the win rate leaves out, with its row in the annotations file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DroppedPreference {
    pub row: usize,
    /// `None` for an unparsed (null) preference.
    pub preference: Option<f64>,
}

/// The rows the win rate drops, unparsed ones counted apart from out-of-range ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PreferenceScreening {
    /// Rows whose preference is null (or NaN): the judge's answer was not parsed.
    pub unparsed_rows: Vec<usize>,
    /// Rows whose preference is a number outside [1, 2] and not the legacy draw 0.
    pub out_of_range: Vec<DroppedPreference>,
}

impl PreferenceScreening {
    pub fn of(preferences: &[Option<f64>]) -> Self {
        let mut screening = Self::default();
        for (row, preference) in preferences.iter().enumerate() {
            match draw_as_one_and_a_half(*preference) {
                None => screening.unparsed_rows.push(row),
                Some(p) if !is_alpaca_eval_preference(p) => {
                    screening.out_of_range.push(DroppedPreference { row, preference: *preference })
                }
                Some(_) => {}
            }
        }
        screening
    }

    pub fn n_unparsed(&self) -> usize {
        self.unparsed_rows.len()
    }

    pub fn n_dropped(&self) -> usize {
        self.unparsed_rows.len() + self.out_of_range.len()
    }
}

/// The legacy draw 0 read as 1.5; null and NaN as missing.
pub(crate) fn draw_as_one_and_a_half(preference: Option<f64>) -> Option<f64> {
    match preference {
        Some(p) if p.is_nan() => None,
        Some(0.0) => Some(1.5),
        other => other,
    }
}

/// A preference the win rate counts (the legacy draw 0 read as 1.5; null, NaN and values
/// outside [1, 2] give `None`).
pub fn counted_preference(preference: Option<f64>) -> Option<f64> {
    draw_as_one_and_a_half(preference).filter(|&p| is_alpaca_eval_preference(p))
}

/// alpaca_eval's `validate_alpacaeval_preference(x, is_allow_nan=False)`.
pub(crate) fn is_alpaca_eval_preference(p: f64) -> bool {
    (1.0..=2.0).contains(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_are_unparsed_and_out_of_range_values_are_dropped_but_legacy_draws_stay() {
        let preferences = [
            Some(1.0),
            None,
            Some(0.0),
            Some(2.5),
            Some(f64::NAN),
            Some(0.99),
            Some(2.0),
            Some(1.5),
        ];
        let screening = PreferenceScreening::of(&preferences);
        assert_eq!(screening.unparsed_rows, vec![1, 4]);
        assert_eq!(
            screening.out_of_range,
            vec![
                DroppedPreference { row: 3, preference: Some(2.5) },
                DroppedPreference { row: 5, preference: Some(0.99) }
            ]
        );
        assert_eq!(screening.n_unparsed(), 2);
        assert_eq!(screening.n_dropped(), 4);
    }
}
