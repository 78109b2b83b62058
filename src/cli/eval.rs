//! `sluice eval --traffic FILE --flag KEY [--context JSON] [--lenient]`: evaluates one flag
//! of a traffic document as sluice would, and prints the resolution as one line of JSON:
//! `{"value", "variant", "reason", "errorCode"}` (plus `errorMessage` on errors).
//!
//! Strict by default: the document must pass `sluice validate`'s checks, or every error is
//! printed with its path and line and the exit status is 2. With `--lenient` only the
//! flags are read, and defective ones load and resolve to `ERROR` (`PARSE_ERROR`), as flagd
//! does. A resolution, errors included, exits 0: it is the answer asked for.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Map, Value, json};

use super::{EXIT_INVALID, EXIT_OK};
use crate::config::traffic::{CheckContext, Fractional, TrafficDoc};
use crate::config::yaml;
use crate::flags::{Context, FlagSet, Options, resolution_json};

/// `sluice eval` arguments.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The traffic document holding the flags.
    #[arg(long)]
    pub traffic: PathBuf,
    /// The flag to evaluate.
    #[arg(long)]
    pub flag: String,
    /// Evaluation context, a JSON object (`{"targetingKey": "u1", "email": "..."}`).
    #[arg(long, default_value = "{}")]
    pub context: String,
    /// Load defective flags (they resolve to ERROR) instead of refusing the document.
    #[arg(long)]
    pub lenient: bool,
}

/// Runs `sluice eval`; returns the exit status.
pub fn eval(a: EvalArgs) -> i32 {
    match run(&a) {
        Ok(line) => {
            println!("{line}");
            EXIT_OK
        }
        Err(msg) => {
            eprintln!("{msg}");
            EXIT_INVALID
        }
    }
}

fn run(a: &EvalArgs) -> Result<String, String> {
    let path = a.traffic.display();
    let text = std::fs::read_to_string(&a.traffic).map_err(|e| format!("{path}: {e}"))?;
    let context: Value =
        serde_json::from_str(&a.context).map_err(|e| format!("--context is not JSON: {e}"))?;
    let Value::Object(context) = context else {
        return Err("--context must be a JSON object".into());
    };
    let set = if a.lenient {
        lenient_set(&text).map_err(|e| format!("{path}: {e}"))?
    } else {
        strict_set(&text).map_err(|e| format!("{path}: {e}"))?
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let out = match Context::from_json(&context) {
        Ok(ctx) => resolution_json(&set.evaluate_key(&a.flag, &ctx, now)),
        Err(e) => json!({
            "value": null, "variant": null, "reason": "ERROR",
            "errorCode": "INVALID_CONTEXT", "errorMessage": e.to_string(),
        }),
    };
    Ok(ordered(&out))
}

/// The resolution with its members in reading order (serde_json sorts object keys).
fn ordered(v: &Value) -> String {
    let members: Vec<String> = ["value", "variant", "reason", "errorCode", "errorMessage"]
        .iter()
        .filter_map(|k| Some(format!("{}:{}", json!(k), v.get(*k)?)))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// The flags of a document that passes validation.
fn strict_set(text: &str) -> Result<FlagSet, String> {
    let parsed = TrafficDoc::parse(text, &CheckContext::default()).map_err(|errs| {
        let lines: Vec<String> = errs.0.iter().map(|e| format!("  {e}")).collect();
        format!("{} error(s):\n{}", errs.0.len(), lines.join("\n"))
    })?;
    let doc = parsed.doc;
    let opts = Options {
        fractional: doc.fractional,
    };
    FlagSet::compile_with_metadata(&doc.flags, &doc.evaluators, &doc.metadata, opts).map_err(
        |errs| {
            let lines: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
            lines.join("\n")
        },
    )
}

/// The flags of any YAML document with a `flags` mapping, defective ones included.
fn lenient_set(text: &str) -> Result<FlagSet, String> {
    let parsed = yaml::parse(text).map_err(|e| e.to_string())?;
    let empty = Map::new();
    let section = |key: &str| -> Result<&Map<String, Value>, String> {
        match parsed.value.get(key) {
            None | Some(Value::Null) => Ok(&empty),
            Some(Value::Object(m)) => Ok(m),
            Some(_) => Err(format!("`{key}` must be a mapping")),
        }
    };
    let fractional: Fractional = match parsed.value.get("fractional") {
        None | Some(Value::Null) => Fractional::default(),
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|e| format!("fractional: {e} (v2 or v3)"))?
        }
    };
    section("flags")?;
    section("$evaluators")?;
    section("metadata")?;
    Ok(FlagSet::compile_document_lenient(
        &parsed.value,
        Options { fractional },
    ))
}
