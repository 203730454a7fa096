//! `sijill token`, `sijill client` and `sijill keys`: the operator's identity tools on the
//! server machine.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sijill_auth::clients::{ClientKind, Registration, Registry};
use sijill_auth::keys::KeyRing;
use sijill_auth::{AccessClaims, Role, Scopes};

/// Options of `sijill token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The role: citizen, practitioner, facility-admin, insurer, planner, auditor, admin.
    #[arg(long)]
    role: String,
    /// The patient in context (citizen tokens).
    #[arg(long)]
    patient: Option<String>,
    /// The practitioner acting (staff tokens).
    #[arg(long)]
    practitioner: Option<String>,
    /// The organization the role acts for (practitioner, facility-admin, insurer).
    #[arg(long)]
    organization: Option<String>,
    /// Scopes (default: the widest the role may hold).
    #[arg(long)]
    scope: Option<String>,
    /// Lifetime in minutes.
    #[arg(long, default_value_t = 60)]
    minutes: i64,
    /// The FHIR base URL of the server the token is for (its audience).
    #[arg(long, env = "SIJILL_BASE_URL", default_value = "http://127.0.0.1:8080/fhir")]
    base_url: String,
}

/// `sijill client …`.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Register an app (users sign in) or an institution system (signed JWT).
    Add(ClientAddArgs),
    /// List registered clients.
    List,
    /// Revoke a client: no new tokens.
    Revoke {
        /// The client id.
        client_id: String,
    },
    /// Replace a system client's public keys (key rotation).
    Keys {
        /// The client id.
        client_id: String,
        /// A JWK Set file with the new public keys.
        #[arg(long)]
        jwks: std::path::PathBuf,
    },
}

/// Options of `sijill client add`.
#[derive(Args, Debug)]
pub struct ClientAddArgs {
    /// A name people recognise.
    #[arg(long)]
    name: String,
    /// app or system.
    #[arg(long)]
    kind: String,
    /// The widest scopes the client may be granted.
    #[arg(long)]
    scope: String,
    /// Redirect URIs (apps), repeatable.
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// The role of a system's tokens.
    #[arg(long)]
    role: Option<String>,
    /// The organization a system acts for.
    #[arg(long)]
    organization: Option<String>,
    /// A JWK Set file with a system's public keys.
    #[arg(long)]
    jwks: Option<std::path::PathBuf>,
}

/// `sijill keys …`.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Add a new signing key; the previous one keeps verifying until its tokens expire.
    Rotate,
    /// Print the public keys (JWK Set).
    Show,
}

/// Appends one event to the operator log.
fn operator_log(data_dir: &Path, event: serde_json::Value) -> Result<(), String> {
    sijill_auth::clients::log_operator_event(data_dir, event).map_err(|e| e.to_string())
}

/// Mints an access token from the command line (the operator is trusted: this is the
/// server machine).
pub fn token(data_dir: &Path, args: TokenArgs) -> Result<ExitCode, String> {
    let role = Role::parse_named(&args.role)?;
    if role == Role::Citizen && args.patient.is_none() {
        return Err("a citizen token needs --patient".into());
    }
    if matches!(role, Role::Practitioner | Role::FacilityAdmin | Role::Insurer) && args.organization.is_none() {
        return Err(format!("a {} token needs --organization", role.name()));
    }
    if !(1..=24 * 60).contains(&args.minutes) {
        return Err("--minutes must be between 1 and 1440".into());
    }
    let keys = KeyRing::open(data_dir).map_err(|e| e.to_string())?;
    let allowed = role.allowed_scopes();
    let scopes = match &args.scope {
        Some(s) => Scopes::parse(s).intersect(&allowed),
        None => allowed,
    };
    let fhir_user = match (&args.patient, &args.practitioner) {
        (_, Some(p)) => Some(format!("Practitioner/{p}")),
        (Some(p), None) if role == Role::Citizen => Some(format!("Patient/{p}")),
        _ if role == Role::Insurer => None,
        _ => Some("Practitioner/operator".to_string()),
    };
    let base = args.base_url.trim_end_matches('/');
    let operator = format!(
        "operator:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let claims = AccessClaims {
        patient: args.patient.clone(),
        fhir_user,
        organization: args.organization.clone(),
        ..AccessClaims::new(
            &sijill_auth::issuer_for(base),
            base,
            role,
            &operator,
            "sijill-cli",
            &scopes,
            args.minutes * 60,
        )
    };
    let token = keys.sign(&claims).map_err(|e| e.to_string())?;
    operator_log(
        data_dir,
        serde_json::json!({"event": "token", "by": claims.sub, "role": role.name(),
            "patient": claims.patient, "organization": claims.organization, "jti": claims.jti, "exp": claims.exp}),
    )?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// `sijill client …`.
pub fn client(data_dir: &Path, command: ClientCommand) -> Result<ExitCode, String> {
    let registry = Registry::open(data_dir);
    match command {
        ClientCommand::Add(a) => {
            let jwks = match &a.jwks {
                None => None,
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
                    Some(serde_json::from_str(&text).map_err(|e| format!("{}: not a JWK Set: {e}", path.display()))?)
                }
            };
            let registration = Registration {
                name: a.name,
                kind: a.kind,
                scope: a.scope,
                redirect_uris: a.redirect_uris,
                role: a.role,
                organization: a.organization,
                jwks,
            };
            let client = registration.register(&registry).map_err(|e| e.to_string())?;
            operator_log(
                data_dir,
                serde_json::json!({"event": "client-add", "client_id": client.client_id, "name": client.name}),
            )?;
            println!("{}", client.client_id);
        }
        ClientCommand::List => {
            for c in registry.list().map_err(|e| e.to_string())? {
                let kind = match &c.kind {
                    ClientKind::App { .. } => "app".to_string(),
                    ClientKind::System { role, .. } => format!("system ({})", role.name()),
                };
                let state = if c.revoked { "revoked" } else { "active" };
                println!("{}\t{}\t{kind}\t{state}\t{}", c.client_id, c.name, c.scope);
            }
        }
        ClientCommand::Revoke { client_id } => {
            registry.revoke(&client_id).map_err(|e| e.to_string())?;
            operator_log(
                data_dir,
                serde_json::json!({"event": "client-revoke", "client_id": client_id}),
            )?;
            println!("revoked {client_id}");
        }
        ClientCommand::Keys { client_id, jwks } => {
            let text = std::fs::read_to_string(&jwks).map_err(|e| format!("{}: {e}", jwks.display()))?;
            let set = serde_json::from_str(&text).map_err(|e| format!("{}: not a JWK Set: {e}", jwks.display()))?;
            registry.set_keys(&client_id, set).map_err(|e| e.to_string())?;
            operator_log(
                data_dir,
                serde_json::json!({"event": "client-keys", "client_id": client_id}),
            )?;
            println!("new keys for {client_id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sijill keys …`.
pub fn keys(data_dir: &Path, command: KeysCommand) -> Result<ExitCode, String> {
    let keys = KeyRing::open(data_dir).map_err(|e| e.to_string())?;
    match command {
        KeysCommand::Rotate => {
            let kid = keys.rotate().map_err(|e| e.to_string())?;
            operator_log(data_dir, serde_json::json!({"event": "keys-rotate", "kid": kid}))?;
            println!("{kid}");
        }
        KeysCommand::Show => println!(
            "{}",
            serde_json::to_string_pretty(&keys.jwks()).map_err(|e| e.to_string())?
        ),
    }
    Ok(ExitCode::SUCCESS)
}
