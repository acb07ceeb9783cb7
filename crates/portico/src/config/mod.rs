//! Gateway configuration: one TOML file plus `PORTICO__SECTION__KEY` environment
//! overrides, checked completely before any port is bound.
//!
//! Secrets never live in this file: the upstream section names a file or an environment
//! variable to read them from. A bad configuration is reported with the dotted key that
//! is wrong, and the binary exits with status 64 (`EX_USAGE`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod proxies;
mod redis;
mod web;

pub use proxies::ProxiesConfig;
pub use redis::RedisConfig;
pub use web::WebConfig;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use url::Url;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub ehr: EhrConfig,
    pub upstream: portico_upstream::UpstreamConfig,
    pub auth: AuthConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub facade: FacadeConfig,
    /// `[cache]`: the read cache in front of the EHR.
    #[serde(default)]
    pub cache: portico_cache::CacheConfig,
    /// `[resilience]`: retries, circuit breaker, concurrency limit toward the EHR.
    #[serde(default)]
    pub resilience: portico_upstream::ResilienceConfig,
    #[serde(default)]
    pub login: LoginConfig,
    /// `[portal]`: the portal API.
    #[serde(default)]
    pub portal: PortalConfig,
    /// `[redis]`: state shared by replicas (unset: single process).
    #[serde(default)]
    pub redis: RedisConfig,
    /// `[web]`: the reference patient portal's pages.
    #[serde(default)]
    pub web: WebConfig,
    /// `[proxies]`: what those who act for a patient may do and see.
    #[serde(default)]
    pub proxies: ProxiesConfig,
}

/// `[login]`: the portal login (BFF) under `/auth`. The gateway logs patients in at the
/// EHR's authorization server as a confidential client and keeps their tokens on the
/// server; the browser only holds an opaque session cookie. Disabled unless `client_id`
/// is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// The gateway's client id at the authorization server.
    pub client_id: Option<String>,
    /// A file holding the client secret (trailing whitespace ignored).
    pub client_secret_file: Option<std::path::PathBuf>,
    /// An environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// The secret itself, never read from the file: the demo passes the sandbox's
    /// generated secret in memory.
    #[serde(skip)]
    pub client_secret: Option<portico_upstream::SecretString>,
    /// The scopes requested, space-separated.
    pub scopes: String,
    /// The `aud` sent to the authorization server. Default: the EHR's FHIR base.
    pub aud: Option<String>,
    /// The session cookie's name.
    pub cookie_name: String,
    /// A session unused for this long ends, in seconds.
    pub idle_timeout_seconds: u64,
    /// A session ends this long after login whatever its use, in seconds.
    pub absolute_timeout_seconds: u64,
    /// How long a started login may take to come back to `/auth/callback`, in seconds.
    pub pending_timeout_seconds: u64,
    /// An access token expiring within this many seconds is refreshed before use.
    pub refresh_margin_seconds: u64,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            client_id: None,
            client_secret_file: None,
            client_secret_env: None,
            client_secret: None,
            scopes: "openid fhirUser launch/patient offline_access patient/*.rs patient/*.cud"
                .to_owned(),
            aud: None,
            cookie_name: "portico_session".to_owned(),
            idle_timeout_seconds: 30 * 60,
            absolute_timeout_seconds: 12 * 3600,
            pending_timeout_seconds: 10 * 60,
            refresh_margin_seconds: 60,
        }
    }
}

impl LoginConfig {
    /// The client secret: in memory, else from the file, else from the variable. `None`
    /// when none is configured (a public client).
    pub fn resolve_secret(&self) -> Result<Option<portico_upstream::SecretString>, String> {
        if let Some(secret) = &self.client_secret {
            return Ok(Some(secret.clone()));
        }
        secret_from(
            "login",
            self.client_secret_file.as_deref(),
            self.client_secret_env.as_deref(),
        )
    }

    fn validate(&self, problems: &mut Vec<String>) {
        if self.client_id.as_deref().is_some_and(str::is_empty) {
            problems.push("config key `login.client_id`: must not be empty".to_owned());
        }
        if self.client_id.is_some()
            && let Err(e) = self.resolve_secret()
        {
            problems.push(e);
        }
        if self.scopes.split_whitespace().next().is_none() {
            problems.push("config key `login.scopes`: must name at least one scope".to_owned());
        }
        let cookie_ok = !self.cookie_name.is_empty()
            && self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !cookie_ok {
            problems.push(
                "config key `login.cookie_name`: use letters, digits, `_`, `-` and `.` only"
                    .to_owned(),
            );
        }
        for (key, value) in [
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            ("absolute_timeout_seconds", self.absolute_timeout_seconds),
            ("pending_timeout_seconds", self.pending_timeout_seconds),
        ] {
            if value == 0 {
                problems.push(format!("config key `login.{key}`: must be greater than 0"));
            }
        }
    }
}

/// `[auth]`: how inbound bearer tokens (from SMART apps and portal frontends) are
/// verified, and where clients log in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The authorization server's issuer (`iss` of the tokens it signs).
    pub issuer: Url,
    /// Its JWKS. Default: the `jwks_uri` of the EHR's `.well-known/smart-configuration`,
    /// else of `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<Url>,
    /// Accepted `aud` values. Default: the gateway's own `/fhir` base and the EHR's base.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Where apps send users to log in, and exchange codes. Default: discovered from the
    /// EHR's `.well-known/smart-configuration`.
    #[serde(default)]
    pub authorize_url: Option<Url>,
    #[serde(default)]
    pub token_url: Option<Url>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 30).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Claim names, for EHRs that differ from SMART's.
    #[serde(default)]
    pub claims: ClaimNamesConfig,
    /// Opaque tokens are accepted only when this is set.
    #[serde(default)]
    pub introspection: Option<IntrospectionConfig>,
}

fn default_leeway() -> u64 {
    30
}

/// `[auth.introspection]`: RFC 7662 introspection for opaque (non-JWT) tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint.
    pub url: Url,
    /// The gateway's client at the authorization server (HTTP Basic authentication).
    pub client_id: String,
    #[serde(default)]
    pub client_secret_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
}

impl IntrospectionConfig {
    pub fn resolve_secret(&self) -> Result<portico_upstream::SecretString, String> {
        secret_from(
            "auth.introspection",
            self.client_secret_file.as_deref(),
            self.client_secret_env.as_deref(),
        )?
        .ok_or_else(|| {
            "config key `auth.introspection`: set client_secret_file or client_secret_env"
                .to_owned()
        })
    }
}

/// A secret from a file (trailing whitespace ignored) or else an environment variable;
/// `None` when neither is configured. Errors name the key, never the secret.
pub fn secret_from(
    section: &str,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<Option<portico_upstream::SecretString>, String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "config key `{section}.client_secret_file`: cannot read {}: {e}",
                path.display()
            )
        })?;
        let secret = text.trim_end();
        if secret.is_empty() {
            return Err(format!(
                "config key `{section}.client_secret_file`: {} is empty",
                path.display()
            ));
        }
        return Ok(Some(secret.into()));
    }
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v.into())),
            _ => Err(format!(
                "config key `{section}.client_secret_env`: variable {var} is not set"
            )),
        };
    }
    Ok(None)
}

/// `[auth.claims]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimNamesConfig {
    pub patient: String,
    pub fhir_user: String,
    pub scope: String,
    pub scp: String,
}

impl Default for ClaimNamesConfig {
    fn default() -> Self {
        ClaimNamesConfig {
            patient: "patient".into(),
            fhir_user: "fhirUser".into(),
            scope: "scope".into(),
            scp: "scp".into(),
        }
    }
}

/// `[audit]` and `[audit.fhir]` live with the audit trail (`audit/config.rs`).
pub use crate::audit::config::{
    AuditConfig, Durability, FhirAuthKind, FhirSinkConfig, OnFailure, SinkKind,
};

/// `[facade]`: the SMART-on-FHIR endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FacadeConfig {
    /// How long a paging link stays valid, in seconds.
    pub cursor_ttl_seconds: u64,
    /// A file with the keys that sign paging cursors, one per line (each at least 32
    /// characters): the first signs, all verify (see `facade/cursor.rs` on rotation).
    /// Default: a random key per process, so links die with a restart and do not work
    /// on other replicas.
    pub cursor_key_file: Option<std::path::PathBuf>,
}

impl Default for FacadeConfig {
    fn default() -> Self {
        FacadeConfig {
            cursor_ttl_seconds: 3600,
            cursor_key_file: None,
        }
    }
}

/// `[server]`: where the gateway listens and how it protects itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind, e.g. `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// The URL clients use to reach the gateway (behind a proxy, the public one). Links
    /// and redirects the gateway emits are built from it. Defaults to `http://<listen>`.
    pub public_url: Option<Url>,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Longest time one request may take end to end, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long in-flight requests get to finish after SIGTERM, in milliseconds.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            body_limit_bytes: 1024 * 1024,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl ServerConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// `[log]`: application logs (never patient data, never tokens).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `portico=debug,tower_http=info`.
    /// `RUST_LOG` overrides it when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[ehr]`: what kind of EHR sits behind the upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EhrConfig {
    /// The built-in EHR profile: `generic-r4`, `cerner` or `epic` (`config/ehr/`).
    pub profile: EhrProfile,
    /// A site's own profile file (same format as `config/ehr/*.toml`); replaces
    /// `profile` when set.
    pub profile_file: Option<PathBuf>,
    /// Read the EHR's CapabilityStatement at start and refuse to run when the profile
    /// needs an interaction it does not declare.
    pub check_capabilities: bool,
}

impl Default for EhrConfig {
    fn default() -> Self {
        EhrConfig {
            profile: EhrProfile::GenericR4,
            profile_file: None,
            check_capabilities: true,
        }
    }
}

impl EhrConfig {
    /// The profile to run with: the file when set, else the built-in one.
    pub fn load_profile(&self) -> Result<portico_portal::EhrProfile, String> {
        match &self.profile_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "config key `ehr.profile_file`: cannot read {}: {e}",
                        path.display()
                    )
                })?;
                portico_portal::EhrProfile::parse(&path.display().to_string(), &text)
                    .map_err(|e| format!("config key `ehr.profile_file`: {e}"))
            }
            None => portico_portal::EhrProfile::built_in(self.profile.name())
                .map_err(|e| format!("config key `ehr.profile`: {e}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EhrProfile {
    GenericR4,
    Cerner,
    Epic,
}

impl EhrProfile {
    pub fn name(self) -> &'static str {
        match self {
            EhrProfile::GenericR4 => "generic-r4",
            EhrProfile::Cerner => "cerner",
            EhrProfile::Epic => "epic",
        }
    }
}

/// `[portal]`: the portal API under `/api/v1`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    /// The overall deadline of one portal request, all its upstream calls included
    /// (answered 504 `deadline_exceeded` when passed).
    pub deadline_ms: u64,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl_seconds: u64,
    /// The payment processor: `none` (payments are refused) or `sandbox` (a fake
    /// processor for the demo and tests: token `tok_ok` succeeds, `tok_declined` is
    /// declined).
    pub payment_processor: PaymentProcessorKind,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            deadline_ms: 15_000,
            idempotency_ttl_seconds: 24 * 3600,
            payment_processor: PaymentProcessorKind::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PaymentProcessorKind {
    None,
    Sandbox,
}

/// A configuration problem, naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Loads `path` (TOML), applies `PORTICO__SECTION__KEY` overrides from the process
    /// environment, and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_sources(&text, Env::prefixed("PORTICO__").split("__"))
    }

    /// Loads from TOML text and an environment provider; the seam tests use.
    pub fn from_sources(toml: &str, env: Env) -> Result<Config, ConfigError> {
        let figment = Figment::new().merge(Toml::string(toml)).merge(env);
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: relations between keys and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let s = &self.server;
        if s.body_limit_bytes == 0 {
            problems
                .push("config key `server.body_limit_bytes`: must be greater than 0".to_owned());
        }
        if s.request_timeout_ms == 0 {
            problems
                .push("config key `server.request_timeout_ms`: must be greater than 0".to_owned());
        }
        if let Some(url) = &s.public_url
            && !matches!(url.scheme(), "http" | "https")
        {
            problems
                .push("config key `server.public_url`: must be an http or https URL".to_owned());
        }
        if let Some(i) = &self.auth.introspection
            && let Err(e) = i.resolve_secret()
        {
            problems.push(e);
        }
        if !matches!(self.auth.issuer.scheme(), "http" | "https") {
            problems.push("config key `auth.issuer`: must be an http or https URL".to_owned());
        }
        if self.facade.cursor_ttl_seconds == 0 {
            problems
                .push("config key `facade.cursor_ttl_seconds`: must be greater than 0".to_owned());
        }
        if let Some(path) = &self.facade.cursor_key_file {
            match std::fs::read(path) {
                Ok(keys) => {
                    if let Err(e) = crate::facade::cursor::CursorKey::from_file_contents(&keys) {
                        problems.push(format!("config key `facade.cursor_key_file`: {e}"));
                    }
                }
                Err(e) => problems.push(format!(
                    "config key `facade.cursor_key_file`: cannot read {}: {e}",
                    path.display()
                )),
            }
        }
        self.login.validate(&mut problems);
        self.redis.validate(&mut problems);
        self.web.validate(&mut problems);
        self.proxies.validate(&mut problems);
        let upstream_has_credential = matches!(
            self.upstream.auth,
            portico_upstream::UpstreamAuthConfig::ClientCredentials { .. }
                | portico_upstream::UpstreamAuthConfig::BackendServices { .. }
        );
        self.audit.validate(upstream_has_credential, &mut problems);
        if self.portal.deadline_ms == 0 {
            problems.push("config key `portal.deadline_ms`: must be greater than 0".to_owned());
        }
        if self.portal.idempotency_ttl_seconds == 0 {
            problems.push(
                "config key `portal.idempotency_ttl_seconds`: must be greater than 0".to_owned(),
            );
        }
        match self.ehr.load_profile() {
            Ok(profile) => {
                let passthrough = matches!(
                    self.upstream.auth,
                    portico_upstream::UpstreamAuthConfig::Passthrough
                );
                if let Err(e) = profile.check_credential(passthrough) {
                    problems.push(format!("config key `ehr.profile`: {e}"));
                }
            }
            Err(e) => problems.push(e),
        }
        if let Err(e) = self.log.level.parse::<tracing_subscriber::EnvFilter>() {
            problems.push(format!("config key `log.level`: not a valid filter: {e}"));
        }
        // Resolving reads the secret files and variables and parses keys, so a missing
        // or broken credential stops the process before it binds a port.
        if let Err(e) = self.upstream.resolve() {
            problems.push(format!("config: {e}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The gateway's own FHIR base (`<public_url>/fhir`).
    pub fn fhir_base(&self) -> String {
        format!("{}/fhir", self.public_url())
    }

    /// The accepted token audiences: configured, or the gateway's and the EHR's bases.
    pub fn audiences(&self) -> Vec<String> {
        if !self.auth.audiences.is_empty() {
            return self.auth.audiences.clone();
        }
        vec![
            self.fhir_base(),
            self.upstream
                .base_url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        ]
    }

    /// The public URL of the gateway, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.server.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.server.listen),
        }
    }
}

/// Turns figment's errors into one line per problem, each naming the dotted key.
fn describe(error: figment::Error) -> Vec<String> {
    error
        .into_iter()
        .map(|e| {
            use figment::error::Kind;
            let mut key = e.path.join(".");
            let what = match &e.kind {
                Kind::UnknownField(field, expected) => {
                    key = with_field(&e.path, field);
                    format!(
                        "is not a known key (expected one of: {})",
                        expected.join(", ")
                    )
                }
                Kind::MissingField(field) => {
                    key = with_field(&e.path, field);
                    "is required but missing".to_owned()
                }
                other => other.to_string(),
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if key.is_empty() {
                format!("config: {what}{source}")
            } else {
                format!("config key `{key}`: {what}{source}")
            }
        })
        .collect()
}

/// The dotted key of `field` under `path`; figment sometimes already ends the path
/// with the field, sometimes not.
fn with_field(path: &[String], field: &str) -> String {
    match path.last() {
        Some(last) if last == field => path.join("."),
        Some(_) => format!("{}.{field}", path.join(".")),
        None => field.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [upstream]
        base_url = "http://127.0.0.1:8090/fhir"
        [upstream.auth]
        type = "none"
        [auth]
        issuer = "http://127.0.0.1:8090/auth"
    "#;

    fn no_env() -> Env {
        Env::prefixed("PORTICO_TEST_NOTHING_SET__").split("__")
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_sources(MINIMAL, no_env()).unwrap();
        assert_eq!(c.server.listen.port(), 8080);
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
        assert_eq!(c.ehr.profile, EhrProfile::GenericR4);
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn unknown_key_is_named() {
        let text = format!("{MINIMAL}\n[server]\nlisen = \"0.0.0.0:1\"\n");
        let err = Config::from_sources(&text, no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`server.lisen`"), "{err}");
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let text = format!("{MINIMAL}\n[server]\nlisten = \"not an address\"\n");
        let err = Config::from_sources(&text, no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`server.listen`"), "{err}");
    }

    #[test]
    fn missing_section_is_named() {
        let err = Config::from_sources("", no_env()).unwrap_err().to_string();
        assert!(err.contains("`upstream`"), "{err}");
    }

    #[test]
    fn semantic_checks() {
        let text = format!("{MINIMAL}\n[server]\nbody_limit_bytes = 0\n");
        let err = Config::from_sources(&text, no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`server.body_limit_bytes`"), "{err}");
        let text = format!("{MINIMAL}\n[ehr]\nprofile = \"allscripts\"\n");
        let err = Config::from_sources(&text, no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`ehr.profile`"), "{err}");
    }

    #[test]
    fn login_section() {
        let c = Config::from_sources(MINIMAL, no_env()).unwrap();
        assert!(
            c.login.client_id.is_none(),
            "login is off unless configured"
        );
        assert_eq!(c.login.cookie_name, "portico_session");
        assert!(c.login.scopes.split(' ').any(|s| s == "offline_access"));

        let text = format!(
            "{MINIMAL}\n[login]\nclient_id = \"portal\"\nclient_secret_env = \"PORTICO_TEST_UNSET_SECRET\"\n"
        );
        let err = Config::from_sources(&text, no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`login.client_secret_env`"), "{err}");

        let text = format!("{MINIMAL}\n[login]\ncookie_name = \"a;b\"\nidle_timeout_seconds = 0\n");
        let err = Config::from_sources(&text, no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`login.cookie_name`"), "{err}");
        assert!(err.contains("`login.idle_timeout_seconds`"), "{err}");

        // Secrets never live in the file.
        let text = format!("{MINIMAL}\n[login]\nclient_secret = \"inline\"\n");
        let err = Config::from_sources(&text, no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`login.client_secret`"), "{err}");
    }

    #[test]
    fn audit_section() {
        let c = Config::from_sources(MINIMAL, no_env()).unwrap();
        assert_eq!(c.audit.sinks, vec![SinkKind::File]);
        assert_eq!(c.audit.durability, Durability::Written);
        assert_eq!(c.audit.on_failure, OnFailure::Refuse);
        assert_eq!(
            c.audit.max_total_bytes, 0,
            "no audit history is deleted by default"
        );
        assert!(c.audit.max_file_bytes > 0 && c.audit.rotate_seconds == 86_400);

        let text = format!(
            "{MINIMAL}\n[audit]\nsinks = [\"file\", \"stdout\", \"fhir\"]\ndurability = \"synced\"\non_failure = \"continue\"\ninstance = \"gw-1\"\n[audit.fhir]\nbase_url = \"https://audit.example/fhir\"\nspool_dir = \"/tmp/spool\"\n"
        );
        let c = Config::from_sources(&text, no_env()).unwrap();
        assert_eq!(c.audit.durability, Durability::Synced);
        assert_eq!(c.audit.on_failure, OnFailure::Continue);
        assert_eq!(c.audit.resolve_instance(), "gw-1");
        let fhir = c.audit.fhir.unwrap();
        assert_eq!(fhir.auth, FhirAuthKind::None);
        assert_eq!(fhir.base_url.as_str(), "https://audit.example/fhir");

        let named = |extra: &str, key: &str| {
            let text = format!("{MINIMAL}\n{extra}\n");
            let err = Config::from_sources(&text, no_env())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{key} not named for {extra:?}: {err}");
        };
        named("[audit]\ndurability = \"fsync\"", "`audit.durability`");
        named("[audit]\non_failure = \"ignore\"", "`audit.on_failure`");
        named("[audit]\nsinks = [\"syslog\"]", "`audit.sinks");
        named("[audit]\nsinks = []", "`audit.sinks`");
        named("[audit]\nsinks = [\"file\", \"file\"]", "`audit.sinks`");
        named("[audit]\ninstance = \"two words\"", "`audit.instance`");
        named(
            "[audit]\nmax_file_bytes = 1000\nmax_total_bytes = 10",
            "`audit.max_total_bytes`",
        );
        named("[audit]\nsinks = [\"fhir\"]", "`audit.fhir`");
        named(
            "[audit.fhir]\nbase_url = \"https://audit.example/fhir\"",
            "`audit.sinks`",
        );
        let fhir =
            "[audit]\nsinks = [\"fhir\"]\n[audit.fhir]\nbase_url = \"https://audit.example/fhir\"";
        named(&format!("{fhir}\nauth = \"bearer\""), "`audit.fhir.auth`");
        named(
            &format!("{fhir}\nauth = \"bearer\"\ntoken_env = \"PORTICO_TEST_UNSET_AUDIT_TOKEN\""),
            "`audit.fhir.token_env`",
        );
        // The upstream in MINIMAL has no credential of its own to lend.
        named(&format!("{fhir}\nauth = \"upstream\""), "`audit.fhir.auth`");
        named(
            &format!("{fhir}\nretry_initial_ms = 0"),
            "`audit.fhir.retry_initial_ms`",
        );
        // Tokens never live in the file.
        named(&format!("{fhir}\ntoken = \"inline\""), "`audit.fhir.token`");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns figment::Error
    fn env_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PORTICO__SERVER__LISTEN", "127.0.0.1:9999");
            jail.set_env("PORTICO__LOG__FORMAT", "json");
            let c = Config::from_sources(MINIMAL, Env::prefixed("PORTICO__").split("__")).unwrap();
            assert_eq!(c.server.listen.port(), 9999);
            assert_eq!(c.log.format, LogFormat::Json);
            jail.set_env("PORTICO__SERVER__NOPE", "1");
            let err = Config::from_sources(MINIMAL, Env::prefixed("PORTICO__").split("__"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("`server.nope`"), "{err}");
            Ok(())
        });
    }
}
