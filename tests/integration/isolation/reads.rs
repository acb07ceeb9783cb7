//! Reads by id of B's resources: read, vread and `_history` of every compartment type B
//! has, each answered exactly like a read of an id that does not exist. A's own reads
//! are the control: they must work, or a 404 for B would prove nothing.

use super::{Attempt, Expect, Fixture, finish};

pub fn attempts(fx: &Fixture) -> Vec<Attempt> {
    let mut rows = Vec::new();
    let missing = |ty: &str| format!("/{ty}/no-such-{}", ty.to_ascii_lowercase());
    let mut types = fx.b_types();
    types.insert(0, "Patient".to_owned());
    for ty in &types {
        let id = fx.b(ty);
        rows.push(
            Attempt::get(format!("read {ty} of B"), format!("/{ty}/{id}"))
                .expect(Expect::Hidden(missing(ty))),
        );
        rows.push(
            Attempt::get(format!("vread {ty} of B"), format!("/{ty}/{id}/_history/1"))
                .expect(Expect::Hidden(format!("{}/_history/1", missing(ty)))),
        );
        rows.push(
            Attempt::get(
                format!("history of {ty} of B"),
                format!("/{ty}/{id}/_history"),
            )
            .expect(Expect::Hidden(format!("{}/_history", missing(ty)))),
        );
    }
    // A second resource of the richest types (another code path: labs vs vitals,
    // thread header vs message, booked vs past appointment).
    for ty in [
        "Observation",
        "Communication",
        "Appointment",
        "MedicationRequest",
    ] {
        if let Some(id) = fx.b_res.get(ty).and_then(|ids| ids.last()) {
            rows.push(
                Attempt::get(format!("read last {ty} of B"), format!("/{ty}/{id}"))
                    .expect(Expect::Hidden(missing(ty))),
            );
        }
    }
    let obs = fx.b("Observation");
    rows.extend([
        Attempt::get(
            "vread a future version of B's Observation",
            format!("/Observation/{obs}/_history/2"),
        )
        .expect(Expect::Hidden(
            "/Observation/no-such-observation/_history/2".to_owned(),
        )),
        Attempt::get(
            "history of B's Patient with _count",
            "/Patient/pat-2/_history?_count=1".to_string(),
        )
        .expect(Expect::Hidden(
            "/Patient/no-such-patient/_history?_count=1".to_owned(),
        )),
        Attempt::get(
            "B's Observation with _elements",
            format!("/Observation/{obs}?_elements=id"),
        )
        .expect(Expect::Status(vec![400, 404])),
        Attempt::get("B's Patient with _format", "/Patient/pat-2?_format=json")
            .expect(Expect::Status(vec![400, 404])),
        Attempt::get("B's Patient with _summary", "/Patient/pat-2?_summary=true")
            .expect(Expect::Status(vec![400, 404])),
        Attempt::get(
            "HEAD-like read of B's Patient via _pretty",
            "/Patient/pat-2?_pretty=true",
        )
        .expect(Expect::Status(vec![400, 404])),
    ]);
    // B reading A's patient is refused too (isolation is symmetric).
    rows.push(
        Attempt::get("B reads A's Patient", "/Patient/pat-1")
            .token(super::Tok::B)
            .expect(Expect::Hidden("/Patient/no-such-patient".to_owned())),
    );
    rows
}

#[tokio::test]
async fn reads_by_id_of_b_look_like_missing_resources() {
    let fx = Fixture::new().await;
    // The control: A reads their own resources of the same types.
    let mut failures = Vec::new();
    let mut types = fx.b_types();
    types.insert(0, "Patient".to_owned());
    for ty in &types {
        let Some(id) = fx.a_res.get(ty).and_then(|v| v.first()) else {
            continue;
        };
        for path in [format!("/{ty}/{id}"), format!("/{ty}/{id}/_history/1")] {
            let row =
                Attempt::get(format!("control: A reads {path}"), path).expect(Expect::ResourceOfA);
            if let Err(e) = fx.check(&row).await {
                failures.push(e);
            }
        }
        let row = Attempt::get(
            format!("control: A's history of {ty}/{id}"),
            format!("/{ty}/{id}/_history"),
        )
        .expect(Expect::OnlyA(1));
        if let Err(e) = fx.check(&row).await {
            failures.push(e);
        }
    }
    let rows = attempts(&fx);
    failures.extend(fx.run_all(&rows).await);
    finish("reads", rows.len(), &failures);
}

#[tokio::test]
async fn passthrough_mode_keeps_reads_and_searches_isolated() {
    // The patient's own token goes upstream; the sandbox (like a lax EHR) would still
    // serve B's data to it, so the gateway's checks are what is tested.
    let sandbox = crate::support::sandbox().await;
    let app = crate::support::TestApp::spawn_with(sandbox, |_, upstream| {
        upstream.auth = portico_upstream::ResolvedAuth::Passthrough;
    })
    .await;
    let fx = Fixture::on(app);
    let mut rows: Vec<Attempt> = attempts(&fx)
        .into_iter()
        .map(|mut a| {
            a.name = format!("passthrough: {}", a.name);
            a
        })
        .collect();
    rows.extend(
        super::search::attempts(&fx)
            .into_iter()
            .filter(|a| a.name.starts_with("patient=B on"))
            .chain(super::includes::attempts(&fx))
            .chain(super::writes::attempts(&fx))
            .map(|mut a| {
                a.name = format!("passthrough: {}", a.name);
                a
            }),
    );
    rows.push(
        Attempt::get("passthrough control: A's Observations", "/Observation")
            .expect(Expect::OnlyA(1)),
    );
    let failures = fx.run_all(&rows).await;
    finish("passthrough", rows.len(), &failures);
}

/// How many attempts [`an_id_extending_a_s_is_another_patient`] makes.
pub const PREFIX_ATTEMPTS: usize = 11;

#[tokio::test]
async fn an_id_extending_a_s_is_another_patient() {
    // With 12 patients `pat-12` exists: a substring match on `Patient/pat-1` would take
    // it for A (microsoft/fhir-proxy's bug). The leak check flags any patient but A.
    let fx = Fixture::on(crate::support::TestApp::spawn_with_patients(12).await);
    let victim_obs = fx
        .app
        .sandbox
        .store()
        .ids("Observation")
        .into_iter()
        .find(|id| id.starts_with("obs-12-"))
        .expect("pat-12 has Observations");
    let mut msg = super::writes::message(&fx);
    msg["subject"] = serde_json::json!({ "reference": "Patient/pat-12" });
    let mut to = super::writes::message(&fx);
    to["recipient"] = serde_json::json!([{ "reference": "Patient/pat-12" }]);
    let rows = vec![
        Attempt::get("prefix: read pat-12", "/Patient/pat-12")
            .expect(Expect::Hidden("/Patient/no-such-patient".into())),
        Attempt::get("prefix: vread pat-12", "/Patient/pat-12/_history/1")
            .expect(Expect::Hidden("/Patient/no-such-patient/_history/1".into())),
        Attempt::get(
            "prefix: read pat-12's Observation",
            format!("/Observation/{victim_obs}"),
        )
        .expect(Expect::Hidden("/Observation/no-such-observation".into())),
        Attempt::get("prefix: patient=pat-12", "/Observation?patient=pat-12")
            .expect(Expect::Forbidden),
        Attempt::get(
            "prefix: subject=Patient/pat-12",
            "/Observation?subject=Patient/pat-12",
        )
        .expect(Expect::Forbidden),
        Attempt::get(
            "prefix: patient=pat-1,pat-12",
            "/Observation?patient=pat-1,pat-12",
        )
        .expect(Expect::Forbidden),
        Attempt::get("prefix: Patient?_id=pat-12", "/Patient?_id=pat-12"),
        Attempt::get(
            "prefix: $everything on pat-12",
            "/Patient/pat-12/$everything",
        )
        .expect(Expect::Status(vec![403, 404])),
        Attempt::new("prefix: message about pat-12", "POST", "/Communication")
            .json(&msg)
            .expect(Expect::Forbidden),
        Attempt::new("prefix: message to pat-12", "POST", "/Communication")
            .json(&to)
            .expect(Expect::Forbidden),
        Attempt::get(
            "prefix: A's Observations hold no pat-12",
            "/Observation?_count=1000",
        )
        .expect(Expect::OnlyA(1)),
    ];
    assert_eq!(rows.len(), PREFIX_ATTEMPTS);
    let failures = fx.run_all(&rows).await;
    finish("prefix", rows.len(), &failures);
}
