//! The families: patients who have proxies, proxies who log in, and records that carry
//! security labels.
//!
//! Two families are always generated after the ordinary patients, whatever the patient
//! count, with fixed ids and with ages exact relative to `today`:
//!
//! - **Rivera**: three children who are patients, `fam-child` (8), `fam-teen` (15) and
//!   `fam-adult-child` (19). Their mother is a login only (no Patient): one
//!   RelatedPerson per child, `MTH`, from the child's birth date and never ended, so the
//!   19-year-old's parental relationship outlives their 18th birthday and only an age
//!   rule can end it. Their grandmother (a login only) is `GRMTH` of the 8-year-old
//!   alone, with the access level `read-only`.
//! - **Hughes**: `fam-elder` (78), cared for by `fam-daughter` (45), herself a patient:
//!   her RelatedPerson for the elder is `DAU`, `full`, from two years ago, and her
//!   Patient links to it (`seealso`). The elder's wife is a login only, `SPS`,
//!   `billing-only`. A former caregiver (a login only, `FRND`) keeps an `active`
//!   RelatedPerson whose period ended about a year ago: only the period says it is over.
//!
//! Each family patient gets an ordinary record ([`super::patient`]), drawn from its own
//! RNG stream, plus sensitive records labelled in `meta.security` ([`records`]).
//! Every login's RelatedPersons share the identifier `urn:portico:sandbox:person|<login>`.

use chrono::NaiveDate;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use super::codes::{self, Code};
use super::patient::{self, Identity};
use super::{
    STREAM_FAMILY, World, concept, date, days_before, reference, stream_seed, years_before,
};
use crate::PatientSummary;
use records::Records;

mod records;
#[cfg(test)]
mod tests;

/// `RelatedPerson.identifier.system` naming the person (login) a RelatedPerson is.
pub const PERSON_SYSTEM: &str = "urn:portico:sandbox:person";
/// The extension on RelatedPerson that carries the proxy access level
/// (`full`, `read-only`, `billing-only`) as a `valueCode`.
pub const ACCESS_LEVEL_URL: &str =
    "https://portico.dev/fhir/StructureDefinition/proxy-access-level";
/// The code system of the sensitivity labels (`SEX`, `STD`, `PSY`, `ETH`, `HIV`).
pub const SENSITIVITY_SYSTEM: &str = super::codes::V3_ACT_CODE;
/// The code system of the confidentiality label (`R`).
pub const CONFIDENTIALITY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

/// A person who logs in for one or more patients through RelatedPerson resources.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProxyLogin {
    /// The login id: a token's `sub` and the RelatedPersons' identifier value.
    pub id: String,
    /// "Given Family".
    pub name: String,
    /// The token's `fhirUser`: `RelatedPerson/<first rp>`, or `Patient/<id>` for a
    /// proxy who is a patient herself.
    pub fhir_user: String,
    /// Every patient the login has a RelatedPerson for (active or not, ended or not),
    /// the login's own patient record first: the token's `patient` array.
    pub patients: Vec<String>,
}

/// One generated RelatedPerson.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelationshipInfo {
    /// The RelatedPerson id.
    pub id: String,
    /// The [`ProxyLogin::id`] of the person.
    pub login: String,
    /// The Patient id the relationship is to.
    pub patient: String,
    /// The v3-RoleCode (`MTH`, `GRMTH`, `DAU`, `SPS`, `FRND`).
    pub code: String,
    /// The access-level extension's code, when the RelatedPerson carries one.
    pub access_level: Option<String>,
    /// `period.start`, `YYYY-MM-DD`.
    pub start: String,
    /// `period.end`, when the relationship has ended.
    pub end: Option<String>,
}

/// The proxy logins of the families.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FamilyLogins {
    /// The Rivera children's mother: `MTH` of the child, the teen and the adult child.
    pub parent: ProxyLogin,
    /// The Rivera grandmother: `GRMTH` of the child, `read-only`.
    pub grandparent: ProxyLogin,
    /// The elder's daughter, a patient herself: `DAU` of the elder, `full`.
    pub daughter: ProxyLogin,
    /// The elder's wife: `SPS`, `billing-only`.
    pub spouse: ProxyLogin,
    /// The elder's former caregiver: `FRND`, period ended.
    pub former_caregiver: ProxyLogin,
}

impl FamilyLogins {
    /// Every login, in the order of the fields.
    pub fn all(&self) -> [&ProxyLogin; 5] {
        [
            &self.parent,
            &self.grandparent,
            &self.daughter,
            &self.spouse,
            &self.former_caregiver,
        ]
    }

    /// The login with this id.
    pub fn find(&self, id: &str) -> Option<&ProxyLogin> {
        self.all().into_iter().find(|login| login.id == id)
    }
}

/// What the families are: patient ids, the sensitive records (`(type, id)`), the
/// logins and the RelatedPersons.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Families {
    /// `fam-child`, aged 8.
    pub child: String,
    /// `fam-teen`, aged 15.
    pub teen: String,
    /// `fam-adult-child`, aged 19.
    pub adult_child: String,
    /// `fam-elder`, aged 78.
    pub elder: String,
    /// `fam-daughter`, aged 45.
    pub daughter: String,
    /// The five family patients, in the order above.
    pub patients: Vec<PatientSummary>,
    /// ADHD Condition, `PSY`.
    pub child_sensitive: Vec<(String, String)>,
    /// Reproductive-health Encounter (`SEX`, `R`), Condition (`SEX`, `R`), chlamydia
    /// test Observation (`STD`), oral contraceptive MedicationRequest and its
    /// MedicationDispense (`SEX`).
    pub teen_sensitive: Vec<(String, String)>,
    /// Alcohol use disorder Condition (`ETH`, `R`) and AUDIT-C Observation (`ETH`).
    pub elder_sensitive: Vec<(String, String)>,
    /// HIV viral load Observation (`HIV`).
    pub daughter_sensitive: Vec<(String, String)>,
    pub logins: FamilyLogins,
    pub relationships: Vec<RelationshipInfo>,
}

/// How many upcoming appointments the families book (one per family patient).
pub(crate) const BOOKED: usize = MEMBERS.len();

/// A family patient.
struct Member {
    id: &'static str,
    given: &'static str,
    family: &'static str,
    female: bool,
    age: u32,
    /// Days between the birthday and `today`'s anniversary of it (under a year).
    days_past_birthday: u64,
}

const CHILD: usize = 0;
const TEEN: usize = 1;
const ADULT_CHILD: usize = 2;
const ELDER: usize = 3;
const DAUGHTER: usize = 4;

const MEMBERS: [Member; 5] = [
    Member {
        id: "fam-child",
        given: "Mateo",
        family: "Rivera",
        female: false,
        age: 8,
        days_past_birthday: 120,
    },
    Member {
        id: "fam-teen",
        given: "Sofia",
        family: "Rivera",
        female: true,
        age: 15,
        days_past_birthday: 200,
    },
    Member {
        id: "fam-adult-child",
        given: "Diego",
        family: "Rivera",
        female: false,
        age: 19,
        days_past_birthday: 90,
    },
    Member {
        id: "fam-elder",
        given: "Walter",
        family: "Hughes",
        female: false,
        age: 78,
        days_past_birthday: 150,
    },
    Member {
        id: "fam-daughter",
        given: "Linda",
        family: "Hughes",
        female: true,
        age: 45,
        days_past_birthday: 60,
    },
];

/// MRNs, phones and subscriber ids of family patients are numbered from here: far past
/// any ordinary patient's index, and (phone numbers repeat every 10,000) past the
/// phones of the first 9,000 ordinary patients.
const FIRST_NUMBER: usize = 10_009_001;

/// A person who logs in.
struct Person {
    login: &'static str,
    given: &'static str,
    family: &'static str,
    gender: &'static str,
}

const PARENT: Person = Person {
    login: "proxy-rivera-parent",
    given: "Elena",
    family: "Rivera",
    gender: "female",
};
const GRANDPARENT: Person = Person {
    login: "proxy-rivera-grandparent",
    given: "Rosa",
    family: "Rivera",
    gender: "female",
};
const DAUGHTER_PERSON: Person = Person {
    login: "proxy-hughes-daughter",
    given: "Linda",
    family: "Hughes",
    gender: "female",
};
const SPOUSE: Person = Person {
    login: "proxy-hughes-spouse",
    given: "Dorothy",
    family: "Hughes",
    gender: "female",
};
const FORMER_CAREGIVER: Person = Person {
    login: "proxy-former-caregiver",
    given: "Grace",
    family: "Okafor",
    gender: "female",
};

const MOTHER: Code = Code {
    code: "MTH",
    display: "mother",
};
const GRANDMOTHER: Code = Code {
    code: "GRMTH",
    display: "grandmother",
};
const DAUGHTER_ROLE: Code = Code {
    code: "DAU",
    display: "natural daughter",
};
const SPOUSE_ROLE: Code = Code {
    code: "SPS",
    display: "spouse",
};
const FRIEND: Code = Code {
    code: "FRND",
    display: "unrelated friend",
};

/// One RelatedPerson to generate.
struct Relation {
    id: &'static str,
    person: &'static Person,
    patient: usize,
    role: Code,
    access_level: Option<&'static str>,
    start: NaiveDate,
    end: Option<NaiveDate>,
}

fn birth_date(member: &Member, today: NaiveDate) -> NaiveDate {
    days_before(years_before(today, member.age), member.days_past_birthday)
}

/// Emits the families (their patients' records, sensitive records and RelatedPersons).
/// Their upcoming appointments take the booking ordinals from `booked_ordinal` on.
pub(crate) fn emit(world: &World, booked_ordinal: usize, sink: &mut dyn FnMut(Value)) -> Families {
    let today = world.today;
    let births: Vec<NaiveDate> = MEMBERS.iter().map(|m| birth_date(m, today)).collect();
    let relations = [
        Relation {
            id: "rp-parent-child",
            person: &PARENT,
            patient: CHILD,
            role: MOTHER,
            access_level: None,
            start: births[CHILD],
            end: None,
        },
        Relation {
            id: "rp-parent-teen",
            person: &PARENT,
            patient: TEEN,
            role: MOTHER,
            access_level: None,
            start: births[TEEN],
            end: None,
        },
        Relation {
            id: "rp-parent-adult-child",
            person: &PARENT,
            patient: ADULT_CHILD,
            role: MOTHER,
            access_level: None,
            start: births[ADULT_CHILD],
            end: None,
        },
        Relation {
            id: "rp-grandparent-child",
            person: &GRANDPARENT,
            patient: CHILD,
            role: GRANDMOTHER,
            access_level: Some("read-only"),
            start: births[CHILD],
            end: None,
        },
        Relation {
            id: "rp-daughter-elder",
            person: &DAUGHTER_PERSON,
            patient: ELDER,
            role: DAUGHTER_ROLE,
            access_level: Some("full"),
            start: years_before(today, 2),
            end: None,
        },
        Relation {
            id: "rp-spouse-elder",
            person: &SPOUSE,
            patient: ELDER,
            role: SPOUSE_ROLE,
            access_level: Some("billing-only"),
            start: years_before(today, 5),
            end: None,
        },
        Relation {
            id: "rp-former-caregiver-elder",
            person: &FORMER_CAREGIVER,
            patient: ELDER,
            role: FRIEND,
            access_level: None,
            start: years_before(today, 3),
            end: Some(days_before(years_before(today, 1), 10)),
        },
    ];

    let mut patients = Vec::with_capacity(MEMBERS.len());
    let mut sensitive: Vec<Vec<(String, String)>> = Vec::with_capacity(MEMBERS.len());
    for (k, member) in MEMBERS.iter().enumerate() {
        let identity = Identity {
            id: member.id,
            number: FIRST_NUMBER + k,
            given: member.given,
            family: member.family,
            female: member.female,
            birth_date: births[k],
            // The daughter's own record points at the RelatedPerson she is for her father.
            links: if k == DAUGHTER {
                vec!["RelatedPerson/rp-daughter-elder".to_owned()]
            } else {
                Vec::new()
            },
        };
        let mut rng = StdRng::seed_from_u64(stream_seed(world.seed, STREAM_FAMILY, k as u64));
        let emitted =
            patient::emit_identified(world, &identity, &mut rng, booked_ordinal + k, 1, sink);
        let records = Records {
            world,
            patient: member.id,
            pcp: emitted.pcp,
        };
        let labelled = match k {
            CHILD => records.child(),
            TEEN => records.teen(),
            ELDER => records.elder(),
            DAUGHTER => records.daughter(),
            _ => Vec::new(),
        };
        let mut ids = Vec::with_capacity(labelled.len());
        for resource in labelled {
            ids.push((
                resource["resourceType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                resource["id"].as_str().unwrap_or_default().to_owned(),
            ));
            sink(resource);
        }
        sensitive.push(ids);
        patients.push(emitted.summary);
    }
    for relation in &relations {
        sink(related_person(relation));
    }

    let login = |person: &Person, own_record: Option<usize>| {
        let mut ids: Vec<String> = own_record
            .map(|k| MEMBERS[k].id.to_owned())
            .into_iter()
            .collect();
        let mut first_rp = None;
        for relation in relations.iter().filter(|r| r.person.login == person.login) {
            first_rp.get_or_insert(relation.id);
            ids.push(MEMBERS[relation.patient].id.to_owned());
        }
        let fhir_user = match (own_record, first_rp) {
            (Some(k), _) => format!("Patient/{}", MEMBERS[k].id),
            (None, Some(rp)) => format!("RelatedPerson/{rp}"),
            (None, None) => String::new(),
        };
        ProxyLogin {
            id: person.login.to_owned(),
            name: format!("{} {}", person.given, person.family),
            fhir_user,
            patients: ids,
        }
    };
    let logins = FamilyLogins {
        parent: login(&PARENT, None),
        grandparent: login(&GRANDPARENT, None),
        daughter: login(&DAUGHTER_PERSON, Some(DAUGHTER)),
        spouse: login(&SPOUSE, None),
        former_caregiver: login(&FORMER_CAREGIVER, None),
    };
    let relationships = relations
        .iter()
        .map(|r| RelationshipInfo {
            id: r.id.to_owned(),
            login: r.person.login.to_owned(),
            patient: MEMBERS[r.patient].id.to_owned(),
            code: r.role.code.to_owned(),
            access_level: r.access_level.map(str::to_owned),
            start: date(r.start),
            end: r.end.map(date),
        })
        .collect();
    let mut sensitive = sensitive.into_iter();
    let mut next = || sensitive.next().unwrap_or_default();
    let (child_sensitive, teen_sensitive, _, elder_sensitive, daughter_sensitive) =
        (next(), next(), next(), next(), next());
    Families {
        child: MEMBERS[CHILD].id.to_owned(),
        teen: MEMBERS[TEEN].id.to_owned(),
        adult_child: MEMBERS[ADULT_CHILD].id.to_owned(),
        elder: MEMBERS[ELDER].id.to_owned(),
        daughter: MEMBERS[DAUGHTER].id.to_owned(),
        patients,
        child_sensitive,
        teen_sensitive,
        elder_sensitive,
        daughter_sensitive,
        logins,
        relationships,
    }
}

fn related_person(relation: &Relation) -> Value {
    let person = relation.person;
    let mut period = json!({ "start": date(relation.start) });
    if let Some(end) = relation.end {
        period["end"] = json!(date(end));
    }
    let mut resource = json!({
        "resourceType": "RelatedPerson",
        "id": relation.id,
        "active": true,
        "identifier": [{ "system": PERSON_SYSTEM, "value": person.login }],
        "patient": reference("Patient", MEMBERS[relation.patient].id),
        "relationship": [concept(codes::V3_ROLE_CODE, relation.role)],
        "name": [{ "given": [person.given], "family": person.family }],
        "gender": person.gender,
        "period": period
    });
    if let Some(level) = relation.access_level {
        resource["extension"] = json!([{ "url": ACCESS_LEVEL_URL, "valueCode": level }]);
    }
    resource
}
