//! Group commit: concurrent writers share fsyncs instead of queueing for
//! them.
//!
//! A writer first applies its batch without syncing (it is then in the
//! write-ahead log, in the OS's page cache), lets go of any lock it holds,
//! and calls [`GroupSync::wait`]. That returns once an fsync that *started
//! after the writer's write finished* has completed, so the write is on
//! disk. If no fsync is running, the caller runs one itself; if one is
//! running, it may have started before the write, so the caller waits for
//! the next one, which one of the waiters then runs for all of them. Under
//! load, every fsync covers every writer that arrived while the previous one
//! ran.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    /// Fsyncs started so far (the number of the latest).
    started: u64,
    /// The latest fsync known to have completed.
    completed: u64,
    /// True while an fsync runs.
    running: bool,
    /// The error of the latest failed fsync, by its number.
    failed: Option<(u64, String)>,
}

/// Shares fsyncs between concurrent writers.
#[derive(Debug, Default)]
pub struct GroupSync {
    state: Mutex<State>,
    done: Condvar,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GroupSync {
    /// Waits until everything written before this call is durable, running
    /// `fsync` when it is this caller's turn. Returns the fsync's error if
    /// the fsync that was to cover this write failed.
    pub fn wait(&self, fsync: impl Fn() -> Result<(), String>) -> Result<(), String> {
        let mut s = lock(&self.state);
        // The first fsync to start from now on covers this write.
        let needed = s.started + 1;
        loop {
            if s.completed >= needed {
                return match &s.failed {
                    Some((n, e)) if *n >= needed => Err(e.clone()),
                    _ => Ok(()),
                };
            }
            if !s.running {
                s.running = true;
                s.started += 1;
                let mine = s.started;
                drop(s);
                let res = fsync();
                s = lock(&self.state);
                s.running = false;
                s.completed = mine;
                if let Err(e) = &res {
                    s.failed = Some((mine, e.clone()));
                }
                self.done.notify_all();
                // `mine >= needed` always holds here: `started` only grows.
                return res;
            }
            s = self.done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Fsyncs run so far.
    pub fn fsyncs(&self) -> u64 {
        lock(&self.state).completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Every writer's wait returns only after an fsync that began after its
    /// write; with many concurrent writers, far fewer fsyncs than writes run.
    #[test]
    fn concurrent_writers_share_fsyncs_and_each_is_covered() {
        let group = Arc::new(GroupSync::default());
        // The "disk": the highest write number an fsync has made durable.
        let written = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (group, written, durable) = (
                    Arc::clone(&group),
                    Arc::clone(&written),
                    Arc::clone(&durable),
                );
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        group
                            .wait(|| {
                                let upto = written.load(Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_micros(300));
                                durable.fetch_max(upto, Ordering::SeqCst);
                                Ok(())
                            })
                            .expect("fsync");
                        assert!(
                            durable.load(Ordering::SeqCst) >= mine,
                            "write {mine} acknowledged before it was durable"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let fsyncs = group.fsyncs();
        println!("800 writes, {fsyncs} fsyncs");
        assert!(fsyncs < 800, "no fsync was shared ({fsyncs})");
    }

    #[test]
    fn a_failed_fsync_fails_the_writes_it_was_to_cover() {
        let group = GroupSync::default();
        assert_eq!(
            group.wait(|| Err("disk gone".into())),
            Err("disk gone".into())
        );
        assert_eq!(group.wait(|| Ok(())), Ok(()));
    }
}
