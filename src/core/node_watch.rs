//! The node's side of watches (see `watches` and `docs/watch.md`): taking
//! watch requests, reading their keys through the node's own proposer, and
//! answering them from the states it finds chosen.
//!
//! Answers go with the node's other replies, after the turn's sync: a state
//! a read or a write found chosen is durable at a majority, this node's
//! own acceptor included once its records of the turn are synced.

use super::{Envelope, Node};
use crate::core::proposer::{Dedupe, ReqHandle, Request};
use crate::core::watches::{DueRead, WatchReplies};
use crate::limits;
use crate::types::{Fingerprint, Key, RegisterState, Time, Version};
use crate::wire::{Message, Outcome, Refusal, WatchAnswer, WatchId};
use std::collections::VecDeque;

impl<A: Copy + Ord> Node<A> {
    /// A client at `from` watches `key` for versions after `after`.
    pub(super) fn watch_request(
        &mut self,
        now: Time,
        from: A,
        id: WatchId,
        key: Key,
        after: Option<Version>,
        every_version: bool,
    ) {
        let refusal = if key.0.len() > limits::KEY_BYTES_MAX {
            Some(Refusal::KeyTooLarge)
        } else if self.rejoin.is_some() {
            Some(Refusal::CatchingUp)
        } else if self.membership.joining || self.membership.removed(self.id) {
            Some(Refusal::NotMember)
        } else {
            self.watches.add(now, from, id, key.clone(), after, every_version).err()
        };
        if let Some(refusal) = refusal {
            self.send_watch_answers(vec![(from, id, key, WatchAnswer::Refused(refusal))]);
        }
    }

    /// Starts the reads the watches wait for, one per key, while the
    /// node has room for them (`watch_reads_in_flight_max`, a budget apart
    /// from the client requests', so watches never get writes refused) and
    /// the turn has room for their answers. A key whose queue is full is
    /// put off. At most that many reads per call: with one member a read
    /// may end, and make its key due again, within the call. Called at the
    /// end of every input, never while a proposal is being finished (a
    /// read may start one); it costs nothing when no key is due.
    pub(super) fn start_watch_reads(&mut self, now: Time) {
        let max = self.limits.watch_reads_in_flight_max;
        for _ in 0..max {
            if self.watch_reads.len() >= max
                || self.watch_answers_in_turn >= limits::WATCH_ANSWERS_PER_TURN_MAX
            {
                return;
            }
            let Some(due) = self.watches.pop_due() else { return };
            let queue = self.queued.get(&due.key).map_or(0, VecDeque::len);
            if queue >= self.limits.requests_queued_per_key_max {
                self.watches.put_off(now, &due.key);
                continue;
            }
            self.start_watch_read(now, due);
        }
    }

    fn start_watch_read(&mut self, now: Time, due: DueRead) {
        self.running.next_handle += 1;
        let handle = ReqHandle(self.running.next_handle);
        self.watch_reads.insert(handle, due.key.clone());
        self.watches.reading(&due.key, handle, due.write_back);
        let request = Request {
            handle,
            change: due.change,
            deadline: now.plus_millis(limits::WATCH_READ_MS),
            // A read or a watch is no write: nothing looks it up.
            fingerprint: Fingerprint::default(),
            dedupe: Dedupe::new(Version(0), false, now, now),
            resent: false,
            write_back: due.write_back,
        };
        self.run_request(now, due.key, request);
    }

    /// Now, if keys wait for a read and the node has room to start one
    /// (the room frees with the end of a read, which is an input: a key
    /// that waits for room is no timer). Keys wait with room only when
    /// the last call to `start_watch_reads` stopped early.
    pub(super) fn watch_reads_due_now(&self) -> Option<Time> {
        let room = self.watch_reads.len() < self.limits.watch_reads_in_flight_max;
        (room && self.watches.has_due()).then_some(self.clock)
    }

    /// A proposal on `key` found `state` chosen in an attempt that began
    /// when `mark` watches had been taken: the watches taken before that it
    /// is newer than are answered, as many as the turn has room for.
    pub(super) fn watch_chosen(&mut self, key: &Key, state: &RegisterState, mark: u64) {
        let budget = limits::WATCH_ANSWERS_PER_TURN_MAX.saturating_sub(self.watch_answers_in_turn);
        let replies = self.watches.deliver(key, state, mark, budget);
        self.send_watch_answers(replies);
    }

    /// The node's acceptor accepted a state of `key` at `version` from
    /// another proposer: watches it would answer read the key again.
    pub(super) fn watch_accepted(&mut self, key: &Key, version: Version) {
        self.watches.touch(key, version);
    }

    /// The read `handle` of a watched key ended with `outcome`. Returns
    /// false when `handle` is no watch read.
    pub(super) fn watch_read_done(&mut self, handle: ReqHandle, outcome: &Outcome) -> bool {
        let Some(key) = self.watch_reads.remove(&handle) else { return false };
        let found = match outcome {
            Outcome::Done { version, .. } => Some(*version),
            _ => None,
        };
        let local = self.acceptor.slot(&key).map_or(Version(0), |s| s.state.version);
        let replies = self.watches.read_done(self.clock, &key, found, local);
        self.send_watch_answers(replies);
        true
    }

    /// Time passed: watches whose time is up are answered "unchanged", and
    /// reads due again start.
    pub(super) fn watch_timeout(&mut self, now: Time) {
        let replies = self.watches.expire(now);
        self.send_watch_answers(replies);
        self.start_watch_reads(now);
    }

    /// Answers every watch with `refusal`.
    pub(super) fn refuse_watches(&mut self, refusal: Refusal) {
        let replies = self.watches.refuse_all(refusal);
        self.send_watch_answers(replies);
    }

    fn send_watch_answers(&mut self, replies: WatchReplies<A>) {
        self.watch_answers_in_turn += replies.len();
        for (to, id, key, answer) in replies {
            let reply = Message::WatchReply { id, key, answer };
            self.ready.messages.push(Envelope::Client(to, reply));
        }
    }
}
