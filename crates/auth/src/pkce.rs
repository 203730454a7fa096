//! PKCE (RFC 7636): S256 code challenges, both for the apps Sijill serves and for its own
//! login at the eID provider.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The S256 challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` is well formed (43–128 unreserved characters) and matches `challenge`.
pub fn verify(verifier: &str, challenge_sent: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed && crate::secrets_equal(&challenge(verifier), challenge_sent)
}

/// A new verifier.
pub fn new_verifier() -> String {
    crate::random_token(48)
}

#[cfg(test)]
mod tests {
    #[test]
    fn s256_challenge() {
        // Expected value computed independently (Python hashlib + base64url).
        let verifier = "dBjftJeZ4CVP-mB92K9uhvxD1ojD8wWUZyIrVEuNPkM";
        assert_eq!(
            super::challenge(verifier),
            "rEaMtvgptfS4ITj186SNrfwZaOhpmxCzghaHKZNfF2Y"
        );
        assert!(super::verify(verifier, "rEaMtvgptfS4ITj186SNrfwZaOhpmxCzghaHKZNfF2Y"));
        assert!(!super::verify("short", &super::challenge("short")));
        assert!(!super::verify(verifier, "rEaMtvgptfS4ITj186SNrfwZaOhpmxCzghaHKZNfF2X"));
    }
}
