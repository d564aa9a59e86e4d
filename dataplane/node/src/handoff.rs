//! Handoff: carrying out a ring change (see `dyno_core::topology`).
//!
//! The driver wakes on every topology change and twice a second:
//!
//! * **While a change is under way** (epoch E, `next` set) it reports how
//!   many partitions this node gains. Once every live node has applied E,
//!   so every coordinator also writes to the gaining replicas, it pulls each
//!   gained partition from a current replica, page by page, merging the
//!   items in, and reports its progress through gossip. When every node of
//!   both rings reports complete, it commits (any node may; the commit is
//!   deterministic).
//! * **After a commit or an abort** (a sweep is due: the `sweep_due` meta
//!   record, holding the epoch) it waits until every live node has applied
//!   that epoch, plus a settling delay for requests in flight, then deletes
//!   the items of partitions it does not replicate. A node that left the
//!   ring then reports itself `left`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dyno_core::codec::decode_object;
use dyno_core::keys::decode_item_key;
use dyno_core::topology::{HandoffProgress, Topology, is_replica};
use dyno_core::{NodeId, PartitionId};
use dyno_proto::internal as pb;
use serde::Serialize;
use tokio::sync::watch;

use crate::meta;
use crate::node::Node;
use crate::sys::lock;
use crate::worker::{Worker, WorkerError, WorkerState};
const PAGE_ITEMS: u32 = 512;
const PAGE_BYTES: u32 = 4 << 20;

/// What this node has done for the current change.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HandoffReport {
    /// The change's epoch.
    pub epoch: u64,
    /// Partitions this node gains.
    pub partitions_total: u32,
    /// Received so far.
    pub partitions_done: u32,
    /// Items received.
    pub items_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Items dropped after the last commit.
    pub items_dropped: u64,
}

/// Handoff state.
#[derive(Debug, Default)]
pub struct Handoff {
    report: Mutex<HandoffReport>,
    done: Mutex<std::collections::BTreeSet<u32>>,
}

impl Handoff {
    /// This node's report.
    pub fn report(&self) -> HandoffReport {
        lock(&self.report).clone()
    }
}

fn publish(node: &Node, handoff: &Handoff) {
    let r = lock(&handoff.report).clone();
    node.cluster().update_local(|l| {
        l.handoff = HandoffProgress {
            epoch: r.epoch,
            done: r.partitions_done,
            total: r.partitions_total,
            bytes: r.bytes_received,
        };
    });
}

/// The handoff worker: wakes on every topology change and twice a second.
#[derive(Debug)]
pub struct HandoffWorker {
    node: Arc<Node>,
    handoff: Arc<Handoff>,
    changed: watch::Receiver<u64>,
}

impl HandoffWorker {
    /// A worker carrying out `node`'s ring changes, reporting into `handoff`.
    pub fn new(node: Arc<Node>, handoff: Arc<Handoff>) -> HandoffWorker {
        let changed = node.cluster().topology_changed.subscribe();
        HandoffWorker {
            node,
            handoff,
            changed,
        }
    }
}

impl Worker for HandoffWorker {
    fn name(&self) -> &'static str {
        "handoff"
    }

    async fn wait_for_work(&mut self) {
        tokio::select! {
            biased;
            _ = self.changed.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }

    async fn work(&mut self) -> Result<WorkerState, WorkerError> {
        step(&self.node, &self.handoff).await
    }
}

/// One step: pull what is due, commit when every node is ready, sweep what
/// moved away, and notice a finished decommission. Busy after a commit (the
/// sweep follows at once).
async fn step(node: &Arc<Node>, handoff: &Handoff) -> Result<WorkerState, WorkerError> {
    let cluster = node.cluster();
    let store = node.replica().store();
    let topology = cluster.topology();
    if topology.next.is_some() {
        let incoming = topology.incoming(node.me(), node.catalog().change_n(&topology));
        {
            let mut r = lock(&handoff.report);
            if r.epoch != topology.epoch {
                *r = HandoffReport {
                    epoch: topology.epoch,
                    partitions_total: incoming.len() as u32,
                    ..HandoffReport::default()
                };
                lock(&handoff.done).clear();
            }
        }
        publish(node, handoff);
        if cluster.all_live_applied(topology.epoch) {
            for (p, sources) in incoming {
                if lock(&handoff.done).contains(&p.0) {
                    continue;
                }
                if cluster.topology().epoch != topology.epoch {
                    break;
                }
                match pull(node, handoff, &topology, p, &sources).await {
                    Ok(()) => {
                        lock(&handoff.done).insert(p.0);
                        lock(&handoff.report).partitions_done += 1;
                        publish(node, handoff);
                    }
                    Err(e) => {
                        tracing::warn!(partition = p.0, error = %e, "partition transfer failed; will retry")
                    }
                }
            }
        }
        let view = cluster.view();
        if topology.ready_to_commit(|id| view.get(id).map(|s| &s.handoff)) {
            let committed = topology.commit();
            tracing::info!(
                epoch = committed.epoch,
                "every node holds its new partitions; committing the ring change"
            );
            cluster
                .offer_topology(committed)
                .map_err(|e| WorkerError::new(format!("persisting the committed ring: {e}")))?;
            return Ok(WorkerState::Busy);
        }
    } else if meta::sweep_due(store).map_err(WorkerError::new)?
        && cluster.all_live_applied(topology.epoch)
    {
        // Requests routed by the old ring may still be in flight.
        tokio::time::sleep(node.timeout() * 2).await;
        let (dropped, complete) = drop_moved(node, &topology)
            .await
            .map_err(|e| WorkerError::new(format!("dropping moved partitions: {e}")))?;
        lock(&handoff.report).items_dropped += dropped;
        tracing::info!(dropped, "dropped the items of partitions that moved away");
        if complete {
            meta::clear_sweep_due(store).map_err(WorkerError::new)?;
        } else {
            tracing::info!(
                "some items belong to tables this node does not know yet; sweeping again once it does"
            );
        }
    }
    if topology.current.member(node.me()).is_none()
        && topology.next.is_none()
        && !meta::sweep_due(store).map_err(WorkerError::new)?
        && meta::was_member(store).map_err(WorkerError::new)?
        && !cluster.local().left
    {
        tracing::info!(
            "decommission complete: this node holds no partitions and has left the ring"
        );
        cluster.update_local(|l| l.left = true);
    }
    Ok(WorkerState::Idle)
}

async fn pull(
    node: &Arc<Node>,
    handoff: &Handoff,
    topology: &Topology,
    p: PartitionId,
    sources: &[NodeId],
) -> Result<(), String> {
    let mut last_err = String::from("no source is up");
    for source in sources.iter().filter(|s| node.is_up(s)) {
        let Some(peer) = node.cluster().peer(source) else {
            continue;
        };
        let client = peer.client();
        let mut start: Option<Vec<u8>> = None;
        let result: Result<(), String> = async {
            loop {
                let batch = client
                    .stream_partition(pb::StreamPartitionRequest {
                        partition: p.0,
                        for_node: node.me().to_string(),
                        epoch: topology.epoch,
                        start_key: start.clone(),
                        max_items: PAGE_ITEMS,
                        max_bytes: PAGE_BYTES,
                    })
                    .await
                    .map_err(|s| format!("{source}: {}", s.message()))?;
                let bytes: u64 = batch
                    .items
                    .iter()
                    .map(|i| (i.item_key.len() + i.object.len()) as u64)
                    .sum();
                let count = batch.items.len() as u64;
                let nn = Arc::clone(node);
                let items = batch.items;
                crate::sys::blocking(move || -> Result<(), String> {
                    for item in items {
                        let obj = decode_object(&item.object).map_err(|e| e.to_string())?;
                        let mode = crate::wire::item_mode(nn.catalog(), &item);
                        nn.replica()
                            .merge_raw(&item.item_key, &obj, mode)
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| e.to_string())??;
                node.metrics().handoff_bytes_received.inc_by(bytes);
                {
                    let mut r = lock(&handoff.report);
                    r.items_received += count;
                    r.bytes_received += bytes;
                }
                match batch.next_key {
                    Some(k) => start = Some(k),
                    None => return Ok(()),
                }
            }
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

/// Serves one page of `StreamPartition` from this node's items.
pub fn stream_page(
    node: &Node,
    req: &pb::StreamPartitionRequest,
) -> Result<pb::ItemBatch, tonic::Status> {
    let topology = node.cluster().topology();
    if topology.epoch < req.epoch {
        return Err(tonic::Status::failed_precondition(format!(
            "this node has not applied ring epoch {} yet (it has {})",
            req.epoch, topology.epoch
        )));
    }
    let for_node =
        NodeId::new(&req.for_node).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    let ring = topology.next.as_ref().unwrap_or(&topology.current);
    if req.partition as usize >= ring.partition_count() {
        return Err(tonic::Status::invalid_argument("no such partition"));
    }
    let (first, last) = node.replica().trees.partition_range(req.partition);
    let page = node
        .replica()
        .scan_positions(
            first,
            last,
            req.start_key.as_deref(),
            req.max_items.clamp(1, 4096) as usize,
            req.max_bytes.clamp(1, 16 << 20) as usize,
        )
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let mut items = Vec::with_capacity(page.items.len());
    for (k, v) in page.items {
        let Ok(ik) = decode_item_key(&k) else {
            continue;
        };
        let Some(cfg) = node.catalog().get(ik.table) else {
            continue;
        };
        if !is_replica(ring, PartitionId(req.partition), cfg.n as usize, &for_node) {
            continue;
        }
        items.push(pb::Item {
            item_key: k,
            object: v,
            conflict: crate::wire::mode_to_pb(cfg.mode()),
        });
    }
    Ok(pb::ItemBatch {
        items,
        next_key: page.next,
    })
}

/// Deletes the items of partitions this node does not replicate in `now`.
/// Partitions it replicates for the smallest N (so for every table) are
/// skipped without a scan. Items of tables this node's catalog does not
/// know yet are kept, and the sweep is then retried (returns false).
async fn drop_moved(node: &Arc<Node>, now: &Topology) -> Result<(u64, bool), String> {
    let ring = &now.current;
    let smallest = node.catalog().replication_factors().first().copied();
    let n_min = (smallest.unwrap_or(1) as usize).clamp(1, ring.members().len().max(1));
    let mut dropped = 0u64;
    let mut unknown = 0u64;
    for p in 0..ring.partition_count() as u32 {
        if is_replica(ring, PartitionId(p), n_min, node.me()) {
            continue;
        }
        let (first, last) = node.replica().trees.partition_range(p);
        let mut start: Option<Vec<u8>> = None;
        loop {
            // One page of the partition: the items this node no longer
            // replicates, with their tables' N.
            let (nn, ring_c, me) = (Arc::clone(node), ring.clone(), node.me().clone());
            let from = start.take();
            let (moved, next, unknown_here) = crate::sys::blocking(move || {
                let page = nn
                    .replica()
                    .scan_positions(first, last, from.as_deref(), 256, 4 << 20)
                    .map_err(|e| e.to_string())?;
                let mut moved = Vec::new();
                let mut unknown = 0u64;
                for (k, v) in page.items {
                    let Ok(ik) = decode_item_key(&k) else {
                        continue;
                    };
                    let Some(cfg) = nn.catalog().get(ik.table) else {
                        unknown += 1;
                        continue;
                    };
                    if !is_replica(&ring_c, PartitionId(p), cfg.n as usize, &me) {
                        moved.push((k, v, cfg.n as usize, cfg.mode()));
                    }
                }
                Ok::<_, String>((moved, page.next, unknown))
            })
            .await
            .map_err(|e| e.to_string())??;
            unknown += unknown_here;
            if !moved.is_empty() {
                hand_back(node, ring, PartitionId(p), &moved).await?;
                let nn = Arc::clone(node);
                dropped += crate::sys::blocking(move || -> Result<u64, String> {
                    let mut count = 0;
                    for (k, v, _, _) in moved {
                        // Only the version handed back: a write that came
                        // in since stays until the next sweep hands it on.
                        let digest = decode_object(&v).map_err(|e| e.to_string())?.digest();
                        if nn
                            .replica()
                            .remove_item(&k, Some(digest))
                            .map_err(|e| e.to_string())?
                        {
                            count += 1;
                        }
                    }
                    Ok(count)
                })
                .await
                .map_err(|e| e.to_string())??;
            }
            match next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
    }
    node.metrics().handoff_items_dropped.inc_by(dropped);
    Ok((dropped, unknown == 0))
}

/// Hands items of partition `p` this node no longer replicates to the
/// partition's replicas before they are dropped here: the ring change's
/// transfer copied the partition from one current replica, and a write
/// that only this one held (the others missed it, or lost it to a power
/// loss) would otherwise be gone with the drop (found by the
/// deterministic simulation). Each item goes to every primary of its
/// table's preference list that is up; at least one must take it, or the
/// sweep fails and is tried again.
async fn hand_back(
    node: &Arc<Node>,
    ring: &dyno_core::Ring,
    p: PartitionId,
    moved: &[(Vec<u8>, Vec<u8>, usize, dyno_core::ConflictMode)],
) -> Result<(), String> {
    let mut by_n: std::collections::BTreeMap<usize, Vec<pb::Item>> = Default::default();
    for (k, v, n, mode) in moved {
        by_n.entry(*n).or_default().push(pb::Item {
            item_key: k.clone(),
            object: v.clone(),
            conflict: crate::wire::mode_to_pb(*mode),
        });
    }
    for (n, items) in by_n {
        let pl = ring.preference_list(p, n);
        let mut taken = false;
        let mut last_err = String::from("no replica of the partition is up");
        for member in pl.primaries() {
            if &member.id == node.me() || !node.is_up(&member.id) {
                continue;
            }
            let Some(peer) = node.cluster().peer(&member.id) else {
                continue;
            };
            match peer
                .client()
                .push_items(pb::ItemBatch {
                    items: items.clone(),
                    next_key: None,
                })
                .await
            {
                Ok(_) => taken = true,
                Err(e) => last_err = format!("{}: {}", member.id, e.message()),
            }
        }
        if !taken {
            return Err(format!(
                "handing partition {} back before dropping it: {last_err}",
                p.0
            ));
        }
    }
    Ok(())
}
