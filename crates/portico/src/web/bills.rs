//! Bills: the accounts with their balances and statement lines, paying an account
//! (with the payment processor's token; the demo's sandbox processor offers its test
//! cards), and the receipt, read back from the EHR's payment record.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use portico_portal::bills::{self, AccountView, Amount, InvoiceView, PaymentRequest};
use portico_portal::card;
use portico_portal::view::{Money, money, str_at};
use serde_json::{Value, json};

use super::forms::{self, Errors, FormPost, hidden, posted_key};
use super::i18n::{Lang, M};
use super::layout::{self, none, row, stale};
use super::see_other;
use super::viewer::Viewer;
use crate::config::PaymentProcessorKind;
use crate::error::ApiError;

fn invoice(l: Lang, inv: &InvoiceView) -> Markup {
    html! {
        div.table-wrap { table.table {
            caption { (l.t(M::Statement)) @if let Some(d) = &inv.date { " · " (l.date(d)) } }
            thead { tr { th scope="col" { (l.t(M::ColDetails)) } th.num scope="col" { (l.t(M::Amount)) } } }
            tbody {
                @for line in &inv.lines {
                    tr {
                        td { (line.description.as_deref().unwrap_or("—")) }
                        td.num { @if let Some(m) = line.net.as_ref().or(line.gross.as_ref()) { (l.money(m)) } }
                    }
                }
            }
            @if let Some(total) = inv.total_gross.as_ref().or(inv.total_net.as_ref()) {
                tfoot { tr { th scope="row" { (l.t(M::Total)) } td.num { (l.money(total)) } } }
            }
        } }
    }
}

fn account(l: Lang, c: &super::viewer::Chrome, a: &AccountView) -> Markup {
    html! {
        section.card aria-labelledby=(format!("acct-{}", a.id)) {
            h2 id=(format!("acct-{}", a.id)) { (a.name.as_deref().unwrap_or(l.t(M::Account))) }
            dl.summary {
                (row(l.t(M::Balance), a.balance.as_ref().map(|b| l.money(b)).as_deref()))
                (row(l.t(M::ColStatus), a.status.as_deref()))
            }
            @for inv in &a.invoices { (invoice(l, inv)) }
            @if a.payable {
                p { a.button href=(c.href(&format!("/bills/{}/pay", a.id))) { (l.t(M::PayThisBill)) span.visually-hidden { ": " (a.name.as_deref().unwrap_or("")) } } }
            }
        }
    }
}

pub async fn list(v: Viewer) -> Response {
    let b = match bills::list(v.ctx()).await {
        Ok(b) => b,
        Err(e) => return v.error(e).into_response(),
    };
    let l = v.lang();
    let c = &v.chrome;
    let content = html! {
        (stale(l, b.stale))
        @if b.accounts.is_empty() && b.other_invoices.is_empty() { (none(l.t(M::NoBills))) }
        @for a in &b.accounts { (account(l, c, a)) }
        @if !b.other_invoices.is_empty() {
            h2 { (l.t(M::OtherStatements)) }
            @for inv in &b.other_invoices { (invoice(l, inv)) }
        }
    };
    layout::ok(c, l.t(M::BillsTitle), content)
}

async fn find(v: &Viewer, id: &str) -> Result<AccountView, Response> {
    let b = bills::list(v.ctx())
        .await
        .map_err(|e| v.error(e).into_response())?;
    b.accounts
        .into_iter()
        .find(|a| a.id == id)
        .ok_or_else(|| v.error(ApiError::not_found()).into_response())
}

pub async fn pay_form(v: Viewer, Path(id): Path<String>) -> Response {
    match find(&v, &id).await {
        Ok(a) => {
            let mut fields = forms::Fields::default();
            if let Some(b) = &a.balance {
                fields = prefilled(b);
            }
            pay_page(
                &v,
                &a,
                &fields,
                &forms::new_key(),
                Errors::default(),
                StatusCode::OK,
            )
        }
        Err(r) => r,
    }
}

fn prefilled(balance: &Money) -> forms::Fields {
    let mut f = forms::Fields::default();
    f.set("amount", &format!("{:.2}", balance.value));
    f
}

fn pay_page(
    v: &Viewer,
    a: &AccountView,
    fields: &forms::Fields,
    key: &str,
    errors: Errors,
    status: StatusCode,
) -> Response {
    let l = v.lang();
    let c = &v.chrome;
    let sandbox = v.state.config().portal.payment_processor == PaymentProcessorKind::Sandbox;
    let methods = vec![
        (
            "tok_ok".to_owned(),
            l.t(M::TestCardOk).to_owned(),
            Some(l.t(M::TestCardHint).to_owned()),
        ),
        (
            "tok_declined".to_owned(),
            l.t(M::TestCardDeclined).to_owned(),
            None,
        ),
    ];
    let title = errors.title(l, l.t(M::PayTitle));
    let currency = a.balance.as_ref().map_or("USD", |b| b.currency.as_str());
    let content = html! {
        (forms::summary(l, &errors))
        dl.summary {
            (row(l.t(M::Account), a.name.as_deref()))
            (row(l.t(M::Balance), a.balance.as_ref().map(|b| l.money(b)).as_deref()))
        }
        @if sandbox {
            form method="post" action=(c.href(&format!("/bills/{}/pay", a.id))) novalidate autocomplete="off" {
                (hidden(v, Some(key)))
                input type="hidden" name="currency" value=(currency);
                (forms::input(l, "amount", "text", &l.fill(M::AmountIn, &[("currency", currency)]), Some(l.t(M::AmountHint)), &fields.value("amount"), &errors, "input-short"))
                (forms::radios(l, "payment_token", l.t(M::PaymentMethod), &methods, &fields.value("payment_token"), &errors))
                div.button-group {
                    button.button type="submit" { (l.t(M::PayNow)) }
                    a href=(c.href("/bills")) { (l.t(M::BackToBills)) }
                }
            }
        } @else {
            p { (l.t(M::ErrNotSupported)) }
        }
    };
    layout::respond(c, status, &title, content)
}

/// An amount typed by a patient: `120`, `120.5`, `120,50`, `$1,200.00`.
fn parse_amount(text: &str) -> Option<f64> {
    let t: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '$')
        .collect();
    let t = match (t.rfind('.'), t.rfind(',')) {
        // The last separator is the decimal one when two digits or fewer follow it.
        (Some(d), Some(c)) if c > d => t.replace('.', "").replace(',', "."),
        (Some(_), Some(_)) => t.replace(',', ""),
        (None, Some(c)) if t.len() - c - 1 <= 2 => t.replace(',', "."),
        (None, Some(_)) => t.replace(',', ""),
        _ => t,
    };
    let value: f64 = t.parse().ok()?;
    (value.is_finite() && value > 0.0).then_some(value)
}

pub async fn pay(Path(id): Path<String>, form: FormPost) -> Response {
    let FormPost { viewer: v, fields } = form;
    let l = v.lang();
    let key = posted_key(&fields);
    // Card numbers never enter, not even into an error page.
    let everything: Value = fields.as_json();
    if let Err(e) = card::check_body(&everything) {
        let e = ApiError::from(&e);
        return match find(&v, &id).await {
            Ok(a) => pay_page(
                &v,
                &a,
                &forms::Fields::default(),
                &key,
                Errors::from_api(l, None, &e),
                StatusCode::BAD_REQUEST,
            ),
            Err(r) => r,
        };
    }
    let mut errors = Errors::default();
    let amount = fields.text("amount").as_deref().and_then(parse_amount);
    if amount.is_none() {
        errors.add(Some("amount"), l.t(M::ErrInvalidAmount));
    }
    let token = fields.text("payment_token");
    if token.is_none() {
        errors.add(Some("payment_token"), l.t(M::ErrChoosePaymentMethod));
    }
    let (Some(amount), Some(token)) = (amount, token) else {
        return match find(&v, &id).await {
            Ok(a) => pay_page(
                &v,
                &a,
                &fields,
                &key,
                errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            Err(r) => r,
        };
    };
    let currency = fields.text("currency").unwrap_or_else(|| "USD".to_owned());
    let request = PaymentRequest {
        amount: Amount {
            value: amount,
            currency,
        },
        payment_token: token,
    };
    let fingerprint = json!({"account": &id, "body": request});
    match forms::run(
        &v,
        &fields,
        "pay",
        &fingerprint,
        StatusCode::CREATED,
        async |ctx, idem| bills::pay(ctx, &id, &request, idem).await,
    )
    .await
    {
        Ok(view) => {
            let rt = view
                .get("record_type")
                .and_then(Value::as_str)
                .unwrap_or("");
            let pid = view.get("id").and_then(Value::as_str).unwrap_or("");
            see_other(&v.chrome.base, &format!("/bills/receipts/{rt}/{pid}"))
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => v.error(e).into_response(),
        Err(e) => match find(&v, &id).await {
            Ok(a) => {
                let field = match e.code {
                    "amount_exceeds_balance" | "invalid_amount" | "currency_mismatch" => {
                        Some("amount")
                    }
                    "payment_declined" | "payment_method_invalid" | "invalid_payment_token" => {
                        Some("payment_token")
                    }
                    _ => None,
                };
                pay_page(
                    &v,
                    &a,
                    &fields,
                    &key,
                    Errors::from_api(l, field, &e),
                    Errors::status(&e),
                )
            }
            Err(r) => r,
        },
    }
}

pub async fn receipt(v: Viewer, Path((kind, id)): Path<(String, String)>) -> Response {
    if !matches!(kind.as_str(), "PaymentReconciliation" | "Basic") {
        return v.error(ApiError::not_found()).into_response();
    }
    let record = match v.ctx().read(&kind, &id).await {
        Ok(r) => r.resource,
        Err(e) => return v.error(e).into_response(),
    };
    let l = v.lang();
    let c = &v.chrome;
    let amount = record.get("paymentAmount").and_then(money);
    let reference = record
        .pointer("/paymentIdentifier/value")
        .and_then(Value::as_str);
    let account = record
        .pointer("/detail/0/request/reference")
        .and_then(Value::as_str);
    let created = str_at(&record, "created");
    let content = html! {
        div.banner.banner-success role="status" { p { (l.t(M::PaymentDone)) } }
        dl.summary {
            (row(l.t(M::Amount), amount.as_ref().map(|m| l.money(m)).as_deref()))
            (row(l.t(M::ColDate), created.map(|d| l.date(d)).as_deref()))
            (row(l.t(M::PaymentReference), reference))
            (row(l.t(M::Account), account.and_then(|a| a.strip_prefix("Account/"))))
            (row(l.t(M::ReceiptNumber), Some(&id)))
        }
        p { a href=(c.href("/bills")) { (l.t(M::BackToBills)) } }
    };
    layout::ok(c, l.t(M::ReceiptTitle), content)
}

#[cfg(test)]
mod tests {
    use super::parse_amount;

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("120"), Some(120.0));
        assert_eq!(parse_amount("120.50"), Some(120.5));
        assert_eq!(parse_amount("120,50"), Some(120.5));
        assert_eq!(parse_amount("$1,200.00"), Some(1200.0));
        assert_eq!(parse_amount("1.200,00"), Some(1200.0));
        assert_eq!(parse_amount("1,200"), Some(1200.0));
        assert_eq!(parse_amount("abc"), None);
        assert_eq!(parse_amount("-5"), None);
        assert_eq!(parse_amount("0"), None);
    }
}
