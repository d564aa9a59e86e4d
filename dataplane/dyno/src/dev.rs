//! `dyno dev`: a local cluster on 127.0.0.1, one OS process per node.
//!
//! The first run picks ports, starts the nodes, creates the table `demo`
//! (N=3, R=2, W=2, or N=R=W=nodes when fewer than 3) and writes
//! `DIR/cluster.json`. A later run on the same directory restarts exactly
//! the same nodes (same ids, ports and data) from the `argv` recorded there.
//! Ctrl-C stops every node cleanly (SIGTERM, then SIGKILL after 10 s).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

/// Options of `dyno dev`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevArgs {
    #[command(subcommand)]
    action: Option<DevAction>,
    /// Number of nodes (first run only; later runs reuse cluster.json).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    nodes: u16,
    /// Directory for the nodes' data, logs and cluster.json.
    #[arg(long, default_value = ".dyno/dev")]
    data_dir: PathBuf,
    /// First HTTP port; node i uses BASE+i for HTTP and BASE+100+i for RPC.
    /// 0 picks free ports.
    #[arg(long, default_value_t = 7000)]
    base_port: u16,
    /// Serve everything over TLS (first run only; later runs keep what the
    /// first chose): makes a local CA and a certificate per process in
    /// DIR/tls/ (the CA certificate, to give to clients, is DIR/tls/ca.pem),
    /// serves HTTPS and gRPC over TLS, mutual TLS between the nodes and
    /// from the control plane to them. `dyno get|put|cluster` find the CA
    /// by themselves; `curl --cacert DIR/tls/ca.pem`.
    #[arg(long)]
    tls: bool,
}

/// `dyno dev` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DevAction {
    /// Starts one more node for the dev cluster, joins it to the ring
    /// (streaming its partitions to it) and records it in cluster.json.
    /// The running `dyno dev` stops it with the others.
    AddNode(AddNodeArgs),
}

/// Options of `dyno dev add-node`.
#[derive(Debug, clap::Args)]
pub struct AddNodeArgs {
    /// The dev cluster's directory.
    #[arg(long, default_value = ".dyno/dev")]
    data_dir: PathBuf,
}

/// One node of `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevNode {
    /// Its id.
    pub id: String,
    /// Its HTTP URL.
    pub http: String,
    /// Its process id (of the last run).
    pub pid: u32,
    /// The command line that restarts exactly this node.
    pub argv: Vec<String>,
}

/// `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterFile {
    /// The nodes.
    pub nodes: Vec<DevNode>,
    /// The data plane's admin credential (for local tools; the nodes read
    /// it from `DIR/secrets/admin-token`).
    #[serde(default)]
    pub admin_token: Option<String>,
    /// The control plane's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlplane: Option<String>,
    /// Its process id (of the last run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlplane_pid: Option<u32>,
    /// The command line that restarts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlplane_argv: Option<Vec<String>>,
    /// The platform admin's sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<crate::devcp::AdminLogin>,
    /// The demo tenant's user and API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo: Option<crate::devcp::Demo>,
    /// The CA certificate every process's certificate chains to, when the
    /// cluster serves TLS (`dyno dev --tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
}

/// The dev cluster's CA directory.
fn tls_dir(dir: &Path) -> PathBuf {
    dir.join("tls")
}

/// The dev cluster's secrets, in `DIR/secrets/` (outside every node's data
/// directory), made on first start.
#[derive(Debug, Clone)]
struct Secrets {
    admin_token_file: PathBuf,
    key_master_file: PathBuf,
    admin_token: String,
    admin_password: String,
}

/// Writes `content` to a new file readable by its owner only.
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

fn ensure_secrets(dir: &Path) -> anyhow::Result<Secrets> {
    use std::os::unix::fs::PermissionsExt;
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))?;
    let admin_token_file = crate::creds::dev_admin_token_file(dir);
    if !admin_token_file.exists() {
        write_private(
            &admin_token_file,
            &format!("{}\n", crate::creds::random_hex(32)?),
        )?;
    }
    let key_master_file = secrets.join("key-master");
    if !key_master_file.exists() {
        write_private(
            &key_master_file,
            &format!("{}\n", crate::creds::random_hex(48)?),
        )?;
    }
    let admin_password_file = secrets.join("admin-password");
    if !admin_password_file.exists() {
        write_private(
            &admin_password_file,
            &format!("{}\n", crate::creds::random_hex(12)?),
        )?;
    }
    Ok(Secrets {
        admin_password: crate::creds::read_token(&admin_password_file)?,
        admin_token: crate::creds::read_token(&admin_token_file)?,
        admin_token_file,
        key_master_file,
    })
}

/// Adds the credential flags to a node's argv (a cluster.json written
/// before authentication existed lacks them).
fn with_credentials(mut argv: Vec<String>, secrets: &Secrets) -> Vec<String> {
    if !argv
        .iter()
        .any(|a| a == "--admin-token-file" || a == "--insecure-no-auth")
    {
        argv.extend([
            "--admin-token-file".to_owned(),
            secrets.admin_token_file.display().to_string(),
            "--key-master-file".to_owned(),
            secrets.key_master_file.display().to_string(),
        ]);
    }
    argv
}

/// Adds `--controlplane-url` to a node's argv (the DynamoDB API sends
/// table changes there), unless it has one.
fn with_controlplane(mut argv: Vec<String>, url: Option<&str>) -> Vec<String> {
    if let Some(url) = url
        && !argv.iter().any(|a| a == "--controlplane-url")
    {
        argv.extend(["--controlplane-url".to_owned(), url.to_owned()]);
    }
    argv
}

/// Writes the demo key's AWS credentials (access key id = the key's id,
/// secret = its derived secret) as a shared credentials file, profile
/// `dyno-demo`, for boto3 and the AWS CLI.
fn write_aws_credentials(path: &Path, token: &str) -> anyhow::Result<()> {
    let (id, secret) =
        dyno_core::apikey::parse_token(token).context("the demo token is not an API key token")?;
    write_private(
        path,
        &format!(
            "[dyno-demo]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\nregion = dyno\n"
        ),
    )
}

/// A port on 127.0.0.1 that no one listens on now and that this process
/// has not handed out before. The kernel may give the same port to two
/// `bind(0)` calls in a row once the first socket is closed, and our
/// nodes bind theirs only later, so without the second condition two
/// nodes could be given one port (one of them then fails to start).
fn free_port() -> anyhow::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Hold every refused listener until one is found, so that the kernel
    // cannot offer the same port again.
    let mut held = Vec::new();
    for _ in 0..64 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok(port);
        }
        held.push(listener);
    }
    bail!("no free port on 127.0.0.1 after 64 tries")
}

/// Worker threads for each of `nodes` nodes sharing this machine: their
/// share of the cores, at least one.
fn threads_per_node(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    (cores / nodes.max(1)).max(1)
}

/// A node of the dev cluster on 127.0.0.1, one of `sharing` nodes on this
/// machine, with `extra` arguments after its id, data directory, addresses
/// and thread count.
fn dev_node(
    exe: &str,
    dir: &Path,
    id: String,
    (http, rpc): (u16, u16),
    sharing: usize,
    extra: Vec<String>,
    ca: Option<&dyno_tls::dev::DevCa>,
) -> anyhow::Result<DevNode> {
    let mut argv = vec![
        exe.to_owned(),
        "node".into(),
        "--id".into(),
        id.clone(),
        "--data-dir".into(),
        dir.join(&id).display().to_string(),
        "--http-addr".into(),
        format!("127.0.0.1:{http}"),
        "--rpc-addr".into(),
        format!("127.0.0.1:{rpc}"),
        "--worker-threads".into(),
        threads_per_node(sharing).to_string(),
    ];
    argv.extend(extra);
    let tls = ca.map(|ca| ca.issue(&id, &[])).transpose()?;
    argv.extend(tls.iter().flat_map(dyno_tls::TlsFiles::to_args));
    let scheme = if tls.is_some() { "https" } else { "http" };
    Ok(DevNode {
        http: format!("{scheme}://127.0.0.1:{http}"),
        id,
        pid: 0,
        argv,
    })
}

fn plan(
    args: &DevArgs,
    exe: &str,
    dir: &Path,
    ca: Option<&dyno_tls::dev::DevCa>,
) -> anyhow::Result<Vec<DevNode>> {
    let n = usize::from(args.nodes);
    let mut ports = Vec::with_capacity(n);
    for i in 0..n as u16 {
        ports.push(if args.base_port == 0 {
            (free_port()?, free_port()?)
        } else {
            let http = args
                .base_port
                .checked_add(i)
                .context("--base-port too high")?;
            (http, http.checked_add(100).context("--base-port too high")?)
        });
    }
    let members: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (h, r))| format!("n{}=127.0.0.1:{h},127.0.0.1:{r}", i + 1))
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, &ports)| {
            let members = members
                .iter()
                .flat_map(|m| ["--member".to_owned(), m.clone()])
                .collect();
            dev_node(exe, dir, format!("n{}", i + 1), ports, n, members, ca)
        })
        .collect()
}

/// Starts a node process logging to `DIR/ID.log`. An attached node dies
/// with this process; a detached one (`dyno dev add-node`) outlives it, in
/// its own process group so that a Ctrl-C here does not reach it.
fn spawn(node: &DevNode, dir: &Path, detached: bool) -> anyhow::Result<Child> {
    let log_path = dir.join(format!("{}.log", node.id));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let (program, rest) = node
        .argv
        .split_first()
        .context("empty argv in cluster.json")?;
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if detached {
        cmd.process_group(0);
    } else {
        cmd.kill_on_drop(true);
    }
    cmd.spawn()
        .with_context(|| format!("starting node {}", node.id))
}

async fn wait_healthy(
    client: &reqwest::Client,
    node: &DevNode,
    child: &mut Child,
    dir: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "node {} exited ({status}) during start-up; see {}",
                node.id,
                dir.join(format!("{}.log", node.id)).display()
            );
        }
        let url = format!("{}/admin/v1/health", node.http);
        if client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {} did not become healthy within 60 s", node.id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops processes: SIGTERM to every one, then waits up to 10 s for each
/// and kills what is left.
async fn stop_processes(procs: Vec<(&str, &mut Child)>) {
    for (_, child) in &procs {
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for (name, child) in procs {
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(_) => println!("stopped {name}"),
            Err(_) => {
                let _ = child.kill().await;
                println!("killed {name} (it did not stop within 10 s)");
            }
        }
    }
}

async fn stop_all(children: &mut [(DevNode, Child)]) {
    stop_processes(
        children
            .iter_mut()
            .map(|(n, c)| (n.id.as_str(), c))
            .collect(),
    )
    .await;
}

fn arg_after(argv: &[String], flag: &str) -> Option<String> {
    argv.iter()
        .position(|a| a == flag)
        .and_then(|i| argv.get(i + 1))
        .cloned()
}

/// `dyno dev add-node`.
async fn add_node(args: AddNodeArgs) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(&args.data_dir).with_context(|| {
        format!(
            "no dev cluster in {}; start one with `dyno dev`",
            args.data_dir.display()
        )
    })?;
    let file = dir.join("cluster.json");
    let mut cluster: ClusterFile =
        serde_json::from_slice(&std::fs::read(&file).with_context(|| {
            format!(
                "no dev cluster in {}; start one with `dyno dev`",
                dir.display()
            )
        })?)
        .context("reading cluster.json")?;
    let first = cluster
        .nodes
        .first()
        .context("cluster.json lists no nodes")?
        .clone();
    let seed = arg_after(&first.argv, "--rpc-addr")
        .context("cannot find the first node's --rpc-addr in cluster.json")?;
    let n = cluster
        .nodes
        .iter()
        .filter_map(|d| d.id.strip_prefix('n').and_then(|x| x.parse::<u32>().ok()))
        .max()
        .unwrap_or(0)
        + 1;
    let id = format!("n{n}");
    let (h, r) = (free_port()?, free_port()?);
    let exe = std::env::current_exe()?.display().to_string();
    let secrets = ensure_secrets(&dir)?;
    let ca = match &cluster.tls_ca {
        Some(_) => Some(dyno_tls::dev::DevCa::open(&tls_dir(&dir))?),
        None => None,
    };
    let mut node = dev_node(
        &exe,
        &dir,
        id.clone(),
        (h, r),
        cluster.nodes.len() + 1,
        vec!["--seed".into(), seed],
        ca.as_ref(),
    )?;
    node.argv = with_controlplane(
        with_credentials(node.argv, &secrets),
        cluster.controlplane.as_deref(),
    );
    let mut child = spawn(&node, &dir, true)?;
    node.pid = child.id().unwrap_or(0);
    let http = crate::creds::client(
        Some(&secrets.admin_token),
        Duration::from_secs(5),
        cluster.tls_ca.as_deref(),
    )?;
    wait_healthy(&http, &node, &mut child, &dir).await?;
    println!(
        "started {id} at {} (pid {}, log {})",
        node.http,
        node.pid,
        dir.join(format!("{id}.log")).display()
    );
    // Record it before joining, so `dyno dev` stops it even if the join
    // is interrupted.
    cluster.nodes.push(node.clone());
    std::fs::write(&file, serde_json::to_vec_pretty(&cluster)?)?;
    // Wait until the first node has heard of it through gossip.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value = match http
            .get(format!("{}/admin/v1/cluster", first.http))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let known = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["id"] == id.as_str() && x["liveness"] == "up");
        if known {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} has not heard of {id} after 30 s; see {}",
                first.id,
                dir.join(format!("{id}.log")).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    crate::cluster::begin_and_follow(
        &http,
        &first.http,
        "join",
        &id,
        None,
        Some(Duration::from_secs(3600)),
    )
    .await?;
    // The node outlives this command (its Child was not made with
    // kill_on_drop): `dyno dev` stops it with the rest.
    drop(child);
    Ok(())
}

/// Stops nodes listed in cluster.json that this process did not start
/// (added with `dyno dev add-node`).
async fn stop_added(file: &Path, started: &[String]) {
    let Ok(bytes) = std::fs::read(file) else {
        return;
    };
    let Ok(c) = serde_json::from_slice::<ClusterFile>(&bytes) else {
        return;
    };
    for n in c
        .nodes
        .iter()
        .filter(|n| !started.contains(&n.id) && n.pid != 0)
    {
        let pid = n.pid.to_string();
        let alive = |pid: &str| {
            std::process::Command::new("kill")
                .args(["-0", pid])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !alive(&pid) {
            continue;
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(&pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if alive(&pid) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            println!("killed {} (it did not stop within 10 s)", n.id);
        } else {
            println!("stopped {}", n.id);
        }
    }
}

/// Runs `dyno dev`.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if let Some(DevAction::AddNode(a)) = args.action {
        return add_node(a).await;
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    let file = dir.join("cluster.json");
    let secrets = ensure_secrets(&dir)?;
    let exe = std::env::current_exe()?.display().to_string();
    let previous: Option<ClusterFile> = if file.exists() {
        Some(serde_json::from_slice(&std::fs::read(&file)?).context("reading cluster.json")?)
    } else {
        None
    };
    // TLS is chosen by the first run; a later run keeps that choice.
    let ca = match &previous {
        Some(c) if args.tls && c.tls_ca.is_none() => bail!(
            "the cluster in {} was made without TLS; --tls applies to a new cluster (stop it and remove the directory, or give another --data-dir)",
            dir.display()
        ),
        Some(c) => match c.tls_ca {
            Some(_) => Some(dyno_tls::dev::DevCa::open(&tls_dir(&dir))?),
            None => None,
        },
        None if args.tls => Some(dyno_tls::dev::DevCa::create(&tls_dir(&dir))?),
        None => None,
    };
    let tls_ca = ca.as_ref().map(|c| c.ca_file());
    let mut nodes = match &previous {
        Some(c) => {
            println!(
                "restarting the {}-node cluster in {}",
                c.nodes.len(),
                dir.display()
            );
            c.nodes.clone()
        }
        None => {
            println!(
                "starting a {}-node cluster in {}{}",
                args.nodes,
                dir.display(),
                if args.tls { ", over TLS" } else { "" }
            );
            plan(&args, &exe, &dir, ca.as_ref())?
        }
    };

    let (database, db_url) = crate::devcp::Database::start(&dir).await?;
    let node_urls: Vec<String> = nodes.iter().map(|n| n.http.clone()).collect();
    let cp_argv = match previous.as_ref().and_then(|c| c.controlplane_argv.clone()) {
        Some(argv) => argv,
        None => {
            let port = if args.base_port == 0 {
                free_port()?
            } else {
                args.base_port
                    .checked_add(80)
                    .context("--base-port too high")?
            };
            let tls = ca
                .as_ref()
                .map(|c| c.issue("controlplane", &[]))
                .transpose()?;
            crate::devcp::controlplane_argv(
                &exe,
                &dir,
                port,
                db_url.as_deref(),
                &node_urls,
                tls.as_ref(),
            )
        }
    };
    let cp_url = format!(
        "{}://{}",
        if tls_ca.is_some() { "https" } else { "http" },
        arg_after(&cp_argv, "--listen").context("no --listen in the control plane's argv")?
    );
    let mut children = Vec::with_capacity(nodes.len());
    for node in &mut nodes {
        node.argv = with_controlplane(
            with_credentials(std::mem::take(&mut node.argv), &secrets),
            Some(&cp_url),
        );
        let child = spawn(node, &dir, false)?;
        node.pid = child.id().unwrap_or(0);
        children.push((node.clone(), child));
    }
    let client = crate::creds::client(
        Some(&secrets.admin_token),
        Duration::from_secs(10),
        tls_ca.as_deref(),
    )?;
    let mut cp_child = None;
    let started = async {
        for (node, child) in children.iter_mut() {
            wait_healthy(&client, node, child, &dir).await?;
        }
        let mut child = crate::devcp::spawn(&cp_argv, &dir)?;
        let ready = crate::devcp::wait_ready(&client, &cp_url, &mut child, &dir).await;
        cp_child = Some(child);
        ready?;
        match previous.as_ref().and_then(|c| c.demo.clone()) {
            Some(d) => Ok(d),
            None => {
                crate::devcp::make_demo(&client, &cp_url, &secrets.admin_password, nodes.len())
                    .await
            }
        }
    };
    let demo = match started.await {
        Ok(d) => d,
        Err(e) => {
            if let Some(mut c) = cp_child.take() {
                let _ = c.kill().await;
            }
            stop_all(&mut children).await;
            database.stop();
            return Err(e);
        }
    };
    let mut cp_child = cp_child.context("the control plane did not start")?;
    std::fs::write(
        &file,
        serde_json::to_vec_pretty(&ClusterFile {
            nodes: nodes.clone(),
            admin_token: Some(secrets.admin_token.clone()),
            controlplane: Some(cp_url.clone()),
            controlplane_pid: cp_child.id(),
            controlplane_argv: Some(cp_argv.clone()),
            admin: Some(crate::devcp::AdminLogin {
                email: crate::devcp::ADMIN_EMAIL.to_owned(),
                password: secrets.admin_password.clone(),
            }),
            demo: Some(demo.clone()),
            tls_ca: tls_ca.clone(),
        })?,
    )?;
    let demo_token_file = dir.join("secrets").join("demo-token");
    if !demo_token_file.exists() {
        write_private(&demo_token_file, &format!("{}\n", demo.token))?;
    }
    let demo_password_file = dir.join("secrets").join("demo-password");
    if !demo_password_file.exists() {
        write_private(&demo_password_file, &format!("{}\n", demo.password))?;
    }
    let aws_file = dir.join("secrets").join("aws-credentials");
    if !aws_file.exists() {
        write_aws_credentials(&aws_file, &demo.token)?;
    }

    println!("cluster is up. Nodes:");
    for n in &nodes {
        println!(
            "  {}  {}  (pid {}, log {})",
            n.id,
            n.http,
            n.pid,
            dir.join(format!("{}.log", n.id)).display()
        );
    }
    println!(
        "control plane: {cp_url}  (log {})",
        dir.join("controlplane.log").display()
    );
    println!("web console: {cp_url}/");
    println!(
        "  platform admin: {} / password in {}",
        crate::devcp::ADMIN_EMAIL,
        dir.join("secrets/admin-password").display()
    );
    println!(
        "  tenant demo: user {} / password in {}, table demo, API key {} (scope *: manage)",
        demo.email,
        demo_password_file.display(),
        demo.key_id
    );
    if let Some(ca) = &tls_ca {
        println!(
            "TLS: every URL is https, signed by the local CA {} (curl --cacert {}; browsers warn until you trust it)",
            ca.display(),
            ca.display()
        );
    }
    let cacert = tls_ca
        .as_ref()
        .map(|c| format!("--cacert {} ", c.display()))
        .unwrap_or_default();
    if let Some(first) = nodes.first() {
        let auth = format!(
            "-H \"Authorization: Bearer $(cat {})\"",
            demo_token_file.display()
        );
        println!(
            "try:  curl {cacert}{auth} -X PUT --data hello {}/v1/tables/demo/items/greeting",
            first.http
        );
        println!(
            "      curl {cacert}{auth} {}/v1/tables/demo/items/greeting",
            first.http
        );
        println!("      dyno get demo greeting");
        println!(
            "DynamoDB API (AWS SDKs and CLI): export AWS_SHARED_CREDENTIALS_FILE={} AWS_PROFILE=dyno-demo",
            aws_file.display()
        );
        let ca_bundle = tls_ca
            .as_ref()
            .map(|c| format!(" AWS_CA_BUNDLE={}", c.display()))
            .unwrap_or_default();
        println!(
            "      {}aws dynamodb list-tables --endpoint-url {}",
            if ca_bundle.is_empty() {
                String::new()
            } else {
                format!("env{ca_bundle} ")
            },
            first.http
        );
    }
    println!("cluster.json: {}", file.display());
    // Catch Ctrl-C before saying so: a signal between the two would kill
    // the process before it stops its children.
    let stop = crate::stop_signal_installed();
    println!("press Ctrl-C to stop");

    // Wait for Ctrl-C/SIGTERM, and report processes that exit on their own.
    let mut watch = tokio::time::interval(Duration::from_millis(500));
    let mut reported = vec![false; children.len()];
    let mut cp_reported = false;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = watch.tick() => {
                for ((node, child), seen) in children.iter_mut().zip(reported.iter_mut()) {
                    if !*seen && let Ok(Some(status)) = child.try_wait() {
                        *seen = true;
                        println!("node {} exited ({status}); restart it with: {}", node.id, node.argv.join(" "));
                    }
                }
                if !cp_reported && let Ok(Some(status)) = cp_child.try_wait() {
                    cp_reported = true;
                    println!("the control plane exited ({status}); restart it with: {}", cp_argv.join(" "));
                }
            }
        }
    }
    println!("stopping the cluster");
    stop_processes(vec![("the control plane", &mut cp_child)]).await;
    let started: Vec<String> = children.iter().map(|(n, _)| n.id.clone()).collect();
    stop_all(&mut children).await;
    stop_added(&file, &started).await;
    database.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let mut ports: Vec<u16> = (0..2000).map(|_| free_port().unwrap()).collect();
        ports.sort_unstable();
        let before = ports.len();
        ports.dedup();
        assert_eq!(ports.len(), before, "a port was handed out twice");
    }

    #[test]
    fn nodes_share_the_cores_and_each_gets_at_least_one_thread() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(threads_per_node(1), cores);
        for nodes in 1..=2 * cores + 1 {
            let t = threads_per_node(nodes);
            assert!(t >= 1, "{nodes} nodes: {t} threads");
            assert!(
                t * nodes <= cores.max(nodes),
                "{nodes} nodes × {t} threads on {cores} cores"
            );
        }
        // The node command takes what dev gives it.
        let node = dev_node(
            "dyno",
            Path::new("/tmp/x"),
            "n1".into(),
            (1, 2),
            3,
            vec![],
            None,
        )
        .expect("node");
        let at = node
            .argv
            .iter()
            .position(|a| a == "--worker-threads")
            .expect("flag");
        assert_eq!(node.argv[at + 1], threads_per_node(3).to_string());
    }
}
