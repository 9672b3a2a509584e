//! `paxosctl bench`: closed-loop load from many client sessions for a
//! while, with throughput and latency percentiles (an HDR histogram, so the
//! tail is exact to three significant digits), overall and per 10-second
//! interval. The sessions all run on one event loop (`loadgen`), so the
//! generator stays cheap at hundreds of clients.

use crate::change::Change;
use crate::config::Config;
use crate::core::client::{Ending, NotRun, Unknown};
use crate::loadgen::{self, LoadError, LoadGen, Then};
use crate::types::{Key, NodeId, Value};
use crate::wire::Refusal;
use hdrhistogram::Histogram;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The length of one reporting interval.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// How far back from the end of a run the stability check looks.
pub const STABILITY_WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Each client writes its own keys.
    Write,
    /// Each client reads its own keys (written once before timing).
    Read,
    /// All clients write one key: every write contends.
    Contended,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub clients: usize,
    pub duration: Duration,
    pub workload: Workload,
    pub value_bytes: usize,
    pub keys_per_client: usize,
    pub timeout: Duration,
    pub node: Option<NodeId>,
    pub key_prefix: String,
}

/// Running totals, readable from another thread (for a progress bar).
#[derive(Default, Debug)]
pub struct Counters {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn line(&self) -> String {
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

    fn by_kind(&self) -> [(&'static str, u64); 6] {
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

#[derive(Debug)]
pub struct Report {
    pub ops: u64,
    pub errors: u64,
    pub error_kinds: Errors,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
    pub intervals: Vec<Interval>,
    /// What the event loop did during the timed part.
    pub load: loadgen::Stats,
}

impl Report {
    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
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
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        write!(
            f,
            "ops={} errors={} ops_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
            self.ops,
            self.errors,
            self.ops_per_second(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            self.latency_us.max() as f64 / 1000.0
        )
    }
}

#[derive(Debug)]
pub enum BenchError {
    Load(LoadError),
    /// A write of the read workload's set-up did not succeed.
    WarmUp {
        key: String,
        errors: Errors,
    },
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Load(e) => write!(f, "{e}"),
            BenchError::WarmUp { key, errors } => {
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
/// the timed, closed-loop part. `on_interval` sees each interval as it
/// closes; the last one closes when the last operation in flight ended.
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
        let mut warm_up =
            WarmUp { keys: &keys, written: vec![0; sessions], value: value.clone(), failed: None };
        load.run(&mut warm_up)?;
        if let Some((key, errors)) = warm_up.failed {
            return Err(BenchError::WarmUp { key, errors });
        }
    }
    let change = match options.workload {
        Workload::Read => Change::Read,
        Workload::Write | Workload::Contended => Change::Put(value),
    };
    let mut closed = ClosedLoop::new(options.duration, keys, change, counters, on_interval);
    let stats = load.run(&mut closed)?;
    Ok(closed.into_report(stats))
}

/// Each session's keys: its own `keys_per_client`, or the one hot key.
fn keys_of(options: &Options, sessions: usize) -> Vec<Vec<Key>> {
    let prefix = &options.key_prefix;
    (0..sessions)
        .map(|s| match options.workload {
            Workload::Contended => vec![Key(format!("{prefix}hot").into_bytes())],
            Workload::Write | Workload::Read => (0..options.keys_per_client.max(1))
                .map(|k| Key(format!("{prefix}c{s}-k{k}").into_bytes()))
                .collect(),
        })
        .collect()
}

/// Writes each session's keys once, before the reads are timed.
struct WarmUp<'a> {
    keys: &'a [Vec<Key>],
    written: Vec<usize>,
    value: Value,
    /// The first key whose write failed, and every failure.
    failed: Option<(String, Errors)>,
}

impl loadgen::Workload for WarmUp<'_> {
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

/// The timed part: every session runs one operation after another on its
/// keys, in turn, until the duration has passed.
struct ClosedLoop<'a> {
    keys: Vec<Vec<Key>>,
    cursor: Vec<usize>,
    change: Change,
    started: Instant,
    duration: Duration,
    ops: u64,
    errors: Errors,
    latency_us: Histogram<u64>,
    closed: Vec<Interval>,
    current: Interval,
    counters: &'a Counters,
    on_interval: &'a mut dyn FnMut(&Interval),
}

impl<'a> ClosedLoop<'a> {
    fn new(
        duration: Duration,
        keys: Vec<Vec<Key>>,
        change: Change,
        counters: &'a Counters,
        on_interval: &'a mut dyn FnMut(&Interval),
    ) -> ClosedLoop<'a> {
        ClosedLoop {
            cursor: vec![0; keys.len()],
            keys,
            change,
            started: Instant::now(),
            duration,
            ops: 0,
            errors: Errors::default(),
            latency_us: new_histogram(),
            closed: Vec::new(),
            current: Interval::new(1, Duration::ZERO, INTERVAL.min(duration)),
            counters,
            on_interval,
        }
    }

    /// Closes every interval that ended by `now`. The last one stays open:
    /// operations in flight when the duration is up end in it, and it
    /// closes in the report, at the real end of the run.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        while elapsed >= self.current.to && self.current.to < self.duration {
            let from = self.current.to;
            let next = Interval::new(self.current.number + 1, from, (from + INTERVAL).min(self.duration));
            let done = std::mem::replace(&mut self.current, next);
            (self.on_interval)(&done);
            self.closed.push(done);
        }
    }

    fn into_report(mut self, load: loadgen::Stats) -> Report {
        let elapsed = self.started.elapsed();
        self.roll(self.started + elapsed);
        self.current.to = elapsed.max(self.current.to);
        (self.on_interval)(&self.current);
        self.closed.push(self.current);
        Report {
            ops: self.ops,
            errors: self.errors.total(),
            error_kinds: self.errors,
            elapsed,
            latency_us: self.latency_us,
            intervals: self.closed,
            load,
        }
    }
}

impl loadgen::Workload for ClosedLoop<'_> {
    fn next(&mut self, session: usize, now: Instant) -> Option<(Key, Change)> {
        if now.saturating_duration_since(self.started) >= self.duration {
            return None;
        }
        let keys = self.keys.get(session)?;
        let key = keys.get(self.cursor[session] % keys.len().max(1))?;
        self.cursor[session] += 1;
        Some((key.clone(), self.change.clone()))
    }

    fn ended(&mut self, _session: usize, ending: &Ending, latency: Duration, now: Instant) -> Then {
        self.roll(now);
        if let Ending::Done(_) = ending {
            let us = (latency.as_micros() as u64).max(1);
            self.ops += 1;
            self.current.ops += 1;
            // Beyond the histogram's 100 s bound only: not worth an error.
            let _ = self.latency_us.record(us);
            let _ = self.current.latency_us.record(us);
            self.counters.ops.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.count(ending);
            self.current.errors += 1;
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        Then::Keep
    }

    fn tick(&mut self, now: Instant) {
        self.roll(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::client::Answer;
    use crate::loadgen::Workload as _;
    use crate::types::Version;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
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
            ops: 0,
            errors: 0,
            error_kinds: Errors::default(),
            elapsed: secs(elapsed),
            latency_us: new_histogram(),
            intervals,
            load: loadgen::Stats::default(),
        }
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
        let done = Answer {
            version: Version(1),
            precondition_held: true,
            value: None,
            value_known: true,
            node: NodeId(1),
        };
        errors.count(&Ending::Done(done));
        assert_eq!(errors.total(), 4);
        assert_eq!(errors.to_string(), "not_run_overloaded=1 not_run_no_quorum=1 unknown_no_answer=2");
    }

    #[test]
    fn intervals_close_as_time_passes_and_the_last_one_waits_for_the_report() {
        let counters = Counters::default();
        let mut seen = Vec::new();
        let mut on_interval = |i: &Interval| seen.push((i.number, i.from, i.to));
        let keys = vec![vec![Key::from("a"), Key::from("b")]];
        let mut closed = ClosedLoop::new(secs(25), keys, Change::Read, &counters, &mut on_interval);
        let t0 = closed.started;
        assert_eq!(closed.next(0, t0).map(|(k, _)| k), Some(Key::from("a")));
        assert_eq!(closed.next(0, t0).map(|(k, _)| k), Some(Key::from("b")));
        let done = Answer {
            version: Version(1),
            precondition_held: true,
            value: None,
            value_known: true,
            node: NodeId(1),
        };
        closed.ended(0, &Ending::Done(done), Duration::from_millis(3), t0 + secs(12));
        closed.tick(t0 + secs(24));
        assert_eq!(closed.current.number, 3);
        assert_eq!(closed.next(0, t0 + secs(25)), None, "the duration is up");
        closed.tick(t0 + secs(40));
        assert_eq!(closed.current.number, 3, "the last interval closes only in the report");
        let report = closed.into_report(loadgen::Stats::default());
        assert_eq!(report.intervals.len(), 3);
        assert_eq!(report.intervals[1].ops, 1);
        assert_eq!(counters.line(), "ops=1 errors=0");
        assert_eq!(seen, vec![(1, secs(0), secs(10)), (2, secs(10), secs(20)), (3, secs(20), secs(25))]);
    }
}
