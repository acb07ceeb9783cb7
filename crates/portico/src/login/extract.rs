//! [`PortalAuth`]: how portal API handlers learn who is calling.
//!
//! A request with an `Authorization` header is a bearer request, verified exactly like
//! the facade's ([`crate::authn::Authenticated`]) and not subject to the CSRF rule (a
//! browser never attaches that header on its own). Any other request must carry the
//! session cookie; for state-changing methods it must also pass the CSRF check, before
//! the session is refreshed or touched.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use portico_access::Principal;
use portico_upstream::SecretString;

use super::session::SessionKey;
use crate::authn::{Authenticated, request_id};
use crate::error::{FhirError, ProblemError};
use crate::state::AppState;

/// An authenticated portal request.
#[derive(Debug, Clone)]
pub struct PortalAuth {
    pub principal: Arc<Principal>,
    /// The access token to send upstream in passthrough mode: the session's (refreshed
    /// if it was about to expire) or the caller's bearer token.
    pub token: SecretString,
    /// Set when the request was authenticated by the session cookie.
    pub session: Option<SessionInfo>,
    pub request_id: Option<String>,
}

/// The cookie session behind a [`PortalAuth`].
#[derive(Clone)]
pub struct SessionInfo {
    pub key: SessionKey,
    /// The patient the session was opened for.
    pub patient: String,
    /// The session's CSRF token (the SPA reads it from `/auth/session`).
    pub csrf_token: String,
    /// When the session ends unless used again.
    pub expires_at: u64,
}

impl std::fmt::Debug for SessionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionInfo")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl FromRequestParts<AppState> for PortalAuth {
    type Rejection = ProblemError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let auth = Authenticated::from_request_parts(parts, state)
                .await
                .map_err(|FhirError(e)| ProblemError(e))?;
            return Ok(PortalAuth {
                principal: auth.principal,
                token: auth.token,
                session: None,
                request_id: auth.request_id,
            });
        }
        let (key, session, principal) = state
            .login()
            .authenticate_session(state, parts)
            .await
            .map_err(ProblemError::from)?;
        Ok(PortalAuth {
            principal: Arc::new(principal),
            token: session.access_token.clone(),
            session: Some(SessionInfo {
                key,
                patient: session.patient.clone(),
                csrf_token: session.csrf_token.clone(),
                expires_at: session.expires_at(),
            }),
            request_id: request_id(parts),
        })
    }
}
