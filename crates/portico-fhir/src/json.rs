//! Cheap accessors over `serde_json::Value` resources.
//!
//! The gateway mostly needs a handful of fields (type, id, version, references) from
//! resources it passes through; reading them from a `Value` is two to three times faster
//! than building a typed model, and tolerates what the EHR adds.

use serde_json::Value;

/// `resourceType`, if the value is an object that has one.
pub fn resource_type(resource: &Value) -> Option<&str> {
    resource.get("resourceType")?.as_str()
}

/// `id`, if present.
pub fn id(resource: &Value) -> Option<&str> {
    resource.get("id")?.as_str()
}

/// `meta.versionId`, if present.
pub fn version_id(resource: &Value) -> Option<&str> {
    resource.get("meta")?.get("versionId")?.as_str()
}

/// Every value found at `path`, a dot-separated element path relative to the resource
/// (`"subject"`, `"participant.actor"`). Arrays are flattened at every step, the last
/// included, so `participant.actor` yields the actor of every participant. A step may
/// select by a string field: `extension[url=http://example.org/x].valueReference` keeps
/// only the extensions with that `url` (the value may contain dots).
pub fn values_at<'a>(resource: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current: Vec<&Value> = vec![resource];
    for step in steps(path) {
        let (name, filter) = match step.split_once('[') {
            Some((name, rest)) => (name, rest.strip_suffix(']').and_then(|f| f.split_once('='))),
            None => (step, None),
        };
        let mut next = Vec::new();
        for v in current {
            match v.get(name) {
                Some(Value::Array(items)) => next.extend(items.iter()),
                Some(other) => next.push(other),
                None => {}
            }
        }
        if let Some((field, wanted)) = filter {
            next.retain(|v| v.get(field).and_then(Value::as_str) == Some(wanted));
        }
        current = next;
    }
    current
}

/// The steps of an element path: split at dots outside `[...]`.
fn steps(path: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in path.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                out.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&path[start..]);
    out
}

/// Every `reference` string found at `path` (see [`values_at`]).
pub fn references_at<'a>(resource: &'a Value, path: &str) -> Vec<&'a str> {
    values_at(resource, path)
        .into_iter()
        .filter_map(|v| v.get("reference")?.as_str())
        .collect()
}

/// How deeply nested a JSON value is (a scalar is depth 0, `[]` is 1).
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn steps_can_select_by_a_field_whose_value_has_dots() {
        let r = json!({"extension": [
            {"url": "http://a.example/x", "valueReference": {"reference": "Patient/1"}},
            {"url": "http://b.example/y", "valueReference": {"reference": "Patient/2"}}
        ]});
        assert_eq!(
            references_at(&r, "extension[url=http://a.example/x].valueReference"),
            vec!["Patient/1"]
        );
        assert_eq!(references_at(&r, "extension.valueReference").len(), 2);
        assert!(references_at(&r, "extension[url=http://c.example/z].valueReference").is_empty());
    }

    #[test]
    fn accessors() {
        let r = json!({"resourceType":"Observation","id":"o1","meta":{"versionId":"3"}});
        assert_eq!(resource_type(&r), Some("Observation"));
        assert_eq!(id(&r), Some("o1"));
        assert_eq!(version_id(&r), Some("3"));
        assert_eq!(resource_type(&json!([])), None);
    }

    #[test]
    fn references_walk_arrays() {
        let appt = json!({"resourceType":"Appointment","participant":[
            {"actor":{"reference":"Patient/p1"}},
            {"actor":{"reference":"Practitioner/d1"}},
            {"type":[{"text":"x"}]}
        ]});
        assert_eq!(
            references_at(&appt, "participant.actor"),
            vec!["Patient/p1", "Practitioner/d1"]
        );
        let comm = json!({"recipient":[{"reference":"Patient/a"},{"display":"no ref"}],"subject":{"reference":"Patient/b"}});
        assert_eq!(references_at(&comm, "recipient"), vec!["Patient/a"]);
        assert_eq!(references_at(&comm, "subject"), vec!["Patient/b"]);
        assert!(references_at(&comm, "sender").is_empty());
    }

    #[test]
    fn nesting_depth() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a":[{"b":1}]})), 3);
    }
}
