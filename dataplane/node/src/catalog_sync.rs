//! Catalog sync: every few seconds, exchange catalogs with each live peer
//! (push-pull), so that a node that was down when a table was created learns
//! of it.

use std::sync::Arc;
use std::time::Duration;

use crate::node::Node;
use crate::wire::{catalog_from_pb, catalog_to_pb};
use crate::worker::{Worker, WorkerError, WorkerState};

/// The catalog sync worker.
#[derive(Debug)]
pub struct CatalogSync {
    node: Arc<Node>,
    tick: tokio::time::Interval,
}

impl CatalogSync {
    /// A worker syncing `node`'s catalog every 3 s.
    pub fn new(node: Arc<Node>) -> CatalogSync {
        CatalogSync {
            node,
            tick: tokio::time::interval(Duration::from_secs(3)),
        }
    }
}

impl Worker for CatalogSync {
    fn name(&self) -> &'static str {
        "catalog_sync"
    }

    async fn wait_for_work(&mut self) {
        self.tick.tick().await;
    }

    async fn work(&mut self) -> Result<WorkerState, WorkerError> {
        push_catalog_to_all(&self.node).await?;
        Ok(WorkerState::Idle)
    }
}

/// Pushes this node's catalog to every peer that is up, merging theirs.
/// A peer that does not answer is skipped (the next round retries); failing
/// to store an entry is an error.
pub async fn push_catalog_to_all(node: &Arc<Node>) -> Result<(), WorkerError> {
    let mine = catalog_to_pb(&node.catalog().records());
    for peer in node
        .cluster()
        .peers()
        .into_iter()
        .filter(|p| node.is_up(&p.id))
    {
        let res =
            tokio::time::timeout(node.timeout(), peer.client().push_catalog(mine.clone())).await;
        if let Ok(Ok(theirs)) = res {
            for entry in catalog_from_pb(&theirs) {
                node.catalog()
                    .merge_record(entry)
                    .map_err(WorkerError::new)?;
            }
        }
    }
    Ok(())
}
