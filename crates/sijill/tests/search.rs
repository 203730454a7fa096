//! Black-box tests of search over HTTP: criteria, modifiers and result parameters.

mod common;

use common::{assert_outcome, json, link, Server};
use serde_json::{json, Value};

fn ids_by_mode(bundle: &Value, mode: &str) -> Vec<String> {
    let mut v: Vec<String> = bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["search"]["mode"] == mode)
                .map(|x| {
                    format!(
                        "{}/{}",
                        x["resource"]["resourceType"].as_str().unwrap(),
                        x["resource"]["id"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A patient with a practitioner and two observations.
fn population(s: &Server) -> (String, String, String, String) {
    let dr = s.create(&json!({"resourceType": "Practitioner", "name": [{"family": "Haddad"}]}));
    let p = s.create(
        &json!({"resourceType": "Patient", "name": [{"family": "Saidi"}], "gender": "male",
                             "generalPractitioner": [{"reference": format!("Practitioner/{dr}")}]}),
    );
    let obs = |code: &str| {
        s.create(&json!({"resourceType": "Observation", "status": "final",
                         "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                         "subject": {"reference": format!("Patient/{p}")}, "effectiveDateTime": "2024-05-02"}))
    };
    let o1 = obs("4548-4");
    let o2 = obs("8480-6");
    (dr, p, o1, o2)
}

#[test]
fn include_and_revinclude() {
    let s = Server::start();
    let (dr, p, o1, o2) = population(&s);
    let b = json(s.get("Observation?code=http://loinc.org|4548-4&_include=Observation:subject"));
    assert_eq!(ids_by_mode(&b, "match"), vec![format!("Observation/{o1}")]);
    assert_eq!(ids_by_mode(&b, "include"), vec![format!("Patient/{p}")]);
    assert_eq!(b["total"], 1);
    // :iterate follows the included patient to its practitioner.
    let b = json(
        s.get("Observation?code=4548-4&_include=Observation:subject&_include:iterate=Patient:general-practitioner"),
    );
    assert_eq!(
        ids_by_mode(&b, "include"),
        vec![format!("Patient/{p}"), format!("Practitioner/{dr}")]
    );
    let b = json(s.get(&format!("Patient?_id={p}&_revinclude=Observation:subject")));
    assert_eq!(ids_by_mode(&b, "include"), {
        let mut v = vec![format!("Observation/{o1}"), format!("Observation/{o2}")];
        v.sort();
        v
    });
    let b = json(s.get(&format!("Patient?_id={p}&_include=*")));
    assert_eq!(ids_by_mode(&b, "include"), vec![format!("Practitioner/{dr}")]);
    assert_outcome(s.get("Patient?_include=Patient:name"), 400, "_include");
    assert_outcome(s.get("Patient?_include=Nothing"), 400, "_include");
}

#[test]
fn summary_elements_total_and_missing() {
    let s = Server::start();
    let (_dr, p, o1, _o2) = population(&s);
    let b = json(s.get("Observation?_summary=count"));
    assert_eq!(b["total"], 2);
    assert!(b.get("entry").is_none());
    let b = json(s.get("Observation?_total=none"));
    assert!(b.get("total").is_none());
    assert_eq!(b["entry"].as_array().unwrap().len(), 2);
    let b = json(s.get(&format!("Patient?_id={p}&_elements=gender")));
    let r = &b["entry"][0]["resource"];
    assert_eq!(r["gender"], "male");
    assert!(r.get("name").is_none());
    assert_eq!(r["meta"]["tag"][0]["code"], "SUBSETTED");
    s.create(&json!({"resourceType": "Patient"}));
    assert_eq!(json(s.get("Patient?gender:missing=true"))["total"], 1);
    assert_eq!(json(s.get("Patient?gender:missing=false"))["total"], 1);
    assert_outcome(s.get("Patient?gender:missing=maybe"), 400, "gender");
    let summary = json(s.get(&format!("Observation?_summary=true&_id={o1}")));
    let r = &summary["entry"][0]["resource"];
    assert!(
        r.get("code").is_some() && r.get("status").is_some() && r.get("subject").is_some(),
        "{r}"
    );
    assert_eq!(r["meta"]["tag"][0]["code"], "SUBSETTED");
    let with_text = json!({"resourceType": "Patient", "gender": "female", "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}});
    let t = s.create(&with_text);
    let text_only = json(s.get(&format!("Patient?_summary=text&_id={t}")));
    let r = &text_only["entry"][0]["resource"];
    assert!(r.get("text").is_some() && r.get("gender").is_none(), "{r}");
    assert_outcome(s.get("Patient?_summary=maybe"), 400, "_summary");
    // Summary applies at every depth: a name keeps its family, not its extensions;
    // a contact (not summary) goes.
    let nested = s.create(&json!({"resourceType": "Patient", "name": [{
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/language", "valueCode": "ar"}],
        "family": "Alaoui", "given": ["Amina"]}],
        "contact": [{"name": {"family": "Bennani"}}]}));
    let b = json(s.get(&format!("Patient?_summary=true&_id={nested}")));
    let r = &b["entry"][0]["resource"];
    assert_eq!(r["name"][0]["family"], "Alaoui", "{r}");
    assert_eq!(r["name"][0]["given"][0], "Amina", "{r}");
    assert!(r["name"][0].get("extension").is_none(), "{r}");
    assert!(r.get("contact").is_none(), "{r}");
    assert_outcome(s.get("Observation?code-value-quantity=x"), 400, "code-value-quantity");
}

#[test]
fn paging_is_stable_and_post_search_matches_get() {
    let s = Server::start();
    for i in 0..7 {
        s.create(&json!({"resourceType": "Patient", "gender": "female", "name": [{"family": format!("F{i}")}]}));
    }
    let mut seen = Vec::new();
    let mut url = "Patient?gender=female&_count=3".to_string();
    for _ in 0..5 {
        let b = json(s.get(&url));
        assert_eq!(b["total"], 7);
        seen.extend(ids_by_mode(&b, "match"));
        match link(&b, "next") {
            Some(next) => url = next,
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 7);
    let post = s
        .request(reqwest::Method::POST, "Patient/_search")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("gender=female&_count=100")
        .send()
        .unwrap();
    assert_eq!(json(post)["total"], 7);
    let hostile = format!(
        "Patient?{}",
        (0..60).map(|i| format!("name=x{i}")).collect::<Vec<_>>().join("&")
    );
    assert_outcome(s.get(&hostile), 400, "at most");
    let many = format!(
        "Patient?name={}",
        (0..200).map(|i| format!("x{i}")).collect::<Vec<_>>().join(",")
    );
    assert_outcome(s.get(&many), 400, "more than");
}

#[test]
fn arabic_names_contains_and_uri_modifiers() {
    let s = Server::start();
    let id = s.create(&json!({"resourceType": "Patient", "name": [{"family": "أحمد", "given": ["فاطمة"]}, {"family": "Ahmed", "given": ["Fatima-Zahra"]}]}));
    let found = |q: &str| json(s.get(&format!("Patient?{q}")))["total"].as_u64().unwrap();
    assert_eq!(found("family=احمد"), 1);
    assert_eq!(found("given=فاطمه"), 1);
    assert_eq!(found("family=ahm"), 1);
    assert_eq!(found("given:contains=zahr"), 1);
    assert_eq!(found("given:contains=100%25"), 0);
    assert_eq!(found("family:exact=Ahmed"), 1);
    assert_eq!(found("family:exact=ahmed"), 0);
    assert_eq!(json(s.get("Patient?family=احمد"))["entry"][0]["resource"]["id"], id);
    s.create(&json!({"resourceType": "ValueSet", "status": "active", "url": "http://sijill.ma/fhir/ValueSet/regions"}));
    let vs = |q: &str| json(s.get(&format!("ValueSet?{q}")))["total"].as_u64().unwrap();
    assert_eq!(vs("url:below=http://sijill.ma/fhir"), 1);
    assert_eq!(vs("url:below=http://sijill.dz"), 0);
    assert_eq!(vs("url:above=http://sijill.ma/fhir/ValueSet/regions/2024"), 1);
    assert_eq!(vs("url=http://sijill.ma/fhir/ValueSet/regions"), 1);
}

#[test]
fn chained_parameters() {
    let s = Server::start();
    let (_dr, p, o1, o2) = population(&s);
    s.put(
        &format!("Patient/{p}"),
        &json!({"resourceType": "Patient", "id": p, "name": [{"family": "Saidi"}],
        "identifier": [{"system": "urn:ma:cnie", "value": "AB123"}],
        "generalPractitioner": [{"reference": format!("Practitioner/{_dr}")}]}),
    );
    let other =
        s.create(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:ma:cnie", "value": "ZZ9"}]}));
    s.create(
        &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                     "subject": {"reference": format!("Patient/{other}")}}),
    );
    let ids = |q: &str| ids_by_mode(&json(s.get(&format!("Observation?{q}"))), "match");
    let mut both = vec![format!("Observation/{o1}"), format!("Observation/{o2}")];
    both.sort();
    assert_eq!(ids("subject:Patient.identifier=urn:ma:cnie|AB123"), both);
    assert_eq!(ids("patient.identifier=AB123"), both);
    assert_eq!(
        ids("patient.identifier=AB123&code=4548-4"),
        vec![format!("Observation/{o1}")]
    );
    assert_eq!(ids("patient.general-practitioner:Practitioner.name=hadd"), both);
    assert!(ids("patient.general-practitioner:Practitioner.name=nobody").is_empty());
    assert_outcome(s.get("Observation?subject.identifier=AB123"), 400, "several types");
    assert_outcome(s.get("Observation?code.identifier=AB123"), 400, "not a reference");
    assert_outcome(
        s.get("Observation?patient.general-practitioner:Practitioner.organization.partof.name=x"),
        400,
        "more than",
    );
    assert_outcome(s.get("Observation?patient.shoe=1"), 400, "shoe");
}

#[test]
fn compartment_search_and_everything() {
    let s = Server::start();
    let (_dr, p, o1, o2) = population(&s);
    let enc = s.create(
        &json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                               "subject": {"reference": format!("Patient/{p}")}}),
    );
    let other = s.create(&json!({"resourceType": "Patient"}));
    s.create(
        &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                     "subject": {"reference": format!("Patient/{other}")}}),
    );
    let b = json(s.get(&format!("Patient/{p}/Observation?code=4548-4")));
    assert_eq!(ids_by_mode(&b, "match"), vec![format!("Observation/{o1}")]);
    assert_eq!(json(s.get(&format!("Patient/{p}/Observation")))["total"], 2);
    assert_outcome(s.get(&format!("Patient/{p}/Organization")), 404, "compartment");

    let mut expected = vec![
        format!("Encounter/{enc}"),
        format!("Observation/{o1}"),
        format!("Observation/{o2}"),
        format!("Patient/{p}"),
    ];
    expected.sort();
    let all = json(s.get(&format!("Patient/{p}/$everything")));
    assert_eq!(all["total"], 4);
    assert_eq!(ids_by_mode(&all, "match"), expected);
    // Paged two at a time, the pages add up to the same set.
    let mut seen = Vec::new();
    let mut url = format!("Patient/{p}/$everything?_count=2");
    for _ in 0..5 {
        let page = json(s.get(&url));
        assert!(page["entry"].as_array().map_or(0, |e| e.len()) <= 2);
        seen.extend(ids_by_mode(&page, "match"));
        match link(&page, "next") {
            Some(next) => url = next,
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, expected);
    let only_obs = json(s.get(&format!("Patient/{p}/$everything?_type=Observation")));
    assert_eq!(only_obs["total"], 2);
    let none = json(s.get(&format!("Patient/{p}/$everything?_since=2100-01-01T00:00:00Z")));
    assert_eq!(none["total"], 0);
    assert_outcome(s.get("Patient/nobody/$everything"), 404, "nobody");
    assert_outcome(s.get(&format!("Patient/{p}/$everything?_type=Unicorn")), 400, "Unicorn");
    assert_outcome(s.get(&format!("Patient/{p}/$frobnicate")), 404, "$frobnicate");
}

#[test]
fn reverse_chaining_with_has() {
    let s = Server::start();
    let (dr, p, _o1, _o2) = population(&s);
    let other = s.create(&json!({"resourceType": "Patient", "name": [{"family": "Other"}]}));
    let patients = |q: &str| ids_by_mode(&json(s.get(&format!("Patient?{q}"))), "match");
    assert_eq!(
        patients("_has:Observation:patient:code=4548-4"),
        vec![format!("Patient/{p}")]
    );
    assert_eq!(
        patients("_has:Observation:subject:code=http://loinc.org|8480-6"),
        vec![format!("Patient/{p}")]
    );
    assert!(patients("_has:Observation:patient:code=0000-0").is_empty());
    // Only patients that have an Observation at all can match, whatever the inner test.
    assert_eq!(
        patients("_has:Observation:patient:code:not=0000-0"),
        vec![format!("Patient/{p}")]
    );
    assert!(!patients("_has:Observation:patient:code:not=0000-0").contains(&format!("Patient/{other}")));
    let practitioners = ids_by_mode(
        &json(s.get("Practitioner?_has:Patient:general-practitioner:_has:Observation:patient:code=4548-4")),
        "match",
    );
    assert_eq!(practitioners, vec![format!("Practitioner/{dr}")]);
    assert_outcome(
        s.get("Patient?_has:Observation:code:status=final"),
        400,
        "not a reference",
    );
    assert_outcome(s.get("Patient?_has:Nope:patient:code=1"), 400, "Nope");
    assert_outcome(s.get("Patient?_has:Observation:patient"), 400, "_has");
}

#[test]
fn sorting_and_snapshot_paging() {
    let s = Server::start();
    for (family, birth, gender) in [
        ("Bennani", "1980-05-01", "female"),
        ("Alaoui", "1975", "male"),
        ("Chraibi", "1990-01-10", "female"),
        ("Daoudi", "1980-05-01", "male"),
    ] {
        s.create(
            &json!({"resourceType": "Patient", "name": [{"family": family}], "birthDate": birth, "gender": gender}),
        );
    }
    s.create(&json!({"resourceType": "Patient", "name": [{"family": "Nobirth"}]}));
    let families = |q: &str| -> Vec<String> {
        json(s.get(&format!("Patient?{q}")))["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["name"][0]["family"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        families("_sort=family"),
        vec!["Alaoui", "Bennani", "Chraibi", "Daoudi", "Nobirth"]
    );
    let by_birth = families("_sort=-birthdate");
    assert_eq!(
        (by_birth[0].as_str(), by_birth[3].as_str(), by_birth[4].as_str()),
        ("Chraibi", "Alaoui", "Nobirth")
    );
    // Bennani and Daoudi share a birth date: the order between them is by id.
    let mut tie = vec![by_birth[1].clone(), by_birth[2].clone()];
    tie.sort();
    assert_eq!(tie, vec!["Bennani", "Daoudi"]);
    assert_eq!(
        families("_sort=birthdate,-family"),
        vec!["Alaoui", "Daoudi", "Bennani", "Chraibi", "Nobirth"]
    );
    assert_eq!(families("gender=female&_sort=-family"), vec!["Chraibi", "Bennani"]);
    // Paging reads a snapshot: a resource created between pages does not shift them.
    let first = json(s.get("Patient?_sort=family&_count=2"));
    let next = link(&first, "next").unwrap();
    s.create(&json!({"resourceType": "Patient", "name": [{"family": "Aaa"}]}));
    let second = json(s.get(&next));
    let names: Vec<&str> = second["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["name"][0]["family"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Chraibi", "Daoudi"]);
    assert_eq!(second["total"], 5);
    assert_outcome(s.get("Patient?_sort=shoe-size"), 400, "shoe-size");
    assert_outcome(s.get("Patient?_sort=a,b,c,d,e,f"), 400, "_sort");
    assert_outcome(s.get("Patient?_sort=family&_page=nothere:0"), 410, "expired");
}

#[test]
fn lenient_handling_ignores_what_it_cannot_apply() {
    let s = Server::start();
    population(&s);
    let lenient = |q: &str| {
        json(
            s.request(reqwest::Method::GET, &format!("Observation?{q}"))
                .header("prefer", "handling=lenient")
                .send()
                .unwrap(),
        )
    };
    let b = lenient("code=4548-4&shoe-size=42&_contained=true");
    assert_eq!(b["total"], 1);
    let self_link = b["link"][0]["url"].as_str().unwrap();
    assert!(
        self_link.contains("code=4548-4") && !self_link.contains("shoe-size"),
        "{self_link}"
    );
    assert_outcome(s.get("Observation?code=4548-4&shoe-size=42"), 400, "shoe-size");
}

#[test]
fn token_text_modifier() {
    let s = Server::start();
    let id = s.create(&json!({"resourceType": "Condition", "subject": {"reference": "Patient/x"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11", "display": "Type 2 diabetes mellitus"}],
                 "text": "Diabète de type 2"}}));
    let found = |q: &str| ids_by_mode(&json(s.get(&format!("Condition?{q}"))), "match");
    assert_eq!(found("code:text=diabete"), vec![format!("Condition/{id}")]);
    assert_eq!(found("code:text=type 2"), vec![format!("Condition/{id}")]);
    assert!(found("code:text=asthma").is_empty());
    // The text is not a code.
    assert!(found("code=diabete de type 2").is_empty());
    assert_eq!(found("code=E11"), vec![format!("Condition/{id}")]);
}

#[test]
fn identifier_of_type() {
    let s = Server::start();
    let v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
    s.create(&json!({"resourceType": "Patient", "identifier": [
        {"type": {"coding": [{"system": v2, "code": "MR"}]}, "system": "urn:chu-rabat:mrn", "value": "000123"},
        {"type": {"coding": [{"system": v2, "code": "NI"}]}, "system": "urn:ma:cnie", "value": "AB12345"}]}));
    let found = |q: &str| json(s.get(&format!("Patient?{q}")))["total"].as_u64().unwrap();
    assert_eq!(found(&format!("identifier:of-type={v2}|MR|000123")), 1);
    assert_eq!(found(&format!("identifier:of-type={v2}|NI|000123")), 0);
    assert_eq!(found("identifier=000123"), 1);
    assert_eq!(found(&format!("identifier={v2}|MR|000123")), 0);
    assert_outcome(s.get("Patient?identifier:of-type=MR|000123"), 400, "type-system");
}

#[test]
fn in_and_not_in_expand_core_value_sets() {
    let s = Server::start();
    let category = |system: &str, code: &str| {
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "category": [{"coding": [{"system": system, "code": code}]}]})
    };
    let vital = s.create(&category(
        "http://terminology.hl7.org/CodeSystem/observation-category",
        "vital-signs",
    ));
    let other = s.create(&category("urn:other", "vital-signs"));
    let none = s.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "y"}}));
    let search = |q: &str| {
        let bundle = json(s.get(&format!("Observation?{q}")));
        let mut ids: Vec<String> = bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let vs = "http://hl7.org/fhir/ValueSet/observation-category";
    assert_eq!(search(&format!("category:in={vs}")), vec![vital.clone()]);
    assert_eq!(search(&format!("category:in={vs}|4.0.1")), vec![vital.clone()]);
    assert_eq!(search(&format!("category:not-in={vs}")), sorted(vec![other, none]));
    assert_outcome(
        s.get("Observation?category:in=http://example.org/ValueSet/unknown"),
        400,
        "category:in",
    );
    assert_outcome(s.get(&format!("Observation?category:in={vs}|3.0.2")), 400, "not known");
    // Both criteria must hold: a status in the category value set never matches.
    assert_eq!(
        search(&format!("status:in={vs}&category:in={vs}")),
        Vec::<String>::new()
    );
}

#[test]
fn type_level_everything_walks_every_patient_page_by_page() {
    let s = Server::start();
    let mut expected = Vec::new();
    for n in 0..3 {
        let p = s.create(&json!({"resourceType": "Patient", "gender": "female"}));
        expected.push(format!("Patient/{p}"));
        for _ in 0..n + 1 {
            let o = s.create(
                &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                     "subject": {"reference": format!("Patient/{p}")}}),
            );
            expected.push(format!("Observation/{o}"));
        }
    }
    // Resources outside any patient's compartment are not part of it.
    s.create(&json!({"resourceType": "Organization", "name": "Centre de santé"}));
    expected.sort();
    for count in [1, 2, 4, 100] {
        let mut seen = Vec::new();
        let mut url = format!("Patient/$everything?_count={count}");
        for _ in 0..20 {
            let page = json(s.get(&url));
            assert!(page["entry"].as_array().map_or(0, Vec::len) <= count, "{page}");
            seen.extend(ids_by_mode(&page, "match"));
            match link(&page, "next") {
                Some(next) => url = next,
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            seen.len(),
            "_count={count}: a resource came twice: {seen:?}"
        );
        assert_eq!(unique, expected, "_count={count}");
    }
    let only = json(s.get("Patient/$everything?_type=Observation&_count=100"));
    assert_eq!(ids_by_mode(&only, "match").len(), 6);
    assert_outcome(s.get("Patient/$everything?_cursor=nonsense"), 400, "_cursor");
    assert_outcome(s.get("Patient/$everything?_type=Nothing"), 400, "_type");
    assert_outcome(s.get("Observation/$everything"), 404, "not supported");
}
