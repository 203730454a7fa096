//! Every example instance of the official R4 package goes through the server: created,
//! read back equal apart from meta, and every transaction/batch example Bundle runs.

mod common;

use std::collections::BTreeSet;

use common::{json, package_dir, Server};
use serde_json::Value;
use sijill_fhir::examples::{is_definition, KNOWN_INVALID_EXAMPLES};

/// Removes what the server sets (id, meta.versionId, meta.lastUpdated).
fn without_server_meta(mut v: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        map.remove("id");
        if let Some(Value::Object(meta)) = map.get_mut("meta") {
            meta.remove("versionId");
            meta.remove("lastUpdated");
            if meta.is_empty() {
                map.remove("meta");
            }
        }
    }
    v
}

fn examples() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(package_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".json") || name == "package.json" || name.starts_with('.') {
            continue;
        }
        let value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let rt = value["resourceType"].as_str().unwrap_or("").to_string();
        if is_definition(&rt) {
            continue;
        }
        out.push((name, value));
    }
    out
}

#[test]
fn every_example_is_accepted_and_read_back_unchanged() {
    // One example Bundle is 35 MB, above the default body limit.
    let s = Server::start_with(&["--max-body-bytes", "67108864"]);
    let examples = examples();
    assert!(examples.len() > 700, "only {} examples", examples.len());
    let known: BTreeSet<&str> = KNOWN_INVALID_EXAMPLES.iter().map(|(f, _)| *f).collect();
    let mut rejected = BTreeSet::new();
    let mut accepted = 0;
    let mut audit_events = 0;
    for (name, example) in &examples {
        let rt = example["resourceType"].as_str().unwrap();
        let r = s.post(rt, example);
        if rt == "AuditEvent" {
            // The audit trail is written by the server only: a client's AuditEvent is refused.
            assert_eq!(r.status(), 405, "{name}");
            audit_events += 1;
            continue;
        }
        if r.status() != 201 {
            let status = r.status();
            let body = r.text().unwrap();
            if !known.contains(name.as_str()) {
                eprintln!("{name}: {status} {body}");
            }
            rejected.insert(name.clone());
            continue;
        }
        accepted += 1;
        let created = json(r);
        let read = json(s.get(&format!("{rt}/{}", created["id"].as_str().unwrap())));
        assert_eq!(
            without_server_meta(read),
            without_server_meta(example.clone()),
            "{name} changed"
        );
    }
    let known_owned: BTreeSet<String> = known.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        rejected, known_owned,
        "rejected examples differ from the known-invalid list"
    );
    assert!(audit_events > 5, "{audit_events} AuditEvent examples");
    eprintln!("{accepted} examples accepted, {} known invalid", rejected.len());
}

#[test]
fn transaction_and_batch_examples_run() {
    let s = Server::start();
    let bundle =
        |name: &str| -> Value { serde_json::from_slice(&std::fs::read(package_dir().join(name)).unwrap()).unwrap() };
    // Transactions whose entries stand on their own succeed entirely.
    for name in ["Bundle-hla-1.json", "Bundle-ussg-fht.json", "Bundle-xds.json"] {
        let r = s.post("", &bundle(name));
        assert_eq!(r.status(), 200, "{name}");
        let response = json(r);
        for e in response["entry"].as_array().unwrap() {
            let status = e["response"]["status"].as_str().unwrap();
            assert!(status.starts_with("20"), "{name}: {status}");
        }
    }
    // This one calls the $lookup operation, which a FHIR store does not offer: the
    // transaction is refused as a whole, naming the entry, and nothing is written.
    let before = json(s.get("_history?_count=0"))["total"].clone();
    let r = s.post("", &bundle("Bundle-bundle-transaction.json"));
    assert!(r.status().is_client_error(), "{}", r.status());
    let outcome = json(r);
    assert!(outcome.to_string().contains("Bundle.entry[7]"), "{outcome}");
    assert_eq!(json(s.get("_history?_count=0"))["total"], before);
    // Batches answer every entry.
    for name in [
        "Bundle-bundle-request-medsallergies.json",
        "Bundle-bundle-request-simplesummary.json",
    ] {
        let b = bundle(name);
        let r = s.post("", &b);
        assert_eq!(r.status(), 200, "{name}");
        let response = json(r);
        assert_eq!(
            response["entry"].as_array().unwrap().len(),
            b["entry"].as_array().unwrap().len()
        );
    }
}
