//! The embedded store: one SQLite database file in the data directory.
//!
//! Layout: `resource_versions` holds every version ever written (the body bytes as
//! served), keyed by a global change sequence `seq`; `resources` points at the current
//! version of each resource; `search_index` holds the extracted search values of current
//! versions. One writer connection (WAL mode, so readers never wait for it) and a small
//! pool of reader connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde_json::Value;
use sijill_fhir::primitives::is_valid_id;

use crate::index::extract;
use crate::query::{Match, SearchQuery};
use crate::{
    now_instant, Current, HistoryPage, HistoryQuery, HistoryScope, Result, Store, StoreError, StoreTx, Stored,
};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE resource_versions (
    seq          INTEGER PRIMARY KEY,
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated TEXT    NOT NULL,
    deleted      INTEGER NOT NULL,
    body         BLOB    NOT NULL,
    UNIQUE (type, id, version)
);
CREATE INDEX resource_versions_type ON resource_versions (type, seq);
CREATE INDEX resource_versions_time ON resource_versions (last_updated);
CREATE TABLE resources (
    type    TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    version INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (type, id)
) WITHOUT ROWID;
CREATE TABLE search_index (
    type   TEXT NOT NULL,
    id     TEXT NOT NULL,
    param  TEXT NOT NULL,
    system TEXT,
    value  TEXT NOT NULL,
    exact  TEXT
);
CREATE INDEX search_index_lookup ON search_index (type, param, value, system);
CREATE INDEX search_index_owner ON search_index (type, id);
"#];

/// The file name of the database inside the data directory.
pub const DATABASE_FILE: &str = "sijill.db";

/// The embedded SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 10000;
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
        migrate(&mut writer)?;
        Ok(SqliteStore { path, writer: Mutex::new(writer), readers: Mutex::new(Vec::new()) })
    }

    /// Runs `f` with a reader connection from the pool.
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.readers.lock().pop();
        let conn = match conn {
            Some(c) => c,
            None => open_connection(&self.path)?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock();
        if pool.len() < 8 {
            pool.push(conn);
        }
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

const VERSION_COLUMNS: &str = "v.type, v.id, v.version, v.last_updated, v.deleted, v.body";

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
        "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v ON v.seq = r.seq
         WHERE r.type = ?1 AND r.id = ?2"
    ))?;
    let found = stmt.query_row(params![resource_type, id], stored_from_row).optional()?;
    Ok(match found {
        Some(s) if s.deleted => Current::Deleted(s),
        Some(s) => Current::Found(s),
        None => Current::NotFound,
    })
}

/// Builds the WHERE clause of a search over `resources r` (current versions).
fn search_sql(resource_type: &str, query: &SearchQuery, after_id: Option<&str>) -> (String, Vec<SqlValue>) {
    let mut sql = String::from("r.type = ? AND r.deleted = 0");
    let mut args: Vec<SqlValue> = vec![resource_type.to_string().into()];
    if let Some(after) = after_id {
        sql.push_str(" AND r.id > ?");
        args.push(after.to_string().into());
    }
    for c in &query.criteria {
        if c.param == "_id" {
            let ids: Vec<&str> = c
                .values
                .iter()
                .filter_map(|m| match m {
                    Match::Id(id) => Some(id.as_str()),
                    _ => None,
                })
                .collect();
            sql.push_str(&format!(" AND r.id IN ({})", vec!["?"; ids.len()].join(",")));
            args.extend(ids.into_iter().map(|i| SqlValue::from(i.to_string())));
            continue;
        }
        let mut alternatives = Vec::new();
        for m in &c.values {
            let (clause, values): (&str, Vec<String>) = match m {
                Match::Token { system: None, code: Some(code) } => ("s.value = ?", vec![code.clone()]),
                Match::Token { system: Some(s), code: Some(code) } if s.is_empty() => {
                    ("s.value = ? AND s.system IS NULL", vec![code.clone()])
                }
                Match::Token { system: Some(s), code: Some(code) } => {
                    ("s.value = ? AND s.system = ?", vec![code.clone(), s.clone()])
                }
                Match::Token { system: Some(s), code: None } => ("s.system = ?", vec![s.clone()]),
                Match::Token { system: None, code: None } => ("1", vec![]),
                Match::String { value, exact: false } => {
                    ("s.value >= ? AND s.value < ?", vec![value.clone(), format!("{value}\u{10FFFF}")])
                }
                Match::String { value, exact: true } => ("s.exact = ?", vec![value.clone()]),
                Match::Reference { resource_type: Some(t), id } => {
                    ("s.value = ? AND s.system = ?", vec![id.clone(), t.clone()])
                }
                Match::Reference { resource_type: None, id } => ("s.value = ?", vec![id.clone()]),
                Match::Uri(u) | Match::Id(u) => ("s.value = ?", vec![u.clone()]),
            };
            alternatives.push(format!("({clause})"));
            args.extend(values.into_iter().map(SqlValue::from));
        }
        let exists = if c.negated { "NOT EXISTS" } else { "EXISTS" };
        sql.push_str(&format!(
            " AND {exists} (SELECT 1 FROM search_index s WHERE s.type = r.type AND s.id = r.id AND s.param = '{}' AND ({}))",
            c.param.replace('\'', ""),
            alternatives.join(" OR ")
        ));
    }
    (sql, args)
}

/// Puts `resourceType`, `id` and `meta` (with the server's versionId and lastUpdated)
/// first, followed by the rest of the resource in its original order.
fn with_server_meta(
    mut map: serde_json::Map<String, Value>,
    id: &str,
    version: u64,
    last_updated: &str,
) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::with_capacity(map.len() + 2);
    if let Some(rt) = map.remove("resourceType") {
        out.insert("resourceType".into(), rt);
    }
    out.insert("id".into(), Value::String(id.to_string()));
    map.remove("id");
    let mut meta = match map.remove("meta") {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert("lastUpdated".into(), Value::String(last_updated.to_string()));
    out.insert("meta".into(), Value::Object(meta));
    out.extend(map);
    out
}

/// The writer's view inside one transaction.
struct SqliteTx<'c> {
    conn: &'c Connection,
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
        replaces_existing: bool,
    ) -> Result<Stored> {
        let last_updated = now_instant();
        let deleted = body.is_none();
        let (bytes, rows) = match body {
            Some(mut body) => {
                let Value::Object(map) = &mut body else {
                    return Err(StoreError::Invalid("a resource must be a JSON object".into()));
                };
                let body = Value::Object(with_server_meta(std::mem::take(map), id, version, &last_updated));
                let rows = extract(resource_type, &body);
                let bytes = serde_json::to_vec(&body).map_err(|e| StoreError::Invalid(e.to_string()))?;
                (bytes, rows)
            }
            None => (Vec::new(), Vec::new()),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO resource_versions (type, id, version, last_updated, deleted, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![resource_type, id, version as i64, last_updated, deleted as i64, bytes])?;
        let seq = self.conn.last_insert_rowid();
        self.conn
            .prepare_cached(
                "INSERT INTO resources (type, id, version, seq, deleted) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (type, id) DO UPDATE SET version = excluded.version, seq = excluded.seq,
                 deleted = excluded.deleted",
            )?
            .execute(params![resource_type, id, version as i64, seq, deleted as i64])?;
        if replaces_existing {
            self.conn
                .prepare_cached("DELETE FROM search_index WHERE type = ?1 AND id = ?2")?
                .execute(params![resource_type, id])?;
        }
        if !rows.is_empty() {
            let mut insert = self.conn.prepare_cached(
                "INSERT INTO search_index (type, id, param, system, value, exact) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for row in &rows {
                insert.execute(params![resource_type, id, row.param, row.system, row.value, row.exact])?;
            }
        }
        Ok(Stored {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            version,
            last_updated,
            deleted,
            body: Arc::from(bytes),
        })
    }

    fn current_version(&mut self, resource_type: &str, id: &str) -> Result<Option<(u64, bool)>> {
        let mut stmt = self.conn.prepare_cached("SELECT version, deleted FROM resources WHERE type = ?1 AND id = ?2")?;
        Ok(stmt
            .query_row(params![resource_type, id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? != 0)))
            .optional()?)
    }
}

fn check_id(id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("'{id}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})")))
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
        self.put_version(resource_type, &id, 1, Some(body), false)
    }

    fn update(&mut self, resource_type: &str, id: &str, body: Value, if_match: Option<u64>) -> Result<(Stored, bool)> {
        check_id(id)?;
        let current = self.current_version(resource_type, id)?;
        if let Some(expected) = if_match {
            let actual = current.map(|(v, _)| v).unwrap_or(0);
            if actual != expected {
                return Err(StoreError::VersionConflict { expected, current: actual });
            }
        }
        let (version, existed) = match current {
            Some((v, deleted)) => (v + 1, !deleted),
            None => (1, false),
        };
        let stored = self.put_version(resource_type, id, version, Some(body), current.is_some())?;
        Ok((stored, !existed))
    }

    fn delete(&mut self, resource_type: &str, id: &str, if_match: Option<u64>) -> Result<Option<Stored>> {
        let current = self.current_version(resource_type, id)?;
        if let Some(expected) = if_match {
            let actual = current.map(|(v, _)| v).unwrap_or(0);
            if actual != expected {
                return Err(StoreError::VersionConflict { expected, current: actual });
            }
        }
        match current {
            Some((v, false)) => Ok(Some(self.put_version(resource_type, id, v + 1, None, true)?)),
            _ => Ok(None),
        }
    }

    fn read(&mut self, resource_type: &str, id: &str) -> Result<Current> {
        read_current(self.conn, resource_type, id)
    }

    fn search_ids(&mut self, resource_type: &str, query: &SearchQuery, limit: usize) -> Result<Vec<String>> {
        let (clause, args) = search_sql(resource_type, query, None);
        let mut stmt = self.conn.prepare(&format!("SELECT r.id FROM resources r WHERE {clause} ORDER BY r.id LIMIT {limit}"))?;
        let ids = stmt.query_map(params_from_iter(args), |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(ids)
    }
}

impl Store for SqliteStore {
    fn write(&self, work: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()> {
        let mut conn = self.writer.lock();
        let tx = conn.transaction()?;
        {
            let mut stx = SqliteTx { conn: &tx };
            work(&mut stx)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn read(&self, resource_type: &str, id: &str) -> Result<Current> {
        self.with_reader(|c| read_current(c, resource_type, id))
    }

    fn vread(&self, resource_type: &str, id: &str, version: u64) -> Result<Option<Stored>> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM resource_versions v WHERE v.type = ?1 AND v.id = ?2 AND v.version = ?3"
            ))?;
            Ok(stmt.query_row(params![resource_type, id, version as i64], stored_from_row).optional()?)
        })
    }

    fn history(&self, q: &HistoryQuery) -> Result<HistoryPage> {
        self.with_reader(|c| {
            let mut filter = String::from("1 = 1");
            let mut args: Vec<SqlValue> = Vec::new();
            match &q.scope {
                HistoryScope::System => {}
                HistoryScope::Type(t) => {
                    filter.push_str(" AND v.type = ?");
                    args.push(t.clone().into());
                }
                HistoryScope::Instance(t, id) => {
                    filter.push_str(" AND v.type = ? AND v.id = ?");
                    args.push(t.clone().into());
                    args.push(id.clone().into());
                }
            }
            if let Some(since) = &q.since {
                filter.push_str(" AND v.last_updated >= ?");
                args.push(since.clone().into());
            }
            let snapshot_seq: i64 = match q.at_or_before_seq {
                Some(s) => s,
                None => c.query_row("SELECT coalesce(max(seq), 0) FROM resource_versions", [], |r| r.get(0))?,
            };
            filter.push_str(" AND v.seq <= ?");
            args.push(snapshot_seq.into());
            let total: i64 = c.query_row(
                &format!("SELECT count(*) FROM resource_versions v WHERE {filter}"),
                params_from_iter(args.iter()),
                |r| r.get(0),
            )?;
            if let Some(before) = q.before_seq {
                filter.push_str(" AND v.seq < ?");
                args.push(before.into());
            }
            let mut stmt = c.prepare(&format!(
                "SELECT {VERSION_COLUMNS}, v.seq FROM resource_versions v WHERE {filter} ORDER BY v.seq DESC LIMIT {}",
                q.count + 1
            ))?;
            let mut rows = stmt
                .query_map(params_from_iter(args.iter()), |r| Ok((stored_from_row(r)?, r.get::<_, i64>(6)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let next_before_seq = if rows.len() > q.count {
                rows.truncate(q.count);
                rows.last().map(|(_, seq)| *seq)
            } else {
                None
            };
            Ok(HistoryPage {
                entries: rows.into_iter().map(|(s, _)| s).collect(),
                next_before_seq,
                snapshot_seq,
                total: total as u64,
            })
        })
    }

    fn search(
        &self,
        resource_type: &str,
        query: &SearchQuery,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Stored>, u64)> {
        self.with_reader(|c| {
            let (clause, args) = search_sql(resource_type, query, None);
            let total: i64 = c.query_row(
                &format!("SELECT count(*) FROM resources r WHERE {clause}"),
                params_from_iter(args.iter()),
                |r| r.get(0),
            )?;
            let (clause, args) = search_sql(resource_type, query, after_id);
            let mut stmt = c.prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v ON v.seq = r.seq
                 WHERE {clause} ORDER BY r.id LIMIT {limit}"
            ))?;
            let found = stmt.query_map(params_from_iter(args), stored_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((found, total as u64))
        })
    }

    fn export(&self, resource_type: Option<&str>, sink: &mut dyn FnMut(&Stored) -> Result<()>) -> Result<()> {
        self.with_reader(|c| {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v ON v.seq = r.seq
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

    fn ping(&self) -> Result<()> {
        self.with_reader(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?))
    }
}
