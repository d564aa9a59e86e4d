//! The page shell (head, navigation, the signed-in user, sign-out) and
//! the small pieces every form uses: labelled fields with their error
//! next to them, notices, the anti-forgery field.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use leptos::prelude::*;

use crate::client::Failure;
use crate::session::Signed;

/// The areas of the console, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Sign-in and error pages.
    None,
    /// Tables and their items.
    Tables,
    /// API keys.
    Keys,
    /// Cluster health.
    Cluster,
    /// Tenants and users.
    Tenants,
    /// The audit log.
    Audit,
}

/// A page to render.
#[derive(Debug)]
pub struct Page {
    /// The title (also the `<h1>`).
    pub title: String,
    /// The area it belongs to.
    pub area: Area,
    /// Reload every this many seconds (a page waiting for something).
    pub refresh_secs: Option<u32>,
    /// The status to answer with.
    pub status: StatusCode,
}

impl Page {
    /// A page titled `title` in `area`.
    pub fn new(title: impl Into<String>, area: Area) -> Page {
        Page {
            title: title.into(),
            area,
            refresh_secs: None,
            status: StatusCode::OK,
        }
    }

    /// Answers with `status`.
    pub fn status(mut self, status: StatusCode) -> Page {
        self.status = status;
        self
    }

    /// Reloads itself every `secs` seconds.
    pub fn refresh(mut self, secs: u32) -> Page {
        self.refresh_secs = Some(secs);
        self
    }

    /// The whole document around `body`.
    pub fn render(self, user: Option<&Signed>, body: impl IntoView + 'static) -> Response {
        let nav = user.map(nav);
        let refresh = self.refresh_secs.map(|s| s.to_string());
        let title = self.title.clone();
        let html = view! {
            <html lang="en">
                <head>
                    <meta charset="utf-8"/>
                    <meta name="viewport" content="width=device-width, initial-scale=1"/>
                    {refresh.map(|s| view! { <meta http-equiv="refresh" content=s/> })}
                    <title>{format!("{title} · Dyno")}</title>
                    <link rel="stylesheet" href="/assets/console.css"/>
                    <script src="/assets/console.js" defer></script>
                </head>
                <body>
                    <a class="skip" href="#main">"Skip to content"</a>
                    {nav.map(|n| n(self.area))}
                    <main id="main" tabindex="-1">
                        <h1>{self.title}</h1>
                        {body}
                    </main>
                </body>
            </html>
        }
        .to_html();
        let mut resp = (self.status, format!("<!DOCTYPE html>\n{html}")).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        resp
    }
}

/// The navigation bar of a signed-in user.
fn nav(user: &Signed) -> impl Fn(Area) -> AnyView + use<> {
    let email = user.me.email.clone();
    let role = match user.me.role {
        dyno_controlplane::auth::Role::PlatformAdmin => "platform admin".to_owned(),
        dyno_controlplane::auth::Role::TenantAdmin => {
            format!("admin of {}", user.me.tenant.clone().unwrap_or_default())
        }
        dyno_controlplane::auth::Role::TenantMember => {
            format!("member of {}", user.me.tenant.clone().unwrap_or_default())
        }
    };
    let has_tenant = user.me.tenant.is_some();
    let people = match user.me.role {
        dyno_controlplane::auth::Role::PlatformAdmin => Some(("/tenants".to_owned(), "Tenants")),
        dyno_controlplane::auth::Role::TenantAdmin => user
            .me
            .tenant
            .as_ref()
            .map(|t| (format!("/tenants/{}", crate::client::seg(t)), "Users")),
        dyno_controlplane::auth::Role::TenantMember => None,
    };
    let csrf = user.csrf.clone();
    move |area: Area| {
        let link = |href: String, label: &'static str, this: Area| {
            let current = (area == this).then_some("page");
            view! { <li><a href=href aria-current=current>{label}</a></li> }
        };
        view! {
            <header class="top">
                <a class="brand" href="/">"Dyno"</a>
                <nav aria-label="Main">
                    <ul>
                        {has_tenant.then(|| link("/tables".into(), "Tables", Area::Tables))}
                        {has_tenant.then(|| link("/keys".into(), "API keys", Area::Keys))}
                        {link("/cluster".into(), "Cluster health", Area::Cluster)}
                        {people.clone().map(|(href, label)| link(href, label, Area::Tenants))}
                        {link("/audit".into(), "Audit log", Area::Audit)}
                    </ul>
                </nav>
                <div class="who">
                    <span>{format!("{email} · {role}")}</span>
                    <form method="post" action="/logout" class="inline">
                        {csrf_field(&csrf)}
                        <button type="submit" class="link">"Sign out"</button>
                    </form>
                </div>
            </header>
        }
        .into_any()
    }
}

/// A page that says what went wrong, with the API's status.
pub fn error_page(user: Option<&Signed>, f: &Failure) -> Response {
    let title = match f.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => "Temporarily unavailable",
        s if s.is_server_error() => "Something went wrong",
        _ => "That did not work",
    };
    let message = f.message.clone();
    let code = f.code.clone();
    Page::new(title, Area::None).status(f.status).render(
        user,
        view! {
            <p class="error" role="alert">{message}</p>
            <p class="muted">"Code: "<code>{code}</code></p>
            <p><a href="/">"Back to the start"</a></p>
        },
    )
}

impl IntoResponse for crate::session::Rejected {
    fn into_response(self) -> Response {
        match self {
            crate::session::Rejected::Login(r) => r,
            crate::session::Rejected::Failed(f, user) => error_page(user.as_deref(), &f),
        }
    }
}

/// The hidden anti-forgery field.
pub fn csrf_field(token: &str) -> impl IntoView + use<> {
    view! { <input type="hidden" name="_csrf" value=token.to_owned()/> }
}

/// A notice (after a change succeeded).
pub fn notice(text: Option<String>) -> impl IntoView {
    text.map(|t| view! { <p class="notice" role="status">{t}</p> })
}

/// A failure that concerns no single field, at the top of a form.
pub fn form_error(f: Option<&Failure>, fields: &[&str]) -> impl IntoView + use<> {
    f.filter(|f| f.field.as_deref().is_none_or(|x| !fields.contains(&x)))
        .map(|f| {
            let msg = f.message.clone();
            view! { <p class="error" role="alert">{msg}</p> }
        })
}

/// A labelled text input with its help text and its error.
#[derive(Debug, Clone)]
pub struct Field {
    /// The form field's name (also the API's field name for errors).
    pub name: &'static str,
    /// The label.
    pub label: &'static str,
    /// `text`, `number`, `password`, `email`.
    pub kind: &'static str,
    /// The current value.
    pub value: String,
    /// Help under the field.
    pub help: Option<String>,
    /// Required.
    pub required: bool,
    /// Extra attributes: min and max for numbers.
    pub range: Option<(u32, u32)>,
}

impl Field {
    /// A text field.
    pub fn text(name: &'static str, label: &'static str, value: impl Into<String>) -> Field {
        Field {
            name,
            label,
            kind: "text",
            value: value.into(),
            help: None,
            required: false,
            range: None,
        }
    }

    /// A number field from `lo` to `hi`.
    pub fn number(
        name: &'static str,
        label: &'static str,
        value: impl Into<String>,
        lo: u32,
        hi: u32,
    ) -> Field {
        Field {
            kind: "number",
            range: Some((lo, hi)),
            ..Field::text(name, label, value)
        }
    }

    /// Of `kind`.
    pub fn kind(mut self, kind: &'static str) -> Field {
        self.kind = kind;
        self
    }

    /// With help text.
    pub fn help(mut self, help: impl Into<String>) -> Field {
        self.help = Some(help.into());
        self
    }

    /// Required.
    pub fn required(mut self) -> Field {
        self.required = true;
        self
    }

    /// The field, with `failure`'s message next to it when it names it.
    pub fn view(self, failure: Option<&Failure>) -> impl IntoView + use<> {
        let id = format!("f-{}", self.name);
        let help_id = format!("{id}-help");
        let err_id = format!("{id}-error");
        let error = failure.and_then(|f| f.for_field(self.name));
        let described = match (&self.help, &error) {
            (Some(_), Some(_)) => Some(format!("{help_id} {err_id}")),
            (Some(_), None) => Some(help_id.clone()),
            (None, Some(_)) => Some(err_id.clone()),
            (None, None) => None,
        };
        let invalid = error.as_ref().map(|_| "true");
        let (min, max) = self.range.map_or((None, None), |(a, b)| {
            (Some(a.to_string()), Some(b.to_string()))
        });
        view! {
            <div class="field">
                <label for=id.clone()>{self.label}</label>
                <input id=id type=self.kind name=self.name value=self.value
                    required=self.required min=min max=max
                    aria-describedby=described aria-invalid=invalid/>
                {self.help.map(|h| view! { <p class="help" id=help_id>{h}</p> })}
                {error.map(|e| view! { <p class="field-error" id=err_id>{e}</p> })}
            </div>
        }
    }
}

/// A labelled `<select>`.
pub fn select(
    name: &'static str,
    label: &'static str,
    options: &[(&'static str, &'static str)],
    selected: &str,
    help: Option<&'static str>,
    failure: Option<&Failure>,
) -> impl IntoView + use<> {
    let id = format!("f-{name}");
    let error = failure.and_then(|f| f.for_field(name));
    let opts = options
        .iter()
        .map(|(v, l)| {
            let sel = *v == selected;
            view! { <option value=*v selected=sel>{*l}</option> }
        })
        .collect_view();
    view! {
        <div class="field">
            <label for=id.clone()>{label}</label>
            <select id=id name=name>{opts}</select>
            {help.map(|h| view! { <p class="help">{h}</p> })}
            {error.map(|e| view! { <p class="field-error">{e}</p> })}
        </div>
    }
}

/// A status word in a coloured badge (the stylesheet colours
/// `.badge.<status>`).
pub fn badge(status: &str) -> impl IntoView + use<> {
    let class = format!("badge {status}");
    view! { <span class=class>{status.to_owned()}</span> }
}

/// A size in bytes for people.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A time for people (UTC, to the second).
pub fn when(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn fields_carry_their_error_and_label() {
        let f = Failure {
            status: StatusCode::BAD_REQUEST,
            code: "ValidationError".into(),
            message: "r must be between 1 and n = 3, got 9".into(),
            field: Some("r".into()),
        };
        let html = Field::number("r", "R (read quorum)", "9", 1, 7)
            .view(Some(&f))
            .to_html();
        assert!(
            html.contains("<label for=\"f-r\">R (read quorum)</label>"),
            "{html}"
        );
        assert!(html.contains("aria-invalid=\"true\""), "{html}");
        assert!(
            html.contains("r must be between 1 and n = 3, got 9"),
            "{html}"
        );
        let other = Field::number("w", "W", "2", 1, 7).view(Some(&f)).to_html();
        assert!(!other.contains("field-error"), "{other}");
    }

    #[test]
    fn text_is_escaped() {
        let html = notice(Some("<script>alert(1)</script>".into())).to_html();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
}
