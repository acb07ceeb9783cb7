//! The acting patient's care team, looked up in one place for every area.
//!
//! One search, `CareTeam?patient=Patient/<id>&status=active` (narrowed and verified by
//! the [`Ctx`] like any other, at most [`MAX_TEAMS`]), answers all the questions the
//! areas ask: whom a message may be addressed to (a participant member of one of the
//! teams, or a team itself: [`includes`]), and where a request with no named clinician
//! goes (the first team: [`first_team`], for referral requests and refill requests sent
//! as Communications). Only CareTeam resources count: an EHR may mix other resources
//! into a search's matches.

use portico_fhir::reference::Reference;
use serde_json::{Value, json};

use crate::context::Ctx;
use crate::error::PortalResult;
use crate::view::{array, reference_of, str_at};

/// The most care teams read for one question.
pub const MAX_TEAMS: usize = 100;

fn is_care_team(resource: &Value) -> bool {
    str_at(resource, "resourceType") == Some("CareTeam")
}

/// The acting patient's active CareTeams.
pub async fn active(ctx: Ctx<'_>) -> PortalResult<Vec<Value>> {
    let page = ctx
        .search_all(
            "CareTeam",
            &[
                ("patient", format!("Patient/{}", ctx.patient())),
                ("status", "active".to_owned()),
            ],
            MAX_TEAMS,
        )
        .await?;
    Ok(page.matches.into_iter().filter(is_care_team).collect())
}

/// The acting patient's first active care team, as a reference (with its name as the
/// display), if they have one.
pub async fn first_team(ctx: Ctx<'_>) -> PortalResult<Option<Value>> {
    Ok(active(ctx).await?.iter().find_map(team_reference))
}

/// A CareTeam as a reference, with its name as the display.
pub fn team_reference(team: &Value) -> Option<Value> {
    let id = str_at(team, "id")?;
    let mut r = json!({"reference": format!("CareTeam/{id}")});
    if let Some(name) = str_at(team, "name") {
        r["display"] = json!(name);
    }
    Some(r)
}

/// Whether `who` is one of `teams` or a participant member of one of them, compared as
/// parsed relative references (`Practitioner/pr-1` is not `Practitioner/pr-12`).
pub fn includes(teams: &[Value], who: &Reference) -> bool {
    let same = |s: &str| {
        Reference::parse(s).is_ok_and(|r| r.base.is_none() && r.is(&who.resource_type, &who.id))
    };
    teams.iter().filter(|team| is_care_team(team)).any(|team| {
        let is_team =
            str_at(team, "id") == Some(who.id.as_str()) && who.resource_type == "CareTeam";
        is_team
            || array(team, "participant")
                .filter_map(|p| p.get("member").and_then(reference_of))
                .any(same)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_is_referenced_with_its_name() {
        let team = json!({"resourceType": "CareTeam", "id": "ct-1", "name": "Heart team"});
        assert_eq!(
            team_reference(&team),
            Some(json!({"reference": "CareTeam/ct-1", "display": "Heart team"}))
        );
        assert_eq!(
            team_reference(&json!({"resourceType": "CareTeam", "id": "ct-2"})),
            Some(json!({"reference": "CareTeam/ct-2"}))
        );
        assert_eq!(team_reference(&json!({"resourceType": "CareTeam"})), None);
    }
}
