//! "What your N/R/W means": the probability that a read returns the latest
//! acknowledged write `t` ms after it, for a table's N, R and W and for the
//! alternatives a user considers, computed by Monte Carlo
//! (`dyno_core::pbs`) over the replica round trips the table's cluster
//! measured (collected by `latency.rs`).

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use dyno_core::pbs::{self, Dist, Measured, Rtt};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::authz::Caller;
use crate::error::{ApiError, ApiResult};
use crate::latency::{Buckets, ClusterRtt};

/// Trials per curve: enough for a stable 99.9th percentile.
const TRIALS: usize = 20_000;
/// Points per curve.
const POINTS: usize = 60;

/// `GET /api/v1/tables/{table}/staleness` query: an alternative R and W
/// to compare with the table's own.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StalenessQuery {
    /// An alternative R.
    #[param(value_type = Option<u32>)]
    pub r: Option<String>,
    /// An alternative W.
    #[param(value_type = Option<u32>)]
    pub w: Option<String>,
}

/// One configuration's curve.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Curve {
    /// R.
    pub r: u32,
    /// W.
    pub w: u32,
    /// True for the table's own R and W.
    pub current: bool,
    /// (ms after the write was acknowledged, probability that a read then
    /// returns it).
    pub points: Vec<(f64, f64)>,
    /// The probability right after the acknowledgement.
    pub p_immediately: f64,
    /// After this many ms, 99.9% of reads return the write.
    pub t_999_ms: f64,
    /// The figures in one sentence.
    pub sentence: String,
}

/// The staleness model of a table.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Staleness {
    /// The table's N.
    pub n: u32,
    /// False until the cluster has measured replica round trips (then
    /// `curves` is empty).
    pub measured: bool,
    /// Replica round trips the model rests on.
    pub round_trips: u64,
    /// Nodes measured.
    pub nodes: usize,
    /// The table's configuration first, then the alternatives.
    pub curves: Vec<Curve>,
}

fn dist(b: Option<&Buckets>) -> Dist {
    // Seconds to milliseconds.
    let ms: Vec<(f64, u64)> = b
        .map(|b| b.iter().map(|(le, c)| (le * 1000.0, *c)).collect())
        .unwrap_or_default();
    Dist::from_cumulative(&ms)
}

/// The measured cluster for the model, from the collected round trips.
pub fn measured(rtt: &ClusterRtt) -> Measured {
    let mut ids: Vec<String> = rtt
        .iter()
        .flat_map(|(node, peers)| {
            std::iter::once(node.clone()).chain(peers.keys().map(|(p, _)| p.clone()))
        })
        .collect();
    ids.sort();
    ids.dedup();
    let nodes = ids.len().max(1);
    let mut pairs = vec![None; nodes * nodes];
    let mut pooled = Rtt::default();
    for (c, coord) in ids.iter().enumerate() {
        let Some(peers) = rtt.get(coord) else {
            continue;
        };
        for (r, replica) in ids.iter().enumerate() {
            let get = |op: &str| dist(peers.get(&(replica.clone(), op.to_owned())));
            let write = get("write");
            let mut read = get("read");
            // A read asks the coordinator's own copy first, so a pair may
            // have no remote reads at all (R = 1 where every node holds
            // every key): its writes' round trips stand in, a replica read
            // costing about what a replica write does.
            if read.count() == 0 {
                read = write.clone();
            }
            let one = Rtt { write, read };
            if one.write.count() > 0 {
                pooled.write.merge(&one.write);
                pooled.read.merge(&one.read);
                pairs[c * nodes + r] = Some(one);
            }
        }
    }
    Measured {
        nodes,
        pairs,
        pooled,
    }
}

/// The sentence for a configuration.
pub fn sentence(n: u32, r: u32, w: u32, p0: f64, t999: f64) -> String {
    if r + w > n {
        return format!(
            "With R={r} and W={w} (R + W > N = {n}), every read sees the latest acknowledged write."
        );
    }
    if t999 <= 0.0 {
        return format!("With R={r} and W={w}, over 99.9% of reads right after a write see it.");
    }
    format!(
        "With R={r} and W={w}, {:.1}% of reads right after a write see it, and 99.9% of reads {} after it.",
        p0 * 100.0,
        ms_text(t999)
    )
}

fn ms_text(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// Curves for `configs` (R, W) of a table with `n` replicas.
pub fn curves(m: &Measured, n: u32, configs: &[(u32, u32, bool)]) -> Vec<Curve> {
    let sims: Vec<(u32, u32, bool, Vec<f64>)> = configs
        .iter()
        .map(|&(r, w, cur)| {
            let th = pbs::thresholds(m, n as usize, r as usize, w as usize, TRIALS, 0x5EED);
            (r, w, cur, th)
        })
        .collect();
    let horizon = sims
        .iter()
        .map(|s| pbs::t_for(&s.3, 0.999))
        .fold(0.0f64, f64::max)
        .max(0.5)
        * 1.25;
    sims.into_iter()
        .map(|(r, w, current, th)| {
            let points = (0..=POINTS)
                .map(|i| {
                    let t = horizon * i as f64 / POINTS as f64;
                    (t, pbs::p_consistent(&th, t))
                })
                .collect();
            let p0 = pbs::p_consistent(&th, 0.0);
            let t999 = pbs::t_for(&th, 0.999);
            Curve {
                r,
                w,
                current,
                points,
                p_immediately: p0,
                t_999_ms: t999,
                sentence: sentence(n, r, w, p0, t999),
            }
        })
        .collect()
}

fn alt(field: &str, raw: Option<&str>, n: u32) -> ApiResult<Option<u32>> {
    match raw.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|x| (1..=n).contains(x))
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    field,
                    format!("{field} must be a whole number from 1 to n = {n}"),
                )
            }),
    }
}

/// The staleness of a table's reads, and of alternatives.
#[utoipa::path(get, path = "/api/v1/tables/{table}/staleness", tag = "tables",
    params(StalenessQuery, ("table" = String, Path)),
    responses((status = 200, body = Staleness), (status = 400), (status = 404)))]
pub async fn table_staleness(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(table): Path<String>,
    q: Result<Query<StalenessQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Staleness>> {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let t = crate::api::find_table(&state, caller.own_tenant()?, &table).await?;
    let n = t.n as u32;
    let (alt_r, alt_w) = (alt("r", q.r.as_deref(), n)?, alt("w", q.w.as_deref(), n)?);
    let current = (t.r as u32, t.w as u32);
    let mut configs = vec![(current.0, current.1, true)];
    let wanted = (alt_r.unwrap_or(current.0), alt_w.unwrap_or(current.1));
    for c in [wanted, (1, 1)] {
        if !configs.iter().any(|x| (x.0, x.1) == c) {
            configs.push((c.0, c.1, false));
        }
    }
    let m = measured(&state.latency().rtt(&t.cluster));
    let round_trips = m.pooled.write.count() + m.pooled.read.count();
    let ok = m.pooled.write.count() > 0 && m.pooled.read.count() > 0;
    let nodes = m.nodes;
    // The simulation is CPU work: keep it off the request threads.
    let curves = if ok {
        tokio::task::spawn_blocking(move || curves(&m, n, &configs))
            .await
            .map_err(ApiError::internal)?
    } else {
        Vec::new()
    };
    Ok(Json(Staleness {
        n,
        measured: ok,
        round_trips,
        nodes,
        curves,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn collected_round_trips_become_the_model() {
        let mut rtt: ClusterRtt = HashMap::new();
        let slow = vec![(0.010, 0), (0.020, 100), (f64::INFINITY, 100)];
        let fast = vec![(0.0005, 0), (0.001, 100), (f64::INFINITY, 100)];
        for node in ["a", "b", "c"] {
            let mut peers = HashMap::new();
            for peer in ["a", "b", "c"].into_iter().filter(|p| *p != node) {
                peers.insert((peer.to_owned(), "write".to_owned()), slow.clone());
                peers.insert((peer.to_owned(), "read".to_owned()), fast.clone());
            }
            rtt.insert(node.to_owned(), peers);
        }
        let m = measured(&rtt);
        assert_eq!(m.nodes, 3);
        assert_eq!(m.pooled.write.count(), 600);
        let c = curves(&m, 3, &[(1, 1, true), (2, 2, false)]);
        // R = W = 1 with writes of 10–20 ms: some reads are stale at first,
        // none after the slowest write (10 ms one way).
        assert!(c[0].p_immediately < 1.0, "{:?}", c[0].p_immediately);
        assert!(
            c[0].t_999_ms > 0.0 && c[0].t_999_ms <= 10.0,
            "{}",
            c[0].t_999_ms
        );
        assert!(
            c[0].sentence.contains("99.9% of reads"),
            "{}",
            c[0].sentence
        );
        assert_eq!(c[1].p_immediately, 1.0);
        assert!(
            c[1].sentence.contains("every read sees"),
            "{}",
            c[1].sentence
        );
        assert!(
            c[0].points.windows(2).all(|p| p[0].1 <= p[1].1),
            "never decreasing"
        );
    }

    #[test]
    fn a_pair_without_remote_reads_uses_its_writes() {
        // Reads ask their own copy first: at R = 1 no read crosses the
        // network, and only writes are measured.
        let mut rtt: ClusterRtt = HashMap::new();
        let writes = vec![(0.004, 0), (0.008, 50), (f64::INFINITY, 50)];
        for node in ["a", "b"] {
            let peer = if node == "a" { "b" } else { "a" };
            let mut peers = HashMap::new();
            peers.insert((peer.to_owned(), "write".to_owned()), writes.clone());
            rtt.insert(node.to_owned(), peers);
        }
        let m = measured(&rtt);
        assert_eq!(m.pooled.write.count(), 100);
        assert_eq!(m.pooled.read, m.pooled.write);
    }

    #[test]
    fn nothing_measured_is_no_model() {
        let m = measured(&HashMap::new());
        assert_eq!(m.pooled.write.count(), 0);
    }
}
