//! URL tricks, sent byte for byte over a socket (an HTTP client would normalise them):
//! encoded slashes and dots, dot segments, double slashes, case, trailing slashes,
//! double encoding, parameter pollution, whitespace and control characters, very long
//! values. Every one is refused or answers with A's data only.

use super::{Attempt, Expect, Fixture, finish};

pub fn attempts(fx: &Fixture) -> Vec<Attempt> {
    let obs_b = fx.b("Observation");
    let long = "pat-1,".repeat(2000) + "pat-2";
    let raw = |name: &str, target: String| {
        Attempt::get(format!("path: {name}"), target)
            .raw()
            .expect(Expect::DeniedOrOnlyA)
    };
    let mut rows = vec![
        raw(
            "encoded slash from B to A",
            "/fhir/Patient/pat-2%2F..%2Fpat-1".into(),
        ),
        raw(
            "encoded slash from A to B",
            "/fhir/Patient/pat-1%2F..%2Fpat-2".into(),
        ),
        raw(
            "encoded slash, lower case",
            "/fhir/Patient/pat-1%2f..%2fpat-2".into(),
        ),
        raw("dot segments", "/fhir/Patient/../Patient/pat-2".into()),
        raw("dot segments from A", "/fhir/Patient/pat-1/../pat-2".into()),
        raw(
            "encoded dot segments",
            "/fhir/Patient/pat-1/%2e%2e/pat-2".into(),
        ),
        raw(
            "encoded dots and slash",
            "/fhir/Patient/pat-1%2F%2e%2e%2Fpat-2".into(),
        ),
        raw(
            "double-encoded slash",
            "/fhir/Patient/pat-1%252F..%252Fpat-2".into(),
        ),
        raw(
            "double-encoded dots",
            "/fhir/Patient/pat-1/%252e%252e/pat-2".into(),
        ),
        raw("double slash before fhir", "//fhir/Patient/pat-2".into()),
        raw("double slash inside", "/fhir//Patient/pat-2".into()),
        raw("double slash before the id", "/fhir/Patient//pat-2".into()),
        raw("lower-case type", "/fhir/patient/pat-2".into()),
        raw("upper-case FHIR", "/FHIR/Patient/pat-2".into()),
        raw("trailing slash", "/fhir/Patient/pat-2/".into()),
        raw("upper-case id", "/fhir/Patient/PAT-2".into()),
        raw("encoded id", "/fhir/Patient/%70%61%74%2d%32".into()),
        raw(
            "id with a semicolon parameter",
            "/fhir/Patient/pat-1;pat-2".into(),
        ),
        raw(
            "id with a matrix of B",
            "/fhir/Patient/pat-2;x=pat-1".into(),
        ),
        raw(
            "encoded question mark",
            "/fhir/Patient/pat-1%3Fid=pat-2".into(),
        ),
        raw("encoded hash", "/fhir/Patient/pat-2%23".into()),
        raw("NUL in the id", "/fhir/Patient/pat-2%00".into()),
        raw("backslash", "/fhir/Patient/pat-1%5C..%5Cpat-2".into()),
        raw(
            "absolute-form target at the EHR",
            format!("{}/Patient/pat-2", fx.up_fhir),
        ),
        raw(
            "B's Observation with dot segments",
            format!("/fhir/Observation/x/../{obs_b}"),
        ),
        raw(
            "vread with dot segments",
            "/fhir/Patient/pat-1/_history/../../pat-2".into(),
        ),
        raw(
            "vread with an encoded slash",
            "/fhir/Patient/pat-1/_history/1%2F..%2F..%2Fpat-2".into(),
        ),
        // Query tricks.
        raw(
            "patient=A then patient=B",
            "/fhir/Observation?patient=pat-1&patient=pat-2".into(),
        ),
        raw(
            "patient=B then patient=A",
            "/fhir/Observation?patient=pat-2&patient=pat-1".into(),
        ),
        raw(
            "patient=A,B",
            "/fhir/Observation?patient=pat-1,pat-2".into(),
        ),
        raw(
            "patient=A%2CB",
            "/fhir/Observation?patient=pat-1%2Cpat-2".into(),
        ),
        raw(
            "patient with dot segments",
            "/fhir/Observation?patient=Patient/pat-1/../pat-2".into(),
        ),
        raw(
            "patient with an encoded ampersand",
            "/fhir/Observation?patient=pat-1%26patient%3Dpat-2".into(),
        ),
        raw(
            "patient with a semicolon",
            "/fhir/Observation?patient=pat-1;patient=pat-2".into(),
        ),
        raw(
            "patient with leading space",
            "/fhir/Observation?patient=%20pat-2".into(),
        ),
        raw(
            "patient with trailing space",
            "/fhir/Observation?patient=pat-2%20".into(),
        ),
        raw(
            "patient with plus-space",
            "/fhir/Observation?patient=+pat-2".into(),
        ),
        raw(
            "patient with a newline",
            "/fhir/Observation?patient=pat-1%0Apat-2".into(),
        ),
        raw(
            "patient with a tab",
            "/fhir/Observation?patient=pat-1%09pat-2".into(),
        ),
        raw(
            "patient with NUL",
            "/fhir/Observation?patient=pat-1%00pat-2".into(),
        ),
        raw(
            "patient upper case",
            "/fhir/Observation?patient=PAT-2".into(),
        ),
        raw(
            "parameter name upper case",
            "/fhir/Observation?PATIENT=pat-2".into(),
        ),
        raw(
            "parameter name encoded",
            "/fhir/Observation?%70atient=pat-2".into(),
        ),
        raw(
            "parameter name with a space",
            "/fhir/Observation?patient%20=pat-2".into(),
        ),
        raw(
            "parameter with an empty modifier",
            "/fhir/Observation?patient:=pat-2".into(),
        ),
        raw(
            "double-encoded value",
            "/fhir/Observation?subject=Patient%252Fpat-2".into(),
        ),
        raw(
            "subject with an encoded slash",
            "/fhir/Observation?subject=Patient%2Fpat-2".into(),
        ),
        raw(
            "subject with a fragment",
            "/fhir/Observation?subject=Patient/pat-1%23/../pat-2".into(),
        ),
        raw(
            "two question marks",
            "/fhir/Observation?patient=pat-1?patient=pat-2".into(),
        ),
        raw(
            "a very long list ending in B",
            format!("/fhir/Observation?patient={long}"),
        ),
        raw(
            "a very long parameter name",
            format!("/fhir/Observation?{}=1&patient=pat-2", "x".repeat(9000)),
        ),
        raw(
            "Patient by _id with dot segments",
            "/fhir/Patient?_id=pat-1/../pat-2".into(),
        ),
        raw("Patient by _id A,B", "/fhir/Patient?_id=pat-1,pat-2".into()),
        raw(
            "history with dot segments",
            "/fhir/Patient/pat-1/_history/..%2F..%2Fpat-2%2F_history".into(),
        ),
        raw(
            "$everything with dot segments",
            "/fhir/Patient/pat-1/../pat-2/$everything".into(),
        ),
    ];
    // Other methods on B's resources.
    for (name, method, target, allowed) in [
        (
            "HEAD on B's Patient",
            "HEAD",
            "/fhir/Patient/pat-2",
            vec![404, 405],
        ),
        (
            "HEAD on a search naming B",
            "HEAD",
            "/fhir/Observation?patient=pat-2",
            vec![403, 405],
        ),
        (
            "OPTIONS on B's Patient",
            "OPTIONS",
            "/fhir/Patient/pat-2",
            vec![200, 204, 404, 405],
        ),
        (
            "TRACE on B's Patient",
            "TRACE",
            "/fhir/Patient/pat-2",
            vec![404, 405],
        ),
    ] {
        rows.push(
            Attempt::new(format!("path: {name}"), method, target)
                .raw()
                .expect(Expect::Status(allowed))
                .may_change(),
        );
    }
    // A request smuggled in a header.
    rows.push(
        Attempt::get("path: X-Original-URL naming B", "/fhir/Patient/pat-1")
            .raw()
            .header("X-Original-URL", "/fhir/Patient/pat-2")
            .header("X-Rewrite-URL", "/fhir/Patient/pat-2")
            .header("X-Forwarded-Prefix", "/fhir/Patient/pat-2")
            .expect(Expect::ResourceOfA),
    );
    rows.push(
        Attempt::new(
            "path: X-HTTP-Method-Override DELETE on B",
            "POST",
            "/fhir/Patient/pat-2",
        )
        .raw()
        .header("X-HTTP-Method-Override", "DELETE")
        .body("application/fhir+json", "{}")
        .expect(Expect::Status(vec![400, 403, 404, 405, 415, 422])),
    );
    rows
}

#[tokio::test]
async fn url_tricks_never_reach_b() {
    let fx = Fixture::new().await;
    let mut failures = Vec::new();
    // The control: the raw client reads A's own record.
    let control = Attempt::get("path control: A's Patient", "/fhir/Patient/pat-1")
        .raw()
        .expect(Expect::ResourceOfA);
    if let Err(e) = fx.check(&control).await {
        failures.push(e);
    }
    let rows = attempts(&fx);
    failures.extend(fx.run_all(&rows).await);
    finish("paths", rows.len(), &failures);
}
