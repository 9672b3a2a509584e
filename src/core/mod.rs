//! The protocol as pure state machines: no sockets, no files, no clock, no
//! global randomness. The same code runs under the mio driver and under the
//! deterministic simulator.
//!
//! A driver uses a `Node` like this, one turn at a time:
//! 1. restore: `Node::new(id, members, records_from_the_log, seed)`;
//! 2. feed inputs with the current time: `handle_message(now, from, msg)`
//!    for each peer message, `handle_request(now, handle, key, change,
//!    timeout_ms)` for each client request, `handle_timeout(now)` when
//!    `next_deadline()` has passed;
//! 3. `take_ready()`: append `ready.records` to storage, sync once (group
//!    commit), then `ready.release(synced)` and send what it returns
//!    (`Envelope::Peer` to nodes, `Envelope::Client` to clients);
//! 4. wait for input until `next_deadline()`.
//!
//! Step 3's order is enforced by types: the messages of a `Ready` can only be
//! had with the `Synced` proof that `Storage::sync` returns.

pub mod acceptor;
pub mod backoff;
pub mod clients;
pub mod node;
pub mod proposer;
pub mod quorum;
pub mod rng;
#[cfg(test)]
mod tests;

pub use node::{Envelope, Node, Ready};
pub use proposer::ReqHandle;

/// Deliberate protocol bugs, compiled only with the `planted-bugs` feature,
/// so tests can show that the simulator and the checker catch them.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// The acceptor accepts at ballots below its promise.
    pub accept_below_promise: bool,
    /// The proposer builds on the first promise it gets (its own
    /// acceptor's), ignoring the highest accepted state of the others.
    pub ignore_accepted_state: bool,
    /// The driver sends replies before syncing the records they depend on.
    pub reply_before_sync: bool,
}
