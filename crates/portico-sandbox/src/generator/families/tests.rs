//! Tests of the generated families.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use serde_json::Value;

use super::super::{GeneratorConfig, full_years, generate};
use super::{
    ACCESS_LEVEL_URL, CONFIDENTIALITY_SYSTEM, Families, PERSON_SYSTEM, SENSITIVITY_SYSTEM,
};

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 1).expect("valid date")
}

fn run(seed: u64, patients: usize, today: NaiveDate) -> (Vec<Value>, Families) {
    let mut out = Vec::new();
    let generated = generate(
        &GeneratorConfig {
            seed,
            patients,
            today,
        },
        &mut |r| out.push(r),
    );
    (out, generated.families)
}

fn key(r: &Value) -> (String, String) {
    (
        r["resourceType"].as_str().unwrap().to_owned(),
        r["id"].as_str().unwrap().to_owned(),
    )
}

fn index(all: &[Value]) -> HashMap<(String, String), &Value> {
    all.iter().map(|r| (key(r), r)).collect()
}

fn labels(r: &Value) -> Vec<(String, String)> {
    r["meta"]["security"]
        .as_array()
        .map(|codings| {
            codings
                .iter()
                .map(|c| {
                    (
                        c["system"].as_str().unwrap().to_owned(),
                        c["code"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn sensitivity(code: &str) -> (String, String) {
    (SENSITIVITY_SYSTEM.to_owned(), code.to_owned())
}

fn restricted() -> (String, String) {
    (CONFIDENTIALITY_SYSTEM.to_owned(), "R".to_owned())
}

/// The `Patient/<id>` a per-patient resource belongs to.
fn owner(r: &Value) -> Option<String> {
    if r["resourceType"] == "Patient" {
        return r["id"].as_str().map(str::to_owned);
    }
    ["subject", "patient", "beneficiary"]
        .iter()
        .find_map(|field| {
            let value = &r[*field];
            let value = if value.is_array() { &value[0] } else { value };
            value["reference"].as_str()
        })
        .or_else(|| r["participant"][0]["actor"]["reference"].as_str())
        .and_then(|s| s.strip_prefix("Patient/"))
        .map(str::to_owned)
}

#[test]
fn families_are_deterministic_and_keep_their_ids_under_another_seed() {
    let (a, fa) = run(3, 4, today());
    let (b, fb) = run(3, 4, today());
    assert_eq!(fa, fb);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    // Another seed or patient count changes the ordinary parts of their records, not
    // who the families are.
    let (_, other) = run(4, 0, today());
    assert_eq!(fa, other);
    assert_eq!(
        [
            &fa.child,
            &fa.teen,
            &fa.adult_child,
            &fa.elder,
            &fa.daughter
        ],
        [
            "fam-child",
            "fam-teen",
            "fam-adult-child",
            "fam-elder",
            "fam-daughter"
        ]
    );
}

#[test]
fn ages_are_exact_relative_to_today() {
    // Today on a leap day and on an ordinary one.
    for today in [
        today(),
        NaiveDate::from_ymd_opt(2028, 2, 29).unwrap(),
        NaiveDate::from_ymd_opt(2025, 12, 31).unwrap(),
    ] {
        let (all, f) = run(1, 1, today);
        let all = index(&all);
        let expected = [
            (&f.child, 8),
            (&f.teen, 15),
            (&f.adult_child, 19),
            (&f.elder, 78),
            (&f.daughter, 45),
        ];
        assert_eq!(f.patients.len(), 5);
        for ((id, age), summary) in expected.iter().zip(&f.patients) {
            assert_eq!(&&summary.id, id);
            let birth = NaiveDate::parse_from_str(&summary.birth_date, "%Y-%m-%d").unwrap();
            assert_eq!(full_years(birth, today), *age, "{id} on {today}");
            let patient = all[&("Patient".to_owned(), (*id).clone())];
            assert_eq!(patient["birthDate"], summary.birth_date.as_str());
        }
        // The adult child's parental relationship started at birth, so it predates
        // their 18th birthday.
        let rp = f
            .relationships
            .iter()
            .find(|r| r.patient == f.adult_child)
            .unwrap();
        assert_eq!(rp.start, f.patients[2].birth_date);
        assert_eq!(rp.end, None);
    }
}

#[test]
fn sensitive_records_carry_their_labels_and_belong_to_their_patient() {
    let (all, f) = run(5, 3, today());
    let by_key = index(&all);
    let sex_r = vec![sensitivity("SEX"), restricted()];
    type Labels = Vec<(String, String)>;
    let expected: Vec<(&String, &Labels, Vec<Labels>)> = vec![
        (&f.child, &f.child_sensitive, vec![vec![sensitivity("PSY")]]),
        (
            &f.teen,
            &f.teen_sensitive,
            vec![
                sex_r.clone(),
                sex_r,
                vec![sensitivity("STD")],
                vec![sensitivity("SEX")],
                vec![sensitivity("SEX")],
            ],
        ),
        (
            &f.elder,
            &f.elder_sensitive,
            vec![
                vec![sensitivity("ETH"), restricted()],
                vec![sensitivity("ETH")],
            ],
        ),
        (
            &f.daughter,
            &f.daughter_sensitive,
            vec![vec![sensitivity("HIV")]],
        ),
    ];
    let mut labelled = HashSet::new();
    for (patient, ids, wanted) in expected {
        assert_eq!(ids.len(), wanted.len(), "{patient}");
        for (id, wanted) in ids.iter().zip(wanted) {
            let r = by_key[id];
            assert_eq!(labels(r), wanted, "{id:?}");
            assert_eq!(owner(r).as_deref(), Some(patient.as_str()), "{id:?}");
            labelled.insert(id.clone());
        }
    }
    // Nothing else is labelled.
    for r in &all {
        assert_eq!(
            r.get("meta").is_some(),
            labelled.contains(&key(r)),
            "{:?}",
            key(r)
        );
    }

    let types = |ids: &[(String, String)]| ids.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>();
    assert_eq!(
        types(&f.teen_sensitive),
        [
            "Encounter",
            "Condition",
            "Observation",
            "MedicationRequest",
            "MedicationDispense"
        ]
    );
    let teen = |n: usize| by_key[&f.teen_sensitive[n]];
    let encounter = format!("Encounter/{}", f.teen_sensitive[0].1);
    assert_eq!(teen(1)["encounter"]["reference"], encounter.as_str());
    assert_eq!(teen(2)["category"][0]["coding"][0]["code"], "laboratory");
    assert_eq!(teen(2)["encounter"]["reference"], encounter.as_str());
    let request = teen(3);
    assert_eq!(request["status"], "active");
    assert!(
        request["dispenseRequest"]["numberOfRepeatsAllowed"]
            .as_u64()
            .unwrap()
            > 1
    );
    let medication = request["medicationReference"]["reference"]
        .as_str()
        .unwrap();
    let medication = medication.strip_prefix("Medication/").unwrap();
    assert!(by_key.contains_key(&("Medication".to_owned(), medication.to_owned())));
    assert_eq!(
        teen(4)["authorizingPrescription"][0]["reference"],
        format!("MedicationRequest/{}", f.teen_sensitive[3].1).as_str()
    );
    assert_eq!(types(&f.child_sensitive), ["Condition"]);
    assert_eq!(types(&f.elder_sensitive), ["Condition", "Observation"]);
    let score = by_key[&f.elder_sensitive[1]];
    assert_eq!(score["category"][0]["coding"][0]["code"], "survey");
    assert_eq!(types(&f.daughter_sensitive), ["Observation"]);
    let load = by_key[&f.daughter_sensitive[0]];
    assert_eq!(load["category"][0]["coding"][0]["code"], "laboratory");
}

#[test]
fn related_persons_follow_the_contract() {
    let (all, f) = run(2, 2, today());
    let by_key = index(&all);
    let today = today();
    let date = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
    let wanted = [
        (
            "rp-parent-child",
            "proxy-rivera-parent",
            &f.child,
            "MTH",
            None,
        ),
        (
            "rp-parent-teen",
            "proxy-rivera-parent",
            &f.teen,
            "MTH",
            None,
        ),
        (
            "rp-parent-adult-child",
            "proxy-rivera-parent",
            &f.adult_child,
            "MTH",
            None,
        ),
        (
            "rp-grandparent-child",
            "proxy-rivera-grandparent",
            &f.child,
            "GRMTH",
            Some("read-only"),
        ),
        (
            "rp-daughter-elder",
            "proxy-hughes-daughter",
            &f.elder,
            "DAU",
            Some("full"),
        ),
        (
            "rp-spouse-elder",
            "proxy-hughes-spouse",
            &f.elder,
            "SPS",
            Some("billing-only"),
        ),
        (
            "rp-former-caregiver-elder",
            "proxy-former-caregiver",
            &f.elder,
            "FRND",
            None,
        ),
    ];
    assert_eq!(f.relationships.len(), wanted.len());
    assert_eq!(
        all.iter()
            .filter(|r| r["resourceType"] == "RelatedPerson")
            .count(),
        wanted.len()
    );
    for ((id, login, patient, code, level), info) in wanted.iter().zip(&f.relationships) {
        assert_eq!(
            (
                info.id.as_str(),
                info.login.as_str(),
                &info.patient,
                info.code.as_str()
            ),
            (*id, *login, *patient, *code)
        );
        assert_eq!(info.access_level.as_deref(), *level);
        let rp = by_key[&("RelatedPerson".to_owned(), id.to_string())];
        assert_eq!(rp["active"], true);
        assert_eq!(rp["identifier"][0]["system"], PERSON_SYSTEM);
        assert_eq!(rp["identifier"][0]["value"], *login);
        assert_eq!(
            rp["patient"]["reference"],
            format!("Patient/{patient}").as_str()
        );
        assert_eq!(
            rp["relationship"][0]["coding"][0]["system"],
            "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
        );
        assert_eq!(rp["relationship"][0]["coding"][0]["code"], *code);
        assert!(rp["name"][0]["given"][0].is_string() && rp["name"][0]["family"].is_string());
        assert_eq!(rp["period"]["start"], info.start.as_str());
        assert_eq!(rp["period"]["end"].as_str(), info.end.as_deref());
        match level {
            Some(level) => {
                assert_eq!(rp["extension"][0]["url"], ACCESS_LEVEL_URL);
                assert_eq!(rp["extension"][0]["valueCode"], *level);
            }
            None => assert!(rp.get("extension").is_none()),
        }
    }
    // Parents from the child's birth; the daughter from about two years ago; the
    // former caregiver from three years ago to about a year ago.
    let birth = |id: &str| {
        f.patients
            .iter()
            .find(|p| p.id == id)
            .unwrap()
            .birth_date
            .clone()
    };
    assert_eq!(f.relationships[0].start, birth(&f.child));
    assert_eq!(f.relationships[1].start, birth(&f.teen));
    assert_eq!(f.relationships[4].start, date(today.with_year_offset(-2)));
    let former = &f.relationships[6];
    assert_eq!(former.start, date(today.with_year_offset(-3)));
    let end = NaiveDate::parse_from_str(former.end.as_deref().unwrap(), "%Y-%m-%d").unwrap();
    assert!(end < today && (today - end).num_days() > 300 && (today - end).num_days() < 420);

    // The daughter is a patient whose record links to her RelatedPerson.
    let daughter = by_key[&("Patient".to_owned(), f.daughter.clone())];
    assert_eq!(
        daughter["link"],
        serde_json::json!([{"other": {"reference": "RelatedPerson/rp-daughter-elder"}, "type": "seealso"}])
    );
    for p in [&f.child, &f.teen, &f.adult_child, &f.elder] {
        assert!(
            by_key[&("Patient".to_owned(), p.clone())]
                .get("link")
                .is_none()
        );
    }
}

trait YearOffset {
    fn with_year_offset(self, years: i32) -> NaiveDate;
}

impl YearOffset for NaiveDate {
    fn with_year_offset(self, years: i32) -> NaiveDate {
        self.checked_sub_months(chrono::Months::new((-years) as u32 * 12))
            .unwrap()
    }
}

#[test]
fn logins_name_their_patients_and_fhir_user() {
    let (_, f) = run(2, 0, today());
    let l = &f.logins;
    let check = |login: &super::ProxyLogin, id: &str, fhir_user: &str, patients: &[&String]| {
        assert_eq!(login.id, id);
        assert_eq!(login.fhir_user, fhir_user);
        assert_eq!(login.patients.iter().collect::<Vec<_>>(), patients);
        assert!(!login.name.is_empty());
    };
    check(
        &l.parent,
        "proxy-rivera-parent",
        "RelatedPerson/rp-parent-child",
        &[&f.child, &f.teen, &f.adult_child],
    );
    check(
        &l.grandparent,
        "proxy-rivera-grandparent",
        "RelatedPerson/rp-grandparent-child",
        &[&f.child],
    );
    check(
        &l.daughter,
        "proxy-hughes-daughter",
        "Patient/fam-daughter",
        &[&f.daughter, &f.elder],
    );
    check(
        &l.spouse,
        "proxy-hughes-spouse",
        "RelatedPerson/rp-spouse-elder",
        &[&f.elder],
    );
    check(
        &l.former_caregiver,
        "proxy-former-caregiver",
        "RelatedPerson/rp-former-caregiver-elder",
        &[&f.elder],
    );
    assert_eq!(l.find("proxy-hughes-spouse"), Some(&l.spouse));
    assert_eq!(l.find("fam-daughter"), None);
    // Every relationship's login is one of the logins, and lists its patient.
    for r in &f.relationships {
        let login = l.find(&r.login).unwrap();
        assert!(login.patients.contains(&r.patient));
    }
}

#[test]
fn family_patients_have_what_the_portal_shows_and_nothing_predates_birth() {
    let (all, f) = run(8, 2, today());
    let births: HashMap<&str, &str> = f
        .patients
        .iter()
        .map(|p| (p.id.as_str(), p.birth_date.as_str()))
        .collect();
    let mut kinds: HashMap<(String, String), usize> = HashMap::new();
    for r in &all {
        let Some(owner) = owner(r) else { continue };
        let Some(birth) = births.get(owner.as_str()) else {
            continue;
        };
        let kind = match r["resourceType"].as_str().unwrap() {
            "Appointment" => format!("Appointment.{}", r["status"].as_str().unwrap()),
            other => other.to_owned(),
        };
        *kinds.entry((owner.clone(), kind)).or_default() += 1;
        if r["resourceType"] == "RelatedPerson" {
            continue;
        }
        let text = r.to_string();
        for (at, _) in text.match_indices("\"20") {
            let candidate = &text[at + 1..];
            if candidate.len() >= 10 && candidate.as_bytes()[4] == b'-' {
                assert!(
                    &candidate[..10] >= *birth,
                    "{:?} of {owner} has {} before birth {birth}",
                    key(r),
                    &candidate[..10]
                );
            }
        }
    }
    for p in &f.patients {
        for kind in [
            "Patient",
            "Appointment.booked",
            "MedicationRequest",
            "Communication",
            "Invoice",
            "Account",
            "Condition",
            "Observation",
        ] {
            assert!(
                kinds
                    .get(&(p.id.clone(), kind.to_owned()))
                    .copied()
                    .unwrap_or(0)
                    >= 1,
                "{} has no {kind}",
                p.id
            );
        }
    }
    // The elder has a bill with a balance due (what the spouse's billing-only access
    // is for).
    let account = all
        .iter()
        .find(|r| r["resourceType"] == "Account" && owner(r).as_deref() == Some(&f.elder))
        .unwrap();
    assert!(
        account["extension"][0]["valueMoney"]["value"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(all.iter().any(|r| r["resourceType"] == "Invoice"
        && r["status"] == "issued"
        && owner(r).as_deref() == Some(&f.elder)));
}
