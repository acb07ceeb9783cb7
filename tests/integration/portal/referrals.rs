//! Portal API: patient-initiated referral requests.

use serde_json::{Value, json};

use crate::support::TestApp;

/// ServiceRequests the gateway created (generated ones are `sr-…`).
fn created_service_requests(app: &TestApp) -> Vec<Value> {
    app.all_stored("ServiceRequest")
        .into_iter()
        .filter(|s| !s["id"].as_str().unwrap_or("").starts_with("sr-"))
        .collect()
}

fn cardiology() -> Value {
    json!({"specialty": "394579002", "reason": "Chest pain when climbing stairs"})
}

#[tokio::test]
async fn specialties_are_the_configured_list() {
    let app = TestApp::spawn().await;
    let answer = app
        .api_get(&app.portal_token("pat-1"), "/referrals/specialties")
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // config/ehr/generic-r4.toml lists seven SNOMED specialties, Cardiology first.
    let items = answer.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 7, "{}", answer.body);
    assert_eq!(
        items[0],
        json!({"system": "http://snomed.info/sct", "code": "394579002", "display": "Cardiology"})
    );
    assert!(
        items
            .iter()
            .any(|c| c["code"] == "394587001" && c["display"] == "Psychiatry")
    );
}

#[tokio::test]
async fn an_allowed_specialty_creates_a_service_request_with_the_exact_codes() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let body = json!({"specialty": "394579002", "reason": "Chest pain when climbing stairs", "notes": "Mornings are worse"});
    let created = app
        .api_post(&token, "/referrals", &body, Some("ref-1"))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["resource_type"], "ServiceRequest");
    assert_eq!(created.body["status"], "active");
    assert_eq!(created.body["specialty"]["code"], "394579002");
    assert_eq!(created.body["reason"], "Chest pain when climbing stairs");
    assert_eq!(created.body["notes"], "Mornings are worse");

    let made = created_service_requests(&app);
    assert_eq!(made.len(), 1);
    let sr = &made[0];
    assert_eq!(sr["id"], created.body["id"]);
    assert_eq!(sr["status"], "active");
    assert_eq!(sr["intent"], "proposal");
    assert_eq!(
        sr["category"],
        json!([{"coding": [{"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}]}])
    );
    assert_eq!(sr["code"]["coding"][0]["system"], "http://snomed.info/sct");
    assert_eq!(sr["code"]["coding"][0]["code"], "306206005");
    assert_eq!(
        sr["performerType"]["coding"],
        json!([{"system": "http://snomed.info/sct", "code": "394579002", "display": "Cardiology"}])
    );
    assert_eq!(
        sr["reasonCode"][0]["text"],
        "Chest pain when climbing stairs"
    );
    assert_eq!(sr["subject"]["reference"], "Patient/pat-1");
    assert_eq!(sr["requester"]["reference"], "Patient/pat-1");
    assert!(sr["authoredOn"].is_string());
    assert_eq!(sr["note"][0]["text"], "Mornings are worse");
    assert_eq!(sr["identifier"][0]["system"], "urn:ietf:rfc:3986");

    // The same key again replays; the listing shows it, and only the patient's own.
    let replay = app
        .api_post(&token, "/referrals", &body, Some("ref-1"))
        .await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.body["id"], created.body["id"]);
    assert_eq!(created_service_requests(&app).len(), 1);
    let reused = app
        .api_post(&token, "/referrals", &cardiology(), Some("ref-1"))
        .await;
    assert_eq!(reused.code(), "idempotency_key_reused");

    let list = app.api_get(&token, "/referrals").await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        1,
        "clinician-ordered referrals are not listed: {}",
        list.body
    );
    assert_eq!(items[0]["id"], created.body["id"]);
    assert_eq!(items[0]["status"], "active");
    assert_eq!(items[0]["specialty"]["display"], "Cardiology");
    let other = app.api_get(&app.portal_token("pat-2"), "/referrals").await;
    assert_eq!(other.body["items"], json!([]));
}

#[tokio::test]
async fn an_unknown_specialty_is_refused_and_nothing_is_sent() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    for specialty in ["999999", "", "Cardiology"] {
        let answer = app
            .api_post(
                &token,
                "/referrals",
                &json!({"specialty": specialty, "reason": "please"}),
                None,
            )
            .await;
        assert_eq!(answer.status, 422, "{specialty}: {:?}", answer.body);
        assert_eq!(answer.code(), "specialty_not_allowed");
    }
    assert_eq!(
        app.sandbox.faults().requests_for("POST", "ServiceRequest"),
        0
    );
}

#[tokio::test]
async fn bad_referral_bodies_are_refused_before_anything_is_sent() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    for (body, status, code) in [
        (
            json!({"specialty": "394579002", "reason": "x", "urgent": true}),
            400,
            "invalid_body",
        ),
        (json!({"specialty": "394579002"}), 400, "invalid_body"),
        (
            json!({"specialty": 394579002, "reason": "x"}),
            400,
            "invalid_body",
        ),
        (
            json!({"specialty": "394579002", "reason": "   "}),
            400,
            "invalid_request",
        ),
        (
            json!({"specialty": "394579002", "reason": "x".repeat(1001)}),
            400,
            "text_too_long",
        ),
        (
            json!({"specialty": "394579002", "reason": "x", "notes": "x".repeat(1001)}),
            400,
            "text_too_long",
        ),
        (json!("a string"), 400, "invalid_body"),
        (json!(["394579002", "a reason"]), 400, "invalid_body"),
    ] {
        let answer = app.api_post(&token, "/referrals", &body, None).await;
        assert_eq!(answer.status, status, "{body}: {:?}", answer.body);
        assert_eq!(answer.code(), code, "{body}");
    }
    let not_json = app
        .http
        .post(app.url("/api/v1/referrals"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"specialty\":")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let form = app
        .http
        .post(app.url("/api/v1/referrals"))
        .bearer_auth(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("specialty=394579002&reason=x")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    assert_eq!(
        app.sandbox.faults().requests_for("POST", "ServiceRequest"),
        0
    );
    // The longest reason is accepted.
    let ok = app
        .api_post(
            &token,
            "/referrals",
            &json!({"specialty": "394579002", "reason": "x".repeat(1000)}),
            None,
        )
        .await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
}

#[tokio::test]
async fn the_communication_strategy_writes_to_the_care_team() {
    let app = TestApp::spawn_with_profile_edit(
        "strategy = \"service-request\"",
        "strategy = \"communication\"",
    )
    .await;
    let token = app.portal_token("pat-1");
    let created = app
        .api_post(&token, "/referrals", &cardiology(), Some("c-1"))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["resource_type"], "Communication");
    let id = created.body["id"].as_str().unwrap();
    let message = app.stored("Communication", id);
    assert_eq!(
        message["recipient"][0]["reference"],
        format!("CareTeam/{}", app.care_team_id("pat-1"))
    );
    assert_eq!(message["topic"]["text"], "Referrals and Authorizations");
    assert_eq!(message["sender"]["reference"], "Patient/pat-1");
    assert_eq!(message["subject"]["reference"], "Patient/pat-1");
    assert!(message.get("about").is_none());
    assert!(
        message["payload"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["contentString"] == "Reason: Chest pain when climbing stairs")
    );
    assert_eq!(
        app.sandbox.faults().requests_for("POST", "ServiceRequest"),
        0
    );
    let list = app.api_get(&token, "/referrals").await;
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", list.body);
    assert_eq!(items[0]["id"], id);
    assert_eq!(items[0]["reason"], "Chest pain when climbing stairs");
}
