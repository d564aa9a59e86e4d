//! TLS for every Dyno process: the nodes' client-facing HTTPS and gRPC
//! port, mutual TLS on the node-to-node port, and the control plane's
//! HTTPS and its calls to the nodes.
//!
//! * [`Tls`] holds a process's certificate, key and trusted CA, read from
//!   three PEM files, and the rustls configurations made from them. It
//!   looks at the files again (at most once a second, on the next
//!   handshake) and swaps in new configurations when they changed, so a
//!   renewed certificate is used without a restart; a file that does not
//!   parse is reported and the previous certificate is kept.
//! * [`TlsListener`] accepts TCP connections and completes their
//!   handshakes off the accept loop; it is an `axum::serve::Listener` and a
//!   stream of connections for tonic's `serve_with_incoming`.
//! * [`TlsConnector`] is a tower connector for tonic channels: every new
//!   connection verifies the server against the CA and presents this
//!   process's certificate.
//! * [`dev`] makes a local CA and certificates (for `dyno dev --tls` and
//!   tests).
//!
//! The cryptography is rustls with *ring*: no OpenSSL, no system trust
//! store. Only the cluster's CA is trusted.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub mod dev;

/// How often, at most, the files are looked at again.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// How long a client gets to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection attempt to a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds no usable PEM.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the material (for example, a key that does not
    /// match the certificate).
    #[error("{0}")]
    Rustls(String),
    /// Generating certificates failed.
    #[error("generating a certificate: {0}")]
    Generate(String),
}

/// The command-line flags that name a process's TLS files, in the order
/// certificate, key, CA (the same for `dyno node` and `dyno controlplane`).
pub const FLAGS: [&str; 3] = ["--tls-cert", "--tls-key", "--tls-ca"];

/// Where a process's TLS material is: its certificate chain, its private
/// key, and the CA certificate(s) it trusts for its peers, all PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (leaf first).
    pub cert: PathBuf,
    /// The private key of the leaf.
    pub key: PathBuf,
    /// The CA certificate(s) that sign every certificate of the cluster.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The command-line flags that give a process these files
    /// (`--tls-cert`, `--tls-key`, `--tls-ca`: the same for `dyno node`
    /// and `dyno controlplane`).
    pub fn to_args(&self) -> Vec<String> {
        let [cert, key, ca] = FLAGS.map(str::to_owned);
        vec![
            cert,
            self.cert.display().to_string(),
            key,
            self.key.display().to_string(),
            ca,
            self.ca.display().to_string(),
        ]
    }

    /// The three paths, or `None` when none is given; an error naming the
    /// missing flags ([`FLAGS`]) when only some are.
    pub fn from_options(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Option<TlsFiles>, String> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
                cert: cert.to_owned(),
                key: key.to_owned(),
                ca: ca.to_owned(),
            })),
            (cert, key, ca) => {
                let missing: Vec<&str> = [cert.is_none(), key.is_none(), ca.is_none()]
                    .iter()
                    .zip(FLAGS)
                    .filter(|(m, _)| **m)
                    .map(|(_, n)| n)
                    .collect();
                Err(format!(
                    "TLS needs {}, {} and {} together; missing {}",
                    FLAGS[0],
                    FLAGS[1],
                    FLAGS[2],
                    missing.join(", ")
                ))
            }
        }
    }
}

/// Whether a server asks its clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present a certificate signed by the CA (the
    /// node-to-node port).
    Required,
    /// A client may present one, which must then be signed by the CA
    /// (the client-facing port: applications authenticate with API keys;
    /// the control plane presents its certificate).
    Optional,
}

/// What the files looked like when last read: modification time and
/// length of each.
type Stamp = [(Option<SystemTime>, u64); 3];

/// The configurations made from one reading of the files.
#[derive(Clone)]
struct Configs {
    stamp: Stamp,
    mutual: Arc<ServerConfig>,
    optional: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// What [`Tls`] has done, for status pages and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsStatus {
    /// Times new material was taken into use since start-up.
    pub reloads: u64,
    /// Times changed files could not be used (the old material stayed).
    pub reload_failures: u64,
    /// The last such failure.
    pub last_error: Option<String>,
    /// Handshakes refused or failed on this process's listeners.
    pub handshake_failures: u64,
}

/// A process's TLS material and the rustls configurations made from it,
/// reloaded when the files change.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<Configs>>,
    last_check: Mutex<Instant>,
    generation: AtomicU64,
    status: Mutex<TlsStatus>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the files and builds the configurations.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let configs = build(&files)?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(Arc::new(configs)),
            last_check: Mutex::new(Instant::now()),
            generation: AtomicU64::new(0),
            status: Mutex::new(TlsStatus::default()),
        }))
    }

    /// The files this material comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Bumped each time new material is taken into use, so that holders
    /// of long-lived clients know to build new ones.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// What has happened so far.
    pub fn status(&self) -> TlsStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The server configuration for new connections.
    pub fn server_config(&self, auth: ClientAuth) -> Arc<ServerConfig> {
        let c = self.configs();
        match auth {
            ClientAuth::Required => Arc::clone(&c.mutual),
            ClientAuth::Optional => Arc::clone(&c.optional),
        }
    }

    /// The client configuration for new connections: trusts only the CA,
    /// presents this process's certificate.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.configs().client)
    }

    /// Looks at the files now: `Ok(true)` when they changed and the new
    /// material is in use, `Ok(false)` when they did not change, and the
    /// error when they changed but cannot be used (the old material stays).
    pub fn reload(&self) -> Result<bool, TlsError> {
        *self.last_check.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let stamp = stamp(&self.files);
        if stamp == self.read_current().stamp {
            return Ok(false);
        }
        match build(&self.files) {
            Ok(configs) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(configs);
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.with_status(|s| s.reloads += 1);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                Ok(true)
            }
            Err(e) => {
                // Remember the stamp of what failed, so that it is reported
                // once per change rather than on every handshake.
                let mut failed = Configs::clone(&self.read_current());
                failed.stamp = stamp;
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(failed);
                self.with_status(|s| {
                    s.reload_failures += 1;
                    s.last_error = Some(e.to_string());
                });
                tracing::error!(error = %e, "the changed TLS files cannot be used; keeping the previous certificate");
                Err(e)
            }
        }
    }

    fn configs(&self) -> Arc<Configs> {
        let due = {
            let mut last = self.last_check.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.elapsed() >= RELOAD_CHECK;
            if due {
                *last = Instant::now();
            }
            due
        };
        if due {
            // Failures are logged and counted by `reload`.
            let _ignored = self.reload();
        }
        self.read_current()
    }

    fn read_current(&self) -> Arc<Configs> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn with_status(&self, f: impl FnOnce(&mut TlsStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn handshake_failed(&self) {
        self.with_status(|s| s.handshake_failures += 1);
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    let one = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    };
    [one(&files.cert), one(&files.key), one(&files.ca)]
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// rustls with *ring*. (The aws-lc-rs provider adds post-quantum key
/// exchange, but needs cmake and minutes more of C compilation per build.)
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(files: &TlsFiles) -> Result<Configs, TlsError> {
    // The stamp is taken before reading, so that a file changed while it
    // is read is read again at the next check.
    let stamp = stamp(files);
    let chain = certs(&files.cert)?;
    let key_bytes = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Pem {
        path: files.key.clone(),
        what: format!("no usable private key: {e}"),
    })?;
    let mut roots = RootCertStore::empty();
    for ca in certs(&files.ca)? {
        roots.add(ca).map_err(|e| TlsError::Pem {
            path: files.ca.clone(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let roots = Arc::new(roots);
    let rustls_err = |e: rustls::Error| TlsError::Rustls(e.to_string());
    let server = |auth: ClientAuth| -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider());
        let verifier = match auth {
            ClientAuth::Required => verifier.build(),
            ClientAuth::Optional => verifier.allow_unauthenticated().build(),
        }
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                TlsError::Rustls(format!(
                    "{} and {} do not make a usable certificate: {e}",
                    files.cert.display(),
                    files.key.display()
                ))
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    };
    let mutual = server(ClientAuth::Required)?;
    let optional = server(ClientAuth::Optional)?;
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .with_root_certificates(Arc::clone(&roots))
        .with_client_auth_cert(chain, key)
        .map_err(rustls_err)?;
    Ok(Configs {
        stamp,
        mutual,
        optional,
        client: Arc::new(client),
    })
}

/// A client configuration that trusts only the CA certificate(s) in
/// `ca` and presents no certificate (for command-line clients and tests).
pub fn client_trusting(ca: &Path) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: ca.to_owned(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The addresses among `addrs` that other hosts can reach (not loopback),
/// for the warning a process logs when it serves them without TLS; `None`
/// when every one is loopback.
pub fn plaintext_exposure(addrs: &[SocketAddr]) -> Option<String> {
    let exposed: Vec<String> = addrs
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(|a| a.to_string())
        .collect();
    (!exposed.is_empty()).then(|| exposed.join(", "))
}

/// One accepted connection whose handshake is complete.
#[derive(Debug)]
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl TlsConn {
    /// The client's certificate chain, when it presented one (always, on a
    /// [`ClientAuth::Required`] listener).
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.0.get_ref().1.peer_certificates()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

/// A TCP listener whose connections come out with their TLS handshake
/// done. Handshakes run on their own tasks (a slow or hostile client never
/// holds up the others) and fail after 10 s; failures are counted in
/// [`TlsStatus::handshake_failures`] and logged. Dropping it stops
/// accepting.
#[derive(Debug)]
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsConn, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TlsListener {
    /// Serves TLS on `listener` with `tls`'s current certificate (read again
    /// for every handshake, so a reload applies to the next connection).
    pub fn new(listener: TcpListener, tls: Arc<Tls>, auth: ClientAuth) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let accept_task = tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather
                        // than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config(auth));
                let tx = tx.clone();
                let tls = Arc::clone(&tls);
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            // Err: the server is shutting down.
                            let _closed = tx.send((TlsConn(stream), addr)).await;
                        }
                        Ok(Err(e)) => {
                            tls.handshake_failed();
                            // A certificate refused (a peer of another
                            // cluster, an expired certificate) is worth an
                            // operator's attention; a port scanner or a
                            // client speaking plain HTTP is not.
                            if is_certificate_error(&e) {
                                tracing::warn!(peer = %addr, local = %local, error = %e, "TLS handshake refused: certificate");
                            } else {
                                tracing::debug!(peer = %addr, local = %local, error = %e, "TLS handshake failed");
                            }
                        }
                        Err(_) => {
                            tls.handshake_failed();
                            tracing::debug!(peer = %addr, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener {
            rx,
            local,
            accept_task,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TlsConn, SocketAddr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task ended (only when aborted): never return.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl tokio_stream::Stream for TlsListener {
    type Item = Result<TlsConn, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(|(conn, _)| Ok(conn)))
    }
}

/// Whether a failed handshake was about a certificate (either side's).
fn is_certificate_error(e: &io::Error) -> bool {
    use rustls::AlertDescription as A;
    match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => true,
        Some(rustls::Error::AlertReceived(a)) => matches!(
            a,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::CertificateRequired
        ),
        _ => false,
    }
}

/// Connects tonic channels over TLS: verifies the server against the CA
/// (by the host name or IP address of the URL) and presents this process's
/// certificate. Each connection uses the material current at that time.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    tls: Arc<Tls>,
}

impl TlsConnector {
    /// A connector using `tls`.
    pub fn new(tls: Arc<Tls>) -> TlsConnector {
        TlsConnector { tls }
    }

    /// Connects to `host:port` and completes the handshake.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = server_name(host)?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(self.tls.client_config())
            .connect(name, tcp)
            .await
    }
}

/// The name a server's certificate must carry for `host` (a DNS name or an
/// IP address, IPv6 with or without brackets).
pub fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))
}

impl tower::Service<tonic::transport::Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::transport::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in the URL"))?
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            this.connect(&host, port)
                .await
                .map(hyper_util::rt::TokioIo::new)
        })
    }
}

/// A reqwest client builder that works in any process, for plain HTTP:
/// installs *ring* as the process's default crypto provider first (reqwest
/// is built without one, and would otherwise panic on its first client),
/// and trusts no certificate at all, so an `https://` URL fails clearly
/// instead of trusting the system's store: Dyno's processes only ever talk
/// to their own cluster, whose CA is given explicitly
/// ([`https_client_builder`], [`client_trusting`]).
#[allow(clippy::disallowed_methods)]
pub fn http_client_builder() -> reqwest::ClientBuilder {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Err: another provider was installed first, which serves too.
        let _already = Arc::unwrap_or_clone(provider()).install_default();
    });
    let builder = reqwest::Client::builder();
    match ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions() {
        Ok(config) => builder.tls_backend_preconfigured(
            config
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        ),
        Err(_) => builder,
    }
}

/// A reqwest client builder for HTTPS with `tls`: trusts only the CA and
/// presents this process's certificate.
pub fn https_client_builder(tls: &Tls) -> reqwest::ClientBuilder {
    http_client_builder().tls_backend_preconfigured(ClientConfig::clone(&tls.client_config()))
}

/// What a [`ReloadingClient`] applies to each builder.
pub type Configure = Arc<dyn Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + Sync>;

/// A reqwest client built again whenever the TLS material is reloaded, so
/// that long-lived callers present the renewed certificate. Plain HTTP
/// without TLS material.
pub struct ReloadingClient {
    tls: Option<Arc<Tls>>,
    configure: Configure,
    current: Mutex<(u64, reqwest::Client)>,
}

impl fmt::Debug for ReloadingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingClient")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ReloadingClient {
    /// A client over `tls` (or plain HTTP), with `configure` applied to each
    /// builder (timeouts and the like).
    pub fn new(tls: Option<Arc<Tls>>, configure: Configure) -> Result<ReloadingClient, TlsError> {
        let client = Self::build(tls.as_deref(), &configure)?;
        let generation = tls.as_ref().map_or(0, |t| t.generation());
        Ok(ReloadingClient {
            tls,
            configure,
            current: Mutex::new((generation, client)),
        })
    }

    fn build(tls: Option<&Tls>, configure: &Configure) -> Result<reqwest::Client, TlsError> {
        let builder = match tls {
            Some(tls) => https_client_builder(tls),
            None => http_client_builder(),
        };
        configure(builder)
            .build()
            .map_err(|e| TlsError::Rustls(format!("building an HTTP client: {e}")))
    }

    /// Whether the client speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The client for the material current now (cheap: a clone of a
    /// shared handle).
    pub fn get(&self) -> reqwest::Client {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tls) = &self.tls {
            // Looks at the files when a check is due.
            tls.configs();
            let generation = tls.generation();
            if generation != current.0 {
                match Self::build(Some(tls), &self.configure) {
                    Ok(client) => *current = (generation, client),
                    Err(e) => {
                        // Tried once per reload, not on every call.
                        current.0 = generation;
                        tracing::error!(error = %e, "keeping the HTTP client of the previous certificate")
                    }
                }
            }
        }
        current.1.clone()
    }
}
