//! One audit record per guarded call, written through the configured sink.

use portico_access::audit::{AuditRecord, Decision};
use portico_access::{Denial, Interaction};

use crate::Session;

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
    /// Writes the record of one call. A sink failure is logged; it never changes the
    /// answer.
    pub(crate) async fn audit(
        &self,
        interaction: Interaction,
        resource_type: &str,
        id: Option<&str>,
        outcome: Outcome<'_>,
    ) {
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
            Outcome::Failed(status) => {
                r.decision = Decision::Denied;
                if let Some(s) = status {
                    r = r.with_upstream_status(s);
                }
            }
        }
        if let Err(e) = self.guard.inner.audit.record(&r).await {
            tracing::error!(error = %e, "audit record could not be written");
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
    ) -> crate::GuardError {
        self.audit(interaction, resource_type, id, Outcome::Denied(&denial))
            .await;
        crate::GuardError::Denied(denial)
    }
}
