//! Booking with `POST Appointment/$book` (IHE ITI Scheduling R4; Epic-like, strategy
//! `operations`): `appointment-reference` names the proposed appointment, allowed only
//! for one this gateway offered the patient (or one in their record), checked against
//! the patient write rules first, exactly once per key (an earlier booking found by id
//! or identifier is returned instead of booking again). The offers come from the slot
//! search's `$find` (`slots.rs`).

use serde_json::{Value, json};

use super::read::load_if_any;
use super::slot_unavailable;
use super::views::versioned;
use crate::context::{Ctx, Versioned, outcome_unknown};
use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::view::{array, parse_datetime, str_at};
use portico_access::Interaction;
use portico_upstream::UpstreamError;

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

/// Books the proposed appointment `id` with `$book`, exactly once per `idem`.
pub(super) async fn book_operation(
    ctx: Ctx<'_>,
    id: &str,
    comment: Option<&str>,
    idem: &Idem,
) -> PortalResult<Versioned> {
    let _guard = ctx.portal.lock(&format!("appointment:{id}")).await?;
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
            .await?
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
