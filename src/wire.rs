//! Messages and datagram framing.
//!
//! Every datagram, peer or client, has this layout:
//!
//! | offset | size | field                                                |
//! |--------|------|------------------------------------------------------|
//! | 0      | 4    | magic `PXD1`                                         |
//! | 4      | 1    | protocol version (`PROTOCOL_VERSION`)                |
//! | 5      | 1    | flags (bit 0: a MAC follows the body; none defined yet) |
//! | 6      | 8    | cluster id, little endian                            |
//! | 14     | 2    | sender node id, little endian (0 = a client)         |
//! | 16     | 4    | configuration digest, little endian (0 from clients) |
//! | 20     | 8    | configuration epoch, little endian (0 from clients)  |
//! | 28     | ..   | body: postcard `Vec<Message>` (varint count, messages)|
//!
//! The configuration epoch and digest name the sender's active
//! configuration (`core::membership`): a node votes only for, and counts
//! only votes from, a peer that names its own, so two nodes that disagree
//! on the members never count quorums that need not intersect.
//!
//! The body must use every remaining byte: a datagram with trailing bytes is
//! dropped. Decoding never panics and never sizes an allocation from a length
//! it has not checked against the datagram (postcard borrows from the input
//! and fails on short input).

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
pub const PROTOCOL_VERSION: u8 = 5;
pub const HEADER_BYTES: usize = 28;
const _: () = assert!(HEADER_BYTES <= limits::HEADER_BYTES_MAX);

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
}

pub use crate::members::ConfigDigest;

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
            DecodeError::BadBody(e) => write!(f, "undecodable body: {e}"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} trailing bytes after the body"),
            DecodeError::TooManyMessages(n) => write!(f, "{n} messages in one datagram"),
            DecodeError::OverLimit => write!(f, "a message is over the size limits"),
        }
    }
}

fn encode_header(header: Header, out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(0);
    out.extend_from_slice(&header.cluster.0.to_le_bytes());
    out.extend_from_slice(&header.sender.0.to_le_bytes());
    out.extend_from_slice(&header.config.0.to_le_bytes());
    out.extend_from_slice(&header.epoch.0.to_le_bytes());
}

/// Encodes one message for packing with `DatagramPacker`.
pub fn encode_message(msg: &Message) -> Vec<u8> {
    // Serializing our own types into a Vec cannot fail; an empty body would
    // be dropped by the receiver, never misread.
    postcard::to_stdvec(msg).unwrap_or_default()
}

/// Encodes a whole datagram.
pub fn encode_datagram(header: Header, messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_header(header, &mut out);
    let body = postcard::to_stdvec(messages).unwrap_or_default();
    out.extend_from_slice(&body);
    out
}

/// Packs already-encoded messages for one destination into datagrams of at
/// most `DATAGRAM_BYTES_MAX` bytes.
pub fn pack_datagrams(header: Header, encoded: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    let mut start = 0;
    while start < encoded.len() {
        let mut end = start;
        let mut size = HEADER_BYTES + 5;
        while end < encoded.len()
            && end - start < limits::MESSAGES_PER_DATAGRAM_MAX
            && (end == start || size + encoded[end].len() <= limits::DATAGRAM_BYTES_MAX)
        {
            size += encoded[end].len();
            end += 1;
        }
        let mut out = Vec::with_capacity(size);
        encode_header(header, &mut out);
        push_varint(&mut out, (end - start) as u64);
        for m in &encoded[start..end] {
            out.extend_from_slice(m);
        }
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

/// Decodes and validates a datagram addressed to cluster `cluster`.
pub fn decode_datagram(cluster: ClusterId, bytes: &[u8]) -> Result<(Header, Vec<Message>), DecodeError> {
    if bytes.len() < HEADER_BYTES {
        return Err(DecodeError::TooShort(bytes.len()));
    }
    if bytes.len() > limits::DATAGRAM_BYTES_MAX {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    let header = decode_header(cluster, bytes)?;
    let (messages, rest): (Vec<Message>, &[u8]) =
        postcard::take_from_bytes(&bytes[HEADER_BYTES..]).map_err(|e| DecodeError::BadBody(e.to_string()))?;
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

fn decode_header(cluster: ClusterId, bytes: &[u8]) -> Result<Header, DecodeError> {
    let field = |range: std::ops::Range<usize>| bytes.get(range).ok_or(DecodeError::TooShort(bytes.len()));
    if field(0..4)? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = bytes[4];
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if bytes[5] != 0 {
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
    Ok(Header { cluster: found, sender: NodeId(u16::from_le_bytes(sender)), config, epoch })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: ClusterId = ClusterId(42);

    fn header() -> Header {
        Header {
            cluster: CLUSTER,
            sender: NodeId(2),
            config: ConfigDigest(0x0a0b_0c0d),
            epoch: Epoch(0x0102_0304),
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
        let bytes = encode_datagram(header(), &sample());
        assert_eq!(decode_datagram(CLUSTER, &bytes), Ok((header(), sample())));
    }

    #[test]
    fn packed_equals_whole() {
        let encoded: Vec<Vec<u8>> = sample().iter().map(encode_message).collect();
        let packed = pack_datagrams(header(), &encoded);
        assert_eq!(packed, vec![encode_datagram(header(), &sample())]);
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
        let packed = pack_datagrams(header(), &encoded);
        assert!(packed.len() > 1);
        let mut total = 0;
        for d in &packed {
            assert!(d.len() <= limits::DATAGRAM_BYTES_MAX);
            total += decode_datagram(CLUSTER, d).map(|(_, m)| m.len()).unwrap_or(0);
        }
        assert_eq!(total, 10);
    }

    #[test]
    fn rejects_wrong_cluster_magic_version_and_trailing() {
        let bytes = encode_datagram(header(), &sample());
        assert_eq!(decode_datagram(ClusterId(1), &bytes), Err(DecodeError::WrongCluster(CLUSTER)));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(decode_datagram(CLUSTER, &bad), Err(DecodeError::BadMagic));
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert_eq!(decode_datagram(CLUSTER, &bad), Err(DecodeError::UnsupportedVersion(9)));
        let mut bad = bytes.clone();
        bad.push(0);
        assert_eq!(decode_datagram(CLUSTER, &bad), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn every_truncation_is_rejected_without_panic() {
        let bytes = encode_datagram(header(), &sample());
        for len in 0..bytes.len() {
            assert!(decode_datagram(CLUSTER, &bytes[..len]).is_err(), "prefix {len} accepted");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let good = encode_datagram(header(), &sample());
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
            let _ = decode_datagram(CLUSTER, &bytes);
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
        let bytes = encode_datagram(header(), std::slice::from_ref(&msg));
        assert!(bytes.len() <= limits::DATAGRAM_BYTES_MAX, "{} bytes", bytes.len());
        assert_eq!(decode_datagram(CLUSTER, &bytes), Ok((header(), vec![msg])));
    }

    #[test]
    fn a_watch_reply_out_of_order_or_over_the_bounds_is_dropped() {
        let mut versions = full_history_states();
        versions.swap(0, 1);
        let bytes = encode_datagram(header(), &[largest_watch_reply(versions)]);
        assert_eq!(decode_datagram(CLUSTER, &bytes), Err(DecodeError::OverLimit), "not rising");
        let mut versions = full_history_states();
        versions.insert(0, PastState { version: Version(0), value: None });
        let bytes = encode_datagram(header(), &[largest_watch_reply(versions)]);
        assert_eq!(decode_datagram(CLUSTER, &bytes), Err(DecodeError::OverLimit), "one state too many");
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
        let bytes = encode_datagram(header(), &[msg]);
        assert_eq!(decode_datagram(CLUSTER, &bytes), Err(DecodeError::OverLimit));
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
        let bytes = encode_datagram(header(), &[msg]);
        assert_eq!(decode_datagram(CLUSTER, &bytes), Err(DecodeError::OverLimit));
    }
}
