//! The deterministic simulator: a second driver for the sans-IO core.
//!
//! N nodes run the real `core::Node` over a simulated network (loss,
//! duplication, delay and reordering, partitions) and a simulated disk (the
//! real log format, crashes that lose unsynced writes and tear the last
//! one), in virtual time, with every random choice drawn from one seed.
//! Simulated clients run a random workload of reads, writes, CAS and
//! deletes, and record a history. During the run the simulator checks that
//! nothing leaves a node before the state it depends on is durable, that
//! promises never go down, and that acknowledged states descend from each
//! other; at the end, that the cluster serves every key once faults heal,
//! and that the history is linearizable.
//!
//! `run_seed` runs one seed; the same seed always gives the same trace hash.

mod disk;
mod faults;
mod invariants;
mod locks;
mod nemesis;
mod net;
mod node;
mod sweep;
mod trace;
mod watchers;
mod workload;
mod world;

pub use faults::{FaultCounts, FaultPlan};
pub use locks::{LockCounts, LockPlan};
pub use sweep::{default_jobs, sweep};
pub use workload::{OpCounts, WorkloadPlan};

/// Client operations per seed unless told otherwise.
pub const OPS_DEFAULT: u64 = 1000;

/// What to simulate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    pub seed: u64,
    /// Cluster size; `None` picks it from the seed (`nodes_for_seed`).
    pub nodes: Option<usize>,
    /// Client operations to invoke before every fault heals.
    pub ops: u64,
    /// Deliberately broken protocol variants, to show they are caught.
    #[cfg(feature = "planted-bugs")]
    pub bugs: crate::core::PlantedBugs,
}

impl SimOptions {
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            nodes: None,
            ops: OPS_DEFAULT,
            #[cfg(feature = "planted-bugs")]
            bugs: crate::core::PlantedBugs::default(),
        }
    }
}

/// Three nodes for even seeds, five for odd ones, so every sweep has both.
pub fn nodes_for_seed(seed: u64) -> usize {
    if seed.is_multiple_of(2) { 3 } else { 5 }
}

/// What one seed did.
#[derive(Clone, Debug)]
pub struct SeedReport {
    pub seed: u64,
    pub nodes: usize,
    /// Client operations invoked (the final reads included).
    pub ops: u64,
    pub op_counts: OpCounts,
    /// Empty when the run was correct.
    pub violations: Vec<String>,
    pub trace_hash: u64,
    /// The clients' history, in the checker's JSON Lines format.
    pub history_jsonl: String,
    pub faults: FaultCounts,
    pub fault_plan: FaultPlan,
    pub workload_plan: WorkloadPlan,
    pub virtual_ms: u64,
    pub events: u64,
    /// The lock workload's plan and how its leases ended, when it had one.
    pub lock_plan: Option<LockPlan>,
    pub lock_counts: LockCounts,
    /// Versions the watchers handed out, and gaps they reported (`None`:
    /// no watchers in this seed).
    pub watched: Option<(u64, u64)>,
}

/// Runs one seed to the end and checks everything.
pub fn run_seed(options: &SimOptions) -> SeedReport {
    let nodes = options.nodes.unwrap_or_else(|| nodes_for_seed(options.seed));
    let mut world = world::World::new(options, nodes);
    world.run();
    let mut violations = std::mem::take(&mut world.violations);
    let history_jsonl = world.workload.history();
    if let Some(locks) = world.locks.as_ref() {
        violations.extend(locks.book.check());
    }
    if violations.is_empty() {
        violations.extend(invariants::linearizability(&history_jsonl));
    }
    SeedReport {
        seed: options.seed,
        nodes,
        ops: world.workload.invoked(),
        op_counts: world.workload.counts,
        violations,
        trace_hash: world.trace_hash(),
        history_jsonl,
        faults: world.counts,
        fault_plan: world.plan.clone(),
        workload_plan: world.workload.plan().clone(),
        virtual_ms: world.now.0 / 1000,
        events: world.events,
        lock_plan: world.locks.as_ref().map(|l| l.plan().clone()),
        lock_counts: world.locks.as_ref().map(|l| l.counts).unwrap_or_default(),
        watched: world.watchers.as_ref().map(|w| (w.versions_seen, w.gaps)),
    }
}

/// The command that runs `options` again.
pub fn reproduce_line(options: &SimOptions) -> String {
    let mut line = format!("reproduce: scripts/simulate.sh --seeds 1 --first-seed {}", options.seed);
    if let Some(n) = options.nodes {
        line.push_str(&format!(" --nodes {n}"));
    }
    if options.ops != OPS_DEFAULT {
        line.push_str(&format!(" --ops {}", options.ops));
    }
    line
}
