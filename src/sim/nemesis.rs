//! The nemesis: during the fault phase it starts, at random intervals, one
//! fault of a kind the seed allows (a partition, crashes, pauses), each
//! ending after a random time; when the workload reaches its operation
//! count, everything heals at once and liveness is demanded.

use super::net::{Endpoint, Partition};
use super::node::{Power, SimNode};
use super::workload::ClientOut;
use super::world::{Event, LIVENESS_BOUND_US, World};
use crate::core::quorum::majority;
use crate::core::rng::Rng;
use crate::members::Members;
use crate::types::NodeId;
use crate::wire::Message;

#[derive(Clone, Copy)]
enum Kind {
    Partition,
    Crash,
    Pause,
    Disk,
    Membership,
}

/// The client address membership changes are asked from: no workload
/// client has it, so the answers are dropped.
const ADMIN: super::net::ClientAddr = u32::MAX;

impl World {
    pub(super) fn nemesis(&mut self) {
        if self.healed_at.is_some() {
            return;
        }
        let kinds: Vec<Kind> = [
            (self.plan.partitions, Kind::Partition),
            (self.plan.crashes, Kind::Crash),
            (self.plan.pauses, Kind::Pause),
            (self.plan.disk_faults, Kind::Disk),
            (self.plan.membership, Kind::Membership),
        ]
        .into_iter()
        .filter_map(|(on, kind)| on.then_some(kind))
        .collect();
        let Some(&kind) = kinds.get(self.rng.below(kinds.len() as u64) as usize) else {
            return;
        };
        match kind {
            Kind::Partition => self.start_partition(),
            Kind::Crash => self.crash_some(),
            Kind::Pause => self.pause_some(),
            Kind::Disk => self.damage_disk(),
            Kind::Membership => self.change_members(),
        }
        let (lo, hi) = self.plan.nemesis_gap_ms;
        let gap_ms = self.rng.range(lo, hi);
        self.push(self.now.plus_millis(gap_ms), Event::Nemesis);
    }

    /// How long a fault lasts: often briefly, often for seconds.
    fn fault_duration_us(&mut self) -> u64 {
        if self.rng.chance(0.5) {
            self.rng.range(20_000, 300_000)
        } else {
            self.rng.range(300_000, 4_000_000)
        }
    }

    fn start_partition(&mut self) {
        let n = self.nodes.len() as u64;
        let ids = shuffled((1..=n as u16).map(NodeId).collect(), &mut self.rng);
        let partition = match self.rng.below(3) {
            0 => {
                self.counts.isolations += 1;
                Partition::Isolate(ids[0])
            }
            1 => {
                self.counts.bisections += 1;
                let minority = self.rng.range(1, (n - 1) / 2) as usize;
                Partition::Bisect { side: ids[..minority].to_vec() }
            }
            _ => {
                self.counts.one_way += 1;
                let split = self.rng.range(1, n - 1) as usize;
                Partition::OneWay { from: ids[..split].to_vec(), to: ids[split..].to_vec() }
            }
        };
        self.net.partition(&partition);
        self.partition_generation += 1;
        let generation = self.partition_generation;
        let until = self.now.plus_micros(self.fault_duration_us());
        self.push(until, Event::HealPartition { generation });
    }

    /// How many more nodes may be taken out (crashed or paused) now. Mostly
    /// a minority at a time, so the cluster keeps making progress and the
    /// history stays checkable; now and then a majority, because safety
    /// must hold even then (liveness is only asked for after healing).
    fn outage_room(&mut self) -> usize {
        let n = self.nodes.len();
        let out = self.nodes.iter().filter(|node| node.power != Power::Up).count();
        let limit = if self.rng.chance(0.1) { majority(n) } else { n - majority(n) };
        let wanted = if self.rng.chance(0.25) { 2 } else { 1 };
        wanted.min(limit.saturating_sub(out))
    }

    /// Crashes nodes now, or (half the time) arms them to crash in the
    /// middle of their next sync: the moment where a crash can lose or tear
    /// a write, and where a driver that released early would be caught.
    fn crash_some(&mut self) {
        let room = self.outage_room();
        let alive: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].power != Power::Down).collect();
        for i in shuffled(alive, &mut self.rng).into_iter().take(room) {
            if self.rng.chance(0.5) {
                self.nodes[i].crash_armed = true;
            } else {
                self.crash(i);
            }
        }
    }

    pub(super) fn crash(&mut self, i: usize) {
        self.counts.crashes += 1;
        // Blocks of the last write landing out of order may make the node
        // catch up; only one node at a time, as with the disk faults below.
        let out_of_order = self.others_whole(i);
        if self.nodes[i].crash(&mut self.rng, out_of_order) {
            self.counts.torn_writes += 1;
        }
        let life = self.nodes[i].life;
        let until = self.now.plus_micros(self.fault_duration_us());
        self.push(until, Event::Restart { node: i, life });
    }

    /// True when every node but `i` is running with all its data (up or
    /// paused, not catching up).
    fn others_whole(&self, i: usize) -> bool {
        self.nodes.iter().enumerate().all(|(j, n)| j == i || (n.power != Power::Down && !n.is_catching_up()))
    }

    /// A node loses its data dir, or a byte of its log goes bad; it comes
    /// back with a rejoin (the daemon's `--rejoin`) when recovery refuses.
    /// Only while every other node is whole: a node catches up from a
    /// majority of its peers, and two nodes of three losing data at once
    /// can lose an acknowledged write for good.
    fn damage_disk(&mut self) {
        // Members only: a joiner that loses its data before it is added has
        // nothing to catch up on until it is (it then catches up first).
        let member = |n: &SimNode| n.status().is_some_and(|s| s.config.members.contains(n.id));
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].power == Power::Up && member(&self.nodes[i]))
            .collect();
        let Some(&i) = shuffled(up, &mut self.rng).first() else { return };
        if !self.others_whole(i) || self.nodes[i].is_catching_up() {
            return;
        }
        if self.rng.chance(0.5) {
            self.counts.wiped += 1;
            self.nodes[i].wipe(&mut self.rng);
        } else if self.nodes[i].damage_log(&mut self.rng) {
            self.counts.damaged_logs += 1;
        }
        let life = self.nodes[i].life;
        let until = self.now.plus_micros(self.fault_duration_us());
        self.push(until, Event::Restart { node: i, life });
    }

    /// Asks a running node to add or remove one member: the members go
    /// between three and every node, founding ones included. The change
    /// runs (or is refused) as `paxosctl member` would have it.
    fn change_members(&mut self) {
        let statuses: Vec<_> = self.nodes.iter().filter_map(SimNode::status).collect();
        let configs = statuses.iter().map(|s| s.config.clone()).filter(|c| !c.members.is_empty());
        let Some(current) = configs.max_by_key(|c| c.epoch) else { return };
        let ids = current.members.ids();
        let outside: Vec<NodeId> = self.nodes.iter().map(|n| n.id).filter(|id| !ids.contains(id)).collect();
        let grow = !outside.is_empty() && (ids.len() <= 3 || self.rng.chance(0.5));
        let target: Vec<NodeId> = if outside.len() >= 2 && self.rng.chance(0.3) {
            // Replace two members at once (`paxosctl member` makes one
            // change at a time, a client may ask for any target): only here
            // does a quorum of the new members miss the old ones' majority,
            // so only here are the seeds what carries the keys over.
            let mut kept = shuffled(ids.clone(), &mut self.rng);
            kept.truncate(ids.len().saturating_sub(2));
            let added = shuffled(outside.clone(), &mut self.rng);
            kept.into_iter().chain(added.into_iter().take(2)).collect()
        } else if grow {
            let add = outside[self.rng.below(outside.len() as u64) as usize];
            ids.iter().copied().chain([add]).collect()
        } else if ids.len() > 3 {
            let drop = ids[self.rng.below(ids.len() as u64) as usize];
            ids.iter().copied().filter(|id| *id != drop).collect()
        } else {
            return;
        };
        let up: Vec<NodeId> = self.nodes.iter().filter(|n| n.power == Power::Up).map(|n| n.id).collect();
        let Some(&via) = shuffled(up, &mut self.rng).first() else { return };
        self.counts.member_changes += 1;
        let request = Message::MembersRequest { id: self.rng.next_u64(), target: Members::named(&target) };
        self.send(Endpoint::Client(ADMIN), vec![(Endpoint::Node(via), vec![request])]);
    }

    /// As an operator would, asks a node to finish a change some node is
    /// frozen in (its driver may have died).
    fn finish_member_change(&mut self) {
        let frozen =
            self.nodes.iter().filter_map(SimNode::status).filter_map(|s| s.frozen).max_by_key(|c| c.epoch);
        let Some(change) = frozen else { return };
        let Some(via) =
            self.nodes.iter().find(|n| n.power == Power::Up && change.to.contains(n.id)).map(|n| n.id)
        else {
            return;
        };
        let request = Message::MembersRequest { id: self.rng.next_u64(), target: change.to };
        self.send(Endpoint::Client(ADMIN), vec![(Endpoint::Node(via), vec![request])]);
    }

    fn pause_some(&mut self) {
        let room = self.outage_room();
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].power == Power::Up).collect();
        for i in shuffled(up, &mut self.rng).into_iter().take(room) {
            self.counts.pauses += 1;
            self.nodes[i].pause();
            let life = self.nodes[i].life;
            let until = self.now.plus_micros(self.fault_duration_us());
            self.push(until, Event::Resume { node: i, life });
        }
    }

    /// Restarts node `i` if it is down (and, for a scheduled restart, still
    /// in the life the restart was meant for).
    pub(super) fn restart_if_down(&mut self, i: usize, life: Option<u32>) {
        let node = &self.nodes[i];
        if node.power != Power::Down || life.is_some_and(|inc| inc != node.life) {
            return;
        }
        let seed = self.rng.next_u64();
        self.nodes[i].restart(self.now, seed, &mut self.violations);
        self.schedule_turn(i);
    }

    pub(super) fn resume_if_paused(&mut self, i: usize, life: Option<u32>) {
        let node = &self.nodes[i];
        if node.power != Power::Paused || life.is_some_and(|inc| inc != node.life) {
            return;
        }
        let out = self.nodes[i].resume(self.now, self.plan.compact_bytes_min, &mut self.violations);
        let from = super::net::Endpoint::Node(self.nodes[i].id);
        self.send(from, out);
        self.schedule_turn(i);
    }

    /// The end of the fault phase: every node up, the network whole and
    /// calm, no new client operations; then the clock for liveness starts.
    pub(super) fn heal(&mut self) {
        self.healed_at = Some(self.now);
        self.net.heal_all();
        for i in 0..self.nodes.len() {
            self.nodes[i].crash_armed = false;
            self.restart_if_down(i, None);
            self.resume_if_paused(i, None);
        }
        self.finish_member_change();
        let mut out = ClientOut::default();
        self.workload.finish(self.now, &mut self.rng, &mut out);
        self.apply_client_out(out);
        self.push(self.now.plus_micros(LIVENESS_BOUND_US), Event::LivenessDeadline);
    }
}

/// Fisher-Yates, from the seeded source.
fn shuffled<T>(mut items: Vec<T>, rng: &mut Rng) -> Vec<T> {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
    items
}
