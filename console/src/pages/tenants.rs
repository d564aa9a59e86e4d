//! Tenants (platform admins: create, suspend, resume) and their users
//! (platform admins and the tenant's admins: list, invite with a role).

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use dyno_controlplane::api::{Tenant, User};
use leptos::prelude::*;
use serde::Deserialize;
use serde_json::json;

use super::{NoticeQuery, clip_notice, done, error_page};
use crate::client::{Failure, seg};
use crate::layout::{Area, Field, Page, badge, csrf_field, form_error, notice, select, when};
use crate::session::{Posted, Signed};

#[derive(Debug, Deserialize)]
struct Tenants {
    tenants: Vec<Tenant>,
}

#[derive(Debug, Deserialize)]
struct Users {
    users: Vec<User>,
}

/// The create form.
#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
}

async fn render_list(
    user: &Signed,
    form: &CreateForm,
    failure: Option<&Failure>,
    note: Option<String>,
) -> Response {
    let tenants = match user.api.get::<Tenants>("/api/v1/tenants").await {
        Ok(t) => t.tenants,
        Err(f) => return error_page(Some(user), &f),
    };
    let rows = tenants
        .into_iter()
        .map(|t| {
            let href = format!("/tenants/{}", seg(&t.name));
            view! {
                <tr>
                    <td><a href=href>{t.name.clone()}</a></td>
                    <td>{badge(&t.state)}</td>
                    <td>{when(&t.created_at)}</td>
                </tr>
            }
        })
        .collect_view();
    let status = failure.map_or(StatusCode::OK, |f| f.status);
    Page::new("Tenants", Area::Tenants).status(status).render(
        Some(user),
        view! {
            {notice(note)}
            <div class="table-wrap">
                <table>
                    <thead><tr><th scope="col">"Tenant"</th><th scope="col">"State"</th><th scope="col">"Created"</th></tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
            <section class="card">
                <h2>"Create a tenant"</h2>
                {form_error(failure, &["name"])}
                <form method="post" action="/tenants">
                    {csrf_field(&user.csrf)}
                    {Field::text("name", "Name", form.name.clone()).required()
                        .help("2 to 63 characters of a-z, 0-9 and -, starting with a letter or digit.").view(failure)}
                    <button type="submit">"Create tenant"</button>
                </form>
            </section>
        },
    )
}

/// `GET /tenants` (platform admins).
pub async fn list(user: Signed, Query(q): Query<NoticeQuery>) -> Response {
    render_list(&user, &CreateForm::default(), None, clip_notice(q.notice)).await
}

/// `POST /tenants`.
pub async fn create(p: Posted<CreateForm>) -> Response {
    match p
        .user
        .api
        .post::<Tenant>("/api/v1/tenants", &json!({ "name": p.form.name.trim() }))
        .await
    {
        Ok(t) => done(
            &format!("/tenants/{}", seg(&t.name)),
            &format!("Tenant {} created.", t.name),
        ),
        Err(f) => render_list(&p.user, &p.form, Some(&f), None).await,
    }
}

/// The invite form.
#[derive(Debug, Default, Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

const ROLES: &[(&str, &str)] = &[
    ("tenant_member", "Member: tables, items and keys"),
    ("tenant_admin", "Admin: also the tenant's users"),
];

async fn render_tenant(
    user: &Signed,
    name: &str,
    invite: Option<(&InviteForm, &Failure)>,
    note: Option<String>,
) -> Response {
    let users = match user
        .api
        .get::<Users>(&format!("/api/v1/tenants/{}/users", seg(name)))
        .await
    {
        Ok(u) => u.users,
        Err(f) => return error_page(Some(user), &f),
    };
    // Only platform admins may see and change the tenant's state.
    let tenant = if user.is_platform_admin() {
        match user
            .api
            .get::<Tenant>(&format!("/api/v1/tenants/{}", seg(name)))
            .await
        {
            Ok(t) => Some(t),
            Err(f) => return error_page(Some(user), &f),
        }
    } else {
        None
    };
    let state_card = tenant.map(|t| {
        let (to, label, class) = if t.state == "active" {
            ("suspended", "Suspend tenant", "danger")
        } else {
            ("active", "Resume tenant", "")
        };
        let action = format!("/tenants/{}", seg(&t.name));
        let text = if t.state == "active" {
            "Active. Suspending refuses every API key of the tenant on every node within seconds; its data stays."
        } else {
            "Suspended: its keys are refused. Resuming lets them in again."
        };
        view! {
            <section class="card">
                <h2>"State"</h2>
                <p>{badge(&t.state)}" "{text}</p>
                <form method="post" action=action>
                    {csrf_field(&user.csrf)}
                    <input type="hidden" name="state" value=to/>
                    <button type="submit" class=class data-confirm=format!("{label}?")>{label}</button>
                </form>
            </section>
        }
    });
    let rows = users
        .into_iter()
        .map(|u| {
            let role = match u.role {
                dyno_controlplane::auth::Role::TenantAdmin => "admin",
                dyno_controlplane::auth::Role::TenantMember => "member",
                dyno_controlplane::auth::Role::PlatformAdmin => "platform admin",
            };
            view! { <tr><td>{u.email}</td><td>{role}</td><td>{when(&u.created_at)}</td></tr> }
        })
        .collect_view();
    let (form, failure) = match invite {
        Some((f, e)) => (Some(f), Some(e)),
        None => (None, None),
    };
    let action = format!("/tenants/{}/users", seg(name));
    let status = failure.map_or(StatusCode::OK, |f| f.status);
    Page::new(format!("Tenant {name}"), Area::Tenants).status(status).render(
        Some(user),
        view! {
            {notice(note)}
            {state_card}
            <section class="card">
                <h2>"Users"</h2>
                <div class="table-wrap">
                    <table>
                        <thead><tr><th scope="col">"Email"</th><th scope="col">"Role"</th><th scope="col">"Since"</th></tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                </div>
            </section>
            <section class="card">
                <h2>"Invite a user"</h2>
                {form_error(failure, &["email", "role", "password"])}
                <form method="post" action=action>
                    {csrf_field(&user.csrf)}
                    {Field::text("email", "Email", form.map(|f| f.email.clone()).unwrap_or_default()).kind("email").required().view(failure)}
                    {select("role", "Role", ROLES, form.map_or("tenant_member", |f| f.role.as_str()), None, failure)}
                    {Field::text("password", "First password", "").kind("password").required()
                        .help("8 to 1,024 characters. Give it to the user by a channel you trust.").view(failure)}
                    <button type="submit">"Invite"</button>
                </form>
            </section>
        },
    )
}

/// `GET /tenants/{tenant}`: its state (platform admins) and users.
pub async fn show(
    user: Signed,
    Path(name): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> Response {
    render_tenant(&user, &name, None, clip_notice(q.notice)).await
}

/// `POST /tenants/{tenant}`: suspends or resumes.
pub async fn set_state(Path(name): Path<String>, p: Posted<HashMap<String, String>>) -> Response {
    let to = p.form.get("state").cloned().unwrap_or_default();
    match p
        .user
        .api
        .patch::<Tenant>(
            &format!("/api/v1/tenants/{}", seg(&name)),
            &json!({ "state": to }),
        )
        .await
    {
        Ok(t) => done(
            &format!("/tenants/{}", seg(&name)),
            &format!("Tenant {} is {}.", t.name, t.state),
        ),
        Err(f) => error_page(Some(&p.user), &f),
    }
}

/// `POST /tenants/{tenant}/users`: invites a user.
pub async fn invite(Path(name): Path<String>, p: Posted<InviteForm>) -> Response {
    let body =
        json!({ "email": p.form.email.trim(), "password": p.form.password, "role": p.form.role });
    match p
        .user
        .api
        .post::<User>(&format!("/api/v1/tenants/{}/users", seg(&name)), &body)
        .await
    {
        Ok(u) => done(
            &format!("/tenants/{}", seg(&name)),
            &format!("{} can now sign in.", u.email),
        ),
        Err(f) => render_tenant(&p.user, &name, Some((&p.form, &f)), None).await,
    }
}
