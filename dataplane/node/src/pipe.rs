//! The client side of the replica pipe (`Pipe` in `proto/internal.proto`):
//! one long-lived bidirectional stream per peer that carries replica puts
//! and gets as id-tagged frames.
//!
//! A unary gRPC call opens an HTTP/2 stream, sends and parses headers, goes
//! through tonic's buffer task and wakes several tasks; on the hot path
//! (every write fans out to N−1 replicas, every read to R−1) that overhead
//! dominated. On the pipe a call is one frame on a stream that is already
//! open; h2 coalesces frames written close together into one socket write.
//!
//! * Calls are matched to replies by id; replies may come in any order.
//! * The stream is opened on first use, shared by every call, and reopened
//!   by the next call after it breaks. When it breaks, every call waiting
//!   on it fails as `Unavailable` (the peer is gone: the coordinator
//!   classifies it as unreachable, as it would a refused connection).
//! * A call dropped by its caller (a timeout) forgets its id, so a late
//!   reply is discarded.
//! * A peer that does not know `Pipe` (an older version, `Unimplemented`)
//!   is called with the unary RPCs instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dyno_proto::internal as pb;
use dyno_proto::internal::pipe_frame::Body;
use dyno_proto::internal::replica_client::ReplicaClient;
use tokio::sync::{mpsc, oneshot};
use tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

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
    /// The open stream, read by every call (a brief std lock, no await).
    current: Mutex<Option<Arc<Conn>>>,
    /// Held only while a stream is being opened, so one caller opens it.
    opening: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    /// Use the unary calls: asked for (`--replica-transport unary`), or the
    /// peer answered `Unimplemented` (an older version without `Pipe`).
    unary: AtomicBool,
}

impl Pipe {
    /// A pipe over `client`'s connection (opened on first use); with
    /// `enabled` false every call is a unary RPC.
    pub fn new(client: ReplicaClient<Channel>, enabled: bool) -> Pipe {
        Pipe {
            client,
            current: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            unary: AtomicBool::new(!enabled),
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
                        let waiter = lock(&reader.pending).remove(&frame.id);
                        if let (Some(w), Some(body)) = (waiter, frame.body) {
                            // The caller may have timed out meanwhile.
                            w.send(Ok(body)).ok();
                        }
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
        *lock(&self.current) = Some(Arc::clone(&conn));
        Ok(conn)
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
