//! Counting answers from acceptors. A quorum is a strict majority of the
//! members; any two quorums intersect, which is the whole of Paxos' safety.

use crate::types::NodeId;

/// The votes collected for one phase of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorum {
    members: usize,
    yes: Vec<NodeId>,
    no: Vec<NodeId>,
}

/// The size of a majority of `members` nodes.
pub fn majority(members: usize) -> usize {
    members / 2 + 1
}

impl Quorum {
    pub fn new(members: usize) -> Quorum {
        Quorum { members, yes: Vec::new(), no: Vec::new() }
    }

    /// Counts a yes from `node`; duplicates (retransmitted answers) count once.
    /// A node that said no and later says yes (it cannot, for one ballot)
    /// keeps its first answer.
    pub fn yes(&mut self, node: NodeId) {
        if !self.has_answered(node) {
            self.yes.push(node);
        }
    }

    pub fn no(&mut self, node: NodeId) {
        if !self.has_answered(node) {
            self.no.push(node);
        }
    }

    pub fn has_any_answer(&self) -> bool {
        !self.yes.is_empty() || !self.no.is_empty()
    }

    pub fn has_answered(&self, node: NodeId) -> bool {
        self.yes.contains(&node) || self.no.contains(&node)
    }

    pub fn is_reached(&self) -> bool {
        self.yes.len() >= majority(self.members)
    }

    /// How many votes make a majority here.
    pub fn majority(&self) -> usize {
        majority(self.members)
    }

    /// Members that have not answered yet.
    pub fn unanswered(&self) -> usize {
        self.members.saturating_sub(self.yes.len() + self.no.len())
    }

    /// True once so many said no that a majority of yes is out of reach.
    pub fn is_lost(&self) -> bool {
        self.members - self.no.len() < majority(self.members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_sizes() {
        let sizes: Vec<usize> = (1..=7).map(majority).collect();
        assert_eq!(sizes, vec![1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn three_nodes_need_two_yes() {
        let mut q = Quorum::new(3);
        q.yes(NodeId(1));
        assert!(!q.is_reached());
        q.yes(NodeId(1));
        assert!(!q.is_reached(), "a duplicate answer must not count twice");
        q.yes(NodeId(3));
        assert!(q.is_reached());
    }

    #[test]
    fn lost_when_majority_is_out_of_reach() {
        let mut q = Quorum::new(5);
        q.no(NodeId(1));
        q.no(NodeId(2));
        assert!(!q.is_lost());
        q.no(NodeId(2));
        assert!(!q.is_lost());
        q.no(NodeId(3));
        assert!(q.is_lost());
    }

    #[test]
    fn first_answer_wins() {
        let mut q = Quorum::new(3);
        q.no(NodeId(1));
        q.yes(NodeId(1));
        q.yes(NodeId(2));
        assert!(!q.is_reached());
    }
}
