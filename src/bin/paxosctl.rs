//! `paxosctl`: the command line of a paxosd cluster.

use clap::{Args as ClapArgs, Parser, Subcommand};
use paxosd::client::{Answer, Client, ClientError};
use paxosd::config::Config;
use paxosd::types::{Key, NodeId, Value, Version};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[path = "paxosctl/locks.rs"]
mod locks;

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
///   paxosctl read greeting --wait-version 5  # once greeting is at version 5
///   paxosctl watch greeting                  # prints every new version
///   paxosctl --node 2 read greeting --json   # ask node 2, print JSON
///   paxosctl cas greeting bye --expect-value hello
///   paxosctl cas greeting bye --expect-version 3
///   paxosctl delete greeting
///   paxosctl append log ",entry"             # appends; prints the new version
///   paxosctl status
///   paxosctl list user/                      # live keys under user/, with versions
///   paxosctl export --output backup.jsonl    # every live key, one JSON line each
///   paxosctl --config new.toml import backup.jsonl   # writes the keys absent there
///   paxosctl check history.jsonl             # linearizability check
///   paxosctl torture --duration 60           # checked workload
///
/// Exit codes:
///   0  success
///   1  anything else (network error, no node answered, ...)
///   2  usage or config error
///   3  precondition failed: the CAS expectation did not hold (or an append
///      would exceed the value limit), nothing changed; import: some keys
///      were there already and were left as they were
///   4  no quorum within the timeout, or no answer: the message says whether
///      the change was not applied or its outcome is unknown; export, list:
///      fewer than a majority of the nodes could be scanned; read
///      --wait-version: the key did not reach the version in time
///   5  check: the history could not be decided within the search budget
///   6  lock, elect: the lease was lost (the command was sent SIGTERM)
///   7  lock: not acquired within --wait
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
    Propose {
        key: String,
        value: String,
    },
    /// Print KEY's value (nothing, and exit 0, when absent).
    ///
    /// With --wait-version N, wait until KEY is at version N or later, then
    /// print its value then. The node answers as soon as a write makes the
    /// version (nobody polls); exit 4 if --timeout-ms passes first.
    Read {
        key: String,
        /// Print {"key":..,"value":..,"version":..} (value null when absent).
        #[arg(long)]
        json: bool,
        /// Wait until KEY's version is N or later.
        #[arg(long, value_name = "N")]
        wait_version: Option<u64>,
    },
    Watch(WatchArgs),
    /// Compare-and-set: set KEY to NEW if it holds the expected value.
    ///
    /// Give exactly one of --expect-value, --expect-version, --expect-absent.
    /// Prints the new version; exit 3 (and nothing changed) when the
    /// expectation does not hold.
    Cas(CasArgs),
    /// Delete KEY (leaves a tombstone; the version keeps counting).
    Delete {
        key: String,
    },
    /// Append VALUE to KEY's value (to nothing if absent); prints the new
    /// version. Exit 3, nothing changed, if the result would exceed the
    /// value limit.
    Append {
        key: String,
        value: String,
    },
    /// Show which nodes answer, with their id and address.
    ///
    /// Each line shows the node's state (up, CATCHING UP, FROZEN while it
    /// takes part in a membership change, JOINING, NOT A MEMBER), the
    /// configuration it votes in (config=EPOCH:{ids}), a change in progress
    /// (changing_to) and a change it drives (driving).
    Status,
    /// List, add or remove members while the cluster serves.
    ///
    /// A change moves the cluster from one configuration to the next: the
    /// old members stop voting, their keys are copied into a majority of the
    /// new members, and the new configuration is installed at a fresh epoch.
    /// Requests wait (or move to other nodes) for as long as the copy takes.
    /// Any node may drive a change; if it dies, run the same command again:
    /// the next node finishes the change where it stands. One change at a
    /// time: a command that finds another change in progress finishes that
    /// one first, then makes its own.
    ///
    /// A new node must be in paxosd.toml (on every host, with joins = true
    /// on a node that was not a founding member) and running before it is
    /// added: it votes once the change that adds it is installed.
    ///
    /// Examples:
    ///   paxosctl member list
    ///   paxosctl member add 4 127.0.0.1:7004
    ///   paxosctl member remove 2
    #[command(subcommand, verbatim_doc_comment)]
    Member(MemberCommand),
    /// Make a cluster secret (see the README, "Securing a cluster").
    ///
    /// With secret_file set in paxosd.toml, every datagram carries a MAC
    /// under that key, and datagrams without a valid one are dropped.
    ///
    /// Examples:
    ///   paxosctl secret new /etc/paxosd/secret.key
    #[command(subcommand, verbatim_doc_comment)]
    Secret(SecretCommand),
    /// Print the live keys under PREFIX with their versions, in key order.
    ///
    /// One line per key: KEY<TAB>VERSION. A key is printed as it is, except
    /// that a backslash is printed as \\ and each byte of a control
    /// character (tab and newline among them) or of bytes that are not
    /// UTF-8 as \xNN (lowercase hex): every key takes one line, and reads
    /// back unambiguously. With --json, one object per line,
    /// {"key":"..","version":N}, with "key_hex" (lowercase hex) in place of
    /// "key" when the key is not UTF-8. Values are not printed (`export`
    /// prints them). Deleted keys and the cluster's own keys (those starting
    /// with byte 0) are left out. A summary goes to stderr: keys listed, how
    /// many the scan settled and how many were read, nodes scanned.
    ///
    /// What it guarantees (the same as export):
    ///   - every key whose write was acknowledged before the listing began
    ///     is in it, with that version or a newer one (or left out, if a
    ///     newer write deleted it);
    ///   - each version is one its key really held at some moment during
    ///     the listing, and so is each deletion that leaves a key out;
    ///   - keys are captured one by one, each at its own moment: it is not a
    ///     snapshot across keys, and a write made while it runs may or may
    ///     not be in it.
    ///
    /// How: export's scan of every node, started right before PREFIX and
    /// ended once each node's pages pass it: no key outside PREFIX is read,
    /// and only a node's last page holds any. A key a majority of the nodes
    /// agree on is taken from the scan; any other is read through the
    /// cluster, linearizably. A node that does not answer within 2 s is
    /// skipped. Without complete scans from a majority of the nodes the
    /// listing fails (exit 4), and the lines printed until then are not the
    /// whole listing. --node does not apply: every node is scanned.
    ///
    /// Examples:
    ///   paxosctl list user/                  # user/ada<TAB>3, user/bob<TAB>1, ...
    ///   paxosctl list user/ --json           # {"key":"user/ada","version":3}, ...
    ///   paxosctl list | wc -l                # how many live keys
    ///   paxosctl list user/ | cut -f1        # the keys alone
    #[command(verbatim_doc_comment)]
    List {
        /// List only the keys that start with PREFIX, byte for byte (every
        /// key when not given). It is text, as every key on this command
        /// line: a key that is not UTF-8 is listed, but cannot be a prefix.
        #[arg(value_name = "PREFIX", default_value = "", hide_default_value = true)]
        prefix: String,
        /// Print {"key":"..","version":N} per key ("key_hex" when not UTF-8).
        #[arg(long)]
        json: bool,
    },
    /// Write every live key of the cluster, one JSON object per line.
    ///
    /// Each line is {"key":"..","value":"..","version":N}, in key order;
    /// "key_hex" / "value_hex" (lowercase hex) stand in for "key" / "value"
    /// when the bytes are not UTF-8. Deleted keys and the cluster's own keys
    /// (those starting with byte 0) are left out. A summary goes to stderr:
    /// keys written, how many the scan settled and how many were read.
    ///
    /// What it guarantees:
    ///   - every key whose write was acknowledged before the export began is
    ///     in it, with that value or a newer one;
    ///   - each value is one its key really held at some moment during the
    ///     export, never a mix of two writes;
    ///   - keys are captured one by one, each at its own moment: it is not a
    ///     snapshot across keys, and a write made while it runs may or may
    ///     not be in it.
    ///
    /// How: it scans the keys of every node, page by page. A key whose state
    /// a majority of the nodes accepted at one ballot was chosen, and is
    /// taken from the scan; any other key (a write in flight, a node behind)
    /// is read through the cluster, linearizably. A node that does not
    /// answer within 2 s is skipped. Without complete scans from a majority
    /// of the nodes the export fails (exit 4), and --output FILE is not
    /// written. --node does not apply: every node is scanned.
    ///
    /// Examples:
    ///   paxosctl export --output backup.jsonl
    ///   paxosctl export | grep '"key":"shard/'
    #[command(verbatim_doc_comment)]
    Export {
        /// Write to FILE instead of stdout. FILE appears (synced, under its
        /// name) only once the export is complete.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Write the keys of an export file that the cluster does not have.
    ///
    /// Each key is written only if it is absent (a compare-and-set that
    /// expects absence): import never overwrites. A key that is there
    /// already, whatever its value, is left as it is, counted and named;
    /// the other keys are written all the same, and the exit code is 3.
    ///
    /// Versions are not reproduced: the cluster numbers each key's writes
    /// itself, so an imported key is at version 1 in a fresh cluster. The
    /// "version" field is read and ignored, and may be left out.
    ///
    /// The whole file is checked before anything is written: a line that is
    /// not an export line (bad JSON, an unknown field, no key or value, bad
    /// hex, a key or value over the limits, a key starting with byte 0, a
    /// key given twice) is named with its line number, exit 2, and nothing
    /// is written. Blank lines are skipped.
    ///
    /// 8 sessions write at once. If a write fails (no quorum, exit 4),
    /// import stops and says how far it got; run it again: the keys it
    /// wrote are then reported as present with the file's value.
    ///
    /// Examples:
    ///   paxosctl --config old.toml export --output backup.jsonl
    ///   paxosctl --config new.toml import backup.jsonl
    #[command(verbatim_doc_comment)]
    Import {
        #[arg(value_name = "FILE.jsonl")]
        file: PathBuf,
    },
    /// Hold a lock while a command runs.
    ///
    /// Waits until the lock NAME is free (or its holder's lease has run
    /// out), takes it, and runs CMD with the lock's fencing token in
    /// $PAXOSD_LOCK_TOKEN (and its name in $PAXOSD_LOCK_NAME). Renews the
    /// lease while CMD runs, releases the lock when CMD exits, and exits
    /// with CMD's exit code (128 + N if a signal N ended it). SIGINT or
    /// SIGTERM sends CMD SIGTERM. CMD runs in a process group of its own
    /// (every signal goes to all it started; it cannot read the terminal),
    /// and gets SIGTERM should paxosctl die.
    ///
    /// If the lease is lost while CMD runs (no renewal came back within the
    /// TTL: this process was paused, or cut off from a majority), CMD is
    /// sent SIGTERM (SIGKILL after --grace) and the exit code is 6.
    ///
    /// Timing alone cannot stop a holder that was paused past its lease
    /// from acting once it resumes: the token can. Tokens grow with every
    /// acquisition; have what CMD writes to check it (fenced-put does, for
    /// a key of this cluster), and the old holder is refused.
    ///
    /// Examples:
    ///   paxosctl lock backup -- ./run-backup.sh
    ///   paxosctl lock demo --ttl 5 -- sh -c 'echo $PAXOSD_LOCK_TOKEN; sleep 5'
    ///   paxosctl lock deploy --wait 30 -- sh -c \
    ///       'paxosctl fenced-put deploy/state started --token $PAXOSD_LOCK_TOKEN'
    #[command(verbatim_doc_comment)]
    Lock(locks::LockArgs),
    /// Campaign for an office, or observe who holds it.
    ///
    /// `elect NAME VALUE` waits until the office is vacant, takes it,
    /// prints "elected: NAME = VALUE (token T)", and holds it, renewing
    /// its lease, until SIGINT or SIGTERM (it then steps down, exit 0) or
    /// until the lease is lost (exit 6). The token fences the leader's
    /// writes as `lock`'s does.
    ///
    /// `elect NAME --observe` prints each new leader's VALUE, one line
    /// each, and "-" when the office falls vacant (stepped down, or its
    /// lease ran out unrenewed).
    ///
    /// Examples:
    ///   paxosctl elect primary 10.0.0.5:5432 --ttl 5
    ///   paxosctl elect primary --observe
    #[command(verbatim_doc_comment)]
    Elect(locks::ElectArgs),
    /// Write KEY under a lock's fencing token: refused (exit 3) if a holder
    /// with a larger token wrote KEY already.
    ///
    /// KEY holds "TOKEN VALUE". The check is a read and a compare-and-set
    /// on the version read, so two writers cannot slip past it together.
    /// Prints the new version.
    ///
    /// Example:
    ///   paxosctl lock jobs -- sh -c 'paxosctl fenced-put jobs/owner me --token $PAXOSD_LOCK_TOKEN'
    #[command(verbatim_doc_comment)]
    FencedPut(locks::FencedPutArgs),
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
    /// Lock sessions alongside the register clients: each takes one of two
    /// locks (1 s leases), holds it a while renewing, and releases it; some
    /// stall past their lease and must find it lost. Checked: no two
    /// holders at once, tokens strictly growing (lock_violations=0).
    #[arg(long, default_value_t = 0, value_name = "N")]
    lock_sessions: usize,
}

/// Print every new version of KEY as it is acknowledged.
///
/// One line per version, in order: VERSION, a tab, the value. A version
/// whose state is absent (deleted) prints as VERSION alone, without a tab.
/// Values are printed as they are; use --json for values that may hold
/// newlines. Without --from-version the first line is KEY's current state
/// (nothing while KEY was never written).
///
/// What it guarantees:
///   - every version, once, in order, never backwards, as long as the
///     watcher is not more than 64 writes (or 16 KiB of values) behind the
///     writers; the key keeps that much history once it is watched;
///   - beyond that, a line on stderr names the versions missed
///     ("gap: versions A to B ...") and the watch goes on from the oldest
///     version still held, up to the newest;
///   - with --from-version N (pass the last version you printed, to resume
///     after a restart or a lost connection): everything after N that the
///     history still holds, a gap line for the rest, and always the latest
///     state. A key found below N (the cluster recreated, or the key
///     restored from an export) is named on stderr ("KEY is at version C,
///     below N ...") and watched from C on.
///
/// How: it long-polls the key's home node (where writers send the key's
/// writes): the node reads the key linearizably and answers at once when
/// it has versions after the last one printed, else holds the poll until
/// the key changes, or a second passes. A node that stays silent for
/// about 2.3 s is left for the next one, so a node that dies costs one
/// such pause; "listening to node N" goes to stderr each time the node
/// changes. --timeout-ms does not apply: a watch runs until it is stopped
/// (or --count versions were printed).
///
/// Examples:
///   paxosctl watch config/leader
///   paxosctl watch config/leader --from-version 41 --json
///   paxosctl watch counter --count 1     # wait for the next version
#[derive(ClapArgs)]
#[command(verbatim_doc_comment)]
struct WatchArgs {
    key: String,
    /// Print the versions after N (N itself is not printed).
    #[arg(long, value_name = "N")]
    from_version: Option<u64>,
    /// Print {"key":..,"version":..,"value":..} per version (value null
    /// when absent).
    #[arg(long)]
    json: bool,
    /// Exit (0) after printing N versions.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
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

#[derive(Subcommand)]
enum MemberCommand {
    /// Print the newest configuration any node answering votes in, and
    /// each node's view (exit 4 when no node answers).
    List,
    /// Add node ID, reachable at ADDR (host:port, as in paxosd.toml).
    Add {
        id: u16,
        #[arg(value_name = "ADDR")]
        address: String,
    },
    /// Remove node ID. The node stops voting; stop it afterwards.
    Remove { id: u16 },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Write a new random key to FILE (64 hex digits, mode 600). An
    /// existing FILE is never overwritten. Needs no config.
    New {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn run(cli: Cli) -> u8 {
    match &cli.command {
        Command::Check { history } => return check(history),
        Command::Secret(SecretCommand::New { file }) => return new_secret(file),
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
    match &cli.command {
        Command::Export { output } => return backup::export(&config, cli.node, timeout, output.as_deref()),
        Command::Import { file } => return backup::import(&config, cli.node.map(NodeId), timeout, file),
        Command::List { prefix, json } => return backup::list(&config, cli.node, timeout, prefix, *json),
        _ => {}
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
        Command::Read { key, json, wait_version: None } => read(&mut client, &key, json),
        Command::Read { key, json, wait_version: Some(n) } => wait_version(&mut client, &key, json, n),
        Command::Watch(args) => watch(&mut client, &args),
        Command::Cas(args) => cas(&mut client, args),
        Command::Delete { key } => print_version(client.delete(&Key::from(key.as_str()))),
        Command::Append { key, value } => append(&mut client, &key, &value),
        Command::Status => status(&mut client, config.nodes.len()),
        Command::Member(cmd) => member(&config, &mut client, cmd),
        Command::Lock(args) => locks::lock(&mut client, args),
        Command::Elect(args) => locks::elect(&mut client, args),
        Command::FencedPut(args) => locks::fenced_put(&mut client, args),
        Command::Torture(args) => torture(&config, cli.node.map(NodeId), args),
        Command::Bench(args) => bench(&config, cli.node.map(NodeId), timeout, args),
        Command::Check { .. } | Command::Timeline { .. } | Command::Secret(_) => EXIT_USAGE,
        Command::Export { .. } | Command::Import { .. } | Command::List { .. } => EXIT_USAGE,
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
        lock_sessions: args.lock_sessions,
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
            for v in report.locks.iter().flat_map(|l| &l.violations) {
                eprintln!("torture: {v}");
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

/// The `import` help names the number of sessions.
const _: () = assert!(paxosd::limits::IMPORT_SESSIONS == 8);

/// `paxosctl export`, `list` and `import`: the drivers of
/// `paxosd::export`'s merge and formats over the blocking client.
mod backup {
    use super::{EXIT_NO_QUORUM, EXIT_OTHER, EXIT_PRECONDITION, EXIT_USAGE, exit_code, fail};
    use paxosd::client::Client;
    use paxosd::config::Config;
    use paxosd::export::{Decision, Entry, Listed, PageFate, ScanMerge, Step, parse_file};
    use paxosd::limits::{IMPORT_EXISTING_NAMED_MAX, IMPORT_SESSIONS, KEY_BYTES_MAX};
    use paxosd::types::{Key, NodeId, Value, Version};
    use std::fs::File;
    use std::io::{self, BufWriter, Write};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// Why a run stopped: the exit code and what to say.
    struct Failure {
        code: u8,
        message: String,
    }

    impl Failure {
        fn new(code: u8, message: String) -> Failure {
            Failure { code, message }
        }
    }

    /// The live keys a scan command found, and how it found them.
    #[derive(Default)]
    struct Found {
        keys: u64,
        by_scan: u64,
        by_read: u64,
        /// Deleted or absent keys, left out.
        absent: u64,
    }

    /// A command that runs a `ScanMerge` to its end: its name, what it does
    /// with each live key (`verb`, for the summary), and where it writes.
    struct ScanJob<'a, F> {
        name: &'static str,
        verb: &'static str,
        merge: ScanMerge,
        /// A file, or stdout.
        output: Option<&'a Path>,
        /// Writes one live key.
        write: F,
    }

    pub fn export(config: &Config, node: Option<u16>, timeout: Duration, output: Option<&Path>) -> u8 {
        let merge = ScanMerge::new(&config.member_ids());
        let write = |out: &mut dyn Write, key, value, version| {
            writeln!(out, "{}", Entry { key, value, version: Some(version) }.to_line())
        };
        run_scan(config, node, timeout, ScanJob { name: "export", verb: "written", merge, output, write })
    }

    pub fn list(config: &Config, node: Option<u16>, timeout: Duration, prefix: &str, json: bool) -> u8 {
        if prefix.len() > KEY_BYTES_MAX {
            let message =
                format!("the prefix has {} bytes, and no key has more than {KEY_BYTES_MAX}", prefix.len());
            return fail(EXIT_USAGE, &message);
        }
        let merge = ScanMerge::under_prefix(&config.member_ids(), prefix.as_bytes());
        let write = |out: &mut dyn Write, key, _value, version| {
            let listed = Listed { key, version };
            writeln!(out, "{}", if json { listed.to_json() } else { listed.to_text() })
        };
        run_scan(config, node, timeout, ScanJob { name: "list", verb: "listed", merge, output: None, write })
    }

    /// Runs `job`'s merge, writing each live key, and says on stderr what it
    /// found (stdout holds the keys alone).
    fn run_scan<F>(config: &Config, node: Option<u16>, timeout: Duration, mut job: ScanJob<F>) -> u8
    where
        F: FnMut(&mut dyn Write, Key, Value, Version) -> io::Result<()>,
    {
        if node.is_some() {
            return fail(EXIT_USAGE, &format!("{} scans every node: --node does not apply to it", job.name));
        }
        let mut client = match Client::new(config, None, timeout) {
            Ok(client) => client,
            Err(e) => return fail(EXIT_OTHER, &e.to_string()),
        };
        let mut sink = match Sink::open(job.output) {
            Ok(sink) => sink,
            Err(e) => return fail(EXIT_OTHER, &e),
        };
        let started = Instant::now();
        let out = sink.writer();
        let write = |key, value, version| {
            (job.write)(out, key, value, version)
                .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot write: {e}")))
        };
        let result = decide_keys(&mut client, &mut job.merge, write);
        let result = result.and_then(|found| sink.commit().map(|()| found));
        let found = match result {
            Ok(found) => found,
            Err(failure) => return fail(failure.code, &format!("{} failed: {}", job.name, failure.message)),
        };
        let members = config.member_ids().len();
        let scanned = members - job.merge.dropped().len();
        eprintln!(
            "{}: {} keys {} ({} settled by the scan, {} by a read); {} deleted or absent keys left out; \
             {scanned} of {members} nodes scanned in full; {:.2} s",
            job.name,
            found.keys,
            job.verb,
            found.by_scan,
            found.by_read,
            found.absent,
            started.elapsed().as_secs_f64()
        );
        super::EXIT_OK
    }

    /// Runs the merge to its end, handing each live key to `write` as it is
    /// decided.
    fn decide_keys(
        client: &mut Client,
        merge: &mut ScanMerge,
        mut write: impl FnMut(Key, Value, Version) -> Result<(), Failure>,
    ) -> Result<Found, Failure> {
        let mut found = Found::default();
        loop {
            match merge.poll() {
                Step::Scan { node, after } => scan(client, merge, node, after),
                Step::Decided(decision) => {
                    let (key, value, version, by_scan) = resolve(client, decision)?;
                    let Some(value) = value else {
                        found.absent += 1;
                        continue;
                    };
                    write(key, value, version)?;
                    found.keys += 1;
                    if by_scan {
                        found.by_scan += 1;
                    } else {
                        found.by_read += 1;
                    }
                }
                Step::Finished(Ok(())) => return Ok(found),
                Step::Finished(Err(too_few)) => {
                    return Err(Failure::new(EXIT_NO_QUORUM, too_few.to_string()));
                }
            }
        }
    }

    fn scan(client: &mut Client, merge: &mut ScanMerge, node: NodeId, after: Option<Key>) {
        match client.scan_page(node, after.as_ref()) {
            Ok((slots, done)) => {
                if let PageFate::Refused(bad) = merge.handle_page(node, &after, slots, done) {
                    eprintln!(
                        "paxosctl: node {node} sent a malformed scan page ({bad:?}); going on without it"
                    );
                }
            }
            Err(e) => {
                eprintln!("paxosctl: node {node} did not answer the scan ({e}); going on without it");
                merge.handle_silent(node);
            }
        }
    }

    /// A decided key's state (`None` when deleted or absent), and whether
    /// the scan settled it: a key the nodes disagree on is read.
    fn resolve(
        client: &mut Client,
        decision: Decision,
    ) -> Result<(Key, Option<Value>, Version, bool), Failure> {
        match decision {
            Decision::Chosen { key, value, version } => Ok((key, value, version, true)),
            Decision::Read { key } => match client.read(&key) {
                Ok(answer) => Ok((key, answer.value, answer.version, false)),
                Err(e) => Err(Failure::new(exit_code(&e), format!("reading {}: {e}", named(&key)))),
            },
        }
    }

    /// Where an export goes: stdout, or a file that appears under its name
    /// only once it is complete and synced.
    enum Sink {
        Stdout(BufWriter<io::Stdout>),
        File { writer: BufWriter<File>, partial: PathBuf, path: PathBuf, committed: bool },
    }

    impl Sink {
        fn open(output: Option<&Path>) -> Result<Sink, String> {
            let Some(path) = output else { return Ok(Sink::Stdout(BufWriter::new(io::stdout()))) };
            let mut partial = path.as_os_str().to_owned();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let file =
                File::create(&partial).map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
            let writer = BufWriter::new(file);
            Ok(Sink::File { writer, partial, path: path.to_path_buf(), committed: false })
        }

        fn writer(&mut self) -> &mut dyn Write {
            match self {
                Sink::Stdout(writer) => writer,
                Sink::File { writer, .. } => writer,
            }
        }

        /// Flushes; a file is synced, then renamed to its name.
        fn commit(&mut self) -> Result<(), Failure> {
            let failed = |e: io::Error| Failure::new(EXIT_OTHER, format!("cannot write: {e}"));
            match self {
                Sink::Stdout(writer) => writer.flush().map_err(failed),
                Sink::File { writer, partial, path, committed } => {
                    writer.flush().and_then(|()| writer.get_ref().sync_all()).map_err(failed)?;
                    std::fs::rename(&*partial, &*path).map_err(failed)?;
                    *committed = true;
                    Ok(())
                }
            }
        }
    }

    impl Drop for Sink {
        /// An export that did not complete leaves no file behind.
        fn drop(&mut self) {
            if let Sink::File { partial, committed: false, .. } = self {
                let _ = std::fs::remove_file(partial);
            }
        }
    }

    /// What an import did.
    #[derive(Default)]
    struct Imported {
        written: usize,
        /// Keys that were there already, left as they were ...
        present: Vec<Key>,
        /// ... and how many of them held the file's value.
        present_same: usize,
        failure: Option<Failure>,
    }

    impl Imported {
        fn add(&mut self, other: Imported) {
            self.written += other.written;
            self.present.extend(other.present);
            self.present_same += other.present_same;
            if self.failure.is_none() {
                self.failure = other.failure;
            }
        }
    }

    pub fn import(config: &Config, node: Option<NodeId>, timeout: Duration, path: &Path) -> u8 {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => return fail(EXIT_USAGE, &format!("cannot read {}: {e}", path.display())),
        };
        let entries = match parse_file(&bytes) {
            Ok(entries) => entries,
            Err(e) => return fail(EXIT_USAGE, &format!("{}: {e}; nothing was written", path.display())),
        };
        let started = Instant::now();
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let sessions = IMPORT_SESSIONS.min(entries.len()).max(1);
        let mut imported = Imported::default();
        std::thread::scope(|scope| {
            let session = || import_session(config, node, timeout, &entries, &next, &stop);
            let threads: Vec<_> = (0..sessions).map(|_| scope.spawn(session)).collect();
            for thread in threads {
                // A session's thread does not panic; if it did, its count is lost.
                imported.add(thread.join().unwrap_or_default());
            }
        });
        let present = match imported.present.len() {
            0 => "0 present already".to_string(),
            n => format!(
                "{n} present already and left as they were ({} of them with the file's value)",
                imported.present_same
            ),
        };
        println!(
            "import: {} keys in {}: {} written, {present}; {:.2} s",
            entries.len(),
            path.display(),
            imported.written,
            started.elapsed().as_secs_f64()
        );
        judge(imported, entries.len())
    }

    /// One session's share of the writes: entries in turn, until none is
    /// left or a session failed.
    fn import_session(
        config: &Config,
        node: Option<NodeId>,
        timeout: Duration,
        entries: &[Entry],
        next: &AtomicUsize,
        stop: &AtomicBool,
    ) -> Imported {
        let mut done = Imported::default();
        let mut client = match Client::new(config, node, timeout) {
            Ok(client) => client,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                done.failure = Some(Failure::new(exit_code(&e), e.to_string()));
                return done;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            let Some(entry) = entries.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
            match client.cas_value(&entry.key, None, entry.value.clone()) {
                Ok(answer) if answer.precondition_held => done.written += 1,
                Ok(answer) => {
                    if answer.value_known && answer.value.as_ref() == Some(&entry.value) {
                        done.present_same += 1;
                    }
                    done.present.push(entry.key.clone());
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    let message = format!("writing {}: {e}", named(&entry.key));
                    done.failure = Some(Failure::new(exit_code(&e), message));
                    break;
                }
            }
        }
        done
    }

    /// The exit code: a failure's, else 3 when some keys were present.
    fn judge(mut imported: Imported, total: usize) -> u8 {
        if let Some(failure) = imported.failure {
            let untried = total - imported.written - imported.present.len();
            let message = format!(
                "import stopped: {}; {untried} keys were not written (run the same import again to \
                 finish: the keys written so far will be reported as present)",
                failure.message
            );
            return fail(failure.code, &message);
        }
        if imported.present.is_empty() {
            return super::EXIT_OK;
        }
        imported.present.sort();
        let shown: Vec<String> = imported.present.iter().take(IMPORT_EXISTING_NAMED_MAX).map(named).collect();
        let more = imported.present.len() - shown.len();
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        let message = format!(
            "{} keys were present already and were left as they were: {}{more}",
            imported.present.len(),
            shown.join(", ")
        );
        fail(EXIT_PRECONDITION, &message)
    }

    /// A key as a quoted string (bytes that are not UTF-8 shown as U+FFFD).
    fn named(key: &Key) -> String {
        format!("{:?}", String::from_utf8_lossy(&key.0))
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
    fail(exit_code(&e), &e.to_string())
}

fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::NoQuorum { .. } => EXIT_NO_QUORUM,
        ClientError::Unknown { .. } => EXIT_NO_QUORUM,
        ClientError::WaitTimedOut { .. } => EXIT_NO_QUORUM,
        ClientError::UnknownNode(_) => EXIT_USAGE,
        _ => EXIT_OTHER,
    }
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
    match client.read(&Key::from(key)) {
        Ok(a) => print_value(key, a.value.as_ref(), a.version, json),
        Err(e) => client_error(e),
    }
}

fn wait_version(client: &mut Client, key: &str, json: bool, version: u64) -> u8 {
    match client.wait_version(&Key::from(key), Version(version)) {
        Ok(state) => print_value(key, state.value.as_ref(), state.version, json),
        Err(e) => client_error(e),
    }
}

fn watch(client: &mut Client, args: &WatchArgs) -> u8 {
    use paxosd::core::watch::WatchEvent;
    let key = Key::from(args.key.as_str());
    let mut printed = 0u64;
    let mut failed = false;
    let result = client.watch(&key, args.from_version.map(Version), |event| match event {
        WatchEvent::Version(state) => {
            printed += 1;
            failed = watch_line(&args.key, &state, args.json).is_err();
            !failed && args.count.is_none_or(|count| printed < count)
        }
        WatchEvent::Gap { from, to } => {
            eprintln!(
                "paxosctl: watch: gap: versions {from} to {to} of {} were overwritten before they \
                 could be read (more writes than the key's history keeps); going on from version {}",
                args.key,
                to.0.saturating_add(1)
            );
            true
        }
        WatchEvent::Listening(node) => {
            eprintln!("paxosctl: watch: listening to node {node}");
            true
        }
        WatchEvent::Behind { current, after } => {
            eprintln!(
                "paxosctl: watch: {} is at version {current}, below {after}: it was recreated or \
                 restored; going on from version {current}",
                args.key
            );
            true
        }
    });
    match result {
        Err(e) => client_error(e),
        // stdout is gone (a closed pipe): nobody reads any more.
        Ok(()) if failed => EXIT_OTHER,
        Ok(()) => EXIT_OK,
    }
}

/// One version of a watch: `VERSION\tVALUE`, `VERSION` alone when absent.
fn watch_line(key: &str, state: &paxosd::types::PastState, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let value = state.value.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let text = serde_json::json!({ "key": key, "version": state.version.0, "value": value });
        writeln!(out, "{text}")?;
    } else {
        write!(out, "{}", state.version)?;
        if let Some(value) = &state.value {
            out.write_all(b"\t")?;
            out.write_all(value.as_bytes())?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Prints a key's value as `read` does.
fn print_value(key: &str, value: Option<&Value>, version: Version, json: bool) -> u8 {
    let value = value.map(|v| v.as_bytes());
    if json {
        let text = serde_json::json!({
            "key": key,
            "value": value.map(|v| String::from_utf8_lossy(v).into_owned()),
            "version": version.0,
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

fn new_secret(file: &std::path::Path) -> u8 {
    match paxosd::auth::write_new_secret(file) {
        Ok(()) => {
            println!("wrote a new cluster secret to {} (mode 600)", file.display());
            EXIT_OK
        }
        Err(e) => fail(EXIT_OTHER, &format!("cannot write {}: {e}", file.display())),
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
                println!(
                    "node {id}  {addr}  {}  config={}:{} {}epoch={} keys={} in_flight={} sessions={} log_bytes={} \
                     uptime_s={} incarnation={} writes_one_round={} writes_two_rounds={} reads_one_round={} \
                     secret={} dropped_unauthenticated={} dropped_malformed={} ballots_out_of_range={} \
                     requests_expired={}",
                    node_state(&s),
                    s.config.epoch,
                    s.config.members,
                    change_text(&s),
                    s.epoch,
                    s.keys,
                    s.requests_in_flight,
                    s.sessions,
                    s.log_bytes,
                    s.uptime_ms / 1000,
                    s.incarnation,
                    s.writes_one_round,
                    s.writes_two_rounds,
                    s.reads_one_round,
                    if s.guarded.secret { "on" } else { "OFF" },
                    s.guarded.unauthenticated,
                    s.guarded.malformed,
                    s.guarded.ballots_out_of_range,
                    s.guarded.requests_expired
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

/// How a node stands, in a word or two.
fn node_state(s: &paxosd::wire::NodeStatus) -> &'static str {
    if s.catching_up {
        "CATCHING UP (votes on nothing yet)"
    } else if s.frozen.is_some() {
        "FROZEN (in a membership change)"
    } else if s.config.members.is_empty() {
        "JOINING (votes once added)"
    } else if !s.config.members.contains(s.node) {
        "NOT A MEMBER"
    } else {
        "up"
    }
}

/// A membership change the node takes part in or drives, if any.
fn change_text(s: &paxosd::wire::NodeStatus) -> String {
    let mut text = String::new();
    if let Some(change) = &s.frozen {
        text += &format!("changing_to={}:{} ", change.epoch, change.to);
    }
    if let Some(driving) = &s.driving {
        text += &format!("driving=\"{driving}\" ");
    }
    text
}

fn member(config: &Config, client: &mut Client, cmd: MemberCommand) -> u8 {
    use paxosd::members::{Member, Members};
    let statuses: Vec<_> = client.status_all().into_iter().filter_map(|(_, _, s)| s.ok()).collect();
    // A node joining answers with no configuration: it names no members.
    let configs = statuses.iter().map(|s| s.config.clone()).filter(|c| !c.members.is_empty());
    let Some(current) = configs.max_by_key(|c| c.epoch) else {
        return fail(EXIT_OTHER, "no node answered: cannot tell the current members");
    };
    let mut list: Vec<Member> = current.members.iter().cloned().collect();
    match cmd {
        MemberCommand::List => {
            println!("epoch {}: {} members", current.epoch, list.len());
            for m in &list {
                println!("  node {}  {}", m.id, m.address);
            }
            for s in statuses.iter().filter(|s| s.frozen.is_some() || s.config.epoch != current.epoch) {
                println!(
                    "  node {} sees {}: {}config={}:{}",
                    s.node,
                    node_state(s),
                    change_text(s),
                    s.config.epoch,
                    s.config.members
                );
            }
            return EXIT_OK;
        }
        MemberCommand::Add { id, address } => {
            let id = NodeId(id);
            if address.parse::<std::net::SocketAddr>().is_err() {
                return fail(
                    EXIT_USAGE,
                    &format!("{address} is not an address (host:port, e.g. 127.0.0.1:7004)"),
                );
            }
            match config.node(id) {
                Some(n) if n.address.to_string() == address => {}
                Some(n) => {
                    return fail(
                        EXIT_USAGE,
                        &format!("node {id} is at {} in {}, not {address}", n.address, config.path.display()),
                    );
                }
                None => {
                    return fail(
                        EXIT_USAGE,
                        &format!(
                            "node {id} is not in {}: add it there on every host first (joins = true)",
                            config.path.display()
                        ),
                    );
                }
            }
            if let Some(m) = current.members.get(id) {
                if m.address == address {
                    println!("node {id} is a member already (epoch {})", current.epoch);
                    return EXIT_OK;
                }
                return fail(
                    EXIT_USAGE,
                    &format!("node {id} is a member at {} already; remove it first", m.address),
                );
            }
            list.push(Member { id, address });
        }
        MemberCommand::Remove { id } => {
            let id = NodeId(id);
            if !current.members.contains(id) {
                println!("node {id} is not a member (epoch {})", current.epoch);
                return EXIT_OK;
            }
            list.retain(|m| m.id != id);
            if list.is_empty() {
                return fail(EXIT_USAGE, "cannot remove the last member");
            }
        }
    }
    let Some(target) = Members::new(list) else {
        return fail(EXIT_USAGE, "a member id appears twice");
    };
    let within = Duration::from_millis(paxosd::limits::MEMBER_CHANGE_TIMEOUT_MS * 2);
    match client.change_members(&target, within) {
        Ok(config) => {
            println!("members {} installed at epoch {}", config.members, config.epoch);
            EXIT_OK
        }
        Err(e) => fail(EXIT_NO_QUORUM, &format!("{e}; run the command again to resume the change")),
    }
}
