//! The client sessions a node remembers, so that a copy of a request that
//! reaches it again (a retransmission, a duplicate the network made, a copy
//! the client sent back after trying elsewhere) is neither run twice nor
//! left unanswered.
//!
//! A session sends one request at a time, numbered 1, 2, 3, ..., so one
//! entry per session is enough: the number of its newest request, and how
//! that request stands here (running, answered, or evaluated without effect
//! and safe to evaluate again). A newer request acknowledges the older ones
//! (as in RIFL): their copies are stale and dropped. Memory is bounded by the
//! sessions, never by the request rate, and no request is ever refused
//! because answers are remembered.
//!
//! The table holds two generations of at most `per_generation` sessions
//! each. A session used again moves to the young generation. When the young
//! one is full, the old one is forgotten, and the node draws a new
//! incarnation. A copy of a request whose session the node does not know is
//! run only if it names the current incarnation: copies sent before the node
//! forgot (or restarted, which forgets everything) name an older one and are
//! refused, never run blindly. The refusal names the current incarnation,
//! and the client sends again, saying that the request may have run before
//! (`resent`), so the proposer checks the key's remembered writes.

use super::rng::Rng;
use crate::types::{Incarnation, RequestId, SessionId};
use crate::wire::Outcome;
use std::collections::BTreeMap;

/// What to do with a copy of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Run it. `exclusive` when no other copy can have run anywhere: the
    /// client says it sent none elsewhere, and this node, in its current
    /// incarnation, has seen none that ran.
    Run { exclusive: bool },
    /// An earlier copy is running here; its answer will come.
    Running,
    /// It was answered here: send the same answer again.
    Replay(Outcome),
    /// The session has sent a newer request since: nobody waits for this
    /// answer, and running it could apply a change its client gave up on.
    Stale,
    /// The node does not know the session (or knows only older requests of
    /// it) and the copy names another incarnation: refuse it unrun.
    WrongIncarnation,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Standing {
    Running,
    Answered(Outcome),
    /// A read, answered with a value that was not kept: another copy is
    /// evaluated again, which changes nothing.
    Rerun,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    seq: u64,
    standing: Standing,
}

#[derive(Debug)]
pub struct Sessions {
    young: BTreeMap<SessionId, Entry>,
    old: BTreeMap<SessionId, Entry>,
    per_generation: usize,
    incarnation: Incarnation,
    rng: Rng,
}

impl Sessions {
    /// An empty table (a node that just started) with a fresh incarnation
    /// drawn from `rng`.
    pub fn new(per_generation: usize, mut rng: Rng) -> Sessions {
        let incarnation = draw(&mut rng);
        Sessions {
            young: BTreeMap::new(),
            old: BTreeMap::new(),
            per_generation: per_generation.max(1),
            incarnation,
            rng,
        }
    }

    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Sessions remembered.
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides what to do with a copy of request `id` that names
    /// `incarnation` and says whether it was `resent`.
    pub fn admit(&mut self, id: RequestId, incarnation: Incarnation, resent: bool) -> Admission {
        let current = incarnation == self.incarnation;
        let Some(entry) = self.touch(id.session) else {
            if !current {
                return Admission::WrongIncarnation;
            }
            self.insert(id.session, Entry { seq: id.seq, standing: Standing::Running });
            return Admission::Run { exclusive: !resent };
        };
        if id.seq < entry.seq {
            return Admission::Stale;
        }
        if id.seq > entry.seq {
            // Never seen here, whatever incarnation the copy names: the entry
            // was made for a request its client sent naming the incarnation
            // current then, after anything this node forgot, and the client
            // sent this newer one later still.
            *entry = Entry { seq: id.seq, standing: Standing::Running };
            return Admission::Run { exclusive: current && !resent };
        }
        match &entry.standing {
            Standing::Running => Admission::Running,
            Standing::Answered(outcome) => Admission::Replay(outcome.clone()),
            // Evaluated here before (without effect): the exclusive window
            // rules out evaluations by other proposers only, so this copy is
            // judged against the key's memory of that evaluation.
            Standing::Rerun => {
                entry.standing = Standing::Running;
                Admission::Run { exclusive: false }
            }
        }
    }

    /// Request `id` was answered with `outcome`. Values are not kept, to
    /// bound memory: a read is evaluated again (it changed nothing), and a
    /// failed precondition is answered again with the version it failed at
    /// (the value found is no longer told).
    pub fn finish(&mut self, id: RequestId, outcome: &Outcome) {
        let Some(entry) = self.young.get_mut(&id.session).or_else(|| self.old.get_mut(&id.session)) else {
            return;
        };
        if entry.seq != id.seq || entry.standing != Standing::Running {
            return;
        }
        entry.standing = match outcome {
            Outcome::Done { version, precondition_held: false, value: Some(_) } => {
                Standing::Answered(Outcome::Done { version: *version, precondition_held: false, value: None })
            }
            Outcome::Done { value: Some(Some(_)), .. } => Standing::Rerun,
            _ => Standing::Answered(outcome.clone()),
        };
    }

    /// The entry of `session`, moved to the young generation while it has
    /// room: only new sessions make the table forget, so that sessions in
    /// use do not churn the incarnation.
    fn touch(&mut self, session: SessionId) -> Option<&mut Entry> {
        if self.young.contains_key(&session) {
            return self.young.get_mut(&session);
        }
        if self.young.len() < self.per_generation {
            let entry = self.old.remove(&session)?;
            self.young.insert(session, entry);
            return self.young.get_mut(&session);
        }
        self.old.get_mut(&session)
    }

    fn insert(&mut self, session: SessionId, entry: Entry) {
        if self.young.len() >= self.per_generation {
            self.old = std::mem::take(&mut self.young);
            self.incarnation = draw(&mut self.rng);
        }
        self.young.insert(session, entry);
    }
}

/// A random incarnation, never `Incarnation::UNKNOWN`.
fn draw(rng: &mut Rng) -> Incarnation {
    Incarnation(rng.next_u64().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Version;

    fn id(session: u128, seq: u64) -> RequestId {
        RequestId { session: SessionId(session), seq }
    }

    fn applied(version: u64) -> Outcome {
        Outcome::Done { version: Version(version), precondition_held: true, value: None }
    }

    fn table(per_generation: usize) -> (Sessions, Incarnation) {
        let s = Sessions::new(per_generation, Rng::new(5));
        let inc = s.incarnation();
        (s, inc)
    }

    #[test]
    fn a_new_session_runs_exclusively_unless_resent() {
        let (mut s, inc) = table(8);
        assert_eq!(s.admit(id(1, 1), inc, false), Admission::Run { exclusive: true });
        assert_eq!(s.admit(id(2, 1), inc, true), Admission::Run { exclusive: false });
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn copies_are_deduplicated_and_answers_replayed() {
        let (mut s, inc) = table(8);
        assert_eq!(s.admit(id(1, 4), inc, false), Admission::Run { exclusive: true });
        assert_eq!(s.admit(id(1, 4), inc, false), Admission::Running);
        s.finish(id(1, 4), &applied(9));
        assert_eq!(s.admit(id(1, 4), Incarnation(77), true), Admission::Replay(applied(9)));
        assert_eq!(s.admit(id(1, 3), inc, false), Admission::Stale, "the session moved on");
        assert_eq!(s.admit(id(1, 5), inc, false), Admission::Run { exclusive: true });
        assert_eq!(s.admit(id(1, 4), inc, false), Admission::Stale, "acknowledged by request 5");
    }

    #[test]
    fn answers_with_values_are_not_kept_and_another_copy_runs_again() {
        let (mut s, inc) = table(8);
        assert_eq!(s.admit(id(1, 1), inc, false), Admission::Run { exclusive: true });
        let read = Outcome::Done {
            version: Version(3),
            precondition_held: true,
            value: Some(Some(crate::types::Value::from("v"))),
        };
        s.finish(id(1, 1), &read);
        assert_eq!(s.admit(id(1, 1), inc, false), Admission::Run { exclusive: false });
        assert_eq!(s.admit(id(1, 1), inc, false), Admission::Running);
    }

    #[test]
    fn a_failed_precondition_is_answered_again_with_its_version_but_not_its_value() {
        let (mut s, inc) = table(8);
        assert_eq!(s.admit(id(1, 1), inc, false), Admission::Run { exclusive: true });
        let value = Some(Some(crate::types::Value::from("x")));
        s.finish(id(1, 1), &Outcome::Done { version: Version(7), precondition_held: false, value });
        let again = Outcome::Done { version: Version(7), precondition_held: false, value: None };
        assert_eq!(s.admit(id(1, 1), inc, false), Admission::Replay(again));
    }

    #[test]
    fn an_unknown_session_naming_another_incarnation_is_refused() {
        let (mut s, inc) = table(8);
        assert_eq!(s.admit(id(1, 1), Incarnation::UNKNOWN, false), Admission::WrongIncarnation);
        assert_eq!(s.admit(id(1, 1), Incarnation(inc.0 ^ 1), false), Admission::WrongIncarnation);
        assert!(s.is_empty(), "a refusal remembers nothing");
    }

    #[test]
    fn a_known_session_runs_a_new_request_naming_another_incarnation_but_not_as_the_only_copy() {
        let (mut s, inc) = table(8);
        assert_eq!(s.admit(id(1, 1), inc, false), Admission::Run { exclusive: true });
        s.finish(id(1, 1), &applied(1));
        assert_eq!(s.admit(id(1, 2), Incarnation(inc.0 ^ 1), false), Admission::Run { exclusive: false });
    }

    #[test]
    fn a_full_young_generation_ages_and_the_old_one_is_forgotten_with_a_new_incarnation() {
        let (mut s, first) = table(2);
        assert_eq!(s.admit(id(1, 1), first, false), Admission::Run { exclusive: true });
        assert_eq!(s.admit(id(2, 1), first, false), Admission::Run { exclusive: true });
        s.finish(id(1, 1), &applied(1));
        // A third session finds the young generation full: {1, 2} age.
        assert_eq!(s.admit(id(3, 1), first, false), Admission::Run { exclusive: true });
        let second = s.incarnation();
        assert_ne!(second, first);
        // Session 1 is still known, and moves back to the young generation.
        assert_eq!(s.admit(id(1, 1), first, false), Admission::Replay(applied(1)));
        // Session 4 ages {3, 1}; session 2, never used since, is forgotten.
        assert_eq!(s.admit(id(4, 1), second, false), Admission::Run { exclusive: true });
        let third = s.incarnation();
        assert_eq!(
            s.admit(id(2, 1), second, false),
            Admission::WrongIncarnation,
            "forgotten: its copies are refused"
        );
        assert_eq!(s.admit(id(2, 1), third, true), Admission::Run { exclusive: false });
        assert!(s.len() <= 4);
    }

    #[test]
    fn sessions_in_use_do_not_make_the_table_forget() {
        let (mut s, first) = table(1);
        assert_eq!(s.admit(id(1, 1), first, false), Admission::Run { exclusive: true });
        assert_eq!(s.admit(id(2, 1), first, false), Admission::Run { exclusive: true });
        let second = s.incarnation();
        // Session 1, in the old generation, keeps working without a new
        // incarnation being drawn.
        for seq in 2..10 {
            assert_eq!(s.admit(id(1, seq), first, false), Admission::Run { exclusive: false });
            assert_eq!(s.admit(id(2, seq), second, false), Admission::Run { exclusive: true });
        }
        assert_eq!(s.incarnation(), second);
    }
}
