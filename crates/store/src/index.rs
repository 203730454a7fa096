//! Search index extraction from the official SearchParameter definitions.
//!
//! Expressions are parsed once into paths of steps: element paths, unions (`|`),
//! `where(resolve() is Type)`, `where(key='value')`, `as Type` (also `(path as Type).more`),
//! `extension('url')`, `[0]` and `X.exists() and X != false`. A parameter whose expression
//! uses anything else, or whose type is not indexed, is reported by [`unsupported_params`]
//! and is refused in queries: never silently wrong.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use serde_json::Value;
use sijill_fhir::definitions::{self, SearchParamType};

/// One step of a path, parsed once when the registry is built.
#[derive(Debug, Clone)]
enum Step {
    /// An element; a choice element is taken by any type, or only as `as_type` when cast.
    Child { name: String, as_type: Option<String> },
    /// `where(key='value')`: keeps the objects whose `key` is `value`.
    Where { key: String, value: String },
    /// `name[0]`: the first item of an element.
    First(String),
    /// `extension('url')`: the extensions with that url; at the end of a path, their value.
    Extension(String),
}

impl Step {
    /// Parses one step; None for a form this version does not understand.
    fn parse(step: &str) -> Option<Step> {
        let plain = |s: &str, extra: &[char]| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
        };
        if plain(step, &[]) {
            return Some(Step::Child {
                name: step.to_string(),
                as_type: None,
            });
        }
        if let Some(inner) = step.strip_prefix("where(").and_then(|s| s.strip_suffix("')")) {
            let (key, value) = inner.split_once("='")?;
            return (plain(key, &[]) && plain(value, &['-', '_', '.'])).then(|| Step::Where {
                key: key.to_string(),
                value: value.to_string(),
            });
        }
        if let Some(url) = step.strip_prefix("extension('").and_then(|s| s.strip_suffix("')")) {
            return (!url.is_empty() && !url.contains(['\'', '(', ')'])).then(|| Step::Extension(url.to_string()));
        }
        let name = step.strip_suffix("[0]")?;
        plain(name, &[]).then(|| Step::First(name.to_string()))
    }
}

/// One branch of a parameter's expression.
#[derive(Debug, Clone)]
struct PathExpr {
    /// The steps after the resource type.
    steps: Vec<Step>,
    /// `where(resolve() is Type)`: keep only references to that type.
    reference_target: Option<String>,
    /// `X.exists() and X != false`: one boolean, true when X is there and not `false`.
    present_not_false: bool,
}

/// A search parameter that Sijill indexes for a resource type.
#[derive(Debug, Clone)]
pub struct IndexedParam {
    /// The parameter's code.
    pub code: &'static str,
    /// Its type.
    pub kind: SearchParamType,
    /// Target resource types of a reference parameter.
    pub targets: &'static [&'static str],
    paths: Vec<PathExpr>,
    /// For a composite: its two components (each evaluated on the nodes of `paths`).
    pub components: Vec<IndexedParam>,
}

impl IndexedParam {
    /// The one resource type this parameter can point to on this resource type, when
    /// there is exactly one (from its targets, or from `where(resolve() is Type)`).
    pub fn single_target(&self) -> Option<&str> {
        let mut restricted = self.paths.iter().map(|p| p.reference_target.as_deref());
        match restricted.next() {
            Some(Some(first)) if restricted.all(|t| t == Some(first)) => Some(first),
            _ => (self.targets.len() == 1).then(|| self.targets[0]),
        }
    }
}

/// One extracted index value.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    /// The parameter's code.
    pub param: &'static str,
    /// Token system (or reference type), when there is one.
    pub system: Option<String>,
    /// The normalised value (strings are lower-cased, accents removed).
    pub value: String,
    /// For string parameters: the value as written (for `:exact`).
    pub exact: Option<String>,
    /// For date parameters: the first and last millisecond the value covers (stored
    /// instant format); `value` is then empty.
    pub range: Option<(String, String)>,
    /// For number and quantity parameters: the lowest and highest value (equal for a
    /// plain number; a Range gives both). `system` and `value` then hold the unit's system
    /// and code (quantities only).
    pub number: Option<(f64, f64)>,
    /// For composite parameters: the first component (system, value); the other fields
    /// hold the second component.
    pub composite: Option<(String, String)>,
}

struct Registry {
    by_type: HashMap<&'static str, BTreeMap<&'static str, IndexedParam>>,
    unsupported: Vec<(String, &'static str, String)>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(build_registry);

fn build_registry() -> Registry {
    let mut by_type: HashMap<&'static str, BTreeMap<&'static str, IndexedParam>> = HashMap::new();
    let mut unsupported = Vec::new();
    for rt in definitions::resource_types() {
        let entry = by_type.entry(rt).or_default();
        for def in definitions::search_params_for(rt) {
            if def.code == "_id" {
                continue; // answered from the resource table itself
            }
            let supported_kind = is_value_kind(def.kind);
            if def.kind == SearchParamType::Composite {
                match composite(def, rt) {
                    Some(p) => {
                        entry.insert(def.code, p);
                    }
                    None => unsupported.push((rt.to_string(), def.code, "composite not understood yet".to_string())),
                }
                continue;
            }
            let paths = def.expression.and_then(|e| parse_expression(e, rt));
            match (supported_kind, paths) {
                (true, Some(paths)) if !paths.is_empty() => {
                    entry.insert(
                        def.code,
                        IndexedParam {
                            code: def.code,
                            kind: def.kind,
                            targets: def.targets,
                            paths,
                            components: Vec::new(),
                        },
                    );
                }
                (true, Some(_)) => {}
                (supported, _) => {
                    let why = if supported {
                        "expression not understood yet"
                    } else {
                        "parameter type not indexed yet"
                    };
                    unsupported.push((rt.to_string(), def.code, why.to_string()));
                }
            }
        }
    }
    Registry { by_type, unsupported }
}

/// The parameter types whose values are indexed directly (all but composite and special).
fn is_value_kind(kind: SearchParamType) -> bool {
    matches!(
        kind,
        SearchParamType::Token
            | SearchParamType::String
            | SearchParamType::Reference
            | SearchParamType::Uri
            | SearchParamType::Date
            | SearchParamType::Number
            | SearchParamType::Quantity
    )
}

/// A composite parameter with two components whose expressions this version understands.
fn composite(def: &'static definitions::SearchParamDef, rt: &str) -> Option<IndexedParam> {
    let paths = parse_paths(def.expression?, rt, true)?;
    if paths.is_empty() || def.components.len() != 2 {
        return None;
    }
    let mut components = Vec::new();
    for (url, expression) in def.components {
        let part = definitions::SEARCH_PARAMS.iter().find(|p| p.url == *url)?;
        if !is_value_kind(part.kind) || expression.contains('%') {
            return None;
        }
        // Component expressions are relative to the composite's nodes.
        let relative = expression
            .split(" | ")
            .map(|e| format!("Component.{}", e.trim()))
            .collect::<Vec<_>>()
            .join(" | ");
        let part_paths = parse_paths(&relative, "Component", false)?;
        components.push(IndexedParam {
            code: part.code,
            kind: part.kind,
            targets: part.targets,
            paths: part_paths,
            components: Vec::new(),
        });
    }
    Some(IndexedParam {
        code: def.code,
        kind: SearchParamType::Composite,
        targets: &[],
        paths,
        components,
    })
}

/// Parses the parts of `expression` that apply to `resource_type`. None when a part
/// that applies uses a form this version does not understand.
fn parse_expression(expression: &str, resource_type: &str) -> Option<Vec<PathExpr>> {
    parse_paths(expression, resource_type, false)
}

/// Like [`parse_expression`]; `allow_root` accepts the bare type (a composite evaluated on
/// the whole resource).
fn parse_paths(expression: &str, resource_type: &str, allow_root: bool) -> Option<Vec<PathExpr>> {
    let mut out = Vec::new();
    for part in expression.split(" | ") {
        let part = part.trim();
        // `X.exists() and X != false` (Patient.deceased): one boolean.
        let (part, present_not_false) = match part.split_once(".exists() and ") {
            Some((x, rest)) if rest == format!("{x} != false") => (x, true),
            _ => (part, false),
        };
        // `(path as Type).more` casts, then goes on; `(path as Type)` only casts.
        let (part, after_cast) = match part.strip_prefix('(').and_then(|p| p.split_once(").")) {
            Some((inner, rest)) => (inner, split_steps(rest)),
            None if part.starts_with('(') && part.ends_with(')') => (&part[1..part.len() - 1], Vec::new()),
            None => (part, Vec::new()),
        };
        let (path, as_type) = match part.split_once(" as ") {
            Some((p, t)) => (p.trim(), Some(t.trim().to_string())),
            None => (part, None),
        };
        let (path, reference_target) = match path.split_once(".where(resolve() is ") {
            Some((p, rest)) => (p, Some(rest.trim_end_matches(')').to_string())),
            None => (path, None),
        };
        let (path, as_type) = match path.split_once(".as(") {
            Some((p, t)) => (p, Some(t.trim_end_matches(')').to_string())),
            None => (path, as_type),
        };
        let mut segments = split_steps(path).into_iter();
        let root = segments.next()?;
        if !root.chars().all(|c| c.is_ascii_alphanumeric()) {
            // Not a path from a type: a form this version does not understand.
            return None;
        }
        if root != resource_type && root != "Resource" && root != "DomainResource" {
            continue;
        }
        let mut steps = segments.map(Step::parse).collect::<Option<Vec<_>>>()?;
        if steps.is_empty() && !allow_root {
            return None;
        }
        if let Some(t) = as_type {
            // The cast applies to the last element before any steps that follow it.
            match steps.last_mut() {
                Some(Step::Child { as_type, .. }) if t.chars().all(|c| c.is_ascii_alphanumeric()) => *as_type = Some(t),
                _ => return None,
            }
        }
        for step in after_cast {
            steps.push(Step::parse(step)?);
        }
        out.push(PathExpr {
            steps,
            reference_target,
            present_not_false,
        });
    }
    Some(out)
}

/// The parameters indexed for a resource type, by code.
pub fn params_for(resource_type: &str) -> Option<&'static BTreeMap<&'static str, IndexedParam>> {
    REGISTRY.by_type.get(resource_type)
}

/// One indexed parameter of a resource type.
pub fn param(resource_type: &str, code: &str) -> Option<&'static IndexedParam> {
    params_for(resource_type)?.get(code)
}

/// (resource type, parameter, reason) of every parameter of the specification that is not
/// indexed, for the startup log.
pub fn unsupported_params() -> &'static [(String, &'static str, String)] {
    &REGISTRY.unsupported
}

/// Bump when extraction code changes in a way the definitions do not show; stores rebuild
/// their index when the fingerprint changes.
const EXTRACTION_RULES_VERSION: u32 = 15;

/// A stable fingerprint (FNV-1a) of the extraction rules: every indexed parameter with its
/// type and paths, and [`EXTRACTION_RULES_VERSION`].
pub fn fingerprint() -> String {
    let mut text = format!("v{EXTRACTION_RULES_VERSION}");
    let mut types: Vec<_> = REGISTRY.by_type.iter().collect();
    types.sort_by_key(|(t, _)| **t);
    for (ty, params) in types {
        for p in params.values() {
            text.push_str(&format!("|{ty}.{}:{:?}:{:?}", p.code, p.kind, p.paths));
        }
    }
    let hash = text
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    format!("{hash:016x}")
}

/// Normalises a string for string search: lower case, common Latin accents removed.
/// Arabic: harakat (tashkeel), Quranic marks, the superscript alef and tatweel are
/// dropped; hamza-carrying and wasla alefs fold to bare alef, ta marbuta to ha, alef
/// maqsura and hamza-on-ya to ya, hamza-on-waw to waw — so أحمد finds احمد.
pub fn normalize_string(s: &str) -> String {
    if s.is_ascii() {
        // Nothing to drop or fold but case (most values: codes, ids, Latin names).
        return s.to_ascii_lowercase();
    }
    s.chars()
        .filter(|c| !matches!(c, '\u{0610}'..='\u{061A}' | '\u{064B}'..='\u{065F}' | '\u{0670}' | '\u{06D6}'..='\u{06ED}' | '\u{0640}'))
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'أ' | 'إ' | 'آ' | 'ٱ' => 'ا',
            'ة' => 'ه',
            'ى' | 'ئ' | 'ی' => 'ي',
            'ک' => 'ك',
            'ؤ' => 'و',
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ñ' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ý' | 'ÿ' => 'y',
            other => other,
        })
        .collect()
}

/// Extracts every index row of a resource.
pub fn extract(resource_type: &str, resource: &Value) -> Vec<IndexRow> {
    let mut rows = Vec::new();
    let Some(params) = params_for(resource_type) else {
        return rows;
    };
    for p in params.values() {
        if p.kind == SearchParamType::Composite {
            composite_rows(p, resource, &mut rows);
            continue;
        }
        for path in &p.paths {
            for node in eval_path(resource, path) {
                values_of(p, path, node, &mut rows);
            }
        }
    }
    rows.sort_by(|a, b| (a.param, &a.system, &a.value).cmp(&(b.param, &b.system, &b.value)));
    rows.dedup();
    rows
}

/// The steps of a path: split on the dots outside quotes and parentheses.
fn split_steps(path: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in path.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            '.' if !quoted && depth == 0 => {
                out.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&path[start..]);
    out
}

/// The JSON booleans `X.exists() and X != false` evaluates to.
static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

/// The nodes a path reaches from `node` (arrays flattened).
fn eval_path<'a>(node: &'a Value, path: &PathExpr) -> Vec<&'a Value> {
    let nodes = walk(node, &path.steps);
    if !path.present_not_false {
        return nodes;
    }
    let there = nodes.into_iter().any(|v| *v != Value::Bool(false));
    vec![if there { &TRUE } else { &FALSE }]
}

/// Follows `steps` from `node`.
fn walk<'a>(node: &'a Value, steps: &[Step]) -> Vec<&'a Value> {
    let mut nodes = vec![node];
    for (i, step) in steps.iter().enumerate() {
        let mut next = Vec::new();
        let mut take = |found: Option<&'a Value>| match found {
            Some(Value::Array(items)) => next.extend(items.iter()),
            Some(v) => next.push(v),
            None => {}
        };
        match step {
            Step::Where { key, value } => {
                nodes.retain(|n| n.get(key).and_then(Value::as_str) == Some(value.as_str()));
                continue;
            }
            Step::First(name) => {
                for node in nodes {
                    take(match node.get(name) {
                        Some(Value::Array(items)) => items.first(),
                        other => other,
                    });
                }
            }
            Step::Extension(url) => {
                let last = i + 1 == steps.len();
                let extensions = nodes
                    .into_iter()
                    .filter_map(|n| n.get("extension").and_then(Value::as_array));
                for e in extensions.flatten() {
                    if e.get("url").and_then(Value::as_str) == Some(url.as_str()) {
                        // At the end of a path, an extension stands for its value.
                        take(if last {
                            e.as_object().and_then(|m| choice_value(m, "value"))
                        } else {
                            Some(e)
                        });
                    }
                }
            }
            Step::Child { name, as_type } => {
                for node in nodes {
                    let Value::Object(map) = node else { continue };
                    take(match as_type {
                        Some(t) => map
                            .get(&format!("{name}{}", capitalised(t)))
                            .or_else(|| map.get(name.as_str())),
                        None => map.get(name.as_str()).or_else(|| choice_value(map, name)),
                    });
                }
            }
        }
        nodes = next;
    }
    nodes
}

/// The rows of one component evaluated on one node.
fn component_rows(part: &IndexedParam, node: &Value) -> Vec<IndexRow> {
    let mut rows = Vec::new();
    for path in &part.paths {
        for value in eval_path(node, path) {
            values_of(part, path, value, &mut rows);
        }
    }
    rows.retain(|r| !matches!(r.system.as_deref(), Some(TOKEN_TEXT | TOKEN_OF_TYPE)));
    rows
}

/// Composite rows: for each node of the composite, every pair of a first-component value
/// and a second-component value found on that same node.
fn composite_rows(p: &IndexedParam, resource: &Value, rows: &mut Vec<IndexRow>) {
    let [first, second] = p.components.as_slice() else {
        return;
    };
    for path in &p.paths {
        for node in eval_path(resource, path) {
            let seconds = component_rows(second, node);
            for a in component_rows(first, node) {
                for b in &seconds {
                    rows.push(IndexRow {
                        param: p.code,
                        composite: Some((a.system.clone().unwrap_or_default(), a.value.clone())),
                        ..b.clone()
                    });
                }
            }
        }
    }
}

/// `dateTime` → `DateTime`: the suffix a type gives a choice element's name.
fn capitalised(t: &str) -> String {
    let mut c = t.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// For a choice element named without its type (`value`), the property `valueX`.
fn choice_value<'a>(map: &'a serde_json::Map<String, Value>, stem: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| {
            k.len() > stem.len() && k.starts_with(stem) && k[stem.len()..].starts_with(|c: char| c.is_ascii_uppercase())
        })
        .map(|(_, v)| v)
}

fn values_of(p: &IndexedParam, path: &PathExpr, node: &Value, rows: &mut Vec<IndexRow>) {
    let mut push_exact = |system: Option<&str>, value: &str, exact: Option<&str>| {
        if !value.is_empty() {
            rows.push(IndexRow {
                param: p.code,
                system: system.map(str::to_string),
                value: value.to_string(),
                exact: exact.map(str::to_string),
                range: None,
                number: None,
                composite: None,
            });
        }
    };
    match p.kind {
        SearchParamType::Token => match node {
            Value::String(s) => push_exact(None, s, None),
            Value::Bool(b) => push_exact(None, if *b { "true" } else { "false" }, None),
            Value::Object(m) => {
                let codings: Vec<&Value> = match m.get("coding") {
                    Some(Value::Array(c)) => c.iter().collect(),
                    _ => vec![node],
                };
                for c in codings {
                    let system = c.get("system").and_then(Value::as_str);
                    if let Some(code) = c.get("code").and_then(Value::as_str) {
                        push_exact(system, code, None);
                    } else if let Some(value) = c.get("value").and_then(Value::as_str) {
                        push_exact(system, value, None);
                    }
                    if let Some(display) = c.get("display").and_then(Value::as_str) {
                        push_exact(Some(TOKEN_TEXT), &normalize_string(display), None);
                    }
                }
                // An Identifier's type with its value, for `:of-type`.
                if let (Some(value), Some(Value::Array(types))) = (
                    m.get("value").and_then(Value::as_str),
                    m.get("type").and_then(|t| t.get("coding")),
                ) {
                    for t in types {
                        if let (Some(ts), Some(tc)) = (
                            t.get("system").and_then(Value::as_str),
                            t.get("code").and_then(Value::as_str),
                        ) {
                            push_exact(Some(TOKEN_OF_TYPE), &format!("{ts}|{tc}|{value}"), None);
                        }
                    }
                }
                // The text of a CodeableConcept (or an Identifier's type), for `:text`.
                let text = m.get("text").or_else(|| m.get("type").and_then(|t| t.get("text")));
                if let Some(text) = text.and_then(Value::as_str) {
                    push_exact(Some(TOKEN_TEXT), &normalize_string(text), None);
                }
            }
            _ => {}
        },
        SearchParamType::String => {
            let mut strings = Vec::new();
            collect_strings(node, &mut strings);
            for s in strings {
                push_exact(None, &normalize_string(s), Some(s));
            }
        }
        SearchParamType::Uri => {
            if let Value::String(s) = node {
                push_exact(None, s, None);
            }
        }
        SearchParamType::Number | SearchParamType::Quantity => {
            if let Some((low, high, system, code)) = number_of(node) {
                rows.push(IndexRow {
                    param: p.code,
                    system,
                    value: code.unwrap_or_default(),
                    exact: None,
                    range: None,
                    number: Some((low, high)),
                    composite: None,
                });
            }
        }
        SearchParamType::Date => {
            let events = node.get("event").and_then(Value::as_array).into_iter().flatten();
            for range in std::iter::once(node).chain(events).filter_map(date_range_of) {
                rows.push(IndexRow {
                    param: p.code,
                    system: None,
                    value: String::new(),
                    exact: None,
                    range: Some(range),
                    number: None,
                    composite: None,
                });
            }
        }
        SearchParamType::Reference => {
            // A Reference, or a canonical / uri (without its `|version`).
            let reference = node.get("reference").and_then(Value::as_str);
            let canonical = node.as_str().map(|c| c.split('|').next().unwrap_or(c));
            let Some(reference) = reference.or(canonical) else {
                // A resource held inline (`Bundle.entry[0].resource`) is referred to by its id.
                let inline = (
                    node.get("resourceType").and_then(Value::as_str),
                    node.get("id").and_then(Value::as_str),
                );
                if let (Some(ty), Some(id)) = inline {
                    push_exact(Some(ty), id, None);
                }
                return;
            };
            // A reference to another server is indexed by its whole URL only: it must not
            // look like the local resource with the same type and id.
            if reference.contains("://") {
                if path.reference_target.is_none() {
                    push_exact(None, reference, None);
                }
                return;
            }
            // `Patient/1/_history/2` refers to Patient/1.
            let reference = reference.split("/_history/").next().unwrap_or(reference);
            let (ty, id) = match reference.rsplit_once('/') {
                Some((before, id)) => (before.rsplit('/').next().unwrap_or(before), id),
                None => return,
            };
            if let Some(target) = &path.reference_target {
                if ty != target {
                    return;
                }
            }
            if definitions::is_resource_type(ty) {
                push_exact(Some(ty), id, None);
            }
        }
        _ => {}
    }
}

/// The numeric range, unit system and unit code of a number, Quantity or Range.
fn number_of(node: &Value) -> Option<(f64, f64, Option<String>, Option<String>)> {
    let text = |v: Option<&Value>, k: &str| v.and_then(|q| q.get(k)).and_then(Value::as_str).map(str::to_string);
    match node {
        Value::Number(n) => n.as_f64().map(|v| (v, v, None, None)),
        Value::Object(m) if m.contains_key("value") => {
            let v = m.get("value").and_then(Value::as_f64)?;
            let code = text(Some(node), "code").or_else(|| text(Some(node), "unit"));
            Some((v, v, text(Some(node), "system"), code))
        }
        Value::Object(m) if m.contains_key("low") || m.contains_key("high") => {
            let low = m
                .get("low")
                .and_then(|q| q.get("value"))
                .and_then(Value::as_f64)
                .unwrap_or(f64::MIN);
            let high = m
                .get("high")
                .and_then(|q| q.get("value"))
                .and_then(Value::as_f64)
                .unwrap_or(f64::MAX);
            let unit = m.get("low").or_else(|| m.get("high"));
            let code = text(unit, "code").or_else(|| text(unit, "unit"));
            Some((low, high, text(unit, "system"), code))
        }
        _ => None,
    }
}

/// The `system` of the rows that hold a token's text and displays (for `:text`); it cannot
/// be a real code system URI.
pub const TOKEN_TEXT: &str = "#text";

/// The `system` of the rows that hold an Identifier's `type-system|type-code|value` (for
/// `:of-type`).
pub const TOKEN_OF_TYPE: &str = "#of-type";

/// Lowest and highest stored instants, for open-ended periods.
const DATE_MIN: &str = "0000-01-01T00:00:00.000Z";
const DATE_MAX: &str = "9999-12-31T23:59:59.999Z";

/// The range a date, dateTime, instant or Period covers.
fn date_range_of(node: &Value) -> Option<(String, String)> {
    match node {
        Value::String(s) => crate::time_fmt::date_range(s),
        // A Timing covers its bounds (its events are taken separately).
        Value::Object(m) if m.contains_key("repeat") => m
            .get("repeat")
            .and_then(|r| r.get("boundsPeriod"))
            .and_then(date_range_of),
        Value::Object(m) if m.contains_key("start") || m.contains_key("end") => {
            let start = m
                .get("start")
                .and_then(Value::as_str)
                .and_then(crate::time_fmt::date_range);
            let end = m
                .get("end")
                .and_then(Value::as_str)
                .and_then(crate::time_fmt::date_range);
            Some((
                start.map_or_else(|| DATE_MIN.to_string(), |r| r.0),
                end.map_or_else(|| DATE_MAX.to_string(), |r| r.1),
            ))
        }
        _ => None,
    }
}

/// The searchable strings of a string-typed node (HumanName and Address parts included).
fn collect_strings<'a>(node: &'a Value, out: &mut Vec<&'a str>) {
    match node {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                if !matches!(k.as_str(), "extension" | "id" | "use" | "type" | "period") {
                    collect_strings(v, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_tokens_strings_and_references() {
        let patient = json!({
            "resourceType": "Patient",
            "identifier": [{"system": "urn:ma:cnie", "value": "AB12345"}],
            "name": [{"family": "Benali", "given": ["Hélène"]}],
            "gender": "female",
            "generalPractitioner": [{"reference": "Practitioner/p1"}]
        });
        let rows = extract("Patient", &patient);
        let has = |p: &str, s: Option<&str>, v: &str| {
            rows.iter()
                .any(|r| r.param == p && r.system.as_deref() == s && r.value == v)
        };
        assert!(has("identifier", Some("urn:ma:cnie"), "AB12345"));
        assert!(has("gender", None, "female"));
        assert!(has("family", None, "benali"));
        assert!(has("given", None, "helene"));
        assert!(has("name", None, "helene"));
        assert!(has("general-practitioner", Some("Practitioner"), "p1"));
    }

    #[test]
    fn respects_reference_targets_and_choices() {
        let obs = json!({
            "resourceType": "Observation",
            "subject": {"reference": "Group/g1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "valueCodeableConcept": {"coding": [{"system": "s", "code": "pos"}]}
        });
        let rows = extract("Observation", &obs);
        assert!(!rows.iter().any(|r| r.param == "patient"));
        assert!(rows.iter().any(|r| r.param == "subject" && r.value == "g1"));
        assert!(rows.iter().any(|r| r.param == "code" && r.value == "4548-4"));
        assert!(rows.iter().any(|r| r.param == "value-concept" && r.value == "pos"));
    }

    #[test]
    fn unsupported_parameters_are_listed_not_guessed() {
        assert!(param("MolecularSequence", "chromosome-variant-coordinate").is_none());
        assert!(unsupported_params()
            .iter()
            .any(|(t, c, _)| t == "MolecularSequence" && *c == "chromosome-variant-coordinate"));
        assert!(param("Patient", "identifier").is_some());
    }

    #[test]
    fn extracts_date_ranges_from_dates_periods_and_choices() {
        let enc = json!({"resourceType": "Encounter", "period": {"start": "2024-03-01T10:00:00Z"}});
        let rows = extract("Encounter", &enc);
        let date = rows.iter().find(|r| r.param == "date").unwrap();
        assert_eq!(date.range, Some(("2024-03-01T10:00:00.000Z".into(), DATE_MAX.into())));
        let obs = json!({"resourceType": "Observation", "effectiveDateTime": "2024-03", "status": "final"});
        let rows = extract("Observation", &obs);
        let date = rows.iter().find(|r| r.param == "date").unwrap();
        assert_eq!(date.range.as_ref().unwrap().1, "2024-03-31T23:59:59.999Z");
        let patient = json!({"resourceType": "Patient", "birthDate": "1990-04-12"});
        assert!(extract("Patient", &patient).iter().any(|r| r.param == "birthdate"));
    }

    #[test]
    fn arabic_and_french_normalisation() {
        assert_eq!(normalize_string("أحمد"), normalize_string("احمد"));
        assert_eq!(normalize_string("إيمان"), normalize_string("ايمان"));
        assert_eq!(normalize_string("آمنة"), normalize_string("امنه"));
        assert_eq!(normalize_string("مُحَمَّد"), "محمد");
        assert_eq!(normalize_string("محـــمد"), "محمد");
        assert_eq!(normalize_string("مصطفى"), normalize_string("مصطفي"));
        assert_eq!(normalize_string("Hélène François"), "helene francois");
        assert_ne!(normalize_string("محمد"), normalize_string("احمد"));
    }

    #[test]
    fn remote_and_versioned_references() {
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                         "subject": {"reference": "https://other.example/fhir/Patient/123"},
                         "encounter": {"reference": "Encounter/e1/_history/3"}});
        let rows = extract("Observation", &obs);
        assert!(!rows.iter().any(|r| r.value == "123"));
        assert!(rows
            .iter()
            .any(|r| r.param == "subject" && r.value == "https://other.example/fhir/Patient/123"));
        assert!(rows
            .iter()
            .any(|r| r.param == "encounter" && r.system.as_deref() == Some("Encounter") && r.value == "e1"));
    }
}

#[cfg(test)]
mod more_forms {
    use super::*;
    use serde_json::json;

    #[test]
    fn exists_and_not_false_indexers_and_where_steps() {
        let deceased = |p: Value| {
            extract("Patient", &p)
                .into_iter()
                .filter(|r| r.param == "deceased")
                .map(|r| r.value)
                .collect::<Vec<_>>()
        };
        assert_eq!(deceased(json!({"resourceType": "Patient"})), vec!["false"]);
        assert_eq!(
            deceased(json!({"resourceType": "Patient", "deceasedBoolean": false})),
            vec!["false"]
        );
        assert_eq!(
            deceased(json!({"resourceType": "Patient", "deceasedBoolean": true})),
            vec!["true"]
        );
        assert_eq!(
            deceased(json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"})),
            vec!["true"]
        );
        let bundle = json!({"resourceType": "Bundle", "type": "document", "entry": [
            {"resource": {"resourceType": "Composition", "id": "c1"}},
            {"resource": {"resourceType": "Patient", "id": "p1"}}]});
        let rows = extract("Bundle", &bundle);
        let composition: Vec<_> = rows.iter().filter(|r| r.param == "composition").collect();
        assert_eq!(composition.len(), 1);
        assert_eq!(
            (composition[0].system.as_deref(), composition[0].value.as_str()),
            (Some("Composition"), "c1")
        );
        let patient = json!({"resourceType": "Patient", "telecom": [
            {"system": "phone", "value": "+212 600000000"}, {"system": "email", "value": "a@example.org"}]});
        let rows = extract("Patient", &patient);
        let values = |code: &str| {
            rows.iter()
                .filter(|r| r.param == code)
                .map(|r| r.value.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(values("phone"), vec!["+212 600000000"]);
        assert_eq!(values("email"), vec!["a@example.org"]);
        // The URL the R4 parameter names (not the extension's own canonical URL).
        let url = "http://hl7.org/fhir/StructureDefinition/patient-extensions-Patient-mothersMaidenName";
        let patient = json!({"resourceType": "Patient", "extension": [
            {"url": url, "valueString": "Benali"}, {"url": "urn:other", "valueString": "Nope"}]});
        let rows = extract("Patient", &patient);
        let maiden: Vec<_> = rows
            .iter()
            .filter(|r| r.param == "mothersMaidenName")
            .map(|r| r.exact.clone())
            .collect();
        assert_eq!(maiden, vec![Some("Benali".to_string())]);
    }
}
