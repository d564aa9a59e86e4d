//! Test helper for `tests/crash.rs`: opens a store, writes keys `0, 1, 2, …`
//! and prints `ack N` after each write returns, until it is killed.
//! `sync-deferred` writes as the node's request path does under
//! `--durability sync`: `write_deferred`, then `wait_durable`, then the ack.
//!
//! Usage: `dyno-crash-writer DIR sync|sync-deferred|periodic VALUE_BYTES`

use std::io::Write;
use std::time::Duration;

use dyno_storage::{Durability, Keyspace, RocksConfig, RocksStore, Store, WriteBatch};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(mode), Some(size)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: dyno-crash-writer DIR sync|sync-deferred|periodic VALUE_BYTES");
        std::process::exit(2);
    };
    let deferred = mode == "sync-deferred";
    let durability = match mode.as_str() {
        "sync" | "sync-deferred" => Durability::Sync,
        _ => Durability::Periodic {
            interval: Duration::from_millis(100),
        },
    };
    let size: usize = size.parse().unwrap_or(100);
    let mut config = RocksConfig::new(dir);
    config.durability = durability;
    let store = match RocksStore::open(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let value = crash_value(i, size);
        let written = if deferred {
            let mut b = WriteBatch::new();
            b.put(Keyspace::Items, i.to_be_bytes().to_vec(), value);
            store.write_deferred(b).and_then(|()| store.wait_durable())
        } else {
            store.put(Keyspace::Items, &i.to_be_bytes(), &value)
        };
        if let Err(e) = written {
            eprintln!("write {i} failed: {e}");
            std::process::exit(1);
        }
        if writeln!(out, "ack {i}").and_then(|()| out.flush()).is_err() {
            std::process::exit(1);
        }
    }
}

/// The value written for key `i`; the test recomputes it to check contents.
fn crash_value(i: u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|j| (i as usize).wrapping_mul(31).wrapping_add(j) as u8)
        .collect()
}
