//! Item operations: get, put, delete.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dyno_core::context::{MAX_CONTEXT_ENTRIES, decode_context, encode_context};
use dyno_core::{Object, VersionVector};

use super::{Principal, RequestCtx, Service};
use crate::catalog::{Access, TableEntry};
use crate::error::{ErrorCode, ServiceError};
use crate::metrics::OpLabels;
use crate::node::PutRequest;

/// The largest value accepted, in bytes (1 MiB).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 2048;
/// The metric label of requests naming a table this node does not know, so
/// that clients cannot create unbounded metric series.
pub const UNKNOWN_TABLE_LABEL: &str = "_unknown";

/// An item operation, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A read.
    Get,
    /// A write of a value.
    Put,
    /// A write of a tombstone.
    Delete,
    /// A read-modify-write (DynamoDB conditional writes and updates).
    Update,
    /// A range read of one partition key (DynamoDB Query).
    Query,
    /// A walk over every partition (DynamoDB Scan).
    Scan,
}

impl Op {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Update => "update",
            Op::Query => "query",
            Op::Scan => "scan",
        }
    }
}

/// A read.
#[derive(Debug, Clone)]
pub struct GetItem {
    /// The table.
    pub table: String,
    /// The key (1 to 2,048 bytes).
    pub key: Vec<u8>,
    /// The read quorum; the table's R when absent.
    pub r: Option<u32>,
}

/// What a read found.
#[derive(Debug, Clone)]
pub struct ItemRead {
    /// The live values (siblings), empty when the key does not exist or was
    /// deleted.
    pub values: Vec<Bytes>,
    /// The context to send back with the next write (`None` when no replica
    /// knows the key).
    pub context: Option<String>,
    /// The merged state, for views that show more (the console, tests).
    pub object: Option<Object>,
}

/// A write's precondition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Condition {
    /// None.
    #[default]
    None,
    /// Only if the key's current context is exactly this one (encoded).
    IfMatch(String),
    /// Only if the key has no live value.
    IfNoneMatch,
}

impl Condition {
    /// The precondition of a message with `if_match` / `if_none_match`
    /// fields (the gRPC API and forwarded writes); `if_match` wins.
    pub fn from_fields(if_match: Option<String>, if_none_match: bool) -> Condition {
        match (if_match, if_none_match) {
            (Some(c), _) => Condition::IfMatch(c),
            (None, true) => Condition::IfNoneMatch,
            (None, false) => Condition::None,
        }
    }
}

/// A write: a put when `value` is set, else a delete.
#[derive(Debug, Clone)]
pub struct WriteItem {
    /// The table.
    pub table: String,
    /// The key (1 to 2,048 bytes).
    pub key: Vec<u8>,
    /// The value (at most 1 MiB), or `None` to delete.
    pub value: Option<Bytes>,
    /// The context of the read this write follows (encoded); none for a
    /// blind write.
    pub context: Option<String>,
    /// The write quorum; the table's W when absent.
    pub w: Option<u32>,
    /// A precondition.
    pub condition: Condition,
}

/// What a write returns.
#[derive(Debug, Clone)]
pub struct ItemWritten {
    /// The context of the new version.
    pub context: String,
}

pub(super) fn check_key(key: &[u8]) -> Result<(), ServiceError> {
    let len = key.len();
    if len == 0 || len > MAX_KEY_BYTES {
        return Err(ServiceError::new(
            ErrorCode::InvalidKey,
            format!("keys must be 1 to {MAX_KEY_BYTES} bytes, got {len}"),
        ));
    }
    Ok(())
}

/// DynamoDB tables hold DynamoDB items under composite keys: the native
/// API neither reads nor writes them.
pub(super) fn native_only(entry: &TableEntry) -> Result<(), ServiceError> {
    if entry.dynamo.is_some() {
        return Err(ServiceError::new(
            ErrorCode::InvalidRequest,
            format!(
                "table {:?} is a DynamoDB table: use the DynamoDB API (POST /) for its items",
                entry.display_name()
            ),
        ));
    }
    Ok(())
}

fn quorum_error(name: &str, n: Option<u32>, got: &str) -> ServiceError {
    let code = if name == "r" {
        ErrorCode::InvalidR
    } else {
        ErrorCode::InvalidW
    };
    let range = n.map_or_else(|| "the table's n".to_owned(), |n| format!("n = {n}"));
    ServiceError::new(
        code,
        format!("{name} must be a whole number from 1 to {range}, got {got:?}"),
    )
}

/// Parses a per-request quorum given as text (`"r"` or `"w"`): front-ends
/// whose input is text call this, so that a malformed value gets the same
/// error everywhere.
pub fn parse_quorum(name: &str, raw: Option<&str>) -> Result<Option<u32>, ServiceError> {
    raw.map(|v| v.parse::<u32>().map_err(|_| quorum_error(name, None, v)))
        .transpose()
}

pub(super) fn quorum(
    name: &str,
    value: Option<u32>,
    n: u32,
    default: u32,
) -> Result<usize, ServiceError> {
    match value {
        None => Ok(default as usize),
        Some(x) if (1..=n).contains(&x) => Ok(x as usize),
        Some(x) => Err(quorum_error(name, Some(n), &x.to_string())),
    }
}

fn parse_context(what: &str, s: &str) -> Result<VersionVector, ServiceError> {
    decode_context(s)
        .map_err(|e| ServiceError::new(ErrorCode::InvalidContext, format!("{what}: {e}")))
}

/// The context string for a state (`None` when the key was never written).
pub fn context_string(obj: Option<&Object>) -> Option<String> {
    obj.filter(|o| !o.version_vector().is_empty())
        .map(|o| encode_context(&o.client_context(MAX_CONTEXT_ENTRIES)))
}

/// The coordinator's form of a write that has passed validation.
pub(crate) fn put_request(
    table: String,
    key: Vec<u8>,
    value: Option<Bytes>,
    context: Option<&str>,
    w: usize,
    condition: &Condition,
) -> Result<PutRequest, ServiceError> {
    let context = context.map_or(Ok(VersionVector::new()), |c| parse_context("context", c))?;
    let condition = match condition {
        Condition::None => None,
        Condition::IfMatch(c) => Some(dyno_core::coordinator::Condition::IfMatch(parse_context(
            "if_match", c,
        )?)),
        Condition::IfNoneMatch => Some(dyno_core::coordinator::Condition::IfNoneMatch),
    };
    Ok(PutRequest {
        table,
        key,
        value,
        context,
        w,
        condition,
    })
}

impl Service {
    /// Checks the caller's scope for `table`, then looks the table up in
    /// the request's tenant: once per request, the same answer serves the
    /// operation and the metric labels. The scope is checked first and on
    /// the name only, so neither answer tells whether a table exists
    /// elsewhere.
    pub(super) fn resolve(
        &self,
        ctx: &RequestCtx,
        table: &str,
        access: Access,
    ) -> Result<Arc<TableEntry>, ServiceError> {
        ctx.principal.authorize(table, access)?;
        self.inner
            .node
            .catalog()
            .resolve(&ctx.tenant, table)
            .ok_or_else(|| ServiceError::table_not_found(table))
    }

    /// Takes a token of the table's throughput limit, if it has one.
    pub(super) fn admit(&self, entry: &TableEntry) -> Result<(), ServiceError> {
        let Some(limit) = entry.throughput_limit else {
            return Ok(());
        };
        let members = self.inner.node.cluster().topology().current.members().len();
        self.inner
            .throttle
            .admit(&entry.name, limit, members, Instant::now())
            .map_err(|secs| ServiceError::throttled(entry.display_name(), secs))
    }

    pub(super) fn record(
        &self,
        op: Op,
        ctx: &RequestCtx,
        entry: Option<&TableEntry>,
        started: Instant,
        error: Option<&ServiceError>,
    ) {
        let tenant = match (entry, &ctx.principal) {
            (Some(e), _) => e.tenant.clone(),
            (None, Principal::Key(k)) => k.tenant.clone(),
            (None, _) => UNKNOWN_TABLE_LABEL.to_owned(),
        };
        let labels = OpLabels {
            op: op.as_str(),
            tenant,
            table: entry
                .map_or(UNKNOWN_TABLE_LABEL, |e| e.display_name())
                .to_owned(),
            outcome: error.map_or("ok", |e| e.code.as_str()),
        };
        self.inner
            .node
            .metrics()
            .requests
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    /// Reads a key at the request's (or the table's) R.
    pub async fn get_item(&self, ctx: &RequestCtx, req: GetItem) -> Result<ItemRead, ServiceError> {
        let started = Instant::now();
        let entry = self.resolve(ctx, &req.table, Access::Read);
        let res = match &entry {
            Ok(e) => self.get_inner(ctx, &req, e).await,
            Err(e) => Err(e.clone()),
        };
        self.record(
            Op::Get,
            ctx,
            entry.as_deref().ok(),
            started,
            res.as_ref().err(),
        );
        res
    }

    async fn get_inner(
        &self,
        ctx: &RequestCtx,
        req: &GetItem,
        entry: &TableEntry,
    ) -> Result<ItemRead, ServiceError> {
        check_key(&req.key)?;
        native_only(entry)?;
        let cfg = entry.config;
        let r = quorum("r", req.r, cfg.n, cfg.r)?;
        self.admit(entry)?;
        ctx.check_deadline()?;
        let state = self
            .inner
            .node
            .get(&entry.name, cfg, &req.key, r, ctx.deadline)
            .await?;
        Ok(ItemRead {
            values: state
                .as_ref()
                .map(|o| o.live_values().cloned().collect())
                .unwrap_or_default(),
            context: context_string(state.as_ref()),
            object: state,
        })
    }

    /// Writes a value (`value` set) or deletes (`value` absent).
    pub async fn write_item(
        &self,
        ctx: &RequestCtx,
        req: WriteItem,
    ) -> Result<ItemWritten, ServiceError> {
        let started = Instant::now();
        let op = if req.value.is_some() {
            Op::Put
        } else {
            Op::Delete
        };
        let entry = self.resolve(ctx, &req.table, Access::Write);
        let res = match &entry {
            Ok(e) => self.write_inner(ctx, req, e).await,
            Err(e) => Err(e.clone()),
        };
        self.record(op, ctx, entry.as_deref().ok(), started, res.as_ref().err());
        res
    }

    async fn write_inner(
        &self,
        ctx: &RequestCtx,
        req: WriteItem,
        entry: &TableEntry,
    ) -> Result<ItemWritten, ServiceError> {
        check_key(&req.key)?;
        native_only(entry)?;
        if let Some(v) = &req.value
            && v.len() > MAX_VALUE_BYTES
        {
            return Err(ServiceError::value_too_large(v.len(), MAX_VALUE_BYTES));
        }
        let cfg = entry.config;
        let w = quorum("w", req.w, cfg.n, cfg.w)?;
        let put = put_request(
            entry.name.clone(),
            req.key,
            req.value,
            req.context.as_deref(),
            w,
            &req.condition,
        )?;
        self.admit(entry)?;
        ctx.check_deadline()?;
        let result = self.inner.node.put(cfg, put, ctx.deadline).await?;
        Ok(ItemWritten {
            context: result.context,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_are_checked_against_n() {
        assert_eq!(quorum("r", None, 3, 2).expect("default"), 2);
        assert_eq!(quorum("w", Some(3), 3, 2).expect("n"), 3);
        for bad in [0, 4] {
            let e = quorum("w", Some(bad), 3, 2).expect_err("out of range");
            assert_eq!(e.code, ErrorCode::InvalidW);
            assert!(e.message.contains("n = 3"), "{}", e.message);
        }
        let e = parse_quorum("r", Some("two")).expect_err("not a number");
        assert_eq!(e.code, ErrorCode::InvalidR);
        assert_eq!(parse_quorum("r", None).expect("absent"), None);
    }

    #[test]
    fn keys_and_contexts_are_validated() {
        assert_eq!(
            check_key(b"").expect_err("empty").code,
            ErrorCode::InvalidKey
        );
        assert!(check_key(&[b'k'; MAX_KEY_BYTES]).is_ok());
        let long = vec![b'k'; MAX_KEY_BYTES + 1];
        assert_eq!(
            check_key(&long).expect_err("long").code,
            ErrorCode::InvalidKey
        );
        let e = put_request(
            "t".into(),
            b"k".to_vec(),
            None,
            Some("garbage!"),
            1,
            &Condition::None,
        )
        .expect_err("bad context");
        assert_eq!(e.code, ErrorCode::InvalidContext);
        let e = put_request(
            "t".into(),
            b"k".to_vec(),
            None,
            None,
            1,
            &Condition::IfMatch("%%%".into()),
        )
        .expect_err("bad if-match");
        assert_eq!(e.code, ErrorCode::InvalidContext);
    }
}
