//! Probabilistically bounded staleness (Bailis et al., "Probabilistically
//! Bounded Staleness for Practical Partial Quorums", VLDB 2012): the
//! probability that a read issued `t` ms after a write was acknowledged
//! returns that write (or a newer one), for a table's N, R and W, computed
//! by Monte Carlo over measured replica latencies. Pure: the caller gives
//! the distributions and the seed.
//!
//! **The model (WARS).** A write goes to all N replicas; replica i applies
//! it `W_i` after it was sent and its acknowledgement takes `A_i` back; the
//! write is acknowledged when the W-th acknowledgement arrives, at
//! `C = W-th smallest (W_i + A_i)`. A read issued at `C + t` goes to R
//! replicas (the read coordinator's own copy when it holds one, then the
//! others in preference order, as the node asks them), reaches replica i
//! `R_i` later and its answer takes `S_i` back. The read is consistent
//! when one of those replicas had applied the write by the time the read
//! reached it: `W_i <= C + t + R_i`. So each trial has a threshold
//! `t* = max(0, min over the R replicas asked of (W_i - R_i - C))`
//! and the probability at `t` is the fraction of trials with `t* <= t`:
//! one set of trials gives the whole curve.
//!
//! **From what the nodes measure.** Coordinators measure the round trip of
//! replica writes and reads per peer; a round trip is split evenly between
//! its two directions (`W = A = rtt/2`, `R = S = rtt/2`), which keeps the
//! measured round-trip distribution exact. A replica on the coordinator
//! itself answers without a network hop ([`Rtt::local`]). Each trial picks
//! a write coordinator, a read coordinator (clients spread requests over
//! the nodes, so the two are independent) and N distinct replicas at
//! random among the measured nodes, as placement spreads keys over them. Sloppy quorums (hinted
//! handoff during failures), spares a read asks when a replica is slow,
//! and anti-entropy are not modelled: the figures describe a healthy
//! cluster.
//!
//! With R + W > N every trial is consistent at t = 0 (the read and write
//! quorums overlap), which the tests check.
//!
//! **Checked against a real cluster** (`tests/staleness.rs`: three nodes
//! behind links with a known random delay, R = W = 1, reads at set times
//! after writes): the model is conservative. A measured round trip
//! includes both nodes' own work, which the even split counts as network
//! time, so the model places each replica's write a little later than it
//! lands; on the steep part of the curve it predicts up to about 0.2 fewer
//! consistent reads than clients see, and it never promises more.

/// A latency distribution from a histogram: bucket upper bounds (ms, the
/// last may be infinite) and the number of observations in each (not
/// cumulative).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dist {
    buckets: Vec<(f64, u64)>,
    total: u64,
}

impl Dist {
    /// From per-bucket counts (bounds ascending).
    pub fn new(buckets: Vec<(f64, u64)>) -> Dist {
        let total = buckets.iter().map(|b| b.1).sum();
        Dist { buckets, total }
    }

    /// From cumulative counts, as Prometheus histograms give them.
    pub fn from_cumulative(cumulative: &[(f64, u64)]) -> Dist {
        let mut prev = 0;
        Dist::new(
            cumulative
                .iter()
                .map(|&(le, c)| {
                    let n = c.saturating_sub(prev);
                    prev = prev.max(c);
                    (le, n)
                })
                .collect(),
        )
    }

    /// A distribution that is always `ms`.
    pub fn constant(ms: f64) -> Dist {
        Dist::new(vec![(ms, 1)])
    }

    /// Observations.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Adds another histogram with the same bounds (or any, when empty).
    pub fn merge(&mut self, other: &Dist) {
        if self.buckets.is_empty() {
            *self = other.clone();
        } else if self.buckets.len() == other.buckets.len() {
            for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                a.1 += b.1;
            }
            self.total += other.total;
        }
    }

    /// A sample: a bucket chosen by its weight, then a point uniformly
    /// inside it (the overflow bucket gives its lower bound).
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let mut pick = rng.below(self.total);
        let mut lo = 0.0;
        for &(hi, n) in &self.buckets {
            if pick < n {
                if !hi.is_finite() {
                    return lo;
                }
                if self.buckets.len() == 1 {
                    return hi;
                }
                return lo + (hi - lo) * rng.unit();
            }
            pick -= n;
            lo = hi;
        }
        lo
    }
}

/// A small deterministic generator (SplitMix64): the same seed gives the
/// same figures.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }
}

/// Round trips measured from one coordinator to one replica, ms.
#[derive(Debug, Clone, Default)]
pub struct Rtt {
    /// Replica writes.
    pub write: Dist,
    /// Replica reads.
    pub read: Dist,
}

impl Rtt {
    /// A replica on the coordinator itself: no network hop.
    pub fn local() -> Rtt {
        Rtt {
            write: Dist::constant(0.0),
            read: Dist::constant(0.0),
        }
    }
}

/// The measured cluster: `rtt(coordinator, replica)` for node indexes
/// `0..nodes`, falling back to `pooled` for pairs never measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Nodes.
    pub nodes: usize,
    /// Per (coordinator, replica) pair, row-major; `None` when unmeasured.
    pub pairs: Vec<Option<Rtt>>,
    /// Every pair's measurements together.
    pub pooled: Rtt,
}

impl Measured {
    /// Every pair drawn from the same round trips (a uniform cluster).
    pub fn uniform(nodes: usize, rtt: Rtt) -> Measured {
        Measured {
            nodes,
            pairs: vec![None; nodes * nodes],
            pooled: rtt,
        }
    }

    fn rtt(&self, c: usize, r: usize) -> Rtt {
        if c == r {
            return Rtt::local();
        }
        self.pairs
            .get(c * self.nodes + r)
            .cloned()
            .flatten()
            .unwrap_or_else(|| self.pooled.clone())
    }
}

/// The simulated thresholds `t*` of `trials` writes and reads, sorted:
/// the read issued `t` ms after the write's acknowledgement is consistent
/// exactly when `t >= t*`.
pub fn thresholds(
    m: &Measured,
    n: usize,
    r: usize,
    w: usize,
    trials: usize,
    seed: u64,
) -> Vec<f64> {
    let nodes = m.nodes.max(n).max(1);
    let (r, w) = (r.clamp(1, n.max(1)), w.clamp(1, n.max(1)));
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(trials);
    let mut order: Vec<usize> = (0..nodes).collect();
    let mut wi = vec![0.0; n];
    let mut acks = vec![0.0; n];
    let mut reads: Vec<(f64, f64)> = vec![(0.0, 0.0); n];
    let mut asked: Vec<usize> = Vec::with_capacity(r);
    for _ in 0..trials {
        // Coordinators of the write and of the read, and N distinct
        // replicas (a partial shuffle).
        let cw = rng.below(nodes as u64) as usize;
        let cr = rng.below(nodes as u64) as usize;
        for i in 0..n.min(nodes) {
            let j = i + rng.below((nodes - i) as u64) as usize;
            order.swap(i, j);
        }
        let reader = cr % m.nodes.max(1);
        // The read coordinator's own copy, when it holds one.
        let mut own = None;
        for i in 0..n {
            let replica = order[i % nodes] % m.nodes.max(1);
            if replica == reader && own.is_none() {
                own = Some(i);
            }
            let wrt = m.rtt(cw % m.nodes.max(1), replica).write.sample(&mut rng);
            let rd = m.rtt(reader, replica).read.sample(&mut rng);
            wi[i] = wrt / 2.0;
            acks[i] = wrt;
            // (time the read reaches the replica, time its answer is back)
            reads[i] = (rd / 2.0, rd);
        }
        let mut sorted = acks.clone();
        sorted.sort_by(f64::total_cmp);
        let commit = sorted[w - 1];
        // The read asks R replicas: the read coordinator's own copy when
        // it holds one, then the others in preference order.
        asked.clear();
        asked.extend(own);
        asked.extend((0..n).filter(|&i| Some(i) != own).take(r - asked.len()));
        let t = asked
            .iter()
            .map(|&i| wi[i] - reads[i].0 - commit)
            .fold(f64::INFINITY, f64::min)
            .max(0.0);
        out.push(t);
    }
    out.sort_by(f64::total_cmp);
    out
}

/// The probability of a consistent read `t` ms after the write, from
/// sorted thresholds.
pub fn p_consistent(thresholds: &[f64], t: f64) -> f64 {
    if thresholds.is_empty() {
        return 1.0;
    }
    let ok = thresholds.partition_point(|x| *x <= t);
    ok as f64 / thresholds.len() as f64
}

/// The smallest `t` (ms) after which at least `p` of reads are
/// consistent, from sorted thresholds.
pub fn t_for(thresholds: &[f64], p: f64) -> f64 {
    if thresholds.is_empty() {
        return 0.0;
    }
    let i = ((p * thresholds.len() as f64).ceil() as usize).clamp(1, thresholds.len()) - 1;
    thresholds[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(lo: f64, hi: f64) -> Dist {
        // An even spread between lo and hi ms, in 10 buckets.
        let step = (hi - lo) / 10.0;
        let mut b = vec![(lo, 0)];
        b.extend((1..=10).map(|i| (lo + step * f64::from(i), 100)));
        Dist::new(b)
    }

    fn cluster(write: Dist, read: Dist) -> Measured {
        Measured::uniform(5, Rtt { write, read })
    }

    #[test]
    fn overlapping_quorums_are_always_consistent() {
        let m = cluster(spread(1.0, 50.0), spread(1.0, 5.0));
        for (n, r, w) in [(3, 2, 2), (3, 1, 3), (3, 3, 1), (5, 3, 3), (1, 1, 1)] {
            let th = thresholds(&m, n, r, w, 5_000, 7);
            assert_eq!(p_consistent(&th, 0.0), 1.0, "N={n} R={r} W={w}");
        }
    }

    #[test]
    fn partial_quorums_are_stale_at_first_then_converge() {
        // Slow writes, fast reads: R=W=1 often reads a replica the write
        // has not reached yet.
        let m = cluster(spread(10.0, 100.0), spread(0.5, 1.0));
        let th = thresholds(&m, 3, 1, 1, 20_000, 11);
        let at0 = p_consistent(&th, 0.0);
        assert!(at0 < 0.9, "stale reads right after the write: {at0}");
        assert!(p_consistent(&th, 10.0) > at0);
        assert_eq!(
            p_consistent(&th, 100.0),
            1.0,
            "every write has arrived by then"
        );
        // The curve never goes down.
        let mut last = 0.0;
        for t in 0..120 {
            let p = p_consistent(&th, f64::from(t));
            assert!(p >= last);
            last = p;
        }
        // A larger R is never worse.
        let th2 = thresholds(&m, 3, 2, 1, 20_000, 11);
        assert!(p_consistent(&th2, 0.0) > at0);
    }

    #[test]
    fn same_seed_same_figures() {
        let m = cluster(spread(1.0, 9.0), spread(1.0, 3.0));
        assert_eq!(
            thresholds(&m, 3, 1, 1, 1000, 3),
            thresholds(&m, 3, 1, 1, 1000, 3)
        );
        assert_ne!(
            thresholds(&m, 3, 1, 1, 1000, 3),
            thresholds(&m, 3, 1, 1, 1000, 4)
        );
    }

    #[test]
    fn the_threshold_matches_a_hand_worked_case() {
        // Two nodes, both replicas (N = 2, R = W = 1); remote writes take
        // 100 ms round trip (applied at 50 ms), reads 2 ms; local ones are
        // instant. When one node coordinates both, its local copy serves
        // the read: consistent at once. When they differ, the write is
        // acknowledged at 0 by its coordinator's copy, and the read is
        // served at once by the other node's copy, which the write reaches
        // at 50 ms: stale for 50 ms. Each case is half of the trials.
        let m = Measured::uniform(
            2,
            Rtt {
                write: Dist::constant(100.0),
                read: Dist::constant(2.0),
            },
        );
        let th = thresholds(&m, 2, 1, 1, 20_000, 9);
        let before = p_consistent(&th, 49.9);
        assert!((before - 0.5).abs() < 0.02, "{before}");
        assert_eq!(p_consistent(&th, 50.0), 1.0);
        assert_eq!(t_for(&th, 0.999), 50.0);
    }

    #[test]
    fn histogram_sampling_stays_in_buckets() {
        let d = Dist::from_cumulative(&[(1.0, 0), (2.0, 10), (4.0, 10), (f64::INFINITY, 10)]);
        assert_eq!(d.count(), 10);
        let mut rng = Rng::new(5);
        for _ in 0..1000 {
            let x = d.sample(&mut rng);
            assert!((1.0..=2.0).contains(&x), "{x}");
        }
        assert_eq!(Dist::default().sample(&mut rng), 0.0);
        let mut m = Dist::default();
        m.merge(&d);
        m.merge(&d);
        assert_eq!(m.count(), 20);
    }

    #[test]
    fn quantile_of_thresholds() {
        let th = vec![0.0, 0.0, 1.0, 5.0];
        assert_eq!(t_for(&th, 0.5), 0.0);
        assert_eq!(t_for(&th, 0.75), 1.0);
        assert_eq!(t_for(&th, 0.999), 5.0);
        assert_eq!(p_consistent(&th, 1.0), 0.75);
    }
}
