//! `paxosctl bench`: closed-loop load from many client sessions for a
//! while, with throughput and latency percentiles (an HDR histogram, so the
//! tail is exact to three significant digits), overall, per 10-second
//! interval and per second. The sessions all run on one event loop
//! (`loadgen`), so the generator stays cheap at hundreds of clients.
//!
//! A run has up to three parts: the read workload first writes every key
//! once (the prefill); then the load runs for the warm-up, counted in
//! nothing; then for the timed part, which every figure describes.

use crate::change::Change;
use crate::config::Config;
use crate::core::client::{Ending, NotRun, Unknown};
use crate::loadgen::{self, LoadError, LoadGen, Then};
use crate::types::{Key, NodeId, Value, Version};
use crate::wire::Refusal;
use hdrhistogram::Histogram;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The length of one reporting interval.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The length of one entry of the per-second record (`Report::seconds`).
pub const SECOND: Duration = Duration::from_secs(1);

/// How far back from the end of a run the stability check looks.
pub const STABILITY_WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Each client puts its own keys, one after another.
    Put,
    /// Each client reads its own keys (written once before the warm-up).
    Read,
    /// Each client compare-and-sets its own keys on the version of its last
    /// answer for the key (0, absent, at first: the keys are fresh).
    Cas,
    /// Each client alternates a put of one of its own keys and a read of
    /// the key it just put, then moves on to its next key.
    Mixed,
    /// All clients put one key: every write contends.
    Contended,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Read => "read",
            Workload::Cas => "cas",
            Workload::Mixed => "mixed",
            Workload::Contended => "contended",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub clients: usize,
    /// The timed part.
    pub duration: Duration,
    /// Load before the timed part, counted in nothing.
    pub warmup: Duration,
    pub workload: Workload,
    pub value_bytes: usize,
    pub keys_per_client: usize,
    pub timeout: Duration,
    pub node: Option<NodeId>,
    pub key_prefix: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            clients: 8,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            workload: Workload::Put,
            value_bytes: 100,
            keys_per_client: 16,
            timeout: Duration::from_millis(crate::limits::REQUEST_TIMEOUT_MS_DEFAULT),
            node: None,
            key_prefix: "bench-".to_string(),
        }
    }
}

/// Running totals of the timed part, readable from another thread (for a
/// progress bar).
#[derive(Default, Debug)]
pub struct Counters {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    /// True while the warm-up runs.
    pub warming_up: AtomicBool,
}

impl Counters {
    pub fn line(&self) -> String {
        if self.warming_up.load(Ordering::Relaxed) {
            return "warming up".to_string();
        }
        format!("ops={} errors={}", self.ops.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed))
    }
}

/// Operations that did not end `Done`, by how they ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Errors {
    /// Refused by every node asked, the last as overloaded.
    pub not_run_overloaded: u64,
    /// Refused for another reason (shutting down, over a limit).
    pub not_run_refused: u64,
    pub not_run_no_quorum: u64,
    pub unreachable: u64,
    pub unknown_no_answer: u64,
    pub unknown_indeterminate: u64,
}

impl Errors {
    fn count(&mut self, ending: &Ending) {
        let counter = match ending {
            Ending::Done(_) => return,
            Ending::NotRun(NotRun::Refused(Refusal::Overloaded)) => &mut self.not_run_overloaded,
            Ending::NotRun(NotRun::Refused(_)) => &mut self.not_run_refused,
            Ending::NotRun(NotRun::NoQuorum) => &mut self.not_run_no_quorum,
            Ending::NotRun(NotRun::Unreachable) => &mut self.unreachable,
            Ending::Unknown(Unknown::NoAnswer) => &mut self.unknown_no_answer,
            Ending::Unknown(Unknown::Indeterminate) => &mut self.unknown_indeterminate,
        };
        *counter += 1;
    }

    /// Every kind, with its count (zero included).
    pub fn by_kind(&self) -> [(&'static str, u64); 6] {
        [
            ("not_run_overloaded", self.not_run_overloaded),
            ("not_run_refused", self.not_run_refused),
            ("not_run_no_quorum", self.not_run_no_quorum),
            ("unreachable", self.unreachable),
            ("unknown_no_answer", self.unknown_no_answer),
            ("unknown_indeterminate", self.unknown_indeterminate),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_kind().iter().map(|(_, n)| n).sum()
    }
}

/// The kinds that occurred: `not_run_no_quorum=3 unknown_no_answer=1`.
impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<String> =
            self.by_kind().iter().filter(|(_, n)| *n > 0).map(|(kind, n)| format!("{kind}={n}")).collect();
        f.write_str(&kinds.join(" "))
    }
}

/// The operations that ended within one interval of the timed part.
#[derive(Debug)]
pub struct Interval {
    /// 1 for the first interval.
    pub number: u32,
    /// Since the start of the timed part.
    pub from: Duration,
    pub to: Duration,
    pub ops: u64,
    pub errors: u64,
    pub latency_us: Histogram<u64>,
}

impl Interval {
    fn new(number: u32, from: Duration, to: Duration) -> Interval {
        Interval { number, from, to, ops: 0, errors: 0, latency_us: new_histogram() }
    }

    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.to.saturating_sub(self.from).as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        write!(
            f,
            "interval={} t={:.0}..{:.0}s ops={} ops_per_s={:.0} errors={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            self.number,
            self.from.as_secs_f64(),
            self.to.as_secs_f64(),
            self.ops,
            self.ops_per_second(),
            self.errors,
            ms(0.5),
            ms(0.99),
            self.latency_us.max() as f64 / 1000.0
        )
    }
}

/// The operations that ended within one second of the timed part: counts
/// and three latency figures only, so that a long run stays small.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Second {
    /// Operations that ended `Done` (failed preconditions included).
    pub ops: u64,
    pub errors: u64,
    pub precondition_failed: u64,
    /// Latencies of the second's `ops`; 0 when it had none.
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// The per-second record being built: the seconds closed so far, and the
/// open one with a histogram that is emptied as each second closes.
#[derive(Debug)]
struct Seconds {
    closed: Vec<Second>,
    current: Second,
    /// The end of the open second, since the start of the timed part.
    current_to: Duration,
    latency_us: Histogram<u64>,
}

impl Seconds {
    fn new() -> Seconds {
        Seconds {
            closed: Vec::new(),
            current: Second::default(),
            current_to: SECOND,
            latency_us: new_histogram(),
        }
    }

    /// Closes every second that ended by `elapsed`, but never the one that
    /// reaches `duration`: it stays open for the operations still in flight.
    fn roll(&mut self, elapsed: Duration, duration: Duration) {
        while elapsed >= self.current_to && self.current_to < duration {
            self.close();
            self.current_to += SECOND;
        }
    }

    fn close(&mut self) {
        let mut second = std::mem::take(&mut self.current);
        if second.ops > 0 {
            second.p50_us = self.latency_us.value_at_quantile(0.5);
            second.p99_us = self.latency_us.value_at_quantile(0.99);
            second.max_us = self.latency_us.max();
        }
        self.latency_us.reset();
        self.closed.push(second);
    }

    fn into_seconds(mut self) -> Vec<Second> {
        self.close();
        self.closed
    }
}

/// Throughput at the end of a run against the whole run: a ratio well below
/// 1 means the cluster slowed down as the run went on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stability {
    /// The median of every interval's ops/s.
    pub median_ops_per_s: f64,
    /// The lowest ops/s of the intervals of the last `STABILITY_WINDOW` of
    /// the run.
    pub min_last_minute_ops_per_s: f64,
}

impl Stability {
    pub fn ratio(&self) -> f64 {
        if self.median_ops_per_s > 0.0 { self.min_last_minute_ops_per_s / self.median_ops_per_s } else { 0.0 }
    }
}

impl fmt::Display for Stability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "intervals: median_ops_per_s={:.0} min_last_minute_ops_per_s={:.0} ratio={:.2}",
            self.median_ops_per_s,
            self.min_last_minute_ops_per_s,
            self.ratio()
        )
    }
}

/// The timed part of a run. An operation counts where it ended: those that
/// ended in the warm-up count nowhere, and those still in flight when the
/// duration was up count in the last interval and the last second.
#[derive(Debug)]
pub struct Report {
    pub workload: Workload,
    pub clients: usize,
    /// Operations that ended `Done`, failed preconditions included.
    pub ops: u64,
    pub errors: u64,
    pub error_kinds: Errors,
    /// Compare-and-sets whose version was not the key's: not errors.
    pub precondition_failed: u64,
    /// From the start of the timed part to the end of its last operation.
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
    pub intervals: Vec<Interval>,
    /// One entry per second of the duration; their `ops` sum to `ops`.
    pub seconds: Vec<Second>,
    /// What the event loop did during the warm-up and the timed part.
    pub load: loadgen::Stats,
}

impl Report {
    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// `None` when the run had no interval.
    pub fn stability(&self) -> Option<Stability> {
        let mut rates: Vec<f64> = self.intervals.iter().map(Interval::ops_per_second).collect();
        rates.sort_by(f64::total_cmp);
        let median = match rates.len() {
            0 => return None,
            n if n % 2 == 1 => rates[n / 2],
            n => (rates[n / 2 - 1] + rates[n / 2]) / 2.0,
        };
        // The intervals of the last minute: the run's own length runs a
        // little past the last interval boundary, so count intervals.
        let last = (STABILITY_WINDOW.as_secs() / INTERVAL.as_secs()) as usize;
        let recent = self.intervals.iter().rev().take(last).map(Interval::ops_per_second);
        let min = recent.min_by(f64::total_cmp).unwrap_or(median);
        Some(Stability { median_ops_per_s: median, min_last_minute_ops_per_s: min })
    }

    /// The report as one JSON object (`paxosctl bench --json`).
    pub fn json(&self) -> serde_json::Value {
        let kinds: serde_json::Map<String, serde_json::Value> =
            self.error_kinds.by_kind().iter().map(|(kind, n)| (kind.to_string(), (*n).into())).collect();
        let per_second_ms = |us: fn(&Second) -> u64| -> Vec<Option<f64>> {
            self.seconds.iter().map(|s| (s.ops > 0).then(|| us(s) as f64 / 1000.0)).collect()
        };
        serde_json::json!({
            "workload": self.workload.name(),
            "clients": self.clients,
            "ops": self.ops,
            "errors": self.errors,
            "errors_by_kind": kinds,
            "precondition_failed": self.precondition_failed,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "ops_per_s": self.ops_per_second(),
            "p50_ms": self.ms(0.5),
            "p90_ms": self.ms(0.9),
            "p99_ms": self.ms(0.99),
            "p999_ms": self.ms(0.999),
            "max_ms": self.latency_us.max() as f64 / 1000.0,
            "per_second": self.seconds.iter().map(|s| s.ops).collect::<Vec<u64>>(),
            "per_second_errors": self.seconds.iter().map(|s| s.errors).collect::<Vec<u64>>(),
            "per_second_p50_ms": per_second_ms(|s| s.p50_us),
            "per_second_p99_ms": per_second_ms(|s| s.p99_us),
        })
    }
}

/// `ops=.. errors=.. [precondition_failed=..] ops_per_s=.. p50_ms=..`; the
/// failed preconditions only for the cas workload.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ops={} errors={}", self.ops, self.errors)?;
        if self.workload == Workload::Cas {
            write!(f, " precondition_failed={}", self.precondition_failed)?;
        }
        write!(
            f,
            " ops_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
            self.ops_per_second(),
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.ms(0.999),
            self.latency_us.max() as f64 / 1000.0
        )
    }
}

#[derive(Debug)]
pub enum BenchError {
    Load(LoadError),
    /// A write of the read workload's prefill did not succeed.
    Prefill {
        key: String,
        errors: Errors,
    },
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Load(e) => write!(f, "{e}"),
            BenchError::Prefill { key, errors } => {
                write!(f, "writing the keys to read failed ({errors}), first at key {key}")
            }
        }
    }
}

impl std::error::Error for BenchError {}

impl From<LoadError> for BenchError {
    fn from(e: LoadError) -> Self {
        BenchError::Load(e)
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 100 s, three significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Runs the load: for the read workload, first writes every key once; then
/// the warm-up and the timed part, closed-loop. `on_interval` sees each
/// interval as it closes; the last one closes when the last operation in
/// flight ended.
pub fn run(
    config: &Config,
    options: &Options,
    counters: &Counters,
    on_interval: &mut dyn FnMut(&Interval),
) -> Result<Report, BenchError> {
    let sessions = options.clients.max(1);
    let load_options = loadgen::Options { sessions, node: options.node, timeout: options.timeout };
    let mut load = LoadGen::new(config, &load_options)?;
    let keys = keys_of(options, sessions);
    let value = Value(vec![b'x'; options.value_bytes]);
    if options.workload == Workload::Read {
        let mut prefill =
            Prefill { keys: &keys, written: vec![0; sessions], value: value.clone(), failed: None };
        load.run(&mut prefill)?;
        if let Some((key, errors)) = prefill.failed {
            return Err(BenchError::Prefill { key, errors });
        }
    }
    let plan = Plan::new(options.workload, keys, value);
    let mut closed = ClosedLoop::new(options, plan, counters, on_interval);
    let stats = load.run(&mut closed)?;
    Ok(closed.into_report(Instant::now(), stats))
}

/// Each session's keys: its own `keys_per_client`, or the one hot key.
fn keys_of(options: &Options, sessions: usize) -> Vec<Vec<Key>> {
    let prefix = &options.key_prefix;
    (0..sessions)
        .map(|s| match options.workload {
            Workload::Contended => vec![Key(format!("{prefix}hot").into_bytes())],
            Workload::Put | Workload::Read | Workload::Cas | Workload::Mixed => {
                (0..options.keys_per_client.max(1))
                    .map(|k| Key(format!("{prefix}c{s}-k{k}").into_bytes()))
                    .collect()
            }
        })
        .collect()
}

/// Writes each session's keys once, before the reads are timed.
struct Prefill<'a> {
    keys: &'a [Vec<Key>],
    written: Vec<usize>,
    value: Value,
    /// The first key whose write failed, and every failure.
    failed: Option<(String, Errors)>,
}

impl loadgen::Workload for Prefill<'_> {
    fn next(&mut self, session: usize, _now: Instant) -> Option<(Key, Change)> {
        let key = self.keys.get(session)?.get(self.written[session])?;
        self.written[session] += 1;
        Some((key.clone(), Change::Put(self.value.clone())))
    }

    fn ended(&mut self, session: usize, ending: &Ending, _latency: Duration, _now: Instant) -> Then {
        if !matches!(ending, Ending::Done(_)) {
            let written = self.written[session].saturating_sub(1);
            let key = self.keys.get(session).and_then(|keys| keys.get(written));
            let text = key.map(|k| String::from_utf8_lossy(k.as_bytes()).into_owned()).unwrap_or_default();
            self.failed.get_or_insert((text, Errors::default())).1.count(ending);
        }
        Then::Keep
    }
}

/// What one session sends next, and what it remembers of its answers.
#[derive(Debug)]
struct SessionPlan {
    keys: Vec<Key>,
    /// Operations started so far.
    started: u64,
    /// The index in `keys` of the operation in flight.
    in_flight: usize,
    /// cas only: each key's version in the last answer about it.
    versions: Vec<Version>,
}

/// What every session sends: the workload's operations on its keys, in
/// turn.
#[derive(Debug)]
struct Plan {
    workload: Workload,
    value: Value,
    sessions: Vec<SessionPlan>,
}

impl Plan {
    fn new(workload: Workload, keys: Vec<Vec<Key>>, value: Value) -> Plan {
        let sessions = keys
            .into_iter()
            .map(|keys| {
                // Fresh keys are absent: version 0 is the first expectation.
                let versions = match workload {
                    Workload::Cas => vec![Version(0); keys.len()],
                    _ => Vec::new(),
                };
                SessionPlan { keys, started: 0, in_flight: 0, versions }
            })
            .collect();
        Plan { workload, value, sessions }
    }

    /// Session `session`'s next operation.
    fn next(&mut self, session: usize) -> Option<(Key, Change)> {
        let s = self.sessions.get_mut(session)?;
        let (n, len) = (s.started, s.keys.len().max(1) as u64);
        s.started += 1;
        let put = Change::Put(self.value.clone());
        let (index, change) = match self.workload {
            Workload::Put | Workload::Contended => (n % len, put),
            Workload::Read => (n % len, Change::Read),
            // A put, then a read of the same key.
            Workload::Mixed => ((n / 2) % len, if n % 2 == 0 { put } else { Change::Read }),
            Workload::Cas => {
                let expect = s.versions.get((n % len) as usize).copied().unwrap_or_default();
                (n % len, Change::CasVersion { expect, new: self.value.clone() })
            }
        };
        s.in_flight = index as usize;
        Some((s.keys.get(s.in_flight)?.clone(), change))
    }

    /// Learns from session `session`'s answer: for cas, the key's version.
    /// A compare-and-set that failed reports the version it failed at, so
    /// the next one expects that and can succeed. Without an answer (not
    /// run, or unknown) the expectation stays: if an unknown one took
    /// effect, the next fails once and reports the new version.
    fn learn(&mut self, session: usize, ending: &Ending) {
        let (Ending::Done(answer), Some(s)) = (ending, self.sessions.get_mut(session)) else { return };
        if let Some(version) = s.versions.get_mut(s.in_flight) {
            *version = answer.version;
        }
    }
}

/// The timed part's figures so far.
#[derive(Debug)]
struct Tally {
    ops: u64,
    errors: Errors,
    precondition_failed: u64,
    latency_us: Histogram<u64>,
    closed: Vec<Interval>,
    current: Interval,
    seconds: Seconds,
}

/// The warm-up, then the timed part: every session runs one operation after
/// another until the duration has passed.
struct ClosedLoop<'a> {
    plan: Plan,
    options: Options,
    /// The start of the warm-up.
    started: Instant,
    tally: Tally,
    counters: &'a Counters,
    on_interval: &'a mut dyn FnMut(&Interval),
}

impl<'a> ClosedLoop<'a> {
    fn new(
        options: &Options,
        plan: Plan,
        counters: &'a Counters,
        on_interval: &'a mut dyn FnMut(&Interval),
    ) -> ClosedLoop<'a> {
        let tally = Tally {
            ops: 0,
            errors: Errors::default(),
            precondition_failed: 0,
            latency_us: new_histogram(),
            closed: Vec::new(),
            current: Interval::new(1, Duration::ZERO, INTERVAL.min(options.duration)),
            seconds: Seconds::new(),
        };
        counters.warming_up.store(!options.warmup.is_zero(), Ordering::Relaxed);
        ClosedLoop { plan, options: options.clone(), started: Instant::now(), tally, counters, on_interval }
    }

    /// Time since the start of the timed part; `None` during the warm-up.
    fn timed(&self, now: Instant) -> Option<Duration> {
        now.saturating_duration_since(self.started).checked_sub(self.options.warmup)
    }

    /// Closes every interval and second that ended by `elapsed` (since the
    /// start of the timed part). The last of each stays open: operations in
    /// flight when the duration is up end in it, and it closes in the
    /// report, at the real end of the run.
    fn roll(&mut self, elapsed: Duration) {
        self.counters.warming_up.store(false, Ordering::Relaxed);
        let (duration, tally) = (self.options.duration, &mut self.tally);
        tally.seconds.roll(elapsed, duration);
        while elapsed >= tally.current.to && tally.current.to < duration {
            let from = tally.current.to;
            let next = Interval::new(tally.current.number + 1, from, (from + INTERVAL).min(duration));
            let done = std::mem::replace(&mut tally.current, next);
            (self.on_interval)(&done);
            tally.closed.push(done);
        }
    }

    fn record(&mut self, ending: &Ending, latency: Duration) {
        let tally = &mut self.tally;
        let Ending::Done(answer) = ending else {
            tally.errors.count(ending);
            tally.current.errors += 1;
            tally.seconds.current.errors += 1;
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let us = (latency.as_micros() as u64).max(1);
        tally.ops += 1;
        tally.current.ops += 1;
        tally.seconds.current.ops += 1;
        if !answer.precondition_held {
            tally.precondition_failed += 1;
            tally.seconds.current.precondition_failed += 1;
        }
        // Beyond the histograms' 100 s bound only: not worth an error.
        let _ = tally.latency_us.record(us);
        let _ = tally.current.latency_us.record(us);
        let _ = tally.seconds.latency_us.record(us);
        self.counters.ops.fetch_add(1, Ordering::Relaxed);
    }

    /// The report, at `now`: the end of the run.
    fn into_report(mut self, now: Instant, load: loadgen::Stats) -> Report {
        let elapsed = self.timed(now).unwrap_or_default();
        self.roll(elapsed);
        let mut tally = self.tally;
        tally.current.to = elapsed.max(tally.current.to);
        (self.on_interval)(&tally.current);
        tally.closed.push(tally.current);
        Report {
            workload: self.options.workload,
            clients: self.plan.sessions.len(),
            ops: tally.ops,
            errors: tally.errors.total(),
            error_kinds: tally.errors,
            precondition_failed: tally.precondition_failed,
            elapsed,
            latency_us: tally.latency_us,
            intervals: tally.closed,
            seconds: tally.seconds.into_seconds(),
            load,
        }
    }
}

impl loadgen::Workload for ClosedLoop<'_> {
    fn next(&mut self, session: usize, now: Instant) -> Option<(Key, Change)> {
        if self.timed(now).is_some_and(|elapsed| elapsed >= self.options.duration) {
            return None;
        }
        self.plan.next(session)
    }

    fn ended(&mut self, session: usize, ending: &Ending, latency: Duration, now: Instant) -> Then {
        self.plan.learn(session, ending);
        if let Some(elapsed) = self.timed(now) {
            self.roll(elapsed);
            self.record(ending, latency);
        }
        Then::Keep
    }

    fn tick(&mut self, now: Instant) {
        if let Some(elapsed) = self.timed(now) {
            self.roll(elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::client::Answer;
    use crate::loadgen::Workload as _;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn interval(number: u32, from: u64, to: u64, ops: u64) -> Interval {
        let mut i = Interval::new(number, secs(from), secs(to));
        i.ops = ops;
        i
    }

    /// Back-to-back 10-second intervals with these rates (ops/s).
    fn ten_second_intervals(rates: &[u64]) -> Vec<Interval> {
        let at = |i: usize| i as u64 * 10;
        rates.iter().enumerate().map(|(i, r)| interval(i as u32 + 1, at(i), at(i + 1), r * 10)).collect()
    }

    fn report(elapsed: u64, intervals: Vec<Interval>) -> Report {
        Report {
            workload: Workload::Put,
            clients: 1,
            ops: 0,
            errors: 0,
            error_kinds: Errors::default(),
            precondition_failed: 0,
            elapsed: secs(elapsed),
            latency_us: new_histogram(),
            intervals,
            seconds: Vec::new(),
            load: loadgen::Stats::default(),
        }
    }

    /// An answer at `version`; `held` false for a failed precondition.
    fn done(version: u64, held: bool) -> Ending {
        let answer = Answer {
            version: Version(version),
            precondition_held: held,
            value: None,
            value_known: true,
            node: NodeId(1),
        };
        Ending::Done(answer)
    }

    fn keys(names: &[&str]) -> Vec<Vec<Key>> {
        vec![names.iter().map(|name| Key::from(*name)).collect()]
    }

    /// The key and the change of session 0's next operation.
    fn next_of(plan: &mut Plan) -> (Key, Change) {
        plan.next(0).expect("an operation")
    }

    fn cas(expect: u64) -> Change {
        Change::CasVersion { expect: Version(expect), new: Value::from("x") }
    }

    #[test]
    fn stability_compares_the_worst_interval_of_the_last_minute_with_the_median() {
        // 100 s at 1,000 ops/s, then a slump to 500 in the 9th interval.
        let rates = [1000, 1000, 1200, 1000, 1000, 1000, 1000, 1000, 500, 1000];
        let stability = report(100, ten_second_intervals(&rates)).stability().expect("intervals");
        assert_eq!(stability.median_ops_per_s, 1000.0);
        assert_eq!(stability.min_last_minute_ops_per_s, 500.0);
        assert_eq!(
            stability.to_string(),
            "intervals: median_ops_per_s=1000 min_last_minute_ops_per_s=500 ratio=0.50"
        );
    }

    #[test]
    fn the_last_minute_is_its_last_six_intervals_though_the_run_ends_a_little_late() {
        // The third of eight intervals (20..30 s) is in the last minute of an
        // 80 s run that, as runs do, ended a moment past its last boundary.
        let rates = [1000, 1000, 400, 1000, 1000, 1000, 1000, 1000];
        let mut late = report(80, ten_second_intervals(&rates));
        late.elapsed += Duration::from_millis(40);
        assert_eq!(late.stability().map(|s| s.min_last_minute_ops_per_s), Some(400.0));
    }

    #[test]
    fn a_slump_before_the_last_minute_does_not_count_against_stability() {
        let rates = [100, 1000, 1000, 1000, 1000, 1000, 1000, 1000];
        let stability = report(80, ten_second_intervals(&rates)).stability().expect("intervals");
        assert_eq!((stability.median_ops_per_s, stability.ratio()), (1000.0, 1.0));
        assert_eq!(report(0, Vec::new()).stability(), None);
    }

    #[test]
    fn errors_are_counted_by_kind_and_only_the_kinds_seen_are_printed() {
        let mut errors = Errors::default();
        errors.count(&Ending::NotRun(NotRun::NoQuorum));
        errors.count(&Ending::NotRun(NotRun::Refused(Refusal::Overloaded)));
        errors.count(&Ending::Unknown(Unknown::NoAnswer));
        errors.count(&Ending::Unknown(Unknown::NoAnswer));
        errors.count(&done(1, true));
        assert_eq!(errors.total(), 4);
        assert_eq!(errors.to_string(), "not_run_overloaded=1 not_run_no_quorum=1 unknown_no_answer=2");
    }

    #[test]
    fn a_failed_compare_and_set_makes_the_next_one_expect_the_version_it_reported() {
        let mut plan = Plan::new(Workload::Cas, keys(&["a", "b"]), Value::from("x"));
        assert_eq!(next_of(&mut plan), (Key::from("a"), cas(0)), "fresh keys are absent");
        plan.learn(0, &done(1, true));
        assert_eq!(next_of(&mut plan), (Key::from("b"), cas(0)));
        // Someone else's writes, or an earlier copy of ours: b is at 5.
        plan.learn(0, &done(5, false));
        assert_eq!(next_of(&mut plan), (Key::from("a"), cas(1)), "a's success is remembered");
        plan.learn(0, &done(2, true));
        assert_eq!(next_of(&mut plan), (Key::from("b"), cas(5)), "the failed one's version is taken");
        // No answer: the expectation stays.
        plan.learn(0, &Ending::Unknown(Unknown::NoAnswer));
        assert_eq!(next_of(&mut plan), (Key::from("a"), cas(2)));
        plan.learn(0, &Ending::NotRun(NotRun::NoQuorum));
        assert_eq!(next_of(&mut plan), (Key::from("b"), cas(5)));
    }

    #[test]
    fn mixed_puts_each_key_and_then_reads_it_back() {
        let mut plan = Plan::new(Workload::Mixed, keys(&["a", "b"]), Value::from("x"));
        let put = Change::Put(Value::from("x"));
        let got: Vec<(Key, Change)> = (0..5).map(|_| next_of(&mut plan)).collect();
        let (a, b) = (Key::from("a"), Key::from("b"));
        let want = [(&a, &put), (&a, &Change::Read), (&b, &put), (&b, &Change::Read), (&a, &put)];
        assert_eq!(got.iter().map(|(k, c)| (k, c)).collect::<Vec<_>>(), want);
    }

    #[test]
    fn intervals_close_as_time_passes_and_the_last_one_waits_for_the_report() {
        let counters = Counters::default();
        let mut seen = Vec::new();
        let mut on_interval = |i: &Interval| seen.push((i.number, i.from, i.to));
        let options = Options { duration: secs(25), workload: Workload::Read, ..Options::default() };
        let plan = Plan::new(Workload::Read, keys(&["a", "b"]), Value::from("x"));
        let mut closed = ClosedLoop::new(&options, plan, &counters, &mut on_interval);
        let t0 = closed.started;
        assert_eq!(closed.next(0, t0).map(|(k, _)| k), Some(Key::from("a")));
        assert_eq!(closed.next(0, t0).map(|(k, _)| k), Some(Key::from("b")));
        closed.ended(0, &done(1, true), Duration::from_millis(3), t0 + secs(12));
        closed.tick(t0 + secs(24));
        assert_eq!(closed.tally.current.number, 3);
        assert_eq!(closed.next(0, t0 + secs(25)), None, "the duration is up");
        closed.tick(t0 + secs(40));
        assert_eq!(closed.tally.current.number, 3, "the last interval closes only in the report");
        let report = closed.into_report(t0 + secs(40), loadgen::Stats::default());
        assert_eq!(report.intervals.len(), 3);
        assert_eq!(report.intervals[1].ops, 1);
        assert_eq!(counters.line(), "ops=1 errors=0");
        assert_eq!(seen, vec![(1, secs(0), secs(10)), (2, secs(10), secs(20)), (3, secs(20), secs(40))]);
    }

    /// A 2 s warm-up and 3 timed seconds of cas, with operations ending at
    /// these times since the start (ms), the last ones after the duration.
    fn cas_run(endings: &[(u64, Ending)]) -> Report {
        let counters = Counters::default();
        let mut on_interval = |_: &Interval| {};
        let options =
            Options { duration: secs(3), warmup: secs(2), workload: Workload::Cas, ..Options::default() };
        let plan = Plan::new(Workload::Cas, keys(&["a"]), Value::from("x"));
        let mut closed = ClosedLoop::new(&options, plan, &counters, &mut on_interval);
        let t0 = closed.started;
        assert_eq!(counters.line(), "warming up");
        for (at, ending) in endings {
            if *at < 5_000 {
                assert!(closed.next(0, t0 + ms(*at) - ms(1)).is_some(), "the warm-up sends too");
            }
            closed.ended(0, ending, ms(*at % 100 + 1), t0 + ms(*at));
        }
        assert_eq!(closed.next(0, t0 + secs(5)), None, "warm-up and duration are up");
        closed.into_report(t0 + ms(6_000), loadgen::Stats::default())
    }

    #[test]
    fn per_second_sums_to_ops_and_the_warm_up_counts_nowhere() {
        let report = cas_run(&[
            (1_000, done(1, true)),                    // warm-up
            (1_999, Ending::NotRun(NotRun::NoQuorum)), // warm-up
            (2_500, done(2, true)),
            (3_200, done(3, true)),
            (3_500, Ending::Unknown(Unknown::NoAnswer)),
            (4_900, done(4, false)),
            (5_700, done(4, true)), // in flight when the duration was up
        ]);
        let ops: Vec<u64> = report.seconds.iter().map(|s| s.ops).collect();
        assert_eq!(ops, vec![1, 1, 2]);
        assert_eq!(report.ops, ops.iter().sum::<u64>());
        assert_eq!((report.errors, report.seconds[1].errors), (1, 1));
        assert_eq!((report.precondition_failed, report.seconds[2].precondition_failed), (1, 1));
        assert_eq!(report.elapsed, secs(4), "from the end of the warm-up to the report");
        assert_eq!(report.seconds[0].p50_us, 1_000, "1 ms, to three significant digits");
        assert_eq!(report.intervals.iter().map(|i| i.ops).sum::<u64>(), report.ops);
        assert!(report.to_string().starts_with("ops=4 errors=1 precondition_failed=1 ops_per_s=1 "));
    }

    #[test]
    fn the_json_has_every_field_a_script_reads() {
        let report = cas_run(&[
            (2_500, done(1, true)),
            (3_100, done(1, false)),
            (3_200, Ending::NotRun(NotRun::NoQuorum)),
        ]);
        let json = report.json();
        let object = json.as_object().expect("an object");
        let fields = [
            "workload",
            "clients",
            "ops",
            "errors",
            "errors_by_kind",
            "precondition_failed",
            "ops_per_s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
            "per_second",
        ];
        for field in fields {
            assert!(object.contains_key(field), "{field} missing from {json}");
        }
        assert_eq!(json["workload"], "cas");
        assert_eq!(
            (json["clients"].as_u64(), json["ops"].as_u64(), json["errors"].as_u64()),
            (Some(1), Some(2), Some(1))
        );
        assert_eq!(json["precondition_failed"].as_u64(), Some(1));
        assert_eq!(json["errors_by_kind"].as_object().map(|kinds| kinds.len()), Some(6));
        assert_eq!(json["errors_by_kind"]["not_run_no_quorum"].as_u64(), Some(1));
        assert_eq!(json["per_second"], serde_json::json!([1, 1, 0]));
        assert_eq!(json["per_second_p50_ms"][2], serde_json::Value::Null, "no operation, no latency");
        for field in ["ops_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms"] {
            assert!(json[field].as_f64().is_some_and(f64::is_finite), "{field} in {json}");
        }
    }
}
