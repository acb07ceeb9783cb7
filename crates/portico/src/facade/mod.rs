//! The SMART-on-FHIR facade: standard FHIR R4 REST at `/fhir`, limited to the
//! principal's patient compartment(s) and scopes.
//!
//! Every path follows the same order: authenticate; decide what may be asked (narrow a
//! search, check a write against the current version) **before** anything goes upstream;
//! call the EHR; verify **every** resource that comes back; rewrite upstream URLs to the
//! gateway's; record the decision in the audit sink. A read of something the principal
//! may not see answers exactly like a read of something that does not exist (404).

mod capability;
pub mod cursor;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portico_access::audit::{AuditRecord, Decision};
use portico_access::{Denial, Interaction, Principal, ReferenceResolver, WriteError};
use portico_fhir::reference::{Reference, is_valid_id};
use portico_fhir::resource_types;
use portico_upstream::{
    CachePartition, FhirRequest, FhirResponse, ReturnPreference, UpstreamError,
};
use serde_json::Value;

use crate::app::AppState;
use crate::authn::Authenticated;
use crate::error::{ApiError, FhirError};

type FhirResult = Result<Response, FhirError>;

/// The largest `_count` a client may ask for.
const MAX_COUNT: u32 = 1000;
/// How deeply nested a submitted resource may be.
const MAX_DEPTH: usize = 64;

/// Routes under `/fhir`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/metadata", get(capability::metadata))
        .route(
            "/.well-known/smart-configuration",
            get(capability::smart_configuration),
        )
        .route("/_page", get(page))
        .route("/", post(bundle))
        .route("/{resource_type}", get(search).post(create))
        .route("/{resource_type}/_search", post(search_post))
        .route(
            "/{resource_type}/{id}",
            get(read).put(update).patch(patch).delete(delete),
        )
        .route("/{resource_type}/{id}/{operation}", get(instance_operation))
        .route("/{resource_type}/{id}/_history/{version}", get(vread))
        .fallback(|| async { FhirError(ApiError::not_found()) })
        .method_not_allowed_fallback(|| async {
            FhirError(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this interaction is not supported here",
            ))
        })
}

// ---------------------------------------------------------------------------------
// Errors and audit

fn forbidden(denial: &Denial) -> FhirError {
    FhirError(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        denial.message().to_owned(),
    ))
}

fn upstream_error(e: &UpstreamError) -> FhirError {
    FhirError(ApiError::from(e))
}

fn bad_request(message: impl Into<String>) -> FhirError {
    FhirError(ApiError::bad_request(message))
}

struct Audit<'a> {
    state: &'a AppState,
    auth: &'a Authenticated,
    interaction: Interaction,
    resource_type: Option<&'a str>,
    resource_id: Option<&'a str>,
}

impl<'a> Audit<'a> {
    fn new(
        state: &'a AppState,
        auth: &'a Authenticated,
        interaction: Interaction,
        resource_type: &'a str,
    ) -> Self {
        Audit {
            state,
            auth,
            interaction,
            resource_type: Some(resource_type),
            resource_id: None,
        }
    }

    fn id(mut self, id: &'a str) -> Self {
        self.resource_id = Some(id);
        self
    }

    fn record(&self) -> AuditRecord {
        let mut r = AuditRecord::new(
            Some(&self.auth.principal),
            self.interaction,
            self.resource_type,
        );
        if let Some(id) = self.resource_id {
            r = r.with_resource_id(id);
        }
        if let Some(id) = &self.auth.request_id {
            r = r.with_request_id(id.clone());
        }
        r
    }

    async fn allowed(&self, upstream_status: Option<u16>, removed: usize) {
        let mut r = self.record();
        if let Some(s) = upstream_status {
            r = r.with_upstream_status(s);
        }
        if removed > 0 {
            r = r.with_removed_entries(removed);
        }
        self.state.audit(&r).await;
    }

    async fn denied(&self, denial: &Denial) {
        self.state.audit(&self.record().denied(denial)).await;
    }

    async fn failed(&self, e: &UpstreamError) {
        let mut r = self.record();
        r.decision = Decision::Denied;
        if let Some(status) = e.status() {
            r = r.with_upstream_status(status);
        }
        self.state.audit(&r).await;
    }
}

// ---------------------------------------------------------------------------------
// Upstream calls and responses

fn request(state: &AppState, auth: &Authenticated, request: FhirRequest) -> FhirRequest {
    let mut request = request;
    if let Some(id) = &auth.request_id {
        request = request.with_request_id(id.clone());
    }
    if state.passthrough() {
        request = request.with_bearer(auth.token.clone());
    }
    // The cache partitions by patient(s) and scopes; it never serves one principal's
    // entry to a principal who could not have read it, and what it serves is verified
    // again below like anything else.
    request.with_partition(CachePartition::new(
        auth.principal.patients.iter().cloned(),
        auth.principal.scopes.fingerprint(),
    ))
}

async fn call(
    state: &AppState,
    auth: &Authenticated,
    r: FhirRequest,
) -> Result<FhirResponse, UpstreamError> {
    state.upstream().execute(request(state, auth, r)).await
}

/// A FHIR JSON response with upstream URLs rewritten to the gateway's and no caching.
fn fhir_response(
    state: &AppState,
    status: StatusCode,
    body: &Value,
    upstream: Option<&FhirResponse>,
) -> Response {
    fhir_bytes_response(state, status, render(state, body), upstream)
}

/// The body of an answer: JSON with upstream URLs rewritten to the gateway's.
fn render(state: &AppState, body: &Value) -> Bytes {
    // Bytes, not a `String`: `Bytes` takes the buffer as it is. A `Value` always
    // serializes (its keys are strings).
    let json = serde_json::to_vec(body).unwrap_or_default();
    Bytes::from(state.rewrite_bases_bytes(json))
}

/// The exact key of an answer the facade keeps (see [`crate::kept`]): everything besides the upstream body that
/// the answer depends on. The principal's fingerprint covers what decides visibility
/// and binds the paging cursors (subject, client, patients, fhirUser, scopes); `what`
/// names the interaction and its request-dependent parts (the self link, the cursors'
/// expiry). The policy and the bases are fixed for the process. `None` when the
/// response has no slot (it was not a cache hit): nothing is computed for an answer
/// that cannot be kept.
fn render_key(
    response: &FhirResponse,
    auth: &Authenticated,
    what: std::fmt::Arguments<'_>,
) -> Option<String> {
    response.derived.as_ref()?;
    Some(format!("facade\n{}\n{what}", auth.principal.fingerprint()))
}

/// The answer rendered earlier from this cached body under `key`, if any: its bytes and
/// how many entries verification removed.
fn rendered(response: &FhirResponse, key: Option<&str>) -> Option<(Bytes, usize)> {
    crate::kept::get(response.derived.as_ref()?, key?)
}

/// Keeps a rendered answer for later hits on the same cache entry (only a response
/// served from a cache hit has a slot, and then a key).
fn remember(response: &FhirResponse, key: Option<String>, body: &Bytes, removed: usize) {
    if let (Some(slot), Some(key)) = (&response.derived, key) {
        crate::kept::keep(slot, key, body, removed);
    }
}

/// A FHIR JSON response from an already rendered body.
fn fhir_bytes_response(
    state: &AppState,
    status: StatusCode,
    text: Bytes,
    upstream: Option<&FhirResponse>,
) -> Response {
    let mut response = (status, text).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(portico_fhir::FHIR_JSON),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(age) = upstream.and_then(|u| u.stale_age) {
        // Served from the cache because the EHR is failing (stale-if-error).
        headers.insert(
            header::WARNING,
            HeaderValue::from_static("110 - \"Response is Stale\""),
        );
        headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    }
    if let Some(up) = upstream {
        if let Some(etag) = up
            .etag
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok())
        {
            headers.insert(header::ETAG, etag);
        }
        if let Some(lm) = up
            .last_modified
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(header::LAST_MODIFIED, lm);
        }
        if let Some(location) = up.location.as_deref() {
            let rewritten = state.rewrite_bases(location);
            if let Ok(v) = HeaderValue::from_str(&rewritten) {
                headers.insert(header::LOCATION, v);
            }
        }
    }
    response
}

fn checked_type(resource_type: &str) -> Result<(), FhirError> {
    if resource_types::is_known(resource_type) {
        Ok(())
    } else {
        Err(FhirError(ApiError::not_found()))
    }
}

fn checked_id(id: &str) -> Result<(), FhirError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(FhirError(ApiError::not_found()))
    }
}

// ---------------------------------------------------------------------------------
// Reads

async fn read(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((rt, id)): Path<(String, String)>,
) -> FhirResult {
    checked_type(&rt)?;
    checked_id(&id)?;
    let audit = Audit::new(&state, &auth, Interaction::Read, &rt).id(&id);
    read_rendered(
        &state,
        &auth,
        &audit,
        FhirRequest::read(&rt, &id),
        &rt,
        &id,
        None,
    )
    .await
}

/// A read or vread answered from the rendered answer of an earlier hit when there is
/// one; otherwise fetched, checked and rendered (and kept for the next hit). Denials
/// are never kept: each is decided and audited again.
async fn read_rendered(
    state: &AppState,
    auth: &Authenticated,
    audit: &Audit<'_>,
    request: FhirRequest,
    rt: &str,
    id: &str,
    version: Option<&str>,
) -> FhirResult {
    let response = fetch(state, auth, audit, request).await?;
    let key = render_key(
        &response,
        auth,
        format_args!("read\n{rt}/{id}\n{}", version.unwrap_or("")),
    );
    if let Some((body, _)) = rendered(&response, key.as_deref()) {
        audit.allowed(Some(response.status), 0).await;
        return Ok(fhir_bytes_response(
            state,
            StatusCode::OK,
            body,
            Some(&response),
        ));
    }
    let resource = check_read(state, auth, audit, &response, rt, id).await?;
    let body = render(state, &resource);
    remember(&response, key, &body, 0);
    audit.allowed(Some(response.status), 0).await;
    Ok(fhir_bytes_response(
        state,
        StatusCode::OK,
        body,
        Some(&response),
    ))
}

/// Reads `rt/id` upstream and checks the principal may see it; anything else is 404.
async fn fetch_checked(
    state: &AppState,
    auth: &Authenticated,
    audit: &Audit<'_>,
    rt: &str,
    id: &str,
) -> Result<(Value, FhirResponse), FhirError> {
    let response = fetch(state, auth, audit, FhirRequest::read(rt, id)).await?;
    let resource = check_read(state, auth, audit, &response, rt, id).await?;
    Ok((resource, response))
}

/// Runs a read-like request; a missing or gone resource is 404.
async fn fetch(
    state: &AppState,
    auth: &Authenticated,
    audit: &Audit<'_>,
    request: FhirRequest,
) -> Result<FhirResponse, FhirError> {
    match call(state, auth, request).await {
        Ok(r) => Ok(r),
        Err(e) => {
            audit.failed(&e).await;
            Err(match e {
                UpstreamError::NotFound { .. } | UpstreamError::Gone { .. } => {
                    FhirError(ApiError::not_found())
                }
                other => upstream_error(&other),
            })
        }
    }
}

/// Parses a read's answer and checks the principal may see `rt/id` as it came back;
/// anything else is 404 (audited as denied).
async fn check_read(
    state: &AppState,
    auth: &Authenticated,
    audit: &Audit<'_>,
    response: &FhirResponse,
    rt: &str,
    id: &str,
) -> Result<Value, FhirError> {
    let resource = response.json().map_err(|e| upstream_error(&e))?;
    if let Err(denial) =
        state
            .policy()
            .check_read_at(&auth.principal, &Reference::new(rt, id), &resource)
    {
        audit.denied(&denial).await;
        return Err(FhirError(ApiError::not_found()));
    }
    Ok(resource)
}

async fn vread(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((rt, id, version)): Path<(String, String, String)>,
) -> FhirResult {
    checked_type(&rt)?;
    checked_id(&id)?;
    checked_id(&version)?;
    let audit = Audit::new(&state, &auth, Interaction::Vread, &rt).id(&id);
    let request = FhirRequest::vread(&rt, &id, &version);
    read_rendered(&state, &auth, &audit, request, &rt, &id, Some(&version)).await
}

async fn instance_operation(
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
    let audit = Audit::new(&state, &auth, Interaction::History, &rt).id(&id);
    // The current version decides first: a foreign resource's history must look
    // exactly like a missing resource's, not like an empty history.
    fetch_checked(&state, &auth, &audit, &rt, &id).await?;
    let params: Vec<(String, String)> = parse_query(query.as_deref())
        .into_iter()
        .filter(|(k, _)| matches!(k.as_str(), "_count" | "_since" | "_at"))
        .collect();
    check_count(&params)?;
    let response = call(&state, &auth, FhirRequest::history(&rt, &id, params))
        .await
        .map_err(|e| upstream_error(&e))?;
    bundle_answer(&state, &auth, &audit, &response, None).await
}

/// The answer to a search, a page or a history: the upstream Bundle with every entry
/// verified, links rewritten (paging links become cursors, `self` becomes
/// `self_link` or goes) and upstream URLs replaced. Served from the rendered answer of
/// an earlier hit on the same cache entry when there is one.
async fn bundle_answer(
    state: &AppState,
    auth: &Authenticated,
    audit: &Audit<'_>,
    response: &FhirResponse,
    self_link: Option<String>,
) -> FhirResult {
    let expires = state.cursor_expiry();
    let key = render_key(
        response,
        auth,
        format_args!("bundle\n{expires}\n{}", self_link.as_deref().unwrap_or("")),
    );
    if let Some((body, removed)) = rendered(response, key.as_deref()) {
        audit.allowed(Some(response.status), removed).await;
        return Ok(fhir_bytes_response(
            state,
            StatusCode::OK,
            body,
            Some(response),
        ));
    }
    let mut bundle = response.json().map_err(|e| upstream_error(&e))?;
    let report = state.policy().verify_bundle(&auth.principal, &mut bundle);
    rewrite_links(state, &auth.principal, &mut bundle, self_link, expires);
    let body = render(state, &bundle);
    remember(response, key, &body, report.removed);
    audit.allowed(Some(response.status), report.removed).await;
    Ok(fhir_bytes_response(
        state,
        StatusCode::OK,
        body,
        Some(response),
    ))
}

/// `Patient/{id}/$everything`, composed by the gateway from compartment searches so that
/// it works on EHRs without the operation, and only ever for the principal's own patient.
async fn everything(state: AppState, auth: Authenticated, id: String) -> FhirResult {
    const TYPES: &[&str] = &[
        "AllergyIntolerance",
        "Condition",
        "Observation",
        "DiagnosticReport",
        "Immunization",
        "MedicationRequest",
        "MedicationDispense",
        "Encounter",
        "DocumentReference",
        "Procedure",
        "CareTeam",
        "Appointment",
        "Communication",
        "ServiceRequest",
        "Account",
        "Invoice",
        "Coverage",
    ];
    let audit = Audit::new(&state, &auth, Interaction::Read, "Patient").id(&id);
    let (patient, _) = fetch_checked(&state, &auth, &audit, "Patient", &id).await?;
    if !auth.principal.patients.iter().any(|p| p == &id) {
        return Err(FhirError(ApiError::not_found()));
    }
    let searches = TYPES.iter().filter_map(|t| {
        let params = vec![
            ("patient".to_owned(), id.clone()),
            ("_count".to_owned(), MAX_COUNT.to_string()),
        ];
        let narrowed = state
            .policy()
            .narrow_search(&auth.principal, t, &params)
            .ok()?;
        Some(call(&state, &auth, FhirRequest::search(*t, narrowed)))
    });
    let results = futures::future::join_all(searches).await;
    let mut entries = vec![serde_json::json!({"resource": patient, "search": {"mode": "match"}})];
    for result in results {
        let bundle = result
            .and_then(|r| r.json())
            .map_err(|e| upstream_error(&e))?;
        if let Some(items) = bundle.get("entry").and_then(Value::as_array) {
            entries.extend(items.iter().cloned());
        }
    }
    let mut bundle =
        serde_json::json!({"resourceType": "Bundle", "type": "searchset", "entry": entries});
    let report = state.policy().verify_bundle(&auth.principal, &mut bundle);
    bundle["total"] = serde_json::json!(report.kept);
    audit.allowed(None, report.removed).await;
    Ok(fhir_response(&state, StatusCode::OK, &bundle, None))
}

// ---------------------------------------------------------------------------------
// Search and paging

fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn check_count(params: &[(String, String)]) -> Result<(), FhirError> {
    for (k, v) in params {
        if k == "_count" {
            match v.parse::<u32>() {
                Ok(n) if n <= MAX_COUNT => {}
                _ => {
                    return Err(bad_request(format!(
                        "_count must be a number from 0 to {MAX_COUNT}"
                    )));
                }
            }
        }
    }
    Ok(())
}

async fn search(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(rt): Path<String>,
    RawQuery(query): RawQuery,
) -> FhirResult {
    run_search(state, auth, rt, parse_query(query.as_deref())).await
}

async fn search_post(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(rt): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !form && !body.is_empty() {
        return Err(FhirError(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "_search takes application/x-www-form-urlencoded",
        )));
    }
    let mut params = parse_query(query.as_deref());
    params.extend(url::form_urlencoded::parse(&body).into_owned());
    run_search(state, auth, rt, params).await
}

async fn run_search(
    state: AppState,
    auth: Authenticated,
    rt: String,
    params: Vec<(String, String)>,
) -> FhirResult {
    checked_type(&rt)?;
    check_count(&params)?;
    let audit = Audit::new(&state, &auth, Interaction::Search, &rt);
    let narrowed = match state.policy().narrow_search(&auth.principal, &rt, &params) {
        Ok(n) => n,
        Err(denial) => {
            audit.denied(&denial).await;
            return Err(forbidden(&denial));
        }
    };
    let response = match call(&state, &auth, FhirRequest::search(&rt, narrowed.clone())).await {
        Ok(r) => r,
        Err(e) => {
            audit.failed(&e).await;
            return Err(upstream_error(&e));
        }
    };
    let self_link = format!("{}/{rt}?{}", state.fhir_base(), encode_query(&narrowed));
    bundle_answer(&state, &auth, &audit, &response, Some(self_link)).await
}

fn encode_query(params: &[(String, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Replaces every Bundle link: paging links become signed gateway cursors bound to the
/// principal; `self` becomes the gateway's own URL (or is dropped); anything else goes.
fn rewrite_links(
    state: &AppState,
    principal: &Principal,
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
    let fingerprint = principal.fingerprint();
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
                let cursor = state.cursor_key().seal(url, &fingerprint, expires);
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

async fn page(
    State(state): State<AppState>,
    auth: Authenticated,
    RawQuery(query): RawQuery,
) -> FhirResult {
    let params = parse_query(query.as_deref());
    let cursor = params
        .iter()
        .find(|(k, _)| k == "_cursor")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| bad_request("a _cursor is required"))?;
    let audit = Audit::new(&state, &auth, Interaction::Search, "Bundle");
    let url = match state.cursor_key().open(
        cursor,
        &auth.principal.fingerprint(),
        crate::app::unix_now(),
    ) {
        Ok(url) => url,
        Err(e) => {
            let denial = Denial::new(portico_access::DenialReason::Malformed, e.to_string());
            audit.denied(&denial).await;
            return Err(match e {
                cursor::CursorError::WrongPrincipal => forbidden(&denial),
                _ => bad_request(e.to_string()),
            });
        }
    };
    let response = match call(&state, &auth, FhirRequest::search_page(&url)).await {
        Ok(r) => r,
        Err(e) => {
            audit.failed(&e).await;
            return Err(upstream_error(&e));
        }
    };
    bundle_answer(&state, &auth, &audit, &response, None).await
}

/// `POST /fhir` with a `batch` or `transaction` Bundle: refused whole. Checking each
/// entry as if sent alone is possible with the policy, but a transaction's entries can
/// reference each other (`urn:uuid`) and the upstream's atomicity differs per EHR, so
/// the facade does not pretend to support them; clients send the requests one by one.
async fn bundle(State(state): State<AppState>, auth: Authenticated) -> FhirResult {
    let audit = Audit::new(&state, &auth, Interaction::Create, "Bundle");
    let denial = Denial::new(
        portico_access::DenialReason::UnsupportedSearch,
        "batch and transaction Bundles are not supported by this gateway; send each request on its own",
    );
    audit.denied(&denial).await;
    Err(FhirError(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_supported",
        denial.message().to_owned(),
    )))
}

// ---------------------------------------------------------------------------------
// Writes: everything is decided before the request goes upstream.

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

/// Fetches referenced resources for write checks, as the principal's request would.
struct Resolver<'a> {
    state: &'a AppState,
    auth: &'a Authenticated,
}

#[async_trait::async_trait]
impl ReferenceResolver for Resolver<'_> {
    async fn resolve(
        &self,
        reference: &Reference,
    ) -> Result<Option<Value>, portico_access::ResolveError> {
        match call(
            self.state,
            self.auth,
            FhirRequest::read(&reference.resource_type, &reference.id),
        )
        .await
        {
            Ok(r) => r
                .json()
                .map(Some)
                .map_err(|e| portico_access::ResolveError(e.to_string())),
            Err(UpstreamError::NotFound { .. } | UpstreamError::Gone { .. }) => Ok(None),
            Err(e) => Err(portico_access::ResolveError(e.to_string())),
        }
    }
}

async fn authorize(
    state: &AppState,
    auth: &Authenticated,
    audit: &Audit<'_>,
    interaction: Interaction,
    rt: &str,
    new: &Value,
    current: Option<&Value>,
) -> Result<(), FhirError> {
    let resolver = Resolver { state, auth };
    match state
        .policy()
        .authorize_write(&auth.principal, interaction, rt, new, current, &resolver)
        .await
    {
        Ok(()) => Ok(()),
        Err(WriteError::Denied(denial)) => {
            audit.denied(&denial).await;
            Err(forbidden(&denial))
        }
        Err(WriteError::Resolve(e)) => {
            tracing::warn!(error = %e, "could not check a referenced resource");
            Err(FhirError(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "a referenced resource could not be checked",
            )))
        }
    }
}

/// Sends a write and renders its answer; a returned body is verified like any read.
async fn send_write(
    state: &AppState,
    auth: &Authenticated,
    audit: &Audit<'_>,
    request: FhirRequest,
    headers: &HeaderMap,
) -> FhirResult {
    let request = match prefer(headers) {
        Some(p) => request.with_prefer(p),
        None => request,
    };
    let response = match call(state, auth, request).await {
        Ok(r) => r,
        Err(e) => {
            audit.failed(&e).await;
            return Err(upstream_error(&e));
        }
    };
    audit.allowed(Some(response.status), 0).await;
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    if response.body.is_empty() {
        let mut r = fhir_response(state, status, &Value::Null, Some(&response));
        *r.body_mut() = axum::body::Body::empty();
        return Ok(r);
    }
    let body = response.json().map_err(|e| upstream_error(&e))?;
    let visible = portico_fhir::json::resource_type(&body) == Some("OperationOutcome")
        || state.policy().check_read(&auth.principal, &body).is_ok();
    let body = if visible { body } else { Value::Null };
    let mut r = fhir_response(state, status, &body, Some(&response));
    if !visible {
        *r.body_mut() = axum::body::Body::empty();
    }
    Ok(r)
}

async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(rt): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    checked_type(&rt)?;
    let audit = Audit::new(&state, &auth, Interaction::Create, &rt);
    let mut resource = parse_resource_body(&headers, &body, &rt)?;
    // The server assigns ids on create.
    if let Some(obj) = resource.as_object_mut() {
        obj.remove("id");
        obj.remove("meta");
    }
    authorize(
        &state,
        &auth,
        &audit,
        Interaction::Create,
        &rt,
        &resource,
        None,
    )
    .await?;
    // A conditional create is also a search: it must not probe other patients' data.
    let if_none_exist = match headers.get("if-none-exist").map(|v| v.to_str()) {
        None => None,
        Some(Err(_)) => return Err(bad_request("If-None-Exist is not valid")),
        Some(Ok(q)) => {
            let params: Vec<(String, String)> =
                url::form_urlencoded::parse(q.trim_start_matches('?').as_bytes())
                    .into_owned()
                    .collect();
            match state.policy().narrow_search(&auth.principal, &rt, &params) {
                Ok(narrowed) => Some(encode_query(&narrowed)),
                Err(denial) => {
                    audit.denied(&denial).await;
                    return Err(forbidden(&denial));
                }
            }
        }
    };
    let mut request = FhirRequest::create(&rt, Bytes::from(resource.to_string()));
    if let Some(q) = if_none_exist {
        request = request.with_if_none_exist(q);
    }
    send_write(&state, &auth, &audit, request, &headers).await
}

/// Reads the current version for an update or patch, as a read would be checked.
async fn current_version(
    state: &AppState,
    auth: &Authenticated,
    audit: &Audit<'_>,
    rt: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<(Value, String), FhirError> {
    let (current, response) = fetch_checked(state, auth, audit, rt, id).await?;
    let version = response
        .version_id
        .clone()
        .or_else(|| portico_fhir::json::version_id(&current).map(str::to_owned))
        .ok_or_else(|| {
            FhirError(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the EHR gave no version",
            ))
        })?;
    // The version the client saw must be the version that was checked.
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

async fn update(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((rt, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    checked_type(&rt)?;
    checked_id(&id)?;
    let audit = Audit::new(&state, &auth, Interaction::Update, &rt).id(&id);
    let resource = parse_resource_body(&headers, &body, &rt)?;
    if portico_fhir::json::id(&resource) != Some(id.as_str()) {
        return Err(bad_request("the resource id must match the URL"));
    }
    let (current, version) = current_version(&state, &auth, &audit, &rt, &id, &headers).await?;
    authorize(
        &state,
        &auth,
        &audit,
        Interaction::Update,
        &rt,
        &resource,
        Some(&current),
    )
    .await?;
    let request = FhirRequest::update(&rt, &id, Bytes::from(resource.to_string()))
        .with_if_match_version(&version);
    send_write(&state, &auth, &audit, request, &headers).await
}

async fn patch(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((rt, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> FhirResult {
    checked_type(&rt)?;
    checked_id(&id)?;
    let audit = Audit::new(&state, &auth, Interaction::Patch, &rt).id(&id);
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
    let (current, version) = current_version(&state, &auth, &audit, &rt, &id, &headers).await?;
    // Check the resource as it would be after the patch.
    let mut patched = current.clone();
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
    authorize(
        &state,
        &auth,
        &audit,
        Interaction::Patch,
        &rt,
        &patched,
        Some(&current),
    )
    .await?;
    let request = FhirRequest::patch(&rt, &id, checked_patch).with_if_match_version(&version);
    send_write(&state, &auth, &audit, request, &headers).await
}

async fn delete(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((rt, id)): Path<(String, String)>,
) -> FhirResult {
    checked_type(&rt)?;
    checked_id(&id)?;
    let audit = Audit::new(&state, &auth, Interaction::Delete, &rt).id(&id);
    let empty = serde_json::json!({"resourceType": rt, "id": id});
    if let Err(denial) =
        state
            .policy()
            .check_write(&auth.principal, Interaction::Delete, &rt, &empty, None)
    {
        audit.denied(&denial).await;
        return Err(forbidden(&denial));
    }
    // No principal the policy knows may delete today; should that change, the current
    // version must be checked here first, as for updates.
    let denial = Denial::new(
        portico_access::DenialReason::DeleteNotAllowed,
        "delete is not allowed",
    );
    audit.denied(&denial).await;
    Err(forbidden(&denial))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A searchset of `n` identical small entries: JSON that compresses well.
    fn bundle_bytes(n: usize) -> Bytes {
        let entry = r#"{"fullUrl":"http://localhost:8080/fhir/Observation/o1","resource":{"resourceType":"Observation","id":"o1","status":"final"}}"#;
        Bytes::from(format!(
            r#"{{"resourceType":"Bundle","type":"searchset","entry":[{}]}}"#,
            vec![entry; n].join(",")
        ))
    }

    #[test]
    fn a_kept_answer_comes_back_whole_packed_and_only_under_its_key() {
        let mut hit = FhirResponse::new(200, bundle_bytes(20));
        hit.derived = Some(portico_upstream::Derived::with_budget(1 << 20));
        let body = bundle_bytes(30);
        remember(&hit, Some("bundle\nkey-a".to_owned()), &body, 3);

        assert_eq!(
            rendered(&hit, Some("bundle\nkey-a")),
            Some((body.clone(), 3))
        );
        assert_eq!(rendered(&hit, Some("bundle\nkey-b")), None);
        assert_eq!(rendered(&hit, None), None, "no key, no kept answer");
        let used = hit.derived.as_ref().map(|slot| slot.used()).unwrap_or(0);
        assert!(
            used > 0 && used * 4 < body.len(),
            "kept {used} bytes for a {}-byte answer",
            body.len()
        );

        // A miss has no slot: nothing is kept, nothing comes back.
        let miss = FhirResponse::new(200, bundle_bytes(20));
        remember(&miss, Some("bundle\nkey-a".to_owned()), &body, 0);
        assert_eq!(rendered(&miss, Some("bundle\nkey-a")), None);
    }
}
