//! What `$find` needs to know of each bookable schedule — its facility, province and
//! region, specialties, the practitioner's gender and languages, the place's position —
//! joined from the directory (Schedule, PractitionerRole, Practitioner, Location,
//! Organization) and kept in memory.
//!
//! The join is rebuilt when this server writes a directory resource, and at the latest
//! after [`MAX_AGE`], so that another server's directory changes show within that time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Whether the facts are joined from this resource type.
pub fn is_source(resource_type: &str) -> bool {
    SOURCES.contains(&resource_type)
}

/// The facts of one schedule.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFacts {
    /// Schedule id.
    pub id: String,
    /// Whether it takes bookings (`Schedule.active` is not false).
    pub active: bool,
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
    /// Its specialty (CodeableConcepts): the Schedule's, else the PractitionerRole's. The
    /// generated slots carry it.
    pub specialty: Value,
    /// Practitioner's gender.
    pub gender: Option<String>,
    /// Practitioner's languages (codes, lower case).
    pub languages: Vec<String>,
    /// Latitude and longitude of the place.
    pub position: Option<(f64, f64)>,
}

/// The facts of every schedule, built at one moment.
#[derive(Debug, Default)]
pub struct Directory {
    /// Schedules by id.
    pub schedules: HashMap<String, ScheduleFacts>,
    /// The ids of the schedules of each specialty code, in id order.
    pub by_specialty: HashMap<String, Vec<String>>,
}

impl Directory {
    /// The schedules that may offer a specialty (`code` or `system|code`; every schedule
    /// when None), in id order.
    pub fn offering(&self, specialty: Option<&str>) -> Vec<&ScheduleFacts> {
        match specialty {
            Some(wanted) => {
                let code = wanted.rsplit_once('|').map_or(wanted, |(_, c)| c);
                self.by_specialty
                    .get(code)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.schedules.get(id))
                    .collect()
            }
            None => {
                let mut all: Vec<&ScheduleFacts> = self.schedules.values().collect();
                all.sort_by(|a, b| a.id.cmp(&b.id));
                all
            }
        }
    }
}

/// The cache of the directory join.
#[derive(Default)]
pub struct DirectoryCache {
    generation: AtomicU64,
    built: Mutex<Option<(u64, Instant, Arc<Directory>)>>,
    /// Whether a background refresh is running.
    refreshing: AtomicBool,
}

impl DirectoryCache {
    /// Marks the facts stale (after a write to one of the [`SOURCES`]).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The current facts. After a write on this server they are rebuilt before they are
    /// used; facts that have only aged past [`MAX_AGE`] (to see other servers' writes)
    /// are still served while one background thread rebuilds them, so that no request
    /// waits for the join.
    pub fn get(self: &Arc<Self>, store: &Arc<dyn Store>) -> FhirResult<Arc<Directory>> {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((g, at, dir)) = self.built.lock().as_ref() {
            if *g == generation {
                if at.elapsed() >= MAX_AGE && !self.refreshing.swap(true, Ordering::SeqCst) {
                    let (cache, store) = (self.clone(), store.clone());
                    std::thread::spawn(move || {
                        if let Err(e) = cache.rebuild(store.as_ref(), generation) {
                            tracing::warn!(error = ?e.issues.first().map(|i| &i.diagnostics), "refreshing the directory failed");
                        }
                        cache.refreshing.store(false, Ordering::SeqCst);
                    });
                }
                return Ok(dir.clone());
            }
        }
        self.rebuild(store.as_ref(), generation)
    }

    /// Builds the facts as of `generation` and keeps them unless newer ones are kept.
    fn rebuild(&self, store: &dyn Store, generation: u64) -> FhirResult<Arc<Directory>> {
        let dir = Arc::new(build(store)?);
        let mut built = self.built.lock();
        if built.as_ref().is_none_or(|(g, _, _)| *g <= generation) {
            *built = Some((generation, Instant::now(), dir.clone()));
        }
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

/// The codes of a list of CodeableConcepts, in order.
pub fn codes(concepts: &Value) -> Vec<String> {
    concepts
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        .filter_map(|c| c["code"].as_str().map(str::to_string))
        .collect()
}

/// Whether a list of CodeableConcepts has a coding matching `wanted` (`code` or
/// `system|code`).
pub fn has_code(concepts: &Value, wanted: &str) -> bool {
    let mut codings = concepts
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten());
    codings.any(|coding| {
        let code = coding["code"].as_str().unwrap_or("");
        match wanted.split_once('|') {
            Some((system, c)) => coding["system"].as_str() == Some(system) && code == c,
            None => code == wanted,
        }
    })
}

fn address_part(resource: Option<&Value>, part: &str) -> Option<String> {
    let address = &resource?["address"];
    let one = if address.is_array() { &address[0] } else { address };
    one[part].as_str().map(str::to_lowercase)
}

/// Finds a directory resource by type and id: from the maps of a directory being built,
/// or from the store.
pub type Lookup<'m> = dyn Fn(&str, &str) -> FhirResult<Option<Cow<'m, Value>>> + 'm;

/// The facts of one schedule, with the resources it points to found by `lookup`: the
/// PractitionerRole among its actors, its Location (else the role's first), the
/// role's Practitioner, and the facility (the role's organization, else the Location's
/// managing organization).
pub fn facts_of(id: &str, schedule: &Value, lookup: &Lookup<'_>) -> FhirResult<ScheduleFacts> {
    let actors: Vec<&Value> = schedule["actor"].as_array().into_iter().flatten().collect();
    let owned = |r: Option<&str>| r.map(str::to_string);
    let find = |resource_type: &str, id: &Option<String>| match id {
        Some(i) => lookup(resource_type, i),
        None => Ok(None),
    };
    let role_id = owned(actors.iter().find_map(|a| reference_id(a, "PractitionerRole")));
    let role = find("PractitionerRole", &role_id)?;
    let role = role.as_deref();
    let location_id = owned(
        actors
            .iter()
            .find_map(|a| reference_id(a, "Location"))
            .or_else(|| role.and_then(|r| reference_id(&r["location"][0], "Location"))),
    );
    let location = find("Location", &location_id)?;
    let location = location.as_deref();
    let practitioner_id = owned(role.and_then(|r| reference_id(&r["practitioner"], "Practitioner")));
    let practitioner = find("Practitioner", &practitioner_id)?;
    let practitioner = practitioner.as_deref();
    let organization_id = owned(
        role.and_then(|r| reference_id(&r["organization"], "Organization"))
            .or_else(|| location.and_then(|l| reference_id(&l["managingOrganization"], "Organization"))),
    );
    let organization = find("Organization", &organization_id)?;
    let place = location.or(organization.as_deref());
    let specialty = match (&schedule["specialty"], role) {
        (s, _) if s.is_array() => s.clone(),
        (_, Some(r)) => r["specialty"].clone(),
        _ => Value::Null,
    };
    let languages = practitioner
        .and_then(|p| p["communication"].as_array())
        .into_iter()
        .flatten()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        .filter_map(|coding| coding["code"].as_str().map(str::to_lowercase))
        .collect();
    let position = location.and_then(|l| {
        Some((
            l["position"]["latitude"].as_f64()?,
            l["position"]["longitude"].as_f64()?,
        ))
    });
    Ok(ScheduleFacts {
        id: id.to_string(),
        active: schedule["active"] != Value::Bool(false),
        role: role_id,
        practitioner: practitioner_id,
        location: location_id,
        organization: organization_id,
        province: address_part(place, "district"),
        region: address_part(place, "state"),
        specialty,
        gender: practitioner.and_then(|p| p["gender"].as_str().map(str::to_string)),
        languages,
        position,
    })
}

fn build(store: &dyn Store) -> FhirResult<Directory> {
    let schedules = all(store, "Schedule")?;
    let maps: HashMap<&str, HashMap<String, Value>> = ["PractitionerRole", "Practitioner", "Location", "Organization"]
        .into_iter()
        .map(|t| Ok((t, all(store, t)?)))
        .collect::<FhirResult<_>>()?;
    let lookup = |resource_type: &str, id: &str| Ok(maps.get(resource_type).and_then(|m| m.get(id)).map(Cow::Borrowed));
    let mut out = Directory::default();
    for (id, s) in schedules {
        let facts = facts_of(&id, &s, &lookup)?;
        for code in codes(&facts.specialty) {
            out.by_specialty.entry(code).or_default().push(id.clone());
        }
        out.schedules.insert(id.clone(), facts);
    }
    for ids in out.by_specialty.values_mut() {
        ids.sort();
        ids.dedup();
    }
    Ok(out)
}
