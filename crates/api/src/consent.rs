//! The patient's consent: access codes, grants, break-glass, and the rules the guard reads
//! from them.
//!
//! - `POST Patient/{id}/$access-code` — the citizen makes a short one-time code.
//! - `POST Patient/$grant-access` — a practitioner redeems it with the patient's national
//!   identifier; this creates a grant (an active Consent) for the practitioner's facility.
//!   Wrong codes count against the practitioner and the patient, and lock them out.
//! - `POST Consent/{id}/$revoke` — the citizen ends a grant; the next request sees it.
//! - `POST Patient/{id}/$break-glass` — a practitioner declares an emergency, with a
//!   reason: a short grant of their own, flagged in the audit trail for review, and the
//!   citizen notified.

use axum::http::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sijill_auth::{Principal, Role};
use sijill_store::{Criterion, Current, SearchQuery, StoreTx, Stored};

use crate::access::{GrantRecord, Guard};
use crate::engine::{truncate, Engine, FhirResponse, RequestBody};
use crate::error::{FhirError, FhirResult};
use crate::interactions::{reference_id, resource_response};
use crate::parameters;

/// The code system of grant kinds on a Consent's `meta.tag`.
pub const GRANT_KIND_SYSTEM: &str = "https://sijill.health/fhir/CodeSystem/grant-kind";

/// The confidentiality code system; R (restricted) and V (very restricted) hide a record.
pub const CONFIDENTIALITY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

/// The letters of access codes: no 0/O, 1/I/L, 2/Z, 5/S, 8/B, 6/G look-alikes.
const CODE_ALPHABET: &[u8] = b"ACDEFHJKMNPRTUVWXY34679";

/// Characters in an access code (shown as two groups of four).
const CODE_LENGTH: usize = 8;

/// The durations and limits of consent.
#[derive(Debug, Clone)]
pub struct ConsentSettings {
    /// How long an access code stays valid, in seconds.
    pub code_seconds: i64,
    /// How long a grant from a code lasts, in seconds.
    pub grant_seconds: i64,
    /// How long a break-glass access lasts, in seconds.
    pub break_glass_seconds: i64,
    /// Wrong codes a practitioner may enter in a lockout window before being locked out.
    pub practitioner_attempts: u32,
    /// Wrong codes entered for one patient (by anyone) before their code is withdrawn and
    /// redemptions for them are locked.
    pub patient_attempts: u32,
    /// The lockout window and lockout length, in seconds.
    pub lockout_seconds: i64,
    /// The identifier system of national identifiers (from the country profile): the one a
    /// guardian is recognised by. None accepts any system (tests without a profile).
    pub national_id_system: Option<String>,
}

impl Default for ConsentSettings {
    fn default() -> Self {
        ConsentSettings {
            code_seconds: 15 * 60,
            grant_seconds: 72 * 3600,
            break_glass_seconds: 4 * 3600,
            practitioner_attempts: 5,
            patient_attempts: 10,
            lockout_seconds: 15 * 60,
            national_id_system: None,
        }
    }
}

/// Whether a list of security labels has a restricted confidentiality (R or V).
fn has_restricted_label(labels: &Value) -> bool {
    labels.as_array().is_some_and(|labels| {
        labels
            .iter()
            .any(|l| l["system"] == CONFIDENTIALITY_SYSTEM && matches!(l["code"].as_str(), Some("R" | "V")))
    })
}

/// Whether a resource carries a restricted confidentiality label (meta.security R or V).
pub fn is_restricted(resource: &Value) -> bool {
    has_restricted_label(&resource["meta"]["security"])
}

/// Criteria that leave restricted records out of a search.
pub fn hide_restricted(resource_type: &str) -> FhirResult<Vec<Criterion>> {
    let pairs: Vec<(String, String)> = ["R", "V"]
        .iter()
        .map(|code| ("_security:not".to_string(), format!("{CONFIDENTIALITY_SYSTEM}|{code}")))
        .collect();
    Ok(SearchQuery::parse(resource_type, &pairs)?.criteria)
}

fn parse(stored: &Stored) -> Option<Value> {
    serde_json::from_slice(&stored.body).ok()
}

fn has_tag(resource: &Value, code: &str) -> bool {
    resource["meta"]["tag"].as_array().is_some_and(|tags| {
        tags.iter()
            .any(|t| t["system"] == GRANT_KIND_SYSTEM && t["code"] == code)
    })
}

/// The active grants to a practitioner: active Consents naming their organization whose
/// period holds now; an emergency one only for the practitioner who declared it.
pub fn active_grants(engine: &Engine, actor: &Principal) -> FhirResult<Vec<GrantRecord>> {
    let Some(org) = actor.organization.as_deref() else {
        return Ok(Vec::new());
    };
    let query = SearchQuery::parse(
        "Consent",
        &[
            ("actor".to_string(), format!("Organization/{org}")),
            ("status".to_string(), "active".to_string()),
        ],
    )?;
    let now = sijill_store::now_instant();
    let mut grants = Vec::new();
    engine.store.search_each("Consent", &query, &mut |s| {
        if let Some(g) = parse(s).and_then(|consent| grant_of(s, &consent, actor, &now)) {
            grants.push(g);
        }
        Ok(())
    })?;
    grants.sort_by(|a, b| a.patient.cmp(&b.patient));
    Ok(grants)
}

/// The grant a Consent gives the actor now, if any.
fn grant_of(stored: &Stored, consent: &Value, actor: &Principal, now: &str) -> Option<GrantRecord> {
    let period = &consent["provision"]["period"];
    let holds = |bound: &str, ok: fn(&str, &str) -> bool| {
        period[bound]
            .as_str()
            .is_none_or(|b| sijill_store::parse_instant(b).is_some_and(|b| ok(&b, now)))
    };
    if !holds("end", |end, now| end > now) || !holds("start", |start, now| start <= now) {
        return None;
    }
    let emergency = has_tag(consent, "break-glass");
    let actors: Vec<&str> = consent["provision"]["actor"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["reference"]["reference"].as_str()).collect())
        .unwrap_or_default();
    if emergency && !actor.fhir_user.as_deref().is_some_and(|me| actors.contains(&me)) {
        return None;
    }
    let sensitive = has_restricted_label(&consent["provision"]["securityLabel"]);
    let patient = reference_id(&consent["patient"], "Patient")?;
    Some(GrantRecord {
        patient: patient.to_string(),
        consent: stored.id.clone(),
        emergency,
        sensitive,
    })
}

/// Whether the practitioner's facility cares for the patient now: an encounter in progress
/// there, or an appointment today with the practitioner or their facility.
pub fn in_care_team(engine: &Engine, actor: &Principal, patient: &str) -> FhirResult<bool> {
    let Some(org) = actor.organization.as_deref() else {
        return Ok(false);
    };
    let p = ("patient".to_string(), format!("Patient/{patient}"));
    let encounter = SearchQuery::parse(
        "Encounter",
        &[
            p.clone(),
            ("service-provider".into(), format!("Organization/{org}")),
            ("status".into(), "arrived,triaged,in-progress,onleave".into()),
        ],
    )?;
    if !engine.store.search_ids("Encounter", &encounter, 1)?.is_empty() {
        return Ok(true);
    }
    let today = sijill_store::now_instant()[..10].to_string();
    let mut by_actor: Vec<(String, String)> = vec![
        (
            "actor:PractitionerRole.organization".into(),
            format!("Organization/{org}"),
        ),
        ("actor:Location.organization".into(), format!("Organization/{org}")),
    ];
    if let Some(me) = &actor.fhir_user {
        by_actor.push(("actor".into(), me.clone()));
    }
    for (param, value) in by_actor {
        let appointment = SearchQuery::parse(
            "Appointment",
            &[
                p.clone(),
                ("date".into(), today.clone()),
                ("status".into(), "booked,arrived,checked-in".into()),
                (param, value),
            ],
        )?;
        if !engine.store.search_ids("Appointment", &appointment, 1)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The acting practitioner and their facility.
fn practitioner<'g>(guard: &'g Guard<'_>) -> FhirResult<(&'g Principal, &'g str)> {
    match &guard.context().actor {
        crate::context::Actor::Principal(p) if p.role == Role::Practitioner => match &p.organization {
            Some(org) => Ok((p, org)),
            None => Err(FhirError::forbidden("the token names no facility")),
        },
        _ => Err(FhirError::forbidden("only a practitioner may do this")),
    }
}

/// The hash under which an access code is kept (never the code itself).
fn code_hash(patient: &str, code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    sijill_store::audit::hex(&Sha256::digest(format!("{patient}:{normal}").as_bytes()))
}

/// A new random access code, `XXXX-XXXX`.
fn new_code() -> String {
    let mut letters = Vec::with_capacity(CODE_LENGTH);
    // Unbiased: bytes past the last whole multiple of the alphabet's size are skipped.
    let limit = 256 - 256 % CODE_ALPHABET.len();
    while letters.len() < CODE_LENGTH {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if (*b as usize) < limit && letters.len() < CODE_LENGTH {
                letters.push(CODE_ALPHABET[*b as usize % CODE_ALPHABET.len()] as char);
            }
        }
    }
    let s: String = letters.into_iter().collect();
    format!("{}-{}", &s[..4], &s[4..])
}

/// `POST Patient/{id}/$access-code`: a new one-time code for the citizen's own record, or
/// a dependent's ([`crate::guardian`]), replacing any earlier one. `includeRestricted=true`
/// lets the grant it becomes open restricted records too.
pub fn access_code(engine: &Engine, guard: &Guard<'_>, patient: &str, body: &RequestBody) -> FhirResult<FhirResponse> {
    if !crate::guardian::speaks_for(engine, guard, patient)? {
        return Err(FhirError::forbidden(
            "only the patient (or their guardian) makes an access code for their record",
        ));
    }
    let restricted = parameters::is_true(&parameters::read(body)?, "includeRestricted");
    let code = new_code();
    let expires = sijill_store::instant_in(engine.consent.code_seconds);
    let state = json!({"hash": code_hash(patient, &code), "expires": expires, "restricted": restricted});
    guard.disclose_patient(patient);
    engine.with_tx(guard, crate::engine::Exec::Standalone, |tx| {
        tx.state_put("access-code", patient, &state.to_string())?;
        Ok(())
    })?;
    Ok(parameters::response(
        StatusCode::OK,
        &[
            ("code", json!(code)),
            ("expires", json!(expires)),
            ("grantHours", json!(engine.consent.grant_seconds / 3600)),
            ("includeRestricted", json!(restricted)),
        ],
    ))
}

/// Failed attempts of one key: how many in the current window, and a lockout end.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Attempts {
    failures: u32,
    window_start: String,
    locked_until: Option<String>,
}

fn load_attempts(tx: &mut dyn StoreTx, key: &str, window: i64) -> FhirResult<Attempts> {
    let now = sijill_store::now_instant();
    let mut a: Attempts = tx
        .state_get("code-attempts", key)?
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    if a.window_start < sijill_store::instant_in(-window) {
        a.failures = 0;
        a.window_start = now;
    }
    Ok(a)
}

fn locked(a: &Attempts) -> Option<&str> {
    a.locked_until
        .as_deref()
        .filter(|until| *until > sijill_store::now_instant().as_str())
}

/// `POST Patient/$grant-access` (Parameters `identifier`, `code`): redeems a patient's code
/// for the practitioner's facility.
pub fn grant_access(engine: &Engine, guard: &Guard<'_>, body: &RequestBody) -> FhirResult<FhirResponse> {
    let (actor, org) = practitioner(guard)?;
    // Attempts count against the person (their FHIR user), else the token's subject.
    let subject = actor.fhir_user.as_deref().unwrap_or(&actor.subject);
    let params = parameters::read(body)?;
    let identifier = parameters::string(&params, "identifier").ok_or_else(|| {
        FhirError::bad_request("Parameter 'identifier' (the patient's national identifier) is missing")
    })?;
    let code =
        parameters::string(&params, "code").ok_or_else(|| FhirError::bad_request("Parameter 'code' is missing"))?;
    let settings = &engine.consent;
    let found = SearchQuery::parse("Patient", &[("identifier".into(), identifier.clone())])?;
    let facility = facility_reference(engine, org)?;
    let refused = |why: String| Ok(Err(FhirError::new(StatusCode::FORBIDDEN, "security", why)));
    let stored = engine.with_tx_or_refuse(guard, |tx| {
        let practitioner_key = format!("practitioner:{subject}");
        let mut mine = load_attempts(tx, &practitioner_key, settings.lockout_seconds)?;
        if let Some(until) = locked(&mine) {
            return refused(format!("Too many wrong codes: you are locked out until {until}"));
        }
        let patients = tx.search_ids("Patient", &found, 2)?;
        let patient = match patients.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        };
        let patient_key = patient.as_ref().map(|p| format!("patient:{p}"));
        let mut theirs = match &patient_key {
            Some(k) => Some(load_attempts(tx, k, settings.lockout_seconds)?),
            None => None,
        };
        if let (Some(p), Some(until)) = (&patient, theirs.as_ref().and_then(locked)) {
            guard.disclose_patient(p);
            return refused(format!(
                "Too many wrong codes were entered for this patient: redemption is locked until {until}, and the patient must make a new code"
            ));
        }
        let state: Option<Value> = match &patient {
            Some(p) => tx
                .state_get("access-code", p)?
                .and_then(|s| serde_json::from_str(&s).ok()),
            None => None,
        };
        let now = sijill_store::now_instant();
        let matched = patient.clone().zip(state).filter(|(p, s)| {
            s["hash"].as_str() == Some(code_hash(p, &code).as_str())
                && s["expires"].as_str().is_some_and(|e| e > now.as_str())
        });
        let Some((p, s)) = matched else {
            mine.failures += 1;
            if mine.failures >= settings.practitioner_attempts {
                mine.locked_until = Some(sijill_store::instant_in(settings.lockout_seconds));
            }
            tx.state_put("code-attempts", &practitioner_key, &serde_json::to_string(&mine).unwrap_or_default())?;
            if let (Some(p), Some(key), Some(t)) = (&patient, &patient_key, theirs.as_mut()) {
                guard.disclose_patient(p);
                t.failures += 1;
                if t.failures >= settings.patient_attempts {
                    t.locked_until = Some(sijill_store::instant_in(settings.lockout_seconds));
                    tx.state_delete("access-code", p)?;
                }
                tx.state_put("code-attempts", key, &serde_json::to_string(t).unwrap_or_default())?;
            }
            return refused(
                "The identifier and code do not match a valid access code (codes are single use and expire)".to_string(),
            );
        };
        tx.state_delete("access-code", &p)?;
        tx.state_delete("code-attempts", &practitioner_key)?;
        let restricted = s["restricted"] == Value::Bool(true);
        let consent = grant_consent(&p, &facility, &now, &sijill_store::instant_in(settings.grant_seconds), restricted);
        let stored = tx.create("Consent", consent, None)?;
        guard.disclose(&stored);
        Ok(Ok(stored))
    })?;
    Ok(resource_response(engine, StatusCode::CREATED, &stored))
}

/// What every grant's Consent has: an active `patient-privacy` permit, by the facility,
/// for `actors` (references) from `start` to `end`, tagged with its kind (code, display).
/// `people`: actors besides the facility (`facility`, a reference to it), who come first.
fn grant_skeleton(
    kind: (&str, &str),
    patient: &str,
    facility: &Value,
    start: &str,
    end: &str,
    people: &[String],
) -> Value {
    let actor = |reference: Value| {
        json!({
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
            "reference": reference,
        })
    };
    let actors: Vec<Value> = people
        .iter()
        .map(|r| actor(json!({"reference": r})))
        .chain(std::iter::once(actor(facility.clone())))
        .collect();
    json!({
        "resourceType": "Consent",
        "meta": {"tag": [{"system": GRANT_KIND_SYSTEM, "code": kind.0, "display": kind.1}]},
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "dateTime": start,
        "organization": [facility],
        "provision": {"type": "permit", "period": {"start": start, "end": end}, "actor": actors},
    })
}

/// A reference to the facility with its name (as `display`), so that the citizen, who does
/// not read the directory, sees whom they let in.
fn facility_reference(engine: &Engine, org: &str) -> FhirResult<Value> {
    let mut reference = json!({"reference": format!("Organization/{org}")});
    if let Current::Found(stored) = engine.store.read("Organization", org)? {
        if let Some(name) = crate::resource_json::parsed(&stored)["name"].as_str() {
            reference["display"] = json!(name);
        }
    }
    Ok(reference)
}

/// The Consent of a grant from an access code: given by the patient, opted in.
fn grant_consent(patient: &str, facility: &Value, start: &str, end: &str, restricted: bool) -> Value {
    let kind = ("access-code", "granted with the patient's code");
    let mut consent = grant_skeleton(kind, patient, facility, start, end, &[]);
    consent["performer"] = json!([{"reference": format!("Patient/{patient}")}]);
    consent["policyRule"] =
        json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]});
    if restricted {
        consent["provision"]["securityLabel"] = json!([
            {"system": CONFIDENTIALITY_SYSTEM, "code": "R"},
            {"system": CONFIDENTIALITY_SYSTEM, "code": "V"},
        ]);
    }
    consent
}

/// `POST Consent/{id}/$revoke`: the patient (or an administrator) ends a grant now.
pub fn revoke(engine: &Engine, guard: &Guard<'_>, id: &str) -> FhirResult<FhirResponse> {
    let current = match engine.store.read("Consent", id)? {
        Current::Found(s) => s,
        _ => return Err(FhirError::resource_not_found("Consent", id)),
    };
    let mut consent = parse(&current).ok_or_else(|| FhirError::bad_request("the Consent is not readable"))?;
    let patient = reference_id(&consent["patient"], "Patient").unwrap_or("").to_string();
    let allowed = guard.is_platform_admin() || crate::guardian::speaks_for(engine, guard, &patient)?;
    if !allowed {
        guard.check_visible(&current)?;
        return Err(FhirError::forbidden(
            "only the patient (or their guardian) revokes their grant",
        ));
    }
    let now = sijill_store::now_instant();
    consent["status"] = json!("inactive");
    consent["provision"]["period"]["end"] = json!(now);
    let stored = engine.with_tx(guard, crate::engine::Exec::Standalone, |tx| {
        let (stored, _) = tx.update("Consent", id, consent.clone(), Some(current.version))?;
        guard.disclose(&stored);
        Ok(stored)
    })?;
    Ok(resource_response(engine, StatusCode::OK, &stored))
}

/// `POST Patient/{id}/$break-glass` (Parameters `reason`): an emergency access for the
/// practitioner, flagged for review, and a notification to the patient.
pub fn break_glass(engine: &Engine, guard: &Guard<'_>, patient: &str, body: &RequestBody) -> FhirResult<FhirResponse> {
    let (actor, org) = practitioner(guard)?;
    let me = actor
        .fhir_user
        .clone()
        .ok_or_else(|| FhirError::forbidden("a break-glass access needs the practitioner's own identity (fhirUser)"))?;
    let reason = parameters::string(&parameters::read(body)?, "reason").unwrap_or_default();
    if reason.trim().chars().count() < 10 {
        return Err(FhirError::bad_request(
            "Parameter 'reason' must say why, in at least 10 characters",
        ));
    }
    if reason.chars().count() > 2000 {
        return Err(FhirError::bad_request(
            "Parameter 'reason' is longer than 2000 characters",
        ));
    }
    if !matches!(engine.store.read("Patient", patient)?, Current::Found(_)) {
        return Err(FhirError::resource_not_found("Patient", patient));
    }
    let now = sijill_store::now_instant();
    let end = sijill_store::instant_in(engine.consent.break_glass_seconds);
    let kind = ("break-glass", "emergency access");
    let facility = facility_reference(engine, org)?;
    let mut consent = grant_skeleton(kind, patient, &facility, &now, &end, &[me]);
    consent["policyRule"] = json!({"coding": [{"system": GRANT_KIND_SYSTEM, "code": "break-glass"}], "text": reason});
    consent["provision"]["purpose"] =
        json!([{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT"}]);
    let notice = json!({
        "resourceType": "Communication",
        "status": "in-progress",
        "category": [{"coding": [{"system": "https://sijill.health/fhir/CodeSystem/notification", "code": "break-glass"}]}],
        "subject": {"reference": format!("Patient/{patient}")},
        "recipient": [{"reference": format!("Patient/{patient}")}],
        "sent": now,
        "payload": [{"contentString": format!(
            "A practitioner of a health facility (Organization/{org}) opened your health record in an emergency on {now}, until {end}. The reason they gave: \"{}\". An auditor will review this access. You can see every access to your record in your access log.",
            truncate(&reason)
        )}],
    });
    guard.flag(sijill_store::audit::FLAG_BREAK_GLASS);
    let stored = engine.with_tx(guard, crate::engine::Exec::Standalone, |tx| {
        let stored = tx.create("Consent", consent.clone(), None)?;
        guard.disclose(&stored);
        let sent = tx.create("Communication", notice.clone(), None)?;
        guard.disclose(&sent);
        Ok(stored)
    })?;
    Ok(resource_response(engine, StatusCode::CREATED, &stored))
}
