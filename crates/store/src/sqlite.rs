//! The embedded store: one SQLite database file in the data directory.
//!
//! Layout: `resource_versions` holds every version ever written (the body bytes as
//! served), keyed by a global change sequence `seq`; `resources` points at the current
//! version of each resource; `search_index` holds the extracted search values of current
//! versions. One writer connection (WAL mode, so readers never wait for it) and a small
//! pool of reader connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde_json::Value;

use crate::audit::{self, AuditEntry, AuditQuery, SealedAudit};
use crate::gate::Gate;
use crate::group_commit::{OpenGroup, Outcomes, MAX_UNITS};
use crate::index::IndexRow;
use crate::query::{SearchQuery, SortKey};
use crate::reindex::{reindex, reindex_if_rules_changed, IndexRebuild, REINDEX_BATCH};
use crate::sql::{
    count_statement, history_statements, ids_statement, page_statement, param_key, Arg, Dialect, ParamKeys, SqlBuilder,
    CURRENT_VERSIONS, NEWEST_SEQ, VERSION_COLUMNS,
};
use crate::{
    check_id, check_version, now_instant, prepare_version, Current, HistoryPage, HistoryQuery, PreparedResource,
    Result, Store, StoreError, StoreTx, Stored,
};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE resources (
    rid     INTEGER PRIMARY KEY,
    type    TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    UNIQUE (type, id)
);
CREATE TABLE resource_versions (
    seq          INTEGER PRIMARY KEY,
    rid          INTEGER NOT NULL,
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated TEXT    NOT NULL,
    deleted      INTEGER NOT NULL,
    body         BLOB    NOT NULL
);
CREATE UNIQUE INDEX resource_versions_rid ON resource_versions (rid, version);
CREATE INDEX resource_versions_type ON resource_versions (type, seq);
CREATE INDEX resource_versions_time ON resource_versions (last_updated);
CREATE TABLE index_params (
    key  INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    code TEXT NOT NULL,
    UNIQUE (type, code)
);
CREATE TABLE search_index (
    param  INTEGER NOT NULL,
    value  TEXT    NOT NULL,
    system TEXT    NOT NULL,
    rid    INTEGER NOT NULL,
    exact  TEXT    NOT NULL,
    PRIMARY KEY (param, value, system, rid, exact)
) WITHOUT ROWID;
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE search_date (
    param INTEGER NOT NULL,
    low   TEXT    NOT NULL,
    high  TEXT    NOT NULL,
    rid   INTEGER NOT NULL,
    PRIMARY KEY (param, low, high, rid)
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE search_number (
    param  INTEGER NOT NULL,
    low    REAL    NOT NULL,
    high   REAL    NOT NULL,
    system TEXT    NOT NULL,
    code   TEXT    NOT NULL,
    rid    INTEGER NOT NULL,
    PRIMARY KEY (param, low, high, system, code, rid)
) WITHOUT ROWID;
"#,
    r#"
CREATE INDEX search_index_rid ON search_index (rid);
CREATE INDEX search_date_rid ON search_date (rid);
CREATE INDEX search_number_rid ON search_number (rid);
"#,
    r#"
CREATE TABLE search_composite (
    param     INTEGER NOT NULL,
    c1_system TEXT    NOT NULL,
    c1_value  TEXT    NOT NULL,
    value     TEXT    NOT NULL,
    system    TEXT    NOT NULL,
    code      TEXT    NOT NULL,
    low,
    high,
    rid       INTEGER NOT NULL
);
CREATE INDEX search_composite_lookup ON search_composite (param, c1_value, rid);
CREATE INDEX search_composite_rid ON search_composite (rid);
"#,
    r#"
CREATE TABLE audit_log (
    seq      INTEGER PRIMARY KEY,
    chain    INTEGER NOT NULL,
    position INTEGER NOT NULL,
    recorded TEXT    NOT NULL,
    patient  TEXT,
    agent    TEXT    NOT NULL,
    flag     TEXT,
    body     BLOB    NOT NULL,
    previous BLOB    NOT NULL,
    hash     BLOB    NOT NULL,
    UNIQUE (chain, position)
);
CREATE INDEX audit_log_patient ON audit_log (patient, seq) WHERE patient IS NOT NULL;
CREATE INDEX audit_log_agent ON audit_log (agent, seq);
CREATE INDEX audit_log_flag ON audit_log (flag) WHERE flag IS NOT NULL;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TABLE store_state (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
"#,
    r#"
CREATE TABLE free_slots (
    rid      INTEGER PRIMARY KEY,
    schedule TEXT NOT NULL,
    start    TEXT NOT NULL
);
CREATE INDEX free_slots_start ON free_slots (start);
CREATE INDEX free_slots_schedule ON free_slots (schedule, start);
"#,
];

/// The file name of the database inside the data directory.
pub const DATABASE_FILE: &str = "sijill.db";

/// The embedded SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Writer>,
    /// Units of work waiting for the writer: while one does, the open group goes on.
    queued: AtomicUsize,
    /// Set while a bulk load is the store's only writer: units run without group commit's
    /// savepoints ([`Store::sole_writer`]).
    sole_writer: std::sync::atomic::AtomicBool,
    /// The commits' outcomes, for the units that wait for them.
    outcomes: Outcomes,
    readers: Mutex<Vec<Connection>>,
    /// At most MAX_READERS reads at once.
    reading: Gate,
    param_keys: ParamKeys,
    /// Held for its Drop: stops the checkpoint thread with the store.
    _checkpointer: Checkpointer,
}

/// Copies the write-ahead log into the database file on its own thread, so that the
/// writer never waits for that copy (and its fsync) while it holds the write lock.
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: PathBuf) -> Result<Checkpointer> {
        let conn = open_connection(&path)?;
        // Never wait for the writer: a busy checkpoint is simply tried again later.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(std::time::Duration::from_millis(500))
                {
                    let big = std::fs::metadata(&wal).map(|m| m.len() > 1 << 30).unwrap_or(false);
                    let mode = if big { "TRUNCATE" } else { "PASSIVE" };
                    if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
                        tracing::warn!(error = %e, "checkpoint failed; will retry");
                    }
                }
            })
            .map_err(|e| StoreError::Database(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer connection and the newest lastUpdated it committed (stamps never go back).
struct Writer {
    conn: Connection,
    last_stamp: String,
    /// The group of units sharing the open transaction ([`crate::group_commit`]).
    group: OpenGroup,
}

/// Longest a single read may run.
const READ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Most reader connections open at once; further readers wait for one.
const MAX_READERS: usize = 8;

/// Gives every indexed (type, parameter) pair its integer key, adding new pairs.
fn load_param_keys(conn: &mut Connection) -> Result<ParamKeys> {
    let tx = conn.transaction()?;
    let mut keys = ParamKeys::default();
    {
        let mut insert = tx.prepare("INSERT OR IGNORE INTO index_params (type, code) VALUES (?1, ?2)")?;
        let mut select = tx.prepare("SELECT key FROM index_params WHERE type = ?1 AND code = ?2")?;
        for rt in sijill_fhir::definitions::resource_types() {
            for code in crate::index::params_for(rt).into_iter().flat_map(|p| p.keys()) {
                insert.execute(params![rt, code])?;
                let key: i64 = select.query_row(params![rt, code], |r| r.get(0))?;
                keys.insert((rt, *code), key);
            }
        }
    }
    tx.commit()?;
    Ok(keys)
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA busy_timeout = 10000;
         PRAGMA page_size = 8192;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA cache_size = -65536;
         PRAGMA temp_store = MEMORY;
         PRAGMA mmap_size = 268435456;",
    )?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating when needed) the store in `data_dir` and applies pending migrations.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Database(format!("cannot create data directory {}: {e}", data_dir.display())))?;
        let path = data_dir.join(DATABASE_FILE);
        let mut writer = open_connection(&path)?;
        writer.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -262144;")?;
        migrate(&mut writer)?;
        let param_keys = load_param_keys(&mut writer)?;
        let checkpointer = Checkpointer::start(path.clone())?;
        let store = SqliteStore {
            path,
            writer: Mutex::new(Writer {
                conn: writer,
                last_stamp: String::new(),
                group: OpenGroup::default(),
            }),
            queued: AtomicUsize::new(0),
            sole_writer: std::sync::atomic::AtomicBool::new(false),
            outcomes: Outcomes::default(),
            readers: Mutex::new(Vec::new()),
            reading: Gate::new(MAX_READERS),
            param_keys,
            _checkpointer: checkpointer,
        };
        reindex_if_rules_changed(&store)?;
        Ok(store)
    }

    /// Runs `f` with a reader connection from the pool.
    /// At most [`MAX_READERS`] run at once; the others wait for a free one.
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.with_reader_until(Some(READ_DEADLINE), f)
    }

    /// [`Self::with_reader`] with its own time limit (None: none, for export).
    fn with_reader_until<T>(
        &self,
        limit: Option<std::time::Duration>,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        let _pass = self.reading.enter();
        let conn = match self.readers.lock().pop() {
            Some(c) => c,
            None => open_connection(&self.path)?,
        };
        // No read may hold a reader for ever: SQLite stops it at the deadline.
        if let Some(limit) = limit {
            let deadline = std::time::Instant::now() + limit;
            conn.progress_handler(10_000, Some(move || std::time::Instant::now() > deadline));
        }
        let out = f(&conn).map_err(|e| match e {
            StoreError::Database(m) if m.contains("interrupted") => StoreError::Invalid(format!(
                "The query ran longer than {} s and was stopped: narrow it",
                READ_DEADLINE.as_secs()
            )),
            other => other,
        });
        conn.progress_handler(0, None::<fn() -> bool>);
        self.readers.lock().push(conn);
        out
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let applied: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "the database schema (version {applied}) is newer than this program knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

fn stored_from_row(row: &Row<'_>) -> rusqlite::Result<Stored> {
    let body: Vec<u8> = row.get(5)?;
    Ok(Stored {
        resource_type: row.get(0)?,
        id: row.get(1)?,
        version: row.get::<_, i64>(2)? as u64,
        last_updated: row.get(3)?,
        deleted: row.get::<_, i64>(4)? != 0,
        body: Arc::from(body),
    })
}

fn read_current(conn: &Connection, resource_type: &str, id: &str) -> Result<Current> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM {CURRENT_VERSIONS}
         WHERE r.type = ?1 AND r.id = ?2"
    ))?;
    let found = stmt.query_row(params![resource_type, id], stored_from_row).optional()?;
    Ok(Current::of(found))
}

/// Inserts the index rows of one resource.
fn insert_index_rows(
    conn: &Connection,
    keys: &ParamKeys,
    resource_type: &str,
    rid: i64,
    rows: &[IndexRow],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO search_index (param, value, system, rid, exact) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut insert_date =
        conn.prepare_cached("INSERT OR IGNORE INTO search_date (param, low, high, rid) VALUES (?1, ?2, ?3, ?4)")?;
    let mut insert_number = conn.prepare_cached(
        "INSERT OR IGNORE INTO search_number (param, low, high, system, code, rid) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut insert_composite = conn.prepare_cached(
        "INSERT INTO search_composite (param, c1_system, c1_value, value, system, code, low, high, rid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    if let Some((schedule, start)) = crate::agenda::free_slot(resource_type, rows) {
        conn.prepare_cached("INSERT OR REPLACE INTO free_slots (rid, schedule, start) VALUES (?1, ?2, ?3)")?
            .execute(params![rid, schedule, start])?;
    }
    for row in rows {
        if let Some((c1_system, c1_value)) = &row.composite {
            let key = param_key(keys, resource_type, row.param);
            let system = row.system.as_deref().unwrap_or("");
            let (value, code, low, high): (&str, &str, SqlValue, SqlValue) = match (&row.number, &row.range) {
                (Some((l, h)), _) => ("", row.value.as_str(), SqlValue::Real(*l), SqlValue::Real(*h)),
                (None, Some((l, h))) => ("", "", SqlValue::Text(l.clone()), SqlValue::Text(h.clone())),
                (None, None) => (row.value.as_str(), "", SqlValue::Null, SqlValue::Null),
            };
            insert_composite.execute(params![key, c1_system, c1_value, value, system, code, low, high, rid])?;
            continue;
        }
        if let Some((low, high)) = row.number {
            let system = row.system.as_deref().unwrap_or("");
            insert_number.execute(params![
                param_key(keys, resource_type, row.param),
                low,
                high,
                system,
                row.value,
                rid
            ])?;
            continue;
        }
        if let Some((low, high)) = &row.range {
            insert_date.execute(params![param_key(keys, resource_type, row.param), low, high, rid])?;
            continue;
        }
        insert.execute(params![
            param_key(keys, resource_type, row.param),
            row.value,
            row.system.as_deref().unwrap_or(""),
            rid,
            row.exact.as_deref().unwrap_or("")
        ])?;
    }
    Ok(())
}

/// How a unit of work in a group ended ([`run_unit`]).
enum Ran {
    /// Its writes are in the group's transaction.
    Done,
    /// It failed and left nothing; the group goes on.
    Failed(StoreError),
    /// Its writes could not all be applied and no savepoint can take back those that
    /// were: the group's transaction must be rolled back.
    Broken(StoreError),
    /// It panicked and left nothing; the panic goes on once the group is seen to.
    Panicked(Box<dyn std::any::Any + Send>),
}

/// Runs one unit of work in the open transaction. Its writes are held back and applied
/// when it succeeds, so a unit that fails leaves nothing without the cost of a savepoint
/// (with one, SQLite copies every page the unit changes first, to restore it). A unit that
/// must read what it wrote applies its writes early, under a savepoint, which is rolled
/// back if it then fails. A unit during which SQLite rolled the whole transaction back
/// fails.
fn run_unit(
    conn: &Connection,
    keys: &ParamKeys,
    stamp: &str,
    work: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>,
) -> Ran {
    let mut tx = SqliteTx {
        conn,
        keys,
        stamp,
        held: Some(Held::default()),
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut tx)));
    let savepoint = tx.held.as_ref().is_some_and(|h| h.savepoint);
    // Takes back what the unit applied early, if it did.
    let undo = || match savepoint {
        true => conn.execute_batch("ROLLBACK TO unit; RELEASE unit"),
        false => Ok(()),
    };
    let fail = |e: StoreError| match undo() {
        Ok(()) => Ran::Failed(e),
        Err(u) => Ran::Broken(StoreError::Database(format!("{e}; and it could not be undone: {u}"))),
    };
    let result = match result {
        Ok(result) => result,
        Err(panic) => {
            if undo().is_err() {
                // Whatever it applied early must not commit with the group.
                let _ = conn.execute_batch("ROLLBACK");
            }
            return Ran::Panicked(panic);
        }
    };
    if conn.is_autocommit() {
        return Ran::Failed(
            result
                .err()
                .unwrap_or_else(|| StoreError::Database("the transaction was rolled back by the database".into())),
        );
    }
    if let Err(e) = result {
        return fail(e);
    }
    let applied = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tx.apply_held())) {
        Ok(applied) => applied,
        Err(panic) => {
            // Half applied, perhaps with no savepoint: none of the group may commit.
            let _ = conn.execute_batch("ROLLBACK");
            return Ran::Panicked(panic);
        }
    };
    match applied {
        Ok(()) if savepoint => match conn.execute_batch("RELEASE unit") {
            Ok(()) => Ran::Done,
            Err(e) => Ran::Broken(e.into()),
        },
        Ok(()) => Ran::Done,
        Err(e) if savepoint => fail(e),
        Err(e) => Ran::Broken(e),
    }
}

/// One batch of a rebuild ([`IndexRebuild::rebuild_batch`]) on the writer connection.
fn reindex_batch(conn: &mut Connection, keys: &ParamKeys, after: i64) -> Result<Option<(i64, u64)>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let max: Option<i64> = tx.query_row("SELECT max(rid) FROM resources", [], |r| r.get(0))?;
    let Some(max) = max.filter(|m| *m > after) else {
        return Ok(None);
    };
    let upto = (after + REINDEX_BATCH).min(max);
    for table in crate::sql::INDEX_TABLES {
        tx.execute(
            &format!("DELETE FROM {table} WHERE rid > ?1 AND rid <= ?2"),
            params![after, upto],
        )?;
    }
    let mut done = 0u64;
    {
        let mut stmt = tx.prepare(
            "SELECT r.rid, r.type, v.body FROM resources r
             JOIN resource_versions v ON v.rid = r.rid AND v.version = r.version
             WHERE r.deleted = 0 AND r.rid > ?1 AND r.rid <= ?2",
        )?;
        let mut rows = stmt.query(params![after, upto])?;
        while let Some(row) = rows.next()? {
            let (rid, ty, body): (i64, String, Vec<u8>) = (row.get(0)?, row.get(1)?, row.get(2)?);
            let value: Value = serde_json::from_slice(&body).map_err(|e| StoreError::Database(e.to_string()))?;
            insert_index_rows(&tx, keys, &ty, rid, &crate::index::extract(&ty, &value))?;
            done += 1;
        }
    }
    tx.commit()?;
    Ok(Some((upto, done)))
}

/// The writer's view inside one transaction.
struct SqliteTx<'c> {
    conn: &'c Connection,
    keys: &'c ParamKeys,
    /// The lastUpdated of every version this transaction writes.
    stamp: &'c str,
    /// The writes held back until the unit of work ends (None: written at once, for a
    /// unit alone in its transaction).
    held: Option<Held>,
}

/// A write of a unit of work in a group, held back until the unit ends ([`run_unit`]).
enum Write {
    /// A version as returned to the unit, its index rows, and the row it follows (None
    /// for a new resource).
    Version {
        stored: Stored,
        rows: Vec<IndexRow>,
        existing: Option<CurrentRow>,
    },
    Audit(Vec<AuditEntry>),
    StatePut {
        kind: String,
        key: String,
        value: String,
    },
    StateDelete {
        kind: String,
        key: String,
    },
}

impl Write {
    /// Whether reading the resource `resource_type/id` (any resource: None) must see it.
    fn touches_resource(&self, resource: Option<(&str, &str)>) -> bool {
        match (self, resource) {
            (Write::Version { .. }, None) => true,
            (Write::Version { stored, .. }, Some((t, i))) => stored.resource_type == t && stored.id == i,
            _ => false,
        }
    }

    /// Whether reading the state record `kind/key` must see it.
    fn touches_state(&self, kind: &str, key: &str) -> bool {
        match self {
            Write::StatePut { kind: k, key: n, .. } | Write::StateDelete { kind: k, key: n } => k == kind && n == key,
            _ => false,
        }
    }
}

/// The writes a unit of work holds back, and whether it opened its savepoint.
#[derive(Default)]
struct Held {
    writes: Vec<Write>,
    savepoint: bool,
}

/// The current version of a resource: its row id, version and whether it is deleted.
#[derive(Clone)]
struct CurrentRow {
    rid: i64,
    version: u64,
    deleted: bool,
}

impl SqliteTx<'_> {
    /// Writes one version: body with meta set, the version row, the current pointer and
    /// the index rows.
    fn put_version(
        &mut self,
        resource_type: &str,
        id: &str,
        version: u64,
        body: Option<Value>,
        existing: Option<&CurrentRow>,
    ) -> Result<Stored> {
        let last_updated = self.stamp.to_string();
        let (bytes, rows) = match body {
            Some(body) => prepare_version(resource_type, id, version, body, &last_updated)?,
            None => (Vec::new(), Vec::new()),
        };
        self.write_version(resource_type, id, version, last_updated, bytes, rows, existing)
    }

    /// Writes a prepared version (or holds it back, in a group): the current pointer, the
    /// version row and the index rows.
    #[allow(clippy::too_many_arguments)]
    fn write_version(
        &mut self,
        resource_type: &str,
        id: &str,
        version: u64,
        last_updated: String,
        bytes: Vec<u8>,
        rows: Vec<IndexRow>,
        existing: Option<&CurrentRow>,
    ) -> Result<Stored> {
        let stored = Stored {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            version,
            deleted: bytes.is_empty(),
            last_updated,
            body: Arc::from(bytes),
        };
        self.hold_or_apply(Write::Version {
            stored: stored.clone(),
            rows,
            existing: existing.cloned(),
        })?;
        Ok(stored)
    }

    /// Holds a write back until the unit ends, or applies it now outside a group.
    fn hold_or_apply(&mut self, write: Write) -> Result<()> {
        match &mut self.held {
            Some(held) => {
                held.writes.push(write);
                Ok(())
            }
            None => self.apply(write),
        }
    }

    /// Applies the held writes a read is about to need (`needs` picks them): all of them,
    /// after opening the unit's savepoint, so that a failure later in the unit still
    /// undoes them.
    fn apply_early(&mut self, needs: impl Fn(&Write) -> bool) -> Result<()> {
        let Some(held) = &mut self.held else {
            return Ok(());
        };
        if !held.writes.iter().any(needs) {
            return Ok(());
        }
        if !held.savepoint {
            self.conn.execute_batch("SAVEPOINT unit")?;
            held.savepoint = true;
        }
        self.apply_held()
    }

    /// Applies every held write, in order.
    fn apply_held(&mut self) -> Result<()> {
        let writes = self
            .held
            .as_mut()
            .map(|h| std::mem::take(&mut h.writes))
            .unwrap_or_default();
        writes.into_iter().try_for_each(|w| self.apply(w))
    }

    /// Applies one write to the database.
    fn apply(&mut self, write: Write) -> Result<()> {
        match write {
            Write::Version { stored, rows, existing } => self.apply_version(&stored, &rows, existing.as_ref()),
            Write::Audit(entries) => self.apply_audit(&entries),
            Write::StatePut { kind, key, value } => {
                self.conn
                    .prepare_cached("INSERT OR REPLACE INTO store_state (kind, key, value) VALUES (?1, ?2, ?3)")?
                    .execute(params![kind, key, value])?;
                Ok(())
            }
            Write::StateDelete { kind, key } => {
                self.conn
                    .prepare_cached("DELETE FROM store_state WHERE kind = ?1 AND key = ?2")?
                    .execute(params![kind, key])?;
                Ok(())
            }
        }
    }

    /// Writes one version's rows: the current pointer, the version row and the index rows.
    fn apply_version(&mut self, stored: &Stored, rows: &[IndexRow], existing: Option<&CurrentRow>) -> Result<()> {
        let Stored {
            resource_type,
            id,
            version,
            last_updated,
            deleted,
            body,
        } = stored;
        let (version, deleted) = (*version as i64, *deleted as i64);
        let rid = match existing {
            Some(current) => {
                self.conn
                    .prepare_cached("UPDATE resources SET version = ?1, deleted = ?2 WHERE rid = ?3")?
                    .execute(params![version, deleted, current.rid])?;
                self.remove_index_rows(current)?;
                current.rid
            }
            None => {
                self.conn
                    .prepare_cached("INSERT INTO resources (type, id, version, deleted) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![resource_type, id, version, deleted])?;
                self.conn.last_insert_rowid()
            }
        };
        self.conn
            .prepare_cached(
                "INSERT INTO resource_versions (rid, type, id, version, last_updated, deleted, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                rid,
                resource_type,
                id,
                version,
                last_updated,
                deleted,
                &body[..]
            ])?;
        insert_index_rows(self.conn, self.keys, resource_type, rid, rows)
    }

    /// Appends audit events to the trail's one chain.
    fn apply_audit(&mut self, entries: &[AuditEntry]) -> Result<()> {
        // One writer: the chain's head cannot move under this unit of work.
        let head = self
            .conn
            .prepare_cached(audit::CHAIN_HEAD)?
            .query_row(params![0i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO audit_log (chain, position, recorded, patient, agent, flag, body, previous, hash)
             VALUES (0, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for (e, (position, previous, hash)) in entries.iter().zip(audit::seal_after(head, 0, entries)) {
            insert.execute(params![
                position, e.recorded, e.patient, e.agent, e.flag, e.body, previous, hash
            ])?;
        }
        Ok(())
    }

    /// Removes every index row of a resource (by its row id).
    fn remove_index_rows(&mut self, current: &CurrentRow) -> Result<()> {
        for table in crate::sql::INDEX_TABLES {
            self.conn
                .prepare_cached(&format!("DELETE FROM {table} WHERE rid = ?1"))?
                .execute(params![current.rid])?;
        }
        Ok(())
    }

    fn current_version(&mut self, resource_type: &str, id: &str) -> Result<Option<CurrentRow>> {
        self.apply_early(|w| w.touches_resource(Some((resource_type, id))))?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT rid, version, deleted FROM resources WHERE type = ?1 AND id = ?2")?;
        Ok(stmt
            .query_row(params![resource_type, id], |r| {
                Ok(CurrentRow {
                    rid: r.get(0)?,
                    version: r.get::<_, i64>(1)? as u64,
                    deleted: r.get::<_, i64>(2)? != 0,
                })
            })
            .optional()?)
    }
}

impl StoreTx for SqliteTx<'_> {
    fn create(&mut self, resource_type: &str, body: Value, id: Option<&str>) -> Result<Stored> {
        let id = match id {
            Some(id) => {
                check_id(id)?;
                if self.current_version(resource_type, id)?.is_some() {
                    return Err(StoreError::Invalid(format!("{resource_type}/{id} already exists")));
                }
                id.to_string()
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        self.put_version(resource_type, &id, 1, Some(body), None)
    }

    fn update(&mut self, resource_type: &str, id: &str, body: Value, if_match: Option<u64>) -> Result<(Stored, bool)> {
        check_id(id)?;
        let current = self.current_version(resource_type, id)?;
        check_version(current.as_ref().map(|c| c.version), if_match)?;
        let (version, existed) = match &current {
            Some(c) => (c.version + 1, !c.deleted),
            None => (1, false),
        };
        let stored = self.put_version(resource_type, id, version, Some(body), current.as_ref())?;
        Ok((stored, !existed))
    }

    fn delete(&mut self, resource_type: &str, id: &str, if_match: Option<u64>) -> Result<Option<Stored>> {
        let current = self.current_version(resource_type, id)?;
        check_version(current.as_ref().map(|c| c.version), if_match)?;
        match current {
            Some(c) if !c.deleted => Ok(Some(self.put_version(
                resource_type,
                id,
                c.version + 1,
                None,
                Some(&c),
            )?)),
            _ => Ok(None),
        }
    }

    fn read(&mut self, resource_type: &str, id: &str) -> Result<Current> {
        self.apply_early(|w| w.touches_resource(Some((resource_type, id))))?;
        read_current(self.conn, resource_type, id)
    }

    fn search_ids(&mut self, resource_type: &str, query: &SearchQuery, limit: usize) -> Result<Vec<String>> {
        // A search may reach any resource (chains, _has): it sees every write held.
        self.apply_early(|w| w.touches_resource(None))?;
        search_ids(self.conn, self.keys, resource_type, query, &[], limit)
    }

    fn lock_conditions(&mut self, _conditions: &[(&str, &SearchQuery)]) -> Result<()> {
        // One writer at a time: every unit of work already takes turns.
        Ok(())
    }

    fn append_audit(&mut self, entries: Vec<AuditEntry>) -> Result<()> {
        self.hold_or_apply(Write::Audit(entries))
    }

    fn state_get(&mut self, kind: &str, key: &str) -> Result<Option<String>> {
        self.apply_early(|w| w.touches_state(kind, key))?;
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM store_state WHERE kind = ?1 AND key = ?2")?
            .query_row(params![kind, key], |r| r.get(0))
            .optional()?)
    }

    fn state_put(&mut self, kind: &str, key: &str, value: &str) -> Result<()> {
        self.hold_or_apply(Write::StatePut {
            kind: kind.to_string(),
            key: key.to_string(),
            value: value.to_string(),
        })
    }

    fn state_delete(&mut self, kind: &str, key: &str) -> Result<()> {
        self.hold_or_apply(Write::StateDelete {
            kind: kind.to_string(),
            key: key.to_string(),
        })
    }

    fn insert_prepared(&mut self, p: PreparedResource) -> Result<Stored> {
        check_id(&p.id)?;
        if self.current_version(&p.resource_type, &p.id)?.is_some() {
            return Err(StoreError::Invalid(format!(
                "{}/{} already exists",
                p.resource_type, p.id
            )));
        }
        let resource_type = p.resource_type.clone();
        let id = p.id.clone();
        let (bytes, rows) = p.stamped(self.stamp)?;
        self.write_version(&resource_type, &id, 1, self.stamp.to_string(), bytes, rows, None)
    }
}

/// The search SQL for SQLite, with the store's parameter keys.
fn builder(keys: &ParamKeys) -> SqlBuilder<'_> {
    SqlBuilder {
        dialect: Dialect::Sqlite,
        keys,
    }
}

/// The WHERE clause of a search on this connection (its probes run here).
fn search_sql(
    conn: &Connection,
    keys: &ParamKeys,
    resource_type: &str,
    query: &SearchQuery,
    after_id: Option<&str>,
) -> Result<(String, Vec<Arg>)> {
    let mut probe =
        |sql: &str, args: Vec<Arg>| -> Result<i64> { Ok(conn.query_row(sql, params_from_iter(args), |r| r.get(0))?) };
    builder(keys).search_sql(&mut probe, resource_type, query, after_id)
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Text(t) => rusqlite::types::ToSqlOutput::from(t.as_str()),
            Arg::Real(r) => rusqlite::types::ToSqlOutput::from(*r),
            Arg::Int(i) => rusqlite::types::ToSqlOutput::from(*i),
        })
    }
}

/// Runs an audit row statement.
fn audit_query(conn: &Connection, sql: &str, args: Vec<Arg>) -> Result<Vec<SealedAudit>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt
        .query_map(params_from_iter(args), |r| {
            Ok(SealedAudit {
                seq: r.get(0)?,
                chain: r.get(1)?,
                position: r.get(2)?,
                entry: AuditEntry {
                    recorded: r.get(3)?,
                    patient: r.get(4)?,
                    agent: r.get(5)?,
                    flag: r.get(6)?,
                    body: r.get(7)?,
                },
                previous: r.get(8)?,
                hash: r.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Ids of the matches in `sort` order (ties, and an empty sort, by id).
fn search_ids(
    conn: &Connection,
    keys: &ParamKeys,
    resource_type: &str,
    query: &SearchQuery,
    sort: &[SortKey],
    limit: usize,
) -> Result<Vec<String>> {
    let (clause, args) = search_sql(conn, keys, resource_type, query, None)?;
    let order = builder(keys).ids_order(resource_type, sort);
    let mut stmt = conn.prepare(&ids_statement(&clause, &order, limit))?;
    let ids = stmt
        .query_map(params_from_iter(args), |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

impl SqliteStore {
    /// Commits the open group, if any, and hands its outcome to its waiting units.
    fn settle(&self, w: &mut Writer) -> Result<()> {
        let conn = &w.conn;
        self.outcomes
            .settle(&mut w.group, || match conn.execute_batch("COMMIT") {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(e.into())
                }
            })
    }

    /// Runs a unit of work in a transaction of its own, without a savepoint: for a bulk
    /// load that is the only writer (a savepoint makes SQLite keep the first image of every
    /// page the unit changes, a large cost on big transactions).
    fn write_alone(&self, work: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()> {
        let mut writer = self.writer.lock();
        let w = &mut *writer;
        let _ = self.settle(w);
        w.conn.execute_batch("BEGIN IMMEDIATE")?;
        let stamp = std::cmp::max(now_instant(), w.last_stamp.clone());
        let conn = &w.conn;
        let keys = &self.param_keys;
        let unit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            work(&mut SqliteTx {
                conn,
                keys,
                stamp: &stamp,
                held: None,
            })
        }));
        let outcome = match unit {
            Ok(Ok(())) => conn.execute_batch("COMMIT").map_err(StoreError::from),
            Ok(Err(e)) => Err(e),
            Err(panic) => {
                let _ = conn.execute_batch("ROLLBACK");
                std::panic::resume_unwind(panic);
            }
        };
        match outcome {
            Ok(()) => {
                w.last_stamp = stamp;
                Ok(())
            }
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// Runs a unit of work in the writer's open group (see [`crate::group_commit`]).
    fn write_unit(&self, work: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut writer = self.writer.lock();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let w = &mut *writer;
        if w.group.group.is_some() && w.conn.is_autocommit() {
            // SQLite rolled the open transaction back (a full disk, an I/O error): its
            // group fails, and this unit starts a new one.
            let _ = self.settle(w);
        }
        // IMMEDIATE takes the write lock at once, so the transaction never has to upgrade
        // a read snapshot that a checkpoint has moved on from.
        let conn = &w.conn;
        let group = w.group.join(|| Ok(conn.execute_batch("BEGIN IMMEDIATE")?))?;
        // One lastUpdated per unit, taken under the lock and never earlier than the last
        // one: `_since` polling misses nothing (the group commits before any is seen).
        let stamp = std::cmp::max(now_instant(), w.last_stamp.clone());
        let ran = run_unit(&w.conn, &self.param_keys, &stamp, work);
        let unit = match ran {
            Ran::Done => Ok(()),
            Ran::Failed(e) => Err(e),
            Ran::Panicked(panic) => {
                if self.queued.load(Ordering::SeqCst) == 0 {
                    let _ = self.settle(w);
                }
                std::panic::resume_unwind(panic);
            }
            Ran::Broken(e) => {
                // Part of this unit's writes are in the transaction: none of the group's
                // may commit.
                let _ = w.conn.execute_batch("ROLLBACK");
                let why = format!("a unit of its group could not be written: {e}");
                let _ = self.outcomes.settle(&mut w.group, || Err(StoreError::Database(why)));
                return Err(e);
            }
        };
        if unit.is_ok() {
            w.last_stamp = stamp;
        }
        let last_of_group = self.queued.load(Ordering::SeqCst) == 0 || w.group.units >= MAX_UNITS;
        match (unit, last_of_group) {
            (Ok(()), true) => self.settle(w),
            (Ok(()), false) => {
                w.group.waiting += 1;
                drop(writer);
                self.outcomes.wait(group)
            }
            (Err(e), true) => {
                let _ = self.settle(w);
                Err(e)
            }
            (Err(e), false) => Err(e),
        }
    }
}

impl Store for SqliteStore {
    fn write(&self, work: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()> {
        if self.sole_writer.load(Ordering::SeqCst) {
            return self.write_alone(work);
        }
        self.write_unit(work)
    }

    fn sole_writer(&self, on: bool) {
        self.sole_writer.store(on, Ordering::SeqCst);
    }

    fn free_slots(&self, query: &crate::agenda::AgendaQuery) -> Result<Vec<crate::agenda::FreeSlot>> {
        let (sql, args) = crate::agenda::page_statement(query);
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params_from_iter(args), |r| {
                    Ok(crate::agenda::FreeSlot {
                        id: r.get(0)?,
                        schedule: r.get(1)?,
                        start: r.get(2)?,
                        rid: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn search_sorted_ids(
        &self,
        resource_type: &str,
        query: &SearchQuery,
        sort: &[SortKey],
        limit: usize,
    ) -> Result<Vec<String>> {
        self.with_reader(|c| search_ids(c, &self.param_keys, resource_type, query, sort, limit))
    }

    fn read(&self, resource_type: &str, id: &str) -> Result<Current> {
        self.with_reader(|c| read_current(c, resource_type, id))
    }

    fn vread(&self, resource_type: &str, id: &str, version: u64) -> Result<Option<Stored>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM resource_versions v
                 WHERE v.rid = (SELECT rid FROM resources WHERE type = ?1 AND id = ?2) AND v.version = ?3"
            ))?;
            Ok(stmt
                .query_row(params![resource_type, id, version as i64], stored_from_row)
                .optional()?)
        })
    }

    fn history(&self, q: &HistoryQuery) -> Result<HistoryPage> {
        self.with_reader(|c| {
            let snapshot_seq: i64 = match q.at_or_before_seq {
                Some(s) => s,
                None => c.query_row(NEWEST_SEQ, [], |r| r.get(0))?,
            };
            let ((count_sql, count_args), (page_sql, page_args)) = history_statements(q, snapshot_seq);
            let total: i64 = c.query_row(&count_sql, params_from_iter(count_args), |r| r.get(0))?;
            let rows = c
                .prepare(&page_sql)?
                .query_map(params_from_iter(page_args), |r| {
                    Ok((stored_from_row(r)?, r.get::<_, i64>(6)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(HistoryPage::from_rows(rows, q.count, snapshot_seq, total as u64))
        })
    }

    fn count(&self, resource_type: &str, query: &SearchQuery) -> Result<u64> {
        self.with_reader(|c| {
            let (clause, args) = search_sql(c, &self.param_keys, resource_type, query, None)?;
            let total: i64 = c.query_row(&count_statement(&clause), params_from_iter(args.iter()), |r| r.get(0))?;
            Ok(total as u64)
        })
    }

    fn search_page(
        &self,
        resource_type: &str,
        query: &SearchQuery,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>> {
        self.with_reader(|c| {
            let (clause, args) = search_sql(c, &self.param_keys, resource_type, query, after_id)?;
            let mut stmt = c.prepare(&page_statement(&clause, limit))?;
            let found = stmt
                .query_map(params_from_iter(args), stored_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(found)
        })
    }

    fn export(&self, resource_type: Option<&str>, sink: &mut dyn FnMut(&Stored) -> Result<()>) -> Result<()> {
        self.with_reader_until(None, |c| {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM {CURRENT_VERSIONS}
                 WHERE r.deleted = 0 AND (?1 IS NULL OR r.type = ?1) ORDER BY r.type, r.id"
            );
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(params![resource_type])?;
            while let Some(row) = rows.next()? {
                sink(&stored_from_row(row)?)?;
            }
            Ok(())
        })
    }

    fn compartment_types(&self, owner_type: &str, owner_id: &str, member_types: &[&str]) -> Result<Vec<String>> {
        let mut found: Vec<String> = Vec::new();
        if let Some((sql, args)) = builder(&self.param_keys).compartment_types_sql(owner_type, owner_id, member_types) {
            found = self.with_reader(|c| {
                let mut stmt = c.prepare_cached(&sql)?;
                let types = stmt
                    .query_map(params_from_iter(args), |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(types)
            })?;
        }
        Ok(crate::with_owner_type(found, owner_type, member_types))
    }

    fn counts(&self) -> Result<Vec<(String, u64)>> {
        self.with_reader(|c| {
            let mut stmt =
                c.prepare("SELECT type, count(*) FROM resources WHERE deleted = 0 GROUP BY type ORDER BY type")?;
            let out = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(out)
        })
    }

    fn refresh_statistics(&self) -> Result<()> {
        // Search plans are chosen by the store's own probes, not by SQLite statistics.
        Ok(())
    }

    fn audit_rows(&self, after: Option<(i64, i64)>, limit: usize) -> Result<Vec<SealedAudit>> {
        let (sql, args) = audit::rows_statement(after, limit);
        self.with_reader_until(None, |c| audit_query(c, &sql, args))
    }

    fn audit_search(&self, query: &AuditQuery) -> Result<Vec<SealedAudit>> {
        let (sql, args) = audit::search_statement(query);
        self.with_reader(|c| audit_query(c, &sql, args))
    }

    fn audit_get(&self, seq: i64) -> Result<Option<SealedAudit>> {
        self.with_reader(|c| Ok(audit_query(c, &audit::row_statement(), vec![Arg::Int(seq)])?.pop()))
    }

    fn ping(&self) -> Result<()> {
        self.with_reader(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?))
    }

    fn reindex(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
        reindex(self, progress)
    }
}

impl IndexRebuild for SqliteStore {
    fn live_resources(&self) -> Result<u64> {
        let n: i64 = self
            .with_reader(|c| Ok(c.query_row("SELECT count(*) FROM resources WHERE deleted = 0", [], |r| r.get(0))?))?;
        Ok(n as u64)
    }

    fn rebuild_batch(&self, after: i64) -> Result<Option<(i64, u64)>> {
        let mut writer = self.writer.lock();
        let _ = self.settle(&mut writer);
        reindex_batch(&mut writer.conn, &self.param_keys, after)
    }

    fn recorded_fingerprint(&self) -> Result<Option<String>> {
        self.with_reader(|c| {
            Ok(c.query_row(
                "SELECT value FROM store_meta WHERE key = 'index_fingerprint'",
                [],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    fn record_fingerprint(&self) -> Result<()> {
        let mut writer = self.writer.lock();
        let _ = self.settle(&mut writer);
        writer.conn.execute(
            "INSERT INTO store_meta (key, value) VALUES ('index_fingerprint', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![crate::index::fingerprint()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HistoryScope;
    use serde_json::json;
    use std::collections::HashMap;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn concurrent_units_share_commits_and_a_failing_one_leaves_the_others_whole() {
        let (_dir, store) = store();
        let store = Arc::new(store);
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..40 {
                        let id = format!("p-{t}-{i}");
                        let fails = i % 3 == 0;
                        let result = store.write(&mut |tx| {
                            tx.create("Patient", json!({"resourceType": "Patient"}), Some(&id))?;
                            tx.create(
                                "Observation",
                                json!({"resourceType": "Observation", "status": "final",
                                "code": {"text": "x"}, "subject": {"reference": format!("Patient/{id}")}}),
                                None,
                            )?;
                            if i % 2 == 0 {
                                // Reading its own writes applies them early, under its savepoint.
                                assert!(matches!(tx.read("Patient", &id)?, Current::Found(_)));
                                tx.state_put("test", &id, "written")?;
                                assert_eq!(tx.state_get("test", &id)?.as_deref(), Some("written"));
                            }
                            if fails {
                                return Err(StoreError::Invalid("refused after writing".into()));
                            }
                            Ok(())
                        });
                        assert_eq!(result.is_err(), fails, "{id}: {result:?}");
                        // A unit that returned is committed: visible to every reader at once.
                        let seen = matches!(store.read("Patient", &id).unwrap(), Current::Found(_));
                        assert_eq!(seen, !fails, "{id}");
                        let mut state = None;
                        store
                            .write(&mut |tx| {
                                state = tx.state_get("test", &id)?;
                                Ok(())
                            })
                            .unwrap();
                        assert_eq!(state.is_some(), !fails && i % 2 == 0, "{id}'s state record");
                        if !fails {
                            kept.push(id);
                        }
                    }
                    kept
                })
            })
            .collect();
        let kept: usize = threads.into_iter().map(|t| t.join().unwrap().len()).sum();
        let counts: HashMap<String, u64> = store.counts().unwrap().into_iter().collect();
        assert_eq!(counts.get("Patient").copied(), Some(kept as u64));
        assert_eq!(
            counts.get("Observation").copied(),
            Some(kept as u64),
            "no half of a failed unit"
        );
    }

    fn query(rt: &str, pairs: &[(&str, &str)]) -> SearchQuery {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        SearchQuery::parse(rt, &pairs).unwrap()
    }

    /// The ids a search finds, in order.
    fn found(store: &SqliteStore, rt: &str, pairs: &[(&str, &str)]) -> Vec<String> {
        store
            .search(rt, &query(rt, pairs), None, 10)
            .unwrap()
            .0
            .into_iter()
            .map(|s| s.id)
            .collect()
    }

    #[test]
    fn versions_history_and_index_follow_every_write() {
        let (_dir, store) = store();
        let mut id = String::new();
        store
            .write(&mut |tx| {
                let s = tx.create("Patient", json!({"resourceType": "Patient", "gender": "female"}), None)?;
                id = s.id.clone();
                Ok(())
            })
            .unwrap();
        let female = query("Patient", &[("gender", "female")]);
        assert_eq!(store.search("Patient", &female, None, 10).unwrap().1, 1);
        store
            .write(&mut |tx| {
                let (s, created) = tx.update(
                    "Patient",
                    &id,
                    json!({"resourceType": "Patient", "gender": "male"}),
                    Some(1),
                )?;
                assert_eq!((s.version, created), (2, false));
                Ok(())
            })
            .unwrap();
        assert_eq!(store.search("Patient", &female, None, 10).unwrap().1, 0);
        assert_eq!(
            store
                .search("Patient", &query("Patient", &[("gender", "male")]), None, 10)
                .unwrap()
                .1,
            1
        );
        let conflict = store.write(&mut |tx| {
            tx.update("Patient", &id, json!({"resourceType": "Patient"}), Some(1))?;
            Ok(())
        });
        assert!(matches!(
            conflict,
            Err(StoreError::VersionConflict {
                expected: 1,
                current: 2
            })
        ));
        store
            .write(&mut |tx| {
                assert!(tx.delete("Patient", &id, None)?.is_some());
                assert!(tx.delete("Patient", &id, None)?.is_none());
                Ok(())
            })
            .unwrap();
        assert!(matches!(store.read("Patient", &id).unwrap(), Current::Deleted(_)));
        assert_eq!(
            store
                .search("Patient", &query("Patient", &[("gender", "male")]), None, 10)
                .unwrap()
                .1,
            0
        );
        let old = store.vread("Patient", &id, 1).unwrap().unwrap();
        assert!(String::from_utf8_lossy(&old.body).contains("female"));
        let page = store
            .history(&HistoryQuery {
                scope: HistoryScope::Instance("Patient".into(), id.clone()),
                since: None,
                count: 10,
                before_seq: None,
                at_or_before_seq: None,
            })
            .unwrap();
        assert_eq!(
            page.entries.iter().map(|s| s.version).collect::<Vec<_>>(),
            vec![3, 2, 1]
        );
    }

    /// A unit whose held writes fail half-way, with no savepoint to take back the half
    /// applied, fails its whole group: the earlier unit that waited is told, and nothing
    /// of either is committed.
    #[test]
    fn a_unit_whose_writes_fail_half_way_fails_its_group() {
        let (dir, store) = store();
        let poisoner = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        poisoner
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON resource_versions WHEN NEW.id = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
            )
            .unwrap();
        let store = Arc::new(store);
        let (holding, held) = std::sync::mpsc::channel();
        let earlier = {
            let store = store.clone();
            std::thread::spawn(move || {
                store.write(&mut |tx| {
                    tx.create("Patient", json!({"resourceType": "Patient"}), Some("first"))?;
                    // Holds the writer while the next unit queues behind it.
                    let _ = holding.send(());
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    Ok(())
                })
            })
        };
        held.recv().unwrap();
        let poisoned = store.write(&mut |tx| {
            // Its first write (the version row of `poison`) fails after the current
            // pointer was written.
            tx.create("Patient", json!({"resourceType": "Patient"}), Some("poison"))?;
            Ok(())
        });
        assert!(poisoned.unwrap_err().to_string().contains("poisoned"));
        let earlier = earlier.join().unwrap();
        assert!(earlier.unwrap_err().to_string().contains("could not be written"));
        let rows: i64 = poisoner
            .query_row("SELECT count(*) FROM resources", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "a row of the failed group was committed");
        // The store goes on.
        store
            .write(&mut |tx| {
                tx.create("Patient", json!({"resourceType": "Patient"}), Some("after"))
                    .map(|_| ())
            })
            .unwrap();
        assert!(matches!(store.read("Patient", "after").unwrap(), Current::Found(_)));
    }

    #[test]
    fn a_failed_unit_of_work_leaves_nothing() {
        let (_dir, store) = store();
        let result = store.write(&mut |tx| {
            tx.create("Patient", json!({"resourceType": "Patient"}), Some("p1"))?;
            Err(StoreError::Invalid("stop".into()))
        });
        assert!(result.is_err());
        assert!(matches!(store.read("Patient", "p1").unwrap(), Current::NotFound));
        assert!(store.counts().unwrap().is_empty());
    }

    #[test]
    fn a_sole_writer_commits_whole_units_and_a_failed_one_leaves_nothing() {
        let (_dir, store) = store();
        store.sole_writer(true);
        let result = store.write(&mut |tx| {
            tx.create("Patient", json!({"resourceType": "Patient"}), Some("p1"))?;
            Err(StoreError::Invalid("stop".into()))
        });
        assert!(result.is_err());
        assert!(matches!(store.read("Patient", "p1").unwrap(), Current::NotFound));
        let mut stamps = Vec::new();
        for id in ["p2", "p3"] {
            store
                .write(&mut |tx| {
                    stamps.push(
                        tx.create("Patient", json!({"resourceType": "Patient"}), Some(id))?
                            .last_updated,
                    );
                    Ok(())
                })
                .unwrap();
        }
        assert!(stamps[0] <= stamps[1], "{stamps:?}");
        // Back to group commit: units still commit.
        store.sole_writer(false);
        store
            .write(&mut |tx| {
                tx.create("Patient", json!({"resourceType": "Patient"}), Some("p4"))
                    .map(|_| ())
            })
            .unwrap();
        assert_eq!(store.counts().unwrap(), vec![("Patient".to_string(), 3)]);
    }

    // Plan equivalence and token/string matching: crates/store/tests/both_stores.rs, which
    // runs them on this store and on PostgreSQL.

    #[test]
    fn a_changed_fingerprint_rebuilds_the_index() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            store
                .write(&mut |tx| {
                    tx.create(
                        "Patient",
                        json!({"resourceType": "Patient", "gender": "other"}),
                        Some("p"),
                    )?;
                    Ok(())
                })
                .unwrap();
            let writer = store.writer.lock();
            writer
                .conn
                .execute_batch("DELETE FROM search_index; UPDATE store_meta SET value = 'old'")
                .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let (found, _) = store
            .search("Patient", &query("Patient", &[("gender", "other")]), None, 10)
            .unwrap();
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn date_prefixes_follow_the_specification() {
        let (_dir, store) = store();
        store
            .write(&mut |tx| {
                for (id, birth) in [
                    ("y1989", "1989-12-31"),
                    ("y1990a", "1990-01-01"),
                    ("y1990b", "1990-06"),
                    ("y1991", "1991"),
                ] {
                    tx.create(
                        "Patient",
                        json!({"resourceType": "Patient", "birthDate": birth}),
                        Some(id),
                    )?;
                }
                tx.create("Patient", json!({"resourceType": "Patient"}), Some("none"))?;
                Ok(())
            })
            .unwrap();
        let ids = |v: &str| found(&store, "Patient", &[("birthdate", v)]);
        assert_eq!(ids("1990"), vec!["y1990a", "y1990b"]);
        assert_eq!(ids("eq1990-06"), vec!["y1990b"]);
        assert_eq!(ids("ne1990"), vec!["y1989", "y1991"]);
        assert_eq!(ids("gt1990"), vec!["y1991"]);
        assert_eq!(ids("ge1990"), vec!["y1990a", "y1990b", "y1991"]);
        assert_eq!(ids("lt1990"), vec!["y1989"]);
        assert_eq!(ids("le1990-01-01"), vec!["y1989", "y1990a"]);
        assert_eq!(ids("sa1990-01-01"), vec!["y1990b", "y1991"]);
        assert_eq!(ids("eb1990-06-15"), vec!["y1989", "y1990a"]);
        assert_eq!(ids("1990-01-01T00:00:00Z"), Vec::<String>::new());
        assert!(ids("ap1990-03").contains(&"y1990b".to_string()));
        let missing = |v: &str| found(&store, "Patient", &[("birthdate:missing", v)]);
        assert_eq!(missing("true"), vec!["none"]);
        assert_eq!(missing("false").len(), 4);
        let q = query("Patient", &[("gender:missing", "true")]);
        assert_eq!(store.search("Patient", &q, None, 10).unwrap().1, 5);
    }

    #[test]
    fn numbers_and_quantities_honour_precision_prefixes_and_units() {
        let (_dir, store) = store();
        store
            .write(&mut |tx| {
                for (id, value, code) in [
                    ("a", 5.4, "%"),
                    ("b", 5.46, "%"),
                    ("c", 120.0, "mm[Hg]"),
                    ("d", 7.0, "mmol/L"),
                ] {
                    tx.create(
                        "Observation",
                        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                               "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": code}}),
                        Some(id),
                    )?;
                }
                Ok(())
            })
            .unwrap();
        let ids = |v: &str| found(&store, "Observation", &[("value-quantity", v)]);
        assert_eq!(ids("5.4"), vec!["a"]);
        assert_eq!(ids("5"), vec!["a", "b"]);
        assert_eq!(ids("5.5"), vec!["b"]);
        assert_eq!(ids("gt100"), vec!["c"]);
        assert_eq!(ids("le7"), vec!["a", "b", "d"]);
        assert_eq!(ids("ge7||mmol/L"), vec!["d"]);
        assert_eq!(ids("lt200|http://unitsofmeasure.org|mm[Hg]"), vec!["c"]);
        assert_eq!(ids("ap5.3"), vec!["a", "b"]);
        assert_eq!(ids("ne5.4").len(), 3);
        let bad = SearchQuery::parse("Observation", &[("value-quantity".into(), "lots".into())]);
        assert!(bad.is_err());
    }

    #[test]
    fn a_transaction_has_one_stamp_and_stamps_never_go_back() {
        let (_dir, store) = store();
        let early = crate::prepare_new(
            "Patient",
            "p1",
            json!({"resourceType": "Patient"}),
            "2000-01-01T00:00:00.000Z",
        )
        .unwrap();
        let mut stamps = Vec::new();
        store
            .write(&mut |tx| {
                let a = tx.insert_prepared(early.clone())?;
                let b = tx.create("Patient", json!({"resourceType": "Patient"}), None)?;
                for s in [&a, &b] {
                    let body: Value = serde_json::from_slice(&s.body).unwrap();
                    assert_eq!(body["meta"]["lastUpdated"], s.last_updated.as_str());
                }
                stamps.push(a.last_updated.clone());
                stamps.push(b.last_updated.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(stamps[0], stamps[1]);
        assert!(stamps[0].as_str() > "2000-01-01T00:00:00.000Z");
        store
            .write(&mut |tx| {
                stamps.push(
                    tx.create("Patient", json!({"resourceType": "Patient"}), None)?
                        .last_updated,
                );
                Ok(())
            })
            .unwrap();
        assert!(stamps[2] >= stamps[1]);
    }

    #[test]
    fn review_cases_for_numbers_dates_and_stamps() {
        let (_dir, store) = store();
        let mut stamp = String::new();
        store
            .write(&mut |tx| {
                for (id, v) in [("n535", 5.35), ("n115", 1.15), ("n997", 99.7)] {
                    tx.create(
                        "Observation",
                        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                               "valueQuantity": {"value": v}}),
                        Some(id),
                    )?;
                }
                tx.create(
                    "Observation",
                    json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                           "valueRange": {"low": {"value": 3}, "high": {"value": 10}}}),
                    Some("range"),
                )?;
                tx.create(
                    "Patient",
                    json!({"resourceType": "Patient", "deceasedDateTime": "2020-05-01"}),
                    Some("dead"),
                )?;
                let p = crate::prepare_new(
                    "Patient",
                    "prep",
                    json!({"resourceType": "Patient"}),
                    "2000-01-01T00:00:00.000Z",
                )?;
                stamp = tx.insert_prepared(p)?.last_updated;
                Ok(())
            })
            .unwrap();
        let obs = |v: &str| found(&store, "Observation", &[("value-quantity", v)]);
        assert!(obs("5.4").contains(&"n535".to_string()));
        assert!(!obs("1.1").contains(&"n115".to_string()));
        assert!(obs("ge100").contains(&"n997".to_string()));
        assert!(!obs("sa5").contains(&"range".to_string()));
        assert_eq!(found(&store, "Patient", &[("death-date", "2020")]), vec!["dead"]);
        let since = format!("ge{stamp}");
        assert!(found(&store, "Patient", &[("_lastUpdated", since.as_str())]).contains(&"prep".to_string()));
        // Dates at the end of the calendar do not panic.
        assert!(SearchQuery::parse("Patient", &[("birthdate".into(), "ap9999".into())]).is_ok());
        assert!(crate::time_fmt::date_range("9999-12-31T23:00:00-05:00").is_some());
    }

    #[test]
    fn a_read_past_its_deadline_is_stopped() {
        let (_dir, store) = store();
        let slow =
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 100000000) SELECT count(*) FROM n";
        let result = store.with_reader_until(Some(std::time::Duration::from_millis(50)), |c| {
            Ok(c.query_row(slow, [], |r| r.get::<_, i64>(0))?)
        });
        assert!(
            matches!(result, Err(StoreError::Invalid(ref m)) if m.contains("stopped")),
            "{result:?}"
        );
        // The reader is fine afterwards.
        assert!(store.ping().is_ok());
    }

    #[test]
    fn composite_values_must_be_found_on_the_same_element() {
        let (_dir, store) = store();
        let loinc = "http://loinc.org";
        store
            .write(&mut |tx| {
                tx.create(
                    "Observation",
                    json!({"resourceType": "Observation", "status": "final",
                           "code": {"coding": [{"system": loinc, "code": "4548-4"}]},
                           "valueQuantity": {"value": 8.1, "system": "http://unitsofmeasure.org", "code": "%"}}),
                    Some("hba1c"),
                )?;
                tx.create(
                    "Observation",
                    json!({"resourceType": "Observation", "status": "final",
                    "code": {"coding": [{"system": loinc, "code": "85354-9"}]},
                    "component": [
                        {"code": {"coding": [{"system": loinc, "code": "8480-6"}]}, "valueQuantity": {"value": 150}},
                        {"code": {"coding": [{"system": loinc, "code": "8462-4"}]}, "valueQuantity": {"value": 95}}
                    ]}),
                    Some("bp"),
                )?;
                Ok(())
            })
            .unwrap();
        let obs = |p: &str, v: &str| found(&store, "Observation", &[(p, v)]);
        assert_eq!(obs("code-value-quantity", "http://loinc.org|4548-4$gt7"), vec!["hba1c"]);
        assert!(obs("code-value-quantity", "4548-4$lt7").is_empty());
        assert_eq!(obs("component-code-value-quantity", "8480-6$ge140"), vec!["bp"]);
        // 95 belongs to the diastolic component, not the systolic one.
        assert!(obs("component-code-value-quantity", "8480-6$lt100").is_empty());
        assert_eq!(obs("combo-code-value-quantity", "8462-4$95"), vec!["bp"]);
        assert!(SearchQuery::parse("Observation", &[("code-value-quantity".into(), "4548-4".into())]).is_err());
    }
}
