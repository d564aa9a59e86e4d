//! Crash test: a child process writes and acknowledges, and is killed with
//! SIGKILL at a point chosen by a seeded draw. After reopening, every
//! acknowledged write must be there, intact.
//!
//! The seed is printed; rerun one with `DYNO_CRASH_SEED=<seed>`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use dyno_storage::{Keyspace, RocksConfig, RocksStore, Store};

const VALUE_BYTES: usize = 1024;

fn crash_value(i: u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|j| (i as usize).wrapping_mul(31).wrapping_add(j) as u8)
        .collect()
}

fn seed() -> u64 {
    std::env::var("DYNO_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn run(mode: &str) {
    let seed = seed();
    // splitmix64 step: enough to spread kill points.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let kill_after = 200 + (z ^ (z >> 31)) % 1800;
    println!("crash test ({mode}): seed {seed}, SIGKILL after {kill_after} acks");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dyno-crash-writer"))
        .args([
            dir.path().to_str().expect("utf-8 path"),
            mode,
            &VALUE_BYTES.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("stdout");
    let mut acked: Option<u64> = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read");
        let n: u64 = line
            .strip_prefix("ack ")
            .and_then(|n| n.parse().ok())
            .expect("ack line");
        acked = Some(n);
        if n + 1 >= kill_after {
            break;
        }
    }
    // Child::kill sends SIGKILL on Unix: no destructors, no flush.
    child.kill().expect("kill");
    child.wait().expect("wait");
    let acked = acked.expect("the writer acknowledged something");

    let store = RocksStore::open(&RocksConfig::new(dir.path())).expect("reopen after crash");
    for i in 0..=acked {
        let got = store.get(Keyspace::Items, &i.to_be_bytes()).expect("read");
        assert_eq!(
            got.as_deref(),
            Some(&crash_value(i, VALUE_BYTES)[..]),
            "acknowledged key {i} (seed {seed})"
        );
    }
    println!(
        "crash test ({mode}): all {} acknowledged writes present",
        acked + 1
    );
}

#[test]
fn acknowledged_writes_survive_sigkill_with_sync_durability() {
    run("sync");
}

/// The request path's way under `--durability sync`: the write is applied
/// without a sync (its log record stays in RocksDB's buffer) and the ack
/// waits for a group commit, which writes the buffer out and fsyncs it.
#[test]
fn acknowledged_deferred_writes_survive_sigkill_with_sync_durability() {
    run("sync-deferred");
}

/// Periodic durability survives a *process* crash too: the WAL is written to
/// the OS before the ack; only a machine crash can lose the last interval.
#[test]
fn acknowledged_writes_survive_sigkill_with_periodic_durability() {
    run("periodic");
}
