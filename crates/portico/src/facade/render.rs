//! The facade's answers: FHIR JSON with the EHR's base URL rewritten to the gateway's,
//! the headers FHIR gives meaning to, paging links as signed cursors.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portico_guard::{Meta, Written, WrittenBody};
use serde_json::Value;

use super::{FhirResult, upstream_error};
use crate::error::{ApiError, FhirError};
use crate::kept;
use crate::state::AppState;

/// A FHIR JSON response with upstream URLs rewritten to the gateway's and no caching.
pub(crate) fn fhir_response(
    state: &AppState,
    status: StatusCode,
    body: &Value,
    meta: Option<&Meta>,
) -> Response {
    fhir_bytes_response(state, status, render(state, body), meta)
}

/// The body of an answer: JSON with upstream URLs rewritten to the gateway's.
pub(super) fn render(state: &AppState, body: &Value) -> Bytes {
    // A `Value` always serializes (its keys are strings).
    render_json(state, serde_json::to_vec(body).unwrap_or_default())
}

/// The body of an answer from JSON already written: upstream URLs rewritten. `Bytes`,
/// not a `String`: `Bytes` takes the buffer as it is.
pub(super) fn render_json(state: &AppState, json: Vec<u8>) -> Bytes {
    Bytes::from(state.rewrite_bases_bytes(json))
}

/// The bytes of an answer kept from an earlier hit, `upstream` being the body it
/// was served with.
pub(super) fn kept_body(answer: &kept::Answer, upstream: &Bytes) -> Result<Bytes, FhirError> {
    answer.render(upstream).ok_or_else(|| {
        tracing::error!("a kept answer could not be unpacked");
        FhirError(ApiError::internal())
    })
}

/// A FHIR JSON response from an already rendered body.
pub(super) fn fhir_bytes_response(
    state: &AppState,
    status: StatusCode,
    text: Bytes,
    meta: Option<&Meta>,
) -> Response {
    fhir_body_response(state, status, Body::from(text), meta)
}

/// A FHIR JSON response from a rendered body, whole or still being written.
pub(super) fn fhir_body_response(
    state: &AppState,
    status: StatusCode,
    body: Body,
    meta: Option<&Meta>,
) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(portico_fhir::FHIR_JSON),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let Some(meta) = meta else {
        return response;
    };
    if let Some(age) = meta.stale_age {
        // Served from the cache because the EHR is failing (stale-if-error).
        headers.insert(
            header::WARNING,
            HeaderValue::from_static("110 - \"Response is Stale\""),
        );
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    }
    if let Some(etag) = meta
        .etag
        .as_deref()
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        headers.insert(header::ETAG, etag);
    }
    if let Some(lm) = meta
        .last_modified
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(header::LAST_MODIFIED, lm);
    }
    if let Some(location) = meta.location.as_deref() {
        let rewritten = state.rewrite_bases(location);
        if let Ok(v) = HeaderValue::from_str(&rewritten) {
            headers.insert(header::LOCATION, v);
        }
    }
    response
}

/// The answer to a write: what the EHR returned, if the principal may read it; an
/// empty body otherwise.
pub(super) fn written(state: &AppState, written: Written) -> FhirResult {
    let status = StatusCode::from_u16(written.meta.status).unwrap_or(StatusCode::OK);
    let meta = Some(&written.meta);
    match &written.body {
        WrittenBody::Resource(body) | WrittenBody::Outcome(body) => {
            Ok(fhir_response(state, status, body, meta))
        }
        WrittenBody::Malformed(e) => Err(upstream_error(e)),
        WrittenBody::Empty | WrittenBody::Hidden { .. } => {
            Ok(fhir_bytes_response(state, status, Bytes::new(), meta))
        }
    }
}

/// Replaces every Bundle link: paging links become signed gateway cursors bound to the
/// principal's `fingerprint`; `self` becomes the gateway's own URL (or is dropped);
/// anything else goes.
pub(super) fn rewrite_links(
    state: &AppState,
    fingerprint: &str,
    bundle: &mut Value,
    self_link: Option<String>,
    expires: u64,
) {
    let Some(links) = bundle.get_mut("link").and_then(Value::as_array_mut) else {
        if let Some(s) = self_link {
            bundle["link"] = serde_json::json!([{"relation": "self", "url": s}]);
        }
        return;
    };
    let mut rewritten = Vec::new();
    for link in links.iter() {
        let relation = link
            .get("relation")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let url = link.get("url").and_then(Value::as_str).unwrap_or_default();
        match relation {
            "self" => {
                if let Some(s) = &self_link {
                    rewritten.push(serde_json::json!({"relation": "self", "url": s}));
                }
            }
            // Only links the upstream client would follow are offered at all.
            "next" | "previous" | "prev" | "first" | "last"
                if state.client().check_page_url(url).is_ok() =>
            {
                let cursor = state.cursor_key().seal(url, fingerprint, expires);
                let relation = if relation == "prev" {
                    "previous"
                } else {
                    relation
                };
                rewritten.push(serde_json::json!({
                    "relation": relation,
                    "url": format!("{}/_page?_cursor={cursor}", state.fhir_base()),
                }));
            }
            _ => {}
        }
    }
    *links = rewritten;
}
