//! The one place where node errors become HTTP responses.
//!
//! Every error a client can see has a stable `code`, an HTTP status and a
//! message. Internal failures are logged here, where they are handled, and
//! the client gets a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use thiserror::Error;

/// An error returned by the public or admin API.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The table does not exist.
    #[error("table {table:?} does not exist")]
    TableNotFound {
        /// Its name.
        table: String,
    },
    /// The request is malformed: bad key, bad R/W, bad header, bad body.
    #[error("{message}")]
    BadRequest {
        /// Stable code, e.g. `InvalidKey`.
        code: &'static str,
        /// What is wrong, for a human.
        message: String,
    },
    /// The value is larger than 1 MiB.
    #[error("the value is {size} bytes; the limit is {limit} bytes")]
    ValueTooLarge {
        /// Bytes received (at least).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A conditional write's condition did not hold.
    #[error("{message}")]
    PreconditionFailed {
        /// Why.
        message: String,
    },
    /// Too many siblings: the client must resolve them first.
    #[error("{message}")]
    TooManySiblings {
        /// Why.
        message: String,
    },
    /// Fewer than the required replicas answered in time.
    #[error("{message}")]
    QuorumNotMet {
        /// The counts.
        message: String,
    },
    /// A failure inside the node; details are in the node's log.
    /// The request conflicts with the cluster's state (409).
    #[error("{message}")]
    Conflict {
        /// The error code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// Something named in the request does not exist (404).
    #[error("{message}")]
    NotFound {
        /// The error code.
        code: &'static str,
        /// What is missing.
        message: String,
    },
    /// The node cannot serve this now (503).
    #[error("{message}")]
    Unavailable {
        /// The error code.
        code: &'static str,
        /// Why.
        message: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A bad-request error.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::TableNotFound { .. } => "TableNotFound",
            ApiError::BadRequest { code, .. } => code,
            ApiError::ValueTooLarge { .. } => "ValueTooLarge",
            ApiError::PreconditionFailed { .. } => "PreconditionFailed",
            ApiError::TooManySiblings { .. } => "TooManySiblings",
            ApiError::QuorumNotMet { .. } => "QuorumNotMet",
            ApiError::Conflict { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Unavailable { code, .. } => code,
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::TableNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::TooManySiblings { .. } => StatusCode::CONFLICT,
            ApiError::QuorumNotMet { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Rebuilds an error from a code and message forwarded by another node.
    pub fn from_code(code: &str, message: String) -> Self {
        match code {
            "TableNotFound" => ApiError::TableNotFound { table: message },
            "PreconditionFailed" => ApiError::PreconditionFailed { message },
            "TooManySiblings" => ApiError::TooManySiblings { message },
            "QuorumNotMet" => ApiError::QuorumNotMet { message },
            "ValueTooLarge" => ApiError::bad("ValueTooLarge", message),
            "NotInCluster" => ApiError::Unavailable {
                code: "NotInCluster",
                message,
            },
            "RingChanging" | "NodeDown" | "LeaderUnreachable" => ApiError::Unavailable {
                code: match code {
                    "RingChanging" => "RingChanging",
                    "NodeDown" => "NodeDown",
                    _ => "LeaderUnreachable",
                },
                message,
            },
            "UnknownNode" => ApiError::NotFound {
                code: "UnknownNode",
                message,
            },
            "NodeLeft"
            | "TooFewNodes"
            | "RingChangeInProgress"
            | "AlreadyMember"
            | "NotAMember"
            | "InvalidRingChange"
            | "ImmutableSetting"
            | "NoRingChange" => ApiError::Conflict {
                code: match code {
                    "NodeLeft" => "NodeLeft",
                    "TooFewNodes" => "TooFewNodes",
                    "RingChangeInProgress" => "RingChangeInProgress",
                    "AlreadyMember" => "AlreadyMember",
                    "NotAMember" => "NotAMember",
                    "ImmutableSetting" => "ImmutableSetting",
                    "NoRingChange" => "NoRingChange",
                    _ => "InvalidRingChange",
                },
                message,
            },
            _ => ApiError::Internal(message),
        }
    }
}

impl From<dyno_storage::StoreError> for ApiError {
    fn from(e: dyno_storage::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error while serving a request");
                "internal error; see the node's log".to_owned()
            }
            other => other.to_string(),
        };
        let body = json!({ "error": { "code": self.code(), "message": message } });
        (self.status(), Json(body)).into_response()
    }
}
