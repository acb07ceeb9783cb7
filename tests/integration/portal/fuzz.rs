//! Fuzzing the portal API's request parsing: arbitrary JSON values, arbitrary bytes,
//! wrong content types and arbitrary path ids against every write route of the
//! OpenAPI document. Whatever comes in, the answer is a 4xx problem (or, for a body
//! that happens to be valid, an ordinary answer), never a 5xx, a panic or a hang.
//! Bounded: a fixed number of cases per run, so CI time stays predictable.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use crate::support::TestApp;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        // Field names and values the handlers look at.
        prop_oneof![
            Just("slot_id"),
            Just("reason"),
            Just("text"),
            Just("topic"),
            Just("recipient"),
            Just("amount"),
            Just("payment_token"),
            Just("specialty"),
            Just("note"),
            Just("Practitioner/prac-1"),
            Just("tok_ok"),
            Just("4242424242424242"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("slot_id".to_owned()),
                    Just("reason".to_owned()),
                    Just("text".to_owned()),
                    Just("topic".to_owned()),
                    Just("recipient".to_owned()),
                    Just("amount".to_owned()),
                    Just("value".to_owned()),
                    Just("currency".to_owned()),
                    Just("payment_token".to_owned()),
                    Just("specialty".to_owned()),
                    Just("attachments".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Bytes(Vec<u8>),
    WrongType(Value),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        6 => json_value().prop_map(Body::Json),
        2 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Body::Bytes),
        1 => json_value().prop_map(Body::WrongType),
    ]
}

#[test]
fn arbitrary_portal_bodies_never_cause_a_server_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(TestApp::spawn());
    let token = app.portal_token("pat-1");
    let doc: Value = serde_json::from_str(&portico::portal::openapi().to_json().unwrap()).unwrap();
    let routes: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, item)| item.get("post").is_some())
        .map(|(path, _)| path.clone())
        .collect();
    assert!(!routes.is_empty());
    let ids = prop_oneof![Just("pat-2".to_owned()), "[A-Za-z0-9.-]{1,64}", ".{1,20}",];
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(0..routes.len(), ids, body()), |(route, id, body)| {
            let path = routes[route]
                .split('/')
                .map(|s| {
                    if s.starts_with('{') {
                        url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
                    } else {
                        s.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let (content_type, bytes) = match &body {
                Body::Json(v) => ("application/json", v.to_string().into_bytes()),
                Body::Bytes(b) => ("application/json", b.clone()),
                Body::WrongType(v) => ("text/plain", v.to_string().into_bytes()),
            };
            let (status, text) = runtime.block_on(async {
                let response = app
                    .http
                    .post(app.url(&format!("/api/v1{path}")))
                    .bearer_auth(&token)
                    .header("content-type", content_type)
                    .header("idempotency-key", format!("fuzz-{}", rand::random::<u64>()))
                    .body(bytes)
                    .send()
                    .await
                    .expect("an answer, not a dropped connection");
                (response.status(), response.text().await.unwrap_or_default())
            });
            prop_assert!(
                !status.is_server_error(),
                "POST {path} with {body:?} → {status}: {text}"
            );
            if status.is_client_error() {
                let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                prop_assert!(
                    problem["code"].is_string(),
                    "POST {path} → {status}: {text}"
                );
            }
            Ok(())
        })
        .unwrap();
}
