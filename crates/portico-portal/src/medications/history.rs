//! The searches refill eligibility rests on, each read whole or not at all
//! ([`crate::whole::search_whole`]): the completed dispenses and the open refill
//! requests, patient-wide (bounded by [`PATIENT_WIDE_BOUND`]) or of given
//! prescriptions. An answer that is not whole (more than the gateway collects, an
//! answer the EHR flagged with a warning, an answer that is not a Bundle) is `None`, and
//! then the prescriptions it concerns are not eligible (`history_unavailable`).

use std::collections::{HashMap, HashSet};

use portico_fhir::reference::Reference;
use serde_json::Value;

use super::TASK_CODE_SYSTEM;
use super::eligibility::OpenRequest;
use super::views::references;
use crate::context::{Ctx, Page};
use crate::error::PortalResult;
use crate::profile::RefillStrategy;
use crate::view::str_at;

/// The most dispenses (and open refill Tasks) of a patient-wide search used as is by the
/// listing; with more, the searches scoped to the listed prescriptions are made.
pub const PATIENT_WIDE_BOUND: usize = 200;

/// Task statuses of a refill request still waiting to be handled.
const OPEN_TASK_STATUSES: &str = "draft,requested,received,accepted,ready,in-progress,on-hold";

pub(super) fn mr_reference(id: &str) -> String {
    format!("MedicationRequest/{id}")
}

/// The completed dispenses of these prescriptions (`of`; one search), or all the
/// patient's when they fit in [`PATIENT_WIDE_BOUND`] (`None`); `None` when the answer is
/// not whole (see [`crate::whole::search_whole`]).
pub(super) async fn completed_dispenses(
    ctx: Ctx<'_>,
    of: Option<&[&str]>,
) -> PortalResult<Option<Page>> {
    let status = ("status", "completed".to_owned());
    let (params, bound) = match of {
        None => (
            vec![status, ("_count", PATIENT_WIDE_BOUND.to_string())],
            PATIENT_WIDE_BOUND,
        ),
        Some(ids) => {
            let prescriptions = ids
                .iter()
                .map(|id| mr_reference(id))
                .collect::<Vec<_>>()
                .join(",");
            (
                vec![
                    ("prescription", prescriptions),
                    status,
                    ("_count", "100".to_owned()),
                ],
                crate::context::MAX_COLLECTED,
            )
        }
    };
    crate::whole::search_whole(ctx, "MedicationDispense", &params, bound).await
}

/// A whole answer's matches and whether any of its pages was stale; `(None, false)` for
/// an answer that was not whole.
pub(super) fn matches_and_stale(page: Option<Page>) -> (Option<Vec<Value>>, bool) {
    match page {
        Some(page) => (Some(page.matches), page.stale),
        None => (None, false),
    }
}

/// The answer of a search for open refill requests.
pub(super) struct OpenSearch {
    /// The whole answer; `None` when it was not whole ([`crate::whole::search_whole`]).
    pub(super) page: Option<Page>,
    /// What a refill request is, per the strategy.
    pub(super) resource_type: &'static str,
    /// Where a refill request names its prescription.
    pub(super) path: &'static str,
}

impl OpenSearch {
    /// The open refill request of each of these prescriptions (`None` when the answer
    /// is not whole: any of them may have one), and whether the answer was stale.
    pub(super) fn open_of(&self, ids: &[&str]) -> (Option<HashMap<String, OpenRequest>>, bool) {
        let Some(page) = &self.page else {
            return (None, false);
        };
        let wanted: HashSet<&str> = ids.iter().copied().collect();
        let mut out: HashMap<String, OpenRequest> = HashMap::new();
        for resource in &page.matches {
            // Only refill requests of the strategy's type (an EHR may mix other
            // resources into the matches).
            if str_at(resource, "resourceType") != Some(self.resource_type) {
                continue;
            }
            let (Some(id), Some(status)) = (str_at(resource, "id"), str_at(resource, "status"))
            else {
                continue;
            };
            for target in references(resource, self.path) {
                if let Some(r) = Reference::parse(target).ok()
                    && r.resource_type == "MedicationRequest"
                    && wanted.contains(r.id.as_str())
                {
                    out.entry(r.id.clone()).or_insert_with(|| OpenRequest {
                        id: id.to_owned(),
                        resource_type: self.resource_type.to_owned(),
                        status: status.to_owned(),
                    });
                }
            }
        }
        (Some(out), page.stale)
    }
}

/// Searches open refill requests per the profile's strategy: with `focus`, those of
/// these prescriptions (the Task strategy searches `focus`; the other strategies have
/// no R4 search parameter for the prescription and always search the patient's all);
/// without, the patient's all. Collected with [`crate::whole::search_whole`].
pub(super) async fn open_request_search(
    ctx: Ctx<'_>,
    focus: Option<&[&str]>,
) -> PortalResult<OpenSearch> {
    let (resource_type, path, params, bound) = match ctx.profile().refills.strategy {
        RefillStrategy::Task => {
            let mut params = vec![
                ("status", OPEN_TASK_STATUSES.to_owned()),
                ("code", format!("{TASK_CODE_SYSTEM}|fulfill")),
            ];
            let bound = match focus {
                Some(ids) => {
                    let focus = ids
                        .iter()
                        .map(|id| mr_reference(id))
                        .collect::<Vec<_>>()
                        .join(",");
                    params.insert(0, ("focus", focus));
                    params.push(("_count", "100".to_owned()));
                    crate::context::MAX_COLLECTED
                }
                None => {
                    params.push(("_count", PATIENT_WIDE_BOUND.to_string()));
                    PATIENT_WIDE_BOUND
                }
            };
            ("Task", "focus", params, bound)
        }
        RefillStrategy::MedicationRequest => (
            "MedicationRequest",
            "priorPrescription",
            vec![
                ("intent", "proposal".to_owned()),
                ("status", "active,draft".to_owned()),
                ("_count", "100".to_owned()),
            ],
            crate::context::MAX_COLLECTED,
        ),
        // Also finds open message threads (there is no R4 search parameter for `about`
        // or the topic): a heavy messager's answer may not be whole.
        RefillStrategy::Communication => (
            "Communication",
            "about",
            vec![
                ("status", "preparation,in-progress,on-hold".to_owned()),
                ("_count", "100".to_owned()),
            ],
            crate::context::MAX_COLLECTED,
        ),
    };
    Ok(OpenSearch {
        page: crate::whole::search_whole(ctx, resource_type, &params, bound).await?,
        resource_type,
        path,
    })
}

/// The open refill request of each of these prescriptions, per the profile's strategy
/// (`None` when the answer is not whole).
pub(super) async fn open_requests(
    ctx: Ctx<'_>,
    ids: &[&str],
) -> PortalResult<(Option<HashMap<String, OpenRequest>>, bool)> {
    Ok(open_request_search(ctx, Some(ids)).await?.open_of(ids))
}
