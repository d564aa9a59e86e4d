//! Latency and request rates per table and operation, for the console's
//! charts: every few seconds each control-plane replica reads every
//! node's request histograms (`/metrics`, `dyno_request_duration_seconds`),
//! takes the difference from the previous reading, sums the nodes, and
//! keeps one sample per interval (rate, p50, p99, p99.9) for the last
//! hour.
//!
//! **Kept in memory, not in Postgres.** The figures are derived and cheap
//! to rebuild (an hour of them), written every few seconds per series, and
//! worthless once stale: writing them to the database that holds the
//! source of truth would add load to it for nothing. Every replica keeps
//! its own ring buffer, so whichever replica serves a page has the figures
//! (at the cost of one scrape per node per replica per interval); a
//! replica that restarts shows "no data yet" for a few seconds.
//!
//! Quantiles are interpolated inside the histogram's buckets (a factor of
//! √2 apart), so they are within about ±20% of the true value.
//!
//! The same readings give each table's **item count and size estimates**:
//! every node exports the live items and bytes of each table it holds
//! (`dyno_table_items`, `dyno_table_bytes`, counted exactly as it writes);
//! their sum over the table's cluster divided by N is the estimate. It
//! runs high while a ring change copies partitions (both owners count
//! them) and low while a node is down or a replica missed writes that
//! hinted handoff or anti-entropy have yet to bring, as DynamoDB's
//! `ItemCount` is an estimate too. A node's figures count for
//! [`LOAD_FRESH`] after it last answered.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::AppState;
use crate::authz::Caller;
use crate::error::ApiResult;

/// Samples kept per series (an hour at the default interval of 5 s).
pub const KEEP: usize = 720;
/// The request histogram the nodes export.
const REQUESTS: &str = "dyno_request_duration_seconds";
/// The replica round-trip histogram the nodes export.
const RTT: &str = "dyno_replica_rtt_seconds";
/// Live items per table on a node.
const TABLE_ITEMS: &str = "dyno_table_items";
/// Their bytes.
const TABLE_BYTES: &str = "dyno_table_bytes";
/// How long a node's per-table figures count after it last answered.
pub const LOAD_FRESH: Duration = Duration::from_secs(120);

/// One interval of one table's operation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sample {
    /// End of the interval.
    pub at: DateTime<Utc>,
    /// Requests per second over the interval (every outcome).
    pub rate: f64,
    /// Median latency, ms (none without requests).
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile, ms.
    pub p999_ms: Option<f64>,
}

/// Buckets of one histogram: upper bound (seconds; `inf` last) and
/// cumulative count.
pub type Buckets = Vec<(f64, u64)>;

/// Series key: tenant, table, operation.
type Key = (String, String, String);

/// The bucket lines of histogram `metric` (`<metric>_bucket{…} v`): their
/// labels, `le` parsed, and the count.
fn bucket_lines<'a>(
    text: &'a str,
    metric: &'a str,
) -> impl Iterator<Item = (Vec<(String, String)>, f64, u64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(metric)?.strip_prefix("_bucket{")?;
        let (labels, value) = rest.rsplit_once('}')?;
        let count = value.split_whitespace().next()?.parse::<f64>().ok()?;
        let labels = parse_labels(labels);
        let le = labels.iter().find(|(n, _)| n == "le")?.1.clone();
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse::<f64>().ok()?
        };
        Some((labels, le, count as u64))
    })
}

/// Sums bucket lines into histograms per key (`key` picks the labels;
/// lines it rejects are skipped).
fn histograms<K: std::hash::Hash + Eq>(
    lines: impl Iterator<Item = (Vec<(String, String)>, f64, u64)>,
    key: impl Fn(&[(String, String)]) -> Option<K>,
) -> HashMap<K, Buckets> {
    let mut sums: HashMap<K, BTreeMap<u64, (f64, u64)>> = HashMap::new();
    for (labels, le, count) in lines {
        let Some(k) = key(&labels) else {
            continue;
        };
        let slot = sums
            .entry(k)
            .or_default()
            .entry(le.to_bits())
            .or_insert((le, 0));
        slot.1 += count;
    }
    sums.into_iter()
        .map(|(k, b)| {
            let mut v: Buckets = b.into_values().collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            (k, v)
        })
        .collect()
}

fn label(labels: &[(String, String)], name: &str) -> Option<String> {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Parses the nodes' request histograms out of a Prometheus text
/// exposition: per (tenant, table, op), the buckets summed over outcomes.
pub fn parse_exposition(text: &str) -> HashMap<Key, Buckets> {
    histograms(bucket_lines(text, REQUESTS), |l| {
        Some((label(l, "tenant")?, label(l, "table")?, label(l, "op")?))
    })
}

/// The replica round trips a node measured: per (peer, `write`|`read`).
pub fn parse_rtt(text: &str) -> HashMap<(String, String), Buckets> {
    histograms(bucket_lines(text, RTT), |l| {
        Some((label(l, "peer")?, label(l, "op")?))
    })
}

/// Live items and bytes of one table (on one node, or summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Load {
    /// Items with a live value.
    pub items: u64,
    /// Their stored bytes.
    pub bytes: u64,
}

/// The per-table figures a node exports: per (tenant, table).
pub fn parse_table_loads(text: &str) -> HashMap<(String, String), Load> {
    let mut out: HashMap<(String, String), Load> = HashMap::new();
    for line in text.lines() {
        let (rest, bytes) = if let Some(r) = line.strip_prefix(TABLE_ITEMS) {
            (r, false)
        } else if let Some(r) = line.strip_prefix(TABLE_BYTES) {
            (r, true)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.strip_prefix('{').and_then(|r| r.rsplit_once('}')) else {
            continue;
        };
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let labels = parse_labels(labels);
        let (Some(tenant), Some(table)) = (label(&labels, "tenant"), label(&labels, "table"))
        else {
            continue;
        };
        let slot = out.entry((tenant, table)).or_default();
        let v = v.max(0.0) as u64;
        if bytes {
            slot.bytes = v;
        } else {
            slot.items = v;
        }
    }
    out
}

/// `name="value"` pairs, with the exposition format's escapes.
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(x) => value.push(x),
                    None => return out,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').trim().to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// Per-bucket differences `now - before` (a node that restarted counts
/// from zero: its current counts are the difference).
pub fn delta(before: &Buckets, now: &Buckets) -> Buckets {
    let total = |b: &Buckets| b.last().map_or(0, |x| x.1);
    if before.len() != now.len() || total(now) < total(before) {
        return now.clone();
    }
    now.iter()
        .zip(before)
        .map(|((le, n), (_, b))| (*le, n.saturating_sub(*b)))
        .collect()
}

/// Adds `b` into `into` (same bounds, or `into` empty).
fn add(into: &mut Buckets, b: &Buckets) {
    if into.is_empty() {
        *into = b.clone();
    } else if into.len() == b.len() {
        for (x, y) in into.iter_mut().zip(b) {
            x.1 += y.1;
        }
    }
}

/// The `q` quantile of cumulative buckets, in seconds, interpolated
/// linearly inside the bucket it falls in (`None` when empty). A quantile
/// in the overflow bucket reads as the last finite bound.
pub fn quantile(b: &Buckets, q: f64) -> Option<f64> {
    let total = b.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut prev = (0.0, 0u64);
    for &(le, c) in b {
        if c as f64 >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let inside = (c - prev.1) as f64;
            let frac = if inside > 0.0 {
                (rank - prev.1 as f64) / inside
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac.clamp(0.0, 1.0));
        }
        prev = (le, c);
    }
    Some(prev.0)
}

/// One node's figures, read once.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// Its cluster.
    pub cluster: String,
    /// The node.
    pub node: String,
    /// Its request histograms (cumulative).
    pub requests: HashMap<Key, Buckets>,
    /// Its replica round trips per (peer, `write`|`read`) (cumulative).
    pub rtt: HashMap<(String, String), Buckets>,
    /// Live items and bytes per (tenant, table) it holds.
    pub tables: HashMap<(String, String), Load>,
}

/// Round trips per cluster: node → (peer, op) → buckets.
pub type ClusterRtt = HashMap<String, HashMap<(String, String), Buckets>>;

#[derive(Debug, Default)]
struct Inner {
    /// Last reading per node and series.
    last: HashMap<(String, Key), Buckets>,
    /// Nodes read in an earlier round (`cluster/node`).
    known: std::collections::HashSet<String>,
    /// Samples per series, oldest first.
    series: HashMap<Key, VecDeque<Sample>>,
    /// The latest round trips per cluster.
    rtt: HashMap<String, ClusterRtt>,
    /// Per (cluster, node): when it last answered, and its table figures.
    loads: HashMap<(String, String), NodeLoads>,
}

/// A node's last per-table figures.
#[derive(Debug)]
struct NodeLoads {
    at: DateTime<Utc>,
    tables: HashMap<(String, String), Load>,
}

/// The collected figures.
#[derive(Debug, Default)]
pub struct Latency {
    inner: Mutex<Inner>,
}

impl Latency {
    /// Takes one round of readings taken `elapsed` after the previous
    /// round, at `at`.
    pub fn record(&self, readings: Vec<Reading>, elapsed: Duration, at: DateTime<Utc>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut interval: HashMap<Key, Buckets> = HashMap::new();
        for r in readings {
            let node = format!("{}/{}", r.cluster, r.node);
            inner
                .rtt
                .entry(r.cluster.clone())
                .or_default()
                .insert(r.node.clone(), r.rtt);
            inner.loads.insert(
                (r.cluster.clone(), r.node.clone()),
                NodeLoads {
                    at,
                    tables: r.tables,
                },
            );
            // A series missing from a node's last reading began since: its
            // whole count falls in this interval. (On a node read for the
            // first time, the counts are a baseline: they may be old.)
            let known = inner.known.contains(&node);
            for (key, now) in r.requests {
                let slot = (node.clone(), key.clone());
                match inner.last.get(&slot) {
                    Some(before) => add(
                        interval.entry(key.clone()).or_default(),
                        &delta(before, &now),
                    ),
                    None if known => add(interval.entry(key.clone()).or_default(), &now),
                    None => {}
                }
                inner.last.insert(slot, now);
            }
            inner.known.insert(node);
        }
        let secs = elapsed.as_secs_f64().max(0.001);
        // Series seen before get a sample every round (zero when idle), so
        // that the charts show quiet periods as quiet.
        let keys: Vec<Key> = inner
            .series
            .keys()
            .cloned()
            .chain(interval.keys().cloned())
            .collect();
        for key in keys {
            let b = interval.get(&key).cloned().unwrap_or_default();
            let count = b.last().map_or(0, |x| x.1);
            let ms = |q| quantile(&b, q).map(|s| s * 1000.0);
            let sample = Sample {
                at,
                rate: count as f64 / secs,
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
                p999_ms: ms(0.999),
            };
            let s = inner.series.entry(key).or_default();
            if s.back().is_some_and(|last| last.at == at) {
                continue;
            }
            s.push_back(sample);
            while s.len() > KEEP {
                s.pop_front();
            }
        }
        // Forget series idle for the whole window (deleted tables).
        inner.series.retain(|_, s| s.iter().any(|x| x.rate > 0.0));
        let fresh = |l: &NodeLoads| (at - l.at).to_std().map_or(true, |d| d <= LOAD_FRESH);
        inner.loads.retain(|_, l| fresh(l));
    }

    /// A table's items and bytes summed over the nodes of `cluster` that
    /// answered lately (replica copies: divide by N for the table), with
    /// the time of the oldest reading in the sum; `None` when no node
    /// reported the table.
    pub fn table_copies(
        &self,
        cluster: &str,
        tenant: &str,
        table: &str,
    ) -> Option<(Load, DateTime<Utc>)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_owned(), table.to_owned());
        let mut out: Option<(Load, DateTime<Utc>)> = None;
        for ((c, _), l) in &inner.loads {
            let Some(load) = l.tables.get(&key).filter(|_| c == cluster) else {
                continue;
            };
            let (sum, at) = out.get_or_insert((Load::default(), l.at));
            sum.items += load.items;
            sum.bytes += load.bytes;
            *at = (*at).min(l.at);
        }
        out
    }

    /// A table's request rate in the latest interval, over every
    /// operation; `None` before any request was measured.
    pub fn current_rate(&self, tenant: &str, table: &str) -> Option<f64> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut rate = None;
        for ((t, n, _), s) in &inner.series {
            if t == tenant && n == table {
                *rate.get_or_insert(0.0) += s.back().map_or(0.0, |x| x.rate);
            }
        }
        rate
    }

    /// The latest replica round trips measured in `cluster`.
    pub fn rtt(&self, cluster: &str) -> ClusterRtt {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.rtt.get(cluster).cloned().unwrap_or_default()
    }

    /// A table's series: operation → samples, oldest first.
    pub fn table(&self, tenant: &str, table: &str) -> BTreeMap<String, Vec<Sample>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .series
            .iter()
            .filter(|((t, n, _), _)| t == tenant && n == table)
            .map(|((_, _, op), s)| (op.clone(), s.iter().cloned().collect()))
            .collect()
    }
}

/// A table's latency and rates over the last hour.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TableLatency {
    /// Seconds between samples.
    pub interval_secs: u64,
    /// Operation (`get`, `put`, `delete`, …) → samples, oldest first.
    pub ops: BTreeMap<String, Vec<Sample>>,
}

/// A table's latency and request rate per operation over the last hour.
#[utoipa::path(get, path = "/api/v1/tables/{table}/latency", tag = "tables",
    params(("table" = String, Path)), responses((status = 200, body = TableLatency), (status = 404)))]
pub async fn table_latency(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(table): Path<String>,
) -> ApiResult<Json<TableLatency>> {
    let tenant = caller.own_tenant()?;
    crate::api::find_table(&state, tenant, &table).await?;
    Ok(Json(TableLatency {
        interval_secs: state.metrics_interval().as_secs(),
        ops: state.latency().table(tenant, &table),
    }))
}

/// One table's usage: item count and size estimates and request rate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TableUsage {
    /// The table.
    pub name: String,
    /// Estimated items (live ones), when the nodes reported the table.
    pub items: Option<u64>,
    /// Estimated bytes of those items (one copy; the cluster stores N).
    pub bytes: Option<u64>,
    /// Requests per second over every operation in the latest interval.
    pub requests_per_sec: Option<f64>,
    /// When the oldest node figure in the estimate was read.
    pub measured_at: Option<DateTime<Utc>>,
}

/// The usage of every table of the caller's tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Seconds between readings.
    pub interval_secs: u64,
    /// Per table, by name.
    pub tables: Vec<TableUsage>,
}

/// Item count and size estimates and request rates of the caller's
/// tables, from the figures the nodes export (see the module docs for how
/// far to trust them).
#[utoipa::path(get, path = "/api/v1/usage", tag = "tables",
    responses((status = 200, body = Usage)))]
pub async fn usage(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Usage>> {
    let tenant = caller.own_tenant()?;
    let tables = crate::api::tenant_tables(&state, tenant).await?;
    let figures = state.latency();
    let tables = tables
        .into_iter()
        .map(|t| {
            let copies = figures.table_copies(&t.cluster, tenant, &t.name);
            let n = u64::try_from(t.n).unwrap_or(1).max(1);
            TableUsage {
                items: copies.map(|(l, _)| l.items.div_ceil(n)),
                bytes: copies.map(|(l, _)| l.bytes.div_ceil(n)),
                measured_at: copies.map(|(_, at)| at),
                requests_per_sec: figures.current_rate(tenant, &t.name),
                name: t.name,
            }
        })
        .collect();
    Ok(Json(Usage {
        interval_secs: state.metrics_interval().as_secs(),
        tables,
    }))
}

/// Reads every node of every cluster once.
async fn round(state: &AppState, http: &reqwest::Client) -> Vec<Reading> {
    let Ok(clusters) = sqlx::query!("SELECT name, health FROM clusters")
        .fetch_all(state.db())
        .await
    else {
        return Vec::new();
    };
    let mut asks = tokio::task::JoinSet::new();
    for c in clusters {
        let Ok(access) = state.cluster_access(&c.name).await else {
            continue;
        };
        for n in c.health["nodes"].as_array().into_iter().flatten() {
            let (Some(id), Some(url)) = (n["id"].as_str(), n["http"].as_str()) else {
                continue;
            };
            let (cluster, node, url, token, http) = (
                c.name.clone(),
                id.to_owned(),
                format!("{url}/metrics"),
                access.token().to_owned(),
                http.clone(),
            );
            asks.spawn(async move {
                let text = http
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                Some(Reading {
                    cluster,
                    node,
                    requests: parse_exposition(&text),
                    rtt: parse_rtt(&text),
                    tables: parse_table_loads(&text),
                })
            });
        }
    }
    let mut out = Vec::new();
    while let Some(r) = asks.join_next().await {
        if let Ok(Some(x)) = r {
            out.push(x);
        }
    }
    out
}

/// Collects every `interval` until `stop`.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let interval = state.metrics_interval();
    let timeout = interval.max(Duration::from_secs(2));
    let http = match state.http_with(std::sync::Arc::new(move |b| b.timeout(timeout))) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the latency collector's HTTP client");
            return;
        }
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let readings = round(&state, &http.get()).await;
        let now = tokio::time::Instant::now();
        state.latency().record(readings, now - previous, Utc::now());
        previous = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP dyno_request_duration_seconds Client request latency
# TYPE dyno_request_duration_seconds histogram
dyno_request_duration_seconds_sum{op="get",tenant="acme",table="orders",outcome="ok"} 0.5
dyno_request_duration_seconds_count{op="get",tenant="acme",table="orders",outcome="ok"} 100
dyno_request_duration_seconds_bucket{le="0.001",op="get",tenant="acme",table="orders",outcome="ok"} 50
dyno_request_duration_seconds_bucket{le="0.002",op="get",tenant="acme",table="orders",outcome="ok"} 100
dyno_request_duration_seconds_bucket{le="+Inf",op="get",tenant="acme",table="orders",outcome="ok"} 100
dyno_request_duration_seconds_bucket{le="0.001",op="get",tenant="acme",table="orders",outcome="NotFound"} 10
dyno_request_duration_seconds_bucket{le="0.002",op="get",tenant="acme",table="orders",outcome="NotFound"} 10
dyno_request_duration_seconds_bucket{le="+Inf",op="get",tenant="acme",table="orders",outcome="NotFound"} 10
dyno_request_duration_seconds_bucket{le="0.001",op="put",tenant="a\"b",table="t",outcome="ok"} 1
"#;

    fn key(t: &str, n: &str, o: &str) -> Key {
        (t.into(), n.into(), o.into())
    }

    #[test]
    fn expositions_parse_and_sum_outcomes() {
        let h = parse_exposition(TEXT);
        let get = &h[&key("acme", "orders", "get")];
        assert_eq!(get, &vec![(0.001, 60), (0.002, 110), (f64::INFINITY, 110)]);
        assert!(h.contains_key(&key("a\"b", "t", "put")), "escapes: {h:?}");
        assert!(parse_exposition("garbage{\nno_metric 1\n").is_empty());
        let rtt = parse_rtt(
            "dyno_replica_rtt_seconds_bucket{peer=\"b\",op=\"write\",le=\"0.001\"} 3\n\
             dyno_replica_rtt_seconds_bucket{peer=\"b\",op=\"write\",le=\"+Inf\"} 4\n",
        );
        assert_eq!(
            rtt[&("b".to_owned(), "write".to_owned())],
            vec![(0.001, 3), (f64::INFINITY, 4)]
        );
    }

    #[test]
    fn table_loads_parse_and_sum_over_a_clusters_fresh_nodes() {
        let text = "# TYPE dyno_table_items gauge\n\
            dyno_table_items{tenant=\"acme\",table=\"orders\"} 40\n\
            dyno_table_bytes{tenant=\"acme\",table=\"orders\"} 4000\n\
            dyno_table_items_other{tenant=\"acme\",table=\"x\"} 1\n\
            dyno_table_items{tenant=\"acme\"} 5\n";
        let loads = parse_table_loads(text);
        assert_eq!(
            loads,
            HashMap::from([(
                ("acme".to_owned(), "orders".to_owned()),
                Load {
                    items: 40,
                    bytes: 4000
                }
            )])
        );
        let at = |s: i64| DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default();
        let reading = |cluster: &str, node: &str, items: u64| Reading {
            cluster: cluster.into(),
            node: node.into(),
            tables: HashMap::from([(
                ("acme".to_owned(), "orders".to_owned()),
                Load {
                    items,
                    bytes: items * 10,
                },
            )]),
            ..Reading::default()
        };
        let l = Latency::default();
        assert_eq!(l.table_copies("main", "acme", "orders"), None);
        l.record(
            vec![
                reading("main", "a", 40),
                reading("main", "b", 35),
                reading("other", "a", 1000),
            ],
            Duration::from_secs(5),
            at(0),
        );
        let (sum, when) = l.table_copies("main", "acme", "orders").expect("figures");
        assert_eq!((sum.items, sum.bytes, when), (75, 750, at(0)));
        assert_eq!(l.table_copies("main", "beta", "orders"), None);
        // Node b stops answering: its figures count until they are stale.
        l.record(
            vec![reading("main", "a", 41)],
            Duration::from_secs(5),
            at(5),
        );
        let (sum, when) = l.table_copies("main", "acme", "orders").expect("figures");
        assert_eq!((sum.items, when), (76, at(0)));
        let later = at(5 + LOAD_FRESH.as_secs() as i64);
        l.record(
            vec![reading("main", "a", 42)],
            Duration::from_secs(5),
            later,
        );
        assert_eq!(
            l.table_copies("main", "acme", "orders").map(|x| x.0.items),
            Some(42)
        );
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let b = vec![(0.001, 50), (0.002, 100), (f64::INFINITY, 100)];
        assert_eq!(quantile(&b, 0.5), Some(0.001));
        let p75 = quantile(&b, 0.75).unwrap_or_default();
        assert!((p75 - 0.0015).abs() < 1e-9, "{p75}");
        assert_eq!(quantile(&vec![(0.001, 0), (f64::INFINITY, 0)], 0.5), None);
        let over = vec![(0.001, 1), (f64::INFINITY, 100)];
        assert_eq!(
            quantile(&over, 0.99),
            Some(0.001),
            "overflow reads as the last bound"
        );
    }

    #[test]
    fn deltas_survive_restarts() {
        let before = vec![(0.001, 50), (f64::INFINITY, 60)];
        let now = vec![(0.001, 70), (f64::INFINITY, 90)];
        assert_eq!(delta(&before, &now), vec![(0.001, 20), (f64::INFINITY, 30)]);
        let restarted = vec![(0.001, 5), (f64::INFINITY, 5)];
        assert_eq!(delta(&before, &restarted), restarted);
    }

    #[test]
    fn samples_are_rates_over_the_interval_summed_over_nodes() {
        let l = Latency::default();
        let at = |s: i64| DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default();
        let reading = |node: &str, n: u64| {
            let mut requests = HashMap::new();
            requests.insert(
                key("acme", "orders", "put"),
                vec![(0.001, n), (f64::INFINITY, n)],
            );
            Reading {
                cluster: "main".into(),
                node: node.into(),
                requests,
                rtt: HashMap::new(),
                tables: HashMap::new(),
            }
        };
        l.record(
            vec![reading("a", 10), reading("b", 0)],
            Duration::from_secs(5),
            at(0),
        );
        assert!(
            l.table("acme", "orders").is_empty(),
            "a first reading is a baseline"
        );
        l.record(
            vec![reading("a", 60), reading("b", 50)],
            Duration::from_secs(5),
            at(5),
        );
        let s = &l.table("acme", "orders")["put"];
        assert_eq!(s.len(), 1);
        assert!((s[0].rate - 20.0).abs() < 1e-9, "(50 + 50) / 5 s: {s:?}");
        assert!(s[0].p99_ms.is_some_and(|p| p <= 1.0));
        // Idle rounds add zero samples; other tenants see nothing.
        l.record(
            vec![reading("a", 60), reading("b", 50)],
            Duration::from_secs(5),
            at(10),
        );
        let s = &l.table("acme", "orders")["put"];
        assert_eq!((s.len(), s[1].rate, s[1].p99_ms), (2, 0.0, None));
        assert_eq!(l.current_rate("acme", "orders"), Some(0.0));
        assert_eq!(l.current_rate("acme", "other"), None);
        assert!(l.table("beta", "orders").is_empty());
    }

    /// A node's first request of a kind creates its series between two
    /// readings; that request counts (it used to be taken as a baseline
    /// and never charted, which made the console's browser test flaky).
    #[test]
    fn a_series_new_on_a_known_node_counts_from_zero() {
        let l = Latency::default();
        let at = |s: i64| DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default();
        let reading = |puts: Option<u64>| {
            let mut requests = HashMap::new();
            requests.insert(key("acme", "orders", "get"), vec![(f64::INFINITY, 5)]);
            if let Some(n) = puts {
                requests.insert(
                    key("acme", "orders", "put"),
                    vec![(0.001, n), (f64::INFINITY, n)],
                );
            }
            Reading {
                cluster: "main".into(),
                node: "a".into(),
                requests,
                rtt: HashMap::new(),
                tables: HashMap::new(),
            }
        };
        l.record(vec![reading(None)], Duration::from_secs(1), at(0));
        l.record(vec![reading(Some(2))], Duration::from_secs(1), at(1));
        let s = &l.table("acme", "orders")["put"];
        assert_eq!(s.len(), 1);
        assert!((s[0].rate - 2.0).abs() < 1e-9, "{s:?}");
    }
}
