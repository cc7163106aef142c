//! numpy's legacy `RandomState`: MT19937 seeded by `init_genrand`, and the `shuffle`
//! that scikit-learn's splitters call, reproduced draw for draw.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// `numpy.random.RandomState(seed)` for an integer seed.
#[derive(Clone)]
pub struct RandomState {
    key: [u32; N],
    pos: usize,
}

impl RandomState {
    /// Seeds the generator as `RandomState(seed)` does for an integer seed (`init_genrand`).
    pub fn new(seed: u32) -> Self {
        let mut key = [0u32; N];
        let mut s = seed;
        for (pos, slot) in key.iter_mut().enumerate() {
            *slot = s;
            s = 1_812_433_253u32
                .wrapping_mul(s ^ (s >> 30))
                .wrapping_add(pos as u32 + 1);
        }
        Self { key, pos: N }
    }

    fn refill(&mut self) {
        let key = &mut self.key;
        for i in 0..N {
            let y = (key[i] & UPPER_MASK) | (key[(i + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            key[i] = key[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// The next 32 random bits (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.refill();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// A uniform integer in `0..=max` by masked rejection sampling, as numpy's
    /// `random_interval` draws it (32-bit draws while `max` fits in 32 bits).
    pub fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        if max <= u64::from(u32::MAX) {
            loop {
                let value = u64::from(self.next_u32()) & mask;
                if value <= max {
                    return value;
                }
            }
        }
        loop {
            let high = u64::from(self.next_u32());
            let value = ((high << 32) | u64::from(self.next_u32())) & mask;
            if value <= max {
                return value;
            }
        }
    }

    /// Shuffles in place exactly as `RandomState.shuffle` does a one-dimensional array:
    /// a Fisher-Yates pass from the end, each swap partner drawn by `random_interval`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.random_interval(i as u64) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_random_state_raw_draws() {
        // np.random.RandomState(5489).randint(0, 2**32, size=10000, dtype=np.uint64), which
        // returns the raw 32-bit outputs; they equal the reference MT19937 sequence.
        let mut rs = RandomState::new(5489);
        assert_eq!(rs.next_u32(), 3_499_211_612);
        assert_eq!(rs.next_u32(), 581_869_302);
        assert_eq!(rs.next_u32(), 3_890_346_734);
        let mut rs = RandomState::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = rs.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn shuffle_matches_numpy_permutation() {
        // np.random.RandomState(42).shuffle(a := np.arange(10)); a
        let mut rs = RandomState::new(42);
        let mut items: Vec<u32> = (0..10).collect();
        rs.shuffle(&mut items);
        assert_eq!(items, [8, 1, 5, 0, 7, 2, 9, 4, 3, 6]);
        // np.random.RandomState(0).shuffle(a := np.arange(7)); a
        let mut rs = RandomState::new(0);
        let mut items: Vec<u32> = (0..7).collect();
        rs.shuffle(&mut items);
        assert_eq!(items, [6, 2, 1, 3, 0, 5, 4]);
    }

    #[test]
    fn random_interval_stays_in_range() {
        let mut rs = RandomState::new(7);
        for max in [0u64, 1, 2, 3, 5, 100, 1 << 33] {
            for _ in 0..200 {
                assert!(rs.random_interval(max) <= max);
            }
        }
    }
}
