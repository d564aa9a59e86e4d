//! Beginning ring changes (join, decommission), one at a time.
//!
//! Two changes begun at once on different nodes would carry the same epoch,
//! and gossip would keep only one of them, though both callers were told
//! they began. So every change is begun by one node, the *change leader*:
//! the first member of the current ring, by name, that this node believes
//! up. A node that is not the leader forwards the request to it
//! (`BeginChange` RPC); the leader validates and begins changes under a
//! lock, so a second request sees the first change and is refused with
//! `RingChangeInProgress`. (While views of who is up disagree, two nodes may
//! both act as leader for a moment; the tie-break by encoding then still
//! keeps the cluster consistent.)

use std::sync::Arc;

use dyno_core::topology::{ChangeError, Topology};
use dyno_core::{Member, NodeId, NodeStatus};
use dyno_proto::internal as pb;

use crate::error::{ErrorCode, ServiceError};
use crate::node::Node;

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add a node to the ring.
    Join,
    /// Remove a node from the ring.
    Decommission,
    /// Abandon the change under way (the node id is ignored).
    Abort,
    /// Place a zone on the ring's only member (nothing moves).
    SetZone,
}

/// A change that has begun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Began {
    /// The ring epoch of the change.
    pub epoch: u64,
    /// Partition replicas that change hands (the plan's minimum).
    pub moved: u64,
    /// Partitions whose owner changes.
    pub reassigned: u64,
    /// Partition replicas in the cluster.
    pub total: u64,
}

fn change_error(e: ChangeError) -> ServiceError {
    let code = match &e {
        ChangeError::Busy { .. } => ErrorCode::RingChangeInProgress,
        ChangeError::Plan(dyno_core::ring::RingError::DuplicateMember { .. }) => {
            ErrorCode::AlreadyMember
        }
        ChangeError::Plan(dyno_core::ring::RingError::UnknownMember { .. }) => {
            ErrorCode::NotAMember
        }
        ChangeError::Plan(_) => ErrorCode::InvalidRingChange,
        ChangeError::Idle => ErrorCode::NoRingChange,
        ChangeError::ZoneMovesData { .. } => ErrorCode::InvalidRingChange,
    };
    ServiceError::new(code, e.to_string())
}

/// Serialises ring changes begun on this node (when it is the leader).
#[derive(Debug, Default)]
pub struct ChangeLeader {
    lock: tokio::sync::Mutex<()>,
}

impl ChangeLeader {
    /// A leader with no change being begun.
    pub fn new() -> ChangeLeader {
        ChangeLeader::default()
    }
}

/// The node that begins ring changes, as this node sees it.
pub fn leader(node: &Node, topology: &Topology) -> NodeId {
    let mut members: Vec<&NodeId> = topology.current.members().iter().map(|m| &m.id).collect();
    members.sort();
    members
        .into_iter()
        .find(|id| node.is_up(id))
        .cloned()
        .unwrap_or_else(|| node.me().clone())
}

/// Begins a change: here if this node leads changes, else on the leader.
pub async fn request(
    node: &Arc<Node>,
    here: &ChangeLeader,
    action: Action,
    id: NodeId,
    zone: Option<String>,
) -> Result<Began, ServiceError> {
    let topology = node.serving_topology()?;
    let leader = leader(node, &topology);
    if &leader == node.me() {
        return begin_here(node, here, action, id, zone).await;
    }
    let Some(peer) = node.cluster().peer(&leader) else {
        return Err(ServiceError::new(
            ErrorCode::LeaderUnreachable,
            format!("ring changes are begun by {leader}, whose address is not known yet; retry"),
        ));
    };
    let req = pb::BeginChangeRequest {
        decommission: action == Action::Decommission,
        abort: action == Action::Abort,
        set_zone: action == Action::SetZone,
        node: id.to_string(),
        zone,
    };
    let resp = tokio::time::timeout(node.timeout() * 2, peer.client().begin_change(req))
        .await
        .map_err(|_| {
            ServiceError::new(
                ErrorCode::LeaderUnreachable,
                format!("{leader}, which begins ring changes, did not answer in time; retry"),
            )
        })?
        .map_err(|s| {
            ServiceError::new(
                ErrorCode::LeaderUnreachable,
                format!(
                    "{leader}, which begins ring changes, failed: {}",
                    s.message()
                ),
            )
        })?;
    match resp.error {
        Some(e) => Err(crate::wire::error_from_pb(e)),
        None => Ok(Began {
            epoch: resp.epoch,
            moved: resp.moved,
            reassigned: resp.reassigned,
            total: resp.total,
        }),
    }
}

fn validate(
    node: &Node,
    topology: &Topology,
    action: Action,
    id: &NodeId,
    zone: Option<&str>,
) -> Result<(), ServiceError> {
    if let Some(z) = zone {
        // Whichever node the request came through, the zone is checked here,
        // where every join is begun.
        dyno_core::ring::check_zone(z)
            .map_err(|e| ServiceError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    }
    match action {
        Action::Join => match node.cluster().view().get(id) {
            None => Err(ServiceError::new(
                ErrorCode::UnknownNode,
                format!(
                    "no node named {id} has gossiped with this cluster; start it with --seed pointing at a member first"
                ),
            )),
            Some(s) if s.status == NodeStatus::Left => Err(ServiceError::new(
                ErrorCode::NodeLeft,
                format!(
                    "{id} was decommissioned; wipe its data directory and start it again to rejoin"
                ),
            )),
            Some(_) if !node.is_up(id) => Err(ServiceError::new(
                ErrorCode::NodeDown,
                format!("{id} is not answering; it must be up to receive its partitions"),
            )),
            Some(_) => Ok(()),
        },
        Action::Abort | Action::SetZone => Ok(()),
        Action::Decommission => {
            let remaining = topology.current.members().len().saturating_sub(1);
            match node
                .catalog()
                .list()
                .iter()
                .find(|t| t.config.n as usize > remaining)
            {
                Some(t) => Err(ServiceError::new(
                    ErrorCode::TooFewNodes,
                    format!(
                        "table {} has n = {}; decommissioning {id} would leave {remaining} nodes",
                        t.name, t.config.n
                    ),
                )),
                None => Ok(()),
            }
        }
    }
}

/// Validates and begins a change on this node, one at a time.
pub async fn begin_here(
    node: &Arc<Node>,
    here: &ChangeLeader,
    action: Action,
    id: NodeId,
    zone: Option<String>,
) -> Result<Began, ServiceError> {
    let _one_at_a_time = here.lock.lock().await;
    let topology = node.serving_topology()?;
    if action == Action::Abort {
        let aborted = topology.abort().map_err(change_error)?;
        let began = adopt_unmoved(node, aborted).await?;
        tracing::warn!(epoch = began.epoch, "ring change aborted");
        return Ok(began);
    }
    if topology.next.is_some() {
        return Err(change_error(ChangeError::Busy {
            epoch: topology.epoch,
        }));
    }
    validate(node, &topology, action, &id, zone.as_deref())?;
    // Only with a majority of the ring in sight: the leader is whoever
    // sees itself first among the members that are up, so the two sides of
    // a partition could each begin a different change at the same epoch;
    // the tie-break then picks one, but progress reported for the other
    // (counted by epoch) kept the winner from committing (found by the
    // deterministic simulation). At most one side holds a majority.
    let members = topology.current.members();
    let reachable = members
        .iter()
        .filter(|m| &m.id == node.me() || node.is_up(&m.id))
        .count();
    if reachable * 2 <= members.len() {
        return Err(ServiceError::new(
            ErrorCode::NodeDown,
            format!(
                "only {reachable} of the ring's {} members are reachable from {}, which begins ring changes; a change needs a majority of them up",
                members.len(),
                node.me()
            ),
        ));
    }
    if action == Action::SetZone {
        let zone = zone.ok_or_else(|| {
            ServiceError::new(ErrorCode::InvalidRequest, "give the zone to place")
        })?;
        let zoned = topology.set_zone(&id, zone).map_err(change_error)?;
        let began = adopt_unmoved(node, zoned).await?;
        tracing::info!(node = %id, epoch = began.epoch, "zone placed on the ring's only member");
        return Ok(began);
    }
    if action == Action::Join {
        give_catalog(node, &id).await;
    }
    let next = match action {
        Action::Join => {
            // The zone the request names, else the one the node gossips.
            let zone = zone.or_else(|| node.cluster().view().get(&id).and_then(|s| s.zone.clone()));
            topology.begin_join(Member { id, zone })
        }
        Action::Decommission => topology.begin_leave(&id),
        Action::Abort | Action::SetZone => {
            return Err(ServiceError::internal("aborts and zones are handled above"));
        }
    }
    .map_err(change_error)?;
    let m = node
        .catalog()
        .planned_movement(&next)
        .ok_or_else(|| ServiceError::internal("a begun change has no next ring"))?;
    let began = Began {
        epoch: next.epoch,
        moved: m.moved as u64,
        reassigned: m.partitions_reassigned as u64,
        total: m.total as u64,
    };
    offer(node, next).await?;
    tracing::info!(
        ?action,
        epoch = began.epoch,
        moved = began.moved,
        "ring change begun"
    );
    Ok(began)
}

/// Gives a joining node every table before it owns any partition, so
/// that it does not refuse the writes sent to it as `TableNotFound` until
/// the periodic catalog sync reaches it. Best effort, within half the
/// replica timeout: a joiner that does not answer (a frozen process) is
/// still joined, since a stuck change can be aborted, and the catalog
/// sync and the coordinators' retry on another replica cover the gap.
async fn give_catalog(node: &Arc<Node>, id: &NodeId) {
    let Some(peer) = node.cluster().peer(id) else {
        tracing::warn!(node = %id, "no address known for the joining node; it will learn the tables by catalog sync");
        return;
    };
    let mine = crate::wire::catalog_to_pb(&node.catalog().records());
    match tokio::time::timeout(node.timeout() / 2, peer.client().push_catalog(mine)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(node = %id, error = %e, "the joining node did not take the table catalog; it will learn it by catalog sync");
        }
        Err(_) => {
            tracing::warn!(node = %id, "the joining node did not take the table catalog in time; it will learn it by catalog sync");
        }
    }
}

/// Adopts a topology that moves no data (an abort, a zone placed on a
/// sole member); what it began.
async fn adopt_unmoved(node: &Arc<Node>, t: Topology) -> Result<Began, ServiceError> {
    let began = Began {
        epoch: t.epoch,
        moved: 0,
        reassigned: 0,
        total: 0,
    };
    offer(node, t).await?;
    Ok(began)
}

/// Adopts a topology this node made, persisting it on the blocking pool
/// (an fsync under `--durability sync`).
async fn offer(node: &Arc<Node>, t: Topology) -> Result<(), ServiceError> {
    let n = Arc::clone(node);
    crate::sys::blocking(move || n.cluster().offer_topology(t))
        .await
        .map_err(ServiceError::internal)??;
    Ok(())
}
