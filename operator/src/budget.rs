//! The PodDisruptionBudget of a cluster: how many nodes Kubernetes may
//! take down at once on purpose (drains, evictions), so that every table
//! keeps its quorums among its own replicas.
//!
//! With `u` nodes down, a key can lose at most `min(u, N)` of its N
//! replicas. Its reads and writes still find R and W of them when
//! `N - u >= max(R, W)`, so the budget is the smallest `N - max(R, W)`
//! over the tables. It is never below 1: with 0, Kubernetes could never
//! drain a node and rolling upgrades would stall; a table with R or W
//! equal to N relies on sloppy quorum (fallback replicas and hinted
//! handoff) during a disruption, and [`tight_tables`] names them so the
//! operator can say so in a condition.

/// A table's replication settings: N, default R, default W.
pub type Quorum = (u32, u32, u32);

/// `maxUnavailable` for the cluster's PodDisruptionBudget.
pub fn max_unavailable(tables: &[Quorum]) -> u32 {
    tables
        .iter()
        .map(|&(n, r, w)| n.saturating_sub(r.max(w)))
        .min()
        .unwrap_or(1)
        .max(1)
}

/// The tables (by index) that cannot keep strict quorums with one node
/// down: R or W equals N.
pub fn tight_tables(tables: &[Quorum]) -> Vec<usize> {
    tables
        .iter()
        .enumerate()
        .filter(|(_, (n, r, w))| *r.max(w) >= *n)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_every_quorum() {
        assert_eq!(max_unavailable(&[]), 1, "no tables: one at a time");
        assert_eq!(max_unavailable(&[(3, 2, 2)]), 1);
        assert_eq!(max_unavailable(&[(5, 2, 2)]), 3);
        assert_eq!(
            max_unavailable(&[(5, 1, 1), (5, 2, 3)]),
            2,
            "the tightest table"
        );
        assert_eq!(max_unavailable(&[(3, 1, 3)]), 1, "never 0");
        assert_eq!(tight_tables(&[(3, 2, 2), (3, 1, 3), (1, 1, 1)]), vec![1, 2]);
    }

    #[test]
    fn with_the_budget_down_every_key_keeps_its_quorums() {
        // Every (N, R, W) up to 7 whose budget was not floored: removing
        // `u` of a key's N replicas leaves max(R, W).
        for n in 1..=7u32 {
            for r in 1..=n {
                for w in 1..=n {
                    let u = max_unavailable(&[(n, r, w)]);
                    if tight_tables(&[(n, r, w)]).is_empty() {
                        assert!(n - u >= r.max(w), "N={n} R={r} W={w}: {u}");
                        assert!(n - (u + 1) < r.max(w), "N={n} R={r} W={w}: {u} is the most");
                    } else {
                        assert_eq!(u, 1);
                    }
                }
            }
        }
    }
}
