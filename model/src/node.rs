//! One node of the model: an acceptor, a proposer, and where it stands in
//! its life (voting, or wiped and rejoining).

use std::fmt;

/// A node's id, `1..=n`. Id 0 names no node: it only appears in the
/// ballots that stand for a floor.
pub type NodeId = u8;

/// A proposed value. Each proposer proposes its own id, so two values
/// differ exactly when their proposers do.
pub type Value = u8;

/// A ballot, ordered lexicographically by (epoch, round, node).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    pub epoch: u8,
    pub round: u8,
    pub node: NodeId,
}

impl Ballot {
    pub const ZERO: Ballot = Ballot { epoch: 0, round: 0, node: 0 };

    /// The lowest ballot of an epoch: an acceptor whose floor is `epoch`
    /// behaves as if it had promised this.
    pub fn floor(epoch: u8) -> Ballot {
        Ballot { epoch, round: 0, node: 0 }
    }

    /// The ballot `node` uses next, having seen `seen`: same epoch, one
    /// round higher, so it is above everything seen.
    pub fn next_after(seen: Ballot, node: NodeId) -> Ballot {
        Ballot { epoch: seen.epoch, round: seen.round + 1, node }
    }
}

impl fmt::Debug for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({},{},{})", self.epoch, self.round, self.node)
    }
}

/// A value an acceptor accepted, with the ballot it was accepted in.
pub type Accepted = Option<(Ballot, Value)>;

/// The paxos acceptor of the one register.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Acceptor {
    pub promised: Ballot,
    pub accepted: Accepted,
    /// Ballots of an epoch below this are refused, whatever was promised.
    pub floor: u8,
}

impl Acceptor {
    /// The promise the acceptor honours: its own, raised to its floor.
    pub fn effective_promise(&self) -> Ballot {
        self.promised.max(Ballot::floor(self.floor))
    }

    /// Prepare: promise a ballot above every promise so far, reporting
    /// what was accepted; otherwise name the promise that refuses it.
    pub fn prepare(&mut self, ballot: Ballot) -> Result<Accepted, Ballot> {
        if ballot > self.effective_promise() {
            self.promised = ballot;
            Ok(self.accepted)
        } else {
            Err(self.effective_promise())
        }
    }

    /// Accept: take a value in any ballot not below the promise; the
    /// promise rises to that ballot.
    pub fn accept(&mut self, ballot: Ballot, value: Value) -> Result<(), Ballot> {
        if ballot >= self.effective_promise() {
            self.promised = ballot;
            self.accepted = Some((ballot, value));
            Ok(())
        } else {
            Err(self.effective_promise())
        }
    }
}

/// A set of nodes, as a bit mask: bit `id` for node `id`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Nodes(u16);

impl Nodes {
    pub fn insert(&mut self, id: NodeId) {
        self.0 |= 1 << id;
    }

    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.0 & (1 << id) != 0
    }

    /// The ids in the set, in increasing order.
    pub fn ids(self) -> impl Iterator<Item = NodeId> {
        (0..16).filter(move |&id| self.contains(id))
    }

    /// A majority of the set.
    pub fn majority(&self) -> usize {
        self.len() / 2 + 1
    }

    pub fn union(self, other: Nodes) -> Nodes {
        Nodes(self.0 | other.0)
    }
}

impl FromIterator<NodeId> for Nodes {
    fn from_iter<I: IntoIterator<Item = NodeId>>(ids: I) -> Nodes {
        let mut nodes = Nodes::default();
        ids.into_iter().for_each(|id| nodes.insert(id));
        nodes
    }
}

/// An attempt of a proposer still in its prepare phase. Of the promises it
/// keeps only what it acts on: who promised, and the value accepted in the
/// highest ballot among them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attempt {
    pub ballot: Ballot,
    pub promised_by: Nodes,
    pub highest_accepted: Accepted,
}

/// The proposer of classic paxos.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Proposer {
    /// The highest ballot seen: its own and those named by rejects. The
    /// next attempt's ballot is just above it.
    pub seen: Ballot,
    /// Attempts started in this run. A bound of the model, not state of
    /// the protocol, so a wipe keeps it.
    pub attempts: u8,
    /// The attempt waiting for a quorum of promises, if any. Once it has
    /// one, it sends its accepts and waits for nothing more.
    pub preparing: Option<Attempt>,
}

impl Proposer {
    /// Starts an attempt with a ballot above all seen; returns the ballot.
    pub fn start(&mut self, id: NodeId) -> Ballot {
        let ballot = Ballot::next_after(self.seen, id);
        self.seen = ballot;
        self.attempts += 1;
        self.preparing = Some(Attempt { ballot, promised_by: Nodes::default(), highest_accepted: None });
        ballot
    }

    /// Counts a promise for the current attempt. With a quorum, returns the
    /// ballot and the value to accept: the one accepted in the highest
    /// ballot among the promises, or else the proposer's own.
    pub fn promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        accepted: Accepted,
        quorum: usize,
        own: Value,
    ) -> Option<(Ballot, Value)> {
        let attempt = self.preparing.as_mut().filter(|a| a.ballot == ballot)?;
        attempt.promised_by.insert(from);
        attempt.highest_accepted = highest(attempt.highest_accepted, accepted);
        if attempt.promised_by.len() < quorum {
            return None;
        }
        let value = attempt.highest_accepted.map_or(own, |(_, v)| v);
        self.preparing = None;
        Some((ballot, value))
    }

    /// Learns from a reject the ballot that refused it, so that the next
    /// attempt goes above it (in its epoch, if that is higher).
    pub fn reject(&mut self, promised: Ballot) {
        self.seen = self.seen.max(promised);
    }
}

/// Of two accepted values, the one of the higher ballot.
pub fn highest(a: Accepted, b: Accepted) -> Accepted {
    if b.map(|(ballot, _)| ballot) > a.map(|(ballot, _)| ballot) { b } else { a }
}

/// What a fenced peer reports to the rejoining node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Snapshot {
    pub promised: Ballot,
    pub accepted: Accepted,
}

impl Snapshot {
    /// Two snapshots as one: the higher promise, the higher accepted.
    pub fn merge(self, other: Snapshot) -> Snapshot {
        Snapshot {
            promised: self.promised.max(other.promised),
            accepted: highest(self.accepted, other.accepted),
        }
    }
}

/// Where a node stands after a wipe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Life {
    /// Votes and proposes.
    #[default]
    Voting,
    /// Lost its state; neither votes nor proposes until it has rejoined.
    Wiped,
    /// Has its fresh epoch and has fenced its peers; collects their
    /// snapshots, merged as they come, since it adopts only their maxima.
    Fencing { epoch: u8, from: Nodes, merged: Snapshot },
}

/// A node of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Node {
    pub acceptor: Acceptor,
    pub proposer: Proposer,
    pub life: Life,
}

impl Node {
    pub fn votes(&self) -> bool {
        self.life == Life::Voting
    }

    /// Amnesia: every bit of protocol state goes.
    pub fn wipe(&mut self, then: Life) {
        let attempts = self.proposer.attempts;
        *self = Node { life: then, ..Node::default() };
        self.proposer.attempts = attempts;
    }

    /// Rejoins from a quorum of snapshots, merged: the highest promise, the
    /// value accepted in the highest ballot, and the fresh epoch for its own
    /// proposals (and as its floor, if `fenced`).
    pub fn rejoin(&mut self, epoch: u8, merged: Snapshot, fenced: bool) {
        let floor = if fenced { epoch } else { 0 };
        self.acceptor = Acceptor { promised: merged.promised, accepted: merged.accepted, floor };
        self.proposer.seen = Ballot::floor(epoch);
        self.life = Life::Voting;
    }
}
