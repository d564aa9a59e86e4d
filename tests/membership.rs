//! System tests for gossip, failure detection, anti-entropy, tombstone
//! garbage collection, and joins and decommissions under load.
//!
//! Real `dyno node` processes on loopback. Timing figures (time to
//! suspicion, repair throughput, movement ratios) are printed, never
//! asserted against a clock; bounds are on counts and bytes.

#[allow(dead_code)] // shared with the other system tests
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Cluster, NodeOpts, values};

fn node_entry<'a>(view: &'a Value, id: &str) -> Option<&'a Value> {
    view["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"].as_str() == Some(id))
}

/// True when node `i` sees every node in `ids` as up, with an address.
async fn sees_all_up(c: &Cluster, i: usize, ids: &[String]) -> bool {
    let view = c.admin(i, "/admin/v1/cluster").await;
    ids.iter().all(|id| {
        node_entry(&view, id).is_some_and(|n| {
            n["status"] == "up"
                && n["liveness"] == "up"
                && n["http"].as_str().is_some_and(|h| !h.is_empty())
        })
    })
}

/// Starts one more node (seeded from node 1) and waits until node 1 sees
/// it up; returns its index and id.
async fn add_known_node(c: &mut Cluster) -> (usize, String) {
    let i = c.add_node().await;
    let id = c.id(i);
    c.wait_for(
        || async {
            node_entry(&c.admin(0, "/admin/v1/cluster").await, &id)
                .is_some_and(|n| n["liveness"] == "up")
        },
        "node 1 to hear of the new node",
    )
    .await;
    (i, id)
}

/// Deletes a key through node `i` with the context of a read, as a client
/// that means to delete what it saw.
async fn delete(c: &Cluster, i: usize, key: &str) {
    let (s, b) = c.get(i, "t", key, "").await;
    assert_eq!(s, StatusCode::OK, "{key}: {b}");
    let ctx = b["context"].as_str().expect("context").to_owned();
    let r = c
        .http
        .delete(format!("{}/v1/tables/t/items/{key}", c.url(i)))
        .header("x-dyno-context", ctx)
        .send()
        .await
        .expect("delete");
    assert!(r.status().is_success(), "delete {key}: {}", r.status());
}

fn ids(c: &Cluster) -> Vec<String> {
    (0..c.len()).map(|i| c.id(i)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn gossip_converges_from_one_seed() {
    let opts = NodeOpts {
        seed_only: true,
        extra: vec!["--gossip-interval-ms".into(), "300".into()],
        ..NodeOpts::default()
    };
    let c = Cluster::start(5, opts).await;
    let all = ids(&c);
    let started = Instant::now();
    for i in 0..5 {
        c.wait_for(|| sees_all_up(&c, i, &all), "every node to see all five up")
            .await;
    }
    println!(
        "five nodes converged from one seed in {} ms",
        started.elapsed().as_millis()
    );
    // They agree on the ring, and a table created on one node serves on all.
    let epochs: Vec<u64> = {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(
                c.admin(i, "/admin/v1/cluster").await["ring"]["epoch"]
                    .as_u64()
                    .unwrap_or(0),
            );
        }
        v
    };
    assert!(
        epochs.iter().all(|&e| e == epochs[0] && e > 0),
        "{epochs:?}"
    );
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    for i in 0..5 {
        let key = format!("k{i}");
        let (s, b) = c.put(i, "t", &key, b"v", &[]).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = c.get((i + 2) % 5, "t", &key, "").await;
        assert_eq!((s, values(&b)), (StatusCode::OK, vec!["v".to_owned()]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_node_is_suspected_routed_around_and_gets_its_hints() {
    let mut c = Cluster::start(3, NodeOpts::default()).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    let all = ids(&c);
    for i in 0..3 {
        c.wait_for(|| sees_all_up(&c, i, &all), "all up").await;
    }
    c.kill(2);
    let killed = Instant::now();
    c.wait_for(
        || async {
            let v = c.admin(0, "/admin/v1/cluster").await;
            node_entry(&v, "n3")
                .is_some_and(|n| n["liveness"] == "suspect" && n["status"] == "down")
        },
        "n1 to suspect n3",
    )
    .await;
    let suspected_ms = killed.elapsed().as_millis();
    println!("n3 suspected by n1 {suspected_ms} ms after SIGKILL");
    // Routed around: writes at W=2 succeed, and n3's share becomes hints.
    for k in 0..30 {
        let (s, b) = c
            .put(
                k % 2,
                "t",
                &format!("k{k}"),
                format!("v{k}").as_bytes(),
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let backlog = c.hint_backlog("n3").await;
    assert!(backlog > 0, "hints are kept for n3");
    c.restart(2).await;
    c.wait_for(|| sees_all_up(&c, 0, &all), "n1 to see n3 up again")
        .await;
    c.wait_long(
        60,
        || async { c.hint_backlog("n3").await == 0 },
        "n3's hints to drain",
    )
    .await;
    for k in 0..30 {
        assert_eq!(
            c.local_values(2, "t", &format!("k{k}")).await,
            vec![format!("v{k}")],
            "n3 holds k{k} after hint delivery"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_node_is_suspected_by_phi_alone() {
    // A frozen process refuses nothing: only missing heartbeats reveal it.
    let c = Cluster::start(3, NodeOpts::default()).await;
    let all = ids(&c);
    c.wait_for(|| sees_all_up(&c, 0, &all), "all up").await;
    // Let the detectors learn the heartbeat rhythm for a few rounds.
    c.wait_for(
        || async {
            let v = c.admin(0, "/admin/v1/cluster").await;
            node_entry(&v, "n3").and_then(|n| n["heartbeat"].as_u64()) >= Some(5)
        },
        "a few heartbeats",
    )
    .await;
    c.freeze(2, true);
    let frozen = Instant::now();
    let n3 = c
        .poll(
            30,
            || async {
                let v = c.admin(0, "/admin/v1/cluster").await;
                node_entry(&v, "n3")
                    .filter(|n| n["liveness"] == "suspect")
                    .cloned()
            },
            "n1 to suspect the frozen n3",
        )
        .await;
    let phi_seen = n3["phi"].as_f64().unwrap_or(0.0);
    println!(
        "frozen n3 suspected by n1 after {} ms (phi {phi_seen})",
        frozen.elapsed().as_millis()
    );
    assert!(phi_seen >= 8.0, "suspected by phi, not by a refusal");
    c.freeze(2, false);
    c.wait_for(|| sees_all_up(&c, 0, &all), "n3 up again after it thaws")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anti_entropy_repairs_a_wiped_node_and_sends_only_differences() {
    let opts = NodeOpts {
        hint_max_bytes: Some(0),
        extra: support::fast_aae_args(),
        ..NodeOpts::default()
    };
    let mut c = Cluster::start(3, opts).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 3})).await;
    let value = vec![b'x'; 1024];
    let keys = 400;
    for k in 0..keys {
        let (s, b) = c.put(k % 3, "t", &format!("k{k}"), &value, &[]).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let dataset_bytes = (keys * value.len()) as u64;

    c.kill(2);
    c.wipe(2);
    c.restart(2).await;
    let all = ids(&c);
    c.wait_for(|| sees_all_up(&c, 2, &all), "n3 to see everyone")
        .await;
    // Seeing everyone up is not enough for a pass to compare anything: the
    // wiped node must also have learned the ring and the table again (by
    // gossip and catalog sync), or its pass has nothing to compare.
    c.wait_for(
        || async {
            let v = c.admin(2, "/admin/v1/cluster").await;
            let t = c.admin(2, "/admin/v1/tables/t").await;
            v["ring"]["members"].as_array().map(Vec::len) == Some(3) && t["n"] == 3
        },
        "n3 to know the ring and the table again",
    )
    .await;
    assert!(
        c.local_values(2, "t", "k0").await.is_empty(),
        "n3 starts empty"
    );
    let started = Instant::now();
    let report = c.repair(2).await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wiped node: repaired {} keys, received {} bytes, sent {} bytes in {secs:.2} s ({:.0} keys/s)",
        report["keys_repaired"],
        report["bytes_received"],
        report["bytes_sent"],
        report["keys_repaired"].as_f64().unwrap_or(0.0) / secs
    );
    assert!(
        report["keys_repaired"].as_u64().unwrap_or(0) >= keys as u64,
        "{report}"
    );
    for k in 0..keys {
        let key = format!("k{k}");
        let theirs = c.local_values(0, "t", &key).await;
        assert_eq!(
            c.local_values(2, "t", &key).await,
            theirs,
            "{key} on n3 matches n1"
        );
    }

    // Now only a few keys differ: n3 misses five writes (no hints).
    c.kill(2);
    for k in 0..5 {
        let (s, b) = c
            .http
            .put(format!("{}/v1/tables/t/items/k{k}?w=2", c.url(0)))
            .body("new")
            .send()
            .await
            .map(|r| (r.status(), ()))
            .expect("put");
        assert_eq!(s, StatusCode::OK, "{b:?}");
    }
    c.restart(2).await;
    c.wait_for(|| sees_all_up(&c, 2, &all), "n3 to see everyone")
        .await;
    let report = c.repair(2).await;
    let moved =
        report["bytes_sent"].as_u64().unwrap_or(0) + report["bytes_received"].as_u64().unwrap_or(0);
    println!(
        "five stale keys: repaired {} keys, compared {}, moved {moved} bytes of a {dataset_bytes}-byte dataset",
        report["keys_repaired"], report["keys_compared"]
    );
    assert!(
        report["keys_repaired"].as_u64().unwrap_or(0) >= 5,
        "{report}"
    );
    assert!(
        moved * 20 < dataset_bytes,
        "repair moved {moved} bytes: not far less than the dataset"
    );
    for k in 0..5 {
        let key = format!("k{k}");
        let theirs = c.local_values(0, "t", &key).await;
        assert!(theirs.contains(&"new".to_owned()));
        assert_eq!(
            c.local_values(2, "t", &key).await,
            theirs,
            "{key} on n3 matches n1"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_keys_stay_deleted_through_repair_and_tombstone_gc() {
    let mut extra = support::fast_aae_args();
    extra.extend(["--tombstone-grace-secs", "2", "--hint-max-age-secs", "1"].map(String::from));
    let opts = NodeOpts {
        hint_max_bytes: Some(0),
        extra,
        ..NodeOpts::default()
    };
    let mut c = Cluster::start(3, opts).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    for k in 0..20 {
        let (s, b) = c.put(0, "t", &format!("k{k}"), b"alive", &[]).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    // Let every replica have every write before n3 goes away.
    for i in 0..3 {
        c.repair(i).await;
    }
    c.kill(2);
    for k in 0..10 {
        delete(&c, 0, &format!("k{k}")).await;
    }
    // Past the grace period, but n3 (holding the old values) is down: no
    // tombstone may be collected.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let r = c.repair(0).await;
    assert_eq!(
        r["tombstones_dropped"], 0,
        "collected while a replica was down: {r}"
    );
    assert_eq!(
        c.local_values(2, "t", "k0").await,
        Vec::<String>::new(),
        "n3 is down"
    );

    c.restart(2).await;
    let all = ids(&c);
    c.wait_for(|| sees_all_up(&c, 0, &all), "n3 up").await;
    // The tombstones reach n3 by anti-entropy, then every first primary
    // collects its partitions' tombstones.
    let mut dropped = 0;
    for round in 0..3 {
        for i in 0..3 {
            let r = c.repair(i).await;
            dropped += r["tombstones_dropped"].as_u64().unwrap_or(0);
        }
        println!("round {round}: {dropped} tombstones collected so far");
        if dropped >= 10 {
            break;
        }
    }
    assert!(
        dropped >= 10,
        "every tombstone is collected once all replicas hold it"
    );
    for k in 0..20 {
        let key = format!("k{k}");
        let (s, b) = c.get(1, "t", &key, "?r=3").await;
        if k < 10 {
            assert_eq!(s, StatusCode::NOT_FOUND, "{key} came back: {b}");
            for i in 0..3 {
                let body = c
                    .admin(i, &format!("/admin/v1/tables/t/keys/{key}/replica"))
                    .await;
                assert_eq!(body["exists"], false, "{key} still stored on n{}", i + 1);
            }
        } else {
            assert_eq!((s, values(&b)), (StatusCode::OK, vec!["alive".to_owned()]));
        }
    }
    // And nothing comes back on later passes.
    for i in 0..3 {
        c.repair(i).await;
    }
    for k in 0..10 {
        let (s, _) = c.get(2, "t", &format!("k{k}"), "?r=3").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}

/// The cluster view of node `i` once no ring change is under way and the
/// epoch is at least `epoch`.
async fn wait_settled(c: &Cluster, i: usize, epoch: u64, what: &str) -> Value {
    c.poll(
        180,
        || async move {
            let v = c.admin(i, "/admin/v1/cluster").await;
            let ok =
                v["ring"]["epoch"].as_u64().is_some_and(|e| e >= epoch) && v["change"].is_null();
            ok.then_some(v)
        },
        what,
    )
    .await
}

fn handoff_bytes(view: &Value, id: &str, epoch: u64) -> u64 {
    node_entry(view, id)
        .filter(|n| n["handoff"]["epoch"].as_u64() == Some(epoch))
        .and_then(|n| n["handoff"]["bytes"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn join_and_decommission_under_write_load_lose_nothing() {
    let seed = support::test_seed();
    println!("seed {seed} (replay with DYNO_TEST_SEED={seed})");
    let mut c = Cluster::start(
        3,
        NodeOpts {
            extra: support::fast_aae_args(),
            ..NodeOpts::default()
        },
    )
    .await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    let value = vec![b'v'; 512];
    for k in 0..600 {
        let (s, b) = c.put(k % 3, "t", &format!("k{k}"), &value, &[]).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    for k in 0..20 {
        delete(&c, 0, &format!("k{k}")).await;
    }

    // Writers: each owns its keys and writes sequentially with the context
    // of its last acknowledged write, so the last acknowledged value of
    // each key is known.
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = (0..3).map(|i| c.url(i)).collect();
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let (stop, urls, http) = (Arc::clone(&stop), urls.clone(), c.http.clone());
        writers.push(tokio::spawn(async move {
            let mut acked: BTreeMap<String, String> = BTreeMap::new();
            let mut ctx: BTreeMap<String, String> = BTreeMap::new();
            let mut x = seed.wrapping_add(w).wrapping_mul(6364136223846793005) | 1;
            let mut i = 0u64;
            let mut failures = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = format!("w{w}-{}", x % 50);
                let val = format!("{w}-{i}");
                i += 1;
                let url = &urls[(x >> 20) as usize % urls.len()];
                let mut req = http
                    .put(format!("{url}/v1/tables/t/items/{key}"))
                    .body(val.clone());
                if let Some(c) = ctx.get(&key) {
                    req = req.header("x-dyno-context", c);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        if let Some(c) = body["context"].as_str() {
                            ctx.insert(key.clone(), c.to_owned());
                        }
                        acked.insert(key, val);
                    }
                    Ok(r) => {
                        failures += 1;
                        let status = r.status();
                        eprintln!(
                            "writer {w}: {key} failed: {status} {}",
                            r.text().await.unwrap_or_default()
                        );
                    }
                    Err(e) => {
                        failures += 1;
                        eprintln!("writer {w}: {key} failed: {e}");
                    }
                }
            }
            (acked, failures)
        }));
    }

    // Join a fourth node.
    let (n4, n4_id) = add_known_node(&mut c).await;
    let (s, join) = c
        .post(0, "/admin/v1/cluster/join", json!({"node": n4_id}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{join}");
    let join_epoch = join["epoch"].as_u64().expect("epoch");
    let (s, busy) = c
        .post(1, "/admin/v1/cluster/decommission", json!({"node": "n2"}))
        .await;
    // Sent to n2, forwarded to n1 (which begins ring changes), refused there.
    assert_eq!(s, StatusCode::CONFLICT, "one change at a time: {busy}");
    assert_eq!(busy["error"]["code"], "RingChangeInProgress", "{busy}");
    let view = wait_settled(&c, 0, join_epoch + 1, "the join to commit").await;
    let n4_view = wait_settled(&c, n4, join_epoch + 1, "n4 to apply the join").await;
    let streamed = handoff_bytes(&view, &n4_id, join_epoch);
    let held = node_entry(&n4_view, &n4_id)
        .and_then(|n| n["bytes"].as_u64())
        .unwrap_or(0);
    let others: u64 = (1..=3)
        .map(|i| handoff_bytes(&view, &format!("n{i}"), join_epoch))
        .sum();
    println!(
        "join: moved {} of {} partition replicas (minimum {}), streamed {streamed} bytes for {held} bytes held by n4: ratio {:.3}",
        join["partition_replicas_to_move"],
        join["partition_replicas_total"],
        join["partition_replicas_total"].as_u64().unwrap_or(0) / 4,
        streamed as f64 / held.max(1) as f64
    );
    assert_eq!(
        join["partition_replicas_to_move"].as_u64(),
        Some(join["partition_replicas_total"].as_u64().unwrap_or(0) / 4)
    );
    assert_eq!(others, 0, "only the new node receives data in a join");
    let ratio = streamed as f64 / held.max(1) as f64;
    assert!(
        (0.8..=1.25).contains(&ratio),
        "streamed {streamed}, held {held}"
    );

    // The old owners drop what moved to n4 once every node applied the
    // commit; then n2's load is what its decommission must move.
    let n2_view = c
        .poll(
            60,
            || async {
                let v = c.admin(1, "/admin/v1/cluster").await;
                let done =
                    v["drop_pending"] == false && v["handoff"]["items_dropped"].as_u64() > Some(0);
                done.then_some(v)
            },
            "n2 to drop the partitions n4 took",
        )
        .await;
    let n2_before = node_entry(&n2_view, "n2")
        .and_then(|n| n["bytes"].as_u64())
        .unwrap_or(0);
    let (s, leave) = c
        .post(2, "/admin/v1/cluster/decommission", json!({"node": "n2"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{leave}");
    let leave_epoch = leave["epoch"].as_u64().expect("epoch");
    let view = wait_settled(&c, 0, leave_epoch + 1, "the decommission to commit").await;
    c.wait_long(
        60,
        || async {
            node_entry(&c.admin(0, "/admin/v1/cluster").await, "n2")
                .is_some_and(|n| n["status"] == "left")
        },
        "n2 to report that it left",
    )
    .await;
    let streamed: u64 = ids(&c)
        .iter()
        .map(|id| handoff_bytes(&view, id, leave_epoch))
        .sum();
    println!(
        "decommission: moved {} partition replicas, streamed {streamed} bytes for the {n2_before} bytes n2 held: ratio {:.3}",
        leave["partition_replicas_to_move"],
        streamed as f64 / n2_before.max(1) as f64
    );
    let ratio = streamed as f64 / n2_before.max(1) as f64;
    assert!(
        (0.8..=1.25).contains(&ratio),
        "streamed {streamed}, n2 held {n2_before}"
    );

    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    let mut failures = 0;
    for w in writers {
        let (a, f) = w.await.expect("writer");
        acked.extend(a);
        failures += f;
    }
    println!(
        "{} keys written under load ({failures} writes failed and were not acknowledged)",
        acked.len()
    );
    assert!(acked.len() >= 50, "the writers made progress");
    for (key, val) in &acked {
        let (s, b) = c.get(0, "t", key, "?r=2").await;
        assert_eq!(s, StatusCode::OK, "{key}: {b}");
        assert!(
            values(&b).contains(val),
            "{key}: acknowledged {val}, read {:?}",
            values(&b)
        );
    }
    for k in 0..600 {
        let (s, b) = c.get(3, "t", &format!("k{k}"), "?r=2").await;
        if k < 20 {
            assert_eq!(s, StatusCode::NOT_FOUND, "deleted k{k} came back: {b}");
        } else {
            assert_eq!(s, StatusCode::OK, "k{k}: {b}");
        }
    }
    // n2 holds nothing any more.
    assert_eq!(
        node_entry(&c.admin(0, "/admin/v1/cluster").await, "n2")
            .and_then(|n| n["partitions"].as_u64()),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_join_can_be_aborted() {
    let mut c = Cluster::start(3, NodeOpts::default()).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    for k in 0..50 {
        let (s, b) = c.put(k % 3, "t", &format!("k{k}"), b"v", &[]).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (n4, n4_id) = add_known_node(&mut c).await;
    // Freeze n4, then join it at once (before φ suspects it): it can never
    // pull its partitions, so the change cannot commit.
    c.freeze(n4, true);
    let (s, join) = c
        .post(1, "/admin/v1/cluster/join", json!({"node": n4_id}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{join}");
    let epoch = join["epoch"].as_u64().expect("epoch");
    // The cluster keeps serving while the change is stuck.
    let (s, b) = c.put(0, "t", "during", b"stuck", &[]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = c.post(2, "/admin/v1/cluster/abort", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["epoch"].as_u64(), Some(epoch + 1));
    let (s, b) = c.post(0, "/admin/v1/cluster/abort", json!({})).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("NoRingChange"))
    );
    let v = wait_settled(&c, 0, epoch + 1, "the abort to apply").await;
    assert_eq!(
        node_entry(&v, &n4_id).and_then(|n| n["partitions"].as_u64()),
        Some(0),
        "n4 owns nothing after the abort"
    );
    // Thawed, n4 learns the abort and drops whatever it received.
    c.freeze(n4, false);
    c.poll(
        60,
        || async {
            let v = c.admin(n4, "/admin/v1/cluster").await;
            let settled = v["ring"]["epoch"].as_u64() >= Some(epoch + 1)
                && v["drop_pending"] == false
                && node_entry(&v, &n4_id).and_then(|n| n["keys"].as_u64()) == Some(0);
            settled.then_some(v)
        },
        "n4 to apply the abort and hold nothing",
    )
    .await;
    // Nothing was lost, and the ring can change again.
    for k in 0..50 {
        let (s, b) = c.get(2, "t", &format!("k{k}"), "?r=2").await;
        assert_eq!((s, values(&b)), (StatusCode::OK, vec!["v".to_owned()]));
    }
    let (s, b) = c.get(1, "t", "during", "?r=2").await;
    assert_eq!((s, values(&b)), (StatusCode::OK, vec!["stuck".to_owned()]));
    let (s, join) = c
        .post(0, "/admin/v1/cluster/join", json!({"node": n4_id}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{join}");
    let epoch = join["epoch"].as_u64().expect("epoch");
    wait_settled(&c, 0, epoch + 1, "the second join to commit").await;
}

/// A node started with `--zone` gossips it, a join without a zone takes
/// it into the ring, and the cluster view shows it; a malformed zone in a
/// join request is refused with 400 before any change begins. The view
/// also sums up the tables' replication settings.
#[tokio::test]
async fn a_nodes_zone_reaches_the_ring_through_gossip() {
    let mut c = Cluster::start(3, NodeOpts::default()).await;
    c.create_table("a", json!({"n": 3, "r": 2, "w": 2})).await;
    c.create_table("b", json!({"n": 3, "r": 2, "w": 2})).await;
    c.create_table("c", json!({"n": 2, "r": 1, "w": 1})).await;
    let i = c.add_node_with(&["--zone", "eu-west-1b"]).await;
    let id = c.id(i);
    c.wait_for(
        || async {
            node_entry(&c.admin(0, "/admin/v1/cluster").await, &id)
                .is_some_and(|n| n["liveness"] == "up" && n["zone"] == "eu-west-1b")
        },
        "node 1 to hear of the new node and its zone",
    )
    .await;
    let (s, b) = c
        .post(
            0,
            "/admin/v1/cluster/join",
            json!({"node": id, "zone": "no spaces"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "InvalidRequest");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid zone"),
        "{b}"
    );
    let before = c.admin(0, "/admin/v1/cluster").await["ring"]["epoch"].as_u64();
    let (s, join) = c
        .post(0, "/admin/v1/cluster/join", json!({"node": id}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{join}");
    let epoch = join["epoch"].as_u64().expect("epoch");
    assert_eq!(
        Some(epoch),
        before.map(|e| e + 1),
        "the refused join began nothing"
    );
    let v = wait_settled(&c, 0, epoch + 1, "the join to commit").await;
    let entry = node_entry(&v, &id).expect("joined node");
    assert_eq!(entry["zone"], "eu-west-1b", "{entry}");
    assert_eq!(entry["status"], "up");
    assert!(node_entry(&v, &c.id(0)).is_some_and(|n| n["zone"].is_null()));
    // The replication settings in use, for an operator's budget.
    assert_eq!(
        v["replication"],
        json!([
            { "n": 2, "r": 1, "w": 1, "tables": 1 },
            { "n": 3, "r": 2, "w": 2, "tables": 2 },
        ]),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_joining_node_has_every_table_before_it_owns_data() {
    let mut c = Cluster::start(3, NodeOpts::default()).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    let (n4, id) = add_known_node(&mut c).await;
    let (s, join) = c
        .post(0, "/admin/v1/cluster/join", json!({"node": id}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{join}");
    // Before the join, the change leader gave n4 the catalog: with no wait
    // for the periodic catalog sync, n4 knows the table as soon as the
    // join is accepted, and so never refuses a write sent to it during or
    // after the change as `TableNotFound`.
    let resp = c
        .http
        .get(format!("{}/admin/v1/tables/t", c.url(n4)))
        .send()
        .await
        .expect("get table");
    assert_eq!(resp.status(), StatusCode::OK, "n4 lacks table t");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sole_member_takes_a_zone_without_moving_data() {
    let mut c = Cluster::start(1, NodeOpts::default()).await;
    c.create_table("t", json!({"n": 1, "r": 1, "w": 1})).await;
    let (s, b) = c.put(0, "t", "k", b"v", &[]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let before = c.admin(0, "/admin/v1/cluster").await;
    let epoch = before["ring"]["epoch"].as_u64().expect("epoch");
    let (s, b) = c
        .post(
            0,
            "/admin/v1/cluster/zone",
            json!({"node": "n1", "zone": "no spaces"}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("InvalidRequest")),
        "{b}"
    );
    let (s, b) = c
        .post(
            0,
            "/admin/v1/cluster/zone",
            json!({"node": "n1", "zone": "eu-1a"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["epoch"].as_u64(), Some(epoch + 1));
    assert_eq!(b["partition_replicas_to_move"].as_u64(), Some(0));
    let after = c.admin(0, "/admin/v1/cluster").await;
    assert_eq!(
        node_entry(&after, "n1").map(|n| n["zone"].clone()),
        Some(json!("eu-1a"))
    );
    assert_eq!(
        node_entry(&after, "n1").map(|n| n["partition_ids"].clone()),
        node_entry(&before, "n1").map(|n| n["partition_ids"].clone()),
        "nothing moved"
    );
    let (s, b) = c.get(0, "t", "k", "").await;
    assert_eq!((s, values(&b)), (StatusCode::OK, vec!["v".to_owned()]));

    // With a second member, a zone would move data: refused.
    let i = c.add_node_with(&["--zone", "eu-1b"]).await;
    let id = c.id(i);
    c.wait_for(
        || async {
            node_entry(&c.admin(0, "/admin/v1/cluster").await, &id)
                .is_some_and(|n| n["liveness"] == "up")
        },
        "n1 to hear of n2",
    )
    .await;
    let (s, join) = c
        .post(0, "/admin/v1/cluster/join", json!({"node": id}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{join}");
    let joined = join["epoch"].as_u64().expect("epoch") + 1;
    let v = wait_settled(&c, 0, joined, "the join to commit").await;
    let zones: Vec<Value> = ["n1", "n2"]
        .iter()
        .map(|n| node_entry(&v, n).map_or(Value::Null, |n| n["zone"].clone()))
        .collect();
    assert_eq!(zones, [json!("eu-1a"), json!("eu-1b")]);
    let (s, b) = c
        .post(
            0,
            "/admin/v1/cluster/zone",
            json!({"node": "n1", "zone": "eu-1c"}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("InvalidRingChange")),
        "{b}"
    );
}

/// Damaged items node `i` found and set aside.
async fn damaged(c: &Cluster, i: usize) -> Option<u64> {
    c.admin(i, "/admin/v1/storage").await["damaged"]["items"].as_u64()
}

/// A flipped bit in a stored item (fault injection, as a bad disk would
/// do) is caught by the record's checksum: the damaged copy is never
/// served and never stops the node; it is set aside, counted, and restored
/// from the other replicas. Damage to an item nobody reads is found by the
/// scrub and repaired the same way.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_item_is_never_served_and_is_restored_from_other_replicas() {
    let mut extra = support::fast_aae_args();
    extra.extend(
        ["--fault-injection", "--scrub-interval-secs", "1"]
            .iter()
            .map(|s| s.to_string()),
    );
    let opts = NodeOpts {
        extra,
        ..NodeOpts::default()
    };
    let c = Cluster::start(3, opts).await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 3})).await;
    for k in 0..50 {
        let (s, b) = c
            .put(
                0,
                "t",
                &format!("k{k}"),
                format!("value {k}").as_bytes(),
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    assert_eq!(damaged(&c, 2).await, Some(0));

    // Damage k7 on n3, then read it through n3 (its own copy is one of
    // the two replies it waits for).
    let before = c.local_values(2, "t", "k7").await;
    assert_eq!(before, vec!["value 7".to_owned()]);
    let (s, b) = c
        .post(
            2,
            "/admin/v1/faults/tables/t/keys/k7/damage?bit=99",
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["damaged"], true);
    for _ in 0..5 {
        let (s, b) = c.get(2, "t", "k7", "").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(
            values(&b),
            vec!["value 7".to_owned()],
            "never the damaged copy"
        );
    }
    assert_eq!(damaged(&c, 2).await, Some(1), "counted once");
    // Read repair (the next reads find n3's copy absent) or anti-entropy
    // (n3's tree no longer counts it) restores it.
    c.repair(2).await;
    c.wait_for(
        || async { c.local_values(2, "t", "k7").await == before },
        "n3's copy of k7 to be restored",
    )
    .await;

    // Damage k8, which nobody reads: the scrub finds it.
    let before = c.local_values(2, "t", "k8").await;
    let (s, b) = c
        .post(
            2,
            "/admin/v1/faults/tables/t/keys/k8/damage?bit=5",
            json!({}),
        )
        .await;
    assert_eq!((s, &b["damaged"]), (StatusCode::OK, &json!(true)), "{b}");
    c.wait_for(
        || async { damaged(&c, 2).await == Some(2) },
        "the scrub to find the damage to k8",
    )
    .await;
    let report = c.repair(2).await;
    println!("after the scrub found k8: repair {report}");
    assert!(report["keys_repaired"].as_u64() >= Some(1), "{report}");
    assert_eq!(c.local_values(2, "t", "k8").await, before, "k8 restored");

    let metrics = c.metrics(2).await;
    assert!(
        metrics.contains("dyno_damaged_items_total 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("damaged"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every other key is untouched everywhere.
    for k in (0..50).filter(|k| ![7, 8].contains(k)) {
        let key = format!("k{k}");
        assert_eq!(
            c.local_values(2, "t", &key).await,
            vec![format!("value {k}")]
        );
    }
}

/// A node restarted without seeds (the first node of a cluster, as the
/// operator runs it: the others seed from it) reaches its peers at once
/// from the addresses it remembered, instead of failing the quorum reads
/// it coordinates until one of them gossips to it.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_first_node_reaches_its_peers_at_once() {
    let opts = NodeOpts {
        seed_only: true,
        ..NodeOpts::default()
    };
    let mut c = Cluster::start(3, opts).await;
    let all = ids(&c);
    for i in 0..3 {
        c.wait_for(|| sees_all_up(&c, i, &all), "every node to see every node")
            .await;
    }
    c.create_table("t", json!({"n": 3, "r": 2, "w": 3})).await;
    let (s, b) = c.put(0, "t", "k", b"v", &[]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    c.kill(0);
    c.restart(0).await;
    // Straight after its health check, before any gossip round: a read
    // that needs both peers.
    let (s, b) = c.get(0, "t", "k", "?r=3").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(values(&b), vec!["v".to_owned()]);
}

/// A write forwarded to a coordinator that does not answer in time is not
/// coordinated again elsewhere: the first coordinator may be merely paused
/// and apply it when it wakes, and two applications would leave the value
/// twice, under two dots (the late one coming back after the client had
/// overwritten the first). Found by the nemesis test (seed 834426: a
/// superseded value back as a sibling). The client is told the outcome is
/// unknown instead, and the value is stored once.
#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_forward_is_not_applied_twice() {
    let c = Cluster::start(2, NodeOpts::default()).await;
    c.create_table("t", json!({"n": 1, "r": 1, "w": 1})).await;
    // A key whose only replica is n2, written through n1.
    let mut key = String::new();
    for i in 0..64 {
        let k = format!("k{i}");
        let pl = c
            .admin(0, &format!("/admin/v1/tables/t/keys/{k}/preference-list"))
            .await;
        if pl["nodes"][0]["id"] == "n2" {
            key = k;
            break;
        }
    }
    assert!(!key.is_empty(), "one of 64 keys belongs to n2");
    c.freeze(1, true);
    let (s, b) = c.put(0, "t", &key, b"once", &[]).await;
    c.freeze(1, false);
    println!("write forwarded to a frozen coordinator: {s} {b}");
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(b["error"]["code"], "QuorumNotMet", "{b}");
    // The thawed n2 applies it; nothing else does.
    c.wait_for(
        || async { !c.local_values(1, "t", &key).await.is_empty() },
        "n2 to apply the write it received while frozen",
    )
    .await;
    c.wait_for(
        || async { c.hint_backlog("n2").await == 0 },
        "no hint left for n2",
    )
    .await;
    let (s, b) = c.get(0, "t", &key, "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(values(&b), vec!["once".to_owned()], "stored once: {b}");
}
