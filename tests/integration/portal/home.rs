//! `/me`, `/dashboard`, and what every portal route shares (authentication, errors,
//! `Cache-Control`).

use crate::support::TestApp;

#[tokio::test]
async fn me_names_the_token_patient_and_never_another() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-2");
    let me = app.api_get(&token, "/me").await;
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["id"], "pat-2");
    assert!(me.body["name"].is_string());
    assert_eq!(
        me.headers.get("cache-control").unwrap(),
        "no-store",
        "patient data must not be cached by browsers"
    );
    // Choosing another patient than the token's is not found, not forbidden.
    let other = app
        .http
        .get(app.url("/api/v1/me"))
        .bearer_auth(&token)
        .header("portico-patient", "pat-1")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn portal_routes_need_a_login_and_errors_are_problem_json() {
    let app = TestApp::spawn().await;
    let anonymous = app.http.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );
    let unknown = app
        .api_get(&app.portal_token("pat-1"), "/no/such/route")
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.code(), "not_found");
    // A known route with a method it does not take (the fuzz test reached this with an
    // id of ".", which URL normalization removes): a problem too, not an empty 405.
    let token = app.portal_token("pat-1");
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/v1/dashboard"),
        (reqwest::Method::POST, "/api/v1/appointments/./cancel"),
    ] {
        let res = app
            .http
            .request(method.clone(), app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed");
    }
    let fhir = app
        .http
        .delete(app.url("/fhir/metadata"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(fhir.status(), 405);
    let outcome: serde_json::Value = fhir.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn the_dashboard_shows_every_section_for_the_patient_only() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let d = app.api_get(&token, "/dashboard").await;
    assert_eq!(d.status, 200, "{:?}", d.body);
    assert_eq!(d.body["unavailable"], serde_json::json!([]));
    for section in [
        "upcoming_appointments",
        "medications",
        "message_threads",
        "recent_results",
    ] {
        assert!(
            d.body[section].is_array(),
            "{section}: {:?}",
            d.body[section]
        );
    }
    assert!(d.body["balance_due"]["value"].is_number());
    assert!(
        d.body["medications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "active" && m["refill"]["eligible"].is_boolean())
    );
    // Everything shown is pat-1's: the upcoming appointments name them as a participant.
    for a in d.body["upcoming_appointments"].as_array().unwrap() {
        let text = app
            .stored("Appointment", a["id"].as_str().unwrap())
            .to_string();
        assert!(text.contains("\"Patient/pat-1\""), "{text}");
    }
}

#[tokio::test]
async fn dashboard_sections_load_concurrently_and_repeat_loads_come_from_the_cache() {
    let sandbox = crate::support::sandbox().await;
    sandbox
        .faults()
        .set_latency(std::time::Duration::from_millis(150));
    let app = TestApp::spawn_on(sandbox).await;
    let token = app.portal_token("pat-1");
    app.sandbox.faults().reset_stats();
    let first = app.api_get(&token, "/dashboard").await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    // Five sections: their first EHR calls were in flight at the same time.
    assert!(
        app.sandbox.faults().max_in_flight() >= 5,
        "sections ran one after another (at most {} EHR calls at once)",
        app.sandbox.faults().max_in_flight()
    );
    app.sandbox.faults().reset_stats();
    let again = app.api_get(&token, "/dashboard").await;
    assert_eq!(again.status, 200);
    assert_eq!(
        app.sandbox.faults().requests(),
        0,
        "a repeated dashboard within the TTL makes no EHR call: {:?}",
        app.sandbox.faults().stats()
    );
    assert_eq!(again.body, first.body);
}

#[tokio::test]
async fn a_failing_section_is_named_and_the_rest_still_shows() {
    let app = TestApp::spawn_configured(|config| config.resilience.max_attempts = 1).await;
    let token = app.portal_token("pat-1");
    app.sandbox.faults().inject(
        portico_sandbox::faults::FailureKind::Status500,
        1.0,
        Some("/fhir/Communication"),
    );
    let d = app.api_get(&token, "/dashboard").await;
    assert_eq!(d.status, 200, "{:?}", d.body);
    assert_eq!(d.body["unavailable"], serde_json::json!(["messages"]));
    assert!(d.body["message_threads"].is_null());
    assert!(d.body["upcoming_appointments"].is_array());
    // When the EHR fails for everything (and nothing is cached for this patient), the
    // dashboard is an honest error.
    app.sandbox
        .faults()
        .inject(portico_sandbox::faults::FailureKind::Status500, 1.0, None);
    let down = app.api_get(&app.portal_token("pat-2"), "/dashboard").await;
    assert_eq!(down.status, 502, "{:?}", down.body);
    assert_eq!(down.code(), "upstream_unavailable");
}

#[tokio::test]
async fn a_portal_request_past_its_deadline_is_an_honest_504() {
    let app = TestApp::spawn_configured(|config| config.portal.deadline_ms = 300).await;
    let token = app.portal_token("pat-1");
    // Authenticate once so that only the EHR is slow.
    assert_eq!(app.api_get(&token, "/me").await.status, 200);
    app.sandbox
        .faults()
        .set_latency(std::time::Duration::from_millis(2000));
    let slow = app.api_get(&token, "/records/conditions").await;
    assert_eq!(slow.status, 504, "{:?}", slow.body);
    assert_eq!(slow.code(), "deadline_exceeded");
    assert_eq!(slow.headers["content-type"], "application/problem+json");
    assert_eq!(slow.headers["cache-control"], "no-store");
}

#[tokio::test]
async fn a_cold_dashboard_is_one_round_trip_of_concurrent_ehr_calls() {
    let sandbox = crate::support::sandbox().await;
    let app = TestApp::spawn_on(sandbox).await;
    for patient in ["pat-1", "pat-2"] {
        let token = app.portal_token(patient);
        // The gateway's discovery of the authorization server (once per process) is
        // not the dashboard's.
        assert_eq!(app.api_get(&token, "/me").await.status, 200);
        // A latency long enough that every call of the page is seen in flight at once.
        let latency = std::time::Duration::from_millis(200);
        let d = app.api_get_timed(&token, "/dashboard", latency).await;
        assert_eq!(d.status, 200, "{:?}", d.body);
        assert_eq!(d.body["unavailable"], serde_json::json!([]));
        let faults = app.sandbox.faults();
        let stats = faults.stats();
        // One search per section, and the two of appointments (booked, and requests
        // without a time yet) and medications (prescriptions, dispenses, open refill
        // Tasks): no search waits for another's answer, no name is read one at a time,
        // and neither invoices nor the patient's own record are fetched.
        for (ty, n) in [
            ("Appointment", 2),
            ("MedicationRequest", 1),
            ("MedicationDispense", 1),
            ("Task", 1),
            ("Communication", 1),
            ("Observation", 1),
            ("Account", 1),
            ("Invoice", 0),
            ("Patient", 0),
            ("Practitioner", 0),
        ] {
            assert_eq!(faults.requests_for("GET", ty), n, "{ty}: {stats:?}");
        }
        assert_eq!(faults.requests(), 8, "{stats:?}");
        // All eight were in flight at the same time: the page cost one EHR round trip.
        assert_eq!(faults.max_in_flight(), 8, "{stats:?}");
        // The sections still show the patient's data.
        assert!(
            !d.body["medications"].as_array().unwrap().is_empty(),
            "{}",
            d.body
        );
        let threads = d.body["message_threads"].as_array().unwrap();
        assert!(!threads.is_empty(), "{}", d.body);
        assert!(
            threads.iter().all(|t| t["participants"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p.is_string() && !p.as_str().unwrap().starts_with("Patient/"))),
            "{}",
            d.body
        );
        assert!(d.body["unread_messages"].as_u64().unwrap() > 0);
    }
}

#[tokio::test]
async fn the_balance_due_is_the_sum_of_the_accounts_balances() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let bills = app.api_get(&token, "/bills").await;
    assert_eq!(bills.status, 200, "{:?}", bills.body);
    let expected: f64 = bills.body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["balance"]["currency"] == bills.body["currency"])
        .map(|a| a["balance"]["value"].as_f64().unwrap())
        .sum();
    assert!(expected > 0.0, "{}", bills.body);
    let d = app.api_get(&token, "/dashboard").await;
    assert_eq!(d.status, 200, "{:?}", d.body);
    assert_eq!(d.body["balance_due"]["currency"], bills.body["currency"]);
    let shown = d.body["balance_due"]["value"].as_f64().unwrap();
    assert!((shown - expected).abs() < 0.005, "{shown} vs {expected}");
}
