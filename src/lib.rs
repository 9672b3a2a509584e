//! paxosd: a replicated, linearizable key/value store in which every key is
//! an independent Paxos register (CASPaxos).
//!
//! Layers, top to bottom (each depends only on those below it):
//! - `driver`, `client`, `config`: the only code that touches sockets,
//!   clocks and files;
//! - `sim`: a second driver for the core, deterministic, with simulated
//!   network, disk and clients, for testing;
//! - `core`: the protocol as pure state machines (no I/O);
//! - `export`: the merge of the nodes' scans that `paxosctl export` runs,
//!   and the export file's format (no I/O);
//! - `storage`: the acceptor's append-only record log;
//! - `wire`, `change`, `types`: messages, datagram framing and value types.

pub mod auth;
pub mod bench;
pub mod bench_plot;
pub mod change;
pub mod checker;
pub mod client;
pub mod config;
pub mod core;
pub mod driver;
pub mod export;
pub mod limits;
pub mod loadgen;
pub mod lock;
pub mod members;
pub mod seed;
pub mod sim;
pub mod storage;
pub mod timeline;
pub mod torture;
pub mod torture_locks;
pub mod types;
pub mod wire;
