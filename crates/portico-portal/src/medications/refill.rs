//! Refill requests, per the EHR profile's [`RefillStrategy`].
//!
//! A refill request re-reads the MedicationRequest and its dispenses (refusing data
//! served stale from the cache), re-checks eligibility under a per-prescription lock
//! with the same whole-answer rule (422 `history_unavailable` otherwise), and creates
//! what the strategy says ([`RefillContent`]):
//! - `task`: a `Task` (`fulfill`, "Refill Request") focused on the MedicationRequest,
//!   owned by the prescriber (the R4 spec's own refill example);
//! - `medication-request`: a `MedicationRequest` `intent=proposal` with
//!   `priorPrescription`;
//! - `communication`: an `in-progress` `Communication` to the prescriber (else the
//!   patient's care team) `about` the MedicationRequest, topic "Prescription Refill"
//!   (Epic's message topic).

use chrono::{DateTime, Utc};
use portico_fhir::reference::Reference;
use portico_upstream::UpstreamError;
use serde_json::{Value, json};

use super::TASK_CODE_SYSTEM;
use super::eligibility::{IneligibleReason, OpenState, eligibility};
use super::history::{completed_dispenses, matches_and_stale, mr_reference, open_requests};
use super::views::{RefillInput, RefillRequest, medication_name, refill_view};
use crate::careteam;
use crate::context::Ctx;
use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::profile::RefillStrategy;
use crate::view::{instant, str_at};

/// `Task.code.text` and the Communication topic of refill requests.
pub const REFILL_TASK_TEXT: &str = "Refill Request";

/// The Communication topic of refill requests (Epic MyChart's topic name).
pub const REFILL_TOPIC: &str = "Prescription Refill";

fn refuse_stale() -> PortalError {
    PortalError::Upstream(UpstreamError::CircuitOpen { retry_after: None })
}

/// `POST /medications/{id}/refill-requests`: checks eligibility on fresh data and
/// creates the refill request per the profile's strategy, exactly once per `idem`.
pub async fn request_refill(
    ctx: Ctx<'_>,
    id: &str,
    input: &RefillInput,
    idem: &Idem,
) -> PortalResult<RefillRequest> {
    let (note, pharmacy) = input.checked()?;
    let strategy = ctx.profile().refills.strategy;
    let rt = strategy_type(strategy);
    // Two requests for the same prescription run one after the other, so the second
    // sees the first one's open request.
    let _guard = ctx.portal.lock(&format!("refill:{id}")).await?;

    let current = ctx.read("MedicationRequest", id).await?;
    if current.stale.is_some() {
        return Err(refuse_stale());
    }
    let request = &current.resource;
    // A retry of a request whose answer was lost finds what it created.
    if let Some(existing) = ctx.find_by_identifier(rt, idem).await? {
        return Ok(refill_view(&existing, medication_name(request, None)));
    }
    let ids = [id];
    let (dispenses, open) = tokio::join!(
        completed_dispenses(ctx, Some(&ids)),
        open_requests(ctx, &ids)
    );
    let ((dispenses, stale_dispenses), (open, stale_open)) = (matches_and_stale(dispenses?), open?);
    if stale_dispenses || stale_open {
        return Err(refuse_stale());
    }
    let now = ctx.now();
    let open = OpenState::of(open.as_ref(), id);
    let e = eligibility(
        request,
        dispenses.as_deref(),
        open,
        ctx.patient(),
        &ctx.profile().refills,
        now,
    );
    match e.reason {
        None => {}
        Some(IneligibleReason::NotThePatients) => return Err(PortalError::NotFound),
        Some(reason) => {
            let mut detail = json!({"reason": reason.code(), "message": reason.message()});
            if reason == IneligibleReason::TooSoon
                && let Some(next) = e.next_eligible
            {
                detail["next_eligible"] = json!(instant(next));
            }
            if let Some(open) = open.request() {
                detail["open_request"] = json!(open);
            }
            return Err(PortalError::Refused {
                code: "refill_not_eligible",
                message: reason.message().to_owned(),
                detail: Some(detail),
            });
        }
    }
    let medication = medication_name(request, None);
    let refill = RefillContent {
        request,
        patient: ctx.patient(),
        now,
        note: note.as_deref(),
        pharmacy: pharmacy.as_deref(),
        medication: medication.as_deref(),
    };
    let body = match strategy {
        RefillStrategy::Task => refill.task(),
        RefillStrategy::MedicationRequest => refill.proposal(),
        RefillStrategy::Communication => {
            let recipient = match prescriber_reference(request) {
                Some(r) => r,
                None => careteam::first_team(ctx).await?.ok_or_else(|| {
                    PortalError::refused(
                        "no_recipient",
                        "this prescription names no prescriber and you have no care team to send the request to",
                    )
                })?,
            };
            refill.communication(recipient)
        }
    };
    let created = ctx.create(rt, body, idem).await?;
    Ok(refill_view(&created.resource, medication))
}

fn strategy_type(strategy: RefillStrategy) -> &'static str {
    match strategy {
        RefillStrategy::Task => "Task",
        RefillStrategy::MedicationRequest => "MedicationRequest",
        RefillStrategy::Communication => "Communication",
    }
}

/// The prescriber as a literal reference (with its display), when the
/// MedicationRequest names one.
fn prescriber_reference(request: &Value) -> Option<Value> {
    let requester = request.get("requester")?;
    let reference = str_at(requester, "reference")?;
    let parsed = Reference::parse(reference).ok()?;
    if !matches!(
        parsed.resource_type.as_str(),
        "Practitioner" | "PractitionerRole" | "Organization"
    ) {
        return None;
    }
    let mut out = json!({"reference": parsed.relative()});
    if let Some(display) = str_at(requester, "display") {
        out["display"] = json!(display);
    }
    Some(out)
}

/// What goes into a refill request, whatever its resource.
pub(super) struct RefillContent<'a> {
    pub(super) request: &'a Value,
    pub(super) patient: &'a str,
    pub(super) now: DateTime<Utc>,
    pub(super) note: Option<&'a str>,
    pub(super) pharmacy: Option<&'a str>,
    pub(super) medication: Option<&'a str>,
}

impl RefillContent<'_> {
    fn patient_ref(&self) -> Value {
        json!({"reference": format!("Patient/{}", self.patient)})
    }

    fn focus(&self) -> Value {
        json!({"reference": mr_reference(str_at(self.request, "id").unwrap_or_default())})
    }

    fn notes(&self) -> Vec<Value> {
        let mut notes = Vec::new();
        let mut add = |text: String| {
            notes.push(json!({
                "authorReference": self.patient_ref(),
                "time": instant(self.now),
                "text": text,
            }));
        };
        if let Some(note) = self.note {
            add(note.to_owned());
        }
        if let Some(pharmacy) = self.pharmacy {
            add(format!("Preferred pharmacy: {pharmacy}"));
        }
        notes
    }

    fn description(&self) -> String {
        match self.medication {
            Some(m) => format!("Refill request: {m}"),
            None => "Refill request".to_owned(),
        }
    }

    /// A `Task` as in the R4 spec's refill example (`task-example3.json`).
    pub(super) fn task(&self) -> Value {
        let mut task = json!({
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": {
                "coding": [{"system": TASK_CODE_SYSTEM, "code": "fulfill"}],
                "text": REFILL_TASK_TEXT
            },
            "description": self.description(),
            "focus": self.focus(),
            "for": self.patient_ref(),
            "authoredOn": instant(self.now),
            "lastModified": instant(self.now),
            "requester": self.patient_ref(),
        });
        if let Some(owner) = prescriber_reference(self.request) {
            task["owner"] = owner;
        }
        let notes = self.notes();
        if !notes.is_empty() {
            task["note"] = json!(notes);
        }
        task
    }

    /// A `MedicationRequest` proposal renewing the prescription.
    pub(super) fn proposal(&self) -> Value {
        let mut proposal = json!({
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "proposal",
            "subject": self.patient_ref(),
            "authoredOn": instant(self.now),
            "requester": self.patient_ref(),
            "priorPrescription": self.focus(),
        });
        for key in [
            "medicationCodeableConcept",
            "medicationReference",
            "dosageInstruction",
        ] {
            if let Some(v) = self.request.get(key) {
                proposal[key] = v.clone();
            }
        }
        let notes = self.notes();
        if !notes.is_empty() {
            proposal["note"] = json!(notes);
        }
        proposal
    }

    /// A `Communication` to `recipient` about the prescription.
    pub(super) fn communication(&self, recipient: Value) -> Value {
        let mut payload = vec![json!({"contentString": self.description()})];
        if let Some(note) = self.note {
            payload.push(json!({"contentString": note}));
        }
        if let Some(pharmacy) = self.pharmacy {
            payload.push(json!({"contentString": format!("Preferred pharmacy: {pharmacy}")}));
        }
        json!({
            "resourceType": "Communication",
            "status": "in-progress",
            "topic": {"text": REFILL_TOPIC},
            "subject": self.patient_ref(),
            "sender": self.patient_ref(),
            "recipient": [recipient],
            "about": [self.focus()],
            "sent": instant(self.now),
            "payload": payload,
        })
    }
}
