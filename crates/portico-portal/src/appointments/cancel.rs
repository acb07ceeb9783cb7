//! Cancelling: JSON Patch (or PUT, per the profile's `cancel` strategy)
//! `status=cancelled` + `cancelationReason` `pat`, with `If-Match`, one re-read and
//! retry on a version conflict.

use serde_json::{Value, json};

use super::read::load;
use super::views::{AppointmentView, CancelRequest, appointment_view, is_cancelable};
use super::{check_text, not_cancelable};
use crate::context::{Ctx, Versioned};
use crate::error::{PortalError, PortalResult};
use crate::profile::CancelStrategy;

/// The cancellation reason code system (R4, binding strength example).
pub const CANCELLATION_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason";

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
pub(super) async fn cancel_loaded(
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
