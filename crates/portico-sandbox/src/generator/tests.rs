//! Tests of the synthetic data generator.

use std::collections::{HashMap, HashSet};

use chrono::{Datelike, NaiveDate, Weekday};
use serde_json::Value;

use super::{GeneratorConfig, generate};
use crate::PatientSummary;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).expect("valid date")
}

fn config(seed: u64, patients: usize) -> GeneratorConfig {
    GeneratorConfig {
        seed,
        patients,
        today: today(),
    }
}

fn collect(config: &GeneratorConfig) -> (Vec<Value>, Vec<PatientSummary>) {
    let mut out = Vec::new();
    let generated = generate(config, &mut |r| out.push(r));
    (out, generated.patients)
}

fn rtype(r: &Value) -> &str {
    r["resourceType"].as_str().expect("resourceType")
}

fn rid(r: &Value) -> &str {
    r["id"].as_str().expect("id")
}

fn of_type<'a>(all: &'a [Value], t: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    all.iter().filter(move |r| rtype(r) == t)
}

const SHARED_TYPES: [&str; 7] = [
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "Medication",
    "Schedule",
    "Slot",
];

/// Whether a resource belongs to the families (`fam-teen`, `obs-fam-teen-3`, `rp-…`).
fn family(r: &Value) -> bool {
    rid(r).starts_with("fam-") || rid(r).contains("-fam-") || rtype(r) == "RelatedPerson"
}

/// The patient number of a per-patient resource (`obs-12-3` → 12); `None` for shared
/// and family ones.
fn owner(r: &Value) -> Option<usize> {
    if SHARED_TYPES.contains(&rtype(r)) {
        return None;
    }
    rid(r).split('-').nth(1)?.parse().ok()
}

fn collect_references<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "reference"
                    && let Some(s) = inner.as_str()
                {
                    out.push(s);
                } else {
                    collect_references(inner, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_references(i, out)),
        _ => {}
    }
}

fn parse_day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").expect("date")
}

#[test]
fn same_seed_gives_identical_output_and_another_seed_does_not() {
    let (a, sa) = collect(&config(7, 25));
    let (b, sb) = collect(&config(7, 25));
    assert_eq!(sa, sb);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );

    let (c, sc) = collect(&config(8, 25));
    assert_eq!(
        sa.iter().map(|p| &p.id).collect::<Vec<_>>(),
        sc.iter().map(|p| &p.id).collect::<Vec<_>>()
    );
    assert_ne!(sa, sc, "names or birth dates must change with the seed");
    assert_ne!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&c).unwrap()
    );
}

#[test]
fn a_patient_does_not_depend_on_later_patients() {
    let (small, _) = collect(&config(3, 4));
    let (large, _) = collect(&config(3, 40));
    let pick = |all: &[Value]| -> Vec<String> {
        all.iter()
            .filter(|r| owner(r) == Some(3))
            .map(|r| r.to_string())
            .collect()
    };
    let from_small = pick(&small);
    assert!(from_small.len() > 40);
    assert_eq!(from_small, pick(&large));
}

#[test]
fn ids_are_unique_valid_and_without_meta() {
    let (all, summaries) = collect(&config(1, 30));
    let mut seen = HashSet::new();
    for r in &all {
        let id = rid(r);
        assert!(
            (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
            "bad id {id}"
        );
        assert!(
            seen.insert((rtype(r).to_owned(), id.to_owned())),
            "duplicate {}/{id}",
            rtype(r)
        );
        match r.get("meta") {
            None => {}
            // Only the families' sensitive records carry meta, and only their labels.
            Some(meta) => assert!(
                family(r) && meta.as_object().unwrap().keys().eq(["security"]),
                "{}/{id} has meta",
                rtype(r)
            ),
        }
    }
    let ids: Vec<&str> = summaries.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), 30);
    assert_eq!(ids[0], "pat-1");
    assert_eq!(ids[11], "pat-12");
    // The five family patients come after the ordinary ones.
    assert_eq!(of_type(&all, "Patient").count(), 35);
    // Shared resources come before the first patient.
    let first_patient = all.iter().position(|r| rtype(r) == "Patient").unwrap();
    assert!(
        all[..first_patient]
            .iter()
            .all(|r| SHARED_TYPES.contains(&rtype(r)))
    );
    assert!(
        all[first_patient..]
            .iter()
            .all(|r| !SHARED_TYPES.contains(&rtype(r)))
    );
    assert_eq!(of_type(&all, "Organization").count(), 1);
    assert_eq!(of_type(&all, "Location").count(), 3);
    assert_eq!(of_type(&all, "Practitioner").count(), 10);
    let summary = &summaries[4];
    let patient = of_type(&all, "Patient")
        .find(|p| rid(p) == summary.id)
        .unwrap();
    assert_eq!(patient["birthDate"], summary.birth_date.as_str());
    assert_eq!(
        format!(
            "{} {}",
            patient["name"][0]["given"][0].as_str().unwrap(),
            patient["name"][0]["family"].as_str().unwrap()
        ),
        summary.name
    );
}

#[test]
fn every_reference_resolves() {
    let (all, _) = collect(&config(11, 40));
    let emitted: HashSet<String> = all
        .iter()
        .map(|r| format!("{}/{}", rtype(r), rid(r)))
        .collect();
    let mut count = 0;
    for r in &all {
        let mut refs = Vec::new();
        collect_references(r, &mut refs);
        for reference in refs {
            count += 1;
            assert!(
                emitted.contains(reference),
                "{}/{} points at missing {reference}",
                rtype(r),
                rid(r)
            );
        }
    }
    assert!(count > 5_000, "only {count} references checked");
}

#[test]
fn every_patient_has_refills_left_none_left_and_expired_prescriptions() {
    let (all, summaries) = collect(&config(5, 60));
    let mut dispenses: HashMap<&str, u64> = HashMap::new();
    for d in of_type(&all, "MedicationDispense") {
        assert_eq!(d["status"], "completed");
        assert!(parse_day(d["whenHandedOver"].as_str().unwrap()) <= today());
        let mr = d["authorizingPrescription"][0]["reference"]
            .as_str()
            .unwrap();
        *dispenses
            .entry(mr.trim_start_matches("MedicationRequest/"))
            .or_default() += 1;
    }
    for patient in &summaries {
        let subject = format!("Patient/{}", patient.id);
        let requests: Vec<&Value> = of_type(&all, "MedicationRequest")
            .filter(|m| m["subject"]["reference"] == subject.as_str())
            .collect();
        assert!(
            (3..=4).contains(&requests.len()),
            "{} has {} requests",
            patient.id,
            requests.len()
        );
        let (mut refills_left, mut none_left, mut expired) = (false, false, false);
        for mr in requests {
            let dr = &mr["dispenseRequest"];
            for field in [
                "validityPeriod",
                "numberOfRepeatsAllowed",
                "quantity",
                "expectedSupplyDuration",
            ] {
                assert!(
                    dr.get(field).is_some(),
                    "{} lacks dispenseRequest.{field}",
                    rid(mr)
                );
            }
            assert!(
                mr["medicationReference"]["reference"]
                    .as_str()
                    .unwrap()
                    .starts_with("Medication/")
            );
            let start = parse_day(dr["validityPeriod"]["start"].as_str().unwrap());
            let end = parse_day(dr["validityPeriod"]["end"].as_str().unwrap());
            let repeats = dr["numberOfRepeatsAllowed"].as_u64().unwrap();
            let done = dispenses.get(rid(mr)).copied().unwrap_or(0);
            let valid = start <= today() && today() <= end;
            let active = mr["status"] == "active";
            assert!(done <= repeats + 1, "{} over-dispensed", rid(mr));
            refills_left |= active && valid && done < repeats + 1 && done >= 1;
            none_left |= active && valid && done == repeats + 1;
            expired |= end < today();
        }
        assert!(
            refills_left && none_left && expired,
            "{}: {refills_left} {none_left} {expired}",
            patient.id
        );
    }
}

#[test]
fn booked_appointments_hold_busy_slots_in_the_next_thirty_days() {
    let (all, summaries) = collect(&config(2, 600));
    let slots: HashMap<&str, &Value> = of_type(&all, "Slot").map(|s| (rid(s), s)).collect();
    let mut used = HashSet::new();
    let mut booked_per_patient: HashMap<usize, usize> = HashMap::new();
    for appointment in of_type(&all, "Appointment").filter(|a| a["status"] == "booked") {
        let slot_ref = appointment["slot"][0]["reference"]
            .as_str()
            .unwrap()
            .trim_start_matches("Slot/");
        let slot = slots
            .get(slot_ref)
            .unwrap_or_else(|| panic!("missing slot {slot_ref}"));
        assert_eq!(slot["status"], "busy");
        assert_eq!(slot["start"], appointment["start"]);
        assert_eq!(slot["end"], appointment["end"]);
        assert!(used.insert(slot_ref), "slot {slot_ref} booked twice");
        assert!(parse_day(appointment["start"].as_str().unwrap()) > today());
        if let Some(n) = owner(appointment) {
            *booked_per_patient.entry(n).or_default() += 1;
        } else {
            assert!(family(appointment), "{} has no owner", rid(appointment));
        }
    }
    assert_eq!(booked_per_patient.len(), summaries.len());
    assert!(booked_per_patient.values().all(|n| (1..=2).contains(n)));
    let free = slots.values().filter(|s| s["status"] == "free").count();
    assert!(
        free * 2 > slots.len(),
        "at least half the slots stay free ({free} of {})",
        slots.len()
    );
    for slot in slots.values() {
        let day = parse_day(slot["start"].as_str().unwrap());
        assert!(day > today() && day <= today() + chrono::Days::new(30));
        assert!(!matches!(day.weekday(), Weekday::Sat | Weekday::Sun));
    }
    // 600 patients need more schedules than the base ten practitioners offer.
    assert!(of_type(&all, "Schedule").count() > 10);
    assert_eq!(
        of_type(&all, "Schedule").count(),
        of_type(&all, "Practitioner").count()
    );
}

#[test]
fn per_patient_counts_stay_in_their_ranges() {
    let (all, summaries) = collect(&config(9, 80));
    let mut counts: HashMap<(usize, String), usize> = HashMap::new();
    for r in &all {
        if let Some(n) = owner(r) {
            let kind = match rtype(r) {
                "Appointment" => format!("Appointment.{}", r["status"].as_str().unwrap()),
                "Communication" if r.get("partOf").is_none() => "Communication.header".to_owned(),
                other => other.to_owned(),
            };
            *counts.entry((n, kind)).or_default() += 1;
        }
    }
    let ranges: [(&str, usize, usize); 18] = [
        ("Patient", 1, 1),
        ("AllergyIntolerance", 1, 3),
        ("Condition", 2, 5),
        ("Observation", 10, 30),
        ("DiagnosticReport", 2, 4),
        ("Immunization", 2, 6),
        ("Encounter", 2, 5),
        ("MedicationRequest", 3, 4),
        ("DocumentReference", 1, 2),
        ("Procedure", 1, 3),
        ("CareTeam", 1, 1),
        ("Appointment.fulfilled", 1, 5),
        ("Appointment.booked", 1, 2),
        ("Communication.header", 1, 2),
        ("ServiceRequest", 0, 1),
        ("Account", 1, 1),
        ("Invoice", 1, 2),
        ("Coverage", 1, 1),
    ];
    for patient in 1..=summaries.len() {
        for (kind, low, high) in ranges {
            let n = counts
                .get(&(patient, kind.to_owned()))
                .copied()
                .unwrap_or(0);
            assert!((low..=high).contains(&n), "pat-{patient} has {n} {kind}");
        }
    }
}

#[test]
fn clinical_codes_and_categories_are_plausible() {
    let (all, _) = collect(&config(4, 20));
    let mut categories = HashSet::new();
    // The families' sensitive records are checked in `families::tests`.
    for obs in of_type(&all, "Observation").filter(|r| !family(r)) {
        let category = obs["category"][0]["coding"][0]["code"].as_str().unwrap();
        categories.insert(category);
        assert_eq!(
            obs["category"][0]["coding"][0]["system"],
            "http://terminology.hl7.org/CodeSystem/observation-category"
        );
        assert_eq!(obs["code"]["coding"][0]["system"], "http://loinc.org");
        assert!(obs["code"]["coding"][0]["display"].is_string());
        let code = obs["code"]["coding"][0]["code"].as_str().unwrap();
        if code == "85354-9" {
            let components: Vec<&str> = obs["component"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["code"]["coding"][0]["code"].as_str().unwrap())
                .collect();
            assert_eq!(components, ["8480-6", "8462-4"]);
        } else {
            assert_eq!(obs["valueQuantity"]["system"], "http://unitsofmeasure.org");
        }
        if category == "laboratory" {
            assert!(
                [
                    "2339-0", "4548-4", "2160-0", "2093-3", "718-7", "2951-2", "2823-3", "2571-8",
                    "2085-9", "6690-2", "777-3"
                ]
                .contains(&code)
            );
        }
    }
    assert_eq!(categories, HashSet::from(["laboratory", "vital-signs"]));
    for condition in of_type(&all, "Condition").filter(|r| !family(r)) {
        let systems: Vec<&str> = condition["code"]["coding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["system"].as_str().unwrap())
            .collect();
        assert_eq!(
            systems,
            [
                "http://snomed.info/sct",
                "http://hl7.org/fhir/sid/icd-10-cm"
            ]
        );
        assert_eq!(
            condition["category"][0]["coding"][0]["code"],
            "problem-list-item"
        );
    }
    for encounter in of_type(&all, "Encounter") {
        assert!(["AMB", "EMER", "IMP"].contains(&encounter["class"]["code"].as_str().unwrap()));
    }
    for immunization in of_type(&all, "Immunization") {
        assert_eq!(
            immunization["vaccineCode"]["coding"][0]["system"],
            "http://hl7.org/fhir/sid/cvx"
        );
    }
    for medication in of_type(&all, "Medication") {
        assert_eq!(
            medication["code"]["coding"][0]["system"],
            "http://www.nlm.nih.gov/research/umls/rxnorm"
        );
    }
    for report in of_type(&all, "DiagnosticReport") {
        assert!(!report["result"].as_array().unwrap().is_empty());
    }
    for doc in of_type(&all, "DocumentReference") {
        use base64::Engine as _;
        assert_eq!(doc["category"][0]["coding"][0]["code"], "clinical-note");
        let data = doc["content"][0]["attachment"]["data"].as_str().unwrap();
        let text = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert!(String::from_utf8(text).unwrap().contains("Assessment:"));
    }
    for invoice in of_type(&all, "Invoice") {
        let lines = invoice["lineItem"].as_array().unwrap();
        let sum: f64 = lines
            .iter()
            .map(|l| l["priceComponent"][0]["amount"]["value"].as_f64().unwrap())
            .sum();
        assert!((sum - invoice["totalGross"]["value"].as_f64().unwrap()).abs() < 0.001);
        assert_eq!(invoice["status"], "issued");
    }
}

#[test]
fn message_threads_follow_the_medplum_convention() {
    let (all, _) = collect(&config(6, 30));
    let comms: HashMap<&str, &Value> = of_type(&all, "Communication")
        .map(|c| (rid(c), c))
        .collect();
    let care_teams: HashMap<String, HashSet<&str>> = of_type(&all, "CareTeam")
        .map(|ct| {
            let members = ct["participant"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["member"]["reference"].as_str().unwrap());
            (
                ct["subject"]["reference"].as_str().unwrap().to_owned(),
                members.collect(),
            )
        })
        .collect();
    let mut headers = 0;
    for c in comms.values() {
        let subject = c["subject"]["reference"].as_str().unwrap();
        match c.get("partOf") {
            None => {
                headers += 1;
                assert!(c.get("payload").is_none());
                assert_eq!(c["status"], "in-progress");
                assert!(c["topic"]["text"].is_string());
                assert!(!c["recipient"].as_array().unwrap().is_empty());
            }
            Some(part_of) => {
                let header = part_of[0]["reference"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("Communication/");
                assert!(comms[header].get("partOf").is_none());
                assert!(c["payload"][0]["contentString"].is_string());
                let number: usize = rid(c).rsplit('-').next().unwrap().parse().unwrap();
                if number > 1 {
                    assert_eq!(
                        c["inResponseTo"][0]["reference"],
                        format!("Communication/{header}-{}", number - 1)
                    );
                } else {
                    assert!(c.get("inResponseTo").is_none());
                }
                let sender = c["sender"]["reference"].as_str().unwrap();
                let recipient = c["recipient"][0]["reference"].as_str().unwrap();
                let (clinician, patient) = if sender.starts_with("Patient/") {
                    (recipient, sender)
                } else {
                    (sender, recipient)
                };
                assert_eq!(patient, subject);
                assert!(
                    care_teams[subject].contains(clinician),
                    "{clinician} not in the care team of {subject}"
                );
            }
        }
    }
    assert!(headers >= 30);
}

#[test]
fn streams_many_patients_without_keeping_them() {
    let mut count = 0usize;
    let mut bytes = 0usize;
    let summaries = generate(&config(12, 1_000), &mut |r| {
        count += 1;
        bytes += r.to_string().len();
    })
    .patients;
    assert_eq!(summaries.len(), 1_000);
    assert!(count > 1_000 * 50, "{count} resources");
    assert!(bytes > 0);
}

fn looks_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10 && b[4] == b'-' && b[7] == b'-' && b[..4].iter().all(u8::is_ascii_digit)
}

fn collect_dates<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) if looks_like_date(s) => out.push(s),
        Value::Object(map) => map.values().for_each(|v| collect_dates(v, out)),
        Value::Array(items) => items.iter().for_each(|v| collect_dates(v, out)),
        _ => {}
    }
}

#[test]
fn nothing_predates_birth_and_history_is_not_in_the_future() {
    let (all, summaries) = collect(&config(21, 150));
    let births: HashMap<usize, NaiveDate> = summaries
        .iter()
        .enumerate()
        .map(|(i, p)| (i + 1, parse_day(&p.birth_date)))
        .collect();
    let mut checked = 0;
    for r in &all {
        let Some(n) = owner(r) else { continue };
        let mut dates = Vec::new();
        collect_dates(r, &mut dates);
        for d in dates {
            let day = parse_day(d);
            assert!(
                day >= births[&n],
                "{}/{} has {d} before birth {}",
                rtype(r),
                rid(r),
                births[&n]
            );
            checked += 1;
        }
    }
    assert!(checked > 10_000);
    // Only booked appointments and validity periods reach past today.
    for r in all.iter().filter(|r| owner(r).is_some()) {
        if matches!(rtype(r), "Appointment" | "MedicationRequest") {
            continue;
        }
        let mut dates = Vec::new();
        collect_dates(r, &mut dates);
        assert!(
            dates.iter().all(|d| parse_day(d) <= today()),
            "{}/{} is dated in the future",
            rtype(r),
            rid(r)
        );
    }
}
