//! [`Viewer`]: who is looking at a page — the portal session (cookie, with the CSRF
//! rule for unsafe methods, exactly as the API's [`PortalAuth`]), the patient acted for
//! and the language — and [`Chrome`], what the page frame needs to know about them.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use portico_portal::Ctx;

use super::errors::WebError;
use super::i18n::Lang;
use crate::clock::unix_now;
use crate::login::PortalAuth;
use crate::portal::PatientCaller;
use crate::state::AppState;

/// The cookie naming the patient a proxy acts for (checked against the login's
/// patients on every request; the API uses the `Portico-Patient` header instead).
pub const PATIENT_COOKIE: &str = "portico_patient";

/// What the page frame knows about the request.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub lang: Lang,
    /// The pages' prefix without a trailing slash (`""` for `/`).
    pub base: String,
    /// The current path and query (for `return_to` and the language switcher).
    pub here: String,
    /// Set when a session is signed in.
    pub session: Option<SessionChrome>,
    /// `Set-Cookie` for a language chosen by `?lang=`.
    pub lang_cookie: Option<HeaderValue>,
}

#[derive(Clone)]
pub struct SessionChrome {
    pub csrf: String,
    pub expires_at: u64,
    pub warn_seconds: u64,
    /// The name of the patient whose pages these are, when the login may act for
    /// someone else (shown on every page, with a way to switch).
    pub acting_for: Option<String>,
}

impl std::fmt::Debug for SessionChrome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionChrome")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Chrome {
    /// A link to a page of the portal (`to` starts with `/`).
    pub fn href(&self, to: &str) -> String {
        if to == "/" && !self.base.is_empty() {
            return self.base.clone();
        }
        format!("{}{to}", self.base)
    }

    /// The chrome of a request, before (or without) authentication.
    pub fn of(parts: &Parts, state: &AppState) -> Chrome {
        let (lang, chosen) = Lang::negotiate(parts.uri.query(), &parts.headers);
        // Under a prefix the router sees the path without it; pages link to the whole.
        let uri = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or(&parts.uri, |o| &o.0);
        let mut here = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let base = state.config().web.base();
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            // A form shown again after a post: its links (the language switcher, "stay
            // signed in", signing in again) lead back to the page the form was on,
            // which a GET can show, not to the post's own address.
            here = same_origin_path(&parts.headers, state).unwrap_or_else(|| {
                if base.is_empty() {
                    "/".to_owned()
                } else {
                    base.to_owned()
                }
            });
        }
        let secure = state.config().public_url().starts_with("https://");
        Chrome {
            lang,
            base: base.to_owned(),
            here,
            session: None,
            lang_cookie: if chosen { lang.cookie(secure) } else { None },
        }
    }
}

/// The path (and query) of a same-origin `Referer`, if it is a page of the gateway.
fn same_origin_path(headers: &HeaderMap, state: &AppState) -> Option<String> {
    let referer = url::Url::parse(headers.get(header::REFERER)?.to_str().ok()?).ok()?;
    let public = url::Url::parse(&state.config().public_url()).ok()?;
    if referer.origin() != public.origin() {
        return None;
    }
    let path = match referer.query() {
        Some(q) => format!("{}?{q}", referer.path()),
        None => referer.path().to_owned(),
    };
    crate::login::browser::return_to(Some(&path)).ok()
}

/// A signed-in request acting for one patient.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub state: AppState,
    pub caller: PatientCaller,
    pub chrome: Chrome,
}

impl Viewer {
    pub fn lang(&self) -> Lang {
        self.chrome.lang
    }

    /// The acting patient's context, exactly as the API's handlers get it.
    pub fn ctx(&self) -> Ctx<'_> {
        crate::portal::ctx(&self.state, &self.caller)
    }

    pub fn csrf(&self) -> &str {
        self.chrome.session.as_ref().map_or("", |s| s.csrf.as_str())
    }

    /// A [`WebError`] in this viewer's language.
    pub fn error(&self, e: impl Into<crate::error::ApiError>) -> WebError {
        WebError::api(&self.chrome, e.into())
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let mut chrome = Chrome::of(parts, state);
        // Only the cookie session: a bearer token is for the API, not for pages.
        if parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(WebError::sign_in(&chrome));
        }
        let auth = PortalAuth::from_request_parts(parts, state)
            .await
            .map_err(|e| WebError::auth(&chrome, e.0))?;
        let Some(session) = auth.session.as_ref() else {
            return Err(WebError::sign_in(&chrome));
        };
        chrome.session = Some(SessionChrome {
            csrf: session.csrf_token.clone(),
            expires_at: session.expires_at.max(unix_now()),
            warn_seconds: state.config().web.timeout_warning_seconds,
            acting_for: None,
        });
        // A remembered choice of patient, if it is still one of the login's; else the
        // one the session was opened for; else (a proxy whose access to that one ended)
        // the first the login may act for.
        let patients = &auth.principal.patients;
        let chosen = crate::login::browser::cookie(&parts.headers, PATIENT_COOKIE)
            .filter(|p| patients.iter().any(|q| q == p))
            .or(Some(session.patient.as_str()))
            .filter(|p| patients.iter().any(|q| q == p))
            .or(patients.first().map(String::as_str))
            .map(str::to_owned);
        let caller = crate::portal::caller_for(state, &auth, chosen.as_deref())
            .map_err(|e| WebError::api(&chrome, (&e).into()))?;
        let mut viewer = Viewer {
            state: state.clone(),
            caller: PatientCaller { caller, auth },
            chrome,
        };
        let acts_for_others = viewer.caller.auth.principal.patients.len() > 1
            || viewer.caller.caller.proxy().is_some();
        if acts_for_others {
            let name = match viewer
                .ctx()
                .read("Patient", &viewer.caller.caller.patient)
                .await
            {
                Ok(patient) => portico_portal::me::display_name(&patient.resource),
                Err(e) => return Err(viewer.error(e)),
            };
            if let Some(s) = viewer.chrome.session.as_mut() {
                s.acting_for = name.or_else(|| Some(viewer.caller.caller.patient.clone()));
            }
        }
        Ok(viewer)
    }
}
