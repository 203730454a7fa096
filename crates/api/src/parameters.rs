//! FHIR `Parameters`, the body of operations: reading the values a client sent, and
//! answering with a few named values.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::engine::{FhirResponse, Payload, RequestBody};
use crate::error::{FhirError, FhirResult};

/// The values of a Parameters body by name (whatever `value[x]` each has); no body is no
/// parameters, any other resource is refused.
pub fn read(body: &RequestBody) -> FhirResult<Vec<(String, Value)>> {
    let v = match body {
        RequestBody::Resource(v) => v,
        RequestBody::None => return Ok(Vec::new()),
        RequestBody::JsonPatch(_) => return Err(FhirError::bad_request("The operation takes a Parameters body")),
    };
    if v["resourceType"] != "Parameters" {
        return Err(FhirError::bad_request("The operation takes a Parameters body"));
    }
    Ok(v["parameter"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    let name = p["name"].as_str()?.to_string();
                    let value = p
                        .as_object()?
                        .iter()
                        .find(|(k, _)| k.starts_with("value"))
                        .map(|(_, v)| v.clone())?;
                    Some((name, value))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// A parameter as text: a string value, or an Identifier as `system|value`.
pub fn string(params: &[(String, Value)], name: &str) -> Option<String> {
    params.iter().find(|(n, _)| n == name).and_then(|(_, v)| match v {
        Value::String(s) => Some(s.clone()),
        _ => identifier(v),
    })
}

/// A parameter value as text: a string, a number, a Reference as its `reference`, an
/// Identifier as `system|value`.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => v["reference"].as_str().map(str::to_string).or_else(|| identifier(v)),
    }
}

/// An Identifier as `system|value` (or its value alone).
fn identifier(v: &Value) -> Option<String> {
    let value = v.get("value")?.as_str()?;
    Some(match v.get("system").and_then(Value::as_str) {
        Some(system) => format!("{system}|{value}"),
        None => value.to_string(),
    })
}

/// Whether a boolean parameter is present and true.
pub fn is_true(params: &[(String, Value)], name: &str) -> bool {
    params.iter().any(|(n, v)| n == name && *v == Value::Bool(true))
}

/// A Parameters response of named values (booleans, integers, else strings).
pub fn response(status: StatusCode, parts: &[(&str, Value)]) -> FhirResponse {
    let parameter: Vec<Value> = parts
        .iter()
        .map(|(name, v)| {
            let key = match v {
                Value::Bool(_) => "valueBoolean",
                Value::Number(_) => "valueInteger",
                _ => "valueString",
            };
            json!({"name": name, key: v})
        })
        .collect();
    FhirResponse::new(
        status,
        Payload::Json(json!({"resourceType": "Parameters", "parameter": parameter})),
    )
}
