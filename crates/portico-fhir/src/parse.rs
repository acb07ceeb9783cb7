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

/// The structural checks every submitted resource must pass, without fhirbolt: valid
/// JSON, an object with a known `resourceType`, FHIR's JSON rules (no empty arrays,
/// objects or strings; `null` only inside arrays), and at most `max_depth` levels of
/// nesting. Returns the resource type and the parsed value.
pub fn check_structure(
    bytes: &[u8],
    max_depth: usize,
) -> Result<(String, serde_json::Value), ParseError> {
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
    if crate::json::depth(&value) > max_depth {
        return Err(ParseError::Invalid {
            resource_type,
            detail: "the resource is nested too deeply".to_owned(),
        });
    }
    check_fhir_json(&value, false).map_err(|detail| ParseError::Invalid {
        resource_type: resource_type.clone(),
        detail,
    })?;
    Ok((resource_type, value))
}

/// How long fhirbolt may take on one resource before it is given up on.
const FHIRBOLT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
/// How many fhirbolt parses may run at once; see [`parse_resource`].
const FHIRBOLT_MAX_IN_FLIGHT: usize = 4;
static FHIRBOLT_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Parses JSON bytes as an R4 resource of any type with fhirbolt's typed models.
///
/// **Not for untrusted input.** fhirbolt 0.4.0 panics on empty arrays (refused here by
/// [`check_structure`] first) and never returns on an unknown element whose value is an
/// array (`{"resourceType":"Patient","foo":[1]}`, at any depth). So the parse runs on
/// its own thread with a deadline, at most a few at a time: a parse that does not finish
/// is reported as invalid and its thread is abandoned (it keeps one core busy until the
/// process ends). The gateway therefore validates what patients send with
/// [`check_structure`] and its own checks, never with this function.
pub fn parse_resource(bytes: &[u8], mode: Mode) -> Result<ParsedResource, ParseError> {
    use std::sync::atomic::Ordering;
    let (resource_type, _) = check_structure(bytes, 128)?;
    let config = DeserializationConfig {
        mode: match mode {
            Mode::Strict => DeserializationMode::Strict,
            Mode::Lenient => DeserializationMode::Compatibility,
        },
    };
    let invalid = |detail: &str| ParseError::Invalid {
        resource_type: resource_type.clone(),
        detail: detail.to_owned(),
    };
    if FHIRBOLT_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) >= FHIRBOLT_MAX_IN_FLIGHT {
        FHIRBOLT_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        return Err(invalid("the resource cannot be validated right now"));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = bytes.to_vec();
    let spawned = std::thread::Builder::new()
        .name("fhirbolt-parse".into())
        .spawn(move || {
            let parsed = std::panic::catch_unwind(|| {
                fhirbolt::json::from_slice::<Resource>(&owned, Some(config))
            });
            FHIRBOLT_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(parsed.map(|r| r.map_err(|e| e.to_string())));
        });
    if spawned.is_err() {
        FHIRBOLT_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        return Err(invalid("the resource could not be validated"));
    }
    let model = match rx.recv_timeout(FHIRBOLT_DEADLINE) {
        Ok(Ok(Ok(model))) => model,
        Ok(Ok(Err(detail))) => return Err(invalid(&detail)),
        Ok(Err(_)) => return Err(invalid("the resource could not be parsed")),
        Err(_) => return Err(invalid("the resource could not be validated in time")),
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
    fn structure_checks_catch_what_fhirbolt_cannot_survive() {
        assert!(check_structure(br#"{"resourceType":"Patient","name":[]}"#, 64).is_err());
        assert!(check_structure(br#"{"resourceType":"Patient"}"#, 64).is_ok());
        let deep = format!(
            r#"{{"resourceType":"Basic","extension":{}1{}}}"#,
            "[".repeat(70),
            "]".repeat(70)
        );
        assert!(check_structure(deep.as_bytes(), 64).is_err());
    }

    /// fhirbolt 0.4.0 never returns on an unknown element holding an array; the
    /// deadline turns that into an error instead of a hung caller.
    #[test]
    fn a_body_that_hangs_fhirbolt_is_reported_invalid() {
        let started = std::time::Instant::now();
        let result = parse_resource(br#"{"resourceType":"Patient","foo":[1]}"#, Mode::Strict);
        assert!(matches!(result, Err(ParseError::Invalid { .. })));
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
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
