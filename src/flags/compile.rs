//! Building a [`FlagSet`] from flagd JSON: strictly (refuse what flagd could not load, with
//! every error and its path; departures from the flagd schema become warnings, as flagd only
//! logs them) or leniently (load defective flags so that they resolve to
//! `ERROR`/`PARSE_ERROR`, as flagd does when it serves a file it could not fully validate).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::logic::Compiler;
use super::{DefaultVariant, Flag, FlagError, FlagId, FlagSet, Options, Targeting, schema};

/// Which top-level shape of a flagd document to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `flags` is an object keyed by flag key (`flags.json`, what providers and sluice read).
    #[default]
    Map,
    /// `flags` may also be an array of flags carrying a `key` (`flagd.json`, the daemon's).
    MapOrArray,
}

// === impl FlagSet (construction) ===

impl FlagSet {
    /// Compiles `flags` and `$evaluators` strictly: a flag flagd could not load (not an
    /// object with a valid `state`, `variants`, `defaultVariant` and `metadata`), an unknown
    /// operator, an undefined or cyclic `$ref`, or a `defaultVariant` that is not a variant
    /// refuses the whole set, with every error found. Departures from the flagd schema that
    /// flagd loads anyway are kept as [`FlagSet::warnings`] and resolve at evaluation time.
    pub fn compile(
        flags: &Map<String, Value>,
        evaluators: &Map<String, Value>,
        opts: Options,
    ) -> Result<FlagSet, Vec<FlagError>> {
        let entries: Vec<(&str, &Value)> = flags.iter().map(|(k, v)| (k.as_str(), v)).collect();
        build(&entries, evaluators, Map::new(), opts)
    }

    /// [`FlagSet::compile`] with flag-set `metadata` (a flagd file's top-level `metadata`,
    /// merged under each flag's own); values that are not scalars are dropped with a warning.
    pub fn compile_with_metadata(
        flags: &Map<String, Value>,
        evaluators: &Map<String, Value>,
        metadata: &Map<String, Value>,
        opts: Options,
    ) -> Result<FlagSet, Vec<FlagError>> {
        let entries: Vec<(&str, &Value)> = flags.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut warnings = Vec::new();
        let md = Value::Object(metadata.clone());
        schema::check_metadata(&md, "metadata", &mut warnings);
        let kept = metadata
            .iter()
            .filter(|(_, v)| is_metadata_value(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut set = build(&entries, evaluators, kept, opts)?;
        warnings.append(&mut set.warnings);
        set.warnings = warnings;
        Ok(set)
    }

    /// Compiles leniently: every flag loads; defective ones resolve to `ERROR` with
    /// `PARSE_ERROR` (or `GENERAL` for a default variant that does not exist).
    pub fn compile_lenient(
        flags: &Map<String, Value>,
        evaluators: &Map<String, Value>,
        opts: Options,
    ) -> FlagSet {
        let entries: Vec<(&str, &Value)> = flags.iter().map(|(k, v)| (k.as_str(), v)).collect();
        lenient(&entries, evaluators, Map::new(), opts)
    }

    /// Compiles a whole flagd document (`{"$schema": ..., "flags": ..., "$evaluators": ...,
    /// "metadata": ...}`) strictly.
    pub fn compile_document(
        doc: &Value,
        layout: Layout,
        opts: Options,
    ) -> Result<FlagSet, Vec<FlagError>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let parts = document_parts(doc, layout, &mut errors);
        if let Some(m) = doc.get("metadata") {
            check_set_metadata(m, &mut errors, &mut warnings);
        }
        let built = build(&parts.flags, parts.evaluators, parts.metadata, opts);
        match (built, errors.is_empty()) {
            (Ok(mut set), true) => {
                warnings.append(&mut set.warnings);
                set.warnings = warnings;
                Ok(set)
            }
            (Ok(_), false) => Err(errors),
            (Err(mut more), _) => {
                errors.append(&mut more);
                Err(errors)
            }
        }
    }

    /// Compiles a whole flagd document leniently (flags may be a map or an array).
    pub fn compile_document_lenient(doc: &Value, opts: Options) -> FlagSet {
        let parts = document_parts(doc, Layout::MapOrArray, &mut Vec::new());
        lenient(&parts.flags, parts.evaluators, parts.metadata, opts)
    }
}

/// The pieces of a flagd document.
struct Parts<'d> {
    flags: Vec<(&'d str, &'d Value)>,
    evaluators: &'d Map<String, Value>,
    metadata: Map<String, Value>,
}

fn document_parts<'d>(doc: &'d Value, layout: Layout, errors: &mut Vec<FlagError>) -> Parts<'d> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let empty = EMPTY.get_or_init(Map::new);
    let mut parts = Parts {
        flags: Vec::new(),
        evaluators: empty,
        metadata: Map::new(),
    };
    let Value::Object(top) = doc else {
        errors.push(FlagError::new(
            "",
            "a flagd document is an object with `flags`",
        ));
        return parts;
    };
    match (top.get("flags"), layout) {
        (Some(Value::Object(m)), _) => {
            parts.flags = m.iter().map(|(k, v)| (k.as_str(), v)).collect()
        }
        (Some(Value::Array(a)), Layout::MapOrArray) => {
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (i, f) in a.iter().enumerate() {
                match f
                    .get("key")
                    .and_then(Value::as_str)
                    .filter(|k| !k.is_empty())
                {
                    Some(k) => {
                        if seen.insert(k, i).is_some() {
                            errors.push(FlagError::new(
                                format!("flags[{i}].key"),
                                format!("duplicate flag key `{k}`"),
                            ));
                        }
                        parts.flags.push((k, f));
                    }
                    None => errors.push(FlagError::new(
                        format!("flags[{i}].key"),
                        "a flag in an array needs a non-empty `key`",
                    )),
                }
            }
        }
        (Some(Value::Array(_)), Layout::Map) => errors.push(FlagError::new(
            "flags",
            "must be an object keyed by flag key (arrays are a flagd daemon extension)",
        )),
        (Some(_), _) => errors.push(FlagError::new(
            "flags",
            "must be an object keyed by flag key",
        )),
        (None, _) => errors.push(FlagError::new("flags", "is required")),
    }
    match top.get("$evaluators") {
        Some(Value::Object(e)) => parts.evaluators = e,
        Some(_) => errors.push(FlagError::new(
            "$evaluators",
            "must be an object of name to rule",
        )),
        None => {}
    }
    if let Some(Value::Object(m)) = top.get("metadata") {
        // Lenient readers keep the valid entries; strict ones were refused above.
        parts.metadata = m
            .iter()
            .filter(|(_, v)| is_metadata_value(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
    parts
}

fn is_metadata_value(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// Flag-set metadata: an object (else flagd cannot load the file); values that are not
/// strings, numbers or booleans are schema departures (dropped, with a warning).
pub(crate) fn check_set_metadata(
    m: &Value,
    errors: &mut Vec<FlagError>,
    warnings: &mut Vec<FlagError>,
) {
    match m {
        Value::Null => {}
        Value::Object(_) => schema::check_metadata(m, "metadata", warnings),
        _ => errors.push(FlagError::new(
            "metadata",
            "flag-set metadata must be an object of strings, numbers and booleans",
        )),
    }
}

/// Strict build: refuse what flagd could not load; the schema only warns.
fn build(
    entries: &[(&str, &Value)],
    evaluators: &Map<String, Value>,
    set_metadata: Map<String, Value>,
    opts: Options,
) -> Result<FlagSet, Vec<FlagError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut compiler = Compiler::new(evaluators);
    let mut path = String::new();
    for (name, rule) in evaluators {
        if super::errors_full(&errors) {
            break;
        }
        path.clear();
        path.push_str("$evaluators.");
        path.push_str(name);
        if name.is_empty() {
            warnings.push(FlagError::new(
                "$evaluators",
                "an evaluator name should not be empty",
            ));
        }
        schema::check_targeting(rule, &mut path, &mut warnings);
    }
    compiler.compile_all_evaluators(&mut errors);

    let mut flags = Vec::with_capacity(entries.len());
    for (key, def) in entries {
        if super::errors_full(&errors) {
            break;
        }
        path.clear();
        path.push_str("flags.");
        path.push_str(key);
        if key.is_empty() {
            warnings.push(FlagError::new("flags", "a flag key should not be empty"));
        }
        schema::check_flag(def, &mut path, &mut warnings);
        if let Some((suffix, message)) = structural_defect(def) {
            errors.push(FlagError::new(format!("{path}{suffix}"), message));
            continue;
        }
        let before = errors.len();
        let flag = compile_flag(
            key,
            def,
            &set_metadata,
            &mut compiler,
            &mut path,
            &mut errors,
        );
        if errors.len() == before {
            flags.push(flag);
        }
    }
    if errors.is_empty() {
        let mut set = assemble(flags, set_metadata, opts);
        set.warnings = warnings;
        Ok(set)
    } else {
        Err(errors)
    }
}

/// Lenient build: nothing is refused.
fn lenient(
    entries: &[(&str, &Value)],
    evaluators: &Map<String, Value>,
    set_metadata: Map<String, Value>,
    opts: Options,
) -> FlagSet {
    let mut compiler = Compiler::new(evaluators);
    let mut path = String::new();
    let mut flags: Vec<Flag> = Vec::with_capacity(entries.len());
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (key, def) in entries {
        path.clear();
        path.push_str("flags.");
        path.push_str(key);
        let flag = match structural_defect(def) {
            Some((suffix, defect)) => Flag {
                key: (*key).into(),
                enabled: true,
                defect: Some(format!("{path}{suffix}: {defect}").into()),
                variants: Box::new([]),
                default: DefaultVariant::None,
                targeting: Targeting::None,
                metadata: set_metadata.clone(),
            },
            None => compile_flag(
                key,
                def,
                &set_metadata,
                &mut compiler,
                &mut path,
                &mut Vec::new(),
            ),
        };
        // A later duplicate replaces the earlier one, as a map insert would.
        match at.get(key) {
            Some(&i) => flags[i] = flag,
            None => {
                at.insert(key, flags.len());
                flags.push(flag);
            }
        }
    }
    assemble(flags, set_metadata, opts)
}

/// What makes flagd refuse to load a flag at all (it then fails every evaluation): the
/// path suffix below the flag and why.
fn structural_defect(def: &Value) -> Option<(&'static str, &'static str)> {
    let Value::Object(f) = def else {
        return Some(("", "a flag must be an object with `state` and `variants`"));
    };
    if !matches!(
        f.get("state").and_then(Value::as_str),
        Some("ENABLED" | "DISABLED")
    ) {
        return Some((".state", "`state` must be \"ENABLED\" or \"DISABLED\""));
    }
    if f.get("variants")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
    {
        return Some((".variants", "`variants` must be a non-empty object"));
    }
    if !matches!(
        f.get("defaultVariant"),
        None | Some(Value::Null | Value::String(_) | Value::Bool(_))
    ) {
        return Some((
            ".defaultVariant",
            "`defaultVariant` must be a variant name or null",
        ));
    }
    if !matches!(
        f.get("metadata"),
        None | Some(Value::Null | Value::Object(_))
    ) {
        return Some((
            ".metadata",
            "`metadata` must be an object of strings, numbers and booleans",
        ));
    }
    None
}

/// Compiles a structurally sound flag; strict-mode errors go to `errors`.
fn compile_flag<'d>(
    key: &str,
    def: &'d Value,
    set_metadata: &Map<String, Value>,
    compiler: &mut Compiler<'d>,
    path: &mut String,
    errors: &mut Vec<FlagError>,
) -> Flag {
    let f = def.as_object();
    let get = |k: &str| f.and_then(|f| f.get(k));
    let mut variants: Vec<(Box<str>, Value)> = get("variants")
        .and_then(Value::as_object)
        .map(|v| {
            v.iter()
                .map(|(k, v)| (k.as_str().into(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    variants.sort_by(|a, b| a.0.cmp(&b.0));
    let default_name = match get("defaultVariant") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    };
    let default = match default_name {
        None => DefaultVariant::None,
        Some(name) => match variants.binary_search_by(|(k, _)| (**k).cmp(&name)) {
            Ok(i) => DefaultVariant::Index(i as u32),
            Err(_) => {
                let names: Vec<&str> = variants.iter().map(|(k, _)| &**k).collect();
                errors.push(FlagError::new(
                    format!("{path}.defaultVariant"),
                    format!(
                        "`{name}` is not a variant of this flag (variants: {})",
                        names.join(", ")
                    ),
                ));
                DefaultVariant::Missing(name.into())
            }
        },
    };
    let targeting = match get("targeting") {
        None | Some(Value::Null) => Targeting::None,
        Some(Value::Object(m)) if m.is_empty() => Targeting::None,
        // Anything else is JsonLogic, a rule object or (a schema departure, warned about) a
        // literal that names its variant, as flagd's JsonLogic reads it.
        Some(t) => {
            let len = path.len();
            path.push_str(".targeting");
            let r = compiler.compile(t, path, errors);
            path.truncate(len);
            match r {
                Ok(node) => Targeting::Rule(node),
                Err(m) => Targeting::Broken(m.into()),
            }
        }
    };
    let mut metadata = set_metadata.clone();
    if let Some(Value::Object(m)) = get("metadata") {
        // Values other than scalars are schema departures (warned about): OFREP and flagd's
        // gRPC metadata carry only strings, numbers and booleans.
        for (k, v) in m.iter().filter(|(_, v)| is_metadata_value(v)) {
            metadata.insert(k.clone(), v.clone());
        }
    }
    Flag {
        key: key.into(),
        enabled: get("state").and_then(Value::as_str) != Some("DISABLED"),
        defect: None,
        variants: variants.into_boxed_slice(),
        default,
        targeting,
        metadata,
    }
}

fn assemble(flags: Vec<Flag>, metadata: Map<String, Value>, opts: Options) -> FlagSet {
    let index = flags
        .iter()
        .enumerate()
        .map(|(i, f)| (f.key.clone(), FlagId(i as u32)))
        .collect();
    FlagSet {
        flags,
        index,
        metadata,
        empty: Map::new(),
        warnings: Vec::new(),
        opts,
    }
}
