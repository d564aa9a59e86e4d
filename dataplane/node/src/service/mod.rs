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
//! * authentication (`authenticate`, `authenticate_admin`), tenancy (every
//!   table is looked up in the request's tenant), scopes, and throughput
//!   limits.
//!
//! Item operations are in `items.rs`, administration in `admin.rs`.

mod admin;
mod ddb;
mod items;
mod scan;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::aae::Repair;
use crate::auth::Credentials;
pub use crate::auth::Principal;
use crate::catalog::validate_tenant_name;
use crate::change::ChangeLeader;
use crate::error::{ErrorCode, ServiceError};
use crate::handoff::Handoff;
use crate::node::Node;
use crate::worker::Workers;

pub use admin::{
    ClusterView, HandoffView, HealthView, HintBacklogView, LocalReplicaView, NodeView,
    PreferenceListView, RingView, StorageView, TableSpec, TlsView,
};
pub use ddb::{
    DdbFailure, DdbOutcome, DdbRmw, ItemPage, MAX_PAGE_BYTES, PageSpec, QueryRange, SortCond,
};
pub(crate) use items::put_request;
pub use items::{Condition, GetItem, ItemRead, ItemWritten, Op, WriteItem, parse_quorum};

pub use items::{MAX_KEY_BYTES, MAX_VALUE_BYTES, UNKNOWN_TABLE_LABEL};
pub use scan::{ItemScan, MAX_SCAN_LIMIT, MAX_SCAN_PAGE_BYTES, ScanItems, ScannedItem};

/// What every service call carries: who asks, for which tenant, and until
/// when the answer is useful.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// The tenant the request acts in: the key's tenant, or for the admin,
    /// `default` or the tenant an admin path names.
    pub tenant: String,
    /// Who is asking.
    pub principal: Principal,
    /// After this the request fails with `DeadlineExceeded`.
    pub deadline: Instant,
}

impl RequestCtx {
    /// A request from `principal`, in its own tenant, with `timeout` to run.
    pub fn new(principal: Principal, timeout: Duration) -> RequestCtx {
        RequestCtx {
            tenant: principal.tenant().to_owned(),
            principal,
            deadline: Instant::now() + timeout,
        }
    }

    /// An anonymous request (a node without authentication).
    pub fn anonymous(timeout: Duration) -> RequestCtx {
        RequestCtx::new(Principal::Anonymous, timeout)
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
    /// The credentials accepted.
    pub credentials: Credentials,
    /// Whether `/metrics` needs the admin credential.
    pub metrics_require_token: bool,
    /// The control plane, for the DynamoDB API's table changes.
    pub controlplane_url: Option<String>,
    /// The client for calls to the control plane (HTTPS with this node's
    /// certificate when TLS is on).
    pub controlplane_client: dyno_tls::ReloadingClient,
    /// This node's TLS material, when TLS is on (for its status).
    pub tls: Option<Arc<dyno_tls::Tls>>,
    /// What the scrub has done.
    pub scrubbed: Arc<crate::scrub::Scrubbed>,
    /// The fault-injection switches, when `--fault-injection` is on.
    pub faults: Option<Arc<crate::faults::Faults>>,
}

/// The node's service API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    parts: ServiceParts,
    throttle: crate::throttle::Throttle,
    /// When each API key was last used here (seconds since the epoch,
    /// refreshed at most once a minute per key), for the control plane.
    key_usage: std::sync::RwLock<std::collections::HashMap<String, u64>>,
}

impl std::ops::Deref for Inner {
    type Target = ServiceParts;
    fn deref(&self) -> &ServiceParts {
        &self.parts
    }
}

impl Service {
    /// A service over its parts.
    pub fn new(parts: ServiceParts) -> Service {
        Service {
            inner: Arc::new(Inner {
                parts,
                throttle: crate::throttle::Throttle::new(),
                key_usage: Default::default(),
            }),
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

    /// The context of a client request with this `Authorization` header
    /// value: `Unauthorized` unless it carries a valid key (or the admin
    /// credential).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<RequestCtx, ServiceError> {
        let principal = self
            .inner
            .credentials
            .authenticate(self.inner.node.catalog(), authorization)?;
        if let Principal::Key(k) = &principal {
            self.note_key_use(&k.id);
        }
        Ok(RequestCtx::new(principal, self.inner.request_timeout))
    }

    /// Notes a key's use, at most once a minute per key: requests take the
    /// shared read lock, and only the first one in a minute the write lock.
    fn note_key_use(&self, id: &str) {
        let now = crate::sys::wall_ms() / 1000;
        let fresh = |usage: &std::collections::HashMap<String, u64>| {
            usage.get(id).is_some_and(|at| *at + 60 > now)
        };
        if fresh(
            &self
                .inner
                .key_usage
                .read()
                .unwrap_or_else(|e| e.into_inner()),
        ) {
            return;
        }
        let mut usage = self
            .inner
            .key_usage
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if !fresh(&usage) {
            usage.insert(id.to_owned(), now);
        }
    }

    /// When each API key was last used on this node (seconds since the
    /// epoch, to the minute).
    pub fn key_usage(&self) -> std::collections::HashMap<String, u64> {
        self.inner
            .key_usage
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks the admin credential: `Unauthorized` without it. Front-ends
    /// call this once per admin request, before [`Service::admin_ctx`].
    pub fn authenticate_admin(&self, authorization: Option<&str>) -> Result<(), ServiceError> {
        self.inner.credentials.authenticate_admin(authorization)
    }

    /// The context of an admin request that passed
    /// [`Service::authenticate_admin`], in `tenant` (default: `default`).
    pub fn admin_ctx(&self, tenant: Option<&str>) -> Result<RequestCtx, ServiceError> {
        let principal = if self.inner.credentials.required() {
            Principal::Admin
        } else {
            Principal::Anonymous
        };
        let mut ctx = RequestCtx::new(principal, self.inner.request_timeout);
        if let Some(t) = tenant {
            validate_tenant_name(t)?;
            ctx.tenant = t.to_owned();
        }
        Ok(ctx)
    }

    /// Moves an admin request into `tenant` (the `X-Dyno-Tenant` header of
    /// the items API: the control plane's console browses a tenant's items
    /// with the admin credential). An API key always acts in its own tenant:
    /// naming another is `Forbidden`.
    pub fn act_in_tenant(&self, ctx: &mut RequestCtx, tenant: &str) -> Result<(), ServiceError> {
        match &ctx.principal {
            Principal::Admin | Principal::Anonymous => {
                validate_tenant_name(tenant)?;
                ctx.tenant = tenant.to_owned();
                Ok(())
            }
            Principal::Key(k) if k.tenant == tenant => Ok(()),
            _ => Err(ServiceError::forbidden(
                "act in another tenant (a key acts in its own tenant only)",
            )),
        }
    }

    /// The control plane's URL and a client for it, if one is configured.
    pub fn controlplane(&self) -> Option<(&str, reqwest::Client)> {
        self.inner
            .controlplane_url
            .as_deref()
            .map(|u| (u, self.inner.controlplane_client.get()))
    }

    /// How many nodes the ring has.
    pub fn ring_members(&self) -> usize {
        self.inner.node.cluster().topology().current.members().len()
    }

    /// Whether `/metrics` needs the admin credential.
    pub fn metrics_require_token(&self) -> bool {
        self.inner.metrics_require_token
    }

    /// The Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        self.inner.node.refresh_table_metrics();
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
