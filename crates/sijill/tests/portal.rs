//! The citizen portal in a real headless Chromium: sign in through the (development) eID
//! page, read who opened the record, make an access code, revoke a grant.

mod common;

#[path = "common/browser.rs"]
mod browser;

use common::{assert_outcome, json, practitioner_at, Server};
use serde_json::json;

const NATIONAL_ID_SYSTEM: &str = "https://sijill.health/id/ma/cnie";

/// Opens the portal and signs in at the (development) eID page with a national identifier.
fn sign_in(browser: &browser::Browser, s: &Server, national_id: &str) {
    browser.open(&format!("{}/portal/", s.root));
    browser.click("#sign-in");
    browser.type_into("input[name=national_id]", national_id);
    browser.click("button[type=submit]");
}

#[test]
fn a_citizen_signs_in_sees_who_opened_the_record_makes_a_code_and_revokes_a_grant() {
    let Some(browser) = browser::browser() else {
        return;
    };
    let s = Server::start();
    let patient = s.create(
        &json!({"resourceType": "Patient", "name": [{"given": ["Salma"], "family": "Bennani"}],
        "identifier": [{"system": NATIONAL_ID_SYSTEM, "value": "PX123456"}]}),
    );
    let obs = s.create(
        &json!({"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
        "subject": {"reference": format!("Patient/{patient}")}}),
    );
    let practitioner = practitioner_at(&s, "Hôpital <b>Ibn</b> Sina", "Alaoui");
    // A grant through the API, and a practitioner reading under it.
    let citizen = s.token(&["--role", "citizen", "--patient", &patient]);
    let made = json(s.post_as(
        &citizen,
        &format!("Patient/{patient}/$access-code"),
        &json!({"resourceType": "Parameters"}),
    ));
    let code = made["parameter"][0]["valueString"].as_str().unwrap().to_string();
    let redeemed = s.post_as(
        &practitioner,
        "Patient/$grant-access",
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "identifier", "valueIdentifier": {"system": NATIONAL_ID_SYSTEM, "value": "PX123456"}},
            {"name": "code", "valueString": code}]}),
    );
    assert_eq!(redeemed.status(), 201);
    let observation = format!("Observation/{obs}");
    assert_eq!(s.get_as(&practitioner, &observation).status(), 200);

    // The citizen opens the portal and signs in with the eID (here the development page).
    sign_in(&browser, &s, "PX123456");
    assert_eq!(
        browser.texts_when("#who", |t| t.iter().any(|w| !w.is_empty())),
        vec!["Salma Bennani"]
    );
    assert!(
        !browser.url().contains("code="),
        "the code leaves the address bar: {}",
        browser.url()
    );
    // Who opened the record, in plain words, with the facility's name (shown as text).
    let log = browser.texts_when("#access-log li", |t| !t.is_empty());
    assert!(
        log.iter().any(|l| l.contains("looked at 1 item of your record")),
        "{log:?}"
    );
    // In Arabic, right to left, the same access in Arabic words; then back to English.
    browser.click("#language option[value=ar]");
    browser.texts_when("h1", |t| t.iter().any(|h| h == "ملفي الصحي"));
    browser.texts_when("#access-log li", |t| t.iter().any(|l| l.contains("اطّلع على ملفك")));
    browser.texts_when("#grants li", |t| t.iter().any(|g| g.contains("يمكنها الاطلاع على ملفك")));
    browser.click("#language option[value=en]");
    browser.texts_when("h1", |t| t.iter().any(|h| h == "My health record"));
    let grants = browser.texts_when("#grants li", |t| t.iter().any(|g| g.contains("can read")));
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert!(
        grants[0].contains("Hôpital <b>Ibn</b> Sina can read your record"),
        "{grants:?}"
    );
    // A new access code, shaped as the API makes them.
    browser.click("#make-code");
    let shown = browser.texts_when("#code", |t| t.iter().any(|c| c.len() == 9));
    assert!(
        shown[0]
            .chars()
            .all(|c| c == '-' || "ACDEFHJKMNPRTUVWXY34679".contains(c)),
        "{shown:?}"
    );
    // Revoking: the page shows no grant, and the practitioner no longer sees the record.
    browser.click("#grants button.revoke");
    browser.texts_when("#no-grants", |t| t.iter().any(|x| x.contains("No facility")));
    assert_outcome(s.get_as(&practitioner, &observation), 404, "does not exist");
    // Signing out forgets the session.
    browser.click("#sign-out");
    browser.texts_when("#sign-in", |t| t.iter().any(|x| x.contains("Sign in")));
}

#[test]
fn a_guardian_makes_a_code_for_a_child_in_the_portal() {
    let Some(browser) = browser::browser() else {
        return;
    };
    let s = Server::start();
    s.create(
        &json!({"resourceType": "Patient", "name": [{"given": ["Karim"], "family": "Tazi"}],
        "identifier": [{"system": NATIONAL_ID_SYSTEM, "value": "GT55555"}]}),
    );
    let child = s.create(
        &json!({"resourceType": "Patient", "name": [{"given": ["Yasmine"], "family": "Tazi"}],
        "birthDate": "2018-03-01", "identifier": [{"system": NATIONAL_ID_SYSTEM, "value": "CT66666"}]}),
    );
    // The civil registry's record (written by a platform administrator).
    s.create(&json!({"resourceType": "RelatedPerson", "patient": {"reference": format!("Patient/{child}")},
        "identifier": [{"system": NATIONAL_ID_SYSTEM, "value": "GT55555"}],
        "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "GUARD"}]}]}));
    sign_in(&browser, &s, "GT55555");
    let care = browser.texts_when("#dependents li.dependent", |t| !t.is_empty());
    assert!(care.len() == 1 && care[0].contains("Yasmine Tazi"), "{care:?}");
    browser.click("#dependents button.dependent-code");
    let made = browser.texts_when(".dependent-out li", |t| t.iter().any(|x| x.contains("Code for")));
    let code = made[0].split(": ").nth(1).unwrap().chars().take(9).collect::<String>();
    // The code works for the child, with the child's national identifier.
    let practitioner = practitioner_at(&s, "Centre de santé", "Test");
    let redeemed = s.post_as(
        &practitioner,
        "Patient/$grant-access",
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "identifier", "valueIdentifier": {"system": NATIONAL_ID_SYSTEM, "value": "CT66666"}},
            {"name": "code", "valueString": code}]}),
    );
    assert_eq!(redeemed.status(), 201, "{code}");
    assert_eq!(s.get_as(&practitioner, &format!("Patient/{child}")).status(), 200);
    // The guardian sees that reading in the child's access log.
    browser.click("#dependents button.dependent-log");
    browser.texts_when(".dependent-out li", |t| t.iter().any(|x| x.contains("looked at")));
}

#[test]
fn the_portal_page_allows_only_its_own_script() {
    let s = Server::start();
    let page = reqwest::blocking::get(format!("{}/portal/", s.root)).unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("default-src 'none'"),
        "{policy}"
    );
    assert!(page.text().unwrap().contains("/portal/portal.js"));
    // An app posing as the portal with another redirect address is refused.
    let refused = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/auth/authorize", s.root))
        .query(&[
            ("client_id", "sijill-portal"),
            ("redirect_uri", "https://evil.example/portal/"),
        ])
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().unwrap().contains("redirect address"));
}
