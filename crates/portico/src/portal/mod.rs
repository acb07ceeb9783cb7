//! The portal API under `/api/v1`: task-shaped JSON for portal frontends.
//!
//! Handlers are thin: they authenticate ([`PatientCaller`]), parse and bound the
//! request, call the domain code in `portico-portal` through a [`portico_portal::Ctx`]
//! and render its views. Writes go through [`Idempotent`]. Errors are problem+json
//! with a stable `code` ([`crate::error::ProblemError`]; statuses come from the
//! mapping tables in [`crate::error`]); every response carries `Cache-Control:
//! no-store`; each request has an overall deadline (`portal.deadline_ms`).
//!
//! The OpenAPI 3.1 document is generated from the handlers' `#[utoipa::path]`
//! annotations ([`openapi`]), served at `/api/v1/openapi.json` and checked into the
//! repository as `docs/openapi.json` (a test fails when they differ).
//!
//! Modules, one per area: [`home`] (`/me`, `/dashboard`), [`records`],
//! [`appointments`], [`medications`] (refills), [`referrals`], [`messages`], [`bills`].

pub mod access;
pub mod appointments;
pub mod bills;
mod doc;
pub mod home;
pub mod medications;
pub mod messages;
pub mod records;
pub mod referrals;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use portico_portal::idempotency::{self, Begin, Claim, StoredResponse};
use portico_portal::{Caller, Ctx, Idem};
use serde::Serialize;
use serde_json::Value;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use self::doc::ApiDoc;
pub use self::doc::{BodyTooLarge, NotLoggedIn, Problem, ReadErrors, WriteErrors};
use crate::error::{ApiError, ProblemError, RequestError};
use crate::login::PortalAuth;
use crate::state::AppState;

/// The header a proxy login uses to choose which of its patients it acts for.
pub const PATIENT_HEADER: &str = "portico-patient";
/// The header carrying a write's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Set on a response replayed from an earlier request with the same key.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The routes and their OpenAPI description, before the state is attached.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(home::routes())
        .merge(records::routes())
        .merge(appointments::routes())
        .merge(medications::routes())
        .merge(referrals::routes())
        .merge(messages::routes())
        .merge(bills::routes())
        .merge(access::routes())
}

/// The OpenAPI document of the portal API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The `/api/v1` router.
pub fn router(state: &AppState) -> Router<AppState> {
    let (router, api) = routes().split_for_parts();
    let document = Arc::new(api);
    let deadline = Duration::from_millis(state.config().portal.deadline_ms);
    router
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            deadline_layer(deadline, request, next)
        }))
        .layer(middleware::from_fn(no_store))
}

async fn not_found() -> ProblemError {
    RequestError::NoRoute.into()
}

async fn method_not_allowed() -> ProblemError {
    RequestError::MethodNotAllowed.into()
}

/// Patient data must never be kept by a browser or shared proxy.
async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The overall deadline of one portal request, all upstream calls included.
async fn deadline_layer(deadline: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ProblemError::from(RequestError::DeadlineExceeded).into_response(),
    }
}

// ---------------------------------------------------------------------------------
// Who is calling

/// An authenticated portal request acting for one patient.
#[derive(Debug, Clone)]
pub struct PatientCaller {
    pub caller: Caller,
    pub auth: PortalAuth,
}

impl FromRequestParts<AppState> for PatientCaller {
    type Rejection = ProblemError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let auth = PortalAuth::from_request_parts(parts, state).await?;
        let chosen = match parts.headers.get(PATIENT_HEADER).map(HeaderValue::to_str) {
            None => None,
            Some(Ok(p)) => Some(p.to_owned()),
            Some(Err(_)) => return Err(ProblemError(ApiError::not_found())),
        };
        let caller = caller_for(state, &auth, chosen.as_deref())?;
        Ok(PatientCaller { caller, auth })
    }
}

/// The authenticated login acting for `patient` (one of its patients; `None`: its only
/// one), with the request's id and, in passthrough mode, its token.
pub(crate) fn caller_for(
    state: &AppState,
    auth: &PortalAuth,
    patient: Option<&str>,
) -> portico_portal::PortalResult<Caller> {
    let caller =
        Caller::new(auth.principal.clone(), patient)?.with_request_id(auth.request_id.clone());
    Ok(if state.passthrough() {
        caller.with_bearer(auth.token.clone())
    } else {
        caller
    })
}

/// The result type of portal handlers.
pub type ProblemResult<T> = Result<T, ProblemError>;

// ---------------------------------------------------------------------------------
// Idempotent writes

/// A write's way to run at most once per `Idempotency-Key`: extracted like
/// [`PatientCaller`] (which it contains), it holds the state and the key as sent.
///
/// [`Idempotent::run`] takes the write's name (`book`, `refill`, ...), its canonical
/// input (which, with the acting patient, forms the fingerprint a reused key is compared
/// with), the success status, and the action itself, which receives the acting
/// patient's [`Ctx`] and the [`Idem`] to create upstream with. A successful answer is
/// remembered and replayed (with `Idempotent-Replayed: true`) for the same key and
/// body; the same key with another body is 422 `idempotency_key_reused`; while the
/// first request runs, 409 `idempotency_in_progress`. Failures are not remembered, so a
/// client may retry a failed write with the same key (upstream, the identifier keeps it
/// single). The key is checked only when the write runs, after the body.
#[derive(Debug, Clone)]
pub struct Idempotent {
    state: AppState,
    caller: PatientCaller,
    key: Option<HeaderValue>,
}

impl FromRequestParts<AppState> for Idempotent {
    type Rejection = ProblemError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = PatientCaller::from_request_parts(parts, state).await?;
        Ok(Idempotent {
            state: state.clone(),
            caller,
            key: parts.headers.get(IDEMPOTENCY_HEADER).cloned(),
        })
    }
}

impl Idempotent {
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run<T, E>(
        &self,
        action: &'static str,
        body: &Value,
        status: StatusCode,
        act: impl AsyncFnOnce(Ctx<'_>, &Idem) -> Result<T, E>,
    ) -> ProblemResult<Response>
    where
        T: Serialize,
        E: Into<ApiError>,
    {
        let key = match self.key.as_ref().map(HeaderValue::to_str) {
            None => None,
            Some(Ok(k)) if idempotency::valid_key(k) => Some(k),
            Some(_) => return Err(RequestError::InvalidIdempotencyKey.into()),
        };
        let done = run_once(&self.state, &self.caller, key, action, body, status, act).await?;
        let mut response = (done.status, Json(done.body)).into_response();
        if done.replayed {
            response
                .headers_mut()
                .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
        }
        Ok(response)
    }
}

/// What a write run through [`run_once`] answered: its status and view, and whether
/// they were replayed from an earlier request with the same key.
#[derive(Debug)]
pub struct Done {
    pub status: StatusCode,
    pub body: Value,
    pub replayed: bool,
}

/// The core of [`Idempotent::run`], shared by the portal API and the portal pages
/// (`crate::web`): runs `act` at most once per (principal, acting patient, `key`), with
/// `body` as the fingerprint a reused key is compared with. A successful answer is
/// remembered for the key and replayed; the same key with another body is
/// `idempotency_key_reused`; while the first request runs, `idempotency_in_progress`;
/// a store that cannot answer, `idempotency_unavailable` (the write is not attempted).
/// Failures are not remembered. `key` must already be valid
/// ([`idempotency::valid_key`]); without one the action simply runs.
pub async fn run_once<T, E>(
    state: &AppState,
    caller: &PatientCaller,
    key: Option<&str>,
    action: &'static str,
    body: &Value,
    status: StatusCode,
    act: impl AsyncFnOnce(Ctx<'_>, &Idem) -> Result<T, E>,
) -> ProblemResult<Done>
where
    T: Serialize,
    E: Into<ApiError>,
{
    let principal = &caller.caller.principal;
    let patient = &caller.caller.patient;
    // A proxy's level is checked before anything: no key is claimed, nothing runs.
    caller
        .caller
        .may_act(action)
        .map_err(|e| ProblemError((&e).into()))?;
    let fingerprint = idempotency::fingerprint(action, body);
    // The upstream identity covers who acts and the whole request (target ids are
    // part of the body fingerprint): the same key reused for another account,
    // prescription or appointment — after the gateway forgot it — can never be
    // mistaken upstream (or at the payment processor) for the first request.
    let idem = Idem::new(
        patient,
        &format!("{action}\n{}\n{fingerprint}", principal.subject),
        key,
    );
    // Not started until awaited: a replayed or refused request never runs it.
    let answer = async {
        let view = act(ctx(state, caller), &idem)
            .await
            .map_err(|e| ProblemError(e.into()))?;
        serde_json::to_value(view).map_err(|e| {
            tracing::error!(error = %e, "a portal answer could not be serialized");
            ProblemError(ApiError::internal())
        })
    };
    let done = |body| Done {
        status,
        body,
        replayed: false,
    };
    let Some(key) = key else {
        return Ok(done(answer.await?));
    };
    let store = state.idempotency();
    let scope = format!("{}\n{patient}", principal.subject);
    // A store that cannot answer means the write cannot be protected against
    // running twice: it is not attempted.
    let claim = match store.begin(&scope, key, &fingerprint).await {
        Ok(Begin::Started(claim)) => claim,
        Ok(Begin::Replay(stored)) => {
            return Ok(Done {
                status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
                body: stored.body,
                replayed: true,
            });
        }
        Ok(Begin::InProgress) => return Err(RequestError::IdempotencyInProgress.into()),
        Ok(Begin::Mismatch) => return Err(RequestError::IdempotencyKeyReused.into()),
        Err(e) => {
            tracing::warn!(error = %e, action, "idempotency store unavailable; the write was not attempted");
            return Err(RequestError::IdempotencyUnavailable.into());
        }
    };
    // Forget the key if this future is dropped (deadline, client gone) before
    // finishing.
    let guard = AbandonOnDrop {
        state: state.clone(),
        scope: scope.clone(),
        key: key.to_owned(),
        claim: claim.clone(),
        armed: true,
    };
    let result = answer.await;
    let mut guard = guard;
    guard.armed = false;
    match result {
        Ok(value) => {
            let stored = StoredResponse {
                status: status.as_u16(),
                body: value.clone(),
            };
            // The action happened: its answer goes to the client even when it cannot
            // be remembered. A retry then waits out the running record (409) and runs
            // again, kept single upstream by the business identifier.
            if let Err(e) = store.complete(&scope, key, &claim, stored).await {
                tracing::warn!(error = %e, action, "idempotency store unavailable; the answer was not remembered");
            }
            Ok(done(value))
        }
        Err(e) => {
            if let Err(e) = store.abandon(&scope, key, &claim).await {
                tracing::warn!(error = %e, action, "idempotency store unavailable; the key stays running until it expires");
            }
            Err(e)
        }
    }
}

struct AbandonOnDrop {
    state: AppState,
    scope: String,
    key: String,
    claim: Claim,
    armed: bool,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let state = self.state.clone();
            let scope = std::mem::take(&mut self.scope);
            let key = std::mem::take(&mut self.key);
            let claim = self.claim.clone();
            tokio::spawn(async move {
                if let Err(e) = state.idempotency().abandon(&scope, &key, &claim).await {
                    tracing::warn!(error = %e, "idempotency store unavailable; the key stays running until it expires");
                }
            });
        }
    }
}

/// Reads a JSON request body into `T`, answering 400 `invalid_body` (never a panic or
/// 500) for a wrong content type, invalid JSON, JSON nested too deep, or a shape that
/// does not match. Returns the value too, as the idempotency fingerprint.
pub fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> ProblemResult<(T, Value)> {
    let invalid = |message: String| ProblemError::from(RequestError::InvalidBody(message));
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(RequestError::UnsupportedMediaType.into());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
    if !value.is_object() {
        // serde would fill a struct from an array of its fields; portal bodies are
        // always objects.
        return Err(invalid("the body must be a JSON object".to_owned()));
    }
    if portico_fhir::json::depth(&value) > 16 {
        return Err(invalid("the JSON is nested too deeply".to_owned()));
    }
    let parsed = serde_json::from_value(value.clone()).map_err(|e| invalid(e.to_string()))?;
    Ok((parsed, value))
}

/// The acting patient's context for a handler.
pub fn ctx<'a>(state: &'a AppState, caller: &'a PatientCaller) -> portico_portal::Ctx<'a> {
    state.portal().ctx(&caller.caller)
}

/// `State` re-exported for the area modules.
pub type St = State<AppState>;
