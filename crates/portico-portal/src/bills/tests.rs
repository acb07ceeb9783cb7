//! Unit tests of the bill views, the payment checks and the payment records, and an
//! isolation test with a fake EHR.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

use super::record::CERNER_EXT;
use super::views::{balance_of, line_amounts};
use super::*;
use crate::fixture;
use crate::payments::{Charge, looks_like_card_number};
use crate::view::Money;

/// An EHR whose only invoice of pat-1's has a line pointing at pat-2's ChargeItem.
#[derive(Debug)]
struct CrossedChargeItem;

#[async_trait::async_trait]
impl portico_upstream::FhirUpstream for CrossedChargeItem {
    async fn execute(
        &self,
        request: portico_upstream::FhirRequest,
    ) -> Result<portico_upstream::FhirResponse, portico_upstream::UpstreamError> {
        let body = fixture(match request.resource_type() {
            Some("Account") => "ehr/searchset-account.json",
            Some("Invoice") => "ehr/searchset-invoice-line-to-another-patients-charge.json",
            _ => "ehr/charge-item-pat-2.json",
        });
        Ok(portico_upstream::FhirResponse::new(200, body.to_string()))
    }
}

#[tokio::test]
async fn a_line_pointing_at_another_patients_charge_item_is_not_described_by_it() {
    let portal = crate::context::Portal::new(
        std::sync::Arc::new(CrossedChargeItem),
        portico_access::Policy::new("http://ehr.example/fhir"),
        crate::profile::EhrProfile::built_in("generic-r4").unwrap(),
        std::sync::Arc::new(portico_access::audit::MemoryAuditSink::default()),
        std::sync::Arc::new(crate::payments::NoProcessor),
    );
    let principal = std::sync::Arc::new(portico_access::Principal {
        subject: "Patient/pat-1".to_owned(),
        client_id: Some("portal".to_owned()),
        patients: vec!["pat-1".to_owned()],
        fhir_user: None,
        scopes: portico_access::ScopeSet::parse("patient/*.rs"),
        expires_at: None,
        issuer: None,
        proxies: Vec::new(),
    });
    let caller = crate::context::Caller::new(principal, None).unwrap();
    let bills = list(portal.ctx(&caller)).await.unwrap();
    let lines = &bills.accounts[0].invoices[0].lines;
    assert_eq!(lines.len(), 1, "the line is listed");
    let shown = serde_json::to_string(&bills).unwrap();
    assert!(!shown.contains("pat-2's charge"), "{shown}");
}

#[test]
fn the_balance_due_sums_the_profiles_currency_in_minor_units() {
    let usd = |value: f64| Money {
        value,
        currency: "USD".to_owned(),
    };
    let amounts = [
        usd(0.1),
        usd(0.2),
        Money {
            value: 99.0,
            currency: "EUR".to_owned(),
        },
        usd(125.05),
    ];
    assert_eq!(sum_in(&amounts, "USD"), usd(125.35));
    assert_eq!(sum_in(&[], "USD"), usd(0.0));
}

#[test]
fn only_portals_own_extension_puts_a_payment_record_in_a_compartment() {
    let policy = portico_access::Policy::new("http://ehr.example/fhir").with_link(payment_link());
    let principal = portico_access::Principal {
        subject: "pat-1".to_owned(),
        client_id: None,
        patients: vec!["pat-1".to_owned()],
        fhir_user: None,
        scopes: portico_access::ScopeSet::parse("patient/*.rs"),
        expires_at: None,
        issuer: None,
        proxies: Vec::new(),
    };
    let record = |url: &str| {
        json!({"resourceType": "PaymentReconciliation", "id": "p1",
            "extension": [{"url": url, "valueReference": {"reference": "Patient/pat-1"}}]})
    };
    assert!(
        policy
            .check_read(&principal, &record(PATIENT_EXTENSION))
            .is_ok()
    );
    // A payer's remittance that happens to reference the patient in another
    // extension is not theirs to read.
    assert!(
        policy
            .check_read(&principal, &record("http://payer.example/claim-patient"))
            .is_err()
    );
}

fn charge() -> Charge {
    Charge {
        reference: "ch_1".to_owned(),
        amount_minor: 1250,
        currency: "USD".to_owned(),
        method: Some("Visa •••• 4242".to_owned()),
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 7, 1, 10, 0, 0).unwrap()
}

#[test]
fn payments_are_checked() {
    let v = |value: f64, cur: &str, token: &str, balance: Option<i64>| {
        validate_payment(value, cur, token, balance, "USD", "USD").map_err(|e| e.code())
    };
    assert_eq!(
        v(12.5, "USD", "tok_ok", Some(5000)),
        Ok(ValidPayment {
            amount_minor: 1250,
            currency: "USD".to_owned()
        })
    );
    assert_eq!(
        v(50.0, "USD", "tok_ok", Some(5000)).unwrap().amount_minor,
        5000
    );
    assert_eq!(
        v(50.01, "USD", "tok_ok", Some(5000)),
        Err("amount_exceeds_balance")
    );
    assert_eq!(
        v(1.0, "USD", "tok_ok", Some(0)),
        Err("amount_exceeds_balance")
    );
    assert_eq!(
        v(1.0, "EUR", "tok_ok", Some(5000)),
        Err("currency_mismatch")
    );
    assert_eq!(v(0.0, "USD", "tok_ok", Some(5000)), Err("invalid_amount"));
    assert_eq!(v(-1.0, "USD", "tok_ok", Some(5000)), Err("invalid_amount"));
    assert_eq!(v(1.001, "USD", "tok_ok", Some(5000)), Err("invalid_amount"));
    assert_eq!(
        v(f64::NAN, "USD", "tok_ok", Some(5000)),
        Err("invalid_amount")
    );
    assert_eq!(v(1.0, "USD", "tok_ok", None), Err("balance_unknown"));
    assert_eq!(
        v(1.0, "USD", "4111 1111 1111 1111", Some(5000)),
        Err("card_number_not_accepted")
    );
    // The card number check comes first, whatever else is wrong.
    assert_eq!(
        v(-5.0, "EUR", "4111111111111111", None),
        Err("card_number_not_accepted")
    );
    assert_eq!(v(1.0, "USD", "", Some(5000)), Err("invalid_payment_token"));
    assert_eq!(
        v(1.0, "USD", "tok ok", Some(5000)),
        Err("invalid_payment_token")
    );
    // The account's currency must match too.
    assert_eq!(
        validate_payment(1.0, "USD", "tok_ok", Some(5000), "EUR", "USD").map_err(|e| e.code()),
        Err("currency_mismatch")
    );
}

#[test]
fn payment_reconciliation_links_account_patient_and_charge() {
    let body = payment_reconciliation_body("pat-1", "acct-1", &charge(), now());
    assert_eq!(body["status"], "active");
    assert_eq!(
        body["paymentAmount"],
        json!({"value": 12.5, "currency": "USD"})
    );
    assert_eq!(body["paymentDate"], "2025-07-01");
    assert_eq!(body["paymentIdentifier"]["value"], "ch_1");
    assert_eq!(body["paymentIdentifier"]["system"], PROCESSOR_SYSTEM);
    assert_eq!(body["detail"][0]["type"]["coding"][0]["code"], "payment");
    assert_eq!(body["detail"][0]["request"]["reference"], "Account/acct-1");
    assert_eq!(
        body["extension"][0]["valueReference"]["reference"],
        "Patient/pat-1"
    );
    // The policy link finds the patient where the body puts it.
    let link = payment_link();
    let refs = portico_fhir::json::references_at(&body, &link.paths[0]);
    assert_eq!(refs, vec!["Patient/pat-1"]);
}

#[test]
fn financial_transaction_follows_cerners_shape() {
    let body = financial_transaction_body("pat-1", "acct-1", &charge(), now());
    assert_eq!(body["resourceType"], "Basic");
    assert_eq!(body["code"]["coding"][0]["code"], "FinancialTransaction");
    assert_eq!(body["subject"]["reference"], "Patient/pat-1");
    let ext = |suffix: &str| {
        body["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == format!("{CERNER_EXT}-{suffix}"))
            .cloned()
            .unwrap_or_else(|| panic!("{suffix}"))
    };
    assert_eq!(
        ext("type")["valueCodeableConcept"]["coding"][0]["code"],
        "payment"
    );
    assert_eq!(
        ext("method")["valueCodeableConcept"]["coding"][0]["code"],
        "CCCA"
    );
    assert_eq!(ext("amount")["valueMoney"]["value"], 12.5);
    assert_eq!(ext("account-number")["valueString"], "4242");
    assert_eq!(ext("card-brand")["valueString"], "visa");
    let allocation = ext("allocation");
    assert_eq!(
        allocation["extension"][0]["valueReference"]["reference"],
        "Account/acct-1"
    );
    assert_eq!(allocation["extension"][1]["valueMoney"]["value"], 12.5);
    // No card number anywhere: only the last four digits.
    assert!(!body.to_string().contains("4242 4242"));
}

#[test]
fn line_items_sum_components_in_cents() {
    let line = json!({"priceComponent": [
        {"type": "base", "amount": {"value": 100.10, "currency": "USD"}},
        {"type": "discount", "amount": {"value": 0.20, "currency": "USD"}},
        {"type": "tax", "amount": {"value": 8.00, "currency": "USD"}},
        {"type": "informational", "amount": {"value": 999, "currency": "USD"}}
    ]});
    let (net, gross) = line_amounts(&line);
    assert_eq!(net.unwrap().value, 99.9);
    assert_eq!(gross.unwrap().value, 107.9);
    assert_eq!(line_amounts(&json!({})).0, None);
    let account =
        json!({"extension": [{"url": "x", "valueMoney": {"value": 10.5, "currency": "USD"}}]});
    assert_eq!(balance_of(&account, "x").unwrap().value, 10.5);
    assert!(balance_of(&account, "y").is_none());
}

fn card_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![8 => "[0-9]", 1 => Just(" ".to_owned()), 1 => Just("-".to_owned())],
        13..30,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn validation_never_panics_never_exceeds_the_balance_never_takes_a_card(
        value in prop_oneof![any::<f64>(), -1e6f64..1e6, (0i64..1_000_000).prop_map(|c| c as f64 / 100.0)],
        currency in prop_oneof![Just("USD".to_owned()), Just("EUR".to_owned()), "[A-Za-z]{0,4}"],
        token in prop_oneof![card_like(), "tok_[a-z0-9]{0,12}", any::<String>()],
        balance in prop::option::of(-10_000i64..1_000_000),
        account_currency in prop_oneof![Just("USD".to_owned()), Just("EUR".to_owned())],
    ) {
        match validate_payment(value, &currency, &token, balance, &account_currency, "USD") {
            Ok(valid) => {
                prop_assert!(!looks_like_card_number(&token));
                let balance = balance.expect("accepted only with a known balance");
                prop_assert!(valid.amount_minor > 0);
                prop_assert!(valid.amount_minor <= balance);
                prop_assert_eq!(&valid.currency, "USD");
                prop_assert_eq!(account_currency.as_str(), "USD");
            }
            Err(e) => {
                if looks_like_card_number(&token) {
                    prop_assert_eq!(e.code(), "card_number_not_accepted");
                }
            }
        }
    }
}
