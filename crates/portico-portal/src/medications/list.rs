//! The listings: `GET /medications` and `GET /refill-requests`.
//!
//! `GET /medications` lists the patient's MedicationRequests (active and on-hold ones,
//! plus finished ones authored in the last year) with the refill situation of each:
//! refills allowed, used and left, the last fill, when the next fill may be asked for,
//! and whether a refill may be requested now. It is one EHR round trip in the usual
//! case: the prescriptions, the patient's completed dispenses and the patient's open
//! refill requests are searched at the same time and matched here; a patient-wide
//! answer that is not whole (more than [`super::PATIENT_WIDE_BOUND`], pages left, or see
//! [`crate::whole::search_whole`]) is replaced by the searches scoped to the listed
//! prescriptions (`prescription=`, `focus=`). Every search eligibility rests on must be
//! whole: when the dispenses or the open refill requests still cannot be read whole
//! (the MedicationRequest and Communication strategies have no narrower search to fall
//! back to), the prescription is not eligible (`history_unavailable`) and counts the
//! gateway could not make are `null`.

use std::collections::{HashMap, HashSet};
use std::pin::pin;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::Either;
use serde_json::Value;

use super::TASK_CODE_SYSTEM;
use super::eligibility::{OpenState, eligibility};
use super::history::{completed_dispenses, matches_and_stale, open_request_search, open_requests};
use super::views::{
    MedicationList, RefillRequest, RefillRequestList, medication_name, medication_view,
    refill_target, refill_view,
};
use crate::context::Ctx;
use crate::error::PortalResult;
use crate::profile::RefillStrategy;
use crate::view::{parse_datetime, str_at};

/// Finished prescriptions authored more recently than this are still listed.
const RECENT_DAYS: i64 = 365;

/// The most MedicationRequests (and as many refill requests) one listing collects.
const MAX_LISTED: usize = 200;

/// Whether a prescription is worth listing: a real prescription (not the patient's own
/// proposal) with an id, active, on hold, or finished within the last year.
pub(super) fn listed(request: &Value, now: DateTime<Utc>) -> bool {
    if str_at(request, "id").is_none()
        || matches!(str_at(request, "intent"), Some("proposal") | None)
    {
        return false;
    }
    match str_at(request, "status") {
        Some("active" | "on-hold") => true,
        Some("entered-in-error" | "draft") | None => false,
        Some(_) => str_at(request, "authoredOn")
            .and_then(parse_datetime)
            .is_some_and(|t| now - t <= TimeDelta::days(RECENT_DAYS)),
    }
}

/// `GET /medications`: one round trip in the usual case.
///
/// The prescriptions, the patient's completed dispenses and the patient's open refill
/// requests are searched at the same time (the [`Ctx`] narrows every search to the
/// patient), then matched to the listed prescriptions here. When a patient-wide answer
/// is not whole (see [`crate::whole::search_whole`]) or the EHR refuses the
/// patient-wide query, the searches scoped to the listed prescriptions' ids are made
/// instead; when an answer needed for eligibility is still not whole, the prescriptions
/// are not eligible (`history_unavailable`), so eligibility is never computed on part of
/// a history. When no prescription is listed, the patient-wide searches still under way
/// are dropped, not waited for.
pub async fn list(ctx: Ctx<'_>) -> PortalResult<MedicationList> {
    let now = ctx.now();
    let params = [
        ("_include", "MedicationRequest:medication".to_owned()),
        ("_include", "MedicationRequest:requester".to_owned()),
        ("_count", "100".to_owned()),
    ];
    let prescriptions = ctx.search_all("MedicationRequest", &params, MAX_LISTED);
    let wide = async {
        tokio::join!(
            completed_dispenses(ctx, None),
            open_request_search(ctx, None)
        )
    };
    // With nothing listed, the other two answers (and their failures) do not matter:
    // when the prescriptions come first, the others are dropped rather than waited for.
    let wide = pin!(wide);
    let (page, wide) = match futures::future::select(pin!(prescriptions), wide).await {
        Either::Left((page, pending)) => (page?, Either::Left(pending)),
        Either::Right((wide, prescriptions)) => (prescriptions.await?, Either::Right(wide)),
    };
    if !page.matches.iter().any(|r| listed(r, now)) {
        return Ok(MedicationList {
            items: Vec::new(),
            stale: page.stale,
        });
    }
    let (wide_dispenses, wide_open) = match wide {
        Either::Left(pending) => pending.await,
        Either::Right(wide) => wide,
    };
    let mut requests: Vec<&Value> = page.matches.iter().filter(|r| listed(r, now)).collect();
    let ids: Vec<&str> = requests.iter().filter_map(|r| str_at(r, "id")).collect();
    let strategy = ctx.profile().refills.strategy;
    let (dispenses, open) = tokio::join!(
        async {
            match wide_dispenses {
                Ok(Some(whole)) => Ok(Some(whole)),
                Ok(None) => completed_dispenses(ctx, Some(&ids)).await,
                Err(e) if crate::whole::refused_query(&e) => {
                    completed_dispenses(ctx, Some(&ids)).await
                }
                Err(e) => Err(e),
            }
        },
        async {
            match wide_open {
                // Only the Task strategy has a narrower search (`focus=`); the others'
                // patient-wide search is the only one there is.
                Ok(search) if search.page.is_some() || strategy != RefillStrategy::Task => {
                    Ok(search.open_of(&ids))
                }
                Ok(_) => open_requests(ctx, &ids).await,
                Err(e) if strategy == RefillStrategy::Task && crate::whole::refused_query(&e) => {
                    open_requests(ctx, &ids).await
                }
                Err(e) => Err(e),
            }
        },
    );
    let ((dispenses, stale_dispenses), (open, stale_open)) = (matches_and_stale(dispenses?), open?);
    let stale = page.stale || stale_dispenses || stale_open;
    // Active and on-hold first, then by authoredOn, newest first.
    requests.sort_by_key(|r| {
        let rank = match str_at(r, "status") {
            Some("active") => 0,
            Some("on-hold") => 1,
            _ => 2,
        };
        (
            rank,
            std::cmp::Reverse(str_at(r, "authoredOn").and_then(parse_datetime)),
        )
    });
    let rules = &ctx.profile().refills;
    let items = requests
        .into_iter()
        .map(|r| {
            let open = OpenState::of(open.as_ref(), str_at(r, "id").unwrap_or_default());
            let e = eligibility(r, dispenses.as_deref(), open, ctx.patient(), rules, now);
            medication_view(r, &page, &e, open.request())
        })
        .collect();
    Ok(MedicationList { items, stale })
}

/// `GET /refill-requests`: the patient's refill requests, per the profile's strategy.
pub async fn refill_requests(ctx: Ctx<'_>) -> PortalResult<RefillRequestList> {
    let strategy = ctx.profile().refills.strategy;
    let page = match strategy {
        RefillStrategy::Task => {
            ctx.search_all(
                "Task",
                &[
                    ("code", format!("{TASK_CODE_SYSTEM}|fulfill")),
                    ("_count", "100".to_owned()),
                ],
                MAX_LISTED,
            )
            .await?
        }
        RefillStrategy::MedicationRequest => {
            ctx.search_all(
                "MedicationRequest",
                &[
                    ("intent", "proposal".to_owned()),
                    ("_include", "MedicationRequest:medication".to_owned()),
                    ("_count", "100".to_owned()),
                ],
                MAX_LISTED,
            )
            .await?
        }
        RefillStrategy::Communication => {
            ctx.search_all(
                "Communication",
                &[("_count", "100".to_owned())],
                crate::context::MAX_COLLECTED,
            )
            .await?
        }
    };
    let mut stale = page.stale;
    let requests: Vec<&Value> = page
        .matches
        .iter()
        .filter(|r| refill_target(r).is_some())
        .collect();
    // The names of the prescriptions they are about, in one search.
    let targets: Vec<String> = requests
        .iter()
        .filter_map(|r| refill_target(r))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut names: HashMap<String, Option<String>> = HashMap::new();
    if !targets.is_empty() {
        let prescriptions = ctx
            .search_all(
                "MedicationRequest",
                &[
                    ("_id", targets.join(",")),
                    ("_include", "MedicationRequest:medication".to_owned()),
                    ("_count", "100".to_owned()),
                ],
                MAX_LISTED,
            )
            .await?;
        stale |= prescriptions.stale;
        for mr in &prescriptions.matches {
            if let Some(id) = str_at(mr, "id") {
                names.insert(id.to_owned(), medication_name(mr, Some(&prescriptions)));
            }
        }
    }
    let mut items: Vec<RefillRequest> = requests
        .into_iter()
        .map(|r| {
            let name = refill_target(r)
                .and_then(|t| names.get(&t).cloned())
                .flatten()
                .or_else(|| medication_name(r, Some(&page)));
            refill_view(r, name)
        })
        .collect();
    items.sort_by(|a, b| {
        let t = |x: &RefillRequest| x.created.as_deref().and_then(parse_datetime);
        t(b).cmp(&t(a))
    });
    Ok(RefillRequestList { items, stale })
}
