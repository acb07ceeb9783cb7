//! Ids in the pages' URLs are the domain's to check: another patient's appointment,
//! thread, prescription, account or receipt is the same 404 page as a missing one, and
//! a form posted against it changes nothing.

use serde_json::{Value, json};

use super::signed_in;
use crate::support::TestApp;

fn of_patient(app: &TestApp, ty: &str, patient: &str, pick: impl Fn(&Value) -> bool) -> String {
    let me = format!("Patient/{patient}");
    app.all_stored(ty)
        .into_iter()
        .find(|r| r.to_string().contains(&format!("\"{me}\"")) && pick(r))
        .and_then(|r| r["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("{patient} has a {ty}"))
}

#[tokio::test]
async fn another_patients_ids_are_the_not_found_page_and_forms_on_them_change_nothing() {
    let (app, mut browser) = signed_in().await;
    let appointment = of_patient(&app, "Appointment", "pat-2", |a| a["status"] == "booked");
    let thread = of_patient(&app, "Communication", "pat-2", |c| {
        c.get("partOf").is_none()
    });
    let account = of_patient(&app, "Account", "pat-2", |_| true);
    let paid = app
        .api_post(
            &app.portal_token("pat-2"),
            &format!("/bills/{account}/payments"),
            &json!({"amount": {"value": 1.0, "currency": "USD"}, "payment_token": "tok_ok"}),
            None,
        )
        .await;
    assert_eq!(paid.status, 201, "{:?}", paid.body);
    let receipt = paid.body["id"].as_str().unwrap().to_owned();

    let pages = [
        format!("/appointments/{appointment}/cancel"),
        format!("/appointments/{appointment}/reschedule"),
        format!("/messages/{thread}"),
        "/medications/mr-2-1/refill".to_owned(),
        format!("/bills/{account}/pay"),
        format!("/bills/receipts/PaymentReconciliation/{receipt}"),
        "/appointments/no-such-appointment/cancel".to_owned(),
        "/messages/no-such-thread".to_owned(),
    ];
    let mut bodies = Vec::new();
    for path in &pages {
        let page = browser.get(path).await;
        assert_eq!(page.status, 404, "{path}: {}", page.body);
        assert_eq!(page.h1(), "Page not found", "{path}");
        assert!(!page.body.contains("pat-2"), "{path}");
        bodies.push(page.texts("main p"));
    }
    // A foreign id and a missing one look the same.
    assert_eq!(bodies[0], bodies[6]);
    assert_eq!(bodies[2], bodies[7]);

    // Forms posted against them: refused alike, nothing changed.
    let csrf = browser
        .get("/")
        .await
        .form("form.sign-out")
        .get("csrf_token")
        .unwrap()
        .to_owned();
    let tasks = app.all_stored("Task").len();
    let messages = app.all_stored("Communication").len();
    let payments = app.all_stored("PaymentReconciliation").len();
    let key = |k: &str| {
        (
            "idempotency_key".to_owned(),
            format!("isolation-{k}-0000000000000000"),
        )
    };
    let token = ("csrf_token".to_owned(), csrf.clone());
    for (path, extra) in [
        (format!("/appointments/{appointment}/cancel"), vec![]),
        (
            format!("/messages/{thread}/reply"),
            vec![("text".to_owned(), "hello".to_owned())],
        ),
        ("/medications/mr-2-1/refill".to_owned(), vec![]),
        (
            format!("/bills/{account}/pay"),
            vec![
                ("amount".to_owned(), "1.00".to_owned()),
                ("payment_token".to_owned(), "tok_ok".to_owned()),
            ],
        ),
    ] {
        let mut fields = vec![token.clone(), key(&path.replace('/', "-"))];
        fields.extend(extra);
        let page = browser.post_raw(&path, &fields).await;
        assert_eq!(page.status, 404, "{path}: {}", page.body);
    }
    assert_eq!(app.stored("Appointment", &appointment)["status"], "booked");
    assert_eq!(app.all_stored("Task").len(), tasks);
    assert_eq!(app.all_stored("Communication").len(), messages);
    assert_eq!(app.all_stored("PaymentReconciliation").len(), payments);
}
