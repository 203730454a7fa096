//! Country profiles: the facts about a country that the platform and the demo generator
//! need (regions, identifier formats and systems, insurers, the immunisation schedule,
//! population structure). They live as data files in `profiles/`, each fact with its source,
//! and are compiled into the binary so `sijill demo` works anywhere.

use serde::Deserialize;

/// A text in French (Latin script) and Arabic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BilingualName {
    /// French (Latin script) form.
    pub fr: String,
    /// Arabic-script form.
    pub ar: String,
}

/// A name with its Arabic-script and Latin-script forms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptPair {
    /// Arabic script.
    pub ar: String,
    /// Latin script, as commonly written in the country.
    pub lat: String,
}

/// The country's name in three languages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountryName {
    /// English.
    pub en: String,
    /// French.
    pub fr: String,
    /// Arabic.
    pub ar: String,
}

/// Where a group of facts comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Which facts.
    pub fact: String,
    /// The publication they come from.
    pub source: String,
}

/// A language spoken in the country (BCP-47 code).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Language {
    /// BCP-47 code.
    pub code: String,
    /// English display.
    pub display: String,
}

/// Telephone numbering.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phone {
    /// International prefix, e.g. "+212".
    pub country_code: String,
    /// First digits of mobile numbers.
    pub mobile_prefixes: Vec<String>,
    /// Digits after the country code, the prefix included.
    pub national_digits: usize,
}

/// The national identity number.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NationalId {
    /// Short name of the card or number.
    pub name: String,
    /// Long name.
    pub display: String,
    /// FHIR identifier system.
    pub system: String,
    /// Regular expression every valid number matches.
    pub pattern: String,
    /// Generation templates: `L` an uppercase letter, `D` a digit.
    pub templates: Vec<String>,
    /// OpenID Connect claim that carries the number.
    pub claim: String,
    /// Age from which citizens hold the number.
    pub from_age: u32,
}

/// Identifier systems the platform defines for the country.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierSystems {
    /// Facilities.
    pub facility: String,
    /// Medical record numbers at a facility.
    pub facility_record: String,
    /// Professional licence numbers.
    pub practitioner: String,
    /// Medical devices (inventory numbers).
    pub device: String,
}

/// A national health insurance fund.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Insurer {
    /// Acronym, e.g. CNSS.
    pub code: String,
    /// Full name.
    pub name: String,
    /// Arabic name.
    pub name_ar: String,
    /// The scheme and who it covers.
    pub scheme: String,
    /// Share of the population covered.
    pub share: f64,
    /// Identifier system of member numbers.
    pub member_system: String,
    /// Member number template (`L`/`D`).
    pub member_template: String,
}

/// A province or prefecture.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Province {
    /// Code.
    pub code: String,
    /// Name.
    pub name: BilingualName,
}

/// A region (Morocco) or wilaya (Algeria).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// ISO 3166-2 code.
    pub code: String,
    /// Name.
    pub name: BilingualName,
    /// Inhabitants.
    pub population: u64,
    /// Its provinces and prefectures (empty when the region is not divided here).
    pub provinces: Vec<Province>,
}

/// A share of the population by age band.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeBand {
    /// First year of age in the band.
    pub from: u32,
    /// Last year of age in the band (inclusive).
    pub to: u32,
    /// Share of the population.
    pub share: f64,
}

/// Share of adults with each chronic condition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prevalence {
    /// Diabetes (type 2).
    pub diabetes: f64,
    /// Hypertension.
    pub hypertension: f64,
    /// Asthma.
    pub asthma: f64,
    /// Chronic kidney disease.
    pub ckd: f64,
    /// Ischaemic heart disease.
    pub ischemic_heart_disease: f64,
    /// Chronic obstructive pulmonary disease.
    pub copd: f64,
    /// Depression.
    pub depression: f64,
    /// Obesity.
    pub obesity: f64,
}

/// One dose of the national immunisation schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dose {
    /// Vaccine name used in the country.
    pub vaccine: String,
    /// CVX code.
    pub cvx: String,
    /// Display.
    pub display: String,
    /// Age at which the dose is given.
    pub age_months: u32,
}

/// A level of the public health system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FacilityTier {
    /// Code, e.g. `chu`.
    pub code: String,
    /// Name in French.
    pub display: String,
    /// Name in Arabic.
    pub display_ar: String,
    /// 3 tertiary, 2 secondary, 1 primary care.
    pub level: u8,
    /// Facilities of this tier per million inhabitants in the real country.
    pub per_million: f64,
    /// Typical number of beds (min, max).
    pub beds: [u32; 2],
}

/// Given names by sex.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GivenNames {
    /// Male given names.
    pub male: Vec<ScriptPair>,
    /// Female given names.
    pub female: Vec<ScriptPair>,
}

/// A country profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountryProfile {
    /// ISO 3166-1 alpha-2 code in lower case.
    pub code: String,
    /// Name.
    pub name: CountryName,
    /// Where the facts come from.
    pub sources: Vec<Source>,
    /// Languages (BCP-47).
    pub languages: Vec<Language>,
    /// Local time offset from UTC used for generated times, e.g. "+01:00".
    pub utc_offset: String,
    /// Days without consultations (ISO weekday numbers, Monday = 1).
    pub weekend: Vec<u8>,
    /// Public holidays on fixed dates (`MM-DD`): no consultations.
    pub public_holidays: Vec<String>,
    /// The booking rules of the national appointment service, as the server reads them
    /// (`sijill_api::scheduling::rules::BookingRules`; checked when the server starts).
    #[serde(default)]
    pub booking_rules: serde_json::Value,
    /// Telephone numbering.
    pub phone: Phone,
    /// The national identity number.
    pub national_id: NationalId,
    /// Identifier systems.
    pub identifier_systems: IdentifierSystems,
    /// National health insurance funds.
    pub insurers: Vec<Insurer>,
    /// Name of the insurance card, when there is one.
    #[serde(default)]
    pub insurance_card: Option<String>,
    /// Regions.
    pub regions: Vec<Region>,
    /// Population by age band.
    pub age_structure: Vec<AgeBand>,
    /// Share of men.
    pub male_share: f64,
    /// Adult prevalence of chronic conditions.
    pub prevalence: Prevalence,
    /// The childhood immunisation schedule, one entry per dose.
    pub immunisation_schedule: Vec<Dose>,
    /// Levels of the health system, highest first.
    pub facility_tiers: Vec<FacilityTier>,
    /// Given names.
    pub given_names: GivenNames,
    /// Family names.
    pub family_names: Vec<ScriptPair>,
    /// Street names.
    pub street_names: Vec<ScriptPair>,
}

/// The country codes with a profile.
pub const COUNTRIES: &[&str] = &["ma", "dz"];

impl CountryProfile {
    /// The built-in profile of a country (`ma` or `dz`).
    pub fn builtin(code: &str) -> Result<CountryProfile, String> {
        let text = match code {
            "ma" => include_str!("../../../profiles/ma.json"),
            "dz" => include_str!("../../../profiles/dz.json"),
            other => {
                return Err(format!(
                    "no country profile '{other}' (known: {})",
                    COUNTRIES.join(", ")
                ))
            }
        };
        serde_json::from_str(text).map_err(|e| format!("the profile '{code}' is invalid: {e}"))
    }

    /// Total population over all regions.
    pub fn population(&self) -> u64 {
        self.regions.iter().map(|r| r.population).sum()
    }
}
