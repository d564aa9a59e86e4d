//! Progress, the final table, JSON, and SVG charts.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use dyno_console::chart::LineChart;

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
        // Per second of the phase: operations, those over 10 ms, the
        // slowest (ms).
        "timeline": p.timeline.iter().map(|s| json!({
            "completed": s.completed,
            "slow": s.slow,
            "max_ms": ms(s.max_micros),
        })).collect::<Vec<_>>(),
        // The hypervisor's share of the machine's CPU time, % per second.
        "steal_pct": p.steal.iter().map(|x| (x * 10.0).round() / 10.0).collect::<Vec<_>>(),
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

/// The x position of quantile `q` on a "nines" scale: 90% is 1, 99% is
/// 2, 99.9% is 3, ….
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-9).log10()
}

fn nines_tick(v: f64) -> String {
    match v.round() as i64 {
        0 => "0".to_owned(),
        n => {
            let p = 100.0 - 100.0 * 10f64.powi(-n as i32);
            let s = format!("{p:.5}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
    }
}

/// Latency against percentile, x on a "nines" scale (90, 99, 99.9, …).
pub fn latency_svg(run: &PhaseResult, title: &str) -> String {
    let mut chart = LineChart::new(title, "percentile (%)", "latency (ms)");
    chart.x_ticks = nines_tick;
    chart.x_range = Some((0.0, 5.0));
    for (op, s) in &run.ops {
        if s.hist.is_empty() {
            continue;
        }
        let points = (0..=100)
            .map(|step| {
                let q = 1.0 - 10f64.powf(-5.0 * f64::from(step) / 100.0);
                (nines(q), ms(s.hist.value_at_quantile(q.min(1.0))))
            })
            .collect();
        let name = format!(
            "{} (p99 {:.2} ms)",
            op.name(),
            ms(s.hist.value_at_quantile(0.99))
        );
        chart = chart.series(name, points);
    }
    chart.svg()
}

/// Achieved throughput against p99, one point per open-loop rate.
pub fn sweep_svg(runs: &[PhaseResult], title: &str) -> String {
    let points = runs
        .iter()
        .map(|r| (r.throughput(), ms(r.overall().hist.value_at_quantile(0.99))))
        .collect();
    let mut chart = LineChart::new(title, "achieved throughput (ops/s)", "p99 latency (ms)")
        .series("p99 at each offered rate", points);
    chart.markers = true;
    chart.svg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_ticks_read_as_percentiles() {
        assert_eq!(nines_tick(0.0), "0");
        assert_eq!(nines_tick(1.0), "90");
        assert_eq!(nines_tick(3.0), "99.9");
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
    }
}
