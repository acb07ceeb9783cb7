//! Bills: the patient's accounts with their balance and invoices, and card payments.
//!
//! **Reading** (`GET /bills`): `Account?subject=Patient/x` and `Invoice?subject=Patient/x`
//! (both narrowed and verified by the [`Ctx`]). R4 Account has no balance element: it is
//! read from the extension named by the profile's `bills.balance_extension`
//! (`valueMoney`). Invoices are grouped under the Account they reference; line items
//! take their description from `chargeItemCodeableConcept` (else the referenced
//! ChargeItem's `code`), net = base + surcharges − deductions − discounts, gross = net +
//! tax, in minor units so that no float error creeps into sums.
//!
//! **Paying** (`POST /bills/{account id}/payments`): a payment is made against an
//! **Account** (the statement a portal shows with its balance), never an Invoice. The
//! checks ([`validate_payment`], pure and fuzzed): the token is not a card number (400
//! `card_number_not_accepted`: card numbers never enter Portico, the frontend tokenizes
//! the card with the processor's widget), the amount is positive whole cents, its
//! currency is the account's and the profile's (422 `currency_mismatch`), and it is at
//! most the balance (422 `amount_exceeds_balance`). Payments on one account are
//! serialized in this process ([`crate::context::Portal::lock`]).
//!
//! Then the processor charges the token with an idempotency key derived from the
//! request's [`Idem`] (so a retry with the same `Idempotency-Key` charges once), and the
//! payment is recorded in the EHR with the same exactly-once create
//! ([`Ctx::create_record`], identifier from `idem.step("record")`):
//!
//! - strategy `payment-reconciliation`: a `PaymentReconciliation` (status `active`,
//!   `created` now, `paymentDate`, `paymentAmount`, `paymentIdentifier` = the
//!   processor's charge reference under [`PROCESSOR_SYSTEM`], `outcome` `complete`), with
//!   one `detail` of type `payment-type|payment` whose `request` references the
//!   **Account** (Reference(Any) in R4) and whose `amount` is the payment. R4
//!   PaymentReconciliation has no element that can name a Patient, so the patient is
//!   carried in the extension [`PATIENT_EXTENSION`] (`valueReference`); the gateway's
//!   access policy puts PaymentReconciliation into the patient compartment through that
//!   extension ([`payment_link`]) so that the record can be read back — patients still
//!   cannot write one (there is no patient write rule for the type);
//! - strategy `financial-transaction` (Cerner): a `Basic` with code
//!   `FinancialTransaction` and Cerner's `financial-transaction-*` extensions (type
//!   `payment`, method v2-0570 `CCCA`, amount, card brand and last four digits when the
//!   processor tells them, allocation to the Account), `subject` the patient
//!   ([`financial_transaction_body`]);
//! - strategy `unsupported`: 501 `not_supported_by_ehr` before anything is charged.
//!
//! A declined card is 422 `payment_declined`; an unavailable processor is
//! [`PayError::ProcessorUnavailable`] (the HTTP layer answers 503 `payment_unavailable`;
//! nothing was charged). When the charge succeeded but the record could not be written,
//! the answer is [`PortalError::Partial`] `payment_not_recorded` with the charge
//! reference: the card **was** charged, and a retry with the same key records it without
//! charging again. The payment token is never logged or stored.

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use portico_access::ExtraLink;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::context::Ctx;
use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::input::is_visible_ascii;
use crate::payments::{Charge, ChargeRequest, PaymentError, looks_like_card_number};
use crate::profile::PaymentStrategy;
use crate::view::{Money, array, concept_text, instant, money, reference_of, str_at, to_minor};

/// The identifier system of the processor's charge references.
pub const PROCESSOR_SYSTEM: &str = "https://portico.dev/payment-processor";
/// The extension carrying the patient on a PaymentReconciliation.
pub const PATIENT_EXTENSION: &str = "https://portico.dev/fhir/StructureDefinition/payment-patient";
/// `http://terminology.hl7.org/CodeSystem/payment-type`.
pub const PAYMENT_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/payment-type";
const CERNER_EXT: &str = "https://fhir-ehr.cerner.com/r4/StructureDefinition/financial-transaction";
/// The longest payment token accepted.
pub const MAX_TOKEN_LEN: usize = 255;
/// The most accounts and invoices listed.
const MAX_ACCOUNTS: usize = 50;
const MAX_INVOICES: usize = 200;
/// The most ChargeItems read to describe line items.
const MAX_CHARGE_ITEM_READS: usize = 50;
/// How many of those reads are in flight at once.
const CHARGE_ITEM_READS_AT_ONCE: usize = 8;

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

// ---------------------------------------------------------------------------------
// Views

/// A period of service.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Period {
    pub start: Option<String>,
    pub end: Option<String>,
}

/// One line of an invoice.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LineItem {
    pub sequence: Option<u64>,
    pub description: Option<String>,
    pub net: Option<Money>,
    pub gross: Option<Money>,
}

/// An invoice.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvoiceView {
    pub id: String,
    /// draft, issued, balanced, cancelled, entered-in-error.
    pub status: Option<String>,
    pub date: Option<String>,
    pub total_net: Option<Money>,
    pub total_gross: Option<Money>,
    pub payment_terms: Option<String>,
    pub lines: Vec<LineItem>,
}

/// A billing account (a statement) with its balance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountView {
    /// Pay with `POST /bills/{id}/payments`.
    pub id: String,
    pub name: Option<String>,
    /// active, inactive, entered-in-error, on-hold, unknown.
    pub status: Option<String>,
    /// What is owed (from the EHR's balance extension); absent when the EHR does not say.
    pub balance: Option<Money>,
    pub service_period: Option<Period>,
    /// Whether a payment can be made now (active, a positive balance, and payments
    /// supported by the EHR).
    pub payable: bool,
    /// Newest first.
    pub invoices: Vec<InvoiceView>,
}

/// The patient's bills.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Bills {
    pub accounts: Vec<AccountView>,
    /// Invoices that reference no account of the patient's.
    pub other_invoices: Vec<InvoiceView>,
    /// The currency payments are taken in.
    pub currency: String,
    pub stale: bool,
}

/// An amount in a payment request.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Amount {
    /// In major units (dollars), whole cents.
    pub value: f64,
    /// ISO 4217.
    pub currency: String,
}

/// `POST /bills/{id}/payments`.
#[derive(Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub amount: Amount,
    /// The processor's token for the payment method (from its card widget). Never a
    /// card number: those are refused with 400 `card_number_not_accepted`.
    pub payment_token: String,
}

impl std::fmt::Debug for PaymentRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentRequest")
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

/// A recorded payment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentView {
    /// The payment record's id in the EHR.
    pub id: String,
    /// `PaymentReconciliation` or `Basic`.
    pub record_type: String,
    pub account_id: String,
    pub amount: Money,
    /// The processor's charge reference (for the receipt).
    pub charge_reference: String,
    /// Card brand and last four digits, when the processor tells them.
    pub method: Option<String>,
    pub created: String,
}

// ---------------------------------------------------------------------------------
// Reading

fn balance_of(account: &Value, extension_url: &str) -> Option<Money> {
    array(account, "extension")
        .find(|e| str_at(e, "url") == Some(extension_url))
        .and_then(|e| e.get("valueMoney"))
        .and_then(money)
}

fn minor(m: &Value) -> Option<(i64, String)> {
    let m = money(m)?;
    Some((to_minor(m.value)?, m.currency))
}

fn major(minor: i64, currency: &str) -> Money {
    Money {
        value: minor as f64 / 100.0,
        currency: currency.to_owned(),
    }
}

/// Net and gross of a line item from its price components (R4 `invoice-priceComponentType`).
fn line_amounts(line: &Value) -> (Option<Money>, Option<Money>) {
    let mut net = 0i64;
    let mut tax = 0i64;
    let mut currency: Option<String> = None;
    let mut any = false;
    for pc in array(line, "priceComponent") {
        let Some((value, cur)) = pc.get("amount").and_then(minor) else {
            continue;
        };
        if currency.as_deref().is_some_and(|c| c != cur) {
            // Mixed currencies: not summed.
            return (None, None);
        }
        currency = Some(cur);
        any = true;
        match str_at(pc, "type") {
            Some("base" | "surcharge") => net += value,
            Some("deduction" | "discount") => net -= value.abs(),
            Some("tax") => tax += value,
            _ => {}
        }
    }
    match (any, currency) {
        (true, Some(c)) => (Some(major(net, &c)), Some(major(net + tax, &c))),
        _ => (None, None),
    }
}

fn invoice_view(invoice: &Value, charge_items: &[Value]) -> InvoiceView {
    let lines = array(invoice, "lineItem")
        .map(|line| {
            let description = line
                .get("chargeItemCodeableConcept")
                .and_then(concept_text)
                .or_else(|| {
                    let r = line.get("chargeItemReference")?;
                    let target = reference_of(r)
                        .and_then(|s| portico_fhir::reference::Reference::parse(s).ok());
                    let from_item = target.and_then(|t| {
                        charge_items
                            .iter()
                            .find(|c| str_at(c, "id") == Some(t.id.as_str()))
                            .and_then(|c| c.get("code"))
                            .and_then(concept_text)
                    });
                    from_item.or_else(|| str_at(r, "display").map(str::to_owned))
                });
            let (net, gross) = line_amounts(line);
            LineItem {
                sequence: line.get("sequence").and_then(Value::as_u64),
                description,
                net,
                gross,
            }
        })
        .collect();
    InvoiceView {
        id: str_at(invoice, "id").unwrap_or_default().to_owned(),
        status: str_at(invoice, "status").map(str::to_owned),
        date: str_at(invoice, "date").map(str::to_owned),
        total_net: invoice.get("totalNet").and_then(money),
        total_gross: invoice.get("totalGross").and_then(money),
        payment_terms: str_at(invoice, "paymentTerms").map(str::to_owned),
        lines,
    }
}

/// The Account an invoice belongs to (its id), if any.
fn invoice_account(invoice: &Value) -> Option<String> {
    let r = invoice.get("account").and_then(reference_of)?;
    let r = portico_fhir::reference::Reference::parse(r).ok()?;
    (r.resource_type == "Account").then_some(r.id)
}

/// What the patient owes, for the dashboard: the sum of the accounts' balances in the
/// profile's currency (one Account search: invoices do not change the balance).
#[derive(Debug, Clone)]
pub struct BalanceDue {
    pub total: Money,
    pub stale: bool,
}

/// The balance due across the patient's accounts (the same accounts as [`list`]).
pub async fn balance_due(ctx: Ctx<'_>) -> PortalResult<BalanceDue> {
    let currency = &ctx.profile().bills.currency;
    let extension = &ctx.profile().bills.balance_extension;
    let me = format!("Patient/{}", ctx.patient());
    let accounts = ctx
        .search_all("Account", &[("subject", me)], MAX_ACCOUNTS)
        .await?;
    let balances: Vec<Money> = accounts
        .matches
        .iter()
        .filter_map(|a| balance_of(a, extension))
        .collect();
    Ok(BalanceDue {
        total: sum_in(&balances, currency),
        stale: accounts.stale,
    })
}

/// The sum of the amounts in `currency` (others are left out), in minor units.
pub fn sum_in(amounts: &[Money], currency: &str) -> Money {
    let total_minor = amounts
        .iter()
        .filter(|m| m.currency == currency)
        .filter_map(|m| to_minor(m.value))
        .fold(0i64, i64::saturating_add);
    major(total_minor, currency)
}

/// `GET /bills`: the Account and Invoice searches at the same time, then the ChargeItems
/// that line items point at (read at the same time, a few at once).
pub async fn list(ctx: Ctx<'_>) -> PortalResult<Bills> {
    let profile = &ctx.profile().bills;
    let me = format!("Patient/{}", ctx.patient());
    let by_subject = [("subject", me)];
    let (accounts, invoices) = tokio::join!(
        ctx.search_all("Account", &by_subject, MAX_ACCOUNTS),
        ctx.search_all("Invoice", &by_subject, MAX_INVOICES),
    );
    let (accounts, invoices) = (accounts?, invoices?);
    let stale = accounts.stale || invoices.stale;
    // Line items that point at ChargeItems: read them (within the patient's
    // compartment) to describe the line.
    let mut wanted: Vec<String> = invoices
        .matches
        .iter()
        .flat_map(|i| array(i, "lineItem"))
        .filter(|l| l.get("chargeItemCodeableConcept").is_none())
        .filter_map(|l| l.get("chargeItemReference").and_then(reference_of))
        .filter_map(|s| portico_fhir::reference::Reference::parse(s).ok())
        .filter(|r| r.resource_type == "ChargeItem")
        .map(|r| r.id)
        .collect();
    wanted.sort();
    wanted.dedup();
    wanted.truncate(MAX_CHARGE_ITEM_READS);
    let charge_items: Vec<Value> = futures::stream::iter(wanted)
        .map(|id| async move { ctx.read("ChargeItem", &id).await })
        .buffered(CHARGE_ITEM_READS_AT_ONCE)
        .filter_map(|read| async move { read.ok().map(|item| item.resource) })
        .collect()
        .await;
    let mut invoice_list: Vec<&Value> = invoices.matches.iter().collect();
    invoice_list.sort_by(|a, b| str_at(b, "date").cmp(&str_at(a, "date")));
    let mut views = Vec::new();
    let account_ids: Vec<&str> = accounts
        .matches
        .iter()
        .filter_map(|a| str_at(a, "id"))
        .collect();
    for account in &accounts.matches {
        let id = str_at(account, "id").unwrap_or_default().to_owned();
        let balance = balance_of(account, &profile.balance_extension);
        let status = str_at(account, "status").map(str::to_owned);
        let payable = profile.payment != PaymentStrategy::Unsupported
            && status.as_deref() == Some("active")
            && balance
                .as_ref()
                .and_then(|b| to_minor(b.value))
                .is_some_and(|b| b > 0);
        views.push(AccountView {
            invoices: invoice_list
                .iter()
                .filter(|i| invoice_account(i).as_deref() == Some(id.as_str()))
                .map(|i| invoice_view(i, &charge_items))
                .collect(),
            name: str_at(account, "name").map(str::to_owned),
            status,
            balance,
            service_period: account.get("servicePeriod").map(|p| Period {
                start: str_at(p, "start").map(str::to_owned),
                end: str_at(p, "end").map(str::to_owned),
            }),
            payable,
            id,
        });
    }
    let other_invoices = invoice_list
        .iter()
        .filter(|i| {
            invoice_account(i)
                .as_deref()
                .is_none_or(|a| !account_ids.contains(&a))
        })
        .map(|i| invoice_view(i, &charge_items))
        .collect();
    Ok(Bills {
        accounts: views,
        other_invoices,
        currency: profile.currency.clone(),
        stale,
    })
}

// ---------------------------------------------------------------------------------
// Paying

/// A payment that passed [`validate_payment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPayment {
    pub amount_minor: i64,
    pub currency: String,
}

/// Whether a payment token is refused as a card number. Checked before anything else,
/// so that a card number is never stored, logged or sent anywhere.
pub fn check_token(token: &str) -> PortalResult<()> {
    if looks_like_card_number(token) {
        return Err(PortalError::Invalid {
            code: "card_number_not_accepted",
            message: "card numbers are not accepted; pay with the payment form, which \
                      sends a token"
                .to_owned(),
        });
    }
    if !is_visible_ascii(token, MAX_TOKEN_LEN) {
        return Err(PortalError::Invalid {
            code: "invalid_payment_token",
            message: "payment_token must be the payment form's token".to_owned(),
        });
    }
    Ok(())
}

/// Checks a payment: the token ([`check_token`]), the amount (positive, whole cents), the
/// currency (the account's and the profile's) and the balance (`balance_minor`, in the
/// account's currency; `None` when the EHR does not say: nothing can be paid).
pub fn validate_payment(
    value: f64,
    currency: &str,
    token: &str,
    balance_minor: Option<i64>,
    account_currency: &str,
    profile_currency: &str,
) -> PortalResult<ValidPayment> {
    check_token(token)?;
    let amount_minor = match to_minor(value) {
        Some(m) if m > 0 && value > 0.0 => m,
        _ => {
            return Err(PortalError::Invalid {
                code: "invalid_amount",
                message: "the amount must be a positive number of whole cents".to_owned(),
            });
        }
    };
    if currency != profile_currency || currency != account_currency {
        return Err(PortalError::Refused {
            code: "currency_mismatch",
            message: format!("this account is paid in {account_currency}"),
            detail: Some(json!({ "currency": account_currency })),
        });
    }
    let Some(balance) = balance_minor else {
        return Err(PortalError::refused(
            "balance_unknown",
            "the balance of this account is not known; it cannot be paid online",
        ));
    };
    if amount_minor > balance {
        return Err(PortalError::Refused {
            code: "amount_exceeds_balance",
            message: "the amount is more than the balance".to_owned(),
            detail: Some(json!({ "balance": major(balance.max(0), account_currency) })),
        });
    }
    Ok(ValidPayment {
        amount_minor,
        currency: currency.to_owned(),
    })
}

/// Why a payment did not (fully) happen.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    #[error(transparent)]
    Portal(#[from] PortalError),
    /// The processor is unreachable or failed; nothing was charged (503
    /// `payment_unavailable`).
    #[error("the payment service is unavailable; nothing was charged, try again later")]
    ProcessorUnavailable,
}

fn money_json(minor: i64, currency: &str) -> Value {
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
fn recorded_view(
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

/// `POST /bills/{account_id}/payments`.
pub async fn pay(
    ctx: Ctx<'_>,
    account_id: &str,
    request: &PaymentRequest,
    idem: &Idem,
) -> Result<PaymentView, PayError> {
    // Before anything else: a card number must go nowhere.
    check_token(&request.payment_token)?;
    let profile = &ctx.profile().bills;
    let record_type = match profile.payment {
        PaymentStrategy::PaymentReconciliation => "PaymentReconciliation",
        PaymentStrategy::FinancialTransaction => "Basic",
        PaymentStrategy::Unsupported => {
            return Err(PortalError::not_supported("this EHR takes no payments online").into());
        }
    };
    let _guard = ctx.portal.lock(&format!("pay:{account_id}")).await;
    let account = ctx.read("Account", account_id).await?.resource;
    if str_at(&account, "status") != Some("active") {
        return Err(PortalError::refused(
            "account_not_payable",
            "this account is not active and cannot be paid",
        )
        .into());
    }
    // A retry of a payment that was charged and recorded (its answer lost): the record
    // exists under this request's identifier. Answer with it before re-validating the
    // amount against a balance that already includes it.
    if let Ok(Some(existing)) = ctx
        .find_by_identifier(record_type, &idem.step("record"))
        .await
    {
        return Ok(recorded_view(
            &existing,
            record_type,
            account_id,
            request,
            ctx.now(),
        ));
    }
    let balance = balance_of(&account, &profile.balance_extension);
    let account_currency = balance
        .as_ref()
        .map_or(profile.currency.as_str(), |b| b.currency.as_str());
    let valid = validate_payment(
        request.amount.value,
        &request.amount.currency,
        &request.payment_token,
        balance.as_ref().and_then(|b| to_minor(b.value)),
        account_currency,
        &profile.currency,
    )?;
    let charge = ctx
        .portal
        .payments()
        .charge(&ChargeRequest {
            idempotency_key: idem.step("charge").value().to_owned(),
            amount_minor: valid.amount_minor,
            currency: valid.currency.clone(),
            payment_token: request.payment_token.clone(),
            description: format!("Account/{account_id}"),
        })
        .await
        .map_err(|e| match e {
            PaymentError::Declined(_) => PayError::Portal(PortalError::refused(
                "payment_declined",
                "the payment was declined; try another card",
            )),
            PaymentError::Invalid(_) => PayError::Portal(PortalError::refused(
                "payment_method_invalid",
                "the payment method was not accepted; enter the card again",
            )),
            PaymentError::Unavailable => PayError::ProcessorUnavailable,
        })?;
    let now = ctx.now();
    let body = match profile.payment {
        PaymentStrategy::FinancialTransaction => {
            financial_transaction_body(ctx.patient(), account_id, &charge, now)
        }
        _ => payment_reconciliation_body(ctx.patient(), account_id, &charge, now),
    };
    let record = match ctx
        .create_record(record_type, body, &idem.step("record"))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, record_type, "a charge succeeded but could not be recorded in the EHR");
            return Err(PortalError::Partial {
                code: "payment_not_recorded",
                message: "your card was charged, but the payment could not be recorded in \
                          your account yet; retry with the same Idempotency-Key to record it \
                          (you will not be charged again)"
                    .to_owned(),
                state: json!({
                    "charged": true,
                    "recorded": false,
                    "charge_reference": charge.reference,
                    "amount": money_json(charge.amount_minor, &charge.currency),
                    "account_id": account_id,
                }),
            }
            .into());
        }
    };
    Ok(PaymentView {
        id: record.id().unwrap_or_default().to_owned(),
        record_type: record_type.to_owned(),
        account_id: account_id.to_owned(),
        amount: major(charge.amount_minor, &charge.currency),
        charge_reference: charge.reference,
        method: charge.method,
        created: instant(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    /// An EHR whose only invoice of pat-1's has a line pointing at pat-2's ChargeItem.
    #[derive(Debug)]
    struct CrossedChargeItem;

    #[async_trait::async_trait]
    impl portico_upstream::FhirUpstream for CrossedChargeItem {
        async fn execute(
            &self,
            request: portico_upstream::FhirRequest,
        ) -> Result<portico_upstream::FhirResponse, portico_upstream::UpstreamError> {
            let searchset = |resource: Value| {
                json!({"resourceType": "Bundle", "type": "searchset",
                    "entry": [{"resource": resource}]})
            };
            let body = match request.resource_type() {
                Some("Account") => searchset(json!({"resourceType": "Account", "id": "acc-1",
                    "status": "active", "subject": [{"reference": "Patient/pat-1"}]})),
                Some("Invoice") => searchset(json!({"resourceType": "Invoice", "id": "inv-1",
                    "status": "issued", "subject": {"reference": "Patient/pat-1"},
                    "account": {"reference": "Account/acc-1"},
                    "lineItem": [{"sequence": 1,
                        "chargeItemReference": {"reference": "ChargeItem/ci-2"},
                        "priceComponent": [{"type": "base",
                            "amount": {"value": 10.0, "currency": "USD"}}]}]})),
                _ => json!({"resourceType": "ChargeItem", "id": "ci-2", "status": "billable",
                    "code": {"text": "pat-2's charge"},
                    "subject": {"reference": "Patient/pat-2"}}),
            };
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
        let policy =
            portico_access::Policy::new("http://ehr.example/fhir").with_link(payment_link());
        let principal = portico_access::Principal {
            subject: "pat-1".to_owned(),
            client_id: None,
            patients: vec!["pat-1".to_owned()],
            fhir_user: None,
            scopes: portico_access::ScopeSet::parse("patient/*.rs"),
            expires_at: None,
            issuer: None,
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
}
