//! The console end to end in a real headless Chromium (Debian's
//! `chromium` and `chromium-driver`, driven over WebDriver with
//! fantoccini), against a control plane with its Postgres and three
//! data-plane nodes: what a tenant does in a browser, and what another
//! tenant cannot see. Screenshots of every page at a laptop and a phone
//! width go to `$DYNO_SCREENSHOTS` (default `<target>/console-screenshots`).
//!
//! `scripts/test` installs Chromium when it is missing; without it this
//! test fails and says so.

#[path = "../../controlplane/tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::{ADMIN_EMAIL, ADMIN_PASSWORD, Env, eventually};

/// The widths screenshots are taken at: a laptop and a phone.
const WIDTHS: [(u32, u32, &str); 2] = [(1280, 900, "laptop"), (390, 844, "phone")];

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts chromedriver and a headless Chromium session.
async fn browser() -> (Driver, Client) {
    let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("chromedriver is not installed: apt-get install chromium chromium-driver (scripts/test does it)")
        });
    // The driver picks its own port only through a flag; a port freed
    // just before can be taken by another process, so retry on failure.
    for _ in 0..5 {
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver(child);
        let url = format!("http://127.0.0.1:{port}");
        eventually(20, "chromedriver to answer", || {
            let url = url.clone();
            async move {
                let r = dyno_tls::http_client_builder()
                    .build()
                    .ok()?
                    .get(format!("{url}/status"))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--disable-background-networking",
                    "--disable-extensions", "--no-first-run", "--window-size=1280,900",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
        {
            Ok(c) => return (driver, c),
            Err(e) => eprintln!("no browser session on {url} yet: {e}"),
        }
    }
    panic!("could not start a headless Chromium session");
}

fn shots_dir() -> PathBuf {
    let dir = std::env::var_os("DYNO_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("console-screenshots")
        });
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

/// Screenshots of the current page at both widths, then back to the
/// laptop width.
async fn shoot(c: &Client, name: &str) {
    let dir = shots_dir();
    for (w, h, label) in WIDTHS {
        c.set_window_size(w, h).await.expect("resize");
        let png = c.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(dir.join(format!("{name}-{label}.png")), png).expect("write screenshot");
    }
    c.set_window_size(WIDTHS[0].0, WIDTHS[0].1)
        .await
        .expect("resize");
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.expect("clear");
    e.send_keys(text).await.expect("type");
}

/// Clicks the element `css` names, a link or a form's button, and waits
/// for the page it leads to.
async fn click(c: &Client, css: &str) {
    let e = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    click_through(c, e).await;
}

/// Clicks `e`, which leaves the page, and waits until the browser is on
/// the next one: the old document's root has gone stale and the new
/// document has loaded. A WebDriver click returns before a form's POST
/// has answered, so reading the page straight after it can catch the old
/// document mid-unload (a stale element).
async fn click_through(c: &Client, e: Element) {
    let old = c.find(Locator::Css("html")).await.expect("html");
    e.click().await.expect("click");
    eventually(20, "the next page to load", || {
        let old = old.clone();
        async move {
            if old.tag_name().await.is_ok() {
                return None;
            }
            let state = c.execute("return document.readyState", vec![]).await.ok()?;
            (state.as_str() == Some("complete")).then_some(())
        }
    })
    .await;
}

/// The page's text, looked up again if the document changes under us.
async fn body_text(c: &Client) -> String {
    eventually(20, "the page's text", || async {
        c.find(Locator::Css("body")).await.ok()?.text().await.ok()
    })
    .await
}

/// Waits until the page's text contains `text`, reloading `url` between
/// looks (pages that wait for the cluster).
async fn until_text(c: &Client, url: &str, text: &str, secs: u64) -> String {
    eventually(secs, text, || async move {
        c.goto(url).await.ok()?;
        let t = body_text(c).await;
        t.contains(text).then_some(t)
    })
    .await
}

async fn sign_in(c: &Client, base: &str, email: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.expect("login page");
    fill(c, "#f-email", email).await;
    fill(c, "#f-password", password).await;
    click(c, "form[action='/login'] button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_in_a_real_browser() {
    let env = Env::start(3).await;
    let cp = env
        .control_plane_with(
            &["--metrics-interval-secs", "1"],
            Some(dyno_console::router),
        )
        .await;
    let root = env.login(&cp.url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    env.tenant(&cp.url, &root, "acme").await;
    env.tenant(&cp.url, &root, "beta").await;
    let (_driver, c) = browser().await;
    let base = cp.url.clone();

    // Sign in.
    c.goto(&format!("{base}/tables")).await.expect("goto");
    assert!(
        c.current_url()
            .await
            .expect("url")
            .as_str()
            .contains("/login?next=%2Ftables")
    );
    shoot(&c, "01-sign-in").await;
    fill(&c, "#f-email", "tenant_admin@acme.example.com").await;
    fill(&c, "#f-password", "password-123").await;
    click(&c, "form[action='/login'] button[type=submit]").await;
    let url = c.current_url().await.expect("url");
    assert_eq!(url.path(), "/tables", "back to the page asked for");

    // Create a table (R = W = 1, so that siblings are easy to make).
    fill(&c, "#f-name", "orders").await;
    fill(&c, "#f-n", "3").await;
    fill(&c, "#f-r", "1").await;
    fill(&c, "#f-w", "1").await;
    shoot(&c, "02-tables").await;
    click(&c, "form[action='/tables'] button[type=submit]").await;
    let text = body_text(&c).await;
    assert!(text.contains("Table orders is being created."), "{text}");
    until_text(&c, &format!("{base}/tables/orders"), "active", 30).await;

    // Create a key with write access; its token is shown once.
    c.goto(&format!("{base}/keys")).await.expect("keys");
    fill(&c, "#f-name", "browser-app").await;
    fill(&c, "#f-table0", "orders").await;
    c.find(Locator::Css("#f-access0 option[value=write]"))
        .await
        .expect("option")
        .click()
        .await
        .expect("select");
    click(&c, "form[action='/keys'] button[type=submit]").await;
    let token = c
        .find(Locator::Css("#secret-token"))
        .await
        .expect("token")
        .text()
        .await
        .expect("text");
    assert!(token.starts_with("dyno_"), "{token}");
    assert!(
        c.find(Locator::Css("button[data-copy='secret-token']"))
            .await
            .is_ok(),
        "a copy button"
    );
    shoot(&c, "03-new-key").await;

    // Write an item through the data plane with that key, twice without a
    // context: two siblings (once the key has reached the nodes).
    let http = dyno_tls::http_client_builder()
        .build()
        .expect("an HTTP client");
    let node = env.nodes[0].url.clone();
    let put = |value: &'static str| {
        let (http, node, token) = (http.clone(), node.clone(), token.clone());
        async move {
            http.put(format!("{node}/v1/tables/orders/items/cart-7"))
                .bearer_auth(token)
                .body(value)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }
    };
    eventually(30, "the key to work on the data plane", || async {
        (put("blue shoes").await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(put("red shoes").await, Some(200));

    // Find it in the item browser: two siblings.
    let items = format!("{base}/tables/orders/items");
    let text = until_text(&c, &items, "cart-7", 20).await;
    assert!(text.contains("cart-7"), "{text}");
    c.goto(&format!("{items}?key=cart-7")).await.expect("item");
    let text = body_text(&c).await;
    assert!(
        text.contains("2 siblings") && text.contains("blue shoes") && text.contains("red shoes"),
        "{text}"
    );
    shoot(&c, "04-item-siblings").await;

    // Resolve them from the item page: keep the red ones.
    let keep = c
        .find_all(Locator::XPath(
            "//li[contains(., 'red shoes')]//button[starts-with(., 'Keep sibling')]",
        ))
        .await
        .expect("keep buttons");
    assert_eq!(keep.len(), 1);
    click_through(&c, keep[0].clone()).await;
    let text = body_text(&c).await;
    assert!(
        text.contains("One value.") && text.contains("red shoes") && !text.contains("blue shoes"),
        "{text}"
    );
    let r = http
        .get(format!(
            "{}/v1/tables/orders/items/cart-7",
            env.nodes[2].url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["values"].as_array().map(Vec::len), Some(1), "{v}");

    // The request shows up in the latency chart.
    let table = format!("{base}/tables/orders");
    eventually(30, "the writes in the put latency chart", || async {
        c.goto(&table).await.ok()?;
        let fig = c
            .find(Locator::Css("figure[aria-label='Latency of put']"))
            .await
            .ok()?
            .html(true)
            .await
            .ok()?;
        (fig.contains("<polyline") && !fig.contains("No data yet")).then_some(())
    })
    .await;
    shoot(&c, "05-table-latency").await;

    // Another tenant's user cannot open the table's page.
    let (_driver2, other) = browser().await;
    sign_in(
        &other,
        &base,
        "tenant_admin@beta.example.com",
        "password-123",
    )
    .await;
    other.goto(&table).await.expect("goto");
    let text = body_text(&other).await;
    assert!(
        text.contains("Not found") && !text.contains("red shoes"),
        "{text}"
    );
    other
        .goto(&format!("{items}?key=cart-7"))
        .await
        .expect("goto");
    assert!(!body_text(&other).await.contains("red shoes"));
    shoot(&other, "06-other-tenant").await;
    other.close().await.ok();

    // Cluster health and the audit log.
    c.goto(&format!("{base}/cluster")).await.expect("cluster");
    assert!(body_text(&c).await.contains("orders"));
    shoot(&c, "07-service-status").await;
    c.goto(&format!("{base}/audit")).await.expect("audit");
    assert!(body_text(&c).await.contains("key.create"));
    shoot(&c, "08-audit").await;

    // Revoke the key after the confirmation; the data plane refuses it.
    c.goto(&format!("{base}/keys")).await.expect("keys");
    shoot(&c, "09-keys").await;
    click(&c, "a.danger").await;
    assert!(body_text(&c).await.contains("cannot be undone"));
    click(&c, "button.danger").await;
    assert!(body_text(&c).await.contains("revoked"));
    eventually(30, "the data plane to refuse the revoked key", || async {
        (put("green shoes").await == Some(401)).then_some(())
    })
    .await;

    // Sign out: the pages want a session again.
    click(&c, "form[action='/logout'] button").await;
    assert!(body_text(&c).await.contains("You are signed out."));
    c.goto(&table).await.expect("goto");
    assert_eq!(c.current_url().await.expect("url").path(), "/login");

    // The platform's view of the cluster.
    sign_in(&c, &base, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    c.goto(&format!("{base}/cluster")).await.expect("cluster");
    let text = body_text(&c).await;
    assert!(text.contains("Ring epoch") && text.contains("n1"), "{text}");
    shoot(&c, "10-cluster-health").await;
    c.goto(&format!("{base}/tenants")).await.expect("tenants");
    shoot(&c, "11-tenants").await;
    c.close().await.ok();
    eprintln!("screenshots in {}", shots_dir().display());
    cp.stop().await;
}
