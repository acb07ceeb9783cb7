//! Every flow of the pages, with its effect in the sandbox's store: the dashboard, the
//! record's charts, booking (once, even when the form is sent twice), a taken slot
//! explained, cancelling, rescheduling, refills (and a refused one with its reason),
//! referrals, messages, paying with a receipt, the download and the summary.

use serde_json::Value;

use super::{Browser, signed_in};

fn appointments_on(app: &crate::support::TestApp, slot: &str) -> Vec<Value> {
    app.all_stored("Appointment")
        .into_iter()
        .filter(|a| a["slot"][0]["reference"] == format!("Slot/{slot}"))
        .collect()
}

#[tokio::test]
async fn home_shows_what_needs_attention() {
    let (_app, mut browser) = signed_in().await;
    let home = browser.get("/").await;
    assert_eq!(home.h1(), "Your health at a glance");
    let sections = home.texts("section.card h2");
    for s in [
        "Upcoming visits",
        "Refills you can ask for",
        "Messages",
        "Balance due",
        "New results",
    ] {
        assert!(sections.contains(&s.to_owned()), "{sections:?}");
    }
    // pat-1's first prescription can be refilled: linked from home.
    assert!(
        home.attrs("a", "href")
            .contains(&"/medications/mr-1-1/refill".to_owned())
    );
    assert!(home.texts("#h-bills ~ p.big")[0].starts_with('$'));
}

#[tokio::test]
async fn lab_results_are_trend_charts_with_their_numbers_beside_them() {
    let (_app, mut browser) = signed_in().await;
    let index = browser.get("/record").await;
    assert_eq!(index.h1(), "Your health record");
    assert_eq!(index.count("ul.link-list a"), 10);
    let page = browser.get("/record/lab-results").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.h1(), "Lab results");
    let charts = page.count("svg.chart[role=img]");
    assert!(charts >= 1, "{}", page.body);
    // Each chart has a title and a description, tied to it, and a table beside it.
    assert_eq!(page.count("svg.chart > title"), charts);
    assert_eq!(page.count("svg.chart > desc"), charts);
    // Drawn, not nested into each other: every point and line is the svg's own child.
    assert!(page.count("svg.chart > circle.chart-point") >= charts);
    assert_eq!(page.count("svg.chart > line.chart-grid"), 5 * charts);
    assert_eq!(page.count("svg.chart rect circle, svg.chart line line"), 0);
    let labelled = page.attrs("svg.chart", "aria-labelledby");
    assert!(labelled[0].ends_with("-desc"));
    assert!(page.count("section.trend table caption") >= charts);
    let desc = page.texts("svg.chart > desc");
    assert!(desc[0].contains("results from"), "{desc:?}");
    // Reference ranges are shown and values outside them flagged in words.
    let flags = page.texts("section.trend tbody td:last-child");
    assert!(
        flags
            .iter()
            .all(|f| ["Low", "Normal", "High", ""].contains(&f.as_str())),
        "{flags:?}"
    );
    assert!(page.count("section.trend tbody tr") >= charts);
    let vitals = browser.get("/record/vital-signs").await;
    assert_eq!(vitals.status, 200);
    assert!(vitals.count("svg.chart") >= 1);
    for kind in [
        "allergies",
        "conditions",
        "medications",
        "immunizations",
        "documents",
        "encounters",
        "procedures",
        "care-team",
    ] {
        let page = browser.get(&format!("/record/{kind}")).await;
        assert_eq!(page.status, 200, "{kind}");
    }
    assert_eq!(browser.get("/record/secrets").await.status, 404);
}

#[tokio::test]
async fn booking_a_time_happens_once_even_when_the_form_is_sent_twice() {
    let (app, mut browser) = signed_in().await;
    let page = browser.get("/appointments/find").await;
    assert_eq!(page.h1(), "Book an appointment");
    let slots = page.options("slot_id");
    assert!(slots.len() >= 3, "{}", page.body);
    // Every time is a labelled radio in a fieldset with a legend.
    assert_eq!(page.texts("fieldset legend")[1], "Choose a time");
    let form = page
        .form("form[action='/appointments/book']")
        .set("slot_id", &slots[0])
        .set("reason", "check-up");
    assert!(form.get("idempotency_key").is_some_and(|k| k.len() >= 32));
    // A double click: the same form twice, at once.
    let (mut one, mut two) = (browser.clone_session(), browser.clone_session());
    let (a, b) = tokio::join!(
        one.post_raw(&form.action, &form.fields),
        two.post_raw(&form.action, &form.fields),
    );
    assert_eq!((a.status, b.status), (303, 303), "{} / {}", a.body, b.body);
    assert_eq!(a.location(), "/appointments?done=booked");
    assert_eq!(b.location(), "/appointments?done=booked");
    // And once more later (a browser retry).
    let (again, shown) = browser.submit(&form).await;
    assert_eq!(again.status, 303);
    assert_eq!(
        shown.texts(".banner-success"),
        vec!["Your appointment is booked."]
    );
    let booked = appointments_on(&app, &slots[0]);
    assert_eq!(booked.len(), 1, "{booked:?}");
    assert_eq!(booked[0]["status"], "booked");
    assert!(booked[0].to_string().contains("Patient/pat-1"));
    // A fresh form has a fresh key.
    let next = browser.get("/appointments/find").await;
    assert_ne!(
        next.form("form[action='/appointments/book']")
            .get("idempotency_key"),
        form.get("idempotency_key")
    );
    // Sending no time is an error next to the times.
    let (refused, _) = browser
        .submit(
            &next
                .form("form[action='/appointments/book']")
                .without("slot_id"),
        )
        .await;
    assert_eq!(refused.status, 422);
    assert_eq!(refused.texts(".error-summary a"), vec!["Choose a time"]);
    assert_eq!(refused.attrs(".error-summary a", "href"), vec!["#slot_id"]);
    assert!(refused.h1().starts_with("Error: "));
}

#[tokio::test]
async fn a_time_taken_meanwhile_is_explained_next_to_the_times() {
    let (app, mut browser) = signed_in().await;
    let page = browser.get("/appointments/find").await;
    let slot = page.options("slot_id")[0].clone();
    // Someone else books it first.
    let other = app
        .api_post(
            &app.portal_token("pat-2"),
            "/appointments",
            &serde_json::json!({"slot_id": slot}),
            None,
        )
        .await;
    assert_eq!(other.status, 201, "{:?}", other.body);
    let form = page
        .form("form[action='/appointments/book']")
        .set("slot_id", &slot);
    let (refused, _) = browser.submit(&form).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    let summary = refused.texts(".error-summary li");
    assert_eq!(
        summary,
        vec!["Someone else has just booked this time, or it has passed. Choose another time."]
    );
    assert_eq!(refused.count("#slot_id-error"), 1);
    // The times are offered again, without the taken one.
    assert!(!refused.options("slot_id").contains(&slot));
    assert_eq!(appointments_on(&app, &slot).len(), 1);
}

#[tokio::test]
async fn cancelling_and_rescheduling_change_the_appointments() {
    let (app, mut browser) = signed_in().await;
    // Book two, then move one and cancel the other.
    let page = browser.get("/appointments/find").await;
    let slots = page.options("slot_id");
    for slot in &slots[..2] {
        let page = browser.get("/appointments/find").await;
        let form = page
            .form("form[action='/appointments/book']")
            .set("slot_id", slot);
        assert_eq!(browser.submit(&form).await.0.status, 303);
    }
    let first = appointments_on(&app, &slots[0])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = appointments_on(&app, &slots[1])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = browser.get("/appointments").await;
    assert!(
        list.attrs("a", "href")
            .contains(&format!("/appointments/{first}/cancel"))
    );

    let page = browser.get(&format!("/appointments/{first}/cancel")).await;
    assert_eq!(page.h1(), "Cancel an appointment");
    let form = page.form("main form").set("reason", "I feel better");
    let (done, shown) = browser.submit(&form).await;
    assert_eq!(done.location(), "/appointments?done=cancelled");
    assert_eq!(
        shown.texts(".banner-success"),
        vec!["Your appointment has been cancelled."]
    );
    assert_eq!(app.stored("Appointment", &first)["status"], "cancelled");
    // Cancelling again is refused in words.
    let page = browser.get(&format!("/appointments/{first}/cancel")).await;
    assert_eq!(page.count("main form"), 0);

    let page = browser
        .get(&format!("/appointments/{second}/reschedule"))
        .await;
    assert_eq!(page.h1(), "Move an appointment");
    let new_slot = page
        .options("slot_id")
        .into_iter()
        .find(|s| !slots[..2].contains(s))
        .unwrap();
    let form = page
        .form(&format!(
            "form[action='/appointments/{second}/reschedule'][method=post]"
        ))
        .set("slot_id", &new_slot);
    let (done, _) = browser.submit(&form).await;
    assert_eq!(
        done.location(),
        "/appointments?done=rescheduled",
        "{}",
        done.body
    );
    assert_eq!(app.stored("Appointment", &second)["status"], "cancelled");
    let moved = appointments_on(&app, &new_slot);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0]["status"], "booked");
    // The past tab lists what happened before.
    let past = browser.get("/appointments?when=past").await;
    assert_eq!(past.status, 200);
    assert_eq!(
        past.attrs(".tabs a[aria-current=page]", "href"),
        vec!["/appointments?when=past"]
    );
}

#[tokio::test]
async fn refills_are_requested_once_and_refusals_say_why() {
    let (app, mut browser) = signed_in().await;
    let tasks = || app.all_stored("Task").len();
    let list = browser.get("/medications").await;
    assert_eq!(list.h1(), "Your medications");
    // The exhausted and expired prescriptions say why, in words.
    let reasons = list.texts(".refill-reason").join(" ");
    assert!(reasons.contains("no refills are left"), "{reasons}");
    assert!(reasons.contains("it has expired"), "{reasons}");

    let page = browser.get("/medications/mr-1-1/refill").await;
    assert_eq!(page.h1(), "Ask for a refill");
    let form = page
        .form("main form")
        .set("pharmacy", "Main Street Pharmacy")
        .set("note", "running low");
    let (done, shown) = browser.submit(&form).await;
    assert_eq!(done.location(), "/medications?done=refill");
    assert_eq!(tasks(), 1);
    assert!(shown.texts("table tbody td").contains(&"Sent".to_owned()));
    // A second request (a new form) is refused: one is already waiting.
    let page = browser.get("/medications/mr-1-1/refill").await;
    let (refused, _) = browser.submit(&page.form("main form")).await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.texts(".error-summary li"),
        vec![
            "You cannot ask for a refill of this prescription: a refill has already been asked for and is waiting for your care team."
        ]
    );
    // An exhausted prescription, asked anyway.
    let page = browser.get("/medications/mr-1-2/refill").await;
    let (refused, _) = browser.submit(&page.form("main form")).await;
    assert_eq!(refused.status, 422);
    assert!(refused.texts(".error-summary li")[0].contains("no refills are left"));
    assert_eq!(tasks(), 1);
}

#[tokio::test]
async fn a_referral_is_requested() {
    let (app, mut browser) = signed_in().await;
    let before = app.all_stored("ServiceRequest").len();
    let page = browser.get("/referrals/new").await;
    assert_eq!(page.h1(), "Ask for a referral");
    // Nothing chosen: both errors, each next to its field.
    let (refused, _) = browser.submit(&page.form("main form")).await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.attrs(".error-summary a", "href"),
        vec!["#specialty", "#reason"]
    );
    assert_eq!(
        refused.attrs("#reason", "aria-describedby"),
        vec!["reason-hint reason-error"]
    );
    let code = page.attrs("#specialty option", "value")[1].clone();
    let form = page
        .form("main form")
        .set("specialty", &code)
        .set("reason", "knee pain when running");
    let (done, shown) = browser.submit(&form).await;
    assert_eq!(done.location(), "/referrals?done=referral");
    assert_eq!(app.all_stored("ServiceRequest").len(), before + 1);
    assert!(shown.body.contains("knee pain when running"));
}

#[tokio::test]
async fn a_thread_is_started_with_the_care_team_and_answered() {
    let (app, mut browser) = signed_in().await;
    let before = app.all_stored("Communication").len();
    let page = browser.get("/messages/new").await;
    assert_eq!(page.h1(), "Write a new message");
    let recipients = page.attrs("#recipient option", "value");
    let practitioner = recipients
        .iter()
        .find(|r| r.starts_with("Practitioner/"))
        .unwrap()
        .clone();
    let form = page
        .form("main form")
        .set("recipient", &practitioner)
        .set("topic", "Question about my results")
        .set("text", "Is my glucose fine?");
    let (done, thread) = browser.submit(&form).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(done.location().ends_with("?done=thread"));
    assert_eq!(thread.h1(), "Question about my results");
    assert!(
        thread
            .texts(".message-text")
            .contains(&"Is my glucose fine?".to_owned())
    );
    let after_start = app.all_stored("Communication").len();
    assert!(after_start > before);
    let (done, thread) = browser
        .submit(&thread.form("main form").set("text", "Also: fasting?"))
        .await;
    assert!(done.location().ends_with("?done=reply"));
    assert!(
        thread
            .texts(".message-text")
            .contains(&"Also: fasting?".to_owned())
    );
    assert_eq!(app.all_stored("Communication").len(), after_start + 1);
    // The thread is in the list; a recipient outside the care team is refused.
    let list = browser.get("/messages").await;
    assert!(
        list.texts(".thread-list a")
            .contains(&"Question about my results".to_owned())
    );
    let page = browser.get("/messages/new").await;
    let form = page
        .form("main form")
        .set("recipient", "Practitioner/not-in-team")
        .set("topic", "x")
        .set("text", "y");
    let (refused, _) = browser.submit(&form).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(
        refused.attrs(".error-summary a", "href"),
        vec!["#recipient"]
    );
}

#[tokio::test]
async fn a_bill_is_paid_once_with_a_receipt_and_a_declined_card_is_explained() {
    let (app, mut browser) = signed_in().await;
    let bills = browser.get("/bills").await;
    assert_eq!(bills.h1(), "Your bills");
    let pay = bills
        .attrs("a", "href")
        .into_iter()
        .find(|h| h.ends_with("/pay"))
        .expect("a payable account");
    let page = browser.get(&pay).await;
    assert_eq!(page.h1(), "Pay a bill");
    let declined = page
        .form("main form")
        .set("amount", "1.00")
        .set("payment_token", "tok_declined");
    let (refused, _) = browser.submit(&declined).await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.attrs(".error-summary a", "href"),
        vec!["#payment_token"]
    );
    assert!(app.all_stored("PaymentReconciliation").is_empty());
    // A card number typed into the amount never goes anywhere.
    let (refused, _) = browser
        .submit(
            &page
                .form("main form")
                .set("amount", "4242 4242 4242 4242")
                .set("payment_token", "tok_ok"),
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(!refused.body.contains("4242 4242"));

    let form = page
        .form("main form")
        .set("amount", "1.50")
        .set("payment_token", "tok_ok");
    let (done, receipt) = browser.submit(&form).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(
        done.location()
            .starts_with("/bills/receipts/PaymentReconciliation/")
    );
    assert_eq!(receipt.h1(), "Payment receipt");
    assert!(receipt.texts("dd").contains(&"$1.50".to_owned()));
    // The same form again (a refresh or double click) pays nothing more.
    let (again, _) = browser.submit(&form).await;
    assert_eq!(again.location(), done.location());
    assert_eq!(app.all_stored("PaymentReconciliation").len(), 1);
}

#[tokio::test]
async fn the_record_downloads_as_a_fhir_bundle_and_prints_as_a_summary() {
    let (_app, mut browser) = signed_in().await;
    let page = browser.get("/download").await;
    assert_eq!(page.h1(), "Download your record");
    let file = browser.get_raw("/download/record.json").await;
    assert_eq!(file.status, 200);
    assert_eq!(file.header("content-type"), "application/fhir+json");
    assert!(file.header("content-disposition").starts_with("attachment"));
    let bundle: Value = serde_json::from_str(&file.body).unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    let entries = bundle["entry"].as_array().unwrap();
    assert!(entries.len() > 10);
    assert_eq!(entries[0]["resource"]["id"], "pat-1");
    // Only pat-1's resources (and shared ones).
    assert!(!file.body.contains("Patient/pat-2\""));
    let summary = browser.get("/download/summary").await;
    assert_eq!(summary.h1(), "Summary of your health record");
    assert!(summary.count("section.summary-section") >= 5);
    assert_eq!(
        summary.attrs("link[media=print]", "href"),
        vec!["/assets/print.css"]
    );
}

#[tokio::test]
async fn the_profile_says_who_is_signed_in() {
    let (_app, mut browser) = signed_in().await;
    let page = browser.get("/profile").await;
    assert_eq!(page.h1(), "Your profile");
    assert!(!page.texts("dl.summary dd").is_empty());
    assert_eq!(
        page.texts("main p")[0],
        "You can see only your own information."
    );
    // Switching to a patient the login may not act for is the 404 page.
    let form = super::Form {
        action: "/profile/patient".into(),
        fields: vec![
            (
                "csrf_token".into(),
                page.form("form.sign-out").get("csrf_token").unwrap().into(),
            ),
            ("patient".into(), "pat-2".into()),
        ],
    };
    let (refused, _) = browser.submit(&form).await;
    assert_eq!(refused.status, 404);
    let _ = Browser::new;
}

#[tokio::test]
async fn a_bad_search_is_explained_next_to_the_dates() {
    let (_app, mut browser) = signed_in().await;
    let page = browser.get("/appointments/find?start=2020-01-01").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.attrs(".error-summary a", "href"), vec!["#start"]);
    assert_eq!(page.attrs("#start", "aria-invalid"), vec!["true"]);
    assert_eq!(page.count("input[name=slot_id]"), 0);
    // A query that cannot be read is no query.
    let page = browser.get("/appointments/find?start=%ZZ&start=1").await;
    assert_eq!(page.status, 200);
    assert!(page.count("input[name=slot_id]") >= 1);
    // Filtering by clinician shows only that clinician's times.
    let all = browser.get("/appointments/find").await;
    let clinician = all.attrs("#clinician option", "value")[1].clone();
    let filtered = browser
        .get(&format!(
            "/appointments/find?clinician={}",
            url::form_urlencoded::byte_serialize(clinician.as_bytes()).collect::<String>()
        ))
        .await;
    let hints = filtered.texts(".radio-hint");
    assert!(!hints.is_empty());
    assert!(hints.iter().all(|h| h.starts_with(&clinician)), "{hints:?}");
}

#[tokio::test]
async fn a_long_record_kind_pages_back_with_cursors_bound_to_the_patient() {
    let (app, mut browser) = signed_in().await;
    // More heart rates than a page shows (100), straight into the EHR's store.
    for i in 0..130 {
        let day = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap() + chrono::Days::new(i);
        app.sandbox
            .store()
            .insert_loaded(serde_json::json!({
                "resourceType": "Observation", "id": format!("obs-paging-{i}"),
                "status": "final",
                "category": [{"coding": [{"system":
                    "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4",
                    "display": "Heart rate"}]},
                "subject": {"reference": "Patient/pat-1"},
                "effectiveDateTime": format!("{day}T09:00:00Z"),
                "valueQuantity": {"value": 60 + (i % 30), "unit": "/min",
                    "system": "http://unitsofmeasure.org", "code": "/min"}
            }))
            .expect("stored");
    }
    let vitals = app
        .all_stored("Observation")
        .into_iter()
        .filter(|o| {
            o["subject"]["reference"] == "Patient/pat-1"
                && o["category"][0]["coding"][0]["code"] == "vital-signs"
        })
        .count();
    assert!(
        vitals > 100,
        "pat-1 has {vitals} vital signs: the test needs more than a page"
    );
    let first = browser.get("/record/vital-signs").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.attrs("nav.pager a[href*='page=']", "href").len() == 1);
    assert!(
        first
            .texts("nav.pager a")
            .iter()
            .all(|t| t != "Newest entries")
    );
    let older = first.attrs("nav.pager a[rel=next]", "href").remove(0);
    let second = browser.get(&older).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.h1(), first.h1());
    assert!(
        second
            .texts("nav.pager a")
            .iter()
            .any(|t| t == "Newest entries")
    );
    assert_ne!(
        second.texts("main table"),
        first.texts("main table"),
        "another page"
    );
    // A cursor tampered with, or used by another patient, is a page that does not exist.
    let tampered = older.replace("page=", "page=x");
    assert_eq!(browser.get(&tampered).await.status, 404);
    let mut other = Browser::new(&app);
    other.sign_in("pat-2").await;
    assert_eq!(other.get(&older).await.status, 404);
}
