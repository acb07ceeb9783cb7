use super::*;
use crate::fixture;
use portico_fhir::reference::Reference;
use portico_upstream::{FhirRequest, FhirResponse};

#[derive(Debug)]
struct NoUpstream;

#[async_trait::async_trait]
impl FhirUpstream for NoUpstream {
    async fn execute(&self, _: FhirRequest) -> Result<FhirResponse, UpstreamError> {
        Err(UpstreamError::Timeout)
    }
}

#[test]
fn acting_for_a_child_excludes_the_parents_own_record() {
    let portal = Portal::new(
        Arc::new(NoUpstream),
        Policy::new("http://ehr.example/fhir"),
        EhrProfile::built_in("generic-r4").unwrap(),
        Arc::new(portico_access::audit::MemoryAuditSink::default()),
        Arc::new(crate::payments::NoProcessor),
    );
    let principal = Arc::new(Principal {
        subject: "parent".to_owned(),
        client_id: Some("portal".to_owned()),
        patients: vec!["child".to_owned()],
        fhir_user: Some(Reference::new("Patient", "parent")),
        scopes: portico_access::ScopeSet::parse("patient/*.rs user/*.rs"),
        expires_at: None,
        issuer: None,
        proxies: Vec::new(),
    });
    let caller = Caller::new(principal.clone(), Some("child")).unwrap();
    let ctx = portal.ctx(&caller);
    let parents = serde_json::json!({"resourceType": "Condition", "id": "c1",
        "subject": {"reference": "Patient/parent"}});
    let childs = serde_json::json!({"resourceType": "Condition", "id": "c2",
        "subject": {"reference": "Patient/child"}});
    // The login as a whole may read the parent's own record...
    assert!(portal.policy().check_read(&principal, &parents).is_ok());
    // ...but acting for the child, only the child's.
    assert!(ctx.acting().fhir_user.is_none());
    assert!(!ctx.belongs_to_patient(&parents));
    assert!(ctx.belongs_to_patient(&childs));
    // Acting for oneself keeps the fhirUser.
    let me = Principal {
        patients: vec!["parent".to_owned()],
        ..(*principal).clone()
    };
    let caller = Caller::new(Arc::new(me), None).unwrap();
    assert!(portal.ctx(&caller).acting().fhir_user.is_some());
}

/// Answers every request with the same Bundle and the same derived-value slot, as
/// a cache does for hits on one entry.
#[derive(Debug)]
struct OneEntry {
    body: String,
    slot: portico_upstream::Derived,
}

#[async_trait::async_trait]
impl FhirUpstream for OneEntry {
    async fn execute(&self, _: FhirRequest) -> Result<FhirResponse, UpstreamError> {
        let mut response = FhirResponse::new(200, self.body.clone());
        response.derived = Some(self.slot.clone());
        Ok(response)
    }
}

fn patient_principal(patient: &str) -> Arc<Principal> {
    Arc::new(Principal {
        subject: format!("Patient/{patient}"),
        client_id: Some("portal".to_owned()),
        patients: vec![patient.to_owned()],
        fhir_user: Some(Reference::new("Patient", patient)),
        scopes: portico_access::ScopeSet::parse("patient/*.rs"),
        expires_at: None,
        issuer: None,
        proxies: Vec::new(),
    })
}

#[tokio::test]
async fn a_verified_page_is_reused_only_for_the_principal_it_was_verified_for() {
    // One Observation of pat-1's.
    let bundle = fixture("ehr/searchset-observation.json");
    let upstream = Arc::new(OneEntry {
        body: bundle.to_string(),
        slot: portico_upstream::Derived::with_budget(1 << 20),
    });
    let audit = Arc::new(portico_access::audit::MemoryAuditSink::default());
    let portal = Portal::new(
        upstream.clone(),
        Policy::new("http://ehr.example/fhir"),
        EhrProfile::built_in("generic-r4").unwrap(),
        audit.clone(),
        Arc::new(crate::payments::NoProcessor),
    );
    let one = Caller::new(patient_principal("pat-1"), None).unwrap();
    let two = Caller::new(patient_principal("pat-2"), None).unwrap();
    for _ in 0..3 {
        let page = portal.ctx(&one).search("Observation", &[]).await.unwrap();
        assert_eq!(page.matches.len(), 1);
    }
    // The same entry, another patient: verified for them, not reused.
    let page = portal.ctx(&two).search("Observation", &[]).await.unwrap();
    assert!(page.matches.is_empty(), "pat-2 must not see pat-1's page");
    assert_eq!(page.removed, 1);
    let kept = format!("portal\n{}", portal.ctx(&one).acting().fingerprint());
    let shared = portal
        .ctx(&one)
        .search_shared("Observation", &[])
        .await
        .unwrap()
        .page;
    assert!(
        Arc::ptr_eq(&shared, &upstream.slot.get::<Page>(&kept).unwrap()),
        "a shared search hands out the kept page itself"
    );
    // Every answer was audited, reused or not.
    assert_eq!(audit.records().len(), 5);
}

#[tokio::test]
async fn a_page_verified_for_one_child_is_not_reused_for_the_other_by_the_same_login() {
    // One login acting for two patients (a parent for two children): both reach the
    // same cache entry (the partition names both), so only the acting patient in the
    // kept page's key keeps one child's page from the other.
    // The searchset of one Observation, made c1's.
    let mut bundle = fixture("ehr/searchset-observation.json");
    bundle["entry"][0]["resource"]["subject"]["reference"] = "Patient/c1".into();
    let upstream = Arc::new(OneEntry {
        body: bundle.to_string(),
        slot: portico_upstream::Derived::with_budget(1 << 20),
    });
    let portal = Portal::new(
        upstream,
        Policy::new("http://ehr.example/fhir"),
        EhrProfile::built_in("generic-r4").unwrap(),
        Arc::new(portico_access::audit::MemoryAuditSink::default()),
        Arc::new(crate::payments::NoProcessor),
    );
    let parent = Arc::new(Principal {
        subject: "RelatedPerson/parent".to_owned(),
        client_id: Some("portal".to_owned()),
        patients: vec!["c1".to_owned(), "c2".to_owned()],
        fhir_user: Some(Reference::new("RelatedPerson", "parent")),
        scopes: portico_access::ScopeSet::parse("patient/*.rs"),
        expires_at: None,
        issuer: None,
        proxies: Vec::new(),
    });
    let first = Caller::new(parent.clone(), Some("c1")).unwrap();
    let second = Caller::new(parent, Some("c2")).unwrap();
    for _ in 0..2 {
        let page = portal.ctx(&first).search("Observation", &[]).await.unwrap();
        assert_eq!(page.matches.len(), 1, "c1 sees c1's result");
    }
    let page = portal
        .ctx(&second)
        .search("Observation", &[])
        .await
        .unwrap();
    assert!(page.matches.is_empty(), "c2 must not see c1's page");
    assert_eq!(page.removed, 1);
}

#[tokio::test]
async fn search_all_refuses_an_answer_that_was_not_a_bundle() {
    let upstream = Arc::new(OneEntry {
        body: fixture("ehr/patient-pat-1.json").to_string(),
        slot: portico_upstream::Derived::with_budget(1 << 20),
    });
    let portal = Portal::new(
        upstream,
        Policy::new("http://ehr.example/fhir"),
        EhrProfile::built_in("generic-r4").unwrap(),
        Arc::new(portico_access::audit::MemoryAuditSink::default()),
        Arc::new(crate::payments::NoProcessor),
    );
    let caller = Caller::new(patient_principal("pat-1"), None).unwrap();
    let ctx = portal.ctx(&caller);
    // One page: replaced by an empty searchset, and says so.
    let page = ctx.search("Account", &[]).await.unwrap();
    assert!(page.replaced && page.matches.is_empty());
    // A collected search: an upstream error, not "no accounts".
    assert!(matches!(
        ctx.search_all("Account", &[], 10).await,
        Err(PortalError::Upstream(UpstreamError::MalformedBody { .. }))
    ));
}
