//! Sign-in state: the session cookie, the signed-in user, and the
//! anti-forgery check of every form.
//!
//! * The session is the control plane's own session token (a JWT) in the
//!   cookie `dyno_session`: HttpOnly, SameSite=Strict, Path=/, Secure when
//!   the request came over TLS (`X-Forwarded-Proto: https` from the proxy
//!   that terminates it), expiring with the token.
//! * Every form that changes something carries `_csrf`, an HMAC of the
//!   session token under the session signing key
//!   (`Sessions::csrf_token`); the sign-in form, which has no session yet,
//!   carries the value of a SameSite=Strict pre-session cookie instead
//!   (double submit), so another site cannot sign a victim into its
//!   account either.
//! * A missing session sends the browser to `/login?next=<page>`; an
//!   expired or revoked one also says so (`expired=1`) and clears the
//!   cookie.

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use dyno_controlplane::api::User;
use serde::de::DeserializeOwned;

use crate::Console;
use crate::client::{Api, Failure};

/// The session cookie.
pub const SESSION_COOKIE: &str = "dyno_session";
/// The sign-in form's pre-session cookie.
pub const LOGIN_COOKIE: &str = "dyno_login";

/// The value of cookie `name`.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// True when the request reached the proxy in front of us over TLS.
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value.
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// Where a page asked for lives, for `next` (path and query only).
fn asked_for(parts: &Parts) -> String {
    if parts.method == axum::http::Method::GET {
        parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
    } else {
        // A form post cannot be replayed after signing in; come back to
        // the page the form was on.
        parts
            .uri
            .path()
            .rsplit_once('/')
            .map(|(head, _)| if head.is_empty() { "/" } else { head })
            .unwrap_or("/")
            .to_owned()
    }
}

/// A safe `next`: a local path, never another origin.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

/// The answer that sends the browser to sign in.
pub fn to_login(next: &str, expired: bool, secure: bool) -> Response {
    let mut url = format!("/login?next={}", crate::client::seg(next));
    if expired {
        url.push_str("&expired=1");
    }
    let mut resp = Redirect::to(&url).into_response();
    if expired {
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, "", 0, secure),
        );
    }
    resp
}

/// A signed-in user, with an API client acting as them.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The API as this user.
    pub api: Api,
    /// Who they are.
    pub me: User,
    /// The token their forms carry.
    pub csrf: String,
    /// Whether cookies must be Secure.
    pub secure: bool,
}

impl Signed {
    /// True for a platform admin.
    pub fn is_platform_admin(&self) -> bool {
        self.me.role == dyno_controlplane::auth::Role::PlatformAdmin
    }
}

impl<S> FromRequestParts<S> for Signed
where
    Console: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejected;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Signed, Rejected> {
        let console = Console::from_ref(state);
        let secure = over_tls(&parts.headers);
        let next = asked_for(parts);
        // An API key is not a session: the cookie only ever holds session
        // tokens the sign-in form set.
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE)
            .filter(|t| !t.is_empty() && dyno_core::apikey::parse_token(t).is_none())
            .map(str::to_owned)
        else {
            return Err(Rejected::Login(to_login(&next, false, secure)));
        };
        let api = Api::new(console.api.clone(), Some(token.clone()));
        match api.get::<User>("/api/v1/me").await {
            Ok(me) => Ok(Signed {
                csrf: console.cp.sessions().csrf_token(&token),
                api,
                me,
                secure,
            }),
            Err(f) if f.is_unauthorized() => Err(Rejected::Login(to_login(&next, true, secure))),
            Err(f) => Err(Rejected::Failed(Box::new(f), None)),
        }
    }
}

/// Why a page could not be served to the request: a redirect to sign in,
/// or a failure to show (rendered by `layout`, which sits above this
/// module).
#[derive(Debug)]
pub enum Rejected {
    /// Go and sign in.
    Login(Response),
    /// Show this failure, to this user if known.
    Failed(Box<Failure>, Option<Box<Signed>>),
}

fn failed(
    user: Option<&Signed>,
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
) -> Rejected {
    Rejected::Failed(
        Box::new(Failure {
            status,
            code: code.into(),
            message: message.into(),
            field: None,
        }),
        user.map(|u| Box::new(u.clone())),
    )
}

/// A form posted by a signed-in user, its anti-forgery token checked.
#[derive(Debug)]
pub struct Posted<T> {
    /// The user.
    pub user: Signed,
    /// The form's fields.
    pub form: T,
}

/// Parses a form body; `_csrf` is read by the caller.
fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_urlencoded::from_bytes::<T>(bytes).map_err(|e| format!("the form did not parse: {e}"))
}

/// The `_csrf` field of a form body.
pub fn form_csrf(bytes: &[u8]) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "_csrf")
        .map(|(_, v)| v)
}

impl<S, T> FromRequest<S> for Posted<T>
where
    Console: FromRef<S>,
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Rejected;

    async fn from_request(req: Request, state: &S) -> Result<Posted<T>, Rejected> {
        let (mut parts, body) = req.into_parts();
        let user = Signed::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, 4 << 20).await.map_err(|_| {
            failed(
                Some(&user),
                StatusCode::PAYLOAD_TOO_LARGE,
                "TooLarge",
                "the form is larger than 4 MiB",
            )
        })?;
        let console = Console::from_ref(state);
        let token = cookie(&parts.headers, SESSION_COOKIE).unwrap_or_default();
        let ok = form_csrf(&bytes).is_some_and(|c| console.cp.sessions().check_csrf(token, &c));
        if !ok {
            return Err(failed(
                Some(&user),
                StatusCode::FORBIDDEN,
                "CsrfTokenInvalid",
                "this form is stale or did not come from this console; reload the page and try again",
            ));
        }
        let form = parse_form::<T>(&bytes)
            .map_err(|m| failed(Some(&user), StatusCode::BAD_REQUEST, "BadForm", m))?;
        Ok(Posted { user, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; dyno_session=tok.en; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok.en"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn next_stays_local() {
        assert_eq!(safe_next(Some("/tables/x?y=1")), "/tables/x?y=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_strict_and_secure_over_tls() {
        let c = set_cookie(SESSION_COOKIE, "t", 60, true);
        let c = c.to_str().unwrap_or_default();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        let c = set_cookie(SESSION_COOKIE, "t", 60, false);
        assert!(!c.to_str().unwrap_or_default().contains("Secure"));
    }
}
