//! Forms: the posted body ([`FormPost`]: the session's CSRF token taken from a hidden
//! field and checked by the API's own rule), idempotency keys ([`new_key`], [`run`]:
//! the API's [`run_once`] with the key from a hidden field), and errors next to their
//! fields ([`Errors`], [`summary`] and the field helpers, after the GOV.UK Design
//! System's error summary and error messages).
//!
//! The CSRF check stays the one in `crate::login` (`check_csrf`): a form's token is
//! handed to it as the `X-CSRF-Token` header would be, only for
//! `application/x-www-form-urlencoded` bodies of this router, so the origin check and
//! the constant-time comparison are the same for pages and API. A form that also sends
//! the header carries two tokens and is refused.

use std::time::Duration;

use axum::body::to_bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header};
use maud::{Markup, html};
use portico_portal::idempotency;
use portico_portal::{Ctx, Idem};
use serde::Serialize;
use serde_json::Value;

use super::errors::{WebError, sentence};
use super::i18n::{Lang, M};
use super::viewer::{Chrome, Viewer};
use crate::error::{ApiError, RequestError};
use crate::login::browser::CSRF_HEADER;
use crate::portal::{Done, run_once};
use crate::state::AppState;

/// The hidden field carrying the session's CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";
/// The hidden field carrying a form's idempotency key.
pub const KEY_FIELD: &str = "idempotency_key";
/// The largest form body read.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The fields of a posted form, in order.
#[derive(Debug, Clone, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, as sent.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        self.raw(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// Sets (or replaces) a field, for a form shown pre-filled.
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.retain(|(k, _)| k != name);
        self.0.push((name.to_owned(), value.to_owned()));
    }

    /// Every field except the CSRF token and the key, as a JSON object (for the card
    /// number check).
    pub fn as_json(&self) -> Value {
        let map = self
            .0
            .iter()
            .filter(|(k, _)| k != CSRF_FIELD && k != KEY_FIELD)
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Value::Object(map)
    }

    /// The value to put back into a re-rendered form.
    pub fn value(&self, name: &str) -> String {
        self.raw(name).unwrap_or_default().to_owned()
    }
}

/// A signed-in form post: the viewer (CSRF checked) and the fields.
#[derive(Debug)]
pub struct FormPost {
    pub viewer: Viewer,
    pub fields: Fields,
}

impl FromRequest<AppState> for FormPost {
    type Rejection = WebError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let chrome = Chrome::of(&parts, state);
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(WebError::api(
                &chrome,
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send a form",
                ),
            ));
        }
        let bytes = to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
            WebError::api(
                &chrome,
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "too large",
                ),
            )
        })?;
        let fields = Fields(
            url::form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .take(200)
                .collect(),
        );
        // Each token sent becomes one header value: none is refused as missing, two as
        // wrong, one is compared with the session's by the login's CSRF rule.
        for (_, token) in fields.0.iter().filter(|(k, _)| k == CSRF_FIELD) {
            let value = HeaderValue::from_str(token)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
            parts.headers.append(CSRF_HEADER, value);
        }
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        Ok(FormPost { viewer, fields })
    }
}

/// A fresh idempotency key for a form about to be shown.
pub fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The hidden fields every form carries: the CSRF token and, for writes, a key.
pub fn hidden(viewer: &Viewer, key: Option<&str>) -> Markup {
    html! {
        input type="hidden" name=(CSRF_FIELD) value=(viewer.csrf());
        @if let Some(key) = key {
            input type="hidden" name=(KEY_FIELD) value=(key);
        }
    }
}

/// The key a form was posted with, kept for the form shown again after an error (a
/// retry with it is safe: failures are not remembered, and an unknown outcome is found
/// by it), or a fresh one when it had none.
pub fn posted_key(fields: &Fields) -> String {
    fields
        .raw(KEY_FIELD)
        .filter(|k| idempotency::valid_key(k))
        .map_or_else(new_key, str::to_owned)
}

/// Runs a write once per the form's idempotency key, exactly like the API's
/// `Idempotent::run`. A double submission that arrives while the first still runs
/// waits (briefly) for the first one's answer instead of failing.
pub async fn run<T, E>(
    viewer: &Viewer,
    fields: &Fields,
    action: &'static str,
    fingerprint: &Value,
    status: StatusCode,
    act: impl AsyncFnOnce(Ctx<'_>, &Idem) -> Result<T, E>,
) -> Result<Value, ApiError>
where
    T: Serialize,
    E: Into<ApiError>,
{
    let key = match fields.raw(KEY_FIELD) {
        Some(k) if idempotency::valid_key(k) => Some(k),
        Some(_) => return Err(RequestError::InvalidIdempotencyKey.into()),
        None => None,
    };
    let (state, caller) = (&viewer.state, &viewer.caller);
    let first = run_once(state, caller, key, action, fingerprint, status, act).await;
    let in_progress = |r: &Result<Done, crate::error::ProblemError>| matches!(r, Err(e) if e.0.code == "idempotency_in_progress");
    let mut result = first;
    let mut tries = 0;
    while in_progress(&result) && tries < 50 {
        tries += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The first request's answer is replayed once it is remembered. Should the
        // first one have failed meanwhile, this does not act again: the patient is
        // asked to try again (with the same key).
        result = run_once(
            state,
            caller,
            key,
            action,
            fingerprint,
            status,
            async |_, _| Err::<Value, ApiError>(RequestError::IdempotencyInProgress.into()),
        )
        .await;
    }
    result.map(|done| done.body).map_err(|e| e.0)
}

/// The errors of a form: each with the field it belongs to (its input's id), if any.
#[derive(Debug, Default)]
pub struct Errors(Vec<(Option<&'static str>, String)>);

impl Errors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn add(&mut self, field: Option<&'static str>, text: impl Into<String>) {
        self.0.push((field, text.into()));
    }

    /// A domain or upstream error, as the catalog says it, next to `field`.
    pub fn from_api(l: Lang, field: Option<&'static str>, e: &ApiError) -> Errors {
        let mut errors = Errors::default();
        errors.add(field, sentence(l, e));
        errors
    }

    pub fn of(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == Some(field))
            .map(|(_, t)| t.as_str())
    }

    /// The page title, prefixed "Error: " when there are errors (so that screen
    /// readers announce them first).
    pub fn title(&self, l: Lang, title: &str) -> String {
        if self.is_empty() {
            title.to_owned()
        } else {
            format!("{}: {title}", l.t(M::ErrorPrefix))
        }
    }

    /// The status of a form page shown again with these errors.
    pub fn status(e: &ApiError) -> StatusCode {
        if e.status.is_server_error() {
            e.status
        } else if e.status == StatusCode::CONFLICT {
            StatusCode::CONFLICT
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        }
    }
}

/// The error summary at the top of a form page: linked to each field.
pub fn summary(l: Lang, errors: &Errors) -> Markup {
    html! {
        @if !errors.is_empty() {
            div.error-summary #error-summary role="alert" tabindex="-1" aria-labelledby="error-summary-title" {
                h2 #error-summary-title { (l.t(M::ThereIsAProblem)) }
                ul {
                    @for (field, text) in &errors.0 {
                        li {
                            @if let Some(f) = field {
                                a href=(format!("#{f}")) { (text) }
                            } @else {
                                (text)
                            }
                        }
                    }
                }
            }
        }
    }
}

fn described_by(id: &str, hint: bool, error: bool) -> Option<String> {
    let mut ids = Vec::new();
    if hint {
        ids.push(format!("{id}-hint"));
    }
    if error {
        ids.push(format!("{id}-error"));
    }
    (!ids.is_empty()).then(|| ids.join(" "))
}

fn field_error(l: Lang, id: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = error {
            p.error-message id=(format!("{id}-error")) {
                span.visually-hidden { (l.t(M::ErrorPrefix)) ": " } (e)
            }
        }
    }
}

/// A labelled text input (`kind`: text, date, number...).
#[allow(clippy::too_many_arguments)]
pub fn input(
    l: Lang,
    id: &'static str,
    kind: &str,
    label: &str,
    hint: Option<&str>,
    value: &str,
    errors: &Errors,
    extra_class: &str,
) -> Markup {
    let error = errors.of(id);
    html! {
        div.field .field-error[error.is_some()] {
            label.label for=(id) { (label) }
            @if let Some(h) = hint { p.hint id=(format!("{id}-hint")) { (h) } }
            (field_error(l, id, error))
            input.input .(extra_class) .input-error[error.is_some()] type=(kind) id=(id) name=(id) value=(value)
                aria-describedby=[described_by(id, hint.is_some(), error.is_some())]
                aria-invalid=[error.map(|_| "true")];
        }
    }
}

/// A labelled textarea.
pub fn textarea(
    l: Lang,
    id: &'static str,
    label: &str,
    hint: Option<&str>,
    value: &str,
    errors: &Errors,
) -> Markup {
    let error = errors.of(id);
    html! {
        div.field .field-error[error.is_some()] {
            label.label for=(id) { (label) }
            @if let Some(h) = hint { p.hint id=(format!("{id}-hint")) { (h) } }
            (field_error(l, id, error))
            textarea.textarea .input-error[error.is_some()] id=(id) name=(id) rows="4"
                aria-describedby=[described_by(id, hint.is_some(), error.is_some())]
                aria-invalid=[error.map(|_| "true")] { (value) }
        }
    }
}

/// A labelled select of (value, text) options.
pub fn select(
    l: Lang,
    id: &'static str,
    label: &str,
    options: &[(String, String)],
    selected: &str,
    errors: &Errors,
) -> Markup {
    let error = errors.of(id);
    html! {
        div.field .field-error[error.is_some()] {
            label.label for=(id) { (label) }
            (field_error(l, id, error))
            select.select id=(id) name=(id)
                aria-describedby=[described_by(id, false, error.is_some())]
                aria-invalid=[error.map(|_| "true")] {
                @for (value, text) in options {
                    option value=(value) selected[value == selected] { (text) }
                }
            }
        }
    }
}

/// A fieldset of radios: (value, label, hint) — the first radio's id is `id`, so that
/// the error summary's link lands on it.
pub fn radios(
    l: Lang,
    id: &'static str,
    legend: &str,
    options: &[(String, String, Option<String>)],
    selected: &str,
    errors: &Errors,
) -> Markup {
    let error = errors.of(id);
    html! {
        div.field .field-error[error.is_some()] {
            fieldset.fieldset aria-describedby=[described_by(id, false, error.is_some())] {
                legend.legend { (legend) }
                (field_error(l, id, error))
                div.radios {
                    @for (i, (value, text, hint)) in options.iter().enumerate() {
                        @let rid = if i == 0 { id.to_owned() } else { format!("{id}-{i}") };
                        div.radio {
                            input.radio-input type="radio" id=(rid) name=(id) value=(value) checked[value == selected]
                                aria-describedby=[hint.as_ref().map(|_| format!("{rid}-hint"))];
                            label.radio-label for=(rid) { (text) }
                            @if let Some(h) = hint { p.hint.radio-hint id=(format!("{rid}-hint")) { (h) } }
                        }
                    }
                }
            }
        }
    }
}
