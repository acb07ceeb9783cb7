//! The matrix's facade rows: a SMART app's conditional create (`If-None-Exist` on its
//! own identifier) and its `If-Match` update, under every column (see `mod.rs`).
//!
//! The app retries as FHIR clients do: the same conditional create (the EHR answers the
//! existing resource), or the same `If-Match` update — and on `412`, reads the resource
//! to see whether its change is already there. A FHIR client reads a 5xx as "unknown",
//! so these rows do not hold the gateway to the portal's "said it did not happen"
//! promise; everything else is checked the same way.

use serde_json::{Value, json};

use super::{Row, Sent, TestApp, Write, expect_listed, get, run_row, send};

const PATIENT: &str = "pat-1";
const SYSTEM: &str = "https://app.example/requests";
const LIST: &str = "/fhir/ServiceRequest?_count=200";

fn proposal(text: &str) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "proposal",
        "subject": {"reference": format!("Patient/{PATIENT}")},
        "requester": {"reference": format!("Patient/{PATIENT}")},
        "code": {"text": text},
    })
}

fn version(v: &Value) -> u64 {
    v["meta"]["versionId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn warm(app: &TestApp, token: &str, paths: &[String]) {
    for path in paths {
        let answer = get(app, token, path).await;
        assert_eq!(answer.status(), 200, "{path}: {}", answer.body());
    }
}

struct Create {
    token: String,
}

impl Create {
    fn query(key: &str) -> String {
        format!("identifier={SYSTEM}|{key}")
    }
}

impl Row for Create {
    fn name(&self) -> &'static str {
        "facade create"
    }

    fn aim(&self) -> &'static str {
        "/fhir/ServiceRequest"
    }

    async fn prepare(&mut self, app: &TestApp, n: usize) -> Write {
        let key = format!("fc-{n}");
        warm(
            app,
            &self.token,
            &[
                LIST.to_owned(),
                format!("/fhir/ServiceRequest?{}", Create::query(&key)),
            ],
        )
        .await;
        let mut body = proposal(&format!("matrix facade create {n}"));
        body["identifier"] = json!([{"system": SYSTEM, "value": key}]);
        Write {
            path: "/fhir/ServiceRequest".to_owned(),
            body,
            key,
            target: Value::Null,
        }
    }

    async fn send(&self, app: &TestApp, write: &Write) -> Sent {
        send(
            app.http
                .post(app.url(&write.path))
                .bearer_auth(&self.token)
                .header("content-type", "application/fhir+json")
                .header("prefer", "return=representation")
                .header("if-none-exist", Create::query(&write.key))
                .body(write.body.to_string()),
        )
        .await
    }

    fn effects(&self, app: &TestApp, write: &Write) -> Result<Vec<String>, String> {
        Ok(app
            .all_stored("ServiceRequest")
            .into_iter()
            .filter(|s| s["identifier"][0]["value"] == write.key.as_str())
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect())
    }

    fn answered(&self, body: &Value) -> Option<String> {
        (body["resourceType"] == "ServiceRequest")
            .then(|| body["id"].as_str().map(str::to_owned))
            .flatten()
    }

    async fn reads(&self, app: &TestApp, write: &Write, effects: &[String]) -> Vec<String> {
        let mut problems = expect_listed(app, &self.token, LIST, effects).await;
        problems.extend(
            expect_listed(
                app,
                &self.token,
                &format!("/fhir/ServiceRequest?{}", Create::query(&write.key)),
                effects,
            )
            .await,
        );
        problems
    }

    fn strict(&self) -> bool {
        false
    }
}

struct Update {
    token: String,
}

impl Row for Update {
    fn name(&self) -> &'static str {
        "facade update"
    }

    fn aim(&self) -> &'static str {
        "/fhir/ServiceRequest"
    }

    /// A proposal of the patient's of its own per cell, at version 1.
    async fn prepare(&mut self, app: &TestApp, n: usize) -> Write {
        let id = format!("sr-matrix-{n}");
        let mut current = proposal(&format!("matrix facade update {n}"));
        current["id"] = json!(id);
        app.sandbox
            .store()
            .update("ServiceRequest", &id, current.clone(), None)
            .expect("proposal stored");
        warm(
            app,
            &self.token,
            &[format!("/fhir/ServiceRequest/{id}"), LIST.to_owned()],
        )
        .await;
        let note = format!("changed in cell {n}");
        let mut body = current;
        body["note"] = json!([{"text": note}]);
        Write {
            path: format!("/fhir/ServiceRequest/{id}"),
            body,
            key: note,
            target: json!({"id": id, "version": 1}),
        }
    }

    async fn send(&self, app: &TestApp, write: &Write) -> Sent {
        let version = write.target["version"].as_u64().unwrap_or(0);
        let sent = send(
            app.http
                .put(app.url(&write.path))
                .bearer_auth(&self.token)
                .header("content-type", "application/fhir+json")
                .header("prefer", "return=representation")
                .header("if-match", format!("W/\"{version}\""))
                .body(write.body.to_string()),
        )
        .await;
        if sent.status() != 412 {
            return sent;
        }
        // Someone changed it since: is it this change, applied by an earlier attempt?
        let current = get(app, &self.token, &write.path).await;
        if current.body()["note"][0]["text"] == write.key.as_str() {
            current
        } else {
            sent
        }
    }

    fn effects(&self, app: &TestApp, write: &Write) -> Result<Vec<String>, String> {
        let id = write.target["id"].as_str().unwrap_or_default();
        let stored = app.stored("ServiceRequest", id);
        let changed = stored["note"][0]["text"] == write.key.as_str();
        match (changed, version(&stored)) {
            (true, 2) => Ok(vec![id.to_owned()]),
            (false, 1) => Ok(Vec::new()),
            (changed, v) => Err(format!("changed: {changed} at version {v}")),
        }
    }

    fn answered(&self, body: &Value) -> Option<String> {
        (body["resourceType"] == "ServiceRequest")
            .then(|| body["id"].as_str().map(str::to_owned))
            .flatten()
    }

    async fn reads(&self, app: &TestApp, write: &Write, effects: &[String]) -> Vec<String> {
        let shown: Vec<String> = if effects.is_empty() {
            Vec::new()
        } else {
            vec![write.key.clone()]
        };
        let mut problems = expect_listed(app, &self.token, &write.path, &shown).await;
        problems.extend(expect_listed(app, &self.token, LIST, &shown).await);
        problems
    }

    fn strict(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn facade_conditional_create_under_every_fault() {
    run_row(|app| Create {
        token: app.portal_token(PATIENT),
    })
    .await;
}

#[tokio::test]
async fn facade_update_under_every_fault() {
    run_row(|app| Update {
        token: app.portal_token(PATIENT),
    })
    .await;
}
