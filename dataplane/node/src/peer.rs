//! How this node reaches another: the [`PeerClient`] trait, one method per
//! internal call, and [`TonicPeer`], its implementation over tonic.
//!
//! Everything that talks to peers (the coordinator, gossip, hint replay,
//! anti-entropy, handoff, the change leader) goes through this trait, and
//! peers are made by a [`Connector`] handed to the node at start-up. A
//! deterministic simulation or a test can therefore put its own network
//! underneath without touching the code above.
//!
//! Calls return the peer's `tonic::Status` on failure;
//! [`crate::wire::classify`] tells refusals (the peer is down) from
//! timeouts (it may only be slow).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dyno_proto::internal as pb;
use dyno_proto::internal::replica_client::ReplicaClient;
use tonic::transport::{Channel, Endpoint};

use crate::config::ReplicaTransport;
use crate::pipe::Pipe;

/// The future of one internal call.
pub type Call<T> = Pin<Box<dyn Future<Output = Result<T, tonic::Status>> + Send + 'static>>;

/// One peer's internal API (see `proto/internal.proto` for each call).
pub trait PeerClient: Send + Sync + fmt::Debug {
    /// Merge a state into the peer's replica, or store it as a hint.
    fn replica_put(&self, req: pb::ReplicaPutRequest) -> Call<pb::ReplicaPutResponse>;
    /// The peer's state of a key.
    fn replica_get(&self, req: pb::ReplicaGetRequest) -> Call<pb::ReplicaGetResponse>;
    /// Coordinate a client write on the peer.
    fn coordinate_put(&self, req: pb::CoordinatePutRequest) -> Call<pb::CoordinatePutResponse>;
    /// Coordinate a read-modify-write on the peer.
    fn coordinate_rmw(&self, req: pb::CoordinateRmwRequest) -> Call<pb::CoordinateRmwResponse>;
    /// The peer's items of a table in a key range.
    fn replica_scan(&self, req: pb::ReplicaScanRequest) -> Call<pb::ReplicaScanResponse>;
    /// Exchange catalogs.
    fn push_catalog(&self, req: pb::Catalog) -> Call<pb::Catalog>;
    /// Push-pull gossip.
    fn gossip(&self, req: pb::GossipMessage) -> Call<pb::GossipMessage>;
    /// Begin a ring change on the peer (the change leader).
    fn begin_change(&self, req: pb::BeginChangeRequest) -> Call<pb::BeginChangeResponse>;
    /// Merkle roots of some partitions.
    fn merkle_roots(&self, req: pb::MerkleRootsRequest) -> Call<pb::MerkleRootsResponse>;
    /// Children of some Merkle nodes.
    fn merkle_children(&self, req: pb::MerkleChildrenRequest) -> Call<pb::MerkleChildrenResponse>;
    /// Key digests in some leaves, or of named keys.
    fn key_digests(&self, req: pb::KeyDigestsRequest) -> Call<pb::KeyDigestsResponse>;
    /// Stored objects of named keys.
    fn fetch_items(&self, req: pb::FetchItemsRequest) -> Call<pb::ItemBatch>;
    /// Merge items into the peer's replicas.
    fn push_items(&self, req: pb::ItemBatch) -> Call<pb::PushItemsResponse>;
    /// Remove tombstones every replica holds.
    fn drop_tombstones(&self, req: pb::DropTombstonesRequest) -> Call<pb::DropTombstonesResponse>;
    /// One page of a partition, for handoff.
    fn stream_partition(&self, req: pb::StreamPartitionRequest) -> Call<pb::ItemBatch>;
}

/// Makes clients for peer addresses (given as `http://host:port`).
pub trait Connector: Send + Sync + fmt::Debug {
    /// A client for `rpc_url`. Connecting is lazy: a dead address fails on
    /// the first call, not here.
    fn connect(&self, rpc_url: &str) -> Arc<dyn PeerClient>;
}

/// The production connector: tonic over HTTP/2, with a per-call timeout;
/// over mutual TLS when the node has TLS material.
#[derive(Debug, Clone)]
pub struct TonicConnector {
    /// The timeout of each call.
    pub timeout: Duration,
    /// How replica puts and gets travel.
    pub transport: ReplicaTransport,
    /// The node's link counters.
    pub link_stats: crate::link::Stats,
    /// This node's TLS material: peers are reached over TLS (whatever the
    /// scheme of their address), must present a certificate of the
    /// cluster's CA, and are shown this node's.
    pub tls: Option<Arc<dyno_tls::Tls>>,
}

impl Connector for TonicConnector {
    fn connect(&self, rpc_url: &str) -> Arc<dyn PeerClient> {
        Arc::new(TonicPeer::new(
            rpc_url,
            self.timeout,
            self.transport,
            self.tls.clone(),
            self.link_stats.clone(),
        ))
    }
}

/// A peer reached over tonic (cheap to share; one HTTP/2 connection).
/// Replica puts and gets travel on the connection's replica pipe
/// (`pipe.rs`); everything else is a unary call.
#[derive(Debug, Clone)]
pub struct TonicPeer {
    client: ReplicaClient<Channel>,
    pipe: Arc<Pipe>,
}

impl TonicPeer {
    /// A lazily connecting client for `rpc_url`; replica puts and gets go
    /// over `transport` (counted in `link_stats`); over TLS with `tls`. A malformed URL gives a
    /// client whose every call fails as unreachable.
    pub fn new(
        rpc_url: &str,
        timeout: Duration,
        transport: ReplicaTransport,
        tls: Option<Arc<dyno_tls::Tls>>,
        link_stats: crate::link::Stats,
    ) -> TonicPeer {
        let channel = Endpoint::from_shared(rpc_url.to_owned())
            .map(|e| {
                let e = e
                    .connect_timeout(Duration::from_millis(500))
                    .timeout(timeout)
                    .tcp_nodelay(true);
                match &tls {
                    Some(tls) => {
                        e.connect_with_connector_lazy(dyno_tls::TlsConnector::new(Arc::clone(tls)))
                    }
                    None => e.connect_lazy(),
                }
            })
            .unwrap_or_else(|_| Endpoint::from_static("http://127.0.0.1:1").connect_lazy());
        let client = ReplicaClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        TonicPeer {
            pipe: Arc::new(Pipe::new(
                client.clone(),
                rpc_url,
                transport,
                tls,
                link_stats,
            )),
            client,
        }
    }
}

macro_rules! unary_calls {
    ($($method:ident($req:ty) -> $resp:ty => $rpc:ident;)*) => {
        $(
            fn $method(&self, req: $req) -> Call<$resp> {
                let mut c = self.client.clone();
                Box::pin(async move { c.$rpc(req).await.map(tonic::Response::into_inner) })
            }
        )*
    };
}

impl PeerClient for TonicPeer {
    fn replica_put(&self, req: pb::ReplicaPutRequest) -> Call<pb::ReplicaPutResponse> {
        let pipe = Arc::clone(&self.pipe);
        Box::pin(async move { pipe.put(req).await })
    }

    fn replica_get(&self, req: pb::ReplicaGetRequest) -> Call<pb::ReplicaGetResponse> {
        let pipe = Arc::clone(&self.pipe);
        Box::pin(async move { pipe.get(req).await })
    }

    unary_calls! {
    coordinate_put(pb::CoordinatePutRequest) -> pb::CoordinatePutResponse => coordinate_put;
    coordinate_rmw(pb::CoordinateRmwRequest) -> pb::CoordinateRmwResponse => coordinate_rmw;
    replica_scan(pb::ReplicaScanRequest) -> pb::ReplicaScanResponse => replica_scan;
    push_catalog(pb::Catalog) -> pb::Catalog => push_catalog;
    gossip(pb::GossipMessage) -> pb::GossipMessage => gossip;
    begin_change(pb::BeginChangeRequest) -> pb::BeginChangeResponse => begin_change;
    merkle_roots(pb::MerkleRootsRequest) -> pb::MerkleRootsResponse => merkle_roots;
    merkle_children(pb::MerkleChildrenRequest) -> pb::MerkleChildrenResponse => merkle_children;
    key_digests(pb::KeyDigestsRequest) -> pb::KeyDigestsResponse => key_digests;
    fetch_items(pb::FetchItemsRequest) -> pb::ItemBatch => fetch_items;
    push_items(pb::ItemBatch) -> pb::PushItemsResponse => push_items;
    drop_tombstones(pb::DropTombstonesRequest) -> pb::DropTombstonesResponse => drop_tombstones;
    stream_partition(pb::StreamPartitionRequest) -> pb::ItemBatch => stream_partition;
    }
}
