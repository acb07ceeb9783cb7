//! The families' sensitive records: what each family patient has that carries
//! security labels in `meta.security`.

use chrono::NaiveDate;
use serde_json::{Value, json};

use super::super::codes::{self, Code};
use super::super::shared::{
    LOCATION_INFO, ORGANIZATION_ID, ORGANIZATION_NAME, location_id, medication_id,
};
use super::super::{
    World, coding, concept, date, days_after, days_before, instant, quantity, reference,
    reference_display, years_before,
};
use super::{CONFIDENTIALITY_SYSTEM, SENSITIVITY_SYSTEM};

/// A security label.
#[derive(Clone, Copy)]
struct Label {
    system: &'static str,
    code: Code,
}

const SEX: Label = Label {
    system: SENSITIVITY_SYSTEM,
    code: Code {
        code: "SEX",
        display: "sexuality and reproductive health information sensitivity",
    },
};
const STD: Label = Label {
    system: SENSITIVITY_SYSTEM,
    code: Code {
        code: "STD",
        display: "sexually transmitted disease information sensitivity",
    },
};
const PSY: Label = Label {
    system: SENSITIVITY_SYSTEM,
    code: Code {
        code: "PSY",
        display: "psychiatry disorder information sensitivity",
    },
};
const ETH: Label = Label {
    system: SENSITIVITY_SYSTEM,
    code: Code {
        code: "ETH",
        display: "substance abuse information sensitivity",
    },
};
const HIV: Label = Label {
    system: SENSITIVITY_SYSTEM,
    code: Code {
        code: "HIV",
        display: "HIV/AIDS information sensitivity",
    },
};
const RESTRICTED: Label = Label {
    system: CONFIDENTIALITY_SYSTEM,
    code: Code {
        code: "R",
        display: "restricted",
    },
};

/// `resource` with `meta.security` set to `labels`, `meta` placed right after `id`.
fn labelled(resource: Value, labels: &[Label]) -> Value {
    let Value::Object(map) = resource else {
        return resource;
    };
    let security: Vec<Value> = labels
        .iter()
        .map(|l| json!({ "system": l.system, "code": l.code.code, "display": l.code.display }))
        .collect();
    let mut out = serde_json::Map::with_capacity(map.len() + 1);
    for (key, value) in map {
        let after_id = key == "id";
        out.insert(key, value);
        if after_id {
            out.insert("meta".to_owned(), json!({ "security": security }));
        }
    }
    Value::Object(out)
}

const SNOMED_TYPE_CHECKUP: Code = Code {
    code: "185349003",
    display: "Encounter for check up",
};
const CONTRACEPTION_CARE: Code = Code {
    code: "389095005",
    display: "Contraception care",
};
const CONTRACEPTION_COUNSELLING_ICD: Code = Code {
    code: "Z30.09",
    display: "Encounter for other general counseling and advice on contraception",
};
const CHLAMYDIA_NAAT: Code = Code {
    code: "21613-5",
    display: "Chlamydia trachomatis DNA [Presence] in Specimen by NAA with probe detection",
};
const NOT_DETECTED: Code = Code {
    code: "260415000",
    display: "Not detected",
};
const ADHD: Code = Code {
    code: "406506008",
    display: "Attention deficit hyperactivity disorder",
};
const ADHD_ICD: Code = Code {
    code: "F90.9",
    display: "Attention-deficit hyperactivity disorder, unspecified type",
};
const ALCOHOL_USE_DISORDER: Code = Code {
    code: "7200002",
    display: "Alcoholism",
};
const ALCOHOL_DEPENDENCE_ICD: Code = Code {
    code: "F10.20",
    display: "Alcohol dependence, uncomplicated",
};
const AUDIT_C: Code = Code {
    code: "75626-2",
    display: "Total score [AUDIT-C]",
};
const HIV_VIRAL_LOAD: Code = Code {
    code: "20447-9",
    display: "HIV 1 RNA [#/volume] (viral load) in Serum or Plasma by NAA with probe detection",
};

/// Builds one family patient's sensitive records.
pub(super) struct Records<'a> {
    pub(super) world: &'a World,
    /// The Patient id.
    pub(super) patient: &'static str,
    /// The patient's primary care physician (an index into `World::practitioners`).
    pub(super) pcp: usize,
}

impl Records<'_> {
    fn id(&self, ty: &str, suffix: &str) -> String {
        format!("{ty}-{}-{suffix}", self.patient)
    }

    fn patient_ref(&self) -> Value {
        reference("Patient", self.patient)
    }

    fn pcp_ref(&self) -> Value {
        let p = &self.world.practitioners[self.pcp];
        reference_display("Practitioner", &p.id, &p.display())
    }

    fn condition(
        &self,
        id: String,
        snomed: Code,
        icd10: Code,
        text: &str,
        onset: NaiveDate,
    ) -> Value {
        json!({
            "resourceType": "Condition",
            "id": id,
            "clinicalStatus": { "coding": [coding(codes::CONDITION_CLINICAL, codes::ACTIVE_CLINICAL)] },
            "verificationStatus": { "coding": [coding(codes::CONDITION_VERIFICATION, codes::CONFIRMED)] },
            "category": [concept(codes::CONDITION_CATEGORY, Code { code: "problem-list-item", display: "Problem List Item" })],
            "code": { "coding": [coding(codes::SNOMED, snomed), coding(codes::ICD10, icd10)], "text": text },
            "subject": self.patient_ref(),
            "onsetDateTime": date(onset),
            "recordedDate": date(onset),
            "recorder": self.pcp_ref(),
            "asserter": self.pcp_ref()
        })
    }

    fn observation(&self, id: String, category: Code, code: Code, effective: &str) -> Value {
        json!({
            "resourceType": "Observation",
            "id": id,
            "status": "final",
            "category": [concept(codes::OBSERVATION_CATEGORY, category)],
            "code": concept(codes::LOINC, code),
            "subject": self.patient_ref(),
            "effectiveDateTime": effective,
            "issued": effective,
            "performer": [self.pcp_ref()]
        })
    }

    /// The 8-year-old: an ADHD diagnosis.
    pub(super) fn child(&self) -> Vec<Value> {
        let onset = years_before(self.world.today, 2);
        let condition = self.condition(
            self.id("cond", "psy1"),
            ADHD,
            ADHD_ICD,
            "Attention deficit hyperactivity disorder",
            onset,
        );
        vec![labelled(condition, &[PSY])]
    }

    /// The 15-year-old: a reproductive-health visit, its diagnosis, a chlamydia test and
    /// an oral contraceptive with refills left (and its first fill).
    pub(super) fn teen(&self) -> Vec<Value> {
        let today = self.world.today;
        let day = days_before(today, 40);
        let practitioner = &self.world.practitioners[self.pcp];
        let location = practitioner.location;
        let encounter_id = self.id("enc", "rh1");
        let condition_id = self.id("cond", "rh1");
        let encounter = json!({
            "resourceType": "Encounter",
            "id": encounter_id,
            "status": "finished",
            "class": { "system": codes::V3_ACT_CODE, "code": codes::AMBULATORY.code, "display": codes::AMBULATORY.display },
            "type": [{ "coding": [coding(codes::SNOMED, SNOMED_TYPE_CHECKUP)], "text": "Reproductive health visit" }],
            "subject": self.patient_ref(),
            "participant": [{
                "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PPRF", "display": "primary performer" }] }],
                "individual": self.pcp_ref()
            }],
            "period": { "start": instant(day, 10, 0), "end": instant(day, 10, 30) },
            "reasonReference": [reference_display("Condition", &condition_id, "Contraception care")],
            "location": [{ "location": reference_display("Location", &location_id(location), LOCATION_INFO[location].0) }],
            "serviceProvider": reference_display("Organization", ORGANIZATION_ID, ORGANIZATION_NAME)
        });
        let mut condition = self.condition(
            condition_id,
            CONTRACEPTION_CARE,
            CONTRACEPTION_COUNSELLING_ICD,
            "Contraception counselling",
            day,
        );
        condition["encounter"] = reference("Encounter", &encounter_id);
        let mut test = self.observation(
            self.id("obs", "rh1"),
            Code {
                code: "laboratory",
                display: "Laboratory",
            },
            CHLAMYDIA_NAAT,
            &instant(day, 10, 15),
        );
        test["encounter"] = reference("Encounter", &encounter_id);
        test["issued"] = json!(instant(days_after(day, 2), 16, 0));
        test["performer"] = json!([reference_display(
            "Organization",
            ORGANIZATION_ID,
            ORGANIZATION_NAME
        )]);
        test["valueCodeableConcept"] = concept(codes::SNOMED, NOT_DETECTED);

        let med = codes::ORAL_CONTRACEPTIVE;
        let med_ref = reference_display("Medication", &medication_id(&med), med.rxnorm.display);
        let request_id = self.id("mr", "rh1");
        let amount = json!({ "value": med.quantity, "unit": med.unit, "system": codes::UCUM, "code": med.ucum });
        let supply = quantity(f64::from(med.supply_days), "d");
        let mut supply_duration = supply.clone();
        supply_duration["unit"] = json!("days");
        let request = json!({
            "resourceType": "MedicationRequest",
            "id": request_id,
            "status": "active",
            "intent": "order",
            "category": [concept(codes::MEDREQ_CATEGORY, Code { code: "community", display: "Community" })],
            "medicationReference": med_ref,
            "subject": self.patient_ref(),
            "encounter": reference("Encounter", &encounter_id),
            "authoredOn": date(day),
            "requester": self.pcp_ref(),
            "courseOfTherapyType": concept(codes::COURSE_OF_THERAPY, codes::CONTINUOUS),
            "dosageInstruction": [{ "text": med.sig }],
            "dispenseRequest": {
                "validityPeriod": { "start": date(day), "end": date(days_after(day, 365)) },
                "numberOfRepeatsAllowed": 11,
                "quantity": amount,
                "expectedSupplyDuration": supply_duration
            }
        });
        let dispense = json!({
            "resourceType": "MedicationDispense",
            "id": self.id("md", "rh1"),
            "status": "completed",
            "medicationReference": med_ref,
            "subject": self.patient_ref(),
            "performer": [{ "actor": reference_display("Organization", ORGANIZATION_ID, ORGANIZATION_NAME) }],
            "authorizingPrescription": [reference("MedicationRequest", &request_id)],
            "type": concept(codes::V3_ACT_CODE, Code { code: "FF", display: "First Fill" }),
            "quantity": amount,
            "daysSupply": supply,
            "whenPrepared": instant(day, 14, 0),
            "whenHandedOver": instant(day, 15, 30),
            "dosageInstruction": [{ "text": med.sig }]
        });
        vec![
            labelled(encounter, &[SEX, RESTRICTED]),
            labelled(condition, &[SEX, RESTRICTED]),
            labelled(test, &[STD]),
            labelled(request, &[SEX]),
            labelled(dispense, &[SEX]),
        ]
    }

    /// The 78-year-old: an alcohol use disorder and an AUDIT-C screening score.
    pub(super) fn elder(&self) -> Vec<Value> {
        let today = self.world.today;
        let condition = self.condition(
            self.id("cond", "sud1"),
            ALCOHOL_USE_DISORDER,
            ALCOHOL_DEPENDENCE_ICD,
            "Alcohol use disorder",
            years_before(today, 4),
        );
        let mut score = self.observation(
            self.id("obs", "sud1"),
            Code {
                code: "survey",
                display: "Survey",
            },
            AUDIT_C,
            &instant(days_before(today, 60), 11, 0),
        );
        score["valueQuantity"] = quantity(7.0, "{score}");
        vec![
            labelled(condition, &[ETH, RESTRICTED]),
            labelled(score, &[ETH]),
        ]
    }

    /// The 45-year-old daughter: an HIV viral load (she sees it; her father's proxies
    /// are not hers).
    pub(super) fn daughter(&self) -> Vec<Value> {
        let effective = instant(days_before(self.world.today, 75), 8, 30);
        let mut load = self.observation(
            self.id("obs", "hiv1"),
            Code {
                code: "laboratory",
                display: "Laboratory",
            },
            HIV_VIRAL_LOAD,
            &effective,
        );
        load["performer"] = json!([reference_display(
            "Organization",
            ORGANIZATION_ID,
            ORGANIZATION_NAME
        )]);
        let mut value = quantity(20.0, "{copies}/mL");
        if let Value::Object(map) = &mut value {
            map.shift_insert(0, "comparator".to_owned(), json!("<"));
        }
        load["valueQuantity"] = value;
        vec![labelled(load, &[HIV])]
    }
}
