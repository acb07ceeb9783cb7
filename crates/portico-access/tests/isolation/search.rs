//! Search narrowing: `narrow_search`.

use portico_access::{Denial, DenialReason, Principal};
use serde_json::json;

use crate::common::*;

fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn narrow(
    principal: &Principal,
    resource_type: &str,
    list: &[(&str, &str)],
) -> Result<Vec<(String, String)>, Denial> {
    policy_with_tasks().narrow_search(principal, resource_type, &params(list))
}

fn all() -> Principal {
    patient_a("patient/*.rs")
}

#[test]
fn the_patient_restriction_is_added_when_absent() {
    let a = all();
    assert_eq!(
        narrow(&a, "Observation", &[]).unwrap(),
        params(&[("patient", "Patient/pat-1")])
    );
    assert_eq!(
        narrow(&a, "Observation", &[("code", "1234-5"), ("_count", "10")]).unwrap(),
        params(&[
            ("code", "1234-5"),
            ("_count", "10"),
            ("patient", "Patient/pat-1")
        ])
    );
    // Types without a `patient` parameter get their compartment parameter.
    assert_eq!(
        narrow(&a, "AdverseEvent", &[]).unwrap(),
        params(&[("subject", "Patient/pat-1")])
    );
    assert_eq!(
        narrow(&a, "Group", &[]).unwrap(),
        params(&[("member", "Patient/pat-1")])
    );
    assert_eq!(
        narrow(&a, "Appointment", &[]).unwrap(),
        params(&[("patient", "Patient/pat-1")])
    );
    assert_eq!(
        narrow(&a, "Task", &[]).unwrap(),
        params(&[("patient", "Patient/pat-1")])
    );
    assert_eq!(
        narrow(&a, "Patient", &[("name", "Smith")]).unwrap(),
        params(&[("name", "Smith"), ("_id", "pat-1")])
    );
    // A search by identifier only finds A, whoever the identifier belongs to.
    assert_eq!(
        narrow(&a, "Patient", &[("identifier", "urn:mrn|B-0012")]).unwrap(),
        params(&[("identifier", "urn:mrn|B-0012"), ("_id", "pat-1")])
    );
}

#[test]
fn naming_the_own_patient_is_kept_as_is() {
    let a = all();
    for (name, value) in [
        ("patient", "pat-1"),
        ("patient", "Patient/pat-1"),
        ("patient", "https://ehr.example/fhir/Patient/pat-1"),
        ("subject", "Patient/pat-1"),
        ("subject:Patient", "pat-1"),
        ("subject:Patient", "Patient/pat-1"),
        ("performer", "Patient/pat-1"),
        ("patient", "pat-1,Patient/pat-1"),
    ] {
        assert_eq!(
            narrow(&a, "Observation", &[(name, value)]).unwrap(),
            params(&[(name, value)]),
            "{name}={value}"
        );
    }
    assert_eq!(
        narrow(&a, "Patient", &[("_id", "pat-1")]).unwrap(),
        params(&[("_id", "pat-1")])
    );
    assert_eq!(
        narrow(&a, "Appointment", &[("actor", "Patient/pat-1")]).unwrap(),
        params(&[("actor", "Patient/pat-1")])
    );
}

#[test]
fn a_bare_or_mixed_value_is_not_a_restriction() {
    let a = all();
    // `subject=pat-1` could match Group/pat-1: the restriction is added as well.
    assert_eq!(
        narrow(&a, "Observation", &[("subject", "pat-1")]).unwrap(),
        params(&[("subject", "pat-1"), ("patient", "Patient/pat-1")])
    );
    assert_eq!(
        narrow(&a, "Observation", &[("subject", "Patient/pat-1,Group/g1")]).unwrap(),
        params(&[
            ("subject", "Patient/pat-1,Group/g1"),
            ("patient", "Patient/pat-1")
        ])
    );
    assert_eq!(
        narrow(&a, "Observation", &[("subject:Group", "Group/g1")]).unwrap(),
        params(&[("subject:Group", "Group/g1"), ("patient", "Patient/pat-1")])
    );
    assert_eq!(
        narrow(&a, "Observation", &[("focus", "Patient/pat-1")]).unwrap(),
        params(&[("focus", "Patient/pat-1"), ("patient", "Patient/pat-1")])
    );
}

#[test]
fn naming_another_patient_is_refused_never_rewritten() {
    let a = all();
    let cases: &[(&str, &str, &str)] = &[
        ("Observation", "patient", "pat-12"),
        ("Observation", "patient", "Patient/pat-12"),
        (
            "Observation",
            "patient",
            "https://ehr.example/fhir/Patient/pat-12",
        ),
        ("Observation", "patient", "pat-1,pat-12"),
        ("Observation", "patient", "Patient/pat-1,Patient/pat-12"),
        ("Observation", "patient", "Patient/pat-12/_history/1"),
        ("Observation", "subject", "Patient/pat-12"),
        ("Observation", "subject", "pat-12"),
        ("Observation", "subject:Patient", "pat-12"),
        ("Observation", "subject:Patient", "Patient/pat-12"),
        ("Observation", "performer", "Patient/pat-12"),
        ("Observation", "focus", "Patient/pat-12"),
        ("Observation", "focus:Patient", "pat-12"),
        ("Observation", "PATIENT", "Patient/pat-12"),
        ("Condition", "patient", "pat-12"),
        ("Condition", "asserter", "Patient/pat-12"),
        ("Encounter", "patient", "pat-12"),
        ("Appointment", "actor", "Patient/pat-12"),
        ("Appointment", "patient", "pat-12"),
        ("Communication", "sender", "Patient/pat-12"),
        ("Communication", "recipient", "Patient/pat-12"),
        ("MedicationRequest", "subject", "Patient/pat-12"),
        ("ServiceRequest", "performer", "Patient/pat-12"),
        ("CareTeam", "participant", "Patient/pat-12"),
        ("Coverage", "beneficiary", "Patient/pat-12"),
        ("Task", "patient", "pat-12"),
        ("Patient", "_id", "pat-12"),
        ("Patient", "_id", "pat-1,pat-12"),
        ("Patient", "link", "Patient/pat-12"),
        ("Observation", "_list", "Patient/pat-12"),
        (
            "Observation",
            "_source",
            "https://ehr.example/fhir/Patient/pat-12",
        ),
    ];
    for (t, name, value) in cases {
        assert_denied(
            narrow(&a, t, &[(name, value)]),
            DenialReason::ForeignPatient,
        );
        // Also when the own patient is named in another parameter.
        assert_denied(
            narrow(&a, t, &[("patient", "pat-1"), (name, value)]),
            DenialReason::ForeignPatient,
        );
    }
}

#[test]
fn foreign_servers_and_malformed_patient_values_are_refused() {
    let a = all();
    assert_denied(
        narrow(
            &a,
            "Observation",
            &[("patient", "https://evil.example/fhir/Patient/pat-1")],
        ),
        DenialReason::ForeignPatient,
    );
    for value in [
        "Patient/pat-1/extra",
        "patient/pat-12",
        "patient/pat-1",
        "Patient%2Fpat-12",
        "Patient%252Fpat-12",
        "Patient/..%2Fpat-12",
        "Patient//pat-12",
        "../pat-12",
        "pat-1/../pat-12",
        "pat 1",
        "",
    ] {
        assert_denied(
            narrow(&a, "Observation", &[("patient", value)]),
            DenialReason::Malformed,
        );
    }
    assert_denied(
        narrow(&a, "Observation", &[("patient id", "pat-1")]),
        DenialReason::Malformed,
    );
    assert_denied(
        narrow(&a, "Observation", &[("code", "Patient/../pat-12")]),
        DenialReason::Malformed,
    );
}

#[test]
fn modifiers_on_compartment_parameters() {
    let a = all();
    for name in [
        "patient:identifier",
        "subject:identifier",
        "subject:missing",
        "patient:not",
        "subject:above",
        "subject:below",
        "subject:text",
        "patient:contains",
        "actor:exact",
    ] {
        let t = if name.starts_with("actor") {
            "Appointment"
        } else {
            "Observation"
        };
        assert_denied(
            narrow(&a, t, &[(name, "x")]),
            DenialReason::UnsupportedSearch,
        );
    }
    // Modifiers on other parameters are the upstream's business.
    assert!(narrow(&a, "Observation", &[("code:text", "glucose")]).is_ok());
}

#[test]
fn chained_parameters_stay_within_the_compartment() {
    let a = all();
    // Refused: a chain through the patient link selects patients by keys Portico cannot
    // check (another patient's MRN or name); it could only ever match A anyway.
    for name in [
        "subject.name",
        "subject:Patient.identifier",
        "patient.identifier",
        "patient._id",
    ] {
        assert_denied(
            narrow(&a, "Observation", &[(name, "B-0012")]),
            DenialReason::UnsupportedSearch,
        );
    }
    // Allowed: other chains, since the restriction still applies.
    assert_eq!(
        narrow(&a, "Observation", &[("encounter.date", "ge2024")]).unwrap(),
        params(&[("encounter.date", "ge2024"), ("patient", "Patient/pat-1")])
    );
    assert!(narrow(&a, "Observation", &[("encounter.patient", "Patient/pat-1")]).is_ok());
    // Refused: a chain ending in another patient, too long, or carrying _has.
    for (name, value, reason) in [
        (
            "encounter.patient",
            "Patient/pat-12",
            DenialReason::ForeignPatient,
        ),
        ("encounter.patient", "pat-12", DenialReason::ForeignPatient),
        (
            "encounter.subject:Patient",
            "pat-12",
            DenialReason::ForeignPatient,
        ),
        (
            "encounter.subject",
            "Patient/pat-12",
            DenialReason::ForeignPatient,
        ),
        (
            "subject:Patient._id",
            "pat-12",
            DenialReason::UnsupportedSearch,
        ),
        (
            "subject:Patient.link",
            "Patient/pat-12",
            DenialReason::UnsupportedSearch,
        ),
        (
            "encounter.subject.organization.name",
            "x",
            DenialReason::UnsupportedSearch,
        ),
        (
            "subject._has:Observation:patient:code",
            "x",
            DenialReason::UnsupportedSearch,
        ),
        (
            "subject:identifier.name",
            "x",
            DenialReason::UnsupportedSearch,
        ),
        ("_id.subject", "x", DenialReason::UnsupportedSearch),
        ("subject..name", "x", DenialReason::UnsupportedSearch),
    ] {
        assert_denied(narrow(&a, "Observation", &[(name, value)]), reason);
    }
}

#[test]
fn has_is_allowed_only_within_the_compartment() {
    let a = all();
    assert_eq!(
        narrow(
            &a,
            "Patient",
            &[("_has:Observation:patient:code", "1234-5")]
        )
        .unwrap(),
        params(&[
            ("_has:Observation:patient:code", "1234-5"),
            ("_id", "pat-1")
        ])
    );
    assert!(
        narrow(
            &a,
            "Encounter",
            &[("_has:Observation:encounter:code", "1234-5")]
        )
        .is_ok()
    );
    for (t, name, value, reason) in [
        (
            "Patient",
            "_has:Observation:patient:patient",
            "pat-12",
            DenialReason::ForeignPatient,
        ),
        (
            "Patient",
            "_has:Observation:patient:subject",
            "Patient/pat-12",
            DenialReason::ForeignPatient,
        ),
        (
            "Patient",
            "_has:Observation:patient:subject",
            "pat-12",
            DenialReason::ForeignPatient,
        ),
        (
            "Encounter",
            "_has:Observation:encounter:subject",
            "Patient/pat-12",
            DenialReason::ForeignPatient,
        ),
        (
            "Patient",
            "_has:Observation:patient:_has:Provenance:target:agent",
            "x",
            DenialReason::UnsupportedSearch,
        ),
        (
            "Patient",
            "_has:Observation:patient:subject.name",
            "x",
            DenialReason::UnsupportedSearch,
        ),
        (
            "Patient",
            "_has:Observation:patient:subject:identifier",
            "x",
            DenialReason::UnsupportedSearch,
        ),
        (
            "Patient",
            "_has:Device:patient:type",
            "x",
            DenialReason::UnsupportedSearch,
        ),
        (
            "Patient",
            "_has:Practitioner:x:name",
            "x",
            DenialReason::UnsupportedSearch,
        ),
        (
            "Patient",
            "_has:Observation:patient",
            "x",
            DenialReason::Malformed,
        ),
        ("Patient", "_has", "x", DenialReason::Malformed),
        (
            "Patient",
            "_has:Nope:patient:code",
            "x",
            DenialReason::Malformed,
        ),
        (
            "Practitioner",
            "_has:Observation:performer:code",
            "x",
            DenialReason::UnsupportedSearch,
        ),
        (
            "Organization",
            "_has:Patient:organization:name",
            "x",
            DenialReason::UnsupportedSearch,
        ),
    ] {
        assert_denied(narrow(&a, t, &[(name, value)]), reason);
    }
    // The source type needs a search scope.
    let only_patient = patient_a("patient/Patient.rs");
    assert_denied(
        narrow(
            &only_patient,
            "Patient",
            &[("_has:Observation:patient:code", "1")],
        ),
        DenialReason::ScopeMissing,
    );
}

#[test]
fn includes_are_allowed_and_verified_on_the_way_out() {
    let a = all();
    for (name, value) in [
        ("_include", "Observation:subject"),
        ("_include", "Observation:performer:Practitioner"),
        ("_include:iterate", "Observation:has-member"),
        ("_include:recurse", "Observation:has-member"),
        ("_revinclude", "Provenance:target"),
        ("_revinclude:iterate", "Observation:subject"),
    ] {
        let out = narrow(&a, "Observation", &[(name, value)]).unwrap();
        assert_eq!(out[0], (name.to_owned(), value.to_owned()));
        assert_eq!(out[1], ("patient".to_owned(), "Patient/pat-1".to_owned()));
    }
    for (name, value, reason) in [
        ("_include", "*", DenialReason::UnsupportedSearch),
        ("_revinclude", "*:*", DenialReason::UnsupportedSearch),
        (
            "_include:everything",
            "Observation:subject",
            DenialReason::UnsupportedSearch,
        ),
        ("_include", "Observation", DenialReason::Malformed),
        ("_include", "Nope:subject", DenialReason::Malformed),
        (
            "_include",
            "Observation:subject:Nope",
            DenialReason::Malformed,
        ),
        ("_include", "Observation:sub ject", DenialReason::Malformed),
    ] {
        assert_denied(narrow(&a, "Observation", &[(name, value)]), reason);
    }
}

#[test]
fn dangerous_search_features_are_refused() {
    let a = all();
    for name in [
        "_filter",
        "_query",
        "_contained",
        "_containedType",
        "_type",
        "_getpages",
        "_whatever",
        "_include.x",
    ] {
        assert_denied(
            narrow(&a, "Observation", &[(name, "x")]),
            DenialReason::UnsupportedSearch,
        );
    }
}

#[test]
fn reference_data_searches() {
    let a = all();
    assert_eq!(
        narrow(&a, "Practitioner", &[("name", "Smith")]).unwrap(),
        params(&[("name", "Smith")])
    );
    assert!(narrow(&a, "Slot", &[("schedule.actor", "Practitioner/dr-1")]).is_ok());
    assert!(narrow(&a, "Schedule", &[("actor", "Practitioner/dr-1")]).is_ok());
    assert!(narrow(&a, "Schedule", &[("actor", "dr-1")]).is_ok());
    assert!(narrow(&a, "Location", &[("organization.name", "Clinic")]).is_ok());
    for (t, name, value, reason) in [
        (
            "Schedule",
            "actor",
            "Patient/pat-12",
            DenialReason::ForeignPatient,
        ),
        (
            "Schedule",
            "actor:Patient",
            "pat-12",
            DenialReason::ForeignPatient,
        ),
        (
            "Slot",
            "schedule.actor",
            "Patient/pat-12",
            DenialReason::ForeignPatient,
        ),
        (
            "Schedule",
            "actor.name",
            "Smith",
            DenialReason::UnsupportedSearch,
        ),
        (
            "Schedule",
            "actor:Patient.name",
            "Smith",
            DenialReason::UnsupportedSearch,
        ),
        (
            "Slot",
            "schedule.actor.name",
            "Smith",
            DenialReason::UnsupportedSearch,
        ),
        (
            "Practitioner",
            "_has:Observation:performer:patient",
            "pat-12",
            DenialReason::UnsupportedSearch,
        ),
    ] {
        assert_denied(narrow(&a, t, &[(name, value)]), reason);
    }
    assert_denied(
        narrow(&patient_a("patient/Observation.rs"), "Practitioner", &[]),
        DenialReason::ScopeMissing,
    );
}

#[test]
fn other_types_are_denied() {
    let a = patient_a("patient/*.cruds");
    for t in [
        "Device",
        "Bundle",
        "Binary",
        "Questionnaire",
        "NotAType",
        "observation",
    ] {
        assert_denied(narrow(&a, t, &[]), DenialReason::TypeNotAccessible);
    }
    // Task is denied unless a rule links it.
    assert_denied(
        policy().narrow_search(&a, "Task", &[]),
        DenialReason::TypeNotAccessible,
    );
}

#[test]
fn search_needs_the_s_letter() {
    for scopes in [
        "patient/Observation.r",
        "patient/Observation.cud",
        "patient/Condition.rs",
        "system/*.rs",
        "openid",
    ] {
        assert_denied(
            narrow(&patient_a(scopes), "Observation", &[]),
            DenialReason::ScopeMissing,
        );
    }
    assert!(narrow(&patient_a("patient/Observation.s"), "Observation", &[]).is_ok());
    assert!(narrow(&patient_a("patient/Observation.read"), "Observation", &[]).is_ok());
    let nobody = principal_from(json!({"scope": "user/*.rs"}));
    assert_denied(
        narrow(&nobody, "Observation", &[]),
        DenialReason::NoPatientContext,
    );
}

#[test]
fn granular_filters_are_added_when_expressible() {
    const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
    let one = patient_a(&format!("patient/Observation.rs?category={LAB}"));
    assert_eq!(
        narrow(&one, "Observation", &[]).unwrap(),
        params(&[("patient", "Patient/pat-1"), ("category", LAB)])
    );
    let two = patient_a(&format!(
        "patient/Observation.rs?category={LAB} patient/Observation.rs?category=vital-signs"
    ));
    assert_eq!(
        narrow(&two, "Observation", &[("patient", "pat-1")]).unwrap(),
        params(&[
            ("patient", "pat-1"),
            ("category", &format!("{LAB},vital-signs"))
        ])
    );
    // Not expressible as one search: left to outbound verification.
    let mixed = patient_a(&format!(
        "patient/Observation.rs?category={LAB} patient/Observation.rs?code=1234-5"
    ));
    assert_eq!(
        narrow(&mixed, "Observation", &[]).unwrap(),
        params(&[("patient", "Patient/pat-1")])
    );
    let and = patient_a("patient/Observation.rs?category=laboratory&status=final");
    assert_eq!(
        narrow(&and, "Observation", &[]).unwrap(),
        params(&[
            ("patient", "Patient/pat-1"),
            ("category", "laboratory"),
            ("status", "final")
        ])
    );
}

#[test]
fn elements_keep_what_verification_needs() {
    let a = patient_a("patient/Observation.rs?category=laboratory");
    let out = narrow(&a, "Observation", &[("_elements", "code,valueQuantity")]).unwrap();
    assert_eq!(out[0].0, "_elements");
    let elements: Vec<&str> = out[0].1.split(',').collect();
    for needed in ["code", "valueQuantity", "subject", "performer", "category"] {
        assert!(
            elements.contains(&needed),
            "{needed} missing from {elements:?}"
        );
    }
}

#[test]
fn proxies_search_their_patients_only() {
    let proxy = principal_from(json!({"patient": ["pat-1", "pat-2"], "scope": "patient/*.rs"}));
    assert_eq!(
        narrow(&proxy, "Observation", &[]).unwrap(),
        params(&[("patient", "Patient/pat-1,Patient/pat-2")])
    );
    assert_eq!(
        narrow(&proxy, "Observation", &[("patient", "pat-2")]).unwrap(),
        params(&[("patient", "pat-2")])
    );
    assert_eq!(
        narrow(&proxy, "Patient", &[]).unwrap(),
        params(&[("_id", "pat-1,pat-2")])
    );
    assert_denied(
        narrow(&proxy, "Observation", &[("patient", "pat-2,pat-12")]),
        DenialReason::ForeignPatient,
    );
}

#[test]
fn user_scopes_narrow_to_the_fhir_user_patient() {
    let user = principal_from(json!({"fhirUser": "Patient/pat-1", "scope": "user/Observation.rs"}));
    assert_eq!(
        narrow(&user, "Observation", &[]).unwrap(),
        params(&[("patient", "Patient/pat-1")])
    );
    assert_denied(
        narrow(&user, "Observation", &[("patient", "pat-12")]),
        DenialReason::ForeignPatient,
    );
    // Named but without a search scope for that compartment.
    let mixed = principal_from(
        json!({"patient": "pat-2", "fhirUser": "Patient/pat-1", "scope": "patient/Observation.rs"}),
    );
    assert_denied(
        narrow(&mixed, "Observation", &[("patient", "pat-1")]),
        DenialReason::ScopeMissing,
    );
    assert_eq!(
        narrow(&mixed, "Observation", &[]).unwrap(),
        params(&[("patient", "Patient/pat-2")])
    );
}

#[test]
fn denials_do_not_echo_values() {
    let d = narrow(&all(), "Observation", &[("patient", "Patient/pat-12")]).unwrap_err();
    assert!(!d.message().contains("pat-12"), "{}", d.message());
    let d = narrow(&all(), "Observation", &[("_filter", "subject eq pat-12")]).unwrap_err();
    assert!(!d.message().contains("pat-12"), "{}", d.message());
}
