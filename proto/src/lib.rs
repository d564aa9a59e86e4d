//! # dyno-proto: the wire protocols
//!
//! `dyno.proto` is the public gRPC API (same semantics as the HTTP API).
//! `internal.proto` is the node-to-node protocol (replica reads and writes,
//! hint delivery, forwarded coordination, catalog replication). The code is
//! generated at build time by protox and tonic, with no system `protoc`.
//! This crate holds no logic and must not depend on the node or the core.

#![allow(missing_docs, missing_debug_implementations, clippy::all)]

/// The node-to-node protocol, version 1.
pub mod internal {
    tonic::include_proto!("dyno.internal.v1");
}

/// The public API, version 1.
pub mod public {
    tonic::include_proto!("dyno.v1");
}
