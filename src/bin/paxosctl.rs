//! `paxosctl`: the command line of a paxosd cluster.

use clap::{Args as ClapArgs, Parser, Subcommand};
use paxosd::client::{Answer, Client, ClientError};
use paxosd::config::Config;
use paxosd::types::{Key, NodeId, Value, Version};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXIT_OK: u8 = 0;
const EXIT_OTHER: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_PRECONDITION: u8 = 3;
const EXIT_NO_QUORUM: u8 = 4;
const EXIT_UNDECIDED: u8 = 5;

/// Read and change keys of a paxosd cluster.
///
/// Every key is a linearizable register: a read returns the latest
/// acknowledged write, and an acknowledged write is never lost while a
/// majority of nodes is up.
///
/// Examples:
///   paxosctl propose greeting hello          # prints the new version
///   paxosctl read greeting                   # prints hello
///   paxosctl --node 2 read greeting --json   # ask node 2, print JSON
///   paxosctl cas greeting bye --expect-value hello
///   paxosctl cas greeting bye --expect-version 3
///   paxosctl delete greeting
///   paxosctl append log ",entry"             # appends; prints the new version
///   paxosctl status
///   paxosctl check history.jsonl             # linearizability check
///   paxosctl torture --duration 60           # checked workload
///
/// Exit codes:
///   0  success
///   1  anything else (network error, no node answered, ...)
///   2  usage or config error
///   3  precondition failed: the CAS expectation did not hold (or an append
///      would exceed the value limit), nothing changed
///   4  no quorum within the timeout, or no answer: the message says whether
///      the change was not applied or its outcome is unknown
///   5  check: the history could not be decided within the search budget
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// The cluster config file.
    #[arg(long, global = true, default_value = "paxosd.toml", value_name = "FILE")]
    config: PathBuf,
    /// Ask only this node (default: the nodes in turn, until one answers).
    #[arg(long, global = true, value_name = "ID")]
    node: Option<u16>,
    /// Give up after this many milliseconds (default: client.timeout_ms of
    /// the config, 5000 if unset). On timeout the exit code is 4.
    #[arg(long, global = true, value_name = "MS")]
    timeout_ms: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set KEY to VALUE; prints the new version.
    Propose { key: String, value: String },
    /// Print KEY's value (nothing, and exit 0, when absent).
    Read {
        key: String,
        /// Print {"key":..,"value":..,"version":..} (value null when absent).
        #[arg(long)]
        json: bool,
    },
    /// Compare-and-set: set KEY to NEW if it holds the expected value.
    ///
    /// Give exactly one of --expect-value, --expect-version, --expect-absent.
    /// Prints the new version; exit 3 (and nothing changed) when the
    /// expectation does not hold.
    Cas(CasArgs),
    /// Delete KEY (leaves a tombstone; the version keeps counting).
    Delete { key: String },
    /// Append VALUE to KEY's value (to nothing if absent); prints the new
    /// version. Exit 3, nothing changed, if the result would exceed the
    /// value limit.
    Append { key: String, value: String },
    /// Show which nodes answer, with their id and address.
    Status,
    /// Check a history file for linearizability.
    ///
    /// The history is JSON Lines in Jepsen's conventions, one event per line
    /// in real-time order:
    ///   {"process":0,"type":"invoke","f":"write","key":"x","value":"3"}
    ///   {"process":0,"type":"ok","f":"write","key":"x","value":"3"}
    /// type: invoke, ok, fail, info; f: read, write, cas (value ["old","new"]),
    /// delete; null means absent. Keys are checked independently.
    ///
    /// Exit 0 linearizable; 1 violation (the key and the smallest stretch of
    /// its history that cannot be linearized are printed); 2 bad input (the
    /// line is named); 5 undecided (the search hit its budget).
    #[command(verbatim_doc_comment)]
    Check {
        #[arg(value_name = "HISTORY.jsonl")]
        history: PathBuf,
    },
    /// Run a checked workload against the cluster.
    ///
    /// Concurrent clients read, write, CAS, delete and CAS-append to lists;
    /// the history is written to a file and checked for linearizability and
    /// lost acknowledged writes. Prints one summary line
    /// (ops=.. ok=.. fail=.. info=.. linearizable=yes|no lost_acked=N);
    /// exit 0 only if linearizable and nothing acknowledged was lost.
    Torture(TortureArgs),
    /// Measure throughput and latency under closed-loop load.
    ///
    /// Each client (a session of its own; all of them on one thread and one
    /// socket) sends one request at a time, on fresh keys under a prefix of
    /// the run's own. The load runs for --warmup seconds, counted in
    /// nothing, then for --duration seconds, the timed part. An operation
    /// counts where it ended: those still in flight when the duration is up
    /// count in the last second. `ops` are the operations that succeeded (a
    /// compare-and-set whose version did not match succeeded too, and is
    /// also counted in precondition_failed); `errors` those that did not run
    /// or whose outcome is unknown.
    ///
    /// Every 10 s it prints that interval's figures to stderr (above a
    /// progress bar when stderr is a terminal); at the end one summary line
    /// (ops, errors, ops/s, latency percentiles in ms), the errors by kind
    /// if any, the intervals again, and how the slowest interval of the last
    /// minute compares with the median. --json prints one JSON object
    /// instead; --plot draws the run second by second.
    ///
    /// Examples:
    ///   paxosctl bench --clients 16 --duration 30 --warmup 2
    ///   paxosctl bench --workload cas --clients 16 --json > cas.json
    ///   paxosctl bench --workload mixed --duration 60 --plot mixed.svg
    #[command(verbatim_doc_comment)]
    Bench(BenchArgs),
    /// Draw a run as an SVG timeline.
    ///
    /// Each operation's latency over time (log scale), failures and unknown
    /// outcomes marked, fault intervals shaded.
    Timeline {
        /// A history written by `torture` (events carry `time`).
        #[arg(long, value_name = "FILE")]
        history: PathBuf,
        /// A fault log: lines `START_MS END_MS KIND DESCRIPTION`.
        #[arg(long, value_name = "FILE")]
        faults: Option<PathBuf>,
        /// Where to write the SVG.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long, default_value = "paxosd run")]
        title: String,
    },
}

#[derive(ClapArgs)]
struct BenchArgs {
    /// Client sessions, each with one request in flight at a time.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Length of the timed part, in seconds (after the warm-up).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    duration: u64,
    /// Seconds of load before the timed part, counted in nothing: the
    /// sessions find their nodes and the nodes their pace. The read
    /// workload writes its keys before the warm-up.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    warmup: u64,
    /// What each client sends.
    #[arg(long, value_enum, default_value_t = WorkloadArg::Put)]
    workload: WorkloadArg,
    /// Keys of each client, used in turn (all workloads but contended).
    #[arg(long, default_value_t = 16, value_name = "K")]
    keys_per_client: usize,
    /// Size of each value written.
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    value_bytes: usize,
    /// Print the report as one JSON object on stdout, nothing else there:
    /// workload, clients, ops, errors, errors_by_kind, precondition_failed,
    /// ops_per_s, p50_ms, p90_ms, p99_ms, p999_ms, max_ms, and per_second
    /// (operations that ended in each second of the timed part).
    #[arg(long)]
    json: bool,
    /// Draw operations (and errors) per second and each second's p50 and
    /// p99 latency as an SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// `--workload`; `write` is still accepted for `put`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum WorkloadArg {
    /// Each client puts its own keys, one after another.
    #[value(alias = "write")]
    Put,
    /// Each client compare-and-sets its own keys on the version of its last
    /// answer (0, absent, at first). A failed precondition is not an
    /// error: it is counted apart and its answer's version is used next.
    Cas,
    /// Each client reads its own keys, written once before the warm-up.
    Read,
    /// Each client puts one of its keys, then reads it back, and moves on
    /// to its next key: half puts, half reads.
    Mixed,
    /// Every client puts one hot key.
    Contended,
}

impl From<WorkloadArg> for paxosd::bench::Workload {
    fn from(arg: WorkloadArg) -> Self {
        use paxosd::bench::Workload;
        match arg {
            WorkloadArg::Put => Workload::Put,
            WorkloadArg::Cas => Workload::Cas,
            WorkloadArg::Read => Workload::Read,
            WorkloadArg::Mixed => Workload::Mixed,
            WorkloadArg::Contended => Workload::Contended,
        }
    }
}

#[derive(ClapArgs)]
struct TortureArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Keys of each workload (registers k0.., lists list0..; every run uses
    /// fresh keys, under a prefix of its own).
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    duration: u64,
    /// Seed of the workload's choices (random if not given; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the history (default: torture-SEED.jsonl).
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Timeout of each operation: short, so faults show up quickly.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    op_timeout_ms: u64,
}

#[derive(ClapArgs)]
#[group(required = true, multiple = false)]
struct CasExpect {
    /// The value KEY must hold.
    #[arg(long, value_name = "OLD")]
    expect_value: Option<String>,
    /// The version KEY must be at (0: never written).
    #[arg(long, value_name = "N")]
    expect_version: Option<u64>,
    /// KEY must be absent (never written, or deleted).
    #[arg(long)]
    expect_absent: bool,
}

#[derive(ClapArgs)]
struct CasArgs {
    key: String,
    new: String,
    #[command(flatten)]
    expect: CasExpect,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    ExitCode::from(run(cli))
}

fn run(cli: Cli) -> u8 {
    match &cli.command {
        Command::Check { history } => return check(history),
        Command::Timeline { history, faults, out, title } => {
            return timeline(history, faults.as_deref(), out, title);
        }
        _ => {}
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, &e.to_string()),
    };
    let timeout = Duration::from_millis(cli.timeout_ms.unwrap_or(config.client_timeout_ms));
    if timeout.is_zero() || timeout.as_millis() > u128::from(paxosd::limits::REQUEST_TIMEOUT_MS_MAX) {
        let max = paxosd::limits::REQUEST_TIMEOUT_MS_MAX;
        return fail(EXIT_USAGE, &format!("--timeout-ms must be between 1 and {max}"));
    }
    let mut client = match Client::new(&config, cli.node.map(NodeId), timeout) {
        Ok(c) => c,
        Err(ClientError::UnknownNode(id)) => {
            return fail(EXIT_USAGE, &format!("node {id} is not in {}", config.path.display()));
        }
        Err(e) => return fail(EXIT_OTHER, &e.to_string()),
    };
    match cli.command {
        Command::Propose { key, value } => {
            print_version(client.put(&Key::from(key.as_str()), value_of(&value)))
        }
        Command::Read { key, json } => read(&mut client, &key, json),
        Command::Cas(args) => cas(&mut client, args),
        Command::Delete { key } => print_version(client.delete(&Key::from(key.as_str()))),
        Command::Append { key, value } => append(&mut client, &key, &value),
        Command::Status => status(&mut client, config.nodes.len()),
        Command::Torture(args) => torture(&config, cli.node.map(NodeId), args),
        Command::Bench(args) => bench(&config, cli.node.map(NodeId), timeout, args),
        Command::Check { .. } | Command::Timeline { .. } => EXIT_USAGE,
    }
}

fn check(path: &std::path::Path) -> u8 {
    use paxosd::checker::{CheckError, Verdict};
    match paxosd::checker::check_file(path) {
        Ok(report) => {
            println!("{report}");
            match report.verdict {
                Verdict::Linearizable => EXIT_OK,
                Verdict::Violation(_) => EXIT_OTHER,
                Verdict::Unknown { .. } => EXIT_UNDECIDED,
            }
        }
        Err(e @ CheckError::Open { .. }) | Err(e @ CheckError::History { .. }) => {
            fail(EXIT_USAGE, &e.to_string())
        }
    }
}

fn torture(config: &Config, node: Option<NodeId>, args: TortureArgs) -> u8 {
    use paxosd::torture::{self, Counters, Options};
    use std::sync::Arc;
    let seed = args.seed.unwrap_or_else(random_seed);
    let history = args.history.unwrap_or_else(|| PathBuf::from(format!("torture-{seed}.jsonl")));
    let options = Options {
        clients: args.clients.max(1),
        keys: args.keys.max(1),
        duration: Duration::from_secs(args.duration),
        seed,
        history: history.clone(),
        timeout: Duration::from_millis(args.op_timeout_ms.clamp(1, paxosd::limits::REQUEST_TIMEOUT_MS_MAX)),
        node,
        key_prefix: torture::unique_prefix(seed),
    };
    eprintln!(
        "torture: seed={seed} clients={} keys={} duration={}s history={}",
        options.clients,
        options.keys,
        args.duration,
        history.display()
    );
    let counters = Arc::new(Counters::default());
    let shown = counters.clone();
    let every = Some(Duration::from_secs(5));
    let progress =
        progress::start("torture", options.duration, every, move || progress::torture_line(&shown));
    let result = torture::run(config, &options, &counters);
    progress.finish();
    match result {
        Ok(report) => {
            if let paxosd::checker::Verdict::Violation(v) = &report.verdict {
                for violation in v {
                    eprintln!("torture: NOT linearizable: key {:?}", violation.key);
                    for line in &violation.stretch {
                        eprintln!("  line {}: {}", line.line, line.text);
                    }
                }
            }
            for lost in report.lost_acked.iter().take(20) {
                eprintln!("torture: acknowledged but missing: {lost}");
            }
            for list in &report.unreadable {
                eprintln!("torture: final read of {list} failed: its elements are unchecked");
            }
            println!("{report}");
            if report.passed() { EXIT_OK } else { EXIT_OTHER }
        }
        Err(e) => fail(EXIT_OTHER, &e.to_string()),
    }
}

fn timeline(
    history: &std::path::Path,
    faults: Option<&std::path::Path>,
    out: &std::path::Path,
    title: &str,
) -> u8 {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let history = match read(history) {
        Ok(text) => text,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    let faults = match faults.map(read).transpose() {
        Ok(text) => text.unwrap_or_default(),
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    let points = paxosd::timeline::points(&history);
    let svg = paxosd::timeline::render(title, &points, &paxosd::timeline::faults(&faults));
    match std::fs::write(out, svg) {
        Ok(()) => EXIT_OK,
        Err(e) => fail(EXIT_OTHER, &format!("cannot write {}: {e}", out.display())),
    }
}

fn bench(config: &Config, node: Option<NodeId>, timeout: Duration, args: BenchArgs) -> u8 {
    use paxosd::bench::{self, Counters};
    use std::sync::Arc;
    let options = match bench_options(node, timeout, &args) {
        Ok(options) => options,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    let counters = Arc::new(Counters::default());
    let shown = counters.clone();
    // The interval lines are the plain progress report; no extra lines.
    let progress = progress::start("bench", options.warmup + options.duration, None, move || shown.line());
    let result =
        bench::run(config, &options, &counters, &mut |interval| progress.println(&interval.to_string()));
    progress.finish();
    let report = match result {
        Ok(report) => report,
        Err(e) => return fail(EXIT_OTHER, &e.to_string()),
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print_bench_text(&report, args.value_bytes);
    }
    log::info!("load generator: {}", report.load);
    match &args.plot {
        Some(path) => write_bench_plot(path, &report),
        None => EXIT_OK,
    }
}

/// The library's options from the command line, or what is wrong with it.
fn bench_options(
    node: Option<NodeId>,
    timeout: Duration,
    args: &BenchArgs,
) -> Result<paxosd::bench::Options, String> {
    use paxosd::limits::{BENCH_KEYS_PER_CLIENT_MAX, VALUE_BYTES_MAX};
    if args.value_bytes > VALUE_BYTES_MAX {
        return Err(format!("--value-bytes is over the limit of {VALUE_BYTES_MAX}"));
    }
    if !(1..=BENCH_KEYS_PER_CLIENT_MAX).contains(&args.keys_per_client) {
        return Err(format!("--keys-per-client must be between 1 and {BENCH_KEYS_PER_CLIENT_MAX}"));
    }
    Ok(paxosd::bench::Options {
        clients: args.clients.max(1),
        duration: Duration::from_secs(args.duration.max(1)),
        warmup: Duration::from_secs(args.warmup),
        workload: args.workload.into(),
        value_bytes: args.value_bytes,
        keys_per_client: args.keys_per_client,
        timeout,
        node,
        key_prefix: paxosd::torture::unique_prefix(random_seed()).replacen("torture", "bench", 1),
    })
}

fn print_bench_text(report: &paxosd::bench::Report, value_bytes: usize) {
    println!("workload={} clients={} value_bytes={value_bytes} {report}", report.workload, report.clients);
    if report.errors > 0 {
        println!("errors by kind: {}", report.error_kinds);
    }
    for interval in &report.intervals {
        println!("{interval}");
    }
    if let Some(stability) = report.stability() {
        println!("{stability}");
    }
}

fn write_bench_plot(path: &std::path::Path, report: &paxosd::bench::Report) -> u8 {
    let title = format!("paxosctl bench: workload={} clients={}", report.workload, report.clients);
    match std::fs::write(path, paxosd::bench_plot::render(&title, &report.seconds)) {
        Ok(()) => EXIT_OK,
        Err(e) => fail(EXIT_OTHER, &format!("cannot write {}: {e}", path.display())),
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() % 1_000_000_000
}

/// A progress bar on a terminal; plain lines otherwise.
mod progress {
    use indicatif::{ProgressBar, ProgressStyle};
    use paxosd::torture::Counters;
    use std::io::IsTerminal;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    pub struct Progress {
        bar: Option<ProgressBar>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Progress {
        /// Prints a line on stderr, above the bar if there is one.
        pub fn println(&self, line: &str) {
            match &self.bar {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            }
        }

        pub fn finish(mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            if let Some(bar) = self.bar.take() {
                bar.finish_and_clear();
            }
        }
    }

    pub fn torture_line(c: &Counters) -> String {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        format!("ops={} ok={} fail={} info={}", get(&c.ops), get(&c.ok), get(&c.fail), get(&c.info))
    }

    /// Shows `message()` in a bar when stderr is a terminal; otherwise as a
    /// line `LABEL: Ns MESSAGE` every `plain_every`, if given.
    pub fn start(
        label: &'static str,
        duration: Duration,
        plain_every: Option<Duration>,
        message: impl Fn() -> String + Send + 'static,
    ) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let bar = std::io::stderr().is_terminal().then(|| new_bar(duration));
        let (flag, shown) = (stop.clone(), bar.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut last_line = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let elapsed = started.elapsed().as_secs().min(duration.as_secs());
                match (&shown, plain_every) {
                    (Some(bar), _) => {
                        bar.set_position(elapsed);
                        bar.set_message(message());
                    }
                    (None, Some(every)) if last_line.elapsed() >= every => {
                        eprintln!("{label}: {elapsed}s {}", message());
                        last_line = Instant::now();
                    }
                    (None, _) => {}
                }
            }
        });
        Progress { bar, stop, thread: Some(thread) }
    }

    fn new_bar(duration: Duration) -> ProgressBar {
        let bar = ProgressBar::new(duration.as_secs().max(1));
        let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}");
        if let Ok(style) = style {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }
}

fn value_of(s: &str) -> Value {
    Value(s.as_bytes().to_vec())
}

fn fail(code: u8, message: &str) -> u8 {
    eprintln!("paxosctl: {message}");
    code
}

fn client_error(e: ClientError) -> u8 {
    let code = match e {
        ClientError::NoQuorum { .. } => EXIT_NO_QUORUM,
        ClientError::Unknown { .. } => EXIT_NO_QUORUM,
        ClientError::UnknownNode(_) => EXIT_USAGE,
        _ => EXIT_OTHER,
    };
    fail(code, &e.to_string())
}

fn print_version(result: Result<Answer, ClientError>) -> u8 {
    match result {
        Ok(answer) => {
            println!("{}", answer.version);
            EXIT_OK
        }
        Err(e) => client_error(e),
    }
}

fn read(client: &mut Client, key: &str, json: bool) -> u8 {
    let answer = match client.read(&Key::from(key)) {
        Ok(a) => a,
        Err(e) => return client_error(e),
    };
    let value = answer.value.as_ref().map(|v| v.as_bytes());
    if json {
        let text = serde_json::json!({
            "key": key,
            "value": value.map(|v| String::from_utf8_lossy(v).into_owned()),
            "version": answer.version.0,
        });
        println!("{text}");
    } else if let Some(bytes) = value {
        let mut out = std::io::stdout().lock();
        if out.write_all(bytes).and_then(|_| out.write_all(b"\n")).is_err() {
            return EXIT_OTHER;
        }
    }
    EXIT_OK
}

fn cas(client: &mut Client, args: CasArgs) -> u8 {
    let key = Key::from(args.key.as_str());
    let new = value_of(&args.new);
    let result = match (args.expect.expect_value, args.expect.expect_version) {
        (Some(old), _) => client.cas_value(&key, Some(value_of(&old)), new),
        (None, Some(v)) => client.cas_version(&key, Version(v), new),
        (None, None) => client.cas_value(&key, None, new),
    };
    match result {
        Ok(answer) if answer.precondition_held => {
            println!("{}", answer.version);
            EXIT_OK
        }
        Ok(answer) => {
            let version = answer.version;
            let found = match &answer.value {
                _ if !answer.value_known => format!("was at version {version}"),
                Some(v) => format!("is {:?} at version {version}", String::from_utf8_lossy(v.as_bytes())),
                None => format!("is absent at version {version}"),
            };
            fail(EXIT_PRECONDITION, &format!("precondition failed, nothing changed: {key} {found}"))
        }
        Err(e) => client_error(e),
    }
}

fn append(client: &mut Client, key: &str, tail: &str) -> u8 {
    match client.append(&Key::from(key), value_of(tail)) {
        Ok(answer) if answer.precondition_held => {
            println!("{}", answer.version);
            EXIT_OK
        }
        Ok(_) => fail(
            EXIT_PRECONDITION,
            &format!(
                "nothing changed: {key} would exceed the value limit of {} bytes",
                paxosd::limits::VALUE_BYTES_MAX
            ),
        ),
        Err(e) => client_error(e),
    }
}

fn status(client: &mut Client, members: usize) -> u8 {
    let mut answered = 0;
    let results = client.status_all();
    let asked = results.len();
    for (id, addr, result) in results {
        match result {
            Ok(s) => {
                answered += 1;
                let state = if s.catching_up { "CATCHING UP (votes on nothing yet)" } else { "up" };
                println!(
                    "node {id}  {addr}  {state}  epoch={} keys={} in_flight={} sessions={} log_bytes={} \
                     uptime_s={} incarnation={} writes_one_round={} writes_two_rounds={} reads_one_round={}",
                    s.epoch,
                    s.keys,
                    s.requests_in_flight,
                    s.sessions,
                    s.log_bytes,
                    s.uptime_ms / 1000,
                    s.incarnation,
                    s.writes_one_round,
                    s.writes_two_rounds,
                    s.reads_one_round
                );
            }
            Err(_) => println!("node {id}  {addr}  DOWN (no answer)"),
        }
    }
    let majority = members / 2 + 1;
    println!(
        "{answered} of {asked} nodes asked answer; the cluster has {members}, a quorum needs {majority}"
    );
    if answered == 0 { EXIT_OTHER } else { EXIT_OK }
}
