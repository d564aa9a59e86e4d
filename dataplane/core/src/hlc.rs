//! Hybrid logical clocks: wall-clock milliseconds with a logical counter, so
//! that timestamps follow causality even when wall clocks are a little off.
//!
//! The core reads no clock: the driver passes the wall time in.

/// A hybrid timestamp: milliseconds since the Unix epoch in the upper 48 bits,
/// a logical counter in the lower 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(pub u64);

const LOGICAL_BITS: u32 = 16;

impl Hlc {
    /// The timestamp for a wall time, with logical counter zero.
    pub fn from_millis(ms: u64) -> Hlc {
        Hlc(ms << LOGICAL_BITS)
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The smallest timestamp after this one.
    pub fn successor(self) -> Hlc {
        Hlc(self.0.saturating_add(1))
    }
}

/// The clock state of one node.
#[derive(Debug, Clone, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A timestamp for a local event at wall time `wall_ms`: later than every
    /// timestamp this clock has issued or observed.
    pub fn now(&mut self, wall_ms: u64) -> Hlc {
        let t = Hlc::from_millis(wall_ms).max(self.last.successor());
        self.last = t;
        t
    }

    /// Take note of a timestamp seen from elsewhere.
    pub fn observe(&mut self, seen: Hlc) {
        self.last = self.last.max(seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_when_wall_time_goes_back() {
        let mut c = HlcClock::default();
        let a = c.now(1_000);
        let b = c.now(900);
        assert!(b > a);
        assert_eq!(b.millis(), 1_000);
        c.observe(Hlc::from_millis(5_000));
        assert!(c.now(1_000) > Hlc::from_millis(5_000));
    }
}
