//! The REST API's handlers (see the README for the contract). Each handler
//! receives the [`Caller`] the policy middleware (`authz.rs`) admitted, and
//! reads tenant data only through the caller's own tenant.

use axum::Extension;
use axum::Json;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{self, Role};
use crate::authz::Caller;
use crate::error::{ApiError, ApiResult, unique_or};

/// A JSON body whose errors name the field at fault (400
/// `ValidationError` with `field`), never axum's default 422 text.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::invalid("body", e.body_text()))?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Ok(v) => Ok(Body(v)),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let field = if path == "." || path.is_empty() {
                    // A missing field: serde names it in the message.
                    let msg = inner.to_string();
                    msg.split('`').nth(1).unwrap_or("body").to_owned()
                } else {
                    path
                };
                Err(ApiError::invalid(&field, format!("{field}: {inner}")))
            }
        }
    }
}

/// Distinguishes an absent field (`None`) from `null` (`Some(None)`).
fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

// ---------------------------------------------------------------- auth

/// `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The user's email.
    pub email: String,
    /// Their password.
    pub password: String,
}

/// A session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// The bearer token.
    pub token: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// Signs in.
#[utoipa::path(post, path = "/api/v1/auth/login", request_body = Login, tag = "auth",
    responses((status = 200, body = Session), (status = 401, description = "wrong email or password"),
              (status = 429, description = "too many failed logins for this email")))]
pub async fn login(
    State(state): State<AppState>,
    Body(req): Body<Login>,
) -> ApiResult<Json<Session>> {
    let email = req.email.trim().to_lowercase();
    state.check_login_limit(&email).await?;
    let user = sqlx::query!(
        "SELECT id, password_hash FROM users WHERE email = $1",
        email
    )
    .fetch_optional(state.db())
    .await?;
    // An unknown email costs a hash check too, so that timing does not
    // tell which emails exist.
    let hash = user.as_ref().map_or_else(
        || auth::dummy_hash().to_owned(),
        |u| u.password_hash.clone(),
    );
    let password = req.password;
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&hash, &password))
        .await
        .map_err(ApiError::internal)?;
    match user {
        Some(u) if ok => {
            let (token, expires_at) = state.sessions().issue(u.id)?;
            state
                .audit(
                    &format!("user:{email}"),
                    None,
                    "login",
                    "session",
                    json!({}),
                )
                .await?;
            Ok(Json(Session { token, expires_at }))
        }
        _ => {
            state.record_login_failure(&email).await?;
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidCredentials",
                "wrong email or password",
            ))
        }
    }
}

/// Signs out: the session's token stops working on every replica at once
/// (it is recorded as revoked until it would have expired).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "signed out"),
              (status = 403, description = "an API key has no session"), (status = 401)))]
pub async fn logout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<StatusCode> {
    // The policy already refuses API keys here; a caller without a
    // session never gets further.
    let Some(session) = &caller.session else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "an API key has no session to sign out of: revoke the key instead",
        ));
    };
    if session.jti.is_empty() {
        // Issued before sessions had ids: nothing to record; it expires.
        return Ok(StatusCode::NO_CONTENT);
    }
    let expires_at = DateTime::from_timestamp(session.exp, 0).unwrap_or_else(Utc::now);
    let mut tx = state.db().begin().await?;
    // Revocations past their token's expiry have done their job.
    sqlx::query!("DELETE FROM revoked_sessions WHERE expires_at < now()")
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO revoked_sessions (jti, user_id, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (jti) DO NOTHING",
        session.jti,
        caller.user_id,
        expires_at
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    state
        .audit(
            &format!("user:{}", caller.email),
            caller.tenant.as_deref(),
            "logout",
            "session",
            json!({}),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Tenant.
    pub tenant: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", responses((status = 200, body = User)))]
pub async fn me(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<User>> {
    let u = sqlx::query!(
        "SELECT id, email, role, tenant, created_at FROM users WHERE id = $1",
        caller.user_id
    )
    .fetch_one(state.db())
    .await?;
    Ok(Json(User {
        id: u.id,
        email: u.email,
        role: Role::parse(&u.role).ok_or_else(|| ApiError::internal("bad role"))?,
        tenant: u.tenant,
        created_at: u.created_at,
    }))
}

/// Where applications reach the data plane.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Endpoint {
    /// The data plane's address (items API, DynamoDB API), if known.
    pub url: Option<String>,
}

/// The data plane's public address (`--public-data-url`, else the first
/// registered cluster's first node).
#[utoipa::path(get, path = "/api/v1/endpoint", tag = "auth", responses((status = 200, body = Endpoint)))]
pub async fn endpoint(State(state): State<AppState>) -> ApiResult<Json<Endpoint>> {
    if let Some(u) = state.public_data_url() {
        return Ok(Json(Endpoint {
            url: Some(u.to_owned()),
        }));
    }
    let url =
        sqlx::query_scalar!("SELECT admin_urls[1] AS url FROM clusters ORDER BY name LIMIT 1")
            .fetch_optional(state.db())
            .await?
            .flatten();
    Ok(Json(Endpoint { url }))
}

// ------------------------------------------------------------- tenants

/// A tenant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    /// Its name.
    pub name: String,
    /// `active` or `suspended`.
    pub state: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// `POST /api/v1/tenants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 2–63 characters of `[a-z0-9-]`, starting with a letter or digit.
    pub name: String,
}

/// `PATCH /api/v1/tenants/{tenant}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenant {
    /// `active` or `suspended`.
    pub state: String,
}

/// Checks a tenant name.
pub fn check_tenant_name(name: &str) -> ApiResult<()> {
    if dyno_core::names::is_tenant_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            "a tenant name is 2 to 63 characters of a-z 0-9 -, starting with a letter or digit",
        ))
    }
}

/// Lists tenants.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", responses((status = 200, description = "{\"tenants\": [Tenant]}")))]
pub async fn list_tenants(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let rows = sqlx::query_as!(
        Tenant,
        "SELECT name, state, created_at FROM tenants ORDER BY name"
    )
    .fetch_all(state.db())
    .await?;
    Ok(Json(json!({ "tenants": rows })))
}

/// Creates a tenant.
#[utoipa::path(post, path = "/api/v1/tenants", request_body = CreateTenant, tag = "tenants",
    responses((status = 201, body = Tenant), (status = 409, description = "exists")))]
pub async fn create_tenant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<CreateTenant>,
) -> ApiResult<Response> {
    check_tenant_name(&req.name)?;
    let row = sqlx::query_as!(
        Tenant,
        "INSERT INTO tenants (name, version) VALUES ($1, next_catalog_version())
         RETURNING name, state, created_at",
        req.name
    )
    .fetch_one(state.db())
    .await
    .map_err(unique_or(
        "TenantAlreadyExists",
        format!("tenant {:?} exists", req.name),
    ))?;
    state
        .record_change(
            &caller.actor(),
            Some(&row.name),
            "tenant.create",
            &format!("tenant/{}", row.name),
            json!({}),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

/// Shows a tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path)), responses((status = 200, body = Tenant), (status = 404)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Tenant>> {
    sqlx::query_as!(
        Tenant,
        "SELECT name, state, created_at FROM tenants WHERE name = $1",
        tenant
    )
    .fetch_optional(state.db())
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found("tenant", &tenant))
}

/// Suspends or reactivates a tenant (a suspended tenant's keys stop
/// working on every node).
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}", request_body = PatchTenant, tag = "tenants",
    params(("tenant" = String, Path)), responses((status = 200, body = Tenant), (status = 404)))]
pub async fn patch_tenant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    Body(req): Body<PatchTenant>,
) -> ApiResult<Json<Tenant>> {
    if !matches!(req.state.as_str(), "active" | "suspended") {
        return Err(ApiError::invalid(
            "state",
            "state is \"active\" or \"suspended\"",
        ));
    }
    let row = sqlx::query_as!(
        Tenant,
        "UPDATE tenants SET state = $2, version = next_catalog_version() WHERE name = $1
         RETURNING name, state, created_at",
        tenant,
        req.state
    )
    .fetch_optional(state.db())
    .await?
    .ok_or_else(|| ApiError::not_found("tenant", &tenant))?;
    state
        .record_change(
            &caller.actor(),
            Some(&tenant),
            &format!("tenant.{}", req.state),
            &format!("tenant/{tenant}"),
            json!({}),
        )
        .await?;
    Ok(Json(row))
}

// --------------------------------------------------------------- users

/// `POST /api/v1/tenants/{tenant}/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Email (case-insensitive, unique).
    pub email: String,
    /// 8 to 1,024 characters.
    pub password: String,
    /// The role.
    pub role: Role,
}

/// Checks an email's shape.
pub fn check_email(email: &str) -> ApiResult<String> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.chars().any(char::is_whitespace);
    if ok {
        Ok(e)
    } else {
        Err(ApiError::invalid("email", "not an email address"))
    }
}

async fn tenant_exists(state: &AppState, tenant: &str) -> ApiResult<()> {
    let found = sqlx::query_scalar!("SELECT 1 AS one FROM tenants WHERE name = $1", tenant)
        .fetch_optional(state.db())
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("tenant", tenant))
}

/// Lists a tenant's users.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/users", tag = "users",
    params(("tenant" = String, Path)), responses((status = 200, description = "{\"users\": [User]}")))]
pub async fn list_users(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    tenant_exists(&state, &tenant).await?;
    let rows = sqlx::query!(
        "SELECT id, email, role, tenant, created_at FROM users WHERE tenant = $1 ORDER BY email",
        tenant
    )
    .fetch_all(state.db())
    .await?;
    let users: Vec<User> = rows
        .into_iter()
        .filter_map(|u| {
            Some(User {
                id: u.id,
                email: u.email,
                role: Role::parse(&u.role)?,
                tenant: u.tenant,
                created_at: u.created_at,
            })
        })
        .collect();
    Ok(Json(json!({ "users": users })))
}

/// Creates a user in a tenant.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/users", request_body = CreateUser, tag = "users",
    params(("tenant" = String, Path)), responses((status = 201, body = User), (status = 409)))]
pub async fn create_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    Body(req): Body<CreateUser>,
) -> ApiResult<Response> {
    if req.role == Role::PlatformAdmin && caller.role != Role::PlatformAdmin {
        return Err(ApiError::forbidden(
            "only a platform admin may create a platform admin",
        ));
    }
    let email = check_email(&req.email)?;
    auth::check_password(&req.password)?;
    tenant_exists(&state, &tenant).await?;
    let password = req.password;
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(ApiError::internal)??;
    let u = sqlx::query!(
        "INSERT INTO users (email, password_hash, role, tenant) VALUES ($1, $2, $3, $4)
         RETURNING id, created_at",
        email,
        hash,
        req.role.as_str(),
        tenant
    )
    .fetch_one(state.db())
    .await
    .map_err(unique_or("EmailTaken", "a user with this email exists"))?;
    state
        .audit(
            &caller.actor(),
            Some(&tenant),
            "user.create",
            &format!("user/{email}"),
            json!({ "role": req.role }),
        )
        .await?;
    let user = User {
        id: u.id,
        email,
        role: req.role,
        tenant: Some(tenant),
        created_at: u.created_at,
    };
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

// -------------------------------------------------------------- tables

/// A table.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Table {
    /// Its name.
    pub name: String,
    /// Replicas per key.
    pub n: i32,
    /// Default read quorum.
    pub r: i32,
    /// Default write quorum.
    pub w: i32,
    /// `siblings` or `lww`.
    pub conflict: String,
    /// Operations per second over the cluster, if limited.
    pub throughput_limit: Option<i32>,
    /// `creating` (until every node knows it), `active`, `deleting`.
    pub status: String,
    /// The cluster it lives on.
    pub cluster: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// For a DynamoDB table: its key schema, TTL attribute, tags and
    /// billing settings.
    #[schema(value_type = Option<Object>)]
    pub dynamo: Option<serde_json::Value>,
}

/// `POST /api/v1/tables`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTable {
    /// 3–255 characters of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Replicas per key (at most the cluster's node count).
    pub n: u32,
    /// Default read quorum, 1..=n.
    pub r: u32,
    /// Default write quorum, 1..=n.
    pub w: u32,
    /// `siblings` (default) or `lww`.
    #[serde(default)]
    pub conflict: Option<String>,
    /// Operations per second over the cluster.
    #[serde(default)]
    pub throughput_limit: Option<u32>,
    /// Makes a DynamoDB table (the DynamoDB API's CreateTable sends it):
    /// `{"key": {"hash": {"name", "type"}, "range"?}, "billing_mode",
    /// "read_capacity", "write_capacity", "tags"}`. Its items are
    /// DynamoDB items under composite keys; `conflict` must be `lww`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub dynamo: Option<serde_json::Value>,
}

/// A change to a DynamoDB table's settings (`PATCH`'s `dynamo`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DynamoPatch {
    /// `PAY_PER_REQUEST` or `PROVISIONED`.
    #[serde(default)]
    pub billing_mode: Option<String>,
    /// Provisioned read capacity (reported only).
    #[serde(default)]
    pub read_capacity: Option<u64>,
    /// Provisioned write capacity (reported only).
    #[serde(default)]
    pub write_capacity: Option<u64>,
    /// Enables (`{"enabled": true, "attribute": "expires"}`) or disables TTL.
    #[serde(default)]
    pub ttl: Option<TtlPatch>,
    /// Tags to set.
    #[serde(default)]
    pub tags_set: std::collections::BTreeMap<String, String>,
    /// Tags to remove.
    #[serde(default)]
    pub tags_remove: Vec<String>,
}

/// TTL on or off.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TtlPatch {
    /// On or off.
    pub enabled: bool,
    /// The attribute holding the expiry time (epoch seconds).
    pub attribute: String,
}

/// Applies a patch to a stored schema.
fn patch_dynamo(current: &serde_json::Value, p: &DynamoPatch) -> ApiResult<serde_json::Value> {
    let mut schema: dyno_ddb::schema::TableSchema = serde_json::from_value(current.clone())
        .map_err(|e| ApiError::internal(format!("stored DynamoDB schema: {e}")))?;
    if let Some(m) = &p.billing_mode {
        if !matches!(m.as_str(), "PAY_PER_REQUEST" | "PROVISIONED") {
            return Err(ApiError::invalid(
                "dynamo.billing_mode",
                "billing_mode is PAY_PER_REQUEST or PROVISIONED",
            ));
        }
        schema.billing_mode = m.clone();
    }
    if let Some(r) = p.read_capacity {
        schema.read_capacity = r;
    }
    if let Some(w) = p.write_capacity {
        schema.write_capacity = w;
    }
    if let Some(t) = &p.ttl {
        if t.attribute.is_empty() || t.attribute.len() > 255 {
            return Err(ApiError::invalid(
                "dynamo.ttl.attribute",
                "the TTL attribute name is 1 to 255 bytes",
            ));
        }
        schema.ttl_attribute = t.enabled.then(|| t.attribute.clone());
    }
    for (k, v) in &p.tags_set {
        if k.is_empty() || k.len() > 128 || v.len() > 256 {
            return Err(ApiError::invalid(
                "dynamo.tags_set",
                "tag keys are 1 to 128 characters, values at most 256",
            ));
        }
        schema.tags.insert(k.clone(), v.clone());
    }
    if schema.tags.len() > 50 {
        return Err(ApiError::invalid(
            "dynamo.tags_set",
            "a table has at most 50 tags",
        ));
    }
    for k in &p.tags_remove {
        schema.tags.remove(k);
    }
    serde_json::to_value(&schema).map_err(|e| ApiError::internal(e.to_string()))
}

/// DynamoDB clients cannot take siblings.
fn lww_only() -> ApiError {
    ApiError::invalid(
        "conflict",
        "DynamoDB tables resolve concurrent writes by last-writer-wins: conflict must be \"lww\"",
    )
}

/// Checks a new DynamoDB table's schema.
fn check_dynamo(v: &serde_json::Value, conflict: &str) -> ApiResult<()> {
    let schema: dyno_ddb::schema::TableSchema = serde_json::from_value(v.clone())
        .map_err(|e| ApiError::invalid("dynamo", format!("not a DynamoDB table schema: {e}")))?;
    for a in schema.key.attrs() {
        if a.name.is_empty() || a.name.len() > 255 {
            return Err(ApiError::invalid(
                "dynamo.key",
                "key attribute names are 1 to 255 bytes",
            ));
        }
    }
    if conflict != "lww" {
        return Err(lww_only());
    }
    Ok(())
}

/// `PATCH /api/v1/tables/{table}`: R, W, the conflict mode and the limit
/// can change; N cannot.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTable {
    /// Must equal the table's N if given.
    #[serde(default)]
    pub n: Option<u32>,
    /// New default read quorum.
    #[serde(default)]
    pub r: Option<u32>,
    /// New default write quorum.
    #[serde(default)]
    pub w: Option<u32>,
    /// New conflict mode.
    #[serde(default)]
    pub conflict: Option<String>,
    /// New limit; `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub throughput_limit: Option<Option<u32>>,
    /// For a DynamoDB table: billing, TTL and tag changes.
    #[serde(default)]
    pub dynamo: Option<DynamoPatch>,
}

/// Checks a table name.
pub fn check_table_name(name: &str) -> ApiResult<()> {
    if dyno_core::names::is_table_name(name, 3) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            "a table name is 3 to 255 characters of A-Z a-z 0-9 _ - .",
        ))
    }
}

fn check_conflict(c: Option<&str>) -> ApiResult<&'static str> {
    match c {
        None | Some("siblings") => Ok("siblings"),
        Some("lww") => Ok("lww"),
        Some(other) => Err(ApiError::invalid(
            "conflict",
            format!("unknown conflict mode {other:?}: use \"siblings\" or \"lww\""),
        )),
    }
}

fn check_quorums(n: u32, r: u32, w: u32) -> ApiResult<()> {
    for (field, v) in [("r", r), ("w", w)] {
        if !(1..=n).contains(&v) {
            return Err(ApiError::invalid(
                field,
                format!("{field} must be between 1 and n = {n}, got {v}"),
            ));
        }
    }
    Ok(())
}

fn check_limit(limit: Option<u32>) -> ApiResult<Option<i32>> {
    match limit {
        None => Ok(None),
        Some(l) if (1..=i32::MAX as u32).contains(&l) => Ok(Some(l as i32)),
        Some(_) => Err(ApiError::invalid(
            "throughput_limit",
            "throughput_limit must be a whole number of operations per second, at least 1",
        )),
    }
}

/// Lists the caller's tenant's tables.
#[utoipa::path(get, path = "/api/v1/tables", tag = "tables", responses((status = 200, description = "{\"tables\": [Table]}")))]
pub async fn list_tables(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<serde_json::Value>> {
    let rows = tenant_tables(&state, caller.own_tenant()?).await?;
    Ok(Json(json!({ "tables": rows })))
}

/// A tenant's tables (not the deleted ones), by name.
pub(crate) async fn tenant_tables(state: &AppState, tenant: &str) -> ApiResult<Vec<Table>> {
    Ok(sqlx::query_as!(
        Table,
        "SELECT name, n, r, w, conflict, throughput_limit, status, cluster, created_at, updated_at, dynamo
           FROM tables WHERE tenant = $1 AND status <> 'deleted' ORDER BY name",
        tenant
    )
    .fetch_all(state.db())
    .await?)
}

/// A tenant's table (not a deleted one); 404 when there is none.
pub(crate) async fn find_table(state: &AppState, tenant: &str, name: &str) -> ApiResult<Table> {
    sqlx::query_as!(
        Table,
        "SELECT name, n, r, w, conflict, throughput_limit, status, cluster, created_at, updated_at, dynamo
           FROM tables WHERE tenant = $1 AND name = $2 AND status <> 'deleted'",
        tenant,
        name
    )
    .fetch_optional(state.db())
    .await?
    .ok_or_else(|| ApiError::not_found("table", name))
}

/// Creates a table in the caller's tenant; it becomes `active` once every
/// node of the cluster knows it.
#[utoipa::path(post, path = "/api/v1/tables", request_body = CreateTable, tag = "tables",
    responses((status = 201, body = Table), (status = 400), (status = 409, description = "a table of that name exists")))]
pub async fn create_table(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<CreateTable>,
) -> ApiResult<Response> {
    let tenant = caller.own_tenant()?.to_owned();
    check_table_name(&req.name)?;
    caller.check_manage(&req.name)?;
    let conflict = check_conflict(req.conflict.as_deref())?;
    let limit = check_limit(req.throughput_limit)?;
    let cluster = sqlx::query!("SELECT name, node_count FROM clusters ORDER BY name LIMIT 1")
        .fetch_optional(state.db())
        .await?
        .ok_or_else(|| ApiError::conflict("NoCluster", "no data-plane cluster is registered"))?;
    if cluster.node_count == 0 {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "cluster {} has not been reached yet; retry shortly",
                cluster.name
            ),
        ));
    }
    if req.n == 0 || req.n > 7 || req.n as i32 > cluster.node_count {
        return Err(ApiError::invalid(
            "n",
            format!(
                "n must be between 1 and the cluster's {} nodes (at most 7), got {}",
                cluster.node_count, req.n
            ),
        ));
    }
    check_quorums(req.n, req.r, req.w)?;
    if let Some(d) = &req.dynamo {
        check_dynamo(d, conflict)?;
    }
    let row = sqlx::query_as!(
        Table,
        "INSERT INTO tables (tenant, name, cluster, n, r, w, conflict, throughput_limit, status, version, dynamo)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'creating', next_catalog_version(), $9)
         RETURNING name, n, r, w, conflict, throughput_limit, status, cluster, created_at, updated_at, dynamo",
        tenant,
        req.name,
        cluster.name,
        req.n as i32,
        req.r as i32,
        req.w as i32,
        conflict,
        limit,
        req.dynamo
    )
    .fetch_one(state.db())
    .await
    .map_err(unique_or("TableAlreadyExists", format!("table {:?} exists", req.name)))?;
    state
        .record_change(&caller.actor(), Some(&tenant), "table.create", &format!("table/{}", row.name),
            json!({ "n": row.n, "r": row.r, "w": row.w, "conflict": row.conflict, "throughput_limit": row.throughput_limit, "dynamo": row.dynamo }))
        .await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

/// Shows a table.
#[utoipa::path(get, path = "/api/v1/tables/{table}", tag = "tables",
    params(("table" = String, Path)), responses((status = 200, body = Table), (status = 404)))]
pub async fn get_table(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Table>> {
    Ok(Json(find_table(&state, caller.own_tenant()?, &name).await?))
}

/// Changes a table's R, W, conflict mode or limit.
#[utoipa::path(patch, path = "/api/v1/tables/{table}", request_body = PatchTable, tag = "tables",
    params(("table" = String, Path)), responses((status = 200, body = Table), (status = 400), (status = 404)))]
pub async fn patch_table(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Body(req): Body<PatchTable>,
) -> ApiResult<Json<Table>> {
    let tenant = caller.own_tenant()?.to_owned();
    let t = find_table(&state, &tenant, &name).await?;
    if t.status == "deleting" {
        return Err(ApiError::conflict(
            "TableDeleting",
            format!("table {name:?} is being deleted"),
        ));
    }
    let n = t.n as u32;
    if let Some(new_n) = req.n
        && new_n != n
    {
        return Err(ApiError {
            field: Some("n".into()),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                "ImmutableSetting",
                format!(
                    "table {name} has n = {n}; a table's replication factor cannot change (create a new table)"
                ),
            )
        });
    }
    let r = req.r.unwrap_or(t.r as u32);
    let w = req.w.unwrap_or(t.w as u32);
    check_quorums(n, r, w)?;
    let conflict = match req.conflict.as_deref() {
        None => t.conflict.clone(),
        Some(c) => check_conflict(Some(c))?.to_owned(),
    };
    let limit = match req.throughput_limit {
        None => t.throughput_limit,
        Some(l) => check_limit(l)?,
    };
    let dynamo = match (&req.dynamo, &t.dynamo) {
        (None, d) => d.clone(),
        (Some(p), Some(current)) => Some(patch_dynamo(current, p)?),
        (Some(_), None) => {
            return Err(ApiError::invalid(
                "dynamo",
                format!("table {name:?} is not a DynamoDB table"),
            ));
        }
    };
    if dynamo.is_some() && conflict != "lww" {
        return Err(lww_only());
    }
    let row = sqlx::query_as!(
        Table,
        "UPDATE tables SET r = $3, w = $4, conflict = $5, throughput_limit = $6, dynamo = $7,
                version = next_catalog_version(), updated_at = now()
          WHERE tenant = $1 AND name = $2 AND status <> 'deleted'
         RETURNING name, n, r, w, conflict, throughput_limit, status, cluster, created_at, updated_at, dynamo",
        tenant,
        name,
        r as i32,
        w as i32,
        conflict,
        limit,
        dynamo
    )
    .fetch_optional(state.db())
    .await?
    .ok_or_else(|| ApiError::not_found("table", &name))?;
    state
        .record_change(&caller.actor(), Some(&tenant), "table.update", &format!("table/{name}"),
            json!({ "r": row.r, "w": row.w, "conflict": row.conflict, "throughput_limit": row.throughput_limit, "dynamo": row.dynamo }))
        .await?;
    Ok(Json(row))
}

/// Deletes a table: `deleting` until every node has dropped it from its
/// catalog, then gone.
#[utoipa::path(delete, path = "/api/v1/tables/{table}", tag = "tables",
    params(("table" = String, Path)), responses((status = 200, body = Table), (status = 404)))]
pub async fn delete_table(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Table>> {
    let tenant = caller.own_tenant()?.to_owned();
    let row = sqlx::query_as!(
        Table,
        "UPDATE tables SET status = 'deleting', version = next_catalog_version(), updated_at = now()
          WHERE tenant = $1 AND name = $2 AND status IN ('creating', 'active')
         RETURNING name, n, r, w, conflict, throughput_limit, status, cluster, created_at, updated_at, dynamo",
        tenant,
        name
    )
    .fetch_optional(state.db())
    .await?
    .ok_or_else(|| ApiError::not_found("table", &name))?;
    state
        .record_change(
            &caller.actor(),
            Some(&tenant),
            "table.delete",
            &format!("table/{name}"),
            json!({}),
        )
        .await?;
    Ok(Json(row))
}

// ---------------------------------------------------------------- keys

/// One scope of a key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// A table name, or `*` for every table of the tenant (a table that
    /// does not exist yet may be named).
    pub table: String,
    /// `read`, `write` (includes read) or `manage` (also create, change and
    /// delete the tables named).
    pub access: String,
}

/// `POST /api/v1/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label, 1 to 128 characters.
    pub name: String,
    /// What the key may do (1 to 100 scopes).
    pub scopes: Vec<Scope>,
}

/// A key, without its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Key {
    /// The key id (also its AWS access key id).
    pub id: String,
    /// Its label.
    pub name: String,
    /// Its scopes.
    #[schema(value_type = Vec<Scope>)]
    pub scopes: serde_json::Value,
    /// `pending` until every node accepts it, then `active`; `revoked`.
    pub status: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// When a node last saw it used (approximate).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new key: the only time its secret is shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NewKey {
    /// The key id.
    pub id: String,
    /// Its label.
    pub name: String,
    /// The secret (also the AWS secret access key).
    pub secret: String,
    /// The ready-to-use bearer token (without `Bearer`).
    pub token: String,
    /// The SigV4 access key id (the id).
    pub access_key_id: String,
    /// The SigV4 secret access key (the secret).
    pub secret_access_key: String,
    /// `pending` until every node accepts it.
    pub status: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
}

fn check_scopes(scopes: &[Scope]) -> ApiResult<()> {
    if scopes.is_empty() || scopes.len() > 100 {
        return Err(ApiError::invalid("scopes", "give 1 to 100 scopes"));
    }
    for (i, s) in scopes.iter().enumerate() {
        if s.table != "*" && check_table_name(&s.table).is_err() {
            return Err(ApiError::invalid(
                &format!("scopes[{i}].table"),
                "a scope names a table (3 to 255 characters of A-Z a-z 0-9 _ - .) or \"*\"",
            ));
        }
        if !matches!(s.access.as_str(), "read" | "write" | "manage") {
            return Err(ApiError::invalid(
                &format!("scopes[{i}].access"),
                "access is \"read\", \"write\" or \"manage\"",
            ));
        }
    }
    Ok(())
}

/// Lists the caller's tenant's keys.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", responses((status = 200, description = "{\"keys\": [Key]}")))]
pub async fn list_keys(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<serde_json::Value>> {
    let rows = sqlx::query_as!(
        Key,
        "SELECT id, name, scopes, status, created_at, last_used_at, revoked_at
           FROM api_keys WHERE tenant = $1 ORDER BY created_at, id",
        caller.own_tenant()?
    )
    .fetch_all(state.db())
    .await?;
    Ok(Json(json!({ "keys": rows })))
}

/// Creates a key; its secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/keys", request_body = CreateKey, tag = "keys",
    responses((status = 201, body = NewKey), (status = 400)))]
pub async fn create_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<CreateKey>,
) -> ApiResult<Response> {
    let tenant = caller.own_tenant()?.to_owned();
    if req.name.trim().is_empty() || req.name.chars().count() > 128 {
        return Err(ApiError::invalid(
            "name",
            "a key's name is 1 to 128 characters",
        ));
    }
    check_scopes(&req.scopes)?;
    let id = dyno_core::apikey::key_id(crate::secrets::random_bytes::<12>());
    let secret = state.master().key_secret(&id);
    let scopes = serde_json::to_value(&req.scopes).map_err(ApiError::internal)?;
    let status = sqlx::query_scalar!(
        "INSERT INTO api_keys (id, tenant, name, scopes, status, version)
         VALUES ($1, $2, $3, $4, 'pending', next_catalog_version()) RETURNING status",
        id,
        tenant,
        req.name,
        scopes
    )
    .fetch_one(state.db())
    .await?;
    state
        .record_change(
            &caller.actor(),
            Some(&tenant),
            "key.create",
            &format!("key/{id}"),
            json!({ "name": req.name, "scopes": scopes }),
        )
        .await?;
    let key = NewKey {
        token: dyno_core::apikey::token(&id, &secret),
        access_key_id: id.clone(),
        secret_access_key: secret.clone(),
        id,
        name: req.name,
        secret,
        status,
        scopes: req.scopes,
    };
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

/// Shows a key (never its secret).
#[utoipa::path(get, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path)), responses((status = 200, body = Key), (status = 404)))]
pub async fn get_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Key>> {
    sqlx::query_as!(
        Key,
        "SELECT id, name, scopes, status, created_at, last_used_at, revoked_at
           FROM api_keys WHERE tenant = $1 AND id = $2",
        caller.own_tenant()?,
        id
    )
    .fetch_optional(state.db())
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found("key", &id))
}

/// Revokes a key: every node refuses it within seconds.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path)), responses((status = 200, body = Key), (status = 404)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Key>> {
    let tenant = caller.own_tenant()?.to_owned();
    let key = sqlx::query_as!(
        Key,
        "UPDATE api_keys SET status = 'revoked', revoked_at = COALESCE(revoked_at, now()),
                version = CASE WHEN status = 'revoked' THEN version ELSE next_catalog_version() END
          WHERE tenant = $1 AND id = $2
         RETURNING id, name, scopes, status, created_at, last_used_at, revoked_at",
        tenant,
        id
    )
    .fetch_optional(state.db())
    .await?
    .ok_or_else(|| ApiError::not_found("key", &id))?;
    state
        .record_change(
            &caller.actor(),
            Some(&tenant),
            "key.revoke",
            &format!("key/{id}"),
            json!({}),
        )
        .await?;
    Ok(Json(key))
}

// --------------------------------------------------------- audit, clusters

/// One audit event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Its id.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who: `user:<email>`.
    pub actor: String,
    /// The tenant concerned.
    pub tenant: Option<String>,
    /// What: `table.create`, `key.revoke`, ….
    pub action: String,
    /// On what: `table/<name>`, `key/<id>`, ….
    pub resource: String,
    /// Details.
    pub detail: serde_json::Value,
}

/// `GET /api/v1/audit` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// At most this many events, newest first (default 100, at most 1000).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
}

/// The audit log: a platform admin sees every tenant's, others their own.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "{\"events\": [Event]}")))]
pub async fn audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::invalid("limit", "limit is a whole number from 1 to 1000"))?
            .clamp(1, 1000),
    };
    let everyone = caller.role == Role::PlatformAdmin;
    let rows = sqlx::query_as!(
        Event,
        "SELECT id, at, actor, tenant, action, resource, detail FROM audit_log
          WHERE $1 OR tenant = $2 ORDER BY id DESC LIMIT $3",
        everyone,
        caller.tenant,
        limit
    )
    .fetch_all(state.db())
    .await?;
    Ok(Json(json!({ "events": rows })))
}

/// A cluster's health, as the reconciler last saw it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    /// Its name.
    pub name: String,
    /// Its admin URLs.
    pub admin_urls: Vec<String>,
    /// Nodes in its ring.
    pub node_count: i32,
    /// Per node: status, liveness, and whether it has the whole desired
    /// catalog.
    pub health: serde_json::Value,
    /// When the reconciler last reached it.
    pub checked_at: Option<DateTime<Utc>>,
}

/// The data-plane clusters and their health.
#[utoipa::path(get, path = "/api/v1/clusters", tag = "clusters",
    responses((status = 200, description = "{\"clusters\": [Cluster]}")))]
pub async fn clusters(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let rows = sqlx::query_as!(
        Cluster,
        "SELECT name, admin_urls, node_count, health, checked_at FROM clusters ORDER BY name"
    )
    .fetch_all(state.db())
    .await?;
    Ok(Json(json!({ "clusters": rows })))
}

/// `PUT /api/v1/clusters/{cluster}`: a cluster's endpoints and credential.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCluster {
    /// Base URLs (`http://host:port`) of its nodes' HTTP API, or of a load
    /// balancer before them (the Kubernetes client Service), tried in
    /// order. From 1 to 16.
    pub admin_urls: Vec<String>,
    /// Its admin credential. Stored sealed under the key master; never
    /// shown again.
    pub admin_token: String,
}

/// Checks a cluster name: 1 to 253 of `[A-Za-z0-9._-]` (a Kubernetes
/// object name, or `NAME.NAMESPACE`).
pub fn check_cluster_name(name: &str) -> ApiResult<()> {
    let ok = (1..=253).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(()).ok_or_else(|| {
        ApiError::invalid(
            "cluster",
            "a cluster name is 1 to 253 letters, digits, '.', '_' or '-'",
        )
    })
}

/// Checks a cluster's admin URLs; returns them without trailing slashes.
pub fn check_cluster_urls(urls: &[String]) -> ApiResult<Vec<String>> {
    if urls.is_empty() || urls.len() > 16 {
        return Err(ApiError::invalid(
            "admin_urls",
            "give from 1 to 16 admin URLs",
        ));
    }
    urls.iter()
        .map(|u| {
            let rest = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"));
            match rest {
                Some(host)
                    if !host.is_empty()
                        && u.len() <= 2048
                        && !u.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    Ok(u.trim_end_matches('/').to_owned())
                }
                _ => Err(ApiError::invalid(
                    "admin_urls",
                    format!("{u:?} is not an http:// or https:// URL"),
                )),
            }
        })
        .collect()
}

/// Stores a cluster's URLs and sealed credential; true when it is new.
pub async fn store_cluster(
    state: &AppState,
    name: &str,
    urls: &[String],
    token: &[u8],
) -> anyhow::Result<bool> {
    let sealed = state.master().seal(token)?;
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO clusters (name, admin_urls, credential) VALUES ($1, $2, $3)
           ON CONFLICT (name) DO UPDATE SET admin_urls = $2, credential = $3
           RETURNING (xmax = 0) AS "inserted!""#,
        name,
        urls,
        sealed
    )
    .fetch_one(state.db())
    .await?;
    Ok(inserted)
}

/// Registers a data-plane cluster, or changes its URLs or credential (the
/// operator does this for the clusters it runs). The cluster must answer
/// with this credential before it is stored.
#[utoipa::path(put, path = "/api/v1/clusters/{cluster}", tag = "clusters",
    request_body = RegisterCluster,
    responses((status = 201, body = Cluster, description = "registered"),
              (status = 200, body = Cluster, description = "updated"),
              (status = 400, description = "invalid, or the cluster refused the credential"),
              (status = 503, description = "no node of the cluster answered")))]
pub async fn register_cluster(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Body(req): Body<RegisterCluster>,
) -> ApiResult<(StatusCode, Json<Cluster>)> {
    check_cluster_name(&name)?;
    let urls = check_cluster_urls(&req.admin_urls)?;
    if !(16..=4096).contains(&req.admin_token.len()) {
        return Err(ApiError::invalid(
            "admin_token",
            "the admin credential is 16 to 4096 bytes",
        ));
    }
    let access =
        crate::dataplane::ClusterAccess::new(name.clone(), urls.clone(), req.admin_token.clone());
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
    if a.status == StatusCode::UNAUTHORIZED || a.status == StatusCode::FORBIDDEN {
        return Err(ApiError::invalid(
            "admin_token",
            "the cluster refused this credential",
        ));
    }
    if !a.status.is_success() || !a.body["ring"].is_object() {
        return Err(ApiError::invalid(
            "admin_urls",
            format!(
                "{} answered {} without a cluster view: not a Dyno node?",
                urls[0], a.status
            ),
        ));
    }
    let created = store_cluster(&state, &name, &urls, req.admin_token.as_bytes())
        .await
        .map_err(ApiError::internal)?;
    state
        .audit(
            &caller.actor(),
            None,
            if created {
                "cluster.register"
            } else {
                "cluster.update"
            },
            &format!("cluster/{name}"),
            json!({ "admin_urls": urls }),
        )
        .await?;
    let row = sqlx::query_as!(
        Cluster,
        "SELECT name, admin_urls, node_count, health, checked_at FROM clusters WHERE name = $1",
        name
    )
    .fetch_one(state.db())
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(row)))
}
