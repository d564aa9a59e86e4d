//! `dyno controlplane` options.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Options of `dyno controlplane`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlPlaneConfig {
    /// Address of the REST API.
    #[arg(long, env = "DYNO_CP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The Postgres database (postgres://user@host:port/db).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// The key master file, the same as the data-plane nodes' (API key
    /// secrets derive from it; cluster credentials are sealed with it).
    #[arg(long, env = "DYNO_KEY_MASTER_FILE")]
    pub key_master_file: PathBuf,
    /// The key that signs session tokens (HS256); generated (mode 600) when
    /// the file does not exist. Every replica must read the same file.
    #[arg(long, env = "DYNO_JWT_KEY_FILE")]
    pub jwt_key_file: PathBuf,
    /// A previous signing key, still accepted for verification after a
    /// rotation until its tokens expire (at most --session-ttl-secs).
    #[arg(long)]
    pub jwt_previous_key_file: Option<PathBuf>,
    /// Session lifetime in seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub session_ttl_secs: u64,
    /// Failed logins allowed per email per minute: a burst of this many,
    /// then one every 60/N seconds (a leaky bucket, no window to reset);
    /// more get 429 with Retry-After.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub login_failures_per_minute: u32,
    /// Milliseconds between reconciliation passes.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub reconcile_interval_ms: u64,
    /// Seconds between readings of the nodes' latency histograms (the
    /// console's charts keep an hour of them).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub metrics_interval_secs: u64,
    /// The data plane's public address, shown to users in snippets
    /// (`GET /api/v1/endpoint`); default: the first admin URL of the first
    /// cluster (right for a local cluster, not behind a load balancer).
    #[arg(long, env = "DYNO_PUBLIC_DATA_URL")]
    pub public_data_url: Option<String>,
    /// Registers (or updates) a data-plane cluster at start:
    /// `NAME=ADMIN_URL[,ADMIN_URL…]`.
    #[arg(long, requires = "bootstrap_cluster_token_file")]
    pub bootstrap_cluster: Option<String>,
    /// The file holding that cluster's admin credential.
    #[arg(long)]
    pub bootstrap_cluster_token_file: Option<PathBuf>,
    /// Creates this platform admin at start when no user exists yet.
    #[arg(long, requires = "bootstrap_admin_password_file")]
    pub bootstrap_admin_email: Option<String>,
    /// The file holding that admin's password.
    #[arg(long)]
    pub bootstrap_admin_password_file: Option<PathBuf>,
    /// The control plane's certificate chain (PEM). With --tls-key and
    /// --tls-ca: the API and the console are served over HTTPS, and calls
    /// to the nodes verify them against --tls-ca and present this
    /// certificate (mutual TLS). Reloaded when the files change.
    #[arg(long, env = "DYNO_CP_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) for --tls-cert.
    #[arg(long, env = "DYNO_CP_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate(s) (PEM) the nodes' certificates chain to.
    #[arg(long, env = "DYNO_CP_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl ControlPlaneConfig {
    /// The TLS files, when TLS is on.
    pub fn tls_files(&self) -> anyhow::Result<Option<dyno_tls::TlsFiles>> {
        dyno_tls::TlsFiles::from_options(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_ca.as_deref(),
        )
        .map_err(anyhow::Error::msg)
    }
}
