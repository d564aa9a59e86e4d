//! This node's replica data and hints, on top of the `Store`.
//!
//! All methods block (they touch RocksDB); the async layer calls them on
//! tokio's blocking pool. Writes to one key are serialised by a striped
//! lock, so a coordinator's read-modify-write can never hand out one dot
//! twice, and a merge never overwrites a concurrent merge.
//!
//! Hints live in the `hints` keyspace under
//! `len(target) ‖ target ‖ item key`, so the hints for one node are one
//! range, and the hints for one key are N point lookups. A hint's value is
//! `conflict mode ‖ created (ms, u64 LE) ‖ object`. A second hint for the
//! same key and target is merged into the first: the backlog holds one
//! entry per key, whatever the write rate.
//!
//! ## Damaged records
//!
//! Every stored value carries a checksum (`dyno_storage`). A record that
//! fails it, or holds an object that does not decode, is never served and
//! never stops the node: the operation that met it moves it aside
//! ([`Store::quarantine`], with every key lock held), recomputes the Merkle
//! leaf that counted it, counts it ([`Replica::damaged`]) and logs its key.
//! Writes, merges and scans then carry on as if the key were absent here,
//! and a read of it fails this one replica's reply (the coordinator uses the
//! others, and read repair or anti-entropy restores the item from them,
//! since this node's tree no longer counts it). The scrub worker
//! (`scrub.rs`) reads every record in the background, so damage to cold
//! data is found too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use bytes::Bytes;
use dyno_core::codec::{decode_object, encode_object};
use dyno_core::keys::encode_item_key;
use dyno_core::{
    ActorId, ConflictMode, HlcClock, NodeId, Object, SiblingLimits, UpdateError, VersionVector,
    Write,
};
use dyno_storage::{Keyspace, Store, StoreError, WriteBatch};
use thiserror::Error;

use crate::sys::lock;
use crate::sys::{random_u64, wall_ms};
use crate::trees::Trees;

const STRIPES: usize = 256;
/// Entries read from the store at a time by [`Replica::scan_table`].
const SCAN_CHUNK: usize = 16;
/// A [`Replica::scan_table`] page stops once it has read this much (keys
/// and stored objects), so replies stay small whatever the items' size.
pub const SCAN_PAGE_BYTES: usize = 2 << 20;

/// A page of [`Replica::scan_table`].
#[derive(Debug, Clone, Default)]
pub struct TablePage {
    /// Item keys (`dyno_core::keys` layout) and states, in scan order.
    pub items: Vec<(Vec<u8>, Object)>,
    /// The last item key looked at, when the page was cut short.
    pub resume: Option<Vec<u8>>,
}

/// Where an operation's reads may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Memory only (memtables, block cache), for async threads: a read
    /// that needs the disk fails the operation with
    /// [`ReplicaError::needs_disk`] before it has written anything, and the
    /// caller runs it again on a blocking thread with [`Reads::Anywhere`].
    Memory,
    /// Anywhere, blocking on the disk if need be (blocking threads only).
    Anywhere,
}

/// Why a local replica operation failed.
#[derive(Debug, Error)]
pub enum ReplicaError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored bytes pass their checksum but do not decode: written by a
    /// newer release, or damaged before they were stored.
    #[error("stored {} record is unreadable: {detail}", keyspace.name())]
    Corrupt {
        /// Where it is.
        keyspace: Keyspace,
        /// Its key.
        key: Vec<u8>,
        /// The decoder's message.
        detail: String,
    },
    /// More damaged records turned up in one operation than it sets aside.
    #[error("more than {MAX_DAMAGED} damaged records in one operation")]
    TooMuchDamage,
    /// The write was refused (too many siblings).
    #[error(transparent)]
    Update(#[from] UpdateError),
    /// A memory-only operation found its key's lock stripe held (by an
    /// operation that may be reading the disk on a blocking thread) and
    /// did not wait: it wrote nothing; run it on a blocking thread.
    #[error("the key's lock stripe is busy")]
    Busy,
    /// The hint backlog for a node is full.
    #[error("hint backlog for {target} is full ({bytes} bytes)")]
    HintsFull {
        /// The node.
        target: NodeId,
        /// Its backlog.
        bytes: u64,
    },
}

impl From<ReplicaError> for crate::error::ServiceError {
    fn from(e: ReplicaError) -> Self {
        use crate::error::{ErrorCode, ServiceError};
        match e {
            ReplicaError::Update(u) => ServiceError::new(ErrorCode::TooManySiblings, u.to_string()),
            other => ServiceError::internal(other),
        }
    }
}

impl ReplicaError {
    /// True when an operation run with [`Reads::Memory`] stopped because a
    /// read needed the disk (it wrote nothing; run it with
    /// [`Reads::Anywhere`] on a blocking thread).
    pub fn needs_disk(&self) -> bool {
        matches!(self, ReplicaError::Store(StoreError::NotInMemory))
    }

    /// True when an operation run with [`Reads::Memory`] stopped, having
    /// written nothing, because it would have had to wait: for the disk
    /// ([`ReplicaError::needs_disk`]) or for its key's lock stripe
    /// ([`ReplicaError::Busy`]). Run it again with [`Reads::Anywhere`] on
    /// a blocking thread.
    pub fn must_block(&self) -> bool {
        self.needs_disk() || matches!(self, ReplicaError::Busy)
    }

    /// The damaged record this error names, if it is about one.
    fn damaged(&self) -> Option<(Keyspace, &[u8])> {
        match self {
            ReplicaError::Store(StoreError::Corrupt { keyspace, key, .. })
            | ReplicaError::Corrupt { keyspace, key, .. } => Some((*keyspace, key)),
            _ => None,
        }
    }
}

/// Damaged records set aside by one operation before it gives up.
const MAX_DAMAGED: usize = 64;

/// Damaged records found and set aside since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Damaged {
    /// Items.
    pub items: u64,
    /// Hints.
    pub hints: u64,
}

/// A hint read back for delivery.
#[derive(Debug, Clone)]
pub struct Hint {
    /// The storage key in the `hints` keyspace.
    pub hint_key: Vec<u8>,
    /// Table and key of the item.
    pub table: String,
    /// The user's key.
    pub key: Vec<u8>,
    /// The table's conflict mode.
    pub mode: ConflictMode,
    /// When the hint was first stored (ms since the epoch).
    pub created_ms: u64,
    /// The state to deliver.
    pub object: Object,
}

/// An item key and its stored object bytes.
pub type RawItem = (Vec<u8>, Vec<u8>);

/// A page of raw items.
#[derive(Debug, Default)]
pub struct ScanPage {
    /// `(item key, stored object)` pairs.
    pub items: Vec<RawItem>,
    /// Where the next page starts, if there is one.
    pub next: Option<Vec<u8>>,
}

/// The hint backlog for one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    /// Hints held.
    pub hints: u64,
    /// Their size in bytes.
    pub bytes: u64,
}

/// The error for an item the Merkle rebuild could not decode.
fn undecodable(key: Vec<u8>) -> ReplicaError {
    ReplicaError::Corrupt {
        keyspace: Keyspace::Items,
        key,
        detail: "the stored object does not decode".into(),
    }
}

/// The node's local data.
#[derive(Debug)]
pub struct Replica {
    store: Arc<dyn Store>,
    stripes: Vec<Mutex<()>>,
    actor: ActorId,
    clock: Mutex<HlcClock>,
    backlog: Mutex<BTreeMap<NodeId, Backlog>>,
    hint_cap: u64,
    /// The Merkle trees and load figures of the items keyspace.
    pub trees: Arc<Trees>,
    damaged_items: AtomicU64,
    damaged_hints: AtomicU64,
}

fn hint_key(target: &NodeId, item_key: &[u8]) -> Vec<u8> {
    let t = target.as_str().as_bytes();
    let mut k = Vec::with_capacity(1 + t.len() + item_key.len());
    k.push(t.len() as u8);
    k.extend_from_slice(t);
    k.extend_from_slice(item_key);
    k
}

fn hint_prefix(target: &NodeId) -> (Vec<u8>, Vec<u8>) {
    // Every hint for `target` starts with `len ‖ target`. Node names are
    // ASCII, so bumping the last byte gives the first key past them all;
    // the length byte keeps "n1" and "n10" apart.
    let start = hint_key(target, &[]);
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    (start, end)
}

fn encode_hint(mode: ConflictMode, created_ms: u64, obj: &Object) -> Vec<u8> {
    let body = encode_object(obj);
    let mut v = Vec::with_capacity(9 + body.len());
    v.push(match mode {
        ConflictMode::Siblings => 0,
        ConflictMode::Lww => 1,
    });
    v.extend_from_slice(&created_ms.to_le_bytes());
    v.extend_from_slice(&body);
    v
}

/// The node a hint key is for.
fn hint_target(hint_key: &[u8]) -> Option<NodeId> {
    let (&len, rest) = hint_key.split_first()?;
    let name = std::str::from_utf8(rest.get(..usize::from(len))?).ok()?;
    NodeId::new(name).ok()
}

fn decode_item(item_key: &[u8], raw: &[u8]) -> Result<Object, ReplicaError> {
    decode_object(raw).map_err(|e| ReplicaError::Corrupt {
        keyspace: Keyspace::Items,
        key: item_key.to_vec(),
        detail: e.to_string(),
    })
}

fn decode_hint(hint_key: &[u8], raw: &[u8]) -> Result<(ConflictMode, u64, Object), ReplicaError> {
    let corrupt = |detail: String| ReplicaError::Corrupt {
        keyspace: Keyspace::Hints,
        key: hint_key.to_vec(),
        detail,
    };
    let (mode, rest) = raw.split_first().ok_or_else(|| corrupt("empty".into()))?;
    let mode = if *mode == 1 {
        ConflictMode::Lww
    } else {
        ConflictMode::Siblings
    };
    let (ts, body) = rest
        .split_at_checked(8)
        .ok_or_else(|| corrupt("truncated".into()))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(ts);
    let obj = decode_object(body).map_err(|e| corrupt(e.to_string()))?;
    Ok((mode, u64::from_le_bytes(b), obj))
}

impl Replica {
    /// Opens the replica layer: takes the actor id for this start (see
    /// `meta::actor_for_start`), and counts the hint backlog.
    pub fn open(
        store: Arc<dyn Store>,
        hint_cap: u64,
        trees: Arc<Trees>,
    ) -> Result<Replica, ReplicaError> {
        let actor = ActorId(crate::meta::actor_for_start(store.as_ref())?);
        let replica = Replica {
            store,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            actor,
            clock: Mutex::new(HlcClock::default()),
            backlog: Mutex::new(BTreeMap::new()),
            hint_cap,
            trees,
            damaged_items: AtomicU64::new(0),
            damaged_hints: AtomicU64::new(0),
        };
        replica.healing(|| {
            replica
                .trees
                .rebuild(replica.store())
                .map_err(ReplicaError::from)?
                .map_or(Ok(()), |key| Err(undecodable(key)))
        })?;
        let backlog = replica.healing(|| {
            let mut backlog: BTreeMap<NodeId, Backlog> = BTreeMap::new();
            for (k, v) in replica.store.scan(Keyspace::Hints, &[], None, usize::MAX)? {
                if let Some(id) = hint_target(&k) {
                    let b = backlog.entry(id).or_default();
                    b.hints += 1;
                    b.bytes += (k.len() + v.len()) as u64;
                }
            }
            Ok(backlog)
        })?;
        *lock(&replica.backlog) = backlog;
        Ok(replica)
    }

    /// Runs `op`; when it meets a damaged record, sets the record aside
    /// ([`Replica::quarantine`]) and runs `op` again, as if the key were
    /// absent. Never call it with a key lock held.
    fn healing<T>(
        &self,
        mut op: impl FnMut() -> Result<T, ReplicaError>,
    ) -> Result<T, ReplicaError> {
        for _ in 0..MAX_DAMAGED {
            match op() {
                Err(e) => match e.damaged() {
                    Some((keyspace, key)) => self.quarantine(keyspace, key)?,
                    None => return Err(e),
                },
                done => return done,
            }
        }
        Err(ReplicaError::TooMuchDamage)
    }

    /// Like [`Replica::healing`] for reads that answer a client: a damaged
    /// record is set aside, and the read fails (this replica's reply does
    /// not count) rather than answering "absent" for a key it held.
    fn reporting<T>(&self, done: Result<T, ReplicaError>) -> Result<T, ReplicaError> {
        if let Err(e) = &done
            && let Some((keyspace, key)) = e.damaged()
        {
            self.quarantine(keyspace, key)?;
        }
        done
    }

    /// Moves a damaged record aside (see the module's notes), with every
    /// key lock held so that no write is between its store write and its
    /// tree update; then any other damaged record found while recomputing
    /// the Merkle leaf.
    fn quarantine(&self, keyspace: Keyspace, key: &[u8]) -> Result<(), ReplicaError> {
        let _all: Vec<MutexGuard<'_, ()>> = self.stripes.iter().map(lock).collect();
        let mut damaged = vec![(keyspace, key.to_vec())];
        let mut leaves: Vec<(Vec<u8>, usize)> = Vec::new();
        for _ in 0..MAX_DAMAGED * 2 {
            if let Some((ks, k)) = damaged.pop() {
                let Some(size) = self.store.quarantine(ks, &k)? else {
                    continue;
                };
                tracing::error!(
                    keyspace = ks.name(),
                    key = %String::from_utf8_lossy(&k),
                    bytes = size,
                    "damaged record set aside; anti-entropy restores it from other replicas"
                );
                match ks {
                    Keyspace::Items => {
                        self.damaged_items.fetch_add(1, Ordering::Relaxed);
                        leaves.push((k, size));
                    }
                    Keyspace::Hints => {
                        self.damaged_hints.fetch_add(1, Ordering::Relaxed);
                        if let Some(target) = hint_target(&k) {
                            let mut backlog = lock(&self.backlog);
                            let b = backlog.entry(target).or_default();
                            b.hints = b.hints.saturating_sub(1);
                            b.bytes = b.bytes.saturating_sub((k.len() + size) as u64);
                        }
                    }
                    Keyspace::Meta => {}
                }
                continue;
            }
            let Some((k, size)) = leaves.last() else {
                return Ok(());
            };
            match self.trees.recompute_leaf(self.store(), k, *size) {
                Ok(None) => {
                    leaves.pop();
                }
                Ok(Some(other)) => damaged.push((Keyspace::Items, other)),
                Err(StoreError::Corrupt { keyspace, key, .. }) => damaged.push((keyspace, key)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ReplicaError::TooMuchDamage)
    }

    /// Damaged records found and set aside since start-up.
    pub fn damaged(&self) -> Damaged {
        Damaged {
            items: self.damaged_items.load(Ordering::Relaxed),
            hints: self.damaged_hints.load(Ordering::Relaxed),
        }
    }

    /// Reads one page of raw records for the scrub worker, from `start`
    /// on: every record is checked (the store's checksum, and the object or
    /// hint decoding); damaged ones are set aside. Returns how many records
    /// were read and where to go on, `None` at the end of the keyspace.
    pub fn scrub_page(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        limit: usize,
    ) -> Result<(usize, Option<Vec<u8>>), ReplicaError> {
        self.healing(|| {
            let page = self.store.scan(keyspace, start, None, limit.max(1))?;
            for (k, v) in &page {
                match keyspace {
                    Keyspace::Items => drop(decode_item(k, v)?),
                    Keyspace::Hints => drop(decode_hint(k, v)?),
                    Keyspace::Meta => {}
                }
            }
            let next = match page.last() {
                Some((k, _)) if page.len() >= limit.max(1) => Some(dyno_core::keys::successor(k)),
                _ => None,
            };
            Ok((page.len(), next))
        })
    }

    /// Damages the stored record of an item by flipping one bit, as a bad
    /// disk would: fault injection only (`--fault-injection`). False when
    /// this node holds no such item.
    pub fn damage_item(&self, table: &str, key: &[u8], bit: usize) -> Result<bool, ReplicaError> {
        Ok(self
            .store
            .flip_bit(Keyspace::Items, &encode_item_key(table, key), bit)?)
    }

    /// The underlying store.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// This storage incarnation's actor id.
    pub fn actor(&self) -> ActorId {
        self.actor
    }

    /// A fresh hybrid timestamp.
    pub fn now(&self) -> dyno_core::Hlc {
        lock(&self.clock).now(wall_ms())
    }

    fn stripe(&self, item_key: &[u8]) -> MutexGuard<'_, ()> {
        lock(self.stripe_mutex(item_key))
    }

    fn stripe_mutex(&self, item_key: &[u8]) -> &Mutex<()> {
        &self.stripes[(dyno_core::hash::digest_bytes(item_key) as usize) % STRIPES]
    }

    /// The lock stripe of `item_key`, for an operation reading `reads`.
    /// A memory-only operation runs on an async thread and does not wait:
    /// the holder may be reading the disk on a blocking thread, and every
    /// request queued on this thread would wait with it. It fails with
    /// [`ReplicaError::Busy`] instead, before anything is written.
    fn stripe_for(
        &self,
        item_key: &[u8],
        reads: Reads,
    ) -> Result<MutexGuard<'_, ()>, ReplicaError> {
        let m = self.stripe_mutex(item_key);
        match reads {
            Reads::Anywhere => Ok(lock(m)),
            Reads::Memory => match m.try_lock() {
                Ok(g) => Ok(g),
                Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
                Err(TryLockError::WouldBlock) => Err(ReplicaError::Busy),
            },
        }
    }

    /// A stored value, read where `reads` allows.
    fn fetch(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        reads: Reads,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match reads {
            Reads::Memory => self.store.get_in_memory(keyspace, key),
            Reads::Anywhere => self.store.get(keyspace, key),
        }
    }

    fn read_item(&self, item_key: &[u8], reads: Reads) -> Result<Option<Object>, ReplicaError> {
        match self.fetch(Keyspace::Items, item_key, reads)? {
            Some(raw) => decode_item(item_key, &raw).map(Some),
            None => Ok(None),
        }
    }

    /// What this node stores for a key as a replica (no hints). A damaged
    /// record is set aside and the read fails.
    pub fn get_item(&self, table: &str, key: &[u8]) -> Result<Option<Object>, ReplicaError> {
        self.reporting(self.read_item(&encode_item_key(table, key), Reads::Anywhere))
    }

    /// Up to `limit` stored entries in the item-key range `[start, end)`
    /// (highest first when `reverse`), keeping those of `table`: their
    /// user keys and states. The second value is the last item key looked
    /// at when the limit cut the scan short (the next page starts after it),
    /// `None` when the range is exhausted. Entries of other tables count
    /// towards the limit, so a page always makes progress.
    pub fn scan_table(
        &self,
        table: &str,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<TablePage, ReplicaError> {
        self.healing(|| self.scan_table_once(table, start, end, limit, reverse))
    }

    fn scan_table_once(
        &self,
        table: &str,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<TablePage, ReplicaError> {
        let limit = limit.max(1);
        // Read in chunks, so that a page of large items stops near
        // SCAN_PAGE_BYTES instead of materialising `limit` of them.
        let (mut lo, mut hi) = (start.to_vec(), end.map(<[u8]>::to_vec));
        let (mut seen, mut bytes) = (0usize, 0usize);
        let mut items = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        loop {
            let want = (limit - seen).min(SCAN_CHUNK);
            let raw = if reverse {
                self.store
                    .scan_rev(Keyspace::Items, &lo, hi.as_deref(), want)?
            } else {
                self.store.scan(Keyspace::Items, &lo, hi.as_deref(), want)?
            };
            let exhausted = raw.len() < want;
            let count = raw.len();
            for (i, (k, v)) in raw.into_iter().enumerate() {
                seen += 1;
                bytes += k.len() + v.len();
                last = Some(k.clone());
                if let Ok(decoded) = dyno_core::keys::decode_item_key(&k)
                    && decoded.table == table
                {
                    let object = decode_item(&k, &v)?;
                    items.push((k, object));
                }
                let more = !exhausted || i + 1 < count;
                if more && (seen >= limit || bytes >= SCAN_PAGE_BYTES) {
                    return Ok(TablePage {
                        items,
                        resume: last,
                    });
                }
            }
            if exhausted {
                return Ok(TablePage {
                    items,
                    resume: None,
                });
            }
            // Continue after (or, reversed, before) the last key read.
            if let Some(k) = &last {
                if reverse {
                    hi = Some(k.clone());
                } else {
                    lo = dyno_core::keys::successor(k);
                }
            }
        }
    }

    /// This node's knowledge of a key: its replica merged with any hints it
    /// holds for it (looked up only for nodes it holds hints for).
    /// A damaged record is set aside and the read fails.
    pub fn get_with_hints(
        &self,
        table: &str,
        key: &[u8],
        mode: ConflictMode,
        reads: Reads,
    ) -> Result<Option<Object>, ReplicaError> {
        self.reporting(self.get_with_hints_once(table, key, mode, reads))
    }

    fn get_with_hints_once(
        &self,
        table: &str,
        key: &[u8],
        mode: ConflictMode,
        reads: Reads,
    ) -> Result<Option<Object>, ReplicaError> {
        let item_key = encode_item_key(table, key);
        let mut state = self.read_item(&item_key, reads)?;
        let targets: Vec<NodeId> = lock(&self.backlog)
            .iter()
            .filter(|(_, b)| b.hints > 0)
            .map(|(t, _)| t.clone())
            .collect();
        for m in &targets {
            let hk = hint_key(m, &item_key);
            if let Some(raw) = self.fetch(Keyspace::Hints, &hk, reads)? {
                let (_, _, h) = decode_hint(&hk, &raw)?;
                state = Some(match state {
                    Some(s) => s.merged(&h, mode),
                    None => h,
                });
            }
        }
        Ok(state)
    }

    /// Merges a state into this node's replica of a key.
    pub fn merge_item(
        &self,
        table: &str,
        key: &[u8],
        incoming: &Object,
        mode: ConflictMode,
    ) -> Result<bool, ReplicaError> {
        self.merge_raw(&encode_item_key(table, key), incoming, mode)
    }

    /// Merges a state into the replica of an item key; true if it changed.
    /// Durable when it returns.
    pub fn merge_raw(
        &self,
        item_key: &[u8],
        incoming: &Object,
        mode: ConflictMode,
    ) -> Result<bool, ReplicaError> {
        let changed = self.merge_raw_deferred(item_key, incoming, mode, Reads::Anywhere)?;
        if changed {
            // Outside the key's lock: writers of one key share fsyncs
            // instead of queueing for them (`--durability sync`).
            self.store.wait_durable()?;
        }
        Ok(changed)
    }

    /// [`Replica::merge_item`] without waiting for durability: the caller
    /// awaits the node's group commit when this returns true.
    pub fn merge_item_deferred(
        &self,
        table: &str,
        key: &[u8],
        incoming: &Object,
        mode: ConflictMode,
        reads: Reads,
    ) -> Result<bool, ReplicaError> {
        self.merge_raw_deferred(&encode_item_key(table, key), incoming, mode, reads)
    }

    fn merge_raw_deferred(
        &self,
        item_key: &[u8],
        incoming: &Object,
        mode: ConflictMode,
        reads: Reads,
    ) -> Result<bool, ReplicaError> {
        self.healing(|| {
            let _g = self.stripe_for(item_key, reads)?;
            let old = self.read_item_sized(item_key, reads)?;
            let merged = match &old {
                Some((o, _)) => {
                    let m = o.merged(incoming, mode);
                    if &m == o {
                        return Ok(false);
                    }
                    m
                }
                None => incoming.clone(),
            };
            self.write_item_locked(item_key, old.as_ref(), &merged)?;
            Ok(true)
        })
    }

    fn read_item_sized(
        &self,
        item_key: &[u8],
        reads: Reads,
    ) -> Result<Option<(Object, usize)>, ReplicaError> {
        match self.fetch(Keyspace::Items, item_key, reads)? {
            Some(raw) => decode_item(item_key, &raw).map(|o| Some((o, item_key.len() + raw.len()))),
            None => Ok(None),
        }
    }

    /// Stores an item (the stripe lock is held) and updates its tree.
    fn write_item_locked(
        &self,
        item_key: &[u8],
        old: Option<&(Object, usize)>,
        new: &Object,
    ) -> Result<(), ReplicaError> {
        let raw = encode_object(new);
        let stored = item_key.len() + raw.len();
        let mut b = WriteBatch::new();
        b.put(Keyspace::Items, item_key.to_vec(), raw);
        self.store.write_deferred(b)?;
        self.trees
            .update(item_key, old.map(|(o, s)| (o, *s)), Some((new, stored)));
        Ok(())
    }

    /// Deletes an item if its digest is still `digest` (`None`: always).
    /// Returns true when deleted.
    pub fn remove_item(&self, item_key: &[u8], digest: Option<u64>) -> Result<bool, ReplicaError> {
        self.healing(|| self.remove_item_once(item_key, digest))
    }

    fn remove_item_once(&self, item_key: &[u8], digest: Option<u64>) -> Result<bool, ReplicaError> {
        let _g = self.stripe(item_key);
        let Some((old, size)) = self.read_item_sized(item_key, Reads::Anywhere)? else {
            return Ok(false);
        };
        if digest.is_some_and(|d| d != old.digest()) {
            return Ok(false);
        }
        let mut b = WriteBatch::new();
        b.delete(Keyspace::Items, item_key.to_vec());
        self.store.write(b)?;
        self.trees.update(item_key, Some((&old, size)), None);
        Ok(true)
    }

    /// Items with positions in `first..=last`, from `start` (an item key)
    /// on: at most `max_items`, or about `max_bytes`. Returns the raw pairs
    /// and the key to continue from, if there is more.
    pub fn scan_positions(
        &self,
        first: u64,
        last: u64,
        start: Option<&[u8]>,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<ScanPage, ReplicaError> {
        let (lo, hi) = dyno_core::keys::position_range(first, last);
        let from = match start {
            Some(s) if s > lo.as_slice() => s.to_vec(),
            _ => lo,
        };
        // Raw bytes go to peers (streamed partitions, anti-entropy), so
        // check that each decodes: a damaged record is set aside here, not
        // shipped.
        let page = self.healing(|| {
            let page =
                self.store
                    .scan(Keyspace::Items, &from, hi.as_deref(), max_items.max(1) + 1)?;
            for (k, v) in &page {
                decode_item(k, v)?;
            }
            Ok(page)
        })?;
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut next = None;
        for (k, v) in page {
            if items.len() >= max_items.max(1) || (bytes >= max_bytes && !items.is_empty()) {
                next = Some(k);
                break;
            }
            bytes += k.len() + v.len();
            items.push((k, v));
        }
        Ok(ScanPage { items, next })
    }

    /// Calls `f` with each item (key, stored bytes) whose position is in
    /// `first..=last`, page by page, until `f` returns `Ok(false)`.
    pub fn scan_each<E: From<ReplicaError>>(
        &self,
        first: u64,
        last: u64,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, E>,
    ) -> Result<(), E> {
        let mut start: Option<Vec<u8>> = None;
        loop {
            let page = self.scan_positions(first, last, start.as_deref(), 1024, usize::MAX)?;
            for (k, v) in &page.items {
                if !f(k, v)? {
                    return Ok(());
                }
            }
            match page.next {
                Some(next) => start = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// The digest of each named item that this node holds.
    pub fn digests_of(&self, item_keys: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, u64)>, ReplicaError> {
        self.healing(|| {
            let mut out = Vec::new();
            for k in item_keys {
                if let Some(o) = self.read_item(k, Reads::Anywhere)? {
                    out.push((k.clone(), o.digest()));
                }
            }
            Ok(out)
        })
    }

    /// The stored bytes of each named item that this node holds.
    pub fn fetch_raw(&self, item_keys: &[Vec<u8>]) -> Result<Vec<RawItem>, ReplicaError> {
        self.healing(|| {
            let mut out = Vec::new();
            for k in item_keys {
                if let Some(raw) = self.store.get(Keyspace::Items, k)? {
                    decode_item(k, &raw)?;
                    out.push((k.clone(), raw));
                }
            }
            Ok(out)
        })
    }

    /// Applies a client write as its coordinator and stores the result: in
    /// the replica when this node is a primary (`hint_for` is `None`), or as
    /// a hint for `hint_for` when it stands in for that node. A stand-in
    /// writes under a fresh actor id (see `dyno_core::coordinator`). Does
    /// not wait for durability: the caller awaits the node's group commit
    /// (`Node::durable`) before it acknowledges the write.
    // The write's parts as the request carries them, and where to store
    // and read: grouping them would only move the list into a struct.
    #[allow(clippy::too_many_arguments)]
    pub fn coordinate(
        &self,
        table: &str,
        key: &[u8],
        context: &VersionVector,
        value: Option<Bytes>,
        mode: ConflictMode,
        hint_for: Option<&NodeId>,
        reads: Reads,
    ) -> Result<(Object, Option<usize>), ReplicaError> {
        self.healing(|| {
            self.coordinate_locked(table, key, context, value.clone(), mode, hint_for, reads)
        })
    }

    /// [`Replica::coordinate`] under the key's lock, up to the deferred write.
    #[allow(clippy::too_many_arguments)]
    fn coordinate_locked(
        &self,
        table: &str,
        key: &[u8],
        context: &VersionVector,
        value: Option<Bytes>,
        mode: ConflictMode,
        hint_for: Option<&NodeId>,
        reads: Reads,
    ) -> Result<(Object, Option<usize>), ReplicaError> {
        let item_key = &encode_item_key(table, key)[..];
        let _g = self.stripe_for(item_key, reads)?;
        let mut old = None;
        let (mut obj, actor) = match hint_for {
            None => {
                old = self.read_item_sized(item_key, reads)?;
                (
                    old.as_ref().map(|(o, _)| o.clone()).unwrap_or_default(),
                    self.actor,
                )
            }
            Some(_) => (
                self.get_with_hints_once(table, key, mode, reads)?
                    .unwrap_or_default(),
                ActorId(random_u64()),
            ),
        };
        let write = Write {
            context,
            actor,
            value,
            timestamp: self.now(),
        };
        let outcome = obj.update(write, mode, SiblingLimits::default())?;
        match hint_for {
            None => self.write_item_locked(item_key, old.as_ref(), &obj)?,
            Some(target) => self.put_hint_locked(target, item_key, &obj, mode, reads)?,
        }
        Ok((obj, outcome.sibling_warning))
    }

    /// Stores (merges) a hint for `target`.
    pub fn store_hint(
        &self,
        target: &NodeId,
        table: &str,
        key: &[u8],
        obj: &Object,
        mode: ConflictMode,
    ) -> Result<(), ReplicaError> {
        self.store_hint_deferred(target, table, key, obj, mode, Reads::Anywhere)?;
        self.store.wait_durable()?;
        Ok(())
    }

    /// [`Replica::store_hint`] without waiting for durability: the caller
    /// awaits the node's group commit.
    pub fn store_hint_deferred(
        &self,
        target: &NodeId,
        table: &str,
        key: &[u8],
        obj: &Object,
        mode: ConflictMode,
        reads: Reads,
    ) -> Result<(), ReplicaError> {
        let item_key = encode_item_key(table, key);
        self.healing(|| {
            let _g = self.stripe_for(&item_key, reads)?;
            self.put_hint_locked(target, &item_key, obj, mode, reads)
        })
    }

    /// Makes every write so far durable (an fsync of the write-ahead log).
    pub fn sync(&self) -> Result<(), ReplicaError> {
        Ok(self.store.sync()?)
    }

    fn put_hint_locked(
        &self,
        target: &NodeId,
        item_key: &[u8],
        obj: &Object,
        mode: ConflictMode,
        reads: Reads,
    ) -> Result<(), ReplicaError> {
        let hk = hint_key(target, item_key);
        let (merged, created, old_len) = match self.fetch(Keyspace::Hints, &hk, reads)? {
            Some(raw) => {
                let (_, created, old) = decode_hint(&hk, &raw)?;
                (old.merged(obj, mode), created, Some(raw.len() + hk.len()))
            }
            None => (obj.clone(), wall_ms(), None),
        };
        let value = encode_hint(mode, created, &merged);
        let mut backlog = lock(&self.backlog);
        let b = backlog.entry(target.clone()).or_default();
        if old_len.is_none() && b.bytes + (hk.len() + value.len()) as u64 > self.hint_cap {
            return Err(ReplicaError::HintsFull {
                target: target.clone(),
                bytes: b.bytes,
            });
        }
        let new_len = (hk.len() + value.len()) as u64;
        let mut batch = WriteBatch::new();
        batch.put(Keyspace::Hints, hk, value);
        self.store.write_deferred(batch)?;
        match old_len {
            Some(old) => b.bytes = b.bytes + new_len - old as u64,
            None => {
                b.hints += 1;
                b.bytes += new_len;
            }
        }
        Ok(())
    }

    /// Up to `limit` hints held for `target`.
    pub fn hints_for(&self, target: &NodeId, limit: usize) -> Result<Vec<Hint>, ReplicaError> {
        self.healing(|| self.hints_for_once(target, limit))
    }

    fn hints_for_once(&self, target: &NodeId, limit: usize) -> Result<Vec<Hint>, ReplicaError> {
        let (start, end) = hint_prefix(target);
        let mut out = Vec::new();
        for (k, v) in self
            .store
            .scan(Keyspace::Hints, &start, Some(&end), limit)?
        {
            let item_key = k.get(start.len()..).unwrap_or_default();
            let Ok(ik) = dyno_core::keys::decode_item_key(item_key) else {
                continue;
            };
            let (mode, created_ms, object) = decode_hint(&k, &v)?;
            out.push(Hint {
                hint_key: k.clone(),
                table: ik.table.to_owned(),
                key: ik.key.to_vec(),
                mode,
                created_ms,
                object,
            });
        }
        Ok(out)
    }

    /// Removes a delivered hint, unless it changed since it was read (then
    /// the newer state is delivered next time).
    pub fn remove_hint(&self, target: &NodeId, hint: &Hint) -> Result<bool, ReplicaError> {
        self.healing(|| self.remove_hint_once(target, hint))
    }

    fn remove_hint_once(&self, target: &NodeId, hint: &Hint) -> Result<bool, ReplicaError> {
        let item_key = encode_item_key(&hint.table, &hint.key);
        let _g = self.stripe(&item_key);
        let Some(raw) = self.store.get(Keyspace::Hints, &hint.hint_key)? else {
            return Ok(false);
        };
        let (_, _, current) = decode_hint(&hint.hint_key, &raw)?;
        if current != hint.object {
            return Ok(false);
        }
        let mut b = WriteBatch::new();
        b.delete(Keyspace::Hints, hint.hint_key.clone());
        self.store.write(b)?;
        let mut backlog = lock(&self.backlog);
        let e = backlog.entry(target.clone()).or_default();
        e.hints = e.hints.saturating_sub(1);
        e.bytes = e
            .bytes
            .saturating_sub((hint.hint_key.len() + raw.len()) as u64);
        Ok(true)
    }

    /// The backlog per target.
    pub fn backlog(&self) -> BTreeMap<NodeId, Backlog> {
        lock(&self.backlog).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, ConflictArg, TableConfig, TableEntry};
    use dyno_core::PartitionId;
    use dyno_storage::MemoryStore;

    fn open(store: &Arc<dyn Store>) -> Replica {
        let catalog = Arc::new(Catalog::load(Arc::clone(store)).expect("catalog"));
        for (name, n) in [("three", 3), ("one", 1)] {
            catalog
                .merge(TableEntry::in_default_tenant(
                    name,
                    TableConfig {
                        n,
                        r: 1,
                        w: 1,
                        conflict: ConflictArg::Siblings,
                    },
                    1,
                ))
                .expect("table");
        }
        let trees = Arc::new(Trees::new(4, catalog));
        Replica::open(Arc::clone(store), 1 << 20, trees).expect("replica")
    }

    fn roots(r: &Replica) -> Vec<u64> {
        [1u32, 3]
            .iter()
            .flat_map(|&n| (0..16).map(move |p| (n, p)))
            .map(|k| r.trees.root(k))
            .collect()
    }

    /// A blind last-writer-wins write of `value` to key `k` of table
    /// `three`, reading only where `reads` allows.
    fn lww_write(
        r: &Replica,
        value: &'static str,
        reads: Reads,
    ) -> Result<(Object, Option<usize>), ReplicaError> {
        r.coordinate(
            "three",
            b"k",
            &VersionVector::new(),
            Some(Bytes::from(value)),
            ConflictMode::Lww,
            None,
            reads,
        )
    }

    /// A write or read that needs the disk stops when it may read only
    /// memory, and leaves no trace: the stored value and the Merkle trees
    /// are as before. Allowed the disk, it goes through; the blocks it read
    /// are then in memory.
    #[test]
    fn memory_only_operations_stop_before_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = dyno_storage::RocksConfig::new(dir.path());
        // Without the item cache, which would answer from memory.
        config.item_cache_bytes = 0;
        let rocks = Arc::new(dyno_storage::RocksStore::open(&config).expect("open"));
        let store: Arc<dyn Store> = Arc::clone(&rocks) as Arc<dyn Store>;
        let r = open(&store);
        lww_write(&r, "old", Reads::Anywhere).expect("write");
        // Compacted: the value is in a new file, none of whose data blocks
        // has been read into the block cache yet (a flush would have left
        // them there).
        rocks.compact().expect("compact");
        let before = roots(&r);
        let e = lww_write(&r, "new", Reads::Memory).expect_err("needs the disk");
        assert!(e.needs_disk(), "{e}");
        let e = r
            .get_with_hints("three", b"k", ConflictMode::Lww, Reads::Memory)
            .expect_err("needs the disk");
        assert!(e.needs_disk(), "{e}");
        assert_eq!(roots(&r), before, "the trees saw no write");
        let stored = r.get_item("three", b"k").expect("read").expect("present");
        assert_eq!(
            stored.live_values().collect::<Vec<_>>(),
            [&Bytes::from("old")]
        );
        // The read above brought the blocks in: memory is enough now.
        lww_write(&r, "new", Reads::Memory).expect("in memory now");
        let stored = r
            .get_with_hints("three", b"k", ConflictMode::Lww, Reads::Memory)
            .expect("read")
            .expect("present");
        assert_eq!(
            stored.live_values().collect::<Vec<_>>(),
            [&Bytes::from("new")]
        );
        assert_ne!(roots(&r), before);
    }

    /// A memory-only operation does not wait for its key's lock stripe
    /// (the holder may be reading the disk on a blocking thread): it stops,
    /// wrote nothing, and asks for the blocking pool; once the stripe is
    /// free it goes through.
    #[test]
    fn memory_only_operations_do_not_wait_for_a_busy_stripe() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let r = open(&store);
        lww_write(&r, "old", Reads::Memory).expect("stripe free");
        let before = roots(&r);
        let item_key = encode_item_key("three", b"k");
        let held = r.stripe(&item_key);
        let e = lww_write(&r, "new", Reads::Memory).expect_err("stripe held");
        assert!(matches!(e, ReplicaError::Busy), "{e}");
        assert!(e.must_block() && !e.needs_disk(), "{e}");
        let incoming = r.get_item("three", b"k").expect("read").expect("present");
        let e = r
            .merge_item_deferred("three", b"k", &incoming, ConflictMode::Lww, Reads::Memory)
            .expect_err("stripe held");
        assert!(e.must_block(), "{e}");
        drop(held);
        assert_eq!(roots(&r), before, "nothing was written");
        lww_write(&r, "new", Reads::Memory).expect("stripe free again");
        let stored = r.get_item("three", b"k").expect("read").expect("present");
        assert_eq!(
            stored.live_values().collect::<Vec<_>>(),
            [&Bytes::from("new")]
        );
    }

    /// Per-table figures count live items and their bytes: an overwrite
    /// changes only the bytes, a delete (a tombstone) removes the item,
    /// tables are apart, and a rebuild from the store finds the same.
    #[test]
    fn per_table_loads_count_live_items_and_survive_a_rebuild() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let r = open(&store);
        let none = VersionVector::new();
        let put = |table: &str, key: &str, ctx: &VersionVector, value: Option<usize>| {
            r.coordinate(
                table,
                key.as_bytes(),
                ctx,
                value.map(|n| Bytes::from(vec![b'v'; n])),
                ConflictMode::Siblings,
                None,
                Reads::Anywhere,
            )
            .expect("write")
            .0
        };
        for i in 0..5 {
            put("one", &format!("k{i}"), &none, Some(100));
        }
        put("three", "x", &none, Some(10));
        let loads = r.trees.table_loads();
        let one = loads["one"];
        assert_eq!(one.items, 5);
        assert!(one.bytes > 500 && one.bytes < 1000, "{one:?}");
        assert_eq!(loads["three"].items, 1);

        // Overwrite k0 with its context: same count, more bytes.
        let k0 = put("one", "k0", &none, Some(100));
        assert_eq!(
            r.trees.table_loads()["one"].items,
            5,
            "a sibling is not an item"
        );
        let k0 = put("one", "k0", &k0.client_context(64), Some(1000));
        let after = r.trees.table_loads()["one"];
        assert_eq!(after.items, 5);
        assert!(after.bytes > one.bytes + 800, "{after:?} vs {one:?}");
        // Delete k0: a tombstone is not an item, and its bytes leave.
        put("one", "k0", &k0.client_context(64), None);
        let deleted = r.trees.table_loads()["one"];
        assert_eq!(deleted.items, 4);
        assert!(deleted.bytes < one.bytes, "{deleted:?} vs {one:?}");

        let catalog = Arc::new(Catalog::load(Arc::clone(&store)).expect("catalog"));
        let rebuilt = Trees::new(4, catalog);
        rebuilt.rebuild(store.as_ref()).expect("rebuild");
        assert_eq!(rebuilt.table_loads(), r.trees.table_loads());
    }

    /// A table's scan keeps to its table, pages by entries and by bytes,
    /// and resuming after the page's last key reads the rest once, in both
    /// directions.
    #[test]
    fn table_scans_page_by_count_and_bytes() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let r = open(&store);
        let none = VersionVector::new();
        for i in 0..10u32 {
            for (table, size) in [("one", 600_000), ("three", 10)] {
                r.coordinate(
                    table,
                    format!("k{i}").as_bytes(),
                    &none,
                    Some(Bytes::from(vec![b'v'; size])),
                    ConflictMode::Siblings,
                    None,
                    Reads::Anywhere,
                )
                .expect("write");
            }
        }
        for reverse in [false, true] {
            let (mut lo, mut hi): (Vec<u8>, Option<Vec<u8>>) = (Vec::new(), None);
            let mut keys = Vec::new();
            let mut pages = 0;
            loop {
                let page = r
                    .scan_table("one", &lo, hi.as_deref(), 1000, reverse)
                    .expect("scan");
                pages += 1;
                assert!(page.items.len() <= 4, "a page stops near 2 MiB");
                keys.extend(page.items.iter().map(|(k, _)| k.clone()));
                match page.resume {
                    Some(k) if reverse => hi = Some(k),
                    Some(mut k) => {
                        k.push(0);
                        lo = k;
                    }
                    None => break,
                }
            }
            assert!(pages >= 3);
            assert_eq!(keys.len(), 10, "every item once (reverse: {reverse})");
            let mut sorted = keys.clone();
            sorted.sort();
            if reverse {
                sorted.reverse();
            }
            assert_eq!(keys, sorted);
        }
        let small = r.scan_table("three", &[], None, 3, false).expect("scan");
        assert!(small.items.len() <= 3 && small.resume.is_some());
    }

    /// The trees kept up to date write by write equal the trees a restart
    /// rebuilds by scanning, and so do the load figures.
    #[test]
    fn incremental_trees_match_a_rebuild() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let r = open(&store);
        let none = VersionVector::new();
        for i in 0..300u32 {
            let table = if i % 3 == 0 { "one" } else { "three" };
            let key = format!("k{}", i % 200);
            r.coordinate(
                table,
                key.as_bytes(),
                &none,
                Some(Bytes::from(vec![b'v'; (i % 7) as usize])),
                ConflictMode::Siblings,
                None,
                Reads::Anywhere,
            )
            .expect("write");
        }
        let removed = encode_item_key("three", b"k1");
        assert!(r.remove_item(&removed, None).expect("remove"));
        assert!(!r.remove_item(&removed, None).expect("gone"));
        let other = encode_item_key("three", b"k2");
        assert!(
            !r.remove_item(&other, Some(0))
                .expect("digest mismatch keeps it")
        );
        let incremental = roots(&r);
        assert!(incremental.iter().any(|&x| x != 0));
        let load = r.trees.load();
        drop(r);
        let rebuilt = open(&store);
        assert_eq!(roots(&rebuilt), incremental);
        assert_eq!(rebuilt.trees.load(), load);
        // Items land in the tree of their table's N.
        let pos = dyno_core::hash::key_position("one", b"k0");
        let p = rebuilt.trees.partition_of(pos);
        assert_ne!(rebuilt.trees.root((1, p.0)), 0);
        assert_eq!(p, PartitionId((pos >> 60) as u32));
    }

    /// A damaged record is never served and never stops the node: a read
    /// of it fails once and sets it aside (bytes kept in quarantine), the
    /// tree forgets it exactly (equal to a rebuild of what is stored), a
    /// merge afterwards stores the incoming state whole, and the same holds
    /// for records damaged below the checksum (an object that does not
    /// decode), for damage found by a restart's rebuild or by the scrub,
    /// and for hints.
    #[test]
    fn damaged_records_are_set_aside_and_the_tree_forgets_them() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let r = open(&store);
        let none = VersionVector::new();
        let mut states = BTreeMap::new();
        for i in 0..200u32 {
            let table = if i % 2 == 0 { "one" } else { "three" };
            let key = format!("k{i}");
            let (obj, _) = r
                .coordinate(
                    table,
                    key.as_bytes(),
                    &none,
                    Some(Bytes::from(format!("value {i}"))),
                    ConflictMode::Siblings,
                    None,
                    Reads::Anywhere,
                )
                .expect("write");
            states.insert(key, obj);
        }

        // A flipped bit: the read fails and names the damage, once.
        let before = r.trees.load();
        let k7_size = encode_item_key("three", b"k7").len() + encode_object(&states["k7"]).len();
        assert!(r.damage_item("three", b"k7", 40).expect("damage"));
        let e = r.get_item("three", b"k7").expect_err("damaged");
        assert!(matches!(
            e,
            ReplicaError::Store(StoreError::Corrupt {
                keyspace: Keyspace::Items,
                ..
            })
        ));
        assert_eq!(r.damaged(), Damaged { items: 1, hints: 0 });
        assert_eq!(r.get_item("three", b"k7").expect("read"), None);
        let kept = dyno_storage::quarantine_key(Keyspace::Items, &encode_item_key("three", b"k7"));
        assert!(store.get(Keyspace::Meta, &kept).expect("meta").is_some());
        assert_eq!(
            r.trees.load(),
            (before.0 - 1, before.1 - k7_size as u64),
            "the load figures forget it"
        );

        // An object that passes the checksum but does not decode, met by
        // a merge: set aside, and the incoming state stored whole.
        let k9 = encode_item_key("three", b"k9");
        store
            .put(Keyspace::Items, &k9, &[7, 7, 7])
            .expect("raw put");
        let incoming = &states["k9"];
        assert!(
            r.merge_item("three", b"k9", incoming, ConflictMode::Siblings)
                .expect("merge over a damaged record")
        );
        assert_eq!(
            r.get_item("three", b"k9").expect("read").as_ref(),
            Some(incoming)
        );
        assert_eq!(r.damaged().items, 2);

        // The trees now equal a rebuild of what is stored.
        let incremental = roots(&r);
        drop(r);
        let r = open(&store);
        assert_eq!(roots(&r), incremental);
        assert_eq!(r.damaged(), Damaged::default());

        // Damage found by a restart's rebuild is set aside before serving.
        assert!(r.damage_item("one", b"k10", 3).expect("damage"));
        drop(r);
        let r = open(&store);
        assert_eq!(r.damaged().items, 1);
        assert_eq!(r.get_item("one", b"k10").expect("read"), None);

        // The scrub finds damage nobody reads.
        assert!(r.damage_item("one", b"k12", 77).expect("damage"));
        let (mut start, mut read) = (Vec::new(), 0);
        loop {
            let (n, next) = r.scrub_page(Keyspace::Items, &start, 16).expect("scrub");
            read += n;
            match next {
                Some(k) => start = k,
                None => break,
            }
        }
        assert_eq!(read, 200 - 3, "every record but the damaged ones");
        assert_eq!(r.damaged().items, 2);
        let scrubbed = roots(&r);
        drop(r);
        let r = open(&store);
        assert_eq!(roots(&r), scrubbed);

        // A damaged hint is set aside and leaves the backlog.
        let target = NodeId::new("n2").expect("id");
        r.store_hint(
            &target,
            "three",
            b"h",
            &states["k1"],
            ConflictMode::Siblings,
        )
        .expect("hint");
        assert_eq!(r.backlog()[&target].hints, 1);
        let hk = hint_key(&target, &encode_item_key("three", b"h"));
        assert!(store.flip_bit(Keyspace::Hints, &hk, 70).expect("damage"));
        assert!(r.hints_for(&target, 10).expect("hints").is_empty());
        assert_eq!(r.damaged().hints, 1);
        assert_eq!(r.backlog()[&target], Backlog::default());
    }

    /// Every cut and every single-byte change of a stored hint, and
    /// arbitrary short inputs, decode to an error or a valid hint, never a
    /// panic (hints are read back from disk).
    #[test]
    fn damaged_hint_encodings_never_panic() {
        let mut obj = Object::new();
        obj.update(
            Write {
                context: &VersionVector::new(),
                actor: ActorId(3),
                value: Some(Bytes::from_static(b"hinted value")),
                timestamp: dyno_core::Hlc(1 << 20),
            },
            ConflictMode::Siblings,
            SiblingLimits::default(),
        )
        .expect("update");
        let good = encode_hint(ConflictMode::Lww, 1234, &obj);
        let (mode, created, back) = decode_hint(b"k", &good).expect("valid");
        assert_eq!((mode, created, &back), (ConflictMode::Lww, 1234, &obj));
        for cut in 0..good.len() {
            assert!(decode_hint(b"k", &good[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..good.len() {
            for byte in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] = byte;
                let _ = decode_hint(b"k", &bad);
            }
        }
        for len in 0..64u8 {
            let noise: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37) ^ len).collect();
            let _ = decode_hint(b"k", &noise);
        }
    }
}
