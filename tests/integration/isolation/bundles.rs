//! `POST /fhir` with `batch` and `transaction` Bundles mixing A's and B's entries (and
//! other Bundle shapes), and `$everything` and other operations on B. A mixed Bundle is
//! refused whole and creates nothing; a Bundle of A's own reads may be answered or
//! refused, but never with B's data.

use serde_json::{Value, json};

use super::writes::message;
use super::{Attempt, Expect, Fixture, finish};

fn bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({ "resourceType": "Bundle", "type": kind, "entry": entries })
}

fn get(url: &str) -> Value {
    json!({ "request": { "method": "GET", "url": url } })
}

fn post(ty: &str, resource: Value) -> Value {
    json!({ "fullUrl": format!("urn:uuid:{}", uuid_like(&resource)), "resource": resource, "request": { "method": "POST", "url": ty } })
}

fn uuid_like(v: &Value) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(v.to_string().as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

pub fn attempts(fx: &Fixture) -> Vec<Attempt> {
    let mut rows = Vec::new();
    let msg = message(fx);
    let mut to_b = msg.clone();
    to_b["subject"] = json!({ "reference": "Patient/pat-2" });
    let b_thread = fx.b("Communication");
    let b_obs = fx.b("Observation");
    let submit = |name: &str, b: Value, expect: Expect| {
        Attempt::new(format!("bundle: {name}"), "POST", "")
            .json(&b)
            .expect(expect)
    };
    let refused = || Expect::Status(vec![400, 403, 405, 422]);
    rows.extend([
        submit("transaction creating for A and for B", bundle("transaction", vec![post("Communication", msg.clone()), post("Communication", to_b.clone())]), refused()),
        submit("batch creating for A and for B", bundle("batch", vec![post("Communication", msg.clone()), post("Communication", to_b.clone())]), refused()),
        submit("transaction creating only for B", bundle("transaction", vec![post("Communication", to_b.clone())]), refused()),
        submit("batch reading A and B", bundle("batch", vec![get("Patient/pat-1"), get("Patient/pat-2")]), refused()),
        submit("batch searching A's and B's Observations", bundle("batch", vec![get("Observation?patient=pat-1"), get("Observation?patient=pat-2")]), refused()),
        submit("batch reading B's Observation", bundle("batch", vec![get(&format!("Observation/{b_obs}"))]), Expect::DeniedOrOnlyA),
        submit("batch of A's own reads", bundle("batch", vec![get("Patient/pat-1"), get("Observation?patient=pat-1")]), Expect::DeniedOrOnlyA),
        submit("transaction updating B's thread", bundle("transaction", vec![json!({
            "resource": fx.app.stored("Communication", &b_thread),
            "request": { "method": "PUT", "url": format!("Communication/{b_thread}") }
        })]), refused()),
        submit("transaction deleting B's thread", bundle("transaction", vec![json!({
            "request": { "method": "DELETE", "url": format!("Communication/{b_thread}") }
        })]), refused()),
        submit("transaction patching B's thread", bundle("transaction", vec![json!({
            "resource": { "resourceType": "Binary", "contentType": "application/json-patch+json",
                "data": "W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9zdGF0dXMiLCJ2YWx1ZSI6ImNvbXBsZXRlZCJ9XQ==" },
            "request": { "method": "PATCH", "url": format!("Communication/{b_thread}") }
        })]), refused()),
        submit("transaction with a new Patient and a message for it", bundle("transaction", vec![
            json!({ "fullUrl": "urn:uuid:0f4e4c1a-0000-4000-8000-000000000001",
                "resource": { "resourceType": "Patient", "link": [{ "other": { "reference": "Patient/pat-2" }, "type": "seealso" }] },
                "request": { "method": "POST", "url": "Patient" } }),
            post("Communication", { let mut m = msg.clone(); m["subject"] = json!({ "reference": "urn:uuid:0f4e4c1a-0000-4000-8000-000000000001" }); m }),
        ]), refused()),
        submit("transaction with a conditional create probing B", bundle("transaction", vec![json!({
            "resource": msg.clone(),
            "request": { "method": "POST", "url": "Communication", "ifNoneExist": "subject=Patient/pat-2" }
        })]), refused()),
        submit("batch with B's search in a nested Bundle", bundle("batch", vec![json!({
            "resource": bundle("batch", vec![get("Observation?patient=pat-2")]),
            "request": { "method": "POST", "url": "/" }
        })]), refused()),
        submit("collection Bundle naming B", bundle("collection", vec![json!({ "resource": to_b.clone() })]), refused()),
        submit("history Bundle naming B", bundle("history", vec![json!({ "resource": to_b.clone() })]), refused()),
        submit("a Communication posted at the base", to_b.clone(), refused()),
    ]);

    // `$everything` and other operations.
    let op = |name: &str, path: &str, expect: Expect| {
        Attempt::get(format!("operation: {name}"), path).expect(expect)
    };
    let gone = || Expect::Status(vec![400, 403, 404, 405]);
    rows.extend([
        op(
            "$everything on B",
            "/Patient/pat-2/$everything",
            Expect::Status(vec![403, 404]),
        ),
        op(
            "$everything on B, upper case",
            "/Patient/PAT-2/$everything",
            Expect::Status(vec![403, 404]),
        ),
        op(
            "$everything on B with _type",
            "/Patient/pat-2/$everything?_type=Observation",
            Expect::Status(vec![400, 403, 404]),
        ),
        op(
            "$everything on B with _since",
            "/Patient/pat-2/$everything?_since=2000-01-01",
            Expect::Status(vec![400, 403, 404]),
        ),
        op(
            "$everything at type level",
            "/Patient/$everything",
            Expect::DeniedOrOnlyA,
        ),
        op(
            "$everything at type level naming B",
            "/Patient/$everything?patient=pat-2",
            gone(),
        ),
        op(
            "$everything encoded",
            "/Patient/pat-2/%24everything",
            Expect::Status(vec![400, 403, 404]),
        ),
        op(
            "$everything on A with B's _id",
            "/Patient/pat-1/$everything?_id=pat-2",
            Expect::DeniedOrOnlyA,
        ),
        op("$summary on B", "/Patient/pat-2/$summary", gone()),
        op(
            "$lastn naming B",
            "/Observation/$lastn?patient=pat-2",
            gone(),
        ),
        op(
            "$meta on B's Observation",
            &format!("/Observation/{b_obs}/$meta"),
            gone(),
        ),
        op("$export of everyone", "/$export", gone()),
        op("Patient $export", "/Patient/$export", gone()),
        op("Group $export", "/Group/all/$export", gone()),
        op("system _history", "/_history", gone()),
        op(
            "Observation type _history",
            "/Observation/_history",
            Expect::DeniedOrOnlyA,
        ),
        op(
            "system search naming B",
            "/?_type=Observation&patient=pat-2",
            gone(),
        ),
        op(
            "compartment search on B",
            "/Patient/pat-2/Observation",
            gone(),
        ),
        op(
            "compartment search on B, all types",
            "/Patient/pat-2/*",
            gone(),
        ),
        Attempt::new(
            "operation: $match with B's demographics",
            "POST",
            "/Patient/$match",
        )
        .json(
            &json!({ "resourceType": "Parameters", "parameter": [{ "name": "resource", "resource": {
                "resourceType": "Patient", "name": [{ "family": fx.b_family }] } }] }),
        )
        .expect(gone()),
        Attempt::new(
            "operation: $everything on B by POST",
            "POST",
            "/Patient/pat-2/$everything",
        )
        .json(&json!({ "resourceType": "Parameters" }))
        .expect(gone()),
        Attempt::new("operation: system _search naming B", "POST", "/_search")
            .body(
                "application/x-www-form-urlencoded",
                b"_type=Observation&patient=pat-2".to_vec(),
            )
            .expect(gone()),
    ]);
    rows
}

#[tokio::test]
async fn bundles_and_operations_never_reach_b() {
    let fx = Fixture::new().await;
    let rows = attempts(&fx);
    let mut failures = fx.run_all(&rows).await;
    // The control: A's own `$everything` works and holds A's data only.
    let own = Attempt::get("control: $everything on A", "/Patient/pat-1/$everything")
        .expect(Expect::OnlyA(20));
    if let Err(e) = fx.check(&own).await {
        failures.push(e);
    }
    finish("bundles", rows.len(), &failures);
}
