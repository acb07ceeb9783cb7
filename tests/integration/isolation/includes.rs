//! `_include`, `_revinclude` and their `:iterate` forms that would pull B's resources in
//! through shared resources (a practitioner, a location, a slot, a medication, the
//! organization). The gateway answers 200, but no entry of the Bundle may be B's.
//!
//! The test first asks the sandbox itself (with a system token, narrowed to A the way
//! the gateway must narrow) to show that most of these really do drag B's data along
//! upstream: a row is only worth something if the gateway's check is what stops it.

use super::{A, Attempt, Expect, Fixture, finish};

/// (name, path under `/fhir`, whether the sandbox can run it at all)
pub fn rows() -> Vec<(&'static str, &'static str, bool)> {
    vec![
        (
            "Practitioner revinclude Encounter:practitioner",
            "/Practitioner?_revinclude=Encounter:practitioner",
            true,
        ),
        (
            "Practitioner revinclude Appointment:practitioner",
            "/Practitioner?_revinclude=Appointment:practitioner",
            true,
        ),
        (
            "Practitioner revinclude Communication:recipient",
            "/Practitioner?_revinclude=Communication:recipient",
            true,
        ),
        (
            "Practitioner revinclude Communication:sender",
            "/Practitioner?_revinclude=Communication:sender",
            true,
        ),
        (
            "Practitioner revinclude CareTeam:participant",
            "/Practitioner?_revinclude=CareTeam:participant",
            true,
        ),
        (
            "Practitioner revinclude Patient:general-practitioner",
            "/Practitioner?_revinclude=Patient:general-practitioner",
            true,
        ),
        (
            "Practitioner revinclude ServiceRequest:requester",
            "/Practitioner?_revinclude=ServiceRequest:requester",
            true,
        ),
        (
            "Practitioner revinclude MedicationRequest:requester",
            "/Practitioner?_revinclude=MedicationRequest:requester",
            true,
        ),
        (
            "Practitioner revinclude Observation:performer",
            "/Practitioner?_revinclude=Observation:performer",
            true,
        ),
        (
            "Practitioner revinclude Procedure:performer",
            "/Practitioner?_revinclude=Procedure:performer",
            true,
        ),
        (
            "Practitioner revinclude DiagnosticReport:performer",
            "/Practitioner?_revinclude=DiagnosticReport:performer",
            true,
        ),
        (
            "Practitioner revinclude DocumentReference:author",
            "/Practitioner?_revinclude=DocumentReference:author",
            true,
        ),
        (
            "Practitioner revinclude Encounter then include its subject",
            "/Practitioner?_revinclude=Encounter:participant&_include:iterate=Encounter:subject",
            true,
        ),
        (
            "Organization revinclude Patient:organization",
            "/Organization?_revinclude=Patient:organization",
            true,
        ),
        (
            "Organization revinclude Encounter:service-provider",
            "/Organization?_revinclude=Encounter:service-provider",
            true,
        ),
        (
            "Organization revinclude Account:owner",
            "/Organization?_revinclude=Account:owner",
            true,
        ),
        (
            "Organization revinclude Invoice:issuer",
            "/Organization?_revinclude=Invoice:issuer",
            true,
        ),
        (
            "Location revinclude Encounter:location",
            "/Location?_revinclude=Encounter:location",
            true,
        ),
        (
            "Location revinclude Appointment:location",
            "/Location?_revinclude=Appointment:location",
            true,
        ),
        (
            "Location revinclude Immunization:location",
            "/Location?_revinclude=Immunization:location",
            true,
        ),
        (
            "Medication revinclude MedicationRequest:medication",
            "/Medication?_revinclude=MedicationRequest:medication",
            true,
        ),
        (
            "Medication revinclude MedicationDispense:medication",
            "/Medication?_revinclude=MedicationDispense:medication",
            true,
        ),
        (
            "Slot revinclude Appointment:slot",
            "/Slot?_count=500&_revinclude=Appointment:slot",
            true,
        ),
        (
            "Schedule revinclude Slot, iterate Appointment:slot",
            "/Schedule?_revinclude=Slot:schedule&_revinclude:iterate=Appointment:slot",
            true,
        ),
        (
            "Patient include general-practitioner, iterate back",
            "/Patient?_include=Patient:general-practitioner&_revinclude:iterate=Patient:general-practitioner",
            true,
        ),
        (
            "Patient include organization, iterate back",
            "/Patient?_include=Patient:organization&_revinclude:iterate=Patient:organization",
            true,
        ),
        (
            "Observation include performer, iterate back",
            "/Observation?_include=Observation:performer&_revinclude:iterate=Observation:performer",
            true,
        ),
        (
            "Encounter include participant, iterate back",
            "/Encounter?_include=Encounter:participant&_revinclude:iterate=Encounter:participant",
            true,
        ),
        (
            "Encounter include location, iterate back",
            "/Encounter?_include=Encounter:location&_revinclude:iterate=Encounter:location",
            true,
        ),
        (
            "Encounter include service-provider, iterate back",
            "/Encounter?_include=Encounter:service-provider&_revinclude:iterate=Encounter:service-provider",
            true,
        ),
        (
            "Appointment include practitioner, iterate back",
            "/Appointment?_include=Appointment:practitioner&_revinclude:iterate=Appointment:practitioner",
            true,
        ),
        (
            "Appointment include slot, schedule, slots, appointments",
            "/Appointment?_include=Appointment:slot&_include:iterate=Slot:schedule&_revinclude:iterate=Slot:schedule&_revinclude:iterate=Appointment:slot",
            true,
        ),
        (
            "Communication include recipient, iterate back",
            "/Communication?_include=Communication:recipient&_revinclude:iterate=Communication:recipient",
            true,
        ),
        (
            "CareTeam include participant, iterate back",
            "/CareTeam?_include=CareTeam:participant&_revinclude:iterate=CareTeam:participant",
            true,
        ),
        (
            "MedicationRequest include medication, iterate back",
            "/MedicationRequest?_include=MedicationRequest:medication&_revinclude:iterate=MedicationRequest:medication",
            true,
        ),
        (
            "MedicationRequest include requester, iterate back",
            "/MedicationRequest?_include=MedicationRequest:requester&_revinclude:iterate=MedicationRequest:requester",
            true,
        ),
        (
            "ServiceRequest include performer, iterate back",
            "/ServiceRequest?_include=ServiceRequest:performer&_revinclude:iterate=ServiceRequest:performer",
            true,
        ),
        (
            "Invoice include issuer, iterate back",
            "/Invoice?_include=Invoice:issuer&_revinclude:iterate=Invoice:issuer",
            true,
        ),
        (
            "Account include owner, iterate back",
            "/Account?_include=Account:owner&_revinclude:iterate=Account:owner",
            true,
        ),
        (
            "Encounter include practitioner, recurse back",
            "/Encounter?_include=Encounter:practitioner&_revinclude:recurse=Encounter:practitioner",
            true,
        ),
        (
            "Observation include subject (A only)",
            "/Observation?_include=Observation:subject",
            true,
        ),
        (
            "Patient revinclude Observation:subject (A only)",
            "/Patient?_revinclude=Observation:subject",
            true,
        ),
        (
            "Practitioner wildcard revinclude",
            "/Practitioner?_revinclude=*",
            false,
        ),
        (
            "Encounter wildcard include, iterate back",
            "/Encounter?_include=*&_revinclude:iterate=*",
            false,
        ),
    ]
}

pub fn attempts(_fx: &Fixture) -> Vec<Attempt> {
    rows()
        .into_iter()
        .map(|(name, path, supported)| {
            // The sandbox cannot run wildcards: refusing them is fine, leaking is not.
            let expect = if supported {
                Expect::OnlyA(0)
            } else {
                Expect::DeniedOrOnlyA
            };
            Attempt::get(format!("include: {name}"), path).expect(expect)
        })
        .collect()
}

/// Runs `path` at the sandbox, narrowed to A as the gateway must, with a system token:
/// whether B's data would come back if the gateway did not check each entry.
async fn leaks_upstream(fx: &Fixture, path: &str) -> bool {
    let token = fx
        .app
        .sandbox
        .auth()
        .issue_access_token("portico-system", "system/*.rs", None);
    let (ty, query) = path
        .trim_start_matches('/')
        .split_once('?')
        .unwrap_or((path, ""));
    let narrowing = match ty {
        "Patient" => format!("&_id={A}"),
        t if super::REFERENCE_TYPES.contains(&t) => String::new(),
        _ => format!("&patient={A}"),
    };
    let url = format!("{}/{ty}?{query}{narrowing}", fx.up_fhir);
    let res = fx
        .send_url(
            "GET",
            &url,
            &[("Authorization".into(), format!("Bearer {token}"))],
            None,
        )
        .await;
    res.status == 200 && res.json().is_some_and(|j| fx.only_a(&j).is_err())
}

#[tokio::test]
async fn includes_never_pull_in_b() {
    let fx = Fixture::new().await;
    let mut real = 0;
    for (_, path, _) in rows() {
        if leaks_upstream(&fx, path).await {
            real += 1;
        }
    }
    println!(
        "isolation/includes: {real} of {} rows drag B's data along upstream",
        rows().len()
    );
    assert!(
        real >= 25,
        "only {real} include rows are real attacks upstream"
    );
    let rows = attempts(&fx);
    let failures = fx.run_all(&rows).await;
    finish("includes", rows.len(), &failures);
}
