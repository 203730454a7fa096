//! The production store: PostgreSQL (15 or newer), shared by any number of server processes.
//!
//! Same tables and the same search statements as the embedded store ([`crate::sql`]); what
//! differs is concurrency. Writers run in READ COMMITTED transactions from a connection
//! pool and never take a global lock:
//! - an update or delete locks the resource's row (`SELECT … FOR UPDATE`), so concurrent
//!   writers of one resource queue behind each other and each sees the version the other
//!   wrote (If-Match is checked against it: no lost update);
//! - a create inserts with `ON CONFLICT DO NOTHING`, so two creates of one id cannot both win;
//! - the conditions of conditional creates, updates and deletes are locked first
//!   ([`StoreTx::lock_conditions`]: transaction-scoped advisory locks, in key order), so two
//!   conditional creates of the same resource run one after the other and the second finds
//!   the first (no duplicate);
//! - a deadlock the database breaks (writers of several resources in opposite orders) is
//!   [`StoreError::Contention`]: nothing written, send again.
//!
//! New resources prepared outside the transaction (imports, transaction Bundles) are
//! gathered and written in bulk: one multi-row statement per table per batch.

mod batch;
mod group;
mod pool;
pub mod schema;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Row};
use serde_json::Value;

use crate::audit::{self, AuditEntry, AuditQuery, SealedAudit};
use crate::group_commit::Outcomes;
use crate::index::IndexRow;
use crate::query::{SearchQuery, SortKey};
use crate::reindex::{reindex, reindex_if_rules_changed, IndexRebuild, REINDEX_BATCH};
use crate::sql::INDEX_TABLES;
use crate::sql::{
    count_statement, history_statements, ids_statement, numbered, page_statement, Arg, Dialect, ParamKeys, SqlBuilder,
    CURRENT_VERSIONS, NEWEST_SEQ, VERSION_COLUMNS,
};
use crate::{
    check_id, check_version, prepare_version, Current, HistoryPage, HistoryQuery, PreparedResource, Result, Store,
    StoreError, StoreTx, Stored,
};
use batch::{Version, WriteBatch};
use pool::{Connection, Manager, Runner};

/// Longest a single statement may run (reads and writes; export and reindex have none).
const STATEMENT_TIMEOUT_MS: u64 = 10_000;

/// Group-commit lanes a store has unless told otherwise ([`PgStore::with_lanes`]).
pub const DEFAULT_LANES: usize = group::LANES;

/// Connections per server process.
const POOL_SIZE: u32 = 16;

/// Longest a writer waits for another writer's row or condition lock.
const LOCK_TIMEOUT_MS: u64 = 10_000;

/// Makes resources' rows (`$1`) point at their new versions (`$2`, deleted `$3`, compartment
/// `$4`), removes the index rows of the old versions of those that had one (`$5`), and
/// claims the rows of new resources (types `$6`, ids `$7`, compartments `$8`), returning
/// the type, id and row id of each new row claimed — an id taken meanwhile returns none —
/// in one statement (the rows it updates and those it inserts are never the same).
static POINT_AND_CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let deletes: String = INDEX_TABLES
        .iter()
        .enumerate()
        .map(|(i, table)| format!(", d{i} AS (DELETE FROM {table} WHERE rid = ANY($5::bigint[]))"))
        .collect();
    format!(
        "WITH u AS (UPDATE resources r SET version = n.version, deleted = n.deleted, \
         patient_key = coalesce(n.patient_key, r.patient_key) \
         FROM unnest($1::bigint[], $2::bigint[], $3::bool[], $4::text[]) AS n(rid, version, deleted, patient_key) \
         WHERE r.rid = n.rid){deletes} \
         INSERT INTO resources (type, id, version, deleted, patient_key) \
         SELECT t, i, 1, false, p FROM unnest($6::text[], $7::text[], $8::text[]) AS n(t, i, p) \
         ON CONFLICT (type, id) DO NOTHING RETURNING type, id, rid"
    )
});

/// The current versions of `n` resources, each asked for by type and id (`$1`, `$2`, then
/// `$3`, `$4`, …) and returned with its place in the question (column 7, from 1): one
/// lookup per resource, joined with `UNION ALL`, so that the plan is the one of a single
/// read and is kept from call to call.
fn read_each_statement(n: usize) -> String {
    (0..n)
        .map(|k| {
            format!(
                "SELECT {VERSION_COLUMNS}, {place}::bigint FROM {CURRENT_VERSIONS} WHERE r.type = ${t} AND r.id = ${i}",
                place = k + 1,
                t = 2 * k + 1,
                i = 2 * k + 2
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// Locks a resource's row and reads its current version, then the clock (columns: the
/// version's, the clock, the row id); nothing when the row changed while the lock waited.
static LOCK_AND_READ: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT l.type, l.id, l.version, l.last_updated, l.deleted, l.body, {NOW}, l.rid
         FROM (SELECT {VERSION_COLUMNS}, r.rid FROM {CURRENT_VERSIONS}
               WHERE r.type = $1 AND r.id = $2 FOR UPDATE OF r) AS l"
    )
});

/// [`LOCK_AND_READ`], or nothing when another transaction holds the row.
static LOCK_AND_READ_SKIPPING: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{} SKIP LOCKED) AS l", LOCK_AND_READ.trim_end_matches(") AS l")));

/// Reads the version of a row already locked (the columns of [`LOCK_AND_READ`]).
static READ_LOCKED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {VERSION_COLUMNS}, {NOW}, v.rid FROM resource_versions v WHERE v.rid = $1 AND v.version = $2")
});

/// Raises the newest lastUpdated a process committed to `stamp`, if that is newer.
fn raise_stamp(last: &Mutex<String>, stamp: &str) {
    let mut last = last.lock();
    if last.as_str() < stamp {
        *last = stamp.to_string();
    }
}

/// The store's clock: the database's, in the stored instant format, so that every server
/// process stamps versions from one clock.
const NOW: &str = "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

/// The PostgreSQL store.
pub struct PgStore {
    pool: r2d2::Pool<Manager>,
    param_keys: ParamKeys,
    /// The newest lastUpdated this process committed (its stamps never go back).
    last_stamp: Mutex<String>,
    /// The group transactions units of work run in ([`group`]): fewer than half the pool,
    /// so that reads inside a unit (the access guard's lookups) always find a connection.
    lanes: group::Lanes,
    /// Turns over the audit chains: each unit of work appends to the next one.
    next_chain: std::sync::atomic::AtomicI64,
    /// A bulk load is under way: units of work commit without waiting for the disk.
    bulk_load: std::sync::atomic::AtomicBool,
}

/// The advisory lock of audit chain n is this plus n ("SIJILAU" in ASCII).
const AUDIT_CHAIN_LOCK: i64 = 0x0053_494A_494C_4155 << 8;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) if *db.code() == postgres::error::SqlState::QUERY_CANCELED => StoreError::Invalid(format!(
                "The query ran longer than {} s and was stopped: narrow it",
                STATEMENT_TIMEOUT_MS / 1000
            )),
            Some(db)
                if *db.code() == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                    || *db.code() == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                    || *db.code() == postgres::error::SqlState::LOCK_NOT_AVAILABLE =>
            {
                StoreError::Contention("another transaction wrote the same resources at the same time".into())
            }
            Some(db) => StoreError::Database(format!("{} ({})", db.message(), db.code().code())),
            None => StoreError::Database(e.to_string()),
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Database(format!("no database connection: {e}"))
    }
}

impl ToSql for Arg {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            // Indexed text is cut to MAX_INDEXED_BYTES: a searched value is cut the same way.
            Arg::Text(t) if t.len() > batch::MAX_INDEXED_BYTES => batch::fit(t).to_sql(ty, out),
            Arg::Text(t) => t.to_sql(ty, out),
            Arg::Real(r) => r.to_sql(ty, out),
            Arg::Int(i) => i.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <String as ToSql>::accepts(ty) || <f64 as ToSql>::accepts(ty) || <i64 as ToSql>::accepts(ty)
    }

    postgres::types::to_sql_checked!();
}

/// Connects to `url`, creating the database when it does not exist yet (the role needs
/// CREATEDB for that; otherwise an administrator creates it first).
fn connect_creating(url: &str) -> Result<postgres::Config> {
    let config: postgres::Config = url.parse().map_err(|e| {
        StoreError::Invalid(format!(
            "not a PostgreSQL URL ({e}): postgres://user@host:port/database"
        ))
    })?;
    match config.connect(NoTls) {
        Ok(_) => return Ok(config),
        Err(e) if e.as_db_error().map(|d| d.code()) == Some(&postgres::error::SqlState::INVALID_CATALOG_NAME) => {}
        Err(e) => return Err(e.into()),
    }
    let name = config.get_dbname().unwrap_or("postgres").to_string();
    let mut admin = config.clone();
    admin.dbname("postgres");
    let mut client = admin.connect(NoTls)?;
    // UTF-8 whatever the server's default: prefix searches bound ranges with U+10FFFF.
    let create = format!(
        "CREATE DATABASE \"{}\" ENCODING 'UTF8' TEMPLATE template0",
        name.replace('"', "\"\"")
    );
    match client.batch_execute(&create) {
        Ok(()) => tracing::info!(database = %name, "created the database"),
        // Another server created it at the same moment.
        Err(e) if e.as_db_error().map(|d| d.code()) == Some(&postgres::error::SqlState::DUPLICATE_DATABASE) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(config)
}

impl PgStore {
    /// Opens the store at `url` (`postgres://user@host:port/database`), creating the
    /// database when missing, applying pending migrations and rebuilding the search index
    /// when its extraction rules changed.
    pub fn open(url: &str) -> Result<Self> {
        let mut config = connect_creating(url)?;
        // Our statements quote with standard strings (ESCAPE '\\'); the URL's own options stay.
        let options = format!(
            "{} -c statement_timeout={STATEMENT_TIMEOUT_MS} -c standard_conforming_strings=on",
            config.get_options().unwrap_or("")
        );
        config.options(options.trim());
        if config.get_application_name().is_none() {
            config.application_name("sijill");
        }
        let mut client = config.connect(NoTls)?;
        // Migrations (and waiting for another server's) may take longer than a request.
        client.batch_execute("SET statement_timeout = 0")?;
        schema::migrate(&mut client)?;
        let param_keys = load_param_keys(&mut client)?;
        let manager = Manager { config };
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            // Tested at checkout only after resting a while (`PgStore::client`).
            .test_on_check_out(false)
            .connection_timeout(std::time::Duration::from_secs(10))
            .build(manager)?;
        let store = PgStore {
            pool,
            param_keys,
            last_stamp: Mutex::new(String::new()),
            lanes: group::Lanes::new(group::LANES),
            next_chain: std::sync::atomic::AtomicI64::new(0),
            bulk_load: std::sync::atomic::AtomicBool::new(false),
        };
        reindex_if_rules_changed(&store)?;
        Ok(store)
    }

    /// The store with `lanes` group transactions open at once at most (default 2, at most
    /// half the pool): fewer lanes make larger groups. Tests use one, to make units share.
    pub fn with_lanes(mut self, lanes: usize) -> Self {
        self.lanes = group::Lanes::new(lanes.min(POOL_SIZE as usize / 2));
        self
    }

    /// Analyses `tables` on one connection, taking the next one not yet taken (`next`)
    /// until none is left or one fails.
    fn analyse(&self, tables: &[String], next: &std::sync::atomic::AtomicUsize) -> Result<()> {
        let mut client = self.client()?;
        client.batch_execute("SET statement_timeout = 0")?;
        let mut analysed = Ok(());
        while let Some(table) = tables.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
            analysed = client.batch_execute(&format!("ANALYZE \"{}\"", table.replace('"', "\"\"")));
            if analysed.is_err() {
                break;
            }
        }
        // The pooled connection goes back with its usual limit, whatever ANALYZE did.
        client.batch_execute(&format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))?;
        Ok(analysed?)
    }

    /// A pooled connection that answers (see `pool::Connection::usable`); dead ones are
    /// dropped and replaced, so a database restart costs no request an error.
    fn client(&self) -> Result<r2d2::PooledConnection<Manager>> {
        for _ in 0..=POOL_SIZE {
            let mut conn = self.pool.get()?;
            if conn.usable() {
                return Ok(conn);
            }
        }
        Err(StoreError::Database("no database connection answers".into()))
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64> {
        let mut client = self.pool.get()?;
        Ok(client
            .query_one("SELECT coalesce(max(version), 0)::bigint FROM schema_migrations", &[])?
            .get(0))
    }
}

/// The search SQL for PostgreSQL, with the store's parameter keys.
fn builder(keys: &ParamKeys) -> SqlBuilder<'_> {
    SqlBuilder {
        dialect: Dialect::Postgres,
        keys,
    }
}

/// The WHERE clause of a search, its probes run on `runner`.
fn search_sql(
    keys: &ParamKeys,
    runner: &mut dyn Runner,
    resource_type: &str,
    query: &SearchQuery,
    after_id: Option<&str>,
) -> Result<(String, Vec<Arg>)> {
    let mut probe = |sql: &str, args: Vec<Arg>| -> Result<i64> {
        let rows = runner.rows(numbered(sql).as_str(), &args)?;
        Ok(rows.first().map(|r| r.get(0)).unwrap_or(0))
    };
    builder(keys).search_sql(&mut probe, resource_type, query, after_id)
}

/// Gives every indexed (type, parameter) pair its integer key, adding new pairs.
fn load_param_keys(client: &mut Client) -> Result<ParamKeys> {
    let mut pairs: Vec<(&'static str, &'static str)> = Vec::new();
    for rt in sijill_fhir::definitions::resource_types() {
        for code in crate::index::params_for(rt).into_iter().flat_map(|p| p.keys()) {
            pairs.push((rt, code));
        }
    }
    let types: Vec<&str> = pairs.iter().map(|(t, _)| *t).collect();
    let codes: Vec<&str> = pairs.iter().map(|(_, c)| *c).collect();
    client.execute(
        "INSERT INTO index_params (type, code) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
        &[&types, &codes],
    )?;
    let known: HashMap<(String, String), i32> = client
        .query("SELECT type, code, key FROM index_params", &[])?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let mut keys = ParamKeys::default();
    for (rt, code) in pairs {
        if let Some(key) = known.get(&(rt.to_string(), code.to_string())) {
            keys.insert((rt, code), i64::from(*key));
        }
    }
    Ok(keys)
}

/// The Patient whose compartment a resource belongs to: the patient itself, or the first
/// patient its compartment references name. None for reference data.
fn patient_key(resource_type: &str, id: &str, rows: &[IndexRow]) -> Option<String> {
    if resource_type == "Patient" {
        return Some(id.to_string());
    }
    let params = sijill_fhir::definitions::compartment_params("Patient", resource_type)?;
    rows.iter()
        .find(|r| params.contains(&r.param) && r.system.as_deref() == Some("Patient"))
        .map(|r| r.value.clone())
}

fn stored_from_row(row: &Row) -> Stored {
    let body: Vec<u8> = row.get(5);
    Stored {
        resource_type: row.get(0),
        id: row.get(1),
        version: row.get::<_, i64>(2) as u64,
        last_updated: row.get(3),
        deleted: row.get(4),
        body: Arc::from(body),
    }
}

fn read_current(runner: &mut dyn Runner, resource_type: &str, id: &str) -> Result<Current> {
    let rows = runner.rows(
        &format!(
            "SELECT {VERSION_COLUMNS} FROM {CURRENT_VERSIONS}
             WHERE r.type = $1 AND r.id = $2"
        ),
        &[Arg::Text(resource_type.to_string()), Arg::Text(id.to_string())],
    )?;
    Ok(Current::of(rows.first().map(stored_from_row)))
}

/// Ids of the matches in `sort` order (ties, and an empty sort, by id).
fn search_ids(
    keys: &ParamKeys,
    runner: &mut dyn Runner,
    resource_type: &str,
    query: &SearchQuery,
    sort: &[SortKey],
    limit: usize,
) -> Result<Vec<String>> {
    let (clause, args) = search_sql(keys, runner, resource_type, query, None)?;
    let order = builder(keys).ids_order(resource_type, sort);
    let sql = numbered(&ids_statement(&clause, &order, limit));
    Ok(runner.rows(&sql, &args)?.iter().map(|r| r.get(0)).collect())
}

/// How a unit sharing its transaction fared locking a row without waiting
/// ([`PgTx::lock_without_waiting`]).
enum Sharing {
    /// Locked: the statement's row.
    Locked(Row),
    /// No such row.
    Missing,
    /// Not sharing (any more): the unit may wait for the row.
    Alone,
}

/// The current version of a resource as a writer sees it.
struct CurrentRow {
    rid: i64,
    version: u64,
    deleted: bool,
    /// When the current version was written.
    last_updated: String,
}

/// A new resource waiting to be written with the next batch.
struct Pending {
    resource_type: String,
    id: String,
    bytes: Vec<u8>,
    rows: Vec<IndexRow>,
    /// For a new version of an existing resource, its row id and version number (the row
    /// is pointed at it, and the old version's index rows removed, with the batch). None
    /// for a new resource, whose row is claimed with the batch.
    existing: Option<(i64, i64)>,
    /// Its lastUpdated.
    stamp: String,
}

/// The writer's view of one unit of work, inside the transaction of its group (see
/// [`group`]).
struct PgTx<'a> {
    /// The connection, inside the group's transaction.
    conn: &'a mut Connection,
    keys: &'a ParamKeys,
    /// The lastUpdated of every version this unit writes: taken from the database clock at
    /// its first write (after its first row lock, so a writer that waited for another
    /// stamps after it), never earlier than `floor`.
    stamp: Option<String>,
    /// The newest stamp this process committed before the group began, or that an earlier
    /// unit of the group took.
    floor: String,
    /// Versions not written yet — of new resources and of changed ones — written with the
    /// next batch: at commit, or before a read of one of them or a search.
    pending: Vec<Pending>,
    /// The audit chain the group appends to.
    chain: i64,
    /// Audit events to seal at the end of the group.
    audit: Vec<AuditEntry>,
    /// Rows the group locked by reading them for update, until it writes them.
    locked: HashMap<(String, String), CurrentRow>,
    /// What this unit did so far, to undo it or carry it into a new group.
    unit: group::UnitMarks,
    /// Set while earlier units share the transaction: this unit then never waits for a
    /// lock another transaction holds (it commits the earlier units first), and writes
    /// directly only under a savepoint.
    shared: Option<group::Shared<'a>>,
}

impl PgTx<'_> {
    /// Runs one of the unit of work's fixed statements, prepared once per connection.
    fn execute(&mut self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<u64> {
        let statement = self.conn.prepared(sql)?;
        Ok(self.conn.execute(&statement, params)?)
    }

    /// The rows of one of the unit of work's fixed statements, prepared once per connection.
    fn query(&mut self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<Vec<Row>> {
        let statement = self.conn.prepared(sql)?;
        Ok(self.conn.query(&statement, params)?)
    }

    /// The transaction's lastUpdated (taken on first use).
    fn stamp(&mut self) -> Result<String> {
        if let Some(stamp) = &self.stamp {
            return Ok(stamp.clone());
        }
        let clock: String = self.query(&format!("SELECT {NOW}"), &[])?[0].get(0);
        let stamp = std::cmp::max(clock, self.floor.clone());
        self.stamp = Some(stamp.clone());
        Ok(stamp)
    }

    /// Locks a resource's row until the transaction ends and returns its row id, version
    /// and whether that version is a delete.
    fn lock_row(&mut self, resource_type: &str, id: &str) -> Result<Option<(i64, i64, bool)>> {
        const SKIPPING: &str =
            "SELECT rid, version, deleted FROM resources WHERE type = $1 AND id = $2 FOR UPDATE SKIP LOCKED";
        match self.lock_without_waiting(SKIPPING, resource_type, id)? {
            Sharing::Locked(row) => {
                self.note_lock(resource_type, id, row.get(1));
                return Ok(Some((row.get(0), row.get(1), row.get(2))));
            }
            Sharing::Missing => return Ok(None),
            Sharing::Alone => {}
        }
        // The row alone: a join here would be re-checked, after waiting for the lock,
        // against versions of the old snapshot, and miss the one just committed.
        let rows = self.query(
            "SELECT rid, version, deleted FROM resources WHERE type = $1 AND id = $2 FOR UPDATE",
            &[&resource_type, &id],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        self.note_lock(resource_type, id, row.get(1));
        Ok(Some((row.get(0), row.get(1), row.get(2))))
    }

    /// Notes a row this unit locked and the version it saw (to lock it again should the
    /// unit move to a new group).
    fn note_lock(&mut self, resource_type: &str, id: &str, version: i64) {
        self.unit
            .locks
            .push((resource_type.to_string(), id.to_string(), version));
    }

    /// While earlier units share the transaction: locks a resource's row with `skipping` (a
    /// `… FOR UPDATE SKIP LOCKED` statement on type `$1` and id `$2`) if nobody else holds
    /// it; when another transaction does, commits the earlier units first
    /// ([`PgTx::settle_early`]), and the caller then waits for the row alone.
    fn lock_without_waiting(&mut self, skipping: &str, resource_type: &str, id: &str) -> Result<Sharing> {
        if self.shared.is_none() {
            return Ok(Sharing::Alone);
        }
        if let Some(row) = self.query(skipping, &[&resource_type, &id])?.into_iter().next() {
            return Ok(Sharing::Locked(row));
        }
        let exists = !self
            .query(
                "SELECT 1 FROM resources WHERE type = $1 AND id = $2",
                &[&resource_type, &id],
            )?
            .is_empty();
        if !exists {
            return Ok(Sharing::Missing);
        }
        self.settle_early()?;
        Ok(Sharing::Alone)
    }

    /// The version a row read for update holds (the version's columns, the clock, the row
    /// id), kept as locked; the transaction's stamp, if it has none, from that clock.
    fn keep_locked(&mut self, key: (String, String), row: &Row) -> Current {
        let stored = stored_from_row(row);
        self.note_lock(&key.0, &key.1, stored.version as i64);
        if self.stamp.is_none() {
            self.stamp = Some(std::cmp::max(row.get(6), self.floor.clone()));
        }
        self.locked.insert(
            key,
            CurrentRow {
                rid: row.get(7),
                version: stored.version,
                deleted: stored.deleted,
                last_updated: stored.last_updated.clone(),
            },
        );
        Current::of(Some(stored))
    }

    /// Queues a new resource (version 1, stamped) for the next batch and returns it as it
    /// will be stored.
    fn queue_new(
        &mut self,
        resource_type: String,
        id: String,
        stamp: String,
        bytes: Vec<u8>,
        rows: Vec<IndexRow>,
    ) -> Stored {
        let stored = Stored {
            resource_type: resource_type.clone(),
            id: id.clone(),
            version: 1,
            last_updated: stamp,
            deleted: false,
            body: Arc::from(bytes.as_slice()),
        };
        self.pending.push(Pending {
            resource_type,
            id,
            bytes,
            rows,
            existing: None,
            stamp: stored.last_updated.clone(),
        });
        stored
    }

    /// Writes the pending versions if one of this resource is among them (a read of any
    /// other resource cannot see them, so they wait for the next batch).
    fn flush_if_pending(&mut self, resource_type: &str, id: &str) -> Result<()> {
        if self
            .pending
            .iter()
            .any(|p| p.resource_type == resource_type && p.id == id)
        {
            self.flush()?;
        }
        Ok(())
    }

    /// The current version of a resource, its row locked until the transaction ends.
    fn current_version(&mut self, resource_type: &str, id: &str) -> Result<Option<CurrentRow>> {
        self.flush_if_pending(resource_type, id)?;
        if let Some(row) = self.locked.remove(&(resource_type.to_string(), id.to_string())) {
            // Perhaps locked by an earlier unit of the group: now this unit's to keep.
            self.note_lock(resource_type, id, row.version as i64);
            return Ok(Some(row));
        }
        let Some((rid, version, deleted)) = self.lock_row(resource_type, id)? else {
            return Ok(None);
        };
        // A statement of its own: a new snapshot, which sees the version the lock waited for.
        let written = self.query(
            "SELECT last_updated FROM resource_versions WHERE rid = $1 AND version = $2",
            &[&rid, &version],
        )?;
        Ok(Some(CurrentRow {
            rid,
            version: version as u64,
            deleted,
            last_updated: written.first().map(|w| w.get(0)).unwrap_or_default(),
        }))
    }

    /// Claims a new resource row (version 0 until its first version is written); None when
    /// another transaction created it first (after waiting for that one to end).
    fn claim(&mut self, resource_type: &str, id: &str) -> Result<Option<i64>> {
        let opened = self.ensure_savepoint()?;
        let rid = self
            .query(
                "INSERT INTO resources (type, id, version, deleted) VALUES ($1, $2, 0, true)
                 ON CONFLICT (type, id) DO NOTHING RETURNING rid",
                &[&resource_type, &id],
            )?
            .first()
            .map(|r| r.get(0));
        if rid.is_none() && opened {
            // Nothing was written under the savepoint opened for the claim: without it the
            // unit can still move to a new group, should it next meet a row another
            // transaction holds (the resource's new writer, typically).
            self.conn.batch_execute("RELEASE SAVEPOINT unit")?;
            self.unit.savepoint = false;
        }
        Ok(rid)
    }

    /// Writes one version of an existing or new resource (the body None records a delete).
    /// None when the resource is new but another transaction created it meanwhile.
    fn put_version(
        &mut self,
        resource_type: &str,
        id: &str,
        body: Option<Value>,
        existing: Option<&CurrentRow>,
    ) -> Result<Option<Stored>> {
        // A new resource claims its row first: when another transaction creates the same id
        // at the same moment, the claim waits for it, and the stamp below comes after.
        let claimed;
        let existing = match existing {
            Some(current) => current,
            None => match self.claim(resource_type, id)? {
                Some(rid) => {
                    claimed = CurrentRow {
                        rid,
                        version: 0,
                        deleted: true,
                        last_updated: String::new(),
                    };
                    &claimed
                }
                None => return Ok(None),
            },
        };
        let version = existing.version + 1;
        let stamp = self.stamp()?;
        if existing.last_updated > stamp {
            // This transaction stamped before another one wrote the version it now follows
            // (it waited for that row): its version would look older than its predecessor.
            return Err(StoreError::Contention(format!(
                "{resource_type}/{id} was written meanwhile"
            )));
        }
        let (bytes, rows) = match body {
            Some(body) => prepare_version(resource_type, id, version, body, &stamp)?,
            None => (Vec::new(), Vec::new()),
        };
        let deleted = bytes.is_empty();
        let rid = existing.rid;
        let stored = Stored {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            version,
            last_updated: stamp.clone(),
            deleted,
            body: Arc::from(bytes.as_slice()),
        };
        // Written with the next batch, like a create: a booking's slot, appointment and
        // notices go in one statement.
        self.pending.push(Pending {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            bytes,
            rows,
            existing: Some((rid, version as i64)),
            stamp,
        });
        Ok(Some(stored))
    }

    /// Takes transaction-scoped advisory locks, in the order given: one per parameter
    /// list in `each`, its key the SQL expression `key` of those parameters. Sharing the
    /// transaction, the unit takes them only if nobody holds them; else it commits the
    /// earlier units and waits for them alone.
    fn advisory_locks(&mut self, key: &str, each: &[&[&(dyn ToSql + Sync)]]) -> Result<()> {
        if self.shared.is_some() {
            let try_sql = format!("SELECT pg_try_advisory_xact_lock({key})");
            let mut all = true;
            for params in each {
                if !self.query(&try_sql, params)?[0].get::<_, bool>(0) {
                    all = false;
                    break;
                }
            }
            if all {
                self.unit.advisory = true;
                return Ok(());
            }
            // The ones taken go with the early commit, and are taken again below.
            self.settle_early()?;
        }
        let wait_sql = format!("SELECT pg_advisory_xact_lock({key})");
        for params in each {
            self.execute(&wait_sql, params)?;
        }
        self.unit.advisory = true;
        Ok(())
    }

    /// Before this unit writes anything directly while earlier units share the
    /// transaction: writes their pending versions, then opens a savepoint, so that a
    /// failure of this unit undoes its own writes and nothing of theirs. Whether it opened
    /// one now.
    fn ensure_savepoint(&mut self) -> Result<bool> {
        if self.shared.is_none() || self.unit.savepoint {
            return Ok(false);
        }
        let own = self.pending.split_off(self.unit.pending_from);
        let earlier = self.flush_all();
        self.pending = own;
        self.unit.pending_from = 0;
        earlier?;
        self.conn.batch_execute("SAVEPOINT unit")?;
        self.unit.savepoint = true;
        Ok(true)
    }

    /// Writes the pending versions and the audit events, and commits.
    fn commit_all(&mut self) -> Result<()> {
        self.flush_all()?;
        self.seal_audit()?;
        self.conn.batch_execute("COMMIT")?;
        Ok(())
    }

    /// Makes this unit, which must wait for a lock another transaction holds, the first of
    /// a new group: the earlier units of its group are committed (and told so) first, so
    /// that no group waits for another while holding locks the other waits for. What the
    /// unit read under lock is locked again and must not have changed meanwhile; a unit
    /// that already wrote directly or took advisory locks cannot be carried over and fails
    /// as contention (send again).
    fn settle_early(&mut self) -> Result<()> {
        if self.shared.is_some() && (self.unit.savepoint || self.unit.advisory) {
            // Refused as a unit of the group, which the earlier units outlive.
            return Err(StoreError::Contention(
                "another transaction holds what this one needs; send again".into(),
            ));
        }
        let Some(shared) = self.shared.take() else {
            return Ok(());
        };
        let own_pending = self.pending.split_off(self.unit.pending_from);
        let own_audit = self.audit.split_off(self.unit.audit_from);
        shared.outcomes.settle(shared.open, || self.commit_all())?;
        raise_stamp(shared.last_stamp, &self.floor);
        shared
            .open
            .join(|| Ok(self.conn.batch_execute(&format!("BEGIN; {}", shared.begin))?))?;
        self.pending = own_pending;
        self.audit = own_audit;
        self.unit.pending_from = 0;
        self.unit.audit_from = 0;
        if self.pending.is_empty() {
            // Stamped again after the wait, as a unit that waited alone would be.
            self.stamp = None;
        }
        let mine: std::collections::HashSet<(String, String)> =
            self.unit.locks.iter().map(|(t, i, _)| (t.clone(), i.clone())).collect();
        self.locked.retain(|key, _| mine.contains(key));
        for (resource_type, id, version) in std::mem::take(&mut self.unit.locks) {
            match self.lock_row(&resource_type, &id)? {
                Some((_, now, _)) if now == version => {}
                _ => {
                    return Err(StoreError::Contention(format!(
                        "{resource_type}/{id} was written meanwhile; send again"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Appends the unit of work's audit events to its chain, last before commit: the
    /// chain's lock is held until commit (so the next writer on this chain reads the head
    /// this one leaves), and for as short a time as possible.
    fn seal_audit(&mut self) -> Result<()> {
        if self.audit.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.audit);
        let entries = entries.as_slice();
        let chain = self.chain;
        let head = self
            .query(
                "SELECT head_position, head_hash FROM audit_chain_head($1, $2)",
                &[&chain, &(AUDIT_CHAIN_LOCK + chain)],
            )?
            .first()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1)));
        let links = audit::seal_after(head, self.chain, entries);
        let column = |f: fn(&AuditEntry) -> Option<String>| entries.iter().map(f).collect::<Vec<_>>();
        self.execute(
            "INSERT INTO audit_log (chain, position, recorded, patient, agent, flag, body, previous, hash)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::bytea[], $8::bytea[], $9::bytea[])",
            &[
                &chain,
                &links.iter().map(|l| l.0).collect::<Vec<i64>>(),
                &column(|e| Some(e.recorded.clone())),
                &column(|e| e.patient.clone()),
                &column(|e| Some(e.agent.clone())),
                &column(|e| e.flag.clone()),
                &entries.iter().map(|e| e.body.as_slice()).collect::<Vec<&[u8]>>(),
                &links.iter().map(|l| l.1.as_slice()).collect::<Vec<&[u8]>>(),
                &links.iter().map(|l| l.2.as_slice()).collect::<Vec<&[u8]>>(),
            ],
        )?;
        Ok(())
    }

    /// Writes the pending versions (under a savepoint when some are this unit's and
    /// earlier units share the transaction).
    fn flush(&mut self) -> Result<()> {
        if self.pending.len() > self.unit.pending_from {
            self.ensure_savepoint()?;
        }
        self.flush_all()
    }

    /// Writes the pending versions in one batch, after pointing the rows of changed
    /// resources at their new versions and claiming the rows of new ones.
    fn flush_all(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.unit.pending_from = 0;
        let written = self.write_batch(pending);
        // The versions are gone from `pending` whatever happened: if they were not all
        // written, the transaction cannot commit any of its units.
        self.unit.poisoned |= written.is_err();
        written
    }

    /// Writes `pending` (see [`PgTx::flush_all`]).
    fn write_batch(&mut self, pending: Vec<Pending>) -> Result<()> {
        let patients: Vec<Option<String>> = pending
            .iter()
            .map(|p| patient_key(&p.resource_type, &p.id, &p.rows))
            .collect();
        let mut claimed = self.point_and_claim(&pending, &patients)?.into_iter();
        let mut batch = WriteBatch::default();
        for (p, patient) in pending.iter().zip(&patients) {
            let (rid, version) = match p.existing {
                Some(existing) => existing,
                None => (
                    claimed
                        .next()
                        .ok_or_else(|| StoreError::Database("a new resource's row was not claimed".into()))?,
                    1,
                ),
            };
            batch.add_version(Version {
                rid,
                resource_type: &p.resource_type,
                id: &p.id,
                version,
                last_updated: &p.stamp,
                body: &p.bytes,
                patient_key: patient.as_deref(),
            });
            batch.add(self.keys, &p.resource_type, rid, patient.as_deref(), &p.rows);
        }
        let (client, statements) = self.conn.parts();
        batch.insert(client, statements)
    }

    /// Points the rows of the changed resources among `pending` (of compartments
    /// `patients`) at their new versions, removes their old versions' index rows, and
    /// claims the rows of the new ones, refusing an id taken meanwhile: in one statement.
    /// The new rows' ids, in order.
    fn point_and_claim(&mut self, pending: &[Pending], patients: &[Option<String>]) -> Result<Vec<i64>> {
        let (mut rids, mut versions, mut deleted, mut keys, mut reindexed) = (vec![], vec![], vec![], vec![], vec![]);
        let mut new: Vec<(&Pending, &Option<String>)> = Vec::new();
        for (p, patient) in pending.iter().zip(patients) {
            match p.existing {
                Some((rid, version)) => {
                    rids.push(rid);
                    versions.push(version);
                    deleted.push(p.bytes.is_empty());
                    keys.push(patient.as_deref());
                    if version > 1 {
                        reindexed.push(rid);
                    }
                }
                None => new.push((p, patient)),
            }
        }
        if rids.is_empty() && new.is_empty() {
            return Ok(Vec::new());
        }
        let mut seen = std::collections::HashSet::new();
        if let Some((twice, _)) = new.iter().find(|(p, _)| !seen.insert((&p.resource_type, &p.id))) {
            return Err(already_exists(twice));
        }
        let types: Vec<&str> = new.iter().map(|(p, _)| p.resource_type.as_str()).collect();
        let ids: Vec<&str> = new.iter().map(|(p, _)| p.id.as_str()).collect();
        let new_keys: Vec<&Option<String>> = new.iter().map(|(_, k)| *k).collect();
        let claimed = self.query(
            &POINT_AND_CLAIM,
            &[&rids, &versions, &deleted, &keys, &reindexed, &types, &ids, &new_keys],
        )?;
        let rids: HashMap<(String, String), i64> = claimed.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect();
        new.iter()
            .map(|(p, _)| {
                rids.get(&(p.resource_type.clone(), p.id.clone()))
                    .copied()
                    .ok_or_else(|| already_exists(p))
            })
            .collect()
    }
}

/// The refusal of a new resource whose id is taken.
fn already_exists(p: &Pending) -> StoreError {
    StoreError::Invalid(format!("{}/{} already exists", p.resource_type, p.id))
}

impl StoreTx for PgTx<'_> {
    fn create(&mut self, resource_type: &str, body: Value, id: Option<&str>) -> Result<Stored> {
        let id = match id {
            Some(id) => {
                check_id(id)?;
                id.to_string()
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        // Written with the next batch (at commit, or before a read of it or a search): a
        // booking's appointment and notices go in one batch. An id taken meanwhile is
        // refused then ("already exists"), as it would be now.
        let stamp = self.stamp()?;
        let (bytes, rows) = prepare_version(resource_type, &id, 1, body, &stamp)?;
        Ok(self.queue_new(resource_type.to_string(), id, stamp, bytes, rows))
    }

    fn update(&mut self, resource_type: &str, id: &str, body: Value, if_match: Option<u64>) -> Result<(Stored, bool)> {
        check_id(id)?;
        let mut current = self.current_version(resource_type, id)?;
        check_version(current.as_ref().map(|c| c.version), if_match)?;
        if current.is_none() {
            if let Some(stored) = self.put_version(resource_type, id, Some(body.clone()), None)? {
                return Ok((stored, true));
            }
            // Created meanwhile by another transaction: this becomes its next version.
            current = self.current_version(resource_type, id)?;
            check_version(current.as_ref().map(|c| c.version), if_match)?;
        }
        let existed = current.as_ref().is_some_and(|c| !c.deleted);
        let stored = self
            .put_version(resource_type, id, Some(body), current.as_ref())?
            .ok_or_else(|| StoreError::Database(format!("{resource_type}/{id} vanished during its update")))?;
        Ok((stored, !existed))
    }

    fn delete(&mut self, resource_type: &str, id: &str, if_match: Option<u64>) -> Result<Option<Stored>> {
        let current = self.current_version(resource_type, id)?;
        check_version(current.as_ref().map(|c| c.version), if_match)?;
        match current {
            Some(c) if !c.deleted => self.put_version(resource_type, id, None, Some(&c)),
            _ => Ok(None),
        }
    }

    fn read(&mut self, resource_type: &str, id: &str) -> Result<Current> {
        self.flush_if_pending(resource_type, id)?;
        read_current(self.conn, resource_type, id)
    }

    fn read_for_update(&mut self, resource_type: &str, id: &str) -> Result<Current> {
        self.flush_if_pending(resource_type, id)?;
        let key = (resource_type.to_string(), id.to_string());
        // Mostly one statement: the row locked and its current version read at once, the
        // clock read after the lock. When the row changed while this waited for its lock,
        // PostgreSQL re-checks the join against the version of the statement's snapshot,
        // which no longer matches, and returns nothing: then the lock is taken again (held
        // already) and the version read in a statement of its own, whose new snapshot sees
        // the version the lock waited for.
        if !self.locked.contains_key(&key) {
            match self.lock_without_waiting(&LOCK_AND_READ_SKIPPING, resource_type, id)? {
                Sharing::Locked(row) => return Ok(self.keep_locked(key, &row)),
                Sharing::Missing => return Ok(Current::NotFound),
                Sharing::Alone => {}
            }
        }
        let locked = match self.locked.get(&key) {
            Some(row) => Some((row.rid, row.version as i64)),
            None => match self.query(&LOCK_AND_READ, &[&resource_type, &id])?.into_iter().next() {
                Some(row) => return Ok(self.keep_locked(key, &row)),
                None => self
                    .lock_row(resource_type, id)?
                    .map(|(rid, version, _)| (rid, version)),
            },
        };
        let Some((rid, version)) = locked else {
            return Ok(Current::NotFound);
        };
        match self.query(&READ_LOCKED, &[&rid, &version])?.into_iter().next() {
            Some(row) => Ok(self.keep_locked(key, &row)),
            None => Ok(Current::NotFound),
        }
    }

    fn versions_of(&mut self, resource_type: &str, ids: &[String]) -> Result<HashMap<String, (u64, bool)>> {
        if self.pending.iter().any(|p| p.resource_type == resource_type) {
            self.flush()?;
        }
        let mut found = HashMap::new();
        for chunk in ids.chunks(10_000) {
            // One lookup in the (type, id) key per id, whatever the statistics: `OFFSET 0`
            // keeps the planner from turning the loop into a join, which it planned as a scan
            // of the whole table once the table grew without being analysed.
            let rows = self.query(
                "SELECT u.id, r.version, r.deleted FROM unnest($2::text[]) AS u(id)
                 CROSS JOIN LATERAL (SELECT version, deleted FROM resources
                                     WHERE type = $1 AND id = u.id AND version > 0 OFFSET 0) AS r",
                &[&resource_type, &chunk],
            )?;
            for row in rows {
                found.insert(row.get(0), (row.get::<_, i64>(1) as u64, row.get(2)));
            }
        }
        Ok(found)
    }

    fn search_ids(&mut self, resource_type: &str, query: &SearchQuery, limit: usize) -> Result<Vec<String>> {
        self.flush()?;
        search_ids(self.keys, self.conn, resource_type, query, &[], limit)
    }

    fn append_audit(&mut self, entries: Vec<AuditEntry>) -> Result<()> {
        // Sealed at the end of the unit of work, in one statement (see `seal_audit`).
        self.audit.extend(entries);
        Ok(())
    }

    fn state_get(&mut self, kind: &str, key: &str) -> Result<Option<String>> {
        // Writers of one key take turns, also while it does not exist yet.
        self.advisory_locks("hashtextextended('state/' || $1 || '/' || $2, 0)", &[&[&kind, &key]])?;
        Ok(self
            .query(
                "SELECT value FROM store_state WHERE kind = $1 AND key = $2",
                &[&kind, &key],
            )?
            .first()
            .map(|r| r.get(0)))
    }

    fn state_put(&mut self, kind: &str, key: &str, value: &str) -> Result<()> {
        self.ensure_savepoint()?;
        self.execute(
            "INSERT INTO store_state (kind, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
            &[&kind, &key, &value],
        )?;
        Ok(())
    }

    fn state_delete(&mut self, kind: &str, key: &str) -> Result<()> {
        self.ensure_savepoint()?;
        self.execute("DELETE FROM store_state WHERE kind = $1 AND key = $2", &[&kind, &key])?;
        Ok(())
    }

    fn lock_conditions(&mut self, conditions: &[(&str, &SearchQuery)]) -> Result<()> {
        // One transaction-scoped advisory lock per condition, taken in key order so that two
        // units of work with several conditions cannot wait for each other in a circle.
        // The same criteria in any order are the same condition.
        let names: Vec<String> = conditions
            .iter()
            .map(|(t, q)| {
                let mut criteria: Vec<String> = q.criteria.iter().map(|c| format!("{c:?}")).collect();
                criteria.sort();
                format!("{t}?{}", criteria.join("&"))
            })
            .collect();
        let mut keys: Vec<i64> = self
            .query(
                "SELECT DISTINCT hashtextextended(n, 0) FROM unnest($1::text[]) AS n",
                &[&names],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        keys.sort_unstable();
        let params: Vec<&(dyn ToSql + Sync)> = keys.iter().map(|k| k as &(dyn ToSql + Sync)).collect();
        let each: Vec<&[&(dyn ToSql + Sync)]> = params.iter().map(std::slice::from_ref).collect();
        self.advisory_locks("$1::bigint", &each)
    }

    fn insert_prepared(&mut self, p: PreparedResource) -> Result<Stored> {
        check_id(&p.id)?;
        let (resource_type, id) = (p.resource_type.clone(), p.id.clone());
        let stamp = self.stamp()?;
        let (bytes, rows) = p.stamped(&stamp)?;
        Ok(self.queue_new(resource_type, id, stamp, bytes, rows))
    }
}

impl group::TxParts {
    /// The writer's view of the next unit of work in this transaction (on `conn`), the
    /// group's state moved into it; `shared` while earlier units share the transaction.
    fn unit<'a>(
        &mut self,
        conn: &'a mut Connection,
        keys: &'a ParamKeys,
        shared: Option<group::Shared<'a>>,
    ) -> PgTx<'a> {
        PgTx {
            conn,
            keys,
            stamp: None,
            floor: self.floor.clone(),
            unit: group::UnitMarks {
                pending_from: self.pending.len(),
                audit_from: self.audit.len(),
                ..Default::default()
            },
            pending: std::mem::take(&mut self.pending),
            chain: self.chain,
            audit: std::mem::take(&mut self.audit),
            locked: std::mem::take(&mut self.locked),
            shared,
        }
    }

    /// Takes the group's state back from a unit that ended; returns what the unit did and
    /// whether it still shared the transaction with earlier units.
    fn take_back(&mut self, mut ptx: PgTx<'_>) -> (group::UnitMarks, bool) {
        self.pending = std::mem::take(&mut ptx.pending);
        self.audit = std::mem::take(&mut ptx.audit);
        self.locked = std::mem::take(&mut ptx.locked);
        self.floor = std::cmp::max(std::mem::take(&mut ptx.floor), ptx.stamp.take().unwrap_or_default());
        (std::mem::take(&mut ptx.unit), ptx.shared.is_some())
    }
}

impl PgStore {
    /// The settings a group transaction begins with: writes wait for another writer's row
    /// or condition lock at most LOCK_TIMEOUT_MS, and have no statement limit (they are
    /// bounded by the request's size); during a bulk load they do not wait for the disk.
    fn tx_settings(&self) -> String {
        let bulk = if self.bulk_load.load(std::sync::atomic::Ordering::Relaxed) {
            "; SET LOCAL synchronous_commit = off"
        } else {
            ""
        };
        format!("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}{bulk}")
    }

    /// Writes a lane's group and commits it, and tells its waiting units the outcome.
    fn commit_group(&self, st: &mut group::LaneState, outcomes: &Outcomes) -> Result<()> {
        let Some(mut tx) = st.tx.take() else {
            return outcomes.settle(&mut st.open, || Err(group::abandoned("the lane lost its transaction")));
        };
        let group::GroupTx { conn, parts, open, .. } = &mut tx;
        let mut ptx = parts.unit(conn, &self.param_keys, None);
        let committed = outcomes.settle(&mut st.open, || ptx.commit_all());
        if committed.is_ok() {
            // Committed; else dropping it rolls back whatever is left open.
            *open = false;
            raise_stamp(&self.last_stamp, &parts.floor);
        }
        committed
    }

    /// Rolls a lane's group back and tells its waiting units why.
    fn abandon(&self, st: &mut group::LaneState, outcomes: &Outcomes, why: &str) {
        st.tx = None;
        let _ = outcomes.settle(&mut st.open, || Err(group::abandoned(why)));
    }
}

impl IndexRebuild for PgStore {
    fn live_resources(&self) -> Result<u64> {
        let n: i64 = self
            .client()?
            .query_one("SELECT count(*) FROM resources WHERE NOT deleted", &[])?
            .get(0);
        Ok(n as u64)
    }

    fn recorded_fingerprint(&self) -> Result<Option<String>> {
        Ok(self
            .client()?
            .query_opt("SELECT value FROM store_meta WHERE key = 'index_fingerprint'", &[])?
            .map(|r| r.get(0)))
    }

    fn record_fingerprint(&self) -> Result<()> {
        self.client()?.execute(
            "INSERT INTO store_meta (key, value) VALUES ('index_fingerprint', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&crate::index::fingerprint()],
        )?;
        Ok(())
    }

    fn rebuild_batch(&self, after: i64) -> Result<Option<(i64, u64)>> {
        let mut client = self.client()?;
        let (pg, statements) = client.parts();
        let mut tx = pg.transaction()?;
        tx.batch_execute("SET LOCAL statement_timeout = 0")?;
        let max: Option<i64> = tx.query_one("SELECT max(rid) FROM resources", &[])?.get(0);
        let Some(max) = max.filter(|m| *m > after) else {
            return Ok(None);
        };
        let upto = (after + REINDEX_BATCH).min(max);
        // Lock the batch's resources as writers do: a writer of one of them either commits
        // before (and its new rows are rebuilt here) or waits (and then replaces the rows
        // built here). Two reindexes take turns on a batch. Only the rows locked are
        // rebuilt: a resource created meanwhile (not visible to the lock) has the rows its
        // writer wrote, and rebuilding them too would write them twice.
        let locked: Vec<i64> = tx
            .query(
                "SELECT rid FROM resources WHERE rid > $1 AND rid <= $2 FOR UPDATE",
                &[&after, &upto],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for table in INDEX_TABLES {
            tx.execute(&format!("DELETE FROM {table} WHERE rid = ANY($1)"), &[&locked])?;
        }
        let rows = tx.query(
            "SELECT r.rid, r.type, r.id, v.body FROM resources r
             JOIN resource_versions v ON v.rid = r.rid AND v.version = r.version
             WHERE NOT r.deleted AND r.rid = ANY($1)",
            &[&locked],
        )?;
        let mut batch = WriteBatch::default();
        for row in &rows {
            let (rid, ty, id, body): (i64, String, String, Vec<u8>) = (row.get(0), row.get(1), row.get(2), row.get(3));
            let value: Value = serde_json::from_slice(&body).map_err(|e| StoreError::Database(e.to_string()))?;
            let index = crate::index::extract(&ty, &value);
            let patient = patient_key(&ty, &id, &index);
            batch.add(&self.param_keys, &ty, rid, patient.as_deref(), &index);
        }
        batch.insert(&mut tx, statements)?;
        tx.commit()?;
        Ok(Some((upto, rows.len() as u64)))
    }
}

/// Runs an audit row statement (placeholders `?`).
fn audit_query(runner: &mut impl Runner, sql: &str, args: &[Arg]) -> Result<Vec<SealedAudit>> {
    Ok(runner
        .rows(&numbered(sql), args)?
        .iter()
        .map(|r| SealedAudit {
            seq: r.get(0),
            chain: r.get(1),
            position: r.get(2),
            entry: AuditEntry {
                recorded: r.get(3),
                patient: r.get(4),
                agent: r.get(5),
                flag: r.get(6),
                body: r.get(7),
            },
            previous: r.get(8),
            hash: r.get(9),
        })
        .collect())
}

impl Store for PgStore {
    fn write(&self, work: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()> {
        let (lane, mut state) = self.lanes.enter();
        if state.open.group.is_none() {
            state.tx = None;
            let mut tx = group::GroupTx {
                begin: self.tx_settings(),
                conn: self.client()?,
                parts: group::TxParts {
                    floor: self.last_stamp.lock().clone(),
                    pending: Vec::new(),
                    chain: self.next_chain.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % audit::PG_CHAINS,
                    audit: Vec::new(),
                    locked: HashMap::new(),
                },
                // Rolled back when dropped, also should BEGIN succeed and a setting fail.
                open: true,
            };
            state
                .open
                .join(|| Ok(tx.conn.batch_execute(&format!("BEGIN; {}", tx.begin))?))?;
            state.tx = Some(tx);
        } else {
            state.open.join(|| Ok(()))?;
        }
        let st = &mut *state;
        let Some(tx) = st.tx.as_mut() else {
            return Err(group::abandoned("the lane lost its transaction"));
        };
        let group::GroupTx { conn, parts, begin, .. } = tx;
        let shared = (st.open.units > 1).then_some(group::Shared {
            outcomes: &lane.outcomes,
            open: &mut st.open,
            begin,
            last_stamp: &self.last_stamp,
        });
        let mut ptx = parts.unit(conn, &self.param_keys, shared);
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut ptx)));
        let (unit, was_shared) = parts.take_back(ptx);
        match ran {
            Err(panic) => {
                self.abandon(st, &lane.outcomes, "a unit of work panicked");
                std::panic::resume_unwind(panic)
            }
            Ok(ran) if unit.poisoned => {
                const WHY: &str = "versions of its units could not be written";
                self.abandon(st, &lane.outcomes, WHY);
                Err(ran.err().unwrap_or_else(|| group::abandoned(WHY)))
            }
            Ok(Ok(())) => {
                if unit.savepoint {
                    if let Err(e) = tx.conn.batch_execute("RELEASE SAVEPOINT unit") {
                        self.abandon(st, &lane.outcomes, "its savepoint could not be released");
                        return Err(e.into());
                    }
                }
                if lane.ends_group(st) {
                    return self.commit_group(st, &lane.outcomes);
                }
                st.open.waiting += 1;
                let group = st.open.group;
                drop(state);
                match group {
                    Some(group) => lane.outcomes.wait(group),
                    None => Err(group::abandoned("the group ended before its commit")),
                }
            }
            Ok(Err(e)) if !was_shared => {
                // The first unit of its group: nothing else is in the transaction.
                self.abandon(st, &lane.outcomes, "its first unit failed");
                Err(e)
            }
            Ok(Err(e)) => {
                // Undo this unit alone; the earlier ones stay, and commit with the group.
                let undone = if unit.savepoint {
                    tx.parts.locked.clear();
                    tx.conn
                        .batch_execute("ROLLBACK TO SAVEPOINT unit; RELEASE SAVEPOINT unit")
                } else {
                    // Nothing written directly; a statement that failed in the database
                    // would have aborted the transaction, which this finds out.
                    tx.conn.batch_execute("SELECT 1")
                };
                tx.parts.pending.truncate(unit.pending_from);
                tx.parts.audit.truncate(unit.audit_from);
                st.open.units -= 1;
                if undone.is_err() {
                    self.abandon(st, &lane.outcomes, "a unit of work failed in the database");
                } else if lane.ends_group(st) {
                    // The earlier units' outcome is theirs to learn.
                    let _ = self.commit_group(st, &lane.outcomes);
                }
                Err(e)
            }
        }
    }

    fn read(&self, resource_type: &str, id: &str) -> Result<Current> {
        read_current(&mut *self.client()?, resource_type, id)
    }

    fn read_each(&self, wanted: &[(&str, &str)]) -> Result<Vec<Current>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<Arg> = wanted
            .iter()
            .flat_map(|(t, id)| [Arg::Text(t.to_string()), Arg::Text(id.to_string())])
            .collect();
        let rows = self.client()?.rows(&read_each_statement(wanted.len()), &args)?;
        let mut found: Vec<Current> = wanted.iter().map(|_| Current::NotFound).collect();
        for row in &rows {
            let place = row.get::<_, i64>(6) as usize;
            if let Some(slot) = place.checked_sub(1).and_then(|at| found.get_mut(at)) {
                *slot = Current::of(Some(stored_from_row(row)));
            }
        }
        Ok(found)
    }

    fn vread(&self, resource_type: &str, id: &str, version: u64) -> Result<Option<Stored>> {
        let row = self.client()?.query_opt(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v ON v.rid = r.rid
                 WHERE r.type = $1 AND r.id = $2 AND v.version = $3"
            ),
            &[&resource_type, &id, &(version as i64)],
        )?;
        Ok(row.map(|r| stored_from_row(&r)))
    }

    fn history(&self, q: &HistoryQuery) -> Result<HistoryPage> {
        let mut client = self.client()?;
        let snapshot_seq: i64 = match q.at_or_before_seq {
            Some(s) => s,
            None => client.query_one(NEWEST_SEQ, &[])?.get(0),
        };
        let ((count_sql, count_args), (page_sql, page_args)) = history_statements(q, snapshot_seq);
        let total: i64 = client
            .rows(&numbered(&count_sql), &count_args)?
            .first()
            .map(|r| r.get(0))
            .unwrap_or(0);
        let rows = client.rows(&numbered(&page_sql), &page_args)?;
        let entries: Vec<(Stored, i64)> = rows.iter().map(|r| (stored_from_row(r), r.get(6))).collect();
        Ok(HistoryPage::from_rows(entries, q.count, snapshot_seq, total as u64))
    }

    fn free_slots(&self, query: &crate::agenda::AgendaQuery) -> Result<Vec<crate::agenda::FreeSlot>> {
        let (sql, args) = crate::agenda::page_statement(query);
        let rows = self.client()?.rows(&numbered(&sql), &args)?;
        Ok(rows
            .iter()
            .map(|r| crate::agenda::FreeSlot {
                id: r.get(0),
                schedule: r.get(1),
                start: r.get(2),
                rid: r.get(3),
            })
            .collect())
    }

    fn search_sorted_ids(
        &self,
        resource_type: &str,
        query: &SearchQuery,
        sort: &[SortKey],
        limit: usize,
    ) -> Result<Vec<String>> {
        search_ids(
            &self.param_keys,
            &mut *self.client()?,
            resource_type,
            query,
            sort,
            limit,
        )
    }

    fn count(&self, resource_type: &str, query: &SearchQuery) -> Result<u64> {
        let mut client = self.client()?;
        let (clause, args) = search_sql(&self.param_keys, &mut *client, resource_type, query, None)?;
        let total: i64 = client
            .rows(&numbered(&count_statement(&clause)), &args)?
            .first()
            .map(|r| r.get(0))
            .unwrap_or(0);
        Ok(total as u64)
    }

    fn search_page(
        &self,
        resource_type: &str,
        query: &SearchQuery,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>> {
        let mut client = self.client()?;
        let (clause, args) = search_sql(&self.param_keys, &mut *client, resource_type, query, after_id)?;
        let sql = numbered(&page_statement(&clause, limit));
        Ok(client.rows(&sql, &args)?.iter().map(stored_from_row).collect())
    }

    fn export(&self, resource_type: Option<&str>, sink: &mut dyn FnMut(&Stored) -> Result<()>) -> Result<()> {
        let mut client = self.client()?;
        let mut tx = client.transaction()?;
        tx.batch_execute("SET LOCAL statement_timeout = 0")?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM {CURRENT_VERSIONS}
             WHERE NOT r.deleted AND ($1::text IS NULL OR r.type = $1) ORDER BY r.type, r.id"
        );
        let mut rows = tx.query_raw(&sql, [&resource_type as &(dyn ToSql + Sync)])?;
        while let Some(row) = rows.next()? {
            sink(&stored_from_row(&row))?;
        }
        Ok(())
    }

    fn compartment_types(&self, owner_type: &str, owner_id: &str, member_types: &[&str]) -> Result<Vec<String>> {
        let mut found: Vec<String> = Vec::new();
        if let Some((sql, args)) = builder(&self.param_keys).compartment_types_sql(owner_type, owner_id, member_types) {
            let rows = self.client()?.rows(&numbered(&sql), &args)?;
            found = rows.iter().map(|r| r.get(0)).collect();
        }
        Ok(crate::with_owner_type(found, owner_type, member_types))
    }

    fn counts(&self) -> Result<Vec<(String, u64)>> {
        let rows = self.client()?.query(
            "SELECT type, count(*) FROM resources WHERE NOT deleted GROUP BY type ORDER BY type",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    fn audit_rows(&self, after: Option<(i64, i64)>, limit: usize) -> Result<Vec<SealedAudit>> {
        let (sql, args) = audit::rows_statement(after, limit);
        audit_query(&mut *self.client()?, &sql, &args)
    }

    fn audit_search(&self, query: &AuditQuery) -> Result<Vec<SealedAudit>> {
        let (sql, args) = audit::search_statement(query);
        audit_query(&mut *self.client()?, &sql, &args)
    }

    fn audit_get(&self, seq: i64) -> Result<Option<SealedAudit>> {
        Ok(audit_query(&mut *self.client()?, &audit::row_statement(), &[Arg::Int(seq)])?.pop())
    }

    fn bulk_load(&self, on: bool) -> Result<()> {
        self.bulk_load.store(on, std::sync::atomic::Ordering::Relaxed);
        if !on {
            // A commit that waits for the disk waits for every commit before it (the WAL is
            // written in order): after this one, the whole load is on disk.
            self.client()?.execute(
                "INSERT INTO store_meta (key, value) VALUES ('last_bulk_load', now()::text)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[],
            )?;
        }
        Ok(())
    }

    fn refresh_statistics(&self) -> Result<()> {
        // ANALYZE, as PostgreSQL's manual advises after a bulk load: the planner's
        // statistics. Marking the new pages all-visible (for index-only scans) is
        // autovacuum's work, in the background, soon after. One table per connection, as
        // many at once as there are cores (as `vacuumdb --analyze-only --jobs` does).
        let tables: Vec<String> = self
            .client()?
            .query(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind = 'r' AND n.nspname = current_schema() ORDER BY pg_relation_size(c.oid) DESC",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let jobs = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(POOL_SIZE as usize / 2);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..jobs)
                .map(|_| scope.spawn(|| self.analyse(&tables, &next)))
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(StoreError::Database("ANALYZE failed".into())))
                })
                .collect::<Result<Vec<()>>>()
        })?;
        Ok(())
    }

    fn ping(&self) -> Result<()> {
        self.client()?.query_one("SELECT 1", &[])?;
        Ok(())
    }

    fn reindex(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
        reindex(self, progress)
    }
}
