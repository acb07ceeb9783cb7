//! Outbound verification of searchset and history Bundles: `verify_bundle`.

use serde_json::{Value, json};

use crate::common::*;

fn entry(resource: Value, mode: &str) -> Value {
    json!({"fullUrl": "https://ehr.example/fhir/X/1", "resource": resource, "search": {"mode": mode}})
}

fn bundle(entries: Vec<Value>, total: Option<usize>, next: bool) -> Value {
    let mut b = json!({"resourceType": "Bundle", "type": "searchset", "entry": entries});
    if let Some(t) = total {
        b["total"] = json!(t);
    }
    if next {
        b["link"] = json!([{"relation": "next", "url": "https://ehr.example/fhir?page=2"}]);
    }
    b
}

fn subjects(b: &Value) -> Vec<String> {
    b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let r = &e["resource"];
            r["subject"]["reference"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    format!(
                        "{}/{}",
                        r["resourceType"].as_str().unwrap(),
                        r["id"].as_str().unwrap_or("")
                    )
                })
        })
        .collect()
}

#[test]
fn foreign_entries_are_removed_and_counted() {
    let p = policy();
    let a = patient_a("patient/Observation.rs patient/Practitioner.rs patient/Patient.rs");
    let mut b = bundle(
        vec![
            entry(observation("Patient/pat-1"), "match"),
            entry(observation("Patient/pat-12"), "match"),
            entry(
                observation("https://evil.example/fhir/Patient/pat-1"),
                "match",
            ),
            entry(observation("Patient/pat-1/_history/2"), "match"),
            entry(
                json!({"resourceType": "Patient", "id": "pat-12"}),
                "include",
            ),
            entry(json!({"resourceType": "Patient", "id": "pat-1"}), "include"),
            entry(
                json!({"resourceType": "Practitioner", "id": "dr-1"}),
                "include",
            ),
            entry(
                json!({"resourceType": "Condition", "id": "c", "subject": reference("Patient/pat-1")}),
                "include",
            ),
            entry(
                json!({"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "informational"}]}),
                "outcome",
            ),
            json!({"fullUrl": "https://ehr.example/fhir/Observation/gone", "request": {"method": "DELETE", "url": "Observation/gone"}}),
            entry(
                json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": observation("Patient/pat-1")}]}),
                "match",
            ),
        ],
        Some(11),
        false,
    );
    let report = p.verify_bundle(&a, &mut b);
    assert_eq!(report.removed, 6, "{b:#}");
    assert_eq!(report.kept, 5);
    assert!(!report.replaced);
    assert_eq!(
        subjects(&b),
        vec![
            "Patient/pat-1",
            "Patient/pat-1/_history/2",
            "Patient/pat-1",
            "Practitioner/dr-1",
            "OperationOutcome/",
        ]
    );
    // Single page: total corrected to the remaining matches.
    assert_eq!(b["total"], 2);
}

#[test]
fn total_is_removed_on_paged_bundles() {
    let p = policy();
    let a = patient_a("patient/Observation.rs");
    let mut b = bundle(
        vec![
            entry(observation("Patient/pat-1"), "match"),
            entry(observation("Patient/pat-12"), "match"),
        ],
        Some(40),
        true,
    );
    let report = p.verify_bundle(&a, &mut b);
    assert_eq!(report.removed, 1);
    assert!(
        b.get("total").is_none(),
        "a corrected total would leak B's count"
    );
    // Nothing removed: total untouched.
    let mut clean = bundle(
        vec![entry(observation("Patient/pat-1"), "match")],
        Some(40),
        true,
    );
    p.verify_bundle(&a, &mut clean);
    assert_eq!(clean["total"], 40);
}

#[test]
fn granular_filters_apply_to_every_entry() {
    let p = policy();
    let a = patient_a("patient/Observation.rs?category=laboratory");
    let mut b = bundle(
        vec![
            entry(lab_observation("Patient/pat-1", "laboratory"), "match"),
            entry(lab_observation("Patient/pat-1", "vital-signs"), "match"),
            entry(lab_observation("Patient/pat-12", "laboratory"), "match"),
        ],
        None,
        false,
    );
    let report = p.verify_bundle(&a, &mut b);
    assert_eq!((report.kept, report.removed), (1, 2));
    assert!(b.get("total").is_none());
}

#[test]
fn history_bundles_are_verified_too() {
    let p = policy();
    let a = patient_a("patient/Observation.rs");
    let mut b = json!({"resourceType": "Bundle", "type": "history", "entry": [
        {"resource": observation("Patient/pat-1"), "request": {"method": "PUT", "url": "Observation/obs-1"}},
        {"resource": observation("Patient/pat-12"), "request": {"method": "PUT", "url": "Observation/obs-1"}},
        {"request": {"method": "DELETE", "url": "Observation/obs-1"}},
    ]});
    let report = p.verify_bundle(&a, &mut b);
    assert_eq!((report.kept, report.removed), (1, 2));
}

#[test]
fn what_is_not_a_bundle_is_replaced() {
    let p = policy();
    let a = patient_a("patient/Observation.rs");
    for mut v in [
        observation("Patient/pat-12"),
        json!({"entry": [{"resource": observation("Patient/pat-12")}]}),
        json!("Bundle"),
        Value::Null,
    ] {
        let report = p.verify_bundle(&a, &mut v);
        assert!(report.replaced);
        assert_eq!(v["resourceType"], "Bundle");
        assert_eq!(v["entry"], json!([]));
    }
    let mut odd = json!({"resourceType": "Bundle", "type": "searchset", "entry": {"resource": observation("Patient/pat-12")}});
    let report = p.verify_bundle(&a, &mut odd);
    assert_eq!(report.removed, 1);
    assert!(odd.get("entry").is_none());
}

#[test]
fn a_principal_without_context_gets_nothing() {
    let p = policy();
    let nobody = principal_from(json!({"scope": "user/*.rs", "fhirUser": "Practitioner/dr-1"}));
    let mut b = bundle(
        vec![entry(observation("Patient/pat-1"), "match")],
        Some(1),
        false,
    );
    let report = p.verify_bundle(&nobody, &mut b);
    assert_eq!((report.kept, report.removed), (0, 1));
    assert_eq!(b["total"], 0);
}

#[test]
fn search_only_scopes_see_matches_but_not_includes_or_history() {
    let p = policy();
    let a = patient_a("patient/Observation.s");
    let mut b = bundle(
        vec![
            entry(observation("Patient/pat-1"), "match"),
            entry(observation("Patient/pat-1"), "include"),
            entry(observation("Patient/pat-12"), "match"),
        ],
        None,
        false,
    );
    let report = p.verify_bundle(&a, &mut b);
    assert_eq!((report.kept, report.removed), (1, 2));
    // A history Bundle is a read: `s` alone shows nothing.
    let mut h = json!({"resourceType": "Bundle", "type": "history", "entry": [
        {"resource": observation("Patient/pat-1"), "request": {"method": "PUT", "url": "Observation/obs-1"}},
    ]});
    assert_eq!(p.verify_bundle(&a, &mut h).kept, 0);
    // And `r` alone does not make search results visible through `s`-less scopes.
    let r_only = patient_a("patient/Observation.r");
    let mut b = bundle(
        vec![entry(observation("Patient/pat-1"), "match")],
        None,
        false,
    );
    assert_eq!(p.verify_bundle(&r_only, &mut b).kept, 0);
}
