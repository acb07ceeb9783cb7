//! Searches (`GET [type]?…`, `POST [type]/_search`), the gateway's paging cursors
//! (`/_page`), and the Bundle answer every search, page and history shares (written
//! as it arrives when the EHR's answer is long: [`super::stream`]).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use portico_access::{Denial, DenialReason, Interaction};
use portico_guard::{Reply, Reuse, Session, Unchecked, encode_query};

use super::render::{fhir_bytes_response, kept_body, render_json, rewrite_links};
use super::stream::streamed_answer;
use super::{FhirResult, MAX_COUNT, actor, bad_request, checked_type, cursor};
use crate::authn::Authenticated;
use crate::error::{ApiError, FhirError};
use crate::kept;
use crate::state::AppState;

pub(super) fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn check_count(params: &[(String, String)]) -> Result<(), FhirError> {
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

pub(super) async fn search(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(rt): Path<String>,
    RawQuery(query): RawQuery,
) -> FhirResult {
    run_search(state, auth, rt, parse_query(query.as_deref())).await
}

pub(super) async fn search_post(
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
    let actor = actor(&state, &auth);
    let session = state.guard().session(&actor);
    let unchecked = session.search_streamed(&rt, &params).await?;
    let self_link = format!(
        "{}/{rt}?{}",
        state.fhir_base(),
        encode_query(unchecked.narrowed())
    );
    bundle_answer(&state, session, unchecked, Some(self_link)).await
}

/// `GET /_page?_cursor=…`: the page behind a signed cursor this principal was given.
pub(super) async fn page(
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
    let actor = actor(&state, &auth);
    let session = state.guard().session(&actor);
    let url = match state
        .cursor_key()
        .open(cursor, actor.fingerprint(), crate::clock::unix_now())
    {
        Ok(url) => url,
        Err(e) => {
            let denial = Denial::new(DenialReason::Malformed, e.to_string());
            let refused = session
                .deny(Interaction::Search, "Bundle", None, denial)
                .await;
            return Err(match e {
                cursor::CursorError::WrongPrincipal => refused.into(),
                _ => bad_request(e.to_string()),
            });
        }
    };
    let unchecked = session.next_page_streamed("Bundle", &url).await?;
    bundle_answer(&state, session, unchecked, None).await
}

/// The answer to a search, a page or a history: the upstream Bundle with every entry
/// verified, links rewritten (paging links become cursors, `self` becomes
/// `self_link` or goes) and upstream URLs replaced. Served from the rendered answer of
/// an earlier hit on the same cache entry when there is one.
pub(super) async fn bundle_answer(
    state: &AppState,
    session: Session<'_>,
    unchecked: Unchecked,
    self_link: Option<String>,
) -> FhirResult {
    if unchecked.is_partial() {
        return streamed_answer(state, session, unchecked, self_link).await;
    }
    let expires = state.cursor_expiry();
    // The gateway's base starts every self link: the key names the rest (marked, so
    // that no two links, nor a link and none, share a key).
    let link_key = match self_link.as_deref() {
        None => String::new(),
        Some(link) => match link.strip_prefix(state.fhir_base()) {
            Some(rest) => format!("~{rest}"),
            None => format!("={link}"),
        },
    };
    let what = format!("facade\nbundle\n{expires}\n{link_key}");
    let Reply {
        meta,
        answer,
        keeper,
        upstream,
    } = session
        .verify_kept_bytes::<kept::Answer>(unchecked, &what)
        .await?;
    let body = match answer {
        Reuse::Kept(answer) => kept_body(&answer, &upstream)?,
        Reuse::Fresh(mut verified) => {
            rewrite_links(
                state,
                session.actor().fingerprint(),
                &mut verified.head,
                self_link,
                expires,
            );
            let removed = verified.report.removed;
            // Kept as pieces of the entry's body when it can be (then this answer is
            // put together from them, as every later hit's will be), packed otherwise.
            let spliced = keeper
                .wants()
                .then(|| state.splice(&verified))
                .flatten()
                .and_then(|spliced| Some((spliced.assemble(&upstream)?, spliced)));
            match spliced {
                Some((body, spliced)) => {
                    debug_assert_eq!(body, render_json(state, verified.to_json()));
                    kept::keep_spliced(&keeper, spliced, removed);
                    Bytes::from(body)
                }
                None => {
                    let body = render_json(state, verified.to_json());
                    kept::keep_fresh(&keeper, &body, removed);
                    body
                }
            }
        }
    };
    Ok(fhir_bytes_response(
        state,
        StatusCode::OK,
        body,
        Some(&meta),
    ))
}
