//! Floats written as Python's `repr(float)` writes them (pandas' `to_csv` does the same):
//! the shortest digits that read back to the same double, fixed notation with at least
//! one decimal for exponents -4..16, scientific (`1e-05`, `1.5e+16`) outside.

/// `repr(x)` of a Python float.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-6.38484e-5".
    let scientific = format!("{x:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("`{:e}` always has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();

    if !(-4..16).contains(&exponent) {
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs());
    }
    let point = exponent + 1; // digits before the decimal point
    let text = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{whole}.{fraction}")
    };
    format!("{sign}{text}")
}

#[cfg(test)]
mod tests {
    use super::python_float_repr;

    #[test]
    fn matches_python_repr_in_fixed_and_scientific_ranges() {
        let cases = [
            (50.0, "50.0"),
            (0.0, "0.0"),
            (76.91979180386511, "76.91979180386511"),
            (0.0000638484, "6.38484e-05"),
            (0.0001, "0.0001"),
            (-0.00123, "-0.00123"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (1531.0, "1531.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5e-300, "-2.5e-300"),
        ];
        for (x, expected) in cases {
            assert_eq!(python_float_repr(x), expected, "repr of {x}");
            assert_eq!(python_float_repr(x).parse::<f64>().unwrap(), x);
        }
    }
}
