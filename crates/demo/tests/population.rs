//! The generated population: valid, deterministic, and distributed like the country.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sijill_demo::{person, CountryProfile, Population, Settings};

fn settings(country: &str, patients: usize, seed: u64) -> Settings {
    Settings {
        profile: CountryProfile::builtin(country).expect("profile"),
        patients,
        seed,
        as_of: time::macros::date!(2026 - 11 - 23),
        slot_weeks: 1,
        history_years: 8,
    }
}

fn generate(settings: Settings) -> Vec<Value> {
    let patients = settings.patients as u64;
    let (population, mut all) = Population::new(settings);
    for i in 0..patients {
        all.extend(population.patient(i));
    }
    all
}

#[test]
fn every_generated_resource_passes_the_validator_for_both_countries() {
    for country in ["ma", "dz"] {
        let resources = generate(settings(country, 120, 7));
        let mut problems = Vec::new();
        let mut types = HashSet::new();
        for r in &resources {
            types.insert(r["resourceType"].as_str().unwrap_or("").to_string());
            for issue in sijill_fhir::validate::validate_resource(r) {
                problems.push(format!("{} {}: {issue:?}", r["resourceType"], r["id"]));
            }
        }
        assert!(
            problems.is_empty(),
            "{country}: {} problems, first: {:#?}",
            problems.len(),
            &problems[..problems.len().min(10)]
        );
        for t in [
            "Patient",
            "RelatedPerson",
            "Coverage",
            "Organization",
            "Location",
            "HealthcareService",
            "Practitioner",
            "PractitionerRole",
            "Schedule",
            "Slot",
            "Appointment",
            "Encounter",
            "Condition",
            "Observation",
            "DiagnosticReport",
            "MedicationRequest",
            "Immunization",
            "AllergyIntolerance",
            "DocumentReference",
            "Device",
            "Task",
        ] {
            assert!(types.contains(t), "{country}: no {t} generated");
        }
    }
}

#[test]
fn ids_are_unique_and_references_resolve_within_the_population() {
    let resources = generate(settings("ma", 200, 3));
    let mut ids = HashSet::new();
    for r in &resources {
        let key = format!(
            "{}/{}",
            r["resourceType"].as_str().unwrap_or(""),
            r["id"].as_str().unwrap_or("")
        );
        assert!(ids.insert(key.clone()), "duplicate {key}");
    }
    fn references(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("reference") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| references(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| references(x, out)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    resources.iter().for_each(|r| references(r, &mut refs));
    assert!(refs.len() > resources.len(), "too few references: {}", refs.len());
    let dangling: Vec<_> = refs.iter().filter(|r| !ids.contains(*r)).collect();
    assert!(
        dangling.is_empty(),
        "{} dangling references, e.g. {:?}",
        dangling.len(),
        &dangling[..dangling.len().min(5)]
    );
}

#[test]
fn the_same_seed_gives_the_same_population_and_another_seed_another() {
    let a = serde_json::to_string(&generate(settings("dz", 40, 11))).unwrap();
    let b = serde_json::to_string(&generate(settings("dz", 40, 11))).unwrap();
    let c = serde_json::to_string(&generate(settings("dz", 40, 12))).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // A citizen's record does not depend on how many others are generated.
    let (small, _) = Population::new(settings("dz", 40, 11));
    let (large, _) = Population::new(settings("dz", 400, 11));
    assert_eq!(small.patient(5)[0], large.patient(5)[0]);
}

#[test]
fn national_ids_are_unique_and_match_the_profile_pattern() {
    for country in ["ma", "dz"] {
        let s = settings(country, 5000, 5);
        let pattern = regex::Regex::new(&s.profile.national_id.pattern).unwrap();
        let mut seen = HashSet::new();
        let mut holders = 0;
        for i in 0..5000 {
            let (p, _) = person::person(&s, i);
            if let Some(n) = p.national_id {
                assert!(
                    pattern.is_match(&n),
                    "{country}: {n} does not match {}",
                    pattern.as_str()
                );
                assert!(seen.insert(n.clone()), "{country}: {n} twice");
                holders += 1;
                assert!(p.age >= s.profile.national_id.from_age);
            }
        }
        assert!(holders > 2000, "{country}: only {holders} national ids");
    }
}

#[test]
fn sexes_ages_and_regions_follow_the_profile() {
    for country in ["ma", "dz"] {
        let n = 8000u64;
        let s = settings(country, n as usize, 9);
        let mut males = 0;
        let mut bands = vec![0u32; s.profile.age_structure.len()];
        let mut regions = vec![0u32; s.profile.regions.len()];
        for i in 0..n {
            let (p, _) = person::person(&s, i);
            males += p.male as u32;
            let band = s
                .profile
                .age_structure
                .iter()
                .position(|b| (b.from..=b.to).contains(&p.age))
                .unwrap_or_else(|| panic!("age {} in no band", p.age));
            bands[band] += 1;
            regions[p.region] += 1;
        }
        let share = |k: u32| k as f64 / n as f64;
        assert!(
            (share(males) - s.profile.male_share).abs() < 0.025,
            "{country}: male share {}",
            share(males)
        );
        for (b, k) in s.profile.age_structure.iter().zip(&bands) {
            assert!(
                (share(*k) - b.share).abs() < 0.02,
                "{country}: ages {}-{}: {} vs {}",
                b.from,
                b.to,
                share(*k),
                b.share
            );
        }
        let total = s.profile.population() as f64;
        for (r, k) in s.profile.regions.iter().zip(&regions) {
            let expected = r.population as f64 / total;
            assert!(
                (share(*k) - expected).abs() < 0.02,
                "{country}: {}: {} vs {expected}",
                r.name.fr,
                share(*k)
            );
        }
    }
}

#[test]
fn chronic_conditions_children_and_guardians_look_like_the_country() {
    let s = settings("ma", 2500, 21);
    let prevalence = s.profile.prevalence.clone();
    let schedule_len = s.profile.immunisation_schedule.len();
    let resources = generate(s);
    let mut adults = HashSet::new();
    let mut minors = HashSet::new();
    let mut conditions: HashMap<&str, HashSet<String>> = HashMap::new();
    let mut guarded = HashSet::new();
    let mut immunised: HashMap<String, usize> = HashMap::new();
    let birth_of: HashMap<String, String> = resources
        .iter()
        .filter(|r| r["resourceType"] == "Patient")
        .map(|r| {
            (
                format!("Patient/{}", r["id"].as_str().unwrap()),
                r["birthDate"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for r in &resources {
        match r["resourceType"].as_str().unwrap() {
            "Patient" => {
                let year: i32 = r["birthDate"].as_str().unwrap()[..4].parse().unwrap();
                let id = format!("Patient/{}", r["id"].as_str().unwrap());
                if 2026 - year > 18 {
                    adults.insert(id);
                } else if 2026 - year < 17 {
                    minors.insert(id);
                }
            }
            "Condition" if r["category"][0]["coding"][0]["code"] == "problem-list-item" => {
                let code = r["code"]["coding"][0]["code"].as_str().unwrap();
                let key = match code {
                    "E11.9" => "diabetes",
                    "I10" => "hypertension",
                    _ => continue,
                };
                conditions
                    .entry(key)
                    .or_default()
                    .insert(r["subject"]["reference"].as_str().unwrap().to_string());
            }
            "RelatedPerson" => {
                let codes: Vec<&str> = r["relationship"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["coding"][0]["code"].as_str().unwrap())
                    .collect();
                assert!(codes.contains(&"GUARD"));
                guarded.insert(r["patient"]["reference"].as_str().unwrap().to_string());
            }
            "Immunization" => {
                *immunised
                    .entry(r["patient"]["reference"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    for (key, expected) in [
        ("diabetes", prevalence.diabetes),
        ("hypertension", prevalence.hypertension),
    ] {
        let among_adults = conditions
            .get(key)
            .map(|s| s.intersection(&adults).count())
            .unwrap_or(0) as f64
            / adults.len() as f64;
        assert!(
            among_adults > expected * 0.7 && among_adults < expected * 1.3,
            "{key}: {among_adults:.3} of adults, profile says {expected}"
        );
        let among_minors = conditions
            .get(key)
            .map(|s| s.intersection(&minors).count())
            .unwrap_or(0);
        assert_eq!(among_minors, 0, "{key} in children");
    }
    let with_guardian = minors.iter().filter(|m| guarded.contains(*m)).count() as f64 / minors.len() as f64;
    assert!(with_guardian > 0.9, "only {with_guardian:.2} of minors have a guardian");
    // Children born within the history window have (almost) the whole schedule up to their age.
    let toddlers: Vec<&String> = birth_of
        .iter()
        .filter(|(_, b)| b.as_str() >= "2021-01-01" && b.as_str() < "2022-06-01")
        .map(|(p, _)| p)
        .collect();
    assert!(!toddlers.is_empty());
    let full = toddlers
        .iter()
        .filter(|p| immunised.get(**p).copied().unwrap_or(0) * 10 >= schedule_len * 8)
        .count() as f64
        / toddlers.len() as f64;
    assert!(full > 0.8, "only {full:.2} of four-year-olds have their vaccinations");
}
