//! What the gateway accepts from, and sends to, a browser: cookies, the `return_to`
//! path, and the CSRF rule for cookie-authenticated writes.
//!
//! Invariants:
//! - cookies the gateway sets are `HttpOnly`, `SameSite=Lax`, and `Secure` whenever the
//!   gateway's public URL is https;
//! - `return_to` is only ever a path on the gateway itself (no scheme, no host, no `//`,
//!   no backslash, no control character), so login cannot be used as an open redirect;
//! - a state-changing request authenticated by the session cookie needs the session's
//!   CSRF token in `X-CSRF-Token` (compared in constant time) and, when the browser sends
//!   `Origin` (or else `Referer`), the gateway's own origin.

use axum::http::{HeaderMap, HeaderValue, Method, header};
use sha2::{Digest, Sha256};

/// The header a portal SPA sends the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Longest `return_to` accepted.
const MAX_RETURN_TO: usize = 2048;

/// Compares secrets without leaking where they differ (or their lengths).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The value of cookie `name` in the request, if it was sent exactly once.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((n, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if n.trim() == name {
                if found.is_some() {
                    // Two cookies of one name (a sibling subdomain planting one): trust
                    // neither.
                    return None;
                }
                found = Some(v.trim());
            }
        }
    }
    found.filter(|v| !v.is_empty())
}

/// How the gateway's cookies are scoped.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    pub secure: bool,
}

impl CookiePolicy {
    /// A `Set-Cookie` value. `max_age` of zero deletes the cookie.
    pub fn set(&self, name: &str, value: &str, path: &str, max_age: u64) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; HttpOnly; SameSite=Lax; Path={path}; Max-Age={max_age}{secure}"
        ))
        .ok()
    }

    /// A `Set-Cookie` value that deletes the cookie.
    pub fn clear(&self, name: &str, path: &str) -> Option<HeaderValue> {
        self.set(name, "", path, 0)
    }
}

/// Checks a `return_to` and returns it: a path on the gateway, or `/` when absent.
pub fn return_to(raw: Option<&str>) -> Result<String, &'static str> {
    let Some(path) = raw else {
        return Ok("/".to_owned());
    };
    if path.is_empty() {
        return Ok("/".to_owned());
    }
    if path.len() > MAX_RETURN_TO {
        return Err("return_to is too long");
    }
    let bytes = path.as_bytes();
    if bytes[0] != b'/' {
        return Err("return_to must be a path on this gateway, starting with /");
    }
    if bytes.get(1).is_some_and(|b| matches!(b, b'/' | b'\\')) {
        return Err("return_to must not name another host");
    }
    // Visible ASCII only (clients percent-encode the rest): it goes into `Location`.
    if path.contains('\\') || !path.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("return_to contains characters that are not allowed");
    }
    // Encoded slashes and backslashes could be decoded into the above by a proxy.
    let lower = path.to_ascii_lowercase();
    if lower.starts_with("/%2f") || lower.starts_with("/%5c") || lower.contains("%5c") {
        return Err("return_to must not name another host");
    }
    // Belt and braces: resolved against the gateway, it must stay on the gateway.
    let base = url::Url::parse("http://gateway.invalid/").map_err(|_| "invalid return_to")?;
    match base.join(path) {
        Ok(u) if u.host_str() == Some("gateway.invalid") && u.scheme() == "http" => {
            Ok(path.to_owned())
        }
        _ => Err("return_to must be a path on this gateway"),
    }
}

/// Whether a request with this method changes state (and so needs the CSRF check when
/// cookie-authenticated).
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a cookie-authenticated write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("the X-CSRF-Token header is missing")]
    MissingToken,
    #[error("the X-CSRF-Token header does not match the session")]
    WrongToken,
    #[error("the request comes from another origin")]
    ForeignOrigin,
}

/// The CSRF rule for a cookie-authenticated, state-changing request. `public_origin` is
/// the gateway's origin (`https://portal.example.org`).
pub fn check_csrf(
    headers: &HeaderMap,
    session_token: &str,
    public_origin: &url::Origin,
) -> Result<(), CsrfError> {
    // The origin first: a foreign page is refused whatever else it sends.
    let origin_ok = match headers.get(header::ORIGIN) {
        Some(origin) => same_origin(origin, public_origin),
        None => match headers.get(header::REFERER) {
            Some(referer) => same_origin(referer, public_origin),
            None => true,
        },
    };
    if !origin_ok {
        return Err(CsrfError::ForeignOrigin);
    }
    let mut sent = headers.get_all(CSRF_HEADER).iter();
    let token = match (sent.next(), sent.next()) {
        (Some(v), None) => v.as_bytes(),
        (None, _) => return Err(CsrfError::MissingToken),
        (Some(_), Some(_)) => return Err(CsrfError::WrongToken),
    };
    if constant_time_eq(token, session_token.as_bytes()) {
        Ok(())
    } else {
        Err(CsrfError::WrongToken)
    }
}

/// Whether an `Origin` or `Referer` value names `expected` (`null` and garbage do not).
fn same_origin(value: &HeaderValue, expected: &url::Origin) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    match url::Url::parse(text) {
        Ok(url) => url.origin() == *expected && expected.is_tuple(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> url::Origin {
        url::Url::parse("https://portal.example.org")
            .unwrap()
            .origin()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn return_to_accepts_only_local_paths() {
        assert_eq!(return_to(None).unwrap(), "/");
        assert_eq!(return_to(Some("")).unwrap(), "/");
        assert_eq!(return_to(Some("/")).unwrap(), "/");
        assert_eq!(
            return_to(Some("/portal/appointments?tab=upcoming#x")).unwrap(),
            "/portal/appointments?tab=upcoming#x"
        );
        for bad in [
            "//evil.example",
            "//evil.example/path",
            "/\\evil.example",
            "\\\\evil.example",
            "http://evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "evil.example",
            "/%2F%2Fevil.example",
            "/%5Cevil.example",
            "/ok\r\nSet-Cookie: x=y",
            "/a\\b",
            "/a b",
            "/caf\u{e9}",
        ] {
            assert!(return_to(Some(bad)).is_err(), "accepted {bad:?}");
        }
        assert!(return_to(Some(&format!("/{}", "a".repeat(3000)))).is_err());
    }

    #[test]
    fn cookies_are_read_by_exact_name_and_once() {
        let h = headers(&[("cookie", "a=1; portico_session=abc; b=2")]);
        assert_eq!(cookie(&h, "portico_session"), Some("abc"));
        assert_eq!(cookie(&h, "portico"), None);
        let h = headers(&[("cookie", "x_portico_session=abc")]);
        assert_eq!(cookie(&h, "portico_session"), None);
        let h = headers(&[("cookie", "s=1"), ("cookie", "s=2")]);
        assert_eq!(cookie(&h, "s"), None);
        let h = headers(&[("cookie", "s=")]);
        assert_eq!(cookie(&h, "s"), None);
    }

    #[test]
    fn set_cookie_attributes() {
        let plain = CookiePolicy { secure: false }
            .set("s", "v", "/", 60)
            .unwrap();
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly"));
        assert!(plain.contains("SameSite=Lax"));
        assert!(plain.contains("Path=/"));
        assert!(!plain.contains("Secure"));
        let tls = CookiePolicy { secure: true }.clear("s", "/").unwrap();
        let tls = tls.to_str().unwrap();
        assert!(tls.contains("; Secure"));
        assert!(tls.contains("Max-Age=0"));
    }

    #[test]
    fn csrf_needs_the_token() {
        let o = origin();
        assert_eq!(
            check_csrf(&headers(&[]), "tok", &o),
            Err(CsrfError::MissingToken)
        );
        assert_eq!(
            check_csrf(&headers(&[("x-csrf-token", "tok2")]), "tok", &o),
            Err(CsrfError::WrongToken)
        );
        assert_eq!(
            check_csrf(
                &headers(&[("x-csrf-token", "tok"), ("x-csrf-token", "tok")]),
                "tok",
                &o
            ),
            Err(CsrfError::WrongToken)
        );
        assert_eq!(
            check_csrf(&headers(&[("x-csrf-token", "tok")]), "tok", &o),
            Ok(())
        );
    }

    #[test]
    fn csrf_checks_origin_then_referer() {
        let o = origin();
        let ok = [
            ("x-csrf-token", "tok"),
            ("origin", "https://portal.example.org"),
        ];
        assert_eq!(check_csrf(&headers(&ok), "tok", &o), Ok(()));
        for foreign in [
            "https://evil.example",
            "http://portal.example.org",
            "https://portal.example.org:8443",
            "null",
            "garbage",
        ] {
            let h = headers(&[("x-csrf-token", "tok"), ("origin", foreign)]);
            assert_eq!(
                check_csrf(&h, "tok", &o),
                Err(CsrfError::ForeignOrigin),
                "{foreign}"
            );
        }
        let h = headers(&[
            ("x-csrf-token", "tok"),
            ("referer", "https://evil.example/page"),
        ]);
        assert_eq!(check_csrf(&h, "tok", &o), Err(CsrfError::ForeignOrigin));
        let h = headers(&[
            ("x-csrf-token", "tok"),
            ("referer", "https://portal.example.org/app/page"),
        ]);
        assert_eq!(check_csrf(&h, "tok", &o), Ok(()));
    }

    #[test]
    fn safe_methods_are_not_writes() {
        assert!(!is_unsafe(&Method::GET));
        assert!(!is_unsafe(&Method::HEAD));
        assert!(is_unsafe(&Method::POST));
        assert!(is_unsafe(&Method::PUT));
        assert!(is_unsafe(&Method::PATCH));
        assert!(is_unsafe(&Method::DELETE));
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
