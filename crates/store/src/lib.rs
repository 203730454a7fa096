//! Versioned FHIR resource storage.
//!
//! The [`Store`] trait is what the API layer talks to; [`sqlite::SqliteStore`] is the
//! embedded backend, [`pg::PgStore`] the PostgreSQL one. Every write happens inside a unit of work ([`Store::write`]) that is
//! one ACID transaction: either every change in it is committed, or none is.
//!
//! Resources are kept as the exact JSON bytes that are served. Every create, update and
//! delete adds a version; nothing is overwritten.

pub mod agenda;
pub mod audit;
mod gate;
mod group_commit;
pub mod index;
pub mod pg;
pub mod query;
mod reindex;
pub mod sql;
pub mod sqlite;
pub mod time_fmt;

use std::sync::Arc;

use sijill_fhir::primitives::is_valid_id;

pub use audit::{AuditEntry, AuditQuery, SealedAudit};
pub use query::{Criterion, SearchQuery, SortKey};
pub use time_fmt::{instant_in, now_instant, parse_instant};

/// One stored version of a resource.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Resource type, e.g. `Patient`.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// Version number, starting at 1.
    pub version: u64,
    /// When this version was written (FHIR instant, UTC, milliseconds).
    pub last_updated: String,
    /// True for the version that records a delete (it has no body).
    pub deleted: bool,
    /// The resource JSON exactly as served (empty for a delete).
    pub body: Arc<[u8]>,
}

/// The outcome of reading the current version of a resource.
#[derive(Debug, Clone)]
pub enum Current {
    /// The resource exists.
    Found(Stored),
    /// The resource's newest version is a delete.
    Deleted(Stored),
    /// The resource never existed.
    NotFound,
}

impl Current {
    /// The outcome of a read that found `newest`, the resource's newest version, or nothing.
    pub fn of(newest: Option<Stored>) -> Current {
        match newest {
            Some(s) if s.deleted => Current::Deleted(s),
            Some(s) => Current::Found(s),
            None => Current::NotFound,
        }
    }
}

/// Errors of the store. None of them leaves a partial write behind.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `If-Match` named another version than the current one.
    #[error("version conflict: expected version {expected}, current version is {current}")]
    VersionConflict {
        /// The version the client expected.
        expected: u64,
        /// The current version (0 when the resource does not exist).
        current: u64,
    },
    /// The request is not acceptable (bad id, unsupported search, ...).
    #[error("{0}")]
    Invalid(String),
    /// A conditional operation matched more than one resource.
    #[error("{0}")]
    MultipleMatches(String),
    /// A resource that the operation needs does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Concurrent writers got in each other's way (a deadlock the database broke); nothing
    /// was written and the same request may be sent again.
    #[error("{0}; nothing was written: send the request again")]
    Contention(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// Result alias of the store.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Which resources a history request covers.
#[derive(Debug, Clone)]
pub enum HistoryScope {
    /// Every resource on the server.
    System,
    /// Every resource of one type.
    Type(String),
    /// One resource.
    Instance(String, String),
}

/// A page of history, newest first.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    /// Which resources.
    pub scope: HistoryScope,
    /// Only versions written at or after this instant.
    pub since: Option<String>,
    /// Page size.
    pub count: usize,
    /// Only versions older than this change sequence number (for the next page).
    pub before_seq: Option<i64>,
    /// Only versions written at or before this sequence number (keeps paging stable while
    /// new writes arrive).
    pub at_or_before_seq: Option<i64>,
}

/// A page of history: versions newest first, and the cursor for the next page.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The versions, newest first.
    pub entries: Vec<Stored>,
    /// Pass as `before_seq` to get the next page; None on the last page.
    pub next_before_seq: Option<i64>,
    /// The newest sequence number covered (to pin later pages).
    pub snapshot_seq: i64,
    /// Total number of versions matching (without paging).
    pub total: u64,
}

impl HistoryPage {
    /// The page from up to `count + 1` versions newest first, each with its sequence number
    /// (one more than the page holds tells that there is a next page).
    pub fn from_rows(mut rows: Vec<(Stored, i64)>, count: usize, snapshot_seq: i64, total: u64) -> HistoryPage {
        let next_before_seq = if rows.len() > count {
            rows.truncate(count);
            rows.last().map(|(_, seq)| *seq)
        } else {
            None
        };
        HistoryPage {
            entries: rows.into_iter().map(|(s, _)| s).collect(),
            next_before_seq,
            snapshot_seq,
            total,
        }
    }
}

/// The changes one unit of work may make, and the reads it may do inside it.
pub trait StoreTx {
    /// Creates a resource with a new version 1. `id` is server-assigned when None.
    fn create(&mut self, resource_type: &str, body: serde_json::Value, id: Option<&str>) -> Result<Stored>;
    /// Writes a new version of a resource (creating it when it does not exist).
    /// `if_match` enforces the current version. Returns the stored version and whether
    /// it was created.
    fn update(
        &mut self,
        resource_type: &str,
        id: &str,
        body: serde_json::Value,
        if_match: Option<u64>,
    ) -> Result<(Stored, bool)>;
    /// Records a delete as a new version. Returns the delete version, or None when there
    /// was nothing to delete.
    fn delete(&mut self, resource_type: &str, id: &str, if_match: Option<u64>) -> Result<Option<Stored>>;
    /// The current version of a resource, seen from inside the unit of work.
    fn read(&mut self, resource_type: &str, id: &str) -> Result<Current>;
    /// The current version of a resource the unit of work means to change, locked against
    /// other writers until it ends: a writer that read it first changes it first, and this
    /// one then reads the version that writer left (instead of learning of it only at its
    /// own update, after all its other work). The embedded store has one writer at a time,
    /// so there it is a plain read.
    fn read_for_update(&mut self, resource_type: &str, id: &str) -> Result<Current> {
        self.read(resource_type, id)
    }
    /// The current version of each of these resources that has one, and whether that
    /// version is a delete (one look for many; resources never written are absent).
    fn versions_of(
        &mut self,
        resource_type: &str,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, (u64, bool)>> {
        let mut found = std::collections::HashMap::new();
        for id in ids {
            match self.read(resource_type, id)? {
                Current::Found(s) => found.insert(id.clone(), (s.version, false)),
                Current::Deleted(s) => found.insert(id.clone(), (s.version, true)),
                Current::NotFound => None,
            };
        }
        Ok(found)
    }
    /// Ids of the current, not deleted resources of a type that match the query.
    fn search_ids(&mut self, resource_type: &str, query: &SearchQuery, limit: usize) -> Result<Vec<String>>;
    /// Inserts a new resource prepared outside the transaction (version 1).
    fn insert_prepared(&mut self, prepared: PreparedResource) -> Result<Stored>;
    /// Makes conditional writes with the same conditions (type and criteria of a conditional
    /// create, update or delete) take turns until this unit of work ends, so that the later
    /// one's search sees what the earlier one wrote. Call before searching for them.
    fn lock_conditions(&mut self, conditions: &[(&str, &SearchQuery)]) -> Result<()>;
    /// Appends audit events to the trail, sealed in a chain, committed with this unit of
    /// work (taken over: a unit holds them until it ends).
    fn append_audit(&mut self, entries: Vec<AuditEntry>) -> Result<()>;
    /// A piece of server state (access codes, attempt counters) by kind and key; writers
    /// of the same key take turns until this unit of work ends.
    fn state_get(&mut self, kind: &str, key: &str) -> Result<Option<String>>;
    /// Sets a piece of server state.
    fn state_put(&mut self, kind: &str, key: &str, value: &str) -> Result<()>;
    /// Removes a piece of server state.
    fn state_delete(&mut self, kind: &str, key: &str) -> Result<()>;
}

/// A new resource made ready for storage — server meta set, serialised, index rows
/// extracted — before the write transaction starts, so that the writer only inserts.
#[derive(Debug, Clone)]
pub struct PreparedResource {
    /// Resource type.
    pub resource_type: String,
    /// The id it will have.
    pub id: String,
    /// The placeholder lastUpdated in `bytes`; the store writes its own stamp over it.
    pub last_updated: String,
    /// Byte offset of the placeholder lastUpdated in `bytes`.
    pub stamp_at: usize,
    /// The bytes to store and serve.
    pub bytes: Vec<u8>,
    /// Its search index rows.
    pub rows: Vec<index::IndexRow>,
}

impl PreparedResource {
    /// The bytes and index rows with the transaction's `stamp` as lastUpdated, written over
    /// the placeholder the preparation left.
    pub fn stamped(self, stamp: &str) -> Result<(Vec<u8>, Vec<index::IndexRow>)> {
        let mut bytes = self.bytes;
        match bytes.get_mut(self.stamp_at..self.stamp_at + stamp.len()) {
            Some(slot) if self.last_updated.len() == stamp.len() => slot.copy_from_slice(stamp.as_bytes()),
            _ => {
                return Err(StoreError::Database(
                    "prepared resource without a lastUpdated slot".into(),
                ))
            }
        }
        // The index rows were extracted with the placeholder: `_lastUpdated` takes the stamp.
        let mut rows = self.rows;
        for row in rows.iter_mut().filter(|r| r.param == "_lastUpdated") {
            row.range = Some((stamp.to_string(), stamp.to_string()));
        }
        Ok((bytes, rows))
    }
}

/// Sets `id`, `meta.versionId` and `meta.lastUpdated` on a resource (putting
/// `resourceType`, `id` and `meta` first), serialises it and extracts its index rows.
pub fn prepare_version(
    resource_type: &str,
    id: &str,
    version: u64,
    body: serde_json::Value,
    last_updated: &str,
) -> Result<(Vec<u8>, Vec<index::IndexRow>)> {
    let serde_json::Value::Object(map) = body else {
        return Err(StoreError::Invalid("a resource must be a JSON object".into()));
    };
    let body = serde_json::Value::Object(with_server_meta(map, id, version, last_updated));
    let rows = index::extract(resource_type, &body);
    let bytes = serde_json::to_vec(&body).map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok((bytes, rows))
}

/// Prepares a new resource (version 1) with the given id.
pub fn prepare_new(
    resource_type: &str,
    id: &str,
    body: serde_json::Value,
    last_updated: &str,
) -> Result<PreparedResource> {
    let (bytes, rows) = prepare_version(resource_type, id, 1, body, last_updated)?;
    let needle = format!("\"lastUpdated\":\"{last_updated}\"");
    let stamp_at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .map(|p| p + needle.len() - last_updated.len() - 1)
        .ok_or_else(|| StoreError::Database("serialised resource has no lastUpdated".into()))?;
    Ok(PreparedResource {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        last_updated: last_updated.to_string(),
        stamp_at,
        bytes,
        rows,
    })
}

/// Puts `resourceType`, `id` and `meta` (with the server's versionId and lastUpdated)
/// first, followed by the rest of the resource in its original order.
fn with_server_meta(
    mut map: serde_json::Map<String, serde_json::Value>,
    id: &str,
    version: u64,
    last_updated: &str,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
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

/// `If-Match`: the current version (0 when the resource does not exist) must be the one
/// the client names.
pub(crate) fn check_version(current: Option<u64>, if_match: Option<u64>) -> Result<()> {
    match if_match {
        Some(expected) => {
            let actual = current.unwrap_or(0);
            if actual == expected {
                Ok(())
            } else {
                Err(StoreError::VersionConflict {
                    expected,
                    current: actual,
                })
            }
        }
        None => Ok(()),
    }
}

/// A resource id must be a valid FHIR id.
pub(crate) fn check_id(id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "'{id}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})"
        )))
    }
}

/// `found` with the owner's own type added when it is among `member_types` (the owner
/// belongs to its compartment without referencing itself).
pub(crate) fn with_owner_type(mut found: Vec<String>, owner_type: &str, member_types: &[&str]) -> Vec<String> {
    if member_types.contains(&owner_type) && !found.iter().any(|t| t == owner_type) {
        found.push(owner_type.to_string());
    }
    found
}

/// A store of versioned resources.
pub trait Store: Send + Sync {
    /// Runs `work` in one ACID transaction: committed when it returns Ok, rolled back
    /// otherwise.
    fn write(&self, work: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()>;
    /// The current version of a resource.
    fn read(&self, resource_type: &str, id: &str) -> Result<Current>;
    /// The current versions of several resources (type, id), in the order asked: what
    /// [`Store::read`] would give for each, in one round trip where the store has them.
    fn read_each(&self, wanted: &[(&str, &str)]) -> Result<Vec<Current>> {
        wanted.iter().map(|(t, id)| self.read(t, id)).collect()
    }
    /// One version of a resource.
    fn vread(&self, resource_type: &str, id: &str, version: u64) -> Result<Option<Stored>>;
    /// A page of history.
    fn history(&self, query: &HistoryQuery) -> Result<HistoryPage>;
    /// Ids of the matching resources in `_sort` order (ties broken by id), at most `limit`.
    fn search_sorted_ids(
        &self,
        resource_type: &str,
        query: &SearchQuery,
        sort: &[SortKey],
        limit: usize,
    ) -> Result<Vec<String>>;
    /// A page of the agenda of free slots ([`agenda`]), in start order.
    fn free_slots(&self, query: &agenda::AgendaQuery) -> Result<Vec<agenda::FreeSlot>>;
    /// Ids of the current, not deleted resources of a type matching a query, in id order
    /// (at most `limit`).
    fn search_ids(&self, resource_type: &str, query: &SearchQuery, limit: usize) -> Result<Vec<String>> {
        self.search_sorted_ids(resource_type, query, &[], limit)
    }
    /// The current, not deleted resources of a type matching a query, in id order after
    /// `after_id`, at most `limit`. Also returns the total count of matches: a first page
    /// with room left holds them all, so only a full or later page costs a count.
    fn search(
        &self,
        resource_type: &str,
        query: &SearchQuery,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Stored>, u64)> {
        let page = self.search_page(resource_type, query, after_id, limit)?;
        let total = match after_id {
            None if page.len() < limit => page.len() as u64,
            _ => self.count(resource_type, query)?,
        };
        Ok((page, total))
    }
    /// How many current, not deleted resources of a type match a query.
    fn count(&self, resource_type: &str, query: &SearchQuery) -> Result<u64>;
    /// Like [`Store::search`] without counting the matches (for `_total=none` and
    /// internal lookups: counting a large result costs a scan).
    fn search_page(
        &self,
        resource_type: &str,
        query: &SearchQuery,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>>;
    /// The first `limit` current resources of a type matching search pairs
    /// (`("identifier", "system|value")`): the server's own lookups, past no access rule.
    fn lookup(&self, resource_type: &str, pairs: &[(&str, String)], limit: usize) -> Result<Vec<Stored>> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let query = SearchQuery::parse(resource_type, &pairs)?;
        self.search_page(resource_type, &query, None, limit)
    }
    /// Calls `sink` with every current resource of a type matching a query, in id order,
    /// a page of 1,000 at a time (no reader is held between pages).
    fn search_each(
        &self,
        resource_type: &str,
        query: &SearchQuery,
        sink: &mut dyn FnMut(&Stored) -> Result<()>,
    ) -> Result<()> {
        const PAGE: usize = 1000;
        let mut after: Option<String> = None;
        loop {
            let page = self.search_page(resource_type, query, after.as_deref(), PAGE)?;
            for s in &page {
                sink(s)?;
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
                _ => return Ok(()),
            }
        }
    }
    /// Calls `sink` with every current resource of a type (all types when None), in
    /// storage order, streaming from the database.
    fn export(&self, resource_type: Option<&str>, sink: &mut dyn FnMut(&Stored) -> Result<()>) -> Result<()>;
    /// The types among `member_types` with at least one current resource in the
    /// compartment of `owner_type/owner_id` (the owner's own type, when listed, always):
    /// one statement that spares a search of every empty type.
    fn compartment_types(&self, owner_type: &str, owner_id: &str, member_types: &[&str]) -> Result<Vec<String>>;
    /// Number of current, not deleted resources per type.
    fn counts(&self) -> Result<Vec<(String, u64)>>;
    /// Checks that the store answers (readiness).
    fn ping(&self) -> Result<()>;
    /// Rebuilds the whole search index from the current versions, online: in short
    /// transactions, so that writers go on between them. Reports (done, total).
    fn reindex(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<()>;
    /// Brings the database's planner statistics up to date after a bulk load
    /// (PostgreSQL's ANALYZE; the embedded store plans without statistics).
    fn refresh_statistics(&self) -> Result<()>;
    /// Declares (or ends) a bulk load that is the store's only writer: its units of work may
    /// then run without what concurrent writers need (the embedded store writes each one
    /// directly, in a transaction of its own, instead of joining a group). Nothing else
    /// may write meanwhile.
    fn sole_writer(&self, _on: bool) {}
    /// Declares a bulk load (an import): its units of work may then commit without waiting
    /// for the disk, and ending it (`on` false) waits until everything committed meanwhile
    /// is on disk. A crash during the load can lose the last few hundred milliseconds of
    /// it, never a part of a unit of work; the load reports success only after it ends.
    fn bulk_load(&self, _on: bool) -> Result<()> {
        Ok(())
    }
    /// Appends audit events in a unit of work of their own.
    fn append_audit(&self, entries: &[AuditEntry]) -> Result<()> {
        self.write(&mut |tx| tx.append_audit(entries.to_vec()))
    }
    /// Audit rows in chain order (chain, then position) after `after` (chain, position),
    /// at most `limit`.
    fn audit_rows(&self, after: Option<(i64, i64)>, limit: usize) -> Result<Vec<SealedAudit>>;
    /// Audit rows matching a query, newest first.
    fn audit_search(&self, query: &AuditQuery) -> Result<Vec<SealedAudit>>;
    /// One audit row by its seq.
    fn audit_get(&self, seq: i64) -> Result<Option<SealedAudit>>;
}
