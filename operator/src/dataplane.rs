//! The operator's client of a cluster's data plane: the nodes' admin API
//! over HTTP, with the cluster's admin token.
//!
//! A [`Locator`] says where node `k` answers: in Kubernetes, its stable
//! DNS name behind the headless Service; in tests, wherever the test
//! started it.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::json;

use crate::children::{HTTP_PORT, Names};
use crate::observe::{ClusterView, HintBacklog};

/// Where a cluster's nodes answer.
pub trait Locator: Send + Sync + std::fmt::Debug {
    /// The base URL (`http://host:port`) of node `k` of the cluster whose
    /// children are `names`, in `namespace`.
    fn node_url(&self, names: &Names, namespace: &str, k: u32) -> String;

    /// The base URL clients use (the control plane registers it): by
    /// default node 0's.
    fn service_url(&self, names: &Names, namespace: &str) -> String {
        self.node_url(names, namespace, 0)
    }
}

/// Inside Kubernetes: `http://NAME-k.NAME-peers.NAMESPACE.svc:7000`.
#[derive(Debug, Clone, Copy, Default)]
pub struct InCluster;

impl Locator for InCluster {
    fn node_url(&self, names: &Names, namespace: &str, k: u32) -> String {
        format!(
            "http://{}.{}.{namespace}.svc:{HTTP_PORT}",
            names.pod(k),
            names.peers
        )
    }

    /// The client Service: `http://NAME.NAMESPACE.svc:7000`.
    fn service_url(&self, names: &Names, namespace: &str) -> String {
        format!("http://{}.{namespace}.svc:{HTTP_PORT}", names.cluster)
    }
}

/// Why a data-plane call failed.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// No node could be reached.
    #[error("node at {url} unreachable: {source}")]
    Unreachable {
        /// The node.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The node answered with an error.
    #[error("node at {url} answered {status}: {body}")]
    Refused {
        /// The node.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Its error body.
        body: String,
    },
    /// The answer did not parse.
    #[error("node at {url} sent an unexpected answer: {source}")]
    Malformed {
        /// The node.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
}

/// A client of one cluster's nodes.
#[derive(Debug, Clone)]
pub struct DataPlane {
    http: reqwest::Client,
    token: String,
}

impl DataPlane {
    /// A client that authenticates with `token`.
    pub fn new(token: String) -> DataPlane {
        let http = dyno_tls::http_client_builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        DataPlane { http, token }
    }

    /// Sends `req` to `url` with the admin token; a non-2xx answer is
    /// [`DataPlaneError::Refused`].
    async fn send(
        &self,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DataPlaneError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| DataPlaneError::Unreachable {
                url: url.to_owned(),
                source,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(DataPlaneError::Refused {
            url: url.to_owned(),
            status: status.as_u16(),
            body: body.chars().take(500).collect(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, url: String) -> Result<T, DataPlaneError> {
        self.send(&url, self.http.get(&url))
            .await?
            .json()
            .await
            .map_err(|source| DataPlaneError::Malformed { url, source })
    }

    /// The cluster view of the node at `base`.
    pub async fn cluster(&self, base: &str) -> Result<ClusterView, DataPlaneError> {
        self.get(format!("{base}/admin/v1/cluster")).await
    }

    /// The hints the node at `base` holds, per target node.
    pub async fn hints(&self, base: &str) -> Result<Vec<HintBacklog>, DataPlaneError> {
        #[derive(serde::Deserialize)]
        struct Hints {
            targets: Vec<HintBacklog>,
        }
        let h: Hints = self.get(format!("{base}/admin/v1/hints")).await?;
        Ok(h.targets)
    }

    /// The node's `/metrics` text.
    pub async fn metrics(&self, base: &str) -> Result<String, DataPlaneError> {
        let url = format!("{base}/metrics");
        let resp = self.send(&url, self.http.get(&url)).await?;
        resp.text()
            .await
            .map_err(|source| DataPlaneError::Unreachable { url, source })
    }

    async fn post(&self, url: String, body: serde_json::Value) -> Result<(), DataPlaneError> {
        self.send(&url, self.http.post(&url).json(&body))
            .await
            .map(drop)
    }

    /// Asks the cluster (through the node at `base`) to join `node`.
    pub async fn join(
        &self,
        base: &str,
        node: &str,
        zone: Option<&str>,
    ) -> Result<(), DataPlaneError> {
        self.post(
            format!("{base}/admin/v1/cluster/join"),
            json!({ "node": node, "zone": zone }),
        )
        .await
    }

    /// Asks the cluster to decommission `node`.
    pub async fn decommission(&self, base: &str, node: &str) -> Result<(), DataPlaneError> {
        self.post(
            format!("{base}/admin/v1/cluster/decommission"),
            json!({ "node": node }),
        )
        .await
    }

    /// Places `zone` on `node`, the ring's only member.
    pub async fn set_zone(&self, base: &str, node: &str, zone: &str) -> Result<(), DataPlaneError> {
        self.post(
            format!("{base}/admin/v1/cluster/zone"),
            json!({ "node": node, "zone": zone }),
        )
        .await
    }

    /// Aborts the change under way.
    pub async fn abort(&self, base: &str) -> Result<(), DataPlaneError> {
        self.post(format!("{base}/admin/v1/cluster/abort"), json!({}))
            .await
    }
}
