//! Changes: pure functions from a register's current state to its next
//! state (the memo's `change`). A read is the identity. A write whose
//! precondition does not hold (a compare-and-set that finds another value,
//! an append that would exceed the value limit, a write at the last version)
//! leaves the value and version alone and reports that the precondition
//! failed. Either way the proposer writes the resulting state back, which is
//! what makes reads and failed preconditions linearizable.
//!
//! Every write request, whether it takes effect or not, is remembered in the
//! state it leaves (`RegisterState::recent`), so that a retried copy of it is
//! recognised instead of evaluated again.

use crate::limits;
use crate::types::{Evaluation, Fingerprint, RegisterState, Value, Version};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Identity: observe the current state.
    Read,
    /// Set the value unconditionally.
    Put(Value),
    /// Set `new` if the current value is `expect` (`None`: the key is absent).
    CasValue { expect: Option<Value>, new: Value },
    /// Set `new` if the current version is `expect`.
    CasVersion { expect: Version, new: Value },
    /// Remove the value, leaving a tombstone that keeps the version.
    Delete,
    /// Append bytes to the current value (to nothing if absent); fails,
    /// changing nothing, if the result would exceed the value limit.
    Append(Value),
    /// Delete if the current version is `expect`: a lock's holder releases
    /// it this way, so a release that arrives after the lock changed hands
    /// cannot free it from under the next holder.
    DeleteVersion { expect: Version },
}

/// The result of applying a change to a state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub state: RegisterState,
    /// False when a precondition failed; then `state` has the current value
    /// and version, and remembers the failed request.
    pub precondition_held: bool,
}

impl Change {
    /// Applies the change for request `request`. Every write that takes
    /// effect bumps the version by one, so versions grow along the chain of
    /// states (the memo's Lemma 1).
    pub fn apply(&self, current: &RegisterState, request: Fingerprint) -> Applied {
        if !self.is_write() {
            return Applied { state: current.clone(), precondition_held: true };
        }
        let next = current.version.next();
        let new_value = self.new_value(current);
        let (Some(version), Some(value)) = (next, new_value) else {
            let mut state = current.clone();
            state.remember(Evaluation { request, version: current.version, took_effect: false });
            return Applied { state, precondition_held: false };
        };
        let mut state = current.clone();
        (state.value, state.version) = (value, version);
        state.remember(Evaluation { request, version, took_effect: true });
        Applied { state, precondition_held: true }
    }

    /// The value a write leaves (`Some(None)`: absent), or `None` when its
    /// precondition fails on `current`.
    fn new_value(&self, current: &RegisterState) -> Option<Option<Value>> {
        match self {
            Change::Read => Some(current.value.clone()),
            Change::Put(v) => Some(Some(v.clone())),
            Change::CasValue { expect, new } => (current.value == *expect).then(|| Some(new.clone())),
            Change::CasVersion { expect, new } => (current.version == *expect).then(|| Some(new.clone())),
            Change::Delete => Some(None),
            Change::DeleteVersion { expect } => (current.version == *expect).then_some(None),
            Change::Append(tail) => {
                let head = current.value.as_ref().map_or(&[][..], |v| v.as_bytes());
                let fits = head.len() + tail.0.len() <= limits::VALUE_BYTES_MAX;
                fits.then(|| Some(Value([head, tail.as_bytes()].concat())))
            }
        }
    }

    /// The value a write leaves when it takes effect, if the change alone
    /// determines it (so a reply need not carry it back): `Some(None)` for a
    /// delete, `None` for an append, whose result depends on what was there.
    pub fn value_written(&self) -> Option<Option<Value>> {
        match self {
            Change::Put(v) | Change::CasValue { new: v, .. } | Change::CasVersion { new: v, .. } => {
                Some(Some(v.clone()))
            }
            Change::Delete | Change::DeleteVersion { .. } => Some(None),
            Change::Read | Change::Append(_) => None,
        }
    }

    /// Whether applying this change can alter the state; only writes are
    /// remembered by the register and need protection from a second run.
    pub fn is_write(&self) -> bool {
        !matches!(self, Change::Read)
    }

    /// The largest value this change carries, for limit checks.
    pub fn value_bytes(&self) -> usize {
        match self {
            Change::Read | Change::Delete | Change::DeleteVersion { .. } => 0,
            Change::Put(v) | Change::CasVersion { new: v, .. } | Change::Append(v) => v.0.len(),
            Change::CasValue { expect, new } => new.0.len().max(expect.as_ref().map_or(0, |e| e.0.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Fingerprint = Fingerprint([7; 8]);
    const OTHER: Fingerprint = Fingerprint([200; 8]);

    fn st(value: Option<&str>, version: u64) -> RegisterState {
        RegisterState { value: value.map(Value::from), version: Version(version), ..Default::default() }
    }

    /// `st(value, version)` remembering that R took effect (or not) at `at`.
    fn after(value: Option<&str>, version: u64, at: u64, took_effect: bool) -> RegisterState {
        let recent = vec![Evaluation { request: R, version: Version(at), took_effect }];
        RegisterState { recent, ..st(value, version) }
    }

    fn applied(state: RegisterState, held: bool) -> Applied {
        Applied { state, precondition_held: held }
    }

    #[test]
    fn read_is_identity_and_leaves_no_trace() {
        assert_eq!(Change::Read.apply(&st(Some("a"), 3), R), applied(st(Some("a"), 3), true));
        assert_eq!(Change::Read.apply(&st(None, 0), R), applied(st(None, 0), true));
    }

    #[test]
    fn put_sets_value_bumps_version_and_remembers_the_request() {
        let c = Change::Put(Value::from("b"));
        assert_eq!(c.apply(&st(Some("a"), 3), R), applied(after(Some("b"), 4, 4, true), true));
        assert_eq!(c.apply(&st(None, 0), R), applied(after(Some("b"), 1, 1, true), true));
    }

    #[test]
    fn cas_value_matches_or_leaves_value_and_remembers_the_failure() {
        let c = Change::CasValue { expect: Some(Value::from("a")), new: Value::from("b") };
        assert_eq!(c.apply(&st(Some("a"), 3), R), applied(after(Some("b"), 4, 4, true), true));
        assert_eq!(c.apply(&st(Some("x"), 3), R), applied(after(Some("x"), 3, 3, false), false));
        assert_eq!(c.apply(&st(None, 5), R), applied(after(None, 5, 5, false), false));
    }

    #[test]
    fn cas_value_expecting_absent() {
        let c = Change::CasValue { expect: None, new: Value::from("b") };
        assert_eq!(c.apply(&st(None, 2), R), applied(after(Some("b"), 3, 3, true), true));
        assert_eq!(c.apply(&st(Some("a"), 2), R), applied(after(Some("a"), 2, 2, false), false));
    }

    #[test]
    fn cas_version_matches_or_leaves_value() {
        let c = Change::CasVersion { expect: Version(3), new: Value::from("b") };
        assert_eq!(c.apply(&st(Some("a"), 3), R), applied(after(Some("b"), 4, 4, true), true));
        assert_eq!(c.apply(&st(Some("a"), 4), R), applied(after(Some("a"), 4, 4, false), false));
    }

    #[test]
    fn delete_leaves_tombstone_with_next_version() {
        assert_eq!(Change::Delete.apply(&st(Some("a"), 3), R), applied(after(None, 4, 4, true), true));
        assert_eq!(Change::Delete.apply(&st(None, 4), R), applied(after(None, 5, 5, true), true));
    }

    #[test]
    fn delete_version_deletes_only_at_the_expected_version() {
        let c = Change::DeleteVersion { expect: Version(3) };
        assert_eq!(c.apply(&st(Some("a"), 3), R), applied(after(None, 4, 4, true), true));
        assert_eq!(c.apply(&st(Some("b"), 5), R), applied(after(Some("b"), 5, 5, false), false));
    }

    #[test]
    fn append_concatenates_up_to_the_value_limit() {
        let c = Change::Append(Value::from("cd"));
        assert_eq!(c.apply(&st(Some("ab"), 1), R), applied(after(Some("abcd"), 2, 2, true), true));
        assert_eq!(c.apply(&st(None, 7), R), applied(after(Some("cd"), 8, 8, true), true));
        let full = Value(vec![b'x'; limits::VALUE_BYTES_MAX - 1]);
        let current = RegisterState { value: Some(full.clone()), version: Version(1), ..Default::default() };
        let refused = c.apply(&current, R);
        assert!(!refused.precondition_held);
        assert_eq!((refused.state.value, refused.state.version), (Some(full), Version(1)));
    }

    #[test]
    fn a_write_at_the_last_version_fails_rather_than_wrap() {
        let c = Change::Put(Value::from("b"));
        assert_eq!(
            c.apply(&st(Some("a"), u64::MAX), R),
            applied(after(Some("a"), u64::MAX, u64::MAX, false), false)
        );
    }

    #[test]
    fn the_newest_writes_are_remembered_up_to_the_limit() {
        let mut state = st(None, 0);
        for n in 1..=40u8 {
            let request = Fingerprint([n; 8]);
            state = Change::Put(Value::from("v")).apply(&state, request).state;
        }
        assert_eq!(state.recent.len(), limits::RECENT_WRITES_MAX);
        assert_eq!(state.find(Fingerprint([40; 8])).map(|e| e.version), Some(Version(40)));
        assert_eq!(state.find(Fingerprint([9; 8])).map(|e| e.version), Some(Version(9)));
        assert_eq!(state.find(Fingerprint([8; 8])), None, "forgotten");
        assert_eq!(state.find(OTHER), None);
        // The oldest remembered is the write that created version 9: a
        // request evaluated after it (on a state at version 9 or later) is
        // remembered...
        assert!(state.remembers_since(Version(9)));
        // ... but one that may have been evaluated at version 8 is not.
        assert!(!state.remembers_since(Version(8)));
        // A failed evaluation at the oldest version may have had others at
        // that version before it, now forgotten.
        let mut failed_last = state.clone();
        failed_last.recent.last_mut().expect("full").took_effect = false;
        assert!(!failed_last.remembers_since(Version(9)));
        assert!(failed_last.remembers_since(Version(10)));
        assert!(st(None, 5).remembers_since(Version(0)), "nothing forgotten yet");
    }

    #[test]
    fn value_written_is_known_except_for_appends() {
        assert_eq!(Change::Put(Value::from("a")).value_written(), Some(Some(Value::from("a"))));
        assert_eq!(Change::Delete.value_written(), Some(None));
        assert_eq!(Change::Append(Value::from("a")).value_written(), None);
    }

    #[test]
    fn value_bytes_counts_largest_value() {
        let c = Change::CasValue { expect: Some(Value::from("long")), new: Value::from("x") };
        assert_eq!(c.value_bytes(), 4);
        assert_eq!(Change::Put(Value::from("abc")).value_bytes(), 3);
        assert_eq!(Change::Append(Value::from("ab")).value_bytes(), 2);
        assert_eq!(Change::Read.value_bytes(), 0);
    }
}
