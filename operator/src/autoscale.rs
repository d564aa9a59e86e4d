//! Scaling by load: how many nodes a cluster should have, as a pure
//! function of its load, its size, its `autoscale` spec, the time, and
//! what the autoscaler remembers from earlier passes.
//!
//! **Targets.** Each configured target (operations per second per node,
//! stored bytes per node) asks for `ceil(load / target)` nodes. The
//! cluster grows when some load is over 110% of what its nodes are
//! meant to carry, to the largest count asked for; it shrinks when every
//! load would stay under 90% of the target on fewer nodes, to the
//! smallest count that keeps that headroom. Between the two the size is
//! left alone (hysteresis): after any decision, a steady load asks for
//! no further change, so the autoscaler never flaps on a constant load.
//!
//! **Time.** A recommendation is acted on only once it has held for the
//! stabilisation window (a spike shorter than the window changes
//! nothing), and then at its least aggressive value over the window (the
//! smallest growth, the smallest shrink). After a decision, no other for
//! another window (the cool-down), so that the change and its handoff
//! finish and the load settles first.
//!
//! The result is clamped to `[min, max]`; `decide` further keeps it at or
//! above the largest table's N.

use k8s_openapi::jiff::Timestamp;

/// What the autoscaler aims for.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Fewest nodes.
    pub min: u32,
    /// Most nodes.
    pub max: u32,
    /// Operations per second per node.
    pub ops_per_sec_per_node: Option<f64>,
    /// Stored bytes per node.
    pub bytes_per_node: Option<f64>,
    /// Seconds a recommendation must hold, and the cool-down after a
    /// decision.
    pub window_secs: u64,
}

/// The cluster's load, summed over its nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Client operations per second, when measured (it takes two samples).
    pub ops_per_sec: Option<f64>,
    /// Bytes stored.
    pub bytes: f64,
}

/// What the autoscaler remembers between passes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Memory {
    /// A recommendation that differs from the size: its direction's least
    /// aggressive value so far, and since when it has held.
    pending: Option<(u32, Timestamp)>,
    /// When the last decision was made.
    last_decision: Option<Timestamp>,
}

/// One pass's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What the load asks for now.
    pub recommendation: u32,
    /// Scale to this many nodes now.
    pub decision: Option<u32>,
    /// Why, for the status and the Event.
    pub reason: String,
}

/// Headroom bands around the target.
const GROW_ABOVE: f64 = 1.1;
const SHRINK_BELOW: f64 = 0.9;

/// The load's recommendation for a cluster of `size` nodes, before time
/// and clamping: `size` when inside the band.
pub fn recommend(policy: &Policy, size: u32, load: &Load) -> u32 {
    let metrics: Vec<(f64, f64)> = [
        load.ops_per_sec.zip(policy.ops_per_sec_per_node),
        policy.bytes_per_node.map(|t| (load.bytes, t)),
    ]
    .into_iter()
    .flatten()
    .filter(|(_, target)| *target > 0.0)
    .collect();
    if metrics.is_empty() {
        return size;
    }
    let nodes = |load: f64, per_node: f64| (load / per_node).ceil().max(1.0) as u32;
    let size_f = f64::from(size.max(1));
    if metrics.iter().any(|(l, t)| *l > GROW_ABOVE * size_f * t) {
        return metrics
            .iter()
            .map(|(l, t)| nodes(*l, *t))
            .max()
            .unwrap_or(size)
            .max(size);
    }
    let keep = metrics
        .iter()
        .map(|(l, t)| nodes(*l, SHRINK_BELOW * t))
        .max()
        .unwrap_or(size);
    keep.min(size)
}

/// One pass: the recommendation and, when it has held long enough and no
/// decision is cooling down, the decision.
pub fn step(
    policy: &Policy,
    size: u32,
    load: &Load,
    memory: &mut Memory,
    now: Timestamp,
) -> Verdict {
    let lo = policy.min.max(1);
    let hi = policy.max.max(lo);
    let raw = recommend(policy, size, load);
    let recommendation = raw.clamp(lo, hi);
    let window = policy.window_secs as i64;
    let held = |since: Timestamp| now.as_second() - since.as_second();
    let describe = |n: u32| {
        let mut parts = Vec::new();
        if let (Some(ops), Some(t)) = (load.ops_per_sec, policy.ops_per_sec_per_node) {
            parts.push(format!("{ops:.0} ops/s for {t:.0} per node"));
        }
        if let Some(t) = policy.bytes_per_node {
            parts.push(format!("{:.0} bytes for {t:.0} per node", load.bytes));
        }
        format!("{} asks for {n} nodes", parts.join(" and "))
    };
    // Outside the bounds (the spec's replicas edited by hand, or the
    // bounds changed): back inside at once.
    if size < lo || size > hi {
        memory.pending = None;
        memory.last_decision = Some(now);
        let to = size.clamp(lo, hi);
        return Verdict {
            recommendation: to,
            decision: Some(to),
            reason: format!("{size} nodes is outside [{lo}, {hi}]: scaling to {to}"),
        };
    }
    if recommendation == size {
        memory.pending = None;
        return Verdict {
            recommendation,
            decision: None,
            reason: format!("{}; the size stays", describe(recommendation)),
        };
    }
    let up = recommendation > size;
    // Keep the least aggressive value seen in this direction.
    let (value, since) = match memory.pending {
        Some((v, since)) if (v > size) == up => {
            let v = if up {
                v.min(recommendation)
            } else {
                v.max(recommendation)
            };
            (v, since)
        }
        _ => (recommendation, now),
    };
    memory.pending = Some((value, since));
    if let Some(last) = memory.last_decision
        && held(last) < window
    {
        return Verdict {
            recommendation,
            decision: None,
            reason: format!(
                "{}; cooling down for {} s after the last decision",
                describe(recommendation),
                window - held(last)
            ),
        };
    }
    if held(since) < window {
        return Verdict {
            recommendation,
            decision: None,
            reason: format!(
                "{}; acting once it has held for {window} s ({} s so far)",
                describe(recommendation),
                held(since)
            ),
        };
    }
    memory.pending = None;
    memory.last_decision = Some(now);
    Verdict {
        recommendation,
        decision: Some(value),
        reason: format!(
            "{} (held for {} s): scaling from {size} to {value}",
            describe(recommendation),
            held(since)
        ),
    }
}

/// What the autoscaler keeps per cluster (`namespace/name`), in the
/// operator's memory: a restart starts the windows and the rate afresh,
/// which only delays a decision.
#[derive(Debug, Default)]
pub struct Trackers(std::sync::Mutex<std::collections::HashMap<String, (Memory, Rate)>>);

impl Trackers {
    /// Runs `f` on the cluster's memory and rate.
    pub fn with<T>(&self, cluster: &str, f: impl FnOnce(&mut Memory, &mut Rate) -> T) -> T {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (m, r) = all.entry(cluster.to_owned()).or_default();
        f(m, r)
    }
}

/// Bytes in a Kubernetes quantity (`200Gi`, `1.5T`, `1000`), if it is one.
pub fn parse_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let k: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some(n * k)
}

/// Client requests a node has served: the sum of its
/// `dyno_request_duration_seconds_count` series in its `/metrics` text.
pub fn requests_served(metrics_text: &str) -> f64 {
    metrics_text
        .lines()
        .filter(|l| l.starts_with("dyno_request_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Turns counter samples into a rate: remembers each node's last count
/// and its time.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    last: std::collections::BTreeMap<String, (f64, Timestamp)>,
}

impl Rate {
    /// Feeds one pass's samples (node, requests served); returns the
    /// cluster's operations per second once every sampled node has an
    /// earlier sample. A node whose counter went back (it restarted)
    /// counts from its new value.
    pub fn sample(&mut self, samples: &[(String, f64)], now: Timestamp) -> Option<f64> {
        let mut total = 0.0;
        let mut complete = !samples.is_empty();
        for (node, count) in samples {
            match self.last.get(node) {
                Some((prev, at)) if *count >= *prev => {
                    let secs = now.duration_since(*at).as_secs_f64();
                    if secs > 0.0 {
                        total += (count - prev) / secs;
                    } else {
                        complete = false;
                    }
                }
                _ => complete = false,
            }
        }
        let seen: std::collections::BTreeSet<&String> = samples.iter().map(|(n, _)| n).collect();
        self.last.retain(|n, _| seen.contains(n));
        for (node, count) in samples {
            self.last.insert(node.clone(), (*count, now));
        }
        complete.then_some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy {
            min: 3,
            max: 10,
            ops_per_sec_per_node: Some(1000.0),
            bytes_per_node: None,
            window_secs: 300,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("time")
    }

    fn ops(x: f64) -> Load {
        Load {
            ops_per_sec: Some(x),
            bytes: 0.0,
        }
    }

    #[test]
    fn the_band_holds_the_size() {
        let p = policy();
        assert_eq!(recommend(&p, 4, &ops(4300.0)), 4, "within 110%");
        assert_eq!(recommend(&p, 4, &ops(4500.0)), 5, "over 110%");
        assert_eq!(recommend(&p, 4, &ops(2800.0)), 4, "3 nodes would be at 93%");
        assert_eq!(recommend(&p, 4, &ops(2600.0)), 3, "3 nodes at 87%");
        assert_eq!(recommend(&p, 4, &ops(100.0)), 1, "clamped later");
        assert_eq!(
            recommend(
                &p,
                4,
                &Load {
                    ops_per_sec: None,
                    bytes: 0.0
                }
            ),
            4,
            "no rate yet"
        );
    }

    #[test]
    fn the_larger_need_of_two_targets_wins() {
        let p = Policy {
            bytes_per_node: Some(100.0),
            ..policy()
        };
        let load = Load {
            ops_per_sec: Some(1000.0),
            bytes: 750.0,
        };
        assert_eq!(recommend(&p, 4, &load), 8, "bytes ask for 8");
        // Shrinking needs every target's consent.
        let load = Load {
            ops_per_sec: Some(100.0),
            bytes: 350.0,
        };
        assert_eq!(recommend(&p, 8, &load), 4);
    }

    #[test]
    fn a_spike_shorter_than_the_window_changes_nothing() {
        let p = policy();
        let mut m = Memory::default();
        let v = step(&p, 4, &ops(9000.0), &mut m, at(0));
        assert_eq!((v.recommendation, v.decision), (9, None));
        assert!(v.reason.contains("acting once it has held"), "{}", v.reason);
        let v = step(&p, 4, &ops(9000.0), &mut m, at(200));
        assert_eq!(v.decision, None);
        let v = step(&p, 4, &ops(4000.0), &mut m, at(250));
        assert_eq!(v.decision, None, "back in the band: the window restarts");
        let v = step(&p, 4, &ops(9000.0), &mut m, at(400));
        assert_eq!(v.decision, None, "a new window");
    }

    #[test]
    fn a_sustained_load_scales_at_its_least_aggressive_value_then_cools_down() {
        let p = policy();
        let mut m = Memory::default();
        assert_eq!(step(&p, 4, &ops(9000.0), &mut m, at(0)).decision, None);
        assert_eq!(step(&p, 4, &ops(6000.0), &mut m, at(100)).decision, None);
        let v = step(&p, 4, &ops(9000.0), &mut m, at(300));
        assert_eq!(v.decision, Some(6), "{}", v.reason);
        // Cooling down: a higher load waits a window.
        let v = step(&p, 6, &ops(20000.0), &mut m, at(400));
        assert_eq!(v.decision, None);
        assert!(v.reason.contains("cooling down"), "{}", v.reason);
        let v = step(&p, 6, &ops(20000.0), &mut m, at(700));
        assert_eq!(v.decision, Some(10), "clamped to max: {}", v.reason);
    }

    #[test]
    fn a_size_outside_the_bounds_returns_inside_at_once() {
        let p = policy();
        let mut m = Memory::default();
        let v = step(&p, 12, &ops(12000.0), &mut m, at(0));
        assert_eq!(v.decision, Some(10));
        let v = step(&p, 2, &ops(0.0), &mut m, at(1));
        assert_eq!(v.decision, Some(3));
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_bytes("200Gi"), Some(200.0 * 1024f64.powi(3)));
        assert_eq!(parse_bytes("1.5T"), Some(1.5e12));
        assert_eq!(parse_bytes("1000"), Some(1000.0));
        assert_eq!(parse_bytes("12XB"), None);
        assert_eq!(parse_bytes(""), None);
        assert_eq!(parse_bytes("-1Gi"), None);
    }

    #[test]
    fn the_rate_comes_from_two_samples_and_survives_restarts() {
        let text = "# TYPE x histogram\n\
            dyno_request_duration_seconds_count{op=\"get\",table=\"t\"} 100\n\
            dyno_request_duration_seconds_count{op=\"put\",table=\"t\"} 50\n\
            dyno_request_duration_seconds_sum{op=\"put\",table=\"t\"} 7.5\n";
        assert_eq!(requests_served(text), 150.0);
        let mut r = Rate::default();
        assert_eq!(r.sample(&[("a".into(), 150.0)], at(0)), None, "one sample");
        assert_eq!(
            r.sample(&[("a".into(), 1150.0), ("b".into(), 10.0)], at(10)),
            None,
            "b is new"
        );
        assert_eq!(
            r.sample(&[("a".into(), 2150.0), ("b".into(), 510.0)], at(20)),
            Some(150.0)
        );
        assert_eq!(
            r.sample(&[("a".into(), 5.0), ("b".into(), 1510.0)], at(30)),
            None,
            "a restarted"
        );
        assert_eq!(
            r.sample(&[("a".into(), 1005.0), ("b".into(), 2510.0)], at(40)),
            Some(200.0)
        );
    }

    proptest! {
        /// On a steady load, once the autoscaler has decided, it never
        /// decides again: no flapping.
        #[test]
        fn a_steady_load_settles_with_at_most_one_decision(
            size in 1u32..20,
            load in 0.0f64..50_000.0,
            bytes in 0.0f64..5_000.0,
            with_bytes in any::<bool>(),
            min in 1u32..5,
            extra in 0u32..15,
        ) {
            let p = Policy {
                min,
                max: min + extra,
                ops_per_sec_per_node: Some(1000.0),
                bytes_per_node: with_bytes.then_some(500.0),
                window_secs: 60,
            };
            let l = Load { ops_per_sec: Some(load), bytes };
            let mut m = Memory::default();
            let mut size = size;
            let mut decisions = 0;
            for t in 0..50 {
                if let Some(n) = step(&p, size, &l, &mut m, at(t * 30)).decision {
                    prop_assert!(n >= p.min && n <= p.max);
                    prop_assert!(n != size);
                    size = n;
                    decisions += 1;
                }
            }
            // Back into the bounds, then at most one move by load.
            prop_assert!(decisions <= 2, "{decisions} decisions");
            prop_assert_eq!(step(&p, size, &l, &mut m, at(10_000)).decision, None);
        }
    }
}
