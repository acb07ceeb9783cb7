//! The login's errors and their mapping to the API's error format.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::browser::CsrfError;
use super::session::StoreError;
use crate::error::{ApiError, ProblemError};

/// Why a login or a session request failed. Messages are safe to show: they carry no
/// token, code, session id or patient id.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("portal login is not configured")]
    NotConfigured,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("no login is in progress in this browser, or it expired; start again")]
    NoPendingLogin,
    #[error("the login response does not belong to the login this browser started")]
    StateMismatch,
    #[error("the authorization server refused the login: {0}")]
    Denied(String),
    #[error("the id token does not belong to this login")]
    IdToken,
    #[error("the login did not select a patient")]
    NoPatient,
    #[error("the authorization server's token was not accepted")]
    TokenRejected,
    #[error("the authorization server is unavailable; try again shortly")]
    AuthServerUnavailable,
    #[error("log in, or send a bearer token")]
    Unauthenticated,
    #[error("the session has ended; log in again")]
    SessionExpired,
    #[error(transparent)]
    Csrf(#[from] CsrfError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the login configuration is invalid: {0}")]
    Config(String),
    /// Who the login may act for could not be decided (see
    /// [`crate::authn::delegation_error`]).
    #[error("{}", .0.message)]
    Proxy(ApiError),
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        use LoginError as L;
        if let L::Proxy(answer) = e {
            return answer;
        }
        let message = e.to_string();
        let (status, code) = match &e {
            L::NotConfigured => (StatusCode::NOT_FOUND, "login_not_configured"),
            L::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            L::NoPendingLogin => (StatusCode::BAD_REQUEST, "login_not_in_progress"),
            L::StateMismatch => (StatusCode::BAD_REQUEST, "login_state_mismatch"),
            L::Denied(_) => (StatusCode::BAD_REQUEST, "login_denied"),
            L::IdToken => (StatusCode::BAD_REQUEST, "login_failed"),
            L::NoPatient => (StatusCode::FORBIDDEN, "login_no_patient"),
            L::TokenRejected => (StatusCode::BAD_GATEWAY, "login_token_rejected"),
            L::AuthServerUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable"),
            L::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthorized"),
            L::SessionExpired => (StatusCode::UNAUTHORIZED, "session_expired"),
            L::Csrf(_) => (StatusCode::FORBIDDEN, "csrf_failed"),
            L::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "session_store_unavailable"),
            L::Config(_) | L::Proxy(_) => return ApiError::internal(),
        };
        ApiError::new(status, code, message)
    }
}

impl IntoResponse for LoginError {
    fn into_response(self) -> Response {
        ProblemError::from(self).into_response()
    }
}
