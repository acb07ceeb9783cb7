//! Security labels across versions.
//!
//! An update replaces a resource, but like HAPI FHIR (where `meta` elements survive an
//! update unless `$meta-delete` removes them) the sandbox keeps `meta.security`: an
//! update whose body carries no security labels gets those of the version it replaces.
//! A body that carries labels stores exactly those. So a client that rewrites a
//! sensitive record without echoing its `meta` cannot make it unlabelled by accident.

use serde_json::{Map, Value};

/// Copies `old`'s `meta.security` into `new` when `new` has none.
pub(super) fn carry_forward(old: Option<&Value>, new: &mut Value) {
    let Some(labels) = old
        .and_then(|o| o.get("meta"))
        .and_then(|m| m.get("security"))
        .filter(|s| s.as_array().is_some_and(|a| !a.is_empty()))
    else {
        return;
    };
    let Value::Object(map) = new else {
        return;
    };
    let meta = map
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else {
        return;
    };
    if meta.get("security").is_none() {
        meta.insert("security".to_owned(), labels.clone());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::carry_forward;

    #[test]
    fn labels_survive_an_update_that_omits_them_only() {
        let old = json!({"resourceType": "Condition", "meta": {"versionId": "1",
            "security": [{"system": "s", "code": "PSY"}]}});
        let mut bare = json!({"resourceType": "Condition"});
        carry_forward(Some(&old), &mut bare);
        assert_eq!(bare["meta"]["security"], old["meta"]["security"]);

        let mut with_meta = json!({"resourceType": "Condition", "meta": {"tag": [{"code": "t"}]}});
        carry_forward(Some(&old), &mut with_meta);
        assert_eq!(with_meta["meta"]["security"][0]["code"], "PSY");
        assert_eq!(with_meta["meta"]["tag"][0]["code"], "t");

        let mut relabelled = json!({"resourceType": "Condition",
            "meta": {"security": [{"system": "s", "code": "ETH"}]}});
        carry_forward(Some(&old), &mut relabelled);
        assert_eq!(
            relabelled["meta"]["security"],
            json!([{"system": "s", "code": "ETH"}])
        );

        let mut created = json!({"resourceType": "Condition"});
        carry_forward(None, &mut created);
        assert!(created.get("meta").is_none());
        let unlabelled = json!({"resourceType": "Condition", "meta": {"versionId": "1"}});
        carry_forward(Some(&unlabelled), &mut created);
        assert!(created.get("meta").is_none());
    }
}
