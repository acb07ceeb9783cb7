//! `/referrals`: patient-initiated referral requests to the specialties the EHR profile
//! lists.
//!
//! The FHIR shape (per the profile's strategy) is in [`portico_portal::referrals`]; the
//! write runs through [`super::Idempotent`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portico_portal::referrals::{self, Referral, ReferralInput, ReferralList, SpecialtyList};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Idempotent, PatientCaller, ProblemResult, ctx, json_body};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, request_referral))
        .routes(routes!(specialties))
}

/// The specialties a referral may be requested to.
#[utoipa::path(
    get,
    operation_id = "list_referral_specialties",
    path = "/referrals/specialties",
    tag = "referrals",
    responses(
        (status = 200, description = "The configured specialties", body = SpecialtyList),
        super::NotLoggedIn,
    )
)]
async fn specialties(
    State(state): State<AppState>,
    caller: PatientCaller,
) -> ProblemResult<Json<SpecialtyList>> {
    Ok(Json(referrals::specialties(ctx(&state, &caller))))
}

/// The referral requests the patient made, newest first, with their status.
#[utoipa::path(
    get,
    operation_id = "list_referrals",
    path = "/referrals",
    tag = "referrals",
    responses(
        (status = 200, description = "The patient's referral requests", body = ReferralList),
        super::ReadErrors,
        (status = 403, description = "The login may not read referrals (`scope_missing`)", body = super::Problem),
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: PatientCaller,
) -> ProblemResult<Json<ReferralList>> {
    Ok(Json(referrals::list(ctx(&state, &caller)).await?))
}

/// Asks for a referral to a configured specialty. Send an `Idempotency-Key`: a retry
/// returns the same request instead of making another.
#[utoipa::path(
    post,
    operation_id = "request_referral",
    path = "/referrals",
    tag = "referrals",
    request_body = ReferralInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the write happen at most once")),
    responses(
        (status = 201, description = "The referral request", body = Referral),
        super::WriteErrors,
        super::BodyTooLarge,
        (status = 400, description = "Bad body: unknown field, empty reason, reason or notes longer than 1000 characters (`text_too_long`), control characters, invalid JSON (`invalid_body`), bad Idempotency-Key", body = super::Problem),
        (status = 403, description = "The login may not write referral requests", body = super::Problem),
        (status = 422, description = "`specialty_not_allowed`, `no_care_team` (communication strategy), `idempotency_key_reused`", body = super::Problem),
        (status = 502, description = "The EHR failed; the request was not made", body = super::Problem),
        (status = 503, description = "The EHR is unavailable, or the outcome is unknown (`outcome_unknown`); `idempotency_unavailable` or `state_unavailable`: the gateway's shared state cannot be reached, nothing was attempted", body = super::Problem),
    )
)]
async fn request_referral(
    write: Idempotent,
    headers: HeaderMap,
    body: Bytes,
) -> ProblemResult<Response> {
    let (input, value) = json_body::<ReferralInput>(&headers, &body)?;
    write
        .run(
            "referral",
            &value,
            StatusCode::CREATED,
            async |ctx, idem| referrals::request_referral(ctx, &input, idem).await,
        )
        .await
}
