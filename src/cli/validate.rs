//! `sluice validate [-c ...] [--against FILE] [TRAFFIC]`: checks the settings, a traffic
//! document and the tokens in the approvals folder, and says what the change gate would do:
//! the class and why, and which approvals are missing.
//!
//! The diff is against `--against`, else the persisted active document (the last activation
//! in `state/audit.jsonl`, read from `state/docs/`), else nothing. Nothing under `state/` is
//! written. Exit status (SPEC §7): 0 valid and would activate (or no-op), 1 refused, 2
//! invalid input, 3 valid but pending.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{EXIT_INVALID, EXIT_OK, EXIT_PENDING, EXIT_REFUSED};
use crate::change::assess::{ChangeInput, Ruling, assess};
use crate::change::audit::{Record, Replay};
use crate::change::classify::class_name;
use crate::change::folder::Folder;
use crate::change::inputs::{MAX_DOCUMENT_BYTES, read_regular};
use crate::change::reviews;
use crate::change::{HighWater, TrustStore, audit, digest};
use crate::config::Settings;
use crate::config::traffic::{CheckContext, ParsedTraffic, TrafficDoc};

/// `sluice validate` arguments.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Document to diff against (default: the persisted active document).
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// The traffic document (default: paths.traffic from the settings).
    pub traffic: Option<PathBuf>,
}

/// What the state directory says, read without writing anything.
#[derive(Default)]
struct Persisted {
    active: Option<(String, ParsedTraffic)>,
    high_water: Option<HighWater>,
    entries: Vec<Record>,
}

/// Validates settings and a traffic document; prints every error with path and line, then
/// the class and what approvals are missing.
pub fn validate(config: &Path, a: ValidateArgs) -> i32 {
    let settings = if config.exists() {
        match Settings::load(config) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("{}: invalid settings:\n{e}", config.display());
                return EXIT_INVALID;
            }
        }
    } else {
        None
    };
    let traffic = a
        .traffic
        .clone()
        .or_else(|| settings.as_ref().map(|s| s.paths.traffic.clone()))
        .unwrap_or_else(|| PathBuf::from("config/traffic.yaml"));
    let ctx = CheckContext {
        listeners: settings
            .as_ref()
            .map(|s| s.listeners.iter().map(|l| l.name.clone()).collect()),
    };
    let (bytes, parsed) = match read_doc(&traffic, &ctx) {
        Ok(p) => p,
        Err(code) => return code,
    };
    println!(
        "{}: valid (version {}, change {} by {}, {})",
        traffic.display(),
        parsed.doc.version,
        parsed.doc.change.id,
        parsed.doc.change.author,
        digest(&bytes)
    );
    print_warnings(&parsed);
    let Some(settings) = settings else {
        println!("no settings at {}: approvals not checked", config.display());
        return EXIT_OK;
    };
    let trust = match TrustStore::new(&settings.trust) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: invalid trust settings:\n{e}", config.display());
            return EXIT_INVALID;
        }
    };
    if !trust.require_approvals() {
        println!(
            "class unapproved: trust.require_approvals is false, so every valid document activates"
        );
        return EXIT_OK;
    }
    let mut persisted = read_state(&settings.paths.state_dir);
    if let Some(f) = &a.against {
        let (against_bytes, against) = match read_doc(f, &ctx) {
            Ok(p) => p,
            Err(code) => return code,
        };
        if persisted.high_water.is_none() {
            persisted.high_water = Some(HighWater {
                version: against.doc.version,
                digest: digest(&against_bytes),
            });
        }
        persisted.active = Some((f.display().to_string(), against));
    }
    match &persisted.active {
        Some((from, p)) => println!("diff against version {} ({from})", p.doc.version),
        None => println!("nothing active to diff against: every change is normal (or emergency)"),
    }
    let now = crate::clock::unix_secs(std::time::SystemTime::now());
    let folder = Folder::read(&settings.paths.approvals);
    let d = digest(&bytes);
    let tokens: Vec<String> = folder.naming(&d).map(|t| t.token.clone()).collect();
    let files: Vec<&str> = folder.naming(&d).map(|t| t.file.as_str()).collect();
    let overdue = reviews::open_from_audit(&persisted.entries)
        .iter()
        .any(|r| r.author == parsed.doc.change.author && r.overdue(now));
    let assessment = assess(
        &trust,
        &ChangeInput {
            bytes: &bytes,
            doc: &parsed.doc,
            json: &parsed.json,
            active: persisted.active.as_ref().map(|(_, p)| &p.json),
            high_water: persisted.high_water.as_ref(),
            tokens: &tokens,
            author_review_overdue: overdue,
            now,
        },
    );
    if let Some(c) = &assessment.classification {
        println!("class {}", c.explain());
    }
    println!(
        "{} token(s) in {} name this document{}",
        tokens.len(),
        settings.paths.approvals.display(),
        if files.is_empty() {
            String::new()
        } else {
            format!(": {}", files.join(", "))
        }
    );
    for t in &assessment.accepted {
        println!("  ok       {} ({}, kid {})", t.principal, t.act, t.kid);
    }
    for r in &assessment.rejected {
        println!("  refused  {}: {}", files[r.index], r.refusal);
    }
    match &assessment.ruling {
        Ruling::NoOp => {
            println!("no-op: nothing would change");
            EXIT_OK
        }
        Ruling::Activate(dec) => {
            let who: Vec<String> = dec
                .approvers
                .iter()
                .map(|a| format!("{} ({})", a.principal, a.role))
                .collect();
            println!(
                "would activate as {}: author {}{}",
                class_name(dec.class),
                dec.author,
                if who.is_empty() {
                    String::new()
                } else {
                    format!(", approved by {}", who.join(", "))
                }
            );
            EXIT_OK
        }
        Ruling::Pending(dec) => {
            println!("pending as {}: {}", class_name(dec.class), dec.detail());
            for i in &dec.ignored {
                println!("  not counted: {} ({})", i.detail, i.reason);
            }
            EXIT_PENDING
        }
        Ruling::Refused(r) => {
            println!("refused: {r}");
            EXIT_REFUSED
        }
    }
}

/// Prints what is accepted but departs from the flagd schema (SPEC §4), one line each.
fn print_warnings(parsed: &ParsedTraffic) {
    if parsed.warnings.is_empty() {
        return;
    }
    println!(
        "{} warning(s) (flagd loads these too; they resolve at evaluation time):",
        parsed.warnings.len()
    );
    for w in &parsed.warnings {
        println!("  warning  {w}");
    }
}

/// Reads and checks a document; on failure prints why and returns the exit status.
fn read_doc(path: &Path, ctx: &CheckContext) -> Result<(Vec<u8>, ParsedTraffic), i32> {
    let bytes = read_regular(path, MAX_DOCUMENT_BYTES).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        EXIT_INVALID
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        eprintln!("{}: not UTF-8: {e}", path.display());
        EXIT_INVALID
    })?;
    match TrafficDoc::parse(text, ctx) {
        Ok(p) => {
            // The gate compiles what it activates (TLS files, header names): so does validate,
            // with the same code, so that a document validate accepts is one the gate takes.
            if let Err(e) = crate::snapshot::Snapshot::check(&p) {
                eprintln!("{}: 1 error(s):\n  {e}", path.display());
                return Err(EXIT_INVALID);
            }
            Ok((bytes, p))
        }
        Err(errs) => {
            eprintln!("{}: {} error(s):", path.display(), errs.0.len());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            Err(EXIT_INVALID)
        }
    }
}

/// The last activated document, the high-water mark and the log, when `state_dir` has them.
fn read_state(state_dir: &Path) -> Persisted {
    let Ok((_, entries)) = audit::verify(&state_dir.join("audit.jsonl"), None) else {
        return Persisted::default();
    };
    let mut hw: Option<HighWater> = std::fs::read(state_dir.join("high_water.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let replay = Replay::of(&entries);
    let last = replay.installed.as_ref().map(|r| r.digest().to_string());
    if let Some((v, d)) = replay.highest()
        && hw.as_ref().is_none_or(|h| v > h.version)
    {
        hw = Some(HighWater {
            version: v,
            digest: d.to_string(),
        });
    }
    let active = last.and_then(|d| {
        let hex = d.strip_prefix("sha256:").unwrap_or(&d);
        let path = state_dir.join("docs").join(format!("{hex}.yaml"));
        let bytes = std::fs::read(&path).ok()?;
        if digest(&bytes) != d {
            return None;
        }
        let parsed =
            TrafficDoc::parse(std::str::from_utf8(&bytes).ok()?, &CheckContext::default()).ok()?;
        Some((
            format!("the active document in {}", state_dir.display()),
            parsed,
        ))
    });
    Persisted {
        active,
        high_water: hw.filter(|h| h.version > 0),
        entries,
    }
}
