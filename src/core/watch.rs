//! A watching client as a sans-IO state machine (see `docs/watch.md`):
//! which node to ask, when to ask again, when to move to another node, and
//! which versions to hand out. The blocking `client::Client` drives it, and
//! a simulator can drive the same code.
//!
//! A driver creates it, then in a loop sends what `poll_transmit` returns,
//! takes what `poll_event` returns, sleeps until `poll_timeout` or a
//! datagram arrives, and feeds `handle_message` or `handle_timeout`.
//!
//! The machine long-polls one node at a time: it asks for the versions
//! after the last one it handed out (`after`), and asks again as soon as
//! an answer comes. It starts at the key's home node (where writers send
//! the key's writes, so that node learns of every write first), and moves
//! to the next node when one stays silent for `WATCH_CLIENT_SILENCE_MS`
//! (longer than a node holds a poll), or refuses. A node is stateless for
//! the machine: any node answers any poll, so moving costs one timeout.
//!
//! What it hands out never goes backwards: a version at or below the last
//! one handed out is dropped, whatever a node says. Versions a node's
//! answer skips (the key's history no longer held them) are reported as a
//! gap, and the watch goes on from the first version after it. A node that
//! finds the key below the watch's version says so (`current`), and the
//! machine reports it before it goes on from there: a key recreated or
//! restored would otherwise be waited on in silence.

use super::client::home_index;
use crate::limits;
use crate::types::{Key, NodeId, PastState, Time, Version};
use crate::wire::{Message, WatchAnswer, WatchId};
use std::collections::VecDeque;

/// What a watch tells its user, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key held this state: each version once, in rising order.
    Version(PastState),
    /// The versions `from..=to` were overwritten before the watch saw them
    /// (the key took more writes than its history keeps); the next event
    /// is version `to + 1`.
    Gap { from: Version, to: Version },
    /// The machine asks this node from now on.
    Listening(NodeId),
    /// The key is at version `current`, below `after`, the version the
    /// watch started from or handed out last: the cluster was recreated,
    /// or the key restored from an export (a delete keeps the version
    /// counting), or the version the watch started from was never reached.
    /// The watch goes on from `current`; the versions after it are new.
    Behind { current: Version, after: Version },
}

/// One watch of one key.
#[derive(Debug)]
pub struct WatchMachine {
    members: Vec<NodeId>,
    key: Key,
    every_version: bool,
    /// The last version handed out (`None`: none yet, the first answer
    /// gives the current state).
    after: Option<Version>,
    /// The member asked.
    node: usize,
    next_id: u64,
    /// The poll in flight, if any: answers to others are stale.
    waiting: Option<WatchId>,
    /// When to give up on the poll in flight (then ask the next node), or
    /// when to send the next one after a refusal.
    wake_at: Time,
    announced: Option<NodeId>,
    outbox: VecDeque<(NodeId, Message)>,
    events: VecDeque<WatchEvent>,
}

impl WatchMachine {
    /// A watch of `key` among `members` (in any order: every client sorts
    /// them, so they agree on the key's home) for the versions after
    /// `after` (`None`: from the current state on). `every_version` false
    /// asks only for the newest state (a wait for a version). Poll ids
    /// start at `first_id`, which should be random: a node tells pollers
    /// apart by their address and id. The first poll goes out at once.
    pub fn new(
        now: Time,
        mut members: Vec<NodeId>,
        key: Key,
        after: Option<Version>,
        every_version: bool,
        first_id: u64,
    ) -> WatchMachine {
        members.sort_unstable();
        members.dedup();
        let node = home_index(&key, members.len());
        let mut machine = WatchMachine {
            members,
            key,
            every_version,
            after,
            node,
            next_id: first_id,
            waiting: None,
            wake_at: now,
            announced: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        };
        machine.send(now);
        machine
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The last version handed out.
    pub fn after(&self) -> Option<Version> {
        self.after
    }

    pub fn poll_transmit(&mut self) -> Option<(NodeId, Message)> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<WatchEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Time> {
        (!self.members.is_empty()).then_some(self.wake_at)
    }

    /// Time passed: a node silent for too long is left for the next one;
    /// after a refusal, the pause is over.
    pub fn handle_timeout(&mut self, now: Time) {
        if now < self.wake_at || self.members.is_empty() {
            return;
        }
        if self.waiting.is_some() {
            self.node = (self.node + 1) % self.members.len();
        }
        self.send(now);
    }

    /// A message from node `from`.
    pub fn handle_message(&mut self, now: Time, from: NodeId, msg: Message) {
        let Message::WatchReply { id, key, answer } = msg else { return };
        if self.waiting != Some(id) || self.members.get(self.node) != Some(&from) || key != self.key {
            return;
        }
        match answer {
            WatchAnswer::States { versions, current, .. } => {
                self.take(versions, current);
                self.send(now);
            }
            WatchAnswer::Refused(_) | WatchAnswer::Unavailable => {
                self.waiting = None;
                self.node = (self.node + 1) % self.members.len();
                self.wake_at = now.plus_millis(limits::WATCH_CLIENT_RETRY_MS);
            }
        }
    }

    /// Hands out the states newer than the last one, in order, reporting
    /// any versions skipped before each.
    fn take(&mut self, versions: Vec<PastState>, current: Version) {
        for state in versions {
            if self.after.is_some_and(|a| state.version <= a) {
                continue;
            }
            if let Some(a) = self.after.filter(|a| state.version.0 > a.0.saturating_add(1)) {
                let (from, to) = (Version(a.0 + 1), Version(state.version.0 - 1));
                self.events.push_back(WatchEvent::Gap { from, to });
            }
            self.after = Some(state.version);
            self.events.push_back(WatchEvent::Version(state));
        }
        match self.after {
            // Nothing handed out yet: the watch goes on from the current state.
            None => self.after = Some(current),
            // A node reports `current` as read after the poll came. A wait
            // for a version (the newest state only) waits on instead: its
            // `after` is no version its user saw.
            Some(after) if current < after && self.every_version => {
                self.events.push_back(WatchEvent::Behind { current, after });
                self.after = Some(current);
            }
            Some(_) => {}
        }
    }

    fn send(&mut self, now: Time) {
        let Some(&node) = self.members.get(self.node) else { return };
        if self.announced != Some(node) {
            self.announced = Some(node);
            self.events.push_back(WatchEvent::Listening(node));
        }
        let id = WatchId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let request = Message::WatchRequest {
            id,
            key: self.key.clone(),
            after: self.after,
            every_version: self.every_version,
        };
        self.outbox.push_back((node, request));
        self.waiting = Some(id);
        self.wake_at = now.plus_millis(limits::WATCH_CLIENT_SILENCE_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Value;
    use crate::wire::Refusal;

    const T0: Time = Time(3_000_000);

    fn n(id: u16) -> NodeId {
        NodeId(id)
    }

    /// A key homed at member index 1 (node 2) of three.
    fn k() -> Key {
        (0..).map(|i| Key(format!("w{i}").into_bytes())).find(|k| home_index(k, 3) == 1).expect("a key")
    }

    fn st(version: u64) -> PastState {
        PastState { version: Version(version), value: Some(Value::from(format!("v{version}").as_str())) }
    }

    fn poll(id: u64, after: Option<u64>) -> Message {
        Message::WatchRequest { id: WatchId(id), key: k(), after: after.map(Version), every_version: true }
    }

    fn states(id: u64, versions: &[u64], current: u64) -> Message {
        let versions = versions.iter().map(|&v| st(v)).collect();
        Message::WatchReply {
            id: WatchId(id),
            key: k(),
            answer: WatchAnswer::States { versions, current: Version(current), gap: false },
        }
    }

    fn machine(after: Option<u64>) -> WatchMachine {
        WatchMachine::new(T0, vec![n(3), n(1), n(2)], k(), after.map(Version), true, 100)
    }

    fn out(m: &mut WatchMachine) -> (Vec<(NodeId, Message)>, Vec<WatchEvent>) {
        (std::iter::from_fn(|| m.poll_transmit()).collect(), std::iter::from_fn(|| m.poll_event()).collect())
    }

    #[test]
    fn it_starts_at_the_home_node_and_asks_again_after_each_answer() {
        let mut m = machine(None);
        assert_eq!(out(&mut m), (vec![(n(2), poll(100, None))], vec![WatchEvent::Listening(n(2))]));
        assert_eq!(m.poll_timeout(), Some(T0.plus_millis(limits::WATCH_CLIENT_SILENCE_MS)));
        m.handle_message(T0, n(2), states(100, &[4], 4));
        assert_eq!(out(&mut m), (vec![(n(2), poll(101, Some(4)))], vec![WatchEvent::Version(st(4))]));
        m.handle_message(T0, n(2), states(101, &[5, 6], 6));
        let events = vec![WatchEvent::Version(st(5)), WatchEvent::Version(st(6))];
        assert_eq!(out(&mut m), (vec![(n(2), poll(102, Some(6)))], events));
    }

    #[test]
    fn unchanged_asks_again_from_the_same_version_and_an_unwritten_key_starts_at_zero() {
        let mut m = machine(None);
        out(&mut m);
        m.handle_message(T0, n(2), states(100, &[], 0));
        assert_eq!(out(&mut m), (vec![(n(2), poll(101, Some(0)))], vec![]));
        m.handle_message(T0, n(2), states(101, &[], 0));
        assert_eq!(out(&mut m), (vec![(n(2), poll(102, Some(0)))], vec![]));
        assert_eq!(m.after(), Some(Version(0)));
    }

    #[test]
    fn skipped_versions_are_reported_as_a_gap_and_the_watch_goes_on() {
        let mut m = machine(Some(3));
        out(&mut m);
        m.handle_message(T0, n(2), states(100, &[70, 71], 71));
        let events = vec![
            WatchEvent::Gap { from: Version(4), to: Version(69) },
            WatchEvent::Version(st(70)),
            WatchEvent::Version(st(71)),
        ];
        assert_eq!(out(&mut m), (vec![(n(2), poll(101, Some(71)))], events));
    }

    #[test]
    fn versions_at_or_below_the_last_one_are_never_handed_out_again() {
        let mut m = machine(Some(5));
        out(&mut m);
        m.handle_message(T0, n(2), states(100, &[4, 5, 6], 6));
        assert_eq!(out(&mut m), (vec![(n(2), poll(101, Some(6)))], vec![WatchEvent::Version(st(6))]));
        m.handle_message(T0, n(2), states(101, &[5, 6], 6));
        assert_eq!(out(&mut m), (vec![(n(2), poll(102, Some(6)))], vec![]));
    }

    #[test]
    fn a_key_found_below_the_watchs_version_is_reported_and_watched_from_there() {
        let mut m = machine(Some(9));
        out(&mut m);
        m.handle_message(T0, n(2), states(100, &[], 2));
        let behind = WatchEvent::Behind { current: Version(2), after: Version(9) };
        assert_eq!(out(&mut m), (vec![(n(2), poll(101, Some(2)))], vec![behind]));
        m.handle_message(T0, n(2), states(101, &[3], 3));
        assert_eq!(out(&mut m), (vec![(n(2), poll(102, Some(3)))], vec![WatchEvent::Version(st(3))]));
    }

    #[test]
    fn a_wait_for_a_version_above_the_key_waits_on() {
        let mut m = WatchMachine::new(T0, vec![n(3), n(1), n(2)], k(), Some(Version(9)), false, 100);
        out(&mut m);
        m.handle_message(T0, n(2), states(100, &[], 2));
        let again = Message::WatchRequest {
            id: WatchId(101),
            key: k(),
            after: Some(Version(9)),
            every_version: false,
        };
        assert_eq!(out(&mut m), (vec![(n(2), again)], vec![]));
    }

    #[test]
    fn stale_answers_strangers_and_other_keys_are_ignored() {
        let mut m = machine(Some(1));
        out(&mut m);
        m.handle_message(T0, n(2), states(99, &[2], 2));
        m.handle_message(T0, n(3), states(100, &[2], 2));
        let other = Message::WatchReply {
            id: WatchId(100),
            key: Key::from("other"),
            answer: WatchAnswer::States { versions: vec![st(2)], current: Version(2), gap: false },
        };
        m.handle_message(T0, n(2), other);
        assert_eq!(out(&mut m), (vec![], vec![]));
    }

    #[test]
    fn a_silent_node_is_left_for_the_next_after_one_timeout() {
        let mut m = machine(Some(7));
        out(&mut m);
        let silence = T0.plus_millis(limits::WATCH_CLIENT_SILENCE_MS);
        m.handle_timeout(silence);
        assert_eq!(out(&mut m), (vec![(n(3), poll(101, Some(7)))], vec![WatchEvent::Listening(n(3))]));
        m.handle_message(silence, n(2), states(100, &[8], 8));
        assert_eq!(out(&mut m), (vec![], vec![]), "the node left is not heard any more");
        m.handle_message(silence, n(3), states(101, &[8], 8));
        assert_eq!(out(&mut m), (vec![(n(3), poll(102, Some(8)))], vec![WatchEvent::Version(st(8))]));
    }

    #[test]
    fn a_refusal_moves_to_the_next_node_after_a_pause() {
        let mut m = machine(Some(7));
        out(&mut m);
        let refused = Message::WatchReply {
            id: WatchId(100),
            key: k(),
            answer: WatchAnswer::Refused(Refusal::Overloaded),
        };
        m.handle_message(T0, n(2), refused);
        assert_eq!(out(&mut m), (vec![], vec![]));
        let pause = T0.plus_millis(limits::WATCH_CLIENT_RETRY_MS);
        assert_eq!(m.poll_timeout(), Some(pause));
        m.handle_timeout(pause);
        assert_eq!(out(&mut m), (vec![(n(3), poll(101, Some(7)))], vec![WatchEvent::Listening(n(3))]));
        let unavailable =
            Message::WatchReply { id: WatchId(101), key: k(), answer: WatchAnswer::Unavailable };
        m.handle_message(pause, n(3), unavailable);
        m.handle_timeout(pause.plus_millis(limits::WATCH_CLIENT_RETRY_MS));
        assert_eq!(out(&mut m), (vec![(n(1), poll(102, Some(7)))], vec![WatchEvent::Listening(n(1))]));
    }
}
