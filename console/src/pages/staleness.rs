//! "What your N/R/W means": the probability that a read sees the latest
//! acknowledged write some milliseconds after it, for the table's R and W
//! and an alternative the user tries, from the replica round trips the
//! cluster measured (the control plane's Monte Carlo model).

use dyno_controlplane::staleness::Staleness;
use leptos::prelude::*;

use crate::chart::LineChart;
use crate::client::seg;
use crate::layout::Field;
use crate::session::Signed;

fn pct(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

/// The chart of `s`'s curves.
pub fn chart(s: &Staleness) -> String {
    let mut c = LineChart::new(
        "Reads that see the latest write",
        "time after the write was acknowledged (ms)",
        "reads that see it",
    );
    c.y_ticks = pct;
    c.y_range = Some((0.0, 1.0));
    for curve in &s.curves {
        let mark = if curve.current { " (this table)" } else { "" };
        c = c.series(
            format!("R={}, W={}{mark}", curve.r, curve.w),
            curve.points.clone(),
        );
    }
    c.svg()
}

/// The section, for `table`, comparing `alt` (R, W as typed).
pub async fn section(user: &Signed, table: &str, alt: (&str, &str)) -> AnyView {
    let mut path = format!("/api/v1/tables/{}/staleness", seg(table));
    let mut sep = '?';
    for (k, v) in [("r", alt.0), ("w", alt.1)] {
        if !v.trim().is_empty() {
            path.push_str(&format!("{sep}{k}={}", seg(v.trim())));
            sep = '&';
        }
    }
    let res = user.api.get::<Staleness>(&path).await;
    let failure = res.as_ref().err().cloned();
    let body = match &res {
        Ok(s) if !s.measured => view! {
            <p class="muted">"No data yet: the model needs replica round trips, which the nodes measure as they serve writes and reads. Use the table and come back in a few seconds."</p>
        }
        .into_any(),
        Ok(s) => {
            let svg = chart(s);
            let sentences = s
                .curves
                .iter()
                .map(|c| view! { <li>{c.sentence.clone()}</li> })
                .collect_view();
            let basis = format!(
                "From {} replica round trips measured on {} nodes; a round trip is split evenly between its two directions. Healthy cluster only: failures and hinted handoff are not modelled.",
                s.round_trips, s.nodes
            );
            view! {
                <ul class="sentences">{sentences}</ul>
                <figure class="chart" aria-label="Reads that see the latest write"><div inner_html=svg></div></figure>
                <p class="muted">{basis}</p>
            }
            .into_any()
        }
        Err(f) if f.field.is_some() => view! { <span></span> }.into_any(),
        Err(f) => view! { <p class="error" role="alert">{f.message.clone()}</p> }.into_any(),
    };
    let action = format!("/tables/{}", seg(table));
    view! {
        <section class="card">
            <h2>"What your N, R and W mean"</h2>
            <p class="muted">"The chance that a read returns the latest acknowledged write, by how long after the write it comes (probabilistically bounded staleness, Bailis et al., VLDB 2012). The model errs on the safe side: measured on a real cluster, reads see writes a little sooner than it says."</p>
            {body}
            <form method="get" action=action class="row">
                {Field::number("alt_r", "Try R", alt.0.to_owned(), 1, 7).view(failure.as_ref().map(|f| rename(f, "r", "alt_r")).as_ref())}
                {Field::number("alt_w", "Try W", alt.1.to_owned(), 1, 7).view(failure.as_ref().map(|f| rename(f, "w", "alt_w")).as_ref())}
                <button type="submit">"Compare"</button>
            </form>
        </section>
    }
    .into_any()
}

/// The API names the fields `r` and `w`; the form `alt_r` and `alt_w`.
fn rename(f: &crate::client::Failure, from: &str, to: &str) -> crate::client::Failure {
    let mut f = f.clone();
    if f.field.as_deref() == Some(from) {
        f.field = Some(to.to_owned());
    }
    f
}
