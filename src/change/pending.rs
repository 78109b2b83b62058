//! Pending changes (SPEC §5): valid candidates short of approvals, kept in `state/pending/`
//! so that a restart keeps them, with the tokens pushed for them. One JSON file per change,
//! written atomically; the audit log (`change.pending`) is the record that one was seen.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::policy::{Approver, Shortfall};
use super::store::{StateDir, write_atomic};
use crate::config::traffic::ChangeClass;

/// A pending change as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// `sha256:<hex>` of `text`.
    pub digest: String,
    /// The document's version.
    pub version: u64,
    /// The document, exactly as submitted (it parsed, so it is UTF-8).
    pub text: String,
    /// Who submitted it first (`file`, `admin`, ...).
    pub source: String,
    /// Tokens pushed for it (header or `POST /api/v1/approvals`); folder tokens are read
    /// afresh each time and not copied here.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// When it became pending (RFC 3339).
    pub since: String,
    /// The latest judgement, for status (not persisted: recomputed on every re-check).
    #[serde(skip)]
    pub last: Option<Shortfalls>,
    /// `change.pending` is in the audit log (not persisted: the log says so).
    #[serde(skip)]
    pub audited: bool,
}

/// What a pending change lacks, as of its latest assessment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shortfalls {
    /// The class it is handled as.
    pub class: ChangeClass,
    /// Why it has that class.
    pub classification: String,
    /// The sentence: what is missing.
    pub missing: String,
    /// Each unmet requirement.
    pub shortfalls: Vec<Shortfall>,
    /// Who counted so far.
    pub approvers: Vec<Approver>,
    /// The author.
    pub author: String,
    /// `change.id`.
    pub id: String,
}

// === impl PendingChange ===

impl PendingChange {
    /// Adds tokens not already held; whether any was new.
    pub fn add_tokens(&mut self, tokens: &[String]) -> bool {
        let mut added = false;
        for t in tokens {
            let t = t.trim();
            if !t.is_empty() && !self.tokens.iter().any(|x| x == t) {
                self.tokens.push(t.to_string());
                added = true;
            }
        }
        added
    }
}

fn dir(state: &StateDir) -> PathBuf {
    state.root().join("pending")
}

fn path(state: &StateDir, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    dir(state).join(format!("{hex}.json"))
}

/// Persists a pending change (atomic: temp file, fsync, rename, fsync dir).
pub fn save(state: &StateDir, p: &PendingChange) -> io::Result<()> {
    std::fs::create_dir_all(dir(state))?;
    let bytes = serde_json::to_vec_pretty(p).map_err(io::Error::other)?;
    write_atomic(&path(state, &p.digest), &bytes, 0o644)
}

/// Forgets a pending change (absent is fine).
pub fn remove(state: &StateDir, digest: &str) -> io::Result<()> {
    match std::fs::remove_file(path(state, digest)) {
        Ok(()) => super::store::sync_dir(&dir(state)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Every persisted pending change whose file is intact and whose text still has its digest;
/// anything else is logged and skipped (a leftover temp file, a hand-edited file).
pub fn load_all(state: &StateDir) -> Vec<PendingChange> {
    let Ok(rd) = std::fs::read_dir(dir(state)) else {
        return Vec::new();
    };
    let mut out: Vec<PendingChange> = Vec::new();
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let parsed = std::fs::read(e.path())
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<PendingChange>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(p) if super::digest(p.text.as_bytes()) == p.digest => out.push(p),
            Ok(p) => {
                tracing::warn!(file = %name, digest = %p.digest, "A pending change's text does not match its digest; ignoring it.")
            }
            Err(error) => {
                tracing::warn!(file = %name, error, "A pending change file cannot be read; ignoring it.")
            }
        }
    }
    out.sort_by(|a, b| (a.version, &a.digest).cmp(&(b.version, &b.digest)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path()).unwrap();
        assert!(load_all(&s).is_empty());
        let text = "version: 2\n".to_string();
        let mut p = PendingChange {
            digest: super::super::digest(text.as_bytes()),
            version: 2,
            text,
            source: "admin".into(),
            tokens: Vec::new(),
            since: "2026-01-01T00:00:00.000Z".into(),
            last: None,
            audited: false,
        };
        assert!(p.add_tokens(&["a.b.c\n".into(), "a.b.c".into()]));
        assert!(!p.add_tokens(&["a.b.c".into()]));
        assert_eq!(p.tokens, ["a.b.c"]);
        save(&s, &p).unwrap();
        let mut forged = p.clone();
        forged.digest = "sha256:00".into();
        save(&s, &forged).unwrap();
        assert_eq!(load_all(&s), vec![p.clone()]);
        remove(&s, &p.digest).unwrap();
        remove(&s, &p.digest).unwrap();
        remove(&s, "sha256:00").unwrap();
        assert!(load_all(&s).is_empty());
    }
}
