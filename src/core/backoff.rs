//! Exponential backoff with full jitter, for proposers whose attempt failed.
//! Jitter is what breaks the symmetry between duelling proposers: each waits
//! a random time, so one usually completes both phases before the other
//! prepares again. For that the wait must be comparable to an attempt, so
//! the ceiling starts at the duration of the attempt that failed (at least
//! `BACKOFF_MS_MIN`), and doubles with every failure up to `BACKOFF_MS_MAX`:
//! a fixed start tuned for a fast network would make proposers on a slower
//! one collide round after round.

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

    /// The ceiling of the next delay, in microseconds, after an attempt
    /// that took `attempt_us`.
    pub fn ceiling_us(&self, attempt_us: u64) -> u64 {
        let base = attempt_us.max(limits::BACKOFF_MS_MIN * 1000);
        let doubled = base.saturating_mul(1u64 << self.failures.min(20));
        doubled.min(limits::BACKOFF_MS_MAX * 1000)
    }

    /// Records a failure of an attempt that took `attempt_us` and returns how
    /// long to wait, in microseconds: uniform in `0..=ceiling`.
    pub fn next_delay_us(&mut self, attempt_us: u64, rng: &mut Rng) -> u64 {
        let ceiling_us = self.ceiling_us(attempt_us);
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
            ceilings.push(b.ceiling_us(0) / 1000);
            let d = b.next_delay_us(0, &mut rng);
            assert!(d <= ceilings.last().copied().unwrap_or(0) * 1000);
        }
        assert_eq!(ceilings, vec![2, 4, 8, 16, 32, 64, 128, 200, 200, 200]);
    }

    #[test]
    fn the_ceiling_starts_at_the_length_of_the_failed_attempt() {
        let mut b = Backoff::new();
        let mut rng = Rng::new(3);
        assert_eq!(b.ceiling_us(30_000), 30_000);
        b.next_delay_us(30_000, &mut rng);
        assert_eq!(b.ceiling_us(30_000), 60_000);
        assert_eq!(b.ceiling_us(500_000), limits::BACKOFF_MS_MAX * 1000);
    }
}
