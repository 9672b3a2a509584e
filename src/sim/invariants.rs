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
use crate::types::{Key, Time, Value, Version};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
struct KeyAcks {
    /// (completion time, highest version acknowledged up to then), in
    /// completion order.
    completed: Vec<(Time, Version)>,
    /// The value acknowledged at each version, where an answer told it.
    values: BTreeMap<Version, Option<Value>>,
}

#[derive(Debug, Default)]
pub struct Descent {
    keys: BTreeMap<Key, KeyAcks>,
}

impl Descent {
    /// Records that the operation on `key` invoked at `invoked` was
    /// acknowledged at `completed` (not before any earlier call's) at
    /// `version`, with `value` when the answer told the value.
    pub fn ack(
        &mut self,
        key: &Key,
        invoked: Time,
        completed: Time,
        version: Version,
        value: Option<Option<Value>>,
    ) -> Result<(), String> {
        let acks = self.keys.entry(key.clone()).or_default();
        let before = acks.completed.partition_point(|(t, _)| *t < invoked);
        let floor = before.checked_sub(1).map(|i| acks.completed[i].1);
        if let Some(floor) = floor.filter(|f| version < *f) {
            return Err(format!(
                "t={}us descent: key {key} acknowledged at version {version} after version {floor} was \
                 acknowledged before the operation began",
                completed.0
            ));
        }
        if let Some(value) = value {
            match acks.values.get(&version) {
                Some(seen) if *seen != value => {
                    return Err(format!(
                        "t={}us descent: key {key} has two acknowledged values at version {version}: {} and {}",
                        completed.0,
                        show(seen.as_ref()),
                        show(value.as_ref())
                    ));
                }
                Some(_) => {}
                None => {
                    acks.values.insert(version, value);
                }
            }
        }
        let highest = acks.completed.last().map_or(version, |(_, v)| (*v).max(version));
        acks.completed.push((completed, highest));
        Ok(())
    }
}

fn show(value: Option<&Value>) -> String {
    match value {
        Some(v) => format!("{:?}", String::from_utf8_lossy(&v.0)),
        None => "absent".to_string(),
    }
}

/// The books of the append lists: how every append ended, checked against
/// each list's final value.
#[derive(Debug, Default)]
pub struct Lists {
    acked: BTreeMap<u64, BTreeSet<String>>,
    not_applied: BTreeMap<u64, BTreeSet<String>>,
}

impl Lists {
    /// The append of `element` to list `list` ended as `kind` (ok, fail or
    /// info). A failed append did not take effect and never will.
    pub fn append_ended(&mut self, list: u64, element: &str, kind: &str) {
        let books = match kind {
            "ok" => &mut self.acked,
            "fail" => &mut self.not_applied,
            _ => return,
        };
        books.entry(list).or_default().insert(element.to_string());
    }

    /// Checks list `list`'s final value: no element twice (a write applied
    /// twice), none whose append did not take effect (a "not run" that did
    /// not stay true), every acknowledged one present (a lost write).
    pub fn check_final(&self, list: u64, value: Option<&Value>) -> Vec<String> {
        let text = value.map(|v| String::from_utf8_lossy(&v.0).into_owned()).unwrap_or_default();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for element in text.split(',').filter(|e| !e.is_empty()) {
            *seen.entry(element).or_default() += 1;
        }
        let mut violations = Vec::new();
        for (element, n) in seen.iter().filter(|(_, n)| **n > 1) {
            violations.push(format!("list l{list}: element {element} appended {n} times (applied twice)"));
        }
        for element in
            self.not_applied.get(&list).into_iter().flatten().filter(|e| seen.contains_key(e.as_str()))
        {
            violations
                .push(format!("list l{list}: element {element} is present, but its append was not applied"));
        }
        for element in self.acked.get(&list).into_iter().flatten().filter(|e| !seen.contains_key(e.as_str()))
        {
            violations.push(format!("list l{list}: acknowledged element {element} is missing"));
        }
        violations
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

    fn v(s: &str) -> Option<Option<Value>> {
        Some(Some(Value::from(s)))
    }

    #[test]
    fn a_chain_passes() {
        let mut d = Descent::default();
        let k = Key::from("k");
        assert!(d.ack(&k, Time(0), Time(10), Version(1), v("a")).is_ok());
        assert!(d.ack(&k, Time(20), Time(30), Version(2), v("b")).is_ok());
        // Concurrent with the first: may have seen an older state.
        assert!(d.ack(&k, Time(5), Time(40), Version(1), v("a")).is_ok());
        // An answer that did not tell the value says nothing about it.
        assert!(d.ack(&k, Time(5), Time(40), Version(2), None).is_ok());
    }

    #[test]
    fn going_back_after_an_ack_is_caught() {
        let mut d = Descent::default();
        let k = Key::from("k");
        assert!(d.ack(&k, Time(0), Time(10), Version(2), v("b")).is_ok());
        assert!(d.ack(&k, Time(11), Time(30), Version(1), v("a")).is_err());
    }

    #[test]
    fn two_values_at_one_version_are_caught() {
        let mut d = Descent::default();
        let k = Key::from("k");
        assert!(d.ack(&k, Time(0), Time(10), Version(1), v("a")).is_ok());
        assert!(d.ack(&k, Time(0), Time(20), Version(1), v("b")).is_err());
        assert!(d.ack(&Key::from("other"), Time(0), Time(20), Version(1), v("b")).is_ok());
    }

    #[test]
    fn lists_catch_duplicates_phantoms_and_losses() {
        let mut lists = Lists::default();
        lists.append_ended(0, "a", "ok");
        lists.append_ended(0, "b", "fail");
        lists.append_ended(0, "c", "info");
        assert!(lists.check_final(0, Some(&Value::from(",a,c"))).is_empty());
        assert!(lists.check_final(0, Some(&Value::from(",a"))).is_empty(), "an unknown append may be absent");
        let twice = lists.check_final(0, Some(&Value::from(",a,a")));
        assert!(twice.len() == 1 && twice[0].contains("applied twice"), "{twice:?}");
        let phantom = lists.check_final(0, Some(&Value::from(",a,b")));
        assert!(phantom.len() == 1 && phantom[0].contains("not applied"), "{phantom:?}");
        let lost = lists.check_final(0, None);
        assert!(lost.len() == 1 && lost[0].contains("missing"), "{lost:?}");
    }
}
