//! Patient-initiated referral requests.
//!
//! A patient asks for a referral to one of the specialties the EHR profile lists
//! (`referrals.specialties`); anything else is refused (`specialty_not_allowed`). The
//! profile's [`ReferralStrategy`] says what is created:
//! - `service-request`: a `ServiceRequest` `status=active`, `intent=proposal`, category
//!   SNOMED 3457005 "Patient referral", code SNOMED 306206005 "Referral to service",
//!   `performerType` the specialty's coding, the patient's reason as `reasonCode.text`,
//!   the patient as subject and requester;
//! - `communication`: a `Communication` to the patient's care team (`CareTeam/…`) with
//!   topic "Referrals and Authorizations" (Epic's message topic) and the request as its
//!   payload. A patient without an active care team is refused (`no_care_team`).
//!
//! `GET /referrals` lists the referral requests the patient made (requester or sender
//! the patient), not the referrals clinicians ordered.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::careteam;
use crate::context::Ctx;
use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::input::Text;
use crate::profile::{Coding, ReferralStrategy};
use crate::view::{array, concept_codes, instant, parse_datetime, str_at};

pub const SNOMED: &str = "http://snomed.info/sct";
/// `ServiceRequest.category`: SNOMED 3457005 "Patient referral".
pub const REFERRAL_CATEGORY: (&str, &str) = ("3457005", "Patient referral");
/// `ServiceRequest.code`: SNOMED 306206005 "Referral to service".
pub const REFERRAL_CODE: (&str, &str) = ("306206005", "Referral to service");
/// The Communication topic of referral requests (Epic MyChart's topic name).
pub const REFERRAL_TOPIC: &str = "Referrals and Authorizations";
/// The longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// The longest notes, in characters.
pub const MAX_NOTES_CHARS: usize = 1000;
const MAX_LISTED: usize = 200;
/// The reason field of a referral request.
const REASON: Text = Text::new("reason", MAX_REASON_CHARS);
/// The notes field of a referral request.
const NOTES: Text = Text::new("notes", MAX_NOTES_CHARS);

/// What a patient sends to ask for a referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralInput {
    /// The code of one of `GET /referrals/specialties`.
    pub specialty: String,
    /// Why the patient wants the referral (1 to 1000 characters).
    pub reason: String,
    /// Anything else for the care team (at most 1000 characters).
    #[serde(default)]
    pub notes: Option<String>,
}

/// A referral request the patient made.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Referral {
    /// The id of the `resource_type` resource in the EHR.
    pub id: String,
    /// `ServiceRequest` or `Communication`, per the EHR profile.
    pub resource_type: String,
    /// FHIR status: `active` (waiting), `completed`, `revoked`, ... for a ServiceRequest;
    /// `completed` (sent) for a Communication.
    pub status: Option<String>,
    /// The specialty asked for.
    pub specialty: Option<Coding>,
    pub reason: Option<String>,
    pub notes: Option<String>,
    /// When it was made.
    pub created: Option<String>,
}

/// The patient's referral requests.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReferralList {
    /// Newest first.
    pub items: Vec<Referral>,
    pub stale: bool,
}

/// The specialties a patient may ask a referral to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SpecialtyList {
    pub items: Vec<Coding>,
}

/// `GET /referrals/specialties`.
pub fn specialties(ctx: Ctx<'_>) -> SpecialtyList {
    SpecialtyList {
        items: ctx.profile().referrals.specialties.clone(),
    }
}

/// The checked input: the configured specialty, the reason and the notes.
fn checked(ctx: Ctx<'_>, input: &ReferralInput) -> PortalResult<(Coding, String, Option<String>)> {
    let reason = REASON.required(&input.reason)?;
    let notes = NOTES.optional(input.notes.as_deref())?;
    let specialty = ctx
        .profile()
        .referrals
        .specialties
        .iter()
        .find(|c| c.code == input.specialty)
        .cloned()
        .ok_or_else(|| {
            PortalError::refused(
                "specialty_not_allowed",
                "referrals can only be requested to the specialties listed by GET /referrals/specialties",
            )
        })?;
    Ok((specialty, reason, notes))
}

/// `POST /referrals`: creates the referral request per the profile's strategy, exactly
/// once per `idem`.
pub async fn request_referral(
    ctx: Ctx<'_>,
    input: &ReferralInput,
    idem: &Idem,
) -> PortalResult<Referral> {
    let (specialty, reason, notes) = checked(ctx, input)?;
    let now = instant(ctx.now());
    let patient = json!({"reference": format!("Patient/{}", ctx.patient())});
    let created = match ctx.profile().referrals.strategy {
        ReferralStrategy::ServiceRequest => {
            let body = service_request(&patient, &specialty, &reason, notes.as_deref(), &now);
            ctx.create("ServiceRequest", body, idem).await?
        }
        ReferralStrategy::Communication => {
            let team = careteam::first_team(ctx).await?.ok_or_else(|| {
                PortalError::refused(
                    "no_care_team",
                    "you have no active care team to send a referral request to; contact the clinic",
                )
            })?;
            let body = communication(&patient, team, &specialty, &reason, notes.as_deref(), &now);
            ctx.create("Communication", body, idem).await?
        }
    };
    referral_view(&created.resource, &ctx.profile().referrals.specialties)
        .ok_or(PortalError::NotFound)
}

fn service_request(
    patient: &Value,
    specialty: &Coding,
    reason: &str,
    notes: Option<&str>,
    now: &str,
) -> Value {
    let mut body = json!({
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "proposal",
        "category": [{"coding": [{"system": SNOMED, "code": REFERRAL_CATEGORY.0, "display": REFERRAL_CATEGORY.1}]}],
        "code": {
            "coding": [{"system": SNOMED, "code": REFERRAL_CODE.0, "display": REFERRAL_CODE.1}],
            "text": format!("Referral to {}", specialty.display)
        },
        "performerType": {
            "coding": [{"system": specialty.system, "code": specialty.code, "display": specialty.display}],
            "text": specialty.display
        },
        "reasonCode": [{"text": reason}],
        "subject": patient,
        "requester": patient,
        "authoredOn": now,
    });
    if let Some(notes) = notes {
        body["note"] = json!([{"authorReference": patient, "time": now, "text": notes}]);
    }
    body
}

fn communication(
    patient: &Value,
    team: Value,
    specialty: &Coding,
    reason: &str,
    notes: Option<&str>,
    now: &str,
) -> Value {
    let mut payload = vec![
        json!({"contentString": format!("Referral request: {}", specialty.display)}),
        json!({"contentString": format!("Reason: {reason}")}),
    ];
    if let Some(notes) = notes {
        payload.push(json!({"contentString": format!("Notes: {notes}")}));
    }
    json!({
        "resourceType": "Communication",
        "status": "completed",
        "topic": {
            "coding": [{"system": specialty.system, "code": specialty.code, "display": specialty.display}],
            "text": REFERRAL_TOPIC
        },
        "subject": patient,
        "sender": patient,
        "recipient": [team],
        "sent": now,
        "payload": payload,
    })
}

/// The view of a referral request the patient made; `None` for anything else.
fn referral_view(resource: &Value, specialties: &[Coding]) -> Option<Referral> {
    let rt = str_at(resource, "resourceType")?;
    let id = str_at(resource, "id")?.to_owned();
    let find = |codes: &[crate::view::Code]| {
        codes.iter().find_map(|c| {
            specialties
                .iter()
                .find(|s| s.code == c.code && Some(s.system.as_str()) == c.system.as_deref())
                .cloned()
                .or_else(|| {
                    Some(Coding {
                        system: c.system.clone()?,
                        code: c.code.clone(),
                        display: c.display.clone().unwrap_or_else(|| c.code.clone()),
                    })
                })
        })
    };
    match rt {
        "ServiceRequest" => Some(Referral {
            id,
            resource_type: rt.to_owned(),
            status: str_at(resource, "status").map(str::to_owned),
            specialty: resource
                .get("performerType")
                .and_then(|p| find(&concept_codes(p))),
            reason: array(resource, "reasonCode")
                .find_map(|c| str_at(c, "text"))
                .map(str::to_owned),
            notes: array(resource, "note")
                .find_map(|n| str_at(n, "text"))
                .map(str::to_owned),
            created: str_at(resource, "authoredOn").map(str::to_owned),
        }),
        "Communication" => {
            let texts: Vec<&str> = array(resource, "payload")
                .filter_map(|p| str_at(p, "contentString"))
                .collect();
            Some(Referral {
                id,
                resource_type: rt.to_owned(),
                status: str_at(resource, "status").map(str::to_owned),
                specialty: resource.get("topic").and_then(|t| find(&concept_codes(t))),
                reason: texts
                    .iter()
                    .find_map(|t| t.strip_prefix("Reason: "))
                    .map(str::to_owned),
                notes: texts
                    .iter()
                    .find_map(|t| t.strip_prefix("Notes: "))
                    .map(str::to_owned),
                created: str_at(resource, "sent").map(str::to_owned),
            })
        }
        _ => None,
    }
}

/// Whether a resource is a referral request made by the patient.
fn patient_initiated(resource: &Value, patient: &str) -> bool {
    let me = format!("Patient/{patient}");
    let is_me = |key: &str| {
        resource
            .get(key)
            .and_then(|r| str_at(r, "reference"))
            .and_then(|r| portico_fhir::reference::Reference::parse(r).ok())
            .is_some_and(|r| r.relative() == me)
    };
    match str_at(resource, "resourceType") {
        Some("ServiceRequest") => {
            is_me("requester")
                && array(resource, "category").any(|c| {
                    array(c, "coding").any(|x| {
                        str_at(x, "system") == Some(SNOMED)
                            && str_at(x, "code") == Some(REFERRAL_CATEGORY.0)
                    })
                })
        }
        Some("Communication") => {
            is_me("sender")
                && resource.pointer("/topic/text").and_then(Value::as_str) == Some(REFERRAL_TOPIC)
        }
        _ => false,
    }
}

/// `GET /referrals`.
pub async fn list(ctx: Ctx<'_>) -> PortalResult<ReferralList> {
    let page = match ctx.profile().referrals.strategy {
        ReferralStrategy::ServiceRequest => {
            ctx.search_all(
                "ServiceRequest",
                &[
                    ("category", format!("{SNOMED}|{}", REFERRAL_CATEGORY.0)),
                    ("_count", "100".to_owned()),
                ],
                MAX_LISTED,
            )
            .await?
        }
        ReferralStrategy::Communication => {
            ctx.search_all(
                "Communication",
                &[("_count", "100".to_owned())],
                crate::context::MAX_COLLECTED,
            )
            .await?
        }
    };
    let specialties = &ctx.profile().referrals.specialties;
    let mut seen = HashSet::new();
    let mut items: Vec<Referral> = page
        .matches
        .iter()
        .filter(|r| patient_initiated(r, ctx.patient()))
        .filter_map(|r| referral_view(r, specialties))
        .filter(|r| seen.insert((r.resource_type.clone(), r.id.clone())))
        .collect();
    items.sort_by(|a, b| {
        let t = |x: &Referral| x.created.as_deref().and_then(parse_datetime);
        t(b).cmp(&t(a))
    });
    Ok(ReferralList {
        items,
        stale: page.stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cardiology() -> Coding {
        Coding {
            system: SNOMED.to_owned(),
            code: "394579002".to_owned(),
            display: "Cardiology".to_owned(),
        }
    }

    #[test]
    fn service_request_has_the_referral_codes_and_the_patient_as_requester() {
        let patient = json!({"reference": "Patient/p1"});
        let body = service_request(
            &patient,
            &cardiology(),
            "chest pain",
            Some("mornings"),
            "2025-07-01T10:00:00Z",
        );
        assert_eq!(body["intent"], "proposal");
        assert_eq!(body["status"], "active");
        assert_eq!(body["category"][0]["coding"][0]["code"], "3457005");
        assert_eq!(body["code"]["coding"][0]["code"], "306206005");
        assert_eq!(body["performerType"]["coding"][0]["code"], "394579002");
        assert_eq!(body["requester"], patient);
        assert_eq!(body["subject"], patient);
        assert_eq!(body["reasonCode"][0]["text"], "chest pain");
        assert_eq!(body["note"][0]["text"], "mornings");
        let view = referral_view(
            &json!({"resourceType": "ServiceRequest", "id": "s1", "status": "active",
                    "performerType": body["performerType"], "reasonCode": body["reasonCode"],
                    "authoredOn": "2025-07-01T10:00:00Z", "note": body["note"]}),
            &[cardiology()],
        )
        .unwrap();
        assert_eq!(view.specialty, Some(cardiology()));
        assert_eq!(view.reason.as_deref(), Some("chest pain"));
        assert_eq!(view.notes.as_deref(), Some("mornings"));
    }

    #[test]
    fn communication_goes_to_the_care_team_and_reads_back() {
        let patient = json!({"reference": "Patient/p1"});
        let team = json!({"reference": "CareTeam/ct-1"});
        let mut body = communication(
            &patient,
            team.clone(),
            &cardiology(),
            "chest pain",
            None,
            "2025-07-01T10:00:00Z",
        );
        assert_eq!(body["recipient"][0], team);
        assert_eq!(body["topic"]["text"], REFERRAL_TOPIC);
        assert!(body.get("about").is_none());
        body["id"] = json!("c1");
        assert!(patient_initiated(&body, "p1"));
        assert!(!patient_initiated(&body, "p2"));
        let view = referral_view(&body, &[cardiology()]).unwrap();
        assert_eq!(view.reason.as_deref(), Some("chest pain"));
        assert_eq!(view.notes, None);
        assert_eq!(view.specialty, Some(cardiology()));
    }

    #[test]
    fn clinician_referrals_are_not_patient_initiated() {
        let ordered = crate::fixture("ehr/service-request-referral-by-practitioner.json");
        assert!(!patient_initiated(&ordered, "p1"));
        let mine = crate::fixture("ehr/service-request-referral-by-patient.json");
        assert!(patient_initiated(&mine, "p1"));
        // Patient/p10 is not Patient/p1.
        assert!(!patient_initiated(&mine, "p"));
    }
}
