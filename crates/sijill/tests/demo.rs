//! `sijill demo` and `sijill serve --demo` through the real binary.

mod common;

use std::time::{Duration, Instant};

use common::{json, sijill, Server};

fn demo_args<'a>(out: &'a str, format: &'a str) -> Vec<&'a str> {
    vec![
        "demo",
        "--country",
        "dz",
        "--patients",
        "15",
        "--seed",
        "3",
        "--as-of",
        "2026-11-23",
        "--slot-weeks",
        "1",
        "--out",
        out,
        "--format",
        format,
    ]
}

fn ndjson_lines(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap().lines().count())
        .sum()
}

#[test]
fn demo_files_are_deterministic_and_bundles_import_without_errors() {
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_string_lossy().to_string();
    for (name, format) in [("a", "ndjson"), ("b", "ndjson"), ("bundles", "bundles")] {
        let out = sijill(work.path(), &demo_args(&path(name), format));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let a = std::fs::read(work.path().join("a/Patient.ndjson")).unwrap();
    let b = std::fs::read(work.path().join("b/Patient.ndjson")).unwrap();
    assert_eq!(a, b, "same seed, different output");
    assert_eq!(String::from_utf8_lossy(&a).lines().count(), 15);
    let generated = ndjson_lines(&work.path().join("a"));

    let data = tempfile::tempdir().unwrap();
    let out = sijill(data.path(), &["import", &path("bundles")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("imported {generated} resources")),
        "{stdout} (generated {generated})"
    );
    assert!(stdout.contains(", 0 errors"), "{stdout}");
}

#[test]
fn demo_rejects_an_unknown_country_and_a_bad_date() {
    let work = tempfile::tempdir().unwrap();
    let out = sijill(work.path(), &["demo", "--country", "fr", "--patients", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no country profile 'fr'"));
    let out = sijill(work.path(), &["demo", "--as-of", "2026-13-01", "--patients", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--as-of"));
}

#[test]
fn serve_demo_loads_a_population_it_introduces_and_serves() {
    let server = Server::start_with(&["--demo", "--demo-patients", "30", "--demo-country", "ma"]);
    let started = Instant::now();
    let citizen_line = loop {
        let lines = server.stdout.lock().unwrap().clone();
        if let Some(l) = lines.iter().find(|l| l.contains("demo citizen")) {
            break l.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no introduction in {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let count = json(server.get("Patient?_summary=count"));
    assert_eq!(count["total"], 30);
    // The line names the citizen's national ID and their $everything URL.
    let everything = citizen_line
        .split_whitespace()
        .find(|w| w.contains("$everything"))
        .unwrap();
    let patient_id = everything.split('/').rev().nth(1).unwrap();
    let national_id = citizen_line.split("CNIE ").nth(1).unwrap().split(')').next().unwrap();
    let found = json(server.get(&format!(
        "Patient?identifier=https://sijill.health/id/ma/cnie|{national_id}"
    )));
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["entry"][0]["resource"]["id"], patient_id);
    let record = json(server.get(&format!("Patient/{patient_id}/$everything?_count=1000")));
    let entries = record["entry"].as_array().map(Vec::len).unwrap_or(0);
    assert!(entries > 3, "{record}");
    let types: std::collections::HashSet<&str> = record["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["resource"]["resourceType"].as_str())
        .collect::<std::collections::HashSet<_>>();
    assert!(
        types.contains("Encounter") || types.contains("Immunization"),
        "{types:?}"
    );
}
