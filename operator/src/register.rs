//! Registering the clusters the operator runs with the control plane, so
//! that they appear in the console and tenants' tables can be placed on
//! them: `PUT /api/v1/clusters/{name}` with the client Service's URL and
//! the cluster's admin credential, signed in as a platform admin.
//!
//! A cluster is registered once it is available, and again whenever its
//! URL or credential changes (or the operator restarted: the control plane
//! answers an unchanged registration with 200, so repeating it is
//! harmless).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

/// Why a registration failed (retried on the next pass).
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The control plane could not be reached.
    #[error("control plane at {url} unreachable: {source}")]
    Unreachable {
        /// Its URL.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// It answered with an error.
    #[error("control plane refused {what}: {status} {message}")]
    Refused {
        /// Signing in or registering.
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
}

/// Where the control plane is and who the operator signs in as.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Its base URL.
    pub url: String,
    /// A platform admin's email.
    pub email: String,
    /// Their password.
    pub password: String,
}

/// Registers clusters, remembering what it registered.
#[derive(Debug)]
pub struct Registrar {
    cp: ControlPlane,
    http: reqwest::Client,
    /// Cluster name -> (URLs, credential) last registered.
    done: Mutex<HashMap<String, (Vec<String>, String)>>,
}

impl Registrar {
    /// A registrar for `cp`.
    pub fn new(cp: ControlPlane) -> Registrar {
        let http = dyno_tls::http_client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Registrar {
            cp: ControlPlane {
                url: cp.url.trim_end_matches('/').to_owned(),
                ..cp
            },
            http,
            done: Mutex::default(),
        }
    }

    /// Registers cluster `name` at `urls` with `token`, unless that is
    /// what was last registered; true when it registered now.
    pub async fn ensure(
        &self,
        name: &str,
        urls: &[String],
        token: &str,
    ) -> Result<bool, RegisterError> {
        let want = (urls.to_vec(), token.to_owned());
        if self
            .done
            .lock()
            .map(|d| d.get(name) == Some(&want))
            .unwrap_or(false)
        {
            return Ok(false);
        }
        let session = self
            .call(
                "signing in",
                self.http
                    .post(format!("{}/api/v1/auth/login", self.cp.url))
                    .json(&json!({ "email": self.cp.email, "password": self.cp.password })),
            )
            .await?;
        let bearer = session["token"].as_str().unwrap_or_default().to_owned();
        self.call(
            "the registration",
            self.http
                .put(format!("{}/api/v1/clusters/{name}", self.cp.url))
                .bearer_auth(bearer)
                .json(&json!({ "admin_urls": urls, "admin_token": token })),
        )
        .await?;
        if let Ok(mut d) = self.done.lock() {
            d.insert(name.to_owned(), want);
        }
        Ok(true)
    }

    async fn call(
        &self,
        what: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<Value, RegisterError> {
        let resp = req
            .send()
            .await
            .map_err(|source| RegisterError::Unreachable {
                url: self.cp.url.clone(),
                source,
            })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(RegisterError::Refused {
            what,
            status: status.as_u16(),
            message: body["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .to_owned(),
        })
    }
}

/// The name a cluster is registered under: `NAME.NAMESPACE`.
pub fn cluster_name(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}")
}
