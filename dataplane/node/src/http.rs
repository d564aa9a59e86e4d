//! The public HTTP/JSON API and the admin API (see the README for the
//! contract). Handlers validate input, call the node, and shape responses;
//! all error mapping goes through `ApiError`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use dyno_core::coordinator::Condition;
use dyno_core::hash::key_position;
use dyno_core::{Object, VersionVector};
use serde::Deserialize;
use serde_json::json;

use crate::api::{self, context_string};
use crate::catalog::{ConflictArg, TableConfig, TableEntry, validate_table_name};
use crate::error::ApiError;
use crate::grpc::PublicApi;
use crate::node::{Node, PutRequest};
use dyno_core::NodeId;
use dyno_proto::public::dyno_server::DynoServer;

pub use crate::api::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// The context header.
pub const CONTEXT_HEADER: &str = "x-dyno-context";

type AppState = Arc<Node>;

/// The router for the public and admin APIs.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/tables/{table}/items/{key}", get(get_item).put(put_item).delete(delete_item))
        .route("/admin/v1/tables", get(list_tables))
        .route("/admin/v1/tables/{table}", get(describe_table).put(create_table))
        .route("/admin/v1/tables/{table}/keys/{key}/preference-list", get(preference_list))
        .route("/admin/v1/tables/{table}/keys/{key}/replica", get(local_replica))
        .route("/admin/v1/hints", get(hints))
        .route("/admin/v1/cluster", get(cluster))
        .route("/admin/v1/cluster/join", axum::routing::post(join))
        .route("/admin/v1/cluster/decommission", axum::routing::post(decommission))
        .route("/admin/v1/cluster/abort", axum::routing::post(abort))
        .route("/admin/v1/repair", get(repair_status).post(repair_start))
        .route("/admin/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route_service(
            &format!("/{}/{{*rest}}", <DynoServer<PublicApi> as tonic::server::NamedService>::NAME),
            DynoServer::new(PublicApi::new(Arc::clone(&node)))
                .max_decoding_message_size(4 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .fallback(|| async {
            let body = json!({ "error": { "code": "NotFound", "message": "no such endpoint; see the README for the API" } });
            (StatusCode::NOT_FOUND, Json(body))
        })
        .layer(DefaultBodyLimit::max(MAX_VALUE_BYTES))
        .with_state(node)
}

fn check_key(key: &str) -> Result<Vec<u8>, ApiError> {
    api::check_key(key.as_bytes())?;
    Ok(key.as_bytes().to_vec())
}

type PathParams = Result<Path<(String, String)>, axum::extract::rejection::PathRejection>;

fn table_and_key(p: PathParams) -> Result<(String, Vec<u8>), ApiError> {
    let Path((table, key)) =
        p.map_err(|e| ApiError::bad("InvalidKey", format!("bad path: {e}")))?;
    Ok((table, check_key(&key)?))
}

/// Reads `?r=` or `?w=` from the query string (see `api::quorum`).
fn quorum_param(
    query: &Option<String>,
    name: &str,
    n: u32,
    default: u32,
) -> Result<usize, ApiError> {
    let value = query.as_deref().and_then(|q| {
        // The last occurrence wins, as with most query parsers.
        q.split('&').rev().filter(|p| !p.is_empty()).find_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k == name).then_some(v)
        })
    });
    api::quorum(name, value, n, default)
}

fn context_header(headers: &HeaderMap, name: &str) -> Result<Option<VersionVector>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::bad("InvalidContext", format!("{name} is not ASCII")))?;
            api::parse_context(name, s).map(Some)
        }
    }
}

fn condition(headers: &HeaderMap) -> Result<Option<Condition>, ApiError> {
    if let Some(ctx) = context_header(headers, "if-match")? {
        return Ok(Some(Condition::IfMatch(ctx)));
    }
    match headers.get(header::IF_NONE_MATCH).map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok("*")) => Ok(Some(Condition::IfNoneMatch)),
        Some(_) => Err(ApiError::bad(
            "InvalidCondition",
            "If-None-Match only supports \"*\"",
        )),
    }
}

fn record(
    node: &Node,
    op: &'static str,
    table: &str,
    started: Instant,
    res: &Result<Response, ApiError>,
) {
    api::record(node, op, table, started, res.as_ref().err());
}

async fn get_item(
    State(node): State<AppState>,
    path: PathParams,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (table, key) = table_and_key(path)?;
    let res = get_item_inner(&node, &table, &key, q, &headers).await;
    record(&node, "get", &table, started, &res);
    res
}

async fn get_item_inner(
    node: &Arc<Node>,
    table: &str,
    key: &[u8],
    q: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let cfg = node.table(table)?;
    let r = quorum_param(&q, "r", cfg.n, cfg.r)?;
    let state = node.get(table, key, r).await?;
    let values: Vec<&Bytes> = state
        .as_ref()
        .map(|o| o.live_values().collect())
        .unwrap_or_default();
    let context = context_string(state.as_ref());
    let raw = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/octet-stream"));
    let body = json!({ "context": context, "values": values.iter().map(|v| B64.encode(v)).collect::<Vec<_>>() });
    let status = match values.len() {
        0 => StatusCode::NOT_FOUND,
        1 => StatusCode::OK,
        _ if raw => StatusCode::MULTIPLE_CHOICES,
        _ => StatusCode::OK,
    };
    if raw && let [only] = values.as_slice() {
        let mut resp = (StatusCode::OK, (*only).clone()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Some(c) = context
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            resp.headers_mut().insert(CONTEXT_HEADER, c);
        }
        return Ok(resp);
    }
    Ok((status, Json(body)).into_response())
}

async fn put_item(
    State(node): State<AppState>,
    path: PathParams,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (table, key) = table_and_key(path)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let size = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(MAX_VALUE_BYTES + 1);
            ApiError::ValueTooLarge {
                size,
                limit: MAX_VALUE_BYTES,
            }
        } else {
            ApiError::bad("InvalidBody", e.body_text())
        }
    })?;
    let res = write_inner(&node, table.clone(), key, Some(body), q, &headers).await;
    record(&node, "put", &table, started, &res);
    res
}

async fn delete_item(
    State(node): State<AppState>,
    path: PathParams,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (table, key) = table_and_key(path)?;
    let res = write_inner(&node, table.clone(), key, None, q, &headers).await;
    record(&node, "delete", &table, started, &res);
    res
}

async fn write_inner(
    node: &Arc<Node>,
    table: String,
    key: Vec<u8>,
    value: Option<Bytes>,
    q: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let cfg = node.table(&table)?;
    let w = quorum_param(&q, "w", cfg.n, cfg.w)?;
    let context = context_header(headers, CONTEXT_HEADER)?.unwrap_or_default();
    let condition = condition(headers)?;
    let result = node
        .put(PutRequest {
            table,
            key,
            value,
            context,
            w,
            condition,
        })
        .await?;
    Ok(Json(json!({ "context": result.context })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTable {
    n: u32,
    r: u32,
    w: u32,
    #[serde(default)]
    conflict: ConflictArg,
}

fn describe(e: &TableEntry) -> serde_json::Value {
    json!({ "name": e.name, "n": e.config.n, "r": e.config.r, "w": e.config.w, "conflict": e.config.conflict, "version": e.version })
}

async fn create_table(
    State(node): State<AppState>,
    Path(table): Path<String>,
    body: Result<Json<CreateTable>, JsonRejection>,
) -> Result<Response, ApiError> {
    validate_table_name(&table)?;
    let Json(spec) = body.map_err(|e| ApiError::bad("InvalidTableConfig", e.body_text()))?;
    let config = TableConfig {
        n: spec.n,
        r: spec.r,
        w: spec.w,
        conflict: spec.conflict,
    };
    config.validate(node.cluster.topology().current.members().len())?;
    if let Some(existing) = node.catalog.get(&table)
        && existing.n != config.n
    {
        return Err(ApiError::Conflict {
            code: "ImmutableSetting",
            message: format!(
                "table {table} has n = {}; a table's replication factor cannot change (create a new table)",
                existing.n
            ),
        });
    }
    let entry = TableEntry {
        name: table,
        config,
        version: node.replica.now().0,
    };
    let catalog = Arc::clone(&node.catalog);
    let e = entry.clone();
    tokio::task::spawn_blocking(move || catalog.merge(e))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    // Tell the other nodes now; the periodic exchange covers any that miss it.
    crate::background::push_catalog_to_all(&node).await;
    Ok(Json(describe(&entry)).into_response())
}

async fn list_tables(State(node): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "tables": node.catalog.list().iter().map(describe).collect::<Vec<_>>() }))
}

async fn describe_table(
    State(node): State<AppState>,
    Path(table): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    node.catalog
        .list()
        .into_iter()
        .find(|e| e.name == table)
        .map(|e| Json(describe(&e)))
        .ok_or(ApiError::TableNotFound { table })
}

async fn preference_list(
    State(node): State<AppState>,
    path: PathParams,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (table, key) = table_and_key(path)?;
    let cfg = node.table(&table)?;
    let pos = key_position(&table, &key);
    let topology = node.cluster.topology();
    let pl = topology.current.preference_list_for(pos, cfg.n as usize);
    let nodes: Vec<_> = pl
        .all()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = if i < pl.primaries().len() {
                "primary"
            } else {
                "fallback"
            };
            json!({ "id": m.id.as_str(), "role": role, "up": node.is_up(&m.id) })
        })
        .collect();
    Ok(Json(
        json!({ "partition": pl.partition.0, "position": format!("{pos:016x}"), "nodes": nodes }),
    ))
}

async fn local_replica(
    State(node): State<AppState>,
    path: PathParams,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (table, key) = table_and_key(path)?;
    node.table(&table)?;
    let replica = Arc::clone(&node.replica);
    let state = tokio::task::spawn_blocking(move || replica.get_item(&table, &key))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let values: Vec<String> = state
        .as_ref()
        .map(|o| o.live_values().map(|v| B64.encode(v)).collect())
        .unwrap_or_default();
    Ok(Json(json!({
        "node": node.me.as_str(),
        "exists": state.is_some(),
        "tombstone": state.as_ref().is_some_and(Object::is_tombstone),
        "context": context_string(state.as_ref()),
        "values": values,
    })))
}

async fn hints(State(node): State<AppState>) -> Json<serde_json::Value> {
    let targets: Vec<_> = node
        .replica
        .backlog()
        .into_iter()
        .map(|(t, b)| json!({ "node": t.as_str(), "hints": b.hints, "bytes": b.bytes }))
        .collect();
    Json(json!({ "targets": targets }))
}

async fn cluster(State(node): State<AppState>) -> Json<serde_json::Value> {
    node.refresh_load();
    let topology = node.cluster.topology();
    let view = node.cluster.view();
    let mut ids: std::collections::BTreeSet<NodeId> = view.nodes().keys().cloned().collect();
    ids.extend(topology.nodes());
    let nodes: Vec<_> = ids
        .iter()
        .map(|id| {
            let state = view.get(id);
            let owned_now: Vec<u32> = topology
                .current
                .partitions_owned_by(id)
                .iter()
                .map(|p| p.0)
                .collect();
            let (liveness, phi) = node.cluster.liveness(id);
            let in_current = topology.current.member(id).is_some();
            let in_next = topology.next.as_ref().map(|n| n.member(id).is_some());
            let status = match state.map(|s| s.status) {
                Some(dyno_core::NodeStatus::Left) => "left",
                _ if liveness == crate::cluster::Liveness::Suspect => "down",
                _ if !in_current && in_next == Some(true) => "joining",
                _ if in_current && in_next == Some(false) => "leaving",
                _ if in_current => "up",
                _ => "standby",
            };
            json!({
                "id": id.as_str(),
                "self": id == &node.me,
                "status": status,
                "liveness": liveness,
                "phi": if phi.is_finite() { (phi * 100.0).round() / 100.0 } else { 1e9 },
                "generation": state.map(|s| s.generation),
                "heartbeat": state.map(|s| s.heartbeat),
                "http": state.map(|s| s.addresses.http.clone()),
                "rpc": state.map(|s| s.addresses.rpc.clone()),
                "ring_version": state.map(|s| s.ring_version),
                "keys": state.map(|s| s.load.keys),
                "bytes": state.map(|s| s.load.bytes),
                "partitions": owned_now.len(),
                "partition_ids": owned_now,
                "partitions_next": topology.next.as_ref().map(|n| n.partitions_owned_by(id).len()),
                "handoff": state.map(|s| json!({
                    "epoch": s.handoff.epoch,
                    "partitions_done": s.handoff.done,
                    "partitions_total": s.handoff.total,
                    "bytes": s.handoff.bytes,
                    "complete": topology.next.is_some() && s.handoff.complete_for(topology.epoch),
                })),
            })
        })
        .collect();
    let change = crate::handoff::planned_movement(&node, &topology).map(|m| {
        // Sum the gossiped reports of this change's nodes.
        let (mut done, mut total, mut bytes) = (0u64, 0u64, 0u64);
        for s in topology.nodes().iter().filter_map(|id| view.get(id)) {
            if s.handoff.epoch == topology.epoch {
                done += u64::from(s.handoff.done);
                total += u64::from(s.handoff.total);
                bytes += s.handoff.bytes;
            }
        }
        json!({
            "partition_replicas_to_move": m.moved,
            "partitions_reassigned": m.partitions_reassigned,
            "partition_replicas_total": m.total,
            "partitions_done": done,
            "partitions_reported": total,
            "bytes_received": bytes,
        })
    });
    Json(json!({
        "node": node.me.as_str(),
        "ring": {
            "epoch": topology.epoch,
            "version": topology.current.version(),
            "partitions": topology.current.partition_count(),
            "members": topology.current.members().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            "next_members": topology.next.as_ref().map(|n| n.members().iter().map(|m| m.id.as_str()).collect::<Vec<_>>()),
        },
        "change": change,
        "handoff": node.handoff.report(),
        "drop_pending": crate::handoff::sweep_due(&node),
        "nodes": nodes,
    }))
}

#[derive(Debug, Deserialize)]
struct NodeRequest {
    node: String,
    #[serde(default)]
    zone: Option<String>,
}

fn node_request(
    body: Result<Json<NodeRequest>, JsonRejection>,
) -> Result<(NodeId, Option<String>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::bad("InvalidRequest", e.body_text()))?;
    let id = NodeId::new(&req.node).map_err(|e| ApiError::bad("InvalidNode", e.to_string()))?;
    Ok((id, req.zone))
}

fn began_response(b: crate::change::Began) -> Response {
    let body = json!({
        "epoch": b.epoch,
        "partition_replicas_to_move": b.moved,
        "partitions_reassigned": b.reassigned,
        "partition_replicas_total": b.total,
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

async fn join(
    State(node): State<AppState>,
    body: Result<Json<NodeRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (id, zone) = node_request(body)?;
    crate::change::request(&node, crate::change::Action::Join, id, zone)
        .await
        .map(began_response)
}

async fn decommission(
    State(node): State<AppState>,
    body: Result<Json<NodeRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (id, _) = node_request(body)?;
    crate::change::request(&node, crate::change::Action::Decommission, id, None)
        .await
        .map(began_response)
}

async fn abort(State(node): State<AppState>) -> Result<Response, ApiError> {
    crate::change::request(&node, crate::change::Action::Abort, node.me.clone(), None)
        .await
        .map(began_response)
}

async fn repair_status(State(node): State<AppState>) -> Json<crate::aae::RepairStatus> {
    Json(node.repair.status())
}

async fn repair_start(State(node): State<AppState>) -> Response {
    let id = node.repair.request();
    (
        StatusCode::ACCEPTED,
        Json(json!({ "pass": id, "status": node.repair.status() })),
    )
        .into_response()
}

async fn health(State(node): State<AppState>) -> Json<serde_json::Value> {
    let t = node.cluster.topology();
    Json(json!({
        "status": "ok",
        "node": node.me.as_str(),
        "generation": node.cluster.local().generation,
        "ring_epoch": t.epoch,
    }))
}

async fn metrics(State(node): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics.render(),
    )
}
