//! The facade's own discovery documents: the CapabilityStatement at `/fhir/metadata`
//! (with the SMART `oauth-uris` extension that older clients, such as the Python
//! fhirclient, read) and `/fhir/.well-known/smart-configuration` (SMART App Launch 2.x).
//!
//! They describe the gateway, not the EHR: only the resource types a patient principal
//! can reach through it, only the interactions the facade implements, and the search
//! parameters the EHR itself declares for those types. Both are public, as SMART
//! clients fetch them before they have a token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use portico_access::REFERENCE_DATA_TYPES;
use serde_json::{Value, json};

use super::render::fhir_response;
use crate::state::AppState;

/// Types a patient may write through the facade (subject to the write rules).
const WRITABLE: &[&str] = &[
    "Appointment",
    "Communication",
    "MedicationRequest",
    "ServiceRequest",
    "Task",
];

pub(super) async fn metadata(State(state): State<AppState>) -> Response {
    let endpoints = state.smart_endpoints().await;
    let upstream = state.upstream_capabilities().await;
    let mut types: Vec<&str> = portico_fhir::compartment::PATIENT_COMPARTMENT
        .iter()
        .map(|(t, _)| *t)
        .chain(REFERENCE_DATA_TYPES.iter().copied())
        .filter(|t| {
            upstream
                .as_ref()
                .is_none_or(|c| c.summary.resources.contains_key(*t))
        })
        .collect();
    types.sort_unstable();
    types.dedup();
    let resources: Vec<Value> = types
        .iter()
        .map(|t| {
            let mut interactions = vec!["read", "vread", "history-instance", "search-type"];
            if WRITABLE.contains(t) {
                interactions.extend(["create", "update", "patch"]);
            }
            let search_params: Vec<Value> = upstream
                .as_ref()
                .and_then(|c| c.summary.resources.get(*t))
                .map(|r| r.search_params.iter().map(|p| json!({"name": p, "type": "string"})).collect())
                .unwrap_or_default();
            let mut resource = json!({
                "type": t,
                "interaction": interactions.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
                "searchInclude": [],
                "searchParam": search_params,
            });
            if *t == "Patient" {
                resource["operation"] = json!([{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]);
            }
            resource
        })
        .collect();
    let mut security = json!({
        "cors": true,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
    });
    if let Some(e) = &endpoints {
        security["extension"] = json!([{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "authorize", "valueUri": e.authorize},
                {"url": "token", "valueUri": e.token},
            ]
        }]);
    }
    let statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "software": {"name": "Portico", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Portico FHIR gateway (patient-scoped)", "url": state.fhir_base()},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": security,
            "resource": resources,
        }],
    });
    fhir_response(&state, StatusCode::OK, &statement, None)
}

pub(super) async fn smart_configuration(State(state): State<AppState>) -> Response {
    let Some(e) = state.smart_endpoints().await else {
        return fhir_response(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            &portico_fhir::outcome::error(
                portico_fhir::outcome::IssueCode::Transient,
                "the authorization server could not be discovered",
            ),
            None,
        );
    };
    let body = json!({
        "issuer": e.issuer,
        "jwks_uri": e.jwks,
        "authorization_endpoint": e.authorize,
        "token_endpoint": e.token,
        "grant_types_supported": ["authorization_code"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "scopes_supported": ["openid", "fhirUser", "launch/patient", "offline_access", "online_access", "patient/*.rs", "patient/*.cruds", "patient/*.read", "patient/*.write"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": [
            "launch-standalone", "client-public", "client-confidential-symmetric",
            "client-confidential-asymmetric", "context-standalone-patient", "permission-patient",
            "permission-v1", "permission-v2", "permission-offline", "sso-openid-connect"
        ],
    });
    let mut response = fhir_response(&state, StatusCode::OK, &body, None);
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}
