//! The proposer side of a batch of requests on one key: prepare → promise
//! (majority) → apply the changes, in order, to the highest accepted state →
//! accept → accepted (majority). Batching is CASPaxos' own optimisation:
//! requests that queue up at a node for the same key share one round, so a
//! hot key costs one round per batch instead of one per request, and fewer
//! proposers duel for it.
//!
//! A `Proposal` is a state machine driven by `Node`; it never chooses ballots
//! itself (the node owns the round counter and its reservation) and never
//! touches I/O: it appends `(to, message)` pairs to an outbox.
//!
//! # Applying a write at most once
//!
//! A write request may reach several proposers (the client retries at
//! another node, or after a restart), and one proposer may evaluate it in
//! several attempts (an attempt whose accepts were sent can be abandoned,
//! and its state still be chosen, or adopted by a later proposer as the
//! highest accepted one). Before evaluating a request on the highest
//! accepted state `T` of a promise quorum, the proposer asks whether it was
//! evaluated in `T`'s chain already:
//! - by this proposal: `T` names the newest state this node wrote in its
//!   chain (`RegisterState::writers`; ballots grow along a chain). If that is
//!   one of this proposal's states, the request stands as that attempt
//!   judged it; if it is older than all of them, none is in the chain. This
//!   is exact however far the key moved on.
//! - by another proposer (a copy the client sent elsewhere or earlier): `T`
//!   remembers it (`RegisterState::recent`, the newest 32 write
//!   evaluations), or `T` still remembers every evaluation at or above the
//!   lowest version one could have been at (its *floor*), so it was not.
//!
//! Found: it is not evaluated again; once this attempt's accept (which
//! descends from `T`) is chosen, the request gets the answer it had. Ruled
//! out everywhere: evaluate it; no other chain can be chosen any more, since
//! after a majority promised this ballot only states in `T`'s chain or
//! descending from what this ballot proposes can be. Otherwise the outcome
//! is indeterminate, and the request is answered so, never evaluated a
//! second time.
//!
//! The floor: a write can only be evaluated on a state at least as new as
//! the last one its client saw before sending it (a state that was chosen,
//! since the client saw it in an answer), so `Request::floor` is that
//! version. A copy that is *exclusive* (`Dedupe::exclusive_until`: the
//! client sent no copy anywhere else, and clients wait `EXCLUSIVE_WINDOW_MS`
//! on this node's clock before they do, renewing it while they wait) cannot
//! have been evaluated by any other proposer while the window lasts, so the
//! client's floor does not count then. That is what keeps a healthy write
//! from ever being indeterminate.

use super::backoff::Backoff;
use super::quorum::Quorum;
use super::rng::Rng;
use crate::change::Change;
use crate::limits;
use crate::types::{Ballot, Evaluation, Fingerprint, Key, NodeId, RegisterState, Time, Version};
use crate::wire::{Message, Outcome, QueryId};
use std::collections::BTreeMap;

/// Messages a proposal wants sent.
pub type Outbox = Vec<(NodeId, Message)>;

/// The node's handle for a client request, opaque to the proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReqHandle(pub u64);

/// What a proposer must assume about other evaluations of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dedupe {
    /// The client's floor: evaluations by other proposers are at or above it.
    pub floor: Version,
    /// Until this time (on this node's clock) no other proposer can have
    /// evaluated the request; `None` when others may have (a resent copy).
    pub exclusive_until: Option<Time>,
    /// Whether an attempt found the request evaluated in its base's chain.
    pub found: bool,
}

impl Dedupe {
    /// A copy admitted at `now`, sent (as the client reckons this node's
    /// clock) at `sent_at`, exclusive or not.
    pub fn new(floor: Version, exclusive: bool, sent_at: Time, now: Time) -> Dedupe {
        // A lower bound on our clock cannot lie ahead of it. If it does, the
        // client reckoned with another clock (an earlier life of this node),
        // and the copy cannot be trusted to be the only one.
        let trusted = exclusive && sent_at <= now;
        let exclusive_until = trusted.then(|| sent_at.plus_millis(limits::EXCLUSIVE_WINDOW_MS));
        Dedupe { floor, exclusive_until, found: false }
    }

    /// See `Proposal::renew_exclusive`.
    pub fn renew(&mut self, renewal: Option<Time>, now: Time) -> bool {
        self.exclusive_until = match (self.exclusive_until, renewal) {
            (Some(current), Some(until)) if now < current => Some(current.max(until)),
            _ => None,
        };
        self.exclusive_until.is_some_and(|until| now < until)
    }

    /// The lowest version at which another proposer may have evaluated the
    /// request, as seen at `now`; `None` while the copy is exclusive.
    fn others_floor_at(&self, now: Time) -> Option<Version> {
        match self.exclusive_until {
            Some(until) if now < until => None,
            _ => Some(self.floor),
        }
    }
}

/// One client request in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub handle: ReqHandle,
    pub change: Change,
    pub deadline: Time,
    pub fingerprint: Fingerprint,
    pub dedupe: Dedupe,
    /// The client said it sent the request elsewhere too.
    pub resent: bool,
    /// A read that must run both phases, writing the state back, even
    /// where a read in one round would do (see `Watches::read_done`).
    pub write_back: bool,
}

/// How one request stands against a state.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Judgement {
    /// Evaluated before in the state's chain: this is its answer.
    Found(Outcome),
    /// Not in the chain: evaluate it.
    Evaluate,
    /// Perhaps in the chain, but forgotten.
    Indeterminate,
}

/// A state one of this proposal's attempts sent in accepts: it may end up
/// in the chain even though the attempt was abandoned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Written {
    ballot: Ballot,
    /// The answer each write request of that attempt gets if the state is
    /// in the chain (whether the attempt evaluated it or found it).
    answers: BTreeMap<ReqHandle, Outcome>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Between attempts (backing off), or not started yet.
    Idle,
    Preparing {
        ballot: Ballot,
        next: Ballot,
        votes: Quorum,
        best: Ballot,
        state: RegisterState,
        resends: u32,
    },
    Accepting {
        ballot: Ballot,
        votes: Quorum,
        /// The acceptors that also promised `next` (see `FastPath`).
        next: Ballot,
        next_votes: Quorum,
        state: RegisterState,
        answers: Answers,
        resends: u32,
        since: Time,
    },
    /// A read-only batch asks what the acceptors accepted last.
    Querying {
        query: QueryId,
        votes: Quorum,
        /// Each accepted ballot reported, how many reported it, and its state.
        tally: Vec<(Ballot, usize, RegisterState)>,
        resends: u32,
    },
}

/// What a proposal leaves its node when it ends with a majority of
/// acceptors having accepted `accepted` and promised `next` in the same
/// step: the state accepted is chosen, and for `next` that majority's
/// promises all report it. That is exactly what a prepare at `next` would
/// have gathered, so the node's next proposal on the key may skip the
/// prepare and send accepts at `next` for a state built on it. If some
/// acceptor promised a higher ballot since, it refuses, and the proposal
/// falls back to both phases. Nothing but those promises is relied on:
/// a majority promised `next` and reported `accepted` as its newest state,
/// and phase 2 at `next` then proposes a state descending from the highest
/// accepted one of a promise quorum, as Paxos requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastPath {
    pub accepted: Ballot,
    pub next: Ballot,
}

/// The answer each request of an attempt gets if its accept is chosen.
type Answers = BTreeMap<ReqHandle, Outcome>;

/// What the node should do after feeding a proposal an event.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Keep waiting (messages may have been queued in the outbox).
    Pending,
    /// The proposal is over; answer every request of the batch.
    Finished(Vec<(ReqHandle, Outcome)>),
    /// Answer these requests now (their deadlines passed, or their outcome
    /// is indeterminate); the rest of the batch goes on.
    Settled(Vec<(ReqHandle, Outcome)>),
}

#[derive(Debug)]
pub struct Proposal {
    pub key: Key,
    requests: Vec<Request>,
    phase: Phase,
    wake_at: Time,
    attempts: u32,
    /// When the proposal, and the attempt in progress, started.
    started: Time,
    attempt_started: Time,
    backoff: Backoff,
    written: Vec<Written>,
    /// How long the last attempt took to gather its promises, for the node's
    /// sense of how long a healthy quorum takes.
    quorum_sample_us: Option<u64>,
    /// Whether a one-round read was tried (once per proposal).
    queried: bool,
    fast_path: Option<FastPath>,
    /// The state the proposal found chosen, once it finished: what its
    /// accepts carried, or what a one-round read agreed on.
    chosen: Option<RegisterState>,
    /// What the node noted when the attempt in progress began (see
    /// `mark_attempt`).
    attempt_mark: u64,
}

impl Proposal {
    pub fn new(key: Key, first: Request, now: Time) -> Proposal {
        Proposal {
            key,
            requests: vec![first],
            phase: Phase::Idle,
            wake_at: now,
            attempts: 0,
            started: now,
            attempt_started: now,
            backoff: Backoff::new(),
            written: Vec::new(),
            quorum_sample_us: None,
            queried: false,
            fast_path: None,
            chosen: None,
            attempt_mark: 0,
        }
    }

    /// The earliest deadline in the batch: a request gives up then.
    pub fn deadline(&self) -> Time {
        self.requests.iter().map(|r| r.deadline).min().unwrap_or_default()
    }

    /// Whether more requests may join: between attempts, up to the batch
    /// limit. (Each request is judged on its own, so a batch may change
    /// between attempts.)
    pub fn can_grow(&self) -> bool {
        self.phase == Phase::Idle && self.requests.len() < limits::BATCH_REQUESTS_MAX
    }

    pub fn join(&mut self, request: Request) {
        debug_assert!(self.can_grow());
        self.requests.push(request);
    }

    /// Another copy of `handle`'s request came: if the client sent it as the
    /// only one (`renewal`: it will not send elsewhere before then), the
    /// window lasts that long, unless it lapsed or was revoked (then other
    /// copies may exist already). A window that is over at `now` is revoked
    /// for good, so that what the node answers stays true. Whether the
    /// request is still run as the only copy.
    pub fn renew_exclusive(&mut self, handle: ReqHandle, renewal: Option<Time>, now: Time) -> bool {
        let mut exclusive = false;
        for r in self.requests.iter_mut().filter(|r| r.handle == handle) {
            exclusive = r.dedupe.renew(renewal, now);
        }
        exclusive
    }

    /// The requests still run as the only copy of their write: those whose
    /// clients wait for this node alone.
    pub fn exclusive_handles(&self) -> Vec<ReqHandle> {
        self.requests.iter().filter(|r| r.dedupe.exclusive_until.is_some()).map(|r| r.handle).collect()
    }

    /// When the proposal started.
    pub fn running_since(&self) -> Time {
        self.started
    }

    /// How long its last attempt took to gather a majority of promises, once.
    pub fn take_quorum_sample_us(&mut self) -> Option<u64> {
        self.quorum_sample_us.take()
    }

    /// The node is cut off: gives up the requests no accept of this
    /// proposal carried and no attempt found evaluated (they never ran, and
    /// never will here), and stops running the others as the only copy.
    pub fn give_up_unsent(&mut self) -> Progress {
        let (unsent, kept): (Vec<Request>, Vec<Request>) =
            std::mem::take(&mut self.requests).into_iter().partition(|r| {
                !r.dedupe.found && !self.written.iter().any(|w| w.answers.contains_key(&r.handle))
            });
        self.requests = kept;
        for r in &mut self.requests {
            r.dedupe.exclusive_until = None;
        }
        if let Phase::Accepting { answers, .. } = &mut self.phase {
            unsent.iter().for_each(|r| drop(answers.remove(&r.handle)));
        }
        let outcomes =
            unsent.iter().map(|r| (r.handle, Outcome::Unavailable { maybe_applied: false })).collect();
        if self.requests.is_empty() { Progress::Finished(outcomes) } else { Progress::Settled(outcomes) }
    }

    /// Once, when the proposal finished: what its last accepts promised.
    pub fn take_fast_path(&mut self) -> Option<FastPath> {
        self.fast_path.take()
    }

    /// Once, when the proposal finished: the key's state it found chosen,
    /// with the mark of the attempt that found it (the node's watches
    /// learn of new versions from it). That state was the key's latest at
    /// some moment after the attempt began: states chosen before its
    /// promises (or, for a read in one round, its answers) were gathered
    /// are in its chain.
    pub fn take_chosen(&mut self) -> Option<(RegisterState, u64)> {
        self.chosen.take().map(|state| (state, self.attempt_mark))
    }

    /// The node notes `mark` (how many watches it had taken) as the next
    /// attempt begins.
    pub fn mark_attempt(&mut self, mark: u64) {
        self.attempt_mark = mark;
    }

    /// True when a read in one round should be tried: the batch only reads,
    /// none of its reads must write back, and no query of this proposal
    /// failed yet.
    pub fn wants_query(&self) -> bool {
        !self.queried && self.requests.iter().all(|r| !r.change.is_write() && !r.write_back)
    }

    /// When the node must call `on_timer` next.
    pub fn wake_at(&self) -> Time {
        self.wake_at.min(self.deadline())
    }

    /// True when the proposal waits for a fresh ballot to start an attempt.
    pub fn needs_ballot(&self, now: Time) -> bool {
        self.phase == Phase::Idle && now >= self.wake_at && now < self.deadline()
    }

    /// Starts an attempt at `ballot`: prepare at every member. Its accepts
    /// will ask for a promise of `next` too.
    pub fn start(&mut self, now: Time, ballot: Ballot, next: Ballot, members: &[NodeId], out: &mut Outbox) {
        self.attempts += 1;
        self.attempt_started = now;
        self.phase = Phase::Preparing {
            ballot,
            next,
            votes: Quorum::new(members.len()),
            best: Ballot::ZERO,
            state: RegisterState::default(),
            resends: 0,
        };
        self.wake_at = now.plus_millis(limits::PHASE_RESEND_MS);
        for &to in members {
            out.push((to, Message::Prepare { key: self.key.clone(), ballot }));
        }
    }

    /// A promise for `ballot` from `from`, reporting its accepted state.
    pub fn on_promise(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        accepted: Ballot,
        state: &RegisterState,
        ctx: &mut Ctx<'_>,
    ) -> Progress {
        let Phase::Preparing { ballot: mine, next, votes, best, state: best_state, .. } = &mut self.phase
        else {
            return Progress::Pending;
        };
        if *mine != ballot || votes.has_answered(from) {
            return Progress::Pending;
        }
        let first = !votes.has_any_answer();
        votes.yes(from);
        // The planted bug keeps the first promise's state (the proposer's own
        // acceptor answers first) and ignores what the others accepted.
        let adopt = if ctx.bugs().ignore_accepted_state { first } else { accepted > *best };
        if adopt {
            *best = accepted;
            *best_state = state.clone();
        }
        if !votes.is_reached() {
            return Progress::Pending;
        }
        self.quorum_sample_us = Some(now.micros_since(self.attempt_started));
        if best.is_zero() && self.requests.iter().all(|r| !r.change.is_write()) {
            return self.answer_unwritten();
        }
        let (base, next) = (best_state.clone(), *next);
        self.propose(now, ballot, next, &base, ctx)
    }

    /// A promise quorum reported nothing accepted, and the batch only
    /// reads (or watches): nothing was ever chosen for the key, so the
    /// reads see the state every key starts with, absent at version 0, and
    /// nothing is written back. Why that is linearizable: a state chosen
    /// before the read began was accepted by a majority, which shares an
    /// acceptor with this quorum; an acceptor's accepted ballot never goes
    /// back to zero, so that acceptor would have reported it. The read
    /// takes effect at its start. (A read in one round whose majority
    /// agrees on nothing accepted is the same case.)
    ///
    /// Writing nothing is what keeps reads and watches of keys that do not
    /// exist from leaving state behind: a watch switches no history on for
    /// such a key (a watcher sees its first versions as the history allows
    /// once it exists; see `docs/watch.md`), and the acceptors keep only
    /// the promise, in their bounded table of such promises.
    fn answer_unwritten(&mut self) -> Progress {
        let state = RegisterState::default();
        let outcomes = self.requests.iter().map(|r| (r.handle, evaluated_answer(r, &state, true))).collect();
        self.phase = Phase::Idle;
        self.chosen = Some(state);
        Progress::Finished(outcomes)
    }

    /// Starts an attempt at `ballot` with its accepts at once: a majority
    /// promised `ballot` already, reporting `base` as the state it accepted
    /// last (see `FastPath`). Its accepts ask for a promise of `next`.
    pub fn start_fast(
        &mut self,
        now: Time,
        ballot: Ballot,
        next: Ballot,
        base: &RegisterState,
        ctx: &mut Ctx<'_>,
    ) -> Progress {
        self.attempts += 1;
        self.attempt_started = now;
        self.propose(now, ballot, next, base, ctx)
    }

    /// Phase 2 on `base`, the highest state a promise quorum for `ballot`
    /// reported: evaluates the batch and sends the accepts.
    fn propose(
        &mut self,
        now: Time,
        ballot: Ballot,
        next: Ballot,
        base: &RegisterState,
        ctx: &mut Ctx<'_>,
    ) -> Progress {
        // Requests whose deadline passed while the promises came are
        // answered, not evaluated: their clients stopped waiting.
        let mut settled = self.expire(now);
        let (state, answers, indeterminate) = self.apply_batch(base, ballot, now, ctx);
        settled.extend(indeterminate);
        if self.requests.is_empty() {
            self.phase = Phase::Idle;
            return Progress::Finished(settled);
        }
        self.begin_accept(now, ballot, next, state, answers, ctx);
        if settled.is_empty() { Progress::Pending } else { Progress::Settled(settled) }
    }

    /// Judges and evaluates every request of the batch in order on `base`;
    /// the state to propose, each remaining request's answer, and the
    /// requests answered now as indeterminate (removed from the batch).
    fn apply_batch(
        &mut self,
        base: &RegisterState,
        ballot: Ballot,
        now: Time,
        ctx: &Ctx<'_>,
    ) -> (RegisterState, Answers, Vec<(ReqHandle, Outcome)>) {
        let mut state = base.clone();
        let mut answers = Answers::new();
        let mut writes = Answers::new();
        let mut evaluated_any = false;
        let mut indeterminate = Vec::new();
        let mut kept = Vec::with_capacity(self.requests.len());
        for mut request in std::mem::take(&mut self.requests) {
            let outcome = match self.judge(&request, base, &state, now, ctx) {
                Judgement::Found(outcome) => {
                    request.dedupe.found = true;
                    outcome
                }
                Judgement::Indeterminate => {
                    indeterminate.push((request.handle, Outcome::Indeterminate));
                    continue;
                }
                Judgement::Evaluate => {
                    let applied = request.change.apply(&state, request.fingerprint);
                    state = applied.state;
                    evaluated_any |= request.change.is_write();
                    evaluated_answer(&request, &state, applied.precondition_held)
                }
            };
            if request.change.is_write() {
                writes.insert(request.handle, without_value(&outcome));
            }
            answers.insert(request.handle, outcome);
            kept.push(request);
        }
        self.requests = kept;
        if evaluated_any {
            state.written_by(ballot, base);
            self.written.push(Written { ballot, answers: writes });
        }
        (state, answers, indeterminate)
    }

    /// How `request` stands against `state` (the base, plus what this
    /// attempt evaluated before it) at `now` (see the module comment).
    fn judge(
        &self,
        request: &Request,
        base: &RegisterState,
        state: &RegisterState,
        now: Time,
        ctx: &Ctx<'_>,
    ) -> Judgement {
        if !request.change.is_write() {
            return Judgement::Evaluate;
        }
        // This attempt's own evaluations so far are all in `state` (a batch
        // is no longer than the memory); the chain's are in `base`, which
        // this batch's may have pushed out of `state`.
        let remembered = state.find(request.fingerprint).or_else(|| base.find(request.fingerprint));
        if let Some(e) = remembered.filter(|_| !ctx.skips_lookup(request)) {
            return Judgement::Found(found_answer(request, e));
        }
        let mut floor = request.dedupe.others_floor_at(now);
        match self.own_standing(request, base) {
            Own::Found(answer) => return Judgement::Found(answer),
            Own::Absent => {}
            Own::Unknown(own) => floor = Some(floor.map_or(own, |f| f.min(own))),
        }
        match floor {
            Some(f) if !base.remembers_since(f) => Judgement::Indeterminate,
            _ => Judgement::Evaluate,
        }
    }

    fn begin_accept(
        &mut self,
        now: Time,
        ballot: Ballot,
        next: Ballot,
        state: RegisterState,
        answers: Answers,
        ctx: &mut Ctx<'_>,
    ) {
        for &to in ctx.members {
            let state = state.clone();
            ctx.out.push((to, Message::Accept { key: self.key.clone(), ballot, state, next }));
        }
        let (votes, next_votes) = (Quorum::new(ctx.members.len()), Quorum::new(ctx.members.len()));
        self.phase =
            Phase::Accepting { ballot, votes, next, next_votes, state, answers, resends: 0, since: now };
        self.wake_at = now.plus_millis(limits::PHASE_RESEND_MS);
    }

    /// An accepted for `ballot` from `from`, whose promise is now `promised`.
    pub fn on_accepted(&mut self, now: Time, from: NodeId, ballot: Ballot, promised: Ballot) -> Progress {
        let Phase::Accepting { ballot: mine, votes, next, next_votes, answers, since, state, .. } =
            &mut self.phase
        else {
            return Progress::Pending;
        };
        if *mine != ballot {
            return Progress::Pending;
        }
        votes.yes(from);
        if promised == *next {
            next_votes.yes(from);
        }
        if !votes.is_reached() {
            return Progress::Pending;
        }
        self.quorum_sample_us = Some(now.micros_since(*since));
        self.fast_path = next_votes.is_reached().then_some(FastPath { accepted: ballot, next: *next });
        // The proposal is over: its state moves out rather than being copied.
        self.chosen = Some(std::mem::take(state));
        let outcomes = self.requests.iter().filter_map(|r| Some((r.handle, answers.remove(&r.handle)?)));
        Progress::Finished(outcomes.collect())
    }

    /// Starts a read in one round: asks every member what it accepted last.
    pub fn start_query(&mut self, now: Time, query: QueryId, members: &[NodeId], out: &mut Outbox) {
        self.queried = true;
        self.attempt_started = now;
        self.phase =
            Phase::Querying { query, votes: Quorum::new(members.len()), tally: Vec::new(), resends: 0 };
        self.wake_at = now.plus_millis(limits::PHASE_RESEND_MS);
        for &to in members {
            out.push((to, Message::Query { key: self.key.clone(), query }));
        }
    }

    /// An acceptor's answer to a query.
    ///
    /// # Reads in one round
    ///
    /// When a majority of acceptors report the same accepted ballot, the
    /// state accepted at it is the value to read, with nothing to write
    /// back. Why that is linearizable:
    /// - It is chosen: one ballot carries one state (a proposer sends one
    ///   state per ballot), and a majority accepted it.
    /// - Nothing newer was chosen before the read began: a state chosen
    ///   then was accepted by a majority before any of these answers was
    ///   sent, and that majority shares an acceptor with this one, whose
    ///   accepted ballot would be at least that state's; every answer names
    ///   the same ballot, so that state is this one or older, and an older
    ///   chosen state is in the chain of every later one (CASPaxos builds
    ///   each chosen state on the highest accepted state of a quorum).
    /// - So the read takes effect at the later of its start and the moment
    ///   the state was chosen; the state is current then.
    ///
    /// Answers never report a state that is not durable (see
    /// `Acceptor::handle_query`). When the answers disagree (a write is in
    /// flight), the batch falls back to both phases, which write back.
    pub fn on_query_reply(
        &mut self,
        now: Time,
        from: NodeId,
        query: QueryId,
        accepted: Ballot,
        state: &RegisterState,
        ctx: &Ctx<'_>,
    ) -> Progress {
        let Phase::Querying { query: mine, votes, tally, .. } = &mut self.phase else {
            return Progress::Pending;
        };
        if *mine != query || votes.has_answered(from) {
            return Progress::Pending;
        }
        votes.yes(from);
        match tally.iter_mut().find(|(b, _, _)| *b == accepted) {
            Some((_, count, _)) => *count += 1,
            None => tally.push((accepted, 1, state.clone())),
        }
        let majority = if ctx.bugs().read_from_one_acceptor { 1 } else { votes.majority() };
        if let Some((ballot, _, agreed)) = tally.iter_mut().find(|(_, count, _)| *count >= majority) {
            // A watch that would switch the key's history on must write the
            // state back: a read in one round writes nothing. A key nothing
            // was accepted for keeps no history (see `answer_unwritten`).
            let unwritten = ballot.is_zero();
            if !unwritten && !self.requests.iter().all(|r| r.change.is_identity_on(agreed)) {
                self.fall_back_from_query(now);
                return Progress::Pending;
            }
            let outcomes = self.requests.iter().map(|r| (r.handle, evaluated_answer(r, agreed, true)));
            let outcomes = outcomes.collect();
            self.chosen = Some(std::mem::take(agreed));
            return Progress::Finished(outcomes);
        }
        let best = tally.iter().map(|(_, count, _)| *count).max().unwrap_or(0);
        if best + votes.unanswered() < majority {
            self.fall_back_from_query(now);
        }
        Progress::Pending
    }

    /// The acceptors disagree or are slow: run the batch in both phases.
    fn fall_back_from_query(&mut self, now: Time) {
        self.phase = Phase::Idle;
        self.wake_at = now;
    }

    /// A rejection of `ballot` by `from`: an acceptor promised a higher
    /// ballot, so this one is unlikely to win even if a majority could still
    /// answer yes, and waiting for silent members to decide would stall the
    /// attempt for all its resends. It is abandoned at once and retried
    /// after a backoff; the node has already fast-forwarded its rounds past
    /// the ballot the acceptor reported.
    ///
    /// A refusal naming this attempt's own next ballot is not a conflict: a
    /// late copy of its prepare reached an acceptor that had taken its
    /// accept (and promised the next ballot) already.
    pub fn on_reject(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        promised: Ballot,
        rng: &mut Rng,
    ) -> Progress {
        if matches!(&self.phase, Phase::Accepting { ballot: mine, next, .. } if *mine == ballot && *next == promised)
        {
            return Progress::Pending;
        }
        let rejected = match &mut self.phase {
            Phase::Preparing { ballot: mine, votes, .. } | Phase::Accepting { ballot: mine, votes, .. }
                if *mine == ballot =>
            {
                votes.no(from);
                true
            }
            _ => false,
        };
        if rejected { self.abandon_attempt(now, rng) } else { Progress::Pending }
    }

    /// Time passed: resend to silent members, give up the attempt after too
    /// many resends, or give up requests at their deadlines.
    pub fn on_timer(&mut self, now: Time, ctx: &mut Ctx<'_>) -> Progress {
        if now >= self.deadline() {
            let expired = self.expire(now);
            return if self.requests.is_empty() {
                Progress::Finished(expired)
            } else {
                Progress::Settled(expired)
            };
        }
        if now < self.wake_at {
            return Progress::Pending;
        }
        let key = self.key.clone();
        let resent = match &mut self.phase {
            Phase::Idle => return Progress::Pending,
            Phase::Preparing { ballot, votes, resends, .. } => {
                resend(ctx, votes, resends, || Message::Prepare { key: key.clone(), ballot: *ballot })
            }
            Phase::Accepting { ballot, votes, state, resends, next, .. } => {
                resend(ctx, votes, resends, || Message::Accept {
                    key: key.clone(),
                    ballot: *ballot,
                    state: state.clone(),
                    next: *next,
                })
            }
            // Silent members are asked again (see `QUERY_RESENDS_MAX`): a
            // busy node's answers may be waiting to be read, and falling
            // back would cost every acceptor a promise on disk (on a key
            // that does not exist, one it keeps only in a bounded table).
            Phase::Querying { query, votes, resends, .. } => {
                let (query, votes) = (*query, &*votes);
                let message = || Message::Query { key: key.clone(), query };
                let asked = resend_up_to(limits::QUERY_RESENDS_MAX, ctx, votes, resends, message);
                if !asked {
                    self.fall_back_from_query(now);
                    return Progress::Pending;
                }
                true
            }
        };
        if !resent {
            return self.abandon_attempt(now, ctx.rng);
        }
        self.wake_at = now.plus_millis(limits::PHASE_RESEND_MS);
        Progress::Pending
    }

    /// The node installed another configuration (or froze for a change):
    /// the attempt in progress counted its quorum among the old members, so
    /// it is abandoned, and the next one starts with a fresh ballot among
    /// the new members. Accepts it sent stay judged as any abandoned
    /// attempt's are.
    pub fn on_configuration_change(&mut self, now: Time, rng: &mut Rng) -> Progress {
        if matches!(self.phase, Phase::Idle) { Progress::Pending } else { self.abandon_attempt(now, rng) }
    }

    fn abandon_attempt(&mut self, now: Time, rng: &mut Rng) -> Progress {
        self.phase = Phase::Idle;
        if self.attempts >= limits::PROPOSAL_ATTEMPTS_MAX {
            return Progress::Finished(self.unavailable());
        }
        let attempt_us = now.micros_since(self.attempt_started);
        self.wake_at = now.plus_micros(self.backoff.next_delay_us(attempt_us, rng));
        Progress::Pending
    }

    /// Removes and answers the requests whose deadlines passed, each on its
    /// own, so one short deadline does not cut the others' short.
    fn expire(&mut self, now: Time) -> Vec<(ReqHandle, Outcome)> {
        let (expired, kept): (Vec<Request>, Vec<Request>) =
            std::mem::take(&mut self.requests).into_iter().partition(|r| r.deadline <= now);
        self.requests = kept;
        if let Phase::Accepting { answers, .. } = &mut self.phase {
            for r in &expired {
                answers.remove(&r.handle);
            }
        }
        expired.iter().map(|r| (r.handle, self.unavailable_one(r))).collect()
    }

    /// The answers for a batch that ran out of time or attempts.
    pub fn unavailable(&self) -> Vec<(ReqHandle, Outcome)> {
        self.requests.iter().map(|r| (r.handle, self.unavailable_one(r))).collect()
    }

    /// A request given up by this proposal: it may have taken effect when
    /// an evaluation of it left in one of this proposal's accepts, or when
    /// an attempt found one in its base's chain.
    fn unavailable_one(&self, r: &Request) -> Outcome {
        let sent = self.written.iter().any(|w| w.answers.contains_key(&r.handle));
        Outcome::Unavailable { maybe_applied: sent || r.dedupe.found }
    }
}

/// Whether one of this proposal's own states holding a request is in a
/// chain.
enum Own {
    /// It is: the request stands as that attempt judged it.
    Found(Outcome),
    /// None is.
    Absent,
    /// Cannot tell (never expected; see `own_standing`): the lowest version
    /// at which such a state evaluated it.
    Unknown(Version),
}

impl Proposal {
    /// Where `request` stands among this proposal's own states in `base`'s
    /// chain. The newest state this node wrote in the chain is named by
    /// `base.writers`; ballots grow along a chain, and this proposal is the
    /// only one on its key at this node, so that state is one of this
    /// proposal's, or older than all of them.
    fn own_standing(&self, request: &Request, base: &RegisterState) -> Own {
        let mine: Vec<&Written> =
            self.written.iter().filter(|w| w.answers.contains_key(&request.handle)).collect();
        let Some(first) = self.written.first() else { return Own::Absent };
        let last = base.last_written_by(first.ballot.node);
        match last {
            None => Own::Absent,
            Some(b) if b < first.ballot => Own::Absent,
            Some(b) => match self.written.iter().find(|w| w.ballot == b) {
                Some(w) => w.answers.get(&request.handle).cloned().map_or(Own::Absent, Own::Found),
                None => match mine.iter().map(|w| answer_version(&w.answers[&request.handle])).min() {
                    Some(v) => Own::Unknown(v),
                    None => Own::Absent,
                },
            },
        }
    }
}

/// The version an answer reports: where the evaluation behind it left the key.
fn answer_version(answer: &Outcome) -> Version {
    match answer {
        Outcome::Done { version, .. } => *version,
        _ => Version(0),
    }
}

/// The answer for a request evaluated in this attempt, leaving `state`.
fn evaluated_answer(request: &Request, state: &RegisterState, held: bool) -> Outcome {
    let wrote = request.change.is_write() && held;
    let value = if wrote { None } else { Some(state.value.clone()) };
    Outcome::Done { version: state.version, precondition_held: held, value }
}

/// The answer for a request found evaluated before: the version it wrote,
/// or the version at which its precondition failed (the value it was
/// compared with is no longer known, and the value now would not be what
/// it was compared with).
fn found_answer(request: &Request, e: Evaluation) -> Outcome {
    debug_assert!(request.change.is_write());
    Outcome::Done { version: e.version, precondition_held: e.took_effect, value: None }
}

/// An answer as a proposal keeps it for a state that may be in the chain:
/// without the value a failed precondition found, which would be kept for
/// every attempt otherwise; if that state turns out to be the one, the
/// answer tells the version only.
fn without_value(answer: &Outcome) -> Outcome {
    match answer {
        Outcome::Done { version, precondition_held, .. } => {
            Outcome::Done { version: *version, precondition_held: *precondition_held, value: None }
        }
        other => other.clone(),
    }
}

/// Resends a phase message to the members that have not answered. Returns
/// false when the resend budget is spent.
fn resend(ctx: &mut Ctx<'_>, votes: &Quorum, resends: &mut u32, make: impl Fn() -> Message) -> bool {
    resend_up_to(limits::PHASE_RESENDS_MAX, ctx, votes, resends, make)
}

fn resend_up_to(
    max: u32,
    ctx: &mut Ctx<'_>,
    votes: &Quorum,
    resends: &mut u32,
    make: impl Fn() -> Message,
) -> bool {
    if *resends >= max {
        return false;
    }
    *resends += 1;
    for &to in ctx.members.iter().filter(|n| !votes.has_answered(**n)) {
        ctx.out.push((to, make()));
    }
    true
}

/// What a proposal borrows from its node while handling an event.
pub struct Ctx<'a> {
    pub members: &'a [NodeId],
    pub out: &'a mut Outbox,
    pub rng: &'a mut Rng,
    #[cfg(feature = "planted-bugs")]
    pub bugs: super::PlantedBugs,
}

impl Ctx<'_> {
    #[cfg(feature = "planted-bugs")]
    fn bugs(&self) -> super::PlantedBugs {
        self.bugs
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn bugs(&self) -> super::PlantedBugs {
        super::PlantedBugs::default()
    }

    /// The planted bug that forgets to look a resent request up.
    #[cfg(feature = "planted-bugs")]
    fn skips_lookup(&self, request: &Request) -> bool {
        self.bugs.reapply_resent && request.resent
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn skips_lookup(&self, _request: &Request) -> bool {
        false
    }
}
