//! Conformance of `sluice::flags` against the flagd testbed and schemas
//! (`tests/conformance/`, see its README):
//!
//! - every scenario of `flagd-testbed/evaluator/gherkin/*.feature` against
//!   `testkit-flags.json`, compiled leniently as flagd loads it. `@fractional-v1` tables are
//!   skipped (sluice implements v2 and v3 only); `@fractional-v2` scenarios run in v2 mode;
//!   all others run in both v3 (the default) and v2 mode;
//! - every vector of `fractional-vectors.json`, through the evaluator's `fractional`;
//! - the flagd-schemas fixtures: positives compile strictly without warnings, negatives are
//!   refused or warned about (flagd loads schema departures and only warns);
//! - the testbed's flag files: warnings and refusals flag by flag, as SPEC §4 says.
//!
//! The same suites also run through the product path (a running sluice, the change gate,
//! OFREP): `tests/flags_product.rs`.
//!
//! Run with `--nocapture` to see the counts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sluice::config::traffic::Fractional;
use sluice::flags::{Context, FlagSet, Layout, Options, Resolution, ValueType, validate_targeting};

fn conformance() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn sorted_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// A small gherkin reader: Feature, Background, Scenario, Scenario Outline, Examples, tags,
// steps and tables. Table cells are literal apart from gherkin's own `\|`, `\\`, `\n`.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Feature {
    tags: Vec<String>,
    background: Vec<Step>,
    scenarios: Vec<Scenario>,
}

#[derive(Debug, Default, Clone)]
struct Scenario {
    name: String,
    tags: Vec<String>,
    steps: Vec<Step>,
    examples: Vec<Examples>,
}

#[derive(Debug, Default, Clone)]
struct Examples {
    tags: Vec<String>,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Step {
    text: String,
    table: Vec<Vec<String>>,
}

fn parse_feature(src: &str) -> Feature {
    let mut f = Feature::default();
    let mut pending_tags: Vec<String> = Vec::new();
    // Where steps go: the background until the first scenario.
    let mut in_background = false;
    let mut in_examples = false;
    for raw in src.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            pending_tags.extend(
                line.split_whitespace()
                    .map(|t| t.trim_start_matches('@').to_string()),
            );
            continue;
        }
        if line.starts_with("Feature:") {
            f.tags = std::mem::take(&mut pending_tags);
        } else if line.starts_with("Background:") {
            in_background = true;
            in_examples = false;
        } else if let Some(name) = line
            .strip_prefix("Scenario Outline:")
            .or_else(|| line.strip_prefix("Scenario:"))
        {
            in_background = false;
            in_examples = false;
            f.scenarios.push(Scenario {
                name: name.trim().into(),
                tags: std::mem::take(&mut pending_tags),
                ..Default::default()
            });
        } else if line.starts_with("Examples:") {
            in_examples = true;
            let sc = f.scenarios.last_mut().expect("Examples outside a scenario");
            sc.examples.push(Examples {
                tags: std::mem::take(&mut pending_tags),
                ..Default::default()
            });
        } else if line.starts_with('|') {
            let cells = parse_row(line);
            if in_examples {
                let ex = f
                    .scenarios
                    .last_mut()
                    .and_then(|s| s.examples.last_mut())
                    .expect("row outside Examples");
                if ex.header.is_empty() {
                    ex.header = cells;
                } else {
                    ex.rows.push(cells);
                }
            } else {
                let steps = if in_background {
                    &mut f.background
                } else {
                    &mut f
                        .scenarios
                        .last_mut()
                        .expect("table outside a scenario")
                        .steps
                };
                steps
                    .last_mut()
                    .expect("table without a step")
                    .table
                    .push(cells);
            }
        } else if let Some(text) = ["Given ", "When ", "Then ", "And ", "But "]
            .iter()
            .find_map(|k| line.strip_prefix(k))
        {
            let step = Step {
                text: text.to_string(),
                table: Vec::new(),
            };
            if in_background {
                f.background.push(step);
            } else {
                f.scenarios
                    .last_mut()
                    .expect("step outside a scenario")
                    .steps
                    .push(step);
            }
        } else {
            // Free text under a Feature or Scenario line (descriptions) is allowed.
            assert!(!in_examples, "unexpected line in Examples: {line}");
        }
    }
    f
}

fn parse_row(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('|') => cur.push('|'),
                Some('\\') => cur.push('\\'),
                Some('n') => cur.push('\n'),
                Some(o) => {
                    cur.push('\\');
                    cur.push(o);
                }
                None => cur.push('\\'),
            },
            '|' => cells.push(std::mem::take(&mut cur).trim().to_string()),
            o => cur.push(o),
        }
    }
    cells
}

/// One runnable case: a scenario, or one example row of an outline.
struct Case {
    name: String,
    tags: BTreeSet<String>,
    steps: Vec<Step>,
}

fn expand(f: &Feature) -> Vec<Case> {
    let mut out = Vec::new();
    for sc in &f.scenarios {
        let base: BTreeSet<String> = f.tags.iter().chain(&sc.tags).cloned().collect();
        let steps: Vec<Step> = f.background.iter().chain(&sc.steps).cloned().collect();
        if sc.examples.is_empty() {
            out.push(Case {
                name: sc.name.clone(),
                tags: base,
                steps,
            });
            continue;
        }
        for ex in &sc.examples {
            for (i, row) in ex.rows.iter().enumerate() {
                let sub = |s: &str| {
                    let mut s = s.to_string();
                    for (h, v) in ex.header.iter().zip(row) {
                        s = s.replace(&format!("<{h}>"), v);
                    }
                    s
                };
                let steps = steps
                    .iter()
                    .map(|st| Step {
                        text: sub(&st.text),
                        table: st
                            .table
                            .iter()
                            .map(|r| r.iter().map(|c| sub(c)).collect())
                            .collect(),
                    })
                    .collect();
                let mut tags = base.clone();
                tags.extend(ex.tags.iter().cloned());
                out.push(Case {
                    name: format!("{} #{} {:?}", sc.name, i + 1, row),
                    tags,
                    steps,
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Step execution.
// ---------------------------------------------------------------------------------------

fn quoted(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The text between the first and the last double quote (values may contain quotes).
fn outer_quoted(text: &str) -> String {
    let (Some(a), Some(b)) = (text.find('"'), text.rfind('"')) else {
        panic!("no quoted value in `{text}`")
    };
    text[a + 1..b].to_string()
}

fn value_type(name: &str) -> ValueType {
    match name {
        "Boolean" => ValueType::Boolean,
        "String" => ValueType::String,
        "Integer" => ValueType::Integer,
        "Float" => ValueType::Float,
        "Object" => ValueType::Object,
        other => panic!("unknown flag type {other}"),
    }
}

/// A table or step literal read as a value of `ty`.
fn typed(ty: ValueType, s: &str) -> Value {
    match ty {
        ValueType::Boolean => {
            Value::Bool(s.parse().unwrap_or_else(|_| panic!("bad boolean `{s}`")))
        }
        ValueType::String => Value::String(s.to_string()),
        ValueType::Integer => json!(
            s.parse::<i64>()
                .unwrap_or_else(|_| panic!("bad integer `{s}`"))
        ),
        ValueType::Float => json!(
            s.parse::<f64>()
                .unwrap_or_else(|_| panic!("bad float `{s}`"))
        ),
        // The suites write objects with `\"`, which gherkin does not unescape.
        ValueType::Object => serde_json::from_str(&s.replace("\\\"", "\""))
            .unwrap_or_else(|e| panic!("bad object `{s}`: {e}")),
    }
}

fn same_value(ty: ValueType, a: &Value, b: &Value) -> bool {
    match ty {
        ValueType::Float | ValueType::Integer => a.as_f64().is_some_and(|x| b.as_f64() == Some(x)),
        _ => a == b,
    }
}

fn metadata_type(name: &str) -> ValueType {
    value_type(name)
}

/// One evaluation's outcome as a provider hands it to the application (after the type check).
#[derive(Debug)]
struct Outcome {
    value: Option<Value>,
    reason: String,
    error_code: Option<String>,
    metadata: Map<String, Value>,
}

impl Outcome {
    /// In-process: the evaluator's typed resolution.
    fn of(r: Resolution<'_>) -> Outcome {
        Outcome {
            value: r.value.cloned(),
            reason: r.reason.as_str().to_string(),
            error_code: r.error_code.map(|c| c.as_str().to_string()),
            metadata: r.metadata.clone(),
        }
    }

    /// Over OFREP: a response body read as an OpenFeature provider reads it (an error code
    /// means reason ERROR; a value of the wrong type is the provider's TYPE_MISMATCH).
    fn from_ofrep(j: &Value, ty: ValueType) -> Outcome {
        let metadata = j["metadata"].as_object().cloned().unwrap_or_default();
        let error = |code: &str| Outcome {
            value: None,
            reason: "ERROR".into(),
            error_code: Some(code.into()),
            metadata: metadata.clone(),
        };
        if let Some(code) = j["errorCode"].as_str() {
            return error(code);
        }
        let value = j.get("value").cloned();
        if value.as_ref().is_some_and(|v| !ty.admits(v)) {
            return error("TYPE_MISMATCH");
        }
        Outcome {
            value,
            reason: j["reason"].as_str().unwrap_or("").to_string(),
            error_code: None,
            metadata,
        }
    }
}

/// The flag a case evaluates, if any.
fn case_flag(case: &Case) -> Option<String> {
    case.steps.iter().find_map(|st| {
        (st.text.starts_with("a ") && st.text.contains("-flag with key "))
            .then(|| quoted(&st.text).swap_remove(0))
    })
}

fn run_case(set: &FlagSet, case: &Case) -> Result<(), String> {
    run_case_with(
        &mut |key, ctx, ty| {
            let c = Context::from_json(ctx).map_err(|e| e.to_string())?;
            Ok(Outcome::of(
                set.evaluate_key(key, &c, 1_750_000_000).check_type(ty),
            ))
        },
        case,
    )
}

/// The provider under test: `(key, context, type)` to an outcome.
type Provider<'p> = dyn FnMut(&str, &Map<String, Value>, ValueType) -> Result<Outcome, String> + 'p;

/// Runs a case's steps against `evaluate`.
fn run_case_with(evaluate: &mut Provider<'_>, case: &Case) -> Result<(), String> {
    let mut ctx = Map::new();
    let mut flag: Option<(ValueType, String, Value)> = None;
    let mut result: Option<Outcome> = None;
    for step in &case.steps {
        let t = step.text.as_str();
        if t == "an evaluator" {
        } else if t.starts_with("a ") && t.contains("-flag with key ") {
            let ty = value_type(&t[2..t.find("-flag").unwrap_or(2)]);
            let key = quoted(t).swap_remove(0);
            let marker = "and a fallback value ";
            let fallback = typed(
                ty,
                &outer_quoted(&t[t.find(marker).ok_or("no fallback")? + marker.len()..]),
            );
            flag = Some((ty, key, fallback));
        } else if t.starts_with("a context containing a key ") {
            let q = quoted(t);
            let v = typed(value_type(&q[1]), &q[2]);
            ctx.insert(q[0].clone(), v);
        } else if t.starts_with("a context containing a nested property ") {
            let q = quoted(t);
            let outer = ctx.entry(q[0].clone()).or_insert_with(|| json!({}));
            outer
                .as_object_mut()
                .ok_or("outer key is not an object")?
                .insert(q[1].clone(), Value::String(q[2].clone()));
        } else if t.starts_with("a context containing a targeting key with value ") {
            ctx.insert("targetingKey".into(), Value::String(outer_quoted(t)));
        } else if t == "the flag was evaluated with details" {
            let (ty, key, _) = flag.as_ref().ok_or("no flag given")?;
            result = Some(evaluate(key, &ctx, *ty)?);
        } else if t.starts_with("the resolved details value should be ") {
            let (ty, _, fallback) = flag.as_ref().ok_or("no flag")?;
            let r = result.as_ref().ok_or("not evaluated")?;
            let expected = typed(*ty, &outer_quoted(t));
            let actual = r.value.as_ref().unwrap_or(fallback);
            if !same_value(*ty, actual, &expected) {
                return Err(format!(
                    "value {actual} != expected {expected} (outcome {r:?})"
                ));
            }
        } else if t.starts_with("the reason should be ") {
            let r = result.as_ref().ok_or("not evaluated")?;
            let want = outer_quoted(t);
            if r.reason != want {
                return Err(format!("reason {} != {want} ({r:?})", r.reason));
            }
        } else if t.starts_with("the error-code should be ") {
            let r = result.as_ref().ok_or("not evaluated")?;
            let want = outer_quoted(t);
            let got = r.error_code.as_deref().unwrap_or("");
            if got != want {
                return Err(format!("error code `{got}` != `{want}` ({r:?})"));
            }
        } else if t == "the resolved metadata should contain" {
            let r = result.as_ref().ok_or("not evaluated")?;
            for row in step.table.iter().skip(1) {
                let [k, ty, v] = row.as_slice() else {
                    return Err(format!("bad metadata row {row:?}"));
                };
                let ty = metadata_type(ty);
                let want = typed(ty, v);
                match r.metadata.get(k) {
                    Some(got) if same_value(ty, got, &want) && ty.admits(got) => {}
                    other => return Err(format!("metadata {k}: {other:?} != {want}")),
                }
            }
        } else if t == "the resolved metadata is empty" {
            let r = result.as_ref().ok_or("not evaluated")?;
            if !r.metadata.is_empty() {
                return Err(format!("metadata not empty: {:?}", r.metadata));
            }
        } else {
            return Err(format!("unsupported step `{t}`"));
        }
    }
    Ok(())
}

#[test]
fn gherkin_suites() {
    let root = conformance().join("flagd-testbed/evaluator");
    let doc = read_json(&root.join("flags/testkit-flags.json"));
    let v3 = FlagSet::compile_document_lenient(
        &doc,
        Options {
            fractional: Fractional::V3,
        },
    );
    let v2 = FlagSet::compile_document_lenient(
        &doc,
        Options {
            fractional: Fractional::V2,
        },
    );
    let (mut cases, mut runs, mut skipped) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for file in sorted_files(&root.join("gherkin"), "feature") {
        let src = std::fs::read_to_string(&file).unwrap();
        let feature = parse_feature(&src);
        let fname = file.file_name().unwrap().to_string_lossy().to_string();
        let (mut fc, mut fr, mut fs) = (0, 0, 0);
        for case in expand(&feature) {
            if case.tags.contains("fractional-v1") {
                fs += 1;
                continue;
            }
            fc += 1;
            let modes: &[(&str, &FlagSet)] = if case.tags.contains("fractional-v2") {
                &[("v2", &v2)]
            } else {
                &[("v3", &v3), ("v2", &v2)]
            };
            for (mode, set) in modes {
                match run_case(set, &case) {
                    Ok(()) => fr += 1,
                    Err(e) => failures.push(format!("{fname} [{mode}] {}: {e}", case.name)),
                }
            }
        }
        println!("gherkin {fname}: {fc} cases, {fr} runs passed, {fs} skipped (@fractional-v1)");
        cases += fc;
        runs += fr;
        skipped += fs;
    }
    println!(
        "gherkin total: {cases} cases; {runs} runs passed, {} failed; {skipped} skipped (@fractional-v1)",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} gherkin failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(runs > 150, "too few gherkin runs: {runs}");
}

// ---------------------------------------------------------------------------------------
// fractional vectors through the evaluator.
// ---------------------------------------------------------------------------------------

fn fractional_flag(n: usize, bucketing: Option<Value>) -> Value {
    let mut args: Vec<Value> = bucketing.into_iter().collect();
    args.extend((0..n).map(|i| json!([i.to_string(), 1])));
    let variants: Map<String, Value> = (0..n).map(|i| (i.to_string(), json!(i))).collect();
    json!({"state": "ENABLED", "variants": variants, "defaultVariant": null, "targeting": {"fractional": args}})
}

fn bucket_of(set: &FlagSet, key: &str, ctx: &Map<String, Value>) -> Option<u64> {
    let c = Context::from_json(ctx).ok()?;
    set.evaluate_key(key, &c, 0)
        .variant
        .and_then(|v| v.parse().ok())
}

#[test]
fn fractional_vectors() {
    let doc = read_json(&conformance().join("fractional-vectors.json"));
    let mut checked = 0;
    for v in doc["vectors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let mut checks: Vec<(u64, u64)> = vec![(2, v["bucket_w2"].as_u64().unwrap())];
        if let Some(b) = v.get("bucket_w100") {
            checks.push((100, b.as_u64().unwrap()));
        }
        for (n, want) in checks {
            let (set, key, ctx) = if let Some(input) = v.get("input") {
                match input.as_array().map(|a| a.as_slice()) {
                    // A two-string array is the shorthand's `[flagKey, targetingKey]`.
                    Some([Value::String(fk), Value::String(tk)]) => {
                        let flags: Map<String, Value> =
                            [(fk.clone(), fractional_flag(n as usize, None))]
                                .into_iter()
                                .collect();
                        let set = FlagSet::compile(
                            &flags,
                            &Map::new(),
                            Options {
                                fractional: Fractional::V3,
                            },
                        )
                        .unwrap();
                        (
                            set,
                            fk.clone(),
                            [("targetingKey".to_string(), json!(tk))]
                                .into_iter()
                                .collect::<Map<_, _>>(),
                        )
                    }
                    _ => {
                        let flags: Map<String, Value> = [(
                            "f".to_string(),
                            fractional_flag(n as usize, Some(json!({"var": "bv"}))),
                        )]
                        .into_iter()
                        .collect();
                        let set = FlagSet::compile(
                            &flags,
                            &Map::new(),
                            Options {
                                fractional: Fractional::V3,
                            },
                        )
                        .unwrap();
                        (
                            set,
                            "f".to_string(),
                            [("bv".to_string(), input.clone())].into_iter().collect(),
                        )
                    }
                }
            } else {
                // v2 hashes the UTF-8 string itself.
                let utf8 = v["utf8"].as_str().unwrap();
                let flags: Map<String, Value> = [(
                    "f".to_string(),
                    fractional_flag(n as usize, Some(json!({"var": "bv"}))),
                )]
                .into_iter()
                .collect();
                let set = FlagSet::compile(
                    &flags,
                    &Map::new(),
                    Options {
                        fractional: Fractional::V2,
                    },
                )
                .unwrap();
                (
                    set,
                    "f".to_string(),
                    [("bv".to_string(), json!(utf8))].into_iter().collect(),
                )
            };
            assert_eq!(
                bucket_of(&set, &key, &ctx),
                Some(want),
                "{name}: {n} buckets"
            );
            checked += 1;
        }
    }
    println!("fractional vectors: {checked} passed, 0 failed");
    assert!(checked >= 20);
}

// ---------------------------------------------------------------------------------------
// flagd-schemas fixtures.
// ---------------------------------------------------------------------------------------

#[test]
fn schema_fixtures() {
    let json = conformance().join("flagd-schemas/json");
    let opts = Options::default();
    let mut counts = Vec::new();
    let mut failures = Vec::new();
    let mut run = |label: &str,
                   dir: PathBuf,
                   expect_ok: bool,
                   check: &dyn Fn(&Value) -> Result<(), String>| {
        let mut n = 0;
        for f in sorted_files(&dir, "json") {
            let doc = read_json(&f);
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            match (check(&doc), expect_ok) {
                (Ok(()), true) | (Err(_), false) => n += 1,
                (Ok(()), false) => {
                    failures.push(format!("{label}/{name}: accepted, should be refused"))
                }
                (Err(e), true) => failures.push(format!("{label}/{name}: refused: {e}")),
            }
        }
        counts.push(format!("{label}: {n}"));
    };
    // A fixture names its schema: `flags.json` (providers: flags keyed by name) or
    // `flagd.json` (the daemon: flags may also be an array). It conforms when it loads
    // without a refusal and without a schema warning (flagd loads departures and warns).
    let by_schema = |d: &Value| {
        let layout = if d["$schema"]
            .as_str()
            .is_some_and(|s| s.ends_with("flagd.json"))
        {
            Layout::MapOrArray
        } else {
            Layout::Map
        };
        match FlagSet::compile_document(d, layout, opts) {
            Ok(set) if set.warnings().is_empty() => Ok(()),
            Ok(set) => Err(format!("warnings: {:?}", set.warnings())),
            Err(e) => Err(format!("{e:?}")),
        }
    };
    let targeting = |d: &Value| {
        let errors = validate_targeting(d);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{errors:?}"))
        }
    };
    run(
        "flags/positive",
        json.join("test/flags/positive"),
        true,
        &by_schema,
    );
    run(
        "flags/negative",
        json.join("test/flags/negative"),
        false,
        &by_schema,
    );
    run(
        "flagd/positive",
        json.join("test/flagd/positive"),
        true,
        &by_schema,
    );
    run(
        "targeting/positive",
        json.join("test/targeting/positive"),
        true,
        &targeting,
    );
    run(
        "targeting/negative",
        json.join("test/targeting/negative"),
        false,
        &targeting,
    );
    // `examples/` are not fixtures: `minimal.json` is valid, while `full.json` breaks its own
    // schema (`sem_ver` with "2.0.0.0", `ends_with` with a number), as a draft-07 validator
    // (python-jsonschema) also reports. Both verdicts are checked, with the paths.
    let examples = json.join("examples");
    assert_eq!(
        by_schema(&read_json(&examples.join("minimal.json"))),
        Ok(())
    );
    // It loads (as in flagd), with the two departures as warnings.
    let full =
        FlagSet::compile_document(&read_json(&examples.join("full.json")), Layout::Map, opts)
            .expect("full.json loads: schema departures only warn");
    let paths: Vec<&str> = full.warnings().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "flags.equal-greater-lesser-version-flag.targeting.if[2].if[2].if[2].if[0].sem_ver[2]",
            "flags.starts-ends-flag.targeting.if[2].if[2].if[0].ends_with[1]"
        ]
    );
    counts.push("examples: 2".into());
    println!(
        "schema fixtures passed: {} ({} failed)",
        counts.join(", "),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The testbed's flag files, flag by flag: strict compilation warns about exactly the flags
/// that a draft-07 validator (python-jsonschema 4, against `flags.json`) finds invalid, and
/// refuses exactly the two that SPEC §4 refuses on purpose (an unknown operator, a `$ref` to
/// an evaluator the file does not define); lenient compilation loads every flag and
/// evaluates it without panicking.
#[test]
fn testbed_flag_files() {
    let root = conformance().join("flagd-testbed");
    // (file, flags the reference validator finds invalid, flags refused).
    let expected: &[(&str, &[&str], &[&str])] = &[
        ("changing-flag.json", &[], &[]),
        (
            "custom-ops.json",
            &[
                "equal-greater-lesser-version-flag",
                "semver-numeric-context-flag",
                "semver-partial-version-flag",
                "semver-v-prefix-flag",
                "starts-ends-flag",
            ],
            &[],
        ),
        ("disabled-flags.json", &[], &[]),
        (
            "edge-case-flags.json",
            &[
                "ends-with-wrong-args-flag",
                "error-targeting-flag",
                "fractional-negative-weight-flag",
                "semver-invalid-operator-flag",
                "semver-wrong-args-flag",
                "starts-with-wrong-args-flag",
                "targeting-null-flag",
            ],
            &["error-targeting-flag"],
        ),
        (
            "evaluator-refs.json",
            &[],
            &["ref-to-nonexistent-evaluator-flag"],
        ),
        ("metadata-flags.json", &[], &[]),
        ("selector-flag-combined-metadata.json", &[], &[]),
        ("selector-flags.json", &[], &[]),
        ("testing-flags.json", &[], &[]),
        ("zero-flags.json", &[], &[]),
        (
            "testkit-flags.json",
            &[
                "ends-with-wrong-args-flag",
                "fractional-negative-weight-flag",
                "semver-invalid-operator-flag",
                "semver-numeric-context-flag",
                "semver-partial-version-flag",
                "semver-v-prefix-flag",
                "semver-wrong-args-flag",
                "starts-with-wrong-args-flag",
            ],
            &["ref-to-nonexistent-evaluator-flag"],
        ),
    ];
    let ctx: Map<String, Value> = serde_json::from_value(
        json!({"targetingKey": "user-1", "email": "a@b.c", "version": "1.2.3", "id": 7}),
    )
    .unwrap();
    let c = Context::from_json(&ctx).unwrap();
    // `zero-flags.json` uses `is_ballmer` from `evaluator-refs.json`: as in the testbed's
    // aggregate of all its files, every flag sees every file's `$evaluators`.
    let mut evaluators = Map::new();
    for f in sorted_files(&root.join("flags"), "json") {
        if let Some(Value::Object(e)) = read_json(&f).get("$evaluators") {
            evaluators.extend(e.clone());
        }
    }
    let (mut flags_seen, mut warned_total, mut refused_total) = (0, 0, 0);
    for (file, invalid, refusals) in expected {
        let path = if *file == "testkit-flags.json" {
            root.join("evaluator/flags").join(file)
        } else {
            root.join("flags").join(file)
        };
        let doc = read_json(&path);
        let (mut warned, mut refused): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        for (key, def) in doc["flags"].as_object().expect("flags") {
            flags_seen += 1;
            let one: Map<String, Value> = [(key.clone(), def.clone())].into_iter().collect();
            match FlagSet::compile(&one, &evaluators, Options::default()) {
                Ok(set) if set.warnings().is_empty() => {}
                Ok(set) => {
                    assert!(
                        set.warnings()
                            .iter()
                            .all(|w| w.path.starts_with(&format!("flags.{key}"))),
                        "{file}: {key}: {:?}",
                        set.warnings()
                    );
                    warned.push(key.clone());
                }
                Err(errors) => {
                    assert!(
                        errors
                            .iter()
                            .all(|e| e.path.starts_with(&format!("flags.{key}.targeting"))),
                        "{file}: {key}: {errors:?}"
                    );
                    refused.push(key.clone());
                    // A refused flag departs from the schema as well when the validator says so.
                    if invalid.contains(&key.as_str()) {
                        warned.push(key.clone());
                    }
                }
            }
        }
        warned.sort();
        refused.sort();
        warned_total += warned.len();
        refused_total += refused.len();
        assert_eq!(warned, *invalid, "{file}: warnings");
        assert_eq!(refused, *refusals, "{file}: refusals");
        let set = FlagSet::compile_document_lenient(&doc, Options::default());
        assert_eq!(
            set.len(),
            doc["flags"].as_object().map_or(0, Map::len),
            "{file}"
        );
        for (id, _) in set.iter() {
            let _ = set.evaluate(id, &c, 0);
        }
    }
    let (warned, refused) = (warned_total, refused_total);
    println!(
        "testbed flag files: {flags_seen} flags, {warned} warned as the reference validator says, {refused} refused (SPEC §4), all evaluate leniently"
    );
    assert!(flags_seen > 100);
}

// ---------------------------------------------------------------------------------------
// Differential check against flagd's reference evaluator in v3 mode (the gherkin tables
// only pin v2 hashes): `tests/data/flagd_core_v3_reference.json`, generated by
// `tests/data/flagd_core_reference.py` with PyPI openfeature-flagd-core 2.0.0.
// ---------------------------------------------------------------------------------------

#[test]
fn flagd_core_v3_reference() {
    let doc = read_json(&conformance().join("flagd-testbed/evaluator/flags/testkit-flags.json"));
    let set = FlagSet::compile_document_lenient(
        &doc,
        Options {
            fractional: Fractional::V3,
        },
    );
    let reference = read_json(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/flagd_core_v3_reference.json"),
    );
    let mut failures = Vec::new();
    let cases = reference["cases"].as_array().expect("cases");
    for case in cases {
        let key = case["flag"].as_str().expect("flag");
        let ctx = case["context"].as_object().expect("context");
        let want = &case["expected"];
        let r = set.evaluate_key(
            key,
            &Context::from_json(ctx).expect("context"),
            1_750_000_000,
        );
        let got = json!({
            "value": r.value.cloned().unwrap_or(Value::Null),
            "variant": r.variant,
            "reason": r.reason.as_str(),
            "errorCode": r.error_code.map(|c| c.as_str()),
        });
        // Python reads JSON 0.0 as a float and 0 as an int; compare numbers by value.
        let same = ["variant", "reason", "errorCode"]
            .iter()
            .all(|k| got[k] == want[k])
            && (got["value"] == want["value"]
                || got["value"]
                    .as_f64()
                    .is_some_and(|x| want["value"].as_f64() == Some(x)));
        if !same {
            failures.push(format!(
                "{key} {}: got {got}, reference {want}",
                Value::Object(ctx.clone())
            ));
        }
    }
    println!(
        "flagd-core v3 reference: {} passed, {} failed",
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() > 500);
}

// ---------------------------------------------------------------------------------------
// The product path (SPEC §4): the testbed's flag files pasted into traffic documents,
// activated by the change gate of a running sluice (approvals required, tokens pushed to
// the admin API), evaluated over OFREP and injected by a route.
// ---------------------------------------------------------------------------------------

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use sluice::change::token::{Act, Claims, sign};

/// The two flags SPEC §4 refuses on purpose: an unknown operator, an undefined `$ref`.
const REFUSED: [&str; 2] = ["error-targeting-flag", "ref-to-nonexistent-evaluator-flag"];

/// A traffic document (JSON, which sluice reads as YAML) around flagd content: `flagd` is a
/// flagd file's top level (`$schema`, `flags`, `$evaluators`, `metadata`), pasted verbatim.
fn traffic_json(
    version: u64,
    fractional: &str,
    app: SocketAddr,
    inject: &[&str],
    flagd: &Value,
) -> String {
    let mut doc = json!({
        "version": version,
        "change": {"id": format!("CHG-{version}"), "author": "alice", "summary": "flagd testbed"},
        "upstreams": {"app": {"endpoints": [app.to_string()]}},
        "routes": [{"name": "app", "to": {"upstream": "app"}, "flags": inject}],
        "flag_context": {
            "targeting_key": [{"header": "x-user-id"}],
            "attributes": {"email": {"header": "x-user-email"}, "version": {"header": "x-version"}},
        },
        "fractional": fractional,
    });
    for (k, v) in flagd.as_object().expect("a flagd document") {
        doc[k] = v.clone();
    }
    serde_json::to_string_pretty(&doc).expect("serializable")
}

/// Pushes `text` with the author's and two release managers' tokens.
async fn push_approved(g: &common::Sluice, text: &str) -> common::Reply {
    g.push(
        text,
        &[
            &g.token("alice", text, Act::Author),
            &g.token("bob", text, Act::Approve),
            &g.token("fred", text, Act::Approve),
        ],
    )
    .await
}

/// `POST` an OFREP request on the admin listener; returns the status and the JSON body.
async fn ofrep(c: &mut common::Client, path: &str, ctx: &Map<String, Value>) -> (u16, Value) {
    let body = json!({ "context": ctx }).to_string();
    let req = Request::post(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let r = c.send(req).await.expect("OFREP answers");
    (r.status.as_u16(), r.json())
}

/// Every flag file of `flagd-testbed/flags/` except the selector ones, merged as the
/// testbed's own aggregate (`allFlags.json`) merges them; the selector files are flag sets of
/// their own (one of their flags collides with `disabled-flags.json`) and get documents of
/// their own.
fn all_flags() -> (Map<String, Value>, Map<String, Value>) {
    let (mut flags, mut evaluators) = (Map::new(), Map::new());
    for f in sorted_files(&conformance().join("flagd-testbed/flags"), "json") {
        if f.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("selector"))
        {
            continue;
        }
        let doc = read_json(&f);
        for (k, v) in doc["flags"].as_object().expect("flags") {
            assert!(flags.insert(k.clone(), v.clone()).is_none(), "{k} twice");
        }
        if let Some(Value::Object(e)) = doc.get("$evaluators") {
            evaluators.extend(e.clone());
        }
    }
    (flags, evaluators)
}

#[test]
fn testbed_flag_files_activate_through_the_change_gate_and_serve_over_ofrep() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let g = common::Sluice::builder().approvals().manual_clock().start();
    let app = common::Upstream::start("app");
    let (mut flags, evaluators) = all_flags();
    let total = flags.len();
    for k in REFUSED {
        flags.remove(k).expect("a testbed flag");
    }
    let flagd = json!({
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "flags": flags, "$evaluators": evaluators,
    });
    let inject = ["boolean-flag", "fractional-flag", "semver-v-prefix-flag"];
    let text = traffic_json(1, "v3", app.addr, &inject, &flagd);

    // `sluice validate` accepts it and prints the schema departures with their paths.
    let file = g.path("testbed.json");
    std::fs::write(&file, &text).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", "-c", "/nonexistent/sluice.yaml"])
        .arg(&file)
        .output()
        .expect("sluice validate runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The flags the issue found refused whole: each is now a warning with its path and line.
    let warned = [
        "semver-v-prefix-flag",
        "semver-partial-version-flag",
        "semver-numeric-context-flag",
        "equal-greater-lesser-version-flag",
        "semver-invalid-operator-flag",
        "semver-wrong-args-flag",
        "starts-with-wrong-args-flag",
        "ends-with-wrong-args-flag",
        "starts-ends-flag",
        "fractional-negative-weight-flag",
        "targeting-null-flag",
    ];
    for k in warned {
        assert!(
            stdout.contains(&format!("warning  flags.{k}.targeting")),
            "{k} not warned about:\n{stdout}"
        );
    }

    rt.block_on(async {
        let r = push_approved(&g, &text).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["result"], "activated", "{}", r.text());

        // Status shows the same warnings, at their lines.
        let status = g.status().await;
        let ws = status["active"]["warnings"].as_array().expect("warnings in status");
        let mut keys: Vec<&str> = ws
            .iter()
            .map(|w| {
                assert!(w["line"].as_u64().is_some_and(|l| l > 1), "{w}");
                let p = w["path"].as_str().expect("path");
                p.strip_prefix("flags.").and_then(|p| p.split('.').next()).expect("a flag path")
            })
            .collect();
        keys.sort();
        keys.dedup();
        let mut want = warned.to_vec();
        want.sort();
        assert_eq!(keys, want);

        // Every flag over OFREP, for several contexts, answers as the evaluator that the
        // conformance suites check (loaded the way flagd loads a file).
        let reference = FlagSet::compile_document_lenient(&flagd, Options::default());
        let contexts = [
            json!({}),
            json!({"targetingKey": "user-1", "email": "ballmer@macrosoft.com", "version": "v1.0.0", "id": "abc-xyz"}),
            json!({"targetingKey": "jon@company.com", "email": "user@faas.com", "version": "2.1", "id": 3, "age": 30}),
            json!({"targetingKey": "", "version": 1, "customer": false}),
        ];
        let mut c = common::Client::connect(g.admin()).await;
        let mut compared = 0;
        for ctx in &contexts {
            let ctx = ctx.as_object().expect("object");
            let c_ref = Context::from_json(ctx).expect("context");
            for (id, key) in reference.iter() {
                let (status, got) = ofrep(&mut c, &format!("/ofrep/v1/evaluate/flags/{key}"), ctx).await;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                let want_res = reference.evaluate(id, &c_ref, now);
                let want = sluice::flags::ofrep::evaluation_json(key, &want_res);
                assert_eq!(got, want, "{key} with {ctx:?}");
                assert_eq!(status, if want_res.error_code.is_some() { 400 } else { 200 }, "{key}");
                compared += 1;
            }
        }
        assert_eq!(compared, contexts.len() * (total - REFUSED.len()));
        let (status, bulk) = ofrep(&mut c, "/ofrep/v1/evaluate/flags", &Map::new()).await;
        assert_eq!(status, 200);
        assert_eq!(bulk["flags"].as_array().map(Vec::len), Some(total - REFUSED.len()));

        // A route injects some of them, the variants OFREP serves for the same context.
        let who = [("x-user-id", "user-7"), ("x-version", "v1.0.0")];
        let seen = common::get(g.inst().listeners[0], "/", &who).await.json();
        let ctx: Map<String, Value> =
            serde_json::from_value(json!({"targetingKey": "user-7", "version": "v1.0.0"})).unwrap();
        for k in inject {
            let (_, j) = ofrep(&mut c, &format!("/ofrep/v1/evaluate/flags/{k}"), &ctx).await;
            let variant = j["variant"].as_str().expect("a variant");
            assert_eq!(
                seen["headers"][format!("x-sluice-flag-{k}")][0], variant,
                "{k}: {seen}"
            );
        }
        // `semver-v-prefix-flag`: "v1.0.0" is a version to flagd, and matches.
        assert_eq!(seen["headers"]["x-sluice-flag-semver-v-prefix-flag"][0], "match");

        // The selector files are flag sets of their own: their flag-set metadata is returned
        // in bulk responses and merged under each flag's own metadata.
        let mut version = 1;
        for file in ["selector-flags.json", "selector-flag-combined-metadata.json"] {
            version += 1;
            let flagd = read_json(&conformance().join("flagd-testbed/flags").join(file));
            let text = traffic_json(version, "v3", app.addr, &[], &flagd);
            let r = push_approved(&g, &text).await;
            assert_eq!(r.status, 200, "{file}: {}", r.text());
            let (_, bulk) = ofrep(&mut c, "/ofrep/v1/evaluate/flags", &Map::new()).await;
            assert_eq!(bulk["metadata"], flagd["metadata"], "{file}");
            let reference = FlagSet::compile_document_lenient(&flagd, Options::default());
            for (id, key) in reference.iter() {
                let (_, got) = ofrep(&mut c, &format!("/ofrep/v1/evaluate/flags/{key}"), &Map::new()).await;
                let want = reference.evaluate(id, &Context::empty(), 0);
                assert_eq!(got["metadata"], Value::Object(want.metadata.clone()), "{file}: {key}");
            }
        }
        let (_, j) = ofrep(&mut c, "/ofrep/v1/evaluate/flags/combined-metadata-flag", &Map::new()).await;
        assert_eq!(j["metadata"]["string"], "a", "the flag's own metadata wins: {j}");
        assert_eq!(j["metadata"]["flag-set-string"], "c", "{j}");

        // The two flags refused on purpose, in a document of their own: refused with their
        // paths, and the active document keeps serving.
        let (all, evaluators) = all_flags();
        let refused: Map<String, Value> =
            REFUSED.iter().map(|k| (k.to_string(), all[*k].clone())).collect();
        let text = traffic_json(9, "v3", app.addr, &[], &json!({"flags": refused, "$evaluators": evaluators}));
        // (`sluice approve` would refuse to sign it: the token is made by hand.)
        let claims = Claims::new("alice", "prod", text.as_bytes(), 9, Act::Author, g.now(), 3600);
        let r = g.push(&text, &[&sign(&claims, &common::principals::key("alice"))]).await;
        common::gate::refused(&r, 400, "invalid_document");
        let detail = r.json()["detail"].as_str().expect("detail").to_string();
        for p in [
            "flags.error-targeting-flag.targeting.invalid",
            "flags.ref-to-nonexistent-evaluator-flag.targeting.if[0].$ref",
        ] {
            assert!(detail.contains(p), "{p} missing from {detail}");
        }
        assert_eq!(g.version(), 3);
        let (status, _) = ofrep(&mut c, "/ofrep/v1/evaluate/flags/only-set-metadata-flag", &Map::new()).await;
        assert_eq!(status, 200);
    });
}

/// Every gherkin scenario over OFREP against a running sluice: `testkit-flags.json` pasted
/// into a traffic document (without the flag refused on purpose), activated through the
/// change gate, once with `fractional: v3` and once with `fractional: v2`.
#[test]
fn gherkin_suites_over_ofrep_through_the_change_gate() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let g = common::Sluice::builder().approvals().manual_clock().start();
    let root = conformance().join("flagd-testbed/evaluator");
    let mut flagd = read_json(&root.join("flags/testkit-flags.json"));
    for k in REFUSED {
        flagd["flags"].as_object_mut().expect("flags").remove(k);
    }
    let cases: Vec<Case> = sorted_files(&root.join("gherkin"), "feature")
        .iter()
        .flat_map(|f| {
            expand(&parse_feature(
                &std::fs::read_to_string(f).expect("feature"),
            ))
        })
        .filter(|c| !c.tags.contains("fractional-v1"))
        .collect();
    let (mut runs, mut skipped_refused) = (0usize, 0usize);
    let mut failures = Vec::new();
    for (version, mode) in [(1u64, "v3"), (2, "v2")] {
        let text = traffic_json(version, mode, "127.0.0.1:9".parse().unwrap(), &[], &flagd);
        rt.block_on(async {
            let r = push_approved(&g, &text).await;
            assert_eq!(r.status, 200, "{}", r.text());
        });
        let mut client = rt.block_on(common::Client::connect(g.admin()));
        for case in &cases {
            let v2_only = case.tags.contains("fractional-v2");
            if v2_only && mode == "v3" {
                continue;
            }
            if case_flag(case).is_some_and(|k| REFUSED.contains(&k.as_str())) {
                skipped_refused += 1;
                continue;
            }
            let mut over_ofrep = |key: &str, ctx: &Map<String, Value>, ty: ValueType| {
                let (_, j) = rt.block_on(ofrep(
                    &mut client,
                    &format!("/ofrep/v1/evaluate/flags/{key}"),
                    ctx,
                ));
                Ok(Outcome::from_ofrep(&j, ty))
            };
            match run_case_with(&mut over_ofrep, case) {
                Ok(()) => runs += 1,
                Err(e) => failures.push(format!("[{mode}] {}: {e}", case.name)),
            }
        }
    }
    println!(
        "gherkin over OFREP: {runs} runs passed, {} failed; {skipped_refused} skipped (flag refused on purpose, checked by the refusal test)",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(runs > 200, "too few runs: {runs}");
}
