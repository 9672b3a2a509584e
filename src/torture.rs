//! `paxosctl torture`: a workload that any user can point at a cluster to
//! check it. Concurrent clients issue reads, writes, CAS and deletes over a
//! few keys, plus an append workload (each client CAS-appends unique elements
//! to lists, so a lost acknowledged write shows as a missing element). Every
//! operation is recorded in the checker's history format; at the end the
//! history is checked for linearizability and the lists for lost elements.

use crate::checker::{self, Verdict};
use crate::client::{Answer, Client, ClientError};
use crate::config::Config;
use crate::core::rng::Rng;
use crate::types::{Key, NodeId, Value};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
}

/// A key prefix no earlier run used: the seed and the wall clock.
pub fn unique_prefix(seed: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    format!("torture-{seed}-{}/", now.map_or(0, |d| d.as_micros()))
}

/// Counts shared by the client threads, for progress and the summary.
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
}

impl Report {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Linearizable && self.lost_acked.is_empty() && self.unreadable.is_empty()
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
        )
    }
}

#[derive(Debug)]
pub enum TortureError {
    Client(ClientError),
    History(std::io::Error, PathBuf),
}

impl fmt::Display for TortureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TortureError::Client(e) => write!(f, "{e}"),
            TortureError::History(e, path) => write!(f, "cannot write history {}: {e}", path.display()),
        }
    }
}

impl std::error::Error for TortureError {}

/// The history, in real-time order: an event is appended under the lock at
/// the moment it happens, so line order is a valid real-time order.
#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<String>>,
}

impl Recorder {
    fn record(&self, process: u64, kind: &str, f: &str, key: &str, value: serde_json::Value) {
        // Wall-clock microseconds: the timeline lines operations up with the
        // fault log of a chaos run. The checker ignores `time`.
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let line =
            json!({"process": process, "type": kind, "f": f, "key": key, "value": value, "time": time})
                .to_string();
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(line);
        }
    }
}

/// One operation of the register workload.
enum Op {
    Read,
    Write(String),
    Cas(Option<String>, String),
    Delete,
}

/// Runs the workload against `config`'s cluster and checks the result.
pub fn run(config: &Config, options: &Options, counters: &Arc<Counters>) -> Result<Report, TortureError> {
    let recorder = Arc::new(Recorder::default());
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let deadline = Instant::now() + options.duration;
    std::thread::scope(|scope| {
        for index in 0..options.clients {
            let (recorder, acked, counters) = (recorder.clone(), acked.clone(), counters.clone());
            scope.spawn(move || {
                let mut worker = Worker::new(config, options, index, recorder, counters);
                worker.run(deadline, &acked);
            });
        }
    });
    let final_process = (options.clients as u64) * 1_000_000;
    let mut reader = Worker::new(config, options, 0, recorder.clone(), counters.clone());
    reader.process = final_process;
    let (lost_acked, unreadable) =
        reader.final_reads(options.keys, &acked.lock().map(|a| a.clone()).unwrap_or_default());
    let lines = recorder.lines.lock().map(|l| l.clone()).unwrap_or_default();
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
    })
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

struct Worker<'a> {
    config: &'a Config,
    options: &'a Options,
    /// Jepsen's process: a client that saw an unknown outcome retires, and
    /// a fresh process (a new number, a new socket) takes its place.
    process: u64,
    client: Option<Client>,
    rng: Rng,
    counter: u64,
    /// Prepended to every key: the checker assumes every key starts absent,
    /// so each run works on keys no earlier run touched.
    prefix: String,
    /// The last value this worker saw per key, which its CAS expects.
    last_seen: BTreeMap<String, Option<String>>,
    recorder: Arc<Recorder>,
    counters: Arc<Counters>,
}

impl<'a> Worker<'a> {
    fn new(
        config: &'a Config,
        options: &'a Options,
        index: usize,
        recorder: Arc<Recorder>,
        counters: Arc<Counters>,
    ) -> Worker<'a> {
        let seed = options.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Worker {
            config,
            options,
            process: index as u64,
            prefix: options.key_prefix.clone(),
            last_seen: BTreeMap::new(),
            client: None,
            rng: Rng::new(seed),
            counter: 0,
            recorder,
            counters,
        }
    }

    fn client(&mut self) -> Result<&mut Client, ClientError> {
        if self.client.is_none() {
            self.client = Some(Client::new(self.config, self.options.node, self.options.timeout)?);
        }
        self.client.as_mut().ok_or(ClientError::Unreachable { tried: Vec::new() })
    }

    fn retire(&mut self) {
        self.process += self.options.clients as u64;
        self.client = None;
    }

    fn unique(&mut self) -> String {
        self.counter += 1;
        format!("p{}-{}", self.process, self.counter)
    }

    fn run(&mut self, deadline: Instant, acked: &Mutex<BTreeSet<(usize, String)>>) {
        while Instant::now() < deadline {
            if self.rng.chance(0.2) {
                let list = self.rng.below(self.options.keys.max(1) as u64) as usize;
                if let (Some(element), Ok(mut a)) = (self.append(list), acked.lock()) {
                    a.insert((list, element));
                }
            } else {
                let key = format!("{}k{}", self.prefix, self.rng.below(self.options.keys.max(1) as u64));
                let op = self.pick_op(&key);
                self.register_op(&key, op);
            }
        }
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

    fn register_op(&mut self, key: &str, op: Op) {
        let k = Key(key.as_bytes().to_vec());
        let (f, value) = match &op {
            Op::Read => ("read", json!(null)),
            Op::Write(v) => ("write", json!(v)),
            Op::Cas(e, n) => ("cas", json!([e, n])),
            Op::Delete => ("delete", json!(null)),
        };
        self.recorder.record(self.process, "invoke", f, key, value.clone());
        let result = self.client().and_then(|c| match &op {
            Op::Read => c.read(&k),
            Op::Write(v) => c.put(&k, Value(v.as_bytes().to_vec())),
            Op::Cas(e, n) => c.cas_value(
                &k,
                e.as_ref().map(|e| Value(e.as_bytes().to_vec())),
                Value(n.as_bytes().to_vec()),
            ),
            Op::Delete => c.delete(&k),
        });
        if let Ok(answer) = &result {
            self.last_seen.insert(key.to_string(), text_of(answer));
        }
        let done = |a: &Answer| match &op {
            Op::Read => json!(text_of(a)),
            _ => value.clone(),
        };
        self.complete(f, key, &value, result.as_ref().map(|a| (a.precondition_held, done(a))));
    }

    /// Records the completion of an operation and keeps the counts.
    fn complete(
        &mut self,
        f: &str,
        key: &str,
        invoked: &serde_json::Value,
        result: Result<(bool, serde_json::Value), &ClientError>,
    ) {
        self.counters.ops.fetch_add(1, Ordering::Relaxed);
        let (kind, value) = match result {
            Ok((true, v)) => ("ok", v),
            Ok((false, _)) => ("fail", invoked.clone()),
            Err(ClientError::NoQuorum { maybe_applied: true, .. }) => ("info", invoked.clone()),
            // In the history format a failed cas means "ran and saw another
            // value". One that never ran has no such meaning, and there is
            // no type for "did not happen" that the checker reads that way
            // for a cas; `info` (may or may not have happened) is true.
            Err(_) if f == "cas" => ("info", invoked.clone()),
            // A network error may strike after the request went out.
            Err(ClientError::Io(_)) if f != "read" => ("info", invoked.clone()),
            Err(_) => ("fail", invoked.clone()),
        };
        let counter = match kind {
            "ok" => &self.counters.ok,
            "fail" => &self.counters.fail,
            _ => &self.counters.info,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.recorder.record(self.process, kind, f, key, value);
        if kind == "info" {
            self.retire();
        }
    }

    /// CAS-appends a unique element to list `list`; the element if acknowledged.
    fn append(&mut self, list: usize) -> Option<String> {
        let key = format!("{}list{list}", self.prefix);
        let element = self.unique();
        for _ in 0..APPEND_ATTEMPTS_MAX {
            let current = self.read_list(&key)?;
            if current.as_ref().is_some_and(|c| c.len() > LIST_BYTES_MAX) {
                return None;
            }
            let new = match &current {
                Some(c) if !c.is_empty() => format!("{c},{element}"),
                _ => element.clone(),
            };
            let invoked = json!([current, new]);
            self.recorder.record(self.process, "invoke", "cas", &key, invoked.clone());
            let expect = current.map(|c| Value(c.into_bytes()));
            let result = self
                .client()
                .and_then(|c| c.cas_value(&Key(key.clone().into_bytes()), expect, Value(new.into_bytes())));
            let held = result.as_ref().map(|a| a.precondition_held).ok();
            let unknown = matches!(result, Err(ClientError::NoQuorum { maybe_applied: true, .. }));
            self.complete(
                "cas",
                &key,
                &invoked,
                result.as_ref().map(|a| (a.precondition_held, invoked.clone())),
            );
            match held {
                Some(true) => return Some(element),
                Some(false) => continue,
                None if unknown => return None,
                None => continue,
            }
        }
        None
    }

    /// A recorded read of a list key; `None` when the read itself failed.
    fn read_list(&mut self, key: &str) -> Option<Option<String>> {
        self.recorder.record(self.process, "invoke", "read", key, json!(null));
        let result = self.client().and_then(|c| c.read(&Key(key.as_bytes().to_vec())));
        let value = result.as_ref().ok().map(text_of);
        self.complete(
            "read",
            key,
            &json!(null),
            result.as_ref().map(|_| (true, json!(value.clone().flatten()))),
        );
        value
    }

    /// Reads every list after the run and returns the acknowledged elements
    /// that are missing, and the lists that could not be read.
    fn final_reads(&mut self, lists: usize, acked: &BTreeSet<(usize, String)>) -> (Vec<String>, Vec<String>) {
        let (mut lost, mut unreadable) = (Vec::new(), Vec::new());
        for list in 0..lists {
            let key = format!("{}list{list}", self.prefix);
            let value = (0..FINAL_READ_ATTEMPTS_MAX).find_map(|_| self.read_list(&key));
            let Some(value) = value else {
                unreadable.push(key);
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

fn text_of(answer: &Answer) -> Option<String> {
    answer.state.value.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}
