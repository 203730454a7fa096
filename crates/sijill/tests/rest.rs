//! Black-box tests of the FHIR REST interactions over real HTTP.

mod common;

use common::{assert_outcome, json, link, Server};
use reqwest::Method;
use serde_json::json;

fn patient(family: &str) -> serde_json::Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.504.1", "value": format!("ID-{family}")}],
        "name": [{"family": family, "given": ["Amina"]}],
        "gender": "female",
        "birthDate": "1990-04-12"
    })
}

#[test]
fn create_read_vread_update_delete_and_history() {
    let s = Server::start();
    let r = s.post("Patient", &patient("Benali"));
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["etag"], "W/\"1\"");
    assert!(r.headers().contains_key("last-modified"));
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{}/Patient/", s.base)) && location.ends_with("/_history/1"),
        "{location}"
    );
    let created = json(r);
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["meta"]["versionId"], "1");
    assert!(created["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));

    let read = s.get(&format!("Patient/{id}"));
    assert_eq!(read.status(), 200);
    assert_eq!(read.headers()["etag"], "W/\"1\"");
    assert_eq!(json(read)["name"][0]["family"], "Benali");

    let mut changed = created.clone();
    changed["name"][0]["family"] = json!("Benali-Idrissi");
    let r = s.put(&format!("Patient/{id}"), &changed);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "W/\"2\"");
    assert_eq!(
        json(s.get(&format!("Patient/{id}")))["name"][0]["family"],
        "Benali-Idrissi"
    );
    assert_eq!(
        json(s.get(&format!("Patient/{id}/_history/1")))["name"][0]["family"],
        "Benali"
    );
    assert_eq!(s.get(&format!("Patient/{id}/_history/9")).status(), 404);

    let r = s.delete(&format!("Patient/{id}"));
    assert_eq!(r.status(), 204);
    assert_outcome(s.get(&format!("Patient/{id}")), 410, "deleted");
    // Deleting again changes nothing.
    assert_eq!(s.delete(&format!("Patient/{id}")).status(), 204);

    let history = json(s.get(&format!("Patient/{id}/_history")));
    assert_eq!(history["type"], "history");
    assert_eq!(history["total"], 3);
    let methods: Vec<_> = history["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"]["method"].clone())
        .collect();
    assert_eq!(methods, vec![json!("DELETE"), json!("PUT"), json!("POST")]);
    assert!(history["entry"][0].get("resource").is_none());
    assert_eq!(history["entry"][1]["resource"]["meta"]["versionId"], "2");

    // Update after delete brings it back as a new version.
    let r = s.put(&format!("Patient/{id}"), &changed);
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["etag"], "W/\"4\"");
}

#[test]
fn update_can_create_with_client_id_and_checks_ids() {
    let s = Server::start();
    let mut p = patient("Ziani");
    p["id"] = json!("dz-001");
    let r = s.put("Patient/dz-001", &p);
    assert_eq!(r.status(), 201);
    assert_eq!(json(s.get("Patient/dz-001"))["name"][0]["family"], "Ziani");
    assert_outcome(s.put("Patient/other", &p), 400, "does not match");
    let mut no_id = patient("Ziani");
    no_id.as_object_mut().unwrap().remove("id");
    assert_outcome(s.put("Patient/dz-001", &no_id), 400, "id");
    let mut bad = patient("Ziani");
    bad["id"] = json!("bad/id");
    assert_eq!(s.put("Patient/bad%2Fid", &bad).status(), 400);
    assert_outcome(s.put("Observation/dz-001", &p), 400, "Patient");
}

#[test]
fn optimistic_locking_with_if_match() {
    let s = Server::start();
    let id = s.create(&patient("Alaoui"));
    let mut body = json(s.get(&format!("Patient/{id}")));
    body["active"] = json!(true);
    let stale = s
        .request(Method::PUT, &format!("Patient/{id}"))
        .header("content-type", "application/fhir+json")
        .header("if-match", "W/\"7\"")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_outcome(stale, 412, "version conflict");
    assert_eq!(json(s.get(&format!("Patient/{id}")))["meta"]["versionId"], "1");
    let ok = s
        .request(Method::PUT, &format!("Patient/{id}"))
        .header("content-type", "application/fhir+json")
        .header("if-match", "W/\"1\"")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    let stale_delete = s
        .request(Method::DELETE, &format!("Patient/{id}"))
        .header("if-match", "W/\"1\"")
        .send()
        .unwrap();
    assert_eq!(stale_delete.status(), 412);
    let garbage = s
        .request(Method::DELETE, &format!("Patient/{id}"))
        .header("if-match", "banana")
        .send()
        .unwrap();
    assert_outcome(garbage, 400, "banana");
}

#[test]
fn conditional_read() {
    let s = Server::start();
    let id = s.create(&patient("Tazi"));
    let r = s
        .request(Method::GET, &format!("Patient/{id}"))
        .header("if-none-match", "W/\"1\"")
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = s
        .request(Method::GET, &format!("Patient/{id}"))
        .header("if-none-match", "W/\"0\"")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    let r = s
        .request(Method::GET, &format!("Patient/{id}"))
        .header("if-modified-since", future)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);
    let past = "Mon, 01 Jan 2001 00:00:00 GMT";
    let r = s
        .request(Method::GET, &format!("Patient/{id}"))
        .header("if-modified-since", past)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn conditional_create_update_and_delete() {
    let s = Server::start();
    let create = |body: &serde_json::Value| {
        s.request(Method::POST, "Patient")
            .header("content-type", "application/fhir+json")
            .header("if-none-exist", "identifier=urn:oid:2.16.504.1|ID-Idrissi")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let first = create(&patient("Idrissi"));
    assert_eq!(first.status(), 201);
    let id = json(first)["id"].clone();
    let second = create(&patient("Idrissi"));
    assert_eq!(second.status(), 200);
    assert_eq!(json(second)["id"], id);
    assert_eq!(json(s.get("Patient?identifier=ID-Idrissi"))["total"], 1);

    // Conditional update: one match updates it, none creates.
    let mut p = patient("Idrissi");
    p["active"] = json!(false);
    let r = s.put("Patient?identifier=urn:oid:2.16.504.1|ID-Idrissi", &p);
    assert_eq!(r.status(), 200);
    assert_eq!(json(r)["id"], id);
    let r = s.put("Patient?identifier=urn:oid:2.16.504.1|ID-New", &patient("New"));
    assert_eq!(r.status(), 201);

    // An id in the body that names another, non-matching resource is not overwritten.
    let other = s.create(&patient("Other"));
    let mut stray = patient("Stray");
    stray["id"] = json!(other);
    assert_outcome(
        s.put("Patient?identifier=urn:oid:2.16.504.1|ID-Nobody", &stray),
        409,
        "does not match",
    );
    assert_eq!(json(s.get(&format!("Patient/{other}")))["name"][0]["family"], "Other");

    // Two matches: 412 for update, create and delete.
    s.create(&patient("Twin"));
    s.create(&patient("Twin"));
    assert_outcome(
        s.put("Patient?identifier=ID-Twin", &patient("Twin")),
        412,
        "more than one",
    );
    assert_outcome(s.delete("Patient?identifier=ID-Twin"), 412, "more than one");
    assert_eq!(json(s.get("Patient?identifier=ID-Twin"))["total"], 2);

    let r = s.delete("Patient?identifier=ID-Idrissi");
    assert_eq!(r.status(), 204);
    assert_eq!(json(s.get("Patient?identifier=ID-Idrissi"))["total"], 0);
    assert_outcome(s.delete("Patient?unknown-param=1"), 400, "unknown-param");
}

#[test]
fn json_patch() {
    let s = Server::start();
    let id = s.create(&patient("Fassi"));
    let patch = |doc: serde_json::Value, if_match: Option<&str>| {
        let mut r = s
            .request(Method::PATCH, &format!("Patient/{id}"))
            .header("content-type", "application/json-patch+json")
            .body(doc.to_string());
        if let Some(m) = if_match {
            r = r.header("if-match", m);
        }
        r.send().unwrap()
    };
    let r = patch(
        json!([{"op": "replace", "path": "/name/0/family", "value": "El Fassi"}, {"op": "add", "path": "/active", "value": true}]),
        Some("W/\"1\""),
    );
    assert_eq!(r.status(), 200);
    let body = json(r);
    assert_eq!(body["name"][0]["family"], "El Fassi");
    assert_eq!(body["meta"]["versionId"], "2");
    // A patch that would make the resource invalid is refused and changes nothing.
    let r = patch(json!([{"op": "add", "path": "/birthDate", "value": "yesterday"}]), None);
    assert_outcome(r, 400, "birthDate");
    let r = patch(json!([{"op": "remove", "path": "/nothing/here"}]), None);
    assert_eq!(r.status(), 422);
    let r = patch(json!([{"op": "replace", "path": "/id", "value": "other"}]), None);
    assert_eq!(r.status(), 400);
    assert_eq!(patch(json!([]), Some("W/\"1\"")).status(), 412);
    // Hostile patches: a document that doubles itself, a move into a missing array (which
    // makes the library's undo step fail), and too many operations.
    let bomb: Vec<_> = (0..60)
        .map(|i| json!({"op": "copy", "from": "", "path": if i % 2 == 0 { "/a" } else { "/b" }}))
        .collect();
    assert_outcome(patch(json!(bomb), None), 422, "larger than");
    let r = patch(
        json!([{"op": "add", "path": "/y", "value": 1}, {"op": "move", "from": "/y", "path": "/z/0"}]),
        None,
    );
    assert_eq!(r.status(), 422);
    let many: Vec<_> = (0..1001)
        .map(|_| json!({"op": "test", "path": "/id", "value": id}))
        .collect();
    assert_outcome(patch(json!(many), None), 400, "at most");
    assert_eq!(patch(json!({"not": "a patch"}), None).status(), 400);
    assert_eq!(json(s.get(&format!("Patient/{id}")))["meta"]["versionId"], "2");
}

#[test]
fn prefer_return() {
    let s = Server::start();
    let minimal = s
        .request(Method::POST, "Patient")
        .header("content-type", "application/fhir+json")
        .header("prefer", "return=minimal")
        .body(patient("Minimal").to_string())
        .send()
        .unwrap();
    assert_eq!(minimal.status(), 201);
    assert!(minimal.headers().contains_key("location"));
    assert_eq!(minimal.text().unwrap(), "");
    let oo = s
        .request(Method::POST, "Patient")
        .header("content-type", "application/fhir+json")
        .header("prefer", "return=OperationOutcome")
        .body(patient("Outcome").to_string())
        .send()
        .unwrap();
    assert_eq!(oo.status(), 201);
    assert_eq!(json(oo)["resourceType"], "OperationOutcome");
}

#[test]
fn type_and_system_history_with_paging_and_since() {
    let s = Server::start();
    for i in 0..5 {
        s.create(&patient(&format!("P{i}")));
    }
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    s.create(&obs);
    let page1 = json(s.get("Patient/_history?_count=2"));
    assert_eq!(page1["total"], 5);
    assert_eq!(page1["entry"].as_array().unwrap().len(), 2);
    let next = link(&page1, "next").unwrap();
    // A write between pages does not shift the following pages.
    s.create(&patient("Late"));
    let page2 = json(s.get(&next));
    assert_eq!(page2["entry"].as_array().unwrap().len(), 2);
    assert_ne!(page1["entry"][1]["fullUrl"], page2["entry"][0]["fullUrl"]);
    assert_eq!(page2["total"], 5);
    let all = json(s.get("_history"));
    assert_eq!(all["total"], 7);
    assert_eq!(all["entry"][0]["resource"]["name"][0]["family"], "Late");
    let future = json(s.get("_history?_since=2100-01-01T00:00:00Z"));
    assert_eq!(future["total"], 0);
    assert_outcome(s.get("_history?_since=tomorrow"), 400, "_since");
    assert_outcome(s.get("_history?_at=2020"), 400, "_at");
}

#[test]
fn date_search_over_http() {
    let s = Server::start();
    for (family, birth) in [("Old", "1950-02-03"), ("Mid", "1990-06-15"), ("Young", "2015")] {
        let mut p = patient(family);
        p["birthDate"] = json!(birth);
        s.create(&p);
    }
    let families = |q: &str| -> Vec<String> {
        let b = json(s.get(&format!("Patient?{q}")));
        let mut v: Vec<String> = b["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|x| x["resource"]["name"][0]["family"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(families("birthdate=ge1990&birthdate=lt2000"), vec!["Mid"]);
    assert_eq!(families("birthdate=1950-02"), vec!["Old"]);
    assert_eq!(families("birthdate=gt2000"), vec!["Young"]);
    assert_eq!(families("birthdate=eb1960,sa2010"), vec!["Old", "Young"]);
    assert_eq!(families(&format!("_lastUpdated=ge{}", "2000-01-01")).len(), 3);
    assert_outcome(s.get("Patient?birthdate=ge19x0"), 400, "birthdate");
}

#[test]
fn bad_input_is_refused_cleanly_and_changes_nothing() {
    let s = Server::start();
    let post_raw = |ct: &str, body: Vec<u8>| {
        s.request(Method::POST, "Patient")
            .header("content-type", ct)
            .body(body)
            .send()
            .unwrap()
    };
    assert_outcome(
        post_raw("application/fhir+json", b"{\"resourceType\": \"Patient\",".to_vec()),
        400,
        "not valid JSON",
    );
    assert_outcome(post_raw("application/fhir+json", b"[1,2]".to_vec()), 400, "JSON object");
    assert_outcome(post_raw("application/fhir+json", b"".to_vec()), 400, "needs a resource");
    assert_outcome(
        post_raw("application/fhir+json", vec![b'{', b'"', 0xff, 0xfe, b'"', b'}']),
        400,
        "UTF-8",
    );
    assert_outcome(
        post_raw("application/fhir+xml", b"<Patient/>".to_vec()),
        415,
        "not supported",
    );
    let deep = format!(
        "{{\"resourceType\":\"Patient\",\"x\":{}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert_outcome(
        post_raw("application/fhir+json", deep.into_bytes()),
        400,
        "nested deeper",
    );
    let huge = format!(
        "{{\"resourceType\":\"Patient\",\"text\":\"{}\"}}",
        "a".repeat(17 * 1024 * 1024)
    );
    // The server answers before reading the whole body and closes the connection; a
    // client may see either the 413 or the connection closing under it.
    let sent = s
        .http()
        .post(format!("{}/Patient", s.base))
        .header("content-type", "application/fhir+json")
        .body(huge)
        .send();
    match sent {
        Ok(r) => {
            assert_outcome(r, 413, "larger than");
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    assert_outcome(
        s.post("Patient", &json!({"resourceType": "Patient", "shoeSize": 42})),
        400,
        "shoeSize",
    );
    assert_outcome(
        s.post("Patient", &json!({"resourceType": "Patient", "birthDate": 1990})),
        400,
        "Patient.birthDate",
    );
    assert_outcome(
        s.post("Patient", &json!({"resourceType": "Patient", "gender": "woman"})),
        400,
        "Patient.gender",
    );
    assert_outcome(
        s.post(
            "Observation",
            &json!({"resourceType": "Observation", "code": {"text": "x"}}),
        ),
        400,
        "Observation.status",
    );
    assert_outcome(s.post("Patient", &json!({"name": []})), 400, "resourceType");
    assert_outcome(s.post("Unicorn", &patient("X")), 404, "Unicorn");
    assert_outcome(s.get("Unicorn/1"), 404, "Unicorn");
    assert_outcome(s.get("Patient/does-not-exist"), 404, "does not exist");
    assert_outcome(s.request(Method::OPTIONS, "Patient").send().unwrap(), 405, "OPTIONS");
    let long = s.get(&format!("Patient?name={}", "a".repeat(10_000)));
    assert_eq!(long.status(), 200);
    assert_eq!(json(long)["total"], 0);
    // Nothing above was stored.
    assert_eq!(json(s.get("_history"))["total"], 0);
    // The server is still alive.
    assert_eq!(s.get("metadata").status(), 200);
}

#[test]
fn capability_statement_lists_what_is_supported() {
    let s = Server::start();
    let cs = json(s.get("metadata"));
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    assert_eq!(resources.len(), 146);
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    let params: Vec<(&str, &str)> = patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["type"].as_str().unwrap()))
        .collect();
    assert!(params.contains(&("identifier", "token")));
    assert!(params.contains(&("birthdate", "date")));
    // Every listed parameter really works.
    for (name, kind) in &params {
        let value = if *kind == "date" { "ge2020" } else { "x" };
        let r = s.get(&format!("Patient?{name}={value}"));
        assert_eq!(r.status(), 200, "{name}");
    }
    let system: Vec<_> = cs["rest"][0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].clone())
        .collect();
    assert!(system.contains(&json!("transaction")) && system.contains(&json!("batch")));
}

#[test]
fn health_metrics_and_graceful_shutdown() {
    let mut s = Server::start();
    let health = reqwest::blocking::get(format!("{}/health", s.root)).unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(json(health)["ready"], true);
    s.create(&patient("Metric"));
    let metrics = reqwest::blocking::get(format!("{}/metrics", s.root))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("sijill_http_requests_total{interaction=\"create\",status=\"201\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sijill_engine_seconds"), "{metrics}");
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn shutdown_finishes_requests_in_flight() {
    let mut s = Server::start();
    let entries: Vec<serde_json::Value> = (0..10_000)
        .map(|i| {
            json!({"fullUrl": format!("urn:uuid:{i}"), "resource": patient(&format!("F{i}")),
                   "request": {"method": "POST", "url": "Patient"}})
        })
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let base = s.base.clone();
    let dir = s.dir.path().to_path_buf();
    let client = s.http();
    let in_flight = std::thread::spawn(move || {
        client
            .post(&base)
            .header("content-type", "application/fhir+json")
            .body(bundle.to_string())
            .send()
            .map(|r| r.status().as_u16())
    });
    // Give the request time to arrive, then ask the server to stop.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(in_flight.join().unwrap().expect("response"), 200);
    // Everything the finished request wrote is there after a restart.
    let out = common::sijill(&dir, &["export", "--output", dir.join("out").to_str().unwrap()]);
    assert!(out.status.success());
    let lines = std::fs::read_to_string(dir.join("out/Patient.ndjson"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, 10_000);
}
