//! `[web]`: the reference patient portal's pages (`crates/portico/src/web/`), served by
//! the gateway behind the portal login. A hospital that brings its own frontend turns
//! them off with `enabled = false`; the portal API under `/api/v1` stays.

use serde::Deserialize;

/// `[web]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Whether the gateway serves the portal's pages.
    pub enabled: bool,
    /// Where the pages live: `/` (the default) or a path such as `/portal`.
    pub prefix: String,
    /// How many seconds before the session's idle end the pages warn the patient and
    /// offer to stay signed in.
    pub timeout_warning_seconds: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            prefix: "/".to_owned(),
            timeout_warning_seconds: 120,
        }
    }
}

/// Path segments the gateway's other routers own; the portal cannot live under them.
const RESERVED: &[&str] = &[
    "api",
    "fhir",
    "auth",
    "healthz",
    "readyz",
    "metrics",
    ".well-known",
];

impl WebConfig {
    /// The prefix without a trailing slash: `""` for `/`, `/portal` for `/portal/`.
    pub fn base(&self) -> &str {
        self.prefix.trim_end_matches('/')
    }

    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        let p = &self.prefix;
        let ok_chars = p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'));
        if !p.starts_with('/') || p.contains("//") || p.contains("/.") || !ok_chars {
            problems.push(
                "config key `web.prefix`: must be `/` or a path such as `/portal` \
                 (letters, digits, `-`, `_`)"
                    .to_owned(),
            );
            return;
        }
        let first = self.base().trim_start_matches('/').split('/').next();
        if let Some(first) = first
            && RESERVED.contains(&first)
        {
            problems.push(format!(
                "config key `web.prefix`: `/{first}` belongs to the gateway's own routes"
            ));
        }
        if self.timeout_warning_seconds == 0 {
            problems.push(
                "config key `web.timeout_warning_seconds`: must be greater than 0".to_owned(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        WebConfig {
            prefix: prefix.to_owned(),
            ..WebConfig::default()
        }
        .validate(&mut p);
        p
    }

    #[test]
    fn prefixes() {
        assert!(problems("/").is_empty());
        assert!(problems("/portal").is_empty());
        assert!(problems("/portal/").is_empty());
        assert_eq!(WebConfig::default().base(), "");
        for bad in [
            "", "portal", "//x", "/a b", "/api", "/fhir/x", "/auth", "/../x",
        ] {
            assert!(!problems(bad).is_empty(), "{bad:?}");
        }
    }
}
