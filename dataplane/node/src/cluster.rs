//! The other nodes: membership (learnt by gossip), addresses, RPC clients,
//! failure detection, and the topology (ring) this node routes by.
//!
//! * **Membership** is the core's [`Membership`] view, merged on every gossip
//!   exchange (`gossip.rs`). Each entry whose heartbeat advanced feeds that
//!   peer's [`PhiDetector`]; a new generation (a restart) starts a fresh one.
//! * **Liveness.** A peer is *up* unless its φ has reached the threshold, or
//!   a connection to it was refused since its last heartbeat: a refusal is
//!   direct evidence and is acted on at once, and the next heartbeat clears
//!   it. A peer never heard from is presumed up (it may be starting).
//! * **Addresses.** A peer is reached at the address it gossips, unless the
//!   operator pinned one with `--member ID=HTTP,RPC` (tests use this to put
//!   proxies between nodes).
//! * **Topology.** The newest [`Topology`] seen (by `supersedes`), persisted
//!   in the meta keyspace so that a restarted node routes as it did before.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dyno_core::coordinator::ReplicaFailure;
use dyno_core::membership::{Addresses, Load};
use dyno_core::topology::{HandoffProgress, Topology};
use dyno_core::{Membership, NodeId, NodeState, NodeStatus, PhiConfig, PhiDetector};
use dyno_storage::{Store, StoreError};
use tokio::time::Instant;

use crate::meta;
use crate::peer::{Connector, PeerClient};
use crate::sys::lock;

/// Milliseconds since this process started (monotonic, for the detectors).
fn mono_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Another node, as far as this node can reach it.
#[derive(Debug)]
pub struct Peer {
    /// Its name.
    pub id: NodeId,
    /// Its addresses.
    pub addresses: Addresses,
    client: Arc<dyn PeerClient>,
}

impl Peer {
    fn new(id: NodeId, addresses: Addresses, connector: &dyn Connector) -> Peer {
        let client = connector.connect(&addresses.rpc);
        Peer {
            id,
            addresses,
            client,
        }
    }

    /// This peer's internal API (cheap to clone; shares the connection).
    pub fn client(&self) -> Arc<dyn PeerClient> {
        Arc::clone(&self.client)
    }
}

#[derive(Debug)]
struct Health {
    detector: PhiDetector,
    generation: u64,
    /// A connection was refused after the last heartbeat.
    refused: bool,
}

/// What this node believes about a peer's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Heartbeats arrive.
    Up,
    /// φ passed the threshold, or connections are refused.
    Suspect,
}

/// This node's own entry, as it changes.
#[derive(Debug, Clone)]
pub struct LocalState {
    /// Incremented on every start (and past any older self seen in gossip).
    pub generation: u64,
    /// Its addresses.
    pub addresses: Addresses,
    /// Set once a decommission has finished.
    pub left: bool,
    /// Load figures.
    pub load: Load,
    /// Its part in the change under way.
    pub handoff: HandoffProgress,
    /// Its failure zone.
    pub zone: Option<String>,
}

/// Membership, liveness, addresses and topology.
#[derive(Debug)]
pub struct Cluster {
    /// This node.
    pub me: NodeId,
    peers: RwLock<BTreeMap<NodeId, Arc<Peer>>>,
    pinned: BTreeMap<NodeId, Addresses>,
    view: Mutex<Membership>,
    health: Mutex<BTreeMap<NodeId, Health>>,
    local: Mutex<LocalState>,
    topology: RwLock<Arc<Topology>>,
    /// Serialises topology changes, so that the (possibly fsynced) write
    /// happens outside the lock every request reads.
    topology_writer: Mutex<()>,
    phi: PhiConfig,
    started: Instant,
    timeout: Duration,
    connector: Arc<dyn Connector>,
    store: Arc<dyn Store>,
    /// Bumped whenever the topology changes (the handoff driver waits on it).
    pub topology_changed: tokio::sync::watch::Sender<u64>,
}

/// What a [`Cluster`] is built from.
#[derive(Debug)]
pub struct ClusterParts {
    /// This node.
    pub me: NodeId,
    /// Its own entry.
    pub local: LocalState,
    /// Addresses pinned on the command line.
    pub pinned: BTreeMap<NodeId, Addresses>,
    /// The ring to start with when the store holds none.
    pub initial: Topology,
    /// Failure detection settings.
    pub phi: PhiConfig,
    /// The per-call timeout.
    pub timeout: Duration,
    /// Makes peer clients.
    pub connector: Arc<dyn Connector>,
    /// Where the topology is persisted.
    pub store: Arc<dyn Store>,
}

impl Cluster {
    /// A cluster view: the persisted topology if there is one, else
    /// `initial`; `pinned` addresses come from the command line.
    pub fn new(parts: ClusterParts) -> Result<Cluster, StoreError> {
        let ClusterParts {
            me,
            local,
            pinned,
            initial,
            phi,
            timeout,
            connector,
            store,
        } = parts;
        let topology = match meta::topology(store.as_ref())? {
            Some(t) => t,
            None => {
                meta::init_topology(store.as_ref(), &initial)?;
                initial
            }
        };
        // Addresses learnt before a restart first, then the pinned ones
        // over them: a node started without seeds can reach its peers at
        // once instead of waiting for one of them to gossip to it.
        let remembered = meta::peer_addresses(store.as_ref())?
            .into_iter()
            .map(|(id, http, rpc)| (id, Addresses { http, rpc }));
        let peers = remembered
            .chain(pinned.iter().map(|(id, a)| (id.clone(), a.clone())))
            .filter(|(id, _)| *id != me)
            .map(|(id, a)| {
                let peer = Arc::new(Peer::new(id.clone(), a, connector.as_ref()));
                (id, peer)
            })
            .collect();
        let (tx, _) = tokio::sync::watch::channel(topology.epoch);
        let c = Cluster {
            me,
            peers: RwLock::new(peers),
            pinned,
            view: Mutex::new(Membership::new()),
            health: Mutex::new(BTreeMap::new()),
            local: Mutex::new(local),
            topology: RwLock::new(Arc::new(topology)),
            topology_writer: Mutex::new(()),
            phi,
            started: Instant::now(),
            timeout,
            connector,
            store,
            topology_changed: tx,
        };
        c.refresh_local(0);
        Ok(c)
    }

    /// The topology this node routes by.
    pub fn topology(&self) -> Arc<Topology> {
        Arc::clone(&self.topology.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Adopts `t` if it supersedes the current topology; persists it first.
    /// Returns true when adopted.
    ///
    /// The write (an fsync under `--durability sync`) happens under
    /// `topology_writer` only; requests keep reading the old topology until
    /// the new one is durable, then see it at once.
    pub fn offer_topology(&self, t: Topology) -> Result<bool, StoreError> {
        let _one_writer = lock(&self.topology_writer);
        let cur = self.topology();
        if !t.supersedes(&cur) {
            return Ok(false);
        }
        meta::save_topology(self.store.as_ref(), &cur, &t, &self.me)?;
        tracing::info!(
            epoch = t.epoch,
            changing = t.next.is_some(),
            "topology changed"
        );
        let epoch = t.epoch;
        *self.topology.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
        self.topology_changed.send_replace(epoch);
        self.refresh_local(0);
        Ok(true)
    }

    /// A peer by id.
    pub fn peer(&self, id: &NodeId) -> Option<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Every peer this node can address.
    pub fn peers(&self) -> Vec<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// True when `id` is this node, or a peer believed up.
    pub fn is_up(&self, id: &NodeId) -> bool {
        if id == &self.me {
            return true;
        }
        if self.peer(id).is_none() {
            return false;
        }
        self.liveness(id).0 == Liveness::Up
    }

    /// A peer's liveness and φ.
    pub fn liveness(&self, id: &NodeId) -> (Liveness, f64) {
        if id == &self.me {
            return (Liveness::Up, 0.0);
        }
        let now = mono_ms(self.started);
        let health = lock(&self.health);
        match health.get(id) {
            None => (Liveness::Up, 0.0),
            Some(h) => {
                let phi = h.detector.phi(now);
                let suspect = h.refused || phi >= self.phi.threshold;
                let l = if suspect {
                    Liveness::Suspect
                } else {
                    Liveness::Up
                };
                (l, phi)
            }
        }
    }

    /// Records an RPC outcome: a refused connection is evidence of death.
    pub fn note_rpc(&self, id: &NodeId, res: Result<(), ReplicaFailure>) {
        let mut health = lock(&self.health);
        match res {
            Err(ReplicaFailure::Unreachable) => {
                let h = health.entry(id.clone()).or_insert_with(|| Health {
                    detector: PhiDetector::new(self.phi),
                    generation: 0,
                    refused: false,
                });
                if !h.refused {
                    tracing::warn!(peer = %id, "peer refuses connections; routing around it");
                }
                h.refused = true;
            }
            Ok(()) => {
                if let Some(h) = health.get_mut(id)
                    && h.refused
                {
                    tracing::info!(peer = %id, "peer is answering again");
                    h.refused = false;
                }
            }
            Err(_) => {}
        }
    }

    /// Updates this node's own entry (status, ring version, load, handoff)
    /// and bumps its heartbeat by `beats`.
    pub fn refresh_local(&self, beats: u64) {
        let t = self.topology();
        let local = lock(&self.local).clone();
        let status = if local.left {
            NodeStatus::Left
        } else if t.current.member(&self.me).is_none() {
            NodeStatus::Joining
        } else if t
            .next
            .as_ref()
            .is_some_and(|n| n.member(&self.me).is_none())
        {
            NodeStatus::Leaving
        } else {
            NodeStatus::Up
        };
        let mut view = lock(&self.view);
        let heartbeat = view
            .get(&self.me)
            .filter(|s| s.generation == local.generation)
            .map_or(0, |s| s.heartbeat)
            + beats;
        view.set_local(
            self.me.clone(),
            NodeState {
                generation: local.generation,
                heartbeat,
                status,
                ring_version: t.epoch,
                addresses: local.addresses,
                load: local.load,
                handoff: local.handoff,
                zone: local.zone,
            },
        );
    }

    /// Changes this node's own entry.
    pub fn update_local(&self, f: impl FnOnce(&mut LocalState)) {
        f(&mut lock(&self.local));
        self.refresh_local(0);
    }

    /// This node's own entry.
    pub fn local(&self) -> LocalState {
        lock(&self.local).clone()
    }

    /// A copy of the membership view.
    pub fn view(&self) -> Membership {
        lock(&self.view).clone()
    }

    /// Merges a view received by gossip. Returns the generation this node
    /// must move past, if the view holds a newer self (a wiped data
    /// directory restarts at generation 1, but its peers remember more).
    pub fn merge_view(&self, other: &Membership) -> Option<u64> {
        let mine = lock(&self.local).generation;
        let my_beat = lock(&self.view).get(&self.me).map_or(0, |s| s.heartbeat);
        // A newer self than this process: an earlier incarnation whose data
        // directory was wiped, seen by peers with a generation at or above
        // ours.
        let newer_self = other
            .get(&self.me)
            .filter(|s| s.generation > mine || (s.generation == mine && s.heartbeat > my_beat))
            .map(|s| s.generation);
        let mut theirs = other.clone();
        // Only this node speaks for itself.
        theirs.set_local(
            self.me.clone(),
            lock(&self.view).get(&self.me).cloned().unwrap_or_else(|| {
                other
                    .get(&self.me)
                    .cloned()
                    .unwrap_or_else(|| empty_state(mine))
            }),
        );
        let changed = lock(&self.view).merge(&theirs);
        let now = mono_ms(self.started);
        for id in changed {
            if id == self.me {
                continue;
            }
            let Some(state) = lock(&self.view).get(&id).cloned() else {
                continue;
            };
            {
                let mut health = lock(&self.health);
                let h = health.entry(id.clone()).or_insert_with(|| Health {
                    detector: PhiDetector::new(self.phi),
                    generation: state.generation,
                    refused: false,
                });
                if h.generation != state.generation {
                    h.detector = PhiDetector::new(self.phi);
                    h.generation = state.generation;
                }
                h.detector.heartbeat(now);
                h.refused = false;
            }
            self.learn_address(&id, &state.addresses);
        }
        newer_self
    }

    /// Moves this node's generation past `seen`.
    pub fn move_past_generation(&self, seen: u64) {
        let mut local = lock(&self.local);
        if local.generation <= seen {
            tracing::warn!(
                seen,
                "gossip remembers a newer incarnation of this node (was its data wiped?); moving past it"
            );
            local.generation = seen + 1;
        }
        drop(local);
        self.refresh_local(0);
    }

    fn learn_address(&self, id: &NodeId, addresses: &Addresses) {
        if id == &self.me || self.pinned.contains_key(id) || addresses.rpc.is_empty() {
            return;
        }
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        if peers.get(id).is_some_and(|p| &p.addresses == addresses) {
            return;
        }
        tracing::info!(peer = %id, rpc = %addresses.rpc, "learnt a peer's address");
        peers.insert(
            id.clone(),
            Arc::new(Peer::new(
                id.clone(),
                addresses.clone(),
                self.connector.as_ref(),
            )),
        );
        drop(peers);
        // A cache for the next start: gossip relearns it if this fails.
        if let Err(e) =
            meta::save_peer_addresses(self.store.as_ref(), id, &addresses.http, &addresses.rpc)
        {
            tracing::warn!(peer = %id, error = %e, "could not remember a peer's address");
        }
    }

    /// The per-RPC timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A client for an address that is not (yet) a known peer: a seed.
    pub fn connect(&self, rpc_url: &str) -> Arc<dyn PeerClient> {
        self.connector.connect(rpc_url)
    }

    /// True when every live node of the view has applied at least `epoch`
    /// (read from the gossiped ring versions): none routes by an older ring.
    pub fn all_live_applied(&self, epoch: u64) -> bool {
        let view = self.view();
        view.nodes().iter().all(|(id, s)| {
            s.status == NodeStatus::Left || s.ring_version >= epoch || !self.is_up(id)
        })
    }
}

fn empty_state(generation: u64) -> NodeState {
    NodeState {
        generation,
        heartbeat: 0,
        status: NodeStatus::Joining,
        ring_version: 0,
        addresses: Addresses::default(),
        load: Load::default(),
        handoff: HandoffProgress::default(),
        zone: None,
    }
}

/// Parses a socket address into an RPC URL.
pub fn rpc_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
