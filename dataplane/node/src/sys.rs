//! The node's edges to the operating system's clock and randomness, in one
//! place, so that a deterministic simulation can later replace them.

use std::hash::{BuildHasher, Hasher};

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random 64-bit number from the OS-seeded hasher keys (no extra crate).
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(wall_ms());
    h.finish()
}
