//! The control plane end to end: its REST API over a real Postgres, its
//! authorization matrix, and its reconciliation into real data-plane nodes
//! (in-process, on listeners the test binds).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ADMIN_EMAIL, ADMIN_PASSWORD, Env, NODE_TOKEN, eventually};

/// Starting twice on one database is idempotent: migrations apply once,
/// the bootstrap admin and cluster are not duplicated.
#[tokio::test(flavor = "multi_thread")]
async fn migrations_and_start_up_are_idempotent() {
    let env = Env::start(1).await;
    let cp = env.control_plane(&[]).await;
    cp.stop().await;
    let cp = env.control_plane(&[]).await;
    let root = env.login(&cp.url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (s, b) = env
        .call(&cp.url, "GET", "/api/v1/clusters", Some(&root), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["clusters"].as_array().map(Vec::len), Some(1), "{b}");
    let pool = dyno_controlplane::connect(&env.db_url).await;
    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("migrations");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .expect("migrations directory")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count() as i64;
    assert_eq!(migrations, files, "each migration applied exactly once");
    let admins: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'platform_admin'")
            .fetch_one(&pool)
            .await
            .expect("users");
    assert_eq!(admins, 1);
    cp.stop().await;
}

/// The OpenAPI document is served without a token and lists every route,
/// and every route it lists has an authorization rule.
#[tokio::test(flavor = "multi_thread")]
async fn openapi_lists_every_route_and_every_route_has_a_rule() {
    let env = Env::start(1).await;
    let cp = env.control_plane(&[]).await;
    let (s, doc) = env
        .call(&cp.url, "GET", "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(s, 200);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().expect("ops").keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    for (m, p, _) in dyno_controlplane::authz::POLICY {
        if *p == "/api/v1/openapi.json" {
            continue;
        }
        assert!(
            documented.contains(&((*m).to_owned(), (*p).to_owned())),
            "{m} {p} is not in the OpenAPI document"
        );
    }
    for (m, p) in &documented {
        let method = axum::http::Method::from_bytes(m.as_bytes()).expect("method");
        assert!(
            dyno_controlplane::authz::rule_of(&method, p).is_some(),
            "{m} {p} has no authorization rule"
        );
    }
    cp.stop().await;
}

/// Every protected endpoint refuses a missing, expired, foreign-signed or
/// tampered token; another tenant's things are 404; a member cannot do an
/// admin's work.
#[tokio::test(flavor = "multi_thread")]
async fn authorization_matrix() {
    let env = Env::start(1).await;
    let cp = env.control_plane(&["--session-ttl-secs", "2"]).await;
    let url = cp.url.as_str();
    let root = env.login(url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (acme_admin, acme_member) = env.tenant(url, &root, "acme").await;
    let (beta_admin, _) = env.tenant(url, &root, "beta").await;
    let (s, b) = env
        .call(
            url,
            "POST",
            "/api/v1/tables",
            Some(&beta_admin),
            Some(json!({"name": "orders", "n": 1, "r": 1, "w": 1})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, key) = env
        .call(
            url,
            "POST",
            "/api/v1/keys",
            Some(&beta_admin),
            Some(json!({"name": "k", "scopes": [{"table": "*", "access": "read"}]})),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let beta_key = key["id"].as_str().expect("id").to_owned();

    // Bad tokens: none, signed with another key, tampered, expired.
    let foreign = {
        let other =
            dyno_controlplane::auth::Sessions::new(b"some-other-key-0123456789".to_vec(), None, 60);
        other.issue(1).expect("issue").0
    };
    let mut tampered = acme_admin.clone();
    let mid = tampered.len() - 5;
    tampered.replace_range(
        mid..mid + 1,
        if &tampered[mid..mid + 1] == "A" {
            "B"
        } else {
            "A"
        },
    );
    let routes = [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/tenants"),
        ("POST", "/api/v1/tenants"),
        ("GET", "/api/v1/tenants/acme"),
        ("PATCH", "/api/v1/tenants/acme"),
        ("GET", "/api/v1/tenants/acme/users"),
        ("POST", "/api/v1/tenants/acme/users"),
        ("GET", "/api/v1/tables"),
        ("POST", "/api/v1/tables"),
        ("GET", "/api/v1/tables/orders"),
        ("PATCH", "/api/v1/tables/orders"),
        ("DELETE", "/api/v1/tables/orders"),
        ("GET", "/api/v1/keys"),
        ("POST", "/api/v1/keys"),
        ("GET", "/api/v1/keys/DKAAAAAAAAAAAAAAAAAA"),
        ("DELETE", "/api/v1/keys/DKAAAAAAAAAAAAAAAAAA"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/clusters"),
        ("PUT", "/api/v1/clusters/main"),
    ];
    for (m, p) in routes {
        for (what, token) in [
            ("no token", None),
            ("foreign key", Some(foreign.as_str())),
            ("tampered", Some(tampered.as_str())),
            ("garbage", Some("x.y.z")),
        ] {
            let (s, b) = env.call(url, m, p, token, Some(json!({}))).await;
            assert_eq!(s, 401, "{m} {p} with {what}: {b}");
            assert_eq!(b["error"]["code"], "Unauthorized");
        }
    }

    // Another tenant's resources do not exist for acme.
    let user = json!({"email": "x@y.zz", "password": "password-123", "role": "tenant_member"});
    for (m, p, body) in [
        ("GET", "/api/v1/tenants/beta", None),
        (
            "PATCH",
            "/api/v1/tenants/beta",
            Some(json!({"state": "suspended"})),
        ),
        ("GET", "/api/v1/tenants/beta/users", None),
        ("POST", "/api/v1/tenants/beta/users", Some(user)),
        ("GET", "/api/v1/tables/orders", None),
        ("PATCH", "/api/v1/tables/orders", Some(json!({"r": 1}))),
        ("DELETE", "/api/v1/tables/orders", None),
    ] {
        for t in [&acme_admin, &acme_member] {
            let (s, b) = env.call(url, m, p, Some(t), body.clone()).await;
            assert_eq!(s, 404, "{m} {p}: {b}");
        }
    }
    // ... and beta's table is untouched.
    let (s, b) = env
        .call(url, "GET", "/api/v1/tables/orders", Some(&beta_admin), None)
        .await;
    assert_eq!((s, b["r"].as_i64()), (200, Some(1)), "{b}");
    assert_ne!(b["status"], "deleting", "{b}");
    for m in ["GET", "DELETE"] {
        let (s, _) = env
            .call(
                url,
                m,
                &format!("/api/v1/keys/{beta_key}"),
                Some(&acme_admin),
                None,
            )
            .await;
        assert_eq!(s, 404, "{m} another tenant's key");
    }
    let (_, b) = env
        .call(url, "GET", "/api/v1/audit", Some(&acme_admin), None)
        .await;
    assert!(
        b["events"]
            .as_array()
            .is_some_and(|e| e.iter().all(|e| e["tenant"] == "acme")),
        "{b}"
    );

    // Platform-admin routes: 403 for tenant users on their own tenant.
    for (m, p) in [
        ("GET", "/api/v1/tenants"),
        ("POST", "/api/v1/tenants"),
        ("GET", "/api/v1/tenants/acme"),
        ("GET", "/api/v1/clusters"),
        ("PUT", "/api/v1/clusters/main"),
    ] {
        let (s, _) = env
            .call(url, m, p, Some(&acme_admin), Some(json!({"name": "zz"})))
            .await;
        assert_eq!(s, 403, "{m} {p}");
    }
    // A member manages tables and keys but not users.
    let (s, _) = env
        .call(
            url,
            "GET",
            "/api/v1/tenants/acme/users",
            Some(&acme_member),
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, b) = env
        .call(
            url,
            "POST",
            "/api/v1/tables",
            Some(&acme_member),
            Some(json!({"name": "by-member", "n": 1, "r": 1, "w": 1})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // A tenant admin cannot make a platform admin.
    let (s, _) = env
        .call(url, "POST", "/api/v1/tenants/acme/users", Some(&acme_admin),
            Some(json!({"email": "evil@acme.example.com", "password": "password-123", "role": "platform_admin"})))
        .await;
    assert_eq!(s, 403);
    let (s, _) = env
        .call(url, "POST", "/api/v1/tenants/acme/users", Some(&acme_admin),
            Some(json!({"email": "new@acme.example.com", "password": "password-123", "role": "tenant_member"})))
        .await;
    assert_eq!(s, 201);

    // What each role sees when allowed.
    let (s, b) = env
        .call(url, "GET", "/api/v1/tenants", Some(&root), None)
        .await;
    let names: Vec<&str> = b["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!((s, names), (200, vec!["acme", "beta"]));
    let (s, b) = env
        .call(url, "GET", "/api/v1/tenants/acme", Some(&root), None)
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("active")), "{b}");
    let (s, b) = env
        .call(
            url,
            "GET",
            "/api/v1/tenants/acme/users",
            Some(&acme_admin),
            None,
        )
        .await;
    let emails: Vec<&str> = b["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["email"].as_str())
        .collect();
    assert_eq!(s, 200);
    assert_eq!(emails.len(), 3, "{emails:?}");
    assert!(
        emails.iter().all(|e| e.ends_with("acme.example.com")),
        "{emails:?}"
    );
    let (s, b) = env
        .call(url, "GET", "/api/v1/me", Some(&acme_member), None)
        .await;
    assert_eq!(
        (s, b["role"].as_str(), b["tenant"].as_str()),
        (200, Some("tenant_member"), Some("acme"))
    );
    // Expiry: the session lifetime is 2 s here.
    let (s, _) = env
        .call(url, "GET", "/api/v1/me", Some(&acme_admin), None)
        .await;
    assert_eq!(s, 200);
    eventually(10, "the session to expire", || async {
        let (s, _) = env
            .call(url, "GET", "/api/v1/me", Some(&acme_admin), None)
            .await;
        (s == 401).then_some(())
    })
    .await;
    cp.stop().await;
}

/// Logins: one answer for an unknown email and a wrong password, a rate
/// limit per email with Retry-After, and a working session.
#[tokio::test(flavor = "multi_thread")]
async fn logins_are_uniform_and_rate_limited() {
    let env = Env::start(1).await;
    let cp = env
        .control_plane(&["--login-failures-per-minute", "3"])
        .await;
    let url = cp.url.as_str();
    let try_login = |email: &'static str, pw: &'static str| {
        let env = &env;
        async move {
            env.call(
                url,
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": pw})),
            )
            .await
        }
    };
    let (s1, b1) = try_login("nobody@example.com", "whatever-1").await;
    let (s2, b2) = try_login(ADMIN_EMAIL, "wrong-password").await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(b1["error"], b2["error"], "same code and message");
    // The admin has had one failure; two more reach the limit.
    for _ in 0..2 {
        assert_eq!(try_login(ADMIN_EMAIL, "wrong-password").await.0, 401);
    }
    let r = env
        .http
        .post(format!("{url}/api/v1/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    // Three per minute is one every 20 s: the wait is for the oldest
    // failure's share to drain, not for a wall-clock minute to end.
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    // Other emails are not limited.
    assert_eq!(try_login("nobody@example.com", "whatever-1").await.0, 401);
    let (s, b) = env
        .call(
            url,
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": 5})),
        )
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("email")),
        "{b}"
    );
    cp.stop().await;
}

/// Signing out revokes that session on every replica at once, and only
/// that one; an API key has no session to sign out of.
#[tokio::test(flavor = "multi_thread")]
async fn signing_out_revokes_only_that_session() {
    let env = Env::start(1).await;
    let cp = env.control_plane(&[]).await;
    let other = env.control_plane(&[]).await;
    let a = env.login(&cp.url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let b = env.login(&cp.url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let me = |url: &str, token: &str| {
        let (env, url, token) = (&env, url.to_owned(), token.to_owned());
        async move {
            env.call(&url, "GET", "/api/v1/me", Some(&token), None)
                .await
                .0
        }
    };
    assert_eq!(
        (me(&cp.url, &a).await, me(&other.url, &a).await),
        (200, 200)
    );
    let (s, body) = env
        .call(&cp.url, "POST", "/api/v1/auth/logout", Some(&a), None)
        .await;
    assert_eq!(s, 204, "{body}");
    assert_eq!(me(&cp.url, &a).await, 401, "signed out here");
    assert_eq!(me(&other.url, &a).await, 401, "and on the other replica");
    assert_eq!(
        env.call(&cp.url, "POST", "/api/v1/auth/logout", Some(&a), None)
            .await
            .0,
        401
    );
    assert_eq!(me(&cp.url, &b).await, 200, "the other session lives on");
    assert_eq!(
        env.call(&cp.url, "POST", "/api/v1/auth/logout", None, None)
            .await
            .0,
        401
    );
    let (admin, _) = env.tenant(&cp.url, &b, "acme").await;
    let (s, key) = env
        .call(
            &cp.url,
            "POST",
            "/api/v1/keys",
            Some(&admin),
            Some(json!({"name": "k", "scopes": [{"table": "*", "access": "read"}]})),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let (s, body) = env
        .call(
            &cp.url,
            "POST",
            "/api/v1/auth/logout",
            key["token"].as_str(),
            None,
        )
        .await;
    assert_eq!(s, 403, "an API key has no session: {body}");
    let (_, log) = env
        .call(&cp.url, "GET", "/api/v1/audit", Some(&b), None)
        .await;
    assert!(
        log.to_string().contains("\"logout\""),
        "the sign-out is audited: {log}"
    );
    other.stop().await;
    cp.stop().await;
}

/// Tables: validation names the field; N is bounded by the cluster and
/// immutable; of two concurrent creates exactly one wins; a table becomes
/// active once every node knows it, and a deletion goes through.
#[tokio::test(flavor = "multi_thread")]
async fn tables_validate_race_and_reconcile() {
    let env = Env::start(3).await;
    let cp = env.control_plane(&[]).await;
    let url = cp.url.as_str();
    let root = env.login(url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (admin, _) = env.tenant(url, &root, "acme").await;
    for (body, field) in [
        (json!({"name": "ab", "n": 1, "r": 1, "w": 1}), "name"),
        (json!({"name": "bad/name", "n": 1, "r": 1, "w": 1}), "name"),
        (json!({"name": "good", "n": 4, "r": 1, "w": 1}), "n"),
        (json!({"name": "good", "n": 0, "r": 1, "w": 1}), "n"),
        (json!({"name": "good", "n": 3, "r": 4, "w": 1}), "r"),
        (json!({"name": "good", "n": 3, "r": 1, "w": 0}), "w"),
        (
            json!({"name": "good", "n": 3, "r": 1, "w": 1, "conflict": "newest"}),
            "conflict",
        ),
        (json!({"name": "good", "n": "3", "r": 1, "w": 1}), "n"),
        (json!({"name": "good", "r": 1, "w": 1}), "n"),
        (
            json!({"name": "good", "n": 3, "r": 1, "w": 1, "throughput_limit": 0}),
            "throughput_limit",
        ),
        (json!({"name": 7, "n": 3, "r": 1, "w": 1}), "name"),
    ] {
        let (s, b) = env
            .call(
                url,
                "POST",
                "/api/v1/tables",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, 400, "{body}: {b}");
        assert_eq!(b["error"]["field"], field, "{body}: {b}");
    }
    // Two concurrent creates of one name: one 201, one 409.
    let create = || {
        env.call(
            url,
            "POST",
            "/api/v1/tables",
            Some(&admin),
            Some(json!({"name": "orders", "n": 3, "r": 2, "w": 2})),
        )
    };
    let ((s1, b1), (s2, b2)) = tokio::join!(create(), create());
    let mut statuses = [s1, s2];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{b1} {b2}");
    let made = if s1 == 201 { b1 } else { b2 };
    for f in [
        "name",
        "n",
        "r",
        "w",
        "conflict",
        "throughput_limit",
        "status",
        "created_at",
    ] {
        assert!(made.get(f).is_some(), "{f} missing: {made}");
    }
    assert_eq!(made["status"], "creating");
    // Active once every node has it; every node then serves it.
    let started = Instant::now();
    eventually(10, "the table to become active", || async {
        let (_, b) = env
            .call(url, "GET", "/api/v1/tables/orders", Some(&admin), None)
            .await;
        (b["status"] == "active").then_some(())
    })
    .await;
    println!("table active on every node after {:?}", started.elapsed());
    for n in &env.nodes {
        let (s, b) = env
            .call(
                &n.url,
                "GET",
                "/admin/v1/tenants/acme/tables/orders",
                None,
                None,
            )
            .await;
        assert_eq!(s, 401, "the node's admin API needs its credential: {b}");
    }
    // N is immutable; R and W change.
    let (s, b) = env
        .call(
            url,
            "PATCH",
            "/api/v1/tables/orders",
            Some(&admin),
            Some(json!({"n": 1})),
        )
        .await;
    assert_eq!((s, b["error"]["field"].as_str()), (400, Some("n")), "{b}");
    let (s, b) = env
        .call(
            url,
            "PATCH",
            "/api/v1/tables/orders",
            Some(&admin),
            Some(json!({"r": 3, "throughput_limit": 50})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["r"].as_i64(), b["throughput_limit"].as_i64()),
        (Some(3), Some(50))
    );
    let (s, b) = env
        .call(
            url,
            "PATCH",
            "/api/v1/tables/orders",
            Some(&admin),
            Some(json!({"throughput_limit": null})),
        )
        .await;
    assert_eq!((s, b["throughput_limit"].is_null()), (200, true), "{b}");
    // Deletion: gone from the list, and the name is free again.
    let (s, b) = env
        .call(url, "DELETE", "/api/v1/tables/orders", Some(&admin), None)
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("deleting")), "{b}");
    eventually(10, "the deletion to finish", || async {
        let (s, _) = env
            .call(url, "GET", "/api/v1/tables/orders", Some(&admin), None)
            .await;
        (s == 404).then_some(())
    })
    .await;
    let (s, _) = create().await;
    assert_eq!(s, 201, "a deleted table's name can be used again");
    let (_, b) = env
        .call(url, "GET", "/api/v1/audit", Some(&admin), None)
        .await;
    let actions: Vec<&str> = b["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    let (s, b) = env
        .call(url, "GET", "/api/v1/audit?limit=abc", Some(&admin), None)
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("limit")),
        "{b}"
    );
    let (_, two) = env
        .call(url, "GET", "/api/v1/audit?limit=2", Some(&admin), None)
        .await;
    assert_eq!(two["events"].as_array().map(Vec::len), Some(2), "{two}");
    for a in ["table.create", "table.update", "table.delete"] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }
    cp.stop().await;
}

/// API keys end to end: made in the control plane, used on every node,
/// refused out of scope, and refused on every node within 5 s of their
/// revocation. Tenants with the same table name stay apart.
#[tokio::test(flavor = "multi_thread")]
async fn keys_work_on_the_data_plane_and_revocation_is_fast() {
    let env = Env::start(3).await;
    let cp = env.control_plane(&[]).await;
    let url = cp.url.as_str();
    let root = env.login(url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (acme, _) = env.tenant(url, &root, "acme").await;
    let (beta, _) = env.tenant(url, &root, "beta").await;
    for t in [&acme, &beta] {
        for name in ["orders", "limited"] {
            let limit = if name == "limited" {
                json!(3)
            } else {
                Value::Null
            };
            let (s, b) = env
                .call(
                    url,
                    "POST",
                    "/api/v1/tables",
                    Some(t),
                    Some(json!({"name": name, "n": 3, "r": 2, "w": 2, "throughput_limit": limit})),
                )
                .await;
            assert_eq!(s, 201, "{b}");
        }
    }
    let new_key = |token: &String, scopes: Value| {
        let env = &env;
        let token = token.clone();
        async move {
            let (s, b) = env
                .call(
                    url,
                    "POST",
                    "/api/v1/keys",
                    Some(&token),
                    Some(json!({"name": "app", "scopes": scopes})),
                )
                .await;
            assert_eq!(s, 201, "{b}");
            b
        }
    };
    let acme_key = new_key(&acme, json!([{"table": "*", "access": "write"}])).await;
    let reader = new_key(&acme, json!([{"table": "orders", "access": "read"}])).await;
    let beta_key = new_key(&beta, json!([{"table": "orders", "access": "write"}])).await;
    assert_eq!(acme_key["status"], "pending");
    for f in [
        "id",
        "secret",
        "token",
        "access_key_id",
        "secret_access_key",
    ] {
        assert!(
            acme_key[f].as_str().is_some_and(|v| !v.is_empty()),
            "{f}: {acme_key}"
        );
    }
    let token = |k: &Value| k["token"].as_str().expect("token").to_owned();
    let (acme_t, reader_t, beta_t) = (token(&acme_key), token(&reader), token(&beta_key));
    // Active within 2 s normally; then usable on every node.
    let id = acme_key["id"].as_str().expect("id").to_owned();
    let t0 = Instant::now();
    eventually(10, "the key to become active", || async {
        let (_, b) = env
            .call(url, "GET", &format!("/api/v1/keys/{id}"), Some(&acme), None)
            .await;
        (b["status"] == "active").then_some(())
    })
    .await;
    println!("key active after {:?}", t0.elapsed());
    let (_, listed) = env
        .call(url, "GET", "/api/v1/keys", Some(&acme), None)
        .await;
    assert!(
        !listed
            .to_string()
            .contains(acme_key["secret"].as_str().expect("secret")),
        "no secrets in lists"
    );
    for n in 0..3 {
        eventually(5, "tables on every node", || async {
            (env.item(n, "PUT", "orders", "k", &acme_t, Some("acme"))
                .await
                == 200)
                .then_some(())
        })
        .await;
        eventually(5, "beta's table on every node", || async {
            (env.item(n, "PUT", "orders", "k", &beta_t, Some("beta"))
                .await
                == 200)
                .then_some(())
        })
        .await;
    }
    // Same name, two tables: each tenant reads its own value.
    let read = |node: usize, t: &str| {
        let (env, t) = (&env, t.to_owned());
        async move {
            env.http
                .get(format!(
                    "{}/v1/tables/orders/items/k?r=3",
                    env.nodes[node].url
                ))
                .bearer_auth(t)
                .send()
                .await
                .expect("get")
                .text()
                .await
                .expect("text")
        }
    };
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert!(read(1, &acme_t).await.contains(&b64("acme")));
    assert!(read(2, &beta_t).await.contains(&b64("beta")));
    // No spelling of a name reaches the other tenant's table: not case,
    // dots, slashes, percent-encoding, a tenant prefix, or the storage
    // names (`#<id>`; ids 1 to 4 are the four tables made above).
    for spelling in [
        "Orders",
        "ORDERS",
        "orders.",
        "orders%2E",
        "beta%2Forders",
        "beta.orders",
        "beta:orders",
        "%2E%2E%2Fbeta%2Forders",
        "beta%2F%2Forders",
        "orders%00",
        "%231",
        "%232",
        "%233",
        "%234",
    ] {
        let resp = env
            .http
            .get(format!("{}/v1/tables/{spelling}/items/k", env.nodes[0].url))
            .bearer_auth(&acme_t)
            .send()
            .await
            .expect("get");
        let s = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert!(s == 404 || s == 400, "{spelling}: {s} {body}");
        assert!(!body.contains(&b64("beta")), "{spelling}: {body}");
        let s = env
            .item(0, "PUT", spelling, "k", &acme_t, Some("overwrite"))
            .await;
        assert!(s == 404 || s == 400, "{spelling}: {s}");
    }
    assert!(
        read(2, &beta_t).await.contains(&b64("beta")),
        "beta's item is intact"
    );
    // Scopes.
    assert_eq!(
        env.item(0, "GET", "orders", "k", &reader_t, None).await,
        200
    );
    assert_eq!(
        env.item(0, "PUT", "orders", "k", &reader_t, Some("x"))
            .await,
        403
    );
    assert_eq!(
        env.item(0, "GET", "limited", "k", &reader_t, None).await,
        403
    );
    assert_eq!(env.item(0, "GET", "limited", "k", &beta_t, None).await, 403);
    // The keys' last use reaches the control plane (approximately).
    let rid = reader["id"].as_str().expect("id").to_owned();
    eventually(10, "the key's last use to be recorded", || async {
        let (_, b) = env
            .call(
                url,
                "GET",
                &format!("/api/v1/keys/{rid}"),
                Some(&acme),
                None,
            )
            .await;
        b["last_used_at"].as_str().map(|_| ())
    })
    .await;
    // Throttling: "limited" allows 3/s over 3 nodes, 1/s on a node.
    let mut throttled = 0;
    for _ in 0..10 {
        if env.item(0, "GET", "limited", "k", &acme_t, None).await == 429 {
            throttled += 1;
        }
        assert_eq!(
            env.item(0, "GET", "orders", "k", &acme_t, None).await,
            200,
            "other tables are not limited"
        );
    }
    assert!(throttled >= 5, "{throttled} of 10 throttled");
    // Revocation: refused on every node within 5 s.
    let (s, b) = env
        .call(
            url,
            "DELETE",
            &format!("/api/v1/keys/{id}"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("revoked")), "{b}");
    let revoked = Instant::now();
    for n in 0..3 {
        eventually(5, "the revoked key to be refused", || async {
            (env.item(n, "GET", "orders", "k", &acme_t, None).await == 401).then_some(())
        })
        .await;
    }
    let took = revoked.elapsed();
    println!("revoked key refused on all 3 nodes after {took:?}");
    assert!(took <= Duration::from_secs(5));
    assert_eq!(
        env.item(0, "GET", "orders", "k", &reader_t, None).await,
        200,
        "other keys still work"
    );
    // Suspending a tenant stops its keys; reactivating brings them back.
    let (s, _) = env
        .call(
            url,
            "PATCH",
            "/api/v1/tenants/acme",
            Some(&root),
            Some(json!({"state": "suspended"})),
        )
        .await;
    assert_eq!(s, 200);
    for n in 0..3 {
        eventually(5, "the suspension to reach every node", || async {
            (env.item(n, "GET", "orders", "k", &reader_t, None).await == 401).then_some(())
        })
        .await;
    }
    assert_eq!(env.item(0, "GET", "orders", "k", &beta_t, None).await, 200);
    let (s, _) = env
        .call(
            url,
            "PATCH",
            "/api/v1/tenants/acme",
            Some(&root),
            Some(json!({"state": "active"})),
        )
        .await;
    assert_eq!(s, 200);
    eventually(5, "the reactivation", || async {
        (env.item(0, "GET", "orders", "k", &reader_t, None).await == 200).then_some(())
    })
    .await;
    cp.stop().await;
}

/// With the control plane gone and Postgres stopped, the data plane serves
/// every existing key; the API answers 503 while Postgres is down and
/// recovers by itself; changes made while no control plane ran reach the
/// data plane once one is back.
#[tokio::test(flavor = "multi_thread")]
async fn the_data_plane_outlives_the_control_plane_and_postgres() {
    let env = Env::start(2).await;
    let cp = env.control_plane(&[]).await;
    let url = cp.url.clone();
    let root = env.login(&url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (acme, _) = env.tenant(&url, &root, "acme").await;
    let (s, _) = env
        .call(
            &url,
            "POST",
            "/api/v1/tables",
            Some(&acme),
            Some(json!({"name": "orders", "n": 2, "r": 1, "w": 1})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, key) = env
        .call(
            &url,
            "POST",
            "/api/v1/keys",
            Some(&acme),
            Some(json!({"name": "app", "scopes": [{"table": "*", "access": "write"}]})),
        )
        .await;
    let token = key["token"].as_str().expect("token").to_owned();
    for n in 0..2 {
        eventually(10, "the key on every node", || async {
            (env.item(n, "PUT", "orders", "k", &token, Some("v")).await == 200).then_some(())
        })
        .await;
    }
    // Postgres down: the API says 503 ServiceUnavailable, the data plane
    // serves.
    env.pg.stop().expect("stop postgres");
    let (s, b) = env
        .call(&url, "GET", "/api/v1/tables", Some(&acme), None)
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (503, Some("ServiceUnavailable")),
        "{b}"
    );
    for n in 0..2 {
        assert_eq!(env.item(n, "GET", "orders", "k", &token, None).await, 200);
    }
    // Back: the same process recovers by itself.
    env.pg.start().expect("start postgres");
    eventually(30, "the API to recover", || async {
        let (s, _) = env
            .call(&url, "GET", "/api/v1/tables", Some(&acme), None)
            .await;
        (s == 200).then_some(())
    })
    .await;
    // The control plane killed, Postgres stopped: keys still work.
    cp.kill();
    env.pg.stop().expect("stop postgres");
    for n in 0..2 {
        assert_eq!(
            env.item(n, "PUT", "orders", "k2", &token, Some("v2")).await,
            200
        );
    }
    // A change lands in Postgres while no control plane runs (as if a
    // replica died before reconciling it): the next one delivers it.
    env.pg.start().expect("start postgres");
    let pool = dyno_controlplane::connect(&env.db_url).await;
    sqlx::query("UPDATE api_keys SET status = 'revoked', revoked_at = now(), version = next_catalog_version()")
        .execute(&pool)
        .await
        .expect("revoke in the database");
    assert_eq!(
        env.item(0, "GET", "orders", "k", &token, None).await,
        200,
        "not delivered yet"
    );
    let cp = env.control_plane(&[]).await;
    for n in 0..2 {
        eventually(5, "the pending revocation to arrive", || async {
            (env.item(n, "GET", "orders", "k", &token, None).await == 401).then_some(())
        })
        .await;
    }
    cp.stop().await;
}

/// Two replicas: both serve the API, one reconciles (one advisory lock
/// holder); when it dies, the other takes over and changes still arrive.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_the_api_and_hand_over_reconciliation() {
    let env = Env::start(1).await;
    let a = env.control_plane(&[]).await;
    let b = env.control_plane(&[]).await;
    let pool = dyno_controlplane::connect(&env.db_url).await;
    let holders = || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
            )
            .fetch_one(&pool)
            .await
            .expect("locks")
        }
    };
    assert_eq!(holders().await, 1, "one reconciler at a time");
    let root = env.login(&b.url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (acme, _) = env.tenant(&a.url, &root, "acme").await;
    let (s, _) = env
        .call(
            &b.url,
            "POST",
            "/api/v1/tables",
            Some(&acme),
            Some(json!({"name": "orders", "n": 1, "r": 1, "w": 1})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, key) = env
        .call(
            &b.url,
            "POST",
            "/api/v1/keys",
            Some(&acme),
            Some(json!({"name": "k1", "scopes": [{"table": "*", "access": "write"}]})),
        )
        .await;
    let t1 = key["token"].as_str().expect("token").to_owned();
    eventually(10, "a key made on either replica to arrive", || async {
        (env.item(0, "PUT", "orders", "k", &t1, Some("v")).await == 200).then_some(())
    })
    .await;
    // Whichever replica holds the lock, kill it abruptly; the other takes
    // over.
    let leader_pid: i32 =
        sqlx::query_scalar("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
            .fetch_one(&pool)
            .await
            .expect("leader");
    // Terminating the lock holder's session is what a dead replica looks
    // like to Postgres.
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(leader_pid)
        .execute(&pool)
        .await
        .expect("terminate");
    a.kill();
    let (_, key) = env
        .call(
            &b.url,
            "POST",
            "/api/v1/keys",
            Some(&acme),
            Some(json!({"name": "k2", "scopes": [{"table": "*", "access": "write"}]})),
        )
        .await;
    let t2 = key["token"].as_str().expect("token").to_owned();
    eventually(10, "a change after the hand-over to arrive", || async {
        (env.item(0, "PUT", "orders", "k", &t2, Some("v")).await == 200).then_some(())
    })
    .await;
    eventually(10, "one lock holder again", || async {
        (holders().await == 1).then_some(())
    })
    .await;
    b.stop().await;
}

/// DynamoDB tables on the REST API: made with a schema (by a user, or by
/// an API key with `manage` access, which is how the data plane's DynamoDB
/// API forwards CreateTable), stored as `#p<id>` on the nodes, with TTL and
/// tags changed through `PATCH`. Keys may manage tables and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_tables_and_keys_that_manage_them() {
    let env = Env::start(3).await;
    let cp = env.control_plane(&[]).await;
    let url = cp.url.as_str();
    let root = env.login(url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (acme, _) = env.tenant(url, &root, "acme").await;
    let key = |scopes: Value| {
        let (env, acme) = (&env, acme.clone());
        async move {
            let (s, b) = env
                .call(
                    url,
                    "POST",
                    "/api/v1/keys",
                    Some(&acme),
                    Some(json!({"name": "k", "scopes": scopes})),
                )
                .await;
            assert_eq!(s, 201, "{b}");
            b["token"].as_str().expect("token").to_owned()
        }
    };
    let manager = key(json!([{"table": "ddb", "access": "manage"}])).await;
    let writer = key(json!([{"table": "*", "access": "write"}])).await;
    let schema = json!({"key": {"hash": {"name": "pk", "type": "S"}, "range": {"name": "sk", "type": "N"}},
                        "billing_mode": "PAY_PER_REQUEST"});
    let create = |name: &str, conflict: &str, dynamo: Value| json!({"name": name, "n": 3, "r": 2, "w": 2, "conflict": conflict, "dynamo": dynamo});
    // Validation: DynamoDB tables are last-writer-wins with a real schema.
    for (body, field) in [
        (create("ddb", "siblings", schema.clone()), "conflict"),
        (create("ddb", "lww", json!({"key": "pk"})), "dynamo"),
    ] {
        let (s, b) = env
            .call(url, "POST", "/api/v1/tables", Some(&manager), Some(body))
            .await;
        assert_eq!((s, b["error"]["field"].as_str()), (400, Some(field)), "{b}");
    }
    // A key without manage access cannot create; one with it can, for the
    // tables it names only.
    let (s, _) = env
        .call(
            url,
            "POST",
            "/api/v1/tables",
            Some(&writer),
            Some(create("ddb", "lww", schema.clone())),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = env
        .call(
            url,
            "POST",
            "/api/v1/tables",
            Some(&manager),
            Some(create("other", "lww", schema.clone())),
        )
        .await;
    assert_eq!(s, 403);
    let (s, b) = env
        .call(
            url,
            "POST",
            "/api/v1/tables",
            Some(&manager),
            Some(create("ddb", "lww", schema.clone())),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["dynamo"]["key"]["range"]["type"], "N");
    // Keys reach the table routes only.
    for (method, path) in [
        ("GET", "/api/v1/keys"),
        ("GET", "/api/v1/tables"),
        ("GET", "/api/v1/me"),
    ] {
        let (s, _) = env.call(url, method, path, Some(&manager), None).await;
        assert_eq!(s, 403, "{method} {path}");
    }
    let (s, _) = env
        .call(
            url,
            "POST",
            "/api/v1/tables",
            Some("dyno_DKAAAAAAAAAAAAAAAAAA_bogus"),
            Some(create("ddb2", "lww", schema.clone())),
        )
        .await;
    assert_eq!(s, 401);
    // TTL and tags through PATCH; the schema's key cannot change.
    let (s, b) = env
        .call(url, "PATCH", "/api/v1/tables/ddb", Some(&manager),
            Some(json!({"dynamo": {"ttl": {"enabled": true, "attribute": "exp"}, "tags_set": {"team": "core"}}})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["dynamo"]["ttl_attribute"], "exp");
    assert_eq!(b["dynamo"]["tags"]["team"], "core");
    let (s, b) = env
        .call(
            url,
            "PATCH",
            "/api/v1/tables/ddb",
            Some(&manager),
            Some(json!({"dynamo": {"key": {}}})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // A native table has no DynamoDB settings to patch.
    let (s, _) = env
        .call(
            url,
            "POST",
            "/api/v1/tables",
            Some(&acme),
            Some(json!({"name": "plain", "n": 3, "r": 2, "w": 2})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, b) = env
        .call(
            url,
            "PATCH",
            "/api/v1/tables/plain",
            Some(&acme),
            Some(json!({"dynamo": {"tags_set": {"a": "b"}}})),
        )
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("dynamo")),
        "{b}"
    );
    // The nodes hold it as a DynamoDB table: the native API refuses it.
    for n in 0..3 {
        eventually(10, "the DynamoDB table on every node", || async {
            (env.item(n, "GET", "ddb", "k", &writer, None).await == 400).then_some(())
        })
        .await;
    }
    // The audit log names the key that acted.
    let (_, audit) = env
        .call(url, "GET", "/api/v1/audit", Some(&acme), None)
        .await;
    assert!(audit.to_string().contains("key:DK"), "{audit}");
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clusters_register_through_the_api() {
    let env = Env::start(1).await;
    let cp = env.control_plane(&[]).await;
    let url = cp.url.as_str();
    let root = env.login(url, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let node = env.nodes[0].url.clone();
    let put = |name: &str, body: Value| {
        let (env, root, name) = (&env, root.clone(), name.to_owned());
        async move {
            env.call(
                url,
                "PUT",
                &format!("/api/v1/clusters/{name}"),
                Some(&root),
                Some(body),
            )
            .await
        }
    };

    // Bad requests name their field; nothing is stored.
    for (name, body, field) in [
        (
            "bad name",
            json!({"admin_urls": [node], "admin_token": NODE_TOKEN}),
            "cluster",
        ),
        (
            "x",
            json!({"admin_urls": [], "admin_token": NODE_TOKEN}),
            "admin_urls",
        ),
        (
            "x",
            json!({"admin_urls": ["ftp://h"], "admin_token": NODE_TOKEN}),
            "admin_urls",
        ),
        (
            "x",
            json!({"admin_urls": [node], "admin_token": "short"}),
            "admin_token",
        ),
        (
            "x",
            json!({"admin_urls": [node], "admin_token": "wrong-token-0123456789"}),
            "admin_token",
        ),
    ] {
        let (s, b) = put(name, body.clone()).await;
        assert_eq!(
            (s, b["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {b}"
        );
    }
    let (s, b) = put(
        "x",
        json!({"admin_urls": [node], "admin_token": NODE_TOKEN, "extra": 1}),
    )
    .await;
    assert_eq!(s, 400, "unknown fields are refused: {b}");
    let (s, b) = put(
        "x",
        json!({"admin_urls": ["http://127.0.0.1:9"], "admin_token": NODE_TOKEN}),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (503, Some("ClusterUnavailable")),
        "{b}"
    );

    // Registered (201), then updated (200), and reconciled like any other.
    let body = json!({"admin_urls": [format!("{node}/")], "admin_token": NODE_TOKEN});
    let (s, b) = put("k8s.db", body.clone()).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        b["admin_urls"],
        json!([node]),
        "trailing slash trimmed: {b}"
    );
    let (s, _) = put("k8s.db", body).await;
    assert_eq!(s, 200);
    let listed = eventually(30, "the reconciler to reach the new cluster", || async {
        let (_, b) = env
            .call(url, "GET", "/api/v1/clusters", Some(&root), None)
            .await;
        let c = b["clusters"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "k8s.db")?
            .clone();
        (c["node_count"].as_i64()? > 0).then_some(b)
    })
    .await;
    let names: Vec<&str> = listed["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["k8s.db", "main"]);
    let (s, b) = env
        .call(url, "GET", "/api/v1/clusters/k8s.db", Some(&root), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = env
        .call(url, "GET", "/api/v1/audit", Some(&root), None)
        .await;
    let actions: Vec<&str> = b["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["resource"] == "cluster/k8s.db")
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["cluster.update", "cluster.register"]);
}
