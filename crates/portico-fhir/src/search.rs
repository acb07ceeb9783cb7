//! FHIR search-parameter syntax: value prefixes, comma-separated OR lists, tokens and
//! date ranges (FHIR R4 `search.html`).

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// A search value prefix for ordered types (dates, numbers, quantities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::Eq => "eq",
            Prefix::Ne => "ne",
            Prefix::Gt => "gt",
            Prefix::Lt => "lt",
            Prefix::Ge => "ge",
            Prefix::Le => "le",
            Prefix::Sa => "sa",
            Prefix::Eb => "eb",
            Prefix::Ap => "ap",
        }
    }
}

/// Splits a two-letter prefix off an ordered value: `ge2024-01-01` → (`Ge`, `2024-01-01`).
/// A value without a known prefix is `Eq`.
pub fn split_prefix(value: &str) -> (Prefix, &str) {
    let prefix = match value.get(..2) {
        Some("eq") => Prefix::Eq,
        Some("ne") => Prefix::Ne,
        Some("gt") => Prefix::Gt,
        Some("lt") => Prefix::Lt,
        Some("ge") => Prefix::Ge,
        Some("le") => Prefix::Le,
        Some("sa") => Prefix::Sa,
        Some("eb") => Prefix::Eb,
        Some("ap") => Prefix::Ap,
        _ => return (Prefix::Eq, value),
    };
    (prefix, &value[2..])
}

/// Splits a parameter value on unescaped commas (FHIR OR), unescaping `\,`, `\$`, `\|`
/// and `\\`. Empty alternatives are dropped.
pub fn split_or(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next @ (',' | '$' | '|' | '\\')) => current.push(next),
                Some(other) => {
                    current.push('\\');
                    current.push(other);
                }
                None => current.push('\\'),
            },
            ',' => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            other => current.push(other),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Splits a token search value `system|code` into its parts. `code` alone gives
/// `(None, code)`; `|code` gives `(Some(""), code)` (no system); `system|` gives
/// `(Some(system), "")` (any code in that system).
pub fn token(value: &str) -> (Option<&str>, &str) {
    match value.split_once('|') {
        Some((system, code)) => (Some(system), code),
        None => (None, value),
    }
}

/// A FHIR date, dateTime or instant as the half-open interval `[start, end)` it covers,
/// in milliseconds since the Unix epoch. `2024` covers the whole year; a time with
/// seconds covers that second. Values without a time zone are taken as UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub start: i64,
    pub end: i64,
}

impl DateRange {
    /// Parses any FHIR date/dateTime/instant precision; `None` when it is not one.
    pub fn parse(s: &str) -> Option<DateRange> {
        let s = s.trim();
        if s.len() < 4 || !s.is_ascii() {
            return None;
        }
        match s.len() {
            4 => {
                let year: i32 = s.parse().ok()?;
                let start = NaiveDate::from_ymd_opt(year, 1, 1)?;
                let end = NaiveDate::from_ymd_opt(year + 1, 1, 1)?;
                return Some(Self::from_dates(start, end));
            }
            7 => {
                let year: i32 = s.get(..4)?.parse().ok()?;
                let month: u32 = s.get(5..7)?.parse().ok()?;
                if s.as_bytes()[4] != b'-' {
                    return None;
                }
                let start = NaiveDate::from_ymd_opt(year, month, 1)?;
                let end = if month == 12 {
                    NaiveDate::from_ymd_opt(year + 1, 1, 1)?
                } else {
                    NaiveDate::from_ymd_opt(year, month + 1, 1)?
                };
                return Some(Self::from_dates(start, end));
            }
            10 => {
                let start = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
                return Some(Self::from_dates(start, start.succ_opt()?));
            }
            _ => {}
        }
        // A dateTime: split off the zone, then look at the precision of the time part.
        let (local, offset) = split_zone(s)?;
        let (time_fmt, width) = match local.len() {
            16 => ("%Y-%m-%dT%H:%M", Duration::minutes(1)),
            19 => ("%Y-%m-%dT%H:%M:%S", Duration::seconds(1)),
            n if n > 20 && local.as_bytes()[19] == b'.' => {
                ("%Y-%m-%dT%H:%M:%S%.f", Duration::milliseconds(1))
            }
            _ => return None,
        };
        let naive = NaiveDateTime::parse_from_str(local, time_fmt).ok()?;
        let start: DateTime<FixedOffset> = offset.from_local_datetime(&naive).single()?;
        let start_ms = start.timestamp_millis();
        Some(DateRange {
            start: start_ms,
            end: start_ms + width.num_milliseconds(),
        })
    }

    fn from_dates(start: NaiveDate, end: NaiveDate) -> DateRange {
        let ms = |d: NaiveDate| {
            Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
                .timestamp_millis()
        };
        DateRange {
            start: ms(start),
            end: ms(end),
        }
    }

    /// A range for a FHIR Period; an open end is unbounded.
    pub fn period(start: Option<&str>, end: Option<&str>) -> Option<DateRange> {
        let s = start.and_then(DateRange::parse);
        let e = end.and_then(DateRange::parse);
        match (s, e) {
            (None, None) => None,
            (s, e) => Some(DateRange {
                start: s.map_or(i64::MIN, |r| r.start),
                end: e.map_or(i64::MAX, |r| r.end),
            }),
        }
    }

    /// Whether a resource whose value covers `target` matches this search value under
    /// `prefix`, following the R4 search rules for ranges.
    pub fn matches(&self, prefix: Prefix, target: &DateRange) -> bool {
        let contained = target.start >= self.start && target.end <= self.end;
        match prefix {
            Prefix::Eq => contained,
            Prefix::Ne => !contained,
            Prefix::Gt => target.end > self.end,
            Prefix::Lt => target.start < self.start,
            Prefix::Ge => target.end > self.end || contained,
            Prefix::Le => target.start < self.start || contained,
            Prefix::Sa => target.start >= self.end,
            Prefix::Eb => target.end <= self.start,
            Prefix::Ap => {
                // Approximately: overlap with the search range widened by 10% of its
                // distance from now (at least one day), as the spec suggests.
                let now = Utc::now().timestamp_millis();
                let slack = ((now - self.start).abs() / 10).max(86_400_000);
                target.start < self.end.saturating_add(slack)
                    && target.end > self.start.saturating_sub(slack)
            }
        }
    }

    /// The start as an RFC 3339 instant (UTC), for messages and links.
    pub fn start_rfc3339(&self) -> String {
        Utc.timestamp_millis_opt(self.start)
            .single()
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    }
}

fn split_zone(s: &str) -> Option<(&str, FixedOffset)> {
    if let Some(local) = s.strip_suffix('Z') {
        return Some((local, FixedOffset::east_opt(0)?));
    }
    // `+hh:mm` or `-hh:mm` at the end, after the `T`.
    let t = s.find('T')?;
    if s.len() >= t + 6 {
        let tail = &s[s.len() - 6..];
        let sign = match tail.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return Some((s, FixedOffset::east_opt(0)?)),
        };
        if tail.as_bytes()[3] != b':' {
            return None;
        }
        let h: i32 = tail.get(1..3)?.parse().ok()?;
        let m: i32 = tail.get(4..6)?.parse().ok()?;
        if h > 14 || m > 59 {
            return None;
        }
        return Some((
            &s[..s.len() - 6],
            FixedOffset::east_opt(sign * (h * 3600 + m * 60))?,
        ));
    }
    Some((s, FixedOffset::east_opt(0)?))
}

/// Today's date as FHIR `date` in UTC, a helper for the many "since/before today" checks.
pub fn today_utc() -> NaiveDate {
    let now = Utc::now();
    NaiveDate::from_ymd_opt(now.year(), now.month(), now.day()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(split_prefix("ge2024"), (Prefix::Ge, "2024"));
        assert_eq!(split_prefix("2024"), (Prefix::Eq, "2024"));
        assert_eq!(split_prefix("eb2024-01-01"), (Prefix::Eb, "2024-01-01"));
        assert_eq!(split_prefix("x"), (Prefix::Eq, "x"));
        assert_eq!(split_prefix(""), (Prefix::Eq, ""));
    }

    #[test]
    fn or_lists_and_escapes() {
        assert_eq!(split_or("a,b"), vec!["a", "b"]);
        assert_eq!(split_or(r"a\,b,c"), vec!["a,b", "c"]);
        assert_eq!(split_or(",,a,"), vec!["a"]);
        assert_eq!(split_or(r"x\|y"), vec!["x|y"]);
    }

    #[test]
    fn tokens() {
        assert_eq!(
            token("http://loinc.org|1234-5"),
            (Some("http://loinc.org"), "1234-5")
        );
        assert_eq!(token("1234-5"), (None, "1234-5"));
        assert_eq!(token("|x"), (Some(""), "x"));
        assert_eq!(token("s|"), (Some("s"), ""));
    }

    #[test]
    fn date_precisions() {
        let y = DateRange::parse("2024").unwrap();
        let m = DateRange::parse("2024-02").unwrap();
        let d = DateRange::parse("2024-02-29").unwrap();
        let t = DateRange::parse("2024-02-29T10:00:00Z").unwrap();
        let tz = DateRange::parse("2024-02-29T12:00:00+02:00").unwrap();
        let ms = DateRange::parse("2024-02-29T10:00:00.123Z").unwrap();
        let mins = DateRange::parse("2024-02-29T10:00Z").unwrap();
        assert_eq!(y.end - y.start, 366 * 86_400_000);
        assert_eq!(m.end - m.start, 29 * 86_400_000);
        assert_eq!(d.end - d.start, 86_400_000);
        assert_eq!(t, tz);
        assert_eq!(t.end - t.start, 1000);
        assert_eq!(ms.start, t.start + 123);
        assert_eq!(mins.end - mins.start, 60_000);
        assert!(d.start <= t.start && t.end <= d.end);
        let naive = DateRange::parse("2024-02-29T10:00:00").unwrap();
        assert_eq!(naive, t);
    }

    #[test]
    fn bad_dates() {
        for bad in [
            "",
            "20",
            "2024-13",
            "2024-02-30",
            "2024/01/01",
            "yesterday",
            "2024-01-01T25:00:00Z",
            "2024-01-01T10:00:00+99:00",
        ] {
            assert!(DateRange::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn prefix_semantics() {
        let day = DateRange::parse("2024-05-01").unwrap();
        let inside = DateRange::parse("2024-05-01T10:30:00Z").unwrap();
        let before = DateRange::parse("2024-04-30T23:59:59Z").unwrap();
        let after = DateRange::parse("2024-05-02T00:00:00Z").unwrap();
        assert!(day.matches(Prefix::Eq, &inside));
        assert!(!day.matches(Prefix::Eq, &after));
        assert!(day.matches(Prefix::Ne, &after));
        assert!(day.matches(Prefix::Ge, &inside));
        assert!(day.matches(Prefix::Ge, &after));
        assert!(!day.matches(Prefix::Ge, &before));
        assert!(day.matches(Prefix::Gt, &after));
        assert!(!day.matches(Prefix::Gt, &inside));
        assert!(day.matches(Prefix::Lt, &before));
        assert!(!day.matches(Prefix::Lt, &inside));
        assert!(day.matches(Prefix::Le, &inside));
        assert!(day.matches(Prefix::Sa, &after));
        assert!(day.matches(Prefix::Eb, &before));
        assert!(!day.matches(Prefix::Eb, &inside));
    }

    #[test]
    fn periods() {
        let p = DateRange::period(Some("2024-01-01"), None).unwrap();
        assert_eq!(p.end, i64::MAX);
        assert!(DateRange::period(None, None).is_none());
    }
}
