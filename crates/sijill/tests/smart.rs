//! Sijill as a SMART authorization server: an app's standalone launch through the
//! development identity provider (authorization code + PKCE, refresh rotation, revocation)
//! and an institution system's Backend Services token (`private_key_jwt`).

mod common;

use common::{assert_outcome, json, pkce_challenge, register_app, sijill, Server};
use reqwest::blocking::Client;
use serde_json::{json, Value};

const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn no_redirects() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn query_of(location: &str) -> Vec<(String, String)> {
    let q = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[test]
fn an_app_signs_a_citizen_in_with_pkce_and_refreshes_with_rotation() {
    let s = Server::start();
    let patient = s.create(&json!({"resourceType": "Patient", "identifier": [{"system": "https://sijill.health/id/ma/cnie", "value": "AB123456"}]}));
    let other = s.create(&json!({"resourceType": "Patient"}));
    let client_id = register_app(
        &s,
        "openid fhirUser launch/patient offline_access patient/*.rs",
        REDIRECT,
    );
    let verifier = "a-verifier-that-is-long-enough-to-satisfy-rfc-7636-rules-0123456789";
    let challenge = pkce_challenge(verifier);
    let http = no_redirects();
    let authorize = |challenge: &str| {
        http.get(format!("{}/auth/authorize", s.root))
            .query(&[
                ("response_type", "code"),
                ("client_id", client_id.as_str()),
                ("redirect_uri", REDIRECT),
                (
                    "scope",
                    "openid fhirUser launch/patient offline_access patient/*.rs patient/*.cruds",
                ),
                ("state", "app-state-1"),
                ("aud", s.base.as_str()),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .unwrap()
    };
    // Unknown app: an error page, no redirect.
    let unknown = http
        .get(format!(
            "{}/auth/authorize?client_id=nobody&redirect_uri={REDIRECT}",
            s.root
        ))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 400);
    // The login id hidden in the development identity provider's page, and signing in with it.
    let login_of = |page: &str| {
        page.split("name=\"login\" value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let sign_in = |login: &str| {
        http.post(format!("{}/auth/dev-login", s.root))
            .form(&[("login", login), ("national_id", "AB123456")])
            .send()
            .unwrap()
    };
    // The development identity provider's page says what it is.
    let page = authorize(&challenge).text().unwrap();
    assert!(page.contains("DEVELOPMENT IDENTITY PROVIDER"), "{page}");
    let login = login_of(&page);
    let signed_in = sign_in(&login);
    assert!(signed_in.status().is_redirection());
    let back = query_of(signed_in.headers()["location"].to_str().unwrap());
    assert_eq!(param(&back, "state").as_deref(), Some("app-state-1"));
    let code = param(&back, "code").expect("code");
    // The login state is single use.
    assert_eq!(sign_in(&login).status(), 400);
    let exchange = |code: &str, verifier: &str| {
        http.post(format!("{}/auth/token", s.root))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("client_id", client_id.as_str()),
                ("code_verifier", verifier),
            ])
            .send()
            .unwrap()
    };
    // A wrong verifier spends nothing but gets nothing... and the code is single use anyway.
    let wrong = exchange(&code, "x-wrong-verifier-x-wrong-verifier-x-wrong-verifier-0000");
    assert_eq!(wrong.status(), 400);
    assert_eq!(json(wrong)["error"], "invalid_grant");
    // Start again and exchange correctly.
    let signed_in = sign_in(&login_of(&authorize(&challenge).text().unwrap()));
    let code = param(&query_of(signed_in.headers()["location"].to_str().unwrap()), "code").unwrap();
    let tokens = json(exchange(&code, verifier));
    assert_eq!(tokens["patient"], patient.as_str(), "{tokens}");
    // The app asked for write scopes too; a citizen is granted read and search only.
    assert!(!tokens["scope"].as_str().unwrap().contains("cruds"), "{tokens}");
    assert!(tokens["id_token"].is_string());
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(s.get_as(&access, &format!("Patient/{patient}")).status(), 200);
    assert_eq!(s.get_as(&access, &format!("Patient/{other}")).status(), 404);
    assert_eq!(exchange(&code, verifier).status(), 400, "a code is single use");
    // Refresh with rotation; a spent refresh token used again ends the family.
    let refresh = |token: &str| {
        http.post(format!("{}/auth/token", s.root))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("client_id", client_id.as_str()),
            ])
            .send()
            .unwrap()
    };
    let first = tokens["refresh_token"].as_str().unwrap().to_string();
    let rotated = json(refresh(&first));
    let second = rotated["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert_eq!(refresh(&first).status(), 400, "reuse of a spent refresh token");
    assert_eq!(refresh(&second).status(), 400, "the family was revoked by the reuse");
    // Revocation takes effect on the next request.
    let revoked = rotated["access_token"].as_str().unwrap().to_string();
    assert_eq!(s.get_as(&revoked, &format!("Patient/{patient}")).status(), 200);
    http.post(format!("{}/auth/revoke", s.root))
        .form(&[("token", revoked.as_str())])
        .send()
        .unwrap();
    assert_outcome(s.get_as(&revoked, &format!("Patient/{patient}")), 401, "revoked");
    // Introspection is for administrators and systems.
    let seen = json(
        s.http()
            .post(format!("{}/auth/introspect", s.root))
            .form(&[("token", access.as_str())])
            .send()
            .unwrap(),
    );
    assert_eq!(seen["active"], true);
    assert_eq!(seen["patient"], patient.as_str());
    let refused = http
        .post(format!("{}/auth/introspect", s.root))
        .bearer_auth(&access)
        .form(&[("token", access.as_str())])
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);
}

/// A P-384 key pair: the private key for signing, the public one as a JWK Set.
fn system_key(kid: &str) -> (jsonwebtoken::EncodingKey, Value) {
    use p384::pkcs8::EncodePrivateKey;
    let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let key = jsonwebtoken::EncodingKey::from_ec_der(secret.to_pkcs8_der().unwrap().as_bytes());
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES384).unwrap();
    jwk.common.key_id = Some(kid.into());
    (key, json!({"keys": [jwk]}))
}

fn assertion(key: &jsonwebtoken::EncodingKey, kid: &str, client_id: &str, audience: &str, jti: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some(kid.into());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({"iss": client_id, "sub": client_id, "aud": audience, "exp": now + 240, "iat": now, "jti": jti});
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

#[test]
fn an_institution_system_gets_a_token_with_a_signed_assertion() {
    let s = Server::start();
    let fund = s.create(&json!({"resourceType": "Organization", "name": "CNSS"}));
    let member = s.create(&json!({"resourceType": "Patient"}));
    s.create(&json!({"resourceType": "Coverage", "status": "active", "beneficiary": {"reference": format!("Patient/{member}")},
        "payor": [{"reference": format!("Organization/{fund}")}]}));
    let (key, public) = system_key("k1");
    let jwks = s.dir.path().join("fund-keys.json");
    std::fs::write(&jwks, public.to_string()).unwrap();
    let out = sijill(
        s.dir.path(),
        &[
            "client",
            "add",
            "--name",
            "CNSS claims",
            "--kind",
            "system",
            "--role",
            "insurer",
            "--organization",
            &fund,
            "--scope",
            "system/Coverage.rs system/Claim.cruds",
            "--jwks",
            jwks.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let client_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let endpoint = format!("{}/auth/token", s.root);
    let ask = |assertion: &str| {
        Client::new()
            .post(&endpoint)
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "system/Coverage.rs system/Observation.rs"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
            ])
            .send()
            .unwrap()
    };
    let signed = assertion(&key, "k1", &client_id, &endpoint, "jti-1");
    let tokens = json(ask(&signed));
    assert_eq!(tokens["scope"], "system/Coverage.rs", "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(json(s.get_as(access, "Coverage?_summary=count"))["total"], 1);
    assert_outcome(s.get_as(access, "Observation"), 403, "insufficient_scope");
    // Replay, a stranger's key, the wrong audience: refused.
    assert_eq!(ask(&signed).status(), 401);
    let (stranger, _) = system_key("k1");
    assert_eq!(
        ask(&assertion(&stranger, "k1", &client_id, &endpoint, "jti-2")).status(),
        401
    );
    assert_eq!(
        ask(&assertion(&key, "k1", &client_id, "http://elsewhere/token", "jti-3")).status(),
        401
    );
    // Key rotation by the administrator: the new key works, the old one no longer does.
    let (new_key, new_public) = system_key("k2");
    std::fs::write(&jwks, new_public.to_string()).unwrap();
    assert!(sijill(
        s.dir.path(),
        &["client", "keys", &client_id, "--jwks", jwks.to_str().unwrap()]
    )
    .status
    .success());
    assert_eq!(
        ask(&assertion(&new_key, "k2", &client_id, &endpoint, "jti-4")).status(),
        200
    );
    assert_eq!(
        ask(&assertion(&key, "k1", &client_id, &endpoint, "jti-5")).status(),
        401
    );
    // A revoked client gets nothing.
    assert!(sijill(s.dir.path(), &["client", "revoke", &client_id]).status.success());
    assert_eq!(
        ask(&assertion(&new_key, "k2", &client_id, &endpoint, "jti-6")).status(),
        401
    );
}

#[test]
fn an_administrator_manages_clients_over_the_api() {
    let s = Server::start();
    let fund = s.create(&json!({"resourceType": "Organization", "name": "CNAS"}));
    let api = format!("{}/auth/clients", s.root);
    let admin = |method: reqwest::Method, url: &str| {
        Client::new()
            .request(method, url)
            .header("authorization", format!("Bearer {}", s.admin_token))
    };
    // Only a platform administrator.
    assert_eq!(Client::new().get(&api).send().unwrap().status(), 401);
    let planner = s.token(&["--role", "planner"]);
    let r = Client::new()
        .get(&api)
        .header("authorization", format!("Bearer {planner}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Bad registrations change nothing.
    let bad = [
        "{not json".to_string(),
        json!({"name": "x", "kind": "app", "scope": "openid", "redirect_uris": ["http://evil.example/cb"]}).to_string(),
        json!({"name": "x", "kind": "app", "scope": "openid", "redirect_uris": [], "colour": "red"}).to_string(),
        json!({"name": "x", "kind": "system", "scope": "system/Coverage.rs", "role": "insurer", "organization": fund})
            .to_string(),
        json!({"name": "x", "kind": "robot", "scope": "openid"}).to_string(),
    ];
    for body in bad {
        let r = admin(reqwest::Method::POST, &api).body(body.clone()).send().unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(json(r)["error"], "invalid_client_metadata");
    }
    assert_eq!(
        json(admin(reqwest::Method::GET, &api).send().unwrap())["clients"],
        json!([])
    );
    // A system registered over the API gets tokens with its key; a new key replaces the old.
    let (key, public) = system_key("k1");
    let registered = admin(reqwest::Method::POST, &api)
        .json(
            &json!({"name": "CNAS Chifa", "kind": "system", "scope": "system/Coverage.rs",
            "role": "insurer", "organization": fund, "jwks": public}),
        )
        .send()
        .unwrap();
    assert_eq!(registered.status(), 201);
    let client_id = json(registered)["client_id"].as_str().unwrap().to_string();
    let listed = json(admin(reqwest::Method::GET, &api).send().unwrap());
    assert_eq!(listed["clients"][0]["client_id"], client_id.as_str());
    let endpoint = format!("{}/auth/token", s.root);
    let ask = |key: &jsonwebtoken::EncodingKey, kid: &str, jti: &str| {
        Client::new()
            .post(&endpoint)
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "system/Coverage.rs"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion(key, kid, &client_id, &endpoint, jti)),
            ])
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(ask(&key, "k1", "a1"), 200);
    let (new_key, new_public) = system_key("k2");
    let keys_url = format!("{api}/{client_id}/jwks");
    assert_eq!(
        admin(reqwest::Method::PUT, &keys_url)
            .body("[]")
            .send()
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        admin(reqwest::Method::PUT, &keys_url)
            .json(&new_public)
            .send()
            .unwrap()
            .status(),
        204
    );
    assert_eq!(ask(&key, "k1", "a2"), 401);
    assert_eq!(ask(&new_key, "k2", "a3"), 200);
    // Revoked: no more tokens; an unknown client is 404.
    let one = format!("{api}/{client_id}");
    assert_eq!(admin(reqwest::Method::DELETE, &one).send().unwrap().status(), 204);
    assert_eq!(ask(&new_key, "k2", "a4"), 401);
    assert_eq!(
        admin(reqwest::Method::DELETE, &format!("{api}/nobody"))
            .send()
            .unwrap()
            .status(),
        404
    );
    // Each change is in the operator log, with the administrator who made it.
    let log = std::fs::read_to_string(s.dir.path().join("auth/operator.log")).unwrap();
    for event in ["client-add", "client-keys", "client-revoke"] {
        assert!(
            log.lines()
                .any(|l| l.contains(event) && l.contains(&client_id) && l.contains("\"by\"")),
            "{event} not in {log}"
        );
    }
}
