//! Code systems and the coded concepts the generator draws from.
//!
//! Every concept carries its display text. Codes are real ones from LOINC, SNOMED CT,
//! ICD-10-CM, RxNorm, CVX, HL7 v3 / terminology.hl7.org code systems and UCUM, chosen
//! to be clinically plausible, not exhaustive.

pub(crate) const LOINC: &str = "http://loinc.org";
pub(crate) const SNOMED: &str = "http://snomed.info/sct";
pub(crate) const ICD10: &str = "http://hl7.org/fhir/sid/icd-10-cm";
pub(crate) const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
pub(crate) const CVX: &str = "http://hl7.org/fhir/sid/cvx";
pub(crate) const UCUM: &str = "http://unitsofmeasure.org";
pub(crate) const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
pub(crate) const CPT: &str = "http://www.ama-assn.org/go/cpt";
pub(crate) const MRN_SYSTEM: &str = "http://hospital.example.org/identifiers/mrn";
pub(crate) const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
pub(crate) const V2_0074: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";
pub(crate) const V2_0276: &str = "http://terminology.hl7.org/CodeSystem/v2-0276";
pub(crate) const V3_ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
pub(crate) const V3_ROLE_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
pub(crate) const V3_INTERPRETATION: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
pub(crate) const OBSERVATION_CATEGORY: &str =
    "http://terminology.hl7.org/CodeSystem/observation-category";
pub(crate) const CONDITION_CATEGORY: &str =
    "http://terminology.hl7.org/CodeSystem/condition-category";
pub(crate) const CONDITION_CLINICAL: &str =
    "http://terminology.hl7.org/CodeSystem/condition-clinical";
pub(crate) const CONDITION_VERIFICATION: &str =
    "http://terminology.hl7.org/CodeSystem/condition-ver-status";
pub(crate) const ALLERGY_CLINICAL: &str =
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
pub(crate) const ALLERGY_VERIFICATION: &str =
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";
pub(crate) const SERVICE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/service-type";
pub(crate) const PRACTITIONER_ROLE: &str =
    "http://terminology.hl7.org/CodeSystem/practitioner-role";
pub(crate) const ORGANIZATION_TYPE: &str =
    "http://terminology.hl7.org/CodeSystem/organization-type";
pub(crate) const MEDREQ_CATEGORY: &str =
    "http://terminology.hl7.org/CodeSystem/medicationrequest-category";
pub(crate) const COURSE_OF_THERAPY: &str =
    "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy";
pub(crate) const SUBSCRIBER_RELATIONSHIP: &str =
    "http://terminology.hl7.org/CodeSystem/subscriber-relationship";
pub(crate) const DOCREF_CATEGORY: &str =
    "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category";
pub(crate) const CANCELLATION_REASON: &str =
    "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason";
pub(crate) const ACCOUNT_BALANCE_URL: &str =
    "https://fhir-ehr.cerner.com/r4/StructureDefinition/account-balance";

/// A code with its display.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Code {
    pub(crate) code: &'static str,
    pub(crate) display: &'static str,
}

/// Status codes the generated records share (a condition's clinical and verification
/// status, a prescription's course of therapy).
pub(crate) const ACTIVE_CLINICAL: Code = c("active", "Active");
pub(crate) const RESOLVED_CLINICAL: Code = c("resolved", "Resolved");
pub(crate) const CONFIRMED: Code = c("confirmed", "Confirmed");
pub(crate) const CONTINUOUS: Code = c("continuous", "Continuous long term therapy");
pub(crate) const ACUTE: Code = c("acute", "Short course (acute) therapy");

const fn c(code: &'static str, display: &'static str) -> Code {
    Code { code, display }
}

/// A practitioner specialty: practice setting (SNOMED), service type, occupation (SNOMED).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Specialty {
    pub(crate) setting: Code,
    pub(crate) service_type: Code,
    pub(crate) occupation: Code,
    pub(crate) referral_text: &'static str,
}

pub(crate) const FAMILY_MEDICINE: Specialty = Specialty {
    setting: c("419772000", "Family practice"),
    service_type: c("124", "General Practice"),
    occupation: c("62247001", "General practitioner"),
    referral_text: "Referral to family medicine",
};

pub(crate) const SPECIALISTS: [Specialty; 7] = [
    Specialty {
        setting: c("394579002", "Cardiology"),
        service_type: c("165", "Cardiology"),
        occupation: c("17561000", "Cardiologist"),
        referral_text: "Referral to cardiology",
    },
    Specialty {
        setting: c("394582007", "Dermatology"),
        service_type: c("168", "Dermatology"),
        occupation: c("18803008", "Dermatologist"),
        referral_text: "Referral to dermatology",
    },
    Specialty {
        setting: c("394583002", "Endocrinology"),
        service_type: c("169", "Endocrinology"),
        occupation: c("61894003", "Endocrinologist"),
        referral_text: "Referral to endocrinology",
    },
    Specialty {
        setting: c("394591006", "Neurology"),
        service_type: c("177", "Neurology"),
        occupation: c("56397003", "Neurologist"),
        referral_text: "Referral to neurology",
    },
    Specialty {
        setting: c("394810000", "Rheumatology"),
        service_type: c("182", "Rheumatology"),
        occupation: c("45440000", "Rheumatologist"),
        referral_text: "Referral to rheumatology",
    },
    Specialty {
        setting: c("394585009", "Obstetrics and gynecology"),
        service_type: c("186", "Obstetrics & Gynaecology"),
        occupation: c("11935004", "Obstetrician"),
        referral_text: "Referral to obstetrics and gynecology",
    },
    Specialty {
        setting: c("394537008", "Pediatric specialty"),
        service_type: c("200", "Paediatric Medicine"),
        occupation: c("82296001", "Pediatrician"),
        referral_text: "Referral to pediatrics",
    },
];

/// A condition: SNOMED code, ICD-10-CM code, chronic or not, minimum age.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConditionDef {
    pub(crate) snomed: Code,
    pub(crate) icd10: Code,
    pub(crate) chronic: bool,
    pub(crate) min_age: u32,
}

const fn cond(snomed: Code, icd10: Code, chronic: bool, min_age: u32) -> ConditionDef {
    ConditionDef {
        snomed,
        icd10,
        chronic,
        min_age,
    }
}

pub(crate) const DIABETES: &str = "44054006";
pub(crate) const HYPERTENSION: &str = "59621000";
pub(crate) const HYPERLIPIDEMIA: &str = "55822004";
pub(crate) const CKD: &str = "709044004";

pub(crate) const CONDITIONS: [ConditionDef; 18] = [
    cond(
        c(DIABETES, "Diabetes mellitus type 2"),
        c("E11.9", "Type 2 diabetes mellitus without complications"),
        true,
        25,
    ),
    cond(
        c(HYPERTENSION, "Essential hypertension"),
        c("I10", "Essential (primary) hypertension"),
        true,
        25,
    ),
    cond(
        c(HYPERLIPIDEMIA, "Hyperlipidemia"),
        c("E78.5", "Hyperlipidemia, unspecified"),
        true,
        25,
    ),
    cond(
        c("195967001", "Asthma"),
        c("J45.909", "Unspecified asthma, uncomplicated"),
        true,
        2,
    ),
    cond(
        c("13645005", "Chronic obstructive lung disease"),
        c(
            "J44.9",
            "Chronic obstructive pulmonary disease, unspecified",
        ),
        true,
        40,
    ),
    cond(
        c("370143000", "Major depressive disorder"),
        c(
            "F32.9",
            "Major depressive disorder, single episode, unspecified",
        ),
        true,
        14,
    ),
    cond(
        c("197480006", "Anxiety disorder"),
        c("F41.9", "Anxiety disorder, unspecified"),
        true,
        10,
    ),
    cond(
        c("53741008", "Coronary arteriosclerosis"),
        c(
            "I25.10",
            "Atherosclerotic heart disease of native coronary artery without angina pectoris",
        ),
        true,
        40,
    ),
    cond(
        c("49436004", "Atrial fibrillation"),
        c("I48.91", "Unspecified atrial fibrillation"),
        true,
        45,
    ),
    cond(
        c(CKD, "Chronic kidney disease"),
        c("N18.9", "Chronic kidney disease, unspecified"),
        true,
        40,
    ),
    cond(
        c("40930008", "Hypothyroidism"),
        c("E03.9", "Hypothyroidism, unspecified"),
        true,
        18,
    ),
    cond(
        c("396275006", "Osteoarthritis"),
        c("M19.90", "Unspecified osteoarthritis, unspecified site"),
        true,
        40,
    ),
    cond(
        c("414916001", "Obesity"),
        c("E66.9", "Obesity, unspecified"),
        true,
        12,
    ),
    cond(
        c("24079001", "Atopic dermatitis"),
        c("L20.9", "Atopic dermatitis, unspecified"),
        true,
        0,
    ),
    cond(
        c("444814009", "Viral sinusitis"),
        c("J01.90", "Acute sinusitis, unspecified"),
        false,
        0,
    ),
    cond(
        c("10509002", "Acute bronchitis"),
        c("J20.9", "Acute bronchitis, unspecified"),
        false,
        0,
    ),
    cond(
        c("195662009", "Acute viral pharyngitis"),
        c("J02.9", "Acute pharyngitis, unspecified"),
        false,
        0,
    ),
    cond(
        c("68566005", "Urinary tract infectious disease"),
        c("N39.0", "Urinary tract infection, site not specified"),
        false,
        5,
    ),
];

/// An allergy: SNOMED code, category, typical reaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AllergyDef {
    pub(crate) code: Code,
    pub(crate) category: &'static str,
    pub(crate) reaction: Code,
    pub(crate) criticality: &'static str,
}

const fn allergy(
    code: Code,
    category: &'static str,
    reaction: Code,
    criticality: &'static str,
) -> AllergyDef {
    AllergyDef {
        code,
        category,
        reaction,
        criticality,
    }
}

pub(crate) const ALLERGIES: [AllergyDef; 9] = [
    allergy(
        c("91936005", "Allergy to penicillin"),
        "medication",
        c("271807003", "Eruption of skin"),
        "high",
    ),
    allergy(
        c("91935009", "Allergy to peanuts"),
        "food",
        c("39579001", "Anaphylaxis"),
        "high",
    ),
    allergy(
        c("300916003", "Latex allergy"),
        "environment",
        c("247472004", "Wheal"),
        "low",
    ),
    allergy(
        c("417532002", "Allergy to fish"),
        "food",
        c("247472004", "Wheal"),
        "low",
    ),
    allergy(
        c("91930004", "Allergy to eggs"),
        "food",
        c("271807003", "Eruption of skin"),
        "low",
    ),
    allergy(
        c("300913006", "Shellfish allergy"),
        "food",
        c("267036007", "Dyspnea"),
        "high",
    ),
    allergy(
        c("418689008", "Allergy to grass pollen"),
        "environment",
        c("76067001", "Sneezing"),
        "low",
    ),
    allergy(
        c("232350006", "House dust mite allergy"),
        "environment",
        c("76067001", "Sneezing"),
        "low",
    ),
    allergy(
        c("419474003", "Allergy to mould"),
        "environment",
        c("267036007", "Dyspnea"),
        "low",
    ),
];

/// A medication: RxNorm code, dose form (SNOMED), dispense unit, sig.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MedicationDef {
    pub(crate) rxnorm: Code,
    pub(crate) form: Code,
    pub(crate) unit: &'static str,
    pub(crate) ucum: &'static str,
    pub(crate) quantity: u32,
    pub(crate) supply_days: u32,
    pub(crate) sig: &'static str,
}

const TABLET: Code = c("385055001", "Tablet");
const CAPSULE: Code = c("385049006", "Capsule");
const INHALER: Code = c("420317006", "Inhaler");

pub(crate) const CHRONIC_MEDICATIONS: [MedicationDef; 10] = [
    med(
        c(
            "860975",
            "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet",
        ),
        TABLET,
        "tablet",
        "{tbl}",
        30,
        30,
        "Take 1 tablet by mouth daily with the evening meal",
    ),
    med(
        c("314076", "lisinopril 10 MG Oral Tablet"),
        TABLET,
        "tablet",
        "{tbl}",
        30,
        30,
        "Take 1 tablet by mouth daily",
    ),
    med(
        c("259255", "atorvastatin 80 MG Oral Tablet"),
        TABLET,
        "tablet",
        "{tbl}",
        30,
        30,
        "Take 1 tablet by mouth at bedtime",
    ),
    med(
        c("197361", "amlodipine 5 MG Oral Tablet"),
        TABLET,
        "tablet",
        "{tbl}",
        30,
        30,
        "Take 1 tablet by mouth daily",
    ),
    med(
        c("310798", "Hydrochlorothiazide 25 MG Oral Tablet"),
        TABLET,
        "tablet",
        "{tbl}",
        30,
        30,
        "Take 1 tablet by mouth every morning",
    ),
    med(
        c("966222", "Levothyroxine Sodium 0.075 MG Oral Tablet"),
        TABLET,
        "tablet",
        "{tbl}",
        90,
        90,
        "Take 1 tablet by mouth every morning on an empty stomach",
    ),
    med(
        c("312961", "Simvastatin 20 MG Oral Tablet"),
        TABLET,
        "tablet",
        "{tbl}",
        30,
        30,
        "Take 1 tablet by mouth in the evening",
    ),
    med(
        c("312938", "Sertraline 100 MG Oral Tablet"),
        TABLET,
        "tablet",
        "{tbl}",
        30,
        30,
        "Take 1 tablet by mouth daily",
    ),
    med(
        c(
            "895994",
            "120 ACTUAT Fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
        ),
        INHALER,
        "inhaler",
        "{inhaler}",
        1,
        30,
        "Inhale 2 puffs twice daily",
    ),
    med(
        c(
            "745679",
            "200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
        ),
        INHALER,
        "inhaler",
        "{inhaler}",
        1,
        30,
        "Inhale 2 puffs every 4 to 6 hours as needed for wheezing",
    ),
];

pub(crate) const ACUTE_MEDICATION: MedicationDef = med(
    c("308182", "Amoxicillin 250 MG Oral Capsule"),
    CAPSULE,
    "capsule",
    "{cap}",
    30,
    10,
    "Take 1 capsule by mouth three times daily for 10 days",
);

/// An oral contraceptive, prescribed only to the families' teenager (a record the
/// gateway must withhold from her parents).
pub(crate) const ORAL_CONTRACEPTIVE: MedicationDef = med(
    c("748879", "Levora 0.15/30 28 Day Pack"),
    TABLET,
    "pack",
    "{pack}",
    1,
    28,
    "Take 1 tablet by mouth daily",
);

const fn med(
    rxnorm: Code,
    form: Code,
    unit: &'static str,
    ucum: &'static str,
    quantity: u32,
    supply_days: u32,
    sig: &'static str,
) -> MedicationDef {
    MedicationDef {
        rxnorm,
        form,
        unit,
        ucum,
        quantity,
        supply_days,
        sig,
    }
}

pub(crate) const VACCINES: [Code; 12] = [
    c("140", "Influenza, seasonal, injectable, preservative free"),
    c(
        "150",
        "Influenza, injectable, quadrivalent, preservative free",
    ),
    c("208", "COVID-19, mRNA, LNP-S, PF, 30 mcg/0.3 mL dose"),
    c("115", "Tdap"),
    c("113", "Td (adult) preservative free"),
    c("133", "Pneumococcal conjugate PCV 13"),
    c("33", "pneumococcal polysaccharide vaccine, 23 valent"),
    c("187", "zoster vaccine recombinant"),
    c("43", "Hep B, adult"),
    c("62", "HPV, quadrivalent"),
    c("03", "MMR"),
    c("21", "varicella"),
];

pub(crate) const PROCEDURES: [Code; 7] = [
    c("73761001", "Colonoscopy"),
    c("29303009", "Electrocardiographic procedure"),
    c("430193006", "Medication reconciliation (procedure)"),
    c("171207006", "Depression screening"),
    c("117015009", "Throat culture"),
    c("80146002", "Appendectomy"),
    c("16310003", "Diagnostic ultrasonography"),
];

/// A laboratory analyte with its UCUM unit and reference range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LabDef {
    pub(crate) code: Code,
    pub(crate) unit: &'static str,
    pub(crate) low: Option<f64>,
    pub(crate) high: Option<f64>,
    /// Typical range of generated values for a patient without related conditions.
    pub(crate) normal: (f64, f64),
    pub(crate) decimals: u32,
}

const fn lab(
    code: Code,
    unit: &'static str,
    low: Option<f64>,
    high: Option<f64>,
    normal: (f64, f64),
    decimals: u32,
) -> LabDef {
    LabDef {
        code,
        unit,
        low,
        high,
        normal,
        decimals,
    }
}

pub(crate) const GLUCOSE: LabDef = lab(
    c("2339-0", "Glucose [Mass/volume] in Blood"),
    "mg/dL",
    Some(70.0),
    Some(99.0),
    (72.0, 105.0),
    0,
);
pub(crate) const HBA1C: LabDef = lab(
    c("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
    "%",
    Some(4.0),
    Some(5.6),
    (4.6, 5.8),
    1,
);
pub(crate) const CREATININE: LabDef = lab(
    c("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"),
    "mg/dL",
    Some(0.6),
    Some(1.3),
    (0.6, 1.2),
    2,
);
pub(crate) const SODIUM: LabDef = lab(
    c("2951-2", "Sodium [Moles/volume] in Serum or Plasma"),
    "mmol/L",
    Some(135.0),
    Some(145.0),
    (134.0, 146.0),
    0,
);
pub(crate) const POTASSIUM: LabDef = lab(
    c("2823-3", "Potassium [Moles/volume] in Serum or Plasma"),
    "mmol/L",
    Some(3.5),
    Some(5.1),
    (3.4, 5.2),
    1,
);
pub(crate) const CHOLESTEROL: LabDef = lab(
    c("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma"),
    "mg/dL",
    None,
    Some(200.0),
    (150.0, 215.0),
    0,
);
pub(crate) const TRIGLYCERIDE: LabDef = lab(
    c("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma"),
    "mg/dL",
    None,
    Some(150.0),
    (70.0, 170.0),
    0,
);
pub(crate) const HDL: LabDef = lab(
    c(
        "2085-9",
        "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
    ),
    "mg/dL",
    Some(40.0),
    None,
    (35.0, 75.0),
    0,
);
pub(crate) const HEMOGLOBIN: LabDef = lab(
    c("718-7", "Hemoglobin [Mass/volume] in Blood"),
    "g/dL",
    Some(12.0),
    Some(17.5),
    (11.5, 16.5),
    1,
);
pub(crate) const LEUKOCYTES: LabDef = lab(
    c(
        "6690-2",
        "Leukocytes [#/volume] in Blood by Automated count",
    ),
    "10*3/uL",
    Some(4.0),
    Some(11.0),
    (4.2, 10.5),
    1,
);
pub(crate) const PLATELETS: LabDef = lab(
    c("777-3", "Platelets [#/volume] in Blood by Automated count"),
    "10*3/uL",
    Some(150.0),
    Some(400.0),
    (160.0, 380.0),
    0,
);

/// A laboratory panel: the DiagnosticReport code and its member analytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PanelDef {
    pub(crate) code: Code,
    pub(crate) members: &'static [LabDef],
    pub(crate) cpt: Code,
    pub(crate) price_cents: u64,
}

pub(crate) const PANELS: [PanelDef; 4] = [
    PanelDef {
        code: c("51990-0", "Basic metabolic panel - Blood"),
        members: &[GLUCOSE, CREATININE, SODIUM, POTASSIUM],
        cpt: c("80048", "Basic metabolic panel"),
        price_cents: 4_500,
    },
    PanelDef {
        code: c("24331-1", "Lipid panel - Serum or Plasma"),
        members: &[CHOLESTEROL, TRIGLYCERIDE, HDL],
        cpt: c("80061", "Lipid panel"),
        price_cents: 5_500,
    },
    PanelDef {
        code: c("58410-2", "CBC panel - Blood by Automated count"),
        members: &[HEMOGLOBIN, LEUKOCYTES, PLATELETS],
        cpt: c("85027", "Complete blood count, automated"),
        price_cents: 3_000,
    },
    PanelDef {
        code: c("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"),
        members: &[HBA1C],
        cpt: c("83036", "Hemoglobin A1c"),
        price_cents: 3_500,
    },
];

/// Vital-sign codes (LOINC) and their UCUM units.
pub(crate) const BP_PANEL: Code = c("85354-9", "Blood pressure panel with all children optional");
pub(crate) const SYSTOLIC: Code = c("8480-6", "Systolic blood pressure");
pub(crate) const DIASTOLIC: Code = c("8462-4", "Diastolic blood pressure");
pub(crate) const HEART_RATE: Code = c("8867-4", "Heart rate");
pub(crate) const BODY_WEIGHT: Code = c("29463-7", "Body weight");
pub(crate) const BODY_HEIGHT: Code = c("8302-2", "Body height");
pub(crate) const BMI: Code = c("39156-5", "Body mass index (BMI) [Ratio]");
pub(crate) const BODY_TEMPERATURE: Code = c("8310-5", "Body temperature");
pub(crate) const RESPIRATORY_RATE: Code = c("9279-1", "Respiratory rate");

/// Encounter class (v3 ActCode) and the SNOMED encounter types used with it.
pub(crate) const AMBULATORY: Code = c("AMB", "ambulatory");
pub(crate) const EMERGENCY: Code = c("EMER", "emergency");
pub(crate) const INPATIENT: Code = c("IMP", "inpatient encounter");
pub(crate) const AMBULATORY_TYPES: [Code; 3] = [
    c("185349003", "Encounter for check up"),
    c("390906007", "Follow-up encounter"),
    c("185345009", "Encounter for symptom"),
];
pub(crate) const EMERGENCY_TYPE: Code = c("50849002", "Emergency room admission");
pub(crate) const INPATIENT_TYPE: Code = c("32485007", "Hospital admission");

/// Clinical-note document types (LOINC).
pub(crate) const PROGRESS_NOTE: Code = c("11506-3", "Progress note");
pub(crate) const HISTORY_AND_PHYSICAL: Code = c("34117-2", "History and physical note");
pub(crate) const DISCHARGE_SUMMARY: Code = c("18842-5", "Discharge summary");
pub(crate) const CONSULT_NOTE: Code = c("11488-4", "Consult note");

/// Billing codes (CPT) for encounter classes.
pub(crate) const OFFICE_VISIT: Code = c(
    "99213",
    "Office or other outpatient visit, established patient",
);
pub(crate) const ED_VISIT: Code = c("99284", "Emergency department visit");
pub(crate) const HOSPITAL_CARE: Code = c("99223", "Initial hospital inpatient care");

/// Care-team roles (SNOMED).
pub(crate) const PCP_ROLE: Code = c("446050000", "Primary care physician");
pub(crate) const LONGITUDINAL_CARE_TEAM: Code = c(
    "LA28865-6",
    "Longitudinal care-coordination focused care team",
);

pub(crate) const REFERRAL_CATEGORY: Code = c("3457005", "Patient referral");
pub(crate) const REFERRAL_CODE: Code = c("306206005", "Referral to service");

/// Demographic vocabularies: synthetic names and places.
pub(crate) const MALE_GIVEN: [&str; 32] = [
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas",
    "Carlos", "Daniel", "Matthew", "Anthony", "Mark", "Steven", "Andrew", "Joshua", "Kenji",
    "Kevin", "Brian", "Omar", "Samuel", "Ryan", "Jacob", "Gary", "Nicholas", "Eric", "Jonathan",
    "Luis", "Wei", "Tomas", "Ahmed",
];
pub(crate) const FEMALE_GIVEN: [&str; 32] = [
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Lisa",
    "Nancy",
    "Sofia",
    "Margaret",
    "Sandra",
    "Ashley",
    "Emily",
    "Donna",
    "Michelle",
    "Carol",
    "Amanda",
    "Aisha",
    "Melissa",
    "Deborah",
    "Laura",
    "Rebecca",
    "Sharon",
    "Mei",
    "Priya",
    "Ana",
    "Grace",
    "Fatima",
];
pub(crate) const FAMILY: [&str; 40] = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Nguyen",
    "Hill",
    "Flores",
    "Patel",
    "Kim",
];
pub(crate) const STREETS: [&str; 12] = [
    "Maple Street",
    "Oak Avenue",
    "Cedar Lane",
    "Pine Road",
    "Elm Street",
    "Birch Court",
    "Willow Way",
    "Lakeview Drive",
    "Hillcrest Road",
    "River Road",
    "Park Avenue",
    "Sunset Boulevard",
];
pub(crate) const CITIES: [(&str, &str, &str); 8] = [
    ("Springfield", "IL", "627"),
    ("Riverton", "WY", "825"),
    ("Fairview", "OR", "970"),
    ("Madison", "WI", "537"),
    ("Franklin", "TN", "370"),
    ("Georgetown", "TX", "786"),
    ("Salem", "MA", "019"),
    ("Clinton", "IA", "527"),
];
