//! `/access`: who may act for the patient (proxies: parents, caregivers, a spouse) and
//! ending one's access. The rules are [`portico_access::delegation`]'s; the domain code
//! is [`portico_portal::access`]. Only the patient may use these: a proxy acting for
//! them is refused with `proxy_not_permitted`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use portico_portal::access::{self, AccessList, Proxy};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Idempotent, PatientCaller, ProblemResult, ctx};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(revoke))
}

/// Who may act for the patient, with their level (`full`, `read-only`,
/// `billing-only`), period and whether the access is in force today.
#[utoipa::path(
    get,
    operation_id = "list_access",
    path = "/access",
    tag = "access",
    responses(
        (status = 200, description = "The patient's proxies", body = AccessList),
        super::ReadErrors,
        (status = 403, description = "A proxy asked (`proxy_not_permitted`), or the login may not read RelatedPerson (`scope_missing`)", body = super::Problem),
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: PatientCaller,
) -> ProblemResult<Json<AccessList>> {
    let rules = state.delegations().rules();
    Ok(Json(access::list(ctx(&state, &caller), rules).await?))
}

/// Ends a proxy's access now, written as the EHR profile says: the `RelatedPerson`'s
/// `period.end` set to this instant, or a `Consent` denying it access. The proxy's next
/// request (in an open session too) no longer reaches the patient. Revoking an access
/// that has already ended answers it unchanged; an EHR that manages proxies outside
/// FHIR answers 501 `not_supported_by_ehr`.
#[utoipa::path(
    post,
    operation_id = "revoke_access",
    path = "/access/{id}/revoke",
    tag = "access",
    params(
        ("id" = String, Path, description = "The RelatedPerson id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the write happen at most once"),
    ),
    responses(
        (status = 200, description = "The proxy, now ended", body = Proxy),
        super::WriteErrors,
        (status = 403, description = "A proxy asked (`proxy_not_permitted`), or the login may not update RelatedPerson (`scope_missing`)", body = super::Problem),
        (status = 404, description = "No such proxy of the patient's", body = super::Problem),
        (status = 409, description = "`version_conflict` (it changed meanwhile), or `idempotency_in_progress`", body = super::Problem),
        (status = 501, description = "The EHR manages proxy access outside FHIR (`not_supported_by_ehr`)", body = super::Problem),
        (status = 502, description = "The EHR failed; nothing changed", body = super::Problem),
        (status = 503, description = "The EHR is unavailable; `idempotency_unavailable` or `state_unavailable`: nothing was attempted", body = super::Problem),
    )
)]
async fn revoke(write: Idempotent, Path(id): Path<String>) -> ProblemResult<Response> {
    let rules = write.state().delegations().rules().clone();
    write
        .run(
            "revoke",
            &json!({"relationship": id}),
            StatusCode::OK,
            async |ctx, idem| access::revoke(ctx, &rules, &id, idem).await,
        )
        .await
}
