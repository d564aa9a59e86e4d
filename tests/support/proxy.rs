//! A TCP proxy per directed link between two nodes: the fault injection
//! behind partition and latency tests. Each directed node pair gets its own
//! proxy, so cutting a node off does not disturb the links between the
//! others.
//!
//! A link can be **cut** (new connections are refused, open ones dropped)
//! or given a **delay**: every message, in each direction, is held for
//! `base` plus an exponentially distributed extra drawn from a seeded
//! generator, in order (a message never overtakes the one before it), as a
//! network path with queueing would. A message is a burst of chunks read
//! less than 0.5 ms apart. The delay applies to connections already open.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dyno_core::pbs::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// A one-way delay: `base` plus an exponential extra with mean `mean_extra`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delay {
    /// Every chunk waits at least this long.
    pub base: Duration,
    /// The mean of the random extra.
    pub mean_extra: Duration,
}

impl Delay {
    fn sample(&self, rng: &mut Rng) -> Duration {
        // Inverse transform: -mean * ln(1 - u), u in [0, 1).
        let extra = -self.mean_extra.as_secs_f64() * (1.0 - rng.unit()).ln();
        self.base + Duration::from_secs_f64(extra.max(0.0))
    }
}

/// Chunks read less than this apart count as one message.
const BURST: Duration = Duration::from_micros(500);

/// A link's delay and the generator it draws from.
type Shaping = Arc<Mutex<Option<(Delay, Rng)>>>;

/// One proxied link.
pub struct Proxy {
    /// Where the proxy listens.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    cut_tx: watch::Sender<bool>,
    shaping: Shaping,
}

impl Proxy {
    /// Starts a proxy to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let (cut_tx, cut_rx) = watch::channel(false);
        let shaping: Shaping = Arc::new(Mutex::new(None));
        let flag = Arc::clone(&cut);
        let shape = Arc::clone(&shaping);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    drop(inbound); // refused, as across a partition
                    continue;
                }
                let mut rx = cut_rx.clone();
                let shape = Arc::clone(&shape);
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    inbound.set_nodelay(true).ok();
                    outbound.set_nodelay(true).ok();
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    let both = async {
                        tokio::join!(
                            pump(ir, ow, Arc::clone(&shape)),
                            pump(or, iw, Arc::clone(&shape))
                        )
                    };
                    tokio::select! {
                        _ = both => {}
                        _ = rx.wait_for(|c| *c) => {} // cut: drop both sides
                    }
                });
            }
        });
        Proxy {
            addr,
            cut,
            cut_tx,
            shaping,
        }
    }

    /// Cuts the link (and every open connection on it) or heals it.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        let _ = self.cut_tx.send(cut);
    }

    /// Delays every chunk on the link by `delay` (drawn from a generator
    /// seeded with `seed`), or stops delaying.
    pub fn set_delay(&self, delay: Option<Delay>, seed: u64) {
        *self.shaping.lock().unwrap_or_else(|e| e.into_inner()) =
            delay.map(|d| (d, Rng::new(seed)));
    }
}

/// Copies `from` to `to`, holding each chunk for the link's delay.
async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, shaping: Shaping) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = Instant::now();
        let mut burst: Option<(Instant, Duration)> = None;
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = Instant::now();
            // Chunks that arrive together (one message written in several
            // pieces) travel together: they share one delay.
            let wait = match burst {
                Some((at, wait)) if now - at < BURST => wait,
                _ => {
                    let mut s = shaping.lock().unwrap_or_else(|e| e.into_inner());
                    s.as_mut().map_or(Duration::ZERO, |(d, rng)| d.sample(rng))
                }
            };
            burst = Some((now, wait));
            // In order: a chunk leaves no earlier than the one before it.
            let at = (now + wait).max(last);
            last = at;
            if tx.send((at, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            // The link's delay: the simulated network, not a wait for a
            // condition.
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        to.shutdown().await.ok();
    };
    tokio::join!(reader, writer);
}
