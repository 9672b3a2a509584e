//! paxosd: a replicated, linearizable key/value store in which every key is
//! an independent Paxos register (CASPaxos).
//!
//! Layers, top to bottom (each depends only on those below it):
//! - `driver`, `client`, `config`: the only code that touches sockets,
//!   clocks and files;
//! - `core`: the protocol as pure state machines (no I/O);
//! - `storage`: the acceptor's append-only record log;
//! - `wire`: messages and datagram framing.

pub mod checker;
pub mod limits;
pub mod storage;
pub mod types;
