//! What the integration tests share: a sandbox EHR and a gateway in front of it on free
//! ports ([`TestApp`]), spawned as is, with an edited configuration or EHR profile, or in
//! front of a mock EHR; what the sandbox stores; SMART logins; and the hand-written EHR
//! documents under the repository's `fixtures/` ([`fixture`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portico::config::{Config, EhrProfile};
use portico_sandbox::{Sandbox, SandboxConfig};
use portico_upstream::{
    ClientAuthMethod, FhirClient, ResolvedAuth, SecretString, UpstreamAuthConfig, UpstreamConfig,
};
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A sandbox with few patients, requiring tokens like a real EHR.
pub async fn sandbox() -> Sandbox {
    sandbox_with(SandboxConfig {
        patients: 5,
        ..SandboxConfig::default()
    })
    .await
}

pub async fn sandbox_with(config: SandboxConfig) -> Sandbox {
    Sandbox::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .expect("sandbox starts")
}

/// A running gateway in front of a sandbox (shared with its replicas, if any).
pub struct TestApp {
    pub sandbox: Arc<Sandbox>,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    audit_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_on(sandbox().await).await
    }

    pub async fn spawn_with_patients(patients: usize) -> TestApp {
        Self::spawn_on(
            sandbox_with(SandboxConfig {
                patients,
                ..SandboxConfig::default()
            })
            .await,
        )
        .await
    }

    pub async fn spawn_on(sandbox: Sandbox) -> TestApp {
        Self::spawn_with(sandbox, |_, _| {}).await
    }

    /// Spawns in front of a fresh [`sandbox`] with a chance to change the gateway's
    /// configuration first.
    pub async fn spawn_configured(tweak: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_with(sandbox().await, |config, _| tweak(config)).await
    }

    /// Spawns in front of a fresh [`sandbox`] with a vendor's built-in EHR profile. The
    /// sandbox does not declare the vendors' own operations, so the capability check at
    /// start is off.
    pub async fn spawn_for_ehr(profile: EhrProfile) -> TestApp {
        Self::spawn_configured(|config| {
            config.ehr.profile = profile;
            config.ehr.check_capabilities = false;
        })
        .await
    }

    /// Spawns in front of a fresh [`sandbox`] with `config/ehr/generic-r4.toml` edited:
    /// its first `from` replaced by `to`. The profile is read while the gateway is built,
    /// so the edited file is gone when this returns.
    pub async fn spawn_with_profile_edit(from: &str, to: &str) -> TestApp {
        let generic = std::fs::read_to_string(repo_path("config/ehr/generic-r4.toml"))
            .expect("the generic-r4 profile");
        let edited = generic.replacen(from, to, 1);
        assert_ne!(edited, generic, "{from:?} is in config/ehr/generic-r4.toml");
        assert!(edited.contains(to));
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("profile.toml");
        std::fs::write(&file, edited).expect("profile written");
        Self::spawn_configured(|config| config.ehr.profile_file = Some(file)).await
    }

    /// Spawns with `mock` as the EHR (its FHIR base at `/fhir`) and `profile`, the
    /// capability check off. A sandbox still runs beside it: it issues the patients'
    /// tokens the gateway verifies.
    pub async fn spawn_on_mock(mock: &MockServer, profile: EhrProfile) -> TestApp {
        let base = url::Url::parse(&format!("{}/fhir", mock.uri())).expect("mock base");
        Self::spawn_with(sandbox().await, |config, upstream| {
            config.ehr.profile = profile;
            config.ehr.check_capabilities = false;
            upstream.base_url = base;
        })
        .await
    }

    /// Spawns with a chance to change the gateway's configuration first.
    pub async fn spawn_with(
        sandbox: Sandbox,
        tweak: impl FnOnce(&mut Config, &mut portico_upstream::ResolvedUpstreamConfig),
    ) -> TestApp {
        Self::spawn_in_front_of(Arc::new(sandbox), tweak).await
    }

    /// Another gateway in front of this one's sandbox, as a second replica behind a
    /// load balancer would be: configured by `tweak`.
    pub async fn spawn_replica(&self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_in_front_of(self.sandbox.clone(), |config, _| tweak(config)).await
    }

    /// [`TestApp::spawn_replica`] whose upstream may be changed too.
    pub async fn spawn_beside(
        &self,
        tweak: impl FnOnce(&mut Config, &mut portico_upstream::ResolvedUpstreamConfig),
    ) -> TestApp {
        Self::spawn_in_front_of(self.sandbox.clone(), tweak).await
    }

    async fn spawn_in_front_of(
        sandbox: Arc<Sandbox>,
        tweak: impl FnOnce(&mut Config, &mut portico_upstream::ResolvedUpstreamConfig),
    ) -> TestApp {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let (mut config, mut upstream) =
            portico::demo::gateway_for_sandbox(&sandbox, listen).expect("gateway config");
        config.server.body_limit_bytes = 64 * 1024;
        let audit_dir = tempfile::tempdir().expect("temp dir");
        config.audit.path = audit_dir.path().join("audit.jsonl");
        tweak(&mut config, &mut upstream);
        let app = portico::app::App::build_with(config, upstream)
            .await
            .expect("gateway builds");
        let addr = app.local_addr().expect("bound");
        sandbox.auth().add_audience(&format!("http://{addr}/fhir"));
        let (tx, rx) = oneshot::channel();
        tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        TestApp {
            sandbox,
            addr,
            http: http_client(),
            audit_dir,
            stop: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The gateway's FHIR base.
    pub fn fhir(&self) -> String {
        format!("http://{}/fhir", self.addr)
    }

    /// A token the sandbox issued for a patient launch of `demo-app`.
    pub fn patient_token(&self, patient: &str, scope: &str) -> String {
        self.sandbox
            .auth()
            .issue_access_token("demo-app", scope, Some(patient))
    }

    /// A token with the scopes the portal login asks for, for `patient`.
    pub fn portal_token(&self, patient: &str) -> String {
        self.patient_token(
            patient,
            "openid fhirUser launch/patient patient/*.rs patient/*.cud",
        )
    }

    /// `GET /api/v1{path}` with a bearer token: the status, the JSON body (`Null` when
    /// empty or not JSON) and the headers.
    pub async fn api_get(&self, token: &str, path: &str) -> ApiAnswer {
        let response = self
            .http
            .get(self.url(&format!("/api/v1{path}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("portal GET");
        ApiAnswer::read(response).await
    }

    /// [`api_get`](Self::api_get) while every EHR call takes at least `latency`, the
    /// sandbox's counters reset first: afterwards they count this request's EHR calls, and
    /// its high-water mark shows how many of them were in flight at once.
    pub async fn api_get_timed(&self, token: &str, path: &str, latency: Duration) -> ApiAnswer {
        let faults = self.sandbox.faults();
        faults.set_latency(latency);
        faults.reset_stats();
        let answer = self.api_get(token, path).await;
        faults.set_latency(Duration::ZERO);
        answer
    }

    /// `POST /api/v1{path}` with a JSON body, a bearer token and an optional
    /// `Idempotency-Key`.
    pub async fn api_post(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> ApiAnswer {
        let mut request = self
            .http
            .post(self.url(&format!("/api/v1{path}")))
            .bearer_auth(token)
            .json(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        ApiAnswer::read(request.send().await.expect("portal POST")).await
    }

    /// A resource as the sandbox stores it now (read directly, not through the gateway).
    pub fn stored(&self, ty: &str, id: &str) -> Value {
        let stored = self
            .sandbox
            .store()
            .read(ty, id)
            .unwrap_or_else(|e| panic!("{ty}/{id} is not stored: {e:?}"));
        let body = stored
            .body
            .unwrap_or_else(|| panic!("{ty}/{id} is deleted"));
        serde_json::from_slice(&body).expect("stored JSON")
    }

    /// Every live resource of a type the sandbox stores.
    pub fn all_stored(&self, ty: &str) -> Vec<Value> {
        let store = self.sandbox.store();
        store
            .ids(ty)
            .into_iter()
            .filter_map(|id| store.read(ty, &id).ok())
            .filter_map(|r| serde_json::from_slice(r.body.as_ref()?).ok())
            .collect()
    }

    /// The id of the patient's (first) CareTeam in the sandbox.
    pub fn care_team_id(&self, patient: &str) -> String {
        self.all_stored("CareTeam")
            .into_iter()
            .find(|t| t["subject"]["reference"] == format!("Patient/{patient}"))
            .and_then(|t| t["id"].as_str().map(str::to_owned))
            .expect("a care team")
    }

    /// The directory the audit file is written in.
    pub fn audit_dir(&self) -> &std::path::Path {
        self.audit_dir.path()
    }

    /// Every audit record written so far.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.audit_dir.path().join("audit.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A portal API answer, read completely.
#[derive(Debug)]
pub struct ApiAnswer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

impl ApiAnswer {
    async fn read(response: reqwest::Response) -> ApiAnswer {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("portal body");
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        ApiAnswer {
            status,
            headers,
            body,
        }
    }

    /// The problem's `code`, for error answers.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

/// A client that never follows redirects, with a short timeout so that nothing hangs.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// The secret of one of the sandbox's registered clients.
pub fn client_secret(sandbox: &Sandbox, client_id: &str) -> String {
    sandbox
        .clients()
        .into_iter()
        .find(|c| c.client_id == client_id)
        .and_then(|c| c.client_secret)
        .expect("client has a secret")
}

/// An upstream client for the sandbox using `portico-system`'s client credentials.
pub fn system_client(sandbox: &Sandbox) -> FhirClient {
    system_client_with(sandbox, |_| {})
}

pub fn system_client_with(
    sandbox: &Sandbox,
    tweak: impl FnOnce(&mut UpstreamConfig),
) -> FhirClient {
    let mut config = UpstreamConfig::new(
        sandbox.fhir_base().parse().expect("url"),
        UpstreamAuthConfig::None,
    );
    tweak(&mut config);
    let mut resolved = config.resolve().expect("resolves");
    resolved.auth = ResolvedAuth::ClientCredentials {
        token_url: format!("{}/auth/token", sandbox.base_url())
            .parse()
            .expect("url"),
        client_id: "portico-system".to_owned(),
        client_secret: SecretString::new(client_secret(sandbox, "portico-system")),
        scope: Some("system/*.read system/*.write".to_owned()),
        client_auth: ClientAuthMethod::Basic,
    };
    FhirClient::new(resolved).expect("client")
}

// ---------------------------------------------------------------------------------
// SMART logins of the public client `demo-app`

/// Where `demo-app` is redirected; nothing listens there, the tests read the redirect.
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// A PKCE S256 verifier and its challenge.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn generate() -> Pkce {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let verifier = URL_SAFE_NO_PAD.encode(bytes);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

/// `demo-app`'s authorization request at `authorize` (PKCE S256, `login_hint`, which the
/// sandbox approves at once): the code the redirect to [`REDIRECT`] carries.
pub async fn authorization_code(
    http: &reqwest::Client,
    authorize: &str,
    aud: &str,
    scope: &str,
    patient: &str,
    pkce: &Pkce,
) -> String {
    let res = http
        .get(authorize)
        .query(&[
            ("response_type", "code"),
            ("client_id", "demo-app"),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", "st-42"),
            ("aud", aud),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("login_hint", patient),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "{:?}", res.text().await);
    let location = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(REDIRECT));
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q.get("state").map(String::as_str), Some("st-42"));
    q.get("code").expect("a code").clone()
}

/// `demo-app` exchanging an authorization code at `token`.
pub async fn exchange_code(
    http: &reqwest::Client,
    token: &str,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    http.post(token)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", "demo-app"),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------
// Repository files, fixtures and mock EHRs

/// A path in the repository (`rel` from its root).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A hand-written document under `fixtures/` (see `fixtures/README.md`).
pub fn fixture(name: &str) -> Value {
    fixture_with(name, &[])
}

/// A document under `fixtures/` whose `{{key}}` placeholders are filled in (dates that
/// must stay relative to today); every placeholder must be filled.
pub fn fixture_with(name: &str, values: &[(&str, &str)]) -> Value {
    let path = repo_path(&format!("fixtures/{name}"));
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixtures/{name} cannot be read: {e}"));
    for (key, value) in values {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    assert!(
        !text.contains("{{"),
        "fixtures/{name} has a placeholder left unfilled"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixtures/{name}: {e}"))
}

/// Makes `mock` answer `method path` (any query) with 200 and `body`.
pub async fn mount_json(mock: &MockServer, http_method: &str, at: &str, body: Value) {
    Mock::given(method(http_method))
        .and(path(at))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(mock)
        .await;
}
