//! Randomness from the operating system, for what must differ between
//! processes: node incarnations and jitter, client session ids. The core
//! never calls this; drivers pass what it returns in.

use crate::types::SessionId;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A seed different for every call in every process: the standard
/// library's per-process random hasher keys, the process id, the wall
/// clock and a counter.
pub fn os_seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// A fresh client session id: 128 random bits.
pub fn session_id() -> SessionId {
    SessionId((u128::from(os_seed()) << 64) | u128::from(os_seed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_and_sessions_differ_between_calls() {
        assert_ne!(os_seed(), os_seed());
        assert_ne!(session_id(), session_id());
    }
}
