//! Leader election driving a primary/secondary failover table.
//!
//! Each instance campaigns for the office `failover/leader`; the one
//! elected writes the table `failover/table` ("primary=NAME
//! secondaries=A,B") under its fencing token, and keeps the office while it
//! runs. Kill it, and once its lease runs out another instance is elected
//! and rewrites the table; the old primary, should it come back, is fenced
//! off by its smaller token.
//!
//! Start the cluster (`scripts/cluster.sh start`), then:
//!
//! ```text
//! cargo build --release --example failover
//! for n in db1 db2 db3; do target/release/examples/failover --name $n --all db1,db2,db3 & done
//! target/release/paxosctl read failover/table    # "TOKEN primary=db1 secondaries=db2,db3"
//! kill %1; sleep 3; target/release/paxosctl read failover/table
//! ```

use clap::Parser;
use paxosd::client::Client;
use paxosd::config::Config;
use paxosd::lock::{Fenced, Lock, LockError, fenced_put};
use paxosd::types::{Key, Version};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "paxosd.toml")]
    config: PathBuf,
    /// This instance's name.
    #[arg(long)]
    name: String,
    /// Every instance's name, comma-separated.
    #[arg(long)]
    all: String,
    /// The office's lease, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    ttl_ms: u64,
    /// Serve as primary for at most this many seconds, then step down.
    #[arg(long, default_value_t = 3600)]
    serve_s: u64,
}

pub const OFFICE: &str = "failover/leader";
pub const TABLE: &str = "failover/table";

/// The table with `primary` first and every other instance a secondary.
pub fn table(primary: &str, all: &[&str]) -> String {
    let secondaries: Vec<&str> = all.iter().copied().filter(|n| *n != primary).collect();
    format!("primary={primary} secondaries={}", secondaries.join(","))
}

/// How one term in office ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Term {
    /// Served until `serve` was over, then stepped down.
    SteppedDown { token: Version },
    /// The office was lost (the lease ran out) or a newer primary had
    /// written the table already.
    Lost { token: Version },
}

/// Campaigns, writes the table once elected, and holds the office for
/// `serve` (renewing), or until it is lost.
pub fn serve(
    client: &mut Client,
    name: &str,
    all: &[&str],
    ttl: Duration,
    serve: Duration,
) -> Result<Term, LockError> {
    let mut office = Lock::new(&Key::from(OFFICE), ttl, name.as_bytes().to_vec());
    let token = office.acquire(client, None)?;
    let written = fenced_put(client, &Key::from(TABLE), token, table(name, all).as_bytes())?;
    if let Fenced::Refused { .. } = written {
        return Ok(Term::Lost { token });
    }
    let until = Instant::now() + serve;
    while Instant::now() < until {
        match office.keep(client) {
            Ok(next) => std::thread::sleep(next.min(until).saturating_duration_since(Instant::now())),
            Err(LockError::Lost { .. }) => return Ok(Term::Lost { token }),
            Err(e) => return Err(e),
        }
    }
    office.release(client)?;
    Ok(Term::SteppedDown { token })
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
    let all: Vec<&str> = args.all.split(',').collect();
    let ttl = Duration::from_millis(args.ttl_ms);
    match serve(&mut client, &args.name, &all, ttl, Duration::from_secs(args.serve_s)) {
        Ok(term) => {
            println!("{}: {term:?}", args.name);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("failover: {message}");
    ExitCode::FAILURE
}
