//! The clinical and administrative codes the generator uses: standard code systems (SNOMED CT,
//! LOINC, ICD-10, ATC, UCUM, HL7 terminology) and the few the platform defines itself.

/// SNOMED CT.
pub const SNOMED: &str = "http://snomed.info/sct";
/// LOINC.
pub const LOINC: &str = "http://loinc.org";
/// ICD-10 (WHO).
pub const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
/// WHO Anatomical Therapeutic Chemical classification.
pub const ATC: &str = "http://www.whocc.no/atc";
/// CVX vaccine codes.
pub const CVX: &str = "http://hl7.org/fhir/sid/cvx";
/// UCUM units.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// Tiers of health facilities (defined by the platform; codes come from the country profile).
pub const FACILITY_TIER: &str = "https://sijill.health/fhir/CodeSystem/facility-tier";
/// Kinds of medical equipment (defined by the platform).
pub const EQUIPMENT_KIND: &str = "https://sijill.health/fhir/CodeSystem/equipment-kind";
/// Kinds of equipment maintenance (defined by the platform).
pub const MAINTENANCE_KIND: &str = "https://sijill.health/fhir/CodeSystem/maintenance-kind";

/// A medical specialty (SNOMED CT practice setting) and the lowest tier level that offers it.
pub struct Specialty {
    /// SNOMED CT code.
    pub code: &'static str,
    /// SNOMED CT display.
    pub display: &'static str,
    /// French name shown to users.
    pub name_fr: &'static str,
    /// Lowest facility level (1 primary, 2 secondary, 3 tertiary) that offers it.
    pub min_level: u8,
    /// Relative number of doctors of this specialty in a hospital.
    pub weight: u32,
}

/// General practice: the specialty of every health centre.
pub const GENERAL_PRACTICE: usize = 0;

/// The specialties, general practice first.
pub const SPECIALTIES: &[Specialty] = &[
    Specialty {
        code: "394814009",
        display: "General practice",
        name_fr: "Médecine générale",
        min_level: 1,
        weight: 6,
    },
    Specialty {
        code: "394802001",
        display: "General medicine",
        name_fr: "Médecine interne",
        min_level: 2,
        weight: 4,
    },
    Specialty {
        code: "394537008",
        display: "Pediatric specialty",
        name_fr: "Pédiatrie",
        min_level: 2,
        weight: 3,
    },
    Specialty {
        code: "394585009",
        display: "Obstetrics and gynecology",
        name_fr: "Gynécologie-obstétrique",
        min_level: 2,
        weight: 3,
    },
    Specialty {
        code: "394609007",
        display: "Surgery-general",
        name_fr: "Chirurgie générale",
        min_level: 2,
        weight: 3,
    },
    Specialty {
        code: "394579002",
        display: "Cardiology",
        name_fr: "Cardiologie",
        min_level: 2,
        weight: 2,
    },
    Specialty {
        code: "394583002",
        display: "Endocrinology",
        name_fr: "Endocrinologie",
        min_level: 2,
        weight: 2,
    },
    Specialty {
        code: "394594003",
        display: "Ophthalmology",
        name_fr: "Ophtalmologie",
        min_level: 2,
        weight: 2,
    },
    Specialty {
        code: "418960008",
        display: "Otolaryngology",
        name_fr: "Oto-rhino-laryngologie",
        min_level: 2,
        weight: 1,
    },
    Specialty {
        code: "394801008",
        display: "Surgery-Trauma and orthopedics",
        name_fr: "Traumatologie-orthopédie",
        min_level: 2,
        weight: 2,
    },
    Specialty {
        code: "394587001",
        display: "Psychiatry",
        name_fr: "Psychiatrie",
        min_level: 2,
        weight: 1,
    },
    Specialty {
        code: "394576009",
        display: "Surgical-Accident & emergency",
        name_fr: "Urgences",
        min_level: 2,
        weight: 3,
    },
    Specialty {
        code: "394914008",
        display: "Radiology",
        name_fr: "Radiologie",
        min_level: 2,
        weight: 1,
    },
    Specialty {
        code: "394577000",
        display: "Anesthetics",
        name_fr: "Anesthésie-réanimation",
        min_level: 2,
        weight: 2,
    },
    Specialty {
        code: "394589003",
        display: "Nephrology",
        name_fr: "Néphrologie",
        min_level: 3,
        weight: 1,
    },
    Specialty {
        code: "394591006",
        display: "Neurology",
        name_fr: "Neurologie",
        min_level: 3,
        weight: 1,
    },
    Specialty {
        code: "394582007",
        display: "Dermatology",
        name_fr: "Dermatologie",
        min_level: 3,
        weight: 1,
    },
    Specialty {
        code: "418112009",
        display: "Pulmonary medicine",
        name_fr: "Pneumologie",
        min_level: 3,
        weight: 1,
    },
    Specialty {
        code: "394584008",
        display: "Gastroenterology",
        name_fr: "Gastro-entérologie",
        min_level: 3,
        weight: 1,
    },
    Specialty {
        code: "394593009",
        display: "Medical oncology",
        name_fr: "Oncologie médicale",
        min_level: 3,
        weight: 1,
    },
    Specialty {
        code: "394612005",
        display: "Urology",
        name_fr: "Urologie",
        min_level: 3,
        weight: 1,
    },
    Specialty {
        code: "394610002",
        display: "Surgery-Neurosurgery",
        name_fr: "Neurochirurgie",
        min_level: 3,
        weight: 1,
    },
];

/// A chronic condition of the prevalence table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chronic {
    /// Type 2 diabetes.
    Diabetes,
    /// Essential hypertension.
    Hypertension,
    /// Asthma.
    Asthma,
    /// Chronic kidney disease stage 3.
    Ckd,
    /// Ischaemic heart disease.
    IschemicHeart,
    /// COPD.
    Copd,
    /// Depressive episode.
    Depression,
    /// Obesity.
    Obesity,
}

/// All chronic conditions.
pub const CHRONIC: [Chronic; 8] = [
    Chronic::Diabetes,
    Chronic::Hypertension,
    Chronic::Asthma,
    Chronic::Ckd,
    Chronic::IschemicHeart,
    Chronic::Copd,
    Chronic::Depression,
    Chronic::Obesity,
];

impl Chronic {
    /// ICD-10 code and display.
    pub fn icd10(self) -> (&'static str, &'static str) {
        match self {
            Chronic::Diabetes => ("E11.9", "Type 2 diabetes mellitus without complications"),
            Chronic::Hypertension => ("I10", "Essential (primary) hypertension"),
            Chronic::Asthma => ("J45.9", "Asthma, unspecified"),
            Chronic::Ckd => ("N18.3", "Chronic kidney disease, stage 3"),
            Chronic::IschemicHeart => ("I25.1", "Atherosclerotic heart disease"),
            Chronic::Copd => ("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
            Chronic::Depression => ("F32.9", "Depressive episode, unspecified"),
            Chronic::Obesity => ("E66.9", "Obesity, unspecified"),
        }
    }

    /// The treatment started at diagnosis: ATC code, name, dosage text. None when there is none.
    pub fn treatment(self) -> Option<(&'static str, &'static str, &'static str)> {
        Some(match self {
            Chronic::Diabetes => ("A10BA02", "metformin", "850 mg deux fois par jour au cours des repas"),
            Chronic::Hypertension => ("C08CA01", "amlodipine", "5 mg une fois par jour"),
            Chronic::Asthma => ("R03AC02", "salbutamol", "2 bouffées en cas de gêne respiratoire"),
            Chronic::Ckd => ("C09AA02", "enalapril", "10 mg une fois par jour"),
            Chronic::IschemicHeart => ("B01AC06", "acetylsalicylic acid", "100 mg une fois par jour"),
            Chronic::Copd => ("R03BB04", "tiotropium bromide", "1 inhalation par jour"),
            Chronic::Depression => ("N06AB06", "sertraline", "50 mg une fois par jour"),
            Chronic::Obesity => return None,
        })
    }

    /// Relative risk by age (1.0 on average over adults; see `record`).
    pub fn age_weight(self, age: u32) -> f64 {
        let rising = match age {
            0..=29 => 0.2,
            30..=44 => 0.6,
            45..=59 => 1.6,
            60..=74 => 2.6,
            _ => 3.0,
        };
        match self {
            Chronic::Asthma | Chronic::Depression | Chronic::Obesity => 1.0,
            _ => rising,
        }
    }

    /// Whether children can have it.
    pub fn in_children(self) -> bool {
        matches!(self, Chronic::Asthma)
    }
}

/// Acute problems of consultations: ICD-10 code, display, and an antibiotic is usual.
pub const ACUTE: &[(&str, &str, bool)] = &[
    ("J06.9", "Acute upper respiratory infection, unspecified", false),
    ("J02.9", "Acute pharyngitis, unspecified", true),
    (
        "A09",
        "Other gastroenteritis and colitis of infectious and unspecified origin",
        false,
    ),
    ("N39.0", "Urinary tract infection, site not specified", true),
    ("M54.5", "Low back pain", false),
    ("K29.7", "Gastritis, unspecified", false),
    ("H66.9", "Otitis media, unspecified", true),
    ("R51", "Headache", false),
    ("J20.9", "Acute bronchitis, unspecified", true),
    ("L30.9", "Dermatitis, unspecified", false),
];

/// Reasons for a hospital stay: ICD-10 code, display, specialty index.
pub const ADMISSIONS: &[(&str, &str, usize)] = &[
    ("J18.9", "Pneumonia, unspecified", 1),
    ("K35.8", "Acute appendicitis, other and unspecified", 4),
    ("S72.0", "Fracture of neck of femur", 9),
    ("I21.9", "Acute myocardial infarction, unspecified", 5),
    ("I63.9", "Cerebral infarction, unspecified", 1),
    ("K80.2", "Calculus of gallbladder without cholecystitis", 4),
    ("E10.1", "Type 1 diabetes mellitus with ketoacidosis", 6),
    ("O80", "Single spontaneous delivery", 3),
];

/// Allergies (SNOMED CT code, display, category).
pub const ALLERGIES: &[(&str, &str, &str)] = &[
    ("91936005", "Allergy to penicillin", "medication"),
    ("91935009", "Allergy to peanuts", "food"),
    ("91930004", "Allergy to eggs", "food"),
    ("300913006", "Shellfish allergy", "food"),
    ("232350006", "House dust mite allergy", "environment"),
    ("418689008", "Allergy to grass pollen", "environment"),
    ("419263009", "Allergy to tree pollen", "environment"),
    ("232347008", "Dander (animal) allergy", "environment"),
    ("424213003", "Allergy to bee venom", "environment"),
    ("300916003", "Latex allergy", "environment"),
];

/// Antibiotic for acute infections: ATC code, name, dosage.
pub const ANTIBIOTIC: (&str, &str, &str) = ("J01CA04", "amoxicillin", "1 g trois fois par jour pendant 7 jours");
/// Analgesic: ATC code, name, dosage.
pub const ANALGESIC: (&str, &str, &str) = ("N02BE01", "paracetamol", "1 g jusqu'à trois fois par jour si douleur");

/// Ward kinds of hospitals: HL7 v3 RoleCode, display, French name, lowest tier level, share of beds.
pub const WARDS: &[(&str, &str, &str, u8, f64)] = &[
    ("HU", "Hospital unit", "Médecine", 2, 0.30),
    ("HU", "Hospital unit", "Chirurgie", 2, 0.22),
    ("PEDU", "Pediatric unit", "Pédiatrie", 2, 0.14),
    ("HU", "Hospital unit", "Maternité", 2, 0.16),
    ("ER", "Emergency room", "Urgences", 2, 0.06),
    ("ICU", "Intensive care unit", "Réanimation", 2, 0.05),
    ("HD", "Hemodialysis unit", "Hémodialyse", 3, 0.03),
    ("PHU", "Psychiatric hospital unit", "Psychiatrie", 3, 0.04),
];

/// Kinds of equipment: our code, display, SNOMED CT code when there is a well-known one,
/// wards that hold it (by French ward name; empty: every ward).
pub const EQUIPMENT: &[(&str, &str, Option<&str>, &[&str])] = &[
    (
        "ventilator",
        "Mechanical ventilator",
        Some("449071006"),
        &["Réanimation", "Urgences"],
    ),
    ("dialysis", "Hemodialysis machine", Some("36965003"), &["Hémodialyse"]),
    (
        "videolaryngoscope",
        "Videolaryngoscope",
        Some("448907002"),
        &["Réanimation", "Chirurgie"],
    ),
    ("ecg", "Electrocardiograph", None, &[]),
    (
        "patient-monitor",
        "Patient monitor",
        None,
        &["Réanimation", "Urgences", "Chirurgie", "Maternité"],
    ),
    ("infusion-pump", "Infusion pump", None, &[]),
    ("ultrasound", "Ultrasound scanner", None, &["Maternité", "Urgences"]),
    ("x-ray", "X-ray system", None, &["Urgences"]),
];

/// Equipment makers (fictional).
pub const MAKERS: &[&str] = &[
    "Atlas Medical",
    "Sahara Biomed",
    "Medilux",
    "Numidia Devices",
    "Orion Health Systems",
];

/// Vital signs: LOINC code, display, UCUM unit.
pub mod vitals {
    /// Blood pressure panel.
    pub const BLOOD_PRESSURE: (&str, &str) = ("85354-9", "Blood pressure panel with all children optional");
    /// Systolic.
    pub const SYSTOLIC: (&str, &str) = ("8480-6", "Systolic blood pressure");
    /// Diastolic.
    pub const DIASTOLIC: (&str, &str) = ("8462-4", "Diastolic blood pressure");
    /// Heart rate.
    pub const HEART_RATE: (&str, &str, &str) = ("8867-4", "Heart rate", "/min");
    /// Body weight.
    pub const WEIGHT: (&str, &str, &str) = ("29463-7", "Body weight", "kg");
    /// Body height.
    pub const HEIGHT: (&str, &str, &str) = ("8302-2", "Body height", "cm");
    /// Body mass index.
    pub const BMI: (&str, &str, &str) = ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2");
    /// Body temperature.
    pub const TEMPERATURE: (&str, &str, &str) = ("8310-5", "Body temperature", "Cel");
}

/// Laboratory tests: LOINC code, display, UCUM unit.
pub mod labs {
    /// Haemoglobin A1c.
    pub const HBA1C: (&str, &str, &str) = ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%");
    /// Fasting glucose.
    pub const GLUCOSE: (&str, &str, &str) = ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL");
    /// Creatinine.
    pub const CREATININE: (&str, &str, &str) = ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL");
    /// eGFR.
    pub const EGFR: (&str, &str, &str) = (
        "33914-3",
        "Glomerular filtration rate/1.73 sq M.predicted",
        "mL/min/{1.73_m2}",
    );
    /// Total cholesterol.
    pub const CHOLESTEROL: (&str, &str, &str) = ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL");
    /// Triglycerides.
    pub const TRIGLYCERIDES: (&str, &str, &str) = ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL");
    /// LDL cholesterol.
    pub const LDL: (&str, &str, &str) = (
        "18262-6",
        "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay",
        "mg/dL",
    );
    /// HDL cholesterol.
    pub const HDL: (&str, &str, &str) = ("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL");
    /// Report codes.
    pub const HBA1C_REPORT: (&str, &str) = ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood");
    /// Lipid panel.
    pub const LIPID_PANEL: (&str, &str) = ("57698-3", "Lipid panel with direct LDL - Serum or Plasma");
    /// Renal function panel.
    pub const RENAL_PANEL: (&str, &str) = ("24362-6", "Renal function panel - Serum or Plasma");
}
