//! Random numbers for jitter (recycling limits) and run ids: nothing that needs to be
//! unpredictable, so no dependency for it.

/// xorshift64*: jitter and run ids, nothing that needs to be unpredictable.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Self((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub(super) fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// A number in `0.0..1.0`.
    pub(super) fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        let mut rng = Rng::seeded();
        for _ in 0..1000 {
            assert!(rng.below(101) <= 100);
            let f = rng.fraction();
            assert!((0.0..1.0).contains(&f));
        }
    }
}
