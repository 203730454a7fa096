//! Identity and authorization for Sijill.
//!
//! - [`keys`]: the server's signing keys (ES256), rotation, the published JWK Set.
//! - [`scopes`]: SMART App Launch v2 scopes.
//! - [`principal`]: roles, access-token claims, the verified actor.
//! - [`policy`]: the one access decision.
//! - [`clients`]: registered apps and institution systems.
//! - [`oidc`]: the national eID provider, as an OpenID Connect relying party.

pub mod clients;
pub mod keys;
pub mod oidc;
pub mod pkce;
pub mod policy;
pub mod principal;
pub mod scopes;

pub use policy::{
    allows_any_resource, can_be_about_a_patient, decide, holds_patient_data, Action, Category, Decision, Grant,
    Request, Subject,
};
pub use principal::{AccessClaims, Principal, Role, PLATFORM_ROLE_SYSTEM};
pub use scopes::{Permission, ResourceScope, ScopeContext, Scopes};

/// What can go wrong in identity and authorization.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The signing keys could not be read, written or used.
    #[error("signing keys: {0}")]
    Keys(String),
    /// A token was refused; the text says why (safe to show to the client).
    #[error("{0}")]
    BadToken(String),
    /// The client registry could not be read or written, or a registration is invalid.
    #[error("clients: {0}")]
    Clients(String),
    /// No (active) client has this id.
    #[error("clients: no client {0}")]
    UnknownClient(String),
    /// The identity provider could not be reached or answered wrongly.
    #[error("identity provider: {0}")]
    Provider(String),
}

/// The issuer of the tokens for a FHIR base URL: `http://host/fhir` → `http://host/auth`
/// (the server and `sijill token` must agree on it).
pub fn issuer_for(base_url: &str) -> String {
    let origin = base_url.trim_end_matches('/').trim_end_matches("/fhir");
    format!("{origin}/auth")
}

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, as an RFC 3339 instant.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A short, client-safe description of why a JWT was refused.
pub fn describe_jwt_error(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "the token has expired".into(),
        InvalidIssuer => "the token was issued by someone else".into(),
        InvalidAudience => "the token is meant for another server".into(),
        InvalidSignature => "the token's signature is not valid".into(),
        InvalidAlgorithm => "the token's algorithm is not accepted".into(),
        ImmatureSignature => "the token is not valid yet".into(),
        MissingRequiredClaim(c) => format!("the token lacks the '{c}' claim"),
        _ => "the token is not valid".into(),
    }
}

/// Why a JWT signed by a key of a published set was refused.
pub(crate) enum JwksRefusal {
    /// The set has no key the token could be signed with (none with its `kid`).
    NoKey,
    /// No key verified it: the last key's error (None when no key was usable).
    Invalid(Option<jsonwebtoken::errors::Error>),
}

/// Verifies `token` (whose `header` the caller decoded and checked) with the keys of `jwks`:
/// the one its `kid` names, or each in turn when it names none. Returns its claims.
pub(crate) fn decode_with_jwks<T: serde::de::DeserializeOwned>(
    token: &str,
    header: &jsonwebtoken::Header,
    jwks: &jsonwebtoken::jwk::JwkSet,
    validation: &jsonwebtoken::Validation,
) -> Result<T, JwksRefusal> {
    let candidates: Vec<_> = match &header.kid {
        Some(kid) => jwks.find(kid).into_iter().collect(),
        None => jwks.keys.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(JwksRefusal::NoKey);
    }
    let mut last = None;
    for jwk in candidates {
        let Ok(key) = jsonwebtoken::DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<T>(token, &key, validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => last = Some(e),
        }
    }
    Err(JwksRefusal::Invalid(last))
}

/// A random URL-safe secret of `bytes` random bytes (authorization codes, refresh tokens,
/// state, nonces).
pub fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Compares two secrets in constant time.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
