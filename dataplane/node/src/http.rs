//! The public HTTP/JSON API and the admin API (see the README for the
//! contract): an adapter over [`Service`]. Handlers parse paths, queries,
//! headers and bodies, call one service function, and shape the response.
//! [`ServiceError`]s become HTTP responses in one place, `error_response`.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use dyno_proto::public::dyno_server::DynoServer;
use serde::Deserialize;
use serde_json::json;

use crate::catalog::{Record, TableEntry};
use crate::change::{Action, Began};
use crate::error::{ErrorCode, ErrorKind, ServiceError};
use crate::grpc::PublicApi;
use crate::service::{
    Condition, GetItem, RequestCtx, ScanItems, Service, TableSpec, WriteItem, parse_quorum,
};

pub use crate::service::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// The context header.
pub const CONTEXT_HEADER: &str = "x-dyno-context";
/// The header naming the tenant an admin request acts in (items API).
pub const TENANT_HEADER: &str = "x-dyno-tenant";

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
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Throttled => StatusCode::TOO_MANY_REQUESTS,
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
    let mut resp = (status_of(e.code), Json(body)).into_response();
    if let Some(secs) = e.retry_after_secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if e.code == ErrorCode::Unauthorized {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"dyno\""),
        );
    }
    resp
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

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The context of an authenticated client request (the items API).
#[derive(Debug)]
pub struct Client(pub RequestCtx);

impl FromRequestParts<Service> for Client {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        service: &Service,
    ) -> Result<Client> {
        let mut ctx = service.authenticate(authorization(&parts.headers))?;
        if let Some(tenant) = header_str(&parts.headers, TENANT_HEADER, ErrorCode::InvalidRequest)?
        {
            service.act_in_tenant(&mut ctx, tenant)?;
        }
        Ok(Client(ctx))
    }
}

/// Lets only holders of the admin credential through.
async fn require_admin(
    State(service): State<Service>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match service.authenticate_admin(authorization(request.headers())) {
        Ok(_) => next.run(request).await,
        Err(e) => error_response(&e),
    }
}

/// The router for the public and admin APIs.
///
/// Authentication happens in two places only: the [`Client`] extractor of
/// the items API (an API key, or the admin credential), and the
/// `require_admin` layer in front of every admin route but
/// `/admin/v1/health` (and `/metrics` with `--metrics-require-token`).
pub fn router(service: Service) -> Router {
    let admin = Router::new()
        .route("/admin/v1/tables", get(list_tables))
        .route(
            "/admin/v1/tables/{table}",
            get(describe_table).put(create_table),
        )
        .route(
            "/admin/v1/tables/{table}/keys/{key}/preference-list",
            get(preference_list),
        )
        .route(
            "/admin/v1/tables/{table}/keys/{key}/replica",
            get(local_replica),
        )
        .route("/admin/v1/tenants/{tenant}/tables", get(tenant_list_tables))
        .route(
            "/admin/v1/tenants/{tenant}/tables/{table}",
            get(describe_table).put(create_table),
        )
        .route(
            "/admin/v1/tenants/{tenant}/tables/{table}/keys/{key}/preference-list",
            get(preference_list),
        )
        .route(
            "/admin/v1/tenants/{tenant}/tables/{table}/keys/{key}/replica",
            get(local_replica),
        )
        .route(
            "/admin/v1/catalog",
            get(catalog_versions).put(catalog_merge),
        )
        .route("/admin/v1/hints", get(hints))
        .route("/admin/v1/cluster", get(cluster))
        .route("/admin/v1/cluster/join", post(join))
        .route("/admin/v1/cluster/decommission", post(decommission))
        .route("/admin/v1/cluster/abort", post(abort))
        .route("/admin/v1/cluster/zone", post(set_zone))
        .route("/admin/v1/repair", get(repair_status).post(repair_start))
        .route("/admin/v1/workers", get(workers))
        .route("/admin/v1/storage", get(storage))
        .route("/admin/v1/tls", get(tls))
        .route("/admin/v1/faults/links", put(set_link_faults))
        .route("/admin/v1/faults/disk", put(set_disk_fault))
        .route(
            "/admin/v1/faults/tables/{table}/keys/{key}/damage",
            post(damage_item),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            require_admin,
        ));
    let metrics_route = if service.metrics_require_token() {
        Router::new().route("/metrics", get(metrics)).route_layer(
            axum::middleware::from_fn_with_state(service.clone(), require_admin),
        )
    } else {
        Router::new().route("/metrics", get(metrics))
    };
    Router::new()
        .route(
            "/",
            get(crate::dynamo::health).post(crate::dynamo::handle).layer(DefaultBodyLimit::max(
                crate::dynamo::MAX_REQUEST_BYTES,
            )),
        )
        .route("/v1/tables/{table}/items", get(scan_items))
        .route("/v1/tables/{table}/items/{key}", get(get_item).put(put_item).delete(delete_item))
        .route("/admin/v1/health", get(health))
        .merge(admin)
        .merge(metrics_route)
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
    Client(ctx): Client,
    path: PathParams,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let (table, key) = table_and_key(path)?;
    let r = parse_quorum("r", query_param(&q, "r"))?;
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

/// `GET /v1/tables/{table}/items?limit=&after=&r=`: a page of the
/// table's live items in ring order; `next` resumes it.
async fn scan_items(
    State(service): State<Service>,
    Client(ctx): Client,
    table: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let Path(table) =
        table.map_err(|e| bad(ErrorCode::InvalidRequest, format!("bad path: {e}")))?;
    let limit = query_param(&q, "limit")
        .map(|l| {
            l.parse::<usize>().map_err(|_| {
                bad(
                    ErrorCode::InvalidRequest,
                    format!("limit is a whole number, not {l:?}"),
                )
            })
        })
        .transpose()?;
    let after = query_param(&q, "after")
        .map(|a| {
            B64URL.decode(a).map_err(|_| {
                bad(
                    ErrorCode::InvalidKey,
                    "after is the `next` of a previous page (base64url)",
                )
            })
        })
        .transpose()?;
    let r = parse_quorum("r", query_param(&q, "r"))?;
    let page = service
        .scan_items(
            &ctx,
            ScanItems {
                table,
                after,
                limit,
                r,
            },
        )
        .await?;
    let items: Vec<serde_json::Value> = page
        .items
        .iter()
        .map(|i| {
            json!({
                "key": B64.encode(&i.key),
                "values": i.values.iter().map(|v| B64.encode(v)).collect::<Vec<_>>(),
                "context": i.context,
            })
        })
        .collect();
    Ok(
        Json(json!({ "items": items, "next": page.next.map(|k| B64URL.encode(k)) }))
            .into_response(),
    )
}

async fn put_item(
    State(service): State<Service>,
    Client(ctx): Client,
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
    write(&service, &ctx, table, key, Some(body), q, &headers).await
}

async fn delete_item(
    State(service): State<Service>,
    Client(ctx): Client,
    path: PathParams,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let (table, key) = table_and_key(path)?;
    write(&service, &ctx, table, key, None, q, &headers).await
}

async fn write(
    service: &Service,
    ctx: &RequestCtx,
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
    let written = service.write_item(ctx, req).await?;
    Ok(Json(json!({ "context": written.context })).into_response())
}

fn describe(e: &TableEntry) -> serde_json::Value {
    json!({
        "name": e.display_name(),
        "tenant": e.tenant,
        "n": e.config.n,
        "r": e.config.r,
        "w": e.config.w,
        "conflict": e.config.conflict,
        "throughput_limit": e.throughput_limit,
        "storage_name": e.name,
        "version": e.version,
    })
}

type TableBody = std::result::Result<Json<TableSpec>, JsonRejection>;
type Rejectable<T> = std::result::Result<Path<T>, axum::extract::rejection::PathRejection>;

/// An admin table route's path: `/admin/v1/tables/{table}…` (the tenant
/// `default`) or `/admin/v1/tenants/{tenant}/tables/{table}…`; the same
/// handler serves both.
#[derive(Debug, Deserialize)]
struct TableParams {
    #[serde(default)]
    tenant: Option<String>,
    table: String,
}

/// The same, with a key: `…/keys/{key}/preference-list` and `…/replica`.
#[derive(Debug, Deserialize)]
struct KeyParams {
    #[serde(default)]
    tenant: Option<String>,
    table: String,
    key: String,
}

fn params<T>(p: Rejectable<T>) -> Result<T> {
    let Path(t) = p.map_err(|e| bad(ErrorCode::InvalidKey, format!("bad path: {e}")))?;
    Ok(t)
}

async fn create_table(
    State(service): State<Service>,
    path: Rejectable<TableParams>,
    body: TableBody,
) -> Result<Response> {
    let p = params(path)?;
    let ctx = service.admin_ctx(p.tenant.as_deref())?;
    crate::catalog::validate_table_name(&p.table)?;
    let Json(spec) = body.map_err(|e| bad(ErrorCode::InvalidTableConfig, e.body_text()))?;
    let entry = service.create_table(&ctx, &p.table, spec).await?;
    Ok(Json(describe(&entry)).into_response())
}

fn list_in(service: &Service, tenant: Option<&str>) -> Result<Json<serde_json::Value>> {
    let ctx = service.admin_ctx(tenant)?;
    let tables: Vec<_> = service.list_tables(&ctx).iter().map(describe).collect();
    Ok(Json(json!({ "tables": tables })))
}

async fn list_tables(State(service): State<Service>) -> Result<Json<serde_json::Value>> {
    list_in(&service, None)
}

async fn tenant_list_tables(
    State(service): State<Service>,
    Path(tenant): Path<String>,
) -> Result<Json<serde_json::Value>> {
    list_in(&service, Some(&tenant))
}

async fn describe_table(
    State(service): State<Service>,
    path: Rejectable<TableParams>,
) -> Result<Json<serde_json::Value>> {
    let p = params(path)?;
    let ctx = service.admin_ctx(p.tenant.as_deref())?;
    Ok(Json(describe(&service.describe_table(&ctx, &p.table)?)))
}

async fn preference_list(
    State(service): State<Service>,
    path: Rejectable<KeyParams>,
) -> Result<Response> {
    let p = params(path)?;
    let ctx = service.admin_ctx(p.tenant.as_deref())?;
    Ok(Json(service.preference_list(&ctx, &p.table, p.key.as_bytes())?).into_response())
}

async fn local_replica(
    State(service): State<Service>,
    path: Rejectable<KeyParams>,
) -> Result<Json<serde_json::Value>> {
    let p = params(path)?;
    let ctx = service.admin_ctx(p.tenant.as_deref())?;
    let r = service
        .local_replica(&ctx, &p.table, p.key.as_bytes())
        .await?;
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

/// `PUT /admin/v1/catalog`: records to merge (the control plane's
/// reconciler).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogPush {
    records: Vec<Record>,
}

async fn catalog_versions(State(service): State<Service>) -> Json<serde_json::Value> {
    Json(json!({
        "node": service.node().me().to_string(),
        "records": service.catalog_versions(),
        "key_usage": service.key_usage(),
    }))
}

async fn catalog_merge(
    State(service): State<Service>,
    body: std::result::Result<Json<CatalogPush>, JsonRejection>,
) -> Result<Json<serde_json::Value>> {
    let Json(push) = body.map_err(|e| bad(ErrorCode::InvalidRequest, e.body_text()))?;
    for r in &push.records {
        if let Record::Table(t) = r {
            t.config
                .validate(usize::MAX)
                .map_err(|e| bad(ErrorCode::InvalidTableConfig, e.message))?;
        }
    }
    let changed = service.merge_records(push.records).await?;
    Ok(Json(json!({ "changed": changed })))
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
    // A zone matters only to a node joining or given one.
    let zone = if matches!(action, Action::Join | Action::SetZone) {
        req.zone
    } else {
        None
    };
    let began = service
        .change_ring(&service.admin_ctx(None)?, action, Some(&req.node), zone)
        .await?;
    Ok(began_response(began))
}

async fn join(
    State(service): State<Service>,
    body: std::result::Result<Json<NodeRequest>, JsonRejection>,
) -> Result<Response> {
    ring_change(&service, Action::Join, body).await
}

async fn set_zone(
    State(service): State<Service>,
    body: std::result::Result<Json<NodeRequest>, JsonRejection>,
) -> Result<Response> {
    ring_change(&service, Action::SetZone, body).await
}

async fn decommission(
    State(service): State<Service>,
    body: std::result::Result<Json<NodeRequest>, JsonRejection>,
) -> Result<Response> {
    ring_change(&service, Action::Decommission, body).await
}

async fn abort(State(service): State<Service>) -> Result<Response> {
    let began = service
        .change_ring(&service.admin_ctx(None)?, Action::Abort, None, None)
        .await?;
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

async fn storage(State(service): State<Service>) -> Json<crate::service::StorageView> {
    Json(service.storage())
}

async fn tls(State(service): State<Service>) -> Json<crate::service::TlsView> {
    Json(service.tls())
}

async fn set_link_faults(
    State(service): State<Service>,
    body: std::result::Result<Json<BTreeMap<String, crate::faults::LinkFault>>, JsonRejection>,
) -> Result<Response> {
    let Json(links) = body.map_err(|e| ServiceError::new(ErrorCode::InvalidBody, e.body_text()))?;
    service.set_link_faults(links)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_disk_fault(
    State(service): State<Service>,
    body: std::result::Result<Json<crate::faults::DiskFault>, JsonRejection>,
) -> Result<Response> {
    let Json(disk) = body.map_err(|e| ServiceError::new(ErrorCode::InvalidBody, e.body_text()))?;
    service.set_disk_fault(disk)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct DamageQuery {
    #[serde(default)]
    bit: usize,
}

async fn damage_item(
    State(service): State<Service>,
    path: Rejectable<KeyParams>,
    query: std::result::Result<
        axum::extract::Query<DamageQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response> {
    let p = params(path)?;
    let axum::extract::Query(q) =
        query.map_err(|e| bad(ErrorCode::InvalidRequest, e.body_text()))?;
    let ctx = service.admin_ctx(p.tenant.as_deref())?;
    let damaged = service
        .damage_item(&ctx, &p.table, p.key.as_bytes(), q.bit)
        .await?;
    Ok(Json(json!({ "damaged": damaged })).into_response())
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
                ErrorKind::Unauthorized => 401,
                ErrorKind::Forbidden => 403,
                ErrorKind::Throttled => 429,
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
