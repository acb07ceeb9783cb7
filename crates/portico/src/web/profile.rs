//! Who I am, which patients I may act for (and switching between them), the session
//! (how long it lasts, staying signed in) and signing out.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use portico_access::AccessLevel;
use portico_portal::me;

use super::forms::{FormPost, hidden};
use super::i18n::M;
use super::layout::{self, row, stale};
use super::see_other;
use super::viewer::{Chrome, PATIENT_COOKIE, Viewer};
use crate::clock::unix_now;
use crate::login::browser::{CookiePolicy, return_to};
use crate::state::AppState;

pub async fn show(v: Viewer) -> Response {
    let me = match me::me(v.ctx()).await {
        Ok(me) => me,
        Err(e) => return v.error(e).into_response(),
    };
    let l = v.lang();
    let c = &v.chrome;
    let acting = &v.caller.caller.patient;
    // Each patient the login may act for, by name, with what it may do for them.
    let mut choices = Vec::with_capacity(me.patients.len());
    for p in &me.patients {
        let name = match patient_name(&v, p).await {
            Ok(name) => name.unwrap_or_else(|| p.clone()),
            Err(e) => return v.error(e).into_response(),
        };
        let level = match v.caller.auth.principal.proxy_for(p).map(|g| g.level) {
            None => l.t(M::YourOwnRecord),
            Some(AccessLevel::Full) => l.t(M::AccessLevelFull),
            Some(AccessLevel::ReadOnly) => l.t(M::AccessLevelReadOnly),
            Some(AccessLevel::BillingOnly) => l.t(M::AccessLevelBillingOnly),
        };
        choices.push((p, name, level));
    }
    let content = html! {
        (stale(l, me.stale))
        // A proxy sees the details of the patient they act for, not their own.
        h2 { (l.t(if v.caller.caller.proxy().is_some() { M::AboutThePatient } else { M::AboutYou })) }
        dl.summary {
            (row(l.t(M::Name), me.name.as_deref()))
            (row(l.t(M::BirthDate), me.birth_date.as_deref().map(|d| l.date(d)).as_deref()))
            (row(l.t(M::Gender), me.gender.as_deref()))
            @for contact in &me.contact { (row(l.t(M::Contact), Some(contact))) }
        }
        h2 { (l.t(M::ActingFor)) }
        @if choices.len() > 1 {
            form method="post" action=(c.href("/profile/patient")) {
                (hidden(&v, None))
                fieldset.fieldset {
                    legend.legend { (l.t(M::ChoosePatient)) }
                    div.radios {
                        @for (i, (p, name, level)) in choices.iter().enumerate() {
                            @let id = format!("patient-{i}");
                            div.radio {
                                input.radio-input type="radio" name="patient" id=(id) value=(p) checked[*p == acting];
                                label.radio-label for=(id) { (name) " (" (level) ")" }
                            }
                        }
                    }
                }
                button.button type="submit" { (l.t(M::SwitchPatient)) }
            }
        } @else {
            p { (l.t(M::OnlyYourself)) }
        }
        h2 { (l.t(M::SessionTitle)) }
        p { a href=(c.href("/session")) { (l.t(M::SessionManage)) } }
    };
    layout::ok(c, l.t(M::ProfileTitle), content)
}

/// The display name of one of the login's patients, read as the login acting for
/// them (so a proxy's read is checked and audited like any other).
async fn patient_name(
    v: &Viewer,
    patient: &str,
) -> Result<Option<String>, portico_portal::PortalError> {
    let caller = crate::portal::caller_for(&v.state, &v.caller.auth, Some(patient))?;
    let read = v
        .state
        .portal()
        .ctx(&caller)
        .read("Patient", patient)
        .await?;
    Ok(me::display_name(&read.resource))
}

pub async fn switch_patient(form: FormPost) -> Response {
    let v = form.viewer;
    let chosen = form.fields.text("patient").unwrap_or_default();
    // Only one of the login's own patients; anything else is the same 404 as a
    // missing one.
    if !v.caller.auth.principal.patients.contains(&chosen) {
        return v.error(crate::error::ApiError::not_found()).into_response();
    }
    let secure = v.state.config().public_url().starts_with("https://");
    let mut response = see_other(&v.chrome.base, "/?done=patient");
    if let Some(cookie) = (CookiePolicy { secure }).set(PATIENT_COOKIE, &chosen, "/", 24 * 3600) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The session page: when it ends and a plain form to stay signed in (what the
/// script's warning offers, without JavaScript).
pub async fn session(v: Viewer) -> Response {
    let l = v.lang();
    let c = &v.chrome;
    let minutes = c
        .session
        .as_ref()
        .map_or(0, |s| s.expires_at.saturating_sub(unix_now()).div_ceil(60));
    let content = html! {
        p { (l.fill(M::SessionEndsAt, &[("minutes", &minutes.to_string())])) }
        p { (l.t(M::SessionExplain)) }
        form method="post" action=(c.href("/session")) {
            (hidden(&v, None))
            input type="hidden" name="return_to" value=(c.href("/session"));
            button.button type="submit" { (l.t(M::StaySignedIn)) }
        }
    };
    layout::ok(c, l.t(M::SessionTitle), content)
}

/// `POST /session`: any signed-in request moves the session's idle deadline; this one
/// does only that, then goes back where the patient was.
pub async fn extend(form: FormPost) -> Response {
    let v = form.viewer;
    let back = return_to(form.fields.raw("return_to")).unwrap_or_else(|_| v.chrome.href("/"));
    let sep = if back.contains('?') { '&' } else { '?' };
    let back = if back.contains("done=") {
        back
    } else {
        format!("{back}{sep}done=extended")
    };
    see_other("", &back)
}

/// `POST /sign-out`: ends the session (CSRF-checked like every form) and clears its
/// cookie, as `POST /auth/logout` does for the API.
pub async fn sign_out(form: FormPost) -> Response {
    let v = form.viewer;
    let login = v.state.login();
    if let Some(info) = &v.caller.auth.session
        && let Err(e) = login.end_session(&info.key).await
    {
        tracing::warn!(error = %e, "a session could not be ended");
        return v
            .error(crate::error::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "session store unavailable",
            ))
            .into_response();
    }
    tracing::info!("portal session ended by sign-out");
    let secure = v.state.config().public_url().starts_with("https://");
    let policy = CookiePolicy { secure };
    let mut response = see_other(&v.chrome.base, "/signed-out");
    for cookie in [login.cookie_name(), PATIENT_COOKIE] {
        if let Some(clear) = policy.clear(cookie, "/") {
            response.headers_mut().append(header::SET_COOKIE, clear);
        }
    }
    response
}

pub async fn signed_out(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let chrome = Chrome::of(&parts, &state);
    let l = chrome.lang;
    let content = html! {
        p { (l.t(M::SignedOutText)) }
        p { a href=(chrome.href("/")) { (l.t(M::SignInAgain)) } }
    };
    layout::ok(&chrome, l.t(M::SignedOutTitle), content)
}
