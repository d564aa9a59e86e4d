//! The node's one error type: [`ServiceError`], a typed [`ErrorCode`] and a
//! message for a person.
//!
//! Every layer below the front-ends returns it (or an error that converts
//! into it), and every front-end maps it in exactly one place: HTTP statuses
//! in `http.rs`, gRPC codes in `grpc.rs`, the internal protocol's enum in
//! `wire.rs`. A forwarded error therefore crosses nodes as the same code
//! and message, not as a string to be parsed again.
//!
//! This module depends on nothing else in the crate.

use std::fmt;

use thiserror::Error;

/// What went wrong, as a stable code. Clients branch on the code; the
/// message is for people. The string form (`as_str`) is part of the HTTP and
/// gRPC contract: never rename a variant's string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// The table does not exist (404). Create it first.
    TableNotFound,
    /// The key is empty or longer than 2,048 bytes (400).
    InvalidKey,
    /// The read quorum is not a whole number from 1 to the table's N (400).
    InvalidR,
    /// The write quorum is not a whole number from 1 to the table's N (400).
    InvalidW,
    /// A context (or `If-Match`) does not decode: it was altered or
    /// truncated. Send back exactly what a read returned (400).
    InvalidContext,
    /// A precondition header is malformed (400).
    InvalidCondition,
    /// The request body could not be read (400).
    InvalidBody,
    /// A table name breaks the naming rules (400).
    InvalidTableName,
    /// A table's N/R/W or conflict mode is out of range (400).
    InvalidTableConfig,
    /// A request body does not parse (400).
    InvalidRequest,
    /// A node name breaks the naming rules (400).
    InvalidNode,
    /// The value is larger than 1 MiB (413). Split it.
    ValueTooLarge,
    /// A conditional write's condition did not hold (412). Read again.
    PreconditionFailed,
    /// The key has too many siblings (409). Read, resolve, write back with
    /// the context.
    TooManySiblings,
    /// A table setting that cannot change was given a new value (409).
    ImmutableSetting,
    /// The node was decommissioned and cannot rejoin as it is (409).
    NodeLeft,
    /// A decommission would leave fewer nodes than a table's N (409).
    TooFewNodes,
    /// Another ring change is under way (409). Wait for it, or abort it.
    RingChangeInProgress,
    /// The node is already a ring member (409).
    AlreadyMember,
    /// The node is not a ring member (409).
    NotAMember,
    /// The planner refused the ring change (409).
    InvalidRingChange,
    /// There is no ring change to abort (409).
    NoRingChange,
    /// No node of that name has gossiped with the cluster (404).
    UnknownNode,
    /// Fewer replicas than the quorum answered in time (503). Retry, or
    /// lower R/W for this request.
    QuorumNotMet,
    /// This node has not joined a cluster yet (503). Use a member.
    NotInCluster,
    /// Nodes disagree on the key's replicas while the ring changes (503).
    /// Retry.
    RingChanging,
    /// The node a ring change needs is not answering (503).
    NodeDown,
    /// The node that begins ring changes did not answer (503). Retry.
    LeaderUnreachable,
    /// The request's deadline passed before it finished (503). The write
    /// may or may not have been applied; retrying is safe with a context.
    DeadlineExceeded,
    /// A failure inside the node (500). Details are in the node's log, never
    /// in the response.
    Internal,
    /// No credentials, or credentials that are unknown, revoked, or belong
    /// to a suspended tenant (401). The message never says which.
    Unauthorized,
    /// The credentials are valid but do not allow this (403).
    Forbidden,
    /// The table is over its throughput limit (429, `Retry-After`). Back
    /// off and retry. Spelled `ThrottlingException`, as DynamoDB does.
    Throttled,
}

/// How a front-end should classify a code (the HTTP status family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong; retrying it unchanged fails again.
    BadRequest,
    /// The value is too large.
    TooLarge,
    /// Something named does not exist.
    NotFound,
    /// A precondition did not hold.
    PreconditionFailed,
    /// The request conflicts with the current state.
    Conflict,
    /// The service cannot serve this now; retrying may succeed.
    Unavailable,
    /// A bug or a broken disk; retrying may not help.
    Internal,
    /// Missing or bad credentials.
    Unauthorized,
    /// Not allowed.
    Forbidden,
    /// Over a rate limit; retry later.
    Throttled,
}

impl ErrorCode {
    /// Every code, for exhaustive tests of the mappings.
    pub const ALL: [ErrorCode; 33] = [
        ErrorCode::TableNotFound,
        ErrorCode::InvalidKey,
        ErrorCode::InvalidR,
        ErrorCode::InvalidW,
        ErrorCode::InvalidContext,
        ErrorCode::InvalidCondition,
        ErrorCode::InvalidBody,
        ErrorCode::InvalidTableName,
        ErrorCode::InvalidTableConfig,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidNode,
        ErrorCode::ValueTooLarge,
        ErrorCode::PreconditionFailed,
        ErrorCode::TooManySiblings,
        ErrorCode::ImmutableSetting,
        ErrorCode::NodeLeft,
        ErrorCode::TooFewNodes,
        ErrorCode::RingChangeInProgress,
        ErrorCode::AlreadyMember,
        ErrorCode::NotAMember,
        ErrorCode::InvalidRingChange,
        ErrorCode::NoRingChange,
        ErrorCode::UnknownNode,
        ErrorCode::QuorumNotMet,
        ErrorCode::NotInCluster,
        ErrorCode::RingChanging,
        ErrorCode::NodeDown,
        ErrorCode::LeaderUnreachable,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Internal,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::Throttled,
    ];

    /// The stable string form clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::TableNotFound => "TableNotFound",
            ErrorCode::InvalidKey => "InvalidKey",
            ErrorCode::InvalidR => "InvalidR",
            ErrorCode::InvalidW => "InvalidW",
            ErrorCode::InvalidContext => "InvalidContext",
            ErrorCode::InvalidCondition => "InvalidCondition",
            ErrorCode::InvalidBody => "InvalidBody",
            ErrorCode::InvalidTableName => "InvalidTableName",
            ErrorCode::InvalidTableConfig => "InvalidTableConfig",
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::InvalidNode => "InvalidNode",
            ErrorCode::ValueTooLarge => "ValueTooLarge",
            ErrorCode::PreconditionFailed => "PreconditionFailed",
            ErrorCode::TooManySiblings => "TooManySiblings",
            ErrorCode::ImmutableSetting => "ImmutableSetting",
            ErrorCode::NodeLeft => "NodeLeft",
            ErrorCode::TooFewNodes => "TooFewNodes",
            ErrorCode::RingChangeInProgress => "RingChangeInProgress",
            ErrorCode::AlreadyMember => "AlreadyMember",
            ErrorCode::NotAMember => "NotAMember",
            ErrorCode::InvalidRingChange => "InvalidRingChange",
            ErrorCode::NoRingChange => "NoRingChange",
            ErrorCode::UnknownNode => "UnknownNode",
            ErrorCode::QuorumNotMet => "QuorumNotMet",
            ErrorCode::NotInCluster => "NotInCluster",
            ErrorCode::RingChanging => "RingChanging",
            ErrorCode::NodeDown => "NodeDown",
            ErrorCode::LeaderUnreachable => "LeaderUnreachable",
            ErrorCode::DeadlineExceeded => "DeadlineExceeded",
            ErrorCode::Internal => "InternalError",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::Throttled => "ThrottlingException",
        }
    }

    /// The family the code belongs to.
    pub fn kind(self) -> ErrorKind {
        use ErrorCode::*;
        match self {
            InvalidKey | InvalidR | InvalidW | InvalidContext | InvalidCondition | InvalidBody
            | InvalidTableName | InvalidTableConfig | InvalidRequest | InvalidNode => {
                ErrorKind::BadRequest
            }
            ValueTooLarge => ErrorKind::TooLarge,
            TableNotFound | UnknownNode => ErrorKind::NotFound,
            PreconditionFailed => ErrorKind::PreconditionFailed,
            TooManySiblings | ImmutableSetting | NodeLeft | TooFewNodes | RingChangeInProgress
            | AlreadyMember | NotAMember | InvalidRingChange | NoRingChange => ErrorKind::Conflict,
            QuorumNotMet | NotInCluster | RingChanging | NodeDown | LeaderUnreachable
            | DeadlineExceeded => ErrorKind::Unavailable,
            Internal => ErrorKind::Internal,
            Unauthorized => ErrorKind::Unauthorized,
            Forbidden => ErrorKind::Forbidden,
            Throttled => ErrorKind::Throttled,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from the node's service API: a code and a message for a person.
/// For [`ErrorCode::Internal`] the message is for the log only; front-ends
/// show the client a generic text instead ([`ServiceError::client_message`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ServiceError {
    /// What went wrong.
    pub code: ErrorCode,
    /// Details, for a person.
    pub message: String,
    /// For `Throttled`: seconds to wait before retrying.
    pub retry_after_secs: Option<u32>,
}

impl ServiceError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ServiceError {
        ServiceError {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// A failure inside the node (logged by the front-end, hidden from the
    /// client).
    pub fn internal(detail: impl fmt::Display) -> ServiceError {
        ServiceError::new(ErrorCode::Internal, detail.to_string())
    }

    /// The table does not exist.
    pub fn table_not_found(table: &str) -> ServiceError {
        ServiceError::new(
            ErrorCode::TableNotFound,
            format!("table {table:?} does not exist"),
        )
    }

    /// The value is over the limit.
    pub fn value_too_large(size: usize, limit: usize) -> ServiceError {
        ServiceError::new(
            ErrorCode::ValueTooLarge,
            format!("the value is {size} bytes; the limit is {limit} bytes"),
        )
    }

    /// The one answer to bad credentials, whatever was wrong with them.
    pub fn unauthorized() -> ServiceError {
        ServiceError::new(
            ErrorCode::Unauthorized,
            "missing or invalid credentials: send Authorization: Bearer <API key token>",
        )
    }

    /// The credentials do not allow the operation.
    pub fn forbidden(what: impl fmt::Display) -> ServiceError {
        ServiceError::new(ErrorCode::Forbidden, format!("this key may not {what}"))
    }

    /// The table is over its throughput limit.
    pub fn throttled(table: &str, retry_after_secs: u32) -> ServiceError {
        ServiceError {
            retry_after_secs: Some(retry_after_secs),
            ..ServiceError::new(
                ErrorCode::Throttled,
                format!(
                    "table {table:?} is over its throughput limit; retry after {retry_after_secs} s"
                ),
            )
        }
    }

    /// This node has no ring yet.
    pub fn not_in_cluster() -> ServiceError {
        ServiceError::new(
            ErrorCode::NotInCluster,
            "this node has not joined a cluster yet; send the request to a member",
        )
    }

    /// What a client may be shown: the message, except for internal errors.
    pub fn client_message(&self) -> &str {
        if self.code == ErrorCode::Internal {
            "internal error; see the node's log"
        } else {
            &self.message
        }
    }
}

impl From<dyno_storage::StoreError> for ServiceError {
    fn from(e: dyno_storage::StoreError) -> Self {
        ServiceError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_distinct_strings_and_all_is_complete() {
        let strings: std::collections::BTreeSet<_> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(strings.len(), ErrorCode::ALL.len());
        // A new variant must be added to ALL: the match in `kind` is
        // exhaustive, and this checks ALL has no duplicates.
        let set: std::collections::BTreeSet<_> = ErrorCode::ALL.iter().collect();
        assert_eq!(set.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn internal_details_are_hidden_from_clients() {
        let e = ServiceError::internal("disk /dev/sda on fire");
        assert!(!e.client_message().contains("sda"));
        let e = ServiceError::table_not_found("t");
        assert_eq!(e.client_message(), "table \"t\" does not exist");
    }
}
