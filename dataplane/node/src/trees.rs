//! The node's Merkle trees: one per (replication factor, partition),
//! updated on every write to the `items` keyspace with the old and new
//! object digests (O(depth), no rescan). Items of tables with the same N
//! share replica sets, so their trees are comparable between replicas.
//!
//! Trees live in memory. At start-up they are rebuilt by one scan of the
//! items keyspace (the only scan), which also counts the load figures:
//! keys and bytes on the node, and live items and their bytes per table
//! (the replica copies this node holds; the control plane sums the nodes
//! and divides by N for a table's estimate).
//! A table's N cannot change (the admin API refuses it), so an item's tree
//! never moves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use dyno_core::codec::decode_object;
use dyno_core::keys::decode_item_key;
use dyno_core::merkle::{MerkleShape, MerkleTree, item_hash};
use dyno_core::{Object, PartitionId};
use dyno_storage::{Keyspace, Store, StoreError};

use crate::catalog::Catalog;
use crate::sys::lock;

/// Key of a tree: replication factor and partition.
pub type TreeKey = (u32, u32);

/// The trees, and the load figures they count.
#[derive(Debug)]
pub struct Trees {
    shape: MerkleShape,
    partition_bits: u8,
    catalog: Arc<Catalog>,
    inner: Mutex<Inner>,
    keys: AtomicI64,
    bytes: AtomicI64,
}

/// The trees and the per-table figures, under one lock (an update
/// touches both).
#[derive(Debug, Default)]
struct Inner {
    trees: HashMap<TreeKey, MerkleTree>,
    tables: HashMap<String, Running>,
}

/// Live items of one table held on this node, and their stored bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableLoad {
    /// Items with a live value (tombstones are not counted).
    pub items: u64,
    /// Their stored bytes (key and encoded object).
    pub bytes: u64,
}

/// Signed running totals (an update may subtract before the rebuild adds).
#[derive(Debug, Default)]
struct Running {
    items: i64,
    bytes: i64,
}

impl Running {
    fn load(&self) -> TableLoad {
        TableLoad {
            items: self.items.max(0) as u64,
            bytes: self.bytes.max(0) as u64,
        }
    }
}

/// One side of an update: an object and its stored size.
pub type Version<'a> = Option<(&'a Object, usize)>;

impl Trees {
    /// Empty trees.
    pub fn new(partition_bits: u8, catalog: Arc<Catalog>) -> Trees {
        Trees {
            shape: MerkleShape::default(),
            partition_bits,
            catalog,
            inner: Mutex::new(Inner::default()),
            keys: AtomicI64::new(0),
            bytes: AtomicI64::new(0),
        }
    }

    /// The tree shape.
    pub fn shape(&self) -> MerkleShape {
        self.shape
    }

    /// The partition of a key position.
    pub fn partition_of(&self, position: u64) -> PartitionId {
        dyno_core::ring::partition_of(self.partition_bits, position)
    }

    /// The N of a table (0 when the catalog does not know it yet).
    pub fn n_of(&self, table: &str) -> u32 {
        self.catalog.get(table).map_or(0, |c| c.n)
    }

    /// Records that `item_key` went from `old` to `new`.
    pub fn update(&self, item_key: &[u8], old: Version<'_>, new: Version<'_>) {
        let Ok(ik) = decode_item_key(item_key) else {
            return;
        };
        let n = self.n_of(ik.table);
        let p = self.partition_of(ik.position).0;
        let h = |v: Version<'_>| v.map(|(o, _)| item_hash(ik.table, ik.key, o.digest()));
        let size = |v: Version<'_>| v.map_or(0, |(_, s)| s as i64);
        fn live(v: Version<'_>) -> Version<'_> {
            v.filter(|(o, _)| !o.is_deleted())
        }
        let items = i64::from(live(new).is_some()) - i64::from(live(old).is_some());
        let bytes = size(live(new)) - size(live(old));
        {
            let mut inner = lock(&self.inner);
            let tree = inner
                .trees
                .entry((n, p))
                .or_insert_with(|| MerkleTree::new(self.shape, self.partition_bits));
            tree.update(ik.position, h(old), h(new));
            if items != 0 || bytes != 0 {
                let t = match inner.tables.get_mut(ik.table) {
                    Some(t) => t,
                    None => inner.tables.entry(ik.table.to_owned()).or_default(),
                };
                t.items += items;
                t.bytes += bytes;
            }
        }
        self.keys.fetch_add(
            i64::from(new.is_some()) - i64::from(old.is_some()),
            Ordering::Relaxed,
        );
        self.bytes
            .fetch_add(size(new) - size(old), Ordering::Relaxed);
    }

    /// Rebuilds every tree from the items keyspace, from scratch. Stops at
    /// the first record whose object does not decode and returns its key
    /// (`Ok(Some(key))`), or fails with the store's `Corrupt` error naming a
    /// record that fails its checksum: the caller sets it aside and runs the
    /// rebuild again.
    pub fn rebuild(&self, store: &dyn Store) -> Result<Option<Vec<u8>>, StoreError> {
        let started = std::time::Instant::now();
        *lock(&self.inner) = Inner::default();
        self.keys.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        let mut start: Vec<u8> = Vec::new();
        let mut count = 0u64;
        loop {
            let page = store.scan(Keyspace::Items, &start, None, 4096)?;
            let Some((last, _)) = page.last() else { break };
            let mut next = last.clone();
            next.push(0);
            for (k, v) in &page {
                let Ok(o) = decode_object(v) else {
                    return Ok(Some(k.clone()));
                };
                self.update(k, None, Some((&o, k.len() + v.len())));
                count += 1;
            }
            start = next;
        }
        tracing::info!(
            items = count,
            ms = started.elapsed().as_millis() as u64,
            "Merkle trees built"
        );
        Ok(None)
    }

    /// Recomputes the Merkle leaf that holds `item_key` from the items
    /// stored now, after its record (`stored` bytes) was set aside as
    /// damaged: its old hash is unknown, so the leaf is summed again. The
    /// caller holds every key lock. Returns the key of another record whose
    /// object does not decode, if the scan met one (set it aside first and
    /// call again); fails with `Corrupt` for a record that fails its
    /// checksum. The per-table item counts keep the lost item until the
    /// next rebuild; the node's key and byte counts drop it.
    pub fn recompute_leaf(
        &self,
        store: &dyn Store,
        item_key: &[u8],
        stored: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Ok(ik) = decode_item_key(item_key) else {
            return Ok(None);
        };
        let n = self.n_of(ik.table);
        let partition = self.partition_of(ik.position).0;
        let probe = MerkleTree::new(self.shape, self.partition_bits);
        let leaf = probe.leaf_of(ik.position);
        let (first, last) = self.leaf_range(partition, leaf);
        let (mut start, end) = dyno_core::keys::position_range(first, last);
        let mut sum = 0u64;
        loop {
            let page = store.scan(Keyspace::Items, &start, end.as_deref(), 1024)?;
            for (k, v) in &page {
                let Ok(other) = decode_item_key(k) else {
                    continue;
                };
                if self.n_of(other.table) != n {
                    continue;
                }
                let Ok(o) = decode_object(v) else {
                    return Ok(Some(k.clone()));
                };
                sum = sum.wrapping_add(item_hash(other.table, other.key, o.digest()));
            }
            match page.last() {
                Some((k, _)) if page.len() == 1024 => start = dyno_core::keys::successor(k),
                _ => break,
            }
        }
        lock(&self.inner)
            .trees
            .entry((n, partition))
            .or_insert_with(|| MerkleTree::new(self.shape, self.partition_bits))
            .set_leaf(leaf, sum);
        // What was counted for it: the key and the object, without the
        // storage frame (exact unless the damage changed the length).
        let counted = item_key.len() + stored.saturating_sub(dyno_storage::FRAME_OVERHEAD);
        self.keys.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(counted as i64, Ordering::Relaxed);
        Ok(None)
    }

    /// A tree's root (0 for an empty or absent tree).
    pub fn root(&self, key: TreeKey) -> u64 {
        lock(&self.inner)
            .trees
            .get(&key)
            .map_or(0, MerkleTree::root)
    }

    /// The children hashes of node `index` at `level` (zeros when absent).
    pub fn children(&self, key: TreeKey, level: usize, index: usize) -> Vec<u64> {
        let fanout = 1usize << self.shape.fanout_bits;
        lock(&self.inner)
            .trees
            .get(&key)
            .and_then(|t| t.children(level, index).map(<[u64]>::to_vec))
            .unwrap_or_else(|| vec![0; fanout])
    }

    /// The inclusive position range of a leaf.
    pub fn leaf_range(&self, partition: u32, leaf: usize) -> (u64, u64) {
        dyno_core::merkle::leaf_range(self.shape, self.partition_bits, partition, leaf)
    }

    /// The inclusive position range of a whole partition.
    pub fn partition_range(&self, partition: u32) -> (u64, u64) {
        let last_leaf = self.shape.leaves() - 1;
        (
            self.leaf_range(partition, 0).0,
            self.leaf_range(partition, last_leaf).1,
        )
    }

    /// Keys and bytes stored.
    pub fn load(&self) -> (u64, u64) {
        (
            self.keys.load(Ordering::Relaxed).max(0) as u64,
            self.bytes.load(Ordering::Relaxed).max(0) as u64,
        )
    }

    /// Live items and their bytes of one table (by storage name), as this
    /// node holds them.
    pub fn table_load(&self, name: &str) -> TableLoad {
        lock(&self.inner)
            .tables
            .get(name)
            .map_or_else(TableLoad::default, Running::load)
    }

    /// Live items and their bytes per table (by storage name), as this
    /// node holds them.
    pub fn table_loads(&self) -> HashMap<String, TableLoad> {
        lock(&self.inner)
            .tables
            .iter()
            .map(|(name, t)| (name.clone(), t.load()))
            .collect()
    }
}
