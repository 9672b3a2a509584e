//! Acceptor storage: an append-only file of CRC-framed records, written one
//! unit (the records of one sync) at a time.
//!
//! The acceptor keeps every key's state in memory; this layer makes it
//! durable. One record holds one key's whole acceptor state, so replaying the
//! log and keeping the last record per key restores the acceptor exactly.
//! `log` has the byte layout, recovery and compaction; `identity` the marker
//! that ties a data dir to one node of one cluster.

pub mod identity;
pub mod log;

use crate::members::Membership;
use crate::types::{Ballot, Epoch, Key, RegisterState};
use serde::{Deserialize, Serialize};

/// One durable fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A key's whole acceptor state: the highest ballot promised, the ballot
    /// of the accepted state (`Ballot::ZERO` if none) and that state.
    Slot { key: Key, promised: Ballot, accepted: Ballot, state: RegisterState },
    /// The proposer may use rounds below `round_limit`. Written before a
    /// round of a new block is used, so a restart never reissues a ballot.
    RoundsReserved { round_limit: u64 },
    /// The acceptor refuses every ballot below `Ballot::floor_of(epoch)`,
    /// for every key: a node catching up after losing data fenced it here
    /// (see `core::rejoin`). The highest such record wins.
    Fence { epoch: Epoch },
    /// What follows may not be all this node once promised or accepted
    /// (its data was lost or damaged): it votes on nothing until a
    /// `CaughtUp` record follows.
    CatchingUp,
    /// The node caught up from a majority of its peers in `epoch` and votes
    /// again. What it accepted below `Ballot::floor_of(epoch)` it adopted
    /// from its peers instead of voting for it, so it never counts as its
    /// vote for those ballots (see `Acceptor::adopted_below`).
    CaughtUp { epoch: Epoch },
    /// The node's configuration and the change it takes part in (see
    /// `core::membership`). The last such record wins; without one, the
    /// node is a founding member.
    Membership(Membership),
    /// The acceptor has promised `promised` for every key it holds no slot
    /// for: the promises it dropped of keys nothing was accepted for (see
    /// `core::acceptor`). Written by compaction, which leaves their slots
    /// out; the highest such record wins. (Last in the enum: a version 3
    /// log's records decode unchanged.)
    AbsentFloor { promised: Ballot },
}

/// Proof that everything appended so far is on stable storage. Only
/// `Storage::sync` makes one, and messages that depend on state can only be
/// released with one (see `core::Ready`).
#[derive(Debug)]
pub struct Synced(pub(crate) ());

/// What the driver (real or simulated) needs from acceptor storage.
pub trait Storage {
    type Error: std::fmt::Display;
    /// Buffers a record; it is not durable until `sync` returns.
    fn append(&mut self, record: &Record) -> Result<(), Self::Error>;
    /// Makes every appended record durable (fdatasync on a real file).
    fn sync(&mut self) -> Result<Synced, Self::Error>;
}
