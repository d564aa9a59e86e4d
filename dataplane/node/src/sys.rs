//! The node's edges to the operating system's clock, randomness and
//! blocking threads, in one place, so that a deterministic simulation can
//! replace them.
//!
//! A simulation runs every node on one single-threaded tokio runtime with
//! paused time, and calls [`simulate`] on that thread first. From then on,
//! on that thread only: the wall clock is the simulation's epoch plus the
//! runtime's (virtual) elapsed time plus the calling node's skew;
//! randomness comes from the seeded generator; and [`blocking`] work runs
//! as an ordinary task instead of on tokio's blocking threads (which would
//! run outside virtual time). Production never calls [`simulate`]: each of
//! these is then one thread-local read away from the real thing.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};

/// The simulated clock and randomness of this thread.
#[derive(Debug)]
struct Sim {
    /// Wall-clock ms at `start`.
    epoch_ms: u64,
    /// The runtime instant the simulation began.
    start: tokio::time::Instant,
    /// SplitMix64 state.
    rng: u64,
}

thread_local! {
    static SIM: RefCell<Option<Sim>> = const { RefCell::new(None) };
}

tokio::task_local! {
    /// The clock skew of the node whose code is running, in ms (simulation
    /// only; set around each simulated node's tasks).
    pub static SKEW_MS: i64;
}

/// Makes this thread a simulation: wall clock `epoch_ms` now (in the
/// runtime's time), randomness seeded with `seed`. Call it from inside the
/// simulation's runtime, before any node starts.
pub fn simulate(epoch_ms: u64, seed: u64) {
    SIM.with(|s| {
        *s.borrow_mut() = Some(Sim {
            epoch_ms,
            start: tokio::time::Instant::now(),
            rng: seed,
        })
    });
}

/// Ends the simulation on this thread.
pub fn end_simulation() {
    SIM.with(|s| *s.borrow_mut() = None);
}

/// Whether this thread runs a simulation.
pub fn simulated() -> bool {
    SIM.with(|s| s.borrow().is_some())
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    let simulated = SIM.with(|s| {
        s.borrow().as_ref().map(|sim| {
            let elapsed = sim.start.elapsed().as_millis() as u64;
            let skew = SKEW_MS.try_with(|k| *k).unwrap_or(0);
            (sim.epoch_ms + elapsed).saturating_add_signed(skew)
        })
    });
    simulated.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

/// A random 64-bit number: from the OS-seeded hasher keys (no extra
/// crate), or the simulation's seeded generator.
pub fn random_u64() -> u64 {
    let simulated = SIM.with(|s| {
        s.borrow_mut().as_mut().map(|sim| {
            sim.rng = sim.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sim.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    });
    simulated.unwrap_or_else(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(wall_ms());
        h.finish()
    })
}

/// Runs blocking work (storage scans, fsyncs) off the async threads: on
/// tokio's blocking pool, or in a simulation as an ordinary task of its
/// single thread, so that it happens in virtual time and in a
/// reproducible order.
pub fn blocking<T, F>(f: F) -> tokio::task::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if simulated() {
        tokio::task::spawn(async move { f() })
    } else {
        tokio::task::spawn_blocking(f)
    }
}

/// Locks a mutex, taking over a poisoned one: every mutex in the node
/// guards state that stays consistent between statements (a panicking
/// holder leaves nothing half-written), so the data is still good.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
