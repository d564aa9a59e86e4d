//! Group commit for `--durability sync`, awaited rather than blocked on.
//!
//! A write on the request path is applied without an fsync (it is in
//! RocksDB's write-ahead log, in the OS page cache) on the async thread that
//! handles it, takes its key's lock only for that, and then awaits
//! [`GroupCommit::wait`], which returns once an fsync that *started after
//! the write* has completed. One task runs the fsyncs, one at a time on a
//! blocking thread, while writers wait: each covers every write that
//! arrived before it started (see Pacing below). So concurrent writers,
//! local and from other coordinators, share fsyncs, and no thread sits
//! blocked per waiting write (the blocking version, `dyno_storage`'s
//! `GroupSync`, cost a thread hand-off per write and about three times the
//! CPU per operation; it stays for background work that already runs on
//! blocking threads).
//!
//! **Pacing.** An fsync costs CPU whatever it covers (on this project's
//! 2-core VM: about 0.6 ms of wall time and 70 µs of CPU in the process
//! alone, plus the journal thread's; three local nodes share one journal,
//! so under load their fsyncs queue behind each other). Run back to back
//! under load, each covers only the writes that arrived during the one
//! before. So when an fsync covered at least [`BUSY`] writes (the writers
//! are many), the next starts no sooner than `interval` after it started,
//! and covers every write of that interval: fewer fsyncs, more writes
//! each, at up to one interval of extra latency. Below that (a lone writer,
//! a few), fsyncs run back to back as before and no write waits for the
//! pace. Measured on 3 local nodes under YCSB-A with 64 clients
//! (bench/MICRO.md): a 4 ms pace cut the fsyncs 2-3 times and the CPU per
//! operation by about 15%.
//!
//! A failed fsync fails every write it was to cover: their callers answer
//! with an error rather than acknowledge a write that may not be on disk.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use tokio::sync::Notify;

use crate::error::ServiceError;
use crate::sys;

type SyncFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Debug, Default)]
struct State {
    /// Fsyncs started so far (the number of the latest).
    started: u64,
    /// The fsync the latest waiter needs.
    wanted: u64,
    /// True while the fsync task runs.
    running: bool,
    /// The latest fsync completed.
    completed: u64,
    /// The latest failed fsync and its error.
    failed: Option<(u64, String)>,
    /// When the latest fsync started.
    last_start: Option<Instant>,
    /// Calls to `wait` so far.
    waits: u64,
    /// `waits` when the latest fsync started.
    waits_at_start: u64,
    /// Writes the latest fsync covered (the waits since the one before).
    last_covered: u64,
}

/// An fsync that covered at least this many writes shows a load for which
/// the next one is paced.
pub const BUSY: u64 = 4;

/// The group commit's counters (exported as metrics).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Fsyncs of the write-ahead log run.
    pub fsyncs: Counter,
    /// Writes that waited for one: waits ÷ fsyncs is how many writes an
    /// fsync covered.
    pub waits: Counter,
}

/// Shares fsyncs between concurrent writers (see the module docs).
///
/// Waiters are woken through a `Notify`, not a `watch` channel: tokio's
/// `watch` picks a random shard of waiters to wake first, which would make
/// the deterministic simulation (`tests/simulate.rs`) differ from run to
/// run.
pub struct GroupCommit {
    state: Mutex<State>,
    done: Notify,
    sync: SyncFn,
    /// The shortest time between the starts of two fsyncs.
    interval: Duration,
    stats: Stats,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("state", &*sys::lock(&self.state))
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// A group commit that makes writes durable with `sync` (an fsync of
    /// the write-ahead log; run on a blocking thread), starting fsyncs at
    /// least `interval` apart (zero: as soon as the previous one ends),
    /// counting them in `stats`.
    pub fn new(
        sync: impl Fn() -> Result<(), String> + Send + Sync + 'static,
        interval: Duration,
        stats: Stats,
    ) -> Arc<Self> {
        Arc::new(GroupCommit {
            state: Mutex::default(),
            done: Notify::new(),
            sync: Arc::new(sync),
            interval,
            stats,
        })
    }

    /// Returns once every write this task finished before the call is
    /// durable, or the error of the fsync that was to cover them.
    pub async fn wait(self: &Arc<Self>) -> Result<(), ServiceError> {
        self.stats.waits.inc();
        let needed = {
            let mut s = sys::lock(&self.state);
            s.waits += 1;
            // An fsync running now may have started before the write; the
            // next one to start covers it.
            let needed = s.started + 1;
            s.wanted = s.wanted.max(needed);
            if !s.running {
                s.running = true;
                tokio::spawn(Arc::clone(self).run());
            }
            needed
        };
        loop {
            // Registered before the check, so a completion in between is
            // not missed.
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            {
                let s = sys::lock(&self.state);
                if s.completed >= needed {
                    return match &s.failed {
                        Some((n, e)) if *n >= needed => Err(ServiceError::internal(format!(
                            "the write-ahead log could not be synced: {e}"
                        ))),
                        _ => Ok(()),
                    };
                }
            }
            done.await;
        }
    }

    /// Fsyncs completed so far.
    pub fn fsyncs(&self) -> u64 {
        sys::lock(&self.state).completed
    }

    /// Runs fsyncs while some waiter needs one, paced by `interval`.
    async fn run(self: Arc<Self>) {
        loop {
            // Under load, waiting out the rest of the interval lets more
            // writers join the fsync. (Never in a simulation, whose blocking work runs
            // on its only thread in virtual time.)
            let pause = {
                let s = sys::lock(&self.state);
                s.last_start
                    .filter(|_| s.last_covered >= BUSY)
                    .map(|p| self.interval.saturating_sub(p.elapsed()))
                    .filter(|d| !d.is_zero() && !sys::simulated())
            };
            let me = Arc::clone(&self);
            let done = sys::blocking(move || {
                if let Some(d) = pause {
                    std::thread::sleep(d);
                }
                // Counted as started only now, so that writers that came
                // during the pause are covered by this fsync.
                let mine = {
                    let mut s = sys::lock(&me.state);
                    s.started += 1;
                    s.last_start = Some(Instant::now());
                    s.last_covered = s.waits - s.waits_at_start;
                    s.waits_at_start = s.waits;
                    s.started
                };
                (mine, (me.sync)())
            })
            .await;
            let (mine, res) = match done {
                Ok(r) => r,
                Err(e) => {
                    // The blocking task panicked or was cancelled: whether
                    // it counted its fsync as started is unknown, so fail
                    // every writer waiting now (they all need one numbered
                    // at most `started + 1`).
                    let s = sys::lock(&self.state);
                    (s.started + 1, Err(format!("the fsync task failed: {e}")))
                }
            };
            self.stats.fsyncs.inc();
            if let Err(e) = &res {
                tracing::error!(error = %e, "fsync of the write-ahead log failed");
            }
            let mut s = sys::lock(&self.state);
            s.started = s.started.max(mine);
            s.completed = mine;
            if let Err(e) = res {
                s.failed = Some((mine, e));
            }
            self.done.notify_waiters();
            if s.wanted <= mine {
                s.running = false;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// An fsync that records how many writes it covered, paced by
    /// `interval`.
    fn counting(interval: Duration) -> (Arc<GroupCommit>, Arc<AtomicU64>, Arc<AtomicU64>) {
        let written = Arc::new(AtomicU64::new(0));
        let synced = Arc::new(AtomicU64::new(0));
        let (w, s) = (Arc::clone(&written), Arc::clone(&synced));
        let g = GroupCommit::new(
            move || {
                // What the fsync makes durable is what was written when
                // it started.
                let upto = w.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                s.store(upto, Ordering::SeqCst);
                Ok(())
            },
            interval,
            Stats::default(),
        );
        (g, written, synced)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_write_is_covered_and_writers_share_fsyncs() {
        for interval in [Duration::ZERO, Duration::from_millis(5)] {
            writers_are_covered(interval).await;
        }
    }

    async fn writers_are_covered(interval: Duration) {
        let (g, written, synced) = counting(interval);
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (g, written, synced) = (Arc::clone(&g), Arc::clone(&written), Arc::clone(&synced));
            tasks.push(tokio::spawn(async move {
                let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                g.wait().await.expect("synced");
                // The fsync that released this writer saw its write.
                assert!(synced.load(Ordering::SeqCst) >= mine);
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let fsyncs = g.fsyncs();
        assert!((1..200).contains(&fsyncs), "{fsyncs} fsyncs for 200 writes");
        assert_eq!(g.stats.fsyncs.get(), fsyncs);
        assert_eq!(g.stats.waits.get(), 200);
    }

    /// A steady stream of writes (four every millisecond, 200 in all)
    /// against an fsync of 1 ms paced by `interval`: the fsyncs run.
    async fn steady_writes(interval: Duration) -> u64 {
        let g = GroupCommit::new(
            || {
                std::thread::sleep(Duration::from_millis(1));
                Ok(())
            },
            interval,
            Stats::default(),
        );
        let mut tasks = Vec::new();
        for _ in 0..50 {
            for _ in 0..4 {
                let g = Arc::clone(&g);
                tasks.push(tokio::spawn(async move { g.wait().await.expect("synced") }));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for t in tasks {
            t.await.expect("task");
        }
        g.fsyncs()
    }

    /// Under a steady stream of many writers, fsyncs are paced and each
    /// covers many writes (without pacing, each covers the few that came
    /// during the one before).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_load_fsyncs_are_paced() {
        let unpaced = steady_writes(Duration::ZERO).await;
        let paced = steady_writes(Duration::from_millis(20)).await;
        println!("200 steady writes: {unpaced} fsyncs unpaced, {paced} paced at 20 ms");
        assert!(
            paced * 2 < unpaced,
            "{paced} fsyncs paced at 20 ms against {unpaced} unpaced"
        );
    }

    /// A lone writer, each write after the previous one is durable, never
    /// waits for the pace: every fsync covers one write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_writer_is_not_paced() {
        let g = GroupCommit::new(|| Ok(()), Duration::from_secs(30), Stats::default());
        let t = Instant::now();
        for _ in 0..20 {
            g.wait().await.expect("synced");
        }
        // One paced fsync would have taken 30 s.
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(g.fsyncs(), 20);
    }

    #[tokio::test]
    async fn a_failed_fsync_fails_its_writers_and_the_next_one_recovers() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let f = Arc::clone(&fail);
        let g = GroupCommit::new(
            move || {
                if f.load(Ordering::SeqCst) {
                    Err("disk gone".into())
                } else {
                    Ok(())
                }
            },
            Duration::ZERO,
            Stats::default(),
        );
        let e = g.wait().await.expect_err("the fsync failed");
        assert!(e.to_string().contains("disk gone"), "{e}");
        fail.store(false, Ordering::SeqCst);
        g.wait().await.expect("a later fsync succeeded");
        assert_eq!(g.fsyncs(), 2);
    }
}
