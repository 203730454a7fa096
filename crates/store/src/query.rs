//! Search criteria: parsed and checked against what the index supports, before any SQL.

use sijill_fhir::definitions::{self, SearchParamType};

use crate::index::{self, normalize_string};
use crate::{Result, StoreError};

/// Most values one parameter may list (comma-separated OR).
const MAX_VALUES: usize = 100;
/// Most values one `:contains` parameter may list (each is a scan of the parameter's rows).
const MAX_CONTAINS: usize = 10;

/// Refuses a string value that normalisation leaves empty (it would match everything).
fn non_empty(name: &str, normalised: String) -> Result<String> {
    if normalised.is_empty() {
        Err(StoreError::Invalid(format!(
            "Search parameter '{name}' has nothing to search for"
        )))
    } else {
        Ok(normalised)
    }
}

/// One value of a criterion, already normalised for its parameter type.
#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    /// `_id`.
    Id(String),
    /// Token `code`, `system|code`, `|code` (system must be absent), `system|`.
    Token {
        /// None: any system; Some(""): no system; Some(s): that system.
        system: Option<String>,
        /// None: any code of the system.
        code: Option<String>,
    },
    /// String, starts-with on the normalised form, or exact.
    String {
        /// The normalised (or exact) value.
        value: String,
        /// `:exact` (case- and accent-sensitive equality)?
        exact: bool,
    },
    /// String `:contains` (normalised value anywhere in the text).
    Contains(String),
    /// Uri `:below` (the value is a prefix of the stored uri).
    UriBelow(String),
    /// Uri `:above` (the stored uri is a prefix of the value).
    UriAbove(String),
    /// Reference to `Type/id` (type None: any type).
    Reference {
        /// The target type when known.
        resource_type: Option<String>,
        /// The target id.
        id: String,
    },
    /// URI equality.
    Uri(String),
    /// A number or quantity with a prefix: `low`/`high` are the bounds the value's
    /// precision implies (`5.4` → 5.35 … 5.45), `value` the number as written.
    Number {
        /// The comparison.
        prefix: Prefix,
        /// The number as written.
        value: f64,
        /// Lower bound implied by its precision.
        low: f64,
        /// Upper bound implied by its precision.
        high: f64,
        /// Unit system (quantities: `system|code`).
        system: Option<String>,
        /// Unit code (matches a code or, without system, a unit).
        code: Option<String>,
    },
    /// A composite value `first$second`, both found on the same element.
    Composite {
        /// The first component (a token).
        first: Box<Match>,
        /// The second component.
        second: Box<Match>,
    },
    /// `:missing=true` (no value at all) or `:missing=false` (some value).
    Missing(bool),
    /// A date with a comparison prefix; `low`/`high` are the first and last millisecond the
    /// searched value covers.
    Date {
        /// eq, ne, gt, lt, ge, le, sa, eb or ap.
        prefix: Prefix,
        /// First millisecond.
        low: String,
        /// Last millisecond.
        high: String,
    },
}

/// The comparison prefixes of date, number and quantity search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// The value's range lies within the searched range.
    Eq,
    /// Not eq.
    Ne,
    /// The value's range goes beyond the end of the searched range.
    Gt,
    /// The value's range starts before the searched range.
    Lt,
    /// gt or eq.
    Ge,
    /// lt or eq.
    Le,
    /// Starts after the searched range.
    Sa,
    /// Ends before the searched range.
    Eb,
    /// Overlaps the searched range widened by 10% of its distance from now.
    Ap,
}

/// One parameter of a query: the values are alternatives (OR).
#[derive(Debug, Clone, PartialEq)]
pub struct Criterion {
    /// The parameter's code.
    pub param: String,
    /// The alternatives.
    pub values: Vec<Match>,
    /// `:not` on a token: none of the values may match.
    pub negated: bool,
    /// The parameter's type (decides where its index rows live).
    pub kind: SearchParamType,
    /// A chained search (`subject:Patient.identifier=…`): the target type and the
    /// criterion the referenced resource must meet; `param` is then the reference.
    pub chain: Option<(String, Box<Criterion>)>,
    /// Reverse chaining (`_has:Observation:patient:code=…`): resources of the source type
    /// that meet the inner criterion and point here through the reference parameter.
    pub has: Option<(String, String, Box<Criterion>)>,
}

/// A query: every criterion must hold (AND).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchQuery {
    /// The criteria.
    pub criteria: Vec<Criterion>,
    /// Only resources in this compartment.
    pub compartment: Option<Compartment>,
}

/// One key of `_sort`: a parameter, ascending unless `descending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The parameter (`_id`, `_lastUpdated` or any indexed parameter of the type).
    pub param: String,
    /// `-param`.
    pub descending: bool,
    /// The parameter's type (decides which index rows give the key).
    pub kind: SearchParamType,
}

/// Most keys one `_sort` may list.
const MAX_SORT_KEYS: usize = 5;

impl SortKey {
    /// Parses `_sort=a,-b` for `resource_type`.
    pub fn parse_list(resource_type: &str, value: &str) -> Result<Vec<SortKey>> {
        let keys: Vec<&str> = value.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
        if keys.is_empty() || keys.len() > MAX_SORT_KEYS {
            return Err(StoreError::Invalid(format!(
                "_sort takes 1 to {MAX_SORT_KEYS} parameters"
            )));
        }
        keys.into_iter()
            .map(|k| {
                let (param, descending) = match k.strip_prefix('-') {
                    Some(p) => (p, true),
                    None => (k, false),
                };
                let kind = if param == "_id" {
                    SearchParamType::Token
                } else {
                    index::param(resource_type, param)
                        .filter(|p| p.kind != SearchParamType::Composite)
                        .map(|p| p.kind)
                        .ok_or_else(|| {
                            StoreError::Invalid(format!(
                                "_sort: '{param}' is not a sortable parameter of {resource_type}"
                            ))
                        })?
                };
                Ok(SortKey {
                    param: param.to_string(),
                    descending,
                    kind,
                })
            })
            .collect()
    }
}

/// A compartment restriction: the resource refers to the owner through one of `params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compartment {
    /// Owner type, e.g. `Patient`.
    pub owner_type: String,
    /// Owner ids: a member of any of these compartments matches (none: nothing matches).
    pub owner_ids: Vec<String>,
    /// The reference parameters that link a member to the owner.
    pub params: Vec<String>,
}

impl SearchQuery {
    /// Restricts the query to the compartment of `owner_type/owner_id`. None when the
    /// resource type is not a member of that compartment.
    pub fn in_compartment(mut self, owner_type: &str, owner_id: &str, resource_type: &str) -> Option<SearchQuery> {
        let params = definitions::compartment_params(owner_type, resource_type)?;
        self.compartment = Some(Compartment {
            owner_type: owner_type.to_string(),
            owner_ids: vec![owner_id.to_string()],
            params: params.iter().map(|p| p.to_string()).collect(),
        });
        Some(self)
    }
}

impl SearchQuery {
    /// Parses `(name, value)` pairs for `resource_type`. Parameters that control the result
    /// (`_count`, `_sort`, ...) must be removed by the caller first. Unknown or unsupported
    /// parameters and modifiers are errors that name the parameter.
    pub fn parse(resource_type: &str, pairs: &[(String, String)]) -> Result<SearchQuery> {
        let mut criteria = Vec::new();
        for (name, raw) in pairs {
            if let Some(rest) = name.strip_prefix("_has:") {
                criteria.push(parse_has(resource_type, name, rest, raw)?);
                continue;
            }
            if let Some((head, rest)) = name.split_once('.') {
                criteria.push(parse_chain(resource_type, name, head, rest, raw)?);
                continue;
            }
            let (code, modifier) = match name.split_once(':') {
                Some((c, m)) => (c, Some(m)),
                None => (name.as_str(), None),
            };
            let values = split_values(raw);
            if values.len() > MAX_VALUES {
                return Err(StoreError::Invalid(format!(
                    "Search parameter '{name}' lists more than {MAX_VALUES} values"
                )));
            }
            if values.iter().any(String::is_empty) {
                return Err(StoreError::Invalid(format!(
                    "Search parameter '{name}' has an empty value"
                )));
            }
            if code == "_id" {
                if modifier.is_some() {
                    return Err(unsupported_modifier(name));
                }
                criteria.push(Criterion {
                    param: code.to_string(),
                    values: values.into_iter().map(Match::Id).collect(),
                    negated: false,
                    kind: SearchParamType::Token,
                    chain: None,
                    has: None,
                });
                continue;
            }
            let Some(p) = index::param(resource_type, code) else {
                let known = definitions::search_params_for(resource_type).any(|d| d.code == code);
                return Err(StoreError::Invalid(if known {
                    format!("Search parameter '{code}' of {resource_type} is not supported by this server yet")
                } else {
                    format!("Unknown search parameter '{code}' for resource type {resource_type}")
                }));
            };
            let mut negated = false;
            let mut parsed = Vec::with_capacity(values.len());
            let value_count = values.len();
            for v in values {
                // Only tokens, quantities and composites split on `|` / `$`; the others see
                // the value without escapes.
                let v = match p.kind {
                    SearchParamType::Token | SearchParamType::Quantity | SearchParamType::Composite => v,
                    _ => unescape(&v),
                };
                if p.kind == SearchParamType::Token && matches!(modifier, Some("in") | Some("not-in")) {
                    negated = modifier == Some("not-in");
                    parsed.extend(value_set_codes(name, &unescape(&v), parsed.len())?);
                    continue;
                }
                parsed.push(match (p.kind, modifier) {
                    (_, Some("missing")) => match v.as_str() {
                        "true" => Match::Missing(true),
                        "false" => Match::Missing(false),
                        _ => {
                            return Err(StoreError::Invalid(format!(
                                "Search parameter '{name}' takes true or false"
                            )))
                        }
                    },
                    (SearchParamType::Token, Some("of-type")) => {
                        let parts: Vec<&str> = v.splitn(3, '|').collect();
                        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
                            return Err(StoreError::Invalid(format!(
                                "Search parameter '{name}' takes type-system|type-code|value"
                            )));
                        }
                        Match::Token {
                            system: Some(index::TOKEN_OF_TYPE.to_string()),
                            code: Some(unescape(&v)),
                        }
                    }
                    (SearchParamType::Token, Some("text")) => Match::Token {
                        system: Some(index::TOKEN_TEXT.to_string()),
                        code: Some(non_empty(name, normalize_string(&v))?),
                    },
                    (SearchParamType::Token, None | Some("not")) => {
                        negated = modifier.is_some();
                        parse_token(&v)
                    }
                    (SearchParamType::String, None) => Match::String {
                        value: non_empty(name, normalize_string(&v))?,
                        exact: false,
                    },
                    (SearchParamType::String, Some("exact")) => Match::String { value: v, exact: true },
                    (SearchParamType::String, Some("contains")) if value_count > MAX_CONTAINS => {
                        return Err(StoreError::Invalid(format!(
                            "Search parameter '{name}' lists more than {MAX_CONTAINS} values"
                        )))
                    }
                    (SearchParamType::String, Some("contains")) => {
                        Match::Contains(non_empty(name, normalize_string(&v))?)
                    }
                    (SearchParamType::Uri, Some("below")) => Match::UriBelow(v),
                    (SearchParamType::Uri, Some("above")) => Match::UriAbove(v),
                    (SearchParamType::Uri, None) => Match::Uri(v),
                    (SearchParamType::Date, None) => parse_date(name, &v)?,
                    (SearchParamType::Composite, None) => parse_composite(name, &v, p)?,
                    (SearchParamType::Number, None) => parse_number(name, &v, false)?,
                    (SearchParamType::Quantity, None) => parse_number(name, &v, true)?,
                    (SearchParamType::Reference, None) => parse_reference(&v, None, p.single_target())?,
                    (SearchParamType::Reference, Some(ty)) if definitions::is_resource_type(ty) => {
                        parse_reference(&v, Some(ty), p.single_target())?
                    }
                    _ => return Err(unsupported_modifier(name)),
                });
            }
            criteria.push(Criterion {
                param: code.to_string(),
                values: parsed,
                negated,
                kind: p.kind,
                chain: None,
                has: None,
            });
        }
        Ok(SearchQuery {
            criteria,
            compartment: None,
        })
    }
}

/// Most links in one chain (`a.b.c.d=` has three).
const MAX_CHAIN: usize = 3;

/// `head.rest=value`: `head` is a reference parameter (optionally `:Type`), `rest` a
/// parameter of the referenced type, itself possibly chained.
fn parse_chain(resource_type: &str, name: &str, head: &str, rest: &str, raw: &str) -> Result<Criterion> {
    if name.matches('.').count() > MAX_CHAIN {
        return Err(StoreError::Invalid(format!(
            "Search parameter '{name}' chains more than {MAX_CHAIN} links"
        )));
    }
    let (code, target) = match head.split_once(':') {
        Some((c, t)) => (c, Some(t)),
        None => (head, None),
    };
    let p = index::param(resource_type, code)
        .filter(|p| p.kind == SearchParamType::Reference)
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "'{code}' in '{name}' is not a reference parameter of {resource_type}"
            ))
        })?;
    let target = match target.or_else(|| p.single_target()) {
        Some(t) if definitions::is_resource_type(t) => t.to_string(),
        Some(t) => return Err(StoreError::Invalid(format!("'{t}' in '{name}' is not a resource type"))),
        None => {
            return Err(StoreError::Invalid(format!(
                "'{code}' of {resource_type} can point to several types: name one, as in '{code}:Patient.{rest}'"
            )))
        }
    };
    let inner = SearchQuery::parse(&target, &[(rest.to_string(), raw.to_string())])?;
    let Some(inner) = inner.criteria.into_iter().next() else {
        return Err(StoreError::Invalid(format!(
            "Search parameter '{name}' has nothing to chain to"
        )));
    };
    Ok(Criterion {
        param: code.to_string(),
        values: Vec::new(),
        negated: false,
        kind: SearchParamType::Reference,
        chain: Some((target, Box::new(inner))),
        has: None,
    })
}

/// `_has:Source:reference:parameter=value` (the inner parameter may itself be `_has:…`).
fn parse_has(resource_type: &str, name: &str, rest: &str, raw: &str) -> Result<Criterion> {
    if name.matches("_has:").count() > MAX_CHAIN {
        return Err(StoreError::Invalid(format!(
            "'{name}' nests _has more than {MAX_CHAIN} times"
        )));
    }
    let mut parts = rest.splitn(3, ':');
    let (Some(source), Some(reference), Some(inner_name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(StoreError::Invalid(format!(
            "'{name}' is not _has:Type:reference:parameter"
        )));
    };
    if !definitions::is_resource_type(source) {
        return Err(StoreError::Invalid(format!(
            "'{source}' in '{name}' is not a resource type"
        )));
    }
    let points_here = index::param(source, reference).is_some_and(|p| {
        p.kind == SearchParamType::Reference
            && (p.targets.contains(&resource_type) || p.single_target() == Some(resource_type) || p.targets.is_empty())
    });
    if !points_here {
        return Err(StoreError::Invalid(format!(
            "'{reference}' in '{name}' is not a reference from {source} to {resource_type}"
        )));
    }
    let inner = SearchQuery::parse(source, &[(inner_name.to_string(), raw.to_string())])?;
    let Some(inner) = inner.criteria.into_iter().next() else {
        return Err(StoreError::Invalid(format!("'{name}' has no parameter to test")));
    };
    Ok(Criterion {
        param: "_has".to_string(),
        values: Vec::new(),
        negated: false,
        kind: SearchParamType::Reference,
        chain: None,
        has: Some((source.to_string(), reference.to_string(), Box::new(inner))),
    })
}

fn unsupported_modifier(name: &str) -> StoreError {
    StoreError::Invalid(format!("Modifier in search parameter '{name}' is not supported"))
}

/// Splits a parameter value on unescaped commas and removes the `\` escapes.
fn split_values(raw: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            // `\,` is a comma inside a value; other escapes (`\|`, `\$`, `\\`) stay for
            // the parsers that split on those characters.
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), out.last_mut()) {
                    if n != ',' {
                        last.push('\\');
                    }
                    last.push(n);
                }
            }
            ',' => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// The prefix at the start of a value, and the rest.
fn split_prefix(v: &str) -> (Prefix, &str) {
    const PREFIXES: [(&str, Prefix); 9] = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
    PREFIXES
        .iter()
        .find_map(|(p, k)| v.strip_prefix(p).map(|rest| (*k, rest)))
        .unwrap_or((Prefix::Eq, v))
}

fn parse_number(name: &str, v: &str, quantity: bool) -> Result<Match> {
    let (prefix, rest) = split_prefix(v);
    let mut parts = rest.splitn(3, '|');
    let number = parts.next().unwrap_or("");
    let (system, code) = match (quantity, parts.next(), parts.next()) {
        (true, Some(system), Some(code)) => (
            (!system.is_empty()).then(|| system.to_string()),
            (!code.is_empty()).then(|| code.to_string()),
        ),
        (_, None, None) => (None, None),
        _ => {
            return Err(StoreError::Invalid(format!(
                "Search parameter '{name}' takes [prefix]number{}",
                if quantity { "[|system|code]" } else { "" }
            )))
        }
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && !number.contains(['e', 'E']) && number.len() <= 40)
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "Search parameter '{name}': '{}' is not a number",
                number.chars().take(40).collect::<String>()
            ))
        })?;
    // The bounds of the precision, computed on integers so that 5.4 gives exactly the
    // doubles of 5.35 and 5.45 (subtracting 0.05 in floating point would not).
    let decimals = number.split_once('.').map_or(0, |(_, d)| d.len()).min(15) as i32;
    let scale = 10f64.powi(decimals + 1);
    let scaled = (value * scale).round();
    Ok(Match::Number {
        prefix,
        value,
        low: (scaled - 5.0) / scale,
        high: (scaled + 5.0) / scale,
        system,
        code,
    })
}

fn parse_composite(name: &str, v: &str, p: &index::IndexedParam) -> Result<Match> {
    let (Some((a, b)), [first, second]) = (split_unescaped(v, '$'), p.components.as_slice()) else {
        return Err(StoreError::Invalid(format!(
            "Search parameter '{name}' takes first$second"
        )));
    };
    let component = |part: &index::IndexedParam, text: &str| -> Result<Match> {
        Ok(match part.kind {
            SearchParamType::Token => parse_token(text),
            SearchParamType::Number => parse_number(name, text, false)?,
            SearchParamType::Quantity => parse_number(name, text, true)?,
            SearchParamType::Date => parse_date(name, text)?,
            SearchParamType::String => Match::String {
                value: non_empty(name, normalize_string(text))?,
                exact: false,
            },
            SearchParamType::Reference => parse_reference(text, None, part.single_target())?,
            _ => Match::Uri(text.to_string()),
        })
    };
    if first.kind != SearchParamType::Token {
        return Err(StoreError::Invalid(format!(
            "Search parameter '{name}' is not supported by this server yet"
        )));
    }
    Ok(Match::Composite {
        first: Box::new(component(first, a)?),
        second: Box::new(component(second, b)?),
    })
}

fn parse_date(name: &str, v: &str) -> Result<Match> {
    let (prefix, rest) = split_prefix(v);
    let (low, high) = crate::time_fmt::date_range(rest).ok_or_else(|| {
        StoreError::Invalid(format!(
            "Search parameter '{name}': '{}' is not a date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime, optionally \
             after a prefix such as ge)",
            v.chars().take(60).collect::<String>()
        ))
    })?;
    let (low, high) = if prefix == Prefix::Ap {
        widen_by_distance_from_now(&low, &high)
    } else {
        (low, high)
    };
    Ok(Match::Date { prefix, low, high })
}

/// `ap`: the searched range widened on both sides by 10% of its distance from now.
fn widen_by_distance_from_now(low: &str, high: &str) -> (String, String) {
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;
    let parse = |s: &str| OffsetDateTime::parse(s, &Rfc3339).ok();
    let (Some(l), Some(h)) = (parse(low), parse(high)) else {
        return (low.to_string(), high.to_string());
    };
    let now = OffsetDateTime::now_utc();
    let distance = |t: OffsetDateTime| -> time::Duration { (now - t).abs() };
    let gap = distance(l).max(distance(h)) / 10;
    let stored = |t: OffsetDateTime| t.format(&Rfc3339).ok().and_then(|s| crate::parse_instant(&s));
    let (Some(wide_low), Some(wide_high)) = (l.checked_sub(gap), h.checked_add(gap)) else {
        return (low.to_string(), high.to_string());
    };
    match (stored(wide_low), stored(wide_high)) {
        (Some(a), Some(b)) => (a, b),
        _ => (low.to_string(), high.to_string()),
    }
}

/// Splits at the first `sep` that is not escaped with `\`.
fn split_unescaped(v: &str, sep: char) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, c) in v.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            c if c == sep && !escaped => return Some((&v[..i], &v[i + c.len_utf8()..])),
            _ => escaped = false,
        }
    }
    None
}

/// A value made safe to place in a search parameter: the separators `\`, `,`, `|` and `$`
/// escaped with `\` (what [`SearchQuery::parse`] undoes).
pub fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | ',' | '|' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Removes the `\` escapes of `|`, `$` and `\`.
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('|' | '$' | '\\')) => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Most codes `:in` / `:not-in` may expand to in one parameter.
const MAX_VALUE_SET_CODES: usize = 10_000;

/// The codes of a value set of the core package, as token matches (`url` may carry a
/// `|version`, which must then be the package's 4.0.1).
fn value_set_codes(name: &str, url: &str, already: usize) -> Result<Vec<Match>> {
    let (canonical, version) = url.split_once('|').unwrap_or((url, ""));
    let known = definitions::value_set(canonical).filter(|_| version.is_empty() || version == "4.0.1");
    let Some(set) = known else {
        return Err(StoreError::Invalid(format!(
            "Search parameter '{name}': the value set '{}' is not known here (the value sets of the FHIR R4 core package are)",
            url.chars().take(200).collect::<String>()
        )));
    };
    if already + set.codes.len() > MAX_VALUE_SET_CODES {
        return Err(StoreError::Invalid(format!(
            "Search parameter '{name}' expands to more than {MAX_VALUE_SET_CODES} codes"
        )));
    }
    Ok(set
        .codes
        .iter()
        .map(|(system, code)| Match::Token {
            system: Some(system.to_string()),
            code: Some(code.to_string()),
        })
        .collect())
}

fn parse_token(v: &str) -> Match {
    match split_unescaped(v, '|') {
        None => Match::Token {
            system: None,
            code: Some(unescape(v)),
        },
        Some((system, "")) => Match::Token {
            system: Some(unescape(system)),
            code: None,
        },
        Some((system, code)) => Match::Token {
            system: Some(unescape(system)),
            code: Some(unescape(code)),
        },
    }
}

fn parse_reference(v: &str, modifier_type: Option<&str>, single_target: Option<&str>) -> Result<Match> {
    // An absolute URL (of another server; the API strips its own base first) matches the
    // references that name that URL.
    if v.contains("://") {
        return Ok(Match::Reference {
            resource_type: None,
            id: v.to_string(),
        });
    }
    let parts: Vec<&str> = v.trim_end_matches('/').rsplit('/').collect();
    let (ty, id) = match parts.as_slice() {
        [id] => (modifier_type.map(str::to_string), *id),
        [id, ty, ..] if definitions::is_resource_type(ty) => (Some(ty.to_string()), *id),
        _ => {
            return Err(StoreError::Invalid(format!(
                "Reference search value '{v}' is not Type/id, id or a URL"
            )))
        }
    };
    let ty = ty.or_else(|| single_target.map(str::to_string));
    Ok(Match::Reference {
        resource_type: ty,
        id: id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(rt: &str, pairs: &[(&str, &str)]) -> Result<SearchQuery> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        SearchQuery::parse(rt, &pairs)
    }

    #[test]
    fn escaped_values_parse_back_to_themselves() {
        assert_eq!(escape_value(r"a,b|c$d\e"), r"a\,b\|c\$d\\e");
        let q = SearchQuery::parse(
            "Patient",
            &[(
                "identifier".into(),
                format!("{}|{}", escape_value("urn:x|y"), escape_value("1,2")),
            )],
        )
        .unwrap();
        assert_eq!(q.criteria[0].values.len(), 1, "one value, not two: {q:?}");
    }

    #[test]
    fn escaped_separators_stay_in_values() {
        let query = q("Patient", &[("identifier", "urn:x|AB\\|12"), ("name", "a\\|b")]).unwrap();
        assert_eq!(
            query.criteria[0].values[0],
            Match::Token {
                system: Some("urn:x".into()),
                code: Some("AB|12".into())
            }
        );
        assert_eq!(
            query.criteria[1].values[0],
            Match::String {
                value: "a|b".into(),
                exact: false
            }
        );
    }

    #[test]
    fn parses_tokens_with_escapes() {
        let query = q("Patient", &[("identifier", "urn:x|A\\,1,B")]).unwrap();
        assert_eq!(
            query.criteria[0].values,
            vec![
                Match::Token {
                    system: Some("urn:x".into()),
                    code: Some("A,1".into())
                },
                Match::Token {
                    system: None,
                    code: Some("B".into())
                }
            ]
        );
    }

    #[test]
    fn names_unknown_and_unsupported_parameters() {
        let e = q("Patient", &[("shoe-size", "42")]).unwrap_err().to_string();
        assert!(e.contains("shoe-size"), "{e}");
        let e = q("MolecularSequence", &[("chromosome-variant-coordinate", "5")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
        let e = q("Patient", &[("name:fuzzy", "x")]).unwrap_err().to_string();
        assert!(e.contains("name:fuzzy"), "{e}");
        assert!(q("Patient", &[("name", "")]).is_err());
    }

    #[test]
    fn parses_dates_with_prefixes() {
        let query = q("Patient", &[("birthdate", "ge1990-04"), ("birthdate", "2000")]).unwrap();
        assert_eq!(
            query.criteria[0].values[0],
            Match::Date {
                prefix: Prefix::Ge,
                low: "1990-04-01T00:00:00.000Z".into(),
                high: "1990-04-30T23:59:59.999Z".into()
            }
        );
        assert!(matches!(
            query.criteria[1].values[0],
            Match::Date { prefix: Prefix::Eq, .. }
        ));
        let e = q("Patient", &[("birthdate", "gtyesterday")]).unwrap_err().to_string();
        assert!(e.contains("birthdate") && e.contains("not a date"), "{e}");
        let ap = q("Patient", &[("birthdate", "ap2000")]).unwrap();
        let Match::Date { low, high, .. } = &ap.criteria[0].values[0] else {
            panic!("not a date")
        };
        assert!(
            low.as_str() < "2000-01-01" && high.as_str() > "2000-12-31",
            "{low} {high}"
        );
    }

    #[test]
    fn parses_references() {
        let query = q(
            "Observation",
            &[("subject", "http://x/fhir/Patient/123"), ("patient", "9")],
        )
        .unwrap();
        assert_eq!(
            query.criteria[0].values[0],
            Match::Reference {
                resource_type: None,
                id: "http://x/fhir/Patient/123".into()
            }
        );
        assert_eq!(
            query.criteria[1].values[0],
            Match::Reference {
                resource_type: Some("Patient".into()),
                id: "9".into()
            }
        );
    }
}
