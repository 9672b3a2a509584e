//! Arbitrary bytes as an acceptor log: recovered, and what recovery accepts
//! checked for consistency (`tests/hostile/logs.rs`: the valid prefix and
//! the torn tail make up the bytes, and the valid prefix alone recovers to
//! the same records). The records are then handed to a node, as the
//! driver hands them over at start.

#![no_main]

#[path = "../../tests/hostile/mod.rs"]
mod hostile;

use hostile::logs;
use hostile::node::Harness;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(recovered) = logs::check_recovery(bytes) else { return };
    let mut harness = Harness::new(7, recovered.records);
    harness.settle(2);
});
