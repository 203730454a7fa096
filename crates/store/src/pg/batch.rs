//! Versions and index rows for PostgreSQL, written in bulk: the rows of any number of
//! resources are gathered into columns and inserted in one statement, an
//! `INSERT … SELECT FROM unnest(…)` per table joined with `WITH` (one round trip, whatever
//! the number of resources and tables). Index rows go in in key order: consecutive
//! inserts then descend to the same B-tree pages, still in memory (measured: ×1.03 on
//! `sijill import`).

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash};

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::GenericClient;

use super::pool::{prepared_in, Statements};
use crate::index::IndexRow;
use crate::sql::ParamKeys;
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

/// From how many versions, token and date rows a batch copies them in (`COPY … FROM
/// STDIN`, binary) instead of inserting them with the statement below: COPY writes a
/// page of rows per WAL record and needs no arrays, but takes two round trips per table,
/// which a single write's few rows would not repay.
const COPY_FROM_ROWS: usize = 400;

/// The statement that writes a whole batch.
const INSERT_BATCH: &str = "WITH
 v AS (INSERT INTO resource_versions (rid, type, id, version, last_updated, deleted, body, patient_key)
       SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bool[],
                            $7::bytea[], $8::text[])),
 t AS (INSERT INTO search_index (param, value, system, rid, exact, patient_key)
       SELECT * FROM unnest($9::int[], $10::text[], $11::text[], $12::bigint[], $13::text[], $14::text[]) ORDER BY 1, 2, 3),
 d AS (INSERT INTO search_date (param, low, high, rid, patient_key)
       SELECT * FROM unnest($15::int[], $16::text[], $17::text[], $18::bigint[], $19::text[]) ORDER BY 1, 2, 3),
 n AS (INSERT INTO search_number (param, low, high, system, code, rid, patient_key)
       SELECT * FROM unnest($20::int[], $21::float8[], $22::float8[], $23::text[], $24::text[], $25::bigint[],
                            $26::text[])),
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

/// The rows one resource has added to a table so far: from which column position, and
/// the hashes of their keys.
struct SeenRows {
    from: usize,
    hashes: HashSet<u64, foldhash::fast::FixedState>,
}

impl SeenRows {
    fn new(from: usize) -> Self {
        SeenRows {
            from,
            hashes: HashSet::default(),
        }
    }

    /// Whether a row with this key hash is one the resource added already, among the
    /// column positions before `len` (`same(i)`: the row at position i has the same key);
    /// remembers the hash otherwise.
    fn repeats(&mut self, hash: u64, len: usize, same: impl Fn(usize) -> bool) -> bool {
        !self.hashes.insert(hash) && (self.from..len).any(same)
    }
}

/// The rows of the resource being added, per table with a primary key.
struct Seen {
    tokens: SeenRows,
    dates: SeenRows,
    numbers: SeenRows,
}

impl Seen {
    fn new(tokens: usize, dates: usize, numbers: usize) -> Self {
        Seen {
            tokens: SeenRows::new(tokens),
            dates: SeenRows::new(dates),
            numbers: SeenRows::new(numbers),
        }
    }
}

/// A hash of a row's key.
fn hash_of(key: &impl Hash) -> u64 {
    foldhash::fast::FixedState::default().hash_one(key)
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

/// Positions `0..len` in the order of `key`.
fn key_order<K: Ord>(len: usize, key: impl Fn(usize) -> K) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_unstable_by_key(|&i| key(i));
    order
}

/// Copies rows into a table with binary `COPY` (`statement`, columns of `types`), in
/// `order`, `row` writing the row at a position; sends nothing when there are none.
fn copy_rows(
    client: &mut impl GenericClient,
    statement: &str,
    types: &[Type],
    order: impl IntoIterator<Item = usize>,
    mut row: impl FnMut(&mut BinaryCopyInWriter<'_>, usize) -> std::result::Result<(), postgres::Error>,
) -> Result<()> {
    let mut order = order.into_iter().peekable();
    if order.peek().is_none() {
        return Ok(());
    }
    let mut writer = BinaryCopyInWriter::new(client.copy_in(statement)?, types);
    for i in order {
        row(&mut writer, i)?;
    }
    writer.finish()?;
    Ok(())
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
        // A resource's rows repeat when its values do, or when two long values are cut to
        // the same prefix: each is written once, so the inserts need no conflict check.
        let mut seen = Seen::new(self.tokens.rid.len(), self.dates.rid.len(), self.numbers.rid.len());
        // The type's name as the keys know it, looked up once for all its rows.
        let type_name = sijill_fhir::definitions::type_def(resource_type).map_or(resource_type, |t| t.name);
        for row in rows {
            // -1, which matches nothing, for a parameter that is not indexed (as `param_key`).
            let key = keys.get(&(type_name, row.param)).map_or(-1, |k| *k as i32);
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
                // -0 and 0 are one key to the database: one key here too.
                let (low, high) = (low + 0.0, high + 0.0);
                let n = &mut self.numbers;
                let code = fit(&row.value);
                let same = |i: usize| {
                    n.param[i] == key
                        && n.low[i].to_bits() == low.to_bits()
                        && n.high[i].to_bits() == high.to_bits()
                        && n.system[i] == system
                        && n.code[i] == code
                };
                let hash = hash_of(&(key, low.to_bits(), high.to_bits(), &system, &code));
                if seen.numbers.repeats(hash, n.rid.len(), same) {
                    continue;
                }
                n.param.push(key);
                n.low.push(low);
                n.high.push(high);
                n.system.push(system);
                n.code.push(code);
                n.rid.push(rid);
                n.patient_key.push(patient.clone());
            } else if let Some((low, high)) = &row.range {
                let d = &mut self.dates;
                let same = |i: usize| d.param[i] == key && d.low[i] == *low && d.high[i] == *high;
                if seen.dates.repeats(hash_of(&(key, low, high)), d.rid.len(), same) {
                    continue;
                }
                d.param.push(key);
                d.low.push(low.clone());
                d.high.push(high.clone());
                d.rid.push(rid);
                d.patient_key.push(patient.clone());
            } else {
                let t = &mut self.tokens;
                let (value, exact) = (fit(&row.value), fit(row.exact.as_deref().unwrap_or("")));
                let same =
                    |i: usize| t.param[i] == key && t.value[i] == value && t.system[i] == system && t.exact[i] == exact;
                if seen
                    .tokens
                    .repeats(hash_of(&(key, &value, &system, &exact)), t.rid.len(), same)
                {
                    continue;
                }
                t.param.push(key);
                t.value.push(value);
                t.system.push(system);
                t.rid.push(rid);
                t.exact.push(exact);
                t.patient_key.push(patient.clone());
            }
        }
    }

    /// Writes every gathered row: in one statement, or — for a bulk batch — the versions,
    /// token rows and date rows by `COPY` and the rest in one statement.
    pub fn insert(&self, client: &mut impl GenericClient, statements: &mut Statements) -> Result<()> {
        if self.versions.rid.len() + self.tokens.rid.len() + self.dates.rid.len() < COPY_FROM_ROWS {
            return self.insert_rows(client, statements, self);
        }
        self.copy_versions(client)?;
        self.copy_tokens(client)?;
        self.copy_dates(client)?;
        let (n, c, f) = (&self.numbers, &self.composites, &self.free_slots);
        if n.rid.is_empty() && c.rid.is_empty() && f.rid.is_empty() {
            return Ok(());
        }
        self.insert_rows(client, statements, &WriteBatch::default())
    }

    /// Copies the versions in (binary `COPY`).
    fn copy_versions(&self, client: &mut impl GenericClient) -> Result<()> {
        let v = &self.versions;
        copy_rows(
            client,
            "COPY resource_versions (rid, type, id, version, last_updated, deleted, body, patient_key)
             FROM STDIN (FORMAT binary)",
            &[
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
                Type::BOOL,
                Type::BYTEA,
                Type::TEXT,
            ],
            0..v.rid.len(),
            |w, i| {
                w.write(&[
                    &v.rid[i],
                    &v.resource_type[i],
                    &v.id[i],
                    &v.version[i],
                    &v.last_updated[i],
                    &v.deleted[i],
                    &v.body[i],
                    &v.patient_key[i],
                ])
            },
        )
    }

    /// Copies the token rows in, in key order.
    fn copy_tokens(&self, client: &mut impl GenericClient) -> Result<()> {
        let t = &self.tokens;
        copy_rows(
            client,
            "COPY search_index (param, value, system, rid, exact, patient_key) FROM STDIN (FORMAT binary)",
            &[Type::INT4, Type::TEXT, Type::TEXT, Type::INT8, Type::TEXT, Type::TEXT],
            key_order(t.rid.len(), |i| (t.param[i], &t.value[i], &t.system[i])),
            |w, i| {
                w.write(&[
                    &t.param[i],
                    &t.value[i],
                    &t.system[i],
                    &t.rid[i],
                    &t.exact[i],
                    &t.patient_key[i],
                ])
            },
        )
    }

    /// Copies the date rows in, in key order.
    fn copy_dates(&self, client: &mut impl GenericClient) -> Result<()> {
        let d = &self.dates;
        copy_rows(
            client,
            "COPY search_date (param, low, high, rid, patient_key) FROM STDIN (FORMAT binary)",
            &[Type::INT4, Type::TEXT, Type::TEXT, Type::INT8, Type::TEXT],
            key_order(d.rid.len(), |i| (d.param[i], &d.low[i], &d.high[i])),
            |w, i| w.write(&[&d.param[i], &d.low[i], &d.high[i], &d.rid[i], &d.patient_key[i]]),
        )
    }

    /// Inserts the gathered rows in one statement, taking the versions, token rows and
    /// date rows from `big` (this batch, or an empty one when they were copied).
    fn insert_rows(
        &self,
        client: &mut impl GenericClient,
        statements: &mut Statements,
        big: &WriteBatch,
    ) -> Result<()> {
        let statement = prepared_in(client, statements, INSERT_BATCH)?;
        let (v, t, d, n, c, f) = (
            &big.versions,
            &big.tokens,
            &big.dates,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_resource_repeating_a_value_or_a_long_prefix_gets_each_row_once() {
        let long = |tail: &str| format!("{}{tail}", "x".repeat(MAX_INDEXED_BYTES));
        let patient = json!({
            "resourceType": "Patient",
            "identifier": [
                {"system": "urn:nid", "value": "123"},
                {"system": "urn:nid", "value": "123"},
                {"system": "urn:nid", "value": long("a")},
                {"system": "urn:nid", "value": long("b")}
            ],
            "birthDate": "1990-01-01",
            "name": [{"family": "Amrani"}, {"family": "Amrani"}]
        });
        let rows = crate::index::extract("Patient", &patient);
        let keys = ParamKeys::default();
        let mut batch = WriteBatch::default();
        batch.add(&keys, "Patient", 1, None, &rows);
        // A second resource with the same values keeps its own rows.
        batch.add(&keys, "Patient", 2, None, &rows);
        let t = &batch.tokens;
        let mut seen = HashSet::new();
        for i in 0..t.rid.len() {
            let row = (t.param[i], &t.value[i], &t.system[i], t.rid[i], &t.exact[i]);
            assert!(seen.insert(row), "row written twice: {row:?}");
        }
        let identifiers = |rid: i64| {
            (0..t.rid.len())
                .filter(|&i| t.rid[i] == rid && t.system[i] == "urn:nid")
                .count()
        };
        // 123 once, and the two long values cut to one prefix once.
        assert_eq!(identifiers(1), 2);
        assert_eq!(identifiers(2), 2);
        assert!(batch.dates.rid.iter().filter(|&&r| r == 1).count() >= 1);
        let dates: HashSet<_> = (0..batch.dates.rid.len())
            .map(|i| {
                (
                    batch.dates.param[i],
                    &batch.dates.low[i],
                    &batch.dates.high[i],
                    batch.dates.rid[i],
                )
            })
            .collect();
        assert_eq!(dates.len(), batch.dates.rid.len(), "a date row written twice");
    }

    #[test]
    fn zero_and_minus_zero_are_one_number_row() {
        // The database's key compares -0 and 0 equal: so must the batch.
        let row = |v: f64| IndexRow {
            param: "value-quantity",
            system: Some("http://unitsofmeasure.org".into()),
            value: "mV".into(),
            exact: None,
            range: None,
            number: Some((v, v)),
            composite: None,
        };
        let mut batch = WriteBatch::default();
        batch.add(
            &ParamKeys::default(),
            "Observation",
            1,
            None,
            &[row(0.0), row(-0.0), row(1.5)],
        );
        let n = &batch.numbers;
        assert_eq!(n.rid.len(), 2, "rows: {:?}", n.low);
        assert!(n.low.iter().all(|l| !l.is_sign_negative()), "-0 kept apart from 0");
    }
}
