//! The node run in-process through its injected edges: the test binds the
//! listeners (port 0, so nothing races for ports), passes them to
//! `dyno_node::run` with a shutdown future, and talks HTTP to it.

use std::time::Duration;

use clap::Parser;
use dyno_node::config::ReplicaTransport;
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
    dyno_tls::http_client_builder()
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
    /// The internal RPC address, `http://host:port`.
    rpc: String,
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
    cluster_each(ids, |_| extra.iter().map(|a| (*a).to_owned()).collect()).await
}

/// Like [`cluster`], with more `dyno node` arguments for each node (by
/// id); URLs are `https://` when the arguments turn TLS on.
async fn cluster_each(ids: &[&str], extra: impl Fn(&str) -> Vec<String>) -> Vec<TestNode> {
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
        argv.extend(extra(id));
        let scheme = if argv.iter().any(|a| a == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        let config = Cli::try_parse_from(argv).expect("config").node;
        let url = format!("{scheme}://{}", addr(&listeners.http));
        let rpc = format!("{scheme}://{}", addr(&listeners.rpc));
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(dyno_node::run(config, listeners, async move {
            rx.await.ok();
        }));
        nodes.push(TestNode {
            url,
            rpc,
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

/// A node's `/metrics` exposition.
async fn metrics_text(http: &reqwest::Client, url: &str) -> String {
    http.get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The value of counter `name` in a node's `/metrics` (0 when absent).
async fn counter(http: &reqwest::Client, url: &str, name: &str) -> u64 {
    metrics_text(http, url)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
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
    let metrics = metrics_text(&http, url).await;
    assert!(
        !metrics.contains("nope"),
        "a client-chosen name became a label"
    );
    assert!(metrics.contains("table=\"_unknown\""), "{metrics}");
    assert!(metrics.contains("table=\"known\""), "{metrics}");
}

/// The item cache answers the read before a write and the reads of a key
/// just written, always with the latest value, and `/metrics` counts it;
/// `--item-cache-mib 0` turns it off.
#[tokio::test]
async fn the_item_cache_answers_reads_of_recent_items() {
    for (id, cache_mib) in [("cached", "32"), ("uncached", "0")] {
        let nodes = cluster_with(&[id], &["--item-cache-mib", cache_mib]).await;
        let http = admin();
        let url = nodes[0].url.clone();
        create_table(
            &http,
            &url,
            "t",
            serde_json::json!({"n": 1, "r": 1, "w": 1, "conflict": "lww"}),
        )
        .await;
        let hits = || counter(&http, &url, "dyno_item_cache_hits_total");
        let before = hits().await;
        for round in 0..5 {
            let value = format!("value {round}");
            let put = http
                .put(format!("{url}/v1/tables/t/items/k"))
                .body(value.clone())
                .send()
                .await
                .expect("put");
            assert_eq!(put.status().as_u16(), 200);
            let got = http
                .get(format!("{url}/v1/tables/t/items/k"))
                .header("accept", "application/octet-stream")
                .send()
                .await
                .expect("get");
            assert_eq!(got.status().as_u16(), 200);
            assert_eq!(got.text().await.expect("body"), value, "{id}");
        }
        let deleted = http
            .delete(format!("{url}/v1/tables/t/items/k"))
            .send()
            .await
            .expect("delete");
        assert_eq!(deleted.status().as_u16(), 200);
        let gone = http
            .get(format!("{url}/v1/tables/t/items/k"))
            .send()
            .await
            .expect("get");
        assert_eq!(gone.status().as_u16(), 404, "{id}: a deleted item is gone");
        let hits = hits().await - before;
        let text = metrics_text(&http, &url).await;
        let bytes: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("dyno_item_cache_bytes ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        if cache_mib == "0" {
            assert_eq!(hits, 0, "no cache, no hits");
            assert_eq!(bytes, 0);
        } else {
            // Four reads before writes, five reads and the delete's read.
            assert!(hits >= 10, "{hits} hits");
            assert!(bytes > 0, "{text}");
        }
        for n in nodes {
            stop(n).await;
        }
    }
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

/// A read asks R replicas, not N; when one of them turns slow, the read
/// brings in a spare after about that replica's usual round trip instead
/// of waiting for it (or for the 2 s replica timeout), and answers right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_costs_a_read_a_spare_not_its_delay() {
    use base64::Engine;
    let nodes = cluster_with(&["s1", "s2", "s3"], &["--fault-injection"]).await;
    let http = admin();
    let url = nodes[0].url.clone();
    create_table(
        &http,
        &url,
        "t",
        serde_json::json!({"n": 3, "r": 2, "w": 3}),
    )
    .await;
    // Keys whose preference list puts s2 before s3: a read through s1 asks
    // s1 and s2.
    let mut keys = Vec::new();
    for i in 0..40 {
        let k = format!("k{i}");
        let (status, body) = json(
            http.get(format!("{url}/admin/v1/tables/t/keys/{k}/preference-list"))
                .send()
                .await
                .expect("preference list"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let order: Vec<&str> = body["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n["id"].as_str())
            .filter(|id| *id != "s1")
            .collect();
        if order.first() == Some(&"s2") {
            keys.push(k);
        }
    }
    assert!(keys.len() >= 5, "too few keys with s2 first: {keys:?}");
    // Written to all three (W = 3), so any two replicas answer right; the
    // writes also teach s1 the round trips of its peers.
    for k in &keys {
        let (status, body) = json(
            http.put(format!("{url}/v1/tables/t/items/{k}"))
                .body(format!("value of {k}"))
                .send()
                .await
                .expect("put"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let speculative = || counter(&http, &url, "dyno_speculative_reads_total");
    let before = speculative().await;
    // Healthy: two replicas asked, no spare needed.
    for k in &keys {
        let (status, _) = json(
            http.get(format!("{url}/v1/tables/t/items/{k}"))
                .send()
                .await
                .expect("get"),
        )
        .await;
        assert_eq!(status, 200);
    }
    let healthy = speculative().await - before;
    // s1's calls to s2 now take 1.5 s each.
    let (status, body) = json(
        http.put(format!("{url}/admin/v1/faults/links"))
            .json(&serde_json::json!({"s2": {"delay_ms": 1500}}))
            .send()
            .await
            .expect("faults"),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let mut slowest = Duration::ZERO;
    for k in &keys {
        let started = std::time::Instant::now();
        let (status, body) = json(
            http.get(format!("{url}/v1/tables/t/items/{k}"))
                .send()
                .await
                .expect("get"),
        )
        .await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 200, "{body}");
        let want = base64::engine::general_purpose::STANDARD.encode(format!("value of {k}"));
        assert_eq!(body["values"], serde_json::json!([want]), "{k}: {body}");
    }
    let spares = speculative().await - before - healthy;
    println!(
        "{} reads with s2 slow: slowest {slowest:?}, {spares} spares asked ({healthy} while healthy)",
        keys.len()
    );
    assert!(
        slowest < Duration::from_millis(1000),
        "a read waited for the slow replica: {slowest:?}"
    );
    assert!(
        spares >= keys.len() as u64,
        "{spares} spares for {} reads",
        keys.len()
    );
}

/// Under `--durability sync` a coordinator's own copy of a write counts
/// once its fsync is done, and that fsync runs alongside the replicas'
/// writes rather than before they are sent: with the coordinator's disk
/// stalled, a W=2 write is answered by the other two replicas' durable
/// copies, while a W=3 write waits for the stalled fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_write_does_not_wait_for_the_coordinators_fsync_before_sending() {
    let nodes = cluster_with(
        &["d1", "d2", "d3"],
        &["--fault-injection", "--durability", "sync"],
    )
    .await;
    let http = admin();
    let url = nodes[0].url.clone();
    create_table(
        &http,
        &url,
        "t",
        serde_json::json!({"n": 3, "r": 2, "w": 2}),
    )
    .await;
    // Every replica answers (a read at R=3 of a missing key); reads do not
    // touch the group commit, so no fsync has run yet.
    eventually(10, "all three replicas answering", || async {
        let resp = http
            .get(format!("{url}/v1/tables/t/items/none?r=3"))
            .send()
            .await
            .ok()?;
        (resp.status() == 404).then_some(())
    })
    .await;
    let fsyncs = |i: usize| counter(&http, &nodes[i].url, "dyno_wal_fsyncs_total");
    let disk_fault = |ms: u64| {
        http.put(format!("{url}/admin/v1/faults/disk"))
            .json(&serde_json::json!({"fsync_delay_ms": ms}))
            .send()
    };
    // d1's fsyncs now take 60 s (until the fault is lifted).
    assert_eq!(disk_fault(60_000).await.expect("fault").status(), 204);
    let before = fsyncs(0).await;
    let (status, body) = json(
        http.put(format!("{url}/v1/tables/t/items/k?w=2"))
            .body("v1")
            .send()
            .await
            .expect("put"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fsyncs(0).await,
        before,
        "d1's fsync is stalled, so the W=2 answer came from d2 and d3"
    );
    assert!(fsyncs(1).await >= 1 && fsyncs(2).await >= 1);
    // At W=3 the coordinator's copy is needed, and it is not durable yet.
    // (Counted before the write starts: d2 and d3 may sync it at once.)
    let (d2, d3) = (fsyncs(1).await, fsyncs(2).await);
    let w3 = tokio::spawn(
        http.put(format!("{url}/v1/tables/t/items/k2?w=3"))
            .body("v2")
            .send(),
    );
    eventually(10, "d2 and d3 to make the W=3 write durable", || async {
        (fsyncs(1).await > d2 && fsyncs(2).await > d3).then_some(())
    })
    .await;
    assert!(
        !w3.is_finished(),
        "a W=3 write was answered while the coordinator's fsync was stalled"
    );
    assert_eq!(fsyncs(0).await, before);
    assert_eq!(disk_fault(0).await.expect("lift").status(), 204);
    let resp = w3.await.expect("task").expect("put");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        fsyncs(0).await > before,
        "the W=3 answer waited for d1's fsync"
    );
    for n in nodes {
        stop(n).await;
    }
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
    replica_calls_cross(cluster(&["p1", "p2"]).await, admin(), true).await;
}

/// The same over the gRPC stream (`--replica-transport grpc-stream`).
#[tokio::test]
async fn replica_calls_cross_between_nodes_over_the_grpc_stream() {
    replica_calls_cross(
        cluster_with(&["p1", "p2"], &["--replica-transport", "grpc-stream"]).await,
        admin(),
        false,
    )
    .await;
}

/// A connection that opens a replica link and then sends a frame over the
/// size limit, or bytes that are not a frame, is closed; the node goes on
/// serving its peers and clients.
#[tokio::test]
async fn a_bad_link_frame_closes_only_its_connection() {
    use dyno_node::link;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let nodes = cluster(&["p1", "p2"]).await;
    let host = nodes[0].rpc.trim_start_matches("http://").to_owned();
    let oversized = u32::try_from(link::MAX_FRAME + 1)
        .expect("fits")
        .to_be_bytes();
    let garbled = [0, 0, 0, 3, 0xff, 0xff, 0xff];
    for bad in [&oversized[..], &garbled[..]] {
        let mut tcp = tokio::net::TcpStream::connect(&host)
            .await
            .expect("connect");
        assert!(
            link::handshake(&mut tcp).await.expect("handshake"),
            "no link"
        );
        tcp.write_all(bad).await.expect("send");
        let mut rest = Vec::new();
        // The node closes the connection (EOF or a reset), sending nothing.
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest))
            .await
            .expect("the node kept a bad link open");
        assert!(
            rest.is_empty(),
            "the node answered a bad frame: {rest:?} ({read:?})"
        );
    }
    replica_calls_cross(nodes, admin(), true).await;
}

/// A peer of an older version has no replica link: it answers the link's
/// opening with HTTP/2 (here a proxy in front of a node plays that part),
/// and calls go on the gRPC stream instead, counted as a fallback.
#[tokio::test]
async fn a_peer_without_the_link_is_called_on_the_grpc_stream() {
    use dyno_node::link;
    use dyno_node::peer::{PeerClient, TonicPeer};
    use dyno_proto::internal as pb;
    use tokio::io::AsyncWriteExt;

    let nodes = cluster(&["p1"]).await;
    let node = nodes[0].rpc.trim_start_matches("http://").to_owned();
    let old = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let old_url = format!("http://{}", addr(&old));
    tokio::spawn(async move {
        while let Ok((conn, _)) = old.accept().await {
            let node = node.clone();
            tokio::spawn(async move {
                match link::sniff(conn).await {
                    // An HTTP/2 server's SETTINGS frame, then it hangs up.
                    Ok(link::Sniffed::Link(mut conn)) => {
                        conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.ok();
                    }
                    Ok(link::Sniffed::Other(mut conn)) => {
                        let mut to = tokio::net::TcpStream::connect(&node).await.expect("node");
                        tokio::io::copy_bidirectional(&mut conn, &mut to).await.ok();
                    }
                    Err(_) => {}
                }
            });
        }
    });
    let stats = dyno_node::link::Stats::default();
    let peer = TonicPeer::new(
        &old_url,
        Duration::from_secs(2),
        ReplicaTransport::Pipe,
        None,
        stats.clone(),
    );
    for _ in 0..3 {
        let got = peer
            .replica_get(pb::ReplicaGetRequest {
                table: "nope".into(),
                key: b"k".to_vec(),
                ..Default::default()
            })
            .await
            .expect("answered on the gRPC stream");
        assert!(got.object.is_none());
    }
    // Found once, remembered; nothing went on a link.
    assert_eq!(stats.fallbacks.get(), 1);
    assert_eq!(stats.frames.get(), 0);
}

/// The same over the unary transport (`--replica-transport unary`).
#[tokio::test]
async fn replica_calls_cross_between_nodes_over_unary_calls() {
    replica_calls_cross(
        cluster_with(&["p1", "p2"], &["--replica-transport", "unary"]).await,
        admin(),
        false,
    )
    .await;
}

/// `--tls-cert/--tls-key/--tls-ca` for node `id`, with a certificate
/// issued by `ca`.
fn tls_args(ca: &dyno_tls::dev::DevCa, id: &str) -> Vec<String> {
    ca.issue(id, &[]).expect("issue").to_args()
}

/// An admin client that trusts only the CA in `ca_file`.
fn admin_trusting(ca_file: &std::path::Path) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN_TOKEN}").parse().expect("header"),
    );
    dyno_tls::http_client_builder()
        .tls_backend_preconfigured(dyno_tls::client_trusting(ca_file).expect("ca"))
        .default_headers(headers)
        .build()
        .expect("client")
}

/// Over TLS (HTTPS to the nodes, mutual TLS between them, both replica
/// transports): replicas cross; a peer without a certificate of the
/// cluster's CA is refused; a client verifies the nodes; a renewed
/// certificate is taken without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_speak_mutual_tls_and_refuse_strangers() {
    use dyno_node::peer::{PeerClient, TonicPeer};
    use dyno_proto::internal as pb;

    let dir = tempfile::tempdir().expect("tmp");
    let ca = dyno_tls::dev::DevCa::create(&dir.path().join("ca")).expect("ca");
    let https = admin_trusting(&ca.ca_file());
    for transport in ["pipe", "grpc-stream", "unary"] {
        let nodes = cluster_each(&["t1", "t2"], |id| {
            let mut a = tls_args(&ca, id);
            a.extend(["--replica-transport".into(), transport.into()]);
            a
        })
        .await;
        assert!(nodes[0].url.starts_with("https://"));
        replica_calls_cross(nodes, https.clone(), transport == "pipe").await;
    }

    let nodes = cluster_each(&["t1"], |id| tls_args(&ca, id)).await;
    let (url, rpc) = (nodes[0].url.clone(), nodes[0].rpc.clone());
    let (_, view) = json(
        https
            .get(format!("{url}/admin/v1/tls"))
            .send()
            .await
            .expect("tls"),
    )
    .await;
    assert_eq!(view["enabled"], true, "{view}");
    assert_eq!(view["handshake_failures"], 0, "{view}");
    let gossip = || pb::GossipMessage::default();
    let timeout = Duration::from_secs(2);

    // A peer of the cluster (certificate from the CA) is answered.
    let member = dyno_tls::Tls::load(ca.issue("t9", &[]).expect("issue")).expect("load");
    let peer = TonicPeer::new(
        &rpc,
        timeout,
        ReplicaTransport::Unary,
        Some(member),
        Default::default(),
    );
    assert!(peer.gossip(gossip()).await.is_ok(), "a member was refused");

    // A rogue peer trusts the cluster's CA, but its own certificate is
    // another CA's: the node refuses it.
    let foreign =
        dyno_tls::dev::DevCa::create_named(&dir.path().join("foreign"), "Another CA").expect("ca");
    let issued = foreign.issue("rogue", &[]).expect("issue");
    let rogue = dyno_tls::Tls::load(dyno_tls::TlsFiles {
        ca: ca.ca_file(),
        ..issued
    })
    .expect("load");
    let peer = TonicPeer::new(
        &rpc,
        timeout,
        ReplicaTransport::Unary,
        Some(rogue.clone()),
        Default::default(),
    );
    let refused = peer
        .gossip(gossip())
        .await
        .expect_err("a rogue peer was answered");
    // Nor does it get a replica link.
    let linked = TonicPeer::new(
        &rpc,
        timeout,
        ReplicaTransport::Pipe,
        Some(rogue),
        Default::default(),
    );
    linked
        .replica_get(pb::ReplicaGetRequest::default())
        .await
        .expect_err("a rogue peer was answered on the link");
    // A plaintext peer is refused too.
    let plain = TonicPeer::new(
        &rpc.replacen("https", "http", 1),
        timeout,
        ReplicaTransport::Unary,
        None,
        Default::default(),
    );
    plain
        .gossip(gossip())
        .await
        .expect_err("a plaintext peer was answered");
    let failures = eventually(10, "the refusals to be counted", || {
        let (https, url) = (&https, &url);
        async move {
            let (_, v) = json(https.get(format!("{url}/admin/v1/tls")).send().await.ok()?).await;
            let n = v["handshake_failures"].as_u64()?;
            (n >= 3).then_some(n)
        }
    })
    .await;
    println!("refused: {refused}; handshake failures counted: {failures}");

    // A client that trusts another CA does not trust the node.
    let stranger = admin_trusting(&foreign.ca_file());
    let err = stranger
        .get(format!("{url}/admin/v1/health"))
        .send()
        .await
        .expect_err("the node was trusted by a client of another CA");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");

    // The public gRPC API is served on the client port over TLS too.
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .expect("url")
        .connect_with_connector_lazy(dyno_tls::TlsConnector::new(
            dyno_tls::Tls::load(ca.issue("grpc-client", &[]).expect("issue")).expect("load"),
        ));
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {ADMIN_TOKEN}").parse().expect("metadata");
    let mut grpc = dyno_proto::public::dyno_client::DynoClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        },
    );
    let e = grpc
        .get(dyno_proto::public::GetRequest {
            table: "nope".into(),
            key: b"k".to_vec(),
            r: None,
        })
        .await
        .expect_err("no such table");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");

    // The certificate is renewed in place: new connections get it
    // without a restart (the node looks at its files at most once a
    // second, on a handshake).
    ca.issue("t1", &[]).expect("renew");
    eventually(10, "the renewed certificate to be taken", || {
        let url = url.clone();
        let ca_file = ca.ca_file();
        async move {
            // A new client: a new connection, so a new handshake.
            let (_, v) = json(
                admin_trusting(&ca_file)
                    .get(format!("{url}/admin/v1/tls"))
                    .send()
                    .await
                    .ok()?,
            )
            .await;
            (v["reloads"] == 1 && v["generation"] == 1).then_some(())
        }
    })
    .await;
    let (status, _) = json(
        https
            .get(format!("{url}/admin/v1/health"))
            .send()
            .await
            .expect("health"),
    )
    .await;
    assert_eq!(status, 200);
    for node in nodes {
        stop(node).await;
    }
}

async fn replica_calls_cross(nodes: Vec<TestNode>, http: reqwest::Client, link: bool) {
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
    // The calls took the transport asked for: frames on the replica link
    // only with `pipe`, none otherwise (the link never falls back between
    // two nodes of this version).
    for node in &nodes {
        let text = http
            .get(format!("{}/metrics", node.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        let figure = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in the metrics"))
        };
        let (frames, writes) = (
            figure("dyno_replica_link_frames_total "),
            figure("dyno_replica_link_writes_total "),
        );
        assert_eq!(figure("dyno_replica_link_fallbacks_total "), 0);
        if link {
            assert!(
                frames > 0 && writes > 0 && writes <= frames,
                "{frames} frames in {writes} writes"
            );
        } else {
            assert_eq!((frames, writes), (0, 0), "the link was used");
        }
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
    let metrics = metrics_text(&http, &url).await;
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

/// SplitMix64, for the seeded fuzz cases below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    /// `bytes` mutated a few times: bits flipped, bytes inserted, removed,
    /// or set to boundary values, a run duplicated, or the tail cut.
    fn mutate(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut b = bytes.to_vec();
        for _ in 0..1 + self.below(2) {
            let at = self.below(b.len() + 1);
            match self.below(12) {
                0 if !b.is_empty() => {
                    let i = at.min(b.len() - 1);
                    b[i] ^= 1 << self.below(8);
                }
                1 => b.insert(at, self.next() as u8),
                2 if at < b.len() => {
                    b.remove(at);
                }
                3 if !b.is_empty() => {
                    let i = at.min(b.len() - 1);
                    b[i] = *self.pick(&[0u8, 0x7f, 0x80, 0xff]);
                }
                4 | 5 => {
                    let v = self.next().to_le_bytes();
                    b.splice(at..at, v.into_iter().take(1 + self.below(8)));
                }
                6 => {
                    let run: Vec<u8> = b[at..].iter().take(1 + self.below(64)).copied().collect();
                    for _ in 0..self.below(50) {
                        b.splice(at..at, run.iter().copied());
                    }
                }
                7 => b.truncate(at),
                _ if !b.is_empty() => {
                    let i = at.min(b.len() - 1);
                    b[i] = b[i].wrapping_add(1 + self.below(3) as u8);
                }
                _ => {}
            }
        }
        b
    }
}

fn fuzz_seed(what: &str) -> (u64, usize) {
    let seed = std::env::var("DYNO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 % 1_000_000)
        });
    let cases = std::env::var("DYNO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    println!(
        "{what}: seed {seed}, {cases} cases; replay: DYNO_FUZZ_SEED={seed} DYNO_FUZZ_CASES={cases} \
         cargo test --workspace --test service {what} -- --nocapture"
    );
    (seed, cases)
}

/// Writes the value every fuzz test checks afterwards.
async fn store_anchor(http: &reqwest::Client, url: &str) {
    create_table(
        http,
        url,
        "safe",
        serde_json::json!({"n": 1, "r": 1, "w": 1}),
    )
    .await;
    let resp = http
        .put(format!("{url}/v1/tables/safe/items/anchor"))
        .body("precious")
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 200);
}

/// The node still serves, and the anchor value is intact.
async fn assert_unharmed(http: &reqwest::Client, url: &str) {
    let (status, body) = json(
        http.get(format!("{url}/v1/tables/safe/items/anchor"))
            .send()
            .await
            .expect("the node still answers"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["values"],
        serde_json::json!(["cHJlY2lvdXM="]),
        "{body}"
    );
}

/// Hostile HTTP input (mutated paths, queries, headers and bodies around
/// valid requests, with and without the admin credential) never makes the
/// node fail internally, drop the connection or change stored data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_input_is_refused_cleanly() {
    let (seed, cases) = fuzz_seed("hostile_http_input_is_refused_cleanly");
    let nodes = cluster(&["fz"]).await;
    let url = nodes[0].url.clone();
    let (http, anon) = (admin(), client(None));
    store_anchor(&http, &url).await;
    create_table(
        &http,
        &url,
        "t",
        serde_json::json!({"n": 1, "r": 1, "w": 1}),
    )
    .await;
    let (_, ok) = json(
        http.put(format!("{url}/v1/tables/t/items/k"))
            .body("v")
            .send()
            .await
            .expect("put"),
    )
    .await;
    let context = ok["context"].as_str().expect("context").to_owned();
    let paths = [
        "/v1/tables/t/items/k",
        "/v1/tables/t/items",
        "/v1/tables/nope/items/k",
        "/admin/v1/tables/t",
        "/admin/v1/tables/t2",
        "/admin/v1/tables/t/keys/k/replica",
        "/admin/v1/tables/t/keys/k/preference-list",
        "/admin/v1/tenants/acme/tables/t",
        "/admin/v1/cluster",
        "/admin/v1/repair",
        "/admin/v1/hints",
        "/admin/v1/storage",
        "/admin/v1/faults/links",
        "/",
        "/metrics",
    ];
    let queries = [
        "",
        "?w=1",
        "?r=1",
        "?w=0",
        "?r=99",
        "?limit=5&after=AAAA",
        "?bit=3",
    ];
    let bodies: Vec<Vec<u8>> = vec![
        b"value".to_vec(),
        br#"{"n":1,"r":1,"w":1,"conflict":"lww"}"#.to_vec(),
        br#"{"node":"fz","zone":"z1"}"#.to_vec(),
        br#"{"TableName":"t","Key":{"pk":{"S":"a"}}}"#.to_vec(),
        br#"{"fz":{"drop":true}}"#.to_vec(),
        vec![0xff; 3000],
    ];
    let headers = [
        "x-dyno-context",
        "if-match",
        "if-none-match",
        "x-dyno-tenant",
        "content-type",
        "x-amz-target",
        "accept",
    ];
    let header_values = [
        context.as_str(),
        "*",
        "acme",
        "application/json",
        "DynamoDB_20120810.GetItem",
        "application/octet-stream",
    ];
    let mut rng = Rng(seed);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for case in 0..cases {
        let valid = *rng.pick(&paths);
        let path = match rng.below(4) {
            0 | 1 => valid.to_owned(),
            2 => String::from_utf8_lossy(&rng.mutate(valid.as_bytes())).into_owned(),
            // A hostile table or key name in a valid route.
            _ => {
                let name = rng_pick_bytes(&mut rng, &["k", "t", "acme", ""]);
                let noise = String::from_utf8_lossy(&rng.mutate(name)).into_owned();
                let seg = if rng.below(2) == 0 { "/k" } else { "/t" };
                valid.replacen(seg, &format!("/{noise}"), 1)
            }
        };
        let query = if rng.below(2) == 0 {
            rng.pick(&queries).to_string()
        } else {
            let q = *rng.pick(&queries);
            String::from_utf8_lossy(&rng.mutate(q.as_bytes())).into_owned()
        };
        // Anything a URL cannot carry is percent-encoded, as a client would.
        let target: String = format!("{path}{query}")
            .bytes()
            .map(|b| {
                if b.is_ascii_graphic() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let target = if target.starts_with('/') {
            target
        } else {
            format!("/{target}")
        };
        let method = rng
            .pick(&[
                reqwest::Method::GET,
                reqwest::Method::PUT,
                reqwest::Method::DELETE,
                reqwest::Method::POST,
                reqwest::Method::PATCH,
            ])
            .clone();
        // Never a valid destructive admin call: those are not bad input.
        if method != reqwest::Method::GET
            && (target.starts_with("/admin/v1/catalog") || target.starts_with("/admin/v1/cluster/"))
        {
            continue;
        }
        let who = if rng.below(4) == 0 { &anon } else { &http };
        let mut req = who.request(method.clone(), format!("{url}{target}"));
        for _ in 0..rng.below(3) {
            let name = *rng.pick(&headers);
            let picked = *rng.pick(&header_values);
            let value = rng.mutate(picked.as_bytes());
            if let Ok(v) = reqwest::header::HeaderValue::from_bytes(&value) {
                req = req.header(name, v);
            }
        }
        if rng.below(2) == 0 {
            let body = rng.pick(&bodies).clone();
            req = req.body(rng.mutate(&body));
        }
        let resp = req.send().await.unwrap_or_else(|e| {
            panic!("case {case}: {method} {target}: connection failed: {e} (seed {seed})")
        });
        let status = resp.status().as_u16();
        *statuses.entry(status).or_default() += 1;
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status < 500 || status == 503,
            "case {case}: {method} {target} answered {status}: {body} (seed {seed})"
        );
    }
    println!("statuses: {statuses:?}");
    assert_unharmed(&http, &url).await;
}

fn rng_pick_bytes<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a [u8] {
    rng.pick(xs).as_bytes()
}

/// Decodes `bytes` as the message type of `_like`.
fn decode_like<M: prost::Message + Default>(
    _like: &M,
    bytes: &[u8],
) -> Result<M, prost::DecodeError> {
    M::decode(bytes)
}

/// Mutated internal RPC messages (every call a peer can make, built from a
/// valid message, encoded, mutated and decoded again) never crash the node
/// or touch stored data; the node refuses what it cannot use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_internal_rpc_messages_are_refused_cleanly() {
    use dyno_proto::internal as pb;
    use dyno_proto::internal::replica_client::ReplicaClient;
    use prost::Message;

    let (seed, cases) = fuzz_seed("hostile_internal_rpc_messages_are_refused_cleanly");
    let nodes = cluster(&["fz"]).await;
    let url = nodes[0].url.clone();
    let http = admin();
    store_anchor(&http, &url).await;
    let mut rpc = ReplicaClient::connect(nodes[0].rpc.clone())
        .await
        .expect("rpc");
    let object = {
        let (_, b) = json(
            http.put(format!("{url}/v1/tables/safe/items/other"))
                .body("x")
                .send()
                .await
                .expect("put"),
        )
        .await;
        assert!(b["context"].is_string());
        let mut o = dyno_core::Object::new();
        o.update(
            dyno_core::Write {
                context: &dyno_core::VersionVector::new(),
                actor: dyno_core::ActorId(7),
                value: Some(bytes::Bytes::from_static(b"fuzz")),
                timestamp: dyno_core::Hlc(1 << 20),
            },
            dyno_core::ConflictMode::Siblings,
            dyno_core::SiblingLimits::default(),
        )
        .expect("update");
        dyno_core::codec::encode_object(&o)
    };
    let item_key = dyno_core::keys::encode_item_key("safe", b"other");
    let mut rng = Rng(seed);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    macro_rules! fuzz_call {
        ($method:ident, $msg:expr) => {{
            let valid = $msg;
            let bytes = rng.mutate(&valid.encode_to_vec());
            match decode_like(&valid, &bytes) {
                Ok(msg) => {
                    let res = tokio::time::timeout(Duration::from_secs(10), rpc.$method(msg))
                        .await
                        .unwrap_or_else(|_| panic!("{} hangs (seed {seed})", stringify!($method)));
                    let code = res.map_or_else(|s| format!("{:?}", s.code()), |_| "Ok".into());
                    assert_ne!(code, "Unknown", "{} (seed {seed})", stringify!($method));
                    *codes.entry(code).or_default() += 1;
                }
                Err(_) => *codes.entry("undecodable".into()).or_default() += 1,
            }
        }};
    }
    for _ in 0..cases {
        match rng.below(13) {
            0 => fuzz_call!(
                put,
                pb::ReplicaPutRequest {
                    table: "t".into(),
                    key: b"k".to_vec(),
                    object: bytes::Bytes::from(object.clone()),
                    hint_for: Some("fz".into()),
                    conflict: 1,
                }
            ),
            1 => fuzz_call!(
                get,
                pb::ReplicaGetRequest {
                    table: "safe".into(),
                    key: b"anchor".to_vec(),
                    conflict: 0,
                }
            ),
            2 => fuzz_call!(
                coordinate_put,
                pb::CoordinatePutRequest {
                    table: "t".into(),
                    key: b"k".to_vec(),
                    value: Some(bytes::Bytes::from_static(b"v")),
                    context: Some("AQA".into()),
                    w: 1,
                    if_match: None,
                    if_none_match: true,
                    hops: 1,
                    timeout_ms: 500,
                }
            ),
            3 => fuzz_call!(
                replica_scan,
                pb::ReplicaScanRequest {
                    table: "safe".into(),
                    start: vec![0; 8],
                    end: Some(vec![0xff; 8]),
                    limit: 10,
                    reverse: true,
                }
            ),
            4 => fuzz_call!(
                gossip,
                pb::GossipMessage {
                    from: "fz".into(),
                    nodes: vec![pb::NodeStateMsg {
                        id: "fz".into(),
                        generation: 1,
                        heartbeat: 5,
                        http: url.clone(),
                        rpc: nodes[0].rpc.clone(),
                        ..Default::default()
                    }],
                    topology: vec![1, 2, 3],
                }
            ),
            5 => fuzz_call!(
                merkle_roots,
                pb::MerkleRootsRequest {
                    n: 1,
                    partitions: vec![0, 1, 1023],
                }
            ),
            6 => fuzz_call!(
                merkle_children,
                pb::MerkleChildrenRequest {
                    n: 1,
                    partition: 3,
                    level: 1,
                    indices: vec![0, 5],
                }
            ),
            7 => fuzz_call!(
                key_digests,
                pb::KeyDigestsRequest {
                    n: 1,
                    partition: 3,
                    leaves: vec![pb::LeafRangeMsg { first: 0, last: 15 }],
                    item_keys: vec![item_key.clone()],
                }
            ),
            8 => fuzz_call!(
                fetch_items,
                pb::FetchItemsRequest {
                    item_keys: vec![item_key.clone(), vec![]],
                }
            ),
            9 => fuzz_call!(
                push_items,
                pb::ItemBatch {
                    items: vec![pb::Item {
                        item_key: dyno_core::keys::encode_item_key("t", b"k"),
                        object: object.clone(),
                        conflict: 0,
                    }],
                    next_key: None,
                }
            ),
            10 => fuzz_call!(
                drop_tombstones,
                pb::DropTombstonesRequest {
                    entries: vec![pb::KeyDigest {
                        item_key: dyno_core::keys::encode_item_key("t", b"k"),
                        digest: 7,
                    }],
                }
            ),
            11 => fuzz_call!(
                stream_partition,
                pb::StreamPartitionRequest {
                    partition: 3,
                    for_node: "fz".into(),
                    epoch: 1,
                    start_key: None,
                    max_items: 10,
                    max_bytes: 1 << 20,
                }
            ),
            _ => fuzz_call!(
                coordinate_rmw,
                pb::CoordinateRmwRequest {
                    table: "t".into(),
                    key: b"k".to_vec(),
                    kind: "ddb".into(),
                    op: br#"{"kind":"Delete"}"#.to_vec(),
                    hops: 1,
                    timeout_ms: 500,
                }
            ),
        }
    }
    println!("answers: {codes:?}");
    assert_unharmed(&http, &url).await;
}
