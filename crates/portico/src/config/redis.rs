//! `[redis]`: state shared by every gateway replica. Unset (no `url`), each replica
//! keeps sessions, pending logins, idempotency records, per-object locks, offers and
//! cache generations in its own memory, as a single node does. Set, all of them live in
//! Redis (see `docs/ARCHITECTURE.md`, "A fleet").
//!
//! Secrets (the ACL password, the key that encrypts what Redis holds) come from files
//! or environment variables, never from this file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use portico_upstream::SecretString;

/// `[redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS). Unset: single-process stores.
    pub url: Option<url::Url>,
    /// The ACL user (Redis 6+); `None` for the default user.
    pub username: Option<String>,
    /// A file holding the ACL password (trailing whitespace ignored).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the ACL password.
    pub password_env: Option<String>,
    /// Prepended to every key, so that several deployments can share one Redis.
    pub key_prefix: String,
    /// How long to wait for a connection.
    pub connect_timeout_ms: u64,
    /// How long one command may take before the request that needed it fails (503).
    pub command_timeout_ms: u64,
    /// A file holding the 32-byte key (64 hex characters, or 32 raw bytes) that
    /// encrypts sessions, pending logins and remembered answers in Redis.
    pub encryption_key_file: Option<PathBuf>,
    /// An environment variable holding that key, hex-encoded.
    pub encryption_key_env: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            username: None,
            password_file: None,
            password_env: None,
            key_prefix: "portico:".to_owned(),
            connect_timeout_ms: 2_000,
            command_timeout_ms: 500,
            encryption_key_file: None,
            encryption_key_env: None,
        }
    }
}

impl RedisConfig {
    /// Whether replicas share state through Redis.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    /// The ACL password, when one is configured.
    pub fn resolve_password(&self) -> Result<Option<SecretString>, String> {
        match (&self.password_file, &self.password_env) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "config key `redis.password_file`: cannot read {}: {e}",
                        path.display()
                    )
                })?;
                Ok(Some(text.trim_end().into()))
            }
            (None, Some(var)) => std::env::var(var)
                .map(|v| Some(v.into()))
                .map_err(|_| format!("config key `redis.password_env`: `{var}` is not set")),
            (None, None) => Ok(None),
        }
    }

    /// The encryption key: 32 bytes, from the file (64 hex characters or 32 raw bytes)
    /// or the variable (hex).
    pub fn resolve_encryption_key(&self) -> Result<[u8; 32], String> {
        let raw: Vec<u8> = match (&self.encryption_key_file, &self.encryption_key_env) {
            (Some(path), _) => std::fs::read(path).map_err(|e| {
                format!(
                    "config key `redis.encryption_key_file`: cannot read {}: {e}",
                    path.display()
                )
            })?,
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| format!("config key `redis.encryption_key_env`: `{var}` is not set"))?
                .into_bytes(),
            (None, None) => {
                return Err(
                    "config key `redis.encryption_key_file`: a key is required when \
                            `redis.url` is set (Redis holds sessions and tokens)"
                        .to_owned(),
                );
            }
        };
        let text = String::from_utf8_lossy(&raw);
        let hex = text.trim();
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut key = [0u8; 32];
            for (i, byte) in key.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
            }
            return Ok(key);
        }
        <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| {
            "config key `redis.encryption_key_file`: the key must be 32 bytes (or 64 hex \
             characters)"
                .to_owned()
        })
    }

    /// The client's settings, secrets resolved; `None` when Redis is not configured.
    pub fn settings(&self) -> Result<Option<portico_redis::Settings>, String> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        Ok(Some(portico_redis::Settings {
            url: url.clone(),
            username: self.username.clone(),
            password: self.resolve_password()?.map(|p| p.expose().to_owned()),
            key_prefix: self.key_prefix.clone(),
            connect_timeout: self.connect_timeout(),
            command_timeout: self.command_timeout(),
            encryption_key: self.resolve_encryption_key()?,
        }))
    }

    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        let Some(url) = &self.url else {
            return;
        };
        if !matches!(url.scheme(), "redis" | "rediss") {
            problems.push("config key `redis.url`: must be a redis:// or rediss:// URL".to_owned());
        }
        if !url.password().unwrap_or_default().is_empty() {
            problems.push(
                "config key `redis.url`: put the password in `redis.password_file` or \
                 `redis.password_env`, not in the URL"
                    .to_owned(),
            );
        }
        if self.connect_timeout_ms == 0 || self.command_timeout_ms == 0 {
            problems.push(
                "config key `redis.command_timeout_ms`: timeouts must be greater than 0".to_owned(),
            );
        }
        if let Err(e) = self.resolve_password() {
            problems.push(e);
        }
        if let Err(e) = self.resolve_encryption_key() {
            problems.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_single_process_and_set_needs_an_encryption_key() {
        let mut config = RedisConfig::default();
        let mut problems = Vec::new();
        config.validate(&mut problems);
        assert!(problems.is_empty() && !config.enabled());
        config.url = Some(url::Url::parse("redis://127.0.0.1:6379/0").unwrap());
        config.validate(&mut problems);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("redis.encryption_key_file")),
            "{problems:?}"
        );
    }

    #[test]
    fn keys_are_hex_or_raw_and_exactly_32_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let hex = dir.path().join("hex");
        std::fs::write(&hex, format!("{}\n", "ab".repeat(32))).unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [7u8; 32]).unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").unwrap();
        let with = |path: &std::path::Path| RedisConfig {
            encryption_key_file: Some(path.to_owned()),
            ..RedisConfig::default()
        };
        assert_eq!(with(&hex).resolve_encryption_key().unwrap(), [0xab; 32]);
        assert_eq!(with(&raw).resolve_encryption_key().unwrap(), [7; 32]);
        assert!(with(&short).resolve_encryption_key().is_err());
    }

    #[test]
    fn a_password_in_the_url_is_refused() {
        let config = RedisConfig {
            url: Some(url::Url::parse("redis://user:secret@127.0.0.1/").unwrap()),
            encryption_key_env: Some("PORTICO_TEST_NO_SUCH_VAR".to_owned()),
            ..RedisConfig::default()
        };
        let mut problems = Vec::new();
        config.validate(&mut problems);
        assert!(
            problems.iter().any(|p| p.contains("not in the URL")),
            "{problems:?}"
        );
    }
}
