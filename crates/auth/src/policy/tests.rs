//! The decision table: explicit rows for the cases that matter, and invariants checked over
//! every role × action × category × subject × grant × organization × count combination.

use super::*;
use crate::principal::AccessClaims;

const OWN: &str = "own-patient";
const OTHER: &str = "other-patient";
const MY_ORG: &str = "org-mine";
const OTHER_ORG: &str = "org-other";

/// A token of `role` with the widest scopes the role may hold.
fn actor(role: Role) -> Principal {
    actor_with(role, &role.allowed_scopes().to_string())
}

fn actor_with(role: Role, scope: &str) -> Principal {
    let person = !matches!(role, Role::Insurer);
    Principal::from_claims(AccessClaims {
        iss: "i".into(),
        aud: "a".into(),
        sub: "s".into(),
        exp: 0,
        iat: 0,
        jti: "j".into(),
        scope: scope.into(),
        role,
        client_id: "c".into(),
        patient: (role == Role::Citizen).then(|| OWN.to_string()),
        fhir_user: person.then(|| "Practitioner/p".to_string()),
        organization: matches!(role, Role::Practitioner | Role::FacilityAdmin | Role::Insurer)
            .then(|| MY_ORG.to_string()),
        development: false,
    })
    .expect("valid claims")
}

/// A resource type of each category.
fn type_of(category: Category) -> &'static str {
    match category {
        Category::PatientRecord => "Observation",
        Category::Financial => "Claim",
        Category::Directory => "Location",
        Category::Definitions => "ValueSet",
        Category::Audit => "AuditEvent",
        Category::Other => "Task",
    }
}

struct Row {
    role: Role,
    action: Action,
    resource_type: &'static str,
    subject: Subject<'static>,
    grant: Grant,
    organization: Option<&'static str>,
    count_only: bool,
    allow: bool,
}

fn row(role: Role, action: Action, resource_type: &'static str, subject: Subject<'static>, allow: bool) -> Row {
    Row {
        role,
        action,
        resource_type,
        subject,
        grant: Grant::None,
        organization: None,
        count_only: false,
        allow,
    }
}

fn request<'a>(r: &'a Row) -> Request<'a> {
    Request {
        action: r.action,
        resource_type: r.resource_type,
        subject: r.subject,
        organization: r.organization,
        grant: r.grant,
        count_only: r.count_only,
    }
}

#[test]
fn explicit_rows() {
    use Action::*;
    use Role::*;
    use Subject::*;
    let granted = |mut r: Row| {
        r.grant = Grant::Active;
        r
    };
    let care_team = |mut r: Row| {
        r.grant = Grant::CareTeam;
        r
    };
    let org = |mut r: Row, o: &'static str| {
        r.organization = Some(o);
        r
    };
    let count = |mut r: Row| {
        r.count_only = true;
        r
    };
    let rows = vec![
        // Citizens: their own record, read only; never another's; the directory.
        row(Citizen, Read, "Observation", Patient(OWN), true),
        row(Citizen, Search, "Observation", Patient(OWN), true),
        row(Citizen, Read, "Patient", Patient(OWN), true),
        row(Citizen, Read, "Coverage", Patient(OWN), true),
        row(Citizen, Read, "Observation", Patient(OTHER), false),
        row(Citizen, Search, "Observation", AnyPatient, false),
        row(Citizen, Create, "Observation", Patient(OWN), false),
        row(Citizen, Update, "Patient", Patient(OWN), false),
        row(Citizen, Delete, "Observation", Patient(OWN), false),
        row(Citizen, History, "Observation", AnyPatient, false),
        row(Citizen, Search, "Location", Nobody, true),
        row(Citizen, Read, "Practitioner", Nobody, true),
        row(Citizen, Create, "Location", Nobody, false),
        row(Citizen, Read, "AuditEvent", Patient(OWN), false),
        row(Citizen, Read, "Task", Nobody, false),
        // A directory entry that names a patient is record data.
        row(Citizen, Read, "Device", Patient(OTHER), false),
        // Practitioners: a patient's record only under an active grant.
        row(Practitioner, Read, "Observation", Patient(OTHER), false),
        granted(row(Practitioner, Read, "Observation", Patient(OTHER), true)),
        granted(row(Practitioner, Search, "Condition", Patient(OTHER), true)),
        granted(row(Practitioner, Create, "Observation", Patient(OTHER), true)),
        granted(row(Practitioner, Update, "Observation", Patient(OTHER), true)),
        granted(row(Practitioner, Delete, "Observation", Patient(OTHER), false)),
        // The care team (a current encounter or appointment, no grant): adds, never reads.
        care_team(row(Practitioner, Create, "Observation", Patient(OTHER), true)),
        care_team(row(Practitioner, Read, "Observation", Patient(OTHER), false)),
        care_team(row(Practitioner, Search, "Condition", Patient(OTHER), false)),
        care_team(row(Practitioner, Update, "Observation", Patient(OTHER), false)),
        row(Practitioner, Search, "Observation", AnyPatient, false),
        granted(row(Practitioner, History, "Observation", AnyPatient, false)),
        row(Practitioner, Read, "Location", Nobody, true),
        row(Practitioner, Update, "Location", Nobody, false),
        row(Practitioner, Read, "AuditEvent", Nobody, false),
        row(Practitioner, Read, "Task", Nobody, true),
        // Facility administrators: their own facility's directory.
        org(row(FacilityAdmin, Create, "Location", Nobody, true), MY_ORG),
        org(row(FacilityAdmin, Update, "PractitionerRole", Nobody, true), MY_ORG),
        org(row(FacilityAdmin, Update, "Location", Nobody, false), OTHER_ORG),
        row(FacilityAdmin, Create, "Location", Nobody, false),
        row(FacilityAdmin, Search, "Location", Nobody, true),
        row(FacilityAdmin, Read, "Observation", Patient(OTHER), false),
        granted(row(FacilityAdmin, Read, "Observation", Patient(OTHER), false)),
        org(row(FacilityAdmin, Update, "Task", Nobody, true), MY_ORG),
        // Insurers: their own members' coverage and claims.
        org(row(Insurer, Read, "Claim", Patient(OTHER), true), MY_ORG),
        org(row(Insurer, Search, "Coverage", AnyPatient, true), MY_ORG),
        org(row(Insurer, Create, "ClaimResponse", Patient(OTHER), true), MY_ORG),
        org(row(Insurer, Read, "Claim", Patient(OTHER), false), OTHER_ORG),
        row(Insurer, Search, "Coverage", AnyPatient, false),
        org(row(Insurer, Delete, "Claim", Patient(OTHER), false), MY_ORG),
        org(row(Insurer, Read, "Observation", Patient(OTHER), false), MY_ORG),
        row(Insurer, Read, "Patient", Patient(OTHER), false),
        // Planners: counts only.
        count(row(Planner, Search, "Condition", AnyPatient, true)),
        row(Planner, Search, "Condition", AnyPatient, false),
        row(Planner, Read, "Patient", Patient(OTHER), false),
        row(Planner, Search, "Organization", Nobody, true),
        count(row(Planner, Search, "AuditEvent", AnyPatient, true)),
        // Auditors: the audit trail.
        row(Auditor, Search, "AuditEvent", AnyPatient, true),
        row(Auditor, Read, "AuditEvent", Nobody, true),
        row(Auditor, Update, "AuditEvent", Nobody, false),
        row(Auditor, Read, "Observation", Patient(OTHER), false),
        // Platform administrators: everything.
        row(Admin, Delete, "Observation", Patient(OTHER), true),
        row(Admin, History, "Patient", AnyPatient, true),
        row(Admin, Create, "ValueSet", Nobody, true),
    ];
    for r in &rows {
        let got = decide(&actor(r.role), &request(r));
        assert_eq!(
            got.allowed(),
            r.allow,
            "{:?} {:?} {} {:?} grant {:?} org {:?} count {}: {got:?}",
            r.role,
            r.action,
            r.resource_type,
            r.subject,
            r.grant,
            r.organization,
            r.count_only
        );
    }
}

/// Every combination of the inputs.
fn every_request() -> Vec<(Role, Row)> {
    let subjects = [
        Subject::Nobody,
        Subject::Patient(OWN),
        Subject::Patient(OTHER),
        Subject::AnyPatient,
    ];
    let mut out = Vec::new();
    for role in Role::ALL {
        for action in Action::ALL {
            for category in Category::ALL {
                for subject in subjects {
                    for grant in [Grant::None, Grant::CareTeam, Grant::Active] {
                        for organization in [None, Some(MY_ORG), Some(OTHER_ORG)] {
                            for count_only in [false, true] {
                                let mut r = row(role, action, type_of(category), subject, false);
                                r.grant = grant;
                                r.organization = organization;
                                r.count_only = count_only;
                                out.push((role, r));
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn invariants_over_every_combination() {
    let all = every_request();
    assert_eq!(all.len(), 7 * 6 * 6 * 4 * 3 * 3 * 2);
    for (role, r) in &all {
        let actor = actor(*role);
        let req = request(r);
        let decision = decide(&actor, &req);
        let category = category(r.resource_type);
        let record = matches!(category, Category::PatientRecord | Category::Financial)
            || (matches!(category, Category::Directory | Category::Other) && matches!(r.subject, Subject::Patient(_)));
        let context = format!(
            "{role:?} {:?} {} {:?} {:?} {:?} {}",
            r.action, r.resource_type, r.subject, r.grant, r.organization, r.count_only
        );
        if !decision.allowed() {
            continue;
        }
        // Only the administrator deletes a patient's record or reads histories across patients.
        if record && r.action == Action::Delete {
            assert_eq!(*role, Role::Admin, "{context}");
        }
        // Identified record data reaches: the administrator; the citizen, own record only;
        // a practitioner, under an active grant for one patient; an insurer, its own
        // organization's financial data; a planner, as a count.
        if record && !r.count_only {
            match role {
                Role::Admin => {}
                Role::Citizen => assert_eq!(r.subject, Subject::Patient(OWN), "{context}"),
                Role::Practitioner => {
                    assert!(
                        matches!(r.subject, Subject::Patient(_))
                            && (r.grant == Grant::Active || (r.grant == Grant::CareTeam && r.action == Action::Create)),
                        "{context}"
                    )
                }
                Role::Insurer => {
                    assert_eq!(category, Category::Financial, "{context}");
                    assert_eq!(r.organization, Some(MY_ORG), "{context}");
                }
                other => panic!("{other:?} reached record data: {context}"),
            }
        }
        // Nobody but the administrator writes definitions or the audit trail.
        if matches!(category, Category::Definitions | Category::Audit) && r.action.writes() {
            assert_eq!(*role, Role::Admin, "{context}");
        }
        // The audit trail is for auditors (and planners' counts).
        if category == Category::Audit {
            assert!(matches!(role, Role::Admin | Role::Auditor) || r.count_only, "{context}");
        }
        // A planner never gets more than a count of anything but the directory and definitions.
        if *role == Role::Planner && !matches!(category, Category::Directory | Category::Definitions) {
            assert!(r.count_only && r.action == Action::Search, "{context}");
        }
        // Writes to the directory by a facility administrator stay in their facility.
        if *role == Role::FacilityAdmin && r.action.writes() {
            assert_eq!(r.organization, Some(MY_ORG), "{context}");
        }
    }
}

#[test]
fn scopes_bound_every_role() {
    // With read-only scopes no role writes anything; with no scopes nothing is allowed.
    for (role, r) in every_request() {
        let read_only = match role {
            Role::Citizen => "patient/*.rs",
            Role::Insurer => "system/*.rs",
            _ => "user/*.rs",
        };
        let d = decide(&actor_with(role, read_only), &request(&r));
        if r.action.writes() {
            assert!(matches!(d, Decision::OutOfScope(_)), "{role:?} {:?}: {d:?}", r.action);
        }
        let d = decide(&actor_with(role, "openid fhirUser"), &request(&r));
        assert!(matches!(d, Decision::OutOfScope(_)), "{role:?}: {d:?}");
    }
    // A citizen's scope for Observations does not open Conditions.
    let narrow = actor_with(Role::Citizen, "patient/Observation.rs");
    let mut r = row(Role::Citizen, Action::Read, "Observation", Subject::Patient(OWN), true);
    assert!(decide(&narrow, &request(&r)).allowed());
    r.resource_type = "Condition";
    assert!(matches!(decide(&narrow, &request(&r)), Decision::OutOfScope(_)));
    // A citizen token with user/ scopes gets nothing: the context must match.
    let wrong_context = actor_with(Role::Citizen, "user/*.cruds");
    r.resource_type = "Observation";
    assert!(!decide(&wrong_context, &request(&r)).allowed());
}

#[test]
fn categories() {
    assert_eq!(category("Observation"), Category::PatientRecord);
    assert_eq!(category("Patient"), Category::PatientRecord);
    assert_eq!(category("Encounter"), Category::PatientRecord);
    assert_eq!(category("Coverage"), Category::Financial);
    assert_eq!(category("Slot"), Category::Directory);
    assert_eq!(category("ValueSet"), Category::Definitions);
    assert_eq!(category("AuditEvent"), Category::Audit);
    assert_eq!(category("Task"), Category::Other);
}

#[test]
fn allowing_any_resource_implies_allowing_each() {
    // The guard skips looking inside a resource when `allows_any_resource` holds: every
    // particular request of that action and type must then be allowed too.
    for (role, r) in every_request() {
        if r.count_only {
            continue;
        }
        let actor = actor(role);
        for t in [
            "Observation",
            "Patient",
            "Claim",
            "Coverage",
            "Location",
            "Device",
            "ValueSet",
            "AuditEvent",
            "Task",
        ] {
            let impossible = matches!(r.subject, Subject::Patient(_)) && !can_be_about_a_patient(t);
            if impossible || !allows_any_resource(&actor, r.action, t) {
                continue;
            }
            let particular = Request {
                resource_type: t,
                ..request(&r)
            };
            assert!(
                decide(&actor, &particular).allowed(),
                "{role:?} {:?} {t} {:?} {:?} {:?}",
                r.action,
                r.subject,
                r.grant,
                r.organization
            );
        }
    }
    assert!(allows_any_resource(&actor(Role::Admin), Action::Update, "Observation"));
    assert!(allows_any_resource(&actor(Role::Citizen), Action::Read, "Location"));
    assert!(!allows_any_resource(&actor(Role::Citizen), Action::Read, "Observation"));
    // A facility administrator reads the directory, but not a Schedule that names a patient.
    assert!(!allows_any_resource(
        &actor(Role::FacilityAdmin),
        Action::Read,
        "Schedule"
    ));
}
