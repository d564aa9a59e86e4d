//! The console's only way to read or change anything: the control plane's
//! REST API, called in-process through its router (no network hop), with
//! the signed-in user's session token as the bearer. Every rule the API
//! has (validation, the authorization policy, tenant isolation, the audit
//! log) therefore applies to the console unchanged; none is repeated here.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::ServiceExt;

/// Why an API call failed, as the API said it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The HTTP status.
    pub status: StatusCode,
    /// The API's stable code (`ValidationError`, `NotFound`, …).
    pub code: String,
    /// A sentence for a person.
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
}

impl Failure {
    /// A failure of the console itself (not from the API).
    pub fn internal(message: impl Into<String>) -> Failure {
        Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalError".into(),
            message: message.into(),
            field: None,
        }
    }

    /// True when the session is missing, invalid or expired.
    pub fn is_unauthorized(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
    }

    /// The message when it concerns `field`.
    pub fn for_field(&self, field: &str) -> Option<String> {
        (self.field.as_deref() == Some(field)).then(|| self.message.clone())
    }
}

/// A result of an API call.
pub type ApiResult<T> = Result<T, Failure>;

/// A client of the API for one caller.
#[derive(Debug, Clone)]
pub struct Api {
    router: Router,
    token: Option<String>,
}

/// Percent-encodes a path segment.
pub fn seg(raw: &str) -> String {
    dyno_controlplane::dataplane::path_segment(raw.as_bytes())
}

impl Api {
    /// A client over the API's router, as the holder of `token` (or
    /// nobody, for sign-in).
    pub fn new(router: Router, token: Option<String>) -> Api {
        Api { router, token }
    }

    /// Calls `method path` with an optional JSON body and decodes the
    /// answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> ApiResult<T> {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(b).map_err(|e| Failure::internal(e.to_string()))?)
            }
            None => Body::empty(),
        };
        let req = req
            .body(body)
            .map_err(|e| Failure::internal(format!("bad request to the API: {e}")))?;
        let resp = match self.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .map_err(|e| Failure::internal(format!("reading the API's answer: {e}")))?;
        if status.is_success() {
            // An empty answer (204) reads as JSON null: `()` for the caller.
            let bytes = if bytes.is_empty() {
                axum::body::Bytes::from_static(b"null")
            } else {
                bytes
            };
            return serde_json::from_slice(&bytes)
                .map_err(|e| Failure::internal(format!("the API's answer did not parse: {e}")));
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let e = &v["error"];
        Err(Failure {
            status,
            code: e["code"].as_str().unwrap_or("Error").to_owned(),
            message: e["message"]
                .as_str()
                .map_or_else(|| format!("the request failed ({status})"), str::to_owned),
            field: e["field"].as_str().map(str::to_owned),
        })
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> ApiResult<T> {
        self.call(Method::GET, path, None::<&Value>).await
    }

    /// `POST path` with `body`.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> ApiResult<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `PATCH path` with `body`.
    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> ApiResult<T> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    /// `PUT path` with `body`.
    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> ApiResult<T> {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> ApiResult<T> {
        self.call(Method::DELETE, path, None::<&Value>).await
    }
}
