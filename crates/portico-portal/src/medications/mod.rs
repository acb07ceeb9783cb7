//! Medications, refill eligibility and refill requests.
//!
//! `GET /medications` lists the patient's MedicationRequests with the refill situation
//! of each; `POST /medications/{id}/refill-requests` asks for a refill, as the EHR
//! profile's [`RefillStrategy`](crate::profile::RefillStrategy) says (a `Task`, a
//! `MedicationRequest` proposal or a `Communication`); `GET /refill-requests` lists what
//! was asked.
//!
//! Where each concern lives: `eligibility` decides whether a refill may be requested
//! now ([`eligibility()`], pure rules, no I/O, with the decisions the R4 spec leaves
//! open); `history` makes the searches eligibility rests on (dispenses and open refill
//! requests, each read whole or not at all); `list` answers the two listings; `refill`
//! makes a refill request per strategy; `views` holds the view and input types and the
//! FHIR → view mapping. Unit tests are in `tests`.

mod eligibility;
mod history;
mod list;
mod refill;
#[cfg(test)]
mod tests;
mod views;

pub use eligibility::{Eligibility, IneligibleReason, OpenRequest, OpenState, eligibility};
pub use history::PATIENT_WIDE_BOUND;
pub use list::{list, refill_requests};
pub use refill::{REFILL_TASK_TEXT, REFILL_TOPIC, request_refill};
pub use views::{
    MAX_NOTE_CHARS, MAX_PHARMACY_CHARS, Medication, MedicationList, RefillInput, RefillRequest,
    RefillRequestList, RefillRequestStatus, RefillStatus,
};

/// The code system of `Task.code`.
pub const TASK_CODE_SYSTEM: &str = "http://hl7.org/fhir/CodeSystem/task-code";
