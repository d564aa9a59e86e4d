//! Smoothed round-trip estimates, as TCP keeps them (RFC 6298): a read
//! asks R replicas and brings in a spare when one of them takes longer than
//! its usual round trip plus four deviations, so that a slow or hung
//! replica costs a read a short delay instead of its timeout, while a
//! replica that answers as usual never doubles the work.

use std::time::Duration;

/// One peer's smoothed round trip and its mean deviation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RttEstimate {
    /// Smoothed round trip, µs (0 until the first sample).
    srtt_us: f64,
    /// Mean deviation, µs.
    rttvar_us: f64,
    samples: u64,
}

impl RttEstimate {
    /// Takes one measured round trip.
    pub fn observe(&mut self, rtt: Duration) {
        let r = rtt.as_secs_f64() * 1e6;
        if self.samples == 0 {
            self.srtt_us = r;
            self.rttvar_us = r / 2.0;
        } else {
            self.rttvar_us = 0.75 * self.rttvar_us + 0.25 * (self.srtt_us - r).abs();
            self.srtt_us = 0.875 * self.srtt_us + 0.125 * r;
        }
        self.samples = self.samples.saturating_add(1);
    }

    /// How long an answer may take before the peer counts as slow: the
    /// smoothed round trip plus four deviations, or `None` before any
    /// sample.
    pub fn slow_after(&self) -> Option<Duration> {
        (self.samples > 0)
            .then(|| Duration::from_secs_f64((self.srtt_us + 4.0 * self.rttvar_us).max(0.0) / 1e6))
    }

    /// Samples taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: f64) -> Duration {
        Duration::from_secs_f64(x / 1e3)
    }

    #[test]
    fn no_estimate_before_the_first_sample() {
        assert_eq!(RttEstimate::default().slow_after(), None);
    }

    #[test]
    fn the_first_sample_sets_three_times_the_round_trip() {
        let mut e = RttEstimate::default();
        e.observe(ms(2.0));
        // srtt 2 ms, rttvar 1 ms: 2 + 4 × 1.
        assert_eq!(e.slow_after(), Some(ms(6.0)));
    }

    #[test]
    fn steady_round_trips_tighten_the_bound_and_jitter_widens_it() {
        let mut steady = RttEstimate::default();
        for _ in 0..200 {
            steady.observe(ms(1.0));
        }
        let tight = steady.slow_after().expect("estimate");
        assert!(tight > ms(0.99) && tight < ms(1.01), "{tight:?}");
        let mut jittery = RttEstimate::default();
        for i in 0..200 {
            jittery.observe(ms(if i % 2 == 0 { 0.5 } else { 1.5 }));
        }
        let wide = jittery.slow_after().expect("estimate");
        // srtt about 1 ms, deviation about 0.5 ms: 1 + 4 × 0.5.
        assert!(wide > ms(2.5) && wide < ms(3.5), "{wide:?}");
        assert_eq!(jittery.samples(), 200);
    }

    #[test]
    fn a_peer_that_slows_down_is_followed() {
        let mut e = RttEstimate::default();
        for _ in 0..50 {
            e.observe(ms(1.0));
        }
        for _ in 0..50 {
            e.observe(ms(20.0));
        }
        let after = e.slow_after().expect("estimate");
        assert!(after > ms(19.0), "{after:?}");
    }
}
