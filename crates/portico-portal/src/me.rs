//! `GET /me`: who the portal is acting for.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::context::Ctx;
use crate::error::PortalResult;
use crate::view::{array, str_at};

/// The acting patient, as the portal greets them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Me {
    /// The FHIR Patient id.
    pub id: String,
    /// The name to show (`official` or `usual` name, as text).
    pub name: Option<String>,
    pub birth_date: Option<String>,
    pub gender: Option<String>,
    /// Phone numbers and e-mail addresses on file.
    pub contact: Vec<String>,
    /// The patients this login may act for (more than one for a proxy); choose with the
    /// `Portico-Patient` header.
    pub patients: Vec<String>,
    /// Set when the login acts for this patient as a proxy: under which relationship
    /// and at which level.
    pub proxy: Option<ProxyAccess>,
    /// Served from the gateway's cache because the EHR is failing.
    pub stale: bool,
}

/// How a proxy acts for the patient.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProxyAccess {
    /// The `RelatedPerson` id the access comes from.
    pub relationship: String,
    /// `full`, `read-only` or `billing-only`.
    pub level: String,
}

/// The display form of a HumanName: its `text`, else given names and family.
pub fn human_name(name: &Value) -> Option<String> {
    if let Some(text) = str_at(name, "text") {
        return Some(text.to_owned());
    }
    let mut parts: Vec<&str> = array(name, "given").filter_map(Value::as_str).collect();
    if let Some(family) = str_at(name, "family") {
        parts.push(family);
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The name to show for a Patient or Practitioner: the `official`, else `usual`, else
/// the first name.
pub fn display_name(resource: &Value) -> Option<String> {
    let names: Vec<&Value> = array(resource, "name").collect();
    ["official", "usual"]
        .iter()
        .find_map(|u| names.iter().find(|n| str_at(n, "use") == Some(u)))
        .or_else(|| names.first())
        .and_then(|n| human_name(n))
}

pub async fn me(ctx: Ctx<'_>) -> PortalResult<Me> {
    let patient = ctx.read("Patient", ctx.patient()).await?;
    let r = &patient.resource;
    Ok(Me {
        id: ctx.patient().to_owned(),
        name: display_name(r),
        birth_date: str_at(r, "birthDate").map(str::to_owned),
        gender: str_at(r, "gender").map(str::to_owned),
        contact: array(r, "telecom")
            .filter_map(|t| str_at(t, "value").map(str::to_owned))
            .collect(),
        patients: ctx.caller.principal.patients.clone(),
        proxy: ctx.caller.proxy().map(|g| ProxyAccess {
            relationship: g.relationship.clone(),
            level: g.level.as_str().to_owned(),
        }),
        stale: patient.stale.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_prefer_official_then_usual() {
        let p = json!({"name": [
            {"use": "nickname", "given": ["Jo"]},
            {"use": "usual", "given": ["Joanna"], "family": "Doe"},
            {"use": "official", "given": ["Joanna", "M"], "family": "Doe"}
        ]});
        assert_eq!(display_name(&p).as_deref(), Some("Joanna M Doe"));
        assert_eq!(
            display_name(&json!({"name": [{"text": "J Doe"}]})).as_deref(),
            Some("J Doe")
        );
        assert_eq!(display_name(&json!({})), None);
    }
}
