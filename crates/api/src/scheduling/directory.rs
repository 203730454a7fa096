//! What `$find` needs to know of each bookable schedule — its facility, province and
//! region, specialties, the practitioner's gender and languages, the place's position —
//! joined from the directory (Schedule, PractitionerRole, Practitioner, Location,
//! Organization) and kept in memory.
//!
//! The join is rebuilt when this server writes a directory resource, and at the latest
//! after [`MAX_AGE`], so that another server's directory changes show within that time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;
use sijill_store::Store;

use crate::error::FhirResult;
use crate::interactions::reference_id;

/// How long a built directory is used at most.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// The resource types the facts are joined from: a write to one makes the facts stale.
pub const SOURCES: &[&str] = &[
    "Schedule",
    "PractitionerRole",
    "Practitioner",
    "Location",
    "Organization",
];

/// The facts of one active schedule.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFacts {
    /// Schedule id.
    pub id: String,
    /// The PractitionerRole it is for, if any.
    pub role: Option<String>,
    /// The Practitioner behind that role.
    pub practitioner: Option<String>,
    /// The Location, if any.
    pub location: Option<String>,
    /// The facility (Organization id).
    pub organization: Option<String>,
    /// Province (address district), lower case.
    pub province: Option<String>,
    /// Region (address state), lower case.
    pub region: Option<String>,
    /// Specialty codes, both `code` and `system|code`.
    pub specialties: Vec<String>,
    /// Practitioner's gender.
    pub gender: Option<String>,
    /// Practitioner's languages (codes, lower case).
    pub languages: Vec<String>,
    /// Latitude and longitude of the place.
    pub position: Option<(f64, f64)>,
}

/// The facts of every active schedule, built at one moment.
#[derive(Debug, Default)]
pub struct Directory {
    /// Schedules by id.
    pub schedules: HashMap<String, ScheduleFacts>,
}

/// The cache of the directory join.
#[derive(Default)]
pub struct DirectoryCache {
    generation: AtomicU64,
    built: Mutex<Option<(u64, Instant, Arc<Directory>)>>,
}

impl DirectoryCache {
    /// Marks the facts stale after a write to `resource_type` (a no-op for other types).
    pub fn changed(&self, resource_type: &str) {
        if SOURCES.contains(&resource_type) {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The current facts, rebuilt when stale.
    pub fn get(&self, store: &dyn Store) -> FhirResult<Arc<Directory>> {
        let generation = self.generation.load(Ordering::SeqCst);
        let mut built = self.built.lock();
        if let Some((g, at, dir)) = built.as_ref() {
            if *g == generation && at.elapsed() < MAX_AGE {
                return Ok(dir.clone());
            }
        }
        let dir = Arc::new(build(store)?);
        *built = Some((generation, Instant::now(), dir.clone()));
        Ok(dir)
    }
}

/// Every current resource of a type, parsed, by id.
fn all(store: &dyn Store, resource_type: &str) -> FhirResult<HashMap<String, Value>> {
    let mut out = HashMap::new();
    store.export(Some(resource_type), &mut |s| {
        if let Ok(v) = serde_json::from_slice::<Value>(&s.body) {
            out.insert(s.id.clone(), v);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Every coding of a list of CodeableConcepts as `code` and `system|code`.
pub fn codes_of(concepts: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for c in concepts.as_array().into_iter().flatten() {
        for coding in c["coding"].as_array().into_iter().flatten() {
            if let Some(code) = coding["code"].as_str() {
                out.push(code.to_string());
                if let Some(system) = coding["system"].as_str() {
                    out.push(format!("{system}|{code}"));
                }
            }
        }
    }
    out
}

fn address_part(resource: Option<&Value>, part: &str) -> Option<String> {
    let address = &resource?["address"];
    let one = if address.is_array() { &address[0] } else { address };
    one[part].as_str().map(str::to_lowercase)
}

fn build(store: &dyn Store) -> FhirResult<Directory> {
    let schedules = all(store, "Schedule")?;
    let roles = all(store, "PractitionerRole")?;
    let practitioners = all(store, "Practitioner")?;
    let locations = all(store, "Location")?;
    let organizations = all(store, "Organization")?;
    let mut out = Directory::default();
    for (id, s) in schedules {
        if s["active"] == Value::Bool(false) {
            continue;
        }
        let actors: Vec<&Value> = s["actor"].as_array().into_iter().flatten().collect();
        let role_id = actors.iter().find_map(|a| reference_id(a, "PractitionerRole"));
        let role = role_id.and_then(|r| roles.get(r));
        let location_id = actors
            .iter()
            .find_map(|a| reference_id(a, "Location"))
            .or_else(|| role.and_then(|r| reference_id(&r["location"][0], "Location")));
        let location = location_id.and_then(|l| locations.get(l));
        let practitioner_id = role.and_then(|r| reference_id(&r["practitioner"], "Practitioner"));
        let practitioner = practitioner_id.and_then(|p| practitioners.get(p));
        let organization_id = role
            .and_then(|r| reference_id(&r["organization"], "Organization"))
            .or_else(|| location.and_then(|l| reference_id(&l["managingOrganization"], "Organization")));
        let organization = organization_id.and_then(|o| organizations.get(o));
        let place = location.or(organization);
        let mut specialties = codes_of(&s["specialty"]);
        if let Some(r) = role {
            specialties.extend(codes_of(&r["specialty"]));
        }
        let languages = practitioner
            .map(|p| {
                codes_of(&p["communication"])
                    .into_iter()
                    .filter(|c| !c.contains('|'))
                    .map(|c| c.to_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        let position = location.and_then(|l| {
            Some((
                l["position"]["latitude"].as_f64()?,
                l["position"]["longitude"].as_f64()?,
            ))
        });
        out.schedules.insert(
            id.clone(),
            ScheduleFacts {
                id,
                role: role_id.map(str::to_string),
                practitioner: practitioner_id.map(str::to_string),
                location: location_id.map(str::to_string),
                organization: organization_id.map(str::to_string),
                province: address_part(place, "district"),
                region: address_part(place, "state"),
                specialties,
                gender: practitioner.and_then(|p| p["gender"].as_str().map(str::to_string)),
                languages,
                position,
            },
        );
    }
    Ok(out)
}
