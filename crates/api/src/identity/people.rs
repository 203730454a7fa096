//! Who signed in: the national identifier from the eID becomes a citizen (their Patient) or
//! a member of staff (their Practitioner, acting through a PractitionerRole whose `code`
//! may carry a platform role).

use std::sync::Arc;

use sijill_auth::Role;
use sijill_store::Stored;

use crate::http::AppState;

pub use sijill_auth::PLATFORM_ROLE_SYSTEM;

/// The person a login maps to.
#[derive(Debug, Clone)]
pub struct Person {
    /// Their role.
    pub role: Role,
    /// `Patient/…` or `Practitioner/…`.
    pub fhir_user: String,
    /// The patient in context (citizens).
    pub patient: Option<String>,
    /// The organization of their PractitionerRole (staff).
    pub organization: Option<String>,
}

fn find(state: &AppState, resource_type: &str, pairs: &[(&str, String)]) -> Result<Vec<Stored>, String> {
    state
        .engine
        .store
        .lookup(resource_type, pairs, 2)
        .map_err(|e| e.to_string())
}

/// Maps a national identifier to the person's record. `as_patient`: the app asked for the
/// patient's own record (patient/ scopes); otherwise the staff role is looked up.
pub fn who_is(state: &Arc<AppState>, national_id: &str, as_patient: bool) -> Result<Person, String> {
    let identity = &*state.identity;
    if national_id.is_empty() || national_id.len() > 64 {
        return Err("the national identifier is missing or too long".into());
    }
    let by_identifier = format!("{}|{national_id}", identity.national_id_system);
    if as_patient {
        let found = find(state, "Patient", &[("identifier", by_identifier)])?;
        return match found.as_slice() {
            [p] => Ok(Person {
                role: Role::Citizen,
                fhir_user: format!("Patient/{}", p.id),
                patient: Some(p.id.clone()),
                organization: None,
            }),
            [] => Err("no patient record carries this national identifier".into()),
            _ => Err("several patient records carry this national identifier; the registry must merge them".into()),
        };
    }
    // The development identity provider also accepts a Practitioner id, for demo staff.
    let practitioner = match national_id
        .strip_prefix("Practitioner/")
        .filter(|_| identity.development())
    {
        Some(id) => find(state, "Practitioner", &[("_id", id.to_string())])?,
        None => find(state, "Practitioner", &[("identifier", by_identifier)])?,
    };
    let [practitioner] = practitioner.as_slice() else {
        return Err("no single practitioner record carries this national identifier".into());
    };
    let roles = find(
        state,
        "PractitionerRole",
        &[
            ("practitioner", format!("Practitioner/{}", practitioner.id)),
            ("active", "true".to_string()),
        ],
    )?;
    let role = roles
        .first()
        .map(crate::resource_json::parsed)
        .ok_or("this practitioner holds no active role at a facility")?;
    let platform_role = role["code"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        .filter(|c| c["system"] == PLATFORM_ROLE_SYSTEM)
        .find_map(|c| c["code"].as_str().and_then(Role::parse))
        .unwrap_or(Role::Practitioner);
    let organization = role["organization"]["reference"]
        .as_str()
        .and_then(|r| r.strip_prefix("Organization/"))
        .map(str::to_string);
    Ok(Person {
        role: platform_role,
        fhir_user: format!("Practitioner/{}", practitioner.id),
        patient: None,
        organization,
    })
}
