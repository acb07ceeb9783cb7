//! Search parameters of the sandbox: the one table of supported (resource type,
//! parameter) pairs, the extraction of a small search index from a resource at write
//! time, and the parsing of a search request into a [`SearchQuery`].
//!
//! The table follows the R4 `SearchParameter` definitions (FHIR 4.0.1) for the types
//! the generator produces plus a few that portals commonly write. Paths are a small
//! subset of FHIRPath: dot-separated element names, arrays walked at every step, and
//! `name[x]` for a choice element (`effective[x]` matches `effectiveDateTime`,
//! `effectivePeriod`, ...). A reference parameter that R4 restricts with
//! `.where(resolve() is Patient)` lists its allowed target types.
//!
//! Invariants:
//! - parameters of one type with the same kind and paths share one index *field*
//!   (`patient` and `subject` on Observation read the same extracted references; the
//!   `patient` parameter just only accepts `Patient/...` values), so every reference is
//!   extracted and indexed once;
//! - references are compared as parsed `Type/id` strings, never as substrings;
//! - query parsing never panics on input: every bad value is a [`SearchError`].

use std::collections::HashMap;
use std::sync::OnceLock;

use portico_fhir::reference::Reference;
use portico_fhir::search::{DateRange, Prefix, split_or, split_prefix};
use serde_json::Value;

/// The kind of a search parameter (R4 `SearchParamType`), as far as the sandbox supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    Reference,
    Token,
    Date,
    String,
}

impl ParamKind {
    /// The R4 `SearchParamType` code.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamKind::Reference => "reference",
            ParamKind::Token => "token",
            ParamKind::Date => "date",
            ParamKind::String => "string",
        }
    }
}

/// One search parameter of one resource type.
#[derive(Debug, Clone, Copy)]
pub struct ParamDef {
    pub name: &'static str,
    pub kind: ParamKind,
    /// Element paths, relative to the resource.
    pub paths: &'static [&'static str],
    /// For reference parameters: the resource types a value may point at (empty: any).
    pub targets: &'static [&'static str],
}

mod table;

pub use table::TABLE;

/// What a parameter resolves to within its type: its definition and its index field.
#[derive(Debug, Clone, Copy)]
pub struct ParamInfo {
    pub def: &'static ParamDef,
    /// Index field number within the type (parameters with equal kind and paths share one).
    pub field: u8,
}

/// One extracted index field of a type.
#[derive(Debug, Clone)]
pub struct FieldDef {
    pub kind: ParamKind,
    pub paths: Vec<Vec<&'static str>>,
    /// Whether a reverse index (value → resources) is kept for this field: every reference
    /// field, and the `identifier` token field (conditional creates look it up).
    pub inverted: bool,
}

/// A supported resource type with its parameters and index fields.
#[derive(Debug)]
pub struct TypeInfo {
    pub name: &'static str,
    /// Position in [`types`]; the store keys its tables by it.
    pub index: usize,
    pub params: Vec<ParamInfo>,
    pub fields: Vec<FieldDef>,
}

impl TypeInfo {
    /// The parameter called `name`, if this type has one.
    pub fn param(&self, name: &str) -> Option<&ParamInfo> {
        self.params.iter().find(|p| p.def.name == name)
    }
}

/// Every supported resource type, in the order of [`TABLE`] (sorted by name).
pub fn types() -> &'static [TypeInfo] {
    static TYPES: OnceLock<Vec<TypeInfo>> = OnceLock::new();
    TYPES.get_or_init(|| {
        TABLE
            .iter()
            .enumerate()
            .map(|(index, (name, defs))| {
                let mut fields: Vec<FieldDef> = Vec::new();
                let mut keys: HashMap<(ParamKind, &'static [&'static str]), u8> = HashMap::new();
                let params = defs
                    .iter()
                    .map(|def| {
                        let next = fields.len() as u8;
                        let field = *keys.entry((def.kind, def.paths)).or_insert_with(|| {
                            fields.push(FieldDef {
                                kind: def.kind,
                                paths: def.paths.iter().map(|p| p.split('.').collect()).collect(),
                                inverted: def.kind == ParamKind::Reference
                                    || def.name == "identifier",
                            });
                            next
                        });
                        ParamInfo { def, field }
                    })
                    .collect();
                TypeInfo {
                    name,
                    index,
                    params,
                    fields,
                }
            })
            .collect()
    })
}

/// The supported type called `name`.
pub fn type_info(name: &str) -> Option<&'static TypeInfo> {
    let all = types();
    all.binary_search_by(|t| t.name.cmp(name))
        .ok()
        .map(|i| &all[i])
}

// ---------------------------------------------------------------------------------------
// Extraction

/// One value extracted from a resource for one index field.
#[derive(Debug, Clone, PartialEq)]
pub enum Extracted {
    /// A reference target, `Type/id`.
    Ref(String),
    /// A token: (system, code).
    Token(Option<String>, String),
    /// A date range `[start, end)` in epoch milliseconds.
    Date(i64, i64),
    /// A string, as written.
    Str(String),
}

/// Extracts the index values of every field of `ty` from `resource`.
pub fn extract(ty: &TypeInfo, resource: &Value) -> Vec<(u8, Extracted)> {
    let mut out = Vec::new();
    let mut nodes = Vec::new();
    for (field_no, field) in ty.fields.iter().enumerate() {
        let field_no = field_no as u8;
        nodes.clear();
        for path in &field.paths {
            walk(resource, path, &mut nodes);
        }
        for node in &nodes {
            match field.kind {
                ParamKind::Reference => {
                    if let Some(target) = node
                        .get("reference")
                        .and_then(Value::as_str)
                        .and_then(|s| Reference::parse(s).ok())
                    {
                        let value = Extracted::Ref(target.relative());
                        if !out.contains(&(field_no, value.clone())) {
                            out.push((field_no, value));
                        }
                    }
                }
                ParamKind::Token => extract_tokens(node, &mut |system, code| {
                    out.push((field_no, Extracted::Token(system, code)));
                }),
                ParamKind::Date => extract_dates(node, &mut |start, end| {
                    out.push((field_no, Extracted::Date(start, end)));
                }),
                ParamKind::String => extract_strings(node, &mut |s| {
                    out.push((field_no, Extracted::Str(s.to_owned())));
                }),
            }
        }
    }
    out
}

/// Collects the nodes at `path` under `v`, walking arrays at every step and flattening
/// arrays at the end.
fn walk<'a>(v: &'a Value, path: &[&str], out: &mut Vec<&'a Value>) {
    if let Value::Array(items) = v {
        for item in items {
            walk(item, path, out);
        }
        return;
    }
    let Some((first, rest)) = path.split_first() else {
        out.push(v);
        return;
    };
    let Value::Object(map) = v else { return };
    if let Some(prefix) = first.strip_suffix("[x]") {
        for (key, child) in map {
            let is_choice = key
                .strip_prefix(prefix)
                .and_then(|suffix| suffix.chars().next())
                .is_some_and(|c| c.is_ascii_uppercase());
            if is_choice {
                walk(child, rest, out);
            }
        }
    } else if let Some(child) = map.get(*first) {
        walk(child, rest, out);
    }
}

fn extract_tokens(node: &Value, emit: &mut dyn FnMut(Option<String>, String)) {
    let system_of = |v: &Value| v.get("system").and_then(Value::as_str).map(str::to_owned);
    match node {
        Value::String(s) => emit(None, s.clone()),
        Value::Bool(b) => emit(None, b.to_string()),
        Value::Object(map) => {
            if let Some(Value::Array(codings)) = map.get("coding") {
                for coding in codings {
                    if let Some(code) = coding.get("code").and_then(Value::as_str) {
                        emit(system_of(coding), code.to_owned());
                    }
                }
            } else if let Some(code) = map.get("code").and_then(Value::as_str) {
                emit(system_of(node), code.to_owned());
            } else if let Some(value) = map.get("value").and_then(Value::as_str) {
                emit(system_of(node), value.to_owned());
            }
        }
        _ => {}
    }
}

fn extract_dates(node: &Value, emit: &mut dyn FnMut(i64, i64)) {
    match node {
        Value::String(s) => {
            if let Some(r) = DateRange::parse(s) {
                emit(r.start, r.end);
            }
        }
        Value::Object(map) => {
            if map.contains_key("start") || map.contains_key("end") {
                let start = map.get("start").and_then(Value::as_str);
                let end = map.get("end").and_then(Value::as_str);
                if let Some(r) = DateRange::period(start, end) {
                    emit(r.start, r.end);
                }
            }
            // Timing: every event, and the bounds of the repeat.
            if let Some(Value::Array(events)) = map.get("event") {
                for event in events.iter().filter_map(Value::as_str) {
                    if let Some(r) = DateRange::parse(event) {
                        emit(r.start, r.end);
                    }
                }
            }
            if let Some(bounds) = map.get("repeat").and_then(|r| r.get("boundsPeriod")) {
                extract_dates(bounds, emit);
            }
        }
        _ => {}
    }
}

fn extract_strings(node: &Value, emit: &mut dyn FnMut(&str)) {
    const PARTS: &[&str] = &[
        "text",
        "family",
        "given",
        "prefix",
        "suffix",
        "line",
        "city",
        "district",
        "state",
        "postalCode",
        "country",
    ];
    match node {
        Value::String(s) => emit(s),
        Value::Object(map) => {
            for part in PARTS {
                match map.get(*part) {
                    Some(Value::String(s)) => emit(s),
                    Some(Value::Array(items)) => {
                        items.iter().filter_map(Value::as_str).for_each(&mut *emit)
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Queries

/// Why a search request cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("unknown search parameter '{0}'")]
    UnknownParameter(String),
    #[error("unsupported modifier ':{modifier}' on search parameter '{param}'")]
    UnsupportedModifier { param: String, modifier: String },
    #[error("invalid value for search parameter '{param}': {reason}")]
    InvalidValue { param: String, reason: String },
    #[error("unsupported format '{0}': this server speaks JSON only")]
    UnsupportedFormat(String),
}

impl SearchError {
    fn invalid(param: &str, reason: impl Into<String>) -> SearchError {
        SearchError::InvalidValue {
            param: param.to_owned(),
            reason: reason.into(),
        }
    }
}

/// How a string parameter compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMatch {
    /// Case-insensitive prefix (the FHIR default).
    StartsWith,
    /// Case-sensitive equality.
    Exact,
    /// Case-insensitive substring.
    Contains,
}

/// One AND-ed condition of a search; its values are OR-ed.
#[derive(Debug, Clone)]
pub enum Criterion {
    /// `_id`.
    Id(Vec<String>),
    /// `_lastUpdated`.
    LastUpdated(Vec<(Prefix, DateRange)>),
    /// `param:missing=true|false`. `targets` restricts which references count.
    Missing {
        field: u8,
        targets: &'static [&'static str],
        missing: bool,
    },
    /// A reference parameter; values are `Type/id`.
    Ref { field: u8, values: Vec<String> },
    /// A token parameter; `not` for `:not`.
    Token {
        field: u8,
        not: bool,
        values: Vec<(Option<String>, String)>,
    },
    /// A date parameter.
    Date {
        field: u8,
        values: Vec<(Prefix, DateRange)>,
    },
    /// A string parameter; values are lower-cased unless `mode` is `Exact`.
    Str {
        field: u8,
        mode: StringMatch,
        values: Vec<String>,
    },
}

/// What a result set is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Id,
    LastUpdated,
    /// A date field of the searched type.
    Date(u8),
}

/// One `_sort` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub by: SortBy,
    pub descending: bool,
}

/// One `_include` or `_revinclude`: references of `source` (a type) in `field`,
/// optionally restricted to target types.
#[derive(Debug, Clone)]
pub struct IncludeSpec {
    pub source: &'static TypeInfo,
    pub field: u8,
    /// Allowed target types (empty: any).
    pub targets: Vec<&'static str>,
    pub iterate: bool,
}

/// A parsed search request on one type.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub ty: &'static TypeInfo,
    pub criteria: Vec<Criterion>,
    /// Page size (`_count`), at most [`MAX_COUNT`].
    pub count: usize,
    /// Index of the first match on the page (`_offset`).
    pub offset: usize,
    pub sort: Vec<SortKey>,
    pub include: Vec<IncludeSpec>,
    pub revinclude: Vec<IncludeSpec>,
    /// `_summary=count` (or `_count=0`): only the total.
    pub summary_count: bool,
    /// The parameters as understood (without `_offset` and `_count`), for paging links.
    pub link_params: Vec<(String, String)>,
}

/// The default page size.
pub const DEFAULT_COUNT: usize = 50;
/// The largest page size; larger `_count` values are clamped to it.
pub const MAX_COUNT: usize = 1000;

impl SearchQuery {
    /// A query with no criteria: every resource of `ty`.
    pub fn all(ty: &'static TypeInfo) -> SearchQuery {
        SearchQuery {
            ty,
            criteria: Vec::new(),
            count: DEFAULT_COUNT,
            offset: 0,
            sort: Vec::new(),
            include: Vec::new(),
            revinclude: Vec::new(),
            summary_count: false,
            link_params: Vec::new(),
        }
    }

    /// Parses the (decoded) parameters of a search on `ty`. With `lenient`, unknown
    /// parameters are ignored instead of refused (`Prefer: handling=lenient`).
    pub fn parse(
        ty: &'static TypeInfo,
        params: &[(String, String)],
        lenient: bool,
    ) -> Result<SearchQuery, SearchError> {
        let mut q = SearchQuery::all(ty);
        for (raw_name, value) in params {
            match parse_one(ty, &mut q, raw_name, value) {
                Ok(true) => {
                    if raw_name != "_offset" && raw_name != "_count" {
                        q.link_params.push((raw_name.clone(), value.clone()));
                    }
                }
                Ok(false) => {}
                Err(SearchError::UnknownParameter(_) | SearchError::UnsupportedModifier { .. })
                    if lenient => {}
                Err(e) => return Err(e),
            }
        }
        Ok(q)
    }
}

/// Applies one parameter to `q`; `Ok(false)` when it was accepted but has no effect.
fn parse_one(
    ty: &'static TypeInfo,
    q: &mut SearchQuery,
    raw_name: &str,
    value: &str,
) -> Result<bool, SearchError> {
    let (name, modifier) = match raw_name.split_once(':') {
        Some((n, m)) => (n, Some(m)),
        None => (raw_name, None),
    };
    let no_modifier = |q: &str| -> Result<(), SearchError> {
        match modifier {
            None => Ok(()),
            Some(m) => Err(SearchError::UnsupportedModifier {
                param: q.to_owned(),
                modifier: m.to_owned(),
            }),
        }
    };
    match name {
        "_count" => {
            no_modifier(name)?;
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| SearchError::invalid(name, "expected a non-negative integer"))?;
            if n == 0 {
                q.summary_count = true;
            }
            q.count = n.min(MAX_COUNT);
            return Ok(true);
        }
        "_offset" => {
            no_modifier(name)?;
            q.offset = value
                .trim()
                .parse()
                .map_err(|_| SearchError::invalid(name, "expected a non-negative integer"))?;
            return Ok(true);
        }
        "_summary" => {
            no_modifier(name)?;
            match value {
                "count" => q.summary_count = true,
                // Whole resources: a server may return more than the summary asks
                // (and the sandbox does not mark subsets).
                "false" | "true" | "text" | "data" => {}
                other => {
                    return Err(SearchError::invalid(
                        name,
                        format!("expected count, true, text, data or false, not '{other}'"),
                    ));
                }
            }
            return Ok(true);
        }
        // Whole resources, as for `_summary`.
        "_elements" => {
            no_modifier(name)?;
            return Ok(true);
        }
        "_total" => {
            no_modifier(name)?;
            return match value {
                "none" | "estimate" | "accurate" => Ok(true),
                _ => Err(SearchError::invalid(
                    name,
                    "expected none, estimate or accurate",
                )),
            };
        }
        "_format" => {
            no_modifier(name)?;
            return match value {
                "json" | "application/json" | "application/fhir+json" | "application/json+fhir" => {
                    Ok(false)
                }
                other => Err(SearchError::UnsupportedFormat(other.to_owned())),
            };
        }
        "_pretty" => return Ok(false),
        "_sort" => {
            no_modifier(name)?;
            for key in value.split(',').filter(|k| !k.is_empty()) {
                let (descending, pname) = match key.strip_prefix('-') {
                    Some(rest) => (true, rest),
                    None => (false, key),
                };
                let by = match pname {
                    "_id" => SortBy::Id,
                    "_lastUpdated" => SortBy::LastUpdated,
                    other => match ty.param(other) {
                        Some(p) if p.def.kind == ParamKind::Date => SortBy::Date(p.field),
                        Some(_) => {
                            return Err(SearchError::invalid(
                                name,
                                format!(
                                    "sorting by '{other}' is not supported (date parameters, _id and _lastUpdated are)"
                                ),
                            ));
                        }
                        None => {
                            return Err(SearchError::UnknownParameter(format!("_sort={other}")));
                        }
                    },
                };
                q.sort.push(SortKey { by, descending });
            }
            return Ok(true);
        }
        "_include" | "_revinclude" => {
            let iterate = match modifier {
                None => false,
                Some("iterate" | "recurse") => true,
                Some(m) => {
                    return Err(SearchError::UnsupportedModifier {
                        param: name.to_owned(),
                        modifier: m.to_owned(),
                    });
                }
            };
            let spec = parse_include(name, value, iterate)?;
            if name == "_include" {
                q.include.push(spec);
            } else {
                q.revinclude.push(spec);
            }
            return Ok(true);
        }
        "_id" => {
            no_modifier(name)?;
            q.criteria.push(Criterion::Id(split_or(value)));
            return Ok(true);
        }
        "_lastUpdated" => {
            no_modifier(name)?;
            q.criteria
                .push(Criterion::LastUpdated(parse_dates(name, value)?));
            return Ok(true);
        }
        _ => {}
    }
    if name.contains('.') {
        return Err(SearchError::UnknownParameter(format!(
            "{name} (chained search is not supported)"
        )));
    }
    let Some(param) = ty.param(name) else {
        return Err(SearchError::UnknownParameter(raw_name.to_owned()));
    };
    let def = param.def;
    let field = param.field;
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(SearchError::invalid(raw_name, "expected true or false")),
        };
        q.criteria.push(Criterion::Missing {
            field,
            targets: def.targets,
            missing,
        });
        return Ok(true);
    }
    let criterion = match def.kind {
        ParamKind::Reference => {
            let type_modifier = match modifier {
                None => None,
                Some(m) if portico_fhir::resource_types::is_known(m) => Some(m),
                Some(m) => {
                    return Err(SearchError::UnsupportedModifier {
                        param: name.to_owned(),
                        modifier: m.to_owned(),
                    });
                }
            };
            let mut values = Vec::new();
            for v in split_or(value) {
                reference_values(def, type_modifier, &v, &mut values)
                    .map_err(|reason| SearchError::invalid(raw_name, reason))?;
            }
            Criterion::Ref { field, values }
        }
        ParamKind::Token => {
            let not = match modifier {
                None => false,
                Some("not") => true,
                Some(m) => {
                    return Err(SearchError::UnsupportedModifier {
                        param: name.to_owned(),
                        modifier: m.to_owned(),
                    });
                }
            };
            let values = split_or(value)
                .iter()
                .map(|v| match v.split_once('|') {
                    Some((system, code)) => (Some(system.to_owned()), code.to_owned()),
                    None => (None, v.clone()),
                })
                .collect();
            Criterion::Token { field, not, values }
        }
        ParamKind::Date => {
            no_modifier(name)?;
            Criterion::Date {
                field,
                values: parse_dates(raw_name, value)?,
            }
        }
        ParamKind::String => {
            let mode = match modifier {
                None => StringMatch::StartsWith,
                Some("exact") => StringMatch::Exact,
                Some("contains") => StringMatch::Contains,
                Some(m) => {
                    return Err(SearchError::UnsupportedModifier {
                        param: name.to_owned(),
                        modifier: m.to_owned(),
                    });
                }
            };
            let values = split_or(value)
                .into_iter()
                .map(|v| {
                    if mode == StringMatch::Exact {
                        v
                    } else {
                        v.to_lowercase()
                    }
                })
                .collect();
            Criterion::Str {
                field,
                mode,
                values,
            }
        }
    };
    q.criteria.push(criterion);
    Ok(true)
}

fn parse_dates(param: &str, value: &str) -> Result<Vec<(Prefix, DateRange)>, SearchError> {
    let values = split_or(value);
    if values.is_empty() {
        return Err(SearchError::invalid(param, "empty value"));
    }
    values
        .iter()
        .map(|v| {
            let (prefix, rest) = split_prefix(v);
            DateRange::parse(rest)
                .map(|range| (prefix, range))
                .ok_or_else(|| SearchError::invalid(param, format!("'{v}' is not a FHIR date")))
        })
        .collect()
}

/// Turns one reference search value into the `Type/id` strings it may match.
fn reference_values(
    def: &ParamDef,
    type_modifier: Option<&str>,
    value: &str,
    out: &mut Vec<String>,
) -> Result<(), String> {
    let allowed = |ty: &str| def.targets.is_empty() || def.targets.contains(&ty);
    if value.contains('/') {
        let reference = Reference::parse(value).map_err(|e| e.to_string())?;
        let type_ok = type_modifier.is_none_or(|m| m == reference.resource_type);
        if type_ok && allowed(&reference.resource_type) {
            out.push(reference.relative());
        }
        return Ok(());
    }
    if !portico_fhir::reference::is_valid_id(value) {
        return Err(format!("'{value}' is not a resource id"));
    }
    match type_modifier {
        Some(m) => {
            if allowed(m) {
                out.push(format!("{m}/{value}"));
            }
        }
        None if !def.targets.is_empty() => {
            out.extend(def.targets.iter().map(|ty| format!("{ty}/{value}")));
        }
        None => out.extend(types().iter().map(|ty| format!("{}/{value}", ty.name))),
    }
    Ok(())
}

fn parse_include(name: &str, value: &str, iterate: bool) -> Result<IncludeSpec, SearchError> {
    let mut parts = value.split(':');
    let (Some(source), Some(pname)) = (parts.next(), parts.next()) else {
        return Err(SearchError::invalid(
            name,
            "expected SourceType:param[:TargetType]",
        ));
    };
    let target = parts.next();
    if parts.next().is_some() {
        return Err(SearchError::invalid(
            name,
            "expected SourceType:param[:TargetType]",
        ));
    }
    let Some(source) = type_info(source) else {
        return Err(SearchError::invalid(
            name,
            format!("unsupported resource type '{source}'"),
        ));
    };
    let Some(param) = source.param(pname) else {
        return Err(SearchError::UnknownParameter(format!("{name}={value}")));
    };
    if param.def.kind != ParamKind::Reference {
        return Err(SearchError::invalid(
            name,
            format!("'{pname}' is not a reference parameter"),
        ));
    }
    let mut targets: Vec<&'static str> = param.def.targets.to_vec();
    if let Some(target) = target {
        let Some(target_info) = type_info(target) else {
            return Err(SearchError::invalid(
                name,
                format!("unsupported resource type '{target}'"),
            ));
        };
        if !targets.is_empty() && !targets.contains(&target_info.name) {
            return Err(SearchError::invalid(
                name,
                format!("'{pname}' cannot point at {target}"),
            ));
        }
        targets = vec![target_info.name];
    }
    Ok(IncludeSpec {
        source,
        field: param.field,
        targets,
        iterate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for w in TABLE.windows(2) {
            assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
        }
        for (ty, params) in TABLE {
            assert!(portico_fhir::resource_types::is_known(ty), "{ty}");
            let mut names: Vec<_> = params.iter().map(|p| p.name).collect();
            names.sort();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len(), "duplicate parameter on {ty}");
            for p in *params {
                for target in p.targets {
                    assert!(portico_fhir::resource_types::is_known(target), "{target}");
                }
            }
        }
    }

    #[test]
    fn patient_and_subject_share_a_field() {
        let obs = type_info("Observation").unwrap();
        assert_eq!(
            obs.param("patient").unwrap().field,
            obs.param("subject").unwrap().field
        );
        assert_ne!(
            obs.param("patient").unwrap().field,
            obs.param("encounter").unwrap().field
        );
        assert!(type_info("Nope").is_none());
    }

    #[test]
    fn extraction_walks_arrays_choices_and_kinds() {
        let obs = type_info("Observation").unwrap();
        let resource = json!({
            "resourceType": "Observation",
            "status": "final",
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Practitioner/d1"}, {"reference": "#contained"}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}], "text": "x"},
            "effectivePeriod": {"start": "2024-05-01", "end": "2024-05-03"},
            "identifier": [{"system": "urn:s", "value": "v1"}]
        });
        let got = extract(obs, &resource);
        let field = |name: &str| obs.param(name).unwrap().field;
        assert!(got.contains(&(field("subject"), Extracted::Ref("Patient/p1".into()))));
        assert!(got.contains(&(field("performer"), Extracted::Ref("Practitioner/d1".into()))));
        assert_eq!(
            got.iter().filter(|(f, _)| *f == field("performer")).count(),
            1,
            "contained references are not indexed"
        );
        assert!(got.contains(&(
            field("code"),
            Extracted::Token(Some("http://loinc.org".into()), "1234-5".into())
        )));
        assert!(got.contains(&(field("status"), Extracted::Token(None, "final".into()))));
        assert!(got.contains(&(
            field("identifier"),
            Extracted::Token(Some("urn:s".into()), "v1".into())
        )));
        let start = DateRange::parse("2024-05-01").unwrap().start;
        let end = DateRange::parse("2024-05-03").unwrap().end;
        assert!(got.contains(&(field("date"), Extracted::Date(start, end))));
    }

    #[test]
    fn human_names_give_every_part() {
        let patient = type_info("Patient").unwrap();
        let got = extract(
            patient,
            &json!({"resourceType": "Patient", "name": [{"family": "Doe", "given": ["Jane", "Q"]}]}),
        );
        let name = patient.param("name").unwrap().field;
        let parts: Vec<_> = got
            .iter()
            .filter(|(f, _)| *f == name)
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(
            parts,
            vec![
                Extracted::Str("Doe".into()),
                Extracted::Str("Jane".into()),
                Extracted::Str("Q".into())
            ]
        );
    }

    #[test]
    fn parse_query_forms() {
        let obs = type_info("Observation").unwrap();
        let q = SearchQuery::parse(
            obs,
            &pairs(&[
                ("patient", "p1"),
                ("subject:Patient", "p2"),
                ("date", "ge2024-01-01,lt2023"),
                ("code", "http://loinc.org|1234-5"),
                ("_count", "5000"),
                ("_sort", "-date,_id"),
                ("_include", "Observation:performer:Practitioner"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(q.count, MAX_COUNT);
        assert!(
            matches!(&q.criteria[0], Criterion::Ref { values, .. } if values == &["Patient/p1"])
        );
        assert!(
            matches!(&q.criteria[1], Criterion::Ref { values, .. } if values == &["Patient/p2"])
        );
        assert!(
            matches!(&q.criteria[2], Criterion::Date { values, .. } if values.len() == 2 && values[0].0 == Prefix::Ge && values[1].0 == Prefix::Lt)
        );
        assert_eq!(q.sort.len(), 2);
        assert!(q.sort[0].descending);
        assert_eq!(q.include[0].targets, vec!["Practitioner"]);
        assert!(!q.link_params.iter().any(|(k, _)| k == "_count"));
    }

    #[test]
    fn patient_param_refuses_other_types() {
        let obs = type_info("Observation").unwrap();
        let q = SearchQuery::parse(obs, &pairs(&[("patient", "Group/g1")]), false).unwrap();
        assert!(matches!(&q.criteria[0], Criterion::Ref { values, .. } if values.is_empty()));
    }

    #[test]
    fn unknown_and_bad_parameters() {
        let obs = type_info("Observation").unwrap();
        assert_eq!(
            SearchQuery::parse(obs, &pairs(&[("bogus", "1")]), false).unwrap_err(),
            SearchError::UnknownParameter("bogus".into())
        );
        let lenient = SearchQuery::parse(obs, &pairs(&[("bogus", "1")]), true).unwrap();
        assert!(lenient.criteria.is_empty() && lenient.link_params.is_empty());
        assert!(matches!(
            SearchQuery::parse(obs, &pairs(&[("date", "yesterday")]), true),
            Err(SearchError::InvalidValue { .. })
        ));
        assert!(matches!(
            SearchQuery::parse(obs, &pairs(&[("_count", "-1")]), false),
            Err(SearchError::InvalidValue { .. })
        ));
        assert!(matches!(
            SearchQuery::parse(obs, &pairs(&[("code:below", "x")]), false),
            Err(SearchError::UnsupportedModifier { .. })
        ));
        assert!(matches!(
            SearchQuery::parse(obs, &pairs(&[("subject.name", "x")]), false),
            Err(SearchError::UnknownParameter(_))
        ));
        assert!(matches!(
            SearchQuery::parse(obs, &pairs(&[("_include", "Observation:status")]), false),
            Err(SearchError::InvalidValue { .. })
        ));
    }
}
