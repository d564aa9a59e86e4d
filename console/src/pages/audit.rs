//! The audit log: a tenant's users see their tenant's events, platform
//! admins everyone's (the API decides which).

use axum::response::Response;
use dyno_controlplane::api::Event;
use leptos::prelude::*;
use serde::Deserialize;

use super::error_page;
use crate::layout::{Area, Page, when};
use crate::session::Signed;

#[derive(Debug, Deserialize)]
struct Events {
    events: Vec<Event>,
}

/// `GET /audit`: the latest 200 events.
pub async fn list(user: Signed) -> Response {
    let events = match user.api.get::<Events>("/api/v1/audit?limit=200").await {
        Ok(e) => e.events,
        Err(f) => return error_page(Some(&user), &f),
    };
    let rows = events
        .into_iter()
        .map(|e| {
            let detail = if e.detail.as_object().is_some_and(|o| o.is_empty()) {
                String::new()
            } else {
                e.detail.to_string()
            };
            view! {
                <tr>
                    <td>{when(&e.at)}</td>
                    <td>{e.actor}</td>
                    <td>{e.tenant.unwrap_or_default()}</td>
                    <td><code>{e.action}</code></td>
                    <td>{e.resource}</td>
                    <td><code class="wrap">{detail}</code></td>
                </tr>
            }
        })
        .collect_view();
    Page::new("Audit log", Area::Audit).render(
        Some(&user),
        view! {
            <div class="table-wrap">
                <table>
                    <caption>"The latest 200 events, newest first."</caption>
                    <thead><tr>
                        <th scope="col">"When"</th><th scope="col">"Who"</th><th scope="col">"Tenant"</th>
                        <th scope="col">"What"</th><th scope="col">"On"</th><th scope="col">"Details"</th>
                    </tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
        },
    )
}
