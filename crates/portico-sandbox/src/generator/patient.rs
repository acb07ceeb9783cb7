//! One patient's record.
//!
//! The record is planned first (demographics, conditions, visits, lab panels,
//! prescriptions) and then emitted, so resources can reference each other by id.
//! All randomness comes from the patient's own RNG stream.

mod admin;
mod plan;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::NaiveDate;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::codes::{
    self, ACTIVE_CLINICAL, ACUTE, CONFIRMED, CONTINUOUS, Code, ConditionDef, LabDef, MedicationDef,
    PanelDef, RESOLVED_CLINICAL,
};
use super::shared::{
    LOCATION_INFO, ORGANIZATION_ID, ORGANIZATION_NAME, location_id, medication_id,
};
use super::{
    HOSPITAL_LOCATION, STREAM_PATIENT, World, coding, concept, date, days_after, days_before,
    full_years, instant, money, quantity, reference, reference_display, round, stream_seed,
};
use crate::PatientSummary;

/// Emits patient `index` (1-based) and returns its summary. Its upcoming appointments
/// take the booking ordinals `booked_ordinal .. booked_ordinal + upcoming`.
pub(crate) fn emit(
    world: &World,
    index: usize,
    booked_ordinal: usize,
    upcoming: usize,
    sink: &mut dyn FnMut(Value),
) -> PatientSummary {
    let mut rng = StdRng::seed_from_u64(stream_seed(world.seed, STREAM_PATIENT, index as u64));
    let plan = Plan::new(world, index, None, &mut rng);
    write(world, &plan, &mut rng, booked_ordinal, upcoming, sink);
    plan.summary()
}

/// Who a patient is when the caller decides it instead of the RNG (the family members
/// of [`super::families`]).
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// The Patient id. The patient's other resources carry it as their id infix
    /// (`cond-fam-teen-1`), so they never collide with an ordinary patient's.
    pub(crate) id: &'static str,
    /// Numbers the MRN, phone, subscriber id and address, as the index does for an
    /// ordinary patient; chosen outside the ordinary patients' range.
    pub(crate) number: usize,
    pub(crate) given: &'static str,
    pub(crate) family: &'static str,
    pub(crate) female: bool,
    pub(crate) birth_date: NaiveDate,
    /// `Patient.link` targets of type `seealso` (`RelatedPerson/<id>`).
    pub(crate) links: Vec<String>,
}

/// What the caller of [`emit_identified`] needs to add to the record.
#[derive(Debug, Clone)]
pub(crate) struct Emitted {
    pub(crate) summary: PatientSummary,
    /// The patient's primary care physician (an index into `World::practitioners`).
    pub(crate) pcp: usize,
}

/// Emits the ordinary record of a patient with a forced identity, drawing everything
/// else from `rng`. Its upcoming appointments take the booking ordinals
/// `booked_ordinal .. booked_ordinal + upcoming`.
pub(crate) fn emit_identified(
    world: &World,
    identity: &Identity,
    rng: &mut StdRng,
    booked_ordinal: usize,
    upcoming: usize,
    sink: &mut dyn FnMut(Value),
) -> Emitted {
    let plan = Plan::new(world, identity.number, Some(identity), rng);
    write(world, &plan, rng, booked_ordinal, upcoming, sink);
    Emitted {
        summary: plan.summary(),
        pcp: plan.pcp,
    }
}

fn write(
    world: &World,
    plan: &Plan,
    rng: &mut StdRng,
    booked_ordinal: usize,
    upcoming: usize,
    sink: &mut dyn FnMut(Value),
) {
    let mut out = Writer {
        world,
        plan,
        rng,
        sink,
        obs_counter: 0,
        appt_counter: 0,
    };
    out.write_all(booked_ordinal, upcoming);
}

/// A past visit, emitted as an Encounter (and, when ambulatory, a fulfilled Appointment).
struct Visit {
    id: String,
    class: Code,
    kind: Code,
    day: NaiveDate,
    start: String,
    end: String,
    practitioner: usize,
    location: usize,
    appointment: Option<String>,
}

/// A condition chosen for the patient.
struct ConditionPlan {
    id: String,
    def: ConditionDef,
    onset: NaiveDate,
}

/// A lab panel drawn at a visit.
struct PanelPlan {
    panel: PanelDef,
    visit: usize,
}

/// A prescription and its dispensing history.
struct Prescription {
    med: MedicationDef,
    status: &'static str,
    course: Code,
    authored: NaiveDate,
    validity_days: u64,
    repeats: u32,
    dispenses: u32,
}

struct Plan {
    /// The id infix of the patient's resources: the index, or the forced Patient id.
    key: String,
    /// See [`Identity::number`].
    number: usize,
    id: String,
    links: Vec<String>,
    given: &'static str,
    family: &'static str,
    gender: &'static str,
    birth_date: NaiveDate,
    age: u32,
    height_cm: f64,
    weight_kg: f64,
    pcp: usize,
    specialists: Vec<usize>,
    conditions: Vec<ConditionPlan>,
    visits: Vec<Visit>,
    panels: Vec<PanelPlan>,
    /// Number of vital-sign observations per visit.
    vitals_per_visit: Vec<usize>,
    prescriptions: Vec<Prescription>,
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.gen_range(0..items.len())]
}

fn pick_ref<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

/// Vital signs in the order a visit records them.
const VITAL_KINDS: usize = 7;

struct Writer<'a> {
    world: &'a World,
    plan: &'a Plan,
    rng: &'a mut StdRng,
    sink: &'a mut dyn FnMut(Value),
    obs_counter: usize,
    appt_counter: usize,
}

impl Writer<'_> {
    fn patient_ref(&self) -> Value {
        reference("Patient", &self.plan.id)
    }

    fn practitioner_ref(&self, n: usize) -> Value {
        let p = &self.world.practitioners[n];
        reference_display("Practitioner", &p.id, &p.display())
    }

    fn location_ref(&self, n: usize) -> Value {
        reference_display("Location", &location_id(n), LOCATION_INFO[n].0)
    }

    fn organization_ref(&self) -> Value {
        reference_display("Organization", ORGANIZATION_ID, ORGANIZATION_NAME)
    }

    fn emit(&mut self, resource: Value) {
        (self.sink)(resource);
    }

    fn write_all(&mut self, booked_ordinal: usize, upcoming: usize) {
        self.write_patient();
        self.write_coverage();
        self.write_conditions();
        self.write_allergies();
        self.write_visits();
        self.write_vitals();
        self.write_labs();
        self.write_immunizations();
        self.write_procedures();
        self.write_prescriptions();
        self.write_documents();
        self.write_care_team();
        self.write_cancelled_appointment();
        self.write_upcoming(booked_ordinal, upcoming);
        self.write_threads();
        self.write_referral();
        self.write_billing();
    }

    fn write_patient(&mut self) {
        let plan = self.plan;
        let n = plan.number;
        let (city, state, zip) = codes::CITIES[n % codes::CITIES.len()];
        let street = pick(self.rng, &codes::STREETS);
        let house = self.rng.gen_range(1..2000);
        let phone = format!("555-555-{:04}", (n * 7919) % 10_000);
        let email = format!(
            "{}.{}{}@example.com",
            plan.given.to_lowercase(),
            plan.family.to_lowercase(),
            n
        );
        let mut resource = json!({
            "resourceType": "Patient",
            "id": plan.id,
            "identifier": [{
                "use": "usual",
                "type": concept(codes::V2_0203, Code { code: "MR", display: "Medical record number" }),
                "system": codes::MRN_SYSTEM,
                "value": format!("{}", 20_000_000 + n)
            }],
            "active": true,
            "name": [{ "use": "official", "family": plan.family, "given": [plan.given] }],
            "telecom": [
                { "system": "phone", "value": phone, "use": "mobile" },
                { "system": "email", "value": email, "use": "home" }
            ],
            "gender": plan.gender,
            "birthDate": date(plan.birth_date),
            "address": [{
                "use": "home",
                "line": [format!("{house} {street}")],
                "city": city,
                "state": state,
                "postalCode": format!("{zip}{:02}", n % 100),
                "country": "US"
            }],
            "communication": [{
                "language": { "coding": [{ "system": "urn:ietf:bcp:47", "code": "en-US", "display": "English (United States)" }] },
                "preferred": true
            }],
            "generalPractitioner": [self.practitioner_ref(plan.pcp)],
            "managingOrganization": self.organization_ref()
        });
        if !plan.links.is_empty() {
            let links: Vec<Value> = plan
                .links
                .iter()
                .map(|other| json!({ "other": { "reference": other }, "type": "seealso" }))
                .collect();
            resource["link"] = Value::Array(links);
        }
        self.emit(resource);
    }

    fn write_coverage(&mut self) {
        let plan = self.plan;
        let lived_days = u64::from(plan.age) * 365;
        let start = days_before(
            self.world.today,
            self.rng.gen_range(200..2000u64.min(lived_days)),
        );
        let resource = json!({
            "resourceType": "Coverage",
            "id": format!("cov-{}", plan.key),
            "status": "active",
            "type": concept(codes::V3_ACT_CODE, Code { code: "HIP", display: "health insurance plan policy" }),
            "subscriber": self.patient_ref(),
            "subscriberId": format!("SBX{:09}", 100_000_000 + plan.number),
            "beneficiary": self.patient_ref(),
            "relationship": concept(codes::SUBSCRIBER_RELATIONSHIP, Code { code: "self", display: "Self" }),
            "period": { "start": date(start) },
            "payor": [{ "display": "Sandbox Health Plan" }],
            "class": [{
                "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan" }] },
                "value": "SBX-PPO",
                "name": "Sandbox PPO"
            }]
        });
        self.emit(resource);
    }

    fn write_conditions(&mut self) {
        let plan = self.plan;
        for condition in &plan.conditions {
            let mut resource = json!({
                "resourceType": "Condition",
                "id": condition.id,
                "clinicalStatus": { "coding": [coding(codes::CONDITION_CLINICAL, if condition.def.chronic { ACTIVE_CLINICAL } else { RESOLVED_CLINICAL })] },
                "verificationStatus": { "coding": [coding(codes::CONDITION_VERIFICATION, CONFIRMED)] },
                "category": [concept(codes::CONDITION_CATEGORY, Code { code: "problem-list-item", display: "Problem List Item" })],
                "code": {
                    "coding": [coding(codes::SNOMED, condition.def.snomed), coding(codes::ICD10, condition.def.icd10)],
                    "text": condition.def.snomed.display
                },
                "subject": self.patient_ref(),
                "onsetDateTime": date(condition.onset),
                "recordedDate": date(condition.onset),
                "recorder": self.practitioner_ref(plan.pcp),
                "asserter": self.practitioner_ref(plan.pcp)
            });
            if !condition.def.chronic {
                resource["abatementDateTime"] =
                    json!(date(days_after(condition.onset, self.rng.gen_range(7..21))));
            }
            self.emit(resource);
        }
    }

    fn write_allergies(&mut self) {
        let plan = self.plan;
        let count = self.rng.gen_range(1..=3);
        let chosen: Vec<codes::AllergyDef> = codes::ALLERGIES
            .choose_multiple(self.rng, count)
            .copied()
            .collect();
        for (k, allergy) in chosen.iter().enumerate() {
            let recorded = days_before(
                self.world.today,
                self.rng.gen_range(60..3000).min(u64::from(plan.age) * 365),
            );
            let resource = json!({
                "resourceType": "AllergyIntolerance",
                "id": format!("alg-{}-{}", plan.key, k + 1),
                "clinicalStatus": { "coding": [coding(codes::ALLERGY_CLINICAL, ACTIVE_CLINICAL)] },
                "verificationStatus": { "coding": [coding(codes::ALLERGY_VERIFICATION, CONFIRMED)] },
                "type": "allergy",
                "category": [allergy.category],
                "criticality": allergy.criticality,
                "code": concept(codes::SNOMED, allergy.code),
                "patient": self.patient_ref(),
                "recordedDate": date(recorded),
                "recorder": self.practitioner_ref(plan.pcp),
                "reaction": [{
                    "manifestation": [concept(codes::SNOMED, allergy.reaction)],
                    "severity": if allergy.criticality == "high" { "severe" } else { "mild" }
                }]
            });
            self.emit(resource);
        }
    }

    fn write_visits(&mut self) {
        let plan = self.plan;
        let chronic: Vec<&ConditionPlan> =
            plan.conditions.iter().filter(|c| c.def.chronic).collect();
        for visit in &plan.visits {
            let mut encounter = json!({
                "resourceType": "Encounter",
                "id": visit.id,
                "status": "finished",
                "class": { "system": codes::V3_ACT_CODE, "code": visit.class.code, "display": visit.class.display },
                "type": [concept(codes::SNOMED, visit.kind)],
                "subject": self.patient_ref(),
                "participant": [{
                    "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PPRF", "display": "primary performer" }] }],
                    "individual": self.practitioner_ref(visit.practitioner)
                }],
                "period": { "start": visit.start, "end": visit.end },
                "location": [{ "location": self.location_ref(visit.location) }],
                "serviceProvider": self.organization_ref()
            });
            if let Some(condition) = chronic.choose(self.rng) {
                encounter["reasonReference"] = json!([reference_display(
                    "Condition",
                    &condition.id,
                    condition.def.snomed.display
                )]);
            }
            if let Some(appointment) = &visit.appointment {
                encounter["appointment"] = json!([reference("Appointment", appointment)]);
            }
            self.emit(encounter);
            if let Some(appointment) = &visit.appointment {
                self.appt_counter += 1;
                let p = &self.world.practitioners[visit.practitioner];
                let resource = json!({
                    "resourceType": "Appointment",
                    "id": appointment,
                    "status": "fulfilled",
                    "serviceType": [concept(codes::SERVICE_TYPE, p.specialty.service_type)],
                    "specialty": [concept(codes::SNOMED, p.specialty.setting)],
                    "appointmentType": concept(codes::V2_0276, Code { code: "FOLLOWUP", display: "A follow up visit from a previous appointment" }),
                    "description": visit.kind.display,
                    "start": visit.start,
                    "end": visit.end,
                    "minutesDuration": 30,
                    "created": date(days_before(visit.day, self.rng.gen_range(3..40))),
                    "participant": [
                        { "actor": self.patient_ref(), "required": "required", "status": "accepted" },
                        { "actor": self.practitioner_ref(visit.practitioner), "required": "required", "status": "accepted" },
                        { "actor": self.location_ref(visit.location), "required": "required", "status": "accepted" }
                    ]
                });
                self.emit(resource);
            }
        }
    }

    fn next_observation_id(&mut self) -> String {
        self.obs_counter += 1;
        format!("obs-{}-{}", self.plan.key, self.obs_counter)
    }

    fn vital(&mut self, visit: &Visit, code: Code, value: Option<(f64, &str)>) -> Value {
        let id = self.next_observation_id();
        let mut resource = json!({
            "resourceType": "Observation",
            "id": id,
            "status": "final",
            "category": [concept(codes::OBSERVATION_CATEGORY, Code { code: "vital-signs", display: "Vital Signs" })],
            "code": concept(codes::LOINC, code),
            "subject": self.patient_ref(),
            "encounter": reference("Encounter", &visit.id),
            "effectiveDateTime": visit.start,
            "issued": visit.start,
            "performer": [self.practitioner_ref(visit.practitioner)]
        });
        if let Some((value, unit)) = value {
            resource["valueQuantity"] = quantity(value, unit);
        }
        resource
    }

    fn write_vitals(&mut self) {
        let plan = self.plan;
        let hypertensive = plan.has_condition(codes::HYPERTENSION);
        for (k, visit) in plan.visits.iter().enumerate() {
            let emergency = visit.class.code != codes::AMBULATORY.code;
            let weight = round(plan.weight_kg + self.rng.gen_range(-2.0..2.0), 1);
            for kind in 0..plan.vitals_per_visit[k] {
                let resource = match kind {
                    0 => {
                        let (sys, dia) = if hypertensive {
                            (self.rng.gen_range(132..168), self.rng.gen_range(82..102))
                        } else {
                            (self.rng.gen_range(104..134), self.rng.gen_range(62..84))
                        };
                        let mut bp = self.vital(visit, codes::BP_PANEL, None);
                        bp["component"] = json!([
                            { "code": concept(codes::LOINC, codes::SYSTOLIC), "valueQuantity": quantity(f64::from(sys), "mm[Hg]") },
                            { "code": concept(codes::LOINC, codes::DIASTOLIC), "valueQuantity": quantity(f64::from(dia), "mm[Hg]") }
                        ]);
                        bp
                    }
                    1 => {
                        let rate = if emergency {
                            self.rng.gen_range(78..118)
                        } else {
                            self.rng.gen_range(56..96)
                        };
                        self.vital(visit, codes::HEART_RATE, Some((f64::from(rate), "/min")))
                    }
                    2 => self.vital(visit, codes::BODY_WEIGHT, Some((weight, "kg"))),
                    3 => self.vital(
                        visit,
                        codes::BODY_HEIGHT,
                        Some((round(plan.height_cm, 1), "cm")),
                    ),
                    4 => {
                        let meters = plan.height_cm / 100.0;
                        self.vital(
                            visit,
                            codes::BMI,
                            Some((round(weight / (meters * meters), 1), "kg/m2")),
                        )
                    }
                    5 => {
                        let temp = if emergency {
                            self.rng.gen_range(36.6..38.8)
                        } else {
                            self.rng.gen_range(36.3..37.3)
                        };
                        self.vital(
                            visit,
                            codes::BODY_TEMPERATURE,
                            Some((round(temp, 1), "Cel")),
                        )
                    }
                    _ => {
                        let rate = self.rng.gen_range(12..21);
                        self.vital(
                            visit,
                            codes::RESPIRATORY_RATE,
                            Some((f64::from(rate), "/min")),
                        )
                    }
                };
                self.emit(resource);
            }
        }
    }

    fn lab_value(&mut self, lab: &LabDef) -> f64 {
        let plan = self.plan;
        let (low, high) = match lab.code.code {
            "2339-0" if plan.has_condition(codes::DIABETES) => (118.0, 225.0),
            "4548-4" if plan.has_condition(codes::DIABETES) => (6.4, 9.6),
            "2160-0" if plan.has_condition(codes::CKD) => (1.4, 2.7),
            "2093-3" if plan.has_condition(codes::HYPERLIPIDEMIA) => (215.0, 295.0),
            "2571-8" if plan.has_condition(codes::HYPERLIPIDEMIA) => (150.0, 320.0),
            _ => lab.normal,
        };
        round(self.rng.gen_range(low..high), lab.decimals)
    }

    fn write_labs(&mut self) {
        let plan = self.plan;
        for (k, panel) in plan.panels.iter().enumerate() {
            let visit = &plan.visits[panel.visit];
            let effective = instant(visit.day, 8, 30);
            let issued = instant(visit.day, 16, 0);
            let mut results = Vec::with_capacity(panel.panel.members.len());
            for lab in panel.panel.members {
                let id = self.next_observation_id();
                let value = self.lab_value(lab);
                let (flag, flag_display) = match (lab.low, lab.high) {
                    (Some(low), _) if value < low => ("L", "Low"),
                    (_, Some(high)) if value > high => ("H", "High"),
                    _ => ("N", "Normal"),
                };
                let mut range = json!({});
                if let Some(low) = lab.low {
                    range["low"] = quantity(low, lab.unit);
                }
                if let Some(high) = lab.high {
                    range["high"] = quantity(high, lab.unit);
                }
                let resource = json!({
                    "resourceType": "Observation",
                    "id": id,
                    "status": "final",
                    "category": [concept(codes::OBSERVATION_CATEGORY, Code { code: "laboratory", display: "Laboratory" })],
                    "code": concept(codes::LOINC, lab.code),
                    "subject": self.patient_ref(),
                    "encounter": reference("Encounter", &visit.id),
                    "effectiveDateTime": effective,
                    "issued": issued,
                    "performer": [self.organization_ref()],
                    "valueQuantity": quantity(value, lab.unit),
                    "interpretation": [concept(codes::V3_INTERPRETATION, Code { code: flag, display: flag_display })],
                    "referenceRange": [range]
                });
                results.push(reference_display("Observation", &id, lab.code.display));
                self.emit(resource);
            }
            let report = json!({
                "resourceType": "DiagnosticReport",
                "id": format!("dr-{}-{}", plan.key, k + 1),
                "status": "final",
                "category": [concept(codes::V2_0074, Code { code: "LAB", display: "Laboratory" })],
                "code": concept(codes::LOINC, panel.panel.code),
                "subject": self.patient_ref(),
                "encounter": reference("Encounter", &visit.id),
                "effectiveDateTime": effective,
                "issued": issued,
                "performer": [self.organization_ref()],
                "resultsInterpreter": [self.practitioner_ref(visit.practitioner)],
                "result": results
            });
            self.emit(report);
        }
    }

    fn write_immunizations(&mut self) {
        let plan = self.plan;
        let count = self.rng.gen_range(2..=6);
        let chosen: Vec<Code> = codes::VACCINES
            .choose_multiple(self.rng, count)
            .copied()
            .collect();
        let max_days = (u64::from(plan.age) * 365).clamp(60, 1825);
        for (k, vaccine) in chosen.iter().enumerate() {
            let day = days_before(self.world.today, self.rng.gen_range(14..max_days));
            let location = plan.visits.first().map(|v| v.location).unwrap_or(0);
            let resource = json!({
                "resourceType": "Immunization",
                "id": format!("imm-{}-{}", plan.key, k + 1),
                "status": "completed",
                "vaccineCode": concept(codes::CVX, *vaccine),
                "patient": self.patient_ref(),
                "occurrenceDateTime": instant(day, self.rng.gen_range(9..17), 0),
                "recorded": date(day),
                "primarySource": true,
                "location": self.location_ref(location),
                "lotNumber": format!("LOT{:06}", self.rng.gen_range(0..1_000_000)),
                "route": concept("http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration", Code { code: "IM", display: "Injection, intramuscular" }),
                "doseQuantity": quantity(0.5, "mL"),
                "performer": [{ "actor": self.practitioner_ref(plan.pcp) }]
            });
            self.emit(resource);
        }
    }

    fn write_procedures(&mut self) {
        let plan = self.plan;
        let count = self.rng.gen_range(1..=3);
        let chosen: Vec<Code> = codes::PROCEDURES
            .choose_multiple(self.rng, count)
            .copied()
            .collect();
        for (k, procedure) in chosen.iter().enumerate() {
            let visit = &plan.visits[self.rng.gen_range(0..plan.visits.len())];
            let resource = json!({
                "resourceType": "Procedure",
                "id": format!("proc-{}-{}", plan.key, k + 1),
                "status": "completed",
                "code": concept(codes::SNOMED, *procedure),
                "subject": self.patient_ref(),
                "encounter": reference("Encounter", &visit.id),
                "performedPeriod": { "start": visit.start, "end": visit.end },
                "performer": [{ "actor": self.practitioner_ref(visit.practitioner) }],
                "location": self.location_ref(visit.location)
            });
            self.emit(resource);
        }
    }

    fn write_prescriptions(&mut self) {
        let plan = self.plan;
        let today = self.world.today;
        let mut dispense_counter = 0;
        for (k, rx) in plan.prescriptions.iter().enumerate() {
            let mr_id = format!("mr-{}-{}", plan.key, k + 1);
            let med_id = medication_id(&rx.med);
            let validity_end = days_after(rx.authored, rx.validity_days);
            let supply = quantity(f64::from(rx.med.supply_days), "d");
            let mut supply_duration = supply.clone();
            supply_duration["unit"] = json!("days");
            let amount = json!({ "value": rx.med.quantity, "unit": rx.med.unit, "system": codes::UCUM, "code": rx.med.ucum });
            let resource = json!({
                "resourceType": "MedicationRequest",
                "id": mr_id,
                "status": rx.status,
                "intent": "order",
                "category": [concept(codes::MEDREQ_CATEGORY, Code { code: "community", display: "Community" })],
                "medicationReference": reference_display("Medication", &med_id, rx.med.rxnorm.display),
                "subject": self.patient_ref(),
                "authoredOn": date(rx.authored),
                "requester": self.practitioner_ref(plan.pcp),
                "courseOfTherapyType": concept(codes::COURSE_OF_THERAPY, rx.course),
                "dosageInstruction": [{ "text": rx.med.sig }],
                "dispenseRequest": {
                    "validityPeriod": { "start": date(rx.authored), "end": date(validity_end) },
                    "numberOfRepeatsAllowed": rx.repeats,
                    "quantity": amount,
                    "expectedSupplyDuration": supply_duration
                }
            });
            self.emit(resource);
            for fill in 0..rx.dispenses {
                dispense_counter += 1;
                let day = days_after(
                    rx.authored,
                    u64::from(fill) * u64::from(rx.med.supply_days) + self.rng.gen_range(0..=2),
                )
                .min(today);
                let (type_code, type_display) = if fill == 0 {
                    ("FF", "First Fill")
                } else {
                    ("RF", "Refill")
                };
                let resource = json!({
                    "resourceType": "MedicationDispense",
                    "id": format!("md-{}-{dispense_counter}", plan.key),
                    "status": "completed",
                    "medicationReference": reference_display("Medication", &med_id, rx.med.rxnorm.display),
                    "subject": self.patient_ref(),
                    "performer": [{ "actor": self.organization_ref() }],
                    "authorizingPrescription": [reference("MedicationRequest", &mr_id)],
                    "type": concept(codes::V3_ACT_CODE, Code { code: type_code, display: type_display }),
                    "quantity": amount,
                    "daysSupply": supply,
                    "whenPrepared": instant(day, 10, 0),
                    "whenHandedOver": instant(day, 15, 30),
                    "dosageInstruction": [{ "text": rx.med.sig }]
                });
                self.emit(resource);
            }
        }
    }

    fn write_documents(&mut self) {
        let plan = self.plan;
        let count = self.rng.gen_range(1..=2).min(plan.visits.len());
        let problems: Vec<&str> = plan
            .conditions
            .iter()
            .filter(|c| c.def.chronic)
            .map(|c| c.def.snomed.display)
            .collect();
        let assessment = if problems.is_empty() {
            "No chronic problems.".to_owned()
        } else {
            format!("{}.", problems.join(", "))
        };
        for k in 0..count {
            let visit = &plan.visits[plan.visits.len() - 1 - k];
            let specialist = !self.world.practitioners[visit.practitioner].is_family_medicine();
            let doc_type = match visit.class.code {
                "IMP" => codes::DISCHARGE_SUMMARY,
                "EMER" => codes::HISTORY_AND_PHYSICAL,
                _ if specialist => codes::CONSULT_NOTE,
                _ => codes::PROGRESS_NOTE,
            };
            let text = format!(
                "{}\nDate: {}\nEncounter: {}\nAssessment: {}\nPlan: Continue current medications. Follow up in {} months or sooner if symptoms change.\n",
                doc_type.display,
                date(visit.day),
                visit.kind.display,
                assessment,
                self.rng.gen_range(1..=6),
            );
            let resource = json!({
                "resourceType": "DocumentReference",
                "id": format!("doc-{}-{}", plan.key, k + 1),
                "status": "current",
                "docStatus": "final",
                "type": concept(codes::LOINC, doc_type),
                "category": [concept(codes::DOCREF_CATEGORY, Code { code: "clinical-note", display: "Clinical Note" })],
                "subject": self.patient_ref(),
                "date": visit.end,
                "author": [self.practitioner_ref(visit.practitioner)],
                "custodian": self.organization_ref(),
                "description": doc_type.display,
                "content": [{
                    "attachment": {
                        "contentType": "text/plain",
                        "language": "en-US",
                        "data": STANDARD.encode(text.as_bytes()),
                        "title": format!("{} {}", doc_type.display, date(visit.day)),
                        "creation": visit.end
                    },
                    "format": { "system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode", "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient", "display": "mimeType Sufficient" }
                }],
                "context": {
                    "encounter": [reference("Encounter", &visit.id)],
                    "period": { "start": visit.start, "end": visit.end }
                }
            });
            self.emit(resource);
        }
    }
}

/// A stable UUID-shaped string for business identifiers.
fn uuid_like(seed: u64, index: usize) -> String {
    let a = stream_seed(seed, 9, index as u64);
    let b = stream_seed(seed, 10, index as u64);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}
