//! The `dyno` command: one binary for running nodes and local clusters and
//! for talking to a cluster.

mod bench;
mod client;
mod cluster;
mod creds;
mod dev;
mod devcp;
mod smoke;

use clap::{Parser, Subcommand};

/// Dyno: a Dynamo-style key-value store.
#[derive(Debug, Parser)]
#[command(name = "dyno", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Runs one storage node.
    Node(dyno_node::NodeConfig),
    /// Runs the control plane (REST API and reconciler over Postgres).
    Controlplane(dyno_controlplane::ControlPlaneConfig),
    /// Starts a local cluster on 127.0.0.1, one process per node.
    Dev(dev::DevArgs),
    /// Reads a key: prints every sibling and the context.
    Get(client::GetArgs),
    /// Writes a key.
    Put(client::PutArgs),
    /// Deletes a key (writes a tombstone).
    Delete(client::DeleteArgs),
    /// Runs a YCSB workload against Dyno, Redis or etcd and reports
    /// throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// Cluster membership: status, join, decommission.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Writes, reads back and verifies objects on one node's storage engine,
    /// across a reopen, and reports throughput.
    Smoke(smoke::SmokeArgs),
    /// The Kubernetes operator: runs it, or prints its CRD.
    #[command(subcommand)]
    Operator(OperatorCommand),
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Prints the DynoCluster CRD as YAML (`> deploy/crds/dynocluster.yaml`).
    Crd,
    /// Runs the operator: reconciles every DynoCluster in the cluster.
    Run(dyno_operator::controller::RunArgs),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DYNO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("DYNO_LOG_FORMAT").is_ok_and(|f| f == "json");
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_with(None)
}

/// A runtime with `threads` worker threads (default: one per core).
fn runtime_with(threads: Option<u16>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(usize::from(n));
    }
    Ok(b.enable_all().build()?)
}

/// Like [`stop_signal`], but the handlers are in place when this returns
/// (call it inside the runtime): a Ctrl-C that arrives before the future
/// is first polled still stops the process cleanly instead of killing it.
/// `dyno dev` uses it before it says "press Ctrl-C".
pub fn stop_signal_installed() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => stop_signal().await,
            }
        }
    }
    #[cfg(not(unix))]
    stop_signal()
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// mimalloc instead of glibc's malloc: measured with `dyno bench` and
/// `perf` (bench/MICRO.md), glibc's allocator took about 13% of a node's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(config) => {
            init_logging();
            runtime_with(config.worker_threads)?.block_on(async {
                let listeners = dyno_node::Listeners::inherited_or_bind(&config).await?;
                dyno_node::run(config, listeners, stop_signal()).await
            })?;
            Ok(())
        }
        Command::Controlplane(config) => {
            init_logging();
            runtime()?.block_on(async {
                let listener = tokio::net::TcpListener::bind(config.listen).await?;
                dyno_controlplane::run(config, listener, stop_signal(), Some(dyno_console::router))
                    .await
            })
        }
        Command::Dev(args) => runtime()?.block_on(dev::run(args)),
        Command::Get(args) => runtime()?.block_on(client::get(args)),
        Command::Put(args) => runtime()?.block_on(client::put(args)),
        Command::Delete(args) => runtime()?.block_on(client::delete(args)),
        Command::Bench(args) => runtime()?.block_on(bench::run(args)),
        Command::Cluster(cmd) => runtime()?.block_on(cluster::run(cmd)),
        Command::Smoke(args) => smoke::run(&args),
        Command::Operator(OperatorCommand::Run(args)) => {
            init_logging();
            runtime()?.block_on(dyno_operator::controller::run_default(args, stop_signal()))
        }
        Command::Operator(OperatorCommand::Crd) => {
            print!("{}", dyno_operator::crd::crd_yaml()?);
            Ok(())
        }
    }
}
