//! Reference parsing: every compartment decision and every `_include` lookup parses
//! references (`Patient/pat-1`, absolute URLs, versioned ones).
//!
//! `cargo bench -p portico-fhir --bench reference -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portico_fhir::reference::Reference;

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("reference_parse");
    for (name, input) in [
        ("relative", "Patient/pat-1"),
        ("versioned", "Practitioner/prac-12/_history/3"),
        (
            "absolute",
            "http://127.0.0.1:8090/fhir/Observation/obs-1-123",
        ),
        ("invalid", "not a reference"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let _ = black_box(Reference::parse(black_box(input)));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
