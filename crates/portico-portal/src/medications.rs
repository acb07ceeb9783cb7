//! Medications, refill eligibility and refill requests.
//!
//! `GET /medications` lists the patient's MedicationRequests (active and on-hold ones,
//! plus finished ones authored in the last year) with the refill situation of each:
//! refills allowed, used and left, the last fill, when the next fill may be asked for,
//! and whether a refill may be requested now ([`eligibility`], a pure function of the
//! MedicationRequest, its dispenses, the open refill request and `now`). The listing is
//! one EHR round trip in the usual case: the prescriptions, the patient's completed
//! dispenses and the patient's open refill requests are searched at the same time and
//! matched here; a patient-wide answer that is not whole (more than
//! [`PATIENT_WIDE_BOUND`], pages left, or see [`crate::whole::search_whole`]) is
//! replaced by the searches scoped to the listed prescriptions (`prescription=`,
//! `focus=`). Every search eligibility rests on must be whole: when the dispenses or the
//! open refill requests still cannot be read whole (more than the gateway collects, an
//! answer the EHR flagged with a warning, an answer that is not a Bundle; the
//! MedicationRequest and Communication strategies have no narrower search to fall back
//! to), the prescription is not eligible (`history_unavailable`) and counts the gateway
//! could not make are `null`.
//!
//! A refill request re-reads the MedicationRequest and its dispenses (refusing data
//! served stale from the cache), re-checks eligibility under a per-prescription lock
//! with the same whole-answer rule (422 `history_unavailable` otherwise), and creates
//! what the EHR profile's [`RefillStrategy`] says:
//! - `task`: a `Task` (`fulfill`, "Refill Request") focused on the MedicationRequest,
//!   owned by the prescriber (the R4 spec's own refill example);
//! - `medication-request`: a `MedicationRequest` `intent=proposal` with
//!   `priorPrescription`;
//! - `communication`: an `in-progress` `Communication` to the prescriber `about` the
//!   MedicationRequest, topic "Prescription Refill" (Epic's message topic).
//!
//! Decisions the R4 spec leaves open, taken here:
//! - refills used = completed dispenses − 1 (the first fill is not a refill), never
//!   below zero; dispenses of other statuses do not count;
//! - a MedicationRequest without `dispenseRequest.numberOfRepeatsAllowed` states no
//!   refills: it is treated as 0 repeats (`no_refills_left`), as pharmacies do;
//! - validity bounds given as dates are whole UTC days: a prescription valid until
//!   `2025-07-01` may be refilled through the end of that day;
//! - the minimum interval counts from the latest `whenHandedOver` of a completed
//!   dispense; `dispenseInterval` wins over `min_interval_fraction ×
//!   expectedSupplyDuration`; durations in units that are not time units are ignored;
//!   with no dispense yet there is no interval to wait;
//! - the checks run in a fixed order and the first failing one is the reason: subject,
//!   status, intent, reported, validity, acute course, dispenses read whole, refills
//!   left, open request (`history_unavailable` when the open requests could not be read
//!   whole), interval.

use std::collections::{HashMap, HashSet};
use std::pin::pin;

use chrono::{DateTime, Months, NaiveDate, TimeDelta, Utc};
use futures::future::Either;
use portico_fhir::reference::Reference;
use portico_upstream::UpstreamError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::careteam;
use crate::context::{Ctx, Page};
use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::input::Text;
use crate::me::display_name;
use crate::profile::{RefillStrategy, RefillsProfile};
use crate::view::{array, concept_text, instant, parse_datetime, str_at};

/// The code system of `Task.code`.
pub const TASK_CODE_SYSTEM: &str = "http://hl7.org/fhir/CodeSystem/task-code";
/// `Task.code.text` and the Communication topic of refill requests.
pub const REFILL_TASK_TEXT: &str = "Refill Request";
/// The Communication topic of refill requests (Epic MyChart's topic name).
pub const REFILL_TOPIC: &str = "Prescription Refill";
/// The longest note a patient may add to a refill request, in characters.
pub const MAX_NOTE_CHARS: usize = 500;
/// The longest pharmacy name, in characters.
pub const MAX_PHARMACY_CHARS: usize = 200;
/// Finished prescriptions authored more recently than this are still listed.
const RECENT_DAYS: i64 = 365;
/// The most MedicationRequests (and as many refill requests) one listing collects.
const MAX_LISTED: usize = 200;
/// The most dispenses (and open refill Tasks) of a patient-wide search used as is by the
/// listing; with more, the searches scoped to the listed prescriptions are made.
pub const PATIENT_WIDE_BOUND: usize = 200;
/// Task statuses of a refill request still waiting to be handled.
const OPEN_TASK_STATUSES: &str = "draft,requested,received,accepted,ready,in-progress,on-hold";

// ---------------------------------------------------------------------------------
// Eligibility (pure)

/// Why a refill cannot be requested now. The codes are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IneligibleReason {
    /// The prescription is not the acting patient's (never shown: answered as 404).
    NotThePatients,
    /// `status` is not `active` (completed, stopped, on-hold, ...).
    NotActive,
    /// `intent` is not an order (a proposal or plan cannot be refilled).
    NotAnOrder,
    /// A medication the patient reported taking, not a prescription.
    ReportedMedication,
    /// `dispenseRequest.validityPeriod` has not started.
    NotYetValid,
    /// `dispenseRequest.validityPeriod` has ended.
    Expired,
    /// A short (acute) course, which the EHR profile does not let patients refill.
    AcuteCourse,
    /// Every fill the prescription allows has been dispensed.
    NoRefillsLeft,
    /// A refill request for it is already open.
    AlreadyRequested,
    /// The last fill was too recent; see `next_eligible`.
    TooSoon,
    /// The prescription's dispenses or open refill requests could not be read whole
    /// (more than the gateway collects, an answer the EHR flagged as partial, or one
    /// that was not a search result): eligibility is not decided on part of a history.
    HistoryUnavailable,
}

impl IneligibleReason {
    /// The code, as serialized.
    pub fn code(self) -> &'static str {
        match self {
            IneligibleReason::NotThePatients => "not_the_patients",
            IneligibleReason::NotActive => "not_active",
            IneligibleReason::NotAnOrder => "not_an_order",
            IneligibleReason::ReportedMedication => "reported_medication",
            IneligibleReason::NotYetValid => "not_yet_valid",
            IneligibleReason::Expired => "expired",
            IneligibleReason::AcuteCourse => "acute_course",
            IneligibleReason::NoRefillsLeft => "no_refills_left",
            IneligibleReason::AlreadyRequested => "already_requested",
            IneligibleReason::TooSoon => "too_soon",
            IneligibleReason::HistoryUnavailable => "history_unavailable",
        }
    }

    /// A sentence for the patient.
    pub fn message(self) -> &'static str {
        match self {
            IneligibleReason::NotThePatients => "this prescription was not found",
            IneligibleReason::NotActive => {
                "this prescription is no longer active; ask your care team about renewing it"
            }
            IneligibleReason::NotAnOrder => "this is not a prescription that can be refilled",
            IneligibleReason::ReportedMedication => {
                "this medication was reported, not prescribed here; ask your care team for a prescription"
            }
            IneligibleReason::NotYetValid => "this prescription is not valid yet",
            IneligibleReason::Expired => {
                "this prescription has expired; ask your care team to renew it"
            }
            IneligibleReason::AcuteCourse => {
                "this was prescribed as a short course and cannot be refilled online; contact your care team"
            }
            IneligibleReason::NoRefillsLeft => {
                "no refills are left on this prescription; ask your care team to renew it"
            }
            IneligibleReason::AlreadyRequested => {
                "a refill of this prescription has already been requested"
            }
            IneligibleReason::TooSoon => {
                "it is too soon to refill this prescription; try again on the next eligible date"
            }
            IneligibleReason::HistoryUnavailable => {
                "the pharmacy history could not be read completely; call the clinic"
            }
        }
    }
}

/// An open refill request of a prescription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OpenRequest {
    /// The id of the `resource_type` resource in the EHR.
    pub id: String,
    /// `Task`, `MedicationRequest` (a proposal) or `Communication`.
    pub resource_type: String,
    /// Its FHIR status.
    pub status: String,
}

/// What the search for open refill requests says about one prescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenState<'a> {
    /// No open refill request (the search was whole).
    None,
    /// This one is open.
    Open(&'a OpenRequest),
    /// The search was not whole: there may be one.
    Unknown,
}

impl<'a> OpenState<'a> {
    /// The state of prescription `id` in the open requests found, `None` when they could
    /// not be read whole.
    pub fn of(found: Option<&'a HashMap<String, OpenRequest>>, id: &str) -> OpenState<'a> {
        match found {
            None => OpenState::Unknown,
            Some(found) => found.get(id).map_or(OpenState::None, OpenState::Open),
        }
    }

    fn request(self) -> Option<&'a OpenRequest> {
        match self {
            OpenState::Open(r) => Some(r),
            OpenState::None | OpenState::Unknown => None,
        }
    }
}

/// The refill situation of one prescription.
#[derive(Debug, Clone, PartialEq)]
pub struct Eligibility {
    /// `dispenseRequest.numberOfRepeatsAllowed`; `None` when the prescription states none.
    pub refills_allowed: Option<u32>,
    /// Completed dispenses after the first; `None` when the dispenses could not be read
    /// whole.
    pub refills_used: Option<u32>,
    /// Refills still allowed (0 when none are stated); `None` when the dispenses could
    /// not be read whole.
    pub refills_left: Option<u32>,
    /// The latest `whenHandedOver` of a completed dispense.
    pub last_dispensed: Option<DateTime<Utc>>,
    /// When the minimum interval since the last fill ends (only while refills are left).
    pub next_eligible: Option<DateTime<Utc>>,
    /// Why a refill cannot be requested now; `None` when it can.
    pub reason: Option<IneligibleReason>,
}

impl Eligibility {
    pub fn eligible(&self) -> bool {
        self.reason.is_none()
    }
}

/// Whether the acting patient may ask for a refill of `request` now.
///
/// `dispenses` may hold dispenses of other prescriptions and of any status: only the
/// completed ones authorized by `request` count; `None` means they could not be read
/// whole, and then nothing that depends on them is decided (`history_unavailable`).
/// `open` is what the search for open refill requests says of `request`.
pub fn eligibility(
    request: &Value,
    dispenses: Option<&[Value]>,
    open: OpenState<'_>,
    patient: &str,
    rules: &RefillsProfile,
    now: DateTime<Utc>,
) -> Eligibility {
    let id = str_at(request, "id").unwrap_or_default();
    let dispense_request = request.get("dispenseRequest");
    let refills_allowed = dispense_request
        .and_then(|d| d.get("numberOfRepeatsAllowed"))
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let own: Option<Vec<&Value>> = dispenses.map(|dispenses| {
        dispenses
            .iter()
            .filter(|d| str_at(d, "status") == Some("completed"))
            .filter(|d| {
                array(d, "authorizingPrescription").any(|r| points_to(r, "MedicationRequest", id))
            })
            .collect()
    });
    let refills_used = own.as_ref().map(|own| {
        u32::try_from(own.len())
            .unwrap_or(u32::MAX)
            .saturating_sub(1)
    });
    let refills_left = refills_used.map(|used| refills_allowed.unwrap_or(0).saturating_sub(used));
    let last_dispensed = own
        .iter()
        .flatten()
        .filter_map(|d| str_at(d, "whenHandedOver").and_then(parse_datetime));
    let last_dispensed = last_dispensed.max();
    let interval = dispense_request.and_then(|d| min_interval(d, rules.min_interval_fraction));
    let next_eligible = match (last_dispensed, interval, refills_left) {
        (Some(last), Some(interval), Some(left)) if left > 0 => last.checked_add_signed(interval),
        _ => None,
    };

    let reason = (|| {
        use IneligibleReason as R;
        let subject_ok = request
            .get("subject")
            .is_some_and(|s| points_to(s, "Patient", patient));
        if !subject_ok {
            return Some(R::NotThePatients);
        }
        if str_at(request, "status") != Some("active") {
            return Some(R::NotActive);
        }
        if !matches!(
            str_at(request, "intent"),
            Some("order" | "original-order" | "instance-order")
        ) {
            return Some(R::NotAnOrder);
        }
        if request.get("reportedBoolean").and_then(Value::as_bool) == Some(true)
            || request.get("reportedReference").is_some()
        {
            return Some(R::ReportedMedication);
        }
        if let Some(period) = dispense_request.and_then(|d| d.get("validityPeriod")) {
            if let Some(start) = str_at(period, "start").and_then(parse_datetime)
                && now < start
            {
                return Some(R::NotYetValid);
            }
            if let Some(end) = str_at(period, "end").and_then(end_exclusive)
                && now >= end
            {
                return Some(R::Expired);
            }
        }
        let acute = request
            .get("courseOfTherapyType")
            .is_some_and(|c| array(c, "coding").any(|x| str_at(x, "code") == Some("acute")));
        if acute && !rules.allow_acute {
            return Some(R::AcuteCourse);
        }
        let Some(refills_left) = refills_left else {
            return Some(R::HistoryUnavailable);
        };
        if refills_left == 0 {
            return Some(R::NoRefillsLeft);
        }
        match open {
            OpenState::Open(_) => return Some(R::AlreadyRequested),
            OpenState::Unknown => return Some(R::HistoryUnavailable),
            OpenState::None => {}
        }
        if let Some(next) = next_eligible
            && now < next
        {
            return Some(R::TooSoon);
        }
        None
    })();

    Eligibility {
        refills_allowed,
        refills_used,
        refills_left,
        last_dispensed,
        next_eligible,
        reason,
    }
}

/// Whether a Reference value points to `rt/id` (parsed, never by substring).
fn points_to(reference: &Value, rt: &str, id: &str) -> bool {
    str_at(reference, "reference")
        .and_then(|r| Reference::parse(r).ok())
        .is_some_and(|r| r.is(rt, id))
}

/// The first instant after a Period's `end`: for a date (or month, or year) the start of
/// the next one; for a dateTime, one millisecond later (so `now == end` is still valid).
fn end_exclusive(end: &str) -> Option<DateTime<Utc>> {
    let day = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    match end.len() {
        10 => day(NaiveDate::parse_from_str(end, "%Y-%m-%d")
            .ok()?
            .succ_opt()?),
        7 => day(NaiveDate::parse_from_str(&format!("{end}-01"), "%Y-%m-%d")
            .ok()?
            .checked_add_months(Months::new(1))?),
        4 => day(
            NaiveDate::parse_from_str(&format!("{end}-01-01"), "%Y-%m-%d")
                .ok()?
                .checked_add_months(Months::new(12))?,
        ),
        _ => parse_datetime(end)?.checked_add_signed(TimeDelta::milliseconds(1)),
    }
}

/// The shortest time between fills: `dispenseInterval`, else `fraction ×
/// expectedSupplyDuration`.
fn min_interval(dispense_request: &Value, fraction: f64) -> Option<TimeDelta> {
    if let Some(interval) = dispense_request
        .get("dispenseInterval")
        .and_then(duration_seconds)
    {
        return seconds(interval);
    }
    let supply = dispense_request
        .get("expectedSupplyDuration")
        .and_then(duration_seconds)?;
    seconds(supply * fraction)
}

fn seconds(s: f64) -> Option<TimeDelta> {
    // More than ten years between fills is not a real interval.
    if !s.is_finite() || !(0.0..=10.0 * 366.0 * 86_400.0).contains(&s) {
        return None;
    }
    TimeDelta::try_milliseconds((s * 1000.0).round() as i64)
}

/// A FHIR Duration in seconds, from its UCUM `code` or its `unit` text. Months are 30
/// days and years 365, as pharmacy supply calculations count them.
fn duration_seconds(duration: &Value) -> Option<f64> {
    let value = duration.get("value")?.as_f64()?;
    let unit_seconds = |u: &str| -> Option<f64> {
        Some(match u.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" | "seconds" => 1.0,
            "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "wk" | "week" | "weeks" => 7.0 * 86_400.0,
            "mo" | "month" | "months" => 30.0 * 86_400.0,
            "a" | "year" | "years" => 365.0 * 86_400.0,
            _ => return None,
        })
    };
    let per_unit = str_at(duration, "code")
        .and_then(unit_seconds)
        .or_else(|| str_at(duration, "unit").and_then(unit_seconds))?;
    Some(value * per_unit)
}

// ---------------------------------------------------------------------------------
// Views

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
fn medication_name(request: &Value, page: Option<&Page>) -> Option<String> {
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

fn medication_view(
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

/// Whether a prescription is worth listing: a real prescription (not the patient's own
/// proposal) with an id, active, on hold, or finished within the last year.
fn listed(request: &Value, now: DateTime<Utc>) -> bool {
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

// ---------------------------------------------------------------------------------
// Actions

fn refuse_stale() -> PortalError {
    PortalError::Upstream(UpstreamError::CircuitOpen { retry_after: None })
}

fn mr_reference(id: &str) -> String {
    format!("MedicationRequest/{id}")
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

/// The completed dispenses of these prescriptions (`of`; one search), or all the
/// patient's when they fit in [`PATIENT_WIDE_BOUND`] (`None`); `None` when the answer is
/// not whole (see [`crate::whole::search_whole`]).
async fn completed_dispenses(ctx: Ctx<'_>, of: Option<&[&str]>) -> PortalResult<Option<Page>> {
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
fn matches_and_stale(page: Option<Page>) -> (Option<Vec<Value>>, bool) {
    match page {
        Some(page) => (Some(page.matches), page.stale),
        None => (None, false),
    }
}

/// The answer of a search for open refill requests.
struct OpenSearch {
    /// The whole answer; `None` when it was not whole ([`crate::whole::search_whole`]).
    page: Option<Page>,
    /// What a refill request is, per the strategy.
    resource_type: &'static str,
    /// Where a refill request names its prescription.
    path: &'static str,
}

impl OpenSearch {
    /// The open refill request of each of these prescriptions (`None` when the answer
    /// is not whole: any of them may have one), and whether the answer was stale.
    fn open_of(&self, ids: &[&str]) -> (Option<HashMap<String, OpenRequest>>, bool) {
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
async fn open_request_search(ctx: Ctx<'_>, focus: Option<&[&str]>) -> PortalResult<OpenSearch> {
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
async fn open_requests(
    ctx: Ctx<'_>,
    ids: &[&str],
) -> PortalResult<(Option<HashMap<String, OpenRequest>>, bool)> {
    Ok(open_request_search(ctx, Some(ids)).await?.open_of(ids))
}

/// The literal references at `key` (one Reference or an array of them).
fn references<'a>(resource: &'a Value, key: &str) -> Vec<&'a str> {
    match resource.get(key) {
        Some(Value::Array(list)) => list.iter().filter_map(|r| str_at(r, "reference")).collect(),
        Some(one) => str_at(one, "reference").into_iter().collect(),
        None => Vec::new(),
    }
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
    let _guard = ctx.portal.lock(&format!("refill:{id}")).await;

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
struct RefillContent<'a> {
    request: &'a Value,
    patient: &'a str,
    now: DateTime<Utc>,
    note: Option<&'a str>,
    pharmacy: Option<&'a str>,
    medication: Option<&'a str>,
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
    fn task(&self) -> Value {
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
    fn proposal(&self) -> Value {
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
    fn communication(&self, recipient: Value) -> Value {
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

fn normalized_status(resource_type: &str, status: Option<&str>) -> RefillRequestStatus {
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
fn refill_target(resource: &Value) -> Option<String> {
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

fn refill_view(resource: &Value, medication: Option<String>) -> RefillRequest {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::RefillStrategy;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 7, 1, 12, 0, 0).unwrap()
    }

    fn rules() -> RefillsProfile {
        RefillsProfile {
            strategy: RefillStrategy::Task,
            min_interval_fraction: 0.75,
            allow_acute: false,
        }
    }

    /// An active order of p1, valid 2025-01-01..2025-12-31, 3 repeats, 30-day supply.
    fn order() -> Value {
        json!({
            "resourceType": "MedicationRequest",
            "id": "mr1",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "requester": {"reference": "Practitioner/dr1", "display": "Dr One"},
            "medicationCodeableConcept": {"text": "Lisinopril 10 mg"},
            "courseOfTherapyType": {"coding": [{"code": "continuous"}]},
            "dispenseRequest": {
                "validityPeriod": {"start": "2025-01-01", "end": "2025-12-31"},
                "numberOfRepeatsAllowed": 3,
                "expectedSupplyDuration": {"value": 30, "unit": "days", "code": "d"}
            }
        })
    }

    fn dispense(handed_over: &str) -> Value {
        json!({
            "resourceType": "MedicationDispense",
            "status": "completed",
            "authorizingPrescription": [{"reference": "MedicationRequest/mr1"}],
            "whenHandedOver": handed_over
        })
    }

    fn check(mr: &Value, dispenses: &[Value]) -> Eligibility {
        eligibility(mr, Some(dispenses), OpenState::None, "p1", &rules(), now())
    }

    fn reason(mr: &Value, dispenses: &[Value]) -> Option<IneligibleReason> {
        check(mr, dispenses).reason
    }

    #[test]
    fn an_active_order_with_refills_left_and_an_old_fill_is_eligible() {
        let e = check(&order(), &[dispense("2025-05-01T15:30:00Z")]);
        assert!(e.eligible(), "{e:?}");
        assert_eq!(e.refills_allowed, Some(3));
        assert_eq!(e.refills_used, Some(0));
        assert_eq!(e.refills_left, Some(3));
        assert_eq!(
            e.last_dispensed,
            Some(Utc.with_ymd_and_hms(2025, 5, 1, 15, 30, 0).unwrap())
        );
    }

    #[test]
    fn another_patients_prescription_is_refused_first() {
        let mut mr = order();
        mr["subject"] = json!({"reference": "Patient/p10"});
        assert_eq!(reason(&mr, &[]), Some(IneligibleReason::NotThePatients));
        mr["subject"] = json!({"reference": "Group/p1"});
        assert_eq!(reason(&mr, &[]), Some(IneligibleReason::NotThePatients));
        mr.as_object_mut().unwrap().remove("subject");
        assert_eq!(reason(&mr, &[]), Some(IneligibleReason::NotThePatients));
    }

    #[test]
    fn only_active_orders_can_be_refilled() {
        for status in ["completed", "stopped", "on-hold", "cancelled", "draft"] {
            let mut mr = order();
            mr["status"] = json!(status);
            assert_eq!(
                reason(&mr, &[]),
                Some(IneligibleReason::NotActive),
                "{status}"
            );
        }
        for intent in ["proposal", "plan", "reflex-order", "filler-order", "option"] {
            let mut mr = order();
            mr["intent"] = json!(intent);
            assert_eq!(
                reason(&mr, &[]),
                Some(IneligibleReason::NotAnOrder),
                "{intent}"
            );
        }
        for intent in ["original-order", "instance-order"] {
            let mut mr = order();
            mr["intent"] = json!(intent);
            assert_eq!(reason(&mr, &[]), None, "{intent}");
        }
    }

    #[test]
    fn reported_medications_are_not_prescriptions() {
        let mut mr = order();
        mr["reportedBoolean"] = json!(true);
        assert_eq!(reason(&mr, &[]), Some(IneligibleReason::ReportedMedication));
        mr["reportedBoolean"] = json!(false);
        assert_eq!(reason(&mr, &[]), None);
        let mut mr = order();
        mr["reportedReference"] = json!({"reference": "Patient/p1"});
        assert_eq!(reason(&mr, &[]), Some(IneligibleReason::ReportedMedication));
    }

    #[test]
    fn validity_bounds_are_whole_days_and_inclusive() {
        let at = |end: &str, start: &str, t: DateTime<Utc>| {
            let mut mr = order();
            mr["dispenseRequest"]["validityPeriod"] = json!({"start": start, "end": end});
            eligibility(&mr, Some(&[]), OpenState::None, "p1", &rules(), t).reason
        };
        let day =
            |d: u32, h: u32, m: u32, s: u32| Utc.with_ymd_and_hms(2025, 7, d, h, m, s).unwrap();
        // Valid through the last second of the end date.
        assert_eq!(at("2025-07-01", "2025-01-01", day(1, 23, 59, 59)), None);
        assert_eq!(
            at("2025-07-01", "2025-01-01", day(2, 0, 0, 0)),
            Some(IneligibleReason::Expired)
        );
        assert_eq!(
            at("2025-06-30", "2025-01-01", now()),
            Some(IneligibleReason::Expired)
        );
        // A dateTime end is inclusive to the instant.
        assert_eq!(at("2025-07-01T12:00:00Z", "2025-01-01", now()), None);
        assert_eq!(
            at("2025-07-01T11:59:59Z", "2025-01-01", now()),
            Some(IneligibleReason::Expired)
        );
        // Month precision: valid through the month.
        assert_eq!(at("2025-07", "2025-01", day(31, 23, 0, 0)), None);
        // Valid from the first instant of the start date.
        assert_eq!(at("2025-12-31", "2025-07-01", day(1, 0, 0, 0)), None);
        assert_eq!(
            at("2025-12-31", "2025-07-02", now()),
            Some(IneligibleReason::NotYetValid)
        );
        // No validity period: no bound.
        let mut mr = order();
        mr["dispenseRequest"]
            .as_object_mut()
            .unwrap()
            .remove("validityPeriod");
        assert_eq!(reason(&mr, &[]), None);
    }

    #[test]
    fn acute_courses_need_the_profile_to_allow_them() {
        let mut mr = order();
        mr["courseOfTherapyType"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy", "code": "acute"}]});
        assert_eq!(reason(&mr, &[]), Some(IneligibleReason::AcuteCourse));
        let allowing = RefillsProfile {
            allow_acute: true,
            ..rules()
        };
        assert_eq!(
            eligibility(&mr, Some(&[]), OpenState::None, "p1", &allowing, now()).reason,
            None
        );
    }

    #[test]
    fn refills_left_count_fills_after_the_first() {
        let fills =
            |n: usize| -> Vec<Value> { (0..n).map(|_| dispense("2025-01-10T10:00:00Z")).collect() };
        // 3 repeats: 4 fills in all.
        for (n, left) in [(0, 3), (1, 3), (2, 2), (3, 1)] {
            let e = check(&order(), &fills(n));
            assert_eq!(e.refills_left, Some(left), "{n} fills");
            assert!(e.eligible(), "{n} fills: {e:?}");
        }
        let e = check(&order(), &fills(4));
        assert_eq!((e.refills_used, e.refills_left), (Some(3), Some(0)));
        assert_eq!(e.reason, Some(IneligibleReason::NoRefillsLeft));
        assert_eq!(e.next_eligible, None, "no next date without refills");
        // More fills than allowed never underflow.
        assert_eq!(check(&order(), &fills(9)).refills_left, Some(0));
    }

    #[test]
    fn zero_repeats_means_one_fill_only() {
        let mut mr = order();
        mr["dispenseRequest"]["numberOfRepeatsAllowed"] = json!(0);
        assert_eq!(
            reason(&mr, &[dispense("2025-01-10T10:00:00Z")]),
            Some(IneligibleReason::NoRefillsLeft)
        );
        let e = check(&mr, &[]);
        assert_eq!((e.refills_allowed, e.refills_left), (Some(0), Some(0)));
        assert_eq!(e.reason, Some(IneligibleReason::NoRefillsLeft));
    }

    #[test]
    fn a_prescription_stating_no_repeats_has_no_refills() {
        let mut mr = order();
        mr.as_object_mut().unwrap().remove("dispenseRequest");
        let e = check(&mr, &[]);
        assert_eq!(e.refills_allowed, None);
        assert_eq!(e.reason, Some(IneligibleReason::NoRefillsLeft));
        let mut mr = order();
        mr["dispenseRequest"]
            .as_object_mut()
            .unwrap()
            .remove("numberOfRepeatsAllowed");
        assert_eq!(reason(&mr, &[]), Some(IneligibleReason::NoRefillsLeft));
    }

    #[test]
    fn only_completed_dispenses_of_this_prescription_count() {
        let mut other = dispense("2025-06-30T10:00:00Z");
        other["authorizingPrescription"] = json!([{"reference": "MedicationRequest/mr10"}]);
        let mut cancelled = dispense("2025-06-30T10:00:00Z");
        cancelled["status"] = json!("cancelled");
        let e = check(
            &order(),
            &[dispense("2025-01-10T10:00:00Z"), other, cancelled],
        );
        assert_eq!(e.refills_used, Some(0));
        assert!(e.eligible(), "{e:?}");
    }

    #[test]
    fn too_soon_until_the_fraction_of_the_supply_has_passed() {
        // 0.75 × 30 days = 22.5 days after the last fill: 2025-06-08T12:00Z + 22.5 d =
        // 2025-07-01T00:00Z.
        let e = check(&order(), &[dispense("2025-06-08T12:00:00Z")]);
        assert_eq!(
            e.next_eligible,
            Some(Utc.with_ymd_and_hms(2025, 7, 1, 0, 0, 0).unwrap())
        );
        assert!(e.eligible());
        // Exactly at the boundary: eligible; one second before: too soon.
        let last = "2025-06-09T00:00:01Z";
        let e = check(
            &order(),
            &[dispense("2025-06-08T12:00:00Z"), dispense(last)],
        );
        assert_eq!(e.reason, Some(IneligibleReason::TooSoon));
        assert_eq!(
            e.next_eligible,
            Some(Utc.with_ymd_and_hms(2025, 7, 1, 12, 0, 1).unwrap())
        );
        let boundary = Utc.with_ymd_and_hms(2025, 7, 1, 12, 0, 1).unwrap();
        let at = |t| {
            eligibility(
                &order(),
                Some(&[dispense(last)]),
                OpenState::None,
                "p1",
                &rules(),
                t,
            )
            .reason
        };
        assert_eq!(at(boundary), None);
        assert_eq!(
            at(boundary - TimeDelta::seconds(1)),
            Some(IneligibleReason::TooSoon)
        );
    }

    #[test]
    fn dispense_interval_wins_over_the_supply_fraction() {
        let mut mr = order();
        mr["dispenseRequest"]["dispenseInterval"] = json!({"value": 4, "unit": "weeks"});
        // 10 days ago: 22.5 days would be too soon, so would 4 weeks.
        let recent = dispense("2025-06-21T12:00:00Z");
        assert_eq!(
            reason(&mr, std::slice::from_ref(&recent)),
            Some(IneligibleReason::TooSoon)
        );
        mr["dispenseRequest"]["dispenseInterval"] =
            json!({"value": 1, "code": "wk", "system": "http://unitsofmeasure.org"});
        assert_eq!(reason(&mr, std::slice::from_ref(&recent)), None);
        // An interval in a unit that is not time falls back to the supply fraction.
        mr["dispenseRequest"]["dispenseInterval"] = json!({"value": 1, "unit": "tablets"});
        assert_eq!(reason(&mr, &[recent]), Some(IneligibleReason::TooSoon));
        // Months and years count as 30 and 365 days.
        assert_eq!(
            duration_seconds(&json!({"value": 1, "code": "mo"})),
            Some(30.0 * 86_400.0)
        );
        assert_eq!(
            duration_seconds(&json!({"value": 2, "unit": "Years"})),
            Some(730.0 * 86_400.0)
        );
        assert_eq!(duration_seconds(&json!({"unit": "d"})), None);
    }

    #[test]
    fn without_a_supply_duration_there_is_no_interval() {
        let mut mr = order();
        mr["dispenseRequest"]
            .as_object_mut()
            .unwrap()
            .remove("expectedSupplyDuration");
        let e = check(&mr, &[dispense("2025-06-30T12:00:00Z")]);
        assert!(e.eligible());
        assert_eq!(e.next_eligible, None);
        // Absurd durations are ignored, not overflowed.
        let mut mr = order();
        mr["dispenseRequest"]["expectedSupplyDuration"] = json!({"value": 1e300, "unit": "a"});
        assert!(check(&mr, &[dispense("2025-06-30T12:00:00Z")]).eligible());
    }

    #[test]
    fn an_open_request_blocks_another() {
        let open = OpenRequest {
            id: "t1".into(),
            resource_type: "Task".into(),
            status: "requested".into(),
        };
        let e = eligibility(
            &order(),
            Some(&[]),
            OpenState::Open(&open),
            "p1",
            &rules(),
            now(),
        );
        assert_eq!(e.reason, Some(IneligibleReason::AlreadyRequested));
        // Expiry is the more useful answer when both hold.
        let mut mr = order();
        mr["dispenseRequest"]["validityPeriod"]["end"] = json!("2025-06-01");
        let e = eligibility(
            &mr,
            Some(&[]),
            OpenState::Open(&open),
            "p1",
            &rules(),
            now(),
        );
        assert_eq!(e.reason, Some(IneligibleReason::Expired));
    }

    #[test]
    fn a_history_not_read_whole_decides_nothing_that_rests_on_it() {
        // Dispenses not whole: the counts are unknown and the refill is not offered.
        let e = eligibility(&order(), None, OpenState::None, "p1", &rules(), now());
        assert_eq!(e.reason, Some(IneligibleReason::HistoryUnavailable));
        assert_eq!((e.refills_used, e.refills_left), (None, None));
        assert_eq!((e.last_dispensed, e.next_eligible), (None, None));
        assert_eq!(e.refills_allowed, Some(3), "the prescription's own word");
        // What the prescription alone decides still comes first.
        let mut expired = order();
        expired["dispenseRequest"]["validityPeriod"]["end"] = json!("2025-06-01");
        assert_eq!(
            eligibility(&expired, None, OpenState::Unknown, "p1", &rules(), now()).reason,
            Some(IneligibleReason::Expired)
        );
        // Open requests not whole: a request may be open, so none is offered...
        let old_fill = [dispense("2025-05-01T15:30:00Z")];
        let e = eligibility(
            &order(),
            Some(&old_fill),
            OpenState::Unknown,
            "p1",
            &rules(),
            now(),
        );
        assert_eq!(e.reason, Some(IneligibleReason::HistoryUnavailable));
        assert_eq!(e.refills_left, Some(3), "the dispenses were whole");
        // ...but a whole dispense history with no refills left is certain.
        let fills: Vec<Value> = (0..4).map(|_| dispense("2025-01-10T10:00:00Z")).collect();
        assert_eq!(
            eligibility(
                &order(),
                Some(&fills),
                OpenState::Unknown,
                "p1",
                &rules(),
                now()
            )
            .reason,
            Some(IneligibleReason::NoRefillsLeft)
        );
        assert_eq!(
            IneligibleReason::HistoryUnavailable.message(),
            "the pharmacy history could not be read completely; call the clinic"
        );
    }

    #[test]
    fn an_open_request_search_not_read_whole_knows_no_prescription_is_free() {
        let search = OpenSearch {
            page: None,
            resource_type: "Task",
            path: "focus",
        };
        let (open, _) = search.open_of(&["mr1"]);
        assert_eq!(open, None);
        assert_eq!(OpenState::of(open.as_ref(), "mr1"), OpenState::Unknown);
        let none = HashMap::new();
        assert_eq!(OpenState::of(Some(&none), "mr1"), OpenState::None);
    }

    #[test]
    fn reasons_serialize_as_their_codes() {
        for r in [
            IneligibleReason::NotThePatients,
            IneligibleReason::NotActive,
            IneligibleReason::NotAnOrder,
            IneligibleReason::ReportedMedication,
            IneligibleReason::NotYetValid,
            IneligibleReason::Expired,
            IneligibleReason::AcuteCourse,
            IneligibleReason::NoRefillsLeft,
            IneligibleReason::AlreadyRequested,
            IneligibleReason::TooSoon,
            IneligibleReason::HistoryUnavailable,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), json!(r.code()));
        }
    }

    fn content<'a>(mr: &'a Value, note: Option<&'a str>) -> RefillContent<'a> {
        RefillContent {
            request: mr,
            patient: "p1",
            now: now(),
            note,
            pharmacy: Some("Main St"),
            medication: Some("Lisinopril 10 mg"),
        }
    }

    #[test]
    fn refill_task_follows_the_spec_example() {
        let mr = order();
        let task = content(&mr, Some("running low")).task();
        assert_eq!(task["status"], "requested");
        assert_eq!(task["intent"], "order");
        assert_eq!(task["code"]["coding"][0]["system"], TASK_CODE_SYSTEM);
        assert_eq!(task["code"]["coding"][0]["code"], "fulfill");
        assert_eq!(task["code"]["text"], "Refill Request");
        assert_eq!(task["focus"]["reference"], "MedicationRequest/mr1");
        assert_eq!(task["for"]["reference"], "Patient/p1");
        assert_eq!(task["requester"]["reference"], "Patient/p1");
        assert_eq!(task["owner"]["reference"], "Practitioner/dr1");
        assert_eq!(task["authoredOn"], "2025-07-01T12:00:00Z");
        assert_eq!(task["note"][0]["text"], "running low");
        assert_eq!(task["note"][1]["text"], "Preferred pharmacy: Main St");
        let view = refill_view(
            &json!({"id": "t1", "resourceType": "Task"})
                .as_object()
                .map(|o| {
                    let mut t = task.clone();
                    t.as_object_mut().unwrap().extend(o.clone());
                    t
                })
                .unwrap(),
            None,
        );
        assert_eq!(view.status, RefillRequestStatus::Requested);
        assert_eq!(view.medication_request_id.as_deref(), Some("mr1"));
        assert_eq!(view.note.as_deref(), Some("running low"));
        // A requester that is not a practitioner or organization is not made the owner.
        let mut mr = order();
        mr["requester"] = json!({"reference": "Patient/p1"});
        assert!(content(&mr, None).task().get("owner").is_none());
        assert!(
            content(&mr, None).task()["note"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("Preferred pharmacy")
        );
    }

    #[test]
    fn refill_proposal_and_communication_shapes() {
        let mr = order();
        let proposal = content(&mr, None).proposal();
        assert_eq!(proposal["intent"], "proposal");
        assert_eq!(proposal["status"], "active");
        assert_eq!(
            proposal["priorPrescription"]["reference"],
            "MedicationRequest/mr1"
        );
        assert_eq!(
            proposal["medicationCodeableConcept"],
            mr["medicationCodeableConcept"]
        );
        assert_eq!(proposal["subject"]["reference"], "Patient/p1");
        assert_eq!(proposal["requester"]["reference"], "Patient/p1");
        let message =
            content(&mr, Some("please")).communication(json!({"reference": "Practitioner/dr1"}));
        assert_eq!(message["status"], "in-progress");
        assert_eq!(message["topic"]["text"], REFILL_TOPIC);
        assert_eq!(message["about"][0]["reference"], "MedicationRequest/mr1");
        assert_eq!(message["sender"]["reference"], "Patient/p1");
        assert_eq!(message["recipient"][0]["reference"], "Practitioner/dr1");
        assert_eq!(message["payload"][1]["contentString"], "please");
        let mut stored = message.clone();
        stored["id"] = json!("c1");
        let view = refill_view(&stored, None);
        assert_eq!(view.note.as_deref(), Some("please"));
        assert_eq!(view.medication_request_id.as_deref(), Some("mr1"));
    }

    #[test]
    fn statuses_map_to_one_vocabulary() {
        use RefillRequestStatus as S;
        assert_eq!(normalized_status("Task", Some("received")), S::Requested);
        assert_eq!(normalized_status("Task", Some("accepted")), S::Accepted);
        assert_eq!(normalized_status("Task", Some("rejected")), S::Rejected);
        assert_eq!(normalized_status("Task", Some("completed")), S::Completed);
        assert_eq!(
            normalized_status("MedicationRequest", Some("active")),
            S::Requested
        );
        assert_eq!(
            normalized_status("Communication", Some("not-done")),
            S::Rejected
        );
        assert_eq!(normalized_status("Task", Some("weird")), S::Unknown);
        assert_eq!(normalized_status("Task", None), S::Unknown);
    }

    #[test]
    fn notes_are_trimmed_and_bounded() {
        let ok = RefillInput {
            note: Some("  hello  ".into()),
            pharmacy: Some("   ".into()),
        };
        assert_eq!(ok.checked().unwrap(), (Some("hello".into()), None));
        let long = RefillInput {
            note: Some("é".repeat(MAX_NOTE_CHARS)),
            pharmacy: None,
        };
        assert!(long.checked().is_ok(), "500 characters, not bytes");
        let too_long = RefillInput {
            note: Some("x".repeat(MAX_NOTE_CHARS + 1)),
            pharmacy: None,
        };
        assert!(matches!(
            too_long.checked(),
            Err(PortalError::Invalid {
                code: "text_too_long",
                ..
            })
        ));
        let control = RefillInput {
            note: Some("a\u{0}b".into()),
            pharmacy: None,
        };
        assert!(control.checked().is_err());
    }

    #[test]
    fn a_patient_wide_search_is_narrowed_to_the_listed_prescriptions() {
        let task = |id: &str, focus: &str| {
            json!({"resourceType": "Task", "id": id, "status": "requested",
                   "focus": {"reference": focus}})
        };
        let search = OpenSearch {
            page: Some(Page {
                matches: vec![
                    task("t1", "MedicationRequest/mr1"),
                    task("t2", "MedicationRequest/mr10"),
                    task("t3", "MedicationRequest/mr1"),
                    task("t4", "Observation/mr2"),
                    task("t5", "http://ehr.example/fhir/MedicationRequest/mr2"),
                    // Not a Task: an included resource of an EHR without search.mode.
                    json!({"resourceType": "Communication", "id": "c1", "status": "in-progress",
                           "focus": {"reference": "MedicationRequest/mr3"}}),
                ],
                ..Page::default()
            }),
            resource_type: "Task",
            path: "focus",
        };
        let (open, stale) = search.open_of(&["mr1", "mr2", "mr3"]);
        assert!(!stale);
        let open = open.expect("a whole answer");
        // The first open request of each, by parsed reference (mr10 is not mr1).
        assert_eq!(open["mr1"].id, "t1");
        assert_eq!(open["mr2"].id, "t5");
        assert_eq!(open["mr2"].resource_type, "Task");
        assert_eq!(open.len(), 2);
    }

    #[test]
    fn listing_keeps_current_and_recent_prescriptions() {
        let mut mr = order();
        assert!(listed(&mr, now()));
        mr["status"] = json!("completed");
        mr["authoredOn"] = json!("2025-03-01");
        assert!(listed(&mr, now()));
        mr["authoredOn"] = json!("2024-03-01");
        assert!(!listed(&mr, now()));
        mr["status"] = json!("active");
        mr["intent"] = json!("proposal");
        assert!(
            !listed(&mr, now()),
            "the patient's own proposals are requests"
        );
        mr["intent"] = json!("order");
        mr["status"] = json!("entered-in-error");
        assert!(!listed(&mr, now()));
        let mut mr = order();
        mr.as_object_mut().unwrap().remove("id");
        assert!(!listed(&mr, now()), "nothing to match its fills to");
    }
}
