//! The SMART-on-FHIR facade: standard FHIR R4 REST at `/fhir`, limited to the
//! principal's patient compartment(s) and scopes.
//!
//! The handlers are thin users of the one guarded path ([`portico_guard::Session`]):
//! it narrows every request before anything goes upstream, checks writes against the
//! current version, verifies every resource that comes back and records each decision
//! in the audit sink. What the facade adds is FHIR REST's shape: parsing the request,
//! rewriting upstream URLs to the gateway's, turning paging links into signed cursors,
//! and rendering answers and errors (OperationOutcomes). A read of something the
//! principal may not see answers exactly like a read of something that does not exist
//! (404).
//!
//! Modules: `read` (read, vread, `_history`, `$everything`), `search` (search, `_search`,
//! paging cursors, the Bundle answer), `write` (create, update, patch, delete, Bundles),
//! `render` (bodies, headers, links), [`capability`] (`metadata`,
//! `smart-configuration`), [`cursor`] (signed paging cursors).

mod capability;
pub mod cursor;
mod read;
mod render;
mod search;
mod stream;
mod write;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use portico_access::Denial;
use portico_fhir::reference::is_valid_id;
use portico_fhir::resource_types;
use portico_guard::{Actor, GuardError};
use portico_upstream::UpstreamError;

use crate::authn::Authenticated;
use crate::error::{ApiError, FhirError};
use crate::state::AppState;

type FhirResult = Result<Response, FhirError>;

/// The largest `_count` a client may ask for.
const MAX_COUNT: u32 = 1000;

/// Routes under `/fhir`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/metadata", get(capability::metadata))
        .route(
            "/.well-known/smart-configuration",
            get(capability::smart_configuration),
        )
        .route("/_page", get(search::page))
        .route("/", post(write::bundle))
        .route("/{resource_type}", get(search::search).post(write::create))
        .route("/{resource_type}/_search", post(search::search_post))
        .route(
            "/{resource_type}/{id}",
            get(read::read)
                .put(write::update)
                .patch(write::patch)
                .delete(write::delete),
        )
        .route(
            "/{resource_type}/{id}/{operation}",
            get(read::instance_operation),
        )
        .route("/{resource_type}/{id}/_history/{version}", get(read::vread))
        .fallback(|| async { FhirError(ApiError::not_found()) })
        .method_not_allowed_fallback(|| async {
            FhirError(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this interaction is not supported here",
            ))
        })
}

/// The guarded path's actor for an authenticated request: the principal as the token
/// grants it, the request id, and the caller's token when the EHR is reached with it.
fn actor(state: &AppState, auth: &Authenticated) -> Actor {
    let actor = Actor::new(auth.principal.clone()).with_request_id(auth.request_id.clone());
    if state.passthrough() {
        actor.with_bearer(Some(auth.token.clone()))
    } else {
        actor
    }
}

// ---------------------------------------------------------------------------------
// Errors

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

impl From<GuardError> for FhirError {
    fn from(e: GuardError) -> FhirError {
        match e {
            GuardError::NotFound => FhirError(ApiError::not_found()),
            GuardError::Denied(denial) => forbidden(&denial),
            GuardError::Unverifiable(_) => FhirError(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "a referenced resource could not be checked",
            )),
            GuardError::Invalid(message) => bad_request(message),
            GuardError::AuditUnavailable => FhirError(ApiError::audit_unavailable()),
            GuardError::Upstream(e) => upstream_error(&e),
        }
    }
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
