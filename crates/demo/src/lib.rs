//! Country profiles and a deterministic generator of a synthetic national population.
//!
//! `sijill demo` uses it to fill a store (or a directory of NDJSON or transaction Bundles)
//! with a whole country: the health system's directory (insurers, facilities by tier, wards
//! and beds, practitioners, services, schedules, slots and bookings, equipment and its
//! maintenance) and citizens with realistic clinical histories. The same seed and date give
//! the same output, byte for byte.

pub mod codes;
pub mod directory;
pub mod fhir;
pub mod person;
pub mod profile;
pub mod record;
pub mod rng;

use serde_json::Value;
use time::Date;

pub use directory::Directory;
pub use profile::CountryProfile;

/// Weeks of appointment slots generated unless told otherwise.
pub const DEFAULT_SLOT_WEEKS: u32 = 2;
/// Years of clinical history generated unless told otherwise.
pub const DEFAULT_HISTORY_YEARS: u32 = 8;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The country.
    pub profile: CountryProfile,
    /// Number of citizens.
    pub patients: usize,
    /// The seed: same seed, same population.
    pub seed: u64,
    /// "Today" for the population: histories end here and slots start the day after.
    pub as_of: Date,
    /// Weeks of appointment slots after `as_of`.
    pub slot_weeks: u32,
    /// Years of clinical history before `as_of`.
    pub history_years: u32,
}

/// A population being generated: the directory is built once; each citizen's record is
/// generated independently from it, in any order or in parallel.
pub struct Population {
    settings: Settings,
    directory: Directory,
    /// Computed once: see [`record::adult_age_norm`].
    risk_norm: [f64; 8],
}

impl Population {
    /// Builds the directory; returns the population and the directory's resources.
    pub fn new(settings: Settings) -> (Population, Vec<Value>) {
        let (directory, resources) = directory::build(&settings);
        let risk_norm = record::adult_age_norm(&settings);
        (
            Population {
                settings,
                directory,
                risk_norm,
            },
            resources,
        )
    }

    /// All resources of citizen `index` (0-based, below `settings.patients`).
    pub fn patient(&self, index: u64) -> Vec<Value> {
        record::patient_record(&self.settings, &self.directory, self.risk_norm, index)
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The directory.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }
}
