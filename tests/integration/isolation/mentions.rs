//! B's data that mentions A. The R4 patient CompartmentDefinition puts a resource in A's
//! compartment when *any* of its links names A: an Observation about B that A performed
//! (a parent recording a child's weight), an allergy of B that A recorded, a message
//! about B that A sent, a group appointment of A and B, a record that moved from B to A.
//! Such resources exist in real EHRs; the EHR holds them here because the test puts them
//! there directly (with a system token), as the EHR's own staff would.
//!
//! Whatever the compartment says, nothing A receives may be about B or name B: these
//! are read by id (404, or A's data only), searched (no entry names B), and a record
//! that used to be B's shows none of its B versions in A's `_history`.

use serde_json::{Value, json};

use super::{Attempt, Expect, Fixture, finish};

fn r(reference: &str) -> Value {
    json!({ "reference": reference })
}

/// The resources about B (or naming B) that also name A, as the EHR would hold them.
fn resources(fx: &Fixture) -> Vec<(&'static str, Value)> {
    let a = r("Patient/pat-1");
    let b = r("Patient/pat-2");
    let practitioner = r(&fx.a_practitioner);
    vec![
        (
            "Observation",
            json!({ "resourceType": "Observation", "status": "final", "code": { "text": "weight" },
            "subject": b, "performer": [a] }),
        ),
        (
            "AllergyIntolerance",
            json!({ "resourceType": "AllergyIntolerance", "code": { "text": "peanut" },
            "patient": b, "recorder": a, "asserter": a }),
        ),
        (
            "Condition",
            json!({ "resourceType": "Condition", "code": { "text": "asthma" }, "subject": b, "asserter": a }),
        ),
        (
            "Communication",
            json!({ "resourceType": "Communication", "status": "completed",
            "subject": b, "sender": a, "recipient": [practitioner],
            "payload": [{ "contentString": "about my child" }] }),
        ),
        (
            "Communication",
            json!({ "resourceType": "Communication", "status": "completed",
            "subject": a, "sender": a, "recipient": [b], "payload": [{ "contentString": "to B" }] }),
        ),
        (
            "DocumentReference",
            json!({ "resourceType": "DocumentReference", "status": "current", "subject": b, "author": [a],
            "content": [{ "attachment": { "contentType": "text/plain", "data": "aGk=" } }] }),
        ),
        (
            "Appointment",
            json!({ "resourceType": "Appointment", "status": "booked",
            "start": "2030-01-01T09:00:00Z", "end": "2030-01-01T09:30:00Z",
            "participant": [{ "actor": a, "status": "accepted" }, { "actor": b, "status": "accepted" }] }),
        ),
        (
            "CareTeam",
            json!({ "resourceType": "CareTeam", "status": "active", "subject": b,
            "participant": [{ "member": a }] }),
        ),
        (
            "ServiceRequest",
            json!({ "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "subject": b, "performer": [a] }),
        ),
        (
            "Procedure",
            json!({ "resourceType": "Procedure", "status": "completed", "subject": b,
            "performer": [{ "actor": a }] }),
        ),
        (
            "Coverage",
            json!({ "resourceType": "Coverage", "status": "active", "beneficiary": b, "subscriber": a,
            "payor": [r("Organization/org-1")] }),
        ),
        (
            "Invoice",
            json!({ "resourceType": "Invoice", "status": "issued", "subject": b, "recipient": a }),
        ),
    ]
}

/// Creates `resource` in the EHR with a system token; returns its id.
async fn put_upstream(fx: &Fixture, ty: &str, resource: &Value, system: &str) -> String {
    let url = format!("{}/{ty}", fx.app.sandbox.fhir_base());
    let res = fx
        .send_url(
            "POST",
            &url,
            &[("Authorization".into(), format!("Bearer {system}"))],
            Some(&(
                "application/fhir+json".to_owned(),
                resource.to_string().into_bytes(),
            )),
        )
        .await;
    assert_eq!(
        res.status,
        201,
        "the sandbox refused {ty}: {}",
        res.describe()
    );
    res.json().unwrap()["id"].as_str().unwrap().to_owned()
}

/// How many attempts [`b_data_mentioning_a_stays_hidden`] makes.
pub const ATTEMPTS: usize = 41;

#[tokio::test]
async fn b_data_mentioning_a_stays_hidden() {
    let mut fx = Fixture::new().await;
    let system = fx
        .app
        .sandbox
        .auth()
        .issue_access_token("portico-system", "system/*.cruds", None);
    let mut created = Vec::new();
    for (ty, resource) in resources(&fx) {
        let id = put_upstream(&fx, ty, &resource, &system).await;
        fx.b_ids.insert(id.clone());
        created.push((ty, id));
    }
    // A record that was B's and is A's now (a correction): its B version stays B's.
    let mut moved = json!({ "resourceType": "Observation", "status": "final",
        "code": { "text": "misfiled result" }, "subject": r("Patient/pat-2") });
    let moved_id = put_upstream(&fx, "Observation", &moved, &system).await;
    moved["id"] = json!(moved_id);
    moved["subject"] = r("Patient/pat-1");
    let res = fx
        .send_url(
            "PUT",
            &format!("{}/Observation/{moved_id}", fx.app.sandbox.fhir_base()),
            &[("Authorization".into(), format!("Bearer {system}"))],
            Some(&(
                "application/fhir+json".to_owned(),
                moved.to_string().into_bytes(),
            )),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.describe());

    let mut rows = Vec::new();
    for (ty, id) in &created {
        rows.push(
            Attempt::get(format!("mention: read {ty}/{id}"), format!("/{ty}/{id}"))
                .expect(Expect::DeniedOrOnlyA),
        );
        rows.push(
            Attempt::get(
                format!("mention: vread {ty}/{id}"),
                format!("/{ty}/{id}/_history/1"),
            )
            .expect(Expect::DeniedOrOnlyA),
        );
    }
    for ty in [
        "Observation",
        "AllergyIntolerance",
        "Condition",
        "Communication",
        "DocumentReference",
        "Appointment",
        "CareTeam",
        "ServiceRequest",
        "Procedure",
        "Coverage",
        "Invoice",
    ] {
        rows.push(
            Attempt::get(
                format!("mention: search {ty}"),
                format!("/{ty}?_count=1000"),
            )
            .expect(Expect::OnlyA(0)),
        );
    }
    rows.extend([
        Attempt::get("mention: A's $everything", "/Patient/pat-1/$everything")
            .expect(Expect::OnlyA(1)),
        Attempt::get(
            "mention: search by performer A",
            "/Observation?performer=Patient/pat-1",
        )
        .expect(Expect::DeniedOrOnlyA),
        Attempt::get(
            "mention: search by sender A",
            "/Communication?sender=Patient/pat-1",
        )
        .expect(Expect::DeniedOrOnlyA),
        Attempt::get(
            "mention: read the moved record",
            format!("/Observation/{moved_id}"),
        )
        .expect(Expect::ResourceOfA),
        Attempt::get(
            "mention: vread the moved record's B version",
            format!("/Observation/{moved_id}/_history/1"),
        )
        .expect(Expect::Hidden(
            "/Observation/no-such-observation/_history/1".into(),
        )),
        Attempt::get(
            "mention: history of the moved record",
            format!("/Observation/{moved_id}/_history"),
        )
        .expect(Expect::DeniedOrOnlyA),
    ]);
    assert_eq!(rows.len(), ATTEMPTS);
    let failures = fx.run_all(&rows).await;
    finish("mentions", rows.len(), &failures);
}
