//! The outbox of notices to patients, over HTTP: an appointment's confirmation, reminders
//! and cancellation written with it, delivered to a webhook with retries and backoff, once,
//! and still delivered after a restart.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{every_day, json, practitioner_at, Server};
use serde_json::{json, Value};

/// What the webhook received: (idempotency key, body, answered 200).
type Received = Arc<Mutex<Vec<(String, Value, bool)>>>;

/// A webhook on loopback that fails its first `failures` requests (500), then accepts.
fn webhook(failures: usize) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/sms", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let log = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut key, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("idempotency-key:") {
                    key = v.trim().to_string();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut log = log.lock().unwrap();
            let accept = log.len() >= failures;
            log.push((key, serde_json::from_slice(&body).unwrap_or(Value::Null), accept));
            let status = if accept { "200 OK" } else { "500 Internal Server Error" };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, received)
}

/// A server without booking rules, generating three days of slots, running its chores
/// every second and delivering notices to `notify`, with `extra` arguments.
fn delivering_to(notify: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--booking-rules",
        "none",
        "--booking-horizon",
        "3d",
        "--chores-every",
        "1s",
        "--notify",
        notify,
    ];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

/// A schedule open every day, 08:00-18:00, with its slots generated; returns a free slot.
fn open_clinic(s: &Server) -> String {
    let org = s.create(&json!({"resourceType": "Organization", "name": "Clinic"}));
    let location = s.create(
        &json!({"resourceType": "Location", "managingOrganization": {"reference": format!("Organization/{org}")}}),
    );
    let schedule = s.create(&json!({"resourceType": "Schedule", "active": true,
        "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009", "display": "General practice"}]}],
        "actor": [{"reference": format!("Location/{location}")}],
        "extension": [every_day(30, 1, "in-person")]}));
    let r = s.post(
        &format!("Schedule/{schedule}/$generate-slots"),
        &json!({"resourceType": "Parameters"}),
    );
    assert_eq!(r.status(), 200);
    let found = json(s.get("Appointment/$find?_count=3"));
    found["entry"][2]["resource"]["slot"][0]["reference"]
        .as_str()
        .unwrap()
        .trim_start_matches("Slot/")
        .to_string()
}

/// A free slot like `slot` (same schedule and specialty) starting `after` from now:
/// reminder times then fall where a test wants them.
fn soon_on_the_clinic_of(s: &Server, slot: &str, after: time::Duration) -> String {
    let mut like = json(s.get(&format!("Slot/{slot}")));
    let at = |d: time::Duration| {
        (time::OffsetDateTime::now_utc() + d)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let fields = like.as_object_mut().unwrap();
    fields.remove("id");
    fields.remove("meta");
    fields.insert("start".into(), json!(at(after)));
    fields.insert("end".into(), json!(at(after + time::Duration::minutes(30))));
    s.create(&like)
}

fn book(s: &Server, token: &str, slot: &str) -> Value {
    let r = s.post_as(
        token,
        "Appointment/$book",
        &json!({"resourceType": "Parameters", "parameter": [{"name": "slot", "valueReference": {"reference": format!("Slot/{slot}")}}]}),
    );
    assert_eq!(r.status(), 201);
    json(r)
}

/// The patient's notices, by topic.
fn notices(s: &Server, patient: &str, topic: &str) -> Vec<Value> {
    let b = json(s.get(&format!(
        "Communication?subject=Patient/{patient}&category=https://sijill.health/fhir/CodeSystem/notice-topic|{topic}"
    )));
    b["entry"]
        .as_array()
        .map(|es| es.iter().map(|e| e["resource"].clone()).collect())
        .unwrap_or_default()
}

/// Waits (bounded) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_booking_confirms_reminds_and_cancels_through_a_webhook_that_fails_twice_first() {
    let (url, received) = webhook(2);
    let s = delivering_to(&url, &["--notify-backoff", "1s", "--reminders", "1000h,1h"]);
    let slot = soon_on_the_clinic_of(&s, &open_clinic(&s), time::Duration::minutes(62));
    let p = s.create(&json!({"resourceType": "Patient", "telecom": [{"system": "phone", "value": "+212600000000"}]}));
    let t = s.token(&["--role", "citizen", "--patient", &p]);
    let appointment = book(&s, &t, &slot);
    let id = appointment["id"].as_str().unwrap();

    // Written with the booking: the confirmation, and the one-hour reminder, due two
    // minutes from now (near enough to be the booking's own; the one 1000 hours before is
    // already past and is not written).
    assert_eq!(notices(&s, &p, "confirmation").len(), 1);
    let reminders = notices(&s, &p, "reminder");
    assert_eq!(reminders.len(), 1);
    assert_eq!(reminders[0]["basedOn"][0]["reference"], format!("Appointment/{id}"));

    // Two failures, then delivered: three attempts, one acceptance, one key.
    eventually("the confirmation", || {
        notices(&s, &p, "confirmation")[0]["status"] == "completed"
    });
    let confirmation = &notices(&s, &p, "confirmation")[0];
    let cid = confirmation["id"].as_str().unwrap().to_string();
    let attempts = confirmation["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == "https://sijill.health/fhir/StructureDefinition/delivery-attempts")
        .unwrap()["valueInteger"]
        .clone();
    assert_eq!(attempts, json!(3));
    {
        let log = received.lock().unwrap();
        let of_confirmation: Vec<_> = log.iter().filter(|(k, _, _)| *k == cid).collect();
        assert_eq!(of_confirmation.len(), 3);
        assert_eq!(of_confirmation.iter().filter(|(_, _, ok)| *ok).count(), 1);
        let (_, message, _) = of_confirmation[0];
        assert_eq!(message["phone"], "+212600000000");
        assert_eq!(message["topic"], "confirmation");
        assert!(
            message["text"].as_str().unwrap().contains("General practice"),
            "{message}"
        );
    }

    // Cancelled: the waiting reminder is stopped, the cancellation is sent.
    let r = s.post_as(
        &t,
        &format!("Appointment/{id}/$cancel"),
        &json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "feeling better"}]}),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(notices(&s, &p, "reminder")[0]["status"], "stopped");
    eventually("the cancellation", || {
        notices(&s, &p, "cancellation")
            .first()
            .is_some_and(|c| c["status"] == "completed")
    });
    let log = received.lock().unwrap();
    let accepted: Vec<&String> = log.iter().filter(|(_, _, ok)| *ok).map(|(k, _, _)| k).collect();
    let mut unique = accepted.clone();
    unique.dedup();
    assert_eq!(accepted.len(), 2, "the confirmation and the cancellation, once each");
    assert_eq!(unique.len(), accepted.len());
}

#[test]
fn notices_written_while_delivery_is_off_are_delivered_after_a_restart_once() {
    let mut s = delivering_to("none", &[]);
    let slot = open_clinic(&s);
    let p = s.create(&json!({"resourceType": "Patient"}));
    let t = s.token(&["--role", "citizen", "--patient", &p]);
    book(&s, &t, &slot);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(notices(&s, &p, "confirmation")[0]["status"], "preparation");
    s.terminate();

    let outbox = tempfile::tempdir().unwrap();
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    let outbox_path = outbox.path().display().to_string();
    let s = Server::start_in(dir, &["--chores-every", "1s", "--notify", &outbox_path]);
    eventually("the confirmation after the restart", || {
        notices(&s, &p, "confirmation")[0]["status"] == "completed"
    });
    let id = notices(&s, &p, "confirmation")[0]["id"].as_str().unwrap().to_string();
    let files: Vec<String> = std::fs::read_dir(outbox.path())
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(files.contains(&format!("{id}.json")), "{files:?}");
    let written: Value =
        serde_json::from_slice(&std::fs::read(outbox.path().join(format!("{id}.json"))).unwrap()).unwrap();
    assert_eq!(written["patient"], format!("Patient/{p}"));
}

/// What an SMTP server on loopback received: (recipients, message data), one per mail.
type Mails = Arc<Mutex<Vec<(Vec<String>, String)>>>;

/// A small SMTP server on loopback (enough of RFC 5321 for one client: EHLO, MAIL, RCPT,
/// DATA, RSET, NOOP, QUIT), recording each message.
fn smtp_server() -> (String, Mails) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    let mails: Mails = Arc::default();
    let log = mails.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = write!(stream, "220 test ESMTP\r\n");
            let (mut rcpt, mut data) = (Vec::new(), String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let reply = match verb.as_str() {
                    "EHLO" | "HELO" => "250 test\r\n".to_string(),
                    "RCPT" => {
                        rcpt.push(line.trim().to_string());
                        "250 ok\r\n".into()
                    }
                    "DATA" => {
                        let _ = write!(stream, "354 go on\r\n");
                        loop {
                            let mut l = String::new();
                            if reader.read_line(&mut l).unwrap_or(0) == 0 || l == ".\r\n" {
                                break;
                            }
                            data.push_str(&l);
                        }
                        log.lock()
                            .unwrap()
                            .push((std::mem::take(&mut rcpt), std::mem::take(&mut data)));
                        "250 queued\r\n".into()
                    }
                    "QUIT" => {
                        let _ = write!(stream, "221 bye\r\n");
                        break;
                    }
                    _ => "250 ok\r\n".into(),
                };
                let _ = stream.write_all(reply.as_bytes());
            }
        }
    });
    (url, mails)
}

#[test]
fn notices_go_by_e_mail_and_a_patient_without_an_address_is_given_up_at_once() {
    let (url, mails) = smtp_server();
    let s = delivering_to(
        &url,
        &["--notify-from", "Sijill <no-reply@sijill.test>", "--reminders", ""],
    );
    let slot = open_clinic(&s);
    let p =
        s.create(&json!({"resourceType": "Patient", "telecom": [{"system": "email", "value": "citizen@example.org"}]}));
    let t = s.token(&["--role", "citizen", "--patient", &p]);
    book(&s, &t, &slot);
    eventually("the e-mail", || {
        notices(&s, &p, "confirmation")[0]["status"] == "completed"
    });
    let id = notices(&s, &p, "confirmation")[0]["id"].as_str().unwrap().to_string();
    {
        let mails = mails.lock().unwrap();
        assert_eq!(mails.len(), 1);
        let (rcpt, data) = &mails[0];
        assert!(rcpt[0].contains("<citizen@example.org>"), "{rcpt:?}");
        assert!(data.contains("Subject: Sijill: confirmation"), "{data}");
        assert!(data.contains(&format!("Message-ID: <{id}@sijill>")), "{data}");
        assert!(
            data.contains("no-reply@sijill.test") && data.contains("General practice"),
            "{data}"
        );
    }

    let without = s.create(&json!({"resourceType": "Patient"}));
    let t = s.token(&["--role", "citizen", "--patient", &without]);
    let found = json(s.get_as(&t, "Appointment/$find?_count=6"));
    let other_slot = found["entry"][5]["resource"]["slot"][0]["reference"]
        .as_str()
        .unwrap()
        .trim_start_matches("Slot/")
        .to_string();
    book(&s, &t, &other_slot);
    eventually("giving up", || {
        notices(&s, &without, "confirmation")[0]["status"] == "not-done"
    });
    let given_up = &notices(&s, &without, "confirmation")[0];
    assert!(given_up["statusReason"]["text"]
        .as_str()
        .unwrap()
        .contains("no e-mail address"));
    assert_eq!(mails.lock().unwrap().len(), 1, "nothing more was sent");
}

#[test]
fn a_break_glass_access_reaches_the_patient_through_the_outbox() {
    let outbox = tempfile::tempdir().unwrap();
    let s = delivering_to(&outbox.path().display().to_string(), &[]);
    let p = s.create(&json!({"resourceType": "Patient", "telecom": [{"system": "phone", "value": "+212600000001"}]}));
    let practitioner = practitioner_at(&s, "Urgences", "Test");
    let glass = s.post_as(
        &practitioner,
        &format!("Patient/{p}/$break-glass"),
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "reason", "valueString": "unconscious on arrival, no relative present"}]}),
    );
    assert!(glass.status().is_success(), "{}", glass.status());
    let delivered = || -> Vec<Value> {
        std::fs::read_dir(outbox.path())
            .unwrap()
            .filter_map(|f| serde_json::from_slice(&std::fs::read(f.unwrap().path()).ok()?).ok())
            .collect()
    };
    eventually("the break-glass notice in the outbox", || {
        delivered()
            .iter()
            .any(|n| n["topic"] == "break-glass" && n["patient"] == format!("Patient/{p}"))
    });
    let notice = delivered().into_iter().find(|n| n["topic"] == "break-glass").unwrap();
    assert_eq!(notice["phone"], "+212600000001", "{notice}");
}
