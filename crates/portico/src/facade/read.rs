//! Reads: read, vread, `_history` and `Patient/{id}/$everything`.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use portico_guard::{Reuse, Target};

use super::render::{fhir_bytes_response, fhir_response, kept_body, render};
use super::search::{bundle_answer, check_count, parse_query};
use super::{FhirResult, MAX_COUNT, actor, checked_id, checked_type};
use crate::authn::Authenticated;
use crate::error::{ApiError, FhirError};
use crate::kept;
use crate::state::AppState;

pub(super) async fn read(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((rt, id)): Path<(String, String)>,
) -> FhirResult {
    checked_type(&rt)?;
    checked_id(&id)?;
    read_rendered(&state, &auth, Target::Current { rt: &rt, id: &id }).await
}

pub(super) async fn vread(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((rt, id, version)): Path<(String, String, String)>,
) -> FhirResult {
    checked_type(&rt)?;
    checked_id(&id)?;
    checked_id(&version)?;
    let target = Target::Version {
        rt: &rt,
        id: &id,
        version: &version,
    };
    read_rendered(&state, &auth, target).await
}

/// A read or vread answered from the rendered answer of an earlier hit when there is
/// one; otherwise checked and rendered (and kept for the next hit). Denials are never
/// kept: each is decided and audited again.
async fn read_rendered(state: &AppState, auth: &Authenticated, target: Target<'_>) -> FhirResult {
    let what = match target {
        Target::Current { rt, id } => format!("facade\nread\n{rt}/{id}\n"),
        Target::Version { rt, id, version } => format!("facade\nread\n{rt}/{id}\n{version}"),
    };
    let actor = actor(state, auth);
    let reply = state
        .guard()
        .session(&actor)
        .read_kept::<kept::Answer>(target, &what)
        .await?;
    let body = match &reply.answer {
        Reuse::Kept(answer) => kept_body(answer, &reply.upstream)?,
        Reuse::Fresh(checked) => {
            let body = render(state, &checked.resource);
            kept::keep_fresh(&reply.keeper, &body, 0);
            body
        }
    };
    Ok(fhir_bytes_response(
        state,
        StatusCode::OK,
        body,
        Some(&reply.meta),
    ))
}

pub(super) async fn instance_operation(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((rt, id, operation)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> FhirResult {
    checked_type(&rt)?;
    checked_id(&id)?;
    match operation.as_str() {
        "_history" => history(state, auth, rt, id, query).await,
        "$everything" if rt == "Patient" => everything(state, auth, id).await,
        _ => Err(FhirError(ApiError::not_found())),
    }
}

async fn history(
    state: AppState,
    auth: Authenticated,
    rt: String,
    id: String,
    query: Option<String>,
) -> FhirResult {
    let params: Vec<(String, String)> = parse_query(query.as_deref())
        .into_iter()
        .filter(|(k, _)| matches!(k.as_str(), "_count" | "_since" | "_at"))
        .collect();
    check_count(&params)?;
    let actor = actor(&state, &auth);
    let session = state.guard().session(&actor);
    let unchecked = session.history(&rt, &id, params).await?;
    bundle_answer(&state, session, unchecked, None).await
}

/// `Patient/{id}/$everything`, composed by the gateway from compartment searches so that
/// it works on EHRs without the operation, and only ever for the principal's own patient.
async fn everything(state: AppState, auth: Authenticated, id: String) -> FhirResult {
    let actor = actor(&state, &auth);
    let verified = state
        .guard()
        .session(&actor)
        .everything(&id, portico_guard::EVERYTHING_TYPES, MAX_COUNT)
        .await?;
    Ok(fhir_response(
        &state,
        StatusCode::OK,
        &verified.bundle,
        None,
    ))
}
