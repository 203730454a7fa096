//! Formats of the primitive values the server itself produces or checks outside full
//! validation: logical ids and instants.

use std::sync::LazyLock;

use regex::Regex;

static ID: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z0-9\-\.]{1,64}$").expect("static regex"));

/// True when `s` is a valid FHIR logical id (`[A-Za-z0-9\-\.]{1,64}`).
pub fn is_valid_id(s: &str) -> bool {
    ID.is_match(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_valid_id("abc-1.2"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id(&"x".repeat(65)));
    }
}
