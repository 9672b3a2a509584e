//! The client as a sans-IO state machine: which node to ask, when to send a
//! copy again, when to move to another node, and how an operation ended.
//! Time and datagrams come in, datagrams and endings come out; the blocking
//! `client::Client`, the load generator and the simulator drive the same
//! machine.
//!
//! A driver calls, in a loop: `start` (when idle), then `poll_transmit`
//! until it is empty (sending each message to its node), sleeps until
//! `poll_timeout` or a datagram arrives, feeds `handle_message` or
//! `handle_timeout`, and takes `poll_ending` once an operation ended.
//!
//! # How a request travels
//!
//! The machine is one session (`SessionId`): its requests are numbered and
//! run one at a time. A request goes to its key's home node (`Routing`): a
//! hash of the key picks one of the members, so that every client sends a
//! key's requests to one proposer, whose batches then share rounds and
//! whose writes need one round trip (see `core::proposer::FastPath`). A
//! home that was silent or said it could not reach a quorum is suspected
//! for a while, and the key's requests go to the next member meanwhile, so
//! a node that is down costs each client one timeout, not one per key or
//! per request. Before sending to a node it has not heard
//! from lately, the machine asks for its status: the answer tells the node's
//! incarnation and clock, which every copy names (see `core::sessions` and
//! `Dedupe`). Every copy of one request has the same id, so the nodes apply
//! it at most once wherever the copies go.
//!
//! A node that does not answer within the retransmission timeout (measured
//! round trip, doubled after every silence) is left for the next node, and
//! so is a node that answers that it could not reach a quorum or is
//! overloaded: the client never sticks to a node that cannot serve it. A
//! write moves away from the first node only after `CLIENT_MOVE_WRITE_AFTER_MS`
//! (the exclusive window, which lets healthy nodes decide a write without
//! ever calling it indeterminate). A copy that may have run somewhere makes
//! every later copy say `resent`.
//!
//! An operation ends when any node answers it, or at its deadline. A write
//! ends `Unknown` only if some copy may have taken effect and none said how;
//! `NotRun` means no copy ever will.

use crate::change::Change;
use crate::limits;
use crate::types::{Incarnation, Key, NodeId, RequestId, SessionId, Time, Value, Version};
use crate::wire::{self, Message, Outcome, Refusal};
use std::collections::{BTreeMap, VecDeque};

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It ran; the answer says how.
    Done(Answer),
    /// Nothing changed, and no copy of the request will ever take effect.
    NotRun(NotRun),
    /// The change may or may not have taken effect.
    Unknown(Unknown),
}

/// A node's answer to an operation that ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The key's version after the operation.
    pub version: Version,
    /// False when a compare-and-set found another value or version, or an
    /// append would have exceeded the value limit: nothing changed.
    pub precondition_held: bool,
    /// The key's value after the operation, when `value_known` (`None`:
    /// absent).
    pub value: Option<Value>,
    /// False when the answer did not tell the value: after an append that
    /// took effect (the node answers with the new version only), and after a
    /// compare-and-set whose precondition failed when an earlier copy of it
    /// ran (the value it was compared with is no longer known). Read the key
    /// for its value.
    pub value_known: bool,
    /// The node that answered.
    pub node: NodeId,
}

/// Why an operation did not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotRun {
    /// Every node that was asked refused it, for this reason (the last one).
    Refused(Refusal),
    /// Nodes answered, but none could reach a quorum before the deadline.
    NoQuorum,
    /// No node answered anything before the deadline.
    Unreachable,
}

/// Why an operation's outcome is unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unknown {
    /// A copy was sent that may have taken effect, and no answer came back
    /// before the deadline.
    NoAnswer,
    /// The request may have run at a node that then fell silent, and the
    /// key has since taken more writes than it remembers after the version
    /// this client last saw (`limits::RECENT_WRITES_MAX`).
    Indeterminate,
}

/// Why `start` refused to begin an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// An operation is still running.
    Busy,
}

/// Where a machine sends a key's requests first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// To the key's home node, or the first member after it that is not
    /// suspected: what clients use.
    Home,
    /// To the node that answered last, starting at member `start_at`. Two
    /// such clients on one key often ask different nodes, whose proposers
    /// then contend for it; the simulator uses this to keep them at it.
    Spread { start_at: usize },
}

/// What the machine knows of a node.
#[derive(Clone, Copy, Debug, Default)]
struct NodeView {
    incarnation: Incarnation,
    /// The node's clock in its last message, and our clock when it arrived.
    heard: Option<(Time, Time)>,
    /// Until when requests avoid the node, and for how long it was
    /// suspected last (doubling while it stays silent).
    suspected_until: Option<Time>,
    suspected_ms: u64,
}

impl NodeView {
    fn is_suspected(&self, now: Time) -> bool {
        self.suspected_until.is_some_and(|until| now < until)
    }

    fn is_fresh(&self, now: Time) -> bool {
        let recent = self
            .heard
            .is_some_and(|(_, at)| now.micros_since(at) <= limits::CLIENT_NODE_VIEW_FRESH_MS * 1000);
        self.incarnation != Incarnation::UNKNOWN && recent
    }

    /// A lower bound on the node's clock now: its clock when it last spoke,
    /// plus our time since, shortened by the clock-rate slack.
    fn clock_at(&self, now: Time) -> Time {
        let Some((node_time, at)) = self.heard else {
            return Time(0);
        };
        let elapsed = now.micros_since(at);
        node_time.plus_micros(elapsed - elapsed / 1000 * limits::CLOCK_RATE_SLACK_PERMILLE)
    }
}

/// What may still come of one copy (or of all copies to one node
/// incarnation, which are alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// May be running, or run later.
    Pending,
    /// Will not run again, but may have taken effect.
    MayHaveRun,
    /// Will never take effect.
    Dead,
}

#[derive(Clone, Debug)]
struct Copy {
    node: usize,
    incarnation: Incarnation,
    fate: Fate,
    sends: u32,
    last_sent: Time,
    /// The node said it no longer runs the request as the only copy: later
    /// copies there say `resent`, and it keeps no exclusive window.
    revoked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Exclusive {
    node: usize,
    incarnation: Incarnation,
    until: Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Waiting for `node` to answer status probe `probe` until `until`.
    Probe { node: usize, probe: u64, until: Time },
    /// Waiting for `node` to answer the request until `until`.
    Await { node: usize, until: Time },
    /// Every node turned the request away in quick succession: wait until
    /// `until`, then try `node`.
    Pause { node: usize, until: Time },
}

#[derive(Clone, Debug)]
struct Op {
    id: RequestId,
    key: Key,
    change: Change,
    deadline: Time,
    /// The last copy sent as the only one (not `resent`), and until when
    /// its node may run it as such: no copy goes to another node before.
    exclusive: Option<Exclusive>,
    copies: Vec<Copy>,
    step: Step,
    silences: u32,
    /// Timeouts in a row without a word from the node awaited.
    strikes: u32,
    /// Nodes left in quick succession since the last pause.
    quick_leaves: usize,
    heard: bool,
    indeterminate: bool,
    refused: Option<Refusal>,
}

/// The retransmission timeout, from measured round trips (RFC 6298).
#[derive(Clone, Copy, Debug, Default)]
struct Rtt {
    srtt_us: Option<u64>,
    rttvar_us: u64,
}

impl Rtt {
    fn sample(&mut self, us: u64) {
        match self.srtt_us {
            None => {
                self.srtt_us = Some(us);
                self.rttvar_us = us / 2;
            }
            Some(s) => {
                self.rttvar_us = (3 * self.rttvar_us + s.abs_diff(us)) / 4;
                self.srtt_us = Some((7 * s + us) / 8);
            }
        }
    }

    fn rto_us(&self) -> u64 {
        let ms = match self.srtt_us {
            None => limits::CLIENT_RTO_MS_INITIAL,
            Some(s) => (s + 4 * self.rttvar_us) / 1000,
        };
        ms.clamp(limits::CLIENT_RTO_MS_MIN, limits::CLIENT_RTO_MS_MAX) * 1000
    }
}

/// The last version seen of a few keys: the floors writes carry.
#[derive(Clone, Debug, Default)]
struct Floors {
    seen: BTreeMap<Key, Version>,
}

impl Floors {
    fn get(&self, key: &Key) -> Version {
        self.seen.get(key).copied().unwrap_or_default()
    }

    fn note(&mut self, key: &Key, version: Version) {
        if !self.seen.contains_key(key) && self.seen.len() >= limits::CLIENT_FLOORS_MAX {
            // Forgetting a floor costs only precision: a retried write on
            // that key may then be reported indeterminate.
            self.seen.pop_first();
        }
        let floor = self.seen.entry(key.clone()).or_default();
        *floor = (*floor).max(version);
    }
}

/// One client session.
#[derive(Debug)]
pub struct ClientMachine {
    members: Vec<NodeId>,
    pinned: Option<usize>,
    session: SessionId,
    next_seq: u64,
    next_probe: u64,
    views: Vec<NodeView>,
    routing: Routing,
    /// The node that answered last (for `Routing::Spread`).
    preferred: Option<usize>,
    floors: Floors,
    rtt: Rtt,
    op: Option<Op>,
    outbox: VecDeque<(NodeId, Message)>,
    ending: Option<Ending>,
}

impl ClientMachine {
    /// A session of the cluster `members` (in any order: every client sorts
    /// them, so they agree on each key's home). `pinned` restricts it to one
    /// of them.
    pub fn new(
        mut members: Vec<NodeId>,
        pinned: Option<NodeId>,
        session: SessionId,
        routing: Routing,
    ) -> ClientMachine {
        members.sort_unstable();
        members.dedup();
        let pinned = pinned.and_then(|id| members.iter().position(|m| *m == id));
        let n = members.len().max(1);
        let routing = match routing {
            Routing::Spread { start_at } => Routing::Spread { start_at: start_at % n },
            Routing::Home => Routing::Home,
        };
        ClientMachine {
            views: vec![NodeView::default(); members.len()],
            members,
            pinned,
            session,
            next_seq: 0,
            next_probe: 0,
            routing,
            preferred: None,
            floors: Floors::default(),
            rtt: Rtt::default(),
            op: None,
            outbox: VecDeque::new(),
            ending: None,
        }
    }

    /// The members, sorted.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    pub fn is_idle(&self) -> bool {
        self.op.is_none()
    }

    /// The node the operation in progress waits for, for reports.
    pub fn waiting_for(&self) -> Option<NodeId> {
        let node = match self.op.as_ref()?.step {
            Step::Probe { node, .. } | Step::Await { node, .. } | Step::Pause { node, .. } => node,
        };
        self.members.get(node).copied()
    }

    /// Begins `change` on `key`, to end within `timeout_ms` of `now`.
    pub fn start(&mut self, now: Time, key: Key, change: Change, timeout_ms: u64) -> Result<(), StartError> {
        if self.op.is_some() {
            return Err(StartError::Busy);
        }
        self.ending = None;
        // Checked here too, so an oversized request is refused at once
        // instead of being sent in a datagram too large to deliver.
        if let Some(refusal) = too_large(&key, &change) {
            self.ending = Some(Ending::NotRun(NotRun::Refused(refusal)));
            return Ok(());
        }
        // A node catching up asks its peers through this machine; the only
        // member of its configuration has none, and no node is reachable.
        if self.members.is_empty() {
            self.ending = Some(Ending::NotRun(NotRun::Unreachable));
            return Ok(());
        }
        self.next_seq += 1;
        let first = self.pinned.unwrap_or_else(|| self.route(now, &key));
        let placeholder = Step::Await { node: first, until: now };
        self.op = Some(Op {
            id: RequestId { session: self.session, seq: self.next_seq },
            key,
            change,
            deadline: now.plus_millis(timeout_ms),
            exclusive: None,
            copies: Vec::new(),
            step: placeholder,
            silences: 0,
            strikes: 0,
            quick_leaves: 0,
            heard: false,
            indeterminate: false,
            refused: None,
        });
        self.go(now, first);
        Ok(())
    }

    /// The node to ask first for `key` (see `Routing`).
    fn route(&self, now: Time, key: &Key) -> usize {
        let n = self.members.len().max(1);
        match self.routing {
            Routing::Spread { start_at } => self.preferred.unwrap_or(start_at),
            Routing::Home => {
                let home = home_index(key, n);
                let suspected = |i: usize| self.views.get(i).is_some_and(|v| v.is_suspected(now));
                let healthy = (0..n).map(|i| (home + i) % n).find(|&i| !suspected(i));
                healthy.unwrap_or(home)
            }
        }
    }

    /// Node `index` was silent, or could not reach a quorum: requests avoid
    /// it for a while, twice as long as last time unless an operation was
    /// done there since, or the node restarted (see `hear`).
    fn suspect(&mut self, now: Time, index: usize) {
        let Some(view) = self.views.get_mut(index) else { return };
        let ms = (view.suspected_ms * 2).clamp(limits::CLIENT_SUSPECT_MS_MIN, limits::CLIENT_SUSPECT_MS_MAX);
        view.suspected_ms = ms;
        view.suspected_until = Some(now.plus_millis(ms));
    }

    /// The next message to send, and to which node.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Message)> {
        self.outbox.pop_front()
    }

    /// When `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Time> {
        let op = self.op.as_ref()?;
        let until = match op.step {
            Step::Probe { until, .. } | Step::Await { until, .. } | Step::Pause { until, .. } => until,
        };
        Some(until.min(op.deadline))
    }

    /// How the last operation ended, once it has.
    pub fn poll_ending(&mut self) -> Option<Ending> {
        self.ending.take()
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Time) {
        let Some(op) = self.op.as_mut() else { return };
        if now >= op.deadline {
            return self.end_at_deadline();
        }
        let (node, until) = match op.step {
            Step::Probe { node, until, .. } | Step::Await { node, until } | Step::Pause { node, until } => {
                (node, until)
            }
        };
        if now < until {
            return;
        }
        if let Step::Pause { .. } = op.step {
            return self.go(now, node);
        }
        op.silences += 1;
        if let Step::Await { .. } = op.step {
            // Ask the same node again: it answers "still at it" if it is
            // alive (and the copy renews a write's exclusive window). Only a
            // node silent through several timeouts is left.
            op.strikes += 1;
            if self.pinned.is_some() || op.strikes < limits::CLIENT_SILENCES_TO_MOVE {
                return self.send_copy(now, node);
            }
        }
        op.strikes = 0;
        self.suspect(now, node);
        self.go(now, self.next_node(node))
    }

    /// A datagram's message from node `from`.
    pub fn handle_message(&mut self, now: Time, from: NodeId, msg: Message) {
        let Some(index) = self.members.iter().position(|m| *m == from) else { return };
        match msg {
            Message::StatusReply { session, probe, node_time, status } if session == self.session => {
                self.hear(now, index, status.incarnation, node_time);
                self.on_probe_answer(now, index, probe);
            }
            Message::Reply { id, incarnation, node_time, outcome } => {
                self.hear(now, index, incarnation, node_time);
                if self.op.as_ref().is_some_and(|op| op.id == id) {
                    self.on_reply(now, index, incarnation, outcome);
                }
            }
            _ => {}
        }
    }

    fn hear(&mut self, now: Time, index: usize, incarnation: Incarnation, node_time: Time) {
        if let Some(view) = self.views.get_mut(index) {
            // Suspicion stays: an answer may well say the node is cut off.
            // Only a done operation clears it (`done`), or a new life of
            // the node (it was suspected while it was down).
            let restarted = view.incarnation != Incarnation::UNKNOWN && view.incarnation != incarnation;
            let fresh = NodeView { incarnation, heard: Some((node_time, now)), ..NodeView::default() };
            *view = if restarted {
                fresh
            } else {
                NodeView { suspected_until: view.suspected_until, suspected_ms: view.suspected_ms, ..fresh }
            };
        }
    }

    fn on_probe_answer(&mut self, now: Time, index: usize, probe: u64) {
        let Some(op) = self.op.as_mut() else { return };
        let Step::Probe { node, probe: expected, .. } = op.step else { return };
        if node != index || probe != expected {
            return;
        }
        op.heard = true;
        // A probe's round trip says nothing of how long a request takes (two
        // phases and two syncs), so it does not feed the timeout.
        self.send_copy(now, index);
    }

    fn on_reply(&mut self, now: Time, index: usize, incarnation: Incarnation, outcome: Outcome) {
        let Some(op) = self.op.as_mut() else { return };
        op.heard = true;
        if let Some(copy) =
            op.copies.iter().find(|c| c.node == index && c.incarnation == incarnation && c.sends == 1)
        {
            self.rtt.sample(now.micros_since(copy.last_sent));
        }
        match outcome {
            Outcome::Done { version, precondition_held, value } => {
                self.done(index, version, precondition_held, value)
            }
            Outcome::Indeterminate => self.on_indeterminate(index, incarnation),
            Outcome::Unavailable { maybe_applied } => {
                let fate = if maybe_applied { Fate::MayHaveRun } else { Fate::Dead };
                self.settle(index, incarnation, fate);
                self.suspect(now, index);
                self.leave(now, index, None);
            }
            Outcome::Refused(Refusal::StaleIncarnation) => self.on_stale_incarnation(now, index, incarnation),
            Outcome::Refused(Refusal::Expired) => self.on_expired(now, index, incarnation),
            Outcome::Refused(
                r @ (Refusal::Overloaded | Refusal::ShuttingDown | Refusal::CatchingUp | Refusal::NotMember),
            ) => {
                self.settle(index, incarnation, Fate::Dead);
                self.leave(now, index, Some(r));
            }
            Outcome::Refused(r) => self.end(Ending::NotRun(NotRun::Refused(r))),
            Outcome::InProgress { exclusive, cut_off } => {
                self.on_in_progress(index, incarnation, exclusive);
                if cut_off && self.pinned.is_none() {
                    // It cannot reach a quorum: ask another node now. Its
                    // copy may still run there, but not as the only one.
                    self.suspect(now, index);
                    self.leave(now, index, None);
                }
            }
        }
    }

    /// The node is still at it. If it no longer runs the write as the only
    /// copy, nothing keeps the client from sending it elsewhere.
    fn on_in_progress(&mut self, index: usize, incarnation: Incarnation, exclusive: bool) {
        let Some(op) = self.op.as_mut() else { return };
        if matches!(op.step, Step::Await { node, .. } if node == index) {
            op.strikes = 0;
            op.silences = 0;
        }
        if !exclusive {
            if op.exclusive.is_some_and(|e| e.node == index && e.incarnation == incarnation) {
                op.exclusive = None;
            }
            for copy in op.copies.iter_mut().filter(|c| c.node == index && c.incarnation == incarnation) {
                copy.revoked = true;
            }
        }
    }

    fn done(&mut self, index: usize, version: Version, held: bool, value: Option<Option<Value>>) {
        let Some(op) = self.op.as_ref() else { return };
        let wrote = held && op.change.is_write();
        let told = if wrote { op.change.value_written() } else { value };
        let key = op.key.clone();
        self.floors.note(&key, version);
        self.preferred = Some(index);
        if let Some(view) = self.views.get_mut(index) {
            view.suspected_until = None;
            view.suspected_ms = 0;
        }
        let node = self.members[index];
        let value_known = told.is_some();
        let answer = Answer { version, precondition_held: held, value: told.flatten(), value_known, node };
        self.end(Ending::Done(answer));
    }

    /// The register could not tell; another copy still running may know.
    fn on_indeterminate(&mut self, index: usize, incarnation: Incarnation) {
        self.settle(index, incarnation, Fate::MayHaveRun);
        let Some(op) = self.op.as_mut() else { return };
        op.indeterminate = true;
        if !op.copies.iter().any(|c| c.fate == Fate::Pending) {
            self.end(Ending::Unknown(Unknown::Indeterminate));
        }
    }

    /// The node refused a copy sent outside its replay window: its clock
    /// and ours disagree. Another node's may not, so the request moves on,
    /// as from an overloaded node. A copy sent there once never runs (the
    /// datagram names that node, and only grows older); one sent more than
    /// once may have run from an earlier datagram.
    fn on_expired(&mut self, now: Time, index: usize, incarnation: Incarnation) {
        let Some(op) = self.op.as_mut() else { return };
        for copy in op.copies.iter_mut().filter(|c| c.node == index && c.incarnation == incarnation) {
            if copy.fate == Fate::Pending {
                copy.fate = if copy.sends <= 1 { Fate::Dead } else { Fate::MayHaveRun };
            }
        }
        self.leave(now, index, Some(Refusal::Expired));
    }

    /// The node did not know us under the incarnation we named. Copies named
    /// for another incarnation will never run there now (but may have run
    /// before it changed); send again, naming the one it told.
    fn on_stale_incarnation(&mut self, now: Time, index: usize, current: Incarnation) {
        let Some(op) = self.op.as_mut() else { return };
        for copy in op.copies.iter_mut().filter(|c| c.node == index && c.incarnation != current) {
            copy.fate = match (copy.incarnation, copy.fate) {
                (Incarnation::UNKNOWN, _) => Fate::Dead,
                (_, Fate::Pending) => Fate::MayHaveRun,
                (_, fate) => fate,
            };
        }
        // Copies to past incarnations can never be answered again, and one
        // that may have run stands for all: keep one per node.
        let mut kept_past = false;
        op.copies.retain(|c| {
            let past = c.node == index && c.incarnation != current && c.fate == Fate::MayHaveRun;
            let keep = !past || !kept_past;
            kept_past |= past;
            keep
        });
        if matches!(op.step, Step::Await { node, .. } if node == index) {
            self.send_copy(now, index);
        }
    }

    /// Node `index` will not serve the request: ask the next node now (or
    /// after a pause, when every node turned it away in quick succession),
    /// or end if no node would run it any more, or if pinned to this one.
    fn leave(&mut self, now: Time, index: usize, refused: Option<Refusal>) {
        let pause = self.backed_off_rto();
        let next = self.next_node(index);
        let nobody_left = self.nobody_left();
        let Some(op) = self.op.as_mut() else { return };
        op.refused = refused.or(op.refused);
        if !matches!(op.step, Step::Await { node, .. } if node == index) {
            return;
        }
        if self.pinned.is_some() || nobody_left {
            return self.end_now();
        }
        op.quick_leaves += 1;
        if op.quick_leaves < self.members.len() {
            return self.go(now, next);
        }
        op.quick_leaves = 0;
        op.silences += 1;
        op.step = Step::Pause { node: next, until: now.plus_micros(pause).min(op.deadline) };
    }

    /// True when every node has answered, in its current incarnation, that
    /// it will not run the request (again): asking more is pointless.
    fn nobody_left(&self) -> bool {
        let Some(op) = self.op.as_ref() else { return true };
        self.views.iter().enumerate().all(|(i, view)| {
            op.copies
                .iter()
                .any(|c| c.node == i && c.incarnation == view.incarnation && c.fate != Fate::Pending)
        })
    }

    /// Marks the copies at node `index` under `incarnation`.
    fn settle(&mut self, index: usize, incarnation: Incarnation, fate: Fate) {
        let Some(op) = self.op.as_mut() else { return };
        for copy in op.copies.iter_mut().filter(|c| c.node == index && c.incarnation == incarnation) {
            copy.fate = fate;
        }
    }

    fn next_node(&self, index: usize) -> usize {
        (index + 1) % self.members.len().max(1)
    }

    /// Sends to `node`: the request if we know the node well enough, else a
    /// status probe first; or waits, if another node may still be running
    /// the write as its only copy.
    fn go(&mut self, now: Time, node: usize) {
        if let Some(until) = self.exclusive_elsewhere(now, node) {
            let Some(op) = self.op.as_mut() else { return };
            op.step = Step::Pause { node, until: until.min(op.deadline) };
            return;
        }
        if self.views.get(node).is_some_and(|v| v.is_fresh(now)) {
            return self.send_copy(now, node);
        }
        let until = now.plus_micros(self.backed_off_rto());
        let Some(op) = self.op.as_mut() else { return };
        self.next_probe += 1;
        let probe = self.next_probe;
        op.step = Step::Probe { node, probe, until: until.min(op.deadline) };
        let msg = Message::StatusRequest { session: self.session, probe };
        self.outbox.push_back((self.members[node], msg));
    }

    /// When a copy of the write went to another node as the only one, and
    /// that node may still be running it so: the end of its window. A node
    /// runs such a copy without looking for copies elsewhere until
    /// `EXCLUSIVE_WINDOW_MS` after it was sent (by its own clock); the
    /// client waits that long, stretched by the clock slack
    /// (`CLIENT_MOVE_WRITE_AFTER_MS`), before it lets another node see one.
    fn exclusive_elsewhere(&self, now: Time, node: usize) -> Option<Time> {
        let op = self.op.as_ref()?;
        let e = op.exclusive?;
        let running = op
            .copies
            .iter()
            .any(|c| c.node == e.node && c.incarnation == e.incarnation && c.fate == Fate::Pending);
        (e.node != node && running && now < e.until).then_some(e.until)
    }

    fn send_copy(&mut self, now: Time, node: usize) {
        let view = self.views.get(node).copied().unwrap_or_default();
        let wait = self.backed_off_rto();
        let floor = self.op.as_ref().map(|op| self.floors.get(&op.key)).unwrap_or_default();
        let Some(op) = self.op.as_mut() else { return };
        let elsewhere = op
            .copies
            .iter()
            .any(|c| c.fate != Fate::Dead && (c.node != node || c.incarnation != view.incarnation));
        let copy = match op.copies.iter().position(|c| c.node == node && c.incarnation == view.incarnation) {
            Some(i) => &mut op.copies[i],
            None => {
                let fresh = Copy {
                    node,
                    incarnation: view.incarnation,
                    fate: Fate::Pending,
                    sends: 0,
                    last_sent: now,
                    revoked: false,
                };
                op.copies.push(fresh);
                op.copies.last_mut().expect("just pushed")
            }
        };
        copy.sends += 1;
        copy.last_sent = now;
        let resent = elsewhere || copy.revoked;
        let mut wait = wait;
        if op.change.is_write() && !resent {
            let until = now.plus_millis(limits::CLIENT_MOVE_WRITE_AFTER_MS);
            op.exclusive = Some(Exclusive { node, incarnation: view.incarnation, until });
            wait = wait.min(limits::CLIENT_RENEW_WRITE_MS * 1000);
        }
        op.step = Step::Await { node, until: now.plus_micros(wait).min(op.deadline) };
        let request = wire::Request {
            id: op.id,
            key: op.key.clone(),
            change: op.change.clone(),
            timeout_ms: node_budget_ms(now, op.deadline),
            incarnation: view.incarnation,
            sent_at: view.clock_at(now),
            resent,
            floor,
        };
        self.outbox.push_back((self.members[node], Message::Request(request)));
    }

    fn backed_off_rto(&self) -> u64 {
        let silences = self.op.as_ref().map_or(0, |op| op.silences.min(8));
        (self.rtt.rto_us() << silences).min(limits::CLIENT_RTO_MS_MAX * 1000)
    }

    fn end_at_deadline(&mut self) {
        self.end_now();
    }

    /// Ends the operation with what its copies allow: unknown if one may
    /// have taken effect, else not run.
    fn end_now(&mut self) {
        let Some(op) = self.op.as_ref() else { return };
        let may_have_run = op.change.is_write() && op.copies.iter().any(|c| c.fate != Fate::Dead);
        let ending = if may_have_run {
            Ending::Unknown(if op.indeterminate { Unknown::Indeterminate } else { Unknown::NoAnswer })
        } else if let Some(r) = op.refused {
            Ending::NotRun(NotRun::Refused(r))
        } else if op.heard {
            Ending::NotRun(NotRun::NoQuorum)
        } else {
            Ending::NotRun(NotRun::Unreachable)
        };
        self.end(ending);
    }

    fn end(&mut self, ending: Ending) {
        self.op = None;
        self.outbox.clear();
        self.ending = Some(ending);
    }
}

/// The home of `key` among `nodes` members: FNV-1a over its bytes, so every
/// client, in any language, can compute it.
pub fn home_index(key: &Key, nodes: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % nodes.max(1) as u64) as usize
}

/// How long a node may try: what is left of the client's time, minus a
/// margin for its answer to come back.
fn node_budget_ms(now: Time, deadline: Time) -> u32 {
    let left_ms = deadline.micros_since(now) / 1000;
    let budget = if left_ms > 2 * limits::CLIENT_REPLY_MARGIN_MS {
        left_ms - limits::CLIENT_REPLY_MARGIN_MS
    } else {
        left_ms / 2
    };
    budget.clamp(1, limits::REQUEST_TIMEOUT_MS_MAX) as u32
}

fn too_large(key: &Key, change: &Change) -> Option<Refusal> {
    if key.0.len() > limits::KEY_BYTES_MAX {
        Some(Refusal::KeyTooLarge)
    } else if change.value_bytes() > limits::VALUE_BYTES_MAX {
        Some(Refusal::ValueTooLarge)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NodeStatus;

    const T0: Time = Time(10_000_000);
    const S: SessionId = SessionId(0xAB);
    const INC: Incarnation = Incarnation(41);

    fn n(id: u16) -> NodeId {
        NodeId(id)
    }

    fn k() -> Key {
        Key::from("k")
    }

    fn put() -> Change {
        Change::Put(Value::from("v"))
    }

    /// A session of nodes 1, 2, 3 that tries node 2 first.
    fn machine() -> ClientMachine {
        ClientMachine::new(vec![n(1), n(2), n(3)], None, S, Routing::Spread { start_at: 1 })
    }

    fn sent(m: &mut ClientMachine) -> Vec<(NodeId, Message)> {
        std::iter::from_fn(|| m.poll_transmit()).collect()
    }

    fn status_reply(probe: u64, node: u16, node_time: Time, incarnation: Incarnation) -> Message {
        let status = NodeStatus { node: n(node), incarnation, ..NodeStatus::default() };
        Message::StatusReply { session: S, probe, node_time, status }
    }

    fn reply(seq: u64, node_time: Time, incarnation: Incarnation, outcome: Outcome) -> Message {
        Message::Reply { id: RequestId { session: S, seq }, incarnation, node_time, outcome }
    }

    fn request(
        seq: u64,
        change: Change,
        timeout_ms: u32,
        sent_at: Time,
        resent: bool,
        floor: u64,
    ) -> Message {
        Message::Request(wire::Request {
            id: RequestId { session: S, seq },
            key: k(),
            change,
            timeout_ms,
            incarnation: INC,
            sent_at,
            resent,
            floor: Version(floor),
        })
    }

    /// Starts `change` at T0 (1 s to go) and answers node 2's status probe
    /// at T0 + 1 ms (its clock at 5 ms); returns what was sent then.
    fn started(m: &mut ClientMachine, change: Change) -> Vec<(NodeId, Message)> {
        m.start(T0, k(), change, 1000).expect("idle");
        assert_eq!(sent(m), vec![(n(2), Message::StatusRequest { session: S, probe: m.next_probe })]);
        let probe = m.next_probe;
        m.handle_message(T0.plus_millis(1), n(2), status_reply(probe, 2, Time(5_000), INC));
        sent(m)
    }

    fn written(version: u64) -> Outcome {
        Outcome::Done { version: Version(version), precondition_held: true, value: None }
    }

    /// With no node to ask (a node catching up that is the only member of
    /// its configuration asks its peers, and has none), an operation ends
    /// at once, reaching no one.
    #[test]
    fn with_no_node_to_ask_an_operation_ends_unreachable_at_once() {
        let mut m = ClientMachine::new(Vec::new(), None, S, Routing::Home);
        m.start(T0, k(), put(), 1000).expect("idle");
        assert_eq!(sent(&mut m), vec![]);
        assert_eq!(m.poll_ending(), Some(Ending::NotRun(NotRun::Unreachable)));
        assert!(m.is_idle());
    }

    #[test]
    fn first_contact_probes_then_sends_the_request_naming_incarnation_and_clock() {
        let mut m = machine();
        m.start(T0, k(), put(), 1000).expect("idle");
        assert_eq!(sent(&mut m), vec![(n(2), Message::StatusRequest { session: S, probe: 1 })]);
        assert_eq!(m.poll_timeout(), Some(T0.plus_millis(limits::CLIENT_RTO_MS_INITIAL)));
        m.handle_message(T0.plus_millis(1), n(2), status_reply(1, 2, Time(5_000), INC));
        // 999 ms are left; the node may use all but the reply margin.
        assert_eq!(sent(&mut m), vec![(n(2), request(1, put(), 849, Time(5_000), false, 0))]);
    }

    #[test]
    fn an_answer_ends_the_operation_and_the_next_one_goes_straight_to_that_node() {
        let mut m = machine();
        started(&mut m, put());
        m.handle_message(T0.plus_millis(3), n(2), reply(1, Time(7_000), INC, written(3)));
        let answer = Answer {
            version: Version(3),
            precondition_held: true,
            value: Some(Value::from("v")),
            value_known: true,
            node: n(2),
        };
        assert_eq!(m.poll_ending(), Some(Ending::Done(answer)));
        assert!(m.is_idle());
        // 100 ms later the node's clock is known to be at least 7 ms + 99 ms,
        // and the write carries the version last seen as its floor.
        let later = T0.plus_millis(103);
        m.start(later, k(), put(), 1000).expect("idle");
        assert_eq!(sent(&mut m), vec![(n(2), request(2, put(), 850, Time(106_000), false, 3))]);
    }

    #[test]
    fn a_failed_compare_and_set_reports_the_value_found() {
        let mut m = machine();
        let cas = Change::CasValue { expect: Some(Value::from("a")), new: Value::from("b") };
        started(&mut m, cas);
        let found = Outcome::Done {
            version: Version(4),
            precondition_held: false,
            value: Some(Some(Value::from("x"))),
        };
        m.handle_message(T0.plus_millis(3), n(2), reply(1, Time(7_000), INC, found));
        let answer = Answer {
            version: Version(4),
            precondition_held: false,
            value: Some(Value::from("x")),
            value_known: true,
            node: n(2),
        };
        assert_eq!(m.poll_ending(), Some(Ending::Done(answer)));
    }

    #[test]
    fn a_silent_node_is_asked_again_then_left_by_a_read() {
        let mut m = machine();
        let first = started(&mut m, Change::Read);
        // No request has come back yet: the initial timeout, then the same
        // request to the same node.
        let rto = T0.plus_millis(1 + limits::CLIENT_RTO_MS_INITIAL);
        assert_eq!(m.poll_timeout(), Some(rto));
        m.handle_timeout(rto);
        let [(to, Message::Request(r))] = &sent(&mut m)[..] else { panic!("no retransmission") };
        let [(_, Message::Request(was))] = &first[..] else { panic!("no first copy") };
        assert_eq!((*to, r.id, r.resent), (n(2), was.id, false));
        // Silent again (the timeout doubled): node 3, never heard from, is
        // probed.
        let again = rto.plus_millis(2 * limits::CLIENT_RTO_MS_INITIAL);
        assert_eq!(m.poll_timeout(), Some(again));
        m.handle_timeout(again);
        assert_eq!(sent(&mut m), vec![(n(3), Message::StatusRequest { session: S, probe: 2 })]);
    }

    /// A key whose home, among three members, is member `index`.
    fn key_homed_at(index: usize) -> Key {
        (0..)
            .map(|i| Key(format!("key{i}").into_bytes()))
            .find(|k| home_index(k, 3) == index)
            .expect("some key")
    }

    /// The node a home-routed machine asks first for `key` at `now`.
    fn first_asked(m: &mut ClientMachine, now: Time, key: &Key) -> NodeId {
        m.start(now, key.clone(), Change::Read, 1000).expect("idle");
        sent(m).first().map(|(to, _)| *to).expect("something sent")
    }

    #[test]
    fn every_client_sends_a_key_to_its_home_whatever_order_it_lists_the_nodes_in() {
        for index in 0..3 {
            let key = key_homed_at(index);
            let mut one = ClientMachine::new(vec![n(1), n(2), n(3)], None, S, Routing::Home);
            let mut two = ClientMachine::new(vec![n(3), n(1), n(2)], None, SessionId(8), Routing::Home);
            let home = n(index as u16 + 1);
            assert_eq!(first_asked(&mut one, T0, &key), home);
            assert_eq!(first_asked(&mut two, T0, &key), home);
        }
    }

    /// Runs one read of `key` at `now`, answering every probe: the first
    /// node asked says it is cut off, the next one answers. Returns the node
    /// asked first.
    fn read_with_first_node_cut_off(m: &mut ClientMachine, now: Time, key: &Key) -> NodeId {
        m.start(now, key.clone(), Change::Read, 5000).expect("idle");
        let mut first = None;
        for _ in 0..10 {
            for (to, msg) in sent(m) {
                match msg {
                    Message::StatusRequest { probe, .. } => {
                        m.handle_message(now, to, status_reply(probe, to.0, Time(5_000), INC));
                    }
                    Message::Request(r) => {
                        let outcome = match first {
                            None => Outcome::InProgress { exclusive: false, cut_off: true },
                            Some(_) => Outcome::Done {
                                version: Version(1),
                                precondition_held: true,
                                value: Some(None),
                            },
                        };
                        first.get_or_insert(to);
                        m.handle_message(
                            now,
                            to,
                            Message::Reply { id: r.id, incarnation: INC, node_time: Time(6_000), outcome },
                        );
                    }
                    _ => {}
                }
            }
        }
        assert!(matches!(m.poll_ending(), Some(Ending::Done(_))));
        first.expect("some node asked")
    }

    #[test]
    fn a_home_that_keeps_saying_it_is_cut_off_is_suspected_longer_each_time() {
        let mut m = ClientMachine::new(vec![n(1), n(2), n(3)], None, S, Routing::Home);
        let key = key_homed_at(0);
        assert_eq!(read_with_first_node_cut_off(&mut m, T0, &key), n(1));
        let t1 = T0.plus_millis(limits::CLIENT_SUSPECT_MS_MIN + 1);
        assert_eq!(read_with_first_node_cut_off(&mut m, t1, &key), n(1), "suspicion over: the home again");
        let t2 = t1.plus_millis(limits::CLIENT_SUSPECT_MS_MIN + 1);
        assert_eq!(read_with_first_node_cut_off(&mut m, t2, &key), n(2), "suspected twice as long now");
    }

    #[test]
    fn a_home_that_restarted_is_no_longer_suspected() {
        let mut m = ClientMachine::new(vec![n(1), n(2), n(3)], None, S, Routing::Home);
        let key = key_homed_at(0);
        m.hear(T0, 0, INC, Time(1_000));
        m.suspect(T0, 0);
        assert_eq!(first_asked(&mut m, T0, &key), n(2), "suspected");
        m.end_now();
        m.poll_ending();
        // A status answer from the same life keeps the suspicion; from a
        // new life (it was down, and is back) it ends it.
        m.hear(T0, 0, INC, Time(2_000));
        assert_eq!(first_asked(&mut m, T0, &key), n(2));
        m.end_now();
        m.poll_ending();
        m.hear(T0, 0, Incarnation(INC.0 + 1), Time(3_000));
        assert_eq!(first_asked(&mut m, T0, &key), n(1));
    }

    #[test]
    fn a_silent_home_is_suspected_and_its_keys_go_to_the_next_node_for_a_while() {
        let mut m = ClientMachine::new(vec![n(1), n(2), n(3)], None, S, Routing::Home);
        let key = key_homed_at(0);
        assert_eq!(first_asked(&mut m, T0, &key), n(1));
        // The probe goes unanswered: node 2 is asked, and answers.
        let timeout = m.poll_timeout().expect("a timeout");
        m.handle_timeout(timeout);
        let [(to, Message::StatusRequest { probe, .. })] = &sent(&mut m)[..] else { panic!("no probe") };
        assert_eq!(*to, n(2));
        m.handle_message(timeout, n(2), status_reply(*probe, 2, Time(5_000), INC));
        let [(_, Message::Request(r))] = &sent(&mut m)[..] else { panic!("no request") };
        let done = Outcome::Done { version: Version(1), precondition_held: true, value: Some(None) };
        let answer = Message::Reply { id: r.id, incarnation: INC, node_time: Time(6_000), outcome: done };
        m.handle_message(timeout, n(2), answer);
        assert!(matches!(m.poll_ending(), Some(Ending::Done(_))));
        // The next operation on the key goes to node 2 at once, while node 1
        // is suspected; after that, to the home again.
        assert_eq!(first_asked(&mut m, timeout, &key), n(2));
        m.end_now();
        m.poll_ending();
        let later = timeout.plus_millis(limits::CLIENT_SUSPECT_MS_MIN);
        assert_eq!(first_asked(&mut m, later, &key), n(1));
    }

    #[test]
    fn a_node_that_says_it_is_still_at_it_is_not_left() {
        let mut m = machine();
        started(&mut m, Change::Read);
        for i in 1..=5u64 {
            let at = m.poll_timeout().expect("waiting");
            m.handle_timeout(at);
            assert!(
                matches!(&sent(&mut m)[..], [(NodeId(2), Message::Request(_))]),
                "round {i}: node 2 again"
            );
            let working = Outcome::InProgress { exclusive: false, cut_off: false };
            m.handle_message(at, n(2), reply(1, Time(5_000 + i), INC, working));
        }
    }

    #[test]
    fn a_write_leaves_its_node_after_two_silences_and_the_exclusive_window_of_its_last_copy() {
        let mut m = machine();
        started(&mut m, put());
        // Writes are sent again often enough to keep the node's window.
        let renew = T0.plus_millis(1 + limits::CLIENT_RENEW_WRITE_MS);
        assert_eq!(m.poll_timeout(), Some(renew));
        m.handle_timeout(renew);
        let [(NodeId(2), Message::Request(r))] = &sent(&mut m)[..] else { panic!("no renewal") };
        assert!(!r.resent);
        let second = renew.plus_millis(limits::CLIENT_RENEW_WRITE_MS);
        assert_eq!(m.poll_timeout(), Some(second));
        m.handle_timeout(second);
        assert_eq!(sent(&mut m), vec![], "node 2 may still run it as the only copy");
        let move_at = renew.plus_millis(limits::CLIENT_MOVE_WRITE_AFTER_MS);
        assert_eq!(m.poll_timeout(), Some(move_at));
        m.handle_timeout(move_at);
        assert_eq!(sent(&mut m), vec![(n(3), Message::StatusRequest { session: S, probe: 2 })]);
        m.handle_message(move_at, n(3), status_reply(2, 3, Time(9_000), INC));
        let [(to, Message::Request(r))] = &sent(&mut m)[..] else { panic!("no request") };
        assert_eq!((*to, r.resent, r.sent_at), (n(3), true, Time(9_000)));
        // Node 2's late answer is as good as node 3's.
        m.handle_message(move_at, n(2), reply(1, Time(9_000), INC, written(1)));
        assert!(matches!(m.poll_ending(), Some(Ending::Done(Answer { node: NodeId(2), .. }))));
    }

    #[test]
    fn a_node_that_stopped_running_a_write_as_the_only_copy_can_be_left_without_waiting() {
        let mut m = machine();
        started(&mut m, put());
        let renew = T0.plus_millis(1 + limits::CLIENT_RENEW_WRITE_MS);
        m.handle_timeout(renew);
        sent(&mut m);
        m.handle_message(
            renew,
            n(2),
            reply(1, Time(6_000), INC, Outcome::InProgress { exclusive: false, cut_off: false }),
        );
        m.handle_message(renew, n(3), status_reply(9, 3, Time(1_000), INC));
        let mut copies = Vec::new();
        for _ in 0..4 {
            let at = m.poll_timeout().expect("waiting");
            m.handle_timeout(at);
            assert!(
                !matches!(m.op.as_ref().map(|op| op.step), Some(Step::Pause { .. })),
                "no window to wait out"
            );
            copies.extend(sent(&mut m));
            if copies.iter().any(|(to, _)| *to == n(3)) {
                break;
            }
        }
        let [(NodeId(2), Message::Request(again)), (NodeId(3), Message::Request(moved))] = &copies[..] else {
            panic!("asked node 2 once more, then moved: {copies:?}")
        };
        assert!(again.resent && moved.resent, "no copy is the only one any more");
    }

    /// Node 2 answers that it gave up; node 3 is known. Where the next copy
    /// goes at once, and whether it says `resent`.
    fn next_copy_after_giving_up(maybe_applied: bool) -> (NodeId, bool) {
        let mut m = machine();
        started(&mut m, put());
        m.handle_message(T0.plus_millis(2), n(3), status_reply(9, 3, Time(1_000), INC));
        let gave_up = Outcome::Unavailable { maybe_applied };
        m.handle_message(T0.plus_millis(2), n(2), reply(1, Time(6_000), INC, gave_up));
        let [(to, Message::Request(r))] = &sent(&mut m)[..] else { panic!("no request") };
        (*to, r.resent)
    }

    #[test]
    fn a_node_that_gave_up_without_applying_is_left_at_once_and_the_next_copy_is_not_resent() {
        assert_eq!(next_copy_after_giving_up(false), (n(3), false));
    }

    #[test]
    fn a_node_that_gave_up_after_sending_accepts_makes_the_next_copy_resent() {
        assert_eq!(next_copy_after_giving_up(true), (n(3), true));
    }

    #[test]
    fn a_stale_incarnation_refusal_is_answered_by_a_resent_copy_naming_the_new_one() {
        let mut m = machine();
        started(&mut m, put());
        let newer = Incarnation(42);
        let refused = Outcome::Refused(Refusal::StaleIncarnation);
        m.handle_message(T0.plus_millis(2), n(2), reply(1, Time(3_000), newer, refused));
        let [(to, Message::Request(r))] = &sent(&mut m)[..] else { panic!("no request") };
        // The copy that named the old incarnation may have run before the
        // node changed incarnation, so this one must say so.
        assert_eq!((*to, r.incarnation, r.sent_at, r.resent), (n(2), newer, Time(3_000), true));
    }

    #[test]
    fn a_copy_that_named_no_incarnation_never_runs_and_makes_nothing_resent() {
        let mut m = machine();
        m.start(T0, k(), put(), 1000).expect("idle");
        sent(&mut m);
        // The node heard of us before we heard of it: its reply to a copy
        // naming no incarnation (as a client that skipped the probe sends).
        m.op.as_mut().expect("running").copies.push(Copy {
            node: 1,
            incarnation: Incarnation::UNKNOWN,
            fate: Fate::Pending,
            sends: 1,
            last_sent: T0,
            revoked: false,
        });
        m.op.as_mut().expect("running").step = Step::Await { node: 1, until: T0.plus_millis(50) };
        let refused = Outcome::Refused(Refusal::StaleIncarnation);
        m.handle_message(T0.plus_millis(1), n(2), reply(1, Time(3_000), INC, refused));
        let [(to, Message::Request(r))] = &sent(&mut m)[..] else { panic!("no request") };
        assert_eq!((*to, r.incarnation, r.resent), (n(2), INC, false));
    }

    #[test]
    fn at_the_deadline_a_write_that_may_have_run_is_unknown() {
        let mut m = machine();
        started(&mut m, put());
        m.handle_timeout(T0.plus_millis(1000));
        assert_eq!(m.poll_ending(), Some(Ending::Unknown(Unknown::NoAnswer)));
    }

    #[test]
    fn at_the_deadline_an_operation_that_never_went_out_did_not_run() {
        let mut m = machine();
        m.start(T0, k(), put(), 1000).expect("idle");
        let mut now = T0;
        for _ in 0..100 {
            let Some(at) = m.poll_timeout() else { break };
            now = at;
            m.handle_timeout(now);
            assert!(sent(&mut m).iter().all(|(_, msg)| matches!(msg, Message::StatusRequest { .. })));
        }
        assert_eq!(now, T0.plus_millis(1000));
        assert_eq!(m.poll_ending(), Some(Ending::NotRun(NotRun::Unreachable)));
    }

    #[test]
    fn indeterminate_waits_for_another_copy_and_ends_unknown_when_none_is_left() {
        let mut m = machine();
        started(&mut m, put());
        let mut move_at = T0;
        for _ in 0..10 {
            move_at = m.poll_timeout().expect("waiting");
            m.handle_timeout(move_at);
            if matches!(&sent(&mut m)[..], [(NodeId(3), Message::StatusRequest { .. })]) {
                break;
            }
        }
        m.handle_message(move_at, n(3), status_reply(2, 3, Time(9_000), INC));
        sent(&mut m);
        m.handle_message(move_at, n(3), reply(1, Time(9_000), INC, Outcome::Indeterminate));
        assert_eq!(m.poll_ending(), None, "node 2's copy may still answer");
        m.handle_message(move_at, n(2), reply(1, Time(9_000), INC, Outcome::Indeterminate));
        assert_eq!(m.poll_ending(), Some(Ending::Unknown(Unknown::Indeterminate)));
    }

    #[test]
    fn a_pinned_client_asks_its_node_again_and_nobody_else() {
        let mut m = ClientMachine::new(vec![n(1), n(2), n(3)], Some(n(2)), S, Routing::Home);
        started(&mut m, put());
        let again = m.poll_timeout().expect("waiting");
        m.handle_timeout(again);
        let [(to, Message::Request(r))] = &sent(&mut m)[..] else { panic!("no request") };
        assert_eq!((*to, r.id.seq, r.resent), (n(2), 1, false), "the same request, to the same node");
        let gave_up = Outcome::Unavailable { maybe_applied: false };
        m.handle_message(again, n(2), reply(1, Time(9_000), INC, gave_up));
        assert_eq!(m.poll_ending(), Some(Ending::NotRun(NotRun::NoQuorum)));
    }

    #[test]
    fn overloaded_everywhere_ends_not_run_before_the_deadline() {
        let mut m = machine();
        started(&mut m, put());
        let overloaded = || Outcome::Refused(Refusal::Overloaded);
        for node in [3, 1] {
            m.handle_message(T0.plus_millis(2), n(node), status_reply(9, node, Time(1_000), INC));
        }
        m.handle_message(T0.plus_millis(2), n(2), reply(1, Time(6_000), INC, overloaded()));
        m.handle_message(T0.plus_millis(2), n(3), reply(1, Time(6_000), INC, overloaded()));
        m.handle_message(T0.plus_millis(2), n(1), reply(1, Time(6_000), INC, overloaded()));
        assert_eq!(m.poll_ending(), Some(Ending::NotRun(NotRun::Refused(Refusal::Overloaded))));
    }

    #[test]
    fn replies_to_other_requests_and_from_strangers_are_ignored() {
        let mut m = machine();
        started(&mut m, put());
        m.handle_message(T0.plus_millis(2), n(2), reply(7, Time(6_000), INC, written(1)));
        m.handle_message(T0.plus_millis(2), n(9), reply(1, Time(6_000), INC, written(1)));
        let Message::StatusReply { probe, node_time, status, .. } = status_reply(1, 2, Time(1), INC) else {
            return;
        };
        let other_session = Message::StatusReply { session: SessionId(1), probe, node_time, status };
        m.handle_message(T0.plus_millis(2), n(2), other_session);
        assert_eq!((m.poll_ending(), sent(&mut m)), (None, vec![]));
    }

    #[test]
    fn an_oversized_request_is_refused_before_anything_is_sent() {
        let mut m = machine();
        let big = Change::Put(Value(vec![0; limits::VALUE_BYTES_MAX + 1]));
        m.start(T0, k(), big, 1000).expect("idle");
        assert_eq!(sent(&mut m), vec![]);
        assert_eq!(m.poll_ending(), Some(Ending::NotRun(NotRun::Refused(Refusal::ValueTooLarge))));
        assert!(m.is_idle());
    }

    /// Found in review: a cut-off node keeps a write it already sent in an
    /// accept and answers copies "in progress"; the client must not wait
    /// there for its deadline.
    #[test]
    fn a_node_that_says_it_is_cut_off_is_left_at_once() {
        let mut m = machine();
        started(&mut m, put());
        m.handle_message(T0.plus_millis(2), n(3), status_reply(9, 3, Time(1_000), INC));
        let at = m.poll_timeout().expect("waiting");
        m.handle_timeout(at);
        sent(&mut m);
        let cut_off = Outcome::InProgress { exclusive: false, cut_off: true };
        m.handle_message(at, n(2), reply(1, Time(6_000), INC, cut_off));
        let [(to, Message::Request(r))] = &sent(&mut m)[..] else { panic!("did not move") };
        assert_eq!((*to, r.resent), (n(3), true), "its copy there may still run");
    }
}
