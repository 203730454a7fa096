//! Group commit on PostgreSQL: units of work that share a transaction stay as independent
//! as units in transactions of their own. Runs when the suite runs on PostgreSQL
//! (`SIJILL_TEST_DATABASE`, set by scripts/test); the stores here have one lane, so that
//! concurrent units share its group.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sijill_store::pg::PgStore;
use sijill_store::{Current, Store, StoreError, StoreTx};

/// A fresh database's URL, or None (with a notice) when no PostgreSQL is configured.
fn database(test: &str) -> Option<String> {
    let Some(server) = std::env::var("SIJILL_TEST_DATABASE").ok().filter(|u| !u.is_empty()) else {
        eprintln!("SKIPPED {test}: set SIJILL_TEST_DATABASE=postgres://user@host:port to run it");
        return None;
    };
    let name = format!("sijill_t_group_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    Some(format!("{}/{name}", server.trim_end_matches('/')))
}

fn patient(id: &str) -> serde_json::Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": id}]})
}

/// A store on `url` with one lane: concurrent units share its group.
fn one_lane(url: &str) -> Arc<PgStore> {
    Arc::new(PgStore::open(url).unwrap().with_lanes(1))
}

/// Creates a patient with the id `id`.
fn create(store: &PgStore, id: &str) {
    store
        .write(&mut |tx| tx.create("Patient", patient(id), Some(id)).map(|_| ()))
        .unwrap();
}

/// The current version number of a patient that must exist.
fn version_of(store: &dyn Store, id: &str) -> u64 {
    match store.read("Patient", id).unwrap() {
        Current::Found(now) => now.version,
        _ => panic!("{id} is missing"),
    }
}

fn exists(store: &dyn Store, id: &str) -> bool {
    matches!(store.read("Patient", id).unwrap(), Current::Found(_))
}

/// The transaction that wrote a resource's row last.
fn writer_of(url: &str, id: &str) -> String {
    let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
    admin
        .query_one(
            "SELECT xmin::text FROM resources WHERE type = 'Patient' AND id = $1",
            &[&id],
        )
        .unwrap()
        .get(0)
}

/// Runs `unit` on the store in a thread of its own.
fn spawn_unit(
    store: &Arc<PgStore>,
    unit: impl Fn(&mut dyn StoreTx) -> Result<(), StoreError> + Send + 'static,
) -> std::thread::JoinHandle<Result<(), StoreError>> {
    let store = store.clone();
    std::thread::spawn(move || store.write(&mut |tx| unit(tx)))
}

/// Runs three units that share one transaction: the one in the middle runs `failing` and
/// fails. Checks that it left no resource and that the two others committed, together.
fn group_with_a_failing_unit(
    url: &str,
    failing: impl Fn(&mut dyn StoreTx) -> Result<(), StoreError> + Send + 'static,
) -> Arc<PgStore> {
    let store = one_lane(url);
    let first = spawn_unit(&store, |tx| {
        tx.create("Patient", patient("first"), Some("first"))?;
        // Holds the lane while the others queue behind it.
        std::thread::sleep(Duration::from_millis(400));
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(100));
    let failing = spawn_unit(&store, move |tx| {
        failing(tx)?;
        tx.create("Patient", patient("failing"), Some("failing"))?;
        Err(StoreError::Invalid("the unit changed its mind".into()))
    });
    let last = spawn_unit(&store, |tx| {
        tx.create("Patient", patient("last"), Some("last")).map(|_| ())
    });
    first.join().unwrap().unwrap();
    assert!(failing.join().unwrap().is_err());
    last.join().unwrap().unwrap();
    assert!(exists(&*store, "first") && exists(&*store, "last"));
    assert!(!exists(&*store, "failing"), "the failed unit's resource was written");
    assert_eq!(
        writer_of(url, "first"),
        writer_of(url, "last"),
        "the units did not share a transaction"
    );
    store
}

/// A failing unit that only queued its writes: they are dropped, the earlier unit's stay.
#[test]
fn a_failing_unit_leaves_nothing_and_the_others_of_its_group_commit() {
    let Some(url) = database("a_failing_unit_leaves_nothing") else {
        return;
    };
    group_with_a_failing_unit(&url, |_| Ok(()));
}

/// A failing unit that wrote directly (a state record, under its savepoint, after the
/// earlier unit's versions were written outside it): its savepoint is rolled back.
#[test]
fn a_failing_unit_that_wrote_directly_is_rolled_back_to_its_savepoint() {
    let Some(url) = database("a_failing_unit_that_wrote_directly") else {
        return;
    };
    let store = group_with_a_failing_unit(&url, |tx| tx.state_put("test", "failing", "written"));
    let mut state = None;
    store
        .write(&mut |tx| {
            state = tx.state_get("test", "failing")?;
            Ok(())
        })
        .unwrap();
    assert_eq!(state, None, "the failed unit's state record was written");
}

/// Two servers, each with a group holding one row while its next unit needs the row the
/// other's group holds: waiting in the group would be a deadlock (broken by the database
/// after a second, failing both groups). Each unit that meets the other's lock commits its
/// group's earlier unit first, then waits alone: all four units succeed.
#[test]
fn groups_that_need_each_others_rows_commit_early_instead_of_deadlocking() {
    let Some(url) = database("groups_that_need_each_others_rows") else {
        return;
    };
    let (one, two) = (one_lane(&url), one_lane(&url));
    create(&one, "x");
    create(&one, "y");
    // Reads a row for update and writes a new version of it.
    fn touch(tx: &mut dyn StoreTx, id: &str, hold: Duration) -> Result<(), StoreError> {
        let Current::Found(current) = tx.read_for_update("Patient", id)? else {
            return Err(StoreError::Invalid(format!("{id} is missing")));
        };
        std::thread::sleep(hold);
        tx.update("Patient", id, patient(id), Some(current.version))?;
        Ok(())
    }
    let hold = Duration::from_millis(400);
    let holds_x = spawn_unit(&one, move |tx| touch(tx, "x", hold));
    let holds_y = spawn_unit(&two, move |tx| touch(tx, "y", hold));
    std::thread::sleep(Duration::from_millis(100));
    let wants_y = spawn_unit(&one, |tx| touch(tx, "y", Duration::ZERO));
    let wants_x = spawn_unit(&two, |tx| touch(tx, "x", Duration::ZERO));
    for unit in [holds_x, holds_y, wants_y, wants_x] {
        unit.join().unwrap().unwrap();
    }
    for id in ["x", "y"] {
        assert_eq!(version_of(&*one, id), 3, "{id} was not written by both of its units");
    }
}

/// A unit sharing the transaction that took an advisory lock (an idempotency key's) and
/// then meets a row another server holds cannot move to a new group: it is refused as
/// contention, alone — the earlier unit of its group still commits.
#[test]
fn a_unit_refused_for_contention_does_not_fail_its_group() {
    let Some(url) = database("a_unit_refused_for_contention") else {
        return;
    };
    let (one, two) = (one_lane(&url), one_lane(&url));
    create(&two, "x");
    let holds_x = spawn_unit(&two, |tx| {
        tx.read_for_update("Patient", "x")?;
        std::thread::sleep(Duration::from_millis(900));
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(100));
    let first = spawn_unit(&one, |tx| {
        tx.create("Patient", patient("first"), Some("first"))?;
        std::thread::sleep(Duration::from_millis(400));
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(100));
    let refused = spawn_unit(&one, |tx| {
        tx.state_get("test", "request-key")?;
        tx.read_for_update("Patient", "x")?;
        Ok(())
    });
    first.join().unwrap().unwrap();
    assert!(matches!(refused.join().unwrap(), Err(StoreError::Contention(_))));
    holds_x.join().unwrap().unwrap();
    assert!(exists(&*one, "first"), "the earlier unit was not committed");
}

/// Writers on three servers create one new id at the same instant, round after round,
/// each joining a group another unit opened. A unit sharing its group whose claim of the
/// id loses to another transaction's (after waiting for it) and then meets the new row
/// locked by its next writer must still move to a new group and wait there: every write
/// lands, none is refused.
#[test]
fn writers_racing_to_create_one_id_in_groups_all_land() {
    let Some(url) = database("writers_racing_to_create_one_id") else {
        return;
    };
    const ROUNDS: usize = 6;
    const WRITERS: usize = 4;
    let stores = [one_lane(&url), one_lane(&url), one_lane(&url)];
    for round in 0..ROUNDS {
        let id = format!("raced-{round}");
        // Each store's group is opened by an unrelated unit, which the writers join.
        let openers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(n, store)| {
                spawn_unit(store, move |tx| {
                    tx.state_put("test", &format!("opener-{round}-{n}"), "x")?;
                    std::thread::sleep(Duration::from_millis(50));
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        let writers: Vec<_> = stores
            .iter()
            .flat_map(|store| std::iter::repeat_n(store, WRITERS))
            .map(|store| {
                let id = id.clone();
                spawn_unit(store, move |tx| {
                    tx.update("Patient", &id, patient(&id), None)?;
                    // Holds the row a little, as a request's other work would.
                    std::thread::sleep(Duration::from_millis(5));
                    Ok(())
                })
            })
            .collect();
        for unit in openers.into_iter().chain(writers) {
            unit.join().unwrap().unwrap();
        }
        assert_eq!(
            version_of(&*stores[0], &id) as usize,
            stores.len() * WRITERS,
            "a write of {id} was lost"
        );
    }
}

/// Two servers (two stores on one database) appending audit events at once, to the same
/// chains: each group reads its chain's head only once it holds the chain's lock, so no
/// two events take one position and every chain verifies from its first event to its last.
#[test]
fn two_stores_appending_to_the_same_audit_chains_keep_them_whole() {
    let Some(url) = database("two_stores_appending_to_the_same_audit_chains_keep_them_whole") else {
        return;
    };
    let stores = [one_lane(&url), one_lane(&url)];
    const WRITERS: usize = 6;
    const ROUNDS: usize = 15;
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let store = stores[w % 2].clone();
            scope.spawn(move || {
                for r in 0..ROUNDS {
                    let event = |n: usize| sijill_store::audit::AuditEntry {
                        recorded: "2026-11-25T10:00:00.000Z".into(),
                        patient: None,
                        agent: format!("writer-{w}"),
                        flag: None,
                        body: format!("{{\"resourceType\":\"AuditEvent\",\"round\":{r},\"n\":{n}}}").into_bytes(),
                    };
                    store
                        .write(&mut |tx| tx.append_audit(vec![event(0), event(1)]))
                        .unwrap_or_else(|e| panic!("writer {w}, round {r}: {e}"));
                }
            });
        }
    });
    let verified = sijill_store::audit::verify(stores[0].as_ref(), &mut |_| {}).unwrap();
    assert_eq!(verified.first_break, None);
    assert_eq!(verified.checked, (WRITERS * ROUNDS * 2) as u64);
}
