//! Every limit paxosd enforces, in one place. The README's "Limits" table is
//! written from this file; change both together.

/// Largest key, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;

/// Largest value, in bytes. Small on purpose: paxosd keeps a few precious
/// facts (locks, leaders, shard maps), and every message carrying a value must
/// fit in one UDP datagram.
pub const VALUE_BYTES_MAX: usize = 16 * 1024;

/// Write requests a register state remembers (the newest ones evaluated on
/// it: which request, at which version, and whether it took effect). A
/// request retried at another node, or after a restart, is recognised as
/// long as fewer than this many writes were evaluated on the key since the
/// client last saw it; beyond that its outcome is reported as unknown.
pub const RECENT_WRITES_MAX: usize = 32;

/// Bytes one remembered write takes in postcard: an 8-byte fingerprint, a
/// version (at most 10) and a flag.
pub const RECENT_WRITE_BYTES_MAX: usize = 8 + 10 + 1;

/// Past states a watched key keeps (`types::History`): a watcher that
/// polls again before this many more writes were made misses none.
pub const WATCH_HISTORY_VERSIONS_MAX: usize = 64;

/// Bytes of values a watched key's past states may hold together; the
/// oldest are dropped first beyond this. At least one value, so the state a
/// write replaced is always kept.
pub const WATCH_HISTORY_BYTES_MAX: usize = 16 * 1024;

/// Bytes one past state takes in postcard besides its value: a version (at
/// most 10), the option tag and the value's length prefix (at most 3).
pub const WATCH_PAST_STATE_OVERHEAD_BYTES_MAX: usize = 10 + 1 + 3;

/// Bytes a register state's history takes at most: its values, each entry's
/// overhead, the option tag and the list's length prefix.
pub const WATCH_HISTORY_ENCODED_BYTES_MAX: usize =
    WATCH_HISTORY_BYTES_MAX + WATCH_HISTORY_VERSIONS_MAX * WATCH_PAST_STATE_OVERHEAD_BYTES_MAX + 1 + 2;

/// Room a message needs besides its key and value (ballots, versions, the
/// remembered writes, the newest writer per node, a watched key's history,
/// request identity, enum tags, length prefixes), generously rounded up: a
/// ballot (epoch, round and node) is at most 23 bytes in postcard.
pub const MESSAGE_OVERHEAD_BYTES_MAX: usize =
    256 + RECENT_WRITE_BYTES_MAX * RECENT_WRITES_MAX + 23 * NODES_MAX + WATCH_HISTORY_ENCODED_BYTES_MAX;

/// Largest message body: one key, one value and the overhead.
pub const MESSAGE_BYTES_MAX: usize = KEY_BYTES_MAX + VALUE_BYTES_MAX + MESSAGE_OVERHEAD_BYTES_MAX;

/// Past states plus the current one: the most a watch reply carries.
pub const WATCH_REPLY_STATES_MAX: usize = WATCH_HISTORY_VERSIONS_MAX + 1;

/// Watches a node holds at once, waiting for a read or for a change of
/// their key; one more is refused ("overloaded") rather than queued, so a
/// flood of watch requests costs a bounded table. An entry holds its key
/// (at most `KEY_BYTES_MAX`) and a few numbers.
pub const WATCHES_PARKED_MAX: usize = 4096;

/// How long a node holds a watch whose key has nothing newer: then it
/// answers "unchanged" and the client asks again. Bounds how long a watch
/// can wait on a node that fell silent, and how stale an entry can be.
pub const WATCH_PARK_MS: u64 = 1_000;

/// How long the read a node runs for its watches may try before they are
/// answered "unavailable" (the client then asks another node).
pub const WATCH_READ_MS: u64 = 500;

/// A node whose acceptor holds a newer version of a watched key than its
/// read found (a write in flight elsewhere, or a state accepted there and
/// never chosen) reads again after this long, in both phases. A key whose
/// read could not start (its queue was full) is tried again after this
/// long too.
pub const WATCH_REREAD_MS: u64 = 20;

/// Reads a node runs at once for its watches (one per watched key at
/// most). A budget apart from `REQUESTS_IN_FLIGHT_MAX`, and well below
/// it: polls on many keys wait for their turn (or their time to be up)
/// rather than take the room of client requests and get writes refused.
pub const WATCH_READS_IN_FLIGHT_MAX: usize = 256;

/// Watch answers a node produces in one turn (between two `take_ready`s).
/// One write can answer every watch of its key, each with its own copy of
/// the state (up to a datagram); beyond this many the rest wait for
/// another read, in a later turn, so one turn's memory stays bounded.
pub const WATCH_ANSWERS_PER_TURN_MAX: usize = 256;

/// A watching client that heard nothing for this long from the node it
/// asked asks the next node: longer than a node may take to answer (a
/// read, the park, a read when the key changes) plus a margin, so a node
/// that is merely quiet is never left, and a dead one costs this once.
pub const WATCH_CLIENT_SILENCE_MS: u64 = WATCH_PARK_MS + 2 * WATCH_READ_MS + 300;

/// A watching client that was refused, or told "unavailable", waits this
/// long before it asks the next node, so that a cluster refusing every
/// watch is not asked in a tight loop.
pub const WATCH_CLIENT_RETRY_MS: u64 = 100;

/// Datagram header and trailer: magic, protocol version, flags, cluster id,
/// sender id, configuration digest and epoch, sending time, the message
/// count, and the MAC, with room to spare.
pub const HEADER_BYTES_MAX: usize = 96;

/// How far above a node's round counter at start a ballot from the network
/// may lie, besides what `ROUND_RATE_MAX` adds with time (`core::node`,
/// "Ballots from the network"). Honest peers are ahead by the rounds the
/// cluster used before the node started that it had not seen: at a million
/// proposals a second, reaching this takes 12 days of a node hearing
/// nothing.
pub const ROUND_LEAP_MAX: u64 = 1 << 40;

/// Rounds a second no cluster ever uses (about a million, where a busy
/// node uses tens of thousands): the reach of ballots from the network
/// grows at this rate, so forged ballots cannot bring a round counter to
/// `ROUND_MAX` in less than 139,000 years.
pub const ROUND_RATE_MAX: u64 = 1 << 20;

/// No honest round reaches this: at a million proposals a second it takes
/// 146,000 years. Ballots at or past it are refused from the network and
/// never adopted from a log (`core::node`), and the rounds above it stay
/// free, so a node's counter can never be spent.
pub const ROUND_MAX: u64 = 1 << 62;

/// No honest epoch reaches this (one per membership change or rejoin).
pub const EPOCH_MAX: u64 = 1 << 62;

/// How far above a node's own epoch a ballot's epoch may lie. Epochs grow
/// by one per membership change or rejoin.
pub const EPOCH_LEAP_MAX: u64 = 1 << 20;

/// How far apart the wall clocks of nodes and clients may be (`wire::is_fresh`).
pub const CLOCK_SKEW_MS_MAX: u64 = 30_000;

/// A datagram sent longer ago than this, by its header's sending time and
/// the receiver's clock, or stamped this far ahead, carries no request the
/// node will run (`wire::is_fresh`): a recorded request replayed later is
/// refused. The clock skew allowed, plus the longest a datagram is taken
/// to linger in the network.
pub const REPLAY_WINDOW_MS: u64 = CLOCK_SKEW_MS_MAX + 30_000;

/// Bytes of the MAC at the end of every datagram when a cluster secret is
/// configured (keyed BLAKE3, see `auth`).
pub const MAC_BYTES: usize = 32;

/// How often nodes and clients look at their key files again, so that a
/// rotation's new keys are taken without a restart (`auth::KeyFiles`).
pub const SECRET_CHECK_MS: u64 = 1_000;

/// After a key file changes, the keys accepted before are accepted this
/// much longer (`auth::KeyFiles`), so a rotation step that rewrites two
/// files is never seen half done.
pub const SECRET_GRACE_MS: u64 = 5 * SECRET_CHECK_MS;

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

/// Requests one client address may have running at a node while the node
/// is behind on its votes (its peers' messages wait for room in its turns,
/// see `core::Node::set_behind`); one more is refused with "overloaded".
/// A client waiting for one answer at a time is always served; one that
/// floods the node is told it is busy instead of crowding out the rest.
pub const REQUESTS_PER_CLIENT_BEHIND_MAX: usize = 64;

/// Keys for which an acceptor keeps a promise and nothing else: a prepare
/// no accept followed, on a key nothing was ever accepted for (a read of a
/// key that does not exist that fell back to both phases, a write given up
/// after its prepare). Beyond this many, the lowest such promise is
/// dropped and every key without a slot counts as promised it (see
/// `core::acceptor`), so reads of ever-new keys cost a bounded table. An
/// entry holds its key twice (at most `KEY_BYTES_MAX` each) and two
/// ballots. Room for the keys the writes in flight at two nodes are
/// creating: dropping one of those costs its write another attempt.
pub const ABSENT_PROMISES_MAX: usize = 16 * 1024;

/// Bytes of datagrams a node has read from its socket and not handled yet
/// (each counted with `INTAKE_DATAGRAM_OVERHEAD_BYTES`). Reading the
/// socket dry every turn keeps the kernel's queue, shared by every sender,
/// short; the node then serves the senders in turn (`core::intake`). A
/// datagram that finds this full is dropped, as the network would.
pub const INTAKE_BYTES_MAX: usize = 16 << 20;

/// Bytes of datagrams one client address may have waiting in the intake:
/// beyond this its oldest are dropped, so a flood from one address waits
/// behind nobody else's requests and is served fresh. Room for a few of
/// the largest datagrams. Peers are not held to it.
pub const INTAKE_SOURCE_BYTES_MAX: usize = 4 * DATAGRAM_BYTES_MAX;

/// What the intake counts for a datagram besides its bytes (its buffer's
/// header and its place in a queue), so that tiny datagrams are bounded too.
pub const INTAKE_DATAGRAM_OVERHEAD_BYTES: usize = 64;

/// Datagrams a node reads from its socket in one loop turn. A sender
/// faster than this leaves the rest in the kernel's queue for the next
/// turn (or to be dropped there), so the loop never reads forever.
pub const INTAKE_READS_PER_TURN_MAX: usize = 4096;

/// A node logs how many datagrams its intake dropped at most this often.
pub const DROPS_REPORT_MS: u64 = 10_000;

/// Messages a node handles in one loop turn (a datagram is handled whole,
/// so a turn may go over by one datagram's). The rest wait in the intake
/// for the next turn: every turn ends with a sync and sends its answers,
/// however much a flood has queued.
pub const TURN_MESSAGES_MAX: usize = 1024;

/// Of a turn's messages, at most this many are from clients (a datagram
/// is handled whole). Peers' come first and fill the rest: votes for
/// requests taken already (here or at a peer) before new requests, and the
/// new requests a turn takes on stay few enough that their votes fit the
/// next turn.
pub const TURN_CLIENT_MESSAGES_MAX: usize = 256;

/// Records the log reader makes room for up front (one per 128 bytes of
/// log, at most this many: about 280 MB of record structs, reserved, not
/// touched), so that the list of a large log is not copied as it grows,
/// while a log of a few large values reserves no more than it needs.
pub const RECOVERY_RECORDS_RESERVED_MAX: usize = 1 << 21;

/// Keys for which a node remembers that a majority promised its next ballot
/// (two ballots and the key each), so that its next write there needs one
/// round trip. Beyond this many, the entry of the lowest key is dropped and
/// that key's next write prepares first.
pub const FAST_PATH_KEYS_MAX: usize = 64 * 1024;

/// Requests on one key that share one Paxos round at a node. At most
/// RECENT_WRITES_MAX, so a batch that retries finds all its own writes in
/// the state it may have written.
pub const BATCH_REQUESTS_MAX: usize = 32;

/// Client sessions a node remembers per generation. The session table holds
/// two generations; when the young one fills up, the old one is forgotten
/// and the node draws a new incarnation, so that copies of requests sent to
/// the forgotten sessions are refused rather than run blindly. Memory is
/// bounded by this, never by the request rate: a session costs one entry
/// (about 100 bytes) however many requests it makes.
pub const SESSIONS_PER_GENERATION: usize = 64 * 1024;

/// How long after a client sent a request's first copy a node may still run
/// it as the only copy (without consulting the key's remembered writes for
/// copies sent elsewhere). Clients send a write to a second node only after
/// this window has passed at the first, measured on the first node's clock.
pub const EXCLUSIVE_WINDOW_MS: u64 = 150;

/// The largest rate difference between two machines' monotonic clocks that
/// the exclusive window tolerates, in parts per thousand: a client assumes a
/// node's clock may run this much slower than its own.
pub const CLOCK_RATE_SLACK_PERMILLE: u64 = 10;

/// A client waits at least this long after it sent a write to a node as
/// the only copy before it sends a copy to another node: the exclusive
/// window, stretched by the clock slack, plus a margin.
pub const CLIENT_MOVE_WRITE_AFTER_MS: u64 =
    EXCLUSIVE_WINDOW_MS + EXCLUSIVE_WINDOW_MS * 2 * CLOCK_RATE_SLACK_PERMILLE / 1000 + 2;

/// A client waiting for a write sends it again to its node at least this
/// often: each copy renews the node's exclusive window, so a request that is
/// slow (queued, or in a duel) but alive never loses it.
pub const CLIENT_RENEW_WRITE_MS: u64 = EXCLUSIVE_WINDOW_MS / 2;

/// A client leaves a node for another once the node was silent through
/// this many retransmission timeouts in a row (answers "still working on
/// it" break the row).
pub const CLIENT_SILENCES_TO_MOVE: u32 = 2;

/// A node that has been trying to reach a quorum for a key for a while, and
/// heard from no majority of the members in that time, is cut off: it gives
/// up the requests it has not sent in an accept (telling their clients they
/// did not run, so they move on at once), stops running the others as the
/// only copy, and says so to clients that ask. "A while" is this multiple
/// of how long its promise quorums took lately (nodes send no heartbeats:
/// an idle node hears nothing, and a slow disk slows every answer) ...
pub const STALL_QUORUM_MULTIPLE: u64 = 8;
/// ... but at least this long ...
pub const STALL_MS_MIN: u64 = 150;
/// ... and at most this long, which is also the wait before the node has
/// measured any quorum.
pub const STALL_MS_MAX: u64 = 2_000;

/// A client that found a node silent, or cut off from a quorum, sends the
/// requests of the keys homed there to the next node for this long, doubled
/// each time the node is found so again (up to the maximum), before it
/// tries the home again.
pub const CLIENT_SUSPECT_MS_MIN: u64 = 500;
pub const CLIENT_SUSPECT_MS_MAX: u64 = 8_000;

/// Bounds of a client's retransmission timeout: how long it waits for a
/// node's answer before it asks another (or, pinned to one node, asks again).
/// Between them it follows the measured round trip (smoothed round trip plus
/// four deviations, as TCP does) and doubles after every silence.
pub const CLIENT_RTO_MS_MIN: u64 = 50;
pub const CLIENT_RTO_MS_MAX: u64 = 1_000;
/// The retransmission timeout before any round trip has been measured.
pub const CLIENT_RTO_MS_INITIAL: u64 = 100;

/// A client asks a node for its status (incarnation and clock) before it
/// sends a request there, unless it heard from that node this recently.
pub const CLIENT_NODE_VIEW_FRESH_MS: u64 = 10_000;

/// Keys whose last seen version a client remembers (the floor it sends with
/// a write, so a retry elsewhere can be judged).
pub const CLIENT_FLOORS_MAX: usize = 256;

/// Time a client keeps back from its own deadline when it tells a node how
/// long to try, so the node's own "no quorum" answer reaches it in time.
pub const CLIENT_REPLY_MARGIN_MS: u64 = 150;

/// Proposal attempts (each with a fresh, higher ballot) before a request is
/// answered "no quorum".
pub const PROPOSAL_ATTEMPTS_MAX: u32 = 64;

/// Resends of a prepare or accept to peers that have not answered, before the
/// attempt is abandoned and retried with a higher ballot.
pub const PHASE_RESENDS_MAX: u32 = 4;

/// Time to wait for answers before resending a prepare or accept.
pub const PHASE_RESEND_MS: u64 = 40;

/// Resends of a read's query to acceptors that have not answered before
/// the read falls back to both phases (which costs every acceptor a
/// promise on disk). Few: an acceptor holding an adopted state stays silent
/// on purpose (`core::acceptor`), and a read must fall back before its
/// node takes the silence for being cut off (`STALL_MS_MIN`).
pub const QUERY_RESENDS_MAX: u32 = 1;

/// Backoff after a failed attempt: starts at MIN, doubles up to MAX, with
/// full jitter.
pub const BACKOFF_MS_MIN: u64 = 2;
pub const BACKOFF_MS_MAX: u64 = 200;

/// The longest a client may ask a node to keep trying (its `timeout_ms`).
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 60_000;

/// Default request timeout of `paxosctl` and the client library.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// The longest the load generator's loop sleeps: it bounds how late its
/// periodic reports (progress, per-interval figures) run.
pub const LOADGEN_POLL_MS_MAX: u64 = 100;

/// Receive errors in a row after which the load generator stops a read
/// round and reads the rest on its next turn, so an error that repeats
/// cannot hold the loop.
pub const LOADGEN_RECV_ERRORS_PER_ROUND_MAX: u32 = 64;

/// Timer entries the load generator keeps per session before it sweeps out
/// the stale ones (each message a session handles may move its deadline),
/// so its timer heap stays proportional to the sessions.
pub const LOADGEN_TIMERS_PER_SESSION_MAX: usize = 4;

/// Attempts at sending one datagram when a signal interrupts the call.
pub const LOADGEN_SEND_ATTEMPTS_MAX: u32 = 3;

/// Keys of each client of `paxosctl bench` (the cas workload remembers a
/// version for each).
pub const BENCH_KEYS_PER_CLIENT_MAX: usize = 4096;

/// How often `paxosctl status` asks again the nodes that have not answered.
pub const STATUS_RETRY_MS: u64 = 100;

/// Rounds reserved (and persisted) at a time; a restart skips the rest of
/// the block, so ballots are never reused.
pub const ROUND_BLOCK: u64 = 1024;

/// Largest cluster.
pub const NODES_MAX: usize = 15;

/// A node asks a peer that names a newer configuration for it, or tells
/// one that names an older one its own, at most this often.
pub const CONFIG_GOSSIP_MS: u64 = 100;

/// A membership change that makes no progress for this long gives up (a
/// later request resumes it).
pub const MEMBER_CHANGE_TIMEOUT_MS: u64 = 30_000;

/// Clients a node tells how the membership change it drives ended (those
/// that asked for it while it ran). Others that ask are answered "in
/// progress" and learn the end from their next copy of the request.
pub const MEMBER_CHANGE_WAITERS_MAX: usize = 64;

/// A node frozen in a membership change asks the members for their
/// configuration this often, so that it learns how the change ended even
/// if its driver died or it was down when the change was installed.
pub const FROZEN_POLL_MS: u64 = 500;

/// `paxosctl member` leaves a node that drives its change for the next
/// one after this long without an answer (the next resumes the change).
pub const MEMBER_DRIVER_SILENCE_MS: u64 = 2_000;

/// A membership change's driver waits this long at most for a majority of
/// the old members and a majority of the new ones to answer its survey,
/// before anything is frozen.
pub const MEMBER_SURVEY_MS: u64 = 5_000;

/// A node frozen this long in a change without learning its end drives the
/// change to its end itself (its driver may have died).
pub const FROZEN_RESUME_MS: u64 = 10_000;

/// The longest member address a configuration may name (`host:port`).
pub const ADDRESS_BYTES_MAX: usize = 256;

/// Largest record in the acceptor log: a key's whole state plus framing.
pub const RECORD_BYTES_MAX: usize = MESSAGE_BYTES_MAX + 64;

/// Largest body of one unit of the acceptor log (the records of one sync,
/// framed): recovery refuses a longer length rather than read that much, and
/// an append that would make the pending unit longer is refused. Far above
/// what one event-loop turn appends.
pub const LOG_UNIT_BYTES_MAX: usize = 1024 * 1024 * 1024;

/// The log is compacted when it is larger than this many bytes ...
pub const COMPACT_BYTES_MIN: u64 = 4 * 1024 * 1024;
/// ... and more than this many times the size of the live state.
pub const COMPACT_RATIO: u64 = 4;

// Relations between the limits, checked at compile time.
const _: () = assert!(WATCH_HISTORY_BYTES_MAX >= VALUE_BYTES_MAX);
// A watch reply (a key, the history and the current state, with their
// overheads) fits one datagram, so a node never splits one.
const _: () = assert!(
    HEADER_BYTES_MAX
        + 256
        + KEY_BYTES_MAX
        + WATCH_HISTORY_ENCODED_BYTES_MAX
        + VALUE_BYTES_MAX
        + WATCH_PAST_STATE_OVERHEAD_BYTES_MAX
        <= DATAGRAM_BYTES_MAX
);
const _: () = assert!(WATCH_CLIENT_SILENCE_MS > WATCH_PARK_MS + 2 * WATCH_READ_MS);
const _: () = assert!(WATCH_READ_MS <= WATCH_PARK_MS && WATCH_REREAD_MS < WATCH_READ_MS);
const _: () = assert!(0 < WATCH_READS_IN_FLIGHT_MAX && WATCH_READS_IN_FLIGHT_MAX < REQUESTS_IN_FLIGHT_MAX);
// One turn's watch answers stay within 16 MiB, a datagram each at most.
const _: () =
    assert!(0 < WATCH_ANSWERS_PER_TURN_MAX && WATCH_ANSWERS_PER_TURN_MAX * DATAGRAM_BYTES_MAX <= 16 << 20);
const _: () = assert!(MESSAGE_BYTES_MAX + HEADER_BYTES_MAX <= DATAGRAM_BYTES_MAX);
const _: () = assert!(DATAGRAM_BYTES_MAX <= 65_507);
const _: () = assert!(BACKOFF_MS_MIN <= BACKOFF_MS_MAX);
const _: () = assert!(REQUEST_TIMEOUT_MS_DEFAULT <= REQUEST_TIMEOUT_MS_MAX);
const _: () = assert!(RECORD_BYTES_MAX < u32::MAX as usize);
// A unit holds at least the largest record (`storage::log` checks the exact
// relation, with the framing), and its length fits the 4-byte length field.
const _: () = assert!(RECORD_BYTES_MAX < LOG_UNIT_BYTES_MAX);
const _: () = assert!(LOG_UNIT_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(SOCKET_BUFFER_BYTES >= 16 * DATAGRAM_BYTES_MAX);
const _: () =
    assert!(0 < REQUESTS_PER_CLIENT_BEHIND_MAX && REQUESTS_PER_CLIENT_BEHIND_MAX < REQUESTS_IN_FLIGHT_MAX);
// The writes in flight at two nodes each create at most one key.
const _: () = assert!(ABSENT_PROMISES_MAX >= 2 * REQUESTS_IN_FLIGHT_MAX);
// Every source may queue its largest datagrams, and many sources at once.
const _: () = assert!(INTAKE_SOURCE_BYTES_MAX >= DATAGRAM_BYTES_MAX + INTAKE_DATAGRAM_OVERHEAD_BYTES);
const _: () = assert!(INTAKE_BYTES_MAX >= 64 * INTAKE_SOURCE_BYTES_MAX);
// A turn handles at least one full datagram's messages.
const _: () = assert!(TURN_MESSAGES_MAX >= MESSAGES_PER_DATAGRAM_MAX);
const _: () = assert!(TURN_CLIENT_MESSAGES_MAX >= MESSAGES_PER_DATAGRAM_MAX);
// A client's request costs a few votes from each peer (a query, or a
// prepare and an accept) in the next turn.
const _: () = assert!(TURN_MESSAGES_MAX >= 4 * TURN_CLIENT_MESSAGES_MAX);
const _: () = assert!(BATCH_REQUESTS_MAX <= RECENT_WRITES_MAX);
const _: () = assert!(CLIENT_MOVE_WRITE_AFTER_MS > EXCLUSIVE_WINDOW_MS);
const _: () = assert!(CLIENT_RENEW_WRITE_MS < EXCLUSIVE_WINDOW_MS);
const _: () = assert!(PHASE_RESEND_MS <= STALL_MS_MIN && STALL_MS_MIN <= STALL_MS_MAX);
const _: () = assert!((QUERY_RESENDS_MAX as u64 + 1) * PHASE_RESEND_MS < STALL_MS_MIN);
const _: () = assert!(QUERY_RESENDS_MAX <= PHASE_RESENDS_MAX);
const _: () =
    assert!(CLIENT_RTO_MS_MIN <= CLIENT_RTO_MS_INITIAL && CLIENT_RTO_MS_INITIAL <= CLIENT_RTO_MS_MAX);
const _: () = assert!(CLIENT_REPLY_MARGIN_MS < REQUEST_TIMEOUT_MS_DEFAULT);

/// A scan page (`Message::ScanPage`) holds slots until their keys and
/// states add up to this many bytes, and always at least one: with the
/// largest slot on top it still fits one datagram.
pub const SCAN_PAGE_BYTES_MAX: usize = 24 * 1024;
/// At most this many slots in one scan page.
pub const SCAN_PAGE_SLOTS_MAX: usize = 1024;
/// What a slot in a scan page takes besides its key and state: two ballots
/// (23 bytes each at most), the key's length prefix and the flag, rounded
/// up. Pages count it, so a page of many small slots stays in bounds too.
pub const SCAN_SLOT_OVERHEAD_BYTES_MAX: usize = 64;
const _: () = assert!(
    SCAN_PAGE_BYTES_MAX + MESSAGE_BYTES_MAX + SCAN_SLOT_OVERHEAD_BYTES_MAX + HEADER_BYTES_MAX
        <= DATAGRAM_BYTES_MAX
);

/// `paxosctl export` and `list` ask a node again for a scan page after
/// this long without an answer ...
pub const EXPORT_SCAN_RESEND_MS: u64 = 200;
/// ... this many times in all, then goes on without the node (which thus
/// costs the export or listing two seconds, once).
pub const EXPORT_SCAN_ATTEMPTS_MAX: u32 = 10;
// The help of `paxosctl export` and `list` and the README say two seconds.
const _: () = assert!(EXPORT_SCAN_RESEND_MS * EXPORT_SCAN_ATTEMPTS_MAX as u64 == 2_000);

/// Client sessions `paxosctl import` writes with, each on a thread of its
/// own with one request in flight: enough that 10,000 keys take seconds.
pub const IMPORT_SESSIONS: usize = 8;

/// Keys `paxosctl import` names when it found them present already (it
/// counts them all).
pub const IMPORT_EXISTING_NAMED_MAX: usize = 10;

/// A node catching up sends its scan requests again after this long
/// without an answer.
pub const REJOIN_RESEND_MS: u64 = 100;
/// A node catching up asks again for a fresh epoch this long after an
/// attempt ended without one (no majority of peers reachable).
pub const REJOIN_EPOCH_RETRY_MS: u64 = 500;
/// How long one attempt to get a fresh epoch may take.
pub const REJOIN_EPOCH_TIMEOUT_MS: u64 = 5_000;

/// The shortest and longest lease a lock may be held for per write
/// (`core::lease`). Below the minimum a renewal could not come back in
/// time on a loaded cluster; the maximum bounds how long a dead holder
/// keeps a lock.
pub const LEASE_TTL_MS_MIN: u64 = 100;
pub const LEASE_TTL_MS_MAX: u64 = 3_600_000;

/// A holder renews this many times per TTL, so that two renewals in a row
/// may fail before its lease runs out.
pub const LEASE_RENEWALS_PER_TTL: u64 = 3;

/// An acquirer waiting out another's lease reads the lock this often, to
/// notice a release (or a renewal, which restarts the wait) promptly.
pub const LEASE_POLL_MS: u64 = 100;

/// After a lease write that was not run or whose outcome is unknown, the
/// machine looks again this much later.
pub const LEASE_RETRY_MS: u64 = 50;

/// A release that keeps failing is given up after this many attempts: the
/// lease then runs out by itself.
pub const LEASE_RELEASE_ATTEMPTS_MAX: u32 = 3;

/// Send times a lease machine keeps, one per version its writes expected.
pub const LEASE_SENT_REMEMBERED_MAX: usize = 16;

const _: () = assert!(LEASE_TTL_MS_MIN / LEASE_RENEWALS_PER_TTL >= LEASE_RETRY_MS / 2);
const _: () = assert!(LEASE_TTL_MS_MIN < LEASE_TTL_MS_MAX);

/// A fenced write that keeps meeting concurrent writes of the protected
/// key gives up after this many compare-and-set attempts.
pub const FENCED_PUT_ATTEMPTS_MAX: u32 = 16;
const _: () = assert!(ROUND_LEAP_MAX < ROUND_MAX && EPOCH_LEAP_MAX < EPOCH_MAX);
const _: () = assert!(ROUND_MAX.checked_add(ROUND_LEAP_MAX + ROUND_BLOCK).is_some());
const _: () = assert!(SECRET_CHECK_MS < SECRET_GRACE_MS);
const _: () = assert!(REPLAY_WINDOW_MS > CLOCK_SKEW_MS_MAX);
