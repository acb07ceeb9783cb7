//! `GET /me` and `GET /dashboard`.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PatientCaller, PortalResult, ctx};
use crate::app::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me))
}

/// Who the portal is acting for.
#[utoipa::path(
    get,
    path = "/me",
    tag = "patient",
    responses(
        (status = 200, description = "The acting patient", body = portico_portal::me::Me),
        (status = 401, description = "Not logged in", body = super::Problem),
    )
)]
async fn me(
    State(state): State<AppState>,
    caller: PatientCaller,
) -> PortalResult<Json<portico_portal::me::Me>> {
    Ok(Json(portico_portal::me::me(ctx(&state, &caller)).await?))
}
