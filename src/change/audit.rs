//! The append-only, hash-chained audit log (SPEC §11).
//!
//! One JSON object a line; `prev` is the sha256 of the previous line's exact bytes (64 zeros
//! for the first). Each append is one `write` of the whole line plus its newline, then
//! `fsync`. An append that fails (a full disk, an I/O error) truncates the file back to its
//! length before the append, so the log is exactly as it was and the next append follows the
//! last good line; until that truncation succeeds nothing else is appended. A crash can only
//! leave a torn last line without its newline, which `open` truncates (and logs) before
//! appending again. `open` also repairs a torn append *followed* by good lines (what a
//! failed append left behind before sluice truncated them): the fragment is cut when the
//! line after it continues the chain, and the original file is kept beside the log. A broken
//! link anywhere else is tampering, and sluice refuses to start on it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// 64 zeros: the `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    seq: u64,
    head: String,
    /// Length of the file up to the last good line.
    len: u64,
    /// A failed append left bytes after `len` that could not be cut yet.
    torn: bool,
}

/// The last line's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Head {
    /// `seq` of the last line (0 when empty).
    pub seq: u64,
    /// sha256 hex of the last line (64 zeros when empty).
    pub hash: String,
}

/// Why a log failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The log could not be read.
    #[error("cannot read the audit log: {0}")]
    Io(String),
    /// A line is broken; `line` is 1-based.
    #[error("line {line}: {reason}")]
    Broken {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The chain is intact but does not end at the expected head.
    #[error("the log ends at seq {seq} hash {hash}, not at the expected head {expected}")]
    HeadMismatch {
        /// Last seq.
        seq: u64,
        /// Last hash.
        hash: String,
        /// The head asked for.
        expected: String,
    },
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Checks the chain of a log; returns its head and its entries.
pub fn verify(path: &Path, expected_head: Option<&str>) -> Result<(Head, Vec<Value>), VerifyError> {
    let f = File::open(path).map_err(|e| VerifyError::Io(format!("{}: {e}", path.display())))?;
    let mut r = BufReader::new(f);
    let mut prev = GENESIS.to_string();
    let mut entries = Vec::new();
    let mut n = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = r
            .read_until(b'\n', &mut buf)
            .map_err(|e| VerifyError::Io(e.to_string()))?;
        if read == 0 {
            break;
        }
        n += 1;
        let broken = |reason: String| VerifyError::Broken { line: n, reason };
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Err(broken("the last line is incomplete (no newline)".into()));
        };
        let v: Value =
            serde_json::from_slice(line).map_err(|e| broken(format!("not JSON: {e}")))?;
        if v.get("seq").and_then(Value::as_u64) != Some(n) {
            return Err(broken(format!(
                "seq is {}, expected {n}",
                v.get("seq").unwrap_or(&Value::Null)
            )));
        }
        let p = v.get("prev").and_then(Value::as_str).unwrap_or("");
        if p != prev {
            return Err(broken(format!(
                "prev is {p}, but the previous line hashes to {prev}"
            )));
        }
        prev = sha_hex(line);
        entries.push(v);
    }
    let head = Head { seq: n, hash: prev };
    if let Some(exp) = expected_head
        && exp != head.hash
    {
        return Err(VerifyError::HeadMismatch {
            seq: head.seq,
            hash: head.hash,
            expected: exp.to_string(),
        });
    }
    Ok((head, entries))
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens (creating) the log, truncating a torn last line, and verifies the chain.
    /// Returns the log and its entries.
    pub fn open(path: &Path) -> io::Result<(AuditLog, Vec<Value>)> {
        // Before the file is opened: a repair replaces it.
        repair_torn_appends(path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            // A crash mid-append leaves a line without its newline: drop it.
            let mut bytes = Vec::new();
            file.seek(SeekFrom::Start(0))?;
            io::Read::read_to_end(&mut file, &mut bytes)?;
            if bytes.last() != Some(&b'\n') {
                let keep = bytes
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map(|i| i + 1)
                    .unwrap_or(0);
                tracing::warn!(path = %path.display(), dropped = bytes.len() - keep, "Audit log ended in a torn line; truncating it.");
                file.set_len(keep as u64)?;
                file.sync_all()?;
            }
        }
        let (head, entries) = verify(path, None).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("audit log {}: {e}", path.display()),
            )
        })?;
        let len = file.metadata()?.len();
        Ok((
            AuditLog {
                path: path.to_path_buf(),
                file,
                seq: head.seq,
                head: head.hash,
                len,
                torn: false,
            },
            entries,
        ))
    }

    /// The log as a writer that ignores its content (tests: to build broken logs).
    #[cfg(test)]
    fn open_unrepaired(path: &Path) -> (AuditLog, ()) {
        let file = OpenOptions::new().append(true).open(path).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let last = text.lines().filter(|l| l.starts_with("{\"actor")).count() as u64;
        let first = text.lines().next().unwrap();
        (
            AuditLog {
                path: path.to_path_buf(),
                len: file.metadata().unwrap().len(),
                file,
                seq: last.min(1),
                head: sha_hex(first.as_bytes()),
                torn: false,
            },
            (),
        )
    }

    /// The current head.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.head.clone(),
        }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event with its fields; durable when this returns.
    pub fn append(
        &mut self,
        now: SystemTime,
        event: &str,
        fields: Map<String, Value>,
    ) -> io::Result<Head> {
        let mut obj = fields;
        obj.insert("seq".into(), json!(self.seq + 1));
        obj.insert("ts".into(), json!(crate::clock::rfc3339(now)));
        obj.insert("event".into(), json!(event));
        obj.insert("prev".into(), json!(self.head));
        let mut line = serde_json::to_vec(&Value::Object(obj)).map_err(io::Error::other)?;
        let hash = sha_hex(&line);
        line.push(b'\n');
        if self.torn {
            self.cut_back()?;
        }
        if let Err(e) = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
        {
            // Some of the line may be on disk: take it back, or refuse every later append
            // until it is taken back. Never append after a fragment.
            self.torn = true;
            if let Err(cut) = self.cut_back() {
                tracing::error!(path = %self.path.display(), error = %cut, "A failed audit append could not be truncated yet; appends are refused until it is.");
            }
            return Err(e);
        }
        self.seq += 1;
        self.head = hash;
        self.len += line.len() as u64;
        Ok(self.head())
    }

    /// Truncates the file to its last good line (after a failed append).
    fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.sync_all()?;
        self.torn = false;
        Ok(())
    }

    /// Lines with `seq > since`, parsed.
    pub fn read_since(&self, since: u64) -> io::Result<Vec<Value>> {
        let f = File::open(&self.path)?;
        let mut out = Vec::new();
        for line in BufReader::new(f).lines() {
            let v: Value = serde_json::from_str(&line?)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if v.get("seq").and_then(Value::as_u64).unwrap_or(0) > since {
                out.push(v);
            }
        }
        Ok(out)
    }
}

/// Cuts the fragments that failed appends left *between* good lines (sluice before 0.1
/// appended after them): a line that is not JSON but ends in a line that continues the chain
/// loses its head. The file is rewritten only when something was cut, and the original is
/// kept as `audit.jsonl.torn-<unix seconds>`.
fn repair_torn_appends(path: &Path) -> io::Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut prev = GENESIS.to_string();
    let mut n = 0u64;
    let mut cut = 0usize;
    let mut rest = &bytes[..];
    while let Some(i) = rest.iter().position(|b| *b == b'\n') {
        let line = &rest[..i];
        rest = &rest[i + 1..];
        n += 1;
        let keep = if continues(line, n, &prev) {
            line
        } else {
            // The first `{` after which the line continues the chain ends the fragment.
            let found = line
                .iter()
                .enumerate()
                .skip(1)
                .filter(|(_, b)| **b == b'{')
                .map(|(j, _)| j)
                .find(|&j| line.starts_with(b"{") && continues(&line[j..], n, &prev));
            match found {
                Some(j) => {
                    cut += j;
                    &line[j..]
                }
                // Not a torn append: left for `verify` to report.
                None => return Ok(()),
            }
        };
        prev = sha_hex(keep);
        out.extend_from_slice(keep);
        out.push(b'\n');
    }
    if cut == 0 {
        return Ok(());
    }
    out.extend_from_slice(rest);
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("audit.jsonl");
    let backup = path.with_file_name(format!("{name}.torn-{now}"));
    super::store::write_atomic(&backup, &bytes, 0o644)?;
    super::store::write_atomic(path, &out, 0o644)?;
    tracing::warn!(path = %path.display(), dropped = cut, original = %backup.display(), "Audit log held fragments of failed appends between good lines; cut them (the chain verifies).");
    Ok(())
}

/// Whether `line` is the chain's line `seq` after a line hashing to `prev`.
fn continues(line: &[u8], seq: u64, prev: &str) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        return false;
    };
    v.get("seq").and_then(Value::as_u64) == Some(seq)
        && v.get("prev").and_then(Value::as_str) == Some(prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(k: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("actor".into(), json!(k));
        m
    }

    #[test]
    fn chain_verifies_and_detects_tampering() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.jsonl");
        let (mut log, entries) = AuditLog::open(&p).unwrap();
        assert!(entries.is_empty());
        log.append(SystemTime::now(), "sluice.started", fields("a"))
            .unwrap();
        log.append(SystemTime::now(), "change.activated", fields("b"))
            .unwrap();
        let head = log
            .append(SystemTime::now(), "change.rejected", fields("c"))
            .unwrap();
        let (h, e) = verify(&p, Some(&head.hash)).unwrap();
        assert_eq!(h.seq, 3);
        assert_eq!(e[1]["event"], "change.activated");
        assert_eq!(e[0]["prev"], GENESIS);

        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replacen("\"actor\":\"b\"", "\"actor\":\"x\"", 1)).unwrap();
        match verify(&p, None) {
            Err(VerifyError::Broken { line, .. }) => assert_eq!(line, 3),
            other => panic!("tampering not detected: {other:?}"),
        }
    }

    #[test]
    fn torn_last_line_is_truncated_on_open() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.jsonl");
        {
            let (mut log, _) = AuditLog::open(&p).unwrap();
            log.append(SystemTime::now(), "sluice.started", fields("a"))
                .unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"seq\":2,\"ts\":\"x").unwrap();
        drop(f);
        assert!(verify(&p, None).is_err());
        let (mut log, entries) = AuditLog::open(&p).unwrap();
        assert_eq!(entries.len(), 1);
        log.append(SystemTime::now(), "sluice.started", fields("b"))
            .unwrap();
        assert_eq!(verify(&p, None).unwrap().0.seq, 2);
    }

    #[test]
    fn torn_append_between_good_lines_is_cut_on_open() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.jsonl");
        let (mut log, _) = AuditLog::open(&p).unwrap();
        log.append(SystemTime::now(), "sluice.started", fields("a"))
            .unwrap();
        let good = std::fs::read(&p).unwrap();
        // What a failed append left before: a fragment, then the next append after it.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"actor\":\"b\",\"change\":{\"dig").unwrap();
        drop(f);
        drop(log);
        let (mut log, _) = AuditLog::open_unrepaired(&p);
        log.append(SystemTime::now(), "change.activated", fields("c"))
            .unwrap();
        drop(log);
        assert!(matches!(
            verify(&p, None),
            Err(VerifyError::Broken { line: 2, .. })
        ));
        let (mut log, entries) = AuditLog::open(&p).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1]["actor"], "c");
        log.append(SystemTime::now(), "sluice.started", fields("d"))
            .unwrap();
        assert_eq!(verify(&p, None).unwrap().0.seq, 3);
        assert!(std::fs::read(&p).unwrap().starts_with(&good));
        let kept: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
            .collect();
        assert_eq!(kept.len(), 1, "the original is kept beside the log");
        // Anything else that breaks the chain is still refused.
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replacen("\"actor\":\"c\"", "\"actor\":\"x\"", 1)).unwrap();
        assert!(AuditLog::open(&p).is_err());
    }
}
