//! `paxosd`: one node of a paxosd cluster.

use clap::Parser;
use paxosd::config::Config;
use paxosd::driver::{Driver, Options};
use paxosd::types::NodeId;
use std::path::PathBuf;
use std::process::ExitCode;

/// One node of a paxosd cluster: acceptor, proposer and learner for every key.
///
/// Every node reads the same config file, which describes the whole cluster;
/// `--id` says which of its nodes this process is. Logs go to stderr; set
/// RUST_LOG=debug for more. SIGTERM or SIGINT stop the node cleanly.
///
/// Exit codes: 0 stopped cleanly; 2 usage or config error; 1 anything else
/// (data dir refused, storage failure, port in use).
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// The cluster config file.
    #[arg(long, default_value = "paxosd.toml", value_name = "FILE")]
    config: PathBuf,
    /// Which node of the config this process is.
    #[arg(long, value_name = "ID")]
    id: u16,
    /// Initialise an empty data dir as a founding member of a NEW cluster.
    /// Never use it for a node of a running cluster that lost its data: it
    /// could break promises that node made before (see the README).
    #[arg(long, conflicts_with_all = ["rejoin", "join"])]
    bootstrap: bool,
    /// Initialise an empty data dir for a node that joins a running
    /// cluster (`joins = true` in the config): it votes on nothing until
    /// `paxosctl member add ID ADDR` adds it. Never use it for a node that
    /// was a member and lost its data: use --rejoin.
    #[arg(long, conflicts_with = "rejoin")]
    join: bool,
    /// Bring back a node of a running cluster whose data was lost or
    /// damaged: a damaged log is moved aside (acceptor.log.damaged-TIME), and
    /// the node catches up from a majority of the other nodes before it
    /// votes or serves (`paxosctl status` shows it catching up). Safe on a
    /// healthy data dir too: the node then only catches up again.
    #[arg(long)]
    rejoin: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("paxosd: {e}");
            return ExitCode::from(2);
        }
    };
    let options =
        Options { id: NodeId(args.id), bootstrap: args.bootstrap, rejoin: args.rejoin, join: args.join };
    let driver = match Driver::open(config, &options) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("paxosd: node {}: {e}", args.id);
            return ExitCode::from(if matches!(e, paxosd::driver::DriverError::UnknownNode(_)) {
                2
            } else {
                1
            });
        }
    };
    #[cfg(feature = "planted-bugs")]
    let driver = plant_bugs(driver);
    match driver.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paxosd: node {}: fatal: {e}", args.id);
            ExitCode::from(1)
        }
    }
}

/// Reads `PAXOSD_PLANTED_BUGS` (a comma-separated list of
/// `accept_below_promise`, `ignore_accepted_state`, `vote_while_catching_up`)
/// in builds made with the `planted-bugs` feature, which exist only to prove
/// the tests catch bugs.
#[cfg(feature = "planted-bugs")]
fn plant_bugs(mut driver: Driver) -> Driver {
    let list = std::env::var("PAXOSD_PLANTED_BUGS").unwrap_or_default();
    let mut bugs = paxosd::core::PlantedBugs::default();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "accept_below_promise" => bugs.accept_below_promise = true,
            "ignore_accepted_state" => bugs.ignore_accepted_state = true,
            "vote_while_catching_up" => bugs.vote_while_catching_up = true,
            other => eprintln!("paxosd: unknown planted bug {other:?} ignored"),
        }
    }
    if bugs != paxosd::core::PlantedBugs::default() {
        driver.plant_bugs(bugs);
    }
    driver
}
