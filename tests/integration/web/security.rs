//! The pages' security: headers on every answer, the sign-in page for anonymous
//! visitors, CSRF refusals (no token, a wrong one, another origin) with nothing
//! changed, sign-out, and the pages switched off or moved.

use super::{Browser, signed_in};
use crate::support::TestApp;

const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

fn assert_page_headers(page: &super::Page) {
    assert_eq!(page.header("content-security-policy"), CSP);
    assert!(
        !page
            .header("content-security-policy")
            .contains("unsafe-inline")
    );
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert_eq!(page.header("referrer-policy"), "same-origin");
    assert_eq!(page.header("x-frame-options"), "DENY");
    assert_eq!(page.header("cache-control"), "no-store");
}

#[tokio::test]
async fn anonymous_visitors_get_the_sign_in_page_with_its_button() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    let page = browser.get("/").await;
    assert_eq!(page.status, 200);
    assert_page_headers(&page);
    assert!(page.header("content-type").starts_with("text/html"));
    assert_eq!(page.h1(), "Sign in to your patient portal");
    assert_eq!(
        page.attrs("a.button-start", "href"),
        vec!["/auth/login?return_to=%2F".to_owned()]
    );
    assert_eq!(
        page.count("nav.main-nav"),
        0,
        "no navigation before sign-in"
    );
    assert_eq!(page.count("form.sign-out"), 0);
    // A deeper page asks to sign in and comes back to it.
    let page = browser.get("/appointments?when=past").await;
    assert_eq!(page.status, 401);
    assert_page_headers(&page);
    assert_eq!(
        page.attrs("a.button-start", "href"),
        vec!["/auth/login?return_to=%2Fappointments%3Fwhen%3Dpast".to_owned()]
    );
    // Signing in from there lands on it.
    let mut browser = Browser::new(&app);
    browser.get("/appointments?when=past").await;
    let href = "/auth/login?return_to=%2Fappointments%3Fwhen%3Dpast";
    let started = browser.get_raw(href).await;
    let approved = browser
        .get_raw(&format!("{}&login_hint=pat-1", started.location()))
        .await;
    let back = browser.get_raw(&approved.location()).await;
    assert_eq!(back.location(), "/appointments?when=past");
    // A bearer token is for the API, not for pages.
    let page = reqwest::Client::new()
        .get(app.url("/appointments"))
        .bearer_auth(app.portal_token("pat-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 401);
}

#[tokio::test]
async fn every_page_and_asset_carries_the_security_headers() {
    let (_app, mut browser) = signed_in().await;
    for path in [
        "/",
        "/record",
        "/record/lab-results",
        "/appointments",
        "/appointments/find",
        "/medications",
        "/referrals",
        "/messages",
        "/bills",
        "/download",
        "/download/summary",
        "/profile",
        "/session",
        "/no-such-page",
    ] {
        let page = browser.get(path).await;
        assert_page_headers(&page);
        assert!(page.body.starts_with("<!DOCTYPE html>"), "{path}");
    }
    let page = browser.get("/no-such-page").await;
    assert_eq!(page.status, 404);
    assert_eq!(page.h1(), "Page not found");
    let css = browser.get("/assets/portal.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), "text/css; charset=utf-8");
    assert_eq!(css.header("content-security-policy"), CSP);
    assert_eq!(css.header("x-content-type-options"), "nosniff");
    let js = browser.get("/assets/portal.js").await;
    assert_eq!(js.header("content-type"), "text/javascript; charset=utf-8");
    // No inline script or style anywhere: the CSP would block them.
    let home = browser.get("/").await;
    assert_eq!(home.count("script:not([src])"), 0);
    assert_eq!(home.count("style"), 0);
    assert_eq!(home.count("[style]"), 0);
    let download = browser.get_raw("/download/record.json").await;
    assert_eq!(download.header("cache-control"), "no-store");
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_or_from_another_origin_change_nothing() {
    let (app, mut browser) = signed_in().await;
    let page = browser.get("/appointments/find").await;
    let slot = page.options("slot_id")[0].clone();
    let form = page
        .form("form[action='/appointments/book']")
        .set("slot_id", &slot);
    let booked = || {
        app.all_stored("Appointment")
            .into_iter()
            .filter(|a| a["slot"][0]["reference"] == format!("Slot/{slot}"))
            .count()
    };
    // No token.
    let refused = browser
        .post_raw(&form.action, &form.clone().without("csrf_token").fields)
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.h1(), "This form could not be sent");
    // A wrong token.
    let refused = browser
        .post_raw(
            &form.action,
            &form.clone().set("csrf_token", "forged").fields,
        )
        .await;
    assert_eq!(refused.status, 403);
    // Two tokens (the form's and a header).
    let mut doubled = form.fields.clone();
    doubled.push(("csrf_token".into(), form.get("csrf_token").unwrap().into()));
    let refused = browser.post_raw(&form.action, &doubled).await;
    assert_eq!(refused.status, 403);
    // The right token from another site's page.
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&form.fields)
        .finish();
    let cookie = format!(
        "portico_session={}",
        browser.cookie("portico_session").unwrap()
    );
    let foreign = reqwest::Client::new()
        .post(app.url(&form.action))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "http://evil.example")
        .header("cookie", &cookie)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    // Not a form.
    let json = reqwest::Client::new()
        .post(app.url(&form.action))
        .header("content-type", "application/json")
        .header("cookie", &cookie)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 415);
    assert_eq!(booked(), 0, "nothing was booked");
    // The form as sent by the page works.
    let (done, _) = browser.submit(&form).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(booked(), 1);
}

#[tokio::test]
async fn signing_out_ends_the_session_and_clears_its_cookie() {
    let (app, mut browser) = signed_in().await;
    let old_cookie = browser.cookie("portico_session").unwrap().clone();
    let home = browser.get("/").await;
    let form = home.form("form.sign-out");
    assert_eq!(form.action, "/sign-out");
    // Without the token, nothing happens.
    let refused = browser.post_raw("/sign-out", &[]).await;
    assert_eq!(refused.status, 403);
    assert!(browser.cookie("portico_session").is_some());
    let (out, page) = browser.submit(&form).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location(), "/signed-out");
    assert!(browser.cookie("portico_session").is_none());
    assert_eq!(page.h1(), "You have signed out");
    assert_eq!(
        browser.get("/").await.h1(),
        "Sign in to your patient portal"
    );
    // The old cookie opens nothing any more.
    let replay = reqwest::Client::new()
        .get(app.url("/appointments"))
        .header("cookie", format!("portico_session={old_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
}

#[tokio::test]
async fn staying_signed_in_works_without_javascript() {
    let (_app, mut browser) = signed_in().await;
    let page = browser.get("/medications").await;
    // The warning is in the page, hidden until the script shows it, as a real form.
    assert_eq!(page.count("#timeout-warning[hidden][role=alertdialog]"), 1);
    let form = page.form("#timeout-warning form");
    assert_eq!(form.get("return_to"), Some("/medications"));
    let (done, shown) = browser.submit(&form).await;
    assert_eq!(done.location(), "/medications?done=extended");
    assert_eq!(
        shown.texts(".banner-success"),
        vec!["You are still signed in."]
    );
    // And from the footer's plain link.
    let session = browser.get("/session").await;
    assert_eq!(session.h1(), "Your session");
    let (done, _) = browser.submit(&session.form("main form")).await;
    assert_eq!(done.status, 303);
    // return_to cannot leave the gateway.
    let form = page
        .form("#timeout-warning form")
        .set("return_to", "//evil.example/");
    let (done, _) = browser.submit(&form).await;
    assert_eq!(done.location(), "/?done=extended");
}

#[tokio::test]
async fn the_pages_can_be_switched_off_or_moved() {
    let app = TestApp::spawn_configured(|c| c.web.enabled = false).await;
    let mut browser = Browser::new(&app);
    let page = browser.get("/").await;
    assert_eq!(page.status, 404);
    assert_eq!(page.body, "not found");
    assert_eq!(browser.get("/healthz").await.status, 200);

    let app = TestApp::spawn_configured(|c| c.web.prefix = "/portal".into()).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.get("/").await.status, 404);
    let page = browser.get("/portal").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.attrs("a.button-start", "href"),
        vec!["/auth/login?return_to=%2Fportal".to_owned()]
    );
    let started = browser
        .get_raw(&page.attrs("a.button-start", "href")[0])
        .await;
    let approved = browser
        .get_raw(&format!("{}&login_hint=pat-1", started.location()))
        .await;
    let home = browser.get(&approved.location()).await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert_eq!(home.h1(), "Your health at a glance");
    assert!(
        home.attrs("nav.main-nav a", "href")
            .contains(&"/portal/appointments".to_owned())
    );
    let appointments = browser.get("/portal/appointments").await;
    assert_eq!(appointments.h1(), "Your appointments");
}

#[tokio::test]
async fn a_form_shown_again_links_back_to_its_page_not_to_the_post() {
    let (_app, mut browser) = signed_in().await;
    let page = browser.get("/referrals/new").await;
    let form = page.form("main form");
    let referer = format!("{}/referrals/new", browser.gateway);
    let mut browser = browser.with_header("referer", &referer);
    let refused = browser.post_raw(&form.action, &form.fields).await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.attrs(".lang-switch a", "href"),
        vec!["/referrals/new?lang=es".to_owned()]
    );
    assert_eq!(
        refused.form("#timeout-warning form").get("return_to"),
        Some("/referrals/new")
    );
    // Without a Referer (or with another site's), they lead home.
    let mut browser = browser.with_header("referer", "http://evil.example/x");
    let refused = browser.post_raw(&form.action, &form.fields).await;
    assert_eq!(
        refused.attrs(".lang-switch a", "href"),
        vec!["/?lang=es".to_owned()]
    );
}
