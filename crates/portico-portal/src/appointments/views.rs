//! The appointment views and requests, and the FHIR → view mapping (pure).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::context::{Page, Versioned};
use crate::me::display_name;
use crate::view::{array, concept_text, first_concept_text, parse_datetime, str_at};

/// Statuses from which a patient may cancel (or reschedule).
const CANCELABLE: &[&str] = &["booked", "proposed", "pending"];

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

pub(super) fn actor_display(resource: &Value, page: Option<&Page>, rt: &str) -> Option<String> {
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

pub(super) fn versioned(resource: Value) -> Versioned {
    Versioned {
        version: resource
            .pointer("/meta/versionId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        stale: None,
        resource,
    }
}
