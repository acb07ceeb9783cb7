//! The write interactions: create (conditional too), update with `If-Match`, JSON Patch
//! and delete, each through the store's rules.

use super::*;

/// Parses an `If-None-Exist` value (`identifier=x|y`, optionally with a leading `Type?`).
pub(crate) fn parse_condition(
    ty: &'static TypeInfo,
    value: &str,
) -> Result<SearchQuery, FhirError> {
    let value = value.split_once('?').map_or(value, |(_, q)| q);
    let params = query_pairs(Some(value));
    if params.is_empty() {
        return Err(FhirError::bad_request(
            "If-None-Exist has no search parameters",
        ));
    }
    Ok(SearchQuery::parse(ty, &params, false)?)
}

/// create: checks the body and stores it (or finds the `If-None-Exist` match).
pub(crate) fn do_create(
    state: &SandboxState,
    ty: &'static TypeInfo,
    body: &[u8],
    if_none_exist: Option<&str>,
) -> Result<(StatusCode, StoredResource), FhirError> {
    let resource = check_resource(ty, body)?;
    let condition = if_none_exist
        .map(|value| parse_condition(ty, value))
        .transpose()?;
    Ok(
        match state.store.create(ty.name, resource, condition.as_ref())? {
            Created::New(r) => (StatusCode::CREATED, r),
            Created::Existing(r) => (StatusCode::OK, r),
        },
    )
}

/// The checks of update on its body: a valid resource whose id is the URL's.
pub(crate) fn check_update(
    ty: &'static TypeInfo,
    id: &str,
    body: &[u8],
) -> Result<Value, FhirError> {
    if !portico_fhir::reference::is_valid_id(id) {
        return Err(FhirError::bad_request(format!(
            "'{id}' is not a valid FHIR id"
        )));
    }
    let resource = check_resource(ty, body)?;
    match resource.get("id").and_then(Value::as_str) {
        None => Err(FhirError::bad_request("the resource has no id")),
        Some(body_id) if body_id != id => Err(FhirError::bad_request(format!(
            "the resource id '{body_id}' does not match the URL's '{id}'"
        ))),
        Some(_) => Ok(resource),
    }
}

/// update: 200 for a new version, 201 when it created the resource.
pub(crate) fn do_update(
    state: &SandboxState,
    ty: &'static TypeInfo,
    id: &str,
    body: &[u8],
    if_match: Option<u32>,
) -> Result<(StatusCode, StoredResource), FhirError> {
    let resource = check_update(ty, id, body)?;
    let (r, created) = state.store.update(ty.name, id, resource, if_match)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, r))
}

/// Applies a JSON Patch to the current version of `ty/id` and checks the result.
/// Returns the patched resource and the version it was made from.
pub(crate) fn patched(
    state: &SandboxState,
    ty: &'static TypeInfo,
    id: &str,
    operations: &json_patch::Patch,
    if_match: Option<u32>,
) -> Result<(Value, u32), FhirError> {
    let current = state.store.read(ty.name, id)?;
    if let Some(expected) = if_match
        && expected != current.version
    {
        return Err(StoreError::VersionMismatch {
            expected,
            current: current.version.to_string(),
        }
        .into());
    }
    let internal = |e: serde_json::Error| {
        FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueCode::Exception,
            e.to_string(),
        )
    };
    let bytes = current.body.clone().unwrap_or_default();
    let mut doc: Value = serde_json::from_slice(&bytes).map_err(internal)?;
    let before = (doc.get("resourceType").cloned(), doc.get("id").cloned());
    json_patch::patch(&mut doc, operations)
        .map_err(|e| FhirError::unprocessable(format!("the patch cannot be applied: {e}")))?;
    if (doc.get("resourceType").cloned(), doc.get("id").cloned()) != before {
        return Err(FhirError::unprocessable(
            "a patch may not change the resource's id or resourceType",
        ));
    }
    let patched = serde_json::to_vec(&doc).map_err(internal)?;
    check_value(ty, &doc, &patched)?;
    Ok((doc, current.version))
}

/// patch: optimistic concurrency on the version that was patched; without `If-Match`,
/// retried a few times when another writer got in between.
pub(crate) fn do_patch(
    state: &SandboxState,
    ty: &'static TypeInfo,
    id: &str,
    operations: &json_patch::Patch,
    if_match: Option<u32>,
) -> Result<StoredResource, FhirError> {
    for _ in 0..5 {
        let (doc, version) = patched(state, ty, id, operations, if_match)?;
        match state.store.update(ty.name, id, doc, Some(version)) {
            Ok((r, _)) => return Ok(r),
            Err(StoreError::VersionMismatch { .. }) if if_match.is_none() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(FhirError::new(
        StatusCode::CONFLICT,
        IssueCode::Conflict,
        "the resource kept changing while it was being patched",
    ))
}

pub(super) async fn create(
    State(state): State<SandboxState>,
    Path(ty): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    let ty = supported_type(&ty)?;
    require_fhir_json(&headers)?;
    let if_none_exist = match headers.get("if-none-exist") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| FhirError::bad_request("If-None-Exist is not valid text"))?,
        ),
    };
    let (status, r) = do_create(&state, ty, &body, if_none_exist)?;
    Ok(resource_response(
        &state,
        status,
        &r,
        prefer(&headers).ret,
        true,
    ))
}

pub(super) async fn update(
    State(state): State<SandboxState>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    let ty = supported_type(&ty)?;
    require_fhir_json(&headers)?;
    let (status, r) = do_update(&state, ty, &id, &body, if_match(&headers)?)?;
    Ok(resource_response(
        &state,
        status,
        &r,
        prefer(&headers).ret,
        true,
    ))
}

pub(super) async fn patch(
    State(state): State<SandboxState>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    let ty = supported_type(&ty)?;
    if media_type(&headers).as_deref() != Some(portico_fhir::JSON_PATCH) {
        return Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueCode::NotSupported,
            "PATCH takes application/json-patch+json",
        ));
    }
    let operations = parse_patch(&body)?;
    let r = do_patch(&state, ty, &id, &operations, if_match(&headers)?)?;
    Ok(resource_response(
        &state,
        StatusCode::OK,
        &r,
        prefer(&headers).ret,
        false,
    ))
}

pub(crate) fn parse_patch(body: &[u8]) -> Result<json_patch::Patch, FhirError> {
    serde_json::from_slice(body)
        .map_err(|e| FhirError::bad_request(format!("invalid JSON Patch document: {e}")))
}

pub(super) async fn delete(
    State(state): State<SandboxState>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> FhirResult {
    let ty = supported_type(&ty)?;
    let deleted = state.store.delete(ty.name, &id, if_match(&headers)?)?;
    let mut response = fhir_response(StatusCode::NO_CONTENT, Body::empty());
    if let Some(r) = deleted {
        set_header(&mut response, header::ETAG, &r.etag());
    }
    Ok(response)
}

// ---------------------------------------------------------------------------------------
// CapabilityStatement
