//! Black-box tests of batch and transaction Bundles.

mod common;

use common::{assert_outcome, json, Server};
use serde_json::{json, Value};

fn entry(full_url: &str, resource: Value, method: &str, url: &str) -> Value {
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": method, "url": url}})
}

fn transaction(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

#[test]
fn transaction_resolves_urn_references_everywhere() {
    let s = Server::start();
    let bundle = transaction(vec![
        entry(
            "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
            json!({"resourceType": "Patient", "name": [{"family": "Amrani"}]}),
            "POST",
            "Patient",
        ),
        entry(
            "urn:oid:1.2.3.4",
            json!({
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "HbA1c"},
                "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
                "extension": [{"url": "http://example.org/x", "valueReference": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}}],
                "component": [{"code": {"text": "c"}, "extension": [{"url": "http://example.org/y", "valueReference": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}}]}]
            }),
            "POST",
            "Observation",
        ),
        entry(
            "urn:uuid:2",
            json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": {"reference": "urn:oid:1.2.3.4"}}),
            "POST",
            "Encounter",
        ),
    ]);
    let r = s.post("", &bundle);
    assert_eq!(r.status(), 200);
    let response = json(r);
    assert_eq!(response["type"], "transaction-response");
    let entries = response["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for e in entries {
        assert_eq!(e["response"]["status"], "201 Created");
        assert_eq!(e["response"]["etag"], "W/\"1\"");
        assert!(e["response"]["location"].as_str().unwrap().contains("/_history/1"));
    }
    let patient_url = entries[0]["response"]["location"].as_str().unwrap();
    let patient_ref = patient_url
        .split("/fhir/")
        .nth(1)
        .unwrap()
        .split("/_history")
        .next()
        .unwrap()
        .to_string();
    let obs = json(s.get(entries[1]["response"]["location"].as_str().unwrap()));
    assert_eq!(obs["subject"]["reference"], patient_ref);
    assert_eq!(obs["extension"][0]["valueReference"]["reference"], patient_ref);
    assert_eq!(
        obs["component"][0]["extension"][0]["valueReference"]["reference"],
        patient_ref
    );
    let enc = json(s.get(entries[2]["response"]["location"].as_str().unwrap()));
    assert!(enc["subject"]["reference"]
        .as_str()
        .unwrap()
        .starts_with("Observation/"));
}

#[test]
fn transaction_is_all_or_nothing() {
    let s = Server::start();
    let bundle = transaction(vec![
        entry(
            "urn:uuid:a",
            json!({"resourceType": "Patient", "name": [{"family": "Good"}]}),
            "POST",
            "Patient",
        ),
        entry(
            "urn:uuid:b",
            json!({"resourceType": "Patient", "gender": "unknown-gender"}),
            "POST",
            "Patient",
        ),
    ]);
    let body = assert_outcome(s.post("", &bundle), 400, "Bundle.entry[1]");
    assert!(body.to_string().contains("gender"), "{body}");
    // A failure found while writing (If-Match on a missing resource) also rolls back.
    let bundle = transaction(vec![
        entry(
            "urn:uuid:a",
            json!({"resourceType": "Patient", "name": [{"family": "Good"}]}),
            "POST",
            "Patient",
        ),
        json!({"resource": {"resourceType": "Patient", "id": "x1"}, "request": {"method": "PUT", "url": "Patient/x1", "ifMatch": "W/\"3\""}}),
    ]);
    assert_outcome(s.post("", &bundle), 412, "Bundle.entry[1]");
    // A reference to nothing in the Bundle fails too.
    let bundle = transaction(vec![entry(
        "urn:uuid:a",
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:missing"}}),
        "POST",
        "Observation",
    )]);
    assert_outcome(s.post("", &bundle), 404, "urn:uuid:missing");
    assert_eq!(json(s.get("_history"))["total"], 0);
}

#[test]
fn transaction_processes_in_specification_order() {
    let s = Server::start();
    let mut p = json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Old"}]});
    assert_eq!(s.put("Patient/p1", &p).status(), 201);
    s.create(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": "gone"}]}));
    p["name"][0]["family"] = json!("New");
    // Listed in reverse order: GET first, then PUT, POST, DELETE.
    let bundle = transaction(vec![
        json!({"request": {"method": "GET", "url": "Patient/p1"}}),
        json!({"resource": p, "request": {"method": "PUT", "url": "Patient/p1"}}),
        entry(
            "urn:uuid:n",
            json!({"resourceType": "Patient", "name": [{"family": "Posted"}]}),
            "POST",
            "Patient",
        ),
        json!({"request": {"method": "DELETE", "url": "Patient?identifier=urn:s|gone"}}),
    ]);
    let r = json(s.post("", &bundle));
    let e = r["entry"].as_array().unwrap();
    // GET ran last, so it sees the PUT.
    assert_eq!(e[0]["resource"]["name"][0]["family"], "New");
    assert_eq!(e[1]["response"]["status"], "200 OK");
    assert_eq!(e[2]["response"]["status"], "201 Created");
    assert_eq!(e[3]["response"]["status"], "204 No Content");
    assert_eq!(json(s.get("Patient?identifier=gone"))["total"], 0);
}

#[test]
fn conditional_references_and_conditional_creates_in_bundles() {
    let s = Server::start();
    let org = json!({"resourceType": "Organization", "identifier": [{"system": "urn:ma:facility", "value": "CHU-RABAT"}], "name": "CHU Ibn Sina"});
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": org, "request": {"method": "POST", "url": "Organization", "ifNoneExist": "identifier=urn:ma:facility|CHU-RABAT"}},
        {"resource": org, "request": {"method": "POST", "url": "Organization", "ifNoneExist": "identifier=urn:ma:facility|CHU-RABAT"}}
    ]});
    let r = json(s.post("", &batch));
    assert_eq!(r["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(r["entry"][1]["response"]["status"], "200 OK");
    assert_eq!(json(s.get("Organization"))["total"], 1);
    let org_id = json(s.get("Organization"))["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bundle = transaction(vec![entry(
        "urn:uuid:p",
        json!({"resourceType": "Patient", "managingOrganization": {"reference": "Organization?identifier=urn:ma:facility|CHU-RABAT"}}),
        "POST",
        "Patient",
    )]);
    let r = json(s.post("", &bundle));
    let p = json(s.get(r["entry"][0]["response"]["location"].as_str().unwrap()));
    assert_eq!(p["managingOrganization"]["reference"], format!("Organization/{org_id}"));
    let bundle = transaction(vec![entry(
        "urn:uuid:p",
        json!({"resourceType": "Patient", "managingOrganization": {"reference": "Organization?identifier=urn:ma:facility|NOWHERE"}}),
        "POST",
        "Patient",
    )]);
    assert_outcome(s.post("", &bundle), 404, "matches no resource");
}

#[test]
fn batch_reports_each_entry_on_its_own() {
    let s = Server::start();
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "Ok"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "birthDate": "not-a-date"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/none"}},
        {"request": {"method": "FETCH", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "name": [{"family": "Ok2"}]}, "request": {"method": "POST", "url": "Patient"}}
    ]});
    let r = s.post("", &batch);
    assert_eq!(r.status(), 200);
    let r = json(r);
    assert_eq!(r["type"], "batch-response");
    let statuses: Vec<_> = r["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses,
        vec![
            "201 Created",
            "400 Bad Request",
            "404 Not Found",
            "400 Bad Request",
            "201 Created"
        ]
    );
    assert_eq!(r["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome");
    assert_eq!(json(s.get("Patient"))["total"], 2);
}

#[test]
fn patch_entries_carry_a_binary() {
    let s = Server::start();
    let id = s.create(&json!({"resourceType": "Patient", "active": false}));
    use base64::Engine as _;
    let doc = base64::engine::general_purpose::STANDARD.encode(br#"[{"op":"replace","path":"/active","value":true}]"#);
    let bundle = transaction(vec![json!({
        "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": doc},
        "request": {"method": "PATCH", "url": format!("Patient/{id}")}
    })]);
    let r = json(s.post("", &bundle));
    assert_eq!(r["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(json(s.get(&format!("Patient/{id}")))["active"], true);
}

#[test]
fn bundles_of_the_wrong_kind_are_refused() {
    let s = Server::start();
    assert_outcome(
        s.post("", &json!({"resourceType": "Bundle", "type": "collection"})),
        400,
        "collection",
    );
    assert_outcome(s.post("", &json!({"resourceType": "Patient"})), 400, "Bundle");
    assert_outcome(s.post("", &json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient"}}]})), 400, "request");
    let empty = json(s.post("", &json!({"resourceType": "Bundle", "type": "transaction"})));
    assert_eq!(empty["type"], "transaction-response");
}

#[test]
fn conditional_updates_in_a_transaction_can_be_referenced() {
    let s = Server::start();
    let existing = s.create(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": "1"}]}));
    let bundle = transaction(vec![
        json!({"fullUrl": "urn:uuid:pat", "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": "1"}], "active": true},
               "request": {"method": "PUT", "url": "Patient?identifier=urn:s|1"}}),
        json!({"fullUrl": "urn:uuid:new", "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": "2"}]},
               "request": {"method": "PUT", "url": "Patient?identifier=urn:s|2"}}),
        entry(
            "urn:uuid:o",
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                   "subject": {"reference": "urn:uuid:pat"}, "performer": [{"reference": "urn:uuid:new"}]}),
            "POST",
            "Observation",
        ),
    ]);
    let r = s.post("", &bundle);
    assert_eq!(r.status(), 200);
    let r = json(r);
    assert_eq!(r["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(r["entry"][1]["response"]["status"], "201 Created");
    let obs = json(s.get(r["entry"][2]["response"]["location"].as_str().unwrap()));
    assert_eq!(obs["subject"]["reference"], format!("Patient/{existing}"));
    let new_id = json(s.get("Patient?identifier=urn:s|2"))["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(obs["performer"][0]["reference"], format!("Patient/{new_id}"));
}

#[test]
fn a_transaction_may_change_a_resource_only_once() {
    let s = Server::start();
    let p = json!({"resourceType": "Patient", "id": "twice"});
    let bundle = transaction(vec![
        json!({"resource": p, "request": {"method": "PUT", "url": "Patient/twice"}}),
        json!({"request": {"method": "DELETE", "url": "Patient/twice"}}),
    ]);
    assert_outcome(s.post("", &bundle), 400, "only once");
    assert_eq!(s.get("Patient/twice").status(), 404);
}

#[test]
fn prefer_minimal_never_withholds_a_bundle_response() {
    let s = Server::start();
    let bundle = transaction(vec![entry(
        "urn:uuid:a",
        json!({"resourceType": "Patient"}),
        "POST",
        "Patient",
    )]);
    let r = s
        .request(reqwest::Method::POST, "")
        .header("content-type", "application/fhir+json")
        .header("prefer", "return=minimal")
        .body(bundle.to_string())
        .send()
        .unwrap();
    assert_eq!(json(r)["type"], "transaction-response");
}
