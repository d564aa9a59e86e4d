//! Health for people: a cluster's live state for platform admins (each
//! node's status, φ, partitions, data, hint backlog, anti-entropy and
//! handoff progress, the ring epoch and any change under way), and the
//! service status of a tenant's own tables (from what the reconciler last
//! saw, without naming other tenants or node addresses).

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::AppState;
use crate::authz::Caller;
use crate::dataplane::api_error;
use crate::error::{ApiError, ApiResult};

/// One node of a cluster, live.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeDetail {
    /// Its id.
    pub id: String,
    /// `up`, `down`, `joining`, `leaving`, `left`, `standby`.
    pub status: String,
    /// The failure detector's suspicion (φ) of it, as the answering node
    /// sees it.
    pub phi: f64,
    /// Its HTTP address.
    pub http: Option<String>,
    /// Partitions it owns.
    pub partitions: u64,
    /// Partitions it will own after the change under way.
    pub partitions_next: Option<u64>,
    /// Keys it stores.
    pub keys: Option<u64>,
    /// Bytes it stores.
    pub bytes: Option<u64>,
    /// Hints it holds for other nodes, and their bytes (`None`: it did
    /// not answer).
    pub hints: Option<u64>,
    /// Their bytes.
    pub hint_bytes: Option<u64>,
    /// Anti-entropy: comparisons done and to do in the pass under way.
    pub repair_running: Option<(u64, u64)>,
    /// When its last anti-entropy pass finished (ms since the epoch), and
    /// the keys it repaired.
    pub repair_last: Option<(u64, u64)>,
    /// Handoff during a change: partitions received of those to receive.
    pub handoff: Option<(u64, u64)>,
}

/// A cluster's live state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterDetail {
    /// Its name.
    pub name: String,
    /// The node that answered.
    pub answered_by: String,
    /// The ring epoch.
    pub epoch: u64,
    /// Partitions.
    pub partitions: u64,
    /// Ring members.
    pub members: Vec<String>,
    /// The change under way (the data plane's summary), if any.
    #[schema(value_type = Option<Object>)]
    pub change: Option<Value>,
    /// Every node known.
    pub nodes: Vec<NodeDetail>,
}

/// An admin GET's JSON, when the node answers it.
async fn admin_get(
    state: &AppState,
    node: &crate::dataplane::ClusterAccess,
    path: &str,
) -> Option<Value> {
    state
        .data_plane(node, None, reqwest::Method::GET, path, &[], None)
        .await
        .ok()
        .filter(|a| a.status.is_success())
        .map(|a| a.body)
}

fn u(v: &Value) -> Option<u64> {
    v.as_u64()
}

/// A cluster's live state, from its nodes.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}", tag = "clusters",
    params(("cluster" = String, Path)), responses((status = 200, body = ClusterDetail), (status = 404), (status = 503)))]
pub async fn cluster(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ClusterDetail>> {
    let exists = sqlx::query_scalar!("SELECT 1 AS one FROM clusters WHERE name = $1", name)
        .fetch_optional(state.db())
        .await?;
    if exists.is_none() {
        return Err(ApiError::not_found("cluster", &name));
    }
    let access = state.cluster_access(&name).await?;
    let a = state
        .data_plane(
            &access,
            None,
            reqwest::Method::GET,
            "/admin/v1/cluster",
            &[],
            None,
        )
        .await?;
    if !a.status.is_success() {
        return Err(api_error(&a));
    }
    let view = a.body;
    let per_node = view["nodes"].as_array().cloned().unwrap_or_default();
    let mut nodes = Vec::new();
    // Each node reports its own hints and anti-entropy; ask them all at
    // once (a node that does not answer shows as unknown).
    let mut asks = tokio::task::JoinSet::new();
    for (i, n) in per_node.iter().enumerate() {
        let Some(http) = n["http"].as_str().map(str::to_owned) else {
            continue;
        };
        if n["status"] == "left" {
            continue;
        }
        let (state, mut one) = (state.clone(), access.clone());
        one.urls = vec![http];
        asks.spawn(async move {
            let hints = admin_get(&state, &one, "/admin/v1/hints").await;
            let repair = admin_get(&state, &one, "/admin/v1/repair").await;
            (i, hints, repair)
        });
    }
    let mut extra = vec![(None, None); per_node.len()];
    while let Some(Ok((i, h, r))) = asks.join_next().await {
        extra[i] = (h, r);
    }
    for (n, (hints, repair)) in per_node.iter().zip(extra) {
        // A node's hints view lists its backlog per target node.
        let (h, hb) = hints
            .as_ref()
            .and_then(|h| h["targets"].as_array().cloned())
            .map(|list| {
                list.iter().fold((0, 0), |(a, b), x| {
                    (
                        a + u(&x["hints"]).unwrap_or(0),
                        b + u(&x["bytes"]).unwrap_or(0),
                    )
                })
            })
            .map_or((None, None), |(a, b)| (Some(a), Some(b)));
        let running = repair.as_ref().and_then(|r| {
            let p = &r["running"];
            Some((u(&p["comparisons_done"])?, u(&p["comparisons_total"])?))
        });
        let last = repair.as_ref().and_then(|r| {
            let p = &r["last"];
            Some((u(&p["finished_ms"])?, u(&p["keys_repaired"])?))
        });
        let handoff = {
            let h = &n["handoff"];
            u(&h["partitions_done"]).zip(u(&h["partitions_total"]))
        };
        nodes.push(NodeDetail {
            id: n["id"].as_str().unwrap_or_default().to_owned(),
            status: n["status"].as_str().unwrap_or("unknown").to_owned(),
            phi: n["phi"].as_f64().unwrap_or(0.0),
            http: n["http"].as_str().map(str::to_owned),
            partitions: u(&n["partitions"]).unwrap_or(0),
            partitions_next: u(&n["partitions_next"]),
            keys: u(&n["keys"]),
            bytes: u(&n["bytes"]),
            hints: h,
            hint_bytes: hb,
            repair_running: running,
            repair_last: last,
            handoff,
        });
    }
    Ok(Json(ClusterDetail {
        name,
        answered_by: view["node"].as_str().unwrap_or_default().to_owned(),
        epoch: u(&view["ring"]["epoch"]).unwrap_or(0),
        partitions: u(&view["ring"]["partitions"]).unwrap_or(0),
        members: serde_json::from_value(view["ring"]["members"].clone()).unwrap_or_default(),
        change: Some(view["change"].clone()).filter(|c| !c.is_null()),
        nodes,
    }))
}

/// The service status of one of the caller's tables.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TableStatus {
    /// The table.
    pub table: String,
    /// `operational` (every node up and reached), `degraded` (enough
    /// nodes for the table's R and W), `unavailable` (fewer) or `unknown`
    /// (the control plane cannot reach the cluster).
    pub status: String,
    /// Nodes up and reached, of the cluster's nodes.
    pub nodes_up: u32,
    /// The cluster's nodes.
    pub nodes: u32,
    /// The table's N, R and W.
    pub n: i32,
    /// R.
    pub r: i32,
    /// W.
    pub w: i32,
    /// When the control plane last reached the cluster.
    pub checked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The service status of the caller's tables.
#[utoipa::path(get, path = "/api/v1/status", tag = "clusters",
    responses((status = 200, description = "{\"tables\": [TableStatus]}")))]
pub async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let rows = sqlx::query!(
        "SELECT t.name, t.n, t.r, t.w, c.health, c.checked_at FROM tables t
           JOIN clusters c ON c.name = t.cluster
          WHERE t.tenant = $1 AND t.status <> 'deleted' ORDER BY t.name",
        caller.own_tenant()?
    )
    .fetch_all(state.db())
    .await?;
    let tables: Vec<TableStatus> = rows
        .into_iter()
        .map(|r| {
            let nodes = r.health["nodes"].as_array().cloned().unwrap_or_default();
            let up = nodes
                .iter()
                .filter(|n| n["reachable"] == true && n["status"] == "up")
                .count() as u32;
            let total = nodes.len() as u32;
            let status = if r.health["reachable"] != true {
                "unknown"
            } else if up == total && total > 0 {
                "operational"
            } else if up >= r.r.max(r.w) as u32 {
                "degraded"
            } else {
                "unavailable"
            };
            TableStatus {
                table: r.name,
                status: status.to_owned(),
                nodes_up: up,
                nodes: total,
                n: r.n,
                r: r.r,
                w: r.w,
                checked_at: r.checked_at,
            }
        })
        .collect();
    Ok(Json(serde_json::json!({ "tables": tables })))
}
