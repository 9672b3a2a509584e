//! Changes: pure functions from a register's current state to its next
//! state (the memo's `change`). A read is the identity; a compare-and-set
//! whose expectation does not hold is the identity too, and reports that the
//! precondition failed. Either way the proposer writes the resulting state
//! back, which is what makes reads and failed CAS linearizable.

use crate::types::{Ballot, RegisterState, Value, Version};
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
}

/// The result of applying a change to a state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub state: RegisterState,
    /// False when a CAS found a value or version other than the expected one;
    /// then `state` is the unchanged current state.
    pub precondition_held: bool,
}

impl Change {
    /// Applies the change in the proposal attempt at ballot `origin`. Every
    /// write bumps the version by one, so versions grow along the chain of
    /// states (the memo's Lemma 1), and records `origin`; the identity keeps
    /// the state whole.
    pub fn apply(&self, current: &RegisterState, origin: Ballot) -> Applied {
        let held = match self {
            Change::Read | Change::Put(_) | Change::Delete => true,
            Change::CasValue { expect, .. } => current.value == *expect,
            Change::CasVersion { expect, .. } => current.version == *expect,
        };
        let new_value = match self {
            _ if !held => return unchanged(current, false),
            Change::Read => return unchanged(current, true),
            Change::Put(v) => Some(v.clone()),
            Change::CasValue { new, .. } | Change::CasVersion { new, .. } => Some(new.clone()),
            Change::Delete => None,
        };
        let lineage = RegisterState::lineage_after(current);
        let state =
            RegisterState { value: new_value, version: Version(current.version.0 + 1), origin, lineage };
        Applied { state, precondition_held: true }
    }

    /// Whether applying this change can alter the state (used to decide
    /// whether an unanswered request may have taken effect).
    pub fn is_write(&self) -> bool {
        !matches!(self, Change::Read)
    }

    /// The largest value this change carries, for limit checks.
    pub fn value_bytes(&self) -> usize {
        match self {
            Change::Read | Change::Delete => 0,
            Change::Put(v) | Change::CasVersion { new: v, .. } => v.0.len(),
            Change::CasValue { expect, new } => new.0.len().max(expect.as_ref().map_or(0, |e| e.0.len())),
        }
    }
}

fn unchanged(current: &RegisterState, held: bool) -> Applied {
    Applied { state: current.clone(), precondition_held: held }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Ancestor;

    /// The attempt applying changes, and the one that wrote the input.
    const O: Ballot = Ballot { round: 9, node: crate::types::NodeId(1) };
    const P: Ballot = Ballot { round: 4, node: crate::types::NodeId(2) };

    /// An input state, written by the attempt at P.
    fn st(value: Option<&str>, version: u64) -> RegisterState {
        RegisterState { value: value.map(Value::from), version: Version(version), origin: P, lineage: vec![] }
    }

    /// A state the attempt at O wrote on top of an input state.
    fn new_st(value: Option<&str>, version: u64) -> RegisterState {
        let parent = Ancestor { origin: P, version: Version(version - 1) };
        RegisterState { origin: O, lineage: vec![parent], ..st(value, version) }
    }

    fn applied(state: RegisterState, held: bool) -> Applied {
        Applied { state, precondition_held: held }
    }

    #[test]
    fn read_is_identity() {
        assert_eq!(Change::Read.apply(&st(Some("a"), 3), O), applied(st(Some("a"), 3), true));
        assert_eq!(Change::Read.apply(&st(None, 0), O), applied(st(None, 0), true));
    }

    #[test]
    fn put_sets_value_and_bumps_version() {
        let c = Change::Put(Value::from("b"));
        assert_eq!(c.apply(&st(Some("a"), 3), O), applied(new_st(Some("b"), 4), true));
        assert_eq!(c.apply(&st(None, 0), O), applied(new_st(Some("b"), 1), true));
    }

    #[test]
    fn cas_value_matches_or_leaves_state() {
        let c = Change::CasValue { expect: Some(Value::from("a")), new: Value::from("b") };
        assert_eq!(c.apply(&st(Some("a"), 3), O), applied(new_st(Some("b"), 4), true));
        assert_eq!(c.apply(&st(Some("x"), 3), O), applied(st(Some("x"), 3), false));
        assert_eq!(c.apply(&st(None, 5), O), applied(st(None, 5), false));
    }

    #[test]
    fn cas_value_expecting_absent() {
        let c = Change::CasValue { expect: None, new: Value::from("b") };
        assert_eq!(c.apply(&st(None, 2), O), applied(new_st(Some("b"), 3), true));
        assert_eq!(c.apply(&st(Some("a"), 2), O), applied(st(Some("a"), 2), false));
    }

    #[test]
    fn cas_version_matches_or_leaves_state() {
        let c = Change::CasVersion { expect: Version(3), new: Value::from("b") };
        assert_eq!(c.apply(&st(Some("a"), 3), O), applied(new_st(Some("b"), 4), true));
        assert_eq!(c.apply(&st(Some("a"), 4), O), applied(st(Some("a"), 4), false));
    }

    #[test]
    fn delete_leaves_tombstone_with_next_version() {
        assert_eq!(Change::Delete.apply(&st(Some("a"), 3), O), applied(new_st(None, 4), true));
        assert_eq!(Change::Delete.apply(&st(None, 4), O), applied(new_st(None, 5), true));
    }

    #[test]
    fn writes_record_their_origin_and_the_identity_keeps_the_old_one() {
        let current = st(Some("a"), 3);
        assert_eq!(Change::Read.apply(&current, O).state.origin, P);
        let failed = Change::CasVersion { expect: Version(9), new: Value::from("b") };
        assert_eq!(failed.apply(&current, O).state.origin, P);
        assert_eq!(Change::Delete.apply(&current, O).state.origin, O);
    }

    #[test]
    fn the_lineage_names_the_newest_ancestors_up_to_the_limit() {
        let mut state = st(None, 0);
        for round in 1..=40u64 {
            let origin = Ballot { round, node: crate::types::NodeId(1) };
            state = Change::Put(Value::from("v")).apply(&state, origin).state;
        }
        let by = |round| Ballot { round, node: crate::types::NodeId(1) };
        assert_eq!(state.lineage.len(), crate::limits::LINEAGE_ORIGINS_MAX);
        assert_eq!(state.lineage[0], Ancestor { origin: by(39), version: Version(39) });
        assert_eq!(state.descends_from(by(40), Version(40)), Some(true), "itself");
        assert_eq!(state.descends_from(by(30), Version(30)), Some(true));
        assert_eq!(state.descends_from(by(31), Version(30)), Some(false), "another state at 30");
        assert_eq!(state.descends_from(by(41), Version(41)), Some(false), "above the state");
        assert_eq!(state.descends_from(by(24), Version(24)), Some(true));
        assert_eq!(state.descends_from(by(23), Version(23)), None, "beyond the lineage");
    }

    #[test]
    fn a_short_lineage_reaches_back_to_the_initial_state() {
        let one = Change::Put(Value::from("v")).apply(&RegisterState::default(), O).state;
        assert_eq!(one.descends_from(O, Version(1)), Some(true));
        assert_eq!(one.descends_from(P, Version(1)), Some(false));
        assert_eq!(one.descends_from(P, Version(0)), Some(false));
    }

    #[test]
    fn value_bytes_counts_largest_value() {
        let c = Change::CasValue { expect: Some(Value::from("long")), new: Value::from("x") };
        assert_eq!(c.value_bytes(), 4);
        assert_eq!(Change::Put(Value::from("abc")).value_bytes(), 3);
        assert_eq!(Change::Read.value_bytes(), 0);
    }
}
