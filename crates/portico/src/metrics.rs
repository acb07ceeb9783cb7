//! `GET /metrics`: the gateway's counters in the Prometheus text exposition format
//! (version 0.0.4).
//!
//! Several sources feed it. HTTP traffic is recorded here, by a middleware that runs after
//! routing: requests are labelled with the *matched route template*
//! (`/fhir/{resource_type}/{id}`), never the raw path, so no id or other patient data can
//! become a label and the label set stays bounded; requests that matched no route share
//! the label `unmatched`. The upstream and cache figures are snapshots taken at scrape
//! time from the resilience layer ([`ResilienceStats`]), the read cache
//! ([`CacheStats`]) and the audit trail ([`AuditStats`]), which keep their own atomic
//! counters.
//!
//! The encoder is deliberately small: counters, gauges and one histogram family with
//! fixed buckets. Label values are escaped as the format requires (`\\`, `\"`, `\n`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use portico_cache::CacheStats;
use portico_upstream::ResilienceStats;

use crate::audit::AuditStats;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the request latency histogram's buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The route label of requests that matched no route.
pub(crate) const UNMATCHED: &str = "unmatched";

/// HTTP request counters and latency histograms, shared by every request.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    inner: Mutex<HttpInner>,
}

#[derive(Debug, Default)]
struct HttpInner {
    /// (route, method, status) → requests.
    requests: BTreeMap<(String, String, u16), u64>,
    /// route → latency histogram.
    latency: BTreeMap<String, Histogram>,
}

/// A histogram over [`LATENCY_BUCKETS`]; `buckets[i]` counts observations in bucket `i`
/// alone (made cumulative when encoded), the last slot being `+Inf`.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

impl HttpMetrics {
    /// Records one served request.
    pub fn record(&self, route: &str, method: &str, status: u16, latency: Duration) {
        // A poisoned lock only means another request panicked mid-update of plain
        // counters; the figures are still usable.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner
            .requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
        inner
            .latency
            .entry(route.to_owned())
            .or_default()
            .observe(latency.as_secs_f64());
    }

    fn encode(&self, out: &mut Encoder) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        out.family(
            "portico_http_requests_total",
            "HTTP requests served, by matched route template, method and status.",
            "counter",
        );
        for ((route, method, status), n) in &inner.requests {
            let status = status.to_string();
            out.sample(
                "portico_http_requests_total",
                &[("route", route), ("method", method), ("status", &status)],
                *n as f64,
            );
        }
        let name = "portico_http_request_duration_seconds";
        out.family(
            name,
            "Time to serve an HTTP request, by matched route template.",
            "histogram",
        );
        for (route, h) in &inner.latency {
            let mut cumulative = 0;
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n;
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |b| format_float(*b));
                out.sample(
                    &format!("{name}_bucket"),
                    &[("route", route), ("le", &le)],
                    cumulative as f64,
                );
            }
            out.sample(&format!("{name}_sum"), &[("route", route)], h.sum);
            out.sample(
                &format!("{name}_count"),
                &[("route", route)],
                h.count as f64,
            );
        }
    }
}

/// A writer of the text exposition format.
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Starts a metric family with its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_float(value));
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, help: &str, kind: &str, value: f64) {
        self.family(name, help, kind);
        self.sample(name, &[], value);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

/// Renders every metric family.
pub fn render(
    http: &HttpMetrics,
    upstream: &ResilienceStats,
    cache: &CacheStats,
    audit: &AuditStats,
) -> String {
    let mut out = Encoder::new();
    http.encode(&mut out);

    out.single(
        "portico_upstream_requests_total",
        "Requests to the EHR through the resilience layer (retries not included).",
        "counter",
        upstream.requests as f64,
    );
    let name = "portico_upstream_retries_total";
    out.family(
        name,
        "Retries of idempotent reads: sent, or denied by the retry budget.",
        "counter",
    );
    out.sample(name, &[("outcome", "sent")], upstream.retries as f64);
    out.sample(
        name,
        &[("outcome", "denied")],
        upstream.retries_denied as f64,
    );
    let name = "portico_upstream_rejections_total";
    out.family(
        name,
        "Upstream attempts refused without calling the EHR, by reason.",
        "counter",
    );
    out.sample(
        name,
        &[("reason", "circuit_open")],
        upstream.breaker_rejections as f64,
    );
    out.sample(
        name,
        &[("reason", "overloaded")],
        upstream.overloaded as f64,
    );
    out.sample(
        name,
        &[("reason", "rate_limited")],
        upstream.rate_limit_rejections as f64,
    );
    out.single(
        "portico_upstream_malformed_answers_total",
        "EHR answers that were not what was asked (cut short, not JSON, another resource type): refused, never cached.",
        "counter",
        upstream.malformed_answers as f64,
    );
    out.single(
        "portico_upstream_breaker_state",
        "The EHR circuit breaker: 0 closed, 1 half-open, 2 open.",
        "gauge",
        f64::from(upstream.breaker_state.as_gauge()),
    );

    let counters = [
        (
            "hits",
            "Cacheable reads served from a fresh entry.",
            cache.hits,
        ),
        (
            "misses",
            "Cacheable reads not served from a fresh entry.",
            cache.misses,
        ),
        (
            "stale_serves",
            "Expired entries served because the EHR failed.",
            cache.stale_serves,
        ),
        (
            "evictions",
            "Entries evicted to stay under the byte bound.",
            cache.evictions,
        ),
        (
            "single_flight_joins",
            "Misses that waited for an identical in-flight fetch instead of calling.",
            cache.single_flight_joins,
        ),
        ("fetches", "Upstream calls made for misses.", cache.fetches),
        (
            "revalidations",
            "Conditional reads answered 304 Not Modified.",
            cache.revalidations,
        ),
        ("bypasses", "Reads passed through uncached.", cache.bypasses),
        (
            "write_invalidations",
            "Writes that invalidated entries.",
            cache.write_invalidations,
        ),
        (
            "shared_failures",
            "Calls to the shared generation store (Redis) that failed.",
            cache.shared_failures,
        ),
    ];
    for (what, help, value) in counters {
        out.single(
            &format!("portico_cache_{what}_total"),
            help,
            "counter",
            value as f64,
        );
    }
    out.single(
        "portico_cache_bytes",
        "Current weight of the cache entries, in bytes (approximate).",
        "gauge",
        cache.bytes as f64,
    );
    out.single(
        "portico_cache_entries",
        "Current number of cache entries (approximate).",
        "gauge",
        cache.entries as f64,
    );
    if let Some(mirrored) = cache.shared_mirrored {
        out.single(
            "portico_cache_generations_mirrored",
            "1 while this replica checks cached reads against its mirror of the shared cache generations; 0 while it asks Redis for each read.",
            "gauge",
            f64::from(u8::from(mirrored)),
        );
    }
    encode_audit(&mut out, audit);
    out.finish()
}

fn encode_audit(out: &mut Encoder, audit: &AuditStats) {
    let counters = [
        (
            "records",
            "Audit records written to every configured local sink.",
            audit.records_written,
        ),
        (
            "batches",
            "Batches the audit writer wrote (one write per sink each).",
            audit.batches,
        ),
        (
            "fsyncs",
            "fdatasync calls made by the audit writer.",
            audit.fsyncs,
        ),
        (
            "failures",
            "Audit records that could not be written (refused, or lost with on_failure = continue).",
            audit.failures,
        ),
        (
            "rotations",
            "Rotations of the audit log file.",
            audit.rotations,
        ),
        (
            "files_deleted",
            "Rotated audit files deleted to stay under audit.max_total_bytes.",
            audit.files_deleted,
        ),
        (
            "spool_overflows",
            "AuditEvents that did not fit in the spool (audit.fhir.max_spool_bytes).",
            audit.spool_overflows,
        ),
        (
            "fhir_delivered",
            "AuditEvents the audit repository accepted.",
            audit.fhir_delivered,
        ),
        (
            "fhir_failed_attempts",
            "AuditEvent POSTs that failed and are retried.",
            audit.fhir_failed_attempts,
        ),
        (
            "fhir_rejected",
            "AuditEvents the audit repository refused for good (kept in the spool's rejected.ndjson).",
            audit.fhir_rejected,
        ),
    ];
    for (what, help, value) in counters {
        out.single(
            &format!("portico_audit_{what}_total"),
            help,
            "counter",
            value as f64,
        );
    }
    out.single(
        "portico_audit_queue_depth",
        "Audit records waiting for the writer.",
        "gauge",
        audit.queue_depth as f64,
    );
    out.single(
        "portico_audit_spool_bytes",
        "Bytes of AuditEvents spooled and not yet delivered.",
        "gauge",
        audit.spool_bytes as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_upstream::BreakerState;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn samples_are_encoded_with_escaped_labels() {
        let mut e = Encoder::new();
        e.family("x_total", "A help\\text\nline.", "counter");
        e.sample("x_total", &[("a", "q\"uo\\te\nnl"), ("b", "2")], 3.0);
        e.sample("x_total", &[], 0.5);
        assert_eq!(
            lines(&e.finish()),
            [
                "# HELP x_total A help\\\\text\\nline.",
                "# TYPE x_total counter",
                "x_total{a=\"q\\\"uo\\\\te\\nnl\",b=\"2\"} 3",
                "x_total 0.5",
            ]
        );
    }

    #[test]
    fn special_floats_use_the_format_spelling() {
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(42.0), "42");
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let http = HttpMetrics::default();
        let route = "/fhir/{resource_type}/{id}";
        http.record(route, "GET", 200, Duration::from_millis(3));
        http.record(route, "GET", 200, Duration::from_millis(70));
        http.record(route, "GET", 404, Duration::from_secs(20));
        let mut e = Encoder::new();
        http.encode(&mut e);
        let text = e.finish();
        let l = lines(&text);
        let has = |s: &str| assert!(l.contains(&s), "missing {s:?} in\n{text}");
        has(
            "portico_http_requests_total{route=\"/fhir/{resource_type}/{id}\",method=\"GET\",status=\"200\"} 2",
        );
        has(
            "portico_http_requests_total{route=\"/fhir/{resource_type}/{id}\",method=\"GET\",status=\"404\"} 1",
        );
        let bucket = |le: &str, n: u64| {
            format!(
                "portico_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {n}"
            )
        };
        has(&bucket("0.005", 1));
        has(&bucket("0.05", 1));
        has(&bucket("0.1", 2));
        has(&bucket("10", 2));
        has(&bucket("+Inf", 3));
        has(&format!(
            "portico_http_request_duration_seconds_count{{route=\"{route}\"}} 3"
        ));
        let sum = l
            .iter()
            .find(|s| s.starts_with("portico_http_request_duration_seconds_sum"))
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert!((sum - 20.073).abs() < 1e-9, "{sum}");
        // Every family is declared once, before its samples.
        assert_eq!(
            l.iter()
                .filter(|s| **s == "# TYPE portico_http_request_duration_seconds histogram")
                .count(),
            1
        );
    }

    #[test]
    fn upstream_and_cache_snapshots_are_rendered() {
        let upstream = ResilienceStats {
            requests: 7,
            retries: 2,
            retries_denied: 1,
            breaker_rejections: 4,
            overloaded: 0,
            rate_limit_rejections: 3,
            malformed_answers: 2,
            breaker_state: BreakerState::Open,
        };
        let cache = CacheStats {
            hits: 11,
            misses: 5,
            single_flight_joins: 9,
            stale_serves: 1,
            shared_failures: 0,
            evictions: 6,
            bytes: 2048,
            entries: 12,
            shared_mirrored: Some(true),
            ..CacheStats::default()
        };
        let audit = AuditStats {
            records_written: 40,
            batches: 9,
            fsyncs: 3,
            failures: 2,
            queue_depth: 5,
            spool_bytes: 1234,
            ..AuditStats::default()
        };
        let text = render(&HttpMetrics::default(), &upstream, &cache, &audit);
        let l = lines(&text);
        for expected in [
            "portico_upstream_requests_total 7",
            "portico_upstream_retries_total{outcome=\"sent\"} 2",
            "portico_upstream_retries_total{outcome=\"denied\"} 1",
            "portico_upstream_rejections_total{reason=\"circuit_open\"} 4",
            "portico_upstream_rejections_total{reason=\"rate_limited\"} 3",
            "portico_upstream_breaker_state 2",
            "# TYPE portico_upstream_breaker_state gauge",
            "portico_cache_hits_total 11",
            "portico_cache_misses_total 5",
            "portico_cache_single_flight_joins_total 9",
            "portico_cache_stale_serves_total 1",
            "portico_cache_evictions_total 6",
            "portico_cache_bytes 2048",
            "# TYPE portico_cache_bytes gauge",
            "portico_cache_entries 12",
            "portico_cache_generations_mirrored 1",
            "# TYPE portico_cache_generations_mirrored gauge",
            "portico_audit_records_total 40",
            "portico_audit_batches_total 9",
            "portico_audit_fsyncs_total 3",
            "portico_audit_failures_total 2",
            "# TYPE portico_audit_failures_total counter",
            "portico_audit_queue_depth 5",
            "# TYPE portico_audit_queue_depth gauge",
            "portico_audit_spool_bytes 1234",
            "portico_audit_fhir_delivered_total 0",
        ] {
            assert!(l.contains(&expected), "missing {expected:?} in\n{text}");
        }
        // Every sample line belongs to a family declared above it.
        let mut declared = Vec::new();
        for line in &l {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    declared.iter().any(|d| name == d
                        || name
                            .strip_prefix(d.as_str())
                            .is_some_and(|s| { ["_bucket", "_sum", "_count"].contains(&s) })),
                    "{name} has no family"
                );
            }
        }
    }
}
