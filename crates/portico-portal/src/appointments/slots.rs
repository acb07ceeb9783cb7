//! Slot search.
//!
//! `Schedule?actor=` resolves a practitioner/location to its Schedules (the sandbox has
//! no chained search), then
//! `Slot?status=free&start=ge..&start=lt..&schedule=..&_include=Slot:schedule` in a
//! bounded window ([`slot_window`]). With the `operations` strategy (IHE ITI Scheduling
//! R4, Epic-like) the search is `POST Appointment/$find` and its proposed Appointments
//! are the "slots" (their ids are what the patient books, and the gateway remembers
//! having offered them).

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde_json::{Value, json};

use super::views::{SlotList, SlotQuery, SlotView, actor_display};
use crate::context::Ctx;
use crate::error::{PortalError, PortalResult};
use crate::input::{check_id, check_token};
use crate::profile::BookStrategy;
use crate::view::{first_concept_text, instant, parse_datetime, str_at};
use portico_access::Interaction;

/// The most slots one search shows.
pub const MAX_SLOTS: usize = 200;

/// The default slot-search window, in days.
pub const DEFAULT_WINDOW_DAYS: i64 = 14;

/// A window bound: a date (`end`: the whole day included) or an instant.
fn parse_bound(name: &str, value: &str, is_end: bool) -> PortalResult<DateTime<Utc>> {
    let parsed = if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        date.and_hms_opt(0, 0, 0).map(|d| d.and_utc())
    } else {
        DateTime::parse_from_rfc3339(value)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let Some(t) = parsed else {
        return Err(PortalError::invalid(format!(
            "{name} must be a date (YYYY-MM-DD) or an instant (RFC 3339)"
        )));
    };
    // chrono accepts signed years of any width (`+262142-12-31`); date arithmetic near
    // its limits would overflow, and no appointment is booked outside this range.
    if !(1900..=9999).contains(&t.year()) {
        return Err(PortalError::invalid(format!(
            "{name} must be between the years 1900 and 9999"
        )));
    }
    let is_date = value.len() == 10;
    Ok(if is_end && is_date {
        t + Duration::days(1)
    } else {
        t
    })
}

/// The slot-search window: `[start, end)`, never in the past, at most `max_days` long.
pub fn slot_window(
    start: Option<&str>,
    end: Option<&str>,
    max_days: u32,
    now: DateTime<Utc>,
) -> PortalResult<(DateTime<Utc>, DateTime<Utc>)> {
    let requested_start = match start {
        Some(s) => parse_bound("start", s, false)?,
        None => now,
    };
    let end = match end {
        Some(e) => parse_bound("end", e, true)?,
        None => requested_start + Duration::days(DEFAULT_WINDOW_DAYS.min(i64::from(max_days))),
    };
    if end <= requested_start {
        return Err(PortalError::invalid("end must be after start"));
    }
    if end - requested_start > Duration::days(i64::from(max_days)) {
        return Err(PortalError::invalid(format!(
            "the window may be at most {max_days} days long"
        )));
    }
    let today = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |d| d.and_utc());
    if requested_start < today || end <= now {
        return Err(PortalError::invalid("the window must not be in the past"));
    }
    Ok((requested_start.max(now), end))
}

/// Free slots matching `query` in its window.
pub async fn search_slots(ctx: Ctx<'_>, query: &SlotQuery) -> PortalResult<SlotList> {
    let profile = &ctx.profile().appointments;
    let now = ctx.now();
    let (start, end) = slot_window(
        query.start.as_deref(),
        query.end.as_deref(),
        profile.max_slot_window_days,
        now,
    )?;
    let service_type = query
        .service_type
        .as_deref()
        .map(|t| check_token("service_type", t))
        .transpose()?;
    if profile.slot_search_requires_service_type && service_type.is_none() {
        return Err(PortalError::Invalid {
            code: "service_type_required",
            message: "this EHR needs a service_type to search slots".to_owned(),
        });
    }
    let specialty = query
        .specialty
        .as_deref()
        .map(|t| check_token("specialty", t))
        .transpose()?;
    let practitioner = query
        .practitioner
        .as_deref()
        .map(|p| check_id("practitioner", p))
        .transpose()?;
    let location = query
        .location
        .as_deref()
        .map(|l| check_id("location", l))
        .transpose()?;
    let window = |truncated, stale, slots| SlotList {
        slots,
        window_start: instant(start),
        window_end: instant(end),
        truncated,
        stale,
    };

    if matches!(profile.book, BookStrategy::Operations) {
        let finding = Finding {
            start,
            end,
            service_type: service_type.as_deref(),
            specialty: specialty.as_deref(),
            practitioner: practitioner.as_deref(),
            location: location.as_deref(),
        };
        let (slots, truncated) = find_offers(ctx, &finding).await?;
        return Ok(window(truncated, false, slots));
    }

    // Practitioner/location → their Schedules (no chained search upstream).
    let mut schedules: Option<Vec<String>> = None;
    let mut stale = false;
    for actor in [
        practitioner.map(|p| format!("Practitioner/{p}")),
        location.map(|l| format!("Location/{l}")),
    ]
    .into_iter()
    .flatten()
    {
        let page = ctx
            .search_all(
                "Schedule",
                &[("actor", actor), ("_count", "100".to_owned())],
                100,
            )
            .await?;
        stale |= page.stale;
        let ids: Vec<String> = page
            .matches
            .iter()
            .filter_map(|s| str_at(s, "id").map(|id| format!("Schedule/{id}")))
            .collect();
        schedules = Some(match schedules {
            None => ids,
            Some(before) => before.into_iter().filter(|s| ids.contains(s)).collect(),
        });
    }
    if schedules.as_ref().is_some_and(Vec::is_empty) {
        return Ok(window(false, stale, Vec::new()));
    }

    let mut params = vec![
        ("status", "free".to_owned()),
        ("start", format!("ge{}", instant(start))),
        ("start", format!("lt{}", instant(end))),
        ("_include", "Slot:schedule".to_owned()),
        ("_sort", "start".to_owned()),
        ("_count", "100".to_owned()),
    ];
    if let Some(t) = service_type {
        params.push(("service-type", t));
    }
    if let Some(s) = specialty {
        params.push(("specialty", s));
    }
    if let Some(list) = &schedules {
        params.push(("schedule", list.join(",")));
    }
    let page = ctx.search_all("Slot", &params, MAX_SLOTS + 1).await?;
    let mut slots: Vec<SlotView> = page
        .matches
        .iter()
        .filter(|s| str_at(s, "resourceType") == Some("Slot"))
        // Verified here too: an EHR that ignores a parameter must not widen the answer.
        .filter(|s| str_at(s, "status") == Some("free"))
        .filter_map(|s| {
            let slot_start = parse_datetime(str_at(s, "start")?)?;
            if slot_start < start || slot_start >= end {
                return None;
            }
            let schedule = s
                .pointer("/schedule/reference")
                .and_then(Value::as_str)
                .and_then(|r| page.included(r));
            Some(SlotView {
                id: str_at(s, "id")?.to_owned(),
                start: str_at(s, "start")?.to_owned(),
                end: str_at(s, "end").map(str::to_owned),
                service_type: first_concept_text(s, "serviceType"),
                practitioner: schedule
                    .and_then(|sch| actor_display(sch, Some(&page), "Practitioner")),
                location: schedule.and_then(|sch| actor_display(sch, Some(&page), "Location")),
            })
        })
        .collect();
    slots.sort_by(|a, b| a.start.cmp(&b.start));
    let truncated = slots.len() > MAX_SLOTS || page.next.is_some();
    slots.truncate(MAX_SLOTS);
    Ok(window(truncated, stale || page.stale, slots))
}

/// What a `$find` asks for.
#[derive(Debug, Clone, Copy)]
pub struct Finding<'a> {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub service_type: Option<&'a str>,
    pub specialty: Option<&'a str>,
    pub practitioner: Option<&'a str>,
    pub location: Option<&'a str>,
}

/// The `Parameters` of `Appointment/$find` (IHE ITI Scheduling R4 names: `start` and
/// `end` 1..1, `visit-type` and `specialty` as `system|code` tokens, `practitioner`,
/// `location-reference` and `patient-reference` as References).
pub fn find_parameters(finding: &Finding<'_>, patient: &str) -> Value {
    let mut parameter = vec![
        json!({"name": "start", "valueDateTime": instant(finding.start)}),
        json!({"name": "end", "valueDateTime": instant(finding.end)}),
    ];
    if let Some(t) = finding.service_type {
        parameter.push(json!({"name": "visit-type", "valueString": t}));
    }
    if let Some(s) = finding.specialty {
        parameter.push(json!({"name": "specialty", "valueString": s}));
    }
    if let Some(p) = finding.practitioner {
        parameter.push(
            json!({"name": "practitioner", "valueReference": {"reference": format!("Practitioner/{p}")}}),
        );
    }
    if let Some(l) = finding.location {
        parameter.push(
            json!({"name": "location-reference", "valueReference": {"reference": format!("Location/{l}")}}),
        );
    }
    parameter.push(
        json!({"name": "patient-reference", "valueReference": {"reference": format!("Patient/{patient}")}}),
    );
    json!({"resourceType": "Parameters", "parameter": parameter})
}

/// The proposed Appointments a `$find` offers the patient, as slots (soonest first),
/// and whether there were more than [`MAX_SLOTS`]. The answer was verified by the
/// policy: a proposed appointment naming another patient is gone before this sees it.
async fn find_offers(ctx: Ctx<'_>, finding: &Finding<'_>) -> PortalResult<(Vec<SlotView>, bool)> {
    let parameters = find_parameters(finding, ctx.patient());
    let page = ctx
        .operation("Appointment", "find", parameters, Interaction::Search)
        .await?;
    let offers: Vec<&Value> = page
        .matches
        .iter()
        .filter(|a| str_at(a, "resourceType") == Some("Appointment"))
        .filter(|a| str_at(a, "status") == Some("proposed"))
        .filter(|a| {
            str_at(a, "start")
                .and_then(parse_datetime)
                .is_some_and(|s| s >= finding.start && s < finding.end)
        })
        .filter(|a| str_at(a, "id").is_some_and(portico_fhir::reference::is_valid_id))
        .collect();
    ctx.remember_offers(&offers.iter().map(|a| (*a).clone()).collect::<Vec<_>>())
        .await?;
    let mut slots: Vec<SlotView> = offers
        .iter()
        .filter_map(|a| {
            Some(SlotView {
                id: str_at(a, "id")?.to_owned(),
                start: str_at(a, "start")?.to_owned(),
                end: str_at(a, "end").map(str::to_owned),
                service_type: first_concept_text(a, "serviceType"),
                practitioner: actor_display(a, Some(&page), "Practitioner"),
                location: actor_display(a, Some(&page), "Location"),
            })
        })
        .collect();
    slots.sort_by(|a, b| a.start.cmp(&b.start));
    let truncated = slots.len() > MAX_SLOTS;
    slots.truncate(MAX_SLOTS);
    Ok((slots, truncated))
}
