//! Trend charts drawn on the server as SVG: one series of numbers over time, the
//! reference range as a band, values outside it marked. Each chart is an `img` with a
//! `<title>` and a `<desc>` that says what it shows in words; the numbers themselves
//! are in the table the page puts beside it. Colours live in the stylesheet (no inline
//! styles: the CSP forbids them).

use maud::{Markup, html};

use super::i18n::{Lang, M};

/// A reference range: either bound may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Range {
    pub low: Option<f64>,
    pub high: Option<f64>,
}

impl Range {
    /// Reads the record view's range text: `3.5–5.0 mmol/L`, `≥ 60 mL/min`, `≤ 200`.
    pub fn parse(text: &str) -> Option<Range> {
        let number = |s: &str| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
        };
        if let Some(rest) = text.strip_prefix('≥') {
            return Some(Range {
                low: number(rest),
                high: None,
            });
        }
        if let Some(rest) = text.strip_prefix('≤') {
            return Some(Range {
                low: None,
                high: number(rest),
            });
        }
        let (low, high) = text.split_once('–').or_else(|| text.split_once(" - "))?;
        let range = Range {
            low: number(low),
            high: number(high),
        };
        (range.low.is_some() && range.high.is_some()).then_some(range)
    }

    /// Where `value` lies: below, within or above the range.
    pub fn flag(&self, value: f64) -> Flag {
        match (self.low, self.high) {
            (Some(low), _) if value < low => Flag::Low,
            (_, Some(high)) if value > high => Flag::High,
            _ => Flag::Normal,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Low,
    Normal,
    High,
}

impl Flag {
    pub fn text(self, l: Lang) -> &'static str {
        l.t(match self {
            Flag::Low => M::FlagLow,
            Flag::Normal => M::FlagNormal,
            Flag::High => M::FlagHigh,
        })
    }

    pub fn class(self) -> &'static str {
        match self {
            Flag::Low => "flag-low",
            Flag::Normal => "flag-normal",
            Flag::High => "flag-high",
        }
    }
}

/// One point: its date (as shown) and value.
#[derive(Debug, Clone)]
pub struct Point {
    pub label: String,
    pub value: f64,
}

const W: f64 = 640.0;
const H: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

/// The chart of `points` (oldest first), with `range` shaded. `id` makes the
/// `<title>`/`<desc>` ids unique on the page.
pub fn trend(
    l: Lang,
    id: &str,
    title: &str,
    unit: &str,
    points: &[Point],
    range: Option<Range>,
) -> Markup {
    let values = points.iter().map(|p| p.value);
    let mut lo = values.clone().fold(f64::INFINITY, f64::min);
    let mut hi = values.fold(f64::NEG_INFINITY, f64::max);
    if let Some(r) = range {
        for b in [r.low, r.high].into_iter().flatten() {
            lo = lo.min(b);
            hi = hi.max(b);
        }
    }
    if !lo.is_finite() || !hi.is_finite() {
        return html! {};
    }
    let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.02).max(0.5);
    let (lo, hi) = (lo - pad, hi + pad);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |i: usize| {
        if points.len() <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (points.len() - 1) as f64
        }
    };
    let y = |v: f64| TOP + plot_h * (1.0 - (v - lo) / (hi - lo));
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{},{}", fmt(x(i)), fmt(y(p.value))))
        .collect();
    let ticks: Vec<f64> = (0..=4)
        .map(|k| lo + (hi - lo) * f64::from(k) / 4.0)
        .collect();
    let first = points.first().map(|p| p.label.as_str()).unwrap_or_default();
    let last = points.last();
    let out_of_range = range.map_or(0, |r| {
        points
            .iter()
            .filter(|p| r.flag(p.value) != Flag::Normal)
            .count()
    });
    let range_text = range.map(|r| match (r.low, r.high) {
        (Some(a), Some(b)) => l.fill(
            M::ChartRangeBoth,
            &[
                ("low", &l.number(a)),
                ("high", &l.number(b)),
                ("unit", unit),
            ],
        ),
        (Some(a), None) => l.fill(M::ChartRangeLow, &[("low", &l.number(a)), ("unit", unit)]),
        (None, Some(b)) => l.fill(M::ChartRangeHigh, &[("high", &l.number(b)), ("unit", unit)]),
        (None, None) => String::new(),
    });
    let desc = format!(
        "{} {}{}",
        l.fill(
            M::ChartDesc,
            &[
                ("count", &points.len().to_string()),
                ("first", first),
                ("last", last.map(|p| p.label.as_str()).unwrap_or_default()),
                (
                    "latest",
                    &last.map(|p| l.number(p.value)).unwrap_or_default()
                ),
                ("unit", unit),
            ],
        ),
        range_text.as_deref().unwrap_or(""),
        if range.is_some() {
            format!(
                " {}",
                l.fill(M::ChartOutOfRange, &[("count", &out_of_range.to_string())])
            )
        } else {
            String::new()
        }
    );
    let title_id = format!("{id}-title");
    let desc_id = format!("{id}-desc");
    html! {
        // SVG is foreign content: each element needs its end tag (`{}`), since maud's
        // `;` writes none and the parser would nest what follows inside it.
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {W} {H}")) role="img"
            aria-labelledby=(format!("{title_id} {desc_id}")) focusable="false" {
            title id=(title_id) { (title) }
            desc id=(desc_id) { (desc) }
            @if let Some(r) = range {
                @let top = r.high.map_or(TOP, y);
                @let bottom = r.low.map_or(TOP + plot_h, y);
                rect.chart-range x=(fmt(LEFT)) y=(fmt(top)) width=(fmt(plot_w)) height=(fmt((bottom - top).max(0.0))) {}
            }
            @for t in &ticks {
                line.chart-grid x1=(fmt(LEFT)) x2=(fmt(W - RIGHT)) y1=(fmt(y(*t))) y2=(fmt(y(*t))) {}
                text.chart-label x=(fmt(LEFT - 6.0)) y=(fmt(y(*t) + 4.0)) text-anchor="end" { (l.number((t * 10.0).round() / 10.0)) }
            }
            line.chart-axis x1=(fmt(LEFT)) x2=(fmt(LEFT)) y1=(fmt(TOP)) y2=(fmt(TOP + plot_h)) {}
            line.chart-axis x1=(fmt(LEFT)) x2=(fmt(W - RIGHT)) y1=(fmt(TOP + plot_h)) y2=(fmt(TOP + plot_h)) {}
            text.chart-label x=(fmt(LEFT)) y=(fmt(H - 12.0)) text-anchor="start" { (first) }
            @if let Some(p) = last {
                @if points.len() > 1 {
                    text.chart-label x=(fmt(W - RIGHT)) y=(fmt(H - 12.0)) text-anchor="end" { (p.label) }
                }
            }
            @if points.len() > 1 {
                polyline.chart-line points=(line.join(" ")) {}
            }
            @for (i, p) in points.iter().enumerate() {
                @let flag = range.map_or(Flag::Normal, |r| r.flag(p.value));
                circle class=(format!("chart-point {}", flag.class())) cx=(fmt(x(i))) cy=(fmt(y(p.value))) r=(if flag == Flag::Normal { "4" } else { "6" }) {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_from_the_view_text() {
        assert_eq!(
            Range::parse("3.5–5.0 mmol/L"),
            Some(Range {
                low: Some(3.5),
                high: Some(5.0)
            })
        );
        assert_eq!(Range::parse("≥ 60 mL/min").unwrap().low, Some(60.0));
        assert_eq!(Range::parse("≤ 200").unwrap().high, Some(200.0));
        assert_eq!(Range::parse("normal"), None);
        let r = Range::parse("90–120 mmHg").unwrap();
        assert_eq!(r.flag(85.0), Flag::Low);
        assert_eq!(r.flag(100.0), Flag::Normal);
        assert_eq!(r.flag(130.0), Flag::High);
    }

    #[test]
    fn a_chart_has_a_title_a_description_and_a_point_per_value() {
        let points: Vec<Point> = [5.0, 6.0, 9.5]
            .iter()
            .enumerate()
            .map(|(i, v)| Point {
                label: format!("day {i}"),
                value: *v,
            })
            .collect();
        let svg = trend(
            Lang::En,
            "c1",
            "Glucose <b>",
            "mmol/L",
            &points,
            Range::parse("4–7 mmol/L"),
        )
        .into_string();
        assert!(
            svg.contains("<title id=\"c1-title\">Glucose &lt;b&gt;</title>"),
            "{svg}"
        );
        assert!(svg.contains("<desc id=\"c1-desc\">"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 3);
        assert_eq!(svg.matches("</circle>").count(), 3);
        assert_eq!(svg.matches("<line").count(), svg.matches("</line>").count());
        assert!(svg.contains("flag-high"));
        assert!(svg.contains("1 of them outside"), "{svg}");
    }
}
