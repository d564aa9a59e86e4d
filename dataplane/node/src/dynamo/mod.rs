//! The DynamoDB-compatible API (JSON protocol, API version 2012-08-10): an
//! adapter over [`Service`], so that the AWS SDKs and CLI work against a
//! node with nothing changed but the endpoint and the credentials.
//!
//! * `POST /` with `X-Amz-Target: DynamoDB_20120810.<Operation>` and an
//!   `application/x-amz-json-1.0` body; `GET /` answers 200 for health
//!   checks.
//! * Every request is signed with AWS Signature V4 by an API key (access key
//!   id = the key's id, secret = its derived secret), verified here
//!   (`auth.rs`); the key's tenant scopes every table name.
//! * Errors have DynamoDB's shape (`__type`, `message`) and statuses, in one
//!   place ([`ApiError`]); every response carries `x-amzn-RequestId` and
//!   `x-amz-crc32` (the SDKs check it).
//!
//! `items.rs` has the item operations, `tables.rs` the table operations
//! (changes go to the control plane on the key's behalf; descriptions come
//! from the node's catalog), `request.rs` the JSON field readers.

mod items;
mod request;
mod tables;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dyno_core::sigv4;
use dyno_ddb::error::{DdbError, ErrorKind as DdbKind};
use serde_json::{Value as Json, json};

use crate::auth::SigV4Failure;
use crate::error::{ErrorCode, ErrorKind, ServiceError};
use crate::service::{DdbFailure, RequestCtx, Service};

/// The largest request body (DynamoDB's 16 MB).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

const TARGET_PREFIX: &str = "DynamoDB_20120810.";
const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// A DynamoDB error: its exception name (with the namespace DynamoDB
/// uses), message and status.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    type_name: &'static str,
    message: String,
    /// `ConditionalCheckFailedException` with
    /// `ReturnValuesOnConditionCheckFailure = ALL_OLD`.
    item: Option<Json>,
    retry_after: Option<u32>,
}

const DDB: &str = "com.amazonaws.dynamodb.v20120810#";
const CORAL_SERVICE: &str = "com.amazon.coral.service#";
const CORAL_VALIDATE: &str = "com.amazon.coral.validate#";

impl ApiError {
    fn new(status: StatusCode, type_name: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            type_name,
            message: message.into(),
            item: None,
            retry_after: None,
        }
    }

    /// `ValidationException` (400).
    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    /// `ResourceNotFoundException` (400).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "ResourceNotFoundException",
            message,
        )
    }

    /// `ResourceInUseException` (400).
    pub fn in_use(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "ResourceInUseException", message)
    }

    /// `SerializationException` (400).
    pub fn serialization(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "SerializationException", message)
    }

    /// `InternalServerError` (500).
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Internal server error",
        )
    }

    /// `ServiceUnavailable` (503).
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    fn namespace(&self) -> &'static str {
        match self.type_name {
            "ValidationException" => CORAL_VALIDATE,
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "MissingAuthenticationTokenException"
            | "AccessDeniedException"
            | "SerializationException"
            | "UnknownOperationException"
            | "IncompleteSignatureException" => CORAL_SERVICE,
            "ThrottlingException" | "ServiceUnavailable" => "com.amazon.coral.availability#",
            _ => DDB,
        }
    }

    fn into_response(self, request_id: &str) -> Response {
        let mut body = json!({
            "__type": format!("{}{}", self.namespace(), self.type_name),
            "message": self.message,
        });
        if let Some(item) = self.item {
            body["Item"] = item;
        }
        let mut resp = respond(self.status, &body, request_id);
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<DdbError> for ApiError {
    fn from(e: DdbError) -> Self {
        match e.kind {
            DdbKind::Validation => ApiError::validation(e.message),
            DdbKind::Serialization => ApiError::serialization(e.message),
            DdbKind::ConditionalCheckFailed => ApiError {
                item: e.item,
                ..ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "ConditionalCheckFailedException",
                    e.message,
                )
            },
        }
    }
}

impl From<ServiceError> for ApiError {
    /// The one mapping of the service's errors to DynamoDB's.
    fn from(e: ServiceError) -> Self {
        let bad = StatusCode::BAD_REQUEST;
        match (e.code, e.code.kind()) {
            (ErrorCode::TableNotFound, _) => {
                ApiError::not_found(format!("Requested resource not found: {}", e.message))
            }
            (ErrorCode::RingChanging | ErrorCode::DeadlineExceeded, _) => ApiError::internal(),
            (ErrorCode::Throttled, _) => ApiError {
                retry_after: e.retry_after_secs,
                ..ApiError::new(
                    bad,
                    "ProvisionedThroughputExceededException",
                    "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.",
                )
            },
            (_, ErrorKind::BadRequest | ErrorKind::TooLarge) => ApiError::validation(e.message),
            (_, ErrorKind::NotFound) => ApiError::not_found(e.message),
            (_, ErrorKind::PreconditionFailed) => {
                ApiError::new(bad, "ConditionalCheckFailedException", e.message)
            }
            (_, ErrorKind::Conflict) => ApiError::in_use(e.message),
            (_, ErrorKind::Unavailable) => ApiError::unavailable(e.message),
            (_, ErrorKind::Unauthorized) => ApiError::new(
                bad,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            (_, ErrorKind::Forbidden) => ApiError::new(
                bad,
                "AccessDeniedException",
                format!(
                    "User is not authorized to perform this action: {}",
                    e.message
                ),
            ),
            (_, ErrorKind::Throttled) => ApiError::new(bad, "ThrottlingException", e.message),
            (_, ErrorKind::Internal) => {
                tracing::error!(error = %e.message, "internal error while serving a DynamoDB request");
                ApiError::internal()
            }
        }
    }
}

impl From<DdbFailure> for ApiError {
    fn from(f: DdbFailure) -> Self {
        match f {
            DdbFailure::Service(e) => e.into(),
            DdbFailure::Model(e) => e.into(),
        }
    }
}

/// An operation's result.
pub type ApiResult<T> = Result<T, ApiError>;

fn respond(status: StatusCode, body: &Json, request_id: &str) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let crc = crc32fast::hash(&bytes);
    let mut resp = (status, Body::from(bytes)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    h.insert("x-amz-crc32", HeaderValue::from(crc));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

fn request_id() -> String {
    format!(
        "{:016X}{:016X}",
        crate::sys::random_u64(),
        crate::sys::random_u64()
    )
}

/// `GET /`: health checks.
pub async fn health() -> impl IntoResponse {
    (StatusCode::OK, "healthy: dyno")
}

fn auth_error(f: SigV4Failure) -> ApiError {
    let bad = StatusCode::BAD_REQUEST;
    match f {
        SigV4Failure::Missing => ApiError::new(
            bad,
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token",
        ),
        SigV4Failure::Malformed(m) => ApiError::new(bad, "IncompleteSignatureException", m),
        SigV4Failure::UnknownKey => ApiError::new(
            bad,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        SigV4Failure::BadSignature(_) => ApiError::new(
            bad,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ),
        SigV4Failure::Expired => ApiError::new(
            bad,
            "InvalidSignatureException",
            "Signature expired: the request time is more than 15 minutes from the server's time.",
        ),
    }
}

fn authenticate(
    service: &Service,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    body: &[u8],
) -> ApiResult<RequestCtx> {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
        .collect();
    let req = sigv4::Request {
        method: "POST",
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &pairs,
        body,
    };
    service.authenticate_sigv4(&req).map_err(auth_error)
}

/// `POST /`: one DynamoDB operation.
pub async fn handle(State(service): State<Service>, request: Request) -> Response {
    let id = request_id();
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::validation(format!(
                "Request size exceeds the maximum of {MAX_REQUEST_BYTES} bytes"
            ))
            .into_response(&id);
        }
    };
    match serve(&service, &parts.headers, &parts.uri, &body).await {
        Ok(out) => respond(StatusCode::OK, &out, &id),
        Err(e) => e.into_response(&id),
    }
}

async fn serve(
    service: &Service,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    body: &Bytes,
) -> ApiResult<Json> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let op = target.strip_prefix(TARGET_PREFIX).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("Unknown operation: X-Amz-Target {target:?}"),
        )
    })?;
    let ctx = authenticate(service, headers, uri, body)?;
    let input: Json = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::serialization(format!(
                "Start of structure or map found where not expected, or malformed JSON: {e}"
            ))
        })?
    };
    if !input.is_object() {
        return Err(ApiError::serialization(
            "The request body must be a JSON object",
        ));
    }
    match op {
        "GetItem" => items::get_item(service, &ctx, &input).await,
        "PutItem" => items::put_item(service, &ctx, &input).await,
        "DeleteItem" => items::delete_item(service, &ctx, &input).await,
        "UpdateItem" => items::update_item(service, &ctx, &input).await,
        "BatchGetItem" => items::batch_get_item(service, &ctx, &input).await,
        "BatchWriteItem" => items::batch_write_item(service, &ctx, &input).await,
        "Query" => items::query(service, &ctx, &input).await,
        "Scan" => items::scan(service, &ctx, &input).await,
        "CreateTable" => tables::create_table(service, &ctx, &input).await,
        "DescribeTable" => tables::describe_table(service, &ctx, &input),
        "ListTables" => tables::list_tables(service, &ctx, &input),
        "DeleteTable" => tables::delete_table(service, &ctx, &input).await,
        "UpdateTable" => tables::update_table(service, &ctx, &input).await,
        "DescribeTimeToLive" => tables::describe_ttl(service, &ctx, &input),
        "UpdateTimeToLive" => tables::update_ttl(service, &ctx, &input).await,
        "TagResource" => tables::tag_resource(service, &ctx, &input).await,
        "UntagResource" => tables::untag_resource(service, &ctx, &input).await,
        "ListTagsOfResource" => tables::list_tags(service, &ctx, &input),
        "DescribeEndpoints" => Ok(tables::describe_endpoints(headers)),
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("Unknown operation: {other}"),
        )),
    }
}
