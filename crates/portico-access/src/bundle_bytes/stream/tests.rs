//! The streamed check against the tree verifier, its reference, on the generated and
//! adversarial Bundles the buffered verifier is tested on, each cut into pieces at
//! random places: the same entries kept, the same `total`, the same report; and an
//! entry that fails the check never handed out, whatever happens after it.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{BundleStream, Finished, Piece, StreamError, Writer};
use crate::bundle_bytes::tests::{BASE, bundle, odd_texts, patient, policies, principals};
use crate::{Policy, Principal, VerifyReport};

/// The text in pieces of the given sizes (the last size repeats), or whole when none.
fn pieces<'t>(text: &'t [u8], sizes: &[usize]) -> Vec<&'t [u8]> {
    if sizes.is_empty() {
        return vec![text];
    }
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < text.len() {
        let size = sizes[i.min(sizes.len() - 1)].max(1);
        let end = (at + size).min(text.len());
        out.push(&text[at..end]);
        at = end;
        i += 1;
    }
    out
}

/// What the stream hands out for `text` pushed in pieces of `sizes`: the answer's text
/// as a client reads it, and the report; or the error, with what had been handed out.
fn stream(
    policy: &Policy,
    who: &Principal,
    text: &[u8],
    sizes: &[usize],
) -> Result<(Vec<u8>, VerifyReport), (StreamError, Vec<Piece>)> {
    let mut s = BundleStream::new();
    let mut out = Vec::new();
    for piece in pieces(text, sizes) {
        if let Err(e) = s.push(policy, who, piece, &mut out) {
            return Err((e, out));
        }
    }
    let finished = match s.finish(policy, who) {
        Ok(f) => f,
        Err(e) => return Err((e, out)),
    };
    let report = finished.report();
    let text = match finished {
        Finished::Whole(verified) => {
            assert!(out.is_empty(), "pieces handed out before a whole answer");
            verified.to_json()
        }
        Finished::Tail { members, .. } => {
            let mut writer = Writer::default();
            let mut text = Vec::new();
            for piece in &out {
                match piece {
                    Piece::Head(head) => text.extend(Writer::head(head)),
                    Piece::Entry(entry) => {
                        text.extend_from_slice(writer.before_entry());
                        text.extend_from_slice(entry);
                    }
                }
            }
            text.extend(Writer::tail(&members));
            text
        }
    };
    Ok((text, report))
}

/// The tree verifier's answer to `text`, `None` when it refuses it.
fn tree(policy: &Policy, who: &Principal, text: &[u8]) -> Option<(Value, VerifyReport)> {
    let mut bundle: Value = serde_json::from_slice(text).ok()?;
    let report = policy.verify_bundle(who, &mut bundle);
    Some((bundle, report))
}

/// Every entry the stream handed out is one the principal may see: it is kept when it
/// is checked alone, as the only entry of a Bundle like the one it came in.
fn assert_all_allowed(policy: &Policy, who: &Principal, out: &[Piece]) {
    let mut head = None;
    for piece in out {
        match piece {
            Piece::Head(h) => head = Some(h.clone()),
            Piece::Entry(entry) => {
                let entry: Value = serde_json::from_slice(entry).expect("an entry is JSON");
                let mut alone = Value::Object(head.clone().expect("the head comes first"));
                alone["entry"] = json!([entry]);
                let report = policy.verify_bundle(who, &mut alone);
                assert_eq!(report.removed, 0, "handed out {entry}");
            }
        }
    }
}

/// The stream agrees with the tree on `text` cut by `sizes`, or refuses it for a member
/// after the entries (then what it handed out was allowed).
fn assert_agrees(policy: &Policy, who: &Principal, text: &[u8], sizes: &[usize]) {
    let shown = String::from_utf8_lossy(text);
    match (tree(policy, who, text), stream(policy, who, text, sizes)) {
        (Some((bundle, report)), Ok((written, streamed))) => {
            assert_eq!(streamed, report, "reports differ on {shown} cut {sizes:?}");
            let written: Value = serde_json::from_slice(&written)
                .unwrap_or_else(|e| panic!("unparsable ({e}) for {shown} cut {sizes:?}"));
            assert_eq!(written, bundle, "answers differ on {shown} cut {sizes:?}");
        }
        (None, Err((_, out))) => assert_all_allowed(policy, who, &out),
        (Some(_), Err((StreamError::AfterEntries(_), out))) => {
            assert_all_allowed(policy, who, &out);
        }
        (tree, streamed) => panic!(
            "one refused {shown} cut {sizes:?}: tree {:?}, stream {:?}",
            tree.map(|t| t.1),
            streamed.map(|s| s.1)
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_same_answer_as_the_tree_verifier_however_the_text_is_cut(
        b in bundle(),
        pretty in any::<bool>(),
        sizes in proptest::collection::vec(1..80usize, 0..12),
    ) {
        let text = if pretty {
            serde_json::to_string_pretty(&b).unwrap()
        } else {
            serde_json::to_string(&b).unwrap()
        };
        for policy in policies() {
            for who in principals() {
                assert_agrees(&policy, &who, text.as_bytes(), &sizes);
            }
        }
    }
}

#[test]
fn odd_texts_agree_with_the_tree_however_they_are_cut() {
    for policy in policies() {
        for text in odd_texts() {
            for sizes in [&[][..], &[1], &[2], &[3, 7], &[13]] {
                for who in principals() {
                    assert_agrees(&policy, &who, text.as_bytes(), sizes);
                }
            }
        }
    }
}

const OWN: &str = r#"{"resource":{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/pat-1"}}}"#;
const OTHER: &str = r#"{"resource":{"resourceType":"Observation","id":"x","subject":{"reference":"Patient/pat-12"}}}"#;

#[test]
fn entries_stream_as_they_arrive_and_only_the_allowed_ones() {
    let policy = Policy::new(BASE);
    let who = patient("patient/*.rs");
    let mut s = BundleStream::new();
    let mut out = Vec::new();
    s.push(
        &policy,
        &who,
        br#"{"resourceType":"Bundle","type":"searchset","total":3,"entry":["#,
        &mut out,
    )
    .unwrap();
    assert!(
        matches!(&out[..], [Piece::Head(h)] if h.get("total").is_none() && h["type"] == "searchset")
    );
    // An entry is handed out once its last byte has come, not before.
    let (first, rest) = OWN.split_at(OWN.len() - 1);
    s.push(&policy, &who, first.as_bytes(), &mut out).unwrap();
    assert_eq!(out.len(), 1);
    s.push(&policy, &who, rest.as_bytes(), &mut out).unwrap();
    assert_eq!(out[1], Piece::Entry(Bytes::from_static(OWN.as_bytes())));
    // Another patient's entry is never handed out.
    s.push(&policy, &who, format!(",{OTHER},").as_bytes(), &mut out)
        .unwrap();
    assert_eq!(out.len(), 2);
    s.push(&policy, &who, format!("{OWN}]}}").as_bytes(), &mut out)
        .unwrap();
    assert_eq!(out.len(), 3);
    let Finished::Tail { members, report } = s.finish(&policy, &who).unwrap() else {
        panic!("not streamed");
    };
    assert_eq!((report.kept, report.removed), (2, 1));
    // `total` follows the entries, corrected.
    assert_eq!(Value::Object(members), json!({"total": 2}));
}

#[test]
fn a_member_after_the_entries_that_would_change_them_cuts_the_answer_off() {
    let policy = Policy::new(BASE);
    let who = patient("patient/*.rs");
    for text in [
        format!(
            r#"{{"resourceType":"Bundle","type":"collection","entry":[{OWN},{OTHER}],"entry":[]}}"#
        ),
        format!(
            r#"{{"resourceType":"Bundle","type":"collection","entry":[{OWN}],"resourceType":"Patient"}}"#
        ),
        format!(
            r#"{{"resourceType":"Bundle","type":"collection","entry":[{OWN}],"type":"searchset"}}"#
        ),
        format!(
            r#"{{"resourceType":"Bundle","type":"collection","link":[],"entry":[{OWN}],"link":[]}}"#
        ),
    ] {
        let Err((e, out)) = stream(&policy, &who, text.as_bytes(), &[]) else {
            panic!("streamed {text}");
        };
        assert!(matches!(e, StreamError::AfterEntries(_)), "{e}");
        // What left before was checked.
        assert_eq!(out.len(), 2, "{text}");
        assert_all_allowed(&policy, &who, &out);
    }
    // `total` may come again: the last one is kept, as in a tree.
    let text = format!(
        r#"{{"resourceType":"Bundle","type":"searchset","total":5,"entry":[{OWN}],"total":1}}"#
    );
    assert_agrees(&policy, &who, text.as_bytes(), &[]);
}

/// A principal who may read Observations but not search them: whether an entry is a
/// search's match (checked as a search) or not (as a read) depends on the Bundle's
/// `type`, so entries wait for it.
#[test]
fn entries_are_not_streamed_before_the_bundles_type_is_known() {
    let policy = Policy::new(BASE);
    let who = patient("patient/Patient.rs patient/Observation.r");
    let own = r#"{"resource":{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/pat-1"}},"search":{"mode":"match"}}"#;
    let late = format!(r#"{{"resourceType":"Bundle","entry":[{own}],"type":"searchset"}}"#);
    let mut s = BundleStream::new();
    let mut out = Vec::new();
    s.push(&policy, &who, late.as_bytes(), &mut out).unwrap();
    assert!(out.is_empty(), "streamed before the type: {out:?}");
    let Finished::Whole(verified) = s.finish(&policy, &who).unwrap() else {
        panic!("streamed");
    };
    // As the tree decides: a search's match this principal may not search for.
    assert_eq!((verified.report.kept, verified.report.removed), (0, 1));
    for sizes in [&[][..], &[1], &[7]] {
        assert_agrees(&policy, &who, late.as_bytes(), sizes);
        let early = format!(r#"{{"resourceType":"Bundle","type":"searchset","entry":[{own}]}}"#);
        assert_agrees(&policy, &who, early.as_bytes(), sizes);
    }
}

#[test]
fn a_text_cut_short_or_broken_after_the_entries_started_is_an_error() {
    let policy = Policy::new(BASE);
    let who = patient("patient/*.rs");
    let whole = format!(r#"{{"resourceType":"Bundle","entry":[{OWN},{OWN}],"total":2}}"#);
    for end in 30..whole.len() {
        let cut = &whole.as_bytes()[..end];
        let Err((e, out)) = stream(&policy, &who, cut, &[5]) else {
            panic!("answered a text cut at {end}");
        };
        assert!(
            matches!(e, StreamError::Incomplete | StreamError::Syntax(_)),
            "{e}"
        );
        assert_all_allowed(&policy, &who, &out);
    }
    for broken in [
        format!(r#"{{"resourceType":"Bundle","entry":[{OWN} {OWN}]}}"#),
        format!(r#"{{"resourceType":"Bundle","entry":[{OWN},]}}"#),
        format!(r#"{{"resourceType":"Bundle","entry":[{OWN}]}} x"#),
        format!(r#"{{"resourceType":"Bundle","entry":[{OWN}],"total":1 2}}"#),
        format!(r#"{{"resourceType":"Bundle","entry":[{OWN}] "total":1}}"#),
        r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation"]}]}"#
            .to_owned(),
        r#"{"resourceType":"Bundle","entry":[{"resource":{"id":"a\qb"}}]}"#.to_owned(),
    ] {
        assert!(tree(&policy, &who, broken.as_bytes()).is_none(), "{broken}");
        for sizes in [&[][..], &[1], &[4]] {
            assert_agrees(&policy, &who, broken.as_bytes(), sizes);
        }
    }
}

#[test]
fn escapes_and_brackets_in_strings_cut_anywhere_frame_alike() {
    let policy = Policy::new(BASE);
    let who = patient("patient/*.rs");
    let text = r#"{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"Observation","id":"q","subject":{"reference":"Patient/pat-1"},"note":[{"text":"a: \"}]{[\" \\\\\" \\"}]}},{"resource":{"resourceType":"Observation","id":"e","subject":{"reference":"\u0050atient/pat-12"}}}],"total":2}"#;
    assert!(tree(&policy, &who, text.as_bytes()).is_some());
    for size in 1..12 {
        assert_agrees(&policy, &who, text.as_bytes(), &[size]);
    }
}

#[test]
fn nesting_counts_the_bundle_around_an_entry() {
    let policy = Policy::new(BASE);
    let who = patient("patient/*.rs");
    for depth in 120..132 {
        let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        for text in [
            format!(
                r#"{{"resourceType":"Bundle","entry":[{{"resource":{{"resourceType":"Observation","id":"d","subject":{{"reference":"Patient/pat-1"}},"x":{deep}}}}}]}}"#
            ),
            format!(r#"{{"resourceType":"Bundle","meta":{deep},"entry":[]}}"#),
            format!(r#"{{"resourceType":"Bundle","entry":[],"meta":{deep}}}"#),
        ] {
            assert_agrees(&policy, &who, text.as_bytes(), &[]);
        }
    }
}

#[test]
fn the_stream_holds_one_entry_not_the_bundle() {
    let policy = Policy::new(BASE);
    let who = patient("patient/*.rs");
    let mut s = BundleStream::new();
    let mut out = Vec::new();
    s.push(
        &policy,
        &who,
        br#"{"resourceType":"Bundle","type":"searchset","entry":["#,
        &mut out,
    )
    .unwrap();
    for i in 0..1000 {
        let sep = if i == 0 { "" } else { "," };
        s.push(&policy, &who, format!("{sep}{OWN}").as_bytes(), &mut out)
            .unwrap();
        assert!(s.buf.len() <= OWN.len() + 1, "holds {} bytes", s.buf.len());
        out.clear();
    }
    // Nor does whitespace between entries pile up.
    for _ in 0..1000 {
        s.push(&policy, &who, &[b' '; 1000], &mut out).unwrap();
        assert!(s.buf.len() <= 1000, "holds {} bytes", s.buf.len());
    }
    s.push(&policy, &who, b"]}", &mut out).unwrap();
    assert_eq!(s.finish(&policy, &who).unwrap().report().kept, 1000);
}
