//! Dyno's control plane: tenants, users, tables and API keys in Postgres
//! (the source of truth), a REST API over them, and a reconciler that
//! brings every data-plane cluster to the desired catalog.
//!
//! Stateless apart from Postgres: several replicas can serve the API
//! behind one address; the reconciler runs on one of them at a time (a
//! Postgres advisory lock). The data plane never calls back: it serves
//! with the catalog it was last given.
//!
//! Modules, in layers: `error`, `secrets`, `config` → `auth` → `authz`
//! (the policy) → `dataplane` (calls to clusters) → `api` and `items`
//! (handlers) → `reconcile` → this file (state, router, start-up). The
//! web console (crate `dyno-console`) is mounted beside the API by
//! [`run`] and calls the API in-process.

pub mod api;
pub mod auth;
pub mod authz;
pub mod config;
pub mod dataplane;
pub mod error;
pub mod health;
pub mod items;
pub mod latency;
pub mod localpg;
pub mod reconcile;
pub mod secrets;
pub mod staleness;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Notify;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::ControlPlaneConfig;

use crate::auth::{Role, Sessions};
use crate::authz::Caller;
use crate::error::{ApiError, ApiResult};
use crate::secrets::KeyMaster;

/// The schema, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: PgPool,
    sessions: Sessions,
    master: KeyMaster,
    login_failures_per_minute: u32,
    wake: Notify,
    http: dyno_tls::ReloadingClient,
    tls: Option<Arc<dyno_tls::Tls>>,
    public_data_url: Option<String>,
    latency: latency::Latency,
    metrics_interval: Duration,
}

impl AppState {
    /// State over a pool; calls to the nodes over TLS with `tls`.
    pub fn new(
        db: PgPool,
        sessions: Sessions,
        master: KeyMaster,
        login_failures_per_minute: u32,
        tls: Option<Arc<dyno_tls::Tls>>,
    ) -> anyhow::Result<AppState> {
        Ok(AppState {
            inner: Arc::new(Inner {
                db,
                sessions,
                master,
                login_failures_per_minute,
                wake: Notify::new(),
                http: dyno_tls::ReloadingClient::new(tls.clone(), Arc::new(|b| b))?,
                tls,
                public_data_url: None,
                latency: latency::Latency::default(),
                metrics_interval: Duration::from_secs(5),
            }),
        })
    }

    /// The database.
    pub fn db(&self) -> &PgPool {
        &self.inner.db
    }

    /// The session keys.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// The key master.
    pub fn master(&self) -> &KeyMaster {
        &self.inner.master
    }

    /// Sets the data plane's public address (`--public-data-url`).
    pub fn with_public_data_url(mut self, url: Option<String>) -> AppState {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.public_data_url = url.map(|u| u.trim_end_matches('/').to_owned());
        }
        self
    }

    /// Sets the time between latency readings (`--metrics-interval-secs`).
    pub fn with_metrics_interval(mut self, interval: Duration) -> AppState {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.metrics_interval = interval;
        }
        self
    }

    /// The time between latency readings.
    pub fn metrics_interval(&self) -> Duration {
        self.inner.metrics_interval
    }

    /// The collected latency figures.
    pub fn latency(&self) -> &latency::Latency {
        &self.inner.latency
    }

    /// The data plane's public address, when configured.
    pub fn public_data_url(&self) -> Option<&str> {
        self.inner.public_data_url.as_deref()
    }

    /// The client for calls to data-plane clusters (HTTPS with this
    /// process's certificate when TLS is on).
    pub fn http(&self) -> reqwest::Client {
        self.inner.http.get()
    }

    /// A client for calls to data-plane clusters, configured by `configure`
    /// (a background task's own timeouts), renewed with the certificate.
    pub fn http_with(
        &self,
        configure: dyno_tls::Configure,
    ) -> Result<dyno_tls::ReloadingClient, dyno_tls::TlsError> {
        dyno_tls::ReloadingClient::new(self.inner.tls.clone(), configure)
    }

    /// Tells this replica's reconciler to run a pass now (others poll).
    pub fn wake_reconciler(&self) {
        self.inner.wake.notify_one();
    }

    /// Waits for a wake-up.
    pub async fn woken(&self) {
        self.inner.wake.notified().await;
    }

    /// The user a session token belongs to.
    pub async fn caller(&self, token: &str) -> ApiResult<Caller> {
        if let Some((id, secret)) = dyno_core::apikey::parse_token(token) {
            return self.key_caller(id, secret).await;
        }
        let session = self
            .sessions()
            .verify(token)
            .ok_or_else(ApiError::unauthorized)?;
        let id = session.user_id;
        let u = sqlx::query!(
            r#"SELECT email, role, tenant,
                      EXISTS (SELECT 1 FROM revoked_sessions WHERE jti = $2) AS "revoked!"
                 FROM users WHERE id = $1"#,
            id,
            session.jti
        )
        .fetch_optional(self.db())
        .await?
        .filter(|u| !u.revoked)
        .ok_or_else(ApiError::unauthorized)?;
        Ok(Caller {
            session: Some(session),
            user_id: id,
            email: u.email,
            role: Role::parse(&u.role)
                .ok_or_else(|| ApiError::internal("unknown role in users"))?,
            tenant: u.tenant,
            key: None,
        })
    }

    /// An API key as a caller: its secret checked by derivation, active
    /// (or still pending), its tenant not suspended.
    async fn key_caller(&self, id: &str, secret: &str) -> ApiResult<Caller> {
        let expected = self.master().key_secret(id);
        if !dyno_core::apikey::constant_time_eq(expected.as_bytes(), secret.as_bytes()) {
            return Err(ApiError::unauthorized());
        }
        let k = sqlx::query!(
            "SELECT k.tenant, k.scopes, k.status, t.state
               FROM api_keys k JOIN tenants t ON t.name = k.tenant WHERE k.id = $1",
            id
        )
        .fetch_optional(self.db())
        .await?
        .ok_or_else(ApiError::unauthorized)?;
        if k.status == "revoked" || k.state == "suspended" {
            return Err(ApiError::unauthorized());
        }
        let scopes: Vec<crate::api::Scope> = serde_json::from_value(k.scopes)
            .map_err(|e| ApiError::internal(format!("stored key scopes: {e}")))?;
        Ok(Caller {
            session: None,
            user_id: 0,
            email: String::new(),
            role: Role::TenantMember,
            tenant: Some(k.tenant),
            key: Some(crate::authz::KeyCaller {
                id: id.to_owned(),
                manages: scopes
                    .into_iter()
                    .filter(|s| s.access == "manage")
                    .map(|s| s.table)
                    .collect(),
            }),
        })
    }

    /// Seconds of debt one failed login adds to its email's bucket.
    fn login_debt_per_failure(&self) -> f64 {
        60.0 / f64::from(self.inner.login_failures_per_minute.max(1))
    }

    /// Refuses a login for an email with too many recent failures (429
    /// with the seconds until one more attempt is allowed).
    ///
    /// Failures fill a leaky bucket per email (GCRA): each one adds
    /// `60 / limit` seconds of debt, paid back as time passes, so an email
    /// can fail `limit` times at once and then once every `60 / limit`
    /// seconds, with no window boundary to reset the count.
    pub async fn check_login_limit(&self, email: &str) -> ApiResult<()> {
        let per_failure = self.login_debt_per_failure();
        let debt = sqlx::query_scalar!(
            "SELECT EXTRACT(EPOCH FROM (debt_until - now()))::float8 AS \"debt!\"
               FROM login_failures WHERE email = $1",
            email
        )
        .fetch_optional(self.db())
        .await?;
        // Refused when one more failure would not fit: it would take the
        // debt past a minute (`limit` failures' worth).
        let wait = debt.map_or(0.0, |d| d + per_failure - 60.0);
        if wait > 0.0 {
            let secs = wait.ceil().max(1.0) as u64;
            return Err(ApiError {
                retry_after: Some(secs),
                ..ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "TooManyAttempts",
                    format!("too many failed logins for this email; retry in {secs} s"),
                )
            });
        }
        Ok(())
    }

    /// Counts a failed login: adds one failure's debt to the email's
    /// bucket, and forgets buckets whose debt is paid.
    pub async fn record_login_failure(&self, email: &str) -> ApiResult<()> {
        let per_failure = self.login_debt_per_failure();
        sqlx::query!(
            "INSERT INTO login_failures (email, debt_until)
             VALUES ($1, now() + make_interval(secs => $2))
             ON CONFLICT (email) DO UPDATE
               SET debt_until = greatest(login_failures.debt_until, now()) + make_interval(secs => $2)",
            email,
            per_failure
        )
        .execute(self.db())
        .await?;
        sqlx::query!("DELETE FROM login_failures WHERE debt_until < now()")
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// Records a change the data plane must learn: appends it to the audit
    /// log and starts a reconciliation pass on this replica.
    pub async fn record_change(
        &self,
        actor: &str,
        tenant: Option<&str>,
        action: &str,
        resource: &str,
        detail: serde_json::Value,
    ) -> ApiResult<()> {
        self.audit(actor, tenant, action, resource, detail).await?;
        self.wake_reconciler();
        Ok(())
    }

    /// Appends to the audit log.
    pub async fn audit(
        &self,
        actor: &str,
        tenant: Option<&str>,
        action: &str,
        resource: &str,
        detail: serde_json::Value,
    ) -> ApiResult<()> {
        sqlx::query!(
            "INSERT INTO audit_log (actor, tenant, action, resource, detail) VALUES ($1, $2, $3, $4, $5)",
            actor,
            tenant,
            action,
            resource,
            detail
        )
        .execute(self.db())
        .await?;
        Ok(())
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Dyno control plane", description = "Tenants, users, tables and API keys of a Dyno deployment."),
    tags(
        (name = "auth"), (name = "tenants"), (name = "users"), (name = "tables"),
        (name = "items"), (name = "keys"), (name = "audit"), (name = "clusters")
    )
)]
struct ApiDoc;

/// The API's answer to a path it does not serve.
pub fn api_not_found() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "NotFound",
        "no such endpoint; see /api/v1/openapi.json",
    )
}

/// The API's routes (every one behind the policy middleware) and their
/// OpenAPI document, built from the same route list. No fallback: the
/// process mounts the console beside it (see [`run`]).
pub fn api_router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::login))
        .routes(routes!(api::logout))
        .routes(routes!(api::me))
        .routes(routes!(api::endpoint))
        .routes(routes!(api::list_tenants, api::create_tenant))
        .routes(routes!(api::get_tenant, api::patch_tenant))
        .routes(routes!(api::list_users, api::create_user))
        .routes(routes!(api::list_tables, api::create_table))
        .routes(routes!(api::get_table, api::patch_table, api::delete_table))
        .routes(routes!(latency::table_latency))
        .routes(routes!(latency::usage))
        .routes(routes!(staleness::table_staleness))
        .routes(routes!(items::scan_items))
        .routes(routes!(
            items::get_item,
            items::put_item,
            items::delete_item
        ))
        .routes(routes!(api::list_keys, api::create_key))
        .routes(routes!(api::get_key, api::revoke_key))
        .routes(routes!(api::audit))
        .routes(routes!(api::clusters))
        .routes(routes!(health::cluster, api::register_cluster))
        .routes(routes!(health::status))
        .split_for_parts();
    let doc_json = doc.clone();
    let router = router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let d = doc_json.clone();
                async move { axum::Json(d) }
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authz::authorize,
        ))
        .with_state(state);
    (router, doc)
}

/// The API alone, with its JSON 404 for unknown paths, and its document.
pub fn router_and_doc(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, doc) = api_router(state);
    (router.fallback(|| async { api_not_found() }), doc)
}

/// What the process serves beside the API: the console's routes, given the
/// state (their fallback answers every unknown path, `/api/…` included).
pub type Ui = fn(AppState) -> Router;

/// Connects to Postgres, retrying until it answers (the process stays up
/// while the database is down).
pub async fn connect(url: &str) -> PgPool {
    let mut delay = Duration::from_millis(200);
    loop {
        match PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(3))
            .connect(url)
            .await
        {
            Ok(pool) => return pool,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach Postgres yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Registers the bootstrap cluster and platform admin, if configured.
async fn bootstrap(config: &ControlPlaneConfig, state: &AppState) -> anyhow::Result<()> {
    if let (Some(spec), Some(token_file)) = (
        &config.bootstrap_cluster,
        &config.bootstrap_cluster_token_file,
    ) {
        let (name, urls) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--bootstrap-cluster is NAME=URL[,URL…]"))?;
        let urls: Vec<String> = urls
            .split(',')
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect();
        let token = secrets::read_secret("cluster admin token", token_file)?;
        api::store_cluster(state, name, &urls, &token).await?;
        tracing::info!(cluster = name, ?urls, "registered the bootstrap cluster");
    }
    if let (Some(email), Some(pw_file)) = (
        &config.bootstrap_admin_email,
        &config.bootstrap_admin_password_file,
    ) {
        let email = api::check_email(email).map_err(|e| anyhow::anyhow!(e.message))?;
        let password = String::from_utf8(secrets::read_secret("admin password", pw_file)?)?;
        auth::check_password(&password).map_err(|e| anyhow::anyhow!(e.message))?;
        let hash = auth::hash_password(&password).map_err(|e| anyhow::anyhow!(e.message))?;
        let created = sqlx::query!(
            "INSERT INTO users (email, password_hash, role)
             SELECT $1, $2, 'platform_admin' WHERE NOT EXISTS (SELECT 1 FROM users WHERE email = $1)",
            email,
            hash
        )
        .execute(state.db())
        .await?;
        if created.rows_affected() > 0 {
            tracing::info!(email, "created the bootstrap platform admin");
        }
    }
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the control plane on `listener` until `shutdown` completes: the
/// API at `/api/v1`, and `ui` (the console) at every other path.
pub async fn run(
    config: ControlPlaneConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ui: Option<Ui>,
) -> anyhow::Result<()> {
    let master = KeyMaster::load(&config.key_master_file)?;
    let current = secrets::read_or_create_secret("session signing key", &config.jwt_key_file)?;
    let previous = config
        .jwt_previous_key_file
        .as_deref()
        .map(|p| secrets::read_secret("previous session signing key", p))
        .transpose()?;
    let sessions = Sessions::new(current, previous, config.session_ttl_secs);
    let db = connect(&config.database_url).await;
    // Migrations run under sqlx's own advisory lock, so replicas starting
    // together apply them once.
    loop {
        match MIGRATOR.run(&db).await {
            Ok(()) => break,
            Err(sqlx::migrate::MigrateError::Execute(e))
                if matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) =>
            {
                tracing::warn!(error = %e, "cannot migrate yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let tls = config.tls_files()?.map(dyno_tls::Tls::load).transpose()?;
    if tls.is_none()
        && let Some(exposed) = dyno_tls::plaintext_exposure(&[config.listen])
    {
        tracing::warn!(
            addr = %exposed,
            "SERVING PLAINTEXT ON A NON-LOOPBACK ADDRESS: passwords, sessions and API keys travel unencrypted. Give --tls-cert, --tls-key and --tls-ca (or terminate TLS in front)"
        );
    }
    let state = AppState::new(
        db,
        sessions,
        master,
        config.login_failures_per_minute,
        tls.clone(),
    )?
    .with_public_data_url(config.public_data_url.clone())
    .with_metrics_interval(Duration::from_secs(config.metrics_interval_secs));
    bootstrap(&config, &state).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Aborted if this future is dropped, so that a replica that dies
    // takes its reconciler (and its lock) with it.
    let mut reconciler = AbortOnDrop(tokio::spawn(reconcile::run(
        state.clone(),
        Duration::from_millis(config.reconcile_interval_ms),
        stop_rx.clone(),
    )));
    let mut collector = AbortOnDrop(tokio::spawn(latency::run(state.clone(), stop_rx.clone())));
    let router = match ui {
        Some(ui) => api_router(state.clone()).0.merge(ui(state)),
        None => router_and_doc(state).0,
    };
    tracing::info!(addr = %listener.local_addr()?, "dyno control plane started");
    let mut http_stop = stop_rx;
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    let http_stop = async move {
        http_stop.changed().await.ok();
    };
    match tls {
        Some(tls) => {
            let listener =
                dyno_tls::TlsListener::new(listener, tls, dyno_tls::ClientAuth::Optional)?;
            axum::serve(listener, router)
                .with_graceful_shutdown(http_stop)
                .await?
        }
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(http_stop)
                .await?
        }
    }
    (&mut reconciler.0).await.ok();
    (&mut collector.0).await.ok();
    tracing::info!("dyno control plane stopped");
    Ok(())
}
