//! Patient isolation for Portico: who is asking, and what they may see and change.
//!
//! This crate decides; it does no HTTP (it never depends on axum or reqwest). Whatever
//! needs the network — the issuer's keys, token introspection, fetching a referenced
//! resource, writing audit records — is a small async trait the gateway implements.
//!
//! # The model
//!
//! - A bearer token is verified ([`token::TokenVerifier`]) into a [`Principal`]: subject,
//!   client, the patient compartment(s) it acts in, `fhirUser`, and its SMART scopes
//!   ([`scopes::ScopeSet`], v1 and v2, granular included).
//! - A [`Policy`] (the local FHIR base URL(s) plus explicit extra compartment links)
//!   decides every access of that principal, before the request goes upstream and again
//!   on everything that comes back:
//!   [`Policy::check_read`], [`Policy::narrow_search`], [`Policy::verify_bundle`] (and
//!   [`Policy::verify_bundle_bytes`], the same check entry by entry on a Bundle's bytes,
//!   and [`bundle_stream::BundleStream`], that check made as the bytes arrive),
//!   [`Policy::check_write`] / [`Policy::authorize_write`].
//! - Each decision can be written as an [`audit::AuditRecord`] to an [`audit::AuditSink`].
//!
//! # Invariants
//!
//! - **Compartment by parsed reference.** A resource belongs to patient P only when one of
//!   its R4 Patient-compartment elements holds a reference that parses to `Patient/P`,
//!   relative or absolute on a local base. Never substrings: `Patient/pat-1` is not
//!   `Patient/pat-12`; malformed, contained, logical and foreign-server references never
//!   match. A resource whose compartment elements also name another patient is not
//!   readable (it would reveal them).
//! - **Deny by default.** Unknown types, types outside the compartment (other than the
//!   listed reference data), unparsable scopes, unknown search features, missing patient
//!   context: all refused. A malformed scope is ignored, which can only remove access.
//! - **Never widen, never substitute.** A search naming another patient is refused, not
//!   rewritten to the principal's patient. A search without a patient gets one added.
//! - **Verify what leaves.** Narrowing is best effort against an upstream that may ignore
//!   parameters; [`Policy::verify_bundle`] on every returned Bundle and
//!   [`Policy::check_read`] on every returned resource are the guarantee.
//! - **Check writes before they are sent.** Including the current version for updates and
//!   every referenced compartment resource.
//! - **Reads of foreign resources look missing.** The gateway maps any read denial to
//!   the same 404 as a missing resource.
//! - **Nothing sensitive in logs or errors.** Denial messages and token errors name types,
//!   parameters and rules, never other patients' ids, values, bodies or tokens; the
//!   token cache is keyed by a SHA-256 of the token.

pub mod audit;
mod bundle_bytes;
pub mod delegation;
pub mod filter;
mod policy;
pub mod principal;
pub mod scopes;
mod search;
pub mod token;
mod write;

pub use bundle_bytes::VerifiedBytes;
pub use bundle_bytes::splice::Spliced;
pub use bundle_bytes::stream as bundle_stream;
pub use delegation::{AccessLevel, DelegationRules, Label, ProxyGrant};
pub use policy::{
    Denial, DenialReason, ExtraLink, Policy, REFERENCE_DATA_TYPES, SECURITY_TYPES, VerifyReport,
};
pub use principal::{ClaimNames, ClaimsError, Principal};
pub use scopes::{Interaction, Permission, ScopeSet};
pub use token::{KeySource, TokenError, TokenVerifier, VerifierConfig};
pub use write::{ReferenceResolver, ResolveError, WriteApproval, WriteError};
