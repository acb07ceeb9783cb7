//! Who is asking: the [`Principal`] built from verified token claims.
//!
//! A principal acts in one or more patient compartments:
//!
//! - `patients`: the launch patient (the SMART `patient` claim), or several for a proxy
//!   (a parent for their children). `patient/` scopes apply to these compartments.
//! - `fhir_user`: when it is a `Patient` on the local server, `user/` scopes apply to that
//!   patient's compartment. `user/` scopes of any other kind of user (a Practitioner, a
//!   RelatedPerson) grant nothing here: Portico is a patient-facing gateway and has no
//!   model of what a clinician may see.
//! - `system/` scopes are never honoured for these principals. A patient-facing token
//!   that also carries `system/*.rs` (a misconfigured authorization server, or a confused
//!   deputy) would otherwise read every patient: the compartment is the invariant, and
//!   system access is only what the gateway itself uses upstream.
//!
//! A token with `patient/` scopes but no patient claim is refused: the SMART spec says the
//! server SHALL establish a patient context, and a missing one must not mean "any patient".

use std::fmt;

use portico_fhir::reference::{Reference, is_valid_id};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::delegation::ProxyGrant;
use crate::scopes::{Context, ScopeSet, hex};

/// The authenticated caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: String,
    /// The OAuth client (`client_id`, `azp` or `cid` claim).
    pub client_id: Option<String>,
    /// The patient compartments `patient/` scopes apply to, without duplicates.
    pub patients: Vec<String>,
    /// The `fhirUser` claim, when it parses as a literal reference.
    pub fhir_user: Option<Reference>,
    pub scopes: ScopeSet,
    /// `exp`, in seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// `iss`, when the token carried one.
    pub issuer: Option<String>,
    /// The patients of `patients` this principal acts for as a proxy, with what the
    /// relationship allows ([`crate::delegation`]). A patient without a grant here is
    /// the principal's own (or the token's launch context). Empty until the gateway
    /// has resolved the login's relationships from the EHR.
    pub proxies: Vec<ProxyGrant>,
}

/// Patient ids are not logged: `Debug` shows counts and the scopes only.
impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("client_id", &self.client_id)
            .field("patients", &self.patients.len())
            .field(
                "fhir_user_type",
                &self.fhir_user.as_ref().map(|r| r.resource_type.as_str()),
            )
            .field("scopes", &self.scopes.to_string())
            .field("expires_at", &self.expires_at)
            .field("proxies", &self.proxies.len())
            .finish_non_exhaustive()
    }
}

/// The claim names to read; EHRs differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    /// The launch patient: a string id, or an array of ids for a proxy. Default `patient`.
    pub patient: String,
    /// Default `fhirUser`.
    pub fhir_user: String,
    /// A space-separated string. Default `scope`.
    pub scope: String,
    /// An array of strings (RFC 9068 style). Default `scp`.
    pub scp: String,
    /// Tried in order. Default `client_id`, `azp`, `cid`.
    pub client_id: Vec<String>,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            patient: "patient".into(),
            fhir_user: "fhirUser".into(),
            scope: "scope".into(),
            scp: "scp".into(),
            client_id: vec!["client_id".into(), "azp".into(), "cid".into()],
        }
    }
}

/// Why verified claims do not make a principal. Messages never contain claim values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("token has no subject")]
    MissingSubject,
    #[error("token claim {0} is malformed")]
    Invalid(&'static str),
    #[error("token has patient scopes but no patient context")]
    MissingPatient,
}

impl Principal {
    /// Builds a principal from verified claims (a JWT payload or an RFC 7662 response).
    pub fn from_claims(
        claims: &Map<String, Value>,
        names: &ClaimNames,
    ) -> Result<Principal, ClaimsError> {
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) | None => return Err(ClaimsError::MissingSubject),
            Some(_) => return Err(ClaimsError::Invalid("sub")),
        };
        let client_id = names
            .client_id
            .iter()
            .find_map(|name| claims.get(name)?.as_str())
            .map(str::to_owned);
        let scopes = read_scopes(claims, names)?;
        let patients = read_patients(claims.get(&names.patient))?;
        let fhir_user = match claims.get(&names.fhir_user) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Reference::parse(s).ok(),
            Some(_) => return Err(ClaimsError::Invalid("fhirUser")),
        };
        if patients.is_empty() && scopes.has_context(Context::Patient) {
            return Err(ClaimsError::MissingPatient);
        }
        let expires_at = match claims.get("exp") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or(ClaimsError::Invalid("exp"))?),
        };
        let issuer = claims.get("iss").and_then(Value::as_str).map(str::to_owned);
        Ok(Principal {
            subject,
            client_id,
            patients,
            fhir_user,
            scopes,
            expires_at,
            issuer,
            proxies: Vec::new(),
        })
    }

    /// The grant under which this principal acts for `patient`, if it is a proxy for
    /// them.
    pub fn proxy_for(&self, patient: &str) -> Option<&ProxyGrant> {
        self.proxies.iter().find(|g| g.patient == patient)
    }

    /// A stable hex digest of everything that decides what this principal may see
    /// (subject, client, patients, fhirUser, scopes, proxy grants): for binding paging
    /// cursors and partitioning caches. Patient ids do not appear in clear.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        let grants: String = self
            .proxies
            .iter()
            .map(|g| {
                let labels: Vec<String> = g.withheld.iter().map(ToString::to_string).collect();
                format!(
                    "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1e}",
                    g.patient,
                    g.relationship,
                    g.level.as_str(),
                    labels.join(" ")
                )
            })
            .collect();
        for part in [
            self.subject.as_str(),
            self.client_id.as_deref().unwrap_or(""),
            &self.patients.join(","),
            &self
                .fhir_user
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            self.scopes.canonical(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        // Only proxies have this part: an ordinary login's fingerprint (and the paging
        // cursors bound to it) is what it was before grants existed.
        if !grants.is_empty() {
            h.update((grants.len() as u64).to_be_bytes());
            h.update(grants.as_bytes());
        }
        hex(&h.finalize())
    }
}

/// The union of the `scope` (a string) and `scp` (a list) claims, made into one set.
fn read_scopes(claims: &Map<String, Value>, names: &ClaimNames) -> Result<ScopeSet, ClaimsError> {
    let mut scopes: Vec<&str> = Vec::new();
    for name in [&names.scope, &names.scp] {
        match claims.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => scopes.extend(s.split_whitespace()),
            Some(Value::Array(items)) => {
                for item in items {
                    scopes.push(item.as_str().ok_or(ClaimsError::Invalid("scope"))?);
                }
            }
            Some(_) => return Err(ClaimsError::Invalid("scope")),
        }
    }
    Ok(ScopeSet::from_scopes(scopes))
}

/// The patient claim: one id or an array of ids. `Patient/x` is accepted as `x`; anything
/// that is not a valid FHIR id makes the whole claim invalid (never silently dropped,
/// which could change whose context the token has).
fn read_patients(claim: Option<&Value>) -> Result<Vec<String>, ClaimsError> {
    let values: Vec<&Value> = match claim {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(items)) => items.iter().collect(),
        Some(v) => vec![v],
    };
    let mut patients: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        let s = v.as_str().ok_or(ClaimsError::Invalid("patient"))?;
        let id = if is_valid_id(s) {
            s.to_owned()
        } else {
            match Reference::parse(s) {
                Ok(r)
                    if r.resource_type == "Patient" && r.base.is_none() && r.version.is_none() =>
                {
                    r.id
                }
                _ => return Err(ClaimsError::Invalid("patient")),
            }
        };
        if !patients.contains(&id) {
            patients.push(id);
        }
    }
    Ok(patients)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn from_smart_claims() {
        let p = Principal::from_claims(
            &claims(json!({
                "sub": "u1", "client_id": "app", "patient": "pat-1",
                "fhirUser": "https://ehr/fhir/Patient/pat-1",
                "scope": "openid fhirUser patient/Observation.rs", "exp": 2000000000u64,
                "iss": "https://ehr/auth"
            })),
            &ClaimNames::default(),
        )
        .unwrap();
        assert_eq!(p.subject, "u1");
        assert_eq!(p.client_id.as_deref(), Some("app"));
        assert_eq!(p.patients, vec!["pat-1"]);
        assert!(p.fhir_user.as_ref().unwrap().is("Patient", "pat-1"));
        assert!(p.scopes.flags().openid);
        assert_eq!(p.expires_at, Some(2_000_000_000));
        assert_eq!(p.issuer.as_deref(), Some("https://ehr/auth"));
        let debug = format!("{p:?}");
        assert!(!debug.contains("pat-1"), "{debug}");
    }

    #[test]
    fn scp_arrays_and_proxies() {
        let p = Principal::from_claims(
            &claims(json!({
                "sub": "u", "azp": "app", "patient": ["pat-1", "Patient/pat-12", "pat-1"],
                "scp": ["patient/Observation.rs", "bogus"]
            })),
            &ClaimNames::default(),
        )
        .unwrap();
        assert_eq!(p.patients, vec!["pat-1", "pat-12"]);
        assert_eq!(p.client_id.as_deref(), Some("app"));
        assert_eq!(p.scopes.resource_scopes().len(), 1);
    }

    #[test]
    fn configurable_names() {
        let names = ClaimNames {
            patient: "launch_patient".into(),
            scope: "permissions".into(),
            ..ClaimNames::default()
        };
        let p = Principal::from_claims(
            &claims(json!({"sub":"u","launch_patient":"p9","permissions":"patient/*.rs","patient":"other"})),
            &names,
        )
        .unwrap();
        assert_eq!(p.patients, vec!["p9"]);
    }

    #[test]
    fn refusals() {
        let names = ClaimNames::default();
        let err = |v: Value| Principal::from_claims(&claims(v), &names).unwrap_err();
        assert_eq!(
            err(json!({"scope":"patient/*.rs","patient":"p"})),
            ClaimsError::MissingSubject
        );
        assert_eq!(
            err(json!({"sub":"u","scope":"patient/*.rs"})),
            ClaimsError::MissingPatient
        );
        assert_eq!(
            err(json!({"sub":"u","scope":"patient/*.rs","patient":"a/b"})),
            ClaimsError::Invalid("patient")
        );
        assert_eq!(
            err(json!({"sub":"u","scope":"patient/*.rs","patient":"Observation/x"})),
            ClaimsError::Invalid("patient")
        );
        assert_eq!(
            err(json!({"sub":"u","scope":"patient/*.rs","patient":"https://evil/Patient/x"})),
            ClaimsError::Invalid("patient")
        );
        assert_eq!(
            err(json!({"sub":"u","scope":"patient/*.rs","patient":["ok", 5]})),
            ClaimsError::Invalid("patient")
        );
        assert_eq!(
            err(json!({"sub":"u","scope":5})),
            ClaimsError::Invalid("scope")
        );
        // An empty patient array is no patient context.
        assert_eq!(
            err(json!({"sub":"u","scope":"patient/*.rs","patient":[]})),
            ClaimsError::MissingPatient
        );
    }

    #[test]
    fn fingerprint_binds_patients_and_scopes() {
        let names = ClaimNames::default();
        let p = |v: Value| Principal::from_claims(&claims(v), &names).unwrap();
        let a = p(json!({"sub":"u","patient":"pat-1","scope":"patient/*.rs"}));
        let b = p(json!({"sub":"u","patient":"pat-12","scope":"patient/*.rs"}));
        let c = p(json!({"sub":"u","patient":"pat-1","scope":"patient/*.r"}));
        let a2 = p(json!({"sub":"u","patient":"pat-1","scope":"patient/*.read"}));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint(), a2.fingerprint());
    }

    #[test]
    fn fingerprint_binds_subject_client_and_fhir_user() {
        // Answers kept per principal (the facade's, the portal's) are keyed by the
        // fingerprint alone, and what a principal may see also depends on these.
        let names = ClaimNames::default();
        let p = |v: Value| Principal::from_claims(&claims(v), &names).unwrap();
        let base = json!({"sub":"u","client_id":"app-1","patient":"pat-1",
            "fhirUser":"Patient/pat-1","scope":"patient/*.rs"});
        let a = p(base.clone());
        for (claim, value) in [
            ("sub", "v"),
            ("client_id", "app-2"),
            ("fhirUser", "RelatedPerson/r1"),
        ] {
            let mut other = base.clone();
            other[claim] = json!(value);
            assert_ne!(a.fingerprint(), p(other).fingerprint(), "{claim}");
        }
        // A proxy grant, its level and its withheld labels are bound too.
        let grant = crate::delegation::ProxyGrant {
            patient: "pat-1".into(),
            relationship: "rp-1".into(),
            level: crate::AccessLevel::Full,
            withheld: std::sync::Arc::new(vec![]),
        };
        let with = |g: &crate::delegation::ProxyGrant| Principal {
            proxies: vec![g.clone()],
            ..a.clone()
        };
        let full = with(&grant);
        assert_ne!(a.fingerprint(), full.fingerprint());
        let read_only = with(&crate::delegation::ProxyGrant {
            level: crate::AccessLevel::ReadOnly,
            ..grant.clone()
        });
        assert_ne!(full.fingerprint(), read_only.fingerprint());
        let withheld = with(&crate::delegation::ProxyGrant {
            withheld: std::sync::Arc::new(vec![crate::Label::new("s", "R")]),
            ..grant.clone()
        });
        assert_ne!(full.fingerprint(), withheld.fingerprint());
    }
}
