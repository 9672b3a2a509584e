//! A shard map updated by compare-and-set: which node serves each shard,
//! in one key, moved by many operators at once without losing a move.
//!
//! Start the cluster (`scripts/cluster.sh start`), then:
//!
//! ```text
//! cargo build --release --example shard_map
//! target/release/examples/shard_map --shard 3 --to node-b
//! target/release/paxosctl read shards/map      # "0=node-a 1=node-a 2=node-a 3=node-b ..."
//! ```
//!
//! The pattern: read the map and its version, change one entry, write it
//! back with a compare-and-set on that version; on a conflict, start over
//! from the state the cluster answered with. Two operators moving different
//! shards at once both succeed, one after the other; neither move is lost.

use clap::Parser;
use paxosd::client::Client;
use paxosd::config::Config;
use paxosd::types::{Key, Value, Version};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "paxosd.toml")]
    config: PathBuf,
    #[arg(long, default_value = "shards/map")]
    key: String,
    /// Shards in the map (created on first use, all on --initial).
    #[arg(long, default_value_t = 8)]
    shards: u32,
    #[arg(long, default_value = "node-a")]
    initial: String,
    /// The shard to move.
    #[arg(long)]
    shard: u32,
    /// Where to move it.
    #[arg(long)]
    to: String,
}

/// Shard number to owner.
pub type ShardMap = BTreeMap<u32, String>;

pub fn parse(value: Option<&Value>, shards: u32, initial: &str) -> ShardMap {
    let Some(value) = value else {
        return (0..shards).map(|s| (s, initial.to_string())).collect();
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let entry = |word: &str| word.split_once('=').and_then(|(s, o)| Some((s.parse().ok()?, o.to_string())));
    text.split(' ').filter_map(entry).collect()
}

pub fn encode(map: &ShardMap) -> Value {
    let words: Vec<String> = map.iter().map(|(s, o)| format!("{s}={o}")).collect();
    Value(words.join(" ").into_bytes())
}

/// A move that keeps losing to others gives up after this many attempts.
const ATTEMPTS_MAX: u32 = 1000;

/// Moves `shard` to `to`; returns the map's version after the move.
pub fn move_shard(
    client: &mut Client,
    key: &Key,
    shards: u32,
    initial: &str,
    shard: u32,
    to: &str,
) -> Result<Version, String> {
    let mut current = client.read(key).map_err(|e| e.to_string())?;
    for _ in 0..ATTEMPTS_MAX {
        let mut map = parse(current.value.as_ref(), shards, initial);
        map.insert(shard, to.to_string());
        let answer = client.cas_version(key, current.version, encode(&map)).map_err(|e| e.to_string())?;
        if answer.precondition_held {
            return Ok(answer.version);
        }
        // Another move came first: start over from the map as it is now.
        current = client.read(key).map_err(|e| e.to_string())?;
    }
    Err(format!("gave up after {ATTEMPTS_MAX} conflicting moves"))
}

#[allow(dead_code)]
fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let mut client = match Client::new(&config, None, Duration::from_millis(config.client_timeout_ms)) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let key = Key::from(args.key.as_str());
    match move_shard(&mut client, &key, args.shards, &args.initial, args.shard, &args.to) {
        Ok(version) => {
            println!("shard {} moved to {} (map version {version})", args.shard, args.to);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("shard_map: {message}");
    ExitCode::FAILURE
}
