//! A real headless Chromium driven through ChromeDriver's W3C WebDriver protocol (plain
//! JSON over HTTP on loopback), for the web pages' end-to-end tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a wait for the page may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// A browser session; the driver and the browser end with it.
pub struct Browser {
    driver: Child,
    base: String,
    http: Client,
    /// Chromium's profile directory, removed with the session.
    profile: tempfile::TempDir,
}

/// ChromeDriver and Chromium, when installed (`chromium`, `chromium-driver`). Without them
/// a test is skipped with a message, except under CI, where it fails.
pub fn browser() -> Option<Browser> {
    let found = ["/usr/bin/chromedriver", "/usr/bin/chromium"]
        .iter()
        .all(|p| std::path::Path::new(p).exists());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs Chromium and ChromeDriver (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: Chromium or ChromeDriver is not installed (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let driver = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().expect("profile dir");
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let root = format!("http://127.0.0.1:{port}");
    // Owned from here on: a failed start below still stops the driver.
    let mut browser = Browser {
        base: String::new(),
        driver,
        http: http.clone(),
        profile,
    };
    let started = Instant::now();
    while http.get(format!("{root}/status")).send().is_err() {
        assert!(started.elapsed() < PATIENCE, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let capabilities = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", format!("--user-data-dir={}", browser.profile.path().display())],
        },
    }}});
    let session: Value = http
        .post(format!("{root}/session"))
        .json(&capabilities)
        .send()
        .and_then(|r| r.json())
        .expect("a WebDriver session");
    let id = session["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {session}"));
    browser.base = format!("{root}/session/{id}");
    Some(browser)
}

impl Browser {
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            request = request.json(&b);
        }
        let answer: Value = request.send().and_then(|r| r.json()).expect("WebDriver answers");
        answer["value"].clone()
    }

    /// Opens a URL and waits for the page to load.
    pub fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})));
    }

    /// The current address.
    pub fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn find_now(&self, css: &str) -> Vec<String> {
        let found = self.call(
            reqwest::Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
            .collect()
    }

    /// The visible text of every element matching `css`, once `ready` holds for them
    /// (waits up to 20 s, then fails with what the page shows).
    pub fn texts_when(&self, css: &str, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
        let started = Instant::now();
        loop {
            let texts: Vec<String> = self
                .find_now(css)
                .iter()
                .map(|e| self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None))
                .map(|t| t.as_str().unwrap_or_default().to_string())
                .collect();
            if ready(&texts) {
                return texts;
            }
            if started.elapsed() > PATIENCE {
                panic!(
                    "'{css}' never became ready: {texts:?}; the page says {:?}",
                    self.text("body")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The visible text of the first element matching `css` ("" when there is none).
    pub fn text(&self, css: &str) -> String {
        self.find_now(css)
            .first()
            .map(|e| self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None))
            .and_then(|t| t.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn element(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(e) = self.find_now(css).into_iter().next() {
                return e;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "no '{css}' on {}: {:?}",
                self.url(),
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the first element matching `css` (waiting for it to appear).
    pub fn click(&self, css: &str) {
        let e = self.element(css);
        self.call(reqwest::Method::POST, &format!("/element/{e}/click"), Some(json!({})));
    }

    /// Types into the first element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.base.is_empty() {
            let _ = self.http.delete(&self.base).send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
