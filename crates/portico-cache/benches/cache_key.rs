//! The read cache's hot path: normalizing a read into its key (type, sorted search
//! parameters, partition) and serving it from a fresh entry. The key module is private,
//! so it is measured through `CachedUpstream::execute` on a hit — what every cached
//! portal or facade read pays — next to the same request on a cache that is disabled
//! (key planning skipped, straight to the inner upstream) to show what the cache adds.
//! The `packed` group measures body compression on one sandbox patient's laboratory
//! search, and a hit on that body with compression on and off.
//!
//! `cargo bench -p portico-cache --bench cache_key -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::NaiveDate;
use criterion::{Criterion, criterion_group, criterion_main};
use portico_cache::{CacheConfig, CachedUpstream, Packed};
use portico_sandbox::generator::{GeneratorConfig, generate};
use portico_upstream::{CachePartition, FhirRequest, FhirResponse, FhirUpstream, UpstreamError};

/// An upstream answering every request with the same bytes, counting calls.
#[derive(Debug)]
struct Fixed {
    body: Bytes,
    calls: AtomicU64,
}

#[async_trait::async_trait]
impl FhirUpstream for Fixed {
    async fn execute(&self, _request: FhirRequest) -> Result<FhirResponse, UpstreamError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(FhirResponse::new(200, self.body.clone()))
    }
}

fn fixed() -> Fixed {
    Fixed {
        body: Bytes::from(vec![b' '; 16 * 1024]),
        calls: AtomicU64::new(0),
    }
}

/// The first sandbox patient's laboratory Observations as the searchset Bundle an EHR
/// would answer (the body of the benchmark's cached facade read, ~10 kB).
fn lab_bundle() -> Bytes {
    let config = GeneratorConfig {
        seed: 42,
        patients: 1,
        today: NaiveDate::from_ymd_opt(2026, 11, 1).expect("a valid date"),
    };
    let mut entries = Vec::new();
    generate(&config, &mut |r: serde_json::Value| {
        // pat-1's only (the sandbox also generates its families).
        let lab = r["resourceType"] == "Observation"
            && r["category"][0]["coding"][0]["code"] == "laboratory"
            && r["subject"]["reference"] == "Patient/pat-1";
        if lab {
            let url = format!(
                "http://127.0.0.1:8090/fhir/Observation/{}",
                r["id"].as_str().unwrap_or_default()
            );
            entries.push(
                serde_json::json!({"fullUrl": url, "resource": r, "search": {"mode": "match"}}),
            );
        }
    });
    assert!(
        !entries.is_empty(),
        "the generator made no laboratory results"
    );
    let bundle = serde_json::json!({
        "resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries
    });
    Bytes::from(serde_json::to_vec(&bundle).expect("JSON"))
}

fn search() -> FhirRequest {
    // Parameters deliberately out of order: the key sorts them.
    FhirRequest::search(
        "Observation",
        [
            ("category", "laboratory"),
            ("_count", "50"),
            ("patient", "pat-1"),
            ("_sort", "-date"),
        ],
    )
    .with_partition(CachePartition::new(["pat-1"], "3f2a9c0e5b7d4a1f"))
}

fn cache(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("cache");

    // Bodies stored as they are: this group measures the key and the lookup; the
    // `packed` group below measures what compression adds.
    let uncompressed = || CacheConfig {
        compress: false,
        ..CacheConfig::default()
    };
    let cached = CachedUpstream::new(fixed(), uncompressed());
    rt.block_on(cached.execute(search()))
        .expect("the first read");
    group.bench_function("search_hit", |b| {
        b.iter(|| black_box(rt.block_on(cached.execute(black_box(search())))))
    });
    assert_eq!(
        cached.inner().calls.load(Ordering::Relaxed),
        1,
        "reads after the first were not hits"
    );

    let read = || {
        FhirRequest::read("Patient", "pat-1")
            .with_partition(CachePartition::new(["pat-1"], "3f2a9c0e5b7d4a1f"))
    };
    rt.block_on(cached.execute(read())).expect("the first read");
    group.bench_function("read_hit", |b| {
        b.iter(|| black_box(rt.block_on(cached.execute(black_box(read())))))
    });

    let disabled = CachedUpstream::new(
        fixed(),
        CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        },
    );
    group.bench_function("search_cache_disabled", |b| {
        b.iter(|| black_box(rt.block_on(disabled.execute(black_box(search())))))
    });
    group.finish();

    let body = lab_bundle();
    let mut group = c.benchmark_group("packed");
    let packed = Packed::pack(&body);
    eprintln!(
        "packed: {} bytes of laboratory Bundle stored in {} ({:.1}×)",
        body.len(),
        packed.stored_len(),
        body.len() as f64 / packed.stored_len() as f64
    );
    group.bench_function("pack_lab_bundle", |b| {
        b.iter(|| black_box(Packed::pack(black_box(&body))))
    });
    group.bench_function("unpack_lab_bundle", |b| {
        b.iter(|| black_box(black_box(&packed).unpack()))
    });
    for compress in [true, false] {
        let cached = CachedUpstream::new(
            Fixed {
                body: body.clone(),
                calls: AtomicU64::new(0),
            },
            CacheConfig {
                compress,
                // Longer than any measurement: every read after the first is a hit.
                patient_ttl: std::time::Duration::from_secs(3600),
                ..CacheConfig::default()
            },
        );
        rt.block_on(cached.execute(search()))
            .expect("the first read");
        let name = if compress {
            "search_hit_lab_bundle_compressed"
        } else {
            "search_hit_lab_bundle_uncompressed"
        };
        group.bench_function(name, |b| {
            b.iter(|| black_box(rt.block_on(cached.execute(black_box(search())))))
        });
        assert_eq!(cached.inner().calls.load(Ordering::Relaxed), 1);
    }
    group.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
