//! A lock whose protected store checks the fencing token, so a holder that
//! was paused past its lease is refused when it resumes.
//!
//! Start the cluster (`scripts/cluster.sh start`), then, in two shells:
//!
//! ```text
//! cargo build --release --example fenced_lock
//! target/release/examples/fenced_lock --pause 3    # takes the lock, then stalls
//! target/release/examples/fenced_lock              # takes it once the first's lease ran out
//! ```
//!
//! The first one writes, then stops renewing for `--pause` seconds (as a
//! process stopped by SIGSTOP or a long GC pause would), then tries to
//! write again. By then the second holds the lock with a larger token and
//! has written; the first one's write is refused by the store, not by any
//! clock, and it reports its lease lost.
//!
//! The pattern: the protected key holds `TOKEN VALUE`; a writer reads it,
//! refuses to write if the stored token is larger than its own, and writes
//! with a compare-and-set on the version it read
//! (`paxosd::lock::fenced_put`).

use clap::Parser;
use paxosd::client::Client;
use paxosd::config::Config;
use paxosd::lock::{Fenced, Lock, LockError, fenced_put};
use paxosd::types::{Key, Version};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "paxosd.toml")]
    config: PathBuf,
    /// The lock's name.
    #[arg(long, default_value = "fenced-lock")]
    name: String,
    /// The protected key.
    #[arg(long, default_value = "fenced-data")]
    key: String,
    /// The lease, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    ttl_ms: u64,
    /// Stall this long (seconds) without renewing before the last write.
    #[arg(long, default_value_t = 0.0)]
    pause: f64,
}

/// How one holder's run went.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub token: Version,
    /// Versions of the protected key this holder wrote.
    pub written: Vec<Version>,
    /// The larger token that refused the last write, if one did.
    pub refused_by: Option<Version>,
    /// Whether the holder found its lease lost after the pause.
    pub lost: bool,
}

/// Takes the lock, writes `label` twice under its token, stalls for
/// `pause` without renewing, writes once more, and releases.
pub fn run(
    client: &mut Client,
    name: &Key,
    key: &Key,
    ttl: Duration,
    pause: Duration,
    label: &str,
) -> Result<Report, LockError> {
    let mut lock = Lock::new(name, ttl, label.as_bytes().to_vec());
    let token = lock.acquire(client, None)?;
    let mut report = Report { token, written: Vec::new(), refused_by: None, lost: false };
    for _ in 0..3 {
        if report.written.len() == 2 {
            std::thread::sleep(pause);
        }
        match fenced_put(client, key, token, label.as_bytes())? {
            Fenced::Written(version) => report.written.push(version),
            Fenced::Refused { newer } => {
                report.refused_by = Some(newer);
                break;
            }
        }
        if let Err(LockError::Lost { .. }) = lock.keep(client) {
            report.lost = true;
            break;
        }
    }
    report.lost |= matches!(lock.keep(client), Err(LockError::Lost { .. }));
    lock.release(client)?;
    Ok(report)
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
    let label = format!("pid {}", std::process::id());
    let (name, key) = (Key::from(args.name.as_str()), Key::from(args.key.as_str()));
    let pause = Duration::from_secs_f64(args.pause.max(0.0));
    match run(&mut client, &name, &key, Duration::from_millis(args.ttl_ms), pause, &label) {
        Ok(report) => {
            println!("{report:?}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("fenced_lock: {message}");
    ExitCode::FAILURE
}
