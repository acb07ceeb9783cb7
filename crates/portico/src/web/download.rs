//! Download my record: the whole record as a FHIR Bundle (the facade's guarded
//! `$everything`, through `portico_guard::Session::everything` with the portal
//! caller's actor — the same narrowing, verification and audit as `/fhir`), and a
//! printable summary (the print stylesheet hides the navigation).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use portico_guard::Actor;
use portico_portal::PortalError;
use portico_portal::records::{self, Kind};

use super::i18n::M;
use super::layout::{self, none, row};
use super::record::{kind_name, result_value};
use super::viewer::Viewer;

/// Entries per type, as the facade allows.
const MAX_COUNT: u32 = 1000;

/// The kinds the printable summary shows.
const SUMMARY: [Kind; 5] = [
    Kind::Allergies,
    Kind::Conditions,
    Kind::Medications,
    Kind::Immunizations,
    Kind::LabResults,
];

pub async fn index(v: Viewer) -> Response {
    let l = v.lang();
    let c = &v.chrome;
    let content = html! {
        p.lead { (l.t(M::DownloadLead)) }
        h2 { (l.t(M::DownloadFhirTitle)) }
        p { (l.t(M::DownloadFhirText)) }
        p { a.button href=(c.href("/download/record.json")) download="health-record.json" { (l.t(M::DownloadFhir)) } }
        h2 { (l.t(M::SummaryTitle)) }
        p { (l.t(M::SummaryText)) }
        p { a href=(c.href("/download/summary")) { (l.t(M::OpenSummary)) } }
    };
    layout::ok(c, l.t(M::DownloadTitle), content)
}

pub async fn bundle(v: Viewer) -> Response {
    let caller = &v.caller;
    let principal = &caller.auth.principal;
    let patient = &caller.caller.patient;
    let mut actor =
        Actor::acting_for(principal, patient).with_request_id(caller.auth.request_id.clone());
    if v.state.passthrough() {
        actor = actor.with_bearer(Some(caller.auth.token.clone()));
    }
    let verified = match v
        .state
        .guard()
        .session(&actor)
        .everything(patient, portico_guard::EVERYTHING_TYPES, MAX_COUNT)
        .await
    {
        Ok(verified) => verified,
        Err(e) => return v.error(PortalError::from(e)).into_response(),
    };
    let body = match serde_json::to_vec_pretty(&verified.bundle) {
        Ok(b) => v.state.rewrite_bases_bytes(b),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"health-record.json\""),
    );
    response
}

pub async fn summary(v: Viewer) -> Response {
    let ctx = v.ctx();
    let me = portico_portal::me::me(ctx);
    let lists = futures::future::join_all(SUMMARY.iter().map(|k| records::list(ctx, *k, 50, None)));
    let (me, lists) = tokio::join!(me, lists);
    let me = match me {
        Ok(me) => me,
        Err(e) => return v.error(e).into_response(),
    };
    let l = v.lang();
    let c = &v.chrome;
    let content = html! {
        p.no-print { button.button.button-secondary type="button" data-print hidden { (l.t(M::Print)) } " " span.hint { (l.t(M::PrintHint)) } }
        dl.summary {
            (row(l.t(M::Name), me.name.as_deref()))
            (row(l.t(M::BirthDate), me.birth_date.as_deref().map(|d| l.date(d)).as_deref()))
            (row(l.t(M::Gender), me.gender.as_deref()))
        }
        @for (kind, list) in SUMMARY.iter().zip(lists.iter()) {
            section.summary-section aria-labelledby=(format!("s-{}", kind.as_str())) {
                h2 id=(format!("s-{}", kind.as_str())) { (l.t(kind_name(*kind))) }
                @match list {
                    Ok((list, _)) if list.items.is_empty() => (none(l.t(M::NoEntries))),
                    Ok((list, _)) => ul {
                        @for r in list.items.iter().take(if *kind == Kind::LabResults { 20 } else { 50 }) {
                            li {
                                (r.title.as_deref().unwrap_or("—"))
                                @let value = result_value(l, r);
                                @if !value.is_empty() { ": " (value) }
                                @if let Some(d) = &r.date { " (" (l.day(d)) ")" }
                                @if let Some(s) = &r.status { " — " (s) }
                            }
                        }
                    },
                    Err(_) => p { (l.t(M::SectionUnavailable)) },
                }
            }
        }
        p.hint { (l.fill(M::PrintedOn, &[("date", &l.date(&chrono::Utc::now().to_rfc3339()))])) }
    };
    layout::ok(c, l.t(M::SummaryTitle), content)
}
