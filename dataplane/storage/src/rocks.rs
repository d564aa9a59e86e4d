//! The RocksDB backend.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    Direction, IteratorMode, Options, ReadOptions, WriteOptions,
};

use crate::cache::{Lookup, ValueCache};
use crate::{BatchOp, Durability, Entry, Keyspace, Store, StoreError, WriteBatch, frame, unframe};

/// Settings of a [`RocksStore`].
#[derive(Debug, Clone)]
pub struct RocksConfig {
    /// The data directory; created when missing.
    pub path: PathBuf,
    /// When writes are made durable.
    pub durability: Durability,
    /// Size of the shared block cache, in bytes. Default 64 MiB.
    pub block_cache_bytes: usize,
    /// Bloom filter bits per key. Default 10 (about 1% false positives).
    pub bloom_bits_per_key: f64,
    /// Memtable size per keyspace, in bytes: a full memtable is flushed to
    /// an SST file. Default 64 MiB.
    pub write_buffer_bytes: usize,
    /// The most flushes and compactions write per second, in bytes (an
    /// auto-tuned limit: lower while there is little to write). 0: no
    /// limit. Default 64 MiB/s.
    pub background_write_bytes_per_sec: u64,
    /// Size of the item cache in front of point reads of the items
    /// keyspace ([`crate::cache`]), in bytes. 0: none. Default 32 MiB.
    pub item_cache_bytes: usize,
}

impl RocksConfig {
    /// Defaults for a data directory.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RocksConfig {
            path: path.into(),
            durability: Durability::default(),
            block_cache_bytes: 64 << 20,
            bloom_bits_per_key: 10.0,
            write_buffer_bytes: 64 << 20,
            background_write_bytes_per_sec: 64 << 20,
            item_cache_bytes: 32 << 20,
        }
    }
}

/// A store backed by RocksDB.
pub struct RocksStore {
    db: Arc<DB>,
    /// For `get`: every tier.
    reads: ReadOptions,
    /// For `get_in_memory`: memtables and the block cache only.
    memory_reads: ReadOptions,
    write_opts: WriteOptions,
    /// For `write_deferred`: never syncs (the group syncer does).
    deferred_opts: WriteOptions,
    durability: Durability,
    group: crate::group::GroupSync,
    syncer: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    path: PathBuf,
    /// Recent items, in front of the engine's point reads.
    items: Option<ValueCache>,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn engine(e: rocksdb::Error) -> StoreError {
    StoreError::Engine {
        message: e.into_string(),
    }
}

impl RocksStore {
    /// Opens (or creates) the store.
    pub fn open(config: &RocksConfig) -> Result<RocksStore, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: config.path.display().to_string(),
            message,
        };
        std::fs::create_dir_all(&config.path).map_err(|e| open_err(e.to_string()))?;

        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let cf_opts = |ks: Keyspace| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_bloom_filter(config.bloom_bits_per_key, false);
            table.set_cache_index_and_filter_blocks(true);
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            o.set_compression_type(DBCompressionType::Lz4);
            o.set_write_buffer_size(config.write_buffer_bytes);
            ColumnFamilyDescriptor::new(ks.name(), o)
        };
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        // Flushes and compactions run at the lowest CPU priority (nice
        // 19): requests come first, and background work takes the cores
        // they leave. At the default priority a memtable flush took a core
        // from the requests on a busy 2-core machine and showed as bursts of
        // requests 30-70 ms late (bench/MICRO.md). Under sustained writes
        // RocksDB still slows writers down if flushes fall behind.
        let mut env = rocksdb::Env::new().map_err(|e| open_err(e.into_string()))?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        db_opts.set_env(&env);
        db_opts.set_keep_log_file_num(4);
        // Flushes and compactions hand their output to the disk a MiB at a
        // time (sync_file_range) and, with a limit set, at a bounded rate,
        // instead of leaving tens of MiB of dirty pages for one writeback
        // burst: under ext4's ordered journalling such a burst stalled the
        // requests' WAL appends for tens of milliseconds (bench/MICRO.md).
        db_opts.set_bytes_per_sync(1 << 20);
        if config.background_write_bytes_per_sec > 0 {
            // Auto-tuned: the limit follows the demand, up to this rate.
            db_opts.set_auto_tuned_ratelimiter(
                i64::try_from(config.background_write_bytes_per_sec).unwrap_or(i64::MAX),
                100_000,
                10,
            );
        }
        // Under `Sync` every acknowledged write waits for a WAL fsync
        // (`write` syncs, `wait_durable` runs a group commit), and an fsync
        // of the WAL (`FlushWAL(true)`) first writes out what RocksDB has
        // buffered. So the log records need not reach the OS one write(2)
        // each: they stay in RocksDB's buffer until the group commit writes
        // them all at once. Three sync nodes under YCSB-A made 76k WAL
        // write(2)s in 9 s without this, 11k with it (bench/MICRO.md,
        // seventh pass).
        // `Periodic` keeps one write(2) per batch: its acknowledged writes
        // must survive a crash of the process between two fsyncs.
        db_opts.set_manual_wal_flush(config.durability == Durability::Sync);
        let cfs = Keyspace::ALL.map(cf_opts);
        let db = DB::open_cf_descriptors(&db_opts, &config.path, cfs)
            .map_err(|e| open_err(e.into_string()))?;
        // A flush also puts the blocks it writes into the block cache, so the
        // first reads of a new SST file find them in memory: without it each
        // flush sent about 2% of a busy node's reads to the disk path
        // (`Store::get_in_memory` misses). The Rust binding has no setter
        // for this table option; RocksDB accepts it as a mutable option.
        for ks in Keyspace::ALL {
            let cf = db
                .cf_handle(ks.name())
                .ok_or_else(|| open_err(format!("column family {} is missing", ks.name())))?;
            db.set_options_cf(
                cf,
                &[(
                    "block_based_table_factory",
                    "{prepopulate_block_cache=kFlushOnly;}",
                )],
            )
            .map_err(|e| open_err(e.into_string()))?;
        }
        let db = Arc::new(db);

        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(config.durability == Durability::Sync);
        let deferred_opts = WriteOptions::default();
        let syncer = match config.durability {
            Durability::Sync => None,
            Durability::Periodic { interval } => Some(spawn_syncer(Arc::clone(&db), interval)),
        };
        let mut memory_reads = ReadOptions::default();
        memory_reads.set_read_tier(rocksdb::ReadTier::BlockCache);
        Ok(RocksStore {
            db,
            reads: ReadOptions::default(),
            memory_reads,
            write_opts,
            deferred_opts,
            durability: config.durability,
            group: crate::group::GroupSync::default(),
            syncer: Mutex::new(syncer),
            path: config.path.clone(),
            items: (config.item_cache_bytes > 0).then(|| ValueCache::new(config.item_cache_bytes)),
        })
    }

    /// A point read with `options`; `Incomplete` (only a memory-only read
    /// returns it) means the value may be on the disk.
    fn read(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        options: &ReadOptions,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let cache = self.items.as_ref().filter(|_| keyspace == Keyspace::Items);
        let Some(cache) = cache else {
            return self.read_engine(keyspace, key, options);
        };
        match cache.get(key) {
            Lookup::Hit(v) => Ok(v),
            Lookup::Miss(ticket) => {
                let v = self.read_engine(keyspace, key, options)?;
                cache.fill(key, ticket, v.as_deref());
                Ok(v)
            }
        }
    }

    /// [`RocksStore::read`] from the engine itself.
    fn read_engine(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        options: &ReadOptions,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.db.get_pinned_cf_opt(self.cf(keyspace)?, key, options) {
            Ok(Some(v)) => unframe(keyspace, key, &v).map(Some),
            Ok(None) => Ok(None),
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Err(StoreError::NotInMemory),
            Err(e) => Err(engine(e)),
        }
    }

    /// Applies `batch` with `options`, then tells the item cache what it
    /// wrote (or, if the engine failed, forgets the keys: the batch may or
    /// may not be applied).
    fn apply(&self, batch: WriteBatch, options: &WriteOptions) -> Result<(), StoreError> {
        let mut b = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            match op {
                BatchOp::Put {
                    keyspace,
                    key,
                    value,
                } => b.put_cf(self.cf(*keyspace)?, key, frame(key, value)),
                BatchOp::Delete { keyspace, key } => b.delete_cf(self.cf(*keyspace)?, key),
            }
        }
        let done = self.db.write_opt(b, options).map_err(engine);
        if let Some(cache) = &self.items {
            for op in &batch.ops {
                let (keyspace, key, value) = match op {
                    BatchOp::Put {
                        keyspace,
                        key,
                        value,
                    } => (*keyspace, key, Some(&value[..])),
                    BatchOp::Delete { keyspace, key } => (*keyspace, key, None),
                };
                match (keyspace, &done) {
                    (Keyspace::Items, Ok(())) => cache.wrote(key, value),
                    (Keyspace::Items, Err(_)) => cache.forget(key),
                    _ => {}
                }
            }
        }
        done
    }

    /// Fsyncs run by group commit so far (`Durability::Sync`).
    pub fn group_fsyncs(&self) -> u64 {
        self.group.fsyncs()
    }

    /// Up to `limit` entries in `[start, end)`, in key order or reversed
    /// (bounded iterator; SeekToLast honours the upper bound).
    fn range(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Entry>, StoreError> {
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(start.to_vec());
        if let Some(e) = end {
            ro.set_iterate_upper_bound(e.to_vec());
        }
        let mode = if reverse {
            IteratorMode::End
        } else {
            IteratorMode::From(start, Direction::Forward)
        };
        let iter = self.db.iterator_cf_opt(self.cf(keyspace)?, ro, mode);
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (k, v) = item.map_err(engine)?;
            out.push((k.to_vec(), unframe(keyspace, &k, &v)?));
        }
        Ok(out)
    }

    fn cf(&self, ks: Keyspace) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(ks.name())
            .ok_or_else(|| StoreError::Engine {
                message: format!("column family {} is missing", ks.name()),
            })
    }

    /// Flushes memtables to SST files (used to build fixtures and by tests).
    pub fn flush(&self) -> Result<(), StoreError> {
        for ks in Keyspace::ALL {
            self.db.flush_cf(self.cf(ks)?).map_err(engine)?;
        }
        Ok(())
    }

    /// Flushes, then rewrites every keyspace into new files (a full
    /// compaction, used by tests: unlike a flush's, a compaction's output
    /// is not put into the block cache).
    pub fn compact(&self) -> Result<(), StoreError> {
        self.flush()?;
        let mut opts = rocksdb::CompactOptions::default();
        opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for ks in Keyspace::ALL {
            self.db
                .compact_range_cf_opt(self.cf(ks)?, None::<&[u8]>, None::<&[u8]>, &opts);
        }
        Ok(())
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An estimate of the live data size, in bytes, per keyspace.
    pub fn approximate_bytes(&self, ks: Keyspace) -> Result<u64, StoreError> {
        let sst = self
            .db
            .property_int_value_cf(self.cf(ks)?, "rocksdb.estimate-live-data-size")
            .map_err(engine)?;
        let mem = self
            .db
            .property_int_value_cf(self.cf(ks)?, "rocksdb.cur-size-all-mem-tables")
            .map_err(engine)?;
        Ok(sst.unwrap_or(0) + mem.unwrap_or(0))
    }
}

/// fsyncs the WAL every `interval` until the sender is dropped.
fn spawn_syncer(db: Arc<DB>, interval: std::time::Duration) -> (mpsc::Sender<()>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("dyno-wal-sync".into())
        .spawn(move || {
            // Ticks until the store is dropped (the sender goes away).
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                // A failed fsync is retried at the next tick; the WAL data is
                // still in the OS page cache meanwhile.
                let _ = db.flush_wal(true);
            }
            let _ = db.flush_wal(true);
        })
        .ok();
    match handle {
        Some(h) => (tx, h),
        // Could not start a thread: fall back to syncing on every stop only.
        None => (tx, std::thread::spawn(|| {})),
    }
}

impl Drop for RocksStore {
    fn drop(&mut self) {
        let taken = self.syncer.lock().map(|mut s| s.take()).unwrap_or(None);
        if let Some((tx, handle)) = taken {
            drop(tx);
            let _ = handle.join();
        }
    }
}

impl Store for RocksStore {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(keyspace, key, &self.reads)
    }

    fn get_in_memory(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(keyspace, key, &self.memory_reads)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.apply(batch, &self.write_opts)
    }

    fn write_deferred(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.apply(batch, &self.deferred_opts)
    }

    fn wait_durable(&self) -> Result<(), StoreError> {
        if self.durability != Durability::Sync {
            return Ok(());
        }
        self.group
            .wait(|| self.db.flush_wal(true).map_err(|e| e.into_string()))
            .map_err(|message| StoreError::Engine { message })
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.range(keyspace, start, end, limit, false)
    }

    fn scan_rev(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.range(keyspace, start, end, limit, true)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(engine)
    }

    fn cache_stats(&self) -> Option<crate::cache::CacheStats> {
        self.items.as_ref().map(ValueCache::stats)
    }

    fn get_stored(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(keyspace)?, key).map_err(engine)
    }

    fn put_stored(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        stored: Vec<u8>,
    ) -> Result<(), StoreError> {
        let done = self
            .db
            .put_cf_opt(self.cf(keyspace)?, key, stored, &self.write_opts)
            .map_err(engine);
        // The bytes may not even be a frame: the next read must see them.
        if let (Some(cache), Keyspace::Items) = (&self.items, keyspace) {
            cache.forget(key);
        }
        done
    }
}
