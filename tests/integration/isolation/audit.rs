//! The audit sink shows the suite's requests: every refused attempt (401, 403, and the
//! 404 that hides B's resources) and every answered one has a record under its request
//! id, with the matching decision; no record carries a token or a name.

use serde_json::Value;

use super::{Attempt, Expect, Fixture, finish};

#[tokio::test]
async fn every_attempt_is_audited() {
    let fx = Fixture::new().await;
    let rows: Vec<Attempt> = super::reads::attempts(&fx)
        .into_iter()
        .chain(super::search::attempts(&fx))
        .chain(super::includes::attempts(&fx))
        .chain(super::writes::attempts(&fx))
        .chain(super::bundles::attempts(&fx))
        .chain(super::paths::attempts(&fx))
        .chain(super::tokens::attempts(&fx))
        .enumerate()
        .map(|(i, a)| a.header("x-request-id", format!("isolation-{i:04}")))
        .collect();
    let mut outcomes = Vec::new();
    for (i, a) in rows.iter().enumerate() {
        let r = fx.send(a).await;
        outcomes.push((i, a, r.status));
    }
    let records = fx.app.audit_records();
    let by_id = |id: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["request_id"].as_str() == Some(id))
            .collect()
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, a, status) in outcomes {
        let hidden = matches!(a.expect, Expect::Hidden(_)) && status == 404;
        let decision = match status {
            200..=299 => "allowed",
            401 | 403 => "denied",
            _ if hidden => "denied",
            _ => continue,
        };
        checked += 1;
        let id = format!("isolation-{i:04}");
        let found = by_id(&id);
        if found.is_empty() {
            failures.push(format!(
                "[{}] {} {} answered {status} with no audit record",
                a.name, a.method, a.path
            ));
        } else if !found.iter().any(|r| r["decision"] == decision) {
            failures.push(format!(
                "[{}] answered {status} but audited as {:?}",
                a.name,
                found
                    .iter()
                    .map(|r| r["decision"].clone())
                    .collect::<Vec<_>>()
            ));
        }
    }
    let all = serde_json::to_string(&records).unwrap_or_default();
    if all.contains(&fx.token_a) || all.contains(&fx.token_b) {
        failures.push("[audit] a record holds a token".to_owned());
    }
    for p in fx.app.sandbox.patients() {
        if all.contains(&p.name) || all.contains(&p.birth_date) {
            failures.push(format!(
                "[audit] a record holds the name or birth date of {}",
                p.id
            ));
        }
    }
    println!(
        "isolation/audit: {} records, {checked} decisions checked",
        records.len()
    );
    finish("audit", checked, &failures);
}

/// `[audit] on_failure = "refuse"` (the default): while the trail cannot be written, no
/// patient data is answered — through the facade or the portal — and nothing is written
/// to the EHR; the replica says it cannot serve; once the disk is back, it serves again.
#[tokio::test]
async fn nothing_is_answered_while_the_trail_cannot_be_written() {
    // Every batch rotates the file, so the writer needs the directory at each one (an
    // open file would otherwise keep taking records after its directory moved).
    let app = crate::support::TestApp::spawn_configured(|config| {
        config.audit.max_file_bytes = 1;
    })
    .await;
    let fhir = app.patient_token("pat-1", "launch/patient patient/*.rs");
    let portal = app.portal_token("pat-1");
    let read = || async {
        app.http
            .get(app.url("/fhir/Patient/pat-1"))
            .bearer_auth(&fhir)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(read().await.status(), 200);
    // The log's directory becomes a file: nothing can be appended or reopened.
    let dir = app.audit_dir().to_owned();
    let aside = dir.with_extension("aside");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let refused = read().await;
    assert_eq!(refused.status(), 503);
    let outcome: Value = refused.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert!(outcome.to_string().contains("audit"), "{outcome}");
    let me = app.api_get(&portal, "/me").await;
    assert_eq!(me.status, 503, "{:?}", me.body);
    assert_eq!(me.code(), "audit_unavailable");
    app.sandbox.faults().reset_stats();
    let sent = app
        .api_post(
            &portal,
            "/referrals",
            &serde_json::json!({"specialty": "394579002", "reason": "chest pain"}),
            Some("audit-refused-1"),
        )
        .await;
    assert_eq!(sent.status, 503, "{:?}", sent.body);
    assert_eq!(
        app.sandbox.faults().requests_for("POST", "ServiceRequest"),
        0,
        "no write was sent unrecorded"
    );
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    // The disk comes back: the replica recovers by itself.
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&aside, &dir).unwrap();
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(read().await.status(), 200);
}
