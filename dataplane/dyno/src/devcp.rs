//! The control-plane half of `dyno dev`: a private Postgres in
//! `DIR/postgres` (or `$DATABASE_URL`), the control plane as its own
//! process, and the demo tenant, user, table and key, made through the
//! REST API on first start.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dyno_controlplane::localpg::LocalPostgres;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The platform admin's sign-in, as `cluster.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminLogin {
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
}

/// The demo tenant's user and key, as `cluster.json` records them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Demo {
    /// The tenant.
    pub tenant: String,
    /// Its admin's email.
    pub email: String,
    /// Its admin's password.
    pub password: String,
    /// The API key's id.
    pub key_id: String,
    /// The bearer token.
    pub token: String,
    /// The SigV4 access key id.
    pub access_key_id: String,
    /// The SigV4 secret access key.
    pub secret_access_key: String,
}

/// The dev cluster's database.
#[derive(Debug)]
pub enum Database {
    /// `DIR/postgres`, started and stopped with the cluster.
    Private(LocalPostgres),
    /// `$DATABASE_URL`, left alone.
    External,
}

impl Database {
    /// Starts the private server (or uses `$DATABASE_URL`); the URL to give
    /// the control plane on its command line (`None`: it reads
    /// `$DATABASE_URL` itself, so that a password never shows in `ps`).
    pub async fn start(dir: &Path) -> anyhow::Result<(Database, Option<String>)> {
        if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
            println!("using the database in $DATABASE_URL");
            return Ok((Database::External, None));
        }
        let pg =
            LocalPostgres::init(&dir.join("postgres")).context("preparing the dev Postgres")?;
        if pg.is_running() {
            // A previous run died without stopping it.
            pg.stop().ok();
        }
        pg.start().context("starting the dev Postgres")?;
        let url = pg.create_database("dyno").await?;
        println!(
            "postgres: {} (data in {})",
            url,
            dir.join("postgres").display()
        );
        Ok((Database::Private(pg), Some(url)))
    }

    /// Stops the private server.
    pub fn stop(&self) {
        if let Database::Private(pg) = self {
            match pg.stop() {
                Ok(()) => println!("stopped postgres"),
                Err(e) => println!("could not stop postgres: {e:#}"),
            }
        }
    }
}

/// The control plane's command line.
pub fn controlplane_argv(
    exe: &str,
    dir: &Path,
    port: u16,
    db_url: Option<&str>,
    node_urls: &[String],
    tls: Option<&dyno_tls::TlsFiles>,
) -> Vec<String> {
    let secrets = dir.join("secrets");
    let p = |n: &str| secrets.join(n).display().to_string();
    let mut argv = vec![
        exe.to_owned(),
        "controlplane".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--key-master-file".into(),
        p("key-master"),
        "--jwt-key-file".into(),
        p("jwt-key"),
        "--bootstrap-cluster".into(),
        format!("dev={}", node_urls.join(",")),
        "--bootstrap-cluster-token-file".into(),
        p("admin-token"),
        "--bootstrap-admin-email".into(),
        ADMIN_EMAIL.into(),
        "--bootstrap-admin-password-file".into(),
        p("admin-password"),
    ];
    if let Some(u) = db_url {
        argv.extend(["--database-url".into(), u.to_owned()]);
    }
    argv.extend(tls.iter().flat_map(|f| f.to_args()));
    argv
}

/// The dev platform admin's email.
pub const ADMIN_EMAIL: &str = "admin@dyno.local";

/// Starts the control plane, logging to `DIR/controlplane.log`.
pub fn spawn(argv: &[String], dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("controlplane.log"))?;
    let (program, rest) = argv.split_first().context("empty control plane argv")?;
    Command::new(program)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the control plane")
}

/// Waits until the control plane answers.
pub async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    child: &mut Child,
    dir: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the control plane exited ({status}) during start-up; see {}",
                dir.join("controlplane.log").display()
            );
        }
        if http
            .get(format!("{url}/api/v1/openapi.json"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the control plane did not answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A REST call that must succeed with one of `ok`; retried on 503 (the
/// control plane has not reached the cluster yet) for up to 60 s.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Value,
    ok: &[u16],
) -> anyhow::Result<(u16, Value)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut req = http.request(method.clone(), url).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if ok.contains(&status) {
            return Ok((status, v));
        }
        if status != 503 || Instant::now() > deadline {
            bail!("{method} {url}: {status} {v}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn login(
    http: &reqwest::Client,
    cp: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let (_, b) = call(
        http,
        reqwest::Method::POST,
        &format!("{cp}/api/v1/auth/login"),
        None,
        json!({"email": email, "password": password}),
        &[200],
    )
    .await?;
    b["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in the login answer")
}

/// Makes the demo tenant, its admin, the table `demo` and a key for it.
pub async fn make_demo(
    http: &reqwest::Client,
    cp: &str,
    admin_password: &str,
    nodes: usize,
) -> anyhow::Result<Demo> {
    let root = login(http, cp, ADMIN_EMAIL, admin_password).await?;
    let post = reqwest::Method::POST;
    call(
        http,
        post.clone(),
        &format!("{cp}/api/v1/tenants"),
        Some(&root),
        json!({"name": "demo"}),
        &[201, 409],
    )
    .await?;
    let email = "demo@dyno.local".to_owned();
    let password = crate::creds::random_hex(12)?;
    call(
        http,
        post.clone(),
        &format!("{cp}/api/v1/tenants/demo/users"),
        Some(&root),
        json!({"email": email, "password": password, "role": "tenant_admin"}),
        &[201],
    )
    .await?;
    let user = login(http, cp, &email, &password).await?;
    let n = nodes.min(3);
    let q = if n == 3 { 2 } else { n };
    call(
        http,
        post.clone(),
        &format!("{cp}/api/v1/tables"),
        Some(&user),
        json!({"name": "demo", "n": n, "r": q, "w": q, "conflict": "siblings"}),
        &[201, 409],
    )
    .await?;
    let (_, key) = call(
        http,
        post,
        &format!("{cp}/api/v1/keys"),
        Some(&user),
        json!({"name": "demo", "scopes": [{"table": "*", "access": "manage"}]}),
        &[201],
    )
    .await?;
    let s = |f: &str| {
        key[f]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no {f} in the new key"))
    };
    let demo = Demo {
        tenant: "demo".into(),
        email,
        password,
        key_id: s("id")?,
        token: s("token")?,
        access_key_id: s("access_key_id")?,
        secret_access_key: s("secret_access_key")?,
    };
    // Ready when the table and the key have reached every node.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, t) = call(
            http,
            reqwest::Method::GET,
            &format!("{cp}/api/v1/tables/demo"),
            Some(&user),
            Value::Null,
            &[200],
        )
        .await?;
        let (_, k) = call(
            http,
            reqwest::Method::GET,
            &format!("{cp}/api/v1/keys/{}", demo.key_id),
            Some(&user),
            Value::Null,
            &[200],
        )
        .await?;
        if t["status"] == "active" && k["status"] == "active" {
            return Ok(demo);
        }
        if Instant::now() > deadline {
            bail!("the demo table and key did not reach every node within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
