//! Every constant of the load generator, in one place.

/// Clients sharing one gRPC connection (HTTP/2 streams over one TCP
/// connection), at most. Enough connections that one connection's framing
/// and its buffer task never set the pace; few enough that etcd is measured
/// on requests, not on connection count.
pub const CLIENTS_PER_CONNECTION_MAX: usize = 16;

/// Most clients one run may have: every client is a task with a histogram
/// of its own (about 30 KiB).
pub const CLIENTS_MAX: usize = 4096;

/// Most worker threads of the runtime.
pub const THREADS_MAX: usize = 256;

/// Keys each client may cycle over.
pub const KEYS_PER_CLIENT_MAX: usize = 100_000;

/// Largest value, in bytes: under etcd's default request limit of 1.5 MiB
/// (`--max-request-bytes`), with room for the key and the framing.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Longest timed part and longest warm-up of a run, in seconds.
pub const DURATION_S_MAX: u64 = 24 * 3600;

/// How long one request may take before it counts as an error: paxosd's
/// default client timeout (`timeout_ms` in paxosd.toml), so both sides give
/// up at the same point.
pub const REQUEST_TIMEOUT_MS: u64 = 5000;

/// How long opening one connection may take before the run fails.
pub const CONNECT_TIMEOUT_MS: u64 = 3000;

/// A client's pause after an error. Without it a client whose connection is
/// refused would spin, taking the CPU the servers need.
pub const ERROR_PAUSE_MS: u64 = 10;

/// Latency histogram bounds, as in `paxosctl bench`: 1 µs to 100 s, three
/// significant digits, so the tail is exact to 0.1%.
pub const LATENCY_US_MIN: u64 = 1;
pub const LATENCY_US_MAX: u64 = 100_000_000;
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

const _: () = assert!(CLIENTS_PER_CONNECTION_MAX >= 1);
const _: () = assert!(LATENCY_US_MAX / 1000 > REQUEST_TIMEOUT_MS, "a timed-out request's latency must fit");
