//! `paxosctl torture`: a workload that any user can point at a cluster to
//! check it. Concurrent clients issue reads, writes, CAS and deletes over a
//! few keys, plus an append workload (each client CAS-appends unique elements
//! to lists, so a lost acknowledged write shows as a missing element). Every
//! operation is recorded in the checker's history format; at the end the
//! history is checked for linearizability and the lists for lost elements.
//!
//! The clients are sessions of one event loop (`loadgen`). Each runs one
//! operation at a time: the loop asks its `Worker` for the next one and
//! tells it how each ended, so an append (read the list, then CAS, retried)
//! is a small state machine rather than a blocking loop.

use crate::change::Change;
use crate::checker::{self, Verdict};
use crate::config::Config;
use crate::core::client::{Answer, Ending};
use crate::core::rng::Rng;
use crate::loadgen::{self, LoadError, LoadGen, Then};
use crate::types::{Key, NodeId, Value};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A list stops growing near this size, well under the value limit.
const LIST_BYTES_MAX: usize = crate::limits::VALUE_BYTES_MAX * 3 / 4;
/// Attempts at one append before the client moves on.
const APPEND_ATTEMPTS_MAX: u32 = 8;
/// Attempts at each final read: with the per-operation timeout, this gives a
/// cluster that was just healed tens of seconds to answer.
const FINAL_READ_ATTEMPTS_MAX: u32 = 30;

#[derive(Clone, Debug)]
pub struct Options {
    pub clients: usize,
    pub keys: usize,
    pub duration: Duration,
    pub seed: u64,
    pub history: PathBuf,
    /// Per-operation timeout: short, so faults show up as `info` quickly.
    pub timeout: Duration,
    pub node: Option<NodeId>,
    /// Prepended to every key; unique per run (see `unique_prefix`).
    pub key_prefix: String,
    /// Lock sessions running alongside (`torture_locks`); 0 for none.
    pub lock_sessions: usize,
}

/// A key prefix no earlier run used: the seed and the wall clock.
pub fn unique_prefix(seed: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    format!("torture-{seed}-{}/", now.map_or(0, |d| d.as_micros()))
}

/// Counts kept by the loop, read by a progress display on another thread.
#[derive(Default, Debug)]
pub struct Counters {
    pub ops: AtomicU64,
    pub ok: AtomicU64,
    pub fail: AtomicU64,
    pub info: AtomicU64,
}

#[derive(Debug)]
pub struct Report {
    pub ops: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    pub verdict: Verdict,
    pub lost_acked: Vec<String>,
    /// Lists whose final read failed, so their elements could not be checked.
    pub unreadable: Vec<String>,
    /// The lock workload's results, when it ran.
    pub locks: Option<crate::torture_locks::LockReport>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Linearizable
            && self.lost_acked.is_empty()
            && self.unreadable.is_empty()
            && self.locks.as_ref().is_none_or(|l| l.violations.is_empty())
    }

    pub fn linearizable_word(&self) -> &'static str {
        match self.verdict {
            Verdict::Linearizable => "yes",
            Verdict::Violation(_) => "no",
            Verdict::Unknown { .. } => "unknown",
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ops={} ok={} fail={} info={} linearizable={} lost_acked={}",
            self.ops,
            self.ok,
            self.fail,
            self.info,
            self.linearizable_word(),
            self.lost_acked.len()
        )?;
        match &self.locks {
            Some(l) => write!(
                f,
                " lock_acquired={} lock_released={} lock_lost={} lock_violations={}",
                l.acquired,
                l.released,
                l.lost,
                l.violations.len()
            ),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
pub enum TortureError {
    Load(LoadError),
    History(std::io::Error, PathBuf),
}

impl fmt::Display for TortureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TortureError::Load(e) => write!(f, "{e}"),
            TortureError::History(e, path) => write!(f, "cannot write history {}: {e}", path.display()),
        }
    }
}

impl std::error::Error for TortureError {}

/// The history, in real-time order. The loop is one thread that records an
/// invocation before the request goes out and a completion after its
/// ending came in, so line order is a valid real-time order.
#[derive(Default)]
struct Recorder {
    lines: Vec<String>,
}

impl Recorder {
    fn record(&mut self, process: u64, kind: &str, f: &str, key: &str, value: serde_json::Value) {
        // Wall-clock microseconds: the timeline lines operations up with the
        // fault log of a chaos run. The checker ignores `time`.
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let line =
            json!({"process": process, "type": kind, "f": f, "key": key, "value": value, "time": time})
                .to_string();
        self.lines.push(line);
    }
}

/// The history type of a completed operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ok,
    Fail,
    Info,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Fail => "fail",
            Kind::Info => "info",
        }
    }
}

/// How an operation `f` that ended so is recorded.
fn kind_of(f: &str, ending: &Ending) -> Kind {
    match ending {
        Ending::Done(answer) if answer.precondition_held => Kind::Ok,
        Ending::Done(_) => Kind::Fail,
        Ending::Unknown(_) => Kind::Info,
        // In the history format a failed cas means "ran and saw another
        // value". One that never ran has no such meaning, and there is
        // no type for "did not happen" that the checker reads that way
        // for a cas; `info` (may or may not have happened) is true.
        Ending::NotRun(_) if f == "cas" => Kind::Info,
        Ending::NotRun(_) => Kind::Fail,
    }
}

/// The history and the counts, which every completion updates together.
struct Journal<'a> {
    recorder: Recorder,
    counters: &'a Counters,
}

impl Journal<'_> {
    /// Records the completion of `op` and keeps the counts.
    fn complete(&mut self, process: u64, op: &Pending, ending: &Ending) -> Kind {
        let kind = kind_of(op.f, ending);
        let value = match ending {
            Ending::Done(answer) if kind == Kind::Ok && op.f == "read" => json!(text_of(answer)),
            _ => op.invoked.clone(),
        };
        self.counters.ops.fetch_add(1, Ordering::Relaxed);
        let counter = match kind {
            Kind::Ok => &self.counters.ok,
            Kind::Fail => &self.counters.fail,
            Kind::Info => &self.counters.info,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.recorder.record(process, kind.as_str(), op.f, &op.key, value);
        kind
    }
}

/// Runs the workload against `config`'s cluster and checks the result.
pub fn run(config: &Config, options: &Options, counters: &Arc<Counters>) -> Result<Report, TortureError> {
    let sessions = options.clients.max(1);
    let load_options = loadgen::Options { sessions, node: options.node, timeout: options.timeout };
    let mut load = LoadGen::new(config, &load_options).map_err(TortureError::Load)?;
    let journal = Journal { recorder: Recorder::default(), counters };
    let mut workers = Workers::new(options, sessions, journal);
    let locks = std::thread::scope(|scope| {
        let locks = (options.lock_sessions > 0).then(|| scope.spawn(|| run_locks(config, options)));
        let load = load.run(&mut workers).map_err(TortureError::Load);
        let locks = locks.map(|h| h.join().unwrap_or_else(|_| lock_workload_panicked()));
        load.map(|_| locks)
    })?;
    let Workers { journal, acked, .. } = workers;
    let mut reads = FinalReads::new(options, sessions, journal);
    load.run(&mut reads).map_err(TortureError::Load)?;
    let (lost_acked, unreadable) = reads.missing(&acked);
    let lines = reads.journal.recorder.lines;
    write_history(&options.history, &lines)?;
    let verdict = check_lines(&lines);
    Ok(Report {
        ops: counters.ops.load(Ordering::Relaxed),
        ok: counters.ok.load(Ordering::Relaxed),
        fail: counters.fail.load(Ordering::Relaxed),
        info: counters.info.load(Ordering::Relaxed),
        verdict,
        lost_acked,
        unreadable,
        locks,
    })
}

fn run_locks(config: &Config, options: &Options) -> crate::torture_locks::LockReport {
    let lock_options = crate::torture_locks::LockOptions {
        sessions: options.lock_sessions,
        duration: options.duration,
        seed: options.seed,
        timeout: options.timeout,
        node: options.node,
        key_prefix: options.key_prefix.clone(),
    };
    crate::torture_locks::run(config, &lock_options)
}

fn lock_workload_panicked() -> crate::torture_locks::LockReport {
    let violations = vec!["lock workload: a session panicked".to_string()];
    crate::torture_locks::LockReport { violations, ..Default::default() }
}

fn write_history(path: &PathBuf, lines: &[String]) -> Result<(), TortureError> {
    let err = |e| TortureError::History(e, path.clone());
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    for line in lines {
        writeln!(file, "{line}").map_err(err)?;
    }
    file.flush().map_err(err)
}

fn check_lines(lines: &[String]) -> Verdict {
    let text = lines.join("\n");
    match checker::parse_history(std::io::Cursor::new(text)) {
        Ok(history) => checker::check(&history),
        // Our own history failing to parse is a bug here; say so loudly.
        Err(e) => Verdict::Unknown { key: format!("(history does not parse: {e})") },
    }
}

/// One operation of the register workload.
enum Op {
    Read,
    Write(String),
    Cas(Option<String>, String),
    Delete,
}

/// An operation in flight: what its completion records, and which step
/// of the worker it was.
struct Pending {
    f: &'static str,
    key: String,
    invoked: serde_json::Value,
    step: Step,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Register,
    ListRead,
    ListCas,
}

/// A CAS-append in progress: read the list, then CAS it from what was read
/// to that plus the element, up to `APPEND_ATTEMPTS_MAX` times.
struct Append {
    list: usize,
    key: String,
    element: String,
    attempts: u32,
    /// What the last read found (`Some(None)`: absent), which the CAS
    /// expects; `None` while the list is to be read.
    current: Option<Option<String>>,
}

/// One session's client.
struct Worker {
    /// Jepsen's process: a client that saw an unknown outcome retires, and
    /// a fresh process (a new number, a new session) takes its place.
    process: u64,
    rng: Rng,
    counter: u64,
    /// The last value this worker saw per key, which its CAS expects.
    last_seen: BTreeMap<String, Option<String>>,
    pending: Option<Pending>,
    append: Option<Append>,
}

impl Worker {
    fn new(options: &Options, index: usize) -> Worker {
        let seed = options.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Worker {
            process: index as u64,
            rng: Rng::new(seed),
            counter: 0,
            last_seen: BTreeMap::new(),
            pending: None,
            append: None,
        }
    }

    fn unique(&mut self) -> String {
        self.counter += 1;
        format!("p{}-{}", self.process, self.counter)
    }

    fn pick_op(&mut self, key: &str) -> Op {
        match self.rng.below(100) {
            0..40 => Op::Read,
            40..70 => Op::Write(self.unique()),
            70..95 => {
                // Expect what this worker saw last: often still current.
                let expect = self.last_seen.get(key).cloned().flatten();
                Op::Cas(expect, self.unique())
            }
            _ => Op::Delete,
        }
    }

    /// The next step of the append in progress.
    fn append_step(&self) -> Option<(Pending, Change)> {
        let append = self.append.as_ref()?;
        let key = append.key.clone();
        let Some(current) = &append.current else {
            let read = Pending { f: "read", key, invoked: json!(null), step: Step::ListRead };
            return Some((read, Change::Read));
        };
        let new = match current {
            Some(c) if !c.is_empty() => format!("{c},{}", append.element),
            _ => append.element.clone(),
        };
        let invoked = json!([current, new]);
        let change = Change::CasValue { expect: current.as_deref().map(value_of), new: value_of(&new) };
        Some((Pending { f: "cas", key, invoked, step: Step::ListCas }, change))
    }

    /// The list was read: CAS next, unless the read failed (nothing to
    /// expect) or the list is full.
    fn after_list_read(&mut self, ending: &Ending) {
        let full = |c: &Option<String>| c.as_ref().is_some_and(|c| c.len() > LIST_BYTES_MAX);
        match (ending, self.append.as_mut()) {
            (Ending::Done(answer), Some(append)) if !full(&text_of(answer)) => {
                append.current = Some(text_of(answer));
            }
            _ => self.append = None,
        }
    }

    /// The CAS ended: the element if it was acknowledged. An unknown
    /// outcome ends the append too (the element may be in the list, so it
    /// must not be appended again); anything else tries again.
    fn after_list_cas(&mut self, ending: &Ending) -> Option<(usize, String)> {
        let append = self.append.as_mut()?;
        append.attempts += 1;
        append.current = None;
        let acked = matches!(ending, Ending::Done(answer) if answer.precondition_held);
        if acked || matches!(ending, Ending::Unknown(_)) || append.attempts >= APPEND_ATTEMPTS_MAX {
            let append = self.append.take()?;
            return acked.then_some((append.list, append.element));
        }
        None
    }
}

/// The workload until the deadline: each session a `Worker`.
struct Workers<'a> {
    options: &'a Options,
    deadline: Instant,
    workers: Vec<Worker>,
    journal: Journal<'a>,
    /// Acknowledged appends: (list, element).
    acked: BTreeSet<(usize, String)>,
}

impl<'a> Workers<'a> {
    fn new(options: &'a Options, sessions: usize, journal: Journal<'a>) -> Workers<'a> {
        Workers {
            options,
            deadline: Instant::now() + options.duration,
            workers: (0..sessions).map(|i| Worker::new(options, i)).collect(),
            journal,
            acked: BTreeSet::new(),
        }
    }

    fn register_op(&mut self, session: usize, now: Instant) -> Option<(Pending, Change)> {
        let prefix = &self.options.key_prefix;
        let keys = self.options.keys.max(1) as u64;
        let worker = self.workers.get_mut(session)?;
        if now >= self.deadline {
            return None;
        }
        if worker.rng.chance(0.2) {
            let list = worker.rng.below(keys) as usize;
            let element = worker.unique();
            let key = format!("{prefix}list{list}");
            worker.append = Some(Append { list, key, element, attempts: 0, current: None });
            return worker.append_step();
        }
        let key = format!("{prefix}k{}", worker.rng.below(keys));
        let (f, invoked, change) = match worker.pick_op(&key) {
            Op::Read => ("read", json!(null), Change::Read),
            Op::Write(v) => ("write", json!(v), Change::Put(value_of(&v))),
            Op::Cas(e, n) => {
                let change = Change::CasValue { expect: e.as_deref().map(value_of), new: value_of(&n) };
                ("cas", json!([e, n]), change)
            }
            Op::Delete => ("delete", json!(null), Change::Delete),
        };
        Some((Pending { f, key, invoked, step: Step::Register }, change))
    }
}

impl loadgen::Workload for Workers<'_> {
    /// An append in progress goes on past the deadline, as a blocking
    /// client's would; nothing new starts after it.
    fn next(&mut self, session: usize, now: Instant) -> Option<(Key, Change)> {
        let in_append = self.workers.get(session).is_some_and(|w| w.append.is_some());
        let (pending, change) = match in_append {
            true => self.workers.get(session)?.append_step()?,
            false => self.register_op(session, now)?,
        };
        let worker = self.workers.get_mut(session)?;
        self.journal.recorder.record(
            worker.process,
            "invoke",
            pending.f,
            &pending.key,
            pending.invoked.clone(),
        );
        let key = Key(pending.key.as_bytes().to_vec());
        worker.pending = Some(pending);
        Some((key, change))
    }

    fn ended(&mut self, session: usize, ending: &Ending, _latency: Duration, _now: Instant) -> Then {
        let Some(worker) = self.workers.get_mut(session) else { return Then::Keep };
        let Some(op) = worker.pending.take() else { return Then::Keep };
        let kind = self.journal.complete(worker.process, &op, ending);
        match (op.step, ending) {
            (Step::Register, Ending::Done(answer)) if answer.value_known => {
                worker.last_seen.insert(op.key, text_of(answer));
            }
            (Step::Register, Ending::Done(_)) => {
                worker.last_seen.remove(&op.key);
            }
            (Step::Register, _) => {}
            (Step::ListRead, _) => worker.after_list_read(ending),
            (Step::ListCas, _) => self.acked.extend(worker.after_list_cas(ending)),
        }
        if kind != Kind::Info {
            return Then::Keep;
        }
        worker.process += self.options.clients.max(1) as u64;
        Then::Replace
    }
}

/// Reads every list after the run, on one session, each up to
/// `FINAL_READ_ATTEMPTS_MAX` times.
struct FinalReads<'a> {
    keys: Vec<String>,
    /// What each list's read found, once one succeeded.
    values: Vec<Option<Option<String>>>,
    index: usize,
    attempts: u32,
    process: u64,
    pending: Option<Pending>,
    journal: Journal<'a>,
}

impl<'a> FinalReads<'a> {
    fn new(options: &Options, sessions: usize, journal: Journal<'a>) -> FinalReads<'a> {
        let keys: Vec<String> =
            (0..options.keys).map(|list| format!("{}list{list}", options.key_prefix)).collect();
        FinalReads {
            values: vec![None; keys.len()],
            keys,
            index: 0,
            attempts: 0,
            process: sessions as u64 * 1_000_000,
            pending: None,
            journal,
        }
    }

    /// The acknowledged elements that are missing from their list, and the
    /// lists that could not be read.
    fn missing(&self, acked: &BTreeSet<(usize, String)>) -> (Vec<String>, Vec<String>) {
        let (mut lost, mut unreadable) = (Vec::new(), Vec::new());
        for (list, (key, value)) in self.keys.iter().zip(&self.values).enumerate() {
            let Some(value) = value else {
                unreadable.push(key.clone());
                continue;
            };
            let present: BTreeSet<&str> = value.as_deref().unwrap_or("").split(',').collect();
            for (_, element) in acked.iter().filter(|(l, _)| *l == list) {
                if !present.contains(element.as_str()) {
                    lost.push(format!("{key}:{element}"));
                }
            }
        }
        (lost, unreadable)
    }
}

impl loadgen::Workload for FinalReads<'_> {
    fn next(&mut self, session: usize, _now: Instant) -> Option<(Key, Change)> {
        let key = self.keys.get(self.index).filter(|_| session == 0)?;
        self.journal.recorder.record(self.process, "invoke", "read", key, json!(null));
        self.pending =
            Some(Pending { f: "read", key: key.clone(), invoked: json!(null), step: Step::ListRead });
        Some((Key(key.as_bytes().to_vec()), Change::Read))
    }

    fn ended(&mut self, _session: usize, ending: &Ending, _latency: Duration, _now: Instant) -> Then {
        let Some(op) = self.pending.take() else { return Then::Keep };
        self.journal.complete(self.process, &op, ending);
        self.attempts += 1;
        let read = match (ending, self.values.get_mut(self.index)) {
            (Ending::Done(answer), Some(value)) => {
                *value = Some(text_of(answer));
                true
            }
            _ => false,
        };
        if read || self.attempts >= FINAL_READ_ATTEMPTS_MAX {
            self.index += 1;
            self.attempts = 0;
        }
        // A read never ends unknown, so the session never retires here.
        Then::Keep
    }
}

fn value_of(text: &str) -> Value {
    Value(text.as_bytes().to_vec())
}

fn text_of(answer: &Answer) -> Option<String> {
    answer.value.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::client::{NotRun, Unknown};
    use crate::loadgen::Workload as _;
    use crate::types::Version;
    use crate::wire::Refusal;

    fn done(held: bool, value: Option<&str>) -> Ending {
        let value = value.map(value_of);
        Ending::Done(Answer {
            version: Version(1),
            precondition_held: held,
            value,
            value_known: true,
            node: NodeId(1),
        })
    }

    fn not_run() -> Ending {
        Ending::NotRun(NotRun::NoQuorum)
    }

    fn unknown() -> Ending {
        Ending::Unknown(Unknown::NoAnswer)
    }

    fn options(clients: usize) -> Options {
        Options {
            clients,
            keys: 2,
            duration: Duration::from_secs(60),
            seed: 7,
            history: PathBuf::from("unused.jsonl"),
            timeout: Duration::from_secs(1),
            node: None,
            key_prefix: "t/".into(),
            lock_sessions: 0,
        }
    }

    #[test]
    fn endings_map_to_history_types_as_the_checker_reads_them() {
        let refused = Ending::NotRun(NotRun::Refused(Refusal::Overloaded));
        let table = [
            ("read", done(true, None), Kind::Ok),
            ("cas", done(true, None), Kind::Ok),
            ("cas", done(false, Some("x")), Kind::Fail),
            ("write", unknown(), Kind::Info),
            ("read", not_run(), Kind::Fail),
            ("write", refused.clone(), Kind::Fail),
            ("delete", not_run(), Kind::Fail),
            // A cas that never ran is not a failed cas (one that saw
            // another value): it is recorded as may-or-may-not.
            ("cas", not_run(), Kind::Info),
            ("cas", refused, Kind::Info),
        ];
        for (f, ending, kind) in table {
            assert_eq!(kind_of(f, &ending), kind, "{f} {ending:?}");
        }
    }

    #[test]
    fn an_append_reads_then_cases_from_what_it_read_and_retries_on_a_failed_cas() {
        let mut w = Worker::new(&options(1), 0);
        let append =
            Append { list: 1, key: "t/list1".into(), element: "p0-1".into(), attempts: 0, current: None };
        w.append = Some(append);
        let (read, change) = w.append_step().expect("step");
        assert_eq!((read.f, read.step, change), ("read", Step::ListRead, Change::Read));
        w.after_list_read(&done(true, Some("a,b")));
        let (cas, change) = w.append_step().expect("step");
        assert_eq!((cas.f, cas.step, cas.invoked), ("cas", Step::ListCas, json!(["a,b", "a,b,p0-1"])));
        assert_eq!(change, Change::CasValue { expect: Some(value_of("a,b")), new: value_of("a,b,p0-1") });
        assert_eq!(w.after_list_cas(&done(false, Some("a,b,c"))), None);
        assert_eq!(w.append_step().map(|(p, _)| p.step), Some(Step::ListRead), "read again");
        w.after_list_read(&done(true, None));
        let (cas, _) = w.append_step().expect("step");
        assert_eq!(cas.invoked, json!([null, "p0-1"]));
        assert_eq!(w.after_list_cas(&done(true, None)), Some((1, "p0-1".to_string())));
        assert!(w.append.is_none());
    }

    #[test]
    fn an_append_gives_up_on_a_failed_read_an_unknown_cas_or_too_many_attempts() {
        let mut w = Worker::new(&options(1), 0);
        let fresh =
            || Append { list: 0, key: "t/list0".into(), element: "e".into(), attempts: 0, current: None };
        w.append = Some(fresh());
        w.after_list_read(&not_run());
        assert!(w.append.is_none(), "nothing to expect");
        w.append = Some(fresh());
        w.after_list_read(&done(true, None));
        assert_eq!(w.after_list_cas(&unknown()), None);
        assert!(w.append.is_none(), "the element may be in the list already");
        w.append = Some(fresh());
        for attempt in 1..=APPEND_ATTEMPTS_MAX {
            w.after_list_read(&done(true, None));
            w.after_list_cas(&not_run());
            assert_eq!(w.append.is_some(), attempt < APPEND_ATTEMPTS_MAX);
        }
    }

    #[test]
    fn an_info_outcome_retires_the_process_and_its_session() {
        let counters = Counters::default();
        let options = options(3);
        let journal = Journal { recorder: Recorder::default(), counters: &counters };
        let mut workers = Workers::new(&options, 3, journal);
        let now = Instant::now();
        // Run session 1 until it issues a write, then leave it unknown.
        loop {
            let (_, change) = workers.next(1, now).expect("an operation");
            if matches!(change, Change::Put(_)) {
                break;
            }
            assert_eq!(workers.ended(1, &done(true, None), Duration::ZERO, now), Then::Keep);
        }
        assert_eq!(workers.ended(1, &unknown(), Duration::ZERO, now), Then::Replace);
        assert_eq!(workers.workers[1].process, 4);
        let last = workers.journal.recorder.lines.last().expect("a line");
        assert!(last.contains(r#""process":1"#) && last.contains(r#""type":"info""#), "{last}");
        assert_eq!(counters.info.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn final_reads_retry_a_list_and_report_what_is_missing_or_unreadable() {
        let counters = Counters::default();
        let journal = Journal { recorder: Recorder::default(), counters: &counters };
        let mut reads = FinalReads::new(&options(2), 2, journal);
        let now = Instant::now();
        assert_eq!(reads.next(1, now), None, "one session reads");
        assert_eq!(reads.next(0, now), Some((Key::from("t/list0"), Change::Read)));
        reads.ended(0, &done(true, Some("p0-1,p1-1")), Duration::ZERO, now);
        for _ in 0..FINAL_READ_ATTEMPTS_MAX {
            assert_eq!(reads.next(0, now).map(|(k, _)| k), Some(Key::from("t/list1")));
            reads.ended(0, &not_run(), Duration::ZERO, now);
        }
        assert_eq!(reads.next(0, now), None);
        let acked =
            BTreeSet::from([(0, "p0-1".to_string()), (0, "p1-2".to_string()), (1, "p0-3".to_string())]);
        assert_eq!(reads.missing(&acked), (vec!["t/list0:p1-2".to_string()], vec!["t/list1".to_string()]));
        let first = &reads.journal.recorder.lines[1];
        assert!(
            first.contains(r#""process":2000000"#) && first.contains(r#""value":"p0-1,p1-1""#),
            "{first}"
        );
    }
}
