//! The lock workload and the checker of lock safety.
//!
//! Sessions take, renew and release locks through the library's own
//! `core::lease::Lease` over its own `ClientMachine`, as `paxosctl lock`
//! does. Each session runs on a clock of its own: an offset and a rate
//! drawn so that any two clocks of the run (the nodes' run at the true
//! rate) differ in rate by at most `limits::CLOCK_RATE_SLACK_PERMILLE`, the
//! bound `core::lease` documents. Some sessions stall while holding (a
//! process stopped, or a long pause: nothing renews), some give up their
//! lock without releasing it (a crash), the rest release it.
//!
//! Every acquisition goes into a `checker::locks::LockBook` with the
//! interval of true (virtual) time in which its holder believed it held the
//! lock, each end converted from the holder's own clock; the book's check
//! runs at the end of the seed.

use super::net::ClientAddr;
use super::workload::ClientOut;
use crate::checker::locks::{Acquisition, LockBook};
use crate::core::client::{ClientMachine, Routing};
use crate::core::lease::{Action, HolderId, Lease, LostWhy, Status};
use crate::core::rng::Rng;
use crate::limits;
use crate::types::{Key, NodeId, SessionId, Time};
use crate::wire::Message;
use std::collections::BTreeMap;

/// Passes of a session's loop per turn; each starts or ends a change.
const STEPS_PER_TURN_MAX: usize = 8;

/// Lock sessions' addresses start here, apart from the register clients'.
pub const LOCK_ADDR_BASE: ClientAddr = 1 << 24;

/// The lock workload of one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockPlan {
    pub sessions: u64,
    pub locks: u64,
    /// Each lease's TTL is drawn from this range (ms).
    pub ttl_ms: (u64, u64),
    /// Percent of acquisitions whose holder stalls past its TTL.
    pub stall_percent: u64,
    /// Percent of acquisitions dropped without a release.
    pub abandon_percent: u64,
    pub timeout_ms: u64,
}

impl LockPlan {
    /// In half the seeds, a lock workload; drawn from its own stream so the
    /// rest of a seed's plan is the same with or without it.
    pub fn choose(seed: u64) -> Option<LockPlan> {
        let mut rng = Rng::new(seed ^ 0x6c6f_636b_7365_6564);
        if !rng.chance(0.5) {
            return None;
        }
        let ttl_min = rng.range(limits::LEASE_TTL_MS_MIN, 2000);
        Some(LockPlan {
            sessions: rng.range(2, 5),
            locks: rng.range(1, 2),
            ttl_ms: (ttl_min, ttl_min + rng.range(0, 2000)),
            stall_percent: rng.range(0, 30),
            abandon_percent: rng.range(0, 20),
            timeout_ms: rng.range(200, 2000),
        })
    }
}

/// A session's monotonic clock: `offset + true time × rate`.
#[derive(Clone, Copy, Debug)]
struct Clock {
    offset_us: u64,
    rate_ppm: u64,
}

/// The fastest and slowest clock rates, in parts per million of the true
/// rate: their ratio is the documented bound, and the nodes' true rate lies
/// between them.
const RATE_PPM_MIN: u64 = 1_000_000 - RATE_SPREAD_PPM / 2;
const RATE_PPM_MAX: u64 = 1_000_000 + RATE_SPREAD_PPM / 2;
const RATE_SPREAD_PPM: u64 = limits::CLOCK_RATE_SLACK_PERMILLE * 1000 - 100;
const _: () = assert!(RATE_PPM_MAX * 1000 <= RATE_PPM_MIN * (1000 + limits::CLOCK_RATE_SLACK_PERMILLE));

impl Clock {
    fn draw(rng: &mut Rng) -> Clock {
        let rate_ppm = match rng.below(3) {
            // The extremes are where a wrong rule shows.
            0 => RATE_PPM_MIN,
            1 => RATE_PPM_MAX,
            _ => rng.range(RATE_PPM_MIN, RATE_PPM_MAX),
        };
        Clock { offset_us: rng.range(0, 1 << 40), rate_ppm }
    }

    fn local(&self, real: Time) -> Time {
        let scaled = u128::from(real.0) * u128::from(self.rate_ppm) / 1_000_000;
        Time(self.offset_us.saturating_add(scaled.min(u128::from(u64::MAX)) as u64))
    }

    /// The first true time at which the clock shows `local`.
    fn real(&self, local: Time) -> Time {
        let since = u128::from(local.0.saturating_sub(self.offset_us));
        Time((since * 1_000_000).div_ceil(u128::from(self.rate_ppm)).min(u128::from(u64::MAX)) as u64)
    }
}

/// What a session is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Holding: release (or drop) at this local time.
    Hold { release_at: Time, abandon: bool },
    /// Holding, stalled until this true time: nothing runs meanwhile.
    Stall { until: Time },
}

struct LockSession {
    clock: Clock,
    client: ClientMachine,
    lease: Option<Lease>,
    lock: u64,
    plan: Option<Plan>,
    /// Index of the current acquisition in the book.
    acquisition: Option<usize>,
    generation: u64,
    /// True time of the release request, which ends the holder's claim.
    released_at: Option<Time>,
}

/// The lock sessions of a run.
pub struct LockWorkload {
    plan: LockPlan,
    members: Vec<NodeId>,
    rng: Rng,
    sessions: BTreeMap<ClientAddr, LockSession>,
    pub book: LockBook,
    pub counts: LockCounts,
    stopping: bool,
    #[cfg(feature = "planted-bugs")]
    bugs: crate::core::PlantedBugs,
}

/// How the run's leases ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockCounts {
    pub acquired: u64,
    pub released: u64,
    pub expired: u64,
    pub taken: u64,
}

impl LockWorkload {
    pub fn new(plan: LockPlan, members: Vec<NodeId>, seed: u64) -> LockWorkload {
        LockWorkload {
            plan,
            members,
            rng: Rng::new(seed ^ 0x6c6f_636b_7275_6e21),
            sessions: BTreeMap::new(),
            book: LockBook::default(),
            counts: LockCounts::default(),
            stopping: false,
            #[cfg(feature = "planted-bugs")]
            bugs: crate::core::PlantedBugs::default(),
        }
    }

    #[cfg(feature = "planted-bugs")]
    pub fn set_bugs(&mut self, bugs: crate::core::PlantedBugs) {
        self.bugs = bugs;
    }

    pub fn plan(&self) -> &LockPlan {
        &self.plan
    }

    pub fn start(&mut self, now: Time, out: &mut ClientOut) {
        for i in 0..self.plan.sessions {
            self.spawn(now, LOCK_ADDR_BASE + i as ClientAddr, out);
        }
    }

    /// No new acquisitions from now on (the run is winding down).
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    fn spawn(&mut self, now: Time, addr: ClientAddr, out: &mut ClientOut) {
        let session = SessionId((u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64()));
        let client = ClientMachine::new(self.members.clone(), None, session, Routing::Home);
        let clock = Clock::draw(&mut self.rng);
        let s = LockSession {
            clock,
            client,
            lease: None,
            lock: 0,
            plan: None,
            acquisition: None,
            generation: 0,
            released_at: None,
        };
        self.sessions.insert(addr, s);
        out.wakes.push((addr, 0, now));
    }

    pub fn on_wake(&mut self, now: Time, addr: ClientAddr, generation: u64, out: &mut ClientOut) {
        match self.sessions.get_mut(&addr) {
            Some(s) if s.generation == generation => {
                let local = s.clock.local(now);
                s.client.handle_timeout(local);
                self.step(now, addr, out);
            }
            _ => {}
        }
    }

    pub fn on_reply(&mut self, now: Time, addr: ClientAddr, from: NodeId, msg: Message, out: &mut ClientOut) {
        let Some(s) = self.sessions.get_mut(&addr) else { return };
        if matches!(s.plan, Some(Plan::Stall { until }) if now < until) {
            // A stopped process reads nothing; the datagram is lost to it.
            return;
        }
        let local = s.clock.local(now);
        s.client.handle_message(local, from, msg);
        self.step(now, addr, out);
    }
}

impl LockWorkload {
    /// Runs session `addr` until it waits for something.
    fn step(&mut self, now: Time, addr: ClientAddr, out: &mut ClientOut) {
        for _ in 0..STEPS_PER_TURN_MAX {
            let Some(s) = self.sessions.get_mut(&addr) else { return };
            if let Some(Plan::Stall { until }) = s.plan
                && now < until
            {
                return self.wake_at(addr, until, out);
            }
            let local = s.clock.local(now);
            if let Some(ending) = s.client.poll_ending()
                && let Some(lease) = s.lease.as_mut()
            {
                lease.handle_ending(local, &ending);
            }
            self.note_status(now, addr);
            self.follow_plan(now, addr);
            let Some(s) = self.sessions.get_mut(&addr) else { return };
            while let Some((node, msg)) = s.client.poll_transmit() {
                out.sends.push((addr, node, msg));
            }
            if !s.client.is_idle() {
                let at = s.client.poll_timeout().map(|t| s.clock.real(t));
                return at.map_or((), |at| self.wake_at(addr, at, out));
            }
            let Some(lease) = s.lease.as_mut() else {
                return self.begin(now, addr, out);
            };
            match lease.poll(local) {
                Action::Run(change) => {
                    let timeout_ms = self.plan.timeout_ms;
                    let key = lease.key().clone();
                    let _ = s.client.start(local, key, change, timeout_ms);
                }
                Action::WaitUntil(at) => {
                    let at = s.clock.real(at);
                    let at = match s.plan {
                        Some(Plan::Hold { release_at, .. }) => at.min(s.clock.real(release_at)),
                        _ => at,
                    };
                    return self.wake_at(addr, at.max(now), out);
                }
                Action::InFlight => return,
                Action::Finished => {
                    self.finished(now, addr);
                    return self.think(now, addr, out);
                }
            }
        }
        // Each pass above starts a change or ends one; a session that is
        // still busy here comes back for another turn.
        self.wake_at(addr, now.plus_micros(1), out);
    }

    /// Starts a new lease after the session's last one, unless stopping.
    fn begin(&mut self, now: Time, addr: ClientAddr, out: &mut ClientOut) {
        if self.stopping {
            return;
        }
        let ttl = self.rng.range(self.plan.ttl_ms.0, self.plan.ttl_ms.1);
        let lock = self.rng.below(self.plan.locks);
        let holder = HolderId(self.rng.next_u64() | 1);
        let Some(s) = self.sessions.get_mut(&addr) else { return };
        let local = s.clock.local(now);
        let key = Key(format!("lock{lock}").into_bytes());
        #[allow(unused_mut)]
        let mut lease = Lease::new(local, key, holder, ttl, format!("session {addr}").into_bytes());
        #[cfg(feature = "planted-bugs")]
        {
            if self.bugs.lease_take_without_waiting {
                lease.plant_take_without_waiting();
            }
            if self.bugs.lease_counted_from_answer {
                lease.plant_counted_from_answer();
            }
        }
        (s.lease, s.lock, s.plan, s.acquisition, s.released_at) = (Some(lease), lock, None, None, None);
        self.step(now, addr, out);
    }

    fn think(&mut self, now: Time, addr: ClientAddr, out: &mut ClientOut) {
        let think = self.rng.range(0, 300_000);
        if let Some(s) = self.sessions.get_mut(&addr) {
            s.lease = None;
        }
        self.wake_at(addr, now.plus_micros(think), out);
    }

    fn wake_at(&mut self, addr: ClientAddr, at: Time, out: &mut ClientOut) {
        if let Some(s) = self.sessions.get_mut(&addr) {
            s.generation += 1;
            out.wakes.push((addr, s.generation, at));
        }
    }

    /// Books what the lease's status says now: a new acquisition, a
    /// renewal that extends it, or its end.
    fn note_status(&mut self, now: Time, addr: ClientAddr) {
        let Some(s) = self.sessions.get_mut(&addr) else { return };
        let Some(lease) = s.lease.as_ref() else { return };
        let local = s.clock.local(now);
        match (lease.status(local), s.acquisition) {
            (Status::Held { token, valid_until }, None) => {
                let until = s.clock.real(valid_until);
                let (lock, holder) = (s.lock, lease.holder());
                let ttl = lease.ttl_ms();
                let lock = format!("lock{lock}");
                let a = Acquisition {
                    lock,
                    session: u64::from(addr),
                    holder,
                    token,
                    from_us: now.0,
                    until_us: until.0,
                };
                s.acquisition = Some(self.book.acquired(a));
                self.counts.acquired += 1;
                let plan = self.hold_plan(local, ttl, now);
                if let Some(s) = self.sessions.get_mut(&addr) {
                    s.plan = Some(plan);
                }
            }
            (Status::Held { valid_until, .. }, Some(i)) => {
                let until = s.clock.real(valid_until);
                self.book.extend(i, until.0);
                if let Some(released) = s.released_at {
                    self.book.cut(i, released.0);
                }
            }
            _ => {}
        }
    }

    fn hold_plan(&mut self, local: Time, ttl_ms: u64, now: Time) -> Plan {
        if self.rng.below(100) < self.plan.stall_percent {
            let stall = ttl_ms * 1000 * self.rng.range(11, 30) / 10;
            return Plan::Stall { until: now.plus_micros(stall) };
        }
        let abandon = self.rng.below(100) < self.plan.abandon_percent;
        Plan::Hold { release_at: local.plus_micros(self.rng.range(0, 3 * ttl_ms * 1000)), abandon }
    }

    /// Releases (or drops) a held lock when its time has come.
    fn follow_plan(&mut self, now: Time, addr: ClientAddr) {
        let stopping = self.stopping;
        let Some(s) = self.sessions.get_mut(&addr) else { return };
        let local = s.clock.local(now);
        let Some(Plan::Hold { release_at, abandon }) = s.plan else { return };
        if local < release_at && !stopping {
            return;
        }
        s.plan = None;
        if abandon {
            // A crash: the holder stops acting here, nothing is released,
            // and a new process (a new session) takes its place.
            self.end_acquisition(addr, now);
            let session =
                SessionId((u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64()));
            if let Some(s) = self.sessions.get_mut(&addr) {
                s.lease = None;
                s.client = ClientMachine::new(self.members.clone(), None, session, Routing::Home);
            }
            return;
        }
        s.released_at = Some(now);
        if let Some(lease) = s.lease.as_mut() {
            lease.release();
        }
        self.end_acquisition(addr, now);
    }

    /// The holder's claim ends at `at` (or earlier, if its lease did).
    fn end_acquisition(&mut self, addr: ClientAddr, at: Time) {
        if let Some(i) = self.sessions.get(&addr).and_then(|s| s.acquisition) {
            self.book.cut(i, at.0);
        }
    }

    /// The lease machine is done: count how, and end its claim.
    fn finished(&mut self, now: Time, addr: ClientAddr) {
        let Some(s) = self.sessions.get(&addr) else { return };
        let Some(lease) = s.lease.as_ref() else { return };
        match lease.status(s.clock.local(now)) {
            Status::Released => self.counts.released += 1,
            Status::Lost { why: LostWhy::Expired, .. } => self.counts.expired += 1,
            Status::Lost { why: LostWhy::Taken, .. } => self.counts.taken += 1,
            _ => {}
        }
        self.end_acquisition(addr, now);
    }
}
