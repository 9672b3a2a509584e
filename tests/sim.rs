//! The deterministic simulator as a test: the CI sweep of seeds, over 3 and
//! 5 nodes and every kind of fault, must find no violation, and a seed must
//! replay exactly.
//!
//! The sweep starts at a fixed seed so that CI is reproducible; set
//! `PAXOS_SIM_FIRST_SEED` to sweep elsewhere.

use paxosd::sim::{self, FaultCounts, SimOptions};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// Seeds in the CI sweep.
const CI_SEEDS: u64 = 500;

#[derive(Default)]
struct Sweep {
    failures: Vec<String>,
    faults: FaultCounts,
    nodes: BTreeSet<usize>,
    ops_min: Option<(u64, u64)>,
    seeds: u64,
}

#[test]
fn ci_sweep_finds_no_violation_and_injects_every_fault() {
    let first = std::env::var("PAXOS_SIM_FIRST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let sweep = Mutex::new(Sweep::default());
    sim::sweep(first, CI_SEEDS, sim::default_jobs(), SimOptions::new, |options, report| {
        let mut s = sweep.lock().unwrap_or_else(|e| e.into_inner());
        s.seeds += 1;
        s.faults.add(&report.faults);
        s.nodes.insert(report.nodes);
        if s.ops_min.is_none_or(|(ops, _)| report.ops < ops) {
            s.ops_min = Some((report.ops, report.seed));
        }
        if let Some(v) = report.violations.first() {
            s.failures.push(format!("seed {}: {v}\n{}", report.seed, sim::reproduce_line(options)));
        }
    });
    let s = sweep.into_inner().unwrap_or_else(|e| e.into_inner());
    println!("seeds {first}..{}: faults {}", first + CI_SEEDS, s.faults);
    assert_eq!(s.seeds, CI_SEEDS);
    assert!(s.failures.is_empty(), "{} failing seeds:\n{}", s.failures.len(), s.failures.join("\n"));
    assert!(s.faults.missing_kinds().is_empty(), "never injected: {:?}", s.faults.missing_kinds());
    assert_eq!(s.nodes, BTreeSet::from([3, 5]), "both cluster sizes must be simulated");
    let (ops, seed) = s.ops_min.unwrap_or_default();
    assert!(ops >= sim::OPS_DEFAULT, "seed {seed} ran only {ops} operations");
}

#[test]
fn a_seed_replays_exactly() {
    let first = sim::run_seed(&SimOptions::new(7));
    let again = sim::run_seed(&SimOptions::new(7));
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.history_jsonl, again.history_jsonl);
    assert_eq!((first.ops, first.events, first.faults), (again.ops, again.events, again.faults));
    let other = sim::run_seed(&SimOptions::new(8));
    assert_ne!(first.trace_hash, other.trace_hash);
}

#[test]
fn the_cluster_size_can_be_forced() {
    for nodes in [3, 5] {
        let mut options = SimOptions::new(11);
        options.nodes = Some(nodes);
        options.ops = 200;
        let report = sim::run_seed(&options);
        assert_eq!(report.nodes, nodes);
        assert!(report.ops >= 200);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
    }
}
