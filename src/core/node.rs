//! A node: acceptor and proposer for every key, plus the round counter and
//! the client request table. See `core` for the order in which a driver
//! calls it.

use super::acceptor::{Acceptor, Slot, Vote};
use super::proposer::{Ctx, Outbox, Progress, Proposal, ReqHandle, Request};
use super::rng::Rng;
use crate::change::Change;
use crate::limits;
use crate::storage::{Record, Synced};
use crate::types::{Ballot, Key, NodeId, Time};
use crate::wire::{Message, Outcome, Refusal};
use std::collections::{BTreeMap, VecDeque};

/// Where an output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Envelope {
    Peer(NodeId, Message),
    Client(ReqHandle, Outcome),
}

/// Everything a node produced since the last `take_ready`: records to make
/// durable, and messages that may leave only once they are. The messages are
/// private: the only ways to get them are `release` with a `Synced` proof or
/// `release_if_nothing_to_sync`, so no driver can send a promise, an
/// accepted or a reply before the state it depends on is on disk.
#[derive(Debug, Default)]
pub struct Ready {
    pub records: Vec<Record>,
    messages: Vec<Envelope>,
}

impl Ready {
    pub fn release(self, _proof: Synced) -> Vec<Envelope> {
        self.messages
    }

    /// The messages, when no record needs syncing first.
    pub fn release_if_nothing_to_sync(self) -> Result<Vec<Envelope>, Ready> {
        if self.records.is_empty() { Ok(self.messages) } else { Err(self) }
    }

    /// Messages a deliberately broken driver sends before syncing (tests only).
    #[cfg(feature = "planted-bugs")]
    pub fn take_messages_unsynced(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.messages)
    }
}

/// The round counter. Rounds below `limit` are reserved on disk; using one
/// at or above it first appends a reservation for a new block.
#[derive(Debug)]
struct Rounds {
    next: u64,
    limit: u64,
}

impl Rounds {
    /// The next round, or `None` when the counter is spent: only a peer
    /// lying about its ballots could push a 64-bit counter to its end, and
    /// reusing the last round would reuse a ballot, so the node stops
    /// proposing instead.
    fn take(&mut self, records: &mut Vec<Record>) -> Option<u64> {
        let round = self.next;
        self.next = round.checked_add(1)?;
        if round >= self.limit {
            self.limit = round.saturating_add(limits::ROUND_BLOCK);
            records.push(Record::RoundsReserved { round_limit: self.limit });
        }
        Some(round)
    }

    /// Fast-forward past a round another proposer used.
    fn observe(&mut self, round: u64) {
        self.next = self.next.max(round.saturating_add(1));
    }
}

pub struct Node {
    id: NodeId,
    members: Vec<NodeId>,
    acceptor: Acceptor,
    rounds: Rounds,
    proposals: BTreeMap<Key, Proposal>,
    queued: BTreeMap<Key, VecDeque<Request>>,
    requests: usize,
    rng: Rng,
    ready: Ready,
    loopback: VecDeque<Message>,
    #[cfg(feature = "planted-bugs")]
    pub bugs: super::PlantedBugs,
}

impl Node {
    /// A node `id` of a cluster of `members`, restored from the records its
    /// log held (in log order), with a seeded random source.
    pub fn new(id: NodeId, members: Vec<NodeId>, records: Vec<Record>, seed: u64) -> Node {
        let mut acceptor = Acceptor::new();
        let mut rounds = Rounds { next: 1, limit: 1 };
        for record in records {
            match record {
                Record::Slot { key, promised, accepted, state } => {
                    rounds.observe(promised.round);
                    acceptor.restore(key, Slot { promised, accepted, state });
                }
                // Skip the rest of the reserved block: ballots in it may have
                // been sent before the restart.
                Record::RoundsReserved { round_limit } => {
                    rounds.next = rounds.next.max(round_limit);
                    rounds.limit = rounds.limit.max(round_limit);
                }
            }
        }
        Node {
            id,
            members,
            acceptor,
            rounds,
            proposals: BTreeMap::new(),
            queued: BTreeMap::new(),
            requests: 0,
            rng: Rng::new(seed),
            ready: Ready::default(),
            loopback: VecDeque::new(),
            #[cfg(feature = "planted-bugs")]
            bugs: super::PlantedBugs::default(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Switches on deliberate bugs (tests only). The acceptor keeps its own
    /// copy, and is reachable only through the node.
    #[cfg(feature = "planted-bugs")]
    pub fn set_bugs(&mut self, bugs: super::PlantedBugs) {
        self.bugs = bugs;
        self.acceptor.bugs = bugs;
    }

    pub fn acceptor(&self) -> &Acceptor {
        &self.acceptor
    }

    /// Every durable fact of this node, for compacting the log: each key's
    /// slot and the round reservation.
    pub fn live_records(&self) -> impl Iterator<Item = Record> + '_ {
        let rounds = Record::RoundsReserved { round_limit: self.rounds.limit };
        self.acceptor.live_records().chain(std::iter::once(rounds))
    }

    pub fn requests_in_flight(&self) -> usize {
        self.requests
    }

    /// Everything produced since the last call.
    pub fn take_ready(&mut self) -> Ready {
        std::mem::take(&mut self.ready)
    }

    /// The earliest time at which `handle_timeout` has work to do.
    pub fn next_deadline(&self) -> Option<Time> {
        let proposals = self.proposals.values().map(Proposal::wake_at);
        let queued = self.queued.values().flat_map(|q| q.iter().map(|r| r.deadline));
        proposals.chain(queued).min()
    }

    /// A client asks for `change` on `key`, to be answered within `timeout_ms`.
    pub fn handle_request(
        &mut self,
        now: Time,
        handle: ReqHandle,
        key: Key,
        change: Change,
        timeout_ms: u64,
    ) {
        if let Some(refusal) = self.refusal(&key, &change, timeout_ms) {
            self.reply(handle, Outcome::Refused(refusal));
            return;
        }
        self.requests += 1;
        let request = Request { handle, change, deadline: now.plus_millis(timeout_ms) };
        if self.proposals.contains_key(&key) {
            // Joins the running batch at its next attempt if it is still
            // open, or runs in the next batch.
            self.queued.entry(key).or_default().push_back(request);
            return;
        }
        self.proposals.insert(key.clone(), Proposal::new(key.clone(), request, now));
        self.drive(now, &key);
        self.drain_loopback(now);
    }

    fn refusal(&self, key: &Key, change: &Change, timeout_ms: u64) -> Option<Refusal> {
        let queue_full = self.queued.get(key).is_some_and(|q| q.len() >= limits::REQUESTS_QUEUED_PER_KEY_MAX);
        if key.0.len() > limits::KEY_BYTES_MAX {
            Some(Refusal::KeyTooLarge)
        } else if change.value_bytes() > limits::VALUE_BYTES_MAX {
            Some(Refusal::ValueTooLarge)
        } else if timeout_ms == 0 || timeout_ms > limits::REQUEST_TIMEOUT_MS_MAX {
            Some(Refusal::BadTimeout)
        } else if self.requests >= limits::REQUESTS_IN_FLIGHT_MAX || queue_full {
            Some(Refusal::Overloaded)
        } else {
            None
        }
    }

    /// A message from a peer (already decoded and validated by the driver).
    pub fn handle_message(&mut self, now: Time, from: NodeId, msg: Message) {
        self.dispatch(now, from, msg);
        self.drain_loopback(now);
    }

    fn drain_loopback(&mut self, now: Time) {
        while let Some(msg) = self.loopback.pop_front() {
            self.dispatch(now, self.id, msg);
        }
    }

    fn dispatch(&mut self, now: Time, from: NodeId, msg: Message) {
        match msg {
            Message::Prepare { key, ballot } => {
                let vote = self.acceptor.handle_prepare(&key, ballot);
                self.vote(from, vote);
            }
            Message::Accept { key, ballot, state } => {
                let vote = self.acceptor.handle_accept(&key, ballot, &state);
                self.vote(from, vote);
            }
            Message::Promise { key, ballot, accepted, state } => {
                self.rounds.observe(accepted.round);
                self.with_proposal(now, &key, |p, ctx| {
                    p.on_promise(now, from, ballot, accepted, &state, ctx)
                });
            }
            Message::Accepted { key, ballot } => {
                self.with_proposal(now, &key, |p, _| p.on_accepted(from, ballot));
            }
            Message::Reject { key, ballot, promised } => {
                self.rounds.observe(promised.round);
                self.with_proposal(now, &key, |p, ctx| p.on_reject(now, from, ballot, ctx.rng));
            }
            // Client traffic and status are the driver's business.
            Message::Request { .. }
            | Message::Reply { .. }
            | Message::StatusRequest { .. }
            | Message::StatusReply { .. } => {}
        }
    }

    fn vote(&mut self, to: NodeId, vote: Vote) {
        self.ready.records.extend(vote.record);
        self.send(to, vote.reply);
    }

    /// Time passed: retries, backoffs and deadlines.
    pub fn handle_timeout(&mut self, now: Time) {
        let due: Vec<Key> =
            self.proposals.iter().filter(|(_, p)| p.wake_at() <= now).map(|(k, _)| k.clone()).collect();
        for key in due {
            self.with_proposal(now, &key, |p, ctx| p.on_timer(now, ctx));
        }
        self.expire_queued(now);
        self.drain_loopback(now);
    }

    fn expire_queued(&mut self, now: Time) {
        let mut expired = Vec::new();
        for queue in self.queued.values_mut() {
            queue.retain(|r| {
                let keep = r.deadline > now;
                if !keep {
                    expired.push(r.handle);
                }
                keep
            });
        }
        self.queued.retain(|_, q| !q.is_empty());
        for handle in expired {
            self.requests -= 1;
            self.reply(handle, Outcome::Unavailable { maybe_applied: false });
        }
    }

    /// Answers every request, for a clean shutdown: proposals still running
    /// may have sent accepts, so their outcome is unknown.
    pub fn shutdown(&mut self) {
        let proposals: Vec<Proposal> = std::mem::take(&mut self.proposals).into_values().collect();
        for p in proposals {
            for (handle, outcome) in p.unavailable() {
                self.reply(handle, outcome);
            }
        }
        let queued: Vec<Request> = std::mem::take(&mut self.queued).into_values().flatten().collect();
        for r in queued {
            self.reply(r.handle, Outcome::Refused(Refusal::ShuttingDown));
        }
        self.requests = 0;
    }

    /// Runs `f` on the proposal for `key` (if any), then starts attempts that
    /// need a ballot and finishes the proposal if `f` says it is over.
    fn with_proposal(
        &mut self,
        now: Time,
        key: &Key,
        f: impl FnOnce(&mut Proposal, &mut Ctx<'_>) -> Progress,
    ) {
        let Some(mut proposal) = self.proposals.remove(key) else {
            return;
        };
        let mut out = Outbox::new();
        let progress = {
            let mut ctx = self.ctx(&mut out);
            f(&mut proposal, &mut ctx)
        };
        self.flush(out);
        self.proposals.insert(key.clone(), proposal);
        match progress {
            Progress::Pending => self.drive(now, key),
            Progress::Expired(outcomes) => {
                self.answer(outcomes);
                self.drive(now, key);
            }
            Progress::Finished(outcomes) => self.finish(now, key, outcomes),
        }
    }

    /// Starts a new attempt if the proposal for `key` is ready for one,
    /// first letting queued requests join the batch while it may grow.
    fn drive(&mut self, now: Time, key: &Key) {
        let needs = self.proposals.get(key).is_some_and(|p| p.needs_ballot(now));
        if !needs {
            return;
        }
        if let (Some(p), Some(queue)) = (self.proposals.get_mut(key), self.queued.get_mut(key)) {
            while p.can_grow() {
                let Some(request) = queue.pop_front() else { break };
                p.join(request);
            }
            if queue.is_empty() {
                self.queued.remove(key);
            }
        }
        let Some(round) = self.rounds.take(&mut self.ready.records) else {
            let outcomes = self.proposals.get(key).map(Proposal::unavailable).unwrap_or_default();
            return self.finish(now, key, outcomes);
        };
        let ballot = Ballot::new(round, self.id);
        let mut out = Outbox::new();
        if let Some(p) = self.proposals.get_mut(key) {
            p.start(now, ballot, &self.members, &mut out);
        }
        self.flush(out);
    }

    fn finish(&mut self, now: Time, key: &Key, outcomes: Vec<(ReqHandle, Outcome)>) {
        if self.proposals.remove(key).is_none() {
            return;
        }
        self.answer(outcomes);
        let next = self.queued.get_mut(key).and_then(VecDeque::pop_front);
        if self.queued.get(key).is_some_and(VecDeque::is_empty) {
            self.queued.remove(key);
        }
        if let Some(request) = next {
            self.proposals.insert(key.clone(), Proposal::new(key.clone(), request, now));
            self.drive(now, key);
        }
    }

    fn answer(&mut self, outcomes: Vec<(ReqHandle, Outcome)>) {
        for (handle, outcome) in outcomes {
            self.requests -= 1;
            self.reply(handle, outcome);
        }
    }

    fn ctx<'a>(&'a mut self, out: &'a mut Outbox) -> Ctx<'a> {
        Ctx {
            members: &self.members,
            out,
            rng: &mut self.rng,
            #[cfg(feature = "planted-bugs")]
            bugs: self.bugs,
        }
    }

    fn flush(&mut self, out: Outbox) {
        for (to, msg) in out {
            self.send(to, msg);
        }
    }

    /// Messages to ourselves are handled in this turn; their effects leave
    /// the node in the same `Ready`, after the same sync.
    fn send(&mut self, to: NodeId, msg: Message) {
        if to == self.id {
            self.loopback.push_back(msg);
        } else {
            self.ready.messages.push(Envelope::Peer(to, msg));
        }
    }

    fn reply(&mut self, handle: ReqHandle, outcome: Outcome) {
        self.ready.messages.push(Envelope::Client(handle, outcome));
    }
}
