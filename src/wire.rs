//! Messages and datagram framing.
//!
//! Every datagram, peer or client, has this layout:
//!
//! | offset | size | field                                                |
//! |--------|------|------------------------------------------------------|
//! | 0      | 4    | magic `PXD1`                                         |
//! | 4      | 1    | protocol version (`PROTOCOL_VERSION`)                |
//! | 5      | 1    | flags (bit 0: a MAC follows the body; others 0)      |
//! | 6      | 8    | cluster id, little endian                            |
//! | 14     | 2    | sender node id, little endian (0 = a client)         |
//! | 16     | 4    | configuration digest, little endian (0 from clients) |
//! | 20     | 8    | configuration epoch, little endian (0 from clients)  |
//! | 28     | 8    | sender's wall clock at sending, Unix ms, little endian |
//! | 36     | 2    | receiver node id, little endian (0 = a client)       |
//! | 38     | ..   | body: postcard `Vec<Message>` (varint count, messages)|
//! | end-32 | 32   | MAC, when flag bit 0 is set (`auth`)                 |
//!
//! The MAC is keyed BLAKE3 over everything before it, header included, under
//! the cluster secret (`auth::Keyring`). A node or client with a secret
//! drops every datagram whose MAC is missing or wrong before reading its
//! body; one without a secret drops every datagram that carries a MAC, which
//! it could not check. Either way nothing is answered, so a forger gets no
//! reply at all, let alone a larger one.
//!
//! The configuration epoch and digest name the sender's active
//! configuration (`core::membership`): a node votes only for, and counts
//! only votes from, a peer that names its own, so two nodes that disagree
//! on the members never count quorums that need not intersect.
//!
//! The sending time and the receiver let a node refuse a recorded request
//! replayed later (`is_fresh`) or to another node (a datagram names the one
//! it is for): under a cluster secret, a captured datagram is the one thing
//! a forger can still send, and the MAC covers both fields.
//!
//! The body must use every remaining byte: a datagram with trailing bytes is
//! dropped. Decoding never panics and never sizes an allocation from a length
//! it has not checked against the datagram (postcard borrows from the input
//! and fails on short input).

use crate::auth::Keyring;
use crate::change::Change;
use crate::limits;
use crate::members::{Configuration, FreezeAnswer, MemberChange, Members};
use crate::types::{
    Ballot, ClusterId, Epoch, Incarnation, Key, NodeId, PastState, RegisterState, RequestId, SessionId, Time,
    Value, Version,
};
use serde::{Deserialize, Serialize};
use std::fmt;

pub const MAGIC: [u8; 4] = *b"PXD1";
pub const PROTOCOL_VERSION: u8 = 6;
pub const HEADER_BYTES: usize = 38;
/// Flag bit 0: a MAC follows the body.
const FLAG_MAC: u8 = 1;
/// A body's message count takes at most this many bytes (a varint of at
/// most `MESSAGES_PER_DATAGRAM_MAX`).
const COUNT_BYTES_MAX: usize = 2;
const _: () = assert!(limits::MESSAGES_PER_DATAGRAM_MAX < 1 << 14);
const _: () = assert!(HEADER_BYTES + COUNT_BYTES_MAX + limits::MAC_BYTES <= limits::HEADER_BYTES_MAX);

/// Everything nodes and clients say to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a: promise not to accept below `ballot`; tell me what you accepted.
    Prepare {
        key: Key,
        ballot: Ballot,
    },
    /// Phase 1b: promised `ballot`; `accepted` is `Ballot::ZERO` if nothing was.
    Promise {
        key: Key,
        ballot: Ballot,
        accepted: Ballot,
        state: RegisterState,
    },
    /// Phase 2a: accept `state` at `ballot`, and (unless `next` is
    /// `Ballot::ZERO`) promise `next`, the proposer's next ballot on the key:
    /// the prepare of its next round, piggybacked, so that its next change
    /// needs one round trip (see `core::proposer`).
    Accept {
        key: Key,
        ballot: Ballot,
        state: RegisterState,
        next: Ballot,
    },
    /// Phase 2b: accepted `ballot`; `promised` is the acceptor's promise
    /// after it (the proposer's `next` when that promise was given).
    Accepted {
        key: Key,
        ballot: Ballot,
        promised: Ballot,
    },
    /// Refusal of a prepare or accept at `ballot`: the acceptor has promised
    /// `promised`, which the proposer must exceed.
    Reject {
        key: Key,
        ballot: Ballot,
        promised: Ballot,
    },
    /// A read in one round: what did you accept last? Changes nothing at
    /// the acceptor (see `core::proposer`, "Reads in one round").
    Query {
        key: Key,
        query: QueryId,
    },
    /// The answer to a query: the acceptor's accepted ballot and state.
    QueryReply {
        key: Key,
        query: QueryId,
        accepted: Ballot,
        state: RegisterState,
    },
    /// A node catching up after losing data (`core::rejoin`) fences the
    /// receiver at `epoch` (it refuses every ballot of an older epoch from
    /// then on) and asks for the acceptor state of the keys after `after`.
    Scan {
        epoch: Epoch,
        after: Option<Key>,
    },
    /// The answer to a scan: the slots of the keys that follow `after`, in
    /// key order, read after the fence; `done` when no key follows them.
    ScanPage {
        epoch: Epoch,
        after: Option<Key>,
        slots: Vec<ScanSlot>,
        done: bool,
    },
    /// A client asks for `change` to be applied to `key`, giving up after
    /// `timeout_ms`. Every copy of one request (retransmissions, copies sent
    /// to other nodes) carries the same `id`; `core::sessions` and
    /// `core::proposer` make sure it is applied at most once.
    Request(Request),
    /// The answer to a request, naming the node's incarnation and its clock
    /// when it answered, which the client needs for its next requests there.
    Reply {
        id: RequestId,
        incarnation: Incarnation,
        node_time: Time,
        outcome: Outcome,
    },
    /// A client asks who the node is; `probe` tells its answers apart.
    StatusRequest {
        session: SessionId,
        probe: u64,
    },
    StatusReply {
        session: SessionId,
        probe: u64,
        node_time: Time,
        status: NodeStatus,
    },
    /// A node saw a newer configuration epoch in a peer's header and asks
    /// it for that configuration (see `core::membership`).
    ConfigQuery,
    /// A node's active configuration: sent to a peer that asked, or whose
    /// header named an older one.
    ConfigInfo {
        config: Configuration,
    },
    /// The driver of a membership change asks the node to take part in it:
    /// from then on it votes for nobody until it installs a configuration.
    Freeze {
        change: MemberChange,
    },
    /// The answer to a freeze, sent once the node's state is synced.
    Frozen {
        epoch: Epoch,
        answer: FreezeAnswer,
    },
    /// Slots that a node frozen in the change of `epoch` adopts: the merged
    /// scans of the old configuration, in pages as a scan sends them.
    Seed {
        epoch: Epoch,
        after: Option<Key>,
        slots: Vec<ScanSlot>,
        done: bool,
    },
    /// The answer to a seed page, after the sync; `adopted` is false when
    /// the node may not adopt (it is not frozen in that change).
    Seeded {
        epoch: Epoch,
        after: Option<Key>,
        done: bool,
        adopted: bool,
    },
    /// The driver of a change installs its configuration.
    Install {
        config: Configuration,
    },
    /// The answer to an install, after the sync.
    Installed {
        epoch: Epoch,
    },
    /// A client (`paxosctl member`) asks the node to change the membership
    /// to `target`; copies of one request share `id`.
    MembersRequest {
        id: u64,
        target: Members,
    },
    MembersReply {
        id: u64,
        outcome: MembersOutcome,
    },
    /// A client watches `key` (see `docs/watch.md`): answer with the
    /// versions after `after` once there are some, or "unchanged" after
    /// `WATCH_PARK_MS`. `after: None` asks for the current state only.
    /// `every_version` asks the node to keep the key's history (a watch);
    /// without it (a wait for a version) only the newest state is needed.
    WatchRequest {
        id: WatchId,
        key: Key,
        after: Option<Version>,
        every_version: bool,
    },
    WatchReply {
        id: WatchId,
        key: Key,
        answer: WatchAnswer,
    },
}

/// Tells a watching client's requests apart: each poll has its own, and
/// copies of one poll share it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WatchId(pub u64);

/// A node's answer to a watch request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchAnswer {
    /// `versions`: the key's states after the request's `after`, oldest
    /// first, each a version the key really held, ending with the current
    /// one; empty when nothing is newer ("unchanged"). `current` is the
    /// key's version as the node last read it. `gap` is true when the
    /// key's history no longer reached back to the version after `after`:
    /// versions between `after` and the first one here were missed.
    States { versions: Vec<PastState>, current: Version, gap: bool },
    /// The node did not take the watch; nothing was read.
    Refused(Refusal),
    /// The node could not read the key (no quorum in `WATCH_READ_MS`).
    Unavailable,
}

/// How a membership change asked for by a client stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembersOutcome {
    /// The node drives it; the text says where it stands.
    InProgress(String),
    /// The target configuration is installed.
    Done(Configuration),
    /// It could not be done now; the text says why. A later request
    /// resumes whatever was done.
    Failed(String),
}

/// One key's acceptor state, as a scan reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanSlot {
    pub key: Key,
    pub promised: Ballot,
    pub accepted: Ballot,
    /// True when the acceptor holds this state by adoption, while it caught
    /// up after losing data, not by its own vote: it is no vote for
    /// `accepted` (`core::acceptor`, `adopted_below`).
    pub adopted: bool,
    pub state: RegisterState,
}

/// Tells a proposal's queries apart (a counter per node).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueryId(pub u64);

/// One copy of a client request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub key: Key,
    pub change: Change,
    pub timeout_ms: u32,
    /// The node incarnation the client knows (`Incarnation::UNKNOWN` before
    /// it has heard from the node).
    pub incarnation: Incarnation,
    /// The client's lower bound on the node's clock when it sent this copy
    /// (from the node's last answer and the client's own clock since).
    pub sent_at: Time,
    /// True when the client has sent this request to another node, or to
    /// another incarnation of this one, where it may have run: then this
    /// node must not assume it holds the only copy.
    pub resent: bool,
    /// The last version of `key` the client saw, in an answer it got before
    /// it first sent this request: a version every evaluation of this
    /// request is at or above (0 when it never saw the key).
    pub floor: Version,
}

/// How a request ended at the node that answers, as the client is told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The change ran at a quorum. `version` is the key's version after it:
    /// the one it created, or for a read or a write whose precondition failed
    /// (`precondition_held` false, nothing changed), the one it found.
    /// `value` is the value that goes with it when the answer tells it
    /// (`Some(None)`: absent): always for a read and for a failed
    /// precondition evaluated by this answer's attempt; never for a write
    /// that took effect (the client knows what it wrote,
    /// `Change::value_written`), nor for a failed precondition found in the
    /// key's memory of an earlier copy (the value then is no longer known).
    Done { version: Version, precondition_held: bool, value: Option<Option<Value>> },
    /// The node gave up: no quorum answered before the deadline. When
    /// `maybe_applied` is false this node never sent an accept carrying the
    /// change and never will; when true, it may have taken effect.
    Unavailable { maybe_applied: bool },
    /// The change may or may not have taken effect, and no node can tell:
    /// the request may have run elsewhere, and the key has since taken more
    /// writes than it remembers (`limits::RECENT_WRITES_MAX`) after the
    /// version the client last saw.
    Indeterminate,
    /// The node did not run this copy and never will; nothing changed.
    Refused(Refusal),
    /// Not an ending: the node is still working on the request (this
    /// answers a copy that reached it again). `exclusive` is true while the
    /// node runs it as the only copy: the copy just received renewed that
    /// for `EXCLUSIVE_WINDOW_MS`. When false (for good: the node does not
    /// run it as the only copy again), it judges the request as one that may
    /// have run elsewhere, and the client may send it to another node at
    /// once. `cut_off` is true when the node has heard from no majority for
    /// a while: the client had better ask another node now.
    InProgress { exclusive: bool, cut_off: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    KeyTooLarge,
    ValueTooLarge,
    Overloaded,
    BadTimeout,
    /// The node is stopping.
    ShuttingDown,
    /// The node lost data and is catching up from its peers; it serves no
    /// request until it has (see `core::rejoin`).
    CatchingUp,
    /// The node does not know the client's session, and the request names
    /// another incarnation than the node's current one (the client has not
    /// heard from it yet, or it restarted or forgot sessions since): the
    /// reply names the current one, and the client may send again.
    StaleIncarnation,
    /// The node is not a member of the cluster's configuration (it was
    /// removed, or has not joined yet): other nodes serve the request.
    NotMember,
    /// The datagram that carried this copy was sent outside the replay
    /// window (`is_fresh`): it never runs, here or anywhere (a datagram
    /// names its node). Earlier datagrams of the same copy may have run.
    Expired,
}

const _: () = assert!(limits::KEY_BYTES_MAX == 1024 && limits::VALUE_BYTES_MAX == 16384);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Refusal::KeyTooLarge => "key is larger than the limit of 1024 bytes",
            Refusal::ValueTooLarge => "value is larger than the limit of 16384 bytes",
            Refusal::Overloaded => "node is overloaded (too many requests in flight)",
            Refusal::BadTimeout => "timeout is zero or above the limit",
            Refusal::ShuttingDown => "node is shutting down",
            Refusal::CatchingUp => "node is catching up after losing data",
            Refusal::StaleIncarnation => "request named another incarnation of the node",
            Refusal::NotMember => "node is not a member of the cluster's configuration",
            Refusal::Expired => {
                "request was sent outside the node's replay window: check that the clocks of nodes and \
                 clients agree (NTP)"
            }
        };
        f.write_str(text)
    }
}

/// What a node says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub incarnation: Incarnation,
    /// Keys the acceptor holds a state for (not those it holds only a
    /// promise for, see `core::acceptor`).
    pub keys: u64,
    pub requests_in_flight: u64,
    /// Client sessions the node remembers.
    pub sessions: u64,
    pub uptime_ms: u64,
    pub log_bytes: u64,
    /// Write attempts that sent accepts at once (a promise of their ballot
    /// was left by the key's last proposal here) ...
    pub writes_one_round: u64,
    /// ... and those that prepared first.
    pub writes_two_rounds: u64,
    /// Read-only batches tried in one round (see `core::proposer`).
    pub reads_one_round: u64,
    /// The epoch of the node's ballots (see `types::Epoch`).
    pub epoch: u64,
    /// True while the node catches up after losing data: it votes on
    /// nothing and serves no client until it has (see `core::rejoin`).
    pub catching_up: bool,
    /// The configuration the node votes in (`core::membership`) ...
    pub config: Configuration,
    /// ... and the change it takes part in, if any.
    pub frozen: Option<MemberChange>,
    /// What the membership change this node drives is doing, if any.
    pub driving: Option<String>,
    /// Hostile or broken input the node turned away, counted since it
    /// started (see `Guarded`).
    pub guarded: Guarded,
}

/// What a node turned away, for status: a rise in any of these means
/// someone sends what no honest peer or client of this cluster would.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guarded {
    /// True when the node checks a MAC on every datagram (a cluster secret
    /// is configured).
    pub secret: bool,
    /// Datagrams dropped for a missing or wrong MAC.
    pub unauthenticated: u64,
    /// Datagrams dropped as malformed: not paxosd's, another cluster's,
    /// undecodable, over a limit, or from a peer at the wrong address.
    pub malformed: u64,
    /// Ballots refused or not adopted because they lie beyond what the
    /// cluster can have used (`core::node`, "Ballots from the network").
    pub ballots_out_of_range: u64,
    /// Client requests refused as older than the replay window
    /// (`limits::REQUEST_AGE_MS_MAX`).
    pub requests_expired: u64,
}

impl Message {
    /// The checks a decoded message must pass before any layer acts on it.
    pub fn is_within_limits(&self) -> bool {
        let key_ok = |k: &Key| k.0.len() <= limits::KEY_BYTES_MAX;
        let members_ok = |m: &Members| {
            m.len() <= limits::NODES_MAX && m.iter().all(|m| m.address.len() <= limits::ADDRESS_BYTES_MAX)
        };
        let state_ok = |s: &RegisterState| {
            s.value.as_ref().is_none_or(|v| v.0.len() <= limits::VALUE_BYTES_MAX)
                && s.recent.len() <= limits::RECENT_WRITES_MAX
                && s.writers.len() <= limits::NODES_MAX
                && s.history.as_ref().is_none_or(|h| h.is_well_formed(s.version))
        };
        match self {
            Message::Scan { after, .. } => after.as_ref().is_none_or(key_ok),
            Message::ScanPage { after, slots, .. } => {
                after.as_ref().is_none_or(key_ok)
                    && slots.len() <= limits::SCAN_PAGE_SLOTS_MAX
                    && slots.iter().all(|s| key_ok(&s.key) && state_ok(&s.state))
            }
            Message::Prepare { key, .. }
            | Message::Accepted { key, .. }
            | Message::Reject { key, .. }
            | Message::Query { key, .. } => key_ok(key),
            Message::Promise { key, state, .. }
            | Message::Accept { key, state, .. }
            | Message::QueryReply { key, state, .. } => key_ok(key) && state_ok(state),
            // Oversized requests are answered with a refusal, not dropped.
            Message::Request(_) | Message::StatusRequest { .. } => true,
            Message::Reply { outcome, .. } => match outcome {
                Outcome::Done { value, .. } => value
                    .as_ref()
                    .and_then(Option::as_ref)
                    .is_none_or(|v| v.0.len() <= limits::VALUE_BYTES_MAX),
                _ => true,
            },
            Message::StatusReply { status, .. } => {
                members_ok(&status.config.members) && status.frozen.as_ref().is_none_or(|c| members_ok(&c.to))
            }
            Message::ConfigQuery | Message::Frozen { .. } | Message::Installed { .. } => true,
            Message::ConfigInfo { config } | Message::Install { config } => members_ok(&config.members),
            Message::Freeze { change } => members_ok(&change.to),
            Message::Seed { after, slots, .. } => {
                after.as_ref().is_none_or(key_ok)
                    && slots.len() <= limits::SCAN_PAGE_SLOTS_MAX
                    && slots.iter().all(|s| key_ok(&s.key) && state_ok(&s.state))
            }
            Message::Seeded { after, .. } => after.as_ref().is_none_or(key_ok),
            Message::MembersRequest { target, .. } => members_ok(target),
            Message::WatchRequest { .. } => true,
            Message::WatchReply { key, answer, .. } => key_ok(key) && watch_answer_ok(answer),
            Message::MembersReply { outcome, .. } => match outcome {
                MembersOutcome::Done(config) => members_ok(&config.members),
                MembersOutcome::InProgress(text) | MembersOutcome::Failed(text) => {
                    text.len() <= limits::ADDRESS_BYTES_MAX * 4
                }
            },
        }
    }
}

/// A watch reply's states within the bounds a node keeps to (a history
/// and the current state), oldest first, versions rising up to `current`.
fn watch_answer_ok(answer: &WatchAnswer) -> bool {
    let WatchAnswer::States { versions, current, .. } = answer else { return true };
    let bytes: usize = versions.iter().map(PastState::value_bytes).sum();
    let rising = versions.iter().zip(versions.iter().skip(1)).all(|(a, b)| a.version < b.version);
    versions.len() <= limits::WATCH_REPLY_STATES_MAX
        && versions.iter().all(|s| s.value_bytes() <= limits::VALUE_BYTES_MAX)
        && bytes <= limits::WATCH_HISTORY_BYTES_MAX + limits::VALUE_BYTES_MAX
        && rising
        && versions.last().is_none_or(|s| s.version <= *current)
}

/// The fixed part of every datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub cluster: ClusterId,
    pub sender: NodeId,
    pub config: ConfigDigest,
    pub epoch: Epoch,
    /// The sender's wall clock when it sent the datagram, in milliseconds
    /// since the Unix epoch.
    pub sent_unix_ms: u64,
    /// The node the datagram is for (`NodeId::CLIENT` for a client): a node
    /// drops one meant for another.
    pub receiver: NodeId,
}

pub use crate::members::ConfigDigest;

/// Whether a datagram sent at `sent_unix_ms` (its sender's clock) and
/// received at `now_unix_ms` (the receiver's) may still carry a request to
/// run: sent at most `REPLAY_WINDOW_MS` before now, and not more than that
/// ahead of it. Clocks of nodes and clients are assumed to be within
/// `CLOCK_SKEW_MS_MAX` of each other (NTP keeps them far closer), which the
/// window exceeds by the largest delay a datagram may see on the way; so
/// no honest datagram is refused, and a recorded one runs nowhere once the
/// window has passed. Within it, sessions and the registers' memory of
/// their recent writes keep a replayed copy from running twice
/// (`core::sessions`, `core::proposer`).
pub fn is_fresh(sent_unix_ms: u64, now_unix_ms: u64) -> bool {
    let window = limits::REPLAY_WINDOW_MS;
    sent_unix_ms.saturating_add(window) >= now_unix_ms && sent_unix_ms <= now_unix_ms.saturating_add(window)
}

/// Why a datagram was dropped. Dropping is the protocol's answer to any bad
/// datagram; the reason is only logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    TooShort(usize),
    TooLong(usize),
    BadMagic,
    UnsupportedVersion(u8),
    UnsupportedFlags(u8),
    WrongCluster(ClusterId),
    /// This side has a secret and the datagram carries no MAC.
    MissingMac,
    /// The MAC is not that of any key this side accepts.
    BadMac,
    /// The datagram carries a MAC and this side has no secret to check it.
    UnexpectedMac,
    BadBody(String),
    TrailingBytes(usize),
    TooManyMessages(usize),
    OverLimit,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooShort(n) => write!(f, "datagram of {n} bytes is shorter than a header"),
            DecodeError::TooLong(n) => write!(f, "datagram of {n} bytes is over the limit"),
            DecodeError::BadMagic => write!(f, "bad magic (not a paxosd datagram)"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            DecodeError::UnsupportedFlags(x) => write!(f, "unsupported header flags {x:#04x}"),
            DecodeError::WrongCluster(c) => write!(f, "datagram from another cluster ({c})"),
            DecodeError::MissingMac => write!(f, "no MAC, and this side has a cluster secret"),
            DecodeError::BadMac => write!(f, "MAC made with no key this side accepts"),
            DecodeError::UnexpectedMac => write!(f, "a MAC, and this side has no cluster secret"),
            DecodeError::BadBody(e) => write!(f, "undecodable body: {e}"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} trailing bytes after the body"),
            DecodeError::TooManyMessages(n) => write!(f, "{n} messages in one datagram"),
            DecodeError::OverLimit => write!(f, "a message is over the size limits"),
        }
    }
}

impl DecodeError {
    /// Dropped for want of a valid MAC (counted apart from malformed ones:
    /// a rise means someone without the key is sending, or a key mismatch).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, DecodeError::MissingMac | DecodeError::BadMac | DecodeError::UnexpectedMac)
    }
}

fn encode_header(header: Header, keys: &Keyring, out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(if keys.is_enabled() { FLAG_MAC } else { 0 });
    out.extend_from_slice(&header.cluster.0.to_le_bytes());
    out.extend_from_slice(&header.sender.0.to_le_bytes());
    out.extend_from_slice(&header.config.0.to_le_bytes());
    out.extend_from_slice(&header.epoch.0.to_le_bytes());
    out.extend_from_slice(&header.sent_unix_ms.to_le_bytes());
    out.extend_from_slice(&header.receiver.0.to_le_bytes());
}

/// Encodes one message for packing with `DatagramPacker`.
pub fn encode_message(msg: &Message) -> Vec<u8> {
    // Serializing our own types into a Vec cannot fail; an empty body would
    // be dropped by the receiver, never misread.
    postcard::to_stdvec(msg).unwrap_or_default()
}

/// Encodes a whole datagram, with a MAC under `keys`' sending key if any.
pub fn encode_datagram(header: Header, messages: &[Message], keys: &Keyring) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_header(header, keys, &mut out);
    let body = postcard::to_stdvec(messages).unwrap_or_default();
    out.extend_from_slice(&body);
    seal(&mut out, keys);
    out
}

/// Appends the MAC of everything in `datagram` (whose flags already say a
/// MAC follows) under the sending key; nothing without a secret.
fn seal(datagram: &mut Vec<u8>, keys: &Keyring) {
    if let Some(key) = keys.sending() {
        let tag = key.mac(datagram);
        datagram.extend_from_slice(&tag);
    }
}

/// Packs already-encoded messages for one destination into datagrams of at
/// most `DATAGRAM_BYTES_MAX` bytes, each with a MAC under `keys`, if any.
pub fn pack_datagrams(header: Header, encoded: &[Vec<u8>], keys: &Keyring) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    let mut start = 0;
    while start < encoded.len() {
        let mut end = start;
        let mut size = HEADER_BYTES + COUNT_BYTES_MAX + limits::MAC_BYTES;
        while end < encoded.len()
            && end - start < limits::MESSAGES_PER_DATAGRAM_MAX
            && (end == start || size + encoded[end].len() <= limits::DATAGRAM_BYTES_MAX)
        {
            size += encoded[end].len();
            end += 1;
        }
        let mut out = Vec::with_capacity(size);
        encode_header(header, keys, &mut out);
        push_varint(&mut out, (end - start) as u64);
        for m in &encoded[start..end] {
            out.extend_from_slice(m);
        }
        seal(&mut out, keys);
        datagrams.push(out);
        start = end;
    }
    datagrams
}

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Decodes and validates a datagram addressed to cluster `cluster`, after
/// checking its MAC under `keys` (see the module comment): the body of a
/// datagram that fails the check is never read.
pub fn decode_datagram(
    keys: &Keyring,
    cluster: ClusterId,
    bytes: &[u8],
) -> Result<(Header, Vec<Message>), DecodeError> {
    if bytes.len() < HEADER_BYTES {
        return Err(DecodeError::TooShort(bytes.len()));
    }
    if bytes.len() > limits::DATAGRAM_BYTES_MAX {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    let header = decode_header(cluster, bytes)?;
    let body = authenticated_body(keys, bytes)?;
    let (messages, rest): (Vec<Message>, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::BadBody(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    if messages.len() > limits::MESSAGES_PER_DATAGRAM_MAX {
        return Err(DecodeError::TooManyMessages(messages.len()));
    }
    if !messages.iter().all(Message::is_within_limits) {
        return Err(DecodeError::OverLimit);
    }
    Ok((header, messages))
}

/// The body of a datagram whose header checked out, once its MAC has been
/// found good under `keys` (or, without a secret, found absent).
fn authenticated_body<'a>(keys: &Keyring, bytes: &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let has_mac = bytes[5] & FLAG_MAC != 0;
    match (keys.is_enabled(), has_mac) {
        (false, false) => return Ok(&bytes[HEADER_BYTES..]),
        (false, true) => return Err(DecodeError::UnexpectedMac),
        (true, false) => return Err(DecodeError::MissingMac),
        (true, true) => {}
    }
    let split = bytes.len().checked_sub(limits::MAC_BYTES).filter(|&s| s >= HEADER_BYTES);
    let split = split.ok_or(DecodeError::TooShort(bytes.len()))?;
    let (signed, tag) = bytes.split_at(split);
    let tag: &[u8; limits::MAC_BYTES] = tag.try_into().map_err(|_| DecodeError::BadMac)?;
    keys.verify(signed, tag).ok_or(DecodeError::BadMac)?;
    Ok(&signed[HEADER_BYTES..])
}

fn decode_header(cluster: ClusterId, bytes: &[u8]) -> Result<Header, DecodeError> {
    let field = |range: std::ops::Range<usize>| bytes.get(range).ok_or(DecodeError::TooShort(bytes.len()));
    if field(0..4)? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = bytes[4];
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if bytes[5] & !FLAG_MAC != 0 {
        return Err(DecodeError::UnsupportedFlags(bytes[5]));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(field(6..14)?);
    let found = ClusterId(u64::from_le_bytes(id));
    if found != cluster {
        return Err(DecodeError::WrongCluster(found));
    }
    let mut sender = [0u8; 2];
    sender.copy_from_slice(field(14..16)?);
    let mut config = [0u8; 4];
    config.copy_from_slice(field(16..20)?);
    let config = ConfigDigest(u32::from_le_bytes(config));
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(field(20..28)?);
    let epoch = Epoch(u64::from_le_bytes(epoch));
    let mut sent = [0u8; 8];
    sent.copy_from_slice(field(28..36)?);
    let sent_unix_ms = u64::from_le_bytes(sent);
    let mut receiver = [0u8; 2];
    receiver.copy_from_slice(field(36..38)?);
    let receiver = NodeId(u16::from_le_bytes(receiver));
    let sender = NodeId(u16::from_le_bytes(sender));
    Ok(Header { cluster: found, sender, config, epoch, sent_unix_ms, receiver })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: ClusterId = ClusterId(42);
    const NONE: Keyring = Keyring::none();

    fn header() -> Header {
        Header {
            cluster: CLUSTER,
            sender: NodeId(2),
            config: ConfigDigest(0x0a0b_0c0d),
            epoch: Epoch(0x0102_0304),
            sent_unix_ms: 1_790_000_000_000,
            receiver: NodeId(3),
        }
    }

    fn sample() -> Vec<Message> {
        let key = Key::from("k");
        let ballot = Ballot::new(7, NodeId(2));
        let state =
            RegisterState { value: Some(Value::from("v")), version: Version(3), ..Default::default() };
        vec![
            Message::Prepare { key: key.clone(), ballot },
            Message::Accept { key: key.clone(), ballot, state, next: Ballot::new(8, NodeId(2)) },
            Message::Query { key: key.clone(), query: QueryId(5) },
            Message::Reject { key, ballot, promised: Ballot::new(9, NodeId(1)) },
        ]
    }

    #[test]
    fn round_trip() {
        let bytes = encode_datagram(header(), &sample(), &NONE);
        assert_eq!(decode_datagram(&NONE, CLUSTER, &bytes), Ok((header(), sample())));
    }

    #[test]
    fn packed_equals_whole() {
        let encoded: Vec<Vec<u8>> = sample().iter().map(encode_message).collect();
        let packed = pack_datagrams(header(), &encoded, &NONE);
        assert_eq!(packed, vec![encode_datagram(header(), &sample(), &NONE)]);
    }

    #[test]
    fn packing_splits_at_the_size_limit() {
        let big = Value(vec![7u8; limits::VALUE_BYTES_MAX]);
        let state = RegisterState { value: Some(big), version: Version(1), ..Default::default() };
        let msg = Message::Accept {
            key: Key::from("k"),
            ballot: Ballot::new(1, NodeId(1)),
            state,
            next: Ballot::ZERO,
        };
        let encoded = vec![encode_message(&msg); 10];
        for keys in [NONE, ring(3, None)] {
            let packed = pack_datagrams(header(), &encoded, &keys);
            assert!(packed.len() > 1);
            let mut total = 0;
            for d in &packed {
                assert!(d.len() <= limits::DATAGRAM_BYTES_MAX, "{} bytes", d.len());
                total += decode_datagram(&keys, CLUSTER, d).map(|(_, m)| m.len()).unwrap_or(0);
            }
            assert_eq!(total, 10);
        }
    }

    #[test]
    fn rejects_wrong_cluster_magic_version_and_trailing() {
        let bytes = encode_datagram(header(), &sample(), &NONE);
        assert_eq!(decode_datagram(&NONE, ClusterId(1), &bytes), Err(DecodeError::WrongCluster(CLUSTER)));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(decode_datagram(&NONE, CLUSTER, &bad), Err(DecodeError::BadMagic));
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert_eq!(decode_datagram(&NONE, CLUSTER, &bad), Err(DecodeError::UnsupportedVersion(9)));
        let mut bad = bytes.clone();
        bad.push(0);
        assert_eq!(decode_datagram(&NONE, CLUSTER, &bad), Err(DecodeError::TrailingBytes(1)));
    }

    fn ring(current: u8, previous: Option<u8>) -> Keyring {
        let key = |n: u8| crate::auth::Secret::from_bytes([n; 32]);
        Keyring::new(key(current), previous.map(key))
    }

    #[test]
    fn a_sealed_datagram_opens_under_its_key_and_every_changed_byte_is_refused() {
        let keys = ring(1, None);
        let bytes = encode_datagram(header(), &sample(), &keys);
        assert_eq!(bytes.len(), encode_datagram(header(), &sample(), &NONE).len() + limits::MAC_BYTES);
        assert_eq!(decode_datagram(&keys, CLUSTER, &bytes), Ok((header(), sample())));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            let err = decode_datagram(&keys, CLUSTER, &bad).expect_err("a changed byte");
            // Bytes the header check reads first may fail it instead.
            assert!(i < 28 || err == DecodeError::BadMac, "byte {i}: {err}");
        }
    }

    #[test]
    fn no_mutation_of_a_sealed_datagram_opens() {
        let keys = ring(1, None);
        let good = encode_datagram(header(), &sample(), &keys);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5_000 {
            let mut bytes = good.clone();
            match next() % 4 {
                0 => bytes.truncate((next() as usize) % bytes.len()),
                1 => bytes.extend((0..1 + next() % 40).map(|_| next() as u8)),
                2 => {
                    let at = (next() as usize) % bytes.len();
                    bytes.insert(at, next() as u8);
                }
                _ => {}
            }
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len().max(1);
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 + (next() as u8 % 255);
                }
            }
            if bytes != good {
                assert!(decode_datagram(&keys, CLUSTER, &bytes).is_err(), "a mutation opened: {bytes:?}");
            }
        }
    }

    #[test]
    fn a_missing_wrong_or_unexpected_mac_is_refused_as_unauthenticated() {
        let keys = ring(1, None);
        let plain = encode_datagram(header(), &sample(), &NONE);
        assert_eq!(decode_datagram(&keys, CLUSTER, &plain), Err(DecodeError::MissingMac));
        let other = encode_datagram(header(), &sample(), &ring(2, None));
        assert_eq!(decode_datagram(&keys, CLUSTER, &other), Err(DecodeError::BadMac));
        let sealed = encode_datagram(header(), &sample(), &keys);
        assert_eq!(decode_datagram(&NONE, CLUSTER, &sealed), Err(DecodeError::UnexpectedMac));
        // A plain datagram with the flag set and a made-up tag.
        let mut forged = plain.clone();
        forged[5] = FLAG_MAC;
        forged.extend_from_slice(&[0u8; limits::MAC_BYTES]);
        assert_eq!(decode_datagram(&keys, CLUSTER, &forged), Err(DecodeError::BadMac));
        for err in [DecodeError::MissingMac, DecodeError::BadMac, DecodeError::UnexpectedMac] {
            assert!(err.is_unauthenticated());
        }
        assert!(!DecodeError::BadMagic.is_unauthenticated());
    }

    #[test]
    fn during_a_rotation_both_keys_open_and_the_first_seals() {
        let (old, both, new) = (ring(1, None), ring(2, Some(1)), ring(2, None));
        let from_old = encode_datagram(header(), &sample(), &old);
        let from_both = encode_datagram(header(), &sample(), &both);
        assert!(decode_datagram(&both, CLUSTER, &from_old).is_ok());
        assert!(decode_datagram(&new, CLUSTER, &from_both).is_ok(), "sealed with the first key");
        assert_eq!(decode_datagram(&old, CLUSTER, &from_both), Err(DecodeError::BadMac));
    }

    #[test]
    fn the_largest_sealed_watch_reply_fits_one_datagram() {
        let watch = largest_watch_reply(full_history_states());
        let bytes = encode_datagram(header(), std::slice::from_ref(&watch), &ring(3, None));
        assert!(bytes.len() <= limits::DATAGRAM_BYTES_MAX, "{} bytes", bytes.len());
    }

    #[test]
    fn freshness_is_a_window_on_both_sides_of_the_receivers_clock() {
        let now = 1_790_000_000_000;
        let w = limits::REPLAY_WINDOW_MS;
        assert!(is_fresh(now, now) && is_fresh(now - w, now) && is_fresh(now + w, now));
        assert!(!is_fresh(now - w - 1, now), "a recorded datagram replayed later");
        assert!(!is_fresh(now + w + 1, now), "stamped too far ahead");
        assert!(!is_fresh(0, now) && !is_fresh(u64::MAX, now) && is_fresh(u64::MAX, u64::MAX));
    }

    #[test]
    fn every_truncation_is_rejected_without_panic() {
        let bytes = encode_datagram(header(), &sample(), &NONE);
        for len in 0..bytes.len() {
            assert!(decode_datagram(&NONE, CLUSTER, &bytes[..len]).is_err(), "prefix {len} accepted");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let good = encode_datagram(header(), &sample(), &NONE);
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut bytes = if i % 2 == 0 { good.clone() } else { vec![0u8; (x % 200) as usize] };
            for b in bytes.iter_mut().skip(if i % 2 == 0 { HEADER_BYTES } else { 0 }) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 2 == 1 || x.is_multiple_of(8) {
                    *b = x as u8;
                }
            }
            let _ = decode_datagram(&NONE, CLUSTER, &bytes);
        }
    }

    /// The largest watch answer: the largest key, a full history of the
    /// largest share of values, and the largest current value.
    fn largest_watch_reply(versions: Vec<PastState>) -> Message {
        let current = versions.last().map_or(Version(0), |s| s.version);
        let answer = WatchAnswer::States { versions, current, gap: true };
        Message::WatchReply { id: WatchId(u64::MAX), key: Key(vec![7; limits::KEY_BYTES_MAX]), answer }
    }

    fn full_history_states() -> Vec<PastState> {
        let share = limits::WATCH_HISTORY_BYTES_MAX / limits::WATCH_HISTORY_VERSIONS_MAX;
        let top = u64::MAX - limits::WATCH_REPLY_STATES_MAX as u64;
        let mut versions: Vec<PastState> = (0..limits::WATCH_HISTORY_VERSIONS_MAX as u64)
            .map(|i| PastState { version: Version(top + i), value: Some(Value(vec![1; share])) })
            .collect();
        let last = Version(top + limits::WATCH_HISTORY_VERSIONS_MAX as u64);
        versions.push(PastState { version: last, value: Some(Value(vec![2; limits::VALUE_BYTES_MAX])) });
        versions
    }

    #[test]
    fn the_largest_watch_reply_fits_one_datagram() {
        let msg = largest_watch_reply(full_history_states());
        let bytes = encode_datagram(header(), std::slice::from_ref(&msg), &NONE);
        assert!(bytes.len() <= limits::DATAGRAM_BYTES_MAX, "{} bytes", bytes.len());
        assert_eq!(decode_datagram(&NONE, CLUSTER, &bytes), Ok((header(), vec![msg])));
    }

    #[test]
    fn a_watch_reply_out_of_order_or_over_the_bounds_is_dropped() {
        let mut versions = full_history_states();
        versions.swap(0, 1);
        let bytes = encode_datagram(header(), &[largest_watch_reply(versions)], &NONE);
        assert_eq!(decode_datagram(&NONE, CLUSTER, &bytes), Err(DecodeError::OverLimit), "not rising");
        let mut versions = full_history_states();
        versions.insert(0, PastState { version: Version(0), value: None });
        let bytes = encode_datagram(header(), &[largest_watch_reply(versions)], &NONE);
        assert_eq!(
            decode_datagram(&NONE, CLUSTER, &bytes),
            Err(DecodeError::OverLimit),
            "one state too many"
        );
    }

    #[test]
    fn an_accept_whose_history_is_malformed_is_dropped() {
        let past = vec![PastState { version: Version(3), value: None }];
        let history = Some(crate::types::History { past });
        let state = RegisterState { version: Version(3), history, ..Default::default() };
        let msg = Message::Accept {
            key: Key::from("k"),
            ballot: Ballot::new(1, NodeId(1)),
            state,
            next: Ballot::ZERO,
        };
        let bytes = encode_datagram(header(), &[msg], &NONE);
        assert_eq!(decode_datagram(&NONE, CLUSTER, &bytes), Err(DecodeError::OverLimit));
    }

    #[test]
    fn oversized_value_in_accept_is_rejected() {
        let big = Value(vec![1u8; limits::VALUE_BYTES_MAX + 1]);
        let state = RegisterState { value: Some(big), version: Version(1), ..Default::default() };
        let msg = Message::Accept {
            key: Key::from("k"),
            ballot: Ballot::new(1, NodeId(1)),
            state,
            next: Ballot::ZERO,
        };
        let bytes = encode_datagram(header(), &[msg], &NONE);
        assert_eq!(decode_datagram(&NONE, CLUSTER, &bytes), Err(DecodeError::OverLimit));
    }
}
