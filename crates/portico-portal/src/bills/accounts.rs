//! Reading the statements: `Account?subject=Patient/x` and `Invoice?subject=Patient/x`
//! (both narrowed and verified by the [`Ctx`]), invoices grouped under the Account they
//! reference, and the balance due across the accounts for the dashboard.

use futures::StreamExt as _;
use serde_json::Value;

use super::views::{AccountView, Bills, Period, balance_of, invoice_account, invoice_view, major};
use crate::context::Ctx;
use crate::error::PortalResult;
use crate::profile::PaymentStrategy;
use crate::view::{Money, array, reference_of, str_at, to_minor};

/// The most accounts and invoices listed.
const MAX_ACCOUNTS: usize = 50;
const MAX_INVOICES: usize = 200;

/// The most ChargeItems read to describe line items.
const MAX_CHARGE_ITEM_READS: usize = 50;

/// How many of those reads are in flight at once.
const CHARGE_ITEM_READS_AT_ONCE: usize = 8;

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
