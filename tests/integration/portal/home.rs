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
}
