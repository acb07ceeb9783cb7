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
