//! `GET /dashboard`: the portal's home page in one answer.
//!
//! Five sections — upcoming appointments, active medications with refill eligibility,
//! open or unread message threads, recent lab results, the balance due — are loaded
//! concurrently, each through its own area module, so the page costs about as long as
//! its slowest section, not the sum. Each section is one EHR round trip in the usual
//! case, so a cold dashboard costs about one EHR call's latency: searches that used to
//! wait for another's answer (dispenses of the listed prescriptions, messages of the
//! listed threads, participants' names) are replaced by broad searches started at once
//! (`search_whole`) or by `_include`, with the narrow searches kept as the fallback
//! when a broad answer is not whole; the balance needs the accounts only
//! ([`bills::balance_due`]). A section whose EHR calls fail is left out and
//! named in `unavailable` (the rest of the page still shows); a section the EHR profile
//! does not support is simply absent. Only when no section can be shown and at least one
//! failed is the dashboard an error.

use portico_upstream::UpstreamError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::appointments::{self, AppointmentView, When};
use crate::bills;
use crate::context::{Ctx, MAX_COLLECTED, Page};
use crate::error::{PortalError, PortalResult};
use crate::medications::{self, Medication};
use crate::messages::{self, ThreadStatus, ThreadSummary};
use crate::records::{self, Kind, RecordItem};
use crate::view::{Money, array, str_at};

/// How many items each list section shows at most.
pub const SECTION_ITEMS: usize = 5;

/// The portal's home page.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Dashboard {
    /// The next appointments, soonest first.
    pub upcoming_appointments: Option<Vec<AppointmentView>>,
    /// Active prescriptions with whether a refill can be requested now.
    pub medications: Option<Vec<Medication>>,
    /// Open threads and threads with unread messages, most recent first.
    pub message_threads: Option<Vec<ThreadSummary>>,
    /// Unread messages across all threads.
    pub unread_messages: Option<usize>,
    /// The latest lab results, newest first.
    pub recent_results: Option<Vec<RecordItem>>,
    /// What is owed across the patient's accounts (in the accounts' currency).
    pub balance_due: Option<Money>,
    /// Sections that could not be loaded because the EHR failed: `appointments`,
    /// `medications`, `messages`, `results`, `bills`.
    pub unavailable: Vec<String>,
    /// Some of it was served from the gateway's cache because the EHR is failing.
    pub stale: bool,
}

/// The most pages [`search_whole`] follows; an answer needing more is not whole (an EHR
/// whose `next` links never end, or that ignores `_count` with tiny pages).
const MAX_PAGES: usize = 100;

/// A search collected whole, or `None` when it is not: more than `bound` matches, a
/// `next` link left, a `total` larger than what came back, an answer that was not a
/// Bundle (replaced by an empty one by the policy), or an `OperationOutcome` warning or
/// error in the Bundle (some EHRs flag a capped or partial answer only that way).
///
/// Sections use it to replace a chain of narrow searches (the dispenses *of these*
/// prescriptions, the messages *of these* threads) with one broad search started
/// alongside the first one, and fall back to the narrow searches when the broad answer
/// is not whole; decisions that need a whole history (refill eligibility, unread counts)
/// use it for the narrow searches too, so nothing is decided on part of a history.
/// Collecting stops as soon as the answer cannot be whole: a page that leaves a `next`
/// link with `bound` matches already collected, or a `total` above `bound`, is not
/// followed. `bound` is capped at [`MAX_COLLECTED`].
pub(crate) async fn search_whole(
    ctx: Ctx<'_>,
    rt: &str,
    params: &[(&str, String)],
    bound: usize,
) -> PortalResult<Option<Page>> {
    let bound = bound.min(MAX_COLLECTED);
    let mut all = ctx.search(rt, params).await?;
    let mut pages = 1;
    loop {
        if cannot_be_whole(&all, bound) {
            return Ok(None);
        }
        let Some(next) = all.next.take() else { break };
        if pages == MAX_PAGES {
            return Ok(None);
        }
        all.append(ctx.search_page(rt, &next).await?);
        pages += 1;
    }
    Ok(is_whole(&all, bound).then_some(all))
}

/// Whether what was collected so far already shows that the answer is not whole, so
/// that no further page is worth fetching.
fn cannot_be_whole(page: &Page, bound: usize) -> bool {
    page.replaced
        || flags_a_problem(page)
        || page.matches.len() > bound
        || (page.next.is_some() && page.matches.len() >= bound)
        || page.total.is_some_and(|total| total > bound as u64)
}

/// Whether a collected search is the whole answer (see [`search_whole`]).
pub(crate) fn is_whole(page: &Page, bound: usize) -> bool {
    !page.replaced
        && !flags_a_problem(page)
        && page.next.is_none()
        && page.matches.len() <= bound
        && page
            .total
            .is_none_or(|total| total <= page.matches.len() as u64)
}

/// Whether the Bundle carried an `OperationOutcome` issue of severity `warning`,
/// `error` or `fatal` (`information` is harmless).
fn flags_a_problem(page: &Page) -> bool {
    page.outcomes
        .iter()
        .flat_map(|o| array(o, "issue"))
        .any(|issue| {
            matches!(
                str_at(issue, "severity"),
                Some("warning" | "error" | "fatal")
            )
        })
}

/// Whether a broad search failed as a query the EHR (or the policy) refuses, rather
/// than because the EHR is failing: the narrow searches it replaces may still be
/// answered. A failing EHR is not asked again.
pub(crate) fn refused_query(e: &PortalError) -> bool {
    matches!(
        e,
        PortalError::Forbidden { .. }
            | PortalError::Upstream(
                UpstreamError::Invalid { .. }
                    | UpstreamError::Forbidden { .. }
                    | UpstreamError::NotFound { .. }
            )
    )
}

/// A section's outcome: shown, unsupported by the EHR, or failed.
fn section<T>(
    name: &'static str,
    result: PortalResult<T>,
    unavailable: &mut Vec<String>,
    errors: &mut Vec<PortalError>,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(PortalError::NotSupported { .. } | PortalError::Forbidden { .. }) => None,
        Err(e) => {
            tracing::warn!(
                section = name,
                code = e.code(),
                "dashboard section unavailable"
            );
            unavailable.push(name.to_owned());
            errors.push(e);
            None
        }
    }
}

pub async fn dashboard(ctx: Ctx<'_>) -> PortalResult<Dashboard> {
    let (appointments, medications, threads, results, bills) = tokio::join!(
        appointments::list(ctx, When::Upcoming),
        medications::list(ctx),
        messages::list_threads(ctx),
        records::list(ctx, Kind::LabResults, SECTION_ITEMS as u32, None),
        bills::balance_due(ctx),
    );
    let mut unavailable = Vec::new();
    let mut errors = Vec::new();
    let mut stale = false;
    let appointments = section("appointments", appointments, &mut unavailable, &mut errors);
    let medications = section("medications", medications, &mut unavailable, &mut errors);
    let threads = section("messages", threads, &mut unavailable, &mut errors);
    let results = section("results", results, &mut unavailable, &mut errors);
    let bills = section("bills", bills, &mut unavailable, &mut errors);
    let shown = [
        appointments.is_some(),
        medications.is_some(),
        threads.is_some(),
        results.is_some(),
        bills.is_some(),
    ];
    if !errors.is_empty() && !shown.contains(&true) {
        // Nothing to show: the first failure is the answer.
        return Err(errors.swap_remove(0));
    }
    let upcoming_appointments = appointments.map(|list| {
        stale |= list.stale;
        list.appointments
            .into_iter()
            .filter(|a| {
                !matches!(
                    a.status.as_str(),
                    "cancelled" | "entered-in-error" | "noshow"
                )
            })
            .take(SECTION_ITEMS)
            .collect()
    });
    let medications = medications.map(|list| {
        stale |= list.stale;
        list.items
            .into_iter()
            .filter(|m| m.status.as_deref() == Some("active"))
            .collect()
    });
    let (message_threads, unread_messages) = match threads {
        Some(list) => {
            stale |= list.stale;
            let unread = list.threads.iter().map(|t| t.unread).sum();
            let shown = list
                .threads
                .into_iter()
                .filter(|t| t.status == ThreadStatus::Open || t.unread > 0)
                .take(SECTION_ITEMS)
                .collect();
            (Some(shown), Some(unread))
        }
        None => (None, None),
    };
    let recent_results = results.map(|(list, _)| {
        stale |= list.stale;
        list.items
    });
    let balance_due = bills.map(|b| {
        stale |= b.stale;
        b.total
    });
    Ok(Dashboard {
        upcoming_appointments,
        medications,
        message_threads,
        unread_messages,
        recent_results,
        balance_due,
        unavailable,
        stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(matches: usize, next: bool, total: Option<u64>) -> Page {
        Page {
            matches: (0..matches).map(|i| json!({"id": i.to_string()})).collect(),
            next: next.then(|| "http://ehr.example/fhir?page=2".to_owned()),
            total,
            ..Page::default()
        }
    }

    #[test]
    fn only_a_complete_answer_within_the_bound_is_whole() {
        assert!(is_whole(&page(0, false, None), 3));
        assert!(is_whole(&page(3, false, Some(3)), 3));
        assert!(is_whole(&page(2, false, None), 3));
        // More than the bound.
        assert!(!is_whole(&page(4, false, Some(4)), 3));
        // Pages left, even with few matches.
        assert!(!is_whole(&page(1, true, None), 3));
        // The EHR says there is more than what came back.
        assert!(!is_whole(&page(2, false, Some(5)), 3));
    }

    #[test]
    fn a_replaced_answer_or_a_flagged_bundle_is_not_whole() {
        // Not a Bundle: the policy's empty searchset is not "no matches".
        let replaced = Page {
            replaced: true,
            total: Some(0),
            ..Page::default()
        };
        assert!(!is_whole(&replaced, 3));
        assert!(cannot_be_whole(&replaced, 3));
        // An OperationOutcome warning, error or fatal issue (capped or partial results).
        for severity in ["warning", "error", "fatal"] {
            let mut flagged = page(1, false, Some(1));
            flagged.outcomes = vec![json!({"resourceType": "OperationOutcome", "issue": [
                {"severity": "information", "code": "informational"},
                {"severity": severity, "code": "too-costly"}]})];
            assert!(!is_whole(&flagged, 3), "{severity}");
            assert!(cannot_be_whole(&flagged, 3), "{severity}");
        }
        // Information only is harmless.
        let mut informed = page(1, false, Some(1));
        informed.outcomes = vec![json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "information", "code": "informational"}]})];
        assert!(is_whole(&informed, 3));
    }

    #[test]
    fn collecting_stops_once_the_answer_cannot_be_whole() {
        // A page that reaches the bound and still has a next link: no page 2.
        assert!(cannot_be_whole(&page(3, true, None), 3));
        // Below the bound with a next link: worth following.
        assert!(!cannot_be_whole(&page(2, true, None), 3));
        // A total above the bound settles it on the first page.
        assert!(cannot_be_whole(&page(1, true, Some(4)), 3));
        assert!(!cannot_be_whole(&page(1, true, Some(3)), 3));
        // Exactly the bound and nothing left is whole.
        assert!(!cannot_be_whole(&page(3, false, Some(3)), 3));
        assert!(cannot_be_whole(&page(4, false, None), 3));
    }

    #[test]
    fn only_refused_queries_fall_back() {
        assert!(refused_query(&PortalError::Forbidden {
            message: "no".to_owned()
        }));
        assert!(refused_query(&PortalError::Upstream(
            UpstreamError::Invalid {
                status: 400,
                outcome: None
            }
        )));
        // A failing EHR is not asked again with another query.
        assert!(!refused_query(&PortalError::Upstream(
            UpstreamError::Server {
                status: 500,
                outcome: None
            }
        )));
        assert!(!refused_query(&PortalError::Upstream(
            UpstreamError::Timeout
        )));
    }
}
