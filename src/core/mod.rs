//! The protocol as pure state machines: no sockets, no files, no clock, no
//! global randomness. The same code runs under the mio driver, the blocking
//! client, the load generator and the deterministic simulator.
//!
//! A driver uses a `Node` like this, one turn at a time:
//! 1. restore: `Node::new(NodeSetup { records_from_the_log, seed, now, .. })`;
//! 2. feed inputs with the current time: `handle_peer(now, from, msg)` for
//!    each message from a peer, `handle_client(now, addr, msg)` for each
//!    message from a client, `handle_timeout(now)` when `next_deadline()`
//!    has passed;
//! 3. `take_ready()`: append `ready.records` to storage, sync once (group
//!    commit), then `ready.release(synced)` and send what it returns
//!    (`Envelope::Peer` to nodes, `Envelope::Client` to clients);
//! 4. wait for input until `next_deadline()`.
//!
//! A driver reading a socket shared by every sender keeps what it read in
//! an `intake::Intake` and feeds step 2 from it, one sender's datagram in
//! turn, at most `limits::TURN_MESSAGES_MAX` messages per turn.
//!
//! Step 3's order is enforced by types: the messages of a `Ready` can only be
//! had with the `Synced` proof that `Storage::sync` returns.
//!
//! A client drives a `client::ClientMachine` the same way: `start` an
//! operation, feed it `handle_message` and `handle_timeout`, send what
//! `poll_transmit` returns, sleep until `poll_timeout`, and take the
//! operation's `Ending` from `poll_ending`. A watching client drives a
//! `watch::WatchMachine` the same way, taking versions from `poll_event`.

pub mod acceptor;
pub mod backoff;
pub mod client;
pub mod intake;
pub mod lease;
pub mod membership;
pub mod node;
pub mod proposer;
pub mod quorum;
pub mod reconfig;
pub mod rejoin;
pub mod rng;
pub mod sessions;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_guard;
#[cfg(test)]
mod tests_lease;
#[cfg(test)]
mod tests_membership;
#[cfg(test)]
mod tests_rejoin;
pub mod watch;
pub mod watches;

pub use node::{ClientLimits, Envelope, Node, NodeSetup, Ready};
pub use proposer::ReqHandle;

/// Deliberate bugs, switched on only in builds with the `planted-bugs`
/// feature, so tests can show that the simulator and the checkers catch
/// them. Without the feature nothing can set them and every one is off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// The acceptor accepts at ballots below its promise.
    pub accept_below_promise: bool,
    /// The proposer builds on the first promise it gets (its own
    /// acceptor's), ignoring the highest accepted state of the others.
    pub ignore_accepted_state: bool,
    /// The driver sends replies before syncing the records they depend on.
    pub reply_before_sync: bool,
    /// A request the client sent to another node too is evaluated without
    /// looking for it among the key's remembered writes: a retried request
    /// is applied twice when it moves to another node.
    pub reapply_resent: bool,
    /// The acceptor's log records leave out the key's remembered writes, so
    /// a node forgets them when it restarts: dedupe forgotten across a
    /// restart.
    pub log_forgets_recent: bool,
    /// An "overloaded" refusal is not remembered for the session, so a
    /// later copy of the refused request runs after all: a "not run" answer
    /// that does not stay true.
    pub forget_refusals: bool,
    /// An acceptor that drops a promise of a key nothing was accepted for
    /// (to bound their number) does not widen it to every key without a
    /// slot: the key's promise goes down, and a lower ballot is accepted.
    pub forget_dropped_promises: bool,
    /// After an accept without a prepare is refused (another proposer came
    /// by), the node goes on sending accepts without a prepare, at a fresh
    /// ballot, built on what its own acceptor holds: updates chosen through
    /// the other proposer are lost.
    pub fast_path_after_conflict: bool,
    /// A read in one round takes the first answer to its query (its own
    /// acceptor's) instead of waiting for a majority to agree: stale reads.
    pub read_from_one_acceptor: bool,
    /// A node that lost its data votes at once with what it has left,
    /// instead of catching up first: it may break promises it forgot.
    pub vote_while_catching_up: bool,
    /// A membership change installs its configuration right after the
    /// scan, without seeding the new members: what the old ones chose may
    /// be missing from every quorum of the new ones.
    pub install_before_seed: bool,
    /// A lease machine takes a held lock as soon as it sees it, without
    /// waiting for the holder's lease to run out: two holders at once.
    pub lease_take_without_waiting: bool,
    /// A holder counts its lease from the answer that its write took
    /// effect instead of from the write's send: a slow answer stretches
    /// its lease past the moment an acquirer may take the lock.
    pub lease_counted_from_answer: bool,
}
