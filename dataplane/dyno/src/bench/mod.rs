//! `dyno bench`: YCSB core workloads against Dyno (HTTP or gRPC), Redis
//! or etcd, in closed loop (a number of clients) or open loop (a target
//! rate, latency measured from each request's *intended* send time so that
//! queueing is not hidden: no coordinated omission). Latencies go into HDR
//! histograms per operation; errors and unavailability are counted, never
//! dropped.

mod driver;
mod report;
pub mod workload;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::oneshot;

use driver::{Conn, Outcome, Target};
use workload::{Distribution, KeyChooser, Op, Rng, Workload, key_name, pick};

/// Options of `dyno bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// YCSB workload.
    #[arg(long, value_enum, ignore_case = true, default_value_t = Workload::A)]
    workload: Workload,
    /// What to drive: `dyno`, `dyno-grpc`, `dynamodb` (Dyno's
    /// DynamoDB-compatible API, SigV4-signed with `$AWS_ACCESS_KEY_ID` or the
    /// dev cluster's demo key), `redis://HOST:PORT`, or
    /// `etcd://HOST:PORT[,HOST:PORT…]`.
    #[arg(long, default_value = "dyno")]
    target: String,
    /// Dyno node URL (repeat to spread requests over nodes). Default: the
    /// dev cluster's nodes from .dyno/dev/cluster.json, else
    /// http://127.0.0.1:7000.
    #[arg(long = "url")]
    urls: Vec<String>,
    /// Table (created with --n and --conflict when missing).
    #[arg(long, default_value = "bench")]
    table: String,
    /// N for a table this command creates (default: min(3, nodes)).
    #[arg(long)]
    n: Option<u32>,
    /// Conflict mode for a table this command creates. YCSB updates are
    /// blind writes, which in `siblings` mode pile up siblings; `lww`
    /// matches what they mean.
    #[arg(long, default_value = "lww")]
    conflict: String,
    /// Per-request read quorum (default: the table's R).
    #[arg(long)]
    r: Option<u32>,
    /// Per-request write quorum (default: the table's W).
    #[arg(long)]
    w: Option<u32>,
    /// Records inserted by the load phase.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// Skip the load phase (the records are already there).
    #[arg(long)]
    skip_load: bool,
    /// The table exists (made through the control plane): do not look it
    /// up or create it through the admin API, which an API key cannot use.
    #[arg(long)]
    no_create: bool,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Key distribution (default: the workload's).
    #[arg(long, value_enum)]
    distribution: Option<Distribution>,
    /// Concurrent clients (closed loop), or the most requests in flight
    /// (open loop).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Open loop: requests per second. Without it, closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop at each of these rates in turn (comma-separated), then a
    /// chart of throughput against p99.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<f64>,
    /// Run phase length in seconds (per rate in a sweep).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Before the measured phases, run this many seconds at the first
    /// phase's rate (or closed loop) and discard them. A system going from
    /// idle to an open-loop rate takes a moment to settle (three local
    /// nodes took about half a second at 5,500 requests/s, with latencies
    /// up to 300 ms meanwhile); with a warm-up, the figures describe the
    /// steady state.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Stop the run phase after this many operations instead.
    #[arg(long)]
    operations: Option<u64>,
    /// Seed for key choice (printed; a run replays with the same seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the results as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Write SVG charts with this path prefix: PREFIX-latency.svg, and
    /// PREFIX-sweep.svg for a sweep.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Per-operation results.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Latencies in microseconds (successful requests and not-found reads).
    pub hist: Histogram<u64>,
    /// Failed requests (not counting 503s).
    pub errors: u64,
    /// 503 / Unavailable answers.
    pub unavailable: u64,
    /// Reads that found nothing.
    pub not_found: u64,
    /// One example error message.
    pub first_error: Option<String>,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            // 1 µs to 2 minutes at 3 significant digits: constant, valid bounds.
            hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
            errors: 0,
            unavailable: 0,
            not_found: 0,
            first_error: None,
        }
    }

    fn record(&mut self, micros: u64, outcome: &Outcome) {
        match outcome {
            Outcome::Ok(_) => self.hist.saturating_record(micros.max(1)),
            Outcome::NotFound => {
                self.not_found += 1;
                self.hist.saturating_record(micros.max(1));
            }
            Outcome::Unavailable => self.unavailable += 1,
            Outcome::Error(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e.clone());
                }
            }
        }
    }

    fn merge(&mut self, other: &OpStats) {
        let _ = self.hist.add(&other.hist);
        self.errors += other.errors;
        self.unavailable += other.unavailable;
        self.not_found += other.not_found;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// The operations of one second of a phase (by the second their intended
/// start fell in), so that a tail can be traced to the moments it came
/// from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Second {
    /// Operations answered (successful, not found, or failed).
    pub completed: u64,
    /// Of those, how many took more than [`SLOW_MICROS`].
    pub slow: u64,
    /// The longest, in microseconds.
    pub max_micros: u64,
}

/// The machine's CPU time taken by the hypervisor (steal) in each second
/// of a phase, in % of all CPU time (Linux: `/proc/stat`; empty
/// elsewhere). On a shared VM a burst of steal is a burst of latency that
/// no system under test can avoid.
///
/// Samples until `stop` fires (or is dropped), which ends it at once
/// rather than at the next whole second.
async fn sample_steal(started: Instant, mut stop: oneshot::Receiver<()>) -> Vec<f64> {
    let mut out = Vec::new();
    let Some(mut last) = cpu_times() else {
        return out;
    };
    let mut next = started + Duration::from_secs(1);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            _ = &mut stop => break,
        }
        next += Duration::from_secs(1);
        let Some(now) = cpu_times() else {
            break;
        };
        let total = now.0.saturating_sub(last.0);
        let steal = now.1.saturating_sub(last.1);
        out.push(if total == 0 {
            0.0
        } else {
            100.0 * steal as f64 / total as f64
        });
        last = now;
    }
    out
}

/// All CPU time and steal time so far, in clock ticks (`/proc/stat`).
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(stat.lines().next()?)
}

fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice],
    // guest time being counted in user already.
    let total = v.iter().take(8).sum();
    Some((total, *v.get(7)?))
}

/// An operation slower than this counts as slow in the timeline (the
/// open-loop p99 goal's bound).
pub const SLOW_MICROS: u64 = 10_000;

impl Second {
    /// Adds `other`'s operations to these.
    fn merge(&mut self, other: &Second) {
        self.completed += other.completed;
        self.slow += other.slow;
        self.max_micros = self.max_micros.max(other.max_micros);
    }
}

/// Adds one operation that started `at` after the phase began and took
/// `micros`.
fn note_second(timeline: &mut Vec<Second>, at: Duration, micros: u64) {
    let i = at.as_secs() as usize;
    if timeline.len() <= i {
        timeline.resize(i + 1, Second::default());
    }
    timeline[i].merge(&Second {
        completed: 1,
        slow: u64::from(micros > SLOW_MICROS),
        max_micros: micros,
    });
}

/// Merges one client's timeline into the phase's.
fn merge_timeline(into: &mut Vec<Second>, from: &[Second]) {
    if into.len() < from.len() {
        into.resize(from.len(), Second::default());
    }
    for (a, b) in into.iter_mut().zip(from) {
        a.merge(b);
    }
}

/// The results of one phase.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    /// "load" or "run".
    pub phase: &'static str,
    /// Open-loop target rate, if any.
    pub rate: Option<f64>,
    /// Wall time.
    pub elapsed: Duration,
    /// Per operation.
    pub ops: BTreeMap<Op, OpStats>,
    /// Second by second.
    pub timeline: Vec<Second>,
    /// The hypervisor's steal, second by second (see [`sample_steal`]).
    pub steal: Vec<f64>,
}

impl PhaseResult {
    /// Completed operations (successful or not found).
    pub fn completed(&self) -> u64 {
        self.ops.values().map(|s| s.hist.len()).sum()
    }

    /// Completed operations per second.
    pub fn throughput(&self) -> f64 {
        self.completed() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// All operations merged.
    pub fn overall(&self) -> OpStats {
        let mut all = OpStats::new();
        for s in self.ops.values() {
            all.merge(s);
        }
        all
    }
}

struct Shared {
    value: Bytes,
    records: u64,
    inserted: AtomicU64,
    issued: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

/// Makes the benchmark's DynamoDB table (hash key `pk`, a string) through
/// the DynamoDB API unless it exists, and waits until every node knows it.
async fn ensure_dynamodb_table(
    http: &reqwest::Client,
    creds: &driver::AwsCreds,
    table: &str,
    urls: &[String],
) -> anyhow::Result<()> {
    let first = urls.first().context("no node URL")?;
    let describe = serde_json::json!({ "TableName": table });
    let (status, _) = driver::dynamodb_call(http, first, creds, "DescribeTable", &describe).await?;
    if status != 200 {
        let create = serde_json::json!({
            "TableName": table,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        });
        let (status, body) =
            driver::dynamodb_call(http, first, creds, "CreateTable", &create).await?;
        if status != 200 && !body.to_string().contains("ResourceInUse") {
            anyhow::bail!("CreateTable {table}: HTTP {status}: {body}");
        }
        eprintln!("created DynamoDB table {table}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for u in urls {
        loop {
            let (status, _) =
                driver::dynamodb_call(http, u, creds, "DescribeTable", &describe).await?;
            if status == 200 {
                break;
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("table {table} did not reach {u} within 60 s");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn default_urls() -> Vec<String> {
    let from_dev = std::fs::read(".dyno/dev/cluster.json")
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map(|v| {
            v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n["http"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if from_dev.is_empty() {
        vec!["http://127.0.0.1:7000".to_owned()]
    } else {
        from_dev
    }
}

async fn ensure_table(
    http: &reqwest::Client,
    args: &BenchArgs,
    urls: &[String],
) -> anyhow::Result<()> {
    let base = urls.first().context("no URL")?;
    let url = format!("{base}/admin/v1/tables/{}", args.table);
    let resp = driver::authed_http(http.get(&url))
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    if resp.status().is_success() {
        return Ok(());
    }
    let cluster: serde_json::Value =
        driver::authed_http(http.get(format!("{base}/admin/v1/cluster")))
            .send()
            .await?
            .json()
            .await?;
    let members = cluster["ring"]["members"].as_array().map_or(1, Vec::len) as u32;
    let n = args.n.unwrap_or(members.min(3));
    let q = n / 2 + 1;
    let resp = driver::authed_http(http.put(&url))
        .json(&serde_json::json!({ "n": n, "r": q, "w": q, "conflict": args.conflict }))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "creating table {}: {}",
            args.table,
            resp.text().await.unwrap_or_default()
        );
    }
    eprintln!(
        "created table {} (n={n}, r={q}, w={q}, {})",
        args.table, args.conflict
    );
    // Every node must know the table before the load starts.
    for u in urls {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !driver::authed_http(http.get(format!("{u}/admin/v1/tables/{}", args.table)))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                bail!("{u} did not learn of table {}", args.table);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// How a phase runs.
#[derive(Debug, Clone, Copy)]
struct Plan {
    load: bool,
    rate: Option<f64>,
    duration: Duration,
    operations: Option<u64>,
}

/// Sends every client's first requests before the clock starts: one read
/// to each server, all clients at once, not counted. HTTP clients open
/// their connections lazily, on first use: without this, an open-loop run
/// began with hundreds of connections opened at once, and its first second
/// (up to 370 ms per request on 3 local nodes at 5,500 requests/s) was
/// connection set-up, not the system under test.
async fn warm_up(conns: Vec<Conn>, servers: usize) -> anyhow::Result<Vec<Conn>> {
    let mut set = tokio::task::JoinSet::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        set.spawn(async move {
            for _ in 0..servers {
                // Any answer will do (the key may not exist yet).
                conn.read(&key_name(0)).await;
            }
            (i, conn)
        });
    }
    let mut warmed = Vec::with_capacity(set.len());
    while let Some(done) = set.join_next().await {
        warmed.push(done.context("a client's warm-up failed")?);
    }
    warmed.sort_by_key(|(i, _)| *i);
    Ok(warmed.into_iter().map(|(_, c)| c).collect())
}

async fn run_phase(
    target: &Target,
    http: &reqwest::Client,
    args: &BenchArgs,
    shared: &Arc<Shared>,
    plan: Plan,
    seed: u64,
) -> anyhow::Result<PhaseResult> {
    shared.issued.store(0, Ordering::Relaxed);
    shared.done.store(0, Ordering::Relaxed);
    shared.failed.store(0, Ordering::Relaxed);
    shared.stop.store(false, Ordering::Relaxed);
    let total = if plan.load {
        Some(shared.records)
    } else {
        plan.operations
    };
    let dist = args
        .distribution
        .unwrap_or(args.workload.default_distribution());
    // Connect every client first, so that connection set-up does not count
    // as the system's latency in open loop.
    let mut conns = Vec::with_capacity(args.clients.max(1));
    for c in 0..args.clients.max(1) {
        conns.push(target.connect(c, http).await?);
    }
    if !plan.load {
        conns = warm_up(conns, target.servers()).await?;
    }
    // ζ over YCSB's 10^10-item space costs ~10 ms: compute it once, before
    // the clock starts, and give each client a copy.
    let chooser = KeyChooser::new(dist, shared.records);
    let started = Instant::now();
    let deadline = (!plan.load && plan.operations.is_none()).then(|| started + plan.duration);
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let shared = Arc::clone(shared);
        let mut chooser = chooser.clone();
        let mix = args.workload.mix();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed.wrapping_add(c as u64 * 7919));
            let mut stats: BTreeMap<Op, OpStats> = BTreeMap::new();
            let mut timeline: Vec<Second> = Vec::new();
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let slot = shared.issued.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|t| slot >= t) {
                    break;
                }
                // Open loop: latency counts from the request's intended send
                // time when this client is late (the system kept it busy:
                // queueing), and from the moment it woke when it was early
                // (so the ~1 ms granularity of the timer is not counted).
                let intended = match plan.rate {
                    Some(rate) => {
                        let at = started + Duration::from_secs_f64(slot as f64 / rate);
                        if deadline.is_some_and(|d| at >= d) {
                            break;
                        }
                        if Instant::now() < at {
                            tokio::time::sleep_until(at.into()).await;
                            Instant::now()
                        } else {
                            at
                        }
                    }
                    None => {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            break;
                        }
                        Instant::now()
                    }
                };
                let op = if plan.load {
                    Op::Insert
                } else {
                    pick(mix, rng.unit())
                };
                let outcome = match op {
                    Op::Insert => {
                        let n = if plan.load {
                            slot
                        } else {
                            shared.inserted.fetch_add(1, Ordering::Relaxed)
                        };
                        let o = conn.write(&key_name(n), &shared.value, None).await;
                        if matches!(o, Outcome::Ok(_)) && !plan.load {
                            // Readers may now choose it (YCSB's acknowledged counter).
                            shared.inserted.fetch_max(n + 1, Ordering::Relaxed);
                        }
                        o
                    }
                    Op::Read => {
                        let n = chooser.next(&mut rng, shared.inserted.load(Ordering::Relaxed));
                        conn.read(&key_name(n)).await
                    }
                    Op::Update => {
                        let n = chooser.next(&mut rng, shared.inserted.load(Ordering::Relaxed));
                        conn.write(&key_name(n), &shared.value, None).await
                    }
                    Op::ReadModifyWrite => {
                        let n = chooser.next(&mut rng, shared.inserted.load(Ordering::Relaxed));
                        let key = key_name(n);
                        match conn.read(&key).await {
                            Outcome::Ok(ctx) => conn.write(&key, &shared.value, ctx).await,
                            Outcome::NotFound => conn.write(&key, &shared.value, None).await,
                            other => other,
                        }
                    }
                };
                let micros = intended.elapsed().as_micros() as u64;
                note_second(
                    &mut timeline,
                    intended.saturating_duration_since(started),
                    micros,
                );
                stats
                    .entry(op)
                    .or_insert_with(OpStats::new)
                    .record(micros, &outcome);
                shared.done.fetch_add(1, Ordering::Relaxed);
                if matches!(outcome, Outcome::Error(_) | Outcome::Unavailable) {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            (stats, timeline)
        }));
    }
    let (steal_stop, steal_stopped) = oneshot::channel();
    let steal = tokio::spawn(sample_steal(started, steal_stopped));
    let progress = (!args.quiet).then(|| {
        let shared = Arc::clone(shared);
        let label = if plan.load {
            "load".to_owned()
        } else {
            plan.rate
                .map_or("run".to_owned(), |r| format!("run @{r:.0}/s"))
        };
        tokio::spawn(report::progress(
            shared_counters(&shared),
            label,
            total,
            deadline.map(|d| d - started),
        ))
    });
    let mut ops: BTreeMap<Op, OpStats> = BTreeMap::new();
    let mut timeline = Vec::new();
    for t in tasks {
        let (stats, seconds) = t.await.context("a client task failed")?;
        for (op, s) in stats {
            ops.entry(op).or_insert_with(OpStats::new).merge(&s);
        }
        merge_timeline(&mut timeline, &seconds);
    }
    let elapsed = started.elapsed();
    steal_stop.send(()).ok();
    let steal = steal.await.unwrap_or_default();
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        p.abort();
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
    Ok(PhaseResult {
        phase: if plan.load { "load" } else { "run" },
        rate: plan.rate,
        elapsed,
        ops,
        timeline,
        steal,
    })
}

fn shared_counters(s: &Arc<Shared>) -> report::Counters {
    let s2 = Arc::clone(s);
    let s3 = Arc::clone(s);
    report::Counters {
        done: Box::new(move || s2.done.load(Ordering::Relaxed)),
        failed: Box::new(move || s3.failed.load(Ordering::Relaxed)),
    }
}

/// Runs `dyno bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.value_size == 0 || args.value_size > dyno_node::http::MAX_VALUE_BYTES {
        bail!(
            "--value-size must be between 1 and {}",
            dyno_node::http::MAX_VALUE_BYTES
        );
    }
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let valid = |r: f64| r.is_finite() && r > 0.0;
    if args.rate.is_some_and(|r| !valid(r)) || args.sweep.iter().any(|r| !valid(*r)) {
        bail!("rates must be positive");
    }
    if !(args.warmup.is_finite() && (0.0..=3600.0).contains(&args.warmup)) {
        bail!("--warmup must be between 0 and 3600 seconds");
    }
    let urls = if args.urls.is_empty() {
        default_urls()
    } else {
        args.urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect()
    };
    let target = Target::parse(
        &args.target,
        urls.clone(),
        args.table.clone(),
        args.r,
        args.w,
    )?;
    let http = driver::http_pool(args.clients)?;
    if matches!(target, Target::DynoHttp { .. } | Target::DynoGrpc { .. }) && !args.no_create {
        ensure_table(&http, &args, &urls).await?;
    }
    if let Target::Dynamo { creds, .. } = &target
        && !args.no_create
    {
        ensure_dynamodb_table(&http, creds, &args.table, &urls).await?;
    }
    let seed = args
        .seed
        .unwrap_or_else(|| dyno_node::sys::random_u64() % 1_000_000);
    let mut rng = Rng::new(seed);
    let value: Vec<u8> = (0..args.value_size)
        .map(|_| b'a' + (rng.next_u64() % 26) as u8)
        .collect();
    let dist = args
        .distribution
        .unwrap_or(args.workload.default_distribution());
    eprintln!(
        "dyno bench: workload {} ({:?}), target {}, {} records of {} bytes, {} clients, seed {seed}",
        args.workload.letter(),
        dist,
        target.describe(),
        args.records,
        args.value_size,
        args.clients
    );
    let shared = Arc::new(Shared {
        value: Bytes::from(value),
        records: args.records.max(1),
        inserted: AtomicU64::new(args.records.max(1)),
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let duration = Duration::from_secs_f64(args.duration.max(0.1));
    let load = if args.skip_load {
        None
    } else {
        Some(
            run_phase(
                &target,
                &http,
                &args,
                &shared,
                Plan {
                    load: true,
                    rate: None,
                    duration,
                    operations: None,
                },
                seed,
            )
            .await?,
        )
    };
    // One run phase, or one per rate of a sweep.
    let rates: Vec<Option<f64>> = if args.sweep.is_empty() {
        vec![args.rate]
    } else {
        args.sweep.iter().copied().map(Some).collect()
    };
    if args.warmup > 0.0 {
        // Not recorded: see `--warmup`.
        let plan = Plan {
            load: false,
            rate: rates[0],
            duration: Duration::from_secs_f64(args.warmup),
            operations: None,
        };
        let w = run_phase(&target, &http, &args, &shared, plan, seed ^ 0x5741_524d).await?;
        if !args.quiet {
            eprintln!(
                "warm-up: {} operations in {:.1} s, not recorded",
                w.completed(),
                args.warmup
            );
        }
    }
    let mut runs = Vec::with_capacity(rates.len());
    for rate in rates {
        let plan = Plan {
            load: false,
            rate,
            duration,
            operations: args.operations,
        };
        runs.push(run_phase(&target, &http, &args, &shared, plan, seed).await?);
    }
    let summary = report::Summary {
        target: target.describe(),
        workload: args.workload.letter(),
        distribution: format!("{dist:?}").to_lowercase(),
        records: args.records,
        value_size: args.value_size,
        clients: args.clients,
        seed,
        load,
        runs,
    };
    let text = summary.table();
    if args.json {
        eprint!("{text}");
        println!("{}", serde_json::to_string_pretty(&summary.json())?);
    } else {
        print!("{text}");
    }
    if let Some(prefix) = &args.svg {
        for path in summary.write_svgs(prefix)? {
            eprintln!("wrote {}", path.display());
        }
    }
    let failed: u64 = summary
        .runs
        .iter()
        .map(|r| {
            let o = r.overall();
            o.errors + o.unavailable
        })
        .sum();
    if failed > 0 {
        eprintln!("warning: {failed} requests failed or were unavailable (see the table)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timelines_count_slow_operations_by_second_and_merge() {
        let mut a = Vec::new();
        note_second(&mut a, Duration::from_millis(200), 500);
        note_second(&mut a, Duration::from_millis(2_500), 12_000);
        note_second(&mut a, Duration::from_millis(2_900), 9_000);
        let mut b = Vec::new();
        note_second(&mut b, Duration::from_millis(3_100), 40_000);
        note_second(&mut b, Duration::from_millis(2_001), 15_000);
        merge_timeline(&mut a, &b);
        let want = [
            Second {
                completed: 1,
                slow: 0,
                max_micros: 500,
            },
            Second::default(),
            Second {
                completed: 3,
                slow: 2,
                max_micros: 15_000,
            },
            Second {
                completed: 1,
                slow: 1,
                max_micros: 40_000,
            },
        ];
        assert_eq!(a, want);
    }

    #[test]
    fn steal_comes_from_the_eighth_field_of_the_cpu_line() {
        assert_eq!(
            parse_cpu_line("cpu  100 5 50 800 10 1 2 32 0 0"),
            Some((1000, 32))
        );
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_cpu_line("cpu  1 2 3"), None);
        assert_eq!(parse_cpu_line("cpu  1 x 3 4 5 6 7 8"), None);
    }
}
