//! Login through the national eID, played by a real OpenID Connect provider (npm
//! `oidc-provider`, `tests/eid-provider/provider.mjs`) on 127.0.0.1: a citizen signs in to an
//! app end to end, and every doctored ID token the provider can be made to return is refused.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::{decode_payload, json, pkce_challenge, register_app, sijill, Server};
use reqwest::blocking::{Client, Response};
use serde_json::json;

const APP_REDIRECT: &str = "http://127.0.0.1:9/app-callback";
const EID_SECRET: &str = "a-test-secret-shared-with-the-eid";
const NATIONAL_ID: &str = "AB123456";
const VERIFIER: &str = "an-app-verifier-long-enough-for-rfc-7636-0123456789-abcdefghijkl";

/// The stand-in eID provider process.
struct EidProvider {
    child: Child,
    issuer: String,
}

impl EidProvider {
    fn start(redirect_uri: &str, tls: Option<&common::TestCertificates>) -> EidProvider {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/eid-provider");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "{} has no node_modules: run `npm ci` there (scripts/test does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .args(["--redirect-uri", redirect_uri, "--client-secret", EID_SECRET])
            .args(tls.map_or(vec![], |t| {
                vec![
                    "--tls-cert".into(),
                    t.chain.clone().into_os_string(),
                    "--tls-key".into(),
                    t.key.clone().into_os_string(),
                ]
            }))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("provider's first line");
        let issuer = line
            .strip_prefix("issuer ")
            .unwrap_or_else(|| panic!("unexpected provider output {line:?}"))
            .trim()
            .to_string();
        EidProvider { child, issuer }
    }

    /// Makes the provider's token endpoint return a doctored ID token (see provider.mjs).
    fn set_mode(&self, mode: &str) {
        let r = Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap()
            .post(format!("{}/test/id-token-mode", self.issuer))
            .body(mode.to_string())
            .send()
            .unwrap();
        assert_eq!(r.status(), 204);
    }
}

impl Drop for EidProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A provider, and Sijill using it as its eID, with one citizen and one registered app.
struct Setup {
    eid: EidProvider,
    server: Server,
    patient: String,
    app: String,
    /// The test CA when both servers speak HTTPS.
    ca: Option<PathBuf>,
    _certificates: Option<tempfile::TempDir>,
}

fn setup() -> Setup {
    setup_with(false)
}

/// With `tls`, the provider and Sijill both serve HTTPS with certificates of a test CA,
/// which Sijill trusts through `--eid-ca-file`.
fn setup_with(tls: bool) -> Setup {
    let certificates_dir = tls.then(|| tempfile::tempdir().unwrap());
    let certificates = certificates_dir.as_ref().map(|d| common::test_certificates(d.path()));
    let port = free_port();
    let scheme = if tls { "https" } else { "http" };
    let root = format!("{scheme}://127.0.0.1:{port}");
    let eid = EidProvider::start(&format!("{root}/auth/callback"), certificates.as_ref());
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--listen".to_string(),
        listen,
        "--eid-issuer".into(),
        eid.issuer.clone(),
        "--eid-client-secret".into(),
        EID_SECRET.into(),
    ];
    if let Some(c) = &certificates {
        for (flag, path) in [
            ("--tls-cert", &c.chain),
            ("--tls-key", &c.key),
            ("--eid-ca-file", &c.ca),
        ] {
            args.push(flag.into());
            args.push(path.to_str().unwrap().into());
        }
    }
    let server = Server::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(server.root, root);
    let patient = server.create(&json!({"resourceType": "Patient",
        "identifier": [{"system": "https://sijill.health/id/ma/cnie", "value": NATIONAL_ID}]}));
    let app = register_app(&server, "openid fhirUser launch/patient patient/*.rs", APP_REDIRECT);
    Setup {
        eid,
        server,
        patient,
        app,
        ca: certificates.map(|c| c.ca),
        _certificates: certificates_dir,
    }
}

/// A client for the test's own calls, trusting the test CA when there is one.
fn client(setup: &Setup) -> Client {
    let mut builder = Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &setup.ca {
        let pem = std::fs::read(ca).unwrap();
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// A browser without JavaScript: follows redirects by hand and keeps cookies (all hosts are
/// 127.0.0.1, so one jar serves both the provider and Sijill).
struct Browser {
    http: Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new(http: Client) -> Browser {
        Browser {
            http,
            cookies: BTreeMap::new(),
        }
    }

    fn keep_cookies(&mut self, r: &Response) {
        for value in r.headers().get_all("set-cookie") {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.insert(name.trim().to_string(), value.to_string());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn get(&mut self, url: &str) -> Response {
        let r = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .unwrap();
        self.keep_cookies(&r);
        r
    }

    fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Response {
        let r = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .unwrap();
        self.keep_cookies(&r);
        r
    }
}

fn location(r: &Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_string()
    } else {
        format!("{base}{location}")
    }
}

/// How a login through the eID ended at Sijill's callback.
enum Ending {
    /// Sijill sent the browser back to the app with this authorization code.
    Code(String),
    /// Sijill refused the login with this status and page.
    Refused(u16, String),
    /// Sijill sent the browser back to the app with this error description.
    AppError(String),
}

/// Runs an app's login with the national eID as a person whose national identifier is
/// `national_id`, up to Sijill's answer at its callback.
fn login(setup: &Setup, national_id: &str) -> Ending {
    let mut browser = Browser::new(client(setup));
    let challenge = pkce_challenge(VERIFIER);
    let start = reqwest::Url::parse_with_params(
        &format!("{}/auth/authorize", setup.server.root),
        &[
            ("response_type", "code"),
            ("client_id", setup.app.as_str()),
            ("redirect_uri", APP_REDIRECT),
            ("scope", "openid fhirUser launch/patient patient/*.rs"),
            ("state", "app-state"),
            ("aud", setup.server.base.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let mut response = browser.get(start.as_str());
    for _ in 0..10 {
        if response.status().is_redirection() {
            let next = location(&response);
            if next.starts_with(APP_REDIRECT) {
                let query = next.split_once('?').unwrap().1;
                let param = |name: &str| {
                    form_urlencoded::parse(query.as_bytes())
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.into_owned())
                };
                return match param("code") {
                    Some(code) => Ending::Code(code),
                    None => Ending::AppError(param("error_description").unwrap_or_default()),
                };
            }
            let url = absolute(&setup.eid.issuer, &next);
            response = browser.get(&url);
        } else if response.url().as_str().starts_with(&setup.eid.issuer)
            && response.url().path().starts_with("/interaction/")
        {
            // The provider's sign-in form: the login is the national identifier.
            let url = response.url().to_string();
            response = browser.post_form(&url, &[("prompt", "login"), ("login", national_id), ("password", "x")]);
        } else {
            let status = response.status().as_u16();
            return Ending::Refused(status, response.text().unwrap());
        }
    }
    panic!("the login did not end");
}

fn exchange(setup: &Setup, code: &str) -> serde_json::Value {
    let r = client(setup)
        .post(format!("{}/auth/token", setup.server.root))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", APP_REDIRECT),
            ("client_id", setup.app.as_str()),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    json(r)
}

#[test]
fn a_citizen_signs_in_to_an_app_with_the_national_eid() {
    let setup = setup();
    let Ending::Code(code) = login(&setup, NATIONAL_ID) else {
        panic!("the honest login was refused");
    };
    let tokens = exchange(&setup, &code);
    assert_eq!(tokens["patient"], setup.patient.as_str(), "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let s = &setup.server;
    assert_eq!(s.get_as(access, &format!("Patient/{}", setup.patient)).status(), 200);
    let other = s.create(&json!({"resourceType": "Patient"}));
    assert_eq!(s.get_as(access, &format!("Patient/{other}")).status(), 404);
    // Sijill's own ID token names the citizen as the FHIR user; its subject is the eID's.
    let claims = decode_payload(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["fhirUser"], format!("{}/Patient/{}", s.base, setup.patient));
    // A person the platform does not know is told so, and gets no code.
    match login(&setup, "XY000000") {
        Ending::AppError(why) => assert!(!why.is_empty()),
        Ending::Code(_) => panic!("an unknown person was signed in"),
        Ending::Refused(status, page) => panic!("expected an error sent to the app: {status} {page}"),
    }
}

#[test]
fn the_login_works_with_both_servers_on_https() {
    let setup = setup_with(true);
    assert!(setup.eid.issuer.starts_with("https://"));
    assert!(setup.server.base.starts_with("https://"));
    let Ending::Code(code) = login(&setup, NATIONAL_ID) else {
        panic!("the login over HTTPS was refused");
    };
    let tokens = exchange(&setup, &code);
    assert_eq!(tokens["patient"], setup.patient.as_str(), "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let read = setup
        .server
        .http()
        .get(setup.server.url(&format!("Patient/{}", setup.patient)))
        .header("authorization", format!("Bearer {access}"))
        .send()
        .unwrap();
    assert_eq!(read.status(), 200);
}

#[test]
fn every_doctored_id_token_is_refused() {
    let setup = setup();
    // One honest login first, so that "replay" has a previous token to send again.
    assert!(matches!(login(&setup, NATIONAL_ID), Ending::Code(_)));
    let cases = [
        ("wrong-issuer", "issued by someone else"),
        ("expired", "expired"),
        ("wrong-audience", "meant for another server"),
        ("foreign-key", "signature is not valid"),
        ("alg-none", "accepted algorithm"),
        ("hmac-public-key", "not accepted"),
        ("tampered", "signature is not valid"),
        ("replay", "nonce does not match"),
    ];
    for (mode, reason) in cases {
        setup.eid.set_mode(mode);
        match login(&setup, NATIONAL_ID) {
            Ending::Refused(status, page) => {
                assert_eq!(status, 401, "{mode}: {page}");
                assert!(page.contains(reason), "{mode}: expected '{reason}' in {page}");
            }
            Ending::Code(_) => panic!("{mode}: a doctored ID token was accepted"),
            Ending::AppError(why) => panic!("{mode}: refused after the ID token check: {why}"),
        }
    }
    // The provider honest again: logins work again.
    setup.eid.set_mode("honest");
    assert!(matches!(login(&setup, NATIONAL_ID), Ending::Code(_)));
}

#[test]
fn a_provider_that_names_another_issuer_is_refused_at_start() {
    let port = free_port();
    let eid = EidProvider::start(&format!("http://127.0.0.1:{port}/auth/callback"), None);
    // The same provider reached by another name: its discovery document names itself
    // differently from the configured issuer.
    let other_name = eid.issuer.replace("127.0.0.1", "localhost");
    let dir = tempfile::tempdir().unwrap();
    let out = sijill(
        dir.path(),
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--eid-issuer",
            &other_name,
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not the configured issuer"), "{err}");
}
