//! Crash safety: the real `portico` binary, killed with SIGKILL in the middle of a stream
//! of portal writes, restarted on the same port and audit file, and every write that got
//! no answer retried with its key.
//!
//! The gateway runs as a separate process (`portico serve --config <tmp>.toml`) in front
//! of an in-process sandbox, configured the way `portico demo` configures it (the system
//! client's secret from an environment variable). The binary is built with the cargo
//! that runs the tests (a no-op when it is fresh), so that it is this tree's. Writes are
//! bookings, refills and new threads (each with distinct content and key), several at
//! once, the EHR slowed a little so that some are in flight when the gateway dies.
//!
//! What must hold afterwards, read from the sandbox's store and the audit file:
//! - every key ends with exactly one effect, and the retried answer names it;
//! - no business identifier is on two resources (no duplicate from the crash or the
//!   retries, although the restarted gateway has forgotten every key);
//! - every answer the client received, before or after the crash, has an audit record on
//!   disk with its `X-Request-Id`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use portico_sandbox::{FaultConfig, FaultPhase, Sandbox};
use serde_json::{Value, json};

use crate::support::{client_secret, http_client, repo_path, sandbox};

const PATIENT: &str = "pat-1";
const SECRET_ENV: &str = "PORTICO_CRASH_TEST_SYSTEM_SECRET";
/// Writes in the stream.
const WRITES: usize = 40;
/// Writes in flight at once.
const CONCURRENCY: usize = 4;
/// Answers received before the gateway is killed.
const KILL_AFTER: usize = 12;
/// The gateway's portal deadline, and how long the client waits for any answer.
const DEADLINE: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// The `portico` binary of this tree, in the profile of the test binary: the one next to
/// the test binary when it is newer than every source of the gateway (`cargo test
/// --workspace --all-targets` builds it in the same run, with the workspace's features),
/// else built now by the cargo running the tests. (Building it with `-p portico` alone
/// resolves other features than the workspace build and would recompile the dependency
/// tree for nothing.)
fn portico_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/integration-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lies in target/<profile>/deps")
        .to_owned();
    let binary = profile_dir.join(format!("portico{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
    if built.is_some_and(|built| newest_source(&repo_path("")) <= built) {
        return binary;
    }
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", "portico", "--bin", "portico"])
        .current_dir(repo_path(""));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(
        status.success(),
        "cargo build -p portico --bin portico failed"
    );
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

/// When the gateway's sources last changed: the newest of the workspace manifests and
/// of every file under `crates/` and `config/`.
fn newest_source(root: &Path) -> std::time::SystemTime {
    fn walk(path: &Path, newest: &mut std::time::SystemTime) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), newest);
            }
        } else if let Ok(modified) = meta.modified() {
            *newest = (*newest).max(modified);
        }
    }
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for part in ["Cargo.toml", "Cargo.lock", "crates", "config"] {
        walk(&root.join(part), &mut newest);
    }
    newest
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The gateway's configuration file, for the sandbox, with its audit file in `dir`.
fn config_file(sandbox: &Sandbox, dir: &Path, port: u16) -> PathBuf {
    let base = sandbox.base_url();
    let fhir = sandbox.fhir_base();
    let audit = dir.join("audit.jsonl");
    let toml = format!(
        r#"[server]
listen = "127.0.0.1:{port}"

[log]
level = "warn"

[ehr]
profile = "generic-r4"

[portal]
deadline_ms = {deadline}
payment_processor = "sandbox"

[upstream]
base_url = "{fhir}"
request_timeout = "5s"

[upstream.auth]
type = "client_credentials"
token_url = "{base}/auth/token"
client_id = "portico-system"
client_secret_env = "{SECRET_ENV}"
scope = "system/*.read system/*.write"

[auth]
issuer = "{base}/auth"

[audit]
sinks = ["file"]
path = "{audit}"
# The guarantee under test: a record is written (reached the OS) before its answer
# leaves, so a killed process loses none.
durability = "written"
on_failure = "refuse"
"#,
        deadline = DEADLINE.as_millis(),
        audit = audit.display(),
    );
    let path = dir.join("portico.toml");
    std::fs::write(&path, toml).expect("config written");
    path
}

/// A running `portico serve`; killed (SIGKILL) when dropped.
struct Gateway {
    child: Child,
    log: PathBuf,
}

impl Gateway {
    fn start(binary: &Path, config: &Path, secret: &str, dir: &Path, run: usize) -> Gateway {
        let log = dir.join(format!("gateway-{run}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(config)
            .env(SECRET_ENV, secret)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("portico starts");
        Gateway { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/healthz` answers (or the process exits).
    async fn ready(&mut self, http: &reqwest::Client, base: &str) {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("portico exited with {status}:\n{}", self.log());
            }
            let probe = http
                .get(format!("{base}/healthz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("portico did not become ready:\n{}", self.log());
    }

    /// SIGKILL: no shutdown, no flush, nothing the process could still do.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One write of the stream.
#[derive(Debug, Clone)]
struct Planned {
    key: String,
    kind: &'static str,
    path: String,
    body: Value,
    /// What only this write carries: a slot, a prescription or a topic.
    target: String,
}

/// What the client saw of one attempt.
#[derive(Debug, Clone)]
struct Seen {
    status: u16,
    body: Value,
    request_id: Option<String>,
}

async fn attempt(http: &reqwest::Client, base: &str, token: &str, write: &Planned) -> Option<Seen> {
    let response = http
        .post(format!("{base}/api/v1{}", write.path))
        .bearer_auth(token)
        .header("idempotency-key", &write.key)
        .json(&write.body)
        .timeout(CLIENT_TIMEOUT)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response.bytes().await.ok()?;
    Some(Seen {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        request_id,
    })
}

/// Free future Slots, soonest first.
fn free_slots(sandbox: &Sandbox) -> Vec<String> {
    let store = sandbox.store();
    let soon = Utc::now() + chrono::TimeDelta::days(1);
    let mut free: Vec<(String, String)> = store
        .ids("Slot")
        .into_iter()
        .filter_map(|id| store.read("Slot", &id).ok()?.body)
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(|s| s["status"] == "free")
        .filter_map(|s| {
            let start = s["start"].as_str()?;
            let id = s["id"].as_str()?;
            let at = DateTime::parse_from_rfc3339(start).ok()?;
            (at > soon).then(|| (start.to_owned(), id.to_owned()))
        })
        .collect();
    free.sort();
    free.into_iter().map(|(_, id)| id).collect()
}

fn stored(sandbox: &Sandbox, ty: &str) -> Vec<Value> {
    let store = sandbox.store();
    store
        .ids(ty)
        .into_iter()
        .filter_map(|id| store.read(ty, &id).ok()?.body)
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// The stream: bookings, refills of prescriptions made for it, and new threads.
fn plan(sandbox: &Sandbox) -> Vec<Planned> {
    let mut slots = free_slots(sandbox).into_iter();
    let template = stored(sandbox, "MedicationRequest")
        .into_iter()
        .find(|m| m["id"] == "mr-1-1")
        .expect("mr-1-1");
    let team = stored(sandbox, "CareTeam")
        .into_iter()
        .find(|t| t["subject"]["reference"] == format!("Patient/{PATIENT}"))
        .expect("a care team");
    let member = team["participant"][0]["member"]["reference"].clone();
    (0..WRITES)
        .map(|n| match n % 3 {
            0 => {
                let slot = slots.next().expect("enough free slots");
                Planned {
                    key: format!("crash-book-{n}"),
                    kind: "book",
                    path: "/appointments".to_owned(),
                    body: json!({"slot_id": slot, "reason": format!("crash {n}")}),
                    target: slot,
                }
            }
            1 => {
                let id = format!("mr-crash-{n}");
                let mut prescription = template.clone();
                prescription["id"] = json!(id);
                prescription.as_object_mut().unwrap().remove("meta");
                sandbox
                    .store()
                    .update("MedicationRequest", &id, prescription, None)
                    .expect("prescription stored");
                Planned {
                    key: format!("crash-refill-{n}"),
                    kind: "refill",
                    path: format!("/medications/{id}/refill-requests"),
                    body: json!({"note": format!("crash {n}")}),
                    target: id,
                }
            }
            _ => {
                let topic = format!("crash thread {n}");
                Planned {
                    key: format!("crash-thread-{n}"),
                    kind: "thread",
                    path: "/messages/threads".to_owned(),
                    body: json!({"recipient": member, "topic": topic, "text": format!("crash {n}")}),
                    target: topic,
                }
            }
        })
        .collect()
}

/// The ids of a write's effect in the store (a thread: its header, with its first
/// message once `whole`; never two).
fn effects(sandbox: &Sandbox, write: &Planned, whole: bool) -> Result<Vec<String>, String> {
    let ids = |v: Vec<Value>| -> Vec<String> {
        v.iter()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect()
    };
    match write.kind {
        "book" => Ok(ids(stored(sandbox, "Appointment")
            .into_iter()
            .filter(|a| a["status"] == "booked")
            .filter(|a| a["slot"][0]["reference"] == format!("Slot/{}", write.target))
            .collect())),
        "refill" => Ok(ids(stored(sandbox, "Task")
            .into_iter()
            .filter(|t| t["focus"]["reference"] == format!("MedicationRequest/{}", write.target))
            .collect())),
        _ => {
            let all = stored(sandbox, "Communication");
            let headers = ids(all
                .iter()
                .filter(|c| c["topic"]["text"] == write.target.as_str())
                .filter(|c| c.get("partOf").is_none())
                .cloned()
                .collect());
            for header in &headers {
                let parent = format!("Communication/{header}");
                let messages = all
                    .iter()
                    .filter(|c| c["partOf"][0]["reference"] == parent.as_str())
                    .count();
                if messages > 1 || (whole && messages != 1) {
                    return Err(format!("thread {header} has {messages} messages"));
                }
            }
            Ok(headers)
        }
    }
}

/// The business identifiers (`urn:ietf:rfc:3986`) on the resources the gateway created,
/// with how many resources carry each.
fn business_identifiers(sandbox: &Sandbox) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for ty in ["Appointment", "Task", "Communication"] {
        for resource in stored(sandbox, ty) {
            for identifier in resource["identifier"].as_array().into_iter().flatten() {
                if identifier["system"] == "urn:ietf:rfc:3986"
                    && let Some(value) = identifier["value"].as_str()
                {
                    *seen.entry(value.to_owned()).or_insert(0) += 1;
                }
            }
        }
    }
    seen
}

fn audited_request_ids(audit: &Path) -> HashSet<String> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_gateway_killed_mid_stream_loses_no_write_and_duplicates_none() {
    let binary = tokio::task::spawn_blocking(portico_binary)
        .await
        .expect("build task");
    let sandbox = sandbox().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = config_file(&sandbox, dir.path(), port);
    let secret = client_secret(&sandbox, "portico-system");
    let http = http_client();
    let token = sandbox.auth().issue_access_token(
        "demo-app",
        "openid fhirUser launch/patient patient/*.rs patient/*.cud",
        Some(PATIENT),
    );
    let writes = plan(&sandbox);

    let mut gateway = Gateway::start(&binary, &config, &secret, dir.path(), 1);
    gateway.ready(&http, &base).await;
    // Every create answers late, after the EHR applied it: when the gateway dies, the
    // writes in flight are mostly applied and unanswered (a thread's header without its
    // message, a booking the gateway never heard of).
    sandbox
        .faults()
        .set(FaultConfig {
            latency_ms: 250,
            methods: vec!["POST".to_owned()],
            phase: Some(FaultPhase::After),
            ..FaultConfig::default()
        })
        .expect("fault configuration");

    let answered = Arc::new(AtomicUsize::new(0));
    let killer = {
        let answered = answered.clone();
        async move {
            let until = Instant::now() + Duration::from_secs(120);
            while answered.load(Ordering::SeqCst) < KILL_AFTER && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            gateway.kill();
            gateway
        }
    };
    let stream = futures::stream::iter(writes.iter().cloned())
        .map(|write| {
            let (http, base, token, answered) =
                (http.clone(), base.clone(), token.clone(), answered.clone());
            async move {
                let seen = attempt(&http, &base, &token, &write).await;
                if seen.is_some() {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                (write, seen)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>();
    let (first, mut killed) = tokio::join!(stream, killer);
    let unanswered: Vec<&Planned> = first
        .iter()
        .filter(|(_, seen)| seen.is_none())
        .map(|(w, _)| w)
        .collect();
    assert!(
        !unanswered.is_empty(),
        "the kill came after every answer: nothing was tested"
    );
    let before_kill = WRITES - unanswered.len();
    // Nothing the EHR holds is duplicated, even before any retry; and the crash caught
    // writes that the EHR applied (wholly or in part) but nobody was told about.
    let mut in_doubt = 0;
    for write in &writes {
        let found =
            effects(&sandbox, write, false).unwrap_or_else(|e| panic!("{}: {e}", write.key));
        assert!(found.len() <= 1, "{}: {found:?} after the crash", write.key);
        if !found.is_empty() && unanswered.iter().any(|w| w.key == write.key) {
            in_doubt += 1;
        }
    }
    assert!(
        in_doubt > 0,
        "no write was applied and unanswered when the gateway died: nothing was tested"
    );

    // The same port, the same audit file; the gateway has forgotten every key.
    sandbox.faults().clear();
    let mut gateway = Gateway::start(&binary, &config, &secret, dir.path(), 2);
    gateway.ready(&http, &base).await;
    let mut last: HashMap<String, Seen> = HashMap::new();
    let mut received: Vec<Seen> = Vec::new();
    for (write, seen) in &first {
        if let Some(seen) = seen {
            received.push(seen.clone());
            last.insert(write.key.clone(), seen.clone());
        }
    }
    // Every write that got no answer (or a failure) is retried with its key.
    for write in &writes {
        if last.get(&write.key).is_some_and(|s| s.status == 201) {
            continue;
        }
        let seen = attempt(&http, &base, &token, write)
            .await
            .unwrap_or_else(|| panic!("{}: no answer after the restart", write.key));
        received.push(seen.clone());
        last.insert(write.key.clone(), seen);
    }

    // Every key: exactly one effect, named by its (last) answer.
    let mut problems = Vec::new();
    for write in &writes {
        let seen = &last[&write.key];
        match effects(&sandbox, write, true) {
            Ok(found) if found.len() == 1 && seen.status == 201 => {
                if seen.body["id"] != found[0].as_str() {
                    problems.push(format!(
                        "{}: the answer names {}, the EHR holds {}",
                        write.key, seen.body["id"], found[0]
                    ));
                }
            }
            Ok(found) => problems.push(format!(
                "{}: {} effects, answer {} {}",
                write.key,
                found.len(),
                seen.status,
                seen.body
            )),
            Err(e) => problems.push(format!("{}: {e}", write.key)),
        }
    }
    // One resource per business identifier.
    for (identifier, count) in business_identifiers(&sandbox) {
        if count > 1 {
            problems.push(format!("{count} resources carry {identifier}"));
        }
    }
    // Every answer received has its audit record on disk, the killed process's too.
    killed.kill();
    gateway.kill();
    let audited = audited_request_ids(&dir.path().join("audit.jsonl"));
    for seen in &received {
        match &seen.request_id {
            None => problems.push(format!("an answer ({}) without X-Request-Id", seen.status)),
            Some(id) if !audited.contains(id) => problems.push(format!(
                "no audit record for request {id} (answered {} {})",
                seen.status, seen.body["code"]
            )),
            Some(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{} answered before the kill, {} retried:\n{}\n--- first gateway:\n{}\n--- second gateway:\n{}",
        before_kill,
        unanswered.len(),
        problems.join("\n"),
        killed.log(),
        gateway.log()
    );
}
