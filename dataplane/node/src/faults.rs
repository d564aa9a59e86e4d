//! Fault injection, for tests and nemesis runs only: compiled in, off
//! unless `dyno node --fault-injection` is given (the admin API then
//! answers under `/admin/v1/faults`; without the flag it refuses).
//!
//! * Link faults: calls from this node to a chosen peer are dropped (never
//!   sent; they fail as timed out after the replica timeout, as a lost
//!   packet would) or delayed. Set on both ends, they partition two real
//!   processes on loopback; on one end, the link fails one way.
//! * Damage: one bit of a stored item is flipped, as a bad disk would
//!   (`Replica::damage_item`).
//! * A slow disk: the group commit's fsyncs (`--durability sync`) take at
//!   least a given time, as on a disk whose flushes stall.
//!
//! The wrapper sits between the node and its [`Connector`], so every
//! caller (coordinator, gossip, hints, anti-entropy, handoff) sees the
//! faults exactly as it would see a bad network.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use dyno_proto::internal as pb;
use serde::{Deserialize, Serialize};

use crate::peer::{Call, Connector, PeerClient};

/// What happens to calls on one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkFault {
    /// Calls are never sent and fail as timed out.
    #[serde(default)]
    pub drop: bool,
    /// Calls wait this long before they are sent.
    #[serde(default)]
    pub delay_ms: u64,
}

/// What happens to this node's disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskFault {
    /// Each fsync of the group commit takes at least this long (0: as
    /// fast as the disk).
    #[serde(default)]
    pub fsync_delay_ms: u64,
}

/// The faults in force: link faults by the peer's RPC URL, and the disk's.
#[derive(Debug, Default)]
pub struct Faults {
    links: RwLock<BTreeMap<String, LinkFault>>,
    fsync_delay_ms: AtomicU64,
}

impl Faults {
    /// Replaces every link fault.
    pub fn set_links(&self, links: BTreeMap<String, LinkFault>) {
        *self.links.write().unwrap_or_else(|e| e.into_inner()) = links;
    }

    /// Replaces the disk fault.
    pub fn set_disk(&self, disk: DiskFault) {
        self.fsync_delay_ms
            .store(disk.fsync_delay_ms, Ordering::SeqCst);
    }

    /// Blocks (the calling thread: an fsync's blocking thread) while the
    /// disk fault delays fsyncs, until the delay has passed since the call
    /// or the fault is lifted.
    pub fn delay_fsync(&self) {
        let started = Instant::now();
        loop {
            let delay = Duration::from_millis(self.fsync_delay_ms.load(Ordering::SeqCst));
            let left = delay.saturating_sub(started.elapsed());
            if left.is_zero() {
                return;
            }
            // In short steps, so that lifting the fault ends the wait.
            std::thread::sleep(left.min(Duration::from_millis(10)));
        }
    }

    /// The fault on the link to `rpc_url`, if any.
    fn link(&self, rpc_url: &str) -> Option<LinkFault> {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        if links.is_empty() {
            return None;
        }
        links.get(rpc_url).copied()
    }
}

/// A [`Connector`] whose peers obey the [`Faults`].
pub struct FaultyConnector {
    inner: Arc<dyn Connector>,
    faults: Arc<Faults>,
    timeout: Duration,
}

impl fmt::Debug for FaultyConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyConnector").finish_non_exhaustive()
    }
}

impl FaultyConnector {
    /// Wraps `inner`; a dropped call fails after `timeout`.
    pub fn new(inner: Arc<dyn Connector>, faults: Arc<Faults>, timeout: Duration) -> Self {
        FaultyConnector {
            inner,
            faults,
            timeout,
        }
    }
}

impl Connector for FaultyConnector {
    fn connect(&self, rpc_url: &str) -> Arc<dyn PeerClient> {
        Arc::new(FaultyPeer {
            inner: self.inner.connect(rpc_url),
            url: rpc_url.to_owned(),
            faults: Arc::clone(&self.faults),
            timeout: self.timeout,
        })
    }
}

#[derive(Debug)]
struct FaultyPeer {
    inner: Arc<dyn PeerClient>,
    url: String,
    faults: Arc<Faults>,
    timeout: Duration,
}

impl FaultyPeer {
    fn call<T: Send + 'static>(&self, make: impl FnOnce() -> Call<T>) -> Call<T> {
        let Some(fault) = self.faults.link(&self.url) else {
            return make();
        };
        let timeout = self.timeout;
        let sent = (!fault.drop).then(make);
        Box::pin(async move {
            if fault.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
            }
            match sent {
                Some(call) => call.await,
                None => {
                    tokio::time::sleep(timeout).await;
                    Err(tonic::Status::deadline_exceeded(
                        "dropped by fault injection",
                    ))
                }
            }
        })
    }
}

macro_rules! faulty_calls {
    ($($method:ident($req:ty) -> $resp:ty;)*) => {
        $(
            fn $method(&self, req: $req) -> Call<$resp> {
                let inner = Arc::clone(&self.inner);
                self.call(move || inner.$method(req))
            }
        )*
    };
}

impl PeerClient for FaultyPeer {
    faulty_calls! {
        replica_put(pb::ReplicaPutRequest) -> pb::ReplicaPutResponse;
        replica_get(pb::ReplicaGetRequest) -> pb::ReplicaGetResponse;
        coordinate_put(pb::CoordinatePutRequest) -> pb::CoordinatePutResponse;
        coordinate_rmw(pb::CoordinateRmwRequest) -> pb::CoordinateRmwResponse;
        replica_scan(pb::ReplicaScanRequest) -> pb::ReplicaScanResponse;
        push_catalog(pb::Catalog) -> pb::Catalog;
        gossip(pb::GossipMessage) -> pb::GossipMessage;
        begin_change(pb::BeginChangeRequest) -> pb::BeginChangeResponse;
        merkle_roots(pb::MerkleRootsRequest) -> pb::MerkleRootsResponse;
        merkle_children(pb::MerkleChildrenRequest) -> pb::MerkleChildrenResponse;
        key_digests(pb::KeyDigestsRequest) -> pb::KeyDigestsResponse;
        fetch_items(pb::FetchItemsRequest) -> pb::ItemBatch;
        push_items(pb::ItemBatch) -> pb::PushItemsResponse;
        drop_tombstones(pb::DropTombstonesRequest) -> pb::DropTombstonesResponse;
        stream_partition(pb::StreamPartitionRequest) -> pb::ItemBatch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A peer that answers every gossip at once and counts the calls.
    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    impl Connector for Arc<Counting> {
        fn connect(&self, _: &str) -> Arc<dyn PeerClient> {
            Arc::new(CountingPeer(Arc::clone(self)))
        }
    }

    #[derive(Debug)]
    struct CountingPeer(Arc<Counting>);

    macro_rules! unreachable_calls {
        ($($method:ident($req:ty) -> $resp:ty;)*) => {
            $(fn $method(&self, _: $req) -> Call<$resp> {
                Box::pin(async { Err(tonic::Status::unimplemented("not in this test")) })
            })*
        };
    }

    impl PeerClient for CountingPeer {
        fn gossip(&self, req: pb::GossipMessage) -> Call<pb::GossipMessage> {
            self.0.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(req) })
        }
        unreachable_calls! {
            replica_put(pb::ReplicaPutRequest) -> pb::ReplicaPutResponse;
            replica_get(pb::ReplicaGetRequest) -> pb::ReplicaGetResponse;
            coordinate_put(pb::CoordinatePutRequest) -> pb::CoordinatePutResponse;
            coordinate_rmw(pb::CoordinateRmwRequest) -> pb::CoordinateRmwResponse;
            replica_scan(pb::ReplicaScanRequest) -> pb::ReplicaScanResponse;
            push_catalog(pb::Catalog) -> pb::Catalog;
            begin_change(pb::BeginChangeRequest) -> pb::BeginChangeResponse;
            merkle_roots(pb::MerkleRootsRequest) -> pb::MerkleRootsResponse;
            merkle_children(pb::MerkleChildrenRequest) -> pb::MerkleChildrenResponse;
            key_digests(pb::KeyDigestsRequest) -> pb::KeyDigestsResponse;
            fetch_items(pb::FetchItemsRequest) -> pb::ItemBatch;
            push_items(pb::ItemBatch) -> pb::PushItemsResponse;
            drop_tombstones(pb::DropTombstonesRequest) -> pb::DropTombstonesResponse;
            stream_partition(pb::StreamPartitionRequest) -> pb::ItemBatch;
        }
    }

    /// A dropped link never reaches the peer and fails as a timeout after
    /// the call timeout; a delayed one arrives late; other links and a
    /// cleared rule are untouched.
    #[tokio::test(start_paused = true)]
    async fn dropped_calls_time_out_and_delayed_calls_arrive_late() {
        let counting = Arc::new(Counting::default());
        let faults = Arc::new(Faults::default());
        let inner: Arc<dyn Connector> = Arc::new(Arc::clone(&counting));
        let connector =
            FaultyConnector::new(inner, Arc::clone(&faults), Duration::from_millis(500));
        let (a, b) = (connector.connect("http://a"), connector.connect("http://b"));
        faults.set_links(BTreeMap::from([
            (
                "http://a".to_owned(),
                LinkFault {
                    drop: true,
                    delay_ms: 0,
                },
            ),
            (
                "http://b".to_owned(),
                LinkFault {
                    drop: false,
                    delay_ms: 80,
                },
            ),
        ]));
        let start = tokio::time::Instant::now();
        let err = a
            .gossip(pb::GossipMessage::default())
            .await
            .expect_err("dropped");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert_eq!(counting.0.load(Ordering::SeqCst), 0, "never sent");

        let start = tokio::time::Instant::now();
        b.gossip(pb::GossipMessage::default())
            .await
            .expect("delayed");
        assert_eq!(start.elapsed(), Duration::from_millis(80));
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);

        faults.set_links(BTreeMap::new());
        let start = tokio::time::Instant::now();
        a.gossip(pb::GossipMessage::default())
            .await
            .expect("healed");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(counting.0.load(Ordering::SeqCst), 2);
    }
}
