//! Unit tests of refill eligibility, the refill bodies and the views.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::{Value, json};

use super::eligibility::duration_seconds;
use super::history::OpenSearch;
use super::list::listed;
use super::refill::RefillContent;
use super::views::{normalized_status, refill_view};
use super::*;
use crate::context::Page;
use crate::error::PortalError;
use crate::fixture;
use crate::profile::{RefillStrategy, RefillsProfile};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 7, 1, 12, 0, 0).unwrap()
}

fn rules() -> RefillsProfile {
    RefillsProfile {
        strategy: RefillStrategy::Task,
        min_interval_fraction: 0.75,
        allow_acute: false,
    }
}

/// An active order (mr1) of p1, valid 2025-01-01..2025-12-31, 3 repeats, 30-day supply,
/// prescribed by Practitioner/dr1.
fn order() -> Value {
    fixture("ehr/medication-request-continuous-2025.json")
}

fn dispense(handed_over: &str) -> Value {
    json!({
        "resourceType": "MedicationDispense",
        "status": "completed",
        "authorizingPrescription": [{"reference": "MedicationRequest/mr1"}],
        "whenHandedOver": handed_over
    })
}

fn check(mr: &Value, dispenses: &[Value]) -> Eligibility {
    eligibility(mr, Some(dispenses), OpenState::None, "p1", &rules(), now())
}

fn reason(mr: &Value, dispenses: &[Value]) -> Option<IneligibleReason> {
    check(mr, dispenses).reason
}

#[test]
fn an_active_order_with_refills_left_and_an_old_fill_is_eligible() {
    let e = check(&order(), &[dispense("2025-05-01T15:30:00Z")]);
    assert!(e.eligible(), "{e:?}");
    assert_eq!(e.refills_allowed, Some(3));
    assert_eq!(e.refills_used, Some(0));
    assert_eq!(e.refills_left, Some(3));
    assert_eq!(
        e.last_dispensed,
        Some(Utc.with_ymd_and_hms(2025, 5, 1, 15, 30, 0).unwrap())
    );
}

#[test]
fn another_patients_prescription_is_refused_first() {
    let mut mr = order();
    mr["subject"] = json!({"reference": "Patient/p10"});
    assert_eq!(reason(&mr, &[]), Some(IneligibleReason::NotThePatients));
    mr["subject"] = json!({"reference": "Group/p1"});
    assert_eq!(reason(&mr, &[]), Some(IneligibleReason::NotThePatients));
    mr.as_object_mut().unwrap().remove("subject");
    assert_eq!(reason(&mr, &[]), Some(IneligibleReason::NotThePatients));
}

#[test]
fn only_active_orders_can_be_refilled() {
    for status in ["completed", "stopped", "on-hold", "cancelled", "draft"] {
        let mut mr = order();
        mr["status"] = json!(status);
        assert_eq!(
            reason(&mr, &[]),
            Some(IneligibleReason::NotActive),
            "{status}"
        );
    }
    for intent in ["proposal", "plan", "reflex-order", "filler-order", "option"] {
        let mut mr = order();
        mr["intent"] = json!(intent);
        assert_eq!(
            reason(&mr, &[]),
            Some(IneligibleReason::NotAnOrder),
            "{intent}"
        );
    }
    for intent in ["original-order", "instance-order"] {
        let mut mr = order();
        mr["intent"] = json!(intent);
        assert_eq!(reason(&mr, &[]), None, "{intent}");
    }
}

#[test]
fn reported_medications_are_not_prescriptions() {
    let mut mr = order();
    mr["reportedBoolean"] = json!(true);
    assert_eq!(reason(&mr, &[]), Some(IneligibleReason::ReportedMedication));
    mr["reportedBoolean"] = json!(false);
    assert_eq!(reason(&mr, &[]), None);
    let mut mr = order();
    mr["reportedReference"] = json!({"reference": "Patient/p1"});
    assert_eq!(reason(&mr, &[]), Some(IneligibleReason::ReportedMedication));
}

#[test]
fn validity_bounds_are_whole_days_and_inclusive() {
    let at = |end: &str, start: &str, t: DateTime<Utc>| {
        let mut mr = order();
        mr["dispenseRequest"]["validityPeriod"] = json!({"start": start, "end": end});
        eligibility(&mr, Some(&[]), OpenState::None, "p1", &rules(), t).reason
    };
    let day = |d: u32, h: u32, m: u32, s: u32| Utc.with_ymd_and_hms(2025, 7, d, h, m, s).unwrap();
    // Valid through the last second of the end date.
    assert_eq!(at("2025-07-01", "2025-01-01", day(1, 23, 59, 59)), None);
    assert_eq!(
        at("2025-07-01", "2025-01-01", day(2, 0, 0, 0)),
        Some(IneligibleReason::Expired)
    );
    assert_eq!(
        at("2025-06-30", "2025-01-01", now()),
        Some(IneligibleReason::Expired)
    );
    // A dateTime end is inclusive to the instant.
    assert_eq!(at("2025-07-01T12:00:00Z", "2025-01-01", now()), None);
    assert_eq!(
        at("2025-07-01T11:59:59Z", "2025-01-01", now()),
        Some(IneligibleReason::Expired)
    );
    // Month precision: valid through the month.
    assert_eq!(at("2025-07", "2025-01", day(31, 23, 0, 0)), None);
    // Valid from the first instant of the start date.
    assert_eq!(at("2025-12-31", "2025-07-01", day(1, 0, 0, 0)), None);
    assert_eq!(
        at("2025-12-31", "2025-07-02", now()),
        Some(IneligibleReason::NotYetValid)
    );
    // No validity period: no bound.
    let mut mr = order();
    mr["dispenseRequest"]
        .as_object_mut()
        .unwrap()
        .remove("validityPeriod");
    assert_eq!(reason(&mr, &[]), None);
}

#[test]
fn acute_courses_need_the_profile_to_allow_them() {
    let mut mr = order();
    mr["courseOfTherapyType"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy", "code": "acute"}]});
    assert_eq!(reason(&mr, &[]), Some(IneligibleReason::AcuteCourse));
    let allowing = RefillsProfile {
        allow_acute: true,
        ..rules()
    };
    assert_eq!(
        eligibility(&mr, Some(&[]), OpenState::None, "p1", &allowing, now()).reason,
        None
    );
}

#[test]
fn refills_left_count_fills_after_the_first() {
    let fills =
        |n: usize| -> Vec<Value> { (0..n).map(|_| dispense("2025-01-10T10:00:00Z")).collect() };
    // 3 repeats: 4 fills in all.
    for (n, left) in [(0, 3), (1, 3), (2, 2), (3, 1)] {
        let e = check(&order(), &fills(n));
        assert_eq!(e.refills_left, Some(left), "{n} fills");
        assert!(e.eligible(), "{n} fills: {e:?}");
    }
    let e = check(&order(), &fills(4));
    assert_eq!((e.refills_used, e.refills_left), (Some(3), Some(0)));
    assert_eq!(e.reason, Some(IneligibleReason::NoRefillsLeft));
    assert_eq!(e.next_eligible, None, "no next date without refills");
    // More fills than allowed never underflow.
    assert_eq!(check(&order(), &fills(9)).refills_left, Some(0));
}

#[test]
fn zero_repeats_means_one_fill_only() {
    let mut mr = order();
    mr["dispenseRequest"]["numberOfRepeatsAllowed"] = json!(0);
    assert_eq!(
        reason(&mr, &[dispense("2025-01-10T10:00:00Z")]),
        Some(IneligibleReason::NoRefillsLeft)
    );
    let e = check(&mr, &[]);
    assert_eq!((e.refills_allowed, e.refills_left), (Some(0), Some(0)));
    assert_eq!(e.reason, Some(IneligibleReason::NoRefillsLeft));
}

#[test]
fn a_prescription_stating_no_repeats_has_no_refills() {
    let mut mr = order();
    mr.as_object_mut().unwrap().remove("dispenseRequest");
    let e = check(&mr, &[]);
    assert_eq!(e.refills_allowed, None);
    assert_eq!(e.reason, Some(IneligibleReason::NoRefillsLeft));
    let mut mr = order();
    mr["dispenseRequest"]
        .as_object_mut()
        .unwrap()
        .remove("numberOfRepeatsAllowed");
    assert_eq!(reason(&mr, &[]), Some(IneligibleReason::NoRefillsLeft));
}

#[test]
fn only_completed_dispenses_of_this_prescription_count() {
    let mut other = dispense("2025-06-30T10:00:00Z");
    other["authorizingPrescription"] = json!([{"reference": "MedicationRequest/mr10"}]);
    let mut cancelled = dispense("2025-06-30T10:00:00Z");
    cancelled["status"] = json!("cancelled");
    let e = check(
        &order(),
        &[dispense("2025-01-10T10:00:00Z"), other, cancelled],
    );
    assert_eq!(e.refills_used, Some(0));
    assert!(e.eligible(), "{e:?}");
}

#[test]
fn too_soon_until_the_fraction_of_the_supply_has_passed() {
    // 0.75 × 30 days = 22.5 days after the last fill: 2025-06-08T12:00Z + 22.5 d =
    // 2025-07-01T00:00Z.
    let e = check(&order(), &[dispense("2025-06-08T12:00:00Z")]);
    assert_eq!(
        e.next_eligible,
        Some(Utc.with_ymd_and_hms(2025, 7, 1, 0, 0, 0).unwrap())
    );
    assert!(e.eligible());
    // Exactly at the boundary: eligible; one second before: too soon.
    let last = "2025-06-09T00:00:01Z";
    let e = check(
        &order(),
        &[dispense("2025-06-08T12:00:00Z"), dispense(last)],
    );
    assert_eq!(e.reason, Some(IneligibleReason::TooSoon));
    assert_eq!(
        e.next_eligible,
        Some(Utc.with_ymd_and_hms(2025, 7, 1, 12, 0, 1).unwrap())
    );
    let boundary = Utc.with_ymd_and_hms(2025, 7, 1, 12, 0, 1).unwrap();
    let at = |t| {
        eligibility(
            &order(),
            Some(&[dispense(last)]),
            OpenState::None,
            "p1",
            &rules(),
            t,
        )
        .reason
    };
    assert_eq!(at(boundary), None);
    assert_eq!(
        at(boundary - TimeDelta::seconds(1)),
        Some(IneligibleReason::TooSoon)
    );
}

#[test]
fn dispense_interval_wins_over_the_supply_fraction() {
    let mut mr = order();
    mr["dispenseRequest"]["dispenseInterval"] = json!({"value": 4, "unit": "weeks"});
    // 10 days ago: 22.5 days would be too soon, so would 4 weeks.
    let recent = dispense("2025-06-21T12:00:00Z");
    assert_eq!(
        reason(&mr, std::slice::from_ref(&recent)),
        Some(IneligibleReason::TooSoon)
    );
    mr["dispenseRequest"]["dispenseInterval"] =
        json!({"value": 1, "code": "wk", "system": "http://unitsofmeasure.org"});
    assert_eq!(reason(&mr, std::slice::from_ref(&recent)), None);
    // An interval in a unit that is not time falls back to the supply fraction.
    mr["dispenseRequest"]["dispenseInterval"] = json!({"value": 1, "unit": "tablets"});
    assert_eq!(reason(&mr, &[recent]), Some(IneligibleReason::TooSoon));
    // Months and years count as 30 and 365 days.
    assert_eq!(
        duration_seconds(&json!({"value": 1, "code": "mo"})),
        Some(30.0 * 86_400.0)
    );
    assert_eq!(
        duration_seconds(&json!({"value": 2, "unit": "Years"})),
        Some(730.0 * 86_400.0)
    );
    assert_eq!(duration_seconds(&json!({"unit": "d"})), None);
}

#[test]
fn without_a_supply_duration_there_is_no_interval() {
    let mut mr = order();
    mr["dispenseRequest"]
        .as_object_mut()
        .unwrap()
        .remove("expectedSupplyDuration");
    let e = check(&mr, &[dispense("2025-06-30T12:00:00Z")]);
    assert!(e.eligible());
    assert_eq!(e.next_eligible, None);
    // Absurd durations are ignored, not overflowed.
    let mut mr = order();
    mr["dispenseRequest"]["expectedSupplyDuration"] = json!({"value": 1e300, "unit": "a"});
    assert!(check(&mr, &[dispense("2025-06-30T12:00:00Z")]).eligible());
}

#[test]
fn an_open_request_blocks_another() {
    let open = OpenRequest {
        id: "t1".into(),
        resource_type: "Task".into(),
        status: "requested".into(),
    };
    let e = eligibility(
        &order(),
        Some(&[]),
        OpenState::Open(&open),
        "p1",
        &rules(),
        now(),
    );
    assert_eq!(e.reason, Some(IneligibleReason::AlreadyRequested));
    // Expiry is the more useful answer when both hold.
    let mut mr = order();
    mr["dispenseRequest"]["validityPeriod"]["end"] = json!("2025-06-01");
    let e = eligibility(
        &mr,
        Some(&[]),
        OpenState::Open(&open),
        "p1",
        &rules(),
        now(),
    );
    assert_eq!(e.reason, Some(IneligibleReason::Expired));
}

#[test]
fn a_history_not_read_whole_decides_nothing_that_rests_on_it() {
    // Dispenses not whole: the counts are unknown and the refill is not offered.
    let e = eligibility(&order(), None, OpenState::None, "p1", &rules(), now());
    assert_eq!(e.reason, Some(IneligibleReason::HistoryUnavailable));
    assert_eq!((e.refills_used, e.refills_left), (None, None));
    assert_eq!((e.last_dispensed, e.next_eligible), (None, None));
    assert_eq!(e.refills_allowed, Some(3), "the prescription's own word");
    // What the prescription alone decides still comes first.
    let mut expired = order();
    expired["dispenseRequest"]["validityPeriod"]["end"] = json!("2025-06-01");
    assert_eq!(
        eligibility(&expired, None, OpenState::Unknown, "p1", &rules(), now()).reason,
        Some(IneligibleReason::Expired)
    );
    // Open requests not whole: a request may be open, so none is offered...
    let old_fill = [dispense("2025-05-01T15:30:00Z")];
    let e = eligibility(
        &order(),
        Some(&old_fill),
        OpenState::Unknown,
        "p1",
        &rules(),
        now(),
    );
    assert_eq!(e.reason, Some(IneligibleReason::HistoryUnavailable));
    assert_eq!(e.refills_left, Some(3), "the dispenses were whole");
    // ...but a whole dispense history with no refills left is certain.
    let fills: Vec<Value> = (0..4).map(|_| dispense("2025-01-10T10:00:00Z")).collect();
    assert_eq!(
        eligibility(
            &order(),
            Some(&fills),
            OpenState::Unknown,
            "p1",
            &rules(),
            now()
        )
        .reason,
        Some(IneligibleReason::NoRefillsLeft)
    );
    assert_eq!(
        IneligibleReason::HistoryUnavailable.message(),
        "the pharmacy history could not be read completely; call the clinic"
    );
}

#[test]
fn an_open_request_search_not_read_whole_knows_no_prescription_is_free() {
    let search = OpenSearch {
        page: None,
        resource_type: "Task",
        path: "focus",
    };
    let (open, _) = search.open_of(&["mr1"]);
    assert_eq!(open, None);
    assert_eq!(OpenState::of(open.as_ref(), "mr1"), OpenState::Unknown);
    let none = HashMap::new();
    assert_eq!(OpenState::of(Some(&none), "mr1"), OpenState::None);
}

#[test]
fn reasons_serialize_as_their_codes() {
    for r in [
        IneligibleReason::NotThePatients,
        IneligibleReason::NotActive,
        IneligibleReason::NotAnOrder,
        IneligibleReason::ReportedMedication,
        IneligibleReason::NotYetValid,
        IneligibleReason::Expired,
        IneligibleReason::AcuteCourse,
        IneligibleReason::NoRefillsLeft,
        IneligibleReason::AlreadyRequested,
        IneligibleReason::TooSoon,
        IneligibleReason::HistoryUnavailable,
    ] {
        assert_eq!(serde_json::to_value(r).unwrap(), json!(r.code()));
    }
}

fn content<'a>(mr: &'a Value, note: Option<&'a str>) -> RefillContent<'a> {
    RefillContent {
        request: mr,
        patient: "p1",
        now: now(),
        note,
        pharmacy: Some("Main St"),
        medication: Some("Lisinopril 10 mg"),
    }
}

#[test]
fn refill_task_follows_the_spec_example() {
    let mr = order();
    let task = content(&mr, Some("running low")).task();
    assert_eq!(task["status"], "requested");
    assert_eq!(task["intent"], "order");
    assert_eq!(task["code"]["coding"][0]["system"], TASK_CODE_SYSTEM);
    assert_eq!(task["code"]["coding"][0]["code"], "fulfill");
    assert_eq!(task["code"]["text"], "Refill Request");
    assert_eq!(task["focus"]["reference"], "MedicationRequest/mr1");
    assert_eq!(task["for"]["reference"], "Patient/p1");
    assert_eq!(task["requester"]["reference"], "Patient/p1");
    assert_eq!(task["owner"]["reference"], "Practitioner/dr1");
    assert_eq!(task["authoredOn"], "2025-07-01T12:00:00Z");
    assert_eq!(task["note"][0]["text"], "running low");
    assert_eq!(task["note"][1]["text"], "Preferred pharmacy: Main St");
    let view = refill_view(
        &json!({"id": "t1", "resourceType": "Task"})
            .as_object()
            .map(|o| {
                let mut t = task.clone();
                t.as_object_mut().unwrap().extend(o.clone());
                t
            })
            .unwrap(),
        None,
    );
    assert_eq!(view.status, RefillRequestStatus::Requested);
    assert_eq!(view.medication_request_id.as_deref(), Some("mr1"));
    assert_eq!(view.note.as_deref(), Some("running low"));
    // A requester that is not a practitioner or organization is not made the owner.
    let mut mr = order();
    mr["requester"] = json!({"reference": "Patient/p1"});
    assert!(content(&mr, None).task().get("owner").is_none());
    assert!(
        content(&mr, None).task()["note"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Preferred pharmacy")
    );
}

#[test]
fn refill_proposal_and_communication_shapes() {
    let mr = order();
    let proposal = content(&mr, None).proposal();
    assert_eq!(proposal["intent"], "proposal");
    assert_eq!(proposal["status"], "active");
    assert_eq!(
        proposal["priorPrescription"]["reference"],
        "MedicationRequest/mr1"
    );
    assert_eq!(
        proposal["medicationCodeableConcept"],
        mr["medicationCodeableConcept"]
    );
    assert_eq!(proposal["subject"]["reference"], "Patient/p1");
    assert_eq!(proposal["requester"]["reference"], "Patient/p1");
    let message =
        content(&mr, Some("please")).communication(json!({"reference": "Practitioner/dr1"}));
    assert_eq!(message["status"], "in-progress");
    assert_eq!(message["topic"]["text"], REFILL_TOPIC);
    assert_eq!(message["about"][0]["reference"], "MedicationRequest/mr1");
    assert_eq!(message["sender"]["reference"], "Patient/p1");
    assert_eq!(message["recipient"][0]["reference"], "Practitioner/dr1");
    assert_eq!(message["payload"][1]["contentString"], "please");
    let mut stored = message.clone();
    stored["id"] = json!("c1");
    let view = refill_view(&stored, None);
    assert_eq!(view.note.as_deref(), Some("please"));
    assert_eq!(view.medication_request_id.as_deref(), Some("mr1"));
}

#[test]
fn statuses_map_to_one_vocabulary() {
    use RefillRequestStatus as S;
    assert_eq!(normalized_status("Task", Some("received")), S::Requested);
    assert_eq!(normalized_status("Task", Some("accepted")), S::Accepted);
    assert_eq!(normalized_status("Task", Some("rejected")), S::Rejected);
    assert_eq!(normalized_status("Task", Some("completed")), S::Completed);
    assert_eq!(
        normalized_status("MedicationRequest", Some("active")),
        S::Requested
    );
    assert_eq!(
        normalized_status("Communication", Some("not-done")),
        S::Rejected
    );
    assert_eq!(normalized_status("Task", Some("weird")), S::Unknown);
    assert_eq!(normalized_status("Task", None), S::Unknown);
}

#[test]
fn notes_are_trimmed_and_bounded() {
    let ok = RefillInput {
        note: Some("  hello  ".into()),
        pharmacy: Some("   ".into()),
    };
    assert_eq!(ok.checked().unwrap(), (Some("hello".into()), None));
    let long = RefillInput {
        note: Some("é".repeat(MAX_NOTE_CHARS)),
        pharmacy: None,
    };
    assert!(long.checked().is_ok(), "500 characters, not bytes");
    let too_long = RefillInput {
        note: Some("x".repeat(MAX_NOTE_CHARS + 1)),
        pharmacy: None,
    };
    assert!(matches!(
        too_long.checked(),
        Err(PortalError::Invalid {
            code: "text_too_long",
            ..
        })
    ));
    let control = RefillInput {
        note: Some("a\u{0}b".into()),
        pharmacy: None,
    };
    assert!(control.checked().is_err());
}

#[test]
fn a_patient_wide_search_is_narrowed_to_the_listed_prescriptions() {
    let task = |id: &str, focus: &str| {
        json!({"resourceType": "Task", "id": id, "status": "requested",
               "focus": {"reference": focus}})
    };
    let search = OpenSearch {
        page: Some(Page {
            matches: vec![
                task("t1", "MedicationRequest/mr1"),
                task("t2", "MedicationRequest/mr10"),
                task("t3", "MedicationRequest/mr1"),
                task("t4", "Observation/mr2"),
                task("t5", "http://ehr.example/fhir/MedicationRequest/mr2"),
                // Not a Task: an included resource of an EHR without search.mode.
                json!({"resourceType": "Communication", "id": "c1", "status": "in-progress",
                       "focus": {"reference": "MedicationRequest/mr3"}}),
            ],
            ..Page::default()
        }),
        resource_type: "Task",
        path: "focus",
    };
    let (open, stale) = search.open_of(&["mr1", "mr2", "mr3"]);
    assert!(!stale);
    let open = open.expect("a whole answer");
    // The first open request of each, by parsed reference (mr10 is not mr1).
    assert_eq!(open["mr1"].id, "t1");
    assert_eq!(open["mr2"].id, "t5");
    assert_eq!(open["mr2"].resource_type, "Task");
    assert_eq!(open.len(), 2);
}

#[test]
fn listing_keeps_current_and_recent_prescriptions() {
    let mut mr = order();
    assert!(listed(&mr, now()));
    mr["status"] = json!("completed");
    mr["authoredOn"] = json!("2025-03-01");
    assert!(listed(&mr, now()));
    mr["authoredOn"] = json!("2024-03-01");
    assert!(!listed(&mr, now()));
    mr["status"] = json!("active");
    mr["intent"] = json!("proposal");
    assert!(
        !listed(&mr, now()),
        "the patient's own proposals are requests"
    );
    mr["intent"] = json!("order");
    mr["status"] = json!("entered-in-error");
    assert!(!listed(&mr, now()));
    let mut mr = order();
    mr.as_object_mut().unwrap().remove("id");
    assert!(!listed(&mr, now()), "nothing to match its fills to");
}
