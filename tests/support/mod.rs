//! A cluster of real `dyno node` processes for system tests.

pub mod proxy;

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::StatusCode;
use serde_json::Value;

/// The `values` of an item or replica body, decoded from base64 as UTF-8.
pub fn values(body: &Value) -> Vec<String> {
    body["values"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    String::from_utf8(B64.decode(v.as_str().unwrap_or("")).unwrap_or_default())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The seed of a seeded fault test: `DYNO_TEST_SEED`, else the clock.
/// Tests print it so that a failure can be replayed.
pub fn test_seed() -> u64 {
    std::env::var("DYNO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        })
}

/// `dyno node` arguments common to every test node: identity, data
/// directory, a short replica timeout, and `opts`. The node's sockets are
/// bound by the harness and passed in (see [`Listeners`]), so no address
/// is given here.
fn node_argv(dir: &std::path::Path, id: &str, opts: &NodeOpts) -> Vec<String> {
    let mut argv = vec![
        "node".to_owned(),
        "--id".into(),
        id.to_owned(),
        "--data-dir".into(),
        dir.join(id).display().to_string(),
        "--replica-timeout-ms".into(),
        "1000".into(),
        "--admin-token-file".into(),
        dir.join("secrets/admin-token").display().to_string(),
        "--key-master-file".into(),
        dir.join("secrets/key-master").display().to_string(),
    ];
    if let Some(b) = opts.hint_max_bytes {
        argv.extend(["--hint-max-bytes-per-target".into(), b.to_string()]);
    }
    argv.extend(opts.extra.iter().cloned());
    argv
}

/// Node flags for anti-entropy on request only, with its budget lifted, so
/// that a test's repair pass finishes at once.
pub fn fast_aae_args() -> Vec<String> {
    [
        "--aae-interval-secs",
        "0",
        "--aae-partitions-per-sec",
        "5000",
        "--aae-keys-per-sec",
        "100000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Options for every node of a test cluster.
#[derive(Debug, Clone, Default)]
pub struct NodeOpts {
    /// `--hint-max-bytes-per-target` (0 disables hints).
    pub hint_max_bytes: Option<u64>,
    /// Route every node-to-node link through its own cuttable proxy.
    pub proxies: bool,
    /// Give the nodes only names in `--member` and node 1 as their seed, so
    /// that they learn every address by gossip.
    pub seed_only: bool,
    /// More arguments for every node.
    pub extra: Vec<String>,
}

/// A node's two sockets, bound by the harness before the node starts and
/// passed to it as inherited file descriptors (`LISTEN_FDS`, as systemd
/// does). Every port is known before any node starts, and no port is ever
/// released and re-taken by number while other tests run.
pub struct Listeners {
    http: std::net::TcpListener,
    rpc: std::net::TcpListener,
}

impl Listeners {
    /// Fresh sockets on ports the kernel picks.
    pub fn fresh() -> Listeners {
        Listeners::on(0, 0)
    }

    /// Sockets on given ports (a restart reuses its ports: std sets
    /// SO_REUSEADDR, so the ports of a killed node can be bound again).
    pub fn on(http: u16, rpc: u16) -> Listeners {
        let bind = |port: u16| {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"))
        };
        Listeners {
            http: bind(http),
            rpc: bind(rpc),
        }
    }

    /// The HTTP and RPC ports.
    pub fn ports(&self) -> (u16, u16) {
        let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
        (port(&self.http), port(&self.rpc))
    }
}

struct Proc {
    id: String,
    http: String,
    ports: (u16, u16),
    /// Bound and not yet handed to a node process.
    listeners: Option<Listeners>,
    argv: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

/// Starts `dyno ARGV` on `listeners` (as `LISTEN_FDS` 3 and 4), its output
/// appended to `log`.
pub fn spawn_dyno(argv: &[String], log: &std::path::Path, listeners: Listeners) -> Child {
    use command_fds::{CommandFdExt, FdMapping};
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dyno"));
    cmd.args(argv)
        .env("LISTEN_FDS", "2")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    cmd.fd_mappings(vec![
        FdMapping {
            parent_fd: listeners.http.into(),
            child_fd: 3,
        },
        FdMapping {
            parent_fd: listeners.rpc.into(),
            child_fd: 4,
        },
    ])
    .expect("fd mappings");
    let child = cmd.spawn().expect("spawn dyno");
    // Dropping the command closes this process's copies of the sockets:
    // once the node dies, connections to it are refused, as they would
    // be for a real crashed node.
    drop(cmd);
    child
}

/// Prints the last lines of node `id`'s log, for a failing test.
pub fn print_log_tail(id: &str, log: &std::path::Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    eprintln!("---- last lines of {id} ----");
    for l in tail.iter().rev() {
        eprintln!("{l}");
    }
}

/// The admin credential every test cluster's nodes accept.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The key master every test cluster's nodes hold.
pub const KEY_MASTER: &str = "test-key-master-0123456789abcdef0123456789";

/// Writes the credential files under `dir/secrets`.
fn write_secrets(dir: &std::path::Path) {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets dir");
    std::fs::write(secrets.join("admin-token"), ADMIN_TOKEN).expect("admin token");
    std::fs::write(secrets.join("key-master"), KEY_MASTER).expect("key master");
}

/// A client that sends `token` as a bearer token.
pub fn client_with_token(token: Option<&str>) -> reqwest::Client {
    client_builder(token).build().expect("client")
}

/// Like [`client_with_token`], for `https://` URLs: trusts only the CA
/// certificate in `ca`.
pub fn client_trusting(token: Option<&str>, ca: &std::path::Path) -> reqwest::Client {
    client_builder(token)
        .tls_backend_preconfigured(dyno_tls::client_trusting(ca).expect("ca"))
        .build()
        .expect("client")
}

fn client_builder(token: Option<&str>) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    dyno_tls::http_client_builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
}

/// A running test cluster. Dropping it kills every node.
pub struct Cluster {
    /// A client with a short timeout that sends the admin credential.
    pub http: reqwest::Client,
    /// With `NodeOpts::proxies`: the proxy of each link `(from, to)`.
    pub links: std::collections::BTreeMap<(usize, usize), proxy::Proxy>,
    nodes: Vec<Proc>,
    opts: NodeOpts,
    seed: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes and waits until each answers its health check.
    pub async fn start(n: usize, opts: NodeOpts) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        write_secrets(dir.path());
        let mut bound: Vec<Option<Listeners>> = (0..n).map(|_| Some(Listeners::fresh())).collect();
        let ports: Vec<(u16, u16)> = bound
            .iter()
            .map(|l| l.as_ref().expect("bound").ports())
            .collect();
        let mut links = std::collections::BTreeMap::new();
        if opts.proxies {
            for from in 0..n {
                for to in (0..n).filter(|&t| t != from) {
                    let target: std::net::SocketAddr =
                        format!("127.0.0.1:{}", ports[to].1).parse().expect("addr");
                    links.insert((from, to), proxy::Proxy::start(target).await);
                }
            }
        }
        // Node `from` reaches node `to` through the link's proxy, if any.
        let member = |from: usize, to: usize| {
            let (h, r) = ports[to];
            let rpc = links
                .get(&(from, to))
                .map_or(format!("127.0.0.1:{r}"), |p: &proxy::Proxy| {
                    p.addr.to_string()
                });
            if opts.seed_only {
                format!("n{}", to + 1)
            } else {
                format!("n{}=127.0.0.1:{h},{rpc}", to + 1)
            }
        };
        let seed = format!("127.0.0.1:{}", ports[0].1);
        let mut nodes = Vec::new();
        for (i, (h, _)) in ports.iter().enumerate() {
            let id = format!("n{}", i + 1);
            let mut argv = node_argv(dir.path(), &id, &opts);
            for to in 0..n {
                argv.extend(["--member".into(), member(i, to)]);
            }
            if opts.seed_only && i > 0 {
                argv.extend(["--seed".into(), seed.clone()]);
            }
            let log = dir.path().join(format!("{id}.log"));
            nodes.push(Proc {
                id,
                http: format!("http://127.0.0.1:{h}"),
                ports: ports[i],
                listeners: bound[i].take(),
                argv,
                log,
                child: None,
            });
        }
        let http = client_with_token(Some(ADMIN_TOKEN));
        let mut c = Cluster {
            http,
            links,
            nodes,
            opts,
            seed,
            dir,
        };
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_healthy(i).await;
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let p = &mut self.nodes[i];
        let listeners = p
            .listeners
            .take()
            .unwrap_or_else(|| Listeners::on(p.ports.0, p.ports.1));
        p.child = Some(spawn_dyno(&p.argv, &p.log, listeners));
    }

    async fn wait_healthy(&self, i: usize) {
        let url = format!("{}/admin/v1/health", self.nodes[i].http);
        self.wait_ok(&url, &format!("{} to be healthy", self.nodes[i].id))
            .await;
    }

    /// Waits until a GET of `url` answers 2xx.
    async fn wait_ok(&self, url: &str, what: &str) {
        let http = &self.http;
        self.wait_for(
            move || async move {
                http.get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
            what,
        )
        .await;
    }

    /// Cuts node `i` off from every other node (both directions), or heals.
    pub fn isolate(&self, i: usize, cut: bool) {
        for ((from, to), p) in &self.links {
            if *from == i || *to == i {
                p.set_cut(cut);
            }
        }
    }

    /// Node `i`'s HTTP base URL.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].http.clone()
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
    }

    /// Starts one more node that knows only node 1 as its seed (it is not
    /// in the ring until joined). Returns its index.
    pub async fn add_node(&mut self) -> usize {
        self.add_node_with(&[]).await
    }

    /// [`Cluster::add_node`] with more arguments for the new node.
    pub async fn add_node_with(&mut self, extra: &[&str]) -> usize {
        let i = self.nodes.len();
        let id = format!("n{}", i + 1);
        let listeners = Listeners::fresh();
        let ports = listeners.ports();
        let mut argv = node_argv(self.dir.path(), &id, &self.opts);
        argv.extend(["--seed".into(), self.seed.clone()]);
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        self.nodes.push(Proc {
            log: self.dir.path().join(format!("{id}.log")),
            id,
            http: format!("http://127.0.0.1:{}", ports.0),
            ports,
            listeners: Some(listeners),
            argv,
            child: None,
        });
        self.spawn(i);
        self.wait_healthy(i).await;
        i
    }

    /// Freezes (SIGSTOP) or resumes (SIGCONT) node `i`: a frozen node
    /// keeps its sockets open but answers nothing, like a hung machine.
    pub fn freeze(&self, i: usize, frozen: bool) {
        let pid = self.nodes[i].child.as_ref().expect("running").id();
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Deletes node `i`'s data directory (stop it first).
    pub fn wipe(&self, i: usize) {
        let dir = self.dir.path().join(&self.nodes[i].id);
        std::fs::remove_dir_all(&dir).expect("wipe the data directory");
    }

    /// Node `i`'s name.
    pub fn id(&self, i: usize) -> String {
        self.nodes[i].id.clone()
    }

    /// Number of nodes started so far.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// GET of an admin path on node `i`, as JSON (`Null` on failure).
    pub async fn admin(&self, i: usize, path: &str) -> Value {
        match self.http.get(format!("{}{path}", self.url(i))).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// POST of JSON to an admin path on node `i`.
    pub async fn post(&self, i: usize, path: &str, body: Value) -> (StatusCode, Value) {
        Self::json(
            self.http
                .post(format!("{}{path}", self.url(i)))
                .json(&body)
                .send()
                .await
                .expect("post"),
        )
        .await
    }

    /// Polls `f` every 100 ms until it yields a value, for up to `secs`.
    pub async fn poll<F, Fut>(&self, secs: u64, mut f: F, what: &str) -> Value
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<Value>>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("timed out after {secs} s waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Like `wait_for`, with a longer limit for slow work (handoff, repair).
    pub async fn wait_long<F, Fut>(&self, secs: u64, mut cond: F, what: &str)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond().await {
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("timed out after {secs} s waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Restarts node `i` with the same arguments and waits for it.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy(i).await;
    }

    /// Node `i`'s Prometheus exposition.
    pub async fn metrics(&self, i: usize) -> String {
        self.http
            .get(format!("{}/metrics", self.url(i)))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Starts a pass of anti-entropy on node `i` and waits for it to
    /// finish; returns its report.
    pub async fn repair(&self, i: usize) -> Value {
        let (s, b) = self
            .post(i, "/admin/v1/repair", serde_json::json!({}))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let pass = b["pass"].as_u64().expect("pass id");
        self.poll(
            120,
            || async move {
                let st = self.admin(i, "/admin/v1/repair").await;
                let done = st["last"]["id"].as_u64().is_some_and(|id| id >= pass);
                done.then(|| st["last"].clone())
            },
            "the repair pass to finish",
        )
        .await
    }

    /// Polls `cond` every 50 ms until it holds, for up to 30 s.
    pub async fn wait_for<F, Fut>(&self, mut cond: F, what: &str)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond().await {
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn dump_logs(&self) {
        for p in &self.nodes {
            print_log_tail(&p.id, &p.log);
        }
    }

    /// Creates a table through node 0 and waits until every running node
    /// knows it.
    pub async fn create_table(&self, name: &str, spec: Value) {
        let resp = self
            .http
            .put(format!("{}/admin/v1/tables/{name}", self.url(0)))
            .json(&spec)
            .send()
            .await
            .expect("create");
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}",
            resp.text().await.unwrap_or_default()
        );
        for p in self.nodes.iter().filter(|p| p.child.is_some()) {
            self.wait_ok(
                &format!("{}/admin/v1/tables/{name}", p.http),
                "the table everywhere",
            )
            .await;
        }
    }

    async fn json(resp: reqwest::Response) -> (StatusCode, Value) {
        let s = resp.status();
        (s, resp.json().await.unwrap_or(Value::Null))
    }

    /// PUT through node `i`.
    pub async fn put(
        &self,
        i: usize,
        table: &str,
        key: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .put(format!("{}/v1/tables/{table}/items/{key}", self.url(i)))
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::json(req.send().await.expect("put")).await
    }

    /// GET through node `i`, with a query string such as `?r=3`.
    pub async fn get(&self, i: usize, table: &str, key: &str, query: &str) -> (StatusCode, Value) {
        Self::json(
            self.http
                .get(format!(
                    "{}/v1/tables/{table}/items/{key}{query}",
                    self.url(i)
                ))
                .send()
                .await
                .expect("get"),
        )
        .await
    }

    /// The live values node `i` stores itself for a key.
    pub async fn local_values(&self, i: usize, table: &str, key: &str) -> Vec<String> {
        let url = format!("{}/admin/v1/tables/{table}/keys/{key}/replica", self.url(i));
        let Ok(resp) = self.http.get(url).send().await else {
            return vec![];
        };
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        values(&body)
    }

    /// Hints held for `target` across the running nodes.
    pub async fn hint_backlog(&self, target: &str) -> u64 {
        let mut total = 0;
        for p in self.nodes.iter().filter(|p| p.child.is_some()) {
            let Ok(resp) = self
                .http
                .get(format!("{}/admin/v1/hints", p.http))
                .send()
                .await
            else {
                continue;
            };
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            for t in body["targets"].as_array().into_iter().flatten() {
                if t["node"] == target {
                    total += t["hints"].as_u64().unwrap_or(0);
                }
            }
        }
        total
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for p in &mut self.nodes {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
