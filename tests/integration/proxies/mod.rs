//! The proxy isolation suite: people acting for someone else (the sandbox's families)
//! try to reach what their access does not cover, through the facade and the portal
//! API — a parent and a teenager's confidential records, a read-only grandparent
//! writing, a billing-only spouse reading clinical data, a proxy whose relationship
//! ended or came of age, a proxy naming a patient they are not linked to.
//!
//! Every attempt is a [`Row`]: who asks, what, and what must come back. Whatever the
//! expectation, every answer is also searched for what must not leak ([`Leaks`]): the
//! ids of withheld records (and the distinctive texts they carry), or, for a patient
//! the proxy may not reach at all, every id of that patient's record and their name.
//! What must not leak is found by reading the sandbox store directly, never through
//! the code under test. A category runs all of its rows, then fails once naming every
//! failed row.
//!
//! [`the_rows_catch_an_unguarded_ehr`] replays the facade rows against the sandbox
//! itself (which serves every labelled record to any token naming the patient): at
//! least 85 % must notice, or the suite could not notice a gateway that checks nothing.
//! The rows it prints as not caught are those whose path cannot reach a withheld record
//! of that patient at all (the first page of a search sorted before it, an include
//! through a type the patient has nothing withheld in): kept, because a gateway bug
//! could still make them leak.

mod flows;
mod rows;

use std::collections::BTreeSet;

use portico_sandbox::{Families, ProxyLogin};
use serde_json::Value;

use crate::support::TestApp;

/// The scopes a SMART app asks for: every interaction on every type.
pub const FULL_SCOPE: &str = "launch/patient openid fhirUser patient/*.rs patient/*.cud";

/// The security-label codes withheld from proxies by default (the systems are the v3
/// Confidentiality and ActCode systems; these codes are unique across both).
const SENSITIVE_CODES: &[&str] = &[
    "R", "V", "PSY", "MH", "BH", "SEX", "STD", "HIV", "ETH", "SUD",
];

/// The types the sandbox generates patient data in.
const CLINICAL_TYPES: &[&str] = &[
    "AllergyIntolerance",
    "CarePlan",
    "CareTeam",
    "Condition",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "Immunization",
    "MedicationDispense",
    "MedicationRequest",
    "Observation",
    "Procedure",
    "ServiceRequest",
];

/// Who sends a row.
#[derive(Debug, Clone)]
pub enum Who {
    /// A proxy login's token.
    Proxy(ProxyLogin),
    /// A patient's own token.
    Patient(String),
}

/// What a row must get back.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Exactly this status.
    Status(u16),
    /// 403 with this problem `code` (portal) or a `forbidden` OperationOutcome (facade).
    Refused(&'static str),
    /// One of these statuses.
    AnyOf(Vec<u16>),
}

/// What must not appear in an answer.
#[derive(Debug, Clone, Default)]
pub struct Leaks {
    /// Resource ids, matched as whole JSON strings or reference tails.
    pub ids: BTreeSet<String>,
    /// Distinctive texts (names, code displays).
    pub texts: BTreeSet<String>,
}

impl Leaks {
    pub fn found_in(&self, body: &str) -> Vec<String> {
        let mut found = Vec::new();
        for id in &self.ids {
            let quoted = format!("\"{id}\"");
            let tail = format!("/{id}\"");
            let mid = format!("/{id}/");
            if body.contains(&quoted) || body.contains(&tail) || body.contains(&mid) {
                found.push(id.clone());
            }
        }
        for text in &self.texts {
            if body.contains(text.as_str()) {
                found.push(text.clone());
            }
        }
        found
    }

    pub fn and(mut self, other: &Leaks) -> Leaks {
        self.ids.extend(other.ids.iter().cloned());
        self.texts.extend(other.texts.iter().cloned());
        self
    }
}

/// One attempt.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub who: Who,
    pub method: &'static str,
    /// Under the gateway: `/fhir/...` or `/api/v1/...`.
    pub path: String,
    /// `Portico-Patient` (portal rows).
    pub acting_for: Option<String>,
    pub body: Option<Value>,
    pub expect: Expect,
    pub leaks: Leaks,
    /// For writes: nothing may reach the EHR.
    pub unchanged: bool,
}

impl Row {
    pub fn get(name: impl Into<String>, who: &Who, path: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            who: who.clone(),
            method: "GET",
            path: path.into(),
            acting_for: None,
            body: None,
            expect: Expect::Status(200),
            leaks: Leaks::default(),
            unchanged: false,
        }
    }

    pub fn post(name: impl Into<String>, who: &Who, path: impl Into<String>, body: Value) -> Row {
        Row {
            method: "POST",
            body: Some(body),
            unchanged: true,
            ..Row::get(name, who, path)
        }
    }

    pub fn expect(mut self, expect: Expect) -> Row {
        self.expect = expect;
        self
    }

    pub fn acting_for(mut self, patient: &str) -> Row {
        self.acting_for = Some(patient.to_owned());
        self
    }

    pub fn leaks(mut self, leaks: &Leaks) -> Row {
        self.leaks = leaks.clone();
        self
    }
}

/// A gateway in front of a sandbox with the families, and what must not leak.
pub struct Fixture {
    pub app: TestApp,
    pub families: Families,
    /// Against the bare sandbox instead of the gateway (the suite's self-test).
    unguarded: bool,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let app = TestApp::spawn().await;
        let families = app.sandbox.families().clone();
        Fixture {
            app,
            families,
            unguarded: false,
        }
    }

    /// In front of a gateway built some other way (an edited EHR profile).
    pub fn on(app: TestApp) -> Fixture {
        let families = app.sandbox.families().clone();
        Fixture {
            app,
            families,
            unguarded: false,
        }
    }

    pub async fn unguarded() -> Fixture {
        Fixture {
            unguarded: true,
            ..Fixture::new().await
        }
    }

    pub fn parent(&self) -> Who {
        Who::Proxy(self.families.logins.parent.clone())
    }

    pub fn grandparent(&self) -> Who {
        Who::Proxy(self.families.logins.grandparent.clone())
    }

    pub fn daughter(&self) -> Who {
        Who::Proxy(self.families.logins.daughter.clone())
    }

    pub fn spouse(&self) -> Who {
        Who::Proxy(self.families.logins.spouse.clone())
    }

    pub fn former_caregiver(&self) -> Who {
        Who::Proxy(self.families.logins.former_caregiver.clone())
    }

    pub fn token(&self, who: &Who) -> String {
        let auth = self.app.sandbox.auth();
        match who {
            Who::Proxy(login) => auth.issue_proxy_token("demo-app", FULL_SCOPE, login),
            Who::Patient(p) => auth.issue_access_token("demo-app", FULL_SCOPE, Some(p)),
        }
    }

    /// Every stored resource of `patient`'s record (by the compartment references the
    /// sandbox writes), as (type, resource).
    pub fn record_of(&self, patient: &str) -> Vec<(&'static str, Value)> {
        let reference = format!("Patient/{patient}");
        let mut out = Vec::new();
        for ty in CLINICAL_TYPES.iter().chain(
            [
                "Account",
                "Invoice",
                "ChargeItem",
                "Appointment",
                "Communication",
            ]
            .iter(),
        ) {
            for r in self.app.all_stored(ty) {
                if r.to_string().contains(&format!("\"{reference}\"")) {
                    out.push((*ty, r));
                }
            }
        }
        out
    }

    /// `patient`'s records carrying a sensitive label, found in the store.
    pub fn labelled(&self, patient: &str) -> Vec<(String, String)> {
        self.record_of(patient)
            .into_iter()
            .filter(|(_, r)| {
                r.pointer("/meta/security")
                    .and_then(Value::as_array)
                    .is_some_and(|labels| {
                        labels.iter().any(|l| {
                            l["code"]
                                .as_str()
                                .is_some_and(|c| SENSITIVE_CODES.contains(&c))
                        })
                    })
            })
            .map(|(ty, r)| {
                (
                    ty.to_owned(),
                    r["id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// What must not leak of `patient`'s labelled records: their ids, and code texts
    /// no unlabelled record of theirs shares.
    pub fn withheld(&self, patient: &str) -> Leaks {
        let labelled: BTreeSet<(String, String)> = self.labelled(patient).into_iter().collect();
        let mut leaks = Leaks::default();
        let mut shared_texts = BTreeSet::new();
        let mut texts = BTreeSet::new();
        for (ty, r) in self.record_of(patient) {
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            let mine = labelled.contains(&(ty.to_owned(), id.clone()));
            for text in code_texts(&r) {
                if mine {
                    texts.insert(text);
                } else {
                    shared_texts.insert(text);
                }
            }
            if mine {
                leaks.ids.insert(id);
            }
        }
        leaks.texts = texts.difference(&shared_texts).cloned().collect();
        leaks
    }

    /// What must not leak of a patient the proxy may not reach at all: every id of
    /// their record, and their name.
    pub fn everything_of(&self, patient: &str) -> Leaks {
        let mut leaks = Leaks::default();
        for (_, r) in self.record_of(patient) {
            if let Some(id) = r["id"].as_str() {
                leaks.ids.insert(id.to_owned());
            }
        }
        let stored = self.app.stored("Patient", patient);
        if let Some(family) = stored.pointer("/name/0/family").and_then(Value::as_str)
            && let Some(given) = stored.pointer("/name/0/given/0").and_then(Value::as_str)
        {
            leaks.texts.insert(format!("{given} {family}"));
        }
        leaks
    }

    fn base(&self) -> String {
        if self.unguarded {
            self.app.sandbox.fhir_base()
        } else {
            self.app.fhir()
        }
    }

    /// Sends a row; the facade rows go to the bare sandbox in the self-test.
    pub async fn send(&self, row: &Row) -> (u16, String) {
        let url = match row.path.strip_prefix("/fhir") {
            Some(rest) => format!("{}{rest}", self.base()),
            None => self.app.url(&row.path),
        };
        let mut request = match row.method {
            "GET" => self.app.http.get(&url),
            "POST" => self.app.http.post(&url),
            "PUT" => self.app.http.put(&url),
            other => panic!("method {other}"),
        }
        .bearer_auth(self.token(&row.who));
        if let Some(p) = &row.acting_for {
            request = request.header("Portico-Patient", p);
        }
        if let Some(body) = &row.body {
            let content_type = if row.path.starts_with("/fhir") {
                "application/fhir+json"
            } else {
                "application/json"
            };
            request = request
                .header("Content-Type", content_type)
                .body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// How many write requests reached the sandbox.
    pub fn upstream_writes(&self) -> u64 {
        self.app
            .sandbox
            .faults()
            .stats()
            .by_method_and_type
            .iter()
            .filter(|c| matches!(c.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
            .map(|c| c.count)
            .sum()
    }

    /// Runs one row; `Err` says what went wrong.
    pub async fn check(&self, row: &Row) -> Result<(), String> {
        let writes = self.upstream_writes();
        let (status, body) = self.send(row).await;
        let mut problems = Vec::new();
        let leaked = row.leaks.found_in(&body);
        if !leaked.is_empty() {
            problems.push(format!("leaked {leaked:?}"));
        }
        let ok = match &row.expect {
            Expect::Status(s) => status == *s,
            Expect::AnyOf(list) => list.contains(&status),
            Expect::Refused(code) => {
                status == 403
                    && (row.path.starts_with("/fhir") && body.contains("\"forbidden\"")
                        || body.contains(&format!("\"code\":\"{code}\"")))
            }
        };
        if !ok {
            let shown: String = body.chars().take(300).collect();
            problems.push(format!("expected {:?}, got {status}: {shown}", row.expect));
        }
        if row.unchanged && self.upstream_writes() != writes {
            problems.push("a write reached the EHR".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{}: {}", row.name, problems.join("; ")))
        }
    }

    /// Runs every row; the failures.
    pub async fn run_all(&self, rows: &[Row]) -> Vec<String> {
        let mut failures = Vec::new();
        for row in rows {
            if let Err(e) = self.check(row).await {
                failures.push(e);
            }
        }
        failures
    }

    /// Runs a category and fails once, naming every failed row.
    pub async fn run_category(&self, category: &str, rows: &[Row]) {
        let failures = self.run_all(rows).await;
        println!("proxies/{category}: {} rows", rows.len());
        assert!(
            failures.is_empty(),
            "{category}: {} of {} rows failed:\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n")
        );
    }
}

/// The code texts of a resource (`code`, `type`, `medicationCodeableConcept`).
fn code_texts(r: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["code", "medicationCodeableConcept"] {
        if let Some(c) = r.get(key) {
            out.extend(concept_texts(c));
        }
    }
    if let Some(types) = r.get("type").and_then(Value::as_array) {
        for t in types {
            out.extend(concept_texts(t));
        }
    }
    out.retain(|t| t.len() >= 6);
    out
}

fn concept_texts(c: &Value) -> Vec<String> {
    let mut out: Vec<String> = c
        .get("coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|coding| coding["display"].as_str().map(str::to_owned))
        .collect();
    if let Some(text) = c["text"].as_str() {
        out.push(text.to_owned());
    }
    out
}

#[tokio::test]
async fn the_families_are_labelled_as_the_sandbox_says() {
    // The store, read directly, agrees with the sandbox's own listing: the suite's
    // idea of "withheld" is not borrowed from the code under test.
    let fx = Fixture::new().await;
    let f = &fx.families;
    for (patient, listed) in [
        (&f.teen, &f.teen_sensitive),
        (&f.child, &f.child_sensitive),
        (&f.elder, &f.elder_sensitive),
        (&f.daughter, &f.daughter_sensitive),
    ] {
        let found: BTreeSet<(String, String)> = fx.labelled(patient).into_iter().collect();
        let listed: BTreeSet<(String, String)> = listed.iter().cloned().collect();
        assert_eq!(found, listed, "{patient}");
        assert!(!found.is_empty());
    }
}

#[tokio::test]
async fn several_hundred_distinct_attempts() {
    let fx = Fixture::new().await;
    let all = rows::all(&fx);
    let mut names = BTreeSet::new();
    for row in &all {
        assert!(names.insert(row.name.clone()), "duplicate row {}", row.name);
    }
    println!("proxies: {} attempts", all.len());
    assert!(all.len() >= 300, "only {} attempts", all.len());
}

#[tokio::test]
async fn the_rows_catch_an_unguarded_ehr() {
    let fx = Fixture::unguarded().await;
    // The facade rows that must see nothing of a withheld record or a patient out of
    // reach; against the bare EHR each should find a leak or a wrong status.
    let rows: Vec<Row> = rows::all(&fx)
        .into_iter()
        .filter(|r| r.path.starts_with("/fhir") && r.method == "GET")
        .filter(|r| !r.leaks.ids.is_empty())
        .collect();
    let failures = fx.run_all(&rows).await;
    let caught = failures.len();
    for row in &rows {
        if !failures
            .iter()
            .any(|f| f.starts_with(&format!("{}: ", row.name)))
        {
            println!(
                "proxies/self-test: not caught by the bare EHR: {}",
                row.name
            );
        }
    }
    println!(
        "proxies/self-test: {caught} of {} facade rows fail against the bare EHR",
        rows.len()
    );
    assert!(
        caught as f64 >= 0.85 * rows.len() as f64,
        "only {caught} of {} rows would notice a missing gateway",
        rows.len()
    );
}
