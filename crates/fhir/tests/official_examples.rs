//! Validates every example instance of the official R4 package (not the definitional
//! resources) and checks that exactly the known-invalid ones are rejected
//! (`sijill_fhir::examples::KNOWN_INVALID_EXAMPLES`, shared with the server's tests).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use sijill_fhir::examples::{is_definition, KNOWN_INVALID_EXAMPLES};
use sijill_fhir::validate::validate_resource;

fn package_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../definitions/package");
    if !dir.is_dir() {
        panic!("run definitions/fetch.sh first");
    }
    dir
}

/// (file name, parsed JSON) of every example instance, sorted by file name.
fn examples() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(package_dir()).expect("read definitions/package") {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.starts_with('.') || name == "package.json" || !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let rt = value.get("resourceType").and_then(Value::as_str).unwrap_or_default();
        if is_definition(rt) {
            continue;
        }
        out.push((name, value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn official_examples_validate_except_known_invalid_ones() {
    let examples = examples();
    assert!(examples.len() > 700, "only {} examples found", examples.len());
    let mut rejected = BTreeMap::new();
    for (name, value) in &examples {
        let issues = validate_resource(value);
        if !issues.is_empty() {
            rejected.insert(name.as_str(), issues);
        }
    }
    let known: BTreeMap<&str, &str> = KNOWN_INVALID_EXAMPLES.iter().copied().collect();
    let mut report = String::new();
    for (name, issues) in &rejected {
        if !known.contains_key(name) {
            report.push_str(&format!("unexpectedly rejected {name}:\n"));
            for i in issues {
                report.push_str(&format!("    [{}] {}: {}\n", i.code, i.expression, i.diagnostics));
            }
        }
    }
    for (name, reason) in &known {
        if !rejected.contains_key(name) {
            report.push_str(&format!("listed as invalid ({reason}) but accepted: {name}\n"));
        }
    }
    println!(
        "validated {} official examples: {} accepted, {} known invalid",
        examples.len(),
        examples.len() - rejected.len(),
        rejected.len()
    );
    assert!(report.is_empty(), "{report}");
}
