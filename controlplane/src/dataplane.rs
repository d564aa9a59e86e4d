//! Calls from the control plane to a data-plane cluster on behalf of a
//! signed-in user (the console's item browser and health pages): with the
//! cluster's admin credential, acting in the caller's tenant through the
//! items API's `X-Dyno-Tenant` header. The tenant always comes from the
//! caller, never from the request.
//!
//! Nodes are tried in the order the cluster lists them; the first that
//! answers serves the call (any node coordinates any request).

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// A cluster's admin URLs and credential.
#[derive(Debug, Clone)]
pub struct ClusterAccess {
    /// Its name.
    pub name: String,
    /// Its nodes' URLs.
    pub urls: Vec<String>,
    token: String,
}

impl ClusterAccess {
    /// Access to a cluster with these URLs and credential.
    pub fn new(name: String, urls: Vec<String>, token: String) -> ClusterAccess {
        ClusterAccess { name, urls, token }
    }
}

/// A data-plane answer: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body (`Null` when not JSON).
    pub body: Value,
}

/// The data plane's error codes the control plane passes on unchanged
/// (anything else becomes `DataPlaneError` with the node's message).
const PASSED_CODES: &[&str] = &[
    "TableNotFound",
    "InvalidKey",
    "InvalidBody",
    "InvalidContext",
    "InvalidCondition",
    "InvalidRequest",
    "InvalidR",
    "InvalidW",
    "ValueTooLarge",
    "PreconditionFailed",
    "TooManySiblings",
    "QuorumNotMet",
    "NotInCluster",
    "RingChanging",
    "DeadlineExceeded",
    "ThrottlingException",
];

/// The data plane's error as the API's (same status and code; the
/// message is the node's, which names no other tenant's data).
pub fn api_error(answer: &Answer) -> ApiError {
    let code = answer.body["error"]["code"].as_str().unwrap_or_default();
    let message = answer.body["error"]["message"].as_str().map_or_else(
        || format!("the data plane answered {}", answer.status),
        str::to_owned,
    );
    let code = PASSED_CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("DataPlaneError");
    let status = if answer.status == StatusCode::UNAUTHORIZED {
        // The control plane's credential for the cluster was refused:
        // the platform's problem, not the caller's.
        StatusCode::BAD_GATEWAY
    } else {
        answer.status
    };
    ApiError::new(status, code, message)
}

impl ClusterAccess {
    /// The cluster's admin credential.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl AppState {
    /// The access to `cluster`.
    pub async fn cluster_access(&self, cluster: &str) -> ApiResult<ClusterAccess> {
        let c = sqlx::query!(
            "SELECT name, admin_urls, credential FROM clusters WHERE name = $1",
            cluster
        )
        .fetch_optional(self.db())
        .await?
        .ok_or_else(|| ApiError::internal(format!("table on unknown cluster {cluster:?}")))?;
        let token = String::from_utf8(
            self.master()
                .open(&c.credential)
                .map_err(ApiError::internal)?,
        )
        .map_err(ApiError::internal)?;
        Ok(ClusterAccess {
            name: c.name,
            urls: c.admin_urls,
            token,
        })
    }

    /// Sends a request to the first node of `cluster` that answers, in
    /// `tenant`. `path` starts with `/`.
    pub async fn data_plane(
        &self,
        cluster: &ClusterAccess,
        tenant: Option<&str>,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> ApiResult<Answer> {
        let mut last_error = String::from("the cluster has no admin URL");
        for url in &cluster.urls {
            let mut req = self
                .http()
                .request(method.clone(), format!("{url}{path}"))
                .bearer_auth(&cluster.token)
                .timeout(Duration::from_secs(10));
            if let Some(t) = tenant {
                req = req.header("x-dyno-tenant", t);
            }
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            match req.send().await {
                Ok(resp) => {
                    let status = StatusCode::from_u16(resp.status().as_u16())
                        .unwrap_or(StatusCode::BAD_GATEWAY);
                    let bytes = resp.bytes().await.unwrap_or_default();
                    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    return Ok(Answer { status, body });
                }
                Err(e) => {
                    tracing::debug!(cluster = cluster.name, url, error = %e, "node unreachable");
                    last_error = e.to_string();
                }
            }
        }
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ClusterUnavailable",
            format!(
                "no node of cluster {:?} answered ({last_error}); retry shortly",
                cluster.name
            ),
        ))
    }
}

/// Percent-encodes one path segment (everything but RFC 3986's
/// unreserved characters).
pub fn path_segment(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(path_segment(b"a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(path_segment(b"a/b c?#%"), "a%2Fb%20c%3F%23%25");
        assert_eq!(path_segment("é".as_bytes()), "%C3%A9");
    }

    #[test]
    fn node_errors_keep_known_codes_only() {
        let a = Answer {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            body: serde_json::json!({"error": {"code": "ValueTooLarge", "message": "too big"}}),
        };
        let e = api_error(&a);
        assert_eq!(
            (e.status, e.code, e.message.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "ValueTooLarge", "too big")
        );
        let b = Answer {
            status: StatusCode::UNAUTHORIZED,
            body: serde_json::json!({"error": {"code": "Unauthorized", "message": "no"}}),
        };
        let e = api_error(&b);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_GATEWAY, "DataPlaneError")
        );
    }
}
