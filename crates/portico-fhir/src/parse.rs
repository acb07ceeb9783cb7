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

#[derive(serde::Deserialize)]
struct TypeOnly {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
}

/// Parses JSON bytes as an R4 resource of any type.
pub fn parse_resource(bytes: &[u8], mode: Mode) -> Result<ParsedResource, ParseError> {
    let head: TypeOnly =
        serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
    let resource_type = head.resource_type.ok_or(ParseError::MissingResourceType)?;
    if !crate::resource_types::is_known(&resource_type) {
        return Err(ParseError::UnknownResourceType);
    }
    let config = DeserializationConfig {
        mode: match mode {
            Mode::Strict => DeserializationMode::Strict,
            Mode::Lenient => DeserializationMode::Compatibility,
        },
    };
    let model: Resource =
        fhirbolt::json::from_slice(bytes, Some(config)).map_err(|e| ParseError::Invalid {
            resource_type: resource_type.clone(),
            detail: e.to_string(),
        })?;
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
