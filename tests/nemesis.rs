//! Nemesis: a random schedule of faults against five real `dyno node`
//! processes on loopback, under a concurrent workload whose history is
//! checked afterwards (`nemesis/history.rs`: no acknowledged write lost, no
//! resurrection, no phantom values, concurrent siblings, and every replica
//! of every key equal after healing; on a last-writer-wins table, one value
//! per key, never one an acknowledged write that began later should have
//! replaced).
//!
//! Faults, one at a time, each held for 1 to 3 s: a partition of the nodes
//! into two sides (dropped calls both ways, through the nodes'
//! `--fault-injection` link faults), a one-way link failure, a slow node
//! (its calls delayed), a paused process (SIGSTOP, then SIGCONT), a killed
//! process (SIGKILL, then restart), and at most once a node whose data
//! directory is wiped before it restarts (a lost disk; W=2 keeps a second
//! copy of every acknowledged write).
//!
//! The schedule comes from a seed (printed; `DYNO_NEMESIS_SEED` replays
//! it); the interleaving of real processes does not replay exactly. CI runs
//! 30 s of faults; `scripts/nemesis --minutes M` runs longer
//! (`DYNO_NEMESIS_SECS`).

#[allow(dead_code)] // shared with the other system tests
mod support;

#[path = "nemesis/history.rs"]
mod history;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use history::{Op, OpKind, Outcome, Rng, Violation};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Cluster, NodeOpts};

const NODES: usize = 5;
const HOT_KEYS: u64 = 4;
const COLD_KEYS: u64 = 200;
const CLIENTS: usize = 6;
/// Keys of the last-writer-wins table `l`.
const LWW_KEYS: u64 = 4;
/// How far apart two writes must be for the later to carry the higher
/// timestamp, allowing for the order in which clocks are read.
const LWW_SLACK_MS: u64 = 20;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Which nodes take client requests now (not killed, not paused).
type Serving = Arc<Mutex<Vec<bool>>>;

fn decode_values(body: &Value) -> BTreeSet<String> {
    body["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

fn outcome_of(status: StatusCode) -> Outcome {
    match status.as_u16() {
        200 => Outcome::Ok,
        400 | 404 | 409 | 412 | 413 => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// One client: reads, read-then-writes, blind and conditional puts, and
/// deletes, on hot and cold keys, through any serving node.
#[allow(clippy::too_many_arguments)]
async fn client(
    id: usize,
    seed: u64,
    began: Instant,
    http: reqwest::Client,
    urls: Vec<String>,
    serving: Serving,
    stop: Arc<AtomicBool>,
) -> Vec<Op> {
    let mut rng = Rng(seed ^ ((id as u64 + 1) << 32));
    let mut ops = Vec::new();
    let mut seq = 0u64;
    let timeout = Duration::from_secs(3);
    while !stop.load(Ordering::Relaxed) {
        let up: Vec<usize> = {
            let s = serving.lock().expect("serving");
            (0..s.len()).filter(|&i| s[i]).collect()
        };
        if up.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let url = &urls[up[rng.below(up.len() as u64) as usize]];
        let ms = || began.elapsed().as_millis() as u64;
        seq += 1;
        if rng.chance(15) {
            // A blind put to the last-writer-wins table.
            let key = format!("lww{}", rng.below(LWW_KEYS));
            let value = format!("c{id}-{seq}");
            let sent = ms();
            let outcome = match http
                .put(format!("{url}/v1/tables/l/items/{key}"))
                .body(value.clone())
                .timeout(timeout)
                .send()
                .await
            {
                Ok(resp) => outcome_of(resp.status()),
                Err(_) => Outcome::Unknown,
            };
            ops.push(Op {
                key,
                kind: OpKind::Put { value, saw: None },
                outcome,
                span: (sent, ms()),
            });
            continue;
        }
        let key = if rng.chance(50) {
            format!("hot{}", rng.below(HOT_KEYS))
        } else {
            format!("cold{}", rng.below(COLD_KEYS))
        };
        let item = format!("{url}/v1/tables/t/items/{key}");
        let value = format!("c{id}-{seq}");
        let choice = rng.below(100);
        // Every write but the blind ones reads first, for its context.
        let mut context: Option<(String, BTreeSet<String>)> = None;
        if choice < 65 {
            let sent = ms();
            let read = http.get(&item).timeout(timeout).send().await;
            let Ok(resp) = read else { continue };
            let status = resp.status();
            let ctx = resp
                .headers()
                .get("x-dyno-context")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status != StatusCode::OK && status != StatusCode::NOT_FOUND {
                continue;
            }
            let values = decode_values(&body);
            ops.push(Op {
                key: key.clone(),
                kind: OpKind::Read {
                    values: values.clone(),
                },
                outcome: Outcome::Ok,
                span: (sent, ms()),
            });
            let ctx = body["context"].as_str().map(str::to_owned).or(ctx);
            match ctx {
                Some(c) if !c.is_empty() => context = Some((c, values)),
                _ if status == StatusCode::NOT_FOUND => context = None,
                _ => continue,
            }
            if choice < 20 {
                continue; // a plain read
            }
        }
        let (kind, req) = match (choice, context) {
            // Delete what was read.
            (55..65, Some((ctx, saw))) if !saw.is_empty() => (
                OpKind::Delete { saw },
                http.delete(&item).header("x-dyno-context", ctx),
            ),
            (55..65, _) => continue,
            // Read-modify-write: supersede what was read.
            (20..55, Some((ctx, saw))) => (
                OpKind::Put {
                    value: value.clone(),
                    saw: Some(saw),
                },
                http.put(&item)
                    .header("x-dyno-context", ctx)
                    .body(value.clone()),
            ),
            // Read found nothing: a write with no context supersedes nothing.
            (20..55, None) => (
                OpKind::Put {
                    value: value.clone(),
                    saw: None,
                },
                http.put(&item).body(value.clone()),
            ),
            // Create only if absent.
            (65..80, _) => (
                OpKind::Put {
                    value: value.clone(),
                    saw: None,
                },
                http.put(&item)
                    .header("if-none-match", "*")
                    .body(value.clone()),
            ),
            // A blind put: a sibling of whatever is there.
            _ => (
                OpKind::Put {
                    value: value.clone(),
                    saw: None,
                },
                http.put(&item).body(value.clone()),
            ),
        };
        let sent = ms();
        let outcome = match req.timeout(timeout).send().await {
            Ok(resp) => outcome_of(resp.status()),
            Err(_) => Outcome::Unknown,
        };
        ops.push(Op {
            key,
            kind,
            outcome,
            span: (sent, ms()),
        });
    }
    ops
}

/// Sets node `i`'s link faults (`{}` heals); false if it did not answer.
async fn set_links(c: &Cluster, i: usize, links: Value) -> bool {
    c.http
        .put(format!("{}/admin/v1/faults/links", c.url(i)))
        .json(&links)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::NO_CONTENT)
}

/// What the nemesis has done to the cluster, so that it can undo it.
#[derive(Debug, Default)]
struct Damage {
    links: BTreeSet<usize>,
    paused: Option<usize>,
    killed: Option<usize>,
}

async fn heal(c: &mut Cluster, damage: &mut Damage, serving: &Serving) {
    if let Some(i) = damage.paused.take() {
        c.freeze(i, false);
        serving.lock().expect("serving")[i] = true;
    }
    if let Some(i) = damage.killed.take() {
        c.restart(i).await;
        serving.lock().expect("serving")[i] = true;
    }
    for i in std::mem::take(&mut damage.links) {
        assert!(set_links(c, i, json!({})).await, "n{} heals", i + 1);
    }
}

/// Applies one random fault; returns what it was.
async fn strike(
    c: &mut Cluster,
    rng: &mut Rng,
    damage: &mut Damage,
    serving: &Serving,
    wiped: &mut bool,
) -> String {
    let pick = |rng: &mut Rng| rng.below(NODES as u64) as usize;
    match rng.below(7) {
        0 | 1 => {
            // A partition: a random side of 1 or 2 nodes against the rest.
            let size = 1 + rng.below(2) as usize;
            let mut side = BTreeSet::new();
            while side.len() < size {
                side.insert(pick(rng));
            }
            for i in 0..NODES {
                let others: serde_json::Map<String, Value> = (0..NODES)
                    .filter(|j| side.contains(j) != side.contains(&i))
                    .map(|j| (c.id(j), json!({"drop": true})))
                    .collect();
                assert!(set_links(c, i, Value::Object(others)).await);
                damage.links.insert(i);
            }
            let names: Vec<String> = side.iter().map(|&i| c.id(i)).collect();
            format!("partition {names:?} | rest")
        }
        2 => {
            let (from, to) = (pick(rng), pick(rng));
            if from == to {
                return "quiet".into();
            }
            assert!(set_links(c, from, json!({ c.id(to): {"drop": true} })).await);
            damage.links.insert(from);
            format!("one-way: {} cannot reach {}", c.id(from), c.id(to))
        }
        3 => {
            let i = pick(rng);
            let delay = 50 + rng.below(300);
            let all: serde_json::Map<String, Value> = (0..NODES)
                .filter(|&j| j != i)
                .map(|j| (c.id(j), json!({ "delay_ms": delay })))
                .collect();
            assert!(set_links(c, i, Value::Object(all)).await);
            damage.links.insert(i);
            format!("slow: {}'s calls delayed {delay} ms", c.id(i))
        }
        4 => {
            let i = pick(rng);
            serving.lock().expect("serving")[i] = false;
            c.freeze(i, true);
            damage.paused = Some(i);
            format!("pause {}", c.id(i))
        }
        5 => {
            let i = pick(rng);
            serving.lock().expect("serving")[i] = false;
            c.kill(i);
            damage.killed = Some(i);
            format!("kill {}", c.id(i))
        }
        _ if !*wiped => {
            let i = pick(rng);
            serving.lock().expect("serving")[i] = false;
            c.kill(i);
            c.wipe(i);
            *wiped = true;
            damage.killed = Some(i);
            format!("kill {} and wipe its disk", c.id(i))
        }
        _ => "quiet".into(),
    }
}

/// True when node `i` sees every node up.
async fn sees_all_up(c: &Cluster, i: usize) -> bool {
    let view = c.admin(i, "/admin/v1/cluster").await;
    let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
    nodes.len() == NODES
        && nodes
            .iter()
            .all(|n| n["status"] == "up" && n["liveness"] == "up")
}

/// The values each primary replica of `key` holds, by node index.
async fn replica_values(c: &Cluster, table: &str, key: &str) -> Vec<BTreeSet<String>> {
    let pl = c
        .admin(
            0,
            &format!("/admin/v1/tables/{table}/keys/{key}/preference-list"),
        )
        .await;
    let mut out = Vec::new();
    for n in pl["nodes"].as_array().into_iter().flatten() {
        if n["role"] != "primary" {
            continue;
        }
        let Some(i) = n["id"]
            .as_str()
            .and_then(|s| s.strip_prefix('n'))
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        out.push(
            c.local_values(i - 1, table, key)
                .await
                .into_iter()
                .collect(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_random_schedule_of_faults_loses_no_acknowledged_write() {
    let seed = env_u64("DYNO_NEMESIS_SEED").unwrap_or_else(|| {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("random seed");
        u64::from_le_bytes(b) % 1_000_000
    });
    let secs = env_u64("DYNO_NEMESIS_SECS").unwrap_or(30);
    println!(
        "nemesis seed {seed}, {secs} s of faults. Replay the schedule: \
         DYNO_NEMESIS_SEED={seed} DYNO_NEMESIS_SECS={secs} cargo test -p dyno --test nemesis -- --nocapture"
    );
    let mut extra: Vec<String> = [
        "--fault-injection",
        "--request-timeout-ms",
        "5000",
        "--gossip-interval-ms",
        "250",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    extra.extend(support::fast_aae_args());
    let mut c = Cluster::start(
        NODES,
        NodeOpts {
            extra,
            ..NodeOpts::default()
        },
    )
    .await;
    c.create_table("t", json!({"n": 3, "r": 2, "w": 2})).await;
    c.create_table("l", json!({"n": 3, "r": 2, "w": 2, "conflict": "lww"}))
        .await;

    let serving: Serving = Arc::new(Mutex::new(vec![true; NODES]));
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = (0..NODES).map(|i| c.url(i)).collect();
    let began = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                seed,
                began,
                c.http.clone(),
                urls.clone(),
                Arc::clone(&serving),
                Arc::clone(&stop),
            ))
        })
        .collect();

    let mut rng = Rng(seed);
    let mut damage = Damage::default();
    let mut wiped = false;
    let started = Instant::now();
    let mut faults = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        heal(&mut c, &mut damage, &serving).await;
        let what = strike(&mut c, &mut rng, &mut damage, &serving, &mut wiped).await;
        let hold = Duration::from_millis(1000 + rng.below(2000));
        println!(
            "[{:>5.1} s] {what} for {:.1} s",
            started.elapsed().as_secs_f64(),
            hold.as_secs_f64()
        );
        faults += usize::from(what != "quiet");
        // The fault's duration is the schedule itself: nothing to await.
        tokio::time::sleep(hold).await;
    }
    heal(&mut c, &mut damage, &serving).await;
    // A quiet second for the clients' last requests, then stop them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ops: Vec<Op> = Vec::new();
    for t in clients {
        ops.extend(t.await.expect("client"));
    }

    // Converge: every node sees every node, then anti-entropy until every
    // key's replicas agree.
    let healed = Instant::now();
    for i in 0..NODES {
        c.wait_for(|| sees_all_up(&c, i), "every node to see every node up")
            .await;
    }
    let keys: BTreeSet<String> = ops.iter().map(|o| o.key.clone()).collect();
    let mut finals: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut rounds = 0;
    loop {
        rounds += 1;
        for i in 0..NODES {
            c.repair(i).await;
        }
        let mut differing = Vec::new();
        finals.clear();
        for key in &keys {
            let table = if key.starts_with("lww") { "l" } else { "t" };
            let replicas = replica_values(&c, table, key).await;
            assert_eq!(replicas.len(), 3, "{key} has three primaries");
            if replicas.windows(2).any(|w| w[0] != w[1]) {
                differing.push(key.clone());
            }
            finals.insert(key.clone(), replicas[0].clone());
        }
        if differing.is_empty() {
            break;
        }
        assert!(
            rounds < 10,
            "replicas still differ after {rounds} rounds of repair: {differing:?} (seed {seed})"
        );
    }
    let converged = healed.elapsed();

    let count = |o: Outcome| {
        ops.iter()
            .filter(|op| op.outcome == o && !matches!(op.kind, OpKind::Read { .. }))
            .count()
    };
    let reads = ops
        .iter()
        .filter(|op| matches!(op.kind, OpKind::Read { .. }))
        .count();
    let siblings = finals.values().map(BTreeSet::len).max().unwrap_or(0);
    println!(
        "{faults} faults in {secs} s; writes acknowledged {}, refused {}, unknown {}; reads {reads}; \
         {} keys converged in {:.1} s ({rounds} repair rounds); most siblings on a key: {siblings}",
        count(Outcome::Ok),
        count(Outcome::Failed),
        count(Outcome::Unknown),
        keys.len(),
        converged.as_secs_f64(),
    );
    assert!(count(Outcome::Ok) > 100, "the workload made progress");
    let (lww, dvv): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(|o| o.key.starts_with("lww"));
    let mut violations: Vec<Violation> = history::check(&dvv, &finals);
    violations.extend(history::check_lww(&lww, &finals, LWW_SLACK_MS));
    // On failure, the history of the first keys that broke a rule and
    // what each of their replicas holds now.
    for v in violations.iter().take(3) {
        let key = match v {
            Violation::Lost { key, .. }
            | Violation::Resurrected { key, .. }
            | Violation::Phantom { key, .. }
            | Violation::OlderWriterWon { key, .. }
            | Violation::NotOneValue { key, .. }
            | Violation::NotConcurrent { key, .. } => key.clone(),
        };
        println!("--- {v:?}");
        for op in dvv.iter().chain(&lww).filter(|o| o.key == key) {
            println!("  {:?} {:?} {:?}", op.span, op.outcome, op.kind);
        }
        let table = if key.starts_with("lww") { "l" } else { "t" };
        for i in 0..NODES {
            let r = c
                .admin(i, &format!("/admin/v1/tables/{table}/keys/{key}/replica"))
                .await;
            println!("  n{}: {r}", i + 1);
        }
    }
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations, first: {:?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
}
