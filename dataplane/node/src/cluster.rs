//! The other nodes: addresses, RPC clients, and what this node believes
//! about their health.
//!
//! Until gossip arrives, membership is the static list given at start-up,
//! and health is learnt from RPC outcomes: a refused or reset connection
//! marks a peer down for a back-off period (1 s, doubling up to 30 s); a
//! success marks it up again. When the back-off ends the peer is tried
//! again, by real traffic or by the hint replayer's ping.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dyno_core::NodeId;
use dyno_core::coordinator::ReplicaFailure;
use dyno_proto::internal::replica_client::ReplicaClient;
use tonic::transport::{Channel, Endpoint};

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Health {
    down_until: Option<Instant>,
    backoff: Duration,
    failures: u64,
}

/// Another node.
#[derive(Debug)]
pub struct Peer {
    /// Its name.
    pub id: NodeId,
    /// Its public HTTP address.
    pub http: SocketAddr,
    /// Its RPC address.
    pub rpc: SocketAddr,
    client: ReplicaClient<Channel>,
    health: Mutex<Health>,
}

/// What this node believes about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerStatus {
    /// Answering.
    Up,
    /// Refused connections recently; routed around.
    Down,
}

impl Peer {
    fn new(id: NodeId, http: SocketAddr, rpc: SocketAddr, timeout: Duration) -> Peer {
        // Building an endpoint from a socket address cannot fail; connect
        // lazily so a node starts even when its peers are not up yet.
        let channel = Endpoint::from_shared(format!("http://{rpc}"))
            .map(|e| {
                e.connect_timeout(Duration::from_millis(500))
                    .timeout(timeout)
                    .tcp_nodelay(true)
            })
            .map(|e| e.connect_lazy())
            .unwrap_or_else(|_| Endpoint::from_static("http://127.0.0.1:1").connect_lazy());
        Peer {
            id,
            http,
            rpc,
            client: ReplicaClient::new(channel)
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(16 << 20),
            health: Mutex::new(Health {
                down_until: None,
                backoff: MIN_BACKOFF,
                failures: 0,
            }),
        }
    }

    /// A client for this peer (cheap to clone; shares the connection).
    pub fn client(&self) -> ReplicaClient<Channel> {
        self.client.clone()
    }

    /// True unless the peer is within a back-off period.
    pub fn is_up(&self) -> bool {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.down_until.is_none_or(|t| Instant::now() >= t)
    }

    /// The status shown by the admin API.
    pub fn status(&self) -> PeerStatus {
        if self.is_up() {
            PeerStatus::Up
        } else {
            PeerStatus::Down
        }
    }

    /// Records a successful exchange.
    pub fn mark_up(&self) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if h.down_until.is_some() {
            tracing::info!(peer = %self.id, "peer is answering again");
        }
        h.down_until = None;
        h.backoff = MIN_BACKOFF;
    }

    /// Records a failed exchange.
    pub fn mark_failure(&self, why: ReplicaFailure) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.failures += 1;
        if why == ReplicaFailure::Unreachable {
            if h.down_until.is_none() {
                tracing::warn!(peer = %self.id, "peer unreachable; routing around it");
            }
            h.down_until = Some(Instant::now() + h.backoff);
            h.backoff = (h.backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Classifies an RPC failure.
pub fn classify(status: &tonic::Status) -> ReplicaFailure {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown if status.message().contains("connect") => {
            ReplicaFailure::Unreachable
        }
        tonic::Code::Unavailable => ReplicaFailure::Unreachable,
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ReplicaFailure::Timeout,
        _ => ReplicaFailure::Failed,
    }
}

/// The static cluster membership.
#[derive(Debug)]
pub struct Peers {
    peers: BTreeMap<NodeId, Peer>,
}

impl Peers {
    /// Builds the peer table from the configured members, excluding `me`.
    pub fn new(me: &NodeId, members: &[crate::config::PeerSpec], timeout: Duration) -> Peers {
        let peers = members
            .iter()
            .filter(|m| &m.id != me)
            .map(|m| {
                (
                    m.id.clone(),
                    Peer::new(m.id.clone(), m.http, m.rpc, timeout),
                )
            })
            .collect();
        Peers { peers }
    }

    /// A peer by id.
    pub fn get(&self, id: &NodeId) -> Option<&Peer> {
        self.peers.get(id)
    }

    /// All peers.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }
}
