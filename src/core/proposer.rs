//! The proposer side of one request: prepare → promise (majority) → apply the
//! change to the highest accepted state → accept → accepted (majority).
//!
//! A `Proposal` is a state machine driven by `Node`; it never chooses ballots
//! itself (the node owns the round counter and its reservation) and never
//! touches I/O: it appends `(to, message)` pairs to an outbox.
//!
//! Retrying a write safely. An attempt that sent accepts for a new state may
//! be abandoned (a lost answer, a rejection) although its state was, or will
//! be, chosen. Applying the change again on the next attempt could apply it
//! twice, or report a CAS as failed that in fact took effect. So each
//! attempt remembers the states it proposed (their `origin` ballot and
//! version), and the next attempt looks at the highest accepted state `T`
//! its promises reveal:
//! - `T.origin` is one of ours: our state may be chosen; propose it again
//!   unchanged, and report the change as done.
//! - `T.version` is below every version we proposed: none of our states was
//!   chosen (a chosen state's descendants never have a lower version), so
//!   apply the change to `T`.
//! - otherwise one of our states may have been chosen and overwritten since:
//!   the outcome is unknown, and we say so rather than guess.

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
        held: bool,
        resends: u32,
    },
}

/// What the node should do after feeding a proposal an event.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Keep waiting (messages may have been queued in the outbox).
    Pending,
    /// The proposal is over; answer the client.
    Finished(Outcome),
}

#[derive(Debug)]
pub struct Proposal {
    pub key: Key,
    pub handle: ReqHandle,
    pub change: Change,
    pub deadline: Time,
    phase: Phase,
    wake_at: Time,
    attempts: u32,
    backoff: Backoff,
    /// The attempts whose accepts carried a state written by this change:
    /// their ballot (the state's origin) and the state's version. Non-empty
    /// means a failure leaves the outcome unknown.
    written: Vec<(Ballot, Version)>,
}

/// What an attempt does once a majority has promised.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Apply the change to the highest accepted state.
    Apply,
    /// The highest accepted state is one this change wrote: propose it again.
    Readopt,
    /// A state this change wrote may have been chosen and overwritten.
    Unknown,
}

impl Proposal {
    pub fn new(key: Key, handle: ReqHandle, change: Change, now: Time, deadline: Time) -> Proposal {
        Proposal {
            key,
            handle,
            change,
            deadline,
            phase: Phase::Idle,
            wake_at: now,
            attempts: 0,
            backoff: Backoff::new(),
            written: Vec::new(),
        }
    }

    /// When the node must call `on_timer` next.
    pub fn wake_at(&self) -> Time {
        self.wake_at.min(self.deadline)
    }

    /// True when the proposal waits for a fresh ballot to start an attempt.
    pub fn needs_ballot(&self, now: Time) -> bool {
        self.phase == Phase::Idle && now >= self.wake_at && now < self.deadline
    }

    pub fn ballot(&self) -> Option<Ballot> {
        match &self.phase {
            Phase::Idle => None,
            Phase::Preparing { ballot, .. } | Phase::Accepting { ballot, .. } => Some(*ballot),
        }
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
                let applied = self.change.apply(&base, ballot);
                // The memo's Lemma 1: a new state descends from the one it replaces.
                debug_assert!(applied.state.version >= base.version);
                if applied.state != base {
                    self.written.push((ballot, applied.state.version));
                }
                self.begin_accept(now, ballot, applied.state, applied.precondition_held, ctx);
            }
            Plan::Readopt => self.begin_accept(now, ballot, base, true, ctx),
            Plan::Unknown => return Progress::Finished(self.unavailable()),
        }
        Progress::Pending
    }

    fn plan(&self, base: &RegisterState) -> Plan {
        if self.written.iter().any(|(origin, _)| base.origin == *origin) {
            Plan::Readopt
        } else if self.written.iter().any(|(_, version)| base.version >= *version) {
            Plan::Unknown
        } else {
            Plan::Apply
        }
    }

    fn begin_accept(
        &mut self,
        now: Time,
        ballot: Ballot,
        state: RegisterState,
        held: bool,
        ctx: &mut Ctx<'_>,
    ) {
        for &to in ctx.members {
            let state = state.clone();
            ctx.out.push((to, Message::Accept { key: self.key.clone(), ballot, state }));
        }
        self.phase =
            Phase::Accepting { ballot, votes: Quorum::new(ctx.members.len()), state, held, resends: 0 };
        self.wake_at = now.plus_millis(limits::PHASE_RESEND_MS);
    }

    /// An accepted for `ballot` from `from`.
    pub fn on_accepted(&mut self, from: NodeId, ballot: Ballot) -> Progress {
        let Phase::Accepting { ballot: mine, votes, state, held, .. } = &mut self.phase else {
            return Progress::Pending;
        };
        if *mine != ballot {
            return Progress::Pending;
        }
        votes.yes(from);
        if !votes.is_reached() {
            return Progress::Pending;
        }
        Progress::Finished(Outcome::Done { state: state.clone(), precondition_held: *held })
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
        if now >= self.deadline {
            return Progress::Finished(self.unavailable());
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

    /// The answer for a request that ran out of time or attempts.
    pub fn unavailable(&self) -> Outcome {
        Outcome::Unavailable { maybe_applied: !self.written.is_empty() }
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
