//! Running many seeds on every core.

use super::{SeedReport, SimOptions, run_seed};
use std::sync::atomic::{AtomicU64, Ordering};

/// Runs seeds `first..first + count` on `jobs` threads, each with the
/// options `options(seed)` gives, and hands every report to `each` as it
/// comes (from any thread, in no particular order).
pub fn sweep<O, E>(first: u64, count: u64, jobs: usize, options: O, each: E)
where
    O: Fn(u64) -> SimOptions + Sync,
    E: Fn(&SimOptions, SeedReport) + Sync,
{
    let next = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let options = options(first.wrapping_add(i));
                    let report = run_seed(&options);
                    each(&options, report);
                }
            });
        }
    });
}

/// Every core the machine offers.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
