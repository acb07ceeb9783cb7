//! The frame of every page: `<html lang>`, the skip link, the header with the
//! language switcher and the sign-out form, the main navigation, `<main>` with the one
//! `<h1>`, a success banner after a redirect (`?done=`), the footer, and the
//! session-timeout warning (hidden until the script shows it; without JavaScript the
//! footer's "stay signed in" link does the same).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::i18n::{Lang, M};
use super::viewer::Chrome;
use crate::clock::unix_now;

/// The main navigation: (path, label).
const NAV: &[(&str, M)] = &[
    ("/", M::NavHome),
    ("/record", M::NavRecord),
    ("/appointments", M::NavAppointments),
    ("/medications", M::NavMedications),
    ("/referrals", M::NavReferrals),
    ("/messages", M::NavMessages),
    ("/bills", M::NavBills),
    ("/download", M::NavDownload),
    ("/profile", M::NavProfile),
];

/// What a `?done=` code after a redirect says.
fn done_message(code: &str) -> Option<M> {
    Some(match code {
        "booked" => M::DoneBooked,
        "cancelled" => M::DoneCancelled,
        "rescheduled" => M::DoneRescheduled,
        "refill" => M::DoneRefill,
        "referral" => M::DoneReferral,
        "thread" => M::DoneThread,
        "reply" => M::DoneReply,
        "patient" => M::DonePatient,
        "extended" => M::DoneExtended,
        _ => return None,
    })
}

fn query_param(here: &str, name: &str) -> Option<String> {
    let query = here.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `here` with `lang` set to `lang` (the switcher's links).
fn with_lang(here: &str, lang: Lang) -> String {
    let (path, query) = here.split_once('?').unwrap_or((here, ""));
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k != "lang" && k != "done" {
            out.append_pair(&k, &v);
        }
    }
    out.append_pair("lang", lang.code());
    format!("{path}?{}", out.finish())
}

fn is_current(chrome: &Chrome, path: &str) -> bool {
    let here = chrome.here.split('?').next().unwrap_or("");
    let target = chrome.href(path);
    if path == "/" {
        here == target || here == format!("{target}/") || (chrome.base.is_empty() && here == "/")
    } else {
        here == target || here.starts_with(&format!("{target}/"))
    }
}

/// A whole page.
pub fn page(chrome: &Chrome, title: &str, content: Markup) -> Markup {
    let l = chrome.lang;
    let signed_in = chrome.session.as_ref();
    let done = query_param(&chrome.here, "done").and_then(|c| done_message(&c));
    html! {
        (DOCTYPE)
        html lang=(l.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " – " (l.t(M::SiteName)) }
                link rel="stylesheet" href=(chrome.href("/assets/portal.css"));
                link rel="stylesheet" media="print" href=(chrome.href("/assets/print.css"));
                script src=(chrome.href("/assets/portal.js")) defer {}
            }
            body {
                a.skip-link href="#main" { (l.t(M::SkipToContent)) }
                header.site-header {
                    div.wrap.header-row {
                        a.brand href=(chrome.href("/")) { (l.t(M::SiteName)) }
                        div.header-tools {
                            nav.lang-switch aria-label=(l.t(M::LanguageNav)) {
                                ul {
                                    @for other in Lang::ALL {
                                        li {
                                            @if other == l {
                                                span aria-current="true" lang=(other.code()) { (other.name()) }
                                            } @else {
                                                a href=(with_lang(&chrome.here, other)) lang=(other.code()) hreflang=(other.code()) { (other.name()) }
                                            }
                                        }
                                    }
                                }
                            }
                            @if let Some(s) = signed_in {
                                form.sign-out method="post" action=(chrome.href("/sign-out")) {
                                    input type="hidden" name="csrf_token" value=(s.csrf);
                                    button.button.button-secondary type="submit" { (l.t(M::SignOut)) }
                                }
                            }
                        }
                    }
                    @if signed_in.is_some() {
                        nav.main-nav aria-label=(l.t(M::MainNav)) {
                            ul.wrap {
                                @for (path, label) in NAV {
                                    li {
                                        @if is_current(chrome, path) {
                                            a href=(chrome.href(path)) aria-current="page" { (l.t(*label)) }
                                        } @else {
                                            a href=(chrome.href(path)) { (l.t(*label)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(s) = signed_in {
                    div.wrap { (timeout_warning(chrome, s)) }
                    @if let Some(name) = &s.acting_for {
                        div.wrap {
                            p.acting-for {
                                (l.fill(M::ActingForBanner, &[("name", name)]))
                                " "
                                a href=(chrome.href("/profile")) { (l.t(M::SwitchPatientLink)) }
                            }
                        }
                    }
                }
                main #main .wrap tabindex="-1" {
                    @if let Some(done) = done {
                        div.banner.banner-success role="status" {
                            p { (l.t(done)) }
                        }
                    }
                    h1 { (title) }
                    (content)
                }
                footer.site-footer {
                    div.wrap {
                        @if let Some(s) = signed_in {
                            p {
                                (l.fill(M::SessionEndsAt, &[("minutes", &minutes_left(s.expires_at).to_string())]))
                                " "
                                a href=(chrome.href("/session")) { (l.t(M::StaySignedIn)) }
                            }
                        }
                        p { (l.t(M::FooterText)) }
                    }
                }
            }
        }
    }
}

fn minutes_left(expires_at: u64) -> u64 {
    expires_at.saturating_sub(unix_now()).div_ceil(60)
}

/// The warning the script shows before the session ends: a real form, so that
/// "stay signed in" is a plain post-redirect-get back to this page.
fn timeout_warning(chrome: &Chrome, s: &super::viewer::SessionChrome) -> Markup {
    let l = chrome.lang;
    let back = chrome.here.clone();
    html! {
        div #timeout-warning .timeout-warning hidden role="alertdialog" aria-modal="false"
            aria-labelledby="timeout-title" aria-describedby="timeout-text"
            data-expires-in=(s.expires_at.saturating_sub(unix_now())) data-warn=(s.warn_seconds) {
            h2 #timeout-title { (l.t(M::TimeoutTitle)) }
            p #timeout-text { (l.t(M::TimeoutText)) }
            form method="post" action=(chrome.href("/session")) {
                input type="hidden" name="csrf_token" value=(s.csrf);
                input type="hidden" name="return_to" value=(back);
                button.button type="submit" { (l.t(M::StaySignedIn)) }
            }
        }
    }
}

/// A page as a response: the status, the page, and the language cookie when `?lang=`
/// chose it.
pub fn respond(chrome: &Chrome, status: StatusCode, title: &str, content: Markup) -> Response {
    let body = page(chrome, title, content);
    let mut response = (status, body).into_response();
    if let Some(cookie) = &chrome.lang_cookie {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    response
}

/// A 200 page.
pub fn ok(chrome: &Chrome, title: &str, content: Markup) -> Response {
    respond(chrome, StatusCode::OK, title, content)
}

/// A description list row, left out when the value is absent.
pub fn row(label: &str, value: Option<&str>) -> Markup {
    html! {
        @if let Some(v) = value {
            div.row { dt { (label) } dd { (v) } }
        }
    }
}

/// An empty state.
pub fn none(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

/// The notice shown when some data may be out of date (served stale by the cache).
pub fn stale(l: Lang, is_stale: bool) -> Markup {
    html! {
        @if is_stale {
            div.banner.banner-warning role="note" { p { (l.t(M::StaleNotice)) } }
        }
    }
}
