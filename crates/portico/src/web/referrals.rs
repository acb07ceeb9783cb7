//! Referrals: the patient's referral requests with their status, and a form to ask for
//! one (a specialty from the EHR profile's list, a reason, notes).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use portico_portal::referrals::{self, ReferralInput};
use serde_json::json;

use super::forms::{self, Errors, FormPost, hidden, posted_key};
use super::i18n::{Lang, M};
use super::layout::{self, none, stale};
use super::see_other;
use super::viewer::Viewer;

fn status_text(l: Lang, status: Option<&str>) -> String {
    let m = match status {
        Some("draft") => M::ReferralDraft,
        Some("active") => M::ReferralActive,
        Some("on-hold") => M::ReferralOnHold,
        Some("completed") => M::ReferralCompleted,
        Some("revoked") => M::ReferralRevoked,
        Some("in-progress") | Some("preparation") => M::ReferralActive,
        Some(other) => return other.to_owned(),
        None => M::RefillStatusUnknown,
    };
    l.t(m).to_owned()
}

pub async fn list(v: Viewer) -> Response {
    let list = match referrals::list(v.ctx()).await {
        Ok(r) => r,
        Err(e) => return v.error(e).into_response(),
    };
    let l = v.lang();
    let c = &v.chrome;
    let content = html! {
        (stale(l, list.stale))
        p { a.button href=(c.href("/referrals/new")) { (l.t(M::RequestReferral)) } }
        h2 { (l.t(M::YourReferrals)) }
        @if list.items.is_empty() { (none(l.t(M::NoReferrals))) } @else {
            div.table-wrap { table.table {
                caption.visually-hidden { (l.t(M::YourReferrals)) }
                thead { tr {
                    th scope="col" { (l.t(M::Specialty)) }
                    th scope="col" { (l.t(M::Reason)) }
                    th scope="col" { (l.t(M::ColDate)) }
                    th scope="col" { (l.t(M::ColStatus)) }
                } }
                tbody {
                    @for r in &list.items {
                        tr {
                            td { (r.specialty.as_ref().map_or("—", |s| s.display.as_str())) }
                            td { (r.reason.as_deref().unwrap_or("")) }
                            td { @if let Some(d) = &r.created { (l.date(d)) } }
                            td { (status_text(l, r.status.as_deref())) }
                        }
                    }
                }
            } }
        }
    };
    layout::ok(c, l.t(M::ReferralsTitle), content)
}

pub async fn new_form(v: Viewer) -> Response {
    form_page(
        &v,
        &forms::Fields::default(),
        &forms::new_key(),
        Errors::default(),
        StatusCode::OK,
    )
}

fn form_page(
    v: &Viewer,
    fields: &forms::Fields,
    key: &str,
    errors: Errors,
    status: StatusCode,
) -> Response {
    let l = v.lang();
    let c = &v.chrome;
    let specialties = referrals::specialties(v.ctx());
    let options: Vec<(String, String)> =
        std::iter::once((String::new(), l.t(M::ChooseSpecialty).to_owned()))
            .chain(
                specialties
                    .items
                    .iter()
                    .map(|s| (s.code.clone(), s.display.clone())),
            )
            .collect();
    let title = errors.title(l, l.t(M::RequestReferral));
    let content = html! {
        (forms::summary(l, &errors))
        form method="post" action=(c.href("/referrals")) novalidate {
            (hidden(v, Some(key)))
            (forms::select(l, "specialty", l.t(M::Specialty), &options, &fields.value("specialty"), &errors))
            (forms::textarea(l, "reason", l.t(M::ReferralReason), Some(l.t(M::ReferralReasonHint)), &fields.value("reason"), &errors))
            (forms::textarea(l, "notes", l.t(M::NotesOptional), None, &fields.value("notes"), &errors))
            div.button-group {
                button.button type="submit" { (l.t(M::SendReferral)) }
                a href=(c.href("/referrals")) { (l.t(M::BackToReferrals)) }
            }
        }
    };
    layout::respond(c, status, &title, content)
}

pub async fn request(form: FormPost) -> Response {
    let FormPost { viewer: v, fields } = form;
    let l = v.lang();
    let key = posted_key(&fields);
    let mut errors = Errors::default();
    let specialty = fields.text("specialty");
    let reason = fields.text("reason");
    if specialty.is_none() {
        errors.add(Some("specialty"), l.t(M::ErrChooseSpecialty));
    }
    if reason.is_none() {
        errors.add(Some("reason"), l.t(M::ErrEnterReason));
    }
    let (Some(specialty), Some(reason)) = (specialty, reason) else {
        return form_page(&v, &fields, &key, errors, StatusCode::UNPROCESSABLE_ENTITY);
    };
    let input = ReferralInput {
        specialty,
        reason,
        notes: fields.text("notes"),
    };
    let fingerprint = json!(input);
    match forms::run(
        &v,
        &fields,
        "referral",
        &fingerprint,
        StatusCode::CREATED,
        async |ctx, idem| referrals::request_referral(ctx, &input, idem).await,
    )
    .await
    {
        Ok(_) => see_other(&v.chrome.base, "/referrals?done=referral"),
        Err(e) => {
            let field = match e.code {
                "specialty_not_allowed" => Some("specialty"),
                "text_too_long" => Some("reason"),
                _ => None,
            };
            form_page(
                &v,
                &fields,
                &key,
                Errors::from_api(l, field, &e),
                Errors::status(&e),
            )
        }
    }
}
