//! `POST /fhir` with a `batch` or `transaction` Bundle (R4 `http.html#transaction`).
//!
//! A batch runs each entry on its own, exactly as the standalone interaction would,
//! and reports each outcome in a `batch-response`. A transaction is all or nothing:
//! every entry is checked first (resource validity, `If-Match`, `If-None-Exist`), then
//! the writes are made together under the store's write lock
//! ([`crate::store::Store::transaction`]); any failure answers with that entry's error
//! and nothing is written. `urn:uuid:` full URLs of created entries are rewritten in
//! the references of the other entries. Reads (`GET` entries) run after the writes; as
//! those are committed by then, a failing read is reported in its own entry.
//!
//! Entries: `GET` (read, vread, `_history`, search), `POST` (create, with
//! `ifNoneExist`), `PUT` (update, with `ifMatch`), `PATCH` (a `Binary` carrying an
//! `application/json-patch+json` document, with `ifMatch`), `DELETE`. In a transaction,
//! two entries may not touch the same resource.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use portico_fhir::outcome::IssueCode;
use serde_json::{Value, json};

use super::{
    BundleWriter, FhirError, FhirResult, Return, check_resource, check_update, do_create, do_patch,
    do_update, fhir_response, history_bundle, parse_condition, parse_patch, parse_version_tag,
    patched, prefer, push_json, query_pairs, require_fhir_json, search_bundle, supported_type,
};
use crate::search::TypeInfo;
use crate::state::SandboxState;
use crate::store::{self, StoreError, StoredResource, TxOp, TxOutcome};

/// The most entries one Bundle may carry.
const MAX_ENTRIES: usize = 1000;

/// What a request entry addresses.
enum Target {
    Type(&'static TypeInfo),
    Instance(&'static TypeInfo, String),
    History(&'static TypeInfo, String),
    Version(&'static TypeInfo, String, String),
}

/// One parsed `Bundle.entry.request` with its resource.
struct EntryRequest<'a> {
    method: &'a str,
    target: Target,
    query: Option<String>,
    if_match: Option<u32>,
    if_none_exist: Option<&'a str>,
    full_url: Option<&'a str>,
    resource: Option<&'a Value>,
}

/// What one entry produced.
struct EntryResult {
    status: StatusCode,
    resource: Option<StoredResource>,
    /// A Bundle (search or history) as raw JSON.
    bundle: Option<Vec<u8>>,
    location: bool,
}

impl EntryResult {
    fn resource(status: StatusCode, r: StoredResource, location: bool) -> EntryResult {
        EntryResult {
            status,
            resource: Some(r),
            bundle: None,
            location,
        }
    }
}

/// `POST /fhir`.
pub(super) async fn handle(
    State(state): State<SandboxState>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    require_fhir_json(&headers)?;
    let bundle: Value = serde_json::from_slice(&body)
        .map_err(|e| FhirError::bad_request(format!("body is not valid JSON: {e}")))?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirError::bad_request(
            "only a batch or transaction Bundle can be posted to the base",
        ));
    }
    let entries: &[Value] = match bundle.get("entry") {
        None => &[],
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(FhirError::bad_request("Bundle.entry must be an array")),
    };
    if entries.len() > MAX_ENTRIES {
        return Err(FhirError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueCode::TooCostly,
            format!("a Bundle may carry at most {MAX_ENTRIES} entries"),
        ));
    }
    let ret = prefer(&headers).ret;
    let out = match bundle.get("type").and_then(Value::as_str) {
        Some("batch") => batch(&state, entries, ret),
        Some("transaction") => transaction(&state, entries, ret)?,
        _ => {
            return Err(FhirError::bad_request(
                "Bundle.type must be batch or transaction",
            ));
        }
    };
    Ok(fhir_response(StatusCode::OK, out.into()))
}

fn entry_error(index: usize, e: FhirError) -> FhirError {
    FhirError {
        message: format!("entry {index}: {}", e.message),
        ..e
    }
}

fn parse_entry<'a>(state: &SandboxState, entry: &'a Value) -> Result<EntryRequest<'a>, FhirError> {
    let request = entry
        .get("request")
        .ok_or_else(|| FhirError::bad_request("entry has no request"))?;
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| FhirError::bad_request("entry.request has no method"))?;
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| FhirError::bad_request("entry.request has no url"))?;
    let own_base = format!("{}/", state.fhir_base());
    let url = url.strip_prefix(&own_base).unwrap_or(url);
    if url.contains("://") {
        return Err(FhirError::bad_request(
            "entry.request.url must be relative to this server",
        ));
    }
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (url, None),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let target = match segments.as_slice() {
        [ty] => Target::Type(supported_type(ty)?),
        [ty, id] => Target::Instance(supported_type(ty)?, (*id).to_owned()),
        [ty, id, "_history"] => Target::History(supported_type(ty)?, (*id).to_owned()),
        [ty, id, "_history", vid] => {
            Target::Version(supported_type(ty)?, (*id).to_owned(), (*vid).to_owned())
        }
        _ => {
            return Err(FhirError::bad_request(format!(
                "unsupported entry.request.url '{url}'"
            )));
        }
    };
    let if_match = match request.get("ifMatch").and_then(Value::as_str) {
        None => None,
        Some(tag) => Some(parse_version_tag(tag).ok_or_else(|| {
            FhirError::bad_request("ifMatch must be a version ETag like W/\"1\"")
        })?),
    };
    Ok(EntryRequest {
        method,
        target,
        query,
        if_match,
        if_none_exist: request.get("ifNoneExist").and_then(Value::as_str),
        full_url: entry.get("fullUrl").and_then(Value::as_str),
        resource: entry.get("resource"),
    })
}

fn resource_bytes(req: &EntryRequest<'_>) -> Result<Vec<u8>, FhirError> {
    let resource = req
        .resource
        .ok_or_else(|| FhirError::bad_request("entry has no resource"))?;
    serde_json::to_vec(resource).map_err(|e| FhirError::bad_request(e.to_string()))
}

/// The JSON Patch document of a PATCH entry: a Binary of `application/json-patch+json`.
fn entry_patch(req: &EntryRequest<'_>) -> Result<json_patch::Patch, FhirError> {
    let binary = req
        .resource
        .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Binary"))
        .ok_or_else(|| {
            FhirError::bad_request("a PATCH entry carries its JSON Patch as a Binary resource")
        })?;
    if binary.get("contentType").and_then(Value::as_str) != Some(portico_fhir::JSON_PATCH) {
        return Err(FhirError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueCode::NotSupported,
            "PATCH entries take application/json-patch+json",
        ));
    }
    let data = binary
        .get("data")
        .and_then(Value::as_str)
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .ok_or_else(|| FhirError::bad_request("the PATCH Binary has no base64 data"))?;
    parse_patch(&data)
}

fn method_not_allowed(req: &EntryRequest<'_>) -> FhirError {
    FhirError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        IssueCode::NotSupported,
        format!("{} is not supported on this entry's url", req.method),
    )
}

/// Runs one entry as the standalone interaction would.
fn run_entry(state: &SandboxState, req: &EntryRequest<'_>) -> Result<EntryResult, FhirError> {
    let ok = StatusCode::OK;
    match (req.method, &req.target) {
        ("GET", Target::Type(ty)) => Ok(EntryResult {
            status: ok,
            resource: None,
            bundle: Some(search_bundle(
                state,
                ty,
                &query_pairs(req.query.as_deref()),
                false,
            )?),
            location: false,
        }),
        ("GET", Target::Instance(ty, id)) => Ok(EntryResult::resource(
            ok,
            state.store.read(ty.name, id)?,
            false,
        )),
        ("GET", Target::History(ty, id)) => Ok(EntryResult {
            status: ok,
            resource: None,
            bundle: Some(history_bundle(state, ty, id)?),
            location: false,
        }),
        ("GET", Target::Version(ty, id, vid)) => {
            let version = vid.parse().map_err(|_| {
                FhirError::from(StoreError::NotFound {
                    resource_type: ty.name.to_owned(),
                    id: format!("{id}/_history/{vid}"),
                })
            })?;
            Ok(EntryResult::resource(
                ok,
                state.store.vread(ty.name, id, version)?,
                false,
            ))
        }
        ("POST", Target::Type(ty)) => {
            let (status, r) = do_create(state, ty, &resource_bytes(req)?, req.if_none_exist)?;
            Ok(EntryResult::resource(status, r, true))
        }
        ("PUT", Target::Instance(ty, id)) => {
            let (status, r) = do_update(state, ty, id, &resource_bytes(req)?, req.if_match)?;
            Ok(EntryResult::resource(status, r, true))
        }
        ("PATCH", Target::Instance(ty, id)) => {
            let r = do_patch(state, ty, id, &entry_patch(req)?, req.if_match)?;
            Ok(EntryResult::resource(ok, r, false))
        }
        ("DELETE", Target::Instance(ty, id)) => {
            let deleted = state.store.delete(ty.name, id, req.if_match)?;
            Ok(EntryResult {
                status: StatusCode::NO_CONTENT,
                resource: deleted,
                bundle: None,
                location: false,
            })
        }
        _ => Err(method_not_allowed(req)),
    }
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_owned()
}

/// Appends one response entry.
fn push_entry(out: &mut Vec<u8>, state: &SandboxState, result: &EntryResult, ret: Return) {
    out.push(b'{');
    let mut response = json!({"status": status_line(result.status)});
    if let Some(r) = &result.resource {
        if r.body.is_some() {
            out.extend_from_slice(b"\"fullUrl\":");
            push_json(out, &Value::String(state.full_url(r)));
            out.push(b',');
            if ret == Return::Representation
                && let Some(body) = &r.body
            {
                out.extend_from_slice(b"\"resource\":");
                out.extend_from_slice(body);
                out.push(b',');
            }
        }
        if result.location {
            response["location"] = json!(format!("{}/_history/{}", r.relative(), r.version));
        }
        response["etag"] = json!(r.etag());
        response["lastModified"] = json!(store::instant(r.last_updated_ms));
    }
    if let Some(bundle) = &result.bundle {
        out.extend_from_slice(b"\"resource\":");
        out.extend_from_slice(bundle);
        out.push(b',');
    }
    out.extend_from_slice(b"\"response\":");
    push_json(out, &response);
    out.push(b'}');
}

fn push_error(out: &mut Vec<u8>, e: &FhirError) {
    let outcome = portico_fhir::outcome::error(e.code, &e.message);
    push_json(
        out,
        &json!({"response": {"status": status_line(e.status), "outcome": outcome}}),
    );
}

fn batch(state: &SandboxState, entries: &[Value], ret: Return) -> Vec<u8> {
    let mut bundle = BundleWriter::new("batch-response", None, &[]);
    for entry in entries {
        match parse_entry(state, entry).and_then(|req| run_entry(state, &req)) {
            Ok(result) => push_entry(bundle.entry(), state, &result, ret),
            Err(e) => push_error(bundle.entry(), &e),
        }
    }
    bundle.finish()
}

fn transaction(state: &SandboxState, entries: &[Value], ret: Return) -> Result<Vec<u8>, FhirError> {
    let requests = entries
        .iter()
        .enumerate()
        .map(|(i, e)| parse_entry(state, e).map_err(|e| entry_error(i, e)))
        .collect::<Result<Vec<_>, _>>()?;
    // Check every write and turn it into a store op; reads wait for the writes.
    let mut ops = Vec::new();
    let mut op_entries = Vec::new();
    let mut touched: HashSet<(&'static str, String)> = HashSet::new();
    for (i, req) in requests.iter().enumerate() {
        let op = match (req.method, &req.target) {
            ("GET", _) => continue,
            ("POST", Target::Type(ty)) => {
                let bytes = resource_bytes(req).map_err(|e| entry_error(i, e))?;
                let resource = check_resource(ty, &bytes).map_err(|e| entry_error(i, e))?;
                let condition = req
                    .if_none_exist
                    .map(|c| parse_condition(ty, c))
                    .transpose()
                    .map_err(|e| entry_error(i, e))?;
                TxOp::Create {
                    ty,
                    id: uuid::Uuid::new_v4().to_string(),
                    full_url: req
                        .full_url
                        .filter(|u| u.starts_with("urn:uuid:") || u.starts_with("urn:oid:"))
                        .map(str::to_owned),
                    resource,
                    condition,
                }
            }
            ("PUT", Target::Instance(ty, id)) => {
                let bytes = resource_bytes(req).map_err(|e| entry_error(i, e))?;
                let resource = check_update(ty, id, &bytes).map_err(|e| entry_error(i, e))?;
                TxOp::Update {
                    ty,
                    id: id.clone(),
                    resource,
                    if_match: req.if_match,
                }
            }
            ("PATCH", Target::Instance(ty, id)) => {
                let operations = entry_patch(req).map_err(|e| entry_error(i, e))?;
                let (resource, version) = patched(state, ty, id, &operations, req.if_match)
                    .map_err(|e| entry_error(i, e))?;
                TxOp::Update {
                    ty,
                    id: id.clone(),
                    resource,
                    if_match: Some(version),
                }
            }
            ("DELETE", Target::Instance(ty, id)) => TxOp::Delete {
                ty,
                id: id.clone(),
                if_match: req.if_match,
            },
            _ => return Err(entry_error(i, method_not_allowed(req))),
        };
        if let TxOp::Update { ty, id, .. } | TxOp::Delete { ty, id, .. } = &op
            && !touched.insert((ty.name, id.clone()))
        {
            return Err(entry_error(
                i,
                FhirError::bad_request(format!(
                    "{}/{id} is touched by more than one entry",
                    ty.name
                )),
            ));
        }
        ops.push(op);
        op_entries.push(i);
    }
    let outcomes = state
        .store
        .transaction(ops)
        .map_err(|(op, e)| entry_error(op_entries[op], e.into()))?;
    let mut results: Vec<Option<EntryResult>> = requests.iter().map(|_| None).collect();
    for (outcome, &i) in outcomes.into_iter().zip(&op_entries) {
        results[i] = Some(match outcome {
            TxOutcome::Created(r) => EntryResult::resource(StatusCode::CREATED, r, true),
            TxOutcome::Existing(r) => EntryResult::resource(StatusCode::OK, r, true),
            TxOutcome::Updated(r, created) => {
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                EntryResult::resource(status, r, true)
            }
            TxOutcome::Deleted(r) => EntryResult {
                status: StatusCode::NO_CONTENT,
                resource: r,
                bundle: None,
                location: false,
            },
        });
    }
    // The reads, after the writes (so they see them). The writes are committed by now,
    // so a failing read is reported in its own entry, as in a batch.
    let mut bundle = BundleWriter::new("transaction-response", None, &[]);
    for (req, result) in requests.iter().zip(results) {
        match result.map_or_else(|| run_entry(state, req), Ok) {
            Ok(result) => push_entry(bundle.entry(), state, &result, ret),
            Err(e) => push_error(bundle.entry(), &e),
        }
    }
    Ok(bundle.finish())
}
