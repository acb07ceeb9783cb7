//! The OpenAPI document: generated from the code, checked in as `docs/openapi.json`,
//! structurally valid, served as is, and every operation it names is routed.
//!
//! To accept a deliberate API change: `PORTICO_UPDATE_GOLDEN=1 cargo test -p
//! portico-tests --test integration portal::openapi`, then review the diff of
//! `docs/openapi.json`. (`scripts/check-openapi.sh` also validates it against the
//! OpenAPI 3.1 schema with openapi-spec-validator.)

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use serde_json::Value;

use crate::support::{TestApp, repo_path};

fn golden_path() -> PathBuf {
    repo_path("docs/openapi.json")
}

fn generated() -> (String, Value) {
    let api = portico::portal::openapi();
    let text = api.to_pretty_json().expect("renders") + "\n";
    let value = serde_json::from_str(&text).unwrap();
    (text, value)
}

#[test]
fn the_checked_in_document_matches_the_code() {
    let (text, _) = generated();
    let path = golden_path();
    if std::env::var_os("PORTICO_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        golden == text,
        "docs/openapi.json is out of date with the handlers' annotations; run \
         PORTICO_UPDATE_GOLDEN=1 cargo test -p portico-tests --test integration portal::openapi \
         and review the diff"
    );
}

fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref"
                    && let Some(r) = v.as_str()
                {
                    out.insert(r.to_owned());
                }
                refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
    }
    out
}

#[test]
fn the_document_is_structurally_valid_and_complete() {
    let (_, doc) = generated();
    assert_eq!(doc["openapi"], "3.1.0");
    // Every reference resolves.
    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    for r in &all {
        let pointer = r.strip_prefix('#').expect("local references only");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
    let mut ids = HashSet::new();
    let ops = operations(&doc);
    assert!(
        ops.len() >= 20,
        "every portal route is documented ({})",
        ops.len()
    );
    for (path, method, op) in &ops {
        let what = format!("{method} {path}");
        let id = op["operationId"].as_str().expect("operationId");
        assert!(
            ids.insert(id.to_owned()),
            "{what}: duplicate operationId {id}"
        );
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{what}: tag"
        );
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|k| k.starts_with('2')),
            "{what}: a success response"
        );
        assert!(responses.contains_key("401"), "{what}: documents 401");
        // Path templates and declared path parameters agree.
        let in_template: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(in_template, declared, "{what}: path parameters");
        if method == "post" {
            assert!(
                op["requestBody"].is_object()
                    || path.ends_with("/cancel")
                    || path.ends_with("/revoke"),
                "{what}: a request body"
            );
        }
    }
    for path in [
        "/me",
        "/dashboard",
        "/records/{kind}",
        "/appointments",
        "/appointments/slots",
        "/appointments/{id}/cancel",
        "/appointments/{id}/reschedule",
        "/medications",
        "/medications/{id}/refill-requests",
        "/refill-requests",
        "/referrals",
        "/messages/threads",
        "/messages/threads/{id}",
        "/messages/threads/{id}/replies",
        "/bills",
        "/bills/{id}/payments",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
}

#[tokio::test]
async fn the_served_document_is_the_generated_one_and_every_operation_is_routed() {
    let app = TestApp::spawn().await;
    let served: Value = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, doc) = generated();
    assert_eq!(served, doc);
    let token = app.portal_token("pat-1");
    for (path, method, _) in operations(&doc) {
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "no-such-id" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let url = app.url(&format!("/api/v1{concrete}"));
        let request = match method.as_str() {
            "get" => app.http.get(url),
            _ => app
                .http
                .post(url)
                .header("content-type", "application/json")
                .body("{}"),
        };
        let response = request.bearer_auth(&token).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path} is routed with that method");
        assert_ne!(
            body["detail"], "no such portal API route",
            "{method} {path} is routed"
        );
        assert_ne!(status, 500, "{method} {path}: {body:?}");
    }
}
