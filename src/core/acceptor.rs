//! The acceptor: per key, the highest ballot promised and the last state
//! accepted. Its two rules are all of Paxos' memory:
//! - promise `b` only if no higher ballot was promised;
//! - accept at `b` only if no higher ballot was promised.
//!
//! Every change to a slot produces a `Record`; the answer it goes with may
//! leave the node only after that record is synced (see `core::Ready`).
//!
//! # Promises on keys that do not exist
//!
//! A prepare on a key nothing was ever accepted for leaves a slot holding
//! only a promise. No accept may follow (a read of a key that does not
//! exist answers once a majority promised and reported nothing accepted; a
//! write may be given up), so such slots are kept apart (`Absent`), at most
//! `max` of them. Beyond that the lowest promise among them is dropped, and
//! every key without a slot counts as promised it from then on (`Absent::
//! floor`): the promise is widened to more keys, never forgotten, so no
//! accept below it is ever taken for that key. Writes to keys being created
//! meanwhile hold higher promises, which are kept; one whose promise goes
//! is refused at most once and retries with a higher ballot.
//!
//! Dropping writes nothing. The dropped slot's record stays in the log
//! until compaction, which writes the floor (`Record::AbsentFloor`) in
//! place of the records it leaves out; a restart before then reads the
//! record again (and may drop it again). A promise given on the strength
//! of the floor alone gets a record of its own (`handle_prepare`), so every
//! promise this acceptor sent is in a record a restart reads.

use crate::limits;
use crate::storage::Record;
use crate::types::{Ballot, Epoch, Key, RegisterState};
use crate::wire::{Message, QueryId, ScanSlot};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One key's acceptor state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub promised: Ballot,
    pub accepted: Ballot,
    pub state: RegisterState,
}

impl Slot {
    fn record(&self, key: &Key) -> Record {
        Record::Slot {
            key: key.clone(),
            promised: self.promised,
            accepted: self.accepted,
            state: self.state.clone(),
        }
    }
}

/// A slot as the acceptor keeps it: the ballots, and the state in its
/// postcard encoding. One allocation per key instead of one per value,
/// remembered writes and writers, which with a million keys is most of a
/// node's memory. Encoding costs a fraction of a microsecond per accept,
/// decoding as much per prepare or query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Stored {
    promised: Ballot,
    accepted: Ballot,
    state: Box<[u8]>,
}

impl Stored {
    fn new(slot: &Slot) -> Stored {
        Stored { promised: slot.promised, accepted: slot.accepted, state: encode_state(&slot.state) }
    }

    fn slot(&self) -> Slot {
        Slot { promised: self.promised, accepted: self.accepted, state: decode_state(&self.state) }
    }

    /// Only a promise: nothing accepted, the state a key starts with.
    fn is_promise_only(&self) -> bool {
        self.accepted.is_zero() && *self.state == *EMPTY_STATE
    }

    /// Roughly what this slot costs in the log, to decide when to compact:
    /// the key, the state, and about 48 bytes of ballots and framing.
    fn bytes(&self, key: &Key) -> u64 {
        (key.0.len() + self.state.len() + 48) as u64
    }
}

/// The encoding of `RegisterState::default()`: a register's state before
/// anything was accepted for it: each of its five fields empty, a zero tag,
/// number or length each (a test checks it against `encode_state`).
const EMPTY_STATE: &[u8] = &[0, 0, 0, 0, 0];

fn encode_state(state: &RegisterState) -> Box<[u8]> {
    // Encoding into a vector fails only when memory runs out.
    postcard::to_allocvec(state).expect("encode a register state").into_boxed_slice()
}

/// Decodes bytes `encode_state` made in this process (never bytes from the
/// network or the disk, which are validated where they come in). Failing
/// is a bug in this file; stopping the node is safe, while going on with an
/// empty state would make the acceptor forget what it accepted.
fn decode_state(bytes: &[u8]) -> RegisterState {
    postcard::from_bytes(bytes).expect("a state this acceptor encoded decodes")
}

/// What handling one phase message produced: the answer, and the record that
/// must be durable before the answer is sent (none if nothing changed).
#[derive(Debug, PartialEq, Eq)]
pub struct Vote {
    pub reply: Message,
    pub record: Option<Record>,
}

/// The slots that hold only a promise (see the module comment).
#[derive(Debug)]
struct Absent {
    /// Their keys, by promise.
    by_promise: BTreeSet<(Ballot, Key)>,
    /// Promised for every key without a slot: the highest promise dropped.
    floor: Ballot,
    max: usize,
}

impl Default for Absent {
    fn default() -> Self {
        Absent { by_promise: BTreeSet::new(), floor: Ballot::ZERO, max: limits::ABSENT_PROMISES_MAX }
    }
}

#[derive(Debug, Default)]
pub struct Acceptor {
    slots: BTreeMap<Key, Stored>,
    absent: Absent,
    /// Promised for every key (`Ballot::floor_of` the highest epoch this
    /// acceptor was fenced at): a slot's promise is the higher of its own
    /// and this.
    floor: Ballot,
    /// Accepted states below this ballot were adopted from peers while the
    /// node caught up (`Ballot::floor_of` the epoch it caught up in), not
    /// voted for: this acceptor never confirms them as its vote (a repeated
    /// accept, a one-round read, an export), because in its earlier life it
    /// may have promised a higher ballot instead of accepting them.
    adopted_below: Ballot,
    live_bytes: u64,
    #[cfg(feature = "planted-bugs")]
    pub bugs: super::PlantedBugs,
}

impl Acceptor {
    pub fn new() -> Acceptor {
        Acceptor::default()
    }

    /// An acceptor that keeps at most `max` slots holding only a promise
    /// (`limits::ABSENT_PROMISES_MAX` in the daemon; the simulator shrinks
    /// it).
    pub fn with_absent_promises_max(max: usize) -> Acceptor {
        Acceptor { absent: Absent { max: max.max(1), ..Absent::default() }, ..Acceptor::default() }
    }

    /// An acceptor restored from a log's slot records, in log order (later
    /// records win), keeping at most `absent_max` slots that hold only a
    /// promise. The newest slot of each key is found by hashing, and the
    /// map is then built in one pass from the sorted keys: a node with a
    /// million keys starts in seconds, and its map's nodes are full.
    pub fn restored(
        records: impl IntoIterator<Item = (Key, Slot)>,
        keys_hint: usize,
        absent_max: usize,
    ) -> Acceptor {
        let mut latest: HashMap<Key, Stored> = HashMap::with_capacity(keys_hint);
        for (key, slot) in records {
            latest.insert(key, Stored::new(&slot));
        }
        let slots: BTreeMap<Key, Stored> = latest.into_iter().collect();
        let live_bytes = slots.iter().map(|(key, slot)| slot.bytes(key)).sum();
        let by_promise =
            slots.iter().filter(|(_, s)| s.is_promise_only()).map(|(k, s)| (s.promised, k.clone()));
        let mut acceptor = Acceptor::with_absent_promises_max(absent_max);
        acceptor.absent.by_promise = by_promise.collect();
        acceptor.slots = slots;
        acceptor.live_bytes = live_bytes;
        acceptor.drop_absent_beyond_max();
        acceptor
    }

    /// Replays a slot record found in the log; later records win.
    pub fn restore(&mut self, key: Key, slot: Slot) {
        let stored = Stored::new(&slot);
        self.live_bytes += stored.bytes(&key);
        let promise_only = stored.is_promise_only().then_some(stored.promised);
        if let Some(old) = self.slots.insert(key.clone(), stored) {
            self.live_bytes -= old.bytes(&key);
            if old.is_promise_only() {
                self.absent.by_promise.remove(&(old.promised, key.clone()));
            }
        }
        if let Some(promised) = promise_only {
            self.absent.by_promise.insert((promised, key));
            self.drop_absent_beyond_max();
        }
    }

    /// Replays a `Record::AbsentFloor`: every key without a slot counts as
    /// promised `promised` (the highest such record wins).
    pub fn restore_absent_floor(&mut self, promised: Ballot) {
        self.absent.floor = self.absent.floor.max(promised);
    }

    /// What every key without a slot counts as promised, besides the fence.
    pub fn absent_floor(&self) -> Ballot {
        self.absent.floor
    }

    /// Slots holding only a promise.
    pub fn absent_promises(&self) -> usize {
        self.absent.by_promise.len()
    }

    /// Drops the lowest promises of keys nothing was accepted for while
    /// there are more than `max`, widening each to every key without a
    /// slot (see the module comment).
    fn drop_absent_beyond_max(&mut self) {
        while self.absent.by_promise.len() > self.absent.max {
            let Some((promised, key)) = self.absent.by_promise.pop_first() else { return };
            if let Some(old) = self.slots.remove(&key) {
                self.live_bytes -= old.bytes(&key);
            }
            if !self.forgets_dropped_promises() {
                self.absent.floor = self.absent.floor.max(promised);
            }
        }
    }

    /// The key's slot (a decoded copy), its promise raised to the floor.
    pub fn slot(&self, key: &Key) -> Option<Slot> {
        self.slots.get(key).map(|stored| {
            let slot = stored.slot();
            Slot { promised: slot.promised.max(self.floor), ..slot }
        })
    }

    /// The key's promise, without decoding its state.
    pub fn promised(&self, key: &Key) -> Ballot {
        self.slots.get(key).map_or(self.absent.floor, |s| s.promised).max(self.floor)
    }

    /// The epoch below which this acceptor refuses every ballot.
    pub fn floor(&self) -> Epoch {
        self.floor.epoch
    }

    /// The node caught up in `epoch`: what it holds below that epoch it
    /// adopted (see `adopted_below`).
    pub fn mark_adopted_below(&mut self, epoch: Epoch) {
        self.adopted_below = self.adopted_below.max(Ballot::floor_of(epoch));
    }

    /// Whether `slot`'s accepted state was adopted while the node caught up,
    /// not voted for. "Nothing accepted" is the truth even then: a state
    /// chosen with the node's forgotten vote was adopted from a peer.
    fn holds_adopted(&self, slot: &Slot) -> bool {
        slot.accepted < self.adopted_below && !slot.accepted.is_zero()
    }

    /// The epoch the node last caught up in (0: never).
    pub fn adopted_epoch(&self) -> Epoch {
        self.adopted_below.epoch
    }

    /// Fences the acceptor at `epoch`: from now on it refuses every ballot
    /// of an older epoch, for every key. Returns the record that makes it
    /// durable, or `None` if it was fenced there already.
    pub fn raise_floor(&mut self, epoch: Epoch) -> Option<Record> {
        if epoch <= self.floor.epoch {
            return None;
        }
        self.floor = Ballot::floor_of(epoch);
        Some(Record::Fence { epoch })
    }

    /// Takes in what a peer reported for `key` while this node catches up
    /// (`core::rejoin`): the higher promise, and the higher accepted ballot
    /// with its state. Returns the record to make it durable, if anything
    /// changed.
    pub fn adopt(&mut self, reported: &ScanSlot) -> Option<Record> {
        let current = self.get(&reported.key);
        let promised = current.promised.max(reported.promised).max(reported.accepted);
        let newer = reported.accepted > current.accepted;
        if promised == current.promised && !newer {
            return None;
        }
        let new = if newer {
            Slot { promised, accepted: reported.accepted, state: reported.state.clone() }
        } else {
            Slot { promised, ..current }
        };
        Some(self.store(&reported.key, new))
    }

    /// The slots of the keys after `after`, in key order, for a peer that
    /// catches up: as many as `limits::SCAN_PAGE_BYTES_MAX` allows, and at
    /// least one unless none is left; true when no key follows them.
    pub fn scan(&self, after: Option<&Key>) -> (Vec<ScanSlot>, bool) {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = self.slots.range::<Key, _>((start, Bound::Unbounded)).peekable();
        let (mut page, mut bytes) = (Vec::new(), 0);
        while let Some((key, stored)) = range.peek() {
            // The ballots, lengths and flag of a slot take at most this much
            // besides its key and state.
            let size = key.0.len() + stored.state.len() + limits::SCAN_SLOT_OVERHEAD_BYTES_MAX;
            let full =
                bytes + size > limits::SCAN_PAGE_BYTES_MAX || page.len() == limits::SCAN_PAGE_SLOTS_MAX;
            if full && !page.is_empty() {
                break;
            }
            let slot = stored.slot();
            page.push(ScanSlot {
                key: (*key).clone(),
                promised: slot.promised.max(self.floor),
                accepted: slot.accepted,
                adopted: self.holds_adopted(&slot),
                state: slot.state,
            });
            bytes += size;
            range.next();
        }
        let done = range.peek().is_none();
        (page, done)
    }

    fn get(&self, key: &Key) -> Slot {
        let absent = Slot { promised: self.floor.max(self.absent.floor), ..Slot::default() };
        self.slot(key).unwrap_or(absent)
    }

    pub fn keys(&self) -> usize {
        self.slots.len()
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Every slot as a record, for compaction.
    pub fn live_records(&self) -> impl Iterator<Item = Record> + '_ {
        self.slots.iter().map(|(k, s)| s.slot().record(k))
    }

    /// Phase 1: promise `ballot` unless a higher one was promised. A repeated
    /// prepare at the promised ballot (a retransmission) is answered again.
    pub fn handle_prepare(&mut self, key: &Key, ballot: Ballot) -> Vote {
        let slot = self.get(key);
        if ballot < slot.promised {
            return reject(key, ballot, slot.promised);
        }
        let reply =
            Message::Promise { key: key.clone(), ballot, accepted: slot.accepted, state: slot.state.clone() };
        // A key without a slot may count as promised `ballot` by the floor
        // of dropped promises alone, which is durable only through records
        // a restart may drop again differently: the promise gets a record.
        if ballot == slot.promised && self.slots.contains_key(key) {
            return Vote { reply, record: None };
        }
        let new = Slot { promised: ballot, ..slot };
        Vote { reply, record: Some(self.store(key, new)) }
    }

    /// Phase 2: accept `state` at `ballot` unless a higher ballot was
    /// promised. Accepting also promises `ballot`, and `next` when it is a
    /// later ballot of the same proposer: that is the prepare of the
    /// proposer's next round, piggybacked, and the promise reports exactly
    /// the state accepted here, as a promise for `next` right after this
    /// accept would. (Any other `next` is ignored: it could only come from a
    /// broken or forged message.)
    ///
    /// A copy of an accept this acceptor took already is answered again,
    /// even if it promised a higher ballot since: it did accept the state at
    /// `ballot`, and that is all an accepted vote says.
    pub fn handle_accept(&mut self, key: &Key, ballot: Ballot, state: &RegisterState, next: Ballot) -> Vote {
        let slot = self.get(key);
        if ballot.round == 0 {
            // No proposer uses round 0 (it would tie with "nothing
            // accepted"); only a broken or forged message carries it.
            return reject(key, ballot, slot.promised);
        }
        // A state adopted while catching up is no vote of this acceptor.
        let repeat = slot.accepted == ballot && slot.state == *state && ballot >= self.adopted_below;
        if ballot < slot.promised && !self.accepts_below_promise() {
            if repeat {
                return accepted(key, ballot, slot.promised);
            }
            return reject(key, ballot, slot.promised);
        }
        let next = if next > ballot && next.node == ballot.node { next } else { ballot };
        let promised = next.max(slot.promised);
        if repeat && slot.promised == promised {
            return accepted(key, ballot, promised);
        }
        let new = Slot { promised, accepted: ballot, state: state.clone() };
        let record = self.store(key, new);
        Vote { record: Some(record), ..accepted(key, ballot, promised) }
    }

    /// A one-round read asks what was accepted last. Nothing changes, so
    /// nothing is recorded; the state reported is durable already, since a
    /// driver handles no input while the records of the last turn are being
    /// synced, and the answer leaves with this turn's records.
    ///
    /// No answer when what the acceptor holds for the key was adopted while
    /// it caught up: it must not count toward a majority naming a ballot it
    /// did not vote for (the read then runs both phases).
    pub fn handle_query(&self, key: &Key, query: QueryId) -> Option<Message> {
        let slot = self.get(key);
        if self.holds_adopted(&slot) {
            return None;
        }
        Some(Message::QueryReply { key: key.clone(), query, accepted: slot.accepted, state: slot.state })
    }

    fn store(&mut self, key: &Key, new: Slot) -> Record {
        let mut record = new.record(key);
        if self.forgets_recent_on_disk()
            && let Record::Slot { state, .. } = &mut record
        {
            state.recent.clear();
        }
        if let Some(old) = self.slots.get(key) {
            // The two rules above guarantee these; a violation is a bug here,
            // never something a peer can cause.
            debug_assert!(new.promised >= old.promised, "promise went down");
            debug_assert!(new.accepted <= new.promised || self.accepts_below_promise());
        }
        self.restore(key.clone(), new);
        record
    }

    #[cfg(feature = "planted-bugs")]
    fn accepts_below_promise(&self) -> bool {
        self.bugs.accept_below_promise
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn accepts_below_promise(&self) -> bool {
        false
    }

    #[cfg(feature = "planted-bugs")]
    fn forgets_dropped_promises(&self) -> bool {
        self.bugs.forget_dropped_promises
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn forgets_dropped_promises(&self) -> bool {
        false
    }

    #[cfg(feature = "planted-bugs")]
    fn forgets_recent_on_disk(&self) -> bool {
        self.bugs.log_forgets_recent
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn forgets_recent_on_disk(&self) -> bool {
        false
    }
}

fn accepted(key: &Key, ballot: Ballot, promised: Ballot) -> Vote {
    Vote { reply: Message::Accepted { key: key.clone(), ballot, promised }, record: None }
}

fn reject(key: &Key, ballot: Ballot, promised: Ballot) -> Vote {
    Vote { reply: Message::Reject { key: key.clone(), ballot, promised }, record: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{NodeId, Value, Version};

    fn b(round: u64, node: u16) -> Ballot {
        Ballot::new(round, NodeId(node))
    }

    fn k() -> Key {
        Key::from("k")
    }

    fn st(v: &str, version: u64) -> RegisterState {
        RegisterState { value: Some(Value::from(v)), version: Version(version), ..Default::default() }
    }

    fn slot_record(promised: Ballot, accepted: Ballot, state: RegisterState) -> Option<Record> {
        Some(Record::Slot { key: k(), promised, accepted, state })
    }

    #[test]
    fn first_prepare_is_promised_and_persisted() {
        let mut a = Acceptor::new();
        let vote = a.handle_prepare(&k(), b(1, 1));
        assert_eq!(
            vote,
            Vote {
                reply: Message::Promise {
                    key: k(),
                    ballot: b(1, 1),
                    accepted: Ballot::ZERO,
                    state: RegisterState::default()
                },
                record: slot_record(b(1, 1), Ballot::ZERO, RegisterState::default()),
            }
        );
    }

    #[test]
    fn lower_prepare_is_rejected_with_the_promise() {
        let mut a = Acceptor::new();
        a.handle_prepare(&k(), b(5, 2));
        let vote = a.handle_prepare(&k(), b(4, 3));
        assert_eq!(
            vote,
            Vote { reply: Message::Reject { key: k(), ballot: b(4, 3), promised: b(5, 2) }, record: None }
        );
        // Same round, lower node id: still lower.
        let vote = a.handle_prepare(&k(), b(5, 1));
        assert!(matches!(vote.reply, Message::Reject { .. }));
    }

    #[test]
    fn repeated_prepare_is_answered_without_a_new_record() {
        let mut a = Acceptor::new();
        a.handle_prepare(&k(), b(2, 1));
        let vote = a.handle_prepare(&k(), b(2, 1));
        assert!(matches!(vote.reply, Message::Promise { .. }));
        assert_eq!(vote.record, None);
    }

    #[test]
    fn promise_reports_the_accepted_state() {
        let mut a = Acceptor::new();
        a.handle_accept(&k(), b(3, 1), &st("x", 1), Ballot::ZERO);
        let vote = a.handle_prepare(&k(), b(4, 2));
        assert_eq!(
            vote.reply,
            Message::Promise { key: k(), ballot: b(4, 2), accepted: b(3, 1), state: st("x", 1) }
        );
        assert_eq!(vote.record, slot_record(b(4, 2), b(3, 1), st("x", 1)));
    }

    #[test]
    fn accept_at_or_above_promise_is_accepted() {
        let mut a = Acceptor::new();
        a.handle_prepare(&k(), b(3, 1));
        let vote = a.handle_accept(&k(), b(3, 1), &st("x", 1), Ballot::ZERO);
        assert_eq!(vote.reply, Message::Accepted { key: k(), ballot: b(3, 1), promised: b(3, 1) });
        assert_eq!(vote.record, slot_record(b(3, 1), b(3, 1), st("x", 1)));
        // A higher accept without a prepare raises the promise too.
        let vote = a.handle_accept(&k(), b(6, 2), &st("y", 2), Ballot::ZERO);
        assert_eq!(vote.record, slot_record(b(6, 2), b(6, 2), st("y", 2)));
    }

    #[test]
    fn accept_below_promise_is_rejected_and_state_kept() {
        let mut a = Acceptor::new();
        a.handle_accept(&k(), b(2, 1), &st("x", 1), Ballot::ZERO);
        a.handle_prepare(&k(), b(5, 3));
        let vote = a.handle_accept(&k(), b(4, 2), &st("y", 2), Ballot::ZERO);
        assert_eq!(
            vote,
            Vote { reply: Message::Reject { key: k(), ballot: b(4, 2), promised: b(5, 3) }, record: None }
        );
        let slot = a.slot(&k());
        assert_eq!(slot, Some(Slot { promised: b(5, 3), accepted: b(2, 1), state: st("x", 1) }));
    }

    #[test]
    fn repeated_accept_needs_no_new_record() {
        let mut a = Acceptor::new();
        a.handle_accept(&k(), b(2, 1), &st("x", 1), Ballot::ZERO);
        let vote = a.handle_accept(&k(), b(2, 1), &st("x", 1), Ballot::ZERO);
        assert_eq!(
            vote,
            Vote { reply: Message::Accepted { key: k(), ballot: b(2, 1), promised: b(2, 1) }, record: None }
        );
    }

    #[test]
    fn accept_with_next_promises_the_next_ballot_too() {
        let mut a = Acceptor::new();
        let vote = a.handle_accept(&k(), b(2, 1), &st("x", 1), b(3, 1));
        assert_eq!(vote.reply, Message::Accepted { key: k(), ballot: b(2, 1), promised: b(3, 1) });
        assert_eq!(vote.record, slot_record(b(3, 1), b(2, 1), st("x", 1)));
        // The next accept at the promised ballot needs no prepare.
        let vote = a.handle_accept(&k(), b(3, 1), &st("y", 2), b(4, 1));
        assert_eq!(vote.record, slot_record(b(4, 1), b(3, 1), st("y", 2)));
        // Another proposer's prepare between them wins: the accept is refused.
        a.handle_prepare(&k(), b(5, 2));
        let vote = a.handle_accept(&k(), b(4, 1), &st("z", 3), b(6, 1));
        assert_eq!(vote.reply, Message::Reject { key: k(), ballot: b(4, 1), promised: b(5, 2) });
    }

    #[test]
    fn a_next_ballot_of_another_node_or_not_above_is_ignored() {
        let mut a = Acceptor::new();
        let vote = a.handle_accept(&k(), b(2, 1), &st("x", 1), b(9, 2));
        assert_eq!(vote.record, slot_record(b(2, 1), b(2, 1), st("x", 1)));
        let vote = a.handle_accept(&k(), b(3, 1), &st("y", 2), b(1, 1));
        assert_eq!(vote.record, slot_record(b(3, 1), b(3, 1), st("y", 2)));
    }

    #[test]
    fn a_copy_of_a_taken_accept_is_answered_after_a_higher_promise() {
        let mut a = Acceptor::new();
        a.handle_accept(&k(), b(2, 1), &st("x", 1), b(3, 1));
        a.handle_prepare(&k(), b(7, 2));
        let vote = a.handle_accept(&k(), b(2, 1), &st("x", 1), b(3, 1));
        assert_eq!(
            vote,
            Vote { reply: Message::Accepted { key: k(), ballot: b(2, 1), promised: b(7, 2) }, record: None }
        );
        // A different state at that ballot was never accepted here.
        let vote = a.handle_accept(&k(), b(2, 1), &st("other", 1), b(3, 1));
        assert!(matches!(vote.reply, Message::Reject { .. }));
    }

    #[test]
    fn a_query_reports_the_accepted_state_and_changes_nothing() {
        let mut a = Acceptor::new();
        let none = a.handle_query(&k(), QueryId(1)).expect("an answer");
        let empty = RegisterState::default();
        assert_eq!(
            none,
            Message::QueryReply { key: k(), query: QueryId(1), accepted: Ballot::ZERO, state: empty }
        );
        a.handle_accept(&k(), b(2, 1), &st("x", 1), b(3, 1));
        let before = a.slot(&k());
        let reply = a.handle_query(&k(), QueryId(2)).expect("an answer");
        assert_eq!(
            reply,
            Message::QueryReply { key: k(), query: QueryId(2), accepted: b(2, 1), state: st("x", 1) }
        );
        assert_eq!(a.slot(&k()), before);
    }

    #[test]
    fn keys_are_independent() {
        let mut a = Acceptor::new();
        a.handle_prepare(&k(), b(9, 1));
        let vote = a.handle_prepare(&Key::from("other"), b(1, 2));
        assert!(matches!(vote.reply, Message::Promise { .. }));
        assert_eq!(a.keys(), 2);
    }

    fn key(name: &str) -> Key {
        Key::from(name)
    }

    #[test]
    fn the_empty_state_is_what_encode_state_makes_of_the_default() {
        assert_eq!(&*encode_state(&RegisterState::default()), EMPTY_STATE);
    }

    #[test]
    fn promises_of_keys_nothing_was_accepted_for_are_bounded_and_widened_when_dropped() {
        let mut a = Acceptor::with_absent_promises_max(2);
        for (name, round) in [("k1", 5), ("k2", 7), ("k3", 6)] {
            let vote = a.handle_prepare(&key(name), b(round, 1));
            assert!(vote.record.is_some(), "{name} promised and recorded");
        }
        assert_eq!((a.keys(), a.absent_promises(), a.absent_floor()), (2, 2, b(5, 1)), "k1 dropped");
        assert_eq!(a.slot(&key("k1")), None);
        assert_eq!(a.promised(&key("k1")), b(5, 1), "its promise is kept, widened");
        let vote = a.handle_accept(&key("k1"), b(4, 2), &st("x", 1), Ballot::ZERO);
        assert_eq!(vote.reply, Message::Reject { key: key("k1"), ballot: b(4, 2), promised: b(5, 1) });
        let vote = a.handle_prepare(&key("never"), b(4, 3));
        assert!(matches!(vote.reply, Message::Reject { .. }), "every key without a slot counts as promised");
        // A prepare at the floor itself is promised again with a record of
        // its own: the floor alone is not durable.
        let vote = a.handle_prepare(&key("k9"), b(5, 1));
        assert!(matches!(vote.reply, Message::Promise { .. }));
        assert_eq!(
            vote.record,
            Some(Record::Slot {
                key: key("k9"),
                promised: b(5, 1),
                accepted: Ballot::ZERO,
                state: RegisterState::default()
            })
        );
        assert_eq!(a.absent_promises(), 2, "k9, the lowest, dropped at once");
    }

    #[test]
    fn a_slot_with_something_accepted_is_never_dropped() {
        let mut a = Acceptor::with_absent_promises_max(1);
        a.handle_prepare(&key("written"), b(1, 1));
        a.handle_accept(&key("written"), b(1, 1), &st("x", 1), Ballot::ZERO);
        a.handle_prepare(&key("read1"), b(2, 1));
        a.handle_prepare(&key("read2"), b(3, 1));
        assert_eq!((a.keys(), a.absent_promises(), a.absent_floor()), (2, 1, b(2, 1)));
        assert_eq!(a.slot(&key("written")).map(|s| s.state), Some(st("x", 1)));
        let live: u64 = a.slots.iter().map(|(k, s)| s.bytes(k)).sum();
        assert_eq!(a.live_bytes(), live, "what was dropped no longer counts");
    }

    #[test]
    fn an_acceptor_restored_over_its_bound_drops_the_lowest_promises() {
        let promise = |name: &str, round| {
            (
                key(name),
                Slot { promised: b(round, 2), accepted: Ballot::ZERO, state: RegisterState::default() },
            )
        };
        let records = vec![
            promise("a", 3),
            promise("b", 9),
            promise("c", 4),
            (key("d"), Slot { promised: b(1, 1), accepted: b(1, 1), state: st("x", 1) }),
        ];
        let a = Acceptor::restored(records, 4, 2);
        assert_eq!((a.keys(), a.absent_promises(), a.absent_floor()), (3, 2, b(3, 2)));
        assert_eq!(a.promised(&key("a")), b(3, 2));
        assert_eq!(
            a.live_bytes(),
            ["b", "c", "d"].iter().map(|k| a.slots[&key(k)].bytes(&key(k))).sum::<u64>()
        );
    }

    #[test]
    fn live_bytes_follow_overwrites() {
        let mut a = Acceptor::new();
        a.handle_accept(&k(), b(1, 1), &st("aaaa", 1), Ballot::ZERO);
        let one = a.live_bytes();
        a.handle_accept(&k(), b(2, 1), &st("bbbb", 2), Ballot::ZERO);
        assert_eq!(a.live_bytes(), one);
    }
}
