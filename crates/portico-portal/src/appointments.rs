//! Appointments: list, slot search, book, cancel, reschedule.
//!
//! FHIR mapping (see `notes/fhir-portal-workflows.md` §1):
//! - list: `Appointment?date=ge<now>` (upcoming, soonest first; plus proposed requests
//!   without a start) or `date=lt<now>` (past, newest first), narrowed to the patient;
//! - slots: `Schedule?actor=` resolves a practitioner/location to its Schedules (the
//!   sandbox has no chained search), then
//!   `Slot?status=free&start=ge..&start=lt..&schedule=..&_include=Slot:schedule` in a
//!   bounded window;
//! - book (`slot` strategy): under the gateway lock `slot:<id>`, re-read the Slot (free
//!   and in the future, else `slot_unavailable`), then create a `booked` Appointment
//!   with the patient `accepted` and the Schedule's actors; the EHR stays the arbiter
//!   (its 409 is `slot_unavailable` too). `request` strategy: a `proposed`
//!   Appointment with `requestedPeriod`. `operations` strategy (IHE ITI Scheduling R4,
//!   Epic-like): the slot search is `POST Appointment/$find` and its proposed
//!   Appointments are the "slots" (their ids are what the patient books); booking is
//!   `POST Appointment/$book` with `appointment-reference`, allowed only for a proposed
//!   appointment this gateway offered the patient (or one in their record), checked
//!   against the patient write rules first, exactly once per key (an earlier booking
//!   found by id or identifier is returned instead of booking again);
//! - cancel: JSON Patch (or PUT) `status=cancelled` + `cancelationReason` `pat`, with
//!   `If-Match`, one re-read and retry on a version conflict;
//! - reschedule (`book-then-cancel`): book the new slot, cancel the old appointment;
//!   when the cancel fails, cancel the new booking again and say exactly what is left.
//!   `patch-slot` (Cerner): one JSON Patch of the same Appointment replacing `/slot`,
//!   `/start`, `/end` and adding the `reschedule-reason` extension, with `If-Match`,
//!   under the gateway locks of both slots; the patient write rules allow patients only
//!   to cancel, so it goes through [`Ctx::patch_with_rule`] with
//!   [`reschedule_rule`] (only the slot, its time and the extension may change).
//!
//! Appointments are read by search (`Appointment?_id=`) rather than by read: the
//! compartment narrowing makes another patient's id simply match nothing (404), and the
//! version comes with it (`meta.versionId`).

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::context::{Ctx, Page, Versioned, outcome_unknown};
use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::input::{Text, check_id, check_token};
use crate::me::display_name;
use crate::profile::{BookStrategy, CancelStrategy, RescheduleStrategy};
use crate::view::{array, concept_text, first_concept_text, instant, parse_datetime, str_at};
use portico_access::Interaction;
use portico_upstream::UpstreamError;

/// The cancellation reason code system (R4, binding strength example).
pub const CANCELLATION_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason";
/// The longest reason or comment a patient may give, in characters.
pub const MAX_TEXT_CHARS: usize = 500;
/// The most appointments one list shows.
pub const MAX_LISTED: usize = 100;
/// The most slots one search shows.
pub const MAX_SLOTS: usize = 200;
/// The default slot-search window, in days.
pub const DEFAULT_WINDOW_DAYS: i64 = 14;

/// Cerner's extension carrying why an appointment was rescheduled.
pub const RESCHEDULE_REASON_URL: &str =
    "https://fhir-ehr.cerner.com/r4/StructureDefinition/reschedule-reason";
/// Cerner's extension saying whether an appointment may be rescheduled.
pub const IS_RESCHEDULABLE_URL: &str =
    "https://fhir-ehr.cerner.com/r4/StructureDefinition/is-reschedulable";

/// Statuses from which a patient may cancel (or reschedule).
const CANCELABLE: &[&str] = &["booked", "proposed", "pending"];

// ---------------------------------------------------------------------------------
// Views and requests

/// One appointment, as the portal shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppointmentView {
    pub id: String,
    /// FHIR appointment status: proposed, pending, booked, arrived, fulfilled,
    /// cancelled, noshow, entered-in-error, checked-in, waitlist.
    pub status: String,
    /// Start (an instant); absent for a request that has no time yet.
    pub start: Option<String>,
    pub end: Option<String>,
    /// The requested period of a request without a time yet.
    pub requested_start: Option<String>,
    pub requested_end: Option<String>,
    /// The kind of visit (service type text).
    pub service_type: Option<String>,
    pub description: Option<String>,
    pub reason: Option<String>,
    pub practitioner: Option<String>,
    pub location: Option<String>,
    /// The cancellation reason's text or code, for a cancelled appointment.
    pub cancelation_reason: Option<String>,
    /// Whether the patient may cancel or reschedule it now.
    pub cancelable: bool,
    /// The EHR's version of the appointment.
    pub version: Option<String>,
}

/// The patient's appointments.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppointmentList {
    pub appointments: Vec<AppointmentView>,
    /// More appointments exist than are shown.
    pub truncated: bool,
    /// Some of it was served from the gateway's cache because the EHR is failing.
    pub stale: bool,
}

/// A bookable slot.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlotView {
    /// What to book (`slot_id`): a Slot id; with an EHR that schedules through
    /// `Appointment/$find` and `$book` (profile `book = "operations"`), the id of a
    /// proposed Appointment the EHR offered.
    pub id: String,
    pub start: String,
    pub end: Option<String>,
    pub service_type: Option<String>,
    pub practitioner: Option<String>,
    pub location: Option<String>,
}

/// Free slots in a window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlotList {
    pub slots: Vec<SlotView>,
    /// The window searched (instants).
    pub window_start: String,
    pub window_end: String,
    /// More slots exist in the window than are shown; narrow it.
    pub truncated: bool,
    pub stale: bool,
}

/// Which appointments to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum When {
    #[default]
    Upcoming,
    Past,
}

/// `GET /appointments` parameters.
#[derive(Debug, Clone, Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `upcoming` (default, soonest first) or `past` (newest first).
    #[param(inline)]
    pub when: Option<When>,
}

/// `GET /appointments/slots` parameters.
#[derive(Debug, Clone, Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SlotQuery {
    /// A service-type token (`code` or `system|code`); required by some EHRs.
    pub service_type: Option<String>,
    /// A specialty token.
    pub specialty: Option<String>,
    /// A Practitioner id.
    pub practitioner: Option<String>,
    /// A Location id.
    pub location: Option<String>,
    /// Window start: a date (`2030-01-31`) or an instant; default now.
    pub start: Option<String>,
    /// Window end: a date (the whole day is included) or an instant; default start + 14
    /// days. At most the EHR profile's `max_slot_window_days` after the start.
    pub end: Option<String>,
}

/// `POST /appointments`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAppointment {
    /// The Slot to book (strategy `slot`).
    pub slot_id: Option<String>,
    /// Why the patient wants the visit (at most 500 characters).
    pub reason: Option<String>,
    /// A comment for the clinic (at most 500 characters).
    pub comment: Option<String>,
    /// The wished-for period (strategy `request`): dates or instants.
    pub requested_start: Option<String>,
    pub requested_end: Option<String>,
    /// The kind of visit asked for (strategy `request`): `code` or `system|code`.
    pub service_type: Option<String>,
}

/// `POST /appointments/{id}/cancel`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why (at most 500 characters); kept as the cancellation reason's text.
    pub reason: Option<String>,
}

/// `POST /appointments/{id}/reschedule`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    /// The new Slot.
    pub slot_id: String,
    pub reason: Option<String>,
}

/// A completed reschedule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rescheduled {
    /// The new booking. With an EHR that moves the appointment itself (profile
    /// `reschedule = "patch-slot"`) it keeps the old id.
    pub appointment: AppointmentView,
    /// The appointment before the move: with book-then-cancel the old appointment, now
    /// cancelled; with patch-slot the same appointment at its old time. Absent when a
    /// retry finds the move already made and the old time is no longer known.
    pub previous: Option<AppointmentView>,
}

// ---------------------------------------------------------------------------------
// Pure helpers

/// Whether the patient may cancel an appointment at `now`: booked, proposed or pending,
/// and not started (a request without a start may always be withdrawn).
pub fn is_cancelable(appointment: &Value, now: DateTime<Utc>) -> bool {
    let status_ok = str_at(appointment, "status").is_some_and(|s| CANCELABLE.contains(&s));
    let future = match str_at(appointment, "start").map(parse_datetime) {
        None => true,
        Some(Some(start)) => start > now,
        Some(None) => false,
    };
    status_ok && future
}

fn actor_display(resource: &Value, page: Option<&Page>, rt: &str) -> Option<String> {
    array(resource, "participant")
        .chain(array(resource, "actor"))
        .filter_map(|p| p.get("actor").or(Some(p)))
        .find(|actor| str_at(actor, "reference").is_some_and(|r| r.starts_with(&format!("{rt}/"))))
        .and_then(|actor| {
            str_at(actor, "display").map(str::to_owned).or_else(|| {
                let included = page?.included(str_at(actor, "reference")?)?;
                match rt {
                    "Location" => str_at(included, "name").map(str::to_owned),
                    _ => display_name(included),
                }
            })
        })
}

/// The view of an Appointment (`page`: where `_include`d actors may be found).
pub fn appointment_view(
    resource: &Value,
    version: Option<String>,
    page: Option<&Page>,
    now: DateTime<Utc>,
) -> AppointmentView {
    let requested = array(resource, "requestedPeriod").next();
    AppointmentView {
        id: str_at(resource, "id").unwrap_or_default().to_owned(),
        status: str_at(resource, "status").unwrap_or("unknown").to_owned(),
        start: str_at(resource, "start").map(str::to_owned),
        end: str_at(resource, "end").map(str::to_owned),
        requested_start: requested
            .and_then(|p| str_at(p, "start"))
            .map(str::to_owned),
        requested_end: requested.and_then(|p| str_at(p, "end")).map(str::to_owned),
        service_type: first_concept_text(resource, "serviceType"),
        description: str_at(resource, "description").map(str::to_owned),
        reason: first_concept_text(resource, "reasonCode"),
        practitioner: actor_display(resource, page, "Practitioner"),
        location: actor_display(resource, page, "Location"),
        cancelation_reason: resource.get("cancelationReason").and_then(concept_text),
        cancelable: is_cancelable(resource, now),
        version: version.or_else(|| {
            resource
                .pointer("/meta/versionId")
                .and_then(Value::as_str)
                .map(str::to_owned)
        }),
    }
}

/// A window bound: a date (`end`: the whole day included) or an instant.
fn parse_bound(name: &str, value: &str, is_end: bool) -> PortalResult<DateTime<Utc>> {
    let parsed = if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        date.and_hms_opt(0, 0, 0).map(|d| d.and_utc())
    } else {
        DateTime::parse_from_rfc3339(value)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let Some(t) = parsed else {
        return Err(PortalError::invalid(format!(
            "{name} must be a date (YYYY-MM-DD) or an instant (RFC 3339)"
        )));
    };
    // chrono accepts signed years of any width (`+262142-12-31`); date arithmetic near
    // its limits would overflow, and no appointment is booked outside this range.
    if !(1900..=9999).contains(&t.year()) {
        return Err(PortalError::invalid(format!(
            "{name} must be between the years 1900 and 9999"
        )));
    }
    let is_date = value.len() == 10;
    Ok(if is_end && is_date {
        t + Duration::days(1)
    } else {
        t
    })
}

/// The slot-search window: `[start, end)`, never in the past, at most `max_days` long.
pub fn slot_window(
    start: Option<&str>,
    end: Option<&str>,
    max_days: u32,
    now: DateTime<Utc>,
) -> PortalResult<(DateTime<Utc>, DateTime<Utc>)> {
    let requested_start = match start {
        Some(s) => parse_bound("start", s, false)?,
        None => now,
    };
    let end = match end {
        Some(e) => parse_bound("end", e, true)?,
        None => requested_start + Duration::days(DEFAULT_WINDOW_DAYS.min(i64::from(max_days))),
    };
    if end <= requested_start {
        return Err(PortalError::invalid("end must be after start"));
    }
    if end - requested_start > Duration::days(i64::from(max_days)) {
        return Err(PortalError::invalid(format!(
            "the window may be at most {max_days} days long"
        )));
    }
    let today = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |d| d.and_utc());
    if requested_start < today || end <= now {
        return Err(PortalError::invalid("the window must not be in the past"));
    }
    Ok((requested_start.max(now), end))
}

/// A reason or comment ([`crate::input::Text`]: at most [`MAX_TEXT_CHARS`], blank is
/// `None`).
fn check_text(name: &'static str, text: Option<&str>) -> PortalResult<Option<String>> {
    Text::new(name, MAX_TEXT_CHARS).optional(text)
}

/// The CodeableConcept of a service-type token.
fn token_concept(token: &str) -> Value {
    match token.split_once('|') {
        Some((system, code)) if !system.is_empty() => {
            json!({"coding": [{"system": system, "code": code}]})
        }
        Some((_, code)) => json!({"coding": [{"code": code}]}),
        None => json!({"coding": [{"code": token}]}),
    }
}

/// The cancellation: the patched resource, and the JSON Patch that makes it.
pub fn cancellation(current: &Value, reason: Option<&str>) -> (Value, Value) {
    let mut concept = json!({"coding": [{
        "system": CANCELLATION_SYSTEM,
        "code": "pat",
        "display": "Patient"
    }]});
    if let Some(text) = reason {
        concept["text"] = Value::String(text.to_owned());
    }
    let mut patched = current.clone();
    if let Some(map) = patched.as_object_mut() {
        map.insert("status".to_owned(), json!("cancelled"));
        map.insert("cancelationReason".to_owned(), concept.clone());
    }
    let patch = json!([
        {"op": "replace", "path": "/status", "value": "cancelled"},
        {"op": "add", "path": "/cancelationReason", "value": concept}
    ]);
    (patched, patch)
}

/// The Appointment that books `slot` for `patient` (the Schedule's actors take part).
pub fn booking_body(
    patient: &str,
    slot: &Value,
    schedule: Option<&Value>,
    reason: Option<&str>,
    comment: Option<&str>,
    now: DateTime<Utc>,
) -> Value {
    let mut participants = vec![json!({
        "actor": {"reference": format!("Patient/{patient}")},
        "required": "required",
        "status": "accepted"
    })];
    if let Some(schedule) = schedule {
        for actor in array(schedule, "actor") {
            let Some(reference) = str_at(actor, "reference") else {
                continue;
            };
            if !(reference.starts_with("Practitioner/")
                || reference.starts_with("PractitionerRole/")
                || reference.starts_with("Location/"))
            {
                continue;
            }
            let mut a = json!({"reference": reference});
            if let Some(d) = str_at(actor, "display") {
                a["display"] = json!(d);
            }
            participants.push(json!({"actor": a, "required": "required", "status": "accepted"}));
        }
    }
    let slot_id = str_at(slot, "id").unwrap_or_default();
    let mut body = json!({
        "resourceType": "Appointment",
        "status": "booked",
        "slot": [{"reference": format!("Slot/{slot_id}")}],
        "created": now.date_naive().to_string(),
        "participant": participants,
    });
    for key in [
        "start",
        "end",
        "serviceType",
        "specialty",
        "appointmentType",
    ] {
        if let Some(v) = slot.get(key) {
            body[key] = v.clone();
        }
    }
    if let Some(text) = first_concept_text(slot, "serviceType") {
        body["description"] = json!(format!("{text} visit"));
    }
    if let Some(r) = reason {
        body["reasonCode"] = json!([{"text": r}]);
    }
    if let Some(c) = comment {
        body["comment"] = json!(c);
    }
    body
}

fn slot_unavailable() -> PortalError {
    PortalError::conflict(
        "slot_unavailable",
        "this slot is no longer available; choose another",
    )
}

fn not_cancelable() -> PortalError {
    PortalError::refused(
        "not_cancelable",
        "this appointment can no longer be cancelled or rescheduled",
    )
}

// ---------------------------------------------------------------------------------
// List and search

/// The patient's upcoming (soonest first) or past (newest first) appointments.
pub async fn list(ctx: Ctx<'_>, when: When) -> PortalResult<AppointmentList> {
    let now = ctx.now();
    // The EHR is asked with whole-day bounds, so that the same question (and its cache
    // entry) serves a whole day; the exact cut at `now` is made here.
    let today = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |t| t.and_utc());
    let (date, sort) = match when {
        When::Upcoming => (format!("ge{}", instant(today)), "date"),
        When::Past => (
            format!("lt{}", instant(today + chrono::TimeDelta::days(1))),
            "-date",
        ),
    };
    let params = [
        ("date", date),
        ("_sort", sort.to_owned()),
        ("_count", "50".to_owned()),
        ("_include", "Appointment:actor".to_owned()),
    ];
    let requests_params = [
        ("status", "proposed,pending".to_owned()),
        ("_count", "50".to_owned()),
        ("_include", "Appointment:actor".to_owned()),
    ];
    let (page, requests) = tokio::join!(
        ctx.search_all("Appointment", &params, MAX_LISTED + 1),
        async {
            if when == When::Upcoming {
                // Requests without a time yet are upcoming too.
                ctx.search_all("Appointment", &requests_params, MAX_LISTED)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        }
    );
    let mut page = page?;
    let on_the_right_side_of_now = |a: &Value| {
        let Some(start) = str_at(a, "start").and_then(parse_datetime) else {
            return true;
        };
        match when {
            When::Upcoming => start >= now,
            When::Past => start < now,
        }
    };
    page.matches.retain(on_the_right_side_of_now);
    if let Some(requests) = requests? {
        page.stale |= requests.stale;
        page.included.extend(requests.included);
        page.matches.extend(
            requests
                .matches
                .into_iter()
                .filter(|a| a.get("start").is_none()),
        );
    }
    let mut views: Vec<AppointmentView> = page
        .matches
        .iter()
        .filter(|a| str_at(a, "resourceType") == Some("Appointment"))
        .map(|a| appointment_view(a, None, Some(&page), now))
        .collect();
    let key = |v: &AppointmentView| {
        v.start
            .as_deref()
            .or(v.requested_start.as_deref())
            .and_then(parse_datetime)
    };
    match when {
        // Requests without any time last.
        When::Upcoming => views.sort_by_key(|v| (key(v).is_none(), key(v))),
        When::Past => views.sort_by_key(|v| std::cmp::Reverse(key(v))),
    }
    let truncated = views.len() > MAX_LISTED || page.next.is_some();
    views.truncate(MAX_LISTED);
    Ok(AppointmentList {
        appointments: views,
        truncated,
        stale: page.stale,
    })
}

/// Free slots matching `query` in its window.
pub async fn search_slots(ctx: Ctx<'_>, query: &SlotQuery) -> PortalResult<SlotList> {
    let profile = &ctx.profile().appointments;
    let now = ctx.now();
    let (start, end) = slot_window(
        query.start.as_deref(),
        query.end.as_deref(),
        profile.max_slot_window_days,
        now,
    )?;
    let service_type = query
        .service_type
        .as_deref()
        .map(|t| check_token("service_type", t))
        .transpose()?;
    if profile.slot_search_requires_service_type && service_type.is_none() {
        return Err(PortalError::Invalid {
            code: "service_type_required",
            message: "this EHR needs a service_type to search slots".to_owned(),
        });
    }
    let specialty = query
        .specialty
        .as_deref()
        .map(|t| check_token("specialty", t))
        .transpose()?;
    let practitioner = query
        .practitioner
        .as_deref()
        .map(|p| check_id("practitioner", p))
        .transpose()?;
    let location = query
        .location
        .as_deref()
        .map(|l| check_id("location", l))
        .transpose()?;
    let window = |truncated, stale, slots| SlotList {
        slots,
        window_start: instant(start),
        window_end: instant(end),
        truncated,
        stale,
    };

    if matches!(profile.book, BookStrategy::Operations) {
        let finding = Finding {
            start,
            end,
            service_type: service_type.as_deref(),
            specialty: specialty.as_deref(),
            practitioner: practitioner.as_deref(),
            location: location.as_deref(),
        };
        let (slots, truncated) = find_offers(ctx, &finding).await?;
        return Ok(window(truncated, false, slots));
    }

    // Practitioner/location → their Schedules (no chained search upstream).
    let mut schedules: Option<Vec<String>> = None;
    let mut stale = false;
    for actor in [
        practitioner.map(|p| format!("Practitioner/{p}")),
        location.map(|l| format!("Location/{l}")),
    ]
    .into_iter()
    .flatten()
    {
        let page = ctx
            .search_all(
                "Schedule",
                &[("actor", actor), ("_count", "100".to_owned())],
                100,
            )
            .await?;
        stale |= page.stale;
        let ids: Vec<String> = page
            .matches
            .iter()
            .filter_map(|s| str_at(s, "id").map(|id| format!("Schedule/{id}")))
            .collect();
        schedules = Some(match schedules {
            None => ids,
            Some(before) => before.into_iter().filter(|s| ids.contains(s)).collect(),
        });
    }
    if schedules.as_ref().is_some_and(Vec::is_empty) {
        return Ok(window(false, stale, Vec::new()));
    }

    let mut params = vec![
        ("status", "free".to_owned()),
        ("start", format!("ge{}", instant(start))),
        ("start", format!("lt{}", instant(end))),
        ("_include", "Slot:schedule".to_owned()),
        ("_sort", "start".to_owned()),
        ("_count", "100".to_owned()),
    ];
    if let Some(t) = service_type {
        params.push(("service-type", t));
    }
    if let Some(s) = specialty {
        params.push(("specialty", s));
    }
    if let Some(list) = &schedules {
        params.push(("schedule", list.join(",")));
    }
    let page = ctx.search_all("Slot", &params, MAX_SLOTS + 1).await?;
    let mut slots: Vec<SlotView> = page
        .matches
        .iter()
        .filter(|s| str_at(s, "resourceType") == Some("Slot"))
        // Verified here too: an EHR that ignores a parameter must not widen the answer.
        .filter(|s| str_at(s, "status") == Some("free"))
        .filter_map(|s| {
            let slot_start = parse_datetime(str_at(s, "start")?)?;
            if slot_start < start || slot_start >= end {
                return None;
            }
            let schedule = s
                .pointer("/schedule/reference")
                .and_then(Value::as_str)
                .and_then(|r| page.included(r));
            Some(SlotView {
                id: str_at(s, "id")?.to_owned(),
                start: str_at(s, "start")?.to_owned(),
                end: str_at(s, "end").map(str::to_owned),
                service_type: first_concept_text(s, "serviceType"),
                practitioner: schedule
                    .and_then(|sch| actor_display(sch, Some(&page), "Practitioner")),
                location: schedule.and_then(|sch| actor_display(sch, Some(&page), "Location")),
            })
        })
        .collect();
    slots.sort_by(|a, b| a.start.cmp(&b.start));
    let truncated = slots.len() > MAX_SLOTS || page.next.is_some();
    slots.truncate(MAX_SLOTS);
    Ok(window(truncated, stale || page.stale, slots))
}

// ---------------------------------------------------------------------------------
// Reading one appointment

/// The patient's appointment `id` with its version; anything else is `NotFound`.
pub async fn load(ctx: Ctx<'_>, id: &str) -> PortalResult<Versioned> {
    if !portico_fhir::reference::is_valid_id(id) {
        return Err(PortalError::NotFound);
    }
    let page = ctx.search("Appointment", &[("_id", id.to_owned())]).await?;
    let resource = page
        .matches
        .into_iter()
        .find(|a| str_at(a, "resourceType") == Some("Appointment") && str_at(a, "id") == Some(id))
        .ok_or(PortalError::NotFound)?;
    Ok(Versioned {
        version: resource
            .pointer("/meta/versionId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        stale: None,
        resource,
    })
}

/// `GET /appointments/{id}`.
pub async fn get(ctx: Ctx<'_>, id: &str) -> PortalResult<AppointmentView> {
    let a = load(ctx, id).await?;
    Ok(appointment_view(&a.resource, a.version, None, ctx.now()))
}

// ---------------------------------------------------------------------------------
// Book

/// Books per the profile's strategy. Returns the appointment as the EHR stored it.
pub async fn book(
    ctx: Ctx<'_>,
    new: &NewAppointment,
    idem: &Idem,
) -> PortalResult<AppointmentView> {
    let reason = check_text("reason", new.reason.as_deref())?;
    let comment = check_text("comment", new.comment.as_deref())?;
    match ctx.profile().appointments.book {
        BookStrategy::Slot => {
            if new.requested_start.is_some() || new.requested_end.is_some() {
                return Err(PortalError::invalid(
                    "this EHR books slots: send slot_id, not requested_start/requested_end",
                ));
            }
            let slot_id = new
                .slot_id
                .as_deref()
                .ok_or_else(|| PortalError::invalid("slot_id is required"))?;
            let slot_id = check_id("slot_id", slot_id)?;
            let booked =
                book_slot(ctx, &slot_id, reason.as_deref(), comment.as_deref(), idem).await?;
            Ok(appointment_view(
                &booked.resource,
                booked.version,
                None,
                ctx.now(),
            ))
        }
        BookStrategy::Request => {
            let created = request(ctx, new, reason.as_deref(), comment.as_deref(), idem).await?;
            Ok(appointment_view(
                &created.resource,
                created.version,
                None,
                ctx.now(),
            ))
        }
        BookStrategy::Operations => {
            if new.requested_start.is_some() || new.requested_end.is_some() {
                return Err(PortalError::invalid(
                    "this EHR books offered appointments: send slot_id (an id from the slot \
                     search), not requested_start/requested_end",
                ));
            }
            let id = new
                .slot_id
                .as_deref()
                .ok_or_else(|| PortalError::invalid("slot_id is required"))?;
            let id = check_id("slot_id", id)?;
            let booked = book_operation(ctx, &id, comment.as_deref(), idem).await?;
            Ok(appointment_view(
                &booked.resource,
                booked.version,
                None,
                ctx.now(),
            ))
        }
    }
}

/// Books `slot_id` for the patient, exactly once per `idem`.
async fn book_slot(
    ctx: Ctx<'_>,
    slot_id: &str,
    reason: Option<&str>,
    comment: Option<&str>,
    idem: &Idem,
) -> PortalResult<Versioned> {
    let _guard = ctx.portal.lock(&format!("slot:{slot_id}")).await;
    let slot = match ctx.read("Slot", slot_id).await {
        Ok(s) => s.resource,
        Err(PortalError::NotFound) => return Err(PortalError::NotFound),
        Err(e) => return Err(e),
    };
    let free = str_at(&slot, "status") == Some("free") && !ctx.slot_is_held(slot_id).await;
    let future = str_at(&slot, "start")
        .and_then(parse_datetime)
        .is_some_and(|s| s > ctx.now());
    if !free || !future {
        // An earlier attempt with this key may have booked it (its answer was lost).
        return match ctx.find_by_identifier("Appointment", idem).await? {
            Some(existing) => Ok(versioned(existing)),
            None => Err(slot_unavailable()),
        };
    }
    let schedule = match slot.pointer("/schedule/reference").and_then(Value::as_str) {
        Some(r) => match portico_fhir::reference::Reference::parse(r) {
            Ok(r) if r.resource_type == "Schedule" => {
                Some(ctx.read("Schedule", &r.id).await?.resource)
            }
            _ => None,
        },
        None => None,
    };
    let body = booking_body(
        ctx.patient(),
        &slot,
        schedule.as_ref(),
        reason,
        comment,
        ctx.now(),
    );
    match ctx.create("Appointment", body, idem).await {
        Ok(created) => Ok(created),
        // The EHR is the arbiter across gateways: its "slot is not free".
        Err(PortalError::Upstream(UpstreamError::Conflict { .. })) => Err(slot_unavailable()),
        Err(e) => Err(e),
    }
}

fn versioned(resource: Value) -> Versioned {
    Versioned {
        version: resource
            .pointer("/meta/versionId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        stale: None,
        resource,
    }
}

/// A `proposed` Appointment with `requestedPeriod` (staff confirm it).
async fn request(
    ctx: Ctx<'_>,
    new: &NewAppointment,
    reason: Option<&str>,
    comment: Option<&str>,
    idem: &Idem,
) -> PortalResult<Versioned> {
    if new.slot_id.is_some() {
        return Err(PortalError::invalid(
            "this EHR takes appointment requests: send requested_start, requested_end and \
             service_type, not slot_id",
        ));
    }
    let (Some(start), Some(end)) = (new.requested_start.as_deref(), new.requested_end.as_deref())
    else {
        return Err(PortalError::invalid(
            "requested_start and requested_end are required",
        ));
    };
    let service_type = new
        .service_type
        .as_deref()
        .ok_or_else(|| PortalError::invalid("service_type is required"))
        .and_then(|t| check_token("service_type", t))?;
    let max_days = ctx.profile().appointments.max_slot_window_days.max(90);
    let (start, end) = slot_window(Some(start), Some(end), max_days, ctx.now())?;
    let mut body = json!({
        "resourceType": "Appointment",
        "status": "proposed",
        "serviceType": [token_concept(&service_type)],
        "participant": [{
            "actor": {"reference": ctx.caller.patient_reference()},
            "required": "required",
            "status": "needs-action"
        }],
        "requestedPeriod": [{"start": instant(start), "end": instant(end)}],
        "created": ctx.now().date_naive().to_string(),
    });
    if let Some(r) = reason {
        body["reasonCode"] = json!([{"text": r}]);
    }
    if let Some(c) = comment {
        body["comment"] = json!(c);
    }
    ctx.create("Appointment", body, idem).await
}

// ---------------------------------------------------------------------------------
// Cancel

/// Cancels the patient's appointment `id`.
pub async fn cancel(
    ctx: Ctx<'_>,
    id: &str,
    request: &CancelRequest,
) -> PortalResult<AppointmentView> {
    let reason = check_text("reason", request.reason.as_deref())?;
    let current = load(ctx, id).await?;
    let done = cancel_loaded(ctx, current, reason.as_deref()).await?;
    Ok(appointment_view(
        &done.resource,
        done.version,
        None,
        ctx.now(),
    ))
}

/// Cancels an appointment already read, retrying once after a version conflict.
async fn cancel_loaded(
    ctx: Ctx<'_>,
    current: Versioned,
    reason: Option<&str>,
) -> PortalResult<Versioned> {
    if !is_cancelable(&current.resource, ctx.now()) {
        return Err(not_cancelable());
    }
    match send_cancel(ctx, &current, reason).await {
        Err(PortalError::Conflict {
            code: "version_conflict",
            ..
        }) => {
            let id = current.id().unwrap_or_default().to_owned();
            let again = load(ctx, &id).await?;
            if !is_cancelable(&again.resource, ctx.now()) {
                return Err(PortalError::conflict(
                    "version_conflict",
                    "the appointment changed while it was being cancelled; reload it",
                ));
            }
            send_cancel(ctx, &again, reason).await
        }
        other => other,
    }
}

async fn send_cancel(
    ctx: Ctx<'_>,
    current: &Versioned,
    reason: Option<&str>,
) -> PortalResult<Versioned> {
    let (patched, patch) = cancellation(&current.resource, reason);
    match ctx.profile().appointments.cancel {
        CancelStrategy::Patch => ctx.patch("Appointment", current, patch, &patched).await,
        CancelStrategy::Update => {
            let mut body = patched;
            if let Some(map) = body.as_object_mut() {
                map.remove("meta");
            }
            ctx.update("Appointment", current, body).await
        }
    }
}

// ---------------------------------------------------------------------------------
// Reschedule

/// Moves the patient's appointment `id` to another slot.
pub async fn reschedule(
    ctx: Ctx<'_>,
    id: &str,
    request: &RescheduleRequest,
    idem: &Idem,
) -> PortalResult<Rescheduled> {
    let reason = check_text("reason", request.reason.as_deref())?;
    let slot_id = check_id("slot_id", &request.slot_id)?;
    let old = load(ctx, id).await?;
    match ctx.profile().appointments.reschedule {
        RescheduleStrategy::BookThenCancel => {
            book_then_cancel(ctx, old, &slot_id, reason.as_deref(), idem).await
        }
        RescheduleStrategy::PatchSlot => patch_slot(ctx, old, &slot_id, reason.as_deref()).await,
    }
}

/// The identity of the booking step of a reschedule: the first `book` step identity
/// that did not end in an undone (cancelled) booking, so that retrying a reschedule
/// whose earlier attempt was undone books again instead of finding the undone one.
async fn booking_identity(ctx: Ctx<'_>, idem: &Idem) -> PortalResult<(Idem, Option<Value>)> {
    for attempt in 1..=5 {
        let step = if attempt == 1 {
            idem.step("book")
        } else {
            idem.step(&format!("book-{attempt}"))
        };
        match ctx.find_by_identifier("Appointment", &step).await? {
            None => return Ok((step, None)),
            Some(found) if str_at(&found, "status") == Some("cancelled") => continue,
            Some(found) => return Ok((step, Some(found))),
        }
    }
    Err(PortalError::refused(
        "reschedule_failed",
        "this reschedule failed too many times; try again with a new Idempotency-Key",
    ))
}

async fn book_then_cancel(
    ctx: Ctx<'_>,
    old: Versioned,
    slot_id: &str,
    reason: Option<&str>,
    idem: &Idem,
) -> PortalResult<Rescheduled> {
    let now = ctx.now();
    let (book_idem, earlier) = booking_identity(ctx, idem).await?;
    // A retry after the old appointment was already cancelled by an earlier attempt.
    if let Some(new) = &earlier
        && str_at(&old.resource, "status") == Some("cancelled")
    {
        return Ok(Rescheduled {
            appointment: appointment_view(new, None, None, now),
            previous: Some(appointment_view(
                &old.resource,
                old.version.clone(),
                None,
                now,
            )),
        });
    }
    if !is_cancelable(&old.resource, now) {
        return Err(not_cancelable());
    }
    let new = match earlier {
        Some(found) => versioned(found),
        None => book_slot(ctx, slot_id, reason, None, &book_idem).await?,
    };
    let old_id = old.id().unwrap_or_default().to_owned();
    let new_id = new.id().unwrap_or_default().to_owned();
    match cancel_loaded(ctx, old, reason).await {
        Ok(previous) => Ok(Rescheduled {
            appointment: appointment_view(&new.resource, new.version.clone(), None, now),
            previous: Some(appointment_view(
                &previous.resource,
                previous.version,
                None,
                now,
            )),
        }),
        Err(cancel_error) => {
            // The cancel may have landed although its answer did not (a timeout): look
            // before undoing anything, so the patient never ends up with neither.
            let original = match load(ctx, &old_id).await {
                Ok(current) => current,
                Err(e) => {
                    tracing::error!(error = %e, "reschedule: the original appointment could not be re-read");
                    return Err(PortalError::Partial {
                        code: "reschedule_incomplete",
                        message: "the new appointment was booked, but whether the original one \
                                  was cancelled is not known yet; check your appointments \
                                  before booking again"
                            .to_owned(),
                        state: json!({
                            "original": {"id": old_id, "status": "unknown"},
                            "new": {"id": new_id, "status": "booked"},
                        }),
                    });
                }
            };
            let original_status = str_at(&original.resource, "status")
                .unwrap_or("unknown")
                .to_owned();
            if original_status == "cancelled" {
                return Ok(Rescheduled {
                    appointment: appointment_view(&new.resource, new.version.clone(), None, now),
                    previous: Some(appointment_view(
                        &original.resource,
                        original.version,
                        None,
                        now,
                    )),
                });
            }
            tracing::warn!(error = %cancel_error, "reschedule: the old appointment could not be cancelled; undoing the new booking");
            match cancel_loaded(ctx, new, Some("reschedule undone")).await {
                Ok(_) => Err(PortalError::Partial {
                    code: "reschedule_failed",
                    message: "the appointment could not be rescheduled and nothing changed: \
                              your original appointment is still booked"
                        .to_owned(),
                    state: json!({
                        "original": {"id": old_id, "status": original_status},
                        "new": {"id": new_id, "status": "cancelled"},
                    }),
                }),
                Err(undo_error) => {
                    tracing::error!(error = %undo_error, "reschedule: undoing the new booking failed too");
                    Err(PortalError::Partial {
                        code: "reschedule_incomplete",
                        message: "the new appointment was booked but the original one could \
                                  not be cancelled: you now hold both; cancel the one you do \
                                  not want"
                            .to_owned(),
                        state: json!({
                            "original": {"id": old_id, "status": original_status},
                            "new": {"id": new_id, "status": "booked"},
                        }),
                    })
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// $find and $book (IHE ITI Scheduling R4; Epic-like)

/// What a `$find` asks for.
#[derive(Debug, Clone, Copy)]
pub struct Finding<'a> {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub service_type: Option<&'a str>,
    pub specialty: Option<&'a str>,
    pub practitioner: Option<&'a str>,
    pub location: Option<&'a str>,
}

/// The `Parameters` of `Appointment/$find` (IHE ITI Scheduling R4 names: `start` and
/// `end` 1..1, `visit-type` and `specialty` as `system|code` tokens, `practitioner`,
/// `location-reference` and `patient-reference` as References).
pub fn find_parameters(finding: &Finding<'_>, patient: &str) -> Value {
    let mut parameter = vec![
        json!({"name": "start", "valueDateTime": instant(finding.start)}),
        json!({"name": "end", "valueDateTime": instant(finding.end)}),
    ];
    if let Some(t) = finding.service_type {
        parameter.push(json!({"name": "visit-type", "valueString": t}));
    }
    if let Some(s) = finding.specialty {
        parameter.push(json!({"name": "specialty", "valueString": s}));
    }
    if let Some(p) = finding.practitioner {
        parameter.push(
            json!({"name": "practitioner", "valueReference": {"reference": format!("Practitioner/{p}")}}),
        );
    }
    if let Some(l) = finding.location {
        parameter.push(
            json!({"name": "location-reference", "valueReference": {"reference": format!("Location/{l}")}}),
        );
    }
    parameter.push(
        json!({"name": "patient-reference", "valueReference": {"reference": format!("Patient/{patient}")}}),
    );
    json!({"resourceType": "Parameters", "parameter": parameter})
}

/// The `Parameters` of `Appointment/$book` for the proposed appointment `id`.
pub fn book_parameters(id: &str, comment: Option<&str>) -> Value {
    let mut parameter = vec![json!({
        "name": "appointment-reference",
        "valueReference": {"reference": format!("Appointment/{id}")}
    })];
    if let Some(c) = comment {
        parameter.push(json!({"name": "comment", "valueString": c}));
    }
    json!({"resourceType": "Parameters", "parameter": parameter})
}

/// The proposed Appointments a `$find` offers the patient, as slots (soonest first),
/// and whether there were more than [`MAX_SLOTS`]. The answer was verified by the
/// policy: a proposed appointment naming another patient is gone before this sees it.
async fn find_offers(ctx: Ctx<'_>, finding: &Finding<'_>) -> PortalResult<(Vec<SlotView>, bool)> {
    let parameters = find_parameters(finding, ctx.patient());
    let page = ctx
        .operation("Appointment", "find", parameters, Interaction::Search)
        .await?;
    let offers: Vec<&Value> = page
        .matches
        .iter()
        .filter(|a| str_at(a, "resourceType") == Some("Appointment"))
        .filter(|a| str_at(a, "status") == Some("proposed"))
        .filter(|a| {
            str_at(a, "start")
                .and_then(parse_datetime)
                .is_some_and(|s| s >= finding.start && s < finding.end)
        })
        .filter(|a| str_at(a, "id").is_some_and(portico_fhir::reference::is_valid_id))
        .collect();
    ctx.remember_offers(&offers.iter().map(|a| (*a).clone()).collect::<Vec<_>>());
    let mut slots: Vec<SlotView> = offers
        .iter()
        .filter_map(|a| {
            Some(SlotView {
                id: str_at(a, "id")?.to_owned(),
                start: str_at(a, "start")?.to_owned(),
                end: str_at(a, "end").map(str::to_owned),
                service_type: first_concept_text(a, "serviceType"),
                practitioner: actor_display(a, Some(&page), "Practitioner"),
                location: actor_display(a, Some(&page), "Location"),
            })
        })
        .collect();
    slots.sort_by(|a, b| a.start.cmp(&b.start));
    let truncated = slots.len() > MAX_SLOTS;
    slots.truncate(MAX_SLOTS);
    Ok((slots, truncated))
}

/// Whether an OperationOutcome says the appointment (or its time) is no longer
/// available, as opposed to another failure.
pub fn says_unavailable(outcomes: &[Value]) -> bool {
    outcomes
        .iter()
        .flat_map(|o| array(o, "issue"))
        .any(|issue| {
            let severe = matches!(str_at(issue, "severity"), Some("error" | "fatal"));
            let code = matches!(
                str_at(issue, "code"),
                Some("conflict" | "business-rule" | "duplicate" | "lock-error")
            );
            let text = [
                issue.pointer("/details/text").and_then(Value::as_str),
                str_at(issue, "diagnostics"),
            ]
            .into_iter()
            .flatten()
            .any(|t| {
                let t = t.to_lowercase();
                t.contains("available") || t.contains("taken") || t.contains("booked")
            });
            severe && (code || text)
        })
}

/// The patient's appointment `id` if the EHR shows it to them; `None` when it does not.
async fn load_if_any(ctx: Ctx<'_>, id: &str) -> PortalResult<Option<Versioned>> {
    match load(ctx, id).await {
        Ok(a) => Ok(Some(a)),
        Err(PortalError::NotFound | PortalError::Upstream(UpstreamError::NotFound { .. })) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Books the proposed appointment `id` with `$book`, exactly once per `idem`.
async fn book_operation(
    ctx: Ctx<'_>,
    id: &str,
    comment: Option<&str>,
    idem: &Idem,
) -> PortalResult<Versioned> {
    let _guard = ctx.portal.lock(&format!("appointment:{id}")).await;
    // `$book` is not a conditional create: an earlier attempt's booking is looked for
    // first (by this key's identifier, in case the EHR keeps it, and by id).
    if let Some(existing) = ctx.find_by_identifier("Appointment", idem).await? {
        return Ok(versioned(existing));
    }
    let known = load_if_any(ctx, id).await?;
    let proposed = match known {
        Some(a) if str_at(&a.resource, "status") == Some("booked") => return Ok(a),
        Some(a) if matches!(str_at(&a.resource, "status"), Some("proposed" | "pending")) => {
            a.resource
        }
        Some(_) => return Err(slot_unavailable()),
        // Only what this gateway offered this patient (a proposed appointment need not
        // be searchable): anything else is not theirs to book.
        None => ctx
            .offered("Appointment", id)
            .ok_or(PortalError::NotFound)?,
    };
    let future = str_at(&proposed, "start")
        .and_then(parse_datetime)
        .is_some_and(|s| s > ctx.now());
    if !future {
        return Err(slot_unavailable());
    }
    // Booking it creates a booked Appointment of the patient's: the same write rules.
    let mut as_booked = proposed.clone();
    if let Some(map) = as_booked.as_object_mut() {
        map.insert("status".to_owned(), json!("booked"));
        map.remove("meta");
    }
    ctx.authorize(Interaction::Create, "Appointment", &as_booked, None)
        .await?;
    let parameters = book_parameters(id, comment);
    let page = match ctx
        .operation("Appointment", "book", parameters, Interaction::Create)
        .await
    {
        Ok(page) => page,
        Err(PortalError::Upstream(UpstreamError::Conflict { .. })) => {
            return Err(slot_unavailable());
        }
        Err(PortalError::Upstream(
            e @ (UpstreamError::Invalid { .. } | UpstreamError::PreconditionFailed { .. }),
        )) => {
            return Err(match e.outcome() {
                Some(o) if says_unavailable(std::slice::from_ref(o)) => slot_unavailable(),
                _ => PortalError::Upstream(e),
            });
        }
        Err(PortalError::Upstream(e)) if outcome_unknown(&e) => {
            tracing::warn!(error = %e, "$book failed mid-flight; looking for the booking");
            return match load_if_any(ctx, id).await {
                Ok(Some(a)) if str_at(&a.resource, "status") == Some("booked") => Ok(a),
                Ok(Some(_) | None) => Err(PortalError::Upstream(e)),
                Err(_) => Err(PortalError::OutcomeUnknown {
                    action: "the booking",
                }),
            };
        }
        Err(e) => return Err(e),
    };
    let booked = page
        .matches
        .iter()
        .find(|a| str_at(a, "resourceType") == Some("Appointment"));
    match booked {
        Some(a) if str_at(a, "status") == Some("cancelled") => Err(slot_unavailable()),
        Some(a) => Ok(versioned(a.clone())),
        None if says_unavailable(&page.outcomes) => Err(slot_unavailable()),
        None if page.removed > 0 => Err(PortalError::Upstream(UpstreamError::Protocol {
            detail: "the EHR answered $book with an appointment that is not the patient's"
                .to_owned(),
        })),
        None => Err(PortalError::Upstream(UpstreamError::Invalid {
            status: 422,
            outcome: page.outcomes.into_iter().next(),
        })),
    }
}

// ---------------------------------------------------------------------------------
// Reschedule by patching the slot (Cerner)

/// The Slot ids an appointment holds.
fn slot_ids(appointment: &Value) -> Vec<String> {
    array(appointment, "slot")
        .filter_map(|s| str_at(s, "reference"))
        .filter_map(|r| portico_fhir::reference::Reference::parse(r).ok())
        .filter(|r| r.resource_type == "Slot")
        .map(|r| r.id)
        .collect()
}

fn is_booked_on(appointment: &Value, slot_id: &str) -> bool {
    str_at(appointment, "status") == Some("booked") && slot_ids(appointment) == [slot_id]
}

/// The JSON Patch that moves `current` to `slot` (Cerner's reschedule): replace
/// `/slot`, `/start`, `/end`, add the `reschedule-reason` extension.
pub fn reschedule_patch(
    current: &Value,
    slot: &Value,
    reason: Option<&str>,
) -> PortalResult<Value> {
    let (Some(id), Some(start), Some(end)) = (
        str_at(slot, "id"),
        str_at(slot, "start"),
        str_at(slot, "end"),
    ) else {
        return Err(PortalError::Upstream(UpstreamError::Protocol {
            detail: "the slot has no id, start or end".to_owned(),
        }));
    };
    let op = |key: &str| {
        if current.get(key).is_some() {
            "replace"
        } else {
            "add"
        }
    };
    let extension = json!({
        "url": RESCHEDULE_REASON_URL,
        "valueCodeableConcept": {"text": reason.unwrap_or("Rescheduled by the patient")}
    });
    let extension_op = if current.get("extension").is_some_and(Value::is_array) {
        json!({"op": "add", "path": "/extension/-", "value": extension})
    } else {
        json!({"op": "add", "path": "/extension", "value": [extension]})
    };
    Ok(json!([
        {"op": op("slot"), "path": "/slot", "value": [{"reference": format!("Slot/{id}")}]},
        {"op": op("start"), "path": "/start", "value": start},
        {"op": op("end"), "path": "/end", "value": end},
        extension_op,
    ]))
}

/// The domain rule of a patch-slot reschedule, checked on the patched resource before
/// it is sent: only `slot`, `start`, `end`, `extension`, `meta` and `text` may differ;
/// the appointment stays `booked` on exactly one Slot; existing extensions are kept and
/// only `reschedule-reason` ones are added. Everything else (participants, status,
/// service, ...) must be unchanged.
pub fn reschedule_rule(current: &Value, patched: &Value) -> PortalResult<()> {
    const MAY_CHANGE: &[&str] = &["slot", "start", "end", "extension", "meta", "text"];
    let refuse = |why: &str| {
        Err(PortalError::refused(
            "change_not_allowed",
            format!("a reschedule may not {why}"),
        ))
    };
    let (Some(before), Some(after)) = (current.as_object(), patched.as_object()) else {
        return refuse("change what is not a resource");
    };
    let changed = before
        .keys()
        .chain(after.keys())
        .filter(|k| !MAY_CHANGE.contains(&k.as_str()))
        .any(|k| before.get(k) != after.get(k));
    if changed {
        return refuse("change anything but the slot and its time");
    }
    if str_at(current, "status") != Some("booked") || str_at(patched, "status") != Some("booked") {
        return refuse("move an appointment that is not booked");
    }
    if slot_ids(patched).len() != 1 || array(patched, "slot").count() != 1 {
        return refuse("leave the appointment on other than exactly one slot");
    }
    if str_at(patched, "start").and_then(parse_datetime).is_none() {
        return refuse("leave the appointment without a start");
    }
    let old: Vec<&Value> = array(current, "extension").collect();
    let new: Vec<&Value> = array(patched, "extension").collect();
    let kept = new.len() >= old.len() && new[..old.len()] == old[..];
    let added_ok = new[old.len().min(new.len())..]
        .iter()
        .all(|e| str_at(e, "url") == Some(RESCHEDULE_REASON_URL));
    if !kept || !added_ok {
        return refuse("change extensions other than adding the reschedule reason");
    }
    Ok(())
}

/// Whether Cerner's `is-reschedulable` extension says no.
fn not_reschedulable(appointment: &Value) -> bool {
    array(appointment, "extension").any(|e| {
        str_at(e, "url") == Some(IS_RESCHEDULABLE_URL)
            && e.get("valueBoolean") == Some(&Value::Bool(false))
    })
}

/// Moves the booked appointment `old` to `slot_id` with one JSON Patch (same id).
async fn patch_slot(
    ctx: Ctx<'_>,
    old: Versioned,
    slot_id: &str,
    reason: Option<&str>,
) -> PortalResult<Rescheduled> {
    let now = ctx.now();
    let id = old.id().unwrap_or_default().to_owned();
    let view = |v: &Versioned| appointment_view(&v.resource, v.version.clone(), None, now);
    // A retry after a lost answer: the move is already made.
    if is_booked_on(&old.resource, slot_id) {
        return Ok(Rescheduled {
            appointment: view(&old),
            previous: None,
        });
    }
    if str_at(&old.resource, "status") != Some("booked")
        || !is_cancelable(&old.resource, now)
        || not_reschedulable(&old.resource)
    {
        return Err(not_cancelable());
    }
    // Both slots change: lock them in a fixed order so that two moves cannot deadlock.
    let mut keys: Vec<String> = slot_ids(&old.resource)
        .into_iter()
        .chain(std::iter::once(slot_id.to_owned()))
        .map(|s| format!("slot:{s}"))
        .collect();
    keys.sort();
    keys.dedup();
    let mut guards = Vec::with_capacity(keys.len());
    for key in &keys {
        guards.push(ctx.portal.lock(key).await);
    }
    let original = old.clone();
    let mut current = old;
    for attempt in 0..2 {
        let slot = ctx.read("Slot", slot_id).await?.resource;
        let free = str_at(&slot, "status") == Some("free") && !ctx.slot_is_held(slot_id).await;
        let future = str_at(&slot, "start")
            .and_then(parse_datetime)
            .is_some_and(|s| s > now);
        if !free || !future {
            return Err(slot_unavailable());
        }
        let patch = reschedule_patch(&current.resource, &slot, reason)?;
        let error = match ctx
            .patch_with_rule("Appointment", &current, patch, reschedule_rule)
            .await
        {
            Ok(moved) => {
                return Ok(Rescheduled {
                    appointment: view(&moved),
                    previous: Some(view(&original)),
                });
            }
            Err(
                e @ (PortalError::Conflict {
                    code: "version_conflict",
                    ..
                }
                | PortalError::Upstream(UpstreamError::Conflict { .. })),
            ) => e,
            Err(e) => return Err(e),
        };
        // A version conflict, or the EHR refusing the slot: look again to tell.
        let again = load(ctx, &id).await?;
        if is_booked_on(&again.resource, slot_id) {
            return Ok(Rescheduled {
                appointment: view(&again),
                previous: Some(view(&original)),
            });
        }
        let unchanged = again.version.is_some() && again.version == current.version;
        if unchanged {
            // The appointment did not change: the EHR refused the slot itself.
            return Err(match error {
                PortalError::Upstream(_) => slot_unavailable(),
                other => other,
            });
        }
        if attempt == 1
            || str_at(&again.resource, "status") != Some("booked")
            || !is_cancelable(&again.resource, now)
        {
            return Err(PortalError::conflict(
                "version_conflict",
                "the appointment changed while it was being rescheduled; reload it",
            ));
        }
        current = again;
    }
    Err(PortalError::conflict(
        "version_conflict",
        "the appointment changed while it was being rescheduled; reload it",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 10, 12, 0, 0).unwrap()
    }

    #[test]
    fn windows_are_bounded_and_never_in_the_past() {
        let (s, e) = slot_window(None, None, 31, now()).unwrap();
        assert_eq!(s, now());
        assert_eq!(e, now() + Duration::days(14));
        // Years chrono parses but date arithmetic cannot handle are refused, not panicked on.
        for extreme in [
            "+262142-12-31",
            "-262143-01-01",
            "0001-01-01",
            "10000-01-01",
        ] {
            assert!(
                slot_window(None, Some(extreme), 14, now()).is_err(),
                "{extreme}"
            );
            assert!(
                slot_window(Some(extreme), None, 14, now()).is_err(),
                "{extreme}"
            );
        }
        // A date end includes the whole day; today's date is clamped to now.
        let (s, e) = slot_window(Some("2030-01-10"), Some("2030-01-11"), 31, now()).unwrap();
        assert_eq!(s, now());
        assert_eq!(instant(e), "2030-01-12T00:00:00Z");
        assert!(slot_window(Some("2030-01-09"), Some("2030-01-11"), 31, now()).is_err());
        assert!(slot_window(Some("2030-01-20"), Some("2030-01-15"), 31, now()).is_err());
        assert!(slot_window(Some("2030-01-11"), Some("2030-03-01"), 31, now()).is_err());
        assert!(slot_window(Some("2030-01-11"), Some("2030-02-10"), 31, now()).is_ok());
        assert!(slot_window(Some("tomorrow"), None, 31, now()).is_err());
        assert!(
            slot_window(
                Some("2030-01-11T08:00:00+02:00"),
                Some("2030-01-11T10:00:00Z"),
                1,
                now()
            )
            .is_ok()
        );
        // The default end respects a profile narrower than 14 days.
        let (s, e) = slot_window(None, None, 7, now()).unwrap();
        assert_eq!(e - s, Duration::days(7));
    }

    #[test]
    fn cancelable_means_open_status_and_not_started() {
        let a = |status: &str, start: Option<&str>| {
            let mut v = json!({"status": status});
            if let Some(s) = start {
                v["start"] = json!(s);
            }
            v
        };
        assert!(is_cancelable(
            &a("booked", Some("2030-01-11T09:00:00Z")),
            now()
        ));
        assert!(is_cancelable(&a("proposed", None), now()));
        assert!(!is_cancelable(
            &a("booked", Some("2030-01-09T09:00:00Z")),
            now()
        ));
        assert!(!is_cancelable(
            &a("cancelled", Some("2030-02-01T09:00:00Z")),
            now()
        ));
        assert!(!is_cancelable(
            &a("fulfilled", Some("2030-02-01T09:00:00Z")),
            now()
        ));
        assert!(!is_cancelable(&a("booked", Some("garbage")), now()));
    }

    #[test]
    fn cancellation_patch_and_patched_agree() {
        let current = json!({"resourceType": "Appointment", "id": "a", "status": "booked"});
        let (patched, patch) = cancellation(&current, Some("feeling better"));
        assert_eq!(patched["status"], "cancelled");
        assert_eq!(patched["cancelationReason"]["coding"][0]["code"], "pat");
        assert_eq!(patched["cancelationReason"]["text"], "feeling better");
        // The patch sets exactly what the patched resource changes.
        assert_eq!(
            patch[0],
            json!({"op": "replace", "path": "/status", "value": "cancelled"})
        );
        assert_eq!(patch[1]["op"], "add");
        assert_eq!(patch[1]["path"], "/cancelationReason");
        assert_eq!(patch[1]["value"], patched["cancelationReason"]);
        assert_eq!(patch.as_array().unwrap().len(), 2);
    }

    #[test]
    fn booking_takes_time_and_actors_from_the_slot_and_schedule() {
        let slot = json!({"resourceType": "Slot", "id": "s1", "status": "free",
            "start": "2030-01-11T09:00:00Z", "end": "2030-01-11T09:30:00Z",
            "serviceType": [{"text": "Cardiology"}], "schedule": {"reference": "Schedule/x"}});
        let schedule = json!({"resourceType": "Schedule", "id": "x", "actor": [
            {"reference": "Practitioner/p1", "display": "Dr P"},
            {"reference": "Location/l1", "display": "Clinic"},
            {"reference": "Patient/someone-else"}
        ]});
        let body = booking_body("pat-1", &slot, Some(&schedule), Some("cough"), None, now());
        assert_eq!(body["status"], "booked");
        assert_eq!(body["slot"][0]["reference"], "Slot/s1");
        assert_eq!(body["start"], "2030-01-11T09:00:00Z");
        assert_eq!(body["reasonCode"][0]["text"], "cough");
        let actors: Vec<&str> = body["participant"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["actor"]["reference"].as_str().unwrap())
            .collect();
        assert_eq!(actors, ["Patient/pat-1", "Practitioner/p1", "Location/l1"]);
        let view = appointment_view(
            &json!({"id": "a", "status": "booked", "participant": body["participant"], "start": body["start"]}),
            Some("3".into()),
            None,
            now(),
        );
        assert_eq!(view.practitioner.as_deref(), Some("Dr P"));
        assert_eq!(view.location.as_deref(), Some("Clinic"));
        assert!(view.cancelable);
        assert_eq!(view.version.as_deref(), Some("3"));
    }

    #[test]
    fn texts_and_tokens_are_checked() {
        assert_eq!(check_text("reason", Some("  ")).unwrap(), None);
        assert!(check_text("reason", Some(&"x".repeat(501))).is_err());
        assert!(check_text("reason", Some(&"é".repeat(500))).is_ok());
        assert!(check_text("reason", Some("a\u{0}b")).is_err());
        assert!(check_token("service_type", "http://x|123").is_ok());
        assert!(check_token("service_type", "a,b").is_err());
        assert!(check_token("service_type", "a b").is_err());
        assert!(check_token("service_type", "a|b|c").is_err());
    }

    fn booked() -> Value {
        json!({"resourceType": "Appointment", "id": "a1", "status": "booked",
            "meta": {"versionId": "3"},
            "slot": [{"reference": "Slot/old"}],
            "start": "2030-01-11T09:00:00Z", "end": "2030-01-11T09:30:00Z",
            "participant": [
                {"actor": {"reference": "Patient/pat-1"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/p1"}, "status": "accepted"}
            ],
            "serviceType": [{"text": "Checkup"}]})
    }

    fn new_slot() -> Value {
        json!({"resourceType": "Slot", "id": "new", "status": "free",
            "start": "2030-01-12T10:00:00Z", "end": "2030-01-12T10:30:00Z"})
    }

    fn apply(current: &Value, patch: &Value) -> Value {
        let mut doc = current.clone();
        let ops: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
        json_patch::patch(&mut doc, &ops).unwrap();
        doc
    }

    #[test]
    fn the_reschedule_patch_moves_slot_and_time_and_adds_the_reason() {
        let current = booked();
        let patch = reschedule_patch(&current, &new_slot(), Some("conflict at work")).unwrap();
        assert_eq!(patch[0]["op"], "replace");
        assert_eq!(patch[0]["path"], "/slot");
        assert_eq!(patch[0]["value"], json!([{"reference": "Slot/new"}]));
        // No extension yet: the whole array is added.
        assert_eq!(patch[3]["path"], "/extension");
        let patched = apply(&current, &patch);
        assert_eq!(patched["start"], "2030-01-12T10:00:00Z");
        assert_eq!(patched["end"], "2030-01-12T10:30:00Z");
        assert_eq!(patched["extension"][0]["url"], RESCHEDULE_REASON_URL);
        assert_eq!(
            patched["extension"][0]["valueCodeableConcept"]["text"],
            "conflict at work"
        );
        assert!(reschedule_rule(&current, &patched).is_ok());

        // With extensions already there, one is appended and the others kept.
        let mut with_ext = booked();
        with_ext["extension"] = json!([{"url": IS_RESCHEDULABLE_URL, "valueBoolean": true}]);
        let patch = reschedule_patch(&with_ext, &new_slot(), None).unwrap();
        assert_eq!(patch[3]["path"], "/extension/-");
        let patched = apply(&with_ext, &patch);
        assert_eq!(patched["extension"].as_array().unwrap().len(), 2);
        assert_eq!(patched["extension"][0]["url"], IS_RESCHEDULABLE_URL);
        assert!(reschedule_rule(&with_ext, &patched).is_ok());
        // A slot without a time cannot be moved to.
        assert!(
            reschedule_patch(
                &current,
                &json!({"id": "x", "start": "2030-01-12T10:00:00Z"}),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn the_reschedule_rule_refuses_any_other_change() {
        let current = booked();
        let patched = apply(
            &current,
            &reschedule_patch(&current, &new_slot(), None).unwrap(),
        );
        let refused = |change: &dyn Fn(&mut Value)| {
            let mut p = patched.clone();
            change(&mut p);
            match reschedule_rule(&current, &p) {
                Err(PortalError::Refused { code, .. }) => code == "change_not_allowed",
                _ => false,
            }
        };
        // Another patient or another practitioner.
        assert!(refused(
            &|p| p["participant"][0]["actor"]["reference"] = json!("Patient/pat-2")
        ));
        assert!(refused(
            &|p| p["participant"][1]["actor"]["reference"] = json!("Practitioner/p2")
        ));
        assert!(refused(&|p| p["participant"]
            .as_array_mut()
            .unwrap()
            .pop()
            .map(drop)
            .unwrap()));
        // Status, service, a new element, a cancellation.
        assert!(refused(&|p| p["status"] = json!("cancelled")));
        assert!(refused(&|p| p["status"] = json!("arrived")));
        assert!(refused(&|p| p["serviceType"] = json!([{"text": "Surgery"}])));
        assert!(refused(&|p| p["comment"] = json!("hi")));
        assert!(refused(&|p| p["cancelationReason"] = json!({"text": "x"})));
        // Slots: none, two, not a Slot.
        assert!(refused(&|p| p["slot"] = json!([])));
        assert!(refused(
            &|p| p["slot"] = json!([{"reference": "Slot/a"}, {"reference": "Slot/b"}])
        ));
        assert!(refused(
            &|p| p["slot"] = json!([{"reference": "Schedule/a"}])
        ));
        // Extensions: only a reschedule reason may be added; none removed.
        assert!(refused(
            &|p| p["extension"][0]["url"] = json!("http://example.org/x")
        ));
        let mut with_ext = current.clone();
        with_ext["extension"] = json!([{"url": IS_RESCHEDULABLE_URL, "valueBoolean": false}]);
        let mut dropped = patched.clone();
        dropped["extension"] = json!([{"url": RESCHEDULE_REASON_URL}]);
        assert!(reschedule_rule(&with_ext, &dropped).is_err());
        // A proposed or cancelled appointment cannot be moved this way.
        let mut proposed = current.clone();
        proposed["status"] = json!("proposed");
        let mut p2 = patched.clone();
        p2["status"] = json!("proposed");
        assert!(reschedule_rule(&proposed, &p2).is_err());
        // meta and text may differ.
        let mut p3 = patched.clone();
        p3["meta"] = json!({"versionId": "4"});
        p3["text"] = json!({"status": "generated", "div": "<div/>"});
        assert!(reschedule_rule(&current, &p3).is_ok());
        assert!(not_reschedulable(&with_ext));
        assert!(!not_reschedulable(&current));
    }

    #[test]
    fn find_and_book_parameters_use_the_ihe_names() {
        let finding = Finding {
            start: now(),
            end: now() + Duration::days(7),
            service_type: Some("http://snomed.info/sct|408443003"),
            specialty: None,
            practitioner: Some("pr1"),
            location: Some("loc1"),
        };
        let p = find_parameters(&finding, "pat-1");
        assert_eq!(p["resourceType"], "Parameters");
        let by_name = |name: &str| {
            p["parameter"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == name)
                .cloned()
        };
        assert_eq!(
            by_name("start").unwrap()["valueDateTime"],
            "2030-01-10T12:00:00Z"
        );
        assert_eq!(
            by_name("end").unwrap()["valueDateTime"],
            "2030-01-17T12:00:00Z"
        );
        assert_eq!(
            by_name("visit-type").unwrap()["valueString"],
            "http://snomed.info/sct|408443003"
        );
        assert_eq!(
            by_name("practitioner").unwrap()["valueReference"]["reference"],
            "Practitioner/pr1"
        );
        assert_eq!(
            by_name("location-reference").unwrap()["valueReference"]["reference"],
            "Location/loc1"
        );
        assert_eq!(
            by_name("patient-reference").unwrap()["valueReference"]["reference"],
            "Patient/pat-1"
        );
        assert!(by_name("specialty").is_none());

        let b = book_parameters("prop-1", Some("first visit"));
        assert_eq!(
            b["parameter"][0],
            json!({"name": "appointment-reference", "valueReference": {"reference": "Appointment/prop-1"}})
        );
        assert_eq!(
            b["parameter"][1],
            json!({"name": "comment", "valueString": "first visit"})
        );
        assert_eq!(
            book_parameters("x", None)["parameter"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn unavailability_is_read_from_the_outcome() {
        let oo = |severity: &str, code: &str, text: &str| {
            json!({"resourceType": "OperationOutcome", "issue": [
                {"severity": severity, "code": code, "details": {"text": text}}]})
        };
        assert!(says_unavailable(&[oo("error", "conflict", "x")]));
        assert!(says_unavailable(&[oo(
            "error",
            "processing",
            "The appointment is no longer available"
        )]));
        assert!(!says_unavailable(&[oo("information", "conflict", "x")]));
        assert!(!says_unavailable(&[oo("error", "security", "denied")]));
        assert!(!says_unavailable(&[]));
    }
}
