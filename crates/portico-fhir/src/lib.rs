//! FHIR R4 vocabulary for Portico.
//!
//! This crate knows FHIR and nothing else: no I/O, no HTTP framework, no EHR. It holds
//!
//! - [`parse`]: the one place where fhirbolt's typed R4 models are instantiated (they take
//!   minutes to compile, so every other crate calls the non-generic functions here);
//! - [`reference`]: parsed references, compared as (type, id), never as substrings;
//! - [`resource_types`]: the R4 resource type names;
//! - [`compartment`]: the R4 Patient `CompartmentDefinition`;
//! - [`search`]: search-parameter syntax (prefixes, OR lists, tokens, date ranges);
//! - [`outcome`] and [`bundle`]: OperationOutcome and Bundle builders;
//! - [`scan`]: a pull scanner that checks JSON text and hands out the ranges of values;
//! - [`json`]: small accessors over `serde_json::Value` for code that only needs a few
//!   fields and must not pay for a full model.

pub mod bundle;
pub mod compartment;
pub mod json;
pub mod outcome;
pub mod parse;
pub mod reference;
pub mod resource_types;
pub mod scan;
pub mod search;

/// The FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";

/// The JSON Patch media type (RFC 6902).
pub const JSON_PATCH: &str = "application/json-patch+json";
