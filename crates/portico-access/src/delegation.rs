//! Acting for someone else: what a proxy (a parent, a caregiver, a spouse) may do for a
//! patient, decided from the EHR's `RelatedPerson` records by documented rules.
//!
//! The gateway fetches the facts ([`Relationship`], plus the patient's birth date) and
//! [`DelegationRules::decide`] turns them into a [`ProxyGrant`], or into nothing:
//!
//! - **Ended grants nothing.** `active: false`, a `period` that has not started or has
//!   ended (today is compared with its dates), or — the minors rule — a *parental*
//!   relationship (`parent_relationships`) of a patient who is `adult_at` (18) or older,
//!   unless the relationship started on or after that birthday (it was granted again).
//! - **Level**: the extension at `level_extension` (`full`, `read-only`,
//!   `billing-only`) when the EHR records it; otherwise the first relationship code with
//!   an entry in `levels`; otherwise `default_level` (read-only). A full proxy reads and
//!   acts; a read-only proxy never writes; a billing-only proxy reads and pays bills
//!   ([`BILLING_TYPES`]) and sees the patient's name, nothing clinical.
//! - **Withheld records**: a resource whose `meta.security` carries one of
//!   `sensitive` is withheld from a proxy, everywhere (the policy treats it like a
//!   resource of another patient). For a child younger than `full_proxy_under` (12) and a
//!   parental relationship, the labels in `released_to_parents_of_young_children` are
//!   released; 42 CFR Part 2 substance-use records (`ETH`, `SUD`) and very restricted
//!   (`V`) ones are not in that list by default. A birth date the EHR does not give
//!   releases nothing and ends nothing (the age is unknown).
//!
//! A patient always sees their own records: grants only exist for the patients a login
//! acts for as a proxy.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The types a billing-only proxy may read (with `Patient`, for the name) and write.
pub const BILLING_TYPES: &[&str] = &[
    "Account",
    "ChargeItem",
    "Invoice",
    "PaymentNotice",
    "PaymentReconciliation",
    "Coverage",
];

/// The HL7 v3 confidentiality code system (`R` restricted, `V` very restricted).
pub const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
/// The HL7 v3 ActCode system, whose ActInformationSensitivityPolicy codes label
/// sensitive records (`PSY`, `ETH`, `SEX`, `HIV`, ...).
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// The HL7 v3 RoleCode system of `RelatedPerson.relationship`.
pub const ROLE_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
/// Where Portico reads a proxy's access level on `RelatedPerson`, by default.
pub const LEVEL_EXTENSION: &str = "https://portico.dev/fhir/StructureDefinition/proxy-access-level";

/// What a proxy may do for a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessLevel {
    /// Read and act (book, refill, message, pay).
    Full,
    /// Read; every write refused.
    ReadOnly,
    /// Bills and payments only.
    BillingOnly,
}

impl AccessLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Full => "full",
            AccessLevel::ReadOnly => "read-only",
            AccessLevel::BillingOnly => "billing-only",
        }
    }

    pub fn parse(s: &str) -> Option<AccessLevel> {
        match s {
            "full" => Some(AccessLevel::Full),
            "read-only" => Some(AccessLevel::ReadOnly),
            "billing-only" => Some(AccessLevel::BillingOnly),
            _ => None,
        }
    }

    /// Whether a proxy at this level may read resources of `resource_type`.
    pub fn may_read(self, resource_type: &str) -> bool {
        match self {
            AccessLevel::Full | AccessLevel::ReadOnly => true,
            AccessLevel::BillingOnly => {
                resource_type == "Patient" || BILLING_TYPES.contains(&resource_type)
            }
        }
    }

    /// Whether a proxy at this level may write resources of `resource_type`.
    pub fn may_write(self, resource_type: &str) -> bool {
        match self {
            AccessLevel::Full => true,
            AccessLevel::ReadOnly => false,
            AccessLevel::BillingOnly => BILLING_TYPES.contains(&resource_type),
        }
    }
}

/// A security label: a coding of `meta.security`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Label {
    pub system: String,
    pub code: String,
}

impl Label {
    pub fn new(system: &str, code: &str) -> Label {
        Label {
            system: system.to_owned(),
            code: code.to_owned(),
        }
    }

    /// `system|code`, as written in the configuration.
    pub fn parse(s: &str) -> Option<Label> {
        let (system, code) = s.rsplit_once('|')?;
        (!system.is_empty() && !code.is_empty()).then(|| Label::new(system, code))
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}|{}", self.system, self.code)
    }
}

/// Whether `resource`'s `meta.security` carries one of `labels`.
pub fn is_labelled(resource: &Value, labels: &[Label]) -> bool {
    if labels.is_empty() {
        return false;
    }
    let Some(security) = resource
        .get("meta")
        .and_then(|m| m.get("security"))
        .and_then(Value::as_array)
    else {
        return false;
    };
    security.iter().any(|coding| {
        let system = coding.get("system").and_then(Value::as_str);
        let code = coding.get("code").and_then(Value::as_str);
        labels
            .iter()
            .any(|l| system == Some(l.system.as_str()) && code == Some(l.code.as_str()))
    })
}

/// What a login may do for one patient it acts for as a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyGrant {
    pub patient: String,
    /// The `RelatedPerson` the grant comes from.
    pub relationship: String,
    pub level: AccessLevel,
    /// Records carrying one of these labels are withheld.
    pub withheld: Arc<Vec<Label>>,
}

/// One `RelatedPerson`, as far as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    pub id: String,
    pub patient: String,
    pub active: bool,
    /// `period.start`: a date starts at its first instant (UTC).
    pub start: Option<DateTime<Utc>>,
    /// `period.end`, exclusive: a date ends after its last instant, a dateTime (what a
    /// revocation writes) at that instant.
    pub end: Option<DateTime<Utc>>,
    /// `relationship[].coding[].code`, in order.
    pub codes: Vec<String>,
    /// The level extension's code, if present.
    pub level: Option<String>,
}

impl Relationship {
    /// Reads the facts of a `RelatedPerson` resource; `None` when it names no local
    /// patient (`patient` is not a plain `Patient/<id>` reference).
    pub fn from_resource(resource: &Value, level_extension: &str) -> Option<Relationship> {
        let id = resource.get("id")?.as_str()?.to_owned();
        let reference = resource.get("patient")?.get("reference")?.as_str()?;
        let patient = portico_fhir::reference::Reference::parse(reference)
            .ok()
            .filter(|r| r.resource_type == "Patient" && r.base.is_none() && r.version.is_none())?
            .id;
        let at = |key: &str| {
            resource
                .get("period")
                .and_then(|p| p.get(key))
                .and_then(Value::as_str)
        };
        let codes = resource
            .get("relationship")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("coding").and_then(Value::as_array))
            .flatten()
            .filter_map(|c| c.get("code").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        let level = resource
            .get("extension")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|e| e.get("url").and_then(Value::as_str) == Some(level_extension))
            .and_then(|e| e.get("valueCode").and_then(Value::as_str))
            .map(str::to_owned);
        Some(Relationship {
            id,
            patient,
            active: resource.get("active").and_then(Value::as_bool) != Some(false),
            start: at("start").and_then(|s| parse_instant(s, false)),
            end: at("end").and_then(|s| parse_instant(s, true)),
            codes,
            level,
        })
    }
}

/// The date part of a FHIR `date` or `dateTime` (`YYYY`, `YYYY-MM` are too vague for
/// a period or an age, and parse as nothing).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

/// A `period` bound: a dateTime as it is; a date at its first instant, or for an end
/// (exclusive) at the first instant of the next day.
pub fn parse_instant(s: &str, end: bool) -> Option<DateTime<Utc>> {
    if s.len() > 10 {
        return DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc));
    }
    let day = parse_date(s)?;
    let day = if end {
        day.checked_add_days(Days::new(1))?
    } else {
        day
    };
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Why a relationship grants nothing (for the access list and audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ended {
    /// `active: false`.
    Inactive,
    /// The period starts after today.
    NotStarted,
    /// The period has ended (revoked, or expired).
    PeriodEnded,
    /// A parental relationship of a patient who came of age.
    CameOfAge,
    /// An active `Consent` of the patient denies this relationship access.
    Revoked,
}

impl Ended {
    /// The reason's name, as it is serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Inactive => "inactive",
            Ended::NotStarted => "not-started",
            Ended::PeriodEnded => "period-ended",
            Ended::CameOfAge => "came-of-age",
            Ended::Revoked => "revoked",
        }
    }
}

/// The `RelatedPerson` ids the patient's `Consent`s deny access at `now`: an active
/// Consent whose `provision` (or a nested one) has `type: deny`, a period in force (or
/// none) and the `RelatedPerson` among its `actor`s. What a revocation with the
/// `consent` strategy writes; any other Consent is not Portico's to interpret.
pub fn denied_by_consents(
    consents: &[Value],
    now: DateTime<Utc>,
) -> std::collections::BTreeSet<String> {
    fn walk(provision: &Value, now: DateTime<Utc>, out: &mut std::collections::BTreeSet<String>) {
        let period = |key: &str, end: bool| {
            provision
                .get("period")
                .and_then(|p| p.get(key))
                .and_then(Value::as_str)
                .and_then(|s| parse_instant(s, end))
        };
        let in_force = period("start", false).is_none_or(|s| s <= now)
            && period("end", true).is_none_or(|e| now < e);
        if provision.get("type").and_then(Value::as_str) == Some("deny") && in_force {
            for actor in provision
                .get("actor")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let reference = actor
                    .get("reference")
                    .and_then(|r| r.get("reference"))
                    .and_then(Value::as_str)
                    .and_then(|r| portico_fhir::reference::Reference::parse(r).ok());
                if let Some(r) = reference
                    && r.resource_type == "RelatedPerson"
                    && r.base.is_none()
                {
                    out.insert(r.id);
                }
            }
        }
        for nested in provision
            .get("provision")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(nested, now, out);
        }
    }
    let mut out = std::collections::BTreeSet::new();
    for consent in consents {
        if consent.get("status").and_then(Value::as_str) != Some("active") {
            continue;
        }
        if let Some(provision) = consent.get("provision") {
            walk(provision, now, &mut out);
        }
    }
    out
}

/// The rules, from the `[access]` configuration. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationRules {
    pub level_extension: String,
    /// Relationship code → level.
    pub levels: BTreeMap<String, AccessLevel>,
    pub default_level: AccessLevel,
    pub parent_relationships: Vec<String>,
    pub full_proxy_under: u32,
    pub adult_at: u32,
    pub sensitive: Vec<Label>,
    pub released_to_parents_of_young_children: Vec<Label>,
}

impl Default for DelegationRules {
    fn default() -> Self {
        let full = [
            "MTH", "FTH", "PRN", "GUARD", "NMTH", "NFTH", "STPMTH", "STPFTH", "DAU", "SON", "CHILD",
        ];
        let levels = full
            .iter()
            .map(|c| ((*c).to_owned(), AccessLevel::Full))
            .chain(
                ["SPS", "HUSB", "WIFE"]
                    .iter()
                    .map(|c| ((*c).to_owned(), AccessLevel::BillingOnly)),
            )
            .collect();
        let act = |code| Label::new(ACT_CODE, code);
        let conf = |code| Label::new(CONFIDENTIALITY, code);
        DelegationRules {
            level_extension: LEVEL_EXTENSION.to_owned(),
            levels,
            default_level: AccessLevel::ReadOnly,
            parent_relationships: [
                "MTH", "FTH", "PRN", "GUARD", "NMTH", "NFTH", "STPMTH", "STPFTH",
            ]
            .map(str::to_owned)
            .to_vec(),
            full_proxy_under: 12,
            adult_at: 18,
            sensitive: vec![
                conf("R"),
                conf("V"),
                act("PSY"),
                act("MH"),
                act("BH"),
                act("SEX"),
                act("STD"),
                act("HIV"),
                act("ETH"),
                act("SUD"),
            ],
            released_to_parents_of_young_children: vec![
                conf("R"),
                act("PSY"),
                act("MH"),
                act("BH"),
                act("SEX"),
                act("STD"),
                act("HIV"),
            ],
        }
    }
}

/// Whole years from `birth` to `today` (0 before the first birthday).
pub fn age_on(birth: NaiveDate, today: NaiveDate) -> u32 {
    let mut years = today.year() - birth.year();
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    u32::try_from(years).unwrap_or(0)
}

/// The day a person born on `birth` turns `years` (29 February births on 1 March).
fn birthday(birth: NaiveDate, years: u32) -> Option<NaiveDate> {
    let year = birth.year().checked_add(i32::try_from(years).ok()?)?;
    NaiveDate::from_ymd_opt(year, birth.month(), birth.day())
        .or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))
}

impl DelegationRules {
    fn is_parental(&self, r: &Relationship) -> bool {
        r.codes
            .iter()
            .any(|c| self.parent_relationships.iter().any(|p| p == c))
    }

    /// The level a relationship gives, whether or not it is in force.
    pub fn level_of(&self, r: &Relationship) -> AccessLevel {
        if let Some(level) = r.level.as_deref().and_then(AccessLevel::parse) {
            return level;
        }
        r.codes
            .iter()
            .find_map(|c| self.levels.get(c).copied())
            .unwrap_or(self.default_level)
    }

    /// Whether `r` is in force at `now` for a patient born on `birth`.
    pub fn in_force(
        &self,
        r: &Relationship,
        birth: Option<NaiveDate>,
        now: DateTime<Utc>,
    ) -> Result<(), Ended> {
        let today = now.date_naive();
        if !r.active {
            return Err(Ended::Inactive);
        }
        if r.start.is_some_and(|s| s > now) {
            return Err(Ended::NotStarted);
        }
        if r.end.is_some_and(|e| e <= now) {
            return Err(Ended::PeriodEnded);
        }
        if let Some(birth) = birth
            && self.is_parental(r)
            && age_on(birth, today) >= self.adult_at
        {
            let granted_again = birthday(birth, self.adult_at)
                .is_some_and(|adult| r.start.is_some_and(|s| s.date_naive() >= adult));
            if !granted_again {
                return Err(Ended::CameOfAge);
            }
        }
        Ok(())
    }

    /// The grant `r` gives at `now`, or why it gives none.
    pub fn decide(
        &self,
        r: &Relationship,
        birth: Option<NaiveDate>,
        now: DateTime<Utc>,
    ) -> Result<ProxyGrant, Ended> {
        self.in_force(r, birth, now)?;
        let today = now.date_naive();
        let young_child = birth.is_some_and(|b| age_on(b, today) < self.full_proxy_under);
        let withheld: Vec<Label> = if young_child && self.is_parental(r) {
            self.sensitive
                .iter()
                .filter(|l| !self.released_to_parents_of_young_children.contains(l))
                .cloned()
                .collect()
        } else {
            self.sensitive.clone()
        };
        Ok(ProxyGrant {
            patient: r.patient.clone(),
            relationship: r.id.clone(),
            level: self.level_of(r),
            withheld: Arc::new(withheld),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn day(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }

    fn rp(code: &str, start: Option<&str>, end: Option<&str>) -> Relationship {
        Relationship {
            id: "rp-1".into(),
            patient: "kid".into(),
            active: true,
            start: start.and_then(|s| parse_instant(s, false)),
            end: end.and_then(|s| parse_instant(s, true)),
            codes: vec![code.into()],
            level: None,
        }
    }

    const TODAY: &str = "2026-12-06";

    fn noon() -> DateTime<Utc> {
        parse_instant("2026-12-06T12:00:00Z", false).unwrap()
    }

    #[test]
    fn reads_a_related_person() {
        let r = Relationship::from_resource(
            &json!({"resourceType":"RelatedPerson","id":"rp-9","active":true,
                "patient":{"reference":"Patient/kid"},
                "relationship":[{"coding":[{"system":ROLE_CODE,"code":"MTH"}]}],
                "period":{"start":"2010-05-01","end":"2030-01-01T00:00:00Z"},
                "extension":[{"url":LEVEL_EXTENSION,"valueCode":"read-only"}]}),
            LEVEL_EXTENSION,
        )
        .unwrap();
        assert_eq!(r.id, "rp-9");
        assert_eq!(r.patient, "kid");
        assert_eq!(r.start, parse_instant("2010-05-01T00:00:00Z", false));
        assert_eq!(r.end, parse_instant("2030-01-01T00:00:00Z", true));
        assert_eq!(r.codes, vec!["MTH"]);
        assert_eq!(
            DelegationRules::default().level_of(&r),
            AccessLevel::ReadOnly
        );
        // A foreign-server, versioned or non-Patient reference names no local patient.
        for patient in [
            "https://elsewhere/fhir/Patient/kid",
            "Group/kid",
            "Patient/kid/_history/2",
        ] {
            let resource = json!({"id":"r","patient":{"reference":patient}});
            assert_eq!(
                Relationship::from_resource(&resource, LEVEL_EXTENSION),
                None,
                "{patient}"
            );
        }
    }

    #[test]
    fn ended_relationships_grant_nothing() {
        let rules = DelegationRules::default();
        let today = noon();
        let birth = Some(day("2000-01-01"));
        let mut inactive = rp("FRND", None, None);
        inactive.active = false;
        assert_eq!(rules.decide(&inactive, birth, today), Err(Ended::Inactive));
        assert_eq!(
            rules.decide(&rp("FRND", Some("2027-01-01"), None), birth, today),
            Err(Ended::NotStarted)
        );
        assert_eq!(
            rules.decide(
                &rp("FRND", Some("2020-01-01"), Some("2026-12-05")),
                birth,
                today
            ),
            Err(Ended::PeriodEnded)
        );
        // The end day itself is still in force; a revocation's instant ends it at once.
        assert!(
            rules
                .decide(&rp("FRND", None, Some(TODAY)), birth, today)
                .is_ok()
        );
        assert_eq!(
            rules.decide(
                &rp("FRND", None, Some("2026-12-06T11:59:59Z")),
                birth,
                today
            ),
            Err(Ended::PeriodEnded)
        );
        assert!(
            rules
                .decide(
                    &rp("FRND", None, Some("2026-12-06T12:00:01Z")),
                    birth,
                    today
                )
                .is_ok()
        );
    }

    #[test]
    fn parental_access_ends_at_eighteen_unless_granted_again() {
        let rules = DelegationRules::default();
        let today = noon();
        let seventeen = Some(day("2009-12-07"));
        let eighteen = Some(day("2008-12-06"));
        let mother = rp("MTH", Some("2008-12-06"), None);
        assert!(rules.decide(&mother, seventeen, today).is_ok());
        assert_eq!(
            rules.decide(&mother, eighteen, today),
            Err(Ended::CameOfAge)
        );
        // Granted again on the 18th birthday: in force.
        let again = rp("MTH", Some("2026-12-06"), None);
        assert!(rules.decide(&again, eighteen, today).is_ok());
        // Not a parental relationship: age does not end it.
        assert!(
            rules
                .decide(&rp("DAU", Some("2001-01-01"), None), eighteen, today)
                .is_ok()
        );
        // Unknown birth date: not ended.
        assert!(rules.decide(&mother, None, today).is_ok());
    }

    #[test]
    fn young_children_release_labels_to_parents_but_not_part_2() {
        let rules = DelegationRules::default();
        let today = noon();
        let psy = Label::new(ACT_CODE, "PSY");
        let eth = Label::new(ACT_CODE, "ETH");
        let eight = Some(day("2018-06-01"));
        let fifteen = Some(day("2011-06-01"));
        let parent = rules.decide(&rp("MTH", None, None), eight, today).unwrap();
        assert!(!parent.withheld.contains(&psy));
        assert!(parent.withheld.contains(&eth));
        // Twelve to seventeen: confidential records hidden from parents.
        let teen = rules
            .decide(&rp("MTH", None, None), fifteen, today)
            .unwrap();
        assert!(teen.withheld.contains(&psy));
        // A grandparent is not a parent: nothing released.
        let grand = rules
            .decide(&rp("GRMTH", None, None), eight, today)
            .unwrap();
        assert!(grand.withheld.contains(&psy));
        assert_eq!(grand.level, AccessLevel::ReadOnly);
        // Unknown birth date: nothing released.
        let unknown = rules.decide(&rp("MTH", None, None), None, today).unwrap();
        assert!(unknown.withheld.contains(&psy));
    }

    #[test]
    fn consents_deny_relationships_in_force() {
        let now = noon();
        let deny = |rp: &str, start: &str| {
            json!({"resourceType":"Consent","status":"active","provision":{
                "type":"deny","period":{"start":start},
                "actor":[{"role":{"text":"proxy"},"reference":{"reference":format!("RelatedPerson/{rp}")}}]}})
        };
        let consents = vec![
            deny("rp-now", "2026-12-06T11:00:00Z"),
            deny("rp-later", "2026-12-07T00:00:00Z"),
            json!({"resourceType":"Consent","status":"inactive","provision":{"type":"deny",
                "actor":[{"reference":{"reference":"RelatedPerson/rp-inactive"}}]}}),
            json!({"resourceType":"Consent","status":"active","provision":{"type":"permit",
                "provision":[{"type":"deny","actor":[{"reference":{"reference":"RelatedPerson/rp-nested"}}]}],
                "actor":[{"reference":{"reference":"RelatedPerson/rp-permitted"}}]}}),
            json!({"resourceType":"Consent","status":"active","provision":{"type":"deny",
                "actor":[{"reference":{"reference":"https://elsewhere/fhir/RelatedPerson/x"}}]}}),
        ];
        let denied = denied_by_consents(&consents, now);
        let expected: std::collections::BTreeSet<String> = ["rp-now", "rp-nested"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(denied, expected);
    }

    #[test]
    fn levels() {
        let rules = DelegationRules::default();
        assert_eq!(rules.level_of(&rp("MTH", None, None)), AccessLevel::Full);
        assert_eq!(
            rules.level_of(&rp("SPS", None, None)),
            AccessLevel::BillingOnly
        );
        assert_eq!(
            rules.level_of(&rp("NBOR", None, None)),
            AccessLevel::ReadOnly
        );
        let mut with_ext = rp("SPS", None, None);
        with_ext.level = Some("full".into());
        assert_eq!(rules.level_of(&with_ext), AccessLevel::Full);
        with_ext.level = Some("bogus".into());
        assert_eq!(rules.level_of(&with_ext), AccessLevel::BillingOnly);
        assert!(AccessLevel::BillingOnly.may_read("Invoice"));
        assert!(!AccessLevel::BillingOnly.may_read("Observation"));
        assert!(AccessLevel::BillingOnly.may_write("PaymentReconciliation"));
        assert!(!AccessLevel::ReadOnly.may_write("Appointment"));
        assert!(AccessLevel::Full.may_write("Appointment"));
    }

    #[test]
    fn labels() {
        let labels = [Label::new(ACT_CODE, "PSY")];
        let labelled = json!({"meta":{"security":[{"system":ACT_CODE,"code":"PSY"}]}});
        let other_system = json!({"meta":{"security":[{"system":"urn:x","code":"PSY"}]}});
        assert!(is_labelled(&labelled, &labels));
        assert!(!is_labelled(&other_system, &labels));
        assert!(!is_labelled(&json!({}), &labels));
        assert!(!is_labelled(&labelled, &[]));
        assert_eq!(Label::parse("urn:a|b"), Some(Label::new("urn:a", "b")));
        assert_eq!(Label::parse("nobar"), None);
        assert_eq!(age_on(day("2008-02-29"), day("2026-02-28")), 17);
        assert_eq!(age_on(day("2008-02-29"), day("2026-03-01")), 18);
    }

    #[test]
    fn ended_names_are_the_serialized_ones() {
        for e in [
            Ended::Inactive,
            Ended::NotStarted,
            Ended::PeriodEnded,
            Ended::CameOfAge,
            Ended::Revoked,
        ] {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
    }
}
