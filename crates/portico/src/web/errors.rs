//! Failures as pages: not signed in (the sign-in page), a refused form (CSRF), and the
//! portal's domain and upstream errors as sentences from the catalog — never JSON, never
//! an upstream body. [`sentence`] is the one table from an error's stable code to what
//! the patient reads; forms use it for their error summaries too.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::i18n::{Lang, M};
use super::layout;
use super::viewer::Chrome;
use crate::error::ApiError;
use crate::login::browser::return_to;
use crate::state::AppState;

/// Why a page could not be shown.
#[derive(Debug)]
pub struct WebError {
    chrome: Chrome,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// Not signed in (or the session ended): the sign-in page.
    SignIn,
    /// A form without the session's CSRF token, or from another site.
    Csrf,
    Api(ApiError),
}

impl WebError {
    pub fn sign_in(chrome: &Chrome) -> WebError {
        WebError {
            chrome: chrome.clone(),
            kind: Kind::SignIn,
        }
    }

    pub fn api(chrome: &Chrome, e: ApiError) -> WebError {
        WebError {
            chrome: chrome.clone(),
            kind: Kind::Api(e),
        }
    }

    /// A refusal of the session check: 401 is the sign-in page, a CSRF refusal its own
    /// page, anything else (the authorization server unavailable) an error page.
    pub fn auth(chrome: &Chrome, e: ApiError) -> WebError {
        let kind = match (e.status, e.code) {
            (StatusCode::UNAUTHORIZED, _) => Kind::SignIn,
            (_, "csrf_failed") => Kind::Csrf,
            _ => Kind::Api(e),
        };
        WebError {
            chrome: chrome.clone(),
            kind,
        }
    }

    pub fn not_found(chrome: &Chrome) -> WebError {
        WebError::api(chrome, ApiError::not_found())
    }

    pub fn status(&self) -> StatusCode {
        match &self.kind {
            Kind::SignIn => StatusCode::UNAUTHORIZED,
            Kind::Csrf => StatusCode::FORBIDDEN,
            Kind::Api(e) => e.status,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let chrome = &self.chrome;
        let l = chrome.lang;
        match &self.kind {
            Kind::SignIn => sign_in_page(chrome, StatusCode::UNAUTHORIZED),
            Kind::Csrf => layout::respond(
                chrome,
                StatusCode::FORBIDDEN,
                l.t(M::CsrfTitle),
                html! {
                    p { (l.t(M::CsrfBody)) }
                    p { a href=(chrome.href("/")) { (l.t(M::TryAgain)) } }
                },
            ),
            Kind::Api(e) => {
                let title = match e.status {
                    StatusCode::NOT_FOUND => M::NotFoundTitle,
                    StatusCode::FORBIDDEN => M::ForbiddenTitle,
                    s if s.is_server_error() => M::ServiceProblemTitle,
                    _ => M::ProblemTitle,
                };
                layout::respond(
                    chrome,
                    e.status,
                    l.t(title),
                    html! {
                        p { (sentence(l, e)) }
                        p { a href=(chrome.href("/")) { (l.t(M::BackHome)) } }
                    },
                )
            }
        }
    }
}

/// The sign-in page: what the portal is and a "Sign in" button through the EHR's
/// login, coming back to the page that was asked for.
pub fn sign_in_page(chrome: &Chrome, status: StatusCode) -> Response {
    let l = chrome.lang;
    let back = return_to(Some(&chrome.here)).unwrap_or_else(|_| chrome.href("/"));
    let login = format!(
        "/auth/login?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("return_to", &back)
            .finish()
    );
    layout::respond(
        chrome,
        status,
        l.t(M::SignInTitle),
        html! {
            p.lead { (l.t(M::SignInLead)) }
            ul {
                li { (l.t(M::SignInWhat1)) }
                li { (l.t(M::SignInWhat2)) }
                li { (l.t(M::SignInWhat3)) }
            }
            // A link, not a form: the login leaves for the EHR's authorization server,
            // which `form-action 'self'` would forbid a form to reach.
            p { a.button.button-start href=(login) role="button" { (l.t(M::SignIn)) } }
            p.hint { (l.t(M::SignInHint)) }
        },
    )
}

/// The fallback: no such page.
pub async fn not_found_page(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    WebError::not_found(&Chrome::of(&parts, &state)).into_response()
}

pub async fn method_not_allowed_page(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed",
    );
    WebError::api(&Chrome::of(&parts, &state), e).into_response()
}

/// What the patient reads for an error: the catalog's sentence for its stable code
/// (a refused refill names its reason), else one for its kind of status.
pub fn sentence(l: Lang, e: &ApiError) -> String {
    if e.code == "refill_not_eligible"
        && let Some(reason) = e
            .details
            .as_deref()
            .and_then(|d| d.get("reason"))
            .and_then(|r| r.as_str())
    {
        return l.fill(M::RefillRefused, &[("reason", l.t(refill_reason(reason)))]);
    }
    let m = match e.code {
        "slot_unavailable" => M::ErrSlotUnavailable,
        "not_cancelable" => M::ErrNotCancelable,
        "version_conflict" | "conflict" => M::ErrVersionConflict,
        "recipient_not_allowed" | "invalid_recipient" => M::ErrRecipientNotAllowed,
        "no_recipient" | "no_care_team" => M::ErrNoCareTeam,
        "thread_closed" => M::ErrThreadClosed,
        "specialty_not_allowed" => M::ErrSpecialtyNotAllowed,
        "text_too_long" => M::ErrTextTooLong,
        "amount_exceeds_balance" => M::ErrAmountExceedsBalance,
        "invalid_amount" => M::ErrInvalidAmount,
        "payment_declined" => M::ErrPaymentDeclined,
        "payment_method_invalid" | "invalid_payment_token" => M::ErrPaymentMethodInvalid,
        "card_number_not_accepted" => M::ErrCardNumber,
        "account_not_payable" | "balance_unknown" | "currency_mismatch" => M::ErrAccountNotPayable,
        "payment_unavailable" => M::ErrPaymentUnavailable,
        "payment_not_recorded" => M::ErrPaymentNotRecorded,
        "payment_record_unknown" => M::ErrPaymentRecordUnknown,
        "outcome_unknown" => M::ErrOutcomeUnknown,
        "reschedule_failed" => M::ErrRescheduleFailed,
        "reschedule_incomplete" => M::ErrRescheduleIncomplete,
        "message_not_sent" => M::ErrMessageNotSent,
        "change_not_allowed" => M::ErrNotCancelable,
        "not_supported_by_ehr" => M::ErrNotSupported,
        "scope_missing" => M::ErrScopeMissing,
        "idempotency_in_progress" => M::ErrInProgress,
        "idempotency_key_reused" => M::ErrKeyReused,
        "audit_unavailable" => M::ErrServiceUnavailable,
        "upstream_timeout" | "gateway_timeout" | "deadline_exceeded" => M::ErrTimeout,
        "not_found" => M::ErrNotFound,
        "service_type_required" => M::ErrServiceTypeRequired,
        _ => match e.status {
            StatusCode::NOT_FOUND => M::ErrNotFound,
            StatusCode::BAD_REQUEST => M::ErrInvalid,
            StatusCode::FORBIDDEN => M::ErrScopeMissing,
            StatusCode::METHOD_NOT_ALLOWED => M::ErrNotFound,
            s if s.is_server_error() => M::ErrServiceUnavailable,
            _ => M::ErrInvalid,
        },
    };
    l.t(m).to_owned()
}

/// The catalog's sentence for a refill eligibility reason (its stable code).
pub fn refill_reason(code: &str) -> M {
    match code {
        "not_active" => M::ReasonNotActive,
        "not_an_order" => M::ReasonNotAnOrder,
        "reported_medication" => M::ReasonReported,
        "not_yet_valid" => M::ReasonNotYetValid,
        "expired" => M::ReasonExpired,
        "acute_course" => M::ReasonAcute,
        "no_refills_left" => M::ReasonNoRefillsLeft,
        "already_requested" => M::ReasonAlreadyRequested,
        "too_soon" => M::ReasonTooSoon,
        "history_unavailable" => M::ReasonHistoryUnavailable,
        _ => M::ReasonOther,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: StatusCode, code: &'static str) -> ApiError {
        ApiError::new(status, code, "the domain's English message")
    }

    #[test]
    fn a_refused_refill_names_its_reason() {
        let mut e = error(StatusCode::UNPROCESSABLE_ENTITY, "refill_not_eligible");
        e.details = Some(Box::new(serde_json::json!({"reason": "no_refills_left"})));
        assert_eq!(
            sentence(Lang::En, &e),
            "You cannot ask for a refill of this prescription: no refills are left. Ask your care team to renew it."
        );
        assert!(sentence(Lang::Es, &e).starts_with("No puede pedir la renovación"));
    }

    #[test]
    fn what_may_have_happened_is_never_said_not_to_have() {
        for code in [
            "outcome_unknown",
            "payment_not_recorded",
            "payment_record_unknown",
            "reschedule_incomplete",
            "message_not_sent",
        ] {
            let text = sentence(Lang::En, &error(StatusCode::BAD_GATEWAY, code));
            assert!(!text.contains("Nothing has been changed"), "{code}: {text}");
            assert!(!text.contains("English message"), "{code}");
        }
        // Unknown codes fall back on their status, in the patient's language.
        let text = sentence(
            Lang::Es,
            &error(StatusCode::SERVICE_UNAVAILABLE, "new_code"),
        );
        assert!(text.starts_with("El sistema"), "{text}");
        assert_eq!(
            sentence(Lang::En, &error(StatusCode::NOT_FOUND, "not_found")),
            Lang::En.t(M::ErrNotFound)
        );
    }
}
