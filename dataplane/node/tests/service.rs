//! The node run in-process through its injected edges: the test binds the
//! listeners (port 0, so nothing races for ports), passes them to
//! `dyno_node::run` with a shutdown future, and talks HTTP to it.

use std::time::Duration;

use clap::Parser;
use dyno_node::{Listeners, NodeConfig};
use serde_json::Value;
use tokio::sync::oneshot;

const ADMIN_TOKEN: &str = "in-process-admin-token-0123";
const KEY_MASTER: &str = "in-process-key-master-0123456789abcdef";

/// A client sending `token` as a bearer token.
fn client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// A client sending the admin credential.
fn admin() -> reqwest::Client {
    client(Some(ADMIN_TOKEN))
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    node: NodeConfig,
}

/// One running in-process node.
struct TestNode {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), dyno_node::NodeError>>,
    _dir: tempfile::TempDir,
}

async fn bind() -> Listeners {
    Listeners {
        http: tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        rpc: tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    }
}

fn addr(l: &tokio::net::TcpListener) -> std::net::SocketAddr {
    l.local_addr().expect("addr")
}

/// Starts nodes `ids` as one cluster (pinned addresses, every port bound
/// before any node starts).
async fn cluster(ids: &[&str]) -> Vec<TestNode> {
    cluster_with(ids, &[]).await
}

/// Like [`cluster`], with more `dyno node` arguments for every node.
async fn cluster_with(ids: &[&str], extra: &[&str]) -> Vec<TestNode> {
    let mut bound = Vec::new();
    for _ in ids {
        bound.push(bind().await);
    }
    let members: Vec<String> = ids
        .iter()
        .zip(&bound)
        .map(|(id, l)| format!("{id}={},{}", addr(&l.http), addr(&l.rpc)))
        .collect();
    let mut nodes = Vec::new();
    for (id, listeners) in ids.iter().zip(bound) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).expect("token");
        std::fs::write(dir.path().join("key-master"), KEY_MASTER).expect("master");
        let mut argv = vec![
            "dyno".to_owned(),
            "--id".into(),
            (*id).to_owned(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--admin-token-file".into(),
            dir.path().join("admin-token").display().to_string(),
            "--key-master-file".into(),
            dir.path().join("key-master").display().to_string(),
            "--gossip-interval-ms".into(),
            "100".into(),
        ];
        for m in &members {
            argv.extend(["--member".into(), m.clone()]);
        }
        argv.extend(extra.iter().map(|a| (*a).to_owned()));
        let config = Cli::try_parse_from(argv).expect("config").node;
        let url = format!("http://{}", addr(&listeners.http));
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(dyno_node::run(config, listeners, async move {
            rx.await.ok();
        }));
        nodes.push(TestNode {
            url,
            stop: Some(tx),
            done,
            _dir: dir,
        });
    }
    nodes
}

/// Asks a node to stop and waits until `run` returns; fails the test if it
/// does not within 20 s (a stream that never ends would hold the servers'
/// graceful shutdown forever).
async fn stop(node: TestNode) {
    node.stop.expect("running").send(()).ok();
    let res = tokio::time::timeout(Duration::from_secs(20), node.done)
        .await
        .expect("the node stops within 20 s")
        .expect("task");
    assert!(res.is_ok(), "{res:?}");
}

async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn create_table(http: &reqwest::Client, url: &str, name: &str, spec: Value) {
    let (status, body) = json(
        http.put(format!("{url}/admin/v1/tables/{name}"))
            .json(&spec)
            .send()
            .await
            .expect("create table"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
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

#[tokio::test]
async fn unknown_tables_share_one_metric_series() {
    let nodes = cluster(&["solo"]).await;
    let http = admin();
    let url = &nodes[0].url;
    create_table(
        &http,
        url,
        "known",
        serde_json::json!({"n": 1, "r": 1, "w": 1}),
    )
    .await;
    for i in 0..20 {
        let (status, body) = json(
            http.get(format!("{url}/v1/tables/nope{i}/items/k"))
                .send()
                .await
                .expect("get"),
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "TableNotFound");
    }
    let (status, _) = json(
        http.get(format!("{url}/v1/tables/known/items/k"))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(status, 404);
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        !metrics.contains("nope"),
        "a client-chosen name became a label"
    );
    assert!(metrics.contains("table=\"_unknown\""), "{metrics}");
    assert!(metrics.contains("table=\"known\""), "{metrics}");
}

#[tokio::test]
async fn workers_report_their_status_and_stop_at_shutdown() {
    let mut nodes = cluster(&["w1"]).await;
    let http = admin();
    let url = nodes[0].url.clone();
    let workers = eventually(10, "gossip to complete a step", || {
        let (http, url) = (&http, &url);
        async move {
            let (_, body) = json(
                http.get(format!("{url}/admin/v1/workers"))
                    .send()
                    .await
                    .ok()?,
            )
            .await;
            let list = body["workers"].as_array()?.clone();
            let gossip = list.iter().find(|w| w["name"] == "gossip")?;
            (gossip["steps"].as_u64()? >= 2).then_some(list)
        }
    })
    .await;
    let names: Vec<&str> = workers.iter().filter_map(|w| w["name"].as_str()).collect();
    for want in [
        "anti_entropy",
        "catalog_sync",
        "gossip",
        "handoff",
        "hints",
        "scrub",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(
        workers
            .iter()
            .all(|w| w["stopped"] == false && w["errors"] == 0)
    );

    // The fault-injection API is refused on a node started without it.
    let (status, body) = json(
        http.put(format!("{url}/admin/v1/faults/links"))
            .json(&serde_json::json!({"w2": {"drop": true}}))
            .send()
            .await
            .expect("faults"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--fault-injection")),
        "{body}"
    );

    stop(nodes.remove(0)).await;
    assert!(
        http.get(format!("{url}/admin/v1/health"))
            .send()
            .await
            .is_err(),
        "a stopped node still answers"
    );
}

/// A write sent to a node that is not the key's primary is forwarded; the
/// primary's error comes back with its code, status and message intact.
#[tokio::test]
async fn forwarded_errors_keep_their_code_and_message() {
    let nodes = cluster(&["a", "b"]).await;
    let http = admin();
    create_table(
        &http,
        &nodes[0].url,
        "t",
        serde_json::json!({"n": 1, "r": 1, "w": 1}),
    )
    .await;
    // A key whose only replica is b, written through a.
    let key = eventually(10, "a key owned by b", || {
        let http = &http;
        let url = &nodes[0].url;
        async move {
            for i in 0..200 {
                let k = format!("k{i}");
                let (status, body) = json(
                    http.get(format!("{url}/admin/v1/tables/t/keys/{k}/preference-list"))
                        .send()
                        .await
                        .ok()?,
                )
                .await;
                if status == 200 && body["nodes"][0]["id"] == "b" {
                    return Some(k);
                }
            }
            None
        }
    })
    .await;
    let put = |cond: bool| {
        let mut req = http
            .put(format!("{}/v1/tables/t/items/{key}", nodes[0].url))
            .body("v");
        if cond {
            req = req.header("if-none-match", "*");
        }
        req.send()
    };
    // Wait until a knows the table's replica is up (b may still be starting).
    eventually(10, "the first write", || async {
        let (status, _) = json(put(false).await.ok()?).await;
        (status == 200).then_some(())
    })
    .await;
    let (status, body) = json(put(true).await.expect("conditional put")).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["error"]["code"], "PreconditionFailed");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(!message.is_empty());
    // The local replica on b holds the one value: the refused write did
    // not land.
    let (status, replica) = json(
        http.get(format!(
            "{}/admin/v1/tables/t/keys/{key}/replica",
            nodes[1].url
        ))
        .send()
        .await
        .expect("replica"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(replica["values"].as_array().map(Vec::len), Some(1));
}

/// Replica writes and reads travel between nodes (on the replica pipe):
/// W=2 and R=2 need both nodes, so each call must cross.
#[tokio::test]
async fn replica_calls_cross_between_nodes() {
    replica_calls_cross(cluster(&["p1", "p2"]).await).await;
}

/// The same over the unary transport (`--replica-transport unary`).
#[tokio::test]
async fn replica_calls_cross_between_nodes_over_unary_calls() {
    replica_calls_cross(cluster_with(&["p1", "p2"], &["--replica-transport", "unary"]).await).await;
}

async fn replica_calls_cross(nodes: Vec<TestNode>) {
    let http = admin();
    create_table(
        &http,
        &nodes[0].url,
        "both",
        serde_json::json!({"n": 2, "r": 2, "w": 2}),
    )
    .await;
    for i in 0..50 {
        let url = format!("{}/v1/tables/both/items/k{i}?w=2", nodes[i % 2].url);
        let written = eventually(10, "a W=2 write", || {
            let (http, url) = (&http, &url);
            async move {
                let (status, _) =
                    json(http.put(url).body(format!("v{i}")).send().await.ok()?).await;
                (status == 200).then_some(())
            }
        })
        .await;
        let () = written;
    }
    for i in 0..50 {
        let (status, body) = json(
            http.get(format!(
                "{}/v1/tables/both/items/k{i}?r=2",
                nodes[(i + 1) % 2].url
            ))
            .send()
            .await
            .expect("get"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (_, replica) = json(
            http.get(format!(
                "{}/admin/v1/tables/both/keys/k{i}/replica",
                nodes[1].url
            ))
            .send()
            .await
            .expect("replica"),
        )
        .await;
        assert_eq!(replica["exists"], true, "k{i} did not reach p2");
    }
    // Both nodes hold open replica pipes to each other; they still stop.
    for node in nodes {
        stop(node).await;
    }
}

/// The bearer token of key `id` under the test key master.
fn key_token(id: &str) -> String {
    dyno_core::apikey::token(
        id,
        &dyno_core::apikey::derive_secret(KEY_MASTER.as_bytes(), id),
    )
}

fn key_id(n: u8) -> String {
    dyno_core::apikey::key_id([n; 12])
}

/// Pushes catalog records to a node, as the control plane's reconciler does.
async fn push(url: &str, records: Value) {
    let (status, body) = json(
        admin()
            .put(format!("{url}/admin/v1/catalog"))
            .json(&serde_json::json!({ "records": records }))
            .send()
            .await
            .expect("push"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

fn key_record(id: &str, tenant: &str, scopes: Value, revoked: bool, version: u64) -> Value {
    serde_json::json!({
        "kind": "key", "id": id, "tenant": tenant, "scopes": scopes,
        "revoked": revoked, "version": version,
    })
}

async fn status_and_body(resp: reqwest::Response) -> (u16, String) {
    let s = resp.status().as_u16();
    (s, resp.text().await.unwrap_or_default())
}

/// Keys, scopes, tenants and the admin credential on one node: what is
/// refused with which status, and that no spelling of a table name reaches
/// another tenant's table.
#[tokio::test]
async fn keys_scopes_and_tenant_isolation() {
    let nodes = cluster(&["solo"]).await;
    let url = nodes[0].url.clone();
    let anonymous = client(None);

    // No credentials: 401 on data and admin paths; health stays open.
    let r = anonymous
        .get(format!("{url}/v1/tables/orders/items/k"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let (_, body) = json(r).await;
    assert_eq!(body["error"]["code"], "Unauthorized");
    for path in ["/admin/v1/cluster", "/admin/v1/tables", "/admin/v1/catalog"] {
        let s = anonymous
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(s.status().as_u16(), 401, "{path}");
        let s = client(Some("not-the-admin-token-at-all"))
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(s.status().as_u16(), 401, "{path}");
    }
    for path in ["/admin/v1/health", "/metrics"] {
        let s = anonymous
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(s.status().as_u16(), 200, "{path}");
    }

    // Two tenants with a table of the same name, and a limited one.
    let http = admin();
    for (tenant, table, spec) in [
        (
            "acme",
            "orders",
            serde_json::json!({"n": 1, "r": 1, "w": 1}),
        ),
        (
            "beta",
            "orders",
            serde_json::json!({"n": 1, "r": 1, "w": 1}),
        ),
        (
            "acme",
            "limited",
            serde_json::json!({"n": 1, "r": 1, "w": 1, "throughput_limit": 5}),
        ),
    ] {
        let (s, b) = json(
            http.put(format!("{url}/admin/v1/tenants/{tenant}/tables/{table}"))
                .json(&spec)
                .send()
                .await
                .expect("create"),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["tenant"], tenant);
        assert!(
            b["storage_name"]
                .as_str()
                .is_some_and(|n| n.starts_with('#')),
            "{b}"
        );
    }
    // The admin API's tenant paths reach a tenant's table, placement and
    // local replicas.
    let (s, b) = json(
        http.get(format!("{url}/admin/v1/tenants/acme/tables"))
            .send()
            .await
            .expect("list"),
    )
    .await;
    assert_eq!(s, 200);
    let names: Vec<&str> = b["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, vec!["limited", "orders"]);
    for tail in ["keys/k/preference-list", "keys/k/replica"] {
        let s = http
            .get(format!("{url}/admin/v1/tenants/acme/tables/orders/{tail}"))
            .send()
            .await
            .expect("admin")
            .status();
        assert_eq!(s.as_u16(), 200, "{tail}");
        let s = http
            .get(format!(
                "{url}/admin/v1/tenants/nobody/tables/orders/{tail}"
            ))
            .send()
            .await
            .expect("admin")
            .status();
        assert_eq!(s.as_u16(), 404, "{tail} of a tenant without that table");
    }
    let beta_storage = json(
        http.get(format!("{url}/admin/v1/tenants/beta/tables/orders"))
            .send()
            .await
            .expect("describe"),
    )
    .await
    .1["storage_name"]
        .as_str()
        .expect("storage name")
        .to_owned();
    let (acme_all, acme_reader, beta_all) = (key_id(1), key_id(2), key_id(3));
    push(
        &url,
        serde_json::json!([
            key_record(
                &acme_all,
                "acme",
                serde_json::json!([{"table": "*", "access": "write"}]),
                false,
                1
            ),
            key_record(
                &acme_reader,
                "acme",
                serde_json::json!([{"table": "orders", "access": "read"}]),
                false,
                1
            ),
            key_record(
                &beta_all,
                "beta",
                serde_json::json!([{"table": "*", "access": "write"}]),
                false,
                1
            ),
        ]),
    )
    .await;
    let acme = client(Some(&key_token(&acme_all)));
    let reader = client(Some(&key_token(&acme_reader)));
    let beta = client(Some(&key_token(&beta_all)));

    // Same name, different tables.
    for (c, v) in [(&acme, "acme's"), (&beta, "beta's")] {
        let s = c
            .put(format!("{url}/v1/tables/orders/items/k"))
            .body(v)
            .send()
            .await
            .expect("put");
        assert_eq!(s.status().as_u16(), 200);
    }
    let read = |c: &reqwest::Client, table: &str| {
        let c = c.clone();
        let u = format!("{url}/v1/tables/{table}/items/k");
        async move { status_and_body(c.get(u).send().await.expect("get")).await }
    };
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (s, body) = read(&acme, "orders").await;
    assert_eq!(s, 200);
    assert!(
        body.contains(&b64("acme's")) && !body.contains(&b64("beta's")),
        "{body}"
    );
    let (_, body) = read(&beta, "orders").await;
    assert!(body.contains(&b64("beta's")), "{body}");

    // No spelling of a name reaches beta's table from acme's key: every one
    // is "not found" (or a bad request), and says nothing of beta.
    let storage_escaped = beta_storage.replace('#', "%23");
    let spellings = [
        "Orders",
        "ORDERS",
        "orders.",
        "orders%2E",
        "beta%2Forders",
        "beta.orders",
        "beta:orders",
        "..%2Fbeta%2Forders",
        "%2E%2E%2Fbeta%2Forders",
        "orders%00",
        "orders%20",
        storage_escaped.as_str(),
        "beta%2F%2Forders",
    ];
    for spelling in spellings {
        for c in [&acme, &reader] {
            let (s, body) = read(c, spelling).await;
            assert!(
                s == 404 || s == 400 || (s == 403 && std::ptr::eq(c, &reader)),
                "{spelling}: {s} {body}"
            );
            assert!(!body.contains(&b64("beta's")), "{spelling}: {body}");
            assert!(!body.contains("beta's"), "{spelling}: {body}");
        }
        let s = acme
            .put(format!("{url}/v1/tables/{spelling}/items/k"))
            .body("overwritten")
            .send()
            .await
            .expect("put")
            .status()
            .as_u16();
        assert!(s == 404 || s == 400, "{spelling}: {s}");
    }
    // Other-tenant paths do not exist on the items API.
    let s = acme
        .get(format!("{url}/v1/tenants/beta/tables/orders/items/k"))
        .send()
        .await
        .expect("get")
        .status();
    assert_eq!(s.as_u16(), 404);
    // An API key cannot use the admin API.
    let s = acme
        .get(format!("{url}/admin/v1/tenants/beta/tables/orders"))
        .send()
        .await
        .expect("get")
        .status();
    assert_eq!(s.as_u16(), 401);
    let (_, body) = read(&beta, "orders").await;
    assert!(
        body.contains(&b64("beta's")),
        "beta's item is intact: {body}"
    );

    // Scopes: a reader reads its table, cannot write it, and gets the same
    // 403 for a table it has no scope on whether or not it exists.
    assert_eq!(read(&reader, "orders").await.0, 200);
    let s = reader
        .put(format!("{url}/v1/tables/orders/items/k"))
        .body("no")
        .send()
        .await
        .expect("put");
    let (status, body) = json(s).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("Forbidden"))
    );
    let (s1, b1) = read(&reader, "limited").await;
    let (s2, b2) = read(&reader, "no-such-table").await;
    assert_eq!((s1, s2), (403, 403));
    assert_eq!(b1.replace("limited", "X"), b2.replace("no-such-table", "X"));

    // Throughput limit: 5 per second on one node, so a quick burst of 30
    // is mostly refused with 429, Retry-After and ThrottlingException,
    // while the other table of the same tenant is not limited.
    let mut throttled = 0;
    for _ in 0..30 {
        let r = acme
            .get(format!("{url}/v1/tables/limited/items/k"))
            .send()
            .await
            .expect("get");
        if r.status().as_u16() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            let (_, b) = json(r).await;
            assert_eq!(b["error"]["code"], "ThrottlingException");
            throttled += 1;
        } else {
            assert_eq!(r.status().as_u16(), 404, "item not found, but admitted");
        }
        assert_eq!(read(&acme, "orders").await.0, 200);
    }
    assert!(throttled >= 20, "only {throttled} of 30 throttled");

    // Per-tenant metrics, with bounded labels.
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("tenant=\"acme\""), "{metrics}");
    assert!(metrics.contains("outcome=\"ThrottlingException\""));
    assert!(!metrics.contains("beta%2Forders") && !metrics.contains("ORDERS"));

    // Unknown and tampered keys, a revoked key and a suspended tenant: 401.
    let unknown = client(Some(&key_token(&key_id(99))));
    assert_eq!(read(&unknown, "orders").await.0, 401);
    let mut tampered = key_token(&acme_all);
    tampered.pop();
    tampered.push(if tampered.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(read(&client(Some(&tampered)), "orders").await.0, 401);
    push(
        &url,
        serde_json::json!([key_record(
            &acme_all,
            "acme",
            serde_json::json!([{"table": "*", "access": "write"}]),
            true,
            2
        )]),
    )
    .await;
    assert_eq!(read(&acme, "orders").await.0, 401);
    assert_eq!(
        read(&reader, "orders").await.0,
        200,
        "other keys still work"
    );
    push(
        &url,
        serde_json::json!([{"kind": "tenant", "name": "acme", "suspended": true, "version": 3}]),
    )
    .await;
    assert_eq!(read(&reader, "orders").await.0, 401);
    assert_eq!(
        read(&beta, "orders").await.0,
        200,
        "other tenants still work"
    );
    push(
        &url,
        serde_json::json!([{"kind": "tenant", "name": "acme", "suspended": false, "version": 4}]),
    )
    .await;
    assert_eq!(read(&reader, "orders").await.0, 200);
    // An older record never undoes a newer one.
    push(
        &url,
        serde_json::json!([key_record(
            &acme_all,
            "acme",
            serde_json::json!([{"table": "*", "access": "write"}]),
            false,
            1
        )]),
    )
    .await;
    assert_eq!(read(&acme, "orders").await.0, 401);

    for n in nodes {
        stop(n).await;
    }
}

/// A revocation pushed to one node reaches every node within 5 s, and
/// every node then refuses the key.
#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_reaches_every_node_quickly() {
    let nodes = cluster(&["a", "b", "c"]).await;
    let http = admin();
    let (s, b) = json(
        http.put(format!("{}/admin/v1/tenants/acme/tables/t", nodes[0].url))
            .json(&serde_json::json!({"n": 3, "r": 1, "w": 1}))
            .send()
            .await
            .expect("create"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let id = key_id(7);
    let scopes = serde_json::json!([{"table": "t", "access": "write"}]);
    push(
        &nodes[0].url,
        serde_json::json!([key_record(&id, "acme", scopes.clone(), false, 10)]),
    )
    .await;
    let key = client(Some(&key_token(&id)));
    for n in &nodes {
        let u = format!("{}/v1/tables/t/items/k", n.url);
        eventually(5, "the key to work everywhere", || {
            let (key, u) = (key.clone(), u.clone());
            async move {
                let s = key.put(u).body("v").send().await.ok()?.status();
                (s.as_u16() == 200).then_some(())
            }
        })
        .await;
    }
    let revoked_at = tokio::time::Instant::now();
    push(
        &nodes[0].url,
        serde_json::json!([key_record(&id, "acme", scopes, true, 11)]),
    )
    .await;
    for n in &nodes {
        let u = format!("{}/v1/tables/t/items/k", n.url);
        eventually(5, "the revocation to reach every node", || {
            let (key, u) = (key.clone(), u.clone());
            async move {
                let s = key.get(u).send().await.ok()?.status();
                (s.as_u16() == 401).then_some(())
            }
        })
        .await;
    }
    let took = revoked_at.elapsed();
    println!("revocation refused on every node after {took:?}");
    assert!(took <= Duration::from_secs(5));
    for n in nodes {
        stop(n).await;
    }
}

/// With --metrics-require-token, /metrics needs the admin credential.
#[tokio::test]
async fn metrics_can_require_the_admin_credential() {
    let nodes = cluster_with(&["solo"], &["--metrics-require-token"]).await;
    let url = format!("{}/metrics", nodes[0].url);
    let s = client(None).get(&url).send().await.expect("get").status();
    assert_eq!(s.as_u16(), 401);
    let s = admin().get(&url).send().await.expect("get").status();
    assert_eq!(s.as_u16(), 200);
    let s = client(None)
        .get(format!("{}/admin/v1/health", nodes[0].url))
        .send()
        .await
        .expect("get")
        .status();
    assert_eq!(s.as_u16(), 200, "health stays open");
    for n in nodes {
        stop(n).await;
    }
}

/// The native scan pages through a table's live items exactly once, in
/// ring order, over three nodes; an admin acts in a tenant through
/// `X-Dyno-Tenant`, a key only in its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_scan_pages_and_the_tenant_header() {
    let nodes = cluster(&["a", "b", "c"]).await;
    let url = nodes[0].url.clone();
    let http = admin();
    let (s, b) = json(
        http.put(format!("{url}/admin/v1/tenants/acme/tables/orders"))
            .json(&serde_json::json!({"n": 3, "r": 2, "w": 2}))
            .send()
            .await
            .expect("create"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let as_acme = |req: reqwest::RequestBuilder| req.header("x-dyno-tenant", "acme");
    // Every node learns the table before the writes start.
    for n in &nodes {
        let u = n.url.clone();
        eventually(10, "the table on every node", || {
            let (http, u) = (http.clone(), u.clone());
            async move {
                let r = as_acme(http.get(format!("{u}/v1/tables/orders/items")))
                    .send()
                    .await
                    .ok()?;
                (r.status().as_u16() == 200).then_some(())
            }
        })
        .await;
    }
    for i in 0..30 {
        let r = as_acme(http.put(format!(
            "{}/v1/tables/orders/items/k{i:02}",
            nodes[i % 3].url
        )))
        .body(format!("v{i}"))
        .send()
        .await
        .expect("put");
        assert_eq!(r.status().as_u16(), 200);
    }
    // A delete with the value's context supersedes it.
    let (_, got) = json(
        as_acme(http.get(format!("{url}/v1/tables/orders/items/k07")))
            .send()
            .await
            .expect("get"),
    )
    .await;
    let r = as_acme(http.delete(format!("{url}/v1/tables/orders/items/k07")))
        .header("x-dyno-context", got["context"].as_str().expect("context"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    // Without the header the admin acts in `default`, where no such table is.
    let r = http
        .get(format!("{url}/v1/tables/orders/items"))
        .send()
        .await
        .expect("scan");
    assert_eq!(r.status().as_u16(), 404);

    // Pages of 7 from any node: every live key once, the deleted one not.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut u = format!("{}/v1/tables/orders/items?limit=7", nodes[pages % 3].url);
        if let Some(a) = &after {
            u.push_str(&format!("&after={a}"));
        }
        let (s, page) = json(as_acme(http.get(u)).send().await.expect("scan")).await;
        assert_eq!(s, 200, "{page}");
        pages += 1;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 7);
        for it in items {
            let key = b64.decode(it["key"].as_str().expect("key")).expect("b64");
            let key = String::from_utf8(key).expect("utf8");
            let values = it["values"].as_array().expect("values");
            let v = b64.decode(values[0].as_str().expect("value")).expect("b64");
            assert_eq!(
                String::from_utf8(v).expect("utf8"),
                format!("v{}", key[1..].parse::<u32>().expect("n"))
            );
            assert!(it["context"].is_string());
            seen.push(key);
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
        assert!(pages < 20, "the scan must end");
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no key twice: {seen:?}");
    let want: Vec<String> = (0..30)
        .filter(|i| *i != 7)
        .map(|i| format!("k{i:02}"))
        .collect();
    assert_eq!(sorted, want);
    assert!(pages >= 5, "29 items in pages of 7");

    // Bad pages are refused with a clear error.
    for q in ["limit=0", "limit=1001", "limit=x", "after=%%%"] {
        let (s, b) = json(
            as_acme(http.get(format!("{url}/v1/tables/orders/items?{q}")))
                .send()
                .await
                .expect("scan"),
        )
        .await;
        assert_eq!(s, 400, "{q}: {b}");
    }

    // A key reads its own tenant's table with or without the header, and
    // may not name another tenant.
    let id = key_id(41);
    push(
        &url,
        serde_json::json!([key_record(
            &id,
            "acme",
            serde_json::json!([{"table": "orders", "access": "read"}]),
            false,
            1
        )]),
    )
    .await;
    let key = client(Some(&key_token(&id)));
    let r = key
        .get(format!("{url}/v1/tables/orders/items?limit=1"))
        .send()
        .await
        .expect("scan");
    assert_eq!(r.status().as_u16(), 200);
    let r = key
        .get(format!("{url}/v1/tables/orders/items/k01"))
        .header("x-dyno-tenant", "acme")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    let (s, b) = json(
        key.get(format!("{url}/v1/tables/orders/items/k01"))
            .header("x-dyno-tenant", "beta")
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["code"], "Forbidden");
    for n in nodes {
        stop(n).await;
    }
}
