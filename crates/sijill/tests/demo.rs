//! `sijill demo` and `sijill serve --demo` through the real binary.

mod common;

use std::time::{Duration, Instant};

use common::{decode_payload, dev_sign_in, json, register_app, sijill, Server};

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
    // The introduction: a citizen, a practitioner, a planner and an auditor, each with the
    // national identifier they sign in with.
    let people = loop {
        let lines = server.stdout.lock().unwrap().clone();
        if lines.iter().any(|l| l.trim_start().starts_with("auditor:")) {
            break lines;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no introduction in {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let national_id_of = |role: &str| {
        let line = people
            .iter()
            .find(|l| l.trim_start().starts_with(&format!("{role}:")))
            .unwrap_or_else(|| panic!("no {role} in {people:?}"));
        line.split("CNIE ").nth(1).unwrap().trim().to_string()
    };
    let count = json(server.get("Patient?_summary=count"));
    assert_eq!(count["total"], 30);
    let redirect = "http://127.0.0.1:9/demo-app";
    let app = register_app(
        &server,
        "openid fhirUser launch/patient patient/*.rs user/*.rs",
        redirect,
    );
    // The citizen signs in and reads their own record.
    let tokens = dev_sign_in(
        &server,
        &app,
        redirect,
        "openid fhirUser launch/patient patient/*.rs",
        &national_id_of("citizen"),
    );
    let patient_id = tokens["patient"].as_str().expect("patient in context").to_string();
    let access = tokens["access_token"].as_str().unwrap();
    let record = json(server.get_as(access, &format!("Patient/{patient_id}/$everything?_count=1000")));
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
    // The practitioner signs in as themselves; without a grant the citizen's record is hidden.
    let tokens = dev_sign_in(
        &server,
        &app,
        redirect,
        "openid fhirUser user/*.rs",
        &national_id_of("practitioner"),
    );
    let id_token = tokens["id_token"].as_str().unwrap();
    let claims = decode_payload(id_token);
    assert!(
        claims["fhirUser"].as_str().unwrap().contains("/Practitioner/"),
        "{claims}"
    );
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(server.get_as(access, &format!("Patient/{patient_id}")).status(), 404);
    // The planner sees counts, not people.
    let tokens = dev_sign_in(
        &server,
        &app,
        redirect,
        "openid fhirUser user/*.rs",
        &national_id_of("planner"),
    );
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(json(server.get_as(access, "Patient?_summary=count"))["total"], 30);
    assert_ne!(server.get_as(access, &format!("Patient/{patient_id}")).status(), 200);
}
