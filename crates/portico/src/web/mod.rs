//! The reference patient portal: server-rendered HTML pages at `/` (or `[web] prefix`),
//! on the same domain actions as the portal API (`/api/v1`), called directly.
//!
//! Every page is rendered by [maud](https://maud.lambda.xyz) (compile-time checked,
//! escaped by default) and works without JavaScript: reads are links, writes are forms
//! posted with the session's CSRF token and a fresh idempotency key, answered with a
//! redirect (post-redirect-get) or the same form again with its errors next to the
//! fields. A small external script ([`assets`]) only enhances (the session-timeout
//! warning, the print button).
//!
//! Modules: [`layout`] (the page frame: landmarks, skip link, navigation, language
//! switcher, sign-out form, session-timeout warning), [`i18n`] (languages and the
//! message catalog), [`viewer`] (who is looking: the portal session, the acting
//! patient, the language), [`forms`] (CSRF, idempotency keys, field errors), [`errors`]
//! (failures as pages), and one module per area: [`home`], [`record`] (with [`charts`]),
//! [`appointments`], [`medications`], [`referrals`], [`messages`], [`bills`],
//! [`download`], [`profile`] (who I am, whom I act for, the session, sign out).
//!
//! Invariants:
//! - the pages reach the EHR only through `portico_portal`'s actions on a
//!   [`portico_portal::Ctx`] (the same guarded session as the API), and a foreign id in
//!   a URL is the same 404 page as a missing one;
//! - every response carries a `Content-Security-Policy` without `unsafe-inline`,
//!   `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`, and every page
//!   `Cache-Control: no-store`;
//! - every user-visible string comes from the catalog ([`i18n::M`]) in each language.

pub mod appointments;
pub mod assets;
pub mod bills;
pub mod charts;
pub mod download;
pub mod errors;
pub mod forms;
pub mod home;
pub mod i18n;
pub mod layout;
pub mod medications;
pub mod messages;
pub mod profile;
pub mod record;
pub mod referrals;
pub mod viewer;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::state::AppState;
pub use viewer::Viewer;

/// The Content-Security-Policy of every page: nothing inline, nothing from elsewhere.
pub const CSP: &str =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The pages' routes, relative to the prefix.
fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home::home))
        .route("/record", get(record::index))
        .route("/record/{kind}", get(record::kind))
        .route("/appointments", get(appointments::list))
        .route("/appointments/find", get(appointments::find))
        .route("/appointments/book", post(appointments::book))
        .route(
            "/appointments/{id}/cancel",
            get(appointments::cancel_form).post(appointments::cancel),
        )
        .route(
            "/appointments/{id}/reschedule",
            get(appointments::reschedule_form).post(appointments::reschedule),
        )
        .route("/medications", get(medications::list))
        .route(
            "/medications/{id}/refill",
            get(medications::refill_form).post(medications::refill),
        )
        .route("/referrals", get(referrals::list).post(referrals::request))
        .route("/referrals/new", get(referrals::new_form))
        .route("/messages", get(messages::list).post(messages::start))
        .route("/messages/new", get(messages::new_form))
        .route("/messages/{id}", get(messages::thread))
        .route("/messages/{id}/reply", post(messages::reply))
        .route("/bills", get(bills::list))
        .route("/bills/{id}/pay", get(bills::pay_form).post(bills::pay))
        .route("/bills/receipts/{kind}/{id}", get(bills::receipt))
        .route("/download", get(download::index))
        .route("/download/record.json", get(download::bundle))
        .route("/download/summary", get(download::summary))
        .route("/profile", get(profile::show))
        .route("/profile/patient", post(profile::switch_patient))
        .route("/session", get(profile::session).post(profile::extend))
        .route("/sign-out", post(profile::sign_out))
        .route("/signed-out", get(profile::signed_out))
        .route("/assets/{file}", get(assets::serve))
        .fallback(errors::not_found_page)
        .method_not_allowed_fallback(errors::method_not_allowed_page)
        .layer(middleware::from_fn(security_headers))
}

/// Mounts the pages on the gateway's router (or only the gateway's plain 404 when
/// `[web] enabled = false`).
pub fn mount(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let plain_404 = || async { (StatusCode::NOT_FOUND, "not found") };
    let web = &state.config().web;
    if !web.enabled {
        return router.fallback(plain_404);
    }
    match web.base() {
        // The pages own every path the gateway's other routers do not.
        "" => router.merge(routes()),
        base => router.nest(base, routes()).fallback(plain_404),
    }
}

/// The security headers of every page and asset; `no-store` on everything but the
/// (patient-free) assets.
async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().contains("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends `Origin: null`
    // with a form post, which the CSRF check rightly refuses.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A 303 to a page of the portal (`to` starts with `/`, relative to the prefix).
pub fn see_other(base: &str, to: &str) -> Response {
    let location = format!("{base}{to}");
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
