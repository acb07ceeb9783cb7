//! Portal API: bills (accounts, invoices, payments through the sandbox processor).

use portico::config::EhrProfile;
use portico_sandbox::FailureKind;
use serde_json::{Value, json};

use crate::support::TestApp;

/// The patient's Account id.
fn account_of(app: &TestApp, patient: &str) -> String {
    app.all_stored("Account")
        .into_iter()
        .find(|a| a["subject"][0]["reference"] == format!("Patient/{patient}"))
        .and_then(|a| a["id"].as_str().map(str::to_owned))
        .expect("an account")
}

fn balance(app: &TestApp, account: &str) -> f64 {
    app.stored("Account", account)["extension"][0]["valueMoney"]["value"]
        .as_f64()
        .unwrap()
}

fn payments(app: &TestApp) -> Vec<Value> {
    app.all_stored("PaymentReconciliation")
}

fn pay_body(value: f64, currency: &str, token: &str) -> Value {
    json!({"amount": {"value": value, "currency": currency}, "payment_token": token})
}

#[tokio::test]
async fn bills_list_the_patients_accounts_with_balance_and_invoices() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let answer = app.api_get(&token, "/bills").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let accounts = answer.body["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1);
    let account = &accounts[0];
    assert_eq!(account["id"], account_of(&app, "pat-1").as_str());
    assert_eq!(account["balance"]["currency"], "USD");
    assert_eq!(
        account["balance"]["value"].as_f64().unwrap(),
        balance(&app, account["id"].as_str().unwrap())
    );
    assert_eq!(account["payable"], true);
    let invoices = account["invoices"].as_array().unwrap();
    assert!(!invoices.is_empty());
    let mut total = 0.0;
    for invoice in invoices {
        assert_eq!(invoice["status"], "issued");
        let lines = invoice["lines"].as_array().unwrap();
        assert!(!lines.is_empty());
        assert!(lines.iter().all(|l| l["description"].is_string()));
        let sum: f64 = lines
            .iter()
            .map(|l| l["net"]["value"].as_f64().unwrap())
            .sum();
        assert!((sum - invoice["total_net"]["value"].as_f64().unwrap()).abs() < 0.005);
        total += invoice["total_gross"]["value"].as_f64().unwrap();
    }
    // The generated balance is the sum of the invoices.
    assert!((total - account["balance"]["value"].as_f64().unwrap()).abs() < 0.005);
}

#[tokio::test]
async fn paying_part_of_the_balance_charges_once_records_and_lowers_the_balance() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let account = account_of(&app, "pat-1");
    let before = balance(&app, &account);
    let path = format!("/bills/{account}/payments");
    let first = app
        .api_post(
            &token,
            &path,
            &pay_body(10.25, "USD", "tok_ok"),
            Some("pay-1"),
        )
        .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let reference = first.body["charge_reference"].as_str().unwrap().to_owned();
    assert_eq!(reference, "ch_sandbox_000001");
    assert_eq!(
        first.body["amount"],
        json!({"value": 10.25, "currency": "USD"})
    );

    let recorded = payments(&app);
    assert_eq!(recorded.len(), 1);
    let pr = &recorded[0];
    assert_eq!(pr["id"], first.body["id"]);
    assert_eq!(pr["status"], "active");
    assert_eq!(pr["paymentIdentifier"]["value"], reference.as_str());
    assert_eq!(
        pr["paymentAmount"],
        json!({"value": 10.25, "currency": "USD"})
    );
    assert_eq!(pr["detail"][0]["type"]["coding"][0]["code"], "payment");
    assert_eq!(
        pr["detail"][0]["request"]["reference"],
        format!("Account/{account}")
    );
    // The sandbox's billing rule posted it; the portal shows the new balance at once.
    let after = balance(&app, &account);
    assert!(
        (before - 10.25 - after).abs() < 0.005,
        "{before} -> {after}"
    );
    let bills = app.api_get(&token, "/bills").await;
    assert_eq!(
        bills.body["accounts"][0]["balance"]["value"]
            .as_f64()
            .unwrap(),
        after
    );

    // The same key again: the same answer, no second charge, no second record.
    let again = app
        .api_post(
            &token,
            &path,
            &pay_body(10.25, "USD", "tok_ok"),
            Some("pay-1"),
        )
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(payments(&app).len(), 1);
    assert!((balance(&app, &account) - after).abs() < 0.005);
    // The processor made exactly one charge so far: the next one is its second.
    let next = app
        .api_post(
            &token,
            &path,
            &pay_body(1.0, "USD", "tok_ok"),
            Some("pay-2"),
        )
        .await;
    assert_eq!(next.status, 201, "{:?}", next.body);
    assert_eq!(next.body["charge_reference"], "ch_sandbox_000002");
    assert_eq!(payments(&app).len(), 2);
}

#[tokio::test]
async fn bad_payments_are_refused_before_any_charge() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let account = account_of(&app, "pat-1");
    let before = balance(&app, &account);
    let path = format!("/bills/{account}/payments");
    let cases = [
        (
            pay_body(before + 0.01, "USD", "tok_ok"),
            422,
            "amount_exceeds_balance",
        ),
        (pay_body(5.0, "EUR", "tok_ok"), 422, "currency_mismatch"),
        (pay_body(0.0, "USD", "tok_ok"), 400, "invalid_amount"),
        (pay_body(1.005, "USD", "tok_ok"), 400, "invalid_amount"),
        (
            pay_body(5.0, "USD", "tok_declined"),
            422,
            "payment_declined",
        ),
        (
            pay_body(5.0, "USD", "tok_unavailable"),
            503,
            "payment_unavailable",
        ),
        (
            json!({"amount": {"value": 5.0, "currency": "USD"}}),
            400,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let answer = app.api_post(&token, &path, &body, None).await;
        assert_eq!(answer.status, status, "{code}: {:?}", answer.body);
        assert_eq!(answer.code(), code);
    }
    assert!(payments(&app).is_empty());
    assert_eq!(balance(&app, &account), before);
    // Nothing was charged: the first successful payment is the processor's first charge.
    let ok = app
        .api_post(&token, &path, &pay_body(1.0, "USD", "tok_ok"), None)
        .await;
    assert_eq!(ok.body["charge_reference"], "ch_sandbox_000001");

    // Another patient's account is not found, and nothing is charged.
    let foreign = format!("/bills/{}/payments", account_of(&app, "pat-2"));
    let answer = app
        .api_post(&token, &foreign, &pay_body(1.0, "USD", "tok_ok"), None)
        .await;
    assert_eq!(answer.status, 404, "{:?}", answer.body);
    assert_eq!(payments(&app).len(), 1);
}

#[tokio::test]
async fn card_numbers_are_refused_and_appear_nowhere() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let account = account_of(&app, "pat-1");
    let path = format!("/bills/{account}/payments");
    app.sandbox.faults().reset_stats();
    for (body, key) in [
        (pay_body(5.0, "USD", "4111 1111 1111 1111"), "card-1"),
        (pay_body(5.0, "USD", "4111-1111-1111-1111"), "card-2"),
        (
            json!({"amount": {"value": 5.0, "currency": "USD"}, "payment_token": 4111111111111111u64}),
            "card-3",
        ),
    ] {
        let answer = app.api_post(&token, &path, &body, Some(key)).await;
        assert_eq!(answer.status, 400, "{:?}", answer.body);
        assert_eq!(answer.code(), "card_number_not_accepted");
        assert!(!answer.body.to_string().contains("1111"));
    }
    // Nothing went upstream, nothing was recorded, the audit log never saw it.
    let upstream = app.sandbox.faults().stats();
    assert!(
        upstream.by_method_and_type.iter().all(|c| c.method == "GET"
            && !["Account", "PaymentReconciliation", "Basic"].contains(&c.resource_type.as_str())),
        "{upstream:?}"
    );
    assert!(payments(&app).is_empty());
    let audit = serde_json::to_string(&app.audit_records()).unwrap();
    assert!(!audit.contains("4111"), "{audit}");
}

#[tokio::test]
async fn a_charge_that_could_not_be_recorded_is_reported_and_recorded_on_retry_without_a_new_charge()
 {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    let account = account_of(&app, "pat-1");
    let before = balance(&app, &account);
    let path = format!("/bills/{account}/payments");
    app.sandbox
        .faults()
        .inject(FailureKind::Status500, 1.0, Some("/PaymentReconciliation"));
    let failed = app
        .api_post(
            &token,
            &path,
            &pay_body(20.0, "USD", "tok_ok"),
            Some("pay-x"),
        )
        .await;
    assert_eq!(failed.status, 502, "{:?}", failed.body);
    // The EHR failed the record and then the search for it too: whether it was recorded
    // is not known (never "not recorded" on a guess); either way the card was charged,
    // and the retry below records it without a new charge.
    assert_eq!(failed.code(), "payment_record_unknown");
    assert_eq!(failed.body["details"]["charged"], true);
    assert_eq!(
        failed.body["details"]["charge_reference"],
        "ch_sandbox_000001"
    );
    assert!(payments(&app).is_empty());
    assert_eq!(balance(&app, &account), before);

    app.sandbox.faults().clear();
    let retried = app
        .api_post(
            &token,
            &path,
            &pay_body(20.0, "USD", "tok_ok"),
            Some("pay-x"),
        )
        .await;
    assert_eq!(retried.status, 201, "{:?}", retried.body);
    assert_eq!(retried.body["charge_reference"], "ch_sandbox_000001");
    assert_eq!(payments(&app).len(), 1);
    assert!((before - 20.0 - balance(&app, &account)).abs() < 0.005);
    // Still one charge: the next payment is the processor's second.
    let next = app
        .api_post(
            &token,
            &path,
            &pay_body(1.0, "USD", "tok_ok"),
            Some("pay-y"),
        )
        .await;
    assert_eq!(next.body["charge_reference"], "ch_sandbox_000002");
}

#[tokio::test]
async fn epic_takes_no_payments_online() {
    let app = TestApp::spawn_for_ehr(EhrProfile::Epic).await;
    let token = app.portal_token("pat-1");
    let account = account_of(&app, "pat-1");
    let answer = app
        .api_post(
            &token,
            &format!("/bills/{account}/payments"),
            &pay_body(1.0, "USD", "tok_ok"),
            None,
        )
        .await;
    assert_eq!(answer.status, 501, "{:?}", answer.body);
    assert_eq!(answer.code(), "not_supported_by_ehr");
    let bills = app.api_get(&token, "/bills").await;
    assert_eq!(bills.status, 200);
    assert_eq!(bills.body["accounts"][0]["payable"], false);
}

#[tokio::test]
async fn accounts_and_invoices_are_searched_at_the_same_time() {
    let app = TestApp::spawn().await;
    let token = app.portal_token("pat-1");
    assert_eq!(app.api_get(&token, "/me").await.status, 200);
    let latency = std::time::Duration::from_millis(200);
    let answer = app.api_get_timed(&token, "/bills", latency).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let faults = app.sandbox.faults();
    assert_eq!(faults.requests_for("GET", "Account"), 1);
    assert_eq!(faults.requests_for("GET", "Invoice"), 1);
    assert_eq!(faults.requests(), 2, "{:?}", faults.stats());
    assert_eq!(faults.max_in_flight(), 2, "{:?}", faults.stats());
    assert!(
        !answer.body["accounts"][0]["invoices"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
