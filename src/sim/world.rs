//! The world: virtual time, the event queue, and the dispatch of events to
//! nodes, clients and the nemesis. Events run in (time, sequence) order, and
//! every random choice comes from one seeded source, so a seed always
//! produces the same run; the trace hash covers every event processed.

use super::SimOptions;
use super::faults::{FaultCounts, FaultPlan};
use super::locks::{LOCK_ADDR_BASE, LockPlan, LockWorkload};
use super::net::{ClientAddr, Endpoint, Net};
use super::node::{Outgoing, SimNode};
use super::trace::TraceHash;
use super::watchers::{WATCH_ADDR_BASE, Watchers};
use super::workload::{ClientOut, Workload, WorkloadPlan};
use crate::core::rng::Rng;
use crate::members::ConfigTag;
use crate::types::{NodeId, Time};
use crate::wire::Message;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Once every fault has healed, every pending operation and the final read
/// of every key must be done within this much virtual time. Operations in
/// flight end by their client deadline (at most 5 s). A read on a healthy
/// cluster takes two round trips of at most 40 ms plus a sync or two, a few
/// resend rounds (40 ms) and backoffs (at most 200 ms) if it collides with
/// a proposal still running; the final reader reads the keys one after the
/// other, and a seed uses at most a few dozen keys.
pub const LIVENESS_BOUND_US: u64 = 30_000_000;

/// A run still going after this much virtual time is stuck.
const VIRTUAL_TIME_MAX_US: u64 = 4 * 3600 * 1_000_000;

pub(super) enum Event {
    /// A datagram; `tag` is what its header says of the sending node's
    /// configuration (none from clients).
    Deliver {
        from: Endpoint,
        to: Endpoint,
        tag: Option<ConfigTag>,
        msgs: Vec<Message>,
    },
    NodeWake {
        node: usize,
        life: u32,
    },
    SyncDone {
        node: usize,
        life: u32,
    },
    Crash {
        node: usize,
        life: u32,
    },
    ClientWake {
        addr: ClientAddr,
        generation: u64,
    },
    Nemesis,
    Restart {
        node: usize,
        life: u32,
    },
    Resume {
        node: usize,
        life: u32,
    },
    HealPartition {
        generation: u64,
    },
    LivenessDeadline,
}

struct Scheduled {
    time: Time,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so that the max-heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

pub struct World {
    pub(super) now: Time,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    pub(super) rng: Rng,
    pub(super) nodes: Vec<SimNode>,
    pub(super) net: Net,
    pub(super) plan: FaultPlan,
    pub(super) workload: Workload,
    /// Lock sessions, in the seeds that have them.
    pub(super) locks: Option<LockWorkload>,
    /// Watchers of register keys, in the seeds that have them.
    pub(super) watchers: Option<Watchers>,
    seed: u64,
    pub(super) counts: FaultCounts,
    trace: TraceHash,
    pub(super) violations: Vec<String>,
    pub(super) healed_at: Option<Time>,
    pub(super) partition_generation: u64,
    pub(super) events: u64,
}

impl World {
    pub fn new(options: &SimOptions, nodes: usize) -> World {
        let mut rng = Rng::new(options.seed);
        let plan = FaultPlan::choose(&mut rng);
        let workload_plan = WorkloadPlan::choose(&mut rng);
        let founding: Vec<NodeId> = (1..=nodes as u16).map(NodeId).collect();
        // With membership changes, two more nodes start as joiners.
        let slots = if plan.membership { nodes + 2 } else { nodes };
        let members: Vec<NodeId> = (1..=slots as u16).map(NodeId).collect();
        let nodes: Vec<SimNode> = members
            .iter()
            .map(|&id| SimNode::new(id, founding.clone(), plan.client_limits(), rng.next_u64()))
            .collect();
        #[cfg(feature = "planted-bugs")]
        let nodes = nodes
            .into_iter()
            .map(|mut n| {
                n.set_bugs(options.bugs);
                n
            })
            .collect();
        let mut workload = Workload::new(workload_plan, members.clone(), options.ops);
        workload.retry_no_quorum = plan.membership;
        #[allow(unused_mut)]
        let mut locks =
            LockPlan::choose(options.seed).map(|p| LockWorkload::new(p, members.clone(), options.seed));
        #[cfg(feature = "planted-bugs")]
        if let Some(locks) = locks.as_mut() {
            locks.set_bugs(options.bugs);
        }
        World {
            now: Time(0),
            queue: BinaryHeap::new(),
            seq: 0,
            rng,
            net: Net::new(members.len(), plan.clone()),
            plan,
            workload,
            locks,
            watchers: None,
            seed: options.seed,
            nodes,
            counts: FaultCounts::default(),
            trace: TraceHash::default(),
            violations: Vec::new(),
            healed_at: None,
            partition_generation: 0,
            events: 0,
        }
    }

    pub(super) fn push(&mut self, time: Time, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled { time, seq: self.seq, event });
    }

    /// Runs until the final reads are done or a violation is found.
    pub fn run(&mut self) {
        let mut out = ClientOut::default();
        self.workload.start(self.now, &mut self.rng, &mut out);
        self.apply_client_out(out);
        let mut lock_out = ClientOut::default();
        if let Some(locks) = self.locks.as_mut() {
            locks.start(self.now, &mut lock_out);
        }
        self.apply_client_out(lock_out);
        let members: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        if let Some((watchers, out)) =
            Watchers::choose(self.seed, self.now, &members, self.workload.plan().keys)
        {
            self.watchers = Some(watchers);
            self.apply_client_out(out);
        }
        if self.plan.has_nemesis() {
            self.push(self.now, Event::Nemesis);
        }
        while let Some(next) = self.queue.pop() {
            self.now = next.time;
            self.events += 1;
            self.hash_event(&next.event);
            self.dispatch(next.event);
            if !self.violations.is_empty() || self.workload.is_finished() {
                return;
            }
            if self.healed_at.is_none() && self.workload.target_reached() {
                self.heal();
                self.locks.iter_mut().for_each(LockWorkload::stop);
            }
            if self.now.0 > VIRTUAL_TIME_MAX_US {
                self.violations
                    .push(format!("t={}us the run is stuck: virtual time limit reached", self.now.0));
                return;
            }
        }
        self.violations.push(format!("t={}us the run stalled: nothing left to happen", self.now.0));
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace.finish()
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to: Endpoint::Node(id), tag, msgs } => {
                let i = usize::from(id.0) - 1;
                if let Some(node) = self.nodes.get_mut(i) {
                    node.deliver(from, tag, msgs);
                    self.schedule_turn(i);
                }
            }
            Event::Deliver { from, to: Endpoint::Client(addr), msgs, .. } => {
                self.deliver_to_client(from, addr, msgs)
            }
            Event::NodeWake { node, life } => self.node_wake(node, life),
            Event::SyncDone { node, life } => self.sync_done(node, life),
            Event::ClientWake { addr, generation } if addr >= WATCH_ADDR_BASE => {
                let mut out = ClientOut::default();
                if let Some(watchers) = self.watchers.as_mut() {
                    watchers.on_wake(self.now, addr, generation, &mut self.workload, &mut out);
                }
                self.apply_client_out(out);
            }
            Event::ClientWake { addr, generation } if addr >= LOCK_ADDR_BASE => {
                let mut out = ClientOut::default();
                if let Some(locks) = self.locks.as_mut() {
                    locks.on_wake(self.now, addr, generation, &mut out);
                }
                self.apply_client_out(out);
            }
            Event::ClientWake { addr, generation } => {
                let mut out = ClientOut::default();
                self.workload.on_wake(self.now, &mut self.rng, addr, generation, &mut out);
                self.apply_client_out(out);
            }
            Event::Crash { node, life } => {
                let live = self.nodes.get(node).is_some_and(|n| n.life == life);
                if live && self.healed_at.is_none() {
                    self.crash(node);
                }
            }
            Event::Nemesis => self.nemesis(),
            Event::Restart { node, life } => self.restart_if_down(node, Some(life)),
            Event::Resume { node, life } => self.resume_if_paused(node, Some(life)),
            Event::HealPartition { generation } => {
                if generation == self.partition_generation {
                    self.net.heal_partition();
                }
            }
            Event::LivenessDeadline => self.violations.push(format!(
                "t={}us liveness: not done {} ms after every fault healed: {}; nodes: {}",
                self.now.0,
                LIVENESS_BOUND_US / 1000,
                self.workload.describe_pending(),
                self.describe_nodes()
            )),
        }
    }
}

impl World {
    /// Each node's membership and catching-up state, for a liveness report.
    fn describe_nodes(&self) -> String {
        let describe = |n: &SimNode| match n.status() {
            None => format!("{} down", n.id),
            Some(s) => format!(
                "{} config={}:{}{}{}{}",
                n.id,
                s.config.epoch,
                s.config.members,
                s.frozen.map(|c| format!(" frozen={}:{}", c.epoch, c.to)).unwrap_or_default(),
                if s.catching_up { " catching-up" } else { "" },
                s.driving.map(|d| format!(" driving={d}")).unwrap_or_default()
            ),
        };
        self.nodes.iter().map(describe).collect::<Vec<_>>().join(", ")
    }

    fn deliver_to_client(&mut self, from: Endpoint, addr: ClientAddr, msgs: Vec<Message>) {
        let Endpoint::Node(node) = from else {
            return;
        };
        if addr >= WATCH_ADDR_BASE {
            let mut out = ClientOut::default();
            if let Some(watchers) = self.watchers.as_mut() {
                for msg in msgs {
                    watchers.on_reply(self.now, addr, node, msg, &mut self.workload, &mut out);
                }
            }
            return self.apply_client_out(out);
        }
        if addr >= LOCK_ADDR_BASE {
            let mut out = ClientOut::default();
            if let Some(locks) = self.locks.as_mut() {
                msgs.into_iter().for_each(|msg| locks.on_reply(self.now, addr, node, msg, &mut out));
            }
            return self.apply_client_out(out);
        }
        let mut out = ClientOut::default();
        for msg in msgs {
            self.workload.on_reply(self.now, &mut self.rng, addr, node, msg, &mut out);
        }
        self.apply_client_out(out);
    }

    pub(super) fn apply_client_out(&mut self, out: ClientOut) {
        for (addr, node, msg) in out.sends {
            self.send(Endpoint::Client(addr), vec![(Endpoint::Node(node), vec![msg])]);
        }
        for (addr, generation, time) in out.wakes {
            self.push(time, Event::ClientWake { addr, generation });
        }
        self.violations.extend(out.violations);
    }

    /// Puts each datagram on the network: lost, delivered, or delivered twice.
    /// A node's datagrams name its configuration as it is when they leave.
    pub(super) fn send(&mut self, from: Endpoint, out: Outgoing) {
        let tag = match from {
            Endpoint::Node(id) => self.nodes.get(usize::from(id.0) - 1).and_then(SimNode::config_tag),
            Endpoint::Client(_) => None,
        };
        for (to, msgs) in out {
            msgs.iter().for_each(|m| self.counts.note_client_traffic(m));
            let delays = self.net.transmit(&mut self.rng, from, to, &mut self.counts);
            for delay in delays {
                let event = Event::Deliver { from, to, tag, msgs: msgs.clone() };
                self.push(self.now.plus_micros(delay), event);
            }
        }
    }

    /// Makes sure an idle node with work has a turn scheduled.
    pub(super) fn schedule_turn(&mut self, i: usize) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(i) else {
            return;
        };
        if !node.is_idle() {
            return;
        }
        let Some(at) = node.next_turn(now) else {
            return;
        };
        if node.wake_at.is_some_and(|w| w <= at) {
            return;
        }
        node.wake_at = Some(at);
        let life = node.life;
        self.push(at, Event::NodeWake { node: i, life });
    }

    fn node_wake(&mut self, i: usize, life: u32) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(i) else {
            return;
        };
        if node.life != life || node.wake_at != Some(now) {
            return;
        }
        node.wake_at = None;
        if !node.is_idle() {
            return;
        }
        let epoch = node.config_tag().map(|t| t.epoch);
        let (out, needs_sync) = node.turn(now, &mut self.violations);
        if node.take_caught_up() {
            self.counts.caught_up += 1;
        }
        if node.config_tag().map(|t| t.epoch) > epoch {
            self.counts.installs += 1;
        }
        let (from, life) = (Endpoint::Node(node.id), node.life);
        self.send(from, out);
        if needs_sync {
            let latency = self.rng.range(self.plan.sync_us.0, self.plan.sync_us.1);
            self.push(now.plus_micros(latency), Event::SyncDone { node: i, life });
            if std::mem::take(&mut self.nodes[i].crash_armed) {
                let at = now.plus_micros(self.rng.range(0, latency.saturating_sub(1)));
                self.push(at, Event::Crash { node: i, life });
            }
        } else {
            self.schedule_turn(i);
        }
    }

    fn sync_done(&mut self, i: usize, life: u32) {
        let (now, compact) = (self.now, self.plan.compact_bytes_min);
        let Some(node) = self.nodes.get_mut(i) else {
            return;
        };
        if node.life != life {
            return;
        }
        let out = node.finish_sync(now, compact, &mut self.violations);
        let from = Endpoint::Node(node.id);
        self.send(from, out);
        self.schedule_turn(i);
    }

    fn hash_event(&mut self, event: &Event) {
        let h = &mut self.trace;
        h.u64(self.now.0);
        let words: [u64; 3] = match event {
            Event::Deliver { from, to, msgs, .. } => {
                msgs.iter().for_each(|m| h.message(m));
                [1, endpoint_word(from), endpoint_word(to)]
            }
            Event::NodeWake { node, life } => [2, *node as u64, u64::from(*life)],
            Event::SyncDone { node, life } => [3, *node as u64, u64::from(*life)],
            Event::Crash { node, life } => [10, *node as u64, u64::from(*life)],
            Event::ClientWake { addr, generation } => [4, u64::from(*addr), *generation],
            Event::Nemesis => [5, 0, 0],
            Event::Restart { node, life } => [6, *node as u64, u64::from(*life)],
            Event::Resume { node, life } => [7, *node as u64, u64::from(*life)],
            Event::HealPartition { generation } => [8, *generation, 0],
            Event::LivenessDeadline => [9, 0, 0],
        };
        words.into_iter().for_each(|w| h.u64(w));
    }
}

fn endpoint_word(e: &Endpoint) -> u64 {
    match e {
        Endpoint::Node(n) => u64::from(n.0),
        Endpoint::Client(a) => 1 << 32 | u64::from(*a),
    }
}
