//! The console's pages, rendered by a real control plane (with its
//! Postgres) over real data-plane nodes, driven as a browser without
//! JavaScript would: links, forms, cookies and redirects.

#[path = "../../controlplane/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;

use support::{ADMIN_EMAIL, ADMIN_PASSWORD, Env, eventually};

/// A cookie-keeping client that does not follow redirects.
#[derive(Clone)]
struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

impl Page {
    /// The value of the first hidden `_csrf` field.
    fn csrf(&self) -> String {
        hidden(&self.body, "_csrf").unwrap_or_else(|| panic!("no _csrf in {}", self.body))
    }

    fn has(&self, text: &str) -> bool {
        self.body.contains(text)
    }
}

/// The value of the hidden input `name`.
fn hidden(body: &str, name: &str) -> Option<String> {
    let at = body.find(&format!("name=\"{name}\""))?;
    let tag_start = body[..at].rfind('<')?;
    let tag_end = at + body[at..].find('>')?;
    let tag = &body[tag_start..tag_end];
    let v = tag.split("value=\"").nth(1)?;
    Some(html_unescape(&v[..v.find('"')?]))
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The inside of the chart figure labelled `label`.
fn figure(body: &str, label: &str) -> Option<String> {
    let at = body.find(&format!("aria-label=\"{label}\""))?;
    let end = at + body[at..].find("</figure>")?;
    Some(body[at..end].to_owned())
}

fn form_body(fields: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(fields).expect("form")
}

impl Browser {
    /// Loads `path` (with a copy of this browser's cookies) until the page
    /// satisfies `ready`: pages that wait for the cluster or a clock.
    async fn until(
        &self,
        secs: u64,
        what: &str,
        path: &str,
        ready: impl Fn(&Page) -> bool,
    ) -> Page {
        let ready = &ready;
        eventually(secs, what, || {
            let mut b = self.clone();
            async move {
                let p = b.get(path).await;
                ready(&p).then_some(p)
            }
        })
        .await
    }

    fn new(base: &str) -> Browser {
        Browser {
            base: base.to_owned(),
            http: dyno_tls::http_client_builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let resp = req
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let set_cookies: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        for c in &set_cookies {
            let first = c.split(';').next().unwrap_or_default();
            if let Some((k, v)) = first.split_once('=') {
                if v.is_empty() || c.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        let body = resp.text().await.unwrap_or_default();
        Page {
            status,
            location,
            set_cookies,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(fields));
        self.send(req).await
    }

    /// Follows a redirect answer.
    async fn follow(&mut self, p: &Page) -> Page {
        let to = p
            .location
            .clone()
            .unwrap_or_else(|| panic!("expected a redirect, got {} {}", p.status, p.body));
        self.get(&to).await
    }

    async fn sign_in(&mut self, email: &str, password: &str) {
        let form = self.get("/login").await;
        let csrf = form.csrf();
        let p = self
            .post(
                "/login",
                &[
                    ("_csrf", &csrf),
                    ("email", email),
                    ("password", password),
                    ("next", "/"),
                ],
            )
            .await;
        assert_eq!(p.status, 303, "sign-in as {email}: {}", p.body);
    }
}

async fn env_with_console(nodes: usize, extra: &[&str]) -> (Env, support::Running) {
    let env = Env::start(nodes).await;
    let cp = env
        .control_plane_with(extra, Some(dyno_console::router))
        .await;
    (env, cp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sign_out_and_forms_need_their_token() {
    let (env, cp) = env_with_console(1, &[]).await;
    let mut b = Browser::new(&cp.url);

    // Signed out: every page sends to sign-in, keeping the page asked for.
    let p = b.get("/tables?x=1").await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location.as_deref(), Some("/login?next=%2Ftables%3Fx%3D1"));
    let p = b.get("/keys").await;
    assert_eq!(p.location.as_deref(), Some("/login?next=%2Fkeys"));

    // The sign-in form: labelled fields, and a pre-session token in a
    // strict cookie.
    let form = b.get("/login?next=%2Fkeys").await;
    assert_eq!(form.status, 200);
    assert!(
        form.has("<label for=\"f-email\">Email</label>"),
        "{}",
        form.body
    );
    assert!(form.has("value=\"/keys\""), "next is kept: {}", form.body);
    assert!(
        form.set_cookies.iter().any(|c| c.starts_with("dyno_login=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Strict")),
        "{:?}",
        form.set_cookies
    );
    let csrf = form.csrf();

    // A form without the pre-session cookie (another site's) is refused.
    let mut stranger = Browser::new(&cp.url);
    let p = stranger
        .post(
            "/login",
            &[
                ("_csrf", &csrf),
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.has("stale or came from another site"), "{}", p.body);

    // A wrong password: the API's message, on the form, with its status.
    let p = b
        .post(
            "/login",
            &[
                ("_csrf", &csrf),
                ("email", ADMIN_EMAIL),
                ("password", "wrong-password"),
            ],
        )
        .await;
    assert_eq!(p.status, 401, "{}", p.body);
    assert!(p.has("wrong email or password"), "{}", p.body);
    assert!(
        p.has(&format!("value=\"{ADMIN_EMAIL}\"")),
        "the email is kept"
    );

    // The right one: the session cookie, then the page asked for.
    let csrf = p.csrf();
    let p = b
        .post(
            "/login",
            &[
                ("_csrf", &csrf),
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
                ("next", "/audit"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location.as_deref(), Some("/audit"));
    let session = p
        .set_cookies
        .iter()
        .find(|c| c.starts_with("dyno_session="))
        .expect("session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "plain HTTP: no Secure flag");
    let audit = b.follow(&p).await;
    assert_eq!(audit.status, 200);
    assert!(
        audit.has("Audit log") && audit.has("login"),
        "{}",
        audit.body
    );
    assert!(
        audit.has("content=\"width=device-width"),
        "phone-width viewport"
    );

    // `next` never leaves the site.
    let mut other = Browser::new(&cp.url);
    let f = other.get("/login").await;
    let p = other
        .post(
            "/login",
            &[
                ("_csrf", &f.csrf()),
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/"));

    // Behind TLS the cookie is Secure.
    let f = b.get("/login").await;
    let req = b
        .http
        .post(format!("{}/login", cp.url))
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("_csrf", &f.csrf()),
            ("email", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
        ]));
    let p = b.send(req).await;
    assert!(
        p.set_cookies
            .iter()
            .any(|c| c.starts_with("dyno_session=") && c.contains("Secure")),
        "{:?}",
        p.set_cookies
    );

    // A changing form with a wrong token is refused and changes nothing.
    let p = b
        .post(
            "/tenants",
            &[("_csrf", "forged"), ("name", "forged-tenant")],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    let tenants = b.get("/tenants").await;
    assert!(!tenants.has("forged-tenant"));

    // Security headers: nothing loads from elsewhere.
    let resp = dyno_tls::http_client_builder()
        .build()
        .expect("client")
        .get(format!("{}/login", cp.url))
        .send()
        .await
        .expect("get");
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );

    // Sign out needs the token too; then the session is gone.
    let page = b.get("/tenants").await;
    let p = b.post("/logout", &[("_csrf", "nope")]).await;
    assert_eq!(p.status, 403);
    let session = b.cookies.get("dyno_session").cloned().expect("a session");
    let p = b.post("/logout", &[("_csrf", &page.csrf())]).await;
    assert_eq!(p.location.as_deref(), Some("/login?signed_out=1"));
    assert!(!b.cookies.contains_key("dyno_session"));
    let out = b.follow(&p).await;
    assert!(out.has("You are signed out."));
    assert_eq!(b.get("/tenants").await.status, 303);
    // The token itself is revoked: a copy kept elsewhere no longer works,
    // in the console or on the API.
    b.cookies.insert("dyno_session".into(), session.clone());
    assert_eq!(b.get("/tenants").await.status, 303);
    b.cookies.remove("dyno_session");
    let (s, _) = env
        .call(&cp.url, "GET", "/api/v1/me", Some(&session), None)
        .await;
    assert_eq!(s, 401);

    // Unknown pages: an HTML 404 for people, the API's JSON under /api.
    let p = b.get("/no/such/page").await;
    assert_eq!(p.status, 404);
    assert!(p.has("There is no page at this address."));
    let (s, v) = env.call(&cp.url, "GET", "/api/v1/nope", None, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("NotFound")));
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_returns_to_sign_in_with_a_message() {
    let (_env, cp) = env_with_console(1, &["--session-ttl-secs", "1"]).await;
    let mut b = Browser::new(&cp.url);
    b.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    // The session is valid for a second; wait for the redirect it leads
    // to once it has run out.
    let p = b
        .until(10, "the session to expire", "/tenants?page=2", |p| {
            p.status == 303
        })
        .await;
    assert_eq!(
        p.location.as_deref(),
        Some("/login?next=%2Ftenants%3Fpage%3D2&expired=1")
    );
    assert!(
        p.set_cookies
            .iter()
            .any(|c| c.starts_with("dyno_session=;") && c.contains("Max-Age=0")),
        "the dead cookie is cleared: {:?}",
        p.set_cookies
    );
    let login = b.follow(&p).await;
    assert!(
        login.has("Your session has ended. Sign in again to continue."),
        "{}",
        login.body
    );
    assert!(
        login.has("value=\"/tenants?page=2\""),
        "the page asked for is kept"
    );
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_keys_items_and_isolation() {
    let (env, cp) = env_with_console(3, &["--metrics-interval-secs", "1"]).await;
    let root = env.login(&cp.url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    env.tenant(&cp.url, &root, "acme").await;
    env.tenant(&cp.url, &root, "beta").await;
    let mut b = Browser::new(&cp.url);
    b.sign_in("tenant_admin@acme.example.com", "password-123")
        .await;

    // Create: a bad R is shown next to its field, and the form keeps what
    // was typed.
    let list = b.get("/tables").await;
    assert_eq!(list.status, 200);
    assert!(
        list.has("Replies a read waits for, 1 to N."),
        "rules next to the fields"
    );
    let csrf = list.csrf();
    let p = b
        .post(
            "/tables",
            &[
                ("_csrf", &csrf),
                ("name", "orders"),
                ("n", "3"),
                ("r", "9"),
                ("w", "2"),
                ("conflict", "siblings"),
                ("throughput_limit", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(p.has("id=\"f-r-error\""), "{}", p.body);
    assert!(p.has("r must be between 1 and n = 3, got 9"), "{}", p.body);
    assert!(p.has("value=\"orders\""));
    let p = b
        .post(
            "/tables",
            &[
                ("_csrf", &csrf),
                ("name", "orders"),
                ("n", "3"),
                ("r", "1"),
                ("w", "1"),
                ("conflict", "siblings"),
                ("throughput_limit", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(
        p.location.as_deref(),
        Some("/tables/orders?notice=Table%20orders%20is%20being%20created.")
    );
    let page = b.follow(&p).await;
    assert!(page.has("Table orders is being created."), "{}", page.body);
    assert!(page.has("3 / 1 / 1"), "{}", page.body);
    // It turns active by itself (the page refreshes while it waits).
    if page.has(">creating<") {
        assert!(page.has("http-equiv=\"refresh\""), "{}", page.body);
    }
    let page = b
        .until(20, "orders to be active", "/tables/orders", |p| {
            p.has(">active<")
        })
        .await;
    assert!(
        !page.has("http-equiv=\"refresh\""),
        "no refresh once active"
    );
    assert!(page.has("R + W = 2 ≤ N = 3"), "{}", page.body);

    // Change R and W.
    let p = b
        .post(
            "/tables/orders",
            &[
                ("_csrf", &page.csrf()),
                ("r", "2"),
                ("w", "2"),
                ("throughput_limit", "500"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let page = b.follow(&p).await;
    assert!(
        page.has("3 / 2 / 2") && page.has("500 operations per second"),
        "{}",
        page.body
    );

    // Items: write, read back, siblings, resolve, scan, delete.
    let items = b.get("/tables/orders/items").await;
    assert_eq!(items.status, 200, "{}", items.body);
    assert!(items.has("No items yet."), "{}", items.body);
    let csrf = items.csrf();
    for v in ["first draft", "second draft"] {
        let p = b
            .post(
                "/tables/orders/items",
                &[
                    ("_csrf", &csrf),
                    ("key", "order/1"),
                    ("value", v),
                    ("context", ""),
                ],
            )
            .await;
        assert_eq!(p.status, 303, "{}", p.body);
    }
    let item = b.get("/tables/orders/items?key=order%2F1").await;
    assert!(item.has("2 siblings"), "{}", item.body);
    assert!(
        item.has("first draft") && item.has("second draft"),
        "{}",
        item.body
    );
    // Keep the second sibling: its form carries the value and the context.
    let at = item.body.find("Keep sibling 2").expect("keep button");
    let form_start = item.body[..at].rfind("<form").expect("form");
    let form = &item.body[form_start..at];
    let value_b64 = hidden(form, "value_b64").expect("value");
    let context = hidden(form, "context").expect("context");
    assert!(!context.is_empty());
    let p = b
        .post(
            "/tables/orders/items",
            &[
                ("_csrf", &csrf),
                ("key", "order/1"),
                ("value_b64", &value_b64),
                ("context", &context),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let item = b.follow(&p).await;
    assert!(
        item.has("One value.") && item.has("second draft") && !item.has("first draft"),
        "{}",
        item.body
    );
    // A binary value shows as hex; a bad context is the data plane's error.
    let p = b
        .post(
            "/tables/orders/items",
            &[
                ("_csrf", &csrf),
                ("key", "bin"),
                ("value_b64", "AAH/"),
                ("context", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    assert!(b.get("/tables/orders/items?key=bin").await.has("00 01 ff"));
    let p = b
        .post(
            "/tables/orders/items",
            &[
                ("_csrf", &csrf),
                ("key", "bin"),
                ("value", "x"),
                ("context", "not-a-context"),
            ],
        )
        .await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(p.has("context"), "{}", p.body);
    let scan = b.get("/tables/orders/items").await;
    assert!(scan.has(">order/1<") && scan.has(">bin<"), "{}", scan.body);
    // The item's delete button carries its context, so the delete
    // supersedes the value (without it, it would be concurrent with it).
    let found = b.get("/tables/orders/items?key=bin").await;
    let at = found
        .body
        .find("/tables/orders/items/delete")
        .expect("delete form");
    let ctx = hidden(&found.body[at..], "context").expect("context");
    let del = b
        .post(
            "/tables/orders/items/delete",
            &[("_csrf", &csrf), ("key", "bin"), ("context", &ctx)],
        )
        .await;
    assert_eq!(del.status, 303, "{}", del.body);
    let gone = b.get("/tables/orders/items?key=bin").await;
    assert!(gone.has("No item has the key"), "{}", gone.body);

    // The writes show up in the table's charts (collected every second
    // here): a line in the rate chart and in the latency of put.
    let page = b
        .until(
            20,
            "the reads and writes in the latency charts",
            "/tables/orders",
            |p| {
                let line = |label| figure(&p.body, label).is_some_and(|f| f.contains("<polyline"));
                line("Requests per second")
                    && line("Latency of put")
                    && line("Latency of get")
                    && figure(&p.body, "Requests per second")
                        .is_some_and(|f| !f.contains("No data yet"))
            },
        )
        .await;
    let rate = figure(&page.body, "Requests per second").unwrap_or_default();
    for text in ["requests/s", "minutes ago", "put"] {
        assert!(rate.contains(text), "{text}: {rate}");
    }
    let get = figure(&page.body, "Latency of get").unwrap_or_default();
    assert!(
        get.contains("latency (ms)") && get.contains("p99.9"),
        "{get}"
    );

    // Item count and size estimates: one live item (`bin` was deleted),
    // held by all three nodes, so three copies over N = 3.
    let page = b
        .until(20, "the item estimate", "/tables/orders", |p| {
            p.has("<dt>Items (estimate)</dt><dd>≈ 1</dd>")
        })
        .await;
    let size = page
        .body
        .split("<dt>Size (estimate)</dt><dd>")
        .nth(1)
        .and_then(|r| r.split("</dd>").next())
        .unwrap_or_default();
    assert!(size.starts_with("≈ ") && size.ends_with(" B"), "{size}");
    let list = b.get("/tables").await;
    assert!(list.has("<td class=\"num\">≈ 1</td>"), "{}", list.body);

    // What the table's N/R/W means, from the round trips the nodes
    // measured while serving the writes above: the table's own R and W,
    // R = W = 1, and an alternative typed in the form.
    let page = b
        .until(
            20,
            "the staleness model",
            "/tables/orders?alt_r=1&alt_w=2",
            |p| p.has("With R=1 and W=2"),
        )
        .await;
    assert!(
        page.has("With R=2 and W=2 (R + W &gt; N = 3), every read sees")
            || page.has("With R=2 and W=2 (R + W > N = 3), every read sees"),
        "{}",
        page.body
    );
    assert!(page.has("With R=1 and W=1,"), "{}", page.body);
    let chart = figure(&page.body, "Reads that see the latest write").expect("chart");
    assert!(
        chart.contains("R=2, W=2 (this table)") && chart.contains("<polyline"),
        "{chart}"
    );
    let bad = b.get("/tables/orders?alt_r=9").await;
    assert!(bad.has("id=\"f-alt_r-error\""), "{}", bad.body);

    // Keys: created with its secret and snippets once; never listed.
    let keys = b.get("/keys").await;
    let p = b
        .post(
            "/keys",
            &[
                ("_csrf", &keys.csrf()),
                ("name", "app"),
                ("table0", "orders"),
                ("access0", "write"),
                ("table1", ""),
                ("access1", ""),
                ("table2", ""),
                ("access2", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.body);
    let token = p
        .body
        .split("id=\"secret-token\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("token shown")
        .to_owned();
    assert!(token.starts_with("dyno_"), "{token}");
    assert!(
        p.has("curl") && p.has("dyno get") && p.has("boto3"),
        "snippets"
    );
    assert!(
        p.has(&env.nodes[0].url) || p.has("/v1/tables/orders/items"),
        "{}",
        p.body
    );
    let list = b.get("/keys").await;
    // "dyno_" id "_" secret: the id is base32 (no '_'), the secret
    // base64url, which may itself contain '_' (splitting at the last one
    // would leave a few characters that the page may hold by chance).
    let (_, secret) = token
        .strip_prefix("dyno_")
        .and_then(|t| t.split_once('_'))
        .expect("dyno_ID_SECRET");
    assert!(secret.len() >= 40, "{token}");
    assert!(
        list.has(">app<") && !list.has(secret),
        "the list never shows a secret"
    );
    // The key works on the data plane, then is revoked after a confirmation.
    eventually(20, "the key to reach the nodes", || {
        let t = token.clone();
        let env = &env;
        async move {
            (env.item(0, "PUT", "orders", "via-key", &t, Some("v")).await == 200).then_some(())
        }
    })
    .await;
    let id = list
        .body
        .split("/keys/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("revoke link")
        .to_owned();
    let confirm = b.get(&format!("/keys/{id}/revoke")).await;
    assert!(confirm.has("cannot be undone"), "{}", confirm.body);
    let p = b
        .post(&format!("/keys/{id}/revoke"), &[("_csrf", &confirm.csrf())])
        .await;
    assert_eq!(p.status, 303);
    assert!(b.follow(&p).await.has(">revoked<"));
    eventually(20, "the data plane to refuse the revoked key", || {
        let t = token.clone();
        let env = &env;
        async move { (env.item(1, "GET", "orders", "via-key", &t, None).await == 401).then_some(()) }
    })
    .await;

    // Another tenant's user sees nothing of acme, whatever URL is typed.
    let mut other = Browser::new(&cp.url);
    other
        .sign_in("tenant_admin@beta.example.com", "password-123")
        .await;
    for path in [
        "/tables/orders",
        "/tables/orders/items",
        "/tables/orders/items?key=order%2F1",
    ] {
        let p = other.get(path).await;
        assert_eq!(p.status, 404, "{path}: {}", p.body);
        assert!(!p.has("second draft"));
    }
    let p = other.get("/tenants/acme").await;
    assert_eq!(p.status, 404, "{}", p.body);
    let p = other.get("/tables").await;
    assert!(!p.has("orders"), "{}", p.body);
    let f = other.get("/tables").await;
    let p = other
        .post(
            "/tables/orders/items",
            &[
                ("_csrf", &f.csrf()),
                ("key", "order/1"),
                ("value", "pwned"),
                ("context", ""),
            ],
        )
        .await;
    assert_eq!(p.status, 404, "{}", p.body);
    assert!(
        b.get("/tables/orders/items?key=order%2F1")
            .await
            .has("second draft")
    );

    // Service status for the tenant, the whole cluster for the platform.
    let status = b.get("/cluster").await;
    assert!(
        status.has("Service status") && status.has(">orders<"),
        "{}",
        status.body
    );
    let mut admin = Browser::new(&cp.url);
    admin.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let health = admin.get("/cluster").await;
    assert_eq!(health.status, 200, "{}", health.body);
    for n in ["n1", "n2", "n3"] {
        assert!(health.has(&format!("<td>{n}</td>")), "{}", health.body);
    }
    assert!(
        health.has("Ring epoch") && health.has("Hint backlog"),
        "{}",
        health.body
    );

    // Tenants and users: invite, suspend (keys refused), resume.
    let t = admin.get("/tenants/acme").await;
    assert!(t.has("tenant_member@acme.example.com"), "{}", t.body);
    let p = admin
        .post(
            "/tenants/acme/users",
            &[
                ("_csrf", &t.csrf()),
                ("email", "new@acme.example.com"),
                ("role", "tenant_member"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(p.status, 400);
    assert!(p.has("id=\"f-password-error\""), "{}", p.body);
    let p = admin
        .post(
            "/tenants/acme/users",
            &[
                ("_csrf", &t.csrf()),
                ("email", "new@acme.example.com"),
                ("role", "tenant_member"),
                ("password", "long-enough-1"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(
        admin
            .follow(&p)
            .await
            .has("new@acme.example.com can now sign in.")
    );
    let p = admin
        .post(
            "/tenants/acme",
            &[("_csrf", &t.csrf()), ("state", "suspended")],
        )
        .await;
    assert_eq!(p.status, 303);
    assert!(admin.follow(&p).await.has(">suspended<"));
    let p = admin
        .post(
            "/tenants/acme",
            &[("_csrf", &t.csrf()), ("state", "active")],
        )
        .await;
    assert!(admin.follow(&p).await.has(">active<"));

    // The audit log shows what the tenant did, and only to its users.
    let audit = b.get("/audit").await;
    for what in [
        "table.create",
        "table.update",
        "item.put",
        "item.delete",
        "key.create",
        "key.revoke",
    ] {
        assert!(audit.has(what), "{what}: {}", audit.body);
    }
    assert!(!other.get("/audit").await.has("table.create"));

    // Delete, only with the name typed again.
    let page = b.get("/tables/orders").await;
    let p = b
        .post(
            "/tables/orders/delete",
            &[("_csrf", &page.csrf()), ("confirm", "order")],
        )
        .await;
    assert_eq!(p.status, 400);
    assert!(
        p.has("type the table&#x27;s name") || p.has("type the table's name"),
        "{}",
        p.body
    );
    let p = b
        .post(
            "/tables/orders/delete",
            &[("_csrf", &page.csrf()), ("confirm", "orders")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    cp.stop().await;
}
