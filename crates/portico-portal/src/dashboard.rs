//! `GET /dashboard`: the portal's home page in one answer.
//!
//! Five sections — upcoming appointments, active medications with refill eligibility,
//! open or unread message threads, recent lab results, the balance due — are loaded
//! concurrently, each through its own area module, so the page costs about as long as
//! its slowest section, not the sum. Each section is one EHR round trip in the usual
//! case, so a cold dashboard costs about one EHR call's latency: searches that used to
//! wait for another's answer (dispenses of the listed prescriptions, messages of the
//! listed threads, participants' names) are replaced by broad searches started at once
//! ([`crate::whole::search_whole`]) or by `_include`, with the narrow searches kept as the fallback
//! when a broad answer is not whole; the balance needs the accounts only
//! ([`bills::balance_due`]). A section whose EHR calls fail is left out and
//! named in `unavailable` (the rest of the page still shows); a section the EHR profile
//! does not support is simply absent. Only when no section can be shown and at least one
//! failed is the dashboard an error.

use serde::Serialize;
use utoipa::ToSchema;

use crate::appointments::{self, AppointmentView, When};
use crate::bills;
use crate::context::Ctx;
use crate::error::{PortalError, PortalResult};
use crate::medications::{self, Medication};
use crate::messages::{self, ThreadStatus, ThreadSummary};
use crate::records::{self, Kind, RecordItem};
use crate::view::Money;

/// How many items each list section shows at most.
pub const SECTION_ITEMS: usize = 5;

/// The portal's home page.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Dashboard {
    /// The next appointments, soonest first.
    pub upcoming_appointments: Option<Vec<AppointmentView>>,
    /// Active prescriptions with whether a refill can be requested now.
    pub medications: Option<Vec<Medication>>,
    /// Open threads and threads with unread messages, most recent first.
    pub message_threads: Option<Vec<ThreadSummary>>,
    /// Unread messages across all threads.
    pub unread_messages: Option<usize>,
    /// The latest lab results, newest first.
    pub recent_results: Option<Vec<RecordItem>>,
    /// What is owed across the patient's accounts (in the accounts' currency).
    pub balance_due: Option<Money>,
    /// Sections that could not be loaded because the EHR failed: `appointments`,
    /// `medications`, `messages`, `results`, `bills`.
    pub unavailable: Vec<String>,
    /// Some of it was served from the gateway's cache because the EHR is failing.
    pub stale: bool,
}

/// A section's outcome: shown, unsupported by the EHR, or failed.
fn section<T>(
    name: &'static str,
    result: PortalResult<T>,
    unavailable: &mut Vec<String>,
    errors: &mut Vec<PortalError>,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(
            PortalError::NotSupported { .. }
            | PortalError::Forbidden { .. }
            | PortalError::ProxyNotPermitted { .. },
        ) => None,
        Err(e) => {
            tracing::warn!(
                section = name,
                code = e.code(),
                "dashboard section unavailable"
            );
            unavailable.push(name.to_owned());
            errors.push(e);
            None
        }
    }
}

pub async fn dashboard(ctx: Ctx<'_>) -> PortalResult<Dashboard> {
    let (appointments, medications, threads, results, bills) = tokio::join!(
        appointments::list(ctx, When::Upcoming),
        medications::list(ctx),
        messages::list_threads(ctx),
        records::list(ctx, Kind::LabResults, SECTION_ITEMS as u32, None),
        bills::balance_due(ctx),
    );
    let mut unavailable = Vec::new();
    let mut errors = Vec::new();
    let mut stale = false;
    let appointments = section("appointments", appointments, &mut unavailable, &mut errors);
    let medications = section("medications", medications, &mut unavailable, &mut errors);
    let threads = section("messages", threads, &mut unavailable, &mut errors);
    let results = section("results", results, &mut unavailable, &mut errors);
    let bills = section("bills", bills, &mut unavailable, &mut errors);
    let shown = [
        appointments.is_some(),
        medications.is_some(),
        threads.is_some(),
        results.is_some(),
        bills.is_some(),
    ];
    if !errors.is_empty() && !shown.contains(&true) {
        // Nothing to show: the first failure is the answer.
        return Err(errors.swap_remove(0));
    }
    let upcoming_appointments = appointments.map(|list| {
        stale |= list.stale;
        list.appointments
            .into_iter()
            .filter(|a| {
                !matches!(
                    a.status.as_str(),
                    "cancelled" | "entered-in-error" | "noshow"
                )
            })
            .take(SECTION_ITEMS)
            .collect()
    });
    let medications = medications.map(|list| {
        stale |= list.stale;
        list.items
            .into_iter()
            .filter(|m| m.status.as_deref() == Some("active"))
            .collect()
    });
    let (message_threads, unread_messages) = match threads {
        Some(list) => {
            stale |= list.stale;
            let unread = list.threads.iter().map(|t| t.unread).sum();
            let shown = list
                .threads
                .into_iter()
                .filter(|t| t.status == ThreadStatus::Open || t.unread > 0)
                .take(SECTION_ITEMS)
                .collect();
            (Some(shown), Some(unread))
        }
        None => (None, None),
    };
    let recent_results = results.map(|(list, _)| {
        stale |= list.stale;
        list.items
    });
    let balance_due = bills.map(|b| {
        stale |= b.stale;
        b.total
    });
    Ok(Dashboard {
        upcoming_appointments,
        medications,
        message_threads,
        unread_messages,
        recent_results,
        balance_due,
        unavailable,
        stale,
    })
}
