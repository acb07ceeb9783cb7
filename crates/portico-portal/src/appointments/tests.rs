//! Unit tests of the appointment rules and the FHIR bodies they build.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};

use super::patch_slot::not_reschedulable;
use super::*;
use crate::fixture;
use crate::idempotency::Idem;
use crate::input::check_token;
use crate::view::instant;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 10, 12, 0, 0).unwrap()
}

#[test]
fn windows_are_bounded_and_never_in_the_past() {
    let (s, e) = slot_window(None, None, 31, now()).unwrap();
    assert_eq!(s, now());
    assert_eq!(e, now() + Duration::days(14));
    // Years chrono parses but date arithmetic cannot handle are refused, not panicked on.
    for extreme in [
        "+262142-12-31",
        "-262143-01-01",
        "0001-01-01",
        "10000-01-01",
    ] {
        assert!(
            slot_window(None, Some(extreme), 14, now()).is_err(),
            "{extreme}"
        );
        assert!(
            slot_window(Some(extreme), None, 14, now()).is_err(),
            "{extreme}"
        );
    }
    // A date end includes the whole day; today's date is clamped to now.
    let (s, e) = slot_window(Some("2030-01-10"), Some("2030-01-11"), 31, now()).unwrap();
    assert_eq!(s, now());
    assert_eq!(instant(e), "2030-01-12T00:00:00Z");
    assert!(slot_window(Some("2030-01-09"), Some("2030-01-11"), 31, now()).is_err());
    assert!(slot_window(Some("2030-01-20"), Some("2030-01-15"), 31, now()).is_err());
    assert!(slot_window(Some("2030-01-11"), Some("2030-03-01"), 31, now()).is_err());
    assert!(slot_window(Some("2030-01-11"), Some("2030-02-10"), 31, now()).is_ok());
    assert!(slot_window(Some("tomorrow"), None, 31, now()).is_err());
    assert!(
        slot_window(
            Some("2030-01-11T08:00:00+02:00"),
            Some("2030-01-11T10:00:00Z"),
            1,
            now()
        )
        .is_ok()
    );
    // The default end respects a profile narrower than 14 days.
    let (s, e) = slot_window(None, None, 7, now()).unwrap();
    assert_eq!(e - s, Duration::days(7));
}

#[test]
fn cancelable_means_open_status_and_not_started() {
    let a = |status: &str, start: Option<&str>| {
        let mut v = json!({"status": status});
        if let Some(s) = start {
            v["start"] = json!(s);
        }
        v
    };
    assert!(is_cancelable(
        &a("booked", Some("2030-01-11T09:00:00Z")),
        now()
    ));
    assert!(is_cancelable(&a("proposed", None), now()));
    assert!(!is_cancelable(
        &a("booked", Some("2030-01-09T09:00:00Z")),
        now()
    ));
    assert!(!is_cancelable(
        &a("cancelled", Some("2030-02-01T09:00:00Z")),
        now()
    ));
    assert!(!is_cancelable(
        &a("fulfilled", Some("2030-02-01T09:00:00Z")),
        now()
    ));
    assert!(!is_cancelable(&a("booked", Some("garbage")), now()));
}

#[test]
fn cancellation_patch_and_patched_agree() {
    let current = booked();
    let (patched, patch) = cancellation(&current, Some("feeling better"), None);
    assert_eq!(patched["status"], "cancelled");
    assert_eq!(patched["cancelationReason"]["coding"][0]["code"], "pat");
    assert_eq!(patched["cancelationReason"]["text"], "feeling better");
    // The patch sets exactly what the patched resource changes.
    assert_eq!(
        patch[0],
        json!({"op": "replace", "path": "/status", "value": "cancelled"})
    );
    assert_eq!(patch[1]["op"], "add");
    assert_eq!(patch[1]["path"], "/cancelationReason");
    assert_eq!(patch[1]["value"], patched["cancelationReason"]);
    assert_eq!(patch.as_array().unwrap().len(), 2);
}

#[test]
fn a_cancellation_carries_the_identity_of_its_request() {
    let current = booked();
    let idem = Idem::new("pat-1", "cancel", Some("k1"));
    let mark = idem.step("cancel");
    let (patched, patch) = cancellation(&current, None, Some(&mark));
    assert_eq!(patch[1]["value"], patched["cancelationReason"]);
    assert!(cancelled_by(&patched, &mark));
    // Another request's cancellation, an unmarked one, or one not (yet) applied is not
    // this request's.
    let other = Idem::new("pat-1", "cancel", Some("k2")).step("cancel");
    assert!(!cancelled_by(&patched, &other));
    assert!(!cancelled_by(&cancellation(&current, None, None).0, &mark));
    assert!(!cancelled_by(&current, &mark));
    let mut reverted = patched.clone();
    reverted["status"] = json!("booked");
    assert!(!cancelled_by(&reverted, &mark));
}

#[test]
fn booking_takes_time_and_actors_from_the_slot_and_schedule() {
    // Slot s1 on Schedule/x, whose actors are a practitioner, a location and a patient.
    let slot = fixture("ehr/slot-free-cardiology.json");
    let schedule = fixture("ehr/schedule-practitioner-location.json");
    let body = booking_body("pat-1", &slot, Some(&schedule), Some("cough"), None, now());
    assert_eq!(body["status"], "booked");
    assert_eq!(body["slot"][0]["reference"], "Slot/s1");
    assert_eq!(body["start"], "2030-01-11T09:00:00Z");
    assert_eq!(body["reasonCode"][0]["text"], "cough");
    let actors: Vec<&str> = body["participant"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["actor"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["Patient/pat-1", "Practitioner/p1", "Location/l1"]);
    let view = appointment_view(
        &json!({"id": "a", "status": "booked", "participant": body["participant"], "start": body["start"]}),
        Some("3".into()),
        None,
        now(),
    );
    assert_eq!(view.practitioner.as_deref(), Some("Dr P"));
    assert_eq!(view.location.as_deref(), Some("Clinic"));
    assert!(view.cancelable);
    assert_eq!(view.version.as_deref(), Some("3"));
}

#[test]
fn texts_and_tokens_are_checked() {
    assert_eq!(check_text("reason", Some("  ")).unwrap(), None);
    assert!(check_text("reason", Some(&"x".repeat(501))).is_err());
    assert!(check_text("reason", Some(&"é".repeat(500))).is_ok());
    assert!(check_text("reason", Some("a\u{0}b")).is_err());
    assert!(check_token("service_type", "http://x|123").is_ok());
    assert!(check_token("service_type", "a,b").is_err());
    assert!(check_token("service_type", "a b").is_err());
    assert!(check_token("service_type", "a|b|c").is_err());
}

/// pat-1's appointment a1 with Practitioner/p1 (version 3) on Slot/old, 2030-01-11 09:00.
fn booked() -> Value {
    fixture("ehr/appointment-booked.json")
}

/// The free Slot `new`, 2030-01-12 10:00–10:30.
fn new_slot() -> Value {
    fixture("ehr/slot-free-next-day.json")
}

fn apply(current: &Value, patch: &Value) -> Value {
    let mut doc = current.clone();
    let ops: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    json_patch::patch(&mut doc, &ops).unwrap();
    doc
}

#[test]
fn the_reschedule_patch_moves_slot_and_time_and_adds_the_reason() {
    let current = booked();
    let patch = reschedule_patch(&current, &new_slot(), Some("conflict at work")).unwrap();
    assert_eq!(patch[0]["op"], "replace");
    assert_eq!(patch[0]["path"], "/slot");
    assert_eq!(patch[0]["value"], json!([{"reference": "Slot/new"}]));
    // No extension yet: the whole array is added.
    assert_eq!(patch[3]["path"], "/extension");
    let patched = apply(&current, &patch);
    assert_eq!(patched["start"], "2030-01-12T10:00:00Z");
    assert_eq!(patched["end"], "2030-01-12T10:30:00Z");
    assert_eq!(patched["extension"][0]["url"], RESCHEDULE_REASON_URL);
    assert_eq!(
        patched["extension"][0]["valueCodeableConcept"]["text"],
        "conflict at work"
    );
    assert!(reschedule_rule(&current, &patched).is_ok());

    // With extensions already there, one is appended and the others kept.
    let mut with_ext = booked();
    with_ext["extension"] = json!([{"url": IS_RESCHEDULABLE_URL, "valueBoolean": true}]);
    let patch = reschedule_patch(&with_ext, &new_slot(), None).unwrap();
    assert_eq!(patch[3]["path"], "/extension/-");
    let patched = apply(&with_ext, &patch);
    assert_eq!(patched["extension"].as_array().unwrap().len(), 2);
    assert_eq!(patched["extension"][0]["url"], IS_RESCHEDULABLE_URL);
    assert!(reschedule_rule(&with_ext, &patched).is_ok());
    // A slot without a time cannot be moved to.
    assert!(
        reschedule_patch(
            &current,
            &json!({"id": "x", "start": "2030-01-12T10:00:00Z"}),
            None
        )
        .is_err()
    );
}

#[test]
fn the_reschedule_rule_refuses_any_other_change() {
    let current = booked();
    let patched = apply(
        &current,
        &reschedule_patch(&current, &new_slot(), None).unwrap(),
    );
    let refused = |change: &dyn Fn(&mut Value)| {
        let mut p = patched.clone();
        change(&mut p);
        match reschedule_rule(&current, &p) {
            Err(PortalError::Refused { code, .. }) => code == "change_not_allowed",
            _ => false,
        }
    };
    // Another patient or another practitioner.
    assert!(refused(
        &|p| p["participant"][0]["actor"]["reference"] = json!("Patient/pat-2")
    ));
    assert!(refused(
        &|p| p["participant"][1]["actor"]["reference"] = json!("Practitioner/p2")
    ));
    assert!(refused(&|p| p["participant"]
        .as_array_mut()
        .unwrap()
        .pop()
        .map(drop)
        .unwrap()));
    // Status, service, a new element, a cancellation.
    assert!(refused(&|p| p["status"] = json!("cancelled")));
    assert!(refused(&|p| p["status"] = json!("arrived")));
    assert!(refused(&|p| p["serviceType"] = json!([{"text": "Surgery"}])));
    assert!(refused(&|p| p["comment"] = json!("hi")));
    assert!(refused(&|p| p["cancelationReason"] = json!({"text": "x"})));
    // Slots: none, two, not a Slot.
    assert!(refused(&|p| p["slot"] = json!([])));
    assert!(refused(
        &|p| p["slot"] = json!([{"reference": "Slot/a"}, {"reference": "Slot/b"}])
    ));
    assert!(refused(
        &|p| p["slot"] = json!([{"reference": "Schedule/a"}])
    ));
    // Extensions: only a reschedule reason may be added; none removed.
    assert!(refused(
        &|p| p["extension"][0]["url"] = json!("http://example.org/x")
    ));
    let mut with_ext = current.clone();
    with_ext["extension"] = json!([{"url": IS_RESCHEDULABLE_URL, "valueBoolean": false}]);
    let mut dropped = patched.clone();
    dropped["extension"] = json!([{"url": RESCHEDULE_REASON_URL}]);
    assert!(reschedule_rule(&with_ext, &dropped).is_err());
    // A proposed or cancelled appointment cannot be moved this way.
    let mut proposed = current.clone();
    proposed["status"] = json!("proposed");
    let mut p2 = patched.clone();
    p2["status"] = json!("proposed");
    assert!(reschedule_rule(&proposed, &p2).is_err());
    // meta and text may differ.
    let mut p3 = patched.clone();
    p3["meta"] = json!({"versionId": "4"});
    p3["text"] = json!({"status": "generated", "div": "<div/>"});
    assert!(reschedule_rule(&current, &p3).is_ok());
    assert!(not_reschedulable(&with_ext));
    assert!(!not_reschedulable(&current));
}

#[test]
fn find_and_book_parameters_use_the_ihe_names() {
    let finding = Finding {
        start: now(),
        end: now() + Duration::days(7),
        service_type: Some("http://snomed.info/sct|408443003"),
        specialty: None,
        practitioner: Some("pr1"),
        location: Some("loc1"),
    };
    let p = find_parameters(&finding, "pat-1");
    assert_eq!(p["resourceType"], "Parameters");
    let by_name = |name: &str| {
        p["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .cloned()
    };
    assert_eq!(
        by_name("start").unwrap()["valueDateTime"],
        "2030-01-10T12:00:00Z"
    );
    assert_eq!(
        by_name("end").unwrap()["valueDateTime"],
        "2030-01-17T12:00:00Z"
    );
    assert_eq!(
        by_name("visit-type").unwrap()["valueString"],
        "http://snomed.info/sct|408443003"
    );
    assert_eq!(
        by_name("practitioner").unwrap()["valueReference"]["reference"],
        "Practitioner/pr1"
    );
    assert_eq!(
        by_name("location-reference").unwrap()["valueReference"]["reference"],
        "Location/loc1"
    );
    assert_eq!(
        by_name("patient-reference").unwrap()["valueReference"]["reference"],
        "Patient/pat-1"
    );
    assert!(by_name("specialty").is_none());

    let b = book_parameters("prop-1", Some("first visit"));
    assert_eq!(
        b["parameter"][0],
        json!({"name": "appointment-reference", "valueReference": {"reference": "Appointment/prop-1"}})
    );
    assert_eq!(
        b["parameter"][1],
        json!({"name": "comment", "valueString": "first visit"})
    );
    assert_eq!(
        book_parameters("x", None)["parameter"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn unavailability_is_read_from_the_outcome() {
    let oo = |severity: &str, code: &str, text: &str| {
        json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": severity, "code": code, "details": {"text": text}}]})
    };
    assert!(says_unavailable(&[oo("error", "conflict", "x")]));
    assert!(says_unavailable(&[oo(
        "error",
        "processing",
        "The appointment is no longer available"
    )]));
    assert!(!says_unavailable(&[oo("information", "conflict", "x")]));
    assert!(!says_unavailable(&[oo("error", "security", "denied")]));
    assert!(!says_unavailable(&[]));
}
