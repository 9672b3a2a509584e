//! Times the linearizability checker on a large generated history.
//!
//! The history comes from simulating a real linearizable register: 20
//! processes issue reads, writes, cas and deletes on 100 keys, each
//! operation takes effect at a random instant between its invoke and its
//! completion, and a few end with `info`. The same history with one read
//! corrupted must be caught. Exits non-zero if either verdict is wrong.
//!
//! Run with `cargo bench --bench checker`.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use paxosd::checker::{History, Verdict, check, parse_history};

const SEED: u64 = 0x5eed_0000_c4ec_4e20;
const OPERATIONS: usize = 100_000;
const KEYS: usize = 100;
const PROCESSES: usize = 20;
/// Distinct values written per key; small, so cas often succeeds.
const VALUES: u64 = 8;
/// Timings are the best of this many runs.
const RUNS: usize = 3;

/// splitmix64: deterministic and good enough for a workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    Write(u64),
    Delete,
    /// Expected and new value; `None` is absent.
    Cas(Option<u64>, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Completion {
    Ok,
    Fail,
    Info,
}

#[derive(Debug, Clone)]
struct Operation {
    process: usize,
    key: usize,
    call: Call,
    invoke_at: u64,
    complete_at: u64,
    /// When it takes effect; None for an `info` operation that never did.
    effect_at: Option<u64>,
    completion: Completion,
    /// What a read returned.
    read: Option<u64>,
}

/// Invented operations, before the register has given them results.
fn generate(rng: &mut Rng) -> Vec<Operation> {
    let mut free_at = [0u64; PROCESSES];
    (0..OPERATIONS)
        .map(|_| {
            let process = (0..PROCESSES).min_by_key(|&p| free_at[p]).unwrap();
            let invoke_at = free_at[process] + rng.below(4);
            let complete_at = invoke_at + 1 + rng.below(40);
            free_at[process] = complete_at + 1;
            let call = match rng.below(20) {
                0..=7 => Call::Read,
                8..=12 => Call::Write(rng.below(VALUES)),
                13 => Call::Delete,
                _ => Call::Cas(value_or_absent(rng), rng.below(VALUES)),
            };
            let info = rng.below(200) == 0;
            let took_effect = !info || rng.below(2) == 0;
            Operation {
                process,
                key: rng.below(KEYS as u64) as usize,
                call,
                invoke_at,
                complete_at,
                effect_at: took_effect.then(|| invoke_at + rng.below(complete_at - invoke_at + 1)),
                completion: if info { Completion::Info } else { Completion::Ok },
                read: None,
            }
        })
        .collect()
}

fn value_or_absent(rng: &mut Rng) -> Option<u64> {
    let v = rng.below(VALUES + 1);
    (v < VALUES).then_some(v)
}

/// Applies the operations to real registers in the order they take effect,
/// filling in what reads returned and whether each cas succeeded.
fn run_registers(ops: &mut [Operation]) {
    let mut order: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].effect_at.is_some()).collect();
    order.sort_by_key(|&i| (ops[i].effect_at, i));
    let mut registers: Vec<Option<u64>> = vec![None; KEYS];
    for i in order {
        let op = &mut ops[i];
        let register = &mut registers[op.key];
        match op.call {
            Call::Read => op.read = *register,
            Call::Write(v) => *register = Some(v),
            Call::Delete => *register = None,
            Call::Cas(expected, new) if *register == expected => *register = Some(new),
            Call::Cas(..) => {
                if op.completion == Completion::Ok {
                    op.completion = Completion::Fail;
                }
            }
        }
    }
}

/// The history as JSON Lines, events in real time order. At equal times
/// invokes come first, which only makes operations more concurrent.
fn to_jsonl(ops: &[Operation]) -> Vec<String> {
    let mut events: Vec<(u64, bool, usize)> = ops
        .iter()
        .enumerate()
        .flat_map(|(i, op)| [(op.invoke_at, false, i), (op.complete_at, true, i)])
        .collect();
    events.sort();
    events.into_iter().map(|(time, is_completion, i)| event_line(&ops[i], time, is_completion)).collect()
}

fn event_line(op: &Operation, time: u64, is_completion: bool) -> String {
    let kind = match (is_completion, op.completion) {
        (false, _) => "invoke",
        (true, Completion::Ok) => "ok",
        (true, Completion::Fail) => "fail",
        (true, Completion::Info) => "info",
    };
    let text = |v: Option<u64>| v.map_or("null".to_owned(), |v| format!("\"v{v}\""));
    let (f, value) = match op.call {
        Call::Read if is_completion && op.completion == Completion::Ok => ("read", text(op.read)),
        Call::Read => ("read", "null".to_owned()),
        Call::Write(v) => ("write", text(Some(v))),
        Call::Delete => ("delete", "null".to_owned()),
        Call::Cas(expected, new) => ("cas", format!("[{},{}]", text(expected), text(Some(new)))),
    };
    format!(
        r#"{{"process":{},"type":"{kind}","f":"{f}","key":"k{}","value":{value},"time":{time}}}"#,
        op.process, op.key
    )
}

/// Replaces the value of an ok read near the middle with one never written;
/// returns its 1-based line number and key.
fn corrupt_one_read(lines: &mut [String]) -> (usize, String) {
    let middle = lines.len() / 2;
    let index = (middle..lines.len())
        .find(|&i| lines[i].contains(r#""type":"ok","f":"read""#))
        .expect("an ok read after the middle");
    let mut event: serde_json::Value = serde_json::from_str(&lines[index]).unwrap();
    event["value"] = "corrupted".into();
    lines[index] = event.to_string();
    let key = event["key"].as_str().unwrap().to_owned();
    (index + 1, key)
}

fn write_file(path: &Path, lines: &[String]) {
    let mut out = BufWriter::new(File::create(path).expect("create the history file"));
    for line in lines {
        writeln!(out, "{line}").expect("write the history file");
    }
    out.flush().expect("write the history file");
}

/// Best-of-RUNS parse and check times, and the last history and verdict.
fn time(path: &Path) -> (History, Verdict, Duration, Duration) {
    let mut best = (Duration::MAX, Duration::MAX);
    let mut last = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        let file = BufReader::new(File::open(path).expect("open the history file"));
        let history = parse_history(file).unwrap_or_else(|e| panic!("{e}"));
        let parsed = Instant::now();
        let verdict = check(&history);
        let checked = Instant::now();
        best.0 = best.0.min(parsed - started);
        best.1 = best.1.min(checked - parsed);
        last = Some((history, verdict));
    }
    let (history, verdict) = last.expect("at least one run");
    (history, verdict, best.0, best.1)
}

fn describe(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Linearizable => "linearizable".to_owned(),
        Verdict::Unknown { key } => format!("unknown (key {key:?})"),
        Verdict::Violation(v) => {
            let keys: Vec<String> = v.iter().map(|v| format!("{:?}", v.key)).collect();
            let lines: usize = v.iter().map(|v| v.stretch.len()).sum();
            format!("violation on key {} ({lines} lines)", keys.join(", "))
        }
    }
}

fn report(label: &str, path: &Path) -> Verdict {
    let (history, verdict, parse, check) = time(path);
    println!(
        "{label}: {OPERATIONS} ops, {} keys, parse {:.3} s, check {:.3} s, verdict {}",
        history.key_count(),
        parse.as_secs_f64(),
        check.as_secs_f64(),
        describe(&verdict)
    );
    verdict
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("paxosd-{name}-{}.jsonl", std::process::id()))
}

fn main() -> ExitCode {
    let mut rng = Rng(SEED);
    let mut ops = generate(&mut rng);
    run_registers(&mut ops);
    let mut lines = to_jsonl(&ops);
    let clean = temp_path("checker-bench");
    write_file(&clean, &lines);
    let verdict = report("checker", &clean);
    let (line, key) = corrupt_one_read(&mut lines);
    let corrupted = temp_path("checker-bench-corrupted");
    write_file(&corrupted, &lines);
    let corrupted_verdict = report("checker (one read corrupted)", &corrupted);
    let _ = fs::remove_file(&clean);
    let _ = fs::remove_file(&corrupted);
    let mut ok = verdict == Verdict::Linearizable;
    if !ok {
        eprintln!("error: the simulated history should be linearizable");
    }
    let caught = match &corrupted_verdict {
        Verdict::Violation(v) => {
            v.len() == 1 && v[0].key == key && v[0].stretch.iter().any(|l| l.line == line)
        }
        _ => false,
    };
    if !caught {
        eprintln!(
            "error: the corrupted read on line {line} (key {key:?}) was not reported:\n{corrupted_verdict:?}"
        );
        ok = false;
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
