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
//! Every value written through a `Store` is framed as
//! `format:u8(=2) ‖ value ‖ checksum:u32le` ([`FORMAT_V2`]), where the
//! checksum is the low 32 bits of XXH3-64 over the value, seeded with the
//! XXH3-64 of the key: a flipped bit in the value, or a value found under
//! the wrong key, fails the check. Values written before checksums
//! (`format 1 ‖ value`, [`FORMAT_V1`]) are still read. A value that fails
//! the check, or carries an unknown format byte, is never returned: `get`
//! and scans fail with [`StoreError::Corrupt`] naming the key, and
//! [`Store::quarantine`] moves such a record aside (into the meta keyspace,
//! under [`QUARANTINE_PREFIX`], bytes untouched) so that the layer above can
//! restore it from another replica. RocksDB's own block checksums catch
//! damage to its files; this one also catches damage that happens before a
//! value reaches RocksDB, or inside its caches.
//!
//! A committed fixture database (`tests/fixtures/v1`) is read by a test on
//! every build, so a format change cannot silently break existing data.
//!
//! ## Durability
//!
//! [`Durability::Sync`] fsyncs the write-ahead log before a write returns:
//! an acknowledged write survives a power failure. It costs one fsync per
//! write group (RocksDB groups concurrent writers into one fsync, so the
//! cost shrinks under concurrency). Until then the log records of
//! [`Store::write_deferred`] stay in RocksDB's buffer inside the process
//! (manual WAL flush): the fsync writes them out, all at once. A crash of
//! the process loses only deferred writes no one waited for, which were
//! never acknowledged. [`Durability::Periodic`] writes the log
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

pub mod cache;
mod group;
mod memory;
mod rocks;

use std::time::Duration;

pub use memory::MemoryStore;
pub use rocks::{RocksConfig, RocksStore};
use thiserror::Error;

/// The first format: `1 ‖ value`, no checksum. Read, never written.
pub const FORMAT_V1: u8 = 1;

/// The current format: `2 ‖ value ‖ checksum:u32le`.
pub const FORMAT_V2: u8 = 2;

/// Bytes a [`FORMAT_V2`] frame adds to a value: the format byte and the
/// checksum.
pub const FRAME_OVERHEAD: usize = 5;

/// Where [`Store::quarantine`] keeps records that failed their check, in
/// the meta keyspace: `QUARANTINE_PREFIX ‖ keyspace name ‖ '/' ‖ key`.
pub const QUARANTINE_PREFIX: &[u8] = b"quarantine/";

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
    /// A stored value failed its check: a checksum mismatch, a truncated
    /// frame, or a format byte this build cannot read (written by a newer
    /// release, or damaged). The value is left untouched and never returned;
    /// [`Store::quarantine`] moves it aside.
    #[error("stored value in {keyspace:?} is corrupt ({reason}); key {}", hex(key))]
    Corrupt {
        /// Where it was found.
        keyspace: Keyspace,
        /// Its key.
        key: Vec<u8>,
        /// What failed.
        reason: Corruption,
    },
    /// [`Store::get_in_memory`] cannot answer without reading from disk.
    /// Nothing failed: ask again with [`Store::get`], off the async threads.
    #[error("the value is not in memory; reading it needs the disk")]
    NotInMemory,
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

/// What is wrong with a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Corruption {
    /// The checksum does not match the key and value.
    #[error("checksum mismatch")]
    Checksum,
    /// Too short for its format.
    #[error("truncated frame")]
    Truncated,
    /// A format byte this build does not know (0 for an empty value).
    #[error("unknown format {0}")]
    Format(u8),
}

fn hex(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let mut s: String = bytes.iter().take(MAX).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > MAX {
        s.push('…');
    }
    s
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

    /// Like [`Store::get`], from memory only (memtables and the block
    /// cache; a store held in memory always answers):
    /// `Err(StoreError::NotInMemory)` when the answer may be on disk.
    ///
    /// The one method an async thread may call directly: a read that would
    /// block on the disk returns at once instead, and the caller repeats it
    /// on a blocking thread. A disk read on one of a node's few async
    /// threads stalls every request queued behind it.
    fn get_in_memory(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(keyspace, key)
    }

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

    /// The bytes stored under `key`, frame and checksum included, without
    /// any check: for quarantine and diagnosis, never for serving.
    fn get_stored(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores `stored` under `key` as given, without framing it: fault
    /// injection (`dyno node --fault-injection`) and tests only.
    fn put_stored(&self, keyspace: Keyspace, key: &[u8], stored: Vec<u8>)
    -> Result<(), StoreError>;

    /// Moves the record under `key` aside, bytes untouched, into the meta
    /// keyspace under [`QUARANTINE_PREFIX`], in one atomic batch. Returns
    /// the stored size, or `None` when the key holds nothing.
    fn quarantine(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<usize>, StoreError> {
        let Some(stored) = self.get_stored(keyspace, key)? else {
            return Ok(None);
        };
        let size = stored.len();
        let mut b = WriteBatch::new();
        b.put(Keyspace::Meta, quarantine_key(keyspace, key), stored);
        b.delete(keyspace, key.to_vec());
        self.write(b)?;
        Ok(Some(size))
    }

    /// Flips bit `bit` (modulo the stored length) of the record under
    /// `key`, as a damaged disk would: fault injection and tests only.
    /// Returns false when the key holds nothing.
    fn flip_bit(&self, keyspace: Keyspace, key: &[u8], bit: usize) -> Result<bool, StoreError> {
        let Some(mut stored) = self.get_stored(keyspace, key)? else {
            return Ok(false);
        };
        if stored.is_empty() {
            return Ok(false);
        }
        let bit = bit % (stored.len() * 8);
        stored[bit / 8] ^= 1 << (bit % 8);
        self.put_stored(keyspace, key, stored)?;
        Ok(true)
    }

    /// The counters of the store's item cache ([`cache`]), if it has one.
    fn cache_stats(&self) -> Option<cache::CacheStats> {
        None
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

/// The meta key under which [`Store::quarantine`] keeps `key` of `keyspace`.
pub fn quarantine_key(keyspace: Keyspace, key: &[u8]) -> Vec<u8> {
    let name = keyspace.name().as_bytes();
    let mut k = Vec::with_capacity(QUARANTINE_PREFIX.len() + name.len() + 1 + key.len());
    k.extend_from_slice(QUARANTINE_PREFIX);
    k.extend_from_slice(name);
    k.push(b'/');
    k.extend_from_slice(key);
    k
}

/// The checksum of a value stored under a key.
fn checksum(key: &[u8], value: &[u8]) -> u32 {
    let seed = xxhash_rust::xxh3::xxh3_64(key);
    xxhash_rust::xxh3::xxh3_64_with_seed(value, seed) as u32
}

/// Frames a value for storage under `key` ([`FORMAT_V2`]).
pub(crate) fn frame(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + FRAME_OVERHEAD);
    v.push(FORMAT_V2);
    v.extend_from_slice(value);
    v.extend_from_slice(&checksum(key, value).to_le_bytes());
    v
}

/// Checks a stored frame and returns the value in it.
pub fn unframe_value<'a>(key: &[u8], stored: &'a [u8]) -> Result<&'a [u8], Corruption> {
    match stored.split_first() {
        Some((&FORMAT_V2, rest)) => {
            let split = rest.len().checked_sub(4).ok_or(Corruption::Truncated)?;
            let (value, sum) = rest.split_at(split);
            let mut b = [0u8; 4];
            b.copy_from_slice(sum);
            if u32::from_le_bytes(b) == checksum(key, value) {
                Ok(value)
            } else {
                Err(Corruption::Checksum)
            }
        }
        Some((&FORMAT_V1, rest)) => Ok(rest),
        Some((&version, _)) => Err(Corruption::Format(version)),
        None => Err(Corruption::Format(0)),
    }
}

/// Checks and strips the frame of the value stored under `key`.
pub(crate) fn unframe(
    keyspace: Keyspace,
    key: &[u8],
    stored: &[u8],
) -> Result<Vec<u8>, StoreError> {
    unframe_value(key, stored)
        .map(<[u8]>::to_vec)
        .map_err(|reason| StoreError::Corrupt {
            keyspace,
            key: key.to_vec(),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_every_flipped_bit_is_caught() {
        let (key, value) = (b"key".as_slice(), b"some value".as_slice());
        let framed = frame(key, value);
        assert_eq!(unframe_value(key, &framed), Ok(value));
        for bit in 0..framed.len() * 8 {
            let mut damaged = framed.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            // Flipping the format byte to 1 leaves an unchecked v1 value
            // that still carries the checksum bytes: never the same value.
            assert_ne!(unframe_value(key, &damaged), Ok(value), "bit {bit}");
        }
        assert_eq!(
            unframe_value(b"other key", &framed),
            Err(Corruption::Checksum),
            "a value moved to another key fails"
        );
    }

    proptest::proptest! {
        /// Any stored bytes at all: an error or a value, never a panic.
        #[test]
        fn arbitrary_stored_bytes_never_panic(
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32),
            stored in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let _ = unframe_value(&key, &stored);
        }

        /// Damage anywhere in a v2 frame (a changed byte, a cut or an
        /// added tail) never yields the stored value under a false
        /// pretence of health: the value read, if any, is the original.
        #[test]
        fn damaged_frames_never_read_as_another_value(
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32),
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            at in 0usize..300,
            byte in proptest::prelude::any::<u8>(),
            how in 0u8..3,
        ) {
            let mut framed = frame(&key, &value);
            let at = at % framed.len();
            match how {
                0 => framed[at] = byte,
                1 => framed.truncate(at),
                _ => framed.insert(at, byte),
            }
            if let Ok(read) = unframe_value(&key, &framed) {
                // Only a v1 reading of a frame whose format byte became 1
                // escapes the checksum; it then carries the checksum bytes
                // too, so it is never mistaken for the original.
                proptest::prop_assert!(read == value.as_slice() || framed[0] == FORMAT_V1);
            }
        }
    }

    #[test]
    fn v1_values_are_still_read_and_unknown_formats_are_refused() {
        assert_eq!(unframe_value(b"k", &[FORMAT_V1, 7, 8]), Ok(&[7u8, 8][..]));
        assert_eq!(unframe_value(b"k", &[9, 1]), Err(Corruption::Format(9)));
        assert_eq!(unframe_value(b"k", &[]), Err(Corruption::Format(0)));
        assert_eq!(
            unframe_value(b"k", &[FORMAT_V2, 1, 2]),
            Err(Corruption::Truncated)
        );
    }
}
