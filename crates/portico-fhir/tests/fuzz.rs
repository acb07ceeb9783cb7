//! Property tests (bounded fuzzing, run in CI): the parsers that see client input never
//! panic, and references never match by prefix. (fhirbolt itself is not fuzzed here: it
//! hangs on unknown array elements, see `parse.rs`, which is why client input never
//! reaches it.)

use portico_fhir::parse::check_structure;
use portico_fhir::reference::Reference;
use portico_fhir::search::{DateRange, split_or, split_prefix};
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i32>().prop_map(serde_json::Value::from),
        "[ -~]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("given".to_owned()),
                    Just("gender".to_owned()),
                    Just("contained".to_owned()),
                    Just("resourceType".to_owned()),
                    Just("extension".to_owned()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn structure_checks_never_panic(body in json_value(), rt in prop_oneof![Just("Patient"), Just("Observation"), Just("Bundle")]) {
        let mut body = body;
        if let Some(map) = body.as_object_mut() {
            map.insert("resourceType".into(), rt.into());
        }
        let bytes = serde_json::to_vec(&body).unwrap();
        let _ = check_structure(&bytes, 64);
    }

    #[test]
    fn raw_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = check_structure(&bytes, 64);
    }

    #[test]
    fn search_syntax_never_panics(s in "\\PC{0,40}") {
        let _ = split_prefix(&s);
        let _ = split_or(&s);
        let _ = DateRange::parse(&s);
        let _ = Reference::parse(&s);
    }

    #[test]
    fn references_never_match_by_prefix(id in "[A-Za-z0-9]{1,10}", suffix in "[A-Za-z0-9]{1,5}") {
        let long = Reference::parse(&format!("Patient/{id}{suffix}")).unwrap();
        prop_assert!(!long.is("Patient", &id));
    }
}
