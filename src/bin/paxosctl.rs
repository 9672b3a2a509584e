//! `paxosctl`: the command line of a paxosd cluster.

use clap::{Args as ClapArgs, Parser, Subcommand};
use paxosd::client::{Answer, Client, ClientError};
use paxosd::config::Config;
use paxosd::types::{Key, NodeId, Value, Version};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXIT_OK: u8 = 0;
const EXIT_OTHER: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_PRECONDITION: u8 = 3;
const EXIT_NO_QUORUM: u8 = 4;

/// Read and change keys of a paxosd cluster.
///
/// Every key is a linearizable register: a read returns the latest
/// acknowledged write, and an acknowledged write is never lost while a
/// majority of nodes is up.
///
/// Examples:
///   paxosctl propose greeting hello          # prints the new version
///   paxosctl read greeting                   # prints hello
///   paxosctl --node 2 read greeting --json   # ask node 2, print JSON
///   paxosctl cas greeting bye --expect-value hello
///   paxosctl cas greeting bye --expect-version 3
///   paxosctl delete greeting
///   paxosctl status
///
/// Exit codes:
///   0  success
///   1  anything else (network error, no node answered, ...)
///   2  usage or config error
///   3  precondition failed: the CAS expectation did not hold, nothing changed
///   4  no quorum within the timeout: the outcome is unknown
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// The cluster config file.
    #[arg(long, global = true, default_value = "paxosd.toml", value_name = "FILE")]
    config: PathBuf,
    /// Ask only this node (default: the nodes in turn, until one answers).
    #[arg(long, global = true, value_name = "ID")]
    node: Option<u16>,
    /// Give up after this many milliseconds (default: client.timeout_ms of
    /// the config, 5000 if unset). On timeout the exit code is 4.
    #[arg(long, global = true, value_name = "MS")]
    timeout_ms: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set KEY to VALUE; prints the new version.
    Propose { key: String, value: String },
    /// Print KEY's value (nothing, and exit 0, when absent).
    Read {
        key: String,
        /// Print {"key":..,"value":..,"version":..} (value null when absent).
        #[arg(long)]
        json: bool,
    },
    /// Compare-and-set: set KEY to NEW if it holds the expected value or
    /// version; prints the new version. Exit 3 (and no change) otherwise.
    Cas(CasArgs),
    /// Delete KEY (leaves a tombstone; the version keeps counting).
    Delete { key: String },
    /// Show which nodes answer, with their id and address.
    Status,
}

#[derive(ClapArgs)]
#[group(required = true, multiple = false)]
struct CasExpect {
    /// The value KEY must hold.
    #[arg(long, value_name = "OLD")]
    expect_value: Option<String>,
    /// The version KEY must be at (0: never written).
    #[arg(long, value_name = "N")]
    expect_version: Option<u64>,
    /// KEY must be absent (never written, or deleted).
    #[arg(long)]
    expect_absent: bool,
}

#[derive(ClapArgs)]
struct CasArgs {
    key: String,
    new: String,
    #[command(flatten)]
    expect: CasExpect,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    ExitCode::from(run(cli))
}

fn run(cli: Cli) -> u8 {
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, &e.to_string()),
    };
    let timeout = Duration::from_millis(cli.timeout_ms.unwrap_or(config.client_timeout_ms));
    if timeout.is_zero() || timeout.as_millis() > u128::from(paxosd::limits::REQUEST_TIMEOUT_MS_MAX) {
        let max = paxosd::limits::REQUEST_TIMEOUT_MS_MAX;
        return fail(EXIT_USAGE, &format!("--timeout-ms must be between 1 and {max}"));
    }
    let mut client = match Client::new(&config, cli.node.map(NodeId), timeout) {
        Ok(c) => c,
        Err(ClientError::UnknownNode(id)) => {
            return fail(EXIT_USAGE, &format!("node {id} is not in {}", config.path.display()));
        }
        Err(e) => return fail(EXIT_OTHER, &e.to_string()),
    };
    match cli.command {
        Command::Propose { key, value } => {
            print_version(client.put(&Key::from(key.as_str()), value_of(&value)))
        }
        Command::Read { key, json } => read(&mut client, &key, json),
        Command::Cas(args) => cas(&mut client, args),
        Command::Delete { key } => print_version(client.delete(&Key::from(key.as_str()))),
        Command::Status => status(&mut client),
    }
}

fn value_of(s: &str) -> Value {
    Value(s.as_bytes().to_vec())
}

fn fail(code: u8, message: &str) -> u8 {
    eprintln!("paxosctl: {message}");
    code
}

fn client_error(e: ClientError) -> u8 {
    let code = match e {
        ClientError::NoQuorum { .. } => EXIT_NO_QUORUM,
        ClientError::UnknownNode(_) => EXIT_USAGE,
        _ => EXIT_OTHER,
    };
    fail(code, &e.to_string())
}

fn print_version(result: Result<Answer, ClientError>) -> u8 {
    match result {
        Ok(answer) => {
            println!("{}", answer.state.version);
            EXIT_OK
        }
        Err(e) => client_error(e),
    }
}

fn read(client: &mut Client, key: &str, json: bool) -> u8 {
    let answer = match client.read(&Key::from(key)) {
        Ok(a) => a,
        Err(e) => return client_error(e),
    };
    let value = answer.state.value.as_ref().map(|v| v.as_bytes());
    if json {
        let text = serde_json::json!({
            "key": key,
            "value": value.map(|v| String::from_utf8_lossy(v).into_owned()),
            "version": answer.state.version.0,
        });
        println!("{text}");
    } else if let Some(bytes) = value {
        let mut out = std::io::stdout().lock();
        if out.write_all(bytes).and_then(|_| out.write_all(b"\n")).is_err() {
            return EXIT_OTHER;
        }
    }
    EXIT_OK
}

fn cas(client: &mut Client, args: CasArgs) -> u8 {
    let key = Key::from(args.key.as_str());
    let new = value_of(&args.new);
    let result = match (args.expect.expect_value, args.expect.expect_version) {
        (Some(old), _) => client.cas_value(&key, Some(value_of(&old)), new),
        (None, Some(v)) => client.cas_version(&key, Version(v), new),
        (None, None) => client.cas_value(&key, None, new),
    };
    match result {
        Ok(answer) if answer.precondition_held => {
            println!("{}", answer.state.version);
            EXIT_OK
        }
        Ok(answer) => {
            let current = match &answer.state.value {
                Some(v) => format!("{:?}", String::from_utf8_lossy(v.as_bytes())),
                None => "absent".to_string(),
            };
            let version = answer.state.version;
            fail(
                EXIT_PRECONDITION,
                &format!("precondition failed, nothing changed: {key} is {current} at version {version}"),
            )
        }
        Err(e) => client_error(e),
    }
}

fn status(client: &mut Client) -> u8 {
    let mut answered = 0;
    let results = client.status_all();
    let total = results.len();
    for (id, addr, result) in results {
        match result {
            Ok(s) => {
                answered += 1;
                println!(
                    "node {id}  {addr}  up  keys={} in_flight={} log_bytes={} uptime_s={}",
                    s.keys,
                    s.requests_in_flight,
                    s.log_bytes,
                    s.uptime_ms / 1000
                );
            }
            Err(_) => println!("node {id}  {addr}  DOWN (no answer)"),
        }
    }
    let majority = total / 2 + 1;
    println!("{answered} of {total} nodes answer; a quorum needs {majority}");
    if answered == 0 { EXIT_OTHER } else { EXIT_OK }
}
