//! Two coordinations beyond point reads and writes, for the DynamoDB API:
//!
//! * **Read-modify-write** (`route_rmw`, `coordinate_rmw`): routed like a
//!   write to the key's first primary up, run there under the key's lock
//!   against a majority read; see `rmw.rs`.
//! * **Range reads** (`range_read`): one page of a table's items in an
//!   item-key range from R replicas of one preference list (a partition
//!   key's items for Query, a partition for Scan), reconciled key by key.
//!
//! What holds: with the key's primaries up, read-modify-writes of a key
//! are serialised by one coordinator and lose no update. If the
//! coordinator fails over (it is down or unreachable), two nodes may
//! coordinate the same key for a while; each still reads a majority and
//! writes a majority, so an update is lost only if two of them interleave,
//! and under last-writer-wins the later timestamp wins. A forwarded
//! read-modify-write that times out is not retried elsewhere, since it may
//! have been applied: the client sees an error and decides.

use std::collections::BTreeMap;
use std::sync::Arc;

use dyno_core::codec::decode_object;
use dyno_core::coordinator::{
    Coordinator, ReadPlan, ReplicaFailure, choose_rmw_coordinator, read_candidates,
};
use dyno_core::hash::key_position;
use dyno_core::{NodeId, Object, QuorumOutcome};
use dyno_proto::internal as pb;
use tokio::time::Instant;

use crate::catalog::TableConfig;
use crate::error::{ErrorCode, ServiceError};
use crate::node::{MAX_FORWARD_HOPS, Node, PutRequest};
use crate::replica::TablePage;
use crate::wire::{self, classify};

/// One page of a range read.
#[derive(Debug, Clone, Default)]
pub struct RangePage {
    /// Item keys (`dyno_core::keys` layout) and merged states, in the
    /// order read (descending when reverse).
    pub items: Vec<(Vec<u8>, Object)>,
    /// When set, the range goes on after this item key (before it, when
    /// reverse): the next page starts there.
    pub resume: Option<Vec<u8>>,
}

/// A range read's request.
#[derive(Debug, Clone)]
pub struct RangeRead {
    /// The table's storage name.
    pub table: String,
    /// The ring position whose replicas hold the range.
    pub position: u64,
    /// First item key (inclusive).
    pub start: Vec<u8>,
    /// End item key (exclusive); `None`: the end of the keyspace.
    pub end: Option<Vec<u8>>,
    /// Most entries each replica scans.
    pub limit: usize,
    /// Highest key first.
    pub reverse: bool,
    /// Replies needed.
    pub r: usize,
}

impl Node {
    /// Runs a read-modify-write of `op` on `(table, key)` at the key's
    /// coordinator; returns the handler's reply.
    pub async fn route_rmw(
        self: &Arc<Self>,
        cfg: TableConfig,
        table: &str,
        key: &[u8],
        op: Vec<u8>,
        hops: u32,
        deadline: Instant,
    ) -> Result<Vec<u8>, ServiceError> {
        let topology = self.serving_topology()?;
        let pl = topology
            .current
            .preference_list_for(key_position(table, key), cfg.n as usize);
        let mut tried: Vec<NodeId> = Vec::new();
        loop {
            let choice =
                choose_rmw_coordinator(&pl, self.me(), |n| self.is_up(n) && !tried.contains(n));
            let target = match choice {
                Coordinator::Local => {
                    return self
                        .coordinate_rmw(cfg, table, key, &op, false, deadline)
                        .await;
                }
                Coordinator::LocalAsFallback => {
                    return self
                        .coordinate_rmw(cfg, table, key, &op, true, deadline)
                        .await;
                }
                Coordinator::Forward(t) => t,
            };
            if hops >= MAX_FORWARD_HOPS {
                return Err(ServiceError::new(
                    ErrorCode::RingChanging,
                    "the ring is changing and nodes disagree on this key's replicas; retry",
                ));
            }
            match self
                .forward_rmw(&target, table, key, &op, hops + 1, deadline)
                .await
            {
                // The target does not know the table yet: it did nothing.
                Ok(Err(e)) if e.code == ErrorCode::TableNotFound => tried.push(target),
                Ok(result) => return result,
                // Never delivered: another primary may coordinate.
                Err(ReplicaFailure::Unreachable) => tried.push(target),
                // Perhaps applied: retrying elsewhere could apply it twice.
                Err(why) => return Err(crate::node::unanswered_forward(&target, why)),
            }
        }
    }

    async fn forward_rmw(
        self: &Arc<Self>,
        to: &NodeId,
        table: &str,
        key: &[u8],
        op: &[u8],
        hops: u32,
        deadline: Instant,
    ) -> Result<Result<Vec<u8>, ServiceError>, ReplicaFailure> {
        let Some(peer) = self.cluster().peer(to) else {
            return Err(ReplicaFailure::Unreachable);
        };
        let msg = pb::CoordinateRmwRequest {
            table: table.to_owned(),
            key: key.to_vec(),
            kind: "dynamodb".to_owned(),
            op: op.to_vec(),
            hops,
            timeout_ms: deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1, u128::from(u32::MAX)) as u32,
        };
        // A read round and a write round, each up to a replica timeout.
        let until = deadline.min(Instant::now() + self.timeout() * 4);
        let res = tokio::time::timeout_at(until, peer.client().coordinate_rmw(msg)).await;
        let res = res
            .map_err(|_| ReplicaFailure::Timeout)
            .and_then(|r| r.map_err(|s| classify(&s)));
        let resp = self.settle(to, res)?;
        Ok(match resp.error {
            Some(e) => Err(wire::error_from_pb(e)),
            None => Ok(resp.reply),
        })
    }

    /// Coordinates a read-modify-write here: under the key's lock, read at
    /// a majority, bring the local replica up to what was read, decide,
    /// write at a majority with the read's context.
    pub async fn coordinate_rmw(
        self: &Arc<Self>,
        cfg: TableConfig,
        table: &str,
        key: &[u8],
        op: &[u8],
        as_fallback: bool,
        deadline: Instant,
    ) -> Result<Vec<u8>, ServiceError> {
        let handler = self
            .rmw_handler()
            .cloned()
            .ok_or_else(|| ServiceError::internal("this node has no read-modify-write handler"))?;
        let _guard = tokio::time::timeout_at(deadline, self.key_locks().lock(table, key))
            .await
            .map_err(|_| {
                ServiceError::new(
                    ErrorCode::DeadlineExceeded,
                    "the request's deadline passed while it waited for the key's earlier writes",
                )
            })?;
        let mode = cfg.mode();
        let q = cfg.majority();
        let current = self
            .get(table, cfg, key, cfg.r.max(q) as usize, deadline)
            .await?;
        if let Some(obj) = &current {
            // The local write orders after everything it supersedes only if
            // the local replica has seen it (last-writer-wins timestamps).
            let r = self.replica();
            let merged = self
                .local(
                    |reads| r.merge_item_deferred(table, key, obj, mode, reads),
                    || {
                        let (r, t, k, o) =
                            (Arc::clone(r), table.to_owned(), key.to_vec(), obj.clone());
                        move |reads| r.merge_item_deferred(&t, &k, &o, mode, reads)
                    },
                )
                .await?;
            if merged {
                self.durable().await?;
            }
        }
        let decision = handler.decide(table, op, current.as_ref())?;
        if let Some(value) = decision.write {
            let req = PutRequest {
                table: table.to_owned(),
                key: key.to_vec(),
                value,
                context: current
                    .as_ref()
                    .map(|o| o.version_vector().clone())
                    .unwrap_or_default(),
                w: cfg.w.max(q) as usize,
                condition: None,
            };
            self.coordinate_put(cfg, req, as_fallback, deadline).await?;
        }
        Ok(decision.reply)
    }

    /// Reads one page of a range from `r` replicas of one preference list,
    /// merging the states key by key. A replica whose page was cut short
    /// bounds the merged page: past its last key, the others' keys could
    /// not be checked against it.
    pub async fn range_read(
        self: &Arc<Self>,
        cfg: TableConfig,
        req: RangeRead,
        deadline: Instant,
    ) -> Result<RangePage, ServiceError> {
        let topology = self.serving_topology()?;
        let pl = topology
            .current
            .preference_list_for(req.position, cfg.n as usize);
        let candidates = read_candidates(&pl, self.me(), |n| self.is_up(n));
        let available = candidates.len();
        let (mut plan, ask) = ReadPlan::start(candidates, req.r);
        let (tx, mut rx) = tokio::sync::mpsc::channel(available.max(1));
        let spawn_scan = |t: NodeId| {
            let (node, tx, req) = (Arc::clone(self), tx.clone(), req.clone());
            tokio::spawn(async move {
                let res = node.replica_scan(&t, &req).await;
                tx.send((t, res)).await.ok();
            });
        };
        // A page takes longer than a point read: a spare is asked only
        // after the page's replicas took several of their round trips.
        let slow_page = |t: &[NodeId], plan: &ReadPlan| self.slow_after(t, plan.next_spare()) * 4;
        let mut slow_at = Instant::now() + slow_page(&ask, &plan);
        for t in ask {
            spawn_scan(t);
        }
        let mut pages = Vec::new();
        while plan.outcome() == QuorumOutcome::Pending {
            let speculate = plan.has_spares() && slow_at < deadline;
            tokio::select! {
                biased;
                reply = rx.recv() => match reply {
                    Some((from, Ok(page))) => {
                        if plan.is_outstanding(&from) {
                            pages.push(page);
                        }
                        plan.on_reply(&from);
                    }
                    Some((from, Err(_))) => {
                        if let (_, Some(spare)) = plan.on_failure(&from) {
                            slow_at = Instant::now() + slow_page(std::slice::from_ref(&spare), &plan);
                            spawn_scan(spare);
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(slow_at), if speculate => {
                    match plan.on_slow() {
                        Some(spare) => {
                            self.metrics().speculative_reads.inc();
                            slow_at = Instant::now() + slow_page(std::slice::from_ref(&spare), &plan);
                            spawn_scan(spare);
                        }
                        None => slow_at = deadline,
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(ServiceError::new(
                        ErrorCode::DeadlineExceeded,
                        "the request's deadline passed before enough replicas answered",
                    ));
                }
            }
        }
        if plan.outcome() != QuorumOutcome::Met {
            return Err(ServiceError::new(
                ErrorCode::QuorumNotMet,
                format!("{} of the {} replies needed arrived", pages.len(), req.r),
            ));
        }
        Ok(merge_pages(pages, req.reverse, cfg.mode()))
    }

    async fn replica_scan(
        self: &Arc<Self>,
        from: &NodeId,
        req: &RangeRead,
    ) -> Result<TablePage, ReplicaFailure> {
        if from == self.me() {
            let (r, q) = (Arc::clone(self.replica()), req.clone());
            return crate::sys::blocking(move || {
                r.scan_table(&q.table, &q.start, q.end.as_deref(), q.limit, q.reverse)
            })
            .await
            .map_err(|_| ReplicaFailure::Failed)?
            .map_err(|_| ReplicaFailure::Failed);
        }
        let Some(peer) = self.cluster().peer(from) else {
            return Err(ReplicaFailure::Unreachable);
        };
        let msg = pb::ReplicaScanRequest {
            table: req.table.clone(),
            start: req.start.clone(),
            end: req.end.clone(),
            limit: req.limit as u32,
            reverse: req.reverse,
        };
        let res = tokio::time::timeout(self.timeout() * 2, peer.client().replica_scan(msg)).await;
        let res = res
            .map_err(|_| ReplicaFailure::Timeout)
            .and_then(|r| r.map_err(|s| classify(&s)));
        let resp = self.settle(from, res)?;
        let items = resp
            .items
            .into_iter()
            .map(|i| {
                decode_object(&i.object)
                    .map(|o| (i.item_key, o))
                    .map_err(|_| ReplicaFailure::Failed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TablePage {
            items,
            resume: resp.resume,
        })
    }
}

/// Merges replicas' pages: the union of their keys up to the tightest
/// resume point, each key's states merged.
pub fn merge_pages(
    pages: Vec<TablePage>,
    reverse: bool,
    mode: dyno_core::ConflictMode,
) -> RangePage {
    let bound = pages
        .iter()
        .filter_map(|p| p.resume.clone())
        .reduce(|a, b| if reverse { a.max(b) } else { a.min(b) });
    let mut merged: BTreeMap<Vec<u8>, Object> = BTreeMap::new();
    for page in pages {
        for (k, o) in page.items {
            let inside = bound
                .as_ref()
                .is_none_or(|b| if reverse { &k >= b } else { &k <= b });
            if !inside {
                continue;
            }
            match merged.get_mut(&k) {
                Some(existing) => existing.merge(&o, mode),
                None => {
                    merged.insert(k, o);
                }
            }
        }
    }
    let mut items: Vec<(Vec<u8>, Object)> = merged.into_iter().collect();
    if reverse {
        items.reverse();
    }
    RangePage {
        items,
        resume: bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_core::ConflictMode;

    fn obj(v: &str) -> Object {
        let mut o = Object::new();
        o.update(
            dyno_core::Write {
                context: &dyno_core::VersionVector::new(),
                actor: dyno_core::ActorId(1),
                value: Some(bytes::Bytes::from(v.to_owned())),
                timestamp: dyno_core::hlc::Hlc(1),
            },
            ConflictMode::Lww,
            dyno_core::SiblingLimits::default(),
        )
        .expect("update");
        o
    }

    fn page(keys: &[u8], resume: Option<u8>) -> TablePage {
        TablePage {
            items: keys.iter().map(|k| (vec![*k], obj("v"))).collect(),
            resume: resume.map(|r| vec![r]),
        }
    }

    #[test]
    fn a_short_page_bounds_the_merged_page() {
        // Replica A stopped at 3; B saw 1, 2, 4 and finished. Key 4 cannot
        // be trusted (A did not look that far); the next page starts after 3.
        let m = merge_pages(
            vec![page(&[1, 3], Some(3)), page(&[1, 2, 4], None)],
            false,
            ConflictMode::Lww,
        );
        let keys: Vec<u8> = m.items.iter().map(|(k, _)| k[0]).collect();
        assert_eq!(keys, vec![1, 2, 3]);
        assert_eq!(m.resume, Some(vec![3]));
        let m = merge_pages(
            vec![page(&[9, 7], Some(7)), page(&[9, 8, 5], None)],
            true,
            ConflictMode::Lww,
        );
        let keys: Vec<u8> = m.items.iter().map(|(k, _)| k[0]).collect();
        assert_eq!(keys, vec![9, 8, 7]);
        assert_eq!(m.resume, Some(vec![7]));
    }
}
