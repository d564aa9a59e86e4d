//! The scrub: reads every stored item and hint in the background and
//! checks it (the store's checksum, then the object's decoding), so that
//! damage to data nobody reads is found and repaired too (see
//! `replica.rs`: a damaged record is set aside and anti-entropy restores it
//! from the other replicas). One pass per `interval`, at most `per_sec`
//! records a second, so that it never competes with requests for the disk.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dyno_storage::Keyspace;
use serde::Serialize;

use crate::node::Node;
use crate::worker::{Worker, WorkerError, WorkerState};

/// Records read per step.
const PAGE: usize = 256;

/// What the scrub has done, for `GET /admin/v1/storage`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScrubReport {
    /// Complete passes since start-up.
    pub passes: u64,
    /// Records read in the pass under way.
    pub records_this_pass: u64,
    /// Records read by the last complete pass.
    pub last_pass_records: u64,
    /// How long the last complete pass took, in ms.
    pub last_pass_ms: u64,
    /// When the last complete pass ended, ms since the epoch.
    pub last_pass_end_ms: Option<u64>,
}

/// The scrub's report, shared with the service.
#[derive(Debug, Default)]
pub struct Scrubbed(Mutex<ScrubReport>);

impl Scrubbed {
    /// The report now.
    pub fn report(&self) -> ScrubReport {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut ScrubReport)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The scrub worker.
#[derive(Debug)]
pub struct Scrub {
    node: Arc<Node>,
    report: Arc<Scrubbed>,
    interval: Duration,
    per_sec: u32,
    /// Where the pass under way is: a keyspace and the next key.
    cursor: Option<(Keyspace, Vec<u8>)>,
    started: Option<Instant>,
}

impl Scrub {
    /// A scrub passing every `interval`, reading at most `per_sec` records
    /// a second.
    pub fn new(node: Arc<Node>, report: Arc<Scrubbed>, interval: Duration, per_sec: u32) -> Scrub {
        Scrub {
            node,
            report,
            interval,
            per_sec: per_sec.max(1),
            cursor: None,
            started: None,
        }
    }
}

impl Worker for Scrub {
    fn name(&self) -> &'static str {
        "scrub"
    }

    async fn work(&mut self) -> Result<WorkerState, WorkerError> {
        let (keyspace, start) = match &self.cursor {
            Some(c) => c.clone(),
            None => {
                self.started = Some(Instant::now());
                self.report.update(|r| r.records_this_pass = 0);
                (Keyspace::Items, Vec::new())
            }
        };
        // A failed step keeps the cursor: the back-off retries the page.
        self.cursor = Some((keyspace, start.clone()));
        let replica = Arc::clone(self.node.replica());
        let (read, next) = crate::sys::blocking(move || replica.scrub_page(keyspace, &start, PAGE))
            .await
            .map_err(WorkerError::new)?
            .map_err(WorkerError::new)?;
        self.report.update(|r| r.records_this_pass += read as u64);
        self.cursor = match (next, keyspace) {
            (Some(k), ks) => Some((ks, k)),
            (None, Keyspace::Items) => Some((Keyspace::Hints, Vec::new())),
            (None, _) => None,
        };
        // Pace the pass: `read` records at `per_sec`.
        tokio::time::sleep(Duration::from_secs_f64(
            read as f64 / f64::from(self.per_sec),
        ))
        .await;
        if self.cursor.is_some() {
            return Ok(WorkerState::Busy);
        }
        let ms = self
            .started
            .take()
            .map_or(0, |s| s.elapsed().as_millis() as u64);
        self.report.update(|r| {
            r.passes += 1;
            r.last_pass_records = r.records_this_pass;
            r.last_pass_ms = ms;
            r.last_pass_end_ms = Some(crate::sys::wall_ms());
        });
        tracing::info!(records = self.report.report().last_pass_records, ms, damaged = ?self.node.replica().damaged(), "scrub pass done");
        Ok(WorkerState::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(self.interval).await;
    }
}
