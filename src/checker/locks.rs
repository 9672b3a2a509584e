//! The lock-safety checker, shared by the simulator's lock workload and
//! `paxosctl torture --lock-sessions`.
//!
//! Its input is every acquisition of a run, each with the interval of true
//! time (one clock for all: the simulator's virtual time, or one host's
//! monotonic clock) in which its holder believed it held the lock: from
//! the answer that told it so to the end of its lease by its own clock,
//! extended by each renewal it was told of, and cut short when it sent its
//! release, found the lock taken, or stopped. Per lock it requires:
//! - no two acquisitions' intervals overlap;
//! - tokens strictly increase with the time of acquisition.
//!
//! A renewal or release that was acknowledged is respected exactly when
//! these hold: a renewal extends its holder's interval, so a lock taken
//! within the lease it gave overlaps it; a release ends the interval, and
//! the next holder's token must still be larger.

use crate::core::lease::HolderId;
use crate::types::Version;
use std::collections::BTreeMap;

/// One acquisition, as its holder saw it. Times in microseconds of the
/// run's one clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquisition {
    pub lock: String,
    /// Which session (process) held it, for reports.
    pub session: u64,
    pub holder: HolderId,
    pub token: Version,
    pub from_us: u64,
    pub until_us: u64,
}

/// Every acquisition of a run.
#[derive(Clone, Debug, Default)]
pub struct LockBook {
    acquisitions: Vec<Acquisition>,
}

impl LockBook {
    /// Books an acquisition; the index names it for `extend` and `cut`.
    pub fn acquired(&mut self, a: Acquisition) -> usize {
        self.acquisitions.push(a);
        self.acquisitions.len() - 1
    }

    /// A renewal moved the end of acquisition `i`'s lease to `until_us`.
    pub fn extend(&mut self, i: usize, until_us: u64) {
        if let Some(a) = self.acquisitions.get_mut(i) {
            a.until_us = a.until_us.max(until_us);
        }
    }

    /// Acquisition `i`'s holder stopped claiming the lock at `at_us` (or
    /// earlier, if its lease ended first).
    pub fn cut(&mut self, i: usize, at_us: u64) {
        if let Some(a) = self.acquisitions.get_mut(i) {
            a.until_us = a.until_us.min(at_us);
        }
    }

    pub fn len(&self) -> usize {
        self.acquisitions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.acquisitions.is_empty()
    }

    /// The violations of lock safety, each a sentence naming both holders.
    pub fn check(&self) -> Vec<String> {
        let mut by_lock: BTreeMap<&str, Vec<&Acquisition>> = BTreeMap::new();
        self.acquisitions.iter().for_each(|a| by_lock.entry(&a.lock).or_default().push(a));
        let mut violations = Vec::new();
        for (lock, mut list) in by_lock {
            list.sort_by_key(|a| (a.from_us, a.token));
            violations.extend(list.windows(2).filter(|w| w[1].token <= w[0].token).map(|w| {
                format!(
                    "lock safety: {lock}: token {} (session {} at t={}us) is not above token {} (session {} \
                     at t={}us), taken before it",
                    w[1].token, w[1].session, w[1].from_us, w[0].token, w[0].session, w[0].from_us
                )
            }));
            for (i, a) in list.iter().enumerate() {
                if let Some(b) = list[i + 1..].iter().find(|b| b.from_us < a.until_us) {
                    violations.push(format!(
                        "lock safety: {lock}: two holders at once: session {} (holder {}, token {}) held it \
                         t={}..{}us, session {} (holder {}, token {}) from t={}us",
                        a.session,
                        a.holder,
                        a.token,
                        a.from_us,
                        a.until_us,
                        b.session,
                        b.holder,
                        b.token,
                        b.from_us
                    ));
                }
            }
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acq(lock: &str, session: u64, token: u64, from_us: u64, until_us: u64) -> Acquisition {
        Acquisition {
            lock: lock.into(),
            session,
            holder: HolderId(session),
            token: Version(token),
            from_us,
            until_us,
        }
    }

    fn book(list: &[Acquisition]) -> LockBook {
        let mut book = LockBook::default();
        list.iter().cloned().for_each(|a| {
            book.acquired(a);
        });
        book
    }

    #[test]
    fn holders_one_after_another_with_growing_tokens_pass() {
        let b = book(&[acq("l", 1, 1, 0, 100), acq("l", 2, 4, 100, 250), acq("m", 3, 1, 50, 300)]);
        assert_eq!(b.check(), Vec::<String>::new());
    }

    #[test]
    fn overlapping_holders_are_caught() {
        let b = book(&[acq("l", 1, 1, 0, 100), acq("l", 2, 4, 99, 250)]);
        let v = b.check();
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("two holders at once"), "{v:?}");
    }

    #[test]
    fn a_renewal_that_extends_into_the_next_holder_is_caught() {
        let mut b = book(&[acq("l", 1, 1, 0, 100), acq("l", 2, 4, 150, 250)]);
        b.extend(0, 200);
        assert_eq!(b.check().len(), 1);
        b.cut(0, 120);
        assert_eq!(b.check(), Vec::<String>::new());
    }

    #[test]
    fn tokens_that_do_not_grow_are_caught() {
        let b = book(&[acq("l", 1, 5, 0, 100), acq("l", 2, 5, 100, 200), acq("l", 3, 3, 200, 300)]);
        let v = b.check();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().all(|s| s.contains("is not above")), "{v:?}");
    }
}
