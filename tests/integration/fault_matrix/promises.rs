//! Every answer that tells the client to "retry with the same Idempotency-Key" is a
//! promise: each is made to happen here, then the faults stop, the client retries with
//! that key, and the retry must be the success — with exactly one effect in the EHR.
//!
//! | answer | its promise | kept in |
//! |---|---|---|
//! | 503 `outcome_unknown` (any create) | "retry … to find out" | [`outcome_unknown_is_resolved_by_the_retry`] |
//! | 503 `outcome_unknown` (cancel) | "retry … to find out" | the matrix's `cancel` row (`malformed_json/type`) |
//! | 504 `deadline_exceeded` | "retry … to learn its outcome" | [`a_write_past_its_deadline_is_learned_by_the_retry`] |
//! | 502 `message_not_sent`, `message_sent: false` | "retry … to send it" | [`a_thread_whose_message_was_not_sent_is_completed_by_the_retry`] |
//! | 502 `message_not_sent`, `message_sent: "unknown"` | "retry … to finish it" | [`a_thread_whose_message_is_in_doubt_is_finished_by_the_retry`] |
//! | 502 `payment_not_recorded` | "retry … to record it (you will not be charged again)" | `portal::bills` (`a_charge_that_could_not_be_recorded_…`) and the matrix's `payment` row |
//!
//! And the issue's own case: threads started while 60 % of the EHR's `/Communication`
//! answers are garbled, every one of them finished by one retry once the EHR heals
//! ([`threads_started_while_answers_are_garbled_are_finished_by_one_retry`]).

use std::time::Duration;

use portico_sandbox::{FailureKind, FaultConfig, FaultPhase};
use serde_json::{Value, json};

use super::{Sent, api_write, matrix_app, settle};
use crate::support::TestApp;

const PATIENT: &str = "pat-1";

/// Retries with the same key until the answer is not `idempotency_in_progress` (the
/// gateway forgets an abandoned first attempt a moment after answering it).
async fn retry(app: &TestApp, token: &str, path: &str, body: &Value, key: &str) -> Sent {
    for _ in 0..50 {
        let sent = api_write(app, token, path, body, key).await;
        if sent.answer.as_ref().map(|a| a.code()) != Some("idempotency_in_progress") {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} stayed in progress");
}

fn first_member(app: &TestApp) -> String {
    let team = app.stored("CareTeam", &app.care_team_id(PATIENT));
    team["participant"][0]["member"]["reference"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The thread headers with `topic`, each with its messages.
fn threads(app: &TestApp, topic: &str) -> Vec<(String, Vec<Value>)> {
    let all = app.all_stored("Communication");
    all.iter()
        .filter(|c| c["topic"]["text"] == topic && c.get("partOf").is_none())
        .map(|h| {
            let id = h["id"].as_str().unwrap().to_owned();
            let parent = format!("Communication/{id}");
            let messages = all
                .iter()
                .filter(|c| c["partOf"][0]["reference"] == parent.as_str())
                .cloned()
                .collect();
            (id, messages)
        })
        .collect()
}

/// Asserts one header with `topic` and exactly one message, and that `answer` is the
/// 201 naming them.
fn assert_one_thread(app: &TestApp, topic: &str, answer: &Sent) {
    let found = threads(app, topic);
    assert_eq!(found.len(), 1, "{topic}: {found:?}");
    let (header, messages) = &found[0];
    assert_eq!(messages.len(), 1, "{topic}: {messages:?}");
    assert_eq!(answer.status(), 201, "{topic}: {}", answer.body());
    assert_eq!(answer.body()["id"], header.as_str());
    assert_eq!(answer.body()["messages"][0]["id"], messages[0]["id"]);
}

fn new_thread(recipient: &str, topic: &str) -> Value {
    json!({"recipient": recipient, "topic": topic, "text": format!("about {topic}")})
}

#[tokio::test]
async fn a_thread_whose_message_was_not_sent_is_completed_by_the_retry() {
    let app = matrix_app().await;
    let token = app.portal_token(PATIENT);
    let body = new_thread(&first_member(&app), "promise: send it");
    // The header's create passes; the message's create fails before the EHR runs it.
    app.sandbox
        .faults()
        .set(FaultConfig {
            failure_rate: 1.0,
            failure_kind: FailureKind::Status500,
            path_filter: Some("/fhir/Communication".to_owned()),
            methods: vec!["POST".to_owned()],
            skip_first: 1,
            ..FaultConfig::default()
        })
        .unwrap();
    let failed = api_write(&app, &token, "/messages/threads", &body, "send-it").await;
    app.sandbox.faults().clear();
    assert_eq!(failed.status(), 502, "{}", failed.body());
    let answer = failed.answer.as_ref().unwrap();
    assert_eq!(answer.code(), "message_not_sent");
    assert_eq!(answer.body["details"]["message_sent"], false);
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("retry with the same Idempotency-Key to send it")
    );
    let found = threads(&app, "promise: send it");
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].0,
        answer.body["details"]["thread_id"].as_str().unwrap()
    );
    assert!(found[0].1.is_empty(), "the message was not sent");

    let retried = retry(&app, &token, "/messages/threads", &body, "send-it").await;
    assert_one_thread(&app, "promise: send it", &retried);
}

#[tokio::test]
async fn a_thread_whose_message_is_in_doubt_is_finished_by_the_retry() {
    let app = matrix_app().await;
    let token = app.portal_token(PATIENT);
    let body = new_thread(&first_member(&app), "promise: finish it");
    // Every request on Communication after the first two (the header's create and the
    // read-back of the header that checks the message's `partOf`): the message's create
    // lands but its connection breaks, and the searches that would find it break too.
    app.sandbox
        .faults()
        .set(FaultConfig {
            failure_rate: 1.0,
            failure_kind: FailureKind::Reset,
            phase: Some(FaultPhase::After),
            path_filter: Some("/fhir/Communication".to_owned()),
            skip_first: 2,
            ..FaultConfig::default()
        })
        .unwrap();
    let failed = api_write(&app, &token, "/messages/threads", &body, "finish-it").await;
    app.sandbox.faults().clear();
    settle(&app).await;
    assert_eq!(failed.status(), 502, "{}", failed.body());
    let answer = failed.answer.as_ref().unwrap();
    assert_eq!(answer.code(), "message_not_sent", "{}", answer.body);
    assert_eq!(answer.body["details"]["message_sent"], "unknown");
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("retry with the same Idempotency-Key to finish it")
    );
    let found = threads(&app, "promise: finish it");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1.len(), 1, "the message did land");

    let retried = retry(&app, &token, "/messages/threads", &body, "finish-it").await;
    assert_one_thread(&app, "promise: finish it", &retried);
}

#[tokio::test]
async fn outcome_unknown_is_resolved_by_the_retry() {
    let app = matrix_app().await;
    let token = app.portal_token(PATIENT);
    let slots = app.api_get(&token, "/appointments/slots").await;
    let slot = slots.body["slots"][0]["id"].as_str().unwrap().to_owned();
    let body = json!({"slot_id": slot, "reason": "promise: find out"});
    let booked = |app: &TestApp| {
        app.all_stored("Appointment")
            .into_iter()
            .filter(|a| a["status"] == "booked")
            .filter(|a| a["slot"][0]["reference"] == format!("Slot/{slot}"))
            .collect::<Vec<_>>()
    };
    // Every request on Appointment after the first (the check that no appointment holds
    // the slot): the create lands but its connection breaks, and so do the searches
    // for its identifier.
    app.sandbox
        .faults()
        .set(FaultConfig {
            failure_rate: 1.0,
            failure_kind: FailureKind::Reset,
            phase: Some(FaultPhase::After),
            path_filter: Some("/fhir/Appointment".to_owned()),
            skip_first: 1,
            ..FaultConfig::default()
        })
        .unwrap();
    let failed = api_write(&app, &token, "/appointments", &body, "find-out").await;
    app.sandbox.faults().clear();
    settle(&app).await;
    assert_eq!(failed.status(), 503, "{}", failed.body());
    let answer = failed.answer.as_ref().unwrap();
    assert_eq!(answer.code(), "outcome_unknown");
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("retry with the same Idempotency-Key to find out")
    );
    assert_eq!(booked(&app).len(), 1, "the booking did land");

    let retried = retry(&app, &token, "/appointments", &body, "find-out").await;
    assert_eq!(retried.status(), 201, "{}", retried.body());
    let stored = booked(&app);
    assert_eq!(stored.len(), 1);
    assert_eq!(retried.body()["id"], stored[0]["id"]);
}

#[tokio::test]
async fn a_write_past_its_deadline_is_learned_by_the_retry() {
    // The deadline is shorter than the upstream timeout: the gateway gives up on the
    // request while the EHR's answer to the (applied) create is still on its way.
    let app = TestApp::spawn_configured(|config| config.portal.deadline_ms = 1000).await;
    let token = app.portal_token(PATIENT);
    let body = json!({"specialty": "394579002", "reason": "promise: learn its outcome"});
    let made = |app: &TestApp| {
        app.all_stored("ServiceRequest")
            .into_iter()
            .filter(|s| s["reasonCode"][0]["text"] == "promise: learn its outcome")
            .collect::<Vec<_>>()
    };
    app.sandbox
        .faults()
        .set(FaultConfig {
            latency_ms: 2500,
            path_filter: Some("/fhir/ServiceRequest".to_owned()),
            methods: vec!["POST".to_owned()],
            phase: Some(FaultPhase::After),
            ..FaultConfig::default()
        })
        .unwrap();
    let failed = api_write(&app, &token, "/referrals", &body, "learn").await;
    app.sandbox.faults().clear();
    assert_eq!(failed.status(), 504, "{}", failed.body());
    let answer = failed.answer.as_ref().unwrap();
    assert_eq!(answer.code(), "deadline_exceeded");
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("retry it with the same Idempotency-Key to learn its outcome")
    );
    assert!(
        failed.elapsed < Duration::from_millis(2500),
        "{:?}",
        failed.elapsed
    );
    settle(&app).await;
    assert_eq!(made(&app).len(), 1, "the referral did land");

    let retried = retry(&app, &token, "/referrals", &body, "learn").await;
    assert_eq!(retried.status(), 201, "{}", retried.body());
    let stored = made(&app);
    assert_eq!(stored.len(), 1);
    assert_eq!(retried.body()["id"], stored[0]["id"]);
}

/// The case: with 60 % of the EHR's `/Communication` answers garbled (after it
/// ran each request), threads are started; some fail, some say `message_not_sent`. Once
/// the EHR heals, one retry with each thread's key must finish it: one header, one
/// message, 201 — not `message_not_sent` again.
#[tokio::test]
async fn threads_started_while_answers_are_garbled_are_finished_by_one_retry() {
    let app = matrix_app().await;
    let token = app.portal_token(PATIENT);
    let member = first_member(&app);
    app.sandbox
        .faults()
        .inject(FailureKind::MalformedJson, 0.6, Some("/Communication"));
    let mut attempts = Vec::new();
    for n in 0..8 {
        let topic = format!("garbled {n}");
        let body = new_thread(&member, &topic);
        let key = format!("garbled-{n}");
        let first = api_write(&app, &token, "/messages/threads", &body, &key).await;
        assert!(first.answer.is_some(), "{topic}: {}", first.describe());
        attempts.push((topic, body, key, first));
    }
    app.sandbox.faults().clear();
    settle(&app).await;
    for (topic, body, key, first) in &attempts {
        let retried = retry(&app, &token, "/messages/threads", body, key).await;
        assert_eq!(
            retried.status(),
            201,
            "{topic}: first {}, retry {} {}",
            first.describe(),
            retried.describe(),
            retried.body()
        );
        assert_one_thread(&app, topic, &retried);
    }
}
