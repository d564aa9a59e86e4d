//! # dyno-node: the storage node
//!
//! This crate is the driver around `dyno-core`: it owns the sockets, the
//! timers and the disk. It serves the public HTTP API and the admin API
//! (axum, `http.rs`), the internal node-to-node protocol (tonic, `rpc.rs`),
//! runs the core's coordination machines (`node.rs`), keeps replica data
//! and hints (`replica.rs`) and the catalog (`catalog.rs`), and runs the
//! background loops (`background.rs`). Decisions belong in the core; this
//! crate carries them out. It must never be a dependency of the core or of
//! the storage crate.

pub mod api;
pub mod background;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod node;
pub mod replica;
pub mod rpc;

use std::future::Future;
use std::sync::Arc;

use dyno_core::{Member, NodeId, Ring};
use dyno_storage::{Durability, RocksConfig, RocksStore, Store};
use thiserror::Error;

pub use config::NodeConfig;

/// Why a node could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] dyno_storage::StoreError),
    /// The replica layer could not start.
    #[error(transparent)]
    Replica(#[from] replica::ReplicaError),
    /// The ring could not be built.
    #[error(transparent)]
    Ring(#[from] dyno_core::ring::RingError),
    /// A listener could not be bound or failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The RPC server failed.
    #[error("internal RPC server: {0}")]
    Rpc(#[from] tonic::transport::Error),
}

/// Runs a node until `shutdown` completes.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let me = config.validate()?;
    let mut rocks = RocksConfig::new(&config.data_dir);
    rocks.durability = match config.durability {
        config::DurabilityArg::Sync => Durability::Sync,
        config::DurabilityArg::Periodic => Durability::default(),
    };
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&rocks)?);
    let replica = Arc::new(replica::Replica::open(
        Arc::clone(&store),
        config.hint_max_bytes_per_target,
    )?);
    let generation = replica.bump_generation()?;
    let catalog = Arc::new(catalog::Catalog::load(Arc::clone(&store))?);

    // Every node must build the same ring: sort the members by name.
    let mut members: Vec<NodeId> = config.members.iter().map(|m| m.id.clone()).collect();
    members.sort();
    let ring = Ring::new(
        config.partition_bits,
        dyno_core::ring::DEFAULT_SPACING,
        members.iter().cloned().map(Member::new).collect(),
    )?;
    let node = Arc::new(node::Node {
        me: me.clone(),
        generation,
        ring,
        peers: cluster::Peers::new(&me, &config.members, config.replica_timeout()),
        replica,
        catalog,
        metrics: metrics::Metrics::new(),
        timeout: config.replica_timeout(),
        members,
    });

    let http = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| NodeError::Io {
            what: format!("binding the HTTP address {}", config.http_addr),
            source,
        })?;
    let rpc_listener = tokio::net::TcpListener::bind(config.rpc_addr)
        .await
        .map_err(|source| NodeError::Io {
            what: format!("binding the RPC address {}", config.rpc_addr),
            source,
        })?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let policy = background::HintPolicy {
        max_age: std::time::Duration::from_secs(config.hint_max_age_secs),
        per_sec: config.hint_replay_per_sec,
    };
    tokio::spawn(background::replay_hints(
        Arc::clone(&node),
        policy,
        stop_rx.clone(),
    ));
    tokio::spawn(background::sync_catalog(Arc::clone(&node), stop_rx.clone()));

    let rpc_service = dyno_proto::internal::replica_server::ReplicaServer::new(
        rpc::RpcService::new(Arc::clone(&node)),
    )
    .max_decoding_message_size(16 << 20)
    .max_encoding_message_size(16 << 20);
    let mut rpc_stop = stop_rx.clone();
    // Small request/response exchanges: without TCP_NODELAY, Nagle's
    // algorithm and delayed ACKs add ~40 ms stalls to replica RPCs.
    let incoming =
        tonic::transport::server::TcpIncoming::from(rpc_listener).with_nodelay(Some(true));
    let rpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(rpc_service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = rpc_stop.changed().await;
            }),
    );

    tracing::info!(node = %me, generation, http = %config.http_addr, rpc = %config.rpc_addr, "dyno node started");
    let mut http_stop = stop_rx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    use axum::serve::ListenerExt;
    let http = http.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(http, http::router(Arc::clone(&node)))
        .with_graceful_shutdown(async move {
            let _ = http_stop.changed().await;
        })
        .await
        .map_err(|source| NodeError::Io {
            what: "serving HTTP".into(),
            source,
        })?;
    match rpc_task.await {
        Ok(res) => res?,
        Err(e) => tracing::error!(error = %e, "RPC server task failed"),
    }
    store.sync()?;
    tracing::info!(node = %me, "dyno node stopped");
    Ok(())
}
