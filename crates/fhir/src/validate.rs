//! Structural validation of a resource against the official R4 definitions.
//!
//! The checks follow the FHIR R4 JSON rules: every property must be an element of the
//! definition (at any depth, including backbone elements, data types, choice types,
//! content references, primitive extensions and nested resources), values must have the
//! right JSON type and cardinality, primitives must match their official formats, and
//! codes bound to a known value set with a required binding must be in it.
//!
//! For speed the definitions are compiled once into a `Schema`: one node per type or
//! inline element, each with a map from JSON property name to what the property holds.
//! The walk borrows the JSON; the FHIRPath location is kept as a stack of borrowed
//! segments and only formatted when an issue is reported.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::definitions::{value_set, ElementDef, TypeKind, TYPES};
use crate::outcome::Issue;

/// Objects and arrays deeper than this are not validated (an issue says so).
pub const MAX_DEPTH: usize = 64;

/// Validates one resource; returns every error found (empty when valid).
pub fn validate_resource(resource: &Value) -> Vec<Issue> {
    let mut walker = Walker {
        schema: &SCHEMA,
        path: Vec::with_capacity(16),
        seen: Vec::with_capacity(32),
        issues: Vec::new(),
        depth: 0,
        too_deep: false,
    };
    match resource {
        Value::Object(obj) => walker.resource(obj, true),
        other => walker.issue(
            "structure",
            None,
            format!("A resource must be a JSON object, not {}.", json_kind(other)),
        ),
    }
    walker.issues
}

// ---------------------------------------------------------------------------------------
// The compiled schema
// ---------------------------------------------------------------------------------------

/// FNV-1a: the keys hashed here are short property names, for which SipHash is slow and
/// HashDoS resistance is not needed (the tables are fixed; lookups only read them).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;
type FastSet<K> = HashSet<K, BuildHasherDefault<Fnv>>;

/// How a primitive value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prim {
    /// JSON `true`/`false`.
    Boolean,
    /// JSON integer in the 32-bit signed range.
    Integer,
    /// JSON integer, 1 ..= 2^31-1.
    PositiveInt,
    /// JSON integer, 0 ..= 2^31-1.
    UnsignedInt,
    /// Any JSON number.
    Decimal,
    /// string / markdown: a non-empty JSON string without control characters.
    Text,
    /// uri / url / canonical: a non-empty JSON string without whitespace.
    Uri,
    /// A JSON string matching the type's official regex (index into `Schema::regexes`);
    /// `calendar` adds a check that the date part is a real calendar date.
    Pattern { regex: u16, calendar: bool },
}

/// What a JSON property holds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A primitive; the node is the primitive type's own (for `_x` extension objects).
    Primitive(Prim, u32),
    /// An object validated against a node (data type, backbone or referenced element).
    Complex(u32),
    /// A nested resource (`contained`, `Bundle.entry.resource`, …).
    Resource,
    /// Narrative `div`: a non-empty string (the HTML is not parsed).
    Xhtml,
}

/// What a required binding is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindingKind {
    /// A `code` value.
    Code,
    /// A Coding object.
    Coding,
    /// A CodeableConcept object (each of its codings).
    CodeableConcept,
}

/// One JSON property allowed under a node.
#[derive(Debug, Clone, Copy)]
struct Child {
    el: &'static ElementDef,
    /// The concrete type the property name selects (for choices, e.g. `Quantity`).
    ty: &'static str,
    kind: Kind,
    /// A required binding to a known value set (index into `Schema::bindings`).
    binding: Option<(u32, BindingKind)>,
}

/// A type or an element whose children are defined inline.
#[derive(Debug)]
struct Node {
    /// The definition path (`Patient`, `Patient.contact`, `HumanName`, `date`).
    path: &'static str,
    /// JSON property name → element.
    children: FastMap<&'static str, Child>,
    /// Elements with min > 0.
    required: Vec<&'static ElementDef>,
}

/// The codes of one value set, hashed.
#[derive(Debug)]
struct Binding {
    url: &'static str,
    codes: FastSet<&'static str>,
    pairs: FastSet<(&'static str, &'static str)>,
    systems: Vec<&'static str>,
}

/// The definitions compiled for validation.
#[derive(Debug)]
struct Schema {
    nodes: Vec<Node>,
    /// Concrete resource type → its node.
    resources: FastMap<&'static str, u32>,
    bindings: Vec<Binding>,
    /// Compiled primitive regexes, with the name of their type.
    regexes: Vec<(&'static str, Regex)>,
    /// Elements whose parent or type could not be resolved (none: a unit test checks it).
    #[cfg_attr(not(test), allow(dead_code))]
    unresolved: Vec<&'static str>,
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(build_schema);

/// Rewrites an official (XML Schema / Java style) regex for the `regex` crate: there
/// `\s` and `\S` are Unicode-aware, whereas the FHIR regexes mean the ASCII whitespace
/// set `[ \t\n\x0B\f\r]`, so both are replaced by explicit classes (nested classes work
/// inside `[...]` too). The result is anchored as `^(?:...)$`.
fn translate_regex(official: &str) -> String {
    const WS: &str = r"[\t\n\x0B\x0C\r ]";
    const NOT_WS: &str = r"[^\t\n\x0B\x0C\r ]";
    let mut out = String::with_capacity(official.len() + 32);
    out.push_str(r"\A(?:");
    let mut chars = official.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push_str(WS),
            Some('S') => out.push_str(NOT_WS),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out.push_str(r")\z");
    out
}

fn capitalize(t: &str) -> String {
    let mut chars = t.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

fn build_schema() -> Schema {
    let mut nodes: Vec<Node> = Vec::new();
    let mut ids: FastMap<&'static str, u32> = FastMap::default();
    let mut resources: FastMap<&'static str, u32> = FastMap::default();
    let new_node = |nodes: &mut Vec<Node>, path: &'static str| {
        nodes.push(Node {
            path,
            children: FastMap::default(),
            required: Vec::new(),
        });
        (nodes.len() - 1) as u32
    };

    // Nodes: every type, and every element whose children are defined inline.
    for ty in TYPES {
        let id = new_node(&mut nodes, ty.name);
        ids.insert(ty.name, id);
        if ty.kind == TypeKind::Resource && !ty.is_abstract {
            resources.insert(ty.name, id);
        }
        for el in ty.elements {
            if el.has_inline_children() {
                let id = new_node(&mut nodes, el.path);
                ids.insert(el.path, id);
            }
        }
    }

    // How each primitive type is checked.
    let mut regexes: Vec<(&'static str, Regex)> = Vec::new();
    let mut prims: FastMap<&'static str, Prim> = FastMap::default();
    let mut unresolved = Vec::new();
    for ty in TYPES.iter().filter(|t| t.kind == TypeKind::Primitive) {
        let prim = match ty.name {
            "boolean" => Prim::Boolean,
            "integer" => Prim::Integer,
            "positiveInt" => Prim::PositiveInt,
            "unsignedInt" => Prim::UnsignedInt,
            "decimal" => Prim::Decimal,
            // Official regex `[ \r\n\t\S]+`: any non-empty text; checked by hand (faster),
            // together with the rule that strings hold no control characters but tab, CR, LF.
            "string" | "markdown" => Prim::Text,
            // Official regex `\S*`: no whitespace; checked by hand (faster).
            "uri" | "url" | "canonical" => Prim::Uri,
            "xhtml" => continue,
            name => match ty.regex.map(|r| Regex::new(&translate_regex(r))) {
                Some(Ok(re)) => {
                    regexes.push((name, re));
                    Prim::Pattern {
                        regex: (regexes.len() - 1) as u16,
                        calendar: matches!(name, "date" | "dateTime" | "instant"),
                    }
                }
                // All R4 regexes compile (a unit test checks it); without one, any text.
                Some(Err(_)) => {
                    unresolved.push(ty.name);
                    Prim::Text
                }
                None => Prim::Text,
            },
        };
        prims.insert(ty.name, prim);
    }

    // Required bindings to value sets whose codes are known.
    let mut bindings: Vec<Binding> = Vec::new();
    let mut binding_ids: FastMap<&'static str, u32> = FastMap::default();

    for ty in TYPES {
        for el in ty.elements {
            let Some((parent, name)) = el.path.rsplit_once('.') else {
                unresolved.push(el.path);
                continue;
            };
            let Some(&parent_id) = ids.get(parent) else {
                unresolved.push(el.path);
                continue;
            };
            let binding_kind = |t: &str| match t {
                "code" => Some(BindingKind::Code),
                "Coding" => Some(BindingKind::Coding),
                "CodeableConcept" => Some(BindingKind::CodeableConcept),
                _ => None,
            };
            let mut binding_id = |url: &'static str| -> Option<u32> {
                if let Some(&id) = binding_ids.get(url) {
                    return Some(id);
                }
                let vs = value_set(url)?;
                bindings.push(Binding {
                    url: vs.url,
                    codes: vs.codes.iter().map(|(_, c)| *c).collect(),
                    pairs: vs.codes.iter().copied().collect(),
                    systems: {
                        let mut s: Vec<&'static str> = vs.codes.iter().map(|(s, _)| *s).collect();
                        s.dedup();
                        s
                    },
                });
                let id = (bindings.len() - 1) as u32;
                binding_ids.insert(url, id);
                Some(id)
            };

            let mut entries: Vec<(String, &'static str, Option<Kind>)> = Vec::new();
            if let Some(target) = el.content_reference {
                let kind = ids.get(target).map(|&n| Kind::Complex(n));
                entries.push((name.to_string(), "BackboneElement", kind));
            } else if el.has_inline_children() {
                let kind = ids.get(el.path).map(|&n| Kind::Complex(n));
                entries.push((name.to_string(), el.types[0], kind));
            } else {
                for &t in el.types {
                    let kind = match t {
                        "Resource" => Some(Kind::Resource),
                        "xhtml" => Some(Kind::Xhtml),
                        _ => match prims.get(t) {
                            Some(&p) => ids.get(t).map(|&n| Kind::Primitive(p, n)),
                            None => ids.get(t).map(|&n| Kind::Complex(n)),
                        },
                    };
                    let key = match name.strip_suffix("[x]") {
                        Some(stem) => format!("{stem}{}", capitalize(t)),
                        None => name.to_string(),
                    };
                    entries.push((key, t, kind));
                }
            }
            for (key, t, kind) in entries {
                let Some(kind) = kind else {
                    unresolved.push(el.path);
                    continue;
                };
                let binding = el
                    .required_binding
                    .and_then(|url| Some((binding_id(url)?, binding_kind(t)?)));
                let key: &'static str = Box::leak(key.into_boxed_str());
                nodes[parent_id as usize].children.insert(
                    key,
                    Child {
                        el,
                        ty: t,
                        kind,
                        binding,
                    },
                );
            }
            if el.min > 0 {
                nodes[parent_id as usize].required.push(el);
            }
        }
    }

    Schema {
        nodes,
        resources,
        bindings,
        regexes,
        unresolved,
    }
}

// ---------------------------------------------------------------------------------------
// The walk
// ---------------------------------------------------------------------------------------

/// One step of the location being validated.
#[derive(Debug, Clone, Copy)]
enum Seg<'v> {
    /// The type of the outermost resource.
    Root(&'v str),
    /// A property (for `_x`, the primitive's own name `x`).
    Key(&'v str),
    /// An array index.
    Index(usize),
}

struct Walker<'v> {
    schema: &'static Schema,
    path: Vec<Seg<'v>>,
    /// Elements seen in the objects being validated (a stack: each object truncates it
    /// back when done), for cardinality checks without allocating per object.
    seen: Vec<&'static ElementDef>,
    issues: Vec<Issue>,
    depth: usize,
    too_deep: bool,
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The element name used in messages and expressions (`value[x]` → `value`).
fn plain_name(el: &ElementDef) -> &'static str {
    let name = el.name();
    name.strip_suffix("[x]").unwrap_or(name)
}

impl<'v> Walker<'v> {
    /// The current location, with `extra` appended as a property.
    fn location(&self, extra: Option<&str>) -> String {
        let mut out = String::with_capacity(64);
        let key = |out: &mut String, key: &str| {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
        };
        for seg in &self.path {
            match *seg {
                Seg::Root(name) => out.push_str(name),
                Seg::Key(k) => key(&mut out, k),
                Seg::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        if let Some(extra) = extra {
            key(&mut out, extra);
        }
        out
    }

    fn issue(&mut self, code: &'static str, extra: Option<&str>, diagnostics: String) {
        let expression = self.location(extra);
        self.issues.push(Issue::error(code, expression, diagnostics));
    }

    /// Enters an object or array; false (after reporting once) when too deep.
    fn enter(&mut self) -> bool {
        if self.depth >= MAX_DEPTH {
            if !self.too_deep {
                self.too_deep = true;
                self.issue(
                    "too-costly",
                    None,
                    format!("The resource nests objects and arrays deeper than {MAX_DEPTH} levels; the content below is not validated."),
                );
            }
            return false;
        }
        self.depth += 1;
        true
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// A resource (the root, or a nested one: the path continues from its container).
    fn resource(&mut self, obj: &'v Map<String, Value>, root: bool) {
        if !self.enter() {
            return;
        }
        let node = match obj.get("resourceType") {
            None => {
                self.issue("structure", None, "The resource has no resourceType property.".into());
                None
            }
            Some(Value::String(rt)) => match self.schema.resources.get(rt.as_str()) {
                Some(&node) => {
                    if root {
                        self.path.push(Seg::Root(rt));
                    }
                    Some(node)
                }
                None => {
                    self.issue(
                        "not-supported",
                        None,
                        format!("'{rt}' is not a resource type of FHIR R4."),
                    );
                    None
                }
            },
            Some(other) => {
                self.issue(
                    "structure",
                    None,
                    format!("resourceType must be a JSON string, not {}.", json_kind(other)),
                );
                None
            }
        };
        if let Some(node) = node {
            self.object(obj, node, true);
            if root {
                self.path.pop();
            }
        }
        self.leave();
    }

    /// The properties of an object validated against `node` (depth already entered).
    fn object(&mut self, obj: &'v Map<String, Value>, node_id: u32, is_resource: bool) {
        let node = &self.schema.nodes[node_id as usize];
        if obj.is_empty() {
            self.issue("structure", None, "Empty objects are not allowed in FHIR JSON.".into());
            return;
        }
        let mark = self.seen.len();
        for (key, value) in obj {
            if key == "resourceType" {
                if !is_resource {
                    self.issue(
                        "structure",
                        Some(key),
                        format!(
                            "resourceType is only allowed at the root of a resource, not in {}.",
                            node.path
                        ),
                    );
                }
                continue;
            }
            if let Some(base) = key.strip_prefix('_') {
                match node.children.get(base) {
                    Some(child) if matches!(child.kind, Kind::Primitive(..)) => {
                        let base_value = obj.get(base);
                        if base_value.is_none() {
                            self.note_seen(child, mark, base);
                        }
                        self.path.push(Seg::Key(base));
                        self.primitive_extension(child, value, base_value);
                        self.path.pop();
                    }
                    Some(_) => self.issue(
                        "structure",
                        Some(key),
                        format!(
                            "Unknown element '{key}': '{base}' in {} is not a primitive, so it has no '_' form.",
                            node.path
                        ),
                    ),
                    None => self.issue(
                        "structure",
                        Some(key),
                        format!("Unknown element '{key}': {} has no element '{base}'.", node.path),
                    ),
                }
                continue;
            }
            match node.children.get(key.as_str()) {
                Some(child) => {
                    self.note_seen(child, mark, key);
                    self.path.push(Seg::Key(key));
                    self.element(child, value, key, obj);
                    self.path.pop();
                }
                None => self.issue(
                    "structure",
                    Some(key),
                    format!("Unknown element '{key}': {} has no element of that name.", node.path),
                ),
            }
        }
        for &req in &node.required {
            if !self.seen[mark..].iter().any(|e| std::ptr::eq(*e, req)) {
                let name = plain_name(req);
                let what = if req.is_choice() {
                    format!("{name}[x]")
                } else {
                    name.to_string()
                };
                self.issue(
                    "required",
                    Some(name),
                    format!(
                        "The required element '{what}' of {} is missing (minimum cardinality {}).",
                        node.path, req.min
                    ),
                );
            }
        }
        self.seen.truncate(mark);
    }

    /// Records that an element is present; reports a second type of the same choice.
    fn note_seen(&mut self, child: &Child, mark: usize, key: &str) {
        if child.el.is_choice() && self.seen[mark..].iter().any(|e| std::ptr::eq(*e, child.el)) {
            let name = plain_name(child.el);
            self.issue(
                "structure",
                Some(key),
                format!("'{key}' is a second value for the choice element {name}[x], which allows only one."),
            );
        }
        self.seen.push(child.el);
    }

    /// The value of a (non `_`) property: array or single value per the cardinality.
    fn element(&mut self, child: &Child, value: &'v Value, key: &str, parent: &'v Map<String, Value>) {
        let el = child.el;
        if el.max == 0 {
            self.issue(
                "structure",
                None,
                format!("The element '{key}' is not allowed here (maximum cardinality 0)."),
            );
            return;
        }
        if el.is_array() {
            let Value::Array(items) = value else {
                self.issue(
                    "structure",
                    None,
                    format!(
                        "The element '{key}' repeats, so its value must be a JSON array, not {}.",
                        json_kind(value)
                    ),
                );
                return;
            };
            if items.is_empty() {
                self.issue("structure", None, "Empty arrays are not allowed in FHIR JSON.".into());
                return;
            }
            if items.len() > el.max as usize {
                self.issue(
                    "structure",
                    None,
                    format!(
                        "The element '{key}' has {} values; at most {} are allowed.",
                        items.len(),
                        el.max
                    ),
                );
            }
            if items.len() < el.min as usize {
                self.issue(
                    "required",
                    None,
                    format!(
                        "The element '{key}' has {} values; at least {} are required.",
                        items.len(),
                        el.min
                    ),
                );
            }
            if !self.enter() {
                return;
            }
            for (i, item) in items.iter().enumerate() {
                self.path.push(Seg::Index(i));
                if item.is_null() {
                    self.null_item(child, key, i, parent);
                } else {
                    self.single(child, item);
                }
                self.path.pop();
            }
            self.leave();
        } else {
            match value {
                Value::Array(_) => self.issue(
                    "structure",
                    None,
                    format!("The element '{key}' does not repeat, so its value must not be a JSON array."),
                ),
                Value::Null => self.issue("structure", None, format!("The element '{key}' must not be null.")),
                _ => self.single(child, value),
            }
        }
    }

    /// A null in a repeating element: allowed only for a primitive whose `_x` array has
    /// an extension object at the same index.
    fn null_item(&mut self, child: &Child, key: &str, i: usize, parent: &'v Map<String, Value>) {
        let has_extension = matches!(child.kind, Kind::Primitive(..))
            && parent
                .get(&format!("_{key}"))
                .and_then(|ext| ext.get(i))
                .is_some_and(|item| !item.is_null());
        if !has_extension {
            self.issue(
                "structure",
                None,
                format!("null is only allowed in the array '{key}' where '_{key}' has an extension at the same index."),
            );
        }
    }

    /// One (non-array, non-null) value of an element.
    fn single(&mut self, child: &Child, value: &'v Value) {
        match child.kind {
            Kind::Primitive(prim, _) => self.primitive(child, prim, value),
            Kind::Xhtml => match value {
                Value::String(s) if !s.is_empty() => {}
                Value::String(_) => self.issue("value", None, "Empty strings are not allowed in FHIR JSON.".into()),
                other => self.issue(
                    "structure",
                    None,
                    format!(
                        "The narrative div must be a JSON string of XHTML, not {}.",
                        json_kind(other)
                    ),
                ),
            },
            Kind::Complex(node) => match value {
                Value::Object(obj) => {
                    if self.enter() {
                        self.object(obj, node, false);
                        self.leave();
                        if let Some((binding, kind)) = child.binding {
                            self.check_coded(obj, binding, kind);
                        }
                    }
                }
                other => self.issue(
                    "structure",
                    None,
                    format!("A {} must be a JSON object, not {}.", child.ty, json_kind(other)),
                ),
            },
            Kind::Resource => match value {
                Value::Object(obj) => self.resource(obj, false),
                other => self.issue(
                    "structure",
                    None,
                    format!("A nested resource must be a JSON object, not {}.", json_kind(other)),
                ),
            },
        }
    }

    /// A primitive value: JSON type, format and required binding.
    fn primitive(&mut self, child: &Child, prim: Prim, value: &Value) {
        let ty = child.ty;
        let wrong_type = |want: &str| format!("A {ty} must be {want}, not {}.", json_kind(value));
        match prim {
            Prim::Boolean => {
                if !value.is_boolean() {
                    self.issue("structure", None, wrong_type("a JSON boolean"));
                }
            }
            Prim::Integer | Prim::PositiveInt | Prim::UnsignedInt => {
                let Value::Number(n) = value else {
                    self.issue("structure", None, wrong_type("a JSON number"));
                    return;
                };
                let (lo, hi) = match prim {
                    Prim::PositiveInt => (1, i64::from(i32::MAX)),
                    Prim::UnsignedInt => (0, i64::from(i32::MAX)),
                    _ => (i64::from(i32::MIN), i64::from(i32::MAX)),
                };
                if n.is_f64() {
                    self.issue("value", None, format!("A {ty} must be a whole number, not {n}."));
                } else if !n.as_i64().is_some_and(|i| (lo..=hi).contains(&i)) {
                    self.issue("value", None, format!("The {ty} {n} is out of range ({lo} to {hi})."));
                }
            }
            Prim::Decimal => {
                if !value.is_number() {
                    self.issue("structure", None, wrong_type("a JSON number"));
                }
            }
            Prim::Text | Prim::Uri | Prim::Pattern { .. } => {
                let Value::String(s) = value else {
                    self.issue("structure", None, wrong_type("a JSON string"));
                    return;
                };
                if s.is_empty() {
                    self.issue("value", None, "Empty strings are not allowed in FHIR JSON.".into());
                    return;
                }
                let problem = match prim {
                    Prim::Text => s
                        .bytes()
                        .any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
                        .then(|| format!("A {ty} must not contain control characters other than tab, carriage return and line feed.")),
                    Prim::Uri => s
                        .bytes()
                        .any(|b| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r'))
                        .then(|| format!("A {ty} must not contain whitespace: '{s}'.")),
                    Prim::Pattern { regex, calendar } => {
                        let re = &self.schema.regexes[regex as usize].1;
                        if !re.is_match(s) {
                            Some(format!("'{}' is not a valid {ty}.", truncate(s)))
                        } else if calendar && !is_calendar_date(s) {
                            Some(format!("'{s}' is not a valid {ty}: the day does not exist in that month."))
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                if let Some(problem) = problem {
                    self.issue("value", None, problem);
                    return;
                }
                if let Some((binding, BindingKind::Code)) = child.binding {
                    let b = &self.schema.bindings[binding as usize];
                    if !b.codes.contains(s.as_str()) {
                        let url = b.url;
                        self.issue(
                            "code-invalid",
                            None,
                            format!("The code '{}' is not in the required value set {url}.", truncate(s)),
                        );
                    }
                }
            }
        }
    }

    /// A required binding on a Coding or CodeableConcept: codings from a system of the
    /// value set must carry one of its codes (other systems are not checked).
    fn check_coded(&mut self, obj: &'v Map<String, Value>, binding: u32, kind: BindingKind) {
        match kind {
            BindingKind::Coding => self.check_coding(obj, binding),
            BindingKind::CodeableConcept => {
                if let Some(Value::Array(codings)) = obj.get("coding") {
                    self.path.push(Seg::Key("coding"));
                    for (i, coding) in codings.iter().enumerate() {
                        if let Value::Object(coding) = coding {
                            self.path.push(Seg::Index(i));
                            self.check_coding(coding, binding);
                            self.path.pop();
                        }
                    }
                    self.path.pop();
                }
            }
            BindingKind::Code => {}
        }
    }

    fn check_coding(&mut self, coding: &Map<String, Value>, binding: u32) {
        let b = &self.schema.bindings[binding as usize];
        let (Some(Value::String(system)), Some(Value::String(code))) = (coding.get("system"), coding.get("code"))
        else {
            return;
        };
        if b.systems.contains(&system.as_str()) && !b.pairs.contains(&(system.as_str(), code.as_str())) {
            let url = b.url;
            self.issue(
                "code-invalid",
                Some("code"),
                format!(
                    "The code '{}' of {system} is not in the required value set {url}.",
                    truncate(code)
                ),
            );
        }
    }

    /// The `_x` companion of a primitive: an {id, extension} object, or for a repeating
    /// element an array parallel to `x` (null where there is no extension).
    fn primitive_extension(&mut self, child: &Child, value: &'v Value, base: Option<&'v Value>) {
        let Kind::Primitive(_, node) = child.kind else {
            return;
        };
        let key = child.el.name();
        if child.el.is_array() {
            let Value::Array(items) = value else {
                self.issue(
                    "structure",
                    None,
                    format!(
                        "The '_' form of the repeating element '{key}' must be a JSON array, not {}.",
                        json_kind(value)
                    ),
                );
                return;
            };
            if items.is_empty() {
                self.issue("structure", None, "Empty arrays are not allowed in FHIR JSON.".into());
                return;
            }
            let base_items = match base {
                Some(Value::Array(b)) => Some(b),
                _ => None,
            };
            if let Some(b) = base_items {
                if b.len() != items.len() {
                    self.issue(
                        "structure",
                        None,
                        format!(
                            "The arrays of the primitive element '{key}' and its extensions differ in length ({} and {}).",
                            b.len(),
                            items.len()
                        ),
                    );
                }
            }
            if !self.enter() {
                return;
            }
            for (i, item) in items.iter().enumerate() {
                self.path.push(Seg::Index(i));
                match item {
                    Value::Null => {
                        // Both null at the same index is reported from the value side.
                        let has_value = base_items.and_then(|b| b.get(i)).is_some();
                        if !has_value {
                            self.issue(
                                "structure",
                                None,
                                format!("The element '{key}' has neither a value nor an extension at this index."),
                            );
                        }
                    }
                    Value::Object(obj) => self.extension_object(obj, node),
                    other => self.issue(
                        "structure",
                        None,
                        format!(
                            "The extensions of a primitive must be a JSON object (or null), not {}.",
                            json_kind(other)
                        ),
                    ),
                }
                self.path.pop();
            }
            self.leave();
        } else {
            match value {
                Value::Object(obj) => self.extension_object(obj, node),
                other => self.issue(
                    "structure",
                    None,
                    format!(
                        "The extensions of a primitive must be a JSON object, not {}.",
                        json_kind(other)
                    ),
                ),
            }
        }
    }

    fn extension_object(&mut self, obj: &'v Map<String, Value>, node: u32) {
        if self.enter() {
            self.object(obj, node, false);
            self.leave();
        }
    }
}

/// At most 100 characters of a value, for messages.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(100) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// For a value already matching the date/dateTime/instant regex: false when its
/// `YYYY-MM-DD` part names a day that does not exist (e.g. 2023-02-30).
fn is_calendar_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 10 {
        return true;
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d.wrapping_sub(b'0')))
    };
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    day <= days
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issues(v: Value) -> Vec<Issue> {
        validate_resource(&v)
    }

    /// The single issue of `v` (fails when there is not exactly one).
    fn one(v: Value) -> Issue {
        let found = issues(v);
        assert_eq!(found.len(), 1, "expected one issue, got {found:#?}");
        found.into_iter().next().unwrap()
    }

    fn assert_valid(v: Value) {
        let found = issues(v);
        assert!(found.is_empty(), "expected no issue, got {found:#?}");
    }

    #[test]
    fn schema_resolves_everything_and_regexes_compile() {
        assert!(SCHEMA.unresolved.is_empty(), "{:?}", SCHEMA.unresolved);
        let names: Vec<_> = SCHEMA.regexes.iter().map(|(n, _)| *n).collect();
        for t in [
            "id",
            "date",
            "dateTime",
            "instant",
            "time",
            "code",
            "oid",
            "uuid",
            "base64Binary",
        ] {
            assert!(names.contains(&t), "{t} has no compiled regex");
        }
    }

    #[test]
    fn regex_translation_is_ascii_whitespace() {
        let re = Regex::new(&translate_regex(r"[^\s]+(\s[^\s]+)*")).unwrap();
        assert!(re.is_match("a b"));
        assert!(!re.is_match("a  b"));
        assert!(!re.is_match(" a"));
        assert!(
            re.is_match("a\u{a0}b"),
            "NBSP is not whitespace in the FHIR (Java) sense"
        );
        let re = Regex::new(&translate_regex(r"\\s")).unwrap();
        assert!(re.is_match(r"\s"));
    }

    #[test]
    fn valid_patient() {
        assert_valid(json!({
            "resourceType": "Patient",
            "id": "p1",
            "meta": {"lastUpdated": "2023-01-01T00:00:00Z", "versionId": "1"},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "extension": [{"url": "http://example.org/x", "valueString": "y"}],
            "active": true,
            "name": [{"family": "Doe", "given": ["John", "Q"], "id": "n_1"}],
            "gender": "male",
            "birthDate": "1970-01-01",
            "multipleBirthInteger": 2,
            "contact": [{"name": {"family": "Roe"}, "relationship": [{"coding": [{"system": "http://x", "code": "N"}]}]}]
        }));
    }

    #[test]
    fn unknown_element_at_root() {
        let i = one(json!({"resourceType": "Patient", "foo": 1}));
        assert_eq!((i.code, i.expression.as_str()), ("structure", "Patient.foo"));
        assert!(i.diagnostics.contains("'foo'"), "{}", i.diagnostics);
    }

    #[test]
    fn unknown_element_nested() {
        let i = one(json!({"resourceType": "Patient", "contact": [{"gender": "male"}, {"foo": "x"}]}));
        assert_eq!((i.code, i.expression.as_str()), ("structure", "Patient.contact[1].foo"));
        let i = one(json!({"resourceType": "Patient", "name": [{"given": ["a"], "first": "b"}]}));
        assert_eq!(i.expression, "Patient.name[0].first");
    }

    #[test]
    fn resource_type_checks() {
        let i = one(json!({"id": "x"}));
        assert_eq!(i.code, "structure");
        let i = one(json!({"resourceType": "Patients"}));
        assert_eq!(i.code, "not-supported");
        let i = one(json!({"resourceType": "DomainResource"}));
        assert_eq!(i.code, "not-supported");
        let i = one(json!({"resourceType": 5}));
        assert_eq!(i.code, "structure");
        let i = one(json!({"resourceType": "Patient", "name": [{"resourceType": "Patient"}]}));
        assert_eq!(i.expression, "Patient.name[0].resourceType");
    }

    #[test]
    fn non_object_input() {
        for v in [json!(null), json!([]), json!("Patient"), json!(3), json!(true)] {
            let i = one(v);
            assert_eq!((i.code, i.expression.as_str()), ("structure", ""));
        }
    }

    #[test]
    fn wrong_json_types() {
        let i = one(json!({"resourceType": "Patient", "birthDate": 123}));
        assert_eq!((i.code, i.expression.as_str()), ("structure", "Patient.birthDate"));
        let i = one(json!({"resourceType": "Patient", "active": "true"}));
        assert_eq!((i.code, i.expression.as_str()), ("structure", "Patient.active"));
        let i = one(json!({"resourceType": "Patient", "multipleBirthInteger": "2"}));
        assert_eq!(i.expression, "Patient.multipleBirthInteger");
        let i = one(json!({"resourceType": "Patient", "multipleBirthInteger": 2.5}));
        assert_eq!(i.code, "value");
        let i = one(json!({"resourceType": "Patient", "name": [{"family": ["Doe"]}]}));
        assert_eq!(i.expression, "Patient.name[0].family");
        let i = one(json!({"resourceType": "Patient", "name": ["Doe"]}));
        assert_eq!(i.expression, "Patient.name[0]");
        let i = one(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": "5"}}),
        );
        assert_eq!(i.expression, "Observation.valueQuantity.value");
        let i = one(json!({"resourceType": "Patient", "text": {"status": "generated", "div": {"p": "x"}}}));
        assert_eq!(i.expression, "Patient.text.div");
    }

    #[test]
    fn integer_ranges() {
        let obs = |v: Value| json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": v});
        assert_valid(obs(json!(-2147483648i64)));
        assert_eq!(one(obs(json!(2147483648i64))).code, "value");
        assert_eq!(one(obs(json!(18446744073709551615u64))).code, "value");
        let pos = |v: Value| json!({"resourceType": "Patient", "photo": [{"size": v}]});
        assert_valid(pos(json!(0)));
        assert_eq!(one(pos(json!(-1))).expression, "Patient.photo[0].size");
        let rank = |v: Value| json!({"resourceType": "Patient", "telecom": [{"rank": v}]});
        assert_valid(rank(json!(1)));
        assert_eq!(one(rank(json!(0))).expression, "Patient.telecom[0].rank");
        let dec = |v: Value| json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": v}});
        assert_valid(dec(json!(1.5)));
        assert_valid(dec(json!(-3)));
    }

    #[test]
    fn array_versus_single() {
        let i = one(json!({"resourceType": "Patient", "name": {"family": "Doe"}}));
        assert_eq!((i.code, i.expression.as_str()), ("structure", "Patient.name"));
        let i = one(json!({"resourceType": "Patient", "gender": ["male"]}));
        assert_eq!((i.code, i.expression.as_str()), ("structure", "Patient.gender"));
        let i = one(json!({"resourceType": "Patient", "name": [{"given": "John"}]}));
        assert_eq!(i.expression, "Patient.name[0].given");
    }

    #[test]
    fn missing_required() {
        let found = issues(json!({"resourceType": "Observation"}));
        let mut got: Vec<_> = found.iter().map(|i| (i.code, i.expression.as_str())).collect();
        got.sort();
        assert_eq!(
            got,
            [("required", "Observation.code"), ("required", "Observation.status")]
        );
        let i = one(json!({"resourceType": "Patient", "extension": [{"valueString": "x"}]}));
        assert_eq!(
            (i.code, i.expression.as_str()),
            ("required", "Patient.extension[0].url")
        );
        // A required choice (MedicationRequest.medication[x]).
        let i = one(
            json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": {"reference": "Patient/1"}}),
        );
        assert_eq!(
            (i.code, i.expression.as_str()),
            ("required", "MedicationRequest.medication")
        );
        // Satisfied by the `_x` form alone.
        assert_valid(
            json!({"resourceType": "Observation", "code": {"text": "x"}, "_status": {"extension": [{"url": "http://e", "valueCode": "final"}]}}),
        );
    }

    #[test]
    fn max_cardinality_of_choices() {
        let i = one(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueString": "a", "valueBoolean": true}),
        );
        assert_eq!(i.code, "structure");
        assert!(i.expression.starts_with("Observation.value"), "{}", i.expression);
    }

    #[test]
    fn bad_primitive_formats() {
        let i = one(json!({"resourceType": "Patient", "birthDate": "2020-13-01"}));
        assert_eq!((i.code, i.expression.as_str()), ("value", "Patient.birthDate"));
        let i = one(json!({"resourceType": "Patient", "birthDate": "2023-02-30"}));
        assert_eq!(i.expression, "Patient.birthDate");
        assert_valid(json!({"resourceType": "Patient", "birthDate": "2024-02-29"}));
        assert_eq!(
            one(json!({"resourceType": "Patient", "birthDate": "2023-02-29"})).code,
            "value"
        );
        assert_valid(json!({"resourceType": "Patient", "birthDate": "2023"}));
        let i = one(json!({"resourceType": "Patient", "id": "a/b"}));
        assert_eq!((i.code, i.expression.as_str()), ("value", "Patient.id"));
        let i = one(json!({"resourceType": "Patient", "meta": {"lastUpdated": "2023-01-01T10:00:00"}}));
        assert_eq!(i.expression, "Patient.meta.lastUpdated");
        assert_valid(json!({"resourceType": "Patient", "meta": {"lastUpdated": "2023-01-01T10:00:00.123+02:00"}}));
        let i = one(json!({"resourceType": "Patient", "deceasedDateTime": "2023-01-01T10:00"}));
        assert_eq!(i.expression, "Patient.deceasedDateTime");
        let i = one(json!({"resourceType": "Patient", "implicitRules": "http://a b"}));
        assert_eq!(i.expression, "Patient.implicitRules");
        let i = one(json!({"resourceType": "Patient", "language": "en  US"}));
        assert_eq!(i.expression, "Patient.language");
        let i = one(json!({"resourceType": "Patient", "name": [{"family": "a\u{0}b"}]}));
        assert_eq!(i.expression, "Patient.name[0].family");
        let i = one(json!({"resourceType": "Patient", "photo": [{"data": "abc"}]}));
        assert_eq!(i.expression, "Patient.photo[0].data");
        assert_valid(json!({"resourceType": "Patient", "photo": [{"data": "aGVsbG8="}]}));
        let ext = |v: Value| json!({"resourceType": "Patient", "extension": [v]});
        assert_valid(ext(json!({"url": "http://e", "valueOid": "urn:oid:1.2.3"})));
        let i = one(ext(json!({"url": "http://e", "valueOid": "urn:oid:1.2.x"})));
        assert_eq!(
            (i.code, i.expression.as_str()),
            ("value", "Patient.extension[0].valueOid")
        );
        assert_valid(ext(
            json!({"url": "http://e", "valueUuid": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"}),
        ));
        assert_eq!(
            one(ext(
                json!({"url": "http://e", "valueUuid": "0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"})
            ))
            .code,
            "value"
        );
        assert_valid(ext(json!({"url": "http://e", "valueTime": "10:00:00"})));
        assert_eq!(one(ext(json!({"url": "http://e", "valueTime": "10:00"}))).code, "value");
        assert_eq!(one(ext(json!({"url": "http://e", "valueCode": " x"}))).code, "value");
    }

    #[test]
    fn element_ids_are_strings_not_logical_ids() {
        assert_valid(json!({"resourceType": "Patient", "name": [{"id": "a b/c", "family": "x"}]}));
    }

    #[test]
    fn required_bindings() {
        let i = one(json!({"resourceType": "Patient", "gender": "woman"}));
        assert_eq!((i.code, i.expression.as_str()), ("code-invalid", "Patient.gender"));
        assert!(i.diagnostics.contains("woman"));
        let i = one(json!({"resourceType": "Patient", "name": [{"use": "nick"}]}));
        assert_eq!((i.code, i.expression.as_str()), ("code-invalid", "Patient.name[0].use"));
        // CodeableConcept: only codings of the value set's own system are checked.
        let cond = |system: &str, code: &str| {
            json!({"resourceType": "Condition", "subject": {"reference": "Patient/1"},
                   "clinicalStatus": {"coding": [{"system": system, "code": code}]}})
        };
        assert_valid(cond(
            "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "active",
        ));
        assert_valid(cond("http://example.org/other", "whatever"));
        let i = one(cond(
            "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "bogus",
        ));
        assert_eq!(
            (i.code, i.expression.as_str()),
            ("code-invalid", "Condition.clinicalStatus.coding[0].code")
        );
    }

    #[test]
    fn choice_types() {
        assert_valid(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "valueQuantity": {"value": 5.4, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
            "effectiveDateTime": "2023-01-01"}),
        );
        let i = one(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueFoo": 1}));
        assert_eq!((i.code, i.expression.as_str()), ("structure", "Observation.valueFoo"));
        let i = one(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "value": 1}));
        assert_eq!(i.expression, "Observation.value");
        let i = one(json!({"resourceType": "Patient", "extension": [{"url": "http://e", "valueFoo": 1}]}));
        assert_eq!(i.expression, "Patient.extension[0].valueFoo");
        assert_valid(
            json!({"resourceType": "Patient", "extension": [{"url": "http://e", "valueHumanName": {"family": "x"}}]}),
        );
    }

    #[test]
    fn primitive_extensions() {
        let ext = json!({"extension": [{"url": "http://e", "valueString": "x"}]});
        assert_valid(json!({"resourceType": "Patient", "birthDate": "1970", "_birthDate": ext}));
        assert_valid(json!({"resourceType": "Patient", "_birthDate": ext}));
        let i = one(json!({"resourceType": "Patient", "_birthDate": {"extension": [{"valueString": "x"}]}}));
        assert_eq!(
            (i.code, i.expression.as_str()),
            ("required", "Patient.birthDate.extension[0].url")
        );
        let i = one(json!({"resourceType": "Patient", "_birthDate": {"foo": 1}}));
        assert_eq!(i.expression, "Patient.birthDate.foo");
        let i = one(json!({"resourceType": "Patient", "_birthDate": "x"}));
        assert_eq!(i.expression, "Patient.birthDate");
        let i = one(json!({"resourceType": "Patient", "_name": {"id": "x"}}));
        assert_eq!(i.expression, "Patient._name");
        let i = one(json!({"resourceType": "Patient", "_foo": {"id": "x"}}));
        assert_eq!(i.expression, "Patient._foo");
        // Parallel arrays with nulls.
        assert_valid(json!({"resourceType": "Patient", "name": [{"given": ["a", null], "_given": [null, ext]}]}));
        let i = one(json!({"resourceType": "Patient", "name": [{"given": ["a", null]}]}));
        assert_eq!(i.expression, "Patient.name[0].given[1]");
        let i = one(json!({"resourceType": "Patient", "name": [{"given": ["a", null], "_given": [ext, null]}]}));
        assert_eq!(i.expression, "Patient.name[0].given[1]");
        let i = one(json!({"resourceType": "Patient", "name": [{"given": ["a"], "_given": [null, ext]}]}));
        assert_eq!(i.expression, "Patient.name[0].given");
        let i = one(json!({"resourceType": "Patient", "name": [{"_given": [null]}]}));
        assert_eq!(i.expression, "Patient.name[0].given[0]");
        let i = one(json!({"resourceType": "Patient", "name": [{"_given": ext}]}));
        assert_eq!(i.expression, "Patient.name[0].given");
        let i = one(json!({"resourceType": "Patient", "name": [{"family": null}]}));
        assert_eq!(i.expression, "Patient.name[0].family");
    }

    #[test]
    fn contained_resources() {
        assert_valid(
            json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o", "name": "x"}],
            "managingOrganization": {"reference": "#o"}}),
        );
        let i = one(
            json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o", "foo": "x"}]}),
        );
        assert_eq!(
            (i.code, i.expression.as_str()),
            ("structure", "Patient.contained[0].foo")
        );
        let i = one(json!({"resourceType": "Patient", "contained": [{"id": "o"}]}));
        assert_eq!((i.code, i.expression.as_str()), ("structure", "Patient.contained[0]"));
        let i = one(json!({"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]}));
        assert_eq!(i.code, "not-supported");
    }

    #[test]
    fn bundle_entries_are_validated_recursively() {
        let i = one(json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "resource": {"resourceType": "Patient"}},
            {"resource": {"resourceType": "Patient", "birthDate": "yesterday"}}
        ]}));
        assert_eq!(
            (i.code, i.expression.as_str()),
            ("value", "Bundle.entry[1].resource.birthDate")
        );
        let i = one(json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final"}}]}));
        assert_eq!(
            (i.code, i.expression.as_str()),
            ("required", "Bundle.entry[0].resource.code")
        );
        let i = one(
            json!({"resourceType": "Parameters", "parameter": [{"name": "p", "resource": {"resourceType": "Patient", "x": 1}}]}),
        );
        assert_eq!(i.expression, "Parameters.parameter[0].resource.x");
    }

    #[test]
    fn content_references() {
        assert_valid(json!({"resourceType": "Questionnaire", "status": "draft", "item": [
            {"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string", "text": "Name?"}]}]}));
        let i = one(json!({"resourceType": "Questionnaire", "status": "draft", "item": [
            {"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string", "foo": 1}]}]}));
        assert_eq!(i.expression, "Questionnaire.item[0].item[0].foo");
        let i = one(json!({"resourceType": "Questionnaire", "status": "draft", "item": [
            {"linkId": "1", "type": "group", "item": [{"linkId": "1.1"}]}]}));
        assert_eq!(
            (i.code, i.expression.as_str()),
            ("required", "Questionnaire.item[0].item[0].type")
        );
    }

    #[test]
    fn empty_values() {
        let i = one(json!({"resourceType": "Patient", "birthDate": ""}));
        assert_eq!((i.code, i.expression.as_str()), ("value", "Patient.birthDate"));
        let i = one(json!({"resourceType": "Patient", "name": [{"family": ""}]}));
        assert_eq!(i.expression, "Patient.name[0].family");
        let i = one(json!({"resourceType": "Patient", "maritalStatus": {}}));
        assert_eq!((i.code, i.expression.as_str()), ("structure", "Patient.maritalStatus"));
        let i = one(json!({"resourceType": "Patient", "name": []}));
        assert_eq!((i.code, i.expression.as_str()), ("structure", "Patient.name"));
        let i = one(json!({"resourceType": "Patient", "name": [{}]}));
        assert_eq!(i.expression, "Patient.name[0]");
    }

    #[test]
    fn deep_nesting_does_not_panic() {
        // Questionnaire items nest legitimately through a content reference.
        let mut item = json!({"linkId": "x", "type": "group"});
        for _ in 0..200 {
            item = json!({"linkId": "x", "type": "group", "item": [item]});
        }
        let found = issues(json!({"resourceType": "Questionnaire", "status": "draft", "item": [item]}));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].code, "too-costly");
        // Nested extensions.
        let mut ext = json!({"url": "http://e", "valueString": "x"});
        for _ in 0..200 {
            ext = json!({"url": "http://e", "extension": [ext]});
        }
        let found = issues(json!({"resourceType": "Patient", "extension": [ext]}));
        assert_eq!(found.iter().filter(|i| i.code == "too-costly").count(), 1);
        // Deep junk under an unknown key is never walked.
        let mut junk = json!(1);
        for _ in 0..1_000 {
            junk = json!([junk]);
        }
        let found = issues(json!({"resourceType": "Patient", "foo": junk}));
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn random_shapes_do_not_panic() {
        let shapes = [
            json!(null),
            json!(1),
            json!(-1.5),
            json!(""),
            json!("x"),
            json!([]),
            json!({}),
            json!([null]),
            json!({"a": 1}),
        ];
        for rt in ["Patient", "Observation", "Bundle", "Questionnaire"] {
            for (key, _) in SCHEMA.nodes[SCHEMA.resources[rt] as usize].children.iter() {
                for shape in &shapes {
                    for k in [key.to_string(), format!("_{key}")] {
                        let mut obj = Map::new();
                        obj.insert("resourceType".into(), json!(rt));
                        obj.insert(k, shape.clone());
                        let _ = issues(Value::Object(obj));
                    }
                }
            }
        }
    }
}
