//! Scopes narrow what A reaches within A's own compartment: a type-limited token,
//! v2 granular scopes (labs only), read-only tokens, v1 scopes, and the single letters
//! of `cruds`. Each interaction needs its letter; a granular scope is checked on every
//! returned resource and on reads by id.

use serde_json::{Value, json};

use super::writes::{find, message};
use super::{A, Attempt, Expect, Fixture, Resp, Tok, finish};

/// How many attempts [`scopes_narrow_within_the_compartment`] makes.
pub const ATTEMPTS: usize = 39;

const LAB: &str = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

fn is_vital(obs: &Value) -> bool {
    obs["category"].to_string().contains("vital-signs")
}

fn is_lab(obs: &Value) -> bool {
    obs["category"].to_string().contains("laboratory")
}

fn entries(r: &Resp) -> Vec<Value> {
    r.json()
        .and_then(|j| j["entry"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

#[tokio::test]
async fn scopes_narrow_within_the_compartment() {
    let fx = Fixture::new().await;
    let tok =
        |scope: &str| Tok::Bearer(fx.app.patient_token(A, &format!("launch/patient {scope}")));
    let obs_only = tok("patient/Observation.rs");
    let lab_only = tok(LAB);
    let read_only = tok("patient/*.rs");
    let v1_read = tok("patient/*.read");
    let v1_write = tok("patient/*.write");
    let cud_only = tok("patient/*.cud");
    let r_only = tok("patient/Observation.r");
    let s_only = tok("patient/Observation.s");

    let a_cond = fx.a("Condition");
    let a_obs = fx.a("Observation");
    let a_vital = find(&fx, "Observation", A, is_vital).unwrap();
    let a_lab = find(&fx, "Observation", A, is_lab).unwrap();
    let a_comm = fx.a("Communication");
    let msg = message(&fx);
    let get = |name: &str, path: String, t: &Tok, expect: Expect| {
        Attempt::get(format!("scope: {name}"), path)
            .token(t.clone())
            .expect(expect)
    };
    let any = |codes: &[u16]| Expect::Status(codes.to_vec());
    let rows = vec![
        get(
            "Observation-only token searches Condition",
            "/Condition".into(),
            &obs_only,
            Expect::Forbidden,
        ),
        get(
            "Observation-only token searches A's Condition",
            "/Condition?patient=pat-1".into(),
            &obs_only,
            Expect::Forbidden,
        ),
        get(
            "Observation-only token reads A's Condition",
            format!("/Condition/{a_cond}"),
            &obs_only,
            any(&[403, 404]),
        ),
        get(
            "Observation-only token reads A's Patient",
            "/Patient/pat-1".into(),
            &obs_only,
            any(&[403, 404]),
        ),
        get(
            "Observation-only token searches B's Observations",
            "/Observation?patient=pat-2".into(),
            &obs_only,
            Expect::Forbidden,
        ),
        get(
            "Observation-only token searches Observations",
            "/Observation".into(),
            &obs_only,
            Expect::OnlyA(1),
        ),
        get(
            "labs-only token reads A's vital sign",
            format!("/Observation/{a_vital}"),
            &lab_only,
            any(&[403, 404]),
        ),
        get(
            "labs-only token vreads A's vital sign",
            format!("/Observation/{a_vital}/_history/1"),
            &lab_only,
            any(&[403, 404]),
        ),
        get(
            "labs-only token reads A's vital sign history",
            format!("/Observation/{a_vital}/_history"),
            &lab_only,
            any(&[403, 404]),
        ),
        get(
            "labs-only token reads A's lab",
            format!("/Observation/{a_lab}"),
            &lab_only,
            Expect::ResourceOfA,
        ),
        get(
            "labs-only token searches B's Observations",
            "/Observation?patient=pat-2".into(),
            &lab_only,
            Expect::Forbidden,
        ),
        get(
            "labs-only token searches DiagnosticReports",
            "/DiagnosticReport?_include=DiagnosticReport:result".into(),
            &lab_only,
            Expect::Forbidden,
        ),
        get(
            "v1 read token searches Observations",
            "/Observation".into(),
            &v1_read,
            Expect::OnlyA(1),
        ),
        get(
            "v1 read token reads A's Patient",
            "/Patient/pat-1".into(),
            &v1_read,
            Expect::ResourceOfA,
        ),
        get(
            "v1 read token reads B's Patient",
            "/Patient/pat-2".into(),
            &v1_read,
            Expect::Hidden("/Patient/no-such-patient".into()),
        ),
        get(
            "v1 read token searches B's Observations",
            "/Observation?patient=pat-2".into(),
            &v1_read,
            Expect::Forbidden,
        ),
        get(
            "cud token reads A's Patient",
            "/Patient/pat-1".into(),
            &cud_only,
            any(&[403, 404]),
        ),
        get(
            "cud token searches Observations",
            "/Observation".into(),
            &cud_only,
            Expect::Forbidden,
        ),
        get(
            "v1 write token searches Observations",
            "/Observation".into(),
            &v1_write,
            Expect::Forbidden,
        ),
        get(
            "read-only letter r searches",
            "/Observation".into(),
            &r_only,
            Expect::Forbidden,
        ),
        get(
            "read-only letter r reads A's Observation",
            format!("/Observation/{a_obs}"),
            &r_only,
            Expect::ResourceOfA,
        ),
        get(
            "search-only letter s reads A's Observation",
            format!("/Observation/{a_obs}"),
            &s_only,
            any(&[403, 404]),
        ),
        get(
            "search-only letter s searches",
            "/Observation".into(),
            &s_only,
            Expect::OnlyA(1),
        ),
        Attempt::new(
            "scope: rs token creates a message",
            "POST",
            "/Communication",
        )
        .token(read_only.clone())
        .json(&msg)
        .expect(Expect::Forbidden),
        Attempt::new(
            "scope: rs token updates A's message",
            "PUT",
            format!("/Communication/{a_comm}"),
        )
        .token(read_only.clone())
        .json(&fx.app.stored("Communication", &a_comm))
        .expect(Expect::Forbidden),
        Attempt::new(
            "scope: rs token patches A's message",
            "PATCH",
            format!("/Communication/{a_comm}"),
        )
        .token(read_only.clone())
        .body(
            "application/json-patch+json",
            json!([{ "op": "replace", "path": "/status", "value": "completed" }]).to_string(),
        )
        .expect(Expect::Forbidden),
        Attempt::new(
            "scope: rs token deletes A's message",
            "DELETE",
            format!("/Communication/{a_comm}"),
        )
        .token(read_only.clone())
        .expect(any(&[403, 405])),
        Attempt::new(
            "scope: v1 read token creates a message",
            "POST",
            "/Communication",
        )
        .token(v1_read.clone())
        .json(&msg)
        .expect(Expect::Forbidden),
        Attempt::new(
            "scope: Observation-only token creates a message",
            "POST",
            "/Communication",
        )
        .token(obs_only.clone())
        .json(&msg)
        .expect(Expect::Forbidden),
    ];
    let mut count = rows.len();
    let mut failures = fx.run_all(&rows).await;

    // Granular: every Observation a labs-only token gets is a lab, however it asks.
    let lab_searches = [
        "/Observation",
        "/Observation?category=vital-signs",
        "/Observation?category=laboratory,vital-signs",
        &format!("/Observation?_id={a_vital},{a_lab}"),
        "/Observation?_count=3",
        "/Patient/pat-1/$everything",
    ];
    for path in lab_searches {
        count += 1;
        let row = get(
            &format!("labs-only token: {path}"),
            path.to_owned(),
            &lab_only,
            Expect::DeniedOrOnlyA,
        );
        match fx.check(&row).await {
            Ok(r) if r.status == 200 => {
                let vitals: Vec<String> = entries(&r)
                    .iter()
                    .filter(|e| e["resourceType"] == "Observation" && !is_lab(e))
                    .map(|e| e["id"].to_string())
                    .collect();
                if !vitals.is_empty() {
                    failures.push(format!(
                        "[labs-only token: {path}] non-lab Observations returned: {vitals:?}"
                    ));
                }
                let others: Vec<String> = entries(&r)
                    .iter()
                    .filter(|e| {
                        !matches!(
                            e["resourceType"].as_str(),
                            Some("Observation" | "OperationOutcome")
                        )
                    })
                    .map(|e| format!("{}/{}", e["resourceType"], e["id"]))
                    .take(3)
                    .collect();
                if !others.is_empty() {
                    failures.push(format!(
                        "[labs-only token: {path}] other types returned: {others:?}"
                    ));
                }
                if path == "/Observation" && entries(&r).is_empty() {
                    failures.push("[labs-only token] no labs at all".to_owned());
                }
            }
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    }
    // An Observation-only token's includes bring no other compartment type.
    for (path, ty) in [
        ("/Observation?_include=Observation:subject", "Patient"),
        ("/Observation?_include=Observation:encounter", "Encounter"),
        (
            "/Observation?_revinclude=DiagnosticReport:result",
            "DiagnosticReport",
        ),
        (
            "/Observation?_include=Observation:encounter&_revinclude:iterate=Condition:encounter",
            "Condition",
        ),
    ] {
        count += 1;
        let row = get(
            &format!("Observation-only token: {path}"),
            path.into(),
            &obs_only,
            Expect::DeniedOrOnlyA,
        );
        match fx.check(&row).await {
            Ok(r) => {
                if entries(&r).iter().any(|e| e["resourceType"] == ty) {
                    failures.push(format!("[Observation-only token: {path}] a {ty} came back"));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert_eq!(count, ATTEMPTS, "update scopes::ATTEMPTS");
    finish("scopes", count, &failures);
}
