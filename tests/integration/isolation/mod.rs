//! The adversarial patient-isolation suite: patient A (`pat-1`) tries, in every way we
//! could think of, to read or change patient B's (`pat-2`) data through the facade.
//!
//! Every attempt is one row of a table ([`Attempt`]): a request, the token it carries and
//! what the contract says must come back ([`Expect`]). Whatever the expectation, every
//! response is also searched for B's data ([`Fixture::leaks`]): B's resource ids, any
//! reference to a patient other than A, B's name, MRN and e-mail, and the EHR's base URL.
//! Rows that try to write also check that nothing changed upstream (a snapshot of every
//! resource version in the sandbox store, and the sandbox's count of write requests).
//!
//! B's data is found by reading the sandbox store directly (every resource with a
//! reference to `Patient/pat-2`), never through the code under test. A category runs
//! all of its rows and then fails once, naming every failed row, so that one report
//! shows every hole at once.

mod audit;
mod bundles;
mod includes;
mod mentions;
mod paging;
mod paths;
mod reads;
mod scopes;
mod search;
mod tokens;
mod writes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::TestApp;

/// Patient A, the attacker.
pub const A: &str = "pat-1";
/// Patient B, the victim.
pub const B: &str = "pat-2";
/// A full patient token: every interaction on every type.
pub const FULL_SCOPE: &str = "launch/patient openid fhirUser patient/*.rs patient/*.cud";

/// Types a patient may read whatever their compartment (shared reference data).
pub const REFERENCE_TYPES: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "Location",
    "Organization",
    "Medication",
    "Schedule",
    "Slot",
    "HealthcareService",
];

/// What an attempt must get back, besides never containing B's data.
#[derive(Debug, Clone)]
pub enum Expect {
    /// 403 with an OperationOutcome whose first issue is `forbidden`.
    Forbidden,
    /// 404, answered exactly like a read of the given missing path (under `/fhir`).
    Hidden(String),
    /// 200 with a Bundle holding only A's data and at least this many matches.
    OnlyA(usize),
    /// A 4xx, or 200 with only A's data (a Bundle or one resource).
    DeniedOrOnlyA,
    /// One of these statuses.
    Status(Vec<u16>),
    /// 401 with `WWW-Authenticate: Bearer...` and an OperationOutcome.
    Unauthorized,
    /// 200 with one resource of A's (or shared reference data).
    ResourceOfA,
}

/// Which credential an attempt carries.
#[derive(Debug, Clone)]
pub enum Tok {
    A,
    B,
    None,
    /// `Authorization: Bearer <this>`.
    Bearer(String),
    /// This whole `Authorization` header value.
    Header(String),
}

/// One request of the suite.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub name: String,
    pub method: &'static str,
    /// Path and query after the gateway's `/fhir` (or, with `raw`, the whole request target).
    pub path: String,
    /// Sent byte for byte over a plain socket (no URL normalisation by the client).
    pub raw: bool,
    pub token: Tok,
    pub headers: Vec<(String, String)>,
    pub body: Option<(String, Vec<u8>)>,
    pub expect: Expect,
    /// For writes: nothing may change upstream and no write may reach the EHR.
    pub unchanged: bool,
}

impl Attempt {
    pub fn new(name: impl Into<String>, method: &'static str, path: impl Into<String>) -> Attempt {
        Attempt {
            name: name.into(),
            method,
            path: path.into(),
            raw: false,
            token: Tok::A,
            headers: Vec::new(),
            body: None,
            expect: Expect::DeniedOrOnlyA,
            unchanged: method != "GET",
        }
    }

    pub fn get(name: impl Into<String>, path: impl Into<String>) -> Attempt {
        Attempt::new(name, "GET", path)
    }

    pub fn expect(mut self, expect: Expect) -> Attempt {
        self.expect = expect;
        self
    }

    pub fn token(mut self, token: Tok) -> Attempt {
        self.token = token;
        self
    }

    pub fn raw(mut self) -> Attempt {
        self.raw = true;
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Attempt {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Attempt {
        self.body = Some((content_type.to_owned(), body.into()));
        self
    }

    pub fn json(self, value: &Value) -> Attempt {
        self.body("application/fhir+json", value.to_string())
    }

    pub fn may_change(mut self) -> Attempt {
        self.unchanged = false;
        self
    }
}

/// A response, from reqwest or from the raw socket client.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `status` and the start of the body, for failure messages.
    pub fn describe(&self) -> String {
        let text = self.text();
        let cut: String = text.chars().take(400).collect();
        format!("{} {cut}", self.status)
    }
}

/// The world of one test: a gateway in front of a sandbox, and what we know of A and B.
pub struct Fixture {
    pub app: TestApp,
    pub token_a: String,
    pub token_b: String,
    /// The gateway's FHIR base.
    pub gw: String,
    /// The sandbox's FHIR base and base URL (neither may ever reach a client).
    pub up_fhir: String,
    pub up_base: String,
    /// B's and A's compartment resources by type (ids), found in the sandbox store.
    pub b_res: BTreeMap<String, Vec<String>>,
    pub a_res: BTreeMap<String, Vec<String>>,
    /// Every id of B's (including `pat-2`).
    pub b_ids: HashSet<String>,
    /// B's name, MRN and e-mail.
    pub b_secrets: Vec<String>,
    /// B's MRN system and value.
    pub b_mrn: (String, String),
    pub b_family: String,
    /// A's care-team practitioner (`Practitioner/...`).
    pub a_practitioner: String,
    /// Where raw requests go (the gateway, or the bare EHR for the self-test).
    target: SocketAddr,
    missing_cache: tokio::sync::Mutex<HashMap<String, Resp>>,
}

/// Every `reference` string in a JSON value.
pub fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "reference"
                    && let Some(s) = v.as_str()
                {
                    out.push(s.to_owned());
                }
                references(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// The patient ids a reference string names, by its segments (`.../Patient/<id>...`).
/// Deliberately naive and independent of the gateway's parser: any `Patient` segment
/// followed by something counts.
pub fn patient_ids_in(reference: &str) -> Vec<String> {
    let segments: Vec<&str> = reference.split(['/', '?', '#']).collect();
    segments
        .windows(2)
        .filter(|w| w[0] == "Patient")
        .map(|w| w[1].trim().to_owned())
        .collect()
}

impl Fixture {
    pub async fn new() -> Fixture {
        Self::on(TestApp::spawn().await)
    }

    pub fn on(app: TestApp) -> Fixture {
        let token_a = app.patient_token(A, FULL_SCOPE);
        let token_b = app.patient_token(B, FULL_SCOPE);
        let store = app.sandbox.store();
        let mut b_res: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut a_res: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in portico_sandbox::search::types() {
            for id in store.ids(t.name) {
                let Ok(stored) = store.read(t.name, &id) else {
                    continue;
                };
                let Some(body) = stored.body else { continue };
                let value: Value = serde_json::from_slice(&body).expect("stored json");
                let mut refs = Vec::new();
                references(&value, &mut refs);
                let patients: HashSet<String> =
                    refs.iter().flat_map(|r| patient_ids_in(r)).collect();
                let owner = if t.name == "Patient" {
                    Some(id.clone())
                } else if patients.len() == 1 {
                    patients.into_iter().next()
                } else {
                    None
                };
                match owner.as_deref() {
                    Some(B) => b_res.entry(t.name.to_owned()).or_default().push(id),
                    Some(A) => a_res.entry(t.name.to_owned()).or_default().push(id),
                    _ => {}
                }
            }
        }
        let b_ids: HashSet<String> = b_res.values().flatten().cloned().collect();
        assert!(b_ids.contains(B));
        let patient_b: Value =
            serde_json::from_slice(&store.read("Patient", B).unwrap().body.unwrap()).unwrap();
        let b_name = app
            .sandbox
            .patients()
            .iter()
            .find(|p| p.id == B)
            .unwrap()
            .name
            .clone();
        let mrn_system = patient_b["identifier"][0]["system"]
            .as_str()
            .unwrap()
            .to_owned();
        let mrn = patient_b["identifier"][0]["value"]
            .as_str()
            .unwrap()
            .to_owned();
        let email = patient_b["telecom"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["system"] == "email")
            .and_then(|t| t["value"].as_str())
            .unwrap()
            .to_owned();
        let b_family = patient_b["name"][0]["family"].as_str().unwrap().to_owned();
        let care_team: Value =
            serde_json::from_slice(&store.read("CareTeam", "ct-1").unwrap().body.unwrap()).unwrap();
        let a_practitioner = care_team["participant"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["member"]["reference"].as_str())
            .find(|r| r.starts_with("Practitioner/"))
            .unwrap()
            .to_owned();
        Fixture {
            gw: app.fhir(),
            up_fhir: app.sandbox.fhir_base(),
            up_base: app.sandbox.base_url(),
            token_a,
            token_b,
            b_res,
            a_res,
            b_ids,
            b_secrets: vec![b_name, mrn.clone(), email],
            b_mrn: (mrn_system, mrn),
            b_family,
            a_practitioner,
            target: app.addr,
            missing_cache: tokio::sync::Mutex::new(HashMap::new()),
            app,
        }
    }

    /// The suite pointed at the bare EHR instead of the gateway: nothing guards B's data,
    /// so most attempts must fail there (see [`the_suite_catches_an_unguarded_ehr`]).
    pub async fn unguarded() -> Fixture {
        let mut fx = Fixture::new().await;
        fx.gw = fx.app.sandbox.fhir_base();
        fx.target = fx.app.sandbox.addr();
        // Naming the EHR is what it does; only isolation failures count here.
        fx.up_fhir = "http://unguarded.invalid/fhir".to_owned();
        fx.up_base = "http://unguarded.invalid".to_owned();
        fx
    }

    /// The first id of B's resources of `ty`.
    pub fn b(&self, ty: &str) -> String {
        self.b_res
            .get(ty)
            .and_then(|v| v.first())
            .unwrap_or_else(|| panic!("B has no {ty}"))
            .clone()
    }

    /// The first id of A's resources of `ty`.
    pub fn a(&self, ty: &str) -> String {
        self.a_res
            .get(ty)
            .and_then(|v| v.first())
            .unwrap_or_else(|| panic!("A has no {ty}"))
            .clone()
    }

    /// The compartment types B has resources of (Patient excluded).
    pub fn b_types(&self) -> Vec<String> {
        self.b_res
            .keys()
            .filter(|t| t.as_str() != "Patient")
            .cloned()
            .collect()
    }

    /// Sends one attempt.
    pub async fn send(&self, attempt: &Attempt) -> Resp {
        let auth = match &attempt.token {
            Tok::A => Some(format!("Bearer {}", self.token_a)),
            Tok::B => Some(format!("Bearer {}", self.token_b)),
            Tok::None => None,
            Tok::Bearer(t) => Some(format!("Bearer {t}")),
            Tok::Header(h) => Some(h.clone()),
        };
        let mut headers = attempt.headers.clone();
        if let Some(a) = auth {
            headers.push(("Authorization".to_owned(), a));
        }
        if attempt.raw {
            let (body, ct) = match &attempt.body {
                Some((ct, b)) => (b.clone(), Some(ct.clone())),
                None => (Vec::new(), None),
            };
            if let Some(ct) = ct {
                headers.push(("Content-Type".to_owned(), ct));
            }
            return raw_request(self.target, attempt.method, &attempt.path, &headers, &body).await;
        }
        let url = format!("{}{}", self.gw, attempt.path);
        self.send_url(attempt.method, &url, &headers, attempt.body.as_ref())
            .await
    }

    /// Sends a request to an absolute URL with reqwest.
    pub async fn send_url(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<&(String, Vec<u8>)>,
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.app.http.request(method, url);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct.as_str()).body(b.clone());
        }
        match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                let headers = res
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_ascii_lowercase(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let body = res.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                Resp {
                    status,
                    headers,
                    body,
                }
            }
            // The client refusing to build the request (an invalid URL) is a client-side
            // refusal: status 0 is reported as such.
            Err(e) => Resp {
                status: 0,
                headers: Vec::new(),
                body: format!("client error: {e}").into_bytes(),
            },
        }
    }

    /// GET under `/fhir` with A's token.
    pub async fn get_a(&self, path: &str) -> Resp {
        self.send(&Attempt::get("", path)).await
    }

    /// Everything in a response that belongs to B or to the EHR's address.
    pub fn leaks(&self, r: &Resp) -> Vec<String> {
        let mut found = Vec::new();
        for (k, v) in &r.headers {
            if let Some(what) = self.base_leak(v) {
                found.push(format!("header {k} names the EHR ({what})"));
            }
            for id in tokens_of(v) {
                if self.b_ids.contains(id) && k != "x-request-id" {
                    found.push(format!("header {k} names B's {id}"));
                }
            }
        }
        let text = r.text();
        if let Some(what) = self.base_leak(&text) {
            found.push(format!("body names the EHR ({what})"));
        }
        // What A asked for may come back (a Bundle's self link, an OperationOutcome's
        // diagnostics); B's data may not.
        let data = match r.json() {
            Some(mut json) => {
                strip_echoes(&mut json);
                self.json_leaks(&json, &mut found);
                json.to_string()
            }
            None => text,
        };
        for secret in &self.b_secrets {
            if data.contains(secret.as_str()) {
                found.push(format!("body contains B's personal data ({secret})"));
            }
        }
        found
    }

    fn base_leak(&self, text: &str) -> Option<&'static str> {
        if text.contains(&self.up_fhir) {
            return Some("its FHIR base");
        }
        let mut rest = text;
        while let Some(pos) = rest.find(&self.up_base) {
            let after = &rest[pos + self.up_base.len()..];
            if !after.starts_with(|c: char| c.is_ascii_digit()) {
                return Some("its base URL");
            }
            rest = after;
        }
        None
    }

    fn json_leaks(&self, value: &Value, found: &mut Vec<String>) {
        walk_strings(value, None, &mut |key, s| {
            if key == Some("reference") {
                for p in patient_ids_in(s) {
                    if p != A {
                        found.push(format!("a reference to another patient: {s}"));
                    }
                }
            }
            for id in tokens_of(s) {
                if self.b_ids.contains(id) {
                    found.push(format!("names B's {id} (in {s:?})"));
                }
            }
        });
        for_each_resource(value, &mut |res| {
            if res["resourceType"] == "Patient" && res["id"].as_str() != Some(A) {
                found.push(format!("a Patient other than A: {}", res["id"]));
            }
        });
    }

    /// Whether a resource (not a Bundle) is A's or shared reference data.
    pub fn is_a_or_shared(&self, res: &Value) -> Result<(), String> {
        let ty = res["resourceType"].as_str().unwrap_or_default();
        let id = res["id"].as_str().unwrap_or_default();
        if ty == "OperationOutcome" || REFERENCE_TYPES.contains(&ty) {
            return Ok(());
        }
        if ty == "Patient" {
            return if id == A {
                Ok(())
            } else {
                Err(format!("Patient/{id} is not A"))
            };
        }
        let mut refs = Vec::new();
        references(res, &mut refs);
        let patients: Vec<String> = refs.iter().flat_map(|r| patient_ids_in(r)).collect();
        if patients.is_empty() {
            return Err(format!("{ty}/{id} names no patient"));
        }
        if let Some(other) = patients.iter().find(|p| p.as_str() != A) {
            return Err(format!("{ty}/{id} names Patient/{other}"));
        }
        Ok(())
    }

    /// Checks a 200 body holds only A's data; returns how many `match` entries it has.
    pub fn only_a(&self, body: &Value) -> Result<usize, String> {
        if body["resourceType"] != "Bundle" {
            self.is_a_or_shared(body)?;
            return Ok(1);
        }
        let mut matches = 0;
        for entry in body["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let res = &entry["resource"];
            if res.is_null() {
                continue;
            }
            if res["resourceType"] == "Bundle" {
                self.only_a(res)?;
            } else {
                self.is_a_or_shared(res)?;
            }
            if entry["search"]["mode"] != "include" {
                matches += 1;
            }
        }
        Ok(matches)
    }

    /// How a read of a missing `path` (under `/fhir`) is answered, with A's token.
    async fn missing(&self, path: &str) -> Resp {
        let mut cache = self.missing_cache.lock().await;
        if let Some(r) = cache.get(path) {
            return r.clone();
        }
        let r = self.get_a(path).await;
        cache.insert(path.to_owned(), r.clone());
        r
    }

    /// Every resource version in the store, and how many resources there are.
    pub fn snapshot(&self) -> (usize, BTreeMap<String, u32>) {
        let store = self.app.sandbox.store();
        let mut versions = BTreeMap::new();
        for t in portico_sandbox::search::types() {
            for id in store.ids(t.name) {
                if let Ok(r) = store.read(t.name, &id) {
                    versions.insert(format!("{}/{id}", t.name), r.version);
                }
            }
        }
        (store.len(), versions)
    }

    /// How many write requests (POST/PUT/PATCH/DELETE) reached the sandbox.
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

    /// Runs one attempt and checks it; `Err` says what went wrong.
    pub async fn check(&self, attempt: &Attempt) -> Result<Resp, String> {
        let before = attempt
            .unchanged
            .then(|| (self.snapshot(), self.upstream_writes()));
        let r = self.send(attempt).await;
        let mut problems = Vec::new();
        if let Some(((len, versions), writes)) = before {
            let ((len2, versions2), writes2) = (self.snapshot(), self.upstream_writes());
            if len != len2 || versions != versions2 {
                let changed: Vec<&String> = versions2
                    .iter()
                    .filter(|(k, v)| versions.get(*k) != Some(v))
                    .map(|(k, _)| k)
                    .take(5)
                    .collect();
                problems.push(format!("the EHR's data changed: {changed:?}"));
            }
            if writes2 != writes {
                problems.push(format!(
                    "{} write request(s) reached the EHR",
                    writes2 - writes
                ));
            }
        }
        if r.status >= 500 || r.status == 0 {
            problems.push("a server (or client) error instead of a decision".to_owned());
        }
        let json = r.json();
        match &attempt.expect {
            Expect::Forbidden => {
                if r.status != 403 {
                    problems.push("expected 403".to_owned());
                } else if json.as_ref().map(|j| j["issue"][0]["code"].clone())
                    != Some(Value::from("forbidden"))
                {
                    problems.push("expected an OperationOutcome with code forbidden".to_owned());
                }
            }
            Expect::Hidden(missing) => {
                let m = self.missing(missing).await;
                if r.status != 404 {
                    problems.push("expected 404".to_owned());
                }
                if m.status != 404 {
                    problems.push(format!("the missing {missing} answered {}", m.status));
                }
                let issue = |r: &Resp| r.json().map(|j| j["issue"].clone());
                if issue(&r) != issue(&m) || issue(&r).is_none() {
                    problems.push(format!(
                        "the OperationOutcome differs from a missing resource's: {}",
                        m.describe()
                    ));
                }
                let names = |r: &Resp| {
                    let mut n: Vec<String> = r
                        .headers
                        .iter()
                        .map(|(k, _)| k.clone())
                        .filter(|k| {
                            !matches!(k.as_str(), "date" | "x-request-id" | "content-length")
                        })
                        .collect();
                    n.sort();
                    n
                };
                if names(&r) != names(&m) {
                    problems.push(format!(
                        "headers differ from a missing resource's: {:?} vs {:?}",
                        names(&r),
                        names(&m)
                    ));
                }
            }
            Expect::OnlyA(min) => {
                if r.status != 200 {
                    problems.push("expected 200".to_owned());
                } else {
                    match json.as_ref().map(|j| self.only_a(j)) {
                        Some(Ok(n)) if n >= *min => {}
                        Some(Ok(n)) => problems
                            .push(format!("expected at least {min} of A's matches, got {n}")),
                        Some(Err(e)) => problems.push(e),
                        None => problems.push("the body is not JSON".to_owned()),
                    }
                }
            }
            Expect::DeniedOrOnlyA => {
                if r.status == 200 {
                    match json.as_ref().map(|j| self.only_a(j)) {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => problems.push(e),
                        None => problems.push("the body is not JSON".to_owned()),
                    }
                } else if !(400..500).contains(&r.status) {
                    problems.push("expected a 4xx or only A's data".to_owned());
                }
            }
            Expect::Status(allowed) => {
                if !allowed.contains(&r.status) {
                    problems.push(format!("expected one of {allowed:?}"));
                }
            }
            Expect::Unauthorized => {
                if r.status != 401 {
                    problems.push("expected 401".to_owned());
                }
                if !r
                    .header("www-authenticate")
                    .is_some_and(|h| h.starts_with("Bearer"))
                {
                    problems.push("expected WWW-Authenticate: Bearer".to_owned());
                }
                if json.as_ref().map(|j| j["resourceType"].clone())
                    != Some(Value::from("OperationOutcome"))
                {
                    problems.push("expected an OperationOutcome".to_owned());
                }
            }
            Expect::ResourceOfA => {
                if r.status != 200 {
                    problems.push("expected 200".to_owned());
                } else {
                    match json.as_ref() {
                        Some(j) if j["resourceType"] != "Bundle" => {
                            if let Err(e) = self.is_a_or_shared(j) {
                                problems.push(e);
                            }
                        }
                        _ => problems.push("expected one resource".to_owned()),
                    }
                }
            }
        }
        problems.extend(self.leaks(&r));
        if problems.is_empty() {
            Ok(r)
        } else {
            let path: String = attempt.path.chars().take(160).collect();
            Err(format!(
                "[{}] {} {path}: {} -- got {}",
                attempt.name,
                attempt.method,
                problems.join("; "),
                r.describe()
            ))
        }
    }

    /// Runs every attempt (in order) and returns the failures.
    pub async fn run_all(&self, attempts: &[Attempt]) -> Vec<String> {
        let mut failures = Vec::new();
        for a in attempts {
            if let Err(e) = self.check(a).await {
                failures.push(e);
            }
        }
        failures
    }
}

/// Prints a category's count and fails once, naming every failed row.
pub fn finish(category: &str, attempts: usize, failures: &[String]) {
    println!(
        "isolation/{category}: {attempts} attempts, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{category}: {} of {attempts} attempts failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The words of a string that could be ids: split at URL and list punctuation.
fn tokens_of(s: &str) -> impl Iterator<Item = &str> {
    s.split([
        '/', '?', '&', '=', ',', ' ', '|', ':', '#', '"', '\'', '(', ')', '[', ']',
    ])
    .filter(|t| !t.is_empty())
}

/// Calls `f(key, string)` for every string in `value`.
fn walk_strings(value: &Value, key: Option<&str>, f: &mut dyn FnMut(Option<&str>, &str)) {
    match value {
        Value::String(s) => f(key, s),
        Value::Array(items) => items.iter().for_each(|v| walk_strings(v, key, f)),
        Value::Object(map) => {
            for (k, v) in map {
                walk_strings(v, Some(k), f);
            }
        }
        _ => {}
    }
}

/// Removes what only echoes the request: Bundle `self` links (other links stay: they
/// must be opaque cursors) and OperationOutcome diagnostics.
fn strip_echoes(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let ty = map
                .get("resourceType")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if ty.as_deref() == Some("Bundle")
                && let Some(Value::Array(links)) = map.get_mut("link")
            {
                links.retain(|l| l["relation"] != "self");
            }
            if ty.as_deref() == Some("OperationOutcome")
                && let Some(Value::Array(issues)) = map.get_mut("issue")
            {
                for issue in issues {
                    if let Some(o) = issue.as_object_mut() {
                        o.remove("diagnostics");
                    }
                }
            }
            map.values_mut().for_each(strip_echoes);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_echoes),
        _ => {}
    }
}

/// Calls `f` on the value itself when it is a resource, and on every nested resource.
fn for_each_resource(value: &Value, f: &mut dyn FnMut(&Value)) {
    match value {
        Value::Object(map) => {
            if map.contains_key("resourceType") {
                f(value);
            }
            map.values().for_each(|v| for_each_resource(v, f));
        }
        Value::Array(items) => items.iter().for_each(|v| for_each_resource(v, f)),
        _ => {}
    }
}

/// One HTTP/1.1 request over a fresh socket, the request target sent exactly as given.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Resp {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf))
        .await
        .expect("the gateway answers")
        .expect("read");
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Resp {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut body = buf[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = body.as_slice();
        while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..pos])
                    .split(';')
                    .next()
                    .unwrap_or("0")
                    .trim(),
                16,
            )
            .unwrap_or(0);
            if size == 0 {
                break;
            }
            let start = pos + 2;
            out.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
            rest = &rest[(start + size + 2).min(rest.len())..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The total count of every category's table, for the count test.
#[tokio::test]
async fn at_least_150_distinct_attempts() {
    let fx = Fixture::new().await;
    let counts = [
        ("reads", reads::attempts(&fx).len() + reads::PREFIX_ATTEMPTS),
        ("search", search::attempts(&fx).len()),
        ("includes", includes::attempts(&fx).len()),
        ("paging", paging::ATTEMPTS),
        ("writes", writes::attempts(&fx).len()),
        ("bundles", bundles::attempts(&fx).len()),
        ("paths", paths::attempts(&fx).len()),
        (
            "tokens",
            tokens::attempts(&fx).len() + tokens::KEYED_ROWS + tokens::FORGED_ISSUER_ATTEMPTS,
        ),
        ("scopes", scopes::ATTEMPTS),
        ("mentions", mentions::ATTEMPTS),
    ];
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    for (category, n) in counts {
        println!("isolation/{category}: {n}");
    }
    println!("isolation: {total} attempts by patient A against patient B");
    assert!(total >= 150, "only {total} attempts");
    // Every name is distinct: a row is one attempt, not a repeat.
    let mut names = HashSet::new();
    for a in reads::attempts(&fx)
        .into_iter()
        .chain(search::attempts(&fx))
        .chain(includes::attempts(&fx))
        .chain(writes::attempts(&fx))
        .chain(bundles::attempts(&fx))
        .chain(paths::attempts(&fx))
        .chain(tokens::attempts(&fx))
    {
        assert!(
            names.insert(a.name.clone()),
            "duplicate row name {}",
            a.name
        );
    }
}

/// The suite's own check: against the bare EHR (which serves anyone's data to any of its
/// tokens) most attempts must fail, or they would not notice a gateway that checks
/// nothing. Each category has to catch most of its rows.
#[tokio::test]
async fn the_suite_catches_an_unguarded_ehr() {
    let fx = Fixture::unguarded().await;
    let categories = [
        ("reads", reads::attempts(&fx), 0.9),
        ("search", search::attempts(&fx), 0.7),
        ("includes", includes::attempts(&fx), 0.8),
        ("writes", writes::attempts(&fx), 0.6),
        ("bundles", bundles::attempts(&fx), 0.3),
        // Path tricks exploit a gateway and an EHR parsing one URL differently; the bare
        // EHR has no second parser, so only the tricks it answers with data count.
        ("paths", paths::attempts(&fx), 0.1),
    ];
    let mut weak = Vec::new();
    for (category, rows, share) in categories {
        let caught = fx.run_all(&rows).await.len();
        println!(
            "isolation/self-test: {category}: {caught} of {} attempts fail against the bare EHR",
            rows.len()
        );
        if (caught as f64) < share * rows.len() as f64 {
            weak.push(format!("{category}: only {caught} of {}", rows.len()));
        }
    }
    assert!(
        weak.is_empty(),
        "categories that would not notice a missing gateway: {weak:?}"
    );
}
