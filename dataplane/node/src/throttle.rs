//! Per-table throughput limits: a token bucket per table on each node.
//!
//! A table's limit is for the whole cluster. Each node admits
//! `limit / ring members` operations per second of the requests it
//! coordinates, with one second of burst. Clients spread over the nodes (as
//! the SDKs and load balancers do) therefore see about the table's limit;
//! a client pinned to one node sees its share. No coordination between
//! nodes is needed, and a node that is down only lowers the total while it
//! is down. The clock is passed in, so the buckets are tested without
//! waiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets of the limited tables, by storage name.
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Throttle {
    /// No buckets yet.
    pub fn new() -> Throttle {
        Throttle::default()
    }

    /// Takes one token of `table`'s bucket, whose cluster-wide limit is
    /// `limit` per second over `members` nodes. `Err(seconds)` when the
    /// bucket is empty: the seconds until a token is due (at least 1).
    pub fn admit(&self, table: &str, limit: u32, members: usize, now: Instant) -> Result<(), u32> {
        let rate = f64::from(limit.max(1)) / members.max(1) as f64;
        let burst = rate.max(1.0);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(table.to_owned()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_admits_its_share_then_refills() {
        let t = Throttle::new();
        let start = Instant::now();
        // 30/s over 3 nodes: 10 per second here, 10 of burst.
        let admitted = (0..25)
            .filter(|_| t.admit("t", 30, 3, start).is_ok())
            .count();
        assert_eq!(admitted, 10);
        let retry = t.admit("t", 30, 3, start).expect_err("empty");
        assert_eq!(retry, 1);
        // Half a second later, five more.
        let later = start + Duration::from_millis(500);
        let admitted = (0..25)
            .filter(|_| t.admit("t", 30, 3, later).is_ok())
            .count();
        assert_eq!(admitted, 5);
        // Another table has its own bucket.
        assert!(t.admit("u", 30, 3, later).is_ok());
    }

    #[test]
    fn slow_limits_ask_for_a_longer_wait() {
        let t = Throttle::new();
        let now = Instant::now();
        assert!(t.admit("t", 1, 4, now).is_ok(), "a burst of one");
        assert_eq!(t.admit("t", 1, 4, now), Err(4));
    }
}
