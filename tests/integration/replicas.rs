//! Two gateway replicas in front of one sandbox, sharing state through one real
//! `redis-server` (`[redis] url`), as two pods behind a load balancer: a login started
//! on one completes on the other, sessions and logouts are everyone's, a refresh
//! spends the rotating refresh token once, an idempotency key is honoured whichever
//! replica the retry reaches; and when Redis goes away, what needs it answers 503.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use portico::config::Config;
use portico_redis::testing::RedisServer;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::support::{ApiAnswer, TestApp, http_client, sandbox};

const SESSION_COOKIE: &str = "portico_session";

/// The shared-state settings of every replica of one fleet.
struct Shared {
    redis: RedisServer,
    key_dir: tempfile::TempDir,
    prefix: String,
}

impl Shared {
    fn start() -> Shared {
        let key_dir = tempfile::tempdir().unwrap();
        std::fs::write(key_dir.path().join("key"), "42".repeat(32)).unwrap();
        Shared {
            redis: RedisServer::start(),
            key_dir,
            prefix: format!("fleet-{}:", rand::random::<u32>()),
        }
    }

    fn apply(&self, config: &mut Config) {
        config.redis.url = Some(self.redis.url());
        config.redis.encryption_key_file = Some(self.key_dir.path().join("key"));
        config.redis.key_prefix = self.prefix.clone();
    }
}

/// Replica `a`, then `b` in front of the same sandbox, both reached by browsers at
/// `a`'s public URL (one origin, as behind a load balancer); `shared` set: through
/// Redis, unset: each with its own memory.
async fn fleet(
    shared: Option<&Shared>,
    tweak: impl Fn(&mut Config) + Clone,
    token_lifetime: Option<Duration>,
) -> (TestApp, TestApp) {
    let sandbox = sandbox().await;
    if let Some(lifetime) = token_lifetime {
        sandbox.auth().set_token_lifetime(lifetime);
    }
    let t = tweak.clone();
    let a = TestApp::spawn_with(sandbox, |config, _| {
        if let Some(shared) = shared {
            shared.apply(config);
        }
        t(config);
    })
    .await;
    let public = url::Url::parse(&a.url("")).unwrap();
    let b = a
        .spawn_replica(|config| {
            if let Some(shared) = shared {
                shared.apply(config);
            }
            config.server.public_url = Some(public);
            tweak(config);
        })
        .await;
    (a, b)
}

/// A browser: one cookie jar for the site, whichever replica answers.
#[derive(Default)]
struct Browser {
    jar: HashMap<String, String>,
}

struct Reply {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.json()["code"], code, "{}", self.body);
    }
}

impl Browser {
    async fn send(&mut self, request: reqwest::RequestBuilder) -> Reply {
        let mut request = request.build().unwrap();
        let to_gateway = !request.url().path().starts_with("/auth/authorize");
        if to_gateway && !self.jar.is_empty() {
            let header = self
                .jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            request
                .headers_mut()
                .insert(COOKIE, header.parse().unwrap());
        }
        let response = http_client().execute(request).await.unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        if to_gateway {
            for line in response.headers().get_all(SET_COOKIE) {
                let line = line.to_str().unwrap();
                let (name, value) = line.split(';').next().unwrap().split_once('=').unwrap();
                if value.is_empty() || line.contains("Max-Age=0") {
                    self.jar.remove(name);
                } else {
                    self.jar.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        Reply {
            status,
            location,
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, url: &str) -> Reply {
        self.send(http_client().get(url)).await
    }

    /// `/auth/login` on `start`; the sandbox approves `patient` and sends the browser to
    /// the callback, which `finish` answers. Returns the callback's reply.
    async fn login(&mut self, start: &TestApp, finish: &TestApp, patient: &str) -> Reply {
        let reply = self.get(&start.url("/auth/login")).await;
        assert_eq!(reply.status, 303, "{}", reply.body);
        let authorize = reply.location.unwrap();
        let reply = self.get(&format!("{authorize}&login_hint={patient}")).await;
        assert_eq!(reply.status, 302, "{}", reply.body);
        // The load balancer sends the callback to the other replica.
        let callback = reply
            .location
            .unwrap()
            .replacen(&start.url(""), &finish.url(""), 1);
        self.get(&callback).await
    }
}

#[tokio::test]
async fn a_login_started_on_one_replica_completes_on_the_other_and_logout_ends_it_everywhere() {
    let shared = Shared::start();
    let (a, b) = fleet(Some(&shared), |_| {}, None).await;
    let mut browser = Browser::default();
    let callback = browser.login(&a, &b, "pat-1").await;
    assert_eq!(callback.status, 303, "{}", callback.body);
    let cookie = browser.jar[SESSION_COOKIE].clone();

    // The session made on b is valid on a, and on b.
    let on_a = browser.get(&a.url("/auth/session")).await;
    assert_eq!(on_a.status, 200, "{}", on_a.body);
    assert_eq!(on_a.json()["patient"], "pat-1");
    let csrf = on_a.json()["csrf_token"].as_str().unwrap().to_owned();
    let on_b = browser.get(&b.url("/auth/session")).await;
    assert_eq!(on_b.status, 200, "{}", on_b.body);
    assert_eq!(on_b.json()["csrf_token"], csrf.as_str());

    // The portal API on either replica, with the session.
    let me = browser.get(&b.url("/api/v1/me")).await;
    assert_eq!(me.status, 200, "{}", me.body);

    // Logout on a ends the session on b too.
    let logout = browser
        .send(
            http_client()
                .post(a.url("/auth/logout"))
                .header("x-csrf-token", &csrf)
                .header("origin", a.url("")),
        )
        .await;
    assert_eq!(logout.status, 204, "{}", logout.body);
    browser.jar.insert(SESSION_COOKIE.to_owned(), cookie);
    browser
        .get(&b.url("/auth/session"))
        .await
        .assert_problem(401, "session_expired");

    // A callback is taken once, wherever it is replayed.
    let mut other = Browser::default();
    let reply = other.get(&a.url("/auth/login")).await;
    let authorize = reply.location.unwrap();
    let reply = other.get(&format!("{authorize}&login_hint=pat-2")).await;
    let callback = reply.location.unwrap();
    let login_cookie = other.jar.clone();
    assert_eq!(other.get(&callback).await.status, 303);
    other.jar = login_cookie;
    other
        .get(&callback.replacen(&a.url(""), &b.url(""), 1))
        .await
        .assert_problem(400, "login_not_in_progress");
}

/// The control: without Redis, each replica knows only its own logins.
#[tokio::test]
async fn without_shared_state_a_login_cannot_cross_replicas() {
    let (a, b) = fleet(None, |_| {}, None).await;
    let mut browser = Browser::default();
    browser
        .login(&a, &b, "pat-1")
        .await
        .assert_problem(400, "login_not_in_progress");
}

#[tokio::test]
async fn replicas_refreshing_one_session_at_once_spend_its_refresh_token_once() {
    let shared = Shared::start();
    let (a, b) = fleet(
        Some(&shared),
        |config| config.auth.leeway_seconds = 0,
        Some(Duration::from_secs(3)),
    )
    .await;
    let mut browser = Browser::default();
    assert_eq!(browser.login(&a, &b, "pat-1").await.status, 303);
    let cookie = format!("{SESSION_COOKIE}={}", browser.jar[SESSION_COOKIE]);
    for round in 0..2 {
        // Every token issued so far has expired: each request must see a refreshed one.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let requests: Vec<_> = (0..8)
            .map(|i| {
                let url = if i % 2 == 0 { &a } else { &b }.url("/auth/session");
                let request = http_client().get(url).header(COOKIE, cookie.clone());
                tokio::spawn(async move {
                    let response = request.send().await.unwrap();
                    (response.status().as_u16(), response.text().await.unwrap())
                })
            })
            .collect();
        for request in requests {
            let (status, body) = request.await.unwrap();
            // The sandbox revokes the whole login when a spent refresh token comes
            // back: a second refresh with the same token would show here as a 401.
            assert_eq!(status, 200, "round {round}: {body}");
        }
    }
}

async fn free_slot(app: &TestApp, token: &str) -> Vec<String> {
    let answer = app.api_get(token, "/appointments/slots").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn book(app: &TestApp, token: &str, slot: &str, key: Option<&str>) -> ApiAnswer {
    app.api_post(
        token,
        "/appointments",
        &json!({"slot_id": slot, "reason": "check-up"}),
        key,
    )
    .await
}

#[tokio::test]
async fn an_idempotency_key_holds_across_replicas() {
    let shared = Shared::start();
    let (a, b) = fleet(Some(&shared), |_| {}, None).await;
    let token = a.portal_token("pat-1");
    let slots = free_slot(&a, &token).await;
    let posts = || a.sandbox.faults().requests_for("POST", "Appointment");
    let before = posts();
    let first = book(&a, &token, &slots[0], Some("k-1")).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    // The retry reaches the other replica: replayed, not run again.
    let retry = book(&b, &token, &slots[0], Some("k-1")).await;
    assert_eq!(retry.status, 201, "{:?}", retry.body);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(retry.body, first.body);
    assert_eq!(posts() - before, 1, "one upstream create");
    // The same key for another request, on the other replica.
    let reused = book(&b, &token, &slots[1], Some("k-1")).await;
    assert_eq!(reused.status, 422, "{:?}", reused.body);
    assert_eq!(reused.code(), "idempotency_key_reused");

    // While a runs a request, b refuses the same key.
    a.sandbox.faults().set_latency(Duration::from_millis(1500));
    let running = {
        let (url, token, slot) = (
            a.url("/api/v1/appointments"),
            token.clone(),
            slots[1].clone(),
        );
        tokio::spawn(async move {
            http_client()
                .post(url)
                .bearer_auth(token)
                .header("idempotency-key", "k-2")
                .json(&json!({"slot_id": slot, "reason": "check-up"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let concurrent = book(&b, &token, &slots[1], Some("k-2")).await;
    assert_eq!(concurrent.status, 409, "{:?}", concurrent.body);
    assert_eq!(concurrent.code(), "idempotency_in_progress");
    assert_eq!(running.await.unwrap(), 201);
    a.sandbox.faults().set_latency(Duration::ZERO);
}

#[tokio::test]
async fn without_redis_what_needs_shared_state_is_503_and_comes_back_with_it() {
    let mut shared = Shared::start();
    let (a, b) = fleet(Some(&shared), |_| {}, None).await;
    let token = a.portal_token("pat-1");
    let slots = free_slot(&a, &token).await;
    let mut browser = Browser::default();
    assert_eq!(browser.login(&a, &b, "pat-1").await.status, 303);

    shared.redis.stop();
    let started = Instant::now();
    let keyed = book(&a, &token, &slots[0], Some("k-down")).await;
    assert_eq!(keyed.status, 503, "{:?}", keyed.body);
    assert_eq!(keyed.code(), "idempotency_unavailable");
    assert!(keyed.headers.contains_key("retry-after"));
    // Without a key, the slot's lock cannot be taken: nothing is attempted either.
    let unkeyed = book(&b, &token, &slots[0], None).await;
    assert_eq!(unkeyed.status, 503, "{:?}", unkeyed.body);
    assert_eq!(unkeyed.code(), "state_unavailable");
    browser
        .get(&a.url("/auth/session"))
        .await
        .assert_problem(503, "session_store_unavailable");
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    assert_eq!(a.sandbox.faults().requests_for("POST", "Appointment"), 0);
    // What needs no shared state still works.
    let reads = a.api_get(&token, "/appointments").await;
    assert_eq!(reads.status, 200, "{:?}", reads.body);
    // The replica stays in the load balancer (every replica shares this Redis), and
    // says what is failing; strictly, it is not ready.
    let ready: Value = http_client()
        .get(a.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(
        ready["checks"]["shared_state"]["status"], "failing",
        "{ready}"
    );
    let strict = http_client()
        .get(a.url("/readyz?strict=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(strict.status(), 503);

    // Redis comes back (empty: nothing was persisted); the same replicas use it.
    shared.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let booked = loop {
        let answer = book(&b, &token, &slots[0], Some("k-up")).await;
        if answer.status != 503 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(booked.status, 201, "{:?}", booked.body);
    assert_eq!(browser.login(&b, &a, "pat-1").await.status, 303);
    assert_eq!(browser.get(&a.url("/auth/session")).await.status, 200);
}

/// Read your writes across the fleet: B has the patient's referrals cached (a long
/// TTL), A takes a new referral; B's next read shows it — and without shared cache
/// invalidation it would not (the control).
#[tokio::test]
async fn a_write_on_one_replica_is_seen_by_the_next_read_on_another() {
    let shared = Shared::start();
    let long_ttl = |config: &mut Config| config.cache.patient_ttl = Duration::from_secs(600);
    for with_redis in [true, false] {
        let (a, b) = fleet(with_redis.then_some(&shared), long_ttl, None).await;
        let portal = a.portal_token("pat-1");
        let fhir = a.patient_token("pat-1", "launch/patient patient/*.rs");
        let referrals = |app: &TestApp| {
            let request = app
                .http
                .get(app.url("/fhir/ServiceRequest?patient=pat-1&_count=100"))
                .bearer_auth(&fhir);
            async move {
                let bundle: Value = request.send().await.unwrap().json().await.unwrap();
                bundle["entry"].as_array().map_or(0, Vec::len)
            }
        };
        if with_redis {
            // Both answer from their mirror of the shared generations: B's read after
            // A's write leaves B without asking Redis.
            for app in [&a, &b] {
                mirrored(app).await;
            }
        }
        let before = referrals(&b).await;
        assert_eq!(referrals(&b).await, before, "served from B's cache");
        let made = a
            .api_post(
                &portal,
                "/referrals",
                &json!({"specialty": "394579002", "reason": "palpitations"}),
                Some(&format!("fleet-ryw-{with_redis}")),
            )
            .await;
        assert_eq!(made.status, 201, "{:?}", made.body);
        let after = referrals(&b).await;
        if with_redis {
            assert_eq!(after, before + 1, "B sees A's write at once");
        } else {
            assert_eq!(
                after, before,
                "control: without Redis, B serves its stale entry"
            );
        }
    }
}

/// Waits until `app`'s `/metrics` says it checks cached reads against its mirror.
async fn mirrored(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http_client()
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics
            .lines()
            .any(|line| line == "portico_cache_generations_mirrored 1")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not mirrored within 10 s:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
