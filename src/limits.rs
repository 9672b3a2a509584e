//! Every limit paxosd enforces, in one place. The README's "Limits" table is
//! written from this file; change both together.

/// Largest key, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;

/// Largest value, in bytes. Small on purpose: paxosd keeps a few precious
/// facts (locks, leaders, shard maps), and every message carrying a value must
/// fit in one UDP datagram.
pub const VALUE_BYTES_MAX: usize = 16 * 1024;

/// Origins of ancestor states a register state carries. A proposer that
/// retries a write can tell whether it took effect as long as fewer than
/// this many writes happened on the key in between; beyond that the outcome
/// is reported as unknown.
pub const LINEAGE_ORIGINS_MAX: usize = 16;

/// Room a message needs besides its key and value (ballots, versions, the
/// lineage, enum tags, length prefixes), generously rounded up: a ballot is
/// at most 13 bytes in postcard.
pub const MESSAGE_OVERHEAD_BYTES_MAX: usize = 128 + 13 * LINEAGE_ORIGINS_MAX;

/// Largest message body: one key, one value and the overhead.
pub const MESSAGE_BYTES_MAX: usize = KEY_BYTES_MAX + VALUE_BYTES_MAX + MESSAGE_OVERHEAD_BYTES_MAX;

/// Datagram header: magic, protocol version, cluster id, sender id, body
/// length, and room reserved for a MAC.
pub const HEADER_BYTES_MAX: usize = 64;

/// Largest datagram paxosd sends or accepts. Below the 65,507-byte UDP
/// payload limit of IPv4; several messages to one peer share a datagram up to
/// this size.
pub const DATAGRAM_BYTES_MAX: usize = 60 * 1024;

/// Largest number of messages one datagram may carry.
pub const MESSAGES_PER_DATAGRAM_MAX: usize = 256;

/// Socket buffer size requested from the kernel, so bursts of datagrams in
/// one loop turn are not dropped.
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Client requests a node works on at once; one more is refused with
/// "overloaded" rather than queued without bound.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4096;

/// Requests waiting behind another one on the same key at the same node.
pub const REQUESTS_QUEUED_PER_KEY_MAX: usize = 64;

/// Requests on one key that share one Paxos round at a node.
pub const BATCH_REQUESTS_MAX: usize = 64;

/// How long a reply is remembered at least: longer than any client keeps
/// retransmitting a request (its timeout, at most REQUEST_TIMEOUT_MS_MAX).
pub const REPLY_RETENTION_MS: u64 = REQUEST_TIMEOUT_MS_MAX + 10_000;

/// Replies remembered so that a retransmitted request gets the same answer
/// instead of being applied twice.
pub const REPLY_CACHE_ENTRIES_MAX: usize = 16 * 1024;

/// Proposal attempts (each with a fresh, higher ballot) before a request is
/// answered "no quorum".
pub const PROPOSAL_ATTEMPTS_MAX: u32 = 64;

/// Resends of a prepare or accept to peers that have not answered, before the
/// attempt is abandoned and retried with a higher ballot.
pub const PHASE_RESENDS_MAX: u32 = 4;

/// Time to wait for answers before resending a prepare or accept.
pub const PHASE_RESEND_MS: u64 = 40;

/// Backoff after a failed attempt: starts at MIN, doubles up to MAX, with
/// full jitter.
pub const BACKOFF_MS_MIN: u64 = 2;
pub const BACKOFF_MS_MAX: u64 = 200;

/// The longest a client may ask a node to keep trying (its `timeout_ms`).
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 60_000;

/// Default request timeout of `paxosctl` and the client library.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// Rounds reserved (and persisted) at a time; a restart skips the rest of
/// the block, so ballots are never reused.
pub const ROUND_BLOCK: u64 = 1024;

/// Largest cluster.
pub const NODES_MAX: usize = 15;

/// Largest record in the acceptor log: a key's whole state plus framing.
pub const RECORD_BYTES_MAX: usize = MESSAGE_BYTES_MAX + 64;

/// The log is compacted when it is larger than this many bytes ...
pub const COMPACT_BYTES_MIN: u64 = 4 * 1024 * 1024;
/// ... and more than this many times the size of the live state.
pub const COMPACT_RATIO: u64 = 4;

// Relations between the limits, checked at compile time.
const _: () = assert!(MESSAGE_BYTES_MAX + HEADER_BYTES_MAX <= DATAGRAM_BYTES_MAX);
const _: () = assert!(DATAGRAM_BYTES_MAX <= 65_507);
const _: () = assert!(BACKOFF_MS_MIN <= BACKOFF_MS_MAX);
const _: () = assert!(REQUEST_TIMEOUT_MS_DEFAULT <= REQUEST_TIMEOUT_MS_MAX);
const _: () = assert!(RECORD_BYTES_MAX < u32::MAX as usize);
const _: () = assert!(SOCKET_BUFFER_BYTES >= 16 * DATAGRAM_BYTES_MAX);
