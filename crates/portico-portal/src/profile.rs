//! EHR profiles: per portal action, which FHIR strategy to use and what the EHR
//! requires.
//!
//! EHRs differ in what a portal may write and how (Cerner: patient tokens cannot create
//! Appointments or Communications, cancel is a JSON Patch with `If-Match`; Epic:
//! Argonaut-style `$find`/`$book`). A profile is a TOML file; the three built-in ones
//! live in `config/ehr/` and are embedded in the binary. [`EhrProfile::required`] lists
//! the interactions the chosen strategies need, and [`EhrProfile::check_capabilities`]
//! compares them with the EHR's CapabilityStatement at start-up.

use std::collections::BTreeSet;

use portico_upstream::CapabilitySummary;
use serde::{Deserialize, Serialize};

/// The built-in profiles, by name, as shipped in `config/ehr/`.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "generic-r4",
        include_str!("../../../config/ehr/generic-r4.toml"),
    ),
    ("cerner", include_str!("../../../config/ehr/cerner.toml")),
    ("epic", include_str!("../../../config/ehr/epic.toml")),
];

/// A parsed EHR profile.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EhrProfile {
    /// `generic-r4`, `cerner`, `epic`, or a site's own name.
    pub name: String,
    /// One line for operators.
    pub description: String,
    pub appointments: AppointmentsProfile,
    pub refills: RefillsProfile,
    pub referrals: ReferralsProfile,
    pub messages: MessagesProfile,
    pub bills: BillsProfile,
    /// How a patient ends a proxy's access (absent: `period`).
    #[serde(default)]
    pub proxies: ProxiesProfile,
}

/// `[proxies]`: how the EHR records that a patient ended a proxy's access.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxiesProfile {
    #[serde(default)]
    pub revoke: RevokeStrategy,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RevokeStrategy {
    /// The `RelatedPerson` is written back with `period.end` = now (update, `If-Match`).
    #[default]
    Period,
    /// A `Consent` is created that denies the `RelatedPerson` access from now
    /// (`provision.type = deny`, the `RelatedPerson` as `provision.actor`); Portico reads
    /// the patient's active Consents with their relationships.
    Consent,
    /// The EHR manages proxy access outside FHIR: revoking answers 501.
    Unsupported,
}

/// Which credential a write goes upstream with. Informational for operators: the
/// upstream credential itself is `[upstream.auth]`; a profile with `system` writes
/// refuses to start in passthrough mode (see [`EhrProfile::check_credential`]).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WriteCredential {
    /// The patient's own token may write (passthrough works).
    Patient,
    /// Only a system (backend-services) credential may write.
    System,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppointmentsProfile {
    pub book: BookStrategy,
    pub cancel: CancelStrategy,
    pub reschedule: RescheduleStrategy,
    pub write_credential: WriteCredential,
    /// Slot search must name a service type (Cerner).
    #[serde(default)]
    pub slot_search_requires_service_type: bool,
    /// The widest slot-search window a patient may ask for, in days.
    pub max_slot_window_days: u32,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BookStrategy {
    /// `POST Appointment` `booked` on a free Slot, the patient `accepted`.
    Slot,
    /// `POST Appointment` `proposed` with `requestedPeriod`; staff confirm it.
    Request,
    /// Argonaut/IHE operations: `Appointment/$find` then `Appointment/$book`.
    Operations,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CancelStrategy {
    /// JSON Patch `replace /status` + `add /cancelationReason`, with `If-Match`.
    Patch,
    /// `PUT` of the whole Appointment, with `If-Match`.
    Update,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RescheduleStrategy {
    /// Book the new slot, then cancel the old appointment (undo the new booking when
    /// the cancel fails).
    BookThenCancel,
    /// JSON Patch `replace /slot` on the same Appointment (Cerner).
    PatchSlot,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RefillsProfile {
    pub strategy: RefillStrategy,
    /// The shortest time between two fills, as a fraction of
    /// `dispenseRequest.expectedSupplyDuration` when the order has no
    /// `dispenseInterval` (0.75: a 30-day supply may be refilled after 22.5 days).
    pub min_interval_fraction: f64,
    /// Whether acute (`courseOfTherapyType=acute`) orders may be refilled.
    #[serde(default)]
    pub allow_acute: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RefillStrategy {
    /// `Task` (code `fulfill`) focused on the MedicationRequest, owner the prescriber.
    Task,
    /// A new `MedicationRequest` `intent=proposal` with `priorPrescription`.
    MedicationRequest,
    /// A `Communication` to the prescriber `about` the MedicationRequest.
    Communication,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReferralsProfile {
    pub strategy: ReferralStrategy,
    /// The specialties a patient may ask a referral to (`performerType`).
    pub specialties: Vec<Coding>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ReferralStrategy {
    /// `ServiceRequest` `intent=proposal`, category SNOMED 3457005.
    ServiceRequest,
    /// A `Communication` to the care team with a referral topic.
    Communication,
}

/// A code from a code system, as configured.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MessagesProfile {
    pub strategy: MessageStrategy,
    /// Recipients every patient may write to besides their CareTeam members (literal
    /// references such as `Organization/clinic-front-desk` or `Practitioner/nurse-line`).
    #[serde(default)]
    pub recipient_pool: Vec<String>,
    /// The longest message text, in characters.
    pub max_text_chars: usize,
    /// Attachment content types accepted (`image/png`, `application/pdf`, ...); empty
    /// means attachments are refused.
    #[serde(default)]
    pub attachment_types: Vec<String>,
    /// The largest attachment, in bytes (decoded).
    pub max_attachment_bytes: usize,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MessageStrategy {
    /// Medplum-style threads of `Communication`.
    Communication,
    /// The EHR offers no patient messaging over FHIR (Cerner).
    Unsupported,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BillsProfile {
    pub payment: PaymentStrategy,
    /// ISO 4217 currency of the accounts (payments in another currency are refused).
    pub currency: String,
    /// The extension holding an Account's balance (R4 Account has no balance element).
    pub balance_extension: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PaymentStrategy {
    /// A `PaymentReconciliation` with one `detail` of type `payment`.
    PaymentReconciliation,
    /// Cerner's `Basic` "FinancialTransaction" (system credential only).
    FinancialTransaction,
    /// The EHR takes no payments over FHIR.
    Unsupported,
}

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown EHR profile `{0}` (expected one of: generic-r4, cerner, epic)")]
    Unknown(String),
    #[error("EHR profile {name}: {message}")]
    Invalid { name: String, message: String },
}

/// One interaction a profile needs from the EHR, as in a CapabilityStatement
/// (`read`, `search-type`, `create`, `patch`, `update`, or `$operation`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Requirement {
    pub resource_type: &'static str,
    pub interaction: &'static str,
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.resource_type, self.interaction)
    }
}

impl EhrProfile {
    /// A built-in profile by name.
    pub fn built_in(name: &str) -> Result<EhrProfile, ProfileError> {
        let (_, text) = BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ProfileError::Unknown(name.to_owned()))?;
        EhrProfile::parse(name, text)
    }

    /// Parses and checks a profile's TOML text.
    pub fn parse(name: &str, text: &str) -> Result<EhrProfile, ProfileError> {
        let profile: EhrProfile = toml::from_str(text).map_err(|e| ProfileError::Invalid {
            name: name.to_owned(),
            message: e.message().to_owned(),
        })?;
        profile.validate()?;
        Ok(profile)
    }

    fn validate(&self) -> Result<(), ProfileError> {
        let bad = |message: &str| {
            Err(ProfileError::Invalid {
                name: self.name.clone(),
                message: message.to_owned(),
            })
        };
        if !(0.0..=1.0).contains(&self.refills.min_interval_fraction) {
            return bad("refills.min_interval_fraction must be between 0 and 1");
        }
        if self.appointments.max_slot_window_days == 0
            || self.appointments.max_slot_window_days > 366
        {
            return bad("appointments.max_slot_window_days must be between 1 and 366");
        }
        if self.messages.max_text_chars == 0 {
            return bad("messages.max_text_chars must be positive");
        }
        if self.bills.currency.len() != 3
            || !self.bills.currency.bytes().all(|b| b.is_ascii_uppercase())
        {
            return bad("bills.currency must be an ISO 4217 code such as USD");
        }
        for r in &self.messages.recipient_pool {
            match portico_fhir::reference::Reference::parse(r).ok() {
                Some(r)
                    if matches!(
                        r.resource_type.as_str(),
                        "Practitioner" | "PractitionerRole" | "Organization" | "CareTeam" | "Group"
                    ) => {}
                _ => {
                    return bad(
                        "messages.recipient_pool entries must be Practitioner/…, PractitionerRole/…, Organization/…, CareTeam/… or Group/… references",
                    );
                }
            }
        }
        Ok(())
    }

    /// The interactions the chosen strategies need from the EHR.
    pub fn required(&self) -> BTreeSet<Requirement> {
        let mut out = BTreeSet::new();
        let mut need = |resource_type: &'static str, interaction: &'static str| {
            out.insert(Requirement {
                resource_type,
                interaction,
            });
        };
        // Reading the record and the dashboard.
        need("Patient", "read");
        for t in [
            "AllergyIntolerance",
            "Condition",
            "MedicationRequest",
            "Immunization",
            "Observation",
            "DocumentReference",
            "Encounter",
            "Procedure",
            "CareTeam",
            "Appointment",
        ] {
            need(t, "search-type");
        }
        let a = &self.appointments;
        match a.book {
            BookStrategy::Slot => {
                need("Slot", "search-type");
                need("Slot", "read");
                need("Appointment", "create");
            }
            BookStrategy::Request => need("Appointment", "create"),
            BookStrategy::Operations => {
                need("Appointment", "$find");
                need("Appointment", "$book");
            }
        }
        need("Appointment", "read");
        match a.cancel {
            CancelStrategy::Patch => need("Appointment", "patch"),
            CancelStrategy::Update => need("Appointment", "update"),
        }
        if a.reschedule == RescheduleStrategy::PatchSlot {
            need("Appointment", "patch");
        }
        match self.refills.strategy {
            RefillStrategy::Task => {
                need("Task", "create");
                need("Task", "search-type");
            }
            RefillStrategy::MedicationRequest => need("MedicationRequest", "create"),
            RefillStrategy::Communication => {
                need("Communication", "create");
                need("Communication", "search-type");
            }
        }
        match self.referrals.strategy {
            ReferralStrategy::ServiceRequest => {
                need("ServiceRequest", "create");
                need("ServiceRequest", "search-type");
            }
            ReferralStrategy::Communication => need("Communication", "create"),
        }
        if self.messages.strategy == MessageStrategy::Communication {
            need("Communication", "create");
            need("Communication", "search-type");
            need("Communication", "read");
        }
        match self.bills.payment {
            PaymentStrategy::PaymentReconciliation => {
                need("Account", "search-type");
                need("PaymentReconciliation", "create");
            }
            PaymentStrategy::FinancialTransaction => {
                need("Account", "search-type");
                need("Basic", "create");
            }
            PaymentStrategy::Unsupported => {}
        }
        // Not `proxies.revoke`: proxy access is optional, and an EHR whose statement does
        // not list RelatedPerson (Medplum's) still serves every patient. A revocation it
        // cannot take fails as the EHR answers it.
        out
    }

    /// The required interactions the EHR's CapabilityStatement does not declare, as
    /// `Type interaction` strings (empty when the profile fits the EHR).
    pub fn check_capabilities(&self, capabilities: &CapabilitySummary) -> Vec<String> {
        self.required()
            .into_iter()
            .filter(|r| {
                let declared = if let Some(op) = r.interaction.strip_prefix('$') {
                    capabilities
                        .resources
                        .get(r.resource_type)
                        .is_some_and(|c| c.operations.contains(op))
                } else {
                    capabilities.supports(r.resource_type, r.interaction)
                };
                !declared
            })
            .map(|r| r.to_string())
            .collect()
    }

    /// Whether this profile can run with patient tokens passed through upstream: a
    /// profile whose writes need a system credential cannot.
    pub fn check_credential(&self, passthrough: bool) -> Result<(), ProfileError> {
        if passthrough && self.bills.payment != PaymentStrategy::Unsupported {
            // The gateway records a payment after charging the card; with the patient's
            // own token the EHR may refuse the record, leaving every payment "charged,
            // not recorded".
            return Err(ProfileError::Invalid {
                name: self.name.clone(),
                message: "payments are recorded with the gateway's system credential; \
                          set `bills.payment = \"unsupported\"` in the profile to run in \
                          passthrough mode"
                    .to_owned(),
            });
        }
        if passthrough && self.appointments.write_credential == WriteCredential::System {
            return Err(ProfileError::Invalid {
                name: self.name.clone(),
                message: "this EHR accepts writes only with a system credential; \
                          `upstream.auth.mode = \"passthrough\"` cannot be used with it"
                    .to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_parse_and_validate() {
        for (name, _) in BUILT_IN {
            let p = EhrProfile::built_in(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&p.name, name);
            assert!(!p.required().is_empty());
        }
        assert!(matches!(
            EhrProfile::built_in("meditech"),
            Err(ProfileError::Unknown(_))
        ));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let (_, text) = BUILT_IN[0];
        let typo = text.replacen("[refills]", "[refills]\nstrategyy = \"task\"", 1);
        assert!(EhrProfile::parse("x", &typo).is_err());
        let bad = text.replacen("currency = \"USD\"", "currency = \"dollars\"", 1);
        assert!(EhrProfile::parse("x", &bad).is_err());
    }

    #[test]
    fn missing_interactions_are_named() {
        let p = EhrProfile::built_in("generic-r4").unwrap();
        // Patient read; Appointment read and search-type; nothing else.
        let statement = crate::fixture("ehr/capability-statement-appointment-read-only.json");
        let caps = CapabilitySummary::from_statement(&statement).unwrap();
        let missing = p.check_capabilities(&caps);
        assert!(
            missing.contains(&"Appointment create".to_owned()),
            "{missing:?}"
        );
        assert!(missing.contains(&"Slot search-type".to_owned()));
        assert!(!missing.contains(&"Patient read".to_owned()));
    }

    #[test]
    fn system_write_profiles_refuse_passthrough() {
        let cerner = EhrProfile::built_in("cerner").unwrap();
        assert!(cerner.check_credential(true).is_err());
        assert!(cerner.check_credential(false).is_ok());
        let mut generic = EhrProfile::built_in("generic-r4").unwrap();
        assert!(
            generic.check_credential(true).is_err(),
            "payments need the system credential"
        );
        generic.bills.payment = PaymentStrategy::Unsupported;
        assert!(generic.check_credential(true).is_ok());
    }
}
