//! Two server processes on one PostgreSQL database, writing the same resources at once:
//! no lost update, no duplicate conditional create, paging stays correct.
//!
//! Runs when the suite runs on PostgreSQL (`SIJILL_TEST_DATABASE`, set by scripts/test);
//! without it, each test says it was skipped.

mod common;

use std::sync::{Arc, Barrier};

use common::{json, Server};
use serde_json::{json, Value};

/// Two servers sharing a fresh database, or None (with a notice) without PostgreSQL.
fn two_servers(name: &str) -> Option<(Arc<Server>, Arc<Server>)> {
    let Some(postgres) = common::test_postgres() else {
        eprintln!("SKIPPED {name}: set SIJILL_TEST_DATABASE=postgres://user@host:port to run it");
        return None;
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let url = format!("{}/sijill_t_shared_{}", postgres.trim_end_matches('/'), &suffix[..12]);
    let a = Server::start_on_database(&url);
    // The second with one write lane, as two servers would share a database (the first
    // keeps the default two): units of work share its group transactions.
    let b = Server::start_on_database_with(&url, &["--write-lanes", "1"]);
    Some((Arc::new(a), Arc::new(b)))
}

/// Runs `work(server, thread)` on `threads` threads per server, all starting together.
fn race<T: Send + 'static>(
    servers: &[Arc<Server>],
    threads: usize,
    work: impl Fn(&Server, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let work = Arc::new(work);
    let start = Arc::new(Barrier::new(servers.len() * threads));
    let mut handles = Vec::new();
    for (s, server) in servers.iter().enumerate() {
        for t in 0..threads {
            let (server, work, start) = (server.clone(), work.clone(), start.clone());
            handles.push(std::thread::spawn(move || {
                start.wait();
                work(&server, s * threads + t)
            }));
        }
    }
    handles.into_iter().map(|h| h.join().expect("thread")).collect()
}

#[test]
fn no_update_is_lost_between_two_servers() {
    let Some((a, b)) = two_servers("no_update_is_lost_between_two_servers") else {
        return;
    };
    let r = a.put(
        "Patient/shared",
        &json!({"resourceType": "Patient", "id": "shared", "multipleBirthInteger": 0}),
    );
    assert_eq!(r.status(), 201);
    const INCREMENTS: usize = 6;
    // Each thread adds one to the counter INCREMENTS times, with If-Match; a 412 means
    // another writer got there first: read again and retry (bounded).
    let attempts = race(&[a.clone(), b.clone()], 4, |server, _| {
        let mut done = 0;
        let mut attempts = 0;
        while done < INCREMENTS && attempts < 500 {
            attempts += 1;
            let current = json(server.get("Patient/shared"));
            let version = current["meta"]["versionId"].as_str().unwrap().to_string();
            let mut next = current.clone();
            next["multipleBirthInteger"] = json!(current["multipleBirthInteger"].as_i64().unwrap() + 1);
            let r = server
                .request(reqwest::Method::PUT, "Patient/shared")
                .header("content-type", "application/fhir+json")
                .header("if-match", format!("W/\"{version}\""))
                .body(next.to_string())
                .send()
                .unwrap();
            match r.status().as_u16() {
                200 => done += 1,
                412 => {}
                other => panic!("unexpected status {other}: {}", r.text().unwrap()),
            }
        }
        done
    });
    let total: usize = attempts.iter().sum();
    assert_eq!(total, 8 * INCREMENTS, "some writer gave up");
    for server in [&a, &b] {
        let now = json(server.get("Patient/shared"));
        assert_eq!(now["multipleBirthInteger"], json!(total), "an update was lost");
        assert_eq!(now["meta"]["versionId"], json!((total + 1).to_string()));
    }
    // Every version is in the history, once.
    let history = json(b.get("Patient/shared/_history?_count=100"));
    assert_eq!(history["total"], json!(total + 1));
}

#[test]
fn concurrent_creates_of_one_resource_make_one() {
    let Some((a, b)) = two_servers("concurrent_creates_of_one_resource_make_one") else {
        return;
    };
    let servers = [a.clone(), b.clone()];
    // Conditional creates of the same identifier: one creates, the others find it.
    let statuses = race(&servers, 6, |server, _| {
        server
            .request(reqwest::Method::POST, "Patient")
            .header("content-type", "application/fhir+json")
            .header("if-none-exist", "identifier=urn:test:nid|42")
            .body(
                json!({"resourceType": "Patient", "identifier": [{"system": "urn:test:nid", "value": "42"}]})
                    .to_string(),
            )
            .send()
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 200), "{statuses:?}");
    let found = json(a.get("Patient?identifier=urn:test:nid|42"));
    assert_eq!(found["total"], 1, "a duplicate was created");
    // The same in transaction Bundles: at most one creates; none duplicates.
    let statuses = race(&servers, 6, |server, _| {
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
            "fullUrl": "urn:uuid:0c1d0f6e-0000-4000-8000-000000000001",
            "resource": {"resourceType": "Organization", "identifier": [{"system": "urn:test:facility", "value": "F-1"}]},
            "request": {"method": "POST", "url": "Organization", "ifNoneExist": "identifier=urn:test:facility|F-1"}}]});
        server.post("", &bundle).status().as_u16()
    });
    assert!(statuses.iter().all(|s| [200, 409, 412].contains(s)), "{statuses:?}");
    let found = json(b.get("Organization?identifier=urn:test:facility|F-1"));
    assert_eq!(found["total"], 1, "a duplicate was created: {statuses:?}");
    // Creates of one id with PUT: one creates, the others add versions; none is lost.
    let statuses = race(&servers, 6, |server, t| {
        server
            .put(
                "Device/one",
                &json!({"resourceType": "Device", "id": "one", "serialNumber": t.to_string()}),
            )
            .status()
            .as_u16()
    });
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    let history = json(a.get("Device/one/_history?_count=50"));
    assert_eq!(history["total"], 12, "{statuses:?}");
}

#[test]
fn paging_through_one_server_while_the_other_writes() {
    let Some((a, b)) = two_servers("paging_through_one_server_while_the_other_writes") else {
        return;
    };
    let entries: Vec<Value> = (0..40)
        .map(|i| {
            json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
                                "valueQuantity": {"value": i}},
                   "request": {"method": "POST", "url": "Observation"}})
        })
        .collect();
    let created = json(a.post(
        "",
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
    ));
    let originals: Vec<String> = created["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let location = e["response"]["location"].as_str().unwrap();
            let (_, rest) = location.split_once("Observation/").unwrap();
            rest.split('/').next().unwrap().to_string()
        })
        .collect();
    assert_eq!(originals.len(), 40);
    // Meanwhile the other server adds matching resources and updates the originals (which
    // keep matching): a page may show new resources, but never one twice nor skip one.
    let writer = {
        let (a, originals) = (a.clone(), originals.clone());
        std::thread::spawn(move || {
            for (i, id) in originals.iter().enumerate().take(20) {
                let r = a.post(
                    "Observation",
                    &json!({"resourceType": "Observation", "status": "final",
                                                      "code": {"text": "pulse"}, "valueQuantity": {"value": 100 + i}}),
                );
                assert_eq!(r.status(), 201);
                let r = a.put(
                    &format!("Observation/{id}"),
                    &json!({"resourceType": "Observation", "id": id,
                    "status": "final", "code": {"text": "pulse"}, "valueQuantity": {"value": 200 + i}}),
                );
                assert_eq!(r.status(), 200, "{}", r.text().unwrap());
            }
        })
    };
    let mut seen = Vec::new();
    let mut next = Some("Observation?status=final&_count=7".to_string());
    let mut pages = 0;
    while let Some(url) = next {
        pages += 1;
        assert!(pages < 20, "paging does not end");
        let page = json(b.get(&url));
        for e in page["entry"].as_array().cloned().unwrap_or_default() {
            seen.push(e["resource"]["id"].as_str().unwrap().to_string());
        }
        next = common::link(&page, "next");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    writer.join().unwrap();
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a resource came twice");
    for id in &originals {
        assert!(seen.contains(id), "Observation/{id} was skipped");
    }
}

/// `--write-lanes` takes 1 to 8 (the pool keeps as many connections again for reads) and
/// refuses anything else before the server starts (one that started anyway is stopped after
/// ten seconds, and the test fails).
#[test]
fn write_lanes_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for lanes in ["0", "9", "two"] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sijill"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--write-lanes", lanes])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > until {
                let _ = child.kill();
                panic!("--write-lanes {lanes} was accepted: the server started");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(!status.success(), "--write-lanes {lanes} was accepted");
        let mut said = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said).unwrap();
        assert!(said.contains("--write-lanes"), "{said}");
    }
}
