//! The search SQL shared by the stores: one builder writes the WHERE clause of a search,
//! its ORDER BY and the probes that pick its plan, for SQLite and for PostgreSQL.
//!
//! Both stores hold the same tables (`resources`, `search_index`, `search_date`,
//! `search_number`, `search_composite`), so a search is the same statement on both; the
//! dialect only changes how a plan is pinned (SQLite has no statistics and takes hints),
//! and a composite's number columns (typed in PostgreSQL). Values are always bound, written
//! `?`: [`numbered`] turns them into PostgreSQL's `$1, $2, …`.

use std::collections::HashMap;

use sijill_fhir::definitions::SearchParamType;

use crate::query::{Match, Prefix, SearchQuery, SortKey};
use crate::{HistoryQuery, HistoryScope, Result};

/// Integer keys of the indexed (resource type, parameter) pairs, fixed when a store opens.
pub type ParamKeys = HashMap<(&'static str, &'static str), i64, foldhash::fast::RandomState>;

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A text value.
    Text(String),
    /// A floating-point number.
    Real(f64),
    /// An integer.
    Int(i64),
}

impl From<String> for Arg {
    fn from(s: String) -> Self {
        Arg::Text(s)
    }
}

/// The database a statement is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded SQLite store.
    Sqlite,
    /// The PostgreSQL store.
    Postgres,
}

/// Writes the search statements of one store.
pub struct SqlBuilder<'a> {
    /// The database written for.
    pub dialect: Dialect,
    /// The store's parameter keys.
    pub keys: &'a ParamKeys,
}

/// The key of an indexed parameter (-1, which matches nothing, when it is not indexed).
pub fn param_key(keys: &ParamKeys, resource_type: &str, code: &str) -> i64 {
    sijill_fhir::definitions::type_def(resource_type)
        .and_then(|t| {
            crate::index::params_for(t.name)?
                .get_key_value(code)
                .map(|(c, _)| (t.name, *c))
        })
        .and_then(|k| keys.get(&k))
        .copied()
        .unwrap_or(-1)
}

/// The condition that a token row `s` holds a code, not the text rows the index adds for
/// `:text` and `:of-type` (`index::TOKEN_TEXT`, `index::TOKEN_OF_TYPE`). A macro so that
/// statements can embed it with `concat!`.
macro_rules! is_a_code {
    () => {
        "s.system NOT IN ('#text', '#of-type')"
    };
}

/// The tables derived from a resource's current version (its search index and the agenda
/// of free slots), in the order their rows are removed and written.
pub const INDEX_TABLES: [&str; 5] = [
    "search_index",
    "search_date",
    "search_number",
    "search_composite",
    crate::agenda::TABLE,
];

/// The columns of a stored version, in the order both stores read them.
pub const VERSION_COLUMNS: &str = "v.type, v.id, v.version, v.last_updated, v.deleted, v.body";

/// Resources (`r`) joined to their current versions (`v`).
pub const CURRENT_VERSIONS: &str = "resources r JOIN resource_versions v ON v.rid = r.rid AND v.version = r.version";

/// The ids a search's WHERE clause matches, in `order` (ending with `r.id`).
pub fn ids_statement(clause: &str, order: &str, limit: usize) -> String {
    format!("SELECT r.id FROM resources r WHERE {clause} ORDER BY {order} LIMIT {limit}")
}

/// How many resources a search's WHERE clause matches.
pub fn count_statement(clause: &str) -> String {
    format!("SELECT count(*) FROM resources r WHERE {clause}")
}

/// A page of the current versions a search's WHERE clause matches, in id order.
pub fn page_statement(clause: &str, limit: usize) -> String {
    format!("SELECT {VERSION_COLUMNS} FROM {CURRENT_VERSIONS} WHERE {clause} ORDER BY r.id LIMIT {limit}")
}

/// The newest change sequence number (0 on an empty store): where a history snapshot ends.
pub const NEWEST_SEQ: &str = "SELECT coalesce(max(seq), 0) FROM resource_versions";

/// A statement and its bound values.
pub type Statement = (String, Vec<Arg>);

/// The two statements of a history page taken at `snapshot_seq`: the count of every version
/// the request covers, and the page itself (newest first; one more row than `count` tells
/// that another page follows; the last column is the version's sequence number).
pub fn history_statements(q: &HistoryQuery, snapshot_seq: i64) -> (Statement, Statement) {
    let mut filter = String::from("v.seq <= ?");
    let mut args = vec![Arg::Int(snapshot_seq)];
    match &q.scope {
        HistoryScope::System => {}
        HistoryScope::Type(t) => {
            filter.push_str(" AND v.type = ?");
            args.push(Arg::Text(t.clone()));
        }
        HistoryScope::Instance(t, id) => {
            filter.push_str(" AND v.rid = (SELECT rid FROM resources WHERE type = ? AND id = ?)");
            args.push(Arg::Text(t.clone()));
            args.push(Arg::Text(id.clone()));
        }
    }
    if let Some(since) = &q.since {
        filter.push_str(" AND v.last_updated >= ?");
        args.push(Arg::Text(since.clone()));
    }
    let count = (
        format!("SELECT count(*) FROM resource_versions v WHERE {filter}"),
        args.clone(),
    );
    if let Some(before) = q.before_seq {
        filter.push_str(" AND v.seq < ?");
        args.push(Arg::Int(before));
    }
    let page = format!(
        "SELECT {VERSION_COLUMNS}, v.seq FROM resource_versions v WHERE {filter} ORDER BY v.seq DESC LIMIT {}",
        q.count + 1
    );
    (count, (page, args))
}

/// Rewrites the `?` placeholders of a statement (outside quoted literals) as `$1, $2, …`.
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut quoted = false;
    let mut n = 0;
    for ch in sql.chars() {
        match ch {
            '\'' => {
                quoted = !quoted;
                out.push(ch);
            }
            '?' if !quoted => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(ch),
        }
    }
    out
}

/// How many index rows a probe counts before it calls a criterion unselective.
const PROBE_LIMIT: usize = 1000;

impl SqlBuilder<'_> {
    /// The key of an indexed parameter of a resource type.
    fn key(&self, resource_type: &str, code: &str) -> i64 {
        param_key(self.keys, resource_type, code)
    }

    /// The statement listing which of `member_types` have a current resource that
    /// references `owner_type/owner_id` through one of their compartment parameters (one
    /// index lookup per parameter key). None when no member type has such a parameter.
    pub fn compartment_types_sql(
        &self,
        owner_type: &str,
        owner_id: &str,
        member_types: &[&str],
    ) -> Option<(String, Vec<Arg>)> {
        let keys: Vec<String> = member_types
            .iter()
            .flat_map(|t| {
                sijill_fhir::definitions::compartment_params(owner_type, t)
                    .unwrap_or_default()
                    .iter()
                    .map(move |p| self.key(t, p))
            })
            .filter(|k| *k >= 0)
            .map(|k| k.to_string())
            .collect();
        if keys.is_empty() {
            return None;
        }
        Some((
            format!(
                "SELECT DISTINCT r.type FROM search_index s JOIN resources r ON r.rid = s.rid \
                 WHERE s.param IN ({}) AND s.value = ? AND s.system = ? AND NOT r.deleted",
                keys.join(",")
            ),
            vec![Arg::Text(owner_id.to_string()), Arg::Text(owner_type.to_string())],
        ))
    }

    /// A column reference the database must not use an index for, so that it follows the
    /// plan the builder chose: SQLite's `+col`; in PostgreSQL the same as an expression
    /// (`col + 0` for the integer parameter key, `col || ''` for text). Without it, a check
    /// meant to probe one resource's rows through the `rid` index may instead walk every
    /// row of the parameter in the primary key.
    fn unindexed(&self, column: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => format!("+{column}"),
            Dialect::Postgres if column.ends_with(".param") => format!("({column} + 0)"),
            Dialect::Postgres => format!("({column} || '')"),
        }
    }

    /// A join that SQLite must take in the written order (`CROSS JOIN`).
    fn ordered_join(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "CROSS JOIN",
            Dialect::Postgres => "JOIN",
        }
    }

    /// The WHERE clause of a search and its bound values.
    ///
    /// The plan is chosen here rather than left to SQLite, which has no statistics about how many
    /// resources a value matches: the criterion that matches the fewest index rows (counted by a
    /// probe bounded at `PROBE_LIMIT`) drives the query as a list of row ids, and every other
    /// criterion is checked per candidate through the `rid` indexes. When no criterion is
    /// selective (all probes reach the bound), resources are scanned in id order, which stops as
    /// soon as a page is full.
    pub fn search_sql(
        &self,
        probe: &mut dyn FnMut(&str, Vec<Arg>) -> Result<i64>,
        resource_type: &str,
        query: &SearchQuery,
        after_id: Option<&str>,
    ) -> Result<(String, Vec<Arg>)> {
        let driver = match &query.compartment {
            Some(_) => Driver::Compartment,
            None if query.criteria.iter().any(|c| c.param == "_id") => Driver::None,
            None => self.choose_driver(probe, resource_type, query)?,
        };
        let type_column = if driver == Driver::None {
            "r.type".to_string()
        } else {
            self.unindexed("r.type")
        };
        let mut sql = format!("{type_column} = ? AND NOT r.deleted");
        let mut args: Vec<Arg> = vec![resource_type.to_string().into()];
        if let Some(after) = after_id {
            sql.push_str(" AND r.id > ?");
            args.push(after.to_string().into());
        }
        for (i, c) in query.criteria.iter().enumerate() {
            let form = match driver {
                Driver::Criterion(d) if d == i => Form::Member,
                Driver::Criterion(_) => Form::Check,
                _ => Form::Exists,
            };
            self.criterion_sql(resource_type, c, "r", 1, form, &mut sql, &mut args);
        }
        if let Some(comp) = &query.compartment {
            let param_keys: Vec<String> = comp
                .params
                .iter()
                .map(|p| self.key(resource_type, p).to_string())
                .collect();
            let owners = vec!["?"; comp.owner_ids.len()].join(",");
            // `IN ()` is an error in PostgreSQL: no owner or no parameter matches nothing.
            if comp.owner_ids.is_empty() || param_keys.is_empty() {
                sql.push_str(" AND FALSE");
            } else {
                // The owner itself belongs to its compartment.
                let owner = if comp.owner_type == resource_type {
                    format!(" UNION SELECT o.rid FROM resources o WHERE o.type = ? AND o.id IN ({owners})")
                } else {
                    String::new()
                };
                sql.push_str(&format!(
                    " AND r.rid IN (SELECT s.rid FROM search_index s WHERE s.param IN ({}) AND s.value IN ({owners}) AND s.system = ?{owner})",
                    param_keys.join(",")
                ));
                args.extend(comp.owner_ids.iter().map(|id| id.clone().into()));
                args.push(comp.owner_type.clone().into());
                if !owner.is_empty() {
                    args.push(comp.owner_type.clone().into());
                    args.extend(comp.owner_ids.iter().map(|id| id.clone().into()));
                }
            }
        }
        Ok((sql, args))
    }

    /// The most selective criterion that can drive, if any matches fewer than `PROBE_LIMIT` rows.
    fn choose_driver(
        &self,
        probe: &mut dyn FnMut(&str, Vec<Arg>) -> Result<i64>,
        resource_type: &str,
        query: &SearchQuery,
    ) -> Result<Driver> {
        let mut best: Option<(usize, usize)> = None;
        for (i, c) in query.criteria.iter().enumerate() {
            if !can_drive(c) {
                continue;
            }
            let mut args = Vec::new();
            let Some(subquery) = self.rows_subquery(resource_type, c, 1, &mut args) else {
                continue;
            };
            let rows = probe(
                &format!("SELECT count(*) FROM ({subquery} LIMIT {PROBE_LIMIT}) AS probe"),
                args,
            )?;
            let rows = rows as usize;
            if rows < PROBE_LIMIT && best.is_none_or(|(_, fewest)| rows < fewest) {
                best = Some((i, rows));
            }
        }
        Ok(best.map(|(i, _)| Driver::Criterion(i)).unwrap_or(Driver::None))
    }

    /// Appends ` AND <condition>` for one criterion on the resources aliased `alias` (of
    /// `resource_type`). A chained criterion joins the referenced resources as `t{depth}`.
    #[allow(clippy::too_many_arguments)]
    fn criterion_sql(
        &self,
        resource_type: &str,
        c: &crate::query::Criterion,
        alias: &str,
        depth: usize,
        form: Form,
        sql: &mut String,
        args: &mut Vec<Arg>,
    ) {
        if form == Form::Member {
            if let Some(rows) = self.rows_subquery(resource_type, c, depth, args) {
                sql.push_str(&format!(" AND {alias}.rid IN ({rows})"));
                return;
            }
        }
        if let Some((source, reference, inner)) = &c.has {
            let key = self.key(source, reference);
            let o = format!("t{depth}");
            let mut inner_sql = String::new();
            self.criterion_sql(source, inner, &o, depth + 1, Form::Exists, &mut inner_sql, args);
            sql.push_str(&format!(
                " AND {alias}.id IN (SELECT s.value FROM search_index s JOIN resources {o} ON {o}.rid = s.rid \
                 WHERE s.param = {key} AND s.system = '{}' AND NOT {o}.deleted{inner_sql})",
                resource_type.replace('\'', "")
            ));
            return;
        }
        if let Some((target, inner)) = &c.chain {
            let key = self.key(resource_type, &c.param);
            let t = format!("t{depth}");
            let mut inner_sql = String::new();
            self.criterion_sql(target, inner, &t, depth + 1, Form::Exists, &mut inner_sql, args);
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM search_index s JOIN resources {t} ON {t}.type = s.system AND {t}.id = s.value \
                 WHERE s.rid = {alias}.rid AND {} = {key} AND {t}.type = '{}' AND NOT {t}.deleted{inner_sql})",
                self.unindexed("s.param"),
                target.replace('\'', "")
            ));
            return;
        }
        if c.param == "_id" {
            let ids: Vec<&str> = c
                .values
                .iter()
                .filter_map(|m| match m {
                    Match::Id(id) => Some(id.as_str()),
                    _ => None,
                })
                .collect();
            if ids.is_empty() {
                sql.push_str(" AND FALSE");
                return;
            }
            sql.push_str(&format!(" AND {alias}.id IN ({})", vec!["?"; ids.len()].join(",")));
            args.extend(ids.into_iter().map(|i| Arg::from(i.to_string())));
            return;
        }
        let key = self.key(resource_type, &c.param);
        let table = index_table(c.kind);
        if let Some(Match::Missing(missing)) = c.values.first() {
            let exists = if *missing { "NOT EXISTS" } else { "EXISTS" };
            sql.push_str(&format!(
                " AND {exists} (SELECT 1 FROM {table} s WHERE s.rid = {alias}.rid AND {} = {key})",
                self.unindexed("s.param")
            ));
            return;
        }
        let alternatives = self.alternatives_sql(c, args);
        // One exact (value, system) pair names a whole prefix of the primary key, so `rid`
        // is the next column: one descent to the very row, where the `rid` index reads and
        // filters every index row of the candidate. Only beside a driving list (the
        // candidates are few) and on PostgreSQL, where `OFFSET 0` keeps the check a
        // per-candidate subplan: unfenced, its planner may make the check the query's
        // driver over all of the value's rows.
        let (param, fence) = if form == Form::Check && self.dialect == Dialect::Postgres && is_keyed_exactly(c) {
            ("s.param".to_string(), " OFFSET 0")
        } else {
            (self.unindexed("s.param"), "")
        };
        sql.push_str(&format!(
            " AND {} (SELECT 1 FROM {table} s WHERE s.rid = {alias}.rid AND {param} = {key} AND ({alternatives}){fence})",
            if c.negated { "NOT EXISTS" } else { "EXISTS" },
        ));
    }

    /// The criterion's values as alternatives on an index row `s`, their values bound.
    fn alternatives_sql(&self, c: &crate::query::Criterion, args: &mut Vec<Arg>) -> String {
        let mut alternatives = Vec::new();
        for m in &c.values {
            let (clause, values) = self.match_clause(m, false);
            alternatives.push(format!("({clause})"));
            args.extend(values);
        }
        alternatives.join(" OR ")
    }

    /// A subquery listing the row ids of the resources (of `resource_type`) that match a
    /// criterion, found through the index — or None when the criterion cannot be listed that
    /// way (a negation, `:missing`, `_has`, `_id`), leaving `args` untouched. A chain lists the
    /// referenced resources that match first, then the references to them.
    fn rows_subquery(
        &self,
        resource_type: &str,
        c: &crate::query::Criterion,
        depth: usize,
        args: &mut Vec<Arg>,
    ) -> Option<String> {
        let listable = !c.negated && c.has.is_none() && c.param != "_id";
        if !listable || matches!(c.values.first(), Some(Match::Missing(_))) {
            return None;
        }
        let key = self.key(resource_type, &c.param);
        if let Some((target, inner)) = &c.chain {
            let t = format!("t{depth}");
            let mut inner_sql = String::new();
            self.criterion_sql(target, inner, &t, depth + 1, Form::Member, &mut inner_sql, args);
            return Some(format!(
                "SELECT s.rid FROM resources {t} {} search_index s \
                 ON s.param = {key} AND s.value = {t}.id AND s.system = {t}.type \
                 WHERE {} = '{}' AND NOT {t}.deleted{inner_sql}",
                self.ordered_join(),
                self.unindexed(&format!("{t}.type")),
                target.replace('\'', "")
            ));
        }
        let table = index_table(c.kind);
        let alternatives = self.alternatives_sql(c, args);
        Some(format!(
            "SELECT s.rid FROM {table} s WHERE s.param = {key} AND ({alternatives})"
        ))
    }

    /// The SQL condition for one searched value on an index row `s`, with its bound values.
    fn match_clause(&self, m: &Match, in_composite: bool) -> (String, Vec<Arg>) {
        if let Match::Composite { first, second } = m {
            let (c1, mut args) = match first.as_ref() {
                Match::Token {
                    system: None,
                    code: Some(code),
                } => ("s.c1_value = ?".to_string(), vec![code.clone()]),
                Match::Token {
                    system: Some(s),
                    code: Some(code),
                } => (
                    "s.c1_value = ? AND s.c1_system = ?".to_string(),
                    vec![code.clone(), s.clone()],
                ),
                Match::Token {
                    system: Some(s),
                    code: None,
                } => ("s.c1_system = ?".to_string(), vec![s.clone()]),
                _ => ("TRUE".to_string(), vec![]),
            };
            let mut bound: Vec<Arg> = args.drain(..).map(Arg::from).collect();
            let (c2, more) = self.match_clause(second, true);
            bound.extend(more);
            return (format!("({c1}) AND ({c2})"), bound);
        }
        let (clause, values): (&str, Vec<String>) = match m {
            Match::Token {
                system: None,
                code: Some(code),
            } => (concat!("s.value = ? AND ", is_a_code!()), vec![code.clone()]),
            Match::Token {
                system: Some(s),
                code: Some(text),
            } if s == crate::index::TOKEN_TEXT => (
                "s.system = '#text' AND s.value >= ? AND s.value < ?",
                vec![text.clone(), format!("{text}\u{10FFFF}")],
            ),
            Match::Token {
                system: Some(s),
                code: Some(code),
            } if s.is_empty() => ("s.value = ? AND s.system = ''", vec![code.clone()]),
            Match::Token {
                system: Some(s),
                code: Some(code),
            } => ("s.value = ? AND s.system = ?", vec![code.clone(), s.clone()]),
            Match::Token {
                system: Some(s),
                code: None,
            } => ("s.system = ?", vec![s.clone()]),
            Match::Token {
                system: None,
                code: None,
            } => ("TRUE", vec![]),
            Match::String { value, exact: false } => (
                "s.value >= ? AND s.value < ?",
                vec![value.clone(), format!("{value}\u{10FFFF}")],
            ),
            Match::String { value, exact: true } => ("s.exact = ?", vec![value.clone()]),
            Match::Contains(value) => (
                "s.value LIKE ? ESCAPE '\\'",
                vec![format!(
                    "%{}%",
                    value.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
                )],
            ),
            Match::UriBelow(value) => (
                "s.value >= ? AND s.value < ?",
                vec![value.clone(), format!("{value}\u{10FFFF}")],
            ),
            Match::UriAbove(value) => (
                "substr(CAST(? AS TEXT), 1, length(s.value)) = s.value",
                vec![value.clone()],
            ),
            Match::Reference {
                resource_type: Some(t),
                id,
            } => ("s.value = ? AND s.system = ?", vec![id.clone(), t.clone()]),
            Match::Reference {
                resource_type: None,
                id,
            } => ("s.value = ?", vec![id.clone()]),
            Match::Uri(u) | Match::Id(u) => ("s.value = ?", vec![u.clone()]),
            Match::Missing(_) | Match::Composite { .. } => ("FALSE", vec![]),
            Match::Number {
                prefix,
                value,
                low,
                high,
                system,
                code,
            } => {
                let (clause, binds) = number_clause(*prefix);
                let mut bound: Vec<Arg> = binds
                    .iter()
                    .map(|b| {
                        Arg::Real(match b {
                            NumberBound::Value => *value,
                            NumberBound::Low => *low,
                            NumberBound::High => *high,
                            NumberBound::ApproxLow => value - value.abs() * 0.1,
                            NumberBound::ApproxHigh => value + value.abs() * 0.1,
                        })
                    })
                    .collect();
                // PostgreSQL keeps a composite's numeric component in its own typed columns.
                let clause = if in_composite && self.dialect == Dialect::Postgres {
                    clause
                        .replace("s.low", "s.low_number")
                        .replace("s.high", "s.high_number")
                } else {
                    clause.to_string()
                };
                let mut clause = format!("({clause})");
                if let Some(system) = system {
                    clause.push_str(" AND s.system = ?");
                    bound.push(Arg::Text(system.clone()));
                }
                if let Some(code) = code {
                    clause.push_str(" AND s.code = ?");
                    bound.push(Arg::Text(code.clone()));
                }
                return (format!("({clause})"), bound);
            }
            Match::Date { prefix, low, high } => {
                let (clause, binds) = date_clause(*prefix);
                (
                    clause,
                    binds
                        .iter()
                        .map(|is_high| if *is_high { high.clone() } else { low.clone() })
                        .collect(),
                )
            }
        };
        (clause.to_string(), values.into_iter().map(Arg::from).collect())
    }

    /// The ORDER BY of an ids statement: the sort keys in order, ties broken by id.
    pub fn ids_order(&self, resource_type: &str, sort: &[SortKey]) -> String {
        let mut order: Vec<String> = sort.iter().map(|k| self.sort_expression(resource_type, k)).collect();
        order.push("r.id".into());
        order.join(", ")
    }

    /// The ORDER BY expression of one sort key: the smallest value of the resource for an
    /// ascending sort, the largest for a descending one (dates: the start or end of the range).
    pub fn sort_expression(&self, resource_type: &str, key: &SortKey) -> String {
        if key.param == "_id" {
            return format!("r.id {}", if key.descending { "DESC" } else { "ASC" });
        }
        let k = self.key(resource_type, &key.param);
        let (table, column) = match key.kind {
            SearchParamType::Date => ("search_date", if key.descending { "high" } else { "low" }),
            SearchParamType::Number | SearchParamType::Quantity => {
                ("search_number", if key.descending { "high" } else { "low" })
            }
            _ => ("search_index", "value"),
        };
        let not_text = if table == "search_index" {
            concat!(" AND ", is_a_code!())
        } else {
            ""
        };
        let (agg, dir) = if key.descending {
            ("max", "DESC")
        } else {
            ("min", "ASC")
        };
        format!(
            "(SELECT {agg}(s.{column}) FROM {table} s WHERE s.rid = r.rid AND s.param = {k}{not_text}) {dir} NULLS LAST"
        )
    }
}

/// What drives a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// A scan of the type's resources in id order.
    None,
    /// The compartment's owner reference.
    Compartment,
    /// The criterion at this position.
    Criterion(usize),
}

/// How a criterion is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `rid IN (rows that match)`: a list that drives the query.
    Member,
    /// `EXISTS (a matching row of this resource)`: checked per candidate.
    Exists,
    /// [`Form::Exists`] for the candidates of another criterion's list, which may look
    /// the very row up in the primary key (see `is_keyed_exactly`).
    Check,
}

/// Whether a criterion can be written as a list of the rows it matches found through an
/// index (not a negation, a `:missing`, a `_has`, or a chain ending in one of those).
/// Ranges must bound the start of the stored range (the index's order), and substring
/// matches cannot use an index at all.
fn can_drive(c: &crate::query::Criterion) -> bool {
    let plain = !c.negated && c.has.is_none();
    let indexed = c.values.iter().all(|m| match m {
        Match::Date { prefix, .. } | Match::Number { prefix, .. } => {
            matches!(prefix, Prefix::Eq | Prefix::Sa | Prefix::Lt | Prefix::Le)
        }
        Match::Missing(_) | Match::Contains(_) | Match::UriAbove(_) => false,
        _ => true,
    });
    plain && indexed && c.chain.as_ref().is_none_or(|(_, inner)| can_drive(inner))
}

/// Whether a criterion is one token or reference with both its value and its system
/// (or target type) given: a key prefix `(param, value, system)` of `search_index`.
fn is_keyed_exactly(c: &crate::query::Criterion) -> bool {
    let [only] = c.values.as_slice() else {
        return false;
    };
    index_table(c.kind) == "search_index"
        && match only {
            Match::Token {
                system: Some(s),
                code: Some(_),
            } => s != crate::index::TOKEN_TEXT,
            Match::Reference {
                resource_type: Some(_), ..
            } => true,
            _ => false,
        }
}

/// The index table that holds a parameter type's rows.
fn index_table(kind: SearchParamType) -> &'static str {
    match kind {
        SearchParamType::Date => "search_date",
        SearchParamType::Number | SearchParamType::Quantity => "search_number",
        SearchParamType::Composite => "search_composite",
        _ => "search_index",
    }
}

/// The SQL condition on a date row `s` (columns low, high) for a prefix, and for each
/// value it binds whether that is the searched high bound (true) or low bound (false).
fn date_clause(prefix: Prefix) -> (&'static str, &'static [bool]) {
    match prefix {
        // `s.low <= ?` is implied by `s.high <= ?`; it bounds the index range scanned.
        Prefix::Eq => ("s.low >= ? AND s.low <= ? AND s.high <= ?", &[false, true, true]),
        Prefix::Ne => ("NOT (s.low >= ? AND s.high <= ?)", &[false, true]),
        Prefix::Gt => ("s.high > ?", &[true]),
        Prefix::Lt => ("s.low < ?", &[false]),
        Prefix::Ge => ("s.high > ? OR (s.low >= ? AND s.high <= ?)", &[true, false, true]),
        Prefix::Le => ("s.low < ? OR (s.low >= ? AND s.high <= ?)", &[false, false, true]),
        Prefix::Sa => ("s.low > ?", &[true]),
        Prefix::Eb => ("s.high < ?", &[false]),
        Prefix::Ap => ("s.low <= ? AND s.high >= ?", &[true, false]),
    }
}

/// Which searched number a placeholder of a number clause binds.
enum NumberBound {
    Value,
    Low,
    High,
    ApproxLow,
    ApproxHigh,
}

/// The SQL condition on a number row `s` (columns low, high) for a prefix, and what each
/// placeholder binds. `eq` honours the precision of the searched value.
fn number_clause(prefix: Prefix) -> (&'static str, &'static [NumberBound]) {
    use NumberBound::*;
    match prefix {
        Prefix::Eq => ("s.low >= ? AND s.low < ? AND s.high < ?", &[Low, High, High]),
        Prefix::Ne => ("NOT (s.low >= ? AND s.high < ?)", &[Low, High]),
        Prefix::Gt => ("s.high > ?", &[Value]),
        Prefix::Lt => ("s.low < ?", &[Value]),
        // ge and le include what eq matches (the precision range of the value).
        Prefix::Ge => ("s.high >= ?", &[Low]),
        Prefix::Le => ("s.low < ?", &[High]),
        // sa / eb: the whole stored range starts after / ends before the value.
        Prefix::Sa => ("s.low > ?", &[Value]),
        Prefix::Eb => ("s.high < ?", &[Value]),
        Prefix::Ap => ("s.high >= ? AND s.low <= ?", &[ApproxLow, ApproxHigh]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statement a search writes, with `probe` as the count each criterion's probe finds
    /// (in the query's order).
    fn written(dialect: Dialect, query: &[(&str, &str)], probes: &[i64]) -> String {
        let mut keys = ParamKeys::default();
        for (code, key) in [("subject", 10), ("code", 20), ("date", 30)] {
            let (t, c) = crate::index::params_for("Observation")
                .and_then(|p| p.get_key_value(code))
                .map(|(c, _)| ("Observation", *c))
                .expect("an Observation parameter");
            keys.insert((t, c), key);
        }
        let pairs: Vec<(String, String)> = query.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let query = SearchQuery::parse("Observation", &pairs).expect("a valid query");
        let mut probes = probes.iter();
        let mut probe = |_: &str, _: Vec<Arg>| Ok(*probes.next().expect("one probe per criterion"));
        let builder = SqlBuilder { dialect, keys: &keys };
        builder
            .search_sql(&mut probe, "Observation", &query, None)
            .expect("a statement")
            .0
    }

    const QUERY: [(&str, &str); 2] = [("subject", "Patient/p1"), ("code", "http://loinc.org|4548-4")];

    #[test]
    fn an_exact_code_beside_a_driving_list_is_looked_up_in_the_primary_key_on_postgres() {
        let sql = written(Dialect::Postgres, &QUERY, &[20, PROBE_LIMIT as i64]);
        assert!(
            sql.contains("r.rid IN (SELECT s.rid FROM search_index s WHERE s.param = 10"),
            "{sql}"
        );
        assert!(
            sql.contains("s.rid = r.rid AND s.param = 20 AND ((s.value = ? AND s.system = ?)) OFFSET 0)"),
            "{sql}"
        );
    }

    #[test]
    fn without_a_driving_list_every_check_goes_through_the_rid_index() {
        let sql = written(Dialect::Postgres, &QUERY, &[PROBE_LIMIT as i64, PROBE_LIMIT as i64]);
        assert!(!sql.contains("OFFSET 0"), "{sql}");
        assert!(
            sql.contains("(s.param + 0) = 10") && sql.contains("(s.param + 0) = 20"),
            "{sql}"
        );
    }

    #[test]
    fn a_code_without_its_system_and_the_embedded_store_keep_the_rid_index() {
        let any_system = [("subject", "Patient/p1"), ("code", "4548-4")];
        let sql = written(Dialect::Postgres, &any_system, &[20, PROBE_LIMIT as i64]);
        assert!(sql.contains("(s.param + 0) = 20") && !sql.contains("OFFSET 0"), "{sql}");
        let sql = written(Dialect::Sqlite, &QUERY, &[20, PROBE_LIMIT as i64]);
        assert!(sql.contains("+s.param = 20") && !sql.contains("OFFSET 0"), "{sql}");
    }
}
