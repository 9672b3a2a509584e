//! An exhaustive model check of single-register paxos in which one node
//! may lose its state (amnesia), and of the procedure by which such a node
//! rejoins.
//!
//! # What is modeled
//!
//! A cluster of `n` nodes (three unless said otherwise, ids `1..=n`), each
//! an acceptor and a proposer of one register. It is single-decree
//! consensus: each proposer proposes its own id as its value, and the
//! property checked is that no two different values are ever chosen. A
//! value is chosen in a ballot when a majority of distinct acceptors have
//! accepted it in that ballot at some time. The state keeps every accept
//! as history, since a wiped acceptor forgets what it accepted while what
//! was chosen stays chosen.
//!
//! Ballots are (epoch, round, node), ordered in that order. An acceptor
//! holds a promised ballot, an accepted (ballot, value) if any, and a floor
//! epoch; the promise it honours is the higher of its promised ballot and
//! (floor, 0, 0). It promises a prepare of a higher ballot, replying with
//! what it accepted, and accepts a ballot at or above that promise, raising
//! its promise to it; otherwise it rejects, naming that promise. A proposer
//! prepares with a ballot just above the highest it has seen (its own, and
//! those named by rejects, so that it takes up a newer epoch it learns
//! of), and once a quorum has promised it sends accept to all with the
//! value accepted in the highest ballot among the promises, or its own.
//! A proposer may start a new attempt at any time, abandoning the last.
//!
//! The network delivers messages in any order, and may hold any message
//! forever, which is how lost messages are modeled. By default a message
//! is delivered at most once and a node handles its messages to itself in
//! the step that sends them, as paxosd does; either can be changed (a
//! network that delivers any message any number of times, and messages to
//! oneself that travel like any other).
//!
//! At most once in a run, the amnesiac node (node 3) loses its state:
//! promise, accepted value, floor, the ballots its proposer has seen and
//! its attempt in progress. What it does next is the variant.
//!
//! # The variants
//!
//! - [`Variant::Naive`]: the wiped node votes at once with its empty state.
//!   The checker finds two values chosen: the node accepts a value that is
//!   then chosen, loses it, and promises a later proposer that it accepted
//!   nothing, so that proposer picks its own value and has it chosen too.
//! - [`Variant::Rejoin`], the procedure paxosd follows: after the wipe the
//!   node votes on nothing and proposes nothing until it has rejoined. It
//!   takes a fresh epoch `E` from the epoch register, above every epoch
//!   issued before; it sends `Fence(E)` to every other node; a node that
//!   receives it raises its floor to `E` and, in the same step, so after
//!   the floor is in place, replies with a snapshot of its promise and
//!   accepted value. With snapshots from a majority of the whole cluster
//!   (distinct senders, not counting itself) the node adopts the highest
//!   promise and the value accepted in the highest ballot, sets its floor
//!   to `E`, and votes again; its own ballots are of epoch `E`, rounds from
//!   1. The checker explores every state and finds no two values chosen.
//! - [`Variant::MajorityNoFence`]: as `Rejoin`, but no node installs a
//!   floor. The wiped node can then accept a ballot below one it promised
//!   before the wipe, if no snapshot shows that promise yet. The checker
//!   finds two values chosen with three nodes when a node's messages to
//!   itself go through the network (a proposer's own promise can come after
//!   its node was snapshotted), and with five nodes in any case (the
//!   snapshot quorum, three of the four peers, can miss a node that
//!   promises later). With three nodes and loopback the snapshot quorum is
//!   both peers, each proposer promises its own ballot in the step that
//!   starts it, and within the bounds below no violation exists: there the
//!   floor is not what keeps it safe.
//!
//! # Abstractions and bounds
//!
//! - The epoch register is taken as linearizable: obtaining an epoch is one
//!   atomic step that increments a counter of epochs issued. It is written
//!   while the wiped node does not vote, so its own paxos is not modeled.
//! - One register, hence one instance of consensus.
//! - Each proposer starts a bounded number of attempts (ballots); only
//!   nodes 1 and 2 propose. The default is two attempts each, with three
//!   nodes; the tests state where they differ. A second attempt is what
//!   lets a proposer learn the new epoch from a reject and get the rejoined
//!   node's vote into a choosing quorum.
//! - One wipe per run, of node 3.
//! - Messages that can no longer change anything (a promise for an
//!   abandoned attempt, a reject naming nothing new, a prepare or accept
//!   that is refused and whose reject would be of no use to a proposer
//!   with no attempts left, a snapshot after the rejoin) are dropped. This
//!   only merges states; a test checks that it changes no verdict.
//!
//! The checks run breadth-first over the whole state space with two
//! threads (see `tests/amnesia.rs`; `cargo test --release` in this crate).
//!
//! A second model, [`reconfig`], checks single-register paxos across one
//! membership change (see its own documentation and `tests/reconfig.rs`).

pub mod model;
pub mod node;
pub mod reconfig;

pub use model::{
    AGREEMENT, Action, Envelope, Msg, Network, PaxosModel, SOME_VALUE_CHOSEN, State, Variant, Vote,
    WIPED_NODE_IN_CHOOSING_QUORUM, trace,
};
pub use node::{Acceptor, Ballot, Life, Node, NodeId, Proposer, Value};
