//! The fault matrix every release must pass, and the crash-safety test.
//!
//! **Matrix** (`writes.rs`, `facade.rs`): every portal write (book, cancel, reschedule,
//! refill, referral, new thread, reply, payment) and the facade's conditional create and
//! `If-Match` update, each under every column of [`columns`]: a failure kind (`status500`,
//! `status503`, `reset`, `malformed_json`, `slow_body`, and latency past the gateway's
//! upstream timeout) aimed three ways by the sandbox's knobs —
//! - `before`: at the write requests of the written type (`POST`/`PUT`/`PATCH`), before the
//!   EHR runs them (nothing is applied);
//! - `after`: at the same requests after the EHR applied them (committed, then the answer
//!   is broken, late or lost);
//! - `type`: at every request on the written type, reads included, at the kind's usual
//!   phase (what an EHR having a bad minute looks like).
//!
//! Each cell (one row, one column) runs the write with an `Idempotency-Key` (the facade:
//! `If-None-Exist` on a client identifier, or `If-Match`) while the fault is on, switches
//! the fault off, reads what changed, and retries with the same key, like a real app.
//! What every cell must show, read from the sandbox's store (never only from statuses):
//! - at most one effect at any time, and exactly one in the end ([`Row::effects`],
//!   [`Row::complete`]);
//! - a first answer that says "it did not happen" only when nothing happened; a success
//!   only with the effect's id ([`Said`]);
//! - the retry's answer is the success, naming the one effect;
//! - every answer arrives, with an error status when it is one, before a client timeout
//!   a little above the gateway's deadline ([`CLIENT_TIMEOUT`]: a bound, not a speed
//!   target);
//! - the affected lists, read through `/api/v1` and `/fhir` as the first requests after
//!   the faults stop, answer 200 with the new state (no poisoned cache).
//!
//! A row runs its cells one after the other against one sandbox and gateway; the rows
//! are separate tests. A failing row lists every failing cell, not just the first.
//!
//! **Promises** (`promises.rs`): every answer that tells the client to "retry with the
//! same Idempotency-Key" is made to happen and then kept.
//!
//! **Crash** (`crash.rs`): the `portico` binary killed with SIGKILL in the middle of a
//! stream of writes, restarted, and every unanswered write retried.

mod crash;
mod facade;
mod promises;
mod writes;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use portico_sandbox::{FailureKind, FaultConfig, FaultPhase};
use serde_json::Value;

use crate::support::{ApiAnswer, TestApp, sandbox};

/// The gateway's whole-request timeout toward the EHR in the matrix.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(500);
/// The gateway's own deadline per request (`portal.deadline_ms`, and
/// `server.request_timeout_ms` for the facade).
pub const DEADLINE: Duration = Duration::from_millis(4000);
/// How long the test client waits for any answer: a little above [`DEADLINE`].
pub const CLIENT_TIMEOUT: Duration = Duration::from_millis(5500);
/// The added latency of the latency column: past [`UPSTREAM_TIMEOUT`].
pub const LATE: Duration = Duration::from_millis(1200);
/// How long a `slow_body` answer trickles: just above [`UPSTREAM_TIMEOUT`].
pub const SLOW_BODY: Duration = Duration::from_millis(800);

/// What goes wrong in a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Status500,
    Status503,
    Reset,
    MalformedJson,
    SlowBody,
    /// Latency past the gateway's upstream timeout.
    Latency,
}

/// Where a column's fault is aimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aim {
    /// The write requests of the written type, before the EHR runs them.
    Before,
    /// The same requests, after the EHR applied them.
    After,
    /// Every request on the written type, reads included, at the kind's usual phase.
    Type,
}

/// One column of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub kind: Kind,
    pub aim: Aim,
}

impl Column {
    pub fn name(&self) -> String {
        let kind = match self.kind {
            Kind::Status500 => "status500",
            Kind::Status503 => "status503",
            Kind::Reset => "reset",
            Kind::MalformedJson => "malformed_json",
            Kind::SlowBody => "slow_body",
            Kind::Latency => "latency",
        };
        let aim = match self.aim {
            Aim::Before => "before",
            Aim::After => "after",
            Aim::Type => "type",
        };
        format!("{kind}/{aim}")
    }

    /// The sandbox's knobs for this column, aimed at `path` (e.g. `/fhir/Appointment`).
    pub fn faults(&self, path: &str) -> FaultConfig {
        let (methods, phase) = match self.aim {
            Aim::Before => (write_methods(), Some(FaultPhase::Before)),
            Aim::After => (write_methods(), Some(FaultPhase::After)),
            Aim::Type => (Vec::new(), None),
        };
        let mut config = FaultConfig {
            path_filter: Some(path.to_owned()),
            methods,
            phase,
            slow_body_ms: millis(SLOW_BODY),
            ..FaultConfig::default()
        };
        match self.kind {
            Kind::Latency => config.latency_ms = millis(LATE),
            kind => {
                config.failure_rate = 1.0;
                config.failure_kind = match kind {
                    Kind::Status500 => FailureKind::Status500,
                    Kind::Status503 => FailureKind::Status503,
                    Kind::Reset => FailureKind::Reset,
                    Kind::MalformedJson => FailureKind::MalformedJson,
                    _ => FailureKind::SlowBody,
                };
            }
        }
        config
    }
}

fn write_methods() -> Vec<String> {
    ["POST", "PUT", "PATCH"].map(str::to_owned).to_vec()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Every column: each kind, aimed before, after and type-wide.
pub fn columns() -> Vec<Column> {
    let kinds = [
        Kind::Status500,
        Kind::Status503,
        Kind::Reset,
        Kind::MalformedJson,
        Kind::SlowBody,
        Kind::Latency,
    ];
    kinds
        .into_iter()
        .flat_map(|kind| [Aim::Before, Aim::After, Aim::Type].map(|aim| Column { kind, aim }))
        .collect()
}

/// A gateway for the matrix: small timeouts, the cache on (the reads after the faults
/// must not be served a poisoned entry), the breaker out of the way (it has its own
/// tests; here every cell must reach the EHR once the faults stop).
pub async fn matrix_app() -> TestApp {
    TestApp::spawn_with(sandbox().await, |config, upstream| {
        upstream.request_timeout = UPSTREAM_TIMEOUT;
        config.portal.deadline_ms = millis(DEADLINE);
        config.server.request_timeout_ms = millis(DEADLINE);
        config.resilience.breaker_failure_threshold = 1_000_000;
    })
    .await
}

/// A request's answer as the test client saw it, or its absence.
#[derive(Debug)]
pub struct Sent {
    /// `None` when the client gave up after [`CLIENT_TIMEOUT`] (or the connection
    /// broke): the request outlived its deadline.
    pub answer: Option<ApiAnswer>,
    pub elapsed: Duration,
    pub error: Option<String>,
}

impl Sent {
    pub fn status(&self) -> u16 {
        self.answer.as_ref().map_or(0, |a| a.status.as_u16())
    }

    pub fn body(&self) -> &Value {
        self.answer.as_ref().map_or(&Value::Null, |a| &a.body)
    }

    /// A short description for failure reports.
    pub fn describe(&self) -> String {
        match &self.answer {
            None => format!(
                "no answer after {:?} ({})",
                self.elapsed,
                self.error.as_deref().unwrap_or("")
            ),
            Some(a) => {
                let code = a.body["code"]
                    .as_str()
                    .or_else(|| a.body["issue"][0]["code"].as_str())
                    .unwrap_or("");
                format!("{} {code}", a.status.as_u16())
            }
        }
    }
}

/// Sends `request` with [`CLIENT_TIMEOUT`] and reads the whole answer.
pub async fn send(request: reqwest::RequestBuilder) -> Sent {
    let started = Instant::now();
    let result = async {
        let response = request.timeout(CLIENT_TIMEOUT).send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        Ok::<_, reqwest::Error>(ApiAnswer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }
    .await;
    let elapsed = started.elapsed();
    match result {
        Ok(answer) => Sent {
            answer: Some(answer),
            elapsed,
            error: None,
        },
        Err(e) => Sent {
            answer: None,
            elapsed,
            error: Some(e.to_string()),
        },
    }
}

/// A portal write: `POST /api/v1{path}` with a bearer token and an `Idempotency-Key`.
pub async fn api_write(app: &TestApp, token: &str, path: &str, body: &Value, key: &str) -> Sent {
    send(
        app.http
            .post(app.url(&format!("/api/v1{path}")))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(body),
    )
    .await
}

/// `GET` of a gateway path (`/api/v1/...` or `/fhir/...`) with a bearer token.
pub async fn get(app: &TestApp, token: &str, path: &str) -> Sent {
    send(app.http.get(app.url(path)).bearer_auth(token)).await
}

/// Waits until the sandbox serves no request, so that a write answered late (or whose
/// client went away) has landed or died before the store is read.
pub async fn settle(app: &TestApp) {
    let until = Instant::now() + Duration::from_secs(5);
    while app.sandbox.faults().in_flight() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What an answer told the client about its write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// 2xx: it happened.
    Done,
    /// It did not happen (a refusal, "the EHR failed", "nothing changed", ...).
    NotDone,
    /// Whether it happened is not known yet; a retry with the same key will tell
    /// (`outcome_unknown`, a timeout, `message_not_sent` with the message's fate unknown,
    /// `reschedule_incomplete`).
    Unknown,
    /// Part of it happened, and the answer says which (the row checks the claim).
    Partial,
    /// No answer.
    Nothing,
}

/// How a portal answer reads (see [`Said`]).
pub fn said(sent: &Sent) -> Said {
    let Some(answer) = &sent.answer else {
        return Said::Nothing;
    };
    if answer.status.is_success() {
        return Said::Done;
    }
    let details = &answer.body["details"];
    match answer.code() {
        "outcome_unknown"
        | "deadline_exceeded"
        | "upstream_timeout"
        | "reschedule_incomplete"
        | "payment_record_unknown" => Said::Unknown,
        "message_not_sent" if details["message_sent"] == "unknown" => Said::Unknown,
        _ if answer.status == 504 => Said::Unknown,
        _ => Said::NotDone,
    }
}

/// The failures of one row, cell by cell.
#[derive(Debug, Default)]
pub struct Report {
    row: String,
    failures: Vec<(String, String)>,
    cells: usize,
}

impl Report {
    pub fn new(row: &str) -> Report {
        Report {
            row: row.to_owned(),
            ..Report::default()
        }
    }

    pub fn cell(&mut self) {
        self.cells += 1;
    }

    pub fn fail(&mut self, column: &Column, problem: impl Into<String>) {
        self.failures.push((column.name(), problem.into()));
    }

    /// Panics with every failing cell, when there is one.
    pub fn finish(self) {
        if self.failures.is_empty() {
            return;
        }
        let mut text = format!(
            "fault matrix row `{}`: {} problem(s) in {} cells\n",
            self.row,
            self.failures.len(),
            self.cells
        );
        for (column, problem) in &self.failures {
            let _ = writeln!(text, "  [{column}] {problem}");
        }
        panic!("{text}");
    }
}

/// One write of a row, prepared for one cell.
#[derive(Debug, Clone)]
pub struct Write {
    /// The gateway path the write goes to.
    pub path: String,
    pub body: Value,
    /// The `Idempotency-Key` (the facade: the client identifier's value).
    pub key: String,
    /// What the row needs to find the write's effect (a slot id, a text, ...).
    pub target: Value,
}

/// A row of the matrix: one kind of write.
pub trait Row {
    /// The row's name in reports.
    fn name(&self) -> &'static str;

    /// The path filter that aims the faults at the written type.
    fn aim(&self) -> &'static str;

    /// Makes what cell `n`'s write needs, without faults (and reads the affected lists
    /// once, so that they are cached when the fault comes).
    async fn prepare(&mut self, app: &TestApp, n: usize) -> Write;

    /// Sends the write (the first attempt and the retry are the same request).
    async fn send(&self, app: &TestApp, write: &Write) -> Sent;

    /// The ids of the write's effect in the EHR now, read from the sandbox's store; an
    /// error when the store shows something that must never be (a duplicate, a write
    /// applied twice, half of a multi-step write at rest).
    fn effects(&self, app: &TestApp, write: &Write) -> Result<Vec<String>, String>;

    /// The effect's id as a successful answer names it.
    fn answered(&self, body: &Value) -> Option<String>;

    /// Checks of the final state beyond the effect's count (e.g. the balance lowered
    /// once); after the retry.
    fn complete(&self, _app: &TestApp, _write: &Write) -> Result<(), String> {
        Ok(())
    }

    /// Reads the affected lists through the gateway: each must answer 200 and show
    /// `effects`. The problems found.
    async fn reads(&self, app: &TestApp, write: &Write, effects: &[String]) -> Vec<String>;

    /// How the row reads an answer (see [`said`]).
    fn said(&self, sent: &Sent) -> Said {
        said(sent)
    }

    /// Checks what a first answer claimed against the EHR, beyond [`Said`]: the
    /// problems found.
    fn claims(&self, _app: &TestApp, _write: &Write, _first: &Sent) -> Vec<String> {
        Vec::new()
    }

    /// Whether an answer that says "it did not happen" while it did is a failure. The
    /// portal promises it never is; the facade's FHIR clients read a 5xx as "unknown".
    fn strict(&self) -> bool {
        true
    }
}

/// Runs every column of the row `make` builds for a fresh gateway, one cell after the
/// other, and fails with every problem.
pub async fn run_row<R: Row>(make: impl FnOnce(&TestApp) -> R) {
    let app = matrix_app().await;
    let mut row = make(&app);
    let mut report = Report::new(row.name());
    for (n, column) in columns().into_iter().enumerate() {
        report.cell();
        run_cell(&app, &mut row, n, column, &mut report).await;
    }
    report.finish();
}

async fn run_cell(
    app: &TestApp,
    row: &mut impl Row,
    n: usize,
    column: Column,
    report: &mut Report,
) {
    let write = row.prepare(app, n).await;
    match row.effects(app, &write) {
        Ok(e) if e.is_empty() => {}
        other => {
            report.fail(&column, format!("before the write: {other:?}"));
            return;
        }
    }
    let faults = app.sandbox.faults();
    faults
        .set(column.faults(row.aim()))
        .expect("fault configuration");
    let first = row.send(app, &write).await;
    faults.clear();
    settle(app).await;

    // Every answer arrives before the client gives up, and a failure is an error status.
    if first.answer.is_none() {
        report.fail(
            &column,
            format!("first attempt outlived its deadline: {}", first.describe()),
        );
    }
    let after_first = match row.effects(app, &write) {
        Ok(e) => e,
        Err(problem) => {
            report.fail(&column, format!("after the first attempt: {problem}"));
            return;
        }
    };
    if after_first.len() > 1 {
        report.fail(
            &column,
            format!("{} effects after the first attempt", after_first.len()),
        );
    }
    let told = row.said(&first);
    for problem in row.claims(app, &write, &first) {
        report.fail(&column, format!("{}: {problem}", first.describe()));
    }
    match told {
        Said::Done => {
            if after_first.len() != 1 {
                report.fail(
                    &column,
                    format!(
                        "a success ({}) with {} effects",
                        first.describe(),
                        after_first.len()
                    ),
                );
            } else if row.answered(first.body()).as_deref() != Some(after_first[0].as_str()) {
                report.fail(
                    &column,
                    format!(
                        "the success names {:?}, the EHR holds {:?}",
                        row.answered(first.body()),
                        after_first
                    ),
                );
            }
        }
        Said::NotDone if row.strict() && !after_first.is_empty() => report.fail(
            &column,
            format!(
                "told it did not happen ({}: {}) but the EHR applied it",
                first.describe(),
                first.body()["detail"].as_str().unwrap_or_default()
            ),
        ),
        _ => {}
    }

    // No poisoned cache: the first reads after the faults show the EHR as it is.
    for problem in row.reads(app, &write, &after_first).await {
        report.fail(
            &column,
            format!("read after the faults ({}): {problem}", first.describe()),
        );
    }

    // The client retries with the same key; the answer is the success, naming the one
    // effect.
    let retry = row.send(app, &write).await;
    let final_effects = match row.effects(app, &write) {
        Ok(e) => e,
        Err(problem) => {
            report.fail(
                &column,
                format!("after the retry ({}): {problem}", retry.describe()),
            );
            return;
        }
    };
    if !retry.answer.as_ref().is_some_and(|a| a.status.is_success()) {
        report.fail(
            &column,
            format!(
                "the retry after the faults is not a success: {} {} (first: {})",
                retry.describe(),
                retry.body(),
                first.describe()
            ),
        );
    } else if final_effects.len() != 1 {
        report.fail(
            &column,
            format!("{} effects after the retry", final_effects.len()),
        );
    } else if row.answered(retry.body()).as_deref() != Some(final_effects[0].as_str()) {
        report.fail(
            &column,
            format!(
                "the retry names {:?}, the EHR holds {final_effects:?}",
                row.answered(retry.body())
            ),
        );
    } else if told == Said::Done && row.answered(first.body()) != row.answered(retry.body()) {
        report.fail(
            &column,
            "the retry names another resource than the first success",
        );
    }
    if let Err(problem) = row.complete(app, &write) {
        report.fail(&column, format!("final state: {problem}"));
    }
    for problem in row.reads(app, &write, &final_effects).await {
        report.fail(&column, format!("read after the retry: {problem}"));
    }
}

/// Whether a list answer (any JSON) mentions `id` as a string value somewhere.
pub fn mentions(body: &Value, id: &str) -> bool {
    match body {
        Value::String(s) => s == id || s.ends_with(&format!("/{id}")),
        Value::Array(items) => items.iter().any(|v| mentions(v, id)),
        Value::Object(map) => map.values().any(|v| mentions(v, id)),
        _ => false,
    }
}

/// Reads `path` and checks it answers 200 mentioning each of `ids`.
pub async fn expect_listed(app: &TestApp, token: &str, path: &str, ids: &[String]) -> Vec<String> {
    let answer = get(app, token, path).await;
    if answer.status() != 200 {
        return vec![format!("{path}: {}", answer.describe())];
    }
    ids.iter()
        .filter(|id| !mentions(answer.body(), id))
        .map(|id| format!("{path} does not show {id}"))
        .collect()
}
