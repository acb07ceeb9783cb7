//! `/medications` and `/refill-requests`: prescriptions with their refill eligibility,
//! and refill requests.
//!
//! The eligibility rules and the FHIR shape of a refill request (per the EHR profile's
//! strategy) are in [`portico_portal::medications`]; the write runs through
//! [`super::Idempotent`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portico_portal::medications::{
    self, MedicationList, RefillInput, RefillRequest, RefillRequestList,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Idempotent, PatientCaller, ProblemResult, ctx, json_body};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(request_refill))
        .routes(routes!(refill_requests))
}

/// The patient's prescriptions (active and on hold, and those finished within the last
/// year) with refills left, the last fill and whether a refill may be requested now.
#[utoipa::path(
    get,
    operation_id = "list_medications",
    path = "/medications",
    tag = "medications",
    responses(
        (status = 200, description = "The prescriptions", body = MedicationList),
        super::ReadErrors,
        (status = 403, description = "The login may not read medications (`scope_missing`)", body = super::Problem),
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: PatientCaller,
) -> ProblemResult<Json<MedicationList>> {
    Ok(Json(medications::list(ctx(&state, &caller)).await?))
}

/// Asks the care team to refill a prescription. Eligibility is checked again on fresh
/// data; when it fails the answer is 422 `refill_not_eligible` with `details.reason`
/// (`not_active`, `not_an_order`, `reported_medication`, `not_yet_valid`, `expired`,
/// `acute_course`, `no_refills_left`, `already_requested`, `too_soon`,
/// `history_unavailable`: the pharmacy history could not be read whole),
/// `details.message` and, for `too_soon`, `details.next_eligible`. Send an
/// `Idempotency-Key`: a retry returns the same request instead of making another.
#[utoipa::path(
    post,
    operation_id = "request_refill",
    path = "/medications/{id}/refill-requests",
    tag = "medications",
    request_body = RefillInput,
    params(
        ("id" = String, Path, description = "The MedicationRequest id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the write happen at most once"),
    ),
    responses(
        (status = 201, description = "The refill request", body = RefillRequest),
        super::WriteErrors,
        super::BodyTooLarge,
        (status = 400, description = "Bad body: unknown field, note longer than 500 or pharmacy longer than 200 characters (`text_too_long`), control characters, invalid JSON (`invalid_body`), bad Idempotency-Key", body = super::Problem),
        (status = 403, description = "The login may not write refill requests", body = super::Problem),
        (status = 404, description = "No such prescription of the patient's", body = super::Problem),
        (status = 422, description = "`refill_not_eligible` (see `details.reason`), `no_recipient`, `idempotency_key_reused`", body = super::Problem),
        (status = 502, description = "The EHR failed; the request was not made", body = super::Problem),
        (status = 503, description = "The EHR is unavailable (also when only stale cached data could be read: eligibility needs fresh data), or the outcome is unknown (`outcome_unknown`); `idempotency_unavailable` or `state_unavailable`: the gateway's shared state cannot be reached, nothing was attempted", body = super::Problem),
    )
)]
async fn request_refill(
    write: Idempotent,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ProblemResult<Response> {
    let (input, value) = json_body::<RefillInput>(&headers, &body)?;
    // The same key and body for another prescription is another request.
    let value = serde_json::json!({"medication_request": id, "body": value});
    write
        .run("refill", &value, StatusCode::CREATED, async |ctx, idem| {
            medications::request_refill(ctx, &id, &input, idem).await
        })
        .await
}

/// The patient's refill requests, newest first, with their progress.
#[utoipa::path(
    get,
    operation_id = "list_refill_requests",
    path = "/refill-requests",
    tag = "medications",
    responses(
        (status = 200, description = "The refill requests", body = RefillRequestList),
        super::ReadErrors,
        (status = 403, description = "The login may not read refill requests (`scope_missing`)", body = super::Problem),
    )
)]
async fn refill_requests(
    State(state): State<AppState>,
    caller: PatientCaller,
) -> ProblemResult<Json<RefillRequestList>> {
    Ok(Json(
        medications::refill_requests(ctx(&state, &caller)).await?,
    ))
}
