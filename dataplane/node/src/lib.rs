//! # dyno-node: the storage node
//!
//! This crate is the driver around `dyno-core`: it owns the sockets, the
//! timers and the disk. Decisions belong in the core; this crate carries
//! them out. It must never be a dependency of the core or of the storage
//! crate.
//!
//! Its modules form one-way layers (no module imports one above it; CI's
//! module-cycle check keeps it so):
//!
//! 1. `error` (the one [`error::ServiceError`] with its typed code), `sys`
//!    (clock, randomness), `config`, `metrics`;
//! 2. `catalog`, `meta` (the node's own records), `wire` (protocol
//!    conversions), `peer` (the [`peer::PeerClient`] trait and its tonic
//!    implementation);
//! 3. `trees`, `replica` (local data and hints), `cluster` (membership,
//!    liveness, topology);
//! 4. `node`: the coordinator, running the core's machines for reads and
//!    writes;
//! 5. `worker` and the workers: `gossip`, `hints`, `catalog_sync`, `aae`,
//!    `handoff`, and `change` (ring changes begun by the change leader);
//! 6. `service`: the one typed service boundary, with [`service::RequestCtx`];
//! 7. front-ends, thin adapters over the service: `http` (public and admin
//!    HTTP/JSON), `grpc` (public gRPC), `rpc` (the internal protocol's
//!    server).
//!
//! ```no_run
//! # async fn example(config: dyno_node::NodeConfig) -> Result<(), dyno_node::NodeError> {
//! let listeners = dyno_node::Listeners::bind(&config).await?;
//! dyno_node::run(config, listeners, async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

pub mod aae;
pub mod auth;
pub mod catalog;
pub mod catalog_sync;
pub mod change;
pub mod cluster;
pub mod config;
pub mod durable;
pub mod dynamo;
pub mod error;
pub mod faults;
pub mod gossip;
pub mod grpc;
pub mod handoff;
pub mod hints;
pub mod http;
pub mod link;
pub mod meta;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod pipe;
pub mod ranges;
pub mod replica;
pub mod rmw;
pub mod rpc;
pub mod scrub;
pub mod service;
pub mod sys;
pub mod throttle;
pub mod trees;
pub mod ttl;
pub mod wire;
pub mod worker;

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
    /// Sockets passed in by a service manager are unusable.
    #[error("{0}")]
    Inherited(String),
    /// The RPC server failed.
    #[error("internal RPC server: {0}")]
    Rpc(#[from] tonic::transport::Error),
    /// The TLS material cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] dyno_tls::TlsError),
}

/// The sockets a node serves on, bound by the caller (so that a test can
/// bind port 0 and know the port before the node starts, and nothing races
/// for it).
#[derive(Debug)]
pub struct Listeners {
    /// The public HTTP API, admin API, gRPC API and /metrics.
    pub http: tokio::net::TcpListener,
    /// The internal node-to-node protocol.
    pub rpc: tokio::net::TcpListener,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &NodeConfig) -> Result<Listeners, NodeError> {
        let bind = |addr: std::net::SocketAddr, what: &'static str| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Io {
                    what: format!("binding the {what} address {addr}"),
                    source,
                })
        };
        Ok(Listeners {
            http: bind(config.http_addr, "HTTP").await?,
            rpc: bind(config.rpc_addr, "RPC").await?,
        })
    }

    /// The sockets a service manager passed in (`LISTEN_FDS=2`, systemd
    /// socket activation: fd 3 serves HTTP, fd 4 the internal RPC), or, when
    /// none were passed, the addresses of `config`. Test harnesses use this
    /// to bind every port before any node starts.
    pub async fn inherited_or_bind(config: &NodeConfig) -> Result<Listeners, NodeError> {
        let mut fds = listenfd::ListenFd::from_env();
        if fds.len() == 0 {
            return Listeners::bind(config).await;
        }
        if fds.len() != 2 {
            return Err(NodeError::Inherited(format!(
                "LISTEN_FDS={}: expected 2 sockets (HTTP, then RPC)",
                fds.len()
            )));
        }
        let mut take = |i: usize, what: &str| -> Result<tokio::net::TcpListener, NodeError> {
            let std = fds
                .take_tcp_listener(i)
                .map_err(|e| NodeError::Inherited(format!("inherited {what} socket: {e}")))?
                .ok_or_else(|| NodeError::Inherited(format!("no inherited {what} socket")))?;
            std.set_nonblocking(true).map_err(|source| NodeError::Io {
                what: format!("using the inherited {what} socket"),
                source,
            })?;
            tokio::net::TcpListener::from_std(std).map_err(|source| NodeError::Io {
                what: format!("using the inherited {what} socket"),
                source,
            })
        };
        Ok(Listeners {
            http: take(0, "HTTP")?,
            rpc: take(1, "RPC")?,
        })
    }

    fn addrs(&self) -> Result<(std::net::SocketAddr, std::net::SocketAddr), NodeError> {
        let addr = |l: &tokio::net::TcpListener| {
            l.local_addr().map_err(|source| NodeError::Io {
                what: "reading a listener's address".into(),
                source,
            })
        };
        Ok((addr(&self.http)?, addr(&self.rpc)?))
    }
}

/// What a node takes from outside: its store, how it reaches its peers,
/// and what it tells them about itself. `run` gives it RocksDB, tonic and
/// the listeners' addresses; a simulation gives it the in-memory store and
/// its own network.
#[derive(Debug)]
pub struct Edges {
    /// The node's storage.
    pub store: Arc<dyn Store>,
    /// How it reaches peers (wrapped in fault injection when that is on).
    pub connector: Arc<dyn peer::Connector>,
    /// The addresses it gossips for itself.
    pub advertise: Addresses,
    /// Its TLS material, when TLS is on.
    pub tls: Option<Arc<dyno_tls::Tls>>,
    /// The counters its replica links update (shared with `connector`).
    pub link_stats: link::Stats,
}

/// A node assembled and working (its workers started), not yet serving:
/// the front-ends wrap `service`.
#[derive(Debug)]
pub struct Assembled {
    /// The typed service every front-end adapts.
    pub service: service::Service,
    /// Its background workers (stop them with `shutdown`).
    pub workers: Arc<worker::Workers>,
    /// Its store.
    pub store: Arc<dyn Store>,
}

/// Builds a node on `edges`: catalog, membership and ring, replica,
/// coordinator and the service, and starts its workers (on the current
/// tokio runtime).
pub fn assemble(config: &NodeConfig, edges: Edges) -> Result<Assembled, NodeError> {
    let me = config.validate()?;
    let Edges {
        store,
        connector,
        advertise,
        tls,
        link_stats,
    } = edges;
    // The scheme of the pinned members' addresses.
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut connector = connector;
    let credentials = auth::Credentials::from_config(config)?;
    if !credentials.required() {
        tracing::warn!(
            "serving WITHOUT AUTHENTICATION (--insecure-no-auth): anyone who can reach this node can read, write and administer it"
        );
    } else if config.key_master_file.is_none() {
        tracing::warn!(
            "no --key-master-file: API keys cannot be checked, only the admin credential is accepted"
        );
    }
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
            vec![Member {
                id: me.clone(),
                zone: config.zone.clone(),
            }],
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
                        http: format!("{scheme}://{http}"),
                        rpc: format!("{scheme}://{rpc}"),
                    },
                )
            })
        })
        .collect();
    let generation = meta::next_generation(store.as_ref())?;
    tracing::info!(node = %me, generation, "assembling the node");
    let faults = config.fault_injection.then(|| {
        tracing::warn!("fault injection is on (--fault-injection): /admin/v1/faults can partition and damage this node; never use it in production");
        let faults = Arc::new(faults::Faults::default());
        connector = Arc::new(faults::FaultyConnector::new(
            Arc::clone(&connector),
            Arc::clone(&faults),
            config.replica_timeout(),
        ));
        faults
    });
    let cluster = cluster::Cluster::new(cluster::ClusterParts {
        me: me.clone(),
        local: cluster::LocalState {
            generation,
            addresses: advertise,
            left: false,
            load: Default::default(),
            handoff: Default::default(),
            zone: config.zone.clone(),
        },
        pinned,
        initial,
        phi: PhiConfig {
            threshold: config.phi_threshold,
            ..PhiConfig::default()
        },
        timeout: config.replica_timeout(),
        connector,
        store: Arc::clone(&store),
    })?;
    let partition_bits = cluster.topology().current.partition_bits();
    let trees = Arc::new(trees::Trees::new(partition_bits, Arc::clone(&catalog)));
    let replica = Arc::new(replica::Replica::open(
        Arc::clone(&store),
        config.hint_max_bytes_per_target,
        trees,
    )?);
    let node = Arc::new(node::Node::new(node::NodeParts {
        me: me.clone(),
        cluster,
        replica,
        catalog,
        link_stats,
        timeout: config.replica_timeout(),
        sync_writes: config.durability == config::DurabilityArg::Sync,
        group_commit_interval: std::time::Duration::from_micros(config.group_commit_interval_us),
        faults: faults.clone(),
    }));
    node.set_rmw_handler(Arc::new(service::DdbRmw::new(Arc::clone(node.catalog()))));

    let repair = Arc::new(aae::Repair::new(aae::AaeConfig {
        interval_secs: config.aae_interval_secs,
        partitions_per_sec: config.aae_partitions_per_sec,
        keys_per_sec: config.aae_keys_per_sec,
        tombstone_grace_secs: config.tombstone_grace_secs,
    }));
    let handoff = Arc::new(handoff::Handoff::default());
    let workers = worker::Workers::new();
    workers.spawn(hints::HintReplay::new(
        Arc::clone(&node),
        hints::HintPolicy {
            max_age: std::time::Duration::from_secs(config.hint_max_age_secs),
            per_sec: config.hint_replay_per_sec,
        },
    ));
    workers.spawn(catalog_sync::CatalogSync::new(Arc::clone(&node)));
    workers.spawn(ttl::TtlReaper::new(
        Arc::clone(&node),
        std::time::Duration::from_secs(config.ttl_interval_secs),
    ));
    workers.spawn(gossip::Gossip::new(
        Arc::clone(&node),
        gossip::GossipConfig {
            interval: std::time::Duration::from_millis(config.gossip_interval_ms),
            fanout: config.gossip_fanout as usize,
            seeds: config.seeds.clone(),
        },
    ));
    workers.spawn(aae::AntiEntropy::new(
        Arc::clone(&node),
        Arc::clone(&repair),
    ));
    workers.spawn(handoff::HandoffWorker::new(
        Arc::clone(&node),
        Arc::clone(&handoff),
    ));
    let scrubbed = Arc::new(scrub::Scrubbed::default());
    if config.scrub_interval_secs > 0 {
        workers.spawn(scrub::Scrub::new(
            Arc::clone(&node),
            Arc::clone(&scrubbed),
            std::time::Duration::from_secs(config.scrub_interval_secs),
            config.scrub_records_per_sec,
        ));
    }
    let service = service::Service::new(service::ServiceParts {
        node: Arc::clone(&node),
        repair,
        handoff,
        leader: Arc::new(change::ChangeLeader::new()),
        workers: Arc::clone(&workers),
        request_timeout: config.request_timeout(),
        credentials,
        metrics_require_token: config.metrics_require_token,
        controlplane_url: config.controlplane_url.clone(),
        controlplane_client: dyno_tls::ReloadingClient::new(tls.clone(), Arc::new(|b| b))?,
        tls: tls.clone(),
        scrubbed,
        faults,
    });

    Ok(Assembled {
        service,
        workers,
        store,
    })
}

/// Serves the internal RPC on `incoming` until `stop` changes.
async fn serve_rpc<I, IO, IE>(
    server: tonic::transport::server::Router,
    incoming: I,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    server
        .serve_with_incoming_shutdown(incoming, async move {
            // Err: the sender is gone, which also means stop.
            stop.changed().await.ok();
        })
        .await
}

/// The memtable size of node `id`: 48 to 80 MiB, fixed by the name.
///
/// Replicas receive the same writes, so with equal memtables every replica
/// of a key range fills its memtable at the same moment, and all of them
/// flush and compact at once: on three local nodes, three flushes and
/// compactions at the same time took the cores from the requests, and the
/// p99 of those seconds rose from 3-6 ms to 13-30 ms (bench/MICRO.md).
/// Different sizes spread the flushes out.
fn staggered_write_buffer(id: &str) -> usize {
    let spread = crc32fast::hash(id.as_bytes()) % 33;
    (48 + spread as usize) << 20
}

/// How long a new RPC connection may take to send its first bytes.
const SNIFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Splits the connections accepted on the RPC port: replica links
/// (`link.rs`) are served here, on a task each, until `stop`; everything
/// else (gRPC) comes out of the returned stream for tonic, its first bytes
/// put back.
fn split_links<S, IO>(
    incoming: S,
    node: Arc<node::Node>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<Result<link::Rewound<IO>, std::io::Error>>
where
    S: tokio_stream::Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
    IO: link::Io + 'static,
{
    use tokio_stream::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        loop {
            let next = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                n = incoming.next() => n,
            };
            let io = match next {
                None => break,
                Some(Ok(io)) => io,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "accepting an RPC connection failed");
                    continue;
                }
            };
            let (node, stop, tx) = (Arc::clone(&node), stop.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(SNIFF_TIMEOUT, link::sniff(io)).await {
                    Ok(Ok(link::Sniffed::Link(io))) => rpc::serve_link(node, io, stop).await,
                    Ok(Ok(link::Sniffed::Other(io))) => {
                        // Gone only when the server has stopped.
                        tx.send(Ok(io)).await.ok();
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "an RPC connection failed at once"),
                    Err(_) => tracing::debug!("an RPC connection sent nothing; closed"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// How long background workers get to stop at shutdown.
const WORKER_SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs a node on `listeners` until `shutdown` completes: opens its store,
/// starts its workers and serves. At shutdown the servers stop taking
/// requests, the workers stop (within a deadline), and the store is synced.
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let me = config.validate()?;
    let (http_addr, rpc_addr) = listeners.addrs()?;
    let mut rocks = RocksConfig::new(&config.data_dir);
    rocks.write_buffer_bytes = staggered_write_buffer(me.as_str());
    rocks.block_cache_bytes = (config.block_cache_mib as usize) << 20;
    rocks.item_cache_bytes = (config.item_cache_mib as usize) << 20;
    rocks.background_write_bytes_per_sec = u64::from(config.background_write_mib) << 20;
    rocks.durability = match config.durability {
        config::DurabilityArg::Sync => Durability::Sync,
        config::DurabilityArg::Periodic => Durability::default(),
    };
    let tls = config.tls_files()?.map(dyno_tls::Tls::load).transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if tls.is_none()
        && let Some(exposed) = dyno_tls::plaintext_exposure(&[http_addr, rpc_addr])
    {
        tracing::warn!(
            addresses = %exposed,
            "SERVING PLAINTEXT ON A NON-LOOPBACK ADDRESS: API keys, the admin credential and data travel unencrypted, and any host that reaches the node-to-node port can act as a peer. Give --tls-cert, --tls-key and --tls-ca (or terminate TLS in front and keep the node-to-node port private)"
        );
    }
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&rocks)?);
    let advertise = Addresses {
        http: format!(
            "{scheme}://{}",
            config.advertise_http_addr.unwrap_or(http_addr)
        ),
        rpc: format!(
            "{scheme}://{}",
            config.advertise_rpc_addr.unwrap_or(rpc_addr)
        ),
    };
    let link_stats = link::Stats::default();
    let connector: Arc<dyn peer::Connector> = Arc::new(peer::TonicConnector {
        timeout: config.replica_timeout(),
        transport: config.replica_transport,
        link_stats: link_stats.clone(),
        tls: tls.clone(),
    });
    let Assembled {
        service,
        workers,
        store,
    } = assemble(
        &config,
        Edges {
            store,
            connector,
            advertise,
            tls: tls.clone(),
            link_stats,
        },
    )?;
    let node = Arc::clone(service.node());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let rpc_service = dyno_proto::internal::replica_server::ReplicaServer::new(
        rpc::RpcService::new(service.clone(), stop_rx.clone()),
    )
    .max_decoding_message_size(16 << 20)
    .max_encoding_message_size(16 << 20);
    let rpc_stop = stop_rx.clone();
    let rpc_server = tonic::transport::Server::builder().add_service(rpc_service);
    let rpc_task = match &tls {
        // Mutual TLS: only holders of a certificate of the cluster's CA are
        // peers (on gRPC and on the replica link alike).
        Some(tls) => tokio::spawn(serve_rpc(
            rpc_server,
            split_links(
                dyno_tls::TlsListener::new(
                    listeners.rpc,
                    Arc::clone(tls),
                    dyno_tls::ClientAuth::Required,
                )
                .map_err(|source| NodeError::Io {
                    what: "serving the RPC port".into(),
                    source,
                })?,
                Arc::clone(&node),
                stop_rx.clone(),
            ),
            rpc_stop,
        )),
        // Small request/response exchanges: without TCP_NODELAY, Nagle's
        // algorithm and delayed ACKs add ~40 ms stalls to replica RPCs.
        None => tokio::spawn(serve_rpc(
            rpc_server,
            split_links(
                tonic::transport::server::TcpIncoming::from(listeners.rpc).with_nodelay(Some(true)),
                Arc::clone(&node),
                stop_rx.clone(),
            ),
            rpc_stop,
        )),
    };

    tracing::info!(node = %me, epoch = node.cluster().topology().epoch, http = %http_addr, rpc = %rpc_addr, "dyno node started");
    let mut http_stop = stop_rx.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    let router = http::router(service);
    let http_stop = async move {
        http_stop.changed().await.ok();
    };
    let served = match tls {
        // Clients may present a certificate (the control plane does); it
        // must then chain to the cluster's CA. Applications authenticate
        // with their API keys.
        Some(tls) => {
            let listener =
                dyno_tls::TlsListener::new(listeners.http, tls, dyno_tls::ClientAuth::Optional)
                    .map_err(|source| NodeError::Io {
                        what: "serving the HTTP port".into(),
                        source,
                    })?;
            axum::serve(listener, router)
                .with_graceful_shutdown(http_stop)
                .await
        }
        None => {
            use axum::serve::ListenerExt;
            let listener = listeners.http.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
            });
            axum::serve(listener, router)
                .with_graceful_shutdown(http_stop)
                .await
        }
    };
    let report = workers.shutdown(WORKER_SHUTDOWN_DEADLINE).await;
    tracing::info!(stopped = ?report.stopped, aborted = ?report.aborted, "workers stopped");
    served.map_err(|source| NodeError::Io {
        what: "serving HTTP".into(),
        source,
    })?;
    match rpc_task.await {
        Ok(res) => res?,
        Err(e) => tracing::error!(error = %e, "RPC server task failed"),
    }
    // Nothing writes any more: the next start may keep this actor id.
    meta::mark_clean_shutdown(store.as_ref())?;
    tracing::info!(node = %me, "dyno node stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::staggered_write_buffer;

    #[test]
    fn memtable_sizes_differ_between_nodes_within_48_to_80_mib() {
        let sizes: Vec<usize> = ["n1", "n2", "n3"]
            .iter()
            .map(|id| staggered_write_buffer(id))
            .collect();
        for s in &sizes {
            assert!((48 << 20..=80 << 20).contains(s), "{s}");
        }
        // The dev cluster's three nodes flush at different fill levels.
        assert!(
            sizes[0] != sizes[1] && sizes[1] != sizes[2] && sizes[0] != sizes[2],
            "{sizes:?}"
        );
        // The same name always gets the same size (a restart keeps it).
        assert_eq!(staggered_write_buffer("n1"), sizes[0]);
    }
}
