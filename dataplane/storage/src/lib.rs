//! # dyno-storage: where a node keeps its bytes
//!
//! This crate owns the on-disk (and in-memory) storage of one node behind a
//! narrow [`Store`] trait: get, atomic batch write, and ordered range scan,
//! over three separate [`Keyspace`]s — items, hints and local metadata. It
//! knows nothing about Dynamo: keys and values are opaque bytes. It must
//! never depend on the node, the network stack or `dyno-core` (the core is
//! only a dev-dependency, for the format fixture test).
//!
//! Two backends pass one conformance suite (`tests/conformance.rs`):
//!
//! * [`RocksStore`]: RocksDB, with the write-ahead log on, bloom filters on,
//!   one column family per keyspace, and LZ4 compression.
//! * [`MemoryStore`]: a `BTreeMap` per keyspace, for simulation and tests.
//!
//! ## Stored format
//!
//! Every value written through a `Store` is prefixed with one format byte
//! ([`FORMAT_V1`]). Reading a value with an unknown format byte fails with
//! [`StoreError::UnsupportedFormat`] instead of misreading it. A committed
//! fixture database (`tests/fixtures/v1`) is read by a test on every build,
//! so a format change cannot silently break existing data.
//!
//! ## Durability
//!
//! [`Durability::Sync`] fsyncs the write-ahead log before a write returns:
//! an acknowledged write survives a power failure. It costs one fsync per
//! write group (RocksDB groups concurrent writers into one fsync, so the
//! cost shrinks under concurrency). [`Durability::Periodic`] writes the log
//! to the OS before returning and fsyncs it on a timer: an acknowledged write
//! survives a crash of the process (the OS still has it) but a power failure
//! or kernel crash can lose the last interval of writes. With N replicas on
//! separate machines, periodic is what most Dynamo deployments run
//! (Cassandra's `commitlog_sync: periodic`), since losing a whole interval
//! needs several machines to lose power at once.
//!
//! ## Example
//!
//! ```
//! use dyno_storage::{Keyspace, MemoryStore, Store, WriteBatch};
//!
//! let store = MemoryStore::new();
//! let mut batch = WriteBatch::new();
//! batch.put(Keyspace::Items, b"k".to_vec(), b"v".to_vec());
//! store.write(batch).unwrap();
//! assert_eq!(store.get(Keyspace::Items, b"k").unwrap(), Some(b"v".to_vec()));
//! ```

mod group;
mod memory;
mod rocks;

use std::time::Duration;

pub use memory::MemoryStore;
pub use rocks::{RocksConfig, RocksStore};
use thiserror::Error;

/// The format byte in front of every stored value.
pub const FORMAT_V1: u8 = 1;

/// A separate key space. Each is a RocksDB column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Keyspace {
    /// Replica data: the versions of every key this node stores.
    Items,
    /// Hints: writes held for an unreachable node, until it is back.
    Hints,
    /// Local metadata: identity, catalog, ring.
    Meta,
}

impl Keyspace {
    /// All keyspaces.
    pub const ALL: [Keyspace; 3] = [Keyspace::Items, Keyspace::Hints, Keyspace::Meta];

    /// The column family name.
    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Items => "items",
            Keyspace::Hints => "hints",
            Keyspace::Meta => "meta",
        }
    }
}

/// When a write is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the log before the write returns.
    Sync,
    /// fsync the log every `interval`.
    Periodic {
        /// Time between fsyncs.
        interval: Duration,
    },
}

impl Default for Durability {
    fn default() -> Self {
        Durability::Periodic {
            interval: Duration::from_millis(100),
        }
    }
}

/// Why a storage operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The engine reported an error (I/O, corruption, out of space). The
    /// operation did not take effect; the node should report itself
    /// unhealthy if this persists.
    #[error("storage engine error: {message}")]
    Engine {
        /// The engine's message.
        message: String,
    },
    /// A stored value carries a format version this build cannot read,
    /// written by a newer release or corrupted. The value is left untouched.
    #[error("stored value in {keyspace:?} has unsupported format version {version}")]
    UnsupportedFormat {
        /// Where it was found.
        keyspace: Keyspace,
        /// The version byte (0 for an empty value).
        version: u8,
    },
    /// Opening the store failed: bad path, locked by another process, or
    /// unreadable files.
    #[error("cannot open the store at {path}: {message}")]
    Open {
        /// The data directory.
        path: String,
        /// Why.
        message: String,
    },
}

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set a key.
    Put {
        /// Where.
        keyspace: Keyspace,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// Where.
        keyspace: Keyspace,
        /// The key.
        key: Vec<u8>,
    },
}

/// Operations applied atomically, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, keyspace: Keyspace, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.ops.push(BatchOp::Put {
            keyspace,
            key,
            value,
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, keyspace: Keyspace, key: Vec<u8>) -> &mut Self {
        self.ops.push(BatchOp::Delete { keyspace, key });
        self
    }

    /// The operations.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A key-value pair from a scan.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A node's local storage.
///
/// All methods are blocking; async callers run them on a blocking pool.
pub trait Store: std::fmt::Debug + Send + Sync + 'static {
    /// The value of `key`, if any.
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies a batch atomically: after a crash either all of it or none of
    /// it is visible. Durable according to the store's [`Durability`].
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError>;

    /// Up to `limit` entries with `start <= key < end` (no upper bound when
    /// `end` is `None`), in key order.
    fn scan(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Like [`Store::scan`], in reverse key order: up to `limit` entries
    /// with `start <= key < end`, the highest first.
    fn scan_rev(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Makes every write so far durable, whatever the durability setting.
    fn sync(&self) -> Result<(), StoreError>;

    /// Applies a batch like [`Store::write`], visible at once, but leaves
    /// the wait for durability to [`Store::wait_durable`]. A caller that
    /// holds a lock while writing (a key's read-modify-write) lets it go
    /// before it waits, so that writers of the same key do not queue behind
    /// each other's fsyncs, and concurrent writers share one fsync.
    fn write_deferred(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.write(batch)
    }

    /// Returns once every write this thread made before the call is durable
    /// according to the store's [`Durability`] (at once for `Periodic`).
    fn wait_durable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Sets one key.
    fn put(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.put(keyspace, key.to_vec(), value.to_vec());
        self.write(b)
    }

    /// Removes one key.
    fn delete(&self, keyspace: Keyspace, key: &[u8]) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.delete(keyspace, key.to_vec());
        self.write(b)
    }
}

/// Adds the format byte to a value.
pub(crate) fn frame(value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + 1);
    v.push(FORMAT_V1);
    v.extend_from_slice(value);
    v
}

/// Checks and strips the format byte.
pub(crate) fn unframe(keyspace: Keyspace, stored: &[u8]) -> Result<Vec<u8>, StoreError> {
    match stored.split_first() {
        Some((&FORMAT_V1, rest)) => Ok(rest.to_vec()),
        Some((&version, _)) => Err(StoreError::UnsupportedFormat { keyspace, version }),
        None => Err(StoreError::UnsupportedFormat {
            keyspace,
            version: 0,
        }),
    }
}
