//! Shared helpers for turning FHIR JSON into the portal's simple views.
//!
//! Views read only the fields they show, from `serde_json::Value` (DESIGN.md: do not
//! build full models where a few fields do), and never fail on a missing or oddly
//! shaped element: it is simply absent from the view.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A code, as shown to a portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Code {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// A measured value with its unit.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Quantity {
    pub value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// An amount of money.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Money {
    /// In major units (dollars), as FHIR carries it.
    pub value: f64,
    pub currency: String,
}

/// A string at `key`.
pub fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// An owned string at a JSON pointer (`/dispenseRequest/validityPeriod/end`).
pub fn string_at(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The array at `key`, or an empty one.
pub fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// The text to show for a CodeableConcept: its `text`, else the first coding's
/// `display`, else the first code.
pub fn concept_text(concept: &Value) -> Option<String> {
    str_at(concept, "text")
        .or_else(|| array(concept, "coding").find_map(|c| str_at(c, "display")))
        .or_else(|| array(concept, "coding").find_map(|c| str_at(c, "code")))
        .map(str::to_owned)
}

/// The codings of a CodeableConcept.
pub fn concept_codes(concept: &Value) -> Vec<Code> {
    array(concept, "coding")
        .filter_map(|c| {
            Some(Code {
                system: str_at(c, "system").map(str::to_owned),
                code: str_at(c, "code")?.to_owned(),
                display: str_at(c, "display").map(str::to_owned),
            })
        })
        .collect()
}

/// Whether a CodeableConcept (or an array of them) has a coding `system|code`.
pub fn has_coding(concepts: &Value, system: &str, code: &str) -> bool {
    let one = |c: &Value| {
        array(c, "coding")
            .any(|x| str_at(x, "system") == Some(system) && str_at(x, "code") == Some(code))
    };
    match concepts {
        Value::Array(list) => list.iter().any(one),
        other => one(other),
    }
}

/// The first concept's text of an array of CodeableConcepts at `key`.
pub fn first_concept_text(v: &Value, key: &str) -> Option<String> {
    array(v, key).find_map(concept_text)
}

/// A Reference's `display`, else its `reference`.
pub fn reference_text(reference: &Value) -> Option<String> {
    str_at(reference, "display")
        .or_else(|| str_at(reference, "reference"))
        .map(str::to_owned)
}

/// A Reference's literal `reference` (`Practitioner/1`).
pub fn reference_of(reference: &Value) -> Option<&str> {
    str_at(reference, "reference")
}

/// A Quantity (`valueQuantity`, `dose`, ...).
pub fn quantity(v: &Value) -> Option<Quantity> {
    Some(Quantity {
        value: v.get("value")?.as_f64()?,
        unit: str_at(v, "unit")
            .or_else(|| str_at(v, "code"))
            .map(str::to_owned),
    })
}

/// A Money value.
pub fn money(v: &Value) -> Option<Money> {
    Some(Money {
        value: v.get("value")?.as_f64()?,
        currency: str_at(v, "currency").unwrap_or("USD").to_owned(),
    })
}

/// Parses a FHIR `dateTime`/`instant` (or a plain date, read as midnight UTC).
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let date = match s.len() {
        10 => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?,
        7 => NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok()?,
        4 => NaiveDate::parse_from_str(&format!("{s}-01-01"), "%Y-%m-%d").ok()?,
        _ => return None,
    };
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// A FHIR instant for `t` (seconds precision, UTC).
pub fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Money in minor units (cents) from a FHIR decimal, refusing values that are not whole
/// cents or out of range.
pub fn to_minor(value: f64) -> Option<i64> {
    let cents = (value * 100.0).round();
    if !value.is_finite() || (value * 100.0 - cents).abs() > 1e-6 || cents.abs() > 1e12 {
        return None;
    }
    Some(cents as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn concepts_prefer_text_then_display_then_code() {
        assert_eq!(
            concept_text(&json!({"text": "T", "coding": [{"display": "D"}]})).as_deref(),
            Some("T")
        );
        assert_eq!(
            concept_text(&json!({"coding": [{"code": "c"}, {"display": "D"}]})).as_deref(),
            Some("D")
        );
        assert_eq!(
            concept_text(&json!({"coding": [{"code": "c"}]})).as_deref(),
            Some("c")
        );
        assert_eq!(concept_text(&json!({})), None);
        assert_eq!(concept_text(&json!("weird")), None);
    }

    #[test]
    fn dates_parse_in_fhir_precisions() {
        assert!(parse_datetime("2025-07-01T10:00:00Z").is_some());
        assert!(parse_datetime("2025-07-01T10:00:00-05:00").is_some());
        assert!(parse_datetime("2025-07-01").is_some());
        assert!(parse_datetime("2025-07").is_some());
        assert!(parse_datetime("2025").is_some());
        assert!(parse_datetime("yesterday").is_none());
    }

    #[test]
    fn money_converts_to_whole_cents_only() {
        assert_eq!(to_minor(12.34), Some(1234));
        assert_eq!(to_minor(0.1 + 0.2), Some(30));
        assert_eq!(to_minor(1.001), None);
        assert_eq!(to_minor(f64::NAN), None);
        assert_eq!(to_minor(1e15), None);
    }
}
