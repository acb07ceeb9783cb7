//! Rescheduling, per the profile's `reschedule` strategy.
//!
//! - `book-then-cancel`: book the new slot, cancel the old appointment; when the cancel
//!   fails, cancel the new booking again and say exactly what is left;
//! - `patch-slot` (Cerner): one patch of the same appointment (`patch_slot.rs`).

use serde_json::{Value, json};

use super::book::book_slot;
use super::cancel::cancel_loaded;
use super::patch_slot::patch_slot;
use super::read::load;
use super::views::{RescheduleRequest, Rescheduled, appointment_view, is_cancelable, versioned};
use super::{check_text, not_cancelable};
use crate::context::{Ctx, Versioned};
use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::input::check_id;
use crate::profile::RescheduleStrategy;
use crate::view::str_at;

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
    match cancel_loaded(ctx, old, reason, Some(&idem.step("cancel"))).await {
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
            match cancel_loaded(ctx, new, Some("reschedule undone"), None).await {
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
