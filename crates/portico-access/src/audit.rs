//! Audit records of access decisions, and the sink they are written to.
//!
//! One [`AuditRecord`] per decision: who (subject, client), for which patient(s), what
//! interaction on what type, allowed or denied and why, and the upstream status when the
//! request went upstream. Records are security data for a durable, access-controlled
//! sink (a JSON-lines file, or FHIR AuditEvents upstream, both in the gateway); they
//! carry ids but never resource bodies, names or tokens, and must not go to the
//! application log.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::policy::{Denial, DenialReason};
use crate::principal::Principal;
use crate::scopes::Interaction;

/// Allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allowed,
    Denied,
}

/// Which half of a write a record describes: the attempt is recorded before the request
/// goes to the EHR, the outcome after it answered (or failed). Reads and searches have
/// one record and no phase, except a search answer streamed as it arrives: its attempt
/// is recorded before the first byte leaves, its outcome (the entries removed, or
/// `denied` when it broke off) when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Attempt,
    Outcome,
}

/// One access decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The gateway replica that decided (set by the sink from `[audit] instance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The token's subject; `None` for unauthenticated requests.
    pub subject: Option<String>,
    pub client_id: Option<String>,
    /// The principal's patient compartments.
    pub patients: Vec<String>,
    pub interaction: Interaction,
    pub resource_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    pub decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<DenialReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// Bundle entries removed by outbound verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_entries: Option<usize>,
    /// For writes: the attempt (before the EHR call) or the outcome (after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// For a proxy (the subject acting for someone else): for each patient of
    /// `patients` it acts for, the `RelatedPerson` its access comes from and the level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_behalf_of: Vec<OnBehalfOf>,
}

/// Who a proxy acted for, under which relationship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnBehalfOf {
    pub patient: String,
    /// The `RelatedPerson` id.
    pub relationship: String,
    pub level: crate::delegation::AccessLevel,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl AuditRecord {
    /// An "allowed" record for `principal`, stamped now.
    pub fn new(
        principal: Option<&Principal>,
        interaction: Interaction,
        resource_type: Option<&str>,
    ) -> AuditRecord {
        let mut patients: Vec<String> = principal.map(|p| p.patients.clone()).unwrap_or_default();
        if let Some(r) = principal.and_then(|p| p.fhir_user.as_ref())
            && r.resource_type == "Patient"
            && !patients.contains(&r.id)
        {
            patients.push(r.id.clone());
        }
        AuditRecord {
            timestamp_ms: now_ms(),
            instance: None,
            request_id: None,
            subject: principal.map(|p| p.subject.clone()),
            client_id: principal.and_then(|p| p.client_id.clone()),
            patients,
            interaction,
            resource_type: resource_type.map(str::to_owned),
            resource_id: None,
            decision: Decision::Allowed,
            reason: None,
            upstream_status: None,
            removed_entries: None,
            phase: None,
            on_behalf_of: principal
                .map(|p| {
                    p.proxies
                        .iter()
                        .map(|g| OnBehalfOf {
                            patient: g.patient.clone(),
                            relationship: g.relationship.clone(),
                            level: g.level,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Marks the record denied for this reason.
    pub fn denied(mut self, denial: &Denial) -> AuditRecord {
        self.decision = Decision::Denied;
        self.reason = Some(denial.reason());
        self
    }

    pub fn with_resource_id(mut self, id: impl Into<String>) -> AuditRecord {
        self.resource_id = Some(id.into());
        self
    }

    pub fn with_request_id(mut self, id: impl Into<String>) -> AuditRecord {
        self.request_id = Some(id.into());
        self
    }

    pub fn with_upstream_status(mut self, status: u16) -> AuditRecord {
        self.upstream_status = Some(status);
        self
    }

    /// The same record, dated now (the second record of a pair).
    pub fn restamped(mut self) -> AuditRecord {
        self.timestamp_ms = now_ms();
        self
    }

    pub fn with_phase(mut self, phase: Phase) -> AuditRecord {
        self.phase = Some(phase);
        self
    }

    pub fn with_removed_entries(mut self, removed: usize) -> AuditRecord {
        self.removed_entries = Some(removed);
        self
    }
}

/// Writing a record failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit sink failed: {0}")]
pub struct AuditError(pub String);

/// Where audit records go. Implementations must be durable and append-only.
///
/// `record` returns once the record is as safe as the sink promises (for the gateway's
/// file sink: handed to the operating system, or synced to disk, per its configured
/// durability). It returns `Err` only when the request the record describes must be
/// refused because the trail cannot be written (`[audit] on_failure = "refuse"`); a sink
/// told to continue logs and counts its failures and answers `Ok`.
#[async_trait]
pub trait AuditSink: Send + Sync {
    async fn record(&self, record: &AuditRecord) -> Result<(), AuditError>;
}

/// An in-memory sink, for tests.
#[derive(Debug, Default)]
pub struct MemoryAuditSink {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemoryAuditSink {
    /// A copy of everything recorded so far.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl AuditSink for MemoryAuditSink {
    async fn record(&self, record: &AuditRecord) -> Result<(), AuditError> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use crate::principal::ClaimNames;
    use serde_json::json;

    #[tokio::test]
    async fn records_decisions_as_json() {
        let claims = json!({"sub":"u1","client_id":"app","patient":"pat-1","scope":"patient/Observation.rs"});
        let principal =
            Principal::from_claims(claims.as_object().unwrap(), &ClaimNames::default()).unwrap();
        let policy = Policy::new("https://ehr/fhir");
        let denial = policy
            .check_read(
                &principal,
                &json!({"resourceType":"Observation","subject":{"reference":"Patient/pat-12"}}),
            )
            .unwrap_err();
        let record = AuditRecord::new(Some(&principal), Interaction::Read, Some("Observation"))
            .with_resource_id("o1")
            .denied(&denial)
            .with_upstream_status(200);
        let sink = MemoryAuditSink::default();
        sink.record(&record).await.unwrap();
        let stored = sink.records();
        assert_eq!(stored, vec![record.clone()]);
        let line = serde_json::to_value(&record).unwrap();
        assert_eq!(line["decision"], "denied");
        assert_eq!(line["reason"], "not-in-compartment");
        assert_eq!(line["interaction"], "read");
        assert_eq!(line["patients"], json!(["pat-1"]));
        assert_eq!(line["subject"], "u1");
        assert_eq!(line["upstream_status"], 200);
        assert!(line["timestamp_ms"].as_u64().unwrap() > 1_600_000_000_000);
        let back: AuditRecord = serde_json::from_value(line).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn anonymous_records() {
        let r = AuditRecord::new(None, Interaction::Search, None);
        assert_eq!(r.subject, None);
        assert!(r.patients.is_empty());
        assert_eq!(r.decision, Decision::Allowed);
    }
}
