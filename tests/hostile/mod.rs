//! Hostile input for the datagram decoder, the node behind it and the log
//! recovery reader: generators of valid messages and logs, the damage done
//! to them, and the checks every outcome must pass.
//!
//! Shared by the property tests (`tests/hostile_input.rs`) and the cargo
//! fuzz targets (`fuzz/fuzz_targets/*.rs`, which include this directory by
//! path), so a case the fuzzer finds is checked exactly as the tests check
//! theirs. Only the crate's public API is used.

#![allow(dead_code)]

pub mod logs;
pub mod messages;
pub mod node;
