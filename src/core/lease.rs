//! Leases on a register, judged without a shared clock: the sans-IO machine
//! behind locks (`paxosctl lock`), leader election (`paxosctl elect`) and
//! the simulator's lock workload.
//!
//! # The record
//! A lock is a key. Absent (never written, or deleted) it is free; held, its
//! value is a `LeaseRecord`: who holds it (a random `HolderId` per lease
//! machine), for how long each write of it holds (`ttl_ms`), and a label
//! (the elected value, or who the holder is). A holder takes the lock with a
//! compare-and-set on the version it read, renews it with a compare-and-set
//! of the same record on its current version, and releases it with a delete
//! at its current version (`Change::DeleteVersion`). Every one of those
//! writes bumps the register's version.
//!
//! # The fencing token
//! The version a successful take leaves is the holder's token. Renewals and
//! releases bump the version too, and a later take builds on them, so every
//! take's token is above every version any earlier holder wrote: tokens
//! grow strictly with each acquisition. A store the holder writes to keeps
//! the highest token it has seen and refuses lower ones (`crate::lock`
//! shows the pattern with `cas --expect-version`); that, not timing, is what
//! keeps a holder that was paused past its lease from doing harm.
//!
//! # The rule that replaces a shared clock
//! Each side measures time with its own monotonic clock, and the rates of
//! any two clocks differ by at most `limits::CLOCK_RATE_SLACK_PERMILLE`
//! (1%; the exclusive window assumes the same bound).
//! - **A holder** counts its lease from the moment it *sent* the write that
//!   took or renewed it (the first copy of that request), and holds it for
//!   `ttl` by its own clock. The write took effect after it was sent.
//! - **An acquirer** that finds the lock held counts from the moment it
//!   *received* the read that showed the holder's version, and waits
//!   `ttl × (1 + slack)` by its own clock (`acquire_wait_us`), reading the
//!   lock again meanwhile. Only if the version is still the same when the
//!   wait ends does it try its take, as a compare-and-set on that version,
//!   so a renewal or a release in between makes it start over.
//!
//! Why no two holders overlap: the read that showed version `v` was
//! answered after `v` was written, and `v`'s write was sent after the
//! holder started counting; so the acquirer starts counting after the
//! holder did, and counts longer (by more than the rates can differ). When
//! it takes the lock, the holder's lease has ended by the holder's own
//! clock, unless the holder renewed: then the version moved, and the take
//! fails. A holder that cannot renew in time (cut off, overloaded) treats
//! the lease as lost when its own clock says so, before anyone else may
//! take the lock. A holder whose process is paused past that moment learns
//! it only when it runs again: the token fences it off.
//!
//! # Driving the machine
//! `poll(now)` says what to do: run a change on the lock's key (record the
//! time; feed how it ended to `handle_ending`), wait until a time, or
//! nothing while a change is in flight. `status(now)` says whether the lease
//! is held, with its token and until when. `release()` asks for a release.
//! Every time is the driver's own monotonic clock.

use crate::change::Change;
use crate::core::client::Ending;
use crate::limits;
use crate::types::{Key, Time, Value, Version};
use std::collections::BTreeMap;
use std::fmt;

/// Who holds a lease: drawn at random for each lease machine, so two
/// machines never take one record for their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HolderId(pub u64);

impl fmt::Display for HolderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A held lock's value. Stored as text, so `paxosctl read` shows it:
/// `paxosd-lease/1 HOLDER TTL_MS LABEL`, the label being any bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: HolderId,
    pub ttl_ms: u64,
    pub label: Vec<u8>,
}

const RECORD_MAGIC: &[u8] = b"paxosd-lease/1 ";

impl LeaseRecord {
    pub fn encode(&self) -> Value {
        let head = format!("{}{} {} ", String::from_utf8_lossy(RECORD_MAGIC), self.holder, self.ttl_ms);
        Value([head.as_bytes(), &self.label].concat())
    }

    /// The record a value holds; `None` when it is not one (or its TTL is
    /// out of range: a value from the network is never trusted).
    pub fn decode(value: &Value) -> Option<LeaseRecord> {
        let rest = value.as_bytes().strip_prefix(RECORD_MAGIC)?;
        let (holder, rest) = split_word(rest)?;
        let (ttl, label) = split_word(rest)?;
        let holder = u64::from_str_radix(std::str::from_utf8(holder).ok()?, 16).ok()?;
        let ttl_ms: u64 = std::str::from_utf8(ttl).ok()?.parse().ok()?;
        let valid = (limits::LEASE_TTL_MS_MIN..=limits::LEASE_TTL_MS_MAX).contains(&ttl_ms);
        valid.then(|| LeaseRecord { holder: HolderId(holder), ttl_ms, label: label.to_vec() })
    }
}

fn split_word(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = bytes.iter().position(|&b| b == b' ')?;
    Some((&bytes[..space], &bytes[space + 1..]))
}

/// How long an acquirer waits, from receiving a read that showed a holder
/// with `ttl_ms`, before it may take the lock: the TTL stretched by the
/// largest rate difference of two clocks, plus a millisecond for rounding.
pub fn acquire_wait_us(ttl_ms: u64) -> u64 {
    let stretched = ttl_ms.saturating_mul(1000 + limits::CLOCK_RATE_SLACK_PERMILLE);
    stretched.saturating_add(1000)
}

/// Whether a holder's record, unchanged for `unchanged_us` since an
/// observer first read it, has outlived its lease by the acquirer's rule:
/// an acquirer may take the lock now, so the office counts as vacant even
/// though the record still stands (`paxosctl elect --observe`).
pub fn outlived(record: &LeaseRecord, unchanged_us: u64) -> bool {
    unchanged_us > acquire_wait_us(record.ttl_ms)
}

/// What the driver should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run this change on the lock's key, then call `handle_ending`.
    Run(Change),
    /// Nothing to do before this time (or before `release`).
    WaitUntil(Time),
    /// A change is in flight: wait for its ending.
    InFlight,
    /// The machine is done: see `status`.
    Finished,
}

/// Where a lease stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Not held (yet): waiting for the holder's lease to end, or reading.
    Waiting { holder: Option<HolderId> },
    /// Held, by this machine's clock until `valid_until`.
    Held { token: Version, valid_until: Time },
    /// It was held and is not any more; no later write of this machine
    /// takes it back.
    Lost { token: Version, why: LostWhy },
    /// Released by request (or never taken before the release).
    Released,
    /// The key holds a value that is not a lease record: nothing was
    /// written to it.
    NotALock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostWhy {
    /// No renewal succeeded before the lease ran out by this clock.
    Expired,
    /// The lock changed hands (or was deleted) while this machine held it.
    Taken,
}

/// What the change in flight was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    Read,
    Take { expect: Version },
    Renew { expect: Version },
    Release { expect: Version },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Read the lock at `at`.
    Observe { at: Time },
    /// Another holder (or nobody, `HolderId::NONE`) was seen at `seen`:
    /// take the lock at `until` unless a read (every `LEASE_POLL_MS`, the
    /// next at `read_at`) shows that the version moved.
    Waiting { seen: Version, holder: HolderId, until: Time, read_at: Time },
    /// Held since the take that left `token`; the lock is at `current`. At
    /// `next_at` renew, or read first when `check` (a write's outcome is
    /// not known, so `current` may be stale).
    Held { token: Version, current: Version, valid_until: Time, next_at: Time, check: bool },
    /// Finished: released, lost, or not a lock.
    Done(Status),
}

/// One session's lease on one lock.
#[derive(Clone, Debug)]
pub struct Lease {
    key: Key,
    record: LeaseRecord,
    phase: Phase,
    in_flight: Option<(Intent, Time)>,
    /// When the first request expecting each version was sent, of those
    /// that may still take effect: the write that leaves version `v + 1`
    /// as this holder's was sent no earlier than `sent[v]`, so its lease
    /// counts from there. Bounded.
    sent: BTreeMap<Version, Time>,
    release_asked: bool,
    release_attempts: u32,
    #[cfg(feature = "planted-bugs")]
    take_without_waiting: bool,
    #[cfg(feature = "planted-bugs")]
    counted_from_answer: bool,
}

impl HolderId {
    /// Stands for "nobody" in a waiting status: a free lock.
    pub const NONE: HolderId = HolderId(0);
}

impl Lease {
    pub fn new(now: Time, key: Key, holder: HolderId, ttl_ms: u64, label: Vec<u8>) -> Lease {
        let ttl_ms = ttl_ms.clamp(limits::LEASE_TTL_MS_MIN, limits::LEASE_TTL_MS_MAX);
        Lease {
            key,
            record: LeaseRecord { holder, ttl_ms, label },
            phase: Phase::Observe { at: now },
            in_flight: None,
            sent: BTreeMap::new(),
            release_asked: false,
            release_attempts: 0,
            #[cfg(feature = "planted-bugs")]
            take_without_waiting: false,
            #[cfg(feature = "planted-bugs")]
            counted_from_answer: false,
        }
    }

    /// Planted bug: take a held lock as soon as it is seen, without
    /// waiting for the holder's lease to end.
    #[cfg(feature = "planted-bugs")]
    pub fn plant_take_without_waiting(&mut self) {
        self.take_without_waiting = true;
    }

    /// Planted bug: count a lease from the answer to the write that took
    /// or renewed it, not from the write's send.
    #[cfg(feature = "planted-bugs")]
    pub fn plant_counted_from_answer(&mut self) {
        self.counted_from_answer = true;
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    pub fn holder(&self) -> HolderId {
        self.record.holder
    }

    pub fn ttl_ms(&self) -> u64 {
        self.record.ttl_ms
    }

    /// Where the lease stands at `now` (a held lease past its end is lost).
    /// Once a release is asked for, the lease is no longer held: the
    /// holder stops acting on it before the delete goes out, since a
    /// waiting acquirer may take the lock the moment the delete lands.
    pub fn status(&self, now: Time) -> Status {
        match self.phase {
            Phase::Held { token, valid_until, .. } if now >= valid_until => {
                Status::Lost { token, why: LostWhy::Expired }
            }
            Phase::Held { .. } if self.release_asked => Status::Released,
            Phase::Held { token, valid_until, .. } => Status::Held { token, valid_until },
            Phase::Observe { .. } => Status::Waiting { holder: None },
            Phase::Waiting { holder, .. } => {
                Status::Waiting { holder: (holder != HolderId::NONE).then_some(holder) }
            }
            Phase::Done(status) => status,
        }
    }

    /// Asks for the lock to be released: a held lease is deleted at its
    /// version; one not taken is given up. `Finished` once done.
    pub fn release(&mut self) {
        self.release_asked = true;
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Time) -> Action {
        if self.in_flight.is_some() {
            return Action::InFlight;
        }
        self.expire(now);
        if self.release_asked && matches!(self.phase, Phase::Observe { .. } | Phase::Waiting { .. }) {
            // Not held: given up. (A take whose outcome is unknown may still
            // land; its record then runs out after one TTL, as a dead
            // holder's does.)
            self.finish(Status::Released);
        }
        let (intent, change) = match self.phase {
            Phase::Done(_) => return Action::Finished,
            Phase::Observe { at } if now < at => return Action::WaitUntil(at),
            Phase::Observe { .. } => (Intent::Read, Change::Read),
            Phase::Waiting { seen, until, .. } if now >= until || self.skips_wait() => {
                (Intent::Take { expect: seen }, self.write_at(seen))
            }
            Phase::Waiting { until, read_at, .. } if now < read_at => {
                return Action::WaitUntil(until.min(read_at));
            }
            Phase::Waiting { .. } => (Intent::Read, Change::Read),
            Phase::Held { current, check: false, .. } if self.release_asked => {
                self.release_attempts += 1;
                (Intent::Release { expect: current }, Change::DeleteVersion { expect: current })
            }
            Phase::Held { next_at, .. } if now < next_at => return Action::WaitUntil(next_at),
            Phase::Held { check: true, .. } => (Intent::Read, Change::Read),
            Phase::Held { current, .. } => (Intent::Renew { expect: current }, self.write_at(current)),
        };
        self.note_sent(intent, now);
        self.in_flight = Some((intent, now));
        Action::Run(change)
    }

    #[cfg(feature = "planted-bugs")]
    fn skips_wait(&self) -> bool {
        self.take_without_waiting
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn skips_wait(&self) -> bool {
        false
    }

    /// When `poll` next has something to do; `None` while a change is in
    /// flight or once finished.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.in_flight.is_some() {
            return None;
        }
        match self.phase {
            Phase::Observe { at } => Some(at),
            Phase::Waiting { until, read_at, .. } => Some(until.min(read_at)),
            // A release goes out at once (a check read first, when due).
            Phase::Held { check: false, .. } if self.release_asked => Some(Time(0)),
            Phase::Held { next_at, valid_until, .. } => Some(next_at.min(valid_until)),
            Phase::Done(_) => None,
        }
    }

    /// A write of this machine's record expecting `version`.
    fn write_at(&self, version: Version) -> Change {
        Change::CasVersion { expect: version, new: self.record.encode() }
    }

    fn note_sent(&mut self, intent: Intent, now: Time) {
        if let Intent::Take { expect } | Intent::Renew { expect } = intent {
            self.sent.entry(expect).or_insert(now);
            while self.sent.len() > limits::LEASE_SENT_REMEMBERED_MAX {
                self.sent.pop_first();
            }
        }
    }

    /// How the change `poll` asked for ended, at `now`.
    pub fn handle_ending(&mut self, now: Time, ending: &Ending) {
        let Some((intent, sent)) = self.in_flight.take() else {
            return;
        };
        self.expire(now);
        if matches!(self.phase, Phase::Done(_)) {
            return;
        }
        match (intent, ending) {
            (Intent::Read, Ending::Done(a)) if a.value_known => {
                self.observed(now, a.version, a.value.as_ref())
            }
            (Intent::Take { .. } | Intent::Renew { .. }, Ending::Done(a)) if a.precondition_held => {
                self.written(now, a.version)
            }
            (Intent::Release { .. }, Ending::Done(a)) if a.precondition_held => self.finish(Status::Released),
            (Intent::Release { .. }, _) if self.release_attempts >= limits::LEASE_RELEASE_ATTEMPTS_MAX => {
                // The lease runs out by itself: nobody waits longer than its TTL.
                self.finish(Status::Released)
            }
            // A write that found another version: what the lock holds now
            // decides, read at once (a held lease stays held until its end
            // meanwhile; a wait starts over from what the read shows).
            (Intent::Take { .. } | Intent::Renew { .. } | Intent::Release { .. }, Ending::Done(_)) => {
                self.look_again(now)
            }
            // A change not run, or of unknown outcome (or a read that did
            // not tell the value): try again a little later. A wait goes on
            // as it was: a failed read is no new observation.
            (_, Ending::NotRun(_)) => {
                self.forget_sent(intent, sent);
                self.retry(now.plus_millis(limits::LEASE_RETRY_MS));
            }
            (_, Ending::Unknown(_) | Ending::Done(_)) => self.retry(now.plus_millis(limits::LEASE_RETRY_MS)),
        }
    }

    /// A request that will never take effect is no write to count from.
    fn forget_sent(&mut self, intent: Intent, sent: Time) {
        if let Intent::Take { expect } | Intent::Renew { expect } = intent
            && self.sent.get(&expect) == Some(&sent)
        {
            self.sent.remove(&expect);
        }
    }

    /// When the first write that may have left `version` was sent.
    fn sent_before(&self, version: Version) -> Option<Time> {
        version.0.checked_sub(1).and_then(|v| self.sent.get(&Version(v)).copied())
    }

    /// A write of this machine's record took effect and left `version`.
    fn written(&mut self, now: Time, version: Version) {
        let Some(sent) = self.sent_before(version) else {
            // Cannot happen (the write expected `version - 1`); read to be sure.
            return self.look_again(now);
        };
        let token = match self.phase {
            Phase::Held { token, .. } => token,
            _ => version,
        };
        self.hold(now, token, version, sent);
    }

    fn hold(&mut self, now: Time, token: Version, current: Version, sent: Time) {
        #[cfg(feature = "planted-bugs")]
        let sent = if self.counted_from_answer { now } else { sent };
        let valid_until = sent.plus_millis(self.record.ttl_ms);
        if now >= valid_until {
            return self.ours_but_not_held(now, current, token);
        }
        let next_at = sent.plus_millis(self.record.ttl_ms / limits::LEASE_RENEWALS_PER_TTL);
        self.phase = Phase::Held { token, current, valid_until, next_at, check: false };
    }

    /// A read answered at `now` found the lock at `version` holding `value`.
    fn observed(&mut self, now: Time, version: Version, value: Option<&Value>) {
        let Some(value) = value else {
            // Free (never taken, or deleted): take it at that version.
            return self.lost_or_wait(now, version, HolderId::NONE, now);
        };
        let Some(record) = LeaseRecord::decode(value) else {
            return self.finish(Status::NotALock);
        };
        if record.holder == self.record.holder {
            return self.ours(now, version);
        }
        if let Phase::Waiting { seen, ref mut read_at, .. } = self.phase
            && seen == version
        {
            // Still the holder we wait out: the wait goes on from where it began.
            *read_at = now.plus_millis(limits::LEASE_POLL_MS);
            return;
        }
        let until = now.plus_micros(acquire_wait_us(record.ttl_ms));
        self.lost_or_wait(now, version, record.holder, until);
    }

    /// The lock holds this machine's record at `version`.
    fn ours(&mut self, now: Time, version: Version) {
        match (self.phase, self.sent_before(version)) {
            (Phase::Held { token, .. }, Some(sent)) => self.hold(now, token, version, sent),
            (_, Some(sent)) => self.hold(now, version, version, sent),
            (Phase::Held { token, .. }, None) => self.ours_but_not_held(now, version, token),
            (_, None) => self.ours_but_not_held(now, version, version),
        }
    }

    /// The lock holds this machine's record at `version`, from a write
    /// whose lease has run out (or whose send was forgotten). A holder has
    /// lost it. Otherwise this machine never counted on that write, and
    /// nobody else can have: take the lock afresh at once, expecting
    /// `version` (a waiter that saw `version` then finds it moved).
    fn ours_but_not_held(&mut self, now: Time, version: Version, token: Version) {
        if let Phase::Held { .. } = self.phase {
            return self.finish(Status::Lost { token, why: LostWhy::Expired });
        }
        self.lost_or_wait(now, version, HolderId::NONE, now);
    }

    /// The lock is free or another's at `version`: a holder has lost it;
    /// anybody else waits until `until` before taking it.
    fn lost_or_wait(&mut self, now: Time, version: Version, holder: HolderId, until: Time) {
        if let Phase::Held { token, .. } = self.phase {
            // Gone after a release of ours whose answer was lost: released.
            let status = if self.release_asked {
                Status::Released
            } else {
                Status::Lost { token, why: LostWhy::Taken }
            };
            return self.finish(status);
        }
        let read_at = now.plus_millis(limits::LEASE_POLL_MS);
        self.phase = Phase::Waiting { seen: version, holder, until, read_at };
    }

    /// Tries again at `at`: a held lease checks by a read, a wait goes on
    /// as it was (a take due then is sent then), an observation reads.
    fn retry(&mut self, at: Time) {
        match &mut self.phase {
            Phase::Waiting { until, read_at, .. } => {
                *read_at = at;
                *until = (*until).max(at);
            }
            _ => self.look_again(at),
        }
    }

    /// Reads the lock again at `at`; a held lease stays held meanwhile.
    fn look_again(&mut self, at: Time) {
        match &mut self.phase {
            Phase::Held { next_at, valid_until, check, .. } => {
                *next_at = at.min(*valid_until);
                *check = true;
            }
            _ => self.phase = Phase::Observe { at },
        }
    }

    /// A held lease whose end has passed is lost.
    fn expire(&mut self, now: Time) {
        if let Phase::Held { token, valid_until, .. } = self.phase
            && now >= valid_until
        {
            self.finish(Status::Lost { token, why: LostWhy::Expired });
        }
    }

    fn finish(&mut self, status: Status) {
        self.phase = Phase::Done(status);
    }
}
