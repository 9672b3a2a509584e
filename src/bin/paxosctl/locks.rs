//! `paxosctl lock`, `paxosctl elect` and `paxosctl fenced-put`: the
//! library's `lock` module with a child process, signals and exit codes.

use super::{EXIT_OK, EXIT_OTHER, EXIT_PRECONDITION, EXIT_USAGE, client_error, fail};
use clap::Args as ClapArgs;
use paxosd::client::Client;
use paxosd::core::lease::{HolderId, LeaseRecord, outlived};
use paxosd::lock::{self, Fenced, Lock, LockError};
use paxosd::types::{Key, Version};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The lease was lost while the command ran (it was sent SIGTERM), or
/// while holding an office.
pub const EXIT_LEASE_LOST: u8 = 6;
/// The lock was not acquired within --wait.
pub const EXIT_NOT_ACQUIRED: u8 = 7;
/// The command could not be started.
const EXIT_CANNOT_RUN: u8 = 127;

/// How often the holder looks at its command and its lease at most.
const HOLD_TICK: Duration = Duration::from_millis(20);

#[derive(ClapArgs)]
pub struct LockArgs {
    /// The lock's name: a key of its own (do not write it otherwise).
    name: String,
    /// How long the lease holds without a renewal, in seconds. The lock is
    /// renewed three times per TTL while the command runs; a holder that
    /// cannot renew in time (cut off, paused) loses it after TTL, and
    /// another may take it after TTL plus 1%.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    ttl: f64,
    /// Give up waiting for the lock after this many seconds (exit 7).
    /// Default: wait as long as it takes.
    #[arg(long, value_name = "SECONDS")]
    wait: Option<f64>,
    /// Seconds the command has to exit after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    grace: f64,
    /// The command to run while holding the lock, and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(ClapArgs)]
pub struct ElectArgs {
    /// The office's name: a key of its own.
    name: String,
    /// What this candidate stands for (its address, say); printed by
    /// observers while it holds the office.
    #[arg(required_unless_present = "observe")]
    value: Option<String>,
    /// Do not campaign: print each new leader's value (and "-" when the
    /// office is vacant), one line each.
    #[arg(long, conflicts_with = "value")]
    observe: bool,
    /// With --observe: exit after printing this many lines.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// How long the office is held without a renewal, in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    ttl: f64,
}

#[derive(ClapArgs)]
pub struct FencedPutArgs {
    key: String,
    value: String,
    /// The writer's fencing token ($PAXOSD_LOCK_TOKEN under `paxosctl lock`).
    #[arg(long, value_name = "TOKEN")]
    token: u64,
}

fn seconds(s: f64, what: &str) -> Result<Duration, u8> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| fail(EXIT_USAGE, &format!("{what} must be a number of seconds")))
}

fn ttl_of(s: f64) -> Result<Duration, u8> {
    let ttl = seconds(s, "--ttl")?;
    let ms = ttl.as_millis();
    let (min, max) = (paxosd::limits::LEASE_TTL_MS_MIN, paxosd::limits::LEASE_TTL_MS_MAX);
    if ms < u128::from(min) || ms > u128::from(max) {
        return Err(fail(
            EXIT_USAGE,
            &format!("--ttl must be between {} and {} seconds", min as f64 / 1000.0, max / 1000),
        ));
    }
    Ok(ttl)
}

/// SIGINT and SIGTERM, noted instead of ending the process: the holder
/// passes them on to its command and releases the lock.
fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&flag)) {
            eprintln!("paxosctl: cannot catch signal {signal}: {e}");
        }
    }
    flag
}

fn label() -> Vec<u8> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("pid {} on {}", std::process::id(), host.trim()).into_bytes()
}

pub fn lock(client: &mut Client, args: LockArgs) -> u8 {
    let (ttl, grace) = match (ttl_of(args.ttl), seconds(args.grace, "--grace")) {
        (Ok(t), Ok(g)) => (t, g),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let wait = match args.wait.map(|w| seconds(w, "--wait")).transpose() {
        Ok(w) => w,
        Err(code) => return code,
    };
    let name = Key::from(args.name.as_str());
    let mut held = Lock::new(&name, ttl, label());
    let token = match held.acquire(client, wait.map(|w| Instant::now() + w)) {
        Ok(token) => token,
        Err(e) => return lock_error(&name, e),
    };
    eprintln!("paxosctl: lock {name} acquired, token {token}");
    let stop = stop_flag();
    let child = command_of(&args.command)
        .env("PAXOSD_LOCK_TOKEN", token.0.to_string())
        .env("PAXOSD_LOCK_NAME", &args.name)
        .spawn();
    let code = match child {
        Ok(child) => hold_while_running(client, &mut held, child, &stop, grace),
        Err(e) => fail(EXIT_CANNOT_RUN, &format!("cannot run {}: {e}", args.command[0])),
    };
    if let Err(e) = held.release(client) {
        eprintln!("paxosctl: lock {name} not released ({e}); it runs out after its TTL");
    }
    code
}

/// The command, in a process group of its own, so that a lost lease stops
/// everything it started (signals go to the group), and sent SIGTERM by
/// the kernel should this process die (`PR_SET_PDEATHSIG`): nothing it
/// started runs on without the lock being renewed.
fn command_of(argv: &[String]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]).process_group(0);
    let parent = std::process::id();
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (prctl, getppid), and nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            // This process may have died before prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other("paxosctl lock exited before the command started"));
            }
            Ok(())
        });
    }
    command
}

/// Renews the lock until the command exits (its exit code) or the lease is
/// lost (the command is sent SIGTERM, then SIGKILL after `grace`).
fn hold_while_running(
    client: &mut Client,
    held: &mut Lock,
    mut child: Child,
    stop: &AtomicBool,
    grace: Duration,
) -> u8 {
    let mut forwarded = false;
    loop {
        // The lease first: after a pause, a command that ended meanwhile
        // may have run without the lock, and that is what to report.
        let next = match held.keep(client) {
            Ok(next) => next,
            Err(e) => {
                eprintln!("paxosctl: lock lost: {e}; stopping the command (SIGTERM)");
                stop_within(&mut child, grace);
                return EXIT_LEASE_LOST;
            }
        };
        match child.try_wait() {
            Ok(Some(status)) => return exit_code_of(status),
            Ok(None) => {}
            Err(e) => eprintln!("paxosctl: cannot look at the command: {e}"),
        }
        if stop.load(Ordering::Relaxed) && !forwarded {
            forwarded = true;
            terminate(&child);
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()).min(HOLD_TICK));
    }
}

/// Sends `signal` to the command's process group (the command and all it
/// started).
fn signal_group(child: &Child, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else { return };
    // SAFETY: kill(2) on the process group of a child this process spawned
    // (its leader, whose pid is not reaped yet, keeps the group id taken).
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn terminate(child: &Child) {
    signal_group(child, libc::SIGTERM);
}

/// SIGTERM to the command's group, then SIGKILL to what is left of it once
/// the command has exited or `grace` has passed: nothing it started may run
/// on without the lock.
fn stop_within(child: &mut Child, grace: Duration) {
    terminate(child);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(HOLD_TICK);
    }
    signal_group(child, libc::SIGKILL);
    let _ = child.wait();
}

/// A shell's convention: the exit code, or 128 + the signal that ended it.
fn exit_code_of(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(EXIT_OTHER),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(EXIT_OTHER),
        (None, None) => EXIT_OTHER,
    }
}

fn lock_error(name: &Key, e: LockError) -> u8 {
    match e {
        LockError::Client(e) => client_error(e),
        LockError::NotAcquired => fail(EXIT_NOT_ACQUIRED, &format!("lock {name}: {e}")),
        LockError::Lost { .. } => fail(EXIT_LEASE_LOST, &format!("lock {name}: {e}")),
        LockError::NotALock(_) => fail(EXIT_PRECONDITION, &e.to_string()),
    }
}

pub fn elect(client: &mut Client, args: ElectArgs) -> u8 {
    let ttl = match ttl_of(args.ttl) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let name = Key::from(args.name.as_str());
    match args.value {
        Some(value) if !args.observe => campaign(client, &name, ttl, value),
        _ => observe(client, &name, args.count),
    }
}

/// Holds the office until SIGINT or SIGTERM (then steps down, exit 0) or
/// until it is lost (exit 6).
fn campaign(client: &mut Client, name: &Key, ttl: Duration, value: String) -> u8 {
    let mut office = Lock::new(name, ttl, value.clone().into_bytes());
    let token = match office.acquire(client, None) {
        Ok(token) => token,
        Err(e) => return lock_error(name, e),
    };
    println!("elected: {name} = {value} (token {token})");
    let stop = stop_flag();
    while !stop.load(Ordering::Relaxed) {
        match office.keep(client) {
            Ok(next) => std::thread::sleep(next.saturating_duration_since(Instant::now()).min(HOLD_TICK)),
            Err(e) => return lock_error(name, e),
        }
    }
    match office.release(client) {
        Ok(()) => EXIT_OK,
        Err(e) => lock_error(name, e),
    }
}

/// What an observer last printed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Vacant,
    Leader(HolderId),
}

/// Prints each new leader's value, and "-" when the office falls vacant
/// (released, or its lease ran out without a renewal, judged as an
/// acquirer would).
fn observe(client: &mut Client, name: &Key, count: Option<u64>) -> u8 {
    let mut printed: Option<Seen> = None;
    let mut lines = 0u64;
    let mut last_change: Option<(Version, Instant)> = None;
    while count.is_none_or(|c| lines < c) {
        let (seen, text) = match lock::current_holder(client, name) {
            Ok(None) => (Seen::Vacant, "-".to_string()),
            Ok(Some((record, version))) => {
                let changed_at = match last_change {
                    Some((v, at)) if v == version => at,
                    _ => Instant::now(),
                };
                last_change = Some((version, changed_at));
                leader_or_vacant(&record, changed_at)
            }
            Err(e) => {
                eprintln!("paxosctl: {e}");
                std::thread::sleep(Duration::from_millis(paxosd::limits::LEASE_RETRY_MS));
                continue;
            }
        };
        if printed.as_ref() != Some(&seen) {
            println!("{text}");
            lines += 1;
            printed = Some(seen);
        }
        std::thread::sleep(Duration::from_millis(paxosd::limits::LEASE_POLL_MS));
    }
    EXIT_OK
}

/// The leader a record names, unless it has gone unrenewed longer than
/// an acquirer would wait since the version last moved.
fn leader_or_vacant(record: &LeaseRecord, changed_at: Instant) -> (Seen, String) {
    let unchanged_us = changed_at.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
    if outlived(record, unchanged_us) {
        (Seen::Vacant, "-".to_string())
    } else {
        (Seen::Leader(record.holder), String::from_utf8_lossy(&record.label).into_owned())
    }
}

pub fn fenced_put(client: &mut Client, args: FencedPutArgs) -> u8 {
    let key = Key::from(args.key.as_str());
    match lock::fenced_put(client, &key, Version(args.token), args.value.as_bytes()) {
        Ok(Fenced::Written(version)) => {
            println!("{version}");
            EXIT_OK
        }
        Ok(Fenced::Refused { newer }) => fail(
            EXIT_PRECONDITION,
            &format!(
                "refused: {key} was written under token {newer}, newer than {}: this writer's lock was taken over",
                args.token
            ),
        ),
        Err(e) => client_error(e),
    }
}
