//! A whole deployment in one process for the control plane's tests: a
//! private Postgres (Unix socket only), data-plane nodes on listeners the
//! test binds, and control-plane replicas.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use dyno_controlplane::ControlPlaneConfig;
use dyno_controlplane::localpg::LocalPostgres;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ADMIN_EMAIL: &str = "root@example.com";
pub const ADMIN_PASSWORD: &str = "root-password-1";
pub const NODE_TOKEN: &str = "cp-test-node-admin-token-0123";
const KEY_MASTER: &str = "cp-test-key-master-0123456789abcdef0123";

#[derive(Parser)]
struct NodeCli {
    #[command(flatten)]
    node: dyno_node::NodeConfig,
}

#[derive(Parser)]
struct CpCli {
    #[command(flatten)]
    cp: ControlPlaneConfig,
}

/// A task running until its stop sender fires.
pub struct Running {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops it and waits (at most 20 s).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            s.send(()).ok();
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.done)
            .await
            .expect("stops within 20 s")
            .ok();
    }

    /// Kills it without a clean shutdown (the task is aborted).
    pub fn kill(self) {
        self.done.abort();
    }
}

/// The deployment.
pub struct Env {
    pub pg: LocalPostgres,
    pub db_url: String,
    pub nodes: Vec<Running>,
    dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Env {
    /// Postgres, `nodes` data-plane nodes in one cluster, no control plane
    /// yet.
    pub async fn start(nodes: usize) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        // The postgres user (when we are root) must reach its directory.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let pg = LocalPostgres::init(&dir.path().join("pg")).expect("initdb");
        pg.start().expect("start postgres");
        let db_url = pg.create_database("dyno").await.expect("database");
        std::fs::write(dir.path().join("admin-token"), NODE_TOKEN).expect("token");
        std::fs::write(dir.path().join("key-master"), KEY_MASTER).expect("master");
        let mut env = Env {
            pg,
            db_url,
            nodes: Vec::new(),
            dir,
            http: dyno_tls::http_client_builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        };
        env.start_nodes(nodes).await;
        env
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn start_nodes(&mut self, n: usize) {
        let mut bound = Vec::new();
        for _ in 0..n {
            bound.push(dyno_node::Listeners {
                http: tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
                rpc: tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
            });
        }
        let addr = |l: &tokio::net::TcpListener| l.local_addr().expect("addr");
        let members: Vec<String> = bound
            .iter()
            .enumerate()
            .map(|(i, l)| format!("n{}={},{}", i + 1, addr(&l.http), addr(&l.rpc)))
            .collect();
        for (i, listeners) in bound.into_iter().enumerate() {
            let data = self.path(&format!("n{}", i + 1));
            let mut argv = vec![
                "dyno".to_owned(),
                "--id".into(),
                format!("n{}", i + 1),
                "--data-dir".into(),
                data.display().to_string(),
                "--gossip-interval-ms".into(),
                "100".into(),
                "--admin-token-file".into(),
                self.path("admin-token").display().to_string(),
                "--key-master-file".into(),
                self.path("key-master").display().to_string(),
            ];
            for m in &members {
                argv.extend(["--member".into(), m.clone()]);
            }
            let config = NodeCli::try_parse_from(argv).expect("node config").node;
            let url = format!("http://{}", addr(&listeners.http));
            let (tx, rx) = oneshot::channel::<()>();
            let done = tokio::spawn(async move {
                let res = dyno_node::run(config, listeners, async move {
                    rx.await.ok();
                })
                .await;
                if let Err(e) = res {
                    eprintln!("node stopped with {e}");
                }
            });
            self.nodes.push(Running {
                url,
                stop: Some(tx),
                done,
            });
        }
    }

    /// A control-plane replica with `extra` flags; returns once it answers
    /// and its reconciler (or another replica's) has reached the cluster.
    pub async fn control_plane(&self, extra: &[&str]) -> Running {
        self.control_plane_with(extra, None).await
    }

    /// A control-plane replica serving `ui` (the console) beside the API.
    pub async fn control_plane_with(
        &self,
        extra: &[&str],
        ui: Option<dyno_controlplane::Ui>,
    ) -> Running {
        std::fs::write(self.path("admin-password"), ADMIN_PASSWORD).expect("password");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let mut argv = vec![
            "dyno".to_owned(),
            "--database-url".into(),
            self.db_url.clone(),
            "--key-master-file".into(),
            self.path("key-master").display().to_string(),
            "--jwt-key-file".into(),
            self.path("jwt-key").display().to_string(),
            "--reconcile-interval-ms".into(),
            "100".into(),
            "--bootstrap-cluster".into(),
            format!("main={}", self.nodes[0].url),
            "--bootstrap-cluster-token-file".into(),
            self.path("admin-token").display().to_string(),
            "--bootstrap-admin-email".into(),
            ADMIN_EMAIL.into(),
            "--bootstrap-admin-password-file".into(),
            self.path("admin-password").display().to_string(),
        ];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        let config = CpCli::try_parse_from(argv).expect("cp config").cp;
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            if let Err(e) = dyno_controlplane::run(
                config,
                listener,
                async move {
                    rx.await.ok();
                },
                ui,
            )
            .await
            {
                eprintln!("control plane stopped with {e:#}");
            }
        });
        let cp = Running {
            url,
            stop: Some(tx),
            done,
        };
        eventually(30, "the control plane to reach the cluster", || async {
            let r = self
                .http
                .post(format!("{}/api/v1/auth/login", cp.url))
                .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
                .send()
                .await
                .ok()?;
            let token = r.json::<Value>().await.ok()?["token"].as_str()?.to_owned();
            let c: Value = self
                .http
                .get(format!("{}/api/v1/clusters", cp.url))
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (c["clusters"][0]["node_count"].as_i64()? > 0).then_some(())
        })
        .await;
        cp
    }

    /// Signs in; the session token.
    pub async fn login(&self, cp: &str, email: &str, password: &str) -> String {
        let (s, b) = self
            .call(
                cp,
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(s, 200, "login {email}: {b}");
        b["token"].as_str().expect("token").to_owned()
    }

    /// Calls the control plane: status and JSON body.
    pub async fn call(
        &self,
        cp: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, format!("{cp}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        let s = resp.status().as_u16();
        (s, resp.json().await.unwrap_or(Value::Null))
    }

    /// Makes a tenant with an admin and a member; their session tokens.
    pub async fn tenant(&self, cp: &str, root: &str, name: &str) -> (String, String) {
        let (s, b) = self
            .call(
                cp,
                "POST",
                "/api/v1/tenants",
                Some(root),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let mut tokens = Vec::new();
        for role in ["tenant_admin", "tenant_member"] {
            let email = format!("{role}@{name}.example.com");
            let (s, b) = self
                .call(
                    cp,
                    "POST",
                    &format!("/api/v1/tenants/{name}/users"),
                    Some(root),
                    Some(json!({"email": email, "password": "password-123", "role": role})),
                )
                .await;
            assert_eq!(s, 201, "{b}");
            tokens.push(self.login(cp, &email, "password-123").await);
        }
        let member = tokens.pop().expect("member");
        let admin = tokens.pop().expect("admin");
        (admin, member)
    }

    /// An item request on a data-plane node with a bearer token: its status.
    pub async fn item(
        &self,
        node: usize,
        method: &str,
        table: &str,
        key: &str,
        token: &str,
        body: Option<&str>,
    ) -> u16 {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(
                m,
                format!("{}/v1/tables/{table}/items/{key}", self.nodes[node].url),
            )
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.body(b.to_owned());
        }
        req.send().await.map_or(0, |r| r.status().as_u16())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.pg.stop().ok();
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
