//! API keys: the list (never a secret), create with scopes (the secret and
//! ready-made snippets shown once), revoke after a confirmation.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use dyno_controlplane::api::{Key, NewKey, Scope};
use leptos::prelude::*;
use serde::Deserialize;
use serde_json::json;

use super::{NoticeQuery, clip_notice, done, error_page};
use crate::client::{Failure, seg};
use crate::layout::{Area, Field, Page, badge, csrf_field, form_error, notice, when};
use crate::session::{Posted, Signed};

#[derive(Debug, Deserialize)]
struct KeyList {
    keys: Vec<Key>,
}

/// Scope rows on the create form.
pub const SCOPE_ROWS: usize = 3;

const ACCESS: &[(&str, &str)] = &[
    ("", "—"),
    ("read", "read"),
    ("write", "write (and read)"),
    ("manage", "manage (and write; create, change, delete)"),
];

/// The create form: a name and up to [`SCOPE_ROWS`] scopes.
#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    table0: String,
    #[serde(default)]
    access0: String,
    #[serde(default)]
    table1: String,
    #[serde(default)]
    access1: String,
    #[serde(default)]
    table2: String,
    #[serde(default)]
    access2: String,
}

impl CreateForm {
    fn rows(&self) -> [(&str, &str); SCOPE_ROWS] {
        [
            (&self.table0, &self.access0),
            (&self.table1, &self.access1),
            (&self.table2, &self.access2),
        ]
    }

    /// The scopes of the filled rows.
    pub fn scopes(&self) -> Vec<Scope> {
        self.rows()
            .iter()
            .filter(|(t, a)| !t.trim().is_empty() || !a.is_empty())
            .map(|(t, a)| Scope {
                table: t.trim().to_owned(),
                access: (*a).to_owned(),
            })
            .collect()
    }
}

fn scopes_text(v: &serde_json::Value) -> String {
    serde_json::from_value::<Vec<Scope>>(v.clone())
        .map(|s| {
            s.iter()
                .map(|s| {
                    format!(
                        "{} on {}",
                        s.access,
                        if s.table == "*" {
                            "every table"
                        } else {
                            &s.table
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

async fn render(
    user: &Signed,
    form: &CreateForm,
    failure: Option<&Failure>,
    note: Option<String>,
) -> Response {
    let keys = match user.api.get::<KeyList>("/api/v1/keys").await {
        Ok(k) => k.keys,
        Err(f) => return error_page(Some(user), &f),
    };
    let rows = keys
        .into_iter()
        .map(|k| {
            let revoke = (k.status != "revoked").then(|| {
                let h = format!("/keys/{}/revoke", seg(&k.id));
                view! { <a href=h class="danger">"Revoke…"</a> }
            });
            let used = k
                .last_used_at
                .as_ref()
                .map_or_else(|| "never".to_owned(), when);
            view! {
                <tr>
                    <td>{k.name.clone()}</td>
                    <td><code>{k.id.clone()}</code></td>
                    <td>{scopes_text(&k.scopes)}</td>
                    <td>{badge(&k.status)}</td>
                    <td>{when(&k.created_at)}</td>
                    <td>{used}</td>
                    <td>{revoke}</td>
                </tr>
            }
        })
        .collect_view();
    let scope_rows = form
        .rows()
        .iter()
        .enumerate()
        .map(|(i, (t, a))| {
            let (tn, an) = (format!("table{i}"), format!("access{i}"));
            let (tid, aid) = (format!("f-table{i}"), format!("f-access{i}"));
            let opts = ACCESS
                .iter()
                .map(|(v, l)| {
                    let sel = *v == *a;
                    view! { <option value=*v selected=sel>{*l}</option> }
                })
                .collect_view();
            let err = failure.and_then(|f| {
                f.field
                    .as_deref()
                    .filter(|x| x.starts_with(&format!("scopes[{i}]")))
                    .map(|_| f.message.clone())
            });
            view! {
                <fieldset class="row scope">
                    <legend>{format!("Scope {}", i + 1)}</legend>
                    <div class="field">
                        <label for=tid.clone()>"Table (or * for every table)"</label>
                        <input id=tid name=tn value=(*t).to_owned()/>
                    </div>
                    <div class="field">
                        <label for=aid.clone()>"Access"</label>
                        <select id=aid name=an>{opts}</select>
                    </div>
                    {err.map(|e| view! { <p class="field-error">{e}</p> })}
                </fieldset>
            }
        })
        .collect_view();
    let status = failure.map_or(StatusCode::OK, |f| f.status);
    Page::new("API keys", Area::Keys).status(status).render(
        Some(user),
        view! {
            {notice(note)}
            <div class="table-wrap">
                <table>
                    <caption>"Keys of your tenant. Secrets are shown once, when a key is created."</caption>
                    <thead><tr>
                        <th scope="col">"Name"</th><th scope="col">"Id"</th><th scope="col">"Scopes"</th>
                        <th scope="col">"Status"</th><th scope="col">"Created"</th><th scope="col">"Last used"</th>
                        <th scope="col"><span class="sr-only">"Actions"</span></th>
                    </tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
            <section class="card">
                <h2>"Create a key"</h2>
                {form_error(failure, &["name", "scopes[0].table", "scopes[1].table", "scopes[2].table",
                    "scopes[0].access", "scopes[1].access", "scopes[2].access"])}
                <form method="post" action="/keys">
                    {csrf_field(&user.csrf)}
                    {Field::text("name", "Name", form.name.clone()).required()
                        .help("A label for people, 1 to 128 characters.").view(failure)}
                    {scope_rows}
                    <button type="submit">"Create key"</button>
                </form>
            </section>
        },
    )
}

/// `GET /keys`.
pub async fn list(user: Signed, Query(q): Query<NoticeQuery>) -> Response {
    let form = CreateForm {
        table0: "*".into(),
        access0: "write".into(),
        ..CreateForm::default()
    };
    render(&user, &form, None, clip_notice(q.notice)).await
}

/// The snippets a new key's page shows: curl, the `dyno` CLI and boto3.
pub fn snippets(k: &NewKey, endpoint: &str, table: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "curl",
            format!(
                "curl -X PUT -H 'Authorization: Bearer {token}' \\\n  --data-binary 'hello' {endpoint}/v1/tables/{table}/items/greeting\ncurl -H 'Authorization: Bearer {token}' {endpoint}/v1/tables/{table}/items/greeting",
                token = k.token
            ),
        ),
        (
            "dyno CLI",
            format!(
                "export DYNO_TOKEN='{token}'\ndyno put --url {endpoint} {table} greeting hello\ndyno get --url {endpoint} {table} greeting",
                token = k.token
            ),
        ),
        (
            "Python (boto3, DynamoDB API)",
            format!(
                "import boto3\nddb = boto3.client(\n    \"dynamodb\", endpoint_url=\"{endpoint}\", region_name=\"us-east-1\",\n    aws_access_key_id=\"{id}\",\n    aws_secret_access_key=\"{secret}\")\nprint(ddb.list_tables()[\"TableNames\"])",
                id = k.access_key_id,
                secret = k.secret_access_key
            ),
        ),
    ]
}

/// `POST /keys`: creates the key and shows its secret, once.
pub async fn create(p: Posted<CreateForm>) -> Response {
    let body = json!({ "name": p.form.name.trim(), "scopes": p.form.scopes() });
    let k = match p.user.api.post::<NewKey>("/api/v1/keys", &body).await {
        Ok(k) => k,
        Err(f) => return render(&p.user, &p.form, Some(&f), None).await,
    };
    let endpoint = data_plane_endpoint(&p.user).await;
    let table = k
        .scopes
        .iter()
        .find(|s| s.table != "*")
        .map_or_else(|| "my-table".to_owned(), |s| s.table.clone());
    let blocks = snippets(&k, &endpoint, &table)
        .into_iter()
        .enumerate()
        .map(|(i, (label, code))| {
            let id = format!("snippet-{i}");
            view! {
                <h3>{label}</h3>
                <div class="copyable">
                    <pre id=id.clone()>{code}</pre>
                    <button type="button" class="copy" data-copy=id>"Copy"</button>
                </div>
            }
        })
        .collect_view();
    let token_id = "secret-token".to_owned();
    Page::new(format!("Key {} created", k.name), Area::Keys).status(StatusCode::CREATED).render(
        Some(&p.user),
        view! {
            <p class="notice" role="status">{format!("Copy the secret now: it is shown only this once and cannot be recovered. The key works on every node within seconds (status: {}).", k.status)}</p>
            <section class="card">
                <h2>"Bearer token"</h2>
                <div class="copyable">
                    <pre id=token_id.clone()>{k.token.clone()}</pre>
                    <button type="button" class="copy" data-copy=token_id>"Copy"</button>
                </div>
                <dl class="facts">
                    <dt>"Key id (AWS access key id)"</dt><dd><code>{k.access_key_id.clone()}</code></dd>
                    <dt>"Secret (AWS secret access key)"</dt><dd><code class="wrap">{k.secret_access_key.clone()}</code></dd>
                </dl>
            </section>
            <section class="card">
                <h2>"Use it"</h2>
                {blocks}
            </section>
            <p><a href="/keys">"Back to the keys"</a></p>
        },
    )
}

/// The data plane's address for snippets, as the API tells it.
async fn data_plane_endpoint(user: &Signed) -> String {
    user.api
        .get::<dyno_controlplane::api::Endpoint>("/api/v1/endpoint")
        .await
        .ok()
        .and_then(|e| e.url)
        .unwrap_or_else(|| "http://<your cluster's address>".to_owned())
}

/// `GET /keys/{id}/revoke`: asks first.
pub async fn confirm_revoke(user: Signed, Path(id): Path<String>) -> Response {
    let k = match user
        .api
        .get::<Key>(&format!("/api/v1/keys/{}", seg(&id)))
        .await
    {
        Ok(k) => k,
        Err(f) => return error_page(Some(&user), &f),
    };
    let action = format!("/keys/{}/revoke", seg(&k.id));
    let text = format!(
        "Revoke the key {} ({})? Every request signed with it is refused within seconds. This cannot be undone.",
        k.name, k.id
    );
    Page::new("Revoke a key", Area::Keys).render(
        Some(&user),
        view! {
            <section class="card danger">
                <p>{text}</p>
                <form method="post" action=action>
                    {csrf_field(&user.csrf)}
                    <button type="submit" class="danger">"Revoke key"</button>
                    " "<a href="/keys">"Cancel"</a>
                </form>
            </section>
        },
    )
}

/// `POST /keys/{id}/revoke`.
pub async fn revoke(
    Path(id): Path<String>,
    p: Posted<std::collections::HashMap<String, String>>,
) -> Response {
    match p
        .user
        .api
        .delete::<Key>(&format!("/api/v1/keys/{}", seg(&id)))
        .await
    {
        Ok(k) => done("/keys", &format!("Key {} revoked.", k.name)),
        Err(f) => error_page(Some(&p.user), &f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_scope_rows_are_dropped() {
        let f = CreateForm {
            name: "k".into(),
            table0: "orders".into(),
            access0: "read".into(),
            table1: " ".into(),
            ..CreateForm::default()
        };
        let s = f.scopes();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].table.as_str(), s[0].access.as_str()),
            ("orders", "read")
        );
    }
}
