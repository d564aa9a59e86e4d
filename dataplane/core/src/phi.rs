//! The φ-accrual failure detector (Hayashibara et al., 2004).
//!
//! Instead of a yes/no verdict, the detector gives a suspicion level φ: the
//! negative log10 of the probability that a heartbeat arrives this late,
//! assuming inter-arrival times follow a normal distribution fitted to the
//! recent ones. φ = 8 (Cassandra's default threshold) means the chance that
//! the peer is alive and merely late is about one in 10^8.
//!
//! To stay stable when heartbeats are very regular, the standard deviation
//! has a floor (`min_std_dev`), and an `acceptable_pause` is added to the
//! mean, as in Akka's implementation. Time is passed in as milliseconds; the
//! detector reads no clock.

use std::collections::VecDeque;

/// Tuning of a [`PhiDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiConfig {
    /// φ at or above which the peer is suspected. Default 8.
    pub threshold: f64,
    /// Inter-arrival samples kept. Default 200.
    pub window: usize,
    /// Floor on the standard deviation, in ms. Default 100.
    pub min_std_dev_ms: f64,
    /// Extra delay tolerated on top of the mean, in ms. Default 0.
    pub acceptable_pause_ms: f64,
    /// The interval assumed before any sample exists, in ms. Default 1000.
    pub first_interval_ms: f64,
}

impl Default for PhiConfig {
    fn default() -> Self {
        PhiConfig {
            threshold: 8.0,
            window: 200,
            min_std_dev_ms: 100.0,
            acceptable_pause_ms: 0.0,
            first_interval_ms: 1000.0,
        }
    }
}

/// Tracks heartbeats from one peer.
#[derive(Debug, Clone)]
pub struct PhiDetector {
    config: PhiConfig,
    intervals: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    last: Option<u64>,
}

impl PhiDetector {
    /// A detector that has heard nothing yet.
    pub fn new(config: PhiConfig) -> Self {
        PhiDetector {
            config,
            intervals: VecDeque::new(),
            sum: 0.0,
            sum_sq: 0.0,
            last: None,
        }
    }

    /// Records a heartbeat received at `now_ms`.
    pub fn heartbeat(&mut self, now_ms: u64) {
        match self.last {
            None => {
                // Seed the statistics with the expected interval so that the
                // first real gap is judged against something sensible.
                let first = self.config.first_interval_ms;
                let sd = first / 4.0;
                self.push(first - sd);
                self.push(first + sd);
            }
            Some(last) if now_ms > last => self.push((now_ms - last) as f64),
            Some(_) => {}
        }
        self.last = Some(self.last.map_or(now_ms, |l| l.max(now_ms)));
    }

    fn push(&mut self, interval: f64) {
        if self.intervals.len() >= self.config.window.max(1)
            && let Some(old) = self.intervals.pop_front()
        {
            self.sum -= old;
            self.sum_sq -= old * old;
        }
        self.intervals.push_back(interval);
        self.sum += interval;
        self.sum_sq += interval * interval;
    }

    /// The suspicion level at `now_ms`; 0 before the first heartbeat.
    pub fn phi(&self, now_ms: u64) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let n = self.intervals.len().max(1) as f64;
        let mean = self.sum / n + self.config.acceptable_pause_ms;
        let variance = (self.sum_sq / n - (self.sum / n).powi(2)).max(0.0);
        let sd = variance.sqrt().max(self.config.min_std_dev_ms);
        let elapsed = now_ms.saturating_sub(last) as f64;
        let y = (elapsed - mean) / sd;
        // Logistic approximation of the normal CDF's upper tail.
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        let p_later = if elapsed > mean {
            e / (1.0 + e)
        } else {
            1.0 - 1.0 / (1.0 + e)
        };
        -p_later.max(f64::MIN_POSITIVE).log10()
    }

    /// True when φ has reached the threshold.
    pub fn is_suspect(&self, now_ms: u64) -> bool {
        self.phi(now_ms) >= self.config.threshold
    }

    /// Time of the last heartbeat.
    pub fn last_heartbeat(&self) -> Option<u64> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds heartbeats at the given gaps and returns the detector and the
    /// time of the last heartbeat.
    fn feed(gaps: impl IntoIterator<Item = u64>) -> (PhiDetector, u64) {
        let mut d = PhiDetector::new(PhiConfig::default());
        let mut t = 10_000;
        d.heartbeat(t);
        for g in gaps {
            t += g;
            d.heartbeat(t);
        }
        (d, t)
    }

    /// First time after the last heartbeat at which the peer is suspected.
    fn time_to_suspect(d: &PhiDetector, last: u64) -> u64 {
        (0..120_000)
            .step_by(10)
            .find(|&dt| d.is_suspect(last + dt))
            .expect("suspected eventually")
    }

    #[test]
    fn steady_heartbeats_keep_phi_low_and_a_stop_is_suspected_within_seconds() {
        let (d, last) = feed(std::iter::repeat_n(1000, 100));
        assert!(
            d.phi(last + 1000) < 1.0,
            "on-time heartbeat: φ={}",
            d.phi(last + 1000)
        );
        assert!(!d.is_suspect(last + 1200));
        let t = time_to_suspect(&d, last);
        println!("steady 1s heartbeats: suspected {t} ms after the last one");
        assert!((1300..=3000).contains(&t), "suspected after {t} ms");
    }

    #[test]
    fn phi_grows_monotonically_after_heartbeats_stop() {
        let (d, last) = feed(std::iter::repeat_n(1000, 50));
        let phis: Vec<f64> = (0..40).map(|i| d.phi(last + i * 250)).collect();
        assert!(phis.windows(2).all(|w| w[1] >= w[0]), "{phis:?}");
        assert!(phis[39] > 8.0);
    }

    #[test]
    fn jittery_heartbeats_earn_more_patience() {
        // Deterministic jitter between 500 and 1500 ms.
        let jitter = (0..200u64).map(|i| 500 + (i * 7919 % 1001));
        let (jittery, last_j) = feed(jitter);
        let (steady, last_s) = feed(std::iter::repeat_n(1000, 200));
        let tj = time_to_suspect(&jittery, last_j);
        let ts = time_to_suspect(&steady, last_s);
        println!("jittery: suspected after {tj} ms; steady: after {ts} ms");
        assert!(tj > ts);
        // A late-but-plausible gap under jitter is not suspected.
        assert!(!jittery.is_suspect(last_j + 1600));
    }

    #[test]
    fn silent_peer_has_zero_phi_and_first_gap_uses_the_estimate() {
        let d = PhiDetector::new(PhiConfig::default());
        assert_eq!(d.phi(1_000_000), 0.0);
        let (d, last) = feed([]);
        assert!(!d.is_suspect(last + 1000));
        assert!(d.is_suspect(last + 10_000));
    }

    #[test]
    fn threshold_is_configurable_and_window_is_bounded() {
        let mut d = PhiDetector::new(PhiConfig {
            threshold: 1.0,
            window: 5,
            ..PhiConfig::default()
        });
        for i in 0..100 {
            d.heartbeat(i * 1000);
        }
        assert_eq!(d.intervals.len(), 5);
        assert!(d.is_suspect(99_000 + 1300));
        assert!(!d.is_suspect(99_000 + 900));
    }
}
