//! Configuration of the upstream EHR connection, as the gateway's TOML file spells it.
//!
//! Secrets are never inline: each is named by a file (`*_file`) or an environment
//! variable (`*_env`), and [`UpstreamConfig::resolve`] reads them once at start-up,
//! parses private keys and checks that they can sign, so that a bad credential stops
//! the process before it binds a port. Error messages name the file or variable that
//! is missing, never its contents.
//!
//! Durations accept `"5s"`, `"250ms"`, `"1m30s"` or a bare integer of milliseconds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::EncodingKey;
use serde::Deserialize;
use url::Url;

use crate::secret::SecretString;

/// The upstream EHR: where it is, how long to wait for it, how to authenticate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The FHIR R4 service base, e.g. `https://ehr.example.org/fhir/r4`.
    pub base_url: Url,
    /// Time allowed to establish a TCP + TLS connection (default 5 s).
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// Time allowed for one whole request, body included (default 30 s).
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub request_timeout: Duration,
    /// How long an idle pooled connection is kept (default 90 s).
    #[serde(
        default = "default_pool_idle_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub pool_idle_timeout: Duration,
    /// `User-Agent` sent upstream (default `portico/<version>`).
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Searches whose encoded query is longer than this many bytes are sent as
    /// `POST [type]/_search`; 0 means always GET (default 4096).
    #[serde(default = "default_search_post_threshold")]
    pub search_post_threshold: usize,
    /// How the gateway authenticates to the EHR.
    pub auth: UpstreamAuthConfig,
}

/// How the gateway authenticates to the EHR (`type = "..."` in TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpstreamAuthConfig {
    /// No `Authorization` header (an open test server).
    None,
    /// OAuth 2.0 client credentials with a client secret.
    ClientCredentials {
        token_url: Url,
        client_id: String,
        #[serde(default)]
        client_secret_file: Option<PathBuf>,
        #[serde(default)]
        client_secret_env: Option<String>,
        /// Space-separated scopes, e.g. `"system/*.read"`.
        #[serde(default)]
        scope: Option<String>,
        /// How the secret is presented: HTTP Basic (default) or form fields.
        #[serde(default)]
        client_auth: ClientAuthMethod,
    },
    /// SMART Backend Services: client credentials with a `private_key_jwt` assertion.
    BackendServices {
        token_url: Url,
        client_id: String,
        /// A PKCS#8 PEM private key (RSA keys may also be PKCS#1).
        #[serde(default)]
        private_key_file: Option<PathBuf>,
        #[serde(default)]
        private_key_env: Option<String>,
        algorithm: SigningAlgorithm,
        /// The `kid` header of the assertion: the key's id in the client's JWKS.
        #[serde(default)]
        kid: Option<String>,
        /// Space-separated scopes, e.g. `"system/Patient.rs system/Observation.rs"`.
        scope: String,
    },
    /// The caller's own bearer token is forwarded upstream.
    Passthrough,
}

/// How a client secret is presented to the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// `client_secret_basic`: HTTP Basic authentication.
    #[default]
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` form fields.
    Post,
}

/// The signature algorithm of a Backend Services client assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlgorithm {
    RS384,
    ES384,
}

impl SigningAlgorithm {
    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlgorithm::RS384 => jsonwebtoken::Algorithm::RS384,
            SigningAlgorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        }
    }
}

/// Why the upstream configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("upstream.auth: set one of {file_key} or {env_key}")]
    MissingSecretSource {
        file_key: &'static str,
        env_key: &'static str,
    },
    #[error("upstream.auth: set only one of {file_key} and {env_key}")]
    AmbiguousSecretSource {
        file_key: &'static str,
        env_key: &'static str,
    },
    #[error("cannot read {what} file {}: {source}", path.display())]
    ReadSecretFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("environment variable {var} ({what}) is not set or not unicode")]
    MissingEnv { what: &'static str, var: String },
    #[error("{what} from {origin} is empty")]
    EmptySecret { what: &'static str, origin: String },
    #[error("private key from {origin} is not a usable {algorithm:?} key")]
    InvalidKey {
        origin: String,
        algorithm: SigningAlgorithm,
    },
    #[error("{field} must be an http or https url")]
    UnsupportedUrl { field: &'static str },
    #[error("cannot build the http client: {detail}")]
    HttpClient { detail: String },
}

/// Authentication with its secrets read and its key parsed.
#[derive(Clone)]
pub enum ResolvedAuth {
    None,
    ClientCredentials {
        token_url: Url,
        client_id: String,
        client_secret: SecretString,
        scope: Option<String>,
        client_auth: ClientAuthMethod,
    },
    BackendServices {
        token_url: Url,
        client_id: String,
        key: EncodingKey,
        algorithm: SigningAlgorithm,
        kid: Option<String>,
        scope: String,
    },
    Passthrough,
}

impl std::fmt::Debug for ResolvedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolvedAuth::None => f.write_str("None"),
            ResolvedAuth::ClientCredentials {
                token_url,
                client_id,
                scope,
                client_auth,
                ..
            } => f
                .debug_struct("ClientCredentials")
                .field("token_url", &token_url.as_str())
                .field("client_id", client_id)
                .field("client_secret", &"[redacted]")
                .field("scope", scope)
                .field("client_auth", client_auth)
                .finish(),
            ResolvedAuth::BackendServices {
                token_url,
                client_id,
                algorithm,
                kid,
                scope,
                ..
            } => f
                .debug_struct("BackendServices")
                .field("token_url", &token_url.as_str())
                .field("client_id", client_id)
                .field("key", &"[redacted]")
                .field("algorithm", algorithm)
                .field("kid", kid)
                .field("scope", scope)
                .finish(),
            ResolvedAuth::Passthrough => f.write_str("Passthrough"),
        }
    }
}

/// An [`UpstreamConfig`] whose secrets have been read: what [`crate::FhirClient::new`] takes.
#[derive(Debug, Clone)]
pub struct ResolvedUpstreamConfig {
    pub base_url: Url,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub user_agent: String,
    pub search_post_threshold: usize,
    pub auth: ResolvedAuth,
}

impl UpstreamConfig {
    /// A configuration with default timeouts for `base_url` and `auth`.
    pub fn new(base_url: Url, auth: UpstreamAuthConfig) -> Self {
        UpstreamConfig {
            base_url,
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            pool_idle_timeout: default_pool_idle_timeout(),
            user_agent: None,
            search_post_threshold: default_search_post_threshold(),
            auth,
        }
    }

    /// Reads secrets from files and the process environment and checks them.
    pub fn resolve(&self) -> Result<ResolvedUpstreamConfig, ConfigError> {
        self.resolve_with(|var| std::env::var(var).ok())
    }

    /// [`resolve`](Self::resolve) with an explicit environment lookup (for tests and for
    /// callers that layer their own environment).
    pub fn resolve_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ResolvedUpstreamConfig, ConfigError> {
        check_http_url(&self.base_url, "upstream.base_url")?;
        let auth = match &self.auth {
            UpstreamAuthConfig::None => ResolvedAuth::None,
            UpstreamAuthConfig::Passthrough => ResolvedAuth::Passthrough,
            UpstreamAuthConfig::ClientCredentials {
                token_url,
                client_id,
                client_secret_file,
                client_secret_env,
                scope,
                client_auth,
            } => {
                check_http_url(token_url, "upstream.auth.token_url")?;
                let (secret, _) = read_secret(
                    "client secret",
                    ("client_secret_file", client_secret_file.as_deref()),
                    ("client_secret_env", client_secret_env.as_deref()),
                    &env,
                )?;
                ResolvedAuth::ClientCredentials {
                    token_url: token_url.clone(),
                    client_id: client_id.clone(),
                    client_secret: SecretString::new(secret.trim()),
                    scope: scope.clone().filter(|s| !s.trim().is_empty()),
                    client_auth: *client_auth,
                }
            }
            UpstreamAuthConfig::BackendServices {
                token_url,
                client_id,
                private_key_file,
                private_key_env,
                algorithm,
                kid,
                scope,
            } => {
                check_http_url(token_url, "upstream.auth.token_url")?;
                let (pem, origin) = read_secret(
                    "private key",
                    ("private_key_file", private_key_file.as_deref()),
                    ("private_key_env", private_key_env.as_deref()),
                    &env,
                )?;
                let invalid = || ConfigError::InvalidKey {
                    origin: origin.clone(),
                    algorithm: *algorithm,
                };
                let key = match algorithm {
                    SigningAlgorithm::RS384 => EncodingKey::from_rsa_pem(pem.as_bytes()),
                    SigningAlgorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
                }
                .map_err(|_| invalid())?;
                // Parsing PEM does not check the key material; signing does.
                crate::auth::sign_assertion(&key, *algorithm, kid.as_deref(), client_id, token_url)
                    .map_err(|_| invalid())?;
                ResolvedAuth::BackendServices {
                    token_url: token_url.clone(),
                    client_id: client_id.clone(),
                    key,
                    algorithm: *algorithm,
                    kid: kid.clone(),
                    scope: scope.clone(),
                }
            }
        };
        Ok(ResolvedUpstreamConfig {
            base_url: self.base_url.clone(),
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            user_agent: self
                .user_agent
                .clone()
                .unwrap_or_else(|| concat!("portico/", env!("CARGO_PKG_VERSION")).to_owned()),
            search_post_threshold: self.search_post_threshold,
            auth,
        })
    }
}

fn check_http_url(url: &Url, field: &'static str) -> Result<(), ConfigError> {
    if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() {
        Ok(())
    } else {
        Err(ConfigError::UnsupportedUrl { field })
    }
}

/// Reads one secret from exactly one of a file and an environment variable; returns the
/// value and a description of where it came from (for error messages).
fn read_secret(
    what: &'static str,
    (file_key, file): (&'static str, Option<&Path>),
    (env_key, var): (&'static str, Option<&str>),
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(String, String), ConfigError> {
    let (value, origin) = match (file, var) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::AmbiguousSecretSource { file_key, env_key });
        }
        (None, None) => return Err(ConfigError::MissingSecretSource { file_key, env_key }),
        (Some(path), None) => {
            let value =
                std::fs::read_to_string(path).map_err(|source| ConfigError::ReadSecretFile {
                    what,
                    path: path.to_owned(),
                    source,
                })?;
            (value, format!("file {}", path.display()))
        }
        (None, Some(var)) => {
            let value = env(var).ok_or_else(|| ConfigError::MissingEnv {
                what,
                var: var.to_owned(),
            })?;
            (value, format!("environment variable {var}"))
        }
    };
    if value.trim().is_empty() {
        return Err(ConfigError::EmptySecret { what, origin });
    }
    Ok((value, origin))
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_search_post_threshold() -> usize {
    4096
}
