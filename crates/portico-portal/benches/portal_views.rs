//! Portal DTO mapping: turning verified FHIR resources into the portal's views. Measured
//! on the sandbox generator's data for one patient: lab-result Observations mapped with
//! `records::item`, and the refill eligibility of each MedicationRequest against the
//! patient's dispenses (`medications::eligibility`, the rule the dashboard and the
//! medications page run for every prescription).
//!
//! `cargo bench -p portico-portal --bench portal_views -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use chrono::{NaiveDate, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portico_portal::context::Page;
use portico_portal::medications::{OpenState, eligibility};
use portico_portal::profile::EhrProfile;
use portico_portal::records::{Kind, item};
use portico_sandbox::generator::{GeneratorConfig, generate};
use serde_json::Value;

struct Data {
    labs: Vec<Value>,
    requests: Vec<Value>,
    dispenses: Vec<Value>,
}

fn is_lab(r: &Value) -> bool {
    r["category"].as_array().is_some_and(|cats| {
        cats.iter().any(|c| {
            c["coding"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|x| x["code"] == "laboratory"))
        })
    })
}

fn data() -> Data {
    let config = GeneratorConfig {
        seed: 42,
        patients: 1,
        today: NaiveDate::from_ymd_opt(2026, 11, 1).expect("a valid date"),
    };
    let mut d = Data {
        labs: Vec::new(),
        requests: Vec::new(),
        dispenses: Vec::new(),
    };
    generate(&config, &mut |r: Value| {
        // pat-1's record only (the sandbox also generates its families).
        if !r.to_string().contains("\"Patient/pat-1\"") {
            return;
        }
        match r["resourceType"].as_str() {
            Some("Observation") if is_lab(&r) => d.labs.push(r),
            Some("MedicationRequest") => d.requests.push(r),
            Some("MedicationDispense") => d.dispenses.push(r),
            _ => {}
        }
    });
    assert!(!d.labs.is_empty(), "the generator made no lab results");
    assert!(
        !d.requests.is_empty(),
        "the generator made no prescriptions"
    );
    d
}

fn views(c: &mut Criterion) {
    let d = data();
    let page = Page {
        matches: d.labs.clone(),
        ..Page::default()
    };
    let mut group = c.benchmark_group("portal_views");
    group.throughput(Throughput::Elements(d.labs.len() as u64));
    group.bench_function(format!("lab_results_item_x{}", d.labs.len()), |b| {
        b.iter(|| {
            for r in &page.matches {
                black_box(item(Kind::LabResults, black_box(r), &page));
            }
        })
    });

    let profile = EhrProfile::built_in("generic-r4").expect("the built-in profile");
    let now = Utc
        .with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .expect("a valid instant");
    group.throughput(Throughput::Elements(d.requests.len() as u64));
    group.bench_function(
        format!(
            "refill_eligibility_x{}_with_{}_dispenses",
            d.requests.len(),
            d.dispenses.len()
        ),
        |b| {
            b.iter(|| {
                for r in &d.requests {
                    black_box(eligibility(
                        black_box(r),
                        Some(&d.dispenses),
                        OpenState::None,
                        "pat-1",
                        &profile.refills,
                        now,
                    ));
                }
            })
        },
    );
    group.finish();
}

criterion_group!(benches, views);
criterion_main!(benches);
