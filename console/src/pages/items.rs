//! The item browser of a native table: look a key up and see every
//! sibling (text when it is UTF-8, hex otherwise, with its size) and the
//! context; write a value with or without that context (keeping one
//! sibling resolves the others); delete; and page through the table's
//! first items.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use dyno_controlplane::items::{Item, ItemPage, Written};
use leptos::prelude::*;
use serde::Deserialize;
use serde_json::json;

use super::{clip_notice, done, error_page};
use crate::client::{Failure, seg};
use crate::layout::{Area, Field, Page, bytes, csrf_field, form_error, notice};
use crate::session::{Posted, Signed};

/// The most of a value the page shows.
pub const PREVIEW_BYTES: usize = 4096;

/// `GET /tables/{table}/items` query.
#[derive(Debug, Default, Deserialize)]
pub struct BrowseQuery {
    /// A key to look up.
    pub key: Option<String>,
    /// The scan page to show (a previous page's `next`).
    pub after: Option<String>,
    /// A notice.
    pub notice: Option<String>,
}

/// How a value reads: as text when it is UTF-8 without control
/// characters (other than whitespace), else as hex; cut at
/// [`PREVIEW_BYTES`].
pub fn show_value(v: &[u8]) -> (&'static str, String) {
    let cut = &v[..v.len().min(PREVIEW_BYTES)];
    let text = std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.chars().any(|c| c.is_control() && !c.is_whitespace()));
    match text {
        Some(s) => {
            let mut end = s.len().min(PREVIEW_BYTES);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            ("text", s[..end].to_owned())
        }
        None => (
            "hex",
            cut.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .chunks(16)
                .map(|c| c.join(" "))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

fn decode(values: &[String]) -> Vec<Vec<u8>> {
    values
        .iter()
        .map(|v| B64.decode(v).unwrap_or_default())
        .collect()
}

struct State<'a> {
    lookup: Option<Result<Item, Failure>>,
    put: Option<(&'a PutForm, &'a Failure)>,
    delete: Option<&'a Failure>,
}

async fn render(user: &Signed, table: &str, q: &BrowseQuery, st: State<'_>) -> Response {
    let base = format!("/api/v1/tables/{}/items", seg(table));
    let mut scan_url = format!("{base}?limit=25");
    if let Some(a) = q.after.as_deref().filter(|a| !a.is_empty()) {
        scan_url.push_str(&format!("&after={}", seg(a)));
    }
    // A missing table (or a DynamoDB one) is the page's error; a cluster
    // that cannot list items right now is shown in place of the list.
    let page = match user.api.get::<ItemPage>(&scan_url).await {
        Err(f) if f.status == StatusCode::NOT_FOUND || f.status == StatusCode::BAD_REQUEST => {
            return error_page(Some(user), &f);
        }
        other => other,
    };
    let lookup = match st.lookup {
        Some(l) => Some(l),
        None => match q.key.as_deref().filter(|k| !k.is_empty()) {
            Some(k) => Some(user.api.get::<Item>(&format!("{base}/{}", seg(k))).await),
            None => None,
        },
    };
    let href = format!("/tables/{}/items", seg(table));
    let status = st
        .put
        .map(|(_, f)| f.status)
        .or(st.delete.map(|f| f.status))
        .unwrap_or(StatusCode::OK);
    let found = lookup_view(user, &href, q.key.as_deref().unwrap_or_default(), lookup);
    let (put_key, put_value, put_ctx, put_fail) = match st.put {
        Some((f, e)) => (
            f.key.clone(),
            f.value.clone(),
            f.context.clone(),
            Some(e.clone()),
        ),
        None => (
            q.key.clone().unwrap_or_default(),
            String::new(),
            String::new(),
            None,
        ),
    };
    let del_fail = st.delete.cloned();
    let scan = scan_view(&href, &page);
    let table_href = format!("/tables/{}", seg(table));
    let lookup_key = q.key.clone().unwrap_or_default();
    Page::new(format!("Items of {table}"), Area::Tables).status(status).render(
        Some(user),
        view! {
            {notice(clip_notice(q.notice.clone()))}
            <p><a href=table_href>"← Table settings"</a></p>
            <section class="card">
                <h2>"Look up a key"</h2>
                <form method="get" action=href.clone() class="row">
                    {Field::text("key", "Key", lookup_key).required().view(None)}
                    <button type="submit">"Get"</button>
                </form>
                {found}
            </section>
            <section class="card">
                <h2>"Write a value"</h2>
                {form_error(put_fail.as_ref(), &["key", "value", "context"])}
                <form method="post" action=href.clone()>
                    {csrf_field(&user.csrf)}
                    {Field::text("key", "Key", put_key).required().view(put_fail.as_ref())}
                    <div class="field">
                        <label for="f-value">"Value (text)"</label>
                        <textarea id="f-value" name="value" rows="4">{put_value}</textarea>
                    </div>
                    {Field::text("context", "Context (optional)", put_ctx)
                        .help("The context of the versions this write replaces, from a lookup. Without it the write is concurrent with them: a new sibling, or last-writer-wins.")
                        .view(put_fail.as_ref())}
                    <button type="submit">"Write"</button>
                </form>
            </section>
            {del_fail.map(|f| view! { <p class="error" role="alert">{f.message}</p> })}
            {scan}
        },
    )
}

fn lookup_view(
    user: &Signed,
    href: &str,
    key: &str,
    lookup: Option<Result<Item, Failure>>,
) -> Option<AnyView> {
    let item = match lookup? {
        Ok(item) => item,
        Err(f) if f.status == StatusCode::NOT_FOUND && f.message.contains("item") => {
            let msg = format!("No item has the key {key:?}.");
            return Some(view! { <p class="muted" role="status">{msg}</p> }.into_any());
        }
        Err(f) => return Some(view! { <p class="error" role="alert">{f.message}</p> }.into_any()),
    };
    let values = decode(&item.values);
    let count = values.len();
    let heading = if count > 1 {
        format!("{count} siblings: concurrent writes the table kept. Keep one to resolve them.")
    } else {
        "One value.".to_owned()
    };
    let ctx = item.context.clone().unwrap_or_default();
    let rows = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (kind, shown) = show_value(v);
            let size = bytes(v.len() as u64);
            let cut = if v.len() > PREVIEW_BYTES {
                format!(" (first {} shown)", bytes(PREVIEW_BYTES as u64))
            } else {
                String::new()
            };
            let label = format!("Sibling {} · {kind} · {size}{cut}", i + 1);
            let keep = (count > 1).then(|| {
                let b64 = B64.encode(v);
                view! {
                    <form method="post" action=href.to_owned() class="inline">
                        {csrf_field(&user.csrf)}
                        <input type="hidden" name="key" value=item.key.clone()/>
                        <input type="hidden" name="value_b64" value=b64/>
                        <input type="hidden" name="context" value=ctx.clone()/>
                        <button type="submit">{format!("Keep sibling {}", i + 1)}</button>
                    </form>
                }
            });
            view! {
                <li class="sibling">
                    <p class="muted">{label}</p>
                    <pre class=kind>{shown}</pre>
                    {keep}
                </li>
            }
        })
        .collect_view();
    let delete_action = format!("{href}/delete");
    Some(
        view! {
            <div class="found">
                <p>{heading}</p>
                <ol class="siblings">{rows}</ol>
                <p class="muted">"Context: "<code class="wrap">{ctx.clone()}</code></p>
                <form method="post" action=delete_action class="inline">
                    {csrf_field(&user.csrf)}
                    <input type="hidden" name="key" value=item.key.clone()/>
                    <input type="hidden" name="context" value=ctx.clone()/>
                    <button type="submit" class="danger" data-confirm="Delete this item?">"Delete this item"</button>
                </form>
            </div>
        }
        .into_any(),
    )
}

fn scan_view(href: &str, page: &Result<ItemPage, Failure>) -> impl IntoView + use<> {
    let page = match page {
        Ok(p) => p,
        Err(f) => {
            let msg = format!("The items could not be listed: {}", f.message);
            return view! { <section class="card"><h2>"Items"</h2><p class="error" role="alert">{msg}</p></section> }.into_any();
        }
    };
    let rows = page
        .items
        .iter()
        .map(|i| {
            let values = decode(&i.values);
            let first = values.first().map(|v| show_value(v).1).unwrap_or_default();
            let preview: String = first.chars().take(80).collect();
            let size: usize = values.iter().map(Vec::len).sum();
            let link = format!("{href}?key={}", seg(&i.key));
            let siblings = (values.len() > 1).then(|| format!("{} siblings", values.len()));
            view! {
                <tr>
                    <td><a href=link>{i.key.clone()}</a></td>
                    <td><code>{preview}</code>" "<span class="badge">{siblings}</span></td>
                    <td class="num">{bytes(size as u64)}</td>
                </tr>
            }
        })
        .collect_view();
    let empty = page
        .items
        .is_empty()
        .then(|| view! { <p class="muted">"No items yet."</p> });
    let next = page.next.as_ref().map(|n| {
        let h = format!("{href}?after={}", seg(n));
        view! { <p><a href=h rel="next">"Next page →"</a></p> }
    });
    view! {
        <section class="card">
            <h2>"Items"</h2>
            <p class="muted">"In placement order (keys are spread by hash), 25 per page."</p>
            <div class="table-wrap">
                <table>
                    <thead><tr><th scope="col">"Key"</th><th scope="col">"Value"</th><th scope="col">"Size"</th></tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
            {empty}
            {next}
        </section>
    }
    .into_any()
}

/// `GET /tables/{table}/items`.
pub async fn browse(
    user: Signed,
    Path(table): Path<String>,
    Query(q): Query<BrowseQuery>,
) -> Response {
    render(
        &user,
        &table,
        &q,
        State {
            lookup: None,
            put: None,
            delete: None,
        },
    )
    .await
}

/// The write form.
#[derive(Debug, Default, Deserialize)]
pub struct PutForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    value_b64: Option<String>,
    #[serde(default)]
    context: String,
}

/// `POST /tables/{table}/items`: writes through the API.
pub async fn put(Path(table): Path<String>, p: Posted<PutForm>) -> Response {
    let f = &p.form;
    let mut body = match &f.value_b64 {
        Some(b) => json!({ "value_b64": b }),
        None => json!({ "value": f.value }),
    };
    if !f.context.trim().is_empty() {
        body["context"] = json!(f.context.trim());
    }
    let path = format!("/api/v1/tables/{}/items/{}", seg(&table), seg(&f.key));
    let res = if f.key.is_empty() {
        Err(Failure {
            status: StatusCode::BAD_REQUEST,
            code: "ValidationError".into(),
            message: "give the item's key".into(),
            field: Some("key".into()),
        })
    } else {
        p.user.api.put::<Written>(&path, &body).await
    };
    match res {
        Ok(_) => done(
            &format!("/tables/{}/items?key={}", seg(&table), seg(&f.key)),
            "Written.",
        ),
        Err(e) => {
            let q = BrowseQuery {
                key: Some(f.key.clone()),
                ..BrowseQuery::default()
            };
            render(
                &p.user,
                &table,
                &q,
                State {
                    lookup: None,
                    put: Some((f, &e)),
                    delete: None,
                },
            )
            .await
        }
    }
}

/// The delete form.
#[derive(Debug, Default, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    context: String,
}

/// `POST /tables/{table}/items/delete`.
pub async fn delete(Path(table): Path<String>, p: Posted<DeleteForm>) -> Response {
    let mut path = format!("/api/v1/tables/{}/items/{}", seg(&table), seg(&p.form.key));
    if !p.form.context.is_empty() {
        path.push_str(&format!("?context={}", seg(&p.form.context)));
    }
    match p.user.api.delete::<Written>(&path).await {
        Ok(_) => done(
            &format!("/tables/{}/items", seg(&table)),
            &format!("Deleted {}.", p.form.key),
        ),
        Err(e) => {
            let q = BrowseQuery {
                key: Some(p.form.key.clone()),
                ..BrowseQuery::default()
            };
            render(
                &p.user,
                &table,
                &q,
                State {
                    lookup: None,
                    put: None,
                    delete: Some(&e),
                },
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_show_as_text_or_hex() {
        assert_eq!(
            show_value(b"hello\nworld"),
            ("text", "hello\nworld".to_owned())
        );
        assert_eq!(show_value(&[0, 1, 0xff]), ("hex", "00 01 ff".to_owned()));
        assert_eq!(
            show_value(b"a\x07b").0,
            "hex",
            "control characters are not text"
        );
        let big = vec![b'x'; PREVIEW_BYTES + 10];
        assert_eq!(show_value(&big).1.len(), PREVIEW_BYTES);
        let multibyte = "é".repeat(PREVIEW_BYTES);
        let shown = show_value(multibyte.as_bytes()).1;
        assert!(shown.len() <= PREVIEW_BYTES && shown.chars().all(|c| c == 'é'));
    }
}
