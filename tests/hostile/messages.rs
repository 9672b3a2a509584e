//! Valid messages of every kind, the datagrams the encoder makes of them,
//! damage done to those datagrams, and the check of whatever the decoder
//! accepts.

use super::node;
use paxosd::auth::Keyring;
use paxosd::change::Change;
use paxosd::core::rng::Rng;
use paxosd::limits;
use paxosd::members::{Configuration, FreezeAnswer, Member, MemberChange, Members};
use paxosd::types::{
    Ballot, ClusterId, Epoch, Evaluation, Fingerprint, History, Incarnation, Key, NodeId, PastState,
    RegisterState, RequestId, SessionId, Time, Value, Version,
};
use paxosd::wire::{
    self, ConfigDigest, HEADER_BYTES, Header, MembersOutcome, Message, NodeStatus, Outcome, QueryId, Refusal,
    Request, ScanSlot, WatchAnswer, WatchId,
};

pub const CLUSTER: ClusterId = ClusterId(0x5eed);

/// How many kinds of `Message` there are; `variant` numbers them.
pub const VARIANTS: usize = 25;

/// The kind of `msg`, as `message` takes it. The match is exhaustive, so a
/// new kind of message does not compile until it is numbered here, and
/// `every_kind_of_message_is_generated` fails until `message` makes it.
pub fn variant(msg: &Message) -> usize {
    match msg {
        Message::Prepare { .. } => 0,
        Message::Promise { .. } => 1,
        Message::Accept { .. } => 2,
        Message::Accepted { .. } => 3,
        Message::Reject { .. } => 4,
        Message::Query { .. } => 5,
        Message::QueryReply { .. } => 6,
        Message::Scan { .. } => 7,
        Message::ScanPage { .. } => 8,
        Message::Request(_) => 9,
        Message::Reply { .. } => 10,
        Message::StatusRequest { .. } => 11,
        Message::StatusReply { .. } => 12,
        Message::ConfigQuery => 13,
        Message::ConfigInfo { .. } => 14,
        Message::Freeze { .. } => 15,
        Message::Frozen { .. } => 16,
        Message::Seed { .. } => 17,
        Message::Seeded { .. } => 18,
        Message::Install { .. } => 19,
        Message::Installed { .. } => 20,
        Message::MembersRequest { .. } => 21,
        Message::MembersReply { .. } => 22,
        Message::WatchRequest { .. } => 23,
        Message::WatchReply { .. } => 24,
    }
}

/// A message of kind `kind` (see `variant`) within every limit the decoder
/// checks, with fields drawn from `rng`: mostly values a real cluster
/// sends (the key `k`, low rounds, the founding nodes), sometimes extremes.
pub fn message(rng: &mut Rng, kind: usize) -> Message {
    match kind {
        0 => Message::Prepare { key: key(rng), ballot: ballot(rng) },
        1 => {
            Message::Promise { key: key(rng), ballot: ballot(rng), accepted: ballot(rng), state: state(rng) }
        }
        2 => Message::Accept { key: key(rng), ballot: ballot(rng), state: state(rng), next: ballot(rng) },
        3 => Message::Accepted { key: key(rng), ballot: ballot(rng), promised: ballot(rng) },
        4 => Message::Reject { key: key(rng), ballot: ballot(rng), promised: ballot(rng) },
        5 => Message::Query { key: key(rng), query: QueryId(small(rng)) },
        6 => Message::QueryReply {
            key: key(rng),
            query: QueryId(small(rng)),
            accepted: ballot(rng),
            state: state(rng),
        },
        7 => Message::Scan { epoch: epoch(rng), after: maybe(rng, key) },
        8 => Message::ScanPage {
            epoch: epoch(rng),
            after: maybe(rng, key),
            slots: slots(rng),
            done: rng.chance(0.5),
        },
        9 => Message::Request(request(rng)),
        10 => Message::Reply {
            id: request_id(rng),
            incarnation: Incarnation(small(rng)),
            node_time: Time(rng.next_u64()),
            outcome: outcome(rng),
        },
        11 => Message::StatusRequest { session: SessionId(rng.below(3) as u128), probe: small(rng) },
        12 => Message::StatusReply {
            session: SessionId(rng.below(3) as u128),
            probe: small(rng),
            node_time: Time(rng.next_u64()),
            status: status(rng),
        },
        13 => Message::ConfigQuery,
        14 => Message::ConfigInfo { config: configuration(rng) },
        15 => Message::Freeze { change: member_change(rng) },
        16 => Message::Frozen { epoch: epoch(rng), answer: freeze_answer(rng) },
        17 => Message::Seed {
            epoch: epoch(rng),
            after: maybe(rng, key),
            slots: slots(rng),
            done: rng.chance(0.5),
        },
        18 => Message::Seeded {
            epoch: epoch(rng),
            after: maybe(rng, key),
            done: rng.chance(0.5),
            adopted: rng.chance(0.5),
        },
        19 => Message::Install { config: configuration(rng) },
        20 => Message::Installed { epoch: epoch(rng) },
        21 => Message::MembersRequest { id: small(rng), target: members(rng) },
        22 => Message::MembersReply { id: small(rng), outcome: members_outcome(rng) },
        23 => Message::WatchRequest {
            id: WatchId(small(rng)),
            key: key(rng),
            after: maybe(rng, version),
            every_version: rng.chance(0.5),
        },
        _ => Message::WatchReply { id: WatchId(small(rng)), key: key(rng), answer: watch_answer(rng) },
    }
}

/// A message of any kind.
pub fn any_message(rng: &mut Rng) -> Message {
    let kind = rng.below(VARIANTS as u64) as usize;
    message(rng, kind)
}

/// The datagrams one sender's turn makes of a few messages: one, or more
/// when they do not fit one (`pack_datagrams`), or a single datagram built
/// whole (`encode_datagram`).
pub fn datagrams(rng: &mut Rng) -> Vec<Vec<u8>> {
    let header = header(rng);
    let messages: Vec<Message> = (0..rng.range(1, 5)).map(|_| any_message(rng)).collect();
    let encoded: Vec<Vec<u8>> = messages.iter().map(wire::encode_message).collect();
    let fits = encoded.iter().map(Vec::len).sum::<usize>() + HEADER_BYTES + 5 <= limits::DATAGRAM_BYTES_MAX;
    if fits && rng.chance(0.2) {
        return vec![wire::encode_datagram(header, &messages, &Keyring::none())];
    }
    wire::pack_datagrams(header, &encoded, &Keyring::none())
}

/// A header as the harness's node expects it: from a client (sender 0), or
/// from a configured peer naming the founding configuration; now and then
/// from the node itself, a node that is not configured, or a peer of
/// another configuration.
pub fn header(rng: &mut Rng) -> Header {
    let sender = NodeId(match rng.below(10) {
        0..=3 => 0,
        4..=7 => rng.range(2, 3) as u16,
        _ => rng.range(1, node::CONFIGURED as u64 + 2) as u16,
    });
    let founding = node::founding().digest();
    let (config, epoch) = match (sender, rng.below(8)) {
        (NodeId::CLIENT, _) => (ConfigDigest::NONE, Epoch(0)),
        (_, 0) => (ConfigDigest(rng.next_u64() as u32), Epoch(0)),
        (_, 1) => (founding, Epoch(rng.range(1, 3))),
        _ => (founding, Epoch(0)),
    };
    let (sent_unix_ms, receiver) = (1_790_000_000_000, node::ME);
    Header { cluster: CLUSTER, sender, config, epoch, sent_unix_ms, receiver }
}

/// Damages a datagram with one to three edits: bit flips and odd bytes in
/// the body, truncation, inserted, removed and repeated bytes, a varint
/// (the message count, or whatever length or tag sits there) rewritten,
/// and edits of the header's sender.
pub fn damage(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.range(1, 3) {
        let body = HEADER_BYTES.min(bytes.len());
        let at = rng.range(body as u64, bytes.len() as u64) as usize;
        match rng.below(10) {
            0 | 1 => flip_bit(rng, bytes, at),
            2 => set_byte(rng, bytes, at),
            3 => bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize),
            4 => insert_bytes(rng, bytes, at),
            5 => remove_bytes(rng, bytes, at),
            6 => rewrite_varint(rng, bytes, body),
            7 => rewrite_varint(rng, bytes, at),
            8 => repeat_range(rng, bytes, body),
            _ => edit_header(rng, bytes),
        }
    }
}

fn flip_bit(rng: &mut Rng, bytes: &mut [u8], at: usize) {
    if let Some(b) = bytes.get_mut(at) {
        *b ^= 1 << rng.below(8);
    }
}

fn set_byte(rng: &mut Rng, bytes: &mut [u8], at: usize) {
    const ODD: [u8; 6] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];
    if let Some(b) = bytes.get_mut(at) {
        *b = if rng.chance(0.5) { ODD[rng.below(ODD.len() as u64) as usize] } else { rng.next_u64() as u8 };
    }
}

fn insert_bytes(rng: &mut Rng, bytes: &mut Vec<u8>, at: usize) {
    let at = at.min(bytes.len());
    for _ in 0..rng.range(1, 4) {
        bytes.insert(at, rng.next_u64() as u8);
    }
}

fn remove_bytes(rng: &mut Rng, bytes: &mut Vec<u8>, at: usize) {
    let end = (at + rng.range(1, 4) as usize).min(bytes.len());
    bytes.drain(at.min(end)..end);
}

/// Replaces the varint at `at` (up to ten bytes with the high bit set, and
/// the one that ends it) with another: a length edit, wherever a length
/// sits there.
fn rewrite_varint(rng: &mut Rng, bytes: &mut Vec<u8>, at: usize) {
    if at >= bytes.len() {
        return;
    }
    let mut end = at;
    let mut old = 0u64;
    while end < bytes.len() && end - at < 10 {
        old |= u64::from(bytes[end] & 0x7f).checked_shl(7 * (end - at) as u32).unwrap_or(0);
        end += 1;
        if bytes[end - 1] & 0x80 == 0 {
            break;
        }
    }
    let new = edited_length(rng, old);
    let mut varint = Vec::new();
    push_varint(&mut varint, new);
    bytes.splice(at..end, varint);
}

/// A length to put in place of `old`: one off, zero, at or just past a
/// limit, or far beyond any.
pub fn edited_length(rng: &mut Rng, old: u64) -> u64 {
    const ODD: [u64; 12] = [
        0,
        1,
        127,
        128,
        255,
        256,
        limits::KEY_BYTES_MAX as u64,
        limits::VALUE_BYTES_MAX as u64 + 1,
        limits::DATAGRAM_BYTES_MAX as u64,
        u32::MAX as u64,
        u32::MAX as u64 + 1,
        u64::MAX,
    ];
    match rng.below(4) {
        0 => old.wrapping_add(1),
        1 => old.wrapping_sub(1),
        2 => ODD[rng.below(ODD.len() as u64) as usize],
        _ => rng.next_u64() >> rng.below(64),
    }
}

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Copies a range of the body elsewhere in the body: a message repeated,
/// or pieces of two messages run together.
fn repeat_range(rng: &mut Rng, bytes: &mut Vec<u8>, body: usize) {
    let len = bytes.len() as u64;
    let (a, b) = (rng.range(body as u64, len) as usize, rng.range(body as u64, len) as usize);
    let piece = bytes[a.min(b)..a.max(b)].to_vec();
    let to = rng.range(body as u64, len) as usize;
    bytes.splice(to..to, piece);
}

/// Changes the sender (client or peer, configured or not), or any header
/// byte at all.
fn edit_header(rng: &mut Rng, bytes: &mut [u8]) {
    if bytes.len() < HEADER_BYTES {
        return;
    }
    if rng.chance(0.7) {
        let sender = rng.below(node::CONFIGURED as u64 + 2) as u16;
        bytes[14..16].copy_from_slice(&sender.to_le_bytes());
    } else {
        let at = rng.below(HEADER_BYTES as u64) as usize;
        bytes[at] = rng.next_u64() as u8;
    }
}

/// Decodes `bytes` as the driver does and checks what the decoder accepts:
/// every message is within the limits, and the header and messages
/// re-encode, whole or packed, into no more bytes than came in, and decode
/// to the same again.
pub fn check_decoded(bytes: &[u8]) -> Option<(Header, Vec<Message>)> {
    let decoded = wire::decode_datagram(&Keyring::none(), CLUSTER, bytes).ok()?;
    let (header, messages) = &decoded;
    assert!(messages.iter().all(Message::is_within_limits), "accepted over the limits: {messages:?}");
    let again = wire::encode_datagram(*header, messages, &Keyring::none());
    assert!(again.len() <= bytes.len(), "re-encoded {} bytes from {}", again.len(), bytes.len());
    assert_eq!(
        wire::decode_datagram(&Keyring::none(), CLUSTER, &again).as_ref(),
        Ok(&decoded),
        "whole re-encoding"
    );
    let encoded: Vec<Vec<u8>> = messages.iter().map(wire::encode_message).collect();
    let mut unpacked = Vec::new();
    for datagram in wire::pack_datagrams(*header, &encoded, &Keyring::none()) {
        let (h, m) =
            wire::decode_datagram(&Keyring::none(), CLUSTER, &datagram).expect("a packed datagram decodes");
        assert_eq!(h, *header, "packed header");
        unpacked.extend(m);
    }
    assert_eq!(&unpacked, messages, "packed re-encoding");
    Some(decoded)
}

// ---------------------------------------------------------------------------
// Fields

fn small(rng: &mut Rng) -> u64 {
    if rng.chance(0.05) { u64::MAX - rng.below(2) } else { rng.below(8) }
}

fn maybe<T>(rng: &mut Rng, f: fn(&mut Rng) -> T) -> Option<T> {
    rng.chance(0.5).then(|| f(rng))
}

fn node_id(rng: &mut Rng) -> NodeId {
    if rng.chance(0.05) { NodeId(rng.next_u64() as u16) } else { NodeId(rng.range(1, 5) as u16) }
}

fn epoch(rng: &mut Rng) -> Epoch {
    match rng.below(10) {
        0 => Epoch(u64::MAX),
        1 | 2 => Epoch(rng.range(1, 3)),
        _ => Epoch(0),
    }
}

fn ballot(rng: &mut Rng) -> Ballot {
    if rng.chance(0.1) {
        return Ballot::ZERO;
    }
    Ballot::at(epoch(rng), small(rng), node_id(rng))
}

/// Mostly the key the harness's node works on, sometimes another, odd
/// bytes, or the longest key allowed.
pub fn key(rng: &mut Rng) -> Key {
    match rng.below(10) {
        0..=5 => Key::from(node::KEY),
        6 => Key::from("lock/a"),
        7 => Key(vec![]),
        8 => Key((0..rng.below(40)).map(|_| rng.next_u64() as u8).collect()),
        _ => Key(vec![b'K'; limits::KEY_BYTES_MAX]),
    }
}

fn value(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0..=6 => Value(format!("value-{}", rng.below(100)).into_bytes()),
        7 | 8 => Value((0..rng.below(200)).map(|_| rng.next_u64() as u8).collect()),
        _ => Value(vec![b'V'; rng.range(1, limits::VALUE_BYTES_MAX as u64) as usize]),
    }
}

/// A value small enough that a history or a watch answer of many stays
/// within one datagram.
fn small_value(rng: &mut Rng) -> Value {
    Value((0..rng.below(64)).map(|_| rng.next_u64() as u8).collect())
}

fn version(rng: &mut Rng) -> Version {
    if rng.chance(0.05) { Version(u64::MAX) } else { Version(rng.below(10)) }
}

/// A register state as acceptors keep it: a value or a tombstone, the
/// writes it remembers, its writers and, for a watched key, a history of
/// the states before it (versions below its own, newest first).
pub fn state(rng: &mut Rng) -> RegisterState {
    let version = version(rng);
    let recent_max = if rng.chance(0.1) { limits::RECENT_WRITES_MAX } else { 3 };
    let recent = (0..rng.below(recent_max as u64 + 1))
        .map(|i| Evaluation {
            request: Fingerprint((rng.next_u64() ^ i).to_le_bytes()),
            version: Version(version.0.saturating_sub(i)),
            took_effect: rng.chance(0.7),
        })
        .collect();
    let writers = (0..rng.below(4)).map(|_| ballot(rng)).collect();
    let history = rng.chance(0.4).then(|| history(rng, version));
    RegisterState { value: maybe(rng, value), version, recent, writers, history }
}

fn history(rng: &mut Rng, below: Version) -> History {
    let count = rng.below(below.0.min(5) + 1);
    let past =
        (1..=count).map(|i| PastState { version: Version(below.0 - i), value: maybe(rng, small_value) });
    History { past: past.collect() }
}

fn slots(rng: &mut Rng) -> Vec<ScanSlot> {
    (0..rng.below(4))
        .map(|_| ScanSlot {
            key: key(rng),
            promised: ballot(rng),
            accepted: ballot(rng),
            adopted: rng.chance(0.3),
            state: state(rng),
        })
        .collect()
}

fn request_id(rng: &mut Rng) -> RequestId {
    RequestId { session: SessionId(rng.below(3) as u128), seq: small(rng) }
}

fn change(rng: &mut Rng) -> Change {
    match rng.below(9) {
        0 => Change::Read,
        1 => Change::Put(value(rng)),
        2 => Change::CasValue { expect: maybe(rng, value), new: value(rng) },
        3 => Change::CasVersion { expect: version(rng), new: value(rng) },
        4 => Change::Delete,
        5 => Change::Append(value(rng)),
        6 => Change::DeleteVersion { expect: version(rng) },
        7 => Change::Watch,
        _ => Change::Put(Value(vec![b'B'; limits::VALUE_BYTES_MAX + rng.range(1, 100) as usize])),
    }
}

fn request(rng: &mut Rng) -> Request {
    Request {
        id: request_id(rng),
        key: key(rng),
        change: change(rng),
        timeout_ms: [0, 1, 500, u32::MAX][rng.below(4) as usize],
        incarnation: Incarnation(small(rng)),
        sent_at: Time(rng.next_u64() >> rng.below(64)),
        resent: rng.chance(0.5),
        floor: version(rng),
    }
}

fn refusal(rng: &mut Rng) -> Refusal {
    const ALL: [Refusal; 8] = [
        Refusal::KeyTooLarge,
        Refusal::ValueTooLarge,
        Refusal::Overloaded,
        Refusal::BadTimeout,
        Refusal::ShuttingDown,
        Refusal::CatchingUp,
        Refusal::StaleIncarnation,
        Refusal::NotMember,
    ];
    ALL[rng.below(ALL.len() as u64) as usize]
}

fn outcome(rng: &mut Rng) -> Outcome {
    match rng.below(5) {
        0 => Outcome::Done {
            version: version(rng),
            precondition_held: rng.chance(0.5),
            value: maybe(rng, |rng| maybe(rng, value)),
        },
        1 => Outcome::Unavailable { maybe_applied: rng.chance(0.5) },
        2 => Outcome::Indeterminate,
        3 => Outcome::Refused(refusal(rng)),
        _ => Outcome::InProgress { exclusive: rng.chance(0.5), cut_off: rng.chance(0.5) },
    }
}

fn members(rng: &mut Rng) -> Members {
    let count = if rng.chance(0.05) { limits::NODES_MAX as u64 } else { rng.range(1, 5) };
    let members =
        (1..=count).map(|id| Member { id: NodeId(id as u16), address: format!("127.0.0.1:{}", 7000 + id) });
    Members::new(members.collect()).unwrap_or_default()
}

fn configuration(rng: &mut Rng) -> Configuration {
    Configuration { epoch: epoch(rng), members: members(rng) }
}

fn member_change(rng: &mut Rng) -> MemberChange {
    MemberChange { epoch: epoch(rng), from: epoch(rng), to: members(rng) }
}

fn freeze_answer(rng: &mut Rng) -> FreezeAnswer {
    [FreezeAnswer::Frozen, FreezeAnswer::Installed, FreezeAnswer::Refused][rng.below(3) as usize].clone()
}

fn members_outcome(rng: &mut Rng) -> MembersOutcome {
    match rng.below(3) {
        0 => MembersOutcome::InProgress("seeding".into()),
        1 => MembersOutcome::Done(configuration(rng)),
        _ => MembersOutcome::Failed("no quorum".into()),
    }
}

fn status(rng: &mut Rng) -> NodeStatus {
    NodeStatus {
        node: node_id(rng),
        incarnation: Incarnation(small(rng)),
        keys: small(rng),
        epoch: epoch(rng).0,
        catching_up: rng.chance(0.2),
        config: configuration(rng),
        frozen: maybe(rng, member_change),
        driving: rng.chance(0.2).then(|| "scanning".to_string()),
        ..NodeStatus::default()
    }
}

/// A watch answer as a node gives it: states oldest first, versions rising
/// up to the current one.
fn watch_answer(rng: &mut Rng) -> WatchAnswer {
    match rng.below(4) {
        0 => WatchAnswer::Refused(refusal(rng)),
        1 => WatchAnswer::Unavailable,
        _ => {
            let current = Version(rng.range(1, 20));
            let count = rng.below(current.0.min(limits::WATCH_REPLY_STATES_MAX as u64) + 1);
            let versions = (0..count)
                .map(|i| PastState {
                    version: Version(current.0 - count + 1 + i),
                    value: maybe(rng, small_value),
                })
                .collect();
            WatchAnswer::States { versions, current, gap: rng.chance(0.3) }
        }
    }
}
