//! Proxy rules in the policy: withheld security labels, access levels, and the
//! searches that could reveal withheld records by their effect. Each test names the
//! rule it would catch the removal of.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::delegation::{ACT_CODE, AccessLevel, CONFIDENTIALITY, Label, ProxyGrant};
use crate::principal::ClaimNames;
use crate::{DenialReason, Interaction, Policy, Principal};

const BASE: &str = "https://ehr/fhir";

/// A parent acting for `kid` at `level`, with PSY and R withheld; `own` is their own
/// record.
fn proxy(level: AccessLevel) -> Principal {
    let mut p = Principal::from_claims(
        json!({"sub":"parent","patient":["own","kid"],"fhirUser":"Patient/own",
            "scope":"patient/*.*"})
        .as_object()
        .unwrap(),
        &ClaimNames::default(),
    )
    .unwrap();
    p.proxies = vec![ProxyGrant {
        patient: "kid".into(),
        relationship: "rp-1".into(),
        level,
        withheld: Arc::new(vec![
            Label::new(ACT_CODE, "PSY"),
            Label::new(CONFIDENTIALITY, "R"),
        ]),
    }];
    p
}

fn condition(patient: &str, label: Option<(&str, &str)>) -> Value {
    let mut c = json!({"resourceType":"Condition","id":format!("c-{patient}"),
        "subject":{"reference":format!("Patient/{patient}")}});
    if let Some((system, code)) = label {
        c["meta"] = json!({"security":[{"system":system,"code":code}]});
    }
    c
}

#[test]
fn labelled_records_are_withheld_from_a_proxy_only() {
    // Rule: label withholding.
    let policy = Policy::new(BASE);
    let parent = proxy(AccessLevel::Full);
    let psy = condition("kid", Some((ACT_CODE, "PSY")));
    let restricted = condition("kid", Some((CONFIDENTIALITY, "R")));
    let plain = condition("kid", None);
    let other_label = condition("kid", Some((ACT_CODE, "ETH")));
    let denial = policy.check_read(&parent, &psy).unwrap_err();
    assert_eq!(denial.reason(), DenialReason::NotInCompartment);
    assert!(policy.check_read(&parent, &restricted).is_err());
    assert!(policy.check_read(&parent, &plain).is_ok());
    assert!(policy.check_read(&parent, &other_label).is_ok());
    // The parent's own labelled record is theirs to see.
    let own = condition("own", Some((ACT_CODE, "PSY")));
    assert!(policy.check_read(&parent, &own).is_ok());
    // The patient themselves sees it.
    let kid = Principal {
        subject: "kid".into(),
        patients: vec!["kid".into()],
        fhir_user: None,
        proxies: vec![],
        ..parent.clone()
    };
    assert!(policy.check_read(&kid, &psy).is_ok());
}

#[test]
fn bundles_drop_withheld_entries_and_paged_totals() {
    let policy = Policy::new(BASE);
    let parent = proxy(AccessLevel::Full);
    let entry = |r: Value| json!({"resource": r, "search": {"mode": "match"}});
    let mut single = json!({"resourceType":"Bundle","type":"searchset","total":2,
        "entry":[entry(condition("kid", Some((ACT_CODE, "PSY")))), entry(condition("kid", None))]});
    let report = policy.verify_bundle(&parent, &mut single);
    assert_eq!((report.kept, report.removed), (1, 1));
    assert_eq!(single["total"], 1);
    // A page without withheld entries still loses its total: the other pages may hold
    // some.
    let mut paged = json!({"resourceType":"Bundle","type":"searchset","total":7,
        "link":[{"relation":"next","url":"https://ehr/fhir?page=2"}],
        "entry":[entry(condition("kid", None))]});
    let report = policy.verify_bundle(&parent, &mut paged);
    assert_eq!(report.removed, 0);
    assert!(paged.get("total").is_none(), "{paged}");
}

#[test]
fn searches_that_reveal_withheld_records_are_refused() {
    let policy = Policy::new(BASE);
    let parent = proxy(AccessLevel::Full);
    let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    for refused in [
        params(&[("patient", "kid"), ("_summary", "count")]),
        params(&[("patient", "kid"), ("encounter.type", "x")]),
    ] {
        let denial = policy
            .narrow_search(&parent, "Condition", &refused)
            .unwrap_err();
        assert_eq!(
            denial.reason(),
            DenialReason::ProxyNotPermitted,
            "{refused:?}"
        );
    }
    let denial = policy
        .narrow_search(
            &parent,
            "Patient",
            &params(&[("_has:Condition:patient:code", "x")]),
        )
        .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::ProxyNotPermitted);
    // `_elements` keeps `meta`, so that the labels can be seen on the way out.
    let narrowed = policy
        .narrow_search(
            &parent,
            "Condition",
            &params(&[("patient", "kid"), ("_elements", "code")]),
        )
        .unwrap();
    let elements = narrowed.iter().find(|(k, _)| k == "_elements").unwrap();
    assert!(elements.1.split(',').any(|e| e == "meta"), "{elements:?}");
    // A plain search is fine.
    assert!(
        policy
            .narrow_search(&parent, "Condition", &params(&[("patient", "kid")]))
            .is_ok()
    );
}

#[test]
fn a_read_only_proxy_writes_nothing() {
    // Rule: access level (read-only).
    let policy = Policy::new(BASE);
    let appointment = json!({"resourceType":"Appointment","status":"proposed",
        "participant":[{"actor":{"reference":"Patient/kid"},"status":"accepted"}]});
    let read_only = proxy(AccessLevel::ReadOnly);
    let denial = policy
        .check_write(
            &read_only,
            Interaction::Create,
            "Appointment",
            &appointment,
            None,
        )
        .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::ProxyNotPermitted);
    assert!(
        policy
            .check_proxy_write(&read_only, "kid", "PaymentReconciliation")
            .is_err()
    );
    // ...but for their own record they write as themselves.
    assert!(
        policy
            .check_proxy_write(&read_only, "own", "Appointment")
            .is_ok()
    );
    let full = proxy(AccessLevel::Full);
    assert!(
        policy
            .check_write(
                &full,
                Interaction::Create,
                "Appointment",
                &appointment,
                None
            )
            .is_ok()
    );
}

#[test]
fn a_billing_only_proxy_sees_and_pays_bills_only() {
    // Rule: access level (billing-only).
    let policy = Policy::new(BASE);
    let billing = proxy(AccessLevel::BillingOnly);
    assert!(
        policy
            .check_read(&billing, &condition("kid", None))
            .is_err()
    );
    let account =
        json!({"resourceType":"Account","id":"a","subject":[{"reference":"Patient/kid"}]});
    assert!(policy.check_read(&billing, &account).is_ok());
    let patient = json!({"resourceType":"Patient","id":"kid"});
    assert!(policy.check_read(&billing, &patient).is_ok());
    let denial = policy
        .narrow_search(&billing, "Observation", &[("patient".into(), "kid".into())])
        .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::ProxyNotPermitted);
    assert!(
        policy
            .narrow_search(&billing, "Account", &[("patient".into(), "kid".into())])
            .is_ok()
    );
    assert!(
        policy
            .check_proxy_write(&billing, "kid", "PaymentReconciliation")
            .is_ok()
    );
    assert!(
        policy
            .check_proxy_write(&billing, "kid", "Appointment")
            .is_err()
    );
}

#[test]
fn a_record_shared_with_a_patient_the_proxy_may_not_read_is_withheld() {
    // Rule: access level (billing-only), on a record that is also the login's own: an
    // appointment of the parent and the child together. Through the parent's own
    // compartment alone it would be shown; the child's part of it is clinical.
    let policy = Policy::new(BASE);
    let billing = proxy(AccessLevel::BillingOnly);
    let together = json!({"resourceType":"Appointment","id":"a","status":"booked",
        "participant":[
            {"actor":{"reference":"Patient/own"},"status":"accepted"},
            {"actor":{"reference":"Patient/kid"},"status":"accepted"}]});
    assert!(policy.check_read(&billing, &together).is_err());
    let own_only = json!({"resourceType":"Appointment","id":"b","status":"booked",
        "participant":[{"actor":{"reference":"Patient/own"},"status":"accepted"}]});
    assert!(policy.check_read(&billing, &own_only).is_ok());
    // A full proxy sees their joint appointment.
    assert!(
        policy
            .check_read(&proxy(AccessLevel::Full), &together)
            .is_ok()
    );
}
