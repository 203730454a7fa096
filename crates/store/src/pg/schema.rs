//! The PostgreSQL schema: versioned migrations, applied in order under an advisory lock so
//! that several servers starting at once apply each migration exactly once.
//!
//! The tables are those of the embedded store (one search builder serves both), typed for
//! PostgreSQL, with one addition: every row of patient data — the resource, each of its
//! versions and each of its index rows — carries `patient_key`, the id of the Patient whose
//! compartment it belongs to, the key the tables would be distributed by over several
//! nodes. Reference data (facilities, practitioners, definitions) has no patient key.
//! Text columns use the "C" collation: byte order, as in SQLite, so prefix ranges and
//! paging by id behave identically on both stores.

use postgres::Client;

use crate::{Result, StoreError};

/// The advisory lock key held while migrations run ("SIJILL01" in ASCII).
const MIGRATION_LOCK: i64 = 0x5349_4A49_4C4C_3031;

/// Migrations, in order; `schema_migrations` records which ran. Never edit one that
/// shipped: add a new one.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE resources (
    rid         bigserial PRIMARY KEY,
    type        text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    version     bigint  NOT NULL,
    deleted     boolean NOT NULL,
    patient_key text COLLATE "C",
    UNIQUE (type, id)
);
CREATE INDEX resources_patient ON resources (patient_key) WHERE patient_key IS NOT NULL;
CREATE TABLE resource_versions (
    seq          bigserial PRIMARY KEY,
    rid          bigint  NOT NULL,
    type         text COLLATE "C" NOT NULL,
    id           text COLLATE "C" NOT NULL,
    version      bigint  NOT NULL,
    last_updated text COLLATE "C" NOT NULL,
    deleted      boolean NOT NULL,
    body         bytea   NOT NULL,
    patient_key  text COLLATE "C",
    UNIQUE (rid, version)
);
CREATE INDEX resource_versions_type ON resource_versions (type, seq);
CREATE INDEX resource_versions_time ON resource_versions (last_updated);
CREATE TABLE index_params (
    key  serial PRIMARY KEY,
    type text NOT NULL,
    code text NOT NULL,
    UNIQUE (type, code)
);
CREATE TABLE search_index (
    param       integer NOT NULL,
    value       text COLLATE "C" NOT NULL,
    system      text COLLATE "C" NOT NULL,
    rid         bigint  NOT NULL,
    exact       text COLLATE "C" NOT NULL,
    patient_key text COLLATE "C",
    PRIMARY KEY (param, value, system, rid, exact)
);
CREATE INDEX search_index_rid ON search_index (rid);
CREATE TABLE search_date (
    param       integer NOT NULL,
    low         text COLLATE "C" NOT NULL,
    high        text COLLATE "C" NOT NULL,
    rid         bigint  NOT NULL,
    patient_key text COLLATE "C",
    PRIMARY KEY (param, low, high, rid)
);
CREATE INDEX search_date_rid ON search_date (rid);
CREATE TABLE search_number (
    param       integer NOT NULL,
    low         double precision NOT NULL,
    high        double precision NOT NULL,
    system      text COLLATE "C" NOT NULL,
    code        text COLLATE "C" NOT NULL,
    rid         bigint  NOT NULL,
    patient_key text COLLATE "C",
    PRIMARY KEY (param, low, high, system, code, rid)
);
CREATE INDEX search_number_rid ON search_number (rid);
CREATE TABLE search_composite (
    param       integer NOT NULL,
    c1_system   text COLLATE "C" NOT NULL,
    c1_value    text COLLATE "C" NOT NULL,
    value       text COLLATE "C" NOT NULL,
    system      text COLLATE "C" NOT NULL,
    code        text COLLATE "C" NOT NULL,
    low         text COLLATE "C",
    high        text COLLATE "C",
    low_number  double precision,
    high_number double precision,
    rid         bigint  NOT NULL,
    patient_key text COLLATE "C"
);
CREATE INDEX search_composite_lookup ON search_composite (param, c1_value, rid);
CREATE INDEX search_composite_rid ON search_composite (rid);
CREATE TABLE store_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
"#,
    r#"
CREATE TABLE audit_log (
    seq      bigserial PRIMARY KEY,
    chain    bigint NOT NULL,
    position bigint NOT NULL,
    recorded text COLLATE "C" NOT NULL,
    patient  text COLLATE "C",
    agent    text COLLATE "C" NOT NULL,
    flag     text COLLATE "C",
    body     bytea  NOT NULL,
    previous bytea  NOT NULL,
    hash     bytea  NOT NULL,
    UNIQUE (chain, position)
);
CREATE INDEX audit_log_patient ON audit_log (patient, seq) WHERE patient IS NOT NULL;
CREATE INDEX audit_log_agent ON audit_log (agent, seq);
CREATE INDEX audit_log_flag ON audit_log (flag) WHERE flag IS NOT NULL;
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only';
END
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
CREATE TABLE store_state (
    kind  text COLLATE "C" NOT NULL,
    key   text COLLATE "C" NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (kind, key)
);
"#,
    r#"
CREATE TABLE free_slots (
    rid      bigint PRIMARY KEY,
    schedule text COLLATE "C" NOT NULL,
    start    text COLLATE "C" NOT NULL
);
CREATE INDEX free_slots_start ON free_slots (start, rid);
CREATE INDEX free_slots_schedule ON free_slots (schedule, start, rid);
"#,
    // Stored bodies over ~2 kB are compressed: LZ4 instead of the default pglz, several
    // times cheaper to compress (pglz was 3% of the database's time during an import).
    // Applies to rows written from now on; a server built without LZ4 keeps pglz.
    r#"
DO $$
BEGIN
    ALTER TABLE resource_versions ALTER COLUMN body SET COMPRESSION lz4;
    ALTER TABLE audit_log ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'LZ4 is not available on this server: stored bodies stay compressed with pglz';
END
$$;
"#,
    // No statement reads resources by patient key (compartments are searched through the
    // index rows): the index only cost every write of a resource a B-tree insert.
    r#"
DROP INDEX IF EXISTS resources_patient;
"#,
    // An audit chain's lock and head in one round trip. Volatile, so the head is read in a
    // snapshot of its own taken after the lock is granted: it sees the events of the
    // writer the lock waited for.
    r#"
CREATE FUNCTION audit_chain_head(wanted bigint, lock_key bigint)
    RETURNS TABLE (head_position bigint, head_hash bytea) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN QUERY SELECT a.position, a.hash FROM audit_log a
        WHERE a.chain = wanted ORDER BY a.position DESC LIMIT 1;
END
$$;
"#,
];

/// Applies the migrations that have not run yet, each in its own transaction, and returns
/// the schema version. Refuses a database whose schema is newer than this program.
pub fn migrate(client: &mut Client) -> Result<usize> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = apply_pending(client);
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])?;
    result
}

fn apply_pending(client: &mut Client) -> Result<usize> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let applied: i32 = client
        .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])?
        .get(0);
    let applied = applied as usize;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "the database schema (version {applied}) is newer than this program knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let mut tx = client.transaction()?;
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&((i + 1) as i32)],
        )?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied a schema migration");
    }
    Ok(MIGRATIONS.len())
}
