//! The synthetic data set's draws (uniform floats, integers, points, shuffles) on top of
//! the shared SplitMix64, so a seed always yields the same data set on every platform.

use foldtrain_proto::rng::SplitMix64;

pub(crate) struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }

    /// An independent stream for item `index` of stream `stream`: images render in
    /// parallel, each from its own stream, so thread scheduling cannot change the output.
    pub fn derive(seed: u64, stream: u64, index: u64) -> Self {
        let mut mixer = SplitMix64::new(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        let a = mixer.next_u64();
        Rng::new(a ^ index.wrapping_mul(0xE703_7ED1_A0B4_28DB))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in lo..=hi.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// A point within `radius` of the image centre (normalised coordinates).
    pub fn point_near_centre(&mut self, radius: f32) -> (f32, f32) {
        loop {
            let (x, y) = (self.range(-1.0, 1.0), self.range(-1.0, 1.0));
            if x * x + y * y <= 1.0 {
                return (0.5 + x * radius, 0.5 + y * radius);
            }
        }
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.int(0, i);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |mut r: Rng| (0..4).map(|_| r.next_u64()).collect::<Vec<_>>();
        assert_eq!(draw(Rng::derive(7, 1, 3)), draw(Rng::derive(7, 1, 3)));
        assert_ne!(draw(Rng::derive(7, 1, 3)), draw(Rng::derive(7, 1, 4)));
        assert_ne!(draw(Rng::derive(7, 1, 3)), draw(Rng::derive(7, 2, 3)));
        // SplitMix64's published first output for seed 0.
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut r = Rng::new(1);
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.unit())));
        assert!((0..1000).all(|_| (2..=5).contains(&r.int(2, 5))));
    }
}
