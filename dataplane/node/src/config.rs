//! Node configuration: typed, documented, validated at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dyno_core::NodeId;
use thiserror::Error;

/// How the write-ahead log is made durable (see `dyno-storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    /// fsync before every acknowledgement.
    Sync,
    /// fsync every 100 ms.
    Periodic,
}

/// How replica puts and gets reach other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplicaTransport {
    /// One long-lived connection per peer carrying id-tagged frames as
    /// plain length-prefixed messages (the replica link; peers without it
    /// get the gRPC stream).
    Pipe,
    /// The same frames on one long-lived gRPC stream per peer (the
    /// transport before the link).
    GrpcStream,
    /// One unary gRPC call per replica operation (the older transport).
    Unary,
}

/// An initial cluster member given on the command line: `ID`, or
/// `ID=HTTP_ADDR,RPC_ADDR` to pin the addresses this node uses for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The node's name.
    pub id: NodeId,
    /// Its public HTTP and internal RPC addresses, when pinned.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
}

/// Why a configuration was rejected.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A `--member` value does not parse.
    #[error(
        "--member {value:?}: expected ID or ID=HTTP_HOST:PORT,RPC_HOST:PORT, e.g. n1=127.0.0.1:7000,127.0.0.1:7100 ({reason})"
    )]
    BadMember {
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The node's own id is not among the members.
    #[error("--id {id} is not one of the --member entries")]
    SelfNotMember {
        /// The id.
        id: String,
    },
    /// Two members share an id.
    #[error("member {id} is listed twice")]
    DuplicateMember {
        /// The id.
        id: String,
    },
    /// Something else is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl std::str::FromStr for PeerSpec {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ConfigError::BadMember {
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let Some((id, addrs)) = s.split_once('=') else {
            return Ok(PeerSpec {
                id: NodeId::new(s).map_err(|e| bad(&e.to_string()))?,
                addrs: None,
            });
        };
        let (http, rpc) = addrs
            .split_once(',')
            .ok_or_else(|| bad("missing ',' between the two addresses"))?;
        Ok(PeerSpec {
            id: NodeId::new(id).map_err(|e| bad(&e.to_string()))?,
            addrs: Some((
                http.parse().map_err(|_| bad("bad HTTP address"))?,
                rpc.parse().map_err(|_| bad("bad RPC address"))?,
            )),
        })
    }
}

/// A node to gossip with at start: `HOST:PORT`, where the host is an IP
/// address or a DNS name (a StatefulSet's stable pod name, for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed(String);

impl Seed {
    /// Its RPC URL.
    pub fn rpc_url(&self) -> String {
        format!("http://{}", self.0)
    }
}

impl std::str::FromStr for Seed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.parse::<SocketAddr>().is_ok() {
            return Ok(Seed(s.to_owned()));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
        port.parse::<u16>()
            .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
        let host_ok = (1..=253).contains(&host.len())
            && host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if host_ok {
            Ok(Seed(s.to_owned()))
        } else {
            Err(format!(
                "{s:?}: {host:?} is not an IP address or a DNS name"
            ))
        }
    }
}

fn parse_zone(s: &str) -> Result<String, String> {
    dyno_core::ring::check_zone(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Options of `dyno node`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeConfig {
    /// This node's name (1 to 64 characters of A-Z a-z 0-9 . _ -).
    #[arg(long, env = "DYNO_ID")]
    pub id: String,
    /// Data directory (RocksDB files, identity, catalog, hints).
    #[arg(long, env = "DYNO_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address for the public HTTP API, admin API and /metrics.
    #[arg(long, env = "DYNO_HTTP_ADDR", default_value = "127.0.0.1:7000")]
    pub http_addr: SocketAddr,
    /// Address for the internal node-to-node gRPC protocol.
    #[arg(long, env = "DYNO_RPC_ADDR", default_value = "127.0.0.1:7100")]
    pub rpc_addr: SocketAddr,
    /// A member of the cluster's first ring, `ID` or `ID=HTTP_ADDR,RPC_ADDR`
    /// (pins the addresses this node uses for it; otherwise they are learnt
    /// by gossip). Repeat for every initial member, this node included.
    /// Used only when the data directory holds no ring yet. Without
    /// `--member` and `--seed`, the node forms a one-node cluster; with
    /// only `--seed`, it waits to be joined (`dyno cluster join`).
    #[arg(long = "member")]
    pub members: Vec<PeerSpec>,
    /// The RPC address (`HOST:PORT`, the host an IP or a DNS name) of a
    /// node to gossip with at start (repeatable).
    #[arg(long = "seed")]
    pub seeds: Vec<Seed>,
    /// The failure zone this node runs in (availability zone, rack): when
    /// the cluster spans at least N zones, each partition's N replicas are
    /// placed in distinct zones. Gossiped, and used when the node joins
    /// (a join request may override it). Under Kubernetes the operator
    /// names the zone in its join request instead (from the topology label
    /// of the machine the pod runs on), since a pod cannot read its
    /// machine's labels.
    #[arg(long, env = "DYNO_ZONE", value_parser = parse_zone)]
    pub zone: Option<String>,
    /// The HTTP address other nodes and clients should use for this node
    /// (default: --http-addr).
    #[arg(long)]
    pub advertise_http_addr: Option<SocketAddr>,
    /// The RPC address other nodes should use for this node (default:
    /// --rpc-addr).
    #[arg(long)]
    pub advertise_rpc_addr: Option<SocketAddr>,
    /// Milliseconds between gossip rounds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub gossip_interval_ms: u64,
    /// Peers contacted per gossip round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub gossip_fanout: u64,
    /// φ at which a peer is suspected (Cassandra's default is 8).
    #[arg(long, default_value_t = 8.0)]
    pub phi_threshold: f64,
    /// Seconds between scheduled anti-entropy passes (0 disables them;
    /// POST /admin/v1/repair still works).
    #[arg(long, default_value_t = 600)]
    pub aae_interval_secs: u64,
    /// Anti-entropy budget: partition comparisons per second.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub aae_partitions_per_sec: u32,
    /// Anti-entropy budget: keys repaired per second.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub aae_keys_per_sec: u32,
    /// A tombstone is removed this many seconds after the delete, once all
    /// replicas hold it. Must exceed --hint-max-age-secs, so that no hint
    /// older than a removed tombstone can bring the value back.
    #[arg(long, default_value_t = 10 * 24 * 3600)]
    pub tombstone_grace_secs: u64,
    /// log2 of the number of ring partitions. Every member must agree.
    #[arg(long, default_value_t = dyno_core::ring::DEFAULT_PARTITION_BITS, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub partition_bits: u8,
    /// When writes are made durable on this node's disk.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Periodic)]
    pub durability: DurabilityArg,
    /// With `--durability sync`, under load (an fsync of the write-ahead
    /// log covered at least 4 writes), the next fsync starts no sooner than
    /// this many microseconds after it, covering every write of the
    /// interval: far fewer fsyncs, each costing CPU, at up to one interval
    /// of extra latency. Fewer writers than that are synced back to back
    /// and never wait for it. 0 never paces.
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub group_commit_interval_us: u64,
    /// RocksDB's block cache, in MiB: recently read data, index and
    /// filter blocks, shared by the keyspaces. Reads it misses go to the
    /// page cache or the disk; size it to the data that is read often (the
    /// rest of the machine's memory serves as page cache).
    #[arg(long, env = "DYNO_BLOCK_CACHE_MIB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(8..=1_048_576))]
    pub block_cache_mib: u32,
    /// The item cache, in MiB: the items written and read most recently,
    /// decoded from RocksDB's frames and kept in a hash map, so that the
    /// read before each write (and a read of a hot key) skips RocksDB's
    /// memtable search. 0 turns it off.
    #[arg(long, env = "DYNO_ITEM_CACHE_MIB", default_value_t = 32, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub item_cache_mib: u32,
    /// The most RocksDB's flushes and compactions write per second, in
    /// MiB (auto-tuned below that while there is little to write), so that
    /// their output reaches the disk as a steady stream instead of bursts
    /// that stall the requests' log writes. 0: no limit.
    #[arg(long, env = "DYNO_BACKGROUND_WRITE_MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub background_write_mib: u32,
    /// Threads running requests and background work (default: one per
    /// core). Nodes sharing a machine (`dyno dev` runs several) do better
    /// with their share of the cores: fewer threads contend for them and
    /// fewer wake-ups cross threads (measured on 2 cores with 3 nodes:
    /// 5–10% less CPU per request at one thread each).
    #[arg(long, env = "DYNO_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// How long the coordinator waits for one replica, in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub replica_timeout_ms: u64,
    /// How replica puts and gets travel to other nodes: `pipe` (one
    /// long-lived connection per peer carrying plain length-prefixed
    /// frames), `grpc-stream` (the same frames on one gRPC stream per
    /// peer), or `unary` (a gRPC call each). For comparison, or as a
    /// fallback; peers that lack one get the next.
    #[arg(long, env = "DYNO_REPLICA_TRANSPORT", value_enum, default_value_t = ReplicaTransport::Pipe)]
    pub replica_transport: ReplicaTransport,
    /// How long a client request may take in all, in milliseconds; past it
    /// the request fails with 503 `DeadlineExceeded`. At least 5 times
    /// --replica-timeout-ms, so that a write that is forwarded and waits for
    /// its replicas is not cut short.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub request_timeout_ms: u64,
    /// Hints older than this many seconds are dropped (anti-entropy repairs
    /// what they carried).
    #[arg(long, default_value_t = 3 * 3600)]
    pub hint_max_age_secs: u64,
    /// The most hint bytes kept for one unreachable node.
    #[arg(long, default_value_t = 256 << 20)]
    pub hint_max_bytes_per_target: u64,
    /// A file holding the cluster's admin credential (one line, at least
    /// 16 characters). The admin API (`/admin/v1/*`) requires it as a
    /// bearer token, and on the `/v1/tables/...` paths it acts as an
    /// all-access key of the tenant `default`. Given as a file, never as a
    /// value, so that `ps` does not show it.
    #[arg(long, env = "DYNO_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// A file holding the key master (at least 32 bytes), from which API
    /// key secrets are derived; the control plane holds the same file.
    /// Without it, only the admin credential is accepted.
    #[arg(long, env = "DYNO_KEY_MASTER_FILE")]
    pub key_master_file: Option<PathBuf>,
    /// The control plane's URL (`http://host:port`). The DynamoDB API sends
    /// table changes (CreateTable, DeleteTable, UpdateTable, TTL, tags)
    /// there on behalf of the request's API key. Without it those
    /// operations answer `ServiceUnavailable`; item operations never need it.
    #[arg(long, env = "DYNO_CONTROLPLANE_URL")]
    pub controlplane_url: Option<String>,
    /// Seconds between passes of the TTL reaper, which deletes expired
    /// DynamoDB items (they are invisible to reads at once).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ttl_interval_secs: u64,
    /// Serve without authentication: no credential is asked for, every
    /// request acts in the tenant `default`. For experiments on a private
    /// machine only; without this flag, --admin-token-file is required.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Require the admin credential for `/metrics` too (it is open by
    /// default, for scrapers; it shows tenant and table names).
    #[arg(long)]
    pub metrics_require_token: bool,
    /// Hints delivered per second to a node that is back, at most.
    #[arg(long, default_value_t = 2000)]
    pub hint_replay_per_sec: u32,
    /// Seconds between scrub passes, which read and check every stored
    /// item and hint so that damage to data nobody reads is found and
    /// repaired (0: no scrub).
    #[arg(long, default_value_t = 86_400)]
    pub scrub_interval_secs: u64,
    /// Records the scrub reads per second, at most.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub scrub_records_per_sec: u32,
    /// Enable the fault-injection API (`/admin/v1/faults`: drop or delay
    /// calls to chosen peers, damage stored items). For tests and nemesis
    /// runs only; never in production.
    #[arg(long)]
    pub fault_injection: bool,
    /// This node's certificate chain (PEM). With --tls-key and --tls-ca it
    /// turns on TLS: HTTPS and gRPC over TLS on the client port, mutual TLS
    /// on the node-to-node port (peers must present a certificate signed by
    /// --tls-ca, and this node presents its own). The files are read again
    /// when they change (checked at most once a second).
    #[arg(long, env = "DYNO_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM), for --tls-cert.
    #[arg(long, env = "DYNO_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate(s) (PEM): peers, the control plane
    /// and clients that present a certificate must chain to it.
    #[arg(long, env = "DYNO_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl NodeConfig {
    /// The TLS files, when TLS is on.
    pub fn tls_files(&self) -> Result<Option<dyno_tls::TlsFiles>, ConfigError> {
        dyno_tls::TlsFiles::from_options(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
        )
        .map_err(ConfigError::Invalid)
    }

    /// Checks the configuration and returns this node's id.
    pub fn validate(&self) -> Result<NodeId, ConfigError> {
        let me = NodeId::new(&self.id).map_err(|e| ConfigError::Invalid(format!("--id: {e}")))?;
        if self.tombstone_grace_secs <= self.hint_max_age_secs {
            return Err(ConfigError::Invalid(format!(
                "--tombstone-grace-secs ({}) must exceed --hint-max-age-secs ({}), or an old hint could bring a deleted value back",
                self.tombstone_grace_secs, self.hint_max_age_secs
            )));
        }
        if self.request_timeout_ms < 5 * self.replica_timeout_ms {
            return Err(ConfigError::Invalid(format!(
                "--request-timeout-ms ({}) must be at least 5 times --replica-timeout-ms ({})",
                self.request_timeout_ms, self.replica_timeout_ms
            )));
        }
        if self.admin_token_file.is_none() && !self.insecure_no_auth {
            return Err(ConfigError::Invalid(
                "--admin-token-file is required (or --insecure-no-auth, to serve without authentication)".into(),
            ));
        }
        if self.admin_token_file.is_some() && self.insecure_no_auth {
            return Err(ConfigError::Invalid(
                "--insecure-no-auth contradicts --admin-token-file; give one".into(),
            ));
        }
        self.tls_files()?;
        if !(self.phi_threshold > 0.0 && self.phi_threshold.is_finite()) {
            return Err(ConfigError::Invalid(
                "--phi-threshold must be a positive number".into(),
            ));
        }
        for (i, m) in self.members.iter().enumerate() {
            if self.members.iter().skip(i + 1).any(|o| o.id == m.id) {
                return Err(ConfigError::DuplicateMember {
                    id: m.id.to_string(),
                });
            }
        }
        if !self.members.is_empty() && !self.members.iter().any(|m| m.id == me) {
            return Err(ConfigError::SelfNotMember {
                id: self.id.clone(),
            });
        }
        if self.members.len() > (1usize << self.partition_bits) {
            return Err(ConfigError::Invalid(format!(
                "{} members cannot share 2^{} partitions; raise --partition-bits",
                self.members.len(),
                self.partition_bits
            )));
        }
        Ok(me)
    }

    /// A client request's deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The per-replica timeout.
    pub fn replica_timeout(&self) -> Duration {
        Duration::from_millis(self.replica_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_and_zones_parse_with_clear_errors() {
        for good in [
            "127.0.0.1:7100",
            "[::1]:7100",
            "dyno-0.dyno-peers.db.svc:7100",
            "localhost:1",
        ] {
            let s: Seed = good.parse().expect(good);
            assert_eq!(s.rpc_url(), format!("http://{good}"));
        }
        for bad in [
            "dyno-0",
            "dyno-0:x",
            "a..b:1",
            ":7100",
            "a b:1",
            "host:70000",
        ] {
            assert!(bad.parse::<Seed>().is_err(), "{bad} accepted");
        }
        assert!(parse_zone("eu-west-1a").is_ok());
        assert!(parse_zone("dc1/rack2").is_ok());
        let e = parse_zone("zone a").expect_err("space");
        assert!(e.contains("invalid zone"), "{e}");
        assert!(parse_zone("").is_err());
        assert!(parse_zone(&"z".repeat(65)).is_err());
    }

    #[test]
    fn member_specs_parse_with_clear_errors() {
        let p: PeerSpec = "n1=127.0.0.1:7000,127.0.0.1:7100".parse().expect("valid");
        assert_eq!(p.id.as_str(), "n1");
        assert_eq!(p.addrs.map(|a| a.1.port()), Some(7100));
        let bare: PeerSpec = "n2".parse().expect("valid");
        assert_eq!((bare.id.as_str(), bare.addrs), ("n2", None));
        for bad in [
            "n 1",
            "n1=127.0.0.1:7000",
            "n1=nope,127.0.0.1:1",
            "bad id=1.1.1.1:1,1.1.1.1:2",
        ] {
            let err = bad.parse::<PeerSpec>().expect_err(bad).to_string();
            assert!(err.contains("--member"), "{err}");
        }
    }
}
