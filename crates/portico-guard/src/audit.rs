//! One audit record per guarded call, written through the configured sink.

use portico_access::audit::{AuditRecord, Decision, Phase};
use portico_access::{Denial, Interaction};

use crate::{GuardError, Session};

/// How a guarded call ended, for its record.
pub(crate) enum Outcome<'a> {
    /// Answered: the upstream status (when the call went upstream) and how many Bundle
    /// entries verification removed.
    Allowed { status: Option<u16>, removed: usize },
    /// Refused by the policy or a domain rule.
    Denied(&'a Denial),
    /// The EHR failed (its status when it answered), or the call stopped before it was
    /// sent for a reason that is not a policy denial.
    Failed(Option<u16>),
    /// A write about to be sent to the EHR (recorded before it goes).
    Attempt,
    /// What a write sent to the EHR came to: its status, or its failure.
    Written(Result<u16, Option<u16>>),
}

impl Outcome<'_> {
    pub(crate) fn allowed(status: u16, removed: usize) -> Outcome<'static> {
        Outcome::Allowed {
            status: Some(status),
            removed,
        }
    }
}

impl Session<'_> {
    /// Writes the record of a call that reveals or changes patient data, before its
    /// answer is handed out. When the trail cannot be written (the sink refuses), the
    /// call fails with [`GuardError::AuditUnavailable`]: nothing is answered that was not
    /// recorded.
    pub(crate) async fn audit(
        &self,
        interaction: Interaction,
        resource_type: &str,
        id: Option<&str>,
        outcome: Outcome<'_>,
    ) -> Result<(), GuardError> {
        let r = self.record_of(interaction, resource_type, id, outcome);
        self.write_record(&r).await
    }

    /// Writes `record` as [`Session::audit`] does: a record that cannot be written fails
    /// the call.
    pub(crate) async fn write_record(&self, record: &AuditRecord) -> Result<(), GuardError> {
        self.guard.inner.audit.record(record).await.map_err(|e| {
            tracing::error!(error = %e, "audit record could not be written; refusing the request");
            GuardError::AuditUnavailable
        })
    }

    /// Writes the record of a refusal or a failure: nothing was revealed or changed, so
    /// the answer stands even when the record cannot be written (the sink logs and
    /// counts that).
    pub(crate) async fn note(
        &self,
        interaction: Interaction,
        resource_type: &str,
        id: Option<&str>,
        outcome: Outcome<'_>,
    ) {
        let r = self.record_of(interaction, resource_type, id, outcome);
        if let Err(e) = self.guard.inner.audit.record(&r).await {
            tracing::error!(error = %e, "audit record of a refusal could not be written");
        }
    }

    pub(crate) fn record_of(
        &self,
        interaction: Interaction,
        resource_type: &str,
        id: Option<&str>,
        outcome: Outcome<'_>,
    ) -> AuditRecord {
        let mut r = AuditRecord::new(
            Some(self.actor.principal()),
            interaction,
            Some(resource_type),
        );
        if let Some(id) = id {
            r = r.with_resource_id(id);
        }
        if let Some(rid) = &self.actor.request_id {
            r = r.with_request_id(rid.clone());
        }
        match outcome {
            Outcome::Allowed { status, removed } => {
                if let Some(s) = status {
                    r = r.with_upstream_status(s);
                }
                if removed > 0 {
                    r = r.with_removed_entries(removed);
                }
            }
            Outcome::Denied(denial) => r = r.denied(denial),
            Outcome::Failed(status) | Outcome::Written(Err(status)) => {
                r.decision = Decision::Denied;
                if let Some(s) = status {
                    r = r.with_upstream_status(s);
                }
            }
            Outcome::Attempt => {}
            Outcome::Written(Ok(status)) => r = r.with_upstream_status(status),
        }
        match outcome {
            Outcome::Attempt => r.with_phase(Phase::Attempt),
            Outcome::Written(_) => r.with_phase(Phase::Outcome),
            _ => r,
        }
    }

    /// Records a refusal decided outside the session's own checks (an unsupported
    /// interaction, a cursor that does not open) and returns it as the call's error.
    pub async fn deny(
        &self,
        interaction: Interaction,
        resource_type: &str,
        id: Option<&str>,
        denial: Denial,
    ) -> GuardError {
        self.note(interaction, resource_type, id, Outcome::Denied(&denial))
            .await;
        GuardError::Denied(denial)
    }
}
