//! Home: what needs the patient's attention (the API's dashboard): upcoming visits,
//! refills that can be requested, unread messages, the balance due and new results.
//! Anonymous visitors get the sign-in page.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use portico_portal::dashboard::{self, Dashboard};

use super::appointments::when_text;
use super::errors::sign_in_page;
use super::i18n::M;
use super::layout::{self, none, stale};
use super::record::result_value;
use super::viewer::{Chrome, Viewer};
use crate::state::AppState;

pub async fn home(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let viewer = match Viewer::from_request_parts(&mut parts, &state).await {
        Ok(v) => v,
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
            return sign_in_page(&Chrome::of(&parts, &state), StatusCode::OK);
        }
        Err(e) => return e.into_response(),
    };
    match dashboard::dashboard(viewer.ctx()).await {
        Ok(d) => render(&viewer, &d),
        Err(e) => viewer.error(e).into_response(),
    }
}

fn render(v: &Viewer, d: &Dashboard) -> Response {
    let c = &v.chrome;
    let l = v.lang();
    let unavailable = |name: &str| d.unavailable.iter().any(|u| u == name);
    let refills: Vec<_> = d
        .medications
        .iter()
        .flatten()
        .filter(|m| m.refill.eligible)
        .collect();
    let content = html! {
        (stale(l, d.stale))
        p.lead { (l.t(M::HomeLead)) }
        div.cards {
            section.card aria-labelledby="h-visits" {
                h2 #h-visits { (l.t(M::UpcomingVisits)) }
                @if unavailable("appointments") {
                    p { (l.t(M::SectionUnavailable)) }
                } @else if let Some(list) = &d.upcoming_appointments {
                    @if list.is_empty() { (none(l.t(M::NoUpcomingVisits))) }
                    ul.plain {
                        @for a in list {
                            li {
                                strong { (when_text(l, a)) }
                                @if let Some(p) = &a.practitioner { br; (p) }
                                @if let Some(t) = &a.service_type { br; span.hint { (t) } }
                            }
                        }
                    }
                }
                p { a href=(c.href("/appointments/find")) { (l.t(M::BookAppointment)) } }
            }
            section.card aria-labelledby="h-refills" {
                h2 #h-refills { (l.t(M::RefillsDue)) }
                @if unavailable("medications") {
                    p { (l.t(M::SectionUnavailable)) }
                } @else if refills.is_empty() {
                    (none(l.t(M::NoRefillsDue)))
                } @else {
                    ul.plain {
                        @for m in &refills {
                            li {
                                (m.medication.as_deref().unwrap_or(l.t(M::UnnamedMedication)))
                                " — "
                                a href=(c.href(&format!("/medications/{}/refill", m.id))) { (l.t(M::RequestRefill)) }
                            }
                        }
                    }
                }
            }
            section.card aria-labelledby="h-messages" {
                h2 #h-messages { (l.t(M::NavMessages)) }
                @if unavailable("messages") {
                    p { (l.t(M::SectionUnavailable)) }
                } @else if let Some(unread) = d.unread_messages {
                    p { (l.fill(M::UnreadCount, &[("count", &unread.to_string())])) }
                }
                p { a href=(c.href("/messages")) { (l.t(M::GoToMessages)) } }
            }
            section.card aria-labelledby="h-bills" {
                h2 #h-bills { (l.t(M::BalanceDue)) }
                @if unavailable("bills") {
                    p { (l.t(M::SectionUnavailable)) }
                } @else if let Some(b) = &d.balance_due {
                    p.big { (l.money(b)) }
                } @else {
                    (none(l.t(M::NoBalance)))
                }
                p { a href=(c.href("/bills")) { (l.t(M::GoToBills)) } }
            }
            section.card aria-labelledby="h-results" {
                h2 #h-results { (l.t(M::NewResults)) }
                @if unavailable("results") {
                    p { (l.t(M::SectionUnavailable)) }
                } @else if let Some(results) = &d.recent_results {
                    @if results.is_empty() { (none(l.t(M::NoResults))) }
                    ul.plain {
                        @for r in results {
                            li {
                                (r.title.as_deref().unwrap_or("—")) ": " (result_value(l, r))
                                @if let Some(date) = &r.date { " " span.hint { "(" (l.day(date)) ")" } }
                            }
                        }
                    }
                }
                p { a href=(c.href("/record/lab-results")) { (l.t(M::SeeAllResults)) } }
            }
        }
    };
    layout::ok(c, l.t(M::HomeTitle), content)
}
