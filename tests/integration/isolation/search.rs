//! Searches naming B: every spelling of B's reference in every parameter that links a
//! type to the patient compartment, chains and `_has`, lists mixing A and B, searches by
//! B's identifiers and demographics, and `_search` by POST. Naming B is refused (403),
//! never silently widened or narrowed; probes that do not name B directly (ids of B's
//! resources, demographics) may be refused or answered with A's data only.

use super::{Attempt, Expect, Fixture, Tok, enc, finish};

pub fn attempts(fx: &Fixture) -> Vec<Attempt> {
    let mut rows = Vec::new();
    let forbidden = |name: String, path: String| Attempt::get(name, path).expect(Expect::Forbidden);

    // `patient=` naming B, on every compartment type B has data of.
    for ty in fx.b_types() {
        rows.push(forbidden(
            format!("patient=B on {ty}"),
            format!("/{ty}?patient=pat-2"),
        ));
    }
    rows.push(forbidden(
        "patient=Patient/B on Condition".into(),
        "/Condition?patient=Patient/pat-2".into(),
    ));

    // Every spelling on Observation.
    let (mrn_system, mrn) = &fx.b_mrn;
    let ident = enc(&format!("{mrn_system}|{mrn}"));
    let spellings = [
        ("subject=Patient/B", "subject=Patient/pat-2".to_owned()),
        ("subject:Patient=B", "subject:Patient=pat-2".to_owned()),
        ("patient:Patient=B", "patient:Patient=pat-2".to_owned()),
        ("subject=B untyped", "subject=pat-2".to_owned()),
        (
            "subject=absolute EHR URL of B",
            format!("subject={}", enc(&format!("{}/Patient/pat-2", fx.up_fhir))),
        ),
        (
            "subject=absolute gateway URL of B",
            format!("subject={}", enc(&format!("{}/Patient/pat-2", fx.gw))),
        ),
        (
            "patient=absolute gateway URL of B",
            format!("patient={}", enc(&format!("{}/Patient/pat-2", fx.gw))),
        ),
        (
            "subject=versioned reference to B",
            "subject=Patient/pat-2/_history/1".to_owned(),
        ),
        ("patient=A,B", "patient=pat-1,pat-2".to_owned()),
        ("patient=B,A", "patient=pat-2,pat-1".to_owned()),
        (
            "subject=Patient/A,Patient/B",
            "subject=Patient/pat-1,Patient/pat-2".to_owned(),
        ),
        (
            "patient=A and patient=B",
            "patient=pat-1&patient=pat-2".to_owned(),
        ),
        (
            "patient=A and subject=B",
            "patient=pat-1&subject=Patient/pat-2".to_owned(),
        ),
        (
            "patient=B with a category",
            "patient=pat-2&category=laboratory".to_owned(),
        ),
        (
            "patient=B with _summary=count",
            "patient=pat-2&_summary=count".to_owned(),
        ),
        (
            "patient=B with _count=0",
            "patient=pat-2&_count=0".to_owned(),
        ),
        ("patient=B sorted", "patient=pat-2&_sort=-date".to_owned()),
        (
            "chained subject.identifier of B",
            format!("subject.identifier={ident}"),
        ),
        (
            "chained subject:Patient.identifier of B",
            format!("subject:Patient.identifier={ident}"),
        ),
        (
            "chained patient.identifier of B",
            format!("patient.identifier={ident}"),
        ),
        (
            "chained subject.name of B",
            format!("subject.name={}", enc(&fx.b_family)),
        ),
        (
            "chained patient.family of B",
            format!("patient.family={}", enc(&fx.b_family)),
        ),
        ("chained subject._id of B", "subject._id=pat-2".to_owned()),
        ("chained patient._id of B", "patient._id=pat-2".to_owned()),
        ("performer=Patient/B", "performer=Patient/pat-2".to_owned()),
        (
            "_has on Observation naming B",
            "_has:Observation:patient:subject=Patient/pat-2".to_owned(),
        ),
    ];
    for (name, query) in spellings {
        rows.push(forbidden(
            format!("Observation {name}"),
            format!("/Observation?{query}"),
        ));
    }

    // Compartment parameters other than `patient` naming B, per type.
    let links = [
        ("Communication", "sender"),
        ("Communication", "recipient"),
        ("Communication", "subject"),
        ("Appointment", "actor"),
        ("AppointmentResponse", "actor"),
        ("CareTeam", "participant"),
        ("CareTeam", "subject"),
        ("Coverage", "beneficiary"),
        ("Coverage", "subscriber"),
        ("Coverage", "payor"),
        ("Coverage", "policy-holder"),
        ("Account", "subject"),
        ("Invoice", "subject"),
        ("Invoice", "recipient"),
        ("MedicationDispense", "subject"),
        ("MedicationDispense", "receiver"),
        ("MedicationRequest", "subject"),
        ("AllergyIntolerance", "recorder"),
        ("AllergyIntolerance", "asserter"),
        ("Condition", "asserter"),
        ("DocumentReference", "author"),
        ("DocumentReference", "subject"),
        ("DiagnosticReport", "subject"),
        ("Procedure", "performer"),
        ("ServiceRequest", "performer"),
        ("Encounter", "subject"),
        ("Task", "subject"),
        ("Provenance", "target"),
        ("CommunicationRequest", "requester"),
    ];
    for (ty, param) in links {
        rows.push(forbidden(
            format!("{param}=Patient/B on {ty}"),
            format!("/{ty}?{param}=Patient/pat-2"),
        ));
    }
    for (ty, query) in [
        ("RelatedPerson", "patient=pat-2"),
        ("Goal", "patient=pat-2"),
        ("CarePlan", "patient=pat-2"),
        ("Provenance", "patient=pat-2"),
        ("Group", "member=Patient/pat-2"),
        ("List", "subject=Patient/pat-2"),
        ("Consent", "patient=pat-2"),
        ("Person", "patient=pat-2"),
        ("EpisodeOfCare", "patient=pat-2"),
    ] {
        rows.push(forbidden(
            format!("{query} on {ty}"),
            format!("/{ty}?{query}"),
        ));
    }

    // `_has` from shared reference data into B's compartment.
    for (name, path) in [
        (
            "Practitioner _has Encounter of B",
            "/Practitioner?_has:Encounter:practitioner:patient=pat-2",
        ),
        (
            "Practitioner _has Appointment of B",
            "/Practitioner?_has:Appointment:practitioner:patient=Patient/pat-2",
        ),
        (
            "Location _has Encounter of B",
            "/Location?_has:Encounter:location:subject=Patient/pat-2",
        ),
        (
            "Patient _has Observation of B",
            "/Patient?_has:Observation:patient:subject=Patient/pat-2",
        ),
        (
            "Medication _has MedicationRequest of B",
            "/Medication?_has:MedicationRequest:medication:patient=pat-2",
        ),
        (
            "Practitioner _has CareTeam of B",
            "/Practitioner?_has:CareTeam:participant:patient=pat-2",
        ),
        (
            "Slot _has Appointment of B",
            "/Slot?_has:Appointment:slot:patient=pat-2",
        ),
        (
            "Organization _has Coverage of B",
            "/Organization?_has:Coverage:payor:beneficiary=Patient/pat-2",
        ),
        (
            "Location _has Appointment of B",
            "/Location?_has:Appointment:location:actor=Patient/pat-2",
        ),
        (
            "Practitioner _has Communication from B",
            "/Practitioner?_has:Communication:recipient:sender=Patient/pat-2",
        ),
        (
            "Slot chained to B through its schedule",
            "/Slot?schedule.actor=Patient/pat-2",
        ),
        (
            "Medication _has chained to B's name",
            "/Medication?_has:MedicationRequest:medication:subject.name=x",
        ),
    ] {
        rows.push(forbidden(name.into(), path.into()));
    }

    // Probes that name B's resources or demographics but not B: refused, or A's data only.
    let probe = |name: String, path: String| Attempt::get(name, path).expect(Expect::DeniedOrOnlyA);
    let pairs = [
        ("Observation", "_id", "Observation"),
        ("Condition", "_id", "Condition"),
        ("Observation", "encounter", "Encounter"),
        ("Condition", "encounter", "Encounter"),
        ("DiagnosticReport", "result", "Observation"),
        ("Communication", "part-of", "Communication"),
        ("MedicationDispense", "prescription", "MedicationRequest"),
        ("Encounter", "appointment", "Appointment"),
        ("Invoice", "account", "Account"),
        ("Encounter", "_id", "Encounter"),
    ];
    for (ty, param, target) in pairs {
        let Some(id) = fx.b_res.get(target).and_then(|v| v.first()) else {
            continue;
        };
        let value = if param == "_id" {
            id.clone()
        } else {
            format!("{target}/{id}")
        };
        rows.push(probe(
            format!("{ty}?{param}= B's {target}"),
            format!("/{ty}?{param}={value}"),
        ));
    }
    let obs_a = fx.a("Observation");
    let obs_b = fx.b("Observation");
    rows.extend([
        probe(
            "Observation _id list mixing A and B".into(),
            format!("/Observation?_id={obs_a},{obs_b}"),
        ),
        probe("Patient?_id=B".into(), "/Patient?_id=pat-2".into()),
        probe("Patient?_id=A,B".into(), "/Patient?_id=pat-1,pat-2".into()),
        probe(
            "Patient by B's MRN".into(),
            format!("/Patient?identifier={ident}"),
        ),
        probe(
            "Patient by B's MRN value only".into(),
            format!("/Patient?identifier={}", enc(mrn)),
        ),
        probe(
            "Patient by B's family name".into(),
            format!("/Patient?family={}", enc(&fx.b_family)),
        ),
        probe(
            "Patient by B's name".into(),
            format!("/Patient?name={}", enc(&fx.b_family)),
        ),
        probe(
            "Patient by B's e-mail".into(),
            format!("/Patient?email={}", enc(&fx.b_secrets[2])),
        ),
        probe(
            "Patient?link=Patient/B".into(),
            "/Patient?link=Patient/pat-2".into(),
        ),
        probe(
            "Patient _has B's Observation id".into(),
            format!("/Patient?_has:Observation:patient:_id={obs_b}"),
        ),
        probe(
            "Observation subject:identifier of B".into(),
            format!("/Observation?subject:identifier={ident}"),
        ),
        probe(
            "Observation patient:missing".into(),
            "/Observation?patient:missing=true".into(),
        ),
        probe(
            "Observation subject:missing".into(),
            "/Observation?subject:missing=true".into(),
        ),
        probe(
            "Observation patient:not=A".into(),
            "/Observation?patient:not=pat-1".into(),
        ),
        probe(
            "Observation subject:below".into(),
            "/Observation?subject:below=Patient".into(),
        ),
        probe(
            "Observation subject=Patient (no id)".into(),
            "/Observation?subject=Patient".into(),
        ),
        probe(
            "Observation subject=Group".into(),
            "/Observation?subject=Group/pat-2".into(),
        ),
        probe(
            "Schedule?actor=Patient/B".into(),
            "/Schedule?actor=Patient/pat-2".into(),
        ),
        probe(
            "Observation subject=B at a foreign server".into(),
            format!(
                "/Observation?subject={}",
                enc("https://evil.example/fhir/Patient/pat-2")
            ),
        ),
        probe(
            "Observation ?_filter naming B".into(),
            format!("/Observation?_filter={}", enc("subject eq Patient/pat-2")),
        ),
        probe(
            "Observation _query".into(),
            "/Observation?_query=everything&patient=pat-2".into(),
        ),
        probe("Patient _id:not=A".into(), "/Patient?_id:not=pat-1".into()),
        probe(
            "Patient _id:missing".into(),
            "/Patient?_id:missing=false".into(),
        ),
        probe("Patient _id:below".into(), "/Patient?_id:below=pat".into()),
        probe(
            "Observation as XML".into(),
            "/Observation?_format=xml".into(),
        ),
        probe(
            "B's Patient as XML".into(),
            "/Patient/pat-2?_format=application/fhir%2Bxml".into(),
        ),
        Attempt::get("B's Patient with Accept XML", "/Patient/pat-2")
            .header("Accept", "application/fhir+xml")
            .expect(Expect::Status(vec![404, 406])),
    ]);
    rows.push(forbidden(
        "Observation as XML naming B".into(),
        "/Observation?_format=xml&patient=pat-2".into(),
    ));

    // Not reachable at all: types of no one's portal (AuditEvent is in the R4 compartment,
    // but security records are never served to patients; the demo's sandbox stores them).
    for ty in ["PaymentNotice", "AuditEvent", "Device", "Basic"] {
        rows.push(
            Attempt::get(format!("search {ty}"), format!("/{ty}"))
                .expect(Expect::Status(vec![403, 404])),
        );
    }
    // Payment records the portal made are the patient's own (linked by an extension);
    // another patient's are out of reach.
    rows.push(forbidden(
        "B's payment records".into(),
        "/PaymentReconciliation?patient=pat-2".into(),
    ));
    let task_b = fx.b_res.get("Task").and_then(|v| v.first()).cloned();
    if let Some(task) = task_b {
        rows.push(
            Attempt::get("read B's Task", format!("/Task/{task}"))
                .expect(Expect::Status(vec![403, 404])),
        );
    }

    // `_search` by POST: the body's parameters count as much as the query's.
    let form = |name: &str, query: &str, body: &str| {
        Attempt::new(name, "POST", format!("/Observation/_search{query}"))
            .body(
                "application/x-www-form-urlencoded",
                body.as_bytes().to_vec(),
            )
            .expect(Expect::Forbidden)
            .may_change()
    };
    rows.extend([
        form("_search form patient=B", "", "patient=pat-2"),
        form(
            "_search form subject=Patient/B",
            "",
            "subject=Patient%2Fpat-2",
        ),
        form("_search query A, form B", "?patient=pat-1", "patient=pat-2"),
        form("_search query B, form A", "?patient=pat-2", "patient=pat-1"),
        form("_search form A,B", "", "patient=pat-1%2Cpat-2"),
        form(
            "_search form chained identifier",
            "",
            &format!("subject.identifier={ident}"),
        ),
        Attempt::new("_search Patient _id=B", "POST", "/Patient/_search")
            .body("application/x-www-form-urlencoded", b"_id=pat-2".to_vec())
            .may_change(),
        Attempt::new(
            "_search with a JSON body naming B",
            "POST",
            "/Observation/_search",
        )
        .json(&serde_json::json!({"patient": "pat-2"}))
        .expect(Expect::Status(vec![400, 403, 415, 422]))
        .may_change(),
    ]);
    // B's own token naming A: symmetric.
    rows.push(
        Attempt::get("B searches A's Observations", "/Observation?patient=pat-1")
            .token(Tok::B)
            .expect(Expect::Forbidden),
    );
    rows
}

#[tokio::test]
async fn searches_naming_b_are_refused() {
    let fx = Fixture::new().await;
    let mut failures = Vec::new();
    // Controls: A's own searches work and return A's data, so a refusal means something.
    for (name, path) in [
        ("control: Observation with no patient", "/Observation"),
        (
            "control: Observation patient=A",
            "/Observation?patient=pat-1",
        ),
        (
            "control: Observation subject=Patient/A",
            "/Observation?subject=Patient/pat-1",
        ),
        ("control: Communication", "/Communication"),
        ("control: Appointment", "/Appointment"),
        ("control: Patient", "/Patient"),
        ("control: Practitioner (reference data)", "/Practitioner"),
        ("control: Slot (reference data)", "/Slot?_count=5"),
    ] {
        let row = Attempt::get(name, path).expect(Expect::OnlyA(1));
        if let Err(e) = fx.check(&row).await {
            failures.push(e);
        }
    }
    // `_summary=count` counts A's Observations, not everyone's.
    let r = fx.get_a("/Observation?_summary=count").await;
    let total = r.json().and_then(|j| j["total"].as_u64());
    let expected = fx.a_res.get("Observation").map_or(0, Vec::len) as u64;
    if r.status == 200 && total != Some(expected) {
        failures.push(format!(
            "[_summary=count] total {total:?}, but A has {expected} Observations"
        ));
    }
    let rows = attempts(&fx);
    failures.extend(fx.run_all(&rows).await);
    finish("search", rows.len(), &failures);
}
