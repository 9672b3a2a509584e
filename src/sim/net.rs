//! The simulated network: datagrams between nodes and clients, each lost,
//! duplicated or delayed at random, and partitions as a matrix of directed
//! links between nodes. Clients reach every node: partitions split the
//! cluster, not its users from it.

use super::faults::{FaultCounts, FaultPlan};
use crate::core::rng::Rng;
use crate::types::NodeId;

/// A simulated client's address; also its process number in the history.
pub type ClientAddr = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Node(NodeId),
    Client(ClientAddr),
}

/// A cut between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// One node can neither send to nor hear from any other.
    Isolate(NodeId),
    /// Two sides that cannot reach each other.
    Bisect { side: Vec<NodeId> },
    /// Datagrams from `from` to `to` are dropped; the other way works.
    OneWay { from: Vec<NodeId>, to: Vec<NodeId> },
}

#[derive(Debug)]
pub struct Net {
    nodes: usize,
    /// `blocked[from * nodes + to]`, with node ids counted from 1.
    blocked: Vec<bool>,
    plan: FaultPlan,
}

impl Net {
    pub fn new(nodes: usize, plan: FaultPlan) -> Net {
        Net { nodes, blocked: vec![false; nodes * nodes], plan }
    }

    /// When the copies of one datagram arrive, as delays from now (µs):
    /// none when it is lost, two when it is duplicated.
    pub fn transmit(
        &self,
        rng: &mut Rng,
        from: Endpoint,
        to: Endpoint,
        counts: &mut FaultCounts,
    ) -> Vec<u64> {
        if let (Endpoint::Node(a), Endpoint::Node(b)) = (from, to)
            && self.is_blocked(a, b)
        {
            return Vec::new();
        }
        if rng.chance(self.plan.loss) {
            counts.lost += 1;
            return Vec::new();
        }
        let mut delays = vec![self.delay(rng, counts)];
        if rng.chance(self.plan.duplicate) {
            counts.duplicated += 1;
            delays.push(self.delay(rng, counts));
        }
        delays
    }

    fn delay(&self, rng: &mut Rng, counts: &mut FaultCounts) -> u64 {
        if rng.chance(self.plan.long_delay) {
            counts.delayed_long += 1;
            return rng.range(self.plan.long_delay_us.0, self.plan.long_delay_us.1);
        }
        rng.range(self.plan.delay_us.0, self.plan.delay_us.1)
    }

    fn index(&self, from: NodeId, to: NodeId) -> usize {
        (usize::from(from.0) - 1) * self.nodes + (usize::from(to.0) - 1)
    }

    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.get(self.index(from, to)).copied().unwrap_or(false)
    }

    fn block(&mut self, from: NodeId, to: NodeId) {
        let i = self.index(from, to);
        if let Some(link) = self.blocked.get_mut(i) {
            *link = true;
        }
    }

    /// Replaces the current partition (if any) with `p`.
    pub fn partition(&mut self, p: &Partition) {
        self.heal_partition();
        let all: Vec<NodeId> = (1..=self.nodes as u16).map(NodeId).collect();
        let (from, to): (Vec<NodeId>, Vec<NodeId>) = match p {
            Partition::Isolate(n) => (vec![*n], all.iter().copied().filter(|m| m != n).collect()),
            Partition::Bisect { side } => {
                (side.clone(), all.iter().copied().filter(|m| !side.contains(m)).collect())
            }
            Partition::OneWay { from, to } => (from.clone(), to.clone()),
        };
        let both_ways = !matches!(p, Partition::OneWay { .. });
        for &a in &from {
            for &b in &to {
                self.block(a, b);
                if both_ways {
                    self.block(b, a);
                }
            }
        }
    }

    pub fn heal_partition(&mut self) {
        self.blocked.iter_mut().for_each(|link| *link = false);
    }

    /// Every fault healed from now on (see `FaultPlan::healed`).
    pub fn heal_all(&mut self) {
        self.heal_partition();
        self.plan = self.plan.healed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet_plan() -> FaultPlan {
        let mut plan = FaultPlan::choose(&mut Rng::new(1)).healed();
        plan.delay_us = (100, 200);
        plan
    }

    #[test]
    fn isolation_cuts_both_ways_and_heals() {
        let mut net = Net::new(3, quiet_plan());
        net.partition(&Partition::Isolate(NodeId(2)));
        assert!(net.is_blocked(NodeId(2), NodeId(1)));
        assert!(net.is_blocked(NodeId(3), NodeId(2)));
        assert!(!net.is_blocked(NodeId(1), NodeId(3)));
        net.heal_partition();
        assert!(!net.is_blocked(NodeId(2), NodeId(1)));
    }

    #[test]
    fn one_way_cuts_one_direction() {
        let mut net = Net::new(5, quiet_plan());
        net.partition(&Partition::OneWay { from: vec![NodeId(1)], to: vec![NodeId(4), NodeId(5)] });
        assert!(net.is_blocked(NodeId(1), NodeId(4)));
        assert!(!net.is_blocked(NodeId(4), NodeId(1)));
        assert!(!net.is_blocked(NodeId(1), NodeId(2)));
    }

    #[test]
    fn blocked_datagrams_never_arrive_but_clients_always_may() {
        let mut net = Net::new(3, quiet_plan());
        net.partition(&Partition::Bisect { side: vec![NodeId(1)] });
        let mut rng = Rng::new(7);
        let mut counts = FaultCounts::default();
        let (a, b) = (Endpoint::Node(NodeId(1)), Endpoint::Node(NodeId(2)));
        assert!(net.transmit(&mut rng, a, b, &mut counts).is_empty());
        assert_eq!(net.transmit(&mut rng, Endpoint::Client(9), a, &mut counts).len(), 1);
    }
}
