//! The TTL reaper: deletes DynamoDB items whose TTL attribute has passed.
//!
//! Expired items are invisible to reads at once (`service/ddb.rs`); the
//! reaper removes them from disk. Each node reaps the partitions it owns
//! (is the first primary of), so one node deletes each item. A deletion is
//! a conditional DeleteItem run as a read-modify-write at the key's
//! coordinator, on the condition that the item is absent there, which for
//! the coordinator (to whom expired items are invisible) means "still
//! expired": an item written again meanwhile is kept. It leaves a
//! tombstone, so repair cannot bring the item back. Each pass deletes at most
//! `per_pass` items and then yields.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dyno_core::keys::{decode_item_key, position_range, successor};
use dyno_ddb::item;
use dyno_ddb::stored::{chosen_value, epoch_number, expired};
use dyno_ddb::write::{ReturnValues, WriteKind, WriteOp};

use crate::node::Node;
use crate::worker::{Worker, WorkerError, WorkerState};

/// The reaper.
#[derive(Debug)]
pub struct TtlReaper {
    node: Arc<Node>,
    interval: Duration,
    per_pass: usize,
}

impl TtlReaper {
    /// A reaper passing every `interval`.
    pub fn new(node: Arc<Node>, interval: Duration) -> TtlReaper {
        TtlReaper {
            node,
            interval,
            per_pass: 1000,
        }
    }
}

impl Worker for TtlReaper {
    fn name(&self) -> &'static str {
        "ttl"
    }

    async fn work(&mut self) -> Result<WorkerState, WorkerError> {
        let node = &self.node;
        let topology = node.cluster().topology();
        if topology.epoch == 0 {
            return Ok(WorkerState::Idle);
        }
        let tables: Vec<_> = node
            .catalog()
            .list()
            .into_iter()
            .filter(|t| t.dynamo.as_ref().is_some_and(|d| d.ttl_attribute.is_some()))
            .collect();
        if tables.is_empty() {
            return Ok(WorkerState::Idle);
        }
        let owned = topology.current.partitions_owned_by(node.me());
        let now = epoch_number(crate::sys::wall_ms() / 1000);
        let mut deleted = 0;
        for t in &tables {
            let Some(schema) = t.dynamo.as_ref() else {
                continue;
            };
            for p in &owned {
                let (first, last) = node.replica().trees.partition_range(p.0);
                let (mut start, end) = position_range(first, last);
                loop {
                    let (r, name, s, e) = (
                        Arc::clone(node.replica()),
                        t.name.clone(),
                        start.clone(),
                        end.clone(),
                    );
                    let page = crate::sys::blocking(move || {
                        r.scan_table(&name, &s, e.as_deref(), 500, false)
                    })
                    .await
                    .map_err(WorkerError::new)?
                    .map_err(WorkerError::new)?;
                    for (ik, obj) in &page.items {
                        let Some(it) = chosen_value(obj).and_then(|v| item::decode(v).ok()) else {
                            continue;
                        };
                        if !expired(schema, &it, &now) {
                            continue;
                        }
                        let Some(key) = decode_item_key(ik).ok().and_then(|d| {
                            schema.key.decode_key(d.key).map(|k| (d.key.to_vec(), k))
                        }) else {
                            continue;
                        };
                        // The coordinator sees an expired item as absent,
                        // so "absent" there means "still expired": an item
                        // written again since (live) is kept.
                        let op = WriteOp {
                            key: item::to_json(&key.1),
                            kind: WriteKind::Delete,
                            condition: Some("attribute_not_exists(#pk)".to_owned()),
                            names: BTreeMap::from([(
                                "#pk".to_owned(),
                                schema.key.hash.name.clone(),
                            )]),
                            values: None,
                            return_values: ReturnValues::None,
                            old_on_failure: false,
                        };
                        let bytes = serde_json::to_vec(&op).map_err(WorkerError::new)?;
                        let deadline = tokio::time::Instant::now() + node.timeout() * 8;
                        match node
                            .route_rmw(t.config, &t.name, &key.0, bytes, 0, deadline)
                            .await
                        {
                            Ok(reply) => {
                                let done = serde_json::from_slice::<serde_json::Value>(&reply)
                                    .is_ok_and(|v| v.get("Done").is_some());
                                if done {
                                    node.metrics().ttl_deleted.inc();
                                }
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, table = %t.name, "TTL deletion failed; retried next pass");
                            }
                        }
                        deleted += 1;
                        if deleted >= self.per_pass {
                            return Ok(WorkerState::Busy);
                        }
                    }
                    match page.resume {
                        Some(k) => start = successor(&k),
                        None => break,
                    }
                }
            }
        }
        Ok(WorkerState::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(self.interval).await;
    }
}
