//! Answers that are Bundles: searches (narrowed before they go up), the pages behind
//! their `next` links, histories, operations and `$everything`. Every entry is verified
//! for the principal before anything of it is handed out.

use bytes::Bytes;
use portico_access::{Interaction, VerifiedBytes, VerifyReport};
use portico_upstream::{Answer, BodyRest, FhirRequest, FhirResponse, UpstreamError};
use serde_json::Value;

use crate::audit::Outcome;
use crate::slot::{KeptAnswer, Meta, Reply, Reuse};
use crate::{GuardError, Session};

/// An answer from the EHR that nothing has verified yet. Its body is private: only
/// [`Session::verify`] and [`Session::verify_kept`] turn it into content.
#[derive(Debug)]
pub struct Unchecked {
    pub(crate) response: FhirResponse,
    /// The rest of the body of an answer read in part ([`Session::stream_bundle`]).
    pub(crate) rest: Option<BodyRest>,
    pub(crate) interaction: Interaction,
    pub(crate) rt: String,
    /// The resource whose history this is, for the audit record.
    pub(crate) id: Option<String>,
    /// The search as it was sent, after narrowing (empty for pages and operations).
    narrowed: Vec<(String, String)>,
    /// An operation's answer: may be empty, a `Parameters` or a bare resource, and is
    /// made a Bundle before it is verified ([`operation_result_bundle`]).
    operation: bool,
}

impl Unchecked {
    /// The search parameters as sent upstream, after narrowing.
    pub fn narrowed(&self) -> &[(String, String)] {
        &self.narrowed
    }

    pub fn meta(&self) -> Meta {
        Meta::of(&self.response)
    }

    /// Whether the EHR's answer is still arriving: only [`Session::stream_bundle`]
    /// reads such an answer whole.
    pub fn is_partial(&self) -> bool {
        self.rest.is_some()
    }
}

/// A Bundle whose every entry passed the principal's check.
#[derive(Debug)]
pub struct Verified {
    pub bundle: Value,
    pub report: VerifyReport,
    pub meta: Meta,
    /// The size of the answer's JSON as it came (a measure of what is derived from it).
    pub body_len: usize,
}

impl Session<'_> {
    /// A type-level search, narrowed to the principal's compartment (or refused, and
    /// recorded) before it goes up.
    pub async fn search(
        &self,
        rt: &str,
        params: &[(String, String)],
    ) -> Result<Unchecked, GuardError> {
        self.search_reading(rt, params, false).await
    }

    /// [`Session::search`]; with `partial`, the answer may be read as it arrives.
    pub(crate) async fn search_reading(
        &self,
        rt: &str,
        params: &[(String, String)],
        partial: bool,
    ) -> Result<Unchecked, GuardError> {
        let narrowed = match self
            .policy()
            .narrow_search(self.actor.principal(), rt, params)
        {
            Ok(n) => n,
            Err(denial) => {
                return Err(self.deny(Interaction::Search, rt, None, denial).await);
            }
        };
        let request = FhirRequest::search(rt, narrowed.clone());
        let mut unchecked = self
            .send_for_bundle(Interaction::Search, rt, None, request, partial)
            .await?;
        unchecked.narrowed = narrowed;
        Ok(unchecked)
    }

    /// The page behind an upstream `next` link of an earlier answer (the upstream
    /// client follows only links under the EHR's base). `rt` names the search for the
    /// audit record.
    pub async fn next_page(&self, rt: &str, url: &str) -> Result<Unchecked, GuardError> {
        self.next_page_reading(rt, url, false).await
    }

    /// [`Session::next_page`]; with `partial`, the answer may be read as it arrives.
    pub(crate) async fn next_page_reading(
        &self,
        rt: &str,
        url: &str,
        partial: bool,
    ) -> Result<Unchecked, GuardError> {
        let request = FhirRequest::search_page(url);
        self.send_for_bundle(Interaction::Search, rt, None, request, partial)
            .await
    }

    /// The history of `rt/id`. The current version decides first: a foreign resource's
    /// history looks exactly like a missing resource's, not like an empty history.
    pub async fn history(
        &self,
        rt: &str,
        id: &str,
        params: Vec<(String, String)>,
    ) -> Result<Unchecked, GuardError> {
        self.current(rt, id).await?;
        self.send_for_bundle(
            Interaction::History,
            rt,
            Some(id),
            FhirRequest::history(rt, id, params),
            false,
        )
        .await
    }

    /// Runs the FHIR operation `POST [rt]/$name` with a `Parameters` body. Its answer is
    /// verified like a search page: a Bundle entry by entry; a `Parameters` answer's
    /// `return` resource and a bare resource as a one-entry Bundle. Recorded as
    /// `interaction` (a `$find` is a search, a `$book` a create). The caller decides
    /// whether the principal may run the operation at all.
    pub async fn operation(
        &self,
        rt: &str,
        name: &str,
        parameters: &Value,
        interaction: Interaction,
    ) -> Result<Unchecked, GuardError> {
        let request =
            FhirRequest::operation(Some(rt), None, name, Bytes::from(parameters.to_string()));
        let mut unchecked = self
            .send_for_bundle(interaction, rt, None, request, false)
            .await?;
        unchecked.operation = true;
        Ok(unchecked)
    }

    pub(crate) async fn send_for_bundle(
        &self,
        interaction: Interaction,
        rt: &str,
        id: Option<&str>,
        request: FhirRequest,
        partial: bool,
    ) -> Result<Unchecked, GuardError> {
        let answer = if partial {
            self.execute_partial(request).await
        } else {
            self.execute(request).await.map(Answer::Whole)
        };
        let answer = answer.map(|answer| match answer {
            Answer::Whole(response) => (response, None),
            Answer::Partial(response, rest) => (response, Some(rest)),
        });
        match answer {
            Ok((response, rest)) => Ok(Unchecked {
                response,
                rest,
                interaction,
                rt: rt.to_owned(),
                id: id.map(str::to_owned),
                narrowed: Vec::new(),
                operation: false,
            }),
            Err(e) => {
                self.note(interaction, rt, id, Outcome::Failed(e.status()))
                    .await;
                Err(GuardError::Upstream(e))
            }
        }
    }

    /// Verifies every entry of an answer for the principal; recorded with how many
    /// entries were removed. An answer that is not JSON is an upstream error; one that
    /// is not a Bundle is replaced by an empty searchset (and says so in the report).
    pub async fn verify(&self, unchecked: Unchecked) -> Result<Verified, GuardError> {
        let meta = Meta::of(&unchecked.response);
        let body_len = unchecked.response.body.len();
        let mut bundle = self.parse_bundle(&unchecked).await?;
        let report = self
            .policy()
            .verify_bundle(self.actor.principal(), &mut bundle);
        self.audit(
            unchecked.interaction,
            &unchecked.rt,
            unchecked.id.as_deref(),
            Outcome::allowed(meta.status, report.removed),
        )
        .await?;
        Ok(Verified {
            bundle,
            report,
            meta,
            body_len,
        })
    }

    /// [`Session::verify`] for a caller that only writes the Bundle out: checked entry
    /// by entry on the EHR's bytes ([`portico_access::Policy::verify_bundle_bytes`]), the
    /// kept entries copied as they came, never a tree of the whole. Recorded like
    /// [`Session::verify`]; an operation's answer (made a Bundle first) goes through the
    /// tree.
    pub async fn verify_bytes(
        &self,
        unchecked: Unchecked,
    ) -> Result<(VerifiedBytes, Meta), GuardError> {
        if unchecked.operation {
            let verified = self.verify(unchecked).await?;
            let bytes = VerifiedBytes::from_tree(verified.bundle, verified.report);
            return Ok((bytes, verified.meta));
        }
        let meta = unchecked.meta();
        let checked = self
            .policy()
            .verify_bundle_bytes(self.actor.principal(), unchecked.response.body.clone());
        let verified = match checked {
            Ok(verified) => verified,
            Err(e) => {
                return Err(self
                    .malformed(&unchecked, UpstreamError::invalid_json(&e))
                    .await);
            }
        };
        self.audit(
            unchecked.interaction,
            &unchecked.rt,
            unchecked.id.as_deref(),
            Outcome::allowed(meta.status, verified.report.removed),
        )
        .await?;
        Ok((verified, meta))
    }

    /// [`Session::verify`] for a caller that keeps what it derives from the verified
    /// Bundle (see [`Reply`]): on a hit with a value kept under `what` for this
    /// principal, that value, recorded again; otherwise the Bundle, verified now.
    pub async fn verify_kept<T: KeptAnswer>(
        &self,
        unchecked: Unchecked,
        what: &str,
    ) -> Result<Reply<T, Verified>, GuardError> {
        self.kept_or(unchecked, what, |unchecked| async move {
            let verified = self.verify(unchecked).await?;
            Ok((verified.meta.clone(), verified))
        })
        .await
    }

    /// [`Session::verify_kept`] with [`Session::verify_bytes`] on a miss.
    pub async fn verify_kept_bytes<T: KeptAnswer>(
        &self,
        unchecked: Unchecked,
        what: &str,
    ) -> Result<Reply<T, VerifiedBytes>, GuardError> {
        self.kept_or(unchecked, what, |unchecked| async move {
            let (verified, meta) = self.verify_bytes(unchecked).await?;
            Ok((meta, verified))
        })
        .await
    }

    /// The value kept under `what` for this principal, recorded again; otherwise what
    /// `fresh` verifies now.
    async fn kept_or<T, F, Fut>(
        &self,
        unchecked: Unchecked,
        what: &str,
        fresh: impl FnOnce(Unchecked) -> Fut,
    ) -> Result<Reply<T, F>, GuardError>
    where
        T: KeptAnswer,
        Fut: std::future::Future<Output = Result<(Meta, F), GuardError>>,
    {
        let slot = self.bound(&unchecked.response);
        let upstream = unchecked.response.body.clone();
        if let Some(kept) = slot.as_ref().and_then(|s| s.get::<T>(what)) {
            self.audit(
                unchecked.interaction,
                &unchecked.rt,
                unchecked.id.as_deref(),
                Outcome::allowed(unchecked.response.status, kept.removed()),
            )
            .await?;
            return Ok(Reply::new(
                unchecked.meta(),
                Reuse::Kept(kept),
                slot,
                what,
                upstream,
            ));
        }
        let (meta, verified) = fresh(unchecked).await?;
        Ok(Reply::new(
            meta,
            Reuse::Fresh(verified),
            slot,
            what,
            upstream,
        ))
    }

    async fn parse_bundle(&self, unchecked: &Unchecked) -> Result<Value, GuardError> {
        let response = &unchecked.response;
        if unchecked.operation {
            let body = if response.body.is_empty() {
                Value::Null
            } else {
                self.parsed(unchecked).await?
            };
            return Ok(operation_result_bundle(body));
        }
        self.parsed(unchecked).await
    }

    async fn parsed(&self, unchecked: &Unchecked) -> Result<Value, GuardError> {
        match unchecked.response.json() {
            Ok(v) => Ok(v),
            Err(e) => Err(self.malformed(unchecked, e).await),
        }
    }

    /// An answer that cannot be read: recorded as failed, and the error to return.
    pub(crate) async fn malformed(&self, unchecked: &Unchecked, e: UpstreamError) -> GuardError {
        self.note(
            unchecked.interaction,
            &unchecked.rt,
            unchecked.id.as_deref(),
            Outcome::Failed(Some(unchecked.response.status)),
        )
        .await;
        GuardError::Upstream(e)
    }

    /// `Patient/{id}/$everything`, composed from compartment searches of `types` (each
    /// narrowed like any search, `_count` of `count`) so that it works on EHRs without
    /// the operation, and only ever for one of the principal's own patients. The whole
    /// Bundle is verified once and recorded once (as a read of the Patient).
    pub async fn everything(
        &self,
        id: &str,
        types: &[&str],
        count: u32,
    ) -> Result<Verified, GuardError> {
        let patient = self.current("Patient", id).await?;
        if !self.actor.principal().patients.iter().any(|p| p == id) {
            return Err(GuardError::NotFound);
        }
        let searches = types.iter().filter_map(|t| {
            let params = vec![
                ("patient".to_owned(), id.to_owned()),
                ("_count".to_owned(), count.to_string()),
            ];
            let narrowed = self
                .policy()
                .narrow_search(self.actor.principal(), t, &params)
                .ok()?;
            Some(self.execute(FhirRequest::search(*t, narrowed)))
        });
        let results = futures::future::join_all(searches).await;
        let mut entries =
            vec![serde_json::json!({"resource": patient.resource, "search": {"mode": "match"}})];
        for result in results {
            let bundle = match result.and_then(|r| r.json()) {
                Ok(b) => b,
                Err(e) => {
                    self.note(
                        Interaction::Read,
                        "Patient",
                        Some(id),
                        Outcome::Failed(e.status()),
                    )
                    .await;
                    return Err(GuardError::Upstream(e));
                }
            };
            if let Some(Value::Array(items)) = bundle.get("entry") {
                entries.extend(items.iter().cloned());
            }
        }
        let mut bundle =
            serde_json::json!({"resourceType": "Bundle", "type": "searchset", "entry": entries});
        let report = self
            .policy()
            .verify_bundle(self.actor.principal(), &mut bundle);
        bundle["total"] = serde_json::json!(report.kept);
        self.audit(
            Interaction::Read,
            "Patient",
            Some(id),
            Outcome::Allowed {
                status: None,
                removed: report.removed,
            },
        )
        .await?;
        Ok(Verified {
            bundle,
            report,
            meta: Meta::default(),
            body_len: 0,
        })
    }
}

/// What `Patient/{id}/$everything` gathers (the facade's, and the portal's download of
/// the whole record), each type by a compartment search.
pub const EVERYTHING_TYPES: &[&str] = &[
    "AllergyIntolerance",
    "Condition",
    "Observation",
    "DiagnosticReport",
    "Immunization",
    "MedicationRequest",
    "MedicationDispense",
    "Encounter",
    "DocumentReference",
    "Procedure",
    "CareTeam",
    "Appointment",
    "Communication",
    "ServiceRequest",
    "Account",
    "Invoice",
    "Coverage",
];

/// An operation's answer as a Bundle: a Bundle as is; a `Parameters` answer's `return`
/// resource (a Bundle, or one resource); one resource as a one-entry collection.
pub fn operation_result_bundle(body: Value) -> Value {
    let wrap = |resource: Value| {
        serde_json::json!({"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": resource}]})
    };
    match body.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => body,
        Some("Parameters") => {
            let returned = body
                .get("parameter")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some("return"))
                .and_then(|p| p.get("resource"))
                .cloned();
            match returned {
                Some(r) => operation_result_bundle(r),
                None => serde_json::json!({"resourceType": "Bundle", "type": "collection"}),
            }
        }
        Some(_) => wrap(body),
        // Not a resource: `verify_bundle` replaces it with an empty Bundle.
        None => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_answers_become_bundles() {
        let bundle = serde_json::json!({"resourceType": "Bundle", "type": "searchset"});
        assert_eq!(operation_result_bundle(bundle.clone()), bundle);
        let appointment = serde_json::json!({"resourceType": "Appointment", "id": "a"});
        let wrapped = operation_result_bundle(appointment.clone());
        assert_eq!(wrapped["entry"][0]["resource"], appointment);
        let parameters = serde_json::json!({"resourceType": "Parameters", "parameter": [
            {"name": "other", "valueString": "x"},
            {"name": "return", "resource": bundle}]});
        assert_eq!(operation_result_bundle(parameters)["type"], "searchset");
        let empty = serde_json::json!({"resourceType": "Parameters"});
        assert!(operation_result_bundle(empty).get("entry").is_none());
        // Not a resource: left for the policy to replace with an empty Bundle.
        assert_eq!(operation_result_bundle(Value::Null), Value::Null);
    }
}
