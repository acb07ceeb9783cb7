//! The session's rules, each with a fake EHR that would hand out anything it is asked
//! for: what comes back to the caller is only what the principal may see, nothing is
//! sent that the policy refused, and every call is recorded.

use std::sync::{Arc, Mutex};

use portico_access::audit::{Decision, MemoryAuditSink};
use portico_access::{Policy, Principal, ScopeSet};
use portico_fhir::reference::Reference;
use portico_upstream::{Derived, FhirRequest, FhirResponse, FhirUpstream, UpstreamError};
use serde_json::{Value, json};

use super::*;

/// Answers every request with the same body and, like a cache serving hits on one
/// entry, the same derived-value slot; remembers what it was asked.
#[derive(Debug)]
struct OneEntry {
    body: String,
    slot: Derived,
    seen: Mutex<Vec<FhirRequest>>,
}

impl OneEntry {
    fn new(body: Value) -> Arc<OneEntry> {
        Arc::new(OneEntry {
            body: body.to_string(),
            slot: Derived::with_budget(1 << 20),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl FhirUpstream for OneEntry {
    async fn execute(&self, request: FhirRequest) -> Result<FhirResponse, UpstreamError> {
        self.seen.lock().unwrap().push(request);
        let mut response = FhirResponse::new(200, self.body.clone());
        response.derived = Some(self.slot.clone());
        Ok(response)
    }
}

fn patient(id: &str) -> Arc<Principal> {
    Arc::new(Principal {
        subject: format!("Patient/{id}"),
        client_id: Some("app".to_owned()),
        patients: vec![id.to_owned()],
        fhir_user: Some(Reference::new("Patient", id)),
        scopes: ScopeSet::parse("patient/*.rs patient/Communication.c"),
        expires_at: None,
        issuer: None,
        proxies: Vec::new(),
    })
}

fn guard(upstream: Arc<OneEntry>) -> (Guard, Arc<MemoryAuditSink>) {
    let audit = Arc::new(MemoryAuditSink::default());
    let guard = Guard::new(
        upstream,
        Policy::new("http://ehr.example/fhir"),
        audit.clone(),
    );
    (guard, audit)
}

fn observation_of(patient: &str) -> Value {
    json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"text": "x"}, "subject": {"reference": format!("Patient/{patient}")}})
}

/// A kept value for the tests: a count of entries.
#[derive(Debug)]
struct Count(usize);

impl KeptAnswer for Count {
    fn removed(&self) -> usize {
        0
    }
}

#[tokio::test]
async fn another_patients_resource_reads_as_not_found_and_is_recorded_denied() {
    let upstream = OneEntry::new(observation_of("pat-1"));
    let (guard, audit) = guard(upstream);
    let two = Actor::new(patient("pat-2"));
    let read = guard.session(&two).read("Observation", "o1").await;
    assert!(matches!(read, Err(GuardError::NotFound)));
    let records = audit.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].decision, Decision::Denied);
    // The owner reads it.
    let one = Actor::new(patient("pat-1"));
    let read = guard.session(&one).read("Observation", "o1").await.unwrap();
    assert_eq!(read.resource["id"], "o1");
}

#[tokio::test]
async fn a_search_naming_another_patient_is_refused_before_it_goes_up() {
    let upstream = OneEntry::new(json!({"resourceType": "Bundle", "type": "searchset"}));
    let (guard, audit) = guard(upstream.clone());
    let one = Actor::new(patient("pat-1"));
    let params = vec![("patient".to_owned(), "pat-2".to_owned())];
    let refused = guard.session(&one).search("Observation", &params).await;
    assert!(matches!(refused, Err(GuardError::Denied(_))));
    assert_eq!(upstream.requests(), 0, "nothing was sent");
    assert_eq!(audit.records()[0].decision, Decision::Denied);
}

#[tokio::test]
async fn every_entry_is_verified_and_kept_answers_are_bound_to_their_principal() {
    let bundle = json!({"resourceType": "Bundle", "type": "searchset",
        "entry": [{"resource": observation_of("pat-1")}]});
    let upstream = OneEntry::new(bundle);
    let (guard, audit) = guard(upstream);
    let one = Actor::new(patient("pat-1"));
    let two = Actor::new(patient("pat-2"));

    // pat-1: verified, one entry, kept.
    let s = guard.session(&one);
    let reply = s
        .verify_kept::<Count>(s.search("Observation", &[]).await.unwrap(), "n")
        .await
        .unwrap();
    let Reuse::Fresh(verified) = reply.answer else {
        panic!("nothing was kept yet")
    };
    assert_eq!(verified.report.kept, 1);
    reply.keeper.keep(Arc::new(Count(1)), 8);
    // pat-1 again: the kept value.
    let reply = s
        .verify_kept::<Count>(s.search("Observation", &[]).await.unwrap(), "n")
        .await
        .unwrap();
    assert!(matches!(reply.answer, Reuse::Kept(ref c) if c.0 == 1));

    // pat-2 on the same entry: not pat-1's kept value; verified for pat-2, who sees
    // nothing.
    let s = guard.session(&two);
    let reply = s
        .verify_kept::<Count>(s.search("Observation", &[]).await.unwrap(), "n")
        .await
        .unwrap();
    let Reuse::Fresh(verified) = reply.answer else {
        panic!("pat-2 must not get pat-1's kept answer")
    };
    assert_eq!(verified.report.kept, 0);
    assert_eq!(verified.report.removed, 1);
    // Every answer was recorded, kept or not.
    assert_eq!(audit.records().len(), 3);
}

#[tokio::test]
async fn a_read_kept_for_one_principal_is_not_served_to_another() {
    let upstream = OneEntry::new(observation_of("pat-1"));
    let (guard, _) = guard(upstream);
    let one = Actor::new(patient("pat-1"));
    let two = Actor::new(patient("pat-2"));
    let target = Target::Current {
        rt: "Observation",
        id: "o1",
    };
    let reply = guard
        .session(&one)
        .read_kept::<Count>(target, "r")
        .await
        .unwrap();
    reply.keeper.keep(Arc::new(Count(7)), 8);
    let again = guard
        .session(&one)
        .read_kept::<Count>(target, "r")
        .await
        .unwrap();
    assert!(matches!(again.answer, Reuse::Kept(ref c) if c.0 == 7));
    let other = guard.session(&two).read_kept::<Count>(target, "r").await;
    assert!(matches!(other, Err(GuardError::NotFound)));
}

#[tokio::test]
async fn a_write_the_rules_refuse_is_never_sent() {
    let upstream = OneEntry::new(json!({"resourceType": "Communication", "id": "c1"}));
    let (guard, audit) = guard(upstream.clone());
    let one = Actor::new(patient("pat-1"));
    // A message sent as another patient.
    let body = json!({"resourceType": "Communication", "status": "in-progress",
        "subject": {"reference": "Patient/pat-2"},
        "sender": {"reference": "Patient/pat-2"}});
    let sent = guard
        .session(&one)
        .create("Communication", &body, None, None)
        .await;
    assert!(matches!(sent, Err(GuardError::Denied(_))), "{sent:?}");
    assert_eq!(upstream.requests(), 0, "nothing was sent");
    assert_eq!(audit.records()[0].decision, Decision::Denied);
}

#[tokio::test]
async fn what_a_write_answers_is_shown_only_if_the_principal_may_read_it() {
    // An EHR that answers a write with another patient's resource.
    let upstream = OneEntry::new(observation_of("pat-2"));
    let (guard, _) = guard(upstream);
    let one = Actor::new(patient("pat-1"));
    let body = json!({"resourceType": "Communication", "status": "in-progress",
        "subject": {"reference": "Patient/pat-1"},
        "sender": {"reference": "Patient/pat-1"}});
    let written = guard
        .session(&one)
        .create("Communication", &body, None, None)
        .await
        .unwrap();
    assert!(matches!(written.body, WrittenBody::Hidden { .. }));
}

#[tokio::test]
async fn acting_for_one_patient_narrows_to_that_patient() {
    let parent = Principal {
        subject: "RelatedPerson/rp".to_owned(),
        client_id: Some("portal".to_owned()),
        patients: vec!["c1".to_owned(), "c2".to_owned()],
        fhir_user: Some(Reference::new("RelatedPerson", "rp")),
        scopes: ScopeSet::parse("patient/*.rs"),
        expires_at: None,
        issuer: None,
        proxies: Vec::new(),
    };
    let upstream = OneEntry::new(observation_of("c1"));
    let (guard, _) = guard(upstream.clone());
    let for_c2 = Actor::acting_for(&parent, "c2");
    assert_eq!(for_c2.principal().patients, vec!["c2".to_owned()]);
    let read = guard.session(&for_c2).read("Observation", "o1").await;
    assert!(
        matches!(read, Err(GuardError::NotFound)),
        "c1's record, acting for c2"
    );
    // The cache partition stays the login's: both children.
    let seen = upstream.seen.lock().unwrap();
    let partition = seen[0].partition.as_ref().unwrap();
    assert_eq!(partition.patients(), ["c1".to_owned(), "c2".to_owned()]);
}

/// A sink that refuses every record, as the gateway's does under
/// `[audit] on_failure = "refuse"` while the trail cannot be written.
#[derive(Debug, Default)]
struct RefusingSink;

#[async_trait::async_trait]
impl portico_access::audit::AuditSink for RefusingSink {
    async fn record(
        &self,
        _: &portico_access::audit::AuditRecord,
    ) -> Result<(), portico_access::audit::AuditError> {
        Err(portico_access::audit::AuditError("disk full".to_owned()))
    }
}

#[tokio::test]
async fn nothing_is_answered_or_sent_that_could_not_be_recorded() {
    let upstream = OneEntry::new(observation_of("pat-1"));
    let guard = Guard::new(
        upstream.clone(),
        Policy::new("http://ehr.example/fhir"),
        Arc::new(RefusingSink),
    );
    let one = Actor::new(patient("pat-1"));
    let read = guard.session(&one).read("Observation", "o1").await;
    assert!(
        matches!(read, Err(GuardError::AuditUnavailable)),
        "{read:?}"
    );
    let body = json!({"resourceType": "Communication", "status": "in-progress",
        "subject": {"reference": "Patient/pat-1"},
        "sender": {"reference": "Patient/pat-1"}});
    let before = upstream.requests();
    let sent = guard
        .session(&one)
        .create("Communication", &body, None, None)
        .await;
    assert!(
        matches!(sent, Err(GuardError::AuditUnavailable)),
        "{sent:?}"
    );
    assert_eq!(upstream.requests(), before, "the write was not sent");
}

#[tokio::test]
async fn a_write_is_recorded_before_it_is_sent_and_its_outcome_after() {
    use portico_access::audit::Phase;
    let upstream = OneEntry::new(json!({"resourceType": "Communication", "id": "c1",
        "status": "in-progress", "subject": {"reference": "Patient/pat-1"}}));
    let (guard, audit) = guard(upstream.clone());
    let one = Actor::new(patient("pat-1"));
    let body = json!({"resourceType": "Communication", "status": "in-progress",
        "subject": {"reference": "Patient/pat-1"},
        "sender": {"reference": "Patient/pat-1"}});
    guard
        .session(&one)
        .create("Communication", &body, None, None)
        .await
        .unwrap();
    let phases: Vec<_> = audit.records().iter().map(|r| r.phase).collect();
    assert_eq!(phases, [Some(Phase::Attempt), Some(Phase::Outcome)]);
    assert_eq!(audit.records()[1].upstream_status, Some(200));
    assert_eq!(upstream.requests(), 1);
}

/// A parent whose own record is `own`, acting read-only for `kid`.
fn read_only_parent() -> Arc<Principal> {
    let mut p = (*patient("own")).clone();
    p.subject = "RelatedPerson/rp-1".to_owned();
    p.patients = vec!["kid".to_owned()];
    p.fhir_user = Some(Reference::new("RelatedPerson", "rp-1"));
    p.scopes = ScopeSet::parse("patient/*.cruds");
    p.proxies = vec![portico_access::ProxyGrant {
        patient: "kid".to_owned(),
        relationship: "rp-1".to_owned(),
        level: portico_access::AccessLevel::ReadOnly,
        withheld: Arc::new(Vec::new()),
    }];
    Arc::new(p)
}

/// The domain writes (a payment record, a rescheduling patch, a rule-checked update) skip
/// the patient write rules but not the proxy's level: a read-only proxy's is refused
/// before anything is sent, and recorded.
#[tokio::test]
async fn a_read_only_proxy_makes_no_domain_write() {
    let appointment = json!({"resourceType": "Appointment", "id": "a1", "status": "booked",
        "participant": [{"actor": {"reference": "Patient/kid"}, "status": "accepted"}]});
    let upstream = OneEntry::new(appointment.clone());
    let (guard, audit) = guard(upstream.clone());
    let parent = Actor::new(read_only_parent());
    let session = guard.session(&parent);
    let proxy_refusal = |e: &GuardError| {
        e.denial()
            .is_some_and(|d| d.reason() == portico_access::DenialReason::ProxyNotPermitted)
    };

    let payment = json!({"resourceType": "PaymentReconciliation", "status": "active"});
    let created = session
        .create_record("PaymentReconciliation", &payment, None, None)
        .await;
    assert!(created.as_ref().is_err_and(proxy_refusal), "{created:?}");

    let base = Base {
        rt: "Appointment",
        id: "a1",
        resource: &appointment,
        version: Some("1"),
    };
    let patch = json!([{"op": "replace", "path": "/status", "value": "cancelled"}]);
    let patched = session
        .patch_with_rule::<GuardError>(base, &patch, |_, _| Ok(()))
        .await;
    assert!(patched.as_ref().is_err_and(proxy_refusal), "{patched:?}");

    let mut cancelled = appointment.clone();
    cancelled["status"] = json!("cancelled");
    let updated = session
        .update_with_rule::<GuardError>(base, &cancelled, |_, _| Ok(()))
        .await;
    assert!(updated.as_ref().is_err_and(proxy_refusal), "{updated:?}");

    assert_eq!(upstream.requests(), 0, "nothing was sent");
    let records = audit.records();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.decision == Decision::Denied));
}
