//! Booking, per the profile's `book` strategy.
//!
//! - `slot`: under the gateway lock `slot:<id>`, re-read the Slot (free and in the
//!   future, else `slot_unavailable`), then create a `booked` Appointment with the
//!   patient `accepted` and the Schedule's actors; the EHR stays the arbiter (its 409 is
//!   `slot_unavailable` too);
//! - `request`: a `proposed` Appointment with `requestedPeriod` (staff confirm it);
//! - `operations`: `$book` of an appointment the EHR offered (`operations.rs`).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::operations::book_operation;
use super::slots::slot_window;
use super::views::{AppointmentView, NewAppointment, appointment_view, versioned};
use super::{check_text, slot_unavailable};
use crate::context::{Ctx, Versioned};
use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::input::{check_id, check_token};
use crate::profile::BookStrategy;
use crate::view::{array, first_concept_text, instant, parse_datetime, str_at};
use portico_upstream::UpstreamError;

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
pub(super) async fn book_slot(
    ctx: Ctx<'_>,
    slot_id: &str,
    reason: Option<&str>,
    comment: Option<&str>,
    idem: &Idem,
) -> PortalResult<Versioned> {
    let _guard = ctx.portal.lock(&format!("slot:{slot_id}")).await?;
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
