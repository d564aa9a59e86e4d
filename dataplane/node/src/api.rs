//! Validation and shaping shared by the HTTP and gRPC APIs, so that both
//! enforce the same limits with the same error codes.

use std::time::Instant;

use dyno_core::context::{MAX_CONTEXT_ENTRIES, decode_context, encode_context};
use dyno_core::coordinator::Condition;
use dyno_core::{Object, VersionVector};

use crate::error::ApiError;
use crate::metrics::OpLabels;
use crate::node::Node;

/// The largest value accepted, in bytes (1 MiB).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 2048;

/// Checks a key's length: 1 to 2048 bytes.
pub fn check_key(key: &[u8]) -> Result<(), ApiError> {
    let len = key.len();
    if len == 0 || len > MAX_KEY_BYTES {
        return Err(ApiError::bad(
            "InvalidKey",
            format!("keys must be 1 to {MAX_KEY_BYTES} bytes, got {len}"),
        ));
    }
    Ok(())
}

/// Checks a value's size.
pub fn check_value(len: usize) -> Result<(), ApiError> {
    if len > MAX_VALUE_BYTES {
        return Err(ApiError::ValueTooLarge {
            size: len,
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// Parses a per-request quorum (`"r"` or `"w"`): a whole number from 1 to
/// `n`, or the table's `default` when absent.
pub fn quorum(name: &str, value: Option<&str>, n: u32, default: u32) -> Result<usize, ApiError> {
    let Some(v) = value else {
        return Ok(default as usize);
    };
    match v.parse::<u32>() {
        Ok(x) if (1..=n).contains(&x) => Ok(x as usize),
        _ => Err(ApiError::bad(
            if name == "r" { "InvalidR" } else { "InvalidW" },
            format!("{name} must be a whole number from 1 to n = {n}, got {v:?}"),
        )),
    }
}

/// Decodes a client context; `what` names where it came from.
pub fn parse_context(what: &str, s: &str) -> Result<VersionVector, ApiError> {
    decode_context(s).map_err(|e| ApiError::bad("InvalidContext", format!("{what}: {e}")))
}

/// The write context of a request: empty (a blind write) when absent.
pub fn write_context(context: Option<&str>) -> Result<VersionVector, ApiError> {
    context.map_or(Ok(VersionVector::new()), |c| parse_context("context", c))
}

/// The precondition of a request given as `if_match` / `if_none_match`
/// fields (the gRPC API and forwarded writes).
pub fn condition(
    if_match: Option<&str>,
    if_none_match: bool,
) -> Result<Option<Condition>, ApiError> {
    match (if_match, if_none_match) {
        (Some(c), _) => Ok(Some(Condition::IfMatch(parse_context("if_match", c)?))),
        (None, true) => Ok(Some(Condition::IfNoneMatch)),
        (None, false) => Ok(None),
    }
}

/// The context string for a state (`None` when the key was never written).
pub fn context_string(obj: Option<&Object>) -> Option<String> {
    obj.filter(|o| !o.version_vector().is_empty())
        .map(|o| encode_context(&o.client_context(MAX_CONTEXT_ENTRIES)))
}

/// Records a request's latency and outcome.
pub fn record(
    node: &Node,
    op: &'static str,
    table: &str,
    started: Instant,
    error: Option<&ApiError>,
) {
    let outcome = error.map_or("ok", ApiError::code);
    node.metrics
        .requests
        .get_or_create(&OpLabels {
            op,
            table: table.to_owned(),
            outcome,
        })
        .observe(started.elapsed().as_secs_f64());
}
