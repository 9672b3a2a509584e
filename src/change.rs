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
//!
//! A watched key (`Change::Watch` switched its history on) also keeps the
//! states its writes replaced (`RegisterState::history`).

use crate::limits;
use crate::types::{Evaluation, Fingerprint, History, PastState, RegisterState, Value, Version};
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
    /// Observe the current state, and keep the key's history from now on
    /// (see `RegisterState::history`). Value and version stay as they are;
    /// once the history is on this is a read. Running it twice does no
    /// harm, so it is not remembered as a write. On a key nothing was ever
    /// accepted for it is a read too: a key that does not exist keeps no
    /// history (`docs/watch.md`).
    Watch,
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
            let mut state = current.clone();
            if *self == Change::Watch {
                state.history.get_or_insert_with(History::default);
            }
            return Applied { state, precondition_held: true };
        }
        let next = current.version.next();
        let new_value = self.new_value(current);
        let (Some(version), Some(value)) = (next, new_value) else {
            let mut state = current.clone();
            state.remember(Evaluation { request, version: current.version, took_effect: false });
            return Applied { state, precondition_held: false };
        };
        let mut state = current.clone();
        let replaced = std::mem::replace(&mut state.value, value);
        state.version = version;
        if let Some(history) = state.history.as_mut() {
            history.push(PastState { version: current.version, value: replaced });
        }
        state.remember(Evaluation { request, version, took_effect: true });
        Applied { state, precondition_held: true }
    }

    /// Whether applying this change to `state` leaves it exactly as it is,
    /// so that a read in one round may answer it without writing back: a
    /// read always, a watch once the key's history is on.
    pub fn is_identity_on(&self, state: &RegisterState) -> bool {
        match self {
            Change::Read => true,
            Change::Watch => state.history.is_some(),
            _ => false,
        }
    }

    /// The value a write leaves (`Some(None)`: absent), or `None` when its
    /// precondition fails on `current`.
    fn new_value(&self, current: &RegisterState) -> Option<Option<Value>> {
        match self {
            Change::Read | Change::Watch => Some(current.value.clone()),
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
            Change::Read | Change::Watch | Change::Append(_) => None,
        }
    }

    /// Whether applying this change can alter the state; only writes are
    /// remembered by the register and need protection from a second run.
    pub fn is_write(&self) -> bool {
        !matches!(self, Change::Read | Change::Watch)
    }

    /// The largest value this change carries, for limit checks.
    pub fn value_bytes(&self) -> usize {
        match self {
            Change::Read | Change::Watch | Change::Delete | Change::DeleteVersion { .. } => 0,
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

    fn watched(value: Option<&str>, version: u64, past: &[(u64, Option<&str>)]) -> RegisterState {
        let past = past.iter().map(|&(v, x)| PastState { version: Version(v), value: x.map(Value::from) });
        RegisterState { history: Some(History { past: past.collect() }), ..st(value, version) }
    }

    #[test]
    fn watch_turns_history_on_once_and_changes_nothing_else() {
        let once = Change::Watch.apply(&st(Some("a"), 3), R);
        assert_eq!(once, applied(watched(Some("a"), 3, &[]), true));
        assert_eq!(Change::Watch.apply(&once.state, R), once, "idempotent");
        assert!(!Change::Watch.is_write());
        assert!(!Change::Watch.is_identity_on(&st(Some("a"), 3)), "must be written back");
        assert!(Change::Watch.is_identity_on(&once.state));
        assert!(Change::Read.is_identity_on(&st(None, 0)));
        assert!(!Change::Delete.is_identity_on(&once.state));
    }

    #[test]
    fn a_write_on_a_watched_key_keeps_the_state_it_replaced() {
        let state = watched(Some("a"), 3, &[(2, None)]);
        let put = Change::Put(Value::from("b")).apply(&state, R).state;
        assert_eq!(put.history, watched(None, 9, &[(3, Some("a")), (2, None)]).history);
        let deleted = Change::Delete.apply(&put, R).state;
        assert_eq!(deleted.history, watched(None, 9, &[(4, Some("b")), (3, Some("a")), (2, None)]).history);
        let failed = Change::CasVersion { expect: Version(1), new: Value::from("c") }.apply(&deleted, R);
        assert_eq!(failed.state.history, deleted.history, "nothing replaced");
        let unwatched = Change::Put(Value::from("b")).apply(&st(Some("a"), 3), R).state;
        assert_eq!(unwatched.history, None);
    }

    #[test]
    fn history_keeps_the_newest_versions_up_to_the_count_bound() {
        let mut state = Change::Watch.apply(&st(None, 0), R).state;
        for n in 1..=100u64 {
            state = Change::Put(Value::from(format!("v{n}").as_str())).apply(&state, R).state;
        }
        let history = state.history.as_ref().expect("on");
        assert_eq!(history.past.len(), limits::WATCH_HISTORY_VERSIONS_MAX);
        assert_eq!(history.past[0], PastState { version: Version(99), value: Some(Value::from("v99")) });
        assert_eq!(history.oldest(), Some(Version(100 - limits::WATCH_HISTORY_VERSIONS_MAX as u64)));
        assert!(history.is_well_formed(state.version));
    }

    #[test]
    fn history_keeps_the_newest_values_up_to_the_byte_bound_and_always_one() {
        let big = |c: u8| Value(vec![c; limits::VALUE_BYTES_MAX / 2 + 1]);
        let mut state = Change::Watch.apply(&st(None, 0), R).state;
        for c in 0..4u8 {
            state = Change::Put(big(c)).apply(&state, R).state;
        }
        // Versions 1..=3 held big values; two of them exceed the bound.
        let past = &state.history.as_ref().expect("on").past;
        assert_eq!(past.iter().map(|s| s.version.0).collect::<Vec<_>>(), vec![3]);
        let full = Value(vec![1; limits::VALUE_BYTES_MAX]);
        let state =
            Change::Put(Value::from("x")).apply(&RegisterState { value: Some(full), ..state }, R).state;
        let past = &state.history.as_ref().expect("on").past;
        assert_eq!(past.len(), 1, "the replaced state is kept even when it alone is at the bound");
        assert!(state.history.as_ref().is_some_and(|h| h.is_well_formed(state.version)));
    }

    #[test]
    fn a_malformed_history_is_told_apart() {
        let h = |past: &[(u64, Option<&str>)]| watched(None, 0, past).history.expect("on");
        assert!(h(&[(4, None), (3, Some("a"))]).is_well_formed(Version(5)));
        assert!(!h(&[(3, None), (4, Some("a"))]).is_well_formed(Version(5)), "not descending");
        assert!(!h(&[(5, None)]).is_well_formed(Version(5)), "not below the current version");
        let long: Vec<(u64, Option<&str>)> =
            (0..=limits::WATCH_HISTORY_VERSIONS_MAX as u64).rev().map(|v| (v, None)).collect();
        assert!(!h(&long).is_well_formed(Version(1000)), "too many");
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
