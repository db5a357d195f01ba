//! alpaca_eval's output-order randomisation, reproduced bit for bit.
//!
//! Before judging, alpaca_eval 0.6.6 (`RandomSwitchTwoColumnsProcessor`, configured by
//! `PairwiseAnnotator`) shows the two outputs in swapped order when
//! `random.Random("is_switched_outputs" + instruction + str(seed)).choices([False, True])[0]`
//! is `True` (annotator seed 0 by default). The seed string is the switch column's name,
//! then the seed columns' values (sorted by column name; only `instruction` by default)
//! concatenated, then the seed. A swapped row's preference is mapped back as `3 - p`.
//!
//! Python seeds `random.Random(str)` by appending the SHA-512 digest to the UTF-8 bytes,
//! reading the result as a big-endian integer and feeding its 32-bit words (least
//! significant first) to MT19937's `init_by_array`. `choices` on two elements returns
//! `population[floor(random() * 2)]`, where `random()` combines two 32-bit outputs as
//! `(a >> 5, b >> 6)` into 53 bits.

use sha2::{Digest, Sha512};

use crate::mersenne_twister::Mt19937;

/// The column alpaca_eval stores the decision in; also the first part of its seed string.
pub const SWITCH_COLUMN: &str = "is_switched_outputs";

/// alpaca_eval's default annotator seed.
pub const DEFAULT_SEED: u64 = 0;

/// Whether the judge sees (reference, model) in swapped order for one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SwapDecision {
    is_switched: bool,
}

impl SwapDecision {
    /// alpaca_eval's decision for `instruction` under its default seed (0).
    pub fn for_instruction(instruction: &str) -> Self {
        Self::for_instruction_with_seed(instruction, DEFAULT_SEED)
    }

    /// alpaca_eval's decision for `instruction` under annotator seed `seed`.
    pub fn for_instruction_with_seed(instruction: &str, seed: u64) -> Self {
        Self::for_seed_columns(&[instruction], seed)
    }

    /// The general form: `seed_column_values` are the values of alpaca_eval's
    /// `random_seed_column`s, already in sorted-column-name order.
    pub fn for_seed_columns(seed_column_values: &[&str], seed: u64) -> Self {
        let mut seed_string = String::from(SWITCH_COLUMN);
        for value in seed_column_values {
            seed_string.push_str(value);
        }
        seed_string.push_str(&seed.to_string());
        let mut rng = PythonRandom::from_str_seed(&seed_string);
        // choices([False, True]) -> population[floor(random() * 2)]
        Self { is_switched: rng.choice_index(2) == 1 }
    }

    pub fn new(is_switched: bool) -> Self {
        Self { is_switched }
    }

    pub fn is_switched(self) -> bool {
        self.is_switched
    }

    /// The two outputs in the order the judge sees them, given in alpaca_eval's
    /// orientation (`output_1` = reference, `output_2` = model).
    pub fn order<'a, T: ?Sized>(self, output_1: &'a T, output_2: &'a T) -> (&'a T, &'a T) {
        if self.is_switched {
            (output_2, output_1)
        } else {
            (output_1, output_2)
        }
    }

    /// Maps a preference read in the shown order back to alpaca_eval's orientation:
    /// `3 - p` when switched, as alpaca_eval does; `None` (NaN there) stays `None`.
    ///
    /// alpaca_eval applies `3 - p` blindly, so a draw coded as 0 would become 3 and then
    /// fail its own `1 <= p <= 2` validation; herd keeps 0 as 0 (a draw stays a draw).
    /// herd's own producers only give values in [1, 2].
    pub fn unswap_preference(self, shown: Option<f64>) -> Option<f64> {
        match shown {
            Some(p) if self.is_switched && p != 0.0 => Some(3.0 - p),
            other => other,
        }
    }
}

/// CPython's `random.Random`: MT19937 with CPython's seeding and `random()`.
#[derive(Clone)]
pub struct PythonRandom {
    mt: Mt19937,
}

impl PythonRandom {
    /// `random.Random(seed)` for a `str` seed (seeding version 2, the default).
    pub fn from_str_seed(seed: &str) -> Self {
        let bytes = seed.as_bytes();
        let mut big_endian = bytes.to_vec();
        big_endian.extend_from_slice(&Sha512::digest(bytes));
        Self::from_big_endian_integer(&big_endian)
    }

    /// `random.Random(n)` for a non-negative int `n`.
    pub fn from_u64_seed(seed: u64) -> Self {
        Self::from_big_endian_integer(&seed.to_be_bytes())
    }

    /// Seeds with the integer whose big-endian bytes are given: its 32-bit words, least
    /// significant first, without leading zero words (at least one word), as CPython does.
    fn from_big_endian_integer(bytes: &[u8]) -> Self {
        let mut key: Vec<u32> = bytes
            .rchunks(4)
            .map(|chunk| chunk.iter().fold(0u32, |word, &b| (word << 8) | u32::from(b)))
            .collect();
        while key.len() > 1 && key.last() == Some(&0) {
            key.pop();
        }
        if key.is_empty() {
            key.push(0);
        }
        Self { mt: Mt19937::from_key(&key) }
    }

    /// The next raw 32-bit output (`getrandbits(32)`).
    pub fn next_u32(&mut self) -> u32 {
        self.mt.next_u32()
    }

    /// `random.random()`: 53 random bits in [0, 1).
    pub fn random(&mut self) -> f64 {
        let a = u64::from(self.next_u32() >> 5);
        let b = u64::from(self.next_u32() >> 6);
        (a * 67_108_864 + b) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// The index `random.choices(population, k=1)` picks for an unweighted population of
    /// `n` elements: `floor(random() * n)`.
    pub fn choice_index(&mut self, n: usize) -> usize {
        (self.random() * n as f64).floor() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval_set::EvalSet;

    /// Reads a fixture of '0'/'1' characters (whitespace ignored) as booleans.
    fn read_bits(text: &str) -> Vec<bool> {
        text.chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| match c {
                '0' => false,
                '1' => true,
                other => panic!("unexpected character {other:?} in a swap fixture"),
            })
            .collect()
    }

    fn decisions(seed: u64) -> Vec<bool> {
        EvalSet::embedded()
            .rows()
            .iter()
            .map(|row| {
                SwapDecision::for_instruction_with_seed(&row.instruction, seed).is_switched()
            })
            .collect()
    }

    // The fixtures come from scripts/swap_reference.py, which calls
    // alpaca_eval.utils.random_seeded_choice (0.6.6) with alpaca_eval's seed string for every
    // eval-set instruction: one file per annotator seed.
    #[test]
    fn decisions_equal_alpaca_eval_for_all_805_instructions_with_seed_0() {
        let expected = read_bits(include_str!("../../tests/fixtures/swap_seed0.txt"));
        assert_eq!(expected.len(), 805);
        let ours = decisions(0);
        let mismatches: Vec<usize> = (0..805).filter(|&i| ours[i] != expected[i]).collect();
        assert!(
            mismatches.is_empty(),
            "swap decisions differ from alpaca_eval at rows {mismatches:?}"
        );
        // Both outcomes occur, so a constant answer cannot pass.
        let switched = ours.iter().filter(|&&s| s).count();
        assert!(switched > 300 && switched < 505, "{switched} of 805 switched");
    }

    #[test]
    fn decisions_equal_alpaca_eval_for_other_seeds() {
        for (seed, fixture) in [
            (1, include_str!("../../tests/fixtures/swap_seed1.txt")),
            (42, include_str!("../../tests/fixtures/swap_seed42.txt")),
            (123, include_str!("../../tests/fixtures/swap_seed123.txt")),
        ] {
            let expected = read_bits(fixture);
            assert_eq!(expected.len(), 805);
            assert_eq!(decisions(seed), expected, "seed {seed}");
        }
    }

    #[test]
    fn another_seed_changes_some_decisions() {
        assert_ne!(decisions(0), decisions(1));
    }

    // Reference values printed by CPython 3.11.7 (`random` module, no alpaca_eval needed):
    //   r = random.Random("is_switched_outputs" + "What is 2+2?" + "0"); [r.getrandbits(32) for _ in range(3)]
    //   random.Random("").random()
    //   random.Random(5489).getrandbits(32)
    //   r = random.Random("\x00\x00abc"); [r.getrandbits(32) for _ in range(2)]
    #[test]
    fn python_random_matches_cpython_outputs() {
        let mut r = PythonRandom::from_str_seed("is_switched_outputsWhat is 2+2?0");
        let got: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(got, [241_889_308, 4_130_247_318, 421_551_143]);
        assert_eq!(PythonRandom::from_str_seed("").random(), 0.960_225_652_564_187_5);
        assert_eq!(PythonRandom::from_u64_seed(5489).next_u32(), 3_382_763_572);
        // Leading NUL bytes make the seed integer shorter: CPython drops the zero words.
        let mut nul = PythonRandom::from_str_seed("\0\0abc");
        assert_eq!([nul.next_u32(), nul.next_u32()], [1_217_561_204, 2_009_949_103]);
    }

    #[test]
    fn a_switched_preference_maps_back_as_three_minus_p() {
        let switched = SwapDecision::new(true);
        assert_eq!(switched.unswap_preference(Some(1.0)), Some(2.0));
        assert_eq!(switched.unswap_preference(Some(2.0)), Some(1.0));
        assert_eq!(switched.unswap_preference(Some(1.25)), Some(1.75));
        assert_eq!(switched.unswap_preference(None), None);
        assert_eq!(switched.unswap_preference(Some(0.0)), Some(0.0));
        let kept = SwapDecision::new(false);
        assert_eq!(kept.unswap_preference(Some(1.25)), Some(1.25));
        assert_eq!(kept.unswap_preference(None), None);
    }

    #[test]
    fn order_swaps_only_when_switched() {
        assert_eq!(SwapDecision::new(true).order("ref", "model"), ("model", "ref"));
        assert_eq!(SwapDecision::new(false).order("ref", "model"), ("ref", "model"));
    }
}
