//! Portico's client for the EHR's FHIR R4 API.
//!
//! The gateway talks to the EHR only through the [`FhirUpstream`] port: one method that
//! performs a [`FhirRequest`] and returns a [`FhirResponse`] or a classified
//! [`UpstreamError`]. [`FhirClient`] implements it over reqwest; [`Resilient`]
//! (retries, circuit breaker, concurrency limit, `429` handling) and the cache
//! (`portico-cache`) wrap it as decorators implementing the same trait.
//!
//! Invariants this crate keeps:
//! - it knows nothing of the gateway's HTTP API: errors say where a failure came from
//!   (the EHR's verdict, the EHR failing, the network, the token endpoint), never which
//!   status the gateway's client should see;
//! - the gateway's upstream credential is only ever sent to the configured base URL
//!   (paging links are checked, redirects are not followed) and to the token URL;
//! - tokens, secrets, bodies and URLs with queries are never logged or put in error
//!   messages;
//! - secrets come from files or environment variables, resolved once at start-up.
//!
//! Modules: [`config`] (TOML shape, secret resolution), [`auth`] (token cache and
//! refresh), [`request`]/[`response`] (the port's data), [`client`] (reqwest),
//! [`partial`] (answers read as they arrive), [`error`], [`capabilities`] (CapabilityStatement summary), [`resilience`] and
//! [`breaker`] (the resilience decorator), [`duration`] (durations in configuration).

pub mod auth;
pub mod breaker;
pub mod capabilities;
pub mod client;
pub mod config;
pub mod duration;
pub mod error;
pub mod partial;
pub mod request;
pub mod resilience;
pub mod response;
pub mod secret;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use auth::TokenProvider;
pub use breaker::{BreakerPermit, BreakerState, CircuitBreaker};
pub use capabilities::{Capabilities, CapabilitySummary, ResourceCapability, SmartOAuthUris};
pub use client::FhirClient;
pub use config::{
    ClientAuthMethod, ConfigError, ResolvedAuth, ResolvedUpstreamConfig, SigningAlgorithm,
    UpstreamAuthConfig, UpstreamConfig,
};
pub use error::UpstreamError;
pub use partial::{Answer, BodyRest};
pub use request::{CachePartition, FhirRequest, Interaction, ReturnPreference};
pub use resilience::{ResilienceConfig, ResilienceStats, Resilient};
pub use response::{Derived, FhirResponse};
pub use secret::SecretString;

/// The port through which the gateway performs FHIR interactions upstream.
///
/// Object-safe (`Arc<dyn FhirUpstream>`); decorators (cache, retries, circuit breaker)
/// implement it by wrapping another `FhirUpstream`.
#[async_trait::async_trait]
pub trait FhirUpstream: Send + Sync + std::fmt::Debug {
    /// Performs one interaction. A 2xx is `Ok`; anything else is a classified error.
    async fn execute(&self, request: FhirRequest) -> Result<FhirResponse, UpstreamError>;

    /// [`FhirUpstream::execute`] for a reader that takes a long answer's body as it
    /// arrives ([`partial`]). Only the client reads partially; a decorator that needs
    /// whole answers (the cache, for what it keeps) answers whole, and so does this
    /// default.
    async fn execute_partial(&self, request: FhirRequest) -> Result<Answer, UpstreamError> {
        self.execute(request).await.map(Answer::Whole)
    }
}

#[async_trait::async_trait]
impl<T: FhirUpstream + ?Sized> FhirUpstream for Arc<T> {
    async fn execute(&self, request: FhirRequest) -> Result<FhirResponse, UpstreamError> {
        (**self).execute(request).await
    }

    async fn execute_partial(&self, request: FhirRequest) -> Result<Answer, UpstreamError> {
        (**self).execute_partial(request).await
    }
}
