//! `dyno-bare`: the floor that Dyno's HTTP stack is measured against.
//!
//! It serves the part of Dyno's HTTP API that `dyno bench` uses (item GET
//! and PUT, table creation, health) with the same web stack (axum on
//! hyper, TCP_NODELAY, the same runtime) but keeps values in an in-memory
//! hash map: no replication, no versions, no storage engine, no metrics.
//! Dyno's throughput over this server's says what the Dynamo engine and
//! RocksDB cost on top of HTTP (`bench/compare.sh` reports the ratio).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;

/// Command-line options.
#[derive(Debug, Parser)]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:7900")]
    addr: SocketAddr,
}

/// Shards of the map, so that writers to different keys rarely contend.
const SHARDS: usize = 64;

#[derive(Debug)]
struct Store {
    shards: Vec<Mutex<HashMap<String, Bytes>>>,
}

impl Store {
    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Bytes>> {
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.shards[(h as usize) % SHARDS]
    }
}

type Shared = Arc<Store>;

async fn get_item(State(s): State<Shared>, Path((_t, k)): Path<(String, String)>) -> Response {
    let value = s
        .shard(&k)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&k)
        .cloned();
    match value {
        Some(v) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::HeaderName::from_static("x-dyno-context"), "AQ"),
            ],
            v,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn put_item(
    State(s): State<Shared>,
    Path((_t, k)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    s.shard(&k)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(k, body);
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"context":"AQ"}"#,
    )
        .into_response()
}

async fn ok() -> &'static str {
    "{}"
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = Arc::new(Store {
        shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
    });
    let app = Router::new()
        .route("/v1/tables/{t}/items/{k}", get(get_item).put(put_item))
        .route("/admin/v1/tables/{t}", get(ok).put(ok))
        .route("/admin/v1/health", get(ok))
        .with_state(store);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(args.addr).await?;
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                tcp.set_nodelay(true).ok();
            });
            eprintln!("dyno-bare serving on {}", args.addr);
            axum::serve(listener, app).await?;
            Ok(())
        })
}
