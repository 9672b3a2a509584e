//! The watches a node holds for its clients (see `docs/watch.md`): a
//! bounded table of long polls, each waiting for a version of its key
//! after the one its client saw.
//!
//! A watch goes through three stages. *Waiting*: it needs a read of its
//! key; the node runs one read per key at a time through its own proposer
//! (the path client requests take), so any number of watches of one key
//! cost one read. *Reading*: that read is under way. *Parked*: the read
//! found nothing after the watch's version; the watch waits until the key
//! changes (the node's acceptor accepts a newer state, or its proposer
//! finds one chosen) or until `WATCH_PARK_MS` after it came, when it is
//! answered "unchanged" and its client asks again.
//!
//! A state the node's proposer finds chosen for a watched key (a write's,
//! or a read's) answers at once the watches it is newer than among those
//! that came before the attempt that found it began: such a state is the
//! key's latest at some moment after that attempt began, so after those
//! watches came, and its history holds the versions before it. A watch
//! that came later may have missed a newer state chosen meanwhile; it waits
//! for its own read.
//!
//! Every input costs the table O(log n) or the work it finds: the keys
//! that need a read now, and the timers (answers due, reads put off), are
//! kept apart in ordered sets, so parked watches cost nothing until their
//! key changes or their time is up.
//!
//! The table is pure bookkeeping: the node starts the reads and sends the
//! answers it returns.

use super::proposer::ReqHandle;
use crate::change::Change;
use crate::limits;
use crate::types::{Key, PastState, RegisterState, Time, Version};
use crate::wire::{Refusal, WatchAnswer, WatchId};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Waiting,
    Reading,
    Parked,
}

/// One watch.
#[derive(Clone, Debug)]
struct Watch {
    key: Key,
    after: Option<Version>,
    every_version: bool,
    /// When it is answered "unchanged" if nothing newer came.
    answer_by: Time,
    stage: Stage,
    /// Its place in the order watches came in (see `Watches::arrivals`).
    arrival: u64,
    /// The newest version found chosen since it came (by a read that
    /// covered it), for "unchanged" answers: `None` until then, when the
    /// node knows nothing it may tell about the key.
    seen: Option<Version>,
}

/// The watches of one key.
#[derive(Clone, Debug)]
struct KeyWatches<A> {
    watches: BTreeSet<(A, WatchId)>,
    /// How many of them are waiting for a read.
    waiting: usize,
    /// The read under way for them, and whether it runs both phases.
    read: Option<(ReqHandle, bool)>,
    /// The key changed while the read was under way: the watches it leaves
    /// unanswered need another.
    dirty: bool,
    /// No read starts before this (see `WATCH_REREAD_MS`).
    reread_at: Option<Time>,
    /// The next read runs both phases (see `Watches::read_done`).
    write_back: bool,
}

impl<A> Default for KeyWatches<A> {
    fn default() -> Self {
        KeyWatches {
            watches: BTreeSet::new(),
            waiting: 0,
            read: None,
            dirty: false,
            reread_at: None,
            write_back: false,
        }
    }
}

/// A read that a key's watches need now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueRead {
    pub key: Key,
    /// A watch if one of the waiting watches wants every version (that
    /// keeps the key's history), else a plain read.
    pub change: Change,
    /// Read in both phases, which writes the state back (see `read_done`).
    pub write_back: bool,
}

/// An answer for the client at `A`.
pub type WatchReplies<A> = Vec<(A, WatchId, Key, WatchAnswer)>;

#[derive(Debug)]
pub struct Watches<A> {
    all: BTreeMap<(A, WatchId), Watch>,
    keys: BTreeMap<Key, KeyWatches<A>>,
    /// The keys that need a read now: some of their watches wait, and no
    /// read of theirs is under way or put off.
    due: BTreeSet<Key>,
    /// The keys whose next read is put off, by when it may start.
    rereads: BTreeSet<(Time, Key)>,
    /// The watches not being read, by when they are answered "unchanged".
    expiries: BTreeSet<(Time, A, WatchId)>,
    /// Watches taken so far.
    arrivals: u64,
    max: usize,
}

impl<A: Copy + Ord> Watches<A> {
    pub fn new(max: usize) -> Watches<A> {
        Watches {
            all: BTreeMap::new(),
            keys: BTreeMap::new(),
            due: BTreeSet::new(),
            rereads: BTreeSet::new(),
            expiries: BTreeSet::new(),
            arrivals: 0,
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// How many watches were taken so far. A proposal attempt notes it when
    /// it begins; the state it finds chosen answers only watches taken
    /// before (see `deliver`).
    pub fn arrivals(&self) -> u64 {
        self.arrivals
    }

    /// Takes a watch request that came at `now`. A copy of one held already
    /// changes nothing. Refused when the table is full.
    pub fn add(
        &mut self,
        now: Time,
        from: A,
        id: WatchId,
        key: Key,
        after: Option<Version>,
        every_version: bool,
    ) -> Result<(), Refusal> {
        if self.all.contains_key(&(from, id)) {
            return Ok(());
        }
        if self.all.len() >= self.max {
            return Err(Refusal::Overloaded);
        }
        let answer_by = now.plus_millis(limits::WATCH_PARK_MS);
        let arrival = self.arrivals;
        self.arrivals += 1;
        let watch = Watch {
            key: key.clone(),
            after,
            every_version,
            answer_by,
            stage: Stage::Waiting,
            arrival,
            seen: None,
        };
        self.all.insert((from, id), watch);
        self.expiries.insert((answer_by, from, id));
        let k = self.keys.entry(key.clone()).or_default();
        k.watches.insert((from, id));
        k.waiting += 1;
        self.refresh_due(&key);
        Ok(())
    }

    /// Whether some key needs a read now.
    pub fn has_due(&self) -> bool {
        !self.due.is_empty()
    }

    /// Takes the next key that needs a read now. The caller starts it
    /// (`reading`) or puts it off (`put_off`).
    pub fn pop_due(&mut self) -> Option<DueRead> {
        let key = self.due.pop_first()?;
        let k = self.keys.get(&key)?;
        let waiting =
            k.watches.iter().filter_map(|id| self.all.get(id)).filter(|w| w.stage == Stage::Waiting);
        let every_version = waiting.clone().any(|w| w.every_version);
        debug_assert!(waiting.count() == k.waiting && k.waiting > 0, "a due key has waiting watches");
        let change = if every_version { Change::Watch } else { Change::Read };
        Some(DueRead { key, change, write_back: k.write_back })
    }

    /// The read `handle` of `key` started (in both phases if `write_back`):
    /// it covers the waiting watches.
    pub fn reading(&mut self, key: &Key, handle: ReqHandle, write_back: bool) {
        let Some(k) = self.keys.get_mut(key) else { return };
        k.read = Some((handle, write_back));
        k.dirty = false;
        k.write_back = false;
        let waiting: Vec<(A, WatchId)> = k
            .watches
            .iter()
            .filter(|id| self.all.get(id).is_some_and(|w| w.stage == Stage::Waiting))
            .copied()
            .collect();
        for id in waiting {
            self.set_stage(id, Stage::Reading);
        }
        self.refresh_due(key);
    }

    /// The read of `key` cannot start now (the key's queue is full): it
    /// is tried again `WATCH_REREAD_MS` later, so no timer stays due.
    pub fn put_off(&mut self, now: Time, key: &Key) {
        self.set_reread(key, now.plus_millis(limits::WATCH_REREAD_MS));
    }

    /// Whether `key` has watches that a state at `version` would answer.
    fn wants(&self, key: &Key, version: Version) -> bool {
        let Some(k) = self.keys.get(key) else { return false };
        k.watches.iter().filter_map(|id| self.all.get(id)).any(|w| w.after.is_none_or(|a| a < version))
    }

    /// The node's acceptor accepted a state of `key` at `version` from
    /// another proposer: it may be chosen by now, so the watches it would
    /// answer need a read (after the one under way, if any).
    pub fn touch(&mut self, key: &Key, version: Version) {
        if !self.wants(key, version) {
            return;
        }
        let Some(k) = self.keys.get_mut(key) else { return };
        if k.read.is_some() {
            k.dirty = true;
        }
        let parked: Vec<(A, WatchId)> = k
            .watches
            .iter()
            .filter(|id| self.all.get(id).is_some_and(|w| w.stage == Stage::Parked))
            .copied()
            .collect();
        for id in parked {
            self.set_stage(id, Stage::Waiting);
        }
        self.refresh_due(key);
    }

    /// A state of `key` found chosen by an attempt that began when
    /// `arrivals` watches had been taken: answers, up to `budget` of them,
    /// the watches taken before that it is newer than. Watches it would
    /// answer beyond `budget` wait for another read, which finds this state
    /// or a newer one.
    pub fn deliver(
        &mut self,
        key: &Key,
        state: &RegisterState,
        arrivals: u64,
        budget: usize,
    ) -> WatchReplies<A> {
        let Some(k) = self.keys.get(key) else { return Vec::new() };
        let (mut answered, mut left) = (Vec::new(), Vec::new());
        for id in &k.watches {
            let Some(w) = self.all.get_mut(id).filter(|w| w.arrival < arrivals) else { continue };
            if w.after.is_some_and(|a| a >= state.version) {
                w.seen = w.seen.max(Some(state.version));
            } else if answered.len() < budget {
                answered.push(*id);
            } else if w.stage == Stage::Parked {
                left.push(*id);
            }
        }
        for id in left {
            self.set_stage(id, Stage::Waiting);
        }
        let mut replies = Vec::with_capacity(answered.len());
        for (from, id) in answered {
            if let Some(w) = self.remove(from, id) {
                replies.push((from, id, key.clone(), answer_for(state, w.after, w.every_version)));
            }
        }
        self.refresh_due(key);
        replies
    }

    /// The read of `key` ended at `now`: with the version it found (the
    /// state itself went to `deliver`), or `None` when it could not be
    /// done. `local` is the version the node's own acceptor holds.
    ///
    /// A newer local version means a write is under way elsewhere, or a
    /// leftover: a state this acceptor accepted that was never chosen (its
    /// proposer died mid-write). A read in one round writes nothing, so it
    /// would find the leftover again and again; the key is read once more,
    /// `WATCH_REREAD_MS` later (time for a write under way to end), in both
    /// phases, which write the state back and so replace the leftover. A
    /// read in both phases is not followed by another: only a new accept
    /// from another proposer (`touch`) makes the key read again.
    pub fn read_done(
        &mut self,
        now: Time,
        key: &Key,
        found: Option<Version>,
        local: Version,
    ) -> WatchReplies<A> {
        let Some(k) = self.keys.get_mut(key) else { return Vec::new() };
        let both_phases = k.read.take().is_some_and(|(_, write_back)| write_back);
        let again = std::mem::take(&mut k.dirty);
        let reread = !both_phases && found.is_some_and(|v| local > v);
        let reading: Vec<(A, WatchId)> = k
            .watches
            .iter()
            .filter(|id| self.all.get(id).is_some_and(|w| w.stage == Stage::Reading))
            .copied()
            .collect();
        let mut replies = Vec::new();
        for (from, id) in reading {
            let Some(w) = self.all.get_mut(&(from, id)) else { continue };
            w.seen = w.seen.max(found);
            // A newer state it was not answered with: the turn's answers
            // ran out (see `deliver`).
            let missed = found.is_some_and(|v| w.after.is_none_or(|a| a < v));
            let answer = match (found, w.seen) {
                (Some(_), Some(seen)) if now >= w.answer_by => unchanged(seen),
                (Some(_), _) => {
                    let stage = if again || reread || missed { Stage::Waiting } else { Stage::Parked };
                    self.set_stage((from, id), stage);
                    continue;
                }
                (None, _) => WatchAnswer::Unavailable,
            };
            self.remove(from, id);
            replies.push((from, id, key.clone(), answer));
        }
        if reread {
            self.set_reread(key, now.plus_millis(limits::WATCH_REREAD_MS));
            if let Some(k) = self.keys.get_mut(key) {
                k.write_back = true;
            }
        }
        self.forget_if_idle(key);
        self.refresh_due(key);
        replies
    }

    /// Time passed: answers every watch not being read whose time is up
    /// ("unchanged", with the newest version found since it came, or
    /// "unavailable" when no read covered it), and makes the reads put off
    /// until `now` due.
    pub fn expire(&mut self, now: Time) -> WatchReplies<A> {
        while let Some((at, key)) = self.rereads.first().cloned().filter(|(at, _)| *at <= now) {
            self.rereads.remove(&(at, key.clone()));
            if let Some(k) = self.keys.get_mut(&key) {
                k.reread_at = None;
            }
            self.refresh_due(&key);
        }
        let mut replies = Vec::new();
        while let Some(&(at, from, id)) = self.expiries.first().filter(|(at, _, _)| *at <= now) {
            self.expiries.remove(&(at, from, id));
            let Some(w) = self.remove(from, id) else { continue };
            let answer = w.seen.map_or(WatchAnswer::Unavailable, unchanged);
            replies.push((from, id, w.key, answer));
        }
        replies
    }

    /// Answers every watch with `refusal` (the node stops, or stops serving).
    pub fn refuse_all(&mut self, refusal: Refusal) -> WatchReplies<A> {
        self.keys.clear();
        self.due.clear();
        self.rereads.clear();
        self.expiries.clear();
        let all = std::mem::take(&mut self.all);
        all.into_iter().map(|((from, id), w)| (from, id, w.key, WatchAnswer::Refused(refusal))).collect()
    }

    /// When `expire` next has something to do. (Keys due now wait for the
    /// node to have room for their reads: see `Node::next_deadline`.)
    pub fn next_deadline(&self) -> Option<Time> {
        let expiry = self.expiries.first().map(|(at, _, _)| *at);
        let reread = self.rereads.first().map(|(at, _)| *at);
        expiry.into_iter().chain(reread).min()
    }

    fn remove(&mut self, from: A, id: WatchId) -> Option<Watch> {
        let watch = self.all.remove(&(from, id))?;
        if watch.stage != Stage::Reading {
            self.expiries.remove(&(watch.answer_by, from, id));
        }
        if let Some(k) = self.keys.get_mut(&watch.key) {
            k.watches.remove(&(from, id));
            if watch.stage == Stage::Waiting {
                k.waiting -= 1;
            }
        }
        self.forget_if_idle(&watch.key);
        self.refresh_due(&watch.key);
        Some(watch)
    }

    /// Forgets `key` once it has no watches. A key's entry outlives its
    /// watches while its read runs, so the read's end finds it.
    fn forget_if_idle(&mut self, key: &Key) {
        let Some(k) = self.keys.get(key).filter(|k| k.watches.is_empty() && k.read.is_none()) else { return };
        if let Some(at) = k.reread_at {
            self.rereads.remove(&(at, key.clone()));
        }
        self.keys.remove(key);
    }

    /// Moves watch `id` to `stage`, keeping its key's count of waiting
    /// watches and the expiry timers in step. The caller refreshes the
    /// key's place among the due ones.
    fn set_stage(&mut self, id: (A, WatchId), stage: Stage) {
        let Some(w) = self.all.get_mut(&id).filter(|w| w.stage != stage) else { return };
        let Some(k) = self.keys.get_mut(&w.key) else { return };
        match (w.stage, stage) {
            (Stage::Waiting, _) => k.waiting -= 1,
            (_, Stage::Waiting) => k.waiting += 1,
            _ => {}
        }
        // Reading watches are answered when their read ends, not by time.
        if w.stage == Stage::Reading {
            self.expiries.insert((w.answer_by, id.0, id.1));
        }
        if stage == Stage::Reading {
            self.expiries.remove(&(w.answer_by, id.0, id.1));
        }
        w.stage = stage;
    }

    /// No read of `key` starts before `at`.
    fn set_reread(&mut self, key: &Key, at: Time) {
        let Some(k) = self.keys.get_mut(key) else { return };
        if let Some(old) = k.reread_at.replace(at) {
            self.rereads.remove(&(old, key.clone()));
        }
        self.rereads.insert((at, key.clone()));
        self.refresh_due(key);
    }

    /// Puts `key` among the due keys exactly when it needs a read now.
    fn refresh_due(&mut self, key: &Key) {
        let needs =
            self.keys.get(key).is_some_and(|k| k.waiting > 0 && k.read.is_none() && k.reread_at.is_none());
        if !needs {
            self.due.remove(key);
        } else if !self.due.contains(key) {
            self.due.insert(key.clone());
        }
    }

    /// The table's indexes agree with its watches (tests).
    #[cfg(test)]
    fn assert_consistent(&self) {
        for (key, k) in &self.keys {
            let watches: Vec<&Watch> = k.watches.iter().filter_map(|id| self.all.get(id)).collect();
            assert_eq!(watches.len(), k.watches.len());
            assert_eq!(watches.iter().filter(|w| w.stage == Stage::Waiting).count(), k.waiting);
            assert_eq!(self.due.contains(key), k.waiting > 0 && k.read.is_none() && k.reread_at.is_none());
            assert_eq!(
                k.reread_at.is_some_and(|at| self.rereads.contains(&(at, key.clone()))),
                k.reread_at.is_some()
            );
        }
        let timed = self.all.values().filter(|w| w.stage != Stage::Reading).count();
        assert_eq!(self.expiries.len(), timed);
        assert!(self.due.iter().all(|key| self.keys.contains_key(key)));
        assert!(self.rereads.iter().all(|(_, key)| self.keys.contains_key(key)));
    }
}
/// Nothing after the watch's version: the key is at `current`.
fn unchanged(current: Version) -> WatchAnswer {
    WatchAnswer::States { versions: Vec::new(), current, gap: false }
}

/// The answer for a watch of versions after `after` from a chosen `state`
/// newer than it: the states after `after` that the history holds, then
/// the current one, oldest first (only the current one when the client
/// did not ask for every version, or asked for the current state only).
/// The bounds of `History` keep it within one datagram.
pub fn answer_for(state: &RegisterState, after: Option<Version>, every_version: bool) -> WatchAnswer {
    let current = PastState { version: state.version, value: state.value.clone() };
    let Some(after) = after else {
        let versions = if state.version > Version(0) { vec![current] } else { Vec::new() };
        return WatchAnswer::States { versions, current: state.version, gap: false };
    };
    let past = state.history.iter().filter(|_| every_version).flat_map(|h| h.past.iter().rev());
    let versions: Vec<PastState> = past.filter(|s| s.version > after).cloned().chain([current]).collect();
    let first = versions.first().map_or(state.version, |s| s.version);
    let gap = first.0 > after.0.saturating_add(1);
    WatchAnswer::States { versions, current: state.version, gap }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{History, Value};

    const T0: Time = Time(5_000_000);

    fn k() -> Key {
        Key::from("k")
    }

    fn past(version: u64, value: &str) -> PastState {
        PastState { version: Version(version), value: Some(Value::from(value)) }
    }

    fn watched(version: u64, history: &[(u64, &str)]) -> RegisterState {
        let past_states = history.iter().rev().map(|&(v, x)| past(v, x)).collect();
        RegisterState {
            value: Some(Value::from(format!("v{version}").as_str())),
            version: Version(version),
            history: Some(History { past: past_states }),
            ..Default::default()
        }
    }

    fn states(versions: Vec<PastState>, current: u64, gap: bool) -> WatchAnswer {
        WatchAnswer::States { versions, current: Version(current), gap }
    }

    #[test]
    fn answers_hold_the_versions_after_the_watchers_oldest_first() {
        let state = watched(5, &[(2, "v2"), (3, "v3"), (4, "v4")]);
        let all = vec![past(3, "v3"), past(4, "v4"), past(5, "v5")];
        assert_eq!(answer_for(&state, Some(Version(2)), true), states(all, 5, false));
        assert_eq!(answer_for(&state, Some(Version(4)), true), states(vec![past(5, "v5")], 5, false));
        // After 0 the history reaches back to 2 only: version 1 is missed.
        let from_zero = answer_for(&state, Some(Version(0)), true);
        assert_eq!(
            from_zero,
            states(vec![past(2, "v2"), past(3, "v3"), past(4, "v4"), past(5, "v5")], 5, true)
        );
        assert_eq!(answer_for(&state, None, true), states(vec![past(5, "v5")], 5, false));
        assert_eq!(answer_for(&state, Some(Version(0)), false), states(vec![past(5, "v5")], 5, true));
        let unwatched = RegisterState { history: None, ..state };
        assert_eq!(answer_for(&unwatched, Some(Version(4)), true), states(vec![past(5, "v5")], 5, false));
        assert_eq!(answer_for(&RegisterState::default(), None, true), states(vec![], 0, false));
    }

    fn table() -> Watches<u32> {
        Watches::new(2)
    }

    /// Delivered by an attempt that began after every watch came, with
    /// room for every answer.
    fn deliver_all(w: &mut Watches<u32>, state: &RegisterState) -> WatchReplies<u32> {
        let replies = w.deliver(&k(), state, w.arrivals(), usize::MAX);
        w.assert_consistent();
        replies
    }

    /// Starts the read that is due, as `handle`.
    fn start(w: &mut Watches<u32>, handle: u64) -> DueRead {
        let due = w.pop_due().expect("a read is due");
        w.reading(&due.key, ReqHandle(handle), due.write_back);
        w.assert_consistent();
        due
    }

    fn due(change: Change, write_back: bool) -> DueRead {
        DueRead { key: k(), change, write_back }
    }

    fn done(w: &mut Watches<u32>, at: Time, found: Option<u64>, local: u64) -> WatchReplies<u32> {
        let replies = w.read_done(at, &k(), found.map(Version), Version(local));
        w.assert_consistent();
        replies
    }

    #[test]
    fn watches_of_one_key_share_one_read_and_park_when_nothing_is_newer() {
        let mut w = table();
        assert_eq!(w.add(T0, 1, WatchId(1), k(), Some(Version(5)), true), Ok(()));
        assert_eq!(w.add(T0, 2, WatchId(1), k(), Some(Version(3)), false), Ok(()));
        assert_eq!(start(&mut w, 9), due(Change::Watch, false));
        assert_eq!(w.pop_due(), None, "one read at a time");
        let replies = deliver_all(&mut w, &watched(5, &[(4, "v4")]));
        assert_eq!(replies, vec![(2, WatchId(1), k(), states(vec![past(5, "v5")], 5, true))]);
        assert_eq!(done(&mut w, T0, Some(5), 5), vec![]);
        assert_eq!(w.len(), 1, "the watch after 5 is parked");
        assert_eq!(w.pop_due(), None);
        assert_eq!(w.next_deadline(), Some(T0.plus_millis(limits::WATCH_PARK_MS)));
    }

    #[test]
    fn a_key_whose_watches_were_all_answered_during_its_read_is_forgotten_when_the_read_ends() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(1)), true).expect("room");
        start(&mut w, 1);
        assert_eq!(deliver_all(&mut w, &watched(2, &[])).len(), 1);
        assert!(w.is_empty());
        assert_eq!(w.keys.len(), 1, "kept for the read's end");
        assert_eq!(done(&mut w, T0, Some(2), 2), vec![]);
        assert!(w.keys.is_empty());
    }

    #[test]
    fn an_unchanged_answer_names_the_newest_version_read() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(3)), true).expect("room");
        w.add(T0, 2, WatchId(2), k(), Some(Version(9)), true).expect("room");
        start(&mut w, 1);
        assert_eq!(deliver_all(&mut w, &watched(4, &[])).len(), 1);
        done(&mut w, T0, Some(4), 4);
        let up = T0.plus_millis(limits::WATCH_PARK_MS);
        assert_eq!(w.expire(up), vec![(2, WatchId(2), k(), states(vec![], 4, false))]);
        assert!(w.keys.is_empty());
        w.assert_consistent();
    }

    #[test]
    fn a_state_answers_only_the_watches_that_came_before_its_attempt_began() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(4)), false).expect("room");
        let attempt_began = w.arrivals();
        w.add(T0, 2, WatchId(2), k(), Some(Version(4)), false).expect("room");
        let replies = w.deliver(&k(), &watched(5, &[]), attempt_began, usize::MAX);
        assert_eq!(replies, vec![(1, WatchId(1), k(), states(vec![past(5, "v5")], 5, false))]);
        w.assert_consistent();
        // The later watch waits for its own read, whose state answers it.
        assert_eq!(start(&mut w, 1), due(Change::Read, false));
        let replies = deliver_all(&mut w, &watched(6, &[]));
        assert_eq!(replies, vec![(2, WatchId(2), k(), states(vec![past(6, "v6")], 6, true))]);
    }

    #[test]
    fn an_accept_elsewhere_wakes_parked_watches_and_a_newer_local_state_is_read_again_in_both_phases_once() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(5)), true).expect("room");
        start(&mut w, 1);
        done(&mut w, T0, Some(5), 5);
        w.touch(&k(), Version(5));
        assert_eq!(w.pop_due(), None, "not newer than the watch");
        w.touch(&k(), Version(6));
        assert_eq!(start(&mut w, 2), due(Change::Watch, false));
        // The read still found 5 while this acceptor holds 6: again later,
        // in both phases.
        assert_eq!(done(&mut w, T0, Some(5), 6), vec![]);
        assert_eq!(w.pop_due(), None);
        let later = T0.plus_millis(limits::WATCH_REREAD_MS);
        assert_eq!(w.next_deadline(), Some(later));
        assert_eq!(w.expire(later), vec![]);
        assert_eq!(start(&mut w, 3), due(Change::Watch, true));
        // Still behind after writing back (this acceptor promised a newer
        // ballot meanwhile): no more reads until the key is touched again.
        assert_eq!(done(&mut w, later, Some(5), 6), vec![]);
        assert_eq!(w.pop_due(), None);
        assert_eq!(w.next_deadline(), Some(T0.plus_millis(limits::WATCH_PARK_MS)));
    }

    #[test]
    fn a_change_during_the_read_makes_the_watches_it_left_wait_for_another() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(5)), true).expect("room");
        start(&mut w, 1);
        w.touch(&k(), Version(6));
        done(&mut w, T0, Some(5), 5);
        assert_eq!(start(&mut w, 2), due(Change::Watch, false));
    }

    #[test]
    fn a_read_put_off_moves_its_timer_forward_and_is_due_again_then() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(5)), true).expect("room");
        let read = w.pop_due().expect("due");
        w.put_off(T0, &read.key);
        w.assert_consistent();
        assert_eq!(w.pop_due(), None);
        let later = T0.plus_millis(limits::WATCH_REREAD_MS);
        assert_eq!(w.next_deadline(), Some(later));
        assert_eq!(w.expire(Time(later.0 - 1)), vec![]);
        assert!(!w.has_due());
        assert_eq!(w.expire(later), vec![]);
        assert_eq!(w.pop_due(), Some(due(Change::Watch, false)));
    }

    #[test]
    fn answers_beyond_the_budget_wait_for_another_read() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(5)), true).expect("room");
        w.add(T0, 2, WatchId(2), k(), Some(Version(5)), true).expect("room");
        start(&mut w, 1);
        done(&mut w, T0, Some(5), 5);
        let replies = w.deliver(&k(), &watched(6, &[]), w.arrivals(), 1);
        assert_eq!(replies, vec![(1, WatchId(1), k(), states(vec![past(6, "v6")], 6, false))]);
        w.assert_consistent();
        assert_eq!(start(&mut w, 2), due(Change::Watch, false));
        let replies = deliver_all(&mut w, &watched(6, &[]));
        assert_eq!(replies, vec![(2, WatchId(2), k(), states(vec![past(6, "v6")], 6, false))]);
    }

    #[test]
    fn a_watch_no_read_covered_is_answered_unavailable_when_its_time_is_up() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), None, true).expect("room");
        w.add(T0, 2, WatchId(2), k(), Some(Version(5)), true).expect("room");
        let up = T0.plus_millis(limits::WATCH_PARK_MS);
        let unavailable = |from: u32| (from, WatchId(from.into()), k(), WatchAnswer::Unavailable);
        assert_eq!(w.expire(up), vec![unavailable(1), unavailable(2)]);
        assert!(w.keys.is_empty() && !w.has_due());
    }

    #[test]
    fn time_up_answers_unchanged_a_failed_read_unavailable_and_a_full_table_refuses() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(5)), true).expect("room");
        w.add(T0, 1, WatchId(1), k(), Some(Version(5)), true).expect("a copy takes no room");
        w.add(T0, 2, WatchId(2), Key::from("other"), Some(Version(0)), true).expect("room");
        assert_eq!(w.add(T0, 3, WatchId(3), k(), None, true), Err(Refusal::Overloaded));
        assert_eq!(start(&mut w, 1).key, k());
        done(&mut w, T0, Some(5), 5);
        assert_eq!(start(&mut w, 2).key, Key::from("other"));
        let up = T0.plus_millis(limits::WATCH_PARK_MS);
        assert_eq!(w.expire(up), vec![(1, WatchId(1), k(), states(vec![], 5, false))]);
        let failed = w.read_done(up, &Key::from("other"), None, Version(0));
        assert_eq!(failed, vec![(2, WatchId(2), Key::from("other"), WatchAnswer::Unavailable)]);
        assert!(w.is_empty());
        assert!(w.keys.is_empty(), "no key entry outlives its watches");
        w.assert_consistent();
    }

    #[test]
    fn parked_watches_leave_nothing_due_and_one_timer_each() {
        let mut w: Watches<u32> = Watches::new(limits::WATCHES_PARKED_MAX);
        for i in 0..limits::WATCHES_PARKED_MAX as u32 {
            let key = Key(format!("w{i}").into_bytes());
            w.add(T0.plus_millis(u64::from(i)), i, WatchId(1), key.clone(), Some(Version(1)), true)
                .expect("room");
            let read = w.pop_due().expect("due");
            w.reading(&read.key, ReqHandle(u64::from(i)), false);
            w.read_done(T0, &key, Some(Version(1)), Version(1));
        }
        w.assert_consistent();
        assert!(!w.has_due());
        assert_eq!((w.due.len(), w.rereads.len(), w.expiries.len()), (0, 0, limits::WATCHES_PARKED_MAX));
        assert_eq!(w.next_deadline(), Some(T0.plus_millis(limits::WATCH_PARK_MS)));
    }
}
