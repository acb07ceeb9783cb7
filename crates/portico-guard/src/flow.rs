//! Bundles verified as they arrive: a search answer longer than the upstream client
//! reads whole ([`portico_upstream::partial`]) is checked entry by entry while its body
//! comes ([`portico_access::bundle_stream`]), and handed on a piece at a time.
//!
//! What leaves is what the buffered path would hand out: the entries the principal
//! may see, each whole and checked before any byte of it leaves. What differs is when
//! a failure is known. An answer that breaks before its entries begin is an upstream
//! error like any other. One that breaks after (the EHR cuts the connection, sends text
//! that is not JSON, or gives a member again after the entries) cannot be answered with
//! an error any more: the caller must cut its own answer off, so that its client sees a
//! broken answer, never a wrong whole one.
//!
//! Such an answer has two audit records, as a write does. The first, phase `attempt`,
//! is written before the first piece leaves (nothing is handed out that was not
//! recorded); it cannot say how many entries will be removed. The second, phase
//! `outcome`, is written when the answer ends, before its last bytes leave: the entries
//! removed, and `denied` when the answer was cut off (with the entries removed until
//! then, also when the client went away and the answer was dropped before its end).

use std::sync::Arc;

use portico_access::audit::{AuditRecord, Decision, Phase};
use portico_access::bundle_stream::{BundleStream, Finished, Piece, StreamError};
use portico_access::{Policy, Principal, VerifiedBytes, VerifyReport};
use portico_upstream::{BodyRest, UpstreamError};
use serde_json::{Map, Value};

use crate::audit::Outcome;
use crate::bundle::Unchecked;
use crate::slot::Meta;
use crate::{Guard, GuardError, Session};

/// A Bundle answer checked as it arrives, or whole.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one a request, moved once: a box would cost an allocation for nothing"
)]
pub enum Streamed {
    /// Verified whole: the answer ended before its entries could be streamed, or it is
    /// not one whose entries can be (see [`portico_access::bundle_stream`]).
    Whole(VerifiedBytes, Meta),
    /// Recorded, and flowing.
    Flowing(Flow),
}

/// What a [`Flow`] gives, in order.
#[derive(Debug)]
pub enum Flowed {
    /// The head (first) or a kept entry.
    Piece(Piece),
    /// The members after the entries, `total` as corrected: the Bundle's end.
    End(Map<String, Value>),
}

/// Why a flowing answer stopped: its caller must cut its own answer off.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("the EHR's answer broke off: {0}")]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Bundle(#[from] StreamError),
}

/// A Bundle flowing from the EHR through the check: see the module docs.
#[derive(Debug)]
pub struct Flow {
    pub meta: Meta,
    ready: Vec<Piece>,
    /// `None` once the Bundle has ended.
    stream: Option<BundleStream>,
    rest: BodyRest,
    policy: Policy,
    principal: Arc<Principal>,
    /// The outcome record, written when the answer ends or breaks; `None` once written.
    outcome: Option<AuditRecord>,
    /// The entries decided so far.
    decided: VerifyReport,
    /// Where the outcome record goes.
    guard: Guard,
}

impl Flow {
    /// What can be handed on next: the pieces checked from the next part of the body
    /// that completed any (the head first), then the Bundle's end, then `None`. After an
    /// error, nothing more comes. The outcome record is written before the end or the
    /// error is returned.
    pub async fn next(&mut self) -> Result<Option<Vec<Flowed>>, FlowError> {
        let step = self.advance().await;
        match &step {
            Ok(Some(flowed)) => {
                if let Some(Flowed::End(_)) = flowed.last() {
                    self.record_outcome(false).await;
                }
            }
            Ok(None) => {}
            Err(_) => self.record_outcome(true).await,
        }
        step
    }

    async fn advance(&mut self) -> Result<Option<Vec<Flowed>>, FlowError> {
        loop {
            if !self.ready.is_empty() {
                return Ok(Some(self.ready.drain(..).map(Flowed::Piece).collect()));
            }
            let Some(stream) = self.stream.as_mut() else {
                return Ok(None);
            };
            match self.rest.next().await {
                Some(Ok(bytes)) => {
                    let pushed =
                        stream.push(&self.policy, &self.principal, &bytes, &mut self.ready);
                    self.decided = stream.report().unwrap_or_default();
                    if let Err(e) = pushed {
                        self.stream = None;
                        return Err(e.into());
                    }
                }
                Some(Err(e)) => {
                    self.stream = None;
                    return Err(e.into());
                }
                None => {
                    let Some(stream) = self.stream.take() else {
                        return Ok(None);
                    };
                    return match stream.finish(&self.policy, &self.principal)? {
                        Finished::Tail { members, report } => {
                            self.decided = report;
                            Ok(Some(vec![Flowed::End(members)]))
                        }
                        // Only a stream that never started ends whole, and a flow
                        // starts before it is handed out.
                        Finished::Whole(_) => Err(StreamError::Incomplete.into()),
                    };
                }
            }
        }
    }

    /// Writes the outcome record once: the entries removed, and `denied` when the
    /// answer broke off.
    async fn record_outcome(&mut self, broken: bool) {
        if let Some(record) = self.outcome_record(broken) {
            write_outcome(&self.guard, &record).await;
        }
    }

    /// The outcome record, the first time it is asked for.
    fn outcome_record(&mut self, broken: bool) -> Option<AuditRecord> {
        let mut record = self.outcome.take()?.restamped().with_phase(Phase::Outcome);
        if self.decided.removed > 0 {
            record = record.with_removed_entries(self.decided.removed);
        }
        if broken {
            record.decision = Decision::Denied;
        }
        Some(record)
    }
}

/// A flow dropped before its end (its client went away, or the server stopped the
/// answer) was cut off: its outcome says so, written by a task of its own.
impl Drop for Flow {
    fn drop(&mut self) {
        let Some(record) = self.outcome_record(true) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let guard = self.guard.clone();
                runtime.spawn(async move { write_outcome(&guard, &record).await });
            }
            Err(_) => tracing::error!(
                "the outcome record of a streamed answer could not be written: no runtime"
            ),
        }
    }
}

/// Writes a streamed answer's outcome record. Part of the answer has already left, so a
/// record that cannot be written is logged (and counted by the sink), not turned into
/// an error.
async fn write_outcome(guard: &Guard, record: &AuditRecord) {
    if let Err(e) = guard.audit_sink().record(record).await {
        tracing::error!(error = %e, "the outcome record of a streamed answer could not be written");
    }
}

impl Session<'_> {
    /// A search whose answer may be read as it arrives ([`Session::stream_bundle`]).
    pub async fn search_streamed(
        &self,
        rt: &str,
        params: &[(String, String)],
    ) -> Result<Unchecked, GuardError> {
        self.search_reading(rt, params, true).await
    }

    /// [`Session::next_page`] whose answer may be read as it arrives.
    pub async fn next_page_streamed(&self, rt: &str, url: &str) -> Result<Unchecked, GuardError> {
        self.next_page_reading(rt, url, true).await
    }

    /// Verifies a Bundle answer: as it arrives when the EHR's answer was read in part
    /// (recorded before anything of it is handed out), otherwise whole, like
    /// [`Session::verify_bytes`].
    pub async fn stream_bundle(&self, mut unchecked: Unchecked) -> Result<Streamed, GuardError> {
        let Some(mut rest) = unchecked.rest.take() else {
            let (verified, meta) = self.verify_bytes(unchecked).await?;
            return Ok(Streamed::Whole(verified, meta));
        };
        let meta = Meta::of(&unchecked.response);
        let policy = self.policy();
        let principal = self.actor.principal();
        let mut stream = BundleStream::new();
        let mut ready = Vec::new();
        let mut pushed = stream.push(policy, principal, &unchecked.response.body, &mut ready);
        while pushed.is_ok() && !stream.started() {
            pushed = match rest.next().await {
                Some(Ok(bytes)) => stream.push(policy, principal, &bytes, &mut ready),
                Some(Err(e)) => return Err(self.malformed(&unchecked, e).await),
                None => break,
            };
        }
        if !stream.started() {
            // The whole body came without the entries beginning (or it could not be
            // read): verified whole.
            let verified = match pushed.and_then(|()| stream.finish(policy, principal)) {
                // Not a Bundle: what the client refuses in an answer it reads whole.
                Ok(Finished::Whole(verified)) if verified.report.replaced => {
                    let e = UpstreamError::MalformedBody {
                        detail: "expected a Bundle".to_owned(),
                    };
                    return Err(self.malformed(&unchecked, e).await);
                }
                Ok(Finished::Whole(verified)) => verified,
                // Only a stream whose entries began ends with a tail.
                Ok(Finished::Tail { .. }) => {
                    return Err(self
                        .malformed(&unchecked, broken(StreamError::Incomplete))
                        .await);
                }
                Err(e) => return Err(self.malformed(&unchecked, broken(e)).await),
            };
            self.audit(
                unchecked.interaction,
                &unchecked.rt,
                unchecked.id.as_deref(),
                Outcome::allowed(meta.status, verified.report.removed),
            )
            .await?;
            return Ok(Streamed::Whole(verified, meta));
        }
        if let Err(e) = pushed {
            return Err(self.malformed(&unchecked, broken(e)).await);
        }
        // Recorded before the first piece leaves (the count of removed entries is not
        // known yet: the outcome record gives it).
        let attempt = self
            .record_of(
                unchecked.interaction,
                &unchecked.rt,
                unchecked.id.as_deref(),
                Outcome::allowed(meta.status, 0),
            )
            .with_phase(Phase::Attempt);
        self.write_record(&attempt).await?;
        Ok(Streamed::Flowing(Flow {
            meta,
            ready,
            decided: stream.report().unwrap_or_default(),
            stream: Some(stream),
            rest,
            policy: policy.clone(),
            principal: self.actor.principal_shared(),
            outcome: Some(attempt),
            guard: self.guard.clone(),
        }))
    }
}

/// A Bundle that cannot be read, as an upstream fault.
fn broken(e: StreamError) -> UpstreamError {
    UpstreamError::MalformedBody {
        detail: e.to_string(),
    }
}
