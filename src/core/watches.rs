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
//! Every state the node's proposer finds chosen for a watched key (a
//! write's, or a read's) answers at once the watches it is newer than:
//! a chosen state is the key's latest at some moment after the watch came
//! or its read began, and its history holds the versions before it.
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
}

/// The watches of one key.
#[derive(Clone, Debug)]
struct KeyWatches<A> {
    watches: BTreeSet<(A, WatchId)>,
    /// The read under way for them.
    read: Option<ReqHandle>,
    /// The key changed while the read was under way: the watches it leaves
    /// unanswered need another.
    dirty: bool,
    /// No read starts before this (see `WATCH_REREAD_MS`).
    reread_at: Option<Time>,
    /// The newest version read or found chosen, for "unchanged" answers.
    known: Option<Version>,
}

impl<A> Default for KeyWatches<A> {
    fn default() -> Self {
        KeyWatches { watches: BTreeSet::new(), read: None, dirty: false, reread_at: None, known: None }
    }
}

/// An answer for the client at `A`.
pub type WatchReplies<A> = Vec<(A, WatchId, Key, WatchAnswer)>;

#[derive(Debug)]
pub struct Watches<A> {
    all: BTreeMap<(A, WatchId), Watch>,
    keys: BTreeMap<Key, KeyWatches<A>>,
    max: usize,
}

impl<A: Copy + Ord> Watches<A> {
    pub fn new(max: usize) -> Watches<A> {
        Watches { all: BTreeMap::new(), keys: BTreeMap::new(), max }
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
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
        let watch = Watch { key: key.clone(), after, every_version, answer_by, stage: Stage::Waiting };
        self.all.insert((from, id), watch);
        self.keys.entry(key).or_default().watches.insert((from, id));
        Ok(())
    }

    /// The keys that need a read now, each with the change to read it
    /// with: a watch if any of its watches wants every version (that keeps
    /// the key's history), else a plain read.
    pub fn due_reads(&self, now: Time) -> Vec<(Key, Change)> {
        let due = self.keys.iter().filter(|(_, k)| k.read.is_none() && k.reread_at.is_none_or(|t| t <= now));
        due.filter_map(|(key, k)| {
            let waiting: Vec<&Watch> = k
                .watches
                .iter()
                .filter_map(|w| self.all.get(w))
                .filter(|w| w.stage == Stage::Waiting)
                .collect();
            let change = if waiting.iter().any(|w| w.every_version) { Change::Watch } else { Change::Read };
            (!waiting.is_empty()).then(|| (key.clone(), change))
        })
        .collect()
    }

    /// The read `handle` of `key` started: it covers the waiting watches.
    pub fn reading(&mut self, key: &Key, handle: ReqHandle) {
        let Some(k) = self.keys.get_mut(key) else { return };
        k.read = Some(handle);
        k.dirty = false;
        k.reread_at = None;
        for id in &k.watches {
            if let Some(w) = self.all.get_mut(id).filter(|w| w.stage == Stage::Waiting) {
                w.stage = Stage::Reading;
            }
        }
    }

    /// Whether `key` has watches that a state at `version` would answer.
    pub fn wants(&self, key: &Key, version: Version) -> bool {
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
        for id in &k.watches {
            if let Some(w) = self.all.get_mut(id).filter(|w| w.stage == Stage::Parked) {
                w.stage = Stage::Waiting;
            }
        }
    }

    /// A state of `key` found chosen: answers every watch it is newer than.
    pub fn deliver(&mut self, key: &Key, state: &RegisterState) -> WatchReplies<A> {
        let Some(k) = self.keys.get_mut(key) else { return Vec::new() };
        k.known = k.known.max(Some(state.version));
        let answered: Vec<(A, WatchId)> = k
            .watches
            .iter()
            .filter(|id| self.all.get(id).is_some_and(|w| w.after.is_none_or(|a| a < state.version)))
            .copied()
            .collect();
        let mut replies = Vec::with_capacity(answered.len());
        for (from, id) in answered {
            if let Some(w) = self.remove(from, id) {
                replies.push((from, id, key.clone(), answer_for(state, w.after, w.every_version)));
            }
        }
        replies
    }

    /// The read of `key` ended at `now`: with the version it found (the
    /// state itself went to `deliver`), or `None` when it could not be
    /// done. `local` is the version the node's own acceptor holds: a newer
    /// one means a write is under way, and the key is read again shortly.
    pub fn read_done(
        &mut self,
        now: Time,
        key: &Key,
        found: Option<Version>,
        local: Version,
    ) -> WatchReplies<A> {
        let Some(k) = self.keys.get_mut(key) else { return Vec::new() };
        k.read = None;
        let again = k.dirty || found.is_some_and(|v| local > v);
        if found.is_some_and(|v| local > v) {
            k.reread_at = Some(now.plus_millis(limits::WATCH_REREAD_MS));
        }
        let reading: Vec<(A, WatchId)> = k
            .watches
            .iter()
            .filter(|id| self.all.get(id).is_some_and(|w| w.stage == Stage::Reading))
            .copied()
            .collect();
        let mut replies = Vec::new();
        for (from, id) in reading {
            let Some(w) = self.all.get_mut(&(from, id)) else { continue };
            if found.is_some() && now < w.answer_by {
                w.stage = if again { Stage::Waiting } else { Stage::Parked };
                continue;
            }
            let answer = match found {
                Some(current) => unchanged(current),
                None => WatchAnswer::Unavailable,
            };
            self.remove(from, id);
            replies.push((from, id, key.clone(), answer));
        }
        // Every watch may have been answered while the read ran.
        if self.keys.get(key).is_some_and(|k| k.watches.is_empty()) {
            self.keys.remove(key);
        }
        replies
    }

    /// Answers "unchanged" every watch not being read whose time is up.
    pub fn expire(&mut self, now: Time) -> WatchReplies<A> {
        let due: Vec<(A, WatchId)> = self
            .all
            .iter()
            .filter(|(_, w)| w.stage != Stage::Reading && w.answer_by <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut replies = Vec::with_capacity(due.len());
        for (from, id) in due {
            let Some(key) = self.all.get(&(from, id)).map(|w| w.key.clone()) else { continue };
            let known = self.keys.get(&key).and_then(|k| k.known);
            let Some(w) = self.remove(from, id) else { continue };
            let current = known.or(w.after).unwrap_or_default();
            replies.push((from, id, key, unchanged(current)));
        }
        replies
    }

    /// Answers every watch with `refusal` (the node stops, or stops serving).
    pub fn refuse_all(&mut self, refusal: Refusal) -> WatchReplies<A> {
        self.keys.clear();
        let all = std::mem::take(&mut self.all);
        all.into_iter().map(|((from, id), w)| (from, id, w.key, WatchAnswer::Refused(refusal))).collect()
    }

    /// When `expire` or `due_reads` next has something to do.
    pub fn next_deadline(&self) -> Option<Time> {
        let expiry = self.all.values().filter(|w| w.stage != Stage::Reading).map(|w| w.answer_by);
        let rereads = self.keys.values().filter_map(|k| k.reread_at.filter(|_| k.read.is_none()));
        expiry.chain(rereads).min()
    }

    fn remove(&mut self, from: A, id: WatchId) -> Option<Watch> {
        let watch = self.all.remove(&(from, id))?;
        if let Some(k) = self.keys.get_mut(&watch.key) {
            k.watches.remove(&(from, id));
            // A key's entry outlives its watches while its read runs, so
            // the read's end finds it.
            if k.watches.is_empty() && k.read.is_none() {
                self.keys.remove(&watch.key);
            }
        }
        Some(watch)
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

    #[test]
    fn watches_of_one_key_share_one_read_and_park_when_nothing_is_newer() {
        let mut w = table();
        assert_eq!(w.add(T0, 1, WatchId(1), k(), Some(Version(5)), true), Ok(()));
        assert_eq!(w.add(T0, 2, WatchId(1), k(), Some(Version(3)), false), Ok(()));
        assert_eq!(w.due_reads(T0), vec![(k(), Change::Watch)]);
        w.reading(&k(), ReqHandle(9));
        assert_eq!(w.due_reads(T0), vec![], "one read at a time");
        let replies = w.deliver(&k(), &watched(5, &[(4, "v4")]));
        assert_eq!(replies, vec![(2, WatchId(1), k(), states(vec![past(5, "v5")], 5, true))]);
        assert_eq!(w.read_done(T0, &k(), Some(Version(5)), Version(5)), vec![]);
        assert_eq!(w.len(), 1, "the watch after 5 is parked");
        assert_eq!(w.due_reads(T0), vec![]);
        assert_eq!(w.next_deadline(), Some(T0.plus_millis(limits::WATCH_PARK_MS)));
    }

    #[test]
    fn a_key_whose_watches_were_all_answered_during_its_read_is_forgotten_when_the_read_ends() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(1)), true).expect("room");
        w.reading(&k(), ReqHandle(1));
        assert_eq!(w.deliver(&k(), &watched(2, &[])).len(), 1);
        assert!(w.is_empty());
        assert_eq!(w.keys.len(), 1, "kept for the read's end");
        assert_eq!(w.read_done(T0, &k(), Some(Version(2)), Version(2)), vec![]);
        assert!(w.keys.is_empty());
    }

    #[test]
    fn an_unchanged_answer_names_the_newest_version_read() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(3)), true).expect("room");
        w.add(T0, 2, WatchId(2), k(), Some(Version(9)), true).expect("room");
        w.reading(&k(), ReqHandle(1));
        assert_eq!(w.deliver(&k(), &watched(4, &[])).len(), 1);
        w.read_done(T0, &k(), Some(Version(4)), Version(4));
        let up = T0.plus_millis(limits::WATCH_PARK_MS);
        assert_eq!(w.expire(up), vec![(2, WatchId(2), k(), states(vec![], 4, false))]);
        assert!(w.keys.is_empty());
    }

    #[test]
    fn an_accept_elsewhere_wakes_parked_watches_and_a_newer_local_state_rereads() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(5)), true).expect("room");
        w.reading(&k(), ReqHandle(1));
        w.read_done(T0, &k(), Some(Version(5)), Version(5));
        w.touch(&k(), Version(5));
        assert_eq!(w.due_reads(T0), vec![], "not newer than the watch");
        w.touch(&k(), Version(6));
        assert_eq!(w.due_reads(T0), vec![(k(), Change::Watch)]);
        w.reading(&k(), ReqHandle(2));
        // The read still found 5 while this acceptor holds 6: again later.
        assert_eq!(w.read_done(T0, &k(), Some(Version(5)), Version(6)), vec![]);
        assert_eq!(w.due_reads(T0), vec![]);
        let later = T0.plus_millis(limits::WATCH_REREAD_MS);
        assert_eq!(w.next_deadline(), Some(later));
        assert_eq!(w.due_reads(later), vec![(k(), Change::Watch)]);
    }

    #[test]
    fn a_change_during_the_read_makes_the_watches_it_left_wait_for_another() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(5)), true).expect("room");
        w.reading(&k(), ReqHandle(1));
        w.touch(&k(), Version(6));
        w.read_done(T0, &k(), Some(Version(5)), Version(5));
        assert_eq!(w.due_reads(T0), vec![(k(), Change::Watch)]);
    }

    #[test]
    fn time_up_answers_unchanged_a_failed_read_unavailable_and_a_full_table_refuses() {
        let mut w = table();
        w.add(T0, 1, WatchId(1), k(), Some(Version(5)), true).expect("room");
        w.add(T0, 1, WatchId(1), k(), Some(Version(5)), true).expect("a copy takes no room");
        w.add(T0, 2, WatchId(2), Key::from("other"), Some(Version(0)), true).expect("room");
        assert_eq!(w.add(T0, 3, WatchId(3), k(), None, true), Err(Refusal::Overloaded));
        w.reading(&k(), ReqHandle(1));
        w.read_done(T0, &k(), Some(Version(5)), Version(5));
        w.reading(&Key::from("other"), ReqHandle(2));
        let up = T0.plus_millis(limits::WATCH_PARK_MS);
        assert_eq!(w.expire(up), vec![(1, WatchId(1), k(), states(vec![], 5, false))]);
        let failed = w.read_done(up, &Key::from("other"), None, Version(0));
        assert_eq!(failed, vec![(2, WatchId(2), Key::from("other"), WatchAnswer::Unavailable)]);
        assert!(w.is_empty());
        assert!(w.keys.is_empty(), "no key entry outlives its watches");
    }
}
