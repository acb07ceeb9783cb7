//! `[audit]` and `[audit.fhir]`: where access decisions are recorded, how safe a record
//! is when the request it describes goes on, and what happens when the trail cannot be
//! written. Checked with the rest of the configuration before a port is bound.

use std::path::{Path, PathBuf};

use portico_upstream::SecretString;
use serde::Deserialize;
use url::Url;

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The JSON-lines file (the `file` sink), appended to and created if missing.
    pub path: PathBuf,
    /// Where records go: any combination of `file`, `stdout` and `fhir`.
    pub sinks: Vec<SinkKind>,
    /// How safe a record is when `record` returns (see [`Durability`]).
    pub durability: Durability,
    /// What a request meets when its record cannot be written (see [`OnFailure`]).
    pub on_failure: OnFailure,
    /// The replica's name, stamped into every record's `instance`. Default: the
    /// `HOSTNAME` environment variable (the pod's name in Kubernetes), else
    /// `portico-<random>` chosen once per process.
    pub instance: Option<String>,
    /// The file is rotated before it would grow past this many bytes (0: never by size).
    pub max_file_bytes: u64,
    /// The file is rotated when a record arrives in a new period of this many seconds,
    /// counted from the Unix epoch (86400: at midnight UTC; 0: never by time).
    pub rotate_seconds: u64,
    /// The oldest rotated files are deleted while the active file and the rotated ones
    /// together exceed this many bytes (0: never delete). Deleting audit history is a
    /// retention decision: set it only to the site's retention policy.
    pub max_total_bytes: u64,
    /// `[audit.fhir]`: the FHIR AuditEvent sink, required when `sinks` names `fhir`.
    pub fhir: Option<FhirSinkConfig>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: "portico-audit.jsonl".into(),
            sinks: vec![SinkKind::File],
            durability: Durability::Written,
            on_failure: OnFailure::Refuse,
            instance: None,
            max_file_bytes: 100 * 1024 * 1024,
            rotate_seconds: 86_400,
            max_total_bytes: 0,
            fhir: None,
        }
    }
}

/// A destination of audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// The JSON-lines file at `path`, rotated and bounded.
    File,
    /// Standard output, one JSON line per record (logs go to standard error).
    Stdout,
    /// FHIR AuditEvents POSTed to `[audit.fhir] base_url`, through a local spool.
    Fhir,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::File => "file",
            SinkKind::Stdout => "stdout",
            SinkKind::Fhir => "fhir",
        }
    }
}

/// How safe a record is when `record` returns, that is before the response it
/// describes (or, for a write's attempt record, the write itself) goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The batch holding the record was written to the operating system (`write`
    /// returned): it survives a crash of the process, not of the machine. The writer
    /// also `fdatasync`s at least once a second while something is unsynced, so at
    /// most about a second of acknowledged records can be lost with the machine.
    Written,
    /// The batch was written and `fdatasync`ed: it survives a power loss.
    Synced,
    /// `record` returns once the record is queued. What is queued and not yet written
    /// when the process dies is lost (up to the queue's capacity), and a failure is
    /// only seen by later records: with `refuse`, `record` fails while the last batch
    /// failed. Written records are synced as in `written`.
    Async,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Written => "written",
            Durability::Synced => "synced",
            Durability::Async => "async",
        }
    }
}

/// What happens to a request whose record cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// `record` fails, and the request is refused (503 `audit_unavailable`): nothing
    /// happens that the trail does not show.
    Refuse,
    /// The failure is logged and counted, and the request goes on unaudited.
    Continue,
}

/// `[audit.fhir]`: FHIR AuditEvents for an audit repository (or the EHR itself).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirSinkConfig {
    /// The repository's FHIR base; events are POSTed to `<base_url>/AuditEvent`.
    pub base_url: Url,
    /// How the gateway authenticates to it.
    #[serde(default)]
    pub auth: FhirAuthKind,
    /// With `auth = "bearer"`: a file holding the token (re-read when the repository
    /// answers 401 or 403, so a rotated token is picked up).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// With `auth = "bearer"`: an environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Where events wait until the repository has taken them.
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    /// The most undelivered event bytes the spool holds; an event that does not fit is
    /// a write failure of the trail (see `on_failure`).
    #[serde(default = "default_max_spool_bytes")]
    pub max_spool_bytes: u64,
    /// How long one POST may take, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The first wait after a failed POST, in milliseconds; doubled per failure.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// The longest wait between attempts, in milliseconds.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// The token itself, never read from the file: set by code only (tests).
    #[serde(skip)]
    pub token: Option<SecretString>,
}

fn default_spool_dir() -> PathBuf {
    "portico-audit-spool".into()
}
fn default_max_spool_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_retry_initial_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    60_000
}

impl FhirSinkConfig {
    /// A sink for `base_url` with every other key at its default.
    pub fn new(base_url: Url) -> FhirSinkConfig {
        FhirSinkConfig {
            base_url,
            auth: FhirAuthKind::None,
            token_file: None,
            token_env: None,
            spool_dir: default_spool_dir(),
            max_spool_bytes: default_max_spool_bytes(),
            timeout_ms: default_timeout_ms(),
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            token: None,
        }
    }

    /// The bearer token for `auth = "bearer"`: in memory, else from the file, else from
    /// the variable. Errors name the key, never the token.
    pub fn resolve_token(&self) -> Result<SecretString, String> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        if let Some(path) = &self.token_file {
            return read_token_file(path);
        }
        if let Some(var) = &self.token_env {
            return match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned().into()),
                _ => Err(format!(
                    "config key `audit.fhir.token_env`: variable {var} is not set"
                )),
            };
        }
        Err("config key `audit.fhir.auth`: \"bearer\" needs token_file or token_env".to_owned())
    }

    fn validate(&self, upstream_has_credential: bool, problems: &mut Vec<String>) {
        if !matches!(self.base_url.scheme(), "http" | "https") {
            problems.push("config key `audit.fhir.base_url`: must be an http or https URL".into());
        }
        match self.auth {
            FhirAuthKind::Bearer => {
                if self.token_file.is_some() && self.token_env.is_some() {
                    problems.push(
                        "config key `audit.fhir.token_file`: set token_file or token_env, not both"
                            .into(),
                    );
                } else if let Err(e) = self.resolve_token() {
                    problems.push(e);
                }
            }
            FhirAuthKind::None | FhirAuthKind::Upstream => {
                if self.token_file.is_some() || self.token_env.is_some() {
                    problems.push(
                        "config key `audit.fhir.auth`: token_file and token_env need auth = \"bearer\""
                            .into(),
                    );
                }
                if self.auth == FhirAuthKind::Upstream && !upstream_has_credential {
                    problems.push(
                        "config key `audit.fhir.auth`: \"upstream\" needs the gateway's own EHR \
                         credential (upstream.auth client_credentials or backend_services)"
                            .into(),
                    );
                }
            }
        }
        for (key, value) in [
            ("max_spool_bytes", self.max_spool_bytes),
            ("timeout_ms", self.timeout_ms),
            ("retry_initial_ms", self.retry_initial_ms),
        ] {
            if value == 0 {
                problems.push(format!(
                    "config key `audit.fhir.{key}`: must be greater than 0"
                ));
            }
        }
        if self.retry_max_ms < self.retry_initial_ms {
            problems.push(
                "config key `audit.fhir.retry_max_ms`: must be at least retry_initial_ms".into(),
            );
        }
        if self.spool_dir.as_os_str().is_empty() {
            problems.push("config key `audit.fhir.spool_dir`: must not be empty".into());
        }
    }
}

/// Reads a bearer token file (trailing whitespace ignored).
pub(crate) fn read_token_file(path: &Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "config key `audit.fhir.token_file`: cannot read {}: {e}",
            path.display()
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "config key `audit.fhir.token_file`: {} is empty",
            path.display()
        ));
    }
    Ok(token.to_owned().into())
}

/// How the FHIR sink authenticates to the audit repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FhirAuthKind {
    /// No `Authorization` header.
    #[default]
    None,
    /// `Authorization: Bearer` with a token from `token_file` or `token_env`.
    Bearer,
    /// The gateway's own EHR credential (`[upstream.auth]` client credentials or Backend
    /// Services), for when the EHR is the audit repository.
    Upstream,
}

impl AuditConfig {
    /// Checks what serde cannot. `upstream_has_credential`: whether `[upstream.auth]`
    /// gives the gateway a token of its own (what `auth = "upstream"` reuses).
    pub fn validate(&self, upstream_has_credential: bool, problems: &mut Vec<String>) {
        if self.sinks.is_empty() {
            problems.push(
                "config key `audit.sinks`: name at least one of \"file\", \"stdout\", \"fhir\""
                    .into(),
            );
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            if self.sinks[..i].contains(sink) {
                problems.push(format!(
                    "config key `audit.sinks`: \"{}\" is listed twice",
                    sink.as_str()
                ));
            }
        }
        if self.has(SinkKind::File) && self.path.as_os_str().is_empty() {
            problems.push("config key `audit.path`: must not be empty".into());
        }
        if let Some(instance) = &self.instance
            && let Err(e) = check_instance(instance)
        {
            problems.push(format!("config key `audit.instance`: {e}"));
        }
        if self.max_total_bytes > 0 {
            if self.max_file_bytes == 0 && self.rotate_seconds == 0 {
                problems.push(
                    "config key `audit.max_total_bytes`: needs rotation (max_file_bytes or \
                     rotate_seconds) to have rotated files to delete"
                        .into(),
                );
            } else if self.max_file_bytes > 0 && self.max_total_bytes < self.max_file_bytes {
                problems.push(
                    "config key `audit.max_total_bytes`: must be at least max_file_bytes".into(),
                );
            }
        }
        match (&self.fhir, self.has(SinkKind::Fhir)) {
            (None, true) => problems.push(
                "config key `audit.fhir`: required when `audit.sinks` includes \"fhir\"".into(),
            ),
            (Some(_), false) => problems.push(
                "config key `audit.sinks`: add \"fhir\" to use the `[audit.fhir]` section".into(),
            ),
            (Some(fhir), true) => fhir.validate(upstream_has_credential, problems),
            (None, false) => {}
        }
    }

    /// Whether `sink` is configured.
    pub fn has(&self, sink: SinkKind) -> bool {
        self.sinks.contains(&sink)
    }

    /// The instance id: configured, else `HOSTNAME`, else random (once per call: the
    /// trail resolves it once at start).
    pub fn resolve_instance(&self) -> String {
        if let Some(instance) = &self.instance {
            return instance.clone();
        }
        match std::env::var("HOSTNAME") {
            Ok(host) if check_instance(&host).is_ok() => host,
            _ => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                format!("portico-{}", &id[..12])
            }
        }
    }
}

/// An instance id is short printable text without spaces.
fn check_instance(instance: &str) -> Result<(), &'static str> {
    if instance.is_empty() || instance.len() > 128 {
        return Err("must be 1 to 128 characters");
    }
    if instance
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err("must not contain spaces or control characters");
    }
    Ok(())
}
