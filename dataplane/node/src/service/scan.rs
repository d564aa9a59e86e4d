//! Range reads over the engine, shared by every front-end that pages
//! through a table: the DynamoDB API's Query and Scan, and the native
//! API's scan (which the console's item browser uses).
//!
//! A [`RangeSink`] decides what a merged page of `(item key, state)` pairs
//! becomes and when its page is full; [`Service::read_range`] feeds it one
//! preference list's range, and [`Service::scan_partitions`] walks
//! partitions in ring order.

use std::ops::Range;

use bytes::Bytes;
use dyno_core::Object;
use dyno_core::hash::key_position;
use dyno_core::keys::{decode_item_key, encode_item_key, position_range, successor};

use super::items::{Op, check_key, context_string, native_only};
use super::{RequestCtx, Service};
use crate::catalog::{Access, TableConfig};
use crate::error::{ErrorCode, ServiceError};
use crate::ranges::RangeRead;

/// The most entries one replica scans per round trip.
pub(super) const ROUND_ENTRIES: usize = 1000;
/// The most values (bytes) one page of the native scan carries.
pub const MAX_SCAN_PAGE_BYTES: usize = 1 << 20;
/// The most items one page of the native scan carries.
pub const MAX_SCAN_LIMIT: usize = 1000;

/// Where merged pages of a range go.
pub(super) trait RangeSink {
    /// The sink's error (engine errors convert into it).
    type Error: From<ServiceError>;
    /// How many more items the page wants (at least 1 while not full).
    fn room(&self) -> usize;
    /// Takes a merged page of `storage`'s range; true when the page is full.
    fn take(&mut self, storage: &str, items: Vec<(Vec<u8>, Object)>) -> Result<bool, Self::Error>;
}

impl Service {
    /// Reads `rr` page by page into `sink` until the range ends (false) or
    /// the sink's page is full (true).
    pub(super) async fn read_range<S: RangeSink>(
        &self,
        ctx: &RequestCtx,
        cfg: TableConfig,
        sink: &mut S,
        mut rr: RangeRead,
    ) -> Result<bool, S::Error> {
        loop {
            ctx.check_deadline()?;
            rr.limit = sink.room().clamp(1, ROUND_ENTRIES);
            let page = self
                .inner
                .node
                .range_read(cfg, rr.clone(), ctx.deadline)
                .await?;
            if sink.take(&rr.table, page.items)? {
                return Ok(true);
            }
            match page.resume {
                None => return Ok(false),
                Some(k) if rr.reverse => rr.end = Some(k),
                Some(k) => rr.start = successor(&k),
            }
        }
    }

    /// Reads the partitions of `scan` in ring order into `sink`, starting
    /// in the first at its `resume_at` (an item key) when given, until the
    /// sink is full or the partitions end.
    pub(super) async fn scan_partitions<S: RangeSink>(
        &self,
        ctx: &RequestCtx,
        cfg: TableConfig,
        scan: PartitionScan<'_>,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        let trees = &self.inner.node.replica().trees;
        let mut resume_at = scan.resume_at;
        for partition in scan.partitions {
            let (first, last) = trees.partition_range(partition as u32);
            let (start, end) = position_range(first, last);
            let rr = RangeRead {
                table: scan.storage.to_owned(),
                position: first,
                start: resume_at.take().unwrap_or(start),
                end,
                limit: ROUND_ENTRIES,
                reverse: false,
                r: scan.r,
            };
            if self.read_range(ctx, cfg, sink, rr).await? {
                break;
            }
        }
        Ok(())
    }

    /// One page of a native table's live items, in ring order (not key
    /// order: keys are placed by hash), read at the request's (or the
    /// table's) R. Deleted keys are skipped.
    pub async fn scan_items(
        &self,
        ctx: &RequestCtx,
        req: ScanItems,
    ) -> Result<ItemScan, ServiceError> {
        let started = std::time::Instant::now();
        let entry = self.resolve(ctx, &req.table, Access::Read);
        let res = match &entry {
            Ok(e) => self.scan_inner(ctx, &req, e).await,
            Err(e) => Err(e.clone()),
        };
        self.record(
            Op::Scan,
            ctx,
            entry.as_deref().ok(),
            started,
            res.as_ref().err(),
        );
        res
    }

    async fn scan_inner(
        &self,
        ctx: &RequestCtx,
        req: &ScanItems,
        entry: &crate::catalog::TableEntry,
    ) -> Result<ItemScan, ServiceError> {
        native_only(entry)?;
        let limit = match req.limit {
            None => 100,
            Some(l @ 1..=MAX_SCAN_LIMIT) => l,
            Some(l) => {
                return Err(ServiceError::new(
                    ErrorCode::InvalidRequest,
                    format!("limit is 1 to {MAX_SCAN_LIMIT}, not {l}"),
                ));
            }
        };
        let cfg = entry.config;
        let r = super::items::quorum("r", req.r, cfg.n, cfg.r)?;
        let storage = entry.name.as_str();
        let topology = self.inner.node.serving_topology()?;
        let ring = &topology.current;
        let (start_p, resume_at) = match &req.after {
            Some(k) => {
                check_key(k)?;
                let p = ring.partition_of(key_position(storage, k)).0;
                (u64::from(p), Some(successor(&encode_item_key(storage, k))))
            }
            None => (0, None),
        };
        let count = ring.partition_count() as u64;
        self.admit(entry)?;
        let mut sink = NativeSink {
            limit,
            bytes: 0,
            page: ItemScan::default(),
        };
        let scan = PartitionScan {
            storage,
            partitions: start_p..count,
            resume_at,
            r,
        };
        self.scan_partitions(ctx, cfg, scan, &mut sink).await?;
        Ok(sink.page)
    }
}

/// Which partitions of a table a scan reads.
#[derive(Debug)]
pub(super) struct PartitionScan<'a> {
    /// The table's storage name.
    pub storage: &'a str,
    /// Partition numbers, in ring order.
    pub partitions: Range<u64>,
    /// Where to start in the first (an item key).
    pub resume_at: Option<Vec<u8>>,
    /// Replies needed per range.
    pub r: usize,
}

/// A page request of the native scan.
#[derive(Debug, Clone, Default)]
pub struct ScanItems {
    /// The table.
    pub table: String,
    /// Resume after this key (the previous page's `next`).
    pub after: Option<Vec<u8>>,
    /// At most this many items (default 100, at most 1,000).
    pub limit: Option<usize>,
    /// Replies needed per range (default: the table's R).
    pub r: Option<u32>,
}

/// One item of a scan page.
#[derive(Debug, Clone)]
pub struct ScannedItem {
    /// Its key.
    pub key: Vec<u8>,
    /// Its live values (siblings).
    pub values: Vec<Bytes>,
    /// The context for a write that supersedes them.
    pub context: Option<String>,
}

/// A page of the native scan.
#[derive(Debug, Clone, Default)]
pub struct ItemScan {
    /// The items.
    pub items: Vec<ScannedItem>,
    /// When set, more items may follow: pass it as `after`.
    pub next: Option<Vec<u8>>,
}

struct NativeSink {
    limit: usize,
    bytes: usize,
    page: ItemScan,
}

impl RangeSink for NativeSink {
    type Error = ServiceError;

    fn room(&self) -> usize {
        self.limit - self.page.items.len()
    }

    fn take(&mut self, storage: &str, items: Vec<(Vec<u8>, Object)>) -> Result<bool, ServiceError> {
        for (ik, obj) in items {
            let values: Vec<Bytes> = obj.live_values().cloned().collect();
            if values.is_empty() {
                continue;
            }
            let Some(key) = decode_item_key(&ik)
                .ok()
                .filter(|d| d.table == storage)
                .map(|d| d.key.to_vec())
            else {
                continue;
            };
            self.bytes += key.len() + values.iter().map(Bytes::len).sum::<usize>();
            self.page.items.push(ScannedItem {
                context: context_string(Some(&obj)),
                key: key.clone(),
                values,
            });
            if self.page.items.len() >= self.limit || self.bytes >= MAX_SCAN_PAGE_BYTES {
                self.page.next = Some(key);
                return Ok(true);
            }
        }
        Ok(false)
    }
}
