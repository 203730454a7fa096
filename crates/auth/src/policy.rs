//! The one access decision: may this actor do this to that?
//!
//! [`decide`] is the intersection of three things: the token's scopes, the role's rules,
//! and — for a patient's record read by a practitioner — the patient's grant. Every
//! interaction of the engine asks it (through the engine's guard); nothing else in the
//! code base grants access.

use crate::principal::{Principal, Role};
use crate::scopes::Permission;

/// What is being done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read or vread one resource (or an instance's history).
    Read,
    /// Search a type (or compartment).
    Search,
    /// A type-level or system-level history.
    History,
    /// Create.
    Create,
    /// Update or patch.
    Update,
    /// Delete.
    Delete,
}

impl Action {
    /// Every action, for tables and tests.
    pub const ALL: [Action; 6] = [
        Action::Read,
        Action::Search,
        Action::History,
        Action::Create,
        Action::Update,
        Action::Delete,
    ];

    /// The SMART permission the action needs.
    pub fn permission(self) -> Permission {
        match self {
            Action::Read => Permission::Read,
            Action::Search | Action::History => Permission::Search,
            Action::Create => Permission::Create,
            Action::Update => Permission::Update,
            Action::Delete => Permission::Delete,
        }
    }

    fn writes(self) -> bool {
        matches!(self, Action::Create | Action::Update | Action::Delete)
    }
}

/// What kind of data a resource type holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// A patient's record (the Patient and its compartment).
    PatientRecord,
    /// Coverage, claims and payments.
    Financial,
    /// The facility directory: organizations, locations, services, staff, schedules, devices.
    Directory,
    /// Shared definitions and terminology: readable by all.
    Definitions,
    /// The audit trail.
    Audit,
    /// Anything else (tasks, lists, groups not about one patient).
    Other,
}

impl Category {
    /// Every category, for tables and tests.
    pub const ALL: [Category; 6] = [
        Category::PatientRecord,
        Category::Financial,
        Category::Directory,
        Category::Definitions,
        Category::Audit,
        Category::Other,
    ];
}

const FINANCIAL: &[&str] = &[
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "Claim",
    "ClaimResponse",
    "ExplanationOfBenefit",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "Account",
    "Invoice",
    "PaymentNotice",
    "PaymentReconciliation",
    "ChargeItem",
];

const DIRECTORY: &[&str] = &[
    "Organization",
    "OrganizationAffiliation",
    "Location",
    "HealthcareService",
    "Endpoint",
    "Practitioner",
    "PractitionerRole",
    "Schedule",
    "Slot",
    "Device",
    "DeviceDefinition",
    "InsurancePlan",
    "Medication",
    "Substance",
];

const DEFINITIONS: &[&str] = &[
    "CapabilityStatement",
    "CodeSystem",
    "CompartmentDefinition",
    "ConceptMap",
    "GraphDefinition",
    "ImplementationGuide",
    "Library",
    "Measure",
    "NamingSystem",
    "OperationDefinition",
    "PlanDefinition",
    "ActivityDefinition",
    "Questionnaire",
    "SearchParameter",
    "StructureDefinition",
    "StructureMap",
    "TerminologyCapabilities",
    "ValueSet",
    "ObservationDefinition",
    "SpecimenDefinition",
    "EventDefinition",
    "MessageDefinition",
    "ChargeItemDefinition",
];

/// The category of a resource type. Types in the Patient compartment are patient records
/// unless they are financial or audit data, or directory entries (a Schedule is directory data
/// until it names a patient: see [`Subject`]).
pub fn category(resource_type: &str) -> Category {
    if resource_type == "AuditEvent" {
        Category::Audit
    } else if FINANCIAL.contains(&resource_type) {
        Category::Financial
    } else if DIRECTORY.contains(&resource_type) {
        Category::Directory
    } else if DEFINITIONS.contains(&resource_type) {
        Category::Definitions
    } else if can_be_about_a_patient(resource_type) {
        Category::PatientRecord
    } else {
        Category::Other
    }
}

/// Whether a resource type holds data about patients (record or financial), so that a
/// request over the whole type concerns any patient.
pub fn holds_patient_data(resource_type: &str) -> bool {
    matches!(category(resource_type), Category::PatientRecord | Category::Financial)
}

/// Whether a resource of this type can belong to a patient: the Patient itself and the
/// members of the Patient compartment.
pub fn can_be_about_a_patient(resource_type: &str) -> bool {
    resource_type == "Patient" || sijill_fhir::definitions::compartment_params("Patient", resource_type).is_some()
}

/// The search parameter (and element) that names the organization a resource belongs to,
/// for the roles that act for one organization. `Organization` belongs to itself.
pub const OWNING_ORGANIZATION: &[(&str, &str)] = &[
    ("Location", "organization"),
    ("HealthcareService", "organization"),
    ("PractitionerRole", "organization"),
    ("Endpoint", "organization"),
    ("Device", "organization"),
    ("Coverage", "payor"),
    ("Claim", "insurer"),
    ("ClaimResponse", "insurer"),
    ("Task", "owner"),
];

/// Whose record a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// No patient's: directory, definitions, or data not about a patient.
    Nobody,
    /// One patient's.
    Patient(&'a str),
    /// Any patient's: a search with no patient restriction (yet).
    AnyPatient,
}

/// The state of the patient's grant to the actor's organization (the consent issue builds
/// these; a practitioner reads a record only under an active one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grant {
    /// No grant, or it expired or was revoked.
    None,
    /// An active grant.
    Active,
    /// No grant, but the actor's facility cares for the patient now (a current encounter
    /// or an appointment today): new clinical data may be added, nothing read.
    CareTeam,
}

/// One request to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// What is done.
    pub action: Action,
    /// To which type.
    pub resource_type: &'a str,
    /// About whom.
    pub subject: Subject<'a>,
    /// The organization the resource belongs to, when the type has one.
    pub organization: Option<&'a str>,
    /// The grant of the patient (when `subject` is one patient).
    pub grant: Grant,
    /// A search that returns only a count (`_summary=count`).
    pub count_only: bool,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// The token's scopes do not cover it (HTTP 403, `insufficient_scope`).
    OutOfScope(String),
    /// The role may not do it (HTTP 403), or — for a resource that exists — may not see it
    /// (HTTP 404: hidden looks like absent).
    Deny(String),
}

impl<'a> Request<'a> {
    /// A request over every resource of a type (a search, a type history): about any
    /// patient when the type holds patient data, about nobody otherwise; no organization,
    /// no grant.
    pub fn whole_type(action: Action, resource_type: &'a str, count_only: bool) -> Request<'a> {
        Request {
            action,
            resource_type,
            subject: if holds_patient_data(resource_type) {
                Subject::AnyPatient
            } else {
                Subject::Nobody
            },
            organization: None,
            grant: Grant::None,
            count_only,
        }
    }
}

/// Whether `action` on *any* resource of the type is allowed, whoever it is about, whatever
/// organization it belongs to and whether or not a grant exists — so a caller may skip
/// looking inside the resource. True when both the type as a whole and one patient without
/// a grant are allowed (the rules only ever add permission for an own patient, an own
/// organization or an active grant; the policy tests check the implication over every
/// combination).
pub fn allows_any_resource(actor: &Principal, action: Action, resource_type: &str) -> bool {
    let whole = Request::whole_type(action, resource_type, false);
    let nobody_in_particular = Request {
        subject: Subject::Patient(""),
        ..whole
    };
    decide(actor, &whole).allowed()
        && (!can_be_about_a_patient(resource_type) || decide(actor, &nobody_in_particular).allowed())
}

impl Decision {
    /// Whether it is an allow.
    pub fn allowed(&self) -> bool {
        *self == Decision::Allow
    }
}

/// Decides one request: scopes first, then the role's rules.
pub fn decide(actor: &Principal, request: &Request<'_>) -> Decision {
    let permission = request.action.permission();
    if !actor.scopes.permits(actor.context, request.resource_type, permission) {
        return Decision::OutOfScope(format!(
            "the token's scopes do not allow {} on {}",
            verb(request.action),
            request.resource_type
        ));
    }
    let category = match (category(request.resource_type), request.subject) {
        // A directory entry that names a patient (a patient's own Schedule) is record data.
        (Category::Directory | Category::Other, Subject::Patient(_)) => Category::PatientRecord,
        (c, _) => c,
    };
    let allowed = role_allows(actor, category, request);
    if allowed {
        Decision::Allow
    } else {
        Decision::Deny(format!(
            "a {} may not {} {}",
            actor.role.name(),
            verb(request.action),
            describe(category, request)
        ))
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Read => "read",
        Action::Search => "search",
        Action::History => "read the history of",
        Action::Create => "create",
        Action::Update => "update",
        Action::Delete => "delete",
    }
}

fn describe(category: Category, request: &Request<'_>) -> String {
    match (category, request.subject) {
        (Category::PatientRecord | Category::Financial, Subject::Patient(_)) => {
            format!("{} of this patient", request.resource_type)
        }
        (Category::PatientRecord | Category::Financial, Subject::AnyPatient) => {
            format!("{} across patients", request.resource_type)
        }
        _ => request.resource_type.to_string(),
    }
}

/// The organization rule: the resource belongs to the actor's organization.
fn own_organization(actor: &Principal, request: &Request<'_>) -> bool {
    match (&actor.organization, request.organization) {
        (Some(mine), Some(theirs)) => mine == theirs,
        _ => false,
    }
}

/// The rules of each role. Reads of the directory and definitions are open to every
/// authenticated actor; everything else is role by role.
fn role_allows(actor: &Principal, category: Category, request: &Request<'_>) -> bool {
    use Action::*;
    use Category::*;
    let reading = matches!(request.action, Read | Search);
    if reading && matches!(category, Directory | Definitions) {
        return true;
    }
    match actor.role {
        Role::Admin => true,
        Role::Citizen => {
            // Their own record (the token's patient), read only.
            let own = matches!(request.subject, Subject::Patient(p) if Some(p) == actor.patient.as_deref());
            reading && own && matches!(category, PatientRecord | Financial)
        }
        Role::Practitioner => match category {
            PatientRecord | Financial => {
                let one_patient = matches!(request.subject, Subject::Patient(_));
                match request.grant {
                    Grant::Active => one_patient && matches!(request.action, Read | Search | Create | Update),
                    Grant::CareTeam => one_patient && request.action == Create,
                    Grant::None => false,
                }
            }
            Other => reading,
            _ => false,
        },
        Role::FacilityAdmin => match category {
            Directory | Other => (request.action.writes() && own_organization(actor, request)) || reading,
            _ => false,
        },
        Role::Insurer => {
            category == Financial
                && own_organization(actor, request)
                && matches!(request.action, Read | Search | Create | Update)
        }
        Role::Planner => request.action == Search && request.count_only,
        Role::Auditor => category == Audit && reading,
    }
}

#[cfg(test)]
mod tests;
