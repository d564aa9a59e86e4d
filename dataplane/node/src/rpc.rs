//! The internal gRPC service: what peers ask of this node.

use std::sync::Arc;

use dyno_core::NodeId;
use dyno_core::codec::{decode_object, encode_object};
use dyno_proto::internal as pb;
use dyno_proto::internal::replica_server::Replica as ReplicaRpc;
use tonic::{Request, Response, Status};

use crate::catalog::{TableConfig, TableEntry};
use crate::node::{Node, PutRequest, mode_from_pb, mode_to_pb};

/// The tonic service.
#[derive(Debug, Clone)]
pub struct RpcService {
    node: Arc<Node>,
}

impl RpcService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        RpcService { node }
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// Catalog entries in wire form.
pub fn catalog_to_pb(entries: &[TableEntry]) -> pb::Catalog {
    pb::Catalog {
        tables: entries
            .iter()
            .map(|e| pb::TableEntry {
                name: e.name.clone(),
                n: e.config.n,
                r: e.config.r,
                w: e.config.w,
                conflict: mode_to_pb(e.config.mode()),
                version: e.version,
                deleted: false,
            })
            .collect(),
    }
}

/// Catalog entries from wire form (invalid ones are skipped).
pub fn catalog_from_pb(c: &pb::Catalog) -> Vec<TableEntry> {
    c.tables
        .iter()
        .filter(|t| crate::catalog::validate_table_name(&t.name).is_ok())
        .map(|t| TableEntry {
            name: t.name.clone(),
            config: TableConfig {
                n: t.n,
                r: t.r,
                w: t.w,
                conflict: mode_from_pb(t.conflict).into(),
            },
            version: t.version,
        })
        .collect()
}

#[tonic::async_trait]
impl ReplicaRpc for RpcService {
    async fn put(
        &self,
        request: Request<pb::ReplicaPutRequest>,
    ) -> Result<Response<pb::ReplicaPutResponse>, Status> {
        let req = request.into_inner();
        let object =
            decode_object(&req.object).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mode = mode_from_pb(req.conflict);
        let hint_for = match req.hint_for.as_deref() {
            Some(h) => Some(NodeId::new(h).map_err(|e| Status::invalid_argument(e.to_string()))?),
            None => None,
        };
        let replica = Arc::clone(&self.node.replica);
        tokio::task::spawn_blocking(move || match hint_for {
            Some(target) => replica.store_hint(&target, &req.table, &req.key, &object, mode),
            None => replica.merge_item(&req.table, &req.key, &object, mode),
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        Ok(Response::new(pb::ReplicaPutResponse {}))
    }

    async fn get(
        &self,
        request: Request<pb::ReplicaGetRequest>,
    ) -> Result<Response<pb::ReplicaGetResponse>, Status> {
        let req = request.into_inner();
        let mode = mode_from_pb(req.conflict);
        let (replica, members) = (Arc::clone(&self.node.replica), self.node.members.clone());
        let state = tokio::task::spawn_blocking(move || {
            replica.get_with_hints(&req.table, &req.key, mode, &members)
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        Ok(Response::new(pb::ReplicaGetResponse {
            object: state.as_ref().map(encode_object),
        }))
    }

    async fn coordinate_put(
        &self,
        request: Request<pb::CoordinatePutRequest>,
    ) -> Result<Response<pb::CoordinatePutResponse>, Status> {
        let req = request.into_inner();
        let context = crate::api::write_context(req.context.as_deref())?;
        let condition = crate::api::condition(req.if_match.as_deref(), req.if_none_match)?;
        let put = PutRequest {
            table: req.table,
            key: req.key,
            value: req.value.map(bytes::Bytes::from),
            context,
            w: req.w as usize,
            condition,
        };
        let resp = match self.node.coordinate_put(put, false).await {
            Ok(r) => pb::CoordinatePutResponse {
                context: r.context,
                error_code: None,
                error_message: None,
            },
            Err(e) => pb::CoordinatePutResponse {
                context: String::new(),
                error_code: Some(e.code().to_owned()),
                error_message: Some(e.to_string()),
            },
        };
        Ok(Response::new(resp))
    }

    async fn push_catalog(
        &self,
        request: Request<pb::Catalog>,
    ) -> Result<Response<pb::Catalog>, Status> {
        for entry in catalog_from_pb(&request.into_inner()) {
            self.node.catalog.merge(entry).map_err(internal)?;
        }
        Ok(Response::new(catalog_to_pb(&self.node.catalog.list())))
    }

    async fn ping(
        &self,
        _: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(pb::PingResponse {
            node_id: self.node.me.to_string(),
            generation: self.node.generation,
        }))
    }
}
