//! Consent with the patient's code, restricted records, the care team, break-glass, and
//! the citizen's access log — black-box, over HTTP.

mod common;

use common::{assert_outcome, json, Server};
use serde_json::{json, Value};

/// Two patients with records, a facility and a practitioner of it.
struct World {
    a: String,
    b: String,
    obs_a: String,
    facility: String,
    other_facility: String,
    dr: String,
}

fn world(s: &Server) -> World {
    let facility = s.create(&json!({"resourceType": "Organization", "name": "CHU Test"}));
    let other_facility = s.create(&json!({"resourceType": "Organization", "name": "Clinic"}));
    let dr = s.create(&json!({"resourceType": "Practitioner", "name": [{"family": "Alaoui"}]}));
    let patient = |nid: &str| {
        s.create(&json!({"resourceType": "Patient", "name": [{"family": "Test"}],
            "identifier": [{"system": "urn:test:nid", "value": nid}]}))
    };
    let a = patient("A1");
    let b = patient("B2");
    let obs_a = observation(s, &a, "4548-4", false);
    observation(s, &b, "4548-4", false);
    World {
        a,
        b,
        obs_a,
        facility,
        other_facility,
        dr,
    }
}

fn observation(s: &Server, patient: &str, code: &str, restricted: bool) -> String {
    let mut o = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")}});
    if restricted {
        o["meta"] =
            json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]});
    }
    s.create(&o)
}

fn practitioner(s: &Server, w: &World, org: &str) -> String {
    s.token(&["--role", "practitioner", "--practitioner", &w.dr, "--organization", org])
}

fn citizen(s: &Server, patient: &str) -> String {
    s.token(&["--role", "citizen", "--patient", patient])
}

fn make_code(s: &Server, citizen: &str, patient: &str, restricted: bool) -> String {
    let body =
        json!({"resourceType": "Parameters", "parameter": [{"name": "includeRestricted", "valueBoolean": restricted}]});
    let r = s.post_as(citizen, &format!("Patient/{patient}/$access-code"), &body);
    assert_eq!(r.status(), 200);
    let p = json(r);
    let code = p["parameter"][0]["valueString"].as_str().expect("code").to_string();
    assert_eq!(code.len(), 9, "XXXX-XXXX: {code}");
    assert!(
        code.chars().all(|c| c == '-' || "ACDEFHJKMNPRTUVWXY34679".contains(c)),
        "unambiguous letters: {code}"
    );
    code
}

fn redeem(s: &Server, token: &str, nid: &str, code: &str) -> reqwest::blocking::Response {
    s.post_as(
        token,
        "Patient/$grant-access",
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "identifier", "valueIdentifier": {"system": "urn:test:nid", "value": nid}},
            {"name": "code", "valueString": code}]}),
    )
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str()?,
                e["resource"]["id"].as_str()?
            ))
        })
        .collect()
}

#[test]
fn a_code_becomes_a_grant_once_and_the_citizen_can_revoke_it() {
    let s = Server::start();
    let w = world(&s);
    let dr = practitioner(&s, &w, &w.facility);
    let me = citizen(&s, &w.a);
    let obs = format!("Observation/{}", w.obs_a);
    assert_outcome(s.get_as(&dr, &obs), 404, "does not exist");
    // Only the patient makes a code for their record.
    assert_outcome(
        s.post_as(
            &dr,
            &format!("Patient/{}/$access-code", w.a),
            &json!({"resourceType": "Parameters"}),
        ),
        403,
        "only the patient",
    );
    assert_outcome(
        s.post_as(
            &citizen(&s, &w.b),
            &format!("Patient/{}/$access-code", w.a),
            &json!({"resourceType": "Parameters"}),
        ),
        403,
        "only the patient",
    );
    let code = make_code(&s, &me, &w.a, false);
    // Lower case and without the dash is the same code.
    let typed = code.replace('-', "").to_lowercase();
    let r = redeem(&s, &dr, "A1", &typed);
    assert_eq!(r.status(), 201);
    let consent = json(r);
    assert_eq!(consent["status"], "active");
    assert_eq!(consent["patient"]["reference"], format!("Patient/{}", w.a));
    assert_eq!(
        consent["provision"]["actor"][0]["reference"]["reference"],
        format!("Organization/{}", w.facility)
    );
    assert_eq!(s.get_as(&dr, &obs).status(), 200);
    // Single use.
    assert_outcome(redeem(&s, &dr, "A1", &code), 403, "do not match");
    // The citizen sees the grant, and revokes it: the next request no longer sees the record.
    let grants = json(s.get_as(&me, "Consent?status=active"));
    assert_eq!(
        ids(&grants),
        vec![format!("Consent/{}", consent["id"].as_str().unwrap())]
    );
    let revoke = format!("Consent/{}/$revoke", consent["id"].as_str().unwrap());
    assert_outcome(s.post_as(&dr, &revoke, &json!({})), 403, "only the patient");
    let r = s.post_as(&me, &revoke, &json!({}));
    assert_eq!(r.status(), 200);
    assert_eq!(json(r)["status"], "inactive");
    assert_outcome(s.get_as(&dr, &obs), 404, "does not exist");
    // Another practitioner's organization never had it.
    let other = practitioner(&s, &w, &w.other_facility);
    assert_outcome(s.get_as(&other, &obs), 404, "does not exist");
    // Bad input: no parameters, not Parameters.
    assert_outcome(
        s.post_as(&dr, "Patient/$grant-access", &json!({"resourceType": "Parameters"})),
        400,
        "identifier",
    );
    assert_outcome(
        s.post_as(&dr, "Patient/$grant-access", &json!({"resourceType": "Patient"})),
        400,
        "Parameters",
    );
}

#[test]
fn a_code_expires() {
    let s = Server::start_with(&["--access-code-ttl", "1s"]);
    let w = world(&s);
    let code = make_code(&s, &citizen(&s, &w.a), &w.a, false);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_outcome(
        redeem(&s, &practitioner(&s, &w, &w.facility), "A1", &code),
        403,
        "expire",
    );
}

#[test]
fn guessing_locks_out_the_practitioner_and_then_the_patient() {
    let s = Server::start();
    let w = world(&s);
    let me = citizen(&s, &w.a);
    let code = make_code(&s, &me, &w.a, false);
    let guesser = practitioner(&s, &w, &w.facility);
    for _ in 0..5 {
        assert_outcome(redeem(&s, &guesser, "A1", "AAAA-AAAA"), 403, "do not match");
    }
    // Locked out: even the right code is refused now.
    assert_outcome(redeem(&s, &guesser, "A1", &code), 403, "locked out");
    // Other practitioners (other subjects) keep guessing for the same patient: at ten wrong
    // codes for the patient, the code is withdrawn and redemptions for them are locked.
    for n in 0..5 {
        let t = s.token(&[
            "--role",
            "practitioner",
            "--practitioner",
            &format!("guess{n}"),
            "--organization",
            &w.other_facility,
        ]);
        assert_outcome(redeem(&s, &t, "A1", "AAAA-AAAA"), 403, "");
    }
    let honest = s.token(&[
        "--role",
        "practitioner",
        "--practitioner",
        "honest",
        "--organization",
        &w.facility,
    ]);
    assert_outcome(redeem(&s, &honest, "A1", &code), 403, "locked");
    // Every failure is in the audit trail, for the patient.
    let auditor = s.token(&["--role", "auditor"]);
    let trail = json(s.get_as(&auditor, &format!("AuditEvent?patient={}&_count=100", w.a)));
    let refused = trail["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["outcome"] == "4" && e["resource"]["subtype"][0]["code"] == "operation")
        .count();
    assert!(refused >= 10, "{refused} refused redemptions audited");
    // Someone else's national identifier that does not exist: the same answer.
    let other = s.token(&[
        "--role",
        "practitioner",
        "--practitioner",
        "x",
        "--organization",
        &w.facility,
    ]);
    assert_outcome(redeem(&s, &other, "NOPE", "AAAA-AAAA"), 403, "do not match");
}

#[test]
fn restricted_records_open_only_when_the_patient_says_so() {
    let s = Server::start();
    let w = world(&s);
    let hidden = observation(&s, &w.a, "75622-1", true);
    let dr = practitioner(&s, &w, &w.facility);
    let me = citizen(&s, &w.a);
    assert_eq!(redeem(&s, &dr, "A1", &make_code(&s, &me, &w.a, false)).status(), 201);
    let path = format!("Observation/{hidden}");
    assert_outcome(s.get_as(&dr, &path), 404, "does not exist");
    let found = json(s.get_as(&dr, &format!("Observation?patient={}&_total=accurate", w.a)));
    assert_eq!(found["total"], 1, "{found}");
    assert!(!ids(&found).contains(&path));
    let everything = json(s.get_as(&dr, &format!("Patient/{}/$everything", w.a)));
    assert!(!ids(&everything).contains(&path), "{everything}");
    // The citizen always sees their own record.
    assert_eq!(s.get_as(&me, &path).status(), 200);
    // A grant that opens restricted records.
    let other = practitioner(&s, &w, &w.other_facility);
    assert_eq!(redeem(&s, &other, "A1", &make_code(&s, &me, &w.a, true)).status(), 201);
    assert_eq!(s.get_as(&other, &path).status(), 200);
    let found = json(s.get_as(&other, &format!("Observation?patient={}&_total=accurate", w.a)));
    assert_eq!(found["total"], 2, "{found}");
}

#[test]
fn the_care_team_adds_data_without_reading_the_record() {
    let s = Server::start();
    let w = world(&s);
    let dr = practitioner(&s, &w, &w.facility);
    let new_obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
        "subject": {"reference": format!("Patient/{}", w.b)}});
    assert_outcome(s.post_as(&dr, "Observation", &new_obs), 403, "may not create");
    s.create(
        &json!({"resourceType": "Encounter", "status": "in-progress", "class": {"code": "EMER"},
        "subject": {"reference": format!("Patient/{}", w.b)},
        "serviceProvider": {"reference": format!("Organization/{}", w.facility)}}),
    );
    assert_eq!(s.post_as(&dr, "Observation", &new_obs).status(), 201);
    assert_outcome(s.get_as(&dr, &format!("Observation?patient={}", w.b)), 403, "");
    // Another facility is not the care team.
    let other = practitioner(&s, &w, &w.other_facility);
    assert_outcome(s.post_as(&other, "Observation", &new_obs), 403, "may not create");
    // An appointment today with a practitioner role of the facility also counts.
    let role = s.create(&json!({"resourceType": "PractitionerRole", "organization": {"reference": format!("Organization/{}", w.other_facility)}}));
    let now = time::OffsetDateTime::now_utc();
    let start = now.format(&time::format_description::well_known::Rfc3339).unwrap();
    s.create(
        &json!({"resourceType": "Appointment", "status": "booked", "start": start, "end": start,
        "participant": [
            {"actor": {"reference": format!("Patient/{}", w.b)}, "status": "accepted"},
            {"actor": {"reference": format!("PractitionerRole/{role}")}, "status": "accepted"}]}),
    );
    assert_eq!(s.post_as(&other, "Observation", &new_obs).status(), 201);
}

#[test]
fn break_glass_opens_for_hours_notifies_the_patient_and_waits_for_review() {
    let s = Server::start();
    let w = world(&s);
    let dr = practitioner(&s, &w, &w.facility);
    let obs = format!("Observation/{}", w.obs_a);
    let glass = format!("Patient/{}/$break-glass", w.a);
    let reason = |r: &str| json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": r}]});
    assert_outcome(s.post_as(&dr, &glass, &reason("urgent")), 400, "at least 10");
    assert_outcome(
        s.post_as(
            &citizen(&s, &w.a),
            &glass,
            &reason("unconscious on arrival, no relatives"),
        ),
        403,
        "only a practitioner",
    );
    let r = s.post_as(
        &dr,
        &glass,
        &reason("Unconscious on arrival at the emergency department"),
    );
    assert_eq!(r.status(), 201);
    let consent = json(r);
    assert_eq!(consent["provision"]["purpose"][0]["code"], "ETREAT");
    assert_eq!(s.get_as(&dr, &obs).status(), 200);
    // Only the practitioner who declared it: a colleague of the same facility is not in.
    let colleague = s.token(&[
        "--role",
        "practitioner",
        "--practitioner",
        "colleague",
        "--organization",
        &w.facility,
    ]);
    assert_outcome(s.get_as(&colleague, &obs), 404, "does not exist");
    // The patient is notified (the notification outbox), in words.
    let me = citizen(&s, &w.a);
    let notes = json(s.get_as(&me, "Communication?status=in-progress"));
    let text = notes["entry"][0]["resource"]["payload"][0]["contentString"]
        .as_str()
        .unwrap_or("");
    assert!(
        text.contains("emergency") && text.contains("Unconscious on arrival"),
        "{notes}"
    );
    // The auditors' queue holds it until reviewed; the access under it says ETREAT.
    let auditor = s.token(&["--role", "auditor"]);
    let queue = json(s.get_as(&auditor, "AuditEvent/$review-queue"));
    let flagged = queue["entry"].as_array().expect("queue").clone();
    assert_eq!(flagged.len(), 1, "{queue}");
    let id = flagged[0]["resource"]["id"].as_str().unwrap().to_string();
    assert_outcome(s.get_as(&dr, "AuditEvent/$review-queue"), 403, "auditors");
    let review = format!("AuditEvent/{id}/$review");
    assert_outcome(
        s.post_as(&auditor, &review, &json!({"resourceType": "Parameters"})),
        400,
        "note",
    );
    let ok = s.post_as(
        &auditor,
        &review,
        &json!({"resourceType": "Parameters", "parameter": [{"name": "note", "valueString": "Confirmed with the ED roster"}]}),
    );
    assert_eq!(ok.status(), 200);
    let queue = json(s.get_as(&auditor, "AuditEvent/$review-queue"));
    assert!(queue["entry"].as_array().is_none_or(|e| e.is_empty()), "{queue}");
    let reads = json(s.get_as(
        &auditor,
        &format!("AuditEvent?patient={}&agent=Practitioner/{}", w.a, w.dr),
    ));
    assert!(
        reads["entry"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["resource"]["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
                && e["resource"]["subtype"][0]["code"] == "read"),
        "{reads}"
    );
}

#[test]
fn the_citizen_reads_who_opened_their_record_in_plain_words() {
    let s = Server::start();
    let w = world(&s);
    let me = citizen(&s, &w.a);
    let dr = practitioner(&s, &w, &w.facility);
    assert_eq!(redeem(&s, &dr, "A1", &make_code(&s, &me, &w.a, false)).status(), 201);
    assert_eq!(s.get_as(&dr, &format!("Observation/{}", w.obs_a)).status(), 200);
    // The citizen's own reading is not in their log.
    assert_eq!(s.get_as(&me, &format!("Observation/{}", w.obs_a)).status(), 200);
    let log = json(s.get_as(&me, &format!("Patient/{}/$access-log", w.a)));
    let entries = log["entry"].as_array().expect("entries");
    let words: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["resource"]["text"]["div"].as_str())
        .collect();
    assert!(
        words.iter().any(|t| t.contains(
            "Alaoui (health professional) at CHU Test looked at 1 item of your record for your care, under your grant Consent/"
        )),
        "{words:#?}"
    );
    // In French and in Arabic (right to left); another language is refused.
    let told = |language: &str| {
        let log = json(s.get_as(&me, &format!("Patient/{}/$access-log?language={language}", w.a)));
        log["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["resource"]["text"]["div"].as_str().map(str::to_string))
            .collect::<Vec<String>>()
    };
    let french = told("fr");
    assert!(
        french.iter().any(|t| t.contains(
            "Alaoui (professionnel de santé, CHU Test) a consulté 1 élément de votre dossier pour vos soins"
        ) && t.contains("lang=\"fr\"")),
        "{french:#?}"
    );
    let arabic = told("ar-MA");
    assert!(
        arabic
            .iter()
            .any(|t| t.contains("dir=\"rtl\"") && t.contains("اطّلع على ملفك (عدد العناصر: 1) من أجل علاجك")),
        "{arabic:#?}"
    );
    assert_outcome(
        s.get_as(&me, &format!("Patient/{}/$access-log?language=xx", w.a)),
        400,
        "en, fr or ar",
    );
    assert!(
        entries
            .iter()
            .all(|e| e["resource"]["agent"][0]["who"]["reference"] != format!("Patient/{}", w.a)),
        "no own requests: {log}"
    );
    // Nobody else reads it; auditing it is the auditors'.
    assert_outcome(
        s.get_as(&dr, &format!("Patient/{}/$access-log", w.a)),
        403,
        "only the patient",
    );
    assert_outcome(
        s.get_as(&citizen(&s, &w.b), &format!("Patient/{}/$access-log", w.a)),
        403,
        "only the patient",
    );
    assert_outcome(s.get_as(&me, "AuditEvent"), 403, "access log");
}

#[test]
fn a_guardian_makes_codes_reads_the_log_and_revokes_for_their_dependent_only() {
    let s = Server::start();
    let w = world(&s);
    // Guardians are recognised by the country profile's national identifier.
    let national = "https://sijill.health/id/ma/cnie";
    let parent = s.create(&json!({"resourceType": "Patient", "identifier": [{"system": national, "value": "G4"}]}));
    let guardian = citizen(&s, &parent);
    let child = s.create(&json!({"resourceType": "Patient", "birthDate": "2019-05-02",
        "identifier": [{"system": "urn:test:nid", "value": "C3"}]}));
    let guardianship = |relationship: &str, nid: &str, extra: Value| {
        let mut r = json!({"resourceType": "RelatedPerson", "patient": {"reference": format!("Patient/{child}")},
            "identifier": [{"system": national, "value": nid}],
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": relationship}]}]});
        r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        r
    };
    let record = |relationship: &str, extra: Value| s.create(&guardianship(relationship, "G4", extra));
    let code_for = |token: &str, patient: &str| {
        s.post_as(
            token,
            &format!("Patient/{patient}/$access-code"),
            &json!({"resourceType": "Parameters"}),
        )
    };
    // A father who is not recorded as guardian, a guardianship that ended, and an
    // inactive record do not speak for the child.
    record("FTH", json!({}));
    record("GUARD", json!({"period": {"end": "2020-01-01"}}));
    record("GUARD", json!({"active": false}));
    assert_outcome(code_for(&guardian, &child), 403, "or their guardian");
    // Only the registry (a platform administrator) records a guardianship: not a
    // practitioner who may write the child's record.
    let intruder = practitioner(&s, &w, &w.other_facility);
    let emergency = json!({"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "unconscious child brought in by ambulance"}]});
    let glass = s.post_as(&intruder, &format!("Patient/{child}/$break-glass"), &emergency);
    assert!(glass.status().is_success(), "{}", glass.status());
    assert_outcome(
        s.post_as(&intruder, "RelatedPerson", &guardianship("GUARD", "G4", json!({}))),
        403,
        "civil registry",
    );
    let listed = |token: &str| {
        json(s.get_as(token, &format!("Patient/{parent}/$dependents")))["parameter"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(listed(&guardian), 0);
    // A guardianship in force does.
    record("GUARD", json!({"period": {"start": "2019-05-02"}}));
    let mine = json(s.get_as(&guardian, &format!("Patient/{parent}/$dependents")));
    assert_eq!(
        mine["parameter"][0]["valueReference"]["reference"],
        format!("Patient/{child}"),
        "{mine}"
    );
    assert_eq!(mine["parameter"].as_array().unwrap().len(), 1, "{mine}");
    assert_outcome(
        s.get_as(&citizen(&s, &w.a), &format!("Patient/{parent}/$dependents")),
        403,
        "themself",
    );
    let r = code_for(&guardian, &child);
    assert_eq!(r.status(), 200);
    let code = json(r)["parameter"][0]["valueString"].as_str().unwrap().to_string();
    let dr = practitioner(&s, &w, &w.facility);
    let r = redeem(&s, &dr, "C3", &code);
    assert_eq!(r.status(), 201);
    let consent = json(r)["id"].as_str().unwrap().to_string();
    assert_eq!(json(r_get(&s, &dr, &child))["id"], child.as_str());
    // The guardian reads the child's access log (the practitioner's reading is in it) and
    // revokes the grant; the practitioner no longer sees the child.
    let log = json(s.get_as(&guardian, &format!("Patient/{child}/$access-log")));
    assert!(
        log["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["resource"]["agent"][0]["who"]["reference"] == format!("Practitioner/{}", w.dr)),
        "{log}"
    );
    assert_eq!(
        s.post_as(&guardian, &format!("Consent/{consent}/$revoke"), &json!({}))
            .status(),
        200
    );
    assert_outcome(r_get(&s, &dr, &child), 404, "does not exist");
    // Being the child's guardian gives nothing over anyone else.
    assert_outcome(code_for(&guardian, &w.a), 403, "or their guardian");
    assert_outcome(
        s.get_as(&guardian, &format!("Patient/{}/$access-log", w.a)),
        403,
        "their guardian",
    );
    // A citizen cannot name themself guardian.
    let stranger = citizen(&s, &w.a);
    let forged = s.post_as(
        &stranger,
        "RelatedPerson",
        &json!({"resourceType": "RelatedPerson", "patient": {"reference": format!("Patient/{child}")},
            "identifier": [{"system": "urn:test:nid", "value": "A1"}],
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "GUARD"}]}]}),
    );
    assert_eq!(forged.status(), 403, "{}", forged.text().unwrap_or_default());
    assert_outcome(code_for(&stranger, &child), 403, "or their guardian");
    // An identifier two records carry proves nobody's guardianship.
    s.create(&json!({"resourceType": "Patient", "identifier": [{"system": national, "value": "G4"}]}));
    assert_outcome(code_for(&guardian, &child), 403, "or their guardian");
}

fn r_get(s: &Server, token: &str, patient: &str) -> reqwest::blocking::Response {
    s.get_as(token, &format!("Patient/{patient}"))
}

/// What a practitioner without a valid grant for patient A must not learn about A through
/// any search feature: A's resource ids never appear, and counts do not include them.
fn assert_nothing_leaks(s: &Server, token: &str, w: &World) {
    let a = &w.a;
    let secret = [format!("Observation/{}", w.obs_a), format!("Patient/{a}")];
    let paths = [
        format!("Observation/{}", w.obs_a),
        format!("Patient/{a}"),
        format!("Observation?patient={a}"),
        format!("Observation?subject=Patient/{a}&_summary=count"),
        format!("Observation?patient={a}&_total=accurate"),
        format!("Patient/{a}/Observation"),
        format!("Patient?_id={a}"),
        "Patient?identifier=urn:test:nid|A1".to_string(),
        "Observation?subject:Patient.identifier=urn:test:nid|A1".to_string(),
        "Patient?_has:Observation:subject:code=4548-4".to_string(),
        format!("Patient?_id={}&_revinclude=Observation:subject", w.b),
        format!("Observation?patient={}&_include=Observation:subject", w.b),
        format!("Observation/{}/_history", w.obs_a),
        "Observation/_history".to_string(),
        "_history".to_string(),
        format!("Patient/{a}/$everything"),
        "Patient/$everything".to_string(),
        format!("Patient/{a}/$access-log"),
        format!("AuditEvent?patient={a}"),
    ];
    for path in &paths {
        let r = s.get_as(token, path);
        let status = r.status().as_u16();
        let body = r.text().unwrap_or_default();
        if status == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            let shown = ids(&v);
            assert!(
                secret.iter().all(|id| !shown.contains(id)),
                "{path} shows one of {secret:?}: {body}"
            );
        }
        if status == 200 && (path.contains("_summary=count") || path.contains("_total=accurate")) {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["total"], 0, "{path}: {body}");
        }
        assert!([200, 403, 404].contains(&status), "{path}: {status} {body}");
    }
    // Hidden looks exactly like absent.
    let absent = s.get_as(token, "Observation/no-such-observation");
    assert_eq!(absent.status(), 404);
    let hidden = s.get_as(token, &format!("Observation/{}", w.obs_a));
    assert_eq!(hidden.status(), 404);
    assert_eq!(json(absent)["issue"][0]["code"], json(hidden)["issue"][0]["code"]);
    // Bundle GET entries.
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Observation/{}", w.obs_a)}},
        {"request": {"method": "GET", "url": format!("Observation?patient={a}")}}]});
    let answer = json(s.post_as(token, "", &bundle));
    let entries = answer["entry"].as_array().expect("entries");
    assert!(
        entries[0]["response"]["status"]
            .as_str()
            .unwrap_or("")
            .starts_with("404"),
        "{answer}"
    );
    assert!(entries[0].get("resource").is_none(), "{answer}");
    let found = entries[1]["resource"]["entry"].as_array().map_or(0, Vec::len);
    assert_eq!(found, 0, "{answer}");
}

#[test]
fn nothing_leaks_without_a_grant_with_an_expired_one_or_with_another_patients() {
    let s = Server::start_with(&["--grant-ttl", "2s"]);
    let w = world(&s);
    // No grant at all.
    let none = practitioner(&s, &w, &w.facility);
    assert_nothing_leaks(&s, &none, &w);
    // A grant for another patient (B), valid.
    let other = practitioner(&s, &w, &w.other_facility);
    let me_b = citizen(&s, &w.b);
    assert_eq!(
        redeem(&s, &other, "B2", &make_code(&s, &me_b, &w.b, false)).status(),
        201
    );
    assert_eq!(
        json(s.get_as(&other, &format!("Observation?patient={}&_total=accurate", w.b)))["total"],
        1
    );
    assert_nothing_leaks(&s, &other, &w);
    // A grant for A that has expired.
    let expired = practitioner(&s, &w, &w.facility);
    let me_a = citizen(&s, &w.a);
    assert_eq!(
        redeem(&s, &expired, "A1", &make_code(&s, &me_a, &w.a, false)).status(),
        201
    );
    assert_eq!(s.get_as(&expired, &format!("Observation/{}", w.obs_a)).status(), 200);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_nothing_leaks(&s, &expired, &w);
}

#[test]
fn a_transaction_bundle_creates_only_what_its_sender_may_create_and_does_not_read_the_trail() {
    let s = Server::start();
    let w = world(&s);
    let me = citizen(&s, &w.a);
    let transaction = |entries: Value| json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let post = |rt: &str, resource: Value| json!({"request": {"method": "POST", "url": rt}, "resource": resource});
    let relations = || s.get("RelatedPerson?_summary=count");
    let before = json(relations())["total"].clone();
    // A citizen naming themself guardian of someone else, inside a transaction.
    let forged = s.post_as(
        &me,
        "",
        &transaction(json!([post("RelatedPerson", json!({"resourceType": "RelatedPerson",
            "patient": {"reference": format!("Patient/{}", w.b)},
            "identifier": [{"system": "urn:test:nid", "value": "A1"}],
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "GUARD"}]}]}))])),
    );
    assert_eq!(forged.status(), 403, "{}", forged.text().unwrap_or_default());
    // A practitioner without a grant adding to a patient's record, inside a transaction.
    let dr = practitioner(&s, &w, &w.facility);
    let sneaked = s.post_as(
        &dr,
        "",
        &transaction(json!([post(
            "Observation",
            json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": format!("Patient/{}", w.b)}})
        )])),
    );
    assert!(sneaked.status().is_client_error(), "{}", sneaked.status());
    assert_eq!(json(relations())["total"], before, "nothing was created");
    // A conditional create that matches a record the sender may not see does not show it.
    let matched = s.post_as(
        &dr,
        "",
        &transaction(
            json!([{"request": {"method": "POST", "url": "Observation", "ifNoneExist": format!("_id={}", w.obs_a)},
            "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}}]),
        ),
    );
    assert!(matched.status().is_client_error(), "{}", matched.status());
    assert!(!matched.text().unwrap().contains("4548-4"));
    // The access log is read on its own, not inside a transaction; a bad date is refused.
    let inside = s.post_as(
        &me,
        "",
        &transaction(json!([{"request": {"method": "GET", "url": format!("Patient/{}/$access-log", w.a)}}])),
    );
    assert_outcome(inside, 400, "on their own");
    assert_outcome(
        s.get_as(&me, &format!("Patient/{}/$access-log?date=%E2%82%AC", w.a)),
        400,
        "date",
    );
}
