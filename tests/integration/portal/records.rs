//! `GET /records/{kind}`: every kind, only the patient's own, paging with sealed
//! cursors, bounds, and stale marking.

use std::time::Duration;

use portico_sandbox::faults::FailureKind;
use serde_json::Value;

use crate::support::TestApp;

const KINDS: [&str; 10] = [
    "allergies",
    "conditions",
    "medications",
    "immunizations",
    "lab-results",
    "vital-signs",
    "documents",
    "encounters",
    "procedures",
    "care-team",
];

/// The patient a stored resource belongs to (the reference element of its type).
fn owner(app: &TestApp, resource_type: &str, id: &str) -> String {
    let r = app.stored(resource_type, id);
    let reference = ["patient", "subject"]
        .iter()
        .find_map(|k| r[k]["reference"].as_str())
        .expect("a patient reference");
    reference.trim_start_matches("Patient/").to_owned()
}

#[tokio::test]
async fn every_kind_lists_only_the_patients_own_items() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-2");
    for kind in KINDS {
        let page = app
            .api_get(&token, &format!("/records/{kind}?count=50"))
            .await;
        assert_eq!(page.status, 200, "{kind}: {:?}", page.body);
        assert_eq!(page.body["kind"], kind);
        let items = page.body["items"].as_array().unwrap();
        assert!(
            !items.is_empty(),
            "{kind}: the sandbox generates some for every patient"
        );
        for item in items {
            let rt = item["resource_type"].as_str().unwrap();
            let id = item["id"].as_str().unwrap();
            assert_eq!(owner(&app, rt, id), "pat-2", "{kind}: {rt}/{id}");
        }
    }
}

#[tokio::test]
async fn items_carry_display_values_units_and_dates() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let labs = app.api_get(&token, "/records/lab-results?count=100").await;
    let items = labs.body["items"].as_array().unwrap();
    let with_value = items
        .iter()
        .find(|i| i["value"]["value"].is_number())
        .expect("a lab result with a quantity");
    assert!(with_value["title"].is_string());
    assert!(with_value["value"]["unit"].is_string());
    assert!(with_value["date"].is_string());
    assert!(!with_value["codes"].as_array().unwrap().is_empty());
    // Newest first.
    let dates: Vec<&str> = items.iter().filter_map(|i| i["date"].as_str()).collect();
    let mut sorted = dates.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(dates, sorted);
    let team = app.api_get(&token, "/records/care-team").await;
    let people = team.body["items"][0]["people"].as_array().unwrap();
    assert!(people.iter().any(|p| {
        p["reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("Practitioner/"))
    }));
}

#[tokio::test]
async fn paging_follows_sealed_cursors_that_nobody_else_can_use() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let first = app.api_get(&token, "/records/lab-results?count=2").await;
    assert_eq!(first.status, 200);
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("more than one page");
    assert!(!cursor.contains("http"), "no upstream link leaks");
    let second = app
        .api_get(
            &token,
            &format!("/records/lab-results?count=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&second.body).len(), 2);
    assert!(
        ids(&second.body)
            .iter()
            .all(|id| !ids(&first.body).contains(id))
    );

    // Another patient's session cannot replay it.
    let other = app
        .api_get(
            &app.portal_token("pat-2"),
            &format!("/records/lab-results?cursor={cursor}"),
        )
        .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.code(), "invalid_cursor");
    // Nor can it be used for another kind, or altered.
    let wrong_kind = app
        .api_get(&token, &format!("/records/allergies?cursor={cursor}"))
        .await;
    assert_eq!(wrong_kind.code(), "invalid_cursor");
    let mut altered = cursor.to_owned();
    altered.insert(3, 'x');
    let altered = app
        .api_get(&token, &format!("/records/lab-results?cursor={altered}"))
        .await;
    assert_eq!(altered.code(), "invalid_cursor");
}

#[tokio::test]
async fn bad_kinds_counts_and_parameters_are_clear_4xx_and_go_nowhere() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    app.sandbox.faults().reset_stats();
    for (path, status) in [
        ("/records/Observation", 404),
        ("/records/lab-results?count=0", 400),
        ("/records/lab-results?count=1000", 400),
        ("/records/lab-results?count=abc", 400),
        ("/records/lab-results?patient=pat-2", 400),
    ] {
        let answer = app.api_get(&token, path).await;
        assert_eq!(answer.status, status, "{path}: {:?}", answer.body);
        assert_eq!(
            answer.headers["content-type"], "application/problem+json",
            "{path}"
        );
    }
    assert_eq!(
        app.sandbox.faults().requests_for("GET", "Observation"),
        0,
        "nothing was sent upstream"
    );
}

#[tokio::test]
async fn a_failing_ehr_serves_cached_records_marked_stale() {
    let app = TestApp::spawn_configured(|config| {
        config.cache.patient_ttl = Duration::from_millis(200);
        config.resilience.max_attempts = 1;
    })
    .await;
    let token = app.portal_token("pat-1");
    let fresh = app.api_get(&token, "/records/allergies").await;
    assert_eq!(fresh.body["stale"], false);
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.sandbox
        .faults()
        .inject(FailureKind::Status503, 1.0, None);
    let stale = app.api_get(&token, "/records/allergies").await;
    assert_eq!(stale.status, 200, "{:?}", stale.body);
    assert_eq!(stale.body["stale"], true);
    assert_eq!(stale.body["items"], fresh.body["items"]);
    // Never cached: an honest error with a stable code.
    let down = app.api_get(&token, "/records/conditions").await;
    assert!(
        down.status == 502 || down.status == 503,
        "{}: {:?}",
        down.status,
        down.body
    );
    assert!(down.code().starts_with("upstream_"), "{}", down.code());
    assert_eq!(down.headers["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_kept_record_page_is_only_reused_for_the_same_principal() {
    // Two apps logged in for the same patient with the same scopes share the cache
    // entry behind /records, but not the answer the gateway rendered from it: its cursor
    // is sealed for the principal. If the kept answer were keyed by less than that
    // binding, B would get A's cursor and be refused on the next page.
    let app = TestApp::spawn().await;
    let scopes = "openid fhirUser launch/patient patient/*.rs patient/*.cud";
    let a = app.portal_token("pat-1");
    let b = app
        .sandbox
        .auth()
        .issue_access_token("portico-portal", scopes, Some("pat-1"));
    let path = "/records/lab-results?count=2";
    app.sandbox.faults().reset_stats();
    let first = app.api_get(&a, path).await; // miss
    let second = app.api_get(&a, path).await; // hit: rendered and kept
    let third = app.api_get(&a, path).await; // the kept answer
    let for_b = app.api_get(&b, path).await; // same entry, another principal
    for answer in [&first, &second, &third, &for_b] {
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.headers["content-type"], "application/json");
        assert_eq!(answer.headers["cache-control"], "no-store");
    }
    assert_eq!(
        app.sandbox.faults().requests_for("GET", "Observation"),
        1,
        "one upstream search for all four"
    );
    assert_eq!(
        second.body, third.body,
        "the kept answer is the one rendered"
    );
    assert_eq!(first.body["items"], third.body["items"]);
    assert_eq!(for_b.body["items"], first.body["items"]);
    let cursor = |v: &Value| v["next_cursor"].as_str().unwrap().to_owned();
    assert_ne!(
        cursor(&third.body),
        cursor(&for_b.body),
        "B's cursor is B's own"
    );
    for (token, answer) in [(&a, &third), (&b, &for_b)] {
        let next = app
            .api_get(
                token,
                &format!(
                    "/records/lab-results?count=2&cursor={}",
                    cursor(&answer.body)
                ),
            )
            .await;
        assert_eq!(
            next.status, 200,
            "each follows its own cursor: {:?}",
            next.body
        );
    }
    let crossed = app
        .api_get(
            &b,
            &format!(
                "/records/lab-results?count=2&cursor={}",
                cursor(&third.body)
            ),
        )
        .await;
    assert_eq!(crossed.code(), "invalid_cursor");
}
