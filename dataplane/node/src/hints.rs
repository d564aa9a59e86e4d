//! Hint replay: delivers the hints this node holds to their owners once
//! the failure detector sees them up, throttled per target; redirects hints
//! whose owner left the ring (or no longer replicates the key) to the key's
//! current replicas; drops hints past their age limit (anti-entropy repairs
//! those keys). Publishes the backlog per target as metrics.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::TargetLabels;
use crate::node::Node;
use crate::sys::wall_ms;
use crate::worker::{Worker, WorkerError, WorkerState};

/// Hint replay settings.
#[derive(Debug, Clone, Copy)]
pub struct HintPolicy {
    /// Hints older than this are dropped.
    pub max_age: Duration,
    /// Deliveries per second per target, at most.
    pub per_sec: u32,
}

/// The hint replay worker: one pass a second.
#[derive(Debug)]
pub struct HintReplay {
    node: Arc<Node>,
    policy: HintPolicy,
    tick: tokio::time::Interval,
}

impl HintReplay {
    /// A worker replaying `node`'s hints.
    pub fn new(node: Arc<Node>, policy: HintPolicy) -> HintReplay {
        HintReplay {
            node,
            policy,
            tick: tokio::time::interval(Duration::from_secs(1)),
        }
    }
}

impl Worker for HintReplay {
    fn name(&self) -> &'static str {
        "hints"
    }

    async fn wait_for_work(&mut self) {
        self.tick.tick().await;
    }

    async fn work(&mut self) -> Result<WorkerState, WorkerError> {
        replay_once(&self.node, self.policy).await?;
        Ok(WorkerState::Idle)
    }
}

/// One pass: for each node with hints that the failure detector sees up,
/// deliver up to `per_sec` hints, removing each one only after the node
/// acknowledged it.
async fn replay_once(node: &Arc<Node>, policy: HintPolicy) -> Result<(), WorkerError> {
    for (target, backlog) in node.replica().backlog() {
        let labels = TargetLabels {
            target: target.to_string(),
        };
        let metrics = node.metrics();
        metrics
            .hint_backlog
            .get_or_create(&labels)
            .set(backlog.hints as i64);
        metrics
            .hint_backlog_bytes
            .get_or_create(&labels)
            .set(backlog.bytes as i64);
        if backlog.hints == 0 {
            continue;
        }
        // A node outside both rings (it left, or a change that would have
        // added it was aborted) gets nothing: its hints go to the keys'
        // replicas. Otherwise wait until the detector sees it up.
        let topology = node.cluster().topology();
        let outside = topology.epoch > 0 && !topology.involves(&target);
        if !outside && !node.is_up(&target) {
            continue;
        }
        let (replica, t) = (Arc::clone(node.replica()), target.clone());
        let limit = policy.per_sec.max(1) as usize;
        let hints = crate::sys::blocking(move || replica.hints_for(&t, limit))
            .await
            .map_err(WorkerError::new)?
            .map_err(WorkerError::new)?;
        for hint in hints {
            let expired =
                wall_ms().saturating_sub(hint.created_ms) > policy.max_age.as_millis() as u64;
            let delivered = if expired {
                true
            } else if outside || !still_replica(node, &topology, &target, &hint) {
                redirect(node, &hint).await
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
            let (replica, t) = (Arc::clone(node.replica()), target.clone());
            let removed = crate::sys::blocking(move || replica.remove_hint(&t, &hint))
                .await
                .map_err(WorkerError::new)?
                .map_err(WorkerError::new)?;
            if removed {
                let counter = if expired {
                    &metrics.hints_dropped
                } else {
                    &metrics.hints_delivered
                };
                counter.get_or_create(&labels).inc();
            }
        }
    }
    Ok(())
}

/// True when `target` replicates the hint's key in the current or the next
/// ring (a ring change since the hint was stored may have moved the key).
fn still_replica(
    node: &Node,
    topology: &dyno_core::topology::Topology,
    target: &dyno_core::NodeId,
    hint: &crate::replica::Hint,
) -> bool {
    let Some(cfg) = node.catalog().get(&hint.table) else {
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
    let Some(cfg) = node.catalog().get(&hint.table) else {
        return false;
    };
    let topology = node.cluster().topology();
    let pl = topology.current.preference_list_for(
        dyno_core::hash::key_position(&hint.table, &hint.key),
        cfg.n as usize,
    );
    let encoded = bytes::Bytes::from(dyno_core::codec::encode_object(&hint.object));
    let mut ok = true;
    for m in pl.primaries() {
        if &m.id == node.me() {
            let (r, h) = (Arc::clone(node.replica()), hint.clone());
            ok &= node
                .background_io("redirected hint", move || {
                    r.merge_item(&h.table, &h.key, &h.object, h.mode)
                        .map(|_| ())
                })
                .await;
        } else {
            ok &= node
                .send_encoded(
                    &m.id,
                    &hint.table,
                    &hint.key,
                    encoded.clone(),
                    hint.mode,
                    None,
                )
                .await
                .is_ok();
        }
    }
    ok
}
