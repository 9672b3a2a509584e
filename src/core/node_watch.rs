//! The node's side of watches (see `watches` and `docs/watch.md`): taking
//! watch requests, reading their keys through the node's own proposer, and
//! answering them from the states it finds chosen.
//!
//! Answers go with the node's other replies, after the turn's sync: a state
//! a read or a write found chosen is durable at a majority, this node's
//! own acceptor included once its records of the turn are synced.

use super::{Envelope, Node};
use crate::core::proposer::{Dedupe, ReqHandle, Request};
use crate::core::watches::WatchReplies;
use crate::limits;
use crate::types::{Fingerprint, Key, RegisterState, Time, Version};
use crate::wire::{Message, Outcome, Refusal, WatchAnswer, WatchId};

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

    /// Starts the reads the watches wait for, one per key, unless the key
    /// is overloaded already: its watches then wait for their time to be
    /// up, and the client asks again. Called at the end of every input,
    /// never while a proposal is being finished (a read may start one).
    pub(super) fn start_watch_reads(&mut self, now: Time) {
        if self.watches.is_empty() {
            return;
        }
        for (key, change) in self.watches.due_reads(now) {
            if self.is_overloaded(&key) {
                continue;
            }
            self.running.next_handle += 1;
            let handle = ReqHandle(self.running.next_handle);
            self.watch_reads.insert(handle, key.clone());
            self.watches.reading(&key, handle);
            let request = Request {
                handle,
                change,
                deadline: now.plus_millis(limits::WATCH_READ_MS),
                // A read or a watch is no write: nothing looks it up.
                fingerprint: Fingerprint::default(),
                dedupe: Dedupe::new(Version(0), false, now, now),
                resent: false,
            };
            self.run_request(now, key, request);
        }
    }

    /// A proposal on `key` found `state` chosen: the watches it is newer
    /// than are answered.
    pub(super) fn watch_chosen(&mut self, key: &Key, state: &RegisterState) {
        let replies = self.watches.deliver(key, state);
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
        for (to, id, key, answer) in replies {
            let reply = Message::WatchReply { id, key, answer };
            self.ready.messages.push(Envelope::Client(to, reply));
        }
    }
}
