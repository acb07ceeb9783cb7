//! The medication and refill-request views, the refill input, and the FHIR → view
//! mapping (pure).

use portico_fhir::reference::Reference;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::eligibility::{Eligibility, IneligibleReason, OpenRequest};
use crate::context::Page;
use crate::error::PortalResult;
use crate::input::Text;
use crate::me::display_name;
use crate::view::{array, concept_text, instant, str_at};

/// The longest note a patient may add to a refill request, in characters.
pub const MAX_NOTE_CHARS: usize = 500;

/// The longest pharmacy name, in characters.
pub const MAX_PHARMACY_CHARS: usize = 200;

/// Whether a refill may be requested now.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RefillStatus {
    pub eligible: bool,
    /// Why not, when not eligible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<IneligibleReason>,
    /// A sentence for the patient, when not eligible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One prescription, with its refill situation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Medication {
    /// The MedicationRequest id.
    pub id: String,
    /// The medication's name.
    pub medication: Option<String>,
    /// How to take it.
    pub dosage: Option<String>,
    /// FHIR status: active, on-hold, completed, stopped, ...
    pub status: Option<String>,
    /// FHIR intent: order, original-order, instance-order, plan, ...
    pub intent: Option<String>,
    pub authored_on: Option<String>,
    /// The prescriber's name.
    pub prescriber: Option<String>,
    /// `dispenseRequest.validityPeriod.end`.
    pub valid_until: Option<String>,
    /// Refills the prescription allows after the first fill (absent: none stated).
    pub refills_allowed: Option<u32>,
    /// Fills after the first; `null` when the pharmacy history could not be read whole
    /// (`refill.reason` is then `history_unavailable`).
    pub refills_used: Option<u32>,
    /// Refills still allowed; `null` when the pharmacy history could not be read whole.
    pub refills_left: Option<u32>,
    /// When the last fill was handed over (`null` also when the pharmacy history could
    /// not be read whole).
    pub last_dispensed: Option<String>,
    /// The earliest time the next refill may be requested (while refills are left).
    pub next_eligible: Option<String>,
    pub refill: RefillStatus,
    /// The open refill request, if one exists.
    pub open_request: Option<OpenRequest>,
}

/// The patient's prescriptions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MedicationList {
    /// Active and on-hold prescriptions first, then the most recently authored.
    pub items: Vec<Medication>,
    /// Some data was served from the gateway's cache because the EHR is failing.
    pub stale: bool,
}

/// A refill request's progress, the same for every strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefillRequestStatus {
    /// Sent, not yet looked at.
    Requested,
    /// Accepted by the care team, not yet done.
    Accepted,
    /// Being worked on or on hold.
    InProgress,
    /// Done: the refill was authorized.
    Completed,
    /// Refused by the care team.
    Rejected,
    /// Withdrawn or entered in error.
    Cancelled,
    Unknown,
}

/// A refill request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefillRequest {
    /// The id of the `resource_type` resource in the EHR.
    pub id: String,
    /// `Task`, `MedicationRequest` (a proposal) or `Communication`, per the EHR profile.
    pub resource_type: String,
    pub status: RefillRequestStatus,
    /// The FHIR status it was mapped from.
    pub fhir_status: Option<String>,
    /// The prescription to refill.
    pub medication_request_id: Option<String>,
    pub medication: Option<String>,
    /// When it was made.
    pub created: Option<String>,
    /// The patient's note.
    pub note: Option<String>,
}

/// The patient's refill requests.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefillRequestList {
    /// Newest first.
    pub items: Vec<RefillRequest>,
    pub stale: bool,
}

/// What a patient sends to ask for a refill.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillInput {
    /// A note for the care team (at most 500 characters).
    #[serde(default)]
    pub note: Option<String>,
    /// The pharmacy the patient prefers (at most 200 characters).
    #[serde(default)]
    pub pharmacy: Option<String>,
}

impl RefillInput {
    /// The note and pharmacy, trimmed (blank ones dropped) and bounded.
    pub fn checked(&self) -> PortalResult<(Option<String>, Option<String>)> {
        Ok((
            Text::new("note", MAX_NOTE_CHARS).optional(self.note.as_deref())?,
            Text::new("pharmacy", MAX_PHARMACY_CHARS).optional(self.pharmacy.as_deref())?,
        ))
    }
}

/// The medication's name: `medicationCodeableConcept`, else the referenced Medication's
/// code (when included), else the reference's display.
pub(super) fn medication_name(request: &Value, page: Option<&Page>) -> Option<String> {
    if let Some(concept) = request.get("medicationCodeableConcept") {
        return concept_text(concept);
    }
    let reference = request.get("medicationReference")?;
    str_at(reference, "reference")
        .and_then(|r| page?.included(r))
        .and_then(|m| m.get("code"))
        .and_then(concept_text)
        .or_else(|| str_at(reference, "display").map(str::to_owned))
}

fn prescriber_name(request: &Value, page: &Page) -> Option<String> {
    let requester = request.get("requester")?;
    str_at(requester, "display")
        .map(str::to_owned)
        .or_else(|| {
            str_at(requester, "reference")
                .and_then(|r| page.included(r))
                .and_then(display_name)
        })
        .or_else(|| str_at(requester, "reference").map(str::to_owned))
}

fn dosage_text(request: &Value) -> Option<String> {
    let texts: Vec<&str> = array(request, "dosageInstruction")
        .filter_map(|d| str_at(d, "text"))
        .collect();
    (!texts.is_empty()).then(|| texts.join("; "))
}

pub(super) fn medication_view(
    request: &Value,
    page: &Page,
    e: &Eligibility,
    open: Option<&OpenRequest>,
) -> Medication {
    Medication {
        id: str_at(request, "id").unwrap_or_default().to_owned(),
        medication: medication_name(request, Some(page)),
        dosage: dosage_text(request),
        status: str_at(request, "status").map(str::to_owned),
        intent: str_at(request, "intent").map(str::to_owned),
        authored_on: str_at(request, "authoredOn").map(str::to_owned),
        prescriber: prescriber_name(request, page),
        valid_until: request
            .pointer("/dispenseRequest/validityPeriod/end")
            .and_then(Value::as_str)
            .map(str::to_owned),
        refills_allowed: e.refills_allowed,
        refills_used: e.refills_used,
        refills_left: e.refills_left,
        last_dispensed: e.last_dispensed.map(instant),
        next_eligible: e.next_eligible.map(instant),
        refill: RefillStatus {
            eligible: e.eligible(),
            reason: e.reason,
            message: e.reason.map(|r| r.message().to_owned()),
        },
        open_request: open.cloned(),
    }
}

pub(super) fn normalized_status(resource_type: &str, status: Option<&str>) -> RefillRequestStatus {
    use RefillRequestStatus as S;
    let Some(status) = status else {
        return S::Unknown;
    };
    match (resource_type, status) {
        ("Task", "draft" | "requested" | "received") => S::Requested,
        ("Task", "accepted" | "ready") => S::Accepted,
        ("Task", "in-progress" | "on-hold") => S::InProgress,
        ("Task", "completed") => S::Completed,
        ("Task", "rejected" | "failed") => S::Rejected,
        ("Task", "cancelled" | "entered-in-error") => S::Cancelled,
        ("MedicationRequest", "draft" | "active") => S::Requested,
        ("MedicationRequest", "on-hold") => S::InProgress,
        ("MedicationRequest", "completed") => S::Completed,
        ("MedicationRequest", "stopped") => S::Rejected,
        ("MedicationRequest", "cancelled" | "entered-in-error") => S::Cancelled,
        ("Communication", "preparation" | "in-progress") => S::Requested,
        ("Communication", "on-hold") => S::InProgress,
        ("Communication", "completed") => S::Completed,
        ("Communication", "not-done" | "stopped") => S::Rejected,
        ("Communication", "entered-in-error") => S::Cancelled,
        _ => S::Unknown,
    }
}

/// The prescription a refill request is about.
pub(super) fn refill_target(resource: &Value) -> Option<String> {
    let path = match str_at(resource, "resourceType")? {
        "Task" => "focus",
        "MedicationRequest" => "priorPrescription",
        "Communication" => "about",
        _ => return None,
    };
    references(resource, path).into_iter().find_map(|r| {
        Reference::parse(r)
            .ok()
            .filter(|r| r.resource_type == "MedicationRequest")
            .map(|r| r.id)
    })
}

pub(super) fn refill_view(resource: &Value, medication: Option<String>) -> RefillRequest {
    let resource_type = str_at(resource, "resourceType").unwrap_or_default();
    let note = match resource_type {
        "Communication" => array(resource, "payload")
            .skip(1)
            .filter_map(|p| str_at(p, "contentString"))
            .find(|t| !t.starts_with("Preferred pharmacy: "))
            .map(str::to_owned),
        _ => array(resource, "note")
            .filter_map(|n| str_at(n, "text"))
            .find(|t| !t.starts_with("Preferred pharmacy: "))
            .map(str::to_owned),
    };
    let created = match resource_type {
        "Communication" => str_at(resource, "sent"),
        _ => str_at(resource, "authoredOn"),
    };
    RefillRequest {
        id: str_at(resource, "id").unwrap_or_default().to_owned(),
        resource_type: resource_type.to_owned(),
        status: normalized_status(resource_type, str_at(resource, "status")),
        fhir_status: str_at(resource, "status").map(str::to_owned),
        medication_request_id: refill_target(resource),
        medication: medication.or_else(|| {
            (resource_type == "MedicationRequest")
                .then(|| medication_name(resource, None))
                .flatten()
        }),
        created: created.map(str::to_owned),
        note,
    }
}

/// The literal references at `key` (one Reference or an array of them).
pub(super) fn references<'a>(resource: &'a Value, key: &str) -> Vec<&'a str> {
    match resource.get(key) {
        Some(Value::Array(list)) => list.iter().filter_map(|r| str_at(r, "reference")).collect(),
        Some(one) => str_at(one, "reference").into_iter().collect(),
        None => Vec::new(),
    }
}
