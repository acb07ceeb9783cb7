//! `/bills`: the patient's accounts, balances and invoices, and card payments.
//!
//! The domain rules are in [`portico_portal::bills`]. A payment body is scanned for
//! anything that looks like a card number ([`portico_portal::card::check_body`])
//! *before* it is parsed, fingerprinted for the idempotency store or passed anywhere:
//! such a request is refused with 400 `card_number_not_accepted` and the number is
//! neither stored nor logged.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portico_portal::bills::{self, Bills, PaymentRequest, PaymentView};
use portico_portal::card;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Idempotent, PatientCaller, ProblemResult, ctx, json_body};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_bills))
        .routes(routes!(pay_bill))
}

/// The patient's billing accounts with their balance and invoices.
#[utoipa::path(
    get,
    path = "/bills",
    tag = "bills",
    responses(
        (status = 200, description = "The accounts and invoices", body = Bills),
        super::ReadErrors,
    )
)]
async fn list_bills(
    State(state): State<AppState>,
    caller: PatientCaller,
) -> ProblemResult<Json<Bills>> {
    Ok(Json(bills::list(ctx(&state, &caller)).await?))
}

/// Pays (part of) an account's balance with a payment token from the processor's card
/// form. The id is the **Account** id from `GET /bills`. Send an `Idempotency-Key`: a
/// retry with the same key charges the card at most once.
#[utoipa::path(
    post,
    path = "/bills/{id}/payments",
    tag = "bills",
    request_body = PaymentRequest,
    params(
        ("id" = String, Path, description = "The Account id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the payment happen at most once"),
    ),
    responses(
        (status = 201, description = "The payment was charged and recorded", body = PaymentView),
        super::WriteErrors,
        (status = 400, description = "`card_number_not_accepted` (a card number was sent), `invalid_amount` (not positive whole cents), `invalid_payment_token`, `invalid_body`", body = super::Problem),
        (status = 404, description = "No such account of the patient's", body = super::Problem),
        (status = 422, description = "`amount_exceeds_balance`, `currency_mismatch`, `payment_declined`, `payment_method_invalid`, `account_not_payable`, `balance_unknown`, `idempotency_key_reused`", body = super::Problem),
        (status = 501, description = "The EHR takes no payments online (`not_supported_by_ehr`)", body = super::Problem),
        (status = 502, description = "`payment_not_recorded`: the card WAS charged (details carry the charge reference) but the EHR could not record it yet; `payment_record_unknown`: the card WAS charged and whether the EHR recorded it is not known. Either way, retry with the same key to record it (or find the record) without a new charge. Or the EHR failed before any charge.", body = super::Problem),
        (status = 503, description = "`payment_unavailable`: the payment processor is unavailable, nothing was charged; or the EHR is unavailable; `idempotency_unavailable` or `state_unavailable`: the gateway's shared state cannot be reached, nothing was attempted", body = super::Problem),
    )
)]
async fn pay_bill(
    write: Idempotent,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ProblemResult<Response> {
    // Before parsing errors can echo it and before the idempotency store hashes it.
    if let Ok(raw) = serde_json::from_slice::<Value>(&body) {
        card::check_body(&raw)?;
    }
    let (request, value) = json_body::<PaymentRequest>(&headers, &body)?;
    // The same key and body for another account is another request.
    // (serde also accepts a struct as a JSON array: never index into the body.)
    let value = serde_json::json!({"account": &id, "body": value});
    write
        .run("pay", &value, StatusCode::CREATED, async |ctx, idem| {
            bills::pay(ctx, &id, &request, idem).await
        })
        .await
}
