//! Where notices are delivered: a directory (one JSON file per notice, named by its id, so
//! that delivering one twice writes the same file), an HTTP webhook (an SMS or e-mail
//! gateway), which receives the notice's id as `Idempotency-Key`, or an SMTP server (the
//! patient's e-mail address; the notice's id in the `Message-ID`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// How long a webhook or an SMTP server may take to answer.
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
    /// E-mailed through an SMTP server: `smtp://host:port` (plain, to a relay), `smtps://`
    /// (TLS), `smtp://…?tls=required` (STARTTLS); credentials as `user:password@`.
    Smtp {
        /// The server's URL.
        url: String,
        /// The sender address.
        from: String,
    },
}

/// Why a notice was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undelivered {
    /// It may go through later (the gateway is down, busy, refused for now).
    Retry(String),
    /// It never will (the patient has no address for this channel).
    Never(String),
}

impl Undelivered {
    /// Why, in words.
    pub fn reason(&self) -> &str {
        match self {
            Undelivered::Retry(why) | Undelivered::Never(why) => why,
        }
    }
}

impl Sink {
    /// A sink from its description: `none`, an `http(s)://` URL, an `smtp(s)://` URL
    /// (sending as `from`), or a directory.
    pub fn parse(spec: &str, from: &str) -> Sink {
        match spec {
            "none" => Sink::None,
            url if url.starts_with("http://") || url.starts_with("https://") => Sink::Webhook(url.to_string()),
            url if url.starts_with("smtp://") || url.starts_with("smtps://") => Sink::Smtp {
                url: url.to_string(),
                from: from.to_string(),
            },
            dir => Sink::Directory(PathBuf::from(dir)),
        }
    }

    /// Delivers one message; Err says why it was not delivered.
    pub fn send(&self, id: &str, message: &Value) -> Result<(), Undelivered> {
        match self {
            Sink::None => Err(Undelivered::Retry("no delivery configured".into())),
            Sink::Directory(dir) => write_file(dir, id, message).map_err(Undelivered::Retry),
            Sink::Webhook(url) => post(url, id, message).map_err(Undelivered::Retry),
            Sink::Smtp { url, from } => mail(url, from, id, message),
        }
    }
}

/// E-mails a notice to the patient's address.
fn mail(url: &str, from: &str, id: &str, message: &Value) -> Result<(), Undelivered> {
    use lettre::Transport;
    let to = message["email"]
        .as_str()
        .ok_or_else(|| Undelivered::Never("the patient has no e-mail address".into()))?;
    let to = to
        .parse()
        .map_err(|e| Undelivered::Never(format!("the patient's e-mail address is invalid: {e}")))?;
    // A bad sender is the server's setting, to be fixed: the notices wait for it.
    let from = from
        .parse()
        .map_err(|e| Undelivered::Retry(format!("the sender address (--notify-from) is invalid: {e}")))?;
    let topic = message["topic"].as_str().unwrap_or("notice");
    let email = lettre::Message::builder()
        .from(from)
        .to(to)
        .message_id(Some(format!("<{id}@sijill>")))
        .subject(format!("Sijill: {topic}"))
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(message["text"].as_str().unwrap_or("").to_string())
        .map_err(|e| Undelivered::Never(format!("the e-mail cannot be built: {e}")))?;
    let transport = lettre::SmtpTransport::from_url(url)
        .map_err(|e| Undelivered::Retry(format!("the SMTP URL is not usable: {e}")))?
        .timeout(Some(WEBHOOK_TIMEOUT))
        .build();
    transport.send(&email).map(|_| ()).map_err(|e| {
        let why = format!("the SMTP server did not take the message: {e}");
        // A permanent (5xx) refusal, such as an unknown mailbox, will not change.
        if e.is_permanent() {
            Undelivered::Never(why)
        } else {
            Undelivered::Retry(why)
        }
    })
}

/// Writes `{dir}/{id}.json` whole or not at all (a temporary file renamed into place).
fn write_file(dir: &std::path::Path, id: &str, message: &Value) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let target = dir.join(format!("{id}.json"));
    let partial = dir.join(format!(".{id}.json.partial"));
    let text = serde_json::to_vec_pretty(message).map_err(|e| e.to_string())?;
    let cannot = |e: std::io::Error| format!("cannot write {}: {e}", target.display());
    // Synced before it counts as delivered: a crash leaves the whole file or none.
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&partial).map_err(cannot)?;
        file.write_all(&text).map_err(cannot)?;
        file.sync_all().map_err(cannot)?;
    }
    std::fs::rename(&partial, &target).map_err(cannot)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(cannot)
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
        let from = "no-reply@sijill.invalid";
        assert!(matches!(Sink::parse("none", from), Sink::None));
        assert!(matches!(
            Sink::parse("https://sms.example.org/send", from),
            Sink::Webhook(_)
        ));
        assert!(matches!(
            Sink::parse("smtps://mail.example.org", from),
            Sink::Smtp { .. }
        ));
        assert!(matches!(
            Sink::parse("/var/lib/sijill/outbox", from),
            Sink::Directory(_)
        ));
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
