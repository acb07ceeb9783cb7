//! Bundle builders and readers.

use serde_json::{Value, json};

/// One entry of a searchset Bundle.
#[derive(Debug, Clone)]
pub struct SearchEntry {
    pub full_url: Option<String>,
    pub resource: Value,
    /// `match`, `include` or `outcome`.
    pub mode: &'static str,
}

/// A `searchset` Bundle with `total` (when known), `link`s (relation, url) and entries.
pub fn searchset(
    total: Option<usize>,
    links: &[(&str, String)],
    entries: Vec<SearchEntry>,
) -> Value {
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
    });
    if let Some(total) = total {
        bundle["total"] = json!(total);
    }
    if !links.is_empty() {
        bundle["link"] = links
            .iter()
            .map(|(rel, url)| json!({"relation": rel, "url": url}))
            .collect();
    }
    bundle["entry"] = entries
        .into_iter()
        .map(|e| {
            let mut entry = json!({"resource": e.resource, "search": {"mode": e.mode}});
            if let Some(url) = e.full_url {
                entry["fullUrl"] = json!(url);
            }
            entry
        })
        .collect();
    bundle
}

/// The URL of the Bundle link with this relation (`next`, `previous`, `self`), if any.
pub fn link<'a>(bundle: &'a Value, relation: &str) -> Option<&'a str> {
    bundle.get("link")?.as_array()?.iter().find_map(|l| {
        (l.get("relation")?.as_str()? == relation)
            .then(|| l.get("url")?.as_str())
            .flatten()
    })
}

/// The resources of a Bundle's entries, in order, skipping entries without one.
pub fn resources(bundle: &Value) -> impl Iterator<Item = &Value> {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_read() {
        let b = searchset(
            Some(2),
            &[
                ("self", "http://x/fhir/Patient".into()),
                ("next", "http://x/next".into()),
            ],
            vec![SearchEntry {
                full_url: Some("http://x/fhir/Patient/1".into()),
                resource: json!({"resourceType":"Patient","id":"1"}),
                mode: "match",
            }],
        );
        assert_eq!(b["total"], 2);
        assert_eq!(link(&b, "next"), Some("http://x/next"));
        assert_eq!(link(&b, "previous"), None);
        assert_eq!(resources(&b).count(), 1);
        assert_eq!(b["entry"][0]["search"]["mode"], "match");
    }
}
