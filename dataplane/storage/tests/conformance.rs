//! One conformance suite, run against every backend: the behaviour callers
//! rely on must not depend on which store is underneath.

use std::sync::Arc;

use dyno_storage::{Keyspace, MemoryStore, RocksConfig, RocksStore, Store, WriteBatch};

fn get(s: &dyn Store, ks: Keyspace, k: &[u8]) -> Option<Vec<u8>> {
    s.get(ks, k).expect("get")
}

fn missing_key_is_none(s: &dyn Store) {
    assert_eq!(get(s, Keyspace::Items, b"nope"), None);
}

fn put_get_overwrite_delete(s: &dyn Store) {
    s.put(Keyspace::Items, b"k", b"v1").expect("put");
    assert_eq!(get(s, Keyspace::Items, b"k"), Some(b"v1".to_vec()));
    s.put(Keyspace::Items, b"k", b"v2").expect("put");
    assert_eq!(get(s, Keyspace::Items, b"k"), Some(b"v2".to_vec()));
    s.delete(Keyspace::Items, b"k").expect("delete");
    assert_eq!(get(s, Keyspace::Items, b"k"), None);
    // Deleting what is not there is not an error.
    s.delete(Keyspace::Items, b"k").expect("delete again");
}

/// What was just written is in memory: `get_in_memory` answers as `get`.
fn fresh_writes_are_read_from_memory(s: &dyn Store) {
    s.put(Keyspace::Items, b"k", b"v").expect("put");
    assert_eq!(
        s.get_in_memory(Keyspace::Items, b"k").expect("in memory"),
        Some(b"v".to_vec())
    );
    s.delete(Keyspace::Items, b"k").expect("delete");
    assert_eq!(
        s.get_in_memory(Keyspace::Items, b"k").expect("in memory"),
        None
    );
}

fn keyspaces_are_separate(s: &dyn Store) {
    s.put(Keyspace::Items, b"k", b"item").expect("put");
    s.put(Keyspace::Hints, b"k", b"hint").expect("put");
    assert_eq!(get(s, Keyspace::Meta, b"k"), None);
    assert_eq!(get(s, Keyspace::Items, b"k"), Some(b"item".to_vec()));
    assert_eq!(get(s, Keyspace::Hints, b"k"), Some(b"hint".to_vec()));
    s.delete(Keyspace::Hints, b"k").expect("delete");
    assert_eq!(get(s, Keyspace::Items, b"k"), Some(b"item".to_vec()));
}

fn batches_apply_in_order(s: &dyn Store) {
    let mut b = WriteBatch::new();
    b.put(Keyspace::Items, b"a".to_vec(), b"1".to_vec())
        .put(Keyspace::Items, b"b".to_vec(), b"2".to_vec())
        .delete(Keyspace::Items, b"a".to_vec())
        .put(Keyspace::Meta, b"m".to_vec(), b"3".to_vec());
    s.write(b).expect("batch");
    assert_eq!(get(s, Keyspace::Items, b"a"), None);
    assert_eq!(get(s, Keyspace::Items, b"b"), Some(b"2".to_vec()));
    assert_eq!(get(s, Keyspace::Meta, b"m"), Some(b"3".to_vec()));
    s.write(WriteBatch::new()).expect("empty batch");
}

fn binary_keys_and_values_and_sizes(s: &dyn Store) {
    let key = [0u8, 0xff, 0, 0x80];
    s.put(Keyspace::Items, &key, b"").expect("empty value");
    assert_eq!(get(s, Keyspace::Items, &key), Some(Vec::new()));
    let big: Vec<u8> = (0..(1 << 20) + 512).map(|i| (i % 251) as u8).collect();
    s.put(Keyspace::Items, b"big", &big).expect("1 MiB value");
    assert_eq!(get(s, Keyspace::Items, b"big"), Some(big));
}

fn scans_are_ordered_bounded_and_limited(s: &dyn Store) {
    for i in [5u8, 1, 9, 3, 7] {
        s.put(Keyspace::Items, &[i], &[i * 10]).expect("put");
    }
    s.put(Keyspace::Hints, &[4], b"other keyspace")
        .expect("put");
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k[0]).collect::<Vec<_>>();
    assert_eq!(
        keys(s.scan(Keyspace::Items, &[0], None, 100).expect("scan")),
        vec![1, 3, 5, 7, 9]
    );
    assert_eq!(
        keys(
            s.scan(Keyspace::Items, &[3], Some(&[7]), 100)
                .expect("scan")
        ),
        vec![3, 5]
    );
    assert_eq!(
        keys(s.scan(Keyspace::Items, &[2], None, 2).expect("scan")),
        vec![3, 5]
    );
    assert!(
        s.scan(Keyspace::Items, &[7], Some(&[3]), 100)
            .expect("scan")
            .is_empty()
    );
    let with_values = s.scan(Keyspace::Items, &[9], None, 10).expect("scan");
    assert_eq!(with_values, vec![(vec![9], vec![90])]);
    // Reverse scans: the same bounds, highest first.
    assert_eq!(
        keys(s.scan_rev(Keyspace::Items, &[0], None, 100).expect("scan")),
        vec![9, 7, 5, 3, 1]
    );
    assert_eq!(
        keys(
            s.scan_rev(Keyspace::Items, &[3], Some(&[7]), 100)
                .expect("scan")
        ),
        vec![5, 3]
    );
    assert_eq!(
        keys(
            s.scan_rev(Keyspace::Items, &[2], Some(&[8]), 2)
                .expect("scan")
        ),
        vec![7, 5]
    );
    assert!(
        s.scan_rev(Keyspace::Items, &[7], Some(&[3]), 100)
            .expect("scan")
            .is_empty()
    );
}

fn concurrent_writers_all_land(s: Arc<dyn Store>) {
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..200u8 {
                    s.put(Keyspace::Items, &[t, i], &[i]).expect("put");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    assert_eq!(
        s.scan(Keyspace::Items, &[], None, 10_000)
            .expect("scan")
            .len(),
        800
    );
    s.sync().expect("sync");
}

/// Readers racing writers of the same keys never make a writer read an
/// older value than its own last write, and once the writers stop every key
/// reads its last value (`RocksStore`'s item cache must follow every write;
/// the suite also runs with a cache too small to hold these keys, so reads
/// miss, fill and evict all the time). That a slow reader's fill never
/// overwrites a newer write is shown deterministically in `cache.rs`.
fn readers_racing_writers_leave_the_last_value(s: Arc<dyn Store>) {
    const WRITERS: u8 = 4;
    const KEYS_EACH: u8 = 16;
    const ROUNDS: u32 = 300;
    let read = |s: &dyn Store, k: &[u8]| {
        get(s, Keyspace::Items, k).map(|v| u32::from_be_bytes(v[..4].try_into().expect("u32")))
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let s = Arc::clone(&s);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for k in 0..WRITERS * KEYS_EACH {
                        s.get(Keyspace::Items, &[k]).expect("get");
                    }
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 1..=ROUNDS {
                    for k in w * KEYS_EACH..(w + 1) * KEYS_EACH {
                        s.put(Keyspace::Items, &[k], &i.to_be_bytes()).expect("put");
                        let seen = read(&*s, &[k]);
                        assert_eq!(seen, Some(i), "key {k} read {seen:?} after writing {i}");
                    }
                }
            })
        })
        .collect();
    let outcome: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader");
    }
    for o in outcome {
        o.expect("writer");
    }
    for k in 0..WRITERS * KEYS_EACH {
        assert_eq!(read(&*s, &[k]), Some(ROUNDS), "key {k}");
    }
}

/// Deferred writes are visible at once and survive `wait_durable`, from
/// many threads at a time (the group-commit path).
fn deferred_writes_land_and_become_durable(s: Arc<dyn Store>) {
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..50u8 {
                    let mut b = WriteBatch::new();
                    b.put(Keyspace::Items, vec![t, i], vec![i]);
                    s.write_deferred(b).expect("deferred write");
                    assert_eq!(get(&*s, Keyspace::Items, &[t, i]), Some(vec![i]));
                    s.wait_durable().expect("durable");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    assert_eq!(
        s.scan(Keyspace::Items, &[], None, 10_000)
            .expect("scan")
            .len(),
        400
    );
}

fn corruption_is_caught_and_quarantined(s: &dyn Store) {
    use dyno_storage::{Corruption, StoreError, quarantine_key};
    for k in [b"a".as_slice(), b"b", b"c"] {
        s.put(Keyspace::Items, k, b"value").expect("put");
    }
    let stored = s
        .get_stored(Keyspace::Items, b"b")
        .expect("raw")
        .expect("there");
    assert!(s.flip_bit(Keyspace::Items, b"b", 13).expect("flip"));
    assert!(
        !s.flip_bit(Keyspace::Items, b"zz", 13).expect("flip"),
        "absent"
    );
    let corrupt = |e: StoreError| match e {
        StoreError::Corrupt {
            keyspace,
            key,
            reason,
        } => (keyspace, key, reason),
        other => panic!("expected Corrupt, got {other}"),
    };
    let e = s.get(Keyspace::Items, b"b").expect_err("corrupt get");
    assert_eq!(
        corrupt(e),
        (Keyspace::Items, b"b".to_vec(), Corruption::Checksum)
    );
    let e = s
        .scan(Keyspace::Items, b"", None, 10)
        .expect_err("corrupt scan");
    assert_eq!(corrupt(e).1, b"b".to_vec(), "the scan names the bad key");
    // Neighbours still read; a scan that stops short of it succeeds.
    assert_eq!(get(s, Keyspace::Items, b"a"), Some(b"value".to_vec()));
    assert_eq!(
        s.scan(Keyspace::Items, b"", Some(b"b"), 10)
            .expect("scan")
            .len(),
        1
    );

    let size = s.quarantine(Keyspace::Items, b"b").expect("quarantine");
    assert_eq!(size, Some(stored.len()));
    assert_eq!(s.quarantine(Keyspace::Items, b"b").expect("again"), None);
    assert_eq!(get(s, Keyspace::Items, b"b"), None, "moved out of items");
    assert_eq!(
        s.scan(Keyspace::Items, b"", None, 10).expect("scan").len(),
        2
    );
    let kept = s
        .get_stored(Keyspace::Meta, &quarantine_key(Keyspace::Items, b"b"))
        .expect("meta")
        .expect("kept");
    assert_eq!(
        s.get(Keyspace::Meta, &quarantine_key(Keyspace::Items, b"b"))
            .expect("meta get")
            .map(|v| v.len()),
        Some(stored.len()),
        "the damaged bytes are kept whole, in a frame of their own"
    );
    assert!(kept.len() > stored.len());
    // A damaged format byte is refused too, never misread.
    s.put_stored(Keyspace::Items, b"c", vec![7, 1, 2, 3])
        .expect("raw put");
    let e = s.get(Keyspace::Items, b"c").expect_err("unknown format");
    assert_eq!(corrupt(e).2, Corruption::Format(7));
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[test]
            fn missing_key() {
                let (s, _guard) = $make;
                missing_key_is_none(&*s);
            }
            #[test]
            fn put_get_delete() {
                let (s, _guard) = $make;
                put_get_overwrite_delete(&*s);
            }
            #[test]
            fn fresh_writes_in_memory() {
                let (s, _guard) = $make;
                fresh_writes_are_read_from_memory(&*s);
            }
            #[test]
            fn keyspaces() {
                let (s, _guard) = $make;
                keyspaces_are_separate(&*s);
            }
            #[test]
            fn batches() {
                let (s, _guard) = $make;
                batches_apply_in_order(&*s);
            }
            #[test]
            fn binary_and_large() {
                let (s, _guard) = $make;
                binary_keys_and_values_and_sizes(&*s);
            }
            #[test]
            fn scans() {
                let (s, _guard) = $make;
                scans_are_ordered_bounded_and_limited(&*s);
            }
            #[test]
            fn concurrency() {
                let (s, _guard) = $make;
                concurrent_writers_all_land(s);
            }
            #[test]
            fn corruption() {
                let (s, _guard) = $make;
                corruption_is_caught_and_quarantined(&*s);
            }
            #[test]
            fn racing_readers() {
                let (s, _guard) = $make;
                readers_racing_writers_leave_the_last_value(s);
            }
            #[test]
            fn deferred() {
                let (s, _guard) = $make;
                deferred_writes_land_and_become_durable(s);
            }
        }
    };
}

fn rocks() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = RocksStore::open(&RocksConfig::new(dir.path())).expect("open");
    (Arc::new(s), dir)
}

/// An item cache of one small entry per shard: most reads miss and fill it,
/// and writes evict.
fn rocks_tiny_cache() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = RocksConfig::new(dir.path());
    cfg.item_cache_bytes = 64 * 80;
    let s = RocksStore::open(&cfg).expect("open");
    (Arc::new(s), dir)
}

fn rocks_sync() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = RocksConfig::new(dir.path());
    cfg.durability = dyno_storage::Durability::Sync;
    let s = RocksStore::open(&cfg).expect("open");
    (Arc::new(s), dir)
}

conformance!(memory, (Arc::new(MemoryStore::new()) as Arc<dyn Store>, ()));
conformance!(rocksdb, rocks());
conformance!(rocksdb_sync, rocks_sync());
conformance!(rocksdb_tiny_cache, rocks_tiny_cache());

/// Under `Durability::Sync`, concurrent deferred writers share fsyncs.
#[test]
fn rocksdb_sync_writers_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = RocksConfig::new(dir.path());
    cfg.durability = dyno_storage::Durability::Sync;
    let s = Arc::new(RocksStore::open(&cfg).expect("open"));
    let threads: Vec<_> = (0..16u8)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..25u8 {
                    let mut b = WriteBatch::new();
                    b.put(Keyspace::Items, vec![t, i], vec![0; 1024]);
                    s.write_deferred(b).expect("write");
                    s.wait_durable().expect("durable");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let fsyncs = s.group_fsyncs();
    println!("400 sync writes from 16 threads: {fsyncs} fsyncs");
    // How many are shared depends on the disk's fsync time; at least one ran.
    assert!(
        (1..=400).contains(&fsyncs),
        "{fsyncs} fsyncs for 400 writes"
    );
}

/// Under `Durability::Sync` a deferred write sits in RocksDB's WAL buffer
/// until someone waits for durability; closing the store writes it out
/// (RocksDB's log writer does as it closes).
#[test]
fn rocksdb_sync_keeps_unawaited_deferred_writes_on_a_clean_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = RocksConfig::new(dir.path());
    cfg.durability = dyno_storage::Durability::Sync;
    {
        let s = RocksStore::open(&cfg).expect("open");
        for i in 0..100u8 {
            let mut b = WriteBatch::new();
            b.put(Keyspace::Items, vec![i], vec![i; 100]);
            s.write_deferred(b).expect("write");
        }
    }
    let s = RocksStore::open(&cfg).expect("reopen");
    for i in 0..100u8 {
        assert_eq!(
            get(&s, Keyspace::Items, &[i]),
            Some(vec![i; 100]),
            "key {i}"
        );
    }
}

#[test]
fn rocksdb_data_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = RocksStore::open(&RocksConfig::new(dir.path())).expect("open");
        s.put(Keyspace::Items, b"k", b"v").expect("put");
        s.put(Keyspace::Hints, b"h", b"x").expect("put");
    }
    let s = RocksStore::open(&RocksConfig::new(dir.path())).expect("reopen");
    assert_eq!(get(&s, Keyspace::Items, b"k"), Some(b"v".to_vec()));
    assert_eq!(get(&s, Keyspace::Hints, b"h"), Some(b"x".to_vec()));
}

/// After a restart the block cache is empty: a value in an SST file is not
/// in memory until a blocking read has brought its blocks in.
#[test]
fn rocksdb_reads_from_disk_only_when_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = RocksStore::open(&RocksConfig::new(dir.path())).expect("open");
        s.put(Keyspace::Items, b"k", b"v").expect("put");
        s.flush().expect("flush");
    }
    let s = RocksStore::open(&RocksConfig::new(dir.path())).expect("reopen");
    let err = s
        .get_in_memory(Keyspace::Items, b"k")
        .expect_err("on disk only");
    assert!(
        matches!(err, dyno_storage::StoreError::NotInMemory),
        "{err}"
    );
    assert_eq!(get(&s, Keyspace::Items, b"k"), Some(b"v".to_vec()));
    assert_eq!(
        s.get_in_memory(Keyspace::Items, b"k").expect("cached now"),
        Some(b"v".to_vec())
    );
    // A key the file's filter rules out needs no disk either.
    assert_eq!(
        s.get_in_memory(Keyspace::Items, b"nope").expect("filtered"),
        None
    );
}

#[test]
fn rocksdb_flush_leaves_its_blocks_in_memory() {
    // A flush writes its blocks into the block cache as well, so the
    // first reads of the new file need no disk (and, on the request path,
    // no hop to the blocking pool). With or without the background write
    // limit.
    for limit in [0, 64 << 20] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = RocksConfig::new(dir.path());
        config.background_write_bytes_per_sec = limit;
        let s = RocksStore::open(&config).expect("open");
        let value = vec![7u8; 1024];
        for i in 0..2000u32 {
            s.put(Keyspace::Items, &i.to_be_bytes(), &value)
                .expect("put");
        }
        s.flush().expect("flush");
        for i in 0..2000u32 {
            assert_eq!(
                s.get_in_memory(Keyspace::Items, &i.to_be_bytes())
                    .unwrap_or_else(|e| panic!("key {i} after the flush (limit {limit}): {e}")),
                Some(value.clone())
            );
        }
    }
}

#[test]
fn rocksdb_open_errors_are_typed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _held = RocksStore::open(&RocksConfig::new(dir.path())).expect("open");
    // A second open of the same directory fails on RocksDB's lock file.
    let err = RocksStore::open(&RocksConfig::new(dir.path())).expect_err("locked");
    assert!(
        matches!(err, dyno_storage::StoreError::Open { .. }),
        "{err}"
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let err = RocksStore::open(&RocksConfig::new(&file)).expect_err("not a directory");
    assert!(
        matches!(err, dyno_storage::StoreError::Open { .. }),
        "{err}"
    );
}
