//! The 32-bit Mersenne Twister (MT19937), the one generator behind every random choice
//! herd must reproduce bit for bit: CPython's `random.Random` (alpaca_eval's output-order
//! swap, seeded with `init_by_array`), numpy's legacy `RandomState` and C++'s
//! `std::mt19937` (scikit-learn's liblinear calls on the LC metric's path, seeded with
//! `init_genrand`).

const STATE_WORDS: usize = 624;
const SHIFT_WORDS: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// MT19937 state and output.
#[derive(Clone)]
pub(crate) struct Mt19937 {
    state: [u32; STATE_WORDS],
    next: usize,
}

impl Mt19937 {
    /// Seeded as `init_genrand` (numpy's `RandomState(int)`, C++'s `mt19937(seed)`).
    pub(crate) fn new(seed: u32) -> Self {
        let mut state = [0u32; STATE_WORDS];
        state[0] = seed;
        for i in 1..STATE_WORDS {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        Self { state, next: STATE_WORDS }
    }

    /// Seeded as `init_by_array` (CPython's `random.seed` with an int or str key: the key is
    /// the seed integer's 32-bit words, least significant first).
    pub(crate) fn from_key(key: &[u32]) -> Self {
        let mut generator = Self::new(19_650_218);
        let mt = &mut generator.state;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..STATE_WORDS.max(key.len()) {
            let prev = mt[i - 1];
            mt[i] = (mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= STATE_WORDS {
                mt[0] = mt[STATE_WORDS - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..STATE_WORDS - 1 {
            let prev = mt[i - 1];
            mt[i] =
                (mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= STATE_WORDS {
                mt[0] = mt[STATE_WORDS - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        generator
    }

    fn twist(&mut self) {
        for i in 0..STATE_WORDS {
            let bits =
                (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % STATE_WORDS] & LOWER_MASK);
            let mut shifted = bits >> 1;
            if bits & 1 == 1 {
                shifted ^= MATRIX_A;
            }
            self.state[i] = self.state[(i + SHIFT_WORDS) % STATE_WORDS] ^ shifted;
        }
        self.next = 0;
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        if self.next >= STATE_WORDS {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A uniform integer in `0..range` (range ≥ 1) by multiply-and-shift with rejection
    /// of the biased low products, the bounded draw liblinear's coordinate shuffle uses.
    pub(crate) fn below(&mut self, range: u32) -> u32 {
        let mut product = u64::from(self.next_u32()) * u64::from(range);
        let mut low = product as u32;
        if low < range {
            let threshold = range.wrapping_neg() % range;
            while low < threshold {
                product = u64::from(self.next_u32()) * u64::from(range);
                low = product as u32;
            }
        }
        (product >> 32) as u32
    }

    /// numpy's legacy `randint(0, high)` for `high ≤ 2**32`: mask to the bits `high - 1`
    /// needs and redraw until the value is below `high`.
    pub(crate) fn numpy_randint(&mut self, high: u32) -> u32 {
        let max = high - 1;
        let mask = if max == 0 { 0 } else { u32::MAX >> max.leading_zeros() };
        loop {
            let value = self.next_u32() & mask;
            if value <= max {
                return value;
            }
        }
    }
}

/// The seeds scikit-learn hands liblinear for successive fits sharing one
/// `random_state`: `RandomState(random_state).randint(np.iinfo("i").max)`, once per fit.
pub(crate) struct LiblinearSeeds {
    generator: Mt19937,
}

impl LiblinearSeeds {
    pub(crate) fn new(random_state: u32) -> Self {
        Self { generator: Mt19937::new(random_state) }
    }

    pub(crate) fn next_seed(&mut self) -> u32 {
        self.generator.numpy_randint(i32::MAX as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_generator_sequence() {
        // The 10000th output of a default-seeded (5489) mt19937 is fixed by the C++ standard.
        let mut generator = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = generator.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn liblinear_seeds_follow_numpy_random_state_123() {
        // np.random.RandomState(123).randint(2**31 - 1), three times.
        let mut seeds = LiblinearSeeds::new(123);
        let drawn: Vec<u32> = (0..3).map(|_| seeds.next_seed()).collect();
        assert_eq!(drawn, vec![843_828_734, 914_636_141, 1_228_959_102]);
    }

    #[test]
    fn bounded_draws_stay_in_range_and_cover_it() {
        let mut generator = Mt19937::new(42);
        for range in [1u32, 2, 3, 7, 1000] {
            let mut seen = vec![false; range as usize];
            for _ in 0..20_000 {
                let v = generator.below(range);
                assert!(v < range);
                seen[v as usize] = true;
            }
            assert!(seen.iter().all(|&s| s), "range {range} not covered");
        }
    }
}
