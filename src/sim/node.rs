//! One simulated node: the core `Node` (protocol, client admission,
//! sessions, status, answers: everything the daemon decides) driven over
//! the simulated network and disk. A turn takes every input that arrived
//! since the last one, runs due timers, appends the records and starts one
//! sync; the messages leave only when the sync completes, and inputs
//! arriving meanwhile wait for the next turn (group commit).
//!
//! The node also checks the two invariants that only it can see: nothing
//! is released before the state it depends on is durable, and a promise it
//! released never goes down, even across a crash.

use super::disk::SimDisk;
use super::net::{ClientAddr, Endpoint};
use crate::core::rng::Rng;
use crate::core::{ClientLimits, Envelope, Node, NodeSetup, Ready};
use crate::members::{ConfigTag, Members};
use crate::storage::log::RecoveryError;
use crate::storage::{Record, Storage};
use crate::types::{Ballot, Key, NodeId, Time};
use crate::wire::Message;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    Up,
    /// Stopped (SIGSTOP): inputs queue up, timers run late, nothing leaves.
    Paused,
    Down,
}

/// Datagrams to send, one per destination, in a deterministic order.
pub type Outgoing = Vec<(Endpoint, Vec<Message>)>;

pub struct SimNode {
    pub id: NodeId,
    members: Vec<NodeId>,
    core: Option<Node<ClientAddr>>,
    disk: SimDisk,
    limits: ClientLimits,
    inbox: Vec<(Endpoint, Option<ConfigTag>, Message)>,
    /// The turn whose records are being synced.
    syncing: Option<Ready<ClientAddr>>,
    /// The sync completed while the node was paused; it releases on resume.
    synced_while_paused: bool,
    pub power: Power,
    /// Bumped by every crash, so events meant for an earlier life are ignored.
    pub life: u32,
    /// When the world will next wake this node, if it is scheduled to.
    pub wake_at: Option<Time>,
    /// The nemesis wants this node to crash during its next sync.
    pub crash_armed: bool,
    /// The highest ballot this node ever promised in a message that left it.
    released: BTreeMap<Key, Ballot>,
    /// The data dir was lost: the next start is a rejoin.
    start_over: bool,
    /// Whether the core was catching up after the last turn, and whether it
    /// has caught up since the world last asked (`take_caught_up`).
    was_catching_up: bool,
    caught_up: bool,
    /// The nemesis damaged the log: recovery may refuse it.
    damaged: bool,
    /// World time when this life began: like a real process, the node's
    /// clock starts at zero at every start, so clients must not carry what
    /// they knew of one life's clock into the next.
    origin: Time,
    #[cfg(feature = "planted-bugs")]
    bugs: crate::core::PlantedBugs,
}

impl SimNode {
    pub fn new(id: NodeId, members: Vec<NodeId>, limits: ClientLimits, seed: u64) -> SimNode {
        let setup = NodeSetup {
            id,
            founding: Members::named(&members),
            records: Vec::new(),
            seed,
            now: Time(0),
            limits,
        };
        SimNode {
            id,
            core: Some(Node::new(setup)),
            members,
            disk: SimDisk::default(),
            limits,
            inbox: Vec::new(),
            syncing: None,
            synced_while_paused: false,
            power: Power::Up,
            life: 0,
            wake_at: None,
            crash_armed: false,
            released: BTreeMap::new(),
            start_over: false,
            was_catching_up: false,
            caught_up: false,
            damaged: false,
            origin: Time(0),
            #[cfg(feature = "planted-bugs")]
            bugs: crate::core::PlantedBugs::default(),
        }
    }

    #[cfg(feature = "planted-bugs")]
    pub fn set_bugs(&mut self, bugs: crate::core::PlantedBugs) {
        self.bugs = bugs;
        if let Some(core) = self.core.as_mut() {
            core.set_bugs(bugs);
        }
    }

    /// A datagram arrived. A node that is down loses it.
    pub fn deliver(&mut self, from: Endpoint, tag: Option<ConfigTag>, msgs: Vec<Message>) {
        if self.power != Power::Down {
            self.inbox.extend(msgs.into_iter().map(|m| (from, tag, m)));
        }
    }

    /// What this node's datagrams say of its configuration (none while down).
    pub fn config_tag(&self) -> Option<ConfigTag> {
        self.core.as_ref().map(Node::config_tag)
    }

    /// The node's status, while it runs.
    pub fn status(&self) -> Option<crate::wire::NodeStatus> {
        self.core.as_ref().map(Node::status)
    }

    /// Free to start a turn: running and not waiting for a sync.
    pub fn is_idle(&self) -> bool {
        self.power == Power::Up && self.syncing.is_none()
    }

    /// When the next turn is due: now if inputs wait, else the core's deadline.
    pub fn next_turn(&self, now: Time) -> Option<Time> {
        if !self.inbox.is_empty() {
            return Some(now);
        }
        let deadline = self.core.as_ref().and_then(Node::next_deadline)?;
        Some(deadline.plus_micros(self.origin.0).max(now))
    }

    /// The node's own clock at world time `now`.
    fn local(&self, now: Time) -> Time {
        Time(now.micros_since(self.origin))
    }

    /// One loop turn. Returns what may leave at once, and whether records
    /// were appended (then the world calls `finish_sync` after a delay).
    pub fn turn(&mut self, now: Time, violations: &mut Vec<String>) -> (Outgoing, bool) {
        let mut out = Vec::new();
        let local = self.local(now);
        let Some(core) = self.core.as_mut() else {
            return (Vec::new(), false);
        };
        for (from, tag, msg) in std::mem::take(&mut self.inbox) {
            match (from, tag) {
                (Endpoint::Client(addr), _) => core.handle_client(local, addr, msg),
                (Endpoint::Node(peer), Some(tag)) => core.handle_peer_tagged(local, peer, tag, msg),
                (Endpoint::Node(peer), None) => core.handle_peer(local, peer, msg),
            }
        }
        if core.next_deadline().is_some_and(|d| d <= local) {
            core.handle_timeout(local);
        }
        let mut ready = core.take_ready();
        if self.was_catching_up && !core.catching_up() {
            self.caught_up = true;
        }
        self.was_catching_up = core.catching_up();
        self.check_promises(now, violations);
        let early = ready.take_early();
        self.release(now, early, &mut out, violations);
        #[cfg(feature = "planted-bugs")]
        if self.bugs.reply_before_sync {
            let early = ready.take_messages_unsynced();
            self.release(now, early, &mut out, violations);
        }
        let needs_sync = match ready.release_if_nothing_to_sync() {
            Ok(envelopes) => {
                self.release(now, envelopes, &mut out, violations);
                false
            }
            Err(ready) => {
                for record in &ready.records {
                    let Ok(()) = self.disk.append(record);
                }
                self.syncing = Some(ready);
                true
            }
        };
        (group(out), needs_sync)
    }

    /// The sync started by the last turn completed: release its messages
    /// (or, when paused, as soon as the node resumes).
    pub fn finish_sync(&mut self, now: Time, compact_min: u64, violations: &mut Vec<String>) -> Outgoing {
        if self.power == Power::Paused {
            self.synced_while_paused = true;
            return Vec::new();
        }
        let Some(ready) = self.syncing.take() else {
            return Vec::new();
        };
        let Ok(proof) = self.disk.sync();
        let mut out = Vec::new();
        self.release(now, ready.release(proof), &mut out, violations);
        self.maybe_compact(compact_min);
        if let Some(core) = self.core.as_mut() {
            core.set_log_bytes(self.disk.len_bytes());
        }
        group(out)
    }

    fn maybe_compact(&mut self, bytes_min: u64) {
        if let Some(core) = self.core.as_ref()
            && self.disk.should_compact(core.acceptor().live_bytes(), bytes_min)
        {
            self.disk.compact(core.live_records());
        }
    }

    /// Turns envelopes into messages, checking each against the disk.
    fn release(
        &mut self,
        now: Time,
        envelopes: Vec<Envelope<ClientAddr>>,
        out: &mut Vec<(Endpoint, Message)>,
        violations: &mut Vec<String>,
    ) {
        for envelope in envelopes {
            match envelope {
                Envelope::Peer(to, msg) => {
                    if let Some(v) = self.check_durable(now, &msg) {
                        violations.push(v);
                    }
                    self.note_promise(&msg);
                    out.push((Endpoint::Node(to), msg));
                }
                Envelope::Client(addr, msg) => out.push((Endpoint::Client(addr), msg)),
            }
        }
    }

    /// Invariant: a promise, an accepted or a query's answer leaves the node
    /// only once the log holds the promise (and the acceptance) it reports.
    fn check_durable(&self, now: Time, msg: &Message) -> Option<String> {
        let (key, promised, accepted, what) = match msg {
            Message::Promise { key, ballot, .. } => (key, *ballot, Ballot::ZERO, "Promise"),
            Message::Accepted { key, ballot, promised } => (key, *promised, *ballot, "Accepted"),
            Message::QueryReply { key, accepted, .. } => (key, Ballot::ZERO, *accepted, "QueryReply"),
            _ => return None,
        };
        let durable = self.disk.durable().slot(key);
        let held = durable.promised >= promised && durable.accepted >= accepted;
        (!held).then(|| {
            format!(
                "t={}us node {}: released {what} for key {key} (promised {promised}, accepted {accepted}) \
                 before it was durable (log: promised {}, accepted {})",
                now.0, self.id, durable.promised, durable.accepted
            )
        })
    }

    fn note_promise(&mut self, msg: &Message) {
        if let Message::Promise { key, ballot: promised, .. } | Message::Accepted { key, promised, .. } = msg
        {
            let highest = self.released.entry(key.clone()).or_default();
            *highest = (*highest).max(*promised);
        }
    }

    /// Invariant: the acceptor's promise for a key is never below one it
    /// has sent, whatever happened to the node since. A node that lost its
    /// data sends no vote while it catches up, and once it has, its fence is
    /// above every ballot of its earlier lives.
    fn check_promises(&self, now: Time, violations: &mut Vec<String>) {
        let Some(core) = self.core.as_ref().filter(|core| !core.catching_up()) else {
            return;
        };
        for (key, &sent) in &self.released {
            let promised = core.acceptor().promised(key);
            if promised < sent {
                violations.push(format!(
                    "t={}us node {}: promise for key {key} went down to {promised} after {sent} was sent",
                    now.0, self.id
                ));
            }
        }
    }

    /// The node dies: memory and unsynced writes are lost (but for a torn
    /// prefix, or, with `blocks_out_of_order`, some of the write's blocks).
    /// Returns true when a partial write was left on disk.
    pub fn crash(&mut self, rng: &mut Rng, blocks_out_of_order: bool) -> bool {
        self.core = None;
        self.inbox.clear();
        self.syncing = None;
        self.synced_while_paused = false;
        self.power = Power::Down;
        self.life += 1;
        self.wake_at = None;
        self.crash_armed = false;
        self.disk.crash(rng, blocks_out_of_order)
    }

    /// The node dies and its data dir is lost; it will start with `--rejoin`.
    pub fn wipe(&mut self, rng: &mut Rng) {
        self.crash(rng, false);
        self.start_over = true;
    }

    /// The node dies and a byte of its log goes bad. Returns false when
    /// the log held nothing to damage.
    pub fn damage_log(&mut self, rng: &mut Rng) -> bool {
        self.crash(rng, false);
        self.damaged = self.disk.flip_byte(rng);
        self.damaged
    }

    /// True once after the node caught up (for the fault counts).
    pub fn take_caught_up(&mut self) -> bool {
        std::mem::take(&mut self.caught_up)
    }

    /// True while the node is up and catching up after losing data, or
    /// when a restart would find it so (it caught up, but that is not
    /// synced yet).
    pub fn is_catching_up(&self) -> bool {
        self.core.as_ref().is_some_and(Node::catching_up) || self.disk.durable().catching_up()
    }

    /// The records a restart starts from: the log as recovery finds it. A
    /// wiped dir, or a log the nemesis damaged that recovery refuses, makes
    /// the operator start the node with `--rejoin`.
    fn recover(&mut self, now: Time, violations: &mut Vec<String>) -> Option<Vec<Record>> {
        if std::mem::take(&mut self.start_over) {
            return Some(self.disk.start_over());
        }
        let damaged = std::mem::take(&mut self.damaged);
        match self.disk.restart() {
            Ok(records) => Some(records),
            Err(RecoveryError::Corrupt { .. }) if damaged => Some(self.disk.start_over()),
            Err(e) => {
                violations.push(format!("t={}us node {}: log recovery failed: {e}", now.0, self.id));
                None
            }
        }
    }

    /// The node starts again from its log. A log recovery refuses, unless
    /// the nemesis damaged it, is a violation: the node stays down.
    pub fn restart(&mut self, now: Time, seed: u64, violations: &mut Vec<String>) {
        let Some(records) = self.recover(now, violations) else {
            return;
        };
        self.origin = now;
        let setup = NodeSetup {
            id: self.id,
            founding: Members::named(&self.members),
            records,
            seed,
            now: Time(0),
            limits: self.limits,
        };
        #[cfg_attr(not(feature = "planted-bugs"), allow(unused_mut))]
        let mut core = Node::new(setup);
        #[cfg(feature = "planted-bugs")]
        core.set_bugs(self.bugs);
        // Like the daemon: a new incarnation, and no sessions remembered.
        self.was_catching_up = core.catching_up();
        self.core = Some(core);
        self.power = Power::Up;
        self.check_promises(now, violations);
    }

    pub fn pause(&mut self) {
        if self.power == Power::Up {
            self.power = Power::Paused;
        }
    }

    /// Resumes a paused node; releases a sync that completed meanwhile.
    pub fn resume(&mut self, now: Time, compact_min: u64, violations: &mut Vec<String>) -> Outgoing {
        if self.power != Power::Paused {
            return Vec::new();
        }
        self.power = Power::Up;
        if std::mem::take(&mut self.synced_while_paused) {
            return self.finish_sync(now, compact_min, violations);
        }
        Vec::new()
    }
}

/// One datagram per destination, as the real driver packs them.
fn group(messages: Vec<(Endpoint, Message)>) -> Outgoing {
    let mut by_dest: BTreeMap<Endpoint, Vec<Message>> = BTreeMap::new();
    for (to, msg) in messages {
        by_dest.entry(to).or_default().push(msg);
    }
    by_dest.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Change;
    use crate::types::{Incarnation, RegisterState, RequestId, SessionId};
    use crate::wire::{self, Outcome, Refusal};

    fn node() -> SimNode {
        SimNode::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)], ClientLimits::default(), 1)
    }

    fn prepare(round: u64, from: u16) -> Message {
        Message::Prepare { key: Key::from("k"), ballot: Ballot::new(round, NodeId(from)) }
    }

    fn promise(round: u64, from: u16) -> Message {
        let ballot = Ballot::new(round, NodeId(from));
        Message::Promise {
            key: Key::from("k"),
            ballot,
            accepted: Ballot::ZERO,
            state: RegisterState::default(),
        }
    }

    #[test]
    fn a_promise_leaves_only_after_its_sync_and_later_inputs_wait() {
        let mut n = node();
        let mut violations = Vec::new();
        n.deliver(Endpoint::Node(NodeId(2)), None, vec![prepare(5, 2)]);
        assert_eq!(n.turn(Time(10), &mut violations), (Vec::new(), true));
        n.deliver(Endpoint::Node(NodeId(3)), None, vec![prepare(6, 3)]);
        assert!(!n.is_idle());
        let out = n.finish_sync(Time(20), u64::MAX, &mut violations);
        assert_eq!(out, vec![(Endpoint::Node(NodeId(2)), vec![promise(5, 2)])]);
        assert_eq!(n.next_turn(Time(20)), Some(Time(20)));
        assert!(violations.is_empty());
    }

    #[test]
    fn a_crash_before_the_sync_forgets_the_promise_it_never_sent() {
        let mut n = node();
        let mut violations = Vec::new();
        n.deliver(Endpoint::Node(NodeId(2)), None, vec![prepare(5, 2)]);
        assert!(n.turn(Time(10), &mut violations).1);
        // This random source keeps none of the unsynced bytes.
        n.crash(&mut Rng::new(0), false);
        n.deliver(Endpoint::Node(NodeId(3)), None, vec![prepare(6, 3)]);
        n.restart(Time(30), 2, &mut violations);
        assert!(n.inbox.is_empty(), "a node that is down loses what is sent to it");
        n.deliver(Endpoint::Node(NodeId(3)), None, vec![prepare(4, 3)]);
        assert!(n.turn(Time(40), &mut violations).1);
        let out = n.finish_sync(Time(50), u64::MAX, &mut violations);
        assert_eq!(out, vec![(Endpoint::Node(NodeId(3)), vec![promise(4, 3)])]);
        assert!(violations.is_empty());
    }

    /// The incarnation a status probe reports.
    fn incarnation(n: &mut SimNode, now: Time) -> Option<Incarnation> {
        let probe = Message::StatusRequest { session: SessionId(1), probe: 1 };
        n.deliver(Endpoint::Client(9), None, vec![probe]);
        let (out, _) = n.turn(now, &mut Vec::new());
        match out.as_slice() {
            [(_, msgs)] => match msgs.as_slice() {
                [Message::StatusReply { status, .. }] => Some(status.incarnation),
                _ => None,
            },
            _ => None,
        }
    }

    #[test]
    fn after_a_restart_a_request_naming_the_old_incarnation_is_refused_unrun() {
        let mut n = node();
        let mut violations = Vec::new();
        let old = incarnation(&mut n, Time(5)).unwrap_or_default();
        let id = RequestId { session: SessionId(3), seq: 1 };
        let request = Message::Request(wire::Request {
            id,
            key: Key::from("k"),
            change: Change::Put(crate::types::Value::from("v")),
            timeout_ms: 1000,
            incarnation: old,
            sent_at: Time(5),
            resent: false,
            floor: crate::types::Version(0),
        });
        n.deliver(Endpoint::Client(9), None, vec![request.clone()]);
        assert!(n.turn(Time(10), &mut violations).1, "the request runs: records to sync");
        n.crash(&mut Rng::new(0), false);
        n.restart(Time(30), 2, &mut violations);
        let new = incarnation(&mut n, Time(35)).unwrap_or_default();
        assert_ne!(old, new);
        n.deliver(Endpoint::Client(9), None, vec![request]);
        let outcome = Outcome::Refused(Refusal::StaleIncarnation);
        // The restarted node's clock began at zero when it started, at 30.
        let reply = Message::Reply { id, incarnation: new, node_time: Time(10), outcome };
        assert_eq!(n.turn(Time(40), &mut violations), (vec![(Endpoint::Client(9), vec![reply])], false));
    }
}
