//! Background loops: hint replay and catalog exchange.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::TargetLabels;
use crate::node::Node;
use crate::replica::wall_ms;
use crate::rpc::{catalog_from_pb, catalog_to_pb};

/// Hint replay settings.
#[derive(Debug, Clone, Copy)]
pub struct HintPolicy {
    /// Hints older than this are dropped.
    pub max_age: Duration,
    /// Deliveries per second per target, at most.
    pub per_sec: u32,
}

/// Every second: for each node with hints that the failure detector sees
/// up, deliver up to `per_sec` hints, removing each one only after the node
/// acknowledged it. Hints past `max_age` are dropped (anti-entropy repairs
/// them). Hints for a node that has left the ring go to the key's current
/// replicas instead.
pub async fn replay_hints(
    node: Arc<Node>,
    policy: HintPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        for (target, backlog) in node.replica.backlog() {
            let labels = TargetLabels {
                target: target.to_string(),
            };
            node.metrics
                .hint_backlog
                .get_or_create(&labels)
                .set(backlog.hints as i64);
            node.metrics
                .hint_backlog_bytes
                .get_or_create(&labels)
                .set(backlog.bytes as i64);
            if backlog.hints == 0 {
                continue;
            }
            // A node outside both rings (it left, or a change that would
            // have added it was aborted) gets nothing: its hints go to the
            // keys' replicas. Otherwise wait until the detector sees it up.
            let topology = node.cluster.topology();
            let outside = topology.epoch > 0 && !topology.involves(&target);
            if !outside && !node.is_up(&target) {
                continue;
            }
            let (replica, t) = (Arc::clone(&node.replica), target.clone());
            let limit = policy.per_sec.max(1) as usize;
            let Ok(Ok(hints)) =
                tokio::task::spawn_blocking(move || replica.hints_for(&t, limit)).await
            else {
                continue;
            };
            for hint in hints {
                let expired =
                    wall_ms().saturating_sub(hint.created_ms) > policy.max_age.as_millis() as u64;
                let delivered = if expired {
                    true
                } else if outside || !still_replica(&node, &topology, &target, &hint) {
                    redirect(&node, &hint).await
                } else {
                    node.send_replica_put(
                        &target,
                        &hint.table,
                        &hint.key,
                        &hint.object,
                        hint.mode,
                        None,
                    )
                    .await
                    .is_ok()
                };
                if !delivered {
                    break; // the target went away again; retry next tick
                }
                let (replica, t) = (Arc::clone(&node.replica), target.clone());
                let removed =
                    tokio::task::spawn_blocking(move || replica.remove_hint(&t, &hint)).await;
                if matches!(removed, Ok(Ok(true))) {
                    let counter = if expired {
                        &node.metrics.hints_dropped
                    } else {
                        &node.metrics.hints_delivered
                    };
                    counter.get_or_create(&labels).inc();
                }
            }
        }
    }
}

/// True when `target` replicates the hint's key in the current or the next
/// ring (a ring change since the hint was stored may have moved the key).
fn still_replica(
    node: &Node,
    topology: &dyno_core::topology::Topology,
    target: &dyno_core::NodeId,
    hint: &crate::replica::Hint,
) -> bool {
    let Some(cfg) = node.catalog.get(&hint.table) else {
        return true;
    };
    let position = dyno_core::hash::key_position(&hint.table, &hint.key);
    let n = cfg.n as usize;
    topology
        .current
        .preference_list_for(position, n)
        .is_primary(target)
        || topology
            .next
            .as_ref()
            .is_some_and(|r| r.preference_list_for(position, n).is_primary(target))
}

/// Delivers a hint whose target no longer replicates the key (it left, or
/// the ring changed) to the key's current replicas instead.
async fn redirect(node: &Arc<Node>, hint: &crate::replica::Hint) -> bool {
    let Some(cfg) = node.catalog.get(&hint.table) else {
        return false;
    };
    let topology = node.cluster.topology();
    let pl = topology.current.preference_list_for(
        dyno_core::hash::key_position(&hint.table, &hint.key),
        cfg.n as usize,
    );
    let mut ok = true;
    for m in pl.primaries() {
        if m.id == node.me {
            let (r, h) = (Arc::clone(&node.replica), hint.clone());
            ok &= matches!(
                tokio::task::spawn_blocking(
                    move || r.merge_item(&h.table, &h.key, &h.object, h.mode)
                )
                .await,
                Ok(Ok(_))
            );
        } else {
            ok &= node
                .send_replica_put(&m.id, &hint.table, &hint.key, &hint.object, hint.mode, None)
                .await
                .is_ok();
        }
    }
    ok
}

/// Every few seconds, exchange catalogs with each peer, so that a node that
/// was down when a table was created learns of it.
pub async fn sync_catalog(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        push_catalog_to_all(&node).await;
    }
}

/// Pushes this node's catalog to every peer that is up, merging theirs.
pub async fn push_catalog_to_all(node: &Arc<Node>) {
    let mine = catalog_to_pb(&node.catalog.list());
    for peer in node
        .cluster
        .peers()
        .into_iter()
        .filter(|p| node.is_up(&p.id))
    {
        let res =
            tokio::time::timeout(node.timeout, peer.client().push_catalog(mine.clone())).await;
        if let Ok(Ok(theirs)) = res {
            for entry in catalog_from_pb(&theirs.into_inner()) {
                if let Err(e) = node.catalog.merge(entry) {
                    tracing::warn!(error = %e, "could not store a catalog entry");
                }
            }
        }
    }
}
