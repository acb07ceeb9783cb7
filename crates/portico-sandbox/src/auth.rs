//! The sandbox's SMART on FHIR authorization server.
//!
//! It implements what Portico and SMART apps need from a real EHR's authorization
//! server, strictly enough that client bugs show up here rather than in production:
//!
//! - authorization code with PKCE (S256 only) and a required `state`; codes are single
//!   use, live about a minute and are bound to the client, the redirect URI and the
//!   code challenge; an unverified redirect URI is never redirected to;
//! - `refresh_token` with rotation: each refresh token works once, and presenting a
//!   spent one revokes every token descended from the same login;
//! - `client_credentials` with `client_secret_basic`, `client_secret_post` and
//!   `private_key_jwt` (RS256/384/512, PS*, ES256, ES384), with `jti` replay protection;
//! - RS256 JWT access tokens (and OpenID Connect id tokens) signed by a key generated
//!   in memory at start and published at `/auth/jwks`.
//!
//! Granted scopes are always a subset of the requested ones ([`scopes`]). Every login is
//! a patient's or a proxy's ([`logins`]; the sandbox has no practitioner users), so
//! authorization-code tokens always carry `patient` (an array for a proxy) and
//! `fhirUser`. Tokens, codes and secrets are never logged.

mod grants;
mod handlers;
mod keys;
mod logins;
mod scopes;
#[cfg(test)]
mod tests;
mod verified;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use parking_lot::{Mutex, RwLock};
use rand::RngCore as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use handlers::router;
pub use keys::KeyError;
pub use logins::PatientClaim;

use crate::generator::{Families, ProxyLogin};
use crate::{ClientInfo, PatientSummary};
use keys::{ClientKey, SigningKey};
use logins::Login;

/// The public SMART app client: no secret, any loopback redirect URI.
pub const DEMO_APP: &str = "demo-app";
/// The gateway's portal (BFF) login client: confidential, loopback `/auth/callback`.
pub const PORTAL_CLIENT: &str = "portico-portal";
/// The gateway's own system client: confidential, `client_credentials`.
pub const SYSTEM_CLIENT: &str = "portico-system";
/// `client_assertion_type` of `private_key_jwt` (RFC 7523).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

const CODE_LIFETIME: Duration = Duration::from_secs(60);
const OFFLINE_REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
const ONLINE_REFRESH_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// SMART Backend Services: an assertion's `exp` is at most five minutes ahead.
const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;
const ASSERTION_LEEWAY_SECS: u64 = 5;
const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// Where the authorization server lives and how long its access tokens last.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `http://127.0.0.1:PORT`: the issuer is `base_url + "/auth"`, the FHIR base (the
    /// tokens' `aud`) is `base_url + "/fhir"`.
    pub base_url: String,
    pub token_lifetime: Duration,
}

impl AuthConfig {
    /// A config with one-hour access tokens.
    pub fn new(base_url: impl Into<String>) -> AuthConfig {
        AuthConfig {
            base_url: base_url.into(),
            token_lifetime: Duration::from_secs(3600),
        }
    }
}

/// OAuth grant types a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

/// A client registration.
///
/// A client is *public* when it has neither a secret nor a public key; public clients
/// may only use the authorization code (and refresh) grants. Redirect URIs match
/// exactly, except with `allow_loopback_any_port`, which follows RFC 8252 §7.3: an
/// `http` URI on `127.0.0.1`, `localhost` or `[::1]` matches on any port when its path
/// and query equal those of a registered loopback URI, or whatever its path when the
/// client registered no redirect URI at all.
#[derive(Clone, Default)]
pub struct ClientRegistration {
    pub client_id: String,
    /// Shared secret for `client_secret_basic` / `client_secret_post`.
    pub secret: Option<String>,
    /// Public key for `private_key_jwt`: SPKI `PUBLIC KEY` (RSA or EC) or `RSA PUBLIC KEY`.
    pub public_key_pem: Option<String>,
    /// Public key(s) for `private_key_jwt` as a JWK or a JWK Set.
    pub public_key_jwk: Option<Value>,
    pub redirect_uris: Vec<String>,
    pub allow_loopback_any_port: bool,
    pub grant_types: Vec<GrantType>,
    /// Literal scopes and resource-scope patterns (`patient/*.*`, `system/*.read`).
    pub allowed_scopes: Vec<String>,
    /// What the client is for, printed by `portico demo`.
    pub description: String,
}

impl std::fmt::Debug for ClientRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRegistration")
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("public_key_pem", &self.public_key_pem.is_some())
            .field("public_key_jwk", &self.public_key_jwk.is_some())
            .field("redirect_uris", &self.redirect_uris)
            .field("allow_loopback_any_port", &self.allow_loopback_any_port)
            .field("grant_types", &self.grant_types)
            .field("allowed_scopes", &self.allowed_scopes)
            .finish_non_exhaustive()
    }
}

impl ClientRegistration {
    /// What a patient-facing client may be granted.
    pub fn patient_scopes() -> Vec<String> {
        [
            "openid",
            "fhirUser",
            "launch/patient",
            "offline_access",
            "online_access",
            "patient/*.*",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    /// What a system (backend services) client may be granted.
    pub fn system_scopes() -> Vec<String> {
        vec!["system/*.*".to_owned()]
    }

    /// A SMART Backend Services client authenticating with `private_key_jwt`.
    pub fn backend_service(
        client_id: impl Into<String>,
        public_key_pem: impl Into<String>,
    ) -> ClientRegistration {
        ClientRegistration {
            client_id: client_id.into(),
            public_key_pem: Some(public_key_pem.into()),
            grant_types: vec![GrantType::ClientCredentials],
            allowed_scopes: Self::system_scopes(),
            description: "backend service (private_key_jwt)".to_owned(),
            ..ClientRegistration::default()
        }
    }

    fn is_public(&self) -> bool {
        self.secret.is_none() && self.public_key_pem.is_none() && self.public_key_jwk.is_none()
    }
}

/// What a verified access token says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub client_id: String,
    pub scope: String,
    /// One id for a patient's token, an array for a proxy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<PatientClaim>,
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    pub exp: i64,
}

impl AccessClaims {
    /// The patients the token is for (none for a system token).
    pub fn patients(&self) -> &[String] {
        self.patient.as_ref().map_or(&[], PatientClaim::ids)
    }
}

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm {0} is not accepted")]
    UnsupportedAlgorithm(String),
    #[error("token was signed with an unknown key")]
    UnknownKey,
    #[error("token signature is invalid")]
    InvalidSignature,
    #[error("token has expired")]
    Expired,
    #[error("token was not issued by this server for this fhir base")]
    WrongIssuerOrAudience,
    #[error("token claims are invalid")]
    InvalidClaims,
}

/// RFC 6749 error codes used by the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    ServerError,
}

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::ServerError => "server_error",
        }
    }
}

/// An OAuth error response: a code and a human-readable description.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub(crate) struct OAuthError {
    pub(crate) code: ErrorCode,
    pub(crate) description: String,
}

fn oauth(code: ErrorCode, description: impl Into<String>) -> OAuthError {
    OAuthError {
        code,
        description: description.into(),
    }
}

/// Form or query parameters, empty values dropped (RFC 6749 §3.1), repeats refused.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `application/x-www-form-urlencoded`; `Err` names a repeated parameter.
    pub(crate) fn parse(raw: &[u8]) -> Result<Params, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(raw) {
            if value.is_empty() {
                continue;
            }
            if out.iter().any(|(n, _)| *n == name) {
                return Err(name.into_owned());
            }
            out.push((name.into_owned(), value.into_owned()));
        }
        Ok(Params(out))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// What `/auth/authorize` should do with a request.
#[derive(Debug)]
pub(crate) enum AuthorizeOutcome {
    /// 302 to this URL (a code, or an error once the redirect URI is trusted).
    Redirect(String),
    /// Show the patient picker; the request is otherwise valid.
    PickPatient { client_id: String, scope: String },
    /// The client or redirect URI cannot be trusted: answer here, never redirect.
    Reject(OAuthError),
}

struct Client {
    reg: ClientRegistration,
    keys: Vec<ClientKey>,
}

impl Client {
    fn id(&self) -> &str {
        &self.reg.client_id
    }

    fn allows(&self, grant: GrantType) -> bool {
        self.reg.grant_types.contains(&grant)
    }

    fn redirect_allowed(&self, uri: &str) -> bool {
        if self.reg.redirect_uris.iter().any(|r| r == uri) {
            return true;
        }
        if !self.reg.allow_loopback_any_port {
            return false;
        }
        let Some(url) = loopback_http(uri) else {
            return false;
        };
        if self.reg.redirect_uris.is_empty() {
            return true;
        }
        self.reg
            .redirect_uris
            .iter()
            .filter_map(|r| loopback_http(r))
            .any(|registered| registered.path() == url.path() && registered.query() == url.query())
    }
}

/// Parses `uri` and returns it when it is a plain `http` URI on a loopback host.
fn loopback_http(uri: &str) -> Option<url::Url> {
    let url = url::Url::parse(uri).ok()?;
    let loopback = match url.host()? {
        url::Host::Domain(domain) => domain == "localhost",
        url::Host::Ipv4(ip) => ip == std::net::Ipv4Addr::LOCALHOST,
        url::Host::Ipv6(ip) => ip == std::net::Ipv6Addr::LOCALHOST,
    };
    let plain = url.scheme() == "http" && url.username().is_empty() && url.password().is_none();
    (loopback && plain && url.fragment().is_none()).then_some(url)
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    scopes: Vec<String>,
    login: Login,
    nonce: Option<String>,
    expires: Instant,
}

struct RefreshGrant {
    client_id: String,
    scopes: Vec<String>,
    login: Option<Login>,
    family: u64,
    expires: Instant,
}

/// Mutable grant state, behind one lock.
struct GrantState {
    codes: HashMap<String, CodeGrant>,
    refresh: HashMap<String, RefreshGrant>,
    /// Rotated refresh tokens: presenting one again revokes its family.
    spent_refresh: HashMap<String, (u64, Instant)>,
    /// `(client_id, jti)` of accepted client assertions, with their `exp`.
    jtis: HashMap<(String, String), i64>,
    next_family: u64,
    last_purge: Instant,
}

impl GrantState {
    fn purge(&mut self, now: Instant) {
        if now.duration_since(self.last_purge) < PURGE_INTERVAL {
            return;
        }
        self.last_purge = now;
        self.codes.retain(|_, c| c.expires > now);
        self.refresh.retain(|_, r| r.expires > now);
        self.spent_refresh.retain(|_, (_, expires)| *expires > now);
        let unix = unix_now();
        self.jtis
            .retain(|_, exp| *exp + ASSERTION_LEEWAY_SECS as i64 >= unix);
    }
}

/// Access-token claims as signed.
#[derive(serde::Serialize)]
struct TokenClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    client_id: &'a str,
    exp: i64,
    iat: i64,
    jti: String,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient: Option<PatientClaim>,
    #[serde(rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    fhir_user: Option<String>,
}

#[derive(serde::Serialize)]
struct IdTokenClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    exp: i64,
    iat: i64,
    #[serde(rename = "fhirUser")]
    fhir_user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct AssertionClaims {
    exp: i64,
    jti: Option<String>,
}

/// The authorization server: clients, keys, codes and refresh tokens.
pub struct AuthServer {
    issuer: String,
    fhir_base: String,
    token_url: String,
    key: SigningKey,
    patients: Vec<PatientSummary>,
    /// Everyone who may sign in as a patient: `patients` and the family patients.
    patient_ids: HashSet<String>,
    /// The families whose patients and proxies may sign in too.
    families: Option<Families>,
    clients: RwLock<Vec<Arc<Client>>>,
    state: Mutex<GrantState>,
    /// Other FHIR bases apps may name as `aud` at `/authorize` (a gateway in front of
    /// the sandbox); tokens still carry the sandbox's own base as `aud`.
    extra_audiences: RwLock<Vec<String>>,
    /// Access and id token lifetime in seconds; starts at [`AuthConfig::token_lifetime`]
    /// and can be changed at run time with [`AuthServer::set_token_lifetime`].
    token_lifetime_secs: std::sync::atomic::AtomicU64,
    /// Access tokens whose signature was checked once already.
    verified: verified::VerifiedTokens,
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer")
            .field("issuer", &self.issuer)
            .field("kid", &self.key.kid())
            .field("patients", &self.patients.len())
            .field("clients", &self.clients.read().len())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares secrets without leaking where they differ (or their lengths).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn valid_code_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A S256 challenge is the unpadded base64url of a SHA-256 digest: 43 characters.
fn valid_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl AuthServer {
    /// Builds the server with a fresh signing key and the three standard clients
    /// (`demo-app`, `portico-portal`, `portico-system`; the latter two with random secrets).
    pub fn new(config: AuthConfig, patients: Vec<PatientSummary>) -> AuthServer {
        let base = config.base_url.trim_end_matches('/').to_owned();
        let issuer = format!("{base}/auth");
        let server = AuthServer {
            token_lifetime_secs: std::sync::atomic::AtomicU64::new(config.token_lifetime.as_secs()),
            fhir_base: format!("{base}/fhir"),
            token_url: format!("{issuer}/token"),
            issuer,
            key: SigningKey::generate(),
            patient_ids: patients.iter().map(|p| p.id.clone()).collect(),
            patients,
            families: None,
            clients: RwLock::new(Vec::new()),
            state: Mutex::new(GrantState {
                codes: HashMap::new(),
                refresh: HashMap::new(),
                spent_refresh: HashMap::new(),
                jtis: HashMap::new(),
                next_family: 1,
                last_purge: Instant::now(),
            }),
            extra_audiences: RwLock::new(Vec::new()),
            verified: verified::VerifiedTokens::default(),
        };
        for reg in Self::standard_clients() {
            server.register_client(reg);
        }
        server
    }

    fn standard_clients() -> Vec<ClientRegistration> {
        vec![
            ClientRegistration {
                client_id: DEMO_APP.to_owned(),
                allow_loopback_any_port: true,
                grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
                allowed_scopes: ClientRegistration::patient_scopes(),
                description: "public SMART app client: no secret, PKCE, any http://127.0.0.1 or http://localhost redirect URI"
                    .to_owned(),
                ..ClientRegistration::default()
            },
            ClientRegistration {
                client_id: PORTAL_CLIENT.to_owned(),
                secret: Some(random_token()),
                redirect_uris: vec![
                    "http://127.0.0.1/auth/callback".to_owned(),
                    "http://localhost/auth/callback".to_owned(),
                ],
                allow_loopback_any_port: true,
                grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
                allowed_scopes: ClientRegistration::patient_scopes(),
                description: "the gateway's portal login (confidential, redirect to a loopback /auth/callback)".to_owned(),
                ..ClientRegistration::default()
            },
            ClientRegistration {
                client_id: SYSTEM_CLIENT.to_owned(),
                secret: Some(random_token()),
                grant_types: vec![GrantType::ClientCredentials],
                allowed_scopes: ClientRegistration::system_scopes(),
                description: "the gateway's system access (client_credentials, system/*.read system/*.write)".to_owned(),
                ..ClientRegistration::default()
            },
        ]
    }

    /// Changes the lifetime of access and id tokens issued from now on (tests use short
    /// lifetimes to exercise expiry and refresh). Whole seconds; at least one.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.token_lifetime_secs.store(
            lifetime.as_secs().max(1),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn token_lifetime_secs(&self) -> u64 {
        self.token_lifetime_secs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The issuer, `base_url + "/auth"`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The FHIR base the tokens are for, `base_url + "/fhir"`.
    pub fn fhir_base(&self) -> &str {
        &self.fhir_base
    }

    /// The token endpoint, also the required `aud` of client assertions.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// Lets the families' patients and proxies sign in too: the picker lists them after
    /// the patients, and `login_hint` accepts a family patient's id or a proxy's login id.
    pub fn with_families(mut self, families: Families) -> AuthServer {
        self.patient_ids
            .extend(families.patients.iter().map(|p| p.id.clone()));
        self.families = Some(families);
        self
    }

    /// The patients one can log in as (besides the families).
    pub fn patients(&self) -> &[PatientSummary] {
        &self.patients
    }

    /// The families, when the server has them ([`AuthServer::with_families`]).
    pub fn families(&self) -> Option<&Families> {
        self.families.as_ref()
    }

    /// Who `login_hint` names: a patient id, or a proxy's login id.
    fn login(&self, hint: &str) -> Option<Login> {
        if self.patient_ids.contains(hint) {
            return Some(Login::Patient(hint.to_owned()));
        }
        let login = self.families.as_ref()?.logins.find(hint)?;
        Some(Login::Proxy(login.clone()))
    }

    /// The registered clients, in registration order.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.clients
            .read()
            .iter()
            .map(|c| ClientInfo {
                client_id: c.reg.client_id.clone(),
                client_secret: c.reg.secret.clone(),
                description: c.reg.description.clone(),
            })
            .collect()
    }

    /// Registers (or replaces) a client. A client whose public key cannot be parsed is
    /// not registered at all (it must not silently become a public client); use
    /// [`AuthServer::try_register_client`] to see why.
    pub fn register_client(&self, client: ClientRegistration) {
        if let Err(error) = self.try_register_client(client.clone()) {
            tracing::warn!(client_id = %client.client_id, %error, "client not registered");
        }
    }

    /// Registers (or replaces) a client, failing on an unusable public key.
    pub fn try_register_client(&self, client: ClientRegistration) -> Result<(), KeyError> {
        let mut keys = Vec::new();
        if let Some(pem) = &client.public_key_pem {
            keys.push(ClientKey::from_pem(pem)?);
        }
        if let Some(jwk) = &client.public_key_jwk {
            keys.extend(ClientKey::from_jwk_value(jwk)?);
        }
        let entry = Arc::new(Client { reg: client, keys });
        let mut clients = self.clients.write();
        match clients.iter_mut().find(|c| c.id() == entry.id()) {
            Some(slot) => *slot = entry,
            None => clients.push(entry),
        }
        Ok(())
    }

    fn client(&self, client_id: &str) -> Option<Arc<Client>> {
        self.clients
            .read()
            .iter()
            .find(|c| c.id() == client_id)
            .cloned()
    }

    /// The published key set.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.public_jwk()] })
    }

    /// Mints an access token directly (tests and tools). `patient` makes it a patient
    /// token (`patient`, `fhirUser`, `sub` = the patient id); otherwise `sub` is the client.
    /// Returns an empty string only if signing fails, which a valid key never does.
    pub fn issue_access_token(
        &self,
        client_id: &str,
        scope: &str,
        patient: Option<&str>,
    ) -> String {
        let login = patient.map(|p| Login::Patient(p.to_owned()));
        self.mint_access(client_id, scope, login.as_ref())
            .unwrap_or_else(|error| {
                tracing::error!(%error, "signing an access token failed");
                String::new()
            })
    }

    /// Mints a proxy's access token directly (tests and tools): `sub` is the login id,
    /// `fhirUser` the login's, and `patient` the array of every patient the login has a
    /// RelatedPerson for. Returns an empty string only if signing fails.
    pub fn issue_proxy_token(&self, client_id: &str, scope: &str, login: &ProxyLogin) -> String {
        let login = Login::Proxy(login.clone());
        self.mint_access(client_id, scope, Some(&login))
            .unwrap_or_else(|error| {
                tracing::error!(%error, "signing an access token failed");
                String::new()
            })
    }

    /// Verifies signature, `alg` (RS256 only), `kid`, `iss`, `aud` and `exp`; a token
    /// verified before is found by its digest and only `exp` is checked again.
    pub fn verify_access_token(&self, token: &str) -> Result<AccessClaims, AuthError> {
        if let Some(claims) = self.verified.get(token, unix_now()) {
            return Ok(claims);
        }
        let claims = self.verify_access_token_in_full(token)?;
        self.verified.insert(token, &claims);
        Ok(claims)
    }

    fn verify_access_token_in_full(&self, token: &str) -> Result<AccessClaims, AuthError> {
        let header = token.split('.').next().ok_or(AuthError::Malformed)?;
        let header: Value = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(AuthError::Malformed)?;
        match header.get("alg").and_then(Value::as_str) {
            Some("RS256") => {}
            Some(other) => {
                return Err(AuthError::UnsupportedAlgorithm(
                    other.chars().take(16).collect(),
                ));
            }
            None => return Err(AuthError::Malformed),
        }
        if let Some(kid) = header.get("kid")
            && kid.as_str() != Some(self.key.kid())
        {
            return Err(AuthError::UnknownKey);
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.fhir_base]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<AccessClaims>(token, self.key.decoding_key(), &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::InvalidSignature => AuthError::InvalidSignature,
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                        AuthError::WrongIssuerOrAudience
                    }
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                        AuthError::InvalidClaims
                    }
                    _ => AuthError::Malformed,
                }
            })
    }

    fn mint_access(
        &self,
        client_id: &str,
        scope: &str,
        login: Option<&Login>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = unix_now();
        let claims = TokenClaims {
            iss: &self.issuer,
            aud: &self.fhir_base,
            sub: login.map_or(client_id, Login::subject),
            client_id,
            exp: iat + self.token_lifetime_secs() as i64,
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            scope,
            patient: login.map(Login::patient_claim),
            fhir_user: login.map(Login::fhir_user),
        };
        self.key.sign(&claims)
    }

    fn mint_id_token(
        &self,
        client_id: &str,
        login: &Login,
        nonce: Option<&str>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = unix_now();
        let claims = IdTokenClaims {
            iss: &self.issuer,
            aud: client_id,
            sub: login.subject(),
            exp: iat + self.token_lifetime_secs() as i64,
            iat,
            fhir_user: login.fhir_user(),
            nonce,
        };
        self.key.sign(&claims)
    }

    /// Lets apps name `fhir_base` (for example a gateway's `/fhir`) as `aud` at
    /// `/authorize`, besides the sandbox's own FHIR base.
    pub fn add_audience(&self, fhir_base: &str) {
        let base = fhir_base.trim_end_matches('/').to_owned();
        let mut extra = self.extra_audiences.write();
        if !extra.contains(&base) {
            extra.push(base);
        }
    }

    fn accepts_audience(&self, aud: &str) -> bool {
        let aud = aud.trim_end_matches('/');
        aud == self.fhir_base || self.extra_audiences.read().iter().any(|a| a == aud)
    }

    /// `/auth/.well-known/openid-configuration`.
    pub(crate) fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "authorization_endpoint": format!("{}/authorize", self.issuer),
            "token_endpoint": self.token_url,
            "jwks_uri": format!("{}/jwks", self.issuer),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "fhirUser"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "ES384"],
            "code_challenge_methods_supported": ["S256"],
        })
    }
}

/// Appends query parameters (the `None` ones skipped) to a trusted redirect URI.
fn redirect_with(redirect_uri: &str, pairs: &[(&str, Option<&str>)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut query = url.query_pairs_mut();
                for (name, value) in pairs {
                    if let Some(value) = value {
                        query.append_pair(name, value);
                    }
                }
            }
            url.to_string()
        }
        // Only reachable for exact-match registrations that are not absolute URLs.
        Err(_) => redirect_uri.to_owned(),
    }
}

/// The SMART App Launch 2.x discovery document, served at
/// `/fhir/.well-known/smart-configuration`.
pub fn smart_configuration(server: &AuthServer) -> Value {
    json!({
        "issuer": server.issuer,
        "jwks_uri": format!("{}/jwks", server.issuer),
        "authorization_endpoint": format!("{}/authorize", server.issuer),
        "token_endpoint": server.token_url,
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "ES384"],
        "scopes_supported": [
            "openid", "fhirUser", "launch/patient", "offline_access", "online_access",
            "patient/*.read", "patient/*.write", "patient/*.*", "patient/*.rs", "patient/*.cruds",
            "system/*.read", "system/*.write", "system/*.*", "system/*.rs", "system/*.cruds"
        ],
        "response_types_supported": ["code"],
        "capabilities": [
            "launch-standalone",
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "context-standalone-patient",
            "permission-patient",
            "permission-v1",
            "permission-v2",
            "permission-offline",
            "permission-online",
            "sso-openid-connect"
        ],
        "code_challenge_methods_supported": ["S256"],
    })
}
