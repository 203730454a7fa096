//! Walking and rewriting the references inside a resource.

use serde_json::Value;

/// Calls `f` on every `reference` string of every Reference in `value`, at any depth
/// (nested backbone elements, extensions, contained resources). When `f` returns a new
/// string, the reference is replaced by it.
pub fn rewrite_references(value: &mut Value, f: &mut dyn FnMut(&str) -> Option<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "reference" {
                    if let Value::String(s) = child {
                        if let Some(new) = f(s) {
                            *s = new;
                        }
                        continue;
                    }
                }
                rewrite_references(child, f);
            }
        }
        Value::Array(items) => {
            for item in items {
                rewrite_references(item, f);
            }
        }
        _ => {}
    }
}

/// Every `reference` string in `value`.
pub fn collect_references(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut copy = value.clone();
    rewrite_references(&mut copy, &mut |r| {
        out.push(r.to_string());
        None
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_nested_and_extension_references() {
        let mut v = json!({
            "resourceType": "Observation",
            "subject": {"reference": "urn:uuid:1"},
            "extension": [{"url": "x", "valueReference": {"reference": "urn:uuid:1"}}],
            "component": [{"extension": [{"url": "y", "valueReference": {"reference": "Patient/2"}}]}]
        });
        rewrite_references(&mut v, &mut |r| (r == "urn:uuid:1").then(|| "Patient/abc".to_string()));
        assert_eq!(v["subject"]["reference"], "Patient/abc");
        assert_eq!(v["extension"][0]["valueReference"]["reference"], "Patient/abc");
        assert_eq!(
            v["component"][0]["extension"][0]["valueReference"]["reference"],
            "Patient/2"
        );
        assert_eq!(collect_references(&v).len(), 3);
    }
}
