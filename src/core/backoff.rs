//! Exponential backoff with full jitter, for proposers whose attempt failed.
//! Jitter is what breaks the symmetry between duelling proposers: each waits
//! a random time, so one usually completes both phases before the other
//! prepares again.

use super::rng::Rng;
use crate::limits;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { failures: 0 }
    }

    /// The ceiling of the next delay: MIN doubled once per failure so far,
    /// capped at MAX.
    pub fn ceiling_ms(&self) -> u64 {
        let doubled = limits::BACKOFF_MS_MIN.saturating_mul(1u64 << self.failures.min(20));
        doubled.min(limits::BACKOFF_MS_MAX)
    }

    /// Records a failure and returns how long to wait, in microseconds:
    /// uniform in `0..=ceiling`.
    pub fn next_delay_us(&mut self, rng: &mut Rng) -> u64 {
        let ceiling_us = self.ceiling_ms() * 1000;
        self.failures = self.failures.saturating_add(1);
        rng.range(0, ceiling_us)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let mut b = Backoff::new();
        let mut rng = Rng::new(3);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling_ms());
            let d = b.next_delay_us(&mut rng);
            assert!(d <= ceilings.last().copied().unwrap_or(0) * 1000);
        }
        assert_eq!(ceilings, vec![2, 4, 8, 16, 32, 64, 128, 200, 200, 200]);
    }
}
