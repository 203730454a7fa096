//! The guard: where the engine asks [`sijill_auth::decide`] about each request and each
//! resource, and turns the answers into errors, search restrictions and filters.
//!
//! - A type-level search becomes a search restricted to the patients the actor may see
//!   (their own record for a citizen, the patients who granted access for a practitioner)
//!   or to the actor's organization (an insurer), or is refused.
//! - Every resource that leaves the engine — a read, a search match, an `_include`, an
//!   `$everything` member, a history entry — is checked; a hidden resource is answered
//!   exactly like an absent one.
//! - Every write is checked against the resource as it is and as it will be.

use std::cell::{Cell, OnceCell, RefCell};

use axum::http::StatusCode;
use serde_json::Value;
use sijill_auth::policy::OWNING_ORGANIZATION;
use sijill_auth::{allows_any_resource, decide, Action, Decision, Grant, Principal, Request, Subject};
use sijill_fhir::definitions;
use sijill_store::index::IndexRow;
use sijill_store::query::Compartment;
use sijill_store::{Current, SearchQuery, Stored};

use crate::audit::{Disclosures, GrantUse, Interaction, Outcome};
use crate::context::{Actor, RequestContext};
use crate::engine::Engine;
use crate::error::{FhirError, FhirResult};

/// How far a search may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchScope {
    /// Everything the query matches.
    All,
    /// Only the compartments of these patients.
    Patients(Vec<String>),
    /// Only resources whose organization parameter names this organization.
    Organization {
        /// The reference parameter.
        param: &'static str,
        /// The Organization id.
        id: String,
    },
}

/// A patient's active grant to the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// The patient.
    pub patient: String,
    /// The Consent that grants it.
    pub consent: String,
    /// A break-glass (emergency) access.
    pub emergency: bool,
    /// Whether it opens restricted (sensitive) records too.
    pub sensitive: bool,
}

/// The guard of one request.
pub struct Guard<'a> {
    engine: &'a Engine,
    ctx: &'a RequestContext,
    actor: Option<&'a Principal>,
    /// What the request does (for its audit events).
    interaction: Interaction,
    /// What it disclosed or changed.
    disclosed: RefCell<Disclosures>,
    /// Whether its events were already appended (in its write's transaction).
    audited: Cell<bool>,
    /// The flag its events carry (an emergency access, for the auditors' review queue).
    flag: Cell<Option<&'static str>>,
    /// The active grants of patients to the actor (looked up once, on demand).
    grants: OnceCell<Vec<GrantRecord>>,
    /// `allows_any_resource` answers already found in this request (a search asks once per
    /// result otherwise), by action and type.
    outright: RefCell<Vec<(Action, String, bool)>>,
}

/// The ids of the patients a resource belongs to (its Patient compartment owners), from its
/// index rows.
fn patients_of(resource_type: &str, resource: &Value, rows: &[IndexRow]) -> Vec<String> {
    if resource_type == "Patient" {
        return resource["id"]
            .as_str()
            .map(|id| vec![id.to_string()])
            .unwrap_or_default();
    }
    let Some(params) = definitions::compartment_params("Patient", resource_type) else {
        return Vec::new();
    };
    let mut owners: Vec<String> = rows
        .iter()
        .filter(|row| params.contains(&row.param) && row.system.as_deref() == Some("Patient"))
        .map(|row| row.value.clone())
        .collect();
    owners.sort();
    owners.dedup();
    owners
}

/// The id of the Organization a resource names through `param`, from its index rows.
fn organization_param(rows: &[IndexRow], param: &str) -> Option<String> {
    rows.iter()
        .find(|row| row.param == param && row.system.as_deref() == Some("Organization"))
        .map(|row| row.value.clone())
}

fn parse(stored: &Stored) -> FhirResult<Value> {
    serde_json::from_slice(&stored.body).map_err(|e| {
        FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            format!("a stored resource is not JSON: {e}"),
        )
    })
}

fn forbidden(decision: Decision) -> FhirError {
    match decision {
        Decision::OutOfScope(why) => {
            FhirError::new(StatusCode::FORBIDDEN, "forbidden", format!("insufficient_scope: {why}"))
        }
        Decision::Deny(why) => FhirError::new(StatusCode::FORBIDDEN, "forbidden", why),
        Decision::Allow => FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "allowed request refused",
        ),
    }
}

impl<'a> Guard<'a> {
    /// The guard for a request's actor and interaction.
    pub fn new(engine: &'a Engine, ctx: &'a RequestContext, interaction: Interaction) -> Guard<'a> {
        let actor = match &ctx.actor {
            Actor::LocalOperator => None,
            Actor::Principal(p) => Some(p),
        };
        Guard {
            engine,
            ctx,
            actor,
            interaction,
            disclosed: RefCell::default(),
            audited: Cell::new(false),
            flag: Cell::new(None),
            grants: OnceCell::new(),
            outright: RefCell::new(Vec::new()),
        }
    }

    /// The request's context.
    pub fn context(&self) -> &RequestContext {
        self.ctx
    }

    /// Whether the actor runs the whole platform: its administrator, or the local operator.
    pub fn is_platform_admin(&self) -> bool {
        self.actor.is_none_or(|a| a.role == sijill_auth::Role::Admin)
    }

    /// Whether the actor is this patient (a citizen acting for their own record).
    pub fn is_the_patient(&self, patient: &str) -> bool {
        self.citizen_patient() == Some(patient)
    }

    /// The patient of a citizen actor (their own record), if the actor is a citizen.
    pub fn citizen_patient(&self) -> Option<&str> {
        self.actor
            .filter(|a| a.role == sijill_auth::Role::Citizen)
            .and_then(|a| a.patient.as_deref())
    }

    /// Notes a resource that leaves the engine (or that the request wrote), for the audit.
    pub fn disclose(&self, stored: &Stored) {
        let patients = patients_in(stored);
        self.disclosed.borrow_mut().note(stored, &patients);
    }

    /// Notes that the request reached a patient's record (before anything was found).
    pub fn disclose_patient(&self, patient: &str) {
        self.disclosed.borrow_mut().note_patient(patient);
    }

    /// Flags this request's audit events (`FLAG_BREAK_GLASS`).
    pub fn flag(&self, flag: &'static str) {
        self.flag.set(Some(flag));
    }

    /// The audit events of this request with `outcome`.
    pub fn audit_events(&self, outcome: &Outcome) -> Vec<sijill_store::AuditEntry> {
        crate::audit::events(
            self.ctx,
            &self.interaction,
            outcome,
            &self.disclosed.borrow(),
            self.flag.get(),
        )
    }

    /// Whether this request's events were appended with its write.
    pub fn audited(&self) -> bool {
        self.audited.get()
    }

    /// Records that this request's events were committed with its write.
    pub fn mark_audited(&self) {
        self.audited.set(true);
    }

    /// The active grants to the actor: for a practitioner, their organization's (and
    /// their own emergency ones).
    pub fn grants(&self) -> &[GrantRecord] {
        self.grants.get_or_init(|| {
            let practitioner = self.actor.filter(|a| a.role == sijill_auth::Role::Practitioner);
            let Some(actor) = practitioner else {
                return Vec::new();
            };
            crate::consent::active_grants(self.engine, actor).unwrap_or_else(|e| {
                tracing::warn!(error = %e.issues.first().map(|i| i.diagnostics.clone()).unwrap_or_default(), "grant lookup failed: no grants");
                Vec::new()
            })
        })
    }

    fn granted_patients(&self) -> Vec<String> {
        let mut patients: Vec<String> = self.grants().iter().map(|g| g.patient.clone()).collect();
        patients.dedup();
        patients
    }

    /// The grant of a patient to the actor, when there is one (the widest: an emergency
    /// one first, then one that opens restricted records).
    pub fn grant_record(&self, patient: &str) -> Option<&GrantRecord> {
        self.grants()
            .iter()
            .filter(|g| g.patient == patient)
            .max_by_key(|g| (g.emergency, g.sensitive))
    }

    /// Whether the actor may see the patient's restricted records (meta.security R or V):
    /// anyone the policy lets see the record, but a practitioner only under a grant that
    /// opens them, or an emergency one.
    fn opens_restricted(&self, patient: &str) -> bool {
        self.actor.is_none_or(|a| a.role != sijill_auth::Role::Practitioner)
            || self.grant_record(patient).is_some_and(|g| g.sensitive || g.emergency)
    }

    fn grant_for(&self, patient: &str, action: Action) -> Grant {
        if let Some(g) = self.grant_record(patient) {
            self.disclosed.borrow_mut().note_grant(
                patient,
                GrantUse {
                    consent: g.consent.clone(),
                    emergency: g.emergency,
                },
            );
            return Grant::Active;
        }
        if action == Action::Create && self.in_care_team(patient) {
            return Grant::CareTeam;
        }
        Grant::None
    }

    /// Whether the actor's facility cares for the patient now (a current encounter, or an
    /// appointment today).
    fn in_care_team(&self, patient: &str) -> bool {
        let Some(actor) = self.actor.filter(|a| a.role == sijill_auth::Role::Practitioner) else {
            return false;
        };
        crate::consent::in_care_team(self.engine, actor, patient).unwrap_or_else(|e| {
            tracing::warn!(error = %e.issues.first().map(|i| i.diagnostics.clone()).unwrap_or_default(), "care team lookup failed");
            false
        })
    }

    /// The organization a resource belongs to (following a Schedule's actor and a Slot's
    /// schedule).
    fn organization_of(&self, resource_type: &str, resource: &Value, rows: &[IndexRow], depth: u8) -> Option<String> {
        if resource_type == "Organization" {
            return resource["id"].as_str().map(str::to_string);
        }
        if let Some((_, param)) = OWNING_ORGANIZATION.iter().find(|(t, _)| *t == resource_type) {
            return organization_param(rows, param);
        }
        let via = match resource_type {
            "Schedule" => resource["actor"]
                .as_array()?
                .iter()
                .find_map(|a| a["reference"].as_str()),
            "Slot" => resource["schedule"]["reference"].as_str(),
            _ => None,
        }?;
        let (t, id) = via.split_once('/')?;
        if depth >= 2 || !definitions::is_resource_type(t) {
            return None;
        }
        match self.engine.store.read(t, id).ok()? {
            Current::Found(s) => {
                let next: Value = serde_json::from_slice(&s.body).ok()?;
                let next_rows = sijill_store::index::extract(t, &next);
                self.organization_of(t, &next, &next_rows, depth + 1)
            }
            _ => None,
        }
    }

    /// Whether the actor may do `action` to any resource of the type, so that the resource
    /// need not be looked into, nor read first (the local operator; an administrator; a
    /// citizen reading the directory).
    pub fn sees_through(&self, action: Action, resource_type: &str) -> bool {
        self.actor
            .is_none_or(|actor| self.allowed_outright(actor, action, resource_type))
    }

    /// [`allows_any_resource`], asked once per action and type in a request.
    fn allowed_outright(&self, actor: &Principal, action: Action, resource_type: &str) -> bool {
        let known = self
            .outright
            .borrow()
            .iter()
            .find(|(a, t, _)| *a == action && t == resource_type)
            .map(|(_, _, allowed)| *allowed);
        known.unwrap_or_else(|| {
            let allowed = allows_any_resource(actor, action, resource_type);
            self.outright
                .borrow_mut()
                .push((action, resource_type.to_string(), allowed));
            allowed
        })
    }

    /// The decisions for one resource: one per patient it belongs to (or one when it
    /// belongs to none).
    fn decisions(&self, action: Action, resource_type: &str, resource: &Value) -> Vec<Decision> {
        let Some(actor) = self.actor else {
            return vec![Decision::Allow];
        };
        if self.allowed_outright(actor, action, resource_type) {
            return vec![Decision::Allow];
        }
        let rows = sijill_store::index::extract(resource_type, resource);
        let patients = patients_of(resource_type, resource, &rows);
        let organization = self.organization_of(resource_type, resource, &rows, 0);
        let base = Request {
            organization: organization.as_deref(),
            ..Request::whole_type(action, resource_type, false)
        };
        if patients.is_empty() {
            return vec![decide(actor, &base)];
        }
        patients
            .iter()
            .map(|p| {
                let decision = decide(
                    actor,
                    &Request {
                        subject: Subject::Patient(p),
                        grant: self.grant_for(p, action),
                        ..base
                    },
                );
                match decision {
                    Decision::Allow if crate::consent::is_restricted(resource) && !self.opens_restricted(p) => {
                        Decision::Deny("a restricted record needs the patient's explicit opening".into())
                    }
                    d => d,
                }
            })
            .collect()
    }

    /// Whether the actor may see this stored resource (in any of its patients'
    /// compartments, as compartment search does).
    pub fn visible(&self, stored: &Stored) -> bool {
        self.read_decision(stored).allowed()
    }

    /// The decision on reading a stored resource: allowed when one of its patients'
    /// compartments allows it.
    fn read_decision(&self, stored: &Stored) -> Decision {
        if stored.deleted || self.sees_through(Action::Read, &stored.resource_type) {
            return Decision::Allow;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&stored.body) else {
            return Decision::Deny("unreadable".into());
        };
        let decisions = self.decisions(Action::Read, &stored.resource_type, &v);
        if decisions.iter().any(Decision::allowed) {
            return Decision::Allow;
        }
        decisions
            .into_iter()
            .next()
            .unwrap_or(Decision::Deny("no decision".into()))
    }

    /// Refuses a resource the actor may not see: as "does not exist" when the role or
    /// grant hides it, 403 when the token's scopes do not cover its type at all (which
    /// says nothing about the resource).
    pub fn check_visible(&self, stored: &Stored) -> FhirResult<()> {
        match self.read_decision(stored) {
            Decision::Allow => {
                self.disclose(stored);
                Ok(())
            }
            d @ Decision::OutOfScope(_) => Err(forbidden(d)),
            Decision::Deny(_) => Err(FhirError::resource_not_found(&stored.resource_type, &stored.id)),
        }
    }

    /// Refuses, for a version read, a resource whose current content the actor may not see:
    /// its older versions are as absent as it is.
    pub fn check_current_visible(&self, resource_type: &str, id: &str) -> FhirResult<()> {
        if self.sees_through(Action::Read, resource_type) {
            return Ok(());
        }
        match self.engine.store.read(resource_type, id)? {
            Current::Found(current) => self.check_visible(&current),
            _ => Ok(()),
        }
    }

    /// Refuses (as "does not exist") a deleted resource whose last content the actor could
    /// not see: even its deletion is not theirs to learn.
    pub fn check_visible_deleted(&self, deleted: &Stored) -> FhirResult<()> {
        if deleted.version < 2 || self.sees_through(Action::Read, &deleted.resource_type) {
            return Ok(());
        }
        match self
            .engine
            .store
            .vread(&deleted.resource_type, &deleted.id, deleted.version - 1)?
        {
            Some(before) if !before.deleted => self.check_visible(&before),
            _ => Err(FhirError::resource_not_found(&deleted.resource_type, &deleted.id)),
        }
    }

    /// Checks a write of `resource` (the new content, or the current one for a delete):
    /// every patient it belongs to must allow it. A resource the actor may not even see is
    /// answered as absent.
    pub fn check_write(&self, action: Action, resource_type: &str, resource: &Value) -> FhirResult<()> {
        crate::guardian::check_write(self, resource_type, resource)?;
        let decisions = self.decisions(action, resource_type, resource);
        match decisions.into_iter().find(|d| !d.allowed()) {
            None => Ok(()),
            Some(refused) => Err(forbidden(refused)),
        }
    }

    /// Checks a write against the stored current version (update, patch, delete): it must
    /// be visible, and the write allowed on it.
    pub fn check_write_existing(&self, action: Action, stored: &Stored) -> FhirResult<()> {
        if stored.deleted || self.sees_through(action, &stored.resource_type) {
            return Ok(());
        }
        self.check_visible(stored)?;
        self.check_write(action, &stored.resource_type, &parse(stored)?)
    }

    /// Refuses a type-level or system-level history unless the actor may see every
    /// resource of the type (`None`: of every type).
    pub fn check_history(&self, resource_type: Option<&str>) -> FhirResult<()> {
        let Some(actor) = self.actor else { return Ok(()) };
        let types: Vec<&str> = match resource_type {
            Some(t) => vec![t],
            None => definitions::resource_types().collect(),
        };
        for t in types {
            let d = decide(actor, &Request::whole_type(Action::History, t, false));
            if !d.allowed() {
                return Err(forbidden(d));
            }
        }
        Ok(())
    }

    /// How far a search of `resource_type` may reach; refuses it when nothing would be
    /// visible, or when it chains into patient data it could not see.
    pub fn search_scope(&self, resource_type: &str, query: &SearchQuery, count_only: bool) -> FhirResult<SearchScope> {
        let Some(actor) = self.actor else {
            return Ok(SearchScope::All);
        };
        let any = Request::whole_type(Action::Search, resource_type, count_only);
        let first = decide(actor, &any);
        let scope = match first {
            Decision::Allow => SearchScope::All,
            Decision::OutOfScope(_) => return Err(forbidden(first)),
            Decision::Deny(_) => self
                .narrowed_scope(actor, resource_type, any)
                .ok_or_else(|| forbidden(first))?,
        };
        self.refuse_reaching_hidden(actor, query)?;
        Ok(scope)
    }

    /// The restriction under which a search the actor may not run across patients is
    /// still allowed: their own patients, or their organization's resources.
    fn narrowed_scope(&self, actor: &Principal, resource_type: &str, any: Request<'_>) -> Option<SearchScope> {
        if let (Some(org), Some((_, param))) = (
            actor.organization.as_deref(),
            OWNING_ORGANIZATION.iter().find(|(t, _)| *t == resource_type),
        ) {
            if decide(
                actor,
                &Request {
                    organization: Some(org),
                    ..any
                },
            )
            .allowed()
            {
                return Some(SearchScope::Organization {
                    param,
                    id: org.to_string(),
                });
            }
        }
        if !sijill_auth::can_be_about_a_patient(resource_type) {
            return None;
        }
        let candidates: Vec<String> = match actor.role {
            sijill_auth::Role::Citizen => actor.patient.iter().cloned().collect(),
            sijill_auth::Role::Practitioner => self.granted_patients(),
            _ => Vec::new(),
        };
        let allowed: Vec<String> = candidates
            .into_iter()
            .filter(|p| {
                decide(
                    actor,
                    &Request {
                        subject: Subject::Patient(p),
                        grant: self.grant_for(p, any.action),
                        ..any
                    },
                )
                .allowed()
            })
            .collect();
        (!allowed.is_empty()).then_some(SearchScope::Patients(allowed))
    }

    /// Chains and `_has` run inner searches without the outer restriction: each type they
    /// reach must be one the actor may search without restriction.
    fn refuse_reaching_hidden(&self, actor: &Principal, query: &SearchQuery) -> FhirResult<()> {
        let searchable = |t: &str| decide(actor, &Request::whole_type(Action::Search, t, false)).allowed();
        fn reached<'c>(c: &'c sijill_store::Criterion, out: &mut Vec<(&'static str, &'c str)>) {
            if let Some((target, inner)) = &c.chain {
                out.push(("chained search into", target));
                reached(inner, out);
            }
            if let Some((source, _, inner)) = &c.has {
                out.push(("_has on", source));
                reached(inner, out);
            }
        }
        let mut types = Vec::new();
        query.criteria.iter().for_each(|c| reached(c, &mut types));
        match types.into_iter().find(|(_, t)| !searchable(t)) {
            None => Ok(()),
            Some((how, t)) => Err(FhirError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{how} {t} is not available to this token: it would search records it cannot see; search within the patient instead"),
            )),
        }
    }

    /// Applies a search scope to a query (intersecting with a compartment it already has).
    pub fn restrict(
        &self,
        resource_type: &str,
        mut query: SearchQuery,
        scope: &SearchScope,
    ) -> FhirResult<SearchQuery> {
        match scope {
            SearchScope::All => Ok(query),
            SearchScope::Patients(allowed) => {
                let params = definitions::compartment_params("Patient", resource_type)
                    .map(|p| p.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default();
                let compartment = match query.compartment.take() {
                    Some(mut c) if c.owner_type == "Patient" => {
                        c.owner_ids.retain(|id| allowed.contains(id));
                        c
                    }
                    Some(c) => {
                        // A query holds one compartment: another one (Encounter/…) cannot
                        // also carry the patient restriction, so the search is refused.
                        return Err(FhirError::new(
                            StatusCode::FORBIDDEN,
                            "forbidden",
                            format!(
                                "a search in the {} compartment is not available to this token",
                                c.owner_type
                            ),
                        ));
                    }
                    None => Compartment {
                        owner_type: "Patient".into(),
                        owner_ids: allowed.clone(),
                        params,
                    },
                };
                // Restricted records stay out unless every patient searched opened them.
                let all_open = compartment.owner_ids.iter().all(|p| self.opens_restricted(p));
                query.compartment = Some(compartment);
                if !all_open {
                    query.criteria.extend(crate::consent::hide_restricted(resource_type)?);
                }
                Ok(query)
            }
            SearchScope::Organization { param, id } => {
                let extra = SearchQuery::parse(resource_type, &[(param.to_string(), format!("Organization/{id}"))])?;
                query.criteria.extend(extra.criteria);
                Ok(query)
            }
        }
    }

    /// Refuses a Patient `$everything` across patients for an actor who may not search
    /// patients without restriction.
    pub fn check_everything_for_all(&self) -> FhirResult<()> {
        match self.search_scope("Patient", &SearchQuery::default(), false)? {
            SearchScope::All => Ok(()),
            _ => Err(FhirError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Patient/$everything across patients is not available to this token; ask for one patient",
            )),
        }
    }
}

/// The patients whose compartment a stored resource is in: the Patient itself, else the
/// patients its compartment references name. The stored bytes are scanned for `Patient/`
/// references first; only a resource naming more than one patient is parsed.
pub fn patients_in(stored: &Stored) -> Vec<String> {
    if stored.resource_type == "Patient" {
        return vec![stored.id.clone()];
    }
    if stored.deleted || definitions::compartment_params("Patient", &stored.resource_type).is_none() {
        return Vec::new();
    }
    let mut named = patient_references(&stored.body);
    named.sort();
    named.dedup();
    if named.len() <= 1 {
        return named;
    }
    match serde_json::from_slice::<Value>(&stored.body) {
        Ok(v) => {
            let rows = sijill_store::index::extract(&stored.resource_type, &v);
            patients_of(&stored.resource_type, &v, &rows)
        }
        Err(_) => named,
    }
}

/// The ids after every `Patient/` in JSON bytes (relative or absolute references).
fn patient_references(body: &[u8]) -> Vec<String> {
    const NEEDLE: &[u8] = b"Patient/";
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = body[i..].windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        let start = i + at + NEEDLE.len();
        let preceded = i + at == 0 || matches!(body[i + at - 1], b'"' | b'/');
        let end = body[start..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.'))
            .map_or(body.len(), |n| start + n);
        if preceded && end > start && end - start <= 64 && body.get(end) == Some(&b'"') {
            out.push(String::from_utf8_lossy(&body[start..end]).into_owned());
        }
        i = start;
    }
    out
}
