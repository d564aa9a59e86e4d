//! The DynamoDB API's item operations over the engine: the typed calls the
//! DynamoDB front-end makes, with the same resolution,
//! scopes, throughput limits and metrics as the native API.
//!
//! * **Placement.** A DynamoDB table is stored under `#p<id>` with
//!   composite keys (`dyno_core::hash`): the partition key chooses the
//!   preference list, the sort key orders items on disk.
//! * **Conflicts.** Tables made through the DynamoDB API use
//!   last-writer-wins on hybrid timestamps. A table in siblings mode read
//!   through this API shows one value: the sibling with the highest
//!   timestamp (ties broken by dot), the same choice on every node
//!   ([`chosen_value`]).
//! * **Writes.** A blind PutItem or DeleteItem (no condition, no old values
//!   returned) is an ordinary write at the table's W. Anything that reads
//!   first (conditions, UpdateItem, `ReturnValues`) is a read-modify-write
//!   run by the key's coordinator under the key's lock (`crate::ranges`),
//!   decided by [`DdbRmw`].
//! * **Reads.** `ConsistentRead` reads at a majority (R + W > N with the
//!   majority writes above), otherwise at R = 1.
//! * **TTL.** An item whose TTL attribute (a number, epoch seconds) is in
//!   the past is not returned, and conditions see it as absent.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dyno_core::Object;
use dyno_core::ddbnum::Number;
use dyno_core::hash::key_position;
use dyno_core::keys::{decode_item_key, encode_item_key, successor};
use dyno_ddb::error::{DdbError, ErrorKind};
use dyno_ddb::item::{self, Item};
use dyno_ddb::schema::{KeyType, TableSchema, key_part};
use dyno_ddb::stored::{chosen_value, epoch_number, expired};
use dyno_ddb::value::Value;
use dyno_ddb::write::WriteOp;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::items::Op;
use super::scan::{PartitionScan, ROUND_ENTRIES, RangeSink};
use super::{RequestCtx, Service};
use crate::catalog::{Access, Catalog, TableEntry};
use crate::error::{ErrorCode, ServiceError};
use crate::node::PutRequest;
use crate::ranges::RangeRead;
use crate::rmw::{RmwDecision, RmwHandler};

/// The most data one Query or Scan page reads (DynamoDB's 1 MB).
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// Why a DynamoDB operation failed: the engine's error, or the data
/// model's (validation, a failed condition).
#[derive(Debug, Clone)]
pub enum DdbFailure {
    /// From the service or the engine.
    Service(ServiceError),
    /// From the data model.
    Model(DdbError),
}

impl From<ServiceError> for DdbFailure {
    fn from(e: ServiceError) -> Self {
        DdbFailure::Service(e)
    }
}

impl From<DdbError> for DdbFailure {
    fn from(e: DdbError) -> Self {
        DdbFailure::Model(e)
    }
}

impl DdbFailure {
    fn code(&self) -> &'static str {
        match self {
            DdbFailure::Service(e) => e.code.as_str(),
            DdbFailure::Model(e) => match e.kind {
                ErrorKind::ConditionalCheckFailed => "ConditionalCheckFailed",
                _ => "Validation",
            },
        }
    }
}

/// A DynamoDB result.
pub type DdbOutcome<T> = Result<T, DdbFailure>;

fn now_secs() -> Number {
    epoch_number(crate::sys::wall_ms() / 1000)
}

/// The item a state holds, as DynamoDB sees it (absent when deleted or
/// expired).
fn live_item(schema: &TableSchema, obj: Option<&Object>, now: &Number) -> DdbOutcome<Option<Item>> {
    let Some(raw) = obj.and_then(chosen_value) else {
        return Ok(None);
    };
    let it = item::decode(raw)
        .map_err(|e| DdbFailure::Service(ServiceError::internal(format!("stored item: {e}"))))?;
    Ok((!expired(schema, &it, &now.clone())).then_some(it))
}

fn schema_of(entry: &TableEntry) -> Result<&TableSchema, ServiceError> {
    entry.dynamo.as_ref().ok_or_else(|| {
        ServiceError::new(
            ErrorCode::InvalidRequest,
            format!(
                "table {:?} was not created through the DynamoDB API: it has no key schema",
                entry.display_name()
            ),
        )
    })
}

/// Replies a DynamoDB read waits for: a majority for `ConsistentRead`
/// (the read-modify-writes write a majority), else one.
fn read_quorum(cfg: crate::catalog::TableConfig, consistent: bool) -> usize {
    if consistent {
        cfg.majority() as usize
    } else {
        1
    }
}

/// The coordinator's answer to a read-modify-write, as it travels back.
#[derive(Debug, Serialize, Deserialize)]
enum RmwReply {
    /// Done; the `Attributes` to return.
    Done(Option<Json>),
    /// The data model refused (a failed condition, an invalid update).
    Refused {
        condition_failed: bool,
        message: String,
        item: Option<Json>,
    },
}

/// Decides DynamoDB writes at the key's coordinator.
#[derive(Debug)]
pub struct DdbRmw {
    catalog: Arc<Catalog>,
}

impl DdbRmw {
    /// A handler reading table schemas from `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> DdbRmw {
        DdbRmw { catalog }
    }
}

impl RmwHandler for DdbRmw {
    fn decide(
        &self,
        table: &str,
        op: &[u8],
        current: Option<&Object>,
    ) -> Result<RmwDecision, ServiceError> {
        let entry = self
            .catalog
            .entry(table)
            .ok_or_else(|| ServiceError::table_not_found(table))?;
        let schema = schema_of(&entry)?;
        let op: WriteOp = serde_json::from_slice(op)
            .map_err(|e| ServiceError::internal(format!("malformed forwarded write: {e}")))?;
        let now = now_secs();
        let current = match live_item(schema, current, &now) {
            Ok(c) => c,
            Err(DdbFailure::Service(e)) => return Err(e),
            Err(DdbFailure::Model(e)) => return Err(ServiceError::internal(e)),
        };
        let outcome = op
            .prepare(&schema.key)
            .and_then(|p| p.execute(current.as_ref()));
        let (write, reply) = match outcome {
            Ok(o) => (
                Some(o.new.map(|it| Bytes::from(item::encode(&it)))),
                RmwReply::Done(o.attributes.as_ref().map(item::to_json)),
            ),
            Err(e) => (
                None,
                RmwReply::Refused {
                    condition_failed: e.kind == ErrorKind::ConditionalCheckFailed,
                    message: e.message,
                    item: e.item,
                },
            ),
        };
        Ok(RmwDecision {
            write,
            reply: serde_json::to_vec(&reply).map_err(ServiceError::internal)?,
        })
    }
}

/// A sort-key condition of a Query.
#[derive(Debug, Clone, PartialEq)]
pub enum SortCond {
    /// `sk = v`
    Eq(Value),
    /// `sk < v`
    Lt(Value),
    /// `sk <= v`
    Le(Value),
    /// `sk > v`
    Gt(Value),
    /// `sk >= v`
    Ge(Value),
    /// `sk BETWEEN a AND b`
    Between(Value, Value),
    /// `begins_with(sk, v)`
    BeginsWith(Value),
}

/// A Query's range: one partition key, an optional sort-key condition.
#[derive(Debug, Clone)]
pub struct QueryRange {
    /// The partition key's value.
    pub partition: Value,
    /// The sort-key condition.
    pub sort: Option<SortCond>,
    /// Ascending sort-key order (`ScanIndexForward`).
    pub forward: bool,
}

/// How much of a range to read.
#[derive(Debug, Clone)]
pub struct PageSpec {
    /// `ExclusiveStartKey`.
    pub exclusive_start: Option<Item>,
    /// `Limit`: items to evaluate.
    pub limit: Option<usize>,
    /// `ConsistentRead`.
    pub consistent: bool,
}

/// Items read (before any filter), and where to go on.
#[derive(Debug, Clone, Default)]
pub struct ItemPage {
    /// Live items, in order.
    pub items: Vec<Item>,
    /// `LastEvaluatedKey`, when the page stopped before the range's end.
    pub last_key: Option<Item>,
}

/// The smallest byte string greater than every string starting with `p`.
fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut out = p.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xFF {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

struct Reader<'a> {
    schema: &'a TableSchema,
    limit: usize,
    bytes: usize,
    now: Number,
    page: ItemPage,
}

impl RangeSink for Reader<'_> {
    type Error = DdbFailure;

    fn room(&self) -> usize {
        self.limit - self.page.items.len()
    }

    fn take(&mut self, storage: &str, items: Vec<(Vec<u8>, Object)>) -> DdbOutcome<bool> {
        self.take_items(storage, items)
    }
}

impl<'a> Reader<'a> {
    fn new(schema: &'a TableSchema, spec: &PageSpec) -> Reader<'a> {
        Reader {
            schema,
            limit: spec.limit.unwrap_or(usize::MAX),
            bytes: 0,
            now: now_secs(),
            page: ItemPage::default(),
        }
    }

    /// Takes a merged page of a range; true when the page is full.
    fn take_items(&mut self, storage: &str, items: Vec<(Vec<u8>, Object)>) -> DdbOutcome<bool> {
        for (ik, obj) in items {
            let Some(it) = live_item(self.schema, Some(&obj), &self.now)? else {
                continue;
            };
            self.bytes += item::item_size(&it);
            self.page.items.push(it);
            if self.page.items.len() >= self.limit || self.bytes >= MAX_PAGE_BYTES {
                let key = decode_item_key(&ik)
                    .ok()
                    .filter(|d| d.table == storage)
                    .and_then(|d| self.schema.key.decode_key(d.key));
                self.page.last_key = key;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Service {
    /// A DynamoDB table of the request's tenant, after the scope check.
    pub fn ddb_table(
        &self,
        ctx: &RequestCtx,
        name: &str,
        access: Access,
    ) -> Result<Arc<TableEntry>, ServiceError> {
        let entry = self.resolve(ctx, name, access)?;
        schema_of(&entry)?;
        Ok(entry)
    }

    /// This node's estimate of a table's live items and their bytes in the
    /// whole cluster, for DescribeTable's `ItemCount` and `TableSizeBytes`
    /// (DynamoDB's are estimates too): what this node holds, scaled by
    /// the share of the ring's partitions it replicates at the table's N
    /// (keys spread evenly over partitions). It runs high while a ring
    /// change copies partitions here and low while this node misses
    /// writes that hinted handoff or anti-entropy have yet to bring.
    pub fn table_estimate(&self, entry: &TableEntry) -> crate::trees::TableLoad {
        let node = &self.inner.node;
        let local = node.replica().trees.table_load(&entry.name);
        let Ok(topology) = node.serving_topology() else {
            return local;
        };
        let ring = &topology.current;
        let here = ring.partitions_replicated_by(node.me(), entry.config.n as usize);
        let scale = |x: u64| scale_share(x, ring.partition_count(), here);
        crate::trees::TableLoad {
            items: scale(local.items),
            bytes: scale(local.bytes),
        }
    }

    /// The request tenant's DynamoDB tables, by name.
    pub fn ddb_tables(&self, ctx: &RequestCtx) -> Vec<Arc<TableEntry>> {
        self.inner
            .node
            .catalog()
            .list_tenant(&ctx.tenant)
            .into_iter()
            .filter(|t| t.dynamo.is_some())
            .map(Arc::new)
            .collect()
    }

    /// The bearer token of the request's API key, for calls made on its
    /// behalf (`None` for other principals).
    pub fn token_of(&self, ctx: &RequestCtx) -> Option<String> {
        match &ctx.principal {
            super::Principal::Key(k) => self.inner.credentials.token_for(&k.id),
            _ => None,
        }
    }

    /// Who signed a SigV4 request.
    pub fn authenticate_sigv4(
        &self,
        req: &dyno_core::sigv4::Request<'_>,
    ) -> Result<RequestCtx, crate::auth::SigV4Failure> {
        let now = (crate::sys::wall_ms() / 1000) as i64;
        let principal =
            self.inner
                .credentials
                .authenticate_sigv4(self.inner.node.catalog(), req, now)?;
        if let super::Principal::Key(k) = &principal {
            self.note_key_use(&k.id);
        }
        Ok(RequestCtx::new(principal, self.inner.request_timeout))
    }

    fn finish<T>(
        &self,
        op: Op,
        ctx: &RequestCtx,
        entry: &TableEntry,
        started: Instant,
        res: DdbOutcome<T>,
    ) -> DdbOutcome<T> {
        let err = res.as_ref().err().map(|f| match f {
            DdbFailure::Service(e) => e.clone(),
            DdbFailure::Model(_) => ServiceError::new(ErrorCode::InvalidRequest, f.code()),
        });
        self.record(op, ctx, Some(entry), started, err.as_ref());
        res
    }

    /// GetItem: the item under a composite key.
    pub async fn ddb_get(
        &self,
        ctx: &RequestCtx,
        entry: &TableEntry,
        key: Vec<u8>,
        consistent: bool,
    ) -> DdbOutcome<Option<Item>> {
        let started = Instant::now();
        let res = async {
            let schema = schema_of(entry)?;
            self.admit(entry)?;
            ctx.check_deadline()?;
            let cfg = entry.config;
            let r = read_quorum(cfg, consistent);
            let state = self
                .inner
                .node
                .get(&entry.name, cfg, &key, r, ctx.deadline)
                .await?;
            live_item(schema, state.as_ref(), &now_secs())
        }
        .await;
        self.finish(Op::Get, ctx, entry, started, res)
    }

    /// PutItem, DeleteItem, UpdateItem: returns the `Attributes` to answer
    /// with.
    pub async fn ddb_write(
        &self,
        ctx: &RequestCtx,
        entry: &TableEntry,
        op: WriteOp,
    ) -> DdbOutcome<Option<Item>> {
        let started = Instant::now();
        let kind = match op.kind {
            dyno_ddb::write::WriteKind::Put(_) => Op::Put,
            dyno_ddb::write::WriteKind::Delete => Op::Delete,
            dyno_ddb::write::WriteKind::Update(_) => Op::Update,
        };
        let res = self.ddb_write_inner(ctx, entry, op).await;
        self.finish(kind, ctx, entry, started, res)
    }

    async fn ddb_write_inner(
        &self,
        ctx: &RequestCtx,
        entry: &TableEntry,
        op: WriteOp,
    ) -> DdbOutcome<Option<Item>> {
        let schema = schema_of(entry)?;
        let prepared = op.prepare(&schema.key)?;
        let key = schema.key.key_of(prepared.key())?;
        self.admit(entry)?;
        ctx.check_deadline()?;
        let cfg = entry.config;
        if !prepared.needs_read() {
            // A blind write: no read, no lock; last-writer-wins decides.
            let outcome = prepared.execute(None)?;
            let value = outcome.new.map(|it| Bytes::from(item::encode(&it)));
            let req = PutRequest {
                table: entry.name.clone(),
                key,
                value,
                context: dyno_core::VersionVector::new(),
                w: cfg.w as usize,
                condition: None,
            };
            self.inner.node.put(cfg, req, ctx.deadline).await?;
            return Ok(None);
        }
        let bytes = serde_json::to_vec(&op).map_err(ServiceError::internal)?;
        let reply = self
            .inner
            .node
            .route_rmw(cfg, &entry.name, &key, bytes, 0, ctx.deadline)
            .await?;
        match serde_json::from_slice::<RmwReply>(&reply)
            .map_err(|e| ServiceError::internal(format!("malformed coordinator reply: {e}")))?
        {
            RmwReply::Done(attrs) => Ok(attrs.map(|a| item::from_json(&a)).transpose()?),
            RmwReply::Refused {
                condition_failed: true,
                item,
                ..
            } => Err(DdbError::condition_failed(item).into()),
            RmwReply::Refused { message, .. } => Err(DdbError::validation(message).into()),
        }
    }

    /// Query: one page of a partition key's items, in sort-key order.
    pub async fn ddb_query(
        &self,
        ctx: &RequestCtx,
        entry: &TableEntry,
        range: QueryRange,
        spec: PageSpec,
    ) -> DdbOutcome<ItemPage> {
        let started = Instant::now();
        let res = self.ddb_query_inner(ctx, entry, range, spec).await;
        self.finish(Op::Query, ctx, entry, started, res)
    }

    async fn ddb_query_inner(
        &self,
        ctx: &RequestCtx,
        entry: &TableEntry,
        range: QueryRange,
        spec: PageSpec,
    ) -> DdbOutcome<ItemPage> {
        let schema = schema_of(entry)?;
        let prefix = schema.key.partition_prefix(&range.partition)?;
        let storage = entry.name.as_str();
        let full = |sk: &[u8]| {
            let mut k = prefix.clone();
            k.extend_from_slice(sk);
            encode_item_key(storage, &k)
        };
        let sk_of = |v: &Value| -> DdbOutcome<Vec<u8>> {
            let attr = schema.key.range.as_ref().ok_or_else(|| {
                DdbError::validation(
                    "Query condition missed key schema element: the table has no sort key",
                )
            })?;
            Ok(key_part(attr, v)?)
        };
        let base = encode_item_key(storage, &prefix);
        let mut start = base.clone();
        let mut end = prefix_end(&base);
        match &range.sort {
            None => {}
            Some(SortCond::Eq(v)) => {
                start = full(&sk_of(v)?);
                end = Some(successor(&start));
            }
            Some(SortCond::Lt(v)) => end = Some(full(&sk_of(v)?)),
            Some(SortCond::Le(v)) => end = Some(successor(&full(&sk_of(v)?))),
            Some(SortCond::Gt(v)) => start = successor(&full(&sk_of(v)?)),
            Some(SortCond::Ge(v)) => start = full(&sk_of(v)?),
            Some(SortCond::Between(a, b)) => {
                let (lo, hi) = (full(&sk_of(a)?), full(&sk_of(b)?));
                if lo > hi {
                    return Err(DdbError::validation(
                        "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to lower bound",
                    )
                    .into());
                }
                start = lo;
                end = Some(successor(&hi));
            }
            Some(SortCond::BeginsWith(v)) => {
                if schema
                    .key
                    .range
                    .as_ref()
                    .is_some_and(|r| r.ty == KeyType::N)
                {
                    return Err(DdbError::validation(
                        "Invalid KeyConditionExpression: Incorrect operand type for operator or function; operator or function: begins_with, operand type: N",
                    )
                    .into());
                }
                start = full(&sk_of(v)?);
                end = prefix_end(&start);
            }
        }
        if let Some(esk) = &spec.exclusive_start {
            let k = schema.key.key_of(esk)?;
            if !k.starts_with(&prefix) {
                return Err(DdbError::validation(
                    "The provided starting key is invalid: The provided key element does not match the schema",
                )
                .into());
            }
            let ik = encode_item_key(storage, &k);
            if range.forward {
                start = start.max(successor(&ik));
            } else {
                end = Some(end.map_or(ik.clone(), |e| e.min(ik.clone())));
            }
        }
        self.admit(entry)?;
        let cfg = entry.config;
        let mut reader = Reader::new(schema, &spec);
        let rr = RangeRead {
            table: storage.to_owned(),
            position: key_position(storage, &prefix),
            start,
            end,
            limit: ROUND_ENTRIES,
            reverse: !range.forward,
            r: read_quorum(cfg, spec.consistent),
        };
        self.read_range(ctx, cfg, &mut reader, rr).await?;
        Ok(reader.page)
    }

    /// Scan: one page of the table's items, partition by partition
    /// (`segment` of `total` takes its share of the partitions).
    pub async fn ddb_scan(
        &self,
        ctx: &RequestCtx,
        entry: &TableEntry,
        segment: u32,
        total: u32,
        spec: PageSpec,
    ) -> DdbOutcome<ItemPage> {
        let started = Instant::now();
        let res = self.ddb_scan_inner(ctx, entry, segment, total, spec).await;
        self.finish(Op::Scan, ctx, entry, started, res)
    }

    async fn ddb_scan_inner(
        &self,
        ctx: &RequestCtx,
        entry: &TableEntry,
        segment: u32,
        total: u32,
        spec: PageSpec,
    ) -> DdbOutcome<ItemPage> {
        let schema = schema_of(entry)?;
        let storage = entry.name.as_str();
        let topology = self.inner.node.serving_topology()?;
        let ring = &topology.current;
        let count = ring.partition_count() as u64;
        let total = u64::from(total.max(1));
        let seg = u64::from(segment);
        let (first_p, end_p) = (seg * count / total, (seg + 1) * count / total);
        let mut partition = first_p;
        let mut resume_at: Option<Vec<u8>> = None;
        if let Some(esk) = &spec.exclusive_start {
            let k = schema.key.key_of(esk)?;
            let p = u64::from(ring.partition_of(key_position(storage, &k)).0);
            if !(first_p..end_p).contains(&p) {
                return Err(DdbError::validation(
                    "The provided starting key is invalid: it is outside this segment",
                )
                .into());
            }
            partition = p;
            resume_at = Some(successor(&encode_item_key(storage, &k)));
        }
        self.admit(entry)?;
        let mut reader = Reader::new(schema, &spec);
        let scan = PartitionScan {
            storage,
            partitions: partition..end_p,
            resume_at,
            r: read_quorum(entry.config, spec.consistent),
        };
        self.scan_partitions(ctx, entry.config, scan, &mut reader)
            .await?;
        Ok(reader.page)
    }
}

/// `local`, held on `here` of `total` partitions, scaled to all of them
/// (nothing when this node replicates none).
fn scale_share(local: u64, total: usize, here: usize) -> u64 {
    if here == 0 {
        return 0;
    }
    let scaled = u128::from(local) * total as u128 / here as u128;
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    #[test]
    fn a_share_scales_to_the_whole_ring() {
        assert_eq!(scale_share(300, 1024, 1024), 300);
        assert_eq!(scale_share(300, 1024, 512), 600);
        assert_eq!(scale_share(7, 1024, 0), 0);
        assert_eq!(scale_share(u64::MAX, 1024, 1), u64::MAX);
    }
}
