//! etcd-bench: closed-loop load on an etcd cluster, with the workloads and
//! the figures of `paxosctl bench`, so that scripts/bench-vs-etcd.sh can set
//! the two side by side.
//!
//! C clients run as tasks on a multi-threaded runtime, over
//! ceil(C / 16) gRPC connections (a multiple of the endpoint count once
//! C >= endpoints) dealt round-robin over the endpoints. A run is: connect;
//! for `read`, write every key once; `--warmup` seconds of load that is not
//! counted; `--duration` seconds that are (operations still in flight then
//! count in the last second, and ops/s is over the time until the last one
//! ended, as in `paxosctl bench`). Exit code 0 after a run (errors are
//! counted, not fatal), 1 when it cannot run (no connection, the read set-up
//! failed), 2 on a usage error.

mod limits;
mod load;
mod report;
mod workload;

use clap::Parser;
use limits::{CLIENTS_MAX, DURATION_S_MAX, KEYS_PER_CLIENT_MAX, THREADS_MAX, VALUE_BYTES_MAX};
use load::{Clock, Tally};
use report::Summary;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use workload::{Workload, keys_of};

#[derive(Parser, Debug)]
#[command(
    name = "etcd-bench",
    version,
    about = "Closed-loop load on an etcd cluster, as `paxosctl bench` does on paxosd"
)]
struct Cli {
    /// etcd client endpoints, HOST:PORT (or http://HOST:PORT), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379")]
    endpoints: Vec<String>,
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    /// Concurrent clients, each running one operation at a time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=CLIENTS_MAX as u64))]
    clients: u64,
    /// Keys each client cycles over (put, read, cas, mixed).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=KEYS_PER_CLIENT_MAX as u64))]
    keys_per_client: u64,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=VALUE_BYTES_MAX as u64))]
    value_bytes: u64,
    /// Seconds of the timed part.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=DURATION_S_MAX))]
    duration: u64,
    /// Seconds of load before the timed part, not counted.
    #[arg(long, default_value_t = 2, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=DURATION_S_MAX))]
    warmup: u64,
    /// Worker threads of the runtime (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=THREADS_MAX as u64))]
    threads: Option<u64>,
    /// Print exactly one JSON object instead of the line.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.threads {
        builder.worker_threads(threads as usize);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("etcd-bench: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(summary) if cli.json => println!("{}", summary.json()),
        Ok(summary) => {
            println!("{}", summary.human_line());
            if summary.tally.errors() > 0 {
                let kinds: Vec<String> =
                    summary.tally.errors_by_kind.iter().map(|(kind, n)| format!("{kind}={n}")).collect();
                println!("errors by kind: {}", kinds.join(" "));
            }
        }
        Err(err) => {
            eprintln!("etcd-bench: {err}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

async fn run(cli: &Cli) -> Result<Summary, String> {
    let clients = cli.clients as usize;
    let keys_per_client = cli.keys_per_client as usize;
    let value = vec![b'x'; cli.value_bytes as usize];
    let plan = load::connection_plan(clients, cli.endpoints.len());
    let connections = load::connect(&cli.endpoints, &plan).await?;
    let kv_of = |client: usize| connections[load::connection_of(client, connections.len())].clone();
    let run = run_id();
    let keys = |client: usize| keys_of(cli.workload, run, client, keys_per_client);
    if cli.workload == Workload::Read {
        let writers = (0..clients).map(|c| tokio::spawn(load::write_keys(kv_of(c), keys(c), value.clone())));
        for writer in writers.collect::<Vec<_>>() {
            writer.await.map_err(|err| format!("a set-up task failed: {err}"))??;
        }
    }
    let start = Instant::now();
    let timed_from = start + Duration::from_secs(cli.warmup);
    let clock = Clock { timed_from, until: timed_from + Duration::from_secs(cli.duration) };
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client =
                load::run_client(kv_of(c), cli.workload, keys(c), value.clone(), clock, cli.duration);
            tokio::spawn(client)
        })
        .collect();
    tokio::time::sleep_until(clock.timed_from.into()).await;
    let cpu_before_s = cpu_s();
    tokio::time::sleep_until(clock.until.into()).await;
    let generator_cpu_s = (cpu_s() - cpu_before_s).max(0.0);
    let mut tally = Tally::new(cli.duration);
    for task in tasks {
        tally.merge(&task.await.map_err(|err| format!("a client task failed: {err}"))?);
    }
    Ok(Summary {
        workload: cli.workload.name(),
        clients,
        value_bytes: value.len(),
        keys_per_client,
        duration_s: cli.duration,
        warmup_s: cli.warmup,
        connections: connections.len(),
        generator_cpu_s,
        tally,
    })
}

/// A number of its own for every run, so that no run finds the keys of
/// another (the CAS workload expects its keys absent at first).
fn run_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() % 1_000_000_000
}

/// CPU seconds (user + system) used by every thread of this process so far.
fn cpu_s() -> f64 {
    // SAFETY: getrusage writes into the struct we hand it, nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
