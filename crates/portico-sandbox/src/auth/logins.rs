//! Who signs in: a patient (for their own record) or a proxy (a person with
//! RelatedPerson resources for one or more patients, see
//! [`crate::generator::Families`]).
//!
//! The authorization server does not apply any proxy rule (ages, periods, access
//! levels): a proxy's token names every patient the person has a RelatedPerson for,
//! and deciding what the proxy may see is the gateway's job.

use serde::{Deserialize, Serialize};

use crate::generator::ProxyLogin;

/// The `patient` claim of an access token: one id for a patient's own login, an array
/// for a proxy's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PatientClaim {
    One(String),
    Many(Vec<String>),
}

impl PatientClaim {
    /// The patient ids, in claim order.
    pub fn ids(&self) -> &[String] {
        match self {
            PatientClaim::One(id) => std::slice::from_ref(id),
            PatientClaim::Many(ids) => ids,
        }
    }
}

/// The user a code or refresh grant was issued to.
#[derive(Clone)]
pub(crate) enum Login {
    /// A patient, by Patient id.
    Patient(String),
    /// A proxy.
    Proxy(ProxyLogin),
}

impl Login {
    /// The tokens' `sub`: the patient id, or the proxy's login id.
    pub(crate) fn subject(&self) -> &str {
        match self {
            Login::Patient(id) => id,
            Login::Proxy(login) => &login.id,
        }
    }

    /// The tokens' `fhirUser`, relative (`Patient/<id>`, `RelatedPerson/<id>`).
    pub(crate) fn fhir_user(&self) -> String {
        match self {
            Login::Patient(id) => format!("Patient/{id}"),
            Login::Proxy(login) => login.fhir_user.clone(),
        }
    }

    /// The access token's `patient` claim.
    pub(crate) fn patient_claim(&self) -> PatientClaim {
        match self {
            Login::Patient(id) => PatientClaim::One(id.clone()),
            Login::Proxy(login) => PatientClaim::Many(login.patients.clone()),
        }
    }

    /// The token response's `patient` (a string, as SMART has it): the patient, or the
    /// proxy's first patient (their own record when they have one).
    pub(crate) fn launch_patient(&self) -> Option<&str> {
        match self {
            Login::Patient(id) => Some(id),
            Login::Proxy(login) => login.patients.first().map(String::as_str),
        }
    }
}
