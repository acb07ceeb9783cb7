//! `GET /me` and `GET /dashboard`.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PatientCaller, ProblemResult, ctx};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(dashboard))
}

/// Who the portal is acting for.
#[utoipa::path(
    get,
    path = "/me",
    tag = "patient",
    responses(
        (status = 200, description = "The acting patient", body = portico_portal::me::Me),
        super::NotLoggedIn,
    )
)]
async fn me(
    State(state): State<AppState>,
    caller: PatientCaller,
) -> ProblemResult<Json<portico_portal::me::Me>> {
    Ok(Json(portico_portal::me::me(ctx(&state, &caller)).await?))
}

/// The portal's home page: upcoming appointments, active medications with refill
/// eligibility, open or unread message threads, recent lab results and the balance due,
/// loaded concurrently. A section the EHR cannot serve right now is listed in
/// `unavailable` instead of failing the page.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "patient",
    responses(
        (status = 200, description = "The dashboard", body = portico_portal::dashboard::Dashboard),
        super::ReadErrors,
        (status = 502, description = "The EHR failed for every section", body = super::Problem),
    )
)]
async fn dashboard(
    State(state): State<AppState>,
    caller: PatientCaller,
) -> ProblemResult<Json<portico_portal::dashboard::Dashboard>> {
    Ok(Json(
        portico_portal::dashboard::dashboard(ctx(&state, &caller)).await?,
    ))
}
