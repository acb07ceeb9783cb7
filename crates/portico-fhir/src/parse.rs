//! The one place where fhirbolt's typed R4 models are instantiated.
//!
//! fhirbolt 0.4.0 fails to deserialize a concrete type directly whenever a primitive
//! field follows an embedded resource (`contained`, `Bundle.entry.resource`,
//! `Parameters.parameter.resource`); deserializing into the `Resource` enum works. So
//! this module only ever parses into `Resource`, behind non-generic functions, which
//! also keeps fhirbolt's monomorphized code (minutes to compile) inside this crate.
//!
//! Modes: [`Mode::Strict`] rejects unknown elements and is meant for what a patient or
//! app sends; [`Mode::Lenient`] ignores unknown elements and is meant for what an EHR
//! sends. Neither checks dates or codes; callers add their own checks.

use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};

/// How strictly to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Unknown elements are errors.
    Strict,
    /// Unknown elements are ignored.
    Lenient,
}

/// Why bytes are not a FHIR R4 resource.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body has no resourceType")]
    MissingResourceType,
    #[error("unknown resource type")]
    UnknownResourceType,
    #[error("invalid {resource_type}: {detail}")]
    Invalid {
        resource_type: String,
        detail: String,
    },
}

/// A resource that fhirbolt accepted.
#[derive(Debug)]
pub struct ParsedResource {
    resource_type: String,
    model: Box<Resource>,
}

impl ParsedResource {
    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    /// The typed model, for mapping code that benefits from it.
    pub fn model(&self) -> &Resource {
        &self.model
    }
}

/// Checks the FHIR JSON rules that fhirbolt 0.4.0 does not survive: it panics on an
/// empty array. FHIR JSON also forbids empty objects and empty strings, and allows
/// `null` only inside arrays (to keep primitive values and their extensions aligned).
fn check_fhir_json(value: &serde_json::Value, in_array: bool) -> Result<(), String> {
    use serde_json::Value;
    match value {
        Value::Null if !in_array => Err("null is only allowed inside arrays".to_owned()),
        Value::String(s) if s.is_empty() => Err("empty strings are not allowed".to_owned()),
        Value::Array(items) if items.is_empty() => Err("empty arrays are not allowed".to_owned()),
        Value::Array(items) => items.iter().try_for_each(|v| check_fhir_json(v, true)),
        Value::Object(map) if map.is_empty() => Err("empty objects are not allowed".to_owned()),
        Value::Object(map) => map.values().try_for_each(|v| check_fhir_json(v, false)),
        _ => Ok(()),
    }
}

/// Parses JSON bytes as an R4 resource of any type.
///
/// Never panics: the JSON is first checked against FHIR's own JSON rules (fhirbolt
/// panics on an empty array), and fhirbolt runs under `catch_unwind` as a last line of
/// defence against its internal unwraps.
pub fn parse_resource(bytes: &[u8], mode: Mode) -> Result<ParsedResource, ParseError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
    let resource_type = value
        .get("resourceType")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or(ParseError::MissingResourceType)?;
    if !crate::resource_types::is_known(&resource_type) {
        return Err(ParseError::UnknownResourceType);
    }
    check_fhir_json(&value, false).map_err(|detail| ParseError::Invalid {
        resource_type: resource_type.clone(),
        detail,
    })?;
    let config = DeserializationConfig {
        mode: match mode {
            Mode::Strict => DeserializationMode::Strict,
            Mode::Lenient => DeserializationMode::Compatibility,
        },
    };
    let parsed =
        std::panic::catch_unwind(|| fhirbolt::json::from_slice::<Resource>(bytes, Some(config)));
    let model = match parsed {
        Ok(Ok(model)) => model,
        Ok(Err(e)) => {
            return Err(ParseError::Invalid {
                resource_type,
                detail: e.to_string(),
            });
        }
        Err(_) => {
            return Err(ParseError::Invalid {
                resource_type,
                detail: "the resource could not be parsed".to_owned(),
            });
        }
    };
    Ok(ParsedResource {
        resource_type,
        model: Box::new(model),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fhirbolt 0.4.0 regression: parsing `Bundle` directly fails on this searchset
    /// (a primitive after `entry.resource`); going through `Resource` must keep working.
    #[test]
    fn searchset_bundle_parses_through_the_resource_enum() {
        let bundle = br#"{"resourceType":"Bundle","type":"searchset","total":1,
            "entry":[{"fullUrl":"http://x/fhir/Patient/1",
                      "resource":{"resourceType":"Patient","id":"1","gender":"female"},
                      "search":{"mode":"match"}}]}"#;
        let parsed = parse_resource(bundle, Mode::Strict).unwrap();
        assert_eq!(parsed.resource_type(), "Bundle");
        match parsed.model() {
            Resource::Bundle(b) => assert_eq!(b.entry.len(), 1),
            other => panic!("expected a Bundle, got {other:?}"),
        }
        // Documents the upstream bug this module works around; if fhirbolt ever fixes it,
        // this assertion tells us the workaround can go.
        let direct =
            fhirbolt::json::from_slice::<fhirbolt::model::r4::resources::Bundle>(bundle, None);
        assert!(
            direct.is_err(),
            "fhirbolt now parses Bundle directly: revisit parse.rs"
        );
    }

    #[test]
    fn contained_followed_by_primitive() {
        let patient = br##"{"resourceType":"Patient","id":"p",
            "contained":[{"resourceType":"Organization","id":"o","name":"Org"}],
            "gender":"male","managingOrganization":{"reference":"#o"}}"##;
        let parsed = parse_resource(patient, Mode::Strict).unwrap();
        assert_eq!(parsed.resource_type(), "Patient");
    }

    #[test]
    fn strict_rejects_unknown_elements_lenient_accepts() {
        let body =
            br#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"bogus":1}"#;
        assert!(matches!(
            parse_resource(body, Mode::Strict),
            Err(ParseError::Invalid { .. })
        ));
        assert!(parse_resource(body, Mode::Lenient).is_ok());
    }

    #[test]
    fn inputs_that_crash_fhirbolt_are_refused_not_panicked_on() {
        for body in [
            &br#"{"resourceType":"Patient","name":[]}"#[..],
            br#"{"resourceType":"Patient","name":[{}]}"#,
            br#"{"resourceType":"Patient","gender":""}"#,
            br#"{"resourceType":"Patient","gender":null}"#,
            br#"{"resourceType":"Observation","status":"final","code":{"coding":[]}}"#,
        ] {
            assert!(matches!(
                parse_resource(body, Mode::Strict),
                Err(ParseError::Invalid { .. })
            ));
            assert!(matches!(
                parse_resource(body, Mode::Lenient),
                Err(ParseError::Invalid { .. })
            ));
        }
    }

    #[test]
    fn errors() {
        assert!(matches!(
            parse_resource(b"{", Mode::Strict),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            parse_resource(b"{}", Mode::Strict),
            Err(ParseError::MissingResourceType)
        ));
        assert!(matches!(
            parse_resource(br#"{"resourceType":"Nope"}"#, Mode::Strict),
            Err(ParseError::UnknownResourceType)
        ));
        assert!(matches!(
            parse_resource(br#"{"resourceType":"Patient","gender":5}"#, Mode::Strict),
            Err(ParseError::Invalid { .. })
        ));
    }
}
