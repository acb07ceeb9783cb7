//! Portal API: appointments (list, slot search, book, cancel, reschedule) against the
//! sandbox EHR, whose store enforces "a booked Appointment needs a free Slot".

use chrono::{Duration, Utc};
use portico_sandbox::FailureKind;
use serde_json::{Value, json};

use crate::support::TestApp;

fn slot_status(app: &TestApp, id: &str) -> String {
    app.stored("Slot", id)["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The stored Appointments on `slot` with `status`.
fn on_slot(app: &TestApp, slot: &str, status: &str) -> Vec<Value> {
    app.all_stored("Appointment")
        .into_iter()
        .filter(|a| a["status"] == status)
        .filter(|a| a["slot"][0]["reference"] == format!("Slot/{slot}"))
        .collect()
}

/// Free slot ids from the portal's own search.
async fn free_slots(app: &TestApp, token: &str) -> Vec<String> {
    let answer = app.api_get(token, "/appointments/slots").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let ids: Vec<String> = answer.body["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.len() >= 3, "the sandbox has free slots");
    ids
}

async fn book(
    app: &TestApp,
    token: &str,
    slot: &str,
    key: Option<&str>,
) -> crate::support::ApiAnswer {
    app.api_post(
        token,
        "/appointments",
        &json!({"slot_id": slot, "reason": "check-up"}),
        key,
    )
    .await
}

/// A booked upcoming appointment of `patient`, from the generated data.
fn booked_of(app: &TestApp, patient: &str) -> Value {
    app.all_stored("Appointment")
        .into_iter()
        .find(|a| {
            a["status"] == "booked"
                && a["participant"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["actor"]["reference"] == format!("Patient/{patient}"))
        })
        .expect("the generator books upcoming appointments")
}

#[tokio::test]
async fn lists_upcoming_and_past_appointments_in_order() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let now = Utc::now();
    let upcoming = app.api_get(&token, "/appointments?when=upcoming").await;
    assert_eq!(upcoming.status, 200, "{:?}", upcoming.body);
    let default = app.api_get(&token, "/appointments").await;
    assert_eq!(default.body["appointments"], upcoming.body["appointments"]);
    let past = app.api_get(&token, "/appointments?when=past").await;
    assert_eq!(past.status, 200);
    let starts = |list: &Value| -> Vec<chrono::DateTime<Utc>> {
        list["appointments"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["start"].as_str())
            .map(|s| s.parse().unwrap())
            .collect()
    };
    let up = starts(&upcoming.body);
    let down = starts(&past.body);
    assert!(!up.is_empty() && !down.is_empty(), "{upcoming:?} {past:?}");
    assert!(up.iter().all(|t| *t >= now - Duration::minutes(1)));
    assert!(down.iter().all(|t| *t <= now + Duration::minutes(1)));
    assert!(up.windows(2).all(|w| w[0] <= w[1]), "soonest first");
    assert!(down.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let first = &upcoming.body["appointments"][0];
    assert_eq!(first["status"], "booked");
    assert_eq!(first["cancelable"], true);
    assert!(first["practitioner"].is_string(), "{first}");
    assert!(first["version"].is_string());
    assert_eq!(upcoming.body["stale"], false);
    // Only pat-1's appointments.
    let mine: Vec<String> = app
        .all_stored("Appointment")
        .iter()
        .filter(|a| a.to_string().contains("\"Patient/pat-1\""))
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    for a in upcoming.body["appointments"].as_array().unwrap() {
        assert!(mine.contains(&a["id"].as_str().unwrap().to_owned()));
    }
    let bad = app.api_get(&token, "/appointments?when=tomorrow").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.code(), "invalid_request");
}

#[tokio::test]
async fn another_patients_appointment_is_not_found_and_unchanged() {
    let app = TestApp::spawn().await;
    let theirs = booked_of(&app, "pat-2");
    let id = theirs["id"].as_str().unwrap();
    let version = app.sandbox.store().read("Appointment", id).unwrap().version;
    let token = app.portal_token("pat-1");
    let read = app.api_get(&token, &format!("/appointments/{id}")).await;
    assert_eq!(read.status, 404);
    let cancel = app
        .api_post(
            &token,
            &format!("/appointments/{id}/cancel"),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(cancel.status, 404, "{:?}", cancel.body);
    assert_eq!(cancel.code(), "not_found");
    let slot = free_slots(&app, &token).await.remove(0);
    let posts_before = app.sandbox.faults().requests_for("POST", "Appointment");
    let reschedule = app
        .api_post(
            &token,
            &format!("/appointments/{id}/reschedule"),
            &json!({"slot_id": slot}),
            None,
        )
        .await;
    assert_eq!(reschedule.status, 404, "{:?}", reschedule.body);
    // Nothing changed upstream: no new booking, their appointment untouched.
    assert_eq!(
        app.sandbox.faults().requests_for("POST", "Appointment"),
        posts_before
    );
    assert_eq!(app.sandbox.faults().requests_for("PATCH", "Appointment"), 0);
    assert_eq!(slot_status(&app, &slot), "free");
    assert_eq!(
        app.sandbox.store().read("Appointment", id).unwrap().version,
        version
    );
    // The owner can read it.
    let own = app
        .api_get(&app.portal_token("pat-2"), &format!("/appointments/{id}"))
        .await;
    assert_eq!(own.status, 200);
}

#[tokio::test]
async fn slot_search_is_bounded_and_returns_free_slots_only() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let today = Utc::now().date_naive();
    let day = |d: i64| (today + Duration::days(d)).to_string();
    for (query, why) in [
        (
            format!("start={}&end={}", day(5), day(2)),
            "end before start",
        ),
        (
            format!("start={}&end={}", day(1), day(60)),
            "longer than 31 days",
        ),
        (format!("start={}&end={}", day(-3), day(2)), "in the past"),
        ("start=soon".to_owned(), "not a date"),
        ("practitioner=a%20b".to_owned(), "bad id"),
        ("colour=blue".to_owned(), "unknown parameter"),
    ] {
        let answer = app
            .api_get(&token, &format!("/appointments/slots?{query}"))
            .await;
        assert_eq!(answer.status, 400, "{why}: {:?}", answer.body);
        assert_eq!(answer.code(), "invalid_request", "{why}");
    }
    let answer = app
        .api_get(
            &token,
            &format!("/appointments/slots?start={}&end={}", day(1), day(3)),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let slots = answer.body["slots"].as_array().unwrap();
    assert!(!slots.is_empty());
    // The sandbox has busy slots in this window too (one in five, plus booked ones).
    let window_end = (today + Duration::days(4))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    for s in slots {
        let id = s["id"].as_str().unwrap();
        assert_eq!(slot_status(&app, id), "free", "{s}");
        let start: chrono::DateTime<Utc> = s["start"].as_str().unwrap().parse().unwrap();
        assert!(start > Utc::now() && start < window_end);
        assert!(s["practitioner"].is_string(), "{s}");
    }
    // By practitioner: only that practitioner's schedule.
    let name = slots[0]["practitioner"].as_str().unwrap();
    let practitioner = app
        .sandbox
        .store()
        .ids("Practitioner")
        .into_iter()
        .find(|p| {
            let v = app.stored("Practitioner", p);
            v.to_string()
                .contains(name.split_whitespace().last().unwrap())
        })
        .expect("the practitioner");
    let answer = app
        .api_get(
            &token,
            &format!("/appointments/slots?practitioner={practitioner}"),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let slots = answer.body["slots"].as_array().unwrap();
    assert!(!slots.is_empty());
    assert!(slots.iter().all(|s| s["practitioner"] == name));
}

#[tokio::test]
async fn booking_a_free_slot_makes_it_busy_and_a_second_booking_conflicts() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let slot = free_slots(&app, &token).await.remove(0);
    let booked = book(&app, &token, &slot, None).await;
    assert_eq!(booked.status, 201, "{:?}", booked.body);
    assert_eq!(booked.body["status"], "booked");
    assert_eq!(booked.body["reason"], "check-up");
    assert_eq!(booked.body["cancelable"], true);
    let id = booked.body["id"].as_str().unwrap().to_owned();
    assert_eq!(slot_status(&app, &slot), "busy");
    let stored = app.stored("Appointment", &id);
    assert_eq!(
        stored["participant"][0]["actor"]["reference"],
        "Patient/pat-1"
    );
    assert_eq!(stored["participant"][0]["status"], "accepted");
    assert!(
        stored["participant"].as_array().unwrap().len() >= 2,
        "the schedule's actors"
    );
    let upcoming = app.api_get(&token, "/appointments?when=upcoming").await;
    assert!(
        upcoming.body["appointments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str())
    );
    let again = book(&app, &token, &slot, None).await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert_eq!(again.code(), "slot_unavailable");
    let other = book(&app, &app.portal_token("pat-2"), &slot, None).await;
    assert_eq!(other.code(), "slot_unavailable");
    assert_eq!(on_slot(&app, &slot, "booked").len(), 1);
    // Bad bodies are 400, never a 500.
    let long = app
        .api_post(
            &token,
            "/appointments",
            &json!({"slot_id": slot, "reason": "x".repeat(501)}),
            None,
        )
        .await;
    assert_eq!(long.status, 400);
    let unknown = app
        .api_post(&token, "/appointments", &json!({"slot": slot}), None)
        .await;
    assert_eq!(unknown.status, 400);
    let missing = book(&app, &token, "no-such-slot", None).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn the_same_key_books_once_and_replays() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let slot = free_slots(&app, &token).await.remove(0);
    let posts = || app.sandbox.faults().requests_for("POST", "Appointment");
    let before = posts();
    let first = book(&app, &token, &slot, Some("book-1")).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let second = book(&app, &token, &slot, Some("book-1")).await;
    assert_eq!(second.status, 201, "{:?}", second.body);
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(second.body["id"], first.body["id"]);
    assert_eq!(posts() - before, 1, "exactly one upstream create");
    assert_eq!(on_slot(&app, &slot, "booked").len(), 1);
    let other_body = app
        .api_post(
            &token,
            "/appointments",
            &json!({"slot_id": slot, "reason": "something else"}),
            Some("book-1"),
        )
        .await;
    assert_eq!(other_body.status, 422);
    assert_eq!(other_body.code(), "idempotency_key_reused");
}

#[tokio::test]
async fn two_patients_racing_for_a_slot_one_wins() {
    let app = TestApp::spawn().await;
    let (t1, t2) = (app.portal_token("pat-1"), app.portal_token("pat-2"));
    let slot = free_slots(&app, &t1).await.remove(0);
    let (a, b) = tokio::join!(
        book(&app, &t1, &slot, Some("race")),
        book(&app, &t2, &slot, Some("race"))
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{:?} {:?}", a.body, b.body);
    let loser = if a.status == 409 { &a } else { &b };
    assert_eq!(loser.code(), "slot_unavailable");
    assert_eq!(on_slot(&app, &slot, "booked").len(), 1);
}

#[tokio::test]
async fn the_ehr_is_the_arbiter_when_the_gateway_lock_is_bypassed() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let slot = free_slots(&app, &token).await.remove(0);
    // Warm any cached read of the Slot through the facade (same principal).
    let warm = app
        .http
        .get(format!("{}/Slot/{slot}", app.fhir()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    // Another system books it directly in the EHR.
    app.sandbox
        .store()
        .create(
            "Appointment",
            json!({"resourceType": "Appointment", "status": "booked",
                "slot": [{"reference": format!("Slot/{slot}")}],
                "participant": [{"actor": {"reference": "Patient/pat-2"}, "status": "accepted"}]}),
            None,
        )
        .unwrap();
    assert_eq!(slot_status(&app, &slot), "busy");
    let answer = book(&app, &token, &slot, None).await;
    assert_eq!(answer.status, 409, "{:?}", answer.body);
    assert_eq!(answer.code(), "slot_unavailable");
    assert_eq!(on_slot(&app, &slot, "booked").len(), 1);
}

#[tokio::test]
async fn cancel_frees_the_slot_and_cannot_happen_twice() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let slot = free_slots(&app, &token).await.remove(0);
    let booked = book(&app, &token, &slot, None).await;
    let id = booked.body["id"].as_str().unwrap().to_owned();
    let path = format!("/appointments/{id}/cancel");
    let cancelled = app
        .api_post(
            &token,
            &path,
            &json!({"reason": "feeling better"}),
            Some("c1"),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(cancelled.body["cancelable"], false);
    let stored = app.stored("Appointment", &id);
    assert_eq!(stored["status"], "cancelled");
    let reason = &stored["cancelationReason"];
    assert_eq!(
        reason["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason"
    );
    assert_eq!(reason["coding"][0]["code"], "pat");
    assert_eq!(reason["text"], "feeling better");
    assert_eq!(slot_status(&app, &slot), "free");
    // The same key replays; without a key it is refused.
    let replay = app
        .api_post(
            &token,
            &path,
            &json!({"reason": "feeling better"}),
            Some("c1"),
        )
        .await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let twice = app.api_post(&token, &path, &json!({}), None).await;
    assert_eq!(twice.status, 422, "{:?}", twice.body);
    assert_eq!(twice.code(), "not_cancelable");
    // The freed slot can be booked again.
    assert_eq!(
        book(&app, &app.portal_token("pat-2"), &slot, None)
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn cancel_with_update_strategy_puts_the_whole_resource() {
    let app = TestApp::spawn_with_profile_edit("cancel = \"patch\"", "cancel = \"update\"").await;
    let token = app.portal_token("pat-1");
    let slot = free_slots(&app, &token).await.remove(0);
    let id = book(&app, &token, &slot, None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled = app
        .api_post(
            &token,
            &format!("/appointments/{id}/cancel"),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(app.sandbox.faults().requests_for("PUT", "Appointment"), 1);
    assert_eq!(app.sandbox.faults().requests_for("PATCH", "Appointment"), 0);
    assert_eq!(app.stored("Appointment", &id)["status"], "cancelled");
    assert_eq!(slot_status(&app, &slot), "free");
}

#[tokio::test]
async fn reschedule_books_the_new_slot_and_cancels_the_old() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let slots = free_slots(&app, &token).await;
    let old = book(&app, &token, &slots[0], None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = app
        .api_post(
            &token,
            &format!("/appointments/{old}/reschedule"),
            &json!({"slot_id": slots[1]}),
            Some("r1"),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let new = answer.body["appointment"]["id"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(answer.body["appointment"]["status"], "booked");
    assert_eq!(answer.body["previous"]["status"], "cancelled");
    assert_eq!(app.stored("Appointment", new)["status"], "booked");
    assert_eq!(app.stored("Appointment", &old)["status"], "cancelled");
    assert_eq!(slot_status(&app, &slots[0]), "free");
    assert_eq!(slot_status(&app, &slots[1]), "busy");
}

#[tokio::test]
async fn reschedule_whose_cancel_fails_is_undone() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let slots = free_slots(&app, &token).await;
    let old = book(&app, &token, &slots[0], None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Every write to the old appointment fails (reads go by search and still work).
    app.sandbox.faults().inject(
        FailureKind::Status500,
        1.0,
        Some(&format!("/Appointment/{old}")),
    );
    let answer = app
        .api_post(
            &token,
            &format!("/appointments/{old}/reschedule"),
            &json!({"slot_id": slots[1]}),
            None,
        )
        .await;
    app.sandbox.faults().clear();
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_eq!(answer.code(), "reschedule_failed");
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("nothing changed")
    );
    // Upstream matches: the old one still booked, the new one cancelled, its slot free.
    assert_eq!(app.stored("Appointment", &old)["status"], "booked");
    assert_eq!(slot_status(&app, &slots[0]), "busy");
    assert_eq!(slot_status(&app, &slots[1]), "free");
    let new = answer.body["details"]["new"]["id"].as_str().unwrap();
    assert_eq!(app.stored("Appointment", new)["status"], "cancelled");
    assert!(on_slot(&app, &slots[1], "booked").is_empty());
}

#[tokio::test]
async fn reschedule_whose_undo_fails_says_both_are_booked() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let slots = free_slots(&app, &token).await;
    let old = book(&app, &token, &slots[0], None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Every instance-level Appointment write fails; creates (type level) still work.
    app.sandbox
        .faults()
        .inject(FailureKind::Status500, 1.0, Some("/Appointment/"));
    let answer = app
        .api_post(
            &token,
            &format!("/appointments/{old}/reschedule"),
            &json!({"slot_id": slots[1]}),
            None,
        )
        .await;
    app.sandbox.faults().clear();
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_eq!(answer.code(), "reschedule_incomplete");
    let details = &answer.body["details"];
    assert_eq!(details["original"]["id"], old.as_str());
    assert_eq!(details["original"]["status"], "booked");
    assert_eq!(details["new"]["status"], "booked");
    let new = details["new"]["id"].as_str().unwrap();
    // Exactly what the answer says.
    assert_eq!(app.stored("Appointment", &old)["status"], "booked");
    assert_eq!(app.stored("Appointment", new)["status"], "booked");
    assert_eq!(slot_status(&app, &slots[1]), "busy");
}

#[tokio::test]
async fn a_failing_ehr_never_yields_a_false_booking() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let slots = free_slots(&app, &token).await;
    let count = || app.all_stored("Appointment").len();
    // 500 before anything is stored: an error, nothing booked; a retry books once.
    let before = count();
    app.sandbox
        .faults()
        .inject(FailureKind::Status500, 1.0, Some("/fhir/Appointment"));
    let failed = book(&app, &token, &slots[0], Some("k1")).await;
    app.sandbox.faults().clear();
    assert!(
        matches!(failed.status.as_u16(), 502 | 503),
        "{:?}",
        failed.body
    );
    assert!(failed.code().starts_with("upstream") || failed.code() == "outcome_unknown");
    assert_eq!(count(), before);
    assert_eq!(slot_status(&app, &slots[0]), "free");
    let retry = book(&app, &token, &slots[0], Some("k1")).await;
    assert_eq!(retry.status, 201, "{:?}", retry.body);
    assert_eq!(count(), before + 1);

    // The create lands but its answer (and the reconciling search) is garbage: never a
    // success; the retry with the same key finds the booking instead of making another.
    app.sandbox
        .faults()
        .inject(FailureKind::MalformedJson, 1.0, Some("/fhir/Appointment"));
    let unknown = book(&app, &token, &slots[1], Some("k2")).await;
    app.sandbox.faults().clear();
    assert!(!unknown.status.is_success(), "{:?}", unknown.body);
    assert_eq!(on_slot(&app, &slots[1], "booked").len(), 1, "it did land");
    let retry = book(&app, &token, &slots[1], Some("k2")).await;
    assert_eq!(retry.status, 201, "{:?}", retry.body);
    assert_eq!(
        retry.body["id"],
        on_slot(&app, &slots[1], "booked")[0]["id"]
    );
    assert_eq!(on_slot(&app, &slots[1], "booked").len(), 1);
}

// ---------------------------------------------------------------------------------
// Cerner-style reschedule: one JSON Patch of the same Appointment (`patch-slot`)

/// A gateway whose profile is generic-r4 with `reschedule = "patch-slot"`.
async fn patch_slot_app() -> TestApp {
    TestApp::spawn_with_profile_edit(
        "reschedule = \"book-then-cancel\"",
        "reschedule = \"patch-slot\"",
    )
    .await
}

fn reschedule_reasons(appointment: &Value) -> Vec<String> {
    appointment["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["url"] == "https://fhir-ehr.cerner.com/r4/StructureDefinition/reschedule-reason"
        })
        .filter_map(|e| e["valueCodeableConcept"]["text"].as_str())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn patch_slot_reschedule_keeps_the_id_and_moves_the_booking() {
    let app = patch_slot_app().await;
    let token = app.portal_token("pat-1");
    let slots = free_slots(&app, &token).await;
    let booked = book(&app, &token, &slots[0], None).await;
    assert_eq!(booked.status, 201, "{:?}", booked.body);
    let id = booked.body["id"].as_str().unwrap().to_owned();
    let old_start = booked.body["start"].clone();
    let path = format!("/appointments/{id}/reschedule");
    let body = json!({"slot_id": slots[1], "reason": "a conflict at work"});
    let answer = app.api_post(&token, &path, &body, Some("move-1")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // Same appointment, new time; the answer shows the old time too.
    assert_eq!(answer.body["appointment"]["id"], id.as_str());
    assert_eq!(answer.body["appointment"]["status"], "booked");
    assert_eq!(
        answer.body["appointment"]["start"],
        app.stored("Slot", &slots[1])["start"]
    );
    assert_eq!(answer.body["previous"]["id"], id.as_str());
    assert_eq!(answer.body["previous"]["start"], old_start);
    // Upstream: one PATCH of the appointment; no second booking, no cancel.
    assert_eq!(app.sandbox.faults().requests_for("PATCH", "Appointment"), 1);
    assert_eq!(app.sandbox.faults().requests_for("POST", "Appointment"), 1);
    let stored = app.stored("Appointment", &id);
    assert_eq!(stored["status"], "booked");
    assert_eq!(
        stored["slot"],
        json!([{"reference": format!("Slot/{}", slots[1])}])
    );
    assert_eq!(stored["start"], app.stored("Slot", &slots[1])["start"]);
    assert_eq!(reschedule_reasons(&stored), ["a conflict at work"]);
    assert_eq!(
        stored["participant"][0]["actor"]["reference"],
        "Patient/pat-1"
    );
    assert_eq!(slot_status(&app, &slots[0]), "free");
    assert_eq!(slot_status(&app, &slots[1]), "busy");
    // The same key replays the first answer.
    let replay = app.api_post(&token, &path, &body, Some("move-1")).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.body, answer.body);
    // A retry whose first answer was lost (another key) finds the move made.
    let again = app.api_post(&token, &path, &body, Some("move-2")).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["appointment"]["id"], id.as_str());
    assert!(again.body["previous"].is_null());
    assert_eq!(app.sandbox.faults().requests_for("PATCH", "Appointment"), 1);
}

#[tokio::test]
async fn patch_slot_on_another_patients_appointment_is_not_found_and_unchanged() {
    let app = patch_slot_app().await;
    let theirs = booked_of(&app, "pat-2");
    let id = theirs["id"].as_str().unwrap();
    let before = app.sandbox.store().read("Appointment", id).unwrap().version;
    let token = app.portal_token("pat-1");
    let slot = free_slots(&app, &token).await.remove(0);
    let answer = app
        .api_post(
            &token,
            &format!("/appointments/{id}/reschedule"),
            &json!({"slot_id": slot}),
            None,
        )
        .await;
    assert_eq!(answer.status, 404, "{:?}", answer.body);
    assert_eq!(app.sandbox.faults().requests_for("PATCH", "Appointment"), 0);
    assert_eq!(
        app.sandbox.store().read("Appointment", id).unwrap().version,
        before
    );
    assert_eq!(slot_status(&app, &slot), "free");
}

#[tokio::test]
async fn patch_slot_to_a_taken_slot_conflicts_and_changes_nothing() {
    let app = patch_slot_app().await;
    let token = app.portal_token("pat-1");
    let slots = free_slots(&app, &token).await;
    let id = book(&app, &token, &slots[0], None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/appointments/{id}/reschedule");
    // Taken through the gateway: refused before anything is sent.
    let other = book(&app, &app.portal_token("pat-2"), &slots[1], None).await;
    assert_eq!(other.status, 201);
    let answer = app
        .api_post(&token, &path, &json!({"slot_id": slots[1]}), None)
        .await;
    assert_eq!(answer.status, 409, "{:?}", answer.body);
    assert_eq!(answer.code(), "slot_unavailable");
    assert_eq!(app.sandbox.faults().requests_for("PATCH", "Appointment"), 0);

    // Taken directly in the EHR after the gateway cached the slot as free: the gateway
    // asks the EHR (uncached) whether an appointment holds the slot, and refuses.
    let warm = app
        .http
        .get(format!("{}/Slot/{}", app.fhir(), slots[2]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    app.sandbox
        .store()
        .create(
            "Appointment",
            json!({"resourceType": "Appointment", "status": "booked",
                "slot": [{"reference": format!("Slot/{}", slots[2])}],
                "participant": [{"actor": {"reference": "Patient/pat-3"}, "status": "accepted"}]}),
            None,
        )
        .unwrap();
    let answer = app
        .api_post(&token, &path, &json!({"slot_id": slots[2]}), None)
        .await;
    assert_eq!(answer.status, 409, "{:?}", answer.body);
    assert_eq!(answer.code(), "slot_unavailable");
    // Refused before anything was sent.
    assert_eq!(app.sandbox.faults().requests_for("PATCH", "Appointment"), 0);
    let stored = app.stored("Appointment", &id);
    assert_eq!(
        stored["slot"],
        json!([{"reference": format!("Slot/{}", slots[0])}])
    );
    assert!(reschedule_reasons(&stored).is_empty());
    assert_eq!(slot_status(&app, &slots[0]), "busy");
}

// ---------------------------------------------------------------------------------
// Epic/IHE-style scheduling: `Appointment/$find` + `$book` (`book = "operations"`),
// against a mock EHR (the sandbox implements neither operation)

mod operations {
    use chrono::{Duration, Utc};
    use portico::config::EhrProfile;
    use serde_json::{Value, json};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use crate::support::{TestApp, fixture, fixture_with, mount_json};

    /// The date `days` from today.
    fn day(days: i64) -> String {
        (Utc::now() + Duration::days(days))
            .format("%Y-%m-%d")
            .to_string()
    }

    /// 10:00 UTC `days` from today: when the offers of the fixtures start.
    fn at(days: i64) -> String {
        format!("{}T10:00:00Z", day(days))
    }

    /// An Epic answer from `fixtures/ehr/`, its offers dated from today.
    fn epic_answer(name: &str) -> Value {
        fixture_with(name, &[("in_2_days", &day(2)), ("in_3_days", &day(3))])
    }

    /// `$find` offers two proposed appointments to pat-1 (in three days, then in two) and
    /// one naming pat-2; plain Appointment searches find nothing.
    async fn mount_find(mock: &MockServer) {
        let offers = epic_answer("ehr/epic-find-appointments.json");
        mount_json(mock, "POST", "/fhir/Appointment/$find", offers).await;
        let nothing = fixture("ehr/searchset-empty.json");
        mount_json(mock, "GET", "/fhir/Appointment", nothing).await;
    }

    async fn bodies(mock: &MockServer, p: &str) -> Vec<Value> {
        mock.received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path() == p)
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }

    fn parameter<'a>(parameters: &'a Value, name: &str) -> Option<&'a Value> {
        parameters["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
    }

    async fn find(app: &TestApp, token: &str) -> crate::support::ApiAnswer {
        app.api_get(
            token,
            "/appointments/slots?service_type=http://snomed.info/sct%7C408443003&practitioner=dr-y",
        )
        .await
    }

    #[tokio::test]
    async fn find_offers_only_the_patients_proposed_appointments() {
        let mock = MockServer::start().await;
        mount_find(&mock).await;
        let app = TestApp::spawn_on_mock(&mock, EhrProfile::Epic).await;
        let token = app.portal_token("pat-1");
        let answer = find(&app, &token).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let ids: Vec<&str> = answer.body["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        // Soonest first; the one naming another patient is gone.
        assert_eq!(ids, ["prop-1", "prop-2"]);
        assert_eq!(answer.body["slots"][0]["practitioner"], "Dr Y");
        assert_eq!(answer.body["slots"][0]["start"], at(2));
        assert!(!answer.body.to_string().contains("pat-2"));
        // The Parameters sent: IHE names, the acting patient.
        let sent = bodies(&mock, "/fhir/Appointment/$find").await;
        assert_eq!(sent.len(), 1);
        let p = &sent[0];
        assert_eq!(p["resourceType"], "Parameters");
        assert!(parameter(p, "start").unwrap()["valueDateTime"].is_string());
        assert!(parameter(p, "end").unwrap()["valueDateTime"].is_string());
        assert_eq!(
            parameter(p, "visit-type").unwrap()["valueString"],
            "http://snomed.info/sct|408443003"
        );
        assert_eq!(
            parameter(p, "practitioner").unwrap()["valueReference"]["reference"],
            "Practitioner/dr-y"
        );
        assert_eq!(
            parameter(p, "patient-reference").unwrap()["valueReference"]["reference"],
            "Patient/pat-1"
        );
        // Epic needs a service type.
        let bare = app.api_get(&token, "/appointments/slots").await;
        assert_eq!(bare.status, 400);
        assert_eq!(bare.code(), "service_type_required");
    }

    #[tokio::test]
    async fn book_sends_the_offered_appointment_once_per_key() {
        let mock = MockServer::start().await;
        mount_find(&mock).await;
        // The EHR answers with the offer, now booked.
        let booked = epic_answer("ehr/epic-book-booked.json");
        mount_json(&mock, "POST", "/fhir/Appointment/$book", booked).await;
        let app = TestApp::spawn_on_mock(&mock, EhrProfile::Epic).await;
        let token = app.portal_token("pat-1");
        assert_eq!(find(&app, &token).await.status, 200);
        let body = json!({"slot_id": "prop-1", "comment": "first visit"});
        let answer = app
            .api_post(&token, "/appointments", &body, Some("k1"))
            .await;
        assert_eq!(answer.status, 201, "{:?}", answer.body);
        assert_eq!(answer.body["id"], "prop-1");
        assert_eq!(answer.body["status"], "booked");
        let sent = bodies(&mock, "/fhir/Appointment/$book").await;
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0],
            json!({"resourceType": "Parameters", "parameter": [
                {"name": "appointment-reference", "valueReference": {"reference": "Appointment/prop-1"}},
                {"name": "comment", "valueString": "first visit"}
            ]})
        );
        // The same key: the first answer again, no second $book.
        let replay = app
            .api_post(&token, "/appointments", &body, Some("k1"))
            .await;
        assert_eq!(replay.status, 201);
        assert_eq!(replay.headers["idempotent-replayed"], "true");
        assert_eq!(replay.body, answer.body);
        assert_eq!(bodies(&mock, "/fhir/Appointment/$book").await.len(), 1);
    }

    #[tokio::test]
    async fn only_offers_made_to_the_patient_can_be_booked() {
        let mock = MockServer::start().await;
        mount_find(&mock).await;
        Mock::given(method("POST"))
            .and(path("/fhir/Appointment/$book"))
            .respond_with(ResponseTemplate::new(500))
            .mount(&mock)
            .await;
        let app = TestApp::spawn_on_mock(&mock, EhrProfile::Epic).await;
        let token = app.portal_token("pat-1");
        assert_eq!(find(&app, &token).await.status, 200);
        // Offered to another patient (dropped from pat-1's answer), or never offered.
        for id in ["prop-other", "made-up"] {
            let answer = app
                .api_post(&token, "/appointments", &json!({"slot_id": id}), None)
                .await;
            assert_eq!(answer.status, 404, "{id}: {:?}", answer.body);
        }
        // pat-1's offer is not pat-2's to book.
        let theirs = app
            .api_post(
                &app.portal_token("pat-2"),
                "/appointments",
                &json!({"slot_id": "prop-1"}),
                None,
            )
            .await;
        assert_eq!(theirs.status, 404, "{:?}", theirs.body);
        assert!(bodies(&mock, "/fhir/Appointment/$book").await.is_empty());
    }

    #[tokio::test]
    async fn a_failure_outcome_is_slot_unavailable() {
        let mock = MockServer::start().await;
        mount_find(&mock).await;
        let failed = fixture("ehr/epic-book-unavailable.json");
        mount_json(&mock, "POST", "/fhir/Appointment/$book", failed).await;
        let app = TestApp::spawn_on_mock(&mock, EhrProfile::Epic).await;
        let token = app.portal_token("pat-1");
        assert_eq!(find(&app, &token).await.status, 200);
        let answer = app
            .api_post(
                &token,
                "/appointments",
                &json!({"slot_id": "prop-2"}),
                Some("k2"),
            )
            .await;
        assert_eq!(answer.status, 409, "{:?}", answer.body);
        assert_eq!(answer.code(), "slot_unavailable");
        assert_eq!(bodies(&mock, "/fhir/Appointment/$book").await.len(), 1);
    }
}

/// A plain FHIR store does not mark a booked Slot busy: the gateway still refuses a
/// second booking because an appointment already holds the slot.
#[tokio::test]
async fn a_slot_held_by_an_appointment_is_unavailable_even_if_the_ehr_says_free() {
    let app = TestApp::spawn().await;
    let a = app.portal_token("pat-1");
    let slots = app.api_get(&a, "/appointments/slots").await;
    let slot = slots.body["slots"][0]["id"].as_str().unwrap().to_owned();
    let booked = app
        .api_post(&a, "/appointments", &json!({"slot_id": slot}), None)
        .await;
    assert_eq!(booked.status, 201, "{:?}", booked.body);
    // Behave like a store without booking rules: the Slot goes back to "free".
    let mut resource = app.stored("Slot", &slot);
    resource["status"] = json!("free");
    app.sandbox
        .store()
        .update("Slot", &slot, resource, None)
        .unwrap();
    let posts = app.sandbox.faults().requests_for("POST", "Appointment");
    let second = app
        .api_post(
            &app.portal_token("pat-2"),
            "/appointments",
            &json!({"slot_id": slot}),
            None,
        )
        .await;
    assert_eq!(second.status, 409, "{:?}", second.body);
    assert_eq!(second.code(), "slot_unavailable");
    assert_eq!(
        app.sandbox.faults().requests_for("POST", "Appointment"),
        posts,
        "no second booking was sent"
    );
    // Nothing about the first patient's appointment leaked into the answer.
    assert!(!second.body.to_string().contains("pat-1"));
}
