//! Identity and authorization over HTTP: tokens are required, and no actor reaches data
//! their role, scopes and grants do not cover — by any route.

mod common;

use common::{assert_outcome, json, Server};
use reqwest::blocking::Client;
use serde_json::{json, Value};

/// Two patients with records, a facility, a practitioner, an insurer.
struct World {
    a: String,
    b: String,
    obs_a: String,
    obs_b: String,
    enc_b: String,
    facility: String,
    dr: String,
    insurer: String,
}

fn world(s: &Server) -> World {
    let facility = s.create(&json!({"resourceType": "Organization", "name": "CHU Test"}));
    let insurer = s.create(&json!({"resourceType": "Organization", "name": "Fund"}));
    let dr = s.create(&json!({"resourceType": "Practitioner", "name": [{"family": "Alaoui"}]}));
    let patient = |nid: &str, family: &str| {
        s.create(&json!({"resourceType": "Patient", "name": [{"family": family}],
            "identifier": [{"system": "urn:test:nid", "value": nid}], "generalPractitioner": [{"reference": format!("Practitioner/{dr}")}]}))
    };
    let a = patient("A1", "Amrani");
    let b = patient("B2", "Bennani");
    let obs = |p: &str, code: &str| {
        s.create(&json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "subject": {"reference": format!("Patient/{p}")}}))
    };
    let obs_a = obs(&a, "4548-4");
    let obs_b = obs(&b, "4548-4");
    obs(&b, "8480-6");
    let enc = |p: &str| {
        s.create(&json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": format!("Patient/{p}")}, "participant": [{"individual": {"reference": format!("Practitioner/{dr}")}}],
            "serviceProvider": {"reference": format!("Organization/{facility}")}}))
    };
    enc(&a);
    let enc_b = enc(&b);
    for (p, payor) in [(&a, &insurer), (&b, &facility)] {
        s.create(&json!({"resourceType": "Coverage", "status": "active", "beneficiary": {"reference": format!("Patient/{p}")},
            "payor": [{"reference": format!("Organization/{payor}")}]}));
    }
    World {
        a,
        b,
        obs_a,
        obs_b,
        enc_b,
        facility,
        dr,
        insurer,
    }
}

fn ids(bundle: &Value, mode: &str) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap_or(""),
                e["resource"]["id"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn requests_without_a_valid_token_are_refused() {
    let s = Server::start();
    // The CapabilityStatement and the SMART discovery document are open.
    assert_eq!(
        Client::new()
            .get(format!("{}/metadata", s.base))
            .send()
            .unwrap()
            .status(),
        200
    );
    let smart = json(
        Client::new()
            .get(format!("{}/.well-known/smart-configuration", s.base))
            .send()
            .unwrap(),
    );
    assert_eq!(smart["code_challenge_methods_supported"], json!(["S256"]));
    let no_token = Client::new().get(format!("{}/Patient", s.base)).send().unwrap();
    assert!(no_token.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_outcome(no_token, 401, "access token");
    assert_outcome(s.get_as("not-a-jwt", "Patient"), 401, "not a JWT");
    // A token for another server (audience) is refused.
    let elsewhere = common::mint_token(s.dir.path(), "http://127.0.0.1:1/fhir", &["--role", "admin"]);
    assert_outcome(s.get_as(&elsewhere, "Patient"), 401, "");
    // Tampered payload: the signature no longer matches.
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let citizen = s.token(&["--role", "citizen", "--patient", "p1"]);
    let parts: Vec<&str> = citizen.split('.').collect();
    let mut claims = common::decode_payload(&citizen);
    claims["role"] = "admin".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_outcome(s.get_as(&forged, "Patient"), 401, "signature");
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    assert_outcome(s.get_as(&unsigned, "Patient"), 401, "");
    // A write without a token changes nothing.
    let r = Client::new()
        .post(format!("{}/Patient", s.base))
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient"}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(json(s.get("Patient?_summary=count"))["total"], 0);
    // Key rotation: tokens signed before keep working, new ones use the new key.
    assert_eq!(s.get_as(&citizen, "Patient/p1").status(), 404);
    let out = common::sijill(s.dir.path(), &["keys", "rotate"]);
    assert!(out.status.success());
    assert_eq!(s.get_as(&citizen, "Patient/p1").status(), 404);
    let after = s.token(&["--role", "admin"]);
    assert_eq!(s.get_as(&after, "Patient").status(), 200);
}

#[test]
fn a_citizen_reaches_only_their_own_record_by_every_route() {
    let s = Server::start();
    let w = world(&s);
    let me = s.token(&["--role", "citizen", "--patient", &w.a]);
    let get = |path: &str| s.get_as(&me, path);
    // Read and vread: another's record looks exactly like an absent one.
    assert_eq!(get(&format!("Patient/{}", w.a)).status(), 200);
    let hidden = assert_outcome(get(&format!("Patient/{}", w.b)), 404, "does not exist");
    let absent = assert_outcome(get("Patient/no-such-patient"), 404, "does not exist");
    assert_eq!(
        hidden["issue"][0]["diagnostics"].as_str().unwrap().replace(&w.b, "X"),
        absent["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .replace("no-such-patient", "X")
    );
    assert_outcome(get(&format!("Observation/{}", w.obs_b)), 404, "does not exist");
    assert_outcome(
        get(&format!("Observation/{}/_history/1", w.obs_b)),
        404,
        "does not exist",
    );
    assert_eq!(get(&format!("Observation/{}", w.obs_a)).status(), 200);
    // Search: only their own, and the counts say so.
    let all = json(get("Observation?_total=accurate"));
    assert_eq!(ids(&all, "match"), vec![format!("Observation/{}", w.obs_a)]);
    assert_eq!(all["total"], 1);
    assert_eq!(json(get("Observation?_summary=count"))["total"], 1);
    assert!(ids(&json(get(&format!("Observation?subject=Patient/{}", w.b))), "match").is_empty());
    assert!(ids(&json(get(&format!("Patient/{}/Observation", w.b))), "match").is_empty());
    assert_eq!(ids(&json(get("Patient")), "match"), vec![format!("Patient/{}", w.a)]);
    // _include and _revinclude never bring another's record.
    let with_patients = json(get("Encounter?_include=Encounter:subject"));
    assert_eq!(ids(&with_patients, "include"), vec![format!("Patient/{}", w.a)]);
    let encounters = json(get(&format!(
        "Practitioner?_id={}&_revinclude=Encounter:participant",
        w.dr
    )));
    assert_eq!(ids(&encounters, "match"), vec![format!("Practitioner/{}", w.dr)]);
    assert_eq!(ids(&encounters, "include").len(), 1, "{encounters}");
    let revinclude_patients = json(get(&format!(
        "Practitioner?_id={}&_revinclude=Patient:general-practitioner",
        w.dr
    )));
    assert_eq!(ids(&revinclude_patients, "include"), vec![format!("Patient/{}", w.a)]);
    // Chains and _has into records are refused rather than run over others' records.
    assert_outcome(get("Observation?subject:Patient.name=Bennani"), 403, "chained search");
    assert_outcome(
        get("Practitioner?_has:Encounter:participant:subject=Patient/x"),
        403,
        "_has",
    );
    // History: an instance of another's record is absent; type and system history refused.
    assert_outcome(get(&format!("Observation/{}/_history", w.obs_b)), 404, "does not exist");
    assert_eq!(get(&format!("Observation/{}/_history", w.obs_a)).status(), 200);
    assert_outcome(get("Observation/_history"), 403, "citizen");
    assert_outcome(get("_history"), 403, "citizen");
    // $everything: their own only.
    let mine = json(get(&format!("Patient/{}/$everything", w.a)));
    assert!(ids(&mine, "match")
        .iter()
        .all(|id| !id.contains(&w.b) && !id.contains(&w.obs_b)));
    assert!(ids(&mine, "match").contains(&format!("Observation/{}", w.obs_a)));
    assert_outcome(get(&format!("Patient/{}/$everything", w.b)), 404, "does not exist");
    assert_outcome(get("Patient/$everything"), 403, "across patients");
    // Bundle GET entries go through the same guard.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Observation/{}", w.obs_b)}},
        {"request": {"method": "GET", "url": format!("Observation?subject=Patient/{}", w.b)}},
        {"request": {"method": "GET", "url": format!("Observation/{}", w.obs_a)}}]});
    let answer = json(s.post_as(&me, "", &batch));
    assert_eq!(answer["entry"][0]["response"]["status"], "404 Not Found", "{answer}");
    assert_eq!(answer["entry"][1]["resource"]["entry"], Value::Null, "{answer}");
    assert_eq!(answer["entry"][2]["response"]["status"], "200 OK");
    // Citizens do not write clinical data, and a refused write changes nothing.
    let write = s.post_as(
        &me,
        "Observation",
        &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": format!("Patient/{}", w.a)}}),
    );
    assert_outcome(write, 403, "do not allow create on Observation");
    assert_eq!(json(s.get("Observation?_summary=count"))["total"], 3);
    let delete = s.delete_as(&me, &format!("Observation/{}", w.obs_b));
    assert_eq!(delete.status(), 404);
    assert_eq!(s.get(&format!("Observation/{}", w.obs_b)).status(), 200);
    // The directory is public to every signed-in actor.
    assert_eq!(ids(&json(get("Organization")), "match").len(), 2);
    // A narrower token sees less: Observations only.
    let narrow = s.token(&[
        "--role",
        "citizen",
        "--patient",
        &w.a,
        "--scope",
        "patient/Observation.rs",
    ]);
    assert_eq!(s.get_as(&narrow, &format!("Observation/{}", w.obs_a)).status(), 200);
    assert_outcome(
        s.get_as(&narrow, &format!("Patient/{}", w.a)),
        403,
        "insufficient_scope",
    );
}

#[test]
fn a_practitioner_reads_a_record_only_under_an_active_grant() {
    let s = Server::start();
    let w = world(&s);
    let dr = s.token(&[
        "--role",
        "practitioner",
        "--practitioner",
        &w.dr,
        "--organization",
        &w.facility,
    ]);
    assert_outcome(s.get_as(&dr, "Observation"), 403, "across patients");
    assert_outcome(
        s.get_as(&dr, &format!("Observation/{}", w.obs_b)),
        404,
        "does not exist",
    );
    // The patient grants the facility access (the consent issue creates these from the code).
    let consent = |end: &str| {
        json!({"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": format!("Patient/{}", w.b)},
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "provision": {"type": "permit", "period": {"end": end},
                "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
                           "reference": {"reference": format!("Organization/{}", w.facility)}}]}})
    };
    let grant = s.create(&consent("2999-01-01T00:00:00Z"));
    assert_eq!(s.get_as(&dr, &format!("Observation/{}", w.obs_b)).status(), 200);
    let found = json(s.get_as(&dr, "Observation?_total=accurate"));
    assert_eq!(found["total"], 2, "only the granting patient's: {found}");
    assert_outcome(
        s.get_as(&dr, &format!("Observation/{}", w.obs_a)),
        404,
        "does not exist",
    );
    assert_eq!(s.get_as(&dr, &format!("Encounter/{}", w.enc_b)).status(), 200);
    // Writing for the granting patient is allowed; deleting is not.
    let add = s.post_as(
        &dr,
        "Observation",
        &json!({"resourceType": "Observation", "status": "final", "code": {"text": "pulse"}, "subject": {"reference": format!("Patient/{}", w.b)}}),
    );
    assert_eq!(add.status(), 201);
    assert_outcome(
        s.delete_as(&dr, &format!("Observation/{}", w.obs_b)),
        403,
        "may not delete",
    );
    // Revoked (ended) grant: effective on the next request.
    let mut ended = consent("2001-01-01T00:00:00Z");
    ended["id"] = grant.clone().into();
    assert_eq!(s.put(&format!("Consent/{grant}"), &ended).status(), 200);
    assert_outcome(
        s.get_as(&dr, &format!("Observation/{}", w.obs_b)),
        404,
        "does not exist",
    );
}

#[test]
fn insurers_planners_and_auditors_see_only_what_their_role_allows() {
    let s = Server::start();
    let w = world(&s);
    let fund = s.token(&["--role", "insurer", "--organization", &w.insurer]);
    let coverage = json(s.get_as(&fund, "Coverage"));
    assert_eq!(ids(&coverage, "match").len(), 1, "{coverage}");
    assert!(coverage.to_string().contains(&w.a));
    assert_outcome(s.get_as(&fund, "Observation"), 403, "insurer");
    let planner = s.token(&["--role", "planner"]);
    assert_eq!(json(s.get_as(&planner, "Observation?_summary=count"))["total"], 3);
    assert_outcome(s.get_as(&planner, "Observation"), 403, "planner");
    assert_outcome(s.get_as(&planner, &format!("Patient/{}", w.a)), 404, "does not exist");
    let auditor = s.token(&["--role", "auditor"]);
    assert_eq!(s.get_as(&auditor, "AuditEvent").status(), 200);
    assert_outcome(s.get_as(&auditor, "Observation"), 403, "auditor");
    // A facility administrator manages their own facility's directory only.
    let admin_of = s.token(&["--role", "facility-admin", "--organization", &w.facility]);
    let location = |org: &str| json!({"resourceType": "Location", "name": "Ward 3", "managingOrganization": {"reference": format!("Organization/{org}")}});
    let post = |body: Value| s.post_as(&admin_of, "Location", &body);
    assert_eq!(post(location(&w.facility)).status(), 201);
    assert_outcome(post(location(&w.insurer)), 403, "facility-admin may not create");
}
