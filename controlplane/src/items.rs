//! The items of a tenant's native table, for signed-in users (the
//! console's item browser): get with every sibling and the context, put
//! (with or without a context, so that siblings can be resolved by hand),
//! delete, and a paged scan. Each call goes to the table's cluster through
//! the items API, in the caller's own tenant (`dataplane.rs`); the data
//! plane applies its own rules (sizes, quorums, contexts) and its errors
//! come back with their status and code.
//!
//! Applications use the data plane directly with API keys; API keys may
//! not call these routes.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::AppState;
use crate::api::Body;
use crate::authz::Caller;
use crate::dataplane::{ClusterAccess, api_error, path_segment};
use crate::error::{ApiError, ApiResult};

/// An item: its key, its live values (several when concurrent writes
/// left siblings) and the context that supersedes them all.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Item {
    /// The key as text (keys of the HTTP API are UTF-8).
    pub key: String,
    /// The values, base64.
    pub values: Vec<String>,
    /// The context to send with a write that replaces them.
    pub context: Option<String>,
}

/// A page of a scan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ItemPage {
    /// The items, in ring order.
    pub items: Vec<Item>,
    /// Pass as `after` for the next page; absent at the end.
    pub next: Option<String>,
}

/// `GET /api/v1/tables/{table}/items` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ScanQuery {
    /// The previous page's `next`.
    pub after: Option<String>,
    /// Items per page (default 25, at most 1,000).
    #[param(value_type = Option<u32>)]
    pub limit: Option<String>,
}

/// `PUT /api/v1/tables/{table}/items/{key}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutItem {
    /// The value as text.
    #[serde(default)]
    pub value: Option<String>,
    /// Or the value as base64 (for binary values).
    #[serde(default)]
    pub value_b64: Option<String>,
    /// The context of the versions this write replaces (from a get);
    /// without it the write is concurrent with them (a new sibling, or
    /// last-writer-wins).
    #[serde(default)]
    pub context: Option<String>,
}

/// The new version's context.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Written {
    /// Its context.
    pub context: Option<String>,
}

/// `DELETE` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DeleteQuery {
    /// The context of the versions the delete replaces.
    pub context: Option<String>,
}

/// The table's cluster, after checking it is the caller's native table.
async fn table_cluster(state: &AppState, tenant: &str, table: &str) -> ApiResult<ClusterAccess> {
    let t = crate::api::find_table(state, tenant, table).await?;
    if t.dynamo.is_some() {
        return Err(ApiError::invalid(
            "table",
            "this is a DynamoDB table: browse its items with the DynamoDB API (Scan, GetItem)",
        ));
    }
    state.cluster_access(&t.cluster).await
}

fn item_path(table: &str, key: &str) -> ApiResult<String> {
    if key.is_empty() || key.len() > 2048 {
        return Err(ApiError::invalid("key", "a key is 1 to 2,048 bytes"));
    }
    Ok(format!(
        "/v1/tables/{}/items/{}",
        path_segment(table.as_bytes()),
        path_segment(key.as_bytes())
    ))
}

/// Reads an item with every sibling.
#[utoipa::path(get, path = "/api/v1/tables/{table}/items/{key}", tag = "items",
    params(("table" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = Item), (status = 404, description = "no such table or item")))]
pub async fn get_item(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((table, key)): Path<(String, String)>,
) -> ApiResult<Json<Item>> {
    let tenant = caller.own_tenant()?;
    let cluster = table_cluster(&state, tenant, &table).await?;
    let a = state
        .data_plane(
            &cluster,
            Some(tenant),
            reqwest::Method::GET,
            &item_path(&table, &key)?,
            &[],
            None,
        )
        .await?;
    if a.status.is_success() || (a.status == 404 && a.body.get("values").is_some()) {
        let values: Vec<String> =
            serde_json::from_value(a.body["values"].clone()).unwrap_or_default();
        if values.is_empty() {
            return Err(ApiError::not_found("item", &key));
        }
        return Ok(Json(Item {
            key,
            values,
            context: a.body["context"].as_str().map(str::to_owned),
        }));
    }
    Err(api_error(&a))
}

/// Writes an item.
#[utoipa::path(put, path = "/api/v1/tables/{table}/items/{key}", tag = "items", request_body = PutItem,
    params(("table" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = Written), (status = 400), (status = 404), (status = 413)))]
pub async fn put_item(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((table, key)): Path<(String, String)>,
    Body(req): Body<PutItem>,
) -> ApiResult<Json<Written>> {
    let value = match (req.value, req.value_b64) {
        (Some(v), None) => v.into_bytes(),
        (None, Some(b)) => B64
            .decode(b.trim())
            .map_err(|_| ApiError::invalid("value_b64", "value_b64 is not base64"))?,
        _ => {
            return Err(ApiError::invalid(
                "value",
                "give the value as text (value) or as base64 (value_b64), not both",
            ));
        }
    };
    let detail = json!({ "bytes": value.len(), "with_context": req.context.is_some() });
    let w = Write {
        table: &table,
        key: &key,
        context: req.context.as_deref(),
        value: Some(value),
    };
    write_through(&state, &caller, w, "item.put", detail).await
}

/// A write (a value, or a delete) of one item.
struct Write<'a> {
    table: &'a str,
    key: &'a str,
    context: Option<&'a str>,
    value: Option<Vec<u8>>,
}

/// Sends a write to the table's cluster in the caller's tenant, and
/// audits it as `action`.
async fn write_through(
    state: &AppState,
    caller: &Caller,
    w: Write<'_>,
    action: &str,
    detail: serde_json::Value,
) -> ApiResult<Json<Written>> {
    let tenant = caller.own_tenant()?;
    let path = item_path(w.table, w.key)?;
    let cluster = table_cluster(state, tenant, w.table).await?;
    let mut headers = vec![("content-type", "application/octet-stream".to_owned())];
    if let Some(c) = w.context.map(str::trim).filter(|c| !c.is_empty()) {
        headers.push(("x-dyno-context", c.to_owned()));
    }
    let method = if w.value.is_some() {
        reqwest::Method::PUT
    } else {
        reqwest::Method::DELETE
    };
    let a = state
        .data_plane(&cluster, Some(tenant), method, &path, &headers, w.value)
        .await?;
    if !a.status.is_success() {
        return Err(api_error(&a));
    }
    let resource = format!("table/{}/item/{}", w.table, w.key);
    state
        .audit(&caller.actor(), Some(tenant), action, &resource, detail)
        .await?;
    Ok(Json(Written {
        context: a.body["context"].as_str().map(str::to_owned),
    }))
}

/// Deletes an item.
#[utoipa::path(delete, path = "/api/v1/tables/{table}/items/{key}", tag = "items", params(DeleteQuery,
    ("table" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = Written), (status = 404)))]
pub async fn delete_item(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((table, key)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<Json<Written>> {
    let w = Write {
        table: &table,
        key: &key,
        context: q.context.as_deref(),
        value: None,
    };
    write_through(&state, &caller, w, "item.delete", json!({})).await
}

/// A page of the table's items.
#[utoipa::path(get, path = "/api/v1/tables/{table}/items", tag = "items", params(ScanQuery,
    ("table" = String, Path)), responses((status = 200, body = ItemPage), (status = 404)))]
pub async fn scan_items(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(table): Path<String>,
    q: Result<Query<ScanQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ItemPage>> {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let tenant = caller.own_tenant()?;
    let limit = match q.limit.as_deref() {
        None => 25,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::invalid("limit", "limit is a whole number from 1 to 1,000"))?,
    };
    let cluster = table_cluster(&state, tenant, &table).await?;
    let mut path = format!(
        "/v1/tables/{}/items?limit={limit}",
        path_segment(table.as_bytes())
    );
    if let Some(after) = q.after.as_deref().filter(|a| !a.is_empty()) {
        if !after
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ApiError::invalid(
                "after",
                "after is the `next` of a previous page",
            ));
        }
        path.push_str("&after=");
        path.push_str(after);
    }
    let a = state
        .data_plane(
            &cluster,
            Some(tenant),
            reqwest::Method::GET,
            &path,
            &[],
            None,
        )
        .await?;
    if !a.status.is_success() {
        return Err(api_error(&a));
    }
    let items = a.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let key = i["key"]
                .as_str()
                .and_then(|k| B64.decode(k).ok())
                .map(|k| String::from_utf8_lossy(&k).into_owned())
                .unwrap_or_default();
            Item {
                key,
                values: serde_json::from_value(i["values"].clone()).unwrap_or_default(),
                context: i["context"].as_str().map(str::to_owned),
            }
        })
        .collect();
    Ok(Json(ItemPage {
        items,
        next: a.body["next"].as_str().map(str::to_owned),
    }))
}
