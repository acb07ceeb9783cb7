//! Searches collected whole, or not at all: what the dashboard's one-round-trip sections
//! and every decision that needs a whole history (refill eligibility, unread counts)
//! rest on.

use portico_upstream::UpstreamError;

use crate::context::{Ctx, MAX_COLLECTED, Page};
use crate::error::{PortalError, PortalResult};
use crate::view::{array, str_at};

/// A search collected whole, or `None` when it is not: more than `bound` matches, a
/// `next` link left, a `total` larger than what came back, an answer that was not a
/// Bundle (refused as malformed by the upstream client, or replaced by an empty one by
/// the policy), or an `OperationOutcome` warning or error in the Bundle (some EHRs flag
/// a capped or partial answer only that way).
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
    let collected = async {
        let first = ctx.search(rt, params).await?;
        // An answer that needs more than `MAX_PAGES` pages keeps its `next` link: not
        // whole.
        ctx.follow(rt, first, |page| !cannot_be_whole(page, bound))
            .await
    };
    match collected.await {
        Ok(all) => Ok(is_whole(&all, bound).then_some(all)),
        // A page that was not a Bundle (the upstream client refuses it as malformed):
        // not whole, like an answer the policy had to replace.
        Err(PortalError::Upstream(UpstreamError::MalformedBody { .. })) => Ok(None),
        Err(e) => Err(e),
    }
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
fn is_whole(page: &Page, bound: usize) -> bool {
    !cannot_be_whole(page, bound)
        && page.next.is_none()
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
