//! The console's pages, one module per area. Each handler reads through
//! the API as the signed-in user ([`crate::session::Signed`]), renders with
//! [`crate::layout::Page`], and after a change redirects (post, redirect,
//! get) with a notice, or renders the form again with the API's error next
//! to the field it names.

pub mod audit;
pub mod cluster;
pub mod items;
pub mod keys;
pub mod latency;
pub mod login;
pub mod staleness;
pub mod tables;
pub mod tenants;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use crate::client::Failure;
use crate::session::Signed;

/// `/`: a tenant's tables, or a platform admin's tenants.
pub async fn home(user: Signed) -> Response {
    if user.me.tenant.is_some() {
        Redirect::to("/tables").into_response()
    } else {
        Redirect::to("/tenants").into_response()
    }
}

pub use crate::layout::error_page;

/// The 404 page of unknown paths.
pub fn not_found() -> Response {
    error_page(
        None,
        &Failure {
            status: StatusCode::NOT_FOUND,
            code: "NotFound".into(),
            message: "There is no page at this address.".into(),
            field: None,
        },
    )
}

/// Redirects to `to` with a notice.
pub fn done(to: &str, notice: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}notice={}", crate::client::seg(notice))).into_response()
}

/// The query of pages that show a notice after a redirect.
#[derive(Debug, Default, serde::Deserialize)]
pub struct NoticeQuery {
    /// The notice.
    pub notice: Option<String>,
}

/// Keeps a notice short and plain (it comes from the URL).
pub fn clip_notice(n: Option<String>) -> Option<String> {
    n.map(|n| n.chars().take(200).collect())
}
