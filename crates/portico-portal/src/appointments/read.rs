//! Reading the patient's appointments.
//!
//! The list is `Appointment?date=ge<today>` (upcoming, soonest first; plus proposed
//! requests without a start) or `date=lt<tomorrow>` (past, newest first), narrowed to
//! the patient, cut at `now` here. One appointment is read by search
//! (`Appointment?_id=`), so that another patient's id simply matches nothing.

use serde_json::Value;

use super::views::{AppointmentList, AppointmentView, When, appointment_view};
use crate::context::{Ctx, Versioned};
use crate::error::{PortalError, PortalResult};
use crate::view::{instant, parse_datetime, str_at};
use portico_upstream::UpstreamError;

/// The most appointments one list shows.
pub const MAX_LISTED: usize = 100;

/// The patient's upcoming (soonest first) or past (newest first) appointments.
pub async fn list(ctx: Ctx<'_>, when: When) -> PortalResult<AppointmentList> {
    let now = ctx.now();
    // The EHR is asked with whole-day bounds, so that the same question (and its cache
    // entry) serves a whole day; the exact cut at `now` is made here.
    let today = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |t| t.and_utc());
    let (date, sort) = match when {
        When::Upcoming => (format!("ge{}", instant(today)), "date"),
        When::Past => (
            format!("lt{}", instant(today + chrono::TimeDelta::days(1))),
            "-date",
        ),
    };
    let params = [
        ("date", date),
        ("_sort", sort.to_owned()),
        ("_count", "50".to_owned()),
        ("_include", "Appointment:actor".to_owned()),
    ];
    let requests_params = [
        ("status", "proposed,pending".to_owned()),
        ("_count", "50".to_owned()),
        ("_include", "Appointment:actor".to_owned()),
    ];
    let (page, requests) = tokio::join!(
        ctx.search_all("Appointment", &params, MAX_LISTED + 1),
        async {
            if when == When::Upcoming {
                // Requests without a time yet are upcoming too.
                ctx.search_all("Appointment", &requests_params, MAX_LISTED)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        }
    );
    let mut page = page?;
    let on_the_right_side_of_now = |a: &Value| {
        let Some(start) = str_at(a, "start").and_then(parse_datetime) else {
            return true;
        };
        match when {
            When::Upcoming => start >= now,
            When::Past => start < now,
        }
    };
    page.matches.retain(on_the_right_side_of_now);
    if let Some(requests) = requests? {
        page.stale |= requests.stale;
        page.included.extend(requests.included);
        page.matches.extend(
            requests
                .matches
                .into_iter()
                .filter(|a| a.get("start").is_none()),
        );
    }
    let mut views: Vec<AppointmentView> = page
        .matches
        .iter()
        .filter(|a| str_at(a, "resourceType") == Some("Appointment"))
        .map(|a| appointment_view(a, None, Some(&page), now))
        .collect();
    let key = |v: &AppointmentView| {
        v.start
            .as_deref()
            .or(v.requested_start.as_deref())
            .and_then(parse_datetime)
    };
    match when {
        // Requests without any time last.
        When::Upcoming => views.sort_by_key(|v| (key(v).is_none(), key(v))),
        When::Past => views.sort_by_key(|v| std::cmp::Reverse(key(v))),
    }
    let truncated = views.len() > MAX_LISTED || page.next.is_some();
    views.truncate(MAX_LISTED);
    Ok(AppointmentList {
        appointments: views,
        truncated,
        stale: page.stale,
    })
}

/// The patient's appointment `id` with its version; anything else is `NotFound`.
pub async fn load(ctx: Ctx<'_>, id: &str) -> PortalResult<Versioned> {
    if !portico_fhir::reference::is_valid_id(id) {
        return Err(PortalError::NotFound);
    }
    let page = ctx.search("Appointment", &[("_id", id.to_owned())]).await?;
    let resource = page
        .matches
        .into_iter()
        .find(|a| str_at(a, "resourceType") == Some("Appointment") && str_at(a, "id") == Some(id))
        .ok_or(PortalError::NotFound)?;
    Ok(Versioned {
        version: resource
            .pointer("/meta/versionId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        stale: None,
        resource,
    })
}

/// `GET /appointments/{id}`.
pub async fn get(ctx: Ctx<'_>, id: &str) -> PortalResult<AppointmentView> {
    let a = load(ctx, id).await?;
    Ok(appointment_view(&a.resource, a.version, None, ctx.now()))
}

/// The patient's appointment `id` if the EHR shows it to them; `None` when it does not.
pub(super) async fn load_if_any(ctx: Ctx<'_>, id: &str) -> PortalResult<Option<Versioned>> {
    match load(ctx, id).await {
        Ok(a) => Ok(Some(a)),
        Err(PortalError::NotFound | PortalError::Upstream(UpstreamError::NotFound { .. })) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
