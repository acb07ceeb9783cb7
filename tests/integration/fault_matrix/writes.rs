//! The matrix's portal rows: every `/api/v1` write under every column (see `mod.rs`).
//!
//! Each row acts as `pat-1` with a bearer token and an `Idempotency-Key` per cell, and
//! finds its effect in the sandbox's store by what only that cell's write carries (its
//! slot, its text, its amount).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Row, Said, Sent, TestApp, Write, api_write, expect_listed, get, run_row};

const PATIENT: &str = "pat-1";

/// What every portal row shares: the patient's token and the slots already used.
struct Portal {
    token: String,
    used_slots: HashSet<String>,
}

impl Portal {
    fn new(app: &TestApp) -> Portal {
        Portal {
            token: app.portal_token(PATIENT),
            used_slots: HashSet::new(),
        }
    }

    /// A free Slot in the future (a day ahead at least) no cell has used.
    fn free_slot(&mut self, app: &TestApp) -> String {
        let soon = Utc::now() + chrono::TimeDelta::days(1);
        let mut free: Vec<(String, String)> = app
            .all_stored("Slot")
            .into_iter()
            .filter(|s| s["status"] == "free")
            .filter(|s| {
                s["start"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t > soon)
            })
            .filter_map(|s| {
                Some((
                    s["start"].as_str()?.to_owned(),
                    s["id"].as_str()?.to_owned(),
                ))
            })
            .filter(|(_, id)| !self.used_slots.contains(id))
            .collect();
        free.sort();
        let (_, id) = free.into_iter().next().expect("a free slot");
        self.used_slots.insert(id.clone());
        id
    }

    /// Books a fresh slot for the patient, without faults: the appointment's id.
    async fn booked(&mut self, app: &TestApp, key: &str) -> String {
        let slot = self.free_slot(app);
        let answer = api_write(
            app,
            &self.token,
            "/appointments",
            &json!({"slot_id": slot, "reason": "set up"}),
            key,
        )
        .await;
        assert_eq!(answer.status(), 201, "set-up booking: {}", answer.body());
        answer.body()["id"].as_str().unwrap().to_owned()
    }

    async fn send(&self, app: &TestApp, write: &Write) -> Sent {
        api_write(app, &self.token, &write.path, &write.body, &write.key).await
    }

    /// Reads each path once (so that the lists are cached when the fault comes).
    async fn warm(&self, app: &TestApp, paths: &[String]) {
        for path in paths {
            let answer = get(app, &self.token, path).await;
            assert_eq!(answer.status(), 200, "{path}: {}", answer.body());
        }
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn id_of(v: &Value) -> String {
    text(&v["id"])
}

fn version(v: &Value) -> u64 {
    v["meta"]["versionId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Appointments stored on `slot` with `status`.
fn on_slot(app: &TestApp, slot: &str, status: &str) -> Vec<String> {
    app.all_stored("Appointment")
        .into_iter()
        .filter(|a| a["status"] == status)
        .filter(|a| a["slot"][0]["reference"] == format!("Slot/{slot}"))
        .map(|a| id_of(&a))
        .collect()
}

/// Checks that an appointment read through `path` shows `status`.
async fn expect_status(
    app: &TestApp,
    token: &str,
    path: &str,
    pointer: &str,
    status: &str,
) -> Vec<String> {
    let answer = get(app, token, path).await;
    if answer.status() != 200 {
        return vec![format!("{path}: {}", answer.describe())];
    }
    match answer.body().pointer(pointer).and_then(Value::as_str) {
        Some(s) if s == status => Vec::new(),
        other => vec![format!("{path} shows {other:?}, the EHR holds {status}")],
    }
}

// ---------------------------------------------------------------------------------
// Appointments

struct Book(Portal);

impl Row for Book {
    fn name(&self) -> &'static str {
        "book"
    }

    fn aim(&self) -> &'static str {
        "/fhir/Appointment"
    }

    async fn prepare(&mut self, app: &TestApp, n: usize) -> Write {
        let slot = self.0.free_slot(app);
        self.0
            .warm(
                app,
                &[
                    "/api/v1/appointments".to_owned(),
                    format!("/fhir/Appointment?slot=Slot/{slot}"),
                ],
            )
            .await;
        Write {
            path: "/appointments".to_owned(),
            body: json!({"slot_id": slot, "reason": format!("matrix {n}")}),
            key: format!("book-{n}"),
            target: json!({"slot": slot}),
        }
    }

    async fn send(&self, app: &TestApp, write: &Write) -> Sent {
        self.0.send(app, write).await
    }

    fn effects(&self, app: &TestApp, write: &Write) -> Result<Vec<String>, String> {
        Ok(on_slot(app, &text(&write.target["slot"]), "booked"))
    }

    fn answered(&self, body: &Value) -> Option<String> {
        body["id"].as_str().map(str::to_owned)
    }

    async fn reads(&self, app: &TestApp, write: &Write, effects: &[String]) -> Vec<String> {
        let slot = text(&write.target["slot"]);
        let mut problems = expect_listed(app, &self.0.token, "/api/v1/appointments", effects).await;
        problems.extend(
            expect_listed(
                app,
                &self.0.token,
                &format!("/fhir/Appointment?slot=Slot/{slot}"),
                effects,
            )
            .await,
        );
        problems
    }
}

struct Cancel(Portal);

impl Row for Cancel {
    fn name(&self) -> &'static str {
        "cancel"
    }

    fn aim(&self) -> &'static str {
        "/fhir/Appointment"
    }

    async fn prepare(&mut self, app: &TestApp, n: usize) -> Write {
        let id = self.0.booked(app, &format!("cancel-setup-{n}")).await;
        let version = version(&app.stored("Appointment", &id));
        self.0
            .warm(
                app,
                &[
                    format!("/api/v1/appointments/{id}"),
                    format!("/fhir/Appointment/{id}"),
                ],
            )
            .await;
        Write {
            path: format!("/appointments/{id}/cancel"),
            body: json!({"reason": format!("matrix {n}")}),
            key: format!("cancel-{n}"),
            target: json!({"id": id, "version": version}),
        }
    }

    async fn send(&self, app: &TestApp, write: &Write) -> Sent {
        self.0.send(app, write).await
    }

    fn effects(&self, app: &TestApp, write: &Write) -> Result<Vec<String>, String> {
        let id = text(&write.target["id"]);
        let before = write.target["version"].as_u64().unwrap_or(0);
        let stored = app.stored("Appointment", &id);
        let now = version(&stored);
        match stored["status"].as_str() {
            Some("cancelled") if now == before + 1 => Ok(vec![id]),
            Some("booked") if now == before => Ok(Vec::new()),
            other => Err(format!(
                "the appointment is {other:?} at version {now} (was booked at {before})"
            )),
        }
    }

    fn answered(&self, body: &Value) -> Option<String> {
        (body["status"] == "cancelled")
            .then(|| body["id"].as_str().map(str::to_owned))
            .flatten()
    }

    async fn reads(&self, app: &TestApp, write: &Write, effects: &[String]) -> Vec<String> {
        let id = text(&write.target["id"]);
        let status = if effects.is_empty() {
            "booked"
        } else {
            "cancelled"
        };
        let token = &self.0.token;
        let mut problems = expect_status(
            app,
            token,
            &format!("/api/v1/appointments/{id}"),
            "/status",
            status,
        )
        .await;
        problems.extend(
            expect_status(
                app,
                token,
                &format!("/fhir/Appointment/{id}"),
                "/status",
                status,
            )
            .await,
        );
        problems
    }
}

struct Reschedule(Portal);

impl Row for Reschedule {
    fn name(&self) -> &'static str {
        "reschedule"
    }

    fn aim(&self) -> &'static str {
        "/fhir/Appointment"
    }

    async fn prepare(&mut self, app: &TestApp, n: usize) -> Write {
        let old = self.0.booked(app, &format!("reschedule-setup-{n}")).await;
        let version = version(&app.stored("Appointment", &old));
        let slot = self.0.free_slot(app);
        self.0
            .warm(
                app,
                &[
                    "/api/v1/appointments".to_owned(),
                    format!("/fhir/Appointment?slot=Slot/{slot}"),
                    format!("/fhir/Appointment/{old}"),
                ],
            )
            .await;
        Write {
            path: format!("/appointments/{old}/reschedule"),
            body: json!({"slot_id": slot, "reason": format!("matrix {n}")}),
            key: format!("reschedule-{n}"),
            target: json!({"old": old, "version": version, "slot": slot}),
        }
    }

    async fn send(&self, app: &TestApp, write: &Write) -> Sent {
        self.0.send(app, write).await
    }

    /// The booking on the new slot. Never two of them, and never the old appointment
    /// cancelled without one (the patient would hold neither).
    fn effects(&self, app: &TestApp, write: &Write) -> Result<Vec<String>, String> {
        let booked = on_slot(app, &text(&write.target["slot"]), "booked");
        let old = app.stored("Appointment", &text(&write.target["old"]));
        if booked.len() > 1 {
            return Err(format!("{} bookings of the new slot", booked.len()));
        }
        if old["status"] == "cancelled" && booked.is_empty() {
            return Err("the old appointment is cancelled and the new slot is not booked".into());
        }
        Ok(booked)
    }

    fn answered(&self, body: &Value) -> Option<String> {
        body["appointment"]["id"].as_str().map(str::to_owned)
    }

    fn complete(&self, app: &TestApp, write: &Write) -> Result<(), String> {
        let old = app.stored("Appointment", &text(&write.target["old"]));
        let before = write.target["version"].as_u64().unwrap_or(0);
        if old["status"] != "cancelled" || version(&old) != before + 1 {
            return Err(format!(
                "the old appointment is {} at version {} (booked at {before})",
                old["status"],
                version(&old)
            ));
        }
        Ok(())
    }

    async fn reads(&self, app: &TestApp, write: &Write, effects: &[String]) -> Vec<String> {
        let slot = text(&write.target["slot"]);
        let old = text(&write.target["old"]);
        let token = &self.0.token;
        let mut problems = expect_listed(app, token, "/api/v1/appointments", effects).await;
        problems.extend(
            expect_listed(
                app,
                token,
                &format!("/fhir/Appointment?slot=Slot/{slot}"),
                effects,
            )
            .await,
        );
        let stored = text(&app.stored("Appointment", &old)["status"]);
        problems.extend(
            expect_status(
                app,
                token,
                &format!("/fhir/Appointment/{old}"),
                "/status",
                &stored,
            )
            .await,
        );
        problems
    }
}

// ---------------------------------------------------------------------------------
// Refills and referrals

struct Refill(Portal);

impl Row for Refill {
    fn name(&self) -> &'static str {
        "refill"
    }

    fn aim(&self) -> &'static str {
        "/fhir/Task"
    }

    /// A prescription of its own per cell: a copy of `mr-1-1` (refills left, due) that
    /// was never filled.
    async fn prepare(&mut self, app: &TestApp, n: usize) -> Write {
        let id = format!("mr-matrix-{n}");
        let mut prescription = app.stored("MedicationRequest", "mr-1-1");
        prescription["id"] = json!(id);
        prescription.as_object_mut().unwrap().remove("meta");
        app.sandbox
            .store()
            .update("MedicationRequest", &id, prescription, None)
            .expect("prescription stored");
        self.0
            .warm(
                app,
                &[
                    "/api/v1/refill-requests".to_owned(),
                    "/fhir/Task".to_owned(),
                ],
            )
            .await;
        Write {
            path: format!("/medications/{id}/refill-requests"),
            body: json!({"note": format!("matrix {n}")}),
            key: format!("refill-{n}"),
            target: json!({"prescription": id}),
        }
    }

    async fn send(&self, app: &TestApp, write: &Write) -> Sent {
        self.0.send(app, write).await
    }

    fn effects(&self, app: &TestApp, write: &Write) -> Result<Vec<String>, String> {
        let focus = format!("MedicationRequest/{}", text(&write.target["prescription"]));
        Ok(app
            .all_stored("Task")
            .into_iter()
            .filter(|t| t["focus"]["reference"] == focus.as_str())
            .map(|t| id_of(&t))
            .collect())
    }

    fn answered(&self, body: &Value) -> Option<String> {
        body["id"].as_str().map(str::to_owned)
    }

    async fn reads(&self, app: &TestApp, _write: &Write, effects: &[String]) -> Vec<String> {
        let token = &self.0.token;
        let mut problems = expect_listed(app, token, "/api/v1/refill-requests", effects).await;
        problems.extend(expect_listed(app, token, "/fhir/Task", effects).await);
        problems
    }
}

struct Referral(Portal);

const REFERRALS: &str = "/fhir/ServiceRequest?_count=200";

impl Row for Referral {
    fn name(&self) -> &'static str {
        "referral"
    }

    fn aim(&self) -> &'static str {
        "/fhir/ServiceRequest"
    }

    async fn prepare(&mut self, app: &TestApp, n: usize) -> Write {
        self.0
            .warm(app, &["/api/v1/referrals".to_owned(), REFERRALS.to_owned()])
            .await;
        let reason = format!("matrix referral {n}");
        Write {
            path: "/referrals".to_owned(),
            body: json!({"specialty": "394579002", "reason": reason}),
            key: format!("referral-{n}"),
            target: json!({"reason": reason}),
        }
    }

    async fn send(&self, app: &TestApp, write: &Write) -> Sent {
        self.0.send(app, write).await
    }

    fn effects(&self, app: &TestApp, write: &Write) -> Result<Vec<String>, String> {
        Ok(app
            .all_stored("ServiceRequest")
            .into_iter()
            .filter(|s| s["reasonCode"][0]["text"] == write.target["reason"])
            .map(|s| id_of(&s))
            .collect())
    }

    fn answered(&self, body: &Value) -> Option<String> {
        body["id"].as_str().map(str::to_owned)
    }

    async fn reads(&self, app: &TestApp, _write: &Write, effects: &[String]) -> Vec<String> {
        let token = &self.0.token;
        let mut problems = expect_listed(app, token, "/api/v1/referrals", effects).await;
        problems.extend(expect_listed(app, token, REFERRALS, effects).await);
        problems
    }
}

// ---------------------------------------------------------------------------------
// Messages

/// The patient's Communications whose `partOf` is `header`.
fn messages_of(app: &TestApp, header: &str) -> Vec<Value> {
    let parent = format!("Communication/{header}");
    app.all_stored("Communication")
        .into_iter()
        .filter(|c| c["partOf"][0]["reference"] == parent.as_str())
        .collect()
}

const COMMUNICATIONS: &str = "/fhir/Communication?_count=500";

struct Thread {
    portal: Portal,
    recipient: String,
}

impl Row for Thread {
    fn name(&self) -> &'static str {
        "thread"
    }

    fn aim(&self) -> &'static str {
        "/fhir/Communication"
    }

    async fn prepare(&mut self, app: &TestApp, n: usize) -> Write {
        if self.recipient.is_empty() {
            let team = app.stored("CareTeam", &app.care_team_id(PATIENT));
            self.recipient = text(&team["participant"][0]["member"]["reference"]);
        }
        self.portal
            .warm(
                app,
                &[
                    "/api/v1/messages/threads".to_owned(),
                    COMMUNICATIONS.to_owned(),
                ],
            )
            .await;
        let topic = format!("matrix thread {n}");
        Write {
            path: "/messages/threads".to_owned(),
            body: json!({"recipient": self.recipient, "topic": topic, "text": format!("hello {n}")}),
            key: format!("thread-{n}"),
            target: json!({"topic": topic}),
        }
    }

    async fn send(&self, app: &TestApp, write: &Write) -> Sent {
        self.portal.send(app, write).await
    }

    /// The thread's header (its first message is checked by `complete`). Never two
    /// headers, never two first messages.
    fn effects(&self, app: &TestApp, write: &Write) -> Result<Vec<String>, String> {
        let headers: Vec<String> = app
            .all_stored("Communication")
            .into_iter()
            .filter(|c| c["topic"]["text"] == write.target["topic"] && c.get("partOf").is_none())
            .map(|c| id_of(&c))
            .collect();
        match headers.as_slice() {
            [] => Ok(Vec::new()),
            [header] => match messages_of(app, header).len() {
                0 | 1 => Ok(headers),
                more => Err(format!("the thread has {more} first messages")),
            },
            more => Err(format!("{} thread headers", more.len())),
        }
    }

    /// `message_not_sent` says the thread was started and whether its message was sent.
    fn said(&self, sent: &Sent) -> Said {
        match sent.answer.as_ref().map(|a| a.code()) {
            Some("message_not_sent") => Said::Partial,
            _ => super::said(sent),
        }
    }

    fn claims(&self, app: &TestApp, write: &Write, first: &Sent) -> Vec<String> {
        let Some(answer) = &first.answer else {
            return Vec::new();
        };
        if answer.code() != "message_not_sent" {
            return Vec::new();
        }
        let details = &answer.body["details"];
        let headers = self.effects(app, write).unwrap_or_default();
        let mut problems = Vec::new();
        if headers != [text(&details["thread_id"])] || details["thread_created"] != true {
            problems.push(format!("claims {details} while the EHR holds {headers:?}"));
        }
        let sent = headers.first().map_or(0, |h| messages_of(app, h).len());
        if details["message_sent"] == false && sent != 0 {
            problems.push("says the message was not sent, but it was".to_owned());
        }
        problems
    }

    fn answered(&self, body: &Value) -> Option<String> {
        body["id"].as_str().map(str::to_owned)
    }

    fn complete(&self, app: &TestApp, write: &Write) -> Result<(), String> {
        match self.effects(app, write)?.as_slice() {
            [header] if messages_of(app, header).len() == 1 => Ok(()),
            other => Err(format!("the thread and its one message: {other:?}")),
        }
    }

    async fn reads(&self, app: &TestApp, _write: &Write, effects: &[String]) -> Vec<String> {
        let token = &self.portal.token;
        let mut problems = expect_listed(app, token, "/api/v1/messages/threads", effects).await;
        problems.extend(expect_listed(app, token, COMMUNICATIONS, effects).await);
        for header in effects {
            let messages: Vec<String> = messages_of(app, header).iter().map(id_of).collect();
            problems.extend(
                expect_listed(
                    app,
                    token,
                    &format!("/api/v1/messages/threads/{header}"),
                    &messages,
                )
                .await,
            );
        }
        problems
    }
}

struct Reply {
    portal: Portal,
    thread: String,
}

impl Row for Reply {
    fn name(&self) -> &'static str {
        "reply"
    }

    fn aim(&self) -> &'static str {
        "/fhir/Communication"
    }

    async fn prepare(&mut self, app: &TestApp, n: usize) -> Write {
        if self.thread.is_empty() {
            self.thread = app
                .all_stored("Communication")
                .into_iter()
                .find(|c| {
                    c["subject"]["reference"] == format!("Patient/{PATIENT}")
                        && c.get("partOf").is_none()
                        && c["status"] == "in-progress"
                })
                .map(|c| id_of(&c))
                .expect("an open thread");
        }
        let thread = self.thread.clone();
        self.portal
            .warm(
                app,
                &[
                    format!("/api/v1/messages/threads/{thread}"),
                    format!("/fhir/Communication?part-of=Communication/{thread}"),
                ],
            )
            .await;
        let reply = format!("matrix reply {n}");
        Write {
            path: format!("/messages/threads/{thread}/replies"),
            body: json!({"text": reply}),
            key: format!("reply-{n}"),
            target: json!({"text": reply}),
        }
    }

    async fn send(&self, app: &TestApp, write: &Write) -> Sent {
        self.portal.send(app, write).await
    }

    fn effects(&self, app: &TestApp, write: &Write) -> Result<Vec<String>, String> {
        Ok(messages_of(app, &self.thread)
            .into_iter()
            .filter(|m| m["payload"][0]["contentString"] == write.target["text"])
            .map(|m| id_of(&m))
            .collect())
    }

    fn answered(&self, body: &Value) -> Option<String> {
        body["id"].as_str().map(str::to_owned)
    }

    async fn reads(&self, app: &TestApp, _write: &Write, effects: &[String]) -> Vec<String> {
        let token = &self.portal.token;
        let thread = &self.thread;
        let mut problems = expect_listed(
            app,
            token,
            &format!("/api/v1/messages/threads/{thread}"),
            effects,
        )
        .await;
        problems.extend(
            expect_listed(
                app,
                token,
                &format!("/fhir/Communication?part-of=Communication/{thread}"),
                effects,
            )
            .await,
        );
        problems
    }
}

// ---------------------------------------------------------------------------------
// Payments

struct Payment {
    portal: Portal,
    account: String,
}

fn balance(app: &TestApp, account: &str) -> f64 {
    app.stored("Account", account)["extension"][0]["valueMoney"]["value"]
        .as_f64()
        .unwrap_or(f64::NAN)
}

fn cents(value: f64) -> i64 {
    (value * 100.0).round() as i64
}

impl Row for Payment {
    fn name(&self) -> &'static str {
        "payment"
    }

    fn aim(&self) -> &'static str {
        "/fhir/PaymentReconciliation"
    }

    async fn prepare(&mut self, app: &TestApp, n: usize) -> Write {
        if self.account.is_empty() {
            self.account = app
                .all_stored("Account")
                .into_iter()
                .find(|a| a["subject"][0]["reference"] == format!("Patient/{PATIENT}"))
                .map(|a| id_of(&a))
                .expect("an account");
        }
        let account = self.account.clone();
        self.portal
            .warm(
                app,
                &[
                    "/api/v1/bills".to_owned(),
                    format!("/fhir/Account/{account}"),
                ],
            )
            .await;
        // A different amount per cell, so that each cell's record is its own.
        let value = 1.0 + n as f64 / 100.0;
        Write {
            path: format!("/bills/{account}/payments"),
            body: json!({"amount": {"value": value, "currency": "USD"}, "payment_token": "tok_ok"}),
            key: format!("pay-{n}"),
            target: json!({"value": value, "balance": balance(app, &account)}),
        }
    }

    async fn send(&self, app: &TestApp, write: &Write) -> Sent {
        self.portal.send(app, write).await
    }

    /// The payment record; the balance lowered exactly once per record.
    fn effects(&self, app: &TestApp, write: &Write) -> Result<Vec<String>, String> {
        let value = write.target["value"].as_f64().unwrap_or_default();
        let request = format!("Account/{}", self.account);
        let records: Vec<String> = app
            .all_stored("PaymentReconciliation")
            .into_iter()
            .filter(|p| p["detail"][0]["request"]["reference"] == request.as_str())
            .filter(|p| {
                p["paymentAmount"]["value"]
                    .as_f64()
                    .is_some_and(|v| cents(v) == cents(value))
            })
            .map(|p| id_of(&p))
            .collect();
        let before = write.target["balance"].as_f64().unwrap_or_default();
        let now = balance(app, &self.account);
        let expected = cents(before) - cents(value) * records.len() as i64;
        if cents(now) != expected {
            return Err(format!(
                "balance {now} after {} record(s) of {value} from {before}",
                records.len()
            ));
        }
        Ok(records)
    }

    fn answered(&self, body: &Value) -> Option<String> {
        body["id"].as_str().map(str::to_owned)
    }

    async fn reads(&self, app: &TestApp, _write: &Write, _effects: &[String]) -> Vec<String> {
        let token = &self.portal.token;
        let stored = balance(app, &self.account);
        let mut problems = Vec::new();
        let bills = get(app, token, "/api/v1/bills").await;
        let shown = bills.body()["accounts"][0]["balance"]["value"].as_f64();
        if bills.status() != 200 || shown.map(cents) != Some(cents(stored)) {
            problems.push(format!(
                "/api/v1/bills: {} shows {shown:?}, the EHR holds {stored}",
                bills.describe()
            ));
        }
        let path = format!("/fhir/Account/{}", self.account);
        let account = get(app, token, &path).await;
        let shown = account.body()["extension"][0]["valueMoney"]["value"].as_f64();
        if account.status() != 200 || shown.map(cents) != Some(cents(stored)) {
            problems.push(format!(
                "{path}: {} shows {shown:?}, the EHR holds {stored}",
                account.describe()
            ));
        }
        problems
    }
}

// ---------------------------------------------------------------------------------
// The rows

#[tokio::test]
async fn book_under_every_fault() {
    run_row(|app| Book(Portal::new(app))).await;
}

#[tokio::test]
async fn cancel_under_every_fault() {
    run_row(|app| Cancel(Portal::new(app))).await;
}

#[tokio::test]
async fn reschedule_under_every_fault() {
    run_row(|app| Reschedule(Portal::new(app))).await;
}

#[tokio::test]
async fn refill_under_every_fault() {
    run_row(|app| Refill(Portal::new(app))).await;
}

#[tokio::test]
async fn referral_under_every_fault() {
    run_row(|app| Referral(Portal::new(app))).await;
}

#[tokio::test]
async fn new_thread_under_every_fault() {
    run_row(|app| Thread {
        portal: Portal::new(app),
        recipient: String::new(),
    })
    .await;
}

#[tokio::test]
async fn reply_under_every_fault() {
    run_row(|app| Reply {
        portal: Portal::new(app),
        thread: String::new(),
    })
    .await;
}

#[tokio::test]
async fn payment_under_every_fault() {
    run_row(|app| Payment {
        portal: Portal::new(app),
        account: String::new(),
    })
    .await;
}
