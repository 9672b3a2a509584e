//! Small value types shared by every layer: node ids, ballots, keys, values
//! and the register state an acceptor stores for one key.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A cluster member's id, as written in `paxosd.toml` (1, 2, 3, ...).
/// Id 0 is never a node: on the wire it marks a datagram from a client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u16);

impl NodeId {
    /// The sender id clients put in their datagram headers.
    pub const CLIENT: NodeId = NodeId(0);
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one cluster, so datagrams and data dirs of another cluster that
/// happen to reach a node are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u64);

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A configuration epoch: the most significant part of every ballot.
///
/// Epochs come from the cluster's epoch register (`core::rejoin`): each is
/// a version that register reached by a write, so every epoch handed out is
/// above every epoch handed out before it. A node that lost its data comes
/// back in a fresh epoch, and every acceptor it fences refuses ballots of
/// older epochs, so the promises the node forgot can never be completed
/// (see `core::rejoin` for the argument). Epoch 0 is the founding one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A proposal number. Ordered by epoch, then round, then node id, so two
/// proposers can never issue the same ballot, and every ballot of a later
/// epoch is above every ballot of an earlier one. `Ballot::ZERO` is below
/// every ballot a proposer issues (rounds start at 1) and means "none".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub epoch: Epoch,
    pub round: u64,
    pub node: NodeId,
}

impl Ballot {
    pub const ZERO: Ballot = Ballot { epoch: Epoch(0), round: 0, node: NodeId(0) };

    /// A ballot of the founding epoch (tests and tools).
    pub fn new(round: u64, node: NodeId) -> Ballot {
        Ballot { epoch: Epoch(0), round, node }
    }

    pub fn at(epoch: Epoch, round: u64, node: NodeId) -> Ballot {
        Ballot { epoch, round, node }
    }

    /// The lowest ballot of `epoch`: an acceptor fenced at `epoch` has
    /// promised it for every key.
    pub fn floor_of(epoch: Epoch) -> Ballot {
        Ballot { epoch, round: 0, node: NodeId(0) }
    }

    pub fn is_zero(&self) -> bool {
        *self == Ballot::ZERO
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch.0 == 0 {
            write!(f, "{}.{}", self.round, self.node)
        } else {
            write!(f, "{}:{}.{}", self.epoch, self.round, self.node)
        }
    }
}

/// A key: up to `limits::KEY_BYTES_MAX` bytes (any bytes; the CLI uses UTF-8).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key(pub Vec<u8>);

impl Key {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key(s.as_bytes().to_vec())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0))
    }
}

/// A value: up to `limits::VALUE_BYTES_MAX` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Value(pub Vec<u8>);

impl Value {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value(s.as_bytes().to_vec())
    }
}

/// How many changes have been applied to a key. Absent, never-written keys
/// are at version 0; every write (put, successful CAS, delete) adds one.
/// Reads and failed CAS write the same state back and leave it unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version(pub u64);

impl Version {
    /// The version after one more write; `None` at the end of the range,
    /// where the register refuses further writes rather than wrap.
    pub fn next(self) -> Option<Version> {
        self.0.checked_add(1).map(Version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The state of one key's register: its value (`None` when absent or
/// deleted; a delete leaves a tombstone), its version, and the write
/// requests most recently evaluated on it.
///
/// `recent` is what makes a retried write safe (see `core::proposer`): a
/// proposer that finds the request there answers from it instead of
/// applying the change a second time. It holds the newest
/// `limits::RECENT_WRITES_MAX` evaluations of write requests, newest first,
/// including compare-and-sets whose precondition failed, so that a later
/// copy of such a request reports the same failure instead of taking effect.
/// Reads leave no trace. Versions never decrease along `recent`.
///
/// `writers` names, for each node that wrote a state of this chain, the
/// ballot of the newest one (sorted by node). The ballots of the attempts
/// that wrote a chain's states strictly increase along it (a state is built
/// on one accepted at a lower ballot), so a proposer that retries after its
/// accepts left knows exactly, however long ago, whether one of its own
/// states is in the chain: its entry here names the newest one.
///
/// `history` is `None` until someone watches the key (`Change::Watch`), so
/// an unwatched key pays one byte for it. From then on every write that
/// takes effect keeps the state it replaced there, within the bounds of
/// `History`, so that a watcher who polls now and then still learns every
/// version (see `docs/watch.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegisterState {
    pub value: Option<Value>,
    pub version: Version,
    pub recent: Vec<Evaluation>,
    pub writers: Vec<Ballot>,
    pub history: Option<History>,
}

/// A state a key held once: its version and its value (`None`: absent or
/// deleted).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PastState {
    pub version: Version,
    pub value: Option<Value>,
}

impl PastState {
    /// The bytes of its value, which is what `History` bounds.
    pub fn value_bytes(&self) -> usize {
        self.value.as_ref().map_or(0, |v| v.0.len())
    }
}

/// The states a watched key held before its current one, newest first,
/// versions one apart and below the current version. At most
/// `limits::WATCH_HISTORY_VERSIONS_MAX` of them, whose values add up to at
/// most `limits::WATCH_HISTORY_BYTES_MAX` bytes: the oldest are dropped
/// first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct History {
    pub past: Vec<PastState>,
}

impl History {
    /// Keeps `replaced`, the state a write just replaced, as the newest,
    /// dropping the oldest beyond the bounds. The newest always fits: one
    /// value is at most the byte bound.
    pub fn push(&mut self, replaced: PastState) {
        self.past.insert(0, replaced);
        self.past.truncate(crate::limits::WATCH_HISTORY_VERSIONS_MAX);
        let mut bytes = 0;
        let fits = self.past.iter().take_while(|s| {
            bytes += s.value_bytes();
            bytes <= crate::limits::WATCH_HISTORY_BYTES_MAX
        });
        let keep = fits.count().max(1);
        self.past.truncate(keep);
    }

    /// The oldest version held, if any.
    pub fn oldest(&self) -> Option<Version> {
        self.past.last().map(|s| s.version)
    }

    /// Whether the history keeps its bounds and its shape below a current
    /// version `current`: what a state from a peer or a log must show.
    pub fn is_well_formed(&self, current: Version) -> bool {
        let bytes: usize = self.past.iter().map(PastState::value_bytes).sum();
        let descending = self.past.iter().zip(self.past.iter().skip(1)).all(|(a, b)| b.version < a.version);
        self.past.len() <= crate::limits::WATCH_HISTORY_VERSIONS_MAX
            && bytes <= crate::limits::WATCH_HISTORY_BYTES_MAX
            && descending
            && self.past.first().is_none_or(|s| s.version < current)
    }
}

/// How one write request fared on a register: the version of the state it
/// left (its new version if it took effect, else the version it found), and
/// whether it took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Evaluation {
    pub request: Fingerprint,
    pub version: Version,
    pub took_effect: bool,
}

impl RegisterState {
    /// How `request` fared, if it is among the writes this state remembers.
    pub fn find(&self, request: Fingerprint) -> Option<Evaluation> {
        self.recent.iter().find(|e| e.request == request).copied()
    }

    /// Whether this state still remembers every write request evaluated in
    /// its chain after the write that created version `floor`: nothing has
    /// been forgotten yet, or the oldest remembered evaluation is that write
    /// or a later one. (Evaluations at one version are the write that
    /// created it, then failed preconditions that found it; versions never
    /// decrease along the chain.)
    pub fn remembers_since(&self, floor: Version) -> bool {
        match self.recent.last() {
            Some(oldest) if self.recent.len() >= crate::limits::RECENT_WRITES_MAX => {
                oldest.version < floor || (oldest.version == floor && oldest.took_effect)
            }
            _ => true,
        }
    }

    /// Remembers `evaluation` as the newest, forgetting the oldest beyond
    /// the limit.
    pub fn remember(&mut self, evaluation: Evaluation) {
        self.recent.insert(0, evaluation);
        self.recent.truncate(crate::limits::RECENT_WRITES_MAX);
    }

    /// The ballot of the newest state of this chain that `node` wrote.
    pub fn last_written_by(&self, node: NodeId) -> Option<Ballot> {
        self.writers.iter().find(|b| b.node == node).copied()
    }

    /// Makes this state, computed from `parent`, one written by the attempt
    /// at `ballot`.
    pub fn written_by(&mut self, ballot: Ballot, parent: &RegisterState) {
        self.writers = parent.writers.iter().filter(|b| b.node != ballot.node).copied().collect();
        let at = self.writers.partition_point(|b| b.node < ballot.node);
        self.writers.insert(at, ballot);
    }
}

/// A client session: 128 random bits, so that two clients never draw the
/// same one (among a billion sessions the chance is about 10^-21).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u128);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One request of a session. A session numbers its requests 1, 2, 3, ...
/// and has one outstanding at a time, so a request tells every node it
/// reaches that the session is done with all earlier ones. Retransmissions
/// and copies sent to other nodes keep the id: it is how the cluster
/// recognises them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub session: SessionId,
    pub seq: u64,
}

impl RequestId {
    /// What a register remembers of the request: a 64-bit hash of its id.
    /// Distinct requests share one with probability 2^-64 per pair, and a
    /// register compares a request with at most `RECENT_WRITES_MAX` others.
    pub fn fingerprint(&self) -> Fingerprint {
        let low = self.session.0 as u64;
        let high = (self.session.0 >> 64) as u64;
        let h = mix(mix(mix(self.seq ^ 0x7061_786f_7364_0001) ^ high) ^ low);
        Fingerprint(h.to_le_bytes())
    }
}

/// SplitMix64's finalizer: every input bit affects every output bit. Fixed
/// forever, since fingerprints are stored in register states.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The hash of a `RequestId` that register states remember; 8 bytes on the
/// wire and on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 8]);

/// Which life of a node process a client talks to, drawn at random (never
/// 0) when the node starts and again whenever it forgets client sessions.
/// A request names the incarnation its client knows; a node that does not
/// know the request's session refuses a request naming another incarnation
/// (see `core::sessions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Incarnation(pub u64);

impl Incarnation {
    /// What a client sends before it has heard from a node: always refused,
    /// so the refusal (which names the node's incarnation) is how it learns.
    pub const UNKNOWN: Incarnation = Incarnation(0);
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Time as the core sees it: microseconds since an arbitrary origin chosen by
/// the driver (the mio driver: process start; the simulator: zero). Nodes
/// tell clients their time in replies, so that a client can say, in the
/// node's own clock, when it sent a request (see `EXCLUSIVE_WINDOW_MS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time(pub u64);

impl Time {
    pub fn from_millis(ms: u64) -> Time {
        Time(ms.saturating_mul(1000))
    }

    pub fn plus_micros(self, us: u64) -> Time {
        Time(self.0.saturating_add(us))
    }

    pub fn plus_millis(self, ms: u64) -> Time {
        self.plus_micros(ms.saturating_mul(1000))
    }

    pub fn micros_since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
