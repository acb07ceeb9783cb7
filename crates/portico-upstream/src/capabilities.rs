//! Capability discovery: what the EHR says it supports, summarised.
//!
//! The gateway checks its EHR profile against a [`CapabilitySummary`] at start-up (does
//! the EHR allow creating `Task`? searching `Slot` by `schedule`?). The summary reads
//! only the server-mode `rest` entry of the CapabilityStatement and the SMART
//! `oauth-uris` extension; the full statement is kept alongside for anything else.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::error::UpstreamError;

/// The URL of the SMART `oauth-uris` extension on `rest.security`.
pub const OAUTH_URIS_EXTENSION: &str =
    "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// The parsed CapabilityStatement and its summary.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub statement: Value,
    pub summary: CapabilitySummary,
}

/// What one resource type supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceCapability {
    /// Interaction codes: `read`, `vread`, `update`, `patch`, `delete`,
    /// `history-instance`, `history-type`, `create`, `search-type`.
    pub interactions: BTreeSet<String>,
    /// Search parameter names, e.g. `patient`, `date`, `_id`.
    pub search_params: BTreeSet<String>,
    /// Whether `If-None-Exist` creates are supported (`conditionalCreate`).
    pub conditional_create: bool,
    /// Operation names declared on the type (`find`, `book`), without the `$`.
    pub operations: BTreeSet<String>,
}

/// The SMART endpoints advertised in the `oauth-uris` extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmartOAuthUris {
    pub authorize: Option<String>,
    pub token: Option<String>,
    pub register: Option<String>,
    pub manage: Option<String>,
    pub introspect: Option<String>,
    pub revoke: Option<String>,
}

/// A summary of a CapabilityStatement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilitySummary {
    /// `fhirVersion`, e.g. `4.0.1`.
    pub fhir_version: Option<String>,
    /// Per resource type.
    pub resources: BTreeMap<String, ResourceCapability>,
    /// The SMART `oauth-uris` extension, if present.
    pub oauth_uris: Option<SmartOAuthUris>,
}

impl CapabilitySummary {
    /// Summarises a CapabilityStatement; `MalformedBody` if it is not one.
    pub fn from_statement(statement: &Value) -> Result<CapabilitySummary, UpstreamError> {
        if statement.get("resourceType").and_then(Value::as_str) != Some("CapabilityStatement") {
            return Err(UpstreamError::MalformedBody {
                detail: "metadata is not a CapabilityStatement".to_owned(),
            });
        }
        let mut summary = CapabilitySummary {
            fhir_version: str_field(statement, "fhirVersion"),
            ..CapabilitySummary::default()
        };
        let rests = statement.get("rest").and_then(Value::as_array);
        let server_rest = rests.into_iter().flatten().find(|r| {
            r.get("mode")
                .and_then(Value::as_str)
                .is_none_or(|m| m == "server")
        });
        let Some(rest) = server_rest else {
            return Ok(summary);
        };
        for resource in array(rest, "resource") {
            let Some(ty) = str_field(resource, "type") else {
                continue;
            };
            let entry = summary.resources.entry(ty).or_default();
            entry
                .interactions
                .extend(array(resource, "interaction").filter_map(|i| str_field(i, "code")));
            entry
                .search_params
                .extend(array(resource, "searchParam").filter_map(|p| str_field(p, "name")));
            entry.operations.extend(
                array(resource, "operation")
                    .filter_map(|o| str_field(o, "name"))
                    .map(|n| n.trim_start_matches('$').to_owned()),
            );
            entry.conditional_create |= resource
                .get("conditionalCreate")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        }
        // Server-wide search parameters (`_id`, `_lastUpdated`) apply to every type.
        let common: Vec<String> = array(rest, "searchParam")
            .filter_map(|p| str_field(p, "name"))
            .collect();
        for entry in summary.resources.values_mut() {
            entry.search_params.extend(common.iter().cloned());
        }
        summary.oauth_uris = rest
            .get("security")
            .map(|s| array(s, "extension"))
            .into_iter()
            .flatten()
            .find(|e| e.get("url").and_then(Value::as_str) == Some(OAUTH_URIS_EXTENSION))
            .map(|ext| {
                let mut uris = SmartOAuthUris::default();
                for e in array(ext, "extension") {
                    let value = str_field(e, "valueUri").or_else(|| str_field(e, "valueUrl"));
                    match e.get("url").and_then(Value::as_str) {
                        Some("authorize") => uris.authorize = value,
                        Some("token") => uris.token = value,
                        Some("register") => uris.register = value,
                        Some("manage") => uris.manage = value,
                        Some("introspect") => uris.introspect = value,
                        Some("revoke") => uris.revoke = value,
                        _ => {}
                    }
                }
                uris
            });
        Ok(summary)
    }

    /// Whether `resource_type` supports the interaction `code` (e.g. `create`).
    pub fn supports(&self, resource_type: &str, code: &str) -> bool {
        self.resources
            .get(resource_type)
            .is_some_and(|r| r.interactions.contains(code))
    }

    /// Whether `resource_type` can be searched by the parameter `name`.
    pub fn supports_search_param(&self, resource_type: &str, name: &str) -> bool {
        self.resources
            .get(resource_type)
            .is_some_and(|r| r.search_params.contains(name))
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::fixture;
    use serde_json::json;

    /// Patient read and search by identifier, Task conditional create, `_id` on every
    /// type, and SMART's authorize and token endpoints in the `oauth-uris` extension.
    fn statement() -> Value {
        fixture("ehr/capability-statement-smart-patient-task.json")
    }

    #[test]
    fn summarises_interactions_params_and_oauth_uris() {
        let s = CapabilitySummary::from_statement(&statement()).unwrap();
        assert_eq!(s.fhir_version.as_deref(), Some("4.0.1"));
        assert!(s.supports("Patient", "read"));
        assert!(!s.supports("Patient", "create"));
        assert!(s.supports("Task", "create"));
        assert!(!s.supports("Appointment", "read"));
        assert!(s.supports_search_param("Patient", "identifier"));
        assert!(s.supports_search_param("Task", "_id"));
        assert!(!s.supports_search_param("Patient", "name"));
        assert!(s.resources["Task"].conditional_create);
        let uris = s.oauth_uris.unwrap();
        assert_eq!(uris.token.as_deref(), Some("https://ehr/auth/token"));
        assert_eq!(
            uris.authorize.as_deref(),
            Some("https://ehr/auth/authorize")
        );
        assert_eq!(uris.revoke, None);
    }

    #[test]
    fn rejects_other_resources() {
        let err = CapabilitySummary::from_statement(&json!({"resourceType": "Patient"}));
        assert!(matches!(err, Err(UpstreamError::MalformedBody { .. })));
    }
}
