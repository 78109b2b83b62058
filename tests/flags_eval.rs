//! `sluice eval`: strict by default (a defective document is refused with its paths, exit
//! 2), `--lenient` loads defective flags and resolves them to ERROR as flagd does.

use std::process::{Command, Output};

use serde_json::{Value, json};

const DOC: &str = r#"version: 1
change: { id: C1, author: alice }
fractional: v3
flags:
  ratio:
    state: ENABLED
    variants: { low: 1.0, high: 2.5 }
    defaultVariant: low
    targeting: { "if": [{ "==": [{ "var": "plan" }, "pro"] }, "high", null] }
  off:
    state: DISABLED
    variants: { a: 1 }
    defaultVariant: a
"#;

const BROKEN: &str = r#"
  broken:
    state: ENABLED
    variants: { a: 1 }
    defaultVariant: b
  weird:
    state: ENABLED
    variants: { a: 1 }
    defaultVariant: a
    targeting: { "nope": [1] }
"#;

fn eval(doc: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("traffic.yaml");
    std::fs::write(&file, doc).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("eval")
        .arg("--traffic")
        .arg(&file)
        .args(args)
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn prints_the_resolution() {
    let out = eval(DOC, &["--flag", "ratio"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        text.trim(),
        r#"{"value":1.0,"variant":"low","reason":"DEFAULT","errorCode":null}"#
    );
    let out = eval(
        DOC,
        &[
            "--flag",
            "ratio",
            "--context",
            r#"{"targetingKey": "u", "plan": "pro"}"#,
        ],
    );
    assert_eq!(
        json_of(&out),
        json!({"value": 2.5, "variant": "high", "reason": "TARGETING_MATCH", "errorCode": null})
    );
    let out = eval(DOC, &["--flag", "off"]);
    assert_eq!(
        json_of(&out),
        json!({"value": null, "variant": null, "reason": "DISABLED", "errorCode": null})
    );
    let out = eval(DOC, &["--flag", "missing"]);
    assert_eq!(json_of(&out)["errorCode"], "FLAG_NOT_FOUND");
    let out = eval(
        DOC,
        &["--flag", "ratio", "--context", r#"{"targetingKey": 7}"#],
    );
    assert_eq!(json_of(&out)["errorCode"], "INVALID_CONTEXT");
}

#[test]
fn bad_input_exits_2() {
    let out = eval(DOC, &["--flag", "ratio", "--context", "[1]"]);
    assert_eq!(out.status.code(), Some(2));
    let out = eval(DOC, &["--flag", "ratio", "--context", "{"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn strict_refuses_a_defective_document_with_its_paths() {
    let doc = format!("{DOC}{BROKEN}");
    let out = eval(&doc, &["--flag", "ratio"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = doc
        .lines()
        .position(|l| l.contains("defaultVariant: b"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("flags.broken.defaultVariant (line {line}:")),
        "{err}"
    );
    assert!(err.contains("flags.weird.targeting.nope"), "{err}");
}

#[test]
fn lenient_resolves_defective_flags_to_error() {
    let doc = format!("{DOC}{BROKEN}");
    let out = eval(&doc, &["--flag", "weird", "--lenient"]);
    let j = json_of(&out);
    assert_eq!(j["reason"], "ERROR");
    assert_eq!(j["errorCode"], "PARSE_ERROR");
    assert!(j["value"].is_null());
    let j = json_of(&eval(&doc, &["--flag", "broken", "--lenient"]));
    assert_eq!(j["reason"], "ERROR");
    assert_eq!(j["errorCode"], "GENERAL");
    // Sound flags of the same document still resolve.
    let j = json_of(&eval(&doc, &["--flag", "ratio", "--lenient"]));
    assert_eq!(j["variant"], "low");
}
