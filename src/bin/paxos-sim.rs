//! paxos-sim: runs the deterministic simulator over a range of seeds, on
//! every core, and reports the seeds that break an invariant.
//!
//! Every failing seed prints one line that reproduces it; the last line is
//! always `seeds=N violations=V ops=O seeds_per_s=S`, and the exit status
//! is 0 exactly when V is 0.

use clap::Parser;
use paxosd::sim::{self, SeedReport, SimOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "paxos-sim", about = "Deterministic simulation of a paxosd cluster under faults")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed (random if not given; printed either way).
    #[arg(long)]
    first_seed: Option<u64>,
    /// Run only this seed, and describe it in detail.
    #[arg(long, conflicts_with_all = ["seeds", "first_seed"])]
    seed: Option<u64>,
    /// Worker threads (default: every core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Cluster size (default: 3 for even seeds, 5 for odd ones).
    #[arg(long, value_parser = clap::value_parser!(u16).range(3..=5))]
    nodes: Option<u16>,
    /// Client operations per seed.
    #[arg(long, default_value_t = sim::OPS_DEFAULT)]
    ops: u64,
    /// Where histories of failing seeds are written.
    #[arg(long, default_value = "target/paxos-sim")]
    out_dir: PathBuf,
}

struct Totals {
    seeds: u64,
    failed: u64,
    ops: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (first, count) = match (args.seed, args.first_seed) {
        (Some(seed), _) => (seed, 1),
        (None, Some(first)) => (first, args.seeds),
        (None, None) => {
            let first = random_seed();
            println!("first seed (random): {first}");
            (first, args.seeds)
        }
    };
    let verbose = count == 1;
    let jobs = args.jobs.unwrap_or_else(sim::default_jobs);
    let started = Instant::now();
    let totals = run_sweep(&args, first, count, jobs, verbose);
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "seeds={} violations={} ops={} seeds_per_s={:.1}",
        totals.seeds,
        totals.failed,
        totals.ops,
        totals.seeds as f64 / elapsed
    );
    if totals.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Runs seeds `first..first + count` on `jobs` threads.
fn run_sweep(args: &Args, first: u64, count: u64, jobs: usize, verbose: bool) -> Totals {
    let totals = Mutex::new(Totals { seeds: 0, failed: 0, ops: 0 });
    sim::sweep(
        first,
        count,
        jobs,
        |seed| options_for(args, seed),
        |options, report| {
            let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
            t.seeds += 1;
            t.ops += report.ops;
            if !report.violations.is_empty() {
                t.failed += 1;
            }
            // Printed under the lock, so reports never interleave.
            print_report(args, options, &report, verbose);
        },
    );
    totals.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn options_for(args: &Args, seed: u64) -> SimOptions {
    let mut options = SimOptions::new(seed);
    options.nodes = args.nodes.map(usize::from);
    options.ops = args.ops;
    options
}

fn print_report(args: &Args, options: &SimOptions, report: &SeedReport, verbose: bool) {
    if verbose {
        println!(
            "seed={} nodes={} ops={} (ok={} fail={} info={}) virtual_ms={} events={} trace_hash={:016x}",
            report.seed,
            report.nodes,
            report.ops,
            report.op_counts.ok,
            report.op_counts.fail,
            report.op_counts.info,
            report.virtual_ms,
            report.events,
            report.trace_hash
        );
        println!("faults: {}", report.faults);
        println!("fault plan: {:?}", report.fault_plan);
        println!("workload: {:?}", report.workload_plan);
        if let Some(plan) = &report.lock_plan {
            println!("locks: {plan:?}; leases: {:?}", report.lock_counts);
        }
        if let Some((versions, gaps)) = report.watched {
            println!("watchers: {versions} versions handed out, {gaps} gaps");
        }
    }
    if report.violations.is_empty() {
        return;
    }
    let shown = if verbose { report.violations.len() } else { 1 };
    for v in report.violations.iter().take(shown) {
        println!("seed {} VIOLATION: {v}", report.seed);
    }
    match write_history(&args.out_dir, report) {
        Ok(path) => println!("seed {}: history in {}", report.seed, path.display()),
        Err(e) => println!("seed {}: cannot write the history: {e}", report.seed),
    }
    println!("{}", sim::reproduce_line(options));
}

fn write_history(dir: &std::path::Path, report: &SeedReport) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("seed-{}.history.jsonl", report.seed));
    std::fs::write(&path, &report.history_jsonl)?;
    Ok(path)
}

/// A seed from the clock and the process id, for sweeps not told where to start.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    // Small enough to type.
    h.finish() % 1_000_000_000_000
}
