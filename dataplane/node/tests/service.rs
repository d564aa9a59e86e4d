//! The node run in-process through its injected edges: the test binds the
//! listeners (port 0, so nothing races for ports), passes them to
//! `dyno_node::run` with a shutdown future, and talks HTTP to it.

use std::time::Duration;

use clap::Parser;
use dyno_node::{Listeners, NodeConfig};
use serde_json::Value;
use tokio::sync::oneshot;

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
        let mut argv = vec![
            "dyno".to_owned(),
            "--id".into(),
            (*id).to_owned(),
            "--data-dir".into(),
            dir.path().display().to_string(),
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
    let http = reqwest::Client::new();
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
    let http = reqwest::Client::new();
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
    for want in ["anti_entropy", "catalog_sync", "gossip", "handoff", "hints"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(
        workers
            .iter()
            .all(|w| w["stopped"] == false && w["errors"] == 0)
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
    let http = reqwest::Client::new();
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
    let http = reqwest::Client::new();
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
