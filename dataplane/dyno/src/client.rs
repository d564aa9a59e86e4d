//! `dyno get|put|delete`: a client for the HTTP API that prints siblings
//! and contexts readably.

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

/// Where to send requests.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// A node's HTTP URL. Default: $DYNO_URL, else the first node of the
    /// dev cluster in .dyno/dev/cluster.json, else http://127.0.0.1:7000.
    #[arg(long, env = "DYNO_URL")]
    url: Option<String>,
    /// A file holding the bearer token to send: an API key's token, or the
    /// cluster's admin credential. Default: $DYNO_TOKEN (data) or
    /// $DYNO_ADMIN_TOKEN, else the dev cluster's admin credential.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// The CA certificate (PEM) to verify an `https://` node against.
    /// Default: $DYNO_CA_FILE, else the dev cluster's .dyno/dev/tls/ca.pem
    /// when it has one.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
}

impl Target {
    /// The base URL requests go to.
    pub fn base(&self) -> String {
        if let Some(u) = &self.url {
            return u.trim_end_matches('/').to_owned();
        }
        let from_dev = std::fs::read(".dyno/dev/cluster.json")
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["nodes"][0]["http"].as_str().map(str::to_owned));
        from_dev.unwrap_or_else(|| "http://127.0.0.1:7000".to_owned())
    }

    /// A client sending the data-plane token (`admin`: the admin one).
    pub fn client(
        &self,
        admin: bool,
        timeout: std::time::Duration,
    ) -> anyhow::Result<reqwest::Client> {
        let token = crate::creds::token(self.token_file.as_deref(), admin)?;
        let ca = crate::creds::ca_file(self.ca_file.as_deref());
        let base = self.base();
        if ca.is_none() && base.starts_with("https://") {
            bail!(
                "{base} is served over TLS, and only the cluster's own CA is trusted: give its certificate with --ca-file or $DYNO_CA_FILE (a dev cluster's is DIR/tls/ca.pem)"
            );
        }
        crate::creds::client(token.as_deref(), timeout, ca.as_deref())
    }
}

/// `dyno get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The table.
    table: String,
    /// The key.
    key: String,
    /// Read quorum for this request (default: the table's R).
    #[arg(long)]
    r: Option<u32>,
    #[command(flatten)]
    target: Target,
}

/// `dyno put`.
#[derive(Debug, clap::Args)]
pub struct PutArgs {
    /// The table.
    table: String,
    /// The key.
    key: String,
    /// The value (as UTF-8 text).
    value: String,
    /// The context from a previous read: the write replaces what it saw.
    #[arg(long)]
    context: Option<String>,
    /// Write only if the item is still exactly at this context.
    #[arg(long)]
    if_match: Option<String>,
    /// Write only if the item has no live value.
    #[arg(long)]
    if_none_match: bool,
    /// Write quorum for this request (default: the table's W).
    #[arg(long)]
    w: Option<u32>,
    #[command(flatten)]
    target: Target,
}

/// `dyno delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The table.
    table: String,
    /// The key.
    key: String,
    /// The context from a previous read.
    #[arg(long)]
    context: Option<String>,
    /// Write quorum for this request.
    #[arg(long)]
    w: Option<u32>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Deserialize)]
struct ItemBody {
    context: Option<String>,
    #[serde(default)]
    values: Vec<String>,
}

fn item_url(base: &str, table: &str, key: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!("{base}/v1/tables/{}/items/{}", enc(table), enc(key))
}

async fn fail(resp: reqwest::Response) -> anyhow::Result<()> {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let code = body["error"]["code"].as_str().unwrap_or("Error");
    let message = body["error"]["message"].as_str().unwrap_or("");
    bail!("{status}: {code}: {message}")
}

fn show(value: &str) -> String {
    match B64.decode(value) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => format!("{text:?}"),
            Err(_) => format!("(binary, base64) {value}"),
        },
        Err(_) => value.to_owned(),
    }
}

/// Runs `dyno get`.
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let mut url = item_url(&args.target.base(), &args.table, &args.key);
    if let Some(r) = args.r {
        url.push_str(&format!("?r={r}"));
    }
    let resp = args
        .target
        .client(false, std::time::Duration::from_secs(30))?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !(status.is_success() || status == reqwest::StatusCode::NOT_FOUND) {
        return fail(resp).await;
    }
    let body: serde_json::Value = resp.json().await.context("reading the response")?;
    // A 404 is either a missing item (an item body) or an error such as an
    // unknown table (an error body).
    if let Some(err) = body.get("error") {
        bail!(
            "{status}: {}: {}",
            err["code"].as_str().unwrap_or("Error"),
            err["message"].as_str().unwrap_or("")
        );
    }
    let body: ItemBody = serde_json::from_value(body).context("reading the response")?;
    match body.values.len() {
        0 => println!("not found"),
        1 => println!("value: {}", show(&body.values[0])),
        n => {
            println!("{n} siblings (concurrent values; write back with this context to resolve):");
            for (i, v) in body.values.iter().enumerate() {
                println!("  [{}] {}", i + 1, show(v));
            }
        }
    }
    if let Some(c) = body.context {
        println!("context: {c}");
    }
    Ok(())
}

async fn write(
    target: &Target,
    table: &str,
    key: &str,
    value: Option<String>,
    context: Option<String>,
    w: Option<u32>,
    conditions: (Option<String>, bool),
) -> anyhow::Result<()> {
    let mut url = item_url(&target.base(), table, key);
    if let Some(w) = w {
        url.push_str(&format!("?w={w}"));
    }
    let client = target.client(false, std::time::Duration::from_secs(30))?;
    let mut req = match value {
        Some(v) => client.put(&url).body(v),
        None => client.delete(&url),
    };
    if let Some(c) = context {
        req = req.header("X-Dyno-Context", c);
    }
    if let Some(c) = conditions.0 {
        req = req.header("If-Match", c);
    }
    if conditions.1 {
        req = req.header("If-None-Match", "*");
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("sending to {url}"))?;
    if !resp.status().is_success() {
        return fail(resp).await;
    }
    let body: ItemBody = resp.json().await.context("reading the response")?;
    println!("ok");
    if let Some(c) = body.context {
        println!("context: {c}");
    }
    Ok(())
}

/// Runs `dyno put`.
pub async fn put(a: PutArgs) -> anyhow::Result<()> {
    write(
        &a.target,
        &a.table,
        &a.key,
        Some(a.value),
        a.context,
        a.w,
        (a.if_match, a.if_none_match),
    )
    .await
}

/// Runs `dyno delete`.
pub async fn delete(a: DeleteArgs) -> anyhow::Result<()> {
    write(
        &a.target,
        &a.table,
        &a.key,
        None,
        a.context,
        a.w,
        (None, false),
    )
    .await
}
