//! The read cache's hot path: normalizing a read into its key (type, sorted search
//! parameters, partition) and serving it from a fresh entry. The key module is private,
//! so it is measured through `CachedUpstream::execute` on a hit — what every cached
//! portal or facade read pays — next to the same request on a cache that is disabled
//! (key planning skipped, straight to the inner upstream) to show what the cache adds.
//!
//! `cargo bench -p portico-cache --bench cache_key -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use portico_cache::{CacheConfig, CachedUpstream};
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

    let cached = CachedUpstream::new(fixed(), CacheConfig::default());
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
}

criterion_group!(benches, cache);
criterion_main!(benches);
