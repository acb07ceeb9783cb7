//! Medications: the prescriptions with whether a refill can be asked for now (and why
//! not, in words), the refill request form, and the refill requests with their status.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use portico_portal::medications::{self, Medication, RefillInput, RefillRequestStatus};
use serde_json::json;

use super::errors::refill_reason;
use super::forms::{self, Errors, FormPost, hidden, posted_key};
use super::i18n::{Lang, M};
use super::layout::{self, none, row, stale};
use super::see_other;
use super::viewer::Viewer;
use crate::error::ApiError;

fn request_status(l: Lang, s: RefillRequestStatus) -> &'static str {
    l.t(match s {
        RefillRequestStatus::Requested => M::RefillStatusRequested,
        RefillRequestStatus::Accepted => M::RefillStatusAccepted,
        RefillRequestStatus::InProgress => M::RefillStatusInProgress,
        RefillRequestStatus::Completed => M::RefillStatusCompleted,
        RefillRequestStatus::Rejected => M::RefillStatusRejected,
        RefillRequestStatus::Cancelled => M::RefillStatusCancelled,
        RefillRequestStatus::Unknown => M::RefillStatusUnknown,
    })
}

/// Why a refill cannot be asked for now, in words.
fn why_not(l: Lang, m: &Medication) -> String {
    let reason = m
        .refill
        .reason
        .map_or(M::ReasonOther, |r| refill_reason(r.code()));
    let mut text = l.t(reason).to_owned();
    if let Some(next) = &m.next_eligible {
        text.push(' ');
        text.push_str(&l.fill(M::NextEligible, &[("date", &l.day(next))]));
    }
    text
}

pub async fn list(v: Viewer) -> Response {
    let ctx = v.ctx();
    let (meds, requests) = tokio::join!(medications::list(ctx), medications::refill_requests(ctx));
    let meds = match meds {
        Ok(m) => m,
        Err(e) => return v.error(e).into_response(),
    };
    let l = v.lang();
    let c = &v.chrome;
    let content = html! {
        (stale(l, meds.stale))
        h2 { (l.t(M::YourMedications)) }
        @if meds.items.is_empty() { (none(l.t(M::NoMedications))) }
        ul.plain.med-list {
            @for m in &meds.items {
                li.card {
                    h3 { (m.medication.as_deref().unwrap_or(l.t(M::UnnamedMedication))) }
                    dl.summary {
                        (row(l.t(M::Dosage), m.dosage.as_deref()))
                        (row(l.t(M::Prescriber), m.prescriber.as_deref()))
                        (row(l.t(M::RefillsLeft), m.refills_left.map(|n| n.to_string()).as_deref()))
                        (row(l.t(M::LastFilled), m.last_dispensed.as_deref().map(|d| l.day(d)).as_deref()))
                    }
                    @if m.refill.eligible {
                        p { a.button href=(c.href(&format!("/medications/{}/refill", m.id))) { (l.t(M::RequestRefill)) span.visually-hidden { ": " (m.medication.as_deref().unwrap_or("")) } } }
                    } @else {
                        p.refill-reason { strong { (l.t(M::RefillNotNow)) } " " (why_not(l, m)) }
                    }
                }
            }
        }
        h2 { (l.t(M::RefillRequests)) }
        @match &requests {
            Ok(r) if r.items.is_empty() => (none(l.t(M::NoRefillRequests))),
            Ok(r) => {
                div.table-wrap { table.table {
                    caption.visually-hidden { (l.t(M::RefillRequests)) }
                    thead { tr { th scope="col" { (l.t(M::ColName)) } th scope="col" { (l.t(M::ColDate)) } th scope="col" { (l.t(M::ColStatus)) } } }
                    tbody {
                        @for q in &r.items {
                            tr {
                                td { (q.medication.as_deref().unwrap_or("—")) }
                                td { @if let Some(d) = &q.created { (l.date(d)) } }
                                td { (request_status(l, q.status)) }
                            }
                        }
                    }
                } }
            }
            Err(_) => p { (l.t(M::SectionUnavailable)) },
        }
    };
    layout::ok(c, l.t(M::MedicationsTitle), content)
}

async fn find(v: &Viewer, id: &str) -> Result<Medication, Response> {
    let meds = medications::list(v.ctx())
        .await
        .map_err(|e| v.error(e).into_response())?;
    meds.items
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| v.error(ApiError::not_found()).into_response())
}

pub async fn refill_form(v: Viewer, Path(id): Path<String>) -> Response {
    match find(&v, &id).await {
        Ok(m) => refill_page(
            &v,
            &m,
            &forms::Fields::default(),
            &forms::new_key(),
            Errors::default(),
            StatusCode::OK,
        ),
        Err(r) => r,
    }
}

fn refill_page(
    v: &Viewer,
    m: &Medication,
    fields: &forms::Fields,
    key: &str,
    errors: Errors,
    status: StatusCode,
) -> Response {
    let l = v.lang();
    let c = &v.chrome;
    let title = errors.title(l, l.t(M::RefillTitle));
    let content = html! {
        (forms::summary(l, &errors))
        dl.summary {
            (row(l.t(M::Medication), m.medication.as_deref()))
            (row(l.t(M::Dosage), m.dosage.as_deref()))
            (row(l.t(M::RefillsLeft), m.refills_left.map(|n| n.to_string()).as_deref()))
        }
        @if !m.refill.eligible && errors.is_empty() {
            div.banner.banner-warning role="note" { p { strong { (l.t(M::RefillNotNow)) } " " (why_not(l, m)) } }
        }
        form method="post" action=(c.href(&format!("/medications/{}/refill", m.id))) novalidate {
            (hidden(v, Some(key)))
            (forms::input(l, "pharmacy", "text", l.t(M::PharmacyOptional), Some(l.t(M::PharmacyHint)), &fields.value("pharmacy"), &errors, ""))
            (forms::textarea(l, "note", l.t(M::NoteOptional), None, &fields.value("note"), &errors))
            div.button-group {
                button.button type="submit" { (l.t(M::SendRefillRequest)) }
                a href=(c.href("/medications")) { (l.t(M::BackToMedications)) }
            }
        }
    };
    layout::respond(c, status, &title, content)
}

pub async fn refill(Path(id): Path<String>, form: FormPost) -> Response {
    let FormPost { viewer: v, fields } = form;
    let l = v.lang();
    let key = posted_key(&fields);
    let input = RefillInput {
        note: fields.text("note"),
        pharmacy: fields.text("pharmacy"),
    };
    let fingerprint = json!({"medication_request": id, "body": input});
    match forms::run(
        &v,
        &fields,
        "refill",
        &fingerprint,
        StatusCode::CREATED,
        async |ctx, idem| medications::request_refill(ctx, &id, &input, idem).await,
    )
    .await
    {
        Ok(_) => see_other(&v.chrome.base, "/medications?done=refill"),
        Err(e) if e.status == StatusCode::NOT_FOUND => v.error(e).into_response(),
        Err(e) => match find(&v, &id).await {
            Ok(m) => {
                let field = (e.code == "text_too_long").then_some("note");
                refill_page(
                    &v,
                    &m,
                    &fields,
                    &key,
                    Errors::from_api(l, field, &e),
                    Errors::status(&e),
                )
            }
            Err(r) => r,
        },
    }
}
