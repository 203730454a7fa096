//! Small builders for the FHIR datatypes the generator writes, so every module spells a
//! Coding, Reference or Quantity the same way.

use serde_json::{json, Value};
use time::{Date, PrimitiveDateTime};

/// A CodeableConcept with one coding.
pub fn concept(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}], "text": display})
}

/// A Coding.
pub fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

/// A literal reference `Type/id`.
pub fn reference(resource_type: &str, id: &str) -> Value {
    json!({"reference": format!("{resource_type}/{id}")})
}

/// A UCUM quantity, rounded to `decimals`.
pub fn quantity(value: f64, unit: &str, decimals: u32) -> Value {
    json!({"value": round(value, decimals), "unit": unit, "system": crate::codes::UCUM, "code": unit})
}

/// `value` rounded to `decimals` places.
pub fn round(value: f64, decimals: u32) -> f64 {
    let f = 10f64.powi(decimals as i32);
    (value * f).round() / f
}

/// A FHIR date.
pub fn date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A FHIR dateTime in local time with the country's offset.
pub fn date_time(t: PrimitiveDateTime, offset: &str) -> String {
    format!(
        "{}T{:02}:{:02}:{:02}{offset}",
        date(t.date()),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A HumanName in Latin script, and the same name in Arabic script marked with its language.
pub fn names(given: &crate::profile::ScriptPair, family: &crate::profile::ScriptPair, prefix: Option<&str>) -> Value {
    let mut latin = json!({
        "use": "official",
        "text": format!("{} {}", given.lat, family.lat.to_uppercase()),
        "family": family.lat,
        "given": [given.lat],
    });
    let mut arabic = json!({
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/language", "valueCode": "ar"}],
        "use": "official",
        "text": format!("{} {}", given.ar, family.ar),
        "family": family.ar,
        "given": [given.ar],
    });
    if let Some(p) = prefix {
        latin["prefix"] = json!([p]);
        arabic["prefix"] = json!(["د."]);
    }
    json!([latin, arabic])
}
