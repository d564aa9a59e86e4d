//! The latency section of a table's page: for each operation, p50, p99
//! and p99.9 over the last hour, and the request rate of every operation,
//! as server-drawn SVG charts (from the control plane's collection of the
//! nodes' histograms).

use chrono::Utc;
use dyno_controlplane::latency::{Sample, TableLatency};
use leptos::prelude::*;

use crate::chart::LineChart;
use crate::client::seg;
use crate::session::Signed;

/// The operations shown first, in this order (others follow).
const ORDER: [&str; 3] = ["get", "put", "delete"];

fn minutes_ago(s: &Sample) -> f64 {
    -((Utc::now() - s.at).num_milliseconds() as f64 / 60_000.0)
}

fn ago_tick(v: f64) -> String {
    if v.abs() < 0.05 {
        "now".to_owned()
    } else {
        format!("{:.0}", v)
    }
}

/// Charts of `latency`; "no data yet" when nothing was measured.
pub fn charts(latency: &TableLatency) -> Vec<(String, String)> {
    let mut ops: Vec<&String> = latency.ops.keys().collect();
    ops.sort_by_key(|o| ORDER.iter().position(|x| x == o).unwrap_or(ORDER.len()));
    let mut out = Vec::new();
    let mut rate = LineChart::new("Requests per second", "minutes ago", "requests/s");
    rate.x_ticks = ago_tick;
    rate.x_range = Some((-60.0, 0.0));
    for op in &ops {
        let samples = &latency.ops[*op];
        rate = rate.series(
            op.as_str(),
            samples.iter().map(|s| (minutes_ago(s), s.rate)).collect(),
        );
    }
    out.push(("Requests per second".to_owned(), rate.svg()));
    for op in ORDER
        .iter()
        .map(|o| (*o).to_owned())
        .chain(ops.iter().map(|o| (*o).clone()))
    {
        if out.iter().any(|(t, _)| t == &format!("Latency of {op}")) {
            continue;
        }
        let samples = latency.ops.get(&op).cloned().unwrap_or_default();
        let line = |f: fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
            samples
                .iter()
                .filter_map(|s| f(s).map(|v| (minutes_ago(s), v)))
                .collect()
        };
        let mut c = LineChart::new(format!("Latency of {op}"), "minutes ago", "latency (ms)")
            .series("p50", line(|s| s.p50_ms))
            .series("p99", line(|s| s.p99_ms))
            .series("p99.9", line(|s| s.p999_ms));
        c.x_ticks = ago_tick;
        c.x_range = Some((-60.0, 0.0));
        out.push((format!("Latency of {op}"), c.svg()));
    }
    out
}

/// The section, for `table`.
pub async fn section(user: &Signed, table: &str) -> AnyView {
    let latency = user
        .api
        .get::<TableLatency>(&format!("/api/v1/tables/{}/latency", seg(table)))
        .await;
    match latency {
        Ok(l) => {
            let note = format!(
                "Measured on the nodes, collected every {} s; the last hour. Includes failed requests.",
                l.interval_secs
            );
            let figures = charts(&l)
                .into_iter()
                .map(|(title, svg)| {
                    view! { <figure class="chart" aria-label=title><div inner_html=svg></div></figure> }
                })
                .collect_view();
            view! {
                <section class="card">
                    <h2>"Latency and request rate"</h2>
                    <p class="muted">{note}</p>
                    {figures}
                </section>
            }
            .into_any()
        }
        Err(f) => view! {
            <section class="card"><h2>"Latency and request rate"</h2>
            <p class="error" role="alert">{f.message}</p></section>
        }
        .into_any(),
    }
}
