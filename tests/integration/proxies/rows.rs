//! The row tables, one function per category, and the category tests.

use serde_json::{Value, json};

use super::{CLINICAL_TYPES, Expect, Fixture, Leaks, Row, Who};

const RECORD_KINDS: &[&str] = &[
    "allergies",
    "conditions",
    "medications",
    "immunizations",
    "lab-results",
    "vital-signs",
    "documents",
    "encounters",
    "procedures",
    "care-team",
];

/// Every way one withheld record of `patient` could be reached through the facade.
fn withheld_record(
    tag: &str,
    who: &Who,
    patient: &str,
    (ty, id): (&str, &str),
    leaks: &Leaks,
) -> Vec<Row> {
    let p = patient;
    let n = |what: &str| format!("{tag}: {ty}/{id} {what}");
    let search = |what: &str, query: String| {
        Row::get(n(what), who, format!("/fhir/{ty}?{query}")).leaks(leaks)
    };
    vec![
        Row::get(n("read"), who, format!("/fhir/{ty}/{id}"))
            .expect(Expect::Status(404))
            .leaks(leaks),
        Row::get(n("vread"), who, format!("/fhir/{ty}/{id}/_history/1"))
            .expect(Expect::Status(404))
            .leaks(leaks),
        Row::get(n("history"), who, format!("/fhir/{ty}/{id}/_history"))
            .expect(Expect::AnyOf(vec![200, 404]))
            .leaks(leaks),
        search("by _id", format!("_id={id}")),
        search("by patient", format!("patient={p}")),
        search("by subject", format!("subject=Patient/{p}")),
        search("with _elements", format!("patient={p}&_elements=id,status")),
        search("sorted", format!("patient={p}&_sort=-_lastUpdated")),
        search(
            "by _lastUpdated",
            format!("patient={p}&_lastUpdated=gt2000-01-01"),
        ),
        search("first page of one", format!("patient={p}&_count=1")),
        search("with _summary=true", format!("patient={p}&_summary=true")),
        search("with _total", format!("patient={p}&_total=accurate")),
        search("counted", format!("patient={p}&_summary=count"))
            .expect(Expect::Refused("proxy_not_permitted")),
    ]
}

/// The paths that gather a patient's whole record or cross resources: `$everything`,
/// includes, `_has`, chains.
fn gathering(tag: &str, who: &Who, p: &str, leaks: &Leaks) -> Vec<Row> {
    let row = |what: &str, path: String| Row::get(format!("{tag}: {what}"), who, path).leaks(leaks);
    let mut rows = vec![
        row("$everything", format!("/fhir/Patient/{p}/$everything")),
        row(
            "$everything in pages of 5",
            format!("/fhir/Patient/{p}/$everything?_count=5"),
        ),
    ];
    for (what, query) in [
        (
            "Condition + encounter",
            "Condition?patient={p}&_include=Condition:encounter",
        ),
        (
            "Encounter + conditions",
            "Encounter?patient={p}&_revinclude=Condition:encounter",
        ),
        (
            "Observation + encounter",
            "Observation?patient={p}&_include=Observation:encounter",
        ),
        (
            "Encounter + observations",
            "Encounter?patient={p}&_revinclude=Observation:encounter",
        ),
        (
            "MedicationDispense + prescription",
            "MedicationDispense?patient={p}&_include=MedicationDispense:prescription",
        ),
        (
            "MedicationRequest + dispenses",
            "MedicationRequest?patient={p}&_revinclude=MedicationDispense:prescription",
        ),
        (
            "MedicationRequest + dispenses, iterated",
            "MedicationRequest?patient={p}&_revinclude:iterate=MedicationDispense:prescription",
        ),
        (
            "Patient + conditions",
            "Patient?_id={p}&_revinclude=Condition:patient",
        ),
        (
            "Patient + observations",
            "Patient?_id={p}&_revinclude=Observation:patient",
        ),
        (
            "Patient + encounters",
            "Patient?_id={p}&_revinclude=Encounter:patient",
        ),
        (
            "Patient + prescriptions",
            "Patient?_id={p}&_revinclude=MedicationRequest:patient",
        ),
    ] {
        rows.push(row(what, format!("/fhir/{}", query.replace("{p}", p))));
    }
    for (what, query) in [
        (
            "_has on a label",
            "Patient?_id={p}&_has:Condition:patient:_security=R",
        ),
        (
            "_has on a code",
            "Patient?_id={p}&_has:Observation:patient:category=laboratory",
        ),
        (
            "chain through encounter",
            "Condition?patient={p}&encounter.status=finished",
        ),
        (
            "chain through prescription",
            "MedicationDispense?patient={p}&prescription.status=active",
        ),
    ] {
        rows.push(
            row(what, format!("/fhir/{}", query.replace("{p}", p)))
                .expect(Expect::Refused("proxy_not_permitted")),
        );
    }
    rows
}

/// The portal API's reads, acting for `p`.
fn portal_reads(tag: &str, who: &Who, p: &str, leaks: &Leaks) -> Vec<Row> {
    let row = |path: String| {
        Row::get(
            format!("{tag}: portal {path}"),
            who,
            format!("/api/v1{path}"),
        )
        .acting_for(p)
        .leaks(leaks)
    };
    let mut rows: Vec<Row> = RECORD_KINDS
        .iter()
        .map(|k| row(format!("/records/{k}")))
        .collect();
    for path in [
        "/medications",
        "/refill-requests",
        "/dashboard",
        "/appointments",
        "/me",
        "/messages/threads",
        "/referrals",
        "/bills",
    ] {
        rows.push(row(path.to_owned()));
    }
    rows
}

/// Every facade path to each of `patient`'s withheld records, the paths that gather the
/// whole record, and the portal's reads: all for `who`, none may show `leaks`.
fn withheld_everywhere(
    tag: &str,
    who: &Who,
    patient: &str,
    withheld: &[(String, String)],
    leaks: &Leaks,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (ty, id) in withheld {
        rows.extend(withheld_record(tag, who, patient, (ty, id), leaks));
    }
    rows.extend(gathering(tag, who, patient, leaks));
    rows.extend(portal_reads(tag, who, patient, leaks));
    rows
}

/// A parent and their 15-year-old's confidential records.
pub fn teenager(fx: &Fixture) -> Vec<Row> {
    let f = &fx.families;
    let who = fx.parent();
    let leaks = fx.withheld(&f.teen);
    let mut rows = withheld_everywhere("parent/teen", &who, &f.teen, &f.teen_sensitive, &leaks);
    // Refilling the confidential prescription: it does not exist for the parent.
    if let Some((_, mr)) = f
        .teen_sensitive
        .iter()
        .find(|(t, _)| t == "MedicationRequest")
    {
        rows.push(
            Row::post(
                "parent/teen: portal refill of the confidential prescription",
                &who,
                format!("/api/v1/medications/{mr}/refill-requests"),
                json!({}),
            )
            .acting_for(&f.teen)
            .expect(Expect::Status(404))
            .leaks(&leaks),
        );
    }
    rows
}

/// A daughter caring for her father, and his substance-use (42 CFR Part 2) records.
pub fn part2(fx: &Fixture) -> Vec<Row> {
    let f = &fx.families;
    let who = fx.daughter();
    let leaks = fx.withheld(&f.elder);
    withheld_everywhere("daughter/elder", &who, &f.elder, &f.elder_sensitive, &leaks)
}

/// A grandparent (not a parent: nothing released for a young child) and the child's
/// psychiatric record.
pub fn grandparent(fx: &Fixture) -> Vec<Row> {
    let f = &fx.families;
    let who = fx.grandparent();
    let leaks = fx.withheld(&f.child);
    withheld_everywhere(
        "grandparent/child",
        &who,
        &f.child,
        &f.child_sensitive,
        &leaks,
    )
}

/// The first stored resource of `patient` of each type, as (type, id).
fn first_of_each(fx: &Fixture, patient: &str, types: &[&str]) -> Vec<(String, String)> {
    let record = fx.record_of(patient);
    types
        .iter()
        .filter_map(|ty| {
            record.iter().find(|(t, _)| t == ty).map(|(t, r)| {
                (
                    (*t).to_owned(),
                    r["id"].as_str().unwrap_or_default().to_owned(),
                )
            })
        })
        .collect()
}

/// Portal and facade writes of a proxy who may not make them, on `patient`'s record.
fn refused_writes(
    fx: &Fixture,
    tag: &str,
    who: &Who,
    patient: &str,
    pay_refused: bool,
) -> Vec<Row> {
    let record = fx.record_of(patient);
    let id_of = |ty: &str, pick: &dyn Fn(&Value) -> bool| {
        record
            .iter()
            .find(|(t, r)| *t == ty && pick(r))
            .and_then(|(_, r)| r["id"].as_str())
            .unwrap_or("missing")
            .to_owned()
    };
    let appointment = id_of("Appointment", &|r| r["status"] == "booked");
    let prescription = id_of("MedicationRequest", &|r| r["status"] == "active");
    let account = id_of("Account", &|_| true);
    let thread = id_of("Communication", &|_| true);
    let care_team = id_of("CareTeam", &|_| true);
    let free_slot = fx
        .app
        .all_stored("Slot")
        .into_iter()
        .find(|s| s["status"] == "free")
        .and_then(|s| s["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let portal = |what: &str, path: String, body: Value| {
        Row::post(
            format!("{tag}: portal {what}"),
            who,
            format!("/api/v1{path}"),
            body,
        )
        .acting_for(patient)
        .expect(Expect::Refused("proxy_not_permitted"))
    };
    let mut rows = vec![
        portal(
            "book",
            "/appointments".into(),
            json!({"slot_id": free_slot, "reason": "checkup"}),
        ),
        portal(
            "cancel",
            format!("/appointments/{appointment}/cancel"),
            json!({"reason": "x"}),
        ),
        portal(
            "reschedule",
            format!("/appointments/{appointment}/reschedule"),
            json!({"slot_id": free_slot}),
        ),
        portal(
            "refill",
            format!("/medications/{prescription}/refill-requests"),
            json!({}),
        ),
        portal(
            "referral",
            "/referrals".into(),
            json!({"specialty": "cardiology", "reason": "chest pain"}),
        ),
        portal(
            "new thread",
            "/messages/threads".into(),
            json!({"recipient": format!("CareTeam/{care_team}"), "topic": "hello", "text": "hi"}),
        ),
        portal(
            "reply",
            format!("/messages/threads/{thread}/replies"),
            json!({"text": "hi"}),
        ),
    ];
    if pay_refused {
        rows.push(portal(
            "pay",
            format!("/bills/{account}/payments"),
            json!({"amount": {"value": 1.0, "currency": "USD"}, "payment_token": "tok_ok"}),
        ));
    }
    let facade = |what: &str, path: &str, body: Value| {
        Row::post(format!("{tag}: facade {what}"), who, path, body)
            .expect(Expect::Refused("proxy_not_permitted"))
    };
    rows.push(facade(
        "create Communication",
        "/fhir/Communication",
        json!({"resourceType":"Communication","status":"in-progress",
            "subject":{"reference":format!("Patient/{patient}")},
            "sender":{"reference":format!("Patient/{patient}")},
            "payload":[{"contentString":"hi"}]}),
    ));
    rows.push(facade(
        "create Appointment",
        "/fhir/Appointment",
        json!({"resourceType":"Appointment","status":"proposed",
            "participant":[{"actor":{"reference":format!("Patient/{patient}")},"status":"accepted"}]}),
    ));
    rows.push(facade(
        "create MedicationRequest",
        "/fhir/MedicationRequest",
        json!({"resourceType":"MedicationRequest","status":"draft","intent":"proposal",
            "subject":{"reference":format!("Patient/{patient}")},
            "medicationCodeableConcept":{"text":"x"}}),
    ));
    rows
}

/// A read-only grandparent writing for the child.
pub fn read_only(fx: &Fixture) -> Vec<Row> {
    let f = &fx.families;
    refused_writes(
        fx,
        "grandparent/child (read-only)",
        &fx.grandparent(),
        &f.child,
        true,
    )
}

/// A billing-only spouse: bills and payments, nothing clinical.
pub fn billing_only(fx: &Fixture) -> Vec<Row> {
    let f = &fx.families;
    let who = fx.spouse();
    let elder = &f.elder;
    let tag = "spouse/elder (billing-only)";
    let clinical: Vec<(String, String)> = first_of_each(fx, elder, CLINICAL_TYPES);
    let leaks = Leaks {
        ids: clinical.iter().map(|(_, id)| id.clone()).collect(),
        ..Leaks::default()
    }
    .and(&fx.withheld(elder));
    let mut rows = Vec::new();
    for ty in CLINICAL_TYPES {
        rows.push(
            Row::get(
                format!("{tag}: search {ty}"),
                &who,
                format!("/fhir/{ty}?patient={elder}"),
            )
            .expect(Expect::Refused("proxy_not_permitted"))
            .leaks(&leaks),
        );
    }
    for (ty, id) in &clinical {
        rows.push(
            Row::get(
                format!("{tag}: read {ty}/{id}"),
                &who,
                format!("/fhir/{ty}/{id}"),
            )
            .expect(Expect::Status(404))
            .leaks(&leaks),
        );
    }
    rows.push(
        Row::get(
            format!("{tag}: $everything"),
            &who,
            format!("/fhir/Patient/{elder}/$everything"),
        )
        .leaks(&leaks),
    );
    for kind in RECORD_KINDS {
        rows.push(
            Row::get(
                format!("{tag}: portal /records/{kind}"),
                &who,
                format!("/api/v1/records/{kind}"),
            )
            .acting_for(elder)
            .expect(Expect::Refused("proxy_not_permitted"))
            .leaks(&leaks),
        );
    }
    for path in [
        "/medications",
        "/appointments",
        "/messages/threads",
        "/referrals",
    ] {
        rows.push(
            Row::get(
                format!("{tag}: portal {path}"),
                &who,
                format!("/api/v1{path}"),
            )
            .acting_for(elder)
            .expect(Expect::Refused("proxy_not_permitted"))
            .leaks(&leaks),
        );
    }
    for path in ["/bills", "/dashboard", "/me"] {
        rows.push(
            Row::get(
                format!("{tag}: portal {path}"),
                &who,
                format!("/api/v1{path}"),
            )
            .acting_for(elder)
            .leaks(&leaks),
        );
    }
    rows.push(
        Row::get(
            format!("{tag}: Account search"),
            &who,
            format!("/fhir/Account?patient={elder}"),
        )
        .leaks(&leaks),
    );
    let mut writes = refused_writes(fx, tag, &who, elder, false);
    // The facade's MedicationRequest create is refused like the others; paying is the
    // spouse's to do (tested in the flows).
    for row in &mut writes {
        row.leaks = leaks.clone();
    }
    rows.extend(writes);
    rows
}

/// Everything a proxy out of reach of `patient` might try: their patient, their
/// records by id, searches, `$everything` and the portal.
fn out_of_reach(fx: &Fixture, tag: &str, who: &Who, patient: &str, refusal: &Expect) -> Vec<Row> {
    let leaks = fx.everything_of(patient);
    let mut rows = vec![
        Row::get(
            format!("{tag}: read Patient"),
            who,
            format!("/fhir/Patient/{patient}"),
        )
        .expect(Expect::AnyOf(vec![403, 404]))
        .leaks(&leaks),
        Row::get(
            format!("{tag}: $everything"),
            who,
            format!("/fhir/Patient/{patient}/$everything"),
        )
        .expect(Expect::AnyOf(vec![403, 404]))
        .leaks(&leaks),
    ];
    for (ty, id) in first_of_each(fx, patient, CLINICAL_TYPES) {
        rows.push(
            Row::get(
                format!("{tag}: read {ty}/{id}"),
                who,
                format!("/fhir/{ty}/{id}"),
            )
            .expect(Expect::AnyOf(vec![403, 404]))
            .leaks(&leaks),
        );
    }
    for ty in [
        "Condition",
        "Observation",
        "MedicationRequest",
        "Encounter",
        "Account",
    ] {
        rows.push(
            Row::get(
                format!("{tag}: search {ty}"),
                who,
                format!("/fhir/{ty}?patient={patient}"),
            )
            .expect(refusal.clone())
            .leaks(&leaks),
        );
    }
    for path in ["/me", "/dashboard", "/records/conditions", "/bills"] {
        rows.push(
            Row::get(
                format!("{tag}: portal {path}"),
                who,
                format!("/api/v1{path}"),
            )
            .acting_for(patient)
            .expect(Expect::AnyOf(vec![403, 404]))
            .leaks(&leaks),
        );
    }
    rows
}

/// Relationships that grant nothing: ended, come of age, not in the EHR at all, and a
/// token naming several patients with no `fhirUser` to check them against.
pub fn out_of_reach_all(fx: &Fixture) -> Vec<Row> {
    let f = &fx.families;
    let foreign = Expect::AnyOf(vec![403]);
    let mut rows = out_of_reach(
        fx,
        "former caregiver/elder (ended)",
        &fx.former_caregiver(),
        &f.elder,
        &foreign,
    );
    rows.extend(out_of_reach(
        fx,
        "parent/adult child (came of age)",
        &fx.parent(),
        &f.adult_child,
        &foreign,
    ));
    // The token names a patient the EHR has no relationship for: the narrower wins.
    let mut claims_more = f.logins.parent.clone();
    claims_more.patients.push("pat-1".to_owned());
    rows.extend(out_of_reach(
        fx,
        "parent/pat-1 (not linked)",
        &Who::Proxy(claims_more),
        "pat-1",
        &foreign,
    ));
    // Several patients, no fhirUser that could be checked: refused as a whole.
    let mut unprovable = f.logins.parent.clone();
    unprovable.fhir_user = "Practitioner/nobody".to_owned();
    rows.extend(out_of_reach(
        fx,
        "no fhirUser/teen (unprovable)",
        &Who::Proxy(unprovable),
        &f.teen,
        &Expect::AnyOf(vec![403]),
    ));
    rows
}

pub fn all(fx: &Fixture) -> Vec<Row> {
    let mut rows = teenager(fx);
    rows.extend(part2(fx));
    rows.extend(grandparent(fx));
    rows.extend(read_only(fx));
    rows.extend(billing_only(fx));
    rows.extend(out_of_reach_all(fx));
    rows
}

#[tokio::test]
async fn a_parent_never_sees_a_teenagers_confidential_records() {
    let fx = Fixture::new().await;
    fx.run_category("teenager", &teenager(&fx)).await;
}

#[tokio::test]
async fn a_caregiver_never_sees_part_2_records() {
    let fx = Fixture::new().await;
    fx.run_category("part 2", &part2(&fx)).await;
}

#[tokio::test]
async fn a_grandparent_is_not_a_parent() {
    let fx = Fixture::new().await;
    fx.run_category("grandparent", &grandparent(&fx)).await;
}

#[tokio::test]
async fn a_read_only_proxy_changes_nothing() {
    let fx = Fixture::new().await;
    fx.run_category("read-only", &read_only(&fx)).await;
}

#[tokio::test]
async fn a_billing_only_proxy_sees_bills_only() {
    let fx = Fixture::new().await;
    fx.run_category("billing-only", &billing_only(&fx)).await;
}

#[tokio::test]
async fn ended_unlinked_and_unprovable_relationships_reach_nothing() {
    let fx = Fixture::new().await;
    fx.run_category("out of reach", &out_of_reach_all(&fx))
        .await;
}
