//! Cancelling: JSON Patch (or PUT, per the profile's `cancel` strategy)
//! `status=cancelled` + `cancelationReason` `pat`, with `If-Match`, one re-read and
//! retry on a version conflict.
//!
//! Exactly once per `Idempotency-Key`, like the creates: the cancellation carries the
//! request's identity (an extension of `cancelationReason` holding the business
//! identifier `idem.step("cancel")`), so that
//! - a retry whose earlier attempt was applied although its answer was lost finds its
//!   own cancellation and answers it (another request finds an appointment it may no
//!   longer cancel: `not_cancelable`);
//! - when the EHR fails in a way that may have left the change applied (a timeout, a
//!   broken connection, a 5xx, an answer that cannot be read), the appointment is read
//!   again: cancelled by this request → the success; unchanged → the failure (nothing
//!   happened); anything else, or unreadable → `outcome_unknown` (retry with the same
//!   key). An EHR that drops the extension only loses the first point.

use serde_json::{Value, json};

use super::read::load;
use super::views::{AppointmentView, CancelRequest, appointment_view, is_cancelable};
use super::{check_text, not_cancelable};
use crate::context::{Ctx, Versioned, outcome_unknown};
use crate::error::{PortalError, PortalResult};
use crate::idempotency::{IDENTIFIER_SYSTEM, Idem};
use crate::profile::CancelStrategy;
use crate::view::{array, str_at};

/// The cancellation reason code system (R4, binding strength example).
pub const CANCELLATION_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason";

/// The extension of `cancelationReason` that carries the business identifier of the
/// request that cancelled (`valueIdentifier`).
pub const CANCELLED_BY_URL: &str =
    "https://portico.dev/fhir/StructureDefinition/cancelled-by-request";

/// The cancellation: the patched resource, and the JSON Patch that makes it. With
/// `mark`, the reason carries the request's identity ([`CANCELLED_BY_URL`]).
pub fn cancellation(current: &Value, reason: Option<&str>, mark: Option<&Idem>) -> (Value, Value) {
    let mut concept = json!({"coding": [{
        "system": CANCELLATION_SYSTEM,
        "code": "pat",
        "display": "Patient"
    }]});
    if let Some(text) = reason {
        concept["text"] = Value::String(text.to_owned());
    }
    if let Some(mark) = mark {
        concept["extension"] = json!([{
            "url": CANCELLED_BY_URL,
            "valueIdentifier": {"system": IDENTIFIER_SYSTEM, "value": mark.value()}
        }]);
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

/// Whether `appointment` is cancelled, by the request whose identity is `mark`.
pub fn cancelled_by(appointment: &Value, mark: &Idem) -> bool {
    str_at(appointment, "status") == Some("cancelled")
        && appointment
            .get("cancelationReason")
            .into_iter()
            .flat_map(|reason| array(reason, "extension"))
            .any(|e| {
                str_at(e, "url") == Some(CANCELLED_BY_URL)
                    && e.pointer("/valueIdentifier/system").and_then(Value::as_str)
                        == Some(IDENTIFIER_SYSTEM)
                    && e.pointer("/valueIdentifier/value").and_then(Value::as_str)
                        == Some(mark.value())
            })
}

/// Cancels the patient's appointment `id`, once per `idem` (see the module docs).
pub async fn cancel(
    ctx: Ctx<'_>,
    id: &str,
    request: &CancelRequest,
    idem: &Idem,
) -> PortalResult<AppointmentView> {
    let reason = check_text("reason", request.reason.as_deref())?;
    let mark = idem.step("cancel");
    let view = |done: Versioned| appointment_view(&done.resource, done.version, None, ctx.now());
    let current = load(ctx, id).await?;
    // A retry whose earlier attempt was applied, its answer lost.
    if cancelled_by(&current.resource, &mark) {
        return Ok(view(current));
    }
    let version = current.version.clone();
    match cancel_loaded(ctx, current, reason.as_deref(), Some(&mark)).await {
        Ok(done) => Ok(view(done)),
        Err(PortalError::Upstream(e)) if outcome_unknown(&e) => {
            tracing::warn!(error = %e, "cancel failed mid-flight; reading the appointment again");
            match load(ctx, id).await {
                Ok(again) if cancelled_by(&again.resource, &mark) => Ok(view(again)),
                Ok(again)
                    if again.version == version
                        && str_at(&again.resource, "status") != Some("cancelled") =>
                {
                    Err(PortalError::Upstream(e))
                }
                _ => Err(PortalError::OutcomeUnknown {
                    action: "the cancellation",
                }),
            }
        }
        Err(e) => Err(e),
    }
}

/// Cancels an appointment already read, retrying once after a version conflict. With
/// `mark`, the cancellation carries that identity.
pub(super) async fn cancel_loaded(
    ctx: Ctx<'_>,
    current: Versioned,
    reason: Option<&str>,
    mark: Option<&Idem>,
) -> PortalResult<Versioned> {
    if !is_cancelable(&current.resource, ctx.now()) {
        return Err(not_cancelable());
    }
    match send_cancel(ctx, &current, reason, mark).await {
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
            send_cancel(ctx, &again, reason, mark).await
        }
        other => other,
    }
}

async fn send_cancel(
    ctx: Ctx<'_>,
    current: &Versioned,
    reason: Option<&str>,
    mark: Option<&Idem>,
) -> PortalResult<Versioned> {
    let (patched, patch) = cancellation(&current.resource, reason, mark);
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
