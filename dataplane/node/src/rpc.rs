//! The internal gRPC service: what peers ask of this node.

use std::future::Future;
use std::sync::Arc;

use dyno_core::codec::{decode_object, encode_object};
use dyno_core::{NodeId, Object};
use dyno_proto::internal as pb;
use dyno_proto::internal::replica_server::Replica as ReplicaRpc;
use tonic::{Request, Response, Status};

use crate::link;
use crate::node::Node;
use crate::replica::{Reads, Replica, ReplicaError};
use crate::service::Service;
use crate::wire::{catalog_from_pb, catalog_to_pb, error_to_pb, mode_from_pb, mode_to_pb};

/// The most entries one replica scan returns (a page of Query or Scan).
const MAX_SCAN_ENTRIES: usize = 2000;

/// The tonic service: an adapter over the node's parts for its peers.
#[derive(Debug, Clone)]
pub struct RpcService {
    node: Arc<Node>,
    service: Service,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl RpcService {
    /// Serves `service` to peers until `stop` turns true (then open replica
    /// pipes end, so that the server's graceful shutdown can finish).
    pub fn new(service: Service, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        RpcService {
            node: Arc::clone(service.node()),
            service,
            stop,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// Merges a replica put into the replica, or into the hint it holds for
/// `hint_for`; true if anything was written.
fn store_put(
    r: &Replica,
    table: &str,
    key: &[u8],
    object: &Object,
    hint_for: Option<&NodeId>,
    mode: dyno_core::ConflictMode,
    reads: Reads,
) -> Result<bool, ReplicaError> {
    match hint_for {
        Some(target) => r
            .store_hint_deferred(target, table, key, object, mode, reads)
            .map(|()| true),
        None => r.merge_item_deferred(table, key, object, mode, reads),
    }
}

/// Merges a replica put (or stores it as a hint).
async fn replica_put(
    node: &Node,
    req: pb::ReplicaPutRequest,
) -> Result<pb::ReplicaPutResponse, Status> {
    let object = decode_object(&req.object).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mode = mode_from_pb(req.conflict);
    let hint_for = match req.hint_for.as_deref() {
        Some(h) => Some(NodeId::new(h).map_err(|e| Status::invalid_argument(e.to_string()))?),
        None => None,
    };
    let r = node.replica();
    let written = node
        .local(
            |reads| {
                store_put(
                    r,
                    &req.table,
                    &req.key,
                    &object,
                    hint_for.as_ref(),
                    mode,
                    reads,
                )
            },
            || {
                let (r, t, k) = (Arc::clone(r), req.table.clone(), req.key.clone());
                let (object, hint_for) = (object.clone(), hint_for.clone());
                move |reads| store_put(&r, &t, &k, &object, hint_for.as_ref(), mode, reads)
            },
        )
        .await
        .map_err(internal)?;
    if written {
        node.durable().await.map_err(internal)?;
    }
    Ok(pb::ReplicaPutResponse {})
}

/// This node's state of a key (replica and hints).
async fn replica_get(
    node: &Node,
    req: pb::ReplicaGetRequest,
) -> Result<pb::ReplicaGetResponse, Status> {
    let mode = mode_from_pb(req.conflict);
    let r = node.replica();
    let state = node
        .local(
            |reads| r.get_with_hints(&req.table, &req.key, mode, reads),
            || {
                let (r, t, k) = (Arc::clone(r), req.table.clone(), req.key.clone());
                move |reads| r.get_with_hints(&t, &k, mode, reads)
            },
        )
        .await
        .map_err(internal)?;
    Ok(pb::ReplicaGetResponse {
        object: state.as_ref().map(|o| encode_object(o).into()),
    })
}

/// Serves one frame of a replica pipe or link; the reply carries the
/// frame's id.
async fn serve_frame(node: &Node, frame: pb::PipeFrame) -> pb::PipeFrame {
    use pb::pipe_frame::Body;
    let body = match frame.body {
        Some(Body::Put(req)) => replica_put(node, req).await.map(Body::PutOk),
        Some(Body::Get(req)) => replica_get(node, req).await.map(Body::GetOk),
        _ => Err(Status::invalid_argument(
            "a pipe frame must carry a put or a get",
        )),
    };
    pb::PipeFrame {
        id: frame.id,
        body: Some(body.unwrap_or_else(|s| {
            Body::Error(pb::PipeError {
                code: s.code() as i32,
                message: s.message().to_owned(),
            })
        })),
    }
}

/// Serves one replica link (`link.rs`) whose magic has been read: answers
/// it, then serves its frames until the peer closes it, it breaks, or this
/// node stops (replies in flight are still sent).
///
/// A frame is served inline on the connection's reader when it completes
/// without waiting (a read; a write under periodic durability), and on a
/// task of its own when it must wait (a write awaiting its fsync under
/// `--durability sync`), so a waiting write never holds up the frames
/// behind it.
pub async fn serve_link<IO: link::Io + 'static>(
    node: Arc<Node>,
    mut io: IO,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::AsyncWriteExt;
    if io.write_all(link::MAGIC).await.is_err() {
        return;
    }
    let (r, w) = tokio::io::split(io);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stats = node.metrics().link().clone();
    let writer = tokio::spawn(link::write_frames(w, rx, stats));
    let read = link::read_frames(r, |frame| {
        let node = Arc::clone(&node);
        let mut served = Box::pin(async move { serve_frame(&node, frame).await });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match served.as_mut().poll(&mut cx) {
            // The peer may be gone; its calls then fail on its side.
            std::task::Poll::Ready(reply) => drop(tx.send(reply)),
            std::task::Poll::Pending => {
                // Polled again on its task, which registers a real waker.
                let tx = tx.clone();
                tokio::spawn(async move { tx.send(served.await).ok() });
            }
        }
    });
    let ended = tokio::select! {
        r = read => r,
        _ = stop.wait_for(|s| *s) => Ok(()),
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "replica link from a peer ended");
    }
    drop(tx);
    if let Ok(Err(e)) = writer.await {
        tracing::debug!(error = %e, "replica link to a peer failed while answering");
    }
}

type PipeStream = std::pin::Pin<
    Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<pb::PipeFrame, Status>> + Send>,
>;

#[tonic::async_trait]
impl ReplicaRpc for RpcService {
    async fn put(
        &self,
        request: Request<pb::ReplicaPutRequest>,
    ) -> Result<Response<pb::ReplicaPutResponse>, Status> {
        replica_put(&self.node, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get(
        &self,
        request: Request<pb::ReplicaGetRequest>,
    ) -> Result<Response<pb::ReplicaGetResponse>, Status> {
        replica_get(&self.node, request.into_inner())
            .await
            .map(Response::new)
    }

    type PipeStream = PipeStream;

    /// Serves a peer's replica pipe: each frame is handled on its own task
    /// (a slow read does not hold up the writes behind it) and its reply is
    /// sent back as soon as it is ready.
    async fn pipe(
        &self,
        request: Request<tonic::Streaming<pb::PipeFrame>>,
    ) -> Result<Response<Self::PipeStream>, Status> {
        let mut frames = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let node = Arc::clone(&self.node);
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            // Ends when the peer closes its side, the stream breaks, or this
            // node shuts down; the reply stream ends once every frame in
            // flight has answered. (A pipe that never ended would hold the
            // server's graceful shutdown forever.)
            loop {
                let frame = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    f = frames.message() => match f {
                        Ok(Some(f)) => f,
                        _ => break,
                    },
                };
                let (node, tx) = (Arc::clone(&node), tx.clone());
                tokio::spawn(async move {
                    // The peer may be gone; its calls then fail on its side.
                    tx.send(Ok(serve_frame(&node, frame).await)).ok();
                });
            }
        });
        Ok(Response::new(Box::pin(
            tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        )))
    }

    async fn coordinate_put(
        &self,
        request: Request<pb::CoordinatePutRequest>,
    ) -> Result<Response<pb::CoordinatePutResponse>, Status> {
        let req = request.into_inner();
        let deadline = tokio::time::Instant::now()
            + match req.timeout_ms {
                0 => self.node.timeout() * 3,
                ms => std::time::Duration::from_millis(u64::from(ms)),
            };
        let condition = crate::service::Condition::from_fields(req.if_match, req.if_none_match);
        let res = async {
            let cfg = self.node.table(&req.table)?;
            let put = crate::service::put_request(
                req.table,
                req.key,
                req.value,
                req.context.as_deref(),
                req.w as usize,
                &condition,
            )?;
            self.node.route_put(cfg, put, req.hops, deadline).await
        }
        .await;
        let resp = match res {
            Ok(r) => pb::CoordinatePutResponse {
                context: r.context,
                error: None,
            },
            Err(e) => pb::CoordinatePutResponse {
                context: String::new(),
                error: Some(error_to_pb(&e)),
            },
        };
        Ok(Response::new(resp))
    }

    async fn coordinate_rmw(
        &self,
        request: Request<pb::CoordinateRmwRequest>,
    ) -> Result<Response<pb::CoordinateRmwResponse>, Status> {
        let req = request.into_inner();
        let deadline = tokio::time::Instant::now()
            + match req.timeout_ms {
                0 => self.node.timeout() * 4,
                ms => std::time::Duration::from_millis(u64::from(ms)),
            };
        let res = async {
            if req.kind != "dynamodb" {
                return Err(crate::error::ServiceError::new(
                    crate::error::ErrorCode::InvalidRequest,
                    format!("unknown read-modify-write kind {:?}", req.kind),
                ));
            }
            let cfg = self.node.table(&req.table)?;
            self.node
                .route_rmw(cfg, &req.table, &req.key, req.op, req.hops, deadline)
                .await
        }
        .await;
        Ok(Response::new(match res {
            Ok(reply) => pb::CoordinateRmwResponse { reply, error: None },
            Err(e) => pb::CoordinateRmwResponse {
                reply: Vec::new(),
                error: Some(error_to_pb(&e)),
            },
        }))
    }

    async fn replica_scan(
        &self,
        request: Request<pb::ReplicaScanRequest>,
    ) -> Result<Response<pb::ReplicaScanResponse>, Status> {
        let req = request.into_inner();
        let replica = Arc::clone(self.node.replica());
        let limit = (req.limit as usize).clamp(1, MAX_SCAN_ENTRIES);
        let page = crate::sys::blocking(move || {
            replica.scan_table(
                &req.table,
                &req.start,
                req.end.as_deref(),
                limit,
                req.reverse,
            )
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        Ok(Response::new(pb::ReplicaScanResponse {
            items: page
                .items
                .into_iter()
                .map(|(item_key, o)| pb::Item {
                    item_key,
                    object: encode_object(&o),
                    conflict: 0,
                })
                .collect(),
            resume: page.resume,
        }))
    }

    async fn push_catalog(
        &self,
        request: Request<pb::Catalog>,
    ) -> Result<Response<pb::Catalog>, Status> {
        let (catalog, incoming) = (Arc::clone(self.node.catalog()), request.into_inner());
        crate::sys::blocking(move || {
            catalog_from_pb(&incoming)
                .into_iter()
                .try_for_each(|entry| catalog.merge_record(entry).map(|_| ()))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        Ok(Response::new(catalog_to_pb(&self.node.catalog().records())))
    }

    async fn ping(
        &self,
        _: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(pb::PingResponse {
            node_id: self.node.me().to_string(),
            generation: self.node.cluster().local().generation,
        }))
    }

    async fn gossip(
        &self,
        request: Request<pb::GossipMessage>,
    ) -> Result<Response<pb::GossipMessage>, Status> {
        let msg = request.into_inner();
        let cluster = self.node.cluster();
        crate::gossip::absorb(cluster, &msg);
        Ok(Response::new(crate::gossip::message(cluster)))
    }

    async fn merkle_roots(
        &self,
        request: Request<pb::MerkleRootsRequest>,
    ) -> Result<Response<pb::MerkleRootsResponse>, Status> {
        let req = request.into_inner();
        let trees = &self.node.replica().trees;
        let roots = req
            .partitions
            .iter()
            .map(|&p| trees.root((req.n, p)))
            .collect();
        Ok(Response::new(pb::MerkleRootsResponse { roots }))
    }

    async fn merkle_children(
        &self,
        request: Request<pb::MerkleChildrenRequest>,
    ) -> Result<Response<pb::MerkleChildrenResponse>, Status> {
        let req = request.into_inner();
        let trees = &self.node.replica().trees;
        if req.level >= u32::from(trees.shape().depth) || req.indices.len() > 1 << 16 {
            return Err(Status::invalid_argument("level or indices out of range"));
        }
        let mut hashes = Vec::new();
        for &i in &req.indices {
            hashes.extend(trees.children((req.n, req.partition), req.level as usize, i as usize));
        }
        Ok(Response::new(pb::MerkleChildrenResponse { hashes }))
    }

    async fn key_digests(
        &self,
        request: Request<pb::KeyDigestsRequest>,
    ) -> Result<Response<pb::KeyDigestsResponse>, Status> {
        let req = request.into_inner();
        let node = Arc::clone(&self.node);
        let entries = crate::sys::blocking(move || {
            if req.item_keys.is_empty() {
                let leaves: Vec<(u32, u32)> =
                    req.leaves.iter().map(|l| (l.first, l.last)).collect();
                crate::aae::digests_in_leaves(&node, req.n, req.partition, &leaves)
            } else {
                node.replica()
                    .digests_of(&req.item_keys)
                    .map_err(|e| e.to_string())
            }
        })
        .await
        .map_err(internal)?
        .map_err(Status::internal)?;
        Ok(Response::new(pb::KeyDigestsResponse {
            entries: entries
                .into_iter()
                .map(|(item_key, digest)| pb::KeyDigest { item_key, digest })
                .collect(),
        }))
    }

    async fn fetch_items(
        &self,
        request: Request<pb::FetchItemsRequest>,
    ) -> Result<Response<pb::ItemBatch>, Status> {
        let req = request.into_inner();
        let node = Arc::clone(&self.node);
        let items = crate::sys::blocking(move || {
            node.replica().fetch_raw(&req.item_keys).map(|found| {
                found
                    .into_iter()
                    .map(|(item_key, object)| {
                        let mode = node.catalog().mode_of_item(&item_key).unwrap_or_default();
                        pb::Item {
                            item_key,
                            object,
                            conflict: mode_to_pb(mode),
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        Ok(Response::new(pb::ItemBatch {
            items,
            next_key: None,
        }))
    }

    async fn push_items(
        &self,
        request: Request<pb::ItemBatch>,
    ) -> Result<Response<pb::PushItemsResponse>, Status> {
        let req = request.into_inner();
        let node = Arc::clone(&self.node);
        let changed = crate::sys::blocking(move || -> Result<u32, Status> {
            let mut changed = 0;
            for item in &req.items {
                dyno_core::keys::decode_item_key(&item.item_key)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                let obj = decode_object(&item.object)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                let mode = crate::wire::item_mode(node.catalog(), item);
                if node
                    .replica()
                    .merge_raw(&item.item_key, &obj, mode)
                    .map_err(internal)?
                {
                    changed += 1;
                }
            }
            Ok(changed)
        })
        .await
        .map_err(internal)??;
        Ok(Response::new(pb::PushItemsResponse { changed }))
    }

    async fn drop_tombstones(
        &self,
        request: Request<pb::DropTombstonesRequest>,
    ) -> Result<Response<pb::DropTombstonesResponse>, Status> {
        let req = request.into_inner();
        let node = Arc::clone(&self.node);
        let dropped = crate::sys::blocking(move || -> Result<u32, Status> {
            let mut dropped = 0;
            for e in &req.entries {
                // Only a tombstone is ever removed this way, and only at the
                // version the collector saw everywhere.
                let is_tombstone = node
                    .replica()
                    .fetch_raw(std::slice::from_ref(&e.item_key))
                    .map_err(internal)?
                    .first()
                    .and_then(|(_, raw)| decode_object(raw).ok())
                    .is_some_and(|o| o.is_tombstone());
                if is_tombstone
                    && node
                        .replica()
                        .remove_item(&e.item_key, Some(e.digest))
                        .map_err(internal)?
                {
                    dropped += 1;
                }
            }
            Ok(dropped)
        })
        .await
        .map_err(internal)??;
        node_metrics_dropped(&self.node, dropped);
        Ok(Response::new(pb::DropTombstonesResponse { dropped }))
    }

    async fn stream_partition(
        &self,
        request: Request<pb::StreamPartitionRequest>,
    ) -> Result<Response<pb::ItemBatch>, Status> {
        let req = request.into_inner();
        let node = Arc::clone(&self.node);
        let batch = crate::sys::blocking(move || crate::handoff::stream_page(&node, &req))
            .await
            .map_err(internal)??;
        Ok(Response::new(batch))
    }

    async fn begin_change(
        &self,
        request: Request<pb::BeginChangeRequest>,
    ) -> Result<Response<pb::BeginChangeResponse>, Status> {
        let req = request.into_inner();
        let id = NodeId::new(&req.node).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let action = if req.abort {
            crate::change::Action::Abort
        } else if req.set_zone {
            crate::change::Action::SetZone
        } else if req.decommission {
            crate::change::Action::Decommission
        } else {
            crate::change::Action::Join
        };
        let resp = match crate::change::begin_here(
            &self.node,
            self.service.leader(),
            action,
            id,
            req.zone,
        )
        .await
        {
            Ok(b) => pb::BeginChangeResponse {
                epoch: b.epoch,
                moved: b.moved,
                reassigned: b.reassigned,
                total: b.total,
                error: None,
            },
            Err(e) => pb::BeginChangeResponse {
                error: Some(error_to_pb(&e)),
                ..Default::default()
            },
        };
        Ok(Response::new(resp))
    }
}

fn node_metrics_dropped(node: &Node, dropped: u32) {
    node.metrics().tombstones_dropped.inc_by(u64::from(dropped));
}
