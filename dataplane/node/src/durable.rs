//! Group commit for `--durability sync`, awaited rather than blocked on.
//!
//! A write on the request path is applied without an fsync (it is in
//! RocksDB's write-ahead log, in the OS page cache) on the async thread that
//! handles it, takes its key's lock only for that, and then awaits
//! [`GroupCommit::wait`], which returns once an fsync that *started after
//! the write* has completed. One task runs the fsyncs, one at a time on a
//! blocking thread, back to back while writers wait: each covers every
//! write that arrived while the previous one ran. So concurrent writers,
//! local and from other coordinators, share fsyncs, and no thread sits
//! blocked per waiting write (the blocking version, `dyno_storage`'s
//! `GroupSync`, cost a thread hand-off per write and about three times the
//! CPU per operation; it stays for background work that already runs on
//! blocking threads).
//!
//! A failed fsync fails every write it was to cover: their callers answer
//! with an error rather than acknowledge a write that may not be on disk.

use std::sync::{Arc, Mutex};

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
    /// the write-ahead log; run on a blocking thread).
    pub fn new(sync: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(GroupCommit {
            state: Mutex::default(),
            done: Notify::new(),
            sync: Arc::new(sync),
        })
    }

    /// Returns once every write this task finished before the call is
    /// durable, or the error of the fsync that was to cover them.
    pub async fn wait(self: &Arc<Self>) -> Result<(), ServiceError> {
        let needed = {
            let mut s = sys::lock(&self.state);
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

    /// Runs fsyncs back to back while some waiter needs one.
    async fn run(self: Arc<Self>) {
        loop {
            let mine = {
                let mut s = sys::lock(&self.state);
                s.started += 1;
                s.started
            };
            let sync = Arc::clone(&self.sync);
            let res = match sys::blocking(move || sync()).await {
                Ok(r) => r,
                Err(e) => Err(format!("the fsync task failed: {e}")),
            };
            if let Err(e) = &res {
                tracing::error!(error = %e, "fsync of the write-ahead log failed");
            }
            let mut s = sys::lock(&self.state);
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

    /// An fsync that records how many writes it covered.
    fn counting() -> (Arc<GroupCommit>, Arc<AtomicU64>, Arc<AtomicU64>) {
        let written = Arc::new(AtomicU64::new(0));
        let synced = Arc::new(AtomicU64::new(0));
        let (w, s) = (Arc::clone(&written), Arc::clone(&synced));
        let g = GroupCommit::new(move || {
            std::thread::sleep(std::time::Duration::from_millis(2));
            s.store(w.load(Ordering::SeqCst), Ordering::SeqCst);
            Ok(())
        });
        (g, written, synced)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_write_is_covered_and_writers_share_fsyncs() {
        let (g, written, synced) = counting();
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
    }

    #[tokio::test]
    async fn a_failed_fsync_fails_its_writers_and_the_next_one_recovers() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let f = Arc::clone(&fail);
        let g = GroupCommit::new(move || {
            if f.load(Ordering::SeqCst) {
                Err("disk gone".into())
            } else {
                Ok(())
            }
        });
        let e = g.wait().await.expect_err("the fsync failed");
        assert!(e.to_string().contains("disk gone"), "{e}");
        fail.store(false, Ordering::SeqCst);
        g.wait().await.expect("a later fsync succeeded");
        assert_eq!(g.fsyncs(), 2);
    }
}
