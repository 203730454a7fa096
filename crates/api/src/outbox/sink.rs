//! Where notices are delivered: a directory (one JSON file per notice, named by its id, so
//! that delivering one twice writes the same file), or an HTTP webhook (an SMS or e-mail
//! gateway), which receives the notice's id as `Idempotency-Key`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// How long a webhook may take to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// A delivery adapter.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Notices stay in the outbox, undelivered.
    None,
    /// Files in a directory.
    Directory(PathBuf),
    /// POSTed as JSON to a URL.
    Webhook(String),
}

impl Sink {
    /// A sink from its description: `none`, an `http(s)://` URL, or a directory.
    pub fn parse(spec: &str) -> Sink {
        match spec {
            "none" => Sink::None,
            url if url.starts_with("http://") || url.starts_with("https://") => Sink::Webhook(url.to_string()),
            dir => Sink::Directory(PathBuf::from(dir)),
        }
    }

    /// Delivers one message; Err says why it was not delivered.
    pub fn send(&self, id: &str, message: &Value) -> Result<(), String> {
        match self {
            Sink::None => Err("no delivery configured".into()),
            Sink::Directory(dir) => write_file(dir, id, message),
            Sink::Webhook(url) => post(url, id, message),
        }
    }
}

/// Writes `{dir}/{id}.json` whole or not at all (a temporary file renamed into place).
fn write_file(dir: &std::path::Path, id: &str, message: &Value) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let target = dir.join(format!("{id}.json"));
    let partial = dir.join(format!(".{id}.json.partial"));
    let text = serde_json::to_vec_pretty(message).map_err(|e| e.to_string())?;
    std::fs::write(&partial, text).map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    std::fs::rename(&partial, &target).map_err(|e| format!("cannot write {}: {e}", target.display()))
}

fn post(url: &str, id: &str, message: &Value) -> Result<(), String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .post(url)
        .header("Idempotency-Key", id)
        .json(message)
        .send()
        .map_err(|e| format!("the webhook did not answer: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_is_read_from_its_description() {
        assert!(matches!(Sink::parse("none"), Sink::None));
        assert!(matches!(Sink::parse("https://sms.example.org/send"), Sink::Webhook(_)));
        assert!(matches!(Sink::parse("/var/lib/sijill/outbox"), Sink::Directory(_)));
    }

    #[test]
    fn delivering_twice_to_a_directory_leaves_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::Directory(dir.path().to_path_buf());
        let message = serde_json::json!({"text": "see you"});
        sink.send("n1", &message).unwrap();
        sink.send("n1", &message).unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let back: Value = serde_json::from_slice(&std::fs::read(dir.path().join("n1.json")).unwrap()).unwrap();
        assert_eq!(back, message);
    }
}
