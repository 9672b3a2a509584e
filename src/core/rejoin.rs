//! Catching up after lost or damaged data: how a node that may have
//! forgotten promises and accepts comes back without breaking them.
//!
//! # The danger
//! An acceptor that forgets a promise of ballot `b` may later accept a
//! lower ballot `b'`. If `b'` is chosen with its vote, the proposer of `b`,
//! which counted the forgotten promise in its prepare quorum, can still
//! complete and choose a value that ignores `b'`'s: an acknowledged write is
//! lost. Reading the peers' state alone does not help: `b` may be known
//! only to the proposer and to the node that forgot it, and the proposer
//! may be cut off while the node catches up.
//!
//! # The procedure
//! 1. **A fresh epoch.** The node writes the epoch register (the key
//!    `EPOCH_KEY`) through its peers, as a client would: its own ballots
//!    cannot be trusted, since it forgot which it used. The register's
//!    version after that write is the node's new epoch `E`. Versions grow
//!    with every write of a register, so `E` is above every epoch handed out
//!    before, hence above the epoch of every ballot the node ever promised
//!    or accepted: epochs are only used after they are handed out.
//! 2. **Fence and scan.** The node sends `Scan { epoch: E }` to every peer.
//!    A voting peer first raises its floor to `E` (durably: it refuses every
//!    ballot of an older epoch, for every key, from then on), then answers
//!    with its slots, page by page, each page only after the fence is synced.
//! 3. **Adopt.** For every key the node keeps the highest promise and the
//!    highest accepted ballot (with its state) among the pages. Once a
//!    majority of the whole cluster, not counting itself, has sent every
//!    page, it fences itself at `E`, records that it caught up, and votes
//!    again; its own ballots then carry epoch `E`.
//!
//! # Why it is safe
//! - Every ballot the node promised or accepted before is below `E`, and it
//!   now refuses everything below `E`: it never accepts below a promise it
//!   forgot.
//! - A value chosen before the fence with the node's forgotten vote was
//!   accepted by enough others that any majority of the peers includes one
//!   (a quorum holding the node has `q - 1` others, and `q - 1` plus a
//!   majority of the cluster exceeds the `n - 1` peers). That peer accepted
//!   it before its fence, so before its scan: the node adopts a ballot at
//!   least as high, whose state extends the chosen one.
//! - After the fence, no ballot below `E` can gather a quorum: the fenced
//!   peers refuse it, and those left plus the node number fewer than a
//!   quorum. So nothing the scan missed can be chosen below `E`.
//! - Adopted states are reported in promises, where they only add a state
//!   truly proposed at its ballot to those a proposer picks the highest of:
//!   that can never hide a higher chosen one. But the node never confirms
//!   one as its own vote: in its earlier life it may have promised a higher
//!   ballot instead of accepting it, and counting it toward a quorum for
//!   that ballot (a repeated accept answered again, a one-round read, an
//!   export) could make a state look chosen that a later quorum ignores.
//!   So below its new epoch it answers no repeated accept and no query, and
//!   marks those slots `adopted` in scans (`Acceptor::adopted_below`, kept
//!   in the log by `Record::CaughtUp`).
//! - The marks are durable in the right order: `CatchingUp` is written
//!   before the node can forget anything more (a damaged last unit is
//!   replaced by it in one rename; a node that starts over gets a log that
//!   holds only it), survives compaction while the node catches up, and
//!   `CaughtUp` is synced with what was adopted before any vote leaves.
//!
//! A cluster needs three nodes or more for this: the epoch is written by a
//! majority of the others.
//!
//! The model in `model/` checks this procedure exhaustively for three nodes
//! (and five, with fewer attempts), and finds two values chosen when the
//! node votes at once, and when the peers answer without being fenced.
//!
//! While catching up the node neither votes nor proposes: it drops prepares,
//! accepts and queries, refuses clients (`Refusal::CatchingUp`, remembered
//! like any refusal), and answers no scan of another node catching up.

use super::client::{ClientMachine, Ending, Routing};
use super::quorum;
use super::rng::Rng;
use crate::change::Change;
use crate::limits;
use crate::types::{Epoch, Key, NodeId, SessionId, Time, Value};
use crate::wire::{Message, ScanSlot};
use std::collections::BTreeMap;

/// The epoch register: its version is the latest epoch handed out.
pub const EPOCH_KEY: &[u8] = b"\0paxosd/epoch";

/// A node's progress in catching up.
#[derive(Debug)]
pub struct Rejoin {
    me: NodeId,
    /// Cluster size, own vote included.
    members: usize,
    phase: Phase,
    outbox: Vec<(NodeId, Message)>,
}

#[derive(Debug)]
enum Phase {
    /// Writing the epoch register through the peers; after an attempt that
    /// got no epoch, waiting until `retry_at`.
    Epoch { client: Box<ClientMachine>, retry_at: Option<Time> },
    /// Fenced peers send their slots.
    Scan { epoch: Epoch, peers: BTreeMap<NodeId, PeerScan> },
}

/// How far one peer's scan has come.
#[derive(Debug)]
struct PeerScan {
    /// The last key adopted from this peer; the next page starts after it.
    after: Option<Key>,
    done: bool,
    resend_at: Time,
}

/// What a scan page did.
#[derive(Debug, PartialEq, Eq)]
pub enum PageFate {
    /// Not the page this node waits for (a copy, or of another epoch).
    Ignored,
    /// Its slots are to be adopted.
    Adopt,
}

impl Rejoin {
    /// Starts catching up: asks the peers for a fresh epoch.
    pub fn new(now: Time, me: NodeId, members: &[NodeId], rng: &mut Rng) -> Rejoin {
        let peers: Vec<NodeId> = members.iter().copied().filter(|m| *m != me).collect();
        let session = SessionId((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()));
        let client = Box::new(ClientMachine::new(peers, None, session, Routing::Home));
        let mut rejoin = Rejoin {
            me,
            members: members.len(),
            phase: Phase::Epoch { client, retry_at: Some(now) },
            outbox: Vec::new(),
        };
        rejoin.handle_timeout(now);
        rejoin
    }

    /// Messages to send to peers.
    pub fn take_outbox(&mut self) -> Vec<(NodeId, Message)> {
        std::mem::take(&mut self.outbox)
    }

    pub fn poll_timeout(&self) -> Option<Time> {
        match &self.phase {
            Phase::Epoch { client, retry_at, .. } => retry_at.or_else(|| client.poll_timeout()),
            Phase::Scan { peers, .. } => peers.values().filter(|p| !p.done).map(|p| p.resend_at).min(),
        }
    }

    pub fn handle_timeout(&mut self, now: Time) {
        match &mut self.phase {
            Phase::Epoch { client, retry_at } => {
                if retry_at.is_some_and(|at| at <= now) {
                    *retry_at = None;
                    // Any write will do: the epoch is the version it makes.
                    let change = Change::Put(Value(format!("node {} caught up here", self.me).into_bytes()));
                    // Only `Busy` can fail, and the previous attempt ended.
                    let _ =
                        client.start(now, Key(EPOCH_KEY.to_vec()), change, limits::REJOIN_EPOCH_TIMEOUT_MS);
                } else {
                    client.handle_timeout(now);
                }
                self.after_client(now);
            }
            Phase::Scan { epoch, peers } => {
                for (peer, scan) in peers.iter_mut().filter(|(_, s)| !s.done && s.resend_at <= now) {
                    scan.resend_at = now.plus_millis(limits::REJOIN_RESEND_MS);
                    self.outbox.push((*peer, Message::Scan { epoch: *epoch, after: scan.after.clone() }));
                }
            }
        }
    }

    /// An answer from a peer to this node's epoch write (a `Reply` or a
    /// `StatusReply`).
    pub fn handle_client_message(&mut self, now: Time, from: NodeId, msg: Message) {
        if let Phase::Epoch { client, .. } = &mut self.phase {
            client.handle_message(now, from, msg);
            self.after_client(now);
        }
    }

    /// Moves the epoch write's messages out, and reads how it ended.
    fn after_client(&mut self, now: Time) {
        let Phase::Epoch { client, retry_at, .. } = &mut self.phase else { return };
        while let Some(out) = client.poll_transmit() {
            self.outbox.push(out);
        }
        match client.poll_ending() {
            Some(Ending::Done(answer)) if answer.precondition_held => {
                let epoch = Epoch(answer.version.0);
                log::info!("node {}: catching up in epoch {epoch}", self.me);
                self.start_scan(now, epoch);
            }
            Some(ending) => {
                log::debug!("node {}: no epoch yet ({ending:?}); trying again", self.me);
                *retry_at = Some(now.plus_millis(limits::REJOIN_EPOCH_RETRY_MS));
            }
            None => {}
        }
    }

    fn start_scan(&mut self, now: Time, epoch: Epoch) {
        let peers = match &self.phase {
            Phase::Epoch { client, .. } => client.members().to_vec(),
            Phase::Scan { .. } => return,
        };
        let scans = peers.into_iter().map(|p| (p, PeerScan { after: None, done: false, resend_at: now }));
        self.phase = Phase::Scan { epoch, peers: scans.collect() };
        self.handle_timeout(now);
    }

    /// A scan page from `from`: whether its slots are to be adopted. The
    /// next page is asked for at once.
    pub fn handle_page(
        &mut self,
        now: Time,
        from: NodeId,
        epoch: Epoch,
        after: &Option<Key>,
        slots: &[ScanSlot],
        done: bool,
    ) -> PageFate {
        let Phase::Scan { epoch: mine, peers } = &mut self.phase else { return PageFate::Ignored };
        let Some(scan) = peers.get_mut(&from) else { return PageFate::Ignored };
        if epoch != *mine || scan.done || scan.after != *after || (slots.is_empty() && !done) {
            return PageFate::Ignored;
        }
        if let Some(last) = slots.last() {
            scan.after = Some(last.key.clone());
        }
        scan.done = done;
        if !done {
            scan.resend_at = now.plus_millis(limits::REJOIN_RESEND_MS);
            self.outbox.push((from, Message::Scan { epoch, after: scan.after.clone() }));
        }
        PageFate::Adopt
    }

    /// The epoch to vote in, once a majority of the cluster (peers only)
    /// has sent every page.
    pub fn caught_up(&self) -> Option<Epoch> {
        let Phase::Scan { epoch, peers } = &self.phase else { return None };
        let done = peers.values().filter(|p| p.done).count();
        (done >= quorum::majority(self.members)).then_some(*epoch)
    }
}
