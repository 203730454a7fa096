//! Store-level cases run on every backend: the embedded SQLite store always, PostgreSQL when
//! the suite runs there (`SIJILL_TEST_DATABASE=postgres://user@host:port`, set by
//! scripts/test). The plan the store picks differs by backend (and by how selective each
//! criterion is), the results must not.

use serde_json::json;
use sijill_store::pg::PgStore;
use sijill_store::sqlite::SqliteStore;
use sijill_store::{Current, SearchQuery, Store};

/// A store to test, with what keeps it alive.
struct Backend {
    name: &'static str,
    store: Box<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

/// An empty SQLite store, and an empty PostgreSQL database when one is configured.
fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![Backend {
        name: "SQLite",
        store: Box::new(SqliteStore::open(dir.path()).unwrap()),
        _dir: Some(dir),
    }];
    match std::env::var("SIJILL_TEST_DATABASE").ok().filter(|u| !u.is_empty()) {
        Some(server) => {
            let name = format!("sijill_t_store_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let url = format!("{}/{name}", server.trim_end_matches('/'));
            out.push(Backend {
                name: "PostgreSQL",
                store: Box::new(PgStore::open(&url).unwrap()),
                _dir: None,
            });
        }
        None => eprintln!("PostgreSQL half skipped: SIJILL_TEST_DATABASE is not set"),
    }
    out
}

fn query(rt: &str, pairs: &[(&str, &str)]) -> SearchQuery {
    let pairs: Vec<(String, String)> = pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    SearchQuery::parse(rt, &pairs).unwrap()
}

#[test]
fn every_plan_finds_the_same_resources_on_every_store() {
    for b in backends() {
        // 1,050 common observations make `status` and code A unselective; code B and the
        // subject are selective.
        b.store
            .write(&mut |tx| {
                tx.update("Patient", "p1", json!({"resourceType": "Patient"}), None)?;
                for i in 0..1053 {
                    let code = if i < 1050 { "A" } else { "B" };
                    let day = format!("2026-01-{:02}", 1 + i % 28);
                    let subject = if i % 100 == 0 { "Patient/p1" } else { "Patient/p2" };
                    tx.create(
                        "Observation",
                        json!({"resourceType": "Observation", "status": "final",
                               "code": {"coding": [{"system": "urn:x", "code": code}]},
                               "subject": {"reference": subject}, "effectiveDateTime": day}),
                        None,
                    )?;
                }
                Ok(())
            })
            .unwrap();
        let total = |pairs: &[(&str, &str)]| {
            b.store
                .search("Observation", &query("Observation", pairs), None, 5)
                .unwrap()
                .1
        };
        let n = b.name;
        assert_eq!(total(&[("status", "final"), ("code", "A")]), 1050, "{n}");
        assert_eq!(total(&[("status", "final"), ("code", "B")]), 3, "{n}");
        assert_eq!(total(&[("code", "urn:x|B"), ("subject", "Patient/p1")]), 0, "{n}");
        assert_eq!(total(&[("code", "A"), ("subject", "Patient/p1")]), 11, "{n}");
        assert_eq!(total(&[("status", "final"), ("date", "2026-01-05")]), 38, "{n}");
        assert_eq!(total(&[("status", "final"), ("date", "ge2026-01-27")]), 74, "{n}");
        assert_eq!(total(&[("status:not", "final")]), 0, "{n}");
        assert_eq!(total(&[("code:not", "A"), ("status", "final")]), 3, "{n}");
        assert_eq!(total(&[("status", "final"), ("subject:missing", "true")]), 0, "{n}");
        assert_eq!(total(&[("subject:Patient._id", "p1"), ("code", "A")]), 11, "{n}");
        // The subject drives; the code, with its system, is looked up per candidate in the
        // primary key on PostgreSQL.
        assert_eq!(total(&[("subject", "Patient/p1"), ("code", "urn:x|A")]), 11, "{n}");
        assert_eq!(total(&[("subject", "Patient/p1"), ("code", "urn:y|A")]), 0, "{n}");
        // A later page counts all the matches, not only those after its cursor.
        let b_query = query("Observation", &[("code", "urn:x|B")]);
        let (first, all) = b.store.search("Observation", &b_query, None, 1).unwrap();
        let (rest, counted) = b.store.search("Observation", &b_query, Some(&first[0].id), 5).unwrap();
        assert_eq!((all, rest.len(), counted), (3, 2, 3), "{n}");
        let page = b
            .store
            .search(
                "Observation",
                &query("Observation", &[("status", "final"), ("code", "A")]),
                None,
                5,
            )
            .unwrap()
            .0;
        let ids: Vec<String> = page.iter().map(|s| s.id.clone()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted, "{n}: a page is in id order, without repeats");
        assert_eq!(ids.len(), 5, "{n}");
    }
}

#[test]
fn tokens_strings_and_long_values_on_every_store() {
    // 2,400 letters that do not compress: a value and its exact form would not fit one
    // btree entry (2,704 bytes) uncut.
    let mut seed = 7u64;
    let long_family: String = (0..2400)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (b'a' + (seed >> 59) as u8 % 26) as char
        })
        .collect();
    for b in backends() {
        b.store
            .write(&mut |tx| {
                tx.create(
                    "Patient",
                    json!({"resourceType": "Patient", "identifier": [{"system": "urn:a", "value": "1"}],
                           "name": [{"family": "Éloufir"}]}),
                    Some("a"),
                )?;
                tx.create(
                    "Patient",
                    json!({"resourceType": "Patient", "identifier": [{"value": "1"}],
                           "name": [{"family": long_family.clone()}]}),
                    Some("b"),
                )?;
                Ok(())
            })
            .unwrap();
        let ids = |pairs: &[(&str, &str)]| -> Vec<String> {
            b.store
                .search("Patient", &query("Patient", pairs), None, 10)
                .unwrap()
                .0
                .into_iter()
                .map(|s| s.id)
                .collect()
        };
        let n = b.name;
        assert_eq!(ids(&[("identifier", "1")]), vec!["a", "b"], "{n}");
        assert_eq!(ids(&[("identifier", "urn:a|1")]), vec!["a"], "{n}");
        assert_eq!(ids(&[("identifier", "|1")]), vec!["b"], "{n}");
        assert_eq!(ids(&[("identifier", "urn:a|")]), vec!["a"], "{n}");
        assert_eq!(ids(&[("identifier:not", "urn:a|1")]), vec!["b"], "{n}");
        assert_eq!(ids(&[("family", "elou")]), vec!["a"], "{n}");
        assert_eq!(ids(&[("family:exact", "Éloufir")]), vec!["a"], "{n}");
        assert!(ids(&[("family:exact", "eloufir")]).is_empty(), "{n}");
        assert_eq!(ids(&[("family:contains", "LOUF")]), vec!["a"], "{n}");
        assert_eq!(ids(&[("family", &long_family[..40])]), vec!["b"], "{n}");
        assert_eq!(ids(&[("family:exact", long_family.as_str())]), vec!["b"], "{n}");
        assert_eq!(ids(&[("_id", "b,zz")]), vec!["b"], "{n}");
        let after_a = b
            .store
            .search("Patient", &query("Patient", &[]), Some("a"), 10)
            .unwrap()
            .0;
        assert_eq!(after_a.len(), 1, "{n}: the page after id a");
        let compartment = b
            .store
            .compartment_types("Patient", "a", &["Observation", "Patient"])
            .unwrap();
        assert_eq!(compartment, vec!["Patient".to_string()], "{n}");
    }
}

/// PostgreSQL only: after the database ends the pool's sessions while they rest (a restart,
/// a failover), reads and writes go on without an error — the pool tests a connection that
/// rested and replaces a dead one.
#[test]
fn connections_the_database_closed_while_they_rested_are_replaced() {
    let Some(server) = std::env::var("SIJILL_TEST_DATABASE").ok().filter(|u| !u.is_empty()) else {
        eprintln!("PostgreSQL half skipped: SIJILL_TEST_DATABASE is not set");
        return;
    };
    let name = format!("sijill_t_store_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let url = format!("{}/{name}", server.trim_end_matches('/'));
    let store = PgStore::open(&url).unwrap();
    let found = |id: &str| matches!(store.read("Patient", id).unwrap(), sijill_store::Current::Found(_));
    let create = |id: &str| {
        let patient = json!({"resourceType": "Patient", "id": id, "name": [{"family": "Rested"}]});
        store
            .write(&mut |tx| tx.create("Patient", patient.clone(), Some(id)).map(|_| ()))
            .unwrap();
    };
    create("p1");
    assert!(found("p1"));
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let ended: Vec<bool> = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(ended.iter().any(|e| *e), "the pool had no session to end");
    std::thread::sleep(std::time::Duration::from_millis(5_500));
    assert!(found("p1"));
    create("p2");
    assert!(found("p2"));
}

/// `versions_of` answers for many resources in one look: the current version of each that
/// was ever written, marked when it is a delete; nothing for the others.
#[test]
fn versions_of_many_resources_on_every_store() {
    for b in backends() {
        let slot = |id: &str| json!({"resourceType": "Slot", "id": id, "status": "free"});
        b.store
            .write(&mut |tx| {
                tx.create("Slot", slot("a"), Some("a"))?;
                tx.create("Slot", slot("b"), Some("b"))?;
                Ok(())
            })
            .unwrap();
        b.store
            .write(&mut |tx| {
                tx.update("Slot", "a", slot("a"), Some(1))?;
                tx.delete("Slot", "b", Some(1))?;
                // Created in this unit of work, not written yet: it is seen too.
                tx.create("Slot", slot("d"), Some("d"))?;
                let ids: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
                let found = tx.versions_of("Slot", &ids)?;
                assert_eq!(found.get("a"), Some(&(2, false)), "{}", b.name);
                assert_eq!(found.get("b"), Some(&(2, true)), "{}", b.name);
                assert_eq!(found.get("c"), None, "{}", b.name);
                assert_eq!(found.get("d"), Some(&(1, false)), "{}", b.name);
                Ok(())
            })
            .unwrap();
    }
}

/// `read_each` answers several reads at once, in the order asked: what `read` gives for
/// each (found, deleted, never written), the same resource asked twice answered twice.
#[test]
fn several_reads_at_once_on_every_store() {
    for b in backends() {
        let slot = |id: &str, status: &str| json!({"resourceType": "Slot", "id": id, "status": status});
        b.store
            .write(&mut |tx| {
                tx.create("Slot", slot("a", "free"), Some("a"))?;
                tx.create("Slot", slot("b", "free"), Some("b"))?;
                tx.create("Patient", json!({"resourceType": "Patient", "id": "a"}), Some("a"))?;
                Ok(())
            })
            .unwrap();
        b.store
            .write(&mut |tx| {
                tx.update("Slot", "a", slot("a", "busy"), Some(1))?;
                tx.delete("Slot", "b", Some(1))?;
                Ok(())
            })
            .unwrap();
        let asked = [
            ("Patient", "a"),
            ("Slot", "c"),
            ("Slot", "b"),
            ("Slot", "a"),
            ("Patient", "a"),
        ];
        let read = b.store.read_each(&asked).unwrap();
        assert_eq!(read.len(), asked.len(), "{}", b.name);
        for ((resource_type, id), got) in asked.iter().zip(&read) {
            let alone = b.store.read(resource_type, id).unwrap();
            assert_eq!(describe(got), describe(&alone), "{} {resource_type}/{id}", b.name);
        }
        assert!(matches!(&read[3], Current::Found(s) if s.version == 2 && s.resource_type == "Slot"));
        assert!(matches!(&read[2], Current::Deleted(_)), "{}", b.name);
        assert!(matches!(&read[1], Current::NotFound), "{}", b.name);
        assert!(matches!(&read[0], Current::Found(s) if s.resource_type == "Patient"));
        assert!(b.store.read_each(&[]).unwrap().is_empty(), "{}", b.name);
    }
}

/// A read's outcome as comparable text: which kind, and the version's type, id and number.
fn describe(c: &Current) -> String {
    match c {
        Current::Found(s) => format!("found {}/{}/{}", s.resource_type, s.id, s.version),
        Current::Deleted(s) => format!("deleted {}/{}/{}", s.resource_type, s.id, s.version),
        Current::NotFound => "not found".into(),
    }
}
