//! Driving a membership change: the steps of `docs/membership.md`, run by
//! the node a client asked (`paxosctl member add|remove`), as a machine the
//! node feeds with its peers' answers and with time.
//!
//! 1. **Survey.** Ask every known node for its status: a change some node
//!    is frozen in, or has installed, is finished first.
//! 2. **Begin.** Read the change register (`CHANGE_KEY`); a change in it of
//!    a later epoch than the active configuration is finished first.
//!    Otherwise take a fresh epoch from the epoch register and
//!    compare-and-set the change register to the new change: only one
//!    change begins from each configuration.
//! 3. **Freeze** a majority of the old members (and every new member that
//!    answers): they vote for nobody from then on.
//! 4. **Scan** the frozen majority of the old members, merging per key the
//!    highest promise and the highest accepted state.
//! 5. **Seed** the merged slots into frozen new members, page by page,
//!    until a majority of the new members holds them all.
//! 6. **Install** the new configuration on every node; done once a
//!    majority of the new members has it.
//!
//! The machine keeps nothing that must survive its node: a driver that dies
//! leaves the change in the register and in the frozen nodes' logs, and
//! the next driver's survey finds it. Every step is idempotent.

use super::client::{ClientMachine, Ending, Routing};
use super::membership::{Configuration, FreezeAnswer, MemberChange, Members};
use super::quorum::majority;
use super::rejoin::EPOCH_KEY;
use crate::change::Change;
use crate::limits;
use crate::types::{Epoch, Key, NodeId, SessionId, Time, Value, Version};
use crate::wire::{Message, NodeStatus, ScanSlot};
use std::collections::{BTreeMap, BTreeSet};

/// The change register: the last membership change begun (postcard of a
/// `MemberChange`), absent before the first.
pub const CHANGE_KEY: &[u8] = b"\0paxosd/config";

/// How a change ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReconfigEnding {
    /// The target configuration is installed (on a majority of its members).
    Done(Configuration),
    /// Gave up; the text says why. Whatever was done is resumed by the next
    /// attempt.
    Failed(String),
}

pub struct Reconfig {
    me: NodeId,
    /// The members the client asked for.
    target: Members,
    /// The driving node's active configuration when the machine started or
    /// last surveyed.
    active: Configuration,
    phase: Phase,
    outbox: Vec<(NodeId, Message)>,
    deadline: Time,
    session: SessionId,
    ending: Option<ReconfigEnding>,
    /// Deliberate bugs (tests only).
    #[cfg(feature = "planted-bugs")]
    pub bugs: super::PlantedBugs,
}

enum Phase {
    Survey { replies: BTreeMap<NodeId, NodeStatus>, probe: u64, resend_at: Time, until: Time },
    Begin { client: Box<ClientMachine>, step: BeginStep, retry_at: Option<Time> },
    Freeze { change: MemberChange, from: Members, answers: BTreeMap<NodeId, FreezeAnswer>, resend_at: Time },
    Scan { work: Work, scans: BTreeMap<NodeId, PeerScan>, merged: BTreeMap<Key, ScanSlot> },
    Seed { work: Work, pages: Vec<Vec<ScanSlot>>, progress: BTreeMap<NodeId, SeedProgress> },
    Install { work: Work, acks: BTreeSet<NodeId>, resend_at: Time },
    Over,
}

/// What the steps after the freeze share: the change, its old members, and
/// the nodes that answered the freeze.
struct Work {
    change: MemberChange,
    from: Members,
    answers: BTreeMap<NodeId, FreezeAnswer>,
    resend_at: Time,
}

#[derive(Clone, Debug)]
enum BeginStep {
    ReadChange,
    TakeEpoch { version: Version },
    Cas { version: Version, change: MemberChange },
}

struct PeerScan {
    after: Option<Key>,
    done: bool,
    resend_at: Time,
}

/// How far a new member has come with the seed pages.
struct SeedProgress {
    /// The next page to send.
    next: usize,
    /// It refused a page (it is not frozen in the change).
    refused: bool,
    resend_at: Time,
}

impl Reconfig {
    /// Starts changing the membership from `active` to `target`; `own` is
    /// the driving node's status, its answer to the survey.
    pub fn new(now: Time, own: NodeStatus, target: Members, session: SessionId) -> Reconfig {
        let mut machine = Reconfig {
            me: own.node,
            target,
            active: own.config.clone(),
            phase: Phase::Over,
            outbox: Vec::new(),
            deadline: now.plus_millis(limits::MEMBER_CHANGE_TIMEOUT_MS),
            session,
            ending: None,
            #[cfg(feature = "planted-bugs")]
            bugs: super::PlantedBugs::default(),
        };
        machine.survey(now, own);
        machine
    }

    pub fn target(&self) -> &Members {
        &self.target
    }

    /// Messages to send; those to this node itself are for the node to
    /// handle as if they came from a peer.
    pub fn take_outbox(&mut self) -> Vec<(NodeId, Message)> {
        std::mem::take(&mut self.outbox)
    }

    pub fn take_ending(&mut self) -> Option<ReconfigEnding> {
        self.ending.take()
    }

    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Over)
    }

    /// A brief word on where the change stands, for status.
    pub fn describe(&self) -> String {
        match &self.phase {
            Phase::Survey { .. } => "surveying the nodes".into(),
            Phase::Begin { .. } => "beginning the change".into(),
            Phase::Freeze { change, .. } => format!("freezing for epoch {}", change.epoch),
            Phase::Scan { work, scans, .. } => {
                let done: Vec<String> =
                    scans.iter().filter(|(_, s)| s.done).map(|(n, _)| n.to_string()).collect();
                let left: Vec<String> =
                    scans.iter().filter(|(_, s)| !s.done).map(|(n, _)| n.to_string()).collect();
                format!(
                    "scanning for epoch {} (done: {}; waiting: {})",
                    work.change.epoch,
                    done.join(","),
                    left.join(",")
                )
            }
            Phase::Seed { work, .. } => format!("seeding for epoch {}", work.change.epoch),
            Phase::Install { work, .. } => format!("installing epoch {}", work.change.epoch),
            Phase::Over => "over".into(),
        }
    }

    fn fail(&mut self, why: String) {
        log::warn!("node {}: membership change to {} failed: {why}", self.me, self.target);
        self.phase = Phase::Over;
        self.ending = Some(ReconfigEnding::Failed(why));
    }

    fn finish(&mut self, config: Configuration) {
        log::info!("node {}: configuration {} of epoch {} installed", self.me, config.members, config.epoch);
        self.phase = Phase::Over;
        self.ending = Some(ReconfigEnding::Done(config));
    }

    /// Every node the change may concern: the active members and the target.
    fn known_nodes(&self) -> BTreeSet<NodeId> {
        self.active.members.ids_with(&self.target)
    }

    fn survey(&mut self, now: Time, own: NodeStatus) {
        self.active = own.config.clone();
        let mut replies = BTreeMap::new();
        replies.insert(self.me, own);
        let until = now.plus_millis(limits::MEMBER_SURVEY_MS);
        self.phase = Phase::Survey { replies, probe: now.0, resend_at: now, until };
        self.handle_timeout(now);
    }

    pub fn poll_timeout(&self) -> Option<Time> {
        let phase = match &self.phase {
            Phase::Survey { resend_at, until, .. } => Some((*resend_at).min(*until)),
            Phase::Freeze { resend_at, .. } => Some(*resend_at),
            Phase::Begin { client, retry_at, .. } => retry_at.or_else(|| client.poll_timeout()),
            Phase::Scan { scans, .. } => scans.values().filter(|s| !s.done).map(|s| s.resend_at).min(),
            Phase::Seed { work, pages, progress } => {
                let waiting = progress.values().filter(|p| !p.refused && p.next < pages.len());
                Some(waiting.map(|p| p.resend_at).min().map_or(work.resend_at, |t| t.min(work.resend_at)))
            }
            Phase::Install { resend_at, .. } => Some(*resend_at),
            Phase::Over => return None,
        };
        phase.map(|t| t.min(self.deadline))
    }

    pub fn handle_timeout(&mut self, now: Time) {
        if now >= self.deadline && !self.is_over() {
            return self.fail(format!(
                "no progress within {} ms ({})",
                limits::MEMBER_CHANGE_TIMEOUT_MS,
                self.describe()
            ));
        }
        let resend = now.plus_millis(limits::REJOIN_RESEND_MS);
        let known = self.known_nodes();
        match &mut self.phase {
            Phase::Survey { replies, until, .. } if *until <= now => {
                let silent: Vec<String> =
                    known.iter().filter(|n| !replies.contains_key(n)).map(|n| n.to_string()).collect();
                let why = format!(
                    "no answer from a majority of the old and of the new members (silent: node {}); \
                     start the new nodes first",
                    silent.join(", ")
                );
                self.fail(why);
            }
            Phase::Survey { replies, probe, resend_at, .. } => {
                if *resend_at <= now {
                    *resend_at = resend;
                    for node in known.iter().filter(|n| !replies.contains_key(n)) {
                        let msg = Message::StatusRequest { session: self.session, probe: *probe };
                        self.outbox.push((*node, msg));
                    }
                }
            }
            Phase::Begin { client, retry_at, .. } => {
                if retry_at.is_some_and(|at| at <= now) {
                    *retry_at = None;
                    self.begin_step(now);
                } else {
                    client.handle_timeout(now);
                    self.after_client(now);
                }
            }
            Phase::Freeze { change, from, answers, resend_at } => {
                if *resend_at <= now {
                    *resend_at = resend;
                    let all = from.ids_with(&change.to);
                    for node in all.iter().filter(|n| !answers.contains_key(n)) {
                        self.outbox.push((*node, Message::Freeze { change: change.clone() }));
                    }
                }
            }
            Phase::Scan { work, scans, .. } => {
                for (node, scan) in scans.iter_mut().filter(|(_, s)| !s.done && s.resend_at <= now) {
                    scan.resend_at = resend;
                    let msg = Message::Scan { epoch: work.change.epoch, after: scan.after.clone() };
                    self.outbox.push((*node, msg));
                }
                refreeze_silent_members(work, now, &mut self.outbox);
            }
            Phase::Seed { work, pages, progress } => {
                let waiting = progress.iter_mut().filter(|(_, p)| !p.refused && p.next < pages.len());
                for (node, p) in waiting.filter(|(_, p)| p.resend_at <= now) {
                    p.resend_at = resend;
                    if let Some(msg) = seed_page(work.change.epoch, pages, p.next) {
                        self.outbox.push((*node, msg));
                    }
                }
                refreeze_silent_members(work, now, &mut self.outbox);
                self.start_seeding_new_answers(now);
            }
            Phase::Install { work, acks, resend_at } => {
                if *resend_at <= now {
                    *resend_at = resend;
                    let all = work.from.ids_with(&work.change.to);
                    for node in all.iter().filter(|n| !acks.contains(n)) {
                        self.outbox.push((*node, Message::Install { config: work.change.target() }));
                    }
                }
            }
            Phase::Over => {}
        }
    }

    /// A message from `from` (this node itself included) for the change.
    /// Answers of the steps push the deadline back: a change that moves
    /// (a large store scanned and seeded page by page) is not given up.
    pub fn handle_message(&mut self, now: Time, from: NodeId, msg: Message) {
        if matches!(
            msg,
            Message::Frozen { .. }
                | Message::ScanPage { .. }
                | Message::Seeded { .. }
                | Message::Installed { .. }
        ) && !self.is_over()
        {
            self.deadline = self.deadline.max(now.plus_millis(limits::MEMBER_CHANGE_TIMEOUT_MS));
        }
        match msg {
            Message::StatusReply { session, status, .. }
                if session == self.session && matches!(self.phase, Phase::Survey { .. }) =>
            {
                self.on_status(now, from, status)
            }
            Message::Reply { .. } | Message::StatusReply { .. } => {
                if let Phase::Begin { client, .. } = &mut self.phase {
                    client.handle_message(now, from, msg);
                    self.after_client(now);
                }
            }
            Message::Frozen { epoch, answer } => self.on_frozen(now, from, epoch, answer),
            Message::ScanPage { epoch, after, slots, done } => {
                self.on_page(now, from, epoch, &after, slots, done)
            }
            Message::Seeded { epoch, after, done, adopted } => {
                self.on_seeded(now, from, epoch, &after, done, adopted)
            }
            Message::Installed { epoch } => self.on_installed(from, epoch),
            _ => {}
        }
    }

    fn on_status(&mut self, now: Time, from: NodeId, status: NodeStatus) {
        let Phase::Survey { replies, .. } = &mut self.phase else { return };
        replies.insert(from, status);
        // Nothing is frozen until a majority of the old members and one of
        // the new members answer: a change to nodes that are not there would
        // leave the old ones frozen with nowhere to go.
        let heard =
            |m: &Members| m.iter().filter(|m| replies.contains_key(&m.id)).count() >= majority(m.len());
        if !heard(&self.active.members) || !heard(&self.target) {
            return;
        }
        let replies = std::mem::take(replies);
        self.decide(now, &replies);
    }

    /// What the survey found: a newer configuration (the driver is behind:
    /// it learns it from its peers' headers and surveys again), a change in
    /// progress to finish, or nothing in the way.
    fn decide(&mut self, now: Time, replies: &BTreeMap<NodeId, NodeStatus>) {
        let newest = replies.values().map(|s| s.config.epoch).max().unwrap_or_default();
        if newest > self.active.epoch {
            return self.fail(format!(
                "this node is behind (epoch {}, a peer has {newest}); it learns the newer configuration from its peers: try again",
                self.active.epoch
            ));
        }
        let frozen =
            replies.values().filter_map(|s| s.frozen.clone()).filter(|c| c.epoch > self.active.epoch);
        if let Some(change) = frozen.max_by_key(|c| c.epoch) {
            return self.resume(now, change);
        }
        if self.target == self.active.members {
            return self.finish(self.active.clone());
        }
        let members = self.active.members.ids();
        let peers: Vec<NodeId> = members.into_iter().filter(|m| *m != self.me).collect();
        if peers.is_empty() {
            return self.fail("a one-node cluster cannot change its members".into());
        }
        let client = Box::new(ClientMachine::new(peers, None, self.session, Routing::Home));
        self.phase = Phase::Begin { client, step: BeginStep::ReadChange, retry_at: Some(now) };
        self.handle_timeout(now);
    }

    /// Finishes `change`, begun by this or an earlier driver, from the freeze.
    fn resume(&mut self, now: Time, change: MemberChange) {
        if change.from != self.active.epoch {
            return self.fail(format!(
                "the change of epoch {} starts from epoch {}, and this node is at {}: try again",
                change.epoch, change.from, self.active.epoch
            ));
        }
        log::info!("node {}: finishing the change to {} of epoch {}", self.me, change.to, change.epoch);
        let from = self.active.members.clone();
        self.phase = Phase::Freeze { change, from, answers: BTreeMap::new(), resend_at: now };
        self.handle_timeout(now);
    }

    fn begin_step(&mut self, now: Time) {
        let Phase::Begin { client, step, .. } = &mut self.phase else { return };
        let (key, change) = match step {
            BeginStep::ReadChange => (CHANGE_KEY, Change::Read),
            BeginStep::TakeEpoch { .. } => {
                (EPOCH_KEY, Change::Put(Value(format!("membership change by node {}", self.me).into_bytes())))
            }
            BeginStep::Cas { version, change } => {
                let encoded = postcard::to_stdvec(change).unwrap_or_default();
                (CHANGE_KEY, Change::CasVersion { expect: *version, new: Value(encoded) })
            }
        };
        // Only `Busy` can fail, and the previous operation ended.
        let _ = client.start(now, Key(key.to_vec()), change, limits::REJOIN_EPOCH_TIMEOUT_MS);
        self.after_client(now);
    }

    fn after_client(&mut self, now: Time) {
        let Phase::Begin { client, step, retry_at } = &mut self.phase else { return };
        while let Some(out) = client.poll_transmit() {
            self.outbox.push(out);
        }
        let Some(ending) = client.poll_ending() else { return };
        let Ending::Done(answer) = ending else {
            log::debug!(
                "node {}: membership change register step {step:?}: {ending:?}; trying again",
                self.me
            );
            *retry_at = Some(now.plus_millis(limits::REJOIN_EPOCH_RETRY_MS));
            return;
        };
        match step.clone() {
            BeginStep::ReadChange => {
                let begun =
                    answer.value.as_ref().and_then(|v| postcard::from_bytes::<MemberChange>(&v.0).ok());
                match begun {
                    Some(change) if change.epoch > self.active.epoch => self.resume(now, change),
                    _ => {
                        *step = BeginStep::TakeEpoch { version: answer.version };
                        *retry_at = Some(now);
                    }
                }
            }
            BeginStep::TakeEpoch { version } => {
                let change = MemberChange {
                    epoch: Epoch(answer.version.0),
                    from: self.active.epoch,
                    to: self.target.clone(),
                };
                *step = BeginStep::Cas { version, change };
                *retry_at = Some(now);
            }
            BeginStep::Cas { change, .. } if answer.precondition_held => {
                log::info!("node {}: began the change to {} in epoch {}", self.me, change.to, change.epoch);
                self.resume(now, change);
            }
            BeginStep::Cas { .. } => {
                // Another driver began a change first: finish that one.
                *step = BeginStep::ReadChange;
                *retry_at = Some(now);
            }
        }
    }

    fn on_frozen(&mut self, now: Time, from: NodeId, epoch: Epoch, answer: FreezeAnswer) {
        match &mut self.phase {
            Phase::Freeze { change, from: old, answers, .. } if change.epoch == epoch => {
                answers.insert(from, answer);
                let frozen_old =
                    old.iter().filter(|m| answers.get(&m.id) == Some(&FreezeAnswer::Frozen)).count();
                let installed = answers.values().any(|a| *a == FreezeAnswer::Installed);
                let refused =
                    old.iter().filter(|m| answers.get(&m.id) == Some(&FreezeAnswer::Refused)).count();
                let work = || Work {
                    change: change.clone(),
                    from: old.clone(),
                    answers: answers.clone(),
                    resend_at: now,
                };
                if installed {
                    // Some driver seeded and began installing: install.
                    let work = work();
                    self.phase = Phase::Install { work, acks: BTreeSet::new(), resend_at: now };
                } else if frozen_old >= majority(old.len()) {
                    let work = work();
                    self.start_scan(now, work);
                } else if refused > old.len() - majority(old.len()) {
                    let why = format!(
                        "a majority of {old} cannot take part in the change of epoch {epoch}: they are in another configuration; try again"
                    );
                    return self.fail(why);
                } else {
                    return;
                }
                self.handle_timeout(now);
            }
            Phase::Scan { work, scans, .. } if work.change.epoch == epoch => {
                // A late old member, frozen, is scanned too: the first
                // majority to answer may hold a node that cannot be scanned.
                if answer == FreezeAnswer::Frozen && work.from.contains(from) {
                    scans.entry(from).or_insert(PeerScan { after: None, done: false, resend_at: now });
                }
                work.answers.insert(from, answer);
                self.handle_timeout(now);
            }
            Phase::Seed { work, .. } if work.change.epoch == epoch => {
                work.answers.insert(from, answer);
            }
            _ => {}
        }
    }

    fn start_scan(&mut self, now: Time, work: Work) {
        let frozen = work.from.iter().filter(|m| work.answers.get(&m.id) == Some(&FreezeAnswer::Frozen));
        let scans = frozen.map(|m| (m.id, PeerScan { after: None, done: false, resend_at: now })).collect();
        self.phase = Phase::Scan { work, scans, merged: BTreeMap::new() };
    }

    fn on_page(
        &mut self,
        now: Time,
        from: NodeId,
        epoch: Epoch,
        after: &Option<Key>,
        slots: Vec<ScanSlot>,
        done: bool,
    ) {
        let Phase::Scan { work, scans, merged } = &mut self.phase else { return };
        let Some(scan) = scans.get_mut(&from) else { return };
        if epoch != work.change.epoch || scan.done || scan.after != *after || (slots.is_empty() && !done) {
            return;
        }
        if let Some(last) = slots.last() {
            scan.after = Some(last.key.clone());
        }
        scan.done = done;
        scan.resend_at = now;
        for slot in slots {
            merge(merged, slot);
        }
        // Any majority of the old members, frozen, will do: a frozen node
        // that cannot answer (one catching up after losing its data) is
        // not waited for.
        if scans.values().filter(|s| s.done).count() >= majority(work.from.len()) {
            self.start_seed(now);
        } else {
            self.handle_timeout(now);
        }
    }

    fn start_seed(&mut self, now: Time) {
        let Phase::Scan { work, merged, .. } = std::mem::replace(&mut self.phase, Phase::Over) else {
            return;
        };
        #[cfg(feature = "planted-bugs")]
        if self.bugs.install_before_seed {
            self.phase = Phase::Install { work, acks: BTreeSet::new(), resend_at: now };
            return self.handle_timeout(now);
        }
        let pages = paginate(merged.into_values());
        log::info!("node {}: seeding {} pages for epoch {}", self.me, pages.len(), work.change.epoch);
        self.phase = Phase::Seed { work, pages, progress: BTreeMap::new() };
        self.start_seeding_new_answers(now);
        self.handle_timeout(now);
    }

    /// New members that answered the freeze as frozen get the seeds.
    fn start_seeding_new_answers(&mut self, now: Time) {
        let Phase::Seed { work, progress, .. } = &mut self.phase else { return };
        for m in work.change.to.iter() {
            if work.answers.get(&m.id) == Some(&FreezeAnswer::Frozen) && !progress.contains_key(&m.id) {
                progress.insert(m.id, SeedProgress { next: 0, refused: false, resend_at: now });
            }
        }
    }

    fn on_seeded(
        &mut self,
        now: Time,
        from: NodeId,
        epoch: Epoch,
        after: &Option<Key>,
        done: bool,
        adopted: bool,
    ) {
        let Phase::Seed { work, pages, progress } = &mut self.phase else { return };
        let Some(p) = progress.get_mut(&from) else { return };
        // The answer to the page this node waits for: its place, and
        // whether it was the last.
        let last = p.next + 1 == pages.len();
        if epoch != work.change.epoch
            || p.refused
            || p.next >= pages.len()
            || page_after(pages, p.next) != *after
            || (adopted && done != last)
        {
            return;
        }
        if !adopted {
            p.refused = true;
        } else {
            p.next += 1;
            p.resend_at = now;
        }
        let seeded = progress.values().filter(|p| !p.refused && p.next >= pages.len()).count();
        let to = work.change.to.len();
        if seeded >= majority(to) {
            return self.start_install(now);
        } else if progress.values().filter(|p| p.refused).count() > to - majority(to) {
            let why = format!(
                "too many of {} refused the seeds of epoch {epoch} (not frozen in the change): try again",
                work.change.to
            );
            return self.fail(why);
        }
        self.handle_timeout(now);
    }

    /// A majority of the new members holds the seeds: install.
    fn start_install(&mut self, now: Time) {
        let Phase::Seed { work, .. } = std::mem::replace(&mut self.phase, Phase::Over) else { return };
        self.phase = Phase::Install { work, acks: BTreeSet::new(), resend_at: now };
        self.handle_timeout(now);
    }

    fn on_installed(&mut self, from: NodeId, epoch: Epoch) {
        let Phase::Install { work, acks, .. } = &mut self.phase else { return };
        if epoch != work.change.epoch {
            return;
        }
        acks.insert(from);
        let to = &work.change.to;
        let installed = to.iter().filter(|m| acks.contains(&m.id)).count();
        if installed >= majority(to.len()) {
            let config = work.change.target();
            self.finish(config);
        }
    }
}

/// Members that have not answered the freeze are asked again: an old one
/// that was down may be scanned, a new one seeded.
fn refreeze_silent_members(work: &mut Work, now: Time, outbox: &mut Vec<(NodeId, Message)>) {
    if work.resend_at > now {
        return;
    }
    work.resend_at = now.plus_millis(limits::REJOIN_RESEND_MS);
    let all = work.from.ids_with(&work.change.to);
    for id in all.into_iter().filter(|id| !work.answers.contains_key(id)) {
        outbox.push((id, Message::Freeze { change: work.change.clone() }));
    }
}

/// Keeps, per key, the highest promise and the highest accepted ballot with
/// its state (what an acceptor's `adopt` keeps).
fn merge(merged: &mut BTreeMap<Key, ScanSlot>, slot: ScanSlot) {
    match merged.get_mut(&slot.key) {
        None => {
            merged.insert(slot.key.clone(), slot);
        }
        Some(have) => {
            let promised = have.promised.max(slot.promised);
            if slot.accepted > have.accepted {
                *have = slot;
            }
            have.promised = promised;
        }
    }
}

/// Splits the merged slots into pages of the size a scan sends.
fn paginate(slots: impl Iterator<Item = ScanSlot>) -> Vec<Vec<ScanSlot>> {
    let mut pages = Vec::new();
    let (mut page, mut bytes) = (Vec::new(), 0);
    for slot in slots {
        // The state's encoded size, as the acceptor's scan counts it.
        let state =
            postcard::experimental::serialized_size(&slot.state).unwrap_or(limits::SCAN_PAGE_BYTES_MAX);
        let size = slot.key.0.len() + state + limits::SCAN_SLOT_OVERHEAD_BYTES_MAX;
        let full = bytes + size > limits::SCAN_PAGE_BYTES_MAX || page.len() == limits::SCAN_PAGE_SLOTS_MAX;
        if full && !page.is_empty() {
            pages.push(std::mem::take(&mut page));
            bytes = 0;
        }
        page.push(slot);
        bytes += size;
    }
    // Always one page, so that an empty store is seeded (and marked) too.
    pages.push(page);
    pages
}

/// The key the page `index` starts after.
fn page_after(pages: &[Vec<ScanSlot>], index: usize) -> Option<Key> {
    index.checked_sub(1).and_then(|i| pages.get(i)).and_then(|p| p.last()).map(|s| s.key.clone())
}

fn seed_page(epoch: Epoch, pages: &[Vec<ScanSlot>], index: usize) -> Option<Message> {
    let slots = pages.get(index)?.clone();
    let done = index + 1 == pages.len();
    Some(Message::Seed { epoch, after: page_after(pages, index), slots, done })
}
