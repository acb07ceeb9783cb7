//! The store's tests: loading, versions and history, conditional create, search
//! semantics, includes, strings, and a load at scale.

use super::*;
use serde_json::json;

fn q(ty: &str, params: &[(&str, &str)]) -> SearchQuery {
    let pairs: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    SearchQuery::parse(search::type_info(ty).unwrap(), &pairs, false).unwrap()
}

fn obs(id: &str, patient: &str, date: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
           "subject": {"reference": format!("Patient/{patient}")},
           "effectiveDateTime": date})
}

fn ids(result: &SearchResult) -> Vec<String> {
    result.matches.iter().map(|r| r.id.clone()).collect()
}

#[test]
fn bulk_load_sets_meta_and_reads_back_bytes() {
    let store = Store::new();
    store
        .insert_loaded(json!({"resourceType": "Patient", "id": "p1", "gender": "female"}))
        .unwrap();
    let read = store.read("Patient", "p1").unwrap();
    assert_eq!(read.version, 1);
    let body: Value = serde_json::from_slice(read.body.as_ref().unwrap()).unwrap();
    assert_eq!(body["meta"]["versionId"], "1");
    assert!(body["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));
    assert_eq!(store.count("Patient"), 1);
    assert!(matches!(
        store.insert_loaded(json!({"resourceType": "Patient"})),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.insert_loaded(json!({"resourceType": "Nope", "id": "x"})),
        Err(StoreError::UnknownType(_))
    ));
}

#[test]
fn versions_delete_and_history() {
    let store = Store::new();
    store.insert_loaded(obs("o1", "p1", "2024-01-01")).unwrap();
    let (v2, created) = store
        .update("Observation", "o1", obs("o1", "p2", "2024-01-02"), Some(1))
        .unwrap();
    assert!(!created);
    assert_eq!(v2.version, 2);
    assert!(matches!(
        store.update("Observation", "o1", obs("o1", "p2", "2024-01-02"), Some(1)),
        Err(StoreError::VersionMismatch { expected: 1, .. })
    ));
    // The inverted index followed the update.
    assert!(
        store
            .search(&q("Observation", &[("patient", "p1")]))
            .matches
            .is_empty()
    );
    assert_eq!(
        ids(&store.search(&q("Observation", &[("patient", "p2")]))),
        vec!["o1"]
    );
    let deleted = store.delete("Observation", "o1", None).unwrap().unwrap();
    assert_eq!(deleted.version, 3);
    assert!(store.delete("Observation", "o1", None).unwrap().is_none());
    assert!(matches!(
        store.read("Observation", "o1"),
        Err(StoreError::Gone { version: 3, .. })
    ));
    assert!(store.vread("Observation", "o1", 1).is_ok());
    assert!(matches!(
        store.vread("Observation", "o1", 3),
        Err(StoreError::Gone { .. })
    ));
    let history = store.history("Observation", "o1").unwrap();
    assert_eq!(
        history.iter().map(|h| h.version).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert!(
        store
            .search(&q("Observation", &[("patient", "p2")]))
            .matches
            .is_empty()
    );
    assert_eq!(store.count("Observation"), 0);
    // Updating a deleted resource revives it.
    let (v4, created) = store
        .update("Observation", "o1", obs("o1", "p2", "2024-01-02"), None)
        .unwrap();
    assert!(created && v4.version == 4);
}

#[test]
fn conditional_create() {
    let store = Store::new();
    let body = json!({"resourceType": "Task", "status": "requested", "intent": "order",
                      "identifier": [{"system": "urn:k", "value": "abc"}]});
    let cond = q("Task", &[("identifier", "urn:k|abc")]);
    let first = store.create("Task", body.clone(), Some(&cond)).unwrap();
    let Created::New(first) = first else {
        panic!("expected a new resource")
    };
    let second = store.create("Task", body.clone(), Some(&cond)).unwrap();
    let Created::Existing(second) = second else {
        panic!("expected the existing resource")
    };
    assert_eq!(first.id, second.id);
    assert_eq!(store.count("Task"), 1);
    store.create("Task", body, None).unwrap();
    assert!(matches!(
        store.create("Task", json!({"resourceType": "Task"}), Some(&cond)),
        Err(StoreError::MultipleMatches(2))
    ));
}

#[test]
fn search_semantics() {
    let store = Store::new();
    store.insert_loaded(obs("o1", "p1", "2024-01-01")).unwrap();
    store
        .insert_loaded(obs("o2", "p1", "2024-03-01T10:00:00Z"))
        .unwrap();
    store.insert_loaded(obs("o3", "p12", "2024-06-01")).unwrap();
    // No substring matching of references.
    assert_eq!(
        ids(&store.search(&q("Observation", &[("patient", "p1")]))),
        vec!["o1", "o2"]
    );
    assert_eq!(
        ids(&store.search(&q("Observation", &[("subject", "Patient/p12")]))),
        vec!["o3"]
    );
    assert_eq!(
        ids(&store.search(&q(
            "Observation",
            &[("date", "ge2024-02"), ("_sort", "-date")]
        ))),
        vec!["o3", "o2"]
    );
    assert_eq!(
        ids(&store.search(&q("Observation", &[("date", "lt2024-02,gt2024-05")]))),
        vec!["o1", "o3"]
    );
    assert_eq!(
        ids(&store.search(&q("Observation", &[("patient", "p1"), ("date", "2024-03")]))),
        vec!["o2"]
    );
    assert_eq!(
        store
            .search(&q("Observation", &[("code", "http://loinc.org|8867-4")]))
            .total,
        3
    );
    assert_eq!(
        store
            .search(&q("Observation", &[("code", "other|8867-4")]))
            .total,
        0
    );
    assert_eq!(
        store
            .search(&q("Observation", &[("code:not", "8867-4")]))
            .total,
        0
    );
    assert_eq!(
        store
            .search(&q("Observation", &[("part-of:missing", "true")]))
            .total,
        3
    );
    assert_eq!(
        store
            .search(&q("Observation", &[("encounter:missing", "false")]))
            .total,
        0
    );
    let page = store.search(&q("Observation", &[("_count", "2"), ("_offset", "2")]));
    assert_eq!((page.total, ids(&page)), (3, vec!["o3".to_string()]));
    assert_eq!(
        store.search(&q("Observation", &[("_id", "o2,o3")])).total,
        2
    );
}

#[test]
fn includes_and_revincludes() {
    let store = Store::new();
    store
        .insert_loaded(json!({"resourceType": "Schedule", "id": "s1", "actor": [{"reference": "Practitioner/d1"}]}))
        .unwrap();
    store
        .insert_loaded(json!({"resourceType": "Practitioner", "id": "d1"}))
        .unwrap();
    for i in 0..3 {
        store
            .insert_loaded(json!({"resourceType": "Slot", "id": format!("sl{i}"), "status": "free",
                "schedule": {"reference": "Schedule/s1"}, "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T10:30:00Z"}))
            .unwrap();
    }
    let r = store.search(&q(
        "Slot",
        &[
            ("_include", "Slot:schedule"),
            ("_include:iterate", "Schedule:actor"),
        ],
    ));
    assert_eq!(r.total, 3);
    let included: Vec<_> = r.includes.iter().map(|i| i.relative()).collect();
    assert_eq!(included, vec!["Schedule/s1", "Practitioner/d1"]);
    let r = store.search(&q("Schedule", &[("_revinclude", "Slot:schedule")]));
    assert_eq!(r.includes.len(), 3);
}

#[test]
fn strings() {
    let store = Store::new();
    store
        .insert_loaded(json!({"resourceType": "Patient", "id": "a", "name": [{"family": "Smith", "given": ["Anna"]}]}))
        .unwrap();
    store
        .insert_loaded(json!({"resourceType": "Patient", "id": "b", "name": [{"family": "Smithson", "given": ["Bo"]}]}))
        .unwrap();
    assert_eq!(store.search(&q("Patient", &[("family", "smi")])).total, 2);
    assert_eq!(
        store
            .search(&q("Patient", &[("family:exact", "Smith")]))
            .total,
        1
    );
    assert_eq!(
        store
            .search(&q("Patient", &[("name:contains", "nn")]))
            .total,
        1
    );
    assert_eq!(store.search(&q("Patient", &[("given", "bo")])).total, 1);
}

/// Load-scale check, run by hand in release:
/// `SANDBOX_LOAD_PATIENTS=100000 cargo test -p portico-sandbox --release --lib load_scale -- --ignored --nocapture`
#[test]
#[ignore = "a benchmark: run by hand in release"]
fn load_scale() {
    let patients: usize = std::env::var("SANDBOX_LOAD_PATIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let config = crate::generator::GeneratorConfig {
        seed: 42,
        patients,
        today: chrono::Utc::now().date_naive(),
    };
    // `SANDBOX_LOAD_MODE=generate-only` measures the generator (and serialization) alone.
    if std::env::var("SANDBOX_LOAD_MODE").as_deref() == Ok("generate-only") {
        let started = std::time::Instant::now();
        let (mut count, mut bytes) = (0usize, 0usize);
        crate::generator::generate(&config, &mut |r| {
            count += 1;
            bytes += serde_json::to_vec(&r).map_or(0, |v| v.len());
        });
        eprintln!(
            "generated {count} resources ({bytes} bytes serialized) in {:?}",
            started.elapsed()
        );
        return;
    }
    let store = Store::new();
    let started = std::time::Instant::now();
    let mut rejected = 0;
    let summaries = crate::generator::generate(&config, &mut |r| {
        if store.insert_loaded(r).is_err() {
            rejected += 1;
        }
    })
    .patients;
    let loaded = started.elapsed();
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("")
        .to_owned();
    eprintln!(
        "loaded {} resources for {} patients in {loaded:?} ({rejected} rejected); {rss}",
        store.len(),
        summaries.len()
    );
    assert_eq!(rejected, 0);
    let started = std::time::Instant::now();
    let mut found = 0;
    for p in summaries.iter().take(1000) {
        found += store
            .search(&q(
                "Observation",
                &[("patient", p.id.as_str()), ("_count", "100")],
            ))
            .total;
    }
    eprintln!(
        "1000 Observation?patient= searches in {:?} ({found} matches)",
        started.elapsed()
    );
}
