//! Reductions computed the way numpy and pandas compute them, so herd's sums round like
//! alpaca_eval's: numpy adds a contiguous float64 array pairwise (blocks of 128, eight
//! running partial sums), pandas' `mean`, `std` and `sem` are built on that sum.

/// Below this many values numpy adds one by one.
const UNROLL: usize = 8;
/// Blocks of at most this many values are summed with eight running partial sums.
const PAIRWISE_BLOCK: usize = 128;

/// `np.sum` of a float64 array.
pub(crate) fn numpy_sum(values: &[f64]) -> f64 {
    let n = values.len();
    if n < UNROLL {
        return values.iter().fold(0.0, |acc, &x| acc + x);
    }
    if n <= PAIRWISE_BLOCK {
        let mut partial = [0.0f64; UNROLL];
        partial.copy_from_slice(&values[..UNROLL]);
        let whole = n - n % UNROLL;
        for chunk in values[UNROLL..whole].chunks_exact(UNROLL) {
            for (p, &x) in partial.iter_mut().zip(chunk) {
                *p += x;
            }
        }
        let mut total = ((partial[0] + partial[1]) + (partial[2] + partial[3]))
            + ((partial[4] + partial[5]) + (partial[6] + partial[7]));
        for &x in &values[whole..] {
            total += x;
        }
        return total;
    }
    let mut half = n / 2;
    half -= half % UNROLL;
    numpy_sum(&values[..half]) + numpy_sum(&values[half..])
}

/// `np.mean` / pandas' `Series.mean`: NaN for no values.
pub(crate) fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    numpy_sum(values) / values.len() as f64
}

/// pandas' `Series.var()` (ddof = 1): mean first, then the summed squared deviations.
pub(crate) fn sample_variance(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return f64::NAN;
    }
    let average = mean(values);
    let squares: Vec<f64> = values.iter().map(|&x| (average - x).powi(2)).collect();
    numpy_sum(&squares) / (n - 1) as f64
}

/// pandas' `Series.std()` (ddof = 1).
pub(crate) fn sample_std(values: &[f64]) -> f64 {
    sample_variance(values).sqrt()
}

/// pandas' `Series.sem()` (ddof = 1): NaN for fewer than two values.
pub(crate) fn standard_error_of_mean(values: &[f64]) -> f64 {
    sample_variance(values).sqrt() / (values.len() as f64).sqrt()
}

/// scipy's `expit`, the logistic function as scikit-learn's `predict_proba` computes it.
pub(crate) fn expit(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A naive left-to-right sum in extended precision (f64 pairs), for comparison.
    fn compensated_sum(values: &[f64]) -> f64 {
        let (mut sum, mut carry) = (0.0f64, 0.0f64);
        for &x in values {
            let y = x - carry;
            let t = sum + y;
            carry = (t - sum) - y;
            sum = t;
        }
        sum
    }

    #[test]
    fn pairwise_sum_agrees_with_a_compensated_sum_on_every_block_shape() {
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 1000.0
        };
        for n in [0usize, 1, 5, 8, 9, 127, 128, 129, 805, 3220, 10_000] {
            let values: Vec<f64> = (0..n).map(|_| next()).collect();
            let exact = compensated_sum(&values);
            assert!((numpy_sum(&values) - exact).abs() <= 1e-9 * (1.0 + exact.abs()), "n = {n}");
        }
    }

    #[test]
    fn pairwise_sum_groups_values_like_numpy() {
        // 1e16 + 1 + ... is order dependent: numpy's first partial sum loses its one,
        // the seven others keep theirs (2 each), where a left-to-right sum loses all.
        let mut values = vec![1e16];
        values.extend(std::iter::repeat_n(1.0, 15));
        let left_to_right = values.iter().fold(0.0, |acc, &x| acc + x);
        assert_eq!(left_to_right, 1e16);
        assert_eq!(numpy_sum(&values), 1e16 + 14.0);
    }

    #[test]
    fn sem_of_a_constant_is_zero_and_of_one_value_is_nan() {
        assert_eq!(standard_error_of_mean(&[0.5; 10]), 0.0);
        assert!(standard_error_of_mean(&[0.5]).is_nan());
        let values = [1.0, 2.0, 3.0, 4.0];
        assert!((sample_std(&values) - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert!((standard_error_of_mean(&values) - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-15);
    }
}
