//! A shared counter on paxosd: several processes increment one key with
//! compare-and-set, and no increment is lost or counted twice.
//!
//! Start the cluster (`scripts/cluster.sh start`), then run several at once:
//!
//! ```text
//! cargo build --release --example counter
//! for i in 1 2 3; do target/release/examples/counter --increments 100 & done; wait
//! target/release/paxosctl read counter      # 300 <tag>
//! ```
//!
//! The pattern: read the current value and version, write `count + 1` with
//! a CAS on that version, and on a conflict retry from the state the failed
//! CAS returned (no extra read needed). The client library retries each CAS
//! across nodes with the same request identity, so it is applied at most
//! once; only when the library reports the outcome unknown does the example
//! need to look. For that case each write carries a unique tag and the value
//! keeps the last `TAGS_KEPT` tags, so a read tells whether the write took
//! effect, instead of guessing and counting twice.

use clap::Parser;
use paxosd::client::{Client, ClientError};
use paxosd::config::Config;
use paxosd::types::{Key, Value, Version};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "paxosd.toml")]
    config: PathBuf,
    #[arg(long, default_value = "counter")]
    key: String,
    #[arg(long, default_value_t = 100)]
    increments: u32,
    /// Give up on an increment after this many conflicts.
    #[arg(long, default_value_t = 1000)]
    retries_max: u32,
}

/// How many recent writers' tags the value remembers.
const TAGS_KEPT: usize = 128;

/// The counter's value: "<count> <tag> <tag> ...", newest tag first.
struct Counter {
    count: u64,
    tags: Vec<String>,
}

fn parse(value: &Option<Value>) -> Counter {
    let text = value.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let text = text.unwrap_or_default();
    let mut words = text.split(' ');
    let count = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    Counter { count, tags: words.map(str::to_string).collect() }
}

fn encode(count: u64, tag: &str, older: &[String]) -> Value {
    let mut text = format!("{count} {tag}");
    for t in older.iter().take(TAGS_KEPT - 1) {
        text.push(' ');
        text.push_str(t);
    }
    Value(text.into_bytes())
}

/// Adds one to the counter; returns the new count.
pub fn increment(client: &mut Client, key: &Key, tag: &str, retries_max: u32) -> Result<u64, String> {
    let answer = client.read(key).map_err(|e| e.to_string())?;
    let (mut value, mut version): (Option<Value>, Version) = (answer.value, answer.version);
    for _ in 0..retries_max {
        let counter = parse(&value);
        let next = counter.count + 1;
        match client.cas_version(key, version, encode(next, tag, &counter.tags)) {
            Ok(answer) if answer.precondition_held => return Ok(next),
            // Someone else incremented first: retry on top of their state
            // (read it when the answer could not tell the value).
            Ok(answer) if answer.value_known => (value, version) = (answer.value, answer.version),
            Ok(_) => {
                let seen = client.read(key).map_err(|e| e.to_string())?;
                (value, version) = (seen.value, seen.version);
            }
            // Not applied (no quorum within the timeout): try again.
            Err(ClientError::NoQuorum { .. }) => {}
            Err(ClientError::Unknown { .. }) => {
                // Unknown outcome: the tags tell whether our write applied.
                let seen = client.read(key).map_err(|e| e.to_string())?;
                let seen_counter = parse(&seen.value);
                if seen_counter.tags.iter().any(|t| t == tag) {
                    return Ok(seen_counter.count);
                }
                if seen.version.0 > version.0 + TAGS_KEPT as u64 {
                    return Err("outcome unknown: too many writes since to tell".into());
                }
                (value, version) = (seen.value, seen.version);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("gave up after {retries_max} conflicts"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("counter: {e}");
            return ExitCode::from(2);
        }
    };
    let mut client = match Client::new(&config, None, Duration::from_millis(config.client_timeout_ms)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("counter: {e}");
            return ExitCode::from(1);
        }
    };
    let key = Key(args.key.into_bytes());
    let mut last = 0;
    for i in 0..args.increments {
        let tag = format!("{}-{i}", std::process::id());
        match increment(&mut client, &key, &tag, args.retries_max) {
            Ok(count) => last = count,
            Err(e) => {
                eprintln!("counter: increment {i} failed: {e}");
                return ExitCode::from(1);
            }
        }
    }
    println!(
        "process {}: {} increments, counter was {last} after my last one",
        std::process::id(),
        args.increments
    );
    ExitCode::SUCCESS
}
