//! The lock workload of `paxosctl torture --lock-sessions N`: sessions that
//! take, hold, renew and release a few locks through `lock::Lock`, each on
//! its own thread with its own client, while the register workload runs.
//! Some holders stall past their TTL without renewing (as a paused process
//! would) and must then find their lease lost. Every acquisition goes into
//! a `checker::locks::LockBook` with the interval, on this host's one
//! monotonic clock, in which its holder believed it held the lock; the
//! book's check (no two holders at once, tokens strictly growing) is part
//! of torture's verdict.

use crate::checker::locks::{Acquisition, LockBook};
use crate::client::Client;
use crate::config::Config;
use crate::core::rng::Rng;
use crate::lock::{Lock, LockError};
use crate::types::{Key, NodeId};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Each lock session's lease.
const TTL: Duration = Duration::from_millis(1000);
/// Locks the sessions share.
const LOCKS: u64 = 2;
/// Percent of acquisitions whose holder stalls past its TTL.
const STALL_PERCENT: u64 = 10;
/// After its lock ended, a session waits this long at most before the next.
const THINK_MS_MAX: u64 = 200;

#[derive(Clone, Debug)]
pub struct LockOptions {
    pub sessions: usize,
    pub duration: Duration,
    pub seed: u64,
    pub timeout: Duration,
    pub node: Option<NodeId>,
    pub key_prefix: String,
}

/// How the lock workload went.
#[derive(Clone, Debug, Default)]
pub struct LockReport {
    pub acquired: u64,
    pub released: u64,
    /// Leases lost: stalled past the TTL, or renewals that did not come
    /// back in time (faults).
    pub lost: u64,
    /// Stalled holders that did not find their lease lost afterwards.
    pub stalls_unnoticed: u64,
    pub violations: Vec<String>,
}

#[derive(Default)]
struct Shared {
    book: LockBook,
    report: LockReport,
}

/// Runs the lock sessions until `options.duration` has passed, then checks.
pub fn run(config: &Config, options: &LockOptions) -> LockReport {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..options.sessions {
            let shared = Arc::clone(&shared);
            scope.spawn(move || session(config, options, i as u64, start, &shared));
        }
    });
    let shared = match Arc::try_unwrap(shared).map(Mutex::into_inner) {
        Ok(Ok(shared)) => shared,
        _ => {
            return LockReport {
                violations: vec!["lock workload: a session panicked".into()],
                ..LockReport::default()
            };
        }
    };
    let mut report = shared.report;
    report.violations.extend(shared.book.check());
    if report.stalls_unnoticed > 0 {
        report.violations.push(format!(
            "lock workload: {} holders stalled past their lease and did not find it lost",
            report.stalls_unnoticed
        ));
    }
    report
}

fn micros_since(start: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(start).as_micros().min(u128::from(u64::MAX)) as u64
}

fn with<T>(shared: &Mutex<Shared>, f: impl FnOnce(&mut Shared) -> T) -> T {
    let mut guard = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut guard)
}

/// One session: acquire, hold (renewing), release, until the deadline.
fn session(config: &Config, options: &LockOptions, index: u64, start: Instant, shared: &Mutex<Shared>) {
    let deadline = start + options.duration;
    let mut rng = Rng::new(options.seed ^ (index + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let Ok(mut client) = Client::new(config, options.node, options.timeout) else { return };
    while Instant::now() < deadline {
        let name = Key(format!("{}lock{}", options.key_prefix, rng.below(LOCKS)).into_bytes());
        let mut lock = Lock::new(&name, TTL, format!("torture session {index}").into_bytes());
        match lock.acquire(&mut client, Some(deadline)) {
            Ok(_) => hold(&mut client, &mut lock, &name, index, start, &mut rng, shared),
            Err(LockError::NotAcquired) => break,
            // Faults: the session tries again.
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(rng.range(0, THINK_MS_MAX)));
    }
}

/// Holds an acquired lock for a while, booking what the holder believes.
fn hold(
    client: &mut Client,
    lock: &mut Lock,
    name: &Key,
    index: u64,
    start: Instant,
    rng: &mut Rng,
    shared: &Mutex<Shared>,
) {
    let (Some(token), Some(until)) = (lock.token(), lock.valid_until()) else { return };
    let from_us = micros_since(start, Instant::now());
    let holder = lock.holder();
    let acquisition = Acquisition {
        lock: name.to_string(),
        session: index,
        holder,
        token,
        from_us,
        until_us: micros_since(start, until),
    };
    let i = with(shared, |s| {
        s.report.acquired += 1;
        s.book.acquired(acquisition)
    });
    if rng.below(100) < STALL_PERCENT {
        return stall(client, lock, i, start, shared);
    }
    let release_at = Instant::now() + TTL.mul_f64(rng.range(0, 300) as f64 / 100.0);
    while Instant::now() < release_at {
        match lock.keep(client) {
            Ok(next) => {
                let until = lock.valid_until().map_or(0, |u| micros_since(start, u));
                with(shared, |s| s.book.extend(i, until));
                std::thread::sleep(next.min(release_at).saturating_duration_since(Instant::now()));
            }
            Err(_) => return with(shared, |s| s.report.lost += 1),
        }
    }
    // The holder stops claiming the lock before it sends the release.
    with(shared, |s| s.book.cut(i, micros_since(start, Instant::now())));
    if lock.release(client).is_ok() {
        with(shared, |s| s.report.released += 1);
    }
}

/// Stops renewing for longer than the lease; the holder must then find its
/// lease lost.
fn stall(client: &mut Client, lock: &mut Lock, i: usize, start: Instant, shared: &Mutex<Shared>) {
    std::thread::sleep(TTL.mul_f64(1.5));
    let lost = matches!(lock.keep(client), Err(LockError::Lost { .. }));
    with(shared, |s| {
        s.report.lost += u64::from(lost);
        s.report.stalls_unnoticed += u64::from(!lost);
        if !lost {
            // Counted from here on as still held: the check then judges it.
            s.book.extend(i, micros_since(start, Instant::now()));
        }
    });
}
