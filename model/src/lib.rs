//! (doc to come)

pub mod model;
pub mod node;

pub use model::{Action, Envelope, Msg, Network, PaxosModel, State, Variant, Vote};
pub use node::{Acceptor, Ballot, Life, Node, NodeId, Proposer, Value};
