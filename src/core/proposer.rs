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
//! Retrying a write safely. An attempt that sent accepts for a new state may
//! be abandoned (a lost answer, a rejection) although its state was, or will
//! be, chosen. Applying the change again on the next attempt could apply it
//! twice, or report a CAS as failed that in fact took effect. So each
//! attempt remembers the state it proposed (its `origin` ballot and version)
//! and the answers it would give, the batch is frozen once an accept has been
//! sent, and the next attempt looks at the highest accepted state `T` its
//! promises reveal:
//! - one of our states is `T` or in `T`'s chain (its origin is `T.origin`
//!   or in `T.lineage` at its version): propose `T` again unchanged; once it
//!   is chosen, so is our state, and the requests get that attempt's
//!   answers.
//! - none is: at each of our versions `T`'s chain holds another state, or
//!   `T` is older. Then none of our states can ever be chosen alongside a
//!   descendant of `T` (two states of one chain never share a version), so
//!   the changes are applied to `T`, and at most one of our states is ever
//!   chosen.
//! - `T`'s lineage does not reach back to one of our versions: the outcome
//!   is unknown, and we say so rather than guess.

use super::backoff::Backoff;
use super::quorum::Quorum;
use super::rng::Rng;
use crate::change::Change;
use crate::limits;
use crate::types::{Ballot, Key, NodeId, RegisterState, Time, Version};
use crate::wire::{Message, Outcome};

/// Messages a proposal wants sent.
pub type Outbox = Vec<(NodeId, Message)>;

/// The driver's handle for a client request, opaque to the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReqHandle(pub u64);

/// One client request in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub handle: ReqHandle,
    pub change: Change,
    pub deadline: Time,
}

/// The answer each request of a batch gets if the batch's state is chosen:
/// the state after its change, and whether its precondition held.
type Answers = Vec<(RegisterState, bool)>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Between attempts (backing off), or not started yet.
    Idle,
    Preparing {
        ballot: Ballot,
        votes: Quorum,
        best: Ballot,
        state: RegisterState,
        resends: u32,
    },
    Accepting {
        ballot: Ballot,
        votes: Quorum,
        state: RegisterState,
        answers: Answers,
        resends: u32,
    },
}

/// What the node should do after feeding a proposal an event.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Keep waiting (messages may have been queued in the outbox).
    Pending,
    /// The proposal is over; answer every request of the batch.
    Finished(Vec<(ReqHandle, Outcome)>),
    /// Answer these requests, whose deadlines passed; the rest of the batch
    /// goes on.
    Expired(Vec<(ReqHandle, Outcome)>),
}

/// An attempt whose accepts carried a state this batch wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Written {
    origin: Ballot,
    version: Version,
    answers: Answers,
}

#[derive(Debug)]
pub struct Proposal {
    pub key: Key,
    requests: Vec<Request>,
    phase: Phase,
    wake_at: Time,
    attempts: u32,
    backoff: Backoff,
    /// Non-empty means the batch is frozen and a failure leaves its outcome
    /// unknown.
    written: Vec<Written>,
}

/// What an attempt does once a majority has promised.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Apply the changes to the highest accepted state.
    Apply,
    /// The highest accepted state is the one attempt `i` wrote: propose it
    /// again.
    Readopt(usize),
    /// A state this batch wrote may have been chosen and overwritten.
    Unknown,
}

impl Proposal {
    pub fn new(key: Key, first: Request, now: Time) -> Proposal {
        Proposal {
            key,
            requests: vec![first],
            phase: Phase::Idle,
            wake_at: now,
            attempts: 0,
            backoff: Backoff::new(),
            written: Vec::new(),
        }
    }

    /// The earliest deadline in the batch: a request gives up then.
    pub fn deadline(&self) -> Time {
        self.requests.iter().map(|r| r.deadline).min().unwrap_or_default()
    }

    /// Whether more requests may join: only before any accept was sent, so
    /// a retry never proposes a batch other than the one it may have written.
    pub fn can_grow(&self) -> bool {
        self.written.is_empty()
            && self.phase == Phase::Idle
            && self.requests.len() < limits::BATCH_REQUESTS_MAX
    }

    pub fn join(&mut self, request: Request) {
        debug_assert!(self.can_grow());
        self.requests.push(request);
    }

    /// When the node must call `on_timer` next.
    pub fn wake_at(&self) -> Time {
        self.wake_at.min(self.deadline())
    }

    /// True when the proposal waits for a fresh ballot to start an attempt.
    pub fn needs_ballot(&self, now: Time) -> bool {
        self.phase == Phase::Idle && now >= self.wake_at && now < self.deadline()
    }

    /// Starts an attempt at `ballot`: prepare at every member.
    pub fn start(&mut self, now: Time, ballot: Ballot, members: &[NodeId], out: &mut Outbox) {
        self.attempts += 1;
        self.phase = Phase::Preparing {
            ballot,
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
        let Phase::Preparing { ballot: mine, votes, best, state: best_state, .. } = &mut self.phase else {
            return Progress::Pending;
        };
        if *mine != ballot || votes.has_answered(from) {
            return Progress::Pending;
        }
        let first = !votes.has_any_answer();
        votes.yes(from);
        // The planted bug keeps the first promise's state (the proposer's own
        // acceptor answers first) and ignores what the others accepted.
        let adopt = if ctx.ignore_accepted_state() { first } else { accepted > *best };
        if adopt {
            *best = accepted;
            *best_state = state.clone();
        }
        if !votes.is_reached() {
            return Progress::Pending;
        }
        let base = best_state.clone();
        match self.plan(&base) {
            Plan::Apply => {
                let (state, answers) = self.apply_batch(&base, ballot);
                // The memo's Lemma 1: a new state descends from the one it replaces.
                debug_assert!(state.version >= base.version);
                if state != base {
                    let written =
                        Written { origin: ballot, version: state.version, answers: answers.clone() };
                    self.written.push(written);
                }
                self.begin_accept(now, ballot, state, answers, ctx);
            }
            Plan::Readopt(i) => {
                let answers = self.written[i].answers.clone();
                self.begin_accept(now, ballot, base, answers, ctx);
            }
            Plan::Unknown => return Progress::Finished(self.unavailable()),
        }
        Progress::Pending
    }

    /// Whether any state this batch wrote is in the chain of `base` (the
    /// highest accepted state): found through `base`'s lineage, or out of
    /// its reach.
    fn plan(&self, base: &RegisterState) -> Plan {
        let mut unknown = false;
        for (i, w) in self.written.iter().enumerate() {
            match base.descends_from(w.origin, w.version) {
                Some(true) => return Plan::Readopt(i),
                Some(false) => {}
                None => unknown = true,
            }
        }
        if unknown { Plan::Unknown } else { Plan::Apply }
    }

    /// Applies every change of the batch in order; the final state and each
    /// request's answer.
    fn apply_batch(&self, base: &RegisterState, ballot: Ballot) -> (RegisterState, Answers) {
        let mut state = base.clone();
        let mut answers = Vec::with_capacity(self.requests.len());
        for request in &self.requests {
            let applied = request.change.apply(&state, ballot);
            answers.push((applied.state.clone(), applied.precondition_held));
            state = applied.state;
        }
        // Only the batch's final state joins the chain, so its lineage names
        // the base, not the states in between.
        if state != *base {
            state.lineage = RegisterState::lineage_after(base);
            for (answer, _) in answers.iter_mut().filter(|(s, _)| s.origin == ballot) {
                answer.lineage = state.lineage.clone();
            }
        }
        (state, answers)
    }

    fn begin_accept(
        &mut self,
        now: Time,
        ballot: Ballot,
        state: RegisterState,
        answers: Answers,
        ctx: &mut Ctx<'_>,
    ) {
        for &to in ctx.members {
            let state = state.clone();
            ctx.out.push((to, Message::Accept { key: self.key.clone(), ballot, state }));
        }
        let votes = Quorum::new(ctx.members.len());
        self.phase = Phase::Accepting { ballot, votes, state, answers, resends: 0 };
        self.wake_at = now.plus_millis(limits::PHASE_RESEND_MS);
    }

    /// An accepted for `ballot` from `from`.
    pub fn on_accepted(&mut self, from: NodeId, ballot: Ballot) -> Progress {
        let Phase::Accepting { ballot: mine, votes, answers, .. } = &mut self.phase else {
            return Progress::Pending;
        };
        if *mine != ballot {
            return Progress::Pending;
        }
        votes.yes(from);
        if !votes.is_reached() {
            return Progress::Pending;
        }
        let outcomes = self.requests.iter().zip(answers.iter()).map(|(r, (state, held))| {
            (r.handle, Outcome::Done { state: state.clone(), precondition_held: *held })
        });
        Progress::Finished(outcomes.collect())
    }

    /// A rejection of `ballot` by `from`. When a majority is out of reach the
    /// attempt is abandoned; the node has already fast-forwarded its rounds
    /// past the ballot the acceptor reported.
    pub fn on_reject(&mut self, now: Time, from: NodeId, ballot: Ballot, rng: &mut Rng) -> Progress {
        let lost = match &mut self.phase {
            Phase::Preparing { ballot: mine, votes, .. } | Phase::Accepting { ballot: mine, votes, .. }
                if *mine == ballot =>
            {
                votes.no(from);
                votes.is_lost()
            }
            _ => false,
        };
        if lost { self.abandon_attempt(now, rng) } else { Progress::Pending }
    }

    /// Time passed: resend to silent members, give up the attempt after too
    /// many resends, or give up the request at its deadline.
    pub fn on_timer(&mut self, now: Time, ctx: &mut Ctx<'_>) -> Progress {
        if now >= self.deadline() {
            return self.expire(now);
        }
        if now < self.wake_at {
            return Progress::Pending;
        }
        let key = self.key.clone();
        let resent = match &mut self.phase {
            Phase::Idle => return Progress::Pending,
            Phase::Preparing { ballot, votes, resends, .. } => {
                resend(ctx, votes, resends, |_| Message::Prepare { key: key.clone(), ballot: *ballot })
            }
            Phase::Accepting { ballot, votes, state, resends, .. } => resend(ctx, votes, resends, |_| {
                Message::Accept { key: key.clone(), ballot: *ballot, state: state.clone() }
            }),
        };
        if !resent {
            return self.abandon_attempt(now, ctx.rng);
        }
        self.wake_at = now.plus_millis(limits::PHASE_RESEND_MS);
        Progress::Pending
    }

    fn abandon_attempt(&mut self, now: Time, rng: &mut Rng) -> Progress {
        self.phase = Phase::Idle;
        if self.attempts >= limits::PROPOSAL_ATTEMPTS_MAX {
            return Progress::Finished(self.unavailable());
        }
        self.wake_at = now.plus_micros(self.backoff.next_delay_us(rng));
        Progress::Pending
    }

    /// Answers the requests whose deadlines passed, each on its own, so one
    /// short deadline does not cut the others' short. Their entries leave
    /// every list of answers too, which keeps those aligned.
    fn expire(&mut self, now: Time) -> Progress {
        let outcome = Outcome::Unavailable { maybe_applied: !self.written.is_empty() };
        let mut expired = Vec::new();
        let mut index = 0;
        while index < self.requests.len() {
            if self.requests[index].deadline > now {
                index += 1;
                continue;
            }
            expired.push((self.requests.remove(index).handle, outcome.clone()));
            for w in &mut self.written {
                w.answers.remove(index);
            }
            if let Phase::Accepting { answers, .. } = &mut self.phase {
                answers.remove(index);
            }
        }
        if self.requests.is_empty() { Progress::Finished(expired) } else { Progress::Expired(expired) }
    }

    /// The answers for a batch that ran out of time or attempts.
    pub fn unavailable(&self) -> Vec<(ReqHandle, Outcome)> {
        let outcome = Outcome::Unavailable { maybe_applied: !self.written.is_empty() };
        self.requests.iter().map(|r| (r.handle, outcome.clone())).collect()
    }
}

/// Resends a phase message to the members that have not answered. Returns
/// false when the resend budget is spent.
fn resend(ctx: &mut Ctx<'_>, votes: &Quorum, resends: &mut u32, make: impl Fn(NodeId) -> Message) -> bool {
    if *resends >= limits::PHASE_RESENDS_MAX {
        return false;
    }
    *resends += 1;
    for &to in ctx.members.iter().filter(|n| !votes.has_answered(**n)) {
        ctx.out.push((to, make(to)));
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
    fn ignore_accepted_state(&self) -> bool {
        self.bugs.ignore_accepted_state
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn ignore_accepted_state(&self) -> bool {
        false
    }
}
