//! Active anti-entropy: replicas converge without client traffic.
//!
//! A *pass* walks every (N, partition) this node is a primary for in the
//! current ring. For each other primary of those partitions it fetches the
//! Merkle roots in one batch, and for each partition whose root differs it
//! walks down only the differing children, lists the (item key, digest)
//! pairs in the differing leaves on both sides, fetches the peer's version
//! of every key that differs, merges it into the local replica, and pushes
//! the merged version back. Tombstones travel like any other version.
//!
//! After the exchanges, the first primary of each partition garbage-collects
//! tombstones older than the grace period that every primary holds at the
//! same version (a conditional delete on each replica).
//!
//! **Budget.** Partition exchanges (roots that differ) and repaired keys are
//! paced: by default 100 exchanges and 2,000 keys a second. Comparing equal
//! roots costs one batched RPC per peer and is not paced. Riak's AAE halved
//! client throughput when it ran unbounded (basho/riak_kv 421 and 689).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dyno_core::codec::decode_object;
use dyno_core::keys::decode_item_key;
use dyno_core::{NodeId, PartitionId};
use dyno_proto::internal as pb;
use serde::Serialize;
use tokio::sync::Notify;

use crate::node::Node;
use crate::peer::PeerClient;
use crate::sys::lock;
use crate::sys::wall_ms;
use crate::wire::{classify, mode_to_pb};
use crate::worker::{Worker, WorkerError, WorkerState};

/// Anti-entropy settings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AaeConfig {
    /// Seconds between scheduled passes (0: only on demand).
    pub interval_secs: u64,
    /// Partition exchanges per second, at most.
    pub partitions_per_sec: u32,
    /// Keys repaired per second, at most.
    pub keys_per_sec: u32,
    /// Seconds a tombstone is kept after the delete.
    pub tombstone_grace_secs: u64,
}

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    /// Pass number on this node, from 1.
    pub id: u64,
    /// "schedule" or "request".
    pub trigger: &'static str,
    /// Start time, ms since the epoch.
    pub started_ms: u64,
    /// End time, once finished.
    pub finished_ms: Option<u64>,
    /// Partition replicas to compare in this pass (partition × peer).
    pub comparisons_total: u64,
    /// Compared so far.
    pub comparisons_done: u64,
    /// Partitions whose roots differed and were exchanged.
    pub partitions_exchanged: u64,
    /// Keys compared (the union of both sides' keys in differing leaves).
    pub keys_compared: u64,
    /// Keys that differed and were repaired (on either side).
    pub keys_repaired: u64,
    /// Object bytes sent to peers.
    pub bytes_sent: u64,
    /// Object bytes received from peers.
    pub bytes_received: u64,
    /// Tombstones removed by garbage collection.
    pub tombstones_dropped: u64,
    /// Comparisons skipped because the peer was down or failed.
    pub peers_skipped: u64,
}

#[derive(Debug, Default)]
struct State {
    running: Option<PassReport>,
    last: Option<PassReport>,
    totals: PassReport,
    next_id: u64,
    queued: bool,
}

/// The anti-entropy worker's shared state.
#[derive(Debug)]
pub struct Repair {
    /// Settings.
    pub config: AaeConfig,
    state: Mutex<State>,
    wake: Notify,
}

/// `GET /admin/v1/repair`.
#[derive(Debug, Clone, Serialize)]
pub struct RepairStatus {
    /// The pass under way.
    pub running: Option<PassReport>,
    /// The last finished pass.
    pub last: Option<PassReport>,
    /// Sums over every pass since start.
    pub totals: PassReport,
    /// True when a requested pass has not started yet.
    pub queued: bool,
    /// The budget.
    pub config: AaeConfig,
}

impl Repair {
    /// Idle state.
    pub fn new(config: AaeConfig) -> Repair {
        Repair {
            config,
            state: Mutex::new(State {
                next_id: 1,
                ..State::default()
            }),
            wake: Notify::new(),
        }
    }

    /// Asks for a pass; returns the id of the pass that will serve it (the
    /// next one to start, so that it sees everything written before now).
    pub fn request(&self) -> u64 {
        let mut s = lock(&self.state);
        s.queued = true;
        let id = s.next_id;
        drop(s);
        self.wake.notify_one();
        id
    }

    /// The current status.
    pub fn status(&self) -> RepairStatus {
        let s = lock(&self.state);
        RepairStatus {
            running: s.running.clone(),
            last: s.last.clone(),
            totals: s.totals.clone(),
            queued: s.queued,
            config: self.config,
        }
    }

    fn update(&self, f: impl FnOnce(&mut PassReport)) {
        if let Some(r) = lock(&self.state).running.as_mut() {
            f(r);
        }
    }
}

/// The anti-entropy worker: a pass on schedule and on request.
#[derive(Debug)]
pub struct AntiEntropy {
    node: Arc<Node>,
    repair: Arc<Repair>,
    next_scheduled: Option<tokio::time::Instant>,
    trigger: Option<&'static str>,
}

impl AntiEntropy {
    /// A worker repairing `node`'s replicas, reporting into `repair`.
    pub fn new(node: Arc<Node>, repair: Arc<Repair>) -> AntiEntropy {
        let interval = repair.config.interval_secs;
        AntiEntropy {
            node,
            repair,
            next_scheduled: (interval > 0)
                .then(|| tokio::time::Instant::now() + Duration::from_secs(interval)),
            trigger: None,
        }
    }
}

impl Worker for AntiEntropy {
    fn name(&self) -> &'static str {
        "anti_entropy"
    }

    async fn wait_for_work(&mut self) {
        let next = self.next_scheduled;
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        // Biased (here and in every select of the node): the first ready
        // branch wins, so that a simulation replays a seed exactly.
        self.trigger = Some(tokio::select! {
            biased;
            _ = self.repair.wake.notified() => "request",
            _ = sleep => "schedule",
        });
    }

    async fn work(&mut self) -> Result<WorkerState, WorkerError> {
        let Some(trigger) = self.trigger.take() else {
            return Ok(WorkerState::Idle); // the first step, before any wait
        };
        let repair = &self.repair;
        {
            let mut s = lock(&repair.state);
            if trigger == "request" && !s.queued {
                return Ok(WorkerState::Idle);
            }
            s.queued = false;
            let id = s.next_id;
            s.next_id += 1;
            s.running = Some(PassReport {
                id,
                trigger,
                started_ms: wall_ms(),
                ..PassReport::default()
            });
        }
        tracing::info!(trigger, "anti-entropy pass started");
        pass(&self.node, repair).await;
        repair.finish_pass();
        let interval = repair.config.interval_secs;
        if interval > 0 {
            self.next_scheduled = Some(tokio::time::Instant::now() + Duration::from_secs(interval));
        }
        Ok(WorkerState::Idle)
    }
}

impl Repair {
    /// Moves the running pass to `last` and adds it to the totals.
    fn finish_pass(&self) {
        let mut s = lock(&self.state);
        if let Some(mut r) = s.running.take() {
            r.finished_ms = Some(wall_ms());
            tracing::info!(
                id = r.id,
                exchanged = r.partitions_exchanged,
                keys_compared = r.keys_compared,
                keys_repaired = r.keys_repaired,
                bytes_sent = r.bytes_sent,
                ms = r.finished_ms.unwrap_or(0).saturating_sub(r.started_ms),
                "anti-entropy pass finished"
            );
            let t = &mut s.totals;
            t.comparisons_done += r.comparisons_done;
            t.partitions_exchanged += r.partitions_exchanged;
            t.keys_compared += r.keys_compared;
            t.keys_repaired += r.keys_repaired;
            t.bytes_sent += r.bytes_sent;
            t.bytes_received += r.bytes_received;
            t.tombstones_dropped += r.tombstones_dropped;
            t.peers_skipped += r.peers_skipped;
            t.id = r.id;
            s.last = Some(r);
        }
    }
}

/// The replication factors of the catalog's tables, clamped to the ring.
fn replication_factors(node: &Node, members: usize) -> BTreeSet<u32> {
    node.catalog()
        .replication_factors()
        .into_iter()
        .map(|n| n.min(members as u32))
        .filter(|&n| n > 0)
        .collect()
}

async fn pass(node: &Arc<Node>, repair: &Arc<Repair>) {
    let topology = node.cluster().topology();
    let ring = &topology.current;
    if ring.member(node.me()).is_none() {
        return;
    }
    // (n, peer) -> partitions shared with that peer.
    let mut work: BTreeMap<(u32, NodeId), Vec<u32>> = BTreeMap::new();
    let mut gc: Vec<(u32, u32, Vec<NodeId>)> = Vec::new();
    for n in replication_factors(node, ring.members().len()) {
        for p in 0..ring.partition_count() as u32 {
            let pl = ring.preference_list(PartitionId(p), n as usize);
            if !pl.is_primary(node.me()) {
                continue;
            }
            let others: Vec<NodeId> = pl
                .primaries()
                .iter()
                .map(|m| m.id.clone())
                .filter(|id| id != node.me())
                .collect();
            for o in &others {
                work.entry((n, o.clone())).or_default().push(p);
            }
            if pl.primaries().first().is_some_and(|m| &m.id == node.me()) {
                gc.push((n, p, others));
            }
        }
    }
    let total: u64 = work.values().map(|v| v.len() as u64).sum();
    repair.update(|r| r.comparisons_total = total);
    for ((n, peer), partitions) in work {
        if let Err(why) = compare_with(node, repair, n, &peer, &partitions).await {
            tracing::debug!(peer = %peer, error = %why, "anti-entropy with a peer stopped");
            repair.update(|r| r.peers_skipped += 1);
        }
    }
    // Tombstone GC only while the ring is stable: during a change, a
    // partition's replicas are in flux.
    if topology.next.is_none() {
        for (n, p, others) in gc {
            if let Err(why) = collect_tombstones(node, repair, n, p, &others).await {
                tracing::debug!(partition = p, error = %why, "tombstone collection skipped");
            }
        }
    }
}

type Failure = String;

fn rpc_err(node: &Node, peer: &NodeId, s: tonic::Status) -> Failure {
    node.cluster().note_rpc(peer, Err(classify(&s)));
    format!("{peer}: {}", s.message())
}

async fn compare_with(
    node: &Arc<Node>,
    repair: &Arc<Repair>,
    n: u32,
    peer: &NodeId,
    partitions: &[u32],
) -> Result<(), Failure> {
    if !node.is_up(peer) {
        return Err(format!("{peer} is down"));
    }
    let client = || {
        node.cluster()
            .peer(peer)
            .map(|p| p.client())
            .ok_or_else(|| format!("no address for {peer}"))
    };
    for chunk in partitions.chunks(1024) {
        let roots = client()?
            .merkle_roots(pb::MerkleRootsRequest {
                n,
                partitions: chunk.to_vec(),
            })
            .await
            .map_err(|s| rpc_err(node, peer, s))?
            .roots;
        // Up to EXCHANGES_IN_FLIGHT partitions are exchanged at once (each
        // is a few round trips); starts are paced by the budget.
        let mut running = tokio::task::JoinSet::new();
        let mut failure = None;
        for (&p, &theirs) in chunk.iter().zip(roots.iter()) {
            repair.update(|r| r.comparisons_done += 1);
            if node.replica().trees.root((n, p)) == theirs {
                continue;
            }
            while running.len() >= EXCHANGES_IN_FLIGHT {
                if let Some(Ok(Err(e))) = running.join_next().await {
                    failure = Some(e);
                }
            }
            if failure.is_some() {
                break;
            }
            let (nn, pp, rr) = (Arc::clone(node), peer.clone(), Arc::clone(repair));
            running.spawn(async move {
                let res = exchange(&nn, &rr, n, p, &pp).await;
                if res.is_ok() {
                    rr.update(|r| r.partitions_exchanged += 1);
                }
                res
            });
            let pps = f64::from(repair.config.partitions_per_sec.max(1));
            tokio::time::sleep(Duration::from_secs_f64(1.0 / pps)).await;
        }
        while let Some(res) = running.join_next().await {
            if let Ok(Err(e)) = res {
                failure = Some(e);
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
    Ok(())
}

/// Partition exchanges with one peer at a time.
const EXCHANGES_IN_FLIGHT: usize = 8;

/// The digests of local items in `ranges` of partition `p` whose table has
/// replication factor `n`.
fn local_digests(
    node: &Node,
    n: u32,
    ranges: &[(u64, u64)],
) -> Result<BTreeMap<Vec<u8>, u64>, Failure> {
    let mut out = BTreeMap::new();
    for &(first, last) in ranges {
        node.replica()
            .scan_each(first, last, |k, v| {
                if let Ok(ik) = decode_item_key(k)
                    && node.replica().trees.n_of(ik.table) == n
                    && let Ok(o) = decode_object(v)
                {
                    out.insert(k.to_vec(), o.digest());
                }
                Ok::<_, crate::replica::ReplicaError>(true)
            })
            .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Serves `KeyDigests` for leaves (used by the RPC service too).
pub fn digests_in_leaves(
    node: &Node,
    n: u32,
    p: u32,
    leaves: &[(u32, u32)],
) -> Result<Vec<(Vec<u8>, u64)>, Failure> {
    let trees = &node.replica().trees;
    let leaf_count = trees.shape().leaves() as u32;
    let ranges: Vec<(u64, u64)> = leaves
        .iter()
        .filter(|(f, l)| f <= l && *l < leaf_count)
        .map(|&(f, l)| {
            (
                trees.leaf_range(p, f as usize).0,
                trees.leaf_range(p, l as usize).1,
            )
        })
        .collect();
    Ok(local_digests(node, n, &ranges)?.into_iter().collect())
}

async fn exchange(
    node: &Arc<Node>,
    repair: &Repair,
    n: u32,
    p: u32,
    peer: &NodeId,
) -> Result<(), Failure> {
    let client = node
        .cluster()
        .peer(peer)
        .map(|x| x.client())
        .ok_or_else(|| format!("no address for {peer}"))?;
    let trees = &node.replica().trees;
    let shape = trees.shape();
    let fanout = 1usize << shape.fanout_bits;
    // Walk down the levels, keeping only the children that differ.
    let mut frontier: Vec<usize> = vec![0];
    for level in 0..usize::from(shape.depth) {
        let theirs = client
            .merkle_children(pb::MerkleChildrenRequest {
                n,
                partition: p,
                level: level as u32,
                indices: frontier.iter().map(|&i| i as u32).collect(),
            })
            .await
            .map_err(|s| rpc_err(node, peer, s))?
            .hashes;
        let mut next = Vec::new();
        for (k, &i) in frontier.iter().enumerate() {
            let ours = trees.children((n, p), level, i);
            for c in 0..fanout {
                if theirs.get(k * fanout + c) != ours.get(c) {
                    next.push(i * fanout + c);
                }
            }
        }
        frontier = next;
    }
    if frontier.is_empty() {
        return Ok(());
    }
    let mut leaves: Vec<(u32, u32)> = Vec::new();
    for leaf in frontier {
        let leaf = leaf as u32;
        match leaves.last_mut() {
            Some(r) if r.1 + 1 == leaf => r.1 = leaf,
            _ => leaves.push((leaf, leaf)),
        }
    }
    let request = pb::KeyDigestsRequest {
        n,
        partition: p,
        leaves: leaves
            .iter()
            .map(|&(first, last)| pb::LeafRangeMsg { first, last })
            .collect(),
        item_keys: Vec::new(),
    };
    let theirs = remote_digests(node, client.as_ref(), peer, request).await?;
    let (nn, ll) = (Arc::clone(node), leaves.clone());
    let ours: BTreeMap<Vec<u8>, u64> =
        crate::sys::blocking(move || digests_in_leaves(&nn, n, p, &ll))
            .await
            .map_err(|e| e.to_string())??
            .into_iter()
            .collect();
    let all: BTreeSet<&Vec<u8>> = theirs.keys().chain(ours.keys()).collect();
    let differing: Vec<Vec<u8>> = all
        .iter()
        .filter(|k| theirs.get(**k) != ours.get(**k))
        .map(|k| (*k).clone())
        .collect();
    let compared = all.len() as u64;
    node.metrics().aae_keys_compared.inc_by(compared);
    repair.update(|r| r.keys_compared += compared);
    for batch in differing.chunks(256) {
        repair_keys(node, repair, client.as_ref(), peer, batch, &theirs).await?;
        let kps = f64::from(repair.config.keys_per_sec.max(1));
        tokio::time::sleep(Duration::from_secs_f64(batch.len() as f64 / kps)).await;
    }
    Ok(())
}

/// A peer's (item key → digest) map for a `KeyDigests` request.
async fn remote_digests(
    node: &Node,
    client: &dyn PeerClient,
    peer: &NodeId,
    request: pb::KeyDigestsRequest,
) -> Result<BTreeMap<Vec<u8>, u64>, Failure> {
    Ok(client
        .key_digests(request)
        .await
        .map_err(|s| rpc_err(node, peer, s))?
        .entries
        .into_iter()
        .map(|e| (e.item_key, e.digest))
        .collect())
}

/// Fetches the peer's versions of `keys`, merges them locally, and pushes
/// the merged versions back.
async fn repair_keys(
    node: &Arc<Node>,
    repair: &Repair,
    client: &dyn PeerClient,
    peer: &NodeId,
    keys: &[Vec<u8>],
    theirs: &BTreeMap<Vec<u8>, u64>,
) -> Result<(), Failure> {
    let fetch: Vec<Vec<u8>> = keys
        .iter()
        .filter(|k| theirs.contains_key(*k))
        .cloned()
        .collect();
    let fetched = if fetch.is_empty() {
        Vec::new()
    } else {
        client
            .fetch_items(pb::FetchItemsRequest { item_keys: fetch })
            .await
            .map_err(|s| rpc_err(node, peer, s))?
            .items
    };
    let received: u64 = fetched.iter().map(|i| i.object.len() as u64).sum();
    let (nn, keys_owned) = (Arc::clone(node), keys.to_vec());
    let theirs_digests = theirs.clone();
    let (merged_local, push) =
        crate::sys::blocking(move || -> Result<(u64, Vec<pb::Item>), String> {
            let mut changed = 0u64;
            for item in &fetched {
                let Ok(obj) = decode_object(&item.object) else {
                    continue;
                };
                let mode = crate::wire::item_mode(nn.catalog(), item);
                if nn
                    .replica()
                    .merge_raw(&item.item_key, &obj, mode)
                    .map_err(|e| e.to_string())?
                {
                    changed += 1;
                }
            }
            let mut push = Vec::new();
            for (k, raw) in nn
                .replica()
                .fetch_raw(&keys_owned)
                .map_err(|e| e.to_string())?
            {
                // Only what the peer lacks: after the merge, keys whose local
                // version equals the peer's need nothing sent back.
                let digest = decode_object(&raw).map(|o| o.digest()).ok();
                if digest.is_some() && digest == theirs_digests.get(&k).copied() {
                    continue;
                }
                let mode = nn.catalog().mode_of_item(&k).unwrap_or_default();
                push.push(pb::Item {
                    item_key: k,
                    object: raw,
                    conflict: mode_to_pb(mode),
                });
            }
            Ok((changed, push))
        })
        .await
        .map_err(|e| e.to_string())??;
    let sent: u64 = push.iter().map(|i| i.object.len() as u64).sum();
    let changed_remote = if push.is_empty() {
        0
    } else {
        client
            .push_items(pb::ItemBatch {
                items: push,
                next_key: None,
            })
            .await
            .map_err(|s| rpc_err(node, peer, s))?
            .changed
    };
    let repaired = merged_local + u64::from(changed_remote);
    node.metrics().aae_keys_repaired.inc_by(repaired);
    node.metrics().aae_bytes_sent.inc_by(sent);
    node.metrics().aae_bytes_received.inc_by(received);
    repair.update(|r| {
        r.keys_repaired += repaired;
        r.bytes_sent += sent;
        r.bytes_received += received;
    });
    Ok(())
}

/// Removes tombstones of partition `p` older than the grace period that
/// every primary holds at the same version.
async fn collect_tombstones(
    node: &Arc<Node>,
    repair: &Repair,
    n: u32,
    p: u32,
    others: &[NodeId],
) -> Result<(), Failure> {
    let grace_ms = repair.config.tombstone_grace_secs.saturating_mul(1000);
    let cutoff = wall_ms().saturating_sub(grace_ms);
    let (first, last) = node.replica().trees.partition_range(p);
    let nn = Arc::clone(node);
    let candidates: Vec<(Vec<u8>, u64)> =
        crate::sys::blocking(move || -> Result<Vec<(Vec<u8>, u64)>, String> {
            let mut out = Vec::new();
            nn.replica()
                .scan_each(first, last, |k, v| {
                    if let Ok(ik) = decode_item_key(k)
                        && nn.replica().trees.n_of(ik.table) == n
                        && let Ok(o) = decode_object(v)
                        && o.is_tombstone()
                        && o.latest_timestamp().is_some_and(|t| t.millis() < cutoff)
                    {
                        out.push((k.to_vec(), o.digest()));
                    }
                    Ok::<_, crate::replica::ReplicaError>(out.len() < 4096)
                })
                .map_err(|e| e.to_string())?;
            Ok(out)
        })
        .await
        .map_err(|e| e.to_string())??;
    if candidates.is_empty() {
        return Ok(());
    }
    // Keep only the tombstones every other primary holds at this version.
    let mut agreed: BTreeMap<Vec<u8>, u64> = candidates.into_iter().collect();
    for peer in others {
        if !node.is_up(peer) {
            return Err(format!("{peer} is down"));
        }
        let client = node
            .cluster()
            .peer(peer)
            .map(|x| x.client())
            .ok_or_else(|| format!("no address for {peer}"))?;
        let request = pb::KeyDigestsRequest {
            n,
            partition: p,
            leaves: Vec::new(),
            item_keys: agreed.keys().cloned().collect(),
        };
        let theirs = remote_digests(node, client.as_ref(), peer, request).await?;
        agreed.retain(|k, d| theirs.get(k) == Some(d));
    }
    if agreed.is_empty() {
        return Ok(());
    }
    let entries: Vec<pb::KeyDigest> = agreed
        .iter()
        .map(|(k, d)| pb::KeyDigest {
            item_key: k.clone(),
            digest: *d,
        })
        .collect();
    for peer in others {
        let client = node
            .cluster()
            .peer(peer)
            .map(|x| x.client())
            .ok_or_else(|| format!("no address for {peer}"))?;
        client
            .drop_tombstones(pb::DropTombstonesRequest {
                entries: entries.clone(),
            })
            .await
            .map_err(|s| rpc_err(node, peer, s))?;
    }
    let nn = Arc::clone(node);
    let dropped = crate::sys::blocking(move || {
        agreed
            .iter()
            .filter(|(k, d)| nn.replica().remove_item(k, Some(**d)).unwrap_or(false))
            .count() as u64
    })
    .await
    .map_err(|e| e.to_string())?;
    node.metrics().tombstones_dropped.inc_by(dropped);
    repair.update(|r| r.tombstones_dropped += dropped);
    Ok(())
}
