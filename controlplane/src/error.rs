//! The control plane's API error: a status, a stable code and a message,
//! as `{"error": {"code", "message", "field"?}}` (the data plane's shape).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code clients branch on.
    pub code: &'static str,
    /// For a person.
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
    /// Seconds to wait before retrying (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 400 naming the field at fault.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.to_owned()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "ValidationError", message)
        }
    }

    /// 401, the same for every kind of bad credential.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing, invalid or expired credentials: sign in and send Authorization: Bearer <token>",
        )
    }

    /// 403.
    pub fn forbidden(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden", what)
    }

    /// 404, also for resources of other tenants.
    pub fn not_found(what: &str, name: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{what} {name:?} does not exist"),
        )
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 503: the database is unreachable.
    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the control plane's database is unavailable; retry shortly (the data plane keeps serving)",
        )
    }

    /// 500; the detail is logged, not shown.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "internal error; see the control plane's log",
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable()
            }
            sqlx::Error::Database(d) if d.code().as_deref() == Some("57P01") => {
                // admin_shutdown: the server is going away.
                ApiError::unavailable()
            }
            _ => ApiError::internal(e),
        }
    }
}

/// Maps a unique-constraint violation to 409 `code` with `message`, any
/// other database error as usual.
pub fn unique_or(
    code: &'static str,
    message: impl Into<String>,
) -> impl FnOnce(sqlx::Error) -> ApiError {
    move |e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => {
            ApiError::conflict(code, message)
        }
        _ => e.into(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(f) = &self.field {
            error["field"] = json!(f);
        }
        let mut resp = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dyno-controlplane\""),
            );
        }
        resp
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;
