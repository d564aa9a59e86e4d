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

pub mod aae;
pub mod api;
pub mod background;
pub mod catalog;
pub mod change;
pub mod cluster;
pub mod config;
pub mod error;
pub mod gossip;
pub mod grpc;
pub mod handoff;
pub mod http;
pub mod metrics;
pub mod node;
pub mod replica;
pub mod rpc;
pub mod trees;

use std::future::Future;
use std::sync::Arc;

use dyno_core::membership::Addresses;
use dyno_core::topology::Topology;
use dyno_core::{Member, NodeId, PhiConfig, Ring};
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
    let catalog = Arc::new(catalog::Catalog::load(Arc::clone(&store))?);

    // The first ring: the --member list (every node must build the same
    // ring, so the members are sorted by name); with only seeds, an
    // epoch-0 placeholder that any real cluster's topology supersedes (the
    // node serves nothing until joined); with neither, a one-node cluster.
    let initial = if !config.members.is_empty() {
        let mut members: Vec<NodeId> = config.members.iter().map(|m| m.id.clone()).collect();
        members.sort();
        Topology::new(Ring::new(
            config.partition_bits,
            dyno_core::ring::DEFAULT_SPACING,
            members.into_iter().map(Member::new).collect(),
        )?)
    } else {
        let mut t = Topology::new(Ring::new(
            config.partition_bits,
            dyno_core::ring::DEFAULT_SPACING,
            vec![Member::new(me.clone())],
        )?);
        if !config.seeds.is_empty() {
            t.epoch = 0;
        }
        t
    };
    let pinned = config
        .members
        .iter()
        .filter_map(|m| {
            m.addrs.map(|(http, rpc)| {
                (
                    m.id.clone(),
                    Addresses {
                        http: format!("http://{http}"),
                        rpc: format!("http://{rpc}"),
                    },
                )
            })
        })
        .collect();
    let generation = replica::next_generation(store.as_ref())?;
    let advertise = Addresses {
        http: format!(
            "http://{}",
            config.advertise_http_addr.unwrap_or(config.http_addr)
        ),
        rpc: format!(
            "http://{}",
            config.advertise_rpc_addr.unwrap_or(config.rpc_addr)
        ),
    };
    let cluster = cluster::Cluster::new(
        me.clone(),
        cluster::LocalState {
            generation,
            addresses: advertise,
            left: false,
            load: Default::default(),
            handoff: Default::default(),
        },
        pinned,
        initial,
        PhiConfig {
            threshold: config.phi_threshold,
            ..PhiConfig::default()
        },
        config.replica_timeout(),
        Arc::clone(&store),
    )?;
    let partition_bits = cluster.topology().current.partition_bits();
    let trees = Arc::new(trees::Trees::new(partition_bits, Arc::clone(&catalog)));
    let replica = Arc::new(replica::Replica::open(
        Arc::clone(&store),
        config.hint_max_bytes_per_target,
        trees,
    )?);
    let node = Arc::new(node::Node {
        me: me.clone(),
        cluster,
        replica,
        catalog,
        metrics: metrics::Metrics::new(),
        timeout: config.replica_timeout(),
        repair: aae::Repair::new(aae::AaeConfig {
            interval_secs: config.aae_interval_secs,
            partitions_per_sec: config.aae_partitions_per_sec,
            keys_per_sec: config.aae_keys_per_sec,
            tombstone_grace_secs: config.tombstone_grace_secs,
        }),
        handoff: handoff::Handoff::default(),
        inline_io: config.durability == config::DurabilityArg::Periodic,
        change_lock: tokio::sync::Mutex::new(()),
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
    tokio::spawn(gossip::run(
        Arc::clone(&node),
        gossip::GossipConfig {
            interval: std::time::Duration::from_millis(config.gossip_interval_ms),
            fanout: config.gossip_fanout as usize,
            seeds: config.seeds.clone(),
        },
        stop_rx.clone(),
    ));
    tokio::spawn(aae::run(Arc::clone(&node), stop_rx.clone()));
    tokio::spawn(handoff::run(Arc::clone(&node), stop_rx.clone()));

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

    tracing::info!(node = %me, generation, epoch = node.cluster.topology().epoch, http = %config.http_addr, rpc = %config.rpc_addr, "dyno node started");
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
