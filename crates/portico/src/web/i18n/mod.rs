//! The pages' languages and their one message catalog.
//!
//! Every user-visible string is a [`M`] key with an English and a Spanish text
//! (`catalog.rs`: the macro refuses an entry without both). Texts may hold `{name}`
//! placeholders that [`Lang::fill`] replaces with (escaped-at-render) values.
//!
//! The language is `?lang=` when given (and then remembered in a cookie), else the
//! `portico_lang` cookie, else the first supported language of `Accept-Language`, else
//! English.

mod catalog;

use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Timelike};
use portico_portal::view::Money;

pub use catalog::M;

/// The cookie remembering the chosen language.
pub const LANG_COOKIE: &str = "portico_lang";

/// A language the pages are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Es,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Es];

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Es => "es",
        }
    }

    /// The language's own name, for the switcher.
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Es => "Español",
        }
    }

    pub fn parse(code: &str) -> Option<Lang> {
        let primary = code.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "es" => Some(Lang::Es),
            _ => None,
        }
    }

    /// The language of a request: `?lang=`, the cookie, `Accept-Language`, English.
    /// Returns whether `?lang=` chose it (so that the cookie is set).
    pub fn negotiate(query: Option<&str>, headers: &HeaderMap) -> (Lang, bool) {
        let asked = query.and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "lang")
                .and_then(|(_, v)| Lang::parse(&v))
        });
        if let Some(lang) = asked {
            return (lang, true);
        }
        if let Some(lang) =
            crate::login::browser::cookie(headers, LANG_COOKIE).and_then(Lang::parse)
        {
            return (lang, false);
        }
        (Lang::from_accept_language(headers), false)
    }

    /// The supported language with the highest `q` in `Accept-Language`.
    pub fn from_accept_language(headers: &HeaderMap) -> Lang {
        let Some(value) = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
        else {
            return Lang::En;
        };
        let mut best: Option<(f32, Lang)> = None;
        for part in value.split(',').take(20) {
            let mut pieces = part.split(';');
            let tag = pieces.next().unwrap_or("");
            let q = pieces
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if let Some(lang) = Lang::parse(tag)
                && q > 0.0
                && best.is_none_or(|(b, _)| q > b)
            {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }

    /// The `Set-Cookie` remembering this language for a year.
    pub fn cookie(self, secure: bool) -> Option<HeaderValue> {
        crate::login::browser::CookiePolicy { secure }.set(
            LANG_COOKIE,
            self.code(),
            "/",
            365 * 24 * 3600,
        )
    }

    /// The text of `m` in this language.
    pub fn t(self, m: M) -> &'static str {
        match self {
            Lang::En => m.en(),
            Lang::Es => m.es(),
        }
    }

    /// The text of `m` with each `{name}` replaced by its value.
    pub fn fill(self, m: M, values: &[(&str, &str)]) -> String {
        let mut text = self.t(m).to_owned();
        for (name, value) in values {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }

    fn month(self, month: u32) -> &'static str {
        const MONTHS: [M; 12] = [
            M::Jan,
            M::Feb,
            M::Mar,
            M::Apr,
            M::May,
            M::Jun,
            M::Jul,
            M::Aug,
            M::Sep,
            M::Oct,
            M::Nov,
            M::Dec,
        ];
        MONTHS
            .get(month.saturating_sub(1) as usize)
            .map_or("", |m| self.t(*m))
    }

    /// A FHIR date or dateTime for reading: `12 Mar 2027`, `12 Mar 2027, 14:30` (in the
    /// offset the EHR gave). Anything unparseable is shown as it came.
    pub fn date(self, raw: &str) -> String {
        if let Ok(t) = DateTime::<FixedOffset>::parse_from_rfc3339(raw) {
            return self.datetime_parts(&t);
        }
        if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
            return format!("{} {} {}", d.day(), self.month(d.month()), d.year());
        }
        raw.to_owned()
    }

    /// Only the day of a FHIR date or dateTime.
    pub fn day(self, raw: &str) -> String {
        if let Ok(t) = DateTime::<FixedOffset>::parse_from_rfc3339(raw) {
            return format!("{} {} {}", t.day(), self.month(t.month()), t.year());
        }
        self.date(raw)
    }

    /// Only the time of a FHIR dateTime (`14:30`).
    pub fn time(self, raw: &str) -> String {
        match DateTime::<FixedOffset>::parse_from_rfc3339(raw) {
            Ok(t) => format!("{:02}:{:02}", t.hour(), t.minute()),
            Err(_) => raw.to_owned(),
        }
    }

    fn datetime_parts(self, t: &DateTime<FixedOffset>) -> String {
        format!(
            "{} {} {}, {:02}:{:02}",
            t.day(),
            self.month(t.month()),
            t.year(),
            t.hour(),
            t.minute()
        )
    }

    /// An amount of money: `$1,234.50` / `1234,50 USD`.
    pub fn money(self, money: &Money) -> String {
        let cents = (money.value * 100.0).round() as i64;
        let (whole, frac) = (cents.abs() / 100, cents.abs() % 100);
        let sign = if cents < 0 { "-" } else { "" };
        let grouped = group(whole, if self == Lang::Es { '.' } else { ',' });
        match self {
            Lang::En if money.currency == "USD" => format!("{sign}${grouped}.{frac:02}"),
            Lang::En => format!("{sign}{grouped}.{frac:02} {}", money.currency),
            Lang::Es => format!("{sign}{grouped},{frac:02} {}", money.currency),
        }
    }

    /// A number as written in this language (decimal comma in Spanish).
    pub fn number(self, value: f64) -> String {
        let text = if value.fract() == 0.0 && value.abs() < 1e12 {
            format!("{}", value as i64)
        } else {
            let t = format!("{value:.2}");
            t.trim_end_matches('0').trim_end_matches('.').to_owned()
        };
        match self {
            Lang::En => text,
            Lang::Es => text.replace('.', ","),
        }
    }
}

fn group(n: i64, sep: char) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_str(accept).unwrap(),
        );
        h
    }

    #[test]
    fn negotiation() {
        assert_eq!(Lang::from_accept_language(&HeaderMap::new()), Lang::En);
        assert_eq!(
            Lang::from_accept_language(&headers("es-MX,es;q=0.9")),
            Lang::Es
        );
        assert_eq!(
            Lang::from_accept_language(&headers("fr;q=1, en;q=0.5, es;q=0.8")),
            Lang::Es
        );
        assert_eq!(Lang::from_accept_language(&headers("de")), Lang::En);
        assert_eq!(
            Lang::negotiate(Some("lang=es"), &HeaderMap::new()),
            (Lang::Es, true)
        );
        assert_eq!(
            Lang::negotiate(Some("lang=xx"), &headers("es")),
            (Lang::Es, false)
        );
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("portico_lang=es"));
        h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en"));
        assert_eq!(Lang::negotiate(None, &h), (Lang::Es, false));
    }

    #[test]
    fn every_entry_has_both_languages_and_the_same_placeholders() {
        for m in M::ALL {
            assert!(!m.en().is_empty() && !m.es().is_empty(), "{m:?}");
            let names = |t: &str| {
                let mut v: Vec<String> = t
                    .split('{')
                    .skip(1)
                    .filter_map(|s| s.split_once('}').map(|(n, _)| n.to_owned()))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(names(m.en()), names(m.es()), "{m:?}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(Lang::En.date("2027-03-12"), "12 Mar 2027");
        assert_eq!(Lang::Es.date("2027-03-12"), "12 mar 2027");
        assert_eq!(Lang::En.date("2027-03-12T14:30:00Z"), "12 Mar 2027, 14:30");
        assert_eq!(Lang::En.date("garbage"), "garbage");
        let m = Money {
            value: 1234.5,
            currency: "USD".into(),
        };
        assert_eq!(Lang::En.money(&m), "$1,234.50");
        assert_eq!(Lang::Es.money(&m), "1.234,50 USD");
        assert_eq!(Lang::Es.number(5.25), "5,25");
        assert_eq!(Lang::En.number(120.0), "120");
    }
}
