//! Who is acting: the role, the person or system, their patient context and organization,
//! and the scopes their token carries. Built from a verified access token.

use serde::{Deserialize, Serialize};

use crate::scopes::{ScopeContext, Scopes};

/// The roles of the platform. Each has its rules in [`crate::policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A citizen: their own record, and their dependents' (one patient per token).
    Citizen,
    /// A practitioner acting through a PractitionerRole at a facility.
    Practitioner,
    /// The administrator of one facility: its locations, services, schedules, devices and
    /// staff roles.
    FacilityAdmin,
    /// An insurer's system: its own members' coverage and claims.
    Insurer,
    /// A planner: aggregate figures only, never identified data.
    Planner,
    /// An auditor: the audit trail.
    Auditor,
    /// The platform's administrator (operations, migration, import).
    Admin,
}

impl Role {
    /// Every role, for tables and tests.
    pub const ALL: [Role; 7] = [
        Role::Citizen,
        Role::Practitioner,
        Role::FacilityAdmin,
        Role::Insurer,
        Role::Planner,
        Role::Auditor,
        Role::Admin,
    ];

    /// The role's name as written in tokens and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Citizen => "citizen",
            Role::Practitioner => "practitioner",
            Role::FacilityAdmin => "facility-admin",
            Role::Insurer => "insurer",
            Role::Planner => "planner",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// [`Role::parse`], with an error that lists the roles.
    pub fn parse_named(name: &str) -> Result<Role, String> {
        Role::parse(name).ok_or_else(|| {
            let names: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
            format!("unknown role '{name}': one of {}", names.join(", "))
        })
    }

    /// The widest scopes a token of this role may carry.
    pub fn allowed_scopes(self) -> Scopes {
        Scopes::parse(match self {
            Role::Citizen => "openid fhirUser launch/patient offline_access patient/*.rs",
            Role::Insurer => "system/*.cruds",
            Role::Admin => "openid fhirUser offline_access user/*.cruds system/*.cruds",
            _ => "openid fhirUser offline_access user/*.cruds",
        })
    }
}

/// The code system of platform roles on a PractitionerRole (`facility-admin`, `planner`,
/// `auditor`, `admin`); a PractitionerRole without one is a practitioner's.
pub const PLATFORM_ROLE_SYSTEM: &str = "https://sijill.health/fhir/CodeSystem/platform-role";

/// The claims of a Sijill access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// Issuer: the authorization server (`{origin}/auth`).
    pub iss: String,
    /// Audience: the FHIR base URL.
    pub aud: String,
    /// The person (eID subject) or client the token was issued to.
    pub sub: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
    /// Granted scopes, space separated.
    pub scope: String,
    /// The role.
    pub role: Role,
    /// The client (app or system) the token was issued to.
    pub client_id: String,
    /// The patient in context (citizens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// The user's own FHIR resource (`Patient/…`, `Practitioner/…`).
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// The organization the role acts for (facility or insurer), an Organization id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// Issued by the built-in development identity provider: never valid for real data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub development: bool,
}

impl AccessClaims {
    /// Claims of a token issued now for `lifetime_seconds`, with a fresh id; no patient,
    /// user or organization yet, not from the development identity provider.
    pub fn new(
        issuer: &str,
        audience: &str,
        role: Role,
        subject: &str,
        client_id: &str,
        scopes: &Scopes,
        lifetime_seconds: i64,
    ) -> AccessClaims {
        let now = crate::now_unix();
        AccessClaims {
            iss: issuer.to_string(),
            aud: audience.to_string(),
            sub: subject.to_string(),
            exp: now + lifetime_seconds,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: scopes.to_string(),
            role,
            client_id: client_id.to_string(),
            patient: None,
            fhir_user: None,
            organization: None,
            development: false,
        }
    }
}

/// A verified actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The role.
    pub role: Role,
    /// The person or client.
    pub subject: String,
    /// The user's own FHIR resource.
    pub fhir_user: Option<String>,
    /// The patient in context (citizens).
    pub patient: Option<String>,
    /// The organization the role acts for.
    pub organization: Option<String>,
    /// Granted scopes.
    pub scopes: Scopes,
    /// Which scope context applies to this actor.
    pub context: ScopeContext,
    /// The client.
    pub client_id: String,
}

impl Principal {
    /// The actor a verified token describes. A citizen token must name its patient.
    pub fn from_claims(claims: AccessClaims) -> Result<Principal, crate::AuthError> {
        let context = match claims.role {
            Role::Citizen => ScopeContext::Patient,
            Role::Insurer => ScopeContext::System,
            _ if claims.fhir_user.is_none() => ScopeContext::System,
            _ => ScopeContext::User,
        };
        if claims.role == Role::Citizen && claims.patient.is_none() {
            return Err(crate::AuthError::BadToken("a citizen token has no patient".into()));
        }
        if matches!(claims.role, Role::Practitioner | Role::FacilityAdmin | Role::Insurer)
            && claims.organization.is_none()
        {
            return Err(crate::AuthError::BadToken(format!(
                "a {} token names no organization",
                claims.role.name()
            )));
        }
        Ok(Principal {
            role: claims.role,
            subject: claims.sub,
            fhir_user: claims.fhir_user,
            patient: claims.patient,
            organization: claims.organization,
            scopes: Scopes::parse(&claims.scope),
            context,
            client_id: claims.client_id,
        })
    }
}
