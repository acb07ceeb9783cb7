//! Paying (`POST /bills/{account id}/payments`).
//!
//! The checks ([`validate_payment`], pure and fuzzed): the token is not a card number
//! (400 `card_number_not_accepted`: card numbers never enter Portico, the frontend
//! tokenizes the card with the processor's widget), the amount is positive whole cents,
//! its currency is the account's and the profile's (422 `currency_mismatch`), and it is
//! at most the balance (422 `amount_exceeds_balance`). Payments on one account are
//! serialized in this process ([`crate::context::Portal::lock`]).
//!
//! Then the processor charges the token with an idempotency key derived from the
//! request's [`Idem`] (so a retry with the same `Idempotency-Key` charges once), and the
//! payment is recorded in the EHR with the same exactly-once create
//! ([`Ctx::create_record`], identifier from `idem.step("record")`; the record per
//! strategy: `record.rs`); strategy `unsupported` is 501 `not_supported_by_ehr` before
//! anything is charged.
//!
//! A declined card is 422 `payment_declined`; an unavailable processor is
//! [`PayError::ProcessorUnavailable`] (the HTTP layer answers 503 `payment_unavailable`;
//! nothing was charged). When the charge succeeded but the record could not be written,
//! the answer is [`PortalError::Partial`] `payment_not_recorded` with the charge
//! reference: the card **was** charged, and a retry with the same key records it without
//! charging again. The payment token is never logged or stored.

use serde_json::json;

use super::record::{
    financial_transaction_body, money_json, payment_reconciliation_body, recorded_view,
};
use super::views::{PaymentRequest, PaymentView, balance_of, major};
use crate::context::Ctx;
use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::input::is_visible_ascii;
use crate::payments::{ChargeRequest, PaymentError, looks_like_card_number};
use crate::profile::PaymentStrategy;
use crate::view::{instant, str_at, to_minor};

/// The longest payment token accepted.
pub const MAX_TOKEN_LEN: usize = 255;

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
    let _guard = ctx.portal.lock(&format!("pay:{account_id}")).await?;
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
        // The EHR may have recorded it: say so, and that a retry with the key finds out.
        Err(PortalError::OutcomeUnknown { .. }) => {
            tracing::error!(
                record_type,
                "a charge succeeded and whether it was recorded in the EHR is unknown"
            );
            return Err(PortalError::Partial {
                code: "payment_record_unknown",
                message: "your card was charged; whether the payment was recorded in your \
                          account is not yet known; retry with the same Idempotency-Key to \
                          find out (you will not be charged again)"
                    .to_owned(),
                state: json!({
                    "charged": true,
                    "recorded": "unknown",
                    "charge_reference": charge.reference,
                    "amount": money_json(charge.amount_minor, &charge.currency),
                    "account_id": account_id,
                }),
            }
            .into());
        }
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
