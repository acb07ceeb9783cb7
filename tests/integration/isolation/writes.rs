//! Writes that point at B: creates whose references (subject, sender, recipient,
//! requester, participant, `partOf`, `basedOn`, `for`, ...) name B or B's resources,
//! updates and patches of B's resources or that move A's resources to B, deletes, and
//! the write rules (no `order` MedicationRequest, Appointments only to `cancelled`).
//! Every row also checks that nothing changed in the EHR and that no write request
//! reached it: the decision is taken before anything goes upstream.

use serde_json::{Value, json};

use super::{A, Attempt, Expect, Fixture, finish};

/// The first `ty` of `owner`'s for which `pred` holds.
pub fn find(fx: &Fixture, ty: &str, owner: &str, pred: impl Fn(&Value) -> bool) -> Option<String> {
    let ids = if owner == A { &fx.a_res } else { &fx.b_res };
    ids.get(ty)?
        .iter()
        .find(|id| pred(&fx.app.stored(ty, id)))
        .cloned()
}

fn r(reference: &str) -> Value {
    json!({ "reference": reference })
}

/// A valid message from A to A's care team.
pub fn message(fx: &Fixture) -> Value {
    json!({
        "resourceType": "Communication",
        "status": "in-progress",
        "subject": r("Patient/pat-1"),
        "sender": r("Patient/pat-1"),
        "recipient": [r(&fx.a_practitioner)],
        "sent": "2025-01-01T10:00:00Z",
        "payload": [{ "contentString": "A question about my results" }]
    })
}

fn with(mut v: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut v);
    v
}

pub fn attempts(fx: &Fixture) -> Vec<Attempt> {
    let mut rows = Vec::new();
    let b_thread = find(fx, "Communication", "pat-2", |c| c.get("partOf").is_none()).unwrap();
    let b_message = find(fx, "Communication", "pat-2", |c| c.get("partOf").is_some()).unwrap();
    let a_thread = find(fx, "Communication", A, |c| c.get("partOf").is_none()).unwrap();
    let b_mr = fx.b("MedicationRequest");
    let b_cond = fx.b("Condition");
    let b_enc = fx.b("Encounter");
    let booked = |c: &Value| c["status"] == "booked";
    let a_appt = find(fx, "Appointment", A, booked).unwrap();
    let b_appt = find(fx, "Appointment", "pat-2", booked).unwrap();
    let other_practitioner = (1..=10)
        .map(|n| format!("Practitioner/prac-{n}"))
        .find(|p| *p != fx.a_practitioner)
        .unwrap();
    let msg = message(fx);
    let create = |name: &str, ty: &str, body: Value| {
        Attempt::new(format!("create: {name}"), "POST", format!("/{ty}"))
            .json(&body)
            .expect(Expect::Forbidden)
    };
    let create_4xx = |name: &str, body: Value| {
        Attempt::new(format!("create: {name}"), "POST", "/Communication")
            .json(&body)
            .expect(Expect::Status(vec![400, 403, 422]))
    };

    // Communications.
    rows.extend([
        create("Communication with subject B", "Communication", with(msg.clone(), |m| m["subject"] = r("Patient/pat-2"))),
        create("Communication from B", "Communication", with(msg.clone(), |m| m["sender"] = r("Patient/pat-2"))),
        create("Communication to B", "Communication", with(msg.clone(), |m| m["recipient"] = json!([r("Patient/pat-2")]))),
        create("Communication to A's doctor and B", "Communication", with(msg.clone(), |m| m["recipient"] = json!([r(&fx.a_practitioner), r("Patient/pat-2")]))),
        create("Communication partOf B's thread", "Communication", with(msg.clone(), |m| m["partOf"] = json!([r(&format!("Communication/{b_thread}"))]))),
        create("Communication inResponseTo B's message", "Communication", with(msg.clone(), |m| m["inResponseTo"] = json!([r(&format!("Communication/{b_message}"))]))),
        create("Communication basedOn B's MedicationRequest", "Communication", with(msg.clone(), |m| m["basedOn"] = json!([r(&format!("MedicationRequest/{b_mr}"))]))),
        create("Communication about B's Condition", "Communication", with(msg.clone(), |m| m["about"] = json!([r(&format!("Condition/{b_cond}"))]))),
        create("Communication in B's Encounter", "Communication", with(msg.clone(), |m| m["encounter"] = r(&format!("Encounter/{b_enc}")))),
        create("Communication subject B by EHR URL", "Communication", with(msg.clone(), |m| m["subject"] = r(&format!("{}/Patient/pat-2", fx.up_fhir)))),
        create("Communication subject B by gateway URL", "Communication", with(msg.clone(), |m| m["subject"] = r(&format!("{}/Patient/pat-2", fx.gw)))),
        create("Communication subject B versioned", "Communication", with(msg.clone(), |m| m["subject"] = r("Patient/pat-2/_history/1"))),
        create("Communication sender B by gateway URL", "Communication", with(msg.clone(), |m| m["sender"] = r(&format!("{}/Patient/pat-2", fx.gw)))),
        create_4xx("Communication with a contained Patient linking B", with(msg.clone(), |m| {
            m["contained"] = json!([{ "resourceType": "Patient", "id": "p1", "link": [{ "other": r("Patient/pat-2"), "type": "seealso" }] }]);
            m["recipient"] = json!([r(&fx.a_practitioner), r("#p1")]);
        })),
        create_4xx("Communication with a contained Communication about B", with(msg.clone(), |m| {
            m["contained"] = json!([{ "resourceType": "Communication", "id": "c1", "status": "completed", "subject": r("Patient/pat-2") }]);
            m["partOf"] = json!([r("#c1")]);
        })),
        create_4xx("Communication to B by identifier", with(msg.clone(), |m| {
            m["recipient"] = json!([{ "identifier": { "system": fx.b_mrn.0, "value": fx.b_mrn.1 } }]);
        })),
        create_4xx("Communication subject lower-case patient/B", with(msg.clone(), |m| m["subject"] = r("patient/pat-2"))),
        create_4xx("Communication subject with dot segments", with(msg.clone(), |m| m["subject"] = r("Patient/pat-1/../pat-2"))),
        create_4xx("Communication subject conditional reference to B", with(msg.clone(), |m| {
            m["subject"] = r(&format!("Patient?identifier={}|{}", fx.b_mrn.0, fx.b_mrn.1));
        })),
        create("Communication with B in an extension", "Communication", with(msg.clone(), |m| {
            m["extension"] = json!([{ "url": "http://example.org/fhir/StructureDefinition/cc", "valueReference": r("Patient/pat-2") }]);
        })),
        create("Communication attaching B's document", "Communication", with(msg.clone(), |m| {
            m["payload"] = json!([{ "contentReference": r(&format!("DocumentReference/{}", fx.b("DocumentReference"))) }]);
        })),
        create("Communication with a note by B", "Communication", with(msg.clone(), |m| {
            m["note"] = json!([{ "authorReference": r("Patient/pat-2"), "text": "hi" }]);
        })),
        create("Communication about B at a foreign server", "Communication", with(msg.clone(), |m| {
            m["subject"] = r("https://evil.example/fhir/Patient/pat-2");
        })),
        create_4xx("Communication to a bare id typed Patient", with(msg.clone(), |m| {
            m["recipient"] = json!([{ "reference": "pat-2", "type": "Patient" }]);
        })),
        create_4xx("Communication subject with a trailing space", with(msg.clone(), |m| m["subject"] = r("Patient/pat-2 "))),
        Attempt::new("create: Communication If-None-Exist naming B", "POST", "/Communication")
            .json(&msg)
            .header("If-None-Exist", "subject=Patient/pat-2")
            .expect(Expect::Forbidden),
        Attempt::new("create: Communication If-None-Exist with B's id", "POST", "/Communication")
            .json(&msg)
            .header("If-None-Exist", format!("_id={b_thread}"))
            .expect(Expect::Status(vec![201, 400, 403, 412]))
            .may_change(),
        Attempt::new("create: Communication with subject B as application/json", "POST", "/Communication")
            .body("application/json", with(msg.clone(), |m| m["subject"] = r("Patient/pat-2")).to_string())
            .expect(Expect::Status(vec![403, 415])),
    ]);

    // Requests and orders.
    let sr = json!({
        "resourceType": "ServiceRequest", "status": "draft", "intent": "proposal",
        "code": { "text": "Referral to cardiology" },
        "subject": r("Patient/pat-1"), "requester": r("Patient/pat-1")
    });
    let mr = json!({
        "resourceType": "MedicationRequest", "status": "draft", "intent": "proposal",
        "medicationCodeableConcept": { "text": "refill" },
        "subject": r("Patient/pat-1"), "requester": r("Patient/pat-1")
    });
    let task = json!({
        "resourceType": "Task", "status": "requested", "intent": "proposal",
        "for": r("Patient/pat-1"), "requester": r("Patient/pat-1")
    });
    rows.extend([
        create("ServiceRequest for B", "ServiceRequest", with(sr.clone(), |v| v["subject"] = r("Patient/pat-2"))),
        create("ServiceRequest requested by B", "ServiceRequest", with(sr.clone(), |v| v["requester"] = r("Patient/pat-2"))),
        create("ServiceRequest basedOn B's MedicationRequest", "ServiceRequest", with(sr.clone(), |v| v["basedOn"] = json!([r(&format!("MedicationRequest/{b_mr}"))]))),
        create("ServiceRequest for B's Condition", "ServiceRequest", with(sr.clone(), |v| v["reasonReference"] = json!([r(&format!("Condition/{b_cond}"))]))),
        create("MedicationRequest for B", "MedicationRequest", with(mr.clone(), |v| v["subject"] = r("Patient/pat-2"))),
        create("MedicationRequest requested by B", "MedicationRequest", with(mr.clone(), |v| v["requester"] = r("Patient/pat-2"))),
        create("MedicationRequest renewing B's prescription", "MedicationRequest", with(mr.clone(), |v| v["priorPrescription"] = r(&format!("MedicationRequest/{b_mr}")))),
        create("MedicationRequest basedOn B's prescription", "MedicationRequest", with(mr.clone(), |v| v["basedOn"] = json!([r(&format!("MedicationRequest/{b_mr}"))]))),
        create("MedicationRequest as an order by A", "MedicationRequest", with(mr.clone(), |v| v["intent"] = json!("order"))),
        create("Task for B", "Task", with(task.clone(), |v| v["for"] = r("Patient/pat-2"))),
        create("Task focused on B's prescription", "Task", with(task.clone(), |v| v["focus"] = r(&format!("MedicationRequest/{b_mr}")))),
        create("Task owned by B", "Task", with(task.clone(), |v| v["owner"] = r("Patient/pat-2"))),
        create("Task basedOn B's prescription", "Task", with(task.clone(), |v| v["basedOn"] = json!([r(&format!("MedicationRequest/{b_mr}"))]))),
        create("Task requested by B", "Task", with(task.clone(), |v| v["requester"] = r("Patient/pat-2"))),
        create("Appointment with B", "Appointment", json!({
            "resourceType": "Appointment", "status": "proposed",
            "participant": [{ "actor": r("Patient/pat-2"), "status": "needs-action" }]
        })),
        create("Appointment with A and B", "Appointment", json!({
            "resourceType": "Appointment", "status": "proposed",
            "participant": [{ "actor": r("Patient/pat-1"), "status": "accepted" }, { "actor": r("Patient/pat-2"), "status": "needs-action" }]
        })),
        create("Appointment for B's Condition", "Appointment", json!({
            "resourceType": "Appointment", "status": "proposed",
            "reasonReference": [r(&format!("Condition/{b_cond}"))],
            "participant": [{ "actor": r("Patient/pat-1"), "status": "accepted" }]
        })),
        create("Observation about B", "Observation", json!({
            "resourceType": "Observation", "status": "final", "code": { "text": "weight" }, "subject": r("Patient/pat-2")
        })),
        create("Condition of B", "Condition", json!({
            "resourceType": "Condition", "code": { "text": "flu" }, "subject": r("Patient/pat-2")
        })),
        create("DocumentReference about B", "DocumentReference", json!({
            "resourceType": "DocumentReference", "status": "current", "subject": r("Patient/pat-2"),
            "content": [{ "attachment": { "contentType": "text/plain", "data": "aGk=" } }]
        })),
        Attempt::new("create: a Patient linked to B", "POST", "/Patient")
            .json(&json!({ "resourceType": "Patient", "link": [{ "other": r("Patient/pat-2"), "type": "seealso" }] }))
            .expect(Expect::Status(vec![403])),
    ]);

    // Updates.
    let a_msg_current = fx.app.stored("Communication", &a_thread);
    let b_msg_current = fx.app.stored("Communication", &b_thread);
    let a_appt_current = fx.app.stored("Appointment", &a_appt);
    let b_appt_current = fx.app.stored("Appointment", &b_appt);
    let put = |name: &str, path: String, body: Value, expect: Expect| {
        Attempt::new(format!("update: {name}"), "PUT", path)
            .json(&body)
            .expect(expect)
    };
    let hidden = || Expect::Status(vec![403, 404]);
    rows.extend([
        put(
            "B's thread, rewritten to point at A",
            format!("/Communication/{b_thread}"),
            with(b_msg_current.clone(), |v| {
                v["subject"] = r("Patient/pat-1");
                v["recipient"] = json!([r("Patient/pat-1")]);
            }),
            hidden(),
        ),
        put(
            "B's thread, unchanged",
            format!("/Communication/{b_thread}"),
            b_msg_current.clone(),
            hidden(),
        ),
        put(
            "A's thread moved to B",
            format!("/Communication/{a_thread}"),
            with(a_msg_current.clone(), |v| v["subject"] = r("Patient/pat-2")),
            Expect::Forbidden,
        ),
        put(
            "A's thread copied to B",
            format!("/Communication/{a_thread}"),
            with(a_msg_current.clone(), |v| {
                v["recipient"]
                    .as_array_mut()
                    .unwrap()
                    .push(r("Patient/pat-2"))
            }),
            Expect::Forbidden,
        ),
        put(
            "A's thread made part of B's",
            format!("/Communication/{a_thread}"),
            with(a_msg_current.clone(), |v| {
                v["partOf"] = json!([r(&format!("Communication/{b_thread}"))])
            }),
            Expect::Forbidden,
        ),
        put(
            "B's appointment cancelled",
            format!("/Appointment/{b_appt}"),
            with(b_appt_current.clone(), |v| {
                v["status"] = json!("cancelled");
                v["cancelationReason"] = json!({ "text": "no" });
            }),
            hidden(),
        ),
        put(
            "B's appointment taken over by A",
            format!("/Appointment/{b_appt}"),
            with(b_appt_current.clone(), |v| {
                v["participant"][0]["actor"] = r("Patient/pat-1")
            }),
            hidden(),
        ),
        put(
            "A's appointment cancelled and given to B",
            format!("/Appointment/{a_appt}"),
            with(a_appt_current.clone(), |v| {
                v["status"] = json!("cancelled");
                v["cancelationReason"] = json!({ "text": "no" });
                v["participant"][0]["actor"] = r("Patient/pat-2");
            }),
            Expect::Forbidden,
        ),
        put(
            "A's appointment marked arrived",
            format!("/Appointment/{a_appt}"),
            with(a_appt_current.clone(), |v| v["status"] = json!("arrived")),
            Expect::Forbidden,
        ),
        put(
            "A's appointment cancelled with another practitioner",
            format!("/Appointment/{a_appt}"),
            with(a_appt_current.clone(), |v| {
                v["status"] = json!("cancelled");
                v["cancelationReason"] = json!({ "text": "no" });
                v["participant"][1]["actor"] = r(&other_practitioner);
            }),
            Expect::Forbidden,
        ),
        put(
            "B's Patient",
            "/Patient/pat-2".into(),
            fx.app.stored("Patient", "pat-2"),
            hidden(),
        ),
        put(
            "B's Patient with A's content",
            "/Patient/pat-2".into(),
            with(fx.app.stored("Patient", A), |v| v["id"] = json!("pat-2")),
            hidden(),
        ),
        put(
            "A's Patient with B's id in the body",
            "/Patient/pat-1".into(),
            with(fx.app.stored("Patient", A), |v| v["id"] = json!("pat-2")),
            Expect::Status(vec![400, 403, 404, 422]),
        ),
        put(
            "A's Patient linked to B",
            "/Patient/pat-1".into(),
            with(
                fx.app.stored("Patient", A),
                |v| v["link"] = json!([{ "other": r("Patient/pat-2"), "type": "replaced-by" }]),
            ),
            Expect::Forbidden,
        ),
        put(
            "a new id (update as create) for B",
            "/Communication/new-for-b".into(),
            with(msg.clone(), |v| {
                v["id"] = json!("new-for-b");
                v["subject"] = r("Patient/pat-2");
            }),
            Expect::Status(vec![400, 403, 404, 405, 422]),
        ),
        put(
            "B's Observation",
            format!("/Observation/{}", fx.b("Observation")),
            fx.app.stored("Observation", &fx.b("Observation")),
            hidden(),
        ),
        put(
            "B's MedicationRequest",
            format!("/MedicationRequest/{b_mr}"),
            with(fx.app.stored("MedicationRequest", &b_mr), |v| {
                v["status"] = json!("cancelled")
            }),
            hidden(),
        ),
        Attempt::new(
            "update: conditional update naming B",
            "PUT",
            "/Communication?subject=Patient/pat-2",
        )
        .json(&msg)
        .expect(Expect::Status(vec![400, 403, 404, 405, 412])),
    ]);

    // Patches.
    let patch = |name: &str, path: String, ops: Value, expect: Expect| {
        Attempt::new(format!("patch: {name}"), "PATCH", path)
            .body("application/json-patch+json", ops.to_string())
            .expect(expect)
    };
    let a_comm = format!("/Communication/{a_thread}");
    let a_ap = format!("/Appointment/{a_appt}");
    rows.extend([
        patch("A's thread subject to B", a_comm.clone(), json!([{ "op": "replace", "path": "/subject/reference", "value": "Patient/pat-2" }]), Expect::Forbidden),
        patch("A's thread adds B as recipient", a_comm.clone(), json!([{ "op": "add", "path": "/recipient/-", "value": r("Patient/pat-2") }]), Expect::Forbidden),
        patch("A's thread made part of B's", a_comm.clone(), json!([{ "op": "add", "path": "/partOf", "value": [r(&format!("Communication/{b_thread}"))] }]), Expect::Forbidden),
        patch("A's thread, a test op first", a_comm.clone(), json!([
            { "op": "test", "path": "/id", "value": a_thread },
            { "op": "replace", "path": "/subject", "value": r("Patient/pat-2") }
        ]), Expect::Forbidden),
        patch("A's thread replaced whole by B's", a_comm.clone(), json!([{ "op": "replace", "path": "", "value": b_msg_current.clone() }]), Expect::Status(vec![400, 403, 404, 422])),
        patch("A's thread renamed to B's id", a_comm.clone(), json!([{ "op": "replace", "path": "/id", "value": b_thread }]), Expect::Status(vec![400, 403, 404, 422])),
        patch("B's thread status", format!("/Communication/{b_thread}"), json!([{ "op": "replace", "path": "/status", "value": "completed" }]), hidden()),
        patch("B's appointment cancelled", format!("/Appointment/{b_appt}"), json!([
            { "op": "replace", "path": "/status", "value": "cancelled" },
            { "op": "add", "path": "/cancelationReason", "value": { "text": "no" } }
        ]), hidden()),
        patch("A's appointment given to B", a_ap.clone(), json!([{ "op": "replace", "path": "/participant/0/actor/reference", "value": "Patient/pat-2" }]), Expect::Forbidden),
        patch("A's appointment adds B", a_ap.clone(), json!([{ "op": "add", "path": "/participant/-", "value": { "actor": r("Patient/pat-2"), "status": "accepted" } }]), Expect::Forbidden),
        patch("A's appointment marked arrived", a_ap.clone(), json!([{ "op": "replace", "path": "/status", "value": "arrived" }]), Expect::Forbidden),
        patch("B's Patient deactivated", "/Patient/pat-2".into(), json!([{ "op": "replace", "path": "/active", "value": false }]), hidden()),
        Attempt::new("patch: A's thread by merge patch to B", "PATCH", a_comm.clone())
            .body("application/merge-patch+json", json!({ "subject": r("Patient/pat-2") }).to_string())
            .expect(Expect::Status(vec![403, 415])),
    ]);

    // Deletes.
    let del = |name: &str, path: String, expect: Vec<u16>| {
        Attempt::new(format!("delete: {name}"), "DELETE", path).expect(Expect::Status(expect))
    };
    rows.extend([
        del(
            "B's thread",
            format!("/Communication/{b_thread}"),
            vec![403, 404, 405],
        ),
        del("A's own thread", a_comm.clone(), vec![403, 405]),
        del("B's Patient", "/Patient/pat-2".into(), vec![403, 404, 405]),
        del(
            "B's appointment",
            format!("/Appointment/{b_appt}"),
            vec![403, 404, 405],
        ),
        del(
            "conditional, naming B",
            "/Observation?patient=pat-2".into(),
            vec![400, 403, 404, 405],
        ),
        del(
            "conditional, B's messages",
            "/Communication?subject=Patient/pat-2".into(),
            vec![400, 403, 404, 405],
        ),
    ]);
    rows
}

#[tokio::test]
async fn writes_pointing_at_b_change_nothing() {
    let fx = Fixture::new().await;
    let rows = attempts(&fx);
    let mut failures = fx.run_all(&rows).await;

    // Controls, after the attacks: A's own valid writes work, so the refusals above are
    // not a blanket "patients cannot write".
    let control = Attempt::new(
        "control: A messages A's care team",
        "POST",
        "/Communication",
    )
    .json(&message(&fx))
    .expect(Expect::Status(vec![201]))
    .may_change();
    match fx.check(&control).await {
        Ok(r) => {
            let body = r.json().unwrap_or_default();
            if body["subject"]["reference"] != "Patient/pat-1" {
                failures.push(format!(
                    "[control] the created message is not A's: {}",
                    r.describe()
                ));
            }
        }
        Err(e) => failures.push(e),
    }
    let a_appt = find(&fx, "Appointment", A, |c| c["status"] == "booked").unwrap();
    let cancel = Attempt::new(
        "control: A cancels A's appointment",
        "PATCH",
        format!("/Appointment/{a_appt}"),
    )
    .body(
        "application/json-patch+json",
        json!([
            { "op": "replace", "path": "/status", "value": "cancelled" },
            { "op": "add", "path": "/cancelationReason", "value": { "text": "cannot make it" } }
        ])
        .to_string(),
    )
    .expect(Expect::Status(vec![200]))
    .may_change();
    if let Err(e) = fx.check(&cancel).await {
        failures.push(e);
    }
    finish("writes", rows.len(), &failures);
}
