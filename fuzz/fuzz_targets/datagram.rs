//! Arbitrary bytes as a datagram: decoded as the driver decodes it, checked
//! as the property tests check it (what is accepted is within the limits
//! and re-encodes to the same messages), and when accepted, fed to a node
//! that has a client's write and a watch under way, whose timers then run
//! and which restarts from the records it wrote. Every record and message
//! it produces is checked (`tests/hostile/node.rs`).

#![no_main]

#[path = "../../tests/hostile/mod.rs"]
mod hostile;

use hostile::messages;
use hostile::node::{CLIENT, Harness};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // Most inputs are dropped by the decoder; a node is built only for
    // those that are not.
    let Some((header, decoded)) = messages::check_decoded(bytes) else { return };
    let mut harness = Harness::new(7, Vec::new());
    harness.warm_up();
    harness.feed_decoded(CLIENT, header, decoded);
    harness.settle(3);
    harness.restart(8);
});
