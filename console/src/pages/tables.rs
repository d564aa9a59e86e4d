//! Tables: the list with a create form, a table's page (settings, change
//! R/W and the limit, delete with a typed confirmation).

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use dyno_controlplane::api::Table;
use dyno_controlplane::latency::{TableUsage, Usage};
use leptos::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{NoticeQuery, clip_notice, done, error_page};
use crate::client::{Failure, seg};
use crate::layout::{
    Area, Field, Page, badge, bytes, csrf_field, form_error, notice, select, when,
};
use crate::session::{Posted, Signed};

#[derive(Debug, Deserialize)]
struct TableList {
    tables: Vec<Table>,
}

/// The rules of N, R and W, shown next to the fields.
pub const N_HELP: &str = "Replicas of every item, 1 to 7 and at most the cluster's node count. Fixed once the table exists.";
/// R.
pub const R_HELP: &str = "Replies a read waits for, 1 to N. With R + W > N a read always sees the latest acknowledged write.";
/// W.
pub const W_HELP: &str = "Acknowledgements a write waits for, 1 to N. Lower W is faster and more available; higher W is more durable.";
/// The throughput limit.
pub const LIMIT_HELP: &str = "Operations per second over the whole cluster; empty for no limit. Requests over it get 429 with Retry-After.";

const CONFLICTS: &[(&str, &str)] = &[
    (
        "siblings",
        "Siblings: keep concurrent writes, the client merges",
    ),
    (
        "lww",
        "Last writer wins: keep the write with the latest timestamp",
    ),
];

/// The values of the create form (kept when it is shown again).
#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    n: String,
    #[serde(default)]
    r: String,
    #[serde(default)]
    w: String,
    #[serde(default)]
    conflict: String,
    #[serde(default)]
    throughput_limit: String,
}

/// Parses a whole number field (empty: `None`).
pub fn number(field: &str, raw: &str) -> Result<Option<u32>, Failure> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<u32>().map(Some).map_err(|_| Failure {
        status: StatusCode::BAD_REQUEST,
        code: "ValidationError".into(),
        message: format!("{field} must be a whole number, not {raw:?}"),
        field: Some(field.to_owned()),
    })
}

fn required(field: &str, v: Option<u32>) -> Result<u32, Failure> {
    v.ok_or_else(|| Failure {
        status: StatusCode::BAD_REQUEST,
        code: "ValidationError".into(),
        message: format!("{field} is required"),
        field: Some(field.to_owned()),
    })
}

/// The quorum rule in a sentence.
pub fn consistency(n: i64, r: i64, w: i64) -> String {
    if r + w > n {
        format!(
            "R + W = {} > N = {n}: reads see the latest acknowledged write.",
            r + w
        )
    } else {
        format!(
            "R + W = {} ≤ N = {n}: a read may miss a write for a short while (eventual consistency).",
            r + w
        )
    }
}

async fn render_list(
    user: &Signed,
    form: &CreateForm,
    failure: Option<&Failure>,
    note: Option<String>,
) -> Response {
    let tables = match user.api.get::<TableList>("/api/v1/tables").await {
        Ok(t) => t.tables,
        Err(f) => return error_page(Some(user), &f),
    };
    let creating = tables.iter().any(|t| t.status == "creating");
    // Estimates and rates are extras: the list shows without them.
    let usage = usage(user).await;
    let rows = tables
        .into_iter()
        .map(|t| {
            let u = usage.iter().find(|u| u.name == t.name);
            let (items, size, rate) = usage_cells(u);
            let href = format!("/tables/{}", seg(&t.name));
            let kind = if t.dynamo.is_some() {
                "DynamoDB"
            } else {
                "native"
            };
            let limit = t
                .throughput_limit
                .map_or_else(|| "none".to_owned(), |l| format!("{l}/s"));
            view! {
                <tr>
                    <td><a href=href>{t.name.clone()}</a></td>
                    <td>{kind}</td>
                    <td class="num">{format!("{} / {} / {}", t.n, t.r, t.w)}</td>
                    <td>{t.conflict.clone()}</td>
                    <td>{badge(&t.status)}</td>
                    <td class="num">{limit}</td>
                    <td class="num">{items}</td>
                    <td class="num">{size}</td>
                    <td class="num">{rate}</td>
                    <td>{t.cluster.clone()}</td>
                </tr>
            }
        })
        .collect_view();
    let empty = rows_empty_hint(creating);
    let page = Page::new("Tables", Area::Tables);
    let page = if creating { page.refresh(3) } else { page };
    let status = failure.map_or(StatusCode::OK, |f| f.status);
    page.status(status).render(
        Some(user),
        view! {
            {notice(note)}
            <div class="table-wrap">
                <table>
                    <caption>"Your tenant's tables"</caption>
                    <thead><tr>
                        <th scope="col">"Name"</th><th scope="col">"Kind"</th>
                        <th scope="col">"N / R / W"</th><th scope="col">"Conflicts"</th>
                        <th scope="col">"Status"</th><th scope="col">"Limit"</th>
                        <th scope="col">"Items (est.)"</th>
                        <th scope="col">"Size (est.)"</th>
                        <th scope="col">"Requests"</th>
                        <th scope="col">"Cluster"</th>
                    </tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
            {empty}
            {create_form(user, form, failure)}
        },
    )
}

/// The tenant's usage figures (empty when they cannot be had).
async fn usage(user: &Signed) -> Vec<TableUsage> {
    user.api
        .get::<Usage>("/api/v1/usage")
        .await
        .map(|u| u.tables)
        .unwrap_or_default()
}

/// Item count, size and request rate as text ("—" when unknown).
fn usage_cells(u: Option<&TableUsage>) -> (String, String, String) {
    let dash = || "—".to_owned();
    (
        u.and_then(|u| u.items)
            .map_or_else(dash, |n| format!("≈ {n}")),
        u.and_then(|u| u.bytes)
            .map_or_else(dash, |b| format!("≈ {}", bytes(b))),
        u.and_then(|u| u.requests_per_sec)
            .map_or_else(dash, |r| format!("{r:.1}/s")),
    )
}

fn rows_empty_hint(creating: bool) -> impl IntoView {
    creating.then(|| {
        view! { <p class="muted">"A table is being created; this page refreshes until every node knows it."</p> }
    })
}

fn create_form(
    user: &Signed,
    form: &CreateForm,
    failure: Option<&Failure>,
) -> impl IntoView + use<> {
    let fields = ["name", "n", "r", "w", "conflict", "throughput_limit"];
    let or = |v: &str, d: &str| {
        if v.is_empty() {
            d.to_owned()
        } else {
            v.to_owned()
        }
    };
    view! {
        <section class="card">
            <h2>"Create a table"</h2>
            {form_error(failure, &fields)}
            <form method="post" action="/tables">
                {csrf_field(&user.csrf)}
                {Field::text("name", "Name", form.name.clone()).required()
                    .help("3 to 255 characters: letters, digits, _ - and .").view(failure)}
                <div class="row">
                    {Field::number("n", "N (replicas)", or(&form.n, "3"), 1, 7).required().help(N_HELP).view(failure)}
                    {Field::number("r", "R (read quorum)", or(&form.r, "2"), 1, 7).required().help(R_HELP).view(failure)}
                    {Field::number("w", "W (write quorum)", or(&form.w, "2"), 1, 7).required().help(W_HELP).view(failure)}
                </div>
                {select("conflict", "Concurrent writes", CONFLICTS, if form.conflict.is_empty() { "siblings" } else { &form.conflict }, None, failure)}
                {Field::number("throughput_limit", "Throughput limit (operations per second)", form.throughput_limit.clone(), 1, i32::MAX as u32)
                    .help(LIMIT_HELP).view(failure)}
                <button type="submit">"Create table"</button>
            </form>
        </section>
    }
}

/// `GET /tables`.
pub async fn list(user: Signed, Query(q): Query<NoticeQuery>) -> Response {
    render_list(&user, &CreateForm::default(), None, clip_notice(q.notice)).await
}

fn create_body(f: &CreateForm) -> Result<Value, Failure> {
    let n = required("n", number("n", &f.n)?)?;
    let r = required("r", number("r", &f.r)?)?;
    let w = required("w", number("w", &f.w)?)?;
    let limit = number("throughput_limit", &f.throughput_limit)?;
    Ok(json!({
        "name": f.name.trim(), "n": n, "r": r, "w": w,
        "conflict": if f.conflict.is_empty() { "siblings" } else { f.conflict.as_str() },
        "throughput_limit": limit,
    }))
}

/// `POST /tables`.
pub async fn create(p: Posted<CreateForm>) -> Response {
    let res = match create_body(&p.form) {
        Ok(body) => p.user.api.post::<Table>("/api/v1/tables", &body).await,
        Err(f) => Err(f),
    };
    match res {
        Ok(t) => done(
            &format!("/tables/{}", seg(&t.name)),
            &format!("Table {} is being created.", t.name),
        ),
        Err(f) if f.is_unauthorized() => crate::session::to_login("/tables", true, p.user.secure),
        Err(f) => render_list(&p.user, &p.form, Some(&f), None).await,
    }
}

/// The change form's values.
#[derive(Debug, Default, Deserialize)]
pub struct UpdateForm {
    #[serde(default)]
    r: String,
    #[serde(default)]
    w: String,
    #[serde(default)]
    throughput_limit: String,
}

/// The delete form.
#[derive(Debug, Default, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

enum Failed<'a> {
    None,
    Update(&'a Failure, &'a UpdateForm),
    Delete(&'a Failure),
}

/// `GET /tables/{table}` query.
#[derive(Debug, Default, Deserialize)]
pub struct ShowQuery {
    /// A notice.
    pub notice: Option<String>,
    /// An R to compare in the staleness model.
    #[serde(default)]
    pub alt_r: String,
    /// A W to compare.
    #[serde(default)]
    pub alt_w: String,
}

async fn render_table(
    user: &Signed,
    name: &str,
    failed: Failed<'_>,
    note: Option<String>,
) -> Response {
    render_table_with(user, name, failed, note, ("", "")).await
}

async fn render_table_with(
    user: &Signed,
    name: &str,
    failed: Failed<'_>,
    note: Option<String>,
    alt: (&str, &str),
) -> Response {
    let t = match user
        .api
        .get::<Table>(&format!("/api/v1/tables/{}", seg(name)))
        .await
    {
        Ok(t) => t,
        Err(f) => return error_page(Some(user), &f),
    };
    let (uf, uform) = match &failed {
        Failed::Update(f, form) => (Some(*f), Some(*form)),
        _ => (None, None),
    };
    let df = match &failed {
        Failed::Delete(f) => Some(*f),
        _ => None,
    };
    let form = (
        uform.map_or_else(|| t.r.to_string(), |f| f.r.clone()),
        uform.map_or_else(|| t.w.to_string(), |f| f.w.clone()),
        uform.map_or_else(
            || {
                t.throughput_limit
                    .map(|l| l.to_string())
                    .unwrap_or_default()
            },
            |f| f.throughput_limit.clone(),
        ),
    );
    let latency = super::latency::section(user, &t.name).await;
    let staleness = if t.dynamo.is_none() {
        Some(super::staleness::section(user, &t.name, alt).await)
    } else {
        None
    };
    let usage = usage(user).await;
    let usage = usage_cells(usage.iter().find(|u| u.name == t.name));
    let status = uf.or(df).map_or(StatusCode::OK, |f| f.status);
    view_table_page(
        user,
        &t,
        TablePage {
            status,
            latency,
            staleness,
            note,
            usage,
            form,
            uf: uf.cloned(),
            df: df.cloned(),
        },
    )
}

/// What a table's page shows besides the table itself.
struct TablePage {
    status: StatusCode,
    latency: AnyView,
    staleness: Option<AnyView>,
    note: Option<String>,
    /// Items, size and request rate, as text.
    usage: (String, String, String),
    /// The change form's R, W and limit (as typed, after a failure).
    form: (String, String, String),
    uf: Option<Failure>,
    df: Option<Failure>,
}

fn view_table_page(user: &Signed, t: &Table, v: TablePage) -> Response {
    let creating = t.status == "creating";
    let href = format!("/tables/{}", seg(&t.name));
    let n = t.n as u32;
    let items = (t.dynamo.is_none()).then(|| {
        let h = format!("{href}/items");
        view! { <p><a class="button" href=h>"Browse items"</a></p> }
    });
    let dynamo = t.dynamo.as_ref().map(|d| {
        let schema = serde_json::to_string_pretty(d).unwrap_or_default();
        view! {
            <section class="card">
                <h2>"DynamoDB schema"</h2>
                <p class="muted">"Use the DynamoDB API (any AWS SDK) for this table's items."</p>
                <pre>{schema}</pre>
            </section>
        }
    });
    let page = Page::new(format!("Table {}", t.name), Area::Tables).status(v.status);
    let page = if creating { page.refresh(2) } else { page };
    let waiting = creating.then(|| view! {
        <p class="notice" role="status">"Being created: the control plane is telling every node of the cluster. This page refreshes until it is active."</p>
    });
    let limit_text = t.throughput_limit.map_or_else(
        || "none".to_owned(),
        |l| format!("{l} operations per second"),
    );
    let consistency = consistency(i64::from(t.n), i64::from(t.r), i64::from(t.w));
    let (r, w, limit) = v.form;
    let (item_count, size, rate) = v.usage;
    let uf = v.uf.as_ref();
    let df = v.df.as_ref();
    let update_action = href.clone();
    let delete_action = format!("{href}/delete");
    let confirm_help = format!("Type {} to confirm. Its items cannot be recovered.", t.name);
    page.render(
        Some(user),
        view! {
            {notice(v.note)}
            {waiting}
            <section class="card">
                <h2>"Settings"</h2>
                <dl class="facts">
                    <dt>"Status"</dt><dd>{badge(&t.status)}</dd>
                    <dt>"N / R / W"</dt><dd>{format!("{} / {} / {}", t.n, t.r, t.w)}</dd>
                    <dt>"Consistency"</dt><dd>{consistency}</dd>
                    <dt>"Concurrent writes"</dt><dd>{t.conflict.clone()}</dd>
                    <dt>"Throughput limit"</dt><dd>{limit_text}</dd>
                    <dt>"Items (estimate)"</dt><dd>{item_count}</dd>
                    <dt>"Size (estimate)"</dt><dd>{size}</dd>
                    <dt>"Requests"</dt><dd>{rate}</dd>
                    <dt>"Cluster"</dt><dd>{t.cluster.clone()}</dd>
                    <dt>"Created"</dt><dd>{when(&t.created_at)}</dd>
                    <dt>"Changed"</dt><dd>{when(&t.updated_at)}</dd>
                </dl>
                <p class="help">"Estimates: the nodes count items as they write them, and the figures are collected every few seconds. They run high while a ring change copies data and low while a node is down."</p>
                {items}
            </section>
            {dynamo}
            {v.staleness}
            {v.latency}
            <section class="card">
                <h2>"Change R, W and the limit"</h2>
                {form_error(uf, &["r", "w", "throughput_limit"])}
                <form method="post" action=update_action>
                    {csrf_field(&user.csrf)}
                    <div class="row">
                        {Field::number("r", "R (read quorum)", r, 1, n).required().help(R_HELP).view(uf)}
                        {Field::number("w", "W (write quorum)", w, 1, n).required().help(W_HELP).view(uf)}
                    </div>
                    {Field::number("throughput_limit", "Throughput limit (operations per second)", limit, 1, i32::MAX as u32)
                        .help(LIMIT_HELP).view(uf)}
                    <button type="submit">"Save changes"</button>
                </form>
            </section>
            <section class="card danger">
                <h2>"Delete this table"</h2>
                <form method="post" action=delete_action>
                    {csrf_field(&user.csrf)}
                    {form_error(df, &["confirm"])}
                    {Field::text("confirm", "Table name", "").required().help(confirm_help).view(df)}
                    <button type="submit" class="danger">"Delete table"</button>
                </form>
            </section>
        },
    )
}

/// `GET /tables/{table}`.
pub async fn show(user: Signed, Path(table): Path<String>, Query(q): Query<ShowQuery>) -> Response {
    let alt = (q.alt_r.as_str(), q.alt_w.as_str());
    render_table_with(&user, &table, Failed::None, clip_notice(q.notice), alt).await
}

/// `POST /tables/{table}`: changes R, W and the limit.
pub async fn update(Path(table): Path<String>, p: Posted<UpdateForm>) -> Response {
    let body = (|| -> Result<Value, Failure> {
        let r = required("r", number("r", &p.form.r)?)?;
        let w = required("w", number("w", &p.form.w)?)?;
        let limit = number("throughput_limit", &p.form.throughput_limit)?;
        Ok(json!({ "r": r, "w": w, "throughput_limit": limit }))
    })();
    let res = match body {
        Ok(b) => {
            p.user
                .api
                .patch::<Table>(&format!("/api/v1/tables/{}", seg(&table)), &b)
                .await
        }
        Err(f) => Err(f),
    };
    match res {
        Ok(_) => done(
            &format!("/tables/{}", seg(&table)),
            "Saved. Nodes apply the change within seconds.",
        ),
        Err(f) => render_table(&p.user, &table, Failed::Update(&f, &p.form), None).await,
    }
}

/// `POST /tables/{table}/delete`: only with the name typed again.
pub async fn delete(Path(table): Path<String>, p: Posted<DeleteForm>) -> Response {
    if p.form.confirm.trim() != table {
        let f = Failure {
            status: StatusCode::BAD_REQUEST,
            code: "ConfirmationMismatch".into(),
            message: format!("type the table's name, {table}, to delete it"),
            field: Some("confirm".into()),
        };
        return render_table(&p.user, &table, Failed::Delete(&f), None).await;
    }
    match p
        .user
        .api
        .delete::<Value>(&format!("/api/v1/tables/{}", seg(&table)))
        .await
    {
        Ok(_) => done("/tables", &format!("Table {table} is being deleted.")),
        Err(f) => render_table(&p.user, &table, Failed::Delete(&f), None).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_name_their_field() {
        assert_eq!(number("n", " 3 ").ok().flatten(), Some(3));
        assert_eq!(number("n", "").ok().flatten(), None);
        let e = number("w", "two").err().map(|f| f.field);
        assert_eq!(e, Some(Some("w".to_owned())));
    }

    #[test]
    fn the_quorum_rule_reads_right() {
        assert!(consistency(3, 2, 2).contains("see the latest"));
        assert!(consistency(3, 1, 1).contains("may miss"));
    }
}
