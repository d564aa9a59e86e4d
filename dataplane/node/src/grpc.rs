//! The public gRPC API (`proto/dyno.proto`): an adapter over [`Service`],
//! the same operations as the HTTP API. [`ServiceError`]s become gRPC
//! statuses in one place (`status_of`); the Dyno error code travels in the
//! `dyno-error-code` metadata entry.

use bytes::Bytes;
use dyno_proto::public as pb;
use dyno_proto::public::dyno_server::Dyno;
use tonic::{Code, Request, Response, Status};

use crate::error::{ErrorCode, ErrorKind, ServiceError};
use crate::service::{Condition, GetItem, RequestCtx, Service, WriteItem};

/// The public gRPC service.
#[derive(Debug, Clone)]
pub struct PublicApi {
    service: Service,
}

impl PublicApi {
    /// Serves `service`.
    pub fn new(service: Service) -> Self {
        PublicApi { service }
    }
}

/// The gRPC code of an error code: the one mapping for gRPC.
pub fn code_of(code: ErrorCode) -> Code {
    match code.kind() {
        ErrorKind::BadRequest | ErrorKind::TooLarge => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::PreconditionFailed | ErrorKind::Conflict => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Unauthorized => Code::Unauthenticated,
        ErrorKind::Forbidden => Code::PermissionDenied,
        ErrorKind::Throttled => Code::ResourceExhausted,
    }
}

/// An error as a gRPC status; internal errors are logged here and hidden.
pub fn status_of(e: &ServiceError) -> Status {
    if e.code == ErrorCode::Internal {
        tracing::error!(error = %e.message, "internal error while serving a gRPC request");
    }
    let mut s = Status::new(code_of(e.code), e.client_message());
    if let Ok(v) = e.code.as_str().parse() {
        s.metadata_mut().insert("dyno-error-code", v);
    }
    s
}

impl PublicApi {
    /// The request's context, from its `authorization` metadata.
    fn ctx<T>(&self, request: &Request<T>) -> Result<RequestCtx, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.service.authenticate(auth).map_err(|e| status_of(&e))
    }

    async fn write(
        &self,
        ctx: RequestCtx,
        req: WriteItem,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let written = self
            .service
            .write_item(&ctx, req)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::WriteResponse {
            context: written.context,
        }))
    }
}

#[tonic::async_trait]
impl Dyno for PublicApi {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let ctx = self.ctx(&request)?;
        let req = request.into_inner();
        let read = self
            .service
            .get_item(
                &ctx,
                GetItem {
                    table: req.table,
                    key: req.key,
                    r: req.r,
                },
            )
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::GetResponse {
            found: !read.values.is_empty(),
            values: read.values.iter().map(|v| v.to_vec()).collect(),
            context: read.context,
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let ctx = self.ctx(&request)?;
        let r = request.into_inner();
        let condition = Condition::from_fields(r.if_match, r.if_none_match);
        self.write(
            ctx,
            WriteItem {
                table: r.table,
                key: r.key,
                value: Some(Bytes::from(r.value)),
                context: r.context,
                w: r.w,
                condition,
            },
        )
        .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let ctx = self.ctx(&request)?;
        let r = request.into_inner();
        self.write(
            ctx,
            WriteItem {
                table: r.table,
                key: r.key,
                value: None,
                context: r.context,
                w: r.w,
                condition: Condition::None,
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_the_code_and_hide_internal_details() {
        let s = status_of(&ServiceError::internal("secret path /var/x"));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/var/x"));
        let s = status_of(&ServiceError::value_too_large(2 << 20, 1 << 20));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.metadata()
                .get("dyno-error-code")
                .and_then(|v| v.to_str().ok()),
            Some("ValueTooLarge")
        );
    }
}
