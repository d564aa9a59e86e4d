//! One shape for every background loop (gossip, hint replay, catalog sync,
//! anti-entropy, handoff): a [`Worker`] does one step of work at a time and
//! says whether more is waiting; [`Workers`] runs each on its own task, keeps
//! its status, backs off exponentially after errors, and stops them all
//! within a deadline at shutdown. `GET /admin/v1/workers` shows the status.
//!
//! A step may be cancelled at any await point when the node shuts down, so
//! every step must leave state consistent when dropped (every write the
//! workers make is an idempotent merge or a conditional delete).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::sys::lock;
use crate::sys::wall_ms;

/// What a worker says after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// More work is waiting: step again at once.
    Busy,
    /// Nothing to do until [`Worker::wait_for_work`] returns.
    Idle,
    /// Finished for good.
    Done,
}

/// Why a step failed, for the status view and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WorkerError(pub String);

impl WorkerError {
    /// An error from anything printable.
    pub fn new(e: impl std::fmt::Display) -> WorkerError {
        WorkerError(e.to_string())
    }
}

/// A background loop, as a sequence of steps.
pub trait Worker: Send + 'static {
    /// A short stable name (`gossip`, `hints`, ...).
    fn name(&self) -> &'static str;

    /// One step of work. Must be safe to drop at any await point.
    fn work(&mut self) -> impl Future<Output = Result<WorkerState, WorkerError>> + Send;

    /// Waits until there may be work again (a tick, a request, a change).
    fn wait_for_work(&mut self) -> impl Future<Output = ()> + Send;
}

/// Back-off after consecutive errors: 1 s, 2 s, 4 s, ... up to 60 s.
pub fn backoff(consecutive_errors: u32) -> Duration {
    let exp = consecutive_errors.saturating_sub(1).min(6);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(60))
}

/// One worker's status.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    /// Its name.
    pub name: &'static str,
    /// Its state after the last step (`busy` while a step runs).
    pub state: WorkerState,
    /// True while a step is running.
    pub running: bool,
    /// Steps completed.
    pub steps: u64,
    /// Steps that failed, in all.
    pub errors: u64,
    /// Steps that failed since the last success.
    pub consecutive_errors: u32,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// When it failed, ms since the epoch.
    pub last_error_ms: Option<u64>,
    /// The back-off in force after the last failure, in ms.
    pub backoff_ms: u64,
    /// True once the worker has stopped (done, or shut down).
    pub stopped: bool,
}

impl WorkerInfo {
    fn new(name: &'static str) -> WorkerInfo {
        WorkerInfo {
            name,
            state: WorkerState::Idle,
            running: false,
            steps: 0,
            errors: 0,
            consecutive_errors: 0,
            last_error: None,
            last_error_ms: None,
            backoff_ms: 0,
            stopped: false,
        }
    }
}

/// What a shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Workers that stopped in time.
    pub stopped: Vec<&'static str>,
    /// Workers that were aborted at the deadline.
    pub aborted: Vec<&'static str>,
}

/// The running workers.
#[derive(Debug)]
pub struct Workers {
    infos: Mutex<BTreeMap<&'static str, WorkerInfo>>,
    handles: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
    stop: watch::Sender<bool>,
    /// Bumped on every status change, for [`Workers::wait_until`].
    changed: watch::Sender<u64>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers {
            infos: Mutex::new(BTreeMap::new()),
            handles: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
            changed: watch::channel(0).0,
        }
    }
}

impl Workers {
    /// No workers yet.
    pub fn new() -> Arc<Workers> {
        Arc::new(Workers::default())
    }

    /// Starts `w` on its own task.
    pub fn spawn<W: Worker>(self: &Arc<Self>, mut w: W) {
        let name = w.name();
        lock(&self.infos).insert(name, WorkerInfo::new(name));
        let me = Arc::clone(self);
        let mut stop = self.stop.subscribe();
        let handle = tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    break;
                }
                me.update(name, |i| i.running = true);
                let res = tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    res = w.work() => res,
                };
                let mut wait = None;
                let state = match res {
                    Ok(state) => {
                        me.update(name, |i| {
                            i.running = false;
                            i.steps += 1;
                            i.state = state;
                            i.consecutive_errors = 0;
                            i.backoff_ms = 0;
                        });
                        state
                    }
                    Err(e) => {
                        let mut errors = 0;
                        me.update(name, |i| {
                            i.running = false;
                            i.steps += 1;
                            i.errors += 1;
                            i.consecutive_errors += 1;
                            errors = i.consecutive_errors;
                            i.backoff_ms = backoff(errors).as_millis() as u64;
                            i.last_error = Some(e.0.clone());
                            i.last_error_ms = Some(wall_ms());
                            i.state = WorkerState::Idle;
                        });
                        tracing::warn!(worker = name, error = %e, consecutive = errors, "worker step failed; backing off");
                        wait = Some(backoff(errors));
                        WorkerState::Idle
                    }
                };
                match (state, wait) {
                    (WorkerState::Done, _) => break,
                    (_, Some(pause)) => {
                        tokio::select! {
                            biased;
                            _ = stop.changed() => break,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                    (WorkerState::Busy, None) => tokio::task::yield_now().await,
                    (WorkerState::Idle, None) => {
                        tokio::select! {
                            biased;
                            _ = stop.changed() => break,
                            _ = w.wait_for_work() => {}
                        }
                    }
                }
            }
            me.update(name, |i| {
                i.running = false;
                i.stopped = true;
            });
        });
        lock(&self.handles).push((name, handle));
    }

    fn update(&self, name: &'static str, f: impl FnOnce(&mut WorkerInfo)) {
        if let Some(i) = lock(&self.infos).get_mut(name) {
            f(i);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Waits until `cond` holds for the workers' status.
    pub async fn wait_until(&self, cond: impl Fn(&[WorkerInfo]) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            if cond(&self.status()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Every worker's status, by name.
    pub fn status(&self) -> Vec<WorkerInfo> {
        lock(&self.infos).values().cloned().collect()
    }

    /// Tells every worker to stop, and waits for them until `deadline`;
    /// those still running then are aborted.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.stop.send_replace(true);
        let handles = std::mem::take(&mut *lock(&self.handles));
        let until = tokio::time::Instant::now() + deadline;
        let mut report = ShutdownReport::default();
        for (name, mut handle) in handles {
            match tokio::time::timeout_at(until, &mut handle).await {
                Ok(_) => report.stopped.push(name),
                Err(_) => {
                    handle.abort();
                    tracing::warn!(worker = name, "worker did not stop in time; aborted");
                    report.aborted.push(name);
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails `fail` times, then reports busy until `steps` steps, then done.
    struct Scripted {
        fail: u32,
        steps: u32,
        done: Arc<AtomicU32>,
    }

    impl Worker for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        async fn work(&mut self) -> Result<WorkerState, WorkerError> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(WorkerError::new("disk full"));
            }
            let n = self.done.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(if n >= self.steps {
                WorkerState::Done
            } else {
                WorkerState::Busy
            })
        }
        async fn wait_for_work(&mut self) {}
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_then_the_worker_recovers_and_finishes() {
        let workers = Workers::new();
        let done = Arc::new(AtomicU32::new(0));
        workers.spawn(Scripted {
            fail: 3,
            steps: 5,
            done: Arc::clone(&done),
        });
        // Paused time: the back-offs (1 + 2 + 4 s) elapse instantly, in order.
        let started = tokio::time::Instant::now();
        workers
            .wait_until(|s| s.first().is_some_and(|i| i.stopped))
            .await;
        let info = workers.status().remove(0);
        assert_eq!(info.errors, 3);
        assert_eq!(info.consecutive_errors, 0);
        assert_eq!(info.last_error.as_deref(), Some("disk full"));
        assert_eq!(info.state, WorkerState::Done);
        assert_eq!(done.load(Ordering::SeqCst), 5);
        assert!(started.elapsed() >= Duration::from_secs(7));
        let report = workers.shutdown(Duration::from_secs(1)).await;
        assert_eq!(report.stopped, vec!["scripted"]);
    }

    /// Never finishes a step on its own: shutdown must still stop it.
    struct Stuck;

    impl Worker for Stuck {
        fn name(&self) -> &'static str {
            "stuck"
        }
        async fn work(&mut self) -> Result<WorkerState, WorkerError> {
            std::future::pending::<()>().await;
            Ok(WorkerState::Idle)
        }
        async fn wait_for_work(&mut self) {}
    }

    #[tokio::test]
    async fn shutdown_cancels_a_step_in_progress() {
        let workers = Workers::new();
        workers.spawn(Stuck);
        let report = workers.shutdown(Duration::from_secs(5)).await;
        assert_eq!(report.stopped, vec!["stuck"]);
        assert!(workers.status().iter().all(|i| i.stopped));
    }
}
