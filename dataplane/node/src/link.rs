//! The replica link: replica puts and gets as length-prefixed frames on a
//! plain connection (TCP, or TLS when the cluster has TLS) to the peer's
//! RPC port, without HTTP/2 or gRPC in between.
//!
//! Every write fans out to N−1 replicas and every read to R−1, so this is
//! the hottest path between nodes. On the gRPC stream (`pipe.rs`) a frame
//! went through tonic's encoder, h2's framing and flow control and four or
//! five task hand-offs on each side; here a caller queues its frame, one
//! writer task per connection writes every queued frame in one system call,
//! and one reader task hands replies to their callers.
//!
//! Wire format:
//! * The client opens with [`MAGIC`]; a server that speaks the link answers
//!   with the same eight bytes. Anything else (an older node's HTTP/2
//!   server sends its SETTINGS frame, or closes) means the peer has no
//!   link, and the caller falls back to the gRPC stream.
//! * Then, both ways, frames: a 4-byte big-endian length and that many
//!   bytes of a protobuf `PipeFrame` (`proto/internal.proto`), the message
//!   the gRPC stream carries. Requests and replies are matched by id.
//! * A frame longer than [`MAX_FRAME`] or one that does not decode ends the
//!   connection (its calls fail as unavailable and the next call reconnects).
//!
//! The server side shares the RPC port with gRPC: [`sniff`] reads the
//! first bytes of each accepted connection and hands the connection either
//! to the link server or, with those bytes put back, to tonic.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use dyno_proto::internal as pb;
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

/// The first eight bytes of a link connection, both ways (the last byte is
/// the protocol version).
pub const MAGIC: &[u8; 8] = b"DYNOLNK1";

/// The longest frame accepted: an item batch of the largest values with
/// room to spare (values are at most 1 MiB).
pub const MAX_FRAME: usize = 32 << 20;

/// A writer stops gathering queued frames into one write past this size.
const MAX_BATCH: usize = 256 << 10;

/// How long a handshake (connect, magic both ways) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(500);

/// Counters of a node's replica links (exported as
/// `dyno_replica_link_*`; cheap to clone, clones share the counts).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Frames written (calls from this node, replies from it).
    pub frames: Counter,
    /// Socket writes that carried them: frames ÷ writes is how many calls
    /// share a system call.
    pub writes: Counter,
    /// Peers found without a link (an older version), called on the gRPC
    /// stream instead.
    pub fallbacks: Counter,
}

/// A connection the link runs on (TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Appends `frame`, length-prefixed, to `buf`.
pub fn encode(frame: &pb::PipeFrame, buf: &mut BytesMut) {
    let len = frame.encoded_len();
    buf.reserve(4 + len);
    // `encoded_len` is far below u32::MAX for any frame a node builds
    // (objects are at most a few MiB).
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Cannot fail: the buffer was just given the room.
    frame.encode(buf).ok();
}

/// Takes the first whole frame off `buf`: `Ok(None)` until one has
/// arrived; an error for a frame too long or one that does not decode.
pub fn decode(buf: &mut BytesMut) -> io::Result<Option<pb::PipeFrame>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a link frame of {len} bytes is over the limit of {MAX_FRAME}"),
        ));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len).freeze();
    pb::PipeFrame::decode(body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad link frame: {e}")))
}

/// Writes the frames sent on `rx` to `w` until every sender is gone (then
/// shuts the connection's write side) or a write fails. Frames queued
/// meanwhile, and by the tasks that were ready to run when the first
/// arrived, go out together in one write: under load, one system call
/// carries many calls.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<pb::PipeFrame>,
    stats: Stats,
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(64 << 10);
    while let Some(frame) = rx.recv().await {
        encode(&frame, &mut buf);
        let mut frames = 1;
        // Let the tasks already runnable on this thread run first: under
        // load they queue more frames, which then share this system call
        // (tokio runs a task woken by a send next, so without this most
        // writes carried one or two frames). With nothing else runnable it
        // costs one trip through the scheduler, no waiting. Measured on 3
        // nodes, YCSB-A: 1.9 → 0.6 sends per operation, CPU per operation
        // down about 12% (bench/MICRO.md, seventh pass).
        tokio::task::yield_now().await;
        while buf.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(frame) => {
                    encode(&frame, &mut buf);
                    frames += 1;
                }
                Err(_) => break,
            }
        }
        w.write_all(&buf).await?;
        stats.frames.inc_by(frames);
        stats.writes.inc();
        // A no-op on TCP; TLS writes out its buffered records.
        w.flush().await?;
        buf.clear();
        if buf.capacity() > 4 * MAX_BATCH {
            // One huge frame (a batch of large items) is not kept around.
            buf = BytesMut::with_capacity(64 << 10);
        }
    }
    w.shutdown().await
}

/// Reads frames from `r` and gives each to `on_frame` until the peer
/// closes the connection (`Ok`) or it fails or sends a bad frame (`Err`).
pub async fn read_frames<R: AsyncRead + Unpin>(
    mut r: R,
    mut on_frame: impl FnMut(pb::PipeFrame),
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        while let Some(frame) = decode(&mut buf)? {
            on_frame(frame);
        }
        if buf.capacity() - buf.len() < 4 << 10 {
            buf.reserve(64 << 10);
        }
        if r.read_buf(&mut buf).await? == 0 {
            return if buf.is_empty() {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the link closed in the middle of a frame",
                ))
            };
        }
    }
}

/// Opens the link on a fresh connection: sends [`MAGIC`] and waits for the
/// server's. `Ok(false)`: the peer answered something else or closed (it
/// has no link; use the gRPC stream).
pub async fn handshake(io: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> io::Result<bool> {
    io.write_all(MAGIC).await?;
    io.flush().await?;
    let mut got = [0u8; 8];
    let mut n = 0;
    while n < got.len() {
        match io.read(&mut got[n..]).await? {
            0 => return Ok(false),
            k => n += k,
        }
    }
    Ok(&got == MAGIC)
}

/// What an accepted connection on the RPC port turned out to be.
#[derive(Debug)]
pub enum Sniffed<IO> {
    /// A replica link (its magic consumed; answer with [`MAGIC`]).
    Link(IO),
    /// Anything else (gRPC), with the bytes read so far put back.
    Other(Rewound<IO>),
}

/// Reads just enough of a new connection to tell a link from gRPC: an
/// HTTP/2 client opens with `PRI * HTTP/2.0…`, a link with [`MAGIC`].
pub async fn sniff<IO: AsyncRead + Unpin>(mut io: IO) -> io::Result<Sniffed<IO>> {
    let mut got = [0u8; 8];
    let mut n = 0;
    while n < got.len() {
        let k = io.read(&mut got[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
        if got[..n] != MAGIC[..n] {
            break; // not a link: hand over what was read
        }
    }
    if n == got.len() && &got == MAGIC {
        return Ok(Sniffed::Link(io));
    }
    Ok(Sniffed::Other(Rewound {
        prefix: got,
        pos: 0,
        len: n,
        io,
    }))
}

/// A connection with some bytes already read from it put back in front.
#[derive(Debug)]
pub struct Rewound<IO> {
    prefix: [u8; 8],
    pos: usize,
    len: usize,
    io: IO,
}

impl<IO> Rewound<IO> {
    /// The connection underneath.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewound<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.len {
            let k = (self.len - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + k]);
            self.pos += k;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewound<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Rewound<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::pipe_frame::Body;

    fn get(id: u64, key: &str) -> pb::PipeFrame {
        pb::PipeFrame {
            id,
            body: Some(Body::Get(pb::ReplicaGetRequest {
                table: "t".into(),
                key: key.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn frames_decode_only_once_whole_and_in_order() {
        let mut wire = BytesMut::new();
        for i in 0..3 {
            encode(&get(i, &format!("k{i}")), &mut wire);
        }
        let whole = wire.freeze();
        // Fed one byte at a time, each frame appears exactly when its last
        // byte has arrived.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in whole.iter() {
            buf.put_u8(*b);
            while let Some(f) = decode(&mut buf).expect("decode") {
                out.push((f.id, buf.len()));
            }
        }
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(out.iter().all(|o| o.1 == 0), "{out:?}");
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_or_garbled_frame_is_an_error_not_a_panic() {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::try_from(MAX_FRAME + 1).expect("fits"));
        let err = decode(&mut buf).expect_err("oversized");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("over the limit"), "{err}");

        let mut buf = BytesMut::new();
        buf.put_u32(3);
        buf.put_slice(&[0xff, 0xff, 0xff]);
        let err = decode(&mut buf).expect_err("garbage");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn queued_frames_share_a_write_and_arrive_whole() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (tx, rx) = mpsc::unbounded_channel();
        // Queued before the writer runs: one write carries all of them.
        for i in 0..100 {
            tx.send(get(i, "k")).expect("send");
        }
        drop(tx);
        let stats = Stats::default();
        write_frames(client, rx, stats.clone())
            .await
            .expect("write");
        assert_eq!((stats.frames.get(), stats.writes.get()), (100, 1));
        let mut ids = Vec::new();
        read_frames(server, |f| ids.push(f.id)).await.expect("read");
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
    }

    /// Counts the writes made to it.
    #[derive(Default)]
    struct CountingWriter {
        writes: usize,
    }

    impl AsyncWrite for CountingWriter {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_from_tasks_ready_when_the_writer_wakes_share_its_write() {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Stats::default();
        let writer = tokio::spawn(write_frames(CountingWriter::default(), rx, stats.clone()));
        tokio::task::yield_now().await; // the writer now waits for a frame
        // One task sends and, after it, makes two more ready; each of those
        // sends one frame. The writer is woken by the first send, before
        // the other two have run.
        let first = tx.clone();
        let others: Vec<_> = (1..3).map(|_| tx.clone()).collect();
        drop(tx);
        tokio::spawn(async move {
            first.send(get(0, "k")).expect("send");
            for (i, tx) in (1..).zip(others) {
                tokio::spawn(async move { tx.send(get(i, "k")).expect("send") });
            }
        });
        writer.await.expect("join").expect("write");
        assert_eq!(stats.frames.get(), 3);
        assert_eq!(stats.writes.get(), 1, "the frames did not share a write");
    }

    #[tokio::test]
    async fn a_connection_cut_mid_frame_is_an_error() {
        let mut wire = BytesMut::new();
        encode(&get(1, "key"), &mut wire);
        let cut = &wire[..wire.len() - 1];
        let err = read_frames(cut, |_| panic!("no frame is whole"))
            .await
            .expect_err("cut");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn the_handshake_tells_a_link_server_from_an_http2_one() {
        // A link server answers the magic with the magic.
        let (mut client, server) = tokio::io::duplex(1024);
        let srv = tokio::spawn(async move {
            match sniff(server).await.expect("sniff") {
                Sniffed::Link(mut io) => {
                    io.write_all(MAGIC).await.expect("answer");
                    true
                }
                Sniffed::Other(_) => false,
            }
        });
        assert!(handshake(&mut client).await.expect("handshake"));
        assert!(srv.await.expect("server"), "the server saw no link");

        // An HTTP/2 server sends its SETTINGS frame first: no link.
        let (mut client, mut server) = tokio::io::duplex(1024);
        server
            .write_all(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100])
            .await
            .expect("settings");
        assert!(!handshake(&mut client).await.expect("handshake"));

        // A server that closes at once: no link either.
        let (mut client, server) = tokio::io::duplex(1024);
        drop(server);
        match handshake(&mut client).await {
            Ok(linked) => assert!(!linked),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}"),
        }
    }

    #[tokio::test]
    async fn a_grpc_connection_is_handed_on_with_its_first_bytes() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        for sent in [&preface[..], b"DYNO", b"DYNOLNK2 and more", b""] {
            let (mut client, server) = tokio::io::duplex(1024);
            client.write_all(sent).await.expect("send");
            drop(client);
            let Sniffed::Other(mut rest) = sniff(server).await.expect("sniff") else {
                panic!("{sent:?} taken for a link");
            };
            let mut back = Vec::new();
            rest.read_to_end(&mut back).await.expect("read");
            assert_eq!(back, sent, "the bytes read were not all put back");
        }
    }
}
