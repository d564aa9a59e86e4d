//! Administration: tables, placement, local replicas, hints, the cluster
//! view, ring changes, repair, health and workers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dyno_core::hash::key_position;
use dyno_core::{NodeId, NodeStatus, Object};
use serde::Serialize;

use super::items::context_string;
use super::{RequestCtx, Service};
use crate::aae::RepairStatus;
use crate::catalog::{
    Access, ConflictArg, DEFAULT_TENANT, Record, RecordVersion, TableConfig, TableEntry,
    validate_table_name,
};
use crate::change::{Action, Began};
use crate::cluster::Liveness;
use crate::error::{ErrorCode, ServiceError};
use crate::handoff::HandoffReport;
use crate::worker::WorkerInfo;

/// A table's settings as a client asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Replicas per key.
    pub n: u32,
    /// Default read quorum.
    pub r: u32,
    /// Default write quorum.
    pub w: u32,
    /// How concurrent writes are resolved (default: siblings).
    #[serde(default)]
    pub conflict: ConflictArg,
    /// Operations per second over the cluster (default: unlimited).
    #[serde(default)]
    pub throughput_limit: Option<u32>,
}

/// Where a key lives.
#[derive(Debug, Clone, Serialize)]
pub struct PreferenceListView {
    /// Its partition.
    pub partition: u32,
    /// Its ring position, as 16 hex digits.
    pub position: String,
    /// Primaries first, then fallbacks.
    pub nodes: Vec<PlacementView>,
}

/// One node of a preference list.
#[derive(Debug, Clone, Serialize)]
pub struct PlacementView {
    /// The node.
    pub id: String,
    /// `primary` or `fallback`.
    pub role: &'static str,
    /// Whether this node believes it up.
    pub up: bool,
}

/// What this node stores for a key as a replica (no hints, no quorum).
#[derive(Debug, Clone)]
pub struct LocalReplicaView {
    /// This node.
    pub node: String,
    /// The stored state, if any.
    pub object: Option<Object>,
    /// Its context.
    pub context: Option<String>,
}

/// The hints held for one node.
#[derive(Debug, Clone, Serialize)]
pub struct HintBacklogView {
    /// The node.
    pub node: String,
    /// Hints held.
    pub hints: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The ring, as the cluster view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RingView {
    /// The topology's epoch.
    pub epoch: u64,
    /// The current ring's version.
    pub version: u64,
    /// Partitions.
    pub partitions: usize,
    /// Members of the current ring.
    pub members: Vec<String>,
    /// Members of the next ring, during a change.
    pub next_members: Option<Vec<String>>,
}

/// A node's handoff figures, as gossiped.
#[derive(Debug, Clone, Serialize)]
pub struct HandoffView {
    /// The change's epoch.
    pub epoch: u64,
    /// Partitions received.
    pub partitions_done: u32,
    /// Partitions to receive.
    pub partitions_total: u32,
    /// Bytes received.
    pub bytes: u64,
    /// True when this node has all its partitions for the change under way.
    pub complete: bool,
}

/// One node in the cluster view.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Its name.
    pub id: String,
    /// True for the node answering.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// `up`, `down`, `joining`, `leaving`, `left` or `standby`.
    pub status: &'static str,
    /// The failure detector's verdict.
    pub liveness: Liveness,
    /// The suspicion level (1e9 for "never heard").
    pub phi: f64,
    /// Gossiped fields, absent for a node never heard from.
    pub generation: Option<u64>,
    /// Its heartbeat counter.
    pub heartbeat: Option<u64>,
    /// Its failure zone: as the ring has it for a member, else as it
    /// gossips it.
    pub zone: Option<String>,
    /// Its HTTP address.
    pub http: Option<String>,
    /// Its RPC address.
    pub rpc: Option<String>,
    /// The ring epoch it applied.
    pub ring_version: Option<u64>,
    /// Keys it stores.
    pub keys: Option<u64>,
    /// Bytes it stores.
    pub bytes: Option<u64>,
    /// Partitions it owns in the current ring.
    pub partitions: usize,
    /// Their numbers.
    pub partition_ids: Vec<u32>,
    /// Partitions it owns in the next ring, during a change.
    pub partitions_next: Option<usize>,
    /// Its handoff figures.
    pub handoff: Option<HandoffView>,
}

/// The change under way, summed over its nodes' gossiped reports.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeView {
    /// Partition replicas that change hands (the plan's minimum).
    pub partition_replicas_to_move: usize,
    /// Partitions whose owner changes.
    pub partitions_reassigned: usize,
    /// Partition replicas in the cluster.
    pub partition_replicas_total: usize,
    /// Partitions received so far.
    pub partitions_done: u64,
    /// Partitions the nodes reported to receive.
    pub partitions_reported: u64,
    /// Bytes received so far.
    pub bytes_received: u64,
}

/// `GET /admin/v1/cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The node answering.
    pub node: String,
    /// The ring.
    pub ring: RingView,
    /// The change under way.
    pub change: Option<ChangeView>,
    /// This node's part in it.
    pub handoff: HandoffReport,
    /// True while this node's sweep of moved items is due.
    pub drop_pending: bool,
    /// Every node this node knows of.
    pub nodes: Vec<NodeView>,
    /// The replication settings in use, over every tenant's tables: what
    /// an operator needs to size a disruption budget or refuse to shrink
    /// below N.
    pub replication: Vec<ReplicationView>,
}

/// Tables sharing one (N, R, W).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ReplicationView {
    /// Replicas.
    pub n: u32,
    /// Default read quorum.
    pub r: u32,
    /// Default write quorum.
    pub w: u32,
    /// Tables with these settings.
    pub tables: usize,
}

/// `GET /admin/v1/health`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    /// Always `ok` when the node answers.
    pub status: &'static str,
    /// The node.
    pub node: String,
    /// Its generation.
    pub generation: u64,
    /// The ring epoch it routes by.
    pub ring_epoch: u64,
}

impl Service {
    /// The table `name` of the request's tenant (admin requests only reach
    /// here; the scope check is the caller's).
    fn admin_table(&self, ctx: &RequestCtx, name: &str) -> Result<Arc<TableEntry>, ServiceError> {
        self.inner
            .node
            .catalog()
            .resolve(&ctx.tenant, name)
            .ok_or_else(|| ServiceError::table_not_found(name))
    }

    /// Creates a table in the request's tenant, or changes the R/W/conflict
    /// mode and throughput limit of an existing one (N cannot change).
    /// Tells the other nodes at once; the catalog sync covers any that miss
    /// it. Tables of the tenant `default` are stored under their own name
    /// (as before tenancy); other tenants' tables made here get a storage
    /// name of their own, `#` and the version.
    pub async fn create_table(
        &self,
        ctx: &RequestCtx,
        name: &str,
        spec: TableSpec,
    ) -> Result<TableEntry, ServiceError> {
        validate_table_name(name)?;
        ctx.principal.authorize(name, Access::Manage)?;
        let node = &self.inner.node;
        let config = TableConfig {
            n: spec.n,
            r: spec.r,
            w: spec.w,
            conflict: spec.conflict,
        };
        config.validate(node.cluster().topology().current.members().len())?;
        if spec.throughput_limit == Some(0) {
            return Err(ServiceError::new(
                ErrorCode::InvalidTableConfig,
                "throughput_limit must be at least 1 (leave it out for no limit)",
            ));
        }
        let existing = node.catalog().resolve(&ctx.tenant, name);
        if let Some(existing) = &existing
            && existing.config.n != config.n
        {
            return Err(ServiceError::new(
                ErrorCode::ImmutableSetting,
                format!(
                    "table {name} has n = {}; a table's replication factor cannot change (create a new table)",
                    existing.config.n
                ),
            ));
        }
        let version = node.replica().now().0;
        let storage = match &existing {
            Some(e) => e.name.clone(),
            None if ctx.tenant == DEFAULT_TENANT => name.to_owned(),
            None => format!("#{version}"),
        };
        let entry = TableEntry {
            name: storage,
            tenant: ctx.tenant.clone(),
            table: name.to_owned(),
            config,
            throughput_limit: spec.throughput_limit,
            deleted: false,
            dynamo: existing.as_ref().and_then(|e| e.dynamo.clone()),
            version,
        };
        self.merge_records(vec![Record::Table(entry.clone())])
            .await?;
        Ok(entry)
    }

    /// Merges catalog records (from the control plane's reconciler, or a
    /// table change made here) and tells the other nodes at once; the
    /// catalog sync covers any that miss it. Returns how many changed this
    /// node's catalog.
    pub async fn merge_records(&self, records: Vec<Record>) -> Result<usize, ServiceError> {
        for r in &records {
            if let Record::Table(t) = r
                && (!crate::wire::valid_storage_name(&t.name) || !t.layout_ok())
            {
                return Err(ServiceError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "table record {:?}: the storage name must be a table name or #<id>, and #p<id> exactly for tables with a DynamoDB schema",
                        t.name
                    ),
                ));
            }
        }
        let node = &self.inner.node;
        let catalog = Arc::clone(node.catalog());
        let changed = crate::sys::blocking(move || {
            records.into_iter().try_fold(0usize, |n, r| {
                catalog.merge_record(r).map(|c| n + usize::from(c))
            })
        })
        .await
        .map_err(ServiceError::internal)??;
        if changed > 0
            && let Err(e) = crate::catalog_sync::push_catalog_to_all(node).await
        {
            tracing::warn!(error = %e, "could not push the catalog to every node; the sync retries");
        }
        Ok(changed)
    }

    /// Every catalog record's id and version (for the control plane).
    pub fn catalog_versions(&self) -> Vec<RecordVersion> {
        self.inner.node.catalog().versions()
    }

    /// The request's tenant's tables.
    pub fn list_tables(&self, ctx: &RequestCtx) -> Vec<TableEntry> {
        self.inner.node.catalog().list_tenant(&ctx.tenant)
    }

    /// One table of the request's tenant.
    pub fn describe_table(&self, ctx: &RequestCtx, name: &str) -> Result<TableEntry, ServiceError> {
        let entry = self.admin_table(ctx, name)?;
        Ok(TableEntry::clone(&entry))
    }

    /// The preference list of a key.
    pub fn preference_list(
        &self,
        ctx: &RequestCtx,
        table: &str,
        key: &[u8],
    ) -> Result<PreferenceListView, ServiceError> {
        let node = &self.inner.node;
        super::items::check_key(key)?;
        let entry = self.admin_table(ctx, table)?;
        let pos = key_position(&entry.name, key);
        let topology = node.cluster().topology();
        let pl = topology
            .current
            .preference_list_for(pos, entry.config.n as usize);
        let primaries = pl.primaries().len();
        let nodes = pl
            .all()
            .iter()
            .enumerate()
            .map(|(i, m)| PlacementView {
                id: m.id.to_string(),
                role: if i < primaries { "primary" } else { "fallback" },
                up: node.is_up(&m.id),
            })
            .collect();
        Ok(PreferenceListView {
            partition: pl.partition.0,
            position: format!("{pos:016x}"),
            nodes,
        })
    }

    /// This node's stored replica of a key.
    pub async fn local_replica(
        &self,
        ctx: &RequestCtx,
        table: &str,
        key: &[u8],
    ) -> Result<LocalReplicaView, ServiceError> {
        let node = &self.inner.node;
        super::items::check_key(key)?;
        let entry = self.admin_table(ctx, table)?;
        let (replica, t, k) = (Arc::clone(node.replica()), entry.name.clone(), key.to_vec());
        let object = crate::sys::blocking(move || replica.get_item(&t, &k))
            .await
            .map_err(ServiceError::internal)??;
        Ok(LocalReplicaView {
            node: node.me().to_string(),
            context: context_string(object.as_ref()),
            object,
        })
    }

    /// The hints this node holds, per target.
    pub fn hints(&self) -> Vec<HintBacklogView> {
        self.inner
            .node
            .replica()
            .backlog()
            .into_iter()
            .map(|(t, b)| HintBacklogView {
                node: t.to_string(),
                hints: b.hints,
                bytes: b.bytes,
            })
            .collect()
    }

    /// The cluster as this node sees it.
    pub fn cluster_view(&self) -> Result<ClusterView, ServiceError> {
        let node = &self.inner.node;
        let cluster = node.cluster();
        node.refresh_load();
        let topology = cluster.topology();
        let view = cluster.view();
        let mut ids: BTreeSet<NodeId> = view.nodes().keys().cloned().collect();
        ids.extend(topology.nodes());
        let nodes = ids
            .iter()
            .map(|id| {
                let state = view.get(id);
                let owned_now: Vec<u32> = topology
                    .current
                    .partitions_owned_by(id)
                    .iter()
                    .map(|p| p.0)
                    .collect();
                let (liveness, phi) = cluster.liveness(id);
                let in_current = topology.current.member(id).is_some();
                let in_next = topology.next.as_ref().map(|n| n.member(id).is_some());
                let status = match state.map(|s| s.status) {
                    Some(NodeStatus::Left) => "left",
                    _ if liveness == Liveness::Suspect => "down",
                    _ if !in_current && in_next == Some(true) => "joining",
                    _ if in_current && in_next == Some(false) => "leaving",
                    _ if in_current => "up",
                    _ => "standby",
                };
                NodeView {
                    id: id.to_string(),
                    is_self: id == node.me(),
                    status,
                    liveness,
                    phi: if phi.is_finite() {
                        (phi * 100.0).round() / 100.0
                    } else {
                        1e9
                    },
                    generation: state.map(|s| s.generation),
                    heartbeat: state.map(|s| s.heartbeat),
                    zone: topology
                        .current
                        .member(id)
                        .or_else(|| topology.next.as_ref().and_then(|n| n.member(id)))
                        .map(|m| m.zone.clone())
                        .unwrap_or_else(|| state.and_then(|s| s.zone.clone())),
                    http: state.map(|s| s.addresses.http.clone()),
                    rpc: state.map(|s| s.addresses.rpc.clone()),
                    ring_version: state.map(|s| s.ring_version),
                    keys: state.map(|s| s.load.keys),
                    bytes: state.map(|s| s.load.bytes),
                    partitions: owned_now.len(),
                    partition_ids: owned_now,
                    partitions_next: topology
                        .next
                        .as_ref()
                        .map(|n| n.partitions_owned_by(id).len()),
                    handoff: state.map(|s| HandoffView {
                        epoch: s.handoff.epoch,
                        partitions_done: s.handoff.done,
                        partitions_total: s.handoff.total,
                        bytes: s.handoff.bytes,
                        complete: topology.next.is_some() && s.handoff.complete_for(topology.epoch),
                    }),
                }
            })
            .collect();
        let change = node.catalog().planned_movement(&topology).map(|m| {
            let (mut done, mut total, mut bytes) = (0u64, 0u64, 0u64);
            for s in topology.nodes().iter().filter_map(|id| view.get(id)) {
                if s.handoff.epoch == topology.epoch {
                    done += u64::from(s.handoff.done);
                    total += u64::from(s.handoff.total);
                    bytes += s.handoff.bytes;
                }
            }
            ChangeView {
                partition_replicas_to_move: m.moved,
                partitions_reassigned: m.partitions_reassigned,
                partition_replicas_total: m.total,
                partitions_done: done,
                partitions_reported: total,
                bytes_received: bytes,
            }
        });
        let names = |r: &dyno_core::Ring| r.members().iter().map(|m| m.id.to_string()).collect();
        Ok(ClusterView {
            node: node.me().to_string(),
            ring: RingView {
                epoch: topology.epoch,
                version: topology.current.version(),
                partitions: topology.current.partition_count(),
                members: names(&topology.current),
                next_members: topology.next.as_ref().map(names),
            },
            change,
            handoff: self.inner.handoff.report(),
            drop_pending: crate::meta::sweep_due(node.replica().store())?,
            nodes,
            replication: replication(&node.catalog().list()),
        })
    }

    /// Begins a join, a decommission or an abort (on the change leader).
    pub async fn change_ring(
        &self,
        _ctx: &RequestCtx,
        action: Action,
        target: Option<&str>,
        zone: Option<String>,
    ) -> Result<Began, ServiceError> {
        let node = &self.inner.node;
        let id = match target {
            Some(t) => NodeId::new(t)
                .map_err(|e| ServiceError::new(ErrorCode::InvalidNode, e.to_string()))?,
            None => node.me().clone(),
        };
        crate::change::request(node, &self.inner.leader, action, id, zone).await
    }

    /// Anti-entropy status.
    pub fn repair_status(&self) -> RepairStatus {
        self.inner.repair.status()
    }

    /// Asks for an anti-entropy pass; returns the id of the pass that will
    /// serve it.
    pub fn request_repair(&self) -> u64 {
        self.inner.repair.request()
    }

    /// Liveness and identity.
    pub fn health(&self) -> HealthView {
        let node = &self.inner.node;
        HealthView {
            status: "ok",
            node: node.me().to_string(),
            generation: node.cluster().local().generation,
            ring_epoch: node.cluster().topology().epoch,
        }
    }

    /// The background workers' status.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.inner.workers.status()
    }

    /// Damaged records found on this node, and what the scrub has done.
    pub fn storage(&self) -> StorageView {
        StorageView {
            damaged: self.inner.node.replica().damaged(),
            scrub: self.inner.scrubbed.report(),
        }
    }

    /// Whether this node serves TLS, from which files, and what its
    /// certificate reloads and handshakes have done.
    pub fn tls(&self) -> TlsView {
        match &self.inner.tls {
            None => TlsView::default(),
            Some(tls) => {
                let status = tls.status();
                let files = tls.files();
                TlsView {
                    enabled: true,
                    cert: Some(files.cert.display().to_string()),
                    key: Some(files.key.display().to_string()),
                    ca: Some(files.ca.display().to_string()),
                    generation: tls.generation(),
                    reloads: status.reloads,
                    reload_failures: status.reload_failures,
                    last_error: status.last_error,
                    handshake_failures: status.handshake_failures,
                }
            }
        }
    }

    fn faults(&self) -> Result<&Arc<crate::faults::Faults>, ServiceError> {
        self.inner.faults.as_ref().ok_or_else(|| {
            ServiceError::new(
                ErrorCode::Forbidden,
                "fault injection is off; start the node with --fault-injection (tests only)",
            )
        })
    }

    /// Replaces the link faults (fault injection only): calls from this
    /// node to each named peer are dropped or delayed as given; peers not
    /// named are reached normally.
    pub fn set_link_faults(
        &self,
        links: BTreeMap<String, crate::faults::LinkFault>,
    ) -> Result<(), ServiceError> {
        let faults = self.faults()?;
        let cluster = self.inner.node.cluster();
        let mut by_url = BTreeMap::new();
        for (id, fault) in links {
            let node = NodeId::new(&id)
                .map_err(|e| ServiceError::new(ErrorCode::InvalidNode, e.to_string()))?;
            let peer = cluster.peer(&node).ok_or_else(|| {
                ServiceError::new(
                    ErrorCode::UnknownNode,
                    format!("{node} is not a peer this node knows an address for"),
                )
            })?;
            by_url.insert(peer.addresses.rpc.clone(), fault);
        }
        tracing::warn!(links = ?by_url, "fault injection: link faults set");
        faults.set_links(by_url);
        Ok(())
    }

    /// Replaces the disk fault (fault injection only).
    pub fn set_disk_fault(&self, disk: crate::faults::DiskFault) -> Result<(), ServiceError> {
        let faults = self.faults()?;
        tracing::warn!(?disk, "fault injection: disk fault set");
        faults.set_disk(disk);
        Ok(())
    }

    /// Flips one bit of this node's stored record of an item (fault
    /// injection only). False when this node holds no such item.
    pub async fn damage_item(
        &self,
        ctx: &RequestCtx,
        table: &str,
        key: &[u8],
        bit: usize,
    ) -> Result<bool, ServiceError> {
        self.faults()?;
        super::items::check_key(key)?;
        let entry = self.admin_table(ctx, table)?;
        let replica = Arc::clone(self.inner.node.replica());
        let (t, k) = (entry.name.clone(), key.to_vec());
        let damaged = crate::sys::blocking(move || replica.damage_item(&t, &k, bit))
            .await
            .map_err(ServiceError::internal)??;
        tracing::warn!(table, damaged, "fault injection: stored item damaged");
        Ok(damaged)
    }
}

/// `GET /admin/v1/storage`.
#[derive(Debug, Clone, Serialize)]
pub struct StorageView {
    /// Damaged records found and set aside since start-up.
    pub damaged: crate::replica::Damaged,
    /// The scrub's progress.
    pub scrub: crate::scrub::ScrubReport,
}

/// `GET /admin/v1/tls`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TlsView {
    /// Whether the node serves TLS (mutual TLS between nodes).
    pub enabled: bool,
    /// The certificate file.
    pub cert: Option<String>,
    /// The private key file.
    pub key: Option<String>,
    /// The CA file peers' certificates must chain to.
    pub ca: Option<String>,
    /// Bumped at every reload taken into use.
    pub generation: u64,
    /// Reloads taken into use since start-up.
    pub reloads: u64,
    /// Changed files that could not be used (the previous certificate
    /// stayed).
    pub reload_failures: u64,
    /// Why the last of those failed.
    pub last_error: Option<String>,
    /// Handshakes refused (a peer without a certificate of the CA, a
    /// client speaking plain HTTP) or timed out.
    pub handshake_failures: u64,
}

/// The distinct (N, R, W) among `tables`, with their table counts.
fn replication(tables: &[TableEntry]) -> Vec<ReplicationView> {
    let mut counts: std::collections::BTreeMap<(u32, u32, u32), usize> = Default::default();
    for t in tables {
        let c = &t.config;
        *counts.entry((c.n, c.r, c.w)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((n, r, w), tables)| ReplicationView { n, r, w, tables })
        .collect()
}
