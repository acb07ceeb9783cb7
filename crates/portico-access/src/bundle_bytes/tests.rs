//! The entry-by-entry verifier against the tree verifier, its reference: on generated
//! Bundles (entries of the principal, of another patient, labelled, includes, outcomes,
//! entries without a resource, paged or not) and on adversarial texts (repeated keys,
//! escaped keys, odd `entry` members, not a Bundle, not an object), both must keep the
//! same entries, write the same `total` and report the same counts.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::parse_noting_repeats;
use crate::delegation::{ACT_CODE, AccessLevel, Label, ProxyGrant};
use crate::principal::ClaimNames;
use crate::{ExtraLink, Policy, Principal};

pub(super) const BASE: &str = "https://ehr/fhir";

pub(super) fn patient(scope: &str) -> Principal {
    Principal::from_claims(
        json!({"sub": "u1", "patient": "pat-1", "scope": scope})
            .as_object()
            .unwrap(),
        &ClaimNames::default(),
    )
    .unwrap()
}

/// A parent acting for `kid` (read-only, PSY withheld) whose own record is `pat-1`.
fn parent() -> Principal {
    let mut p = Principal::from_claims(
        json!({"sub": "parent", "patient": ["pat-1", "kid"], "fhirUser": "Patient/pat-1",
            "scope": "patient/*.rs"})
        .as_object()
        .unwrap(),
        &ClaimNames::default(),
    )
    .unwrap();
    p.proxies = vec![ProxyGrant {
        patient: "kid".into(),
        relationship: "rp-1".into(),
        level: AccessLevel::ReadOnly,
        withheld: Arc::new(vec![Label::new(ACT_CODE, "PSY")]),
    }];
    p
}

/// The gateway's policies: R4's compartment alone, and with extra links of the kinds it
/// configures (a type outside R4's compartment, an extension, and one more element of a
/// type R4 already links).
pub(super) fn policies() -> Vec<Policy> {
    vec![
        Policy::new(BASE),
        Policy::new(BASE)
            .with_link(ExtraLink::task_for())
            .with_link(ExtraLink {
                resource_type: "PaymentReconciliation".into(),
                param: "patient".into(),
                paths: vec![format!("extension[url={PAYER_EXTENSION}].valueReference")],
            })
            .with_link(ExtraLink {
                resource_type: "Observation".into(),
                param: "focus".into(),
                paths: vec!["focus".into()],
            }),
    ]
}

const PAYER_EXTENSION: &str = "https://portico.example/fhir/StructureDefinition/patient";

pub(super) fn principals() -> Vec<Principal> {
    vec![
        patient("patient/*.rs"),
        patient("patient/Observation.rs patient/Patient.rs"),
        patient("patient/Observation.rs?category=laboratory"),
        // `status` filters read the `status` element of the types that have one.
        patient("patient/Observation.rs?status=final patient/Task.rs?status=requested"),
        // May read Observations but not search them: a search's matches and the rest
        // of a Bundle are checked differently.
        patient("patient/Patient.rs patient/Observation.r patient/Condition.s"),
        parent(),
    ]
}

/// Both verifiers on the same text: the tree's Bundle and report, and the bytes'.
fn both(policy: &Policy, who: &Principal, text: &str) -> (Value, Value) {
    let tree = serde_json::from_str::<Value>(text).map(|mut bundle| {
        let report = policy.verify_bundle(who, &mut bundle);
        (bundle, report)
    });
    let bytes = policy.verify_bundle_bytes(who, Bytes::from(text.to_owned()));
    match (tree, bytes) {
        (Ok((tree, tree_report)), Ok(verified)) => {
            assert_eq!(verified.report, tree_report, "reports differ on {text}");
            let written: Value = serde_json::from_slice(&verified.to_json())
                .unwrap_or_else(|e| panic!("unparsable output ({e}) for {text}"));
            (tree, written)
        }
        (Err(_), Err(_)) => (Value::Null, Value::Null),
        (tree, bytes) => panic!(
            "one verifier refused {text}: tree {:?}, bytes {:?}",
            tree.map(|t| t.1),
            bytes.map(|b| b.report)
        ),
    }
}

fn assert_same(policy: &Policy, text: &str) {
    for (i, who) in principals().iter().enumerate() {
        let (tree, written) = both(policy, who, text);
        assert_eq!(written, tree, "outputs differ for principal {i} on {text}");
    }
}

fn subject() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"reference": "Patient/pat-1"})),
        Just(json!({"reference": "Patient/pat-12"})),
        Just(json!({"reference": "Patient/kid"})),
        Just(json!({"reference": "https://ehr/fhir/Patient/pat-1"})),
        Just(json!({"reference": "https://evil.example/fhir/Patient/pat-1"})),
        Just(json!({"display": "no reference"})),
        "[ -~]{0,20}".prop_map(|r| json!({"reference": r})),
    ]
}

fn resource() -> impl Strategy<Value = Value> {
    let labelled = prop_oneof![
        Just(None),
        Just(Some(
            json!({"security": [{"system": ACT_CODE, "code": "PSY"}]})
        )),
        Just(Some(
            json!({"security": [{"system": ACT_CODE, "code": "ETH"}]})
        )),
    ];
    let category = prop_oneof![Just("laboratory"), Just("vital-signs")];
    (
        prop_oneof![
            Just("Observation"),
            Just("Condition"),
            Just("Patient"),
            Just("Practitioner"),
            Just("OperationOutcome"),
            Just("Device"),
            Just("Appointment"),
            Just("Schedule"),
            Just("Task"),
            Just("PaymentReconciliation"),
        ],
        "[a-z0-9-]{1,8}",
        subject(),
        labelled,
        category,
        prop_oneof![Just("pat-1"), Just("pat-12"), Just("kid")],
        proptest::option::of(subject()),
    )
        .prop_map(|(rt, id, subject, meta, category, patient_id, focus)| {
            let mut r = match rt {
                "Patient" => json!({"resourceType": rt, "id": patient_id}),
                "Practitioner" | "Device" => json!({"resourceType": rt, "id": id}),
                "OperationOutcome" => {
                    json!({"resourceType": rt, "issue": [{"severity": "warning", "code": "informational"}]})
                }
                "Appointment" => json!({"resourceType": rt, "id": id, "status": "booked",
                    "participant": [{"actor": subject}, {"actor": {"reference": "Practitioner/dr-1"}},
                        {"actor": {"reference": format!("Patient/{patient_id}")}}]}),
                "Schedule" => json!({"resourceType": rt, "id": id, "actor": [subject]}),
                "Task" => json!({"resourceType": rt, "id": id, "status": "requested",
                    "intent": "order", "for": subject}),
                "PaymentReconciliation" => json!({"resourceType": rt, "id": id, "status": "active",
                    "extension": [{"url": PAYER_EXTENSION, "valueReference": subject},
                        {"url": "https://payer.example/remittance", "valueReference": {"reference": "Patient/pat-12"}}]}),
                _ => json!({"resourceType": rt, "id": id, "subject": subject,
                    "status": if category == "laboratory" { "final" } else { "preliminary" },
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}], "text": "Glucose {mg/dL}: [x]"},
                    "note": [{"text": "mentions Patient/pat-12 in passing"}],
                    "valueString": "a \"quoted\" value: with a colon, and \\ a backslash"}),
            };
            if let Some(meta) = meta {
                r["meta"] = meta;
            }
            if let (Some(focus), "Observation") = (focus, rt) {
                r["focus"] = json!([focus]);
            }
            r
        })
}

fn entry() -> impl Strategy<Value = Value> {
    (
        resource(),
        prop_oneof![
            Just(Some("match")),
            Just(Some("include")),
            Just(Some("outcome")),
            Just(None)
        ],
        0..10u8,
    )
        .prop_map(|(resource, mode, shape)| match shape {
            // An entry with no resource (a history delete).
            0 => json!({"fullUrl": "https://ehr/fhir/Observation/gone",
                "request": {"method": "DELETE", "url": "Observation/gone"}}),
            _ => {
                let mut e = json!({"fullUrl": "https://ehr/fhir/X/1", "resource": resource});
                if let Some(mode) = mode {
                    e["search"] = json!({"mode": mode});
                }
                e
            }
        })
}

pub(super) fn bundle() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(entry(), 0..12),
        prop_oneof![Just("searchset"), Just("history"), Just("collection")],
        proptest::option::of(0..50u32),
        any::<bool>(),
    )
        .prop_map(|(entries, kind, total, paged)| {
            let mut b = json!({"resourceType": "Bundle", "type": kind, "entry": entries});
            if let Some(t) = total {
                b["total"] = json!(t);
            }
            if paged {
                b["link"] = json!([{"relation": "next", "url": "https://ehr/fhir?page=2"}]);
            }
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_same_entries_as_the_tree_verifier(b in bundle(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&b).unwrap()
        } else {
            serde_json::to_string(&b).unwrap()
        };
        for policy in policies() {
            for who in principals() {
                let (tree, written) = both(&policy, &who, &text);
                prop_assert_eq!(written, tree);
            }
        }
    }
}

#[test]
fn a_repeated_key_is_written_as_it_was_checked() {
    let policy = Policy::new(BASE);
    let who = patient("patient/*.rs");
    // A first-wins reader of the raw text would see pat-12's Observation.
    let text = r#"{"resourceType":"Bundle","type":"searchset","entry":[
        {"resource":{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/pat-12"}},
         "resource":{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/pat-1"}}},
        {"resource":{"resourceType":"Observation","id":"p","subject":{"reference":"Patient/pat-12"},
            "subject":{"reference":"Patient/pat-1"}}}
    ]}"#;
    let verified = policy
        .verify_bundle_bytes(&who, Bytes::from_static(text.as_bytes()))
        .unwrap();
    assert_eq!(verified.report.kept, 2);
    let out = String::from_utf8(verified.to_json()).unwrap();
    assert!(!out.contains("pat-12"), "{out}");
    assert_same(&policy, text);
}

#[test]
fn repeated_keys_inside_a_resource_agree_with_the_tree() {
    let policy = Policy::new(BASE);
    for resource in [
        // In a member the check reads: the entry is parsed whole.
        r#"{"resourceType":"Condition","id":"c","subject":{"reference":"Patient/pat-12","reference":"Patient/pat-1"}}"#,
        r#"{"resourceType":"Condition","id":"c","subject":{"reference":"Patient/kid"},
            "meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"PSY"}]},
            "meta":{}}"#,
        r#"{"resourceType":"Condition","resourceType":"Observation","id":"c","subject":{"reference":"Patient/pat-1"}}"#,
        // In a member it does not read: nothing it decides changes.
        r#"{"resourceType":"Condition","id":"c","subject":{"reference":"Patient/pat-1"},"code":{"text":"a","text":"b"}}"#,
    ] {
        let text = format!(
            r#"{{"resourceType":"Bundle","type":"searchset","entry":[{{"resource":{resource},"search":{{"mode":"match"}}}}]}}"#
        );
        assert_same(&policy, &text);
    }
}

#[test]
fn odd_texts_agree_with_the_tree() {
    let policy = Policy::new(BASE);
    for text in odd_texts() {
        assert_same(&policy, &text);
    }
}

/// Texts no EHR should send, each a trap for a verifier that reads less than a parser.
pub(super) fn odd_texts() -> Vec<String> {
    let own = r#"{"resource":{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/pat-1"}}}"#;
    let other = r#"{"resource":{"resourceType":"Observation","id":"x","subject":{"reference":"Patient/pat-12"}}}"#;
    vec![
        format!(r#"{{"resourceType":"Bundle","type":"searchset","entry":[{own},{other}]}}"#),
        // `entry` given twice: the last wins, as in a tree.
        format!(
            r#"{{"resourceType":"Bundle","entry":[{other}],"type":"searchset","entry":[{own}]}}"#
        ),
        format!(r#"{{"resourceType":"Bundle","entry":[{own}],"entry":[{other}]}}"#),
        // Keys and values written with escapes.
        format!(r#"{{"resource\u0054ype":"Bundle","\u0065ntry":[{own},{other}],"total":2}}"#),
        r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation","id":"e","subject":{"reference":"Patient\/pat-12"}}}]}"#.to_owned(),
        r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation","id":"e","subject":{"reference":"\u0050atient/pat-12"}}}]}"#.to_owned(),
        // `entry` that is not an array, or null, or empty.
        format!(r#"{{"resourceType":"Bundle","type":"searchset","total":3,"entry":{own}}}"#),
        r#"{"resourceType":"Bundle","entry":null,"total":0}"#.to_owned(),
        r#"{"resourceType":"Bundle","entry":[],"total":0}"#.to_owned(),
        r#"{"resourceType":"Bundle","entry":"[]"}"#.to_owned(),
        r#"{"resourceType":"Bundle"}"#.to_owned(),
        // Not a Bundle, not an object, not JSON.
        format!(r#"{{"resourceType":"Observation","entry":[{other}]}}"#),
        format!(r#"[{other}]"#),
        r#""Bundle""#.to_owned(),
        "  \n {\"resourceType\" : \"Bundle\" , \"entry\" : [ ] } ".to_owned(),
        r#"{"resourceType":"Bundle","entry":[{"resource":{}}, 3, null, "x", []]}"#.to_owned(),
        r#"{"resourceType":"Bundle","entry":[{"resource":5},{"resource":1.5e3},{"resource":[1,{"a":2}]},{"resource":"x"},{"resource":null},{"resource":true}]}"#.to_owned(),
        r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":7,"id":"o"}},{"search":3,"resource":{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/pat-1"}}}]}"#.to_owned(),
        r#"{"resourceType":"Bundle","entry":5}"#.to_owned(),
        r#"{"resourceType":"Bundle","entry":{"a":1}}"#.to_owned(),
        r#"{"resourceType":"Bundle","entry":true}"#.to_owned(),
        r#"{"resourceType":"Bundle","entry":[{"resource":"#.to_owned(),
        "{}".to_owned(),
        String::new(),
        // A string holding braces, colons and escaped quotes inside an entry.
        r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation","id":"q","subject":{"reference":"Patient/pat-1"},"note":[{"text":"a: \"}{\" \\"}]}}]}"#.to_owned(),
    ]
}

#[test]
fn repeats_are_keys_given_twice_not_colons_in_strings() {
    let text = r#"{"a":{"b":"x:y","c":["\":\"",{"d":1}]},"e":"\\"}"#;
    let (tree, repeated) = parse_noting_repeats(text).unwrap();
    assert!(!repeated);
    assert_eq!(tree, serde_json::from_str::<Value>(text).unwrap());
    let (tree, repeated) = parse_noting_repeats(r#"{"a":1,"a":2}"#).unwrap();
    assert!(repeated);
    assert_eq!(tree, json!({"a": 2}));
    let (_, repeated) = parse_noting_repeats(r#"[{"a":1},{"b":{"c":1,"c":1}}]"#).unwrap();
    assert!(repeated);
}

#[test]
fn kept_entries_are_the_bytes_that_came() {
    let policy = Policy::new(BASE);
    let who = patient("patient/*.rs");
    // Spacing and key order of a kept entry are the EHR's own.
    let own = r#"{ "search" : {"mode":"match"} , "resource" : {"subject":{"reference":"Patient/pat-1"},"resourceType":"Observation","id":"o"} }"#;
    let text = format!(r#"{{"resourceType":"Bundle","type":"searchset","entry":[{own}]}}"#);
    let verified = policy
        .verify_bundle_bytes(&who, Bytes::from(text.clone()))
        .unwrap();
    let out = String::from_utf8(verified.to_json()).unwrap();
    assert!(out.contains(own), "{out}");
}

/// The spliced answer is, byte for byte, the written one with `from` replaced by `to`,
/// as verified and with its head rewritten as the facade does (links, a member added).
fn assert_splices(text: &str, from: &str, to: &str) {
    let body = Bytes::from(text.to_owned());
    for (i, who) in principals().iter().enumerate() {
        let Ok(mut verified) = policies()[0].verify_bundle_bytes(who, body.clone()) else {
            continue;
        };
        if i % 2 == 1 && verified.head.is_object() {
            verified.head["link"] = json!([
                {"relation": "self", "url": format!("{to}/Observation?patient=pat-1")},
                {"relation": "next", "url": format!("{from}/Observation?cursor=x,y")},
            ]);
            verified.head["total"] = json!(3);
        }
        let expected = String::from_utf8(verified.to_json())
            .unwrap()
            .replace(from, to);
        match verified.splice(from, to) {
            Some(spliced) => {
                let assembled = String::from_utf8(spliced.assemble(&body).unwrap()).unwrap();
                assert_eq!(assembled, expected, "{from} → {to} in {text}");
                assert_eq!(spliced.len(), expected.len());
            }
            None => assert!(
                from.is_empty() || from.contains([',', '{', '}', '[', ']']),
                "declined {from} for {text}"
            ),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn a_spliced_answer_is_the_written_one_with_the_base_replaced(
        b in bundle(),
        pretty in any::<bool>(),
        from in prop_oneof![
            Just("https://ehr/fhir"),
            Just("https://ehr"),
            Just("pat-1"),
            Just("e"),
            // Twice in a row in "collection": a replacement right after another.
            Just("l"),
            Just("\""),
            Just("\":\""),
            Just("},{"),
            Just(""),
        ],
    ) {
        let text = if pretty {
            serde_json::to_string_pretty(&b).unwrap()
        } else {
            serde_json::to_string(&b).unwrap()
        };
        assert_splices(&text, from, "http://gateway.example:8080/fhir");
    }
}

#[test]
fn a_spliced_answer_keeps_little_besides_the_body() {
    let entries: Vec<Value> = (0..20)
        .map(|i| {
            json!({"fullUrl": format!("https://ehr/fhir/Observation/o{i}"),
                "resource": {"resourceType": "Observation", "id": format!("o{i}"),
                    "subject": {"reference": "Patient/pat-1"}, "status": "final",
                    "code": {"text": "a long enough description of a laboratory result"}},
                "search": {"mode": "match"}})
        })
        .collect();
    let text = json!({"resourceType": "Bundle", "type": "searchset", "total": 20,
        "link": [{"relation": "self", "url": "https://ehr/fhir/Observation?patient=pat-1"}],
        "entry": entries})
    .to_string();
    let body = Bytes::from(text);
    let verified = policies()[0]
        .verify_bundle_bytes(&patient("patient/*.rs"), body.clone())
        .unwrap();
    let spliced = verified
        .splice("https://ehr/fhir", "https://gw/fhir")
        .unwrap();
    assert_eq!(spliced.len(), spliced.assemble(&body).unwrap().len());
    // The head, one copy of the new base, and two pieces per entry (up to its base,
    // then from after it through the next entry's): a small part of the answer.
    assert!(
        spliced.weight() * 5 < body.len(),
        "{} bytes kept for a {}-byte answer",
        spliced.weight(),
        body.len()
    );
    // A repeated key: that entry is written from its tree, a literal piece.
    let repeated = r#"{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"https://ehr/fhir/X/1","resource":{"resourceType":"Observation","id":"a","id":"b","subject":{"reference":"Patient/pat-1"}}}]}"#;
    assert_splices(repeated, "https://ehr/fhir", "https://gw/fhir");
}
