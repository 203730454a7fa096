//! Registered clients: SMART apps (portals, mobile apps) that send users through the
//! authorization code flow, and institution systems (hospital information systems, labs,
//! insurers) that authenticate with a signed JWT (SMART Backend Services).
//!
//! The registry is a JSON file in the data directory, written by `sijill client …` and the
//! administrator's API; a server reads it again when it changes.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

use crate::principal::Role;
use crate::scopes::Scopes;
use crate::AuthError;

/// Algorithms a system client may sign its assertion with (SMART Backend Services).
pub const ASSERTION_ALGORITHMS: [Algorithm; 2] = [Algorithm::ES384, Algorithm::RS384];

/// Longest lifetime of a client assertion, in seconds.
const MAX_ASSERTION_SECONDS: i64 = 300;

/// What kind of client it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ClientKind {
    /// An app users sign in to (authorization code + PKCE, public client).
    App {
        /// The exact redirect URIs it may use.
        redirect_uris: Vec<String>,
    },
    /// An institution's system (client credentials with `private_key_jwt`).
    System {
        /// The role its tokens carry (`insurer`, `practitioner` for a facility system, …).
        role: Role,
        /// The organization it acts for.
        organization: Option<String>,
        /// Its public keys.
        jwks: JwkSet,
    },
}

/// One registered client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Client {
    /// The client id.
    pub client_id: String,
    /// A name people recognise (shown on the citizen's access log).
    pub name: String,
    /// The widest scopes it may be granted.
    pub scope: String,
    /// App or system.
    #[serde(flatten)]
    pub kind: ClientKind,
    /// When it was registered.
    pub created: String,
    /// Revoked clients get no new tokens.
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    clients: Vec<Client>,
}

/// The client registry of a data directory.
pub struct Registry {
    path: PathBuf,
    state: parking_lot::Mutex<(Option<std::time::SystemTime>, Vec<Client>)>,
}

fn registry_file(data_dir: &Path) -> PathBuf {
    data_dir.join("auth").join("clients.json")
}

/// The claims of a client assertion.
#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    jti: String,
}

impl Registry {
    /// The registry of `data_dir` (empty until a client is added).
    pub fn open(data_dir: &Path) -> Registry {
        Registry {
            path: registry_file(data_dir),
            state: parking_lot::Mutex::new((None, Vec::new())),
        }
    }

    /// Every client, reading the file again if it changed.
    pub fn list(&self) -> Result<Vec<Client>, AuthError> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let mut state = self.state.lock();
        if modified.is_some() && state.0 != modified {
            let text = std::fs::read_to_string(&self.path)
                .map_err(|e| AuthError::Clients(format!("{}: {e}", self.path.display())))?;
            let file: RegistryFile =
                serde_json::from_str(&text).map_err(|e| AuthError::Clients(format!("{}: {e}", self.path.display())))?;
            *state = (modified, file.clients);
        }
        Ok(state.1.clone())
    }

    /// One active (not revoked) client.
    pub fn get(&self, client_id: &str) -> Result<Option<Client>, AuthError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|c| c.client_id == client_id && !c.revoked))
    }

    fn save(&self, clients: Vec<Client>) -> Result<(), AuthError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| AuthError::Clients(format!("{}: {e}", dir.display())))?;
        let text =
            serde_json::to_string_pretty(&RegistryFile { clients }).map_err(|e| AuthError::Clients(e.to_string()))?;
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .map_err(|e| AuthError::Clients(format!("{}: {e}", self.path.display())))?;
        self.state.lock().0 = None;
        Ok(())
    }

    /// Registers a client; returns it with its new id.
    pub fn add(&self, name: &str, scope: &str, kind: ClientKind) -> Result<Client, AuthError> {
        if name.trim().is_empty() {
            return Err(AuthError::Clients("a client needs a name".into()));
        }
        let asked = Scopes::parse(scope);
        match &kind {
            ClientKind::App { redirect_uris } => {
                if redirect_uris.is_empty() {
                    return Err(AuthError::Clients("an app needs at least one redirect URI".into()));
                }
                if let Some(bad) = redirect_uris.iter().find(|u| {
                    !(u.starts_with("https://")
                        || u.starts_with("http://127.0.0.1")
                        || u.starts_with("http://localhost"))
                }) {
                    return Err(AuthError::Clients(format!(
                        "redirect URI {bad} must be https (or http on loopback)"
                    )));
                }
            }
            ClientKind::System {
                role,
                organization,
                jwks,
            } => {
                if jwks.keys.is_empty() {
                    return Err(AuthError::Clients(
                        "a system client needs at least one public key".into(),
                    ));
                }
                if matches!(role, Role::Citizen) {
                    return Err(AuthError::Clients("a system client cannot act as a citizen".into()));
                }
                if matches!(role, Role::Insurer | Role::Practitioner | Role::FacilityAdmin) && organization.is_none() {
                    return Err(AuthError::Clients(format!(
                        "a {} system needs --organization",
                        role.name()
                    )));
                }
                if asked.resources.iter().any(|s| s.context != crate::ScopeContext::System) {
                    return Err(AuthError::Clients("a system client takes system/ scopes only".into()));
                }
            }
        }
        let client = Client {
            client_id: uuid::Uuid::new_v4().to_string(),
            name: name.trim().to_string(),
            scope: asked.to_string(),
            kind,
            created: crate::now_rfc3339(),
            revoked: false,
        };
        let mut clients = self.list()?;
        clients.push(client.clone());
        self.save(clients)?;
        Ok(client)
    }

    /// Revokes a client: it gets no new tokens from now on.
    pub fn revoke(&self, client_id: &str) -> Result<(), AuthError> {
        let mut clients = self.list()?;
        let client = clients
            .iter_mut()
            .find(|c| c.client_id == client_id)
            .ok_or_else(|| AuthError::UnknownClient(client_id.to_string()))?;
        client.revoked = true;
        self.save(clients)
    }

    /// Replaces a system client's public keys (key rotation).
    pub fn set_keys(&self, client_id: &str, new_keys: JwkSet) -> Result<(), AuthError> {
        if new_keys.keys.is_empty() {
            return Err(AuthError::Clients("the new key set is empty".into()));
        }
        let mut clients = self.list()?;
        let client = clients
            .iter_mut()
            .find(|c| c.client_id == client_id && !c.revoked)
            .ok_or_else(|| AuthError::UnknownClient(client_id.to_string()))?;
        match &mut client.kind {
            ClientKind::System { jwks, .. } => *jwks = new_keys,
            ClientKind::App { .. } => return Err(AuthError::Clients("an app has no keys".into())),
        }
        self.save(clients)
    }
}

/// A request to register a client: the body of `POST /auth/clients`, and what
/// `sijill client add` builds from its options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// A name people recognise.
    pub name: String,
    /// `app` or `system`.
    pub kind: String,
    /// The widest scopes the client may be granted.
    pub scope: String,
    /// An app's redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The role of a system's tokens.
    pub role: Option<String>,
    /// The organization a system acts for.
    pub organization: Option<String>,
    /// A system's public keys.
    pub jwks: Option<JwkSet>,
}

impl Registration {
    /// Checks the request and registers the client.
    pub fn register(self, registry: &Registry) -> Result<Client, AuthError> {
        let bad = |m: String| AuthError::Clients(m);
        let kind = match self.kind.as_str() {
            "app" => ClientKind::App {
                redirect_uris: self.redirect_uris,
            },
            "system" => {
                let role_name = self.role.ok_or_else(|| bad("a system client needs a role".into()))?;
                let role = Role::parse_named(&role_name).map_err(bad)?;
                ClientKind::System {
                    role,
                    organization: self.organization,
                    jwks: self
                        .jwks
                        .ok_or_else(|| bad("a system client needs its public keys (jwks)".into()))?,
                }
            }
            other => return Err(bad(format!("kind must be app or system, not '{other}'"))),
        };
        registry.add(&self.name, &self.scope, kind)
    }
}

/// Appends one event to the operator log (`auth/operator.log` in the data directory): who
/// minted tokens or changed clients and keys, and when. Both `sijill token|client|keys` and
/// the administrator's API write it.
pub fn log_operator_event(data_dir: &Path, mut event: serde_json::Value) -> Result<(), AuthError> {
    use std::io::Write as _;
    if let Some(map) = event.as_object_mut() {
        map.insert("at".into(), crate::now_rfc3339().into());
    }
    let path = data_dir.join("auth").join("operator.log");
    let fail = |e: std::io::Error| AuthError::Clients(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(data_dir.join("auth")).map_err(fail)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(fail)?;
    writeln!(f, "{event}").map_err(fail)
}

/// Checks a system client's assertion (`private_key_jwt`): signed by one of its keys with
/// ES384 or RS384, `iss` = `sub` = its id, `aud` = the token endpoint, at most five minutes
/// of life. Returns the client and the assertion's `jti` and expiry (the caller refuses a
/// `jti` seen before).
pub fn verify_assertion(
    registry: &Registry,
    assertion: &str,
    token_endpoint: &str,
) -> Result<(Client, String, i64), AuthError> {
    let bad = |m: &str| AuthError::BadToken(m.to_string());
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| bad("the client assertion is not a JWT"))?;
    if !ASSERTION_ALGORITHMS.contains(&header.alg) {
        return Err(bad("the client assertion must be signed with ES384 or RS384"));
    }
    let unverified: AssertionClaims = jsonwebtoken::dangerous::insecure_decode_claims::<AssertionClaims>(assertion)
        .map_err(|_| bad("the client assertion lacks iss, sub, exp or jti"))?;
    let client = registry
        .get(&unverified.iss)?
        .ok_or_else(|| bad("unknown or revoked client"))?;
    let ClientKind::System { jwks, .. } = &client.kind else {
        return Err(bad("this client is not a system client"));
    };
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[token_endpoint]);
    validation.set_issuer(&[client.client_id.as_str()]);
    validation.sub = Some(client.client_id.clone());
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = 30;
    if let Ok(claims) = crate::decode_with_jwks::<AssertionClaims>(assertion, &header, jwks, &validation) {
        if claims.iss != claims.sub {
            return Err(bad("the client assertion's iss and sub differ"));
        }
        if claims.exp - crate::now_unix() > MAX_ASSERTION_SECONDS {
            return Err(bad("the client assertion lives longer than five minutes"));
        }
        return Ok((client.clone(), claims.jti, claims.exp));
    }
    Err(bad("the client assertion is not signed by a registered key of the client, or is expired or meant for another server"))
}
