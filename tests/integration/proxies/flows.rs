//! Proxy access over time and across paths: what each rule allows (the positive
//! controls, so that the refusals above are not a gateway refusing everything),
//! switching patients with a warm cache, dashboard counts, revocation (in an open
//! session too), the access list, and the audit trail naming who acted for whom.

use serde_json::{Value, json};

use super::{Fixture, Who};
use crate::support::TestApp;
use crate::web::Browser;

fn ids(body: &Value) -> Vec<String> {
    body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
        .collect()
}

async fn fhir_get(fx: &Fixture, who: &Who, path: &str) -> (u16, Value) {
    let response = fx
        .app
        .http
        .get(format!("{}{path}", fx.app.fhir()))
        .bearer_auth(fx.token(who))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn api(
    fx: &Fixture,
    who: &Who,
    method: &str,
    path: &str,
    acting_for: Option<&str>,
) -> (u16, Value) {
    let url = fx.app.url(&format!("/api/v1{path}"));
    let mut request = match method {
        "GET" => fx.app.http.get(url),
        _ => fx
            .app
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .body("{}"),
    }
    .bearer_auth(fx.token(who));
    if let Some(p) = acting_for {
        request = request.header("Portico-Patient", p);
    }
    let response = request.send().await.expect("api");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn what_each_rule_allows() {
    let fx = Fixture::new().await;
    let f = &fx.families;
    // A parent of an 8-year-old sees the child's psychiatric record (the minors rule
    // releases it to parents under 12); the grandparent does not (tested in rows).
    let (ty, id) = &f.child_sensitive[0];
    let (status, _) = fhir_get(&fx, &fx.parent(), &format!("/{ty}/{id}")).await;
    assert_eq!(
        status, 200,
        "a parent reads a young child's released record"
    );
    // The teen, the elder and the daughter see their own labelled records.
    for (who, list) in [
        (Who::Patient(f.teen.clone()), &f.teen_sensitive),
        (Who::Patient(f.elder.clone()), &f.elder_sensitive),
        (fx.daughter(), &f.daughter_sensitive),
    ] {
        for (ty, id) in list {
            let (status, _) = fhir_get(&fx, &who, &format!("/{ty}/{id}")).await;
            assert_eq!(status, 200, "{who:?} reads their own {ty}/{id}");
        }
    }
    // The daughter reads her father's unlabelled records...
    let (status, bundle) = fhir_get(
        &fx,
        &fx.daughter(),
        &format!("/Condition?patient={}", f.elder),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!ids(&bundle).is_empty());
    // ...and, a full proxy, books for him.
    let slot = fx
        .app
        .all_stored("Slot")
        .into_iter()
        .find(|s| s["status"] == "free")
        .and_then(|s| s["id"].as_str().map(str::to_owned))
        .unwrap();
    let response = fx
        .app
        .http
        .post(fx.app.url("/api/v1/appointments"))
        .bearer_auth(fx.token(&fx.daughter()))
        .header("Portico-Patient", &f.elder)
        .header("Idempotency-Key", "proxy-book-1")
        .json(&json!({"slot_id": slot, "reason": "checkup"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap()
    );
    // The billing-only spouse sees the elder's bills and pays one.
    let (status, bills) = api(&fx, &fx.spouse(), "GET", "/bills", Some(&f.elder)).await;
    assert_eq!(status, 200, "{bills}");
    let account = bills["accounts"][0]["id"]
        .as_str()
        .expect("an account")
        .to_owned();
    let response = fx
        .app
        .http
        .post(fx.app.url(&format!("/api/v1/bills/{account}/payments")))
        .bearer_auth(fx.token(&fx.spouse()))
        .header("Portico-Patient", &f.elder)
        .header("Idempotency-Key", "proxy-pay-1")
        .json(&json!({"amount": {"value": 1.0, "currency": "USD"}, "payment_token": "tok_ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap()
    );
    // `/me` says how the proxy acts.
    let (status, me) = api(&fx, &fx.spouse(), "GET", "/me", Some(&f.elder)).await;
    assert_eq!(status, 200);
    assert_eq!(me["proxy"]["level"], "billing-only", "{me}");
    assert_eq!(me["proxy"]["relationship"], "rp-spouse-elder");
}

#[tokio::test]
async fn counts_and_lists_leave_withheld_records_out() {
    let fx = Fixture::new().await;
    let f = &fx.families;
    let teen = Who::Patient(f.teen.clone());
    let mr = &f
        .teen_sensitive
        .iter()
        .find(|(t, _)| t == "MedicationRequest")
        .unwrap()
        .1;
    // The teen's own dashboard lists the confidential prescription; the parent's does
    // not, and lists exactly one fewer.
    let (_, own) = api(&fx, &teen, "GET", "/dashboard", None).await;
    let (_, parents) = api(&fx, &fx.parent(), "GET", "/dashboard", Some(&f.teen)).await;
    let meds = |d: &Value| -> Vec<String> {
        d["medications"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(meds(&own).contains(mr), "{own}");
    assert!(!meds(&parents).contains(mr), "{parents}");
    assert_eq!(meds(&parents).len() + 1, meds(&own).len());
    // A single-page search's total counts only what the parent sees.
    let (_, own) = fhir_get(&fx, &teen, &format!("/Condition?patient={}", f.teen)).await;
    let (_, parents) = fhir_get(&fx, &fx.parent(), &format!("/Condition?patient={}", f.teen)).await;
    let shown = ids(&parents).len();
    assert_eq!(ids(&own).len(), shown + 1, "one confidential condition");
    if let Some(total) = parents["total"].as_u64() {
        assert_eq!(total as usize, shown, "{parents}");
    }
    // Paging through: no page carries a total, and no page the confidential record.
    let mut next = Some(format!(
        "{}/Condition?patient={}&_count=1",
        fx.app.fhir(),
        f.teen
    ));
    let mut pages = 0;
    while let Some(url) = next.take() {
        let page: Value = fx
            .app
            .http
            .get(&url)
            .bearer_auth(fx.token(&fx.parent()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(page.get("total").is_none(), "a paged total: {page}");
        for (_, id) in &f.teen_sensitive {
            assert!(!ids(&page).contains(id), "{id} on a page");
        }
        next = page["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str().map(str::to_owned));
        pages += 1;
        assert!(pages < 50);
    }
    assert!(pages > 1, "paged");
}

#[tokio::test]
async fn a_warm_cache_never_carries_a_record_across_patients() {
    let fx = Fixture::new().await;
    let f = &fx.families;
    let teen = Who::Patient(f.teen.clone());
    let paths = [
        format!("/Condition?patient={}", f.teen),
        format!("/Observation?patient={}&category=laboratory", f.teen),
        format!("/MedicationRequest?patient={}", f.teen),
        format!("/Encounter?patient={}", f.teen),
        format!("/Patient/{}/$everything", f.teen),
    ];
    for round in 0..2 {
        for path in &paths {
            // The teen fills the cache, the parent reads the same searches, then the
            // parent switches to the child and back.
            let (status, own) = fhir_get(&fx, &teen, path).await;
            assert_eq!(status, 200);
            assert!(
                f.teen_sensitive
                    .iter()
                    .any(|(_, id)| ids(&own).contains(id))
                    || path.contains("Observation")
                    || path.contains("Encounter")
                    || path.contains("Medication"),
                "the teen sees hers"
            );
            for _ in 0..2 {
                let (status, parents) = fhir_get(&fx, &fx.parent(), path).await;
                assert_eq!(status, 200, "round {round} {path}");
                for (_, id) in &f.teen_sensitive {
                    assert!(
                        !ids(&parents).contains(id),
                        "round {round}: {id} leaked on {path}"
                    );
                }
                let (status, _) = fhir_get(
                    &fx,
                    &fx.parent(),
                    &format!("/Condition?patient={}", f.child),
                )
                .await;
                assert_eq!(status, 200);
            }
        }
    }
    // The portal's kept answers likewise: the parent switching between the children.
    for _ in 0..2 {
        let (_, own) = api(&fx, &teen, "GET", "/records/conditions", None).await;
        let (_, parents) = api(
            &fx,
            &fx.parent(),
            "GET",
            "/records/conditions",
            Some(&f.teen),
        )
        .await;
        let (_, child) = api(
            &fx,
            &fx.parent(),
            "GET",
            "/records/conditions",
            Some(&f.child),
        )
        .await;
        let text = |v: &Value| v.to_string();
        let cond = &f
            .teen_sensitive
            .iter()
            .find(|(t, _)| t == "Condition")
            .unwrap()
            .1;
        assert!(text(&own).contains(cond.as_str()), "{own}");
        assert!(!text(&parents).contains(cond.as_str()), "{parents}");
        assert!(!text(&child).contains(cond.as_str()));
    }
}

#[tokio::test]
async fn the_patient_lists_and_revokes_access_at_once() {
    let fx = Fixture::new().await;
    let f = &fx.families;
    let elder = Who::Patient(f.elder.clone());
    let (status, list) = api(&fx, &elder, "GET", "/access", None).await;
    assert_eq!(status, 200, "{list}");
    let proxies = list["proxies"].as_array().unwrap();
    let by_id = |id: &str| {
        proxies
            .iter()
            .find(|p| p["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(by_id("rp-daughter-elder")["status"], "active");
    assert_eq!(by_id("rp-daughter-elder")["level"], "full");
    assert_eq!(by_id("rp-spouse-elder")["level"], "billing-only");
    assert_eq!(by_id("rp-former-caregiver-elder")["status"], "ended");
    assert_eq!(
        by_id("rp-former-caregiver-elder")["ended_because"],
        "period-ended"
    );
    // A proxy may neither list nor revoke.
    let (status, body) = api(&fx, &fx.daughter(), "GET", "/access", Some(&f.elder)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("proxy_not_permitted")),
        "{body}"
    );
    let (status, body) = api(
        &fx,
        &fx.daughter(),
        "POST",
        "/access/rp-spouse-elder/revoke",
        Some(&f.elder),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("proxy_not_permitted")),
        "{body}"
    );
    // Nor may a patient revoke someone else's.
    let (status, _) = api(
        &fx,
        &Who::Patient(f.teen.clone()),
        "POST",
        "/access/rp-daughter-elder/revoke",
        None,
    )
    .await;
    assert_eq!(status, 404);

    // The daughter, signed in in a browser, sees her father's pages; her API token
    // reads his record (and the cache now holds it).
    let mut browser = Browser::new(&fx.app);
    let home = browser.sign_in(&f.logins.daughter.id).await;
    assert_eq!(home.status, 200, "{}", home.body);
    let profile = browser.get("/profile").await;
    assert!(
        profile.body.contains("Hughes"),
        "names on the profile: {}",
        profile.body
    );
    let (status, _) = fhir_get(
        &fx,
        &fx.daughter(),
        &format!("/Condition?patient={}", f.elder),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = api(
        &fx,
        &fx.daughter(),
        "GET",
        "/records/conditions",
        Some(&f.elder),
    )
    .await;
    assert_eq!(status, 200);

    // The elder revokes her.
    let (status, revoked) = api(
        &fx,
        &elder,
        "POST",
        "/access/rp-daughter-elder/revoke",
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "ended");
    let stored = fx.app.stored("RelatedPerson", "rp-daughter-elder");
    assert!(stored["period"]["end"].is_string(), "{stored}");
    assert_eq!(
        stored["patient"]["reference"],
        format!("Patient/{}", f.elder)
    );

    // At once: the same token, the same warm cache, the same open session.
    let (status, _) = fhir_get(
        &fx,
        &fx.daughter(),
        &format!("/Condition?patient={}", f.elder),
    )
    .await;
    assert_eq!(status, 403, "the facade after revocation");
    let (status, _) = api(
        &fx,
        &fx.daughter(),
        "GET",
        "/records/conditions",
        Some(&f.elder),
    )
    .await;
    assert_eq!(status, 404, "the portal after revocation");
    let (status, _) = fhir_get(&fx, &fx.daughter(), &format!("/Patient/{}", f.daughter)).await;
    assert_eq!(status, 200, "her own record stays hers");
    let profile = browser.get("/profile").await;
    assert_eq!(profile.status, 200);
    let elder_name = fx.everything_of(&f.elder).texts.into_iter().next().unwrap();
    assert!(
        !profile.body.contains(&elder_name),
        "the session no longer acts for him"
    );
    // Revoking again changes nothing.
    let (status, again) = api(
        &fx,
        &elder,
        "POST",
        "/access/rp-daughter-elder/revoke",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["end"], revoked["end"]);
}

#[tokio::test]
async fn audit_records_name_the_proxy_and_the_patient() {
    let fx = Fixture::new().await;
    let f = &fx.families;
    let (status, _) = fhir_get(
        &fx,
        &fx.daughter(),
        &format!("/Condition?patient={}", f.elder),
    )
    .await;
    assert_eq!(status, 200);
    let records = fx.app.audit_records();
    let record = records
        .iter()
        .rev()
        .find(|r| r["resource_type"] == "Condition" && r["subject"] == f.logins.daughter.id)
        .expect("an audit record of the daughter's search");
    assert_eq!(
        record["on_behalf_of"][0]["patient"],
        f.elder.as_str(),
        "{record}"
    );
    assert_eq!(
        record["on_behalf_of"][0]["relationship"],
        "rp-daughter-elder"
    );
    assert_eq!(record["on_behalf_of"][0]["level"], "full");
    assert!(
        record["patients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == f.elder.as_str()),
        "{record}"
    );
    // Her own reads name no proxy relationship for her own record.
    let (status, _) = fhir_get(&fx, &fx.daughter(), &format!("/Patient/{}", f.daughter)).await;
    assert_eq!(status, 200);
    let records = fx.app.audit_records();
    let own = records
        .iter()
        .rev()
        .find(|r| r["resource_type"] == "Patient" && r["resource_id"] == f.daughter.as_str())
        .expect("a record of her own read");
    assert!(
        own["on_behalf_of"]
            .as_array()
            .is_none_or(|a| a.iter().all(|g| g["patient"] != f.daughter.as_str())),
        "{own}"
    );
}

#[tokio::test]
async fn with_the_consent_strategy_a_revocation_is_a_consent() {
    let app = TestApp::spawn_with_profile_edit("revoke = \"period\"", "revoke = \"consent\"").await;
    let fx = Fixture::on(app);
    let f = &fx.families;
    let elder = Who::Patient(f.elder.clone());
    let (status, _) = fhir_get(
        &fx,
        &fx.daughter(),
        &format!("/Condition?patient={}", f.elder),
    )
    .await;
    assert_eq!(status, 200);
    let (status, revoked) = api(
        &fx,
        &elder,
        "POST",
        "/access/rp-daughter-elder/revoke",
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "ended");
    assert_eq!(revoked["ended_because"], "revoked");
    // The EHR holds a Consent denying her; the RelatedPerson itself is unchanged.
    let consents: Vec<Value> = fx
        .app
        .all_stored("Consent")
        .into_iter()
        .filter(|c| c["patient"]["reference"] == format!("Patient/{}", f.elder))
        .collect();
    assert_eq!(consents.len(), 1, "{consents:?}");
    assert_eq!(consents[0]["provision"]["type"], "deny");
    assert_eq!(
        consents[0]["provision"]["actor"][0]["reference"]["reference"],
        "RelatedPerson/rp-daughter-elder"
    );
    assert!(fx.app.stored("RelatedPerson", "rp-daughter-elder")["period"]["end"].is_null());
    // At once, for the same token and cache.
    let (status, _) = fhir_get(
        &fx,
        &fx.daughter(),
        &format!("/Condition?patient={}", f.elder),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = api(&fx, &fx.daughter(), "GET", "/me", Some(&f.elder)).await;
    assert_eq!(status, 404);
    // The list says so; revoking again writes nothing more.
    let (_, list) = api(&fx, &elder, "GET", "/access", None).await;
    let daughter = list["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "rp-daughter-elder")
        .cloned()
        .unwrap();
    assert_eq!(daughter["ended_because"], "revoked", "{list}");
    let (status, _) = api(
        &fx,
        &elder,
        "POST",
        "/access/rp-daughter-elder/revoke",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let count = fx
        .app
        .all_stored("Consent")
        .into_iter()
        .filter(|c| c["patient"]["reference"] == format!("Patient/{}", f.elder))
        .count();
    assert_eq!(count, 1);
    // The spouse is untouched.
    let (status, _) = api(&fx, &fx.spouse(), "GET", "/bills", Some(&f.elder)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_ehr_that_manages_proxies_elsewhere_answers_501() {
    let app =
        TestApp::spawn_with_profile_edit("revoke = \"period\"", "revoke = \"unsupported\"").await;
    let fx = Fixture::on(app);
    let elder = Who::Patient(fx.families.elder.clone());
    let (status, body) = api(
        &fx,
        &elder,
        "POST",
        "/access/rp-daughter-elder/revoke",
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (501, Some("not_supported_by_ehr")),
        "{body}"
    );
    let (status, _) = fhir_get(
        &fx,
        &fx.daughter(),
        &format!("/Condition?patient={}", fx.families.elder),
    )
    .await;
    assert_eq!(status, 200, "nothing changed");
}
