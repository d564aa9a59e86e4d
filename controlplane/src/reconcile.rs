//! The reconciler: brings every data-plane cluster to the catalog Postgres
//! describes.
//!
//! Level-triggered and idempotent. Each pass reads the desired records
//! (tables, keys, tenant states, each with its version), asks every node
//! of each cluster which versions it holds (`GET /admin/v1/catalog`), and
//! pushes only what a node lacks (`PUT /admin/v1/catalog`). A node that was
//! down, or restarted from an old disk, is caught up by the next pass; a
//! record pushed twice is merged once. Once every node of a cluster holds a
//! record, its status moves on (`creating` → `active`, `deleting` →
//! `deleted`, a key `pending` → `active`).
//!
//! One replica reconciles at a time: the one holding a Postgres advisory
//! lock on a dedicated connection. If that replica dies, its connection
//! closes, the lock is released, and another replica takes over within a
//! pass.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::watch;

use crate::AppState;

/// The advisory lock's key ("dyno-rec" in ASCII).
const LOCK_KEY: i64 = 0x6479_6e6f_2d72_6563;

/// One record the data plane must hold.
#[derive(Debug, Clone)]
pub struct Desired {
    /// `table`, `key` or `tenant`.
    pub kind: &'static str,
    /// Its id in the data plane's catalog.
    pub id: String,
    /// Its version.
    pub version: i64,
    /// The cluster it belongs to (`None`: every cluster).
    pub cluster: Option<String>,
    /// The record as `PUT /admin/v1/catalog` takes it.
    pub record: Value,
}

/// Reads every desired record.
pub async fn desired(state: &AppState) -> Result<Vec<Desired>, sqlx::Error> {
    let mut out = Vec::new();
    for t in sqlx::query!(
        "SELECT id, tenant, name, cluster, n, r, w, conflict, throughput_limit, status, version, dynamo FROM tables"
    )
    .fetch_all(state.db())
    .await?
    {
        // DynamoDB tables have composite keys: `#p<id>` tells every node
        // to place them by partition key (dyno_core::hash).
        let id = if t.dynamo.is_some() {
            format!("#p{}", t.id)
        } else {
            format!("#{}", t.id)
        };
        let mut record = json!({
            "kind": "table", "name": id, "tenant": t.tenant, "table": t.name,
            "n": t.n, "r": t.r, "w": t.w, "conflict": t.conflict,
            "throughput_limit": t.throughput_limit,
            "deleted": matches!(t.status.as_str(), "deleting" | "deleted"),
            "version": t.version,
        });
        if let Some(d) = t.dynamo {
            record["dynamo"] = d;
        }
        out.push(Desired {
            kind: "table",
            record,
            id,
            version: t.version,
            cluster: Some(t.cluster),
        });
    }
    for k in sqlx::query!("SELECT id, tenant, scopes, status, version FROM api_keys")
        .fetch_all(state.db())
        .await?
    {
        out.push(Desired {
            kind: "key",
            record: json!({
                "kind": "key", "id": k.id, "tenant": k.tenant, "scopes": k.scopes,
                "revoked": k.status == "revoked", "version": k.version,
            }),
            id: k.id,
            version: k.version,
            cluster: None,
        });
    }
    for t in sqlx::query!("SELECT name, state, version FROM tenants")
        .fetch_all(state.db())
        .await?
    {
        out.push(Desired {
            kind: "tenant",
            record: json!({
                "kind": "tenant", "name": t.name, "suspended": t.state == "suspended",
                "version": t.version,
            }),
            id: t.name,
            version: t.version,
            cluster: None,
        });
    }
    Ok(out)
}

/// What a pass found for one node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeHealth {
    /// The node.
    pub id: String,
    /// Its HTTP URL.
    pub http: String,
    /// Its ring status (`up`, `down`, `joining`, …).
    pub status: String,
    /// Whether the reconciler reached it.
    pub reachable: bool,
    /// Whether it holds every desired record.
    pub in_sync: bool,
    /// Records pushed to it in this pass.
    pub pushed: usize,
}

/// Records when the node last saw each key used (approximate: nodes note
/// it at most once a minute per key).
async fn note_key_usage(state: &AppState, have: &Value) -> Result<(), sqlx::Error> {
    let Some(usage) = have["key_usage"].as_object() else {
        return Ok(());
    };
    let (ids, ats): (Vec<String>, Vec<f64>) = usage
        .iter()
        .filter_map(|(id, at)| Some((id.clone(), at.as_f64()?)))
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE api_keys k SET last_used_at = to_timestamp(u.at)
           FROM UNNEST($1::text[], $2::float8[]) AS u(id, at)
          WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < to_timestamp(u.at))",
        &ids,
        &ats
    )
    .execute(state.db())
    .await?;
    Ok(())
}

/// Brings one node up to date: returns how many records it was sent.
async fn sync_node(
    state: &AppState,
    http: &reqwest::Client,
    url: &str,
    token: &str,
    want: &[&Desired],
) -> anyhow::Result<usize> {
    let have: Value = http
        .get(format!("{url}/admin/v1/catalog"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    note_key_usage(state, &have).await?;
    let mut versions: HashMap<(String, String), i64> = HashMap::new();
    for r in have["records"].as_array().into_iter().flatten() {
        if let (Some(k), Some(i), Some(v)) =
            (r["kind"].as_str(), r["id"].as_str(), r["version"].as_i64())
        {
            versions.insert((k.to_owned(), i.to_owned()), v);
        }
    }
    let missing: Vec<&Value> = want
        .iter()
        .filter(|d| {
            versions
                .get(&(d.kind.to_owned(), d.id.clone()))
                .is_none_or(|&v| v < d.version)
        })
        .map(|d| &d.record)
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    for chunk in missing.chunks(500) {
        http.put(format!("{url}/admin/v1/catalog"))
            .bearer_auth(token)
            .json(&json!({ "records": chunk }))
            .send()
            .await?
            .error_for_status()?;
    }
    Ok(missing.len())
}

/// One pass over every cluster. Returns true when every node of every
/// cluster holds the whole desired catalog.
pub async fn pass(state: &AppState, http: &reqwest::Client) -> anyhow::Result<bool> {
    let records = desired(state).await?;
    let snapshot = records.iter().map(|d| d.version).max().unwrap_or(0);
    let clusters = sqlx::query!("SELECT name, admin_urls, credential FROM clusters ORDER BY name")
        .fetch_all(state.db())
        .await?;
    let mut everywhere = true;
    for c in clusters {
        let token = String::from_utf8(state.master().open(&c.credential)?)?;
        let want: Vec<&Desired> = records
            .iter()
            .filter(|d| d.cluster.as_deref().is_none_or(|x| x == c.name))
            .collect();
        // The cluster's nodes, from the first admin URL that answers.
        let mut view = None;
        for u in &c.admin_urls {
            match http
                .get(format!("{u}/admin/v1/cluster"))
                .bearer_auth(&token)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    view = r.json::<Value>().await.ok();
                    break;
                }
                Ok(r) => {
                    tracing::warn!(cluster = c.name, url = u, status = %r.status(), "cluster view refused")
                }
                Err(e) => {
                    tracing::debug!(cluster = c.name, url = u, error = %e, "cluster unreachable")
                }
            }
        }
        let Some(view) = view else {
            everywhere = false;
            sqlx::query!(
                "UPDATE clusters SET health = $2 WHERE name = $1",
                c.name,
                json!({ "reachable": false, "nodes": [] })
            )
            .execute(state.db())
            .await?;
            continue;
        };
        let members = view["ring"]["members"].as_array().map_or(0, Vec::len);
        let mut nodes = Vec::new();
        for n in view["nodes"].as_array().into_iter().flatten() {
            let status = n["status"].as_str().unwrap_or("unknown").to_owned();
            if status == "left" {
                continue;
            }
            let Some(url) = n["http"].as_str() else {
                continue;
            };
            let mut h = NodeHealth {
                id: n["id"].as_str().unwrap_or_default().to_owned(),
                http: url.to_owned(),
                status,
                reachable: false,
                in_sync: false,
                pushed: 0,
            };
            match sync_node(state, http, url, &token, &want).await {
                Ok(pushed) => {
                    h.reachable = true;
                    h.in_sync = true;
                    h.pushed = pushed;
                }
                Err(e) => tracing::debug!(node = h.id, error = %e, "node not reconciled this pass"),
            }
            nodes.push(h);
        }
        let in_sync = !nodes.is_empty() && nodes.iter().all(|n| n.in_sync);
        everywhere &= in_sync;
        sqlx::query!(
            "UPDATE clusters SET node_count = $2, health = $3, checked_at = now() WHERE name = $1",
            c.name,
            members as i32,
            json!({ "reachable": true, "in_sync": in_sync, "nodes": nodes })
        )
        .execute(state.db())
        .await?;
        if in_sync {
            sqlx::query!(
                "UPDATE tables SET status = CASE status WHEN 'creating' THEN 'active' ELSE 'deleted' END,
                        updated_at = now()
                  WHERE cluster = $1 AND status IN ('creating', 'deleting') AND version <= $2",
                c.name,
                snapshot
            )
            .execute(state.db())
            .await?;
        }
    }
    if everywhere {
        sqlx::query!(
            "UPDATE api_keys SET status = 'active' WHERE status = 'pending' AND version <= $1",
            snapshot
        )
        .execute(state.db())
        .await?;
    }
    Ok(everywhere)
}

/// Runs passes while this replica holds the lock; returns when the lock's
/// connection fails or at shutdown.
async fn lead(
    state: &AppState,
    http: &dyno_tls::ReloadingClient,
    interval: Duration,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut conn = state.db().acquire().await?.detach();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut conn)
        .await?;
    if !got {
        conn.close().await.ok();
        return Ok(false);
    }
    tracing::info!("this replica reconciles the data plane now");
    loop {
        // The lock lives as long as this connection: check it each pass.
        conn.ping().await?;
        if let Err(e) = pass(state, &http.get()).await {
            tracing::warn!(error = %e, "reconciliation pass failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = state.woken() => {}
            _ = stop.changed() => {
                conn.close().await.ok();
                return Ok(true);
            }
        }
        if *stop.borrow() {
            conn.close().await.ok();
            return Ok(true);
        }
    }
}

/// The reconciler task: competes for the lock, reconciles while it holds
/// it, and stops at shutdown.
pub async fn run(state: AppState, interval: Duration, mut stop: watch::Receiver<bool>) {
    let http = match state.http_with(std::sync::Arc::new(|b| b.timeout(Duration::from_secs(5)))) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the reconciler's HTTP client");
            return;
        }
    };
    loop {
        if *stop.borrow() {
            return;
        }
        match lead(&state, &http, interval, &mut stop).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reconciler lost its database connection; competing again")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}
