//! Dyno's web console: server-side rendered pages (Leptos, no
//! hydration: every page is plain HTML forms and links) served by the
//! control plane's process beside its REST API.
//!
//! Modules, in layers: `chart` (SVG line charts, also used by `dyno
//! bench`), `client` (the API, in-process) and `session`
//! (cookies, sign-in, anti-forgery) → `layout` (the page shell and form
//! helpers) → `pages/*` (one module per area) → this file (routes,
//! security headers, static assets).
//!
//! The console holds no rule of its own: whatever a page shows or
//! changes, it reads or changes through the API as the signed-in user, so
//! validation, authorization and tenant isolation are the API's.

pub mod chart;
pub mod client;
pub mod layout;
pub mod pages;
pub mod session;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dyno_controlplane::AppState;

/// What the console's handlers share.
#[derive(Debug, Clone)]
pub struct Console {
    /// The API's router, called in-process.
    pub api: Router,
    /// The control plane's state (for the session keys).
    pub cp: AppState,
}

/// The stylesheet.
pub const STYLESHEET: &str = include_str!("../assets/console.css");
/// The one script: copy buttons and the auto-refresh of pages that wait
/// for something (pages work without it).
pub const SCRIPT: &str = include_str!("../assets/console.js");

/// The console's routes over the control plane's state; mounted by
/// `dyno_controlplane::run` beside the API.
pub fn router(state: AppState) -> Router {
    let console = Console {
        api: dyno_controlplane::api_router(state.clone()).0,
        cp: state,
    };
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login::form).post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .route(
            "/tables",
            get(pages::tables::list).post(pages::tables::create),
        )
        .route(
            "/tables/{table}",
            get(pages::tables::show).post(pages::tables::update),
        )
        .route("/tables/{table}/delete", post(pages::tables::delete))
        .route(
            "/tables/{table}/items",
            get(pages::items::browse).post(pages::items::put),
        )
        .route("/tables/{table}/items/delete", post(pages::items::delete))
        .route("/keys", get(pages::keys::list).post(pages::keys::create))
        .route(
            "/keys/{id}/revoke",
            get(pages::keys::confirm_revoke).post(pages::keys::revoke),
        )
        .route("/cluster", get(pages::cluster::show))
        .route(
            "/tenants",
            get(pages::tenants::list).post(pages::tenants::create),
        )
        .route(
            "/tenants/{tenant}",
            get(pages::tenants::show).post(pages::tenants::set_state),
        )
        .route("/tenants/{tenant}/users", post(pages::tenants::invite))
        .route("/audit", get(pages::audit::list))
        .route("/assets/console.css", get(stylesheet))
        .route("/assets/console.js", get(script))
        .fallback(fallback)
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(console)
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Unknown paths: the API's JSON 404 under `/api/`, a page elsewhere.
async fn fallback(req: Request) -> Response {
    if req.uri().path().starts_with("/api/") || req.uri().path() == "/api" {
        return dyno_controlplane::api_not_found().into_response();
    }
    pages::not_found()
}

/// Headers on every console answer: nothing loads from elsewhere, no
/// framing, no caching of pages (some show secrets once).
async fn security_headers(req: Request, next: Next) -> Response {
    let is_api = req.uri().path().starts_with("/api/");
    let mut resp = next.run(req).await;
    if is_api {
        return resp;
    }
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
