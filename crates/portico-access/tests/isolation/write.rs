//! Writes: `check_write`, `verify_referenced`, `authorize_write`.

use std::collections::HashMap;

use async_trait::async_trait;
use portico_access::{
    DenialReason, Interaction, Policy, Principal, ReferenceResolver, ResolveError, WriteError,
};
use portico_fhir::reference::Reference;
use serde_json::{Value, json};

use crate::common::*;

const ALL: &str = "patient/*.cruds";

fn write(
    principal: &Principal,
    interaction: Interaction,
    new: &Value,
    current: Option<&Value>,
) -> Result<portico_access::WriteApproval, portico_access::Denial> {
    let t = new["resourceType"].as_str().unwrap_or("Observation");
    policy_with_tasks().check_write(principal, interaction, t, new, current)
}

fn create(
    principal: &Principal,
    new: &Value,
) -> Result<portico_access::WriteApproval, portico_access::Denial> {
    write(principal, Interaction::Create, new, None)
}

fn communication() -> Value {
    json!({
        "resourceType": "Communication", "status": "in-progress",
        "subject": reference("Patient/pat-1"),
        "sender": reference("Patient/pat-1"),
        "recipient": [reference("Practitioner/dr-1")],
        "payload": [{"contentString": "hello"}],
    })
}

fn appointment(status: &str) -> Value {
    json!({
        "resourceType": "Appointment", "id": "ap-1", "status": status,
        "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T10:30:00Z",
        "slot": [reference("Slot/s-1")],
        "participant": [
            {"actor": reference("Patient/pat-1"), "status": "accepted"},
            {"actor": reference("Practitioner/dr-1"), "status": "accepted"},
        ],
    })
}

fn medication_request() -> Value {
    json!({
        "resourceType": "MedicationRequest", "id": "mr-new", "status": "draft", "intent": "proposal",
        "subject": reference("Patient/pat-1"),
        "requester": reference("Patient/pat-1"),
        "medicationCodeableConcept": {"coding": [{"system": "rx", "code": "42"}]},
        "priorPrescription": reference("MedicationRequest/mr-1"),
    })
}

fn service_request() -> Value {
    json!({
        "resourceType": "ServiceRequest", "status": "draft", "intent": "proposal",
        "subject": reference("Patient/pat-1"),
        "requester": reference("Patient/pat-1"),
        "performer": [reference("Practitioner/dr-2")],
        "code": {"text": "dermatology referral"},
    })
}

fn task() -> Value {
    json!({
        "resourceType": "Task", "id": "t-1", "status": "requested", "intent": "order",
        "for": reference("Patient/pat-1"),
        "requester": reference("Patient/pat-1"),
        "focus": reference("MedicationRequest/mr-1"),
    })
}

fn set(mut v: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        v.as_object_mut().unwrap().remove(key);
    } else {
        v[key] = value;
    }
    v
}

#[test]
fn a_patient_may_message_their_care_team() {
    let a = patient_a(ALL);
    let approval = create(&a, &communication()).unwrap();
    assert_eq!(approval.patient(), "pat-1");
    assert!(approval.references_to_verify().is_empty());
}

#[test]
fn communications_naming_b_are_refused() {
    let a = patient_a(ALL);
    for (key, value, reason) in [
        (
            "sender",
            reference("Patient/pat-12"),
            DenialReason::ForeignPatient,
        ),
        (
            "subject",
            reference("Patient/pat-12"),
            DenialReason::ForeignPatient,
        ),
        (
            "recipient",
            json!([reference("Patient/pat-12")]),
            DenialReason::ForeignPatient,
        ),
        (
            "recipient",
            json!([reference("https://ehr.example/fhir/Patient/pat-12")]),
            DenialReason::ForeignPatient,
        ),
        (
            "sender",
            reference("Practitioner/dr-1"),
            DenialReason::WriteRuleViolated,
        ),
        ("sender", Value::Null, DenialReason::WriteRuleViolated),
        ("subject", Value::Null, DenialReason::WriteRuleViolated),
        (
            "subject",
            json!({"identifier": {"system": "urn:mrn", "value": "B-0012"}}),
            DenialReason::WriteRuleViolated,
        ),
        (
            "sender",
            json!({"display": "pat-1"}),
            DenialReason::WriteRuleViolated,
        ),
        (
            "sender",
            reference("https://evil.example/fhir/Patient/pat-1"),
            DenialReason::WriteRuleViolated,
        ),
        (
            "sender",
            reference("patient/pat-1"),
            DenialReason::Malformed,
        ),
        (
            "sender",
            reference("Patient/pat-1/x"),
            DenialReason::Malformed,
        ),
        ("subject", reference("#me"), DenialReason::Malformed),
        (
            "subject",
            reference("urn:uuid:7c7b1b8a-0000-4000-8000-000000000000"),
            DenialReason::Malformed,
        ),
        (
            "contained",
            json!([{"resourceType": "Patient", "id": "me"}]),
            DenialReason::WriteRuleViolated,
        ),
        (
            "extension",
            json!([{"url": "x", "valueReference": reference("Patient/pat-12")}]),
            DenialReason::ForeignPatient,
        ),
    ] {
        let c = set(communication(), key, value.clone());
        let r = create(&a, &c);
        match r {
            Err(d) => assert_eq!(d.reason(), reason, "{key}={value}: {}", d.message()),
            Ok(_) => panic!("{key}={value} must be refused"),
        }
    }
}

#[test]
fn linked_compartment_resources_must_be_verified() {
    let a = patient_a(ALL);
    let c = set(
        set(
            communication(),
            "partOf",
            json!([reference("Communication/thread-b")]),
        ),
        "encounter",
        reference("Encounter/enc-1"),
    );
    let approval = create(&a, &c).unwrap();
    assert_eq!(
        approval.references_to_verify(),
        &[
            Reference::new("Communication", "thread-b"),
            Reference::new("Encounter", "enc-1")
        ]
    );
    let p = policy();
    let b_thread = json!({"resourceType": "Communication", "id": "thread-b", "subject": reference("Patient/pat-12")});
    let a_thread = json!({"resourceType": "Communication", "id": "thread-b", "subject": reference("Patient/pat-1")});
    let thread = Reference::new("Communication", "thread-b");
    assert_denied(
        p.verify_referenced(&approval, &thread, Some(&b_thread)),
        DenialReason::NotInCompartment,
    );
    assert_denied(
        p.verify_referenced(&approval, &thread, None),
        DenialReason::NotInCompartment,
    );
    assert!(
        p.verify_referenced(&approval, &thread, Some(&a_thread))
            .is_ok()
    );
    // The fetched resource must be the referenced one.
    let elsewhere = json!({"resourceType": "Communication", "id": "other", "subject": reference("Patient/pat-1")});
    assert_denied(
        p.verify_referenced(&approval, &thread, Some(&elsewhere)),
        DenialReason::NotInCompartment,
    );
}

/// Resolves from a map; missing ids are absent; `broken` fails.
struct Store(HashMap<String, Value>);

#[async_trait]
impl ReferenceResolver for Store {
    async fn resolve(&self, reference: &Reference) -> Result<Option<Value>, ResolveError> {
        if reference.id == "broken" {
            return Err(ResolveError("upstream timeout".into()));
        }
        Ok(self.0.get(&reference.relative()).cloned())
    }
}

fn store() -> Store {
    Store(HashMap::from([
        (
            "MedicationRequest/mr-1".to_owned(),
            json!({"resourceType": "MedicationRequest", "id": "mr-1", "intent": "order", "subject": reference("Patient/pat-1")}),
        ),
        (
            "MedicationRequest/mr-b".to_owned(),
            json!({"resourceType": "MedicationRequest", "id": "mr-b", "intent": "order", "subject": reference("Patient/pat-12")}),
        ),
    ]))
}

#[tokio::test]
async fn authorize_write_resolves_every_reference() {
    let a = patient_a(ALL);
    let p = policy();
    let store = store();
    let go = |new: Value| {
        let p = p.clone();
        let a = a.clone();
        let store = &store;
        async move {
            p.authorize_write(
                &a,
                Interaction::Create,
                "MedicationRequest",
                &new,
                None,
                store,
            )
            .await
        }
    };
    assert!(go(medication_request()).await.is_ok());
    let b_prior = set(
        medication_request(),
        "priorPrescription",
        reference("MedicationRequest/mr-b"),
    );
    match go(b_prior).await {
        Err(WriteError::Denied(d)) => assert_eq!(d.reason(), DenialReason::NotInCompartment),
        other => panic!("{other:?}"),
    }
    let missing = set(
        medication_request(),
        "priorPrescription",
        reference("MedicationRequest/none"),
    );
    assert!(matches!(go(missing).await, Err(WriteError::Denied(_))));
    let broken = set(
        medication_request(),
        "priorPrescription",
        reference("MedicationRequest/broken"),
    );
    assert!(matches!(go(broken).await, Err(WriteError::Resolve(_))));
}

#[test]
fn delete_is_never_allowed() {
    for scopes in [
        "patient/*.cruds",
        "patient/Communication.d",
        "patient/*.*",
        "user/*.*",
    ] {
        let a = principal_from(json!({"patient": A, "fhirUser": "Patient/pat-1", "scope": scopes}));
        assert_denied(
            write(
                &a,
                Interaction::Delete,
                &communication(),
                Some(&communication()),
            ),
            DenialReason::DeleteNotAllowed,
        );
        assert_denied(
            policy().check_write(&a, Interaction::Delete, "Observation", &Value::Null, None),
            DenialReason::DeleteNotAllowed,
        );
    }
}

#[test]
fn writes_need_their_letter() {
    let c = communication();
    assert!(create(&patient_a("patient/Communication.c"), &c).is_ok());
    assert!(create(&patient_a("patient/Communication.write"), &c).is_ok());
    for scopes in [
        "patient/Communication.rs",
        "patient/Communication.ud",
        "patient/Observation.c",
        "system/*.cruds",
        "user/Communication.c",
    ] {
        assert_denied(create(&patient_a(scopes), &c), DenialReason::ScopeMissing);
    }
    let user =
        principal_from(json!({"fhirUser": "Patient/pat-1", "scope": "user/Communication.c"}));
    assert!(create(&user, &c).is_ok());
}

#[test]
fn granular_scopes_bind_writes() {
    let a = patient_a("patient/Communication.c?category=notification");
    assert_denied(create(&a, &communication()), DenialReason::FilterMismatch);
    let c = set(
        communication(),
        "category",
        json!([{"coding": [{"code": "notification"}]}]),
    );
    assert!(create(&a, &c).is_ok());
}

#[test]
fn granular_scopes_bind_the_current_resource_too() {
    let a = patient_a("patient/MedicationRequest.cu?category=community");
    let community = json!([{"coding": [{"code": "community"}]}]);
    let inpatient = json!([{"coding": [{"code": "inpatient"}]}]);
    let current = set(medication_request(), "category", community.clone());
    let new = set(current.clone(), "status", json!("active"));
    assert!(write(&a, Interaction::Update, &new, Some(&current)).is_ok());
    // Moving a resource into the granted category does not make it writable.
    let hidden = set(medication_request(), "category", inpatient);
    assert_denied(
        write(&a, Interaction::Update, &new, Some(&hidden)),
        DenialReason::FilterMismatch,
    );
}

#[test]
fn only_listed_types_are_writable() {
    let a = patient_a(ALL);
    for r in [
        observation("Patient/pat-1"),
        json!({"resourceType": "Patient", "id": "pat-1"}),
        json!({"resourceType": "Condition", "subject": reference("Patient/pat-1")}),
        json!({"resourceType": "AllergyIntolerance", "patient": reference("Patient/pat-1")}),
        json!({"resourceType": "Practitioner", "id": "dr-1"}),
        json!({"resourceType": "Device", "patient": reference("Patient/pat-1")}),
        json!({"resourceType": "Bundle", "type": "transaction"}),
        json!({"resourceType": "Consent", "patient": reference("Patient/pat-1")}),
    ] {
        for i in [Interaction::Create, Interaction::Update, Interaction::Patch] {
            assert_denied(write(&a, i, &r, Some(&r)), DenialReason::WriteNotAllowed);
        }
    }
    // Task only when a rule links it.
    assert_denied(
        policy().check_write(&a, Interaction::Create, "Task", &task(), None),
        DenialReason::WriteNotAllowed,
    );
    assert!(create(&a, &task()).is_ok());
}

#[test]
fn the_body_must_match_the_request() {
    let a = patient_a(ALL);
    assert_denied(
        policy().check_write(
            &a,
            Interaction::Create,
            "Appointment",
            &communication(),
            None,
        ),
        DenialReason::Malformed,
    );
    assert_denied(
        write(&a, Interaction::Read, &communication(), None),
        DenialReason::Malformed,
    );
    assert_denied(
        policy().check_write(&a, Interaction::Create, "Communication", &json!([]), None),
        DenialReason::Malformed,
    );
}

#[test]
fn appointments_are_booked_for_oneself() {
    let a = patient_a(ALL);
    for status in ["proposed", "pending", "booked"] {
        assert!(create(&a, &appointment(status)).is_ok(), "{status}");
    }
    for status in [
        "fulfilled",
        "arrived",
        "cancelled",
        "noshow",
        "entered-in-error",
    ] {
        assert_denied(
            create(&a, &appointment(status)),
            DenialReason::WriteRuleViolated,
        );
    }
    let with_b = set(
        appointment("booked"),
        "participant",
        json!([{"actor": reference("Patient/pat-1")}, {"actor": reference("Patient/pat-12")}]),
    );
    assert_denied(create(&a, &with_b), DenialReason::ForeignPatient);
    let only_b = set(
        appointment("booked"),
        "participant",
        json!([{"actor": reference("Patient/pat-12")}]),
    );
    assert_denied(create(&a, &only_b), DenialReason::ForeignPatient);
    let nobody = set(
        appointment("booked"),
        "participant",
        json!([{"actor": reference("Practitioner/dr-1")}]),
    );
    assert_denied(create(&a, &nobody), DenialReason::NotInCompartment);
    let logical = set(
        appointment("booked"),
        "participant",
        json!([{"actor": reference("Patient/pat-1")}, {"actor": {"identifier": {"value": "B-0012"}, "type": "Patient"}}]),
    );
    assert_denied(create(&a, &logical), DenialReason::WriteRuleViolated);
}

#[test]
fn appointments_may_only_be_cancelled() {
    let a = patient_a(ALL);
    let current = appointment("booked");
    let cancel = set(
        set(appointment("booked"), "status", json!("cancelled")),
        "cancelationReason",
        json!({"text": "cannot come"}),
    );
    for i in [Interaction::Update, Interaction::Patch] {
        assert!(write(&a, i, &cancel, Some(&current)).is_ok());
    }
    let cases: Vec<(Value, Value, DenialReason)> = vec![
        // No reason.
        (
            set(appointment("booked"), "status", json!("cancelled")),
            current.clone(),
            DenialReason::WriteRuleViolated,
        ),
        // Anything but cancelled.
        (
            set(
                appointment("booked"),
                "start",
                json!("2030-02-01T10:00:00Z"),
            ),
            current.clone(),
            DenialReason::WriteRuleViolated,
        ),
        (
            set(cancel.clone(), "status", json!("fulfilled")),
            current.clone(),
            DenialReason::WriteRuleViolated,
        ),
        // Cancelling while moving it.
        (
            set(cancel.clone(), "start", json!("2030-02-01T10:00:00Z")),
            current.clone(),
            DenialReason::WriteRuleViolated,
        ),
        // Cancelling while swapping the practitioner.
        (
            set(
                cancel.clone(),
                "participant",
                json!([{"actor": reference("Patient/pat-1"), "status": "accepted"}]),
            ),
            current.clone(),
            DenialReason::WriteRuleViolated,
        ),
        // Already over.
        (
            cancel.clone(),
            appointment("fulfilled"),
            DenialReason::WriteRuleViolated,
        ),
        (
            cancel.clone(),
            appointment("cancelled"),
            DenialReason::WriteRuleViolated,
        ),
        // B's appointment, whatever the new body says.
        (
            cancel.clone(),
            set(
                appointment("booked"),
                "participant",
                json!([{"actor": reference("Patient/pat-12")}]),
            ),
            DenialReason::NotInCompartment,
        ),
        // A shared appointment with B.
        (
            cancel.clone(),
            set(
                appointment("booked"),
                "participant",
                json!([{"actor": reference("Patient/pat-1")}, {"actor": reference("Patient/pat-12")}]),
            ),
            DenialReason::ForeignPatient,
        ),
        // Another id.
        (
            cancel.clone(),
            set(appointment("booked"), "id", json!("ap-2")),
            DenialReason::Malformed,
        ),
        (
            set(cancel.clone(), "id", Value::Null),
            current.clone(),
            DenialReason::Malformed,
        ),
    ];
    for (new, current, reason) in cases {
        assert_denied(write(&a, Interaction::Update, &new, Some(&current)), reason);
    }
    // Updates need the current resource (no update-as-create).
    assert_denied(
        write(&a, Interaction::Update, &cancel, None),
        DenialReason::WriteNotAllowed,
    );
}

#[test]
fn medication_requests_are_only_proposals_by_the_patient() {
    let a = patient_a(ALL);
    let approval = create(&a, &medication_request()).unwrap();
    assert_eq!(
        approval.references_to_verify(),
        &[Reference::new("MedicationRequest", "mr-1")]
    );
    assert!(create(&a, &set(medication_request(), "requester", Value::Null)).is_ok());
    for (key, value, reason) in [
        ("intent", json!("order"), DenialReason::WriteRuleViolated),
        (
            "intent",
            json!("original-order"),
            DenialReason::WriteRuleViolated,
        ),
        ("intent", Value::Null, DenialReason::WriteRuleViolated),
        (
            "status",
            json!("completed"),
            DenialReason::WriteRuleViolated,
        ),
        (
            "requester",
            reference("Practitioner/dr-1"),
            DenialReason::WriteRuleViolated,
        ),
        (
            "requester",
            reference("Patient/pat-12"),
            DenialReason::ForeignPatient,
        ),
        (
            "performer",
            reference("Practitioner/dr-1"),
            DenialReason::WriteRuleViolated,
        ),
        (
            "recorder",
            reference("Practitioner/dr-1"),
            DenialReason::WriteRuleViolated,
        ),
        (
            "subject",
            reference("Patient/pat-12"),
            DenialReason::ForeignPatient,
        ),
        (
            "subject",
            reference("Group/g-1"),
            DenialReason::NotInCompartment,
        ),
    ] {
        let r = create(&a, &set(medication_request(), key, value.clone()));
        match r {
            Err(d) => assert_eq!(d.reason(), reason, "{key}={value}: {}", d.message()),
            Ok(_) => panic!("{key}={value} must be refused"),
        }
    }
    // Updating: only one's own proposal, never an order.
    let current = medication_request();
    let new = set(medication_request(), "status", json!("active"));
    assert!(write(&a, Interaction::Update, &new, Some(&current)).is_ok());
    let order = set(medication_request(), "intent", json!("order"));
    assert_denied(
        write(&a, Interaction::Update, &new, Some(&order)),
        DenialReason::WriteRuleViolated,
    );
    let by_doctor = set(
        medication_request(),
        "requester",
        reference("Practitioner/dr-1"),
    );
    assert_denied(
        write(&a, Interaction::Patch, &new, Some(&by_doctor)),
        DenialReason::WriteRuleViolated,
    );
}

#[test]
fn service_requests_are_proposals_requested_by_the_patient() {
    let a = patient_a(ALL);
    assert!(create(&a, &service_request()).is_ok());
    for (key, value, reason) in [
        ("intent", json!("order"), DenialReason::WriteRuleViolated),
        ("requester", Value::Null, DenialReason::WriteRuleViolated),
        (
            "requester",
            reference("Practitioner/dr-1"),
            DenialReason::WriteRuleViolated,
        ),
        (
            "requester",
            reference("Patient/pat-12"),
            DenialReason::ForeignPatient,
        ),
        (
            "subject",
            reference("Patient/pat-12"),
            DenialReason::ForeignPatient,
        ),
        (
            "performer",
            json!([reference("Patient/pat-12")]),
            DenialReason::ForeignPatient,
        ),
    ] {
        assert_denied(create(&a, &set(service_request(), key, value)), reason);
    }
}

#[test]
fn tasks_are_for_and_by_the_patient() {
    let a = patient_a(ALL);
    assert!(create(&a, &task()).is_ok());
    for (key, value, reason) in [
        (
            "for",
            reference("Patient/pat-12"),
            DenialReason::ForeignPatient,
        ),
        ("for", Value::Null, DenialReason::NotInCompartment),
        ("requester", Value::Null, DenialReason::WriteRuleViolated),
        (
            "requester",
            reference("Practitioner/dr-1"),
            DenialReason::WriteRuleViolated,
        ),
        (
            "owner",
            reference("Patient/pat-12"),
            DenialReason::ForeignPatient,
        ),
    ] {
        assert_denied(create(&a, &set(task(), key, value)), reason);
    }
    let b_task = set(
        set(task(), "for", reference("Patient/pat-12")),
        "requester",
        reference("Patient/pat-12"),
    );
    assert_denied(
        write(&a, Interaction::Update, &task(), Some(&b_task)),
        DenialReason::NotInCompartment,
    );
}

#[test]
fn communications_cannot_be_edited() {
    let a = patient_a(ALL);
    let current = set(communication(), "id", json!("c-1"));
    assert_denied(
        write(&a, Interaction::Update, &current, Some(&current)),
        DenialReason::WriteNotAllowed,
    );
}

#[test]
fn a_proxy_writes_for_one_patient_at_a_time() {
    let proxy = principal_from(json!({"patient": ["pat-1", "pat-2"], "scope": ALL}));
    assert!(create(&proxy, &communication()).is_ok());
    let for_2 = set(
        set(communication(), "subject", reference("Patient/pat-2")),
        "sender",
        reference("Patient/pat-2"),
    );
    assert_eq!(create(&proxy, &for_2).unwrap().patient(), "pat-2");
    let mixed = set(communication(), "subject", reference("Patient/pat-2"));
    assert_denied(create(&proxy, &mixed), DenialReason::NotInCompartment);
}

#[test]
fn write_denials_do_not_echo_ids() {
    let a = patient_a(ALL);
    let d = create(
        &a,
        &set(communication(), "subject", reference("Patient/pat-12")),
    )
    .unwrap_err();
    assert!(!d.message().contains("pat-12"), "{}", d.message());
    let _: &Policy = &policy();
}
