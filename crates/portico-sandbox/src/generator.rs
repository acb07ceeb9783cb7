//! Deterministic synthetic patient data for the sandbox EHR.
//!
//! [`generate`] streams FHIR R4 resources (as JSON, with `id` set and no `meta` beyond
//! security labels) into a sink: first the shared ones (Organization, Locations,
//! Practitioners and their PractitionerRoles, Medications, Schedules, Slots), then each
//! patient's record in turn, then the families ([`Families`]: patients with proxies and
//! security-labelled records). Nothing but the returned summaries is kept, so 100k
//! patients (a few million resources) need no more memory than the sink uses.
//!
//! Invariants:
//! - The same seed, patient count and `today` give byte-identical output. Each patient
//!   draws from its own RNG stream derived from `(seed, index)`, so a patient's record
//!   does not depend on the patients after it (as long as the practitioner roster, which
//!   only grows past a few hundred patients, stays the same). The families come last
//!   and change nothing before them but the status of the few Slots they book.
//! - Nothing in a patient's history predates their birth.
//! - Dates are relative to `today`: history lies in the past, Slots and booked
//!   Appointments in the next 30 days, so "upcoming" stays upcoming. Family members'
//!   ages are exact relative to `today`.
//! - Ids are readable and unique: `pat-1` … `pat-N` (deliberately prefix-colliding:
//!   `pat-1` vs `pat-12`), `obs-<n>-<k>`, `slot-<schedule>-<yyyymmdd>-<hhmm>`, ...;
//!   family members are `fam-<role>` and their resources `obs-fam-<role>-<k>`, ...
//! - Every emitted `Type/id` reference points at an emitted resource.
//! - Every booked Appointment points at a Slot that is `busy`; no Slot is booked twice.
//!   The number of Practitioners (and so Schedules) grows with the patient count only
//!   as far as needed to keep booked Slots under a third of all Slots.
//! - Every patient has a MedicationRequest with refills left, one with none left and
//!   one whose validity period has ended, with matching completed MedicationDispenses.
//! - Only the families' sensitive records carry `meta`, and then only `meta.security`.

mod codes;
mod families;
mod patient;
mod shared;
#[cfg(test)]
mod tests;

use chrono::{Datelike, Days, Months, NaiveDate, Weekday};
use serde_json::{Value, json};

use crate::PatientSummary;
use codes::{Code, Specialty};
pub use families::{
    ACCESS_LEVEL_URL, CONFIDENTIALITY_SYSTEM, Families, FamilyLogins, PERSON_SYSTEM, ProxyLogin,
    RelationshipInfo, SENSITIVITY_SYSTEM,
};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub patients: usize,
    /// The day the data is generated for: history ends here, Slots start the day after.
    pub today: NaiveDate,
}

/// What [`generate`] made, besides the resources it emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The ordinary patients `pat-1` … `pat-N`, in id order.
    pub patients: Vec<PatientSummary>,
    /// The families, their sensitive records and proxy logins.
    pub families: Families,
}

/// Emits every resource into `sink`: the shared ones, the ordinary patients, then the
/// families ([`families`]).
///
/// Generation is single-threaded on purpose: handing millions of small JSON values
/// from worker threads to the sink's thread measured slower (allocator contention
/// when they are freed) than building them where they are consumed.
pub fn generate(config: &GeneratorConfig, sink: &mut dyn FnMut(Value)) -> Generated {
    let world = World::plan(config);
    shared::emit(&world, sink);
    let mut patients = Vec::with_capacity(config.patients);
    let mut booked_ordinal = 0;
    for index in 1..=config.patients {
        let upcoming = upcoming_count(config.seed, index);
        patients.push(patient::emit(&world, index, booked_ordinal, upcoming, sink));
        booked_ordinal += upcoming;
    }
    let families = families::emit(&world, booked_ordinal, sink);
    Generated { patients, families }
}

/// Slots per weekday per schedule, 30 minutes each from 09:00Z.
const SLOTS_PER_DAY: usize = 8;
const SLOT_MINUTES: u32 = 30;
const FIRST_SLOT_HOUR: u32 = 9;
const BASE_PRACTITIONERS: usize = 10;
const LOCATIONS: usize = 3;
/// The location used for emergency and inpatient encounters.
const HOSPITAL_LOCATION: usize = 2;

/// SplitMix64: turns structured inputs into well-spread 64-bit values.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A seed for one independent stream (`stream`, `index`) of the generator.
fn stream_seed(seed: u64, stream: u64, index: u64) -> u64 {
    mix(mix(seed ^ mix(stream)) ^ index)
}

const STREAM_SHARED: u64 = 1;
const STREAM_PATIENT: u64 = 2;
const STREAM_UPCOMING: u64 = 3;
const STREAM_FAMILY: u64 = 4;

/// How many upcoming booked appointments patient `index` has (1 or 2), decided
/// without running the patient's generator so that Slots can be planned first.
fn upcoming_count(seed: u64, index: usize) -> usize {
    1 + (stream_seed(seed, STREAM_UPCOMING, index as u64) % 2) as usize
}

/// A shared practitioner.
#[derive(Debug, Clone)]
pub(crate) struct PractitionerInfo {
    pub(crate) id: String,
    pub(crate) role_id: String,
    pub(crate) schedule_id: String,
    pub(crate) given: &'static str,
    pub(crate) family: &'static str,
    pub(crate) gender: &'static str,
    pub(crate) specialty: Specialty,
    pub(crate) location: usize,
}

impl PractitionerInfo {
    pub(crate) fn display(&self) -> String {
        format!("Dr. {} {}", self.given, self.family)
    }

    pub(crate) fn is_family_medicine(&self) -> bool {
        self.specialty.setting.code == codes::FAMILY_MEDICINE.setting.code
    }
}

/// One Slot of the shared schedule grid.
#[derive(Debug, Clone)]
pub(crate) struct SlotInfo {
    pub(crate) id: String,
    pub(crate) practitioner: usize,
    pub(crate) start: String,
    pub(crate) end: String,
}

/// Everything shared between patients: practitioners, the slot grid and its bookings.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) seed: u64,
    pub(crate) today: NaiveDate,
    pub(crate) practitioners: Vec<PractitionerInfo>,
    pub(crate) family_medicine: Vec<usize>,
    pub(crate) specialists: Vec<usize>,
    /// Weekdays from tomorrow through `today + 30`.
    pub(crate) slot_days: Vec<NaiveDate>,
    /// Which grid positions hold a booked appointment.
    pub(crate) booked: Vec<bool>,
    stride: usize,
    offset: usize,
}

impl World {
    fn plan(config: &GeneratorConfig) -> World {
        let slot_days: Vec<NaiveDate> = (1..=30)
            .filter_map(|d| config.today.checked_add_days(Days::new(d)))
            .filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
            .collect();
        let per_schedule = (slot_days.len() * SLOTS_PER_DAY).max(1);
        let ordinary_booked: usize = (1..=config.patients)
            .map(|i| upcoming_count(config.seed, i))
            .sum();
        // Keep bookings under a third of all slots so that most slots stay free. The
        // families' few bookings are left out of this sum so that adding them never
        // changes the roster, and with it the ordinary patients' records.
        let needed = (3 * ordinary_booked).div_ceil(per_schedule);
        let total_booked = ordinary_booked + families::BOOKED;
        let practitioner_count = BASE_PRACTITIONERS.max(needed);
        let practitioners = shared::practitioners(config.seed, practitioner_count);
        let family_medicine = (0..practitioners.len())
            .filter(|&i| practitioners[i].is_family_medicine())
            .collect();
        let specialists = (0..practitioners.len())
            .filter(|&i| !practitioners[i].is_family_medicine())
            .collect();
        let total = practitioner_count * per_schedule;
        // Booking ordinal j sits at (j * stride + offset) mod total: a bijection when
        // stride and total are coprime, which spreads bookings over days and schedules.
        let mut stride = (total as f64 * 0.618_034) as usize + 1;
        while gcd(stride, total) != 1 {
            stride += 1;
        }
        let offset = (stream_seed(config.seed, STREAM_SHARED, u64::MAX) % total as u64) as usize;
        let mut world = World {
            seed: config.seed,
            today: config.today,
            practitioners,
            family_medicine,
            specialists,
            slot_days,
            booked: vec![false; total],
            stride,
            offset,
        };
        for ordinal in 0..total_booked {
            let position = world.booked_position(ordinal);
            world.booked[position] = true;
        }
        world
    }

    fn per_schedule(&self) -> usize {
        self.slot_days.len() * SLOTS_PER_DAY
    }

    /// The grid position of the `ordinal`-th booked appointment overall.
    pub(crate) fn booked_position(&self, ordinal: usize) -> usize {
        let total = self.booked.len();
        ((ordinal % total) * self.stride % total + self.offset) % total
    }

    /// The Slot at a grid position.
    pub(crate) fn slot(&self, position: usize) -> SlotInfo {
        let per_schedule = self.per_schedule();
        let practitioner = position / per_schedule;
        let within = position % per_schedule;
        let day = self.slot_days[within / SLOTS_PER_DAY];
        let minutes = FIRST_SLOT_HOUR * 60 + (within % SLOTS_PER_DAY) as u32 * SLOT_MINUTES;
        let (hour, minute) = (minutes / 60, minutes % 60);
        let end_minutes = minutes + SLOT_MINUTES;
        SlotInfo {
            id: format!(
                "slot-{}-{}-{hour:02}{minute:02}",
                practitioner + 1,
                day.format("%Y%m%d")
            ),
            practitioner,
            start: instant(day, hour, minute),
            end: instant(day, end_minutes / 60, end_minutes % 60),
        }
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `YYYY-MM-DD`.
pub(crate) fn date(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// `YYYY-MM-DDTHH:MM:00Z`.
pub(crate) fn instant(day: NaiveDate, hour: u32, minute: u32) -> String {
    format!("{}T{hour:02}:{minute:02}:00Z", day.format("%Y-%m-%d"))
}

pub(crate) fn days_before(day: NaiveDate, days: u64) -> NaiveDate {
    day.checked_sub_days(Days::new(days)).unwrap_or(day)
}

/// The same day `years` years earlier (the 28th for a 29 February without a match).
pub(crate) fn years_before(day: NaiveDate, years: u32) -> NaiveDate {
    day.checked_sub_months(Months::new(years * 12))
        .unwrap_or(day)
}

/// Completed years from `birth` to `today` (an age).
pub(crate) fn full_years(birth: NaiveDate, today: NaiveDate) -> u32 {
    today.years_since(birth).unwrap_or(0)
}

pub(crate) fn days_after(day: NaiveDate, days: u64) -> NaiveDate {
    day.checked_add_days(Days::new(days)).unwrap_or(day)
}

pub(crate) fn reference(resource_type: &str, id: &str) -> Value {
    json!({ "reference": format!("{resource_type}/{id}") })
}

pub(crate) fn reference_display(resource_type: &str, id: &str, display: &str) -> Value {
    json!({ "reference": format!("{resource_type}/{id}"), "display": display })
}

pub(crate) fn coding(system: &str, code: Code) -> Value {
    json!({ "system": system, "code": code.code, "display": code.display })
}

pub(crate) fn concept(system: &str, code: Code) -> Value {
    json!({ "coding": [coding(system, code)], "text": code.display })
}

pub(crate) fn quantity(value: f64, unit: &str) -> Value {
    json!({ "value": value, "unit": unit, "system": codes::UCUM, "code": unit })
}

pub(crate) fn money(cents: u64) -> Value {
    json!({ "value": cents as f64 / 100.0, "currency": "USD" })
}

/// Rounds to `decimals` places.
pub(crate) fn round(value: f64, decimals: u32) -> f64 {
    let factor = 10f64.powi(decimals as i32);
    (value * factor).round() / factor
}
