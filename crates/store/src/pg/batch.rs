//! Versions and index rows for PostgreSQL, written in bulk: the rows of any number of
//! resources are gathered into columns and inserted in one statement, an
//! `INSERT … SELECT FROM unnest(…)` per table joined with `WITH` (one round trip, whatever
//! the number of resources and tables).

use postgres::GenericClient;

use super::pool::{prepared_in, Statements};
use crate::index::IndexRow;
use crate::sql::{param_key, ParamKeys};
use crate::Result;

/// Longest text of one indexed column: three of them (value, system, exact) must fit in a
/// btree entry (at most 2,704 bytes). Longer values are cut, at a character boundary,
/// before indexing, and so are searched values (`Arg` binds them cut the same way).
pub const MAX_INDEXED_BYTES: usize = 800;

/// Versions and index rows of one or more resources, by table, as columns.
#[derive(Default)]
pub struct WriteBatch<'a> {
    versions: VersionColumns<'a>,
    tokens: TokenColumns,
    dates: DateColumns,
    numbers: NumberColumns,
    composites: CompositeColumns,
    free_slots: FreeSlotColumns,
}

#[derive(Default)]
struct VersionColumns<'a> {
    rid: Vec<i64>,
    resource_type: Vec<&'a str>,
    id: Vec<&'a str>,
    version: Vec<i64>,
    last_updated: Vec<&'a str>,
    deleted: Vec<bool>,
    body: Vec<&'a [u8]>,
    patient_key: Vec<Option<&'a str>>,
}

/// One version of a resource to write.
pub struct Version<'a> {
    /// The resource's row id.
    pub rid: i64,
    /// Its type.
    pub resource_type: &'a str,
    /// Its id.
    pub id: &'a str,
    /// The version number.
    pub version: i64,
    /// When it was written.
    pub last_updated: &'a str,
    /// The stored bytes (empty for a delete).
    pub body: &'a [u8],
    /// The patient compartment it belongs to.
    pub patient_key: Option<&'a str>,
}

/// The statement that writes a whole batch.
const INSERT_BATCH: &str = "WITH
 v AS (INSERT INTO resource_versions (rid, type, id, version, last_updated, deleted, body, patient_key)
       SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bool[],
                            $7::bytea[], $8::text[])),
 t AS (INSERT INTO search_index (param, value, system, rid, exact, patient_key)
       SELECT * FROM unnest($9::int[], $10::text[], $11::text[], $12::bigint[], $13::text[], $14::text[])
       ON CONFLICT DO NOTHING),
 d AS (INSERT INTO search_date (param, low, high, rid, patient_key)
       SELECT * FROM unnest($15::int[], $16::text[], $17::text[], $18::bigint[], $19::text[])
       ON CONFLICT DO NOTHING),
 n AS (INSERT INTO search_number (param, low, high, system, code, rid, patient_key)
       SELECT * FROM unnest($20::int[], $21::float8[], $22::float8[], $23::text[], $24::text[], $25::bigint[],
                            $26::text[])
       ON CONFLICT DO NOTHING),
 c AS (INSERT INTO search_composite
         (param, c1_system, c1_value, value, system, code, low, high, low_number, high_number, rid, patient_key)
       SELECT * FROM unnest($27::int[], $28::text[], $29::text[], $30::text[], $31::text[], $32::text[],
                            $33::text[], $34::text[], $35::float8[], $36::float8[], $37::bigint[], $38::text[]))
INSERT INTO free_slots (rid, schedule, start)
SELECT * FROM unnest($39::bigint[], $40::text[], $41::text[])
ON CONFLICT (rid) DO UPDATE SET schedule = excluded.schedule, start = excluded.start";

#[derive(Default)]
struct FreeSlotColumns {
    rid: Vec<i64>,
    schedule: Vec<String>,
    start: Vec<String>,
}

#[derive(Default)]
struct TokenColumns {
    param: Vec<i32>,
    value: Vec<String>,
    system: Vec<String>,
    rid: Vec<i64>,
    exact: Vec<String>,
    patient_key: Vec<Option<String>>,
}

#[derive(Default)]
struct DateColumns {
    param: Vec<i32>,
    low: Vec<String>,
    high: Vec<String>,
    rid: Vec<i64>,
    patient_key: Vec<Option<String>>,
}

#[derive(Default)]
struct NumberColumns {
    param: Vec<i32>,
    low: Vec<f64>,
    high: Vec<f64>,
    system: Vec<String>,
    code: Vec<String>,
    rid: Vec<i64>,
    patient_key: Vec<Option<String>>,
}

#[derive(Default)]
struct CompositeColumns {
    param: Vec<i32>,
    c1_system: Vec<String>,
    c1_value: Vec<String>,
    value: Vec<String>,
    system: Vec<String>,
    code: Vec<String>,
    low: Vec<Option<String>>,
    high: Vec<Option<String>>,
    low_number: Vec<Option<f64>>,
    high_number: Vec<Option<f64>>,
    rid: Vec<i64>,
    patient_key: Vec<Option<String>>,
}

/// `s` cut to at most [`MAX_INDEXED_BYTES`].
pub fn fit(s: &str) -> String {
    if s.len() <= MAX_INDEXED_BYTES {
        return s.to_string();
    }
    let mut end = MAX_INDEXED_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl<'a> WriteBatch<'a> {
    /// Adds a version of a resource (its index rows are added with [`WriteBatch::add`]).
    pub fn add_version(&mut self, version: Version<'a>) {
        let v = &mut self.versions;
        v.rid.push(version.rid);
        v.resource_type.push(version.resource_type);
        v.id.push(version.id);
        v.version.push(version.version);
        v.last_updated.push(version.last_updated);
        v.deleted.push(version.body.is_empty());
        v.body.push(version.body);
        v.patient_key.push(version.patient_key);
    }

    /// Adds the index rows of the resource `rid` (of `resource_type`, in `patient_key`'s compartment).
    pub fn add(
        &mut self,
        keys: &ParamKeys,
        resource_type: &str,
        rid: i64,
        patient_key: Option<&str>,
        rows: &[IndexRow],
    ) {
        let patient = patient_key.map(str::to_string);
        if let Some((schedule, start)) = crate::agenda::free_slot(resource_type, rows) {
            self.free_slots.rid.push(rid);
            self.free_slots.schedule.push(fit(&schedule));
            self.free_slots.start.push(start);
        }
        for row in rows {
            let key = param_key(keys, resource_type, row.param) as i32;
            let system = fit(row.system.as_deref().unwrap_or(""));
            if let Some((c1_system, c1_value)) = &row.composite {
                let c = &mut self.composites;
                c.param.push(key);
                c.c1_system.push(fit(c1_system));
                c.c1_value.push(fit(c1_value));
                c.system.push(system);
                let (value, code) = match (&row.number, &row.range) {
                    (Some(_), _) => (String::new(), fit(&row.value)),
                    (None, Some(_)) => (String::new(), String::new()),
                    (None, None) => (fit(&row.value), String::new()),
                };
                c.value.push(value);
                c.code.push(code);
                c.low.push(row.range.as_ref().map(|(l, _)| l.clone()));
                c.high.push(row.range.as_ref().map(|(_, h)| h.clone()));
                c.low_number.push(row.number.map(|(l, _)| l));
                c.high_number.push(row.number.map(|(_, h)| h));
                c.rid.push(rid);
                c.patient_key.push(patient.clone());
            } else if let Some((low, high)) = row.number {
                let n = &mut self.numbers;
                n.param.push(key);
                n.low.push(low);
                n.high.push(high);
                n.system.push(system);
                n.code.push(fit(&row.value));
                n.rid.push(rid);
                n.patient_key.push(patient.clone());
            } else if let Some((low, high)) = &row.range {
                let d = &mut self.dates;
                d.param.push(key);
                d.low.push(low.clone());
                d.high.push(high.clone());
                d.rid.push(rid);
                d.patient_key.push(patient.clone());
            } else {
                let t = &mut self.tokens;
                t.param.push(key);
                t.value.push(fit(&row.value));
                t.system.push(system);
                t.rid.push(rid);
                t.exact.push(fit(row.exact.as_deref().unwrap_or("")));
                t.patient_key.push(patient.clone());
            }
        }
    }

    /// Inserts every gathered row, in one statement.
    pub fn insert(&self, client: &mut impl GenericClient, statements: &mut Statements) -> Result<()> {
        let statement = prepared_in(client, statements, INSERT_BATCH)?;
        let (v, t, d, n, c, f) = (
            &self.versions,
            &self.tokens,
            &self.dates,
            &self.numbers,
            &self.composites,
            &self.free_slots,
        );
        client.execute(
            &statement,
            &[
                &v.rid,
                &v.resource_type,
                &v.id,
                &v.version,
                &v.last_updated,
                &v.deleted,
                &v.body,
                &v.patient_key,
                &t.param,
                &t.value,
                &t.system,
                &t.rid,
                &t.exact,
                &t.patient_key,
                &d.param,
                &d.low,
                &d.high,
                &d.rid,
                &d.patient_key,
                &n.param,
                &n.low,
                &n.high,
                &n.system,
                &n.code,
                &n.rid,
                &n.patient_key,
                &c.param,
                &c.c1_system,
                &c.c1_value,
                &c.value,
                &c.system,
                &c.code,
                &c.low,
                &c.high,
                &c.low_number,
                &c.high_number,
                &c.rid,
                &c.patient_key,
                &f.rid,
                &f.schedule,
                &f.start,
            ],
        )?;
        Ok(())
    }
}
