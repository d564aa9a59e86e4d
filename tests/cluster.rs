//! System tests: real `dyno node` processes on loopback.
//!
//! Each test starts its own cluster on free ports in a temporary directory
//! and tears it down at the end. Fault tests kill nodes with SIGKILL.

#[allow(dead_code)] // shared with the other system tests
mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use support::{Cluster, NodeOpts, values};

#[tokio::test(flavor = "multi_thread")]
async fn http_contract() {
    let c = Cluster::start(3, NodeOpts::default()).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    let n1 = c.url(0);

    // PUT then GET, from different nodes.
    let (s, b) = c.put(0, "t", "k", b"v1", &[]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let ctx1 = b["context"].as_str().expect("context").to_owned();
    let (s, b) = c.get(1, "t", "k", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(values(&b), vec!["v1"]);
    assert_eq!(b["context"].as_str(), Some(ctx1.as_str()));

    // Raw bytes with Accept: application/octet-stream.
    let resp = c
        .http
        .get(format!("{}/v1/tables/t/items/k", c.url(2)))
        .header("accept", "application/octet-stream")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("x-dyno-context").is_some());
    assert_eq!(resp.bytes().await.expect("body").as_ref(), b"v1");

    // A write with the context replaces; per-request R and W work.
    let (s, b) = c
        .put(2, "t", "k", b"v2", &[("x-dyno-context", &ctx1)])
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = c.get(0, "t", "k", "?r=3").await;
    assert_eq!(values(&b), vec!["v2"]);
    let ctx2 = b["context"].as_str().expect("context").to_owned();

    // Conditional writes.
    let (s, b) = c.put(0, "t", "k", b"stale", &[("if-match", &ctx1)]).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{b}");
    assert_eq!(b["error"]["code"], "PreconditionFailed");
    let (s, _) = c
        .put(
            0,
            "t",
            "k",
            b"v3",
            &[("if-match", &ctx2), ("x-dyno-context", &ctx2)],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = c
        .put(1, "t", "k", b"again", &[("if-none-match", "*")])
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    let (s, _) = c
        .put(1, "t", "fresh", b"new", &[("if-none-match", "*")])
        .await;
    assert_eq!(s, StatusCode::OK);

    // DELETE leaves a tombstone: 404 with a context, and no values.
    let (_, b) = c.get(0, "t", "k", "").await;
    let ctx3 = b["context"].as_str().expect("context").to_owned();
    let resp = c
        .http
        .delete(format!("{n1}/v1/tables/t/items/k"))
        .header("x-dyno-context", &ctx3)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, b) = c.get(2, "t", "k", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(b["values"].as_array().is_some_and(Vec::is_empty));
    assert!(
        b["context"].is_string(),
        "a deleted key still has a context: {b}"
    );
    let (s, b) = c.get(2, "t", "never-written", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(b["context"].is_null());

    // Unknown table.
    let (s, b) = c.get(0, "nope", "k", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "TableNotFound");

    // Admin: tables, preference list, local replica, hints, cluster, health, metrics.
    let tables: Value = c
        .http
        .get(format!("{n1}/admin/v1/tables"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(
        tables["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .any(|t| t["name"] == "t" && t["n"] == 3)
    );
    let pl: Value = c
        .http
        .get(format!("{n1}/admin/v1/tables/t/keys/fresh/preference-list"))
        .send()
        .await
        .expect("pl")
        .json()
        .await
        .expect("json");
    let roles: Vec<&str> = pl["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["role"].as_str())
        .collect();
    assert_eq!(roles, vec!["primary", "primary", "primary"]);
    for i in 0..3 {
        let r: Value = c
            .http
            .get(format!("{}/admin/v1/tables/t/keys/fresh/replica", c.url(i)))
            .send()
            .await
            .expect("replica")
            .json()
            .await
            .expect("json");
        // W=2: the third replica may still be on its way; wait for it.
        if r["exists"] != true {
            let cr = &c;
            c.wait_for(
                move || async move { cr.local_values(i, "t", "fresh").await == vec!["new"] },
                "replica of fresh",
            )
            .await;
        }
    }
    let hints: Value = c
        .http
        .get(format!("{n1}/admin/v1/hints"))
        .send()
        .await
        .expect("hints")
        .json()
        .await
        .expect("json");
    assert!(hints["targets"].is_array());
    let cl: Value = c
        .http
        .get(format!("{n1}/admin/v1/cluster"))
        .send()
        .await
        .expect("cluster")
        .json()
        .await
        .expect("json");
    assert_eq!(cl["nodes"].as_array().map(Vec::len), Some(3));
    let h = c
        .http
        .get(format!("{n1}/admin/v1/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(h.status(), StatusCode::OK);
    let m = c
        .http
        .get(format!("{n1}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(m.contains("dyno_request_duration_seconds_bucket"), "{m}");
    assert!(m.contains("table=\"t\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors() {
    let c = Cluster::start(3, NodeOpts::default()).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    let url = c.url(0);

    let limit = 1 << 20;
    let (s, b) = c.put(0, "t", "big", &vec![b'x'; limit], &[]).await;
    assert_eq!(s, StatusCode::OK, "exactly 1 MiB is allowed: {b}");
    let (s, b) = c.put(0, "t", "big", &vec![b'x'; limit + 1], &[]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(b["error"]["code"], "ValueTooLarge");
    // The stored value is untouched by the rejected write.
    let (_, b) = c.get(1, "t", "big", "").await;
    assert_eq!(values(&b).first().map(String::len), Some(limit));

    let long_key = "k".repeat(2049);
    let (s, b) = c.put(0, "t", &long_key, b"v", &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["code"], "InvalidKey");
    let (s, _) = c.put(0, "t", &"k".repeat(2048), b"v", &[]).await;
    assert_eq!(s, StatusCode::OK);

    for bad in ["not-a-context", "AAAA", "%%%"] {
        let (s, b) = c.put(0, "t", "k", b"v", &[("x-dyno-context", bad)]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(b["error"]["code"], "InvalidContext");
    }
    let (s, _) = c
        .put(0, "t", "k", b"v", &[("if-none-match", "\"etag\"")])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    for q in ["?r=0", "?r=4", "?r=abc", "?r=-1", "?r="] {
        let (s, b) = c.get(0, "t", "k", q).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(b["error"]["code"], "InvalidR");
    }
    for q in ["?w=0", "?w=4", "?w=two"] {
        let resp = c
            .http
            .put(format!("{url}/v1/tables/t/items/k{q}"))
            .body("v")
            .send()
            .await
            .expect("put");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{q}");
        let b: Value = resp.json().await.expect("json");
        assert_eq!(b["error"]["code"], "InvalidW");
    }
    let (s, _) = c.put(0, "missing", "k", b"v", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Table creation errors.
    for (name, spec) in [
        ("t2", json!({"n": 0, "r": 1, "w": 1})),
        ("t2", json!({"n": 3, "r": 4, "w": 1})),
        ("t2", json!({"n": 4, "r": 1, "w": 1})),
        ("t2", json!({"n": 3, "r": 1})),
        ("bad name!", json!({"n": 1, "r": 1, "w": 1})),
    ] {
        let resp = c
            .http
            .put(format!(
                "{url}/admin/v1/tables/{}",
                name.replace(' ', "%20")
            ))
            .json(&spec)
            .send()
            .await
            .expect("create");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{name} {spec}");
    }
    // Nodes are still healthy after all of it.
    for i in 0..3 {
        let (s, _) = c.get(i, "t", "k", "").await;
        assert!(s == StatusCode::OK || s == StatusCode::NOT_FOUND);
    }
}

/// Section 6.3 end to end: two clients write from the same context, a read
/// shows both values, a write with the merged context leaves one.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_become_siblings_and_resolve() {
    let c = Cluster::start(3, NodeOpts::default()).await;
    c.create_table("cart", json!({"n": 3, "r": 2, "w": 2}))
        .await;
    let (_, b) = c.put(0, "cart", "alice", b"v1", &[]).await;
    let ctx = b["context"].as_str().expect("ctx").to_owned();
    let headers = [("x-dyno-context", ctx.as_str())];
    let (a, b2) = tokio::join!(
        c.put(1, "cart", "alice", b"v2", &headers),
        c.put(2, "cart", "alice", b"v3", &headers)
    );
    assert_eq!((a.0, b2.0), (StatusCode::OK, StatusCode::OK));
    let (_, read) = c.get(0, "cart", "alice", "?r=3").await;
    let mut vs = values(&read);
    vs.sort();
    assert_eq!(vs, vec!["v2", "v3"], "{read}");
    // The raw form answers 300 for siblings.
    let resp = c
        .http
        .get(format!("{}/v1/tables/cart/items/alice?r=3", c.url(1)))
        .header("accept", "application/octet-stream")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::MULTIPLE_CHOICES);
    let merged = read["context"].as_str().expect("ctx").to_owned();
    let (s, _) = c
        .put(1, "cart", "alice", b"v4", &[("x-dyno-context", &merged)])
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, read) = c.get(2, "cart", "alice", "?r=3").await;
    assert_eq!(values(&read), vec!["v4"]);
}

/// Kill a node: W=2 writes go on, hints pile up for it; restart it: the
/// hints are delivered and its own replica holds every write.
#[tokio::test(flavor = "multi_thread")]
async fn hinted_handoff_after_sigkill() {
    let mut c = Cluster::start(3, NodeOpts::default()).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    c.kill(2);
    let mut written = BTreeMap::new();
    for i in 0..40 {
        let key = format!("key{i}");
        let val = format!("value{i}");
        let (s, b) = c.put(i % 2, "t", &key, val.as_bytes(), &[]).await;
        assert_eq!(s, StatusCode::OK, "write {i} with one node down: {b}");
        written.insert(key, val);
    }
    // Hints are stored as the write fans out; wait for the last ones.
    {
        let cr = &c;
        c.wait_for(
            move || async move { cr.hint_backlog("n3").await >= 40 },
            "a hint for n3 per write",
        )
        .await;
    }
    println!(
        "hints held for n3 while it was down: {}",
        c.hint_backlog("n3").await
    );

    c.restart(2).await;
    let cr = &c;
    c.wait_for(
        move || async move { cr.hint_backlog("n3").await == 0 },
        "hints for n3 to drain",
    )
    .await;
    for (k, v) in &written {
        assert_eq!(
            c.local_values(2, "t", k).await,
            vec![v.clone()],
            "n3's replica of {k}"
        );
    }
}

/// A replica that missed a write (hints disabled) is brought up to date by
/// a read that sees it stale.
#[tokio::test(flavor = "multi_thread")]
async fn read_repair_fixes_a_stale_replica() {
    let opts = NodeOpts {
        hint_max_bytes: Some(0),
        ..NodeOpts::default()
    };
    let mut c = Cluster::start(3, opts).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    let (s, _) = c.put(0, "t", "k", b"old", &[]).await;
    assert_eq!(s, StatusCode::OK);
    {
        let cr = &c;
        c.wait_for(
            move || async move { cr.local_values(2, "t", "k").await == vec!["old"] },
            "n3 to have the first write",
        )
        .await;
    }
    c.kill(2);
    let (_, b) = c.get(0, "t", "k", "").await;
    let ctx = b["context"].as_str().expect("ctx").to_owned();
    let (s, _) = c
        .put(0, "t", "k", b"new", &[("x-dyno-context", &ctx)])
        .await;
    assert_eq!(s, StatusCode::OK);
    c.restart(2).await;
    assert_eq!(
        c.local_values(2, "t", "k").await,
        vec!["old"],
        "n3 missed the write (no hints)"
    );
    let (_, b) = c.get(0, "t", "k", "?r=3").await;
    assert_eq!(values(&b), vec!["new"]);
    let cr = &c;
    c.wait_for(
        move || async move { cr.local_values(2, "t", "k").await == vec!["new"] },
        "read repair of n3",
    )
    .await;
    let m = c.metrics(0).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("dyno_read_repairs_total") && !l.ends_with(" 0")),
        "{m}"
    );
}

/// SIGKILL under continuous load: four concurrent clients do
/// read-modify-writes while a node is killed and later restarted. Every
/// key's last acknowledged value is readable at R=2 through every node
/// afterwards. The victim and the kill point come from a seed, printed;
/// rerun one with DYNO_TEST_SEED.
#[tokio::test(flavor = "multi_thread")]
async fn no_acknowledged_write_is_lost_under_sigkill() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let seed = support::test_seed();
    let victim = (seed % 3) as usize;
    let kill_at = 40 + (seed / 3 % 80) as usize;
    println!(
        "seed {seed}: killing n{} after {kill_at} acknowledged writes",
        victim + 1
    );
    let mut c = Cluster::start(3, NodeOpts::default()).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;

    let urls: Arc<Vec<String>> = Arc::new((0..3).map(|i| c.url(i)).collect());
    let acks = Arc::new(AtomicUsize::new(0));
    let victim_down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4usize {
        let (urls, acks, victim_down, stop, http) = (
            Arc::clone(&urls),
            Arc::clone(&acks),
            Arc::clone(&victim_down),
            Arc::clone(&stop),
            c.http.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) && i < 2000 {
                let mut via = (i + w) % 3;
                if via == victim && victim_down.load(Ordering::SeqCst) {
                    via = (via + 1) % 3;
                }
                let key = format!("w{w}-k{}", i % 25);
                let value = format!("w{w}-v{i}");
                i += 1;
                let item = format!("{}/v1/tables/t/items/{key}", urls[via]);
                // A careful client: read, then write with the context.
                let Ok(cur) = http.get(&item).send().await else {
                    continue;
                };
                let cur: Value = cur.json().await.unwrap_or(Value::Null);
                let mut req = http.put(&item).body(value.clone());
                if let Some(ctx) = cur["context"].as_str() {
                    req = req.header("x-dyno-context", ctx);
                }
                // No answer or an error: not acknowledged, so not checked.
                if let Ok(resp) = req.send().await
                    && resp.status() == StatusCode::OK
                {
                    last.insert(key, value);
                    acks.fetch_add(1, Ordering::SeqCst);
                }
            }
            last
        }));
    }

    // The controller: kill, then restart, then stop the writers.
    let wait_acks = |n: usize| {
        let acks = Arc::clone(&acks);
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while acks.load(Ordering::SeqCst) < n && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            acks.load(Ordering::SeqCst) >= n
        }
    };
    assert!(
        wait_acks(kill_at).await,
        "seed {seed}: writers stalled before the kill"
    );
    victim_down.store(true, Ordering::SeqCst);
    c.kill(victim);
    assert!(
        wait_acks(kill_at + 150).await,
        "seed {seed}: writes stopped succeeding with one node down"
    );
    c.restart(victim).await;
    victim_down.store(false, Ordering::SeqCst);
    assert!(
        wait_acks(kill_at + 300).await,
        "seed {seed}: writes stalled after the restart"
    );
    stop.store(true, Ordering::SeqCst);

    let mut checked = 0;
    for writer in writers {
        for (k, v) in writer.await.expect("writer") {
            for node in 0..3 {
                let (s, b) = c.get(node, "t", &k, "?r=2").await;
                assert_eq!(s, StatusCode::OK, "seed {seed}: {k} via n{}", node + 1);
                let vs = values(&b);
                assert!(
                    vs.contains(&v),
                    "seed {seed}: {k} via n{}: last acknowledged {v}, read {vs:?}",
                    node + 1
                );
            }
            checked += 1;
        }
    }
    println!(
        "seed {seed}: {} writes acknowledged; the last one of each of {checked} keys is intact",
        acks.load(Ordering::SeqCst)
    );
}

/// A partition cuts n3 off. W=1 writes on both sides are acknowledged; once
/// healed, the hints flow and a read shows both values as siblings.
#[tokio::test(flavor = "multi_thread")]
async fn partition_makes_siblings_and_loses_nothing() {
    let opts = NodeOpts {
        proxies: true,
        ..NodeOpts::default()
    };
    let c = Cluster::start(3, opts).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    c.isolate(2, true);
    let (s1, b1) = c.put(0, "t", "k", b"left", &[]).await;
    let (s2, b2) = c.put(2, "t", "k", b"right", &[]).await;
    assert_eq!(s1, StatusCode::OK, "majority side accepts W=2: {b1}");
    assert_eq!(
        s2,
        StatusCode::SERVICE_UNAVAILABLE,
        "minority side cannot reach W=2: {b2}"
    );
    assert_eq!(b2["error"]["code"], "QuorumNotMet", "{b2}");
    assert!(
        b2["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 of the 2")),
        "{b2}"
    );
    // With W=1 the minority side is writable too.
    let resp = c
        .http
        .put(format!("{}/v1/tables/t/items/k?w=1", c.url(2)))
        .body("right")
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = c
        .http
        .put(format!("{}/v1/tables/t/items/k?w=1", c.url(1)))
        .body("left-again")
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), StatusCode::OK);
    c.isolate(2, false);
    // Hints flow both ways; then every replica holds every write.
    let cr = &c;
    c.wait_for(
        move || async move {
            let c = cr;
            let mut all = true;
            for i in 0..3 {
                let mut vs = c.local_values(i, "t", "k").await;
                vs.sort();
                vs.dedup();
                // "right" may be there twice: the W=2 attempt that got 503
                // was still applied on n3 (a failed quorum is not a rollback).
                all &= vs == vec!["left", "left-again", "right"];
            }
            all
        },
        "replicas to converge after the partition heals",
    )
    .await;
    let (_, b) = c.get(0, "t", "k", "?r=3").await;
    let mut vs = values(&b);
    vs.sort();
    assert!(
        vs.contains(&"right".to_owned()) && vs.contains(&"left-again".to_owned()),
        "siblings from both sides: {vs:?}"
    );
}

async fn start_dev(dir: &std::path::Path) -> tokio::process::Child {
    start_dev_with(dir, 3).await
}

async fn start_dev_with(dir: &std::path::Path, nodes: u16) -> tokio::process::Child {
    start_dev_args(dir, nodes, &[]).await
}

async fn start_dev_args(
    dir: &std::path::Path,
    nodes: u16,
    extra: &[&str],
) -> tokio::process::Child {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args([
            "dev",
            "--nodes",
            &nodes.to_string(),
            "--base-port",
            "0",
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dyno dev");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("dyno dev: {line}");
            if line.contains("press Ctrl-C") {
                return true;
            }
        }
        false
    });
    assert!(
        ready.await.unwrap_or(false),
        "dyno dev did not report ready"
    );
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// Sends `dyno dev` a Ctrl-C and checks that it exits cleanly within 30 s.
async fn ctrl_c(dev: &mut tokio::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &dev.id().expect("pid").to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(30), dev.wait())
        .await
        .expect("dev exits")
        .expect("status");
    assert!(exit.success(), "{exit}");
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// `dyno dev --nodes 1`: the demo table's N is the node count, and the demo
/// key works on the one node.
#[tokio::test(flavor = "multi_thread")]
async fn dyno_dev_with_one_node_makes_a_one_replica_demo_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = start_dev_with(dir.path(), 1).await;
    let cluster: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("cluster.json")).expect("cluster.json"),
    )
    .expect("json");
    let node = cluster["nodes"][0]["http"].as_str().expect("http");
    let admin = support::client_with_token(cluster["admin_token"].as_str());
    let demo: Value = admin
        .get(format!("{node}/admin/v1/tenants/demo/tables/demo"))
        .send()
        .await
        .expect("demo")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (demo["n"].as_u64(), demo["r"].as_u64(), demo["w"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{demo}"
    );
    let key = support::client_with_token(cluster["demo"]["token"].as_str());
    let s = key
        .put(format!("{node}/v1/tables/demo/items/k"))
        .body("v")
        .send()
        .await
        .expect("put")
        .status();
    assert_eq!(s, StatusCode::OK);
    ctrl_c(&mut dev).await;
}

/// The platform admin of a `dyno dev` cluster (`cluster.json`) signs in to
/// the control plane at `cp` and gets a session token.
async fn admin_signs_in(http: &reqwest::Client, cp: &str, cluster: &Value) {
    let login: Value = http
        .post(format!("{cp}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": cluster["admin"]["email"], "password": cluster["admin"]["password"]}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    assert!(login["token"].as_str().is_some(), "{login}");
}

/// `dyno dev --tls`: every process serves TLS with certificates of a local
/// CA (DIR/tls/ca.pem), the nodes and the control plane reach each other
/// over mutual TLS, clients verify them, and a restart keeps TLS.
#[tokio::test(flavor = "multi_thread")]
async fn dyno_dev_tls_serves_everything_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = start_dev_args(dir.path(), 2, &["--tls"]).await;
    let read_cluster = || -> Value {
        serde_json::from_slice(
            &std::fs::read(dir.path().join("cluster.json")).expect("cluster.json"),
        )
        .expect("json")
    };
    let cluster = read_cluster();
    let ca = dir.path().join("tls/ca.pem");
    assert_eq!(
        cluster["tls_ca"].as_str(),
        Some(ca.to_str().expect("utf-8"))
    );
    let urls: Vec<String> = cluster["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["http"].as_str().expect("http").to_owned())
        .collect();
    let cp = cluster["controlplane"]
        .as_str()
        .expect("controlplane")
        .to_owned();
    assert!(
        urls.iter().chain([&cp]).all(|u| u.starts_with("https://")),
        "{urls:?} {cp}"
    );

    let trusting = |token: Option<&str>| support::client_trusting(token, &ca);
    // The demo key writes through one node and reads through the other
    // with R=2: the replicas talk over mutual TLS. (The demo table and key
    // came from the control plane, which reached the nodes the same way.)
    let demo = trusting(cluster["demo"]["token"].as_str());
    let s = demo
        .put(format!("{}/v1/tables/demo/items/greeting?w=2", urls[0]))
        .body("hello")
        .send()
        .await
        .expect("put")
        .status();
    assert_eq!(s, StatusCode::OK);
    let got: Value = demo
        .get(format!("{}/v1/tables/demo/items/greeting?r=2", urls[1]))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(got["values"][0], "aGVsbG8=", "{got}");
    let admin = trusting(cluster["admin_token"].as_str());
    for url in &urls {
        let tls: Value = admin
            .get(format!("{url}/admin/v1/tls"))
            .send()
            .await
            .expect("tls")
            .json()
            .await
            .expect("json");
        assert_eq!(tls["enabled"], true, "{tls}");
    }
    // The console and the API over HTTPS.
    admin_signs_in(&trusting(None), &cp, &cluster).await;

    // A client that does not trust the CA, and one speaking plain HTTP,
    // get nothing.
    let untrusting = support::client_with_token(cluster["admin_token"].as_str());
    let err = untrusting
        .get(format!("{}/admin/v1/health", urls[0]))
        .send()
        .await
        .expect_err("the node was trusted without its CA");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    let plain = urls[0].replacen("https://", "http://", 1);
    assert!(
        untrusting
            .get(format!("{plain}/admin/v1/health"))
            .send()
            .await
            .is_err(),
        "the TLS port answered plain HTTP"
    );

    // The command-line client finds the CA given to it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["get", "demo", "greeting", "--url", &urls[1], "--ca-file"])
        .arg(&ca)
        .env(
            "DYNO_TOKEN",
            cluster["demo"]["token"].as_str().expect("token"),
        )
        .output()
        .expect("dyno get");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("hello"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the CA it says what to give, before trying.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["get", "demo", "greeting", "--url", &urls[1]])
        .current_dir(dir.path())
        .env_remove("DYNO_CA_FILE")
        .env(
            "DYNO_TOKEN",
            cluster["demo"]["token"].as_str().expect("token"),
        )
        .output()
        .expect("dyno get");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--ca-file"),
        "{stderr}"
    );

    // A restart keeps TLS without being asked again.
    ctrl_c(&mut dev).await;
    let mut dev = start_dev_args(dir.path(), 2, &[]).await;
    assert_eq!(
        read_cluster()["nodes"][0]["http"].as_str(),
        Some(urls[0].as_str())
    );
    let got = demo
        .get(format!("{}/v1/tables/demo/items/greeting", urls[0]))
        .send()
        .await
        .expect("get after restart")
        .status();
    assert_eq!(got, StatusCode::OK);
    ctrl_c(&mut dev).await;
}

/// `dyno dev`: starts a cluster with the table demo, writes cluster.json,
/// stops every node on Ctrl-C, and comes back with its data.
#[tokio::test(flavor = "multi_thread")]
async fn dyno_dev_starts_stops_and_restarts_with_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = start_dev(dir.path()).await;
    let cluster: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("cluster.json")).expect("cluster.json"),
    )
    .expect("json");
    // The admin credential is in cluster.json and in DIR/secrets, readable
    // by its owner only; without it the nodes refuse data and admin calls.
    let admin_token = cluster["admin_token"].as_str().expect("admin_token");
    let token_file = dir.path().join("secrets/admin-token");
    assert_eq!(
        std::fs::read_to_string(&token_file)
            .expect("token file")
            .trim(),
        admin_token
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "secrets are private: {mode:o}");
    }
    let anonymous = dyno_tls::http_client_builder()
        .build()
        .expect("an HTTP client");
    let first = cluster["nodes"][0]["http"].as_str().expect("http");
    for path in ["/admin/v1/tables/demo", "/v1/tables/demo/items/x"] {
        let s = anonymous
            .get(format!("{first}{path}"))
            .send()
            .await
            .expect("get")
            .status();
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    let admin_http = support::client_with_token(Some(admin_token));
    // The control plane made the demo tenant, its admin and an API key.
    let demo_key = cluster["demo"]["token"].as_str().expect("demo token");
    assert_eq!(cluster["demo"]["tenant"], "demo");
    for f in [
        "email",
        "password",
        "key_id",
        "access_key_id",
        "secret_access_key",
    ] {
        assert!(
            cluster["demo"][f].as_str().is_some_and(|v| !v.is_empty()),
            "demo.{f}"
        );
    }
    let cp = cluster["controlplane"].as_str().expect("controlplane url");
    assert!(alive(cluster["controlplane_pid"].as_u64().expect("cp pid")));
    admin_signs_in(&support::client_with_token(None), cp, &cluster).await;
    let http = support::client_with_token(Some(demo_key));
    let nodes = cluster["nodes"].as_array().expect("nodes").clone();
    assert_eq!(nodes.len(), 3);
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| n["http"].as_str().expect("http").to_owned())
        .collect();
    let pids: Vec<u64> = nodes
        .iter()
        .map(|n| n["pid"].as_u64().expect("pid"))
        .collect();
    assert!(
        nodes
            .iter()
            .all(|n| n["argv"].as_array().is_some_and(|a| a.len() > 5))
    );
    assert!(pids.iter().all(|&p| alive(p)));
    let demo: Value = admin_http
        .get(format!("{}/admin/v1/tenants/demo/tables/demo", urls[2]))
        .send()
        .await
        .expect("demo")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (demo["n"].as_u64(), demo["r"].as_u64(), demo["w"].as_u64()),
        (Some(3), Some(2), Some(2))
    );
    let resp = http
        .put(format!("{}/v1/tables/demo/items/greeting", urls[0]))
        .body("hello")
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), StatusCode::OK);

    // Ctrl-C stops every node.
    ctrl_c(&mut dev).await;
    for &p in &pids {
        assert!(!alive(p), "node process {p} still running after Ctrl-C");
    }
    let cp_pid = cluster["controlplane_pid"].as_u64().expect("cp pid");
    assert!(!alive(cp_pid), "the control plane still runs after Ctrl-C");
    assert!(
        !dir.path().join("postgres/data/postmaster.pid").exists(),
        "Postgres still runs after Ctrl-C"
    );

    // The same cluster comes back, with its data.
    let mut dev = start_dev(dir.path()).await;
    let again: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("cluster.json")).expect("cluster.json"),
    )
    .expect("json");
    let urls2: Vec<String> = again["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["http"].as_str().expect("http").to_owned())
        .collect();
    assert_eq!(urls, urls2);
    assert_eq!(again["demo"], cluster["demo"], "the same demo user and key");
    let body: Value = http
        .get(format!("{}/v1/tables/demo/items/greeting?r=3", urls[1]))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(values(&body), vec!["hello"]);

    // Grow by one node, then shrink by another, with the CLI.
    let dyno = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dyno"))
            .args(args)
            .env("DYNO_ADMIN_TOKEN", admin_token)
            .output()
            .expect("run dyno");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        println!(
            "dyno {}:\n{text}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "dyno {args:?} failed");
        text
    };
    let dir_s = dir.path().display().to_string();
    let out = dyno(&["dev", "add-node", "--data-dir", &dir_s]);
    assert!(out.contains("join n4: done"), "{out}");
    let grown: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("cluster.json")).expect("cluster.json"),
    )
    .expect("json");
    let n4_pid = grown["nodes"][3]["pid"].as_u64().expect("n4 pid");
    assert!(alive(n4_pid));
    let status = dyno(&["cluster", "status", "--url", &urls[0]]);
    let n4_line = status
        .lines()
        .find(|l| l.starts_with("n4 "))
        .expect("n4 listed");
    assert!(n4_line.contains(" up "), "{status}");
    let out = dyno(&["cluster", "decommission", "n3", "--url", &urls[0]]);
    assert!(out.contains("decommission n3: done"), "{out}");
    let status = dyno(&["cluster", "status", "--url", &urls[0]]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("n3 ") && l.contains(" left ")),
        "{status}"
    );
    let body: Value = http
        .get(format!("{}/v1/tables/demo/items/greeting?r=2", urls[0]))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(values(&body), vec!["hello"]);

    ctrl_c(&mut dev).await;
    assert!(!alive(n4_pid), "the added node stops with the dev cluster");
}

/// The public gRPC API: same data and same errors as the HTTP API.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_api_has_the_http_semantics() {
    use dyno_proto::public::dyno_client::DynoClient;
    use dyno_proto::public::{DeleteRequest, GetRequest, PutRequest};

    let c = Cluster::start(3, NodeOpts::default()).await;
    c.create_table("g", json!({"n": 3, "r": 2, "w": 2})).await;
    let channel = tonic::transport::Endpoint::from_shared(c.url(1))
        .expect("url")
        .connect()
        .await
        .expect("connect gRPC");
    // Without credentials: Unauthenticated, with the Dyno code.
    let e = DynoClient::new(channel.clone())
        .get(GetRequest {
            table: "g".into(),
            key: b"k".to_vec(),
            r: None,
        })
        .await
        .expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", support::ADMIN_TOKEN)
        .parse()
        .expect("metadata");
    let mut client = DynoClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    });
    let put = |key: &[u8], value: &[u8]| PutRequest {
        table: "g".into(),
        key: key.to_vec(),
        value: value.to_vec(),
        context: None,
        w: None,
        if_match: None,
        if_none_match: false,
    };

    let ctx = client
        .put(put(b"k", b"via-grpc"))
        .await
        .expect("put")
        .into_inner()
        .context;
    assert!(!ctx.is_empty());
    // Visible over HTTP, with the same context.
    let (s, b) = c.get(0, "g", "k", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(values(&b), vec!["via-grpc"]);
    assert_eq!(b["context"].as_str(), Some(ctx.as_str()));
    // Written over HTTP, read over gRPC.
    let (_, hb) = c.put(2, "g", "h", b"via-http", &[]).await;
    let got = client
        .get(GetRequest {
            table: "g".into(),
            key: b"h".to_vec(),
            r: Some(3),
        })
        .await
        .expect("get")
        .into_inner();
    assert!(got.found);
    assert_eq!(got.values, vec![b"via-http".to_vec()]);
    assert_eq!(got.context.as_deref(), hb["context"].as_str());

    // Siblings, then resolution with the merged context.
    let blind = client.put(put(b"k", b"concurrent")).await.expect("put");
    assert!(!blind.into_inner().context.is_empty());
    let read = client
        .get(GetRequest {
            table: "g".into(),
            key: b"k".to_vec(),
            r: Some(3),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(read.values.len(), 2);
    let mut resolve = put(b"k", b"resolved");
    resolve.context = read.context.clone();
    client.put(resolve).await.expect("resolve");
    let read = client
        .get(GetRequest {
            table: "g".into(),
            key: b"k".to_vec(),
            r: Some(3),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(read.values, vec![b"resolved".to_vec()]);

    // Delete, then not found with a context.
    client
        .delete(DeleteRequest {
            table: "g".into(),
            key: b"k".to_vec(),
            context: read.context.clone(),
            w: None,
        })
        .await
        .expect("delete");
    let gone = client
        .get(GetRequest {
            table: "g".into(),
            key: b"k".to_vec(),
            r: None,
        })
        .await
        .expect("get")
        .into_inner();
    assert!(!gone.found && gone.values.is_empty() && gone.context.is_some());

    // Errors: the gRPC code, and the Dyno code in metadata.
    let code_of = |s: &tonic::Status| {
        s.metadata()
            .get("dyno-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let e = client
        .get(GetRequest {
            table: "nope".into(),
            key: b"k".to_vec(),
            r: None,
        })
        .await
        .expect_err("unknown table");
    assert_eq!(
        (e.code(), code_of(&e).as_deref()),
        (tonic::Code::NotFound, Some("TableNotFound"))
    );
    let e = client
        .get(GetRequest {
            table: "g".into(),
            key: b"k".to_vec(),
            r: Some(4),
        })
        .await
        .expect_err("r > n");
    assert_eq!(
        (e.code(), code_of(&e).as_deref()),
        (tonic::Code::InvalidArgument, Some("InvalidR"))
    );
    let e = client.put(put(b"", b"v")).await.expect_err("empty key");
    assert_eq!(code_of(&e).as_deref(), Some("InvalidKey"));
    let e = client
        .put(put(b"big", &vec![0u8; (1 << 20) + 1]))
        .await
        .expect_err("too large");
    assert_eq!(
        (e.code(), code_of(&e).as_deref()),
        (tonic::Code::InvalidArgument, Some("ValueTooLarge"))
    );
    let mut bad_ctx = put(b"k", b"v");
    bad_ctx.context = Some("garbage".into());
    let e = client.put(bad_ctx).await.expect_err("bad context");
    assert_eq!(code_of(&e).as_deref(), Some("InvalidContext"));
    let mut cond = put(b"h", b"v");
    cond.if_none_match = true;
    let e = client.put(cond).await.expect_err("exists");
    assert_eq!(
        (e.code(), code_of(&e).as_deref()),
        (tonic::Code::FailedPrecondition, Some("PreconditionFailed"))
    );
}

/// `dyno put|get|delete`: the client prints values, siblings and contexts
/// readably, and errors clearly.
#[tokio::test(flavor = "multi_thread")]
async fn cli_client_prints_values_siblings_and_contexts() {
    let c = Cluster::start(3, NodeOpts::default()).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    let dyno = |args: &[&str], url: String| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dyno"))
            .args(args)
            .args(["--url", &url])
            .env("DYNO_TOKEN", support::ADMIN_TOKEN)
            .output()
            .expect("run dyno");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let context_of = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("context: "))
            .expect("a context line")
            .to_owned()
    };

    let (ok, out, err) = dyno(&["put", "t", "cart", "milk"], c.url(0));
    assert!(ok, "{err}");
    let ctx = context_of(&out);
    let (ok, out, _) = dyno(&["get", "t", "cart"], c.url(1));
    assert!(ok);
    assert!(out.contains("value: \"milk\""), "{out}");
    // A blind write makes a sibling; get shows both and says how to resolve.
    assert!(dyno(&["put", "t", "cart", "eggs"], c.url(2)).0);
    let (_, out, _) = dyno(&["get", "t", "cart", "--r", "3"], c.url(0));
    assert!(
        out.contains("2 siblings") && out.contains("\"milk\"") && out.contains("\"eggs\""),
        "{out}"
    );
    let merged = context_of(&out);
    assert_ne!(merged, ctx);
    assert!(
        dyno(
            &["put", "t", "cart", "milk+eggs", "--context", &merged],
            c.url(1)
        )
        .0
    );
    let (_, out, _) = dyno(&["get", "t", "cart", "--r", "3"], c.url(2));
    assert!(out.contains("value: \"milk+eggs\""), "{out}");
    let resolved = context_of(&out);
    assert!(dyno(&["delete", "t", "cart", "--context", &resolved], c.url(0)).0);
    let (_, out, _) = dyno(&["get", "t", "cart"], c.url(0));
    assert!(out.contains("not found"), "{out}");
    // Errors exit non-zero with the code.
    let (ok, _, err) = dyno(&["get", "missing", "k"], c.url(0));
    assert!(!ok && err.contains("TableNotFound"), "{err}");
    let (ok, _, err) = dyno(&["put", "t", "k", "v", "--if-match", "garbage"], c.url(0));
    assert!(!ok && err.contains("InvalidContext"), "{err}");
}

/// `dyno bench` runs end to end (closed and open loop, JSON, SVG) against a
/// one-node cluster. A smoke test: no performance assertion.
#[tokio::test(flavor = "multi_thread")]
async fn dyno_bench_smoke() {
    let c = Cluster::start(1, NodeOpts::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("chart");
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dyno"))
            .arg("bench")
            .env("DYNO_TOKEN", support::ADMIN_TOKEN)
            .args(&args)
            .output()
            .expect("run dyno bench");
        println!("{}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let base = |w: &str| {
        vec![
            "--url".to_owned(),
            c.url(0),
            "--workload".into(),
            w.into(),
            "--records".into(),
            "200".into(),
            "--clients".into(),
            "4".into(),
            "--duration".into(),
            "1".into(),
            "--quiet".into(),
            "--json".into(),
        ]
    };
    // Closed loop, workload F (read-modify-write), with a chart.
    let mut args = base("f");
    args.extend(["--svg".to_owned(), svg.display().to_string()]);
    let out = run(args);
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["load"]["ops"]["insert"]["count"], 200);
    let run0 = &report["runs"][0];
    assert_eq!(run0["mode"], "closed");
    assert!(run0["ops"]["rmw"]["count"].as_u64() > Some(0), "{run0}");
    assert!(run0["ops"]["read"]["count"].as_u64() > Some(0), "{run0}");
    assert_eq!(run0["overall"]["errors"], 0, "{run0}");
    let chart = std::fs::read_to_string(dir.path().join("chart-latency.svg")).expect("chart");
    assert!(chart.starts_with("<svg") && chart.contains("polyline"));

    // Open loop at a fixed rate, workload D (inserts, latest), no load,
    // after half a second of warm-up that the report leaves out.
    let mut args = base("d");
    args.extend([
        "--rate".to_owned(),
        "200".into(),
        "--skip-load".into(),
        "--warmup".into(),
        "0.5".into(),
    ]);
    let out = run(args);
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let run0 = &report["runs"][0];
    assert_eq!(run0["mode"], "open");
    assert_eq!(run0["target_rate"], 200.0);
    assert_eq!(report["runs"].as_array().map(Vec::len), Some(1));
    let done = run0["overall"]["count"].as_u64().unwrap_or(0);
    assert!(
        (100..=210).contains(&done),
        "about 200 requests in 1 s, got {done}"
    );
    assert!(run0["ops"]["insert"]["count"].as_u64() > Some(0));

    // The gRPC API, with per-request quorums.
    let mut args = base("b");
    args.extend(
        [
            "--target",
            "dyno-grpc",
            "--skip-load",
            "--r",
            "1",
            "--w",
            "1",
        ]
        .map(String::from),
    );
    let out = run(args);
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert!(
        report["target"]
            .as_str()
            .is_some_and(|t| t.contains("gRPC"))
    );
    let run0 = &report["runs"][0];
    assert!(run0["ops"]["read"]["count"].as_u64() > Some(0), "{run0}");
    assert_eq!(run0["overall"]["errors"], 0, "{run0}");

    // Bad input gets a clear error.
    let out = run(vec![
        "--target".into(),
        "bogus".into(),
        "--url".into(),
        c.url(0),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown --target"));
}
