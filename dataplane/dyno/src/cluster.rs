//! `dyno cluster status|join|decommission`: membership and ring changes
//! through any node's admin API, with progress until the change is done.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::client::Target;

/// `dyno cluster …`.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Shows every node as the target node sees it: status, φ, partitions,
    /// load, and the ring change under way.
    Status(StatusArgs),
    /// Adds a running node (started with --seed) to the ring and waits
    /// until its partitions have been streamed to it.
    Join(ChangeArgs),
    /// Streams a node's partitions to the others and removes it from the
    /// ring; waits until it has left. Stop its process afterwards.
    Decommission(ChangeArgs),
    /// Abandons the ring change under way (for example when a joining node
    /// died): the current ring stays, and nodes drop what they received.
    Abort(AbortArgs),
}

/// Options of `dyno cluster abort`.
#[derive(Debug, clap::Args)]
pub struct AbortArgs {
    #[command(flatten)]
    target: Target,
}

/// Options of `dyno cluster status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the admin API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

/// Options of `dyno cluster join` and `decommission`.
#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// The node's id.
    node: String,
    /// Its failure zone (join only).
    #[arg(long)]
    zone: Option<String>,
    /// Return once the change has begun, without waiting for the handoff.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,
    #[command(flatten)]
    target: Target,
}

async fn view(http: &reqwest::Client, base: &str) -> anyhow::Result<Value> {
    let resp = http
        .get(format!("{base}/admin/v1/cluster"))
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    if !resp.status().is_success() {
        bail!("{base} answered {}", resp.status());
    }
    Ok(resp.json().await?)
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints the table of `dyno cluster status`.
pub fn print_status(v: &Value) {
    println!(
        "ring epoch {} · {} partitions · seen from {}",
        v["ring"]["epoch"],
        v["ring"]["partitions"],
        v["node"].as_str().unwrap_or("?")
    );
    println!(
        "{:<10} {:<9} {:>7} {:>11} {:>9} {:>10}  HTTP",
        "NODE", "STATUS", "PHI", "PARTITIONS", "KEYS", "BYTES"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let parts = match n["partitions_next"].as_u64() {
            Some(next) if Some(next) != n["partitions"].as_u64() => {
                format!("{}→{next}", n["partitions"])
            }
            _ => n["partitions"].to_string(),
        };
        println!(
            "{:<10} {:<9} {:>7.2} {:>11} {:>9} {:>10}  {}",
            n["id"].as_str().unwrap_or("?"),
            n["status"].as_str().unwrap_or("?"),
            n["phi"].as_f64().unwrap_or(0.0),
            parts,
            n["keys"].as_u64().map_or("-".into(), |k| k.to_string()),
            n["bytes"].as_u64().map_or("-".into(), human_bytes),
            n["http"].as_str().unwrap_or("-"),
        );
    }
    if let Some(c) = v["change"].as_object() {
        println!(
            "ring change under way: {} of {} partition transfers done, {} received (plan moves {} of {} partition replicas)",
            c["partitions_done"],
            c["partitions_reported"],
            human_bytes(c["bytes_received"].as_u64().unwrap_or(0)),
            c["partition_replicas_to_move"],
            c["partition_replicas_total"]
        );
    }
}

/// Runs `dyno cluster …`.
pub async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    let target = match &cmd {
        ClusterCommand::Status(a) => &a.target,
        ClusterCommand::Join(a) | ClusterCommand::Decommission(a) => &a.target,
        ClusterCommand::Abort(a) => &a.target,
    };
    let http = target.client(true, Duration::from_secs(10))?;
    match cmd {
        ClusterCommand::Status(args) => {
            let v = view(&http, &args.target.base()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
            Ok(())
        }
        ClusterCommand::Join(args) => change(&http, "join", args).await,
        ClusterCommand::Decommission(args) => change(&http, "decommission", args).await,
        ClusterCommand::Abort(args) => {
            let body = post_change(&http, &args.target.base(), "abort", json!({}), "abort").await?;
            println!("ring change aborted; ring epoch {}", body["epoch"]);
            Ok(())
        }
    }
}

/// POSTs to `/admin/v1/cluster/{action}`; the answer, or an error that
/// quotes the node's message (`what` names the request in it).
async fn post_change(
    http: &reqwest::Client,
    base: &str,
    action: &str,
    body: Value,
    what: &str,
) -> anyhow::Result<Value> {
    let resp = http
        .post(format!("{base}/admin/v1/cluster/{action}"))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{what} refused ({status}): {}",
            body["error"]["message"].as_str().unwrap_or("no details")
        );
    }
    Ok(body)
}

/// Begins a join or decommission through `base` and follows it.
pub async fn begin_and_follow(
    http: &reqwest::Client,
    base: &str,
    action: &str,
    node: &str,
    zone: Option<&str>,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let what = format!("{action} {node}");
    let body = post_change(
        http,
        base,
        action,
        json!({ "node": node, "zone": zone }),
        &what,
    )
    .await?;
    let epoch = body["epoch"].as_u64().unwrap_or(0);
    println!(
        "{action} {node}: ring epoch {epoch}; the plan moves {} of {} partition replicas (the minimum for this change)",
        body["partition_replicas_to_move"], body["partition_replicas_total"]
    );
    let Some(limit) = wait else {
        println!("follow it with: dyno cluster status --url {base}");
        return Ok(());
    };
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    loop {
        let v = view(http, base).await?;
        let committed =
            v["ring"]["epoch"].as_u64().is_some_and(|e| e > epoch) && v["change"].is_null();
        let left = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["id"] == node && n["status"] == "left");
        if committed && (action == "join" || left) {
            println!("{action} {node}: done (ring epoch {})", v["ring"]["epoch"]);
            if action == "decommission" {
                println!("{node} holds no data any more; you can stop its process");
            }
            return Ok(());
        }
        let line = match v["change"].as_object() {
            Some(c) => format!(
                "  handoff: {}/{} partitions, {} received",
                c["partitions_done"],
                c["partitions_reported"],
                human_bytes(c["bytes_received"].as_u64().unwrap_or(0))
            ),
            None => "  committed; old owners are dropping moved data".into(),
        };
        if line != last {
            println!("{line}");
            last = line;
        }
        if Instant::now() > deadline {
            bail!(
                "{action} {node} is still under way after {} s; follow it with `dyno cluster status`",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn change(http: &reqwest::Client, action: &str, args: ChangeArgs) -> anyhow::Result<()> {
    let wait = (!args.no_wait).then(|| Duration::from_secs(args.timeout_secs));
    begin_and_follow(
        http,
        &args.target.base(),
        action,
        &args.node,
        args.zone.as_deref(),
        wait,
    )
    .await
}
