//! Reads by id (and vread/history entries): `check_read`.

use portico_access::{DenialReason, Policy, REFERENCE_DATA_TYPES, SECURITY_TYPES};
use portico_fhir::compartment::PATIENT_COMPARTMENT;
use portico_fhir::reference::Reference;
use serde_json::json;

use crate::common::*;

#[test]
fn own_observation_is_readable_and_b_s_is_not() {
    let a = patient_a("patient/Observation.rs");
    let p = policy();
    assert!(p.check_read(&a, &observation("Patient/pat-1")).is_ok());
    assert_denied(
        p.check_read(&a, &observation("Patient/pat-12")),
        DenialReason::NotInCompartment,
    );
}

#[test]
fn prefix_colliding_ids_never_match() {
    let p = policy();
    let a = patient_a("patient/*.rs");
    let b = principal_from(json!({"patient": B, "scope": "patient/*.rs"}));
    for (subject, a_ok, b_ok) in [
        ("Patient/pat-1", true, false),
        ("Patient/pat-12", false, true),
        ("Patient/pat-123", false, false),
        ("Patient/pat-", false, false),
        ("Patient/pat-1.2", false, false),
    ] {
        let o = observation(subject);
        assert_eq!(p.check_read(&a, &o).is_ok(), a_ok, "A reading {subject}");
        assert_eq!(p.check_read(&b, &o).is_ok(), b_ok, "B reading {subject}");
    }
}

#[test]
fn every_compartment_type_is_checked_by_id() {
    let p = policy();
    let a = patient_a("patient/*.rs");
    let mut checked = 0;
    for (resource_type, links) in PATIENT_COMPARTMENT {
        if *resource_type == "Patient" || REFERENCE_DATA_TYPES.contains(resource_type) {
            continue;
        }
        if SECURITY_TYPES.contains(resource_type) {
            // Never served to patients, even when they name only the patient.
            for link in *links {
                for path in link.paths {
                    let own = with_reference_at(resource_type, path, "Patient/pat-1");
                    assert_denied(p.check_read(&a, &own), DenialReason::TypeNotAccessible);
                }
            }
            continue;
        }
        for link in *links {
            for path in link.paths {
                let foreign = with_reference_at(resource_type, path, "Patient/pat-12");
                assert_denied(p.check_read(&a, &foreign), DenialReason::NotInCompartment);
                let own = with_reference_at(resource_type, path, "Patient/pat-1");
                assert!(
                    p.check_read(&a, &own).is_ok(),
                    "{resource_type}.{path} naming A must be readable"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 90, "only {checked} compartment links checked");
}

#[test]
fn absolute_references_must_be_on_a_local_base() {
    let p = policy().with_local_base("https://gateway.example/fhir/");
    let a = patient_a("patient/Observation.rs");
    for ok in [
        "https://ehr.example/fhir/Patient/pat-1",
        "https://EHR.example/fhir/Patient/pat-1",
        "https://gateway.example/fhir/Patient/pat-1",
    ] {
        assert!(p.check_read(&a, &observation(ok)).is_ok(), "{ok}");
    }
    for foreign in [
        "https://evil.example/fhir/Patient/pat-1",
        "https://ehr.example/fhir.evil/Patient/pat-1",
        "https://ehr.example/fhirx/Patient/pat-1",
        "https://ehr.example/fhir/r5/Patient/pat-1",
        "https://ehr.example.evil/fhir/Patient/pat-1",
        "http://ehr.example/fhirPatient/pat-1",
        "https://ehr.example/fhir/Patient/pat-12",
    ] {
        assert_denied(
            p.check_read(&a, &observation(foreign)),
            DenialReason::NotInCompartment,
        );
    }
}

#[test]
fn versioned_references_compare_type_and_id() {
    let p = policy();
    let a = patient_a("patient/Observation.rs");
    assert!(
        p.check_read(&a, &observation("Patient/pat-1/_history/3"))
            .is_ok()
    );
    assert_denied(
        p.check_read(&a, &observation("Patient/pat-12/_history/1")),
        DenialReason::NotInCompartment,
    );
    assert_denied(
        p.check_read(&a, &observation("Patient/pat-12/_history/pat-1")),
        DenialReason::NotInCompartment,
    );
}

#[test]
fn malformed_references_never_match() {
    let p = policy();
    let a = patient_a("patient/Observation.rs");
    for bad in [
        "Patient/pat-1/extra",
        "patient/pat-1",
        "PATIENT/pat-1",
        "Patient/pat-1?x=1",
        "Patient/pat-1#x",
        "Patient/ pat-1",
        " Patient/pat-1",
        "Patient//pat-1",
        "Patient/pat-1/",
        "#pat-1",
        "pat-1",
        "urn:uuid:pat-1",
        "Patient/..%2Fpat-1",
        "Patient/pat-12/../pat-1",
        "Patient/pat-1%00",
        "Group/pat-1",
        "Person/pat-1",
        "",
    ] {
        assert_denied(
            p.check_read(&a, &observation(bad)),
            DenialReason::NotInCompartment,
        );
    }
    // Non-string references and logical references by identifier.
    for subject in [
        json!({"reference": ["Patient/pat-1"]}),
        json!({"reference": {"reference": "Patient/pat-1"}}),
        json!({"identifier": {"system": "urn:mrn", "value": "pat-1"}, "type": "Patient"}),
        json!({"display": "Patient/pat-1"}),
        json!("Patient/pat-1"),
    ] {
        let mut o = observation("Patient/pat-1");
        o["subject"] = subject.clone();
        assert_denied(p.check_read(&a, &o), DenialReason::NotInCompartment);
    }
}

#[test]
fn contained_patients_do_not_make_a_resource_own() {
    let p = policy();
    let a = patient_a("patient/Observation.rs");
    let mut o = observation("#p");
    o["contained"] = json!([{"resourceType": "Patient", "id": "p"}]);
    assert_denied(p.check_read(&a, &o), DenialReason::NotInCompartment);
    let mut o = observation("Patient/pat-12");
    o["contained"] =
        json!([{"resourceType": "Observation", "id": "c", "subject": reference("Patient/pat-1")}]);
    assert_denied(p.check_read(&a, &o), DenialReason::NotInCompartment);
    // A's resource that contains something stays A's.
    let mut o = observation("Patient/pat-1");
    o["contained"] = json!([{"resourceType": "Practitioner", "id": "d"}]);
    assert!(p.check_read(&a, &o).is_ok());
}

#[test]
fn patient_resources_only_the_principal_s_own() {
    let p = policy();
    let a = patient_a("patient/Patient.rs");
    assert!(
        p.check_read(&a, &json!({"resourceType": "Patient", "id": "pat-1"}))
            .is_ok()
    );
    for other in [
        json!({"resourceType": "Patient", "id": "pat-12"}),
        json!({"resourceType": "Patient", "id": "pat-12", "link": [{"other": reference("Patient/pat-1"), "type": "seealso"}]}),
        json!({"resourceType": "Patient"}),
        json!({"resourceType": "Patient", "id": ["pat-1"]}),
        json!({"resourceType": "Patient", "id": "PAT-1"}),
    ] {
        assert_denied(p.check_read(&a, &other), DenialReason::NotInCompartment);
    }
}

#[test]
fn read_needs_the_r_letter_for_the_type() {
    let p = policy();
    let own = observation("Patient/pat-1");
    for (scopes, ok) in [
        ("patient/Observation.rs", true),
        ("patient/Observation.read", true),
        ("patient/Observation.r", true),
        ("patient/*.r", true),
        ("patient/*.*", true),
        ("patient/Observation.s", false),
        ("patient/Observation.cud", false),
        ("patient/Observation.write", false),
        ("patient/Condition.rs", false),
        ("patient/Observation.rs?category=laboratory", false),
        ("openid fhirUser launch/patient", false),
        ("user/Observation.rs", false),
        ("system/Observation.rs", false),
        ("system/*.cruds", false),
    ] {
        let a = patient_a(scopes);
        assert_eq!(p.check_read(&a, &own).is_ok(), ok, "{scopes}");
        if !ok {
            let reason = p.check_read(&a, &own).unwrap_err().reason();
            assert!(
                matches!(
                    reason,
                    DenialReason::ScopeMissing | DenialReason::FilterMismatch
                ),
                "{scopes}: {reason:?}"
            );
        }
    }
}

#[test]
fn granular_scopes_filter_reads_by_id() {
    let p = policy();
    let a = patient_a(
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
    );
    assert!(
        p.check_read(&a, &lab_observation("Patient/pat-1", "laboratory"))
            .is_ok()
    );
    assert_denied(
        p.check_read(&a, &lab_observation("Patient/pat-1", "vital-signs")),
        DenialReason::FilterMismatch,
    );
    assert_denied(
        p.check_read(&a, &observation("Patient/pat-1")),
        DenialReason::FilterMismatch,
    );
    // The filter never helps another patient's resource.
    assert_denied(
        p.check_read(&a, &lab_observation("Patient/pat-12", "laboratory")),
        DenialReason::NotInCompartment,
    );
}

#[test]
fn reference_data_needs_a_read_scope_for_its_type() {
    let p = policy();
    let practitioner = json!({"resourceType": "Practitioner", "id": "dr-1"});
    assert!(
        p.check_read(&patient_a("patient/Practitioner.rs"), &practitioner)
            .is_ok()
    );
    assert!(
        p.check_read(&patient_a("patient/*.read"), &practitioner)
            .is_ok()
    );
    assert_denied(
        p.check_read(&patient_a("patient/Observation.rs"), &practitioner),
        DenialReason::ScopeMissing,
    );
    for t in REFERENCE_DATA_TYPES {
        let r = json!({"resourceType": t, "id": "x"});
        assert!(p.check_read(&patient_a("patient/*.rs"), &r).is_ok(), "{t}");
        assert!(
            p.check_read(&patient_a("patient/Observation.rs"), &r)
                .is_err(),
            "{t}"
        );
    }
}

#[test]
fn a_schedule_naming_another_patient_is_theirs() {
    let p = policy();
    let a = patient_a("patient/Schedule.rs");
    let schedule = |actors: &[&str]| {
        json!({"resourceType": "Schedule", "id": "s",
               "actor": actors.iter().map(|r| reference(r)).collect::<Vec<_>>()})
    };
    assert!(p.check_read(&a, &schedule(&["Practitioner/dr-1"])).is_ok());
    assert!(
        p.check_read(&a, &schedule(&["Practitioner/dr-1", "Patient/pat-1"]))
            .is_ok()
    );
    assert_denied(
        p.check_read(&a, &schedule(&["Patient/pat-12"])),
        DenialReason::NotInCompartment,
    );
    assert_denied(
        p.check_read(&a, &schedule(&["Patient/pat-1", "Patient/pat-12"])),
        DenialReason::NotInCompartment,
    );
    assert_denied(
        p.check_read(&a, &schedule(&["https://evil.example/fhir/Patient/pat-1"])),
        DenialReason::NotInCompartment,
    );
}

#[test]
fn types_outside_the_compartment_are_denied() {
    let p = policy();
    let a = patient_a("patient/*.cruds");
    for r in [
        json!({"resourceType": "Task", "id": "t", "for": reference("Patient/pat-1")}),
        json!({"resourceType": "Device", "id": "d", "patient": reference("Patient/pat-1")}),
        json!({"resourceType": "Bundle", "id": "b", "type": "collection"}),
        json!({"resourceType": "Binary", "id": "b"}),
        json!({"resourceType": "Questionnaire", "id": "q"}),
        json!({"resourceType": "OperationOutcome"}),
        json!({"resourceType": "NotAType", "subject": reference("Patient/pat-1")}),
    ] {
        assert_denied(p.check_read(&a, &r), DenialReason::TypeNotAccessible);
    }
    assert_denied(
        p.check_read(&a, &json!({"subject": reference("Patient/pat-1")})),
        DenialReason::Malformed,
    );
    assert_denied(p.check_read(&a, &json!([])), DenialReason::Malformed);
}

#[test]
fn explicit_links_put_task_in_the_compartment() {
    let p = policy_with_tasks();
    let a = patient_a("patient/Task.rs");
    assert!(
        p.check_read(
            &a,
            &json!({"resourceType": "Task", "id": "t", "for": reference("Patient/pat-1")})
        )
        .is_ok()
    );
    for r in [
        json!({"resourceType": "Task", "id": "t", "for": reference("Patient/pat-12")}),
        json!({"resourceType": "Task", "id": "t", "requester": reference("Patient/pat-1")}),
        json!({"resourceType": "Task", "id": "t", "for": reference("https://evil.example/fhir/Patient/pat-1")}),
    ] {
        assert_denied(p.check_read(&a, &r), DenialReason::NotInCompartment);
    }
}

#[test]
fn reads_by_id_must_return_what_was_asked() {
    let p = policy();
    let a = patient_a("patient/Observation.rs");
    let asked = Reference::new("Observation", "obs-1");
    assert!(
        p.check_read_at(&a, &asked, &observation("Patient/pat-1"))
            .is_ok()
    );
    let other = Reference::new("Observation", "obs-2");
    assert_denied(
        p.check_read_at(&a, &other, &observation("Patient/pat-1")),
        DenialReason::Malformed,
    );
}

#[test]
fn user_scopes_apply_only_to_a_patient_fhir_user() {
    let p = policy();
    let own = observation("Patient/pat-1");
    let as_user =
        principal_from(json!({"fhirUser": "Patient/pat-1", "scope": "user/Observation.rs"}));
    assert!(p.check_read(&as_user, &own).is_ok());
    assert_denied(
        p.check_read(&as_user, &observation("Patient/pat-12")),
        DenialReason::NotInCompartment,
    );
    let absolute = principal_from(
        json!({"fhirUser": "https://ehr.example/fhir/Patient/pat-1", "scope": "user/Observation.rs"}),
    );
    assert!(p.check_read(&absolute, &own).is_ok());
    for claims in [
        json!({"fhirUser": "Practitioner/pat-1", "scope": "user/*.rs"}),
        json!({"fhirUser": "RelatedPerson/pat-1", "scope": "user/*.rs"}),
        json!({"fhirUser": "https://evil.example/fhir/Patient/pat-1", "scope": "user/*.rs"}),
        json!({"fhirUser": "Patient/pat-1/extra", "scope": "user/*.rs"}),
        json!({"scope": "user/*.rs"}),
        json!({"scope": "system/*.rs"}),
    ] {
        let principal = principal_from(claims.clone());
        assert_denied(
            p.check_read(&principal, &own),
            DenialReason::NoPatientContext,
        );
    }
    // patient/ scopes do not reach the fhirUser's compartment, user/ scopes do not reach
    // the launch patient's.
    let mixed = principal_from(
        json!({"patient": "pat-2", "fhirUser": "Patient/pat-1", "scope": "patient/Observation.rs"}),
    );
    assert!(p.check_read(&mixed, &observation("Patient/pat-2")).is_ok());
    assert_denied(p.check_read(&mixed, &own), DenialReason::ScopeMissing);
}

#[test]
fn system_scopes_are_never_honoured_for_patients() {
    let p = policy();
    let a = principal_from(json!({"patient": A, "scope": "system/*.cruds system/Observation.rs"}));
    assert_denied(
        p.check_read(&a, &observation("Patient/pat-1")),
        DenialReason::ScopeMissing,
    );
    assert_denied(
        p.check_read(&a, &observation("Patient/pat-12")),
        DenialReason::NotInCompartment,
    );
}

#[test]
fn proxies_read_each_of_their_patients_only() {
    let p = policy();
    let proxy = principal_from(json!({"patient": ["pat-1", "pat-2"], "scope": "patient/*.rs"}));
    assert!(p.check_read(&proxy, &observation("Patient/pat-1")).is_ok());
    assert!(p.check_read(&proxy, &observation("Patient/pat-2")).is_ok());
    assert_denied(
        p.check_read(&proxy, &observation("Patient/pat-12")),
        DenialReason::NotInCompartment,
    );
    assert_denied(
        p.check_read(&proxy, &observation("Patient/pat-20")),
        DenialReason::NotInCompartment,
    );
}

#[test]
fn denials_do_not_leak_other_patients_ids() {
    let p: Policy = policy();
    let a = patient_a("patient/*.rs");
    let d = p
        .check_read(&a, &observation("Patient/pat-12"))
        .unwrap_err();
    assert!(!d.message().contains("pat-12"), "{}", d.message());
    assert!(!d.to_string().contains("pat-12"));
}

#[test]
fn resources_shared_with_another_patient_are_not_read() {
    let p = policy();
    let a = patient_a("patient/*.rs");
    let shared_appointment = json!({"resourceType": "Appointment", "id": "ap", "participant": [
        {"actor": reference("Patient/pat-1")}, {"actor": reference("Patient/pat-12")}]});
    assert_denied(
        p.check_read(&a, &shared_appointment),
        DenialReason::NotInCompartment,
    );
    let group = json!({"resourceType": "Group", "id": "g", "member": [
        {"entity": reference("Patient/pat-1")}, {"entity": reference("Patient/pat-12")}]});
    assert_denied(p.check_read(&a, &group), DenialReason::NotInCompartment);
    let mut performed_by_b = observation("Patient/pat-1");
    performed_by_b["performer"] = json!([{"reference": "Patient/pat-12", "display": "B's name"}]);
    assert_denied(
        p.check_read(&a, &performed_by_b),
        DenialReason::NotInCompartment,
    );
    let mut elsewhere = observation("Patient/pat-1");
    elsewhere["performer"] = json!([reference("https://other.example/fhir/Patient/pat-1")]);
    assert_denied(p.check_read(&a, &elsewhere), DenialReason::NotInCompartment);
    // A practitioner performer, or a proxy's two patients, are fine.
    let mut by_doctor = observation("Patient/pat-1");
    by_doctor["performer"] = json!([reference("Practitioner/dr-1")]);
    assert!(p.check_read(&a, &by_doctor).is_ok());
    let proxy = principal_from(json!({"patient": ["pat-1", "pat-2"], "scope": "patient/*.rs"}));
    let family = json!({"resourceType": "Appointment", "id": "ap", "participant": [
        {"actor": reference("Patient/pat-1")}, {"actor": reference("Patient/pat-2")}]});
    assert!(p.check_read(&proxy, &family).is_ok());
}
