//! Progress, the final table, JSON, and SVG charts.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{OpStats, PhaseResult};

/// Live counters read by the progress bar.
pub struct Counters {
    /// Operations completed.
    pub done: Box<dyn Fn() -> u64 + Send>,
    /// Operations failed or unavailable.
    pub failed: Box<dyn Fn() -> u64 + Send>,
}

/// Prints progress to stderr until aborted: a bar on a terminal, a line
/// every 2 s otherwise.
pub async fn progress(c: Counters, label: String, total: Option<u64>, length: Option<Duration>) {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = (0u64, Instant::now());
    let period = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(2)
    };
    loop {
        tokio::time::sleep(period).await;
        let done = (c.done)();
        let failed = (c.failed)();
        let now = Instant::now();
        let rate = (done - last.0) as f64 / now.duration_since(last.1).as_secs_f64().max(1e-9);
        last = (done, now);
        let frac = match (total, length) {
            (Some(t), _) if t > 0 => done as f64 / t as f64,
            (_, Some(l)) => started.elapsed().as_secs_f64() / l.as_secs_f64().max(1e-9),
            _ => 0.0,
        }
        .clamp(0.0, 1.0);
        let width = 30;
        let filled = (frac * width as f64) as usize;
        let bar: String = (0..width)
            .map(|i| {
                if i < filled {
                    '='
                } else if i == filled {
                    '>'
                } else {
                    ' '
                }
            })
            .collect();
        let line = format!(
            "{label:>12} [{bar}] {:>3.0}% {done:>9} ops {rate:>9.0} ops/s {failed} failed",
            frac * 100.0
        );
        let mut err = std::io::stderr();
        if tty {
            let _ = write!(err, "\r{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn stats_json(s: &OpStats, elapsed: Duration) -> Value {
    let h = &s.hist;
    json!({
        "count": h.len(),
        "throughput": h.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p95_ms": ms(h.value_at_quantile(0.95)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": h.mean() / 1000.0,
        "errors": s.errors,
        "unavailable": s.unavailable,
        "not_found": s.not_found,
        "first_error": s.first_error,
    })
}

/// Everything a run measured.
pub struct Summary {
    /// The system driven.
    pub target: String,
    /// YCSB workload letter.
    pub workload: char,
    /// Key distribution.
    pub distribution: String,
    /// Records loaded.
    pub records: u64,
    /// Value size.
    pub value_size: usize,
    /// Clients (or in-flight limit).
    pub clients: usize,
    /// Seed.
    pub seed: u64,
    /// The load phase.
    pub load: Option<PhaseResult>,
    /// The run phases (one per rate in a sweep).
    pub runs: Vec<PhaseResult>,
}

fn phase_json(p: &PhaseResult) -> Value {
    let ops: serde_json::Map<String, Value> = p
        .ops
        .iter()
        .map(|(op, s)| (op.name().to_owned(), stats_json(s, p.elapsed)))
        .collect();
    json!({
        "phase": p.phase,
        "mode": if p.rate.is_some() { "open" } else { "closed" },
        "target_rate": p.rate,
        "seconds": p.elapsed.as_secs_f64(),
        "throughput": p.throughput(),
        "overall": stats_json(&p.overall(), p.elapsed),
        "ops": ops,
    })
}

impl Summary {
    /// The machine-readable form.
    pub fn json(&self) -> Value {
        json!({
            "target": self.target,
            "workload": self.workload.to_string(),
            "distribution": self.distribution,
            "records": self.records,
            "value_size": self.value_size,
            "clients": self.clients,
            "seed": self.seed,
            "load": self.load.as_ref().map(phase_json),
            "runs": self.runs.iter().map(phase_json).collect::<Vec<_>>(),
        })
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut phases: Vec<&PhaseResult> = self.load.iter().collect();
        phases.extend(self.runs.iter());
        for p in phases {
            let mode = match p.rate {
                Some(r) => format!("open loop at {r:.0}/s"),
                None => format!("closed loop, {} clients", self.clients),
            };
            let _ = writeln!(
                out,
                "\n{} phase, workload {}, {mode}: {:.0} ops/s over {:.1} s",
                p.phase,
                self.workload,
                p.throughput(),
                p.elapsed.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "{:<8} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>7} {:>9}",
                "op",
                "count",
                "ops/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "p99.9",
                "max ms",
                "errors",
                "503s",
                "notfound"
            );
            let mut rows: Vec<(String, &OpStats)> = p
                .ops
                .iter()
                .map(|(o, s)| (o.name().to_owned(), s))
                .collect();
            let overall = p.overall();
            if p.ops.len() > 1 {
                rows.push(("all".into(), &overall));
            }
            for (name, s) in rows {
                let h = &s.hist;
                let _ = writeln!(
                    out,
                    "{name:<8} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>7} {:>7} {:>9}",
                    h.len(),
                    h.len() as f64 / p.elapsed.as_secs_f64().max(1e-9),
                    ms(h.value_at_quantile(0.5)),
                    ms(h.value_at_quantile(0.95)),
                    ms(h.value_at_quantile(0.99)),
                    ms(h.value_at_quantile(0.999)),
                    ms(h.max()),
                    s.errors,
                    s.unavailable,
                    s.not_found
                );
                if let Some(e) = &s.first_error {
                    let _ = writeln!(out, "         first error: {e}");
                }
            }
        }
        out
    }

    /// Writes the charts; returns their paths.
    pub fn write_svgs(&self, prefix: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        if let Some(run) = self.runs.last() {
            let path = with_suffix(prefix, "-latency.svg");
            std::fs::write(
                &path,
                latency_svg(
                    run,
                    &format!("Workload {} latency, {}", self.workload, self.target),
                ),
            )?;
            written.push(path);
        }
        if self.runs.len() > 1 {
            let path = with_suffix(prefix, "-sweep.svg");
            std::fs::write(
                &path,
                sweep_svg(
                    &self.runs,
                    &format!(
                        "Workload {}: throughput vs p99, {}",
                        self.workload, self.target
                    ),
                ),
            )?;
            written.push(path);
        }
        Ok(written)
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

const W: f64 = 720.0;
const H: f64 = 420.0;
const L: f64 = 70.0;
const R: f64 = 150.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLOURS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn frame(title: &str, x_label: &str, y_label: &str) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>
"##,
        W / 2.0,
        escape(title),
        H - B,
        W - R,
        H - B,
        H - B,
        (L + W - R) / 2.0,
        H - 12.0,
        escape(x_label),
        (T + H - B) / 2.0,
        (T + H - B) / 2.0,
        escape(y_label)
    )
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn y_axis(out: &mut String, y_max: f64) {
    for i in 0..=5 {
        let v = y_max * i as f64 / 5.0;
        let y = H - B - (H - B - T) * i as f64 / 5.0;
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v:.2}</text>"##,
            L,
            W - R,
            L - 6.0,
            y + 4.0
        );
    }
}

/// Latency against percentile, x on a "nines" scale (90, 99, 99.9, …).
pub fn latency_svg(run: &PhaseResult, title: &str) -> String {
    let mut out = frame(title, "percentile", "latency (ms)");
    let max_nines = 5.0;
    let y_max = nice_max(
        run.ops
            .values()
            .map(|s| ms(s.hist.max()))
            .fold(0.0, f64::max),
    );
    y_axis(&mut out, y_max);
    for (i, label) in ["0", "90", "99", "99.9", "99.99", "99.999"]
        .iter()
        .enumerate()
    {
        let x = L + (W - L - R) * i as f64 / max_nines;
        let _ = writeln!(
            out,
            r##"<text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            H - B + 16.0
        );
    }
    for (k, (op, s)) in run.ops.iter().enumerate() {
        if s.hist.is_empty() {
            continue;
        }
        let colour = COLOURS[k % COLOURS.len()];
        let mut points = String::new();
        for step in 0..=100 {
            let nines = max_nines * step as f64 / 100.0;
            let q = 1.0 - 10f64.powf(-nines);
            let v = ms(s.hist.value_at_quantile(q.min(1.0)));
            let x = L + (W - L - R) * nines / max_nines;
            let y = H - B - (H - B - T) * (v / y_max).min(1.0);
            let _ = write!(points, "{x:.1},{y:.1} ");
        }
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>"##
        );
        let ly = T + 20.0 * k as f64;
        let _ = writeln!(
            out,
            r##"<rect x="{}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}">{} (p99 {:.2} ms)</text>"##,
            W - R + 10.0,
            ly,
            W - R + 28.0,
            ly + 10.0,
            op.name(),
            ms(s.hist.value_at_quantile(0.99))
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Achieved throughput against p99, one point per open-loop rate.
pub fn sweep_svg(runs: &[PhaseResult], title: &str) -> String {
    let mut out = frame(title, "achieved throughput (ops/s)", "p99 latency (ms)");
    let pts: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| (r.throughput(), ms(r.overall().hist.value_at_quantile(0.99))))
        .collect();
    let x_max = nice_max(pts.iter().map(|p| p.0).fold(0.0, f64::max));
    let y_max = nice_max(pts.iter().map(|p| p.1).fold(0.0, f64::max));
    y_axis(&mut out, y_max);
    for i in 0..=5 {
        let v = x_max * i as f64 / 5.0;
        let x = L + (W - L - R) * i as f64 / 5.0;
        let _ = writeln!(
            out,
            r##"<text x="{x}" y="{}" text-anchor="middle">{v:.0}</text>"##,
            H - B + 16.0
        );
    }
    let mut points = String::new();
    for (x, y) in &pts {
        let px = L + (W - L - R) * x / x_max;
        let py = H - B - (H - B - T) * (y / y_max).min(1.0);
        let _ = write!(points, "{px:.1},{py:.1} ");
        let _ = writeln!(
            out,
            r##"<circle cx="{px:.1}" cy="{py:.1}" r="4" fill="{}"/>"##,
            COLOURS[0]
        );
    }
    let _ = writeln!(
        out,
        r##"<polyline fill="none" stroke="{}" stroke-width="2" points="{points}"/>"##,
        COLOURS[0]
    );
    out.push_str("</svg>\n");
    out
}
