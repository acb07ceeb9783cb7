//! Shared resources: the Organization, its Locations, Practitioners with their
//! PractitionerRoles and Schedules, the Medications, and the Slot grid.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::codes::{self, FAMILY_MEDICINE, SPECIALISTS};
use super::{
    LOCATIONS, PractitionerInfo, SLOTS_PER_DAY, STREAM_SHARED, World, concept, days_after, instant,
    reference, reference_display, stream_seed,
};

pub(crate) const ORGANIZATION_ID: &str = "org-1";
pub(crate) const ORGANIZATION_NAME: &str = "Portico Sandbox Health";

/// `(name, street line, type code, type display)` of each Location.
pub(crate) const LOCATION_INFO: [(&str, &str, &str, &str); LOCATIONS] = [
    (
        "Main Street Clinic",
        "100 Main Street",
        "OF",
        "Outpatient facility",
    ),
    (
        "Riverside Family Practice",
        "42 River Road",
        "OF",
        "Outpatient facility",
    ),
    (
        "Portico Sandbox Hospital",
        "1 Hospital Drive",
        "HOSP",
        "Hospital",
    ),
];

pub(crate) fn location_id(index: usize) -> String {
    format!("loc-{}", index + 1)
}

/// The practitioner roster. Two in five are family physicians (the PCPs), the others
/// cycle through the specialties. Schedules are kept at the two clinics.
pub(crate) fn practitioners(seed: u64, count: usize) -> Vec<PractitionerInfo> {
    let mut rng = StdRng::seed_from_u64(stream_seed(seed, STREAM_SHARED, 0));
    let mut specialist_turn = 0;
    (0..count)
        .map(|n| {
            let specialty = if n % 5 == 0 || n % 5 == 2 {
                FAMILY_MEDICINE
            } else {
                specialist_turn += 1;
                SPECIALISTS[(specialist_turn - 1) % SPECIALISTS.len()]
            };
            let female = rng.gen_bool(0.5);
            let given = if female {
                codes::FEMALE_GIVEN[rng.gen_range(0..codes::FEMALE_GIVEN.len())]
            } else {
                codes::MALE_GIVEN[rng.gen_range(0..codes::MALE_GIVEN.len())]
            };
            PractitionerInfo {
                id: format!("prac-{}", n + 1),
                role_id: format!("role-{}", n + 1),
                schedule_id: format!("sched-{}", n + 1),
                given,
                family: codes::FAMILY[rng.gen_range(0..codes::FAMILY.len())],
                gender: if female { "female" } else { "male" },
                specialty,
                location: n % 2,
            }
        })
        .collect()
}

/// Emits every shared resource, Slots last.
pub(crate) fn emit(world: &World, sink: &mut dyn FnMut(Value)) {
    sink(organization());
    for index in 0..LOCATIONS {
        sink(location(index));
    }
    for (n, practitioner) in world.practitioners.iter().enumerate() {
        sink(practitioner_resource(n, practitioner));
        sink(practitioner_role(practitioner));
    }
    for med in codes::CHRONIC_MEDICATIONS
        .iter()
        .chain([&codes::ACUTE_MEDICATION, &codes::ORAL_CONTRACEPTIVE])
    {
        sink(medication(med));
    }
    for practitioner in &world.practitioners {
        sink(schedule(world, practitioner));
    }
    // Slots not booked by a generated patient are busy one time in five (booked by
    // "someone else"), so searches see a realistic mix of free and busy.
    let mut rng = StdRng::seed_from_u64(stream_seed(world.seed, STREAM_SHARED, 1));
    for position in 0..world.booked.len() {
        let busy = world.booked[position] || rng.gen_bool(0.2);
        sink(slot(world, position, busy));
    }
}

pub(crate) fn medication_id(med: &codes::MedicationDef) -> String {
    format!("med-{}", med.rxnorm.code)
}

fn organization() -> Value {
    json!({
        "resourceType": "Organization",
        "id": ORGANIZATION_ID,
        "active": true,
        "type": [concept(codes::ORGANIZATION_TYPE, codes::Code { code: "prov", display: "Healthcare Provider" })],
        "name": ORGANIZATION_NAME,
        "telecom": [
            { "system": "phone", "value": "555-555-0100", "use": "work" },
            { "system": "url", "value": "https://sandbox.portico.example" }
        ],
        "address": [{ "line": ["1 Hospital Drive"], "city": "Springfield", "state": "IL", "postalCode": "62701", "country": "US" }]
    })
}

fn location(index: usize) -> Value {
    let (name, line, type_code, type_display) = LOCATION_INFO[index];
    json!({
        "resourceType": "Location",
        "id": location_id(index),
        "status": "active",
        "name": name,
        "mode": "instance",
        "type": [concept(codes::V3_ROLE_CODE, codes::Code { code: type_code, display: type_display })],
        "telecom": [{ "system": "phone", "value": format!("555-555-01{:02}", 10 + index), "use": "work" }],
        "address": { "line": [line], "city": "Springfield", "state": "IL", "postalCode": "62701", "country": "US" },
        "managingOrganization": reference_display("Organization", ORGANIZATION_ID, ORGANIZATION_NAME)
    })
}

fn practitioner_resource(n: usize, p: &PractitionerInfo) -> Value {
    json!({
        "resourceType": "Practitioner",
        "id": p.id,
        "identifier": [{ "system": codes::NPI, "value": format!("99{:08}", 10_000 + n) }],
        "active": true,
        "name": [{ "use": "official", "family": p.family, "given": [p.given], "prefix": ["Dr."] }],
        "telecom": [{ "system": "phone", "value": format!("555-555-{:04}", 2000 + n % 8000), "use": "work" }],
        "gender": p.gender
    })
}

fn practitioner_role(p: &PractitionerInfo) -> Value {
    let location = location_id(p.location);
    json!({
        "resourceType": "PractitionerRole",
        "id": p.role_id,
        "active": true,
        "practitioner": reference_display("Practitioner", &p.id, &p.display()),
        "organization": reference_display("Organization", ORGANIZATION_ID, ORGANIZATION_NAME),
        "code": [concept(codes::PRACTITIONER_ROLE, codes::Code { code: "doctor", display: "Doctor" })],
        "specialty": [concept(codes::SNOMED, p.specialty.setting)],
        "location": [reference_display("Location", &location, LOCATION_INFO[p.location].0)]
    })
}

fn medication(med: &codes::MedicationDef) -> Value {
    json!({
        "resourceType": "Medication",
        "id": medication_id(med),
        "code": concept(codes::RXNORM, med.rxnorm),
        "status": "active",
        "form": concept(codes::SNOMED, med.form)
    })
}

fn schedule(world: &World, p: &PractitionerInfo) -> Value {
    let location = location_id(p.location);
    json!({
        "resourceType": "Schedule",
        "id": p.schedule_id,
        "active": true,
        "serviceType": [concept(codes::SERVICE_TYPE, p.specialty.service_type)],
        "specialty": [concept(codes::SNOMED, p.specialty.setting)],
        "actor": [
            reference_display("Practitioner", &p.id, &p.display()),
            reference_display("Location", &location, LOCATION_INFO[p.location].0)
        ],
        "planningHorizon": {
            "start": instant(days_after(world.today, 1), 0, 0),
            "end": instant(days_after(world.today, 31), 0, 0)
        },
        "comment": format!("{} appointments, weekdays, {} thirty-minute slots a day", p.specialty.service_type.display, SLOTS_PER_DAY)
    })
}

fn slot(world: &World, position: usize, busy: bool) -> Value {
    let info = world.slot(position);
    let p = &world.practitioners[info.practitioner];
    json!({
        "resourceType": "Slot",
        "id": info.id,
        "serviceType": [concept(codes::SERVICE_TYPE, p.specialty.service_type)],
        "specialty": [concept(codes::SNOMED, p.specialty.setting)],
        "appointmentType": concept(codes::V2_0276, codes::Code { code: "ROUTINE", display: "Routine appointment - default if not valued" }),
        "schedule": reference("Schedule", &p.schedule_id),
        "status": if busy { "busy" } else { "free" },
        "start": info.start,
        "end": info.end
    })
}
