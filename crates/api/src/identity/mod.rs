//! Identity at the HTTP edge: the bearer-token check in front of every FHIR request, and
//! Sijill's own authorization server (SMART App Launch and Backend Services) under `/auth`.
//!
//! The decisions themselves are in `sijill_auth`; this module only verifies who is calling
//! and issues tokens.

pub mod admin;
pub mod eid;
pub mod people;
pub mod refusals;
pub mod smart;

use axum::http::{header, HeaderMap, StatusCode};
use sijill_auth::clients::Registry;
use sijill_auth::keys::KeyRing;
use sijill_auth::{AccessClaims, Principal, Role, Scopes};

use crate::error::FhirError;

/// How long an access token lives, by default.
pub const ACCESS_TOKEN_SECONDS: i64 = 15 * 60;

/// Everything the edge needs to check and issue tokens.
pub struct Identity {
    /// The server's signing keys.
    pub keys: KeyRing,
    /// Registered apps and systems.
    pub clients: Registry,
    /// This authorization server's issuer (`{origin}/auth`).
    pub issuer: String,
    /// The audience of its tokens: the FHIR base URL.
    pub audience: String,
    /// The national eID provider, or None for the development identity provider.
    pub eid: Option<eid::EidProvider>,
    /// Short-lived state of logins, codes and refresh tokens.
    pub sessions: smart::Sessions,
    /// The identifier system of national identifiers (from the country profile).
    pub national_id_system: String,
    /// The data directory (for the operator log).
    pub data_dir: std::path::PathBuf,
    /// Tokens whose signature was already checked (a signature check costs more than the
    /// read it guards); bounded, and expiry and revocation are still checked every time.
    verified: parking_lot::Mutex<std::collections::HashMap<String, Verified>>,
}

/// A token whose signature was checked: what every later request still checks (expiry,
/// revocation, where it was issued) and the actor it describes.
#[derive(Clone)]
struct Verified {
    exp: i64,
    jti: String,
    development: bool,
    principal: Principal,
}

/// Most verified tokens remembered.
const VERIFIED_CACHE: usize = 10_000;

impl Identity {
    /// The identity layer for a server whose FHIR base is `base_url`.
    pub fn new(
        data_dir: &std::path::Path,
        base_url: &str,
        national_id_system: &str,
        eid: Option<eid::EidProvider>,
    ) -> Result<Identity, String> {
        Ok(Identity {
            keys: KeyRing::open(data_dir).map_err(|e| e.to_string())?,
            clients: Registry::open(data_dir),
            issuer: sijill_auth::issuer_for(base_url),
            audience: base_url.trim_end_matches('/').to_string(),
            eid,
            sessions: smart::Sessions::default(),
            national_id_system: national_id_system.to_string(),
            data_dir: data_dir.to_path_buf(),
            verified: Default::default(),
        })
    }

    /// A client by id: a registered one, or the built-in citizen portal
    /// ([`crate::portal::client`]) served by this server.
    pub fn client(&self, client_id: &str) -> Result<Option<sijill_auth::clients::Client>, sijill_auth::AuthError> {
        if client_id == crate::portal::CLIENT_ID {
            return Ok(Some(crate::portal::client(&self.audience)));
        }
        self.clients.get(client_id)
    }

    /// Whether logins go to the built-in development identity provider.
    pub fn development(&self) -> bool {
        self.eid.is_none()
    }

    /// The actor behind a request's `Authorization: Bearer …` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, FhirError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("This request needs an access token (Authorization: Bearer ...)"))?;
        let text = value
            .to_str()
            .map_err(|_| unauthorized("The Authorization header is not readable"))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("The Authorization header must carry a Bearer token"))?;
        let cached = self.verified.lock().get(token).cloned();
        let verified = match cached {
            Some(v) => v,
            None => {
                let claims: AccessClaims = self
                    .keys
                    .verify(token, &self.issuer, &self.audience)
                    .map_err(|e| unauthorized(&e.to_string()))?;
                let v = Verified {
                    exp: claims.exp,
                    jti: claims.jti.clone(),
                    development: claims.development,
                    principal: Principal::from_claims(claims).map_err(|e| unauthorized(&e.to_string()))?,
                };
                let mut verified = self.verified.lock();
                if verified.len() >= VERIFIED_CACHE {
                    verified.clear();
                }
                verified.insert(token.to_string(), v.clone());
                v
            }
        };
        if verified.exp <= sijill_auth::now_unix() {
            return Err(unauthorized("the token has expired"));
        }
        if self.sessions.is_revoked(&verified.jti) {
            return Err(unauthorized("the token was revoked"));
        }
        if verified.development && !self.development() {
            return Err(unauthorized(
                "a development token is not valid on a server with a national eID provider",
            ));
        }
        Ok(verified.principal)
    }

    /// The claims of a new access token from this server for an actor (issuer, audience,
    /// lifetime and the development mark filled in).
    pub fn claims(&self, role: Role, subject: &str, client_id: &str, scopes: &Scopes) -> AccessClaims {
        AccessClaims {
            development: self.development(),
            ..AccessClaims::new(
                &self.issuer,
                &self.audience,
                role,
                subject,
                client_id,
                scopes,
                ACCESS_TOKEN_SECONDS,
            )
        }
    }
}

/// A 401 with `WWW-Authenticate` (added by the HTTP layer) and an OperationOutcome.
pub fn unauthorized(why: &str) -> FhirError {
    FhirError::new(StatusCode::UNAUTHORIZED, "login", why.to_string())
}
