//! Turning request bytes into JSON safely: size, encoding and nesting limits are checked
//! before the parser runs, so no input can exhaust memory or the stack.

use axum::http::StatusCode;
use serde_json::Value;

use crate::error::{FhirError, FhirResult};

/// The deepest nesting of objects and arrays in `bytes` (strings are skipped).
pub fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parses a JSON body: UTF-8, nesting at most `max_depth`, a JSON object.
pub fn parse_json(bytes: &[u8], max_depth: usize) -> FhirResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(FhirError::bad_request("The request body is empty"));
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            "structure",
            format!("The body is not valid UTF-8 (at byte {})", e.valid_up_to()),
        ));
    }
    if nesting_depth(bytes) > max_depth {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            "too-costly",
            format!("The JSON is nested deeper than {max_depth} levels"),
        ));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        FhirError::new(
            StatusCode::BAD_REQUEST,
            "structure",
            format!("The body is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            "structure",
            "The body must be a JSON object",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(br#"{"a":[{"b":"[[[{{{\"]]"}]}"#), 3);
        assert_eq!(nesting_depth(b"[[[[]]]]"), 4);
    }

    #[test]
    fn rejects_bad_bodies() {
        assert!(parse_json(b"", 10).is_err());
        assert!(parse_json(b"\xff\xfe", 10).is_err());
        assert!(parse_json(b"[1]", 10).is_err());
        assert!(parse_json(b"{\"a\":", 10).is_err());
        assert!(parse_json(&[b'['; 50], 10).is_err());
        assert!(parse_json(br#"{"resourceType":"Patient"}"#, 10).is_ok());
    }
}
