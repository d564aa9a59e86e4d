//! Sign in and sign out.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use dyno_controlplane::api::Session;
use leptos::prelude::*;
use serde::Deserialize;
use serde_json::json;

use crate::Console;
use crate::client::{Api, Failure};
use crate::layout::{Area, Field, Page, form_error};
use crate::session::{
    LOGIN_COOKIE, Posted, SESSION_COOKIE, cookie, form_csrf, over_tls, safe_next, set_cookie,
};

/// `GET /login` query.
#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    /// Where to go after signing in.
    pub next: Option<String>,
    /// Set when a session ran out.
    pub expired: Option<String>,
    /// Set after signing out.
    pub signed_out: Option<String>,
}

fn nonce() -> String {
    let mut b = [0u8; 16];
    // Without randomness the form still works, but the pre-session
    // check then rests on SameSite alone; getrandom failing is a broken
    // machine, logged.
    if let Err(e) = getrandom::fill(&mut b) {
        tracing::error!(error = %e, "no randomness for the sign-in form");
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn render(
    next: &str,
    email: &str,
    message: Option<&str>,
    failure: Option<&Failure>,
    secure: bool,
    status: StatusCode,
) -> Response {
    let n = nonce();
    let message = message.map(|m| view! { <p class="notice" role="status">{m.to_owned()}</p> });
    let err = form_error(failure, &["email", "password"]);
    let email = Field::text("email", "Email", email)
        .kind("email")
        .required()
        .view(failure);
    let password = Field::text("password", "Password", "")
        .kind("password")
        .required()
        .view(failure);
    let mut resp = Page::new("Sign in", Area::None).status(status).render(
        None,
        view! {
            <section class="card narrow">
                {message}
                {err}
                <form method="post" action="/login">
                    <input type="hidden" name="_csrf" value=n.clone()/>
                    <input type="hidden" name="next" value=next.to_owned()/>
                    {email}
                    {password}
                    <button type="submit">"Sign in"</button>
                </form>
            </section>
        },
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &n, 3600, secure),
    );
    resp
}

/// `GET /login`.
pub async fn form(headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let message = if q.expired.is_some() {
        Some("Your session has ended. Sign in again to continue.")
    } else if q.signed_out.is_some() {
        Some("You are signed out.")
    } else {
        None
    };
    render(
        &safe_next(q.next.as_deref()),
        "",
        message,
        None,
        over_tls(&headers),
        StatusCode::OK,
    )
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`: signs in through the API and sets the session cookie.
pub async fn submit(
    State(console): State<Console>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let secure = over_tls(&headers);
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return render(
            "/",
            "",
            None,
            Some(&bad("fill in your email and password", None)),
            secure,
            StatusCode::BAD_REQUEST,
        );
    };
    let next = safe_next(form.next.as_deref());
    let pre = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let posted = form_csrf(&body).unwrap_or_default();
    if pre.is_empty() || !dyno_core::apikey::constant_time_eq(pre.as_bytes(), posted.as_bytes()) {
        let f = Failure {
            status: StatusCode::FORBIDDEN,
            ..bad(
                "this sign-in form is stale or came from another site; try again",
                None,
            )
        };
        return render(
            &next,
            &form.email,
            None,
            Some(&f),
            secure,
            StatusCode::FORBIDDEN,
        );
    }
    let api = Api::new(console.api.clone(), None);
    match api
        .post::<Session>(
            "/api/v1/auth/login",
            &json!({ "email": form.email, "password": form.password }),
        )
        .await
    {
        Ok(s) => {
            let age = (s.expires_at - chrono::Utc::now()).num_seconds().max(1);
            let mut resp = Redirect::to(&next).into_response();
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &s.token, age, secure),
            );
            h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0, secure));
            resp
        }
        Err(f) => {
            let status = f.status;
            render(&next, &form.email, None, Some(&f), secure, status)
        }
    }
}

fn bad(message: &str, field: Option<&str>) -> Failure {
    Failure {
        status: StatusCode::BAD_REQUEST,
        code: "ValidationError".into(),
        message: message.into(),
        field: field.map(str::to_owned),
    }
}

/// `POST /logout`: revokes the session through the API, so that the token
/// stops working everywhere (a copy taken out of the browser too), and
/// clears the cookie (the form carries the anti-forgery token, so another
/// site cannot sign a user out).
pub async fn logout(p: Posted<HashMap<String, String>>) -> Response {
    if let Err(f) = p
        .user
        .api
        .post::<()>("/api/v1/auth/logout", &serde_json::json!({}))
        .await
    {
        // The cookie goes anyway; the token then lives until it expires.
        tracing::warn!(error = %f.message, "could not revoke a session at sign-out");
    }
    let mut resp = Redirect::to("/login?signed_out=1").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, p.user.secure),
    );
    resp
}
