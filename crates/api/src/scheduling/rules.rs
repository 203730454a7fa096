//! The country's booking rules, checked whenever an appointment is held, booked or moved,
//! inside the transaction that takes the slot:
//!
//! - a booking window (how far ahead a slot may be taken), per specialty if need be;
//! - no hoarding: at most N upcoming appointments per patient and specialty;
//! - specialties reached only on referral: an active ServiceRequest for the patient, for
//!   that specialty (`performerType`), from a general practitioner; the appointment is then
//!   `basedOn` it;
//! - a cancellation cut-off: a citizen cannot cancel or move an appointment in the last
//!   hours before it (the facility's staff can).
//!
//! A broken rule is answered 422 with an OperationOutcome (`business-rule`) that says which
//! rule and what to do, and changes nothing.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use sijill_store::{Current, SearchQuery, StoreTx};
use time::{Duration, OffsetDateTime};

use super::availability::parse_moment;
use super::directory::has_code;
use crate::error::{FhirError, FhirResult};
use crate::interactions::reference_id;

/// The booking rules of a country profile (`booking_rules`). Every rule is optional: an
/// absent one does not apply.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingRules {
    /// How many days ahead a slot may be booked.
    #[serde(default)]
    pub window_days: Option<i64>,
    /// A different window for some specialties (by code).
    #[serde(default)]
    pub window_days_by_specialty: BTreeMap<String, i64>,
    /// At most this many upcoming (held or booked) appointments per patient and specialty.
    #[serde(default)]
    pub max_upcoming_per_specialty: Option<usize>,
    /// Specialty codes booked only on referral.
    #[serde(default)]
    pub referral_required: Vec<String>,
    /// The specialty codes of the practitioners whose referral counts (general practice).
    #[serde(default)]
    pub referral_from: Vec<String>,
    /// A citizen cannot cancel or move an appointment less than this many hours before it.
    #[serde(default)]
    pub cancellation_cutoff_hours: Option<i64>,
}

/// A broken rule (422, business-rule).
fn refused(why: impl Into<String>) -> FhirError {
    FhirError::new(StatusCode::UNPROCESSABLE_ENTITY, "business-rule", why)
}

/// A specialty's name for messages: its display, else its code.
fn specialty_name<'v>(resource: &'v Value, code: &'v str) -> &'v str {
    resource["specialty"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        .find(|c| c["code"] == code)
        .and_then(|c| c["display"].as_str())
        .unwrap_or(code)
}

impl BookingRules {
    /// The booking window for a slot's specialties: the shortest that applies.
    fn window_for(&self, slot: &Value) -> Option<i64> {
        let by_specialty = super::directory::codes(&slot["specialty"])
            .into_iter()
            .filter_map(|c| self.window_days_by_specialty.get(&c).copied())
            .min();
        by_specialty.or(self.window_days)
    }

    /// Checks a booking (or a hold, or a move) of `slot` for `patient`, inside the
    /// transaction that takes the slot. `moving` is the appointment being moved, which does
    /// not count against itself. Returns the referral the appointment is based on, if the
    /// specialty needs one.
    pub fn check_booking(
        &self,
        tx: &mut dyn StoreTx,
        patient: &str,
        slot: &Value,
        moving: Option<&str>,
    ) -> FhirResult<Option<String>> {
        let now = OffsetDateTime::now_utc();
        let start = slot["start"].as_str().and_then(parse_moment);
        if let (Some(days), Some(start)) = (self.window_for(slot), start) {
            if start > now + Duration::days(days) {
                return Err(refused(format!(
                    "This slot is more than {days} days ahead, beyond the booking window for its specialty; \
                     choose an earlier one"
                )));
            }
        }
        let codes = super::directory::codes(&slot["specialty"]);
        if let Some(max) = self.max_upcoming_per_specialty {
            // Bookings for one patient take turns, so that two at once cannot both pass.
            let theirs = SearchQuery::parse("Appointment", &[("patient".into(), format!("Patient/{patient}"))])?;
            tx.lock_conditions(&[("Appointment", &theirs)])?;
            for code in &codes {
                let upcoming = upcoming_in(tx, patient, code, moving, now)?;
                if upcoming >= max {
                    return Err(refused(format!(
                        "The patient already has {upcoming} upcoming appointment(s) in {} (at most {max}); \
                         cancel or attend one before booking another",
                        specialty_name(slot, code)
                    )));
                }
            }
        }
        let needs_referral: Vec<&str> = codes
            .iter()
            .map(String::as_str)
            .filter(|c| self.referral_required.iter().any(|r| r == c))
            .collect();
        match needs_referral.first() {
            None => Ok(None),
            Some(code) => self.referral(tx, patient, code).and_then(|found| {
                found.map(Some).ok_or_else(|| {
                    refused(format!(
                        "Booking in {} needs a referral: an active ServiceRequest for the patient with this \
                         specialty as performerType, from a general practitioner",
                        specialty_name(slot, code)
                    ))
                })
            }),
        }
    }

    /// An active referral of the patient to a specialty, made by a practitioner whose role
    /// counts ([`BookingRules::referral_from`]; any practitioner when none is listed).
    fn referral(&self, tx: &mut dyn StoreTx, patient: &str, code: &str) -> FhirResult<Option<String>> {
        let query = SearchQuery::parse(
            "ServiceRequest",
            &[
                ("subject".into(), format!("Patient/{patient}")),
                ("status".into(), "active".into()),
            ],
        )?;
        for id in tx.search_ids("ServiceRequest", &query, 100)? {
            let Current::Found(stored) = tx.read("ServiceRequest", &id)? else {
                continue;
            };
            let request: Value = crate::resource_json::parsed(&stored);
            if !has_code(&Value::Array(vec![request["performerType"].clone()]), code) {
                continue;
            }
            if self.referral_from.is_empty() || self.made_by_a_referrer(tx, &request)? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Whether a request's requester is a PractitionerRole of a referring specialty.
    fn made_by_a_referrer(&self, tx: &mut dyn StoreTx, request: &Value) -> FhirResult<bool> {
        let Some(role) = reference_id(&request["requester"], "PractitionerRole") else {
            return Ok(false);
        };
        let Current::Found(stored) = tx.read("PractitionerRole", role)? else {
            return Ok(false);
        };
        let role: Value = crate::resource_json::parsed(&stored);
        Ok(self.referral_from.iter().any(|c| has_code(&role["specialty"], c)))
    }

    /// Refuses a citizen's cancellation or move of an appointment that starts within the
    /// cut-off; the facility's staff are not bound by it.
    pub fn check_cancellation(&self, appointment: &Value, by_staff: bool) -> FhirResult<()> {
        let (Some(hours), false) = (self.cancellation_cutoff_hours, by_staff) else {
            return Ok(());
        };
        if appointment["status"] != "booked" {
            return Ok(());
        }
        let start = appointment["start"].as_str().and_then(parse_moment);
        if start.is_some_and(|s| s - OffsetDateTime::now_utc() < Duration::hours(hours)) {
            return Err(refused(format!(
                "An appointment cannot be cancelled or moved online in the last {hours} hours before it; \
                 please call the facility"
            )));
        }
        Ok(())
    }
}

/// How many upcoming held or booked appointments the patient has in a specialty, the one
/// being moved aside.
fn upcoming_in(
    tx: &mut dyn StoreTx,
    patient: &str,
    code: &str,
    moving: Option<&str>,
    now: OffsetDateTime,
) -> FhirResult<usize> {
    let query = SearchQuery::parse(
        "Appointment",
        &[
            ("patient".into(), format!("Patient/{patient}")),
            ("status".into(), "booked,pending".into()),
        ],
    )?;
    let mut n = 0;
    for id in tx.search_ids("Appointment", &query, 1000)? {
        if Some(id.as_str()) == moving {
            continue;
        }
        let Current::Found(stored) = tx.read("Appointment", &id)? else {
            continue;
        };
        let a: Value = crate::resource_json::parsed(&stored);
        let ahead = a["start"].as_str().and_then(parse_moment).is_some_and(|s| s > now);
        if ahead && super::directory::codes(&a["specialty"]).iter().any(|c| c == code) {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slot_in(days: i64, code: &str) -> Value {
        let start = OffsetDateTime::now_utc() + Duration::days(days);
        json!({"start": super::super::availability::format_moment(start),
               "specialty": [{"coding": [{"code": code, "display": "Cardiology"}]}]})
    }

    #[test]
    fn the_shortest_window_of_a_slots_specialties_applies() {
        let rules = BookingRules {
            window_days: Some(30),
            window_days_by_specialty: [("c".to_string(), 90)].into(),
            ..BookingRules::default()
        };
        assert_eq!(rules.window_for(&slot_in(1, "c")), Some(90));
        assert_eq!(rules.window_for(&slot_in(1, "x")), Some(30));
        assert_eq!(BookingRules::default().window_for(&slot_in(1, "x")), None);
    }

    #[test]
    fn a_citizen_cannot_cancel_inside_the_cut_off_but_staff_can() {
        let rules = BookingRules {
            cancellation_cutoff_hours: Some(24),
            ..BookingRules::default()
        };
        let mut soon = slot_in(0, "c");
        soon["status"] = json!("booked");
        soon["start"] = json!(super::super::availability::format_moment(
            OffsetDateTime::now_utc() + Duration::hours(3)
        ));
        assert!(rules.check_cancellation(&soon, false).is_err());
        assert!(rules.check_cancellation(&soon, true).is_ok());
        let mut later = slot_in(3, "c");
        later["status"] = json!("booked");
        assert!(rules.check_cancellation(&later, false).is_ok());
        soon["status"] = json!("pending");
        assert!(
            rules.check_cancellation(&soon, false).is_ok(),
            "a hold can always be let go"
        );
    }
}
