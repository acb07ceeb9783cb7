//! Hot paths of the access core: SMART scope parsing and matching (every request), the
//! compartment verification of a 100-entry searchset Bundle (every search answer
//! leaving the gateway, cached or not), and the facade's whole step from the EHR's bytes
//! to the answer's bytes, by the tree verifier, by the entry-by-entry one and by the
//! streamed one (the text arriving in pieces), on Bundles of about 10 kB, 100 kB and
//! 1 MB.
//!
//! `cargo bench -p portico-access --bench access -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use bytes::Bytes;
use chrono::NaiveDate;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use portico_access::bundle_stream::{BundleStream, Finished, Piece, Writer};
use portico_access::scopes::Context;
use portico_access::{ClaimNames, Interaction, Policy, Principal, ScopeSet};
use portico_sandbox::generator::{GeneratorConfig, generate};
use serde_json::{Value, json};

const UPSTREAM: &str = "http://127.0.0.1:8090/fhir";

const V1: &str = "launch/patient openid fhirUser offline_access patient/*.read patient/*.write";
const V2: &str = "launch/patient openid fhirUser patient/*.rs patient/*.cud";
const GRANULAR: &str = "launch/patient openid fhirUser patient/Patient.rs \
    patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory \
    patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs \
    patient/Condition.rs patient/MedicationRequest.rs patient/AllergyIntolerance.rs \
    patient/Appointment.cruds patient/Communication.crs";

fn scopes(c: &mut Criterion) {
    let mut group = c.benchmark_group("scopes");
    for (name, text) in [("v1", V1), ("v2", V2), ("granular", GRANULAR)] {
        group.bench_function(format!("parse_{name}"), |b| {
            b.iter(|| black_box(ScopeSet::parse(black_box(text))))
        });
    }
    for (name, text) in [("v2", V2), ("granular", GRANULAR)] {
        let set = ScopeSet::parse(text);
        group.bench_function(format!("permission_{name}_observation_search"), |b| {
            b.iter(|| {
                black_box(set.permission(
                    Context::Patient,
                    black_box("Observation"),
                    Interaction::Search,
                ))
            })
        });
    }
    let set = ScopeSet::parse(GRANULAR);
    group.bench_function("fingerprint_granular", |b| {
        b.iter(|| black_box(set.fingerprint()))
    });
    group.finish();
}

/// The first patient's own resources from the sandbox generator, Observations first.
fn own_resources() -> Vec<Value> {
    let config = GeneratorConfig {
        seed: 42,
        patients: 1,
        today: NaiveDate::from_ymd_opt(2026, 11, 1).expect("a valid date"),
    };
    let mut observations = Vec::new();
    let mut others = Vec::new();
    generate(&config, &mut |r: Value| {
        // pat-1's record only (the sandbox also generates its families).
        if !r.to_string().contains("\"Patient/pat-1\"") {
            return;
        }
        let t = r["resourceType"].as_str().unwrap_or_default().to_owned();
        if t == "Observation" {
            observations.push(r);
        } else if !portico_access::REFERENCE_DATA_TYPES.contains(&t.as_str()) {
            others.push(r);
        }
    });
    observations.into_iter().chain(others).collect()
}

/// pat-1's resources as a 100-entry searchset Bundle like the EHR returns it.
fn bundle_of_100() -> Value {
    let resources: Vec<Value> = own_resources().into_iter().cycle().take(100).collect();
    assert_eq!(resources.len(), 100, "the generator made no patient data");
    let entries: Vec<Value> = resources.into_iter().map(entry_of).collect();
    json!({"resourceType": "Bundle", "type": "searchset", "total": 100, "entry": entries})
}

fn entry_of(r: Value) -> Value {
    let full_url = format!(
        "{UPSTREAM}/{}/{}",
        r["resourceType"].as_str().unwrap_or_default(),
        r["id"].as_str().unwrap_or_default()
    );
    json!({"fullUrl": full_url, "resource": r, "search": {"mode": "match"}})
}

/// A searchset of pat-1's resources whose JSON is at least `bytes` long, one in ten of
/// its entries another patient's (removed by both verifiers), with a `next` link.
fn bundle_text_of(bytes: usize) -> String {
    let mut entries = Vec::new();
    let mut size = 0;
    for (i, r) in own_resources().into_iter().cycle().enumerate() {
        if size >= bytes {
            break;
        }
        let mut e = entry_of(r);
        if i % 10 == 9 {
            e = json!({"resource": {"resourceType": "Observation", "id": format!("x{i}"),
                "subject": {"reference": "Patient/pat-12"}}, "search": {"mode": "match"}});
        }
        size += e.to_string().len() + 1;
        entries.push(e);
    }
    json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(),
        "link": [{"relation": "next", "url": format!("{UPSTREAM}/Observation?page=2")}],
        "entry": entries})
    .to_string()
}

/// From the EHR's bytes to the answer's bytes: parse, verify and write a tree, or
/// verify entry by entry and copy the kept entries.
fn bytes_to_bytes(c: &mut Criterion) {
    let policy = Policy::new(UPSTREAM);
    let who = principal(V2);
    let mut group = c.benchmark_group("verify_bytes_to_bytes");
    for (name, size) in [("10kB", 10_000), ("100kB", 100_000), ("1MB", 1_000_000)] {
        let text = Bytes::from(bundle_text_of(size));
        group.throughput(Throughput::Bytes(text.len() as u64));
        // Sanity: both keep the same entries.
        let mut tree: Value = serde_json::from_slice(&text).expect("JSON");
        let tree_report = policy.verify_bundle(&who, &mut tree);
        let bytes = policy
            .verify_bundle_bytes(&who, text.clone())
            .expect("JSON");
        assert_eq!(bytes.report, tree_report);
        assert!(tree_report.removed > 0 && tree_report.kept > 0);
        let streamed_text = streamed(&policy, &who, &text);
        assert_eq!(
            serde_json::from_slice::<Value>(&streamed_text).expect("JSON"),
            serde_json::from_slice::<Value>(&bytes.to_json()).expect("JSON")
        );
        group.bench_function(format!("tree_{name}"), |b| {
            b.iter(|| {
                let mut bundle: Value = serde_json::from_slice(black_box(&text)).expect("JSON");
                policy.verify_bundle(&who, &mut bundle);
                black_box(serde_json::to_vec(&bundle).expect("a tree serializes"))
            })
        });
        group.bench_function(format!("streamed_{name}"), |b| {
            b.iter(|| black_box(streamed(&policy, &who, black_box(&text))))
        });
        group.bench_function(format!("entrywise_{name}"), |b| {
            b.iter(|| {
                let verified = policy
                    .verify_bundle_bytes(&who, black_box(text.clone()))
                    .expect("JSON");
                black_box(verified.to_json())
            })
        });
    }
    group.finish();
}

/// The streamed check on `text` arriving in pieces of 16 KiB (what the EHR's socket
/// hands over at a time), written out piece by piece as an answer would be.
fn streamed(policy: &Policy, who: &Principal, text: &[u8]) -> Vec<u8> {
    let mut stream = BundleStream::new();
    let mut pieces = Vec::new();
    let mut writer = Writer::default();
    let mut out = Vec::with_capacity(text.len());
    for chunk in text.chunks(16 * 1024) {
        stream.push(policy, who, chunk, &mut pieces).expect("JSON");
        for piece in pieces.drain(..) {
            match piece {
                Piece::Head(head) => out.extend(Writer::head(&head)),
                Piece::Entry(entry) => {
                    out.extend_from_slice(writer.before_entry());
                    out.extend_from_slice(&entry);
                }
            }
        }
    }
    match stream.finish(policy, who).expect("JSON") {
        Finished::Tail { members, .. } => out.extend(Writer::tail(&members)),
        Finished::Whole(verified) => out = verified.to_json(),
    }
    out
}

/// Checking that an answer is complete JSON, as the upstream client does before anything
/// uses it: `serde_json` reading past every value, and the scanner.
fn check_json(c: &mut Criterion) {
    let mut group = c.benchmark_group("check_json");
    for (name, size) in [("10kB", 10_000), ("100kB", 100_000), ("1MB", 1_000_000)] {
        let text = bundle_text_of(size);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("serde_ignored_{name}"), |b| {
            b.iter(|| {
                serde_json::from_slice::<serde::de::IgnoredAny>(black_box(text.as_bytes()))
                    .expect("JSON")
            })
        });
        group.bench_function(format!("scanner_{name}"), |b| {
            b.iter(|| portico_fhir::scan::validate(black_box(text.as_bytes())).expect("JSON"))
        });
    }
    group.finish();
}

fn principal(scopes: &str) -> Principal {
    let claims = json!({
        "sub": "pat-1-user",
        "client_id": "demo-app",
        "patient": "pat-1",
        "fhirUser": "Patient/pat-1",
        "scope": scopes,
    });
    Principal::from_claims(
        claims.as_object().expect("an object"),
        &ClaimNames::default(),
    )
    .expect("valid claims")
}

fn verify_bundle(c: &mut Criterion) {
    let bundle = bundle_of_100();
    let policy = Policy::new(UPSTREAM);
    let mut group = c.benchmark_group("verify_bundle_100");
    for (name, scopes) in [("v2", V2), ("granular", GRANULAR)] {
        let who = principal(scopes);
        // Sanity: with v2 scopes every entry is the patient's and stays.
        if name == "v2" {
            let mut copy = bundle.clone();
            let report = policy.verify_bundle(&who, &mut copy);
            assert_eq!(report.removed, 0, "the patient's own entries were removed");
        }
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || bundle.clone(),
                |bundle| black_box(policy.verify_bundle(&who, bundle)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, scopes, verify_bundle, bytes_to_bytes, check_json);
criterion_main!(benches);
