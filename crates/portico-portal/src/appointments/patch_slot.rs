//! Rescheduling by patching the slot (Cerner, strategy `patch-slot`): one JSON Patch of
//! the same Appointment replacing `/slot`, `/start`, `/end` and adding the
//! `reschedule-reason` extension, with `If-Match`, under the gateway locks of both
//! slots. The patient write rules allow patients only to cancel, so it goes through
//! [`Ctx::patch_with_rule`] with [`reschedule_rule`] (only the slot, its time and the
//! extension may change).

use serde_json::{Value, json};

use super::read::load;
use super::views::{Rescheduled, appointment_view, is_cancelable};
use super::{not_cancelable, slot_unavailable};
use crate::context::{Ctx, Versioned};
use crate::error::{PortalError, PortalResult};
use crate::view::{array, parse_datetime, str_at};
use portico_upstream::UpstreamError;

/// Cerner's extension carrying why an appointment was rescheduled.
pub const RESCHEDULE_REASON_URL: &str =
    "https://fhir-ehr.cerner.com/r4/StructureDefinition/reschedule-reason";

/// Cerner's extension saying whether an appointment may be rescheduled.
pub const IS_RESCHEDULABLE_URL: &str =
    "https://fhir-ehr.cerner.com/r4/StructureDefinition/is-reschedulable";

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
pub(super) fn not_reschedulable(appointment: &Value) -> bool {
    array(appointment, "extension").any(|e| {
        str_at(e, "url") == Some(IS_RESCHEDULABLE_URL)
            && e.get("valueBoolean") == Some(&Value::Bool(false))
    })
}

/// Moves the booked appointment `old` to `slot_id` with one JSON Patch (same id).
pub(super) async fn patch_slot(
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
        guards.push(ctx.portal.lock(key).await?);
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
