//! The shared parts of the portal's OpenAPI document: its header ([`ApiDoc`]), the
//! security schemes, the [`Problem`] schema, and the problem responses most operations
//! answer, declared once here and named in each handler's `#[utoipa::path]`.
//!
//! A shared list goes first in a handler's `responses(...)`; a handler's own entry for
//! the same status, written after it, replaces the shared one (utoipa adds responses in
//! order to a map keyed by status). A write's 502 and 503 usually say what did or did
//! not happen, so each write states its own.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portico portal API",
        version = "1",
        description = "Task-shaped JSON for patient portal frontends. Authenticate with the \
                       session cookie from `/auth/login` (state-changing requests also send \
                       `X-CSRF-Token`) or with a bearer token. Every write accepts an \
                       `Idempotency-Key` header. Errors are `application/problem+json` \
                       with a stable `code`."
    ),
    servers((url = "/api/v1")),
    components(schemas(Problem)),
    modifiers(&Security),
    security(("session" = []), ("bearer" = []))
)]
pub(super) struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("portico_session"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// An error: RFC 9457 problem details with a stable `code`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `https://portico.dev/problems/<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// Stable and machine-readable: `slot_unavailable`, `refill_not_eligible`,
    /// `recipient_not_allowed`, `upstream_unavailable`, ...
    pub code: String,
    pub detail: String,
    /// Machine-readable detail, for some codes (the reason a refill is not eligible,
    /// the exact state after a half-done reschedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// One shared problem response: its status and description.
type Shared = (u16, &'static str);

const NOT_LOGGED_IN: Shared = (401, "Not logged in");
const KEY_IN_USE: Shared = (
    409,
    "A request with this Idempotency-Key is still running (`idempotency_in_progress`), or \
     another request is changing the same thing (`busy`: retry shortly)",
);
const BODY_TOO_LARGE: Shared = (413, "The body is too large");
const NOT_JSON: Shared = (415, "The body is not JSON");
const EHR_FAILED: Shared = (502, "The EHR failed");
const EHR_UNAVAILABLE: Shared = (503, "The EHR is unavailable");
const EHR_TIMEOUT: Shared = (504, "The EHR did not answer in time");

/// The responses, each a [`Problem`] (documented as `application/json`, as the
/// handlers' own problem entries are).
fn problems(shared: &[Shared]) -> BTreeMap<String, RefOr<Response>> {
    shared
        .iter()
        .map(|&(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(Problem::name())))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// 401 alone: for what needs a login and nothing from the EHR.
#[derive(Debug)]
pub struct NotLoggedIn;

impl IntoResponses for NotLoggedIn {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[NOT_LOGGED_IN])
    }
}

/// What every read may answer besides its own outcomes: 401, and the EHR failing (502),
/// unavailable (503) or too slow (504).
#[derive(Debug)]
pub struct ReadErrors;

impl IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[NOT_LOGGED_IN, EHR_FAILED, EHR_UNAVAILABLE, EHR_TIMEOUT])
    }
}

/// What every write may answer besides its own outcomes: 401, the same
/// `Idempotency-Key` still running (409), a body that is not JSON (415), and the EHR too
/// slow (504).
#[derive(Debug)]
pub struct WriteErrors;

impl IntoResponses for WriteErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[NOT_LOGGED_IN, KEY_IN_USE, NOT_JSON, EHR_TIMEOUT])
    }
}

/// 413, for the writes that document it. (The gateway's body limit applies to every
/// route, so cancel, reschedule and payments can answer it too; they do not list it, as
/// before this list existed.)
#[derive(Debug)]
pub struct BodyTooLarge;

impl IntoResponses for BodyTooLarge {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[BODY_TOO_LARGE])
    }
}
