//! The public gRPC API (`proto/dyno.proto`): the same operations as the
//! HTTP API, through the same validation (`api.rs`) and the same node
//! methods. Errors map to gRPC codes here; the Dyno error code travels in
//! the `dyno-error-code` metadata entry.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dyno_proto::public as pb;
use dyno_proto::public::dyno_server::Dyno;
use tonic::{Request, Response, Status};

use crate::api;
use crate::error::ApiError;
use crate::node::{Node, PutRequest};

/// The public gRPC service.
#[derive(Debug, Clone)]
pub struct PublicApi {
    node: Arc<Node>,
}

impl PublicApi {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        PublicApi { node }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        use tonic::Code;
        let code = match &e {
            ApiError::TableNotFound { .. } => Code::NotFound,
            ApiError::BadRequest { .. } | ApiError::ValueTooLarge { .. } => Code::InvalidArgument,
            ApiError::PreconditionFailed { .. } | ApiError::TooManySiblings { .. } => {
                Code::FailedPrecondition
            }
            ApiError::QuorumNotMet { .. } | ApiError::Unavailable { .. } => Code::Unavailable,
            ApiError::Conflict { .. } => Code::FailedPrecondition,
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error while serving a gRPC request");
                let mut s = Status::internal("internal error; see the node's log");
                s.metadata_mut().insert(
                    "dyno-error-code",
                    tonic::metadata::MetadataValue::from_static("InternalError"),
                );
                return s;
            }
        };
        let mut s = Status::new(code, e.to_string());
        if let Ok(v) = e.code().parse() {
            s.metadata_mut().insert("dyno-error-code", v);
        }
        s
    }
}

impl PublicApi {
    async fn write(
        &self,
        op: &'static str,
        req: WriteArgs,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let started = Instant::now();
        let table = req.table.clone();
        let res = self.write_inner(req).await;
        api::record(&self.node, op, &table, started, res.as_ref().err());
        Ok(Response::new(pb::WriteResponse {
            context: res?.context,
        }))
    }

    async fn write_inner(&self, req: WriteArgs) -> Result<crate::node::PutResult, ApiError> {
        api::check_key(&req.key)?;
        if let Some(v) = &req.value {
            api::check_value(v.len())?;
        }
        let cfg = self.node.table(&req.table)?;
        let w = api::quorum("w", req.w.map(|w| w.to_string()).as_deref(), cfg.n, cfg.w)?;
        let context = api::write_context(req.context.as_deref())?;
        let condition = api::condition(req.if_match.as_deref(), req.if_none_match)?;
        self.node
            .put(PutRequest {
                table: req.table,
                key: req.key,
                value: req.value,
                context,
                w,
                condition,
            })
            .await
    }
}

struct WriteArgs {
    table: String,
    key: Vec<u8>,
    value: Option<Bytes>,
    context: Option<String>,
    w: Option<u32>,
    if_match: Option<String>,
    if_none_match: bool,
}

#[tonic::async_trait]
impl Dyno for PublicApi {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let res: Result<pb::GetResponse, ApiError> = async {
            api::check_key(&req.key)?;
            let cfg = self.node.table(&req.table)?;
            let r = api::quorum("r", req.r.map(|r| r.to_string()).as_deref(), cfg.n, cfg.r)?;
            let state = self.node.get(&req.table, &req.key, r).await?;
            let values: Vec<Vec<u8>> = state
                .as_ref()
                .map(|o| o.live_values().map(|v| v.to_vec()).collect())
                .unwrap_or_default();
            Ok(pb::GetResponse {
                found: !values.is_empty(),
                values,
                context: api::context_string(state.as_ref()),
            })
        }
        .await;
        api::record(&self.node, "get", &req.table, started, res.as_ref().err());
        Ok(Response::new(res?))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.into_inner();
        let args = WriteArgs {
            table: r.table,
            key: r.key,
            value: Some(Bytes::from(r.value)),
            context: r.context,
            w: r.w,
            if_match: r.if_match,
            if_none_match: r.if_none_match,
        };
        self.write("put", args).await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.into_inner();
        let args = WriteArgs {
            table: r.table,
            key: r.key,
            value: None,
            context: r.context,
            w: r.w,
            if_match: None,
            if_none_match: false,
        };
        self.write("delete", args).await
    }
}
