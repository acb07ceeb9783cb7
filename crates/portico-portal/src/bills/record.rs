//! The payment record in the EHR, per the profile's `bills.payment` strategy:
//!
//! - `payment-reconciliation`: a `PaymentReconciliation` (status `active`, `created`
//!   now, `paymentDate`, `paymentAmount`, `paymentIdentifier` = the processor's charge
//!   reference under [`PROCESSOR_SYSTEM`], `outcome` `complete`), with one `detail` of
//!   type `payment-type|payment` whose `request` references the **Account**
//!   (Reference(Any) in R4) and whose `amount` is the payment. R4 PaymentReconciliation
//!   has no element that can name a Patient, so the patient is carried in the extension
//!   [`PATIENT_EXTENSION`] (`valueReference`); the gateway's access policy puts
//!   PaymentReconciliation into the patient compartment through that extension
//!   ([`payment_link`]) so that the record can be read back — patients still cannot
//!   write one (there is no patient write rule for the type);
//! - `financial-transaction` (Cerner): a `Basic` with code `FinancialTransaction` and
//!   Cerner's `financial-transaction-*` extensions (type `payment`, method v2-0570
//!   `CCCA`, amount, card brand and last four digits when the processor tells them,
//!   allocation to the Account), `subject` the patient ([`financial_transaction_body`]).

use chrono::{DateTime, Utc};
use portico_access::ExtraLink;
use serde_json::{Value, json};

use super::views::{PaymentRequest, PaymentView};
use crate::payments::Charge;
use crate::view::{Money, array, instant, str_at};

/// The identifier system of the processor's charge references.
pub const PROCESSOR_SYSTEM: &str = "https://portico.dev/payment-processor";

/// The extension carrying the patient on a PaymentReconciliation.
pub const PATIENT_EXTENSION: &str = "https://portico.dev/fhir/StructureDefinition/payment-patient";

/// `http://terminology.hl7.org/CodeSystem/payment-type`.
pub const PAYMENT_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/payment-type";

pub(super) const CERNER_EXT: &str =
    "https://fhir-ehr.cerner.com/r4/StructureDefinition/financial-transaction";

/// The access-policy link that puts a PaymentReconciliation recorded by the portal into
/// its patient's compartment (through [`PATIENT_EXTENSION`]). Read-only: patients have
/// no write rule for the type.
pub fn payment_link() -> ExtraLink {
    ExtraLink {
        resource_type: "PaymentReconciliation".into(),
        param: "patient".into(),
        // Only the portal's own extension: another extension that happens to reference
        // a patient (a payer's remittance detail) must not put the record in their
        // compartment.
        paths: vec![format!("extension[url={PATIENT_EXTENSION}].valueReference")],
    }
}

pub(super) fn money_json(minor: i64, currency: &str) -> Value {
    json!({ "value": minor as f64 / 100.0, "currency": currency })
}

/// The `PaymentReconciliation` recording a charge against an account.
pub fn payment_reconciliation_body(
    patient: &str,
    account_id: &str,
    charge: &Charge,
    now: DateTime<Utc>,
) -> Value {
    let amount = money_json(charge.amount_minor, &charge.currency);
    json!({
        "resourceType": "PaymentReconciliation",
        "extension": [{
            "url": PATIENT_EXTENSION,
            "valueReference": { "reference": format!("Patient/{patient}") }
        }],
        "status": "active",
        "created": instant(now),
        "outcome": "complete",
        "disposition": "Patient portal card payment",
        "paymentDate": now.format("%Y-%m-%d").to_string(),
        "paymentAmount": amount,
        "paymentIdentifier": { "system": PROCESSOR_SYSTEM, "value": charge.reference },
        "detail": [{
            "type": {
                "coding": [{ "system": PAYMENT_TYPE_SYSTEM, "code": "payment", "display": "Payment" }]
            },
            "request": { "reference": format!("Account/{account_id}") },
            "date": now.format("%Y-%m-%d").to_string(),
            "amount": amount
        }]
    })
}

/// Cerner's `Basic` FinancialTransaction recording a card charge against an account.
pub fn financial_transaction_body(
    patient: &str,
    account_id: &str,
    charge: &Charge,
    now: DateTime<Utc>,
) -> Value {
    let amount = money_json(charge.amount_minor, &charge.currency);
    let mut extensions = vec![
        json!({
            "url": format!("{CERNER_EXT}-type"),
            "valueCodeableConcept": { "coding": [{ "system": PAYMENT_TYPE_SYSTEM, "code": "payment" }] }
        }),
        json!({
            "url": format!("{CERNER_EXT}-method"),
            "valueCodeableConcept": {
                "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0570", "code": "CCCA", "display": "Credit Card" }],
                "text": "Credit Card"
            }
        }),
        json!({ "url": format!("{CERNER_EXT}-amount"), "valueMoney": amount }),
    ];
    if let Some(method) = &charge.method {
        let digits: String = method.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 4 {
            extensions.push(json!({
                "url": format!("{CERNER_EXT}-account-number"),
                "valueString": &digits[digits.len() - 4..]
            }));
        }
        if let Some(brand) = method.split_whitespace().next()
            && brand.chars().all(char::is_alphabetic)
        {
            extensions.push(json!({
                "url": format!("{CERNER_EXT}-card-brand"),
                "valueString": brand.to_lowercase()
            }));
        }
    }
    extensions.push(json!({
        "url": format!("{CERNER_EXT}-allocation"),
        "extension": [
            { "url": "target", "valueReference": { "reference": format!("Account/{account_id}") } },
            { "url": "amount", "valueMoney": amount }
        ]
    }));
    json!({
        "resourceType": "Basic",
        "code": { "coding": [{ "code": "FinancialTransaction" }] },
        "subject": { "reference": format!("Patient/{patient}") },
        "created": now.format("%Y-%m-%d").to_string(),
        "identifier": [{ "system": PROCESSOR_SYSTEM, "value": charge.reference, "use": "usual" }],
        "extension": extensions
    })
}

/// The view of a payment record found again by its identifier.
pub(super) fn recorded_view(
    record: &Value,
    record_type: &str,
    account_id: &str,
    request: &PaymentRequest,
    now: DateTime<Utc>,
) -> PaymentView {
    let charge_reference = record
        .pointer("/paymentIdentifier/value")
        .and_then(Value::as_str)
        .or_else(|| {
            array(record, "identifier")
                .find(|i| str_at(i, "system") == Some(PROCESSOR_SYSTEM))
                .and_then(|i| str_at(i, "value"))
        })
        .unwrap_or_default()
        .to_owned();
    PaymentView {
        id: str_at(record, "id").unwrap_or_default().to_owned(),
        record_type: record_type.to_owned(),
        account_id: account_id.to_owned(),
        amount: Money {
            value: request.amount.value,
            currency: request.amount.currency.clone(),
        },
        charge_reference,
        method: None,
        created: str_at(record, "created").map_or_else(|| instant(now), str::to_owned),
    }
}
