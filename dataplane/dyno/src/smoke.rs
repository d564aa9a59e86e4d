//! `dyno smoke`: a single-node run of the storage engine.
//!
//! It writes `--keys` objects as a coordinator would (a DVV update of the
//! stored object, encoded and framed), makes a concurrent sibling on every
//! tenth key, deletes every twentieth, closes and reopens the store, and
//! checks that every key reads back as expected. It prints progress and the
//! write and read throughput.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use dyno_core::codec::{decode_object, encode_object};
use dyno_core::keys::encode_item_key;
use dyno_core::{ActorId, ConflictMode, HlcClock, Object, SiblingLimits, VersionVector, Write};
use dyno_storage::{Durability, Keyspace, RocksConfig, RocksStore, Store};

/// Options of `dyno smoke`.
#[derive(Debug, clap::Args)]
pub struct SmokeArgs {
    /// Data directory (created if missing; existing smoke data is replaced).
    #[arg(long, default_value = ".dyno/smoke")]
    data_dir: PathBuf,
    /// Number of keys to write.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    keys: u64,
    /// Value size in bytes (at most 1 MiB).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
    value_bytes: u64,
    /// fsync the write-ahead log before each write returns.
    #[arg(long)]
    sync: bool,
}

const TABLE: &str = "smoke";

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn value_for(i: u64, size: usize) -> Bytes {
    Bytes::from(
        (0..size)
            .map(|j| (i as usize ^ j) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn read(store: &RocksStore, key: &[u8]) -> anyhow::Result<Object> {
    match store.get(Keyspace::Items, key)? {
        Some(raw) => Ok(decode_object(&raw)?),
        None => Ok(Object::new()),
    }
}

fn write(store: &RocksStore, key: &[u8], w: Write<'_>, clock: &mut HlcClock) -> anyhow::Result<()> {
    let mut obj = read(store, key)?;
    let w = Write {
        timestamp: clock.now(wall_ms()),
        ..w
    };
    obj.update(w, ConflictMode::Siblings, SiblingLimits::default())?;
    store.put(Keyspace::Items, key, &encode_object(&obj))?;
    Ok(())
}

/// Runs the smoke test.
pub fn run(args: &SmokeArgs) -> anyhow::Result<()> {
    if args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("removing old smoke data in {}", args.data_dir.display()))?;
    }
    let mut config = RocksConfig::new(&args.data_dir);
    if args.sync {
        config.durability = Durability::Sync;
    }
    let size = args.value_bytes as usize;
    let (a, b) = (ActorId(1), ActorId(2));
    let blind = VersionVector::new();
    let mut clock = HlcClock::default();

    println!(
        "dyno smoke: {} keys of {} bytes into {}",
        args.keys,
        size,
        args.data_dir.display()
    );
    let store = RocksStore::open(&config)?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut ops = 0u64;
    for i in 0..args.keys {
        let key = encode_item_key(TABLE, format!("key{i}").as_bytes());
        let w = Write {
            context: &blind,
            actor: a,
            value: Some(value_for(i, size)),
            timestamp: Default::default(),
        };
        write(&store, &key, w, &mut clock)?;
        ops += 1;
        if i % 10 == 0 {
            // A second writer that has not seen the first: a sibling.
            let w = Write {
                context: &blind,
                actor: b,
                value: Some(value_for(i + 1, size)),
                timestamp: Default::default(),
            };
            write(&store, &key, w, &mut clock)?;
            ops += 1;
        }
        if i % 20 == 0 {
            let ctx = read(&store, &key)?.client_context(dyno_core::context::MAX_CONTEXT_ENTRIES);
            let w = Write {
                context: &ctx,
                actor: a,
                value: None,
                timestamp: Default::default(),
            };
            write(&store, &key, w, &mut clock)?;
            ops += 1;
        }
        if last_report.elapsed() > Duration::from_secs(1) {
            println!("  wrote {i}/{} keys", args.keys);
            last_report = Instant::now();
        }
    }
    let write_secs = started.elapsed().as_secs_f64();
    drop(store);

    let store = RocksStore::open(&config)?;
    let started = Instant::now();
    for i in 0..args.keys {
        let key = encode_item_key(TABLE, format!("key{i}").as_bytes());
        let obj = read(&store, &key)?;
        let values: Vec<&Bytes> = obj.live_values().collect();
        let expected: Vec<Bytes> = match (i % 20 == 0, i % 10 == 0) {
            (true, _) => vec![],
            (false, true) => vec![value_for(i, size), value_for(i + 1, size)],
            (false, false) => vec![value_for(i, size)],
        };
        if values.len() != expected.len() || values.iter().zip(&expected).any(|(g, e)| *g != e) {
            bail!(
                "key{i}: read {} values back, expected {}",
                values.len(),
                expected.len()
            );
        }
    }
    let read_secs = started.elapsed().as_secs_f64();
    println!(
        "dyno smoke: ok. {ops} writes in {write_secs:.2}s ({:.0}/s, read-modify-write each), \
         {} verified reads after reopen in {read_secs:.2}s ({:.0}/s)",
        ops as f64 / write_secs,
        args.keys,
        args.keys as f64 / read_secs
    );
    Ok(())
}
