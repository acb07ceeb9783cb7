//! Unit tests of the message checks, the thread convention and the grouping.

use chrono::{DateTime, TimeZone, Utc};
use portico_fhir::reference::Reference;
use serde_json::json;

use super::threads::{Threads, group};
use super::views::{is_header, snippet, unread};
use super::*;
use crate::fixture;
use crate::profile::{MessageStrategy, MessagesProfile};
use crate::view::str_at;

fn profile() -> MessagesProfile {
    MessagesProfile {
        strategy: MessageStrategy::Communication,
        recipient_pool: vec!["Organization/front-desk".to_owned()],
        max_text_chars: 10,
        attachment_types: vec!["image/png".to_owned()],
        max_attachment_bytes: 4,
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 7, 1, 10, 0, 0).unwrap()
}

fn att(content_type: &str, data: &str) -> NewAttachment {
    NewAttachment {
        content_type: content_type.to_owned(),
        title: Some("scan".to_owned()),
        data: data.to_owned(),
    }
}

#[test]
fn text_and_topic_are_bounded() {
    let p = profile();
    assert_eq!(check_content(&p, "  hi  ", &[], now()).unwrap().text, "hi");
    assert_eq!(
        check_content(&p, "   ", &[], now()).unwrap_err().code(),
        "text_required"
    );
    assert_eq!(
        check_content(&p, "01234567890", &[], now())
            .unwrap_err()
            .code(),
        "text_too_long"
    );
    // Characters, not bytes.
    assert!(check_content(&p, "éééééééééé", &[], now()).is_ok());
    assert!(check_topic("Lab results").is_ok());
    assert_eq!(check_topic(" ").unwrap_err().code(), "topic_required");
    assert_eq!(
        check_topic(&"x".repeat(201)).unwrap_err().code(),
        "topic_too_long"
    );
    assert!(check_topic(&"x".repeat(200)).is_ok());
    assert_eq!(check_topic("a\nb").unwrap_err().code(), "invalid_topic");
}

#[test]
fn attachments_are_checked_for_type_size_and_encoding() {
    let p = profile();
    let ok = check_content(&p, "hi", &[att("IMAGE/PNG", "AQID")], now()).unwrap();
    assert_eq!(ok.attachments[0]["size"], 3);
    assert_eq!(ok.attachments[0]["contentType"], "image/png");
    assert_eq!(ok.attachments[0]["title"], "scan");
    assert_eq!(
        check_content(&p, "hi", &[att("application/x-sh", "AQID")], now())
            .unwrap_err()
            .code(),
        "attachment_type_not_allowed"
    );
    assert_eq!(
        check_content(&p, "hi", &[att("image/png", "AQIDBAU=")], now())
            .unwrap_err()
            .code(),
        "attachment_too_large"
    );
    assert_eq!(
        check_content(&p, "hi", &[att("image/png", &"A".repeat(10_000))], now())
            .unwrap_err()
            .code(),
        "attachment_too_large"
    );
    assert_eq!(
        check_content(&p, "hi", &[att("image/png", "not base64!")], now())
            .unwrap_err()
            .code(),
        "invalid_attachment"
    );
    let six: Vec<NewAttachment> = (0..6).map(|_| att("image/png", "AQID")).collect();
    assert_eq!(
        check_content(&p, "hi", &six, now()).unwrap_err().code(),
        "too_many_attachments"
    );
}

#[test]
fn recipients_must_be_care_team_members_the_team_or_pooled() {
    let teams = vec![
        // CareTeam ct-1: Practitioner/pr-1 and Practitioner/pr-2.
        fixture("ehr/care-team-ct-1.json"),
        // Not a CareTeam: its participants are nobody's care team.
        json!({
            "resourceType": "Group", "id": "g-1",
            "participant": [{"member": {"reference": "Practitioner/pr-9"}}]
        }),
    ];
    let pool = profile().recipient_pool;
    let ok = |s: &str| recipient_allowed(&parse_recipient(s).unwrap(), &pool, &teams);
    assert!(ok("Practitioner/pr-1"));
    assert!(ok("Practitioner/pr-2"));
    assert!(ok("CareTeam/ct-1"));
    assert!(ok("Organization/front-desk"));
    // Prefixes and other ids are not members.
    assert!(!ok("Practitioner/pr-12"));
    assert!(!ok("Practitioner/pr"));
    assert!(!ok("CareTeam/ct-2"));
    assert!(!ok("Organization/other"));
    assert!(!ok("Practitioner/pr-9"));
    assert_eq!(
        parse_recipient("Patient/pat-2").unwrap_err().code(),
        "recipient_not_allowed"
    );
    assert_eq!(
        parse_recipient("http://evil/fhir/Practitioner/pr-1")
            .unwrap_err()
            .code(),
        "invalid_recipient"
    );
    assert_eq!(
        parse_recipient("nobody").unwrap_err().code(),
        "invalid_recipient"
    );
}

#[test]
fn bodies_follow_the_thread_convention() {
    let r = Reference::new("Practitioner", "pr-1");
    let h = header_body("pat-1", &r, "Lab results", now());
    assert!(is_header(&h));
    assert_eq!(h["status"], "in-progress");
    assert_eq!(h["sender"]["reference"], "Patient/pat-1");
    let content = Content {
        text: "hello".to_owned(),
        attachments: vec![],
    };
    let m = message_body(
        "pat-1",
        "hdr",
        Some("m1"),
        &[json!({"reference": "Practitioner/pr-1"})],
        h.get("topic"),
        &content,
        now(),
    );
    assert!(!is_header(&m));
    assert_eq!(m["partOf"][0]["reference"], "Communication/hdr");
    assert_eq!(m["inResponseTo"][0]["reference"], "Communication/m1");
    assert_eq!(m["payload"][0]["contentString"], "hello");
    assert_eq!(m["sent"], "2025-07-01T10:00:00Z");
}

#[test]
fn unread_is_a_message_to_the_patient_without_received() {
    let to_me = json!({"sender": {"reference": "Practitioner/pr-1"},
                       "recipient": [{"reference": "Patient/pat-1"}]});
    assert!(unread(&to_me, "pat-1"));
    assert!(!unread(&to_me, "pat-11"));
    let mut received = to_me.clone();
    received["received"] = json!("2025-07-01T10:00:00Z");
    assert!(!unread(&received, "pat-1"));
    let mine = json!({"sender": {"reference": "Patient/pat-1"},
                      "recipient": [{"reference": "Patient/pat-1"}]});
    assert!(!unread(&mine, "pat-1"));
}

#[test]
fn one_search_is_grouped_into_the_patients_headers_and_their_messages() {
    let header = |id: &str, patient: &str| {
        json!({"resourceType": "Communication", "id": id, "status": "in-progress",
               "subject": {"reference": format!("Patient/{patient}")}})
    };
    let message = |id: &str, thread: &str| {
        json!({"resourceType": "Communication", "id": id,
               "subject": {"reference": "Patient/pat-1"},
               "partOf": [{"reference": format!("Communication/{thread}")}],
               "payload": [{"contentString": id}]})
    };
    let all = vec![
        message("m2", "h1"),
        header("h1", "pat-1"),
        message("m1", "h2"),
        // Another patient's header (an EHR that ignored the narrowing).
        header("h3", "pat-11"),
        header("h2", "pat-1"),
        message("m3", "h1"),
        // A payload without partOf (a refill request) is neither.
        json!({"resourceType": "Communication", "id": "r1",
               "subject": {"reference": "Patient/pat-1"},
               "payload": [{"contentString": "refill"}]}),
        // Included resources of an EHR that left out `search.mode`: a CareTeam of
        // the patient's looks like a header, a Practitioner like nothing; both are
        // names, never threads.
        json!({"resourceType": "CareTeam", "id": "ct1", "status": "active",
               "subject": {"reference": "Patient/pat-1"}, "name": "Heart team"}),
        json!({"resourceType": "Practitioner", "id": "pr1",
               "partOf": [{"reference": "Communication/h1"}]}),
    ];
    let Threads {
        headers,
        by_thread,
        included: others,
        ..
    } = group("pat-1", all);
    let others: Vec<&str> = others.iter().filter_map(|o| str_at(o, "id")).collect();
    assert_eq!(others, ["ct1", "pr1"]);
    let ids: Vec<&str> = headers.iter().filter_map(|h| str_at(h, "id")).collect();
    assert_eq!(ids, ["h1", "h2"]);
    let ids_of = |t: &str| -> Vec<String> {
        by_thread[t]
            .iter()
            .filter_map(|m| str_at(m, "id").map(str::to_owned))
            .collect()
    };
    assert_eq!(ids_of("h1"), ["m2", "m3"]);
    assert_eq!(ids_of("h2"), ["m1"]);
    assert_eq!(by_thread.len(), 2);
}

#[test]
fn snippets_are_at_most_140_characters() {
    assert_eq!(snippet("a  b\nc"), "a b c");
    let long = snippet(&"é".repeat(300));
    assert_eq!(long.chars().count(), SNIPPET_CHARS);
    assert!(long.ends_with('…'));
}
