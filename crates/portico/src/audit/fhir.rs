//! The `fhir` sink: each record as a FHIR R4 `AuditEvent` (IHE Basic Audit Log Patterns,
//! RESTful activity), spooled on local disk by the writer task and POSTed by one delivery
//! task to `<base_url>/AuditEvent`, in order, one at a time, retried with exponential
//! backoff until the repository answers 2xx (see `spool.rs` for what is kept where).
//!
//! The mapping ([`audit_event`]):
//! - `type`: `audit-event-type|rest`; `subtype`: the FHIR interaction
//!   (`restful-interaction|read`, `search`, `create`, …); `action`: C, R, U, D, or E for
//!   searches; `recorded`: the record's time;
//! - `outcome`: `0` when allowed and the EHR answered below 400 (or not yet: a write's
//!   attempt record, whose `outcomeDesc` says so), `4` when denied or the EHR answered
//!   4xx, `8` when the EHR failed (5xx); `outcomeDesc` names the denial reason or status;
//! - `agent`: the subject of the token (`requestor: true`, by identifier; "unauthenticated"
//!   when there was none); for a proxy, the `RelatedPerson` its access to each patient
//!   comes from (`requestor: true`, `policy` naming the access level); and, when known,
//!   the client application (DICOM "Source Role ID", `requestor: false`);
//! - `source.observer`: the gateway instance (`[audit] instance`);
//! - `entity`: each patient of the principal's compartment (`Patient/<id>`, role
//!   Patient), the resource (`Type/id`, or the type's name for searches, with the EHR's
//!   status, the write phase and the entries removed by verification as details), and
//!   the request id (BALP `XrequestId`).
//!
//! Like the JSON line, an event carries ids but no resource bodies, names or tokens.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portico_access::Interaction;
use portico_access::audit::{AuditRecord, Decision, Phase};
use portico_upstream::{SecretString, TokenProvider};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::Counters;
use super::config::{FhirAuthKind, FhirSinkConfig};
use super::spool::{SpoolReader, Spooled};

const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const BALP_ENTITY_TYPE: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";

/// How many spooled events one read takes.
const READ_BATCH: usize = 64;
/// How often an idle delivery task looks at the spool even without a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(5);

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}

/// The AuditEvent for `record`, observed by `instance`.
pub(crate) fn audit_event(record: &AuditRecord, instance: &str) -> Value {
    let interaction = record.interaction.as_str();
    let action = match record.interaction {
        Interaction::Read | Interaction::Vread | Interaction::History => "R",
        Interaction::Search => "E",
        Interaction::Create => "C",
        Interaction::Update | Interaction::Patch => "U",
        Interaction::Delete => "D",
    };
    let recorded = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(
        i64::try_from(record.timestamp_ms).unwrap_or(i64::MAX),
    )
    .unwrap_or_default()
    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
    .to_string();
    let (outcome, outcome_desc) = match (record.decision, record.upstream_status) {
        (Decision::Denied, _) => (
            "4",
            match record.reason {
                Some(reason) => format!("denied: {}", reason.as_str()),
                None => "denied".to_owned(),
            },
        ),
        (Decision::Allowed, Some(status)) if status >= 500 => {
            ("8", format!("the EHR answered {status}"))
        }
        (Decision::Allowed, Some(status)) if status >= 400 => {
            ("4", format!("the EHR answered {status}"))
        }
        (Decision::Allowed, Some(status)) => ("0", format!("the EHR answered {status}")),
        (Decision::Allowed, None) if record.phase == Some(Phase::Attempt) => (
            "0",
            "attempt: allowed and recorded before the request was sent to the EHR".to_owned(),
        ),
        (Decision::Allowed, None) => ("0", "allowed".to_owned()),
    };

    let mut agents = vec![match non_empty(&record.subject) {
        Some(subject) => json!({
            "type": {"coding": [coding(PARTICIPATION_TYPE, "IRCP", "information recipient")]},
            "who": {"identifier": {"value": subject}},
            "requestor": true,
        }),
        None => json!({
            "type": {"coding": [coding(PARTICIPATION_TYPE, "IRCP", "information recipient")]},
            "who": {"display": "unauthenticated"},
            "requestor": true,
        }),
    }];
    // A proxy: the person it is in the EHR (the RelatedPerson its access to each
    // patient comes from), acting for that patient (an entity below).
    for proxy in &record.on_behalf_of {
        agents.push(json!({
            "type": {"coding": [coding(PARTICIPATION_TYPE, "IRCP", "information recipient")]},
            "who": {"reference": format!("RelatedPerson/{}", proxy.relationship)},
            "requestor": true,
            "policy": [format!("urn:portico:proxy-access:{}", proxy.level.as_str())],
        }));
    }
    if let Some(client) = non_empty(&record.client_id) {
        agents.push(json!({
            "type": {"coding": [coding(DICOM, "110153", "Source Role ID")]},
            "who": {"identifier": {"value": client}},
            "requestor": false,
        }));
    }

    let mut entities: Vec<Value> = record
        .patients
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            json!({
                "what": {"reference": format!("Patient/{p}")},
                "type": coding(ENTITY_TYPE, "1", "Person"),
                "role": coding(OBJECT_ROLE, "1", "Patient"),
            })
        })
        .collect();
    let mut details = Vec::new();
    if let Some(status) = record.upstream_status {
        details.push(json!({"type": "upstream-status", "valueString": status.to_string()}));
    }
    if let Some(phase) = record.phase {
        let phase = match phase {
            Phase::Attempt => "attempt",
            Phase::Outcome => "outcome",
        };
        details.push(json!({"type": "phase", "valueString": phase}));
    }
    if let Some(removed) = record.removed_entries {
        details.push(json!({"type": "removed-entries", "valueString": removed.to_string()}));
    }
    if let Some(resource_type) = non_empty(&record.resource_type) {
        let mut entity = json!({
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "4", "Domain Resource"),
        });
        match non_empty(&record.resource_id) {
            Some(id) => {
                entity["what"] = json!({"reference": format!("{resource_type}/{id}")});
            }
            None => entity["name"] = json!(resource_type),
        }
        if !details.is_empty() {
            entity["detail"] = Value::Array(details);
        }
        entities.push(entity);
    } else if !details.is_empty() {
        entities.push(json!({
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "detail": details,
        }));
    }
    if let Some(request_id) = non_empty(&record.request_id) {
        entities.push(json!({
            "what": {"identifier": {"value": request_id}},
            "type": coding(BALP_ENTITY_TYPE, "XrequestId", "XrequestId"),
        }));
    }

    let mut event = json!({
        "resourceType": "AuditEvent",
        "type": coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation"),
        "subtype": [coding(RESTFUL_INTERACTION, interaction, interaction)],
        "action": action,
        "recorded": recorded,
        "outcome": outcome,
        "outcomeDesc": outcome_desc,
        "agent": agents,
        "source": {
            "observer": {
                "identifier": {"value": instance},
                "display": format!("Portico gateway {instance}"),
            },
            "type": [coding(SOURCE_TYPE, "4", "Application Server")],
        },
    });
    if !entities.is_empty() {
        event["entity"] = Value::Array(entities);
    }
    event
}

/// How the delivery task authenticates.
pub(crate) enum Auth {
    None,
    /// A bearer token; re-read from `file` after a 401 or 403.
    Bearer {
        token: SecretString,
        file: Option<PathBuf>,
    },
    /// The gateway's own EHR credential.
    Upstream(TokenProvider),
}

impl Auth {
    /// The authentication configured in `config`; `upstream` is the gateway's own EHR
    /// credential, when it has one.
    pub fn from_config(
        config: &FhirSinkConfig,
        upstream: Option<TokenProvider>,
    ) -> Result<Auth, String> {
        Ok(match config.auth {
            FhirAuthKind::None => Auth::None,
            FhirAuthKind::Bearer => Auth::Bearer {
                token: config.resolve_token()?,
                file: config.token_file.clone(),
            },
            FhirAuthKind::Upstream => Auth::Upstream(upstream.ok_or_else(|| {
                "config key `audit.fhir.auth`: \"upstream\" needs the gateway's own EHR credential"
                    .to_owned()
            })?),
        })
    }
}

/// What one POST came to.
enum Sent {
    Delivered,
    /// Try again later (unreachable, 5xx, 408, 429, 401/403).
    Retry,
    /// Refused for good: this event will never be accepted.
    Rejected(u16),
}

/// The delivery task: from the spool to the repository.
pub(crate) struct Delivery {
    reader: Option<SpoolReader>,
    http: reqwest::Client,
    url: String,
    auth: Auth,
    counters: Arc<Counters>,
    retry_initial: Duration,
    retry_max: Duration,
    /// Whether the last attempt failed (to log the change, not every attempt).
    failing: bool,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    pub fn new(
        reader: SpoolReader,
        config: &FhirSinkConfig,
        auth: Auth,
        counters: Arc<Counters>,
    ) -> reqwest::Result<Delivery> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(5_000)))
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portico/", env!("CARGO_PKG_VERSION"), " audit"))
            .build()?;
        Ok(Delivery {
            reader: Some(reader),
            http,
            url: format!(
                "{}/AuditEvent",
                config.base_url.as_str().trim_end_matches('/')
            ),
            auth,
            counters,
            retry_initial: Duration::from_millis(config.retry_initial_ms),
            retry_max: Duration::from_millis(config.retry_max_ms.max(config.retry_initial_ms)),
            failing: false,
        })
    }

    /// Runs `f` on the reader on a blocking thread (the spool is files).
    async fn with_reader<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut SpoolReader) -> T + Send + 'static,
    ) -> Option<T> {
        let mut reader = self.reader.take()?;
        match tokio::task::spawn_blocking(move || {
            let out = f(&mut reader);
            (reader, out)
        })
        .await
        {
            Ok((reader, out)) => {
                self.reader = Some(reader);
                Some(out)
            }
            Err(e) => {
                tracing::error!(error = %e, "audit spool reader failed; AuditEvent delivery stops until restart");
                None
            }
        }
    }

    async fn persist(&mut self) {
        if let Some(Err(e)) = self.with_reader(SpoolReader::persist).await {
            tracing::warn!(error = %e, "audit spool: cannot save the delivery cursor");
        }
    }

    /// Delivers until `stop` turns true (or its sender goes away).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = self.retry_initial;
        let shared = match &self.reader {
            Some(r) => r.shared().clone(),
            None => return,
        };
        'outer: loop {
            if stopped(&stop) {
                break;
            }
            let batch = match self.with_reader(|r| r.next_batch(READ_BATCH)).await {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "audit spool: cannot read");
                    if wait(&mut stop, backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(self.retry_max);
                    continue;
                }
                None => return,
            };
            if batch.is_empty() {
                self.persist().await;
                tokio::select! {
                    () = shared.notify.notified() => {}
                    _ = stop.changed() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            for event in batch {
                loop {
                    let sent = tokio::select! {
                        sent = self.send(&event.body) => sent,
                        _ = stop.changed() => break 'outer,
                    };
                    match sent {
                        Sent::Delivered => {
                            self.counters.fhir_delivered.fetch_add(1, Ordering::Relaxed);
                            if let Some(r) = self.reader.as_mut() {
                                r.delivered(&event);
                            }
                            backoff = self.retry_initial;
                            if self.failing {
                                self.failing = false;
                                tracing::info!(
                                    "audit repository reachable again; delivering the spooled AuditEvents"
                                );
                            }
                            break;
                        }
                        Sent::Rejected(status) => {
                            self.reject(event, status).await;
                            break;
                        }
                        Sent::Retry => {
                            self.counters
                                .fhir_failed_attempts
                                .fetch_add(1, Ordering::Relaxed);
                            if wait(&mut stop, backoff).await {
                                break 'outer;
                            }
                            backoff = (backoff * 2).min(self.retry_max);
                        }
                    }
                }
                if stopped(&stop) {
                    break 'outer;
                }
            }
            self.persist().await;
        }
        self.persist().await;
    }

    async fn reject(&mut self, event: Spooled, status: u16) {
        self.counters.fhir_rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            status,
            "the audit repository refused an AuditEvent for good; it is kept in the spool's {}",
            super::spool::REJECTED
        );
        let result = self
            .with_reader(move |r| {
                let kept = r.reject(&event);
                r.delivered(&event);
                kept
            })
            .await;
        if let Some(Err(e)) = result {
            tracing::error!(error = %e, "audit spool: cannot keep a refused AuditEvent");
        }
    }

    async fn send(&mut self, body: &[u8]) -> Sent {
        let mut request = self
            .http
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, portico_fhir::FHIR_JSON)
            .header(http::header::ACCEPT, portico_fhir::FHIR_JSON)
            .header("prefer", "return=minimal")
            .body(body.to_vec());
        match &self.auth {
            Auth::None => {}
            Auth::Bearer { token, .. } => request = request.bearer_auth(token.expose()),
            Auth::Upstream(provider) => match provider.token().await {
                Ok(token) => request = request.bearer_auth(token.expose()),
                Err(e) => {
                    self.note_failure(&format!("no token for the audit repository: {e}"));
                    return Sent::Retry;
                }
            },
        }
        let status = match request.send().await {
            Ok(response) => response.status(),
            Err(e) => {
                self.note_failure(&error_chain(&e));
                return Sent::Retry;
            }
        };
        if status.is_success() {
            return Sent::Delivered;
        }
        let code = status.as_u16();
        match code {
            401 | 403 => {
                self.refresh_credential();
                self.note_failure(&format!("the audit repository answered {code}"));
                Sent::Retry
            }
            408 | 429 => {
                self.note_failure(&format!("the audit repository answered {code}"));
                Sent::Retry
            }
            400..=499 => Sent::Rejected(code),
            _ => {
                self.note_failure(&format!("the audit repository answered {code}"));
                Sent::Retry
            }
        }
    }

    fn refresh_credential(&mut self) {
        match &mut self.auth {
            Auth::Upstream(provider) => provider.invalidate(),
            Auth::Bearer {
                token,
                file: Some(path),
            } => match super::config::read_token_file(path) {
                Ok(fresh) => *token = fresh,
                Err(e) => tracing::warn!(error = %e, "cannot re-read the audit repository's token"),
            },
            _ => {}
        }
    }

    fn note_failure(&mut self, what: &str) {
        if !self.failing {
            self.failing = true;
            tracing::warn!(
                error = what,
                "cannot deliver AuditEvents; they stay in the spool and are retried"
            );
        } else {
            tracing::debug!(error = what, "AuditEvent delivery attempt failed");
        }
    }
}

/// A transport error's text, without the request body (reqwest never includes it).
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether the delivery was told to stop (or the writer that would tell it is gone).
fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Sleeps `delay`; true when told to stop meanwhile.
async fn wait(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
