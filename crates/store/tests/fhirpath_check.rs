//! Our index extraction against an independent FHIRPath engine: the official `fhirpath` npm
//! package evaluated every R4 search parameter over the official examples
//! (`definitions/fhirpath-check`, whose output is the fixture read here). For every example
//! and parameter we index, both must agree on whether there is a value, and for tokens,
//! references and uris on which values.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use serde_json::Value;
use sijill_fhir::definitions::{self, SearchParamType};
use sijill_store::index;

/// Where our extraction deliberately differs from the plain FHIRPath result.
///  - References to contained resources (`#id`) and to `urn:` ids are not indexed: stored
///    resources never hold `urn:` references (transactions rewrite them), and a contained
///    resource is searched through its container.
///  - Reference parameters restricted by `where(resolve() is T)` do not index absolute URLs
///    (we cannot know the type of another server's resource).
fn expected_reference(value: &str, restricted: bool) -> Option<String> {
    if value.starts_with('#') || value.starts_with("urn:") {
        return None;
    }
    if value.contains("://") {
        return (!restricted).then(|| value.to_string());
    }
    let value = value.split("/_history/").next().unwrap_or(value);
    let (before, id) = value.rsplit_once('/')?;
    let ty = before.rsplit('/').next().unwrap_or(before);
    definitions::is_resource_type(ty).then(|| format!("{ty}/{id}"))
}

/// (example, parameter) pairs where FHIRPath finds an element that holds no date: the
/// plain evaluation counts the element, the index rightly has nothing to search on.
const NO_DATE_IN_ELEMENT: &[(&str, &str, &str)] = &[
    (
        "CarePlan-example.json",
        "activity-date",
        "a Timing with neither events nor bounds",
    ),
    (
        "CarePlan-f201.json",
        "activity-date",
        "scheduledString \"daily\" is text, not a date",
    ),
    (
        "Immunization-historical.json",
        "date",
        "occurrenceString \"January 2012\" is text, not a date",
    ),
    (
        "ServiceRequest-benchpress.json",
        "occurrence",
        "a Timing with neither events nor bounds",
    ),
    (
        "ServiceRequest-physiotherapy.json",
        "occurrence",
        "a Timing with neither events nor bounds",
    ),
];

fn kind_name(kind: SearchParamType) -> &'static str {
    match kind {
        SearchParamType::Token => "token",
        SearchParamType::Reference => "reference",
        SearchParamType::String => "string",
        SearchParamType::Uri => "uri",
        SearchParamType::Date => "date",
        SearchParamType::Number => "number",
        SearchParamType::Quantity => "quantity",
        _ => "other",
    }
}

#[test]
fn extraction_agrees_with_the_fhirpath_reference_implementation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let package = root.join("definitions/package");
    assert!(
        package.is_dir(),
        "{} is missing: run definitions/fetch.sh",
        package.display()
    );
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("crates/store/tests/fixtures/fhirpath-expected.json")).unwrap(),
    )
    .unwrap();
    let errors: HashSet<(String, String)> = fixture["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["file"].as_str().unwrap().to_string(),
                e["param"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let files = fixture["files"].as_object().unwrap();
    let mut compared = 0usize;
    let mut mismatches: Vec<String> = Vec::new();
    for (file, expected) in files {
        let resource: Value = serde_json::from_slice(&std::fs::read(package.join(file)).unwrap()).unwrap();
        let rt = resource["resourceType"].as_str().unwrap();
        let rows = index::extract(rt, &resource);
        for def in definitions::search_params_for(rt) {
            let kind = kind_name(def.kind);
            if kind == "other" || !def.base.contains(&rt) || errors.contains(&(file.clone(), def.code.to_string())) {
                continue;
            }
            let Some(param) = index::param(rt, def.code) else {
                continue;
            };
            // A path ending in `extension('url')` yields Extension elements; the index takes
            // their value (what a search on them means), which the plain result does not show.
            if def
                .expression
                .is_some_and(|e| e.trim_end().ends_with("')") && e.contains(".extension('"))
            {
                continue;
            }
            let restricted = def.expression.is_some_and(|e| e.contains("resolve()"));
            let ours: Vec<&index::IndexRow> = rows
                .iter()
                .filter(|r| r.param == param.code && !r.system.as_deref().is_some_and(|s| s.starts_with('#')))
                .collect();
            let theirs = expected.get(def.code);
            let their_values: Option<BTreeSet<String>> = theirs.and_then(|t| t.get("values")).map(|v| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(|s| match kind {
                        "reference" => expected_reference(s, restricted),
                        _ => Some(s.to_string()),
                    })
                    .collect()
            });
            let they_have = match (&their_values, theirs) {
                (Some(values), _) => !values.is_empty(),
                (None, Some(t)) => t["count"].as_u64().unwrap_or(0) > 0,
                (None, None) => false,
            };
            compared += 1;
            match kind {
                "token" | "reference" | "uri" => {
                    let our_values: BTreeSet<String> = ours
                        .iter()
                        .map(|r| match (kind, &r.system) {
                            ("reference", Some(ty)) => format!("{ty}/{}", r.value),
                            ("uri", _) => r.exact.clone().unwrap_or_else(|| r.value.clone()),
                            _ => r.value.clone(),
                        })
                        .collect();
                    let their_values = their_values.unwrap_or_default();
                    if our_values != their_values {
                        mismatches.push(format!(
                            "{file} {}: ours {our_values:?}, fhirpath {their_values:?}",
                            def.code
                        ));
                    }
                }
                _ => {
                    let no_date = NO_DATE_IN_ELEMENT.iter().any(|(f, p, _)| f == file && *p == def.code);
                    let ours_have = !ours.is_empty();
                    // Listed pairs may lack a date on our side, nothing else.
                    let excused = no_date && !ours_have;
                    if they_have != ours_have && !excused {
                        mismatches.push(format!(
                            "{file} {} ({kind}): ours {} rows, fhirpath {}",
                            def.code,
                            ours.len(),
                            theirs.map(|t| t.to_string()).unwrap_or("nothing".into())
                        ));
                    }
                }
            }
        }
    }
    let mut by_param: BTreeMap<String, usize> = BTreeMap::new();
    for m in &mismatches {
        *by_param
            .entry(m.split_whitespace().nth(1).unwrap_or("").to_string())
            .or_default() += 1;
    }
    assert!(compared > 5000, "only {compared} comparisons");
    assert!(
        mismatches.is_empty(),
        "{} of {compared} (example, parameter) pairs differ; by parameter: {by_param:?}\nfirst ones:\n{}",
        mismatches.len(),
        mismatches.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
}
