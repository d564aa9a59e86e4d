//! The node: runs the core's coordination machines over tokio and tonic.
//!
//! A PUT arrives at any node. If this node is not a primary for the key it
//! forwards the write to the first primary it believes up
//! (`choose_coordinator`). The coordinator applies the write locally (under
//! the key's lock, so each write gets a unique dot), sends the new state to
//! the other targets of the `WriteCoordinator`, replaces unreachable ones as
//! the machine says, and answers after W acks. A GET asks R replicas (this
//! node's own first), brings in a spare for each that fails or is slower
//! than its usual round trip, answers after R replies, and repairs stale
//! replicas among those that answered in the background.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dyno_core::codec::{decode_object, encode_object};
use dyno_core::context::{MAX_CONTEXT_ENTRIES, encode_context};
use dyno_core::coordinator::{
    Condition, Coordinator, ReadCoordinator, ReplicaFailure, WriteCoordinator, WriteEffect,
    check_condition, choose_coordinator, read_candidates,
};
use dyno_core::hash::key_position;
use dyno_core::rtt::RttEstimate;
use dyno_core::{ConflictMode, NodeId, Object, QuorumOutcome, VersionVector};
use dyno_proto::internal as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::catalog::{Catalog, TableConfig};
use crate::cluster::Cluster;
use crate::durable::GroupCommit;
use crate::error::{ErrorCode, ServiceError};
use crate::metrics::{Metrics, RpcLabels};
use crate::replica::{Reads, Replica, ReplicaError};
use crate::wire::{self, classify, mode_to_pb};

fn deadline_exceeded() -> ServiceError {
    ServiceError::new(
        ErrorCode::DeadlineExceeded,
        "the request's deadline passed before enough replicas answered",
    )
}

fn quorum_not_met(replies: usize, r: usize) -> ServiceError {
    ServiceError::new(
        ErrorCode::QuorumNotMet,
        format!("{replies} of the {r} replies needed arrived"),
    )
}

/// The coordinator: this node's view of the cluster, its replica data and
/// its catalog, and the coordination of reads and writes over them. Fields
/// are private; workers and the service reach the parts through accessors.
#[derive(Debug)]
pub struct Node {
    me: NodeId,
    cluster: Cluster,
    replica: Arc<Replica>,
    catalog: Arc<Catalog>,
    metrics: Metrics,
    timeout: Duration,
    /// With `--durability sync`: writes are acknowledged once an fsync
    /// shared with concurrent writers covered them.
    group: Option<Arc<GroupCommit>>,
    key_locks: crate::rmw::KeyLocks,
    rmw: std::sync::OnceLock<Arc<dyn crate::rmw::RmwHandler>>,
    /// Smoothed round trips of replica calls, per peer: when a read asks
    /// a spare.
    rtt: std::sync::Mutex<std::collections::HashMap<NodeId, RttEstimate>>,
}

/// What a [`Node`] is built from.
#[derive(Debug)]
pub struct NodeParts {
    /// This node's name.
    pub me: NodeId,
    /// Membership, liveness and topology.
    pub cluster: Cluster,
    /// Local data.
    pub replica: Arc<Replica>,
    /// The tables.
    pub catalog: Arc<Catalog>,
    /// The counters of its replica links.
    pub link_stats: crate::link::Stats,
    /// Per-replica timeout.
    pub timeout: Duration,
    /// Acknowledge writes only once they are on disk (`--durability
    /// sync`), through a group commit.
    pub sync_writes: bool,
    /// The group commit's pace: back-to-back fsyncs start at least this
    /// far apart (`--group-commit-interval-us`).
    pub group_commit_interval: Duration,
    /// Injected faults (`--fault-injection`); the group commit's fsyncs
    /// obey the disk fault.
    pub faults: Option<Arc<crate::faults::Faults>>,
}

/// The shortest wait before a read asks a spare. Spares are for replicas
/// that have stopped answering as usual (a pause, a hung disk), not for the
/// ordinary spread of round trips: on a busy machine those vary by several
/// milliseconds, and with a 1 ms floor about 8% of reads asked a spare
/// (measured on 3 local nodes under load), extra work when the cluster is
/// busiest. At 5 ms about half as many did.
const MIN_SLOW_AFTER: Duration = Duration::from_millis(5);

/// How many times a write may be forwarded between nodes.
pub(crate) const MAX_FORWARD_HOPS: u32 = 3;

/// A write as a client asked for it.
#[derive(Debug, Clone)]
pub struct PutRequest {
    /// The table.
    pub table: String,
    /// The key.
    pub key: Vec<u8>,
    /// The value, or `None` to delete.
    pub value: Option<Bytes>,
    /// The client's context.
    pub context: VersionVector,
    /// Write quorum for this request.
    pub w: usize,
    /// An optional precondition.
    pub condition: Option<Condition>,
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct PutResult {
    /// The context of the new version.
    pub context: String,
}

impl Node {
    /// Assembles a node from its parts.
    pub fn new(p: NodeParts) -> Node {
        let metrics = Metrics::with_link(p.link_stats);
        let group = p.sync_writes.then(|| {
            let r = Arc::clone(&p.replica);
            let faults = p.faults.clone();
            GroupCommit::new(
                move || {
                    if let Some(f) = &faults {
                        f.delay_fsync();
                    }
                    r.sync().map_err(|e| e.to_string())
                },
                p.group_commit_interval,
                metrics.wal().clone(),
            )
        });
        Node {
            me: p.me,
            cluster: p.cluster,
            replica: p.replica,
            catalog: p.catalog,
            metrics,
            timeout: p.timeout,
            group,
            key_locks: crate::rmw::KeyLocks::default(),
            rmw: std::sync::OnceLock::new(),
            rtt: std::sync::Mutex::default(),
        }
    }

    /// Installs the handler of read-modify-writes (once, at start-up; a
    /// second call is ignored).
    pub fn set_rmw_handler(&self, handler: Arc<dyn crate::rmw::RmwHandler>) {
        self.rmw.set(handler).ok();
    }

    /// The read-modify-write handler, if one is installed.
    pub(crate) fn rmw_handler(&self) -> Option<&Arc<dyn crate::rmw::RmwHandler>> {
        self.rmw.get()
    }

    /// The coordinator's per-key locks of read-modify-writes.
    pub(crate) fn key_locks(&self) -> &crate::rmw::KeyLocks {
        &self.key_locks
    }

    /// This node's name.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// Membership, liveness and topology.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Local data.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// The tables.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The per-replica timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Node {
    /// Returns once this node's writes so far are durable as the node's
    /// durability setting asks: at once with periodic fsyncs; after a
    /// shared fsync with `--durability sync`.
    ///
    /// Point storage operations on the request path (a key's read, or its
    /// read-modify-write) run inline on the async threads when all they
    /// read is in memory ([`Node::local`]; on the blocking pool when a read
    /// needs the disk): they take a few
    /// microseconds (memtable, block cache, an unsynced write-ahead-log
    /// append), less than handing them to tokio's blocking pool and back,
    /// which measured as the largest cost of a request on 2 cores (futex
    /// wake-ups and context switches). A write then awaits this instead of
    /// holding a thread through its fsync. Scans (anti-entropy, handoff)
    /// run on the blocking pool.
    pub async fn durable(&self) -> Result<(), ServiceError> {
        match &self.group {
            Some(g) => g.wait().await,
            None => Ok(()),
        }
    }

    /// Runs a request's local storage operation on this async thread when
    /// all it reads is in memory, and on the blocking pool when it needs the
    /// disk: a disk read here would stall every request queued on this
    /// thread (a node has one per core). `op` runs first with
    /// [`Reads::Memory`], and stops before writing anything when a read
    /// misses; only then is `owned` called, for the `'static` form of the
    /// same operation that the blocking pool runs with [`Reads::Anywhere`].
    pub(crate) async fn local<T, G>(
        &self,
        op: impl FnOnce(Reads) -> Result<T, ReplicaError>,
        owned: impl FnOnce() -> G,
    ) -> Result<T, ReplicaError>
    where
        T: Send + 'static,
        G: FnOnce(Reads) -> Result<T, ReplicaError> + Send + 'static,
    {
        match op(Reads::Memory) {
            Err(e) if e.must_block() => {
                if e.needs_disk() {
                    self.metrics.disk_reads.inc();
                } else {
                    self.metrics.stripe_waits.inc();
                }
                let retry = owned();
                crate::sys::blocking(move || retry(Reads::Anywhere))
                    .await
                    .unwrap_or_else(|e| {
                        Err(ReplicaError::Store(dyno_storage::StoreError::Engine {
                            message: format!("storage task failed: {e}"),
                        }))
                    })
            }
            done => done,
        }
    }

    /// Runs a storage operation on the blocking pool and logs its failure:
    /// for work whose caller has already answered (read repair, pending
    /// replicas, local hints), where the error has nobody else to go to.
    pub async fn background_io<E>(
        &self,
        what: &'static str,
        f: impl FnOnce() -> Result<(), E> + Send + 'static,
    ) -> bool
    where
        E: std::fmt::Display + Send + 'static,
    {
        match crate::sys::blocking(f).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, what, "background storage write failed");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, what, "background storage task failed");
                false
            }
        }
    }
}

/// How one copy of a write went.
enum Reply {
    Ack(NodeId),
    Fail(NodeId, ReplicaFailure),
    /// The coordinator's own copy was written but its fsync failed.
    NotDurable(NodeId, ServiceError),
}

impl Reply {
    /// Feeds the reply to the machine; returns the effects it asks for.
    fn feed(self, machine: &mut WriteCoordinator) -> Vec<WriteEffect> {
        match self {
            Reply::Ack(from) => {
                machine.on_ack(&from);
                Vec::new()
            }
            Reply::Fail(from, why) => machine.on_failure(&from, why),
            Reply::NotDurable(from, e) => {
                tracing::error!(error = %e, "write not made durable on this node");
                machine.on_failure(&from, ReplicaFailure::Failed)
            }
        }
    }
}

impl Node {
    /// A table's settings, or `TableNotFound`.
    pub fn table(&self, name: &str) -> Result<TableConfig, ServiceError> {
        self.catalog
            .get(name)
            .ok_or_else(|| ServiceError::table_not_found(name))
    }

    /// The topology, unless this node has not joined a cluster yet.
    pub fn serving_topology(&self) -> Result<Arc<dyno_core::topology::Topology>, ServiceError> {
        let t = self.cluster.topology();
        if t.epoch == 0 {
            return Err(ServiceError::not_in_cluster());
        }
        Ok(t)
    }

    /// True when `id` is this node or a peer believed up.
    pub fn is_up(&self, id: &NodeId) -> bool {
        self.cluster.is_up(id)
    }

    /// Refreshes the load figures gossiped for this node.
    pub fn refresh_load(&self) {
        let (keys, bytes) = self.replica.trees.load();
        self.cluster.update_local(|l| {
            l.load = dyno_core::membership::Load { keys, bytes };
        });
    }

    /// Sets the per-table figures in the metrics: live items and bytes of
    /// each live table held on this node.
    pub fn refresh_table_metrics(&self) {
        let loads = self.replica.trees.table_loads();
        let rows = self.catalog.list().into_iter().map(|e| {
            let load = loads.get(&e.name).copied().unwrap_or_default();
            let labels = crate::metrics::TableLabels {
                tenant: e.tenant.clone(),
                table: e.display_name().to_owned(),
            };
            (labels, load.items, load.bytes)
        });
        self.metrics.set_table_loads(rows);
        let damaged = self.replica.damaged();
        self.metrics.set_damaged(damaged.items, damaged.hints);
        if let Some(stats) = self.replica.store().cache_stats() {
            self.metrics.set_item_cache(stats);
        }
    }

    fn note_failure(&self, peer: &NodeId, why: ReplicaFailure) {
        self.cluster.note_rpc(peer, Err(why));
        let kind = match why {
            ReplicaFailure::Unreachable => "unreachable",
            ReplicaFailure::Timeout => "timeout",
            ReplicaFailure::Failed => "failed",
        };
        self.metrics
            .rpc_errors
            .get_or_create(&RpcLabels {
                peer: peer.to_string(),
                kind,
            })
            .inc();
    }

    fn note_success(&self, peer: &NodeId) {
        self.cluster.note_rpc(peer, Ok(()));
    }

    /// Sends a state to a replica (or a hint to a stand-in).
    pub async fn send_replica_put(
        self: &Arc<Self>,
        to: &NodeId,
        table: &str,
        key: &[u8],
        object: &Object,
        mode: ConflictMode,
        hint_for: Option<&NodeId>,
    ) -> Result<(), ReplicaFailure> {
        self.send_encoded(
            to,
            table,
            key,
            Bytes::from(encode_object(object)),
            mode,
            hint_for,
        )
        .await
    }

    /// Sends an already encoded state to a replica (or a hint to a
    /// stand-in): a write's fan-out encodes once and shares the bytes.
    pub async fn send_encoded(
        &self,
        to: &NodeId,
        table: &str,
        key: &[u8],
        object: Bytes,
        mode: ConflictMode,
        hint_for: Option<&NodeId>,
    ) -> Result<(), ReplicaFailure> {
        let Some(peer) = self.cluster.peer(to) else {
            return Err(ReplicaFailure::Unreachable);
        };
        let req = pb::ReplicaPutRequest {
            table: table.to_owned(),
            key: key.to_vec(),
            object,
            hint_for: hint_for.map(ToString::to_string),
            conflict: mode_to_pb(mode),
        };
        let started = Instant::now();
        let res = tokio::time::timeout(self.timeout, peer.client().replica_put(req)).await;
        if hint_for.is_none() && matches!(res, Ok(Ok(_))) {
            self.observe_rtt(to, "write", started);
        }
        self.settle(
            to,
            res.map_err(|_| ReplicaFailure::Timeout)
                .and_then(|r| r.map(|_| ()).map_err(|s| classify(&s))),
        )
    }

    /// Records the round trip of a replica write or read to `peer`.
    fn observe_rtt(&self, peer: &NodeId, op: &'static str, started: Instant) {
        let took = started.elapsed();
        let mut rtt = crate::sys::lock(&self.rtt);
        // Every replica call passes here: no copy of the peer's name
        // unless it is the first call to it.
        match rtt.get_mut(peer) {
            Some(estimate) => estimate.observe(took),
            None => rtt.entry(peer.clone()).or_default().observe(took),
        }
        drop(rtt);
        self.metrics
            .replica_rtt
            .get_or_create(&crate::metrics::RttLabels {
                peer: peer.to_string(),
                op,
            })
            .observe(took.as_secs_f64());
    }

    /// Records an RPC outcome against a peer.
    pub fn settle<T>(
        &self,
        peer: &NodeId,
        res: Result<T, ReplicaFailure>,
    ) -> Result<T, ReplicaFailure> {
        match &res {
            Ok(_) => self.note_success(peer),
            Err(why) => self.note_failure(peer, *why),
        }
        res
    }

    /// Asks a remote replica for a key's state; the answer arrives on `tx`.
    fn ask_replica(
        self: &Arc<Self>,
        to: NodeId,
        table: &str,
        key: &[u8],
        mode: ConflictMode,
        tx: &mpsc::Sender<(NodeId, Result<Option<Object>, ReplicaFailure>)>,
    ) {
        let (node, tx, table, key) = (Arc::clone(self), tx.clone(), table.to_owned(), key.to_vec());
        tokio::spawn(async move {
            let res = node.replica_get(&to, &table, &key, mode).await;
            // The reader may have its quorum and be gone: a late reply is
            // moot.
            tx.send((to, res)).await.ok();
        });
    }

    /// How long a read waits for the replicas it asked before it asks
    /// `spare`: as long as the slowest of them usually takes (smoothed
    /// round trip plus four deviations), or as long as the spare usually
    /// takes, whichever is shorter. The spare's figure matters when an
    /// asked replica has turned slow: its own estimate has grown with its
    /// slow answers, while a spare that answers as usual still says what a
    /// reply should cost. At least [`MIN_SLOW_AFTER`], at most half the
    /// replica timeout; a tenth of the timeout for a peer never measured.
    pub(crate) fn slow_after(&self, asked: &[NodeId], spare: Option<&NodeId>) -> Duration {
        let rtt = crate::sys::lock(&self.rtt);
        let usual = |p: &NodeId| {
            rtt.get(p)
                .and_then(|e| e.slow_after())
                .unwrap_or(self.timeout / 10)
        };
        let mut wait = asked.iter().map(usual).max().unwrap_or(Duration::ZERO);
        if let Some(s) = spare {
            wait = wait.min(usual(s));
        }
        wait.clamp(MIN_SLOW_AFTER, self.timeout / 2)
    }

    async fn replica_get(
        self: &Arc<Self>,
        from: &NodeId,
        table: &str,
        key: &[u8],
        mode: ConflictMode,
    ) -> Result<Option<Object>, ReplicaFailure> {
        if from == &self.me {
            let r = &self.replica;
            return self
                .local(
                    |reads| r.get_with_hints(table, key, mode, reads),
                    || {
                        let (r, t, k) = (Arc::clone(r), table.to_owned(), key.to_vec());
                        move |reads| r.get_with_hints(&t, &k, mode, reads)
                    },
                )
                .await
                .map_err(|_| ReplicaFailure::Failed);
        }
        let Some(peer) = self.cluster.peer(from) else {
            return Err(ReplicaFailure::Unreachable);
        };
        let req = pb::ReplicaGetRequest {
            table: table.to_owned(),
            key: key.to_vec(),
            conflict: mode_to_pb(mode),
        };
        let started = Instant::now();
        let res = tokio::time::timeout(self.timeout, peer.client().replica_get(req)).await;
        if matches!(res, Ok(Ok(_))) {
            self.observe_rtt(from, "read", started);
        }
        let res = res
            .map_err(|_| ReplicaFailure::Timeout)
            .and_then(|r| r.map_err(|s| classify(&s)));
        let resp = self.settle(from, res)?;
        match resp.object {
            None => Ok(None),
            Some(bytes) => decode_object(&bytes)
                .map(Some)
                .map_err(|_| ReplicaFailure::Failed),
        }
    }

    /// Reads a key at quorum `r`: asks `r` replicas (this node's first),
    /// a spare for each that fails or is slower than its usual round trip
    /// (see `read_candidates`), and answers after `r` replies. Returns the
    /// merged state (`None` when no replica knows the key). Stale replicas
    /// among those that answered are repaired in the background.
    pub async fn get(
        self: &Arc<Self>,
        table: &str,
        cfg: TableConfig,
        key: &[u8],
        r: usize,
        deadline: Instant,
    ) -> Result<Option<Object>, ServiceError> {
        let mode = cfg.mode();
        let topology = self.serving_topology()?;
        let pl = topology
            .current
            .preference_list_for(key_position(table, key), cfg.n as usize);
        let candidates = read_candidates(&pl, &self.me, |n| self.is_up(n));
        let available = candidates.len();
        let (mut rc, ask) = ReadCoordinator::start(candidates, r, mode);
        if rc.outcome() == QuorumOutcome::Failed {
            return Err(ServiceError::new(
                ErrorCode::QuorumNotMet,
                format!("only {available} of the {r} replicas needed are known"),
            ));
        }
        let (tx, mut rx) = mpsc::channel(available.max(1));
        let mut local = false;
        let mut remote = Vec::with_capacity(ask.len());
        for t in ask {
            if t == self.me {
                local = true;
            } else {
                remote.push(t);
            }
        }
        let mut slow_at = Instant::now() + self.slow_after(&remote, rc.next_spare());
        for t in remote {
            self.ask_replica(t, table, key, mode, &tx);
        }
        // The local replica is read here, while the remote ones are asked.
        let mut first = None;
        if local {
            let me = self.me.clone();
            let res = self.replica_get(&me, table, key, mode).await;
            first = Some((me, res));
        }
        loop {
            let (from, res) = match first.take() {
                Some(reply) => reply,
                None => {
                    let speculate = rc.has_spares() && slow_at < deadline;
                    tokio::select! {
                        biased;
                        reply = rx.recv() => match reply {
                            Some(reply) => reply,
                            None => break,
                        },
                        () = tokio::time::sleep_until(slow_at), if speculate => {
                            match rc.on_slow() {
                                Some(spare) => {
                                    self.metrics.speculative_reads.inc();
                                    slow_at = Instant::now() + self.slow_after(std::slice::from_ref(&spare), rc.next_spare());
                                    self.ask_replica(spare, table, key, mode, &tx);
                                }
                                None => slow_at = deadline,
                            }
                            continue;
                        }
                        () = tokio::time::sleep_until(deadline) => return Err(deadline_exceeded()),
                    }
                }
            };
            let outcome = match res {
                Ok(state) => rc.on_reply(&from, state),
                Err(_) => {
                    let (outcome, spare) = rc.on_failure(&from);
                    if let Some(spare) = spare {
                        slow_at = Instant::now()
                            + self.slow_after(std::slice::from_ref(&spare), rc.next_spare());
                        self.ask_replica(spare, table, key, mode, &tx);
                    }
                    outcome
                }
            };
            match outcome {
                QuorumOutcome::Pending => continue,
                QuorumOutcome::Failed => {
                    return Err(quorum_not_met(rc.replies(), r));
                }
                QuorumOutcome::Met => break,
            }
        }
        drop(tx);
        if rc.outcome() != QuorumOutcome::Met {
            return Err(quorum_not_met(rc.replies(), r));
        }
        let result = rc.result();
        let answer = result.merged;
        if rc.all_answered() && result.stale.is_empty() {
            return Ok(answer);
        }
        // Keep listening for the other replicas, then repair the stale ones.
        let node = Arc::clone(self);
        let (table, key) = (table.to_owned(), key.to_vec());
        tokio::spawn(async move {
            while !rc.all_answered() {
                match rx.recv().await {
                    Some((from, Ok(state))) => {
                        rc.on_reply(&from, state);
                    }
                    Some((from, Err(_))) => {
                        rc.on_failure(&from);
                    }
                    None => break,
                }
            }
            let result = rc.result();
            if let Some(merged) = result.merged {
                // Encoded once for every stale peer.
                let encoded = Bytes::from(encode_object(&merged));
                for stale in result.stale {
                    node.metrics.read_repairs.inc();
                    if stale == node.me {
                        let (r, t, k, m) = (
                            Arc::clone(&node.replica),
                            table.clone(),
                            key.clone(),
                            merged.clone(),
                        );
                        node.background_io("read repair", move || {
                            r.merge_item(&t, &k, &m, mode).map(|_| ())
                        })
                        .await;
                    } else if let Err(why) = node
                        .send_encoded(&stale, &table, &key, encoded.clone(), mode, None)
                        .await
                    {
                        // Anti-entropy repairs it later.
                        tracing::debug!(peer = %stale, ?why, "read repair not delivered");
                    }
                }
            }
        });
        Ok(answer)
    }

    /// Writes (or deletes) a key, forwarding to a primary when needed.
    pub async fn put(
        self: &Arc<Self>,
        cfg: TableConfig,
        req: PutRequest,
        deadline: Instant,
    ) -> Result<PutResult, ServiceError> {
        self.route_put(cfg, req, 0, deadline).await
    }

    /// Like [`Node::put`], for a write already forwarded `hops` times: a
    /// node that is no longer a primary (its ring changed since the sender
    /// chose it) forwards again, a bounded number of times.
    pub async fn route_put(
        self: &Arc<Self>,
        cfg: TableConfig,
        req: PutRequest,
        hops: u32,
        deadline: Instant,
    ) -> Result<PutResult, ServiceError> {
        let topology = self.serving_topology()?;
        let pl = topology
            .current
            .preference_list_for(key_position(&req.table, &req.key), cfg.n as usize);
        let mut tried: Vec<NodeId> = Vec::new();
        loop {
            let choice = choose_coordinator(&pl, &self.me, |n| self.is_up(n) && !tried.contains(n));
            let target = match choice {
                Coordinator::Local => return self.coordinate_put(cfg, req, false, deadline).await,
                Coordinator::LocalAsFallback => {
                    return self.coordinate_put(cfg, req, true, deadline).await;
                }
                Coordinator::Forward(t) => t,
            };
            if hops >= MAX_FORWARD_HOPS {
                return Err(ServiceError::new(
                    ErrorCode::RingChanging,
                    "the ring is changing and nodes disagree on this key's replicas; retry",
                ));
            }
            match self.forward_put(&target, &req, hops + 1, deadline).await {
                // The target does not know the table yet (a node that has
                // just joined, before the catalog reached it): it did
                // nothing, so another replica may coordinate.
                Ok(Err(e)) if e.code == ErrorCode::TableNotFound => tried.push(target),
                Ok(result) => return result,
                // Never delivered: another primary may coordinate.
                Err(ReplicaFailure::Unreachable) => tried.push(target),
                // Perhaps delivered (a paused or slow coordinator applies it
                // when it wakes): coordinating it again elsewhere would
                // apply it twice, under two dots, and the late copy would
                // come back as a sibling after the client had overwritten
                // the first (found by the nemesis test).
                Err(why) => return Err(unanswered_forward(&target, why)),
            }
        }
    }

    async fn forward_put(
        self: &Arc<Self>,
        to: &NodeId,
        req: &PutRequest,
        hops: u32,
        deadline: Instant,
    ) -> Result<Result<PutResult, ServiceError>, ReplicaFailure> {
        let Some(peer) = self.cluster.peer(to) else {
            return Err(ReplicaFailure::Unreachable);
        };
        let (if_match, if_none_match) = match &req.condition {
            Some(Condition::IfMatch(ctx)) => (Some(encode_context(ctx)), false),
            Some(Condition::IfNoneMatch) => (None, true),
            None => (None, false),
        };
        let msg = pb::CoordinatePutRequest {
            table: req.table.clone(),
            key: req.key.clone(),
            value: req.value.clone(),
            context: (!req.context.is_empty()).then(|| encode_context(&req.context)),
            w: req.w as u32,
            if_match,
            if_none_match,
            hops,
            timeout_ms: deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1, u128::from(u32::MAX)) as u32,
        };
        // The coordinator waits up to one timeout per replica round.
        let until = deadline.min(Instant::now() + self.timeout * 3);
        let res = tokio::time::timeout_at(until, peer.client().coordinate_put(msg)).await;
        let res = res
            .map_err(|_| ReplicaFailure::Timeout)
            .and_then(|r| r.map_err(|s| classify(&s)));
        let resp = self.settle(to, res)?;
        Ok(match resp.error {
            Some(e) => Err(wire::error_from_pb(e)),
            None => Ok(PutResult {
                context: resp.context,
            }),
        })
    }

    /// Coordinates a write on this node.
    pub async fn coordinate_put(
        self: &Arc<Self>,
        cfg: TableConfig,
        req: PutRequest,
        as_fallback: bool,
        deadline: Instant,
    ) -> Result<PutResult, ServiceError> {
        let mode = cfg.mode();
        if let Some(cond) = &req.condition {
            let current = self
                .get(&req.table, cfg, &req.key, cfg.r as usize, deadline)
                .await?;
            check_condition(cond, current.as_ref(), MAX_CONTEXT_ENTRIES)
                .map_err(|e| ServiceError::new(ErrorCode::PreconditionFailed, e.to_string()))?;
        }
        let topology = self.cluster.topology();
        let position = key_position(&req.table, &req.key);
        let pl = topology
            .current
            .preference_list_for(position, cfg.n as usize);
        // During a ring change, the replicas the next ring adds get every
        // write too (not counted towards W), so that nothing written while
        // a partition streams is missing when the change commits.
        let pending = topology.pending_targets(pl.partition, cfg.n as usize);
        let (mut machine, effects) =
            WriteCoordinator::start(&self.me, &pl, req.w, |n| self.is_up(n));

        // The local write comes first: it mints the dot.
        let local_hint_for = effects.iter().find_map(|e| match e {
            WriteEffect::Send { to, hint_for } if to == &self.me => Some(hint_for.clone()),
            _ => None,
        });
        // A primary is always among its own targets; a fallback coordinator
        // always stands in for someone (the machine puts it first in line).
        let Some(local_hint_for) = local_hint_for else {
            return Err(ServiceError::internal(format!(
                "coordinator is not among the write targets (as fallback: {as_fallback})"
            )));
        };
        let r = &self.replica;
        let (object, warning) = self
            .local(
                |reads| {
                    r.coordinate(
                        &req.table,
                        &req.key,
                        &req.context,
                        req.value.clone(),
                        mode,
                        local_hint_for.as_ref(),
                        reads,
                    )
                },
                || {
                    let (r, req, hint_for) = (Arc::clone(r), req.clone(), local_hint_for.clone());
                    move |reads| {
                        r.coordinate(
                            &req.table,
                            &req.key,
                            &req.context,
                            req.value,
                            mode,
                            hint_for.as_ref(),
                            reads,
                        )
                    }
                },
            )
            .await?;
        if let Some(count) = warning {
            tracing::warn!(table = %req.table, siblings = count, "key has many siblings; clients should resolve them");
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
        // The local copy counts once it is durable. Under `--durability
        // sync` that is the group commit's next fsync, awaited alongside
        // the replicas' writes rather than before they are sent: waiting
        // first made every write wait for two group commits in a row (this
        // node's, then a replica's). Sending a version before its own copy
        // is durable is safe: a node that crashes with it unsynced starts
        // again under a new actor id (`meta::actor_for_start`), so its dots
        // are never issued twice.
        match &self.group {
            None => {
                machine.on_ack(&self.me);
            }
            Some(group) => {
                let (group, me, tx) = (Arc::clone(group), self.me.clone(), tx.clone());
                tokio::spawn(async move {
                    let reply = match group.wait().await {
                        Ok(()) => Reply::Ack(me),
                        Err(e) => Reply::NotDurable(me, e),
                    };
                    tx.send(reply).ok();
                });
            }
        }

        let encoded = Bytes::from(encode_object(&object));
        for target in pending {
            self.send_pending(target, &req.table, &req.key, (&object, &encoded), mode);
        }
        let mut pending = effects;
        let mut local_error = None;
        loop {
            for effect in pending.drain(..) {
                self.carry_out(effect, &req.table, &req.key, (&object, &encoded), mode, &tx);
            }
            if machine.outcome() != QuorumOutcome::Pending {
                break;
            }
            // Past the deadline the answer is decided (not met); replies
            // still due are handled by the background fan-out below.
            let until = deadline.min(Instant::now() + self.timeout * 2);
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(reply)) => {
                    if let Reply::NotDurable(_, e) = &reply {
                        local_error = Some(e.clone());
                    }
                    pending = reply.feed(&mut machine);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let (acks, _) = machine.acks();
        let result = if machine.outcome() == QuorumOutcome::Met {
            Ok(PutResult {
                context: encode_context(&object.client_context(MAX_CONTEXT_ENTRIES)),
            })
        } else if let Some(e) = local_error {
            // The quorum fell short and this node's own fsync failed: that
            // failure is the news.
            Err(e)
        } else {
            Err(ServiceError::new(
                ErrorCode::QuorumNotMet,
                format!(
                    "{acks} of the {} acknowledgements needed arrived in time",
                    machine.required()
                ),
            ))
        };
        // The client has its answer; finish the fan-out in the background so
        // that replicas failing after the quorum was decided still get hints.
        // Every send answers exactly once (each RPC has a timeout).
        if !machine.has_outstanding() {
            return result;
        }
        let node = Arc::clone(self);
        tokio::spawn(async move {
            while machine.has_outstanding() {
                // Every send answers within its own timeout; the bound here
                // only guards against a reply task that died.
                match tokio::time::timeout(node.timeout * 4, rx.recv()).await {
                    Ok(Some(reply)) => {
                        for effect in reply.feed(&mut machine) {
                            node.carry_out(
                                effect,
                                &req.table,
                                &req.key,
                                (&object, &encoded),
                                mode,
                                &tx,
                            );
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        });
        result
    }

    /// Sends a write to a replica that a ring change adds; on failure the
    /// write is kept as a hint for it.
    fn send_pending(
        self: &Arc<Self>,
        to: NodeId,
        table: &str,
        key: &[u8],
        (object, encoded): (&Object, &Bytes),
        mode: ConflictMode,
    ) {
        let (node, table, key, object, encoded) = (
            Arc::clone(self),
            table.to_owned(),
            key.to_vec(),
            object.clone(),
            encoded.clone(),
        );
        tokio::spawn(async move {
            let r = Arc::clone(&node.replica);
            if to == node.me {
                node.background_io("write to a pending replica", move || {
                    r.merge_item(&table, &key, &object, mode).map(|_| ())
                })
                .await;
                return;
            }
            if node
                .send_encoded(&to, &table, &key, encoded, mode, None)
                .await
                .is_err()
            {
                node.background_io("hint for a pending replica", move || {
                    r.store_hint(&to, &table, &key, &object, mode)
                })
                .await;
            }
        });
    }

    /// Carries out one effect of a write's machine; `object` is the new
    /// state and its encoding.
    fn carry_out(
        self: &Arc<Self>,
        effect: WriteEffect,
        table: &str,
        key: &[u8],
        (object, encoded): (&Object, &Bytes),
        mode: ConflictMode,
        tx: &mpsc::UnboundedSender<Reply>,
    ) {
        let (node, table, key, tx) = (Arc::clone(self), table.to_owned(), key.to_vec(), tx.clone());
        match effect {
            WriteEffect::Send { to, .. } if to == self.me => {} // done first, above
            WriteEffect::Send { to, hint_for } => {
                let encoded = encoded.clone();
                tokio::spawn(async move {
                    let reply = match node
                        .send_encoded(&to, &table, &key, encoded, mode, hint_for.as_ref())
                        .await
                    {
                        Ok(()) => Reply::Ack(to),
                        Err(why) => Reply::Fail(to, why),
                    };
                    // The coordinator stops listening once its answer is
                    // decided and the fan-out finished; a late reply is moot.
                    tx.send(reply).ok();
                });
            }
            WriteEffect::StoreLocalHint { for_node } => {
                let object = object.clone();
                tokio::spawn(async move {
                    let r = Arc::clone(&node.replica);
                    node.background_io("local hint", move || {
                        r.store_hint(&for_node, &table, &key, &object, mode)
                    })
                    .await;
                });
            }
        }
    }
}
/// The answer to a client whose write was forwarded to a coordinator that
/// did not answer: it may have applied the write (a paused or slow node
/// applies it when it wakes), so the write is not coordinated again
/// elsewhere, which could apply it twice under two dots.
pub(crate) fn unanswered_forward(target: &NodeId, why: ReplicaFailure) -> ServiceError {
    ServiceError::new(
        ErrorCode::QuorumNotMet,
        format!(
            "the key's coordinator {target} did not answer ({why:?}); the write may or may not have been applied"
        ),
    )
}
