//! Locks, leader election and fencing on the blocking client: the
//! `core::lease` machine (every decision) driven over a `client::Client`
//! (the I/O), for `paxosctl lock`, `paxosctl elect` and the examples.
//!
//! A holder keeps its lock by calling `Lock::keep` often enough (at least a
//! few times per TTL; `keep` says when next); it loses it when a renewal
//! cannot be made in time. What it protects must check the holder's token
//! (`fenced_put` shows how with a compare-and-set on the protected key's
//! version): a holder that was paused or cut off past its lease is then
//! refused there, whatever it believes. See `core::lease` for the rule that
//! decides expiry without a shared clock and the guarantee it gives.

use crate::change::Change;
use crate::client::{Client, ClientError, Ending};
use crate::core::client::Unknown;
use crate::core::lease::{Action, HolderId, Lease, LeaseRecord, LostWhy, Status};
use crate::limits;
use crate::types::{Key, Time, Value, Version};
use std::fmt;
use std::time::{Duration, Instant};

pub use crate::core::lease::acquire_wait_us;

#[derive(Debug)]
pub enum LockError {
    /// The lease was lost: it ran out before a renewal came back, or the
    /// lock changed hands. The holder must stop acting on it.
    Lost { token: Version, why: LostWhy },
    /// Not taken before the caller's deadline.
    NotAcquired,
    /// The key holds a value that is not a lock; nothing was written.
    NotALock(Key),
    /// The client could not talk to the cluster.
    Client(ClientError),
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Lost { token, why: LostWhy::Expired } => write!(
                f,
                "the lease (token {token}) ran out before a renewal came back (the holder was paused, \
                 overloaded or cut off from a majority): it is no longer held"
            ),
            LockError::Lost { token, why: LostWhy::Taken } => {
                write!(f, "the lock (token {token}) changed hands: it is no longer held")
            }
            LockError::NotAcquired => write!(f, "the lock was not acquired before the deadline"),
            LockError::NotALock(key) => {
                write!(f, "key {key} holds a value that is not a lock; nothing was written to it")
            }
            LockError::Client(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LockError {}

impl From<ClientError> for LockError {
    fn from(e: ClientError) -> Self {
        LockError::Client(e)
    }
}

/// One session's lock (or office, for an election) on one key.
///
/// Its clock is the boot-time clock (`CLOCK_BOOTTIME`), which, unlike
/// `Instant`, keeps counting while the machine is suspended: a holder
/// whose machine slept through its lease finds it lost when it wakes.
pub struct Lock {
    lease: Lease,
    origin_boot_us: u64,
}

/// What one step of the machine did.
enum Stepped {
    /// Ran a change: ask again at once.
    Ran,
    /// Nothing to do before this instant.
    Idle(Instant),
}

/// Microseconds of the boot-time clock, which counts time suspended too;
/// of the monotonic clock where there is none.
fn boot_time_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through the valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1000)
}

impl Lock {
    /// A lock on `name`, held for `ttl` per renewal, whose record carries
    /// `label` (who holds it, or the elected value). Not taken yet.
    pub fn new(name: &Key, ttl: Duration, label: Vec<u8>) -> Lock {
        let holder = HolderId(crate::seed::os_seed() | 1);
        let ttl_ms = ttl.as_millis().min(u128::from(u64::MAX)) as u64;
        let lease = Lease::new(Time(0), name.clone(), holder, ttl_ms, label);
        Lock { lease, origin_boot_us: boot_time_us() }
    }

    /// Waits until the lock is held (or `deadline` passes) and returns its
    /// fencing token.
    pub fn acquire(&mut self, client: &mut Client, deadline: Option<Instant>) -> Result<Version, LockError> {
        loop {
            if let Some(token) = self.token() {
                return Ok(token);
            }
            self.settled()?;
            let Stepped::Idle(next) = self.step(client)? else { continue };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.lease.release();
                return Err(LockError::NotAcquired);
            }
            let wake = deadline.map_or(next, |d| next.min(d));
            std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
    }

    /// Renews the lease if due; the lock is held until the returned time at
    /// least, and `keep` should be called again by then (it returns earlier
    /// when a renewal is due). Blocks only while a renewal is in flight.
    pub fn keep(&mut self, client: &mut Client) -> Result<Instant, LockError> {
        let next = match self.step(client)? {
            Stepped::Ran => Instant::now(),
            Stepped::Idle(next) => next,
        };
        self.settled()?;
        Ok(next)
    }

    /// The fencing token while the lock is held.
    pub fn token(&self) -> Option<Version> {
        match self.lease.status(self.now()) {
            Status::Held { token, .. } => Some(token),
            _ => None,
        }
    }

    /// Until when the lease holds by this process's clock, while held.
    pub fn valid_until(&self) -> Option<Instant> {
        match self.lease.status(self.now()) {
            Status::Held { valid_until, .. } => Some(self.instant(valid_until)),
            _ => None,
        }
    }

    /// Who this lock's records name as holder.
    pub fn holder(&self) -> HolderId {
        self.lease.holder()
    }

    pub fn status(&self) -> Status {
        self.lease.status(self.now())
    }

    /// Releases the lock (deletes it at the holder's version), so the next
    /// acquirer need not wait for the lease to run out. A lock not held is
    /// given up. Bounded: a release that keeps failing is left to run out.
    pub fn release(&mut self, client: &mut Client) -> Result<(), LockError> {
        self.lease.release();
        for _ in 0..limits::LEASE_RELEASE_ATTEMPTS_MAX * 4 {
            match self.lease.poll(self.now()) {
                Action::Finished => return Ok(()),
                Action::Run(change) => self.run(client, change)?,
                Action::WaitUntil(at) => {
                    std::thread::sleep(self.instant(at).saturating_duration_since(Instant::now()))
                }
                Action::InFlight => {}
            }
        }
        Ok(())
    }

    /// Does what the machine asks now.
    fn step(&mut self, client: &mut Client) -> Result<Stepped, LockError> {
        match self.lease.poll(self.now()) {
            Action::Run(change) => self.run(client, change).map(|()| Stepped::Ran),
            Action::WaitUntil(at) => Ok(Stepped::Idle(self.instant(at))),
            Action::InFlight | Action::Finished => {
                Ok(Stepped::Idle(Instant::now() + Duration::from_millis(limits::LEASE_POLL_MS)))
            }
        }
    }

    /// Runs one change for the machine. While held, a renewal may take no
    /// longer than the lease has left: its end is the machine's to judge.
    fn run(&mut self, client: &mut Client, change: Change) -> Result<(), LockError> {
        let mut timeout = client.timeout();
        if let Some(until) = self.valid_until() {
            timeout = timeout.min(until.saturating_duration_since(Instant::now()));
        }
        let key = self.lease.key().clone();
        // A socket error leaves the change's fate unknown, like a silence.
        let result = client.run(&key, change, timeout.max(Duration::from_millis(1)));
        let ending = result.as_ref().map_or(Ending::Unknown(Unknown::NoAnswer), Ending::clone);
        self.lease.handle_ending(self.now(), &ending);
        result.map(|_| ()).map_err(LockError::from)
    }

    /// An error for a lease that can no longer be held.
    fn settled(&self) -> Result<(), LockError> {
        match self.lease.status(self.now()) {
            Status::Lost { token, why } => Err(LockError::Lost { token, why }),
            Status::NotALock => Err(LockError::NotALock(self.lease.key().clone())),
            _ => Ok(()),
        }
    }

    fn now(&self) -> Time {
        Time(boot_time_us().saturating_sub(self.origin_boot_us))
    }

    /// The `Instant` at which the lease's clock will show `at` (to sleep
    /// until), if the machine is not suspended meanwhile; `now` tells after.
    fn instant(&self, at: Time) -> Instant {
        Instant::now() + Duration::from_micros(at.micros_since(self.now()))
    }
}

/// Who holds a lock (or office) now, as the register says: the label and
/// the version of its record. `None` when free. A record past its lease
/// still shows until someone takes the lock; `elect --observe` judges that.
pub fn current_holder(
    client: &mut Client,
    name: &Key,
) -> Result<Option<(LeaseRecord, Version)>, ClientError> {
    let answer = client.read(name)?;
    Ok(answer.value.as_ref().and_then(LeaseRecord::decode).map(|r| (r, answer.version)))
}

/// How a fenced write went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fenced {
    /// Written; the key's new version.
    Written(Version),
    /// A holder with a larger token wrote the key already: this holder's
    /// lock was taken over, and its write is refused.
    Refused { newer: Version },
}

/// Writes `value` to `key` on behalf of the holder of token `token`, unless
/// a holder with a larger token wrote it first: the protected store's
/// fencing check, built from a read and a compare-and-set on the version
/// read. The key holds `TOKEN VALUE`; `fenced_value` splits it.
pub fn fenced_put(
    client: &mut Client,
    key: &Key,
    token: Version,
    value: &[u8],
) -> Result<Fenced, ClientError> {
    let stored = [format!("{} ", token.0).as_bytes(), value].concat();
    for _ in 0..limits::FENCED_PUT_ATTEMPTS_MAX {
        let current = client.read(key)?;
        let newest = current.value.as_ref().and_then(|v| fenced_value(v)).map(|(t, _)| t);
        if let Some(newer) = newest.filter(|&t| t > token) {
            return Ok(Fenced::Refused { newer });
        }
        let answer = client.cas_version(key, current.version, Value(stored.clone()))?;
        if answer.precondition_held {
            return Ok(Fenced::Written(answer.version));
        }
    }
    Err(ClientError::Refused(crate::wire::Refusal::Overloaded))
}

/// The token and value a fenced key holds (`None`: not a fenced value).
pub fn fenced_value(value: &Value) -> Option<(Version, &[u8])> {
    let bytes = value.as_bytes();
    let space = bytes.iter().position(|&b| b == b' ')?;
    let token = std::str::from_utf8(&bytes[..space]).ok()?.parse().ok()?;
    Some((Version(token), &bytes[space + 1..]))
}
