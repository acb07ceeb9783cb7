//! The portal login (BFF) under `/auth`, driven like a browser: authorization code +
//! PKCE at the sandbox's authorization server, a server-side session behind an HttpOnly
//! cookie, CSRF on cookie-authenticated writes, refresh, logout.
//!
//! The "browser" here keeps its own cookie jar for the gateway so that the tests can
//! read every `Set-Cookie`, replay old cookies and forge requests.

use std::collections::HashMap;
use std::time::Duration;

use portico_sandbox::auth::{ClientRegistration, GrantType, PORTAL_CLIENT};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::Value;

use crate::support::{TestApp, http_client, sandbox};

const SESSION_COOKIE: &str = "portico_session";
const LOGIN_COOKIE: &str = "portico_session_login";

/// A browser talking to one gateway: a cookie jar, no redirects followed.
struct Browser {
    http: reqwest::Client,
    gateway: String,
    jar: HashMap<String, String>,
    /// Every `Set-Cookie` the gateway ever sent.
    set_cookies: Vec<String>,
    /// Every response body the gateway ever sent.
    bodies: Vec<String>,
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .expect("a Location header")
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// Asserts a problem+json refusal with this status and code.
    fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.headers[CONTENT_TYPE], "application/problem+json",
            "{}",
            self.body
        );
        assert_eq!(self.json()["code"], code, "{}", self.body);
    }
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            http: http_client(),
            gateway: app.url(""),
            jar: HashMap::new(),
            set_cookies: Vec::new(),
            bodies: Vec::new(),
        }
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.jar.get(name).cloned()
    }

    /// Sends a request; the gateway's cookies go along and come back into the jar.
    async fn send(&mut self, request: reqwest::RequestBuilder) -> Reply {
        let mut request = request.build().unwrap();
        let to_gateway = request.url().as_str().starts_with(&self.gateway);
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
        let res = self.http.execute(request).await.unwrap();
        let reply = Reply {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: res.text().await.unwrap(),
        };
        if to_gateway {
            for line in reply.set_cookies() {
                self.set_cookies.push(line.clone());
                let pair = line.split(';').next().unwrap();
                let (name, value) = pair.split_once('=').unwrap();
                if value.is_empty() || line.contains("Max-Age=0") {
                    self.jar.remove(name);
                } else {
                    self.jar.insert(name.to_owned(), value.to_owned());
                }
            }
            self.bodies.push(reply.body.clone());
        }
        reply
    }

    async fn get(&mut self, url: &str) -> Reply {
        let request = self.http.get(url);
        self.send(request).await
    }

    /// `/auth/login`, then the sandbox's `/authorize` (auto-approved for `patient`):
    /// returns the authorize URL the gateway chose and the callback URL the sandbox
    /// sent the browser back to (not yet followed).
    async fn start_login(&mut self, app: &TestApp, patient: &str) -> (url::Url, String) {
        let reply = self
            .send(
                self.http
                    .get(app.url("/auth/login"))
                    .query(&[("return_to", "/portal/home?tab=1")]),
            )
            .await;
        assert_eq!(reply.status, 303, "{}", reply.body);
        let authorize = url::Url::parse(&reply.location()).unwrap();
        let approved = format!("{authorize}&login_hint={patient}");
        let reply = self.get(&approved).await;
        assert_eq!(reply.status, 302, "{}", reply.body);
        (authorize, reply.location())
    }

    /// A complete login as `patient`; returns the `/auth/session` document.
    async fn login(&mut self, app: &TestApp, patient: &str) -> Value {
        let (_, callback) = self.start_login(app, patient).await;
        let reply = self.get(&callback).await;
        assert_eq!(reply.status, 303, "{}", reply.body);
        let session = self.get(&app.url("/auth/session")).await;
        assert_eq!(session.status, 200, "{}", session.body);
        session.json()
    }

    async fn logout(&mut self, app: &TestApp, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.http.post(app.url("/auth/logout"));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.send(request).await
    }
}

fn query(url: &url::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// Whether `text` holds something shaped like a JWT (`eyJ...` base64url, then a dot).
fn looks_like_jwt(text: &str) -> bool {
    text.match_indices("eyJ").any(|(i, _)| {
        let rest = &text[i..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        rest[end..].starts_with('.') && end > 10
    })
}

/// Tokens never reach the browser.
fn assert_no_token(text: &str) {
    assert!(!looks_like_jwt(text), "a token leaked: {text}");
    for word in ["access_token", "refresh_token", "id_token"] {
        assert!(!text.contains(word), "a token field leaked: {text}");
    }
}

#[tokio::test]
async fn browser_login_creates_a_server_side_session() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    let (authorize, callback) = browser.start_login(&app, "pat-1").await;

    // The authorization request: the sandbox's endpoint, the portal client, PKCE S256,
    // state, nonce (openid is requested) and the EHR's FHIR base as audience.
    assert!(
        authorize
            .as_str()
            .starts_with(&format!("{}/auth/authorize?", app.sandbox.base_url())),
        "{authorize}"
    );
    let q = query(&authorize);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], PORTAL_CLIENT);
    assert_eq!(q["redirect_uri"], app.url("/auth/callback"));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(q["state"].len() >= 20);
    assert!(q["nonce"].len() >= 20);
    assert_eq!(q["aud"], app.sandbox.fhir_base());
    let scopes: Vec<&str> = q["scope"].split(' ').collect();
    for s in [
        "openid",
        "fhirUser",
        "launch/patient",
        "offline_access",
        "patient/*.rs",
    ] {
        assert!(scopes.contains(&s), "{scopes:?}");
    }
    assert!(!authorize.as_str().contains("client_secret"));
    // The pending login is bound to this browser by a short-lived HttpOnly cookie.
    let login_cookie = browser
        .set_cookies
        .iter()
        .find(|c| c.starts_with(&format!("{LOGIN_COOKIE}=")))
        .expect("a login cookie")
        .clone();
    assert!(login_cookie.contains("HttpOnly"), "{login_cookie}");
    assert!(login_cookie.contains("SameSite=Lax"), "{login_cookie}");
    assert!(login_cookie.contains("Path=/auth"), "{login_cookie}");

    assert!(
        callback.starts_with(&app.url("/auth/callback?")),
        "{callback}"
    );
    let reply = browser.get(&callback).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(reply.location(), "/portal/home?tab=1");
    let cookies = reply.set_cookies();
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with(&format!("{SESSION_COOKIE}=")))
        .expect("a session cookie");
    assert!(session_cookie.contains("HttpOnly"), "{session_cookie}");
    assert!(session_cookie.contains("SameSite=Lax"), "{session_cookie}");
    assert!(
        session_cookie.contains("Path=/;") || session_cookie.ends_with("Path=/"),
        "{session_cookie}"
    );
    // The gateway's public URL is http here; over https the cookie is Secure.
    assert!(!session_cookie.contains("Secure"), "{session_cookie}");
    // 256 random bits, base64url.
    let id = browser.cookie(SESSION_COOKIE).unwrap();
    assert_eq!(id.len(), 43, "{id}");
    // The login cookie is spent.
    assert!(browser.cookie(LOGIN_COOKIE).is_none());

    let reply = browser.get(&app.url("/auth/session")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session = reply.json();
    assert_eq!(session["authenticated"], true);
    assert_eq!(session["via"], "session");
    assert_eq!(session["patient"], "pat-1");
    assert_eq!(session["fhir_user"], "Patient/pat-1");
    assert_eq!(session["csrf_token"].as_str().unwrap().len(), 43);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(session["expires_at"].as_u64().unwrap() > now);
    assert_eq!(
        reply.headers["cache-control"], "no-store",
        "session documents must not be cached"
    );

    // Tokens never reach the browser: not in a cookie, not in a body.
    for line in &browser.set_cookies {
        assert_no_token(line);
    }
    for body in &browser.bodies {
        assert_no_token(body);
    }

    // Another browser, without the cookie, is not logged in.
    let mut stranger = Browser::new(&app);
    stranger
        .get(&app.url("/auth/session"))
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn bearer_tokens_are_accepted_instead_of_the_cookie() {
    let app = TestApp::spawn().await;
    let token = app.patient_token("pat-2", "launch/patient patient/*.rs");
    assert!(
        looks_like_jwt(&token),
        "the leak detector recognises a real token"
    );
    let res = app
        .http
        .get(app.url("/auth/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["via"], "bearer");
    assert_eq!(body["patient"], "pat-2");
    assert!(body["csrf_token"].is_null());
    assert_no_token(&body.to_string());

    let res = app
        .http
        .get(app.url("/auth/session"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn a_callback_with_another_state_is_refused() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    let (_, callback) = browser.start_login(&app, "pat-1").await;
    let mut forged = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                "attacker-state".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);

    let reply = browser.get(forged.as_str()).await;
    reply.assert_problem(400, "login_state_mismatch");
    assert!(browser.cookie(SESSION_COOKIE).is_none());
    assert!(
        !reply
            .set_cookies()
            .iter()
            .any(|c| c.starts_with(&format!("{SESSION_COOKIE}=")))
    );
    // The refused attempt used up the pending login: the genuine callback is refused too.
    browser
        .get(&callback)
        .await
        .assert_problem(400, "login_not_in_progress");
    browser
        .get(&app.url("/auth/session"))
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn replayed_and_forged_callbacks_are_refused() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    let (_, callback) = browser.start_login(&app, "pat-1").await;
    let pending = browser.cookie(LOGIN_COOKIE).unwrap();
    assert_eq!(browser.get(&callback).await.status, 303);
    let first_session = browser.cookie(SESSION_COOKIE).unwrap();

    // Replayed, even with the old login cookie put back: the login was completed once.
    browser.jar.insert(LOGIN_COOKIE.to_owned(), pending);
    browser
        .get(&callback)
        .await
        .assert_problem(400, "login_not_in_progress");
    assert_eq!(browser.cookie(SESSION_COOKIE).unwrap(), first_session);

    // A callback in a browser that never started a login.
    let mut other = Browser::new(&app);
    let reply = other
        .get(&app.url("/auth/callback?code=made-up&state=made-up"))
        .await;
    reply.assert_problem(400, "login_not_in_progress");
    assert!(other.cookie(SESSION_COOKIE).is_none());

    // Login CSRF: the victim's browser has a login of its own in progress, and the
    // attacker feeds it the callback of the attacker's login.
    let mut attacker = Browser::new(&app);
    let (_, attacker_callback) = attacker.start_login(&app, "pat-2").await;
    let mut victim = Browser::new(&app);
    victim.start_login(&app, "pat-1").await;
    victim
        .get(&attacker_callback)
        .await
        .assert_problem(400, "login_state_mismatch");
    assert!(victim.cookie(SESSION_COOKIE).is_none());

    // Repeated parameters are ambiguous and refused.
    let mut browser = Browser::new(&app);
    let (_, callback) = browser.start_login(&app, "pat-1").await;
    browser
        .get(&format!("{callback}&state=again"))
        .await
        .assert_problem(400, "bad_request");
}

#[tokio::test]
async fn an_authorization_server_error_is_reported_without_a_session() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    let reply = browser.get(&app.url("/auth/login")).await;
    assert_eq!(reply.status, 303);
    let state = query(&url::Url::parse(&reply.location()).unwrap())["state"].clone();
    let error_callback = url::Url::parse_with_params(
        &app.url("/auth/callback"),
        &[
            ("error", "access_denied"),
            ("error_description", "the patient said no"),
            ("state", state.as_str()),
        ],
    )
    .unwrap();
    let reply = browser.get(error_callback.as_str()).await;
    reply.assert_problem(400, "login_denied");
    assert!(
        reply.json()["detail"]
            .as_str()
            .unwrap()
            .contains("access_denied")
    );
    assert!(browser.cookie(SESSION_COOKIE).is_none());
}

#[tokio::test]
async fn return_to_cannot_leave_the_gateway() {
    let app = TestApp::spawn().await;
    for target in [
        "//evil.example",
        "//evil.example/portal",
        "http://evil.example/",
        "https://evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/%2F%2Fevil.example",
        "javascript:alert(1)",
        "evil.example",
    ] {
        let mut browser = Browser::new(&app);
        let reply = browser
            .send(
                browser
                    .http
                    .get(app.url("/auth/login"))
                    .query(&[("return_to", target)]),
            )
            .await;
        reply.assert_problem(400, "bad_request");
        assert!(reply.headers.get(LOCATION).is_none(), "{target}");
        assert!(browser.cookie(LOGIN_COOKIE).is_none(), "{target}");
    }
    // Without return_to, the browser lands on `/`.
    let mut browser = Browser::new(&app);
    let reply = browser.get(&app.url("/auth/login")).await;
    let authorize = reply.location();
    let approved = browser.get(&format!("{authorize}&login_hint=pat-1")).await;
    let done = browser.get(&approved.location()).await;
    assert_eq!(done.status, 303);
    assert_eq!(done.location(), "/");
}

#[tokio::test]
async fn logout_needs_the_csrf_token_and_ends_the_session_on_the_server() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    let session = browser.login(&app, "pat-1").await;
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    let cookie = browser.cookie(SESSION_COOKIE).unwrap();
    let origin = app.url("");

    // A cookie-authenticated write without the token, with a wrong one, or from a
    // foreign origin is refused, and the session survives.
    browser
        .logout(&app, &[])
        .await
        .assert_problem(403, "csrf_failed");
    browser
        .logout(&app, &[("x-csrf-token", "not-the-token")])
        .await
        .assert_problem(403, "csrf_failed");
    browser
        .logout(
            &app,
            &[("x-csrf-token", &csrf), ("origin", "http://evil.example")],
        )
        .await
        .assert_problem(403, "csrf_failed");
    browser
        .logout(
            &app,
            &[
                ("x-csrf-token", &csrf),
                ("referer", "http://evil.example/page"),
            ],
        )
        .await
        .assert_problem(403, "csrf_failed");
    browser
        .logout(&app, &[("x-csrf-token", &csrf), ("origin", "null")])
        .await
        .assert_problem(403, "csrf_failed");
    assert_eq!(browser.get(&app.url("/auth/session")).await.status, 200);

    // With the token and the gateway's own origin: done, and the cookie is cleared.
    let reply = browser
        .logout(&app, &[("x-csrf-token", &csrf), ("origin", &origin)])
        .await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert!(
        reply
            .set_cookies()
            .iter()
            .any(|c| c.starts_with(&format!("{SESSION_COOKIE}=;")) && c.contains("Max-Age=0"))
    );
    assert!(browser.cookie(SESSION_COOKIE).is_none());

    // The session is gone on the server, not only in the browser.
    browser.jar.insert(SESSION_COOKIE.to_owned(), cookie);
    browser
        .get(&app.url("/auth/session"))
        .await
        .assert_problem(401, "session_expired");
}

#[tokio::test]
async fn bearer_requests_are_not_subject_to_csrf_and_win_over_the_cookie() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    browser.login(&app, "pat-1").await;
    let token = app.patient_token("pat-1", "launch/patient patient/*.rs");
    // A bearer-authenticated write needs no CSRF token; the cookie that rides along is
    // not what authenticated it, so the cookie session is not ended.
    let bearer = format!("Bearer {token}");
    let reply = browser.logout(&app, &[("authorization", &bearer)]).await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
    let reply = browser.get(&app.url("/auth/session")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["via"], "session");
}

/// A sandbox issuing short-lived tokens, and a gateway with no clock leeway, so that an
/// access token really expires during the test.
async fn short_token_app(
    lifetime_secs: u64,
    tweak: impl FnOnce(&mut portico::config::Config),
) -> TestApp {
    let sandbox = sandbox().await;
    sandbox
        .auth()
        .set_token_lifetime(Duration::from_secs(lifetime_secs));
    TestApp::spawn_with(sandbox, |config, _| {
        config.auth.leeway_seconds = 0;
        tweak(config);
    })
    .await
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed() {
    let app = short_token_app(3, |_| {}).await;
    let mut browser = Browser::new(&app);
    browser.login(&app, "pat-1").await;
    // Every token issued so far has expired: only a refresh keeps the session alive.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reply = browser.get(&app.url("/auth/session")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["patient"], "pat-1");

    // Concurrent requests refresh one at a time: the sandbox rotates refresh tokens and
    // revokes the whole login when a spent one is presented again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let cookie = format!(
        "{SESSION_COOKIE}={}",
        browser.cookie(SESSION_COOKIE).unwrap()
    );
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let request = browser
                .http
                .get(app.url("/auth/session"))
                .header(COOKIE, cookie.clone());
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for handle in handles {
        statuses.push(handle.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let reply = browser.get(&app.url("/auth/session")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for body in &browser.bodies {
        assert_no_token(body);
    }
}

#[tokio::test]
async fn a_session_without_refresh_token_ends_when_its_token_expires() {
    let app = short_token_app(3, |config| {
        config.login.scopes = "openid fhirUser launch/patient patient/*.rs".to_owned();
    })
    .await;
    let mut browser = Browser::new(&app);
    browser.login(&app, "pat-1").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    browser
        .get(&app.url("/auth/session"))
        .await
        .assert_problem(401, "session_expired");
    assert!(
        browser.cookie(SESSION_COOKIE).is_none(),
        "the cookie is cleared"
    );
}

#[tokio::test]
async fn a_refused_refresh_ends_the_session() {
    let app = short_token_app(3, |_| {}).await;
    let mut browser = Browser::new(&app);
    let cookie = {
        browser.login(&app, "pat-1").await;
        browser.cookie(SESSION_COOKIE).unwrap()
    };
    // The authorization server stops trusting the gateway's credentials.
    app.sandbox.auth().register_client(ClientRegistration {
        client_id: PORTAL_CLIENT.to_owned(),
        secret: Some("rotated-elsewhere".to_owned()),
        redirect_uris: vec!["http://127.0.0.1/auth/callback".to_owned()],
        allow_loopback_any_port: true,
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        allowed_scopes: ClientRegistration::patient_scopes(),
        ..ClientRegistration::default()
    });
    // The token expires within the refresh margin, so this request must refresh.
    browser
        .get(&app.url("/auth/session"))
        .await
        .assert_problem(401, "session_expired");
    browser.jar.insert(SESSION_COOKIE.to_owned(), cookie);
    browser
        .get(&app.url("/auth/session"))
        .await
        .assert_problem(401, "session_expired");
}

#[tokio::test]
async fn an_idle_session_ends() {
    let app = TestApp::spawn_configured(|config| config.login.idle_timeout_seconds = 3).await;
    let mut browser = Browser::new(&app);
    browser.login(&app, "pat-1").await;
    // Use keeps it alive past the idle timeout...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let reply = browser.get(&app.url("/auth/session")).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // ...and idleness ends it.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    browser
        .get(&app.url("/auth/session"))
        .await
        .assert_problem(401, "session_expired");
}
