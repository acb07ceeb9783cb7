//! The FHIR R4 Patient compartment (`CompartmentDefinition/patient`, 4.0.1).
//!
//! For each resource type, the search parameters that link a resource to a patient, and
//! the element paths those parameters cover. A resource is in patient P's compartment
//! when any of those elements references `Patient/P` (or, for `Patient` itself, when its
//! id is P). Types absent from the table (Practitioner, Slot, Task, Medication, ...) are
//! never in a patient's compartment.

use serde_json::Value;

use crate::reference::Reference;

/// One compartment link: a search parameter and the element paths it searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub param: &'static str,
    /// Dot-separated element paths relative to the resource.
    pub paths: &'static [&'static str],
}

const fn l(param: &'static str, paths: &'static [&'static str]) -> Link {
    Link { param, paths }
}

/// The R4 Patient compartment, sorted by resource type.
pub const PATIENT_COMPARTMENT: &[(&str, &[Link])] = &[
    ("Account", &[l("subject", &["subject"])]),
    ("AdverseEvent", &[l("subject", &["subject"])]),
    (
        "AllergyIntolerance",
        &[
            l("patient", &["patient"]),
            l("recorder", &["recorder"]),
            l("asserter", &["asserter"]),
        ],
    ),
    ("Appointment", &[l("actor", &["participant.actor"])]),
    ("AppointmentResponse", &[l("actor", &["actor"])]),
    ("AuditEvent", &[l("patient", &["agent.who", "entity.what"])]),
    (
        "Basic",
        &[l("patient", &["subject"]), l("author", &["author"])],
    ),
    ("BodyStructure", &[l("patient", &["patient"])]),
    (
        "CarePlan",
        &[
            l("patient", &["subject"]),
            l("performer", &["activity.detail.performer"]),
        ],
    ),
    (
        "CareTeam",
        &[
            l("patient", &["subject"]),
            l("participant", &["participant.member"]),
        ],
    ),
    ("ChargeItem", &[l("subject", &["subject"])]),
    (
        "Claim",
        &[l("patient", &["patient"]), l("payee", &["payee.party"])],
    ),
    ("ClaimResponse", &[l("patient", &["patient"])]),
    ("ClinicalImpression", &[l("subject", &["subject"])]),
    (
        "Communication",
        &[
            l("subject", &["subject"]),
            l("sender", &["sender"]),
            l("recipient", &["recipient"]),
        ],
    ),
    (
        "CommunicationRequest",
        &[
            l("subject", &["subject"]),
            l("sender", &["sender"]),
            l("recipient", &["recipient"]),
            l("requester", &["requester"]),
        ],
    ),
    (
        "Composition",
        &[
            l("subject", &["subject"]),
            l("author", &["author"]),
            l("attester", &["attester.party"]),
        ],
    ),
    (
        "Condition",
        &[l("patient", &["subject"]), l("asserter", &["asserter"])],
    ),
    ("Consent", &[l("patient", &["patient"])]),
    (
        "Coverage",
        &[
            l("policy-holder", &["policyHolder"]),
            l("subscriber", &["subscriber"]),
            l("beneficiary", &["beneficiary"]),
            l("payor", &["payor"]),
        ],
    ),
    ("CoverageEligibilityRequest", &[l("patient", &["patient"])]),
    ("CoverageEligibilityResponse", &[l("patient", &["patient"])]),
    ("DetectedIssue", &[l("patient", &["patient"])]),
    (
        "DeviceRequest",
        &[l("subject", &["subject"]), l("performer", &["performer"])],
    ),
    ("DeviceUseStatement", &[l("subject", &["subject"])]),
    ("DiagnosticReport", &[l("subject", &["subject"])]),
    (
        "DocumentManifest",
        &[
            l("subject", &["subject"]),
            l("author", &["author"]),
            l("recipient", &["recipient"]),
        ],
    ),
    (
        "DocumentReference",
        &[l("subject", &["subject"]), l("author", &["author"])],
    ),
    ("Encounter", &[l("patient", &["subject"])]),
    ("EnrollmentRequest", &[l("subject", &["candidate"])]),
    ("EpisodeOfCare", &[l("patient", &["patient"])]),
    (
        "ExplanationOfBenefit",
        &[l("patient", &["patient"]), l("payee", &["payee.party"])],
    ),
    ("FamilyMemberHistory", &[l("patient", &["patient"])]),
    ("Flag", &[l("patient", &["subject"])]),
    ("Goal", &[l("patient", &["subject"])]),
    ("Group", &[l("member", &["member.entity"])]),
    ("ImagingStudy", &[l("patient", &["subject"])]),
    ("Immunization", &[l("patient", &["patient"])]),
    ("ImmunizationEvaluation", &[l("patient", &["patient"])]),
    ("ImmunizationRecommendation", &[l("patient", &["patient"])]),
    (
        "Invoice",
        &[
            l("subject", &["subject"]),
            l("patient", &["subject"]),
            l("recipient", &["recipient"]),
        ],
    ),
    (
        "List",
        &[l("subject", &["subject"]), l("source", &["source"])],
    ),
    ("MeasureReport", &[l("patient", &["subject"])]),
    ("Media", &[l("subject", &["subject"])]),
    (
        "MedicationAdministration",
        &[
            l("patient", &["subject"]),
            l("performer", &["performer.actor"]),
            l("subject", &["subject"]),
        ],
    ),
    (
        "MedicationDispense",
        &[
            l("subject", &["subject"]),
            l("patient", &["subject"]),
            l("receiver", &["receiver"]),
        ],
    ),
    ("MedicationRequest", &[l("subject", &["subject"])]),
    ("MedicationStatement", &[l("subject", &["subject"])]),
    ("MolecularSequence", &[l("patient", &["patient"])]),
    ("NutritionOrder", &[l("patient", &["patient"])]),
    (
        "Observation",
        &[l("subject", &["subject"]), l("performer", &["performer"])],
    ),
    ("Patient", &[l("link", &["link.other"])]),
    ("Person", &[l("patient", &["link.target"])]),
    (
        "Procedure",
        &[
            l("patient", &["subject"]),
            l("performer", &["performer.actor"]),
        ],
    ),
    ("Provenance", &[l("patient", &["target"])]),
    (
        "QuestionnaireResponse",
        &[l("subject", &["subject"]), l("author", &["author"])],
    ),
    ("RelatedPerson", &[l("patient", &["patient"])]),
    (
        "RequestGroup",
        &[
            l("subject", &["subject"]),
            l("participant", &["action.participant"]),
        ],
    ),
    ("ResearchSubject", &[l("individual", &["individual"])]),
    ("RiskAssessment", &[l("subject", &["subject"])]),
    ("Schedule", &[l("actor", &["actor"])]),
    (
        "ServiceRequest",
        &[l("subject", &["subject"]), l("performer", &["performer"])],
    ),
    ("Specimen", &[l("subject", &["subject"])]),
    ("SupplyDelivery", &[l("patient", &["patient"])]),
    ("SupplyRequest", &[l("subject", &["deliverTo"])]),
    ("VisionPrescription", &[l("patient", &["patient"])]),
];

/// Types never in a patient's compartment that are directory data a portal needs to
/// show who and where: readable by patients with a read scope for the type, and the
/// only types a cache may share between principals.
pub const REFERENCE_DATA_TYPES: &[&str] = &[
    "HealthcareService",
    "Location",
    "Medication",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Schedule",
    "Slot",
];

/// The compartment links of `resource_type`, or `None` when the type is never in a
/// patient compartment.
pub fn patient_links(resource_type: &str) -> Option<&'static [Link]> {
    PATIENT_COMPARTMENT
        .binary_search_by(|(t, _)| (*t).cmp(resource_type))
        .ok()
        .map(|i| PATIENT_COMPARTMENT[i].1)
}

/// Whether resources of this type can belong to a patient compartment.
pub fn is_patient_compartment_type(resource_type: &str) -> bool {
    patient_links(resource_type).is_some()
}

/// Whether `resource` is in the compartment of `Patient/patient_id`: for a Patient, its
/// own id; for other types, any compartment element whose reference parses to
/// `Patient/patient_id` on this server (`local_base`: absolute references to other
/// servers never count). Malformed references never match.
pub fn in_patient_compartment(
    resource: &Value,
    patient_id: &str,
    local_base: Option<&str>,
) -> bool {
    let Some(resource_type) = crate::json::resource_type(resource) else {
        return false;
    };
    if resource_type == "Patient" && crate::json::id(resource) == Some(patient_id) {
        return true;
    }
    let Some(links) = patient_links(resource_type) else {
        return false;
    };
    links.iter().flat_map(|link| link.paths.iter()).any(|path| {
        crate::json::references_at(resource, path)
            .into_iter()
            .any(|r| {
                Reference::parse(r).is_ok_and(|r| {
                    r.is("Patient", patient_id) && local_base.is_none_or(|b| r.is_local_to(b))
                })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_is_sorted() {
        assert!(PATIENT_COMPARTMENT.windows(2).all(|w| w[0].0 < w[1].0));
        for (t, _) in PATIENT_COMPARTMENT {
            assert!(crate::resource_types::is_known(t), "{t}");
        }
    }

    #[test]
    fn membership() {
        assert!(is_patient_compartment_type("Observation"));
        assert!(!is_patient_compartment_type("Practitioner"));
        assert!(!is_patient_compartment_type("Slot"));
        assert!(!is_patient_compartment_type("Task"));
        assert_eq!(
            patient_links("Appointment").unwrap()[0].paths,
            &["participant.actor"]
        );
    }

    #[test]
    fn compares_parsed_references_not_substrings() {
        let obs = json!({"resourceType":"Observation","subject":{"reference":"Patient/12"}});
        assert!(in_patient_compartment(&obs, "12", None));
        assert!(!in_patient_compartment(&obs, "1", None));
        let versioned =
            json!({"resourceType":"Observation","subject":{"reference":"Patient/1/_history/4"}});
        assert!(in_patient_compartment(&versioned, "1", None));
    }

    #[test]
    fn absolute_references_must_be_local() {
        let obs = json!({"resourceType":"Observation","subject":{"reference":"https://ehr/fhir/Patient/1"}});
        assert!(in_patient_compartment(&obs, "1", Some("https://ehr/fhir")));
        assert!(!in_patient_compartment(
            &obs,
            "1",
            Some("https://other/fhir")
        ));
    }

    #[test]
    fn patient_and_non_compartment_types() {
        let p = json!({"resourceType":"Patient","id":"1"});
        assert!(in_patient_compartment(&p, "1", None));
        assert!(!in_patient_compartment(&p, "2", None));
        let slot = json!({"resourceType":"Slot","id":"s","schedule":{"reference":"Patient/1"}});
        assert!(!in_patient_compartment(&slot, "1", None));
        let appt = json!({"resourceType":"Appointment","participant":[{"actor":{"reference":"Practitioner/9"}},{"actor":{"reference":"Patient/1"}}]});
        assert!(in_patient_compartment(&appt, "1", None));
        let bad = json!({"resourceType":"Observation","subject":{"reference":"Patient/1?x"}});
        assert!(!in_patient_compartment(&bad, "1", None));
    }
}
