//! Conversions between the node's types and the internal protocol's
//! messages (`proto/internal.proto`), in one place: conflict modes, catalog
//! entries, errors, and the classification of failed calls.
//!
//! Depends only on `error` and `catalog`.

use dyno_core::ConflictMode;
use dyno_core::coordinator::ReplicaFailure;
use dyno_proto::internal as pb;

use crate::catalog::{
    Access, DEFAULT_TENANT, KeyEntry, Record, Scope, TableConfig, TableEntry, TenantEntry,
    validate_table_name,
};
use crate::error::{ErrorCode, ServiceError};

/// The conflict mode in wire form.
pub fn mode_to_pb(mode: ConflictMode) -> i32 {
    match mode {
        ConflictMode::Siblings => pb::ConflictMode::Siblings as i32,
        ConflictMode::Lww => pb::ConflictMode::Lww as i32,
    }
}

/// The conflict mode sent by a peer (unknown values read as siblings, the
/// mode that never discards a value).
pub fn mode_from_pb(v: i32) -> ConflictMode {
    if v == pb::ConflictMode::Lww as i32 {
        ConflictMode::Lww
    } else {
        ConflictMode::Siblings
    }
}

/// The conflict mode to merge a received item with: its table's, as this
/// node's catalog has it, else the mode the sender attached (a table this
/// node does not know yet).
pub fn item_mode(catalog: &crate::catalog::Catalog, item: &pb::Item) -> ConflictMode {
    catalog
        .mode_of_item(&item.item_key)
        .unwrap_or_else(|| mode_from_pb(item.conflict))
}

/// Catalog records in wire form.
pub fn catalog_to_pb(records: &[Record]) -> pb::Catalog {
    let mut out = pb::Catalog::default();
    for r in records {
        match r {
            Record::Table(e) => out.tables.push(pb::TableEntry {
                name: e.name.clone(),
                n: e.config.n,
                r: e.config.r,
                w: e.config.w,
                conflict: mode_to_pb(e.config.mode()),
                version: e.version,
                deleted: e.deleted,
                tenant: e.tenant.clone(),
                table: e.table.clone(),
                throughput_limit: e.throughput_limit.unwrap_or(0),
                dynamo: e
                    .dynamo
                    .as_ref()
                    .and_then(|d| serde_json::to_string(d).ok())
                    .unwrap_or_default(),
            }),
            Record::Key(k) => out.keys.push(pb::KeyEntry {
                id: k.id.clone(),
                tenant: k.tenant.clone(),
                scopes: k
                    .scopes
                    .iter()
                    .map(|s| pb::Scope {
                        table: s.table.clone(),
                        access: match s.access {
                            Access::Read => pb::Access::Read,
                            Access::Write => pb::Access::Write,
                            Access::Manage => pb::Access::Manage,
                        } as i32,
                    })
                    .collect(),
                revoked: k.revoked,
                version: k.version,
            }),
            Record::Tenant(t) => out.tenants.push(pb::TenantEntry {
                name: t.name.clone(),
                suspended: t.suspended,
                version: t.version,
            }),
        }
    }
    out
}

/// A storage name is a table name, or `#` (`#p` for DynamoDB tables) and
/// the control plane's id.
pub fn valid_storage_name(name: &str) -> bool {
    match name.strip_prefix('#') {
        Some(id) => {
            let id = id.strip_prefix('p').unwrap_or(id);
            !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
        }
        None => validate_table_name(name).is_ok(),
    }
}

/// Catalog records from wire form (malformed ones are skipped).
pub fn catalog_from_pb(c: &pb::Catalog) -> Vec<Record> {
    let tables = c
        .tables
        .iter()
        .filter(|t| valid_storage_name(&t.name))
        .filter_map(|t| {
            // A DynamoDB table's schema must parse; a malformed record is
            // skipped like a malformed name.
            let dynamo = if t.dynamo.is_empty() {
                None
            } else {
                Some(serde_json::from_str(&t.dynamo).ok()?)
            };
            let entry = TableEntry {
                name: t.name.clone(),
                tenant: if t.tenant.is_empty() {
                    DEFAULT_TENANT.to_owned()
                } else {
                    t.tenant.clone()
                },
                table: if t.table.is_empty() {
                    t.name.clone()
                } else {
                    t.table.clone()
                },
                config: TableConfig {
                    n: t.n,
                    r: t.r,
                    w: t.w,
                    conflict: mode_from_pb(t.conflict).into(),
                },
                throughput_limit: (t.throughput_limit > 0).then_some(t.throughput_limit),
                deleted: t.deleted,
                dynamo,
                version: t.version,
            };
            entry.layout_ok().then_some(Record::Table(entry))
        });
    let keys = c.keys.iter().map(|k| {
        Record::Key(KeyEntry {
            id: k.id.clone(),
            tenant: k.tenant.clone(),
            scopes: k
                .scopes
                .iter()
                .map(|s| Scope {
                    table: s.table.clone(),
                    // An unknown access level (from a newer peer) grants
                    // the least.
                    access: match pb::Access::try_from(s.access) {
                        Ok(pb::Access::Manage) => Access::Manage,
                        Ok(pb::Access::Write) => Access::Write,
                        _ => Access::Read,
                    },
                })
                .collect(),
            revoked: k.revoked,
            version: k.version,
        })
    });
    let tenants = c.tenants.iter().map(|t| {
        Record::Tenant(TenantEntry {
            name: t.name.clone(),
            suspended: t.suspended,
            version: t.version,
        })
    });
    tables.chain(keys).chain(tenants).collect()
}

/// An error code in wire form.
pub fn code_to_pb(code: ErrorCode) -> pb::ErrorCode {
    use pb::ErrorCode as P;
    match code {
        ErrorCode::TableNotFound => P::TableNotFound,
        ErrorCode::InvalidKey => P::InvalidKey,
        ErrorCode::InvalidR => P::InvalidR,
        ErrorCode::InvalidW => P::InvalidW,
        ErrorCode::InvalidContext => P::InvalidContext,
        ErrorCode::InvalidCondition => P::InvalidCondition,
        ErrorCode::InvalidBody => P::InvalidBody,
        ErrorCode::InvalidTableName => P::InvalidTableName,
        ErrorCode::InvalidTableConfig => P::InvalidTableConfig,
        ErrorCode::InvalidRequest => P::InvalidRequest,
        ErrorCode::InvalidNode => P::InvalidNode,
        ErrorCode::ValueTooLarge => P::ValueTooLarge,
        ErrorCode::PreconditionFailed => P::PreconditionFailed,
        ErrorCode::TooManySiblings => P::TooManySiblings,
        ErrorCode::ImmutableSetting => P::ImmutableSetting,
        ErrorCode::NodeLeft => P::NodeLeft,
        ErrorCode::TooFewNodes => P::TooFewNodes,
        ErrorCode::RingChangeInProgress => P::RingChangeInProgress,
        ErrorCode::AlreadyMember => P::AlreadyMember,
        ErrorCode::NotAMember => P::NotAMember,
        ErrorCode::InvalidRingChange => P::InvalidRingChange,
        ErrorCode::NoRingChange => P::NoRingChange,
        ErrorCode::UnknownNode => P::UnknownNode,
        ErrorCode::QuorumNotMet => P::QuorumNotMet,
        ErrorCode::NotInCluster => P::NotInCluster,
        ErrorCode::RingChanging => P::RingChanging,
        ErrorCode::NodeDown => P::NodeDown,
        ErrorCode::LeaderUnreachable => P::LeaderUnreachable,
        ErrorCode::DeadlineExceeded => P::DeadlineExceeded,
        ErrorCode::Internal => P::Internal,
        ErrorCode::Unauthorized => P::Unauthorized,
        ErrorCode::Forbidden => P::Forbidden,
        ErrorCode::Throttled => P::Throttled,
    }
}

/// An error code from wire form; a value this node does not know (sent by
/// a newer peer) reads as `Internal`.
pub fn code_from_pb(v: i32) -> ErrorCode {
    let Ok(p) = pb::ErrorCode::try_from(v) else {
        return ErrorCode::Internal;
    };
    ErrorCode::ALL
        .into_iter()
        .find(|c| code_to_pb(*c) == p)
        .unwrap_or(ErrorCode::Internal)
}

/// An error in wire form.
pub fn error_to_pb(e: &ServiceError) -> pb::ServiceErrorMsg {
    pb::ServiceErrorMsg {
        code: code_to_pb(e.code) as i32,
        message: e.message.clone(),
    }
}

/// An error from wire form.
pub fn error_from_pb(e: pb::ServiceErrorMsg) -> ServiceError {
    ServiceError::new(code_from_pb(e.code), e.message)
}

/// Classifies a failed internal call: a refused connection is evidence that
/// the peer is down; a deadline is not (it may only be slow).
pub fn classify(status: &tonic::Status) -> ReplicaFailure {
    match status.code() {
        tonic::Code::Unavailable => ReplicaFailure::Unreachable,
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ReplicaFailure::Timeout,
        _ => ReplicaFailure::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code survives the trip between nodes with its message intact:
    /// before codes were typed, a forwarded `TableNotFound` wrapped its
    /// message twice and a forwarded `ValueTooLarge` became a 400.
    #[test]
    fn every_error_crosses_nodes_unchanged() {
        for code in ErrorCode::ALL {
            let e = ServiceError::new(code, format!("details of {code}"));
            let back = error_from_pb(error_to_pb(&e));
            assert_eq!(back, e, "{code}");
        }
        let e = ServiceError::table_not_found("orders");
        assert_eq!(error_from_pb(error_to_pb(&e)).message, e.message);
    }

    #[test]
    fn unknown_codes_from_newer_peers_read_as_internal() {
        assert_eq!(code_from_pb(9_999), ErrorCode::Internal);
        assert_eq!(code_from_pb(-1), ErrorCode::Internal);
    }

    #[test]
    fn pb_codes_are_distinct() {
        let set: std::collections::BTreeSet<i32> = ErrorCode::ALL
            .iter()
            .map(|c| code_to_pb(*c) as i32)
            .collect();
        assert_eq!(set.len(), ErrorCode::ALL.len());
    }
}
