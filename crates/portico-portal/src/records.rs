//! `GET /records/{kind}`: the health record, one kind at a time, as simple stable JSON.
//!
//! Each kind is one patient-compartment search shaped like the US Core SHALL searches
//! (notes §6): `AllergyIntolerance?patient=`, `Observation?patient=&category=laboratory`,
//! ... newest first where the type has a date. Every item keeps the FHIR id of the
//! resource it came from, so a portal can link to the FHIR facade for the full detail.
//! Items show display strings, codes, dates, values with units and status; elements a
//! resource lacks are left out, never guessed.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::context::{Ctx, Page, SharedPage};
use crate::error::{PortalError, PortalResult};
use crate::me::display_name;
use crate::view::{
    Code, Quantity, array, concept_codes, concept_text, first_concept_text, quantity, reference_of,
    reference_text, str_at,
};

/// The record kinds a portal can list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Allergies,
    Conditions,
    Medications,
    Immunizations,
    LabResults,
    VitalSigns,
    Documents,
    Encounters,
    Procedures,
    CareTeam,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Allergies,
        Kind::Conditions,
        Kind::Medications,
        Kind::Immunizations,
        Kind::LabResults,
        Kind::VitalSigns,
        Kind::Documents,
        Kind::Encounters,
        Kind::Procedures,
        Kind::CareTeam,
    ];

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Allergies => "allergies",
            Kind::Conditions => "conditions",
            Kind::Medications => "medications",
            Kind::Immunizations => "immunizations",
            Kind::LabResults => "lab-results",
            Kind::VitalSigns => "vital-signs",
            Kind::Documents => "documents",
            Kind::Encounters => "encounters",
            Kind::Procedures => "procedures",
            Kind::CareTeam => "care-team",
        }
    }

    /// The FHIR type listed.
    pub fn resource_type(self) -> &'static str {
        match self {
            Kind::Allergies => "AllergyIntolerance",
            Kind::Conditions => "Condition",
            Kind::Medications => "MedicationRequest",
            Kind::Immunizations => "Immunization",
            Kind::LabResults | Kind::VitalSigns => "Observation",
            Kind::Documents => "DocumentReference",
            Kind::Encounters => "Encounter",
            Kind::Procedures => "Procedure",
            Kind::CareTeam => "CareTeam",
        }
    }

    /// The search parameters besides the patient and `_count` (the policy adds the
    /// patient restriction; it is also given explicitly, as US Core servers need it).
    fn params(self, patient: &str) -> Vec<(&'static str, String)> {
        let mut p = vec![("patient", patient.to_owned())];
        match self {
            Kind::LabResults => {
                p.push(("category", "laboratory".to_owned()));
                p.push(("_sort", "-date".to_owned()));
            }
            Kind::VitalSigns => {
                p.push(("category", "vital-signs".to_owned()));
                p.push(("_sort", "-date".to_owned()));
            }
            Kind::Immunizations | Kind::Procedures | Kind::Encounters | Kind::Documents => {
                p.push(("_sort", "-date".to_owned()));
            }
            Kind::Medications => {
                p.push(("_sort", "-authoredon".to_owned()));
                p.push(("_include", "MedicationRequest:medication".to_owned()));
            }
            Kind::CareTeam => {
                p.push(("status", "active".to_owned()));
            }
            Kind::Allergies | Kind::Conditions => {}
        }
        p
    }
}

/// One entry of the record.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct RecordItem {
    /// The FHIR id of the resource (with `resource_type`, a link into `/fhir`).
    pub id: String,
    pub resource_type: String,
    /// What to show as the item's title.
    pub title: Option<String>,
    /// The codes behind the title.
    pub codes: Vec<Code>,
    /// The resource's status (clinical status for allergies and conditions).
    pub status: Option<String>,
    /// The date that matters for this kind (effective, onset, occurrence, period start,
    /// authored, performed), as the EHR wrote it.
    pub date: Option<String>,
    /// A measured value with its unit (observations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Quantity>,
    /// A value that is not a quantity (a coded or text result).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_text: Option<String>,
    /// Parts of a panel (systolic and diastolic blood pressure).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
    /// The normal range, as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_range: Option<String>,
    /// High, low, abnormal... as the lab flagged it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpretation: Option<String>,
    /// Category text (encounter class, document type, allergy category).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Who: prescriber, performer, author, care-team member.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub people: Vec<Person>,
    /// Free text: dosage instructions, allergy reactions, notes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Documents: the attachments' metadata (never their data).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentInfo>,
}

/// A panel component.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Component {
    pub title: Option<String>,
    pub value: Option<Quantity>,
}

/// A person linked to an item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Person {
    /// `prescriber`, `performer`, `author`, or a care-team role.
    pub role: String,
    pub name: Option<String>,
    /// The FHIR reference (`Practitioner/1`), for messaging.
    pub reference: Option<String>,
}

/// An attachment's metadata.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttachmentInfo {
    pub content_type: Option<String>,
    pub title: Option<String>,
    pub size: Option<u64>,
}

/// One page of one kind.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordList {
    pub kind: Kind,
    pub items: Vec<RecordItem>,
    /// How many there are in all, when the EHR says.
    pub total: Option<u64>,
    /// Set when some of it was served from the gateway's cache because the EHR is
    /// failing.
    pub stale: bool,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The largest page a portal may ask for.
pub const MAX_COUNT: u32 = 100;

/// A page of `kind`: the first (`page_url` absent) or the one behind an upstream link
/// from an earlier page. Returns the list (without `next_cursor`) and the upstream
/// `next` link, which the HTTP layer seals into a cursor.
pub async fn list(
    ctx: Ctx<'_>,
    kind: Kind,
    count: u32,
    page_url: Option<&str>,
) -> PortalResult<(RecordList, Option<String>)> {
    let shared = page(ctx, kind, count, page_url).await?;
    Ok(view(kind, &shared.page))
}

/// The verified page behind [`list`], shared, with its cache slot (see
/// [`SharedPage`]) for a caller that keeps the [`view`] it renders.
pub async fn page(
    ctx: Ctx<'_>,
    kind: Kind,
    count: u32,
    page_url: Option<&str>,
) -> PortalResult<SharedPage> {
    if count == 0 || count > MAX_COUNT {
        return Err(PortalError::invalid(format!(
            "count must be between 1 and {MAX_COUNT}"
        )));
    }
    let rt = kind.resource_type();
    match page_url {
        Some(url) => ctx.search_page_shared(rt, url).await,
        None => {
            let mut params = kind.params(ctx.patient());
            params.push(("_count", count.to_string()));
            ctx.search_shared(rt, &params).await
        }
    }
}

/// The list view of a verified page of `kind` (a function of the page alone) and the
/// page's upstream `next` link.
pub fn view(kind: Kind, page: &Page) -> (RecordList, Option<String>) {
    let rt = kind.resource_type();
    let items = page
        .matches
        .iter()
        // A page may carry other types (an OperationOutcome is dropped by ctx).
        .filter(|r| str_at(r, "resourceType") == Some(rt))
        .map(|r| item(kind, r, page))
        .collect();
    let list = RecordList {
        kind,
        items,
        total: page.total,
        stale: page.stale,
        next_cursor: None,
    };
    (list, page.next.clone())
}

fn person(role: &str, reference: &Value, page: &Page) -> Person {
    let literal = reference_of(reference).map(str::to_owned);
    let name = str_at(reference, "display").map(str::to_owned).or_else(|| {
        literal
            .as_deref()
            .and_then(|r| page.included(r))
            .and_then(|p| display_name(p).or_else(|| str_at(p, "name").map(str::to_owned)))
    });
    Person {
        role: role.to_owned(),
        name,
        reference: literal,
    }
}

fn first_str(r: &Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| r.pointer(k).and_then(Value::as_str))
        .map(str::to_owned)
}

/// The view of one resource of `kind`.
pub fn item(kind: Kind, r: &Value, page: &Page) -> RecordItem {
    let mut it = RecordItem {
        id: str_at(r, "id").unwrap_or_default().to_owned(),
        resource_type: str_at(r, "resourceType").unwrap_or_default().to_owned(),
        status: str_at(r, "status").map(str::to_owned),
        ..RecordItem::default()
    };
    let code = r.get("code");
    if let Some(c) = code {
        it.title = concept_text(c);
        it.codes = concept_codes(c);
    }
    match kind {
        Kind::Allergies | Kind::Conditions => {
            it.status = r.get("clinicalStatus").and_then(concept_text).or(it.status);
            it.date = first_str(
                r,
                &["/onsetDateTime", "/onsetPeriod/start", "/recordedDate"],
            );
            it.category = array(r, "category")
                .find_map(|c| c.as_str().map(str::to_owned).or_else(|| concept_text(c)));
            if kind == Kind::Allergies {
                let reactions: Vec<String> = array(r, "reaction")
                    .flat_map(|x| array(x, "manifestation"))
                    .filter_map(concept_text)
                    .collect();
                let criticality = str_at(r, "criticality");
                it.detail = match (reactions.is_empty(), criticality) {
                    (true, None) => None,
                    (true, Some(c)) => Some(format!("criticality: {c}")),
                    (false, None) => Some(reactions.join(", ")),
                    (false, Some(c)) => {
                        Some(format!("{} (criticality: {c})", reactions.join(", ")))
                    }
                };
            }
        }
        Kind::Medications => {
            let medication = r
                .get("medicationCodeableConcept")
                .map(|c| (concept_text(c), concept_codes(c)))
                .or_else(|| {
                    let m = page.included(reference_of(r.get("medicationReference")?)?)?;
                    m.get("code").map(|c| (concept_text(c), concept_codes(c)))
                });
            if let Some((title, codes)) = medication {
                it.title = title.or_else(|| r.get("medicationReference").and_then(reference_text));
                it.codes = codes;
            } else {
                it.title = r.get("medicationReference").and_then(reference_text);
            }
            it.date = str_at(r, "authoredOn").map(str::to_owned);
            it.detail =
                array(r, "dosageInstruction").find_map(|d| str_at(d, "text").map(str::to_owned));
            if let Some(p) = r.get("requester") {
                it.people.push(person("prescriber", p, page));
            }
        }
        Kind::Immunizations => {
            it.title = r.get("vaccineCode").and_then(concept_text);
            it.codes = r.get("vaccineCode").map(concept_codes).unwrap_or_default();
            it.date = first_str(r, &["/occurrenceDateTime", "/occurrenceString"]);
            it.detail = first_concept_text(r, "reasonCode");
        }
        Kind::LabResults | Kind::VitalSigns => {
            it.date = first_str(
                r,
                &["/effectiveDateTime", "/effectivePeriod/start", "/issued"],
            );
            it.value = r.get("valueQuantity").and_then(quantity);
            it.value_text = r
                .get("valueCodeableConcept")
                .and_then(concept_text)
                .or_else(|| str_at(r, "valueString").map(str::to_owned));
            it.components = array(r, "component")
                .map(|c| Component {
                    title: c.get("code").and_then(concept_text),
                    value: c.get("valueQuantity").and_then(quantity),
                })
                .collect();
            it.reference_range = array(r, "referenceRange").find_map(|rr| {
                if let Some(t) = str_at(rr, "text") {
                    return Some(t.to_owned());
                }
                let low = rr.get("low").and_then(quantity);
                let high = rr.get("high").and_then(quantity);
                let unit = low
                    .as_ref()
                    .or(high.as_ref())
                    .and_then(|q| q.unit.clone())
                    .unwrap_or_default();
                match (low, high) {
                    (Some(l), Some(h)) => Some(format!("{}–{} {unit}", l.value, h.value)),
                    (Some(l), None) => Some(format!("≥ {} {unit}", l.value)),
                    (None, Some(h)) => Some(format!("≤ {} {unit}", h.value)),
                    (None, None) => None,
                }
                .map(|s| s.trim_end().to_owned())
            });
            it.interpretation = first_concept_text(r, "interpretation");
            for p in array(r, "performer") {
                it.people.push(person("performer", p, page));
            }
        }
        Kind::Documents => {
            it.title = str_at(r, "description")
                .map(str::to_owned)
                .or_else(|| r.get("type").and_then(concept_text));
            it.codes = r.get("type").map(concept_codes).unwrap_or_default();
            it.category = first_concept_text(r, "category");
            it.date = first_str(r, &["/date", "/context/period/start"]);
            it.attachments = array(r, "content")
                .filter_map(|c| c.get("attachment"))
                .map(|a| AttachmentInfo {
                    content_type: str_at(a, "contentType").map(str::to_owned),
                    title: str_at(a, "title").map(str::to_owned),
                    size: a.get("size").and_then(Value::as_u64),
                })
                .collect();
            for a in array(r, "author") {
                it.people.push(person("author", a, page));
            }
        }
        Kind::Encounters => {
            it.title = first_concept_text(r, "type")
                .or_else(|| r.get("serviceType").and_then(concept_text));
            it.codes = array(r, "type").flat_map(concept_codes).collect();
            it.category = r.get("class").and_then(|c| {
                str_at(c, "display")
                    .or_else(|| str_at(c, "code"))
                    .map(str::to_owned)
            });
            it.date = first_str(r, &["/period/start"]);
            it.detail = first_concept_text(r, "reasonCode");
            for p in array(r, "participant") {
                if let Some(individual) = p.get("individual") {
                    it.people.push(person("participant", individual, page));
                }
            }
        }
        Kind::Procedures => {
            it.date = first_str(r, &["/performedDateTime", "/performedPeriod/start"]);
            for p in array(r, "performer") {
                if let Some(actor) = p.get("actor") {
                    it.people.push(person("performer", actor, page));
                }
            }
        }
        Kind::CareTeam => {
            it.title = str_at(r, "name")
                .map(str::to_owned)
                .or_else(|| first_concept_text(r, "category"));
            it.date = first_str(r, &["/period/start"]);
            for p in array(r, "participant") {
                let role = first_concept_text(p, "role").unwrap_or_else(|| "member".to_owned());
                if let Some(member) = p.get("member") {
                    it.people.push(person(&role, member, page));
                }
            }
        }
    }
    it
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use serde_json::json;

    #[test]
    fn kinds_round_trip_and_unknown_kinds_are_refused() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("Observation"), None);
        assert_eq!(Kind::parse(""), None);
    }

    #[test]
    fn a_blood_pressure_panel_keeps_components_units_and_range() {
        let obs = fixture("ehr/observation-blood-pressure.json");
        let it = item(Kind::VitalSigns, &obs, &Page::default());
        assert_eq!(it.id, "o1");
        assert_eq!(it.title.as_deref(), Some("Blood pressure panel"));
        assert_eq!(it.codes[0].code, "85354-9");
        assert_eq!(it.date.as_deref(), Some("2025-01-02T03:04:05Z"));
        assert_eq!(it.components.len(), 2);
        assert_eq!(
            it.components[0].value.as_ref().unwrap().unit.as_deref(),
            Some("mmHg")
        );
        assert_eq!(it.reference_range.as_deref(), Some("90–120 mmHg"));
    }

    #[test]
    fn medication_names_come_from_the_included_medication() {
        let page = Page {
            included: vec![fixture("ehr/medication-lisinopril.json")],
            ..Page::default()
        };
        // Prescribed by "Dr. A", "once daily", naming Medication/m1.
        let mr = fixture("ehr/medication-request-medication-reference.json");
        let it = item(Kind::Medications, &mr, &page);
        assert_eq!(it.title.as_deref(), Some("Lisinopril 10 mg"));
        assert_eq!(it.detail.as_deref(), Some("once daily"));
        assert_eq!(it.people[0].name.as_deref(), Some("Dr. A"));
    }

    #[test]
    fn odd_shapes_never_panic_and_leave_fields_absent() {
        for k in Kind::ALL {
            for v in [
                json!({}),
                json!({"code": 5, "component": "x", "participant": [1, null]}),
                json!([]),
            ] {
                let it = item(k, &v, &Page::default());
                assert_eq!(it.id, "");
            }
        }
    }
}
