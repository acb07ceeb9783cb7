//! The bill views and the payment request, and the FHIR → view mapping (pure). R4
//! Account has no balance element: it is read from the extension named by the
//! profile's `bills.balance_extension` (`valueMoney`). Line items take their
//! description from `chargeItemCodeableConcept` (else the referenced ChargeItem's
//! `code`), net = base + surcharges − deductions − discounts, gross = net + tax, in
//! minor units so that no float error creeps into sums.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::view::{Money, array, concept_text, money, reference_of, str_at, to_minor};

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

pub(super) fn balance_of(account: &Value, extension_url: &str) -> Option<Money> {
    array(account, "extension")
        .find(|e| str_at(e, "url") == Some(extension_url))
        .and_then(|e| e.get("valueMoney"))
        .and_then(money)
}

fn minor(m: &Value) -> Option<(i64, String)> {
    let m = money(m)?;
    Some((to_minor(m.value)?, m.currency))
}

pub(super) fn major(minor: i64, currency: &str) -> Money {
    Money {
        value: minor as f64 / 100.0,
        currency: currency.to_owned(),
    }
}

/// Net and gross of a line item from its price components (R4 `invoice-priceComponentType`).
pub(super) fn line_amounts(line: &Value) -> (Option<Money>, Option<Money>) {
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

pub(super) fn invoice_view(invoice: &Value, charge_items: &[Value]) -> InvoiceView {
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
pub(super) fn invoice_account(invoice: &Value) -> Option<String> {
    let r = invoice.get("account").and_then(reference_of)?;
    let r = portico_fhir::reference::Reference::parse(r).ok()?;
    (r.resource_type == "Account").then_some(r.id)
}
