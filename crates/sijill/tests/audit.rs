//! The audit trail: every interaction leaves an AuditEvent, reads fail when theirs cannot
//! be written, and `sijill audit verify` finds rows changed, removed or reordered directly
//! in the database. Runs on the embedded store, and on PostgreSQL in the test script's
//! PostgreSQL half.

mod common;

use common::{assert_outcome, execute_sql, json, query_count, sijill, Server};
use serde_json::{json, Value};

fn verify(s: &Server) -> (bool, String) {
    let out = sijill(s.dir.path(), &["audit", "verify"]);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until the events of every earlier request are in the trail: an auditor's search
/// moves the server's audit journal into it first; that search's own event follows within
/// a tenth of a second, after which the trail stays still.
fn settle(s: &Server) {
    let auditor = s.token(&["--role", "auditor"]);
    assert_eq!(s.get_as(&auditor, "AuditEvent?_count=1").status(), 200);
    let rows = || query_count(s.dir.path(), "SELECT count(*) FROM audit_log");
    let started = std::time::Instant::now();
    let mut last = rows();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = rows();
        if now == last {
            return;
        }
        assert!(started.elapsed().as_secs() < 10, "the trail never settled");
        last = now;
    }
}

#[test]
fn every_interaction_is_audited_with_who_what_and_outcome() {
    let s = Server::start();
    let before = query_count(s.dir.path(), "SELECT count(*) FROM audit_log");
    let patient = s.create(&json!({"resourceType": "Patient", "name": [{"family": "Audit"}]}));
    let obs = s.create(
        &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": format!("Patient/{patient}")}}),
    );
    assert_eq!(s.get(&format!("Observation/{obs}")).status(), 200);
    assert_eq!(s.get(&format!("Observation?patient={patient}")).status(), 200);
    assert_eq!(s.get("Observation/nope").status(), 404);
    let citizen = s.token(&["--role", "citizen", "--patient", "someone-else"]);
    assert_eq!(s.get_as(&citizen, &format!("Observation/{obs}")).status(), 404);
    settle(&s);
    let after = query_count(s.dir.path(), "SELECT count(*) FROM audit_log");
    assert!(after - before >= 6, "{before} → {after}");
    let auditor = s.token(&["--role", "auditor"]);
    let trail = json(s.get_as(&auditor, &format!("AuditEvent?patient={patient}&_count=50")));
    let events: Vec<&serde_json::Value> = trail["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let of = |code: &str| events.iter().filter(|e| e["subtype"][0]["code"] == code).count();
    assert!(
        of("create") >= 2 && of("read") >= 1 && of("search-type") >= 1,
        "{trail}"
    );
    let read = events.iter().find(|e| e["subtype"][0]["code"] == "read").unwrap();
    assert_eq!(read["action"], "R");
    assert_eq!(read["outcome"], "0");
    assert_eq!(read["agent"][0]["role"][0]["coding"][0]["code"], "admin");
    assert_eq!(read["agent"][0]["network"]["address"], "127.0.0.1");
    assert!(read["entity"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["what"]["reference"] == format!("Observation/{obs}/_history/1")));
    // The refused read of another patient's record is in the trail too, as refused.
    let refused = json(s.get_as(&auditor, "AuditEvent?agent=Patient/someone-else"));
    assert_eq!(refused["entry"][0]["resource"]["outcome"], "4", "{refused}");
    // One event by id; the trail is append-only over the API.
    let id = read["id"].as_str().unwrap();
    assert_eq!(s.get_as(&auditor, &format!("AuditEvent/{id}")).status(), 200);
    assert_outcome(s.delete(&format!("AuditEvent/{id}")), 405, "append-only");
    assert_outcome(
        s.post("AuditEvent", &json!({"resourceType": "AuditEvent"})),
        405,
        "append-only",
    );
    assert_outcome(s.get_as(&auditor, "AuditEvent?bogus=1"), 400, "takes patient");
}

#[test]
fn refused_tokens_and_token_requests_are_audited_without_the_credentials() {
    let s = Server::start();
    let patient = s.create(&json!({"resourceType": "Patient"}));
    let bare = reqwest::blocking::Client::new();
    let forged = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2VjcmV0LXNpZ25hdHVyZQ";
    assert_eq!(
        bare.get(s.url(&format!("Patient/{patient}"))).send().unwrap().status(),
        401
    );
    assert_outcome(s.get_as(forged, &format!("Patient/{patient}")), 401, "");
    let refused = bare
        .post(format!("{}/auth/token", s.root))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "stolen-code"),
            ("client_id", "some-app"),
        ])
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    // A sign-in at the (development) eID page with a national identifier nobody has.
    let browser = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let portal = format!("{}/portal/", s.root);
    let page = browser
        .get(format!("{}/auth/authorize", s.root))
        .query(&[
            ("response_type", "code"),
            ("client_id", "sijill-portal"),
            ("redirect_uri", portal.as_str()),
            ("scope", "openid launch/patient patient/*.rs"),
            ("state", "s"),
            ("aud", s.base.as_str()),
            ("code_challenge", "0123456789012345678901234567890123456789abc"),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .unwrap()
        .text()
        .unwrap();
    let login = page
        .split("name=\"login\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let signed_in = browser
        .post(format!("{}/auth/dev-login", s.root))
        .form(&[("login", login), ("national_id", "NOBODY-0000")])
        .send()
        .unwrap();
    let back = signed_in.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with(&portal) && back.contains("error="), "{back}");
    let auditor = s.token(&["--role", "auditor"]);
    let trail = json(s.get_as(&auditor, "AuditEvent?agent=anonymous&_count=50"));
    let events: Vec<&Value> = trail["entry"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["resource"])
        .collect();
    assert_eq!(events.len(), 4, "{trail}");
    for e in &events {
        assert_eq!(e["type"]["code"], "110114", "{e}");
        assert_eq!(e["subtype"][0]["code"], "110122", "{e}");
        assert_eq!(e["outcome"], "4", "{e}");
        assert_eq!(e["agent"][0]["network"]["address"], "127.0.0.1", "{e}");
        for secret in [forged, "stolen-code", "NOBODY-0000"] {
            assert!(!e.to_string().contains(secret), "{e}");
        }
    }
    let names: Vec<&str> = events.iter().filter_map(|e| e["entity"][0]["name"].as_str()).collect();
    assert!(
        names.contains(&format!("GET /fhir/Patient/{patient}").as_str()),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("POST /auth/token")), "{names:?}");
    assert!(names.contains(&"POST /auth/dev-login"), "{names:?}");
    let token_event = events
        .iter()
        .find(|e| {
            e["entity"][0]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("POST /auth/token"))
        })
        .unwrap();
    assert_eq!(token_event["agent"][0]["altId"], "some-app");
    assert!(
        token_event["outcomeDesc"].as_str().unwrap().contains("code"),
        "{token_event}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["outcomeDesc"].as_str().is_some_and(|d| d.contains("access token"))),
        "the missing token is named: {trail}"
    );
}

#[test]
fn a_write_and_its_audit_event_commit_together_and_a_read_without_its_event_fails() {
    let s = Server::start();
    let patient = s.create(&json!({"resourceType": "Patient"}));
    // Make every audit insert fail (as a full disk or a broken trail would).
    let fail = match common::test_postgres() {
        Some(_) => {
            "CREATE FUNCTION no_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no audit'; END $$;
                    CREATE TRIGGER no_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION no_audit();"
        }
        None => "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'no audit'); END;",
    };
    execute_sql(s.dir.path(), fail);
    let versions = query_count(s.dir.path(), "SELECT count(*) FROM resource_versions");
    let r = s.put(
        &format!("Patient/{patient}"),
        &json!({"resourceType": "Patient", "id": patient, "active": true}),
    );
    assert!(r.status().is_server_error(), "{}", r.status());
    assert_eq!(
        query_count(s.dir.path(), "SELECT count(*) FROM resource_versions"),
        versions,
        "the write was rolled back with its audit event"
    );
    // A read's event goes to the server's audit journal first; once the trail refuses
    // the journal's events, every read is refused.
    let read = || s.get(&format!("Patient/{patient}"));
    let mut answered = 0;
    let started = std::time::Instant::now();
    loop {
        let r = read();
        if r.status() == 503 {
            assert_outcome(r, 503, "audit trail");
            break;
        }
        assert_eq!(r.status(), 200);
        answered += 1;
        assert!(started.elapsed().as_secs() < 10, "reads were never refused");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The trail works again: so do reads, and no answered read is missing from it.
    let pg = common::test_postgres().is_some();
    execute_sql(
        s.dir.path(),
        if pg {
            "DROP TRIGGER no_audit ON audit_log"
        } else {
            "DROP TRIGGER no_audit"
        },
    );
    loop {
        let r = read();
        if r.status() == 200 {
            answered += 1;
            break;
        }
        assert_outcome(r, 503, "audit trail");
        assert!(started.elapsed().as_secs() < 20, "reads never came back");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    settle(&s);
    let auditor = s.token(&["--role", "auditor"]);
    let trail = json(s.get_as(&auditor, &format!("AuditEvent?patient={patient}&_count=100")));
    let reads = trail["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["subtype"][0]["code"] == "read" && e["resource"]["outcome"] == "0")
        .count();
    assert_eq!(reads, answered, "{trail}");
}

/// A server with a few audit events, the trail's protection removed (as a tamperer with
/// database access would), and a chain with at least three rows.
fn tampered_trail() -> (Server, i64) {
    let s = Server::start();
    let patient = s.create(&json!({"resourceType": "Patient"}));
    // Enough for three rows in each of PostgreSQL's chains.
    for _ in 0..30 {
        assert_eq!(s.get(&format!("Patient/{patient}")).status(), 200);
    }
    settle(&s);
    let (ok, out) = verify(&s);
    assert!(ok && out.contains("every chain holds"), "{out}");
    execute_sql(
        s.dir.path(),
        if common::test_postgres().is_some() {
            "ALTER TABLE audit_log DISABLE TRIGGER USER"
        } else {
            "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;"
        },
    );
    // PostgreSQL spreads rows over several chains: take one with three rows or more.
    let chain = query_count(
        s.dir.path(),
        "SELECT chain FROM audit_log GROUP BY chain HAVING count(*) >= 3 ORDER BY chain LIMIT 1",
    );
    (s, chain)
}

#[test]
fn audit_verify_finds_a_changed_row() {
    let (s, chain) = tampered_trail();
    execute_sql(
        s.dir.path(),
        &format!("UPDATE audit_log SET agent = 'Practitioner/innocent' WHERE chain = {chain} AND position = 2"),
    );
    let (ok, out) = verify(&s);
    assert!(
        !ok && out.contains(&format!("BROKEN: chain {chain} position 2")) && out.contains("row changed"),
        "{out}"
    );
}

#[test]
fn audit_verify_finds_a_removed_row() {
    let (s, chain) = tampered_trail();
    execute_sql(
        s.dir.path(),
        &format!("DELETE FROM audit_log WHERE chain = {chain} AND position = 2"),
    );
    let (ok, out) = verify(&s);
    assert!(
        !ok && out.contains(&format!("BROKEN: chain {chain} position 2")) && out.contains("rows removed"),
        "{out}"
    );
}

#[test]
fn audit_verify_finds_reordered_rows() {
    let (s, chain) = tampered_trail();
    execute_sql(
        s.dir.path(),
        &format!(
            "UPDATE audit_log SET position = -position WHERE chain = {chain} AND position IN (2, 3);
             UPDATE audit_log SET position = 5 + position WHERE chain = {chain} AND position IN (-2, -3);"
        ),
    );
    let (ok, out) = verify(&s);
    assert!(
        !ok && out.contains(&format!("BROKEN: chain {chain} position 2")) && out.contains("rows reordered"),
        "{out}"
    );
}

#[test]
fn anchors_catch_a_trail_cut_short() {
    let s = Server::start();
    let patient = s.create(&json!({"resourceType": "Patient"}));
    assert_eq!(s.get(&format!("Patient/{patient}")).status(), 200);
    settle(&s);
    let (ok, out) = verify(&s);
    assert!(ok, "{out}");
    let anchors = s.dir.path().join("anchors.txt");
    std::fs::write(
        &anchors,
        out.lines()
            .skip_while(|l| !l.starts_with("heads"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let check = || {
        let out = sijill(
            s.dir.path(),
            &["audit", "verify", "--anchor", anchors.to_str().unwrap()],
        );
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, out) = check();
    assert!(ok && out.contains("every anchor is in place"), "{out}");
    // The newest row of every chain cut off: each chain still holds, the anchors do not.
    let pg = common::test_postgres().is_some();
    execute_sql(
        s.dir.path(),
        if pg {
            "ALTER TABLE audit_log DISABLE TRIGGER USER"
        } else {
            "DROP TRIGGER audit_log_no_delete"
        },
    );
    execute_sql(
        s.dir.path(),
        "DELETE FROM audit_log WHERE seq IN (SELECT max(seq) FROM audit_log GROUP BY chain)",
    );
    let (ok, out) = check();
    assert!(!ok && out.contains("cut off"), "{out}");
}

#[test]
fn the_database_itself_refuses_to_change_the_trail() {
    let s = Server::start();
    s.create(&json!({"resourceType": "Patient"}));
    let path = s.dir.path().to_path_buf();
    let attempt = std::panic::catch_unwind(|| execute_sql(&path, "UPDATE audit_log SET agent = 'x'"));
    assert!(attempt.is_err(), "an UPDATE of the audit trail went through");
    let attempt = std::panic::catch_unwind(|| execute_sql(&path, "DELETE FROM audit_log"));
    assert!(attempt.is_err(), "a DELETE of the audit trail went through");
    assert!(query_count(&path, "SELECT count(*) FROM audit_log") > 0);
}
