//! The node's one service boundary. Every front-end (the HTTP/JSON API, the
//! public gRPC API, and later the DynamoDB protocol and the console through
//! the control plane) parses its input, calls one typed function here with a
//! [`RequestCtx`], and maps the result and the [`ServiceError`] in its own
//! single place. The rules live here once:
//!
//! * validation: key and value sizes, R/W ranges, contexts, conditions,
//!   table names and settings;
//! * defaults: a table's R/W when the request gives none;
//! * the request's deadline;
//! * metrics: per-operation latency with bounded labels (only tables the
//!   catalog knows get their own series);
//! * later, authentication and tenancy: `RequestCtx` already carries the
//!   tenant and principal, so they hook in here and nowhere else.
//!
//! Item operations are in `items.rs`, administration in `admin.rs`.

mod admin;
mod items;

use std::sync::Arc;
use std::time::Duration;

use dyno_core::NodeId;
use tokio::time::Instant;

use crate::aae::Repair;
use crate::change::ChangeLeader;
use crate::error::{ErrorCode, ServiceError};
use crate::handoff::Handoff;
use crate::node::Node;
use crate::worker::Workers;

pub use admin::{
    ClusterView, HandoffView, HealthView, HintBacklogView, LocalReplicaView, NodeView,
    PreferenceListView, RingView, TableSpec,
};
pub(crate) use items::put_request;
pub use items::{Condition, GetItem, ItemRead, ItemWritten, Op, WriteItem, parse_quorum};

pub use items::{MAX_KEY_BYTES, MAX_VALUE_BYTES, UNKNOWN_TABLE_LABEL};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials (the open API, until authentication arrives).
    Anonymous,
    /// Another node of the cluster, over the internal protocol.
    Peer(NodeId),
}

/// What every service call carries: who asks, for which tenant, and until
/// when the answer is useful.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// The tenant the request acts for (`None` until tenancy arrives).
    pub tenant: Option<String>,
    /// Who is asking.
    pub principal: Principal,
    /// After this the request fails with `DeadlineExceeded`.
    pub deadline: Instant,
}

impl RequestCtx {
    /// An anonymous request with `timeout` to run.
    pub fn anonymous(timeout: Duration) -> RequestCtx {
        RequestCtx {
            tenant: None,
            principal: Principal::Anonymous,
            deadline: Instant::now() + timeout,
        }
    }

    /// Fails with `DeadlineExceeded` once the deadline has passed.
    pub fn check_deadline(&self) -> Result<(), ServiceError> {
        if Instant::now() >= self.deadline {
            return Err(ServiceError::new(
                ErrorCode::DeadlineExceeded,
                "the request's deadline passed before it finished",
            ));
        }
        Ok(())
    }
}

/// The parts the service is built from.
#[derive(Debug)]
pub struct ServiceParts {
    /// The coordinator.
    pub node: Arc<Node>,
    /// Anti-entropy status and requests.
    pub repair: Arc<Repair>,
    /// Handoff status.
    pub handoff: Arc<Handoff>,
    /// Ring changes begun on this node.
    pub leader: Arc<ChangeLeader>,
    /// The background workers.
    pub workers: Arc<Workers>,
    /// The deadline given to requests that bring none.
    pub request_timeout: Duration,
}

/// The node's service API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<ServiceParts>,
}

impl Service {
    /// A service over its parts.
    pub fn new(parts: ServiceParts) -> Service {
        Service {
            inner: Arc::new(parts),
        }
    }

    /// The coordinator (for the internal RPC server).
    pub fn node(&self) -> &Arc<Node> {
        &self.inner.node
    }

    /// Ring changes begun on this node (for the internal RPC server).
    pub fn leader(&self) -> &Arc<ChangeLeader> {
        &self.inner.leader
    }

    /// A context for an anonymous request with the default deadline.
    pub fn anonymous_ctx(&self) -> RequestCtx {
        RequestCtx::anonymous(self.inner.request_timeout)
    }

    /// The Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        self.inner.node.metrics().render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_passed_deadline_fails_with_deadline_exceeded() {
        let live = RequestCtx::anonymous(Duration::from_secs(60));
        assert!(live.check_deadline().is_ok());
        let mut late = RequestCtx::anonymous(Duration::from_secs(60));
        late.deadline = Instant::now() - Duration::from_millis(1);
        let e = late.check_deadline().expect_err("past its deadline");
        assert_eq!(e.code, ErrorCode::DeadlineExceeded);
    }
}
