//! SMART v2 granular scope filters (`patient/Observation.rs?category=…|laboratory`).
//!
//! A [`Filter`] is the query of one granular scope: an AND of [`Condition`]s, each a token
//! search parameter with one or more comma-separated (OR) values. Portico evaluates filters
//! itself, on every resource it returns, so it only accepts parameters it knows how to
//! evaluate: the token parameters in [`FILTER_PATHS`], by element path per resource type.
//! A scope whose query uses anything else is dropped when scopes are parsed (dropping a
//! scope can only take permissions away), and a filter on a type that has no such
//! parameter never matches that type.

use portico_fhir::search::{split_or, token};
use serde_json::Value;

/// One `param=value` of a granular scope. `value` is kept as written (after percent
/// decoding), so that it can be added to a search unchanged; it may be an OR list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Condition {
    pub param: String,
    pub value: String,
}

/// The query of one granular scope: every condition must hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Filter {
    conditions: Vec<Condition>,
}

/// `(resource type, search parameter, element paths)` for the token parameters a granular
/// scope may use. Paths are dot-separated and walk arrays at every step.
pub const FILTER_PATHS: &[(&str, &str, &[&str])] = &[
    ("AllergyIntolerance", "category", &["category"]),
    ("AllergyIntolerance", "clinical-status", &["clinicalStatus"]),
    ("AllergyIntolerance", "code", &["code"]),
    (
        "AllergyIntolerance",
        "verification-status",
        &["verificationStatus"],
    ),
    ("CarePlan", "category", &["category"]),
    ("CareTeam", "category", &["category"]),
    ("Communication", "category", &["category"]),
    ("CommunicationRequest", "category", &["category"]),
    ("Composition", "category", &["category"]),
    ("Composition", "type", &["type"]),
    ("Condition", "category", &["category"]),
    ("Condition", "clinical-status", &["clinicalStatus"]),
    ("Condition", "code", &["code"]),
    ("Condition", "verification-status", &["verificationStatus"]),
    ("Consent", "category", &["category"]),
    ("DiagnosticReport", "category", &["category"]),
    ("DiagnosticReport", "code", &["code"]),
    ("DocumentReference", "category", &["category"]),
    ("DocumentReference", "type", &["type"]),
    ("Encounter", "class", &["class"]),
    ("Encounter", "type", &["type"]),
    ("Goal", "category", &["category"]),
    ("Immunization", "vaccine-code", &["vaccineCode"]),
    ("List", "code", &["code"]),
    ("Medication", "code", &["code"]),
    (
        "MedicationAdministration",
        "code",
        &["medicationCodeableConcept"],
    ),
    ("MedicationDispense", "code", &["medicationCodeableConcept"]),
    ("MedicationRequest", "category", &["category"]),
    ("MedicationRequest", "code", &["medicationCodeableConcept"]),
    ("MedicationRequest", "intent", &["intent"]),
    ("MedicationStatement", "category", &["category"]),
    (
        "MedicationStatement",
        "code",
        &["medicationCodeableConcept"],
    ),
    ("Observation", "category", &["category"]),
    ("Observation", "code", &["code"]),
    ("Procedure", "category", &["category"]),
    ("Procedure", "code", &["code"]),
    ("ServiceRequest", "category", &["category"]),
    ("ServiceRequest", "code", &["code"]),
    ("ServiceRequest", "intent", &["intent"]),
    ("Task", "code", &["code"]),
    ("Task", "intent", &["intent"]),
];

/// Resource types whose R4 `status` search parameter is the `status` element.
const STATUS_TYPES: &[&str] = &[
    "Account",
    "Appointment",
    "CarePlan",
    "CareTeam",
    "Claim",
    "ClaimResponse",
    "Communication",
    "CommunicationRequest",
    "Composition",
    "Consent",
    "Coverage",
    "DeviceRequest",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "Encounter",
    "EpisodeOfCare",
    "ExplanationOfBenefit",
    "Flag",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "Invoice",
    "List",
    "Location",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "NutritionOrder",
    "Observation",
    "Procedure",
    "QuestionnaireResponse",
    "RiskAssessment",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "VisionPrescription",
];

/// Every element path a filter on `resource_type` can read, whatever its parameter:
/// what [`filter_paths`] can answer for that type.
pub fn paths_read_by_filters(resource_type: &str) -> impl Iterator<Item = &'static str> + '_ {
    let status = STATUS_TYPES.contains(&resource_type).then_some("status");
    FILTER_PATHS
        .iter()
        .filter(move |(t, _, _)| *t == resource_type)
        .flat_map(|(_, _, paths)| paths.iter().copied())
        .chain(status)
}

/// The element paths searched by token parameter `param` on `resource_type`, when Portico
/// can evaluate it.
pub fn filter_paths(resource_type: &str, param: &str) -> Option<&'static [&'static str]> {
    if param == "status" {
        return STATUS_TYPES
            .contains(&resource_type)
            .then_some(&["status"] as &'static [&'static str]);
    }
    FILTER_PATHS
        .iter()
        .find(|(t, p, _)| *t == resource_type && *p == param)
        .map(|(_, _, paths)| *paths)
}

/// Whether some resource type lets a granular scope filter on `param`.
pub(crate) fn is_filter_param(param: &str) -> bool {
    param == "status" || FILTER_PATHS.iter().any(|(_, p, _)| *p == param)
}

/// Whether `value` is a token search value Portico can evaluate: `code`, `system|code`,
/// `|code` or `system|` (not `|` alone, not empty), for every OR alternative.
pub(crate) fn is_token_value(value: &str) -> bool {
    let alternatives = split_or(value);
    !alternatives.is_empty()
        && alternatives.iter().all(|alt| match token(alt) {
            (None, code) => !code.is_empty(),
            (Some(system), code) => (!system.is_empty() || !code.is_empty()) && !code.contains('|'),
        })
}

impl Filter {
    /// A filter from its conditions; `None` when there are none.
    pub(crate) fn new(mut conditions: Vec<Condition>) -> Option<Filter> {
        if conditions.is_empty() {
            return None;
        }
        conditions.sort();
        conditions.dedup();
        Some(Filter { conditions })
    }

    /// The conditions, all of which must hold.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// Whether every condition names a parameter Portico can evaluate on `resource_type`.
    pub fn applies_to(&self, resource_type: &str) -> bool {
        self.conditions
            .iter()
            .all(|c| filter_paths(resource_type, &c.param).is_some())
    }

    /// Whether `resource` satisfies every condition. A resource of a type the filter does
    /// not apply to never matches.
    pub fn matches(&self, resource: &Value) -> bool {
        let Some(resource_type) = portico_fhir::json::resource_type(resource) else {
            return false;
        };
        self.conditions.iter().all(|c| {
            let Some(paths) = filter_paths(resource_type, &c.param) else {
                return false;
            };
            let wanted = split_or(&c.value);
            paths.iter().any(|path| {
                portico_fhir::json::values_at(resource, path)
                    .into_iter()
                    .any(|element| {
                        wanted.iter().any(|alt| {
                            let (system, code) = token(alt);
                            token_matches(element, system, code)
                        })
                    })
            })
        })
    }

    /// The query form, `param=value&…`, conditions sorted.
    pub(crate) fn to_query(&self) -> String {
        self.conditions
            .iter()
            .map(|c| format!("{}={}", c.param, c.value))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Whether `resource` satisfies the OR of `filters`; no filters means unrestricted.
pub(crate) fn any_matches(filters: &[Filter], resource: &Value) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.matches(resource))
}

/// Token matching on a `code`, `Coding` or `CodeableConcept` element.
fn token_matches(element: &Value, system: Option<&str>, code: &str) -> bool {
    match element {
        // A `code` primitive has no system of its own: only `code` and `|code` match.
        Value::String(s) => matches!(system, None | Some("")) && !code.is_empty() && s == code,
        Value::Object(map) => {
            if let Some(codings) = map.get("coding").and_then(Value::as_array) {
                return codings.iter().any(|c| coding_matches(c, system, code));
            }
            coding_matches(element, system, code)
        }
        _ => false,
    }
}

fn coding_matches(coding: &Value, system: Option<&str>, code: &str) -> bool {
    let own_code = coding.get("code").and_then(Value::as_str);
    let own_system = coding.get("system").and_then(Value::as_str);
    let code_ok = if code.is_empty() {
        // `system|`: any code in that system, but there must be a code.
        own_code.is_some()
    } else {
        own_code == Some(code)
    };
    let system_ok = match system {
        None => true,
        Some("") => own_system.is_none(),
        Some(s) => own_system == Some(s),
    };
    code_ok && system_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

    fn f(param: &str, value: &str) -> Filter {
        Filter::new(vec![Condition {
            param: param.into(),
            value: value.into(),
        }])
        .unwrap()
    }

    fn obs(category: &str) -> Value {
        json!({"resourceType":"Observation","category":[{"coding":[{"system":LAB,"code":category}]}],"code":{"coding":[{"system":"http://loinc.org","code":"1234-5"}]},"status":"final"})
    }

    #[test]
    fn token_forms() {
        let lab = obs("laboratory");
        assert!(f("category", &format!("{LAB}|laboratory")).matches(&lab));
        assert!(f("category", "laboratory").matches(&lab));
        assert!(f("category", &format!("{LAB}|")).matches(&lab));
        assert!(
            !f("category", "|laboratory").matches(&lab),
            "|code means no system"
        );
        assert!(!f("category", &format!("{LAB}|vital-signs")).matches(&lab));
        assert!(!f("category", "http://other|laboratory").matches(&lab));
        assert!(f("category", "vital-signs,laboratory").matches(&lab));
        let no_system =
            json!({"resourceType":"Observation","category":[{"coding":[{"code":"laboratory"}]}]});
        assert!(f("category", "|laboratory").matches(&no_system));
    }

    #[test]
    fn code_primitives_and_and_semantics() {
        let lab = obs("laboratory");
        assert!(f("status", "final").matches(&lab));
        assert!(!f("status", "preliminary").matches(&lab));
        assert!(!f("status", "x|final").matches(&lab));
        let both = Filter::new(vec![
            Condition {
                param: "category".into(),
                value: "laboratory".into(),
            },
            Condition {
                param: "code".into(),
                value: "http://loinc.org|9999-9".into(),
            },
        ])
        .unwrap();
        assert!(!both.matches(&lab), "all conditions must hold");
    }

    #[test]
    fn unknown_type_or_param_never_matches() {
        let practitioner = json!({"resourceType":"Practitioner","category":"laboratory"});
        assert!(!f("category", "laboratory").matches(&practitioner));
        assert!(!f("category", "laboratory").applies_to("Practitioner"));
        assert!(f("category", "laboratory").applies_to("Condition"));
        assert!(!f("category", "laboratory").matches(&json!({"category":"laboratory"})));
        let missing = json!({"resourceType":"Observation"});
        assert!(!f("category", "laboratory").matches(&missing));
    }

    #[test]
    fn medication_code_path() {
        let mr = json!({"resourceType":"MedicationRequest","medicationCodeableConcept":{"coding":[{"system":"rx","code":"42"}]}});
        assert!(f("code", "rx|42").matches(&mr));
        assert!(!f("code", "rx|43").matches(&mr));
    }

    #[test]
    fn token_value_syntax() {
        assert!(is_token_value("a|b"));
        assert!(is_token_value("|b"));
        assert!(is_token_value("a|"));
        assert!(is_token_value("b"));
        assert!(!is_token_value("|"));
        assert!(!is_token_value(""));
        assert!(!is_token_value("a|b|c"));
    }

    #[test]
    fn any_of_filters() {
        let lab = obs("laboratory");
        assert!(any_matches(&[], &lab));
        assert!(any_matches(
            &[f("category", "vital-signs"), f("category", "laboratory")],
            &lab
        ));
        assert!(!any_matches(&[f("category", "vital-signs")], &lab));
    }
}
