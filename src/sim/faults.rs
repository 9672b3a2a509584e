//! The faults of one seed. Each seed draws which kinds of fault it injects
//! and how hard (swarm testing): a run with only crashes, or only loss,
//! reaches states that a run mixing everything at full strength rarely
//! does.

use crate::core::ClientLimits;
use crate::core::rng::Rng;
use crate::limits;
use crate::wire::{Message, Outcome, Refusal};
use std::fmt;

/// What the network and the nemesis do during the fault phase.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Ordinary one-way delay, uniform in this range (µs).
    pub delay_us: (u64, u64),
    /// Probability that a datagram is held back much longer, which
    /// reorders it behind later ones.
    pub long_delay: f64,
    pub long_delay_us: (u64, u64),
    /// How long an fdatasync takes (µs); the node is busy meanwhile.
    pub sync_us: (u64, u64),
    /// Fault kinds the nemesis may start.
    pub partitions: bool,
    pub crashes: bool,
    pub pauses: bool,
    /// Wiped data dirs and damaged logs, each followed by a rejoin.
    pub disk_faults: bool,
    /// Membership changes: two more nodes start as joiners, and the nemesis
    /// adds and removes members (`core::reconfig`).
    pub membership: bool,
    /// Quiet time between two nemesis actions (ms).
    pub nemesis_gap_ms: (u64, u64),
    /// Log size (bytes) above which a node compacts its log.
    pub compact_bytes_min: u64,
    /// Client sessions a node remembers per generation: now and then tiny,
    /// so nodes forget sessions (and change incarnation) under pressure.
    pub sessions_per_generation: usize,
    /// Requests a node runs at once: now and then tiny, so nodes refuse
    /// requests as overloaded.
    pub requests_in_flight_max: usize,
    /// Slots holding only a promise an acceptor keeps: now and then tiny,
    /// so acceptors drop promises of keys nothing was accepted for (and of
    /// keys being created) all the time.
    pub absent_promises_max: usize,
}

impl FaultPlan {
    /// Draws a plan. Every kind is on in about half the seeds, so a few
    /// hundred seeds cover every kind alone and in company.
    pub fn choose(rng: &mut Rng) -> FaultPlan {
        let loss = if rng.chance(0.5) { rng.range(0, 300) as f64 / 1000.0 } else { 0.0 };
        let duplicate = if rng.chance(0.5) { rng.range(0, 100) as f64 / 1000.0 } else { 0.0 };
        let delay_max = rng.range(100, 20_000);
        let delay_us = (rng.range(100, delay_max), delay_max);
        let long_delay = if rng.chance(0.5) { rng.range(1, 50) as f64 / 1000.0 } else { 0.0 };
        let sync_max = rng.range(50, 10_000);
        FaultPlan {
            loss,
            duplicate,
            delay_us,
            long_delay,
            long_delay_us: (20_000, rng.range(50_000, 1_000_000)),
            sync_us: (rng.range(10, sync_max), sync_max),
            partitions: rng.chance(0.5),
            crashes: rng.chance(0.5),
            pauses: rng.chance(0.5),
            disk_faults: rng.chance(0.5),
            nemesis_gap_ms: (rng.range(10, 200), rng.range(300, 3000)),
            compact_bytes_min: 1 << rng.range(12, 17),
            sessions_per_generation: if rng.chance(0.3) {
                rng.range(1, 4) as usize
            } else {
                limits::SESSIONS_PER_GENERATION
            },
            requests_in_flight_max: if rng.chance(0.35) {
                rng.range(1, 4) as usize
            } else {
                limits::REQUESTS_IN_FLIGHT_MAX
            },
            membership: rng.chance(0.4),
            absent_promises_max: if rng.chance(0.3) {
                rng.range(1, 4) as usize
            } else {
                limits::ABSENT_PROMISES_MAX
            },
        }
    }

    /// The limits every node of the seed enforces on clients.
    pub fn client_limits(&self) -> ClientLimits {
        ClientLimits {
            requests_in_flight_max: self.requests_in_flight_max,
            requests_queued_per_key_max: limits::REQUESTS_QUEUED_PER_KEY_MAX,
            sessions_per_generation: self.sessions_per_generation,
            // Small budgets for requests make small ones for watch reads.
            watch_reads_in_flight_max: limits::WATCH_READS_IN_FLIGHT_MAX.min(self.requests_in_flight_max),
            absent_promises_max: self.absent_promises_max,
            requests_per_client_behind_max: limits::REQUESTS_PER_CLIENT_BEHIND_MAX,
        }
    }

    /// The network once every fault has healed: no loss, no duplicates, no
    /// long delays, ordinary delays capped, so liveness can be demanded.
    pub fn healed(&self) -> FaultPlan {
        FaultPlan {
            loss: 0.0,
            duplicate: 0.0,
            long_delay: 0.0,
            partitions: false,
            crashes: false,
            pauses: false,
            disk_faults: false,
            ..self.clone()
        }
    }

    pub fn has_nemesis(&self) -> bool {
        self.partitions || self.crashes || self.pauses || self.disk_faults
    }
}

/// Faults injected, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub lost: u64,
    pub duplicated: u64,
    pub delayed_long: u64,
    pub isolations: u64,
    pub bisections: u64,
    pub one_way: u64,
    pub crashes: u64,
    /// Crashes that left part of an unsynced write on disk.
    pub torn_writes: u64,
    pub pauses: u64,
    /// Copies of requests a client sent saying the request may have run
    /// elsewhere (after a silent, restarted or given-up node).
    pub resent: u64,
    /// Data dirs wiped, and logs with a byte damaged.
    pub wiped: u64,
    pub damaged_logs: u64,
    /// Nodes that caught up after losing data (or a damaged last unit).
    pub caught_up: u64,
    /// Requests refused because a node was overloaded.
    pub overloaded: u64,
    /// Copies refused for naming another incarnation: the node restarted or
    /// forgot sessions under pressure since the client last heard from it.
    pub stale_incarnation: u64,
    /// Membership changes asked for, and configurations installed at a node.
    pub member_changes: u64,
    pub installs: u64,
}

impl FaultCounts {
    pub fn add(&mut self, other: &FaultCounts) {
        for (mine, theirs) in self.fields_mut().into_iter().zip(other.fields()) {
            *mine += theirs;
        }
    }

    fn fields(&self) -> [u64; 17] {
        [
            self.lost,
            self.duplicated,
            self.delayed_long,
            self.isolations,
            self.bisections,
            self.one_way,
            self.crashes,
            self.torn_writes,
            self.pauses,
            self.wiped,
            self.damaged_logs,
            self.caught_up,
            self.resent,
            self.overloaded,
            self.stale_incarnation,
            self.member_changes,
            self.installs,
        ]
    }

    fn fields_mut(&mut self) -> [&mut u64; 17] {
        [
            &mut self.lost,
            &mut self.duplicated,
            &mut self.delayed_long,
            &mut self.isolations,
            &mut self.bisections,
            &mut self.one_way,
            &mut self.crashes,
            &mut self.torn_writes,
            &mut self.pauses,
            &mut self.wiped,
            &mut self.damaged_logs,
            &mut self.caught_up,
            &mut self.resent,
            &mut self.overloaded,
            &mut self.stale_incarnation,
            &mut self.member_changes,
            &mut self.installs,
        ]
    }

    /// Counts what a message between a client and a node shows of the
    /// situations clients must survive.
    pub fn note_client_traffic(&mut self, msg: &Message) {
        match msg {
            Message::Request(r) if r.resent => self.resent += 1,
            Message::Reply { outcome: Outcome::Refused(Refusal::Overloaded), .. } => self.overloaded += 1,
            Message::Reply { outcome: Outcome::Refused(Refusal::StaleIncarnation), .. } => {
                self.stale_incarnation += 1
            }
            _ => {}
        }
    }

    /// The kinds never injected.
    pub fn missing_kinds(&self) -> Vec<&'static str> {
        NAMES.iter().zip(self.fields()).filter(|(_, n)| *n == 0).map(|(name, _)| *name).collect()
    }
}

const NAMES: [&str; 17] = [
    "lost",
    "duplicated",
    "delayed_long",
    "isolations",
    "bisections",
    "one_way",
    "crashes",
    "torn_writes",
    "pauses",
    "wiped",
    "damaged_logs",
    "caught_up",
    "resent",
    "overloaded",
    "stale_incarnation",
    "member_changes",
    "installs",
];

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = NAMES.iter().zip(self.fields()).map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(" "))
    }
}
