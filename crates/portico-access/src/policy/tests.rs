//! Internal policy tests: type classes and grants. The adversarial suite is in
//! `tests/isolation`.

use serde_json::json;

use super::*;
use crate::principal::ClaimNames;

fn principal(claims: Value) -> Principal {
    Principal::from_claims(claims.as_object().unwrap(), &ClaimNames::default()).unwrap()
}

#[test]
fn classes() {
    let p = Policy::new("https://ehr/fhir/").with_link(ExtraLink::task_for());
    assert!(matches!(p.classify("Patient"), Class::Patient));
    assert!(matches!(
        p.classify("Observation"),
        Class::Compartment { standard: true, .. }
    ));
    assert!(matches!(
        p.classify("Task"),
        Class::Compartment {
            standard: false,
            ..
        }
    ));
    match p.classify("Schedule") {
        Class::ReferenceData { links } => assert_eq!(links[0].param, "actor"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        p.classify("Practitioner"),
        Class::ReferenceData { .. }
    ));
    assert!(matches!(p.classify("Device"), Class::Other));
    // In the R4 compartment, but security records: never served to patients.
    assert!(matches!(p.classify("AuditEvent"), Class::Other));
    assert!(matches!(
        Policy::new("https://ehr/fhir")
            .with_link(ExtraLink {
                resource_type: "AuditEvent".into(),
                param: "x".into(),
                paths: vec!["x".into()],
            })
            .classify("AuditEvent"),
        Class::Other
    ));
    assert!(matches!(p.classify("Nope"), Class::Other));
    assert!(matches!(
        Policy::new("https://ehr/fhir").classify("Task"),
        Class::Other
    ));
}

#[test]
fn audit_events_about_the_patient_are_not_theirs_to_read() {
    let p = Policy::new("https://ehr/fhir");
    let patient = principal(json!({"sub": "u1", "patient": "pat-1", "scope": "patient/*.rs"}));
    let event = json!({
        "resourceType": "AuditEvent",
        "agent": [{"who": {"reference": "Patient/pat-1"}, "requestor": true}],
        "entity": [{"what": {"reference": "Patient/pat-1"}}],
    });
    let denial = p.check_read(&patient, &event).unwrap_err();
    assert_eq!(denial.reason(), DenialReason::TypeNotAccessible);
    let denial = p.narrow_search(&patient, "AuditEvent", &[]).unwrap_err();
    assert_eq!(denial.reason(), DenialReason::TypeNotAccessible);
}

#[test]
fn extra_links_cannot_reclassify_patient_or_reference_data() {
    let p = Policy::new("https://ehr/fhir")
        .with_link(ExtraLink {
            resource_type: "Practitioner".into(),
            param: "x".into(),
            paths: vec!["x".into()],
        })
        .with_link(ExtraLink {
            resource_type: "Patient".into(),
            param: "x".into(),
            paths: vec!["x".into()],
        })
        .with_link(ExtraLink {
            resource_type: "NotAType".into(),
            param: "x".into(),
            paths: vec!["x".into()],
        });
    assert!(p.extra_links.is_empty());
}

#[test]
fn local_bases_are_normalized() {
    let p = Policy::new("https://ehr/fhir/").with_local_base("https://gw/fhir/");
    assert!(p.is_local(&Reference::parse("https://ehr/fhir/Patient/1").unwrap()));
    assert!(p.is_local(&Reference::parse("https://gw/fhir/Patient/1").unwrap()));
    assert!(p.is_local(&Reference::parse("Patient/1").unwrap()));
    assert!(!p.is_local(&Reference::parse("https://gw/other/Patient/1").unwrap()));
}

#[test]
fn grants_combine_patient_and_user_contexts() {
    let p = Policy::new("https://ehr/fhir");
    let principal = principal(json!({
        "sub": "u", "patient": "pat-2", "fhirUser": "https://ehr/fhir/Patient/pat-1",
        "scope": "patient/Observation.rs user/Condition.rs"
    }));
    let g = p.grants(&principal).unwrap();
    assert_eq!(g.own(), vec!["pat-2", "pat-1"]);
    assert!(g.is_own("pat-1") && g.is_own("pat-2") && !g.is_own("pat-12"));
    let allowed = |patient, t| g.permission(patient, t, Interaction::Read).is_allowed();
    assert!(allowed("pat-2", "Observation"));
    assert!(!allowed("pat-2", "Condition"));
    assert!(allowed("pat-1", "Condition"));
    assert!(!allowed("pat-1", "Observation"));
    assert!(!allowed("pat-12", "Observation"));
    // A foreign-base fhirUser is no context.
    let foreign = principal_with_fhir_user("https://other/fhir/Patient/pat-1");
    assert_eq!(
        p.grants(&foreign).unwrap_err().reason(),
        DenialReason::NoPatientContext
    );
}

fn principal_with_fhir_user(fhir_user: &str) -> Principal {
    principal(json!({"sub": "u", "fhirUser": fhir_user, "scope": "user/*.rs"}))
}

#[test]
fn denial_reasons_serialize_as_their_codes() {
    for reason in [
        DenialReason::NoPatientContext,
        DenialReason::ScopeMissing,
        DenialReason::NotInCompartment,
        DenialReason::ForeignPatient,
        DenialReason::TypeNotAccessible,
        DenialReason::FilterMismatch,
        DenialReason::UnsupportedSearch,
        DenialReason::Malformed,
        DenialReason::WriteNotAllowed,
        DenialReason::WriteRuleViolated,
        DenialReason::DeleteNotAllowed,
    ] {
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            json!(reason.as_str())
        );
    }
}
