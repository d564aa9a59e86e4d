//! The systems a benchmark drives, each behind one connection per client:
//! Dyno over HTTP or gRPC, Redis (RESP over TCP), and etcd (its v3 JSON
//! gateway).

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use dyno_proto::public::dyno_client::DynoClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; for a read, the context to write back with (Dyno only).
    Ok(Option<String>),
    /// A read found nothing.
    NotFound,
    /// The system said it cannot serve now (HTTP 503, gRPC Unavailable).
    Unavailable,
    /// Anything else.
    Error(String),
}

/// Which system, and how to reach it.
#[derive(Debug, Clone)]
pub enum Target {
    /// Dyno's HTTP API, on any of `urls` (requests go round-robin).
    DynoHttp {
        /// Node URLs.
        urls: Vec<String>,
        /// Table.
        table: String,
        /// Per-request R and W.
        r: Option<u32>,
        /// Per-request W.
        w: Option<u32>,
    },
    /// Dyno's gRPC API.
    DynoGrpc {
        /// Node URLs.
        urls: Vec<String>,
        /// Table.
        table: String,
        /// Per-request R.
        r: Option<u32>,
        /// Per-request W.
        w: Option<u32>,
    },
    /// A Redis server.
    Redis {
        /// host:port.
        addr: String,
    },
    /// etcd's JSON gateway (v3 API).
    Etcd {
        /// Member URLs.
        urls: Vec<String>,
    },
    /// Dyno's DynamoDB-compatible API (SigV4-signed GetItem and PutItem).
    Dynamo {
        /// Node URLs.
        urls: Vec<String>,
        /// Table.
        table: String,
        /// The API key's access key id and secret.
        creds: AwsCreds,
    },
}

impl Target {
    /// How many servers requests are spread over.
    pub fn servers(&self) -> usize {
        match self {
            Target::DynoHttp { urls, .. }
            | Target::DynoGrpc { urls, .. }
            | Target::Etcd { urls }
            | Target::Dynamo { urls, .. } => urls.len().max(1),
            Target::Redis { .. } => 1,
        }
    }
}

/// An access key id and secret.
#[derive(Clone)]
pub struct AwsCreds {
    /// The access key id.
    pub key_id: String,
    /// The secret access key.
    pub secret: String,
}

impl std::fmt::Debug for AwsCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AwsCreds({}, ..)", self.key_id)
    }
}

impl AwsCreds {
    /// `$AWS_ACCESS_KEY_ID`/`$AWS_SECRET_ACCESS_KEY`, else the dev cluster's
    /// `.dyno/dev/secrets/aws-credentials` (profile `dyno-demo`).
    pub fn find() -> anyhow::Result<AwsCreds> {
        if let (Ok(k), Ok(s)) = (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            return Ok(AwsCreds {
                key_id: k,
                secret: s,
            });
        }
        let path = std::path::Path::new(".dyno/dev/secrets/aws-credentials");
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and no {}: start `dyno dev` or set them",
                path.display()
            )
        })?;
        let field = |name: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_owned())
        };
        Ok(AwsCreds {
            key_id: field("aws_access_key_id").context("no aws_access_key_id")?,
            secret: field("aws_secret_access_key").context("no aws_secret_access_key")?,
        })
    }
}

/// One signed DynamoDB call: the status and the JSON answer.
pub async fn dynamodb_call(
    http: &reqwest::Client,
    url: &str,
    creds: &AwsCreds,
    op: &str,
    body: &serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let body = serde_json::to_vec(body)?;
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned();
    let now = (dyno_node::sys::wall_ms() / 1000) as i64;
    let date = dyno_core::sigv4::format_amz_date(now);
    let target = format!("DynamoDB_20120810.{op}");
    let headers = [
        ("content-type", "application/x-amz-json-1.0"),
        ("host", host.as_str()),
        ("x-amz-date", date.as_str()),
        ("x-amz-target", target.as_str()),
    ];
    let names: Vec<String> = headers.iter().map(|(k, _)| (*k).to_owned()).collect();
    let req = dyno_core::sigv4::Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: &body,
    };
    let auth = dyno_core::sigv4::sign(
        &req,
        &names,
        &creds.key_id,
        &creds.secret,
        "dyno",
        "dynamodb",
    )
    .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
    let mut rb = http.post(format!("{}/", url.trim_end_matches('/')));
    for (k, v) in headers {
        if k != "host" {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.header("authorization", auth).body(body).send().await?;
    let status = resp.status().as_u16();
    let json = resp.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

impl Target {
    /// Parses `--target`: `dyno`, `dyno-grpc`, `redis://HOST:PORT`,
    /// `etcd://HOST:PORT[,HOST:PORT…]`.
    pub fn parse(
        spec: &str,
        urls: Vec<String>,
        table: String,
        r: Option<u32>,
        w: Option<u32>,
    ) -> anyhow::Result<Target> {
        if spec == "dyno" || spec == "dyno-http" {
            return Ok(Target::DynoHttp { urls, table, r, w });
        }
        if spec == "dyno-grpc" {
            return Ok(Target::DynoGrpc { urls, table, r, w });
        }
        if spec == "dynamodb" {
            return Ok(Target::Dynamo {
                urls,
                table,
                creds: AwsCreds::find()?,
            });
        }
        if let Some(addr) = spec.strip_prefix("redis://") {
            return Ok(Target::Redis {
                addr: addr.to_owned(),
            });
        }
        if let Some(hosts) = spec.strip_prefix("etcd://") {
            let urls = hosts.split(',').map(|h| format!("http://{h}")).collect();
            return Ok(Target::Etcd { urls });
        }
        bail!(
            "unknown --target {spec:?}: use dyno, dyno-grpc, dynamodb, redis://HOST:PORT or etcd://HOST:PORT[,…]"
        )
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            Target::DynoHttp { urls, .. } => format!("dyno (HTTP, {} node URLs)", urls.len()),
            Target::DynoGrpc { urls, .. } => format!("dyno (gRPC, {} node URLs)", urls.len()),
            Target::Redis { addr } => format!("redis {addr}"),
            Target::Etcd { urls } => format!("etcd ({} members)", urls.len()),
            Target::Dynamo { urls, .. } => {
                format!("dyno (DynamoDB API, {} node URLs)", urls.len())
            }
        }
    }

    /// One client's connection.
    pub async fn connect(&self, index: usize, http: &reqwest::Client) -> anyhow::Result<Conn> {
        Ok(match self {
            Target::DynoHttp { urls, table, r, w } => Conn::Http {
                http: http.clone(),
                urls: urls.clone(),
                table: table.clone(),
                r: *r,
                w: *w,
                next: index,
            },
            Target::DynoGrpc { urls, table, r, w } => {
                let url = urls.get(index % urls.len().max(1)).context("no URL")?;
                let client = DynoClient::connect(url.clone())
                    .await
                    .with_context(|| format!("connecting to {url} (gRPC)"))?
                    .max_decoding_message_size(64 << 20);
                Conn::Grpc {
                    client,
                    table: table.clone(),
                    r: *r,
                    w: *w,
                }
            }
            Target::Redis { addr } => {
                let s = TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connecting to redis at {addr}"))?;
                s.set_nodelay(true)?;
                Conn::Redis {
                    stream: BufStream::new(s),
                }
            }
            Target::Etcd { urls } => Conn::Etcd {
                http: http.clone(),
                urls: urls.clone(),
                next: index,
            },
            Target::Dynamo { urls, table, creds } => Conn::Dynamo {
                http: http.clone(),
                urls: urls.clone(),
                table: table.clone(),
                creds: creds.clone(),
                next: index,
            },
        })
    }
}

/// One client's connection to a target.
#[derive(Debug)]
pub enum Conn {
    /// Dyno HTTP.
    Http {
        /// Shared pool.
        http: reqwest::Client,
        /// Node URLs.
        urls: Vec<String>,
        /// Table.
        table: String,
        /// Per-request R.
        r: Option<u32>,
        /// Per-request W.
        w: Option<u32>,
        /// Round-robin position.
        next: usize,
    },
    /// Dyno gRPC.
    Grpc {
        /// The client.
        client: DynoClient<tonic::transport::Channel>,
        /// Table.
        table: String,
        /// Per-request R.
        r: Option<u32>,
        /// Per-request W.
        w: Option<u32>,
    },
    /// Redis.
    Redis {
        /// The connection.
        stream: BufStream<TcpStream>,
    },
    /// etcd.
    Etcd {
        /// Shared pool.
        http: reqwest::Client,
        /// Member URLs.
        urls: Vec<String>,
        /// Round-robin position.
        next: usize,
    },
    /// The DynamoDB API.
    Dynamo {
        /// Shared pool.
        http: reqwest::Client,
        /// Node URLs.
        urls: Vec<String>,
        /// Table.
        table: String,
        /// Credentials.
        creds: AwsCreds,
        /// Round-robin position.
        next: usize,
    },
}

fn dynamodb_outcome(
    res: anyhow::Result<(u16, serde_json::Value)>,
    found: impl Fn(&serde_json::Value) -> bool,
) -> Outcome {
    match res {
        Ok((200, body)) if found(&body) => Outcome::Ok(None),
        Ok((200, _)) => Outcome::NotFound,
        Ok((500 | 503, _)) => Outcome::Unavailable,
        Ok((s, body)) => Outcome::Error(format!(
            "HTTP {s}: {}",
            body.to_string().chars().take(200).collect::<String>()
        )),
        Err(e) => Outcome::Error(e.to_string()),
    }
}

fn http_outcome(status: reqwest::StatusCode, context: Option<String>, body: &str) -> Outcome {
    match status.as_u16() {
        200..=300 => Outcome::Ok(context),
        404 => Outcome::NotFound,
        503 => Outcome::Unavailable,
        s => Outcome::Error(format!(
            "HTTP {s}: {}",
            body.chars().take(200).collect::<String>()
        )),
    }
}

fn grpc_outcome(s: &tonic::Status) -> Outcome {
    match s.code() {
        tonic::Code::Unavailable => Outcome::Unavailable,
        tonic::Code::NotFound => Outcome::NotFound,
        _ => Outcome::Error(format!("gRPC {:?}: {}", s.code(), s.message())),
    }
}

async fn redis_reply(stream: &mut BufStream<TcpStream>) -> anyhow::Result<Outcome> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        bail!("redis closed the connection");
    }
    let line = line.trim_end();
    match line.as_bytes().first() {
        Some(b'+') => Ok(Outcome::Ok(None)),
        Some(b'-') => Ok(Outcome::Error(line.to_owned())),
        Some(b'$') => {
            let len: i64 = line[1..].parse().context("bad bulk length")?;
            if len < 0 {
                return Ok(Outcome::NotFound);
            }
            let mut buf = vec![0u8; len as usize + 2];
            stream.read_exact(&mut buf).await?;
            Ok(Outcome::Ok(None))
        }
        _ => bail!("unexpected redis reply {line:?}"),
    }
}

impl Conn {
    fn pick(urls: &[String], next: &mut usize) -> String {
        *next = next.wrapping_add(1);
        urls.get(*next % urls.len().max(1))
            .cloned()
            .unwrap_or_default()
    }

    /// The URL of an item on the next node, with `?quorum=` when set.
    fn item_url(
        urls: &[String],
        next: &mut usize,
        table: &str,
        key: &str,
        quorum: &str,
        value: Option<u32>,
    ) -> String {
        let url = Self::pick(urls, next);
        match value {
            Some(v) => format!("{url}/v1/tables/{table}/items/{key}?{quorum}={v}"),
            None => format!("{url}/v1/tables/{table}/items/{key}"),
        }
    }

    /// Reads a key.
    pub async fn read(&mut self, key: &str) -> Outcome {
        match self {
            Conn::Http {
                http,
                urls,
                table,
                r,
                next,
                ..
            } => {
                let u = Self::item_url(urls, next, table, key, "r", *r);
                match authed_http(http.get(u))
                    .header("accept", "application/octet-stream")
                    .send()
                    .await
                {
                    Ok(resp) => {
                        let status = resp.status();
                        let ctx = resp
                            .headers()
                            .get("x-dyno-context")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = if status.is_success() || status == 300 || status == 404 {
                            let _ = resp.bytes().await;
                            String::new()
                        } else {
                            resp.text().await.unwrap_or_default()
                        };
                        http_outcome(status, ctx, &body)
                    }
                    Err(e) => Outcome::Error(e.to_string()),
                }
            }
            Conn::Grpc {
                client, table, r, ..
            } => {
                let req = dyno_proto::public::GetRequest {
                    table: table.clone(),
                    key: key.as_bytes().to_vec(),
                    r: *r,
                };
                match client.get(authed(req)).await {
                    Ok(resp) => {
                        let resp = resp.into_inner();
                        if resp.found {
                            Outcome::Ok(resp.context)
                        } else {
                            Outcome::NotFound
                        }
                    }
                    Err(s) => grpc_outcome(&s),
                }
            }
            Conn::Redis { stream } => {
                let cmd = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
                let res = async {
                    stream.write_all(cmd.as_bytes()).await?;
                    stream.flush().await?;
                    redis_reply(stream).await
                }
                .await;
                res.unwrap_or_else(|e| Outcome::Error(e.to_string()))
            }
            Conn::Dynamo {
                http,
                urls,
                table,
                creds,
                next,
            } => {
                let url = Self::pick(urls, next);
                let body = serde_json::json!({"TableName": table, "Key": {"pk": {"S": key}}});
                let res = dynamodb_call(http, &url, creds, "GetItem", &body).await;
                dynamodb_outcome(res, |b| b.get("Item").is_some())
            }
            Conn::Etcd { http, urls, next } => {
                let url = Self::pick(urls, next);
                let body = serde_json::json!({ "key": B64.encode(key) });
                match http
                    .post(format!("{url}/v3/kv/range"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(resp) if resp.status().is_success() => {
                        let v: serde_json::Value = resp.json().await.unwrap_or_default();
                        if v["kvs"].as_array().is_some_and(|a| !a.is_empty()) {
                            Outcome::Ok(None)
                        } else {
                            Outcome::NotFound
                        }
                    }
                    Ok(resp) => {
                        let s = resp.status();
                        http_outcome(s, None, &resp.text().await.unwrap_or_default())
                    }
                    Err(e) => Outcome::Error(e.to_string()),
                }
            }
        }
    }

    /// Writes a key (with a Dyno context when one is given).
    pub async fn write(&mut self, key: &str, value: &Bytes, context: Option<String>) -> Outcome {
        match self {
            Conn::Http {
                http,
                urls,
                table,
                w,
                next,
                ..
            } => {
                let u = Self::item_url(urls, next, table, key, "w", *w);
                let mut req = authed_http(http.put(u)).body(value.clone());
                if let Some(c) = context {
                    req = req.header("x-dyno-context", c);
                }
                match req.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.text().await.unwrap_or_default();
                        http_outcome(status, None, &body)
                    }
                    Err(e) => Outcome::Error(e.to_string()),
                }
            }
            Conn::Grpc {
                client, table, w, ..
            } => {
                let req = dyno_proto::public::PutRequest {
                    table: table.clone(),
                    key: key.as_bytes().to_vec(),
                    value: value.to_vec(),
                    context,
                    w: *w,
                    if_match: None,
                    if_none_match: false,
                };
                match client.put(authed(req)).await {
                    Ok(_) => Outcome::Ok(None),
                    Err(s) => grpc_outcome(&s),
                }
            }
            Conn::Redis { stream } => {
                let head = format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
                    key.len(),
                    value.len()
                );
                let res = async {
                    stream.write_all(head.as_bytes()).await?;
                    stream.write_all(value).await?;
                    stream.write_all(b"\r\n").await?;
                    stream.flush().await?;
                    redis_reply(stream).await
                }
                .await;
                res.unwrap_or_else(|e| Outcome::Error(e.to_string()))
            }
            Conn::Dynamo {
                http,
                urls,
                table,
                creds,
                next,
            } => {
                let url = Self::pick(urls, next);
                let body = serde_json::json!({
                    "TableName": table,
                    "Item": {"pk": {"S": key}, "v": {"B": B64.encode(value)}},
                });
                let res = dynamodb_call(http, &url, creds, "PutItem", &body).await;
                dynamodb_outcome(res, |_| true)
            }
            Conn::Etcd { http, urls, next } => {
                let url = Self::pick(urls, next);
                let body =
                    serde_json::json!({ "key": B64.encode(key), "value": B64.encode(value) });
                match http
                    .post(format!("{url}/v3/kv/put"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(resp) => {
                        let s = resp.status();
                        http_outcome(s, None, &resp.text().await.unwrap_or_default())
                    }
                    Err(e) => Outcome::Error(e.to_string()),
                }
            }
        }
    }
}

/// The bearer token the benchmark sends to Dyno: `$DYNO_TOKEN`, else
/// `$DYNO_ADMIN_TOKEN`, else the dev cluster's admin credential (the
/// benchmark makes its table through the admin API unless `--no-create`).
fn bench_token() -> Option<&'static str> {
    static TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TOKEN
        .get_or_init(|| {
            ["DYNO_TOKEN", "DYNO_ADMIN_TOKEN"]
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
                .map(|v| v.trim().to_owned())
                .or_else(|| {
                    let dev = crate::creds::dev_admin_token_file(std::path::Path::new(".dyno/dev"));
                    crate::creds::read_token(&dev).ok()
                })
        })
        .as_deref()
}

/// A gRPC request carrying the benchmark's token.
fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(v) = bench_token().and_then(|t| format!("Bearer {t}").parse().ok()) {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// A request to Dyno with the benchmark's token (only Dyno gets it: etcd
/// refuses requests carrying an unknown bearer token).
pub fn authed_http(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match bench_token() {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// An HTTP client pool sized for `clients` concurrent requests.
pub fn http_pool(clients: usize) -> anyhow::Result<reqwest::Client> {
    Ok(dyno_tls::http_client_builder()
        .pool_max_idle_per_host(clients.max(1))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}
