//! Property tests (bounded fuzzing, run in CI): whatever a client puts in a search, the
//! policy never panics, and every search it lets through is restricted to the
//! principal's own patient and names no other.

use portico_access::Policy;
use proptest::prelude::*;

use crate::common::{A, BASE, patient_a};

fn param_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("patient".to_owned()),
        Just("subject".to_owned()),
        Just("subject:Patient".to_owned()),
        Just("actor".to_owned()),
        Just("performer".to_owned()),
        Just("_include".to_owned()),
        Just("_revinclude".to_owned()),
        Just("_has:Observation:patient:code".to_owned()),
        Just("code".to_owned()),
        Just("category".to_owned()),
        Just("_count".to_owned()),
        "[a-z_:.]{1,24}",
    ]
}

fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(A.to_owned()),
        Just(format!("Patient/{A}")),
        Just("pat-12".to_owned()),
        Just("Patient/pat-12".to_owned()),
        Just(format!("{BASE}/Patient/pat-12")),
        Just(format!("Patient/{A},Patient/pat-12")),
        Just("Observation:subject".to_owned()),
        "[ -~]{0,40}",
    ]
}

fn resource_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Observation".to_owned()),
        Just("Patient".to_owned()),
        Just("Appointment".to_owned()),
        Just("Communication".to_owned()),
        Just("Practitioner".to_owned()),
        Just("Slot".to_owned()),
        Just("Task".to_owned()),
        "[A-Za-z]{1,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn allowed_searches_stay_in_the_compartment(
        rt in resource_type(),
        params in proptest::collection::vec((param_name(), param_value()), 0..6),
    ) {
        let policy = Policy::new(BASE);
        let principal = patient_a("patient/*.rs");
        let Ok(narrowed) = policy.narrow_search(&principal, &rt, &params) else { return Ok(()) };
        // B may not be named as a Patient reference anywhere, nor as a bare id on a
        // parameter that links this type to a patient (or on `_id` of Patient).
        let links: Vec<&str> = portico_fhir::compartment::patient_links(&rt)
            .map(|l| l.iter().map(|l| l.param).collect())
            .unwrap_or_default();
        for (k, v) in &narrowed {
            prop_assert!(!v.contains("Patient/pat-12"), "B survived narrowing: {narrowed:?}");
            let base = k.split([':', '.']).next().unwrap_or_default();
            let links_patient = links.contains(&base)
                || base == "patient"
                || (rt == "Patient" && base == "_id");
            if links_patient {
                prop_assert!(
                    !v.split(',').any(|x| x == "pat-12"),
                    "B survived narrowing: {narrowed:?}"
                );
            }
        }
        if portico_fhir::compartment::is_patient_compartment_type(&rt) {
            let restricted = narrowed.iter().any(|(k, v)| {
                let base = k.split([':', '.']).next().unwrap_or_default();
                (links.contains(&base) || matches!(base, "patient" | "_id"))
                    && !k.contains('.')
                    && v.split(',').all(|x| x == A || x == format!("Patient/{A}"))
            });
            prop_assert!(restricted, "no patient restriction in {narrowed:?}");
        }
    }
}
