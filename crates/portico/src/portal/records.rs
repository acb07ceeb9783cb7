//! `GET /records/{kind}`: the health record by kind, paged with sealed cursors.
//!
//! A page's upstream `next` link is never handed out to be followed: it is sealed (HMAC,
//! expiry) into `next_cursor`, bound to the principal, the acting patient and the kind,
//! exactly like the facade's paging links. The cursor is signed, not encrypted: its
//! payload (the EHR's link for the caller's own search) is readable but cannot be altered
//! or used by anyone else. A cursor presented by anyone else, altered, expired or used
//! for another kind is refused with 400 `invalid_cursor`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use portico_portal::records::{self, Kind, RecordList};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PatientCaller, ProblemResult, ctx};
use crate::clock::unix_now;
use crate::error::{ApiError, ProblemError, RequestError};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Paging of a record list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordQuery {
    /// Items per page, 1 to 100 (default 20).
    count: Option<u32>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
}

/// What a records cursor is bound to: the login, the patient shown and the kind (the
/// API's and the pages' cursors alike).
pub(crate) fn binding(caller: &PatientCaller, kind: Kind) -> String {
    format!(
        "{}\n{}\n{}",
        caller.caller.principal.fingerprint(),
        caller.caller.patient,
        kind.as_str()
    )
}

/// One kind of the patient's health record.
#[utoipa::path(
    get,
    path = "/records/{kind}",
    operation_id = "list_records",
    tag = "records",
    params(
        ("kind" = Kind, Path, description = "allergies, conditions, medications, immunizations, lab-results, vital-signs, documents, encounters, procedures or care-team"),
        RecordQuery
    ),
    responses(
        (status = 200, description = "One page of the record", body = RecordList),
        super::ReadErrors,
        (status = 400, description = "Bad count or cursor", body = super::Problem),
        (status = 404, description = "Unknown kind", body = super::Problem),
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: PatientCaller,
    Path(kind): Path<String>,
    query: Result<Query<RecordQuery>, axum::extract::rejection::QueryRejection>,
) -> ProblemResult<Response> {
    let kind = Kind::parse(&kind).ok_or(RequestError::UnknownRecordKind)?;
    let Query(query) = query.map_err(|e| ProblemError(ApiError::bad_request(e.body_text())))?;
    let binding = binding(&caller, kind);
    let page_url = match &query.cursor {
        None => None,
        Some(cursor) => Some(
            state
                .cursor_key()
                .open(cursor, &binding, unix_now())
                .map_err(|e| RequestError::InvalidCursor(e.to_string()))?,
        ),
    };
    let count = query.count.unwrap_or(20);
    let shared = records::page(ctx(&state, &caller), kind, count, page_url.as_deref()).await?;
    // On a cache hit the answer is a function of the kept page and of this key: the
    // binding (principal, acting patient, kind) that seals the cursor, the cursor's
    // expiry step, and the request. Kept in the entry's slot like the facade's answers.
    let expires = state.cursor_expiry();
    let kept = shared.slot.as_ref().map(|slot| {
        let what = format!(
            "records\n{binding}\n{expires}\n{count}\n{}",
            page_url.as_deref().unwrap_or("")
        );
        (slot, what)
    });
    if let Some((body, _)) = kept
        .as_ref()
        .and_then(|(slot, what)| crate::kept::get(slot, what))
    {
        return Ok(json_bytes(body));
    }
    let (mut list, next) = records::view(kind, &shared.page);
    list.next_cursor = next.map(|url| state.cursor_key().seal(&url, &binding, expires));
    let body = Bytes::from(serde_json::to_vec(&list).map_err(|e| {
        tracing::error!(error = %e, "a record list could not be serialized");
        ProblemError(ApiError::internal())
    })?);
    if let Some((slot, what)) = kept {
        crate::kept::keep(slot, &what, &body, 0);
    }
    Ok(json_bytes(body))
}

/// A JSON answer from serialized bytes.
fn json_bytes(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
