//! Small helpers on resources as JSON: a stored version's body, and its extensions by url.

use serde_json::{json, Value};
use sijill_store::Stored;

/// The body of a stored version as JSON (Null if it cannot be read, which the store's own
/// writes never produce).
pub fn parsed(stored: &Stored) -> Value {
    serde_json::from_slice(&stored.body).unwrap_or_default()
}

/// The first extension of `resource` with this url.
pub fn extension<'v>(resource: &'v Value, url: &str) -> Option<&'v Value> {
    resource["extension"].as_array()?.iter().find(|e| e["url"] == url)
}

/// Appends an extension.
pub fn push_extension(resource: &mut Value, extension: Value) {
    match resource["extension"].as_array_mut() {
        Some(list) => list.push(extension),
        None => resource["extension"] = json!([extension]),
    }
}

/// Replaces the extensions with this url by `extension` (or removes them when None); a
/// resource left with none loses its `extension` element.
pub fn set_extension(resource: &mut Value, url: &str, extension: Option<Value>) {
    let mut list: Vec<Value> = resource["extension"]
        .as_array()
        .map(|e| e.iter().filter(|x| x["url"] != url).cloned().collect())
        .unwrap_or_default();
    list.extend(extension);
    match resource.as_object_mut() {
        Some(o) if list.is_empty() => {
            o.remove("extension");
        }
        Some(o) => {
            o.insert("extension".into(), Value::Array(list));
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_found_set_pushed_and_removed_by_url() {
        let mut r = json!({"resourceType": "Slot"});
        push_extension(&mut r, json!({"url": "a", "valueString": "1"}));
        set_extension(&mut r, "b", Some(json!({"url": "b", "valueString": "2"})));
        set_extension(&mut r, "a", Some(json!({"url": "a", "valueString": "3"})));
        assert_eq!(extension(&r, "a").unwrap()["valueString"], "3");
        assert_eq!(r["extension"].as_array().unwrap().len(), 2);
        set_extension(&mut r, "a", None);
        set_extension(&mut r, "b", None);
        assert!(r.get("extension").is_none(), "{r}");
    }
}
