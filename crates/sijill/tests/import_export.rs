//! `sijill import` and `sijill export`, including a crash (kill -9) in the middle of an
//! import.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, json, sijill, Server};
use serde_json::{json, Value};

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).unwrap();
}

/// Reads every exported NDJSON file: resource type → resources.
fn exported(dir: &Path) -> HashMap<String, Vec<Value>> {
    let out = dir.join("export");
    let result = sijill(dir, &["export", "--output", out.to_str().unwrap()]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let mut map = HashMap::new();
    for f in std::fs::read_dir(&out).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().trim_end_matches(".ndjson").to_string();
        let text = std::fs::read_to_string(f.path()).unwrap();
        let resources: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        map.insert(name, resources);
    }
    std::fs::remove_dir_all(&out).unwrap();
    map
}

#[test]
fn import_reports_bad_files_and_loads_the_rest() {
    let data = tempfile::tempdir().unwrap();
    let input = tempfile::tempdir().unwrap();
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "name": [{"family": "Kettani"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:o", "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}, "subject": {"reference": "urn:uuid:p"}}, "request": {"method": "POST", "url": "Observation"}}
    ]});
    write(input.path(), "a-transaction.json", &tx.to_string());
    let collection = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Organization", "id": "chu-oran", "name": "CHU Oran"}},
        {"resource": {"resourceType": "Location", "name": "Ward 3", "status": "active"}}
    ]});
    write(input.path(), "b-collection.json", &collection.to_string());
    write(
        input.path(),
        "c-lines.ndjson",
        &[
            json!({"resourceType": "Practitioner", "id": "dr-1", "name": [{"family": "Haddad"}]}).to_string(),
            "{not json".to_string(),
            json!({"resourceType": "Practitioner", "gender": "robot"}).to_string(),
            json!({"resourceType": "Practitioner", "id": "dr-2"}).to_string(),
        ]
        .join("\n"),
    );
    write(input.path(), "d-broken.json", "{\"resourceType\": ");
    write(
        input.path(),
        "e-invalid.json",
        &json!({"resourceType": "Patient", "birthDate": "1990-13-45"}).to_string(),
    );
    write(input.path(), "notes.txt", "ignored: not a FHIR file extension");
    let out = sijill(data.path(), &["import", input.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("d-broken.json") && stderr.contains("not valid JSON"),
        "{stderr}"
    );
    assert!(
        stderr.contains("e-invalid.json") && stderr.contains("birthDate"),
        "{stderr}"
    );
    assert!(stderr.contains("c-lines.ndjson: line 2"), "{stderr}");
    assert!(
        stderr.contains("c-lines.ndjson: line 3") && stderr.contains("gender"),
        "{stderr}"
    );
    assert!(stdout.contains("imported 6 resources from 5 files"), "{stdout}");
    assert!(stdout.contains("4 errors"), "{stdout}");

    let resources = exported(data.path());
    assert_eq!(resources["Patient"].len(), 1);
    assert_eq!(resources["Practitioner"].len(), 2);
    assert_eq!(resources["Organization"][0]["id"], "chu-oran");
    let patient_id = resources["Patient"][0]["id"].as_str().unwrap();
    assert_eq!(
        resources["Observation"][0]["subject"]["reference"],
        format!("Patient/{patient_id}")
    );

    // The export loads into a fresh store and exports the same again.
    let again = tempfile::tempdir().unwrap();
    let export_dir = data.path().join("round-trip");
    assert!(
        sijill(data.path(), &["export", "--output", export_dir.to_str().unwrap()])
            .status
            .success()
    );
    let out = sijill(again.path(), &["import", export_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reloaded = exported(again.path());
    for (ty, list) in &resources {
        let ids = |l: &Vec<Value>| {
            let mut v: Vec<String> = l.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(ids(list), ids(&reloaded[ty]), "{ty}");
    }
}

#[test]
fn synthea_bundles_import_with_conditional_references() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/synthea-120");
    if !shared.is_dir() {
        panic!("{} is missing", shared.display());
    }
    let input = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&shared)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let chosen: Vec<_> = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".json.bz2"))
        .take(5)
        .collect();
    let mut expected = 0;
    for f in &chosen {
        let out = Command::new("bunzip2").arg("-c").arg(f).output().expect("bunzip2");
        let name = f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".bz2")
            .to_string();
        let bundle: Value = serde_json::from_slice(&out.stdout).unwrap();
        expected += bundle["entry"].as_array().unwrap().len();
        std::fs::write(input.path().join(name), out.stdout).unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    // The hospitals and practitioners first: the patients refer to them by identifier.
    let first: Vec<String> = std::fs::read_dir(input.path())
        .unwrap()
        .flatten()
        .map(|e| e.path().to_string_lossy().to_string())
        .filter(|p| p.contains("/0-"))
        .collect();
    let out = sijill(data.path(), &["import", &first[0], &first[1]]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = sijill(data.path(), &["import", input.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(&format!("imported {expected} resources")),
        "{stdout} (expected {expected})"
    );
    let resources = exported(data.path());
    let text = resources
        .values()
        .flatten()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !text.contains("\"reference\":\"urn:uuid:"),
        "unresolved urn:uuid reference"
    );
    assert!(
        !text.contains("\"reference\":\"Organization?"),
        "unresolved conditional reference"
    );
    assert!(
        !text.contains("\"reference\":\"Practitioner?"),
        "unresolved conditional reference"
    );
}

#[test]
fn a_killed_import_keeps_whole_transactions_only() {
    let input = tempfile::tempdir().unwrap();
    const BUNDLES: usize = 400;
    const PER_BUNDLE: usize = 100;
    for b in 0..BUNDLES {
        let entries: Vec<Value> = (0..PER_BUNDLE)
            .map(|i| {
                json!({
                    "fullUrl": format!("urn:uuid:{b}-{i}"),
                    "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
                                 "identifier": [{"system": "urn:test:bundle", "value": b.to_string()}],
                                 "valueQuantity": {"value": i, "unit": "/min"}},
                    "request": {"method": "POST", "url": "Observation"}
                })
            })
            .collect();
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        write(input.path(), &format!("bundle-{b:04}.json"), &bundle.to_string());
    }
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .arg("--data-dir")
        .arg(data.path())
        .envs(common::store_env(data.path()))
        .args(["import", "--jobs", "1", input.path().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some bundles are in, then kill without warning.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if common::query_count_while_starting(data.path(), "SELECT count(*) FROM resources") >= 1000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the import finished before it was killed; make it bigger"
    );
    let resources = exported(data.path());
    let observations = resources.get("Observation").cloned().unwrap_or_default();
    let mut per_bundle: HashMap<String, usize> = HashMap::new();
    for o in &observations {
        *per_bundle
            .entry(o["identifier"][0]["value"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(!per_bundle.is_empty(), "nothing was committed before the kill");
    assert!(per_bundle.len() < BUNDLES, "everything was committed before the kill");
    for (bundle, n) in &per_bundle {
        assert_eq!(*n, PER_BUNDLE, "bundle {bundle} is half-written");
    }
}

#[test]
fn reindex_rebuilds_a_lost_index() {
    let data = tempfile::tempdir().unwrap();
    let input = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..50)
        .map(|i| json!({"resourceType": "Patient", "id": format!("p{i}"), "gender": if i % 2 == 0 { "female" } else { "male" }}).to_string())
        .collect();
    write(input.path(), "patients.ndjson", &lines.join("\n"));
    assert!(sijill(data.path(), &["import", input.path().to_str().unwrap()])
        .status
        .success());
    // Lose the index behind the store's back.
    common::execute_sql(data.path(), "DELETE FROM search_index");
    let out = sijill(data.path(), &["reindex"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reindexed 50 resources"));
    let rows = common::query_count(data.path(), "SELECT count(*) FROM search_index");
    assert!(rows >= 50, "{rows}");
}

#[test]
fn reindex_runs_while_the_server_serves_and_writes() {
    let server = Server::start();
    let entries: Vec<Value> = (0..1200)
        .map(|i| {
            json!({"resource": {"resourceType": "Patient", "gender": if i % 2 == 0 { "female" } else { "male" }},
                        "request": {"method": "POST", "url": "Patient"}})
        })
        .collect();
    let r = server.post(
        "",
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
    );
    assert_eq!(r.status(), 200);
    // Lose the index of the women behind the server's back.
    common::execute_sql(server.dir.path(), "DELETE FROM search_index WHERE value = 'female'");
    assert_eq!(json(server.get("Patient?gender=female&_summary=count"))["total"], 0);
    // The server keeps taking writes while another process reindexes.
    let mut reindex = Command::new(binary())
        .arg("--data-dir")
        .arg(server.dir.path())
        .envs(common::store_env(server.dir.path()))
        .arg("reindex")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Creates of new patients, and updates that turn women into men (the reindex must not
    // bring back the index rows of the versions they replace).
    let women: Vec<String> = json(server.get("Patient?_count=40&_elements=gender"))["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["gender"] == "female")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    let mut written = 0;
    let mut changed = 0;
    while reindex.try_wait().unwrap().is_none() && written < 200 {
        let r = server.post("Patient", &json!({"resourceType": "Patient", "gender": "other"}));
        assert_eq!(r.status(), 201, "a write failed during the reindex");
        written += 1;
        if let Some(id) = women.get(changed) {
            let r = server.put(
                &format!("Patient/{id}"),
                &json!({"resourceType": "Patient", "id": id, "gender": "male"}),
            );
            assert_eq!(r.status(), 200, "an update failed during the reindex");
            changed += 1;
        }
    }
    assert!(reindex.wait().unwrap().success());
    assert_eq!(
        json(server.get("Patient?gender=female&_summary=count"))["total"],
        600 - changed,
        "{changed} women became men during the reindex"
    );
    assert_eq!(
        json(server.get("Patient?gender=other&_summary=count"))["total"],
        written
    );
}
