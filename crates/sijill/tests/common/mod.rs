//! Test harness: runs the real `sijill` binary on a free loopback port with its own
//! temporary data directory, and talks to it over HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{json, Value};

/// The PostgreSQL server the suite runs against instead of the embedded store, when the
/// environment names one (`SIJILL_TEST_DATABASE=postgres://user@host:port`): scripts/test
/// runs the core and search suites a second time that way.
pub fn test_postgres() -> Option<String> {
    std::env::var("SIJILL_TEST_DATABASE").ok().filter(|u| !u.is_empty())
}

/// The store of a data directory as `sijill` takes it: on PostgreSQL (when the suite runs
/// there) a database of its own, named after the directory; else nothing (embedded store).
pub fn store_env(dir: &Path) -> Vec<(&'static str, String)> {
    match test_postgres() {
        Some(server) => {
            let name: String = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            vec![(
                "SIJILL_DATABASE",
                format!("{}/sijill_t{name}", server.trim_end_matches('/')),
            )]
        }
        None => Vec::new(),
    }
}

/// Runs `psql` on a database with extra arguments; fails the test when psql fails.
fn psql(url: &str, args: &[&str], sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(args)
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs SQL on a data directory's store behind the server's back (to damage it in tests):
/// with psql on PostgreSQL, else on the SQLite file.
pub fn execute_sql(dir: &Path, sql: &str) {
    match store_env(dir).into_iter().next() {
        Some((_, url)) => {
            psql(&url, &["-q"], sql);
        }
        None => {
            let db = rusqlite::Connection::open(dir.join("sijill.db")).expect("open the database");
            db.execute_batch(sql).expect("run SQL");
        }
    }
}

/// The number a counting query gives while a store is still being created (its tables may
/// not exist yet): 0 until the query succeeds. Only for polling.
pub fn query_count_while_starting(dir: &Path, sql: &str) -> i64 {
    std::panic::catch_unwind(|| query_count(dir, sql)).unwrap_or(0)
}

/// The number a counting query (`SELECT count(*) …`) gives on a data directory's store;
/// 0 when it returns no row, and the test fails when the query does.
pub fn query_count(dir: &Path, sql: &str) -> i64 {
    match store_env(dir).into_iter().next() {
        Some((_, url)) => {
            let out = psql(&url, &["-tA"], sql);
            let value = out.trim();
            if value.is_empty() {
                0
            } else {
                value.parse().unwrap_or_else(|_| panic!("{sql} gave {value:?}"))
            }
        }
        None => {
            let db = rusqlite::Connection::open(dir.join("sijill.db")).expect("open the database");
            match db.query_row(sql, [], |r| r.get(0)) {
                Ok(n) => n,
                Err(rusqlite::Error::QueryReturnedNoRows) => 0,
                Err(e) => panic!("{sql}: {e}"),
            }
        }
    }
}

/// Mints a token with `sijill token` for the server at `base`.
pub fn mint_token(dir: &Path, base: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "--base-url", base];
    all.extend_from_slice(args);
    let out = sijill(dir, &all);
    assert!(
        out.status.success(),
        "sijill token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("token").trim().to_string()
}

/// A client builder that trusts every certificate of the `--tls-cert` file in `serve_args`
/// (the test certificates' chain ends with their CA).
pub fn trusting_test_roots(
    mut builder: reqwest::blocking::ClientBuilder,
    serve_args: &[&str],
) -> reqwest::blocking::ClientBuilder {
    if let Some(i) = serve_args.iter().position(|a| *a == "--tls-cert") {
        let pem = std::fs::read(serve_args[i + 1]).expect("test certificate");
        for root in reqwest::Certificate::from_pem_bundle(&pem).expect("PEM") {
            builder = builder.add_root_certificate(root);
        }
    }
    builder
}

/// Test certificates made with the `openssl` command: a CA, and a server certificate for
/// 127.0.0.1 signed by it.
pub struct TestCertificates {
    /// The server's chain (leaf, then CA).
    pub chain: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// The CA certificate alone.
    pub ca: PathBuf,
}

/// Makes [`TestCertificates`] in `dir`.
pub fn test_certificates(dir: &Path) -> TestCertificates {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Sijill test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write extensions");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    let chain = [
        std::fs::read(dir.join("server.pem")).unwrap(),
        std::fs::read(dir.join("ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("chain.pem"), chain).expect("write chain");
    TestCertificates {
        chain: dir.join("chain.pem"),
        key: dir.join("server.key"),
        ca: dir.join("ca.pem"),
    }
}

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_sijill")
}

/// A running server.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT/fhir`
    pub base: String,
    /// `http://127.0.0.1:PORT`
    pub root: String,
    /// The data directory.
    pub dir: tempfile::TempDir,
    /// What the server printed after its address line (read in the background).
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// A platform administrator's token (minted with `sijill token`), sent by `request`.
    pub admin_token: String,
    client: Client,
}

impl Server {
    /// Starts a server with an empty data directory.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts a server with extra `serve` arguments.
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, extra)
    }

    /// Starts a server with a data directory of its own on the PostgreSQL database `url`
    /// (several servers may share one).
    pub fn start_on_database(url: &str) -> Server {
        Self::start_on_database_with(url, &[])
    }

    /// Starts a server on the PostgreSQL database `url` with extra `serve` arguments.
    pub fn start_on_database_with(url: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::launch(dir, extra, &[("SIJILL_DATABASE", url.to_string())])
    }

    /// Starts a server on an existing data directory (on a free loopback port unless
    /// `extra` has its own `--listen`).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let env = store_env(dir.path());
        Self::launch(dir, extra, &env)
    }

    /// Starts `sijill serve` on `dir` with extra arguments and environment.
    fn launch(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, String)]) -> Server {
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(binary())
            .arg("--data-dir")
            .arg(dir.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .arg("serve")
            .args(listen)
            .args(extra)
            .env("SIJILL_LOG", "warn")
            // Tests send bursts with one token; the rate-limit tests pass their own limits.
            .env("SIJILL_RATE_LIMIT_USER", "0")
            .env("SIJILL_RATE_LIMIT_CLIENT", "0")
            .env("SIJILL_RATE_LIMIT_ADDRESS", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sijill");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("read address");
        let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = printed.clone();
        std::thread::spawn(move || {
            for l in reader.lines().map_while(Result::ok) {
                sink.lock().expect("stdout lines").push(l);
            }
        });
        let root = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        let base = format!("{root}/fhir");
        let admin_token = mint_token(dir.path(), &base, &["--role", "admin"]);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {admin_token}").parse().expect("header"),
        );
        Server {
            child,
            base,
            root,
            dir,
            stdout: printed,
            admin_token,
            client: trusting_test_roots(
                Client::builder()
                    .timeout(std::time::Duration::from_secs(120))
                    .default_headers(headers),
                extra,
            )
            .build()
            .expect("client"),
        }
    }

    /// The HTTP client that sends the administrator's token.
    pub fn http(&self) -> Client {
        self.client.clone()
    }

    /// A token for this server minted with `sijill token ARGS` (e.g. `--role citizen
    /// --patient 1`).
    pub fn token(&self, args: &[&str]) -> String {
        mint_token(self.dir.path(), &self.base, args)
    }

    /// A request to a path below the FHIR base with `token` instead of the administrator's.
    pub fn request_as(&self, token: &str, method: reqwest::Method, path: &str) -> RequestBuilder {
        Client::new()
            .request(method, self.url(path))
            .header("authorization", format!("Bearer {token}"))
    }

    /// POST a FHIR JSON body with `token`.
    pub fn post_as(&self, token: &str, path: &str, body: &Value) -> Response {
        self.request_as(token, reqwest::Method::POST, path)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .expect("POST")
    }

    /// DELETE with `token`.
    pub fn delete_as(&self, token: &str, path: &str) -> Response {
        self.request_as(token, reqwest::Method::DELETE, path)
            .send()
            .expect("DELETE")
    }

    /// GET with `token`.
    pub fn get_as(&self, token: &str, path: &str) -> Response {
        self.request_as(token, reqwest::Method::GET, path).send().expect("GET")
    }

    /// The URL of a path below the FHIR base (`Patient/1`), or an absolute URL as it is.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}/{}", self.base, path)
        }
    }

    /// A request to a path below the FHIR base (`Patient/1`) or an absolute URL.
    pub fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// GET.
    pub fn get(&self, path: &str) -> Response {
        self.request(reqwest::Method::GET, path).send().expect("GET")
    }

    /// POST a FHIR JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.request(reqwest::Method::POST, path)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .expect("POST")
    }

    /// PUT a FHIR JSON body.
    pub fn put(&self, path: &str, body: &Value) -> Response {
        self.request(reqwest::Method::PUT, path)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .expect("PUT")
    }

    /// DELETE.
    pub fn delete(&self, path: &str) -> Response {
        self.request(reqwest::Method::DELETE, path).send().expect("DELETE")
    }

    /// Creates a resource and returns its id.
    pub fn create(&self, body: &Value) -> String {
        let rt = body["resourceType"].as_str().expect("resourceType");
        let r = self.post(rt, body);
        assert_eq!(r.status(), 201, "create {rt}");
        json(r)["id"].as_str().expect("id").to_string()
    }

    /// Sends SIGTERM and waits for the process to end.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON body of a response.
pub fn json(r: Response) -> Value {
    let text = r.text().expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The url of a Bundle's link with `relation` (e.g. `next`), if it has one.
pub fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(str::to_string)
}

/// Asserts an error response: the status and an OperationOutcome whose text contains
/// `needle` (in diagnostics or expression).
pub fn assert_outcome(r: Response, status: u16, needle: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "status");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("application/fhir+json"),
        "content type"
    );
    let body = json(r);
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert!(body.to_string().contains(needle), "{needle:?} not in {body}");
    body
}

/// Runs `sijill --data-dir DIR ARGS...`.
pub fn sijill(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("--data-dir")
        .arg(dir)
        .envs(store_env(dir))
        .args(args)
        .output()
        .expect("run sijill")
}

/// The unpacked official R4 package (definitions/fetch.sh puts it there).
pub fn package_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../definitions/package");
    assert!(
        dir.is_dir(),
        "{} is missing: run definitions/fetch.sh first",
        dir.display()
    );
    dir
}

/// The PKCE S256 challenge of a verifier, computed here independently of the server's code
/// (RFC 7636: base64url of the SHA-256 of the verifier).
pub fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// The claims of a JWT, read without checking its signature.
pub fn decode_payload(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON claims")
}

/// Signs a person in to an app through the development identity provider with their
/// national identifier, and returns the token response. `app` is a registered app whose
/// redirect URI is `redirect_uri`.
pub fn dev_sign_in(server: &Server, app: &str, redirect_uri: &str, scope: &str, national_id: &str) -> Value {
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let verifier = "a-dev-sign-in-verifier-long-enough-for-rfc-7636-0123456789abcdef";
    let challenge = pkce_challenge(verifier);
    let page = http
        .get(format!("{}/auth/authorize", server.root))
        .query(&[
            ("response_type", "code"),
            ("client_id", app),
            ("redirect_uri", redirect_uri),
            ("scope", scope),
            ("state", "s"),
            ("aud", server.base.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .and_then(|r| r.text())
        .expect("authorize");
    let login = page
        .split("name=\"login\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no sign-in form in {page}"));
    let signed_in = http
        .post(format!("{}/auth/dev-login", server.root))
        .form(&[("login", login), ("national_id", national_id)])
        .send()
        .expect("dev-login");
    let location = signed_in.headers()["location"].to_str().expect("location").to_string();
    let code = form_urlencoded::parse(location.split_once('?').map(|(_, q)| q).unwrap_or("").as_bytes())
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{national_id} was not signed in: {location}"));
    let tokens = http
        .post(format!("{}/auth/token", server.root))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri),
            ("client_id", app),
            ("code_verifier", verifier),
        ])
        .send()
        .expect("token");
    assert_eq!(tokens.status(), 200);
    json(tokens)
}

/// Registers an app with `sijill client add` and returns its client id.
pub fn register_app(server: &Server, scope: &str, redirect_uri: &str) -> String {
    let out = sijill(
        server.dir.path(),
        &[
            "client",
            "add",
            "--name",
            "Test app",
            "--kind",
            "app",
            "--scope",
            scope,
            "--redirect-uri",
            redirect_uri,
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("client id").trim().to_string()
}

/// The url of a Schedule's weekly availability (a Sijill extension modelled on R5).
pub const AVAILABILITY: &str = "https://sijill.health/fhir/StructureDefinition/availability";

/// A Schedule availability: every day, 08:00 to 18:00, slots of `minutes`, `capacity`
/// patients each, in `mode` (in-person or virtual).
pub fn every_day(minutes: u64, capacity: u64, mode: &str) -> Value {
    let mut ext: Vec<Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| json!({"url": "daysOfWeek", "valueCode": d}))
        .collect();
    ext.push(json!({"url": "availableStartTime", "valueTime": "08:00:00"}));
    ext.push(json!({"url": "availableEndTime", "valueTime": "18:00:00"}));
    ext.push(json!({"url": "slotMinutes", "valuePositiveInt": minutes}));
    ext.push(json!({"url": "capacity", "valuePositiveInt": capacity}));
    ext.push(json!({"url": "mode", "valueCode": mode}));
    json!({"url": AVAILABILITY, "extension": ext})
}

/// A new facility with this name and a practitioner of it (family name `family`); returns
/// the practitioner's token.
pub fn practitioner_at(s: &Server, facility_name: &str, family: &str) -> String {
    let facility = s.create(&json!({"resourceType": "Organization", "name": facility_name}));
    let dr = s.create(&json!({"resourceType": "Practitioner", "name": [{"family": family}]}));
    s.token(&[
        "--role",
        "practitioner",
        "--practitioner",
        &dr,
        "--organization",
        &facility,
    ])
}
