//! Refill eligibility: whether the acting patient may ask for a refill of a
//! prescription now ([`eligibility`]), a pure function of the MedicationRequest, its
//! dispenses, the open refill request and `now`.
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

use std::collections::HashMap;

use chrono::{DateTime, Months, NaiveDate, TimeDelta, Utc};
use portico_fhir::reference::Reference;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::profile::RefillsProfile;
use crate::view::{array, parse_datetime, str_at};

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

    pub(super) fn request(self) -> Option<&'a OpenRequest> {
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
pub(super) fn duration_seconds(duration: &Value) -> Option<f64> {
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
