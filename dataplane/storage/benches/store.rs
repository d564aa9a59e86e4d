//! Put and get of 1 KiB values through the `Store` trait.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dyno_storage::{Durability, Keyspace, MemoryStore, RocksConfig, RocksStore, Store};

const VALUE: [u8; 1024] = [7u8; 1024];
const KEYS: u64 = 100_000;

fn bench_store(c: &mut Criterion, name: &str, store: &dyn Store) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(VALUE.len() as u64));
    let mut i = 0u64;
    g.bench_function("put_1KiB", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            store
                .put(
                    Keyspace::Items,
                    &i.wrapping_mul(0x9e37_79b9).to_be_bytes(),
                    &VALUE,
                )
                .expect("put");
        })
    });
    for k in 0..KEYS {
        store
            .put(
                Keyspace::Items,
                &k.wrapping_mul(0x9e37_79b9).to_be_bytes(),
                &VALUE,
            )
            .expect("put");
    }
    let mut j = 0u64;
    g.bench_function("get_1KiB", |b| {
        b.iter(|| {
            j = (j + 7919) % KEYS;
            black_box(
                store
                    .get(Keyspace::Items, &j.wrapping_mul(0x9e37_79b9).to_be_bytes())
                    .expect("get"),
            );
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let periodic = RocksStore::open(&RocksConfig::new(dir.path().join("periodic"))).expect("open");
    bench_store(c, "rocksdb_periodic", &periodic);
    let mut sync_cfg = RocksConfig::new(dir.path().join("sync"));
    sync_cfg.durability = Durability::Sync;
    let sync = RocksStore::open(&sync_cfg).expect("open");
    bench_store(c, "rocksdb_sync", &sync);
    bench_store(c, "memory", &MemoryStore::new());
}

criterion_group! {
    name = store;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(store);
