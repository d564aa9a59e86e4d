//! Authorization, in one place: a policy table that gives every route a
//! rule, and the middleware that applies it before any handler runs.
//!
//! * A route missing from the table is refused (404), so a new route
//!   cannot be forgotten open; a test checks that every route in the
//!   OpenAPI document has a rule.
//! * Another tenant's resources answer 404, as if they did not exist.
//!   Tenant data (tables, keys) is always read through the caller's own
//!   tenant, so a handler cannot reach another tenant's rows either.

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::Role;
use crate::error::{ApiError, ApiResult};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user's id.
    pub user_id: i64,
    /// Their email.
    pub email: String,
    /// Their role.
    pub role: Role,
    /// Their tenant (platform admins may have none).
    pub tenant: Option<String>,
    /// Set when the caller is an API key rather than a user (the data
    /// plane's DynamoDB API forwards table changes with the key's token).
    pub key: Option<KeyCaller>,
    /// The session, when the caller signed in (not an API key).
    pub session: Option<crate::auth::SessionToken>,
}

/// An API key acting on the REST API: it may create, change and delete
/// the tables its scopes give it `manage` access to, and nothing else.
#[derive(Debug, Clone)]
pub struct KeyCaller {
    /// The key's id.
    pub id: String,
    /// Tables (or `*`) it may manage.
    pub manages: Vec<String>,
}

/// The routes an API key may call.
const KEY_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/tables"),
    ("GET", "/api/v1/tables/{table}"),
    ("PATCH", "/api/v1/tables/{table}"),
    ("DELETE", "/api/v1/tables/{table}"),
];

impl Caller {
    /// The audit log's name for the caller.
    pub fn actor(&self) -> String {
        match &self.key {
            Some(k) => format!("key:{}", k.id),
            None => format!("user:{}", self.email),
        }
    }

    /// Refuses an API key without `manage` access to `table` (users pass).
    pub fn check_manage(&self, table: &str) -> ApiResult<()> {
        match &self.key {
            Some(k) if !k.manages.iter().any(|t| t == "*" || t == table) => Err(
                ApiError::forbidden(format!("this key may not manage table {table:?}")),
            ),
            _ => Ok(()),
        }
    }

    /// The caller's tenant, for tenant-data routes (the policy guarantees
    /// one).
    pub fn own_tenant(&self) -> ApiResult<&str> {
        self.tenant.as_deref().ok_or_else(no_tenant)
    }
}

fn no_tenant() -> ApiError {
    ApiError::forbidden("this user belongs to no tenant, so it has no tables or keys")
}

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No token (sign-in, the OpenAPI document).
    Open,
    /// Any signed-in user.
    SignedIn,
    /// A platform admin. For a route naming `{tenant}`, others get 404 for
    /// another tenant and 403 for their own.
    PlatformAdmin,
    /// The users of the route's `{tenant}`: a platform admin, or that
    /// tenant's admin; a member gets 403, another tenant's user 404.
    TenantUsers,
    /// The caller's own tenant's tables and keys: any user with a tenant.
    TenantData,
}

/// Every route and its rule.
pub const POLICY: &[(&str, &str, Rule)] = &[
    ("POST", "/api/v1/auth/login", Rule::Open),
    ("POST", "/api/v1/auth/logout", Rule::SignedIn),
    ("GET", "/api/v1/openapi.json", Rule::Open),
    ("GET", "/api/v1/me", Rule::SignedIn),
    ("GET", "/api/v1/endpoint", Rule::SignedIn),
    ("GET", "/api/v1/tenants", Rule::PlatformAdmin),
    ("POST", "/api/v1/tenants", Rule::PlatformAdmin),
    ("GET", "/api/v1/tenants/{tenant}", Rule::PlatformAdmin),
    ("PATCH", "/api/v1/tenants/{tenant}", Rule::PlatformAdmin),
    ("GET", "/api/v1/tenants/{tenant}/users", Rule::TenantUsers),
    ("POST", "/api/v1/tenants/{tenant}/users", Rule::TenantUsers),
    ("GET", "/api/v1/tables", Rule::TenantData),
    ("POST", "/api/v1/tables", Rule::TenantData),
    ("GET", "/api/v1/tables/{table}", Rule::TenantData),
    ("PATCH", "/api/v1/tables/{table}", Rule::TenantData),
    ("DELETE", "/api/v1/tables/{table}", Rule::TenantData),
    ("GET", "/api/v1/usage", Rule::TenantData),
    ("GET", "/api/v1/tables/{table}/latency", Rule::TenantData),
    ("GET", "/api/v1/tables/{table}/staleness", Rule::TenantData),
    ("GET", "/api/v1/tables/{table}/items", Rule::TenantData),
    (
        "GET",
        "/api/v1/tables/{table}/items/{key}",
        Rule::TenantData,
    ),
    (
        "PUT",
        "/api/v1/tables/{table}/items/{key}",
        Rule::TenantData,
    ),
    (
        "DELETE",
        "/api/v1/tables/{table}/items/{key}",
        Rule::TenantData,
    ),
    ("GET", "/api/v1/keys", Rule::TenantData),
    ("POST", "/api/v1/keys", Rule::TenantData),
    ("GET", "/api/v1/keys/{id}", Rule::TenantData),
    ("DELETE", "/api/v1/keys/{id}", Rule::TenantData),
    ("GET", "/api/v1/audit", Rule::SignedIn),
    ("GET", "/api/v1/clusters", Rule::PlatformAdmin),
    ("GET", "/api/v1/clusters/{cluster}", Rule::PlatformAdmin),
    ("PUT", "/api/v1/clusters/{cluster}", Rule::PlatformAdmin),
    ("GET", "/api/v1/status", Rule::TenantData),
];

/// The rule of a route, if it has one.
pub fn rule_of(method: &Method, path: &str) -> Option<Rule> {
    POLICY
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == path)
        .map(|(_, _, r)| *r)
}

/// Decides whether `caller` may use a route with `rule`, whose `{tenant}`
/// parameter (if any) is `tenant`.
pub fn decide(rule: Rule, caller: &Caller, tenant: Option<&str>) -> ApiResult<()> {
    let own = |t: &str| caller.tenant.as_deref() == Some(t);
    match rule {
        Rule::Open | Rule::SignedIn => Ok(()),
        Rule::PlatformAdmin => match (caller.role, tenant) {
            (Role::PlatformAdmin, _) => Ok(()),
            (_, Some(t)) if !own(t) => Err(ApiError::not_found("tenant", t)),
            _ => Err(ApiError::forbidden("only a platform admin may do this")),
        },
        Rule::TenantUsers => {
            let t = tenant.unwrap_or_default();
            match caller.role {
                Role::PlatformAdmin => Ok(()),
                _ if !own(t) => Err(ApiError::not_found("tenant", t)),
                Role::TenantAdmin => Ok(()),
                Role::TenantMember => Err(ApiError::forbidden(
                    "only the tenant's admins may manage its users",
                )),
            }
        }
        Rule::TenantData => caller.own_tenant().map(|_| ()),
    }
}

/// The middleware: finds the route's rule, authenticates the caller when
/// the rule needs one, decides, and hands the [`Caller`] to the handler.
pub async fn authorize(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    params: RawPathParams,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(rule) = matched
        .as_ref()
        .and_then(|m| rule_of(request.method(), m.as_str()))
    else {
        return ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "NotFound",
            "no such endpoint; see /api/v1/openapi.json",
        )
        .into_response();
    };
    if rule == Rule::Open {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let caller = match token {
        Some(t) => state.caller(&t).await,
        None => Err(ApiError::unauthorized()),
    };
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let tenant = params
        .iter()
        .find(|(k, _)| *k == "tenant")
        .map(|(_, v)| v.to_owned());
    if let Err(e) = decide(rule, &caller, tenant.as_deref()) {
        return e.into_response();
    }
    if caller.key.is_some() {
        let path = matched.as_ref().map_or("", |m| m.as_str());
        let method = request.method().as_str();
        if !KEY_ROUTES.iter().any(|(m, p)| *m == method && *p == path) {
            return ApiError::forbidden("API keys may only create, change and delete tables")
                .into_response();
        }
        if let Some((_, table)) = params.iter().find(|(k, _)| *k == "table")
            && let Err(e) = caller.check_manage(table)
        {
            return e.into_response();
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, tenant: Option<&str>) -> Caller {
        Caller {
            user_id: 1,
            email: "x@example.com".into(),
            role,
            tenant: tenant.map(str::to_owned),
            key: None,
            session: None,
        }
    }

    #[test]
    fn the_policy_matrix() {
        let platform = caller(Role::PlatformAdmin, None);
        let admin = caller(Role::TenantAdmin, Some("acme"));
        let member = caller(Role::TenantMember, Some("acme"));
        let status = |r: ApiResult<()>| r.err().map_or(200, |e| e.status.as_u16());
        // Tenants: platform admins only; another tenant is 404.
        assert_eq!(
            status(decide(Rule::PlatformAdmin, &platform, Some("beta"))),
            200
        );
        assert_eq!(
            status(decide(Rule::PlatformAdmin, &admin, Some("beta"))),
            404
        );
        assert_eq!(
            status(decide(Rule::PlatformAdmin, &admin, Some("acme"))),
            403
        );
        assert_eq!(status(decide(Rule::PlatformAdmin, &admin, None)), 403);
        // Users: the tenant's admin, not its members, not other tenants.
        assert_eq!(status(decide(Rule::TenantUsers, &admin, Some("acme"))), 200);
        assert_eq!(status(decide(Rule::TenantUsers, &admin, Some("beta"))), 404);
        assert_eq!(
            status(decide(Rule::TenantUsers, &member, Some("acme"))),
            403
        );
        assert_eq!(
            status(decide(Rule::TenantUsers, &member, Some("beta"))),
            404
        );
        assert_eq!(
            status(decide(Rule::TenantUsers, &platform, Some("beta"))),
            200
        );
        // Tenant data: anyone with a tenant.
        assert_eq!(status(decide(Rule::TenantData, &member, None)), 200);
        assert_eq!(status(decide(Rule::TenantData, &platform, None)), 403);
    }

    #[test]
    fn unknown_routes_have_no_rule() {
        assert_eq!(
            rule_of(&Method::GET, "/api/v1/tables"),
            Some(Rule::TenantData)
        );
        assert_eq!(rule_of(&Method::PUT, "/api/v1/tables"), None);
        assert_eq!(rule_of(&Method::GET, "/api/v1/secret"), None);
    }
}
