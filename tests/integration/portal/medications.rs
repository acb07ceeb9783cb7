//! Portal API: medications, refill eligibility and refill requests, against the
//! sandbox's generated prescriptions (per patient: `mr-N-1` has refills left and is due,
//! `mr-N-2` has none left, `mr-N-3` has expired, `mr-N-4`, when present, is a finished
//! acute course).

use std::time::Duration;

use portico_sandbox::FailureKind;
use serde_json::{Value, json};

use crate::support::TestApp;

/// A copy (without id) of one of the sandbox's dispenses of `prescription`, handed over
/// a minute ago.
fn fill_a_minute_ago(app: &TestApp, prescription: &str) -> Value {
    let reference = format!("MedicationRequest/{prescription}");
    let mut fill = app
        .all_stored("MedicationDispense")
        .into_iter()
        .find(|d| d["authorizingPrescription"][0]["reference"] == reference.as_str())
        .unwrap();
    fill.as_object_mut().unwrap().remove("id");
    fill["whenHandedOver"] = json!(minutes_ago(1));
    fill
}

/// The Tasks the gateway created (every Task in the sandbox is a gateway write).
fn tasks(app: &TestApp) -> Vec<Value> {
    app.all_stored("Task")
}

fn refill_path(id: &str) -> String {
    format!("/medications/{id}/refill-requests")
}

fn item<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
}

/// A gateway whose profile is `generic-r4` with another refill strategy.
async fn app_with_refills(strategy: &str) -> TestApp {
    TestApp::spawn_with_profile_edit("strategy = \"task\"", &format!("strategy = \"{strategy}\""))
        .await
}

#[tokio::test]
async fn medications_show_each_refill_situation_of_the_patients_own_prescriptions() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let list = app.api_get(&token, "/medications").await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let items = list.body["items"].as_array().unwrap();
    assert!(items.len() >= 3, "{}", list.body);
    for m in items {
        let id = m["id"].as_str().unwrap();
        assert!(
            id.starts_with("mr-1-"),
            "another patient's prescription: {id}"
        );
        assert!(
            m["medication"].as_str().is_some_and(|s| !s.is_empty()),
            "{m}"
        );
        assert!(m["prescriber"].is_string(), "{m}");
        assert!(m["dosage"].is_string(), "{m}");
    }

    let due = item(&list.body, "mr-1-1");
    assert_eq!(due["refill"]["eligible"], true, "{due}");
    assert!(due["refill"].get("reason").is_none());
    assert!(due["open_request"].is_null());
    let mr = app.stored("MedicationRequest", "mr-1-1");
    let allowed = mr["dispenseRequest"]["numberOfRepeatsAllowed"]
        .as_u64()
        .unwrap();
    let fills = app
        .all_stored("MedicationDispense")
        .into_iter()
        .filter(|d| d["authorizingPrescription"][0]["reference"] == "MedicationRequest/mr-1-1")
        .count() as u64;
    assert_eq!(due["refills_allowed"], allowed);
    assert_eq!(due["refills_used"], fills - 1);
    assert_eq!(due["refills_left"], allowed - (fills - 1));
    assert!(due["last_dispensed"].is_string());
    assert!(due["next_eligible"].is_string());
    assert_eq!(due["prescriber"], mr["requester"]["display"]);

    let none_left = item(&list.body, "mr-1-2");
    assert_eq!(none_left["refill"]["eligible"], false);
    assert_eq!(none_left["refill"]["reason"], "no_refills_left");
    assert_eq!(none_left["refills_left"], 0);
    assert!(none_left["refill"]["message"].is_string());

    let expired = item(&list.body, "mr-1-3");
    assert_eq!(expired["refill"]["reason"], "expired");
}

#[tokio::test]
async fn an_eligible_refill_creates_one_task_for_the_prescriber_and_a_repeat_is_refused() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let created = app
        .api_post(
            &token,
            &refill_path("mr-1-1"),
            &json!({"note": "running low", "pharmacy": "Main Street Pharmacy"}),
            Some("refill-1"),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["resource_type"], "Task");
    assert_eq!(created.body["status"], "requested");
    assert_eq!(created.body["medication_request_id"], "mr-1-1");
    assert_eq!(created.body["note"], "running low");
    assert!(created.body["medication"].is_string());

    let mr = app.stored("MedicationRequest", "mr-1-1");
    let all_tasks = tasks(&app);
    assert_eq!(all_tasks.len(), 1);
    let task = &all_tasks[0];
    assert_eq!(task["id"], created.body["id"]);
    assert_eq!(task["status"], "requested");
    assert_eq!(task["intent"], "order");
    assert_eq!(
        task["code"]["coding"][0]["system"],
        "http://hl7.org/fhir/CodeSystem/task-code"
    );
    assert_eq!(task["code"]["coding"][0]["code"], "fulfill");
    assert_eq!(task["code"]["text"], "Refill Request");
    assert_eq!(task["focus"]["reference"], "MedicationRequest/mr-1-1");
    assert_eq!(task["for"]["reference"], "Patient/pat-1");
    assert_eq!(task["requester"]["reference"], "Patient/pat-1");
    assert_eq!(task["owner"]["reference"], mr["requester"]["reference"]);
    assert!(task["authoredOn"].is_string());
    assert_eq!(task["note"][0]["text"], "running low");
    assert_eq!(
        task["note"][1]["text"],
        "Preferred pharmacy: Main Street Pharmacy"
    );
    assert_eq!(task["identifier"][0]["system"], "urn:ietf:rfc:3986");

    // Another request (another key) for the same prescription.
    let again = app
        .api_post(&token, &refill_path("mr-1-1"), &json!({}), Some("refill-2"))
        .await;
    assert_eq!(again.status, 422, "{:?}", again.body);
    assert_eq!(again.code(), "refill_not_eligible");
    assert_eq!(again.body["details"]["reason"], "already_requested");
    assert!(again.body["details"]["message"].is_string());
    assert_eq!(tasks(&app).len(), 1);

    // The listing shows the open request, and the refill requests list it.
    let list = app.api_get(&token, "/medications").await;
    let due = item(&list.body, "mr-1-1");
    assert_eq!(due["refill"]["reason"], "already_requested");
    assert_eq!(due["open_request"]["id"], created.body["id"]);
    assert_eq!(due["open_request"]["resource_type"], "Task");
    let requests = app.api_get(&token, "/refill-requests").await;
    assert_eq!(requests.status, 200, "{:?}", requests.body);
    let items = requests.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", requests.body);
    assert_eq!(items[0]["id"], created.body["id"]);
    assert_eq!(items[0]["status"], "requested");
    assert_eq!(items[0]["medication"], due["medication"]);

    // Another patient sees neither the request nor an open request.
    let other = app
        .api_get(&app.portal_token("pat-2"), "/refill-requests")
        .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.body["items"], json!([]));
}

#[tokio::test]
async fn exhausted_expired_and_finished_prescriptions_are_refused_with_their_reason() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    for (id, reason) in [("mr-1-2", "no_refills_left"), ("mr-1-3", "expired")] {
        let answer = app
            .api_post(&token, &refill_path(id), &json!({}), None)
            .await;
        assert_eq!(answer.status, 422, "{id}: {:?}", answer.body);
        assert_eq!(answer.code(), "refill_not_eligible");
        assert_eq!(answer.body["details"]["reason"], reason, "{id}");
        assert_eq!(answer.headers["content-type"], "application/problem+json");
    }
    // A finished acute course, where the patient has one.
    if app
        .sandbox
        .store()
        .read("MedicationRequest", "mr-1-4")
        .is_ok()
    {
        let answer = app
            .api_post(&token, &refill_path("mr-1-4"), &json!({}), None)
            .await;
        assert_eq!(answer.body["details"]["reason"], "not_active");
    }
    assert_eq!(app.sandbox.faults().requests_for("POST", "Task"), 0);
    assert!(tasks(&app).is_empty());
}

#[tokio::test]
async fn a_refill_too_soon_names_the_next_eligible_date() {
    let app = TestApp::spawn().await;
    // The patient just picked up a fill of mr-1-1.
    let fill = fill_a_minute_ago(&app, "mr-1-1");
    let today = fill["whenHandedOver"].as_str().unwrap().to_owned();
    app.sandbox
        .store()
        .create("MedicationDispense", fill, None)
        .unwrap();
    let answer = app
        .api_post(
            &app.portal_token("pat-1"),
            &refill_path("mr-1-1"),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.body["details"]["reason"], "too_soon");
    let next = answer.body["details"]["next_eligible"].as_str().unwrap();
    assert!(next > today.as_str(), "{next} after {today}");
    assert!(tasks(&app).is_empty());
}

#[tokio::test]
async fn another_patients_prescription_is_not_found_and_nothing_is_created() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    for id in ["mr-2-1", "mr-3-1", "no-such-mr", "mr-1-1%2F..%2Fmr-2-1"] {
        let answer = app
            .api_post(&token, &refill_path(id), &json!({}), None)
            .await;
        assert_eq!(answer.status, 404, "{id}: {:?}", answer.body);
        assert_eq!(answer.code(), "not_found");
    }
    assert_eq!(app.sandbox.faults().requests_for("POST", "Task"), 0);
    assert!(tasks(&app).is_empty());
}

#[tokio::test]
async fn the_same_key_twice_makes_one_task_and_reusing_it_for_another_body_is_refused() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let body = json!({"note": "please"});
    let first = app
        .api_post(&token, &refill_path("mr-1-1"), &body, Some("key-1"))
        .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let second = app
        .api_post(&token, &refill_path("mr-1-1"), &body, Some("key-1"))
        .await;
    assert_eq!(second.status, 201, "{:?}", second.body);
    assert_eq!(second.body["id"], first.body["id"]);
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(app.sandbox.faults().requests_for("POST", "Task"), 1);
    assert_eq!(tasks(&app).len(), 1);

    let reused = app
        .api_post(
            &token,
            &refill_path("mr-1-1"),
            &json!({"note": "other"}),
            Some("key-1"),
        )
        .await;
    assert_eq!(reused.status, 422);
    assert_eq!(reused.code(), "idempotency_key_reused");
    // The same key and body for another prescription is another request.
    let elsewhere = app
        .api_post(&token, &refill_path("mr-1-2"), &body, Some("key-1"))
        .await;
    assert_eq!(elsewhere.code(), "idempotency_key_reused");
    assert_eq!(tasks(&app).len(), 1);
}

#[tokio::test]
async fn concurrent_requests_for_one_prescription_make_one_task() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let path = refill_path("mr-1-1");
    let empty = json!({});
    let (a, b) = tokio::join!(
        app.api_post(&token, &path, &empty, Some("c-1")),
        app.api_post(&token, &path, &empty, Some("c-2")),
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 422], "{:?} {:?}", a.body, b.body);
    let refused = if a.status == 422 { &a } else { &b };
    assert_eq!(refused.body["details"]["reason"], "already_requested");
    assert_eq!(tasks(&app).len(), 1);
}

#[tokio::test]
async fn bad_refill_bodies_are_refused_before_anything_is_sent() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let path = refill_path("mr-1-1");
    for (body, code) in [
        (json!({"note": "x".repeat(501)}), "text_too_long"),
        (json!({"pharmacy": "x".repeat(201)}), "text_too_long"),
        (json!({"note": 5}), "invalid_body"),
        (json!({"notes": "typo"}), "invalid_body"),
        (json!(["not", "an", "object"]), "invalid_body"),
        // serde would read a struct from an array of its fields.
        (json!(["a note", "a pharmacy"]), "invalid_body"),
        (json!({"note": "bad\u{0}char"}), "invalid_request"),
    ] {
        let answer = app.api_post(&token, &path, &body, None).await;
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.body);
        assert_eq!(answer.code(), code, "{body}");
    }
    let not_json = app
        .http
        .post(app.url(&format!("/api/v1{path}")))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{note:")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let text = app
        .http
        .post(app.url(&format!("/api/v1{path}")))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    // 500 characters (not bytes) is fine.
    let ok = app
        .api_post(&token, &path, &json!({"note": "é".repeat(500)}), None)
        .await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    assert_eq!(app.sandbox.faults().requests_for("POST", "Task"), 1);
}

#[tokio::test]
async fn a_refill_is_not_judged_on_stale_cached_data() {
    let app = TestApp::spawn_configured(|config| {
        config.cache.patient_ttl = Duration::from_millis(200);
        config.resilience.max_attempts = 1;
    })
    .await;
    let token = app.portal_token("pat-1");
    // Cache the prescription in the patient's partition through the facade.
    let read = app
        .http
        .get(app.url("/fhir/MedicationRequest/mr-1-1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.sandbox
        .faults()
        .inject(FailureKind::Status503, 1.0, Some("/MedicationRequest"));
    let answer = app
        .api_post(&token, &refill_path("mr-1-1"), &json!({}), None)
        .await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert_eq!(answer.code(), "upstream_unavailable");
    assert_eq!(app.sandbox.faults().requests_for("POST", "Task"), 0);
}

#[tokio::test]
async fn the_medication_request_strategy_creates_a_proposal() {
    let app = app_with_refills("medication-request").await;
    let token = app.portal_token("pat-1");
    let created = app
        .api_post(
            &token,
            &refill_path("mr-1-1"),
            &json!({"note": "thanks"}),
            Some("p-1"),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["resource_type"], "MedicationRequest");
    let id = created.body["id"].as_str().unwrap();
    let proposal = app.stored("MedicationRequest", id);
    let prior = app.stored("MedicationRequest", "mr-1-1");
    assert_eq!(proposal["intent"], "proposal");
    assert_eq!(proposal["status"], "active");
    assert_eq!(
        proposal["priorPrescription"]["reference"],
        "MedicationRequest/mr-1-1"
    );
    assert_eq!(
        proposal["medicationReference"],
        prior["medicationReference"]
    );
    assert_eq!(proposal["subject"]["reference"], "Patient/pat-1");
    assert_eq!(proposal["requester"]["reference"], "Patient/pat-1");
    assert_eq!(proposal["note"][0]["text"], "thanks");

    let again = app
        .api_post(&token, &refill_path("mr-1-1"), &json!({}), Some("p-2"))
        .await;
    assert_eq!(
        again.body["details"]["reason"], "already_requested",
        "{:?}",
        again.body
    );
    // The proposal is a request, not a medication.
    let list = app.api_get(&token, "/medications").await;
    assert!(
        list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != id)
    );
    assert_eq!(item(&list.body, "mr-1-1")["open_request"]["id"], id);
    let requests = app.api_get(&token, "/refill-requests").await;
    assert_eq!(requests.body["items"][0]["id"], id, "{}", requests.body);
    assert_eq!(requests.body["items"][0]["medication_request_id"], "mr-1-1");
    assert_eq!(requests.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.sandbox.faults().requests_for("POST", "Task"), 0);
}

#[tokio::test]
async fn the_communication_strategy_writes_to_the_prescriber() {
    let app = app_with_refills("communication").await;
    let token = app.portal_token("pat-1");
    let created = app
        .api_post(
            &token,
            &refill_path("mr-1-1"),
            &json!({"note": "out on Friday"}),
            Some("m-1"),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["resource_type"], "Communication");
    let message = app.stored("Communication", created.body["id"].as_str().unwrap());
    let prior = app.stored("MedicationRequest", "mr-1-1");
    assert_eq!(message["status"], "in-progress");
    assert_eq!(message["topic"]["text"], "Prescription Refill");
    assert_eq!(message["about"][0]["reference"], "MedicationRequest/mr-1-1");
    assert_eq!(message["subject"]["reference"], "Patient/pat-1");
    assert_eq!(message["sender"]["reference"], "Patient/pat-1");
    assert_eq!(
        message["recipient"][0]["reference"],
        prior["requester"]["reference"]
    );
    assert!(
        message["payload"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["contentString"] == "out on Friday")
    );
    let again = app
        .api_post(&token, &refill_path("mr-1-1"), &json!({}), Some("m-2"))
        .await;
    assert_eq!(
        again.body["details"]["reason"], "already_requested",
        "{:?}",
        again.body
    );
    let requests = app.api_get(&token, "/refill-requests").await;
    let items = requests.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", requests.body);
    assert_eq!(items[0]["id"], created.body["id"]);
    assert_eq!(items[0]["status"], "requested");
    assert_eq!(app.sandbox.faults().requests_for("POST", "Task"), 0);
}

/// `portico_portal::medications::PATIENT_WIDE_BOUND`: the most dispenses the listing
/// uses from its one patient-wide search.
const PATIENT_WIDE_BOUND: usize = 200;

/// Completed dispenses in the store per prescription reference.
fn completed_fills(app: &TestApp, prescription: &str) -> u64 {
    app.all_stored("MedicationDispense")
        .into_iter()
        .filter(|d| d["status"] == "completed")
        .filter(|d| {
            d["authorizingPrescription"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["reference"] == prescription))
        })
        .count() as u64
}

#[tokio::test]
async fn the_listing_costs_one_round_trip_and_matches_dispenses_and_requests_locally() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    assert_eq!(app.api_get(&token, "/me").await.status, 200);
    let list = app
        .api_get_timed(&token, "/medications", Duration::from_millis(200))
        .await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let faults = app.sandbox.faults();
    // Prescriptions, the patient's dispenses and open refill Tasks, at the same time.
    assert_eq!(faults.requests(), 3, "{:?}", faults.stats());
    assert_eq!(faults.requests_for("GET", "MedicationDispense"), 1);
    assert_eq!(faults.requests_for("GET", "Task"), 1);
    assert_eq!(faults.max_in_flight(), 3, "{:?}", faults.stats());
    // Each prescription counts only its own fills.
    for m in list.body["items"].as_array().unwrap() {
        let fills = completed_fills(
            &app,
            &format!("MedicationRequest/{}", m["id"].as_str().unwrap()),
        );
        assert_eq!(m["refills_used"], fills.saturating_sub(1), "{m}");
    }

    // A refill request made after the listing was cached shows in the next listing.
    let created = app
        .api_post(
            &token,
            &refill_path("mr-1-1"),
            &json!({}),
            Some("after-list"),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let again = app.api_get(&token, "/medications").await;
    let due = item(&again.body, "mr-1-1");
    assert_eq!(due["refill"]["reason"], "already_requested", "{due}");
    assert_eq!(due["open_request"]["id"], created.body["id"]);
    // Another patient's listing knows nothing of it.
    let other = app
        .api_get(&app.portal_token("pat-2"), "/medications")
        .await;
    assert!(
        other.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["open_request"].is_null()),
        "{}",
        other.body
    );
}

#[tokio::test]
async fn more_dispenses_than_the_patient_wide_bound_are_counted_in_full() {
    let app = TestApp::spawn().await;
    let store = app.sandbox.store();
    let template = app
        .all_stored("MedicationDispense")
        .into_iter()
        .find(|d| d["authorizingPrescription"][0]["reference"] == "MedicationRequest/mr-1-3")
        .expect("a fill of mr-1-3");
    // More completed fills of the expired prescription than one patient-wide search
    // may carry...
    for _ in 0..=PATIENT_WIDE_BOUND {
        let mut fill = template.clone();
        fill.as_object_mut().unwrap().remove("id");
        store.create("MedicationDispense", fill, None).unwrap();
    }
    // ...and, last, a fill of mr-1-1 picked up a minute ago.
    store
        .create(
            "MedicationDispense",
            fill_a_minute_ago(&app, "mr-1-1"),
            None,
        )
        .unwrap();

    let token = app.portal_token("pat-1");
    app.sandbox.faults().reset_stats();
    let list = app.api_get(&token, "/medications").await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    // The patient-wide answer was not whole, which its first page shows (a total and a
    // next link past the bound): no second page of it was fetched, and the
    // prescriptions' own dispenses were searched after it, 100 a page.
    let listed_fills: u64 = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            completed_fills(
                &app,
                &format!("MedicationRequest/{}", m["id"].as_str().unwrap()),
            )
        })
        .sum();
    assert_eq!(
        app.sandbox
            .faults()
            .requests_for("GET", "MedicationDispense"),
        1 + listed_fills.div_ceil(100).max(1),
        "{:?}",
        app.sandbox.faults().stats()
    );
    // Every fill counts, wherever the EHR put it in its answer.
    for m in list.body["items"].as_array().unwrap() {
        let fills = completed_fills(
            &app,
            &format!("MedicationRequest/{}", m["id"].as_str().unwrap()),
        );
        assert_eq!(m["refills_used"], fills.saturating_sub(1), "{m}");
    }
    assert!(
        item(&list.body, "mr-1-3")["refills_used"].as_u64().unwrap() >= PATIENT_WIDE_BOUND as u64
    );
    assert_eq!(item(&list.body, "mr-1-3")["refill"]["reason"], "expired");
    let due = item(&list.body, "mr-1-1");
    assert_eq!(due["refill"]["reason"], "too_soon", "{due}");
    // The dashboard agrees (it lists the same medications).
    let d = app.api_get(&token, "/dashboard").await;
    let on_dashboard = d.body["medications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "mr-1-1")
        .expect("mr-1-1 on the dashboard");
    assert_eq!(on_dashboard["refill"], due["refill"]);
}

/// An open refill request (Task strategy) of pat-1 for the prescription `focus`.
fn open_refill_task(focus: &str) -> Value {
    json!({
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
        "focus": {"reference": focus},
        "for": {"reference": "Patient/pat-1"}
    })
}

#[tokio::test]
async fn more_open_tasks_than_the_patient_wide_bound_still_find_each_prescriptions_request() {
    let app = TestApp::spawn().await;
    let store = app.sandbox.store();
    // Open refill requests of a prescription that is not listed, more than one
    // patient-wide search may carry...
    for _ in 0..=PATIENT_WIDE_BOUND {
        store
            .create(
                "Task",
                open_refill_task("MedicationRequest/not-listed"),
                None,
            )
            .unwrap();
    }
    // ...and, last, one of mr-1-1.
    store
        .create("Task", open_refill_task("MedicationRequest/mr-1-1"), None)
        .unwrap();
    let token = app.portal_token("pat-1");
    app.sandbox.faults().reset_stats();
    let list = app.api_get(&token, "/medications").await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    // The Tasks of the listed prescriptions were searched after the patient-wide
    // answer, whose first page already showed it was not whole (no second page).
    assert_eq!(
        app.sandbox.faults().requests_for("GET", "Task"),
        2,
        "{:?}",
        app.sandbox.faults().stats()
    );
    let due = item(&list.body, "mr-1-1");
    assert_eq!(due["refill"]["reason"], "already_requested", "{due}");
    assert_eq!(due["open_request"]["resource_type"], "Task");
    assert!(item(&list.body, "mr-1-2")["open_request"].is_null());
}

/// `portico_portal::context::MAX_COLLECTED`: the most matches the gateway collects from
/// one search.
const MAX_COLLECTED: usize = 1000;

fn minutes_ago(minutes: i64) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    portico_sandbox::store::instant(now_ms - minutes * 60_000)
}

#[tokio::test]
async fn a_pharmacy_history_longer_than_the_gateway_reads_is_never_decided_on() {
    let app = TestApp::spawn().await;
    let store = app.sandbox.store();
    // A prescription of pat-1's allowing many refills...
    let mut long = app.stored("MedicationRequest", "mr-1-1");
    long["id"] = json!("mr-long");
    long["dispenseRequest"]["numberOfRepeatsAllowed"] = json!(5000);
    store
        .update("MedicationRequest", "mr-long", long, None)
        .unwrap();
    // ...with more fills than one search is collected to, the latest one last.
    let template = app
        .all_stored("MedicationDispense")
        .into_iter()
        .find(|d| d["authorizingPrescription"][0]["reference"] == "MedicationRequest/mr-1-1")
        .unwrap();
    let fill = |when: &str| {
        let mut fill = template.clone();
        fill.as_object_mut().unwrap().remove("id");
        fill["authorizingPrescription"] = json!([{"reference": "MedicationRequest/mr-long"}]);
        fill["whenHandedOver"] = json!(when);
        fill
    };
    for _ in 0..MAX_COLLECTED {
        store
            .create("MedicationDispense", fill("2020-01-01T10:00:00Z"), None)
            .unwrap();
    }
    store
        .create("MedicationDispense", fill(&minutes_ago(1)), None)
        .unwrap();

    let token = app.portal_token("pat-1");
    let list = app.api_get(&token, "/medications").await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    // Not "eligible" on the first thousand fills: the history is unavailable, and the
    // counts the gateway could not make are not shown.
    let long = item(&list.body, "mr-long");
    assert_eq!(long["refill"]["eligible"], false, "{long}");
    assert_eq!(long["refill"]["reason"], "history_unavailable", "{long}");
    assert_eq!(
        long["refill"]["message"],
        "the pharmacy history could not be read completely; call the clinic"
    );
    assert!(long["refills_used"].is_null(), "{long}");
    assert!(long["refills_left"].is_null(), "{long}");
    assert!(long["last_dispensed"].is_null(), "{long}");
    // The one search covered every listed prescription: none is offered a refill.
    for m in list.body["items"].as_array().unwrap() {
        assert_eq!(m["refill"]["eligible"], false, "{m}");
    }

    // The write path refuses the same way, and nothing is created.
    let refused = app
        .api_post(&token, &refill_path("mr-long"), &json!({}), Some("long-1"))
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.code(), "refill_not_eligible");
    assert_eq!(refused.body["details"]["reason"], "history_unavailable");
    assert!(tasks(&app).is_empty());
    // A prescription whose own history is whole is still served.
    let ok = app
        .api_post(&token, &refill_path("mr-1-1"), &json!({}), Some("short-1"))
        .await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
}

#[tokio::test]
async fn an_open_task_past_the_first_two_hundred_of_the_listed_prescriptions_is_found() {
    let app = TestApp::spawn().await;
    let store = app.sandbox.store();
    // More open refill requests of a listed prescription than a listing's page of
    // prescriptions (and than the patient-wide search carries)...
    for _ in 0..=PATIENT_WIDE_BOUND {
        store
            .create("Task", open_refill_task("MedicationRequest/mr-1-3"), None)
            .unwrap();
    }
    // ...and, last, one of mr-1-1: the focus= search finds it.
    store
        .create("Task", open_refill_task("MedicationRequest/mr-1-1"), None)
        .unwrap();
    let token = app.portal_token("pat-1");
    let list = app.api_get(&token, "/medications").await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let due = item(&list.body, "mr-1-1");
    assert_eq!(due["refill"]["reason"], "already_requested", "{due}");
    assert_eq!(due["open_request"]["resource_type"], "Task");
}

#[tokio::test]
async fn a_heavy_messager_is_not_offered_a_second_refill_message() {
    let app = app_with_refills("communication").await;
    let store = app.sandbox.store();
    // As many open message threads as one search is collected to...
    for i in 0..MAX_COLLECTED {
        store
            .create(
                "Communication",
                json!({
                    "resourceType": "Communication",
                    "status": "in-progress",
                    "topic": {"text": format!("question {i}")},
                    "subject": {"reference": "Patient/pat-1"},
                    "recipient": [{"reference": "Patient/pat-1"}],
                    "sent": "2024-01-01T10:00:00Z"
                }),
                None,
            )
            .unwrap();
    }
    // ...and, last, an open refill request of mr-1-1.
    store
        .create(
            "Communication",
            json!({
                "resourceType": "Communication",
                "status": "in-progress",
                "topic": {"text": "Prescription Refill"},
                "subject": {"reference": "Patient/pat-1"},
                "sender": {"reference": "Patient/pat-1"},
                "about": [{"reference": "MedicationRequest/mr-1-1"}],
                "sent": minutes_ago(5),
                "payload": [{"contentString": "Refill request"}]
            }),
            None,
        )
        .unwrap();
    let before = app.all_stored("Communication").len();
    let token = app.portal_token("pat-1");
    let list = app.api_get(&token, "/medications").await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let due = item(&list.body, "mr-1-1");
    assert_eq!(due["refill"]["reason"], "history_unavailable", "{due}");
    // The dispenses were whole: their counts are shown, and a prescription without
    // refills left is still told so.
    assert!(due["refills_used"].is_u64(), "{due}");
    assert_eq!(
        item(&list.body, "mr-1-2")["refill"]["reason"],
        "no_refills_left"
    );
    let refused = app
        .api_post(&token, &refill_path("mr-1-1"), &json!({}), Some("heavy-1"))
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.body["details"]["reason"], "history_unavailable");
    assert_eq!(
        app.all_stored("Communication").len(),
        before,
        "no second request"
    );
}

#[tokio::test]
async fn with_nothing_listed_the_patient_wide_searches_are_not_waited_for() {
    let app = TestApp::spawn_configured(|config| {
        config.portal.deadline_ms = 1000;
    })
    .await;
    let store = app.sandbox.store();
    for id in store.ids("MedicationRequest") {
        if id.starts_with("mr-1-") {
            store.delete("MedicationRequest", &id, None).unwrap();
        }
    }
    let token = app.portal_token("pat-1");
    assert_eq!(app.api_get(&token, "/me").await.status, 200);
    // The dispense search would answer long after the request's deadline.
    app.sandbox
        .faults()
        .set(portico_sandbox::FaultConfig {
            latency_ms: 10_000,
            path_filter: Some("/MedicationDispense".to_owned()),
            ..portico_sandbox::FaultConfig::default()
        })
        .unwrap();
    let list = app.api_get(&token, "/medications").await;
    app.sandbox.faults().clear();
    // Answered when the prescriptions showed nothing to list, not at the deadline.
    assert_eq!(list.status, 200, "{:?}", list.body);
    assert_eq!(list.body["items"], json!([]));
}

/// Against a mock EHR: answers that look whole but are not.
mod not_whole_answers {
    use portico::config::EhrProfile;
    use serde_json::{Value, json};
    use wiremock::MockServer;

    use super::refill_path;
    use crate::support::{TestApp, fixture, fixture_with, mount_json};

    fn bundle(resources: Vec<Value>) -> Value {
        json!({"resourceType": "Bundle", "type": "searchset", "total": resources.len(),
            "entry": resources.into_iter().map(|r| json!({"resource": r, "search": {"mode": "match"}})).collect::<Vec<_>>()})
    }

    /// An active order of pat-1's with refills left, valid this year and next.
    fn prescription() -> Value {
        let year: i32 = chrono::Utc::now().format("%Y").to_string().parse().unwrap();
        fixture_with(
            "ehr/medication-request-refills-left.json",
            &[
                ("this_year", &year.to_string()),
                ("next_year", &(year + 1).to_string()),
            ],
        )
    }

    /// A gateway whose EHR answers dispense searches with `dispenses`.
    async fn app_with_dispenses(mock: &MockServer, dispenses: Value) -> TestApp {
        let prescriptions = bundle(vec![prescription()]);
        mount_json(mock, "GET", "/fhir/MedicationRequest", prescriptions).await;
        mount_json(mock, "GET", "/fhir/MedicationRequest/mr-w", prescription()).await;
        let no_tasks = fixture("ehr/searchset-empty.json");
        mount_json(mock, "GET", "/fhir/Task", no_tasks).await;
        mount_json(mock, "GET", "/fhir/MedicationDispense", dispenses).await;
        TestApp::spawn_on_mock(mock, EhrProfile::GenericR4).await
    }

    #[tokio::test]
    async fn a_dispense_answer_that_is_not_a_bundle_or_flags_a_cap_decides_nothing() {
        let capped = fixture("ehr/searchset-capped.json");
        for (case, dispenses) in [
            // A 200 that is not a Bundle: the policy replaces it with an empty searchset.
            ("not a bundle", json!({"resourceType": "Basic", "id": "x"})),
            ("capped", capped),
        ] {
            let mock = MockServer::start().await;
            let app = app_with_dispenses(&mock, dispenses).await;
            let token = app.portal_token("pat-1");
            let list = app.api_get(&token, "/medications").await;
            assert_eq!(list.status, 200, "{case}: {:?}", list.body);
            let m = super::item(&list.body, "mr-w");
            assert_eq!(m["refill"]["reason"], "history_unavailable", "{case}: {m}");
            assert!(m["refills_left"].is_null(), "{case}: {m}");
            let refused = app
                .api_post(&token, &refill_path("mr-w"), &json!({}), Some("w-1"))
                .await;
            assert_eq!(refused.status, 422, "{case}: {:?}", refused.body);
            assert_eq!(
                refused.body["details"]["reason"], "history_unavailable",
                "{case}"
            );
            // Nothing was written to the EHR.
            let writes = mock
                .received_requests()
                .await
                .unwrap_or_default()
                .iter()
                .filter(|r| r.method.as_str() != "GET")
                .count();
            assert_eq!(writes, 0, "{case}");
        }
    }
}
