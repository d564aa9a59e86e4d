//! Gossip: every interval, this node bumps its heartbeat and exchanges its
//! membership view and topology with up to `fanout` random peers (push-pull:
//! both sides merge what the other sent). Until it knows any peer, it
//! gossips with its seeds, which is how a new node finds the cluster.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::node::Node;
use crate::peer::PeerClient;
use crate::worker::{Worker, WorkerError, WorkerState};
use dyno_core::membership::{Addresses, Load};
use dyno_core::topology::{HandoffProgress, Topology};
use dyno_core::{Membership, NodeId, NodeState, NodeStatus};
use dyno_proto::internal as pb;

/// Gossip settings.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// Time between rounds.
    pub interval: Duration,
    /// Peers per round, at most.
    pub fanout: usize,
    /// RPC addresses to contact while no peer is known.
    pub seeds: Vec<crate::config::Seed>,
}

fn status_to_pb(s: NodeStatus) -> i32 {
    (match s {
        NodeStatus::Joining => pb::NodeStatus::Joining,
        NodeStatus::Up => pb::NodeStatus::Up,
        NodeStatus::Leaving => pb::NodeStatus::Leaving,
        NodeStatus::Left => pb::NodeStatus::Left,
    }) as i32
}

fn status_from_pb(v: i32) -> NodeStatus {
    match pb::NodeStatus::try_from(v) {
        Ok(pb::NodeStatus::Up) => NodeStatus::Up,
        Ok(pb::NodeStatus::Leaving) => NodeStatus::Leaving,
        Ok(pb::NodeStatus::Left) => NodeStatus::Left,
        _ => NodeStatus::Joining,
    }
}

/// This node's gossip message.
pub fn message(cluster: &Cluster) -> pb::GossipMessage {
    let nodes = cluster
        .view()
        .nodes()
        .iter()
        .map(|(id, s)| pb::NodeStateMsg {
            id: id.to_string(),
            generation: s.generation,
            heartbeat: s.heartbeat,
            status: status_to_pb(s.status),
            ring_version: s.ring_version,
            http: s.addresses.http.clone(),
            rpc: s.addresses.rpc.clone(),
            keys: s.load.keys,
            bytes: s.load.bytes,
            handoff_epoch: s.handoff.epoch,
            handoff_done: s.handoff.done,
            handoff_total: s.handoff.total,
            handoff_bytes: s.handoff.bytes,
            zone: s.zone.clone().unwrap_or_default(),
        })
        .collect();
    pb::GossipMessage {
        from: cluster.me.to_string(),
        nodes,
        topology: cluster.topology().encode(),
    }
}

/// Merges a received message (entries that do not parse are skipped).
pub fn absorb(cluster: &Cluster, msg: &pb::GossipMessage) {
    let mut view = Membership::new();
    for n in &msg.nodes {
        let Ok(id) = NodeId::new(&n.id) else { continue };
        view.set_local(
            id,
            NodeState {
                generation: n.generation,
                heartbeat: n.heartbeat,
                status: status_from_pb(n.status),
                ring_version: n.ring_version,
                addresses: Addresses {
                    http: n.http.clone(),
                    rpc: n.rpc.clone(),
                },
                load: Load {
                    keys: n.keys,
                    bytes: n.bytes,
                },
                handoff: HandoffProgress {
                    epoch: n.handoff_epoch,
                    done: n.handoff_done,
                    total: n.handoff_total,
                    bytes: n.handoff_bytes,
                },
                // A zone that breaks the naming rule is dropped, not trusted.
                zone: Some(n.zone.clone()).filter(|z| dyno_core::ring::check_zone(z).is_ok()),
            },
        );
    }
    if let Some(seen) = cluster.merge_view(&view) {
        cluster.move_past_generation(seen);
    }
    match Topology::decode(&msg.topology) {
        Ok(t) => {
            if let Err(e) = cluster.offer_topology(t) {
                tracing::error!(error = %e, "could not persist a new topology");
            }
        }
        Err(e) => tracing::warn!(from = %msg.from, error = %e, "unreadable topology in gossip"),
    }
}

/// A small xorshift generator for picking peers (no crate needed).
#[derive(Debug)]
struct Pick(u64);

impl Pick {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound.max(1) as u64) as usize
    }
}

/// The gossip worker: one round per interval.
#[derive(Debug)]
pub struct Gossip {
    node: Arc<Node>,
    fanout: usize,
    tick: tokio::time::Interval,
    pick: Pick,
    seeds: Vec<Arc<dyn PeerClient>>,
}

impl Gossip {
    /// A worker gossiping for `node`.
    pub fn new(node: Arc<Node>, config: GossipConfig) -> Gossip {
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let seeds = config
            .seeds
            .iter()
            .map(|a| node.cluster().connect(&a.rpc_url()))
            .collect();
        Gossip {
            node,
            fanout: config.fanout,
            tick,
            pick: Pick(crate::sys::random_u64() | 1),
            seeds,
        }
    }
}

impl Worker for Gossip {
    fn name(&self) -> &'static str {
        "gossip"
    }

    async fn wait_for_work(&mut self) {
        self.tick.tick().await;
    }

    /// One round. Peers that fail are noted against their liveness, not
    /// reported as errors of the worker: failures are what gossip detects.
    async fn work(&mut self) -> Result<WorkerState, WorkerError> {
        let node = &self.node;
        let cluster = node.cluster();
        node.refresh_load();
        cluster.refresh_local(1);
        let view = cluster.view();
        let mut candidates: Vec<_> = cluster
            .peers()
            .into_iter()
            .filter(|p| view.get(&p.id).is_none_or(|s| s.status != NodeStatus::Left))
            .collect();
        let mut chosen = Vec::new();
        while chosen.len() < self.fanout && !candidates.is_empty() {
            chosen.push(candidates.swap_remove(self.pick.next(candidates.len())));
        }
        let mut exchanges = Vec::new();
        let msg = message(cluster);
        for peer in &chosen {
            let (call, id) = (peer.client().gossip(msg.clone()), peer.id.clone());
            exchanges.push(tokio::spawn(async move { (Some(id), call.await) }));
        }
        // Seeds: while no peer is known, and now and then afterwards so
        // that two halves started apart still find each other.
        if chosen.is_empty() || self.pick.next(10) == 0 {
            for client in &self.seeds {
                let call = client.gossip(msg.clone());
                exchanges.push(tokio::spawn(async move { (None, call.await) }));
            }
        }
        for ex in exchanges {
            let Ok((id, res)) = ex.await else { continue };
            match res {
                Ok(reply) => {
                    if let Some(id) = &id {
                        cluster.note_rpc(id, Ok(()));
                    }
                    absorb(cluster, &reply);
                }
                Err(status) => {
                    if let Some(id) = &id {
                        cluster.note_rpc(id, Err(crate::wire::classify(&status)));
                    }
                }
            }
        }
        Ok(WorkerState::Idle)
    }
}
