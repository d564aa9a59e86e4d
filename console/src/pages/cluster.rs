//! Cluster health. Platform admins see every cluster's nodes live
//! (status, φ, partitions, data, hint backlog, anti-entropy and handoff
//! progress, the ring epoch, any change under way); a tenant's users see
//! the service status of their own tables. The page refreshes itself.

use axum::response::Response;
use dyno_controlplane::api::Cluster;
use dyno_controlplane::health::{ClusterDetail, NodeDetail, TableStatus};
use leptos::prelude::*;
use serde::Deserialize;

use super::error_page;
use crate::client::seg;
use crate::layout::{Area, Page, badge, bytes, when};
use crate::session::Signed;

#[derive(Debug, Deserialize)]
struct Clusters {
    clusters: Vec<Cluster>,
}

#[derive(Debug, Deserialize)]
struct Statuses {
    tables: Vec<TableStatus>,
}

/// `GET /cluster`.
pub async fn show(user: Signed) -> Response {
    if user.is_platform_admin() {
        platform(&user).await
    } else {
        tenant(&user).await
    }
}

fn pct(done: u64, total: u64) -> String {
    if total == 0 {
        "—".to_owned()
    } else {
        format!(
            "{:.0}% ({done} of {total})",
            done as f64 * 100.0 / total as f64
        )
    }
}

fn node_row(n: NodeDetail) -> impl IntoView {
    let phi = if n.phi >= 1e8 {
        "never heard".to_owned()
    } else {
        format!("{:.1}", n.phi)
    };
    let parts = match n.partitions_next {
        Some(next) if next != n.partitions => format!("{} → {next}", n.partitions),
        _ => n.partitions.to_string(),
    };
    let data = match (n.keys, n.bytes) {
        (Some(k), Some(b)) => format!("{k} keys, {}", bytes(b)),
        _ => "—".to_owned(),
    };
    let hints = match (n.hints, n.hint_bytes) {
        (Some(h), Some(b)) => format!("{h} ({})", bytes(b)),
        _ => "no answer".to_owned(),
    };
    let aae = match (n.repair_running, n.repair_last) {
        (Some((d, t)), _) => format!("running: {}", pct(d, t)),
        (None, Some((ms, repaired))) => {
            let at = chrono::DateTime::from_timestamp_millis(ms as i64)
                .map(|t| when(&t))
                .unwrap_or_default();
            format!("last pass {at}, {repaired} keys repaired")
        }
        (None, None) => "no pass yet".to_owned(),
    };
    let handoff = n.handoff.map_or_else(|| "—".to_owned(), |(d, t)| pct(d, t));
    view! {
        <tr>
            <td>{n.id}</td>
            <td>{badge(&n.status)}</td>
            <td class="num">{phi}</td>
            <td class="num">{parts}</td>
            <td>{data}</td>
            <td>{hints}</td>
            <td>{aae}</td>
            <td>{handoff}</td>
        </tr>
    }
}

fn detail_view(d: ClusterDetail) -> impl IntoView {
    let change = d.change.map(|c| {
        let moved = c["partition_replicas_to_move"].as_u64().unwrap_or(0);
        let done = c["partitions_done"].as_u64().unwrap_or(0);
        let reported = c["partitions_reported"].as_u64().unwrap_or(0);
        let recv = c["bytes_received"].as_u64().unwrap_or(0);
        let text = format!(
            "A ring change is under way: {moved} partition replicas move; {} received so far ({}).",
            pct(done, reported),
            bytes(recv)
        );
        view! { <p class="notice" role="status">{text}</p> }
    });
    let summary = format!(
        "Ring epoch {} · {} partitions · {} members · as seen by {}",
        d.epoch,
        d.partitions,
        d.members.len(),
        d.answered_by
    );
    let rows = d.nodes.into_iter().map(node_row).collect_view();
    view! {
        <section class="card">
            <h2>{format!("Cluster {}", d.name)}</h2>
            <p class="muted">{summary}</p>
            {change}
            <div class="table-wrap">
                <table>
                    <thead><tr>
                        <th scope="col">"Node"</th><th scope="col">"Status"</th><th scope="col">"φ"</th>
                        <th scope="col">"Partitions"</th><th scope="col">"Data"</th><th scope="col">"Hint backlog"</th>
                        <th scope="col">"Anti-entropy"</th><th scope="col">"Handoff"</th>
                    </tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
        </section>
    }
}

async fn platform(user: &Signed) -> Response {
    let clusters = match user.api.get::<Clusters>("/api/v1/clusters").await {
        Ok(c) => c.clusters,
        Err(f) => return error_page(Some(user), &f),
    };
    let mut sections = Vec::new();
    for c in clusters {
        let section = match user
            .api
            .get::<ClusterDetail>(&format!("/api/v1/clusters/{}", seg(&c.name)))
            .await
        {
            Ok(d) => detail_view(d).into_any(),
            Err(f) => {
                let msg = format!("Cluster {}: {}", c.name, f.message);
                let checked = c
                    .checked_at
                    .as_ref()
                    .map(|t| format!("Last reached {}.", when(t)));
                view! {
                    <section class="card"><h2>{c.name.clone()}</h2>
                    <p class="error" role="alert">{msg}</p><p class="muted">{checked}</p></section>
                }
                .into_any()
            }
        };
        sections.push(section);
    }
    let empty = sections
        .is_empty()
        .then(|| view! { <p class="muted">"No cluster is registered."</p> });
    Page::new("Cluster health", Area::Cluster)
        .refresh(5)
        .render(Some(user), view! { {empty} {sections} })
}

async fn tenant(user: &Signed) -> Response {
    let tables = match user.api.get::<Statuses>("/api/v1/status").await {
        Ok(s) => s.tables,
        Err(f) => return error_page(Some(user), &f),
    };
    let rows = tables
        .into_iter()
        .map(|t| {
            let nodes = format!("{} of {}", t.nodes_up, t.nodes);
            let quorum = format!("N {} · R {} · W {}", t.n, t.r, t.w);
            let checked = t
                .checked_at
                .as_ref()
                .map_or_else(|| "never".to_owned(), when);
            let href = format!("/tables/{}", seg(&t.table));
            view! {
                <tr>
                    <td><a href=href>{t.table}</a></td>
                    <td>{badge(&t.status)}</td>
                    <td>{nodes}</td>
                    <td>{quorum}</td>
                    <td>{checked}</td>
                </tr>
            }
        })
        .collect_view();
    Page::new("Service status", Area::Cluster).refresh(5).render(
        Some(user),
        view! {
            <p class="muted">"Operational: every node is up. Degraded: some nodes are down, but enough remain for each table's R and W. Unavailable: requests may fail."</p>
            <div class="table-wrap">
                <table>
                    <thead><tr>
                        <th scope="col">"Table"</th><th scope="col">"Status"</th><th scope="col">"Nodes up"</th>
                        <th scope="col">"Quorums"</th><th scope="col">"Checked"</th>
                    </tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
        },
    )
}
