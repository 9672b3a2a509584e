//! Membership as data: the configuration a node votes in, and the change it
//! takes part in (see `docs/membership.md` for the procedure and why it is
//! safe).
//!
//! A node keeps, durably (`Record::Membership`), its *active*
//! configuration (an epoch and the members, with their addresses) and, while
//! a change runs, the change it is *frozen* in. These are the rules every
//! node applies, whoever drives the change:
//!
//! - A node votes (answers a prepare, accept or query) only when it is a
//!   member of its active configuration, not frozen and not waiting to join,
//!   and only for a peer whose datagrams name the same active configuration
//!   (epoch and digest); it counts votes only from such peers (`Node`
//!   compares the datagram's tag with its own).
//! - `freeze`: a node whose active epoch is the change's `from` (or a node
//!   joining, which has voted in nothing) takes part in the change and votes
//!   for nobody from then on. Freezing again in the same change is a no-op;
//!   a change from another epoch is refused, which tells the driver the
//!   node is elsewhere.
//! - `may_adopt`: only a node frozen in the change (or joining) adopts the
//!   change's seeds: it votes for nobody, so no promise it made in the new
//!   configuration can lie below what it adopts.
//! - `install`: a node whose active epoch is below the configuration's
//!   installs it, whatever it was frozen in.

pub use crate::members::{ConfigTag, Configuration, FreezeAnswer, Member, MemberChange, Members, Membership};
use crate::types::{Epoch, NodeId};

impl Membership {
    pub fn founding(members: Members) -> Membership {
        Membership { active: Configuration { epoch: Epoch(0), members }, frozen: None, joining: false }
    }

    pub fn joining() -> Membership {
        Membership { joining: true, ..Membership::default() }
    }

    /// True when `me` may vote and propose at all.
    pub fn votes(&self, me: NodeId) -> bool {
        !self.joining && self.frozen.is_none() && self.active.members.contains(me)
    }

    /// True when `me` was removed: it votes for nobody and proposes nothing
    /// for good (unless a later change adds it again).
    pub fn removed(&self, me: NodeId) -> bool {
        !self.joining && !self.active.members.contains(me)
    }

    /// Takes part in `change` if the node's state allows; true in the
    /// second place when the state changed (and must be recorded).
    pub fn freeze(&mut self, change: &MemberChange) -> (FreezeAnswer, bool) {
        if self.active.epoch >= change.epoch {
            let installed = self.active.epoch == change.epoch;
            return (if installed { FreezeAnswer::Installed } else { FreezeAnswer::Refused }, false);
        }
        match &self.frozen {
            Some(f) if f == change => (FreezeAnswer::Frozen, false),
            Some(_) => (FreezeAnswer::Refused, false),
            None if self.joining || self.active.epoch == change.from => {
                self.frozen = Some(change.clone());
                (FreezeAnswer::Frozen, true)
            }
            None => (FreezeAnswer::Refused, false),
        }
    }

    /// True when the node may adopt the seeds of the change at `epoch`.
    pub fn may_adopt(&self, epoch: Epoch) -> bool {
        self.frozen.as_ref().is_some_and(|f| f.epoch == epoch) && self.active.epoch < epoch
    }

    /// Installs `config` if it is newer than the active one; true when the
    /// state changed.
    pub fn install(&mut self, config: &Configuration) -> bool {
        // A node joining has no configuration (epoch 0, no members); every
        // change is of a later epoch than the founding one.
        if config.epoch <= self.active.epoch {
            return false;
        }
        self.active = config.clone();
        self.frozen = None;
        self.joining = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[u16]) -> Members {
        let list = ids.iter().map(|i| Member { id: NodeId(*i), address: format!("127.0.0.1:700{i}") });
        Members::new(list.collect()).expect("unique ids")
    }

    fn change(epoch: u64, from: u64, to: &[u16]) -> MemberChange {
        MemberChange { epoch: Epoch(epoch), from: Epoch(from), to: members(to) }
    }

    #[test]
    fn a_member_list_with_an_id_twice_is_refused_and_order_does_not_change_the_digest() {
        let twice = vec![
            Member { id: NodeId(1), address: "a".into() },
            Member { id: NodeId(1), address: "b".into() },
        ];
        assert!(Members::new(twice).is_none());
        let a = Members::new(vec![
            Member { id: NodeId(2), address: "x".into() },
            Member { id: NodeId(1), address: "y".into() },
        ]);
        let b = Members::new(vec![
            Member { id: NodeId(1), address: "y".into() },
            Member { id: NodeId(2), address: "x".into() },
        ]);
        assert_eq!(a.as_ref().map(Members::digest), b.as_ref().map(Members::digest));
        assert_ne!(members(&[1, 2]).digest(), members(&[1, 3]).digest());
    }

    #[test]
    fn a_frozen_node_votes_for_nobody_until_it_installs_the_change() {
        let me = NodeId(1);
        let mut m = Membership::founding(members(&[1, 2, 3]));
        let peer = m.active.tag();
        assert!(m.votes(me) && m.active.tag() == peer);
        let c = change(5, 0, &[1, 2, 3, 4]);
        assert_eq!(m.freeze(&c), (FreezeAnswer::Frozen, true));
        assert_eq!(m.freeze(&c), (FreezeAnswer::Frozen, false), "again: nothing to record");
        assert!(!m.votes(me), "frozen");
        assert!(m.may_adopt(Epoch(5)) && !m.may_adopt(Epoch(6)));
        assert!(m.install(&c.target()));
        assert!(m.active.tag() != peer, "the old configuration's peers no longer count");
        assert!(m.votes(me));
        assert!(!m.may_adopt(Epoch(5)), "installed: it votes, so it adopts nothing more");
        assert_eq!(m.freeze(&c), (FreezeAnswer::Installed, false));
        assert!(!m.install(&c.target()), "installing again changes nothing");
    }

    #[test]
    fn a_change_from_another_configuration_is_refused() {
        let mut m = Membership::founding(members(&[1, 2, 3]));
        assert_eq!(m.freeze(&change(5, 2, &[1, 2])), (FreezeAnswer::Refused, false), "from another epoch");
        assert_eq!(m.freeze(&change(5, 0, &[1, 2])), (FreezeAnswer::Frozen, true));
        assert_eq!(m.freeze(&change(6, 0, &[1, 3])), (FreezeAnswer::Refused, false), "frozen in another");
        // A later configuration installed elsewhere supersedes the change.
        let later = Configuration { epoch: Epoch(9), members: members(&[1, 3]) };
        assert!(m.install(&later));
        assert_eq!(m.frozen, None);
        assert!(!m.install(&change(5, 0, &[1, 2]).target()), "older than the active one");
    }

    #[test]
    fn a_joining_node_takes_part_in_any_change_and_votes_once_installed_in_one_naming_it() {
        let me = NodeId(4);
        let mut m = Membership::joining();
        assert!(!m.votes(me) && !m.removed(me));
        let c = change(5, 0, &[1, 2, 3, 4]);
        assert_eq!(m.freeze(&c), (FreezeAnswer::Frozen, true));
        assert!(m.install(&c.target()));
        assert!(m.votes(me));
        let out = change(7, 5, &[1, 2, 3]);
        assert_eq!(m.freeze(&out), (FreezeAnswer::Frozen, true));
        assert!(m.install(&out.target()));
        assert!(m.removed(me) && !m.votes(me));
    }
}
