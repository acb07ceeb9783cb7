//! The health record: an index of its kinds, and one page per kind. Lab results and
//! vital signs are drawn as trend charts ([`super::charts`]), one per test, each with
//! its numbers in a table beside it and values outside the reference range flagged in
//! words as well as in colour.

use std::collections::BTreeMap;

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use portico_portal::records::{self, Kind, RecordItem};

use super::charts::{self, Flag, Point, Range};
use super::i18n::{Lang, M};
use super::layout::{self, none, stale};
use super::viewer::Viewer;
use crate::error::ApiError;

/// How many entries a kind's page shows (newest first; older ones on the next pages).
const PAGE_ITEMS: u32 = 100;

/// `?page=`: a sealed cursor to an older page, as the API's `cursor` (bound to the
/// login, the patient shown and the kind; expiring).
#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    page: Option<String>,
}
/// How many trend charts a page draws at most.
const MAX_CHARTS: usize = 12;

pub fn kind_name(kind: Kind) -> M {
    match kind {
        Kind::Allergies => M::KindAllergies,
        Kind::Conditions => M::KindConditions,
        Kind::Medications => M::KindMedications,
        Kind::Immunizations => M::KindImmunizations,
        Kind::LabResults => M::KindLabResults,
        Kind::VitalSigns => M::KindVitalSigns,
        Kind::Documents => M::KindDocuments,
        Kind::Encounters => M::KindEncounters,
        Kind::Procedures => M::KindProcedures,
        Kind::CareTeam => M::KindCareTeam,
    }
}

pub async fn index(v: Viewer) -> Response {
    let l = v.lang();
    let c = &v.chrome;
    let content = html! {
        p.lead { (l.t(M::RecordLead)) }
        ul.link-list {
            @for kind in Kind::ALL {
                li { a href=(c.href(&format!("/record/{}", kind.as_str()))) { (l.t(kind_name(kind))) } }
            }
        }
        p { a href=(c.href("/download")) { (l.t(M::DownloadLink)) } }
    };
    layout::ok(c, l.t(M::RecordTitle), content)
}

pub async fn kind(v: Viewer, Path(kind): Path<String>, Query(query): Query<PageQuery>) -> Response {
    let Some(kind) = Kind::parse(&kind) else {
        return v.error(ApiError::not_found()).into_response();
    };
    let binding = crate::portal::records::binding(&v.caller, kind);
    let cursors = v.state.cursor_key();
    let page_url = match &query.page {
        None => None,
        Some(cursor) => match cursors.open(cursor, &binding, crate::clock::unix_now()) {
            Ok(url) => Some(url),
            // Expired, or not this page's: the same as a page that does not exist.
            Err(_) => return v.error(ApiError::not_found()).into_response(),
        },
    };
    let (list, next) = match records::list(v.ctx(), kind, PAGE_ITEMS, page_url.as_deref()).await {
        Ok(r) => r,
        Err(e) => return v.error(e).into_response(),
    };
    let older = next.map(|url| {
        let sealed = cursors.seal(&url, &binding, v.state.cursor_expiry());
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("page", &sealed)
            .finish();
        format!("/record/{}?{query}", kind.as_str())
    });
    let l = v.lang();
    let c = &v.chrome;
    let charted = matches!(kind, Kind::LabResults | Kind::VitalSigns);
    let content = html! {
        (stale(l, list.stale))
        p { a href=(c.href("/record")) { "← " (l.t(M::RecordTitle)) } }
        @if list.items.is_empty() {
            (none(l.t(M::NoEntries)))
        } @else if charted {
            (trends(l, &list.items))
        } @else {
            (table(l, kind, &list.items))
        }
        @if older.is_some() || page_url.is_some() {
            nav.pager aria-label=(l.t(M::RecordPages)) {
                ul {
                    @if page_url.is_some() {
                        li { a href=(c.href(&format!("/record/{}", kind.as_str()))) { (l.t(M::NewestEntries)) } }
                    }
                    @if let Some(older) = &older {
                        li { a href=(c.href(older)) rel="next" { (l.t(M::OlderEntries)) } }
                    }
                }
            }
        }
    };
    layout::ok(c, l.t(kind_name(kind)), content)
}

/// A value as shown: `5.4 mmol/L`, the text value, or the components.
pub fn result_value(l: Lang, r: &RecordItem) -> String {
    if let Some(q) = &r.value {
        return format!("{} {}", l.number(q.value), q.unit.as_deref().unwrap_or(""))
            .trim_end()
            .to_owned();
    }
    if let Some(t) = &r.value_text {
        return t.clone();
    }
    let parts: Vec<String> = r
        .components
        .iter()
        .filter_map(|c| {
            let q = c.value.as_ref()?;
            Some(
                format!("{} {}", l.number(q.value), q.unit.as_deref().unwrap_or(""))
                    .trim_end()
                    .to_owned(),
            )
        })
        .collect();
    parts.join(" / ")
}

fn table(l: Lang, kind: Kind, items: &[RecordItem]) -> Markup {
    html! {
        div.table-wrap {
            table.table {
                caption.visually-hidden { (l.t(kind_name(kind))) }
                thead { tr {
                    th scope="col" { (l.t(M::ColName)) }
                    th scope="col" { (l.t(M::ColDate)) }
                    th scope="col" { (l.t(M::ColDetails)) }
                    th scope="col" { (l.t(M::ColStatus)) }
                } }
                tbody {
                    @for r in items {
                        tr {
                            td { (r.title.as_deref().unwrap_or("—")) }
                            td { @if let Some(d) = &r.date { (l.date(d)) } }
                            td {
                                @let value = result_value(l, r);
                                @if !value.is_empty() { (value) br; }
                                @if let Some(cat) = &r.category { (cat) br; }
                                @if let Some(d) = &r.detail { (d) br; }
                                @for p in &r.people { @if let Some(n) = &p.name { span.hint { (n) } br; } }
                                @for a in &r.attachments { @if let Some(t) = &a.title { span.hint { (t) } br; } }
                            }
                            td { (r.status.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

/// One series per test (components, such as blood pressure's two, are series of their
/// own), oldest first, each with its unit and reference range.
struct Series<'a> {
    title: String,
    unit: String,
    range: Option<Range>,
    rows: Vec<(&'a RecordItem, f64)>,
}

fn series(items: &[RecordItem]) -> Vec<Series<'_>> {
    let mut by_title: BTreeMap<String, Series<'_>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    // Items come newest first; the charts read oldest first.
    for r in items.iter().rev() {
        let mut add = |title: &str, value: f64, unit: Option<&str>| {
            let s = by_title.entry(title.to_owned()).or_insert_with(|| {
                order.push(title.to_owned());
                Series {
                    title: title.to_owned(),
                    unit: unit.unwrap_or("").to_owned(),
                    range: None,
                    rows: Vec::new(),
                }
            });
            if let Some(range) = r.reference_range.as_deref().and_then(Range::parse) {
                s.range = Some(range);
            }
            s.rows.push((r, value));
        };
        let title = r.title.as_deref().unwrap_or("—");
        if let Some(q) = &r.value {
            add(title, q.value, q.unit.as_deref());
        }
        for c in &r.components {
            if let Some(q) = &c.value {
                add(
                    c.title.as_deref().unwrap_or(title),
                    q.value,
                    q.unit.as_deref(),
                );
            }
        }
    }
    // Components share the panel's range text; a range is only trusted per series when
    // the item had one value.
    order
        .into_iter()
        .filter_map(|t| by_title.remove(&t))
        .collect()
}

fn trends(l: Lang, items: &[RecordItem]) -> Markup {
    let all = series(items);
    let text_only: Vec<&RecordItem> = items
        .iter()
        .filter(|r| r.value.is_none() && r.components.iter().all(|c| c.value.is_none()))
        .collect();
    html! {
        @for (i, s) in all.iter().enumerate().take(MAX_CHARTS) {
            @let id = format!("chart-{i}");
            @let range = if s.rows.iter().all(|(r, _)| r.components.is_empty()) { s.range } else { None };
            section.trend aria-labelledby=(format!("{id}-h")) {
                h2 id=(format!("{id}-h")) { (s.title) @if !s.unit.is_empty() { " (" (s.unit) ")" } }
                div.trend-body {
                    div.trend-chart {
                        (charts::trend(l, &id, &s.title, &s.unit,
                            &s.rows.iter().map(|(r, v)| Point { label: r.date.as_deref().map(|d| l.day(d)).unwrap_or_default(), value: *v }).collect::<Vec<_>>(),
                            range))
                    }
                    div.trend-table.table-wrap {
                        table.table {
                            caption { (l.fill(M::ChartTableCaption, &[("title", &s.title)])) }
                            thead { tr {
                                th scope="col" { (l.t(M::ColDate)) }
                                th scope="col" { (l.t(M::ColValue)) }
                                th scope="col" { (l.t(M::ColRange)) }
                                th scope="col" { (l.t(M::ColFlag)) }
                            } }
                            tbody {
                                @for (r, v) in s.rows.iter().rev() {
                                    @let flag = range.map(|rg| rg.flag(*v));
                                    tr {
                                        td { @if let Some(d) = &r.date { (l.date(d)) } }
                                        td { (l.number(*v)) " " (s.unit) }
                                        td { @if range.is_some() { (r.reference_range.as_deref().unwrap_or("")) } }
                                        td {
                                            @match flag {
                                                Some(f) if f != Flag::Normal => strong class=(f.class()) { (f.text(l)) },
                                                Some(f) => span { (f.text(l)) },
                                                None => span { (r.interpretation.as_deref().unwrap_or("")) },
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !text_only.is_empty() {
            h2 { (l.t(M::OtherResults)) }
            (table(l, Kind::LabResults, &text_only.into_iter().cloned().collect::<Vec<_>>()))
        }
    }
}
