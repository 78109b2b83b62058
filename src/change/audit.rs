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
//!
//! - [`event`]: the event kinds, the one builder of a line, and lines read back.

pub mod event;

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use event::{Event, EventKind, Record};

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
    /// Where appended lines are offered for notifications (never waits).
    tap: Option<crate::notify::Notifier>,
}

/// The last line's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Head {
    /// `seq` of the last line (0 when empty).
    pub seq: u64,
    /// sha256 hex of the last line (64 zeros when empty).
    pub hash: String,
}

/// What the log says about documents, replayed on restart (and by `sluice validate`).
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// The last record that installed a document (activated, reverted to, restored): the
    /// one that serves after a restart.
    pub installed: Option<Record>,
    /// `change.activated` records by version (versions only increase, so one each).
    pub activations: BTreeMap<u64, Record>,
    /// Digests audited as `change.pending`.
    pub pending: HashSet<String>,
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

/// Checks the chain of a log; returns its head and its records.
pub fn verify(
    path: &Path,
    expected_head: Option<&str>,
) -> Result<(Head, Vec<Record>), VerifyError> {
    let f = File::open(path).map_err(|e| VerifyError::Io(format!("{}: {e}", path.display())))?;
    let mut r = BufReader::new(f);
    let mut chain = Chain::new();
    let mut entries = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = r
            .read_until(b'\n', &mut buf)
            .map_err(|e| VerifyError::Io(e.to_string()))?;
        if read == 0 {
            break;
        }
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Err(VerifyError::Broken {
                line: chain.head().seq + 1,
                reason: "the last line is incomplete (no newline)".into(),
            });
        };
        entries.push(Record::new(chain.push(line)?));
    }
    let head = chain.head();
    check_head(&head, expected_head)?;
    Ok((head, entries))
}

/// Checks that `head` is the expected one, when one is expected.
pub fn check_head(head: &Head, expected: Option<&str>) -> Result<(), VerifyError> {
    match expected {
        Some(exp) if exp != head.hash => Err(VerifyError::HeadMismatch {
            seq: head.seq,
            hash: head.hash.clone(),
            expected: exp.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A chain checked one line at a time: `seq` counts from 1 and each `prev` is the sha256 of
/// the line before (64 zeros for the first). The local log and the fleet chain in etcd
/// (SPEC §12) are both checked with it.
#[derive(Debug, Clone)]
pub struct Chain {
    n: u64,
    prev: String,
}

// === impl Chain ===

impl Chain {
    /// An empty chain.
    pub fn new() -> Chain {
        Chain {
            n: 0,
            prev: GENESIS.to_string(),
        }
    }

    /// Checks the next line (its exact bytes, without the newline); returns it parsed.
    pub fn push(&mut self, line: &[u8]) -> Result<Value, VerifyError> {
        let n = self.n + 1;
        let broken = |reason: String| VerifyError::Broken { line: n, reason };
        let v: Value =
            serde_json::from_slice(line).map_err(|e| broken(format!("not JSON: {e}")))?;
        if v.get("seq").and_then(Value::as_u64) != Some(n) {
            return Err(broken(format!(
                "seq is {}, expected {n}",
                v.get("seq").unwrap_or(&Value::Null)
            )));
        }
        let p = v.get("prev").and_then(Value::as_str).unwrap_or("");
        if p != self.prev {
            return Err(broken(format!(
                "prev is {p}, but the previous line hashes to {}",
                self.prev
            )));
        }
        self.prev = sha_hex(line);
        self.n = n;
        Ok(v)
    }

    /// Where the chain ends so far.
    pub fn head(&self) -> Head {
        Head {
            seq: self.n,
            hash: self.prev.clone(),
        }
    }
}

impl Default for Chain {
    fn default() -> Self {
        Chain::new()
    }
}

/// The bytes of line `seq` (without newline) of a chain whose last line hashes to `prev`,
/// and their sha256 hex: the event's fields plus `seq`, `ts` and `prev`.
pub fn render_line(
    seq: u64,
    prev: &str,
    now: SystemTime,
    event: Event,
) -> io::Result<(Vec<u8>, String)> {
    let mut obj = event.into_fields();
    obj.insert("seq".into(), json!(seq));
    obj.insert("ts".into(), json!(crate::clock::rfc3339(now)));
    obj.insert("prev".into(), json!(prev));
    let line = serde_json::to_vec(&Value::Object(obj)).map_err(io::Error::other)?;
    let hash = sha_hex(&line);
    Ok((line, hash))
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens (creating) the log, truncating a torn last line, and verifies the chain.
    /// Returns the log and its records.
    pub fn open(path: &Path) -> io::Result<(AuditLog, Vec<Record>)> {
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
                tap: None,
            },
            entries,
        ))
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

    /// Appends one event; durable when this returns.
    pub fn append(&mut self, now: SystemTime, event: Event) -> io::Result<Head> {
        let (mut line, hash) = render_line(self.seq + 1, &self.head, now, event)?;
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
        if let Some(tap) = &self.tap {
            tap.offer(&line[..line.len() - 1]);
        }
        Ok(self.head())
    }

    /// Offers every line appended from now on to `tap` (notifications).
    pub fn set_tap(&mut self, tap: crate::notify::Notifier) {
        self.tap = Some(tap);
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

/// Cuts the fragments that failed appends left *between* good lines (earlier versions of
/// sluice appended after them): a line that is not JSON but ends in a line that continues
/// the chain loses its head. The file is rewritten only when something was cut, and the
/// original is kept as `audit.jsonl.torn-<unix seconds>`.
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
        } else if !line.starts_with(b"{") {
            return Ok(());
        } else {
            // The first `{` after which the line continues the chain ends the fragment.
            let found = line
                .iter()
                .enumerate()
                .skip(1)
                .filter(|(_, b)| **b == b'{')
                .map(|(j, _)| j)
                .find(|&j| continues(&line[j..], n, &prev));
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

// === impl Replay ===

impl Replay {
    /// Replays `records` in order.
    pub fn of(records: &[Record]) -> Replay {
        let mut r = Replay::default();
        for e in records {
            let Some(kind) = e.kind else { continue };
            if kind.installs_document() {
                r.installed = Some(e.clone());
            }
            match kind {
                EventKind::ChangePending => {
                    r.pending.insert(e.digest().to_string());
                }
                EventKind::ChangeActivated => {
                    if let Some(v) = e.version() {
                        r.activations.insert(v, e.clone());
                    }
                }
                _ => {}
            }
        }
        r
    }

    /// The highest version activated, with its digest.
    pub fn highest(&self) -> Option<(u64, &str)> {
        self.activations
            .last_key_value()
            .map(|(v, e)| (*v, e.digest()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kind: EventKind, actor: &str) -> Event {
        Event::new(kind, actor)
    }

    #[test]
    fn chain_verifies_and_detects_tampering() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.jsonl");
        let (mut log, entries) = AuditLog::open(&p).unwrap();
        assert!(entries.is_empty());
        log.append(SystemTime::now(), fields(EventKind::Started, "a"))
            .unwrap();
        log.append(SystemTime::now(), fields(EventKind::ChangeActivated, "b"))
            .unwrap();
        let head = log
            .append(SystemTime::now(), fields(EventKind::ChangeRejected, "c"))
            .unwrap();
        let (h, e) = verify(&p, Some(&head.hash)).unwrap();
        assert_eq!(h.seq, 3);
        assert_eq!(e[1].line["event"], "change.activated");
        assert!(e[1].is(EventKind::ChangeActivated));
        assert_eq!(e[0].line["prev"], GENESIS);

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
            log.append(SystemTime::now(), fields(EventKind::Started, "a"))
                .unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"seq\":2,\"ts\":\"x").unwrap();
        drop(f);
        assert!(verify(&p, None).is_err());
        let (mut log, entries) = AuditLog::open(&p).unwrap();
        assert_eq!(entries.len(), 1);
        log.append(SystemTime::now(), fields(EventKind::Started, "b"))
            .unwrap();
        assert_eq!(verify(&p, None).unwrap().0.seq, 2);
    }

    #[test]
    fn torn_append_between_good_lines_is_cut_on_open() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.jsonl");
        let (mut log, _) = AuditLog::open(&p).unwrap();
        log.append(SystemTime::now(), fields(EventKind::Started, "a"))
            .unwrap();
        drop(log);
        let good = std::fs::read(&p).unwrap();
        // What a failed append left before the fix: a fragment, then the next append after
        // it (line 2 of the chain).
        let (line2, _) = render_line(
            2,
            &sha_hex(good.strip_suffix(b"\n").unwrap()),
            SystemTime::now(),
            fields(EventKind::ChangeActivated, "c"),
        )
        .unwrap();
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"actor\":\"b\",\"change\":{\"dig").unwrap();
        f.write_all(&line2).unwrap();
        f.write_all(b"\n").unwrap();
        drop(f);
        assert!(matches!(
            verify(&p, None),
            Err(VerifyError::Broken { line: 2, .. })
        ));
        let (mut log, entries) = AuditLog::open(&p).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].line["actor"], "c");
        log.append(SystemTime::now(), fields(EventKind::Started, "d"))
            .unwrap();
        assert_eq!(verify(&p, None).unwrap().0.seq, 3);
        assert!(std::fs::read(&p).unwrap().starts_with(&good));
        let kept = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
            .count();
        assert_eq!(kept, 1, "the original is kept beside the log");
        // Anything else that breaks the chain is still refused.
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replacen("\"actor\":\"c\"", "\"actor\":\"x\"", 1)).unwrap();
        assert!(AuditLog::open(&p).is_err());
    }
}
