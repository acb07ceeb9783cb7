//! SMART scope strings: parsing a space-separated request and deciding which of the
//! requested scopes a client may be granted.
//!
//! A client's allow-list holds literal scopes (`openid`, `launch/patient`, ...) and
//! resource scopes such as `patient/*.*` or `system/*.read`. A requested resource scope
//! (SMART v1 `patient/Observation.read` or v2 `patient/Observation.rs`, granular v2
//! `patient/Observation.rs?category=laboratory` too) is granted when an allowed resource
//! scope has the same context, covers its resource type (`*` covers every type) and
//! includes every permission it asks for. Granted scopes are always the requested
//! strings themselves, in request order, never widened.

/// Permission bits, SMART v2 order: create, read, update, delete, search.
const C: u8 = 1;
const R: u8 = 2;
const U: u8 = 4;
const D: u8 = 8;
const S: u8 = 16;
const ALL: u8 = C | R | U | D | S;

/// A parsed `context/Type.permissions[?query]` scope.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourceScope<'a> {
    context: &'a str,
    resource: &'a str,
    permissions: u8,
    granular: bool,
}

fn parse_resource_scope(scope: &str) -> Option<ResourceScope<'_>> {
    let (context, rest) = scope.split_once('/')?;
    if !matches!(context, "patient" | "user" | "system") {
        return None;
    }
    let (body, query) = match rest.split_once('?') {
        Some((body, query)) => (body, Some(query)),
        None => (rest, None),
    };
    let (resource, permission) = body.rsplit_once('.')?;
    let resource_ok = resource == "*"
        || (resource.starts_with(|c: char| c.is_ascii_uppercase())
            && resource.chars().all(|c| c.is_ascii_alphabetic()));
    if !resource_ok {
        return None;
    }
    let v1 = match permission {
        "read" => Some(R | S),
        "write" => Some(C | U | D),
        "*" => Some(ALL),
        _ => None,
    };
    let permissions = match v1 {
        // Granular (query-restricted) scopes exist only in SMART v2.
        Some(_) if query.is_some() => return None,
        Some(bits) => bits,
        None => parse_v2_permissions(permission)?,
    };
    if query.is_some_and(str::is_empty) {
        return None;
    }
    Some(ResourceScope {
        context,
        resource,
        permissions,
        granular: query.is_some(),
    })
}

/// `c`, `r`, `u`, `d`, `s`, each at most once and in that order, at least one.
fn parse_v2_permissions(permission: &str) -> Option<u8> {
    let order = [('c', C), ('r', R), ('u', U), ('d', D), ('s', S)];
    let mut bits = 0;
    let mut next = 0;
    for ch in permission.chars() {
        let offset = order[next..].iter().position(|(letter, _)| *letter == ch)?;
        bits |= order[next + offset].1;
        next += offset + 1;
    }
    (bits != 0).then_some(bits)
}

/// Splits a space-separated scope parameter into distinct scopes, keeping their order.
pub(crate) fn split(scope: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in scope.split(' ').filter(|s| !s.is_empty()) {
        if !out.iter().any(|seen| seen == item) {
            out.push(item.to_owned());
        }
    }
    out
}

/// Whether `requested` may be granted under the allow-list `allowed`.
pub(crate) fn is_allowed(requested: &str, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a == requested) {
        return true;
    }
    let Some(wanted) = parse_resource_scope(requested) else {
        return false;
    };
    allowed
        .iter()
        .filter_map(|a| parse_resource_scope(a))
        .any(|grant| {
            !grant.granular
                && grant.context == wanted.context
                && (grant.resource == "*" || grant.resource == wanted.resource)
                && wanted.permissions & !grant.permissions == 0
        })
}

/// The requested scopes that `allowed` permits, in request order.
pub(crate) fn grant(requested: &[String], allowed: &[String]) -> Vec<String> {
    requested
        .iter()
        .filter(|s| is_allowed(s, allowed))
        .cloned()
        .collect()
}

/// Whether a granted scope set contains `scope` literally.
pub(crate) fn contains(granted: &[String], scope: &str) -> bool {
    granted.iter().any(|s| s == scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn wildcard_grants_v1_and_v2_forms() {
        let allowed = list(&["openid", "patient/*.*"]);
        for ok in [
            "patient/*.read",
            "patient/*.write",
            "patient/*.*",
            "patient/Observation.read",
            "patient/Observation.rs",
            "patient/*.cruds",
            "patient/Observation.rs?category=laboratory",
            "openid",
        ] {
            assert!(is_allowed(ok, &allowed), "{ok} should be allowed");
        }
        for refused in [
            "user/*.read",
            "system/*.read",
            "patient/*.sr",
            "patient/*.rr",
            "patient/observation.read",
            "patient/Observation.read?x=1",
            "patient/*.",
            "fhirUser",
            "launch",
        ] {
            assert!(
                !is_allowed(refused, &allowed),
                "{refused} should be refused"
            );
        }
    }

    #[test]
    fn narrower_grants_do_not_widen() {
        let allowed = list(&["system/*.read"]);
        assert!(is_allowed("system/Patient.rs", &allowed));
        assert!(is_allowed("system/*.r", &allowed));
        assert!(!is_allowed("system/*.write", &allowed));
        assert!(!is_allowed("system/*.cruds", &allowed));
        assert!(!is_allowed("system/*.*", &allowed));
    }

    #[test]
    fn split_dedupes_and_keeps_order() {
        assert_eq!(
            split("  openid  fhirUser openid patient/*.rs"),
            list(&["openid", "fhirUser", "patient/*.rs"])
        );
        let granted = grant(
            &split("openid launch patient/*.read user/*.read"),
            &list(&["openid", "patient/*.*"]),
        );
        assert_eq!(granted, list(&["openid", "patient/*.read"]));
    }
}
