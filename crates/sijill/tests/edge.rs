//! Request hardening at the edge, over HTTP: rate limits per user and per address, CORS only
//! for configured origins, and security headers on every response.

mod common;

use common::{assert_outcome, Server};
use reqwest::blocking::Client;
use serde_json::json;

#[test]
fn a_user_over_the_rate_is_throttled_and_other_users_are_not() {
    let s = Server::start_with(&["--rate-limit-user", "2"]);
    let mine = s.create(&json!({"resourceType": "Patient"}));
    let theirs = s.create(&json!({"resourceType": "Patient"}));
    let me = s.token(&["--role", "citizen", "--patient", &mine]);
    let them = s.token(&["--role", "citizen", "--patient", &theirs]);
    let path = format!("Patient/{mine}");
    // 2 per second with a burst of 4 seconds' worth: 8 pass at once, then the user waits.
    let statuses: Vec<u16> = (0..12).map(|_| s.get_as(&me, &path).status().as_u16()).collect();
    assert!(statuses[..8].iter().all(|&c| c == 200), "{statuses:?}");
    let throttled = s.get_as(&me, &path);
    let wait: u64 = throttled.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_outcome(throttled, 429, "throttled");
    assert_eq!(s.get_as(&them, &format!("Patient/{theirs}")).status(), 200);
}

#[test]
fn requests_without_a_valid_token_spend_their_address_budget() {
    let s = Server::start_with(&["--rate-limit-address", "1"]);
    let statuses: Vec<u16> = (0..6)
        .map(|_| s.get_as("not-a-token", "Patient").status().as_u16())
        .collect();
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429]);
    // The authorization endpoints share the address's budget.
    let token = Client::new()
        .post(format!("{}/auth/token", s.root))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .unwrap();
    assert_eq!(token.status(), 429);
    assert!(token.headers().contains_key("retry-after"));
    assert_eq!(token.headers()["cache-control"], "no-store");
    // A valid token is counted per user, not per address.
    assert_eq!(s.http().get(s.url("Patient")).send().unwrap().status(), 200);
}

fn preflight(s: &Server, origin: &str) -> reqwest::blocking::Response {
    Client::new()
        .request(reqwest::Method::OPTIONS, s.url("Patient"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .unwrap()
}

#[test]
fn cors_is_answered_only_for_configured_origins() {
    let closed = Server::start();
    let r = preflight(&closed, "https://portal.example");
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    let s = Server::start_with(&["--cors-origin", "https://portal.example"]);
    let r = preflight(&s, "https://portal.example");
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "https://portal.example");
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(methods.contains("POST"), "{methods}");
    assert!(!r.headers().contains_key("access-control-allow-credentials"));
    let r = preflight(&s, "https://evil.example");
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    // An actual request from the allowed origin can read the headers apps need.
    let r = s
        .http()
        .get(s.url("Patient"))
        .header("origin", "https://portal.example")
        .send()
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://portal.example");
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("location") && exposed.contains("etag"), "{exposed}");
}

#[test]
fn a_bad_cors_origin_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::sijill(
        dir.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cors-origin",
            "https://portal.example/path",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scheme://host"));
}

#[test]
fn every_response_carries_the_security_headers() {
    let s = Server::start();
    let api = s.http().get(s.url("Patient")).send().unwrap();
    let page = Client::new()
        .get(format!("{}/auth/authorize?client_id=nobody", s.root))
        .send()
        .unwrap();
    let missing = Client::new().get(format!("{}/nothing", s.root)).send().unwrap();
    for r in [api, page, missing] {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(!h.contains_key("set-cookie"), "Sijill sets no cookies");
        assert!(!h.contains_key("strict-transport-security"), "only over TLS");
    }
}

#[test]
fn with_a_certificate_the_server_speaks_only_https() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = common::test_certificates(certs_dir.path());
    let (chain, key) = (certs.chain.to_str().unwrap(), certs.key.to_str().unwrap());
    let s = Server::start_with(&["--tls-cert", chain, "--tls-key", key]);
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);
    let r = s.http().get(s.url("Patient")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    // A client that does not trust the CA cannot connect; plain HTTP gets no answer.
    assert!(Client::new().get(s.url("metadata")).send().is_err());
    let plain = s.url("metadata").replacen("https://", "http://", 1);
    assert!(Client::new()
        .get(plain)
        .send()
        .map(|r| !r.status().is_success())
        .unwrap_or(true));
}

#[test]
fn an_unreadable_certificate_or_key_stops_the_server_at_start() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = common::test_certificates(certs_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let serve = |cert: &std::path::Path, key: &std::path::Path| {
        let out = common::sijill(
            dir.path(),
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
        );
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // The key given as certificate, the certificate given as key, a key of another certificate.
    assert!(serve(&certs.key, &certs.key).contains("no certificate"));
    assert!(serve(&certs.chain, &certs.chain).contains("private key"));
    let err = serve(&certs.chain, &certs_dir.path().join("ca.key"));
    assert!(err.contains("do not make a TLS configuration"), "{err}");
}

#[test]
fn oversized_headers_are_refused_before_any_work() {
    let s = Server::start();
    let huge = "x".repeat(512 * 1024);
    let r = s.http().get(s.url("Patient")).header("x-filler", huge).send();
    match r {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    let many = (0..200).fold(s.http().get(s.url("Patient")), |req, i| {
        req.header(format!("x-h{i}"), "v")
    });
    match many.send() {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    // The server is still there.
    assert_eq!(s.http().get(s.url("Patient")).send().unwrap().status(), 200);
}
