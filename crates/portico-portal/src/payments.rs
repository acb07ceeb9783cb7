//! The payment processor port. Card numbers never enter Portico: the portal frontend
//! tokenizes the card with the processor's own widget and sends Portico only the
//! processor's token; Portico asks the processor to charge it and records the charge's
//! reference in the EHR.

use std::fmt;

/// Card-number detection lives in [`crate::card`]; re-exported for the payment code.
pub use crate::card::looks_like_card_number;

/// A charge to make.
#[derive(Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Makes the charge idempotent at the processor: the same key charges once.
    pub idempotency_key: String,
    /// In minor units (cents).
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// The processor's payment-method token (never a card number).
    pub payment_token: String,
    /// What the charge is for (an account or invoice id; no patient data).
    pub description: String,
}

impl fmt::Debug for ChargeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChargeRequest")
            .field("amount_minor", &self.amount_minor)
            .field("currency", &self.currency)
            .finish_non_exhaustive()
    }
}

/// A successful charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The processor's reference for the charge (used as the payment record's
    /// identifier in the EHR).
    pub reference: String,
    pub amount_minor: i64,
    pub currency: String,
    /// Card brand and last four digits, when the processor tells them (for a receipt).
    pub method: Option<String>,
}

/// Why a charge did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The processor declined the payment method (the patient may try another).
    #[error("the payment was declined: {0}")]
    Declined(String),
    /// The token or amount is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The processor is unreachable or failed; nothing was charged.
    #[error("the payment processor is unavailable")]
    Unavailable,
}

/// A payment processor (Stripe, Adyen, a hospital's own): charges a tokenized payment
/// method, idempotently per key.
#[async_trait::async_trait]
pub trait PaymentProcessor: Send + Sync + fmt::Debug {
    async fn charge(&self, request: &ChargeRequest) -> Result<Charge, PaymentError>;
}

/// A processor that refuses every payment: the default until a real one is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProcessor;

#[async_trait::async_trait]
impl PaymentProcessor for NoProcessor {
    async fn charge(&self, _request: &ChargeRequest) -> Result<Charge, PaymentError> {
        Err(PaymentError::Unavailable)
    }
}

/// A fake processor for the demo and tests. Tokens: `tok_ok` (and any other `tok_…`)
/// succeeds as a Visa ending 4242, `tok_declined` is declined, `tok_unavailable`
/// fails as if the processor were down. The same idempotency key returns the same
/// charge, as real processors do. Anything that looks like a card number is refused.
#[derive(Debug, Default)]
pub struct SandboxProcessor {
    charges: parking_lot::Mutex<std::collections::HashMap<String, Charge>>,
}

impl SandboxProcessor {
    /// How many distinct charges were made (tests).
    pub fn charges(&self) -> usize {
        self.charges.lock().len()
    }
}

#[async_trait::async_trait]
impl PaymentProcessor for SandboxProcessor {
    async fn charge(&self, request: &ChargeRequest) -> Result<Charge, PaymentError> {
        if looks_like_card_number(&request.payment_token) {
            return Err(PaymentError::Invalid(
                "card numbers must not be sent; use the payment form's token".to_owned(),
            ));
        }
        if !request.payment_token.starts_with("tok_") {
            return Err(PaymentError::Invalid("unknown payment token".to_owned()));
        }
        if request.amount_minor <= 0 {
            return Err(PaymentError::Invalid(
                "the amount must be positive".to_owned(),
            ));
        }
        match request.payment_token.as_str() {
            "tok_declined" => return Err(PaymentError::Declined("card declined".to_owned())),
            "tok_unavailable" => return Err(PaymentError::Unavailable),
            _ => {}
        }
        let mut charges = self.charges.lock();
        if let Some(existing) = charges.get(&request.idempotency_key) {
            return Ok(existing.clone());
        }
        let n = charges.len() + 1;
        let charge = Charge {
            reference: format!("ch_sandbox_{n:06}"),
            amount_minor: request.amount_minor,
            currency: request.currency.clone(),
            method: Some("Visa •••• 4242".to_owned()),
        };
        charges.insert(request.idempotency_key.clone(), charge.clone());
        Ok(charge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: &str, key: &str) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: key.to_owned(),
            amount_minor: 1250,
            currency: "USD".to_owned(),
            payment_token: token.to_owned(),
            description: "Account/a1".to_owned(),
        }
    }

    #[tokio::test]
    async fn sandbox_charges_once_per_key_and_refuses_card_numbers() {
        let p = SandboxProcessor::default();
        let a = p.charge(&request("tok_ok", "k1")).await.unwrap();
        let b = p.charge(&request("tok_ok", "k1")).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(p.charges(), 1);
        assert!(matches!(
            p.charge(&request("tok_declined", "k2")).await,
            Err(PaymentError::Declined(_))
        ));
        assert!(matches!(
            p.charge(&request("4242 4242 4242 4242", "k3")).await,
            Err(PaymentError::Invalid(_))
        ));
        assert_eq!(p.charges(), 1);
    }
}
