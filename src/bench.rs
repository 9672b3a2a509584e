//! `paxosctl bench`: closed-loop load from several clients for a while, with
//! throughput and latency percentiles (an HDR histogram, so the tail is
//! exact to three significant digits).

use crate::change::Change;
use crate::client::Client;
use crate::config::Config;
use crate::types::{Key, NodeId, Value};
use hdrhistogram::Histogram;
use std::fmt;
use std::time::{Duration, Instant};

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

#[derive(Debug)]
pub struct Report {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl Report {
    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
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

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 100 s, three significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Runs the load and merges every client's histogram.
pub fn run(config: &Config, options: &Options) -> Result<Report, String> {
    let started = Instant::now();
    let results: Vec<Result<ClientResult, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..options.clients).map(|i| scope.spawn(move || client_loop(config, options, i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("client thread panicked".into())))
            .collect()
    });
    let elapsed = started.elapsed();
    let mut report = Report { ops: 0, errors: 0, elapsed, latency_us: new_histogram() };
    for result in results {
        let (ops, errors, histogram) = result?;
        report.ops += ops;
        report.errors += errors;
        report.latency_us.add(&histogram).map_err(|e| e.to_string())?;
    }
    Ok(report)
}

/// One client's successful operations, errors and latencies.
type ClientResult = (u64, u64, Histogram<u64>);

fn client_loop(config: &Config, options: &Options, index: usize) -> Result<ClientResult, String> {
    let mut client = Client::new(config, options.node, options.timeout).map_err(|e| e.to_string())?;
    let keys: Vec<Key> = (0..options.keys_per_client.max(1))
        .map(|k| match options.workload {
            Workload::Contended => Key(format!("{}hot", options.key_prefix).into_bytes()),
            _ => Key(format!("{}c{index}-k{k}", options.key_prefix).into_bytes()),
        })
        .collect();
    let value = Value(vec![b'x'; options.value_bytes]);
    if options.workload == Workload::Read {
        for key in &keys {
            client.put(key, value.clone()).map_err(|e| e.to_string())?;
        }
    }
    let (mut ops, mut errors, mut histogram) = (0u64, 0u64, new_histogram());
    let deadline = Instant::now() + options.duration;
    let mut next = 0;
    while Instant::now() < deadline {
        let key = &keys[next % keys.len()];
        next += 1;
        let change = match options.workload {
            Workload::Read => Change::Read,
            Workload::Write | Workload::Contended => Change::Put(value.clone()),
        };
        let t0 = Instant::now();
        match client.execute(key, change) {
            Ok(_) => {
                ops += 1;
                let _ = histogram.record((t0.elapsed().as_micros() as u64).max(1));
            }
            Err(e) => {
                errors += 1;
                log::debug!("bench client {index}: {e}");
            }
        }
    }
    Ok((ops, errors, histogram))
}
