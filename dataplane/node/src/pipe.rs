//! The client side of the replica pipe: one long-lived connection per peer
//! that carries replica puts and gets as id-tagged frames (`PipeFrame` in
//! `proto/internal.proto`).
//!
//! A unary gRPC call opens an HTTP/2 stream, sends and parses headers, goes
//! through tonic's buffer task and wakes several tasks; on the hot path
//! (every write fans out to N−1 replicas, every read to R−1) that overhead
//! dominated. On the pipe a call is one frame on a connection that is
//! already open. The frames travel on the replica link (`link.rs`: plain
//! length-prefixed frames, `--replica-transport pipe`), or on a gRPC
//! bidirectional stream (`Pipe` in the proto, `--replica-transport
//! grpc-stream`, and for peers without the link).
//!
//! * Calls are matched to replies by id; replies may come in any order.
//! * The stream is opened on first use, shared by every call, and reopened
//!   by the next call after it breaks. When it breaks, every call waiting
//!   on it fails as `Unavailable` (the peer is gone: the coordinator
//!   classifies it as unreachable, as it would a refused connection).
//! * A call dropped by its caller (a timeout) forgets its id, so a late
//!   reply is discarded.
//! * A peer that answers the link's handshake with something else (an
//!   older version) gets the gRPC stream; each new connection tries the
//!   link again, so a peer upgraded since gets it. One that does not know
//!   `Pipe` either (`Unimplemented`) gets the unary RPCs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use dyno_proto::internal as pb;
use dyno_proto::internal::pipe_frame::Body;
use dyno_proto::internal::replica_client::ReplicaClient;
use tokio::sync::{mpsc, oneshot};
use tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::config::ReplicaTransport;
use crate::link;
use crate::sys::lock;

type Reply = Result<Body, Status>;

/// One open stream.
#[derive(Debug)]
struct Conn {
    tx: mpsc::UnboundedSender<pb::PipeFrame>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    broken: AtomicBool,
}

impl Conn {
    /// Fails every waiting call and marks the stream unusable.
    fn break_with(&self, why: &str) {
        self.broken.store(true, Ordering::SeqCst);
        for (_, waiter) in lock(&self.pending).drain() {
            // The caller may have given up already.
            waiter.send(Err(Status::unavailable(why.to_owned()))).ok();
        }
    }
}

/// Hands a reply frame to the call waiting for its id (if it still is).
fn deliver(conn: &Conn, frame: pb::PipeFrame) {
    let waiter = lock(&conn.pending).remove(&frame.id);
    if let (Some(w), Some(body)) = (waiter, frame.body) {
        // The caller may have timed out meanwhile.
        w.send(Ok(body)).ok();
    }
}

/// Forgets a call's id when the call is dropped (answered or not).
struct Forget {
    conn: Arc<Conn>,
    id: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        lock(&self.conn.pending).remove(&self.id);
    }
}

/// A peer's pipe (cheap to share).
#[derive(Debug)]
pub struct Pipe {
    client: ReplicaClient<Channel>,
    /// The peer's RPC host and port, for the link (`None`: the URL has
    /// none, and the link is not tried).
    target: Option<(String, u16)>,
    /// This node's TLS material: the link runs over TLS too.
    tls: Option<Arc<dyno_tls::Tls>>,
    /// This node's link counters.
    stats: link::Stats,
    /// The open stream, read by every call (a brief std lock, no await).
    current: Mutex<Option<Arc<Conn>>>,
    /// Held only while a stream is being opened, so one caller opens it.
    opening: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    /// Frames go on the link (`--replica-transport pipe`); each new
    /// connection tries it first, so a peer upgraded since gets it.
    link_wanted: bool,
    /// The last connection found the peer without a link (logged and
    /// counted once per change).
    fell_back: AtomicBool,
    /// Use the unary calls: asked for (`--replica-transport unary`), or the
    /// peer answered `Unimplemented` (an older version without `Pipe`).
    unary: AtomicBool,
}

impl Pipe {
    /// A pipe to the peer at `rpc_url` (`client` is a channel to it),
    /// opened on first use, over `transport` (or a slower one the peer
    /// has), with TLS when `tls` is given.
    pub fn new(
        client: ReplicaClient<Channel>,
        rpc_url: &str,
        transport: ReplicaTransport,
        tls: Option<Arc<dyno_tls::Tls>>,
        stats: link::Stats,
    ) -> Pipe {
        let target = rpc_url
            .parse::<tonic::transport::Uri>()
            .ok()
            .and_then(|u| Some((u.host()?.to_owned(), u.port_u16()?)));
        Pipe {
            client,
            target,
            tls,
            stats,
            current: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            link_wanted: transport == ReplicaTransport::Pipe,
            fell_back: AtomicBool::new(false),
            unary: AtomicBool::new(transport == ReplicaTransport::Unary),
        }
    }

    /// The open stream, if there is one and it is not broken.
    fn live(&self) -> Option<Arc<Conn>> {
        lock(&self.current)
            .as_ref()
            .filter(|c| !c.broken.load(Ordering::SeqCst))
            .cloned()
    }

    /// The open stream, opening it if needed (one opener at a time).
    async fn conn(&self) -> Result<Arc<Conn>, Status> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let _one_opener = self.opening.lock().await;
        if let Some(c) = self.live() {
            return Ok(c); // opened while this caller waited
        }
        let conn = if self.link_wanted {
            match self.open_link().await? {
                Some(conn) => {
                    self.fell_back.store(false, Ordering::Relaxed);
                    conn
                }
                None => {
                    if !self.fell_back.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            peer = ?self.target,
                            "peer has no replica link; using the gRPC stream"
                        );
                        self.stats.fallbacks.inc();
                    }
                    self.open_stream().await?
                }
            }
        } else {
            self.open_stream().await?
        };
        *lock(&self.current) = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Opens the gRPC stream (`Pipe` in the proto).
    async fn open_stream(&self) -> Result<Arc<Conn>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut client = self.client.clone();
        let mut replies = client
            .pipe(UnboundedReceiverStream::new(rx))
            .await?
            .into_inner();
        let conn = Arc::new(Conn {
            tx,
            pending: Mutex::new(HashMap::new()),
            broken: AtomicBool::new(false),
        });
        let reader = Arc::clone(&conn);
        tokio::spawn(async move {
            loop {
                match replies.message().await {
                    Ok(Some(frame)) => {
                        deliver(&reader, frame);
                    }
                    Ok(None) => {
                        reader.break_with("the peer closed the replica pipe");
                        return;
                    }
                    Err(status) => {
                        reader.break_with(&format!("replica pipe broke: {}", status.message()));
                        return;
                    }
                }
            }
        });
        Ok(conn)
    }

    /// Opens the link (`link.rs`): `Ok(None)` when the peer does not speak
    /// it (an older version), an error when it cannot be reached.
    async fn open_link(&self) -> Result<Option<Arc<Conn>>, Status> {
        let Some((host, port)) = &self.target else {
            return Ok(None);
        };
        let unreachable = |e: std::io::Error| Status::unavailable(format!("replica link: {e}"));
        let mut io: Box<dyn link::Io> = match &self.tls {
            Some(tls) => Box::new(
                dyno_tls::TlsConnector::new(Arc::clone(tls))
                    .connect(host, *port)
                    .await
                    .map_err(unreachable)?,
            ),
            None => {
                let tcp = tokio::time::timeout(
                    link::HANDSHAKE_TIMEOUT,
                    // An IPv6 host comes bracketed in a URL.
                    tokio::net::TcpStream::connect((
                        host.trim_start_matches('[').trim_end_matches(']'),
                        *port,
                    )),
                )
                .await
                .map_err(|_| Status::unavailable("replica link: connect timed out"))?
                .map_err(unreachable)?;
                // Small frames both ways: Nagle's algorithm would hold them.
                tcp.set_nodelay(true).map_err(unreachable)?;
                Box::new(tcp)
            }
        };
        match tokio::time::timeout(link::HANDSHAKE_TIMEOUT, link::handshake(&mut io)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Ok(None),
            // An older server resets a connection that does not open with
            // HTTP/2's preface.
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(None);
            }
            Ok(Err(e)) => return Err(unreachable(e)),
            Err(_) => return Err(Status::unavailable("replica link: handshake timed out")),
        }
        let (r, w) = tokio::io::split(io);
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            tx,
            pending: Mutex::new(HashMap::new()),
            broken: AtomicBool::new(false),
        });
        // The tasks hold the connection weakly: once the pipe lets go of it
        // (a newer one replaced it, or the peer left), its sender drops, the
        // writer shuts the socket, the peer closes, and the reader ends.
        let writer: Weak<Conn> = Arc::downgrade(&conn);
        let stats = self.stats.clone();
        tokio::spawn(async move {
            if let Err(e) = link::write_frames(w, rx, stats).await
                && let Some(c) = writer.upgrade()
            {
                c.break_with(&format!("replica link broke: {e}"));
            }
        });
        let reader: Weak<Conn> = Arc::downgrade(&conn);
        tokio::spawn(async move {
            let ended = link::read_frames(r, |frame| {
                if let Some(c) = reader.upgrade() {
                    deliver(&c, frame);
                }
            })
            .await;
            if let Some(c) = reader.upgrade() {
                c.break_with(&match ended {
                    Ok(()) => "the peer closed the replica link".to_owned(),
                    Err(e) => format!("replica link broke: {e}"),
                });
            }
        });
        Ok(Some(conn))
    }

    /// The open stream, or `None` when the peer has no pipe (it answered
    /// `Unimplemented`: an older version) and the unary calls must be used.
    async fn usable(&self) -> Result<Option<Arc<Conn>>, Status> {
        if self.unary.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match self.conn().await {
            Ok(c) => Ok(Some(c)),
            Err(s) if s.code() == Code::Unimplemented => {
                tracing::info!("peer has no replica pipe; using unary calls");
                self.unary.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(s) => Err(s),
        }
    }

    /// Sends one request frame on `conn` and waits for its reply.
    async fn call(&self, conn: Arc<Conn>, body: Body) -> Reply {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&conn.pending).insert(id, tx);
        let _forget = Forget {
            conn: Arc::clone(&conn),
            id,
        };
        if conn
            .tx
            .send(pb::PipeFrame {
                id,
                body: Some(body),
            })
            .is_err()
        {
            conn.break_with("the replica pipe is closed");
            return Err(Status::unavailable("the replica pipe is closed"));
        }
        match rx.await {
            Ok(Ok(Body::Error(e))) => Err(Status::new(Code::from(e.code), e.message)),
            Ok(reply) => reply,
            Err(_) => Err(Status::unavailable("the replica pipe broke")),
        }
    }

    /// A replica put over the pipe (or the unary call, for an old peer).
    pub async fn put(&self, req: pb::ReplicaPutRequest) -> Result<pb::ReplicaPutResponse, Status> {
        match self.usable().await? {
            Some(conn) => match self.call(conn, Body::Put(req)).await? {
                Body::PutOk(r) => Ok(r),
                other => Err(unexpected(&other)),
            },
            None => {
                let mut c = self.client.clone();
                c.put(req).await.map(tonic::Response::into_inner)
            }
        }
    }

    /// A replica get over the pipe (or the unary call, for an old peer).
    pub async fn get(&self, req: pb::ReplicaGetRequest) -> Result<pb::ReplicaGetResponse, Status> {
        match self.usable().await? {
            Some(conn) => match self.call(conn, Body::Get(req)).await? {
                Body::GetOk(r) => Ok(r),
                other => Err(unexpected(&other)),
            },
            None => {
                let mut c = self.client.clone();
                c.get(req).await.map(tonic::Response::into_inner)
            }
        }
    }
}

fn unexpected(body: &Body) -> Status {
    let what = match body {
        Body::Put(_) => "put",
        Body::Get(_) => "get",
        Body::PutOk(_) => "put_ok",
        Body::GetOk(_) => "get_ok",
        Body::Error(_) => "error",
    };
    Status::internal(format!(
        "the replica pipe answered with an unexpected {what} frame"
    ))
}
