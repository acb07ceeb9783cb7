//! Who may act for me: the patient's list of proxies (`GET /access`) and ending one's
//! access (`POST /access/{id}/revoke`).
//!
//! Both read the patient's `RelatedPerson` records through the guarded session (so they
//! are audited and checked like any read) and decide each with the gateway's
//! [`DelegationRules`], exactly as a proxy's own requests are decided. Only the patient
//! may see or change the list: a proxy acting for them is refused
//! (`proxy_not_permitted`).
//!
//! A revocation is written the way the EHR profile says (`[proxies] revoke`):
//! - `period`: the `RelatedPerson` written back with `period.end` set to this instant (a
//!   domain write, [`Ctx::update_with_rule`]: nothing else may change);
//! - `consent`: a `Consent` denying that `RelatedPerson` access from this instant (a
//!   record the gateway authors, [`Ctx::create_record`], once per idempotency key);
//! - `unsupported`: 501, the EHR manages proxies elsewhere.
//!
//! Either write goes through the gateway's cache, which drops what it kept about that
//! patient's relationships and Consents (on every replica when generations are shared),
//! so the proxy's next request — in an open session too — is decided without it.

use chrono::SecondsFormat;
use std::collections::BTreeSet;

use portico_access::delegation::{
    DelegationRules, Ended, Relationship, denied_by_consents, parse_date,
};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::context::{Ctx, Versioned};
use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::me::display_name;
use crate::profile::RevokeStrategy;
use crate::view::{str_at, string_at};

/// One person who may (or could once) act for the patient.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Proxy {
    /// The `RelatedPerson` id (what `revoke` takes).
    pub id: String,
    pub name: Option<String>,
    /// `RelatedPerson.relationship` codes (HL7 v3 RoleCode: `MTH`, `DAU`, `SPS`, ...).
    pub relationship: Vec<String>,
    /// `full`, `read-only` or `billing-only`.
    pub level: String,
    /// `period.start` and `period.end` as the EHR has them.
    pub start: Option<String>,
    pub end: Option<String>,
    /// `active`, or `ended`.
    pub status: String,
    /// Why an ended access ended: `inactive`, `not-started`, `period-ended`,
    /// `came-of-age`, `revoked` (by a Consent).
    pub ended_because: Option<String>,
}

/// The patient's proxies, in the EHR's order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccessList {
    pub proxies: Vec<Proxy>,
    pub stale: bool,
}

async fn birth_date(ctx: Ctx<'_>) -> PortalResult<Option<chrono::NaiveDate>> {
    let patient = ctx.read("Patient", ctx.patient()).await?;
    Ok(str_at(&patient.resource, "birthDate").and_then(parse_date))
}

/// The relationships the patient's active Consents deny now (none unless the profile
/// records revocations as Consents).
async fn revoked(ctx: Ctx<'_>) -> PortalResult<BTreeSet<String>> {
    if ctx.profile().proxies.revoke != RevokeStrategy::Consent {
        return Ok(BTreeSet::new());
    }
    let page = ctx
        .search(
            "Consent",
            &[
                ("status", "active".to_owned()),
                ("_count", "100".to_owned()),
            ],
        )
        .await?;
    Ok(denied_by_consents(&page.matches, ctx.now()))
}

fn view(
    rules: &DelegationRules,
    resource: &Value,
    birth: Option<chrono::NaiveDate>,
    revoked: &BTreeSet<String>,
    ctx: Ctx<'_>,
) -> Option<Proxy> {
    let relationship = Relationship::from_resource(resource, &rules.level_extension)?;
    if relationship.patient != ctx.patient() {
        return None;
    }
    let decided = if revoked.contains(&relationship.id) {
        Err(Ended::Revoked)
    } else {
        rules.in_force(&relationship, birth, ctx.now())
    };
    Some(Proxy {
        id: relationship.id.clone(),
        name: display_name(resource),
        level: rules.level_of(&relationship).as_str().to_owned(),
        relationship: relationship.codes.clone(),
        start: string_at(resource, "/period/start"),
        end: string_at(resource, "/period/end"),
        status: if decided.is_ok() { "active" } else { "ended" }.to_owned(),
        ended_because: decided.err().map(|e| e.as_str().to_owned()),
    })
}

/// `GET /access`.
pub async fn list(ctx: Ctx<'_>, rules: &DelegationRules) -> PortalResult<AccessList> {
    ctx.caller.require_self()?;
    let birth = birth_date(ctx).await?;
    let revoked = revoked(ctx).await?;
    let page = ctx
        .search("RelatedPerson", &[("_count", "100".to_owned())])
        .await?;
    Ok(AccessList {
        proxies: page
            .matches
            .iter()
            .filter_map(|r| view(rules, r, birth, &revoked, ctx))
            .collect(),
        stale: page.stale,
    })
}

/// `POST /access/{id}/revoke`: ends the proxy's access now; a relationship already
/// ended is answered as it is (a retry changes nothing).
pub async fn revoke(
    ctx: Ctx<'_>,
    rules: &DelegationRules,
    id: &str,
    idem: &Idem,
) -> PortalResult<Proxy> {
    ctx.caller.require_self()?;
    let strategy = ctx.profile().proxies.revoke;
    if strategy == RevokeStrategy::Unsupported {
        return Err(PortalError::not_supported(
            "this EHR keeps proxy access in its own administration; end it there",
        ));
    }
    // The relationship first: an unknown or foreign id is a 404 after one read.
    let current: Versioned = ctx.read("RelatedPerson", id).await?;
    let birth = birth_date(ctx).await?;
    let revoked = revoked(ctx).await?;
    let shown =
        view(rules, &current.resource, birth, &revoked, ctx).ok_or(PortalError::NotFound)?;
    if shown.status == "ended" {
        return Ok(shown);
    }
    let now = ctx.now().to_rfc3339_opts(SecondsFormat::Secs, true);
    if strategy == RevokeStrategy::Consent {
        ctx.create_record("Consent", denial(ctx, id, &now), idem)
            .await?;
        let revoked: BTreeSet<String> = [id.to_owned()].into();
        return view(rules, &current.resource, birth, &revoked, ctx).ok_or(PortalError::NotFound);
    }
    let mut new = current.resource.clone();
    match new.get_mut("period").and_then(Value::as_object_mut) {
        Some(period) => {
            period.insert("end".to_owned(), json!(now));
        }
        None => new["period"] = json!({"end": now}),
    }
    if let Some(map) = new.as_object_mut() {
        // The EHR stamps its own; a stale copy must not be sent back.
        map.remove("meta");
    }
    let written = ctx
        .update_with_rule("RelatedPerson", &current, new, only_period_end)
        .await?;
    view(rules, &written.resource, birth, &revoked, ctx).ok_or(PortalError::NotFound)
}

/// The `Consent` that ends `RelatedPerson/<id>`'s access from `now`: a patient-privacy
/// opt-out whose one provision denies that actor.
fn denial(ctx: Ctx<'_>, id: &str, now: &str) -> Value {
    json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
            "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0",
            "display": "Patient Consent"}]}],
        "patient": {"reference": ctx.caller.patient_reference()},
        "dateTime": now,
        "policyRule": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "OPTOUT"}]},
        "provision": {
            "type": "deny",
            "period": {"start": now},
            "actor": [{
                "role": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP"}]},
                "reference": {"reference": format!("RelatedPerson/{id}")}
            }]
        }
    })
}

/// The domain rule of a revocation: the `RelatedPerson` is unchanged but for
/// `period.end` (and the `meta` the EHR manages).
fn only_period_end(current: &Value, new: &Value) -> PortalResult<()> {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("meta");
            if let Some(period) = map.get_mut("period").and_then(Value::as_object_mut) {
                period.remove("end");
                if period.is_empty() {
                    map.remove("period");
                }
            }
        }
        v
    };
    let has_end = new
        .get("period")
        .and_then(|p| p.get("end"))
        .and_then(Value::as_str)
        .is_some();
    if has_end && strip(current) == strip(new) {
        Ok(())
    } else {
        Err(PortalError::invalid(
            "a revocation may only end the access period",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_changes_only_the_end() {
        let current = json!({"resourceType":"RelatedPerson","id":"rp","meta":{"versionId":"2"},
            "patient":{"reference":"Patient/p"},"period":{"start":"2020-01-01"}});
        let mut ended = current.clone();
        ended["period"]["end"] = json!("2026-12-06T10:00:00Z");
        ended.as_object_mut().unwrap().remove("meta");
        assert!(only_period_end(&current, &ended).is_ok());
        let mut moved = ended.clone();
        moved["patient"] = json!({"reference":"Patient/q"});
        assert!(only_period_end(&current, &moved).is_err());
        let mut restarted = ended.clone();
        restarted["period"]["start"] = json!("2021-01-01");
        assert!(only_period_end(&current, &restarted).is_err());
        assert!(only_period_end(&current, &current).is_err());
    }
}
