use proptest::prelude::*;
use serde_json::Value;

use super::*;

/// What `serde_json` says of a text: a `Value`, or not JSON.
fn serde_accepts(text: &[u8]) -> bool {
    serde_json::from_slice::<Value>(text).is_ok()
}

/// `serde_json` refuses these only when it builds a tree (see the module docs).
fn serde_refuses_only_as_a_tree(text: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(text) {
        Err(e) => {
            let e = e.to_string();
            e.contains("number out of range") || e.contains("surrogate")
        }
        Ok(_) => false,
    }
}

#[test]
fn agrees_with_serde_on_hand_picked_texts() {
    let texts: &[&str] = &[
        "{}",
        "[]",
        " { \"a\" : [1, -2.5e+3, 0, true, false, null, \"x\"] } ",
        "\"\\u00e9\\n\\\"\"",
        "0",
        "-0.0E-0",
        "{\"a\":1,}",
        "[1,]",
        "[,1]",
        "{\"a\" 1}",
        "{\"a\":1 \"b\":2}",
        "{1:2}",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "1e+",
        "+1",
        "tru",
        "nul",
        "truex",
        "\"abc",
        "\"a\\x\"",
        "\"a\\u12\"",
        "\"a\\u12g4\"",
        "\"tab\there\"",
        "[1] 2",
        "[1]]",
        "{\"a\":{\"b\":[{}]}}",
        "",
        "   ",
        "[\"é漢字🙂\"]",
        "{\"k\":\"\\ud83d\\ude42\"}",
    ];
    for text in texts {
        assert_eq!(
            validate(text.as_bytes()).is_ok(),
            serde_accepts(text.as_bytes()),
            "{text:?}"
        );
    }
}

#[test]
fn refuses_what_is_not_utf8() {
    assert!(validate(b"[\"\xff\"]").is_err());
    assert!(validate(b"[\"\xc3\"]").is_err());
}

#[test]
fn nesting_is_limited_where_serde_limits_it() {
    for depth in 120..=135 {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(
            validate(text.as_bytes()).is_ok(),
            serde_accepts(text.as_bytes()),
            "depth {depth}"
        );
        let text = format!("{}{}", "{\"a\":".repeat(depth) + "1", "}".repeat(depth));
        assert_eq!(
            validate(text.as_bytes()).is_ok(),
            serde_accepts(text.as_bytes()),
            "object depth {depth}"
        );
    }
}

#[test]
fn finds_a_quote_backslash_or_control_character_anywhere_in_a_word() {
    // Each special byte at each offset of the eight-byte words, after non-ASCII text.
    for offset in 0..20 {
        for (special, ok) in [
            ("\"", false),
            ("\\n", true),
            ("\\", false),
            ("\u{1}", false),
        ] {
            let text = format!(
                "[\"{}{}x\"]",
                "é".repeat(offset / 2) + &"a".repeat(offset % 2),
                special
            );
            assert_eq!(validate(text.as_bytes()).is_ok(), ok, "{text:?}");
            assert_eq!(serde_accepts(text.as_bytes()), ok, "{text:?}");
        }
    }
}

#[test]
fn walks_an_object_and_gives_each_skipped_value_its_text() {
    let text = br#"{"resourceType":"Bundle", "ent\u0072y" : [ {"a":1}, 2 ], "total":3}"#;
    let mut s = Scanner::new(text).unwrap();
    s.enter_object().unwrap();
    let mut seen = Vec::new();
    while let Some(key) = s.next_key().unwrap() {
        if key == "entry" {
            s.enter_array().unwrap();
            while s.next_element().unwrap() {
                let span = s.skip_value().unwrap();
                seen.push(format!("entry {}", &s.text()[span]));
            }
        } else {
            let span = s.skip_value().unwrap();
            seen.push(format!("{key} {}", &s.text()[span]));
        }
    }
    s.end().unwrap();
    assert_eq!(
        seen,
        [
            "resourceType \"Bundle\"",
            "entry {\"a\":1}",
            "entry 2",
            "total 3"
        ]
    );
}

#[test]
fn an_unclosed_container_is_an_error_not_a_panic() {
    for text in ["{", "{\"a\"", "{\"a\":", "{\"a\":1", "[", "[1", "[1,"] {
        let mut s = Scanner::new(text.as_bytes()).unwrap();
        assert!(s.skip_value().is_err(), "{text:?}");
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        "[\"\\\\/\u{0}-\u{1f}a-zé🙂]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("\\PC{0,6}", inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn accepts_every_text_serde_writes(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_vec_pretty(&value).unwrap()
        } else {
            serde_json::to_vec(&value).unwrap()
        };
        let mut s = Scanner::new(&text).unwrap();
        let span = s.skip_value().unwrap();
        s.end().unwrap();
        let back: Value = serde_json::from_slice(&text[span]).unwrap();
        prop_assert_eq!(back, value);
    }

    #[test]
    fn agrees_with_serde_on_mangled_texts(
        value in json_value(),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), 0u8..12), 1..4),
    ) {
        let mut text = serde_json::to_vec(&value).unwrap();
        for (at, what) in cuts {
            let i = at.index(text.len() + 1);
            let insert: &[u8] = match what {
                0 => b",",
                1 => b"\"",
                2 => b"\\",
                3 => b"}",
                4 => b"]",
                5 => b"{",
                6 => b"[",
                7 => b":",
                8 => b"\x01",
                9 => b"-",
                10 => b"e",
                _ => {
                    if i < text.len() {
                        text.remove(i);
                    }
                    continue;
                }
            };
            text.splice(i..i, insert.iter().copied());
        }
        if !serde_refuses_only_as_a_tree(&text) {
            prop_assert_eq!(validate(&text).is_ok(), serde_accepts(&text), "{}", String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn agrees_with_serde_on_texts_from_a_json_alphabet(text in "[{}\\[\\]\",:01.eE+\\-tfnrulas\\\\ ]{0,24}") {
        if !serde_refuses_only_as_a_tree(text.as_bytes()) {
            prop_assert_eq!(validate(text.as_bytes()).is_ok(), serde_accepts(text.as_bytes()), "{}", text);
        }
    }
}
