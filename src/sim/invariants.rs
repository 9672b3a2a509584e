//! Invariants over what clients were told. (The two that need a node's
//! insides, durability before release and promises never going down, are
//! checked by `sim::node`.)
//!
//! Descent is the memo's theorem seen from outside: the states acknowledged
//! for a key form one chain. If an acknowledgement A came before operation
//! B was invoked, B's state is A's or a descendant, so its version is at
//! least A's; and since every state has exactly one parent, two
//! acknowledged states with the same version are the same state.

use crate::checker::CheckOptions;
use crate::types::{Key, RegisterState, Time, Version};
use std::collections::BTreeMap;

#[derive(Debug, Default)]
struct KeyAcks {
    /// (completion time, highest version acknowledged up to then), in
    /// completion order.
    completed: Vec<(Time, Version)>,
    states: BTreeMap<Version, RegisterState>,
}

#[derive(Debug, Default)]
pub struct Descent {
    keys: BTreeMap<Key, KeyAcks>,
}

impl Descent {
    /// Records that the operation on `key` invoked at `invoked` was
    /// acknowledged at `completed` (not before any earlier call's) with
    /// `state`.
    pub fn ack(
        &mut self,
        key: &Key,
        invoked: Time,
        completed: Time,
        state: &RegisterState,
    ) -> Result<(), String> {
        let acks = self.keys.entry(key.clone()).or_default();
        let before = acks.completed.partition_point(|(t, _)| *t < invoked);
        let floor = before.checked_sub(1).map(|i| acks.completed[i].1);
        if let Some(floor) = floor.filter(|f| state.version < *f) {
            return Err(format!(
                "t={}us descent: key {key} acknowledged at version {} after version {floor} was \
                 acknowledged before the operation began",
                completed.0, state.version
            ));
        }
        match acks.states.get(&state.version) {
            Some(seen) if seen != state => {
                return Err(format!(
                    "t={}us descent: key {key} has two acknowledged states at version {}: {} and {}",
                    completed.0,
                    state.version,
                    show(seen),
                    show(state)
                ));
            }
            Some(_) => {}
            None => {
                acks.states.insert(state.version, state.clone());
            }
        }
        let highest = acks.completed.last().map_or(state.version, |(_, v)| (*v).max(state.version));
        acks.completed.push((completed, highest));
        Ok(())
    }
}

fn show(state: &RegisterState) -> String {
    match &state.value {
        Some(v) => format!("{:?}", String::from_utf8_lossy(&v.0)),
        None => "absent".to_string(),
    }
}

/// The checker's budget for one seed. Histories with a single hot key and
/// hundreds of indeterminate writes (heavy loss, short client timeouts) can
/// need more search than the default allows; one in about 20,000 seeds did,
/// and settled with ten times the steps in a few seconds.
const CHECK_OPTIONS: CheckOptions = CheckOptions {
    search_steps_max: 10 * crate::checker::SEARCH_STEPS_MAX_DEFAULT,
    shrink_steps_max: crate::checker::SHRINK_STEPS_MAX_DEFAULT,
    cache_bytes_max: crate::checker::CACHE_BYTES_MAX_DEFAULT,
};

/// Whether the history is linearizable: `None` if it is, else why not.
/// A history the checker cannot decide within its budget counts as a
/// failure too: a seed that cannot be judged has not passed.
pub fn linearizability(history_jsonl: &str) -> Option<String> {
    use crate::checker::{self, Verdict};
    let history = match checker::parse_history(history_jsonl.as_bytes()) {
        Ok(history) => history,
        Err(e) => return Some(format!("the history does not parse: {e}")),
    };
    match checker::check_with(&history, &CHECK_OPTIONS) {
        Verdict::Linearizable => None,
        Verdict::Violation(keys) => {
            let shown: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            Some(format!("history not linearizable: {}", shown.join("; ")))
        }
        Verdict::Unknown { key } => Some(format!("checker ran out of budget on key {key}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Value;

    fn st(v: &str, version: u64) -> RegisterState {
        RegisterState { value: Some(Value::from(v)), version: Version(version), ..RegisterState::default() }
    }

    #[test]
    fn a_chain_passes() {
        let mut d = Descent::default();
        let k = Key::from("k");
        assert!(d.ack(&k, Time(0), Time(10), &st("a", 1)).is_ok());
        assert!(d.ack(&k, Time(20), Time(30), &st("b", 2)).is_ok());
        // Concurrent with the first: may have seen an older state.
        assert!(d.ack(&k, Time(5), Time(40), &st("a", 1)).is_ok());
    }

    #[test]
    fn going_back_after_an_ack_is_caught() {
        let mut d = Descent::default();
        let k = Key::from("k");
        assert!(d.ack(&k, Time(0), Time(10), &st("b", 2)).is_ok());
        assert!(d.ack(&k, Time(11), Time(30), &st("a", 1)).is_err());
    }

    #[test]
    fn two_states_at_one_version_are_caught() {
        let mut d = Descent::default();
        let k = Key::from("k");
        assert!(d.ack(&k, Time(0), Time(10), &st("a", 1)).is_ok());
        assert!(d.ack(&k, Time(0), Time(20), &st("b", 1)).is_err());
        assert!(d.ack(&Key::from("other"), Time(0), Time(20), &st("b", 1)).is_ok());
    }
}
