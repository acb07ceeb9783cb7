//! `/appointments`: list, slot search, book, cancel, reschedule.
//!
//! The FHIR strategies (slot booking under a gateway lock with the EHR as arbiter, or
//! `Appointment/$find` + `$book`; cancel by JSON Patch or PUT with `If-Match`;
//! reschedule as book-then-cancel with an undo, or as one JSON Patch of the slot) are in
//! [`portico_portal::appointments`]; every write runs through [`super::Idempotent`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portico_portal::appointments::{
    self, AppointmentList, AppointmentView, CancelRequest, ListQuery, NewAppointment,
    RescheduleRequest, Rescheduled, SlotList, SlotQuery,
};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Idempotent, PatientCaller, ProblemResult, ctx, json_body};
use crate::error::{ProblemError, RequestError};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, book))
        .routes(routes!(slots))
        .routes(routes!(get_one))
        .routes(routes!(cancel))
        .routes(routes!(reschedule))
}

fn bad_query(e: &QueryRejection) -> ProblemError {
    RequestError::InvalidQuery(e.body_text()).into()
}

/// The patient's appointments: `upcoming` (soonest first, requests without a time
/// last) or `past` (newest first), at most 100.
#[utoipa::path(
    get,
    path = "/appointments",
    operation_id = "list_appointments",
    tag = "appointments",
    params(ListQuery),
    responses(
        (status = 200, description = "The appointments", body = AppointmentList),
        super::ReadErrors,
        (status = 400, description = "Bad parameters (`invalid_request`)", body = super::Problem),
        (status = 403, description = "The login may not read appointments", body = super::Problem),
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: PatientCaller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ProblemResult<Json<AppointmentList>> {
    let Query(query) = query.map_err(|e| bad_query(&e))?;
    let when = query.when.unwrap_or_default();
    Ok(Json(appointments::list(ctx(&state, &caller), when).await?))
}

/// Free slots in a bounded window (default: the next 14 days). With an EHR that
/// schedules through `Appointment/$find` and `$book` (profile `book = "operations"`,
/// Epic-like), a "slot" is a proposed appointment the EHR offered for this patient: its
/// `id` is what `POST /appointments` books, for a limited time.
#[utoipa::path(
    get,
    path = "/appointments/slots",
    operation_id = "search_slots",
    tag = "appointments",
    params(SlotQuery),
    responses(
        (status = 200, description = "Free slots, soonest first", body = SlotList),
        super::ReadErrors,
        (status = 400, description = "Bad window (`invalid_request`: end before start, too long, in the past), bad parameter, or `service_type_required`", body = super::Problem),
    )
)]
async fn slots(
    State(state): State<AppState>,
    caller: PatientCaller,
    query: Result<Query<SlotQuery>, QueryRejection>,
) -> ProblemResult<Json<SlotList>> {
    let Query(query) = query.map_err(|e| bad_query(&e))?;
    Ok(Json(
        appointments::search_slots(ctx(&state, &caller), &query).await?,
    ))
}

/// One of the patient's appointments.
#[utoipa::path(
    get,
    path = "/appointments/{id}",
    operation_id = "get_appointment",
    tag = "appointments",
    params(("id" = String, Path, description = "The Appointment id")),
    responses(
        (status = 200, description = "The appointment", body = AppointmentView),
        super::ReadErrors,
        (status = 404, description = "No such appointment of the patient's", body = super::Problem),
    )
)]
async fn get_one(
    State(state): State<AppState>,
    caller: PatientCaller,
    Path(id): Path<String>,
) -> ProblemResult<Json<AppointmentView>> {
    Ok(Json(appointments::get(ctx(&state, &caller), &id).await?))
}

/// Books an appointment: a free slot (`slot_id`; with `$find`/`$book` EHRs, the id of
/// an offered proposed appointment from the slot search), or, with EHRs that take
/// requests, a wished-for period (`requested_start`, `requested_end`, `service_type`).
/// Send an `Idempotency-Key`: a retry books at most once.
#[utoipa::path(
    post,
    path = "/appointments",
    operation_id = "book_appointment",
    tag = "appointments",
    request_body = NewAppointment,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the write happen at most once")),
    responses(
        (status = 201, description = "The booked (or requested) appointment", body = AppointmentView),
        super::WriteErrors,
        super::BodyTooLarge,
        (status = 400, description = "Bad body (`invalid_body`, `invalid_request`, `text_too_long`)", body = super::Problem),
        (status = 403, description = "The login may not book", body = super::Problem),
        (status = 404, description = "No such slot (or no such offer made to this patient)", body = super::Problem),
        (status = 409, description = "`slot_unavailable` (taken, or in the past), `idempotency_in_progress`, or `busy` (another request is booking it; retry shortly)", body = super::Problem),
        (status = 422, description = "`idempotency_key_reused`", body = super::Problem),
        (status = 502, description = "The EHR failed and nothing was booked", body = super::Problem),
        (status = 503, description = "The EHR is unavailable, or the outcome is unknown (`outcome_unknown`: retry with the same key); `idempotency_unavailable` or `state_unavailable`: the gateway's shared state cannot be reached, nothing was attempted", body = super::Problem),
    )
)]
async fn book(write: Idempotent, headers: HeaderMap, body: Bytes) -> ProblemResult<Response> {
    let (new, value) = json_body::<NewAppointment>(&headers, &body)?;
    write
        .run("book", &value, StatusCode::CREATED, async |ctx, idem| {
            appointments::book(ctx, &new, idem).await
        })
        .await
}

/// Cancels one of the patient's appointments (booked, proposed or pending, not yet
/// started), with the cancellation reason "patient".
#[utoipa::path(
    post,
    path = "/appointments/{id}/cancel",
    operation_id = "cancel_appointment",
    tag = "appointments",
    request_body = CancelRequest,
    params(
        ("id" = String, Path, description = "The Appointment id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the write happen at most once"),
    ),
    responses(
        (status = 200, description = "The cancelled appointment", body = AppointmentView),
        super::WriteErrors,
        (status = 400, description = "Bad body (`invalid_body`, `text_too_long`)", body = super::Problem),
        (status = 403, description = "The login may not cancel", body = super::Problem),
        (status = 404, description = "No such appointment of the patient's", body = super::Problem),
        (status = 409, description = "`version_conflict` (it kept changing), or `idempotency_in_progress`", body = super::Problem),
        (status = 422, description = "`not_cancelable` (already cancelled, past, or fulfilled), `idempotency_key_reused`", body = super::Problem),
        (status = 502, description = "The EHR failed; nothing changed", body = super::Problem),
        (status = 503, description = "The EHR is unavailable, or the outcome is unknown (`outcome_unknown`: retry with the same key); `idempotency_unavailable` or `state_unavailable`: the gateway's shared state cannot be reached, nothing was attempted", body = super::Problem),
    )
)]
async fn cancel(
    write: Idempotent,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ProblemResult<Response> {
    let (request, value) = json_body::<CancelRequest>(&headers, &body)?;
    let fingerprint = json!({"appointment": id, "body": value});
    write
        .run("cancel", &fingerprint, StatusCode::OK, async |ctx, idem| {
            appointments::cancel(ctx, &id, &request, idem).await
        })
        .await
}

/// Moves one of the patient's appointments to another free slot. Generic EHRs: the new
/// slot is booked first, then the old appointment cancelled; if the cancel fails the
/// new booking is cancelled again (`reschedule_failed`: nothing changed); if that fails
/// too the answer is `reschedule_incomplete` and its `details` name both appointments.
/// EHRs that move an appointment in place (profile `reschedule = "patch-slot"`,
/// Cerner): one JSON Patch of the same appointment (same id) onto the new slot, with a
/// reschedule reason.
#[utoipa::path(
    post,
    path = "/appointments/{id}/reschedule",
    operation_id = "reschedule_appointment",
    tag = "appointments",
    request_body = RescheduleRequest,
    params(
        ("id" = String, Path, description = "The Appointment id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the write happen at most once"),
    ),
    responses(
        (status = 200, description = "The new appointment and the old one (cancelled; or, moved in place, the same appointment at its old time)", body = Rescheduled),
        super::WriteErrors,
        (status = 400, description = "Bad body (`invalid_body`, `invalid_request`, `text_too_long`)", body = super::Problem),
        (status = 403, description = "The login may not reschedule", body = super::Problem),
        (status = 404, description = "No such appointment of the patient's, or no such slot", body = super::Problem),
        (status = 409, description = "`slot_unavailable`, `version_conflict`, `idempotency_in_progress`, or `busy` (another request is changing the slot; retry shortly)", body = super::Problem),
        (status = 422, description = "`not_cancelable` (also: not booked, or the EHR marks it not reschedulable), `change_not_allowed` (a move in place would change more than the slot and its time), `idempotency_key_reused`", body = super::Problem),
        (status = 502, description = "`reschedule_failed` (nothing changed) or `reschedule_incomplete` (both appointments are booked; see `details`), or the EHR failed", body = super::Problem),
        (status = 503, description = "The EHR is unavailable, or the outcome is unknown (`outcome_unknown`); `idempotency_unavailable` or `state_unavailable`: the gateway's shared state cannot be reached, nothing was attempted", body = super::Problem),
    )
)]
async fn reschedule(
    write: Idempotent,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ProblemResult<Response> {
    let (request, value) = json_body::<RescheduleRequest>(&headers, &body)?;
    let fingerprint = json!({"appointment": id, "body": value});
    write
        .run(
            "reschedule",
            &fingerprint,
            StatusCode::OK,
            async |ctx, idem| appointments::reschedule(ctx, &id, &request, idem).await,
        )
        .await
}
