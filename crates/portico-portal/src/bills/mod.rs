//! Bills: the patient's accounts with their balance and invoices, and card payments.
//!
//! A payment is made against an **Account** (the statement a portal shows with its
//! balance), never an Invoice; the processor charges a token (card numbers never enter
//! Portico) and the payment is recorded in the EHR as the profile's `bills.payment`
//! strategy says.
//!
//! Where each concern lives: `views` holds the view and request types and the FHIR →
//! view mapping (balances, invoices, line items in minor units); `accounts` reads the
//! statements (`GET /bills`, and the balance due for the dashboard); `pay` checks and
//! makes a payment (`POST /bills/{account id}/payments`); `record` builds the payment
//! record per strategy and the access-policy link that lets the patient read it back.
//! Unit tests are in `tests`.

mod accounts;
mod pay;
mod record;
#[cfg(test)]
mod tests;
mod views;

pub use accounts::{BalanceDue, balance_due, list, sum_in};
pub use pay::{MAX_TOKEN_LEN, PayError, ValidPayment, check_token, pay, validate_payment};
pub use record::{
    PATIENT_EXTENSION, PAYMENT_TYPE_SYSTEM, PROCESSOR_SYSTEM, financial_transaction_body,
    payment_link, payment_reconciliation_body,
};
pub use views::{
    AccountView, Amount, Bills, InvoiceView, LineItem, PaymentRequest, PaymentView, Period,
};
