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

/// A proposal number. Ordered by round first, then by node id, so two
/// proposers can never issue the same ballot. `Ballot::ZERO` is below every
/// ballot a proposer issues (rounds start at 1) and means "none".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u64,
    pub node: NodeId,
}

impl Ballot {
    pub const ZERO: Ballot = Ballot { round: 0, node: NodeId(0) };

    pub fn new(round: u64, node: NodeId) -> Ballot {
        Ballot { round, node }
    }

    pub fn is_zero(&self) -> bool {
        *self == Ballot::ZERO
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node)
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

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The state of one key's register: its value (`None` when absent or
/// deleted; a delete leaves a tombstone), its version, and the ballot of the
/// proposal attempt that wrote it (`Ballot::ZERO` for the initial state).
///
/// `origin` and `lineage` (the states this one descends from, newest first,
/// at most `limits::LINEAGE_ORIGINS_MAX`) let a proposer whose attempt was
/// interrupted after sending accepts find out, when it retries, whether its
/// state is in the chain, so a change is never applied twice (see
/// `core::proposer`). Ballots are never reused, so an origin names exactly
/// one attempt, and an attempt writes one state per key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegisterState {
    pub value: Option<Value>,
    pub version: Version,
    pub origin: Ballot,
    pub lineage: Vec<Ancestor>,
}

/// A state of a register's chain, named by the attempt that wrote it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ancestor {
    pub origin: Ballot,
    pub version: Version,
}

impl RegisterState {
    /// Whether the state written by attempt `origin` at `version` is this
    /// state or one of its ancestors: `None` when the lineage does not reach
    /// back far enough to tell. Versions strictly grow along a chain, so the
    /// chain holds at most one state per version.
    pub fn descends_from(&self, origin: Ballot, version: Version) -> Option<bool> {
        let me = Ancestor { origin: self.origin, version: self.version };
        for step in std::iter::once(&me).chain(self.lineage.iter()) {
            if step.version == version {
                return Some(step.origin == origin);
            }
            if step.version < version {
                return Some(false);
            }
        }
        // Past the oldest ancestor: only the initial state lies beyond a
        // lineage that is not full.
        if self.lineage.len() < crate::limits::LINEAGE_ORIGINS_MAX { Some(false) } else { None }
    }

    /// This state's lineage extended by `parent`, for a state written on top
    /// of it.
    pub fn lineage_after(parent: &RegisterState) -> Vec<Ancestor> {
        let mut lineage = Vec::with_capacity(crate::limits::LINEAGE_ORIGINS_MAX);
        lineage.push(Ancestor { origin: parent.origin, version: parent.version });
        lineage.extend(parent.lineage.iter().take(crate::limits::LINEAGE_ORIGINS_MAX - 1));
        lineage
    }
}

/// A client's id for one request; retransmissions reuse it so a node can
/// recognise them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Time as the core sees it: microseconds since an arbitrary origin chosen by
/// the driver (the mio driver: process start; the simulator: zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
