//! Writes: create, update, JSON Patch, delete, and batch/transaction Bundles (refused).
//! The facade parses and bounds what the client sent; the guarded session decides
//! before anything goes upstream (see [`portico_guard`]'s `write` module).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use portico_access::{Denial, DenialReason, Interaction};
use portico_guard::{Base, Checked, IfNoneExist, Session};
use portico_upstream::ReturnPreference;
use serde_json::Value;

use super::render::written;
use super::{FhirResult, actor, bad_request, checked_id, checked_type};
use crate::authn::Authenticated;
use crate::error::{ApiError, FhirError};
use crate::state::AppState;

/// How deeply nested a submitted resource may be.
const MAX_DEPTH: usize = 64;

/// `POST /fhir` with a `batch` or `transaction` Bundle: refused whole. Checking each
/// entry as if sent alone is possible with the policy, but a transaction's entries can
/// reference each other (`urn:uuid`) and the upstream's atomicity differs per EHR, so
/// the facade does not pretend to support them; clients send the requests one by one.
pub(super) async fn bundle(State(state): State<AppState>, auth: Authenticated) -> FhirResult {
    let actor = actor(&state, &auth);
    let denial = Denial::new(
        DenialReason::UnsupportedSearch,
        "batch and transaction Bundles are not supported by this gateway; send each request on its own",
    );
    let message = denial.message().to_owned();
    state
        .guard()
        .session(&actor)
        .deny(Interaction::Create, "Bundle", None, denial)
        .await;
    Err(FhirError(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_supported",
        message,
    )))
}

/// Reads and checks a submitted resource: FHIR JSON (the structural rules of
/// `portico_fhir::parse::check_structure`), not too deep, of the type in the path.
///
/// fhirbolt's strict parse is deliberately not used on what patients send: fhirbolt
/// 0.4.0 never returns on an unknown element holding an array, so one request could
/// pin a core. The write rules in `portico-access` check the elements they rely on,
/// and the EHR validates the rest.
fn parse_resource_body(headers: &HeaderMap, body: &[u8], rt: &str) -> Result<Value, FhirError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = ct.split(';').next().unwrap_or_default().trim();
    if !matches!(media, "application/fhir+json" | "application/json") {
        return Err(FhirError(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/fhir+json",
        )));
    }
    let value = checked_structure(body)?;
    if portico_fhir::json::resource_type(&value) != Some(rt) {
        return Err(bad_request("resourceType does not match the URL"));
    }
    Ok(value)
}

fn checked_structure(body: &[u8]) -> Result<Value, FhirError> {
    use portico_fhir::parse::ParseError;
    match portico_fhir::parse::check_structure(body, MAX_DEPTH) {
        Ok((_, value)) => Ok(value),
        Err(ParseError::Json(_)) => Err(bad_request("the body is not valid JSON")),
        Err(ParseError::MissingResourceType | ParseError::UnknownResourceType) => {
            Err(bad_request("the body is not a FHIR resource"))
        }
        Err(e @ ParseError::Invalid { .. }) => Err(FhirError(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_resource",
            e.to_string(),
        ))),
    }
}

fn prefer(headers: &HeaderMap) -> Option<ReturnPreference> {
    let value = headers.get("prefer")?.to_str().ok()?;
    value.split([',', ';']).find_map(|part| match part.trim() {
        "return=minimal" => Some(ReturnPreference::Minimal),
        "return=representation" => Some(ReturnPreference::Representation),
        "return=OperationOutcome" => Some(ReturnPreference::OperationOutcome),
        _ => None,
    })
}

pub(super) async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(rt): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    checked_type(&rt)?;
    let mut resource = parse_resource_body(&headers, &body, &rt)?;
    // The server assigns ids on create.
    if let Some(obj) = resource.as_object_mut() {
        obj.remove("id");
        obj.remove("meta");
    }
    // A conditional create is also a search: the session narrows it like one.
    let condition = match headers.get("if-none-exist").map(|v| v.to_str()) {
        None => None,
        Some(Err(_)) => return Err(bad_request("If-None-Exist is not valid")),
        Some(Ok(q)) => Some(IfNoneExist::Client(
            url::form_urlencoded::parse(q.trim_start_matches('?').as_bytes())
                .into_owned()
                .collect(),
        )),
    };
    let actor = actor(&state, &auth);
    let sent = state
        .guard()
        .session(&actor)
        .create(&rt, &resource, condition, prefer(&headers))
        .await?;
    written(&state, sent)
}

/// Reads the current version for an update or patch, checked like a read, and its
/// version, which must be the one the client saw (`If-Match`, when sent).
async fn current_version(
    session: Session<'_>,
    rt: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<(Checked, String), FhirError> {
    let current = session.current(rt, id).await?;
    let version = current.version().ok_or_else(|| {
        FhirError(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            "the EHR gave no version",
        ))
    })?;
    if let Some(theirs) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        let theirs = portico_upstream::response::parse_etag_version(theirs);
        if theirs.as_deref() != Some(version.as_str()) {
            return Err(FhirError(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version_conflict",
                "the resource changed since it was read; reload and try again",
            )));
        }
    }
    Ok((current, version))
}

/// The version a change is checked against and sent with (`If-Match`).
fn base<'a>(rt: &'a str, id: &'a str, current: &'a Checked, version: &'a str) -> Base<'a> {
    Base {
        rt,
        id,
        resource: &current.resource,
        version: Some(version),
    }
}

pub(super) async fn update(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((rt, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    checked_type(&rt)?;
    checked_id(&id)?;
    let resource = parse_resource_body(&headers, &body, &rt)?;
    if portico_fhir::json::id(&resource) != Some(id.as_str()) {
        return Err(bad_request("the resource id must match the URL"));
    }
    let actor = actor(&state, &auth);
    let session = state.guard().session(&actor);
    let (current, version) = current_version(session, &rt, &id, &headers).await?;
    let sent = session
        .update(
            base(&rt, &id, &current, &version),
            &resource,
            prefer(&headers),
        )
        .await?;
    written(&state, sent)
}

pub(super) async fn patch(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((rt, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    checked_type(&rt)?;
    checked_id(&id)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.starts_with(portico_fhir::JSON_PATCH) {
        return Err(FhirError(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "PATCH takes application/json-patch+json",
        )));
    }
    let operations: json_patch::Patch = serde_json::from_slice(&body)
        .map_err(|_| bad_request("the body is not a JSON Patch document"))?;
    let actor = actor(&state, &auth);
    let session = state.guard().session(&actor);
    let (current, version) = current_version(session, &rt, &id, &headers).await?;
    // Check the resource as it would be after the patch.
    let mut patched = current.resource.clone();
    json_patch::patch(&mut patched, &operations).map_err(|_| {
        FhirError(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_patch",
            "the patch does not apply",
        ))
    })?;
    if portico_fhir::json::resource_type(&patched) != Some(rt.as_str())
        || portico_fhir::json::id(&patched) != Some(id.as_str())
    {
        return Err(FhirError(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_patch",
            "a patch may not change resourceType or id",
        )));
    }
    checked_structure(patched.to_string().as_bytes())?;
    // Send exactly what was checked: the patch as parsed here, re-serialized, so that a
    // body an upstream parser would read differently (duplicate keys) cannot slip past.
    let checked_patch =
        Bytes::from(serde_json::to_vec(&operations).map_err(|_| bad_request("invalid patch"))?);
    let base = base(&rt, &id, &current, &version);
    let sent = session
        .patch(base, checked_patch, &patched, prefer(&headers))
        .await?;
    written(&state, sent)
}

pub(super) async fn delete(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((rt, id)): Path<(String, String)>,
) -> FhirResult {
    checked_type(&rt)?;
    checked_id(&id)?;
    let actor = actor(&state, &auth);
    let session = state.guard().session(&actor);
    let empty = serde_json::json!({"resourceType": rt, "id": id});
    // No principal the policy knows may delete today; should that change, the current
    // version must be checked here first, as for updates.
    let denial = match session.policy().check_write(
        actor.principal(),
        Interaction::Delete,
        &rt,
        &empty,
        None,
    ) {
        Err(denial) => denial,
        Ok(_) => Denial::new(DenialReason::DeleteNotAllowed, "delete is not allowed"),
    };
    Err(session
        .deny(Interaction::Delete, &rt, Some(&id), denial)
        .await
        .into())
}
