//! Card numbers never enter Portico.
//!
//! Payments take a token from the processor's own card form. Anything shaped like a
//! primary account number is refused before it is parsed into a request, fingerprinted
//! for the idempotency store, logged or forwarded: [`check_body`] on a whole request
//! body at the HTTP edge, [`looks_like_card_number`] on a single value (the payment
//! token, the sandbox processor's input).

use serde_json::Value;

use crate::error::{PortalError, PortalResult};

/// Whether a string could be a primary account number (13–19 digits, spaces or dashes
/// allowed): such a value must never be accepted, stored or forwarded.
pub fn looks_like_card_number(s: &str) -> bool {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    (13..=19).contains(&digits)
        && s.chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
}

/// Whether any string or number in a JSON value, or any object key, looks like a card
/// number.
pub fn contains_card_number(value: &Value) -> bool {
    match value {
        Value::String(s) => looks_like_card_number(s),
        Value::Number(n) => looks_like_card_number(&n.to_string()),
        Value::Array(items) => items.iter().any(contains_card_number),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| looks_like_card_number(k) || contains_card_number(v)),
        _ => false,
    }
}

/// Refuses a request body that carries anything shaped like a card number, anywhere.
pub fn check_body(value: &Value) -> PortalResult<()> {
    if contains_card_number(value) {
        return Err(refused());
    }
    Ok(())
}

/// The refusal of a card number (`card_number_not_accepted`). Its message names no
/// part of the number.
pub fn refused() -> PortalError {
    PortalError::Invalid {
        code: "card_number_not_accepted",
        message: "card numbers are not accepted; pay with the payment form, which sends a \
                  token"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn card_numbers_are_digits_with_spaces_or_dashes() {
        assert!(looks_like_card_number("4111111111111111"));
        assert!(looks_like_card_number("4111-1111-1111-1111"));
        assert!(looks_like_card_number("4111 1111 1111 1111"));
        assert!(!looks_like_card_number("tok_4111111111111111"));
        // 12 digits is too short, 20 too long.
        assert!(!looks_like_card_number("411111111111"));
        assert!(!looks_like_card_number("41111111111111111111"));
    }

    #[test]
    fn card_numbers_are_found_anywhere_in_a_body() {
        let found = |v: Value| contains_card_number(&v);
        assert!(found(json!({"payment_token": "4111 1111 1111 1111"})));
        assert!(found(json!({"payment_token": 4111111111111111u64})));
        assert!(found(json!({"x": [{"y": "4111-1111-1111-1111"}]})));
        assert!(found(json!({"4111111111111111": true})));
        assert!(!found(
            json!({"payment_token": "tok_ok", "amount": {"value": 12.5, "currency": "USD"}})
        ));
    }

    #[test]
    fn a_body_with_a_card_number_is_refused_without_echoing_it() {
        assert!(check_body(&json!({"payment_token": "tok_ok"})).is_ok());
        let refused = check_body(&json!({"payment_token": "4111 1111 1111 1111"})).unwrap_err();
        assert_eq!(refused.code(), "card_number_not_accepted");
        assert!(!refused.to_string().contains("4111"));
    }
}
