//! Appointments: upcoming and past, finding a free time (filters: dates, clinician,
//! visit type), booking it, cancelling with a reason, rescheduling. A slot taken by
//! someone else meanwhile is explained in words and the form comes back with fresh
//! times.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use portico_portal::appointments::{
    self, AppointmentView, CancelRequest, NewAppointment, RescheduleRequest, SlotList, SlotQuery,
    SlotView, When,
};
use serde::Deserialize;
use serde_json::json;

use super::forms::{self, Errors, FormPost, hidden, posted_key};
use super::i18n::{Lang, M};
use super::layout::{self, none, row, stale};
use super::see_other;
use super::viewer::Viewer;
use crate::error::ApiError;

/// How many free times one page offers.
const MAX_OFFERED: usize = 40;

/// When an appointment is: its start, the period asked for, or "to be arranged".
pub fn when_text(l: Lang, a: &AppointmentView) -> String {
    match (&a.start, &a.requested_start) {
        (Some(s), _) => l.date(s),
        (None, Some(r)) => l.fill(M::RequestedFor, &[("date", &l.date(r))]),
        (None, None) => l.t(M::TimeToBeArranged).to_owned(),
    }
}

fn status_text(l: Lang, status: &str) -> String {
    let m = match status {
        "booked" => M::StatusBooked,
        "cancelled" => M::StatusCancelled,
        "proposed" | "pending" => M::StatusRequested,
        "fulfilled" | "checked-in" | "arrived" => M::StatusFulfilled,
        "noshow" => M::StatusNoShow,
        _ => return status.to_owned(),
    };
    l.t(m).to_owned()
}

#[derive(Debug, Deserialize, Default)]
pub struct ListParams {
    when: Option<String>,
}

/// A page's query; one that cannot be read is taken as none (the page's defaults).
fn query<T: Default>(q: Result<Query<T>, QueryRejection>) -> T {
    q.map(|Query(q)| q).unwrap_or_default()
}

pub async fn list(v: Viewer, q: Result<Query<ListParams>, QueryRejection>) -> Response {
    let q = query(q);
    let when = match q.when.as_deref() {
        Some("past") => When::Past,
        _ => When::Upcoming,
    };
    let list = match appointments::list(v.ctx(), when).await {
        Ok(list) => list,
        Err(e) => return v.error(e).into_response(),
    };
    let l = v.lang();
    let c = &v.chrome;
    let tab = |w: When, label: M, href: &str| {
        html! {
            li { @if w == when { a href=(c.href(href)) aria-current="page" { (l.t(label)) } } @else { a href=(c.href(href)) { (l.t(label)) } } }
        }
    };
    let content = html! {
        (stale(l, list.stale))
        p { a.button href=(c.href("/appointments/find")) { (l.t(M::BookAppointment)) } }
        nav.tabs aria-label=(l.t(M::AppointmentsTabs)) {
            ul {
                (tab(When::Upcoming, M::Upcoming, "/appointments"))
                (tab(When::Past, M::Past, "/appointments?when=past"))
            }
        }
        h2 { (l.t(if when == When::Upcoming { M::Upcoming } else { M::Past })) }
        @if list.appointments.is_empty() {
            (none(l.t(if when == When::Upcoming { M::NoUpcomingVisits } else { M::NoPastVisits })))
        }
        ul.plain.appointment-list {
            @for a in &list.appointments {
                li.appointment { (appointment_card(v.chrome.lang, c, a, true)) }
            }
        }
    };
    layout::ok(c, l.t(M::AppointmentsTitle), content)
}

fn appointment_card(
    l: Lang,
    c: &super::viewer::Chrome,
    a: &AppointmentView,
    actions: bool,
) -> Markup {
    html! {
        dl.summary {
            (row(l.t(M::When), Some(&when_text(l, a))))
            (row(l.t(M::Clinician), a.practitioner.as_deref()))
            (row(l.t(M::VisitType), a.service_type.as_deref()))
            (row(l.t(M::Place), a.location.as_deref()))
            (row(l.t(M::Reason), a.reason.as_deref()))
            (row(l.t(M::ColStatus), Some(&status_text(l, &a.status))))
            (row(l.t(M::CancelReasonShown), a.cancelation_reason.as_deref()))
        }
        @if actions && a.cancelable {
            p.actions {
                @if a.status == "booked" {
                    a href=(c.href(&format!("/appointments/{}/reschedule", a.id))) { (l.t(M::Reschedule)) span.visually-hidden { " " (when_text(l, a)) } }
                    " "
                }
                a href=(c.href(&format!("/appointments/{}/cancel", a.id))) { (l.t(M::Cancel)) span.visually-hidden { " " (when_text(l, a)) } }
            }
        }
    }
}

/// The slot search's filters, as the page's query (or the form's hidden fields).
#[derive(Debug, Deserialize, Default, Clone)]
pub struct Filters {
    start: Option<String>,
    end: Option<String>,
    clinician: Option<String>,
    visit_type: Option<String>,
}

impl Filters {
    fn from_fields(f: &forms::Fields) -> Filters {
        Filters {
            start: f.text("start"),
            end: f.text("end"),
            clinician: f.text("clinician"),
            visit_type: f.text("visit_type"),
        }
    }

    fn clean(s: &Option<String>) -> Option<String> {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }
}

/// The free times in the filters' window, and the clinicians and visit types among
/// them (the choices of the filters). Clinician and visit type are matched by name on
/// the EHR's answer for the window.
async fn search(
    v: &Viewer,
    f: &Filters,
) -> Result<(SlotList, Vec<SlotView>, Vec<String>, Vec<String>), ApiError> {
    let query = SlotQuery {
        start: Filters::clean(&f.start),
        end: Filters::clean(&f.end),
        ..SlotQuery::default()
    };
    let list = appointments::search_slots(v.ctx(), &query).await?;
    let mut clinicians: Vec<String> = list
        .slots
        .iter()
        .filter_map(|s| s.practitioner.clone())
        .collect();
    clinicians.sort();
    clinicians.dedup();
    let mut types: Vec<String> = list
        .slots
        .iter()
        .filter_map(|s| s.service_type.clone())
        .collect();
    types.sort();
    types.dedup();
    let clinician = Filters::clean(&f.clinician);
    let visit_type = Filters::clean(&f.visit_type);
    let matching = list
        .slots
        .iter()
        .filter(|s| {
            clinician
                .as_deref()
                .is_none_or(|c| s.practitioner.as_deref() == Some(c))
        })
        .filter(|s| {
            visit_type
                .as_deref()
                .is_none_or(|t| s.service_type.as_deref() == Some(t))
        })
        .take(MAX_OFFERED)
        .cloned()
        .collect();
    Ok((list, matching, clinicians, types))
}

fn filters_form(
    l: Lang,
    action: &str,
    f: &Filters,
    clinicians: &[String],
    types: &[String],
    errors: &Errors,
) -> Markup {
    let any = |label: M| (String::new(), l.t(label).to_owned());
    let clinician_options: Vec<(String, String)> = std::iter::once(any(M::AnyClinician))
        .chain(clinicians.iter().map(|c| (c.clone(), c.clone())))
        .collect();
    let type_options: Vec<(String, String)> = std::iter::once(any(M::AnyVisitType))
        .chain(types.iter().map(|c| (c.clone(), c.clone())))
        .collect();
    html! {
        form.filters method="get" action=(action) {
            fieldset.fieldset {
                legend.legend { (l.t(M::FindFilters)) }
                div.filter-row {
                    (forms::input(l, "start", "date", l.t(M::From), Some(l.t(M::DateHint)), f.start.as_deref().unwrap_or(""), errors, "input-date"))
                    (forms::input(l, "end", "date", l.t(M::To), Some(l.t(M::DateHint)), f.end.as_deref().unwrap_or(""), errors, "input-date"))
                    (forms::select(l, "clinician", l.t(M::Clinician), &clinician_options, f.clinician.as_deref().unwrap_or(""), errors))
                    (forms::select(l, "visit_type", l.t(M::VisitType), &type_options, f.visit_type.as_deref().unwrap_or(""), errors))
                }
                button.button.button-secondary type="submit" { (l.t(M::Search)) }
            }
        }
    }
}

fn slot_label(l: Lang, s: &SlotView) -> (String, Option<String>) {
    let when = l.date(&s.start);
    let who: Vec<&str> = [
        s.practitioner.as_deref(),
        s.service_type.as_deref(),
        s.location.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    (when, (!who.is_empty()).then(|| who.join(" · ")))
}

fn filter_hidden(f: &Filters) -> Markup {
    html! {
        @for (name, value) in [("start", &f.start), ("end", &f.end), ("clinician", &f.clinician), ("visit_type", &f.visit_type)] {
            @if let Some(v) = value { input type="hidden" name=(name) value=(v); }
        }
    }
}

/// The times form: a radio per free time, a reason, the hidden filters.
#[allow(clippy::too_many_arguments)]
fn times_form(
    v: &Viewer,
    action: &str,
    slots: &[SlotView],
    truncated: bool,
    f: &Filters,
    fields: &forms::Fields,
    key: &str,
    errors: &Errors,
    submit: M,
) -> Markup {
    let l = v.lang();
    let options: Vec<(String, String, Option<String>)> = slots
        .iter()
        .map(|s| {
            let (when, hint) = slot_label(l, s);
            (s.id.clone(), when, hint)
        })
        .collect();
    html! {
        @if slots.is_empty() {
            (none(l.t(M::NoFreeTimes)))
        } @else {
            form method="post" action=(action) novalidate {
                (hidden(v, Some(key)))
                (filter_hidden(f))
                (forms::radios(l, "slot_id", l.t(M::ChooseTime), &options, &fields.value("slot_id"), errors))
                @if truncated || slots.len() >= MAX_OFFERED { p.hint { (l.t(M::MoreTimes)) } }
                (forms::textarea(l, "reason", l.t(M::ReasonOptional), Some(l.t(M::ReasonHint)), &fields.value("reason"), errors))
                button.button type="submit" { (l.t(submit)) }
            }
        }
    }
}

pub async fn find(v: Viewer, f: Result<Query<Filters>, QueryRejection>) -> Response {
    let f = query(f);
    find_page(
        &v,
        &f,
        &forms::Fields::default(),
        &forms::new_key(),
        Errors::default(),
        StatusCode::OK,
    )
    .await
}

async fn find_page(
    v: &Viewer,
    f: &Filters,
    fields: &forms::Fields,
    key: &str,
    mut errors: Errors,
    status: StatusCode,
) -> Response {
    let l = v.lang();
    let c = &v.chrome;
    let (list, slots, clinicians, types) = match search(v, f).await {
        Ok(found) => found,
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            // A bad window: said next to the dates, the rest of the page still usable.
            errors.add(Some("start"), super::errors::sentence(l, &e));
            let empty = SlotList {
                slots: vec![],
                window_start: String::new(),
                window_end: String::new(),
                truncated: false,
                stale: false,
            };
            (empty, vec![], vec![], vec![])
        }
        Err(e) => return v.error(e).into_response(),
    };
    let title = errors.title(l, l.t(M::FindTitle));
    let content = html! {
        (forms::summary(l, &errors))
        (stale(l, list.stale))
        p.lead { (l.t(M::FindLead)) }
        (filters_form(l, &c.href("/appointments/find"), f, &clinicians, &types, &errors))
        h2 { (l.t(M::FreeTimes)) }
        @if !list.window_start.is_empty() {
            p.hint { (l.fill(M::WindowText, &[("start", &l.day(&list.window_start)), ("end", &l.day(&list.window_end))])) }
        }
        (times_form(v, &c.href("/appointments/book"), &slots, list.truncated, f, fields, key, &errors, M::Book))
    };
    layout::respond(c, status, &title, content)
}

pub async fn book(form: FormPost) -> Response {
    let FormPost { viewer: v, fields } = form;
    let l = v.lang();
    let filters = Filters::from_fields(&fields);
    let key = posted_key(&fields);
    let Some(slot_id) = fields.text("slot_id") else {
        let mut errors = Errors::default();
        errors.add(Some("slot_id"), l.t(M::ErrChooseTime));
        return find_page(
            &v,
            &filters,
            &fields,
            &key,
            errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let new = NewAppointment {
        slot_id: Some(slot_id),
        reason: fields.text("reason"),
        comment: None,
        requested_start: None,
        requested_end: None,
        service_type: None,
    };
    let fingerprint = json!(new);
    match forms::run(
        &v,
        &fields,
        "book",
        &fingerprint,
        StatusCode::CREATED,
        async |ctx, idem| appointments::book(ctx, &new, idem).await,
    )
    .await
    {
        Ok(_) => see_other(&v.chrome.base, "/appointments?done=booked"),
        Err(e) => {
            let field = match e.code {
                "slot_unavailable" | "not_found" => Some("slot_id"),
                "text_too_long" => Some("reason"),
                _ => None,
            };
            let status = Errors::status(&e);
            find_page(
                &v,
                &filters,
                &fields,
                &key,
                Errors::from_api(l, field, &e),
                status,
            )
            .await
        }
    }
}

async fn load(v: &Viewer, id: &str) -> Result<AppointmentView, Response> {
    appointments::get(v.ctx(), id)
        .await
        .map_err(|e| v.error(e).into_response())
}

pub async fn cancel_form(v: Viewer, Path(id): Path<String>) -> Response {
    match load(&v, &id).await {
        Ok(a) => cancel_page(
            &v,
            &a,
            &forms::Fields::default(),
            &forms::new_key(),
            Errors::default(),
            StatusCode::OK,
        ),
        Err(r) => r,
    }
}

fn cancel_page(
    v: &Viewer,
    a: &AppointmentView,
    fields: &forms::Fields,
    key: &str,
    errors: Errors,
    status: StatusCode,
) -> Response {
    let l = v.lang();
    let c = &v.chrome;
    let title = errors.title(l, l.t(M::CancelTitle));
    let content = html! {
        (forms::summary(l, &errors))
        (appointment_card(l, c, a, false))
        @if a.cancelable {
            form method="post" action=(c.href(&format!("/appointments/{}/cancel", a.id))) novalidate {
                (hidden(v, Some(key)))
                (forms::textarea(l, "reason", l.t(M::CancelReason), Some(l.t(M::CancelReasonHint)), &fields.value("reason"), &errors))
                div.button-group {
                    button.button.button-warning type="submit" { (l.t(M::ConfirmCancel)) }
                    a href=(c.href("/appointments")) { (l.t(M::KeepAppointment)) }
                }
            }
        } @else {
            p { (l.t(M::ErrNotCancelable)) }
            p { a href=(c.href("/appointments")) { (l.t(M::BackToAppointments)) } }
        }
    };
    layout::respond(c, status, &title, content)
}

pub async fn cancel(Path(id): Path<String>, form: FormPost) -> Response {
    let FormPost { viewer: v, fields } = form;
    let l = v.lang();
    let key = posted_key(&fields);
    let request = CancelRequest {
        reason: fields.text("reason"),
    };
    let fingerprint = json!({"appointment": id, "body": request});
    match forms::run(
        &v,
        &fields,
        "cancel",
        &fingerprint,
        StatusCode::OK,
        async |ctx, idem| appointments::cancel(ctx, &id, &request, idem).await,
    )
    .await
    {
        Ok(_) => see_other(&v.chrome.base, "/appointments?done=cancelled"),
        Err(e) if e.status == StatusCode::NOT_FOUND => v.error(e).into_response(),
        Err(e) => match load(&v, &id).await {
            Ok(a) => {
                let field = (e.code == "text_too_long").then_some("reason");
                cancel_page(
                    &v,
                    &a,
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

pub async fn reschedule_form(
    v: Viewer,
    Path(id): Path<String>,
    f: Result<Query<Filters>, QueryRejection>,
) -> Response {
    let f = query(f);
    match load(&v, &id).await {
        Ok(a) => {
            reschedule_page(
                &v,
                &a,
                &f,
                &forms::Fields::default(),
                &forms::new_key(),
                Errors::default(),
                StatusCode::OK,
            )
            .await
        }
        Err(r) => r,
    }
}

async fn reschedule_page(
    v: &Viewer,
    a: &AppointmentView,
    f: &Filters,
    fields: &forms::Fields,
    key: &str,
    mut errors: Errors,
    status: StatusCode,
) -> Response {
    let l = v.lang();
    let c = &v.chrome;
    let here = c.href(&format!("/appointments/{}/reschedule", a.id));
    let (list, slots, clinicians, types) = match search(v, f).await {
        Ok(found) => found,
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            errors.add(Some("start"), super::errors::sentence(l, &e));
            let empty = SlotList {
                slots: vec![],
                window_start: String::new(),
                window_end: String::new(),
                truncated: false,
                stale: false,
            };
            (empty, vec![], vec![], vec![])
        }
        Err(e) => return v.error(e).into_response(),
    };
    let title = errors.title(l, l.t(M::RescheduleTitle));
    let content = html! {
        (forms::summary(l, &errors))
        h2 { (l.t(M::CurrentAppointment)) }
        (appointment_card(l, c, a, false))
        @if a.cancelable && a.status == "booked" {
            h2 { (l.t(M::ChooseNewTime)) }
            (filters_form(l, &here, f, &clinicians, &types, &errors))
            (times_form(v, &here, &slots, list.truncated, f, fields, key, &errors, M::ConfirmReschedule))
        } @else {
            p { (l.t(M::ErrNotCancelable)) }
        }
        p { a href=(c.href("/appointments")) { (l.t(M::BackToAppointments)) } }
    };
    layout::respond(c, status, &title, content)
}

pub async fn reschedule(Path(id): Path<String>, form: FormPost) -> Response {
    let FormPost { viewer: v, fields } = form;
    let l = v.lang();
    let filters = Filters::from_fields(&fields);
    let key = posted_key(&fields);
    let a = match load(&v, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(slot_id) = fields.text("slot_id") else {
        let mut errors = Errors::default();
        errors.add(Some("slot_id"), l.t(M::ErrChooseTime));
        return reschedule_page(
            &v,
            &a,
            &filters,
            &fields,
            &key,
            errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let request = RescheduleRequest {
        slot_id,
        reason: fields.text("reason"),
    };
    let fingerprint = json!({"appointment": id, "body": request});
    match forms::run(
        &v,
        &fields,
        "reschedule",
        &fingerprint,
        StatusCode::OK,
        async |ctx, idem| appointments::reschedule(ctx, &id, &request, idem).await,
    )
    .await
    {
        Ok(_) => see_other(&v.chrome.base, "/appointments?done=rescheduled"),
        Err(e) => {
            let field = match e.code {
                "slot_unavailable" => Some("slot_id"),
                "text_too_long" => Some("reason"),
                _ => None,
            };
            let a = match load(&v, &id).await {
                Ok(a) => a,
                Err(r) => return r,
            };
            let status = Errors::status(&e);
            reschedule_page(
                &v,
                &a,
                &filters,
                &fields,
                &key,
                Errors::from_api(l, field, &e),
                status,
            )
            .await
        }
    }
}
