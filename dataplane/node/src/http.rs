//! The public HTTP/JSON API and the admin API (see the README for the
//! contract): an adapter over [`Service`]. Handlers parse paths, queries,
//! headers and bodies, call one service function, and shape the response.
//! [`ServiceError`]s become HTTP responses in one place, `error_response`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use dyno_proto::public::dyno_server::DynoServer;
use serde::Deserialize;
use serde_json::json;

use crate::catalog::TableEntry;
use crate::change::{Action, Began};
use crate::error::{ErrorCode, ErrorKind, ServiceError};
use crate::grpc::PublicApi;
use crate::service::{Condition, GetItem, Service, TableSpec, WriteItem, parse_quorum};

pub use crate::service::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// The context header.
pub const CONTEXT_HEADER: &str = "x-dyno-context";

/// The HTTP status of an error code: the one mapping for HTTP.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code.kind() {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error as an HTTP response: `{"error": {"code", "message"}}`. Internal
/// errors are logged here, where they are handled, and hidden from the
/// client.
fn error_response(e: &ServiceError) -> Response {
    if e.code == ErrorCode::Internal {
        tracing::error!(error = %e.message, "internal error while serving a request");
    }
    let body = json!({ "error": { "code": e.code.as_str(), "message": e.client_message() } });
    (status_of(e.code), Json(body)).into_response()
}

/// A handler's error.
#[derive(Debug)]
pub struct HttpError(ServiceError);

impl From<ServiceError> for HttpError {
    fn from(e: ServiceError) -> Self {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

type Result<T> = std::result::Result<T, HttpError>;

fn bad(code: ErrorCode, message: impl Into<String>) -> HttpError {
    HttpError(ServiceError::new(code, message))
}

/// The router for the public and admin APIs.
pub fn router(service: Service) -> Router {
    Router::new()
        .route("/v1/tables/{table}/items/{key}", get(get_item).put(put_item).delete(delete_item))
        .route("/admin/v1/tables", get(list_tables))
        .route("/admin/v1/tables/{table}", get(describe_table).put(create_table))
        .route("/admin/v1/tables/{table}/keys/{key}/preference-list", get(preference_list))
        .route("/admin/v1/tables/{table}/keys/{key}/replica", get(local_replica))
        .route("/admin/v1/hints", get(hints))
        .route("/admin/v1/cluster", get(cluster))
        .route("/admin/v1/cluster/join", post(join))
        .route("/admin/v1/cluster/decommission", post(decommission))
        .route("/admin/v1/cluster/abort", post(abort))
        .route("/admin/v1/repair", get(repair_status).post(repair_start))
        .route("/admin/v1/workers", get(workers))
        .route("/admin/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route_service(
            &format!("/{}/{{*rest}}", <DynoServer<PublicApi> as tonic::server::NamedService>::NAME),
            DynoServer::new(PublicApi::new(service.clone()))
                .max_decoding_message_size(4 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .fallback(|| async {
            let body = json!({ "error": { "code": "NotFound", "message": "no such endpoint; see the README for the API" } });
            (StatusCode::NOT_FOUND, Json(body))
        })
        .layer(DefaultBodyLimit::max(MAX_VALUE_BYTES))
        .with_state(service)
}

type PathParams =
    std::result::Result<Path<(String, String)>, axum::extract::rejection::PathRejection>;

fn table_and_key(p: PathParams) -> Result<(String, Vec<u8>)> {
    let Path((table, key)) = p.map_err(|e| bad(ErrorCode::InvalidKey, format!("bad path: {e}")))?;
    Ok((table, key.into_bytes()))
}

/// The value of `name` in a query string (the last occurrence wins, as
/// with most query parsers).
fn query_param<'q>(query: &'q Option<String>, name: &str) -> Option<&'q str> {
    query.as_deref().and_then(|q| {
        q.split('&').rev().filter(|p| !p.is_empty()).find_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k == name).then_some(v)
        })
    })
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str, code: ErrorCode) -> Result<Option<&'h str>> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| bad(code, format!("{name} is not ASCII")))
        })
        .transpose()
}

fn condition(headers: &HeaderMap) -> Result<Condition> {
    if let Some(c) = header_str(headers, "if-match", ErrorCode::InvalidContext)? {
        return Ok(Condition::IfMatch(c.to_owned()));
    }
    match headers.get(header::IF_NONE_MATCH).map(|v| v.to_str()) {
        None => Ok(Condition::None),
        Some(Ok("*")) => Ok(Condition::IfNoneMatch),
        Some(_) => Err(bad(
            ErrorCode::InvalidCondition,
            "If-None-Match only supports \"*\"",
        )),
    }
}

async fn get_item(
    State(service): State<Service>,
    path: PathParams,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let (table, key) = table_and_key(path)?;
    let r = parse_quorum("r", query_param(&q, "r"))?;
    let ctx = service.anonymous_ctx();
    let read = service.get_item(&ctx, GetItem { table, key, r }).await?;
    let raw = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/octet-stream"));
    let status = match read.values.len() {
        0 => StatusCode::NOT_FOUND,
        1 => StatusCode::OK,
        _ if raw => StatusCode::MULTIPLE_CHOICES,
        _ => StatusCode::OK,
    };
    if raw && let [only] = read.values.as_slice() {
        let mut resp = (StatusCode::OK, only.clone()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Some(c) = read
            .context
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            resp.headers_mut().insert(CONTEXT_HEADER, c);
        }
        return Ok(resp);
    }
    let values: Vec<String> = read.values.iter().map(|v| B64.encode(v)).collect();
    Ok((
        status,
        Json(json!({ "context": read.context, "values": values })),
    )
        .into_response())
}

async fn put_item(
    State(service): State<Service>,
    path: PathParams,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let (table, key) = table_and_key(path)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let size = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(MAX_VALUE_BYTES + 1);
            HttpError(ServiceError::value_too_large(size, MAX_VALUE_BYTES))
        } else {
            bad(ErrorCode::InvalidBody, e.body_text())
        }
    })?;
    write(&service, table, key, Some(body), q, &headers).await
}

async fn delete_item(
    State(service): State<Service>,
    path: PathParams,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let (table, key) = table_and_key(path)?;
    write(&service, table, key, None, q, &headers).await
}

async fn write(
    service: &Service,
    table: String,
    key: Vec<u8>,
    value: Option<Bytes>,
    q: Option<String>,
    headers: &HeaderMap,
) -> Result<Response> {
    let req = WriteItem {
        table,
        key,
        value,
        context: header_str(headers, CONTEXT_HEADER, ErrorCode::InvalidContext)?.map(str::to_owned),
        w: parse_quorum("w", query_param(&q, "w"))?,
        condition: condition(headers)?,
    };
    let ctx = service.anonymous_ctx();
    let written = service.write_item(&ctx, req).await?;
    Ok(Json(json!({ "context": written.context })).into_response())
}

fn describe(e: &TableEntry) -> serde_json::Value {
    json!({ "name": e.name, "n": e.config.n, "r": e.config.r, "w": e.config.w, "conflict": e.config.conflict, "version": e.version })
}

async fn create_table(
    State(service): State<Service>,
    Path(table): Path<String>,
    body: std::result::Result<Json<TableSpec>, JsonRejection>,
) -> Result<Response> {
    crate::catalog::validate_table_name(&table)?;
    let Json(spec) = body.map_err(|e| bad(ErrorCode::InvalidTableConfig, e.body_text()))?;
    let ctx = service.anonymous_ctx();
    let entry = service.create_table(&ctx, &table, spec).await?;
    Ok(Json(describe(&entry)).into_response())
}

async fn list_tables(State(service): State<Service>) -> Json<serde_json::Value> {
    let ctx = service.anonymous_ctx();
    let tables: Vec<_> = service.list_tables(&ctx).iter().map(describe).collect();
    Json(json!({ "tables": tables }))
}

async fn describe_table(
    State(service): State<Service>,
    Path(table): Path<String>,
) -> Result<Json<serde_json::Value>> {
    let ctx = service.anonymous_ctx();
    Ok(Json(describe(&service.describe_table(&ctx, &table)?)))
}

async fn preference_list(State(service): State<Service>, path: PathParams) -> Result<Response> {
    let (table, key) = table_and_key(path)?;
    let ctx = service.anonymous_ctx();
    Ok(Json(service.preference_list(&ctx, &table, &key)?).into_response())
}

async fn local_replica(
    State(service): State<Service>,
    path: PathParams,
) -> Result<Json<serde_json::Value>> {
    let (table, key) = table_and_key(path)?;
    let ctx = service.anonymous_ctx();
    let r = service.local_replica(&ctx, &table, &key).await?;
    let values: Vec<String> = r
        .object
        .as_ref()
        .map(|o| o.live_values().map(|v| B64.encode(v)).collect())
        .unwrap_or_default();
    Ok(Json(json!({
        "node": r.node,
        "exists": r.object.is_some(),
        "tombstone": r.object.as_ref().is_some_and(dyno_core::Object::is_tombstone),
        "context": r.context,
        "values": values,
    })))
}

async fn hints(State(service): State<Service>) -> Json<serde_json::Value> {
    Json(json!({ "targets": service.hints() }))
}

async fn cluster(State(service): State<Service>) -> Result<Response> {
    Ok(Json(service.cluster_view()?).into_response())
}

#[derive(Debug, Deserialize)]
struct NodeRequest {
    node: String,
    #[serde(default)]
    zone: Option<String>,
}

fn began_response(b: Began) -> Response {
    let body = json!({
        "epoch": b.epoch,
        "partition_replicas_to_move": b.moved,
        "partitions_reassigned": b.reassigned,
        "partition_replicas_total": b.total,
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// Begins a join or a decommission of the node the body names.
async fn ring_change(
    service: &Service,
    action: Action,
    body: std::result::Result<Json<NodeRequest>, JsonRejection>,
) -> Result<Response> {
    let Json(req) = body.map_err(|e| bad(ErrorCode::InvalidRequest, e.body_text()))?;
    // A zone matters only to a node joining.
    let zone = if action == Action::Join {
        req.zone
    } else {
        None
    };
    let ctx = service.anonymous_ctx();
    let began = service
        .change_ring(&ctx, action, Some(&req.node), zone)
        .await?;
    Ok(began_response(began))
}

async fn join(
    State(service): State<Service>,
    body: std::result::Result<Json<NodeRequest>, JsonRejection>,
) -> Result<Response> {
    ring_change(&service, Action::Join, body).await
}

async fn decommission(
    State(service): State<Service>,
    body: std::result::Result<Json<NodeRequest>, JsonRejection>,
) -> Result<Response> {
    ring_change(&service, Action::Decommission, body).await
}

async fn abort(State(service): State<Service>) -> Result<Response> {
    let ctx = service.anonymous_ctx();
    let began = service.change_ring(&ctx, Action::Abort, None, None).await?;
    Ok(began_response(began))
}

async fn repair_status(State(service): State<Service>) -> Response {
    Json(service.repair_status()).into_response()
}

async fn repair_start(State(service): State<Service>) -> Response {
    let id = service.request_repair();
    (
        StatusCode::ACCEPTED,
        Json(json!({ "pass": id, "status": service.repair_status() })),
    )
        .into_response()
}

async fn workers(State(service): State<Service>) -> Json<serde_json::Value> {
    Json(json!({ "workers": service.workers() }))
}

async fn health(State(service): State<Service>) -> Response {
    Json(service.health()).into_response()
}

async fn metrics(State(service): State<Service>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        service.metrics_text(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code has the status its family promises; the two that a
    /// forwarded error used to get wrong are pinned.
    #[test]
    fn every_code_maps_to_its_status() {
        for code in ErrorCode::ALL {
            let status = status_of(code);
            let want = match code.kind() {
                ErrorKind::BadRequest => 400,
                ErrorKind::TooLarge => 413,
                ErrorKind::NotFound => 404,
                ErrorKind::PreconditionFailed => 412,
                ErrorKind::Conflict => 409,
                ErrorKind::Unavailable => 503,
                ErrorKind::Internal => 500,
            };
            assert_eq!(status.as_u16(), want, "{code}");
        }
        assert_eq!(
            status_of(ErrorCode::ValueTooLarge),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(status_of(ErrorCode::TableNotFound), StatusCode::NOT_FOUND);
    }
}
