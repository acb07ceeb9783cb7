//! Fixtures shared by the suite.

use portico_access::{ClaimNames, DenialReason, ExtraLink, Policy, Principal};
use serde_json::{Value, json};

pub const BASE: &str = "https://ehr.example/fhir";
pub const A: &str = "pat-1";
pub const B: &str = "pat-12";

pub fn policy() -> Policy {
    Policy::new(BASE)
}

pub fn policy_with_tasks() -> Policy {
    Policy::new(BASE).with_link(ExtraLink::task_for())
}

/// A principal from claims given as JSON (`sub` defaults to `user-1`).
pub fn principal_from(claims: Value) -> Principal {
    let mut claims = claims;
    if claims.get("sub").is_none() {
        claims["sub"] = json!("user-1");
    }
    Principal::from_claims(claims.as_object().unwrap(), &ClaimNames::default()).unwrap()
}

/// Patient A with these scopes.
pub fn patient_a(scopes: &str) -> Principal {
    principal_from(json!({"patient": A, "scope": scopes}))
}

pub fn reference(r: &str) -> Value {
    json!({ "reference": r })
}

pub fn observation(subject: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": "obs-1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
        "subject": reference(subject),
    })
}

pub fn lab_observation(subject: &str, category: &str) -> Value {
    let mut o = observation(subject);
    o["category"] = json!([{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": category,
    }]}]);
    o
}

/// A resource of `resource_type` whose element at `path` (dot-separated, arrays at every
/// intermediate step) holds `reference`.
pub fn with_reference_at(resource_type: &str, path: &str, reference: &str) -> Value {
    let mut value = json!({ "reference": reference });
    let steps: Vec<&str> = path.split('.').collect();
    for (i, step) in steps.iter().enumerate().rev() {
        let wrapped = if i == steps.len() - 1 {
            value
        } else {
            json!([value])
        };
        value = json!({ *step: wrapped });
    }
    value["resourceType"] = json!(resource_type);
    value["id"] = json!("r-1");
    value
}

#[track_caller]
pub fn assert_denied<T: std::fmt::Debug>(
    result: Result<T, portico_access::Denial>,
    reason: DenialReason,
) {
    match result {
        Err(d) => assert_eq!(
            d.reason(),
            reason,
            "denied for {:?}: {}",
            d.reason(),
            d.message()
        ),
        Ok(v) => panic!("expected a denial ({reason:?}), got {v:?}"),
    }
}
