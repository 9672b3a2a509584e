//! Watchers: the library's own `core::watch::WatchMachine`, driven in the
//! simulated world against register keys the workload writes, and checked.
//!
//! Every version a watcher hands out is checked as an observation of the
//! key: its value must be the one clients were told for that version (the
//! workload's `Descent`, where two values at one version are a violation).
//! And the watcher's own promise is checked: versions rise one at a time,
//! any skip announced by a gap first; never backwards.

use super::net::ClientAddr;
use super::workload::{ClientOut, Workload, key_name};
use crate::core::rng::Rng;
use crate::core::watch::{WatchEvent, WatchMachine};
use crate::types::{NodeId, Time, Version};
use crate::wire::Message;
use std::collections::BTreeMap;

/// Watchers' addresses start here, apart from other clients'.
pub const WATCH_ADDR_BASE: ClientAddr = 2 << 24;

struct Watcher {
    machine: WatchMachine,
    /// The last version handed out, and the version a gap said comes next.
    last: Option<Version>,
    next_after_gap: Option<Version>,
    generation: u64,
}

pub struct Watchers {
    watchers: BTreeMap<ClientAddr, Watcher>,
    /// Versions handed out, for the report.
    pub versions_seen: u64,
    pub gaps: u64,
}

impl Watchers {
    /// In half the seeds, one or two watchers of the first register keys;
    /// drawn from a stream of their own.
    pub fn choose(seed: u64, now: Time, members: &[NodeId], keys: u64) -> Option<(Watchers, ClientOut)> {
        let mut rng = Rng::new(seed ^ 0x7761_7463_6865_7273);
        if !rng.chance(0.5) {
            return None;
        }
        let mut watchers = Watchers { watchers: BTreeMap::new(), versions_seen: 0, gaps: 0 };
        let mut out = ClientOut::default();
        for i in 0..rng.range(1, 2) {
            let key = key_name(rng.below(keys.max(1)));
            let machine = WatchMachine::new(now, members.to_vec(), key, None, true, rng.next_u64());
            let addr = WATCH_ADDR_BASE + i as ClientAddr;
            let watcher = Watcher { machine, last: None, next_after_gap: None, generation: 0 };
            watchers.watchers.insert(addr, watcher);
            watchers.after_step(now, addr, None, &mut out);
        }
        Some((watchers, out))
    }

    pub fn on_wake(
        &mut self,
        now: Time,
        addr: ClientAddr,
        generation: u64,
        workload: &mut Workload,
        out: &mut ClientOut,
    ) {
        match self.watchers.get_mut(&addr) {
            Some(w) if w.generation == generation => w.machine.handle_timeout(now),
            _ => return,
        }
        self.after_step(now, addr, Some(workload), out);
    }

    pub fn on_reply(
        &mut self,
        now: Time,
        addr: ClientAddr,
        from: NodeId,
        msg: Message,
        workload: &mut Workload,
        out: &mut ClientOut,
    ) {
        let Some(w) = self.watchers.get_mut(&addr) else { return };
        w.machine.handle_message(now, from, msg);
        self.after_step(now, addr, Some(workload), out);
    }

    /// Sends what the machine wants sent, checks what it handed out, and
    /// wakes it when it next has something to do.
    fn after_step(
        &mut self,
        now: Time,
        addr: ClientAddr,
        mut workload: Option<&mut Workload>,
        out: &mut ClientOut,
    ) {
        let Some(w) = self.watchers.get_mut(&addr) else { return };
        while let Some((node, msg)) = w.machine.poll_transmit() {
            out.sends.push((addr, node, msg));
        }
        let key = key_of(&w.machine);
        while let Some(event) = w.machine.poll_event() {
            match event {
                WatchEvent::Version(state) => {
                    self.versions_seen += 1;
                    if let Some(v) = check_next(w, state.version) {
                        out.violations.push(format!("t={}us watch of {key}: {v}", now.0));
                    }
                    let seen =
                        workload.as_deref_mut().map(|wl| wl.observe(&key, now, state.version, state.value));
                    out.violations.extend(seen.and_then(Result::err));
                }
                WatchEvent::Gap { from, to } => {
                    self.gaps += 1;
                    let expected = w.last.map(|l| Version(l.0 + 1));
                    if expected.is_some_and(|e| e != from) || to < from {
                        out.violations.push(format!(
                            "t={}us watch of {key}: a gap {from}..={to} after version {:?}",
                            now.0, w.last
                        ));
                    }
                    w.next_after_gap = Some(Version(to.0.saturating_add(1)));
                }
                // Keys here are never recreated or restored: a node that
                // finds one below a version handed out read a stale state.
                WatchEvent::Behind { current, after } => out.violations.push(format!(
                    "t={}us watch of {key}: a node found version {current}, below {after} handed out",
                    now.0
                )),
                WatchEvent::Listening(_) => {}
            }
        }
        if let Some(at) = w.machine.poll_timeout() {
            w.generation += 1;
            out.wakes.push((addr, w.generation, at.max(now)));
        }
    }
}

fn key_of(machine: &WatchMachine) -> crate::types::Key {
    machine.key().clone()
}

/// Why `version` may not come next from watcher `w` (and books it).
fn check_next(w: &mut Watcher, version: Version) -> Option<String> {
    let expected = w.next_after_gap.take().or(w.last.map(|l| Version(l.0.saturating_add(1))));
    w.last = Some(version);
    match expected {
        Some(e) if version != e => Some(format!("version {version} handed out where {e} was due")),
        _ => None,
    }
}
